"""Daemon behaviour an administrator relies on (doc/operations.md): signals
(HUP re-reads the configuration, USR1 reopens the log, USR2 is ignored), the
open-files limit and accept back-off, --check, and an unreachable upstream.
The clients are Impacket's."""
import os
import signal
import time

from impacket.dcerpc.v5 import nspi

from conftest import ROOT
from rpcutil import NSPI, dce_connect

SERVER = ROOT + "/build/mapiproxy"


def wait_for(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def nspi_bind(proxy):
    dce = dce_connect(proxy.host, proxy.rpc_port, NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    return dce, h


def test_usr1_reopens_the_log_file(lab, make_proxy, tmp_path):
    log = str(tmp_path / "proxy.log")
    proxy = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:log file": log})
    dce, h = nspi_bind(proxy)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    assert wait_for(lambda: "NspiUnbind" in read(log)), read(log)
    os.rename(log, log + ".1")                      # what logrotate does
    proxy.proc.send_signal(signal.SIGUSR1)
    assert wait_for(lambda: "log file %s reopened" % log in read(log)), read(log + ".1")
    dce, h = nspi_bind(proxy)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    assert wait_for(lambda: "NspiUnbind" in read(log)), read(log)
    old = read(log + ".1")
    assert old.count("NspiBind") == 1 and "reopened" not in old, old
    assert proxy.alive()


def test_usr2_is_ignored(proxy):
    proxy.proc.send_signal(signal.SIGUSR2)
    assert wait_for(lambda: "signal USR2 received: ignored" in proxy.log()), proxy.log()
    assert proxy.alive()
    dce, h = nspi_bind(proxy)
    nspi.hNspiUnbind(dce, h)


def test_hup_rereads_the_configuration(lab, make_proxy):
    """SIGHUP no longer stops the proxy: a session in progress goes on; a
    broken configuration is refused with its errors and the running one
    stays; a valid one is applied (the log level at once, the interface list
    for new sessions: test_reload.py).  Until the reload of issue 13 this
    test asserted that an interface change was "not applied until a
    restart"; that limitation is gone, so it now asserts the change is
    applied."""
    proxy = make_proxy(upstream_epm_port=lab.epm_port)
    dce, h = nspi_bind(proxy)
    with open(proxy.conf) as f:
        good = f.read()

    # A broken configuration: refused, with file:line; the proxy goes on.
    with open(proxy.conf, "a") as f:
        f.write("mapiproxy:max buffer = lots\n")
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "refused" in proxy.log()), proxy.log()
    log = proxy.log()
    n = len(good.splitlines()) + 1
    assert "reload: %s:%d: " % (proxy.conf, n) in log, log
    assert "reload: %s refused (the errors above); the running configuration stays" % (
        proxy.conf) in log, log
    assert proxy.alive()
    nspi.hNspiGetSpecialTable(dce, h)               # the session goes on

    # A valid one: the log level drops to warn (no more per-call lines), and a
    # change of interfaces is named as applied for new sessions.
    with open(proxy.conf, "w") as f:
        f.write(good.replace("mapiproxy:log level = debug", "mapiproxy:log level = warn") +
                "dcerpc_mapiproxy:interfaces = exchange_nsp\n")
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in proxy.log()), proxy.log()
    log = proxy.log()
    assert "dcerpc_mapiproxy:interfaces" in log.split("applied as configuration 2")[1], log
    before = len(proxy.log())
    nspi.hNspiGetSpecialTable(dce, h)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    time.sleep(0.3)
    assert "NspiGetSpecialTable" not in proxy.log()[before:], proxy.log()[before:]
    assert proxy.alive()


def test_out_of_descriptors_gives_a_bounded_log(lab, make_proxy):
    """60 clients against a proxy limited to 32 open files: accept fails
    (EMFILE) while connections wait in the backlog; the log stays at about
    one line per second instead of one per failed accept, the start-up check
    warns about the limit, and once the clients leave a new one is served."""
    import socket
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       wrapper=["prlimit", "--nofile=32:32", "--"])
    assert "open files limit 32 (hard 32) is below" in proxy.log(), proxy.log()
    clients = []
    for _ in range(60):
        s = socket.create_connection((proxy.host, proxy.rpc_port))
        clients.append(s)
    time.sleep(4)
    log = proxy.log()
    lines = [line for line in log.splitlines() if "accept" in line]
    assert any("Too many open files" in line for line in lines), log[-3000:]
    assert len(lines) <= 8, "\n".join(lines)
    assert len(log.splitlines()) < 200, log[-3000:]
    for s in clients:
        s.close()
    assert wait_for(lambda: "accept: working again" in proxy.log(), 10), proxy.log()[-3000:]
    dce, h = nspi_bind(proxy)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    assert proxy.alive()


def run(*args):
    import subprocess
    return subprocess.run([SERVER, *args], capture_output=True, text=True, timeout=60)


def test_check_finds_what_the_daemon_refuses(tmp_path):
    """--check reports, with FILE:LINE and a fix, what the daemon would
    refuse only at start: secrets readable by others or missing, unknown
    modules, a module of another ABI, a missing TLS certificate or keytab,
    one port used twice.  No message carries line 0."""
    creds = tmp_path / "creds"
    creds.write_text("alice:LAB:0123456789abcdef0123456789abcdef\n")
    os.chmod(creds, 0o644)
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    os.chmod(pw, 0o644)
    base = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1"]
    cases = [
        (["mapiproxy:credentials file = %s" % creds], "readable by group or others", "chmod 600"),
        (["mapiproxy:credentials file = %s" % (tmp_path / "none")], "No such file", None),
        (["dcerpc_mapiproxy:username = p", "mapiproxy:password file = %s" % pw],
         "readable by group or others", "chmod 600"),
        (["dcerpc_mapiproxy:modules = nosuchmodule"], "no built-in module of that name",
         "check dcerpc_mapiproxy:modules"),
        (["dcerpc_mapiproxy:modules = mpm_test_badabi"], "was built for module ABI",
         "rebuild it"),
        (["mapiproxy:http listen = 127.0.0.1:4443", "mapiproxy:http upstream = https://h",
          "mapiproxy:tls key = %s" % (tmp_path / "no.key"),
          "mapiproxy:tls certificate = %s" % (tmp_path / "no.pem")],
         "mapiproxy:tls certificate", "give a readable PEM"),
        (["mapiproxy:keytab = %s" % (tmp_path / "no.keytab")], "No such file",
         "give a keytab"),
        (["mapiproxy:epmapper port = 1135", "mapiproxy:rpc port = 1135"],
         "is also mapiproxy:epmapper port", "different ports"),
        (["mapiproxy:epmapper port = 1135", "mapiproxy:rpc port = 6100",
          "mapiproxy:http upstream = https://h", "mapiproxy:http plain = yes",
          "mapiproxy:http listen = 0.0.0.0:6100"], "uses the port of mapiproxy:rpc port",
         "another port"),
    ]
    for i, (lines, what, fix) in enumerate(cases):
        conf = tmp_path / ("c%d.conf" % i)
        conf.write_text("\n".join(base + lines) + "\n")
        r = run("--check", "-c", str(conf))
        assert r.returncode == 1, (lines, r.stdout, r.stderr)
        bad = len(base) + len(lines)   # the problem is on the last line
        assert "%s:%d: " % (conf, bad) in r.stderr, (lines, r.stderr)
        assert what in r.stderr and (fix is None or fix in r.stderr), (lines, r.stderr)
        assert ":0:" not in r.stderr, r.stderr
    # and a good one passes
    conf = tmp_path / "ok.conf"
    os.chmod(creds, 0o600)
    conf.write_text("\n".join(base + ["mapiproxy:credentials file = %s" % creds,
                                      "dcerpc_mapiproxy:modules = mpm_test_a"]) + "\n")
    r = run("--check", "-c", str(conf))
    assert r.returncode == 0 and "configuration OK" in r.stdout, r.stderr


def test_command_line():
    r = run("--check", "-d", "debug")
    assert r.returncode == 0, r.stderr
    r = run("--check", "-d", "3")
    assert r.returncode == 0, r.stderr
    r = run("--check", "-d", "loud")
    assert r.returncode == 2 and "not a log level" in r.stderr, r.stderr
    r = run("--check", "extra.conf")
    assert r.returncode == 2 and 'unexpected argument "extra.conf"' in r.stderr, r.stderr
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("mapiproxy "), r.stdout
    r = run("--help")
    for opt in ("--config", "--check", "--print-default", "--log-level", "--version",
                "--help"):
        assert opt in r.stdout, (opt, r.stdout)
    r = run("--print-default")
    assert "1350" not in r.stdout and "upstream epmapper port = 135\n" in r.stdout, r.stdout


def test_unreachable_upstream_is_named_and_answered_like_a_busy_server(make_proxy, tmp_path):
    """Nothing listens on the upstream's port: the log names the host and
    the port that failed, and the client's bind gets a bind_nak with reason
    local_limit_exceeded (MS-RPCE 2.2.2.5: the server could not complete the
    request for lack of resources; Windows clients report it as
    RPC_S_SERVER_TOO_BUSY, which Outlook retries, MS-OXCRPC 3.2.4.4).
    Wireshark's dissector reads the reason."""
    import socket
    import pytest
    import tshark_util
    from conftest import free_port
    from rpcutil import NDR20, bind_pdu, read_pdu
    if tshark_util.tshark_available():
        pytest.skip(tshark_util.tshark_available())
    for kw, what in (({"upstream_epm_port": free_port()}, " (endpoint mapper)"),
                     ({"binding_port": free_port()}, "")):
        proxy = make_proxy(**kw)
        dead = kw.get("upstream_epm_port") or kw.get("binding_port")
        with tshark_util.Capture([proxy.rpc_port], tmpdir=tmp_path) as cap:
            s = socket.create_connection((proxy.host, proxy.rpc_port))
            s.sendall(bind_pdu([(NSPI, [NDR20])]))
            pdu = read_pdu(s)
            s.close()
        assert pdu and pdu[0] == 13, pdu                       # bind_nak
        assert int.from_bytes(pdu[3][16:18], "little") == 2, pdu  # local_limit_exceeded
        naks = [f["dcerpc"] for f in tshark_util.frames(cap.path,
                                                          decode_as_ports=[proxy.rpc_port])
                if "dcerpc" in f and f["dcerpc"].get("dcerpc.pkt_type") == "13"]
        assert naks and naks[0].get("dcerpc.cn_reject_reason") == "2", naks
        assert wait_for(lambda: "upstream 127.0.0.1 port %d%s: connect failed: Connection "
                        "refused" % (dead, what) in proxy.log()), proxy.log()
        assert proxy.alive()
