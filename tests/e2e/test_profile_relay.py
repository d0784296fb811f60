"""Profile `relay` (shared/compat/CLIENT-PROFILES.md) against a real hub, on /ws/relay.

The profile's transcript frame by frame, PIN pairing (single use, lockouts), the errors it names,
and the one-hub promise: a relay chat IS a chorus conversation, so messages cross between a relay
client and a native /ws client in both directions.
"""
import asyncio
import json
import re
import urllib.error
import urllib.request

import pytest

from chorus_client import Client, is_msg, run

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def dev_hub(make_hub):
    return make_hub("--insecure-dev")


async def relay(hub):
    """A relay connection, its auth_required frame checked."""
    r = await Client.connect(hub, token=None, source=None, welcome=False, path="/ws/relay")
    assert await r.recv() == {"id": None, "type": "auth_required"}
    return r


async def desktop(hub, token="u1:desk"):
    return await Client.connect(hub, token=token, source="desktop")


async def new_pin(native):
    rid = native.next_id("pin")
    await native.send({"type": "pin", "id": rid})
    f = await native.expect_one_of(("pin", "error"), pred=lambda f: f.get("id") == rid)
    assert f["type"] == "pin", f
    assert set(f) == {"type", "id", "pin", "expiresAt"}, f
    assert re.fullmatch(r"\d{6}", f["pin"]) and ISO.match(f["expiresAt"]), f
    return f["pin"]


async def auth_pin(r, pin, rid="1"):
    await r.send({"id": rid, "type": "auth", "pin": pin})
    return await r.recv()


async def paired(hub, native):
    r = await relay(hub)
    f = await auth_pin(r, await new_pin(native))
    assert f["type"] == "auth_success", f
    return r


def wrong_pins(valid, n):
    out, i = [], 0
    while len(out) < n:
        p = f"{i:06d}"
        if p != valid:
            out.append(p)
        i += 1
    return out


def http(hub, method, path, body, token):
    req = urllib.request.Request(hub.url(path), data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_profile_transcript(dev_hub):
    hub = dev_hub
    st, _ = http(hub, "POST", "/api/projects", {"id": "p1", "name": "Project One"}, "u1:desk")
    assert st == 201, st
    st, _ = http(hub, "POST", "/api/conversations", {"id": "c1", "projectId": "p1", "title": "First"}, "u1:desk")
    assert st == 201, st

    async def go():
        desk = await desktop(hub)
        await desk.join("c1")
        await desk.send_message("c1", "before the web came")
        r = await relay(hub)
        # -> auth with a PIN issued to the desktop's user
        f = await auth_pin(r, await new_pin(desk), rid="1")
        assert f["id"] == "1" and f["type"] == "auth_success" and set(f) == {"id", "type", "data"}, f
        assert set(f["data"]) == {"projects", "modelProfiles"} and f["data"]["modelProfiles"] == [], f
        [p] = f["data"]["projects"]
        assert p["id"] == "p1" and p["name"] == "Project One", p
        # -> subscribe project
        await r.send({"id": "2", "type": "subscribe", "resource": "project", "resourceId": "p1"})
        f = await r.recv()
        assert f["id"] == "2" and f["type"] == "subscribed" and f["resource"] == "project", f
        assert f["resourceId"] == "p1" and set(f["data"]) == {"chats"}, f
        [c] = f["data"]["chats"]
        assert c["id"] == "c1" and c["projectId"] == "p1" and c["title"] == "First", c
        # <- push: a chat created in the project (through REST here)
        st, _ = await asyncio.to_thread(http, hub, "POST", "/api/conversations",
                                        {"id": "c2", "projectId": "p1", "title": "Second"}, "u1:desk")
        assert st == 201
        f = await r.recv()
        assert f["id"] is None and f["type"] == "data" and f["resource"] == "project", f
        assert f["resourceId"] == "p1", f
        assert f["data"]["id"] == "c2" and f["data"]["projectId"] == "p1" and f["data"]["title"] == "Second", f
        # -> subscribe chat: its history
        await r.send({"id": "3", "type": "subscribe", "resource": "chat", "resourceId": "c1"})
        f = await r.recv()
        assert f["id"] == "3" and f["type"] == "subscribed" and f["resource"] == "chat", f
        assert f["resourceId"] == "c1" and set(f["data"]) == {"messages"}, f
        assert [m["content"] for m in f["data"]["messages"]] == ["before the web came"], f
        # <- push: a message from the desktop, a native event inside data
        await desk.send_message("c1", "from the desk")
        f = await r.recv()
        assert f["id"] is None and f["type"] == "data" and f["resource"] == "chat" and f["resourceId"] == "c1", f
        assert f["data"]["type"] == "message" and f["data"]["message"]["content"] == "from the desk", f
        # -> send: sent:true, and the message pushed to every subscriber (the sender too)
        await r.send({"id": "4", "type": "send", "resourceId": "c1", "message": {"message": "hi"}})
        got = [await r.recv(), await r.recv()]  # in either order
        sent = [g for g in got if g["id"] == "4"]
        push = [g for g in got if g["id"] is None]
        assert sent == [{"id": "4", "type": "data", "resource": "chat", "resourceId": "c1", "data": {"sent": True}}], got
        assert len(push) == 1 and push[0]["data"]["message"]["content"] == "hi", got
        assert push[0]["data"]["message"]["role"] == "user", push
        m = await desk.expect("message", pred=lambda f: f["message"].get("content") == "hi")
        assert m["conversationId"] == "c1" and m["message"]["userId"] == "u1", m
        # -> modelProfiles: the configured agents (none here)
        await r.send({"id": "m", "type": "subscribe", "resource": "modelProfiles"})
        f = await r.recv()
        assert f == {"id": "m", "type": "subscribed", "resource": "modelProfiles", "data": {"modelProfiles": []}}, f
        # -> unsubscribe chat: nothing more from it
        await r.send({"id": "5", "type": "unsubscribe", "resource": "chat", "resourceId": "c1"})
        assert await r.recv() == {"id": "5", "type": "data", "data": {"unsubscribed": True}}
        await desk.send_message("c1", "nobody on the web hears this")
        await r.quiet(0.4)
        # the project subscription still pushes; unsubscribing it stops that too
        await r.send({"id": "6", "type": "unsubscribe", "resource": "project", "resourceId": "p1"})
        assert await r.recv() == {"id": "6", "type": "data", "data": {"unsubscribed": True}}
        await asyncio.to_thread(http, hub, "POST", "/api/conversations", {"id": "c3", "projectId": "p1"}, "u1:desk")
        await r.quiet(0.4)
    run(go())


def test_relay_and_native_clients_share_one_chat(dev_hub):
    async def go():
        desk = await desktop(dev_hub)
        await desk.send_message("shared", "created natively")  # the first message creates the chat
        await desk.join("shared")
        r = await paired(dev_hub, desk)
        await r.send({"id": 7, "type": "subscribe", "resource": "chat", "resourceId": "shared"})
        f = await r.recv()
        assert f["id"] == 7 and f["type"] == "subscribed", f  # a numeric id comes back a number
        assert [m["content"] for m in f["data"]["messages"]] == ["created natively"]
        # native -> relay
        await desk.send_message("shared", "desk to web")
        f = await r.expect("data", pred=lambda f: f["id"] is None)
        assert f["data"]["message"]["content"] == "desk to web" and f["data"]["message"]["source"] == "desktop", f
        # relay -> native (stored: a native client joining later gets it too)
        await r.send({"id": 8, "type": "send", "resourceId": "shared", "message": {"message": "web to desk"}})
        m = await desk.expect("message", pred=lambda f: f["message"].get("content") == "web to desk")
        assert m["message"]["role"] == "user" and m["message"]["source"] == "web", m
        assert m["message"]["deviceId"].startswith("dev-"), m  # a PIN pairs a new device
        got = [await r.recv(), await r.recv()]  # sent:true and the push of its own message, any order
        kinds = sorted("sent" if g["id"] == 8 and g["data"] == {"sent": True} else g["data"]["type"] for g in got)
        assert kinds == ["message", "sent"], got
        await r.quiet(0.2)
        # Presence and typing of native clients stay out of the relay's pushes.
        later = await desktop(dev_hub, "u1:other")
        sync = await later.join("shared")
        assert [e["content"] for e in sync["data"]] == ["created natively", "desk to web", "web to desk"]
        await later.send({"type": "typing", "conversationId": "shared"})
        await desk.expect("typing")
        await later.leave("shared")
        await r.quiet(0.4)
    run(go())


def test_pin_is_single_use(dev_hub):
    async def go():
        desk = await desktop(dev_hub)
        pin = await new_pin(desk)
        r1 = await relay(dev_hub)
        assert (await auth_pin(r1, pin))["type"] == "auth_success"
        r2 = await relay(dev_hub)
        f = await auth_pin(r2, pin, rid="again")
        assert f["id"] == "again" and f["type"] == "auth_failed" and set(f) == {"id", "type", "error"}, f
        assert isinstance(f["error"], str) and f["error"], f
        await r2.send({"id": "x", "type": "subscribe", "resource": "modelProfiles"})
        assert await r2.recv() == {"id": "x", "type": "error", "error": "Not authenticated"}
        # A second pairing needs a second PIN.
        assert (await auth_pin(r2, await new_pin(desk)))["type"] == "auth_success"
    run(go())


def test_wrong_pins_lock_the_connection_after_five(dev_hub):
    async def go():
        desk = await desktop(dev_hub)
        pin = await new_pin(desk)
        r = await relay(dev_hub)
        for i, wrong in enumerate(wrong_pins(pin, 5)):
            f = await auth_pin(r, wrong, rid=f"w{i}")
            assert f["id"] == f"w{i}" and f["type"] == "auth_failed", f
            assert "too many" not in f["error"].lower(), f
        # The sixth attempt fails even with the right PIN: the connection is locked out.
        f = await auth_pin(r, pin, rid="right")
        assert f["type"] == "auth_failed" and "too many" in f["error"].lower(), f
        f = await auth_pin(r, pin, rid="still")
        assert f["type"] == "auth_failed" and "too many" in f["error"].lower(), f
        # The locked attempts did not spend the PIN: a new connection pairs with it.
        r2 = await relay(dev_hub)
        assert (await auth_pin(r2, pin))["type"] == "auth_success"
    run(go())


def test_wrong_pins_lock_the_source_address_after_twenty(dev_hub):
    async def go():
        desk = await desktop(dev_hub)
        pin = await new_pin(desk)
        wrong = wrong_pins(pin, 20)
        for c in range(4):  # 4 connections x 5 wrong PINs = 20 from 127.0.0.1
            r = await relay(dev_hub)
            for w in wrong[c * 5:(c + 1) * 5]:
                f = await auth_pin(r, w)
                assert f["type"] == "auth_failed" and "address" not in f["error"], f
            await r.close()
        r = await relay(dev_hub)
        f = await auth_pin(r, pin)
        assert f["type"] == "auth_failed" and "address" in f["error"] and "try again" in f["error"], f
        # Token auth is not a guess at a PIN: it still works from the locked address.
        await r.send({"id": "t", "type": "auth", "token": "u1:web"})
        f = await r.recv()
        assert f["id"] == "t" and f["type"] == "auth_success", f
    run(go())


def test_requests_before_auth_are_refused(dev_hub):
    async def go():
        r = await relay(dev_hub)
        for req in ({"id": "9", "type": "subscribe", "resource": "chat", "resourceId": "c1"},
                    {"id": 10, "type": "send", "resourceId": "c1", "message": {"message": "hi"}},
                    {"id": "11", "type": "unsubscribe", "resource": "chat", "resourceId": "c1"},
                    {"id": "12", "type": "subscribe", "resource": "modelProfiles"}):
            await r.send(req)
            assert await r.recv() == {"id": req["id"], "type": "error", "error": "Not authenticated"}
        # A bad token fails; the connection stays and can still pair.
        await r.send({"id": "a", "type": "auth", "token": "not-a-credential"})
        f = await r.recv()
        assert f["id"] == "a" and f["type"] == "auth_failed" and f["error"], f
        await r.send({"id": "b", "type": "auth", "token": "u1:web"})
        f = await r.recv()
        assert f == {"id": "b", "type": "auth_success", "data": {"projects": f["data"]["projects"],
                                                                  "modelProfiles": []}}, f
        await r.send({"id": "c", "type": "auth", "token": "u1:web"})
        f = await r.recv()
        assert f["id"] == "c" and f["type"] == "error", f
    run(go())


def test_missing_and_forbidden_resources(dev_hub):
    async def go():
        other = await desktop(dev_hub, "u2:desk")
        await other.send_message("private-c", "u2's own")
        desk = await desktop(dev_hub)
        r = await paired(dev_hub, desk)
        cases = [("chat", "no-such-chat"), ("chat", "private-c"), ("project", "no-such-project")]
        for i, (res, rid) in enumerate(cases):
            await r.send({"id": f"e{i}", "type": "subscribe", "resource": res, "resourceId": rid})
            f = await r.recv()
            assert set(f) == {"id", "type", "resource", "resourceId", "error"}, f
            assert f["id"] == f"e{i}" and f["type"] == "error" and f["resource"] == res, f
            assert f["resourceId"] == rid and isinstance(f["error"], str) and f["error"], f
        # Nothing was joined: u2's messages never reach the relay.
        await other.send_message("private-c", "still private")
        await r.quiet(0.4)
        # Sending into someone else's chat is refused too.
        await r.send({"id": "s", "type": "send", "resourceId": "private-c", "message": {"message": "let me in"}})
        f = await r.recv()
        assert f["id"] == "s" and f["type"] == "error" and f["resource"] == "chat", f
        assert f["resourceId"] == "private-c", f
        sync = await other.join("private-c")
        assert [e["content"] for e in sync["data"]] == ["u2's own", "still private"]
        # Malformed requests get an error and the connection stays.
        await r.send("not json")
        f = await r.recv()
        assert f["id"] is None and f["type"] == "error", f
        await r.send({"id": "u", "type": "subscribe", "resource": "weather", "resourceId": "x"})
        f = await r.recv()
        assert f["id"] == "u" and f["type"] == "error" and f["resource"] == "weather", f
        await r.send({"id": "v", "type": "dance"})
        f = await r.recv()
        assert f["id"] == "v" and f["type"] == "error", f
    run(go())
