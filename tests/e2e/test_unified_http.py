"""Profile `unified` over HTTP (CLIENT-PROFILES.md): GET /ws/stats, /api/chat GET/DELETE/POST
and the integration's POST /api/conversations/:id/messages with an API key — the exchanges
exactly as the profile writes them, with a /ws client watching where it matters.
"""
import asyncio
import json
import time

import pytest

from chorus_client import Client
from conftest import run
from test_rest import ISO, MISSING_CRED, UUID, apikey, call, create_conv, mint, post_message, q  # noqa: F401

STATS_EMPTY = {"success": True, "data": {
    "websocket": {"connectedClients": 0, "activeRooms": 0, "clientsBySource": {}},
    "conversations": {"totalConversations": 0, "totalMessages": 0}}}
NOT_FOUND = {"success": False, "error": "Conversation not found"}


@pytest.fixture
def hub(make_hub):
    return make_hub("--insecure-dev")


def sse_data_events(raw):
    """The `data:` payloads of a text/event-stream body, in order (comments, retry skipped)."""
    text = raw.decode()
    assert "\r" not in text
    out = []
    for block in text.split("\n\n"):
        data = [ln[len("data: "):] for ln in block.split("\n") if ln.startswith("data: ")]
        if data:
            out.append(json.loads("\n".join(data)))
    assert text.endswith("\n\n"), "the stream ends after a whole event"
    return out


# ---- /ws/stats -----------------------------------------------------------------------------

def test_stats_needs_a_credential_and_has_the_exact_shape(hub):
    st, _, b = call(hub, "GET", "/ws/stats", token=None)
    assert (st, b) == (401, MISSING_CRED)
    st, h, b = call(hub, "GET", "/ws/stats")
    assert st == 200 and h["content-type"] == "application/json"
    assert b == STATS_EMPTY
    # an API key or a read-only token will do: any valid credential
    st, _, b = call(hub, "GET", "/ws/stats", token=mint(hub, "viewer", scopes="read"))
    assert (st, b) == (200, STATS_EMPTY)


def stats(hub):
    st, _, b = call(hub, "GET", "/ws/stats")
    assert st == 200, b
    return b["data"]


def wait_stats(hub, pred, timeout=5):
    deadline = time.monotonic() + timeout
    while True:
        d = stats(hub)
        if pred(d) or time.monotonic() > deadline:
            return d
        time.sleep(0.05)


def test_stats_counts_clients_rooms_sources_and_totals(make_hub):
    hub = make_hub("--insecure-dev", threads=3)  # clients spread over several loops

    async def go():
        d1 = await Client.connect(hub, "alice:mac", source="desktop")
        d2 = await Client.connect(hub, "alice:imac", source="desktop")
        w = await Client.connect(hub, "bob:chrome", source="web")
        await d1.join("room-a")
        await w.join("room-b")
        await d2.join("room-a")
        await d1.send_message("room-a", "one")
        await d1.send_message("room-a", "two")
        await w.send_message("room-b", "three")
        d = stats(hub)
        assert d == {"websocket": {"connectedClients": 3, "activeRooms": 2,
                                   "clientsBySource": {"desktop": 2, "web": 1}},
                     "conversations": {"totalConversations": 2, "totalMessages": 3}}, d
        # every WebSocket connection of every profile counts; SSE streams do not
        try:
            import websockets
            dev = await websockets.connect(hub.ws_url("/ws/devices?token=carol:pad"), open_timeout=5)
        except Exception:
            dev = None
        if dev is not None:
            d = wait_stats(hub, lambda d: d["websocket"]["connectedClients"] == 4)
            assert d["websocket"]["connectedClients"] == 4
            await dev.close()
        await w.close()
        await d1.leave("room-a")
        # Sockets are counted by their loops at once; rooms by the hub thread when
        # the leave/close reaches it: wait for both before asserting the whole shape.
        d = wait_stats(hub, lambda d: d["websocket"]["connectedClients"] == 2 and d["websocket"]["activeRooms"] == 1)
        assert d["websocket"] == {"connectedClients": 2, "activeRooms": 1, "clientsBySource": {"desktop": 2}}, d
        await d1.close()
        await d2.close()
        d = wait_stats(hub, lambda d: d["websocket"]["connectedClients"] == 0 and d["websocket"]["activeRooms"] == 0)
        assert d == {"websocket": {"connectedClients": 0, "activeRooms": 0, "clientsBySource": {}},
                     "conversations": {"totalConversations": 2, "totalMessages": 3}}, d
    run(go())


# ---- POST /api/chat -------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{}", b'{"message":""}', b'{"message":null}', b'{"message":5}', b"not json",
                                  b'{"conversationId":"c1"}'])
def test_chat_post_without_message_is_400(hub, body):
    st, _, b = call(hub, "POST", "/api/chat", raw=body)
    assert (st, b) == (400, {"success": False, "error": "Message is required"})


def test_chat_post_streams_start_then_done_and_stores_the_message(hub):
    st, h, raw = call(hub, "POST", "/api/chat", {"message": "Hello", "conversationId": "test-123",
                                                 "context": {"hasScreen": True, "appName": "Xcode"}})
    assert st == 200 and h["content-type"].startswith("text/event-stream"), (st, h)
    evs = sse_data_events(raw)
    assert len(evs) == 2, evs
    start, done = evs
    assert set(start) == {"type", "conversationId", "messageId"}
    assert start["type"] == "start" and start["conversationId"] == "test-123" and UUID.match(start["messageId"])
    assert done == {"type": "done", "conversationId": "test-123", "messageId": None, "message": None}
    st, _, b = call(hub, "GET", "/api/chat/test-123")
    assert st == 200
    [m] = b["data"]["messages"]
    assert (m["id"], m["role"], m["content"], m["source"], m["conversationId"]) == \
        (start["messageId"], "user", "Hello", "web", "test-123")
    assert m["context"] == {"hasScreen": True, "appName": "Xcode"} and ISO.match(m["timestamp"])


def test_chat_post_makes_a_conversation_id_and_broadcasts(hub):
    async def go():
        st, _, raw = call(hub, "POST", "/api/chat", {"message": "first"})
        assert st == 200
        start = sse_data_events(raw)[0]
        conv = start["conversationId"]
        assert UUID.match(conv)
        # a /ws client in that conversation gets the next one live, source web
        c = await Client.connect(hub, "alice:mac", source="desktop")
        sync = await c.join(conv)
        assert [m["content"] for m in sync["data"]] == ["first"]
        st, _, raw = call(hub, "POST", "/api/chat", {"message": "second", "conversationId": conv})
        start2 = sse_data_events(raw)[0]
        f = await c.expect("message")
        assert f["conversationId"] == conv
        assert (f["message"]["id"], f["message"]["content"], f["message"]["source"], f["message"]["role"]) == \
            (start2["messageId"], "second", "web", "user")
        await c.close()
    run(go())


def test_chat_post_refused_in_someone_elses_conversation(hub):
    create_conv(hub, "alices")
    st, _, b = call(hub, "POST", "/api/chat", {"message": "hi", "conversationId": "alices"}, token="bob:lap")
    assert (st, b) == (403, {"success": False, "error": "not a member of this conversation"})
    st, _, b = call(hub, "POST", "/api/chat", {"message": "hi"}, token=None)
    assert st == 401


# ---- GET / DELETE /api/chat/:id -------------------------------------------------------------

def test_chat_get_shape(hub):
    post_message(hub, "test-123", "from desktop", source="desktop")
    post_message(hub, "test-123", "from phone", source="iphone")
    post_message(hub, "test-123", "again", source="desktop")
    st, _, b = call(hub, "GET", "/api/chat/test-123")
    assert st == 200 and b["success"] is True
    d = b["data"]
    assert {"id", "messages", "createdAt", "updatedAt", "participants"} <= set(d)
    assert d["id"] == "test-123" and ISO.match(d["createdAt"]) and ISO.match(d["updatedAt"])
    assert [m["content"] for m in d["messages"]] == ["from desktop", "from phone", "again"]
    assert d["participants"] == ["desktop", "iphone"]


def test_chat_get_unknown_404_and_other_user_403(hub):
    st, _, b = call(hub, "GET", "/api/chat/nope")
    assert (st, b) == (404, NOT_FOUND)
    post_message(hub, "mine", "x")
    st, _, b = call(hub, "GET", "/api/chat/mine", token="bob:lap")
    assert (st, b) == (403, {"success": False, "error": "not a member of this conversation"})


def test_chat_delete(hub):
    post_message(hub, "test-123", "bye")
    st, _, b = call(hub, "DELETE", "/api/chat/test-123", token="bob:lap")
    assert (st, b) == (403, {"success": False, "error": "not a member of this conversation"})
    st, _, b = call(hub, "DELETE", "/api/chat/test-123")
    assert (st, b) == (200, {"success": True, "message": "Conversation cleared"})
    st, _, b = call(hub, "GET", "/api/chat/test-123")
    assert (st, b) == (404, NOT_FOUND)
    st, _, b = call(hub, "DELETE", "/api/chat/test-123")
    assert (st, b) == (404, NOT_FOUND)
    st, _, b = call(hub, "GET", "/ws/stats")
    assert b["data"]["conversations"] == {"totalConversations": 0, "totalMessages": 0}


# ---- the integration: POST /api/conversations/:id/messages with an API key --------------------

def test_integration_posts_with_an_api_key_and_ws_clients_see_it_live(hub):
    async def go():
        key = apikey(hub, "alice")
        desk = await Client.connect(hub, "alice:mac", source="desktop")
        await desk.join("test-123")
        for role, text in (("user", "What's the weather?"), ("assistant", "Sunny.")):
            st, _, b = call(hub, "POST", "/api/conversations/test-123/messages",
                            {"role": role, "content": text, "source": "chatgpt"}, token=key)
            assert st == 201 and b["success"] is True
            stored = b["data"]
            assert (stored["role"], stored["content"], stored["source"], stored["conversationId"]) == \
                (role, text, "chatgpt", "test-123")
            assert UUID.match(stored["id"]) and ISO.match(stored["timestamp"])
            f = await desk.expect("message")
            assert f["conversationId"] == "test-123" and f["message"] == stored
        await desk.close()
        # and it is history for everyone joining later
        late = await Client.connect(hub, "alice:web", source="web")
        sync = await late.join("test-123")
        assert [(m["role"], m["source"]) for m in sync["data"]] == [("user", "chatgpt"), ("assistant", "chatgpt")]
        await late.close()
    run(go())


def test_integration_key_of_another_user_is_refused(hub):
    create_conv(hub, "test-123")
    key = apikey(hub, "mallory")
    st, _, b = call(hub, "POST", "/api/conversations/test-123/messages", {"role": "user", "content": "x"},
                    token=key)
    assert (st, b) == (403, {"success": False, "error": "not a member of this conversation", "code": "forbidden"})
    st, _, b = call(hub, "POST", "/api/conversations/test-123/messages", {"role": "user", "content": "x"},
                    token="chk_AAAAAAAA_" + "C" * 32)
    assert st == 401 and b["code"] == "unauthenticated"
