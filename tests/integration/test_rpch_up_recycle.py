"""Channel recycling toward an RPC over HTTP upstream (MS-RPCH 3.2.2 as the
client, src/transport/rpch/upclient.c): the proxy's RPC_IN_DATA toward the
lab's /rpc/rpcproxy.dll is 8 KiB long, so the proxy replaces its IN channel
(IN_R1) every few calls; the lab's RPC_OUT_DATA answers are 16 KiB long, so
the lab asks for OUT channel recycling (OUT_R1/A2) and the proxy follows
OUT_R1 as the client.  NSPI and RFR sessions of Impacket's ncacn_http
client through the proxy get the answers a direct ncacn_ip_tcp client gets.

The lab's server side of IN_R1 and OUT_R1 (tests/lab/lab_rpch.py) is
written from MS-RPCH; its PDUs are checked here against Impacket's RTS
structures.  Bad input: an upstream sending recycling PDUs out of order
ends that virtual connection with a log line; the next session goes on."""
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpch, rpcrt, transport
from impacket.http import AUTH_BASIC, AUTH_NTLM

from conftest import ROOT
from test_rpch import (ALICE_PW, PROXY_PW, reference, rpch_dce, rpch_lab_env,  # noqa: F401
                       start)
from test_rpch_recycle import impacket_rts

LAB_DIR = os.path.join(ROOT, "tests", "lab")
sys.path.insert(0, LAB_DIR)
import lab_rpch  # noqa: E402
from test_lab_auth import nspi_answers, rfr_answers  # noqa: E402

OUT_LENGTH = 16384   # the lab's RPC_OUT_DATA Content-Length
IN_LENGTH = "4K"     # the proxy's RPC_IN_DATA Content-Length toward the lab


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-up-recycle")),
                            "--rpch-out-length", str(OUT_LENGTH))


def up_opts(port):
    return {"mapiproxy:rpc over http upstream": f"https://localhost:{port}",
            "mapiproxy:rpc over http upstream server": "EXLAB01",
            "mapiproxy:rpc over http upstream in channel length": IN_LENGTH}


def u32cmd(cls, field, value):
    c = cls()
    c[field] = value
    return c


def test_lab_pdus_match_impacket_structures():
    """The lab's IN_R1/A4, OUT_R1/A2, A6 and A10 are Impacket's."""
    d = u32cmd(rpch.Destination, "Destination", rpch.FDClient)
    v = u32cmd(rpch.Version, "Version", 1)
    w = u32cmd(rpch.ReceiveWindowSize, "ReceiveWindowSize", lab_rpch.RECEIVE_WINDOW)
    t = u32cmd(rpch.ConnectionTimeout, "ConnectionTimeout", lab_rpch.CONNECTION_TIMEOUT)
    p = struct.pack
    assert lab_rpch.rts_pdu(lab_rpch.FLAG_NONE, [
        (13, p("<L", lab_rpch.FD_CLIENT)), (6, p("<L", 1)),
        (0, p("<L", lab_rpch.RECEIVE_WINDOW)), (2, p("<L", lab_rpch.CONNECTION_TIMEOUT))]) == \
        impacket_rts(rpch.RTS_FLAG_NONE, [d, v, w, t])
    assert lab_rpch.rts_pdu(lab_rpch.FLAG_RECYCLE, [(13, p("<L", lab_rpch.FD_CLIENT))]) == \
        impacket_rts(rpch.RTS_FLAG_RECYCLE_CHANNEL, [d])
    assert lab_rpch.rts_pdu(lab_rpch.FLAG_OUT_CHANNEL, [
        (13, p("<L", lab_rpch.FD_CLIENT)), (6, p("<L", 1)),
        (2, p("<L", lab_rpch.CONNECTION_TIMEOUT))]) == \
        impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL, [d, v, t])
    assert lab_rpch.rts_pdu(lab_rpch.FLAG_NONE, [(10, b"")]) == \
        impacket_rts(rpch.RTS_FLAG_NONE, [rpch.ANCE()])
    # what the lab parses: IN_R1/A1, A5, OUT_R1/A3, A7 as Impacket builds them
    ck = rpch.Cookie()
    ck["Cookie"] = rpch.RTSCookie()
    ck["Cookie"]["Cookie"] = bytes(range(16))
    a1 = impacket_rts(rpch.RTS_FLAG_RECYCLE_CHANNEL, [v, ck, ck, ck])
    assert lab_rpch.rts_parse(a1) == (lab_rpch.FLAG_RECYCLE,
                                      [(6, p("<L", 1))] + [(3, bytes(range(16)))] * 3)
    ds = u32cmd(rpch.Destination, "Destination", rpch.FDServer)
    a7 = impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL, [ds, ck, v])
    assert [t for t, _ in lab_rpch.rts_parse(a7)[1]] == [13, 3, 6]


def sessions_to_lab(make_proxy, env, reference, http_auth):  # noqa: F811
    """16 NSPI and 6 RFR rounds of Impacket's ncacn_http client through a
    proxy whose upstream is the lab's RPC proxy, each answer equal to a
    direct client's; -> (the stopped proxy, its log, the lab's log lines
    written meanwhile)."""
    want_r, want_n = reference
    with open(env["lab_log"]) as f:
        lab_before = f.read()
    p = start(make_proxy, env, **up_opts(env["ports"]["rpch"]))
    try:
        d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth)
        for _ in range(16):
            assert nspi_answers(d) == want_n
        d.disconnect()
        d = rpch_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, http_auth)
        for _ in range(6):
            assert rfr_answers(d) == want_r
        d.disconnect()
    except BaseException:
        print(p.log()[-4000:])
        raise
    p.stop()
    with open(env["lab_log"]) as f:
        return p, p.log(), f.read()[len(lab_before):]


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_both_channels_recycled_toward_upstream(make_proxy, env, reference, http_auth):  # noqa: F811
    p, log, lab = sessions_to_lab(make_proxy, env, reference, http_auth)
    ins = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    outs = len(re.findall(r"rpch upstream .*: OUT channel recycled", log))
    print("proxy: IN %d, OUT %d recycles; lab: IN %d, OUT %d" % (
        ins, outs, lab.count("IN channel recycled"), lab.count("OUT channel recycled")))
    assert ins >= 3 and outs >= 3, (ins, outs)
    assert lab.count("IN channel recycled") == ins
    assert lab.count("OUT channel recycled") == outs
    # the upstream virtual connections ended only when their association did
    assert not re.search(r"rpch upstream .*: virtual connection closed: (?!the association closed)",
                         log), log[-3000:]
    assert ALICE_PW not in log and PROXY_PW not in log


class BadUpstream(object):
    """An RPC proxy (TLS) that opens the virtual connection as MS-RPCH says
    (CONN/A3, CONN/C2) and then sends one out-of-order recycling PDU."""

    def __init__(self, cert, pdu):
        self.pdu = pdu
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(*cert)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.channel, args=(c,), daemon=True).start()

    def channel(self, raw):
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
            self.conns.append(c)
            head = b""
            while b"\r\n\r\n" not in head:
                more = c.recv(4096)
                if not more:
                    return
                head += more
            if not head.startswith(b"RPC_OUT_DATA"):
                while c.recv(4096):   # the IN channel: read until closed
                    pass
                return
            p = struct.pack
            c.sendall(b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
                      b"Content-Length: 1073741824\r\n\r\n"
                      + lab_rpch.rts_pdu(0, [(2, p("<L", 120000))])
                      + lab_rpch.rts_pdu(0, [(6, p("<L", 1)), (0, p("<L", 65536)),
                                             (2, p("<L", 120000))])
                      + self.pdu)
            while c.recv(4096):
                pass
        except OSError:
            pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def assert_client_closed(p):
    """An ncacn_ip_tcp client of proxy p (the upstream choice serves every
    client; Impacket's ncacn_http client keeps reading a closed channel): the
    proxy terminates the logon and answers the bind, then opens the
    upstream; that fails and the client's connection is closed."""
    t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % p.rpc_port)
    t.set_credentials("alice", ALICE_PW, "LAB")
    d = t.get_dce_rpc()
    d.set_auth_level(rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    d.connect()
    d.bind(nspi.MSRPC_UUID_NSPI)
    sock = t.get_socket()
    sock.settimeout(15)
    assert sock.recv(1) == b""
    d.disconnect()


BAD = {
    # IN_R1/A4 when the proxy did not recycle its IN channel
    "in_r1_a4": (lab_rpch.rts_pdu(0, [(13, struct.pack("<L", 0)), (6, struct.pack("<L", 1)),
                                      (0, struct.pack("<L", 65536)),
                                      (2, struct.pack("<L", 120000))]),
                 "IN_R1/A4 without IN channel recycling"),
    # OUT_R1/A10 (ANCE) without OUT_R1/A2..A7 before it
    "out_r1_a10": (lab_rpch.rts_pdu(0, [(10, b"")]), "OUT_R1/A10 without OUT_R1/A7"),
    # OUT_R1/A6 without OUT_R1/A2
    "out_r1_a6": (lab_rpch.rts_pdu(0x10, [(13, struct.pack("<L", 0)), (6, struct.pack("<L", 1)),
                                          (2, struct.pack("<L", 120000))]),
                  "OUT_R1/A6 without OUT_R1/A3"),
    # OUT_R1/A2 naming the server as its destination
    "out_r1_a2": (lab_rpch.rts_pdu(4, [(13, struct.pack("<L", 2))]),
                  "OUT_R1/A2 for another destination"),
    # a recycling PDU cut short (frag_length past its commands)
    "truncated": (lab_rpch.rts_pdu(4, [(13, struct.pack("<L", 0))])[:-4], None),
}


def bad_then_good(make_proxy, env, bad):
    """A proxy whose upstream is bad: its client is closed; then a proxy to
    the lab serves an NSPI session.  -> the first proxy's log."""
    p = start(make_proxy, env, **up_opts(bad.port))
    assert_client_closed(p)
    good = start(make_proxy, env, **up_opts(env["ports"]["rpch"]))
    d = rpch_dce(good.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d)
    d.disconnect()
    p.stop()
    return p.log()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recycling_from_upstream(make_proxy, env, case):
    pdu, why = BAD[case]
    if case == "truncated":   # frag_length still says 28: the PDU is short by 4
        pdu = pdu[:8] + struct.pack("<H", len(pdu)) + pdu[10:]
    bad = BadUpstream(env["lab_cert"], pdu)
    try:
        log = bad_then_good(make_proxy, env, bad)
        assert re.search(r"rpch upstream .*: virtual connection closed: OUT channel: ", log), \
            log[-3000:]
        if why:
            assert why in log, log[-3000:]
    finally:
        bad.close()


@pytest.mark.parametrize("password", ["good", "wrong"])
def test_upstream_ntlm_logon(make_proxy, env, reference, tmp_path, password):  # noqa: F811
    """mapiproxy:rpc over http upstream auth = ntlm: every channel toward the
    lab's RPC proxy, successors included, logs on with NTLM (a first leg with
    Content-Length 0 and the NEGOTIATE, the request with the AUTHENTICATE
    on the same connection); the lab's NTLM acceptor (tests/lab/labauth.py)
    names the proxy's account.  A wrong password: the lab answers 401, the
    virtual connection ends with that status line in the log."""
    over = dict(up_opts(env["ports"]["rpch"]))
    over["mapiproxy:rpc over http upstream auth"] = "ntlm"
    if password == "wrong":
        wrong = str(tmp_path / "wrong-password")
        with open(wrong, "w") as f:
            f.write("not-the-password\n")
        os.chmod(wrong, 0o600)
        over["mapiproxy:password file"] = wrong
    with open(env["lab_log"]) as f:
        lab_before = f.read()
    p = start(make_proxy, env, **over)
    if password == "wrong":
        assert_client_closed(p)
        p.stop()
        log = p.log()
        assert re.search(r"rpch upstream .*: virtual connection closed: (OUT|IN) channel: "
                         r"RPC_(OUT|IN)_DATA answered \"HTTP/1.1 401", log), log[-3000:]
        assert "not-the-password" not in log
        return
    want = reference[1]
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(12):
        assert nspi_answers(d) == want
    d.disconnect()
    p.stop()
    log = p.log()
    with open(env["lab_log"]) as f:
        lab = f.read()[len(lab_before):]
    assert "HTTP NTLM" in log
    ins = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    outs = len(re.findall(r"rpch upstream .*: OUT channel recycled", log))
    assert ins >= 2 and outs >= 2, (ins, outs)
    # every channel (2 + one per recycle) logged on as the proxy's account with NTLM
    nego = lab.count("NTLM NEGOTIATE -> CHALLENGE")
    users = len(re.findall(r"rpch: (IN|OUT) channel \S+ user=(LAB\\)?Administrator", lab))
    assert nego >= 2 + ins + outs and users >= 2 + ins + outs, (nego, users, ins, outs)
    assert PROXY_PW not in log


def test_upstream_options_checked(tmp_path):
    """--check refuses an unknown upstream logon scheme and an IN channel
    length below 4K, naming the option."""
    from conftest import PROXY_BIN
    base = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
            "mapiproxy:rpc over http upstream = https://localhost"]
    cases = {"auth": ("mapiproxy:rpc over http upstream auth = kerberos",
                      "use basic or ntlm"),
             "length": ("mapiproxy:rpc over http upstream in channel length = 1K",
                        "mapiproxy:rpc over http upstream in channel length")}
    for name, (line, want) in cases.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text("\n".join(base + [line]) + "\n")
        r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, name
        assert want in r.stdout + r.stderr, (name, r.stdout + r.stderr)
