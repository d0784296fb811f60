"""HTTP/1.1 server behaviour over raw sockets: persistence, pipelining, bodies,
limits, timeouts, errors, and the operator endpoints."""
import json
import re
import socket
import time

import pytest

from conftest import Hub, parse_metrics
from rawws import OP_TEXT, Closed, RawWS, Reader, http_exchange, http_request, read_response


def req(path, method="GET", headers="", body=b"", version="HTTP/1.1"):
    head = f"{method} {path} {version}\r\nHost: 127.0.0.1\r\n{headers}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def assert_json_error(resp, status):
    assert resp.status == status, resp
    assert resp.header("content-type", "").startswith("application/json"), resp
    body = resp.json()
    assert body["success"] is False and body["error"], body


# ---------------------------------------------------------------------------
# Connection management


def test_keep_alive_several_requests_one_socket(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    r = Reader(s)
    try:
        for i in range(5):
            s.sendall(req("/health"))
            resp = read_response(r, time.monotonic() + 5)
            assert resp.status == 200 and resp.json() == {"status": "ok"}
            assert resp.header("connection", "keep-alive").lower() == "keep-alive"
        s.sendall(req("/nope"))
        assert read_response(r, time.monotonic() + 5).status == 404
        s.sendall(req("/health"))  # still usable after an application-level error
        assert read_response(r, time.monotonic() + 5).status == 200
    finally:
        s.close()


def test_pipelining_three_in_one_write(hub):
    raw = req("/health") + req("/definitely-missing") + req("/api/status")
    rs = http_exchange(hub.port, raw, 3)
    assert [r.status for r in rs] == [200, 404, 200]
    assert rs[0].json() == {"status": "ok"}
    assert rs[2].json()["status"] == "running"


def test_pipelining_many(hub):
    paths = ["/health", "/nope", "/api/status"] * 40
    raw = b"".join(req(p) for p in paths) + req("/health", headers="Connection: close\r\n")
    rs = http_exchange(hub.port, raw, len(paths) + 1, timeout=10)
    assert [r.status for r in rs] == [{"/health": 200, "/nope": 404, "/api/status": 200}[p]
                                     for p in paths] + [200]


def test_body_on_get_is_consumed(hub):
    raw = req("/health", body=b"ignored body") + req("/health")
    rs = http_exchange(hub.port, raw, 2)
    assert [r.status for r in rs] == [200, 200]


def test_uri_too_long_414(hub):
    raw = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    resp = http_exchange(hub.port, raw)[0]
    assert resp.status in (414, 431), resp


def test_pipelining_with_bodies_and_split_writes(hub):
    with RawWS.connect(hub.port, "/bench/sub?channel=pipe") as sub:
        raw = (req("/bench/pub?channel=pipe", "POST", body=b"one") + req("/health")
               + req("/bench/pub?channel=pipe", "POST", body=b"two"))
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        try:
            for i in range(0, len(raw), 7):  # the same bytes in small pieces
                s.sendall(raw[i:i + 7])
                time.sleep(0.002)
            r = Reader(s)
            statuses = [read_response(r, time.monotonic() + 5).status for _ in range(3)]
        finally:
            s.close()
        assert statuses == [202, 200, 202]
        assert sub.recv_message() == (OP_TEXT, b"one")
        assert sub.recv_message() == (OP_TEXT, b"two")


def test_connection_close_honoured(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(req("/health", headers="Connection: close\r\n"))
        r = Reader(s)
        resp = read_response(r, time.monotonic() + 5)
        assert resp.status == 200
        assert resp.header("connection", "").lower() == "close"
        assert r.at_eof(5), "server kept the connection open after Connection: close"
    finally:
        s.close()


def test_http10_closes(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        r = Reader(s)
        resp = read_response(r, time.monotonic() + 5)
        assert resp.status == 200 and resp.json() == {"status": "ok"}
        assert resp.header("connection", "close").lower() == "close"
        assert r.at_eof(5), "HTTP/1.0 without keep-alive must close"
    finally:
        s.close()


def test_http10_keep_alive_opt_in(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        r = Reader(s)
        for _ in range(2):
            s.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = read_response(r, time.monotonic() + 5)
            assert resp.status == 200
            assert resp.header("connection", "").lower() == "keep-alive"
    finally:
        s.close()


def test_head(hub):
    # HEAD then GET on one connection: a HEAD answered with a body would corrupt the second.
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(req("/health", "HEAD") + req("/health"))
        r = Reader(s)
        head = read_response(r, time.monotonic() + 5, head_only=True)
        assert head.status == 200
        assert head.header("content-length") == "15"
        get = read_response(r, time.monotonic() + 5)
        assert get.status == 200 and get.json() == {"status": "ok"}
    finally:
        s.close()


def test_missing_host_http11_400(hub):
    # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    resp = http_exchange(hub.port, b"GET /health HTTP/1.1\r\n\r\n")[0]
    assert_json_error(resp, 400)


def test_duplicate_host_400(hub):
    resp = http_exchange(hub.port, b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")[0]
    assert_json_error(resp, 400)


# ---------------------------------------------------------------------------
# Request bodies


def test_chunked_request_body(hub):
    with RawWS.connect(hub.port, "/bench/sub?channel=chunky") as sub:
        body = (b"POST /bench/pub?channel=chunky HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nHello\r\n"
                b"2;ext=1\r\n, \r\n"
                b"6\r\nchunky\r\n"
                b"0\r\nX-Trailer: ignored\r\n\r\n")
        resp = http_exchange(hub.port, body + req("/health"), 2)
        assert [r.status for r in resp] == [202, 200]
        assert sub.recv_message() == (OP_TEXT, b"Hello, chunky")


def test_expect_100_continue(hub):
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    try:
        s.sendall(b"POST /bench/pub?channel=e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        r = Reader(s)
        interim = read_response(r, time.monotonic() + 5)
        assert interim.status == 100
        s.sendall(b"body")
        assert read_response(r, time.monotonic() + 5).status == 202
    finally:
        s.close()


@pytest.fixture
def limits_hub(make_hub):
    return make_hub("--max-body", "1KiB", "--max-header", "4KiB", "--header-timeout", "1s")


def test_header_too_large_431(limits_hub):
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    assert_json_error(http_exchange(limits_hub.port, raw)[0], 431)


def test_header_just_under_limit_ok(limits_hub):
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    assert http_exchange(limits_hub.port, raw)[0].status == 200


def test_too_many_headers_431(hub):
    raw = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n"
    assert_json_error(http_exchange(hub.port, raw)[0], 431)


def test_body_too_large_413_content_length(limits_hub):
    # Refused from the header alone: the body is never sent.
    raw = b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    assert_json_error(http_exchange(limits_hub.port, raw)[0], 413)


def test_body_too_large_413_chunked(limits_hub):
    raw = (b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           + (b"200\r\n" + b"a" * 512 + b"\r\n") * 3 + b"0\r\n\r\n")
    assert_json_error(http_exchange(limits_hub.port, raw)[0], 413)


def test_body_at_limit_ok(limits_hub):
    raw = req("/bench/pub?channel=x", "POST", body=b"b" * 1024)
    assert http_exchange(limits_hub.port, raw)[0].status == 202


@pytest.mark.parametrize("raw", [
    b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /bench/pub?channel=x HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
], ids=["cl-and-te", "two-cl", "negative-cl", "space-before-colon"])
def test_smuggling_shapes_refused_400(hub, raw):
    assert_json_error(http_exchange(hub.port, raw)[0], 400)


# ---------------------------------------------------------------------------
# Timeouts


def test_slowloris_half_head_408(limits_hub):
    s = socket.create_connection(("127.0.0.1", limits_hub.port), timeout=10)
    try:
        start = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # no blank line, ever
        r = Reader(s)
        try:
            resp = read_response(r, time.monotonic() + 8)
            assert_json_error(resp, 408)
            assert r.at_eof(3)
        except Closed:
            pass  # closed without an answer: also a valid way to cut it off
        elapsed = time.monotonic() - start
        assert 0.5 <= elapsed <= 5, f"cut off after {elapsed:.1f}s with header-timeout 1s"
    finally:
        s.close()


def test_slowloris_trickle_408(limits_hub):
    # One byte at a time keeps the socket busy but must not extend the deadline.
    s = socket.create_connection(("127.0.0.1", limits_hub.port), timeout=10)
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100
    start = time.monotonic()
    closed = False
    try:
        for b in head:
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - start > 6:
                break
            s.settimeout(0.001)
            try:
                data = s.recv(4096)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                closed = True
                break
            if not data or data.startswith(b"HTTP/1.1 408"):
                closed = True
                break
            raise AssertionError(f"unexpected answer {data!r}")
        assert closed, "trickled request head was never cut off"
        assert time.monotonic() - start <= 5
    finally:
        s.close()


def test_idle_keep_alive_not_cut_by_header_timeout(limits_hub):
    s = socket.create_connection(("127.0.0.1", limits_hub.port), timeout=10)
    try:
        r = Reader(s)
        s.sendall(req("/health"))
        assert read_response(r, time.monotonic() + 5).status == 200
        time.sleep(2.5)  # idle between requests longer than header-timeout
        s.sendall(req("/health"))
        assert read_response(r, time.monotonic() + 5).status == 200
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Errors and routing


def test_unknown_path_404_json(hub):
    resp = http_request(hub.port, "GET", "/no/such/thing")
    assert_json_error(resp, 404)


def test_wrong_method_405_allow(hub):
    for method, path in [("DELETE", "/health"), ("POST", "/metrics"), ("PUT", "/api/status")]:
        resp = http_request(hub.port, method, path, body=b"x" if method != "DELETE" else b"")
        assert_json_error(resp, 405)
        allow = [m.strip() for m in resp.header("allow", "").split(",")]
        assert "GET" in allow, resp


@pytest.mark.parametrize("line", [
    b"GET /health HTTP/1.1 extra",
    b"GET health HTTP/1.1",
    b"GET /he alth HTTP/1.1",
    b"GET",
    b"/health HTTP/1.1",
    b"GET /health HTTP/1.x",
])
def test_bad_request_line_400(hub, line):
    resp = http_exchange(hub.port, line + b"\r\nHost: x\r\n\r\n")[0]
    assert_json_error(resp, 400)


def test_bad_header_line_400(hub):
    resp = http_exchange(hub.port, b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n")[0]
    assert_json_error(resp, 400)


def test_unsupported_version_505(hub):
    resp = http_exchange(hub.port, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")[0]
    assert resp.status in (400, 505), resp


def test_garbage_then_server_still_serves(hub):
    for junk in [b"\x00\x01\x02\x03\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(300)]:
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        try:
            s.sendall(junk)
            out = Reader(s).read_to_eof(time.monotonic() + 5)
            assert out.startswith(b"HTTP/1.1 4") or out.startswith(b"HTTP/1.1 5") or out == b"", out
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
    assert hub.get("/health")[0] == 200


def test_leading_empty_lines_ignored(hub):
    # RFC 9112 2.2: a server SHOULD ignore at least one empty line before the request line.
    resp = http_exchange(hub.port, b"\r\n" + req("/health"))[0]
    assert resp.status == 200


def test_no_requests_processed_after_connection_close(hub):
    # RFC 9112 9.6: after a request with "Connection: close" the server MUST NOT
    # process further requests on that connection.
    with RawWS.connect(hub.port, "/bench/sub?channel=after-close") as sub:
        raw = (req("/health", headers="Connection: close\r\n")
               + req("/bench/pub?channel=after-close", "POST", body=b"must not be published"))
        s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        try:
            s.sendall(raw)
            out = Reader(s).read_to_eof(time.monotonic() + 5)
        finally:
            s.close()
        assert out.count(b"HTTP/1.1 ") == 1, out
        with pytest.raises(TimeoutError):
            sub.recv_frame(timeout=0.5)


def test_percent_encoded_path_and_query(hub):
    assert http_request(hub.port, "GET", "/%68ealth").status == 200
    assert http_request(hub.port, "GET", "/health?verbose=1").status == 200
    assert http_request(hub.port, "GET", "/health%00").status in (400, 404)


def test_test_endpoints_404_without_flag():
    with Hub(test_endpoints=False) as h:
        for path in ["/echo", "/bench/sub?channel=a", "/bench/pub?channel=a"]:
            st, _, body = h.get(path)
            assert st == 404, (path, st)
            assert json.loads(body)["success"] is False
        resp = http_request(h.port, "POST", "/bench/pub?channel=a", body=b"x")
        assert resp.status == 404
        with RawWS.connect(h.port, "/echo", expect=None) as ws:
            assert ws.response.status == 404
        assert h.get("/health")[0] == 200
        assert h.stop() == 0


# ---------------------------------------------------------------------------
# Operator endpoints

COUNTERS = ["conns_accepted", "http_requests", "frames_in", "frames_out", "bytes_in", "bytes_out",
            "writes", "slow_consumers_dropped", "protocol_errors", "tls_handshake_errors",
            "broadcasts", "deliveries", "ws_pong_timeouts"]
GAUGES = ["conns_open", "ws_open", "sse_open", "loops", "uptime_seconds"]


def test_metrics_prometheus_text(make_hub):
    hub = make_hub(threads=2)
    st, headers, body = hub.get("/metrics", {"Authorization": "Bearer " + hub.token()})
    assert st == 200
    ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    text = body.decode()
    samples = parse_metrics(text)
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) .+$", text, re.M))
    for name in COUNTERS:
        full = "chorus_" + name
        assert types.get(full) == "counter", (full, types.get(full))
        assert full in helps and full in samples
        assert samples[full] >= 0
    for name in GAUGES:
        full = "chorus_" + name
        assert types.get(full) == "gauge", (full, types.get(full))
        assert full in samples
    assert samples["chorus_loops"] == 2
    # Per-loop samples add up to the total.
    for name in ["conns_accepted", "bytes_in"]:
        per = [v for k, v in samples.items() if k.startswith(f'chorus_{name}{{loop="')]
        assert len(per) == 2
    # Each family's TYPE line comes before its first sample, and only once.
    seen_type = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            fam = line.split()[2]
            assert fam not in seen_type, f"duplicate TYPE for {fam}"
            seen_type.add(fam)
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(sum|count|bucket)$", "", name)
            ok = name in seen_type or (base in seen_type and types[base] in ("summary", "histogram"))
            assert ok, f"sample before TYPE: {line}"


def test_metrics_needs_admin_credential(hub):
    st, _, body = hub.get("/metrics")
    assert st == 401 and json.loads(body)["success"] is False
    st, _, body = hub.get("/metrics", {"Authorization": "Bearer not-a-token"})
    assert st == 401
    st, _, body = hub.get("/metrics", {"Authorization": "Bearer " + hub.token("read write", "u", "d")})
    assert st == 403
    assert hub.get("/metrics", {"Authorization": "Bearer " + hub.token()})[0] == 200


def test_metrics_counters_move(hub):
    m0 = hub.metrics()
    for _ in range(5):
        assert http_request(hub.port, "GET", "/health").status == 200
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"count me")
        ws.recv_message()
        m1 = hub.metrics()
        assert m1["chorus_ws_open"] >= 1
    assert m1["chorus_http_requests"] >= m0["chorus_http_requests"] + 6
    assert m1["chorus_conns_accepted"] >= m0["chorus_conns_accepted"] + 6
    assert m1["chorus_frames_in"] >= m0["chorus_frames_in"] + 1
    assert m1["chorus_bytes_in"] > m0["chorus_bytes_in"]
    assert m1["chorus_bytes_out"] > m0["chorus_bytes_out"]


def test_api_status_shape(make_hub):
    hub = make_hub(threads=3)
    with RawWS.connect(hub.port) as ws:
        st, headers, body = hub.get("/api/status")
        assert st == 200
        assert {k.lower(): v for k, v in headers.items()}["content-type"].startswith("application/json")
        j = json.loads(body)
        assert j["status"] == "running"
        assert j["health"] == "ok"
        assert isinstance(j["version"], str) and re.match(r"^\d+\.\d+\.\d+", j["version"])
        assert isinstance(j["uptime"], int) and 0 <= j["uptime"] < 600
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", j["timestamp"]), j["timestamp"]
        assert j["loops"] == 3
        c = j["connections"]
        assert all(isinstance(c[k], int) for k in ("total", "websocket", "sse"))
        assert c["websocket"] >= 1 and c["total"] >= 2  # the WebSocket and this request
        ws.send_frame(OP_TEXT, b"x")
        ws.recv_message()


def test_health(hub):
    st, headers, body = hub.get("/health")
    assert st == 200 and json.loads(body) == {"status": "ok"}


def test_max_connections_refuses_extra(make_hub):
    hub = make_hub("--max-connections", "5", threads=2)
    held = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
            s.sendall(req("/health"))
            assert read_response(Reader(s), time.monotonic() + 5).status == 200
            held.append(s)
        # The sixth is refused: closed at once, or answered 503, never served.
        extra = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
        try:
            extra.sendall(req("/health"))
            out = Reader(extra).read_to_eof(time.monotonic() + 5)
        except (ConnectionResetError, BrokenPipeError, Closed):
            out = b""
        finally:
            extra.close()
        assert out == b"" or out.startswith(b"HTTP/1.1 503"), out
    finally:
        for s in held:
            s.close()
    # Once the held ones are gone, new connections are served again.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert http_request(hub.port, "GET", "/health").status == 200
            break
        except (AssertionError, OSError, Closed):  # the held ones may still count briefly
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
