"""Channel recycling toward the RPC over HTTP upstream after an HTTP NTLM or
Negotiate logon passed through (mapiproxy:http auth = pass-through,
src/transport/rpch/rpch.c hand_pin, upclient.c mp_rpch_up_successor): the
proxy cannot log on upstream as the client, so it follows the client's own
recycling.  Each successor channel the client opens is logged on afresh by
the client; its pinned upstream connection carries the proxy's successor
channel toward the lab (IN_R1/A1 at once; OUT_R1/A3 when the lab asked with
OUT_R1/A2, which the proxy turns into an OUT_R1/A2 to the client).

The client is Impacket's ncacn_http transport with the recycling steps of
tests/lab/rpch_recycle.py (checked against Impacket's RTS structures in
test_rpch_recycle.py); the upstream is the lab's RPC proxy
(tests/lab/lab_rpch.py, written from MS-RPCH) with a 16 KiB OUT channel, whose
NTLM acceptor (lab_mapihttp.py) or MIT Kerberos acceptor names the account
of every channel it accepts.  Answers equal a direct ncacn_ip_tcp client's,
and the lab never sees the proxy's account."""
import os
import re
import sys
import time

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.http import AUTH_NEGOTIATE, AUTH_NTLM

from conftest import ROOT
from test_rpch import ALICE_PW, PRIVACY, PROXY_PW, PROXY_USER, reference, rpch_lab_env, start  # noqa: F401,E501

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
from rpch_recycle import recycling_dce  # noqa: E402
from test_lab_auth import nspi_answers, rfr_answers  # noqa: E402

import krb5_env  # noqa: E402
from test_rpch_negotiate import krb, merge_keytabs, negotiate_client  # noqa: F401,E402
from test_rpch_passthrough import impacket_ntlm_nspi, recycling_nspi  # noqa: E402

OUT_LENGTH = 16384  # the lab's OUT channel answers: it asks for OUT_R1 every few calls
IN_LENGTH = 1024    # the client's RPC_IN_DATA: a few calls each


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-pass-recycle")),
                            "--rpch-out-length", str(OUT_LENGTH))


def pass_opts(env, **more):
    o = {"mapiproxy:http auth": "pass-through",
         "mapiproxy:rpc over http upstream": f"https://localhost:{env['ports']['rpch']}",
         "mapiproxy:rpc over http upstream server": "EXLAB01",
         # the proxy's own account is configured: it must never be used
         "mapiproxy:rpc over http upstream auth": "ntlm"}
    o.update(more)
    return o


def lab_mark(env):
    with open(env["lab_log"]) as f:
        return len(f.read())


def lab_since(env, before):
    with open(env["lab_log"]) as f:
        return f.read()[before:]


def channels(lab):
    return re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)


def recycling_session(p, env, reference, http_auth, user_ok):
    """NSPI (8 rounds) and RFR (4 rounds) through proxy p by the recycling
    client; answers as direct.  Returns (client recycles, proxy log, lab
    log, lab channel lines)."""
    before = lab_mark(env)
    counts = []
    t = recycling_nspi(p, reference[1], http_auth, 8, IN_LENGTH)
    counts.append((t.in_recycles, t.out_recycles))
    try:
        t, d = recycling_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, http_auth, "alice",
                             ALICE_PW, PRIVACY, in_length=IN_LENGTH)
        for _ in range(4):
            assert rfr_answers(d) == reference[0]
        counts.append((t.in_recycles, t.out_recycles))
        d.disconnect()
    except BaseException:
        print(p.log()[-5000:])
        raise
    p.stop()
    log = p.log()
    lab = lab_since(env, before)
    chans = channels(lab)
    print("client recycles (IN, OUT) per session:", counts)
    print("lab channels:", len(chans), sorted(set(u for _, u in chans)))
    assert chans and all(user_ok(u) for _, u in chans), chans
    assert not re.search(r"rpch: .*user=\S*%s" % PROXY_USER, lab), lab[-2000:]
    assert ALICE_PW not in log and PROXY_PW not in log
    assert "virtual connection closed: pass-through" not in log, log[-3000:]
    return counts, log, lab, chans


def check_followed(counts, log, chans):
    ins = sum(c[0] for c in counts)
    outs = sum(c[1] for c in counts)
    up_in = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    up_out = len(re.findall(r"rpch upstream .*: OUT channel recycled", log))
    print("client IN %d OUT %d; proxy toward the lab IN %d OUT %d" % (ins, outs, up_in, up_out))
    assert ins >= 4 and outs >= 2, counts
    # every client recycle carried one toward the lab, on the client's logon
    assert up_in == ins and up_out == outs, (ins, outs, up_in, up_out)
    assert log.count("successor's logon handed to the upstream client") == ins + outs
    # the lab logged on each channel: 2 first ones per session plus each successor
    assert len(chans) == 4 + ins + outs, (len(chans), ins, outs)
    assert "the upstream asks to recycle its OUT channel" in log


def test_ntlm_client_recycling_carries_the_upstreams(make_proxy, env, reference):  # noqa: F811
    p = start(make_proxy, env, **pass_opts(env))
    counts, log, lab, chans = recycling_session(p, env, reference, AUTH_NTLM,
                                                lambda u: u.lower().endswith("alice"))
    check_followed(counts, log, chans)
    assert lab.count("NTLM NEGOTIATE -> CHALLENGE") >= len(chans)


def test_ntlm_proxy_and_upstream_both_ask_for_out_recycling(make_proxy, env,
                                                            reference):  # noqa: F811
    """The proxy's own OUT channel toward the client is 16 KiB too: the
    client recycles its OUT channel for the proxy's length as well as for
    the lab's.  A successor made for the proxy's length while the lab had
    not asked is not handed upstream (the lab's OUT_R1/A3 must follow its
    A2); when the lab asks during a client OUT switch the client is asked
    again after it.  The session goes on as direct, every lab channel is
    alice's."""
    p = start(make_proxy, env, **pass_opts(
        env, **{"mapiproxy:rpc over http out channel length": "16K"}))
    counts, log, lab, chans = recycling_session(p, env, reference, AUTH_NTLM,
                                                lambda u: u.lower().endswith("alice"))
    ins = sum(c[0] for c in counts)
    outs = sum(c[1] for c in counts)
    up_in = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    up_out = len(re.findall(r"rpch upstream .*: OUT channel recycled", log))
    asked = log.count("the upstream asks to recycle its OUT channel")
    print("client IN %d OUT %d; toward the lab IN %d OUT %d (asked %d)"
          % (ins, outs, up_in, up_out, asked))
    assert up_in == ins and up_out == asked and outs >= up_out >= 1, (ins, outs, up_out, asked)
    assert log.count("successor's logon handed to the upstream client") == ins + up_out
    assert len(chans) == 4 + ins + outs, (len(chans), ins, outs)


@pytest.fixture(scope="module")
def neg_env(krb, tmp_path_factory):  # noqa: F811
    d = tmp_path_factory.mktemp("rpch-pass-recycle-neg")
    lab_kt = merge_keytabs(krb, str(d / "lab.keytab"), krb.keytab("upstream"), krb.http_keytab)
    yield from rpch_lab_env(str(d), "--keytab", lab_kt, "--http-auth", "ntlm,basic,negotiate",
                            "--rpch-out-length", str(OUT_LENGTH))


@pytest.mark.skipif(krb5_env.gss_missing() is not None, reason=krb5_env.gss_missing() or "")
def test_kerberos_client_recycling_carries_the_upstreams(make_proxy, neg_env, negotiate_client,
                                                         reference):  # noqa: F811
    """The same with Kerberos (SPNEGO from MIT's initiator, a fresh
    authenticator per channel): every channel the lab accepts, successors
    included, is alice's ticket."""
    p = start(make_proxy, neg_env, **pass_opts(neg_env))
    counts, log, lab, chans = recycling_session(p, neg_env, reference, AUTH_NEGOTIATE,
                                                lambda u: u == "alice@LAB.EXAMPLE")
    check_followed(counts, log, chans)
    assert len(negotiate_client) == len(chans)


@pytest.mark.parametrize("which", ["IN", "OUT"])
def test_successor_logon_refused_by_upstream(make_proxy, env, reference, which):  # noqa: F811
    """Bad input: the client's successor IN or OUT channel logs on with a
    wrong password.  The lab's 401 is the client's answer to that channel
    request (Impacket raises), which never becomes a channel: nothing is
    handed to the upstream client.  The virtual connection goes on on its
    old channels (the client puts them back and logs on right next time:
    more rounds as direct, with recycling toward the lab again), then ends
    with its log line (the ASan build checks for leaks at exit)."""
    from impacket.dcerpc.v5.rpch import RPCProxyClientException
    before = lab_mark(env)
    p = start(make_proxy, env, **pass_opts(env))
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_NTLM, "alice", ALICE_PW,
                         PRIVACY, in_length=IN_LENGTH)
    assert nspi_answers(d) == reference[1]
    slot = "RPC_IN_DATA" if which == "IN" else "RPC_OUT_DATA"
    old = t._channels()[slot]
    t.set_credentials("alice", "wrong-password", "LAB")
    with pytest.raises(RPCProxyClientException) as ei:
        t.recycle_in() if which == "IN" else t.recycle_out()
    print(ei.value)
    assert "401" in str(ei.value) and slot in str(ei.value)
    t._channels()[slot] = old
    t.set_credentials("alice", ALICE_PW, "LAB")
    recycled = len(re.findall(r"rpch upstream .*: (?:IN|OUT) channel recycled", p.log()))
    for _ in range(4):
        assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert re.search(r'the upstream answered the channel request "HTTP/1.[01] 401', log), log[-3000:]
    assert len(re.findall(r"rpch upstream .*: (?:IN|OUT) channel recycled", log)) > recycled
    assert re.search(r"rpch \S+: virtual connection closed: ", log)
    assert "wrong-password" not in log and ALICE_PW not in log
    chans = channels(lab_since(env, before))
    assert chans and all(u.lower().endswith("alice") for _, u in chans), chans


def test_non_recycling_client_asked_to_recycle(make_proxy, env):
    """The lab asks for OUT recycling; Impacket's own client (which does not
    recycle: it raises on OUT_R1/A2) is asked in turn; the session ends with
    a log line, never with a channel logged on as the proxy."""
    before = lab_mark(env)
    p = start(make_proxy, env, **pass_opts(env))
    d = impacket_ntlm_nspi(p.url)
    with pytest.raises(Exception) as ei:
        for _ in range(20):
            nspi_answers(d)
    print("client:", repr(ei.value))
    deadline = time.time() + 10
    while time.time() < deadline and "virtual connection closed" not in p.log():
        time.sleep(0.2)
    p.stop()
    log = p.log()
    assert "OUT channel recycling asked of the client" in log, log[-3000:]
    assert "virtual connection closed" in log
    chans = channels(lab_since(env, before))
    assert chans and all(u.lower().endswith("alice") for _, u in chans), chans
