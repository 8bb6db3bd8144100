"""RPC over HTTP channels whose first RTS PDU never comes (MS-RPCH 3.2.3:
a channel belongs to a virtual connection only once its CONN/A1, CONN/B1,
OUT_R1/A3 or IN_R1/A1 names it).  Such a channel is neither an HTTP
connection any more nor part of a virtual connection, so before this test
nothing ended it: a client could hold connections open for ever with a
request head alone.  Now each is closed after mapiproxy:rpc over http
pairing timeout with a log line, with one worker and with two (where the
first PDU also chooses the worker), with the proxy terminating the logon
and passing it through to an RPC over HTTP upstream; a client after them
is served."""
import time

import pytest
from impacket.dcerpc.v5 import nspi
from impacket.http import AUTH_BASIC

import test_rpch as R
from test_lab_auth import nspi_answers
from test_rpch_passthrough import pass_opts


@pytest.fixture(scope="module")
def rpch_env(tmp_path_factory):
    yield from R.rpch_lab_env(str(tmp_path_factory.mktemp("rpch")))


def closed_within(s, seconds):
    """Seconds until the proxy closed s (None if it stayed open)."""
    s.settimeout(seconds)
    t = time.monotonic()
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - t


@pytest.mark.parametrize("mode", ["terminate-1w", "terminate-2w", "pass-through"])
def test_channel_without_its_first_pdu_is_closed(make_proxy, rpch_env, mode):
    opts = {"mapiproxy:rpc over http pairing timeout": "2"}
    if mode == "terminate-2w":
        opts["mapiproxy:workers"] = "2"
    if mode == "pass-through":
        opts.update(pass_opts(rpch_env))
    p = R.start(make_proxy, rpch_env, **opts)
    try:
        port = p.http_port
        silent = [R.channel(port, m, 76) for m in ("RPC_OUT_DATA", "RPC_IN_DATA")]
        # ten bytes of a PDU head that announces 76: the rest never comes
        part = R.channel(port, "RPC_OUT_DATA", 76, b"\x05\x00\x14\x03\x10\x00\x00\x00\x4c\x00")
        waited = [closed_within(s, 15) for s in silent + [part]]
        assert all(w is not None for w in waited), waited
        d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d)
        d.disconnect()
    finally:
        p.stop()
    log = p.log()
    assert log.count("no first RTS PDU within 2000 ms (mapiproxy:rpc over http pairing timeout)") >= 3
