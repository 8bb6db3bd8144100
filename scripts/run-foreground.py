#!/usr/bin/python3
"""run-foreground.py CMD [ARG...]: runs CMD as the terminal's foreground
process group, and gives the terminal back when CMD ends (`make run`).

Ctrl-C at a terminal sends SIGINT to the whole foreground process group.
Under `make run` that group is make's, so make got the signal too and,
whatever the recipe then did, ended by it (GNU make re-raises SIGINT after
its children exit): an interrupted, nonzero `make run` every time.  Here
CMD gets a process group of its own that owns the terminal, as a shell with
job control gives a foreground job: Ctrl-C reaches CMD and what it started,
CMD stops them and exits 0, and make sees a recipe that succeeded.

SIGTERM, SIGHUP or SIGINT sent to this process (make passes SIGTERM on to
its children) go to CMD's group.  Exit status: CMD's (128 + N when signal N
ended it).  Without a controlling terminal, or when not in its foreground,
CMD simply replaces this process."""
import os
import signal
import sys


def main(argv):
    if not argv:
        sys.exit("usage: run-foreground.py CMD [ARG...]")
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_CLOEXEC)
        ours = os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        tty, ours = None, False
    if not ours:
        os.execvp(argv[0], argv)
    mine = os.getpgrp()
    # tcsetpgrp from a process group that is not (or no longer) in the
    # foreground would stop us with SIGTTOU
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        os.setpgid(0, 0)
        os.tcsetpgrp(tty, os.getpid())
        # as a job-control shell starts its foreground job: the terminal's
        # signals at their defaults.  Started with SIGINT ignored (from a
        # script's `make run &`, nohup ...), CMD inherited the SIG_IGN, and a
        # shell cannot trap a signal ignored at its start: Ctrl-C then
        # stopped the proxy (which sets its own handlers) but not the demo,
        # which exited 1 ("mapiproxy exited") and left the lab running.
        for sig in (signal.SIGTTOU, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    for call in (lambda: os.setpgid(pid, pid), lambda: os.tcsetpgrp(tty, pid)):
        try:  # either side may come first; the child may be gone already
            call()
        except OSError:
            pass

    def forward(sig, _frame):
        try:
            os.killpg(pid, sig)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    try:
        os.tcsetpgrp(tty, mine)
    except OSError:
        pass
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
