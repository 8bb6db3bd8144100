"""RPC over HTTP with mapiproxy:workers = 2 (doc/internals/workers.md, "The
HTTPS front on every worker"): the IN and OUT channels of a virtual
connection are two HTTP connections, each accepted by either worker's
front; the second to arrive goes to the worker of the first (its first RTS
PDU names the virtual connection).  With logons passed through to an RPC
over HTTP upstream, RPC over HTTP runs on worker 0.

The client is Impacket's ncacn_http transport (code we did not write); the
answers through the proxy are compared with a direct ncacn_ip_tcp client's."""
import os
import re
import signal
import struct
import time

import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpch
from impacket.http import AUTH_BASIC

import test_rpch as R
from rpcutil import NDR20, NSPI, bind_pdu, request_pdu
from test_ops import wait_for
from test_lab_auth import nspi_answers, rfr_answers
from test_rpch_passthrough import pass_opts


@pytest.fixture(scope="module")
def rpch_env(tmp_path_factory):
    yield from R.rpch_lab_env(str(tmp_path_factory.mktemp("rpch")))


@pytest.fixture(scope="module")
def rpch_ref(rpch_env):
    """RFR's and NSPI's answers to a direct ncacn_ip_tcp client."""
    d = R.tcp_dce(rpch_env["ports"]["rfr"], oxabref.MSRPC_UUID_OXABREF)
    ref_rfr = rfr_answers(d)
    d.disconnect()
    d = R.tcp_dce(rpch_env["ports"]["nspi"], nspi.MSRPC_UUID_NSPI)
    ref_nspi = nspi_answers(d)
    d.disconnect()
    return ref_rfr, ref_nspi


def test_rpch_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """Impacket's ncacn_http client: the IN and OUT channels of a virtual
    connection are two HTTP connections, each accepted by either worker;
    the second to arrive is handed to the worker of the first (its first
    RTS PDU names the virtual connection), and the answers equal a direct
    client's."""
    ref_rfr, ref_nspi = rpch_ref
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2"})
    n = 6
    for _ in range(n):
        d = R.rpch_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, AUTH_BASIC)
        assert rfr_answers(d) == ref_rfr
        d.disconnect()
        d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d) == ref_nspi
        d.disconnect()
    p.stop()
    log = p.log()
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker (\d)", log)
    moved = re.findall(r"its virtual connection is on worker (\d): handed over", log)
    adopted = re.findall(r"channel adopted from worker (\d)", log)
    print(f"{len(opened)} channels ({opened.count('1')} on worker 1), {len(moved)} moved")
    assert "1" in opened and "0" in opened
    # a channel pair split by the kernel's hash met on one worker (all 2n
    # pairs on one worker each: a chance of 2**-12)
    assert moved and len(adopted) == len(moved), (moved, adopted)
    assert log.count("virtual connection open") >= 2 * n
    assert "not adopted" not in log and "cannot hand it" not in log


def test_rpch_across_a_reload_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """SIGHUP with a virtual connection open: it goes on in the generation
    it began in, a new one uses the new generation, each worker retires the
    old one when its channels are gone."""
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2"})
    d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == rpch_ref[1]
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()[-3000:]
    assert nspi_answers(d) == rpch_ref[1]
    for _ in range(2):
        d2 = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d2) == rpch_ref[1]
        d2.disconnect()
    d.disconnect()
    assert wait_for(lambda: "reload: configuration 1 retired" in p.log()
                    and "reload: worker 1: configuration 1 retired" in p.log(),
                    timeout=10), p.log()[-3000:]
    p.stop()


def test_rpch_passthrough_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """With logons passed through (upstream connections pinned on worker 0),
    RPC over HTTP is served by worker 0: worker 1 hands it each request it
    reads, at the request boundary."""
    ref_nspi = rpch_ref[1]
    p = R.start(make_proxy, rpch_env, **pass_opts(rpch_env), **{"mapiproxy:workers": "2"})
    # the kernel's SO_REUSEPORT hash picks the worker of each connection: go
    # on (at most 16 sessions, 2 channels each) until one reached worker 1
    # (9 connections all on worker 0 happened once in CI)
    for k in range(16):
        d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d) == ref_nspi
        d.disconnect()
        if k >= 3 and re.search(r"http #\d+ open \S+ \(TLS\) on worker 1", p.log()):
            break
    p.stop()
    log = p.log()
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker (\d)", log)
    moved = len(re.findall(r"RPC over HTTP: handed to worker 0", log))
    print(f"{len(opened)} connections ({opened.count('1')} on worker 1), {moved} moved")
    assert moved > 0 and len(re.findall(r"adopted from worker 1", log)) == moved


def test_rpch_bad_input_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """Channels that break the rules on either worker, while the worker of
    their virtual connection is being chosen: a first PDU whose length is
    out of range, a body that ends before its first PDU, a broken RTS PDU,
    a CONN/B1 naming a cookie no OUT channel has, a first PDU sent a byte at
    a time, an IN channel carrying a bind and more than the window after its
    CONN/B1 (moved with all those bytes when the OUT channel is on the
    other worker).  Each ends with a log line; the next client goes on; the
    proxy ends cleanly (ASan/LSan)."""
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2",
                                         "mapiproxy:rpc over http receive window": "8K"})
    port = p.http_port
    bad_len = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    bad_len[8:10] = struct.pack("<H", 500)
    R.drain(R.channel(port, "RPC_OUT_DATA", 76, bytes(bad_len)))
    # all of its body, shorter than a PDU head: decided on what there is
    R.channel(port, "RPC_OUT_DATA", 8, b"\x05\x00\x14\x03\x10\x00\x00\x00").close()
    a1 = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    a1[20:24] = struct.pack("<L", 99)
    R.drain(R.channel(port, "RPC_OUT_DATA", 76, bytes(a1)))
    lone = R.channel(port, "RPC_IN_DATA", 1 << 30,  # drained last: its pairing timeout
                     rpch.hCONN_B1(os.urandom(16), os.urandom(16), os.urandom(16)))
    slow = R.channel(port, "RPC_OUT_DATA", 76)
    for b in rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536):
        slow.sendall(bytes([b]))
        time.sleep(0.002)
    bind = bind_pdu([(NSPI, [NDR20])])
    reqs = b"".join(request_pdu(2 + k, 1, b"\0" * 4000) for k in range(20))
    for _ in range(4):
        vc, oc, ic = os.urandom(16), os.urandom(16), os.urandom(16)
        o = R.channel(port, "RPC_OUT_DATA", 76, rpch.hCONN_A1(vc, oc, 65536))
        time.sleep(0.05)  # the OUT channel claims the virtual connection first
        i = R.channel(port, "RPC_IN_DATA", 1 << 30, rpch.hCONN_B1(vc, ic, os.urandom(16))
                      + bind + reqs)
        R.drain(i)
        R.drain(o)
    R.drain(slow)
    R.drain(lone)
    d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == rpch_ref[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert "first RTS PDU of the channel too long or too short" in log
    assert "unknown RTS command" in log
    assert "no OUT channel within 2000 ms" in log
    assert log.count("overran the IN channel's receive window") >= 4
    print(len(re.findall(r"its virtual connection is on worker \d: handed over", log)),
          "channels moved")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_rpch_pair_across_a_reload(make_proxy, rpch_env, workers):
    """An OUT channel read before a SIGHUP, its IN channel after: the IN
    channel joins the virtual connection in the generation that has it (on
    the worker that has it), not the newest."""
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": workers})
    vc, oc, ic = os.urandom(16), os.urandom(16), os.urandom(16)
    o = R.channel(p.http_port, "RPC_OUT_DATA", 76, rpch.hCONN_A1(vc, oc, 65536))
    assert wait_for(lambda: "OUT channel from" in p.log(), timeout=5), p.log()[-3000:]
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()[-3000:]
    i = R.channel(p.http_port, "RPC_IN_DATA", 1 << 30, rpch.hCONN_B1(vc, ic, os.urandom(16)))
    assert wait_for(lambda: "virtual connection open" in p.log(), timeout=5), p.log()[-3000:]
    i.close()
    o.close()
    p.stop()
    log = p.log()
    assert "no IN channel within" not in log and "no OUT channel within" not in log
