"""HTTP logon pass-through for RPC over HTTP toward an RPC over HTTP upstream
(mapiproxy:http auth = pass-through, src/transport/rpch/hpass.c): the
client's own HTTP Basic or NTLM logon reaches the lab's /rpc/rpcproxy.dll
(tests/lab/lab_rpch.py, auth required, lab_mapihttp's NTLM acceptor), each
client channel connection pinned to one upstream connection for NTLM's
legs, which then carries the proxy's channel of the upstream virtual
connection.  The client is Impacket's ncacn_http transport (code we did
not write); NSPI and RFR answers equal a direct ncacn_ip_tcp client's, and
the lab names alice, not the proxy's account, on every channel."""
import os
import re
import socket
import ssl
import sys

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.http import AUTH_BASIC, AUTH_NTLM

from conftest import ROOT
from test_rpch import (ALICE_PW, PRIVACY, PROXY_PW, reference, rpch_dce,  # noqa: F401
                       rpch_lab_env, start)

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
from test_lab_auth import nspi_answers, rfr_answers  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-pass")))


def pass_opts(env):
    return {"mapiproxy:http auth": "pass-through",
            "mapiproxy:rpc over http upstream": f"https://localhost:{env['ports']['rpch']}",
            "mapiproxy:rpc over http upstream server": "EXLAB01"}


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_client_logon_reaches_upstream(make_proxy, env, reference, http_auth):  # noqa: F811
    want_r, want_n = reference
    with open(env["lab_log"]) as f:
        before = len(f.read())
    p = start(make_proxy, env, **pass_opts(env))
    try:
        d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth)
        for _ in range(3):
            assert nspi_answers(d) == want_n
        d.disconnect()
        d = rpch_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, http_auth)
        assert rfr_answers(d) == want_r
        d.disconnect()
    except BaseException:
        print(p.log()[-4000:])
        raise
    p.stop()
    log = p.log()
    with open(env["lab_log"]) as f:
        lab = f.read()[before:]
    chans = re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)
    print(chans)
    # two virtual connections, each an IN and an OUT channel, all as alice
    assert len(chans) >= 4 and all(u.lower().endswith("alice") for _, u in chans), chans
    if http_auth == AUTH_NTLM:
        assert lab.count("NTLM NEGOTIATE -> CHALLENGE") >= 4
    assert ALICE_PW not in log and PROXY_PW not in log
    assert "HTTP logons passed through to the upstream" in log


def test_wrong_password_refused_by_upstream(make_proxy, env):
    """A wrong NTLM password passes the legs (the proxy does not judge it);
    the channel request with the AUTHENTICATE goes to the upstream at once
    on the pinned connection (Expect: 100-continue), and the upstream's 401
    reaches the client as the answer to its channel request: Impacket's
    client raises with the lab's status line.  (Before, the proxy accepted
    the channel and the client only saw its virtual connection close once
    the association connected upstream.)  The next client goes on."""
    from impacket.dcerpc.v5 import transport
    from impacket.dcerpc.v5.rpch import RPCProxyClientException
    p = start(make_proxy, env, **pass_opts(env))
    t = transport.DCERPCTransportFactory("ncacn_http:EXLAB01[6004]")
    t.set_rpc_proxy_url(p.url)
    t.set_credentials("alice", "wrong-password", "LAB")
    t.set_auth_type(AUTH_NTLM)
    with pytest.raises(RPCProxyClientException) as ei:
        t.connect()
    print(ei.value)
    assert "401" in str(ei.value)
    assert re.search(r'the upstream answered the channel request "HTTP/1.[01] 401', p.log())
    assert "virtual connection open" not in p.log()  # none toward the lab was opened
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_NTLM)
    assert nspi_answers(d)
    d.disconnect()
    p.stop()
    assert "wrong-password" not in p.log() and ALICE_PW not in p.log()


def test_basic_passthrough_with_recycling(make_proxy, env, reference):  # noqa: F811
    """HTTP Basic passed through, the proxy's IN channel toward the lab 4 KiB
    long: its successor channels (IN_R1) carry the client's Basic header
    again, and the lab names alice on them too."""
    with open(env["lab_log"]) as f:
        before = len(f.read())
    over = pass_opts(env)
    over["mapiproxy:rpc over http upstream in channel length"] = "4K"
    p = start(make_proxy, env, **over)
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(8):
        assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    with open(env["lab_log"]) as f:
        lab = f.read()[before:]
    ins = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    chans = re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)
    assert ins >= 1 and len(chans) >= 2 + ins, (ins, chans)
    assert all(u.lower().endswith("alice") for _, u in chans), chans


def raw_channel(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10))
    return s


def read_head(s):
    """What s sends up to its head's empty line (or its close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        b = s.recv(4096)
        if not b:
            break
        data += b
    return data


def read_until_closed(s):
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                return got
            got += b
    except (ssl.SSLError, OSError):
        return got


@pytest.mark.parametrize("bad", ["garbage", "chunked", "other-path"])
def test_bad_logon_legs(make_proxy, env, reference, bad):  # noqa: F811
    """After a first leg (no Authorization: the lab's 401 comes back), a
    malformed next request, a chunked one, or one for another path closes
    that client connection with a log line; the next client goes on."""
    p = start(make_proxy, env, **pass_opts(env))
    s = raw_channel(p.http_port)
    s.sendall(b"RPC_IN_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 0\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 401"), head[:60]
    second = {"garbage": b"GARBAGE\r\n\r\n",
              "chunked": b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n",
              "other-path": b"RPC_IN_DATA /ews/exchange.asmx HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 0\r\n\r\n"}[bad]
    s.sendall(second)
    read_until_closed(s)
    s.close()
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_NTLM)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    assert "during the HTTP logon (pass-through)" in p.log(), p.log()[-2000:]


def impacket_ntlm_nspi(url):
    """Impacket's own ncacn_http client (its IN channel is 1 GiB: it never
    recycles, and raises on OUT_R1/A2) with HTTP NTLM, bound to NSPI at
    privacy; the 10 s read timeout makes an end an error, not a hang."""
    from impacket.dcerpc.v5 import transport
    t = transport.DCERPCTransportFactory("ncacn_http:EXLAB01[6004]")
    t.set_rpc_proxy_url(url)
    t.set_credentials("alice", ALICE_PW, "LAB")
    t.set_auth_type(AUTH_NTLM)
    t.set_connect_timeout(10)
    d = t.get_dce_rpc()
    d.set_credentials("alice", ALICE_PW, "LAB")
    d.set_auth_level(PRIVACY)
    d.connect()
    d.bind(nspi.MSRPC_UUID_NSPI)
    return d


def recycling_nspi(p, want, http_auth, rounds, in_length=1024):
    """The recycling client (tests/lab/rpch_recycle.py) through proxy p:
    rounds NSPI rounds equal to want (the proxy's log printed if not);
    returns its transport, disconnected."""
    from rpch_recycle import recycling_dce
    t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth, "alice", ALICE_PW,
                         PRIVACY, in_length=in_length)
    try:
        for _ in range(rounds):
            assert nspi_answers(d) == want
    except BaseException:
        print(p.log()[-5000:])
        raise
    d.disconnect()
    return t


def test_ntlm_passthrough_never_recycles_as_the_proxy(make_proxy, env, reference):  # noqa: F811
    """NTLM passed through, the proxy's IN channel toward the lab 4 KiB long
    and the proxy's own account configured (dcerpc_mapiproxy:username, which
    `rpc over http upstream auth` would use), the client one that recycles
    its 1 KiB IN channel (tests/lab/rpch_recycle.py): each client successor
    channel's fresh NTLM logon carries the proxy's successor IN channel
    toward the lab, the session goes on with a direct client's answers, and
    the lab never saw the proxy's account on a channel.  (Before, the
    virtual connection ended when the proxy's upstream IN channel ran out.)"""
    before = lab_mark(env)
    over = pass_opts(env)
    over["mapiproxy:rpc over http upstream in channel length"] = "4K"
    over["mapiproxy:rpc over http upstream auth"] = "ntlm"
    p = start(make_proxy, env, **over)
    t = recycling_nspi(p, reference[1], AUTH_NTLM, 12)
    p.stop()
    log = p.log()
    ups = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    print("client IN recycles %d, toward the lab %d" % (t.in_recycles, ups))
    assert t.in_recycles >= 4 and ups == t.in_recycles, (t.in_recycles, ups)
    assert "cannot be recycled without the client's logon" not in log
    with open(env["lab_log"]) as f:
        lab = f.read()[before:]
    chans = re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)
    assert len(chans) == 2 + t.in_recycles, chans
    assert chans and all(u.lower().endswith("alice") for _, u in chans), chans
    assert not re.search(r"rpch: .*user=\S*Administrator", lab)


def test_ntlm_passthrough_upstream_in_runs_out_first(make_proxy, env):
    """NTLM passed through, the proxy's IN channel toward the lab 4 KiB long,
    the client Impacket's own (a 1 GiB IN channel: it never recycles): the
    proxy's upstream IN channel runs out first.  No client can be asked to
    recycle its IN channel and the proxy does not log on as itself: the
    virtual connection ends with a line naming the option to raise, and the
    lab never saw the proxy's account on a channel."""
    before = lab_mark(env)
    over = pass_opts(env)
    over["mapiproxy:rpc over http upstream in channel length"] = "4K"
    over["mapiproxy:rpc over http upstream auth"] = "ntlm"
    p = start(make_proxy, env, **over)
    d = impacket_ntlm_nspi(p.url)
    import threading

    def rounds():
        try:
            for _ in range(12):
                nspi_answers(d)
        except Exception as e:
            print("client:", e)
    th = threading.Thread(target=rounds, daemon=True)
    th.start()
    import time
    deadline = time.time() + 15  # Impacket's client may keep reading its closed OUT channel
    while time.time() < deadline and "virtual connection closed: the association" not in p.log():
        time.sleep(0.2)
    p.stop()
    log = p.log()
    print(log[-2500:])
    assert "cannot be recycled without the client's logon" in log, log[-3000:]
    assert "raise mapiproxy:rpc over http upstream in channel length" in log
    with open(env["lab_log"]) as f:
        lab = f.read()[before:]
    chans = re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)
    assert chans and all(u.lower().endswith("alice") for _, u in chans), chans
    assert not re.search(r"rpch: .*user=\S*Administrator", lab)


def lab_mark(env):
    with open(env["lab_log"]) as f:
        return len(f.read())


def test_upstream_that_never_answers_the_channel_logon(make_proxy, env):
    """An upstream that takes the channel request's head (Expect:
    100-continue) and never answers: after mapiproxy:http upstream timeout
    the client's connection closes with a log line, nothing waits forever;
    the upstream got the head with Expect and the client's Basic line."""
    import base64
    import threading
    import time
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    got = []

    def silent():
        c, _ = srv.accept()
        c.settimeout(10)
        try:
            got.append(read_head(c))
            time.sleep(5)
        finally:
            c.close()
    threading.Thread(target=silent, daemon=True).start()
    over = pass_opts(env)
    over["mapiproxy:rpc over http upstream"] = f"http://127.0.0.1:{srv.getsockname()[1]}"
    over["mapiproxy:http upstream timeout"] = "1"
    p = start(make_proxy, env, **over)
    s = raw_channel(p.http_port)
    cred = base64.b64encode(b"LAB\\alice:" + ALICE_PW.encode())
    t0 = time.time()
    s.sendall(b"RPC_IN_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Basic " + cred + b"\r\nContent-Length: 1073741824\r\n\r\n")
    read_until_closed(s)
    took = time.time() - t0
    s.close()
    p.stop()
    srv.close()
    assert took < 5, took
    assert got and b"Expect: 100-continue" in got[0] and cred in got[0], got
    assert "the upstream did not answer within 1 s" in p.log(), p.log()[-2000:]
    assert ALICE_PW not in p.log() and cred.decode() not in p.log()
