"""An `exec` agent speaking JSON lines: {"delta"} / {"usage"} / {"done"} / {"error"} objects, one a line.

    jsonl_agent.py --mode ok|error|garbage|nodone|blank|hugeusage [--ms N]

ok: deltas of "jsonl says: <last user message>", a usage line, {"done":true}, then it lingers 0.2 s
(the hub must end the stream at "done", not at exit). error: two deltas, then {"error":"refused by
the agent"}. garbage: one delta, then a line that is not JSON. nodone: deltas, no done line, exit 0.
blank: blank lines and CRLF line ends between the deltas. hugeusage: like ok, with an input token count
of 1e300 (no integer can hold it).
"""
import json
import sys
import time

args = sys.argv[1:]
mode = args[args.index("--mode") + 1] if "--mode" in args else "ok"
ms = float(args[args.index("--ms") + 1]) / 1000 if "--ms" in args else 0.01
req = json.loads(sys.stdin.readline())
last = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
text = "jsonl says: " + last
parts = [text[i:i + 4] for i in range(0, len(text), 4)]


def line(obj, end="\n"):
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + end)
    sys.stdout.flush()
    time.sleep(ms)


if mode == "error":
    for p in parts[:2]:
        line({"delta": p})
    line({"error": "refused by the agent"})
    time.sleep(0.2)
elif mode == "garbage":
    line({"delta": parts[0]})
    line("this is not json")
    time.sleep(0.2)
elif mode == "blank":
    for p in parts:
        line({"delta": p}, end="\r\n")
        line("", end="\n")
    line({"done": True})
else:
    for p in parts:
        line({"delta": p})
    line({"usage": {"input_tokens": 1e300 if mode == "hugeusage" else 7, "output_tokens": len(parts)}})
    if mode != "nodone":
        line({"done": True})
        time.sleep(0.2)
