"""Threaded connection-oriented DCE/RPC (ncacn_ip_tcp) server for the Exchange lab.

Parses and produces PDUs with Impacket's rpcrt structures.  One thread per
connection; association groups (and the context handles that live in them) are
shared across connections.

References: C706 chapter 12 (CO PDUs), MS-RPCE 2.2.2 / 3.3.1.5 (bind time feature
negotiation, assoc groups).
"""

import socket
import struct
import sys
import threading
import time
import traceback
import itertools

from impacket.uuid import uuidtup_to_bin, bin_to_uuidtup, string_to_bin, bin_to_string
from impacket.dcerpc.v5 import rpcrt
from impacket.dcerpc.v5.rpcrt import (MSRPCHeader, MSRPCRequestHeader, MSRPCRespHeader,
                                      MSRPCBind, MSRPCBindAck, CtxItem, CtxItemResult,
                                      MSRPC_BIND, MSRPC_BINDACK, MSRPC_BINDNAK, MSRPC_ALTERCTX,
                                      MSRPC_ALTERCTX_R, MSRPC_REQUEST, MSRPC_RESPONSE, MSRPC_FAULT,
                                      MSRPC_AUTH3, MSRPC_SHUTDOWN, MSRPC_CO_CANCEL, MSRPC_ORPHANED,
                                      PFC_FIRST_FRAG, PFC_LAST_FRAG, PFC_DID_NOT_EXECUTE,
                                      PFC_OBJECT_UUID)

NDR32 = uuidtup_to_bin(('8a885d04-1ceb-11c9-9fe8-08002b104860', '2.0'))
NDR64 = uuidtup_to_bin(('71710533-beba-4937-8319-b5dbef9ccc36', '1.0'))
# Bind time feature negotiation: 6cb71c2c-9812-4540-XXXX-000000000000 version 1.0,
# where the first two bytes of the last group carry the feature bitmask.
BTFN_PREFIX = string_to_bin('6cb71c2c-9812-4540-0000-000000000000')[:8]

# Fault / status codes
NCA_S_OP_RNG_ERROR = 0x1c010002
NCA_S_UNK_IF = 0x1c010003
NCA_S_FAULT_NDR = 0x000006f7
NCA_S_FAULT_CONTEXT_MISMATCH = 0x1c00001a
RPC_S_CALL_FAILED = 0x000006be
NCA_S_PROTO_ERROR = 0x1c01000b

# p_cont_def_result_t / p_provider_reason_t
RESULT_ACCEPT = 0
RESULT_USER_REJECT = 1
RESULT_PROVIDER_REJECT = 2
RESULT_NEGOTIATE_ACK = 3
REASON_NOT_SPECIFIED = 0
REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2

SERVER_MAX_FRAG = 5840


def log(msg):
    sys.stderr.write('[%s] %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stderr.flush()


class RpcFault(Exception):
    """Raise from an operation handler to answer with a fault PDU."""

    def __init__(self, status, did_not_execute=False):
        Exception.__init__(self, 'fault 0x%08x' % status)
        self.status = status
        self.did_not_execute = did_not_execute


class StubError(Exception):
    """Raise when the stub data cannot be decoded (-> nca_s_fault_ndr)."""


class Interface(object):
    """An RPC interface served by a listener.

    handlers maps opnum -> callable(call, stub_bytes) returning response stub bytes.
    """

    def __init__(self, name, uuid, version, handlers):
        self.name = name
        self.uuid = uuid.lower()
        major, minor = version.split('.')
        self.ver_major = int(major)
        self.ver_minor = int(minor)
        self.handlers = handlers
        self.uuid_bin = string_to_bin(uuid)

    def matches(self, abstract_syntax):
        """abstract_syntax: 20 bytes (uuid + u16 major + u16 minor)."""
        if abstract_syntax[:16] != self.uuid_bin:
            return False
        major, minor = struct.unpack('<HH', abstract_syntax[16:20])
        return major == self.ver_major and minor <= self.ver_minor

    def syntax(self):
        return self.uuid_bin + struct.pack('<HH', self.ver_major, self.ver_minor)


class AssocGroup(object):
    def __init__(self, gid):
        self.id = gid
        self.lock = threading.RLock()
        # Context handles are keyed by their 20 wire bytes; values are arbitrary
        # objects owned by the interface implementation.
        self.handles = {}


class AssocGroupRegistry(object):
    def __init__(self):
        self.lock = threading.Lock()
        self.groups = {}
        self.counter = itertools.count(0x1a2b0001)

    def get_or_create(self, requested):
        with self.lock:
            if requested and requested in self.groups:
                return self.groups[requested]
            gid = next(self.counter)
            while gid in self.groups or gid == 0:
                gid = next(self.counter)
            group = AssocGroup(gid)
            self.groups[gid] = group
            return group


ASSOC_GROUPS = AssocGroupRegistry()


class Call(object):
    """Per-call information handed to operation handlers."""

    def __init__(self, conn, iface, opnum, call_id, ctx_id, object_uuid):
        self.conn = conn
        self.iface = iface
        self.opnum = opnum
        self.call_id = call_id
        self.ctx_id = ctx_id
        self.object_uuid = object_uuid

    @property
    def assoc_group(self):
        return self.conn.assoc_group

    @property
    def peer(self):
        return self.conn.peer


class RpcListener(object):
    """Listens on one TCP port and serves a set of interfaces."""

    def __init__(self, name, host, port, interfaces):
        self.name = name
        self.host = host
        self.interfaces = list(interfaces)
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = None
        self.stopping = False
        self.conns = set()
        self.conns_lock = threading.Lock()

    def start(self):
        self.thread = threading.Thread(target=self._accept_loop, name='listen-%s' % self.name,
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.conns_lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    def _accept_loop(self):
        while not self.stopping:
            try:
                csock, addr = self.sock.accept()
            except OSError:
                break
            csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, csock, addr)
            with self.conns_lock:
                self.conns.add(conn)
            t = threading.Thread(target=conn.run, name='conn-%s-%s' % (self.name, addr[1]),
                                 daemon=True)
            t.start()

    def find_interface(self, abstract_syntax):
        for iface in self.interfaces:
            if iface.matches(abstract_syntax):
                return iface
        return None


class Connection(object):
    def __init__(self, listener, sock, addr):
        self.listener = listener
        self.sock = sock
        self.peer = '%s:%d' % (addr[0], addr[1])
        self.assoc_group = None
        self.contexts = {}          # ctx_id -> Interface
        self.max_xmit = SERVER_MAX_FRAG
        self.max_recv = SERVER_MAX_FRAG
        self.pending = {}           # call_id -> [MSRPCRequestHeader of first frag, stub bytes]
        self.closed = False

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    # -- transport ---------------------------------------------------------
    def _recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _recv_pdu(self):
        hdr = self._recv_exact(16)
        if hdr is None:
            return None
        if hdr[0] != 5:
            raise ConnectionError('not a DCE/RPC v5 PDU (version %d)' % hdr[0])
        if hdr[4] & 0xf0 != 0x10:
            raise ConnectionError('only little-endian data representation supported')
        frag_len = struct.unpack('<H', hdr[8:10])[0]
        if frag_len < 16:
            raise ConnectionError('bad frag_len %d' % frag_len)
        rest = self._recv_exact(frag_len - 16)
        if rest is None:
            return None
        return hdr + rest

    def _send(self, data):
        self.sock.sendall(data)

    # -- main loop ---------------------------------------------------------
    def run(self):
        log('%s: connection from %s' % (self.listener.name, self.peer))
        try:
            while not self.closed:
                pdu = self._recv_pdu()
                if pdu is None:
                    break
                self._dispatch(pdu)
        except (ConnectionError, OSError) as e:
            if not self.closed:
                log('%s: connection %s error: %s' % (self.listener.name, self.peer, e))
        except Exception:
            log('%s: connection %s crashed:\n%s' % (self.listener.name, self.peer,
                                                    traceback.format_exc()))
        finally:
            log('%s: connection %s closed' % (self.listener.name, self.peer))
            self.close()
            with self.listener.conns_lock:
                self.listener.conns.discard(self)

    def _dispatch(self, pdu):
        ptype = pdu[2]
        if ptype == MSRPC_BIND:
            self._on_bind(pdu, alter=False)
        elif ptype == MSRPC_ALTERCTX:
            self._on_bind(pdu, alter=True)
        elif ptype == MSRPC_REQUEST:
            self._on_request(pdu)
        elif ptype in (MSRPC_SHUTDOWN, MSRPC_AUTH3):
            log('%s: ignoring PDU type %d' % (self.listener.name, ptype))
        elif ptype in (MSRPC_CO_CANCEL, MSRPC_ORPHANED):
            call_id = struct.unpack('<L', pdu[12:16])[0]
            log('%s: %s for call %d' % (self.listener.name,
                                        'co_cancel' if ptype == MSRPC_CO_CANCEL else 'orphaned',
                                        call_id))
            if ptype == MSRPC_ORPHANED:
                self.pending.pop(call_id, None)
        else:
            log('%s: unexpected PDU type %d, ignoring' % (self.listener.name, ptype))

    # -- bind / alter_context ------------------------------------------------
    def _parse_contexts(self, body):
        """body: the p_cont_list_t bytes. Yields (ctx_id, abstract, [transfer...])."""
        n = body[0]
        off = 4
        out = []
        for _ in range(n):
            item = CtxItem(body[off:off + 44])
            ntrans = item['TransItems']
            transfers = [item['TransferSyntax']]
            extra = body[off + 44:off + 24 + 20 * ntrans]
            for i in range(max(0, ntrans - 1)):
                transfers.append(extra[20 * i:20 * i + 20])
            if ntrans == 0:
                transfers = []
            out.append((item['ContextID'], item['AbstractSyntax'], transfers))
            off += 24 + 20 * ntrans
        return out

    def _negotiate(self, ctx_id, abstract, transfers):
        """Returns a CtxItemResult for one presentation context."""
        res = CtxItemResult()
        iface = self.listener.find_interface(abstract)
        btfn = [t for t in transfers if t[:8] == BTFN_PREFIX]
        if iface is None:
            if btfn and len(transfers) == 1:
                # A lone feature negotiation element for an unknown interface.
                pass
            res['Result'] = RESULT_PROVIDER_REJECT
            res['Reason'] = REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED
            res['TransferSyntax'] = b'\x00' * 20
            return res, None
        if NDR32 in transfers:
            res['Result'] = RESULT_ACCEPT
            res['Reason'] = 0
            res['TransferSyntax'] = NDR32
            return res, iface
        if btfn:
            bitmask = struct.unpack('<H', btfn[0][8:10])[0]
            # We support "keep connection on orphan" (0x2): orphaned PDUs are ignored.
            res['Result'] = RESULT_NEGOTIATE_ACK
            res['Reason'] = bitmask & 0x0002
            res['TransferSyntax'] = b'\x00' * 20
            return res, None
        res['Result'] = RESULT_PROVIDER_REJECT
        res['Reason'] = REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED
        res['TransferSyntax'] = b'\x00' * 20
        return res, None

    def _on_bind(self, pdu, alter):
        hdr = MSRPCHeader(pdu)
        call_id = hdr['call_id']
        body = pdu[16:hdr['frag_len'] - (hdr['auth_len'] + 8 if hdr['auth_len'] else 0)]
        bind = MSRPCBind(body)
        if not alter:
            self.max_xmit = min(bind['max_rfrag'], SERVER_MAX_FRAG)
            self.max_recv = min(bind['max_tfrag'], SERVER_MAX_FRAG)
            if self.max_xmit < 1432:
                self.max_xmit = 1432 if bind['max_rfrag'] >= 1432 else max(bind['max_rfrag'], 128)
            self.assoc_group = ASSOC_GROUPS.get_or_create(bind['assoc_group'])
        contexts = self._parse_contexts(body[8:])
        results = []
        for ctx_id, abstract, transfers in contexts:
            res, iface = self._negotiate(ctx_id, abstract, transfers)
            if iface is not None:
                self.contexts[ctx_id] = iface
            results.append(res)
            try:
                aname = '%s v%s' % bin_to_uuidtup(abstract)
            except Exception:
                aname = abstract.hex()
            log('%s: %s ctx %d %s -> result %d reason %d' % (
                self.listener.name, 'alter_context' if alter else 'bind', ctx_id,
                aname, res['Result'], res['Reason']))
        ctx_bytes = b''.join(r.getData() for r in results)
        if not alter:
            ack = MSRPCBindAck()
            ack['type'] = MSRPC_BINDACK
            ack['flags'] = PFC_FIRST_FRAG | PFC_LAST_FRAG
            ack['call_id'] = call_id
            ack['max_tfrag'] = self.max_xmit
            ack['max_rfrag'] = self.max_recv
            ack['assoc_group'] = self.assoc_group.id
            secaddr = str(self.listener.port).encode('ascii')
            ack['SecondaryAddrLen'] = len(secaddr) + 1
            ack['SecondaryAddr'] = secaddr
            ack['Pad'] = b'\x00' * ((4 - ((len(secaddr) + 1 + MSRPCBindAck._SIZE) % 4)) % 4)
            ack['ctx_num'] = len(results)
            ack['ctx_items'] = ctx_bytes
            ack['frag_len'] = 0
            data = ack.getData()
            data = data[:8] + struct.pack('<H', len(data)) + data[10:]
            self._send(data)
        else:
            # alter_context_resp: same layout as bind_ack with an empty sec_addr.
            body = struct.pack('<HHLH', self.max_xmit, self.max_recv,
                               self.assoc_group.id if self.assoc_group else 0, 0)
            body += b'\x00' * 2   # pad to 4 (16 + 10 = 26 -> 28)
            body += struct.pack('<BBH', len(results), 0, 0) + ctx_bytes
            h = MSRPCHeader()
            h['type'] = MSRPC_ALTERCTX_R
            h['flags'] = PFC_FIRST_FRAG | PFC_LAST_FRAG
            h['call_id'] = call_id
            h['pduData'] = body
            self._send(h.get_packet())

    # -- requests ----------------------------------------------------------
    def _on_request(self, pdu):
        req = MSRPCRequestHeader(pdu)
        call_id = req['call_id']
        flags = req['flags']
        stub = req['pduData']
        if req['auth_len']:
            # No authentication is negotiated by the lab; strip any verifier.
            pad_len = pdu[req['frag_len'] - req['auth_len'] - 6]
            stub = stub[:len(stub) - pad_len] if pad_len else stub
        if flags & PFC_FIRST_FRAG:
            self.pending[call_id] = [req, bytearray(stub)]
        else:
            if call_id not in self.pending:
                log('%s: continuation fragment for unknown call %d ignored' %
                    (self.listener.name, call_id))
                return
            self.pending[call_id][1] += stub
        if not flags & PFC_LAST_FRAG:
            return
        first, stub = self.pending.pop(call_id)
        self._execute(first, bytes(stub))

    def _execute(self, req, stub):
        call_id = req['call_id']
        ctx_id = req['ctx_id']
        opnum = req['op_num']
        iface = self.contexts.get(ctx_id)
        if iface is None:
            log('%s: call %d on unknown context id %d -> nca_unk_if' %
                (self.listener.name, call_id, ctx_id))
            self._send_fault(call_id, ctx_id, NCA_S_UNK_IF, did_not_execute=True)
            return
        handler = iface.handlers.get(opnum)
        if handler is None:
            log('%s: %s opnum %d not supported -> nca_op_rng_error' %
                (self.listener.name, iface.name, opnum))
            self._send_fault(call_id, ctx_id, NCA_S_OP_RNG_ERROR, did_not_execute=True)
            return
        obj = req['uuid'] if req['flags'] & PFC_OBJECT_UUID else None
        call = Call(self, iface, opnum, call_id, ctx_id, obj)
        try:
            resp = handler(call, stub)
        except RpcFault as f:
            log('%s: %s opnum %d -> fault 0x%08x' % (self.listener.name, iface.name, opnum,
                                                      f.status))
            self._send_fault(call_id, ctx_id, f.status, f.did_not_execute)
            return
        except StubError as e:
            log('%s: %s opnum %d: undecodable stub (%s) -> nca_s_fault_ndr' %
                (self.listener.name, iface.name, opnum, e))
            self._send_fault(call_id, ctx_id, NCA_S_FAULT_NDR)
            return
        except Exception:
            log('%s: %s opnum %d handler error:\n%s' % (self.listener.name, iface.name, opnum,
                                                       traceback.format_exc()))
            self._send_fault(call_id, ctx_id, RPC_S_CALL_FAILED)
            return
        self._send_response(call_id, ctx_id, resp)

    def _send_response(self, call_id, ctx_id, stub):
        max_stub = (self.max_xmit - 24) & ~7
        offset = 0
        total = len(stub)
        first = True
        while True:
            chunk = stub[offset:offset + max_stub]
            last = offset + len(chunk) >= total
            r = MSRPCRespHeader()
            r['type'] = MSRPC_RESPONSE
            r['flags'] = (PFC_FIRST_FRAG if first else 0) | (PFC_LAST_FRAG if last else 0)
            r['call_id'] = call_id
            r['ctx_id'] = ctx_id
            r['alloc_hint'] = total - offset
            r['pduData'] = chunk
            self._send(r.get_packet())
            offset += len(chunk)
            first = False
            if last:
                break

    def _send_fault(self, call_id, ctx_id, status, did_not_execute=False):
        r = MSRPCRespHeader()
        r['type'] = MSRPC_FAULT
        r['flags'] = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_DID_NOT_EXECUTE if did_not_execute else 0)
        r['call_id'] = call_id
        r['ctx_id'] = ctx_id
        r['alloc_hint'] = 8
        r['pduData'] = struct.pack('<LL', status, 0)
        self._send(r.get_packet())


def new_context_handle():
    """A fresh 20-byte NDR context handle (attributes 0 + random uuid)."""
    import os
    return b'\x00\x00\x00\x00' + os.urandom(16)
