#!/usr/bin/python3
"""conv_fault_server.py — a fake of chorus's native protocol (/ws) that breaks it on purpose,
to check that chorus-loadgen's conversation modes (send, convfan, resume) notice.

    /usr/bin/python3 conv_fault_server.py PORT [--drop-every N] [--dup-every N]
                                               [--corrupt-every N] [--short-sync]

Not a peer and not a benchmark: bench/run.sh's self-test runs the generator against it, first
clean (the generator must report a clean run, so its checks do not cry wolf), then with faults
(the generator must report exactly those). Python `websockets` (Debian python3-websockets 10.x).

What it speaks (docs/PROTOCOL.md, the parts the generator uses), kept in memory:
  join {conversationId, since?, epoch?, id}  -> sync {id, conversationId, data, lastSeq, epoch, presence}
  message {conversationId, message, id}      -> broadcast {type:message, seq, message:{seq,...}} to the
                                                room's members, then ack {id, seq, clientId, duplicate}
Faults, counted over broadcast deliveries (one per member and message):
  --drop-every N     the N-th, 2N-th ... delivery is not sent        (the generator: lost, undelivered)
  --dup-every N      ... is sent twice                               (out_of_order)
  --corrupt-every N  ... has one content byte changed                (corrupt)
  --short-sync       a resume sync leaves out its middle event       (corrupt)
Listens on 127.0.0.1:PORT only; GET /health answers 200.
"""
import argparse
import asyncio
import http
import json
import signal
import sys
import uuid
from urllib.parse import urlsplit

import websockets

ARGS = None
convs = {}  # id -> {"seq": int, "epoch": str, "events": [dict], "members": set(ws)}
deliveries = 0


def conv_of(cid):
    c = convs.get(cid)
    if c is None:
        c = convs[cid] = {"seq": 0, "epoch": str(uuid.uuid4()), "events": [], "members": set()}
    return c


def every(n):
    return n > 0 and deliveries % n == 0


async def health(path, headers):
    if urlsplit(path).path == "/health":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"ok\n"
    return None


async def deliver(ws, frame, content):
    global deliveries
    deliveries += 1
    if every(ARGS.drop_every):
        return
    if every(ARGS.corrupt_every):
        frame = frame.replace(content, content[:-1] + ("b" if content[-1] != "b" else "c"), 1)
    try:
        await ws.send(frame)
        if every(ARGS.dup_every):
            await ws.send(frame)
    except websockets.ConnectionClosed:
        pass


async def handler(ws, path=None):
    if urlsplit(ws.path).path != "/ws":
        await ws.close(1008, "only /ws")
        return
    joined = set()
    await ws.send(json.dumps({"type": "presence", "clientId": str(id(ws)), "source": "bench", "connected": True}))
    try:
        async for raw in ws:
            m = json.loads(raw)
            t, cid, rid = m.get("type"), m.get("conversationId"), m.get("id")
            c = conv_of(cid)
            if t == "join":
                since = m.get("since")
                data = [e for e in c["events"] if since is None or e["seq"] > since]
                if since is not None and ARGS.short_sync and len(data) > 2:
                    del data[len(data) // 2]
                c["members"].add(ws)
                joined.add(cid)
                await ws.send(json.dumps({"type": "sync", "id": rid, "conversationId": cid, "data": data,
                                          "lastSeq": c["seq"], "epoch": c["epoch"], "presence": []},
                                         separators=(",", ":")))
            elif t == "message":
                c["seq"] += 1
                ev = {"seq": c["seq"]}
                ev.update(m["message"])
                ev["conversationId"] = cid
                c["events"].append(ev)
                frame = json.dumps({"type": "message", "conversationId": cid, "seq": c["seq"], "message": ev},
                                   separators=(",", ":"))
                for member in list(c["members"]):
                    await deliver(member, frame, ev.get("content", ""))
                await ws.send(json.dumps({"type": "ack", "id": rid, "conversationId": cid, "seq": c["seq"],
                                          "messageId": str(uuid.uuid4()), "clientId": m["message"].get("id"),
                                          "duplicate": False}, separators=(",", ":")))
    except websockets.ConnectionClosed:
        pass
    finally:
        for cid in joined:
            convs[cid]["members"].discard(ws)


async def main():
    stop = asyncio.get_running_loop().create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(s, stop.set_result, None)
    async with websockets.serve(handler, "127.0.0.1", ARGS.port, process_request=health, compression=None,
                                ping_interval=None, max_size=None, max_queue=None):
        await stop


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("--drop-every", type=int, default=0)
    p.add_argument("--dup-every", type=int, default=0)
    p.add_argument("--corrupt-every", type=int, default=0)
    p.add_argument("--short-sync", action="store_true")
    ARGS = p.parse_args()
    asyncio.run(main())
    sys.exit(0)
