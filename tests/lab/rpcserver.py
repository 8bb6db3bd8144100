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
import labauth
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
NCA_S_FAULT_ACCESS_DENIED = 0x00000005
NCA_S_FAULT_SEC_PKG_ERROR = 0x00000721
RPC_S_UNKNOWN_AUTHN_SERVICE = 0x000006d3

# Authentication (see AuthConfig)
RPC_C_AUTHN_GSS_NEGOTIATE = 9
RPC_C_AUTHN_WINNT = 10
RPC_C_AUTHN_GSS_KERBEROS = 16
LEVEL_NONE, LEVEL_CONNECT, LEVEL_CALL, LEVEL_PKT, LEVEL_INTEGRITY, LEVEL_PRIVACY = 1, 2, 3, 4, 5, 6
PFC_SUPPORT_HEADER_SIGN = 0x04
BIND_NAK_REASON_NOT_SPECIFIED = 0
BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED = 8
AUTH_PAD_ALIGN = 16
NTLM_VERIFIER_LEN = 16

# p_cont_def_result_t / p_provider_reason_t
RESULT_ACCEPT = 0
RESULT_USER_REJECT = 1
RESULT_PROVIDER_REJECT = 2
RESULT_NEGOTIATE_ACK = 3
REASON_NOT_SPECIFIED = 0
REASON_ABSTRACT_SYNTAX_NOT_SUPPORTED = 1
REASON_TRANSFER_SYNTAXES_NOT_SUPPORTED = 2

SERVER_MAX_FRAG = 5840


class AuthConfig(object):
    """Process-wide authentication settings (exchange_lab.py --users / --require-auth).

    required_level: 1 (none: unauthenticated calls allowed, the default),
    2 (connect), 5 (integrity) or 6 (privacy).  userdb: labauth.UserDb or None
    (then every NTLM logon fails as "unknown user").
    """

    def __init__(self):
        self.required_level = LEVEL_NONE
        self.userdb = None
        self.server_name = 'EXLAB01'
        self.domain = labauth.DEFAULT_DOMAIN
        self.dns_domain = 'lab.example'
        self.keytab = None      # --keytab: Kerberos (auth type 16) with these keys


AUTH = AuthConfig()


def level_name(level):
    return labauth.AUTH_LEVEL_NAMES.get(level, str(level))


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

    @property
    def auth_identity(self):
        """'DOMAIN\\user' of the NTLM logon on this connection, or None."""
        a = self.conn.auth
        return a.identity if a is not None and a.complete else None

    @property
    def auth_level(self):
        return self.conn.effective_level()


class RpcListener(object):
    """Listens on one TCP port and serves a set of interfaces."""

    def __init__(self, name, host, port, interfaces, require_auth=True):
        self.name = name
        # False: calls are accepted below AUTH.required_level (the endpoint
        # mapper, as on Windows); NTLM still works when the client offers it.
        self.require_auth = require_auth
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
        # Authentication: one NTLM security context per connection.
        self.auth = None            # labauth.NtlmServerContext once an NTLM bind was seen
        self.auth_level = LEVEL_NONE        # protection applied (call/packet -> integrity)
        self.auth_level_wire = LEVEL_NONE   # level as the client asked for it
        self.auth_ctx_id = 0
        self.auth_type_wire = RPC_C_AUTHN_WINNT
        self.auth_failed = None     # why the AUTHENTICATE was refused
        self.header_sign = False
        self.send_lock = threading.Lock()

    def effective_level(self):
        if self.auth is not None and self.auth.complete:
            return self.auth_level
        return LEVEL_NONE

    def auth_desc(self):
        if self.auth is not None and self.auth.complete:
            return '%s user=%s level=%s%s' % (self.auth.auth_name, self.auth.identity,
                                                level_name(self.auth_level_wire), self.auth.via)
        return 'none'

    def _protected(self):
        return (self.auth is not None and self.auth.complete and
                self.auth_level >= LEVEL_INTEGRITY)

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

    def _send_pdu(self, pdu, stub_off):
        """Sends a response / fault PDU, signed or sealed when the association is
        at integrity / privacy (stub padded to 16, sec_trailer, 16-byte NTLM
        verifier over the whole PDU)."""
        with self.send_lock:
            if self._protected():
                pdu = self._protect(pdu, stub_off)
            self._send(pdu)

    def _protect(self, pdu, stub_off):
        stub_len = len(pdu) - stub_off
        pad = (AUTH_PAD_ALIGN - stub_len % AUTH_PAD_ALIGN) % AUTH_PAD_ALIGN
        nov = bytearray(pdu + b'\x00' * pad +
                        struct.pack('<BBBBL', self.auth_type_wire, self.auth_level_wire, pad, 0,
                                    self.auth_ctx_id))
        vlen = self._verifier_len(stub_len + pad)
        struct.pack_into('<HH', nov, 8, len(nov) + vlen, vlen)
        nov = bytes(nov)
        if self.auth_level == LEVEL_PRIVACY:
            nov, sig = self.auth.seal_outgoing(nov, stub_off, stub_off + stub_len + pad)
        else:
            sig = self.auth.sign_outgoing(nov)
        return nov + sig

    def _verifier_len(self, body_len):
        f = getattr(self.auth, 'verifier_len', None)
        return f(self.auth_level, body_len) if f else NTLM_VERIFIER_LEN

    @staticmethod
    def _split_auth(pdu):
        """-> (end of the body without auth padding, (auth_type, level, pad, ctx_id) or
        None, auth_value)."""
        frag_len, auth_len = struct.unpack('<HH', pdu[8:12])
        if not auth_len:
            return frag_len, None, b''
        t = frag_len - auth_len - 8
        if t < 16:
            raise ConnectionError('auth_len %d does not fit in frag_len %d' % (auth_len, frag_len))
        auth_type, level, pad, _, ctx = struct.unpack('<BBBBL', pdu[t:t + 8])
        return max(16, t - pad), (auth_type, level, pad, ctx), pdu[t + 8:frag_len]

    @staticmethod
    def _append_auth(pdu, auth_type, level, ctx_id, value):
        pad = (4 - len(pdu) % 4) % 4
        out = bytearray(pdu + b'\x00' * pad +
                        struct.pack('<BBBBL', auth_type, level, pad, 0, ctx_id) + value)
        struct.pack_into('<HH', out, 8, len(out), len(value))
        return bytes(out)

    def _send_bind_nak(self, call_id, reason):
        h = MSRPCHeader()
        h['type'] = MSRPC_BINDNAK
        h['flags'] = PFC_FIRST_FRAG | PFC_LAST_FRAG
        h['call_id'] = call_id
        # provider_reject_reason, p_rt_versions_supported: one version, 5.0
        h['pduData'] = struct.pack('<HBBB', reason, 1, 5, 0) + b'\x00' * 3
        self._send(h.get_packet())

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
        elif ptype == MSRPC_AUTH3:
            self._on_auth3(pdu)
        elif ptype == MSRPC_SHUTDOWN:
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
        body_end, trailer, token = self._split_auth(pdu)
        body = pdu[16:body_end]
        auth_reply = None
        if trailer is not None:
            ok, auth_reply = self._bind_auth(call_id, alter, trailer, token)
            if not ok:
                return
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
            if auth_reply is not None and hdr['flags'] & PFC_SUPPORT_HEADER_SIGN:
                ack['flags'] |= PFC_SUPPORT_HEADER_SIGN
                self.header_sign = True
                self.auth.header_sign = True
            data = ack.getData()
            data = data[:8] + struct.pack('<H', len(data)) + data[10:]
            if auth_reply is not None:
                data = self._append_auth(data, self.auth_type_wire, self.auth_level_wire,
                                         self.auth_ctx_id, auth_reply)
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
            data = h.get_packet()
            if auth_reply is not None:
                data = self._append_auth(data, self.auth_type_wire, self.auth_level_wire,
                                         self.auth_ctx_id, auth_reply)
            self._send(data)

    # -- authentication ------------------------------------------------------
    def _bind_auth(self, call_id, alter, trailer, token):
        """Handles the sec_trailer of a bind / alter_context.  Returns (False, None)
        when the PDU has been answered (bind_nak / fault) and must not be
        processed, else (True, auth value for the ack or None)."""
        auth_type, level, _, ctx_id = trailer
        name = self.listener.name

        def refuse(reason, nak_reason, fault):
            log('%s: auth: %s refused: %s' % (name, 'alter_context' if alter else 'bind', reason))
            if alter:
                self._send_fault(call_id, 0, fault, did_not_execute=True, protect=False)
            else:
                self._send_bind_nak(call_id, nak_reason)
            return False, None

        kerberos = auth_type == RPC_C_AUTHN_GSS_KERBEROS and AUTH.keytab
        if auth_type not in (RPC_C_AUTHN_WINNT, RPC_C_AUTHN_GSS_NEGOTIATE) and not kerberos:
            return refuse('auth type %d not supported (only NTLM 10 and SPNEGO/NTLM 9%s)'
                          % (auth_type, ', Kerberos 16' if AUTH.keytab else ''),
                          BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED, RPC_S_UNKNOWN_AUTHN_SERVICE)
        if not LEVEL_CONNECT <= level <= LEVEL_PRIVACY:
            return refuse('auth level %d' % level, BIND_NAK_REASON_NOT_SPECIFIED,
                          NCA_S_PROTO_ERROR)
        if self.auth is not None and (self.auth.complete or self.auth_failed):
            # An established (or failed) context: a later alter_context may repeat
            # the trailer; there is nothing more to negotiate.
            if ctx_id != self.auth_ctx_id or level != self.auth_level_wire:
                return refuse('second security context (ctx %d level %d) on one connection'
                              % (ctx_id, level), BIND_NAK_REASON_NOT_SPECIFIED,
                              NCA_S_FAULT_ACCESS_DENIED)
            return True, None
        if self.auth is not None and auth_type in (RPC_C_AUTHN_GSS_NEGOTIATE,
                                                   RPC_C_AUTHN_GSS_KERBEROS) and \
                self.auth_type_wire == auth_type and ctx_id == self.auth_ctx_id:
            # a further SPNEGO leg (alter_context)
            try:
                reply = self.auth.step(token)
            except Exception as e:
                self.auth_failed = str(e)
                log('%s: auth: %s logon refused: %s' % (name, self.auth.auth_name,
                                                        self.auth_failed))
                return refuse(self.auth_failed, BIND_NAK_REASON_NOT_SPECIFIED,
                              NCA_S_FAULT_ACCESS_DENIED)
            if self.auth.complete:
                log('%s: auth: %s logon ok user=%s level=%s%s%s' % (
                    name, self.auth.auth_name, self.auth.identity,
                    level_name(self.auth_level_wire), self.auth.via,
                    ' (mechListMIC exchanged)' if self.auth.mic_exchanged else ''))
            return True, reply
        ctx = labauth.NtlmServerContext(AUTH.userdb, AUTH.server_name, AUTH.domain,
                                        AUTH.dns_domain)
        try:
            if kerberos:
                ctx = labauth.KerberosServerContext(AUTH.keytab)
                reply = ctx.init(token)
            elif auth_type == RPC_C_AUTHN_GSS_NEGOTIATE:
                ctx = labauth.SpnegoServerContext(ctx)
                reply = ctx.init(token)
            else:
                reply = ctx.negotiate(token)
        except Exception as e:
            no_ntlm = 'without NTLM' in str(e)      # e.g. SPNEGO offering Kerberos only
            return refuse('bad %s first token (%s)' % ({9: 'SPNEGO', 16: 'Kerberos'}.get(
                auth_type, 'NTLM'), e),
                          BIND_NAK_AUTH_TYPE_NOT_RECOGNIZED if no_ntlm
                          else BIND_NAK_REASON_NOT_SPECIFIED,
                          RPC_S_UNKNOWN_AUTHN_SERVICE if no_ntlm else NCA_S_FAULT_ACCESS_DENIED)
        self.auth = ctx
        self.auth_type_wire = auth_type
        self.auth_ctx_id = ctx_id
        self.auth_level_wire = level
        self.auth_level = LEVEL_INTEGRITY if level in (LEVEL_CALL, LEVEL_PKT) else level
        log('%s: auth: %s level=%s ctx %d -> %s' % (
            name, 'Kerberos AP-REQ' if kerberos else
            ('SPNEGO/' if auth_type == 9 else '') + 'NTLM NEGOTIATE', level_name(level), ctx_id,
            'AP-REP' if kerberos else 'CHALLENGE'))
        return True, reply

    def _on_auth3(self, pdu):
        name = self.listener.name
        _, trailer, token = self._split_auth(pdu)
        if trailer is None or self.auth is None or self.auth.complete or self.auth_failed:
            log('%s: auth: unexpected auth3 ignored' % name)
            return
        if trailer[0] != self.auth_type_wire or trailer[3] != self.auth_ctx_id:
            self.auth_failed = 'auth3 for another security context'
        else:
            try:
                if self.auth_type_wire in (RPC_C_AUTHN_GSS_NEGOTIATE, RPC_C_AUTHN_GSS_KERBEROS):
                    self.auth.step(token)       # no reply possible in an auth3
                    ident = self.auth.identity
                else:
                    ident = self.auth.authenticate(token)
                log('%s: auth: %s logon ok user=%s level=%s%s' % (
                    name, self.auth.auth_name, ident, level_name(self.auth_level_wire),
                    self.auth.via if self.auth_type_wire == RPC_C_AUTHN_GSS_KERBEROS else ''))
                return
            except labauth.AuthError as e:
                self.auth_failed = str(e)
            except Exception as e:
                self.auth_failed = 'malformed AUTHENTICATE (%s)' % e
        log('%s: auth: %s logon refused: %s' % (name, self.auth.auth_name, self.auth_failed))

    def _unprotect_request(self, pdu, req):
        """Verifies (and at privacy decrypts) one request fragment of a signed /
        sealed association.  Returns the stub, or None after a security error
        (fault nca_s_fault_sec_pkg_error sent, connection closed)."""
        frag_len, auth_len = req['frag_len'], req['auth_len']
        hdr_len = 24 + (16 if req['flags'] & PFC_OBJECT_UUID else 0)
        err = None
        want = self._verifier_len(0) if self.auth_type_wire != RPC_C_AUTHN_GSS_KERBEROS \
            else auth_len
        if auth_len != want or auth_len < 16:
            err = 'request without a %d-byte verifier (auth_len %d)' % (want, auth_len)
        else:
            t = frag_len - auth_len - 8
            auth_type, level, pad, _, ctx = struct.unpack('<BBBBL', pdu[t:t + 8])
            if t < hdr_len or t - pad < hdr_len:
                err = 'bad auth padding'
            elif auth_type != self.auth_type_wire or level != self.auth_level_wire or \
                    ctx != self.auth_ctx_id:
                err = 'verifier for type %d level %d ctx %d' % (auth_type, level, ctx)
            else:
                nov, sig = pdu[:frag_len - auth_len], pdu[frag_len - auth_len:frag_len]
                if self.auth_level == LEVEL_PRIVACY:
                    plain, ok = self.auth.unseal_incoming(nov, hdr_len, t, sig)
                else:
                    plain, ok = nov, self.auth.verify_incoming(nov, sig)
                if ok:
                    return plain[hdr_len:t - pad]
                err = 'bad signature (seq %d)' % (self.auth.recv_seq - 1)
        log('%s: auth: call %d: %s -> fault nca_s_fault_sec_pkg_error, closing' % (
            self.listener.name, req['call_id'], err))
        self._send_fault(req['call_id'], req['ctx_id'], NCA_S_FAULT_SEC_PKG_ERROR,
                         did_not_execute=True, protect=False)
        self.close()
        return None

    # -- requests ----------------------------------------------------------
    def _on_request(self, pdu):
        req = MSRPCRequestHeader(pdu)
        call_id = req['call_id']
        flags = req['flags']
        stub = req['pduData']
        if self.auth is not None and not self.auth.complete:
            # NTLM bind without (successful) AUTH3: every call is refused.
            self.pending.pop(call_id, None)
            if flags & PFC_LAST_FRAG:
                log('%s: auth: call %d refused (%s) -> fault nca_s_fault_access_denied' % (
                    self.listener.name, call_id, self.auth_failed or 'no AUTH3 received'))
                self._send_fault(call_id, req['ctx_id'], NCA_S_FAULT_ACCESS_DENIED,
                                 did_not_execute=True, protect=False)
            return
        if self._protected():
            stub = self._unprotect_request(pdu, req)
            if stub is None:
                return
        elif req['auth_len']:
            # No per-message protection (none / connect): strip any verifier.
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
        level = self.effective_level()
        if level < AUTH.required_level and self.listener.require_auth:
            log('%s: call %d opnum %d auth: %s: level %s below required %s -> '
                'fault nca_s_fault_access_denied' % (
                    self.listener.name, call_id, opnum, self.auth_desc(), level_name(level),
                    level_name(AUTH.required_level)))
            self._send_fault(call_id, ctx_id, NCA_S_FAULT_ACCESS_DENIED, did_not_execute=True)
            return
        iface = self.contexts.get(ctx_id)
        log('%s: call %d ctx %d opnum %d auth: %s' % (self.listener.name, call_id, ctx_id, opnum,
                                                     self.auth_desc()))
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
        if self._protected():
            max_stub = (self.max_xmit - 24 - 8 - 15 - self._verifier_len(self.max_xmit)) & \
                ~(AUTH_PAD_ALIGN - 1)
        else:
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
            self._send_pdu(r.get_packet(), 24)
            offset += len(chunk)
            first = False
            if last:
                break

    def _send_fault(self, call_id, ctx_id, status, did_not_execute=False, protect=True):
        r = MSRPCRespHeader()
        r['type'] = MSRPC_FAULT
        r['flags'] = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_DID_NOT_EXECUTE if did_not_execute else 0)
        r['call_id'] = call_id
        r['ctx_id'] = ctx_id
        r['alloc_hint'] = 8
        r['pduData'] = struct.pack('<LL', status, 0)
        # status + reserved belong to the fault header (32 bytes); the stub is empty.
        if protect:
            self._send_pdu(r.get_packet(), 32)
        else:
            with self.send_lock:
                self._send(r.get_packet())


def new_context_handle():
    """A fresh 20-byte NDR context handle (attributes 0 + random uuid)."""
    import os
    return b'\x00\x00\x00\x00' + os.urandom(16)
