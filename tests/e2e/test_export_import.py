"""`chorus export` / `chorus import`, black box (docs/OPERATIONS.md, src/cli/export.h).

Covered: a chorus export restores into a fresh data directory and exports again
identically (hub-written data, and a hand-made document holding every event kind,
members, projects, metadata); importing twice changes nothing; a folder of profile
`unified` conversation files imports as conversations of --user that a hub then serves
on join, with every field of every message kept; import while the hub runs, after
which the hub goes on numbering; unified export of what was imported; bad files are
reported by name with what is wrong, and nothing of a bad conversation is left behind;
usage errors exit 2.

The hubs run with --insecure-dev, so "user:device" is a credential.
"""
import asyncio
import json
import os
import re
import subprocess

import websockets

from conftest import CHORUS_BIN, run


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def chorus(*args, stdin=None):
    """Run the chorus binary; returns CompletedProcess (text). A sanitizer report fails the test."""
    r = subprocess.run([CHORUS_BIN, *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert not any(m in r.stderr for m in SANITIZER_MARKS), r.stderr
    return r


def export_doc(data_dir, *extra):
    r = chorus("export", "--data-dir", data_dir, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def without_export_time(doc):
    doc = dict(doc)
    assert isinstance(doc.pop("exportedAt"), str)
    return doc


SUMMARY = re.compile(r"conversations: (\d+) \(new (\d+), updated (\d+), unchanged (\d+)\), "
                     r"events added: (\d+), already present: (\d+), failed: (\d+)")


def counts(stdout):
    """The import summary line (the last line of stdout) as a dict of ints."""
    m = SUMMARY.fullmatch(stdout.strip().splitlines()[-1])
    assert m, f"no summary line in {stdout!r}"
    keys = ("conversations", "new", "updated", "unchanged", "events added", "already present", "failed")
    return dict(zip(keys, map(int, m.groups())))


# ---- a tiny native-protocol client -----------------------------------------------------

async def connect(hub, token, source="test"):
    ws = await websockets.connect(hub.ws_url(f"/ws?source={source}&token={token}"), compression=None,
                                  max_size=None, open_timeout=10)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert welcome["type"] == "presence", welcome
    return ws


async def expect(ws, type_, timeout=10):
    while True:
        f = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if f.get("type") == type_ or f.get("type") == "error":
            return f


async def join(ws, conv):
    await ws.send(json.dumps({"type": "join", "conversationId": conv}))
    return await expect(ws, "sync")


async def send(ws, conv, message, rid):
    await ws.send(json.dumps({"type": "message", "conversationId": conv, "message": message, "id": rid}))
    ack = await expect(ws, "ack")
    assert ack.get("type") == "ack" and ack["id"] == rid, ack
    return ack


# ---- chorus format ----------------------------------------------------------------------

def test_round_trip_of_hub_written_data_is_identical_and_reimport_changes_nothing(make_hub, tmp_path):
    hub = make_hub("--insecure-dev")

    async def fill():
        a = await connect(hub, "alice:laptop", "desktop")
        b = await connect(hub, "bob:phone", "iphone")
        await join(a, "trip-1")
        for i in range(12):
            await send(a, "trip-1", {"id": f"a-{i}", "role": "user" if i % 2 else "assistant",
                                     "content": f"message {i} ✓ \"quoted\"\n",
                                     "context": {"hasScreen": i % 3 == 0, "metadata": {"n": i}}}, f"r{i}")
        await send(b, "bob-notes", {"content": "note without an id"}, "b1")
        await send(b, "bob-notes", {"content": "second", "source": "chatgpt"}, "b2")
        await a.close()
        await b.close()
    run(fill())

    # Export while the hub runs.
    exported = export_doc(hub.data_dir)
    convs = {c["id"]: c for c in exported["conversations"]}
    assert set(convs) == {"trip-1", "bob-notes"}
    assert exported["version"] == 1
    t = convs["trip-1"]
    assert t["owner"] == "alice" and t["members"] == ["alice"] and t["lastSeq"] == 12 and t["messageCount"] == 12
    assert [e["seq"] for e in t["events"]] == list(range(1, 13))
    assert t["events"][3]["clientId"] == "a-3" and t["events"][3]["body"]["context"] == {"hasScreen": True,
                                                                                         "metadata": {"n": 3}}
    assert all(e["kind"] == "message" and e["userId"] == "alice" and e["deviceId"] == "laptop" for e in t["events"])

    out = tmp_path / "export.json"
    r = chorus("export", "--data-dir", hub.data_dir, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert without_export_time(json.loads(out.read_text())) == without_export_time(exported)

    fresh = str(tmp_path / "fresh")
    r = chorus("import", "--data-dir", fresh, str(out))
    assert r.returncode == 0, r.stderr
    c = counts(r.stdout)
    assert c["conversations"] == 2 and c["new"] == 2 and c["events added"] == 14 and c["failed"] == 0, r.stdout
    again = export_doc(fresh)
    assert without_export_time(again) == without_export_time(exported)

    # Importing the same file twice changes nothing.
    r = chorus("import", "--data-dir", fresh, str(out))
    assert r.returncode == 0, r.stderr
    c = counts(r.stdout)
    assert c["unchanged"] == 2 and c["events added"] == 0 and c["already present"] == 14, r.stdout
    assert without_export_time(export_doc(fresh)) == without_export_time(exported)

    # --conversation picks one; the document is then restorable on its own (stdin too).
    one = export_doc(hub.data_dir, "--conversation", "bob-notes")
    assert [c["id"] for c in one["conversations"]] == ["bob-notes"]
    other = str(tmp_path / "other")
    r = chorus("import", "--data-dir", other, "-", stdin=json.dumps(one))
    assert r.returncode == 0, r.stderr
    assert without_export_time(export_doc(other)) == without_export_time(one)


def test_export_during_writes_is_a_consistent_cut(make_hub, tmp_path):
    hub = make_hub("--insecure-dev")

    async def go():
        a = await connect(hub, "alice:laptop")
        stop = asyncio.Event()

        async def writer():
            i = 0
            while not stop.is_set():
                await send(a, "busy", {"id": f"w{i}", "content": f"x{i}"}, f"r{i}")
                i += 1
            return i

        task = asyncio.create_task(writer())
        docs = []
        for _ in range(4):
            await asyncio.sleep(0.1)
            r = await asyncio.to_thread(chorus, "export", "--data-dir", hub.data_dir)
            assert r.returncode == 0, r.stderr
            docs.append(json.loads(r.stdout))
        stop.set()
        total = await task
        await a.close()
        return docs, total

    docs, total = run(go())
    last = 0
    for i, doc in enumerate(docs):
        busy = [c for c in doc["conversations"] if c["id"] == "busy"]
        if not busy:
            continue
        c = busy[0]
        seqs = [e["seq"] for e in c["events"]]
        assert seqs == list(range(1, c["lastSeq"] + 1)) and c["messageCount"] == c["lastSeq"], c["lastSeq"]
        assert c["lastSeq"] >= last
        last = c["lastSeq"]
        d = str(tmp_path / f"restore{i}")
        r = chorus("import", "--data-dir", d, "-", stdin=json.dumps(doc))
        assert r.returncode == 0, r.stderr
        assert without_export_time(export_doc(d)) == without_export_time(doc)
    assert 0 < last <= total


def full_document():
    """An export holding every event kind, members, a project and metadata."""
    ev = lambda seq, kind, **kw: {"seq": seq, "kind": kind, "id": f"ev-{seq}", "userId": "carol",
                                  "ts": f"2025-01-02T03:04:{seq:02d}.{seq:03d}Z", **kw}
    msg = lambda i, text, role="user": {"id": f"m{i}", "conversationId": "all-kinds", "role": role,
                                       "content": text, "source": "web", "userId": "carol",
                                       "timestamp": f"2025-01-02T03:04:0{i}.000Z"}
    return {
        "version": 1,
        "exportedAt": "2025-01-03T00:00:00.000Z",
        "projects": [{"id": "proj-1", "name": "Project One", "owner": "carol",
                      "createdAt": "2024-12-31T23:59:59.999Z"}],
        "conversations": [{
            "id": "all-kinds", "projectId": "proj-1", "title": "Every kind ✓", "owner": "carol",
            "agent": "claude", "metadata": {"pinned": True, "tags": ["a", "b"]},
            "createdAt": "2025-01-02T03:04:00.000Z", "updatedAt": "2025-01-02T03:04:08.008Z",
            "lastSeq": 8, "messageCount": 2, "members": ["carol", "dave"],
            "events": [
                ev(1, "message", clientId="m1", role="user", content="first", source="web", deviceId="d1",
                   body=msg(1, "first")),
                ev(2, "message", clientId="m2", role="assistant", content="second", source="web",
                   body=msg(2, "second", "assistant")),
                ev(3, "edit", refSeq=1, body=msg(1, "first, edited")),
                ev(4, "reaction", refSeq=2, body={"emoji": "👍", "op": "add"}),
                ev(5, "member", body={"userId": "dave", "op": "add", "role": "member"}),
                ev(6, "custom", type="progress", body={"pct": 40}),
                ev(7, "message", clientId="m3", role="user", content="third", body=msg(3, "third")),
                ev(8, "delete", refSeq=7),
            ],
        }, {
            "id": "empty-one", "owner": "erin", "createdAt": "2025-02-01T00:00:00.000Z",
            "updatedAt": "2025-02-01T00:00:00.000Z", "lastSeq": 0, "messageCount": 0,
            "members": ["erin"], "events": [],
        }],
    }


def test_every_event_kind_members_and_projects_restore_exactly(tmp_path):
    doc = full_document()
    src = tmp_path / "full.json"
    src.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    data = str(tmp_path / "data")
    r = chorus("import", "--data-dir", data, str(src))
    assert r.returncode == 0, r.stderr
    c = counts(r.stdout)
    assert c["new"] == 2 and c["events added"] == 8, r.stdout
    assert without_export_time(export_doc(data)) == without_export_time(doc)

    r = chorus("import", "--data-dir", data, str(src))
    assert r.returncode == 0 and counts(r.stdout)["unchanged"] == 2, r.stdout + r.stderr
    assert without_export_time(export_doc(data)) == without_export_time(doc)

    # The unified shape of it: edits applied, the deleted message gone, only messages.
    out = tmp_path / "unified"
    r = chorus("export", "--data-dir", data, "--format", "unified", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["all-kinds.json", "empty-one.json"]
    u = json.loads((out / "all-kinds.json").read_text())
    assert u["id"] == "all-kinds" and u["title"] == "Every kind ✓"
    assert u["createdAt"] == "2025-01-02T03:04:00.000Z" and u["updatedAt"] == "2025-01-02T03:04:08.008Z"
    assert [m["content"] for m in u["messages"]] == ["first, edited", "second"]
    assert u["messages"][1] == doc["conversations"][0]["events"][1]["body"]
    assert json.loads((out / "empty-one.json").read_text())["messages"] == []


def test_conflicting_history_is_refused_and_rolled_back(tmp_path):
    data = str(tmp_path / "data")
    doc = full_document()
    doc["conversations"] = doc["conversations"][:1]
    f = tmp_path / "a.json"
    f.write_text(json.dumps(doc))
    assert chorus("import", "--data-dir", data, str(f)).returncode == 0

    # Same conversation id, another history: refused, the store keeps its own.
    doc2 = full_document()
    conv = doc2["conversations"][0]
    conv["events"][1]["id"] = "someone-else"
    f2 = tmp_path / "b.json"
    f2.write_text(json.dumps(doc2))
    r = chorus("import", "--data-dir", data, str(f2))
    assert r.returncode == 1
    assert "b.json" in r.stderr and "all-kinds" in r.stderr and "conflict" in r.stderr and "seq 2" in r.stderr, r.stderr
    c = counts(r.stdout)
    assert c["new"] == 1 and c["failed"] == 1, r.stdout  # empty-one still came in
    got = {c["id"]: c for c in export_doc(data)["conversations"]}
    assert [e["id"] for e in got["all-kinds"]["events"]] == [e["id"] for e in doc["conversations"][0]["events"]]

    # A conversation that fails half-way (a client id used twice) leaves nothing behind.
    doc3 = full_document()
    c3 = doc3["conversations"][0]
    c3["id"] = "half-way"
    c3["events"][6]["clientId"] = "m1"
    f3 = tmp_path / "c.json"
    f3.write_text(json.dumps(doc3))
    r = chorus("import", "--data-dir", data, str(f3))
    assert r.returncode == 1 and "half-way" in r.stderr and "m1" in r.stderr, r.stderr
    assert "half-way" not in {c["id"] for c in export_doc(data)["conversations"]}
    r = chorus("export", "--data-dir", data, "--conversation", "half-way")
    assert r.returncode == 1 and "no such conversation" in r.stderr, r.stderr


# ---- profile unified's folders ------------------------------------------------------------

def unified_files():
    return {
        "test-123.json": {
            "id": "test-123", "title": "Desktop chat",
            "createdAt": "2025-11-18T12:00:00.000Z", "updatedAt": "2025-11-18T12:08:05.000Z",
            "messages": [
                {"id": "0b6f3c2e-1111-4c1e-9d5a-000000000001", "conversationId": "test-123", "role": "user",
                 "content": "Hello", "source": "desktop",
                 "context": {"hasScreen": True, "hasVoice": False, "appName": "Xcode", "metadata": {"k": "v"}},
                 "timestamp": "2025-11-18T12:08:00.000Z"},
                {"id": "0b6f3c2e-1111-4c1e-9d5a-000000000002", "conversationId": "test-123",
                 "role": "assistant", "content": "Hi — how can I help?", "source": "chatgpt",
                 "timestamp": "2025-11-18T12:08:05.000Z", "extra": [1, 2, {"x": None}]},
            ],
        },
        "phone-notes.json": {
            "id": "phone-notes",
            "messages": [
                {"role": "user", "content": "no id, no timestamp", "source": "iphone"},
                {"id": "p-2", "role": "user", "content": "ünïcödé ✓", "source": "iphone",
                 "timestamp": "2025-11-19T08:00:00.000Z"},
            ],
        },
        "web.json": {
            "id": "web-1", "title": "From the dashboard", "createdAt": "2025-11-20T10:00:00.000Z",
            "updatedAt": "2025-11-20T10:00:00.000Z",
            "messages": [{"id": f"w-{i}", "role": "user" if i % 2 == 0 else "assistant",
                          "content": f"line {i}", "source": "web",
                          "timestamp": f"2025-11-20T10:00:{i:02d}.000Z"} for i in range(20)],
        },
    }


def write_folder(d, files):
    d.mkdir(parents=True, exist_ok=True)
    for name, obj in files.items():
        (d / name).write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2, ensure_ascii=False))
    return str(d)


def assert_kept(original, served):
    """Every field of the file's message is in the served message, unchanged."""
    for k, v in original.items():
        assert served.get(k) == v, (k, original, served)


def test_unified_folder_is_served_on_join_and_reimport_is_idempotent(make_hub, tmp_path):
    files = unified_files()
    folder = write_folder(tmp_path / "unified", files)
    data = str(tmp_path / "data")
    r = chorus("import", "--data-dir", data, "--user", "alice", folder)
    assert r.returncode == 0, r.stderr
    c = counts(r.stdout)
    assert c["new"] == 3 and c["events added"] == 24 and c["failed"] == 0, r.stdout

    r = chorus("import", "--data-dir", data, "--user", "alice", folder)
    assert r.returncode == 0, r.stderr
    c = counts(r.stdout)
    assert c["unchanged"] == 3 and c["events added"] == 0 and c["already present"] == 24, r.stdout

    hub = make_hub("--insecure-dev", data_dir=data)

    async def check():
        a = await connect(hub, "alice:laptop", "desktop")
        for f in files.values():
            sync = await join(a, f["id"])
            assert sync["type"] == "sync", sync
            data_ = sync["data"]
            assert len(data_) == len(f["messages"]), (f["id"], data_)
            assert [m["seq"] for m in data_] == list(range(1, len(data_) + 1))
            assert sync["lastSeq"] == len(data_)
            for orig, served in zip(f["messages"], data_):
                assert_kept(orig, served)
                assert served["conversationId"] == f["id"] and served["id"]
                assert served["timestamp"] and served["role"] in ("user", "assistant")
        # The hub goes on after the imported history.
        ack = await send(a, "web-1", {"id": "after-import", "content": "live again"}, "r1")
        assert ack["seq"] == 21 and ack["duplicate"] is False, ack
        # A message id that came from the file is a duplicate for the hub too.
        ack = await send(a, "web-1", {"id": "w-3", "content": "retry"}, "r2")
        assert ack["duplicate"] is True and ack["seq"] == 4, ack
        # Other users are not members of alice's imported conversations.
        b = await connect(hub, "bob:phone")
        err = await join(b, "test-123")
        assert err["type"] == "error" and err["code"] == "forbidden", err
        await a.close()
        await b.close()
    run(check())

    # The hub holds the store too: a re-import while it runs still adds nothing.
    r = chorus("import", "--data-dir", data, "--user", "alice", folder)
    assert r.returncode == 0 and counts(r.stdout)["events added"] == 0, r.stdout + r.stderr
    exported = export_doc(data)
    convs = {c["id"]: c for c in exported["conversations"]}
    assert convs["test-123"]["title"] == "Desktop chat" and convs["test-123"]["owner"] == "alice"
    assert convs["test-123"]["createdAt"] == "2025-11-18T12:00:00.000Z"
    assert convs["web-1"]["lastSeq"] == 21
    # A message without an id got one, and the same one as its server id.
    first = convs["phone-notes"]["events"][0]
    assert first["body"]["id"] == first["id"] and first["clientId"] == "import:0"


def test_import_while_the_hub_runs(make_hub, tmp_path):
    hub = make_hub("--insecure-dev")
    files = unified_files()

    async def go():
        a = await connect(hub, "alice:laptop")
        # The hub has written to the store before the import (its seq cache is warm).
        await send(a, "before", {"content": "x"}, "r0")
        await join(a, "test-123")  # an empty room: alice holds the id
        folder = write_folder(tmp_path / "u", files)
        r = await asyncio.to_thread(chorus, "import", "--data-dir", hub.data_dir, "--user", "alice", folder)
        assert r.returncode == 0, r.stderr
        assert counts(r.stdout)["events added"] == 24, r.stdout
        ack = await send(a, "test-123", {"content": "after"}, "r1")
        assert ack["seq"] == 3, ack
        ack = await send(a, "before", {"content": "y"}, "r2")
        assert ack["seq"] == 2, ack
        b = await connect(hub, "alice:phone")
        sync = await join(b, "test-123")
        assert [m["content"] for m in sync["data"]] == ["Hello", "Hi — how can I help?", "after"], sync
        await a.close()
        await b.close()
    run(go())


def test_unified_export_round_trip(tmp_path):
    files = unified_files()
    data = str(tmp_path / "data")
    assert chorus("import", "--data-dir", data, "--user", "alice",
                  write_folder(tmp_path / "in", files)).returncode == 0
    out = tmp_path / "out"
    r = chorus("export", "--data-dir", data, "--format", "unified", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["phone-notes.json", "test-123.json", "web-1.json"]
    for f in files.values():
        got = json.loads((out / f"{f['id']}.json").read_text())
        assert got["id"] == f["id"] and len(got["messages"]) == len(f["messages"])
        for orig, m in zip(f["messages"], got["messages"]):
            assert_kept(orig, m)
    # What came out goes back in, unchanged, as another user's copy.
    data2 = str(tmp_path / "data2")
    r = chorus("import", "--data-dir", data2, "--user", "zoe", str(out))
    assert r.returncode == 0, r.stderr
    out2 = tmp_path / "out2"
    assert chorus("export", "--data-dir", data2, "--format", "unified", "--out", str(out2)).returncode == 0
    for name in os.listdir(out):
        assert json.loads((out / name).read_text()) == json.loads((out2 / name).read_text()), name
    # One unified file on its own works too.
    data3 = str(tmp_path / "data3")
    r = chorus("import", "--data-dir", data3, "--user", "zoe", str(out / "web-1.json"))
    assert r.returncode == 0 and counts(r.stdout)["events added"] == 20, r.stdout + r.stderr


def test_bad_files_are_named_with_the_problem_and_leave_nothing(tmp_path):
    files = {
        "good.json": unified_files()["web.json"],
        "broken.json": '{"id": "broken", "messages": [{"role": "user", "content": "x"},\n  {"role": ',
        "not-array.json": {"id": "not-array", "messages": {"role": "user"}},
        "bad-role.json": {"id": "bad-role", "messages": [{"id": "ok-1", "role": "user", "content": "fine"},
                                                         {"id": "ok-2", "role": "boss", "content": "no"}]},
        "bad-content.json": {"id": "bad-content", "messages": [{"content": 42}]},
        "notes.txt": "ignored: not a .json file",
    }
    folder = write_folder(tmp_path / "mixed", files)
    data = str(tmp_path / "data")
    r = chorus("import", "--data-dir", data, "--user", "alice", folder)
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = r.stderr
    assert "broken.json" in err and "invalid JSON at line 2" in err, err
    assert "not-array.json" in err and "\"messages\" must be an array" in err, err
    assert "bad-role.json" in err and "messages[1].role" in err, err
    assert "bad-content.json" in err and "messages[0].content must be a string" in err, err
    assert "good.json" not in err and "notes.txt" not in err, err
    c = counts(r.stdout)
    assert c["new"] == 1 and c["failed"] == 4, r.stdout
    assert [c["id"] for c in export_doc(data)["conversations"]] == ["web-1"]

    # A chorus export that is not JSON: nothing at all is imported.
    bad = tmp_path / "bad-export.json"
    bad.write_text('{"version":1,"conversations":[{"id":"x","owner":"u","events":[]}')
    r = chorus("import", "--data-dir", data, str(bad))
    assert r.returncode == 1 and "bad-export.json" in r.stderr and "invalid JSON" in r.stderr, r.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"version":2,"conversations":[]}')
    r = chorus("import", "--data-dir", data, str(wrong))
    assert r.returncode == 1 and "wrong.json" in r.stderr and "version" in r.stderr, r.stderr
    gap = full_document()
    gap["conversations"][0]["events"][4]["seq"] = 9
    g = tmp_path / "gap.json"
    g.write_text(json.dumps(gap))
    r = chorus("import", "--data-dir", data, str(g))
    assert r.returncode == 1 and "gap.json" in r.stderr and "events[4]" in r.stderr and "seq" in r.stderr, r.stderr
    assert "all-kinds" not in {c["id"] for c in export_doc(data)["conversations"]}


def test_usage_errors_and_help(tmp_path):
    data = str(tmp_path / "data")
    for cmd in ("export", "import"):
        r = chorus(cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: chorus {cmd}"), r
    folder = write_folder(tmp_path / "u", {"a.json": unified_files()["web.json"]})
    cases = [
        ("import",),                                        # nothing to import
        ("import", folder),                                 # unified needs --user
        ("import", "--user", "bad user!", folder),          # invalid user id
        ("import", "--format", "csv", folder),
        ("import", "--format", "chorus", "--user", "a", folder),  # a directory is not a chorus export
        ("import", "--user", "a", folder, "extra"),
        ("export", "--format", "unified"),                  # unified needs --out DIR
        ("export", "--bogus"),
        ("export", "stray"),
    ]
    for args in cases:
        r = chorus(*args, "--data-dir", data)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("chorus "), (args, r.stderr)
    r = chorus("import", "--data-dir", data, str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr
    r = chorus("export", "--data-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 1 and "nowhere" in r.stderr
