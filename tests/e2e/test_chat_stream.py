"""Agent replies streamed to HTTP and relay clients, against a real hub with `echo` agents.

POST /api/chat (profile `unified`): after `start`, the reply as `chunk` events (messageId = the
reply's stream id, which the stored assistant message carries as `streamId`), then `done` with the
stored assistant message (role assistant, source web) — or `error`; the agent is the conversation's,
else the first configured one; 429 when the key's rate limit is spent. Profile `relay`: a send
triggers the chat's agent, every subscriber gets the user message, the streamed reply and, when
it ends, {"completed":true}; modelProfiles are the configured agents. Usage counters follow, and
the hub's followers of replies (watchers) go with their clients: none is left when a client leaves
mid-reply, nor when the hub stops mid-reply (exit 0, nothing for the sanitizers to report).
"""
import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import websockets

from chorus_client import Client, run
from conftest import CHORUS_BIN, sanitizer_report

AGENTS = ("--agent", "helper=echo;chunk=3;interval=5", "--agent", "expert=echo;chunk=100;interval=5")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def apikey(hub, user, scopes="read write"):
    r = subprocess.run([CHORUS_BIN, "apikey", "add", "--user", user, "--scopes", scopes,
                        "--data-dir", hub.data_dir], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return re.search(r"chk_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}", r.stdout).group(0)


def http(hub, method, path, body=None, token=None):
    """(status, headers with lower-case names, raw body)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(hub.url(path), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def sse_events(raw):
    """The `data:` payloads of an event stream, in order; the stream must end after a whole event."""
    text = raw.decode()
    assert text.endswith("\n\n"), text[-200:]
    out = []
    for block in text.split("\n\n"):
        data = [ln[len("data: "):] for ln in block.split("\n") if ln.startswith("data: ")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def chat(hub, body, token):
    st, h, raw = http(hub, "POST", "/api/chat", body, token)
    assert st == 200 and h["content-type"].startswith("text/event-stream"), (st, raw)
    return sse_events(raw)


def get_chat(hub, conv, token):
    st, _, raw = http(hub, "GET", f"/api/chat/{conv}", token=token)
    assert st == 200, raw
    return json.loads(raw)["data"]


# ---- POST /api/chat --------------------------------------------------------------------------

def test_chat_streams_chunks_then_done_with_the_stored_assistant_message(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    evs = chat(hub, {"message": "Tell me a story", "conversationId": "story-1", "context": {"hasScreen": True}}, key)
    start, chunks, done = evs[0], evs[1:-1], evs[-1]
    assert set(start) == {"type", "conversationId", "messageId"} and start["type"] == "start", start
    assert start["conversationId"] == "story-1" and UUID.match(start["messageId"]), start
    assert len(chunks) == 5 and all(c["type"] == "chunk" for c in chunks), chunks  # chunk=3 on 15 chars
    for c in chunks:
        assert set(c) == {"type", "conversationId", "messageId", "content"}, c
        assert c["conversationId"] == "story-1" and c["messageId"] == chunks[0]["messageId"], c
    assert "".join(c["content"] for c in chunks) == "Tell me a story"
    assert set(done) == {"type", "conversationId", "messageId", "message"} and done["type"] == "done", done
    msg = done["message"]
    assert done["conversationId"] == "story-1" and done["messageId"] == msg["id"], done
    assert msg["role"] == "assistant" and msg["source"] == "web" and msg["content"] == "Tell me a story", msg
    assert msg["agent"] == "helper" and msg["streamId"] == chunks[0]["messageId"], msg
    assert isinstance(msg["seq"], int) and msg["conversationId"] == "story-1", msg
    # Both messages are stored, the user's with its context.
    conv = get_chat(hub, "story-1", key)
    ms = conv["messages"]
    assert [(m["role"], m["source"], m["content"]) for m in ms] == [
        ("user", "web", "Tell me a story"), ("assistant", "web", "Tell me a story")], ms
    assert ms[0]["id"] == start["messageId"] and ms[0]["context"] == {"hasScreen": True}, ms[0]
    assert ms[1]["id"] == done["messageId"] and ms[1]["seq"] == msg["seq"], ms[1]


def test_chat_without_conversation_id_makes_one(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    evs = chat(hub, {"message": "new"}, key)
    conv = evs[0]["conversationId"]
    assert UUID.match(conv) and all(e["conversationId"] == conv for e in evs), evs
    assert [e["type"] for e in evs] == ["start", "chunk", "done"], evs  # 3 characters: one chunk
    assert evs[2]["message"]["content"] == "new" and get_chat(hub, conv, key)["owner"] == "alice"


def test_chat_is_answered_by_the_conversations_agent(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    st, _, raw = http(hub, "POST", "/api/conversations", {"id": "exp", "agent": "expert"}, key)
    assert st == 201, raw
    evs = chat(hub, {"message": "deep question", "conversationId": "exp"}, key)
    assert [e["type"] for e in evs] == ["start", "chunk", "done"], evs  # chunk=100: one piece
    assert evs[-1]["message"]["agent"] == "expert" and evs[-1]["message"]["content"] == "deep question", evs


def test_chat_with_an_unconfigured_conversation_agent_is_an_error_event(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    st, _, raw = http(hub, "POST", "/api/conversations", {"id": "ghost", "agent": "ghost"}, key)
    assert st == 201, raw
    evs = chat(hub, {"message": "hello?", "conversationId": "ghost"}, key)
    assert [e["type"] for e in evs] == ["start", "error"], evs
    assert set(evs[1]) == {"type", "conversationId", "error"} and "ghost" in evs[1]["error"], evs
    assert [m["role"] for m in get_chat(hub, "ghost", key)["messages"]] == ["user"]


def test_chat_without_agents_is_start_then_done_null(make_hub):
    hub = make_hub()
    key = apikey(hub, "alice")
    evs = chat(hub, {"message": "anyone?", "conversationId": "quiet"}, key)
    assert [e["type"] for e in evs] == ["start", "done"], evs
    assert evs[1] == {"type": "done", "conversationId": "quiet", "messageId": None, "message": None}, evs


def test_chat_reply_reaches_a_native_client_in_the_room(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    tok = hub.token(scopes="read write", user="alice", device="desk")

    async def main():
        desk = await Client.connect(hub, token=tok, source="desktop")
        await desk.join("room")
        loop = asyncio.get_running_loop()
        evs = await loop.run_in_executor(None, chat, hub, {"message": "abcdef", "conversationId": "room"}, key)
        user = await desk.expect("message", pred=lambda f: f["message"]["role"] == "user")
        start = await desk.expect("stream", pred=lambda f: f["op"] == "start")
        assert start["inReplyTo"] == user["seq"] and start["streamId"] == evs[1]["messageId"], (start, evs)
        deltas = []
        while True:
            f = await desk.expect_one_of(("stream", "message"))
            if f["type"] == "message":
                break
            assert f["op"] == "chunk", f
            deltas.append(f["delta"])
        assert "".join(deltas) == "abcdef" and f["message"]["id"] == evs[-1]["messageId"], (deltas, f)
        end = await desk.expect("stream")
        assert end["op"] == "end" and end["seq"] == f["seq"], end

    run(main())


def test_chat_rate_limit_is_429_per_api_key(make_hub):
    hub = make_hub(*AGENTS, "--rate-limit", "1", "--rate-burst", "1")
    k1, k2 = apikey(hub, "alice"), apikey(hub, "alice")
    evs = chat(hub, {"message": "one", "conversationId": "rl"}, k1)
    assert evs[-1]["type"] == "done", evs
    st, h, raw = http(hub, "POST", "/api/chat", {"message": "two", "conversationId": "rl"}, k1)
    assert st == 429, (st, raw)
    body = json.loads(raw)
    assert body["success"] is False and "rate limit" in body["error"], body
    assert int(h["retry-after"]) >= 1, h
    # nothing was stored for the refused prompt; the other key still has its request
    evs = chat(hub, {"message": "three", "conversationId": "rl"}, k2)
    assert evs[-1]["type"] == "done", evs
    assert [m["content"] for m in get_chat(hub, "rl", k1)["messages"]] == ["one", "one", "three", "three"]


def test_usage_per_user_and_key_and_metrics(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    bob = hub.token(scopes="read write", user="bob", device="lap")
    chat(hub, {"message": "12345", "conversationId": "a1"}, key)
    chat(hub, {"message": "xyz", "conversationId": "a2"}, key)
    chat(hub, {"message": "bob here", "conversationId": "b1"}, bob)
    st, _, raw = http(hub, "GET", "/api/admin/usage", token=hub.token())
    assert st == 200, raw
    d = json.loads(raw)["data"]
    users = {u["userId"]: u for u in d["users"]}
    assert users["alice"]["requests"] == 2 and users["alice"]["chars"] == 8, users
    assert users["bob"]["requests"] == 1 and users["bob"]["chars"] == 8, users
    keys = {k["keyId"]: k for k in d["apiKeys"]}
    assert list(keys) == [key.split("_")[1]], keys  # bob used a token, not a key
    assert keys[key.split("_")[1]]["requests"] == 2 and keys[key.split("_")[1]]["userId"] == "alice", keys
    agents = {a["agent"]: a for a in d["agents"]}
    assert agents["helper"]["requests"] == 3 and agents["helper"]["chars"] == 16, agents
    assert agents["expert"]["requests"] == 0 and agents["helper"]["kind"] == "echo", agents
    m = hub.metrics()
    assert m['chorus_agent_requests_total{agent="helper"}'] == 3, m
    assert m['chorus_agent_chars_total{agent="helper"}'] == 16, m
    assert m["chorus_agent_rate_limited_total"] == 0, m
    st, _, _ = http(hub, "GET", "/api/admin/usage", token=key)
    assert st == 403
    st, _, _ = http(hub, "GET", "/api/admin/usage")
    assert st == 401


def test_a_client_that_leaves_mid_reply_does_not_stop_it(make_hub):
    hub = make_hub("--agent", "slow=echo;chunk=1;interval=40")
    key = apikey(hub, "alice")
    import socket
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=10)
    body = json.dumps({"message": "0123456789", "conversationId": "gone"}).encode()
    s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    got = b""
    while b"\"chunk\"" not in got:
        got += s.recv(4096)
    s.close()  # gone after the first chunk

    async def wait_reply():
        for _ in range(100):
            ms = get_chat(hub, "gone", key)["messages"]
            if len(ms) == 2:
                return ms
            await asyncio.sleep(0.05)
        raise AssertionError("the reply was never stored")

    ms = run(wait_reply())
    assert ms[1]["role"] == "assistant" and ms[1]["content"] == "0123456789", ms
    st, _, raw = http(hub, "GET", "/api/admin/usage", token=hub.token())
    alice = [u for u in json.loads(raw)["data"]["users"] if u["userId"] == "alice"][0]
    assert alice["chars"] == 10, alice  # still accounted after the client left


# ---- relay -------------------------------------------------------------------------------------

async def relay_login(hub, token):
    r = await Client.connect(hub, token=None, source=None, welcome=False, path="/ws/relay")
    assert await r.recv() == {"id": None, "type": "auth_required"}
    await r.send({"id": "1", "type": "auth", "token": token})
    f = await r.recv()
    assert f["type"] == "auth_success", f
    return r, f


def test_relay_model_profiles_are_the_configured_agents(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="alice", device="web")

    async def main():
        r, auth = await relay_login(hub, tok)
        want = [{"id": "helper", "name": "helper", "agent": "helper", "kind": "echo"},
                {"id": "expert", "name": "expert", "agent": "expert", "kind": "echo"}]
        assert auth["data"]["modelProfiles"] == want, auth
        await r.send({"id": "m", "type": "subscribe", "resource": "modelProfiles"})
        f = await r.recv()
        assert f == {"id": "m", "type": "subscribed", "resource": "modelProfiles", "data": {"modelProfiles": want}}, f

    run(main())


def test_relay_send_triggers_the_agent_and_pushes_completed(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="alice", device="web")
    desk_tok = hub.token(scopes="read write", user="alice", device="desk")
    st, _, raw = http(hub, "POST", "/api/conversations", {"id": "c1", "title": "no agent set"}, tok)
    assert st == 201, raw

    async def main():
        web, _ = await relay_login(hub, tok)
        desk, _ = await relay_login(hub, desk_tok)
        for r in (web, desk):
            await r.send({"id": "s", "type": "subscribe", "resource": "chat", "resourceId": "c1"})
            f = await r.expect("subscribed")
            assert f["data"] == {"messages": []}, f
        await web.send({"id": "4", "type": "send", "resourceId": "c1", "message": {"message": "hi there"}})
        for r in (web, desk):
            pushes = []
            while True:
                f = await r.recv()
                if f.get("id") == "4":
                    assert f == {"id": "4", "type": "data", "resource": "chat", "resourceId": "c1",
                                 "data": {"sent": True}}, f
                    continue
                assert f["id"] is None and f["resource"] == "chat" and f["resourceId"] == "c1", f
                pushes.append(f)
                if f["data"] == {"completed": True}:
                    break
            kinds = [(p["data"].get("type"), p["data"].get("op") or p["data"].get("message", {}).get("role"))
                     for p in pushes]
            assert kinds[0] == ("message", "user") and kinds[1] == ("stream", "start"), kinds
            assert kinds[-3:] == [("message", "assistant"), ("stream", "end"), (None, None)], kinds
            assert all(k == ("stream", "chunk") for k in kinds[2:-3]) and len(kinds[2:-3]) == 3, kinds
            assert pushes[-1] == {"id": None, "type": "data", "resource": "chat", "resourceId": "c1",
                                  "data": {"completed": True}}
            assert "".join(p["data"]["delta"] for p in pushes[2:-3]) == "hi there"
            assert pushes[-3]["data"]["message"]["content"] == "hi there"
            assert pushes[-3]["data"]["message"]["agent"] == "helper"  # no agent on c1: the first one
        await web.quiet(0.3)

    run(main())
    st, _, raw = http(hub, "GET", "/api/admin/usage", token=hub.token())
    alice = [u for u in json.loads(raw)["data"]["users"] if u["userId"] == "alice"][0]
    assert alice["requests"] == 1 and alice["chars"] == len("hi there"), alice


def test_relay_send_uses_the_chats_agent_and_rate_limit(make_hub):
    hub = make_hub(*AGENTS, "--rate-limit", "1", "--rate-burst", "1")
    tok = hub.token(scopes="read write", user="alice", device="web")
    st, _, raw = http(hub, "POST", "/api/conversations", {"id": "c2", "agent": "expert"}, tok)
    assert st == 201, raw

    async def main():
        r, _ = await relay_login(hub, tok)
        await r.send({"id": "s", "type": "subscribe", "resource": "chat", "resourceId": "c2"})
        await r.expect("subscribed")
        await r.send({"id": "5", "type": "send", "resourceId": "c2", "message": {"message": "x"}})
        reply = await r.expect("data", pred=lambda f: f["data"].get("type") == "message"
                               and f["data"]["message"]["role"] == "assistant")
        assert reply["data"]["message"]["agent"] == "expert", reply
        await r.expect("data", pred=lambda f: f["data"] == {"completed": True})
        await r.send({"id": "6", "type": "send", "resourceId": "c2", "message": {"message": "y"}})
        f = await r.expect("error", pred=lambda f: f.get("id") == "6")
        assert f["resource"] == "chat" and f["resourceId"] == "c2" and "rate limit" in f["error"], f

    run(main())


def test_chat_agent_failure_is_an_error_event(make_hub):
    hub = make_hub("--agent", "flaky=echo;chunk=1;interval=300;total-timeout=50")
    key = apikey(hub, "alice")
    evs = chat(hub, {"message": "too slow", "conversationId": "f1"}, key)
    assert [e["type"] for e in evs] == ["start", "error"], evs
    assert evs[1] == {"type": "error", "conversationId": "f1", "error": "upstream timeout"}, evs


def test_relay_failed_stream_pushes_an_error(make_hub):
    hub = make_hub("--agent", "flaky=echo;chunk=1;interval=300;total-timeout=50")
    tok = hub.token(scopes="read write", user="alice", device="web")
    st, _, raw = http(hub, "POST", "/api/conversations", {"id": "c3"}, tok)
    assert st == 201, raw

    async def main():
        r, _ = await relay_login(hub, tok)
        await r.send({"id": "s", "type": "subscribe", "resource": "chat", "resourceId": "c3"})
        await r.expect("subscribed")
        await r.send({"id": "7", "type": "send", "resourceId": "c3", "message": {"message": "x"}})
        f = await r.expect("error", pred=lambda f: f.get("id") is None)
        assert f == {"id": None, "type": "error", "resource": "chat", "resourceId": "c3", "error": "upstream timeout"}, f
        await r.quiet(0.4, pred=lambda f: f.get("data") == {"completed": True})

    run(main())


# ---- watchers: the hub's followers of one reply for one client --------------------------------

SLOW = ("--agent", "slow=echo;chunk=1;interval=150;max-concurrent=3")


class Mid:
    """Clients of every watcher-backed entry point, each left in the middle of its reply."""

    def __init__(self, hub):
        self.hub = hub
        self.key = apikey(hub, "alice")
        self.tok = hub.token(scopes="read write", user="bob", device="phone")
        self.socks = []

    async def agent_ws(self):
        ws = await websockets.connect(self.hub.ws_url("/api/slow/ws"), compression=None, open_timeout=10)
        await ws.send(self.key)
        assert await asyncio.wait_for(ws.recv(), 10) == "authenticated"
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        await ws.send(json.dumps({"content": "a long enough prompt"}))
        f = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert f["type"] == "message", f  # the first chunk: the reply is under way
        return ws

    async def command(self):
        ws = await websockets.connect(self.hub.ws_url("/ws/command?token=" + self.tok), compression=None,
                                      open_timeout=10)
        await ws.send(json.dumps({"type": "command", "payload": {"commandType": "text_command",
                                                                 "message": "a long command"}}))
        f = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert f["status"] == "processing", f
        return ws

    def chat(self):
        """POST /api/chat on a raw socket, read up to its first chunk."""
        import socket
        s = socket.create_connection(("127.0.0.1", self.hub.port), timeout=10)
        body = json.dumps({"message": "a long chat message"}).encode()
        s.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer " +
                  self.key.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b'"chunk"' not in got:
            got += s.recv(4096)
        self.socks.append(s)
        return s


def watch_state(hub):
    m = hub.metrics()
    return m["chorus_agent_watchers"], m['chorus_agent_active{agent="slow"}']


def test_watchers_go_with_their_clients_mid_reply(make_hub):
    hub = make_hub(*SLOW)
    mid = Mid(hub)

    async def main():
        aws = await mid.agent_ws()
        cmd = await mid.command()
        sock = mid.chat()
        assert watch_state(hub) == (3, 3)  # one watcher per client, three replies under way
        await aws.close()
        await cmd.close()
        sock.close()
        for _ in range(100):  # the replies go on; nobody follows them any more
            if watch_state(hub) == (0, 3):
                return
            await asyncio.sleep(0.02)
        raise AssertionError("watchers left behind: %s" % (watch_state(hub),))

    run(main())
    for _ in range(200):  # the replies end, stored and accounted all the same
        users = {u["userId"]: u for u in json.loads(http(hub, "GET", "/api/admin/usage", token=hub.token())[2])
                 ["data"]["users"]}
        if users["alice"]["chars"] == len("a long enough prompt") + len("a long chat message") and \
                users["bob"]["chars"] == len("a long command"):
            break
        time.sleep(0.05)
    else:
        raise AssertionError(users)
    assert watch_state(hub) == (0, 0)


def test_stopping_the_hub_mid_reply_with_watchers_waiting_exits_cleanly(make_hub):
    """Replies running and queued, watchers waiting on every entry point, a relay send and a native
    prompt: the hub stops at once, exits 0, and (on a sanitizer build) leaks nothing."""
    hub = make_hub(*SLOW)
    mid = Mid(hub)

    async def main():
        held = [await mid.agent_ws(), await mid.command()]
        mid.chat()
        assert watch_state(hub) == (3, 3)
        r, _ = await relay_login(hub, mid.tok)  # a 4th reply: queued behind max-concurrent
        await r.send({"id": "s", "type": "subscribe", "resource": "chat", "resourceId": "rl"})
        await r.send({"id": "4", "type": "send", "resourceId": "rl", "message": {"message": "queued one"}})
        n = await Client.connect(hub, mid.tok)
        await n.join("nat")
        await n.send({"type": "message", "conversationId": "nat", "message": {"content": "queued two"},
                      "agent": "slow", "id": "p"})
        await n.expect("ack")
        t0 = time.monotonic()
        assert hub.stop() == 0, hub.logs()
        assert time.monotonic() - t0 < 8
        return held

    run(main())
    logs = hub.logs()
    assert sanitizer_report(logs) is None, logs
    assert "shutdown complete" in logs, logs
