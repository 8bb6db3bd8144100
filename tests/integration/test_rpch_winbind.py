"""An answer the association queues from an asynchronous completion must
reach an RPC over HTTP client (the client carrier, carrier.h), as a TCP
client gets it (the socket's MP_WRITE).

The case: DCE/RPC NTLM terminated by the proxy and checked through winbind
(mapiproxy:ntlm backend = winbind; no winbindd behind the socket directory,
so the KDC/winbind worker answers "not reachable" at once); the client's
AUTH3 comes in the same TLS record as its first request (Windows clients
pipeline them too).  The AUTH3 parks the association (A_WINBIND) with the
request read but not handled; the worker's answer comes back on the loop,
the logon is refused and the request gets its fault access denied then -
from no client or upstream event, so nothing but the association's zero
timer (assoc.c, kick) hands the fault to the OUT channel.  (Before, it
waited there until the idle timeout.)

The client is Impacket's ncacn_http transport (code we did not write); the
HTTP logon is passed through (the RPC over HTTP front needs a credentials
file when it terminates HTTP logons, which winbind excludes), and nothing
goes upstream: the logon is refused first."""
import threading
import time

import pytest
from impacket.dcerpc.v5 import nspi, rpcrt, transport
from impacket.http import AUTH_BASIC

from test_rpch import ALICE_PW, PRIVACY, rpch_lab_env, start  # noqa: F401
from test_rpch_passthrough import pass_opts

AUTH3 = 16


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-wb")))


def test_fault_after_winbind_answer_reaches_rpch_client(make_proxy, env, tmp_path):
    empty = tmp_path / "no-winbindd"
    empty.mkdir(mode=0o755)
    over = pass_opts(env)
    over.update({"mapiproxy:credentials file": None,
                 "mapiproxy:ntlm backend": "winbind",
                 "mapiproxy:winbind socket dir": str(empty)})
    p = start(make_proxy, env, **over)
    t = transport.DCERPCTransportFactory("ncacn_http:EXLAB01[6004]")
    t.set_rpc_proxy_url(p.url)
    t.set_credentials("alice", ALICE_PW, "LAB")
    t.set_auth_type(AUTH_BASIC)
    d = t.get_dce_rpc()
    d.set_credentials("alice", ALICE_PW, "LAB")
    d.set_auth_level(PRIVACY)
    d.connect()
    held = []
    send = t.send

    def coalescing_send(data, forceWriteAndx=0, forceRecv=0):
        if data[2] == AUTH3:  # goes with the next PDU, in one write
            held.append(data)
            return None
        out = b"".join(held) + data
        held.clear()
        return send(out, forceWriteAndx, forceRecv)
    t.send = coalescing_send
    d.bind(nspi.MSRPC_UUID_NSPI)
    got = []

    def call():
        try:
            nspi.hNspiBind(d)
            got.append("answered")
        except rpcrt.DCERPCException as e:
            got.append(str(e))
        except Exception as e:  # the connection closed under it (the proxy stopped)
            got.append("error: %r" % e)
    t0 = time.monotonic()
    th = threading.Thread(target=call, daemon=True)
    th.start()
    th.join(15)
    took = time.monotonic() - t0
    log = p.log()
    p.stop()
    th.join(10)
    assert not held
    assert got and took < 15, "no answer within 15 s: %r\n%s" % (got, log[-3000:])
    assert "access_denied" in got[0].lower() or "0x5" in got[0], got
    assert "winbindd is not reachable" in log, log[-3000:]
    assert "connecting upstream" not in log
    assert ALICE_PW not in log
