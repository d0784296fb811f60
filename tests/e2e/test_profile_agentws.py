"""Profile `agent-ws` (shared/compat/CLIENT-PROFILES.md) against a real hub: /api/<agent>/ws.

The transcript exactly as the profile writes it (key as plain text, `authenticated`, `ready`,
`message` chunks, `complete`), the refusals (a bad key: `error:invalid_api_key` + close 1008; no key
within 10 s: close 1008; an unknown agent: 404), GET /api/health's per-agent counts of authenticated
connections, and the one-hub promise: the connection's conversation is a chorus conversation that
a native client can watch, stored with the reply. Agents are the built-in `echo` back end, which
answers with the last user message in chunks.
"""
import asyncio
import json
import re
import subprocess
import time
import urllib.request

import pytest
import websockets

from chorus_client import Client, run
from conftest import CHORUS_BIN

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AGENTS = ("--agent", "claude=echo;chunk=4;interval=5", "--agent", "codex=echo;chunk=100;interval=5")


def apikey(hub, user, scopes="read write"):
    """A real API key for user (`chorus apikey add` on the hub's data directory)."""
    r = subprocess.run([CHORUS_BIN, "apikey", "add", "--user", user, "--scopes", scopes,
                        "--data-dir", hub.data_dir], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    key = re.search(r"chk_[A-Za-z0-9]{8}_[A-Za-z0-9]{32}", r.stdout)
    assert key, r.stdout
    return key.group(0)


def get_json(hub, path, token=None):
    status, _, body = hub.get(path, {"Authorization": "Bearer " + token} if token else None)
    return status, json.loads(body or b"null")


class AgentWs:
    """One agent-ws connection: raw text frames (the profile mixes plain text and JSON)."""

    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def connect(cls, hub, agent="claude"):
        ws = await websockets.connect(hub.ws_url(f"/api/{agent}/ws"), compression=None, open_timeout=10,
                                      close_timeout=3, max_size=None)
        return cls(ws)

    async def text(self, timeout=10):
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def frame(self, timeout=10):
        raw = await self.text(timeout)
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError(f"expected a JSON frame, got {raw!r}")

    async def login(self, key):
        """Send the key; return the ready frame after checking `authenticated`."""
        await self.ws.send(key)
        assert await self.text() == "authenticated"
        ready = await self.frame()
        assert ready["type"] == "ready" and ISO.match(ready["timestamp"]), ready
        assert isinstance(ready["conversationId"], str) and ready["conversationId"], ready
        return ready

    async def ask(self, content):
        """Send a prompt; return (chunks, final frame)."""
        await self.ws.send(json.dumps({"content": content}))
        chunks = []
        while True:
            f = await self.frame()
            assert ISO.match(f.get("timestamp", "")), f
            if f["type"] == "message":
                assert set(f) == {"type", "content", "timestamp"}, f
                chunks.append(f["content"])
            else:
                return chunks, f

    async def close(self):
        await self.ws.close()


async def wait_health(hub, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        status, h = get_json(hub, "/api/health")
        assert status == 200, h
        if h["connections"] == want or time.monotonic() > deadline:
            return h
        await asyncio.sleep(0.05)


def test_the_profile_transcript(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub, "claude")
        ready = await a.login(key)
        chunks, end = await a.ask("Hello from the phone")
        assert end == {"type": "complete", "content": "Response complete", "timestamp": end["timestamp"]}, end
        assert "".join(chunks) == "Hello from the phone", chunks
        assert len(chunks) == 5 and all(len(c) <= 4 for c in chunks), chunks  # chunk=4
        # a second prompt on the same connection, same conversation
        chunks, end = await a.ask("again")
        assert end["type"] == "complete" and "".join(chunks) == "again", (chunks, end)
        await a.close()
        return ready["conversationId"]

    conv = run(main())
    # The conversation is alice's own, answered by the path's agent, with the whole exchange stored.
    status, body = get_json(hub, f"/api/conversations/{conv}?messages=true", hub.token())
    assert status == 200, body
    c = body["data"]
    assert c["owner"] == "alice" and c["agent"] == "claude", c
    msgs = [(m["role"], m["content"]) for m in c["messages"]]
    assert msgs == [("user", "Hello from the phone"), ("assistant", "Hello from the phone"),
                    ("user", "again"), ("assistant", "again")], msgs
    assert c["messages"][1]["agent"] == "claude", c["messages"][1]


def test_each_connection_has_its_own_conversation(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        a, b = await AgentWs.connect(hub), await AgentWs.connect(hub)
        ra, rb = await a.login(key), await b.login(key)
        assert ra["conversationId"] != rb["conversationId"]
        chunks, end = await a.ask("only for a")
        assert end["type"] == "complete" and "".join(chunks) == "only for a"
        with pytest.raises(asyncio.TimeoutError):  # b hears nothing of a's exchange
            await b.text(timeout=0.5)
        await a.close()
        await b.close()

    run(main())


@pytest.mark.parametrize("bad", ["chk_AAAAAAAA_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", "not a key at all", " "])
def test_bad_key_is_refused_and_closed_1008(make_hub, bad):
    hub = make_hub(*AGENTS)

    async def main():
        a = await AgentWs.connect(hub)
        await a.ws.send(bad)
        assert await a.text() == "error:invalid_api_key"
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await a.text(timeout=5)
        assert a.ws.close_code == 1008, a.ws.close_code

    run(main())
    status, h = get_json(hub, "/api/health")
    assert h["connections"] == {"claude": 0, "codex": 0}, h


def test_revoked_and_read_only_keys_are_refused(make_hub):
    hub = make_hub(*AGENTS)
    ro = apikey(hub, "alice", scopes="read")
    revoked = apikey(hub, "alice")
    key_id = revoked.split("_")[1]
    r = subprocess.run([CHORUS_BIN, "apikey", "revoke", key_id, "--data-dir", hub.data_dir],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr

    async def main():
        for k in (ro, revoked):
            a = await AgentWs.connect(hub)
            await a.ws.send(k)
            assert await a.text() == "error:invalid_api_key", k
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await a.text(timeout=5)
            assert a.ws.close_code == 1008

    run(main())


def test_no_key_within_10_s_closes_1008(make_hub):
    hub = make_hub(*AGENTS)

    async def main():
        a = await AgentWs.connect(hub)
        t0 = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            await a.text(timeout=15)
        elapsed = time.monotonic() - t0
        assert a.ws.close_code == 1008, a.ws.close_code
        assert 9.0 <= elapsed <= 11.5, elapsed

    run(main())


def test_unknown_agent_is_404(make_hub):
    hub = make_hub(*AGENTS)

    async def main():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(hub.ws_url("/api/gemini/ws"), open_timeout=5)
        assert e.value.status_code == 404

    run(main())
    status, _, body = hub.get("/api/gemini/ws")
    assert status == 404 and json.loads(body)["success"] is False, (status, body)


def test_health_counts_only_authenticated_connections(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        status, h = get_json(hub, "/api/health")  # no credential needed
        assert status == 200, h
        assert set(h) == {"status", "version", "timestamp", "connections"}, h
        assert h["status"] == "ok" and isinstance(h["version"], str) and h["version"], h
        assert ISO.match(h["timestamp"]), h
        assert h["connections"] == {"claude": 0, "codex": 0}, h

        c1, c2, x1 = (await AgentWs.connect(hub, "claude"), await AgentWs.connect(hub, "claude"),
                      await AgentWs.connect(hub, "codex"))
        lurker = await AgentWs.connect(hub, "claude")  # connected, never authenticates
        for c in (c1, c2, x1):
            await c.login(key)
        h = await wait_health(hub, {"claude": 2, "codex": 1})
        assert h["connections"] == {"claude": 2, "codex": 1}, h
        await c1.close()
        h = await wait_health(hub, {"claude": 1, "codex": 1})
        assert h["connections"] == {"claude": 1, "codex": 1}, h
        await lurker.close()
        await x1.close()
        h = await wait_health(hub, {"claude": 1, "codex": 0})
        assert h["connections"] == {"claude": 1, "codex": 0}, h
        await c2.close()

    run(main())


def test_status_needs_no_credential(make_hub):
    hub = make_hub(*AGENTS)
    status, s = get_json(hub, "/api/status")
    assert status == 200, s
    assert s["status"] == "running" and s["health"] == "ok" and ISO.match(s["timestamp"]), s
    assert isinstance(s["uptime"], int) and s["uptime"] >= 0 and isinstance(s["version"], str), s


def test_errors_keep_the_connection_open(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub)
        await a.login(key)
        for bad in ("not json", json.dumps({"text": "hi"}), json.dumps({"content": ""}), json.dumps([1])):
            await a.ws.send(bad)
            f = await a.frame()
            assert f["type"] == "error" and isinstance(f["content"], str) and f["content"], (bad, f)
            assert set(f) == {"type", "content", "timestamp"} and ISO.match(f["timestamp"]), f
        chunks, end = await a.ask("still here")
        assert end["type"] == "complete" and "".join(chunks) == "still here"
        await a.close()

    run(main())


def test_prompts_sent_early_are_answered_in_order(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub, "codex")
        # The key and three prompts at once, without waiting for `authenticated`.
        await a.ws.send(key)
        for p in ("one", "two", "three"):
            await a.ws.send(json.dumps({"content": p}))
        assert await a.text() == "authenticated"
        assert (await a.frame())["type"] == "ready"
        got = []
        for _ in range(3):
            parts = []
            while True:
                f = await a.frame()
                if f["type"] != "message":
                    assert f["type"] == "complete", f
                    break
                parts.append(f["content"])
            got.append("".join(parts))
        assert got == ["one", "two", "three"], got
        await a.close()

    run(main())


def test_a_native_client_watches_the_agent_ws_conversation(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")
    tok = hub.token(scopes="read write", user="alice", device="desk")

    async def main():
        a = await AgentWs.connect(hub)
        ready = await a.login(key)
        conv = ready["conversationId"]
        desk = await Client.connect(hub, token=tok, source="desktop")
        await desk.join(conv)
        chunks, end = await a.ask("seen on the desk")
        assert end["type"] == "complete"
        m = await desk.expect("message", pred=lambda f: f["message"]["role"] == "user")
        assert m["message"]["content"] == "seen on the desk" and m["message"]["source"] == "agent-ws", m
        start = await desk.expect("stream", pred=lambda f: f["op"] == "start")
        assert start["agent"] == "claude" and start["inReplyTo"] == m["seq"], start
        reply = await desk.expect("message", pred=lambda f: f["message"]["role"] == "assistant")
        assert reply["message"]["content"] == "seen on the desk", reply
        await desk.expect("stream", pred=lambda f: f["op"] == "end")
        await a.close()

    run(main())


def test_rate_limit_per_api_key(make_hub):
    hub = make_hub(*AGENTS, "--rate-limit", "1", "--rate-burst", "2")
    k1, k2 = apikey(hub, "alice"), apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub)
        await a.login(k1)
        for p in ("first", "second"):
            chunks, end = await a.ask(p)
            assert end["type"] == "complete", end
        await a.ws.send(json.dumps({"content": "third"}))
        f = await a.frame()
        assert f["type"] == "error" and "rate limit" in f["content"], f
        # another key of the same user has its own bucket
        b = await AgentWs.connect(hub)
        await b.login(k2)
        chunks, end = await b.ask("other key")
        assert end["type"] == "complete" and "".join(chunks) == "other key"
        await a.close()
        await b.close()

    run(main())
    status, u = get_json(hub, "/api/admin/usage", hub.token())
    assert status == 200, u
    keys = {k["keyId"]: k for k in u["data"]["apiKeys"]}
    k1s = keys[k1.split("_")[1]]
    assert k1s["userId"] == "alice" and k1s["requests"] == 2 and k1s["rateLimited"] == 1, k1s
    assert k1s["chars"] == len("first") + len("second"), k1s
    alice = [x for x in u["data"]["users"] if x["userId"] == "alice"][0]
    assert alice["requests"] == 3 and alice["rateLimited"] == 1, alice


def test_usage_in_metrics(make_hub):
    hub = make_hub(*AGENTS)
    key = apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub, "codex")
        await a.login(key)
        await a.ask("count these characters")
        await a.close()

    run(main())
    m = hub.metrics()
    assert m['chorus_agent_requests_total{agent="codex"}'] == 1, m
    assert m['chorus_agent_chars_total{agent="codex"}'] == len("count these characters"), m
    assert m['chorus_agent_requests_total{agent="claude"}'] == 0, m
    assert m['chorus_agent_input_tokens_total{agent="codex"}'] == 0, m  # echo reports no tokens
    assert m['chorus_agent_active{agent="codex"}'] == 0, m
    status, _, _ = hub.get("/api/admin/usage", {"Authorization": "Bearer " + key})
    assert status == 403  # usage is for admins


def test_agent_failure_is_an_error_frame(make_hub):
    hub = make_hub("--agent", "flaky=echo;chunk=1;interval=300;total-timeout=50")
    key = apikey(hub, "alice")

    async def main():
        a = await AgentWs.connect(hub, "flaky")
        await a.login(key)
        chunks, end = await a.ask("too slow")
        assert chunks == [] and end["type"] == "error" and end["content"] == "upstream timeout", (chunks, end)
        assert set(end) == {"type", "content", "timestamp"}, end
        await a.close()

    run(main())
