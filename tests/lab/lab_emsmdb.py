"""EMSMDB (MS-OXCRPC) server for the Exchange lab: EcDoConnect (0), EcDoDisconnect (1),
EcDoRpc (2), EcDummyRpc (6), EcDoConnectEx (10), EcDoRpcExt2 (11), EcDoAsyncConnectEx
(14), plus AsyncEMSMDB EcDoAsyncWaitEx (0).
"""

import itertools
import json
import os
import struct
import threading
import time

from rpcserver import Interface, RpcFault, StubError, log, new_context_handle, \
    NCA_S_FAULT_CONTEXT_MISMATCH
import emsmdb_ndr as N
from emsmdb_ndr import EMSMDB_UUID, ASYNC_EMSMDB_UUID
import lzxpress
from lab_rops import Store, RopSession, RopParseError

ecSuccess = 0
ecUnknownUser = 0x000003EB
ecRpcFormat = 0x000004B6
ecBufferTooSmall = 0x0000047D
ecNotSupported = 0x80040102

# Exchange 2010 SP3 (14.3.123.4) in the "new" version format (MS-OXCRPC 3.1.4.1.3.1)
SERVER_VERSION = (0x0E03, 0x8000 | 123, 4)
MAX_PAYLOAD = 0x8000


# --full-access: identities with Administrator's FullAccess (as an Exchange
# service account), e.g. a proxy's Kerberos principal; lower case
FULL_ACCESS = set()


def full_access(identity):
    return bool(identity) and (identity.lower().endswith('\\administrator') or
                               identity.lower() in FULL_ACCESS)


class EmsmdbSession(object):
    def __init__(self, user, rops, icxr):
        self.user = user
        self.rops = rops
        self.icxr = icxr
        self.lock = threading.Lock()


class AsyncHandle(object):
    def __init__(self, session):
        self.session = session


def decode(cls, stub):
    try:
        obj = cls()
        n = obj.fromString(stub)
        if n > len(stub) or len(stub) - n > 7:
            raise ValueError('consumed %d of %d bytes' % (n, len(stub)))
        return obj
    except StubError:
        raise
    except Exception as e:
        raise StubError('%s: %s' % (cls.__name__, e))


def parse_ext_chain(buf):
    """Split rgbIn into payloads: [(flags, payload)], undoing XorMagic and compression."""
    out = []
    off = 0
    while True:
        if off + 8 > len(buf):
            raise ValueError('truncated RPC_HEADER_EXT at %d' % off)
        ver, flags, size, actual = struct.unpack_from('<HHHH', buf, off)
        off += 8
        if ver != 0:
            raise ValueError('RPC_HEADER_EXT version %d' % ver)
        payload = buf[off:off + size]
        if len(payload) != size:
            raise ValueError('truncated payload')
        off += size
        if flags & N.RHE_XORMAGIC:
            payload = N.xor_a5(payload)
        if flags & N.RHE_COMPRESSED:
            payload = lzxpress.decompress(payload, actual)
        elif actual != size:
            raise ValueError('Size %d != SizeActual %d for uncompressed payload' % (size, actual))
        out.append((flags, payload))
        if flags & N.RHE_LAST:
            break
        if off >= len(buf):
            raise ValueError('chain ended without Last flag')
    return out


def build_ext(payload, compress, xor, last=True):
    flags = N.RHE_LAST if last else 0
    body = payload
    if compress and len(payload) > 64:
        c = lzxpress.compress(payload)
        if len(c) < len(payload):
            body = c
            flags |= N.RHE_COMPRESSED
    if xor:
        body = N.xor_a5(body)
        flags |= N.RHE_XORMAGIC
    return struct.pack('<HHHH', 0, flags, len(body), len(payload)) + body


class Emsmdb(object):
    def __init__(self, config, directory):
        self.config = config
        self.dir = directory
        self.store = Store(config)
        self.icxr = itertools.count(1)
        self.fail_lock = threading.Lock()
        self.fail_seen = 0

    def interfaces(self):
        return [
            Interface('emsmdb', EMSMDB_UUID, '0.81', {
                0: self.op_connect, 1: self.op_disconnect, 2: self.op_rpc, 6: self.op_dummy,
                10: self.op_connect_ex, 11: self.op_rpc_ext2, 14: self.op_async_connect_ex,
            }),
            Interface('asyncemsmdb', ASYNC_EMSMDB_UUID, '0.1', {0: self.op_async_wait}),
        ]

    # -- helpers --
    def _user(self, dn):
        o = self.dir.lookup_dn(dn)
        if o is not None and o.kind == 'user':
            return o
        return None

    def _session(self, call, cxh):
        raw = cxh.getData()
        with call.assoc_group.lock:
            s = call.assoc_group.handles.get(raw)
        if not isinstance(s, EmsmdbSession):
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH)
        return s, raw

    def _new_session(self, call, user):
        s = self.new_session(user, call.auth_identity)
        h = new_context_handle()
        with call.assoc_group.lock:
            call.assoc_group.handles[h] = s
        return s, h

    def _fill_connect(self, resp, handle, s, user):
        resp['pcxh'].set_raw(handle if handle else b'\x00' * 20)
        resp['pcmsPollsMax'] = 60000
        resp['pcRetry'] = 6
        resp['pcmsRetryDelay'] = 10000
        resp['picxr'] = s.icxr if s else 0
        resp['szDNPrefix'] = (self.config.user_server_dn(user.dn) if user else '') + '\x00'
        resp['szDisplayName'] = (user.display_name() if user else '') + '\x00'
        for i in range(3):
            resp['rgwServerVersion%d' % i] = SERVER_VERSION[i]

    # -- opnum 0 --
    def op_connect(self, call, stub):
        req = decode(N.EcDoConnect, stub)
        dn = req['szUserDN'].rstrip('\x00')
        user = self._user(dn)
        resp = N.EcDoConnectResponse()
        for i in range(3):
            resp['rgwClientVersion%d' % i] = req['rgwClientVersion%d' % i]
        resp['pullTimeStamp'] = int(time.time()) & 0xFFFFFFFF
        if user is None:
            self._fill_connect(resp, None, None, None)
            resp['ErrorCode'] = ecUnknownUser
        else:
            s, h = self._new_session(call, user)
            self._fill_connect(resp, h, s, user)
            resp['ErrorCode'] = ecSuccess
        log('emsmdb: EcDoConnect %r -> 0x%x' % (dn, resp['ErrorCode']))
        return resp.getData()

    # -- opnum 10 --
    def op_connect_ex(self, call, stub):
        req = decode(N.EcDoConnectEx, stub)
        dn = req['szUserDN'].rstrip('\x00')
        user = self._user(dn)
        cv = tuple(req['rgwClientVersion%d' % i] for i in range(3))
        resp = N.EcDoConnectExResponse()
        if user is None:
            self._fill_connect(resp, None, None, None)
            code = ecUnknownUser
        else:
            s, h = self._new_session(call, user)
            self._fill_connect(resp, h, s, user)
            code = ecSuccess
        for i in range(3):
            resp['rgwBestVersion%d' % i] = SERVER_VERSION[i]
        resp['pulTimeStamp'] = req['pulTimeStamp'] or int(time.time()) & 0xFFFFFFFF
        resp['rgbAuxOut'] = b''
        resp['pcbAuxOut'] = 0
        resp['ErrorCode'] = code
        log('emsmdb: EcDoConnectEx %r client version %s -> 0x%x' % (
            dn, '.'.join('%04x' % v for v in cv), code))
        return resp.getData()

    # -- opnum 1 --
    def op_disconnect(self, call, stub):
        req = decode(N.EcDoDisconnect, stub)
        s, raw = self._session(call, req['pcxh'])
        with call.assoc_group.lock:
            call.assoc_group.handles.pop(raw, None)
            for k, v in list(call.assoc_group.handles.items()):
                if isinstance(v, AsyncHandle) and v.session is s:
                    del call.assoc_group.handles[k]
        resp = N.EcDoDisconnectResponse()
        resp['pcxh'].set_raw(b'\x00' * 20)
        resp['ErrorCode'] = ecSuccess
        log('emsmdb: EcDoDisconnect %s' % s.user.dn)
        return resp.getData()

    # -- opnum 6 --
    def op_dummy(self, call, stub):
        log('emsmdb: EcDummyRpc')
        resp = N.EcDummyRpcResponse()
        resp['ErrorCode'] = ecSuccess
        return resp.getData()

    def _run_rops(self, s, rop_buffer, max_size=None):
        with s.lock:
            try:
                return s.rops.process(rop_buffer, max_size)
            except RopParseError as e:
                log('emsmdb: malformed ROP buffer: %s' % e)
                return None

    # -- opnum 2 --
    def op_rpc(self, call, stub):
        req = decode(N.EcDoRpc, stub)
        s, raw = self._session(call, req['pcxh'])
        data = N.xor_a5(N.array_bytes(req['rgb']))
        log('emsmdb: EcDoRpc %d bytes (cbMax %d)' % (len(data), req['cbMax']))
        out = self._run_rops(s, data)
        resp = N.EcDoRpcResponse()
        resp['pcxh'].set_raw(raw)
        if out is None:
            resp['rgb'] = b''
            resp['pcb'] = 0
            resp['ErrorCode'] = ecRpcFormat
        else:
            resp['rgb'] = N.xor_a5(out)
            resp['pcb'] = len(out)
            resp['ErrorCode'] = ecSuccess
        resp.fields['rgb'].fields['MaximumCount'] = max(req['cbMax'], len(out or b''))
        return resp.getData()

    # -- transport-neutral pieces (also used by lab_mapihttp.py) --
    def new_session(self, user, identity=None):
        """A fresh EmsmdbSession for a directory user (not registered anywhere).
        identity: the NTLM logon ('DOMAIN\\user') that made it; LAB's
        Administrator has full access to every mailbox (RopLogon to another
        user's mailbox), as an Exchange service account with FullAccess."""
        rops = RopSession(self.store, user.dn, user.display_name(), log)
        if full_access(identity):
            rops.other_mailbox = self._other_mailbox
        return EmsmdbSession(user, rops, next(self.icxr) & 0xFFFF)

    def _other_mailbox(self, dn):
        u = self._user(dn)
        return (u.dn, u.display_name()) if u is not None else None

    def execute_ext(self, s, flags_in, rgb_in, max_out, what='EcDoRpcExt2'):
        """Runs an RPC_HEADER_EXT chain of ROP buffers (EcDoRpcExt2 / MAPI over HTTP
        Execute).  Returns (error code, rgbOut bytes, elapsed ms)."""
        code = ecSuccess
        out_buf = b''
        t0 = time.time()
        try:
            payloads = parse_ext_chain(rgb_in)
        except (ValueError, lzxpress.LzError) as e:
            log('emsmdb: %s bad rgbIn: %s' % (what, e))
            return ecRpcFormat, b'', 0
        in_flags = payloads[0][0]
        log('emsmdb: %s flags=0x%x cbIn=%d ext flags=0x%x payload=%d bytes' % (
            what, flags_in, len(rgb_in), in_flags, sum(len(p) for _, p in payloads)))
        outs = []
        seen = len(s.rops.seen_ids)
        for _, p in payloads:
            o = self._run_rops(s, p, max_out - 8 if len(payloads) == 1 else None)
            if o is None:
                code = ecRpcFormat
                break
            outs.append(o)
        self._injected_failure(s.rops.seen_ids[seen:], what)
        if code == ecSuccess:
            compress = not flags_in & N.EXT2_NO_COMPRESSION
            xor = not flags_in & N.EXT2_NO_XOR_MAGIC
            out_buf = b''.join(build_ext(o, compress, xor, last=(i == len(outs) - 1))
                               for i, o in enumerate(outs))
            if len(out_buf) > max_out:
                code = ecBufferTooSmall
                out_buf = b''
        return code, out_buf, int((time.time() - t0) * 1000)

    def _injected_failure(self, rop_ids, what):
        """LAB_FAIL_EXECUTE=ROPID:N (hex RopId, count from 1): the Nth call
        whose ROP buffer held that RopId (counted over the lab's life) fails
        after it ran: a fault PDU over DCE/RPC (RPC_X_BAD_STUB_DATA), and
        over MAPI/HTTP X-ResponseCode 1 (the server failed the request)."""
        knob = os.environ.get('LAB_FAIL_EXECUTE')
        if not knob:
            return
        rop, nth = knob.split(':')
        if int(rop, 16) not in rop_ids:
            return
        with self.fail_lock:
            self.fail_seen += 1
            hit = self.fail_seen == int(nth)
        if hit:
            log('emsmdb: %s with RopId 0x%02x fails (LAB_FAIL_EXECUTE=%s)' % (
                what, int(rop, 16), knob))
            raise RpcFault(0x000006F7)

    # -- opnum 11 --
    def op_rpc_ext2(self, call, stub):
        req = decode(N.EcDoRpcExt2, stub)
        s, raw = self._session(call, req['pcxh'])
        code, out_buf, ms = self.execute_ext(s, req['pulFlags'], N.array_bytes(req['rgbIn']),
                                             req['pcbOut'])
        resp = N.EcDoRpcExt2Response()
        resp['pcxh'].set_raw(raw)
        resp['pulFlags'] = 0
        resp['rgbAuxOut'] = b''
        resp['pcbAuxOut'] = 0
        resp['pulTransTime'] = ms
        resp['rgbOut'] = out_buf
        resp['pcbOut'] = len(out_buf)
        resp['ErrorCode'] = code
        dump = os.environ.get('LAB_WIRE_DUMP')
        if dump:   # tests compare these bytes with what their client sent/got
            with open(dump, 'a') as f:
                f.write(json.dumps({'in': N.array_bytes(req['rgbIn']).hex(),
                                    'out': out_buf.hex(), 'rops': s.rops.seen_ids}) + '\n')
        s.rops.seen_ids = []
        return resp.getData()

    # -- opnum 14 --
    def op_async_connect_ex(self, call, stub):
        req = decode(N.EcDoAsyncConnectEx, stub)
        s, raw = self._session(call, req['cxh'])
        h = new_context_handle()
        with call.assoc_group.lock:
            call.assoc_group.handles[h] = AsyncHandle(s)
        resp = N.EcDoAsyncConnectExResponse()
        resp['pacxh'].set_raw(h)
        resp['ErrorCode'] = ecSuccess
        log('emsmdb: EcDoAsyncConnectEx')
        return resp.getData()

    # -- AsyncEMSMDB opnum 0 --
    def op_async_wait(self, call, stub):
        req = decode(N.EcDoAsyncWaitEx, stub)
        raw = req['acxh'].getData()
        with call.assoc_group.lock:
            a = call.assoc_group.handles.get(raw)
        if not isinstance(a, AsyncHandle):
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH)
        log('emsmdb: EcDoAsyncWaitEx (no notifications in the lab; answering after 1 s)')
        time.sleep(1.0)
        resp = N.EcDoAsyncWaitExResponse()
        resp['pulFlagsOut'] = 0
        resp['ErrorCode'] = ecSuccess
        return resp.getData()
