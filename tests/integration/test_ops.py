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
    stays; a valid one is applied as far as live reload goes (the log level),
    and what needs a restart is named."""
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
    # change of interfaces is named as needing a restart.
    with open(proxy.conf, "w") as f:
        f.write(good.replace("mapiproxy:log level = debug", "mapiproxy:log level = warn") +
                "dcerpc_mapiproxy:interfaces = exchange_nsp\n")
    proxy.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "not applied until a restart" in proxy.log()), proxy.log()
    log = proxy.log()
    assert "dcerpc_mapiproxy:interfaces" in log.split("not applied until a restart")[1], log
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
