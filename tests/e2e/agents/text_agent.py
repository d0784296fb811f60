"""An `exec` agent speaking plain text: reads the request JSON on stdin, writes its reply to stdout
in small pieces (flushed), and exits 0.

    text_agent.py [--ms N] [--show-env] [--show-request] [--split-utf8]

Default reply: "exec says: <last user message>". --show-env: the sorted names of its environment
variables and its working directory. --show-request: the request's agent, conversationId, system
and roles. --split-utf8: writes "é" as two separate writes (a character split across reads).
"""
import json
import os
import sys
import time

args = sys.argv[1:]
ms = float(args[args.index("--ms") + 1]) / 1000 if "--ms" in args else 0.01
req = json.loads(sys.stdin.readline())
out = sys.stdout.buffer


def put(b):
    out.write(b)
    out.flush()
    time.sleep(ms)


if "--show-env" in args:
    put(("env=" + ",".join(sorted(os.environ)) + " cwd=" + os.getcwd()).encode())
elif "--show-request" in args:
    put(json.dumps({"agent": req.get("agent"), "conversationId": req.get("conversationId"),
                    "system": req.get("system"),
                    "roles": [m["role"] for m in req["messages"]],
                    "last": req["messages"][-1]["content"]}).encode())
elif "--split-utf8" in args:
    for b in (b"caf", b"\xc3", b"\xa9", b" ok", b" \xff"):
        put(b)
else:
    last = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
    text = ("exec says: " + last).encode()
    for i in range(0, len(text), 5):
        put(text[i:i + 5])
