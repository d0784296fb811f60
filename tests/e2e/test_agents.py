"""AI agents, black box: a real hub with --agent flags, native /ws clients, and fake upstreams —
OpenAI-compatible and Anthropic SSE servers on loopback (fake_upstreams.py) and small exec agents
(agents/*.py). See docs/AGENTS.md.

Covered: one stream reaching every subscriber identically (start, chunks in order, the stored
message, end), the request each back end builds (model, messages, system, headers, options),
late joiners and reconnects that see the whole reply exactly once, cancel (everywhere, upstream
released, child killed — SIGKILL after the grace period when SIGTERM is ignored), upstream HTTP
errors, idle and total timeouts, slow upstreams, malformed / truncated / failing streams, invalid
UTF-8, non-streamed answers, unreachable upstreams, the exec text and JSON-lines protocols, the
explicit environment and cwd, crashes, 50 concurrent streams through max-concurrent queueing, one
upstream request per prompt however many watch, refused agent specs, shutdown mid-stream, and the
tokens the upstreams report accounted to the user and API key that sent each prompt, whatever the
entry point (native /ws, REST, POST /api/chat, agent-ws).
"""
import asyncio
import json
import os
import pathlib
import subprocess
import tempfile
import time

import pytest
import websockets

from chorus_client import Client, run
from conftest import CHORUS_BIN, free_port
from fake_upstreams import FakeUpstream, split_text
from test_chat_stream import apikey, http

AGENTS = pathlib.Path(__file__).resolve().parent / "agents"
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else os.sys.executable
NOPROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "http_proxy": "",
           "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "all_proxy": ""}


def exec_spec(name, script, *args, opts=""):
    words = " ".join("'%s'" % a for a in (PY, str(AGENTS / script)) + args)
    return f"{name}=exec:{words}{opts}"


def start_hub(make_hub, *specs, env=None, **kw):
    flags = ["--insecure-dev"]
    for s in specs:
        flags += ["--agent", s]
    return make_hub(*flags, env=dict(NOPROXY, **(env or {})), **kw)


@pytest.fixture
def openai_up():
    up = FakeUpstream("openai", key="sk-test")
    yield up
    up.close()


@pytest.fixture
def anthropic_up():
    up = FakeUpstream("anthropic", key="ak-test")
    yield up
    up.close()


KEYS = {"CHORUS_TEST_OPENAI_KEY": "sk-test", "CHORUS_TEST_ANTHROPIC_KEY": "ak-test"}


def oa(name, model, up, opts=""):
    return f"{name}=openai:{model};base-url={up.base_url};key-env=CHORUS_TEST_OPENAI_KEY{opts}"


def an(name, model, up, opts=""):
    return f"{name}=anthropic:{model};base-url={up.base_url};key-env=CHORUS_TEST_ANTHROPIC_KEY{opts}"


# ---------------------------------------------------------------------------
# client helpers


async def prompt(c, conv, text, agent, role=None):
    """Send a user message that asks `agent` for a reply; returns the ack."""
    rid = c.next_id("p")
    req = c.message_request(conv, text, rid=rid)
    if role:
        req["message"]["role"] = role
    if agent:
        req["agent"] = agent
    await c.send(req)
    ack = await c.expect_one_of(("ack", "error"), pred=lambda f: f.get("id") == rid)
    assert ack["type"] == "ack", ack
    return ack


def of_stream(sid):
    def pred(f):
        t = f.get("type")
        if t == "stream":
            return f.get("streamId") == sid
        if t == "message":
            return (f.get("message") or {}).get("streamId") == sid
        if t == "event":
            return f.get("streamId") == sid
        return False
    return pred


async def collect(c, sid=None, timeout=20):
    """The frames of one stream, in arrival order, through its end or error (inclusive).
    Without sid: from the next stream start."""
    frames = []
    if sid is None:
        start = await c.expect("stream", timeout, pred=lambda f: f.get("op") == "start")
        sid = start["streamId"]
        frames.append(start)
    while True:
        f = await c.expect_one_of(("stream", "message", "event"), timeout, pred=of_stream(sid))
        f["_t"] = time.monotonic()
        frames.append(f)
        if f["type"] == "stream" and f["op"] in ("end", "error"):
            return frames


def agent_frame(f):
    """A frame an agent produced: stream events, its stored reply or error marker."""
    t = f.get("type")
    return t == "stream" or (t == "message" and f["message"].get("role") == "assistant") or \
        (t == "event" and f.get("event") == "agent_error")


def strip_t(frames):
    return [{k: v for k, v in f.items() if k != "_t"} for f in frames]


def chunks_of(frames):
    return [f for f in frames if f.get("type") == "stream" and f.get("op") == "chunk"]


def check_complete(frames, text, agent, first_index=1):
    """start? + chunks first_index.. in order + the stored assistant message + end (its seq)."""
    ops = [f.get("op") if f["type"] == "stream" else f["type"] for f in frames]
    if first_index == 1:
        assert ops[0] == "start" and frames[0]["agent"] == agent, ops
    assert ops[-2:] == ["message", "end"], ops
    ch = chunks_of(frames)
    assert [f["index"] for f in ch] == list(range(first_index, first_index + len(ch))), ops
    msg, end = frames[-2], frames[-1]
    m = msg["message"]
    assert m["role"] == "assistant" and m["content"] == text and m["agent"] == agent, m
    assert m["userId"] == agent and m["streamId"] == end["streamId"], m
    assert end["seq"] == msg["seq"] == m["seq"], (msg, end)
    return "".join(f["delta"] for f in ch)


def check_error(frames, error_part, partial=None):
    """The stream ended with an error naming error_part, after its stored agent_error marker."""
    ev, err = frames[-2], frames[-1]
    assert err["type"] == "stream" and err["op"] == "error", frames[-3:]
    assert error_part in err["error"], err
    assert ev["type"] == "event" and ev["event"] == "agent_error", ev
    assert ev["payload"]["error"] == err["error"] and err["seq"] == ev["seq"], (ev, err)
    got = "".join(f["delta"] for f in chunks_of(frames))
    if frames[0].get("op") == "start":  # the whole stream was collected
        assert ev["payload"]["partial"] == got, (ev, got)
    if partial is not None:
        assert got == partial, got
    return err["error"]


# ---------------------------------------------------------------------------
# streaming to everyone


def test_openai_stream_reaches_every_subscriber_identically(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "ok,ms=15", openai_up, ";system=Be brief;max-tokens=50"), env=KEYS)

    async def go():
        cs = [await Client.connect(hub, f"u1:{d}", source=d) for d in ("laptop", "phone", "tablet")]
        for c in cs:
            await c.join("room")
        await prompt(cs[0], "room", "hello there", "gpt")
        got = await asyncio.gather(*(collect(c) for c in cs))
        want = "Reply to: hello there"
        for frames in got:
            assert check_complete(frames, want, "gpt") == want
            assert len(chunks_of(frames)) == 6
        assert strip_t(got[0]) == strip_t(got[1]) == strip_t(got[2]), "subscribers saw different streams"
        for c in cs:  # nothing twice, nothing more
            await c.quiet(0.3, agent_frame)
        # a later joiner finds the reply stored, and no stream in flight
        late = await Client.connect(hub, "u1:late")
        sync = await late.join("room")
        assert [(m["role"], m["content"]) for m in sync["data"]] == [("user", "hello there"), ("assistant", want)]
        assert "streams" not in sync, sync

    run(go())
    assert openai_up.count() == 1
    r = openai_up.requests[0]
    assert r["path"] == "/v1/chat/completions"
    assert r["headers"]["authorization"] == "Bearer sk-test"
    assert r["headers"]["accept"] == "text/event-stream"
    assert r["body"] == {"model": "ok,ms=15", "stream": True, "max_tokens": 50,
                         "stream_options": {"include_usage": True},
                         "messages": [{"role": "system", "content": "Be brief"},
                                      {"role": "user", "content": "hello there"}]}


def test_anthropic_stream_and_the_request_it_sends(make_hub, anthropic_up):
    hub = start_hub(make_hub, an("claude", "ok,ms=10", anthropic_up, ";system=You are terse;version=2024-01-01"),
                    env=KEYS)

    async def go():
        a = await Client.connect(hub, "u1:a")
        b = await Client.connect(hub, "u1:b")
        await a.join("c1")
        await b.join("c1")
        await prompt(a, "c1", "first question", "claude")
        fa, fb = await asyncio.gather(collect(a), collect(b))
        check_complete(fa, "Reply to: first question", "claude")
        assert strip_t(fa) == strip_t(fb)
        await prompt(b, "c1", "second question", "claude")
        check_complete(await collect(a), "Reply to: second question", "claude")

    run(go())
    assert anthropic_up.count() == 2
    r = anthropic_up.requests[1]
    assert r["path"] == "/v1/messages"
    assert r["headers"]["x-api-key"] == "ak-test"
    assert r["headers"]["anthropic-version"] == "2024-01-01"
    assert "authorization" not in r["headers"]
    assert r["body"] == {"model": "ok,ms=10", "max_tokens": 1024, "stream": True, "system": "You are terse",
                         "messages": [{"role": "user", "content": "first question"},
                                      {"role": "assistant", "content": "Reply to: first question"},
                                      {"role": "user", "content": "second question"}]}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_prompts_reuse_the_upstream_connection(make_hub, openai_up, anthropic_up, kind):
    """A reply that ended cleanly leaves its connection to the upstream open for the next prompt
    (no new connect, no new TLS handshake per prompt)."""
    up = openai_up if kind == "openai" else anthropic_up
    hub = start_hub(make_hub, (oa if kind == "openai" else an)("bot", "ok,ms=5", up), env=KEYS)

    async def go():
        a = await Client.connect(hub, "u1:a")
        await a.join("c1")
        for i in range(3):
            await prompt(a, "c1", f"question {i}", "bot")
            check_complete(await collect(a), f"Reply to: question {i}", "bot")

    run(go())
    assert up.count() == 3
    assert len({r["peer"] for r in up.requests}) == 1, [r["peer"] for r in up.requests]


def test_history_is_fitted_to_each_api(make_hub, openai_up, anthropic_up):
    hub = start_hub(make_hub, oa("gpt", "ok", openai_up), an("claude", "ok", anthropic_up, ";system=Base"),
                    env=KEYS)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("h")
        await prompt(c, "h", "an assistant note first", None, role="assistant")
        await prompt(c, "h", "house rules", None, role="system")
        await prompt(c, "h", "part one", None)
        await prompt(c, "h", "", None)
        await prompt(c, "h", "a tool said 42", None, role="tool")
        await prompt(c, "h", "part two", "claude")
        check_complete(await collect(c), "Reply to: part one\n\na tool said 42\n\npart two", "claude")
        await prompt(c, "h", "part three", "gpt")
        await collect(c)

    run(go())
    body = anthropic_up.requests[0]["body"]
    # system messages join the system prompt, a leading assistant turn goes, empty ones go,
    # other roles read as user, and consecutive turns of one role merge
    assert body["system"] == "Base\n\nhouse rules"
    assert body["messages"] == [{"role": "user", "content": "part one\n\na tool said 42\n\npart two"}]
    msgs = openai_up.requests[0]["body"]["messages"]
    assert [(m["role"], m["content"]) for m in msgs] == [
        ("assistant", "an assistant note first"), ("system", "house rules"), ("user", "part one"), ("user", ""),
        ("user", "a tool said 42"), ("user", "part two"),
        ("assistant", "Reply to: part one\n\na tool said 42\n\npart two"),
        ("user", "part three")]


def test_one_upstream_request_per_prompt_with_five_watchers(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "ok,ms=10", openai_up), env=KEYS)

    async def go():
        cs = [await Client.connect(hub, f"u1:w{i}") for i in range(5)]
        for c in cs:
            await c.join("watched")
        for n, sender in enumerate((cs[0], cs[3]), start=1):
            await prompt(sender, "watched", f"prompt {n}", "gpt")
            got = await asyncio.gather(*(collect(c) for c in cs))
            for frames in got:
                check_complete(frames, f"Reply to: prompt {n}", "gpt")
                assert strip_t(frames) == strip_t(got[0])
            assert openai_up.wait_for(lambda u: u.finished == n)
            assert openai_up.count() == n, "one prompt made more than one upstream request"
        for c in cs:
            await c.quiet(0.3, lambda f: f.get("type") == "stream")

    run(go())
    assert openai_up.count() == 2


# ---------------------------------------------------------------------------
# joining mid-stream


def test_late_joiner_and_reconnecting_client_see_the_reply_exactly_once(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "ok,ms=120,chunk=3", openai_up), env=KEYS)
    text = "please stream this reply slowly, one piece at a time"
    want = "Reply to: " + text

    async def follow_from_sync(c, sync, sid):
        """sync's stream text + the later chunks = the reply; returns the index the sync held."""
        streams = sync.get("streams") or []
        assert [s["streamId"] for s in streams] == [sid], sync
        s = streams[0]
        assert s["agent"] == "gpt" and s["index"] >= 1 and s["text"], s
        frames = await collect(c, sid)
        tail = check_complete(frames, want, "gpt", first_index=s["index"] + 1)
        assert s["text"] + tail == want
        await c.quiet(0.3, lambda f: f.get("type") == "stream")
        return s

    async def go():
        a = await Client.connect(hub, "u1:a")
        c = await Client.connect(hub, "u1:c")
        await a.join("live")
        sync_c = await c.join("live")
        ack = await prompt(a, "live", text, "gpt")
        whole = asyncio.ensure_future(collect(a, timeout=30))
        # c sees three chunks, then its connection drops
        start = await c.expect("stream", pred=lambda f: f.get("op") == "start")
        sid = start["streamId"]
        await c.expect("stream", pred=lambda f: f.get("op") == "chunk" and f["index"] == 3)
        await c.drop()
        # c comes back and resumes from the last seq it had (the prompt)
        c2 = await Client.connect(hub, "u1:c")
        sync2 = await c2.join("live", since=ack["seq"], epoch=sync_c.get("epoch"))
        assert [m["seq"] for m in sync2["data"]] == [], sync2
        # b joins later, from nothing
        await asyncio.sleep(0.5)
        b = await Client.connect(hub, "u1:b")
        sync_b = await b.join("live")
        assert [m["content"] for m in sync_b["data"]] == [text], sync_b
        sc, sb = await asyncio.gather(follow_from_sync(c2, sync2, sid), follow_from_sync(b, sync_b, sid))
        assert sb["index"] > sc["index"] >= 3, (sc, sb)
        frames = await whole
        assert check_complete(frames, want, "gpt") == want
        # what the syncs held is exactly what `a` saw up to those indexes
        ch = chunks_of(frames)
        assert "".join(f["delta"] for f in ch[:sc["index"]]) == sc["text"]
        assert "".join(f["delta"] for f in ch[:sb["index"]]) == sb["text"]

    run(go())
    assert openai_up.count() == 1


# ---------------------------------------------------------------------------
# cancel


def test_cancel_ends_the_stream_everywhere_and_releases_the_upstream(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "endless,ms=80", openai_up), env=KEYS)

    async def go():
        a = await Client.connect(hub, "u1:a")
        b = await Client.connect(hub, "u1:b")
        await a.join("cc")
        await b.join("cc")
        await prompt(a, "cc", "go on forever", "gpt")
        start = await b.expect("stream", pred=lambda f: f.get("op") == "start")
        sid = start["streamId"]
        await b.expect("stream", pred=lambda f: f.get("op") == "chunk" and f["index"] == 3)
        await b.send({"type": "cancel", "conversationId": "cc", "streamId": sid, "id": "k1"})
        ok = await b.expect("cancelled")
        assert ok == {"type": "cancelled", "id": "k1", "streamId": sid}
        fa, fb = await asyncio.gather(collect(a), collect(b, sid))
        assert check_error(fa, "cancelled") == "cancelled"
        check_error(fb, "cancelled")
        assert len(chunks_of(fa)) >= 3
        for c in (a, b):
            await c.quiet(0.5, lambda f: f.get("type") == "stream")
        assert openai_up.wait_for(lambda u: u.disconnects == 1), "the upstream request was not released"
        # the marker is stored: a new join finds it among the events
        late = await Client.connect(hub, "u1:late")
        sync = await late.join("cc")
        marks = [e for e in sync.get("events", []) if e.get("event") == "agent_error"]
        assert len(marks) == 1 and marks[0]["streamId"] == sid and marks[0]["payload"]["error"] == "cancelled"
        assert "streams" not in sync
        # a stream that is over (or never was) cannot be cancelled
        await a.send({"type": "cancel", "conversationId": "cc", "streamId": sid, "id": "k2"})
        err = await a.expect("error", pred=lambda f: f.get("id") == "k2")
        assert err["code"] == "not_found", err

    run(go())
    assert openai_up.count() == 1


@pytest.mark.parametrize("ignore_term", [False, True])
def test_cancel_kills_the_exec_agent(make_hub, ignore_term):
    with tempfile.TemporaryDirectory() as d:
        pidfile = os.path.join(d, "pid")
        args = (pidfile, "--ignore-term") if ignore_term else (pidfile,)
        hub = start_hub(make_hub, exec_spec("forever", "forever_agent.py", *args, opts=";kill-grace=700"))

        async def go():
            c = await Client.connect(hub, "u1:a")
            await c.join("k")
            await prompt(c, "k", "never stop", "forever")
            start = await c.expect("stream", pred=lambda f: f.get("op") == "start")
            await c.expect("stream", pred=lambda f: f.get("op") == "chunk" and f["index"] == 2)
            pid = int(open(pidfile).read())
            t0 = time.monotonic()
            await c.send({"type": "cancel", "conversationId": "k", "streamId": start["streamId"]})
            check_error(await collect(c, start["streamId"]), "cancelled")
            while time.monotonic() - t0 < 6:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the agent process is still alive 6 s after the cancel")
            return time.monotonic() - t0

        took = run(go())
        if ignore_term:
            assert took >= 0.6, f"gone after {took:.2f}s: SIGKILL must wait for kill-grace"
            assert "ignored SIGTERM" in hub.logs()
        else:
            assert took < 0.6, f"SIGTERM should end it at once, took {took:.2f}s"


# ---------------------------------------------------------------------------
# upstream failures


@pytest.mark.parametrize("kind,case,want", [
    ("openai", "http500", "upstream HTTP 500 (server_error): boom"),
    ("openai", "http401", "upstream HTTP 401 (invalid_request_error): Incorrect API key provided"),
    ("anthropic", "http500", "upstream HTTP 500 (api_error): boom"),
    ("anthropic", "http401", "upstream HTTP 401 (authentication_error): invalid x-api-key"),
    ("openai", "garbage", "malformed upstream event"),
    ("anthropic", "garbage", "malformed upstream event"),
    ("openai", "truncated", "upstream closed the stream before the end of the reply"),
    ("anthropic", "truncated", "upstream closed the stream before message_stop"),
    ("openai", "streamerror", "upstream error (server_error): model overloaded mid-stream"),
    ("anthropic", "streamerror", "upstream error (overloaded_error): Overloaded"),
])
def test_upstream_failures_end_the_stream_with_the_reason(make_hub, openai_up, anthropic_up, kind, case, want):
    up = openai_up if kind == "openai" else anthropic_up
    keys = dict(KEYS)
    if case == "http401":  # the key this hub sends is not the one the upstream expects
        keys = {"CHORUS_TEST_OPENAI_KEY": "sk-wrong", "CHORUS_TEST_ANTHROPIC_KEY": "ak-wrong"}
    spec = (oa if kind == "openai" else an)("bot", case, up)
    hub = start_hub(make_hub, spec, env=keys)

    async def go():
        a = await Client.connect(hub, "u1:a")
        b = await Client.connect(hub, "u1:b")
        await a.join("f")
        await b.join("f")
        await prompt(a, "f", "will it work?", "bot")
        fa, fb = await asyncio.gather(collect(a), collect(b))
        assert strip_t(fa) == strip_t(fb)
        err = check_error(fa, want)
        partial = {"garbage": "fine so far", "truncated": "Reply to", "streamerror": "Reply to"}.get(case, "")
        assert "".join(f["delta"] for f in chunks_of(fa)) == partial, err

    run(go())
    assert up.count() == 1


def test_unreachable_upstream_is_an_error(make_hub):
    port = free_port()  # nothing listens there
    hub = start_hub(make_hub, f"gpt=openai:m;base-url=http://127.0.0.1:{port}/v1")

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("u")
        await prompt(c, "u", "anyone?", "gpt")
        check_error(await collect(c), "upstream connection failed")

    run(go())


def test_https_upstream_certificates_are_verified(make_hub, tls_cert):
    # a self-signed certificate: curl must refuse it (verification is on), and say why
    up = FakeUpstream("openai", key="sk-test", tls=tls_cert)
    try:
        hub = start_hub(make_hub, oa("gpt", "ok", up), env=KEYS)

        async def go():
            c = await Client.connect(hub, "u1:a")
            await c.join("t")
            await prompt(c, "t", "secure?", "gpt")
            err = check_error(await collect(c), "upstream connection failed")
            assert "certificate" in err.lower(), err

        run(go())
        assert up.count() == 0  # no request went out over the unverified connection
    finally:
        up.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_silent_upstream_hits_the_idle_timeout(make_hub, openai_up, anthropic_up, kind):
    up = openai_up if kind == "openai" else anthropic_up
    hub = start_hub(make_hub, (oa if kind == "openai" else an)("bot", "silent", up, ";idle-timeout=500"), env=KEYS)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("s")
        await prompt(c, "s", "hello?", "bot")
        check_error(await collect(c, timeout=10), "upstream idle timeout", partial="")

    t0 = time.monotonic()
    run(go())
    assert time.monotonic() - t0 < 5
    assert up.wait_for(lambda u: u.disconnects == 1), "the silent upstream was not released"


def test_slow_upstream_still_streams(make_hub, openai_up):
    # chunks 300 ms apart, idle timeout 1 s: every chunk restarts the idle clock
    hub = start_hub(make_hub, oa("gpt", "ok,ms=300,chunk=4", openai_up, ";idle-timeout=1000"), env=KEYS)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("slow")
        await prompt(c, "slow", "take your time", "gpt")
        frames = await collect(c, timeout=20)
        check_complete(frames, "Reply to: take your time", "gpt")
        ch = chunks_of(frames)
        assert len(ch) == 6
        # streamed as produced, not buffered to the end: 5 gaps of 300 ms
        assert ch[-1]["_t"] - ch[0]["_t"] >= 1.2, [f["_t"] for f in ch]

    run(go())


def test_endless_upstream_hits_the_total_timeout(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "endless,ms=100", openai_up, ";total-timeout=1500"), env=KEYS)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("e")
        t0 = time.monotonic()
        await prompt(c, "e", "go", "gpt")
        frames = await collect(c, timeout=10)
        took = time.monotonic() - t0
        check_error(frames, "upstream timeout")
        assert "idle" not in frames[-1]["error"]
        assert len(chunks_of(frames)) >= 5
        assert 1.3 <= took < 4, took

    run(go())
    assert openai_up.wait_for(lambda u: u.disconnects == 1)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_invalid_utf8_fragmented_and_unstreamed_answers(make_hub, openai_up, anthropic_up, kind):
    up = openai_up if kind == "openai" else anthropic_up
    mk = oa if kind == "openai" else an
    hub = start_hub(make_hub, mk("bad", "badutf8", up), mk("frag", "crlf", up), mk("whole", "nonstream", up),
                    env=KEYS)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("x")
        await prompt(c, "x", "one", "bad")
        check_complete(await collect(c), "ok \ufffd done", "bad")
        await prompt(c, "x", "two: CRLF and events in 3-byte pieces", "frag")
        check_complete(await collect(c), "Reply to: two: CRLF and events in 3-byte pieces", "frag")
        await prompt(c, "x", "three", "whole")
        frames = await collect(c)
        check_complete(frames, "Reply to: three", "whole")
        assert len(chunks_of(frames)) == 1

    run(go())
    assert up.count() == 3


# ---------------------------------------------------------------------------
# concurrency


def test_fifty_concurrent_streams_queue_behind_max_concurrent(make_hub, openai_up):
    hub = start_hub(make_hub, oa("gpt", "ok,ms=15,chunk=6", openai_up, ";max-concurrent=5"), env=KEYS, threads=2)

    async def go():
        clients = [await Client.connect(hub, f"u{i}:d") for i in range(10)]
        convs = {}
        for i, c in enumerate(clients):
            for j in range(5):
                conv = f"q{i}-{j}"
                await c.join(conv)
                convs[conv] = c
        # all 50 prompts at once, then the acks
        for conv, c in convs.items():
            req = c.message_request(conv, f"prompt for {conv}", rid="p-" + conv)
            req["agent"] = "gpt"
            await c.send(req)

        async def acks(c, mine):
            for conv in mine:
                f = await c.expect_one_of(("ack", "error"), pred=lambda f, conv=conv: f.get("id") == "p-" + conv)
                assert f["type"] == "ack", f

        await asyncio.gather(*(acks(c, [k for k, v in convs.items() if v is c]) for c in clients))

        async def one_client(c, mine):
            done = {}
            while len(done) < len(mine):
                end = await c.expect("stream", 60, pred=lambda f: f.get("op") in ("end", "error"))
                assert end["op"] == "end", end
                done[end["conversationId"]] = end
            return done

        results = await asyncio.gather(*(one_client(c, [k for k, v in convs.items() if v is c]) for c in clients))
        ends = {k: v for r in results for k, v in r.items()}
        assert sorted(ends) == sorted(convs)
        # every reply is whole and belongs to its own prompt
        for c in clients:
            for f in c.pending:
                if f.get("type") == "message" and f["message"]["role"] == "assistant":
                    conv = f["conversationId"]
                    assert f["message"]["content"] == f"Reply to: prompt for {conv}", f
                    assert ends[conv]["seq"] == f["seq"]

    run(go(), timeout=120)
    assert openai_up.count() == 50
    assert openai_up.max_active == 5, f"max-concurrent=5 but {openai_up.max_active} requests ran at once"


def test_a_full_queue_answers_the_next_prompt_at_once_with_agent_busy(make_hub):
    hub = start_hub(make_hub, "slow=echo;chunk=2;interval=300;max-concurrent=1;max-queue=1")

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("q")
        seqs = [(await prompt(c, "q", t, "slow"))["seq"] for t in ("one", "two", "three")]
        err = await c.expect("stream", pred=lambda f: f.get("op") == "error")
        assert err["error"] == "agent busy: too many prompts waiting (max-queue 1)", err
        marker = [f for f in c.pending if f.get("type") == "event" and f.get("streamId") == err["streamId"]]
        assert len(marker) == 1 and marker[0]["inReplyTo"] == seqs[2] and marker[0]["seq"] == err["seq"], marker
        assert hub.metrics()['chorus_agent_queued{agent="slow"}'] == 1  # "two" waits behind "one"
        for text, seq in (("one", seqs[0]), ("two", seqs[1])):
            start = await c.expect("stream", pred=lambda f, seq=seq: f.get("op") == "start" and f["inReplyTo"] == seq)
            check_complete([start] + await collect(c, start["streamId"]), text, "slow")
        m = hub.metrics()
        assert m['chorus_agent_queued{agent="slow"}'] == 0 and m['chorus_agent_requests_total{agent="slow"}'] == 2, m

    run(go())


def test_native_sends_that_name_an_agent_are_rate_limited(make_hub):
    hub = make_hub("--insecure-dev", "--agent", "bot=echo;interval=0", "--rate-limit", "1", "--rate-burst", "1",
                   env=NOPROXY)

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("rl")
        await prompt(c, "rl", "first", "bot")  # takes the one token
        check_complete(await collect(c), "first", "bot")
        rid = c.next_id("p")
        req = c.message_request("rl", "second", rid=rid)
        req["agent"] = "bot"
        await c.send(req)
        err = await c.expect_one_of(("ack", "error"), pred=lambda f: f.get("id") == rid)
        assert err["type"] == "error" and err["code"] == "rate_limited", err
        assert "try again in" in err["error"], err
        # Refused before anything was stored: a plain message still goes through, with the next seq.
        ack = await prompt(c, "rl", "no agent", None)
        assert ack["seq"] == 3, ack  # 1: "first", 2: the echo reply, 3: this one
        m = hub.metrics()
        assert m["chorus_agent_rate_limited_total"] == 1, m

    run(go())


# ---------------------------------------------------------------------------
# exec agents


def test_exec_text_agent_gets_the_request_an_explicit_environment_and_cwd(make_hub):
    hub = start_hub(
        make_hub,
        exec_spec("txt", "text_agent.py"),
        exec_spec("envy", "text_agent.py", "--show-env", opts=";env=PATH,CHORUS_TEST_VISIBLE,NOT_SET_ANYWHERE;cwd=/tmp"),
        exec_spec("req", "text_agent.py", "--show-request", opts=";system=Sys prompt;format=text"),
        exec_spec("auto", "text_agent.py", "--show-request"),
        exec_spec("utf", "text_agent.py", "--split-utf8"),
        env={"CHORUS_TEST_VISIBLE": "1", "CHORUS_TEST_HIDDEN": "1"})

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("ex")
        await prompt(c, "ex", "hi there", "txt")
        frames = await collect(c)
        check_complete(frames, "exec says: hi there", "txt")
        assert len(chunks_of(frames)) >= 2
        await prompt(c, "ex", "env please", "envy")
        frames = await collect(c)
        reply = frames[-2]["message"]["content"]
        names, _, cwd = reply.partition(" cwd=")
        names = set(names[len("env="):].split(","))
        assert {"PATH", "CHORUS_TEST_VISIBLE"} <= names and "CHORUS_TEST_HIDDEN" not in names, reply
        assert names - {"PATH", "CHORUS_TEST_VISIBLE", "LC_CTYPE"} == set(), reply  # python may add LC_CTYPE
        assert os.path.realpath(cwd) == os.path.realpath("/tmp"), reply
        await prompt(c, "ex", "what did you get?", "req")
        frames = await collect(c)
        import json
        got = json.loads(frames[-2]["message"]["content"])
        assert got == {"agent": "req", "conversationId": "ex", "system": "Sys prompt",
                       "roles": ["user", "assistant", "user", "assistant", "user"], "last": "what did you get?"}
        # the same reply without format=text: a JSON line that is not the protocol's is an error
        await prompt(c, "ex", "auto-detected", "auto")
        check_error(await collect(c), "agent process wrote a JSON line without delta, error, done or usage")
        await prompt(c, "ex", "utf", "utf")
        frames = await collect(c)
        # "é" arrived in two reads, a lone 0xFF byte at the end: one character, one replacement
        check_complete(frames, "caf\u00e9 ok \ufffd", "utf")

    run(go())


@pytest.mark.parametrize("mode,want,error", [
    ("ok", "jsonl says: hi", None),
    ("nodone", "jsonl says: hi", None),
    ("blank", "jsonl says: hi", None),
    ("error", "jsonl sa", "refused by the agent"),
    ("garbage", "json", "agent process wrote a line that is not a JSON object"),
])
def test_exec_json_lines_protocol(make_hub, mode, want, error):
    hub = start_hub(make_hub, exec_spec("jl", "jsonl_agent.py", "--mode", mode))

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("j")
        await prompt(c, "j", "hi", "jl")
        frames = await collect(c)
        if error:
            assert check_error(frames, error, partial=want) == error
        else:
            check_complete(frames, want, "jl")

    run(go())


def test_exec_usage_lines_are_accounted_and_absurd_counts_left_out(make_hub):
    hub = start_hub(make_hub, exec_spec("jl", "jsonl_agent.py", "--mode", "ok"),
                    exec_spec("huge", "jsonl_agent.py", "--mode", "hugeusage"))

    async def go():
        c = await Client.connect(hub, "dora:a")
        await c.join("j")
        for agent in ("jl", "huge"):
            await prompt(c, "j", "hi", agent)
            check_complete(await collect(c), "jsonl says: hi", agent)

    run(go())
    users, _, agents = usage(hub)
    parts = len(split_text("jsonl says: hi", 4))
    assert (agents["jl"]["inputTokens"], agents["jl"]["outputTokens"]) == (7, parts), agents
    assert (agents["huge"]["inputTokens"], agents["huge"]["outputTokens"]) == (0, parts), agents
    assert (users["dora"]["inputTokens"], users["dora"]["outputTokens"]) == (7, 2 * parts), users


def test_exec_format_text_passes_json_lines_through_verbatim(make_hub):
    hub = start_hub(make_hub, exec_spec("raw", "jsonl_agent.py", "--mode", "ok", opts=";format=text"))

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("r")
        await prompt(c, "r", "hi", "raw")
        frames = await collect(c)
        content = frames[-2]["message"]["content"]
        assert content.startswith('{"delta": "json') and content.endswith('{"done": true}\n'), content

    run(go())


def test_exec_crash_is_an_error_with_its_partial_output(make_hub):
    hub = start_hub(make_hub, exec_spec("crash", "crash_agent.py"), "nope=exec:no-such-program-for-chorus-tests")

    async def go():
        c = await Client.connect(hub, "u1:a")
        await c.join("x")
        await prompt(c, "x", "please", "crash")
        err = check_error(await collect(c), "agent process exited with status 3", partial="partial output")
        assert err == "agent process exited with status 3: boom: something broke"
        await prompt(c, "x", "and you?", "nope")
        check_error(await collect(c), "agent could not start", partial="")

    run(go())
    logs = hub.logs()
    assert "stderr: warming up" in logs and "stderr: boom: something broke" in logs
    assert "cannot run no-such-program-for-chorus-tests" in logs


# ---------------------------------------------------------------------------
# configuration and shutdown


@pytest.mark.parametrize("spec,env,message", [
    ("a=openai:m;bogus=1", {}, "unknown option 'bogus'"),
    ("a=openai", {}, "openai needs a model"),
    ("a=openai:m;base-url=ftp://x", {}, "must start with http:// or https://"),
    ("a=anthropic:m;base-url=ftp://x;version=bad version", {}, "must start with http:// or https://"),
    ("a=anthropic:m;base-url=http://x;version=bad version", {}, "version 'bad version' is not a header value"),
    ("a=echo;max-queue=100001", {}, "option max-queue = '100001' is out of range"),
    ("a=openai:m;max-tokens=0", {}, "max-tokens"),
    ("a=anthropic:claude-x", {"ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY"),
    ("a=exec:/no/such/program", {}, "/no/such/program"),
    ("a=exec:'unterminated", {}, "exec needs a command line"),
    ("a=exec:/bin/true;format=xml", {}, "format must be auto, text or jsonl"),
    ("a=exec:/bin/true;cwd=/no/such/dir", {}, "is not a directory"),
    ("a=exec:/bin/true;env=A=B", {}, "env= takes variable names"),
])
def test_bad_agent_specs_refuse_to_start(spec, env, message):
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([CHORUS_BIN, "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", d,
                            "--agent", spec], capture_output=True, text=True, timeout=20,
                           env=dict(os.environ, **env))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert message in r.stderr, r.stderr


def test_shutdown_mid_stream_exits_cleanly_and_ends_every_upstream(make_hub, openai_up, anthropic_up):
    with tempfile.TemporaryDirectory() as d:
        pidfile = os.path.join(d, "pid")
        hub = start_hub(make_hub, oa("gpt", "endless,ms=50", openai_up), an("claude", "endless,ms=50", anthropic_up),
                        exec_spec("forever", "forever_agent.py", pidfile, "--ignore-term", opts=";kill-grace=500"),
                        env=KEYS)

        async def go():
            c = await Client.connect(hub, "u1:a")
            await c.join("z")
            for a in ("gpt", "claude", "forever"):
                await prompt(c, "z", "run", a)
            seen = set()
            while len(seen) < 3:
                f = await c.expect("stream", pred=lambda f: f.get("op") == "chunk")
                seen.add(f["streamId"])

        run(go())
        pid = int(open(pidfile).read())
        t0 = time.monotonic()
        assert hub.stop() == 0, hub.logs()
        assert time.monotonic() - t0 < 8
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert openai_up.wait_for(lambda u: u.disconnects == 1)
    assert anthropic_up.wait_for(lambda u: u.disconnects == 1)


# ---------------------------------------------------------------------------
# usage: tokens per user and per API key


def usage(hub):
    st, _, raw = http(hub, "GET", "/api/admin/usage", token=hub.token())
    assert st == 200, raw
    d = json.loads(raw)["data"]
    return ({u["userId"]: u for u in d["users"]}, {k["keyId"]: k for k in d["apiKeys"]},
            {a["agent"]: a for a in d["agents"]})


def test_upstream_tokens_go_to_the_prompts_user_and_api_key_on_every_path(make_hub, openai_up, anthropic_up):
    """OpenAI reports 11 prompt tokens and one completion token a chunk (of 4 chars), Anthropic 9 and
    the same; each reply counts for the user who sent the prompt and the API key it came with."""
    hub = start_hub(make_hub, oa("gpt", "ok,ms=5", openai_up), an("claude", "ok,ms=5", anthropic_up), env=KEYS)
    key = apikey(hub, "alice")
    kid = key.split("_")[1]
    want = {}  # who -> [requests, chars, tokens in, tokens out]

    def spent(who, kind, prompt_text):
        reply = "Reply to: " + prompt_text
        w = want.setdefault(who, [0, 0, 0, 0])
        for i, v in enumerate((1, len(reply), 11 if kind == "gpt" else 9, len(split_text(reply, 4)))):
            w[i] += v
        return reply

    async def go():
        # native /ws with the API key, naming the agent
        a = await Client.connect(hub, key, source="phone")
        await a.join("w1")
        for agent, text in (("gpt", "hello"), ("claude", "hi")):
            await prompt(a, "w1", text, agent)
            check_complete(await collect(a), spent("alice", agent, text), agent)
        # REST post to a conversation whose agent is claude, watched on /ws
        st, _, _ = http(hub, "POST", "/api/conversations", {"id": "r1", "agent": "claude"}, key)
        assert st == 201
        await a.join("r1")
        st, _, _ = http(hub, "POST", "/api/conversations/r1/messages", {"content": "yo"}, key)
        assert st == 201
        check_complete(await collect(a), spent("alice", "claude", "yo"), "claude")
        # POST /api/chat: a new conversation, answered by the first agent (gpt)
        st, _, raw = http(hub, "POST", "/api/chat", {"message": "abc", "conversationId": "h1"}, key)
        assert st == 200 and b'"type":"done"' in raw, raw
        spent("alice", "gpt", "abc")
        # agent-ws with the key
        ws = await websockets.connect(hub.ws_url("/api/claude/ws"), compression=None, open_timeout=10)
        await ws.send(key)
        assert await asyncio.wait_for(ws.recv(), 10) == "authenticated"
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        await ws.send(json.dumps({"content": "via agent-ws"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "complete":
            pass
        await ws.close()
        spent("alice", "claude", "via agent-ws")
        # a token user: no key
        b = await Client.connect(hub, "bob:phone")
        await b.join("b1")
        await prompt(b, "b1", "x", "gpt")
        check_complete(await collect(b), spent("bob", "gpt", "x"), "gpt")
        # a credential that only names the key as its device charges its own user, not the key
        m = await Client.connect(hub, "mallory:apikey-" + kid)
        await m.join("m1")
        await prompt(m, "m1", "not mine", "gpt")
        check_complete(await collect(m), spent("mallory", "gpt", "not mine"), "gpt")

    run(go())
    users, keys, agents = usage(hub)
    fields = ("requests", "chars", "inputTokens", "outputTokens")
    for who in ("alice", "bob", "mallory"):
        assert [users[who][f] for f in fields] == want[who], (who, users[who], want[who])
    assert list(keys) == [kid], keys
    assert [keys[kid][f] for f in fields] == want["alice"] and keys[kid]["userId"] == "alice", keys
    assert agents["gpt"]["inputTokens"] == 11 * 4 and agents["claude"]["inputTokens"] == 9 * 3, agents
    assert agents["gpt"]["outputTokens"] + agents["claude"]["outputTokens"] == sum(w[3] for w in want.values())
    m = hub.metrics()
    assert m['chorus_agent_user_input_tokens_total{user="alice"}'] == want["alice"][2], m
    assert m['chorus_agent_user_output_tokens_total{user="bob"}'] == want["bob"][3], m
    assert m['chorus_agent_user_requests_total{user="mallory"}'] == 1, m
    assert m['chorus_agent_key_output_tokens_total{key="%s",user="alice"}' % kid] == want["alice"][3], m
    assert m['chorus_agent_key_chars_total{key="%s",user="alice"}' % kid] == want["alice"][1], m
    assert not any(k.startswith("chorus_agent_key_") and kid not in k for k in m), m


def test_tokens_of_a_cancelled_reply_still_count(make_hub, anthropic_up):
    """Anthropic reports the input tokens at message_start: a reply cancelled mid-way is charged them."""
    hub = start_hub(make_hub, an("claude", "endless,ms=30", anthropic_up), env=KEYS)

    async def go():
        c = await Client.connect(hub, "carol:laptop")
        await c.join("k1")
        await prompt(c, "k1", "go on", "claude")
        f = await c.expect("stream", pred=lambda f: f.get("op") == "chunk")
        await c.send({"type": "cancel", "conversationId": "k1", "streamId": f["streamId"], "id": "x"})
        end = (await collect(c, f["streamId"]))[-1]
        assert end["op"] == "error" and end["error"] == "cancelled", end

    run(go())
    users, keys, agents = usage(hub)
    assert users["carol"]["requests"] == 1 and users["carol"]["inputTokens"] == 9, users
    assert users["carol"]["outputTokens"] == 1 and users["carol"]["chars"] > 0, users  # message_start's count
    assert agents["claude"]["inputTokens"] == 9 and keys == {}, (agents, keys)
