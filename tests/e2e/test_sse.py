"""Server-Sent Events on /echo (plain GET): stream format, resume, heartbeat."""
import json
import socket
import time

import pytest

from rawws import Reader, http_request, read_response


def parse_events(text):
    """Split a text/event-stream body into blocks per the HTML spec's parsing rules.
    Returns a list of dicts: {"id", "event", "data", "retry", "comments"}."""
    assert "\r" not in text, "the server ends lines with LF only"
    events = []
    cur = {"data": [], "comments": []}
    for line in text.split("\n"):
        if line == "":
            if cur["data"] or cur.get("retry") is not None or cur["comments"] or "id" in cur:
                events.append(cur)
            cur = {"data": [], "comments": []}
            continue
        if line.startswith(":"):
            cur["comments"].append(line[1:].lstrip(" "))
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            cur["data"].append(value)
        elif field in ("id", "event"):
            cur[field] = value
        elif field == "retry":
            cur["retry"] = int(value)
        else:
            raise AssertionError(f"unknown SSE field {field!r}")
    assert cur == {"data": [], "comments": []}, f"stream ended inside an event: {cur}"
    return events


def ticks(events):
    return [e for e in events if e.get("event") == "tick"]


def test_ticks_stream_format(hub):
    resp = http_request(hub.port, "GET", "/echo?count=5&interval_ms=10", timeout=10)
    assert resp.status == 200
    assert resp.header("content-type", "").startswith("text/event-stream")
    assert "no-cache" in resp.header("cache-control", "")
    assert resp.header("content-length") is None, "an event stream has no length"
    text = resp.body.decode()
    evs = parse_events(text)
    # The stream starts with a retry hint.
    assert evs[0].get("retry") is not None and evs[0]["retry"] > 0
    tk = ticks(evs)
    assert [e["id"] for e in tk] == ["1", "2", "3", "4", "5"]
    for e in tk:
        assert len(e["data"]) == 1
        assert json.loads(e["data"][0]) == {"tick": int(e["id"])}
    assert text.endswith("\n\n")


def test_stream_ends_and_connection_closes(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(b"GET /echo?count=2&interval_ms=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        head = read_response(r, time.monotonic() + 5, head_only=True)
        assert head.status == 200
        body = r.read_to_eof(time.monotonic() + 5)
        assert len(ticks(parse_events(body.decode()))) == 2
    finally:
        s.close()


def test_events_arrive_incrementally(hub):
    # Events are flushed as they are produced, not buffered until the end.
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(b"GET /echo?count=3&interval_ms=700 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        read_response(r, time.monotonic() + 5, head_only=True)
        first = r.read_until(b"event: tick\n", time.monotonic() + 3)
        t_first = time.monotonic()
        assert b"id: 1\n" in first
        r.read_to_eof(time.monotonic() + 5)
        assert time.monotonic() - t_first >= 0.7, "all ticks arrived together"
    finally:
        s.close()


@pytest.mark.parametrize("last,first", [("5", 6), ("0", 1), ("41", 42)])
def test_last_event_id_resume(hub, last, first):
    resp = http_request(hub.port, "GET", "/echo?count=3&interval_ms=1", headers={"Last-Event-ID": last})
    assert resp.status == 200
    ids = [int(e["id"]) for e in ticks(parse_events(resp.body.decode()))]
    assert ids == [first, first + 1, first + 2]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", "99999999999999999999999"])
def test_invalid_last_event_id_starts_over(hub, bad):
    resp = http_request(hub.port, "GET", "/echo?count=2&interval_ms=1", headers={"Last-Event-ID": bad})
    assert resp.status == 200
    ids = [e["id"] for e in ticks(parse_events(resp.body.decode()))]
    assert ids == ["1", "2"]


def test_count_zero_400(hub):
    resp = http_request(hub.port, "GET", "/echo?count=0")
    assert resp.status == 400
    assert resp.json()["success"] is False


def test_heartbeat_comment(make_hub):
    hub = make_hub("--sse-heartbeat", "1s")
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    try:
        # One tick far in the future: the stream is idle meanwhile.
        s.sendall(b"GET /echo?count=1&interval_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        assert read_response(r, time.monotonic() + 5, head_only=True).status == 200
        start = time.monotonic()
        got = b""
        beats = 0
        while beats < 2 and time.monotonic() - start < 8:
            try:
                r._fill(start + 8)
            except TimeoutError:
                break
            got += bytes(r.buf)
            r.buf.clear()
            beats = sum(1 for e in parse_events_partial(got) if e["comments"])
        assert beats >= 2, f"expected 2 heartbeats in 8s with --sse-heartbeat 1s, got {got!r}"
        assert not ticks(parse_events_partial(got)), "heartbeat must be a comment, not an event"
    finally:
        s.close()


def parse_events_partial(raw):
    text = raw.decode()
    end = text.rfind("\n\n")
    return parse_events(text[:end + 2]) if end >= 0 else []


def test_sse_counted_in_status(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(b"GET /echo?count=1&interval_ms=30000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = Reader(s)
        assert read_response(r, time.monotonic() + 5, head_only=True).status == 200
        st = json.loads(hub.get("/api/status")[2])
        assert st["connections"]["sse"] >= 1
        assert hub.metrics()["chorus_sse_open"] >= 1
    finally:
        s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and hub.metrics()["chorus_sse_open"] != 0:
        time.sleep(0.05)
    assert hub.metrics()["chorus_sse_open"] == 0, "closed stream still counted"
