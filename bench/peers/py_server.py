#!/usr/bin/python3
"""py_server.py — the chorus benchmark endpoints on Python `websockets` (Debian's
python3-websockets, 10.x, asyncio), for bench/run.sh.

    /usr/bin/python3 py_server.py PORT

Listens on 127.0.0.1:PORT only. Same endpoints as ws-server.js:
GET /health, /echo, /bench/sub?channel=C, /bench/pub?channel=C.
Compression off, keepalive pings off (the generator holds idle connections).
"""
import asyncio
import http
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import websockets

channels = {}  # channel name -> set of subscriber connections


def channel_of(path):
    return parse_qs(urlsplit(path).query).get("channel", [""])[0]


async def health(path, headers):
    if urlsplit(path).path == "/health":
        return http.HTTPStatus.OK, [("Content-Type", "text/plain")], b"ok\n"
    return None


async def handler(ws, path=None):
    path = ws.path
    route = urlsplit(path).path
    if route == "/echo":
        async for msg in ws:
            await ws.send(msg)
    elif route == "/bench/sub":
        subs = channels.setdefault(channel_of(path), set())
        subs.add(ws)
        try:
            await ws.wait_closed()
        finally:
            subs.discard(ws)
    elif route == "/bench/pub":
        ch = channel_of(path)
        async for msg in ws:
            websockets.broadcast(channels.get(ch, ()), msg)
    else:
        await ws.close(1008, "unknown path")


async def main(port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(handler, "127.0.0.1", port, process_request=health,
                                compression=None, max_size=16 << 20, max_queue=None,
                                ping_interval=None, backlog=4096):
        print(f"py_server listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        await stop


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: py_server.py PORT", file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(int(sys.argv[1])))
