"""A small EMSMDB client on Impacket's DCE/RPC transport, for tests that act like Outlook.

    dce = connect('127.0.0.1', port)                       # bound to EMSMDB v0.81
    sess = EmsmdbClient(dce)
    sess.connect_ex(user_dn)                               # EcDoConnectEx
    b = RopBuffer()
    b.logon(0, user_dn)
    [logon] = sess.execute(b)                              # EcDoRpcExt2 + parsing
    ...
    sess.disconnect()

RopBuffer builds ROP request buffers (MS-OXCROPS) and knows how to parse the
matching responses; the client keeps the server object handle table between
calls.  Property values use lab_rops.read_value/write_value (MS-OXCDATA 2.11).
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from impacket.dcerpc.v5 import transport                       # noqa: E402

import emsmdb_ndr as N                                        # noqa: E402
import lzxpress                                               # noqa: E402
from lab_rops import Reader, read_value, write_value, ptype    # noqa: E402

CLIENT_VERSION = (0x000C, 0x183E, 0x03E8)     # Outlook 2007-style version words


def connect(host, port, iface=N.MSRPC_UUID_EMSMDB, max_frag=None):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[%d]' % (host, port))
    dce = t.get_dce_rpc()
    dce.connect()
    dce.bind(iface)
    return dce


# ---------------------------------------------------------------------------
# RPC calls
# ---------------------------------------------------------------------------
def ec_do_connect_ex(dce, user_dn, aux_out_max=0x1008, client_version=CLIENT_VERSION):
    req = N.EcDoConnectEx()
    req['szUserDN'] = user_dn + '\x00'
    req['ulFlags'] = 0
    req['ulConMod'] = 0x4b3e  # arbitrary connection modulus hash
    req['cbLimit'] = 0
    req['ulCpid'] = 1252
    req['ulLcidString'] = 0x409
    req['ulLcidSort'] = 0x409
    req['ulIcxrLink'] = 0xFFFFFFFF
    req['usFCanConvertCodePages'] = 1
    for i in range(3):
        req['rgwClientVersion%d' % i] = client_version[i]
    req['pulTimeStamp'] = 0
    req['rgbAuxIn'] = b''
    req['cbAuxIn'] = 0
    req['pcbAuxOut'] = aux_out_max
    return dce.request(req, checkError=False)


def ec_do_connect(dce, user_dn):
    req = N.EcDoConnect()
    req['szUserDN'] = user_dn + '\x00'
    req['ulFlags'] = 0
    req['ulConMod'] = 0x4b3e
    req['cbLimit'] = 0
    req['ulCpid'] = 1252
    req['ulLcidString'] = 0x409
    req['ulLcidSort'] = 0x409
    req['ulIcxrLink'] = 0xFFFFFFFF
    req['usFCanConvertCodePages'] = 1
    for i in range(3):
        req['rgwClientVersion%d' % i] = CLIENT_VERSION[i]
    req['pullTimeStamp'] = 0
    return dce.request(req, checkError=False)


def ec_do_disconnect(dce, cxh):
    req = N.EcDoDisconnect()
    req['pcxh'].set_raw(cxh)
    return dce.request(req, checkError=False)


def ec_dummy_rpc(dce):
    return dce.request(N.EcDummyRpc(), checkError=False)


def frame_ext(rop_buffer, compress=False, xor=True):
    """One RPC_HEADER_EXT (Last) around a ROP request buffer, LZ77-compressed and /
    or XorMagic-obfuscated (EcDoRpcExt2 rgbIn, MAPI over HTTP Execute RopBuffer)."""
    body = rop_buffer
    hflags = N.RHE_LAST
    if compress:
        body = lzxpress.compress(body)
        hflags |= N.RHE_COMPRESSED
    if xor:
        body = N.xor_a5(body)
        hflags |= N.RHE_XORMAGIC
    return struct.pack('<HHHH', 0, hflags, len(body), len(rop_buffer)) + body


def unframe_ext(out):
    """A chain of RPC_HEADER_EXT payloads -> [(flags, plain payload)]."""
    payloads = []
    off = 0
    while off < len(out):
        ver, fl, size, actual = struct.unpack_from('<HHHH', out, off)
        off += 8
        p = out[off:off + size]
        off += size
        if fl & N.RHE_XORMAGIC:
            p = N.xor_a5(p)
        if fl & N.RHE_COMPRESSED:
            p = lzxpress.decompress(p, actual)
        payloads.append((fl, p))
        if fl & N.RHE_LAST:
            break
    return payloads


WIRE_LOG = None


def ec_do_rpc_ext2(dce, cxh, rop_buffer, flags=0, compress=False, xor=True,
                   max_out=0x40000):
    """Send one ROP buffer through EcDoRpcExt2; returns (response, [payloads])."""
    rgb = frame_ext(rop_buffer, compress, xor)
    req = N.EcDoRpcExt2()
    req['pcxh'].set_raw(cxh)
    req['pulFlags'] = flags
    req['rgbIn'] = rgb
    req['cbIn'] = len(rgb)
    req['pcbOut'] = max_out
    req['rgbAuxIn'] = b''
    req['cbAuxIn'] = 0
    req['pcbAuxOut'] = 0x1008
    resp = dce.request(req, checkError=False)
    out = N.array_bytes(resp['rgbOut'])
    if WIRE_LOG is not None:    # tests: what was sent and received, byte for byte
        WIRE_LOG.append({'in': rgb.hex(), 'out': out.hex()})
    return resp, unframe_ext(out)


def ec_do_rpc(dce, cxh, rop_buffer, max_data=0x7FFF):
    """Legacy EcDoRpc: the ROP buffer travels XOR-0xA5 obfuscated."""
    req = N.EcDoRpc()
    req['pcxh'].set_raw(cxh)
    req['rgb'] = N.xor_a5(rop_buffer)
    # a conformant array's MaximumCount may not be below its actual count
    max_data = max(max_data, len(rop_buffer))
    req.fields['rgb'].fields['MaximumCount'] = max_data
    req['pcb'] = len(rop_buffer)
    req['cbMax'] = max_data
    resp = dce.request(req, checkError=False)
    return resp, N.xor_a5(N.array_bytes(resp['rgb']))


# ---------------------------------------------------------------------------
# ROP builder / parser
# ---------------------------------------------------------------------------
def parse_property_row(r, columns):
    flag = r.u8()
    out = {}
    for tag in columns:
        if flag == 0x01:
            f = r.u8()
            if f == 0x0A:
                out[tag] = ('error', r.u32())
                continue
            if f == 0x01:
                out[tag] = None
                continue
        out[tag] = read_value(r, ptype(tag))
    return out


def tagged_values(props):
    data = b''
    for tag, val in props:
        data += struct.pack('<L', tag) + write_value(ptype(tag), val)
    return data


def parse_message_info(r, d):
    """The recipient part of MessageInfo (RopOpenMessage / RopOpenEmbeddedMessage)."""
    d['RecipientCount'] = r.u16()
    cc = r.u16()
    d['RecipientColumns'] = [r.u32() for _ in range(cc)]
    d['RowCount'] = r.u8()
    d['RecipientRows'] = []
    for _ in range(d['RowCount']):
        rtype, cp, _res, size = r.u8(), r.u16(), r.u16(), r.u16()
        d['RecipientRows'].append((rtype, r.take(size)))


class RopBuffer(object):
    def __init__(self):
        self.rops = []          # (bytes, parser or None)

    def _add(self, data, parser):
        self.rops.append((data, parser))
        return self

    def raw(self, data, parser=None):
        return self._add(data, parser)

    @staticmethod
    def _hdr(r):
        rop_id, idx, rv = r.u8(), r.u8(), r.u32()
        return {'rop': rop_id, 'index': idx, 'ReturnValue': rv}

    def logon(self, out_idx, essdn, logon_flags=0x01, open_flags=0x01000000, logon_id=0):
        e = essdn.encode('ascii') + b'\x00'
        data = struct.pack('<BBBBLLH', 0xFE, logon_id, out_idx, logon_flags, open_flags, 0,
                           len(e)) + e

        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['LogonFlags'] = r.u8()
                d['FolderIds'] = [r.u64() for _ in range(13)]
                d['ResponseFlags'] = r.u8()
                d['MailboxGuid'] = r.take(16)
                d['ReplId'] = r.u16()
                d['ReplGuid'] = r.take(16)
                d['LogonTime'] = r.take(8)
                d['GwartTime'] = r.u64()
                d['StoreState'] = r.u32()
            return d
        return self._add(data, parse)

    def release(self, in_idx, logon_id=0):
        return self._add(struct.pack('<BBB', 0x01, logon_id, in_idx), None)

    def open_folder(self, in_idx, out_idx, fid, mode=0, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['HasRules'] = r.u8()
                d['IsGhosted'] = r.u8()
                if d['IsGhosted']:
                    sc, csc = r.u16(), r.u16()
                    d['Servers'] = [r.asciiz() for _ in range(sc)]
            return d
        return self._add(struct.pack('<BBBBQB', 0x02, logon_id, in_idx, out_idx, fid, mode),
                         parse)

    def open_message(self, in_idx, out_idx, fid, mid, mode=0, codepage=0x0FFF, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['HasNamedProperties'] = r.u8()
                for name in ('SubjectPrefix', 'NormalizedSubject'):
                    st = r.u8()
                    if st in (0, 1):
                        d[name] = '' if st else None
                    elif st in (2, 3):
                        d[name] = r.asciiz()
                    else:
                        d[name] = r.utf16z()
                parse_message_info(r, d)
            return d
        return self._add(struct.pack('<BBBBHQBQ', 0x03, logon_id, in_idx, out_idx, codepage,
                                     fid, mode, mid), parse)

    def open_embedded_message(self, in_idx, out_idx, mode=0, codepage=0x0FFF, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                r.u8()
                d['MessageId'] = r.u64()
                d['HasNamedProperties'] = r.u8()
                for name in ('SubjectPrefix', 'NormalizedSubject'):
                    st = r.u8()
                    d[name] = (r.asciiz() if st in (2, 3) else r.utf16z()) if st > 1 else None
                parse_message_info(r, d)
            return d
        return self._add(struct.pack('<BBBBHB', 0x46, logon_id, in_idx, out_idx, codepage,
                                     mode), parse)

    def get_properties_all(self, in_idx, size_limit=0, want_unicode=1, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                n = r.u16()
                d['Values'] = {}
                for _ in range(n):
                    tag = r.u32()
                    d['Values'][tag] = read_value(r, ptype(tag))
            return d
        return self._add(struct.pack('<BBBHH', 0x08, logon_id, in_idx, size_limit,
                                     want_unicode), parse)

    def modify_recipients(self, in_idx, columns, rows, logon_id=0):
        """rows: (row_id, recipient_type, RecipientRow bytes)."""
        data = struct.pack('<BBBH', 0x0E, logon_id, in_idx, len(columns)) + \
            b''.join(struct.pack('<L', t) for t in columns) + struct.pack('<H', len(rows))
        for row_id, rtype, row in rows:
            data += struct.pack('<LBH', row_id, rtype, len(row)) + row
        return self._add(data, self._hdr)

    def read_recipients(self, in_idx, row_id=0, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                n = r.u8()
                d['Rows'] = []
                for _ in range(n):
                    row_id, rtype, cp, _res, size = r.u32(), r.u8(), r.u16(), r.u16(), r.u16()
                    d['Rows'].append((row_id, rtype, r.take(size)))
            return d
        return self._add(struct.pack('<BBBLH', 0x0F, logon_id, in_idx, row_id, 0), parse)

    def get_names_from_ids(self, in_idx, ids, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['Names'] = []
                for _ in range(r.u16()):
                    kind = r.u8()
                    guid = r.take(16)
                    if kind == 0:
                        d['Names'].append((guid, 'lid', r.u32()))
                    elif kind == 1:
                        d['Names'].append((guid, 'name', r.take(r.u8()).decode(
                            'utf-16le').rstrip('\x00')))
                    else:
                        d['Names'].append(None)
            return d
        return self._add(struct.pack('<BBBH', 0x55, logon_id, in_idx, len(ids)) +
                         b''.join(struct.pack('<H', i) for i in ids), parse)

    def _table(self, rop_id, in_idx, out_idx, flags, logon_id, has_count=True):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0 and has_count:
                d['RowCount'] = r.u32()
            return d
        return self._add(struct.pack('<BBBBB', rop_id, logon_id, in_idx, out_idx, flags), parse)

    def get_hierarchy_table(self, in_idx, out_idx, flags=0, logon_id=0):
        return self._table(0x04, in_idx, out_idx, flags, logon_id)

    def get_contents_table(self, in_idx, out_idx, flags=0, logon_id=0):
        return self._table(0x05, in_idx, out_idx, flags, logon_id)

    def get_attachment_table(self, in_idx, out_idx, flags=0, logon_id=0):
        return self._table(0x21, in_idx, out_idx, flags, logon_id, has_count=False)

    def create_message(self, in_idx, out_idx, fid, associated=0, codepage=0x0FFF, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['HasMessageId'] = r.u8()
                if d['HasMessageId']:
                    d['MessageId'] = r.u64()
            return d
        return self._add(struct.pack('<BBBBHQB', 0x06, logon_id, in_idx, out_idx, codepage,
                                     fid, associated), parse)

    def get_properties_specific(self, in_idx, tags, size_limit=0, want_unicode=1, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['Row'] = parse_property_row(r, tags)
            return d
        data = struct.pack('<BBBHHH', 0x07, logon_id, in_idx, size_limit, want_unicode,
                           len(tags)) + b''.join(struct.pack('<L', t) for t in tags)
        return self._add(data, parse)

    def set_properties(self, in_idx, props, logon_id=0):
        vals = tagged_values(props)

        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                n = r.u16()
                d['PropertyProblems'] = [(r.u16(), r.u32(), r.u32()) for _ in range(n)]
            return d
        # PropertyValueSize counts PropertyValueCount (2 bytes) and PropertyValues
        # (MS-OXCROPS 2.2.8.6.1; MS-OXCPRPT section 4 example: 0x0024 for 2 + 34).
        data = struct.pack('<BBBHH', 0x0A, logon_id, in_idx, 2 + len(vals), len(props)) + vals
        return self._add(data, parse)

    def save_changes_message(self, resp_idx, in_idx, flags=0x0A, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['InputHandleIndex'] = r.u8()
                d['MessageId'] = r.u64()
            return d
        return self._add(struct.pack('<BBBBB', 0x0C, logon_id, resp_idx, in_idx, flags), parse)

    def set_columns(self, in_idx, tags, flags=0, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['TableStatus'] = r.u8()
            return d
        data = struct.pack('<BBBBH', 0x12, logon_id, in_idx, flags, len(tags)) + \
            b''.join(struct.pack('<L', t) for t in tags)
        return self._add(data, parse)

    def query_rows(self, in_idx, count, columns, flags=0, forward=1, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['Origin'] = r.u8()
                n = r.u16()
                d['Rows'] = [parse_property_row(r, columns) for _ in range(n)]
            return d
        return self._add(struct.pack('<BBBBBH', 0x15, logon_id, in_idx, flags, forward, count),
                         parse)

    def create_attachment(self, in_idx, out_idx, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['AttachmentID'] = r.u32()
            return d
        return self._add(struct.pack('<BBBB', 0x23, logon_id, in_idx, out_idx), parse)

    def open_attachment(self, in_idx, out_idx, attach_id, flags=0, logon_id=0):
        return self._add(struct.pack('<BBBBBL', 0x22, logon_id, in_idx, out_idx, flags,
                                     attach_id), self._hdr)

    def delete_attachment(self, in_idx, attach_id, logon_id=0):
        """RopDeleteAttachment (MS-OXCROPS, message ROPs): RopId, LogonId,
        InputHandleIndex (the message), AttachmentID."""
        return self._add(struct.pack('<BBBL', 0x24, logon_id, in_idx, attach_id), self._hdr)

    def save_changes_attachment(self, resp_idx, in_idx, flags=0x0A, logon_id=0):
        return self._add(struct.pack('<BBBBB', 0x25, logon_id, resp_idx, in_idx, flags),
                         self._hdr)

    def get_receive_folder(self, in_idx, message_class='', logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['FolderId'] = r.u64()
                d['ExplicitMessageClass'] = r.asciiz()
            return d
        return self._add(struct.pack('<BBB', 0x27, logon_id, in_idx) +
                         message_class.encode('ascii') + b'\x00', parse)

    def open_stream(self, in_idx, out_idx, tag, mode=0, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['StreamSize'] = r.u32()
            return d
        return self._add(struct.pack('<BBBBLB', 0x2B, logon_id, in_idx, out_idx, tag, mode),
                         parse)

    def seek_stream(self, in_idx, origin, offset, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            if d['ReturnValue'] == 0:
                d['NewPosition'] = r.u64()
            return d
        return self._add(struct.pack('<BBBBq', 0x2E, logon_id, in_idx, origin, offset), parse)

    def read_stream(self, in_idx, count, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            n = r.u16()       # DataSize is present on failure too
            d['Data'] = r.take(n)
            return d
        if count > 0xFFFF or count == 0xBABE:
            data = struct.pack('<BBBHL', 0x2C, logon_id, in_idx, 0xBABE, count)
        else:
            data = struct.pack('<BBBH', 0x2C, logon_id, in_idx, count)
        return self._add(data, parse)

    def write_stream(self, in_idx, data, logon_id=0):
        def parse(r):
            d = self._hdr(r)
            d['WrittenSize'] = r.u16()
            return d
        return self._add(struct.pack('<BBBH', 0x2D, logon_id, in_idx, len(data)) + data, parse)

    def commit_stream(self, in_idx, logon_id=0):
        return self._add(struct.pack('<BBB', 0x5D, logon_id, in_idx), self._hdr)

    def submit_message(self, in_idx, flags=0, logon_id=0):
        return self._add(struct.pack('<BBBB', 0x32, logon_id, in_idx, flags), self._hdr)

    def build(self, handles):
        body = b''.join(d for d, _ in self.rops)
        return struct.pack('<H', len(body) + 2) + body + \
            b''.join(struct.pack('<L', h) for h in handles)

    def parse(self, resp):
        """Parse a ROP response buffer; returns (list of dicts, handle table)."""
        rop_size = struct.unpack('<H', resp[:2])[0]
        r = Reader(resp, 2, rop_size)
        results = []
        for _, parser in self.rops:
            if parser is None:
                continue
            if r.off >= r.end:
                break
            d = parser(r)
            results.append(d)
        tail = resp[rop_size:]
        handles = list(struct.unpack('<%dL' % (len(tail) // 4), tail))
        return results, handles


class EmsmdbClient(object):
    """An EMSMDB session: context handle plus the server object handle table."""

    def __init__(self, dce, handle_slots=16, use_ext2=True, compress=False, xor=True):
        self.dce = dce
        self.cxh = None
        self.handles = [0xFFFFFFFF] * handle_slots
        self.use_ext2 = use_ext2
        self.compress = compress
        self.xor = xor
        self.connect_response = None

    def connect_ex(self, user_dn):
        resp = ec_do_connect_ex(self.dce, user_dn)
        self.connect_response = resp
        if resp['ErrorCode'] == 0:
            self.cxh = resp['pcxh'].getData()
        return resp

    def connect(self, user_dn):
        resp = ec_do_connect(self.dce, user_dn)
        self.connect_response = resp
        if resp['ErrorCode'] == 0:
            self.cxh = resp['pcxh'].getData()
        return resp

    def execute(self, rops, flags=0):
        buf = rops.build(self.handles)
        if self.use_ext2:
            resp, payloads = ec_do_rpc_ext2(self.dce, self.cxh, buf, flags=flags,
                                            compress=self.compress, xor=self.xor,
                                            max_out=getattr(self, 'max_out', 0x40000))
            if resp['ErrorCode'] != 0:
                raise RuntimeError('EcDoRpcExt2 failed: 0x%x' % resp['ErrorCode'])
            out = payloads[0][1]
        else:
            resp, out = ec_do_rpc(self.dce, self.cxh, buf)
            if resp['ErrorCode'] != 0:
                raise RuntimeError('EcDoRpc failed: 0x%x' % resp['ErrorCode'])
        results, handles = rops.parse(out)
        self.handles = handles + self.handles[len(handles):]
        return results

    def disconnect(self):
        if self.cxh is not None:
            resp = ec_do_disconnect(self.dce, self.cxh)
            self.cxh = None
            return resp
