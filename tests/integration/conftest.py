"""Fixtures shared by the integration tests: free ports, the lab upstream,
and mapiproxy itself (the ASan/UBSan build, checked for leaks on exit)."""
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAB = os.path.join(ROOT, "tests", "lab", "exchange_lab.py")
PROXY_BIN = os.environ.get("MAPIPROXY_BIN", os.path.join(ROOT, "build", "mapiproxy-asan"))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
sys.path.insert(0, os.path.dirname(__file__))


def _raise_nofile():
    """Some tests hold a thousand connections (test_mapihttp_load): take
    the hard open-files limit, as a normal user's soft 1024 is too few
    (root here often has more already).  The proxies started inherit it."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


_raise_nofile()


_handed_out = set()
# Under pytest-xdist each worker takes only its share of the ports (port
# modulo the worker count), so two workers never hand out the same one.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % _WORKERS


def _below_ephemeral():
    """Ports under the kernel's ephemeral range (ip_local_port_range), which
    bind(0) and connect() never hand out: a port free_port() returned stays
    free until the test binds it, whatever other processes (other workers'
    labs, peers, clients) do meanwhile."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (20000, low) if low > 24000 else None


_RANGE = _below_ephemeral()
_rng = random.Random()


def free_port(host="127.0.0.1"):
    """A port free a moment ago, never the same twice in one run (a proxy's
    rpc and http ports must differ), in this worker's share, and (where the
    ephemeral range leaves room) one that no bind(0) or connect() can take
    before the test binds it."""
    for _ in range(200 * _WORKERS):
        with socket.socket() as s:
            if _RANGE:
                port = _rng.randrange(*_RANGE)
                if port % _WORKERS != _WORKER or port in _handed_out:
                    continue
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            else:
                s.bind((host, 0))
                port = s.getsockname()[1]
        if port not in _handed_out and port % _WORKERS == _WORKER:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port")


def wait_port(host, port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Lab:
    """The Python lab upstream (tests/lab), started as a subprocess."""

    def __init__(self, tmp_path, host="127.0.0.1", extra=(), epm_port=None, env=None):
        self.host = host
        self.epm_port = epm_port or free_port()
        self.log_path = os.path.join(str(tmp_path), f"lab-{self.epm_port}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", LAB, "--host", host, "--epm-port", str(self.epm_port), *extra],
            stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        m = re.match(r"READY epm=(\d+) rfr=(\d+) nspi=(\d+) emsmdb=(\d+)", line or "")
        if not m:
            self.stop()
            raise RuntimeError(f"lab did not start: {line!r}; see {self.log_path}")
        self.ports = {k: int(v) for k, v in zip(("epm", "rfr", "nspi", "emsmdb"), m.groups())}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def ntlm_lab(tmp_path, user, password, level="privacy"):
    """The lab with one NTLM account (LAB\\user) that it requires at level."""
    users = os.path.join(str(tmp_path), "lab-users")
    with open(users, "w") as f:
        f.write(f"{user}:LAB:{password}\n")
    return Lab(tmp_path, extra=("--users", users, "--require-auth", level))


class Proxy:
    """mapiproxy with a configuration written from keyword options."""

    def __init__(self, tmp_path, upstream_host="127.0.0.1", upstream_epm_port=135,
                 binding_port=None, interfaces=None, extra=None, check_leaks=True,
                 wrapper=None, binary=None, wait_ports=(), listen="127.0.0.1",
                 epm_port=None, rpc_port=None):
        self.host = listen
        self.epm_port = epm_port or free_port()
        self.rpc_port = rpc_port or free_port()
        self.check_leaks = check_leaks
        self.killed = False
        binding = f"ncacn_ip_tcp:{upstream_host}" + (f"[{binding_port}]" if binding_port else "")
        lines = [
            "[global]",
            f"dcerpc_mapiproxy:binding = {binding}",
            f"mapiproxy:listen = {listen}",
            f"mapiproxy:epmapper port = {self.epm_port}",
            f"mapiproxy:rpc port = {self.rpc_port}",
            f"mapiproxy:upstream epmapper port = {upstream_epm_port}",
            "mapiproxy:log level = debug",
        ]
        if interfaces:
            lines.append("dcerpc_mapiproxy:interfaces = " + " ".join(interfaces))
        # One worker unless a test asks for more (test_workers.py): the
        # tests keep testing exactly what they did before workers existed.
        if "mapiproxy:workers" not in (extra or {}):
            lines.append("mapiproxy:workers = 1")
        for k, v in (extra or {}).items():
            lines.append(f"{k} = {v}")
        self.conf = os.path.join(str(tmp_path), f"mapiproxy-{self.rpc_port}.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log_path = os.path.join(str(tmp_path), f"mapiproxy-{self.rpc_port}.log")
        self._log = open(self.log_path, "w")
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=66"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=67"
        self.proc = subprocess.Popen([*(wrapper or []), binary or PROXY_BIN, "-c", self.conf],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            wait_port(self.host, self.rpc_port, timeout=60 if wrapper else 10)
            wait_port(self.host, self.epm_port, timeout=60 if wrapper else 10)
            for port in wait_ports:  # e.g. the mapiproxy:http listen port
                wait_port(self.host, port, timeout=60 if wrapper else 10)
        except TimeoutError:
            self.stop(check=False)
            raise RuntimeError("mapiproxy did not start:\n" + self.log())

    def binding(self, port=None):
        return f"ncacn_ip_tcp:{self.host}[{port or self.rpc_port}]"

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, check=True):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if check and not self.killed:  # killed: a test ended it with SIGKILL
            text = self.log()
            assert "Sanitizer" not in text and "runtime error" not in text, text[-6000:]
            assert self.proc.returncode == 0, (
                f"mapiproxy exited with {self.proc.returncode}\n" + text[-4000:])


@pytest.fixture
def lab(tmp_path):
    l = Lab(tmp_path)
    yield l
    l.stop()


LAB_SVC_ACCT, LAB_SVC_PW = "mapiproxy-svc", "Svc-Pa55-for-lab"


@pytest.fixture
def auth_lab(tmp_path):
    """The lab requiring NTLM at privacy from its one account (the proxy's)."""
    lab = ntlm_lab(tmp_path, LAB_SVC_ACCT, LAB_SVC_PW)
    yield lab
    lab.stop()


@pytest.fixture
def make_proxy(tmp_path):
    started = []

    def make(**kw):
        p = Proxy(tmp_path, **kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def proxy(lab, make_proxy):
    """mapiproxy in transparent mode before the lab, ports found through the
    lab's endpoint mapper."""
    return make_proxy(upstream_epm_port=lab.epm_port)
