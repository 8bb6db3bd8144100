"""`make run` driven in a pseudo-terminal, for scripts/run-demo-check.py and
tests/integration/test_run_demo.py: one read loop, so the two check the
same thing the same way.

drive(repo, how, ...) starts `make run` in repo, waits for the demo's
"Ctrl-C stops" line, calls on_ready(pid) (a caller records what is running),
then either types ^C at the terminal (how "INT": the terminal sends SIGINT
to the foreground process group) or sends SIGTERM to make alone (how
"TERM").  It returns a Drive: make's wait status (None when make had to be
killed), its output, and how long it took to stop after the signal."""
import os
import pty
import select
import signal
import time


class Drive:
    def __init__(self):
        self.status = None  # os.waitpid status; None: killed after a timeout
        self.out = b""
        self.sent = None  # time the signal went, None: the demo never started
        self.stopped_after = None  # seconds from the signal to make's exit
        self.timeout = ""  # what timed out, "" when nothing did

    @property
    def text(self):
        return self.out.decode(errors="replace")

    def exit_code(self):
        """make's exit code, or None when it died by a signal or was killed."""
        st = self.status
        return os.WEXITSTATUS(st) if st is not None and os.WIFEXITED(st) else None


def drive(repo, how="INT", env=None, start_s=600, stop_s=10, on_ready=None, on_timeout=None):
    d = Drive()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(repo)
        args = ["make", "--no-print-directory", "run"]
        os.execvpe("make", args, env) if env is not None else os.execvp("make", args)
    t0 = time.time()
    try:
        while True:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                d.out += chunk
            if d.sent is None and b"Ctrl-C stops" in d.out:
                time.sleep(0.5)  # the log follower starts after that line
                if on_ready:
                    on_ready(pid)
                if how == "INT":
                    os.write(fd, b"\x03")
                else:
                    os.kill(pid, signal.SIGTERM)
                d.sent = time.time()
            if d.sent is None and time.time() - t0 > start_s:
                d.timeout = "the demo never started within %d s" % start_s
            elif d.sent is not None and time.time() - d.sent > stop_s:
                d.timeout = "no exit within %d s of the signal" % stop_s
            if d.timeout:
                if on_timeout:
                    on_timeout(pid, d)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return d
    finally:
        os.close(fd)
    _, d.status = os.waitpid(pid, 0)
    d.stopped_after = time.time() - d.sent if d.sent else None
    return d
