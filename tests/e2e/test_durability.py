"""History survives the hub: a clean restart, and kill -9 in the middle of a send storm.

The contract under test (docs/PROTOCOL.md): a message is acknowledged only after its commit,
so every acknowledged message is in the history after any crash; message.id is the
idempotency key, so retrying everything a client ever sent after the crash stores each
message exactly once.
"""
import asyncio
import signal

import websockets

from chorus_client import Client, run


def seqs(evs):
    return [e["seq"] for e in evs]


PAYLOADS = [
    lambda i: {"content": f"plain {i}"},
    lambda i: {"content": f"héllo wörld ✓ 😀 {i}", "role": "assistant"},
    lambda i: {"content": f"quotes \" and \\ backslash\nnew line\ttab {i}"},
    lambda i: {"content": f"ctx {i}", "context": {"hasScreen": True, "hasVoice": False, "appName": "Xcode",
                                                 "metadata": {"k": "v", "n": i, "list": [1, 2.5, None]}}},
    lambda i: {"content": f"explicit {i}", "id": f"explicit-{i}", "timestamp": "2025-11-18T12:08:00.000Z",
               "source": "chatgpt"},
    lambda i: {"content": "", "extra": {"nested": {"deep": [i, str(i)]}}},
]


def test_history_survives_a_restart_intact_and_in_order(make_hub):
    hub = make_hub("--insecure-dev")

    async def before():
        cs = [await Client.connect(hub, "u1:desk", source="desktop"),
              await Client.connect(hub, "u1:web", source="web"),
              await Client.connect(hub, "u1:phone", source="iphone")]
        for i in range(150):
            c = cs[i % 3]
            fields = PAYLOADS[i % len(PAYLOADS)](i)
            content = fields.pop("content")
            ack = await c.send_message("keep" if i % 5 else "keep-other", content, **fields)
            assert ack["duplicate"] is False
        r = await Client.connect(hub, "u1:reader")
        s1, s2 = await r.join("keep"), await r.join("keep-other")
        assert seqs(s1["data"]) == list(range(1, 121)) and seqs(s2["data"]) == list(range(1, 31))
        return s1, s2

    s1, s2 = run(before())
    assert hub.stop() == 0, hub.logs()
    hub.start()

    async def after():
        c = await Client.connect(hub, "u1:new", source="web")
        n1 = await c.join("keep")
        n2 = await c.join("keep-other")
        for old, new in ((s1, n1), (s2, n2)):
            assert new["data"] == old["data"], "history changed across the restart"
            assert new["epoch"] == old["epoch"] and new["lastSeq"] == old["lastSeq"]
            assert not new.get("truncated") and not new.get("reset")
        # The fields each client sent are kept as sent.
        ev = n1["data"][3]  # i = 4: explicit id, timestamp and source
        assert ev["id"] == "explicit-4" and ev["timestamp"] == "2025-11-18T12:08:00.000Z" and ev["source"] == "chatgpt"
        ctx = [e for e in n1["data"] if e["content"] == "ctx 3"][0]
        assert ctx["context"]["metadata"] == {"k": "v", "n": 3, "list": [1, 2.5, None]}
        # Numbering continues; a resume across the restart gets exactly the tail.
        ack = await c.send_message("keep", "after restart")
        assert ack["seq"] == 121
        t = await c.join("keep", since=115, epoch=s1["epoch"])
        assert seqs(t["data"]) == list(range(116, 122)) and not t.get("reset")
        assert t["data"][:-1] == s1["data"][-5:]
    run(after())


def test_kill_9_during_send_storm_loses_no_acknowledged_message(make_hub):
    hub = make_hub("--insecure-dev", threads=2)
    senders = [("alice:d1", "storm-a"), ("alice:d2", "storm-a"), ("bob:d1", "storm-b"), ("bob:d2", "storm-b")]
    owner = {"storm-a": "alice:check", "storm-b": "bob:check"}
    sent = {}   # message id -> (conversation, content), recorded before the send
    acked = {}  # message id -> seq
    kill_after = 1500

    async def storm():
        clients = [await Client.connect(hub, tok, source="desktop") for tok, _ in senders]
        killed = asyncio.Event()

        async def sender(i, c, conv):
            window = asyncio.Semaphore(16)
            closed = asyncio.Event()

            async def reader():
                try:
                    while True:
                        f = await c.recv(30)
                        assert f["type"] == "ack", f
                        assert f["duplicate"] is False and f["conversationId"] == conv, f
                        acked[f["clientId"]] = f["seq"]
                        window.release()
                except (websockets.ConnectionClosed, ConnectionError):
                    pass
                finally:
                    closed.set()

            rt = asyncio.create_task(reader())
            k = 0
            try:
                while not closed.is_set():
                    acquire = asyncio.create_task(window.acquire())
                    done, _ = await asyncio.wait({acquire, asyncio.create_task(closed.wait())},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if acquire not in done:
                        acquire.cancel()
                        break
                    mid = f"s{i}-{k}"
                    content = f"storm {i} {k} " + "x" * (k % 50)
                    sent[mid] = (conv, content)
                    await c.send(c.message_request(conv, content, msg_id=mid, rid=mid))
                    k += 1
            except (websockets.ConnectionClosed, ConnectionError):
                pass
            await rt

        async def killer():
            while len(acked) < kill_after:
                await asyncio.sleep(0.002)
            hub.proc.send_signal(signal.SIGKILL)
            killed.set()

        await asyncio.gather(killer(), *(sender(i, c, conv) for i, (c, (_, conv)) in enumerate(zip(clients, senders))))
        assert killed.is_set()

    run(storm(), timeout=90)
    assert hub.stop() == -signal.SIGKILL
    assert len(acked) >= kill_after
    assert len(sent) > len(acked), "the kill did not catch any send in flight"
    hub.start()

    async def check():
        stored = {}
        for conv, tok in owner.items():
            c = await Client.connect(hub, tok)
            s = await c.join(conv)
            data = s["data"]
            assert seqs(data) == list(range(1, len(data) + 1)) and s["lastSeq"] == len(data), \
                f"{conv}: seqs not 1..N after the crash"
            ids = [e["id"] for e in data]
            assert len(ids) == len(set(ids)), f"{conv}: a message id is stored twice"
            for e in data:
                assert e["id"] in sent and sent[e["id"]] == (conv, e["content"]), e
                stored[e["id"]] = e["seq"]
        print(f"sent {len(sent)}, acknowledged {len(acked)}, stored {len(stored)}")
        lost = [m for m in acked if m not in stored]
        assert not lost, f"{len(lost)} acknowledged messages lost, e.g. {lost[:5]}"
        moved = [m for m in acked if stored[m] != acked[m]]
        assert not moved, f"acknowledged seq changed: {[(m, acked[m], stored[m]) for m in moved[:5]]}"

        # The clients' offline queues: retry everything ever sent, with the same ids.
        for i, (tok, conv) in enumerate(senders):
            c = await Client.connect(hub, tok, source="desktop")
            mine = [m for m in sent if m.startswith(f"s{i}-")]
            for m in mine:
                await c.send(c.message_request(conv, sent[m][1], msg_id=m, rid=m))
            for _ in mine:
                f = await c.recv(15)
                assert f["type"] == "ack", f
                m = f["clientId"]
                if m in stored:
                    assert f["duplicate"] is True and f["seq"] == stored[m], (f, stored[m])
                else:
                    assert f["duplicate"] is False, f
        for conv, tok in owner.items():
            c = await Client.connect(hub, tok)
            data = (await c.join(conv))["data"]
            assert seqs(data) == list(range(1, len(data) + 1))
            ids = [e["id"] for e in data]
            want = sorted(m for m, (cv, _) in sent.items() if cv == conv)
            assert sorted(ids) == want, f"{conv}: after the retries, not every message exactly once"
    run(check(), timeout=90)
