"""Endpoint mapper (epmapper e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0) for the lab.

ept_lookup (2), ept_map (3), ept_lookup_handle_free (4).  Requests are decoded
with Impacket's epm structures; responses are built by hand (C706 appendix L /
MS-RPCE 2.2.1.2) so the conformance and variance values are exactly right.
"""

import socket
import struct
import threading
import itertools

from impacket.dcerpc.v5 import epm
from impacket.uuid import string_to_bin, bin_to_string

from rpcserver import Interface, RpcFault, StubError, log, new_context_handle
from labndr import NdrWriter

EPM_UUID = 'e1af8308-5d1f-11c9-91a4-08002b14a0fa'
NDR_UUID = '8a885d04-1ceb-11c9-9fe8-08002b104860'
EPT_S_NOT_REGISTERED = 0x16c9a0d6
EPT_S_CANT_PERFORM_OP = 0x16c9a0d7

RPC_C_EP_ALL_ELTS = 0
RPC_C_EP_MATCH_BY_IF = 1
RPC_C_EP_MATCH_BY_OBJ = 2
RPC_C_EP_MATCH_BY_BOTH = 3

RPC_C_VERS_ALL = 1
RPC_C_VERS_COMPATIBLE = 2
RPC_C_VERS_EXACT = 3
RPC_C_VERS_MAJOR_ONLY = 4
RPC_C_VERS_UPTO = 5

PROT_TCP = 0x07
PROT_IP = 0x09
PROT_RPC_CO = 0x0b
PROT_UUID = 0x0d


class Endpoint(object):
    def __init__(self, uuid, major, minor, port, annotation):
        self.uuid = uuid.lower()
        self.major = major
        self.minor = minor
        self.port = port
        self.annotation = annotation

    def tower(self, host_ip):
        floors = []

        def floor(lhs, rhs):
            floors.append(struct.pack('<H', len(lhs)) + lhs + struct.pack('<H', len(rhs)) + rhs)

        floor(bytes([PROT_UUID]) + string_to_bin(self.uuid) + struct.pack('<H', self.major),
              struct.pack('<H', self.minor))
        floor(bytes([PROT_UUID]) + string_to_bin(NDR_UUID) + struct.pack('<H', 2),
              struct.pack('<H', 0))
        floor(bytes([PROT_RPC_CO]), struct.pack('<H', 0))
        floor(bytes([PROT_TCP]), struct.pack('>H', self.port))
        floor(bytes([PROT_IP]), socket.inet_aton(host_ip))
        return struct.pack('<H', len(floors)) + b''.join(floors)


def parse_tower(data):
    """Returns list of (lhs, rhs) floors."""
    n = struct.unpack('<H', data[:2])[0]
    off = 2
    floors = []
    for _ in range(n):
        llen = struct.unpack('<H', data[off:off + 2])[0]
        lhs = data[off + 2:off + 2 + llen]
        off += 2 + llen
        rlen = struct.unpack('<H', data[off:off + 2])[0]
        rhs = data[off + 2:off + 2 + rlen]
        off += 2 + rlen
        floors.append((lhs, rhs))
    return floors


class EndpointMapper(object):
    def __init__(self, config):
        self.config = config
        self.endpoints = []
        self.lock = threading.Lock()

    def register(self, uuid, version, port, annotation):
        major, minor = [int(x) for x in version.split('.')]
        self.endpoints.append(Endpoint(uuid, major, minor, port, annotation))

    def host_ip(self):
        h = self.config.host
        try:
            return socket.inet_ntoa(socket.inet_aton(h))
        except OSError:
            return '127.0.0.1'

    def interface(self):
        return Interface('epm', EPM_UUID, '3.0', {
            2: self.op_lookup,
            3: self.op_map,
            4: self.op_lookup_handle_free,
        })

    # -- helpers --
    @staticmethod
    def _decode(cls, stub):
        try:
            return cls(stub)
        except Exception as e:
            raise StubError('%s: %s' % (cls.__name__, e))

    def _version_ok(self, ep, major, minor, vers_option):
        if vers_option == RPC_C_VERS_ALL:
            return True
        if vers_option == RPC_C_VERS_COMPATIBLE:
            return ep.major == major and ep.minor >= minor
        if vers_option == RPC_C_VERS_EXACT:
            return ep.major == major and ep.minor == minor
        if vers_option == RPC_C_VERS_MAJOR_ONLY:
            return ep.major == major
        if vers_option == RPC_C_VERS_UPTO:
            return (ep.major, ep.minor) <= (major, minor)
        return False

    # -- ept_map --
    def op_map(self, call, stub):
        req = self._decode(epm.ept_map, stub)
        max_towers = req['max_towers']
        try:
            tower = b''.join(req['map_tower']['tower_octet_string'])
            floors = parse_tower(tower)
            lhs = floors[0][0]
            if lhs[0] != PROT_UUID:
                raise ValueError('first floor is not an interface id')
            if_uuid = bin_to_string(lhs[1:17]).lower()
            if_major = struct.unpack('<H', lhs[17:19])[0]
            if_minor = struct.unpack('<H', floors[0][1][:2])[0]
            prot = floors[3][0][0] if len(floors) > 3 else PROT_TCP
        except Exception as e:
            raise StubError('bad map tower: %s' % e)
        matches = [ep for ep in self.endpoints
                   if ep.uuid == if_uuid and ep.major == if_major and ep.minor >= if_minor
                   and prot == PROT_TCP]
        log('epm: ept_map %s v%d.%d max_towers=%d -> %s' % (
            if_uuid, if_major, if_minor, max_towers,
            ','.join(str(e.port) for e in matches) or 'not registered'))
        matches = matches[:max_towers]
        w = NdrWriter()
        w.context_handle(b'\x00' * 20)
        w.u32(len(matches))
        # ITowers: [size_is(max_towers), length_is(*num_towers)] twr_p_t ITowers[]
        w.u32(max_towers)
        w.u32(0)
        w.u32(len(matches))
        towers = [ep.tower(self.host_ip()) for ep in matches]
        for _ in towers:
            w.refid(True)
        for t in towers:
            w.u32(len(t))      # conformance of twr_t
            w.u32(len(t))      # tower_length
            w.raw(t)
        w.u32(0 if matches else EPT_S_NOT_REGISTERED)
        return w.getvalue()

    # -- ept_lookup --
    def op_lookup(self, call, stub):
        req = self._decode(epm.ept_lookup, stub)
        inquiry = req['inquiry_type']
        vers_option = req['vers_option']
        max_ents = req['max_ents']
        ifid = None
        if req['Ifid'] is not None and req.fields['Ifid'].fields['ReferentID'] != 0:
            ifid = (bin_to_string(req['Ifid']['Uuid']).lower(), req['Ifid']['VersMajor'],
                    req['Ifid']['VersMinor'])
        obj = None
        if req.fields['object'].fields['ReferentID'] != 0:
            obj = req['object']
        handle = req['entry_handle'].getData()
        selected = []
        for ep in self.endpoints:
            if inquiry in (RPC_C_EP_MATCH_BY_IF, RPC_C_EP_MATCH_BY_BOTH):
                if ifid is None or ep.uuid != ifid[0] or not self._version_ok(
                        ep, ifid[1], ifid[2], vers_option):
                    continue
            if inquiry in (RPC_C_EP_MATCH_BY_OBJ, RPC_C_EP_MATCH_BY_BOTH):
                # We register no object uuids: only the nil object matches.
                if obj is not None and obj != b'\x00' * 16:
                    continue
            selected.append(ep)
        group = call.assoc_group
        start = 0
        if handle[4:] != b'\x00' * 16:
            with group.lock:
                state = group.handles.get(handle)
            if not isinstance(state, dict) or state.get('kind') != 'ept_lookup':
                raise RpcFault(0x1c00001a)
            start = state['pos']
        chunk = selected[start:start + max_ents]
        nextpos = start + len(chunk)
        if chunk and nextpos < len(selected):
            if handle[4:] == b'\x00' * 16:
                handle = new_context_handle()
            with group.lock:
                group.handles[handle] = {'kind': 'ept_lookup', 'pos': nextpos}
            out_handle = handle
        else:
            if handle[4:] != b'\x00' * 16:
                with group.lock:
                    group.handles.pop(handle, None)
            out_handle = b'\x00' * 20
        log('epm: ept_lookup inquiry=%d if=%s max_ents=%d -> %d entries' % (
            inquiry, ifid, max_ents, len(chunk)))
        w = NdrWriter()
        w.context_handle(out_handle)
        w.u32(len(chunk))
        w.u32(max_ents)
        w.u32(0)
        w.u32(len(chunk))
        towers = []
        for ep in chunk:
            w.align(4)
            w.raw(b'\x00' * 16)                  # object uuid
            w.refid(True)                        # tower pointer
            ann = ep.annotation.encode('ascii')[:63] + b'\x00'
            w.u32(0)                             # annotation offset
            w.u32(len(ann))                      # annotation actual count
            w.raw(ann)
            towers.append(ep.tower(self.host_ip()))
        for t in towers:
            w.u32(len(t))
            w.u32(len(t))
            w.raw(t)
        w.u32(0 if chunk else EPT_S_NOT_REGISTERED)
        return w.getvalue()

    def op_lookup_handle_free(self, call, stub):
        if len(stub) < 20:
            raise StubError('short ept_lookup_handle_free')
        handle = stub[:20]
        with call.assoc_group.lock:
            call.assoc_group.handles.pop(handle, None)
        log('epm: ept_lookup_handle_free')
        w = NdrWriter()
        w.context_handle(b'\x00' * 20)
        w.u32(0)
        return w.getvalue()
