#!/usr/bin/python3
"""Checks `make run`'s exit paths in a terminal (a pseudo-terminal here):

  INT   Ctrl-C typed at the terminal (the whole foreground group gets SIGINT);
  TERM  SIGTERM sent to make alone (as a supervisor or `kill` would);

In both, once the demo follows the log, the signal must stop make within
10 s, make must print no "Error" line, and nothing `make run` started (the
lab, the proxy, the log follower) may be left running.  After Ctrl-C make
exits 0 (scripts/run-foreground.py: the demo owns the terminal, so the
SIGINT never reaches make); after SIGTERM to make alone, make passes it on,
the demo exits 0, and make ends by the signal, as make does.
tests/integration/test_run_demo.py checks the Ctrl-C case in make test.

    scripts/run-demo-check.py [REPO]      (REPO: default, this repository)
Exit status 0 when both pass."""
import os
import pty
import select
import signal
import subprocess
import sys
import time

REPO = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(__file__), ".."))


def leftovers():
    """Processes started from REPO's build directory or scripts."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    mine = []
    for line in out.splitlines():
        if (REPO + "/tests/lab/exchange_lab.py" in line or "build/run.conf" in line or
                "tail -n +1 --pid" in line) and str(os.getpid()) not in line.split()[0]:
            mine.append(line.strip())
    return mine


def one(how):
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(REPO)
        os.execvp("make", ["make", "--no-print-directory", "run"])
    out, sent, t0 = b"", None, time.time()
    while True:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                d = os.read(fd, 65536)
            except OSError:
                d = b""
            if not d:
                break
            out += d
        if sent is None and b"Ctrl-C stops" in out:
            time.sleep(1)
            if how == "INT":
                os.write(fd, b"\x03")          # the terminal turns it into SIGINT
            else:
                os.kill(pid, signal.SIGTERM)
            sent = time.time()
        if time.time() - t0 > 600 or (sent and time.time() - sent > 10):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return False, "no exit within 10 s of the signal" if sent else "demo never started"
    _, st = os.waitpid(pid, 0)
    time.sleep(0.5)
    text = out.decode(errors="replace")
    left = leftovers()
    ok = sent is not None and "Error" not in text and not left
    if how == "INT":
        ok = ok and os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    return ok, "make %s, %.1f s after the signal, left running: %s%s" % (
        "killed by signal %d" % os.WTERMSIG(st) if os.WIFSIGNALED(st)
        else "exit %d" % os.WEXITSTATUS(st),
        time.time() - (sent or t0), left or "nothing",
        "" if "Error" not in text else "; make printed an Error line")


status = 0
for how in ("INT", "TERM"):
    ok, what = one(how)
    print("run-demo-check %s: %s (%s)" % (how, "PASS" if ok else "FAIL", what))
    status |= not ok
sys.exit(status)
