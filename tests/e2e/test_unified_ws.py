"""Profile `unified` (CLIENT-PROFILES.md) on /ws, exactly as its clients speak it.

A unified client sends no request ids, never sends `since`, and expects: the welcome
presence frame first; `sync` with the whole history on every join (`data: []` for an
unknown conversation); the broadcast of its own messages with `message.source`; presence
of the others per conversation; typing with `source`. Only the URL differs from its old
set-up: `?token=` is added. The hub may add fields (seq, userId, lastSeq, ...), but every
field the profile names must be there with exactly the value it names.
"""
import re

from chorus_client import Client, is_msg, run

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def subset(frame, want):
    """Assert that frame has every key of want with that exact value."""
    for k, v in want.items():
        assert k in frame and frame[k] == v, f"{k}: expected {v!r}, frame {frame}"


async def unified(hub, source, user="u1", device=None):
    """A unified client: ws://HOST:PORT/ws?source=S&token=... (the token is the only addition)."""
    return await Client.connect(hub, f"{user}:{device or source}", source=source, welcome=False)


def test_first_frame_is_the_presence_welcome(make_hub):
    hub = make_hub("--insecure-dev")

    async def go():
        c = await unified(hub, "test")
        w = await c.recv()
        subset(w, {"type": "presence", "source": "test", "connected": True})
        assert isinstance(w["clientId"], str) and w["clientId"], w
        assert "conversationId" not in w
        await c.quiet(0.3)  # nothing else until the client asks
        d = await unified(hub, "desktop")
        w2 = await d.recv()
        subset(w2, {"type": "presence", "source": "desktop", "connected": True})
        assert w2["clientId"] != w["clientId"]
        await c.quiet(0.3)  # the welcome went only to the new connection
    run(go())


def test_join_unknown_conversation_syncs_empty(make_hub):
    hub = make_hub("--insecure-dev")

    async def go():
        c = await unified(hub, "test")
        await c.recv()
        await c.send({"type": "join", "conversationId": "test-123"})
        s = await c.recv()
        subset(s, {"type": "sync", "conversationId": "test-123", "data": []})
        await c.quiet(0.3)
    run(go())


def test_message_is_echoed_to_sender_with_source_and_filled_fields(make_hub):
    hub = make_hub("--insecure-dev")

    async def go():
        c = await unified(hub, "test")
        web = await unified(hub, "web")
        await c.recv()
        await web.recv()
        for x in (c, web):
            await x.send({"type": "join", "conversationId": "test-123"})
            assert (await x.expect("sync"))["data"] == []
        await c.frames_for(0.2)

        await c.send({"type": "message", "conversationId": "test-123",
                      "message": {"role": "user", "content": "Hello"}})
        for x in (c, web):
            m = await x.expect("message")
            subset(m, {"type": "message", "conversationId": "test-123"})
            msg = m["message"]
            subset(msg, {"role": "user", "content": "Hello", "source": "test", "conversationId": "test-123"})
            assert isinstance(msg["id"], str) and msg["id"], msg
            assert ISO.match(msg["timestamp"]), msg
        # No ack (the client sent no id), no second copy.
        await c.quiet(0.4)
        await web.quiet(0.1)

        # The desktop client's full message object: every field kept as sent.
        full = {"id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "conversationId": "test-123", "role": "assistant",
                "content": "Hi from the desktop", "source": "desktop",
                "context": {"hasScreen": True, "hasVoice": False, "appName": "Xcode", "metadata": {"k": "v"}},
                "timestamp": "2025-11-18T12:08:00.000Z"}
        await web.send({"type": "message", "conversationId": "test-123", "message": full})
        for x in (c, web):
            m = await x.expect("message")
            subset(m["message"], full)
        await c.quiet(0.3)
        await web.quiet(0.1)

        # Without its own source, a message takes the connection's ?source=.
        await web.send({"type": "message", "conversationId": "test-123", "message": {"role": "user", "content": "w"}})
        assert (await c.expect("message"))["message"]["source"] == "web"
        assert (await web.expect("message"))["message"]["source"] == "web"
    run(go())


def test_sync_on_join_carries_the_whole_history_in_order(make_hub):
    hub = make_hub("--insecure-dev")
    n = 300

    async def go():
        sources = ["desktop", "web", "iphone", "chatgpt"]
        cs = [await unified(hub, s) for s in sources]
        for x in cs:
            await x.recv()
            await x.send({"type": "join", "conversationId": "hist"})
            await x.expect("sync")
        sent = []
        for i in range(n):
            k = i % len(sources)
            role = "assistant" if k == 3 else "user"
            await cs[k].send({"type": "message", "conversationId": "hist",
                              "message": {"role": role, "content": f"#{i} from {sources[k]}"}})
            sent.append((sources[k], role, f"#{i} from {sources[k]}"))
            # Wait for its own echo, as the UIs do, so the order of the history is known.
            m = await cs[k].expect("message", pred=lambda f: f["message"]["content"] == sent[-1][2])
            assert m["message"]["source"] == sources[k]

        late = await unified(hub, "web", device="late")
        await late.recv()
        await late.send({"type": "join", "conversationId": "hist"})
        s = await late.expect("sync")
        got = [(e["source"], e["role"], e["content"]) for e in s["data"]]
        assert got == sent, "sync is not the whole history in order"
        ids = [e["id"] for e in s["data"]]
        assert len(set(ids)) == n and all(e["conversationId"] == "hist" for e in s["data"])

        # A client that joins after the history keeps getting live messages.
        listener = await unified(hub, "web", device="listener")
        await listener.recv()
        await listener.send({"type": "join", "conversationId": "hist"})
        await listener.expect("sync")
        await cs[0].send({"type": "message", "conversationId": "hist", "message": {"role": "user", "content": "tail"}})
        m = await listener.expect("message")
        assert m["message"]["content"] == "tail"
        await listener.quiet(0.3, is_msg)
    run(go())


def test_every_listener_gets_every_message_once_in_order(make_hub):
    hub = make_hub("--insecure-dev")

    async def go():
        listeners = [await unified(hub, s, device=f"l{i}") for i, s in enumerate(["desktop", "web", "iphone"])]
        writer = await unified(hub, "chatgpt")
        for x in listeners + [writer]:
            await x.recv()
            await x.send({"type": "join", "conversationId": "fan"})
            await x.expect("sync")
        for i in range(100):
            await writer.send({"type": "message", "conversationId": "fan",
                               "message": {"role": "assistant", "content": f"n{i}"}})
        for x in listeners + [writer]:
            got = []
            while len(got) < 100:
                f = await x.recv()
                if is_msg(f):
                    got.append(f["message"]["content"])
            assert got == [f"n{i}" for i in range(100)]
            await x.quiet(0.3, is_msg)
    run(go())


def test_presence_to_others_on_join_leave_and_drop(make_hub):
    hub = make_hub("--insecure-dev")

    def pres(f):
        return f["type"] == "presence" and f.get("conversationId") == "test-123"

    async def go():
        a = await unified(hub, "desktop")
        wa = await a.recv()
        await a.send({"type": "join", "conversationId": "test-123"})
        await a.expect("sync")

        b = await unified(hub, "web")
        wb = await b.recv()
        await a.quiet(0.3)  # b's welcome is b's alone
        await b.send({"type": "join", "conversationId": "test-123"})
        await b.expect("sync")
        p = await a.recv()
        subset(p, {"type": "presence", "conversationId": "test-123", "clientId": wb["clientId"],
                   "source": "web", "connected": True})
        await b.quiet(0.3, pres)  # not told about itself

        c = await unified(hub, "iphone")
        wc = await c.recv()
        await c.send({"type": "join", "conversationId": "test-123"})
        await c.expect("sync")
        for x in (a, b):
            subset(await x.recv(), {"type": "presence", "conversationId": "test-123", "clientId": wc["clientId"],
                                    "source": "iphone", "connected": True})

        await b.send({"type": "leave", "conversationId": "test-123"})
        for x in (a, c):
            subset(await x.recv(), {"type": "presence", "conversationId": "test-123", "clientId": wb["clientId"],
                                    "source": "web", "connected": False})
        await c.drop()
        subset(await a.recv(), {"type": "presence", "conversationId": "test-123", "clientId": wc["clientId"],
                                "source": "iphone", "connected": False})
        await b.quiet(0.3)  # b left the room: nothing about it any more

        # A socket that closes normally counts as gone too.
        await b.send({"type": "join", "conversationId": "test-123"})
        await b.expect("sync")
        subset(await a.recv(), {"type": "presence", "clientId": wb["clientId"], "connected": True})
        await b.close()
        subset(await a.recv(), {"type": "presence", "clientId": wb["clientId"], "connected": False})
        await a.quiet(0.3)
        assert wa["clientId"] not in (wb["clientId"], wc["clientId"])
    run(go())


def test_typing_reaches_the_others_with_source(make_hub):
    hub = make_hub("--insecure-dev")

    async def go():
        a = await unified(hub, "desktop")
        b = await unified(hub, "web")
        for x in (a, b):
            await x.recv()
            await x.send({"type": "join", "conversationId": "test-123"})
            await x.expect("sync")
        await a.frames_for(0.2)
        await a.send({"type": "typing", "conversationId": "test-123"})
        t = await b.expect("typing")
        subset(t, {"type": "typing", "conversationId": "test-123", "source": "desktop"})
        await a.quiet(0.3)
    run(go())
