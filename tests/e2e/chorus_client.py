"""A small asyncio client of chorus's native protocol on /ws, for the black-box suite.

    c = await Client.connect(hub, "alice:laptop", source="desktop")   # reads the welcome
    sync = await c.join("room-1")                                      # the sync frame
    ack = await c.send_message("room-1", "hello", msg_id="m-1")       # waits for the ack
    m = await c.expect("message")                                      # next frame of a type
    await c.quiet(0.3)                                                 # asserts nothing arrives
    await c.drop()                                                     # TCP reset, no close frame

Frames are JSON objects. `expect(type)` returns the first frame of that type and keeps the
frames it passed over in `c.pending`, oldest first; `recv()` returns pending frames before
reading new ones, and `frames_for()` / `quiet()` drain them too, so no frame is ever lost
between helpers and a stray frame is always noticed. Every wait has a deadline, so a
missing frame fails the test instead of hanging it.
"""
import asyncio
import json
import urllib.parse

import websockets

DEFAULT_TIMEOUT = 10.0
_open = []  # every Client of the running session, closed by run()


def run(coro, timeout=60):
    """conftest.run for client sessions: run coro with a deadline, then close every Client
    it left open (a clean close handshake, all at once), so no test waits on stragglers."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            clients = list(_open)
            _open.clear()
            await asyncio.gather(*(c.ws.close() for c in clients), return_exceptions=True)
    return asyncio.run(main())


def ws_path(source="test", token=None, path="/ws"):
    q = {}
    if source is not None:
        q["source"] = source
    if token is not None:
        q["token"] = token
    return path + ("?" + urllib.parse.urlencode(q) if q else "")


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.welcome = None
        self.pending = []  # frames passed over by expect(), oldest first
        self._rid = 0

    @classmethod
    async def connect(cls, hub, token="u1:d1", source="test", welcome=True, headers=None, path="/ws"):
        """Open /ws?source=...&token=...; with welcome=True read and check the welcome frame."""
        ws = await websockets.connect(hub.ws_url(ws_path(source, token, path)), compression=None,
                                      max_queue=None, max_size=None, open_timeout=10, close_timeout=3,
                                      extra_headers=headers or {})
        c = cls(ws)
        _open.append(c)
        if welcome:
            w = await c.recv()
            assert w.get("type") == "presence" and w.get("connected") is True and "conversationId" not in w, \
                f"expected the welcome frame first, got {w}"
            c.welcome = w
        return c

    @property
    def client_id(self):
        return self.welcome["clientId"]

    def next_id(self, prefix="r"):
        self._rid += 1
        return f"{prefix}{self._rid}"

    # ---- raw I/O --------------------------------------------------------
    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next frame (pending ones first), parsed; a frame that is not JSON fails the test."""
        if self.pending:
            return self.pending.pop(0)
        return await self._read(timeout)

    async def _read(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError(f"server sent a frame that is not JSON: {raw!r}")

    async def expect(self, type_, timeout=DEFAULT_TIMEOUT, pred=None):
        """The first frame of this type (and matching pred); others stay in self.pending."""
        return await self.expect_one_of((type_,), timeout, pred)

    async def expect_one_of(self, types, timeout=DEFAULT_TIMEOUT, pred=None):
        def match(f):
            return f.get("type") in types and (pred is None or pred(f))
        for i, f in enumerate(self.pending):
            if match(f):
                return self.pending.pop(i)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                f = await self._read(left)
            except asyncio.TimeoutError:
                raise AssertionError(f"none of {types} within {timeout}s; pending {self.pending[-5:]}")
            if match(f):
                return f
            self.pending.append(f)

    async def frames_for(self, seconds):
        """The pending frames and every frame that arrives within `seconds`."""
        out, self.pending = self.pending, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return out
            try:
                out.append(await self._read(left))
            except asyncio.TimeoutError:
                return out

    async def quiet(self, seconds=0.3, pred=None):
        """Assert that no frame (matching pred) is pending or arrives within `seconds`."""
        got = [f for f in await self.frames_for(seconds) if pred is None or pred(f)]
        assert not got, f"unexpected frames: {got}"

    async def ping(self, timeout=DEFAULT_TIMEOUT):
        """A protocol-level round trip; proves the connection is open and answering."""
        rid = self.next_id("p")
        await self.send({"type": "ping", "id": rid})
        f = await self.expect("pong", timeout)
        assert f.get("id") == rid, f

    # ---- requests -------------------------------------------------------
    async def join(self, conv, since=None, epoch=None, limit=None, rid=None, timeout=DEFAULT_TIMEOUT):
        """Join and return the sync frame (an error frame fails the test)."""
        req = {"type": "join", "conversationId": conv}
        if since is not None:
            req["since"] = since
        if epoch is not None:
            req["epoch"] = epoch
        if limit is not None:
            req["limit"] = limit
        if rid is not None:
            req["id"] = rid
        await self.send(req)
        f = await self.expect_one_of(("sync", "error"), timeout)
        assert f["type"] == "sync", f"join {conv} failed: {f}"
        assert f["conversationId"] == conv, f
        return f

    async def leave(self, conv):
        await self.send({"type": "leave", "conversationId": conv})

    def message_request(self, conv, content, msg_id=None, rid=None, **fields):
        msg = {"role": "user", "content": content}
        if msg_id is not None:
            msg["id"] = msg_id
        msg.update(fields)
        req = {"type": "message", "conversationId": conv, "message": msg}
        if rid is not None:
            req["id"] = rid
        return req

    async def send_message(self, conv, content, msg_id=None, timeout=DEFAULT_TIMEOUT, **fields):
        """Send with a request id and return the ack (an error frame fails the test)."""
        rid = self.next_id("s")
        await self.send(self.message_request(conv, content, msg_id=msg_id, rid=rid, **fields))
        f = await self.expect_one_of(("ack", "error"), timeout, pred=lambda f: f.get("id") == rid)
        assert f["type"] == "ack", f"send to {conv} failed: {f}"
        return f

    # ---- endings --------------------------------------------------------
    async def close(self):
        await self.ws.close()

    async def drop(self):
        """Vanish without a close handshake (a crashed tab, a lost network)."""
        self.ws.transport.abort()
        try:
            await asyncio.wait_for(self.ws.wait_closed(), 5)
        except asyncio.TimeoutError:
            pass


def is_msg(f):
    return f.get("type") == "message"


def presence_of(conv):
    return lambda f: f.get("type") == "presence" and f.get("conversationId") == conv
