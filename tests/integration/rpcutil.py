"""Small helpers over Impacket for the integration tests: connect, bind,
raw calls, and hand-made PDUs for the bad-input tests."""
import socket
import struct

from impacket.dcerpc.v5 import transport
from impacket.dcerpc.v5.rpcrt import (MSRPCBind, MSRPCHeader, CtxItem, MSRPC_BIND,
                                      MSRPC_REQUEST, MSRPCRequestHeader)
from impacket.uuid import uuidtup_to_bin

NDR20 = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
NDR64 = uuidtup_to_bin(("71710533-beba-4937-8319-b5dbef9ccc36", "1.0"))
RFR = uuidtup_to_bin(("1544f5e0-613c-11d1-93df-00c04fd7bd09", "1.0"))
NSPI = uuidtup_to_bin(("f5cc5a18-4264-101a-8c59-08002b2f8426", "56.0"))
EMSMDB = uuidtup_to_bin(("a4f1db00-ca47-1067-b31f-00dd010662da", "0.81"))
EPM = uuidtup_to_bin(("e1af8308-5d1f-11c9-91a4-08002b14a0fa", "3.0"))


def dce_connect(host, port, iface, user=None, password="", domain="", level=None,
                max_frag=None):
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{host}[{port}]")
    if user is not None:
        t.set_credentials(user, password, domain)
    dce = t.get_dce_rpc()
    if level is not None:
        dce.set_auth_level(level)
    if max_frag:
        dce.set_max_fragment_size(max_frag)
    dce.connect()
    dce.bind(iface)
    return dce


def _recv_or_eof(self, forceRecv=0, count=0):
    """TCPTransport.recv that raises at end of stream.  Impacket's own
    (impacket/dcerpc/v5/transport.py, TCPTransport.recv) loops on
    `buffer += sock.recv(count - len(buffer))` until it has count bytes, and
    at EOF recv returns b'' at once, every time: a peer that closes the
    connection instead of answering made it spin forever, where the socket's
    timeout (set_connect_timeout) never fires.  Same reads otherwise."""
    sock = self.get_socket()
    want = count or 8192
    buf = b""
    while True:
        chunk = sock.recv(want - len(buf))
        if not chunk:
            raise ConnectionResetError("the peer closed the connection (%d of %s bytes read)"
                                       % (len(buf), count or "some"))
        buf += chunk
        if not count or len(buf) >= count:
            return buf


def eof_raises(monkeypatch):
    """For the rest of the test, Impacket's ncacn_ip_tcp transport raises
    ConnectionResetError at EOF instead of spinning (_recv_or_eof).  With its
    socket timeout, every read then ends: an answer, a timeout, or this."""
    monkeypatch.setattr(transport.TCPTransport, "recv", _recv_or_eof)


def raw_call(dce, req):
    """Sends an Impacket NDRCALL and returns the response stub bytes."""
    dce.call(req.opnum, req)
    return dce.recv()


def bind_pdu(contexts, call_id=1, assoc_group=0, max_frag=4280):
    """contexts: list of (abstract_uuid_bin, [transfer_bin, ...])."""
    b = MSRPCBind()
    b["max_tfrag"] = max_frag
    b["max_rfrag"] = max_frag
    b["assoc_group"] = assoc_group
    for i, (abstract, transfers) in enumerate(contexts):
        for ts in transfers:
            item = CtxItem()
            item["ContextID"] = i
            item["TransItems"] = 1
            item["AbstractSyntax"] = abstract
            item["TransferSyntax"] = ts
            b.addCtxItem(item)
    h = MSRPCHeader()
    h["type"] = MSRPC_BIND
    h["flags"] = 0x03
    h["call_id"] = call_id
    h["pduData"] = b.getData()
    return h.get_packet()


def request_pdu(call_id, opnum, stub, ctx_id=0, flags=0x03, alloc_hint=None):
    r = MSRPCRequestHeader()
    r["type"] = MSRPC_REQUEST
    r["flags"] = flags
    r["call_id"] = call_id
    r["ctx_id"] = ctx_id
    r["op_num"] = opnum
    r["alloc_hint"] = len(stub) if alloc_hint is None else alloc_hint
    r["pduData"] = stub
    return r.get_packet()


def read_pdu(sock, timeout=10):
    """Reads one PDU; returns (ptype, flags, call_id, bytes) or None on close."""
    sock.settimeout(timeout)
    hdr = b""
    while len(hdr) < 16:
        c = sock.recv(16 - len(hdr))
        if not c:
            return None
        hdr += c
    frag_len = struct.unpack_from("<H", hdr, 8)[0]
    body = b""
    while len(body) < frag_len - 16:
        c = sock.recv(frag_len - 16 - len(body))
        if not c:
            return None
        body += c
    return hdr[2], hdr[3], struct.unpack_from("<I", hdr, 12)[0], hdr + body


def read_until_close(sock, timeout=10):
    """Reads PDUs until the peer closes; returns the list."""
    out = []
    while True:
        try:
            p = read_pdu(sock, timeout)
        except (ConnectionResetError, socket.timeout):
            return out
        if p is None:
            return out
        out.append(p)


def fault_status(pdu):
    return struct.unpack_from("<I", pdu, 24)[0]


def raw_session(host, port, iface, call_id=1):
    """A raw socket bound to iface (context 0). Returns the socket."""
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(bind_pdu([(iface, [NDR20])], call_id=call_id))
    p = read_pdu(s)
    assert p and p[0] == 12, f"bind answered with {p and p[0]}"
    return s
