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
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import demo_pty  # noqa: E402

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
    d = demo_pty.drive(REPO, how, stop_s=10)
    if d.timeout:
        return False, d.timeout
    time.sleep(0.5)
    left = leftovers()
    st = d.status
    ok = "Error" not in d.text and not left
    if how == "INT":
        ok = ok and d.exit_code() == 0
    return ok, "make %s, %.1f s after the signal, left running: %s%s" % (
        "killed by signal %d" % os.WTERMSIG(st) if os.WIFSIGNALED(st)
        else "exit %d" % os.WEXITSTATUS(st),
        d.stopped_after, left or "nothing",
        "" if "Error" not in d.text else "; make printed an Error line")


status = 0
for how in ("INT", "TERM"):
    ok, what = one(how)
    print("run-demo-check %s: %s (%s)" % (how, "PASS" if ok else "FAIL", what))
    status |= not ok
sys.exit(status)
