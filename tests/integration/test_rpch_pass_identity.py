"""RPC over HTTP with the HTTP logon passed through (mapiproxy:http auth =
pass-through): a virtual connection takes channels of one account only.
The proxy does not log clients on, but the upstream checks every channel
request's logon before the channel starts (hpass.c: Expect: 100-continue);
the account it accepted (Basic's user, the NTLM AUTHENTICATE's domain and
user) is the channel's (rpch.c same_account).  The virtual connection cookie
is the client's secret; a leaked one must not let another account add a
channel to the victim's virtual connection, even when the upstream (the
lab, like any single RPC proxy that does not compare accounts across
channels) would take it.

Alice runs a session with Impacket's ncacn_http client (with the IN
recycling steps of tests/lab/rpch_recycle.py) through the proxy to the
lab's RPC proxy; bob, a lab account too, logs on with Impacket's own HTTP
logon code on a new RPC_IN_DATA and sends IN_R1/A1 naming alice's virtual
connection and IN channel cookies: refused with a log line, and alice's
session goes on (her own successor channels are still taken)."""
import os
import re
import sys
import time

import pytest
from impacket.dcerpc.v5 import nspi, transport
from impacket.http import AUTH_BASIC, AUTH_NTLM

from conftest import ROOT
from test_rpch import ALICE_PW, PRIVACY, reference, rpch_lab_env, start  # noqa: F401
from test_rpch_passthrough import pass_opts

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
from rpch_recycle import RecyclingHTTPTransport, in_r1_a1, recycling_dce  # noqa: E402
from test_lab_auth import nspi_answers  # noqa: E402

BOB_PW = "B0b-Other!"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-pass-id")),
                            lab_users=f"bob:LAB:{BOB_PW}\n")


def bob_in_channel(url, vc, pred, http_auth):
    """Bob's RPC_IN_DATA, logged on by Impacket's HTTP code (the upstream
    took it: Impacket read the 100 Continue), then IN_R1/A1 with alice's
    cookies.  Returns the transport holding the channel."""
    b = RecyclingHTTPTransport("EXLAB01", 6004)
    b.set_stringbinding(transport.DCERPCStringBinding("ncacn_http:EXLAB01[6004]"))
    b.set_rpc_proxy_url(url)
    b.set_credentials("bob", BOB_PW, "LAB")
    b.set_auth_type(http_auth)
    headers = b.default_headers.copy()
    headers["Content-Length"] = "1073741824"
    b.create_channel("RPC_IN_DATA", headers)
    b.get_socket_in().sendall(in_r1_a1(vc, pred, os.urandom(16)))
    return b


@pytest.mark.parametrize("http_auth", [AUTH_NTLM, AUTH_BASIC], ids=["ntlm", "basic"])
def test_other_account_with_leaked_cookie_refused(make_proxy, env, reference,  # noqa: F811
                                                  http_auth):
    want_n = reference[1]
    p = start(make_proxy, env, **pass_opts(env))
    try:
        t, d = recycling_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth, "alice", ALICE_PW,
                             PRIVACY, in_length=1024)
        assert nspi_answers(d) == want_n
        vc = t._RPCProxyClient__virtualConnectionCookie
        pred = t._RPCProxyClient__inChannelCookie
        b = bob_in_channel(p.url, vc, pred, http_auth)
        sock = b.get_socket_in()
        sock.settimeout(10)
        try:
            closed = sock.recv(1) == b""
        except (ConnectionError, OSError):
            closed = True
        assert closed  # the proxy closed bob's channel
        deadline = time.time() + 10
        while time.time() < deadline and "another identity" not in p.log():
            time.sleep(0.1)
        # alice's session goes on, recycling her IN channel as alice
        for _ in range(4):
            assert nspi_answers(d) == want_n
        assert t.in_recycles >= 1, t.in_recycles
        d.disconnect()
    except BaseException:
        print(p.log()[-5000:])
        raise
    p.stop()
    log = p.log()
    refused = re.findall(r".*logged on as .*refused.*", log)
    print(refused)
    assert len(refused) == 1 and "bob" in refused[0] and "alice" in refused[0], refused
    assert "a channel logged on as another identity for the virtual connection" in log
    assert ALICE_PW not in log and BOB_PW not in log
