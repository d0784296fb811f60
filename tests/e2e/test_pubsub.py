"""Broadcast through /bench/sub and /bench/pub across many connections and loops."""
import asyncio
import os

import pytest
import websockets

from conftest import run
from rawws import OP_BINARY, OP_TEXT, RawWS, http_request


async def recv_n(ws, n, timeout=30):
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(ws.recv(), timeout))
    return out


def test_many_subscribers_get_everything_in_order(make_hub):
    hub = make_hub(threads=2)
    nsubs = 200
    msgs = []
    for i in range(60):
        if i % 3 == 0:
            msgs.append(f"text {i} ✓ " + "x" * (i * 37))
        elif i % 3 == 1:
            msgs.append(os.urandom(i * 101))
        else:
            msgs.append("")  # empty messages too

    async def go():
        subs = []
        for i in range(nsubs):
            subs.append(await websockets.connect(hub.ws_url("/bench/sub?channel=room1"),
                                                 compression=None, max_queue=None))
        other = await websockets.connect(hub.ws_url("/bench/sub?channel=room2"), compression=None)
        st = await asyncio.to_thread(hub.get, "/api/status")
        import json
        conns = json.loads(st[2])["connections"]
        assert conns["websocket"] >= nsubs + 1, conns
        async with websockets.connect(hub.ws_url("/bench/pub?channel=room1"), compression=None) as pub:
            for m in msgs:
                await pub.send(m)
            results = await asyncio.gather(*(recv_n(s, len(msgs)) for s in subs))
        for got in results:
            assert len(got) == len(msgs)
            for g, m in zip(got, msgs):
                assert type(g) is type(m) and g == m
        # Nothing leaked into another channel.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(other.recv(), 0.3)
        await asyncio.gather(*(s.close() for s in subs))
        await other.close()
    run(go(), timeout=120)
    # All 200 went through both loops (connections are spread over them).
    m = hub.metrics()
    assert m['chorus_deliveries{loop="0"}'] > 0 and m['chorus_deliveries{loop="1"}'] > 0, m


def test_post_publish_returns_202_and_delivers(hub):
    async def go():
        subs = [await websockets.connect(hub.ws_url("/bench/sub?channel=posted"), compression=None)
                for _ in range(20)]
        bodies = [b"first", b'{"json": true}', "ünïcødé".encode(), b"x" * 100000, b""]
        for b in bodies:
            resp = await asyncio.to_thread(http_request, hub.port, "POST", "/bench/pub?channel=posted",
                                           None, b, 10)
            assert resp.status == 202, resp
            assert resp.json() == {"success": True}
        for s in subs:
            got = await recv_n(s, len(bodies))
            assert [g.encode() if isinstance(g, str) else g for g in got] == bodies
        await asyncio.gather(*(s.close() for s in subs))
    run(go())


def test_post_binary_body_not_sent_as_invalid_text(hub):
    # A POST body that is not UTF-8 cannot go out as a text frame (RFC 6455 5.6).
    body = b"\xff\xfe\x00binary\x80"
    with RawWS.connect(hub.port, "/bench/sub?channel=bin") as sub:
        resp = http_request(hub.port, "POST", "/bench/pub?channel=bin", body=body)
        assert resp.status == 202
        op, data = sub.recv_message()
        assert data == body
        if op == OP_TEXT:
            data.decode("utf-8")  # raises: the server sent invalid UTF-8 as text
        assert op in (OP_TEXT, OP_BINARY)


def test_ws_publisher_text_and_binary_verbatim(hub):
    with RawWS.connect(hub.port, "/bench/sub?channel=v") as sub, \
            RawWS.connect(hub.port, "/bench/pub?channel=v") as pub:
        pub.send_frame(OP_TEXT, "héllo".encode())
        pub.send_frame(OP_BINARY, b"\x00\x01\x02")
        pub.send_frame(OP_TEXT, b"frag-", fin=False)
        pub.send_frame(0, b"mented", fin=True)
        assert sub.recv_message() == (OP_TEXT, "héllo".encode())
        assert sub.recv_message() == (OP_BINARY, b"\x00\x01\x02")
        assert sub.recv_message() == (OP_TEXT, b"frag-mented")


def test_unsubscribe_on_close(hub):
    async def go():
        keep = await websockets.connect(hub.ws_url("/bench/sub?channel=u"), compression=None)
        leave = [await websockets.connect(hub.ws_url("/bench/sub?channel=u"), compression=None)
                 for _ in range(10)]
        async with websockets.connect(hub.ws_url("/bench/pub?channel=u"), compression=None) as pub:
            await pub.send("one")
            assert await asyncio.wait_for(keep.recv(), 5) == "one"
            for s in leave:
                assert await asyncio.wait_for(s.recv(), 5) == "one"
                await s.close()
            before = hub.metrics()["chorus_deliveries"]
            await pub.send("two")
            assert await asyncio.wait_for(keep.recv(), 5) == "two"
            after = hub.metrics()["chorus_deliveries"]
            assert after - before == 1, f"{after - before} deliveries for one remaining subscriber"
        await keep.close()
    run(go())


def test_publish_to_channel_without_subscribers(hub):
    resp = http_request(hub.port, "POST", "/bench/pub?channel=nobody", body=b"into the void")
    assert resp.status == 202


@pytest.mark.parametrize("path", ["/bench/sub", "/bench/sub?channel=", "/bench/pub", "/bench/pub?other=1"])
def test_missing_channel_400(hub, path):
    with RawWS.connect(hub.port, path, expect=None) as ws:
        assert ws.response.status == 400, ws.response
    assert ws.response.header("sec-websocket-accept") is None
    if path.startswith("/bench/pub"):
        resp = http_request(hub.port, "POST", path, body=b"x")
        assert resp.status == 400, resp
        assert resp.json()["success"] is False


def test_channel_name_too_long_400(hub):
    resp = http_request(hub.port, "POST", "/bench/pub?channel=" + "c" * 300, body=b"x")
    assert resp.status == 400


def test_plain_get_on_sub_426_with_upgrade_header(hub):
    resp = http_request(hub.port, "GET", "/bench/sub?channel=x")
    assert resp.status == 426, resp
    # RFC 7231 6.5.15: a 426 response MUST carry an Upgrade header.
    assert "websocket" in resp.header("upgrade", "").lower(), resp
