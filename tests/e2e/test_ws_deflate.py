"""permessage-deflate (RFC 7692), black box, on /echo.

Negotiation is checked on the 101 response to raw handshakes; compressed
traffic both through python websockets' default extension and through raw
frames compressed here with zlib, so that the server's own frames (RSV1,
context takeover, window size) can be inspected.
"""
import os
import random
import zlib

import pytest
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate

from conftest import run
from rawws import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawWS, http_exchange, ws_handshake_request

TAIL = b"\x00\x00\xff\xff"


def compress(data, wbits=15, co=None):
    """One message's payload as a permessage-deflate sender produces it."""
    co = co or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = co.compress(data) + co.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(payload, do=None):
    do = do or zlib.decompressobj(-15)
    return do.decompress(payload + TAIL)


def negotiate(hub, offer):
    raw, _ = ws_handshake_request(hub.port, "/echo", extra={"Sec-WebSocket-Extensions": offer})
    return http_exchange(hub.port, raw)[0]


def ext_params(value):
    """'permessage-deflate; a; b=1' -> ('permessage-deflate', {'a': None, 'b': '1'})"""
    parts = [p.strip() for p in value.split(";")]
    params = {}
    for p in parts[1:]:
        k, eq, v = p.partition("=")
        params[k.strip()] = v.strip().strip('"') if eq else None
    return parts[0], params


def assert_fails(ws, code):
    got, _ = ws.expect_close()
    assert got == code, f"expected close {code}, server sent {got}"
    assert ws.expect_eof()


# ---------------------------------------------------------------------------
# Negotiation


def test_websockets_default_negotiates_deflate(hub):
    async def go():
        async with websockets.connect(hub.ws_url("/echo")) as ws:  # compression="deflate"
            assert any(isinstance(e, PerMessageDeflate) for e in ws.extensions), ws.extensions
            hdr = ws.response_headers.get("Sec-WebSocket-Extensions")
            assert hdr and hdr.startswith("permessage-deflate"), hdr
    run(go())


def test_plain_offer(hub):
    resp = negotiate(hub, "permessage-deflate")
    assert resp.status == 101
    name, params = ext_params(resp.header("sec-websocket-extensions"))
    assert name == "permessage-deflate"
    # No client_max_window_bits may be sent back unless the client offered it (RFC 7692 7.1.2.2).
    assert "client_max_window_bits" not in params


@pytest.mark.parametrize("param", ["client_no_context_takeover", "server_no_context_takeover"])
def test_no_context_takeover_params_accepted(hub, param):
    resp = negotiate(hub, f"permessage-deflate; {param}")
    assert resp.status == 101
    name, params = ext_params(resp.header("sec-websocket-extensions"))
    assert name == "permessage-deflate"
    assert param in params and params[param] is None


@pytest.mark.parametrize("bits", [9, 10, 12, 15])
def test_server_max_window_bits_honoured(hub, bits):
    resp = negotiate(hub, f"permessage-deflate; server_max_window_bits={bits}")
    assert resp.status == 101
    _, params = ext_params(resp.header("sec-websocket-extensions"))
    assert "server_max_window_bits" in params and int(params["server_max_window_bits"]) <= bits


@pytest.mark.parametrize("bits", [8, 9, 12, 15])
def test_client_max_window_bits_with_value(hub, bits):
    resp = negotiate(hub, f"permessage-deflate; client_max_window_bits={bits}")
    assert resp.status == 101
    _, params = ext_params(resp.header("sec-websocket-extensions"))
    if "client_max_window_bits" in params:
        assert 8 <= int(params["client_max_window_bits"]) <= bits


def test_client_max_window_bits_without_value(hub):
    resp = negotiate(hub, "permessage-deflate; client_max_window_bits")
    assert resp.status == 101
    _, params = ext_params(resp.header("sec-websocket-extensions"))
    if "client_max_window_bits" in params:
        assert params["client_max_window_bits"] is not None
        assert 8 <= int(params["client_max_window_bits"]) <= 15


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_no_context_takeover=1",
    "x-webkit-deflate-frame",
])
def test_invalid_offers_declined(hub, offer):
    resp = negotiate(hub, offer)
    # Declining an offer is not a handshake failure: 101 without the extension.
    assert resp.status == 101, resp
    assert resp.header("sec-websocket-extensions") is None


def test_fallback_to_second_offer(hub):
    resp = negotiate(hub, "permessage-deflate; server_max_window_bits=16, permessage-deflate; "
                          "client_no_context_takeover")
    assert resp.status == 101
    name, params = ext_params(resp.header("sec-websocket-extensions"))
    assert name == "permessage-deflate" and "client_no_context_takeover" in params
    assert "server_max_window_bits" not in params or int(params["server_max_window_bits"]) <= 15


def test_no_deflate_flag(make_hub):
    hub = make_hub("--no-deflate")
    resp = negotiate(hub, "permessage-deflate; client_max_window_bits")
    assert resp.status == 101
    assert resp.header("sec-websocket-extensions") is None

    async def go():
        async with websockets.connect(hub.ws_url("/echo")) as ws:
            assert ws.extensions == []
            await ws.send("y" * 10000)
            assert await ws.recv() == "y" * 10000
    run(go())


# ---------------------------------------------------------------------------
# Compressed round trips


def test_websockets_compressed_echo(hub):
    rnd = random.Random(7)
    msgs = ["hello", "", "a" * 63, "a" * 64, "z" * 100000,
            "".join(rnd.choice("abc ") for _ in range(300000)),
            b"", os.urandom(100), os.urandom(200000), b"\x00" * 1000000,
            "κόσμε " * 5000]

    async def go():
        async with websockets.connect(hub.ws_url("/echo"), max_size=8 << 20) as ws:
            assert ws.extensions, "permessage-deflate not negotiated"
            for _ in range(2):  # twice: the shared context must stay in sync
                for m in msgs:
                    await ws.send(m)
                    got = await ws.recv()
                    assert type(got) is type(m) and got == m
    run(go())


def test_raw_compressed_echo_server_frames_compressed(hub):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        do = zlib.decompressobj(-15)
        for i in range(5):
            msg = (f"message {i} " * 500).encode()
            ws.send_frame(OP_TEXT, compress(msg, co=co), rsv=4)
            f = ws.recv_frame()
            assert f.opcode == OP_TEXT and f.fin
            assert f.rsv == 4, "a 5 KB compressible message should come back compressed"
            assert len(f.payload) < len(msg) // 4
            assert inflate(f.payload, do) == msg


def test_raw_uncompressed_message_on_deflate_connection(hub):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_BINARY, b"plain bytes, RSV1 clear")
        f = ws.recv_frame()
        payload = inflate(f.payload) if f.rsv & 4 else f.payload
        assert f.opcode == OP_BINARY and payload == b"plain bytes, RSV1 clear"


def test_raw_compressed_fragmented_message(hub):
    msg = b"fragmented and compressed " * 400
    z = compress(msg)
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_BINARY, z[:10], rsv=4, fin=False)  # RSV1 only on the first frame
        ws.send_frame(OP_PING, b"in between")
        ws.send_frame(OP_CONT, z[10:100], fin=False)
        ws.send_frame(OP_CONT, z[100:], fin=True)
        f = ws.recv_frame()
        assert f.opcode == 0xA and f.payload == b"in between"
        f = ws.recv_frame()
        assert f.opcode == OP_BINARY
        assert (inflate(f.payload) if f.rsv & 4 else f.payload) == msg


def test_server_no_context_takeover_each_message_standalone(hub):
    ext = "permessage-deflate; server_no_context_takeover"
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": ext}) as ws:
        msg = os.urandom(200).hex().encode() * 5  # compressible, 2000 bytes
        for _ in range(3):
            ws.send_frame(OP_TEXT, msg)
            f = ws.recv_frame()
            assert f.rsv == 4
            # A fresh inflater must decode every message: no back-references into the past.
            assert inflate(f.payload, zlib.decompressobj(-15)) == msg


def test_server_frames_follow_announced_context_mode(hub):
    # Offered without parameters, the server may still announce
    # server_no_context_takeover (RFC 7692 7.1.1.1); its frames must then decode
    # standalone, and otherwise with one inflater kept across messages.
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        _, params = ext_params(ws.response.header("sec-websocket-extensions"))
        standalone = "server_no_context_takeover" in params
        msg = os.urandom(1000).hex().encode()
        do = zlib.decompressobj(-15)
        for _ in range(3):
            ws.send_frame(OP_TEXT, msg)
            f = ws.recv_frame()
            assert f.rsv == 4
            assert inflate(f.payload, zlib.decompressobj(-15) if standalone else do) == msg


def test_client_no_context_takeover_and_small_window(hub):
    ext = "permessage-deflate; client_no_context_takeover; client_max_window_bits=9"
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": ext}) as ws:
        _, params = ext_params(ws.response.header("sec-websocket-extensions"))
        assert "client_no_context_takeover" in params
        bits = int(params.get("client_max_window_bits") or 15)
        do = zlib.decompressobj(-15)
        for i in range(3):
            msg = (f"{i} small window " * 300).encode()
            ws.send_frame(OP_TEXT, compress(msg, wbits=max(bits, 9)), rsv=4)  # fresh context each time
            f = ws.recv_frame()
            assert (inflate(f.payload, do) if f.rsv & 4 else f.payload) == msg


def test_server_max_window_bits_respected(hub):
    ext = "permessage-deflate; server_max_window_bits=10"
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": ext}) as ws:
        rnd = random.Random(3)
        block = bytes(rnd.getrandbits(8) for _ in range(600))
        msg = (block + os.urandom(1500)) * 6  # repeats at distance 2100 > 1024
        do = zlib.decompressobj(-10)  # would fail on a distance beyond 2**10
        for _ in range(2):
            ws.send_frame(OP_BINARY, msg)
            f = ws.recv_frame()
            assert (do.decompress(f.payload + TAIL) if f.rsv & 4 else f.payload) == msg


def test_empty_compressed_message(hub):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_TEXT, b"\x00", rsv=4)  # an empty stored block (RFC 7692 7.2.3.6)
        f = ws.recv_frame()
        assert f.opcode == OP_TEXT
        assert (inflate(f.payload) if f.rsv & 4 else f.payload) == b""
        ws.send_frame(OP_TEXT, compress(b""), rsv=4)
        f = ws.recv_frame()
        assert (inflate(f.payload) if f.rsv & 4 else f.payload) == b""


# ---------------------------------------------------------------------------
# Failures


def test_decompression_bomb_1009(make_hub):
    hub = make_hub("--max-message", "64KiB")
    bomb = compress(b"\x00" * (4 << 20))
    assert len(bomb) < 64 << 10
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_BINARY, bomb, rsv=4)
        assert_fails(ws, 1009)


def test_inflated_size_at_limit_ok(make_hub):
    hub = make_hub("--max-message", "64KiB")
    msg = b"\x00" * (64 << 10)
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_BINARY, compress(msg), rsv=4)
        f = ws.recv_frame()
        assert (inflate(f.payload) if f.rsv & 4 else f.payload) == msg


def test_websockets_client_compressed_too_big_1009(make_hub):
    hub = make_hub("--max-message", "64KiB")

    async def go():
        async with websockets.connect(hub.ws_url("/echo")) as ws:
            assert ws.extensions
            await ws.send("a" * (1 << 20))  # compresses to ~1 KB, inflates to 1 MiB
            with pytest.raises(websockets.ConnectionClosed) as ei:
                await ws.recv()
            assert ei.value.rcvd is not None and ei.value.rcvd.code == 1009
    run(go())


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x07\x00\x00", bytes(range(7, 200))])
def test_corrupt_deflate_data_1002(hub, garbage):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_BINARY, garbage, rsv=4)
        assert_fails(ws, 1002)


def test_compressed_text_invalid_utf8_1007(hub):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_TEXT, compress(b"valid start \xed\xa0\x80 bad"), rsv=4)
        assert_fails(ws, 1007)


def test_rsv1_on_continuation_1002(hub):
    z = compress(b"abc" * 100)
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_TEXT, z[:5], rsv=4, fin=False)
        ws.send_frame(OP_CONT, z[5:], rsv=4, fin=True)
        assert_fails(ws, 1002)


def test_rsv1_on_control_frame_with_deflate_1002(hub):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_PING, b"", rsv=4)
        assert_fails(ws, 1002)


@pytest.mark.parametrize("rsv", [1, 2])
def test_rsv2_rsv3_with_deflate_1002(hub, rsv):
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        ws.send_frame(OP_TEXT, b"x", rsv=rsv)
        assert_fails(ws, 1002)


def test_rsv1_when_deflate_declined_1002(make_hub):
    hub = make_hub("--no-deflate")
    with RawWS.connect(hub.port, extra={"Sec-WebSocket-Extensions": "permessage-deflate"}) as ws:
        assert ws.response.header("sec-websocket-extensions") is None
        ws.send_frame(OP_TEXT, compress(b"hello"), rsv=4)
        assert_fails(ws, 1002)
