"""WebSocket session behaviour over time: keep-alive pings, slow consumers,
graceful shutdown. Black box, against hubs started with short timers."""
import re
import signal
import socket
import struct
import threading
import time

import pytest

from rawws import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Closed, RawWS, Reader, connect, \
    encode_frame, parse_close, read_response


# ---------------------------------------------------------------------------
# Pings and dead peers


def test_server_pings_and_drops_silent_peer(make_hub):
    hub = make_hub("--ping-interval", "1s", "--pong-timeout", "3s")
    silent = RawWS.connect(hub.port)
    live = RawWS.connect(hub.port)
    stop = threading.Event()
    live_pings = []
    live_error = []

    def answer():
        # Answers every ping with a pong, as a browser would.
        try:
            while not stop.is_set():
                try:
                    f = live.recv_frame(timeout=0.2)
                except TimeoutError:
                    continue
                if f.opcode == OP_PING:
                    live_pings.append(time.monotonic())
                    live.send_frame(OP_PONG, f.payload)
                elif f.opcode == OP_CLOSE or f.opcode == OP_TEXT:
                    live_error.append(f)
                    return
        except Exception as e:  # noqa: BLE001 - reported below
            live_error.append(e)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        start = time.monotonic()
        # The silent peer reads (so the kernel never blocks the server) but never answers.
        saw_ping = False
        dropped_at = None
        while time.monotonic() - start < 12:
            try:
                f = silent.recv_frame(timeout=0.5)
            except TimeoutError:
                continue
            except Closed:
                dropped_at = time.monotonic() - start
                break
            if f.opcode == OP_PING:
                saw_ping = True
            elif f.opcode == OP_CLOSE:
                # A close frame before the drop is acceptable; the TCP close must follow.
                assert silent.expect_eof(5)
                dropped_at = time.monotonic() - start
                break
        assert saw_ping, "the server never pinged the idle connection"
        assert dropped_at is not None, "silent peer was not dropped within 12 s (pong-timeout 3s)"
        assert dropped_at >= 2.0, f"dropped after {dropped_at:.1f}s, before pong-timeout"
        # The answering peer is still fine after the silent one's deadline passed.
        time.sleep(1.0)
        assert not live_error, live_error
        assert len(live_pings) >= 2, "answering peer should have been pinged repeatedly"
    finally:
        stop.set()
        t.join(5)
    live.send_frame(OP_TEXT, b"still alive")
    assert live.recv_message() == (OP_TEXT, b"still alive")
    live.close()
    silent.close()


def test_client_data_counts_as_liveness(make_hub):
    # A peer that keeps sending messages (but ignores pings) is not dead.
    hub = make_hub("--ping-interval", "1s", "--pong-timeout", "3s")
    with RawWS.connect(hub.port) as ws:
        deadline = time.monotonic() + 5
        n = 0
        while time.monotonic() < deadline:
            ws.send_frame(OP_TEXT, b"tick %d" % n)
            assert ws.recv_message() == (OP_TEXT, b"tick %d" % n)
            n += 1
            time.sleep(0.4)


# ---------------------------------------------------------------------------
# Control frames bypass queued data


def publish_backlog(hub, channel, total, size=64 << 10, tls=False):
    """Queue `total` bytes of numbered binary messages for the one subscriber of channel, as
    fast as possible (pipelined on a /bench/pub WebSocket, closed once the hub has delivered
    them all to the subscriber's queue). Returns (payloads, seconds it took)."""
    t0 = time.monotonic()
    before = hub.metrics()["chorus_deliveries"]
    msgs = [struct.pack("!I", i) + bytes([i & 0xFF]) * (size - 4) for i in range(total // size)]
    with RawWS.connect(hub.port, "/bench/pub?channel=" + channel, tls=tls) as pub:
        pub.send_raw(b"".join(encode_frame(OP_BINARY, m) for m in msgs))
        deadline = time.monotonic() + 20
        while hub.metrics()["chorus_deliveries"] < before + len(msgs):
            assert time.monotonic() < deadline, "the backlog was never queued"
            time.sleep(0.05)
    return msgs, time.monotonic() - t0


def read_backlog(ws, msgs, timeout=60):
    """Read until every message of msgs has arrived (in order, whole); returns the byte
    offsets (counted in payload bytes of data frames before it) of the pings seen."""
    pings = []
    got = 0
    data_bytes = 0
    deadline = time.monotonic() + timeout
    while got < len(msgs):
        f = ws.recv_frame(timeout=max(0.1, deadline - time.monotonic()))
        if f.opcode == OP_PING:
            pings.append(data_bytes)
            continue
        assert f.opcode == OP_BINARY and f.fin, f[:3]
        assert f.payload == msgs[got], f"message {got} damaged or out of order"
        got += 1
        data_bytes += len(f.payload)
    return pings


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_ping_overtakes_queued_backlog(make_hub, tls_cert, tls):
    # A subscriber that does not read while 16 MB are queued for it: the server's ping
    # (sent after the whole backlog was queued) must come out near the head, not the end.
    hub = make_hub("--ping-interval", "3s", "--pong-timeout", "60s", "--max-outbound", "64MiB",
                   tls=tls_cert if tls else None)
    sub = RawWS.connect(hub.port, "/bench/sub?channel=backlog", rcvbuf=4096, tls=tls)
    t0 = time.monotonic()
    msgs, took = publish_backlog(hub, "backlog", 16 << 20, tls=tls)
    total = sum(len(m) for m in msgs)
    # The whole backlog was queued before the first ping (3 s of silence, swept once a
    # second); wait past it, then read.
    assert took < 2.0, f"queueing the backlog took {took:.1f}s: the ping may precede it"
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    pings = read_backlog(sub, msgs)
    assert pings, "no ping before the last message of the backlog"
    assert pings[0] < total // 4, f"first ping after {pings[0]} of {total} queued bytes"
    sub.close()


def test_listener_with_long_backlog_answering_pings_is_not_dropped(make_hub):
    # The measured failure: a listening client whose backlog takes longer to drain than the
    # pong timeout. It reads slowly and answers every ping at once; with the ping at the end
    # of its queue (or its pong unread while reading is paused) it was dropped.
    hub = make_hub("--ping-interval", "1s", "--pong-timeout", "3s", "--max-outbound", "64MiB")
    sub = RawWS.connect(hub.port, "/bench/sub?channel=slow", rcvbuf=16384)
    msgs, _ = publish_backlog(hub, "slow", 12 << 20)
    pings = 0
    got = 0
    start = time.monotonic()
    while got < len(msgs):
        try:
            f = sub.recv_frame(timeout=10)
        except Closed:
            raise AssertionError(f"dropped after {time.monotonic() - start:.1f}s, {got} of "
                                 f"{len(msgs)} messages read; log:\n{hub.logs()}") from None
        if f.opcode == OP_PING:
            pings += 1
            sub.send_frame(OP_PONG, f.payload)
            continue
        assert f.opcode == OP_BINARY and f.payload == msgs[got]
        got += 1
        if got % 16 == 0:
            time.sleep(0.6)  # ~1.6 MB/s: the backlog takes ~7 s, over twice the pong timeout
    elapsed = time.monotonic() - start
    assert elapsed > 4, f"drained in {elapsed:.1f}s: the client was not slow enough to test anything"
    assert pings >= 2, pings
    assert hub.metrics()["chorus_ws_pong_timeouts"] == 0
    sub.send_frame(OP_PING, b"still here")
    f = sub.recv_frame()
    while f.opcode == OP_PING:  # the server's own keep-alive may come first
        f = sub.recv_frame()
    assert (f.opcode, f.payload) == (OP_PONG, b"still here")
    sub.close()


def test_pong_timeout_drop_is_counted_and_logged(make_hub):
    hub = make_hub("--ping-interval", "1s", "--pong-timeout", "2s", threads=1)
    before = hub.metrics()["chorus_ws_pong_timeouts"]
    mute = RawWS.connect(hub.port, "/echo")  # reads nothing, answers nothing
    assert mute.expect_eof(10), "the silent peer was not dropped"
    deadline = time.monotonic() + 5
    while hub.metrics()["chorus_ws_pong_timeouts"] < before + 1:
        assert time.monotonic() < deadline, "drop not counted in chorus_ws_pong_timeouts"
        time.sleep(0.1)
    m = hub.metrics()
    assert m['chorus_ws_pong_timeouts{loop="0"}'] == m["chorus_ws_pong_timeouts"]
    assert m["chorus_slow_consumers_dropped"] == 0
    line = [ln for ln in hub.logs().splitlines() if "no pong for" in ln]
    assert line, hub.logs()
    assert re.search(r"ws conn \d+ \(127\.0\.0\.1:\d+\): no pong for \d+ ms, \d+ bytes queued", line[0]), line
    mute.close()


# ---------------------------------------------------------------------------
# Slow consumers


def slow_consumer_scenario(hub, tls=False):
    """A subscriber that never reads is dropped once max-outbound is exceeded, while a
    fast one on the same channel receives every message in order."""
    before = hub.metrics()["chorus_slow_consumers_dropped"]
    slow = RawWS.connect(hub.port, "/bench/sub?channel=flood", tls=tls, rcvbuf=4096)
    fast = RawWS.connect(hub.port, "/bench/sub?channel=flood", tls=tls)
    received = []
    fast_err = []
    got_one = threading.Condition()

    def reader():
        try:
            while True:
                op, data = fast.recv_message(timeout=30)
                with got_one:
                    received.append(data)
                    got_one.notify_all()
                if data == b"END":
                    return
        except Exception as e:  # noqa: BLE001
            fast_err.append(e)
            with got_one:
                got_one.notify_all()

    t = threading.Thread(target=reader, daemon=True)
    t.start()

    # Publish with a window keyed on the fast subscriber, so only the slow one falls behind.
    pub = connect(hub.port, tls=tls, timeout=10)
    pr = Reader(pub)
    sent = []

    def publish(body):
        pub.sendall(b"POST /bench/pub?channel=flood HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body)
        assert read_response(pr, time.monotonic() + 10).status == 202
        sent.append(body)

    size = 16 << 10
    dropped = False
    try:
        for i in range(4000):  # at most 64 MB
            publish((b"%08d" % i) * (size // 8))
            with got_one:
                ok = got_one.wait_for(lambda: len(received) >= len(sent) - 8 or fast_err, timeout=10)
            assert ok and not fast_err, f"fast subscriber stalled: {fast_err}"
            if i % 50 == 49 and hub.metrics()["chorus_slow_consumers_dropped"] > before:
                dropped = True
                break
        assert dropped, "the slow subscriber was never dropped"
        for i in range(10):  # the fast subscriber keeps receiving after the drop
            publish(b"after-%d" % i)
        publish(b"END")
    finally:
        pub.close()
    t.join(30)
    assert not fast_err, fast_err
    assert len(received) == len(sent), (len(received), len(sent))
    assert received == sent, "fast subscriber lost or reordered messages"

    # The slow one: whole frames ending in close 1013, or the connection just ends.
    close_code = None
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            f = slow.recv_frame(timeout=max(0.1, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                close_code = parse_close(f.payload)[0]
                break
            assert f.opcode == OP_TEXT
    except Closed:
        pass
    if close_code is not None:
        assert close_code == 1013, close_code
        assert slow.expect_eof(10)
    else:
        assert slow.reader.eof, "slow subscriber was neither closed nor sent a close frame"
    slow.close()
    fast.close()
    assert hub.metrics()["chorus_slow_consumers_dropped"] >= before + 1
    return close_code


def test_slow_consumer_dropped_fast_one_unaffected(make_hub):
    hub = make_hub("--max-outbound", "256KiB", threads=2)
    slow_consumer_scenario(hub)


# ---------------------------------------------------------------------------
# Graceful shutdown


def test_sigterm_sends_1001_and_exits_zero(make_hub):
    hub = make_hub("--shutdown-timeout", "5s", threads=2)
    clients = [RawWS.connect(hub.port, "/echo") for _ in range(4)]
    clients += [RawWS.connect(hub.port, "/bench/sub?channel=bye") for _ in range(4)]
    for i, c in enumerate(clients[:4]):
        c.send_frame(OP_TEXT, b"hi %d" % i)
        assert c.recv_message() == (OP_TEXT, b"hi %d" % i)
    start = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    for c in clients:
        code, reason = c.expect_close(timeout=8)
        assert code == 1001, code
    rc = hub.proc.wait(timeout=10)
    elapsed = time.monotonic() - start
    assert rc == 0, hub.logs()
    assert elapsed < 5 + 3, f"exit took {elapsed:.1f}s with shutdown-timeout 5s"
    for c in clients:
        assert c.expect_eof(2)
        c.close()


def test_sigterm_with_unresponsive_clients_within_timeout(make_hub):
    # Clients that never answer the close handshake, never read, or sit on a half
    # request must not hold the process beyond the shutdown timeout.
    hub = make_hub("--shutdown-timeout", "2s", threads=2)
    socks = []
    for _ in range(3):
        ws = RawWS.connect(hub.port, "/echo")
        ws.send_frame(OP_TEXT, b"x", fin=False)  # a message left half-way
        socks.append(ws)
    # A subscriber with a full receive window: the server's close frame cannot get out.
    stuck = RawWS.connect(hub.port, "/bench/sub?channel=stuck", rcvbuf=4096)
    pub = connect(hub.port)
    pr = Reader(pub)
    for i in range(64):
        body = b"s" * (32 << 10)
        pub.sendall(b"POST /bench/pub?channel=stuck HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body)
        assert read_response(pr, time.monotonic() + 10).status == 202
    pub.close()
    http_idle = socket.create_connection(("127.0.0.1", hub.port))
    http_idle.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # an unfinished request
    sse = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    sse.sendall(b"GET /echo?count=10&interval_ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
    sse_reader = Reader(sse)
    assert read_response(sse_reader, time.monotonic() + 5, head_only=True).status == 200
    start = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    assert sse_reader.at_eof(5) or sse_reader.eof, "SSE stream not ended by the shutdown"
    rc = hub.proc.wait(timeout=10)
    assert rc == 0, hub.logs()
    assert time.monotonic() - start < 2 + 3
    for ws in socks + [stuck]:
        ws.close()
    http_idle.close()
    sse.close()


def test_sigterm_idle_exits_promptly(make_hub):
    hub = make_hub("--shutdown-timeout", "10s")
    start = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    assert hub.proc.wait(timeout=10) == 0
    assert time.monotonic() - start < 5, "an idle hub should not wait for the drain timeout"
