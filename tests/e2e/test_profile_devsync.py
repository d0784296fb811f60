"""Profile `device-sync` (shared/compat/CLIENT-PROFILES.md) against a real hub, on /ws/devices.

Every frame is checked in the exact shape the profile writes: {"type","payload","timestamp"} with
upper-case types, DEVICE_CONNECTED/DEVICE_DISCONNECTED payloads {"userId","deviceId","source"?,"at"},
PONG with payload {} and an ISO 8601 timestamp.
"""
import asyncio
import json
import re
import subprocess
import urllib.error
import urllib.request

import pytest
import websockets

from chorus_client import Client, run
from conftest import CHORUS_BIN

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PATH = "/ws/devices"


@pytest.fixture
def dev_hub(make_hub):
    return make_hub("--insecure-dev")


async def device(hub, token, source=None):
    return await Client.connect(hub, token=token, source=source, welcome=False, path=PATH)


def check_envelope(f, type_):
    assert set(f) == {"type", "payload", "timestamp"}, f
    assert f["type"] == type_, f
    assert ISO.match(f["timestamp"]), f
    return f["payload"]


def check_device(f, type_, user, dev, source=None):
    p = check_envelope(f, type_)
    want = {"userId", "deviceId", "at"} | ({"source"} if source else set())
    assert set(p) == want, p
    assert p["userId"] == user and p["deviceId"] == dev, p
    assert ISO.match(p["at"]), p
    if source:
        assert p["source"] == source, p


def mint(hub, user, dev, scopes="read write"):
    out = subprocess.run([CHORUS_BIN, "token", "--user", user, "--device", dev, "--scopes", scopes,
                          "--data-dir", hub.data_dir], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def post_json(hub, path, body, token):
    req = urllib.request.Request(hub.url(path), data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body


def test_three_devices_see_each_other_connect_and_go(dev_hub):
    async def go():
        a = await device(dev_hub, "u1:phone", source="iphone")
        await a.quiet(0.3)  # nobody else yet: nothing at all
        b = await device(dev_hub, "u1:tablet")
        check_device(await b.recv(), "DEVICE_CONNECTED", "u1", "phone", source="iphone")
        check_device(await a.recv(), "DEVICE_CONNECTED", "u1", "tablet")
        c = await device(dev_hub, "u1:laptop", source="web")
        # The newcomer is first told, one frame each, which devices are already there (oldest first).
        check_device(await c.recv(), "DEVICE_CONNECTED", "u1", "phone", source="iphone")
        check_device(await c.recv(), "DEVICE_CONNECTED", "u1", "tablet")
        for old in (a, b):
            check_device(await old.recv(), "DEVICE_CONNECTED", "u1", "laptop", source="web")
        for x in (a, b, c):
            await x.quiet(0.3)
        await c.close()  # a clean close
        for old in (a, b):
            check_device(await old.recv(), "DEVICE_DISCONNECTED", "u1", "laptop", source="web")
        await b.drop()  # a lost network: no close frame
        check_device(await a.recv(), "DEVICE_DISCONNECTED", "u1", "tablet")
        await a.quiet(0.3)
    run(go())


def test_ping_gets_pong_only_to_the_sender(dev_hub):
    async def go():
        a = await device(dev_hub, "u1:a")
        b = await device(dev_hub, "u1:b")
        await a.expect("DEVICE_CONNECTED")
        await b.expect("DEVICE_CONNECTED")
        await a.send({"type": "PING", "payload": {}, "timestamp": "2025-11-18T12:08:00.000Z"})
        f = await a.recv()
        assert check_envelope(f, "PONG") == {}
        await a.send({"type": "PING"})  # a bare PING too
        assert check_envelope(await a.recv(), "PONG") == {}
        await b.quiet(0.3)
    run(go())


def test_update_progress_reaches_the_other_devices_as_shoot_progress(dev_hub):
    async def go():
        a = await device(dev_hub, "u1:a")
        b = await device(dev_hub, "u1:b")
        c = await device(dev_hub, "u1:c")
        for x in (a, b, c):
            await x.frames_for(0.3)  # the connect notifications
        payload = {"shootId": "s-9", "processedCount": 12, "totalCount": 40, "currentImage": "IMG_0012.jpg",
                   "eta": 95, "provider": "local", "error": None}
        ts = "2025-11-18T12:08:00.000Z"
        await a.send({"type": "UPDATE_PROGRESS", "payload": payload, "timestamp": ts})
        for other in (b, c):
            f = await other.recv()
            assert f == {"type": "SHOOT_PROGRESS", "payload": payload, "timestamp": ts}, f
        await a.quiet(0.3)  # never back to the sender
        # Without a timestamp the server stamps it; the payload is still the same.
        await b.send({"type": "UPDATE_PROGRESS", "payload": {"shootId": "s-9", "processedCount": 13}})
        for other in (a, c):
            f = await other.recv()
            assert check_envelope(f, "SHOOT_PROGRESS") == {"shootId": "s-9", "processedCount": 13}
        await b.quiet(0.3)
        for x in (a, b, c):
            await x.quiet(0.2)
    run(go())


def test_any_other_type_passes_through_as_sent(dev_hub):
    async def go():
        a = await device(dev_hub, "u1:a")
        b = await device(dev_hub, "u1:b")
        await a.expect("DEVICE_CONNECTED")
        await b.expect("DEVICE_CONNECTED")
        sent = [
            {"type": "PROMPT_CHANGE", "payload": {"prompt": "golden hour ✓"}, "timestamp": "2025-11-18T12:08:00.000Z"},
            {"type": "CREDIT_UPDATE", "payload": {"credits": 41}, "timestamp": "2025-11-18T12:08:01.000Z"},
            {"type": "SOMETHING_NEW_2030", "payload": {"k": [1, 2, {"z": None}]},
             "timestamp": "2025-11-18T12:08:02.000Z", "extra": True},
        ]
        for m in sent:
            await a.send(m)
        for m in sent:
            assert await b.recv() == m
        # A pass-through without a timestamp gets the server's.
        await a.send({"type": "ADMIN_SESSION_UPDATE", "payload": {"active": True}})
        assert check_envelope(await b.recv(), "ADMIN_SESSION_UPDATE") == {"active": True}
        await a.quiet(0.3)
        await b.quiet(0.2)
    run(go())


def test_another_users_devices_see_nothing(dev_hub):
    async def go():
        other = await device(dev_hub, "u2:watch")
        a = await device(dev_hub, "u1:a")
        b = await device(dev_hub, "u1:b")
        await a.expect("DEVICE_CONNECTED")
        await b.expect("DEVICE_CONNECTED")
        await a.send({"type": "UPDATE_PROGRESS", "payload": {"shootId": "x"}})
        await a.send({"type": "CREDIT_UPDATE", "payload": {"credits": 1}})
        assert (await b.recv())["type"] == "SHOOT_PROGRESS"
        assert (await b.recv())["type"] == "CREDIT_UPDATE"
        await b.close()
        await a.expect("DEVICE_DISCONNECTED")
        await other.quiet(0.5)  # nothing of u1's: no connects, no fan-out, no disconnects
        # And u2's own second device finds exactly one sibling.
        w2 = await device(dev_hub, "u2:phone")
        check_device(await w2.recv(), "DEVICE_CONNECTED", "u2", "watch")
        check_device(await other.recv(), "DEVICE_CONNECTED", "u2", "phone")
        await a.quiet(0.3)
    run(go())


def test_simultaneous_connects_each_hear_of_every_other_exactly_once(dev_hub):
    n = 8

    async def go():
        devs = await asyncio.gather(*(device(dev_hub, f"u1:d{i}") for i in range(n)))
        for i, d in enumerate(devs):
            frames = await d.frames_for(1.0)
            seen = []
            for f in frames:
                check_envelope(f, "DEVICE_CONNECTED")
                seen.append(f["payload"]["deviceId"])
            assert sorted(seen) == sorted(f"d{j}" for j in range(n) if j != i), (i, seen)
    run(go())


def test_errors_go_to_the_sender_only_and_the_connection_stays(dev_hub):
    async def go():
        a = await device(dev_hub, "u1:a")
        b = await device(dev_hub, "u1:b")
        await a.expect("DEVICE_CONNECTED")
        await b.expect("DEVICE_CONNECTED")
        for bad in ("not json", "[1,2]", json.dumps({"payload": {}}), json.dumps({"type": 7})):
            await a.send(bad)
            p = check_envelope(await a.recv(), "ERROR")
            assert isinstance(p.get("error"), str) and p["error"], p
        await a.send({"type": "PING"})
        check_envelope(await a.recv(), "PONG")
        await b.quiet(0.3)
    run(go())


def test_credentials(make_hub):
    hub = make_hub()  # no --insecure-dev: a literal pair is refused

    async def refused(url):
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(url, open_timeout=10)
        return e.value.status_code

    async def go():
        assert await refused(hub.ws_url(PATH)) == 401
        assert await refused(hub.ws_url(PATH + "?token=u1:phone")) == 401
        assert await refused(hub.ws_url(PATH + "?token=garbage.garbage.garbage")) == 401
        # A real credential names user and device; the others see that identity.
        a = await device(hub, mint(hub, "alice", "phone"))
        b = await device(hub, mint(hub, "alice", "laptop"))
        check_device(await b.recv(), "DEVICE_CONNECTED", "alice", "phone")
        check_device(await a.recv(), "DEVICE_CONNECTED", "alice", "laptop")
        # A read-only credential may listen and PING, not send to the other devices.
        r = await device(hub, mint(hub, "alice", "kiosk", scopes="read"))
        assert {(await r.recv())["payload"]["deviceId"] for _ in range(2)} == {"phone", "laptop"}
        await a.expect("DEVICE_CONNECTED")
        await b.expect("DEVICE_CONNECTED")
        await r.send({"type": "CREDIT_UPDATE", "payload": {}})
        check_envelope(await r.recv(), "ERROR")
        await a.quiet(0.3)
        await a.send({"type": "CREDIT_UPDATE", "payload": {"credits": 5}})
        assert (await r.recv())["payload"] == {"credits": 5}
    run(go())


def test_back_end_publish_reaches_every_device_of_the_user_once(make_hub):
    hub = make_hub("--insecure-dev")
    admin = mint(hub, "backend", "ops", scopes="admin")
    status, body = post_json(hub, "/api/users/nobody/events", {"type": "PING_TEST", "payload": {}}, admin)
    assert status == 202 and body["delivered"] == 0, (status, body)  # nobody connected: reaches none

    async def go():
        devs = [await device(hub, f"u1:d{i}") for i in range(3)]
        stranger = await device(hub, "u2:d0")
        for d in devs:
            await d.frames_for(0.3)
        payload = {"shootId": "s1", "processedCount": 3, "totalCount": 10, "currentImage": "a.jpg",
                   "eta": 12, "provider": "p", "error": None}
        status, body = await asyncio.to_thread(post_json, hub, "/api/users/u1/events",
                                               {"type": "SHOOT_PROGRESS", "payload": payload}, admin)
        assert status == 202 and body == {"success": True, "delivered": 3}, (status, body)
        for d in devs:
            assert check_envelope(await d.recv(), "SHOOT_PROGRESS") == payload
            await d.quiet(0.3)  # once
        await stranger.quiet(0.2)
        status, body = await asyncio.to_thread(post_json, hub, "/api/users/u1/events",
                                               {"type": "CREDIT_UPDATE", "payload": {"credits": 7}}, admin)
        assert status == 202 and body["delivered"] == 3, body
        for d in devs:
            assert check_envelope(await d.recv(), "CREDIT_UPDATE") == {"credits": 7}
        # A device that went is no longer counted.
        await devs[2].close()
        for d in devs[:2]:
            await d.expect("DEVICE_DISCONNECTED")
        status, body = await asyncio.to_thread(post_json, hub, "/api/users/u1/events",
                                               {"type": "PROMPT_CHANGE", "payload": {}}, admin)
        assert status == 202 and body["delivered"] == 2, body
    run(go())
