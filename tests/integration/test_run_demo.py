"""`make run` in a terminal (a pseudo-terminal here), stopped by Ctrl-C: the
terminal turns the typed ^C into SIGINT for its foreground process group.
make must exit 0 and print no "Error" line (issue 13: every Ctrl-C ended in
`make: *** ... Error 1` or an interrupted make), and nothing it started (the
lab, the proxy, the log follower) may be left running.  SIGTERM to make is
in scripts/run-demo-check.py, which runs both by hand.

Ports: `make run` takes fixed ones when free (6100.., 1350.., 1135..), checked
then bound, so two runs at once (another clone's make test, someone's make
run) could both pick one and the second fail to start.  The test gives the
proxy's endpoint mapper a free_port() (this worker's share, below the
ephemeral range) and lets the proxy's RPC port and the lab's endpoint mapper
be chosen by the bind (RUN_RPC_PORTS=0, RUN_LAB_EPM_PORTS=0): no fixed port."""
import os
import shutil
import sys
import time

import pytest

from conftest import ROOT, free_port

sys.path.insert(0, os.path.join(str(ROOT), "scripts"))
import demo_pty  # noqa: E402


def children_of(pid):
    """Every descendant of pid, from /proc."""
    kids = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


STOP_S = 45


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
def test_ctrl_c_stops_make_run_with_exit_0(tmp_path):
    env = dict(os.environ, RUN_DIR=str(tmp_path), RUN_EPM_PORTS=str(free_port()),
               RUN_RPC_PORTS="0", RUN_LAB_EPM_PORTS="0")
    started, cmds, still = [], [], []

    def ready(pid):
        started.extend(children_of(pid))
        cmds.extend(cmdline(p) for p in started)

    def timed_out(pid, d):
        still.extend(cmdline(p) for p in children_of(pid))

    # STOP_S: the bound is "it stops", not a speed; under make test's
    # parallel workers on 2 cores one run took longer than 15 s
    d = demo_pty.drive(str(ROOT), "INT", env=env, start_s=240, stop_s=STOP_S,
                       on_ready=ready, on_timeout=timed_out)
    text = d.text
    assert not d.timeout, "%s; still running: %s\n%s" % (d.timeout, still, text[-3000:])
    assert d.exit_code() == 0, (d.status, text[-3000:])
    assert "Error" not in text and "Interrupt" not in text, text[-3000:]
    assert "stopping the proxy and the lab" in text, text[-3000:]
    # everything stopped on its own SIGTERM: the cleanup's SIGKILL fallback
    # (scripts/run-demo.sh) was not needed
    assert "did not stop" not in text, text[-3000:]
    # the lab, the proxy and the log follower were running, and are gone
    assert [c for c in cmds if "exchange_lab.py" in c] and [c for c in cmds if "run.conf" in c] \
        and [c for c in cmds if c.startswith("tail ")], cmds
    end = time.time() + 5
    while time.time() < end and any(alive(p) for p in started):
        time.sleep(0.1)
    assert not [p for p in started if alive(p)], cmds
    assert (tmp_path / "run.conf").exists() and (tmp_path / "mapiproxy.log").exists()
