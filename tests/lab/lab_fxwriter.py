"""FastTransfer streams for the Exchange lab, written from MS-OXCFXICS 2.2.4
(independently of the C codec in src/fx).

A message is a dict:
    {"props": {proptag: value},
     "named": [{"guid": "00020329-0000-0000-c000-000000000046",
                "lid": 0x8501 | "name": "x-foo", "type": 0x0003, "value": v}],
     "recipients": [{"props": {...}}],
     "attachments": [{"props": {...}, "embedded": <message dict> or None}]}
"type" is the named property's type ("tag" with the type in its low 16 bits
is read too); the stream identifies the property by GUID + LID/name, the
property id written (0x8000 + position) is only a placeholder, as a
client's local mapping would be.  Values: int, float, bool, str (PtypString / PtypString8),
bytes (PtypBinary, PtypObject, PtypServerId, PtypGuid), lists for
multi-valued types.

Functions:
    message_content(msg)            messageContent (2.2.4.3.16)
    top_message(msg, fai=False)     StartMessage|StartFAIMsg .. EndMessage
    contents_sync(changes, ...)     contentsSync (2.2.4.3.3): ICS download
    idset(ranges, guid=...)         serialized IDSET (2.2.2.4, 3.1.5.4)
    parse(stream)                   atoms of a stream (lab's upload side)
"""

import struct
import uuid as uuidlib

# Markers (MS-OXCFXICS 2.2.4.1.4)
NewAttach = 0x40000003
StartEmbed = 0x40010003
EndEmbed = 0x40020003
StartRecip = 0x40030003
EndToRecip = 0x40040003
StartTopFld = 0x40090003
StartSubFld = 0x400A0003
EndFolder = 0x400B0003
StartMessage = 0x400C0003
EndMessage = 0x400D0003
EndAttach = 0x400E0003
StartFAIMsg = 0x40100003
IncrSyncChg = 0x40120003
IncrSyncDel = 0x40130003
IncrSyncEnd = 0x40140003
IncrSyncMessage = 0x40150003
FXErrorInfo = 0x40180003
IncrSyncRead = 0x402F0003
IncrSyncStateBegin = 0x403A0003
IncrSyncStateEnd = 0x403B0003
IncrSyncProgressMode = 0x4074000B
IncrSyncProgressPerMsg = 0x4075000B
IncrSyncGroupInfo = 0x407B0102
IncrSyncChgPartial = 0x407D0003
MARKERS = {NewAttach, StartEmbed, EndEmbed, StartRecip, EndToRecip, StartTopFld, StartSubFld,
           EndFolder, StartMessage, EndMessage, EndAttach, StartFAIMsg, IncrSyncChg,
           IncrSyncDel, IncrSyncEnd, IncrSyncMessage, FXErrorInfo, IncrSyncRead,
           IncrSyncStateBegin, IncrSyncStateEnd, IncrSyncProgressMode,
           IncrSyncProgressPerMsg, IncrSyncGroupInfo, IncrSyncChgPartial}

# Meta-properties
MetaTagFXDelProp = 0x40160003
MetaTagIdsetGiven = 0x40170003      # Integer32 in the tag, binary on the wire
MetaTagCnsetSeen = 0x67960102
MetaTagCnsetSeenFAI = 0x67DA0102
MetaTagCnsetRead = 0x67D20102
MetaTagIdsetDeleted = 0x67E50102
MetaTagIdsetRead = 0x402D0102
MetaTagIdsetUnread = 0x402E0102

# Message change header properties (MS-OXCFXICS 2.2.4.3.19)
PidTagSourceKey = 0x65E00102
PidTagLastModificationTime = 0x30080040
PidTagChangeKey = 0x65E20102
PidTagPredecessorChangeList = 0x65E30102
PidTagAssociated = 0x67AA000B
PidTagMid = 0x674A0014
PidTagMessageSize = 0x0E080003
PidTagChangeNumber = 0x67A40014

FIXED = {0x0002: '<H', 0x0003: '<I', 0x0004: '<f', 0x0005: '<d', 0x0006: '<Q',
         0x0007: '<d', 0x000A: '<I', 0x000B: '<H', 0x0014: '<Q', 0x0040: '<Q'}
MV = 0x1000


def _u32(v):
    return struct.pack('<I', v)


def _fixed(t, v):
    if t == 0x0048:
        b = bytes(v) if not isinstance(v, str) else uuidlib.UUID(v).bytes_le
        assert len(b) == 16
        return b
    fmt = FIXED[t]
    if t == 0x000B:
        v = 1 if v else 0
    elif fmt in ('<I', '<Q', '<H') and isinstance(v, int) and v < 0:
        v &= (1 << (8 * struct.calcsize(fmt))) - 1
    return struct.pack(fmt, v)


def _var(t, v):
    """Length-prefixed value (varSizeValue)."""
    if t == 0x001F:
        b = (v.decode('utf-16le') if isinstance(v, bytes) else v).encode('utf-16le') + b'\0\0'
    elif t == 0x001E or t & 0x8000:
        b = (v if isinstance(v, bytes) else v.encode('cp1252', 'replace')) + b'\0'
    else:
        b = bytes(v)
    return _u32(len(b)) + b


def value(t, v):
    """The bytes after propInfo for type t."""
    if t & 0x8000:
        return _var(t, v)
    if t & MV:
        base = t & ~MV
        return _u32(len(v)) + b''.join(value(base, x) for x in v)
    if t in FIXED or t == 0x0048:
        return _fixed(t, v)
    if t in (0x000D, 0x001E, 0x001F, 0x00FB, 0x0102):
        return _var(t, v)
    raise ValueError('type 0x%04x has no FastTransfer encoding' % t)


def named_info(guid, lid=None, name=None):
    g = uuidlib.UUID(guid).bytes_le if isinstance(guid, str) else bytes(guid)
    if name is not None:
        return g + b'\x01' + name.encode('utf-16le') + b'\0\0'
    return g + b'\x00' + _u32(lid)


def prop(tag, v, named=None):
    """propValue (2.2.4.3.21)."""
    t = tag & 0xFFFF
    if tag == MetaTagIdsetGiven:
        t = 0x0102
    out = _u32(tag)
    if tag >> 16 >= 0x8000:
        out += named_info(**named)
    return out + value(t, v)


def prop_list(props, named=()):
    out = b''.join(prop(tag, v) for tag, v in props.items())
    for i, n in enumerate(named):
        t = n['type'] if 'type' in n else n['tag'] & 0xFFFF
        tag = ((0x8000 + i) << 16) | t
        out += prop(tag, n['value'], {'guid': n['guid'], 'lid': n.get('lid'),
                                      'name': n.get('name')})
    return out


def message_children(msg):
    out = b''
    for r in msg.get('recipients', ()):
        out += _u32(StartRecip) + prop_list(r['props']) + _u32(EndToRecip)
    for a in msg.get('attachments', ()):
        out += _u32(NewAttach) + prop_list(a['props'], a.get('named', ()))
        if a.get('embedded') is not None:
            out += _u32(StartEmbed) + message_content(a['embedded']) + _u32(EndEmbed)
        out += _u32(EndAttach)
    return out


def message_content(msg):
    return prop_list(msg.get('props', {}), msg.get('named', ())) + message_children(msg)


def top_message(msg, fai=False):
    return _u32(StartFAIMsg if fai else StartMessage) + message_content(msg) + _u32(EndMessage)


# ---- IDSET (2.2.2.4, GLOBSET 2.2.2.6) ----

def _globset(ranges):
    """Ranges of GLOBCNT values (6 bytes, big-endian) as Push/Range/Pop/End."""
    out = b''
    for lo, hi in sorted(ranges):
        lb, hb = lo.to_bytes(6, 'big'), hi.to_bytes(6, 'big')
        if lo == hi:
            out += b'\x06' + lb          # six bytes pushed: one GLOBCNT, popped at once
            continue
        k = 0
        while k < 5 and lb[k] == hb[k]:
            k += 1
        if k:
            out += bytes([k]) + lb[:k]   # common high-order bytes
        out += b'\x52' + lb[k:] + hb[k:]
        if k:
            out += b'\x50'
    return out + b'\x00'


def idset(ranges, guid=None, replid=None):
    """A REPLGUID-based (guid) or REPLID-based (replid) IDSET of GLOBCNT ranges."""
    if guid is not None:
        head = uuidlib.UUID(guid).bytes_le if isinstance(guid, str) else bytes(guid)
    else:
        head = struct.pack('<H', replid)
    return head + _globset(ranges)


def globcnt_of(id64):
    """The GLOBCNT of a Folder/Message ID (MS-OXCDATA 2.2.1.1: REPLID u16 + 6 bytes)."""
    return int.from_bytes(struct.pack('<Q', id64)[2:8], 'big')


# ---- ICS download ----

def progress_total(count, size, fai_count=0, fai_size=0):
    info = struct.pack('<HHIQIIQ', 0, 0, fai_count, fai_size, count, 0, size)
    return _u32(IncrSyncProgressMode) + prop(0x00000102, info)


def message_change(msg, header, per_msg_size=None, fai=False):
    """messageChangeFull: IncrSyncChg header IncrSyncMessage propList children."""
    out = b''
    if per_msg_size is not None:
        out += _u32(IncrSyncProgressPerMsg) + prop(0x00000003, per_msg_size) + \
            prop(0x0000000B, fai)
    out += _u32(IncrSyncChg) + prop_list(header)
    out += _u32(IncrSyncMessage) + message_content(msg)
    return out


def contents_sync(changes, state, deleted=None, read=None, unread=None, progress=None):
    """changes: list of (msg, header dict, size); state: dict tag -> IDSET bytes."""
    out = b''
    if progress:
        out += progress_total(*progress)
    for msg, header, size in changes:
        out += message_change(msg, header, size if progress else None)
    if deleted:
        out += _u32(IncrSyncDel) + prop(MetaTagIdsetDeleted, deleted)
    if read or unread:
        out += _u32(IncrSyncRead)
        if read:
            out += prop(MetaTagIdsetRead, read)
        if unread:
            out += prop(MetaTagIdsetUnread, unread)
    out += _u32(IncrSyncStateBegin)
    for tag, v in state.items():
        out += prop(tag, v)
    out += _u32(IncrSyncStateEnd) + _u32(IncrSyncEnd)
    return out


# ---- reading (the lab's upload side) ----

class FxError(Exception):
    pass


def _fixed_size(t):
    if t in FIXED:
        return struct.calcsize(FIXED[t])
    return 16 if t == 0x0048 else 0


def parse(data):
    """Atoms of a whole stream: ('marker', tag) or ('prop', tag, named, value)."""
    return [a for _, _, a in parse_spans(data)]


def parse_spans(data):
    """parse() with where each atom lies: (start, end, atom)."""
    out, o, n = [], 0, len(data)

    def take(k):
        nonlocal o
        if o + k > n:
            raise FxError('truncated at %d' % o)
        b = data[o:o + k]
        o += k
        return b

    def one(t):
        if t & 0x8000 or t in (0x000D, 0x001E, 0x001F, 0x00FB, 0x0102):
            b = take(struct.unpack('<I', take(4))[0])
            if t == 0x001F:
                return b.decode('utf-16le').rstrip('\0')
            if t == 0x001E or t & 0x8000:
                return b.rstrip(b'\0').decode('cp1252', 'replace')
            return b
        k = _fixed_size(t)
        if not k:
            raise FxError('type 0x%04x' % t)
        b = take(k)
        if t == 0x0048:
            return b
        v = struct.unpack(FIXED[t], b)[0]
        return bool(v) if t == 0x000B else v

    while o < n:
        start = o
        tag = struct.unpack('<I', take(4))[0]
        if tag in MARKERS:
            out.append((start, o, ('marker', tag)))
            continue
        t = 0x0102 if tag == MetaTagIdsetGiven else tag & 0xFFFF
        named = None
        if tag >> 16 >= 0x8000:
            g = str(uuidlib.UUID(bytes_le=take(16)))
            kind = take(1)[0]
            if kind == 0:
                named = {'guid': g, 'lid': struct.unpack('<I', take(4))[0]}
            elif kind == 1:
                s = b''
                while True:
                    c = take(2)
                    if c == b'\0\0':
                        break
                    s += c
                named = {'guid': g, 'name': s.decode('utf-16le')}
            else:
                raise FxError('named kind %d' % kind)
        if not t & 0x8000 and t & MV:
            cnt = struct.unpack('<I', take(4))[0]
            v = [one(t & ~MV) for _ in range(cnt)]
        else:
            v = one(t)
        out.append((start, o, ('prop', tag, named, v)))
    return out


def messages_of(atoms):
    """Rebuild message dicts from the atoms of an upload stream (top-level
    messages, ICS message changes, or one messageContent).  Returns a list."""
    msgs, stack = [], []

    def new():
        return {'props': {}, 'named': [], 'recipients': [], 'attachments': []}

    cur, sink = None, False
    for a in atoms:
        if a[0] == 'prop':
            _, tag, named, v = a
            if sink:
                continue                # progress, deletions, state, group info
            if cur is None:
                cur = new()
                msgs.append(cur)
                stack = [cur]
            tgt = stack[-1]
            if named:
                tgt.setdefault('named', []).append(dict(named, type=tag & 0xFFFF, value=v))
            else:
                tgt['props'][tag] = v
            continue
        tag = a[1]
        if tag in (StartMessage, StartFAIMsg, IncrSyncChg, IncrSyncChgPartial):
            sink = False
            cur = new()
            msgs.append(cur)
            stack = [cur]
        elif tag == IncrSyncMessage and cur is not None:
            cur['header'] = cur['props']
            cur['props'] = {}
        elif tag == StartRecip:
            r = {'props': {}}
            stack[-1]['recipients'].append(r)
            stack.append(r)
        elif tag == NewAttach:
            at = {'props': {}, 'embedded': None}
            stack[-1]['attachments'].append(at)
            stack.append(at)
        elif tag == StartEmbed:
            m = new()
            stack[-1]['embedded'] = m
            stack.append(m)
        elif tag in (EndToRecip, EndAttach, EndEmbed):
            stack.pop()
        elif tag in (IncrSyncDel, IncrSyncRead, IncrSyncStateBegin, IncrSyncEnd,
                     IncrSyncProgressMode, IncrSyncProgressPerMsg, IncrSyncGroupInfo):
            cur, sink = None, True
    return msgs


def parse_idset(data, guid_form=True):
    """Decode a serialized IDSET: list of (repl, [(lo, hi), ...]); repl is the
    REPLGUID string or the REPLID int.  Raises FxError when malformed."""
    out, o, n = [], 0, len(data)
    while o < n:
        if guid_form:
            if o + 16 > n:
                raise FxError('idset: truncated REPLGUID')
            repl = str(uuidlib.UUID(bytes_le=bytes(data[o:o + 16])))
            o += 16
        else:
            if o + 2 > n:
                raise FxError('idset: truncated REPLID')
            repl = struct.unpack('<H', data[o:o + 2])[0]
            o += 2
        stack, ranges = [], []
        while True:
            if o >= n:
                raise FxError('idset: no End command')
            c = data[o]
            o += 1
            common = b''.join(stack)
            if c == 0x00:
                break
            if 1 <= c <= 6:
                if len(common) + c > 6 or o + c > n:
                    raise FxError('idset: bad Push')
                b = bytes(data[o:o + c])
                o += c
                if len(common) + c == 6:
                    v = int.from_bytes(common + b, 'big')
                    ranges.append((v, v))
                else:
                    stack.append(b)
            elif c == 0x50:
                if not stack:
                    raise FxError('idset: Pop of an empty stack')
                stack.pop()
            elif c == 0x42:
                if len(common) != 5 or o + 2 > n:
                    raise FxError('idset: bad Bitmask')
                start, mask = data[o], data[o + 1]
                o += 2
                base = int.from_bytes(common + bytes([start]), 'big')
                vals = [base] + [base + i + 1 for i in range(8) if mask >> i & 1]
                for v in vals:
                    if ranges and ranges[-1][1] + 1 == v:
                        ranges[-1] = (ranges[-1][0], v)
                    else:
                        ranges.append((v, v))
            elif c == 0x52:
                k = 6 - len(common)
                if k < 1 or o + 2 * k > n:
                    raise FxError('idset: bad Range')
                lo = int.from_bytes(common + bytes(data[o:o + k]), 'big')
                hi = int.from_bytes(common + bytes(data[o + k:o + 2 * k]), 'big')
                o += 2 * k
                if lo > hi:
                    raise FxError('idset: Range low > high')
                ranges.append((lo, hi))
            else:
                raise FxError('idset: unknown command 0x%02x' % c)
        out.append((repl, ranges))
    return out


def ranges_of(values):
    """Sorted ints -> [(lo, hi)] runs."""
    out = []
    for v in sorted(set(values)):
        if out and out[-1][1] + 1 == v:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def in_ranges(v, ranges):
    return any(lo <= v <= hi for lo, hi in ranges)
