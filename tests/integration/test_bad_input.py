"""Malformed and hostile traffic: each case gets a fault or a closed
connection and a log line, while a second client's session goes on."""
import os
import socket
import struct
import threading
import time

import pytest
from impacket.dcerpc.v5 import nspi, oxabref

from rpcutil import (NDR20, NSPI, RFR, bind_pdu, dce_connect, fault_status, raw_session,
                     read_pdu, read_until_close, request_pdu)
from test_relay import SERVER_DN, TAGS


class Bystander:
    """An NSPI session opened before the bad input and used after it."""

    def __init__(self, proxy):
        self.dce = dce_connect(proxy.host, proxy.rpc_port, nspi.MSRPC_UUID_NSPI)
        self.h = nspi.hNspiBind(self.dce)["contextHandle"]
        self.rows = self.query()

    def query(self):
        return nspi.hNspiQueryRows(self.dce, self.h, Count=50, pPropTags=TAGS).getData()

    def check(self):
        assert len(self.query()) == len(self.rows)


@pytest.fixture
def bystander(proxy):
    b = Bystander(proxy)
    yield b
    b.check()
    nspi.hNspiUnbind(b.dce, b.h)
    b.dce.disconnect()


def fqdn_stub():
    req = oxabref.RfrGetFQDNFromServerDN()
    req["ulFlags"] = 0
    req["cbMailboxServerDN"] = len(SERVER_DN) + 1
    req["szMailboxServerDN"] = SERVER_DN + "\x00"
    return req.getData()


def wait_log(proxy, text, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        if text in proxy.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}:\n{proxy.log()[-3000:]}")


def test_truncated_pdu(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    s.sendall(request_pdu(2, 1, fqdn_stub())[:30])
    s.shutdown(socket.SHUT_WR)
    assert read_until_close(s) == []
    wait_log(proxy, "closed in the middle of a PDU")
    bystander.check()


def test_garbage(proxy, bystander):
    s = socket.create_connection((proxy.host, proxy.rpc_port))
    s.sendall(os.urandom(16) * 8)
    pdus = read_until_close(s)
    assert all(p[0] == 3 for p in pdus)
    wait_log(proxy, "protocol error from client")
    bystander.check()


def test_frag_len_smaller_than_header(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    pdu = bytearray(request_pdu(2, 1, fqdn_stub()))
    struct.pack_into("<H", pdu, 8, 10)
    s.sendall(pdu)
    read_until_close(s)
    wait_log(proxy, "frag_len smaller than the header")
    bystander.check()


def test_oversized_fragment(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    s.sendall(request_pdu(2, 1, b"\0" * 20000))
    pdus = read_until_close(s)
    assert pdus and pdus[0][0] == 3 and fault_status(pdus[0][3]) == 0x1c01000b
    wait_log(proxy, "over the negotiated")
    bystander.check()


def test_unknown_ptype(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    pdu = bytearray(request_pdu(2, 1, fqdn_stub()))
    pdu[2] = 99
    s.sendall(pdu)
    pdus = read_until_close(s)
    assert pdus and pdus[0][0] == 3
    wait_log(proxy, "unexpected PDU type 99")
    bystander.check()


def test_lying_alloc_hint(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    s.sendall(request_pdu(2, 1, fqdn_stub(), alloc_hint=0xFFFFFFF0))
    p = read_pdu(s)
    assert p[0] == 3 and p[2] == 2
    wait_log(proxy, "alloc_hint")
    bystander.check()


def test_call_of_10000_fragments(proxy, bystander):
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    frags = [request_pdu(2, 1, b"\0" * 8, flags=0x01 if i == 0 else (0x02 if i == 9999 else 0))
             for i in range(10000)]
    try:
        s.sendall(b"".join(frags))
    except (BrokenPipeError, ConnectionResetError):
        pass
    pdus = read_until_close(s)
    assert pdus and pdus[0][0] == 3, pdus[:1]
    wait_log(proxy, "exceeds max call size")
    bystander.check()


def test_bind_with_200_contexts(proxy, bystander):
    s = socket.create_connection((proxy.host, proxy.rpc_port))
    s.sendall(bind_pdu([(NSPI, [NDR20])] * 200))
    pdus = read_until_close(s)
    assert pdus and pdus[0][0] == 13  # bind_nak
    assert struct.unpack_from("<H", pdus[0][3], 16)[0] == 2  # local limit exceeded
    wait_log(proxy, "200 presentation contexts refused")
    bystander.check()


class _Capture:
    """Stands in for a dce to get the stub an Impacket helper would send."""

    def request(self, req):
        self.stub = req.getData()
        raise StopIteration


def test_client_that_never_reads(make_proxy, lab):
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"mapiproxy:max buffer": "64K", "mapiproxy:send timeout": "2"})
    b = Bystander(proxy)
    dce = dce_connect(proxy.host, proxy.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    cap = _Capture()
    with pytest.raises(StopIteration):
        nspi.hNspiQueryRows(cap, h, Count=50, pPropTags=TAGS)
    s = dce.get_rpc_transport().get_socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(1.0)
    # The proxy gives up on us once its queue to us is over max buffer and
    # has not moved for 2 s; before that, its kernel send buffer (MBs on
    # loopback) fills with the lab's answers, at the lab's pace: seconds,
    # or tens of them on a loaded machine.  A send that waits 1 s shows the
    # proxy stopped reading us, but may come sooner (the lab, not us, being
    # slow) than the log line: sending goes on, never half a PDU, until the
    # proxy closes us or logs that it gave up.
    t0 = time.time()
    stop = t0 + 90
    sent, made, stalled, pending = 0, 0, False, b""
    while time.time() < stop:
        if not pending:
            pending = request_pdu(1000 + made, 3, cap.stub)
            made += 1
        try:
            pending = pending[s.send(pending):]
            sent += not pending
        except socket.timeout:
            stalled = True  # the proxy stopped reading us: back-pressure
            if "client not reading" in proxy.log():
                break
        except (BrokenPipeError, ConnectionResetError):
            stalled = True  # it closed us
            break
    assert stalled and time.time() < stop, \
        "the proxy never stopped reading a client that does not read"
    print(f"{sent} requests sent in {time.time() - t0:.1f} s")
    b.check()
    rss = int(open(f"/proc/{proxy.proc.pid}/status").read().split("VmRSS:")[1].split()[0])
    wait_log(proxy, "client not reading", timeout=15)
    b.check()
    assert sent > 10
    assert rss < 200 * 1024, f"proxy RSS {rss} KiB"
    nspi.hNspiUnbind(b.dce, b.h)


def fake_upstream(answer_bind=True, close_after=1):
    """A server that accepts one bind, reads close_after requests and dies."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def run():
        c, _ = srv.accept()
        p = read_pdu(c)
        body = struct.pack("<HHIH", 4280, 4280, 0x1234, 4) + b"135\0" + b"\0\0"
        body += struct.pack("<B3xHH", 1, 0, 0) + NDR20
        h = struct.pack("<BBBB4sHHI", 5, 0, 12, 3, b"\x10\0\0\0", 16 + len(body), 0, p[2])
        c.sendall(h + body)
        for _ in range(close_after):
            read_pdu(c)
        c.close()
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def test_upstream_dies_with_calls_in_flight(make_proxy, lab):
    port = fake_upstream(close_after=3)
    proxy = make_proxy(binding_port=port)
    other = make_proxy(upstream_epm_port=lab.epm_port)
    b = Bystander(other)
    s = raw_session(proxy.host, proxy.rpc_port, RFR)
    stub = fqdn_stub()
    s.sendall(request_pdu(5, 1, stub) + request_pdu(6, 1, stub) + request_pdu(7, 1, stub))
    pdus = read_until_close(s)
    assert sorted(p[2] for p in pdus) == [5, 6, 7]
    assert all(p[0] == 3 and fault_status(p[3]) == 0x6be for p in pdus), [(p[0], hex(fault_status(p[3]))) for p in pdus]
    wait_log(proxy, "3 call(s) in flight get a fault")
    assert proxy.alive()
    b.check()
    nspi.hNspiUnbind(b.dce, b.h)


def test_upstream_unreachable(make_proxy):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    proxy = make_proxy(binding_port=port)
    s = socket.create_connection((proxy.host, proxy.rpc_port))
    s.sendall(bind_pdu([(RFR, [NDR20])]))
    pdus = read_until_close(s)
    assert pdus and pdus[0][0] == 13
    wait_log(proxy, "connect failed")
    assert proxy.alive()


def test_upstream_moves_to_new_ports(make_proxy, tmp_path):
    """The upstream restarts with new service ports behind the same endpoint
    mapper: the cached port fails once, is forgotten, and the next bind goes
    to the new port (no wait for the cache to expire)."""
    from conftest import Lab
    from test_relay import rfr_scenario
    lab1 = Lab(tmp_path)
    proxy = make_proxy(upstream_epm_port=lab1.epm_port)
    assert rfr_scenario(proxy.host, proxy.rpc_port)[0]
    epm_port = lab1.epm_port
    lab1.stop()
    lab2 = Lab(tmp_path, epm_port=epm_port)
    try:
        assert lab2.ports["rfr"] != lab1.ports["rfr"]
        try:
            rfr_scenario(proxy.host, proxy.rpc_port)  # may hit the old port once
        except Exception:  # noqa: BLE001 - the stale port's bind_nak
            pass
        assert rfr_scenario(proxy.host, proxy.rpc_port)[0]
    finally:
        lab2.stop()
