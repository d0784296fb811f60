"""RFC 6455 conformance of the WebSocket server, black box, on /echo.

Well-formed traffic goes through python websockets where it can; everything a
real client refuses to send (unmasked frames, reserved bits and opcodes, bad
close payloads, broken UTF-8) goes through the raw-socket helper rawws. Close
codes are always the ones read from the server's own close frame, and after a
protocol failure the server must also end the TCP connection.
"""
import os
import struct
import time

import pytest
import websockets

from conftest import run
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, accept_key,
                   http_exchange, ws_handshake_request)


def handshake(hub, path="/echo", extra=None, omit=(), method="GET"):
    raw, key = ws_handshake_request(hub.port, path, extra=extra, omit=omit)
    if method != "GET":
        raw = raw.replace(b"GET ", method.encode() + b" ", 1)
    return http_exchange(hub.port, raw, head_only=(method == "HEAD"))[0], key


def assert_json_error(resp, status):
    assert resp.status == status, resp
    assert resp.header("content-type", "").startswith("application/json"), resp
    body = resp.json()
    assert body["success"] is False and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def assert_fails(ws, code, timeout=5.0):
    """The server sends a close frame with this code and then ends the connection."""
    got, _ = ws.expect_close(timeout)
    assert got == code, f"expected close {code}, server sent {got}"
    assert ws.expect_eof(timeout), "server did not close the TCP connection after failing it"


# ---------------------------------------------------------------------------
# Opening handshake


def test_handshake_accept(hub):
    resp, key = handshake(hub)
    assert resp.status == 101
    assert resp.header("upgrade", "").lower() == "websocket"
    assert "upgrade" in resp.header("connection", "").lower()
    assert resp.header("sec-websocket-accept") == accept_key(key)
    # RFC 6455 4.2.2: no subprotocol header unless the client offered one the server picked.
    assert resp.header("sec-websocket-protocol") is None
    assert resp.header("sec-websocket-extensions") is None  # none offered


def test_handshake_rfc_sample_key(hub):
    resp, _ = handshake(hub, extra={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert resp.status == 101
    assert resp.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_subprotocol_not_selected_when_unsupported(hub):
    resp, _ = handshake(hub, extra={"Sec-WebSocket-Protocol": "chat, superchat"})
    assert resp.status == 101
    assert resp.header("sec-websocket-protocol") is None


@pytest.mark.parametrize("case", [
    dict(omit=["Sec-WebSocket-Key"]),
    dict(extra={"Sec-WebSocket-Key": "short"}),
    dict(extra={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}),            # no padding
    dict(extra={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==dGhl"}),      # too long
    dict(extra={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25j!Q=="}),          # not base64
    dict(extra={"Upgrade": "h2c"}),
    dict(extra={"Upgrade": "not-websocket"}),
    dict(omit=["Upgrade"]),
    dict(extra={"Connection": "keep-alive"}),
    dict(omit=["Connection"]),
], ids=["no-key", "short-key", "unpadded-key", "long-key", "bad-b64-key", "upgrade-h2c",
        "upgrade-other", "no-upgrade", "connection-keepalive", "no-connection"])
def test_handshake_rejected_400(hub, case):
    resp, _ = handshake(hub, **case)
    assert_json_error(resp, 400)
    assert resp.header("sec-websocket-accept") is None


def test_handshake_non_get(hub):
    # HEAD reaches the /echo handler: RFC 6455 4.1 requires GET -> 400.
    resp, _ = handshake(hub, method="HEAD")
    assert resp.status == 400, resp
    assert resp.header("sec-websocket-accept") is None
    # Other methods are not routed to /echo at all; any 4xx refusal is a valid
    # answer ("such as 400", RFC 6455 4.2.1), here 405 with Allow.
    resp, _ = handshake(hub, method="PUT")
    assert resp.status in (400, 405), resp
    assert resp.header("sec-websocket-accept") is None
    if resp.status == 405:
        assert "GET" in resp.header("allow", ""), resp


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "thirteen"])
def test_handshake_bad_version_426(hub, version):
    resp, _ = handshake(hub, extra={"Sec-WebSocket-Version": version})
    assert_json_error(resp, 426)
    assert resp.header("sec-websocket-version") == "13"


def test_handshake_missing_version_426(hub):
    resp, _ = handshake(hub, omit=["Sec-WebSocket-Version"])
    # RFC 6455 4.2.2: a missing/unsupported version is answered with the supported one.
    assert resp.status in (400, 426), resp
    if resp.status == 426:
        assert resp.header("sec-websocket-version") == "13"


def test_origin_allow_list(make_hub):
    hub = make_hub("--origins", "https://good.example", "--origins", "https://also.example")
    resp, _ = handshake(hub, extra={"Origin": "https://evil.example"})
    assert_json_error(resp, 403)
    resp, _ = handshake(hub, extra={"Origin": "https://good.example.evil"})
    assert_json_error(resp, 403)
    for ok in ("https://good.example", "https://also.example"):
        resp, _ = handshake(hub, extra={"Origin": ok})
        assert resp.status == 101, resp
    # Non-browser clients send no Origin and are not subject to the browser policy.
    resp, _ = handshake(hub)
    assert resp.status == 101, resp


@pytest.mark.parametrize("extra", [{"Sec-WebSocket-Version": "8"}, {"Sec-WebSocket-Key": "bad"},
                                   {"Connection": "keep-alive"}], ids=["426", "400-key", "400-conn"])
def test_refused_handshake_with_trailing_bytes(hub, extra):
    # Frames sent optimistically right behind a handshake that gets refused must
    # be dropped, not handed to a protocol that does not exist (this crashed once).
    from rawws import encode_frame
    raw, _ = ws_handshake_request(hub.port, "/echo", extra=extra)
    resp = http_exchange(hub.port, raw + encode_frame(OP_TEXT, b"too early") + b"GET / HTTP/1.1\r\n\r\n")[0]
    assert resp.status in (400, 426), resp
    assert hub.get("/health")[0] == 200, "server died"
    assert hub.proc.poll() is None


def test_any_origin_without_allow_list(hub):
    resp, _ = handshake(hub, extra={"Origin": "https://whatever.example"})
    assert resp.status == 101, resp


# ---------------------------------------------------------------------------
# Echo with a real client


def test_echo_websockets_client(hub):
    async def go():
        async with websockets.connect(hub.ws_url("/echo"), compression=None) as ws:
            assert ws.subprotocol is None
            for msg in ["hello", "", "héllo wörld ✓ 😀", b"\x00\x01\xff", b"", "x" * 70000,
                        os.urandom(300000)]:
                await ws.send(msg)
                got = await asyncio_wait(ws.recv())
                assert type(got) is type(msg) and got == msg
            pong = await ws.ping(b"abc")
            await asyncio_wait(pong)
            await ws.close(code=1000)
            assert ws.close_code == 1000
    run(go())


async def asyncio_wait(aw, timeout=10):
    import asyncio
    return await asyncio.wait_for(aw, timeout)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_echo_length_boundaries(hub, size, opcode):
    payload = (b"a" * size) if opcode == OP_TEXT else os.urandom(size)
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(opcode, payload)
        f = ws.recv_frame()
        assert f.opcode == opcode and f.fin and f.rsv == 0
        assert len(f.payload) == size and f.payload == payload


def test_server_uses_minimal_length_encoding(hub):
    with RawWS.connect(hub.port) as ws:
        for size, hdr in [(125, 2), (126, 4), (65535, 4), (65536, 10)]:
            ws.send_frame(OP_BINARY, b"z" * size)
            raw = ws.reader.read_exact(2, time.monotonic() + 5)
            n = raw[1] & 0x7F
            ext = {126: 2, 127: 8}.get(n, 0)
            assert 2 + ext == hdr, f"size {size}: header length {2 + ext}"
            ws.reader.read_exact(ext + size, time.monotonic() + 5)


def test_many_messages_in_one_write(hub):
    with RawWS.connect(hub.port) as ws:
        msgs = [f"m{i}".encode() * (i % 50) for i in range(200)]
        from rawws import encode_frame
        ws.send_raw(b"".join(encode_frame(OP_TEXT, m) for m in msgs))
        for m in msgs:
            assert ws.recv_message() == (OP_TEXT, m)


def test_frames_split_byte_by_byte(hub):
    from rawws import encode_frame
    with RawWS.connect(hub.port) as ws:
        data = encode_frame(OP_TEXT, "κόσμε".encode() * 3, fin=False) + encode_frame(OP_PING, b"p") \
            + encode_frame(OP_CONT, b"!", fin=True)
        for i in range(len(data)):
            ws.send_raw(data[i:i + 1])
            time.sleep(0.001)
        f = ws.recv_frame()
        assert (f.opcode, f.payload) == (OP_PONG, b"p")
        assert ws.recv_message() == (OP_TEXT, "κόσμε".encode() * 3 + b"!")


# ---------------------------------------------------------------------------
# Fragmentation


def test_fragmented_text(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"Hel", fin=False)
        ws.send_frame(OP_CONT, b"lo, ", fin=False)
        ws.send_frame(OP_CONT, b"", fin=False)
        ws.send_frame(OP_CONT, b"world", fin=True)
        assert ws.recv_message() == (OP_TEXT, b"Hello, world")


def test_fragmented_binary(hub):
    parts = [os.urandom(n) for n in (1, 1000, 70000, 0, 3)]
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_BINARY, parts[0], fin=False)
        for p in parts[1:-1]:
            ws.send_frame(OP_CONT, p, fin=False)
        ws.send_frame(OP_CONT, parts[-1], fin=True)
        assert ws.recv_message() == (OP_BINARY, b"".join(parts))


def test_utf8_code_point_split_across_fragments(hub):
    text = "€𝄞".encode()  # 3-byte + 4-byte sequences
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, text[:1], fin=False)
        ws.send_frame(OP_CONT, text[1:5], fin=False)
        ws.send_frame(OP_CONT, text[5:], fin=True)
        assert ws.recv_message() == (OP_TEXT, text)


def test_control_frames_interleaved_in_fragmented_message(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"frag1 ", fin=False)
        ws.send_frame(OP_PING, b"ping-1")
        ws.send_frame(OP_CONT, b"frag2 ", fin=False)
        ws.send_frame(OP_PONG, b"unsolicited")  # must be ignored
        ws.send_frame(OP_PING, b"ping-2")
        ws.send_frame(OP_CONT, b"frag3", fin=True)
        f1 = ws.recv_frame()
        f2 = ws.recv_frame()
        assert (f1.opcode, f1.payload) == (OP_PONG, b"ping-1")
        assert (f2.opcode, f2.payload) == (OP_PONG, b"ping-2")
        assert ws.recv_message() == (OP_TEXT, b"frag1 frag2 frag3")


# ---------------------------------------------------------------------------
# Ping / pong


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))])
def test_ping_pong_same_payload(hub, payload):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_PING, payload)
        f = ws.recv_frame()
        assert f.opcode == OP_PONG and f.fin and f.payload == payload


def test_unsolicited_pong_ignored(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_PONG, b"hi")
        ws.send_frame(OP_TEXT, b"still here")
        assert ws.recv_frame() == (True, 0, OP_TEXT, b"still here")


# ---------------------------------------------------------------------------
# Close handshake


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999])
def test_close_echoes_code(hub, code):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(code, "bye")
        got, _ = ws.expect_close()
        assert got == code
        assert ws.expect_eof(), "server must close TCP after the close handshake"


def test_close_without_status(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_close()
        got, reason = ws.expect_close()
        # 1005 must never go on the wire: an empty close (or 1000) answers an empty close.
        assert got in (None, 1000), got
        assert ws.expect_eof()


def test_no_data_after_close(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(1000)
        ws.send_frame(OP_TEXT, b"after close")  # must be ignored
        got, _ = ws.expect_close()
        assert got == 1000
        assert ws.expect_eof()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_close_invalid_code_1002(hub, code):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(code)
        assert_fails(ws, 1002)


def test_close_one_byte_payload_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(raw_payload=b"\x03")
        assert_fails(ws, 1002)


def test_close_reason_invalid_utf8_1007(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(raw_payload=struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")
        assert_fails(ws, 1007)


def test_close_reason_valid_utf8_accepted(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_close(1000, "κόσμε " * 10)
        got, _ = ws.expect_close()
        assert got == 1000


# ---------------------------------------------------------------------------
# UTF-8 validation of text messages

BAD_UTF8 = [
    b"\xff",
    b"\xc0\xaf",                 # overlong '/'
    b"\xed\xa0\x80",             # UTF-16 surrogate
    b"\xf4\x90\x80\x80",         # > U+10FFFF
    b"hello \xce",               # truncated at the end of the message
    b"\x80abc",                  # lone continuation byte
]


@pytest.mark.parametrize("bad", BAD_UTF8)
def test_invalid_utf8_text_1007(hub, bad):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, bad)
        assert_fails(ws, 1007)


def test_invalid_utf8_binary_is_fine(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_BINARY, b"\xff\xfe\xed\xa0\x80")
        assert ws.recv_message() == (OP_BINARY, b"\xff\xfe\xed\xa0\x80")


def test_invalid_utf8_split_across_fragments_1007(hub):
    # Each fragment alone is a valid prefix; together they are not valid UTF-8.
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"abc\xf0\x90", fin=False)
        ws.send_frame(OP_CONT, b"\x28xyz", fin=True)
        assert_fails(ws, 1007)


def test_invalid_utf8_fails_fast_between_fragments(hub):
    # The message never completes: the server must not wait for the final fragment.
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, "κόσμε".encode() + b"\xed\xa0\x80", fin=False)
        assert_fails(ws, 1007, timeout=3)


def test_invalid_utf8_fails_fast_within_a_frame(hub):
    # A frame announcing 1000 bytes, of which only a bad first part is sent.
    from rawws import encode_frame
    payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80" + b"a" * 985
    frame = encode_frame(OP_TEXT, payload)
    with RawWS.connect(hub.port) as ws:
        ws.send_raw(frame[:2 + 2 + 4 + 20])  # header(2+2) + mask(4) + 20 payload bytes
        assert_fails(ws, 1007, timeout=3)


def test_truncated_utf8_at_message_end_after_fragments_1007(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"abc", fin=False)
        ws.send_frame(OP_CONT, b"\xe2\x82", fin=True)  # first two bytes of the euro sign
        assert_fails(ws, 1007)


# ---------------------------------------------------------------------------
# Framing errors -> 1002


def test_unmasked_client_frame_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"not masked", mask=False)
        assert_fails(ws, 1002)


def test_unmasked_control_frame_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_PING, b"x", mask=False)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 3, 4, 5, 6, 7])
def test_rsv_bits_without_extension_1002(hub, rsv):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"rsv", rsv=rsv)
        assert_fails(ws, 1002)


def test_rsv_on_control_frame_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_PING, b"rsv", rsv=4)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes_1002(hub, opcode):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(opcode, b"reserved")
        assert_fails(ws, 1002)


def test_reserved_opcode_inside_fragmented_message_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"part", fin=False)
        ws.send_frame(0xB, b"")
        assert_fails(ws, 1002)


def test_continuation_without_start_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_CONT, b"orphan", fin=True)
        assert_fails(ws, 1002)


def test_continuation_after_complete_message_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"done")
        assert ws.recv_message() == (OP_TEXT, b"done")
        ws.send_frame(OP_CONT, b"late", fin=False)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_data_frame_inside_fragmented_message_1002(hub, second):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(OP_TEXT, b"first", fin=False)
        ws.send_frame(second, b"second", fin=True)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_control_frame_too_long_1002(hub, opcode):
    payload = struct.pack("!H", 1000) + b"r" * 124 if opcode == OP_CLOSE else b"p" * 126
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(opcode, payload)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE])
def test_fragmented_control_frame_1002(hub, opcode):
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(opcode, struct.pack("!H", 1000) if opcode == OP_CLOSE else b"frag", fin=False)
        assert_fails(ws, 1002)


def test_non_minimal_length_encoding_1002(hub):
    # 5 bytes of payload announced with the 16-bit length form (RFC 6455 5.2: minimal).
    key = os.urandom(4)
    from rawws import mask_bytes
    frame = bytes([0x81, 0x80 | 126]) + struct.pack("!H", 5) + key + mask_bytes(b"hello", key)
    with RawWS.connect(hub.port) as ws:
        ws.send_raw(frame)
        assert_fails(ws, 1002)


def test_64bit_length_msb_set_1002(hub):
    with RawWS.connect(hub.port) as ws:
        ws.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + os.urandom(4))
        got, _ = ws.expect_close()
        assert got in (1002, 1009), got
        assert ws.expect_eof()


def test_protocol_error_counted(hub):
    before = hub.metrics()["chorus_protocol_errors"]
    with RawWS.connect(hub.port) as ws:
        ws.send_frame(3, b"")
        assert_fails(ws, 1002)
    assert hub.metrics()["chorus_protocol_errors"] >= before + 1


# ---------------------------------------------------------------------------
# Size limits -> 1009


@pytest.fixture
def small_hub(make_hub):
    return make_hub("--max-frame", "1KiB", "--max-message", "4KiB")


def test_frame_at_max_frame_accepted(small_hub):
    with RawWS.connect(small_hub.port) as ws:
        ws.send_frame(OP_BINARY, b"f" * 1024)
        assert ws.recv_message() == (OP_BINARY, b"f" * 1024)


def test_frame_over_max_frame_1009(small_hub):
    with RawWS.connect(small_hub.port) as ws:
        ws.send_frame(OP_BINARY, b"f" * 1025)
        assert_fails(ws, 1009)


def test_frame_over_max_frame_refused_from_header(small_hub):
    # Only the header of a 1 MiB frame is sent: the server must refuse it at once.
    with RawWS.connect(small_hub.port) as ws:
        ws.send_raw(bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 20) + os.urandom(4))
        assert_fails(ws, 1009, timeout=3)


def test_message_at_max_message_accepted(small_hub):
    with RawWS.connect(small_hub.port) as ws:
        ws.send_frame(OP_TEXT, b"m" * 1024, fin=False)
        for _ in range(2):
            ws.send_frame(OP_CONT, b"m" * 1024, fin=False)
        ws.send_frame(OP_CONT, b"m" * 1024, fin=True)
        assert ws.recv_message() == (OP_TEXT, b"m" * 4096)


def test_message_over_max_message_1009(small_hub):
    with RawWS.connect(small_hub.port) as ws:
        ws.send_frame(OP_TEXT, b"m" * 1024, fin=False)
        for _ in range(3):
            ws.send_frame(OP_CONT, b"m" * 1024, fin=False)
        ws.send_frame(OP_CONT, b"m", fin=True)
        assert_fails(ws, 1009)


def test_websockets_client_sees_1009(small_hub):
    async def go():
        async with websockets.connect(small_hub.ws_url("/echo"), compression=None) as ws:
            await ws.send("x" * 2000)
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await asyncio_wait(ws.recv())
            assert ei.value.rcvd is not None and ei.value.rcvd.code == 1009
    run(go())
