"""Presence in big rooms (docs/PROTOCOL.md "Presence in big rooms"), black box.

A room with more connections present than --presence-broadcast-limit L announces no single
joins and leaves; one `presence_count` notice tells the room when it crosses L (up: truncated,
back down: not); a join's sync then lists only the oldest min(--presence-sync-limit, L)
connections, with `presenceCount` and `presenceTruncated`. Within L everything is as in a small
room (tests/e2e/test_native.py, test_unified_ws.py keep covering that with the defaults).

The limits are set tiny here (3, 2) so that a handful of clients walk through every case;
each step asserts exactly which frames each client gets, and that the others get none.
"""
import http.client
import json

import pytest
import websockets

from chorus_client import Client, run

ROOM = "big-room"


def request(hub, method, path, token, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=10)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def patch(hub, path, body, token):
    return request(hub, "PATCH", path, token, body)


def pres(f):
    return f.get("type") in ("presence", "presence_count") and f.get("conversationId") == ROOM


def ids(sync):
    return [p["clientId"] for p in sync["presence"]]


async def only(c, want_type, quiet=0.3, **fields):
    """The next presence frame of c is of want_type with these fields, and no other follows."""
    f = await c.expect_one_of(("presence", "presence_count"), pred=pres)
    assert f["type"] == want_type, f
    for k, v in fields.items():
        assert f.get(k) == v, (k, f)
    assert f["timestamp"], f
    if want_type == "presence_count":
        assert set(f) == {"type", "conversationId", "presenceCount", "presenceTruncated", "timestamp"}, f
    await c.quiet(quiet, pres)
    return f


def test_limit_three_with_five_clients(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "3")

    async def go():
        # One user's six devices (another user's joins would need membership once the room exists).
        c = [await Client.connect(hub, f"ann:d{i}", source=f"s{i}") for i in range(6)]

        # Within the limit: a small room, exactly as today (no count fields in the sync).
        s = await c[0].join(ROOM)
        assert ids(s) == [c[0].client_id] and "presenceCount" not in s and "presenceTruncated" not in s, s
        s = await c[1].join(ROOM)
        assert ids(s) == [c[0].client_id, c[1].client_id] and "presenceCount" not in s, s
        await only(c[0], "presence", clientId=c[1].client_id, userId="ann", deviceId="d1", source="s1",
                   connected=True)
        s = await c[2].join(ROOM)
        assert ids(s) == [x.client_id for x in c[:3]] and "presenceTruncated" not in s, s
        for x in c[:2]:
            await only(x, "presence", clientId=c[2].client_id, deviceId="d2", connected=True)
        await c[2].quiet(0.2, pres)  # never told about itself

        # The 4th connection takes the room over the limit: one notice instead of its join.
        s = await c[3].join(ROOM)
        assert ids(s) == [x.client_id for x in c[:3]], s  # the oldest three
        assert s["presenceCount"] == 4 and s["presenceTruncated"] is True, s
        for x in c[:3]:
            await only(x, "presence_count", presenceCount=4, presenceTruncated=True)
        await c[3].quiet(0.2, pres)

        # Over the limit: joins are silent, the sync still counts exactly.
        s = await c[4].join(ROOM)
        assert ids(s) == [x.client_id for x in c[:3]], s
        assert s["presenceCount"] == 5 and s["presenceTruncated"] is True, s
        for x in c[:5]:
            await x.quiet(0.3, pres)

        # The room itself works as ever.
        ack = await c[4].send_message(ROOM, "hello big room")
        for x in c[:5]:
            m = await x.expect("message")
            assert m["seq"] == ack["seq"], m

        # A leave and a drop over the limit: silent (5 -> 4), then the notice (4 -> 3).
        await c[0].leave(ROOM)
        for x in c[1:5]:
            await x.quiet(0.3, pres)
        await c[4].drop()
        for x in c[1:4]:
            await only(x, "presence_count", presenceCount=3, presenceTruncated=False)
        await c[0].quiet(0.2, pres)  # c0 left the room: it hears nothing of it

        # Back within the limit: single leaves and joins are announced again.
        await c[1].leave(ROOM)
        for x in c[2:4]:
            await only(x, "presence", clientId=c[1].client_id, deviceId="d1", connected=False)
        s = await c[5].join(ROOM)
        assert ids(s) == [c[2].client_id, c[3].client_id, c[5].client_id], s
        assert "presenceCount" not in s and "presenceTruncated" not in s, s
        for x in c[2:4]:
            await only(x, "presence", clientId=c[5].client_id, deviceId="d5", connected=True)
        for x in (c[0], c[1], c[5]):
            await x.quiet(0.2, pres)
    run(go())


def test_sync_limit_caps_the_list_below_the_broadcast_limit(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "2", "--presence-sync-limit", "1")

    async def go():
        c = [await Client.connect(hub, f"u1:d{i}", source="t") for i in range(4)]
        s = await c[0].join(ROOM)
        assert ids(s) == [c[0].client_id] and "presenceCount" not in s, s
        s = await c[1].join(ROOM)  # at the limit: the whole list
        assert ids(s) == [c[0].client_id, c[1].client_id] and "presenceCount" not in s, s
        await only(c[0], "presence", clientId=c[1].client_id, connected=True)
        s = await c[2].join(ROOM)  # over it: the oldest one only
        assert ids(s) == [c[0].client_id] and s["presenceCount"] == 3 and s["presenceTruncated"] is True, s
        for x in c[:2]:
            await only(x, "presence_count", presenceCount=3, presenceTruncated=True)
        s = await c[3].join(ROOM)
        assert ids(s) == [c[0].client_id] and s["presenceCount"] == 4, s
        for x in c[:3]:
            await x.quiet(0.3, pres)
    run(go())


def test_sync_limit_zero_gives_the_count_only(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "1", "--presence-sync-limit", "0")

    async def go():
        a = await Client.connect(hub, "u1:a")
        b = await Client.connect(hub, "u1:b")
        s = await a.join(ROOM)
        assert ids(s) == [a.client_id] and "presenceCount" not in s, s
        s = await b.join(ROOM)
        assert s["presence"] == [] and s["presenceCount"] == 2 and s["presenceTruncated"] is True, s
        await only(a, "presence_count", presenceCount=2, presenceTruncated=True)
        await b.close()
        await only(a, "presence_count", presenceCount=1, presenceTruncated=False)
    run(go())


def test_no_limit_announces_every_join(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "0", "--presence-sync-limit", "1")

    async def go():
        c = [await Client.connect(hub, f"u1:d{i}") for i in range(5)]
        for i, x in enumerate(c):
            s = await x.join(ROOM)
            assert ids(s) == [y.client_id for y in c[:i + 1]] and "presenceCount" not in s, s
            for y in c[:i]:
                await only(y, "presence", quiet=0.05, clientId=x.client_id, connected=True)
        await c[4].leave(ROOM)
        for y in c[:4]:
            await only(y, "presence", quiet=0.05, clientId=c[4].client_id, connected=False)
    run(go())


def test_relay_clients_get_no_presence_count(make_hub):
    """The notices are presence: profile relay keeps them out of its chat pushes, like joins."""
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "2")

    async def go():
        r = await websockets.connect(hub.ws_url("/ws/relay"), compression=None, open_timeout=10)
        try:
            assert json.loads(await r.recv())["type"] == "auth_required"
            await r.send(json.dumps({"id": "1", "type": "auth", "token": "u1:relay"}))
            assert json.loads(await r.recv())["type"] == "auth_success"
            a = await Client.connect(hub, "u1:a")
            await a.send_message(ROOM, "exists now")
            await a.join(ROOM)
            await r.send(json.dumps({"id": "2", "type": "subscribe", "resource": "chat", "resourceId": ROOM}))
            f = json.loads(await r.recv())
            assert f["type"] == "subscribed", f
            await only(a, "presence", connected=True)  # the relay subscriber is in the room: 2
            b = await Client.connect(hub, "u1:b")
            await b.join(ROOM)  # 3 > 2: a and the relay client get the notice; relay keeps it out
            await only(a, "presence_count", presenceCount=3, presenceTruncated=True)
            await b.send_message(ROOM, "after")
            f = json.loads(await r.recv())  # the next push is that message: no presence came before it
            assert f["data"]["type"] == "message" and f["data"]["message"]["content"] == "after", f
        finally:
            await r.close()
    run(go())


def test_presence_request_lists_and_counts(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "2")

    async def go():
        c = [await Client.connect(hub, u) for u in ("ann:a", "ann:b", "bob:a", "cat:a")]
        await c[0].send_message(ROOM, "created")  # ann's conversation, with bob and cat as members
        st, body = patch(hub, f"/api/conversations/{ROOM}", {"members": ["bob", "cat"]}, token="ann:a")
        assert st == 200, body
        for x in c:
            await x.join(ROOM)
        await c[0].send({"type": "presence", "conversationId": ROOM, "id": "q1"})
        f = await c[0].expect("presence_list")
        assert f["id"] == "q1" and f["conversationId"] == ROOM, f
        assert f["presenceCount"] == 4 and f["userCount"] == 3, f
        assert ids(f) == [x.client_id for x in c] and "presenceTruncated" not in f, f
        await c[0].send({"type": "presence", "conversationId": ROOM, "limit": 1, "id": "q2"})
        f = await c[0].expect("presence_list")
        assert ids(f) == [c[0].client_id] and f["presenceTruncated"] is True and f["presenceCount"] == 4, f
        await c[0].send({"type": "presence", "conversationId": ROOM, "limit": 0, "id": "q3"})
        f = await c[0].expect("presence_list")
        assert f["presence"] == [] and f["presenceCount"] == 4 and "presenceTruncated" not in f, f
        other = await Client.connect(hub, "zed:a")
        await other.send({"type": "presence", "conversationId": "nobody-here", "id": "q4"})
        e = await other.expect("error")
        assert e["id"] == "q4" and e["code"] == "not_found", e
        await c[0].send({"type": "presence", "conversationId": ROOM, "limit": -1, "id": "q5"})
        e = await c[0].expect("error")
        assert e["id"] == "q5" and e["code"] == "invalid", e
    run(go())


def test_presence_over_rest(make_hub):
    hub = make_hub("--insecure-dev", "--presence-broadcast-limit", "2")

    async def go():
        c = [await Client.connect(hub, u) for u in ("ann:a", "ann:b", "bob:a")]
        await c[0].send_message(ROOM, "created")
        st, body = patch(hub, f"/api/conversations/{ROOM}", {"members": ["bob"]}, token="ann:a")
        assert st == 200, body
        for x in c:
            await x.join(ROOM)
        st, body = request(hub, "GET", f"/api/conversations/{ROOM}/presence", "bob:a")
        assert st == 200, body
        d = json.loads(body)
        assert d["success"] is True, d
        d = d["data"]
        assert d["presenceCount"] == 3 and d["userCount"] == 2 and ids(d) == [x.client_id for x in c], d
        st, body = request(hub, "GET", f"/api/conversations/{ROOM}/presence?limit=1", "ann:b")
        d = json.loads(body)["data"]
        assert st == 200 and ids(d) == [c[0].client_id] and d["presenceTruncated"] is True, d
        st, body = request(hub, "GET", f"/api/conversations/{ROOM}/presence?limit=0", "ann:b")
        d = json.loads(body)["data"]
        assert st == 200 and d["presence"] == [] and d["presenceCount"] == 3, d
        st, body = request(hub, "GET", f"/api/conversations/{ROOM}/presence?limit=x", "ann:b")
        assert st == 400 and json.loads(body)["success"] is False, body
        st, body = request(hub, "GET", f"/api/conversations/{ROOM}/presence", "zed:a")
        assert st == 403 and json.loads(body)["success"] is False, body
        st, body = request(hub, "GET", "/api/conversations/nobody-here/presence", "zed:a")
        assert st == 404 and json.loads(body)["success"] is False, body
    run(go())
