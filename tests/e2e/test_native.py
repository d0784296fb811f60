"""Conversation sync over the native protocol on /ws (docs/PROTOCOL.md), black box.

Every test starts its own hub (with --insecure-dev, so "user:device" is a credential
unless a test says otherwise) and talks to it with real WebSocket clients
(chorus_client.Client). Covered: real-time fan-out exactly once, resume after a drop
with since/epoch, the join/flood race, idempotent sends, access control and claims,
presence across tabs, typing relay and its rate limit, error frames, in-band auth,
refused upgrades, signed tokens from `chorus token`.
"""
import asyncio
import json
import subprocess
import time

import pytest
import websockets

from chorus_client import Client, is_msg, presence_of, run, ws_path
from conftest import CHORUS_BIN
from rawws import http_exchange, ws_handshake_request


@pytest.fixture
def dev_hub(make_hub):
    return make_hub("--insecure-dev")


def seqs(frames):
    return [f["seq"] for f in frames]


# ---------------------------------------------------------------------------
# Real time, exactly once


def test_two_clients_see_each_others_messages_once_in_real_time(dev_hub):
    async def go():
        a = await Client.connect(dev_hub, "u1:laptop", source="desktop")
        b = await Client.connect(dev_hub, "u1:phone", source="iphone")
        await a.join("room-1")
        await b.join("room-1")
        assert (await a.expect("presence"))["clientId"] == b.client_id

        plan = [(a, "desktop", f"from a {i}") if i % 3 else (b, "iphone", f"from b {i} ✓")
                for i in range(30)]
        for sender, _, text in plan:
            t0 = time.monotonic()
            ack = await sender.send_message("room-1", text)
            # Both clients (the sender too) get the broadcast, promptly.
            for c in (a, b):
                m = await c.expect("message", timeout=5)
                assert m["message"]["content"] == text, m
                assert m["seq"] == m["message"]["seq"] == ack["seq"], (m, ack)
            assert time.monotonic() - t0 < 2.0, "a message took more than 2 s to reach the room"

        # Nothing more arrives: each message was delivered exactly once.
        for c in (a, b):
            await c.quiet(0.5, is_msg)

        # Broadcasts carry the filled fields; seqs are 1..30.
        hist = (await Client.connect(dev_hub, "u1:tablet"))
        sync = await hist.join("room-1")
        assert seqs(sync["data"]) == list(range(1, 31))
        for (_, source, text), ev in zip(plan, sync["data"]):
            assert ev["content"] == text and ev["source"] == source and ev["userId"] == "u1", ev
            assert ev["id"] and ev["timestamp"] and ev["conversationId"] == "room-1" and ev["role"] == "user"
        for c in (a, b, hist):
            await c.close()
    run(go())


def test_concurrent_senders_each_message_exactly_once_everywhere(dev_hub):
    """Four clients send at once without waiting; each sees all messages once, in seq order."""
    n_each = 50

    async def go():
        cs = [await Client.connect(dev_hub, f"u1:d{i}", source=f"s{i}") for i in range(4)]
        for c in cs:
            await c.join("busy")

        async def blast(i, c):
            for k in range(n_each):
                await c.send(c.message_request("busy", f"{i}-{k}", msg_id=f"busy-{i}-{k}"))

        async def collect(c):
            got = []
            while len(got) < 4 * n_each:
                f = await c.recv(10)
                if is_msg(f):
                    got.append(f)
            await c.quiet(0.3, is_msg)
            return got

        collectors = [asyncio.create_task(collect(c)) for c in cs]
        await asyncio.gather(*(blast(i, c) for i, c in enumerate(cs)))
        results = await asyncio.gather(*collectors)
        for got in results:
            assert seqs(got) == list(range(1, 4 * n_each + 1)), seqs(got)
            ids = [f["message"]["id"] for f in got]
            assert len(set(ids)) == len(ids)
        # Everyone saw the same order.
        first = [f["message"]["id"] for f in results[0]]
        for got in results[1:]:
            assert [f["message"]["id"] for f in got] == first
        # Per sender, in send order.
        for i in range(4):
            mine = [int(x.split("-")[2]) for x in first if x.startswith(f"busy-{i}-")]
            assert mine == list(range(n_each))
        for c in cs:
            await c.close()
    run(go())


# ---------------------------------------------------------------------------
# Resume after a drop


def test_reconnect_with_since_gets_exactly_the_missed_1000(dev_hub):
    async def go():
        writer = await Client.connect(dev_hub, "u1:desk", source="desktop")
        for i in range(5):
            await writer.send_message("resume", f"before {i}")
        reader = await Client.connect(dev_hub, "u1:phone", source="iphone")
        sync = await reader.join("resume")
        assert seqs(sync["data"]) == [1, 2, 3, 4, 5]
        epoch = sync["epoch"]
        assert isinstance(epoch, str) and epoch
        last = sync["data"][-1]["seq"]
        await reader.drop()

        # 1,000 messages while the reader is away (pipelined; every one acknowledged).
        rids = {}
        for i in range(1000):
            req = writer.message_request("resume", f"missed {i}", msg_id=f"missed-{i}", rid=f"w{i}")
            rids[f"w{i}"] = i
            await writer.send(req)
        acks = {}
        while len(acks) < 1000:
            f = await writer.recv(15)
            assert f["type"] != "error", f
            if f["type"] == "ack":
                acks[rids[f["id"]]] = f["seq"]
        assert sorted(acks.values()) == list(range(6, 1006))

        back = await Client.connect(dev_hub, "u1:phone", source="iphone")
        sync = await back.join("resume", since=last, epoch=epoch, rid="j1")
        assert sync.get("id") == "j1"
        assert not sync.get("reset"), sync.get("reset")
        assert sync["epoch"] == epoch and sync["lastSeq"] == 1005 and sync.get("since") == last
        data = sync["data"]
        assert seqs(data) == list(range(6, 1006)), "gap or duplicate in the catch-up"
        assert [d["content"] for d in data] == [f"missed {i}" for i in range(1000)]
        assert all(acks[i] == data[i]["seq"] for i in range(1000))

        # Then live messages continue without a gap, none twice.
        for i in range(20):
            await writer.send(writer.message_request("resume", f"live {i}"))
        live = []
        while len(live) < 20:
            f = await back.recv(10)
            if is_msg(f):
                live.append(f)
        assert seqs(live) == list(range(1006, 1026))
        assert [f["message"]["content"] for f in live] == [f"live {i}" for i in range(20)]
        await back.quiet(0.3, is_msg)
        await writer.close()
        await back.close()
    run(go(), timeout=90)


def test_resume_with_foreign_epoch_or_future_seq_resets(dev_hub):
    async def go():
        c = await Client.connect(dev_hub, "u1:d1")
        for i in range(10):
            await c.send_message("ep", f"m{i}")
        s = await c.join("ep", since=3, epoch="not-this-history")
        assert s.get("reset") is True and seqs(s["data"]) == list(range(1, 11)), s
        s = await c.join("ep", since=50, epoch=None)
        assert s.get("reset") is True and seqs(s["data"]) == list(range(1, 11)), s
        s = await c.join("ep", since=7, epoch=s["epoch"])
        assert not s.get("reset") and seqs(s["data"]) == [8, 9, 10], s
        s = await c.join("ep", limit=4)
        assert seqs(s["data"]) == [7, 8, 9, 10] and s.get("truncated") is True, s
        await c.close()
    run(go())


def test_resume_past_the_sync_cap_is_never_a_silent_gap(dev_hub):
    """More missed events than one sync carries (the hub's cap, 10,000): the catch-up may be
    cut, but then it says so (truncated) and still reaches lastSeq, so live messages follow
    on without a hole the client cannot see."""
    missed = 10050

    async def go():
        w = await Client.connect(dev_hub, "u1:w")
        for i in range(3):
            await w.send_message("cap", f"m{i}")
        r = await Client.connect(dev_hub, "u1:r")
        s = await r.join("cap")
        epoch, last = s["epoch"], s["lastSeq"]
        await r.drop()
        for i in range(missed):
            await w.send(w.message_request("cap", f"x{i}", rid=f"x{i}"))
        for _ in range(missed):
            f = await w.recv(20)
            assert f["type"] == "ack", f
        r = await Client.connect(dev_hub, "u1:r")
        s = await r.join("cap", since=last, epoch=epoch)
        data = s["data"]
        assert s["lastSeq"] == last + missed
        assert seqs(data) == list(range(data[0]["seq"], s["lastSeq"] + 1)), \
            f"catch-up {data[0]['seq']}..{data[-1]['seq']} stops short of lastSeq {s['lastSeq']}: a silent gap"
        if data[0]["seq"] > last + 1:
            assert s.get("truncated") is True or s.get("reset") is True, \
                f"events {last + 1}..{data[0]['seq'] - 1} left out without truncated/reset"
        await w.send_message("cap", "live")
        m = await r.expect("message")
        assert m["seq"] == s["lastSeq"] + 1
    run(go(), timeout=90)


def test_resume_of_a_conversation_that_does_not_exist_resets(dev_hub):
    """A since beyond lastSeq means the client's history is not this one (the store was
    reset, or the conversation deleted): the reply must say reset, also when nothing exists."""
    async def go():
        c = await Client.connect(dev_hub, "u1:d1")
        s = await c.join("gone-away", since=12)
        assert s["data"] == [] and s.get("reset") is True, s
        s = await c.join("gone-away", since=0)
        assert s["data"] == [] and not s.get("reset"), s
    run(go())


def test_out_of_range_since_and_limit_are_refused_or_reset(dev_hub):
    """Numbers no seq can be (1e30, 1e300) must not reach a C cast: an error frame, or a reset."""
    async def go():
        c = await Client.connect(dev_hub, "u1:d1")
        await c.send_message("big", "one")
        for field, value in (("since", 1e30), ("limit", 1e30), ("since", 1e300), ("since", 2.0 ** 64)):
            await c.send({"type": "join", "conversationId": "big", field: value, "id": "j"})
            f = await c.expect_one_of(("sync", "error"))
            if f["type"] == "error":
                assert f["code"] == "invalid" and f.get("id") == "j", f
            elif field == "since":
                assert f.get("reset") is True and seqs(f["data"]) == [1], f
            else:
                assert seqs(f["data"]) == [1], f
            await c.ping()
    run(go())


def test_join_during_flood_is_gap_free_and_duplicate_free(dev_hub):
    """Racers join with since= while a writer floods; sync.data + live = since+1..N exactly."""
    pre, flood = 200, 3000

    async def go():
        writer = await Client.connect(dev_hub, "u1:writer", source="desktop")
        for i in range(pre):
            await writer.send(writer.message_request("race", f"m{i}", rid=f"p{i}"))
        contents = {}
        while len(contents) < pre:
            f = await writer.recv(10)
            assert f["type"] == "ack", f
            contents[f["seq"]] = f"m{int(f['id'][1:])}"
        epoch = (await writer.join("race", limit=1))["epoch"]
        await writer.leave("race")

        # Racers connect first (spread over the loops), join at chosen moments.
        racers = [await Client.connect(dev_hub, f"u1:r{k}", source="web") for k in range(8)]
        state = {"acked": pre, "final": None}
        lag = {}
        started = asyncio.Event()
        moments = [0, 100, 400, 800, 1200, 1800, 2400, 2900]

        # A windowed flood (at most 8 sends unacknowledged): the hub's inbox stays short, so
        # the racers' joins are read between the flood's commits, not after all of them.
        window = asyncio.Semaphore(8)

        async def flood_send():
            for i in range(pre, pre + flood):
                await window.acquire()
                await writer.send(writer.message_request("race", f"m{i}", rid=f"p{i}"))
                started.set()

        async def flood_acks():
            while len(contents) < pre + flood:
                f = await writer.recv(15)
                assert f["type"] == "ack", f
                contents[f["seq"]] = f"m{int(f['id'][1:])}"
                state["acked"] = max(state["acked"], f["seq"])
                window.release()
            state["final"] = max(contents)

        async def racer(k, r):
            await started.wait()
            while state["acked"] < pre + moments[k]:
                await asyncio.sleep(0.001)
            # since = something already committed, at various distances from the head
            since = None if k == 0 else max(0, state["acked"] - (k * 37) % 300)
            sync = await r.join("race", since=since, epoch=epoch if k % 2 else None)
            assert not sync.get("reset"), sync
            got = list(sync["data"])
            start = 0 if since is None else since
            lag[k] = sync["lastSeq"]
            high = max([start] + seqs(got))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while state["final"] is None or high < state["final"]:
                assert loop.time() < deadline, f"racer {k} stuck at seq {high}"
                try:
                    f = await r.recv(0.5)
                except asyncio.TimeoutError:
                    continue
                if is_msg(f):
                    got.append(f["message"])
                    high = max(high, f["seq"])
            await r.quiet(0.3, is_msg)
            return start, got

        results = await asyncio.gather(flood_send(), flood_acks(),
                                       *(racer(k, r) for k, r in enumerate(racers)))
        final = state["final"]
        assert final == pre + flood
        # The test is about a race: most racers must have joined while the flood was on.
        mid = [k for k, last in lag.items() if last < final - 100]
        print("racers' lastSeq at join:", lag)
        assert len(mid) >= len(racers) // 2, f"the flood ended before the racers joined: {lag}"
        for k, (start, got) in enumerate(results[2:]):
            s = seqs(got)
            dup = len(s) - len(set(s))
            missing = sorted(set(range(start + 1, final + 1)) - set(s))
            assert s == list(range(start + 1, final + 1)), \
                f"racer {k} since={start}: {dup} duplicates, missing {missing[:10]}..., order ok={s == sorted(s)}"
            assert all(g["content"] == contents[g["seq"]] for g in got)
        for c in racers + [writer]:
            await c.close()
    run(go(), timeout=120)


# ---------------------------------------------------------------------------
# Idempotent sends


def test_retried_send_with_same_message_id_is_stored_once(dev_hub):
    async def go():
        a = await Client.connect(dev_hub, "u1:a", source="desktop")
        b = await Client.connect(dev_hub, "u1:b", source="web")
        await a.join("idem")
        await b.join("idem")
        await a.expect("presence")
        first = await a.send_message("idem", "only once", msg_id="m-1")
        assert first["duplicate"] is False and first["clientId"] == "m-1" and first["seq"] == 1, first
        again = await a.send_message("idem", "only once", msg_id="m-1")
        assert again["duplicate"] is True and again["seq"] == first["seq"], again
        assert again["messageId"] == first["messageId"] and again["clientId"] == "m-1", (first, again)

        # A retry from another connection (after a reconnect, from an offline queue).
        a2 = await Client.connect(dev_hub, "u1:a", source="desktop")
        third = await a2.send_message("idem", "only once", msg_id="m-1")
        assert third["duplicate"] is True and third["seq"] == first["seq"], third

        # One broadcast each, for the first send only.
        for c in (a, b):
            got = [f for f in await c.frames_for(0.5) if is_msg(f)]
            assert len(got) == 1 and got[0]["message"]["id"] == "m-1", got
        await a2.quiet(0.2, is_msg)

        # The next message gets the next seq: the retries consumed none.
        nxt = await a.send_message("idem", "next", msg_id="m-2")
        assert nxt["seq"] == 2 and nxt["duplicate"] is False, nxt

        s = await (await Client.connect(dev_hub, "u1:c")).join("idem")
        assert [d["id"] for d in s["data"]] == ["m-1", "m-2"], s["data"]
    run(go())


# ---------------------------------------------------------------------------
# Access control


def test_other_users_conversation_is_forbidden(dev_hub):
    async def go():
        alice = await Client.connect(dev_hub, "alice:laptop")
        bob = await Client.connect(dev_hub, "bob:laptop")
        await alice.send_message("alice-private", "secret")
        await alice.join("alice-private")

        await bob.send({"type": "join", "conversationId": "alice-private", "id": "j1"})
        e = await bob.recv()
        assert e["type"] == "error" and e["code"] == "forbidden" and e.get("id") == "j1", e
        await bob.send(bob.message_request("alice-private", "intrusion", rid="m1"))
        e = await bob.recv()
        assert e["type"] == "error" and e["code"] == "forbidden" and e.get("id") == "m1", e
        await bob.ping()  # still connected

        # Bob is not subscribed and nothing of his was stored.
        await alice.send_message("alice-private", "still secret")
        await bob.quiet(0.4)
        s = await alice.join("alice-private")
        assert [d["content"] for d in s["data"]] == ["secret", "still secret"]
        assert all(p["userId"] == "alice" for p in s["presence"]), s["presence"]
    run(go())


def test_claimed_conversation_cannot_be_taken_by_another_user(dev_hub):
    async def go():
        alice = await Client.connect(dev_hub, "alice:laptop")
        bob = await Client.connect(dev_hub, "bob:laptop")
        s = await alice.join("not-yet")
        assert s["data"] == []

        await bob.send({"type": "join", "conversationId": "not-yet", "id": "j1"})
        e = await bob.recv()
        assert e["type"] == "error" and e["code"] == "forbidden" and e.get("id") == "j1", e
        await bob.send(bob.message_request("not-yet", "mine now", rid="m1"))
        e = await bob.recv()
        assert e["type"] == "error" and e["code"] == "forbidden" and e.get("id") == "m1", e

        # Alice is alone in the room: she saw no presence and no message from bob.
        await alice.quiet(0.3)
        ack = await alice.send_message("not-yet", "created")
        assert ack["seq"] == 1
        await bob.send({"type": "join", "conversationId": "not-yet", "id": "j2"})
        e = await bob.recv()
        assert e["type"] == "error" and e["code"] == "forbidden", e
        await bob.quiet(0.3)

        # Another device of alice's may join.
        alice2 = await Client.connect(dev_hub, "alice:phone")
        s = await alice2.join("not-yet")
        assert [d["content"] for d in s["data"]] == ["created"]
    run(go())


# ---------------------------------------------------------------------------
# Presence


def test_presence_across_three_tabs(dev_hub):
    conv = "tabs"
    pres = presence_of(conv)

    async def go():
        t1 = await Client.connect(dev_hub, "u1:browser", source="web")
        s1 = await t1.join(conv)
        assert [p["clientId"] for p in s1["presence"]] == [t1.client_id]

        t2 = await Client.connect(dev_hub, "u1:browser", source="web")
        assert t2.client_id != t1.client_id
        await t1.quiet(0.3)  # the welcome went to t2 only
        s2 = await t2.join(conv)
        assert sorted(p["clientId"] for p in s2["presence"]) == sorted([t1.client_id, t2.client_id])
        p = await t1.recv()
        assert pres(p) and p["clientId"] == t2.client_id and p["connected"] is True, p
        assert p["userId"] == "u1" and p["source"] == "web" and p["timestamp"], p

        t3 = await Client.connect(dev_hub, "u1:browser", source="desktop")
        await t1.quiet(0.2)
        await t2.quiet(0.2)
        await t3.join(conv)
        for t in (t1, t2):
            p = await t.recv()
            assert pres(p) and p["clientId"] == t3.client_id and p["connected"] is True, p
            assert p["source"] == "desktop"
        await t3.quiet(0.3)  # no presence frame about itself

        await t2.leave(conv)
        for t in (t1, t3):
            p = await t.recv()
            assert pres(p) and p["clientId"] == t2.client_id and p["connected"] is False, p
        await t2.quiet(0.3)

        await t3.drop()
        p = await t1.recv()
        assert pres(p) and p["clientId"] == t3.client_id and p["connected"] is False, p
        await t2.quiet(0.3)  # t2 left: it hears nothing of the room any more

        await t1.close()
        await t2.quiet(0.3)
        t4 = await Client.connect(dev_hub, "u1:browser", source="web")
        s4 = await t4.join(conv)
        assert [p["clientId"] for p in s4["presence"]] == [t4.client_id], s4["presence"]
    run(go())


# ---------------------------------------------------------------------------
# Typing


def test_typing_is_relayed_to_others_and_rate_limited(dev_hub):
    async def go():
        a = await Client.connect(dev_hub, "u1:a", source="desktop")
        b = await Client.connect(dev_hub, "u1:b", source="web")
        c = await Client.connect(dev_hub, "u1:c", source="iphone")
        await a.send({"type": "typing", "conversationId": "ty", "id": "t0"})
        e = await a.recv()
        assert e["type"] == "error" and e["code"] == "not_joined" and e.get("id") == "t0", e
        for x in (a, b, c):
            await x.join("ty")
        await asyncio.sleep(0.3)
        for x in (a, b):
            await x.frames_for(0.1)  # presence of later joiners

        await a.send({"type": "typing", "conversationId": "ty"})
        for x in (b, c):
            t = await x.expect("typing", timeout=5)
            assert t["conversationId"] == "ty" and t["clientId"] == a.client_id, t
            assert t["source"] == "desktop" and t["userId"] == "u1" and t["typing"] is True, t
        await a.quiet(0.5, lambda f: f["type"] == "typing")

        await asyncio.sleep(1.1)
        t0 = time.monotonic()
        for _ in range(30):
            await a.send({"type": "typing", "conversationId": "ty"})
            await asyncio.sleep(0.003)
        assert time.monotonic() - t0 < 0.5
        got = [f for f in await b.frames_for(1.2) if f["type"] == "typing"]
        assert 1 <= len(got) <= 2, f"{len(got)} typing frames relayed for a burst of 30"

        # Start/stop pairs are no way around the limit.
        await asyncio.sleep(1.1)
        for i in range(30):
            await a.send({"type": "typing", "conversationId": "ty", "typing": i % 2 == 1})
            await asyncio.sleep(0.003)
        got = [f for f in await b.frames_for(1.2) if f["type"] == "typing"]
        assert 1 <= len(got) <= 3, f"{len(got)} typing frames relayed for 30 start/stop signals in 100 ms"
        assert got[-1]["typing"] is False, "the last relayed state must be the client's last (stopped)"

        # Never stored.
        s = await (await Client.connect(dev_hub, "u1:z")).join("ty")
        assert s["data"] == []
    run(go())


def test_custom_event_is_relayed_not_stored(dev_hub):
    async def go():
        a = await Client.connect(dev_hub, "u1:a", source="desktop")
        b = await Client.connect(dev_hub, "u1:b", source="web")
        await a.join("ev")
        await b.join("ev")
        await a.send({"type": "event", "conversationId": "ev", "event": "progress", "payload": {"pct": 40}})
        e = await b.expect("event")
        assert e["event"] == "progress" and e["payload"] == {"pct": 40} and e["clientId"] == a.client_id, e
        await a.quiet(0.3, lambda f: f["type"] == "event")
        assert (await b.join("ev"))["data"] == []
    run(go())


# ---------------------------------------------------------------------------
# Errors


def test_bad_requests_get_error_frames_and_the_connection_stays_open(dev_hub):
    cases = [
        ("{not json", None, "invalid_json"),
        ("[1,2,3]", None, "invalid_json"),
        ('"just a string"', None, "invalid_json"),
        ({"id": "e1", "conversationId": "err"}, "e1", "invalid"),  # no type
        ({"type": "frobnicate", "id": "e2", "conversationId": "err"}, "e2", "unknown_type"),
        ({"type": "join", "id": "e3"}, "e3", "invalid"),
        ({"type": "message", "id": "e4", "message": {"content": "x"}}, "e4", "invalid"),
        ({"type": "join", "id": "e5", "conversationId": ""}, "e5", "invalid"),
        ({"type": "join", "id": "e6", "conversationId": 42}, "e6", "invalid"),
        ({"type": "message", "id": "e7", "conversationId": "err", "message": "hello"}, "e7", "invalid"),
        ({"type": "message", "id": "e8", "conversationId": "err", "message": ["hello"]}, "e8", "invalid"),
        ({"type": "message", "id": "e9", "conversationId": "err",
          "message": {"role": "wizard", "content": "x"}}, "e9", "invalid"),
        ({"type": "message", "id": "e10", "conversationId": "err",
          "message": {"role": "user", "content": 5}}, "e10", "invalid"),
        ({"type": "join", "id": "e11", "conversationId": "err", "since": -1}, "e11", "invalid"),
        ({"type": "join", "id": "e12", "conversationId": "x" * 200}, "e12", "invalid"),
    ]

    async def go():
        c = await Client.connect(dev_hub, "u1:d1")
        for req, rid, code in cases:
            await c.send(req if isinstance(req, str) else json.dumps(req))
            e = await c.recv()
            assert e["type"] == "error" and e["code"] == code, (req, e)
            assert isinstance(e.get("error"), str) and e["error"], e
            if rid:
                assert e.get("id") == rid, (req, e)
            await c.ping()
        # Binary frames holding JSON are accepted the same.
        await c.ws.send(json.dumps({"type": "ping", "id": "bin"}).encode())
        assert await c.recv() == {"type": "pong", "id": "bin"}
        # Nothing invalid was stored; a valid message still works on the same connection.
        ack = await c.send_message("err", "fine")
        assert ack["seq"] == 1
        s = await c.join("err")
        assert [d["content"] for d in s["data"]] == ["fine"]
        await c.close()
    run(go())


# ---------------------------------------------------------------------------
# Authentication


def test_inband_auth(dev_hub):
    async def go():
        c = await Client.connect(dev_hub, token=None, source="web", welcome=False)
        await c.quiet(0.3)  # no welcome before authentication
        await c.send({"type": "join", "conversationId": "ib", "id": "j0"})
        e = await c.recv()
        assert e["type"] == "error" and e["code"] == "unauthenticated" and e.get("id") == "j0", e
        await c.send({"type": "auth", "token": "u7:tab"})
        w = await c.recv()
        assert w["type"] == "presence" and w["connected"] is True and w["source"] == "web", w
        assert w["userId"] == "u7" and w["deviceId"] == "tab" and w["clientId"], w
        assert (await c.join("ib"))["data"] == []
        ack = await c.send_message("ib", "after auth")
        assert ack["seq"] == 1
        await c.send({"type": "auth", "token": "u7:tab", "id": "a2"})
        e = await c.expect("error")
        assert e["type"] == "error" and e.get("id") == "a2", e  # already authenticated
        await c.ping()
    run(go())


def test_inband_wrong_token_gets_error_then_close_1008(dev_hub):
    async def go():
        for bad in ("nocolonhere", "aaa.bbb.ccc", "chk_notarealkey"):
            c = await Client.connect(dev_hub, token=None, welcome=False)
            await c.send({"type": "auth", "token": bad})
            e = await c.recv()
            assert e["type"] == "error" and e["code"] == "unauthenticated", (bad, e)
            await asyncio.wait_for(c.ws.wait_closed(), 5)
            assert c.ws.close_code == 1008, (bad, c.ws.close_code)
    run(go())


def test_no_auth_within_10s_closes_1008(dev_hub):
    async def go():
        c = await Client.connect(dev_hub, token=None, welcome=False)
        t0 = time.monotonic()
        frames = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frames.append(await c.recv(16))
        took = time.monotonic() - t0
        assert frames == []
        assert c.ws.close_code == 1008 and c.ws.close_reason == "authentication timeout", \
            (c.ws.close_code, c.ws.close_reason)
        assert 9.0 <= took <= 13.0, took
    run(go(), timeout=30)


def _upgrade(hub, path, extra=None):
    raw, _ = ws_handshake_request(hub.port, path, extra=extra)
    return http_exchange(hub.port, raw)[0]


def test_upgrade_with_bad_credential_is_http_401_json(make_hub):
    dev = make_hub("--insecure-dev")
    strict = make_hub()
    for hub, path, extra in [
        (dev, "/ws?source=web&token=aaa.bbb.ccc", None),
        (dev, "/ws?token=chk_0000", None),
        (dev, "/ws?token=%3Anodevice", None),
        (dev, "/ws", {"Authorization": "Bearer not-a-token"}),
        (strict, "/ws?token=u1:d1", None),  # literal pairs only with --insecure-dev
    ]:
        r = _upgrade(hub, path, extra)
        assert r.status == 401, (path, extra, r)
        assert r.header("content-type", "").startswith("application/json"), r
        body = json.loads(r.body)
        assert body["success"] is False and isinstance(body["error"], str) and body["error"], body
    # A good one, for contrast, through the header.
    r = _upgrade(dev, "/ws?source=web", {"Authorization": "Bearer u1:d1"})
    assert r.status == 101, r


def _chorus_token_available():
    try:
        p = subprocess.run([CHORUS_BIN, "token", "--help"], capture_output=True, timeout=10)
    except OSError:
        return False
    return p.returncode == 0 and b"token" in p.stdout


def test_signed_tokens_from_chorus_token(make_hub, tmp_path):
    assert _chorus_token_available(), "`chorus token` must be part of the binary"
    data = tmp_path / "data"
    data.mkdir()

    def mint(user, device, *extra):
        p = subprocess.run([CHORUS_BIN, "token", "--user", user, "--device", device, "--data-dir", str(data),
                            *extra], capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, p.stderr
        tok = p.stdout.strip()
        assert tok.count(".") == 2 and "\n" not in tok, p.stdout
        return tok

    t_alice = mint("alice", "laptop")
    t_alice_phone = mint("alice", "phone")
    t_bob = mint("bob", "laptop")
    t_reader = mint("carol", "tv", "--scopes", "read")
    hub = make_hub(data_dir=str(data))  # no --insecure-dev: only real credentials

    async def go():
        a = await Client.connect(hub, t_alice, source="desktop")
        assert a.welcome["userId"] == "alice" and a.welcome["deviceId"] == "laptop", a.welcome
        p = await Client.connect(hub, None, source="iphone", headers={"Authorization": "Bearer " + t_alice_phone})
        assert p.welcome["userId"] == "alice" and p.welcome["deviceId"] == "phone", p.welcome
        await a.join("jwt-room")
        await p.join("jwt-room")
        ack = await a.send_message("jwt-room", "signed")
        m = await p.expect("message")
        assert m["seq"] == ack["seq"] and m["message"]["userId"] == "alice" and m["message"]["deviceId"] == "laptop"

        ib = await Client.connect(hub, None, welcome=False)
        await ib.send({"type": "auth", "token": t_bob})
        w = await ib.recv()
        assert w["type"] == "presence" and w["userId"] == "bob", w
        await ib.send({"type": "join", "conversationId": "jwt-room", "id": "j"})
        e = await ib.recv()
        assert e["type"] == "error" and e["code"] == "forbidden", e

        r = await Client.connect(hub, t_reader)
        await r.send(r.message_request("carol-room", "no write scope", rid="w"))
        e = await r.expect("error")
        assert e["code"] == "forbidden" and e.get("id") == "w", e

        tampered = t_alice[:-3] + ("AAA" if not t_alice.endswith("AAA") else "BBB")
        resp = _upgrade(hub, ws_path("web", tampered))
        assert resp.status == 401, resp
        resp = _upgrade(hub, ws_path("web", "alice:laptop"))
        assert resp.status == 401, resp
    run(go())


def test_stored_custom_event_gets_a_seq_and_comes_back_on_resume(make_hub):
    """A custom event with "store": true is durable: it is acked with the next seq,
    broadcast with that seq, and a later join returns it in "events" (not in the
    message list that profile `unified` renders)."""
    import asyncio
    import json

    import websockets

    hub = make_hub("--insecure-dev")

    async def go():
        url = hub.ws_url("/ws?source=test&token=ev:one")
        async with websockets.connect(url) as a, websockets.connect(
            hub.ws_url("/ws?source=test&token=ev:two")
        ) as b:
            await a.recv()
            await b.recv()
            for ws in (a, b):
                await ws.send(json.dumps({"type": "join", "conversationId": "ev-1"}))
                assert json.loads(await ws.recv())["type"] == "sync"
            await a.recv()  # presence of b
            await a.send(json.dumps({"type": "message", "conversationId": "ev-1",
                                     "message": {"content": "hi"}, "id": "m1"}))
            await a.send(json.dumps({"type": "event", "conversationId": "ev-1", "event": "progress",
                                     "payload": {"pct": 40}, "store": True, "id": "e1"}))
            got = {}
            while "e1" not in got:
                f = json.loads(await a.recv())
                if f["type"] == "ack":
                    got[f["id"]] = f
            assert got["m1"]["seq"] == 1 and got["e1"]["seq"] == 2
            seen = []
            while len(seen) < 2:
                f = json.loads(await b.recv())
                if f["type"] in ("message", "event"):
                    seen.append(f)
            assert seen[1]["type"] == "event" and seen[1]["seq"] == 2
            assert seen[1]["event"] == "progress" and seen[1]["payload"] == {"pct": 40}
        async with websockets.connect(hub.ws_url("/ws?source=test&token=ev:three")) as c:
            await c.recv()
            await c.send(json.dumps({"type": "join", "conversationId": "ev-1"}))
            s = json.loads(await c.recv())
            assert [m["seq"] for m in s["data"]] == [1]
            assert [e["seq"] for e in s["events"]] == [2] and s["events"][0]["event"] == "progress"
            assert s["lastSeq"] == 2

    asyncio.run(asyncio.wait_for(go(), 20))
