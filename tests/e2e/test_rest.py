"""REST and SSE (docs/PROTOCOL.md, "REST and SSE"): every route's success and error
paths with exact status codes and bodies, conversation ACLs across users, paging, projects,
ephemeral events, the user channel publish, and the SSE stream's gap-free resume.

The helpers at the top are shared with test_unified_http.py:

    st, hdrs, body = call(hub, "POST", "/api/conversations", {"id": "c1"}, token="alice:lap")
    tok = mint(hub, "root", scopes="admin")         # `chorus token` on the hub's data dir
    key = apikey(hub, "integ")                      # `chorus apikey add`
    s = SSE(hub, "/api/conversations/c1/events", token="alice:lap", last_event_id=20)
    ev = s.next_event()                              # {"id", "event", "data": parsed JSON}

Every wait has a deadline, so a missing answer fails the test instead of hanging it.
"""
import http.client
import json
import re
import socket
import subprocess
import time
import urllib.parse

from conftest import CHORUS_BIN

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

MISSING_CRED = {"success": False, "code": "unauthenticated",
                "error": "missing credential: send Authorization: Bearer <token or API key>, or ?token="}


def q(s):
    return urllib.parse.quote(s, safe="")


def call(hub, method, path, body=None, token="alice:lap", headers=None, raw=None, timeout=10):
    """One HTTP exchange on a fresh connection: (status, lower-cased headers, JSON or bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=timeout)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    data = None
    if raw is not None:
        data = raw.encode() if isinstance(raw, str) else raw
    elif body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        b = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()
    if hdrs.get("content-type", "").startswith("application/json"):
        return r.status, hdrs, json.loads(b)
    return r.status, hdrs, b


def _cli(*args):
    out = subprocess.run([CHORUS_BIN, *args], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"chorus {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip().splitlines()[-1].strip()


def mint(hub, user, device="tests", scopes="read write"):
    """A signed token from `chorus token` for the hub's data directory."""
    return _cli("token", "--user", user, "--device", device, "--scopes", scopes, "--data-dir", hub.data_dir)


def apikey(hub, user, scopes="read write"):
    """A new API key from `chorus apikey add`."""
    return _cli("apikey", "add", "--user", user, "--scopes", scopes, "--label", "tests", "--data-dir", hub.data_dir)


def create_conv(hub, conv_id, token="alice:lap", **fields):
    st, _, b = call(hub, "POST", "/api/conversations", dict(id=conv_id, **fields), token=token)
    assert st == 201, (st, b)
    return b["data"]


def post_message(hub, conv_id, content, token="alice:lap", **fields):
    st, _, b = call(hub, "POST", f"/api/conversations/{q(conv_id)}/messages",
                    dict(role="user", content=content, **fields), token=token)
    assert st in (200, 201), (st, b)
    return b["data"]


def err(code, error):
    return {"success": False, "error": error, "code": code}


class SSE:
    """A raw text/event-stream reader (no client library between us and the bytes)."""

    def __init__(self, hub, path, token="alice:lap", last_event_id=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", hub.port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
        if token is not None:
            lines.append("Authorization: Bearer " + token)
        if last_event_id is not None:
            lines.append(f"Last-Event-ID: {last_event_id}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.eof = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
            if self.eof and b"\r\n\r\n" not in self.buf:
                raise AssertionError(f"connection closed before the response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        hl = head.decode().split("\r\n")
        self.status = int(hl[0].split()[1])
        self.headers = {}
        for line in hl[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.body = None
        if "content-length" in self.headers:  # an error answer, not a stream
            n = int(self.headers["content-length"])
            while len(self.buf) < n and not self.eof:
                self._fill(deadline)
            self.body = json.loads(self.buf[:n]) if n else None
            self.close()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for the server")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out waiting for the server")
        if not d:
            self.eof = True
        self.buf += d

    def next_event(self, timeout=10):
        """The next event block with data (comments and retry hints are skipped);
        None at the end of the stream."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" not in self.buf:
                if self.eof:
                    assert self.buf.strip() == b"", f"stream ended inside an event: {self.buf!r}"
                    return None
                self._fill(deadline)
            block, self.buf = self.buf.split(b"\n\n", 1)
            ev = {"data": []}
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "data":
                    ev["data"].append(value)
                elif field in ("id", "event", "retry"):
                    ev[field] = value
                else:
                    raise AssertionError(f"unknown SSE field {field!r}")
            if not ev["data"]:
                continue
            ev["data"] = json.loads("\n".join(ev["data"]))
            return ev

    def until(self, pred, timeout=10):
        """Events up to and including the first one matching pred."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(max(0.01, deadline - time.monotonic()))
            assert ev is not None, f"stream ended; got {out[-5:]}"
            out.append(ev)
            if pred(ev):
                return out

    def quiet(self, seconds=0.3, pred=lambda ev: True):
        """Assert no matching event arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                ev = self.next_event(deadline - time.monotonic())
            except AssertionError as e:
                if "timed out" in str(e):
                    return
                raise
            if ev is None:
                return
            assert not pred(ev), f"unexpected event {ev}"

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# =====================================================================================
# tests
# =====================================================================================
import asyncio  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402

from chorus_client import Client  # noqa: E402
from conftest import run  # noqa: E402

CONV_KEYS = {"id", "projectId", "title", "owner", "agent", "members", "metadata", "createdAt", "updatedAt",
             "lastSeq", "messageCount", "epoch"}


@pytest.fixture
def hub(make_hub):
    """A hub accepting literal user:device tokens (alice:lap, bob:lap, ...) besides real ones."""
    return make_hub("--insecure-dev")


# ---- credentials ------------------------------------------------------------------

ROUTES = [
    ("GET", "/api/conversations"), ("POST", "/api/conversations"),
    ("GET", "/api/conversations/c1"), ("PATCH", "/api/conversations/c1"), ("DELETE", "/api/conversations/c1"),
    ("GET", "/api/conversations/c1/messages"), ("POST", "/api/conversations/c1/messages"),
    ("GET", "/api/conversations/c1/events"), ("POST", "/api/conversations/c1/events"),
    ("GET", "/api/projects"), ("POST", "/api/projects"), ("GET", "/api/projects/p1"),
    ("POST", "/api/users/alice/events"), ("GET", "/ws/stats"),
]


def test_every_route_needs_a_credential(hub):
    for method, path in ROUTES:
        st, h, b = call(hub, method, path, raw=b"{}", token=None)
        assert st == 401, (method, path, st, b)
        assert b == MISSING_CRED, (method, path, b)
        assert h.get("www-authenticate", "").startswith("Bearer"), (method, path, h)


def test_refused_credentials_are_401_with_the_reason(hub):
    st, _, b = call(hub, "GET", "/api/conversations", token="not a credential")
    assert (st, b) == (401, err("unauthenticated", "unrecognised credential"))
    st, _, b = call(hub, "GET", "/api/conversations", token="chk_AAAAAAAA_" + "B" * 32)
    assert (st, b) == (401, err("unauthenticated", "invalid api key"))
    tok = mint(hub, "alice")
    st, _, b = call(hub, "GET", "/api/conversations", token=tok[:-2] + ("AA" if not tok.endswith("AA") else "BB"))
    assert (st, b) == (401, err("unauthenticated", "bad signature"))


def test_token_in_query_and_real_tokens_and_api_keys(hub):
    tok = mint(hub, "alice")
    st, _, b = call(hub, "GET", "/api/conversations?token=" + q(tok), token=None)
    assert (st, b) == (200, {"success": True, "data": []})
    create_conv(hub, "c-tok", token=tok)
    key = apikey(hub, "alice")
    st, _, b = call(hub, "GET", "/api/conversations", token=key)
    assert st == 200 and [c["id"] for c in b["data"]] == ["c-tok"]


def test_missing_scope_is_403(hub):
    ro = mint(hub, "alice", scopes="read")
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "c1"}, token=ro)
    assert (st, b) == (403, err("forbidden", "this credential may not write"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"content": "x"}, token=ro)
    assert (st, b) == (403, err("forbidden", "this credential may not write"))
    st, _, b = call(hub, "GET", "/api/conversations", token=ro)
    assert (st, b) == (200, {"success": True, "data": []})
    wo = apikey(hub, "alice", scopes="write")
    st, _, b = call(hub, "GET", "/api/projects", token=wo)
    assert (st, b) == (403, err("forbidden", "this credential may not read"))


# ---- conversations: create / get ----------------------------------------------------

def test_create_answers_201_with_the_conversation(hub):
    st, h, b = call(hub, "POST", "/api/conversations",
                    {"id": "c1", "title": "Plans", "agent": "claude", "members": ["bob"], "metadata": {"k": [1, 2]}})
    assert st == 201 and h["content-type"] == "application/json", (st, h)
    assert b["success"] is True
    c = b["data"]
    assert set(c) == CONV_KEYS, c
    assert c["id"] == "c1" and c["title"] == "Plans" and c["agent"] == "claude" and c["projectId"] is None
    assert c["owner"] == "alice" and c["members"] == ["alice", "bob"]
    assert c["metadata"] == {"k": [1, 2]}
    assert c["lastSeq"] == 0 and c["messageCount"] == 0
    assert ISO.match(c["createdAt"]) and ISO.match(c["updatedAt"]) and UUID.match(c["epoch"])
    # the same object comes back from GET
    st, _, g = call(hub, "GET", "/api/conversations/c1")
    assert (st, g) == (200, {"success": True, "data": c})


def test_create_generates_an_id_and_defaults(hub):
    st, _, b = call(hub, "POST", "/api/conversations", raw=b"")
    assert st == 201, b
    c = b["data"]
    assert UUID.match(c["id"]), c
    assert (c["title"], c["agent"], c["metadata"], c["members"]) == (None, None, {}, ["alice"])


def test_create_refuses_a_taken_id_409(hub):
    create_conv(hub, "c1")
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "c1"})
    assert (st, b) == (409, err("exists", "a conversation with this id exists"))
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "c1"}, token="bob:lap")
    assert (st, b) == (409, err("exists", "a conversation with this id exists"))


@pytest.mark.parametrize("body,error", [
    (b"not json", "the body must be a JSON object"),
    (b"[1,2]", "the body must be a JSON object"),
    (json.dumps({"id": "x" * 129}).encode(), '"id" must be a string of 1..128 bytes'),
    (json.dumps({"id": ""}).encode(), '"id" must be a string of 1..128 bytes'),
    (json.dumps({"title": 5}).encode(), '"title" must be a string of 0..1024 bytes'),
    (json.dumps({"members": "bob"}).encode(), '"members" must be an array of user ids'),
    (json.dumps({"members": ["bad id"]}).encode(),
     '"members" must be an array of user ids (1..128 bytes of A-Z a-z 0-9 . _ @ : -)'),
    (json.dumps({"metadata": [1]}).encode(), '"metadata" must be an object'),
    (json.dumps({"projectId": "nope"}).encode(), '"projectId" names no project'),
])
def test_create_refuses_bad_bodies_400(hub, body, error):
    st, _, b = call(hub, "POST", "/api/conversations", raw=body)
    assert (st, b) == (400, err("invalid", error))


def test_get_unknown_404_and_other_users_403(hub):
    st, _, b = call(hub, "GET", "/api/conversations/nope")
    assert (st, b) == (404, err("not_found", "conversation not found"))
    create_conv(hub, "c1", members=["carol"])
    st, _, b = call(hub, "GET", "/api/conversations/c1", token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))
    st, _, b = call(hub, "GET", "/api/conversations/c1", token="carol:phone")
    assert st == 200 and b["data"]["id"] == "c1"
    st, _, b = call(hub, "GET", "/api/conversations/c1", token=mint(hub, "root", scopes="admin"))
    assert st == 200 and b["data"]["id"] == "c1"


def test_get_with_messages(hub):
    create_conv(hub, "c1")
    for i in range(3):
        post_message(hub, "c1", f"m{i}")
    st, _, b = call(hub, "GET", "/api/conversations/c1?messages=true")
    assert st == 200
    assert [(m["seq"], m["content"]) for m in b["data"]["messages"]] == [(1, "m0"), (2, "m1"), (3, "m2")]
    assert b["data"]["lastSeq"] == 3 and b["data"]["messageCount"] == 3
    st, _, b = call(hub, "GET", "/api/conversations/c1")
    assert "messages" not in b["data"]
    st, _, b = call(hub, "GET", "/api/conversations/c1?messages=maybe")
    assert (st, b) == (400, err("invalid", "messages must be true or false"))


# ---- list ------------------------------------------------------------------------------

def test_list_shows_own_and_member_conversations_admin_all(hub):
    create_conv(hub, "a1")
    create_conv(hub, "a2", members=["bob"])
    create_conv(hub, "b1", token="bob:lap")
    ids = lambda b: sorted(c["id"] for c in b["data"])  # noqa: E731
    st, _, b = call(hub, "GET", "/api/conversations")
    assert st == 200 and ids(b) == ["a1", "a2"]
    st, _, b = call(hub, "GET", "/api/conversations", token="bob:lap")
    assert ids(b) == ["a2", "b1"]
    st, _, b = call(hub, "GET", "/api/conversations", token="carol:lap")
    assert b == {"success": True, "data": []}
    st, _, b = call(hub, "GET", "/api/conversations", token=mint(hub, "root", scopes="admin"))
    assert ids(b) == ["a1", "a2", "b1"]


def test_list_filters_project_search_limit_offset(hub):
    call(hub, "POST", "/api/projects", {"id": "p1", "name": "One"})
    create_conv(hub, "in-p1", projectId="p1")
    create_conv(hub, "loose")
    post_message(hub, "loose", "the quick brown fox")
    post_message(hub, "in-p1", "lazy dogs sleep")
    st, _, b = call(hub, "GET", "/api/conversations?projectId=p1")
    assert st == 200 and [c["id"] for c in b["data"]] == ["in-p1"]
    st, _, b = call(hub, "GET", "/api/conversations?search=fox")
    assert [c["id"] for c in b["data"]] == ["loose"]
    st, _, b = call(hub, "GET", "/api/conversations?search=" + q('"unbalanced'))
    assert (st, b) == (400, err("invalid", "the search query is not valid"))
    # newest activity first; limit and offset page through
    st, _, b = call(hub, "GET", "/api/conversations?limit=1")
    assert [c["id"] for c in b["data"]] == ["in-p1"]
    st, _, b = call(hub, "GET", "/api/conversations?limit=1&offset=1")
    assert [c["id"] for c in b["data"]] == ["loose"]
    for bad in ("limit=-1", "limit=1001", "limit=x", "offset=1.5"):
        st, _, b = call(hub, "GET", "/api/conversations?" + bad)
        assert (st, b) == (400, err("invalid", "limit must be 0..1000 and offset a non-negative integer")), bad


# ---- update / delete ----------------------------------------------------------------------

def test_patch_updates_fields_and_members(hub):
    create_conv(hub, "c1", title="Old", members=["bob"])
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"title": "New", "metadata": {"x": 1}})
    assert st == 200 and b["data"]["title"] == "New" and b["data"]["metadata"] == {"x": 1}
    assert b["data"]["members"] == ["alice", "bob"]
    # a member may rename, not change the members
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"title": "Bob's"}, token="bob:lap")
    assert st == 200 and b["data"]["title"] == "Bob's"
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"members": ["bob", "mallory"]}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "only the owner may change the members"))
    # the owner replaces the list; the owner stays
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"members": ["carol"]})
    assert st == 200 and b["data"]["members"] == ["alice", "carol"]
    st, _, b = call(hub, "GET", "/api/conversations/c1", token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))
    st, _, b = call(hub, "GET", "/api/conversations/c1", token="carol:lap")
    assert st == 200


def test_patch_errors(hub):
    st, _, b = call(hub, "PATCH", "/api/conversations/nope", {"title": "x"})
    assert (st, b) == (404, err("not_found", "conversation not found"))
    create_conv(hub, "c1")
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"title": "x"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"id": "c2"})
    assert (st, b) == (400, err("invalid", "a conversation's id cannot change"))
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", raw=b"[]")
    assert (st, b) == (400, err("invalid", "the body must be a JSON object"))
    st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"agent": ""})
    assert (st, b) == (400, err("invalid", '"agent" must be a string of 1..128 bytes'))


def test_delete(hub):
    c = create_conv(hub, "c1", members=["bob"])
    post_message(hub, "c1", "hello")
    st, _, b = call(hub, "DELETE", "/api/conversations/c1", token="bob:lap")
    assert (st, b) == (403, err("forbidden", "only the owner may delete the conversation"))
    st, _, b = call(hub, "DELETE", "/api/conversations/c1", token="carol:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))
    st, _, b = call(hub, "DELETE", "/api/conversations/c1")
    assert st == 200 and b["data"]["id"] == "c1" and b["data"]["lastSeq"] == 1
    assert b["data"]["epoch"] == c["epoch"]
    st, _, b = call(hub, "GET", "/api/conversations/c1")
    assert (st, b) == (404, err("not_found", "conversation not found"))
    st, _, b = call(hub, "DELETE", "/api/conversations/c1")
    assert (st, b) == (404, err("not_found", "conversation not found"))
    # the id can be used again, with a new epoch
    c2 = create_conv(hub, "c1")
    assert c2["epoch"] != c["epoch"] and c2["lastSeq"] == 0


# ---- messages ---------------------------------------------------------------------------------

def test_post_message_201_stored_and_idempotent(hub):
    create_conv(hub, "c1")
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages?source=cli",
                    {"id": "m-1", "role": "assistant", "content": "hi", "context": {"k": 1}})
    assert st == 201 and b["success"] is True
    m = b["data"]
    assert (m["seq"], m["id"], m["role"], m["content"], m["source"], m["context"]) == \
        (1, "m-1", "assistant", "hi", "cli", {"k": 1})
    assert m["conversationId"] == "c1" and m["userId"] == "alice" and ISO.match(m["timestamp"])
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"id": "m-1", "content": "hi again"})
    assert st == 200 and b["data"]["seq"] == 1 and b["data"]["content"] == "hi", b
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"content": "plain"})
    assert st == 201 and b["data"]["seq"] == 2 and b["data"]["source"] == "api" and b["data"]["role"] == "user"
    st, _, b = call(hub, "GET", "/api/conversations/c1")
    assert b["data"]["lastSeq"] == 2 and b["data"]["messageCount"] == 2


def test_post_message_creates_an_unknown_conversation(hub):
    st, _, b = call(hub, "POST", "/api/conversations/fresh/messages", {"content": "first"})
    assert st == 201 and b["data"]["seq"] == 1
    st, _, b = call(hub, "GET", "/api/conversations/fresh")
    assert st == 200 and b["data"]["owner"] == "alice"


def test_post_message_errors(hub):
    create_conv(hub, "c1")
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"role": "boss", "content": "x"})
    assert (st, b) == (400, err("invalid", "message.role must be user, assistant, system or tool"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", raw=b"[1]")
    assert (st, b) == (400, err("invalid", "message must be a JSON object"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"content": 5})
    assert (st, b) == (400, err("invalid", "message.content must be a string"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"content": "x"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))


def test_messages_paging(hub):
    create_conv(hub, "c1")
    for i in range(1, 11):
        post_message(hub, "c1", f"m{i}")
    page = lambda qs: call(hub, "GET", "/api/conversations/c1/messages" + qs)  # noqa: E731
    st, _, b = page("?after=3&limit=4")
    d = b["data"]
    assert st == 200 and [m["seq"] for m in d["messages"]] == [4, 5, 6, 7]
    assert [m["content"] for m in d["messages"]] == ["m4", "m5", "m6", "m7"]
    assert (d["conversationId"], d["lastSeq"], d["hasMore"]) == ("c1", 10, True) and UUID.match(d["epoch"])
    st, _, b = page("?after=7")
    assert [m["seq"] for m in b["data"]["messages"]] == [8, 9, 10] and b["data"]["hasMore"] is False
    st, _, b = page("?tail=1&limit=3")
    assert [m["seq"] for m in b["data"]["messages"]] == [8, 9, 10] and b["data"]["hasMore"] is True
    st, _, b = page("?tail=true&limit=3&after=6")
    assert [m["seq"] for m in b["data"]["messages"]] == [8, 9, 10] and b["data"]["hasMore"] is True
    st, _, b = page("?tail=1&limit=5&after=5")
    assert [m["seq"] for m in b["data"]["messages"]] == [6, 7, 8, 9, 10] and b["data"]["hasMore"] is False
    st, _, b = page("")
    assert [m["seq"] for m in b["data"]["messages"]] == list(range(1, 11)) and b["data"]["hasMore"] is False
    st, _, b = page("?after=10")
    assert b["data"]["messages"] == [] and b["data"]["hasMore"] is False
    for bad in ("?after=-1", "?after=x", "?limit=1001", "?tail=2"):
        st, _, b = page(bad)
        assert (st, b) == (400, err("invalid", "after must be a seq, limit 0..1000, tail true or false")), bad
    st, _, b = call(hub, "GET", "/api/conversations/nope/messages")
    assert (st, b) == (404, err("not_found", "conversation not found"))
    st, _, b = call(hub, "GET", "/api/conversations/c1/messages", token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))


# ---- projects ----------------------------------------------------------------------------

def test_projects(hub):
    st, _, b = call(hub, "POST", "/api/projects", {"id": "p1", "name": "Apollo"})
    assert st == 201
    p = b["data"]
    assert set(p) == {"id", "name", "owner", "createdAt"}
    assert (p["id"], p["name"], p["owner"]) == ("p1", "Apollo", "alice") and ISO.match(p["createdAt"])
    st, _, b = call(hub, "POST", "/api/projects", {"id": "p1", "name": "Again"})
    assert (st, b) == (409, err("exists", "a project with this id exists"))
    st, _, b = call(hub, "POST", "/api/projects", raw=b"")
    assert st == 201 and UUID.match(b["data"]["id"]) and b["data"]["name"] == b["data"]["id"]
    st, _, b = call(hub, "POST", "/api/projects", {"name": ""})
    assert (st, b) == (400, err("invalid", '"name" must be a string of 1..256 bytes'))
    call(hub, "POST", "/api/projects", {"id": "bp", "name": "Bob's"}, token="bob:lap")
    st, _, b = call(hub, "GET", "/api/projects")
    assert st == 200 and [x["id"] for x in b["data"]][0] == "p1" and "bp" not in [x["id"] for x in b["data"]]
    assert len(b["data"]) == 2
    st, _, b = call(hub, "GET", "/api/projects", token=mint(hub, "root", scopes="admin"))
    assert sorted(x["id"] for x in b["data"]) == sorted(["p1", "bp", b["data"][1]["id"]])
    st, _, b = call(hub, "GET", "/api/projects/p1")
    assert (st, b) == (200, {"success": True, "data": p})
    st, _, b = call(hub, "GET", "/api/projects/p1", token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not the owner of this project"))
    st, _, b = call(hub, "GET", "/api/projects/nope")
    assert (st, b) == (404, err("not_found", "project not found"))
    # conversations go only into one's own projects
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "c1", "projectId": "bp"})
    assert (st, b) == (403, err("forbidden", "not the owner of this project"))
    c = create_conv(hub, "c1", projectId="p1")
    assert c["projectId"] == "p1"


# ---- live pushes of conversation operations ------------------------------------------------

def test_conversation_ops_reach_joined_ws_clients(hub):
    async def go():
        create_conv(hub, "c1", members=["bob"])
        bob = await Client.connect(hub, "bob:phone", source="iphone")
        await bob.join("c1")
        st, _, b = call(hub, "PATCH", "/api/conversations/c1", {"title": "Renamed"})
        assert st == 200
        f = await bob.expect("conversation")
        assert (f["op"], f["conversationId"], f["conversation"]) == ("updated", "c1", b["data"])
        assert ISO.match(f["timestamp"])
        st, _, b = call(hub, "DELETE", "/api/conversations/c1")
        f = await bob.expect("conversation")
        assert (f["op"], f["conversation"]["id"]) == ("deleted", "c1")
        await bob.close()
    run(go())


def test_relay_project_subscriber_gets_a_created_chat(hub):
    """Profile relay: chats created with POST /api/conversations + projectId reach the
    project's subscribers (the push is rendered by the relay adapter)."""
    import websockets

    async def go():
        call(hub, "POST", "/api/projects", {"id": "p1", "name": "One"})
        ws = await websockets.connect(hub.ws_url("/ws/relay"), open_timeout=5)
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first == {"id": None, "type": "auth_required"}
        await ws.send(json.dumps({"id": "1", "type": "auth", "token": "alice:lap"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "auth_success"
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "resource": "project", "resourceId": "p1"}))
        f = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert f["type"] == "subscribed", f
        create_conv(hub, "chat-9", projectId="p1", title="From REST")
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if f.get("id") is None and f.get("type") == "data":
                break
        assert (f["resource"], f["resourceId"]) == ("project", "p1")
        assert "chat-9" in json.dumps(f["data"])
        await ws.close()
    run(go())


# ---- ephemeral conversation events ------------------------------------------------------------

def test_post_conversation_event_reaches_joined_clients(hub):
    async def go():
        create_conv(hub, "c1")
        a = await Client.connect(hub, "alice:desk", source="desktop")
        await a.join("c1")
        st, _, b = call(hub, "POST", "/api/conversations/c1/events?source=ci",
                        {"event": "progress", "payload": {"pct": 40}})
        assert (st, b) == (202, {"success": True, "delivered": 1})
        f = await a.expect("event")
        ts = f.pop("timestamp")
        assert ISO.match(ts)
        assert f == {"type": "event", "conversationId": "c1", "clientId": None, "source": "ci", "userId": "alice",
                     "event": "progress", "payload": {"pct": 40}}
        await a.close()
    run(go())


def test_post_conversation_event_errors(hub):
    st, _, b = call(hub, "POST", "/api/conversations/nope/events", {"event": "x"})
    assert (st, b) == (404, err("not_found", "conversation not found"))
    create_conv(hub, "c1")
    st, _, b = call(hub, "POST", "/api/conversations/c1/events", {"event": "x"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "not a member of this conversation"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/events", {"payload": 1})
    assert (st, b) == (400, err("invalid", '"event" must be a string of 1..64 bytes'))
    st, _, b = call(hub, "POST", "/api/conversations/c1/events", raw=b"nope")
    assert (st, b) == (400, err("invalid", 'the body must be a JSON object {"event","payload"}'))
    st, _, b = call(hub, "POST", "/api/conversations/c1/events", {"event": "x"})
    assert (st, b) == (202, {"success": True, "delivered": 0})


# ---- the user channel: POST /api/users/:userId/events -----------------------------------------

def test_user_events_need_admin_or_api_key(hub):
    st, _, b = call(hub, "POST", "/api/users/alice/events", {"type": "CREDIT_UPDATE", "payload": {}})
    assert (st, b) == (403, err("forbidden", "publishing to a user needs an admin credential or an API key"))
    st, _, b = call(hub, "POST", "/api/users/alice/events", {"type": "X"}, token=mint(hub, "alice"))
    assert st == 403
    ro_key = apikey(hub, "backend", scopes="read")
    st, _, b = call(hub, "POST", "/api/users/alice/events", {"type": "X"}, token=ro_key)
    assert st == 403
    admin = mint(hub, "root", scopes="admin")
    st, _, b = call(hub, "POST", "/api/users/alice/events", {"type": "CREDIT_UPDATE", "payload": {"c": 1}},
                    token=admin)
    assert (st, b) == (202, {"success": True, "delivered": 0})
    key = apikey(hub, "backend")
    st, _, b = call(hub, "POST", "/api/users/alice/events", {"type": "X"}, token=key)
    assert (st, b) == (202, {"success": True, "delivered": 0})
    for body in (b"[]", b'{"payload":{}}', b'{"type":""}', json.dumps({"type": "T" * 65}).encode()):
        st, _, b = call(hub, "POST", "/api/users/alice/events", raw=body, token=key)
        assert (st, b) == (400, err("invalid", 'the body must be {"type":"<1..64 bytes>","payload":...}')), body
    st, _, b = call(hub, "POST", "/api/users/" + q("bad user") + "/events", {"type": "X"}, token=key)
    assert (st, b) == (400, err("invalid", "not a valid user id"))


def test_user_event_reaches_the_users_devices(hub):
    import websockets

    async def go():
        key = apikey(hub, "backend")
        phone = await websockets.connect(hub.ws_url("/ws/devices?token=alice:phone"), open_timeout=5)
        tablet = await websockets.connect(hub.ws_url("/ws/devices?token=alice:tablet"), open_timeout=5)
        # wait until both are on the channel: the phone hears the tablet connect
        while True:
            f = json.loads(await asyncio.wait_for(phone.recv(), 5))
            if f.get("type") == "DEVICE_CONNECTED" and f["payload"].get("deviceId") == "tablet":
                break
        st, _, b = call(hub, "POST", "/api/users/alice/events",
                        {"type": "SHOOT_PROGRESS", "payload": {"shootId": "s1", "processedCount": 3}}, token=key)
        assert (st, b) == (202, {"success": True, "delivered": 2})
        for ws in (phone, tablet):
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if f.get("type") == "SHOOT_PROGRESS":
                    break
            assert f["payload"] == {"shootId": "s1", "processedCount": 3} and ISO.match(f["timestamp"])
        st, _, b = call(hub, "POST", "/api/users/bob/events", {"type": "X"}, token=key)
        assert (st, b) == (202, {"success": True, "delivered": 0})
        await phone.close()
        await tablet.close()
    run(go())


# ---- SSE: GET /api/conversations/:id/events ------------------------------------------------------

def msgs(events):
    return [e for e in events if e.get("event") == "message"]


def test_sse_resume_after_50_messages_exactly_the_missing_ones(hub):
    create_conv(hub, "c1")
    sent = [post_message(hub, "c1", f"m{i}") for i in range(1, 51)]
    s = SSE(hub, "/api/conversations/c1/events", last_event_id=30)
    assert s.status == 200 and s.headers["content-type"].startswith("text/event-stream")
    evs = s.until(lambda e: e.get("event") == "sync")
    got = msgs(evs)
    assert [e["id"] for e in got] == [str(i) for i in range(31, 51)]
    assert len(evs) == len(got) + 1, "nothing but the missing messages, then sync"
    for e, m in zip(got, sent[30:]):
        assert e["data"] == {"type": "message", "conversationId": "c1", "seq": m["seq"], "message": m}
    sync = evs[-1]
    assert "id" not in sync, "the sync event must not move the resume point"
    assert sync["data"]["lastSeq"] == 50 and sync["data"]["count"] == 20
    # then live, with the same shape and the next id
    m51 = post_message(hub, "c1", "live")
    e = s.until(lambda e: e.get("event") == "message")[-1]
    assert e["id"] == "51" and e["data"] == {"type": "message", "conversationId": "c1", "seq": 51, "message": m51}
    s.close()


def test_sse_since_query_and_header_precedence(hub):
    create_conv(hub, "c1")
    for i in range(1, 11):
        post_message(hub, "c1", f"m{i}")
    s = SSE(hub, "/api/conversations/c1/events?since=7")
    assert [e["id"] for e in msgs(s.until(lambda e: e.get("event") == "sync"))] == ["8", "9", "10"]
    s.close()
    # an EventSource reconnecting keeps its URL; its Last-Event-ID wins
    s = SSE(hub, "/api/conversations/c1/events?since=2", last_event_id=9)
    assert [e["id"] for e in msgs(s.until(lambda e: e.get("event") == "sync"))] == ["10"]
    s.close()
    s = SSE(hub, "/api/conversations/c1/events?since=10")
    evs = s.until(lambda e: e.get("event") == "sync")
    assert msgs(evs) == [] and evs[-1]["data"]["count"] == 0
    s.close()
    s = SSE(hub, "/api/conversations/c1/events")  # no resume point: the history
    assert [e["id"] for e in msgs(s.until(lambda e: e.get("event") == "sync"))] == [str(i) for i in range(1, 11)]
    s.close()
    s = SSE(hub, "/api/conversations/c1/events?limit=2")
    assert [e["id"] for e in msgs(s.until(lambda e: e.get("event") == "sync"))] == ["9", "10"]
    s.close()


def test_sse_resume_point_beyond_the_history_resets(hub):
    create_conv(hub, "c1")
    for i in range(3):
        post_message(hub, "c1", f"m{i}")
    s = SSE(hub, "/api/conversations/c1/events", last_event_id=99)
    evs = s.until(lambda e: e.get("event") == "sync")
    assert evs[0]["event"] == "reset" and evs[0]["data"]["lastSeq"] == 3
    assert [e["id"] for e in msgs(evs)] == ["1", "2", "3"]
    s.close()


def test_sse_gap_free_while_messages_flow(hub):
    """Messages are written while the stream joins: every seq arrives exactly once, in order."""
    create_conv(hub, "c1")
    total = 120
    stop = threading.Event()
    errors = []

    def writer():
        try:
            for i in range(1, total + 1):
                post_message(hub, "c1", f"m{i}")
        except Exception as e:  # surfaced below
            errors.append(e)
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    s = SSE(hub, "/api/conversations/c1/events?since=0")
    evs = s.until(lambda e: e.get("event") == "message" and e["id"] == str(total), timeout=30)
    t.join()
    assert not errors, errors
    assert [e["id"] for e in msgs(evs)] == [str(i) for i in range(1, total + 1)]
    s.quiet(0.3, pred=lambda e: e.get("event") == "message")
    s.close()


def test_sse_carries_presence_events_and_conversation_ops(hub):
    async def go():
        create_conv(hub, "c1", members=["bob"])
        s = SSE(hub, "/api/conversations/c1/events?source=dash")
        s.until(lambda e: e.get("event") == "sync")
        bob = await Client.connect(hub, "bob:phone", source="iphone")
        await bob.join("c1")
        e = s.until(lambda e: e.get("event") == "presence")[-1]
        assert "id" not in e and e["data"]["userId"] == "bob" and e["data"]["connected"] is True
        # the stream is in the room: bob sees its presence in his sync, and its events
        st, _, b = call(hub, "POST", "/api/conversations/c1/events", {"event": "ping", "payload": 1})
        assert b == {"success": True, "delivered": 2}
        e = s.until(lambda e: e.get("event") == "event")[-1]
        assert e["data"]["event"] == "ping" and "id" not in e
        call(hub, "PATCH", "/api/conversations/c1", {"title": "T2"})
        e = s.until(lambda e: e.get("event") == "conversation")[-1]
        assert e["data"]["op"] == "updated" and e["data"]["conversation"]["title"] == "T2"
        await bob.send_message("c1", "from ws")
        e = s.until(lambda e: e.get("event") == "message")[-1]
        assert e["id"] == "1" and e["data"]["message"]["content"] == "from ws"
        await bob.close()
        s.close()
    run(go())


def test_sse_refusals(hub):
    s = SSE(hub, "/api/conversations/c1/events", token=None)
    assert (s.status, s.body) == (401, MISSING_CRED)
    create_conv(hub, "c1")
    s = SSE(hub, "/api/conversations/c1/events", token="bob:lap")
    assert (s.status, s.body) == (403, err("forbidden", "not a member of this conversation"))
    s = SSE(hub, "/api/conversations/c1/events?since=-4")
    assert (s.status, s.body) == (400, err("invalid", "since must be a seq (a non-negative integer)"))
    s = SSE(hub, "/api/conversations/c1/events?limit=x")
    assert (s.status, s.body) == (400, err("invalid", "limit must be 0..100000"))
    wo = apikey(hub, "alice", scopes="write")
    s = SSE(hub, "/api/conversations/c1/events", token=wo)
    assert (s.status, s.body) == (403, err("forbidden", "this credential may not read"))


def test_sse_unknown_conversation_is_claimed_like_a_join(hub):
    s = SSE(hub, "/api/conversations/later/events")
    evs = s.until(lambda e: e.get("event") == "sync")
    assert msgs(evs) == [] and evs[-1]["data"]["lastSeq"] == 0
    # another user may not take the id while alice listens
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "later"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "conversation id in use by another user"))
    m = post_message(hub, "later", "created now")
    e = s.until(lambda e: e.get("event") == "message")[-1]
    assert e["id"] == "1" and e["data"]["message"] == m
    s.close()
    # and a stream of bob's on alice's claimed id is refused in-stream
    s2 = SSE(hub, "/api/conversations/other/events")
    s2.until(lambda e: e.get("event") == "sync")
    s3 = SSE(hub, "/api/conversations/other/events", token="bob:lap")
    assert s3.status == 200
    e = s3.next_event()
    assert e["event"] == "error" and e["data"]["code"] == "forbidden"
    assert s3.next_event() is None, "the stream ends after the error"
    s2.close()
    s3.close()


def test_sse_client_leaving_clears_presence(hub):
    async def go():
        create_conv(hub, "c1")
        a = await Client.connect(hub, "alice:desk", source="desktop")
        await a.join("c1")
        s = SSE(hub, "/api/conversations/c1/events")
        s.until(lambda e: e.get("event") == "sync")
        f = await a.expect("presence", pred=lambda f: f.get("conversationId") == "c1")
        assert f["connected"] is True and f["source"] == "sse"
        s.close()
        f = await a.expect("presence", pred=lambda f: f.get("conversationId") == "c1")
        assert f["connected"] is False and f["clientId"] != a.client_id
        await a.close()
    run(go())


def test_sse_follows_a_conversation_deleted_and_created_again(hub):
    create_conv(hub, "c1")
    for i in range(3):
        post_message(hub, "c1", f"old{i}")
    s = SSE(hub, "/api/conversations/c1/events")
    assert [e["id"] for e in msgs(s.until(lambda e: e.get("event") == "sync"))] == ["1", "2", "3"]
    st, _, b = call(hub, "DELETE", "/api/conversations/c1")
    assert st == 200
    e = s.until(lambda e: e.get("event") == "conversation")[-1]
    assert e["data"]["op"] == "deleted" and "id" not in e
    # while alice still listens, the id stays hers
    st, _, b = call(hub, "POST", "/api/conversations", {"id": "c1"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "conversation id in use by another user"))
    st, _, b = call(hub, "POST", "/api/conversations/c1/messages", {"content": "mine"}, token="bob:lap")
    assert (st, b) == (403, err("forbidden", "conversation id in use by another user"))
    # the new conversation counts from 1 again, and the stream delivers it
    m = post_message(hub, "c1", "new life")
    e = s.until(lambda e: e.get("event") == "message")[-1]
    assert e["id"] == "1" and e["data"]["message"] == m
    s.close()
