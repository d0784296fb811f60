"""An `exec` agent that fails: some output, a message on stderr, then exit status 3."""
import sys
import time

sys.stdin.readline()
sys.stdout.write("partial ")
sys.stdout.flush()
time.sleep(0.1)
sys.stdout.write("output")
sys.stdout.flush()
sys.stderr.write("warming up\nboom: something broke\n")
sys.stderr.flush()
sys.exit(3)
