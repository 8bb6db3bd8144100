"""Decrypted packet export (mapiproxy:packet export dir, doc/operations.md):
a MAPI/HTTP session through the HTTPS front (python3-requests) is written
as pcapng with TLS removed, both legs, and tshark (Wireshark's dissectors)
reads it as plain HTTP with the MAPI/HTTP calls named."""
import glob
import os
import re
import shutil
import subprocess

import pytest

import emsmdb_client as EC
from test_http_front_lab import env  # noqa: F401 (fixture)
from test_http_front_lab import start_front
from test_lab import ALICE
from test_ops import wait_for
from test_rop_lifetime import HttpTransport


def tshark(path, *args):
    r = subprocess.run(["tshark", "-r", path, *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_mapihttp_export_dissected_by_tshark(make_proxy, env, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    p = start_front(make_proxy, env, {"mapiproxy:packet export dir": str(out),
                                      "mapiproxy:packet export clients": "127.0.0.1"})
    assert "PACKET EXPORT IS ON" in p.log()
    t = HttpTransport(p.base, env["ca"])
    [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    t.close()
    t.abandon()
    p.stop()
    files = glob.glob(str(out / "*.pcapng"))
    assert files, os.listdir(out)
    for f in files:
        assert os.stat(f).st_mode & 0o777 == 0o600
    calls, uris = [], []
    for f in files:
        # Both legs: the client's (client -> proxy) and the upstream's.
        lines = tshark(f, "-Y", "http.request", "-T", "fields", "-e", "ip.src", "-e",
                       "tcp.srcport", "-e", "http.request.uri", "-e",
                       "http.request.line").splitlines()
        for ln in lines:
            src, sport, uri, hdrs = (ln.split("\t") + ["", "", "", ""])[:4]
            uris.append(uri)
            for h in hdrs.split(","):
                if h.lower().startswith("x-requesttype:"):
                    calls.append(h.split(":", 1)[1].strip().replace("\\r\\n", ""))
        # No TCP problem Wireshark would flag: the synthesised stream is whole.
        assert tshark(f, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update") == ""
    assert any(u.startswith("/mapi/emsmdb") for u in uris), uris
    # Each call appears on both legs.
    for call in ("Connect", "Execute", "Disconnect"):
        assert calls.count(call) >= 2, calls
    # Responses are dissected too.
    codes = [c for f in files for c in tshark(f, "-Y", "http.response", "-T", "fields", "-e",
                                              "http.response.code").split()]
    assert codes.count("200") >= 6 and "401" in codes, codes


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")
def test_moved_connection_keeps_its_one_file(make_proxy, env, tmp_path):
    """mapiproxy:workers = 2: a front connection that reaches the worker
    without its MAPI/HTTP session moves to the other (hmove.c) and takes its
    capture along: one file per client connection, its request head on the
    client leg and the request once more on the upstream leg, in the same
    file (before: a second file from the move on, its client leg without the
    head, and the first file with the head alone)."""
    from test_workers_https import nspi_session
    out = tmp_path / "export"
    out.mkdir()
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "mapiproxy:packet export dir": str(out),
                                      "mapiproxy:packet export clients": "127.0.0.1"})
    results = [None] * 6
    for i in range(len(results)):  # each request on a connection of its own
        nspi_session(p.base, env["ca"], results, i)
    p.stop()
    assert all(isinstance(r, tuple) and r[0] for r in results), results
    log = p.log()
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker \d", log)
    moved = re.findall(r"its MAPI/HTTP session's worker: handed to worker \d", log)
    assert moved and len(re.findall(r"adopted from worker \d", log)) == len(moved), log[-3000:]
    # (the "rpc" files: the test's probes of the DCE/RPC ports)
    files = glob.glob(str(out / "*-http-*.pcapng"))
    assert len(files) == len(opened) == log.count("packet export: http connection from"), \
        (len(files), len(opened), len(moved))
    requests = 0
    for f in files:
        streams = tshark(f, "-Y", "http.request", "-T", "fields", "-e", "tcp.stream").split()
        if not streams:
            continue  # the probe of the HTTPS port (make_proxy's wait_ports)
        requests += 1
        client = streams.count("0")  # the client's leg starts first
        assert client == 1 and len(streams) == 2, (f, streams)
        assert tshark(f, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update") == ""
    assert requests == 4 * len(results), requests  # Bind, 2 GetSpecialTable, Unbind each


def test_export_needs_clients(tmp_path):
    import subprocess as sp
    from conftest import PROXY_BIN
    conf = tmp_path / "c.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "mapiproxy:packet export dir = %s\n" % tmp_path)
    r = sp.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 1 and "mapiproxy:packet export clients is not" in r.stderr, r.stderr
