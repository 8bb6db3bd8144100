"""RPC over HTTP v2 IN channel recycling through the proxy (MS-RPCH IN_R1,
src/transport/rpch/vconn.c): a client whose RPC_IN_DATA Content-Length is
1 KiB must replace its IN channel several times in the middle of an NSPI and
an RFR session; the sessions go on and get the answers a direct
ncacn_ip_tcp client gets.  The client is Impacket's ncacn_http client with
the recycling steps added from MS-RPCH (tests/lab/rpch_recycle.py); its
RTS PDUs are checked here against Impacket's own RTS structures."""
import os
import sys

from impacket.dcerpc.v5 import nspi, oxabref, rpch
from impacket.http import AUTH_BASIC, AUTH_NTLM
import pytest

from conftest import ROOT
from test_rpch import ALICE_PW, PRIVACY, channel, env, reference, start  # noqa: F401

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
from rpch_recycle import (ance, in_r1_a1, in_r1_a5, is_out_r1_a2, is_out_r2_a6,  # noqa: E402
                          is_out_r2_b3, out_r1_a3, out_r1_a7, out_r2_c1, parse_in_r1_a4,
                          parse_out_r1_a6, recycling_dce)
from test_lab_auth import nspi_answers, rfr_answers  # noqa: E402
from test_lab_rpch import drain  # noqa: E402


IN_LENGTH = 1024  # RPC_IN_DATA Content-Length: a few calls each


def impacket_rts(flags, cmds):
    h = rpch.RTSHeader()
    h["Flags"] = flags
    h["NumberOfCommands"] = len(cmds)
    h["pduData"] = b"".join(c.getData() for c in cmds)
    h["frag_len"] = 20 + len(h["pduData"])
    return h.getData()


def impacket_cookie(b):
    c = rpch.Cookie()
    c["Cookie"] = rpch.RTSCookie()
    c["Cookie"]["Cookie"] = b
    return c


def test_pdus_match_impacket_structures():
    vc, pred, succ = bytes(range(16)), bytes(range(16, 32)), bytes(range(48, 64))
    v = rpch.Version()
    v["Version"] = 1
    assert in_r1_a1(vc, pred, succ) == impacket_rts(
        rpch.RTS_FLAG_RECYCLE_CHANNEL,
        [v, impacket_cookie(vc), impacket_cookie(pred), impacket_cookie(succ)])
    assert in_r1_a5(succ) == impacket_rts(rpch.RTS_FLAG_NONE, [impacket_cookie(succ)])
    d = rpch.Destination()
    d["Destination"] = rpch.FDClient
    w = rpch.ReceiveWindowSize()
    w["ReceiveWindowSize"] = 0x10000
    t = rpch.ConnectionTimeout()
    t["ConnectionTimeout"] = 120000
    a4 = impacket_rts(rpch.RTS_FLAG_NONE, [d, v, w, t])
    assert parse_in_r1_a4(a4) == {"version": 1, "window": 0x10000, "timeout": 120000}
    assert parse_in_r1_a4(in_r1_a5(succ)) is None
    # OUT_R1
    assert out_r1_a3(vc, pred, succ, 0x10000) == impacket_rts(
        rpch.RTS_FLAG_RECYCLE_CHANNEL,
        [v, impacket_cookie(vc), impacket_cookie(pred), impacket_cookie(succ), w])
    ds = rpch.Destination()
    ds["Destination"] = rpch.FDServer
    assert out_r1_a7(succ) == impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL,
                                           [ds, impacket_cookie(succ), v])
    assert ance() == impacket_rts(rpch.RTS_FLAG_NONE, [rpch.ANCE()])
    assert is_out_r1_a2(impacket_rts(rpch.RTS_FLAG_RECYCLE_CHANNEL, [d]))
    assert parse_out_r1_a6(impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL, [d, v, t])) == {
        "version": 1, "timeout": 120000}
    # OUT_R2 (the proxy's choice, MS-RPCH 3.2.4.5.6.1): A6, B3 and the client's C1
    assert is_out_r2_a6(impacket_rts(rpch.RTS_FLAG_NONE, [d, rpch.ANCE()]))
    assert not is_out_r2_a6(impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL, [d, v, t]))
    assert is_out_r2_b3(impacket_rts(rpch.RTS_FLAG_EOF, [rpch.ANCE()]))
    assert not is_out_r2_b3(ance())
    assert out_r2_c1() == impacket_rts(rpch.RTS_FLAG_PING, [rpch.Empty()])
    assert len(out_r2_c1()) == len(ance())  # OUT_R1/A11's size (2.2.4.45)


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_in_channel_recycled_mid_session(make_proxy, env, reference, http_auth):  # noqa: F811
    p = start(make_proxy, env)
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)
    for _ in range(6):
        assert nspi_answers(d) == reference[1]
    nspi_recycles = t.in_recycles
    d.disconnect()
    t, d = recycling_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, http_auth, "alice",
                         ALICE_PW, PRIVACY, in_length=IN_LENGTH)
    for _ in range(6):
        assert rfr_answers(d) == reference[0]
    rfr_recycles = t.in_recycles
    d.disconnect()
    p.stop()
    log = p.log()
    print("IN recycles: nspi %d, rfr %d" % (nspi_recycles, rfr_recycles))
    assert nspi_recycles >= 3 and rfr_recycles >= 2, (nspi_recycles, rfr_recycles)
    assert all(a["timeout"] >= 120000 and a["window"] >= 0x2000 for a in t.a4)
    assert log.count("IN channel recycled") >= nspi_recycles + rfr_recycles
    assert "not supported" not in log
    assert ALICE_PW not in log


def test_bad_recycling_requests(make_proxy, env, reference):  # noqa: F811
    """An IN_R1/A1 for an unknown virtual connection, or naming another
    predecessor than the live IN channel, closes that request only: the
    session it names goes on and still recycles."""
    p = start(make_proxy, env)
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)
    assert nspi_answers(d) == reference[1]
    vc = t._RPCProxyClient__virtualConnectionCookie
    drain(channel(p.http_port, "RPC_IN_DATA", 4096, in_r1_a1(os.urandom(16), os.urandom(16),
                                                             os.urandom(16))))
    drain(channel(p.http_port, "RPC_IN_DATA", 4096, in_r1_a1(vc, os.urandom(16),
                                                             os.urandom(16))))
    before = t.in_recycles
    for _ in range(3):
        assert nspi_answers(d) == reference[1]
    assert t.in_recycles > before
    d.disconnect()
    p.stop()
    log = p.log()
    assert "IN_R1/A1 for an unknown virtual connection" in log
    assert "IN_R1/A1 names another predecessor IN channel" in log


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_out_channel_recycled_mid_session(make_proxy, env, reference, http_auth):  # noqa: F811
    """The proxy's OUT channel answer is 16 KiB long: before it runs out
    the proxy asks for OUT recycling (OUT_R2/A2) and the client moves to a
    new RPC_OUT_DATA, while its 1 KiB IN channel recycles too.  The proxy
    finds the virtual connection of the client's A3, so it runs OUT_R2
    (MS-RPCH 3.2.4.5.6.1): OUT_R2/A6, the client's OUT_R2/A7 and C1,
    OUT_R2/B3."""
    p = start(make_proxy, env, **{"mapiproxy:rpc over http out channel length": "16K"})
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)
    try:
        for _ in range(8):
            assert nspi_answers(d) == reference[1]
    except BaseException:
        print(p.log()[-4000:])
        raise
    d.disconnect()
    p.stop()
    log = p.log()
    print("recycles: IN %d, OUT %d" % (t.in_recycles, t.out_recycles))
    assert t.out_recycles >= 2 and t.in_recycles >= 3, (t.out_recycles, t.in_recycles)
    # OUT_R2 every time (this asked OUT_R1/A6's ConnectionTimeout before the
    # proxy followed 3.2.4.5.6: an outbound proxy that finds the virtual
    # connection cookie MUST run OUT_R2, whose A6 carries none)
    assert [a["seq"] for a in t.a6] == ["OUT_R2"] * t.out_recycles, t.a6
    # the proxy closes each predecessor OUT channel after its OUT_R2/B3
    assert t.old_out_closed == [True] * t.out_recycles, t.old_out_closed
    assert log.count("OUT channel recycled") >= t.out_recycles


def test_out_successor_body_other_than_c1(make_proxy, env, reference, monkeypatch):  # noqa: F811
    """After OUT_R2/A3 the client may send only OUT_R2/C1 on the successor
    OUT channel (MS-RPCH 3.2.2.5.9; the outbound proxy's B1OrC1W and R2C1W
    states).  A client that sends OUT_R1/A11 there (the last step of the
    other sequence, which the proxy never runs toward the client) commits a
    protocol error: the proxy decodes the successor's body and ends the
    virtual connection (3.2.4.5.14) with the reason in its log; the next
    client goes on."""
    import rpch_recycle
    p = start(make_proxy, env, **{"mapiproxy:rpc over http out channel length": "16K"})
    monkeypatch.setattr(rpch_recycle, "out_r2_c1", ance)  # OUT_R1/A11 in C1's place
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)

    def session():
        try:
            for _ in range(8):
                nspi_answers(d)
        except Exception:
            pass
    # Impacket's client does not notice its OUT channel closing while it
    # waits for IN_R1/A4: the session runs aside and its sockets are closed
    # once the proxy's line is there
    import threading
    import time
    th = threading.Thread(target=session, daemon=True)
    th.start()
    deadline = time.time() + 30
    while time.time() < deadline and "a PDU other than OUT_R2/C1" not in p.log():
        time.sleep(0.2)
    for ch in list(t._channels().values()):
        try:
            ch.sock.close()
        except Exception:
            pass
    th.join(10)
    monkeypatch.undo()
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)
    for _ in range(3):
        assert nspi_answers(d) == reference[1]
    assert t.out_recycles >= 1
    d.disconnect()
    p.stop()
    log = p.log()
    assert ("virtual connection closed: a PDU other than OUT_R2/C1 on the successor OUT "
            "channel") in log, log[-3000:]
    assert log.count("virtual connection closed: a PDU other than OUT_R2/C1") == 1
