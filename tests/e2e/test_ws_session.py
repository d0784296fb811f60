"""WebSocket session behaviour over time: keep-alive pings, slow consumers,
graceful shutdown. Black box, against hubs started with short timers."""
import signal
import socket
import threading
import time


from rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Closed, RawWS, Reader, connect, parse_close, \
    read_response


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
