"""Profile `command` (shared/compat/CLIENT-PROFILES.md) against a real hub, on /ws/command.

The exchanges exactly as the profile writes them: a command -> `processing` then `success` with
all five data fields; ping -> pong; the three named errors (bad JSON, unknown type, a foreign
payload.userId) answered with {"type":"error","error","timestamp"} on a connection that stays
open; epoch-millisecond timestamps; the token in ?token= or Authorization: Bearer; the agent the
config names (command-agent) or the first one; no agent -> an error response. Agents are the
built-in `echo` back end (it answers with the command's text).
"""
import asyncio
import json
import time

import pytest
import websockets

from chorus_client import run

AGENTS = ("--agent", "first=echo;chunk=5;interval=5", "--agent", "second=echo;chunk=50;interval=5")


def now_ms():
    return int(time.time() * 1000)


class Cmd:
    def __init__(self, ws):
        self.ws = ws

    @classmethod
    async def connect(cls, hub, token=None, headers=None):
        path = "/ws/command" + (f"?token={token}" if token else "")
        ws = await websockets.connect(hub.ws_url(path), compression=None, open_timeout=10, close_timeout=3,
                                      extra_headers=headers or {})
        return cls(ws)

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout=10):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def command(self, message, user="u1", kind="text_command", tz="Europe/Paris"):
        payload = {"commandType": kind, "message": message, "userId": user, "userTimezone": tz}
        await self.send({"type": "command", "payload": payload, "timestamp": now_ms()})

    async def close(self):
        await self.ws.close()


def check_ms(ts):
    assert isinstance(ts, int) and abs(ts - now_ms()) < 60000, ts


def check_processing(f):
    assert set(f) == {"type", "status", "data", "timestamp"}, f
    assert f["type"] == "response" and f["status"] == "processing", f
    assert set(f["data"]) == {"message"} and isinstance(f["data"]["message"], str), f
    check_ms(f["timestamp"])


def check_success(f, text):
    assert set(f) == {"type", "status", "data", "timestamp"}, f
    assert f["type"] == "response" and f["status"] == "success", f
    assert f["data"] == {"message": text, "requiresAuth": False, "authUrl": None, "actions": [], "metadata": {}}, f
    check_ms(f["timestamp"])


def check_error(f):
    assert set(f) == {"type", "error", "timestamp"}, f
    assert f["type"] == "error" and isinstance(f["error"], str) and f["error"], f
    check_ms(f["timestamp"])


def conversations(hub, user):
    tok = hub.token(scopes="read", user=user, device="check")
    status, _, body = hub.get("/api/conversations", {"Authorization": "Bearer " + tok})
    assert status == 200, body
    return json.loads(body)["data"]


def messages(hub, conv):
    status, _, body = hub.get(f"/api/conversations/{conv}?messages=true", {"Authorization": "Bearer " + hub.token()})
    assert status == 200, body
    return json.loads(body)["data"]["messages"]


def test_the_profile_transcript(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("what's on my calendar?")
        check_processing(await c.recv())
        check_success(await c.recv(), "what's on my calendar?")
        # voice_command carries the transcribed text and is handled the same way
        await c.command("call mom", kind="voice_command")
        check_processing(await c.recv())
        check_success(await c.recv(), "call mom")
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}
        await c.close()

    run(main())
    # One conversation of the connection's own, owned by the token's user, answered by the first agent.
    convs = [c for c in conversations(hub, "u1") if c["metadata"].get("profile") == "command"]
    assert len(convs) == 1 and convs[0]["owner"] == "u1" and convs[0]["agent"] == "first", convs
    ms = messages(hub, convs[0]["id"])
    assert [(m["role"], m["content"]) for m in ms] == [
        ("user", "what's on my calendar?"), ("assistant", "what's on my calendar?"),
        ("user", "call mom"), ("assistant", "call mom")], ms
    assert ms[0]["context"]["commandType"] == "text_command" and ms[0]["context"]["userTimezone"] == "Europe/Paris", ms[0]
    assert ms[2]["context"]["commandType"] == "voice_command", ms[2]


def test_errors_keep_the_connection_open(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        cases = [
            "{not json",                                                   # bad JSON
            json.dumps({"type": "dance"}),                                 # unknown type
            json.dumps({"type": "command", "payload": {"commandType": "text_command", "message": "hi",
                                                        "userId": "someone-else"}, "timestamp": now_ms()}),
            json.dumps({"type": "command", "payload": {"commandType": "sing", "message": "hi", "userId": "u1"}}),
            json.dumps({"type": "command", "payload": {"commandType": "text_command", "userId": "u1"}}),
            json.dumps({"type": "command"}),
            json.dumps(["type", "ping"]),
        ]
        for raw in cases:
            await c.send(raw)
            f = await c.recv()
            check_error(f)
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}
        await c.command("after the errors")
        check_processing(await c.recv())
        check_success(await c.recv(), "after the errors")
        await c.close()

    run(main())
    assert not [c for c in conversations(hub, "someone-else")]


def test_user_id_must_be_the_tokens_user(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("as u2", user="u2")
        f = await c.recv()
        check_error(f)
        assert "userId" in f["error"], f
        # without a userId the token's user is assumed
        await c.send({"type": "command", "payload": {"commandType": "text_command", "message": "no user"},
                      "timestamp": now_ms()})
        check_processing(await c.recv())
        check_success(await c.recv(), "no user")
        await c.close()

    run(main())


def test_bearer_header_and_refusals(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="u1", device="phone")
    ro = hub.token(scopes="read", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, headers={"Authorization": "Bearer " + tok})
        await c.command("via header")
        check_processing(await c.recv())
        check_success(await c.recv(), "via header")
        await c.close()
        for kw, code in (({}, 401), ({"token": "garbage"}, 401), ({"token": ro}, 403)):
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await Cmd.connect(hub, **kw)
            assert e.value.status_code == code, (kw, e.value.status_code)

    run(main())


def test_command_agent_from_the_config(make_hub):
    hub = make_hub(*AGENTS, "--command-agent", "second")
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("who answers?")
        check_processing(await c.recv())
        check_success(await c.recv(), "who answers?")
        await c.close()

    run(main())
    convs = [c for c in conversations(hub, "u1") if c["metadata"].get("profile") == "command"]
    assert len(convs) == 1 and convs[0]["agent"] == "second", convs
    ms = messages(hub, convs[0]["id"])
    assert ms[1]["role"] == "assistant" and ms[1]["agent"] == "second", ms


def test_no_agent_configured_answers_an_error_response(make_hub):
    hub = make_hub()
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("anyone?")
        f = await c.recv()
        assert f["type"] == "response" and f["status"] == "error", f
        assert set(f["data"]) == {"message"} and "agent" in f["data"]["message"], f
        check_ms(f["timestamp"])
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}
        await c.close()

    run(main())


def test_commands_are_answered_in_order(make_hub):
    hub = make_hub(*AGENTS)
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        for t in ("alpha", "beta", "gamma"):
            await c.command(t)
        frames = [await c.recv() for _ in range(6)]
        assert [f["status"] for f in frames[:3]] == ["processing"] * 3, frames
        for f, t in zip(frames[3:], ("alpha", "beta", "gamma")):
            check_success(f, t)
        await c.close()

    run(main())


def test_rate_limit_answers_an_error(make_hub):
    hub = make_hub(*AGENTS, "--rate-limit", "1", "--rate-burst", "1")
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("once")
        check_processing(await c.recv())
        check_success(await c.recv(), "once")
        await c.command("twice")
        f = await c.recv()
        check_error(f)
        assert "rate limit" in f["error"], f
        await c.send({"type": "ping"})
        assert await c.recv() == {"type": "pong"}
        await c.close()

    run(main())


def test_agent_failure_is_an_error_response(make_hub):
    hub = make_hub("--agent", "flaky=echo;chunk=1;interval=300;total-timeout=50")
    tok = hub.token(scopes="read write", user="u1", device="phone")

    async def main():
        c = await Cmd.connect(hub, token=tok)
        await c.command("too slow")
        check_processing(await c.recv())
        f = await c.recv()
        assert f["type"] == "response" and f["status"] == "error", f
        assert f["data"] == {"message": "upstream timeout"}, f
        check_ms(f["timestamp"])
        await c.close()

    run(main())
