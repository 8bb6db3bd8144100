"""The lab's EMSMDB online session over RPC over HTTP through the proxy, with
a module that changes ROPs (tests/modules/mpm_roptest.c, swap: UTF-16 'H'
becomes 'J' in every RopWriteStream, and back in every RopReadStream).

The client is Impacket's ncacn_http transport (code we did not write, set up
as its exchanger example does) under the lab's EMSMDB client, with RPC-level
NTLM at packet privacy (the proxy terminates it and logs on to the lab at
privacy with its own account), over HTTP Basic and HTTP NTLM logons to the
proxy, and over both upstreams: ncacn_ip_tcp, and RPC over HTTP to the lab's
/rpc/rpcproxy.dll (tests/lab/lab_rpch.py, written from MS-RPCH, sharing no
code with src/) with the proxy as RTS client.  The lab writes every rgbIn it received (LAB_WIRE_DUMP): it stored
"Jello", the client read "Hello" back (rop_session asserts the body)."""
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest
from impacket.dcerpc.v5 import nspi, rpcrt, transport
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.http import AUTH_BASIC, AUTH_NTLM

from conftest import ROOT, free_port

LAB_DIR = os.path.join(ROOT, "tests", "lab")
sys.path.insert(0, LAB_DIR)
import emsmdb_client as EC  # noqa: E402
import emsmdb_ndr as N  # noqa: E402
from test_lab import ALICE, rop_session  # noqa: E402
from test_lab_auth import nspi_answers  # noqa: E402
from test_lab_rpch import rpch_dce  # noqa: E402
from test_rop_modules import contents  # noqa: E402
import test_rpch  # noqa: E402
from test_rpch import ALICE_PW, PROXY_PW, rpch_files  # noqa: E402



@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("rpch-emsmdb"))
    lab_cert, proxy_cert, users, creds, pwfile = rpch_files(d)
    wire = os.path.join(d, "wire.jsonl")
    logf = open(os.path.join(d, "lab.log"), "w")
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LAB_DIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", str(free_port()), "--mapihttp-port", "0", "--rpch-port", "0",
         "--tls-cert", lab_cert[0], "--tls-key", lab_cert[1], "--users", users,
         "--require-auth", "privacy", "--pending-period", "0.2"],
        stdout=subprocess.PIPE, stderr=logf, text=True,
        env={**os.environ, "LAB_WIRE_DUMP": wire})
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    yield {"ports": ports, "proxy_cert": proxy_cert, "creds": creds, "pwfile": pwfile,
           "wire": wire, "dir": d}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    logf.close()


def start(make_proxy, env, **over):
    """test_rpch's proxy (TLS front, HTTP auth terminated, RPC/HTTP on),
    with the ROP-swapping module and the default pairing timeout."""
    return test_rpch.start(make_proxy, env, **{
        "mapiproxy:rpc over http pairing timeout": None,
        "dcerpc_mapiproxy:modules": "mpm_roptest",
        "mpm_roptest:swap": "yes",
        "mpm_roptest:log": os.path.join(env["dir"], "roptest.log"),
        **over})


def lab_wire(env):
    if not os.path.exists(env["wire"]):
        return []
    with open(env["wire"]) as f:
        return [json.loads(x) for x in f.read().splitlines()]


def upstream_opts(env, upstream):
    if upstream == "tcp":
        return {}
    # the proxy as RPC over HTTP client of the lab's /rpc/rpcproxy.dll (HTTP
    # Basic with its own account over TLS)
    return {"mapiproxy:rpc over http upstream": f"https://localhost:{env['ports']['rpch']}",
            "mapiproxy:rpc over http upstream server": "EXLAB01"}


@pytest.mark.parametrize("upstream", ["tcp", "rpch"])
@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_emsmdb_session_with_rop_module(make_proxy, env, http_auth, upstream):
    p = start(make_proxy, env, **upstream_opts(env, upstream))
    before = len(lab_wire(env))
    EC.WIRE_LOG = []
    try:
        dce = rpch_dce(p.url, 6001, N.MSRPC_UUID_EMSMDB, http_auth, "alice", ALICE_PW)
        c = EC.EmsmdbClient(dce, compress=True, xor=True)
        r = c.connect_ex(ALICE)
        assert r["ErrorCode"] == 0
        assert r["szDisplayName"].rstrip("\x00") == "Alice Anders"
        # the session ends with a buffer holding an unknown RopId: the proxy,
        # which terminated the logon, refuses a buffer it cannot read
        # (mailbox authorization: it could hold a RopLogon)
        with pytest.raises(DCERPCException, match="rpc_s_access_denied"):
            rop_session(c)
        assert c.disconnect()["ErrorCode"] == 0
        dce.disconnect()
        mine = EC.WIRE_LOG
    finally:
        EC.WIRE_LOG = None
    up = lab_wire(env)[before:]
    sent = b"".join(x for w in up for x in contents(w["in"]))
    assert "Jello from the lab".encode("utf-16le") in sent
    assert "Hello from the lab".encode("utf-16le") not in sent
    got = b"".join(x for w in mine for x in contents(w["out"]))
    assert "Hello from the lab".encode("utf-16le") in got
    assert "Jello".encode("utf-16le") not in got
    p.stop()
    log = p.log()
    assert re.search(r"virtual connection open", log)
    assert "(rpch)" in log  # the association is the carrier's
    assert ALICE_PW not in log and PROXY_PW not in log
    assert "EcDoRpcExt2 refused (a ROP buffer the proxy cannot read" in log
    if upstream == "rpch":
        assert re.search(r"rpch upstream .*: virtual connection open \(\?EXLAB01:\d+", log)
        lab = open(os.path.join(env["dir"], "lab.log")).read()
        assert "user=LAB\\Administrator" in lab or "user=Administrator" in lab


@pytest.mark.parametrize("bad", ["server", "password"])
def test_rpch_upstream_refused(make_proxy, env, bad):
    """The lab's RPC proxy refuses the proxy's virtual connection (a target
    server it does not know: 503; a wrong HTTP Basic password: 401): the
    client's connection is closed, the proxy logs the upstream's status
    line, and the next virtual connection (with a good configuration) goes
    on."""
    over = upstream_opts(env, "rpch")
    if bad == "server":
        over["mapiproxy:rpc over http upstream server"] = "NOSUCH"
        want = "answered \"HTTP/1.1 503"
    else:
        wrong = os.path.join(env["dir"], "wrong-password")
        with open(wrong, "w") as f:
            f.write("not-the-password\n")
        os.chmod(wrong, 0o600)
        over["mapiproxy:password file"] = wrong
        want = "answered \"HTTP/1.1 401"
    p = start(make_proxy, env, **over)
    # an ncacn_ip_tcp client this time (the upstream choice serves every
    # client): Impacket's ncacn_http client keeps reading a closed channel
    t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % p.rpc_port)
    t.set_credentials("alice", ALICE_PW, "LAB")
    d = t.get_dce_rpc()
    d.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    d.connect()
    # the proxy terminates the logon, so it answers the bind itself, then
    # opens the upstream: that fails and the client's connection is closed
    # (read here directly: Impacket's recv loops on a closed socket)
    d.bind(N.MSRPC_UUID_EMSMDB)
    sock = t.get_socket()
    sock.settimeout(15)
    assert sock.recv(1) == b""
    d.disconnect()
    good = start(make_proxy, env, **upstream_opts(env, "rpch"))
    d = rpch_dce(good.url, 6001, N.MSRPC_UUID_EMSMDB, AUTH_BASIC, "alice", ALICE_PW)
    c = EC.EmsmdbClient(d)
    assert c.connect_ex(ALICE)["ErrorCode"] == 0
    assert c.disconnect()["ErrorCode"] == 0
    d.disconnect()
    p.stop()
    log = p.log()
    assert re.search(r"rpch upstream .*: virtual connection closed: (OUT|IN) channel: "
                     r"RPC_(OUT|IN)_DATA " + want, log), log[-3000:]
    assert "not-the-password" not in log


def test_rpch_upstream_windows(make_proxy, env):
    """Through the RPC over HTTP upstream, 20 NSPI rounds (more than the
    64 KiB windows each way, which the lab's RPC proxy enforces: it sends
    no more than the proxy's window until the proxy's FlowControlAck, and
    acknowledges the proxy's IN channel) give the answers of a direct
    ncacn_ip_tcp client."""
    t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % env["ports"]["nspi"])
    t.set_credentials("alice", ALICE_PW, "LAB")
    d = t.get_dce_rpc()
    d.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    d.connect()
    d.bind(nspi.MSRPC_UUID_NSPI)
    want = nspi_answers(d)
    d.disconnect()
    p = start(make_proxy, env, **upstream_opts(env, "rpch"))
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_NTLM, "alice", ALICE_PW)
    for _ in range(20):
        assert nspi_answers(d) == want
    d.disconnect()
    p.stop()
    assert "rpch upstream" in p.log() and "virtual connection open (?EXLAB01:" in p.log()
