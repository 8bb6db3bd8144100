"""What the bench drivers share (bench/run.py, bench/https.py, bench/rpch.py): ports, the
processes they start (logs in one temporary directory) and their memory."""
import os
import socket
import subprocess
import tempfile
import time


class Procs:
    """The processes a bench run starts, each logging to tmpdir/NAME.log."""

    def __init__(self, prefix):
        self.tmpdir = tempfile.mkdtemp(prefix=prefix)
        self.procs = []  # (name, Popen), in the order started

    def start(self, name, argv, **kw):
        logf = open(os.path.join(self.tmpdir, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=kw.pop("stdout", logf), stderr=logf,
                             stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
        self.procs.append((name, p))
        return p

    def adopt(self, name, p):
        """A process started elsewhere, stopped with the others."""
        self.procs.append((name, p))

    def wait_port(self, port, proc, name, timeout=10.0):
        """Until something accepts on 127.0.0.1:port; RuntimeError when proc
        exits first or nothing listens in time."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; "
                                   f"see {self.tmpdir}/{name}.log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} does not listen on port {port}")

    def haproxy_https(self, up, cert_key):
        """HAProxy in HTTP mode, one thread, TLS on both legs (the anchor the
        HTTPS-front rows compare with): 127.0.0.1:port -> 127.0.0.1:up.
        HAPROXY names the binary.  Returns (Popen, port)."""
        port = free_port()
        conf = os.path.join(self.tmpdir, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:{port} ssl crt {cert_key}
    default_backend be
backend be
    server up 127.0.0.1:{up} ssl verify none
""")
        p = self.start("haproxy", [os.environ.get("HAPROXY", "haproxy"), "-db", "-f", conf])
        self.wait_port(port, p, "haproxy")
        return p, port

    def stop(self, p):
        """SIGTERM, then SIGKILL after 5 s; forgotten either way."""
        self.procs[:] = [(n, q) for n, q in self.procs if q is not p]
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        """Everything still running, newest first, 3 s for all to exit."""
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.time() + 3
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
