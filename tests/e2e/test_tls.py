"""TLS: https and wss with a self-signed certificate made at run time (tls_cert)."""
import asyncio
import json
import os
import socket
import ssl
import time

import pytest
import websockets

from conftest import run
from rawws import OP_TEXT, RawWS, Reader, encode_frame, http_request, read_response, \
    ws_handshake_request


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def tls_hub(make_hub, tls_cert):
    return make_hub(tls=tls_cert)


def test_https_health(tls_hub):
    st, _, body = tls_hub.get("/health")
    assert st == 200 and json.loads(body) == {"status": "ok"}


def test_https_verifies_against_the_cert(tls_hub, tls_cert):
    ctx = ssl.create_default_context(cafile=tls_cert[0])
    with socket.create_connection(("127.0.0.1", tls_hub.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            s.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            resp = read_response(Reader(s), time.monotonic() + 5)
            assert resp.status == 200


def test_https_keep_alive_and_pipelining(tls_hub):
    s = socket.create_connection(("127.0.0.1", tls_hub.port), timeout=5)
    s = client_ctx().wrap_socket(s, server_hostname="localhost")
    try:
        r = Reader(s)
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        s.sendall(req * 3)
        assert [read_response(r, time.monotonic() + 5).status for _ in range(3)] == [200] * 3
        s.sendall(req)
        assert read_response(r, time.monotonic() + 5).status == 200
    finally:
        s.close()


def test_wss_echo(tls_hub):
    async def go():
        async with websockets.connect(tls_hub.ws_url("/echo"), ssl=client_ctx(),
                                      max_size=4 << 20) as ws:
            for m in ["hello over tls", b"\x00\xff" * 10, "", "z" * 200000, os.urandom(500000)]:
                await ws.send(m)
                assert await asyncio.wait_for(ws.recv(), 10) == m
            await ws.close()
            assert ws.close_code == 1000
    run(go())


def test_wss_raw_protocol_error(tls_hub):
    with RawWS.connect(tls_hub.port, "/echo", tls=True) as ws:
        ws.send_frame(OP_TEXT, b"unmasked", mask=False)
        code, _ = ws.expect_close()
        assert code == 1002


def test_wss_pubsub(tls_hub):
    with RawWS.connect(tls_hub.port, "/bench/sub?channel=t", tls=True) as sub:
        resp = http_request(tls_hub.port, "POST", "/bench/pub?channel=t", body=b"secret", tls=True)
        assert resp.status == 202
        assert sub.recv_message() == (OP_TEXT, b"secret")


def test_tls_slow_consumer(make_hub, tls_cert):
    from test_ws_session import slow_consumer_scenario
    hub = make_hub("--max-outbound", "256KiB", tls=tls_cert, threads=2)
    slow_consumer_scenario(hub, tls=True)


def test_plain_http_on_tls_port_rejected(tls_hub):
    before = tls_hub.metrics()["chorus_tls_handshake_errors"]
    s = socket.create_connection(("127.0.0.1", tls_hub.port), timeout=5)
    try:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        out = Reader(s).read_to_eof(time.monotonic() + 5)
        # Either a TLS alert record or nothing, but never an HTTP answer in clear.
        assert not out.startswith(b"HTTP/"), out
        if out:
            assert out[0] == 0x15, f"expected a TLS alert record, got {out[:16]!r}"
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    # The server is alive and still serves TLS clients.
    assert tls_hub.get("/health")[0] == 200
    assert tls_hub.proc.poll() is None
    assert tls_hub.metrics()["chorus_tls_handshake_errors"] >= before + 1


@pytest.mark.parametrize("junk", [b"", b"\x16\x03\x01\x00\x05hello", os.urandom(2000),
                                  b"\x16\x03\x01\xff\xff" + os.urandom(100)],
                         ids=["connect-close", "short-hello", "random", "truncated-record"])
def test_broken_tls_clients_do_not_hurt(tls_hub, junk):
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", tls_hub.port), timeout=5)
        try:
            if junk:
                s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            Reader(s).read_to_eof(time.monotonic() + 5)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
    assert tls_hub.get("/health")[0] == 200


def test_refused_handshake_and_frame_in_one_tls_read(tls_hub):
    # Two TLS records in one TCP write: a refused WebSocket handshake, then a frame.
    # The second record reaches the connection after its protocol was detached.
    ctx = client_ctx()
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    s = socket.create_connection(("127.0.0.1", tls_hub.port), timeout=5)
    try:
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    s.sendall(out.read())
                data = s.recv(65536)
                assert data, "server closed during the handshake"
                inc.write(data)
        if out.pending:
            s.sendall(out.read())
        raw, _ = ws_handshake_request(tls_hub.port, "/echo", extra={"Sec-WebSocket-Version": "7"})
        obj.write(raw)
        obj.write(encode_frame(OP_TEXT, b"right behind"))
        obj.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        s.sendall(out.read())
        plain = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not data:
                break
            inc.write(data)
            try:
                while True:
                    plain += obj.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                pass
            if b"\r\n\r\n" in plain:
                break
        assert plain.startswith(b"HTTP/1.1 426"), plain
    finally:
        s.close()
    assert tls_hub.get("/health")[0] == 200, "server died"
    assert tls_hub.proc.poll() is None


def test_tls_config_errors_exit_nonzero(tls_cert, tmp_path):
    from conftest import CHORUS_BIN, free_port, sanitizer_report
    import subprocess
    # Missing files: refused at start-up, not at the first connection.
    r = subprocess.run([CHORUS_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
                        "--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", tls_cert[1]],
                       capture_output=True, timeout=10)
    assert r.returncode in (1, 2), r
    assert not sanitizer_report((r.stdout + r.stderr).decode(errors="replace")), r
    assert b"tls" in r.stderr.lower() + r.stdout.lower(), r
    # Key that does not match the certificate.
    other_key = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-out", str(other_key)], check=True, capture_output=True)
    r = subprocess.run([CHORUS_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "d"),
                        "--tls-cert", tls_cert[0], "--tls-key", str(other_key)],
                       capture_output=True, timeout=10)
    assert r.returncode in (1, 2), r
    assert not sanitizer_report((r.stdout + r.stderr).decode(errors="replace")), r
    assert b"tls" in r.stderr.lower() + r.stdout.lower(), r
