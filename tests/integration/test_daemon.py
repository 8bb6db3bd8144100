"""The daemon under an init system (doc/operations.md): syslog output,
systemd's notification protocol (sd_notify, sent by libsystemd), and the
privilege drop after the listeners are bound.  The clients are Impacket's;
the kernel's /proc/PID/status says who the process runs as."""
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from impacket.dcerpc.v5 import nspi

from conftest import PROXY_BIN, free_port
from rpcutil import NSPI, dce_connect
from test_ops import wait_for

# RFC 3164 as written on /dev/log: <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG
RFC3164 = re.compile(r"<(\d{1,3})>([A-Z][a-z]{2}) ([ \d]\d) (\d\d:\d\d:\d\d) "
                     r"mapiproxy\[(\d+)\]: (.*)", re.S)
LOG_LOCAL3 = 19


class DgramSink:
    """A Unix datagram socket read by a thread, as a syslog daemon reads
    /dev/log (or systemd its NOTIFY_SOCKET)."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.msgs = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            try:
                self.msgs.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except (socket.timeout, BlockingIOError):
                pass

    def wait(self, pred, timeout=10.0):
        return wait_for(lambda: pred(list(self.msgs)), timeout)

    def close(self):
        self.running = False
        self.thread.join()
        self.sock.close()


def nspi_roundtrip(proxy):
    dce = dce_connect(proxy.host, proxy.rpc_port, NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()


def test_syslog_target(lab, make_proxy, tmp_path):
    """mapiproxy:log target = syslog: each line is one RFC 3164 datagram at
    the configured facility and the line's severity; no secret from the
    configuration appears; SIGUSR1 connects the socket again (a restarted
    syslog daemon)."""
    sink = DgramSink(str(tmp_path / "log.sock"))
    secret = "Pa55-never-in-a-log"
    proxy = make_proxy(upstream_epm_port=lab.epm_port, extra={
        "mapiproxy:log target": "syslog", "mapiproxy:syslog facility": "local3",
        "mapiproxy:syslog socket": sink.path, "dcerpc_mapiproxy:username": "svc",
        "dcerpc_mapiproxy:password": secret, "dcerpc_mapiproxy:delegated_auth": "yes"})
    nspi_roundtrip(proxy)
    assert sink.wait(lambda m: any("NspiUnbind" in x for x in m)), sink.msgs
    for m in sink.msgs:
        g = RFC3164.fullmatch(m)
        assert g, m
        pri = int(g.group(1))
        assert pri >> 3 == LOG_LOCAL3 and (pri & 7) in (3, 4, 6, 7), m
        assert int(g.group(5)) == proxy.proc.pid and "\n" not in g.group(6), m
        assert secret not in m
    ready = [m for m in sink.msgs if " ready: " in m]
    assert ready and int(RFC3164.fullmatch(ready[0]).group(1)) & 7 == 6  # info
    # The syslog daemon restarts: a new socket at the same path.
    sink.close()
    os.unlink(sink.path)
    sink = DgramSink(sink.path)
    proxy.proc.send_signal(signal.SIGUSR1)
    assert sink.wait(lambda m: any("syslog socket %s connected again" % sink.path in x
                                   for x in m)), sink.msgs
    nspi_roundtrip(proxy)
    assert sink.wait(lambda m: any("NspiUnbind" in x for x in m)), sink.msgs
    assert secret not in proxy.log()
    sink.close()


def test_check_log_options(tmp_path):
    base = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1"]
    for lines, what in [
            (["mapiproxy:log target = journal"], "use file, syslog or stderr"),
            (["mapiproxy:log target = file"], "needs mapiproxy:log file"),
            (["mapiproxy:syslog facility = local9"], "use daemon, user, auth"),
            (["mapiproxy:user = no-such-user-here"], "no such user"),
            (["mapiproxy:user = nobody", "mapiproxy:group = no-such-group-here"],
             "no such group"),
            (["mapiproxy:user = root"], "is root")]:
        conf = tmp_path / "c.conf"
        conf.write_text("\n".join(base + lines) + "\n")
        r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1, (lines, r.stderr)
        assert "%s:%d: " % (conf, len(base) + len(lines)) in r.stderr and what in r.stderr, \
            (lines, r.stderr)


def test_sd_notify(lab, make_proxy, tmp_path, monkeypatch):
    """Type=notify: READY=1 once the listeners accept, RELOADING=1 then
    READY=1 around a SIGHUP, STOPPING=1 on SIGTERM (systemd's protocol,
    sd_notify(3); the messages are sent by libsystemd)."""
    sink = DgramSink(str(tmp_path / "notify.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", sink.path)
    proxy = make_proxy(upstream_epm_port=lab.epm_port)
    assert sink.wait(lambda m: any("READY=1" in x for x in m)), sink.msgs
    first = next(x for x in sink.msgs if "READY=1" in x)
    assert "MAINPID=%d" % proxy.proc.pid in first and "STATUS=relaying" in first, first
    with socket.create_connection((proxy.host, proxy.epm_port), timeout=2):
        pass                                       # bound before READY
    n = len(sink.msgs)
    proxy.proc.send_signal(signal.SIGHUP)
    assert sink.wait(lambda m: any("READY=1" in x for x in m[n + 1:])), sink.msgs
    after = sink.msgs[n:]
    assert "RELOADING=1" in after[0] and "READY=1" in after[1], after
    nspi_roundtrip(proxy)
    proxy.proc.send_signal(signal.SIGTERM)
    assert sink.wait(lambda m: any("STOPPING=1" in x for x in m)), sink.msgs
    proxy.proc.wait(30)
    sink.close()


def proc_ids(pid):
    st = open("/proc/%d/status" % pid).read()
    uid = [int(x) for x in re.search(r"^Uid:\s+(.*)$", st, re.M).group(1).split()]
    gid = [int(x) for x in re.search(r"^Gid:\s+(.*)$", st, re.M).group(1).split()]
    groups = [int(x) for x in re.search(r"^Groups:[ \t]*(.*)$", st, re.M).group(1).split()]
    caps = int(re.search(r"^CapEff:\s+(\w+)$", st, re.M).group(1), 16)
    return uid, gid, groups, caps


@pytest.fixture
def nobody_dir():
    """A directory the user nobody owns (pytest's tmp_path is root's 0700)."""
    if os.geteuid() != 0:
        pytest.skip("the privilege drop needs root")
    d = tempfile.mkdtemp(prefix="mp-runas-")
    os.chmod(d, 0o755)
    os.chown(d, pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_privilege_drop(lab, make_proxy, nobody_dir, tmp_path):
    """mapiproxy:user = nobody: the listeners are bound as root (the ports
    here are high, but the order is the same for 135), then every id is
    nobody's, no capability is left, the log opened before the drop is
    still written, and after a rotation SIGUSR1 opens the new file as
    nobody."""
    log = os.path.join(nobody_dir, "proxy.log")
    nob = pwd.getpwnam("nobody")
    ng = grp.getgrnam("nogroup").gr_gid
    proxy = make_proxy(upstream_epm_port=lab.epm_port, extra={
        "mapiproxy:user": "nobody", "mapiproxy:log file": log})
    # The listeners accept before the drop (that is the point): wait for it.
    assert wait_for(lambda: " ready: " in open(log).read()), open(log).read()
    uid, gid, groups, caps = proc_ids(proxy.proc.pid)
    assert uid == [nob.pw_uid] * 4 and gid == [ng] * 4, (uid, gid)
    assert set(groups) <= {ng} and caps == 0, (groups, caps)
    text = open(log).read()
    assert "running as user nobody (uid %d), group nogroup" % nob.pw_uid in text, text
    assert text.index("running as user") < text.index(" ready: "), text
    nspi_roundtrip(proxy)
    assert wait_for(lambda: "NspiUnbind" in open(log).read())
    os.rename(log, log + ".1")
    proxy.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: os.path.exists(log) and "reopened" in open(log).read()), \
        open(log + ".1").read()
    assert os.stat(log).st_uid == nob.pw_uid
    nspi_roundtrip(proxy)
    assert wait_for(lambda: "NspiUnbind" in open(log).read())
    assert proxy.alive()


def test_privilege_drop_refused_when_not_root(lab, nobody_dir, tmp_path):
    """A user is configured but the process cannot change to it (it does not
    run as root): it refuses to start, with a log line, rather than run on
    as the wrong user."""
    conf = os.path.join(nobody_dir, "c.conf")
    with open(conf, "w") as f:
        f.write("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                "mapiproxy:epmapper port = %d\nmapiproxy:rpc port = %d\n"
                "mapiproxy:upstream epmapper port = %d\nmapiproxy:user = daemon\n"
                % (free_port(), free_port(), lab.epm_port))
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:exitcode=66")
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                        PROXY_BIN, "-c", conf], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "cannot change to user daemon" in r.stderr and "refusing to go on" in r.stderr, \
        r.stderr
    assert "Sanitizer" not in r.stderr and " ready: " not in r.stderr, r.stderr
