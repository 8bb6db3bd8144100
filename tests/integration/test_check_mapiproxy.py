"""tools/check_mapiproxy, the Nagios plugin (doc/monitoring.md): the four
exit codes in real situations against a running proxy and the lab, and its
output in the monitoring-plugins form (one line, perfdata
'label'=value[UOM];warn;crit;min;max)."""
import importlib.machinery
import importlib.util
import os
import re
import socket
import subprocess

import pytest
from impacket.dcerpc.v5 import nspi

from conftest import ROOT, free_port
from rpcutil import dce_connect

PLUGIN = os.path.join(ROOT, "tools", "check_mapiproxy")
PERF = re.compile(r"^'[^'=]+'=-?[0-9.]+(s|%|B|KB|MB|TB|c|us|ms)?;[^; ]*;[^; ]*;[0-9.]*;[0-9.]*$")


def run(*args, env=None):
    r = subprocess.run([PLUGIN, *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **(env or {})})
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout + r.stderr
    line = lines[0]
    text, _, perf = line.partition(" | ")
    for p in perf.split():
        assert PERF.match(p), (p, line)
    labels = [p.split("=")[0] for p in perf.split()]
    assert len(labels) == len(set(labels)), line
    return r.returncode, text, perf


def load():
    loader = importlib.machinery.SourceFileLoader("check_mapiproxy", PLUGIN)
    spec = importlib.util.spec_from_loader("check_mapiproxy", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_ranges():
    R = load().Range
    assert R("10").alert(11) and R("10").alert(-1) and not R("10").alert(10)
    assert R("10:").alert(9) and not R("10:").alert(1e9)
    assert not R("~:10").alert(-1e9) and R("~:10").alert(10.5)
    assert R("10:20").alert(9) and not R("10:20").alert(15) and R("10:20").alert(21)
    assert R("@10:20").alert(15) and not R("@10:20").alert(9)
    for bad in ("x", "20:10", "1:2:3"):
        with pytest.raises(ValueError):
            R(bad)


@pytest.fixture
def mproxy(lab, make_proxy):
    mport = free_port()
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"mapiproxy:metrics listen": f"127.0.0.1:{mport}"}, wait_ports=(mport,))
    p.mport = mport
    return p


def test_metrics_mode_four_states(mproxy):
    port = str(mproxy.mport)
    dce = dce_connect(mproxy.host, mproxy.rpc_port, nspi.MSRPC_UUID_NSPI)  # one held open
    nspi.hNspiBind(dce)
    try:
        rc, text, perf = run("-H", "127.0.0.1", "-p", port)
        assert rc == 0 and text.startswith("MAPIPROXY OK - 1 connection(s) open"), text
        assert "'connections_open'=1;;;0;" in perf
        rc, text, perf = run("-p", port, "-w", "0", "-c", "5")
        assert rc == 1 and text.startswith("MAPIPROXY WARNING"), text
        assert "'connections_open'=1;0;5;0;" in perf
        rc, text, _ = run("-p", port, "-w", "~:0", "-c", "@1:1")
        assert rc == 2 and text.startswith("MAPIPROXY CRITICAL"), text
        rc, text, perf = run("-p", port, "-m", "error-ratio", "-w", "10", "-c", "50")
        assert rc == 0 and "'error_ratio'=0%;10;50;0;100" in perf, perf
    finally:
        dce.disconnect()
    rc, text, perf = run("-p", port, "-m", "upstream-errors", "-c", "0")
    assert rc == 0 and "'upstream_errors'=0c;;0;0;" in perf, perf


def test_endpoint_down_and_bad_arguments():
    dead = str(free_port())
    rc, text, _ = run("-p", dead)
    assert rc == 2 and text.startswith("MAPIPROXY CRITICAL - metrics endpoint") and \
        "unreachable" in text, text
    # a listener that never answers: the timeout's state, UNKNOWN by default
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = str(s.getsockname()[1])
        rc, text, _ = run("-p", port, "-t", "1")
        assert rc == 3 and text.startswith("MAPIPROXY UNKNOWN") and "1 s" in text, text
        rc, text, _ = run("-p", port, "-t", "1:critical")
        assert rc == 2 and text.startswith("MAPIPROXY CRITICAL"), text
    finally:
        s.close()
    rc, text, _ = run("-p", dead, "-w", "20:10")
    assert rc == 3 and text.startswith("MAPIPROXY UNKNOWN - bad range"), text
    r = subprocess.run([PLUGIN, "--no-such-option"], capture_output=True, text=True)
    assert r.returncode == 3


def test_logon_mode(mproxy):
    rc, text, perf = run("--logon", "-H", "127.0.0.1", "-p", str(mproxy.epm_port))
    assert rc == 0 and "logon (NspiBind+NspiUnbind)" in text, text
    assert re.fullmatch(r"'time'=[0-9.]+s;;;0;", perf), perf
    rc, text, perf = run("--logon", "-p", str(mproxy.epm_port), "--rfr", "-w", "0", "-c", "60")
    assert rc == 1 and "RfrGetNewDSA" in text, text
    rc, text, perf = run("--logon", "-p", str(mproxy.epm_port), "-c", "0:0.000001")
    assert rc == 2 and text.startswith("MAPIPROXY CRITICAL - logon"), text
    log = mproxy.log()
    assert "NspiBind" in log and "RfrGetNewDSA" in log


def test_logon_credentials_never_printed(tmp_path, lab, make_proxy):
    """Against a proxy whose upstream is gone: CRITICAL, and the password from
    the authentication file appears nowhere in the output."""
    p = make_proxy(binding_port=free_port(), extra={"mapiproxy:connect timeout": "2000"})
    af = tmp_path / "auth"
    af.write_text("username = alice\npassword = S3cret-Pa55\ndomain = LAB\n")
    r = subprocess.run([PLUGIN, "--logon", "-p", str(p.epm_port), "-A", str(af)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout
    assert r.stdout.startswith("MAPIPROXY CRITICAL - logon") and len(r.stdout.splitlines()) == 1
    assert "S3cret" not in r.stdout + r.stderr
