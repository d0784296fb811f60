"""An `exec` agent that never finishes: writes its pid to PIDFILE, then "tick N " every 100 ms.

    forever_agent.py PIDFILE [--ignore-term]

With --ignore-term it ignores SIGTERM and survives its stdout being closed (the hub must follow up
with SIGKILL).
"""
import os
import signal
import sys
import time

pidfile = sys.argv[1]
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
sys.stdin.readline()
stubborn = "--ignore-term" in sys.argv
i = 0
while True:
    try:
        sys.stdout.write("tick %d " % i)
        sys.stdout.flush()
    except OSError:  # the hub closed our stdout
        if not stubborn:
            raise
        sys.stdout = open(os.devnull, "w")
    i += 1
    time.sleep(0.1)
