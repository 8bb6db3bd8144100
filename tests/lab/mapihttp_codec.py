"""MAPI over HTTP (MS-OXCMAPIHTTP) body codec shared by the lab server
(lab_mapihttp.py) and the test client (mapihttp_client.py).

Little-endian readers/writers, STAT, LargePropertyTagArray, and the address
book value formats of MS-OXCMAPIHTTP 2.2.1 (AddressBookPropertyValue with its
HasValue byte before string / binary / multi-valued values, 32-bit counts,
AddressBookPropertyRow with flagged values, AddressBookPropertyValueList) and
MS-OXCDATA 2.12 restrictions with 32-bit counts.

Every reader is bounds-checked and raises BodyError on malformed input.
"""

import struct

PT_UNSPECIFIED = 0x0000
PT_NULL = 0x0001
PT_SHORT = 0x0002
PT_LONG = 0x0003
PT_ERROR = 0x000A
PT_BOOLEAN = 0x000B
PT_OBJECT = 0x000D
PT_I8 = 0x0014
PT_STRING8 = 0x001E
PT_UNICODE = 0x001F
PT_SYSTIME = 0x0040
PT_CLSID = 0x0048
PT_BINARY = 0x0102
PT_MV_LONG = 0x1003
PT_MV_STRING8 = 0x101E
PT_MV_UNICODE = 0x101F
PT_MV_BINARY = 0x1102

MAX_COUNT = 100000          # sanity limit for element counts


class BodyError(ValueError):
    """Malformed request or response body."""


class Reader(object):
    def __init__(self, data, off=0):
        self.data = bytes(data)
        self.off = off

    def need(self, n):
        if n < 0 or self.off + n > len(self.data):
            raise BodyError('truncated body: need %d bytes at offset %d of %d' % (
                n, self.off, len(self.data)))

    def take(self, n):
        self.need(n)
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def _unpack(self, fmt):
        n = struct.calcsize(fmt)
        self.need(n)
        v = struct.unpack_from(fmt, self.data, self.off)[0]
        self.off += n
        return v

    def u8(self):
        return self._unpack('<B')

    def u16(self):
        return self._unpack('<H')

    def u32(self):
        return self._unpack('<L')

    def i32(self):
        return self._unpack('<l')

    def u64(self):
        return self._unpack('<Q')

    def count(self):
        n = self.u32()
        if n > MAX_COUNT:
            raise BodyError('count %d too large' % n)
        return n

    def asciiz(self):
        end = self.data.find(b'\x00', self.off)
        if end < 0:
            raise BodyError('unterminated 8-bit string at %d' % self.off)
        s = self.data[self.off:end].decode('cp1252', 'replace')
        self.off = end + 1
        return s

    def utf16z(self):
        i = self.off
        while True:
            if i + 2 > len(self.data):
                raise BodyError('unterminated UTF-16 string at %d' % self.off)
            if self.data[i:i + 2] == b'\x00\x00':
                break
            i += 2
        try:
            s = self.data[self.off:i].decode('utf-16le')
        except UnicodeDecodeError as e:
            raise BodyError('bad UTF-16 string: %s' % e)
        self.off = i + 2
        return s

    def flag(self):
        """A Has* byte: 0 -> False, 0xFF (or any non-zero) -> True."""
        return self.u8() != 0

    def aux(self):
        n = self.u32()
        return self.take(n)

    def end(self):
        if self.off != len(self.data):
            raise BodyError('%d trailing bytes' % (len(self.data) - self.off))


class Writer(object):
    def __init__(self):
        self.parts = []

    def raw(self, b):
        self.parts.append(bytes(b))
        return self

    def u8(self, v):
        return self.raw(struct.pack('<B', v & 0xFF))

    def u16(self, v):
        return self.raw(struct.pack('<H', v & 0xFFFF))

    def u32(self, v):
        return self.raw(struct.pack('<L', v & 0xFFFFFFFF))

    def i32(self, v):
        return self.raw(struct.pack('<l', v))

    def u64(self, v):
        return self.raw(struct.pack('<Q', v))

    def asciiz(self, s):
        return self.raw(s.encode('cp1252', 'replace') + b'\x00')

    def utf16z(self, s):
        return self.raw(s.encode('utf-16le') + b'\x00\x00')

    def flag(self, present):
        return self.u8(0xFF if present else 0)

    def aux(self, data=b''):
        return self.u32(len(data)).raw(data)

    def bytes(self):
        return b''.join(self.parts)


# ---------------------------------------------------------------------------
# STAT (MS-OXNSPI 2.2.8), 36 bytes
# ---------------------------------------------------------------------------
STAT_FIELDS = ('SortType', 'ContainerID', 'CurrentRec', 'Delta', 'NumPos', 'TotalRecs',
               'CodePage', 'TemplateLocale', 'SortLocale')


def new_stat(**kw):
    d = dict((k, 0) for k in STAT_FIELDS)
    d.update(CodePage=1252, TemplateLocale=0x409, SortLocale=0x409)
    d.update(kw)
    return d


def read_stat(r):
    d = {}
    for k in STAT_FIELDS:
        d[k] = r.i32() if k == 'Delta' else r.u32()
    return d


def write_stat(w, d):
    for k in STAT_FIELDS:
        if k == 'Delta':
            v = d[k]
            w.i32(v - 0x100000000 if v >= 0x80000000 else v)
        else:
            w.u32(d[k])


def read_opt_stat(r):
    return read_stat(r) if r.flag() else None


def write_opt_stat(w, d):
    w.flag(d is not None)
    if d is not None:
        write_stat(w, d)


def read_tags(r):
    """LargePropertyTagArray: u32 count + u32 tags (also MinimalId arrays)."""
    n = r.count()
    return [r.u32() for _ in range(n)]


def write_tags(w, tags):
    w.u32(len(tags))
    for t in tags:
        w.u32(t)


def read_opt_tags(r):
    return read_tags(r) if r.flag() else None


def write_opt_tags(w, tags):
    w.flag(tags is not None)
    if tags is not None:
        write_tags(w, tags)


# ---------------------------------------------------------------------------
# Address book property values (MS-OXCMAPIHTTP 2.2.1)
# ---------------------------------------------------------------------------
HAS_VALUE_TYPES = (PT_STRING8, PT_UNICODE, PT_BINARY)


def _has_value_byte(ptype):
    return ptype in HAS_VALUE_TYPES or ptype & 0x1000


def write_value(w, ptype, v):
    """AddressBookPropertyValue of type ptype (None for a HasValue type = no value)."""
    if _has_value_byte(ptype):
        w.flag(v is not None)
        if v is None:
            return
    if ptype in (PT_UNSPECIFIED, PT_NULL, PT_OBJECT):
        return
    if ptype == PT_SHORT:
        w.u16(v)
    elif ptype in (PT_LONG, PT_ERROR):
        w.u32(v)
    elif ptype == PT_BOOLEAN:
        w.u8(1 if v else 0)
    elif ptype in (PT_I8, PT_SYSTIME):
        w.u64(v)
    elif ptype == PT_STRING8:
        w.asciiz(v)
    elif ptype == PT_UNICODE:
        w.utf16z(v)
    elif ptype == PT_CLSID:
        w.raw(v)
    elif ptype == PT_BINARY:
        w.u32(len(v)).raw(v)
    elif ptype == PT_MV_LONG:
        w.u32(len(v))
        for x in v:
            w.u32(x)
    elif ptype in (PT_MV_STRING8, PT_MV_UNICODE, PT_MV_BINARY):
        w.u32(len(v))
        for x in v:
            w.flag(x is not None)
            if x is None:
                continue
            if ptype == PT_MV_STRING8:
                w.asciiz(x)
            elif ptype == PT_MV_UNICODE:
                w.utf16z(x)
            else:
                w.u32(len(x)).raw(x)
    else:
        raise BodyError('property type 0x%04x not supported' % ptype)


def read_value(r, ptype):
    if _has_value_byte(ptype):
        hv = r.u8()
        if hv == 0:
            return None
        if hv != 0xFF:
            raise BodyError('bad HasValue byte 0x%02x' % hv)
    if ptype in (PT_UNSPECIFIED, PT_NULL, PT_OBJECT):
        return 0
    if ptype == PT_SHORT:
        return r.u16()
    if ptype in (PT_LONG, PT_ERROR):
        return r.u32()
    if ptype == PT_BOOLEAN:
        return bool(r.u8())
    if ptype in (PT_I8, PT_SYSTIME):
        return r.u64()
    if ptype == PT_STRING8:
        return r.asciiz()
    if ptype == PT_UNICODE:
        return r.utf16z()
    if ptype == PT_CLSID:
        return r.take(16)
    if ptype == PT_BINARY:
        return r.take(r.u32())
    if ptype == PT_MV_LONG:
        return [r.u32() for _ in range(r.count())]
    if ptype in (PT_MV_STRING8, PT_MV_UNICODE, PT_MV_BINARY):
        out = []
        for _ in range(r.count()):
            if not r.flag():
                out.append(None)
            elif ptype == PT_MV_STRING8:
                out.append(r.asciiz())
            elif ptype == PT_MV_UNICODE:
                out.append(r.utf16z())
            else:
                out.append(r.take(r.u32()))
        return out
    raise BodyError('property type 0x%04x not supported' % ptype)


def write_tagged(w, ptag, v):
    w.u32(ptag)
    write_value(w, ptag & 0xFFFF, v)


def read_tagged(r):
    t = r.u32()
    return t, read_value(r, t & 0xFFFF)


def write_value_list(w, pairs):
    """AddressBookPropertyValueList: u32 count + (tag, value)."""
    w.u32(len(pairs))
    for t, v in pairs:
        write_tagged(w, t, v)


def read_value_list(r):
    return [read_tagged(r) for _ in range(r.count())]


# Row values: ('ok', type, value) | ('missing',) | ('error', code)
FLAG_AVAILABLE = 0x0
FLAG_UNAVAILABLE = 0x1
FLAG_ERROR = 0xA


def write_row(w, columns, cells):
    """AddressBookPropertyRow for columns; cells[i] = (out tag, value) where an
    out tag of type PT_ERROR carries the error code."""
    flagged = any(t & 0xFFFF == PT_ERROR for t, _ in cells)
    w.u8(1 if flagged else 0)
    for col, (t, v) in zip(columns, cells):
        ctype = col & 0xFFFF
        otype = t & 0xFFFF
        if not flagged:
            if ctype == PT_UNSPECIFIED:
                w.u16(otype)          # AddressBookTypedPropertyValue
            write_value(w, otype, v)
            continue
        if ctype == PT_UNSPECIFIED:
            # AddressBookFlaggedPropertyValueWithType: type, flag, value
            w.u16(otype if otype != PT_ERROR else PT_ERROR)
        if otype == PT_ERROR:
            w.u8(FLAG_ERROR).u32(v)
        else:
            w.u8(FLAG_AVAILABLE)
            write_value(w, otype, v)


def read_row(r, columns):
    """-> dict tag -> value; errors as ('error', code); missing as ('missing',).
    For PT_UNSPECIFIED columns the key is the tag with the type that came back."""
    flagged = r.u8()
    if flagged not in (0, 1):
        raise BodyError('bad AddressBookPropertyRow flag %d' % flagged)
    out = {}
    for col in columns:
        ctype = col & 0xFFFF
        key = col
        if not flagged:
            if ctype == PT_UNSPECIFIED:
                ctype = r.u16()
                key = (col & 0xFFFF0000) | ctype
            out[key] = read_value(r, ctype)
            continue
        if ctype == PT_UNSPECIFIED:
            ctype = r.u16()
            key = (col & 0xFFFF0000) | ctype
        f = r.u8()
        if f == FLAG_AVAILABLE:
            out[key] = read_value(r, ctype)
        elif f == FLAG_UNAVAILABLE:
            out[key] = ('missing',)
        elif f == FLAG_ERROR:
            out[col] = ('error', r.u32())
        else:
            raise BodyError('bad flagged value flag 0x%x' % f)
    return out


def write_colrows(w, columns, rows):
    """Columns (LargePropertyTagArray) + RowCount + rows (each a list of cells)."""
    write_tags(w, columns)
    w.u32(len(rows))
    for cells in rows:
        write_row(w, columns, cells)


def read_colrows(r):
    cols = read_tags(r)
    n = r.count()
    return cols, [read_row(r, cols) for _ in range(n)]


# ---------------------------------------------------------------------------
# Restrictions (MS-OXCDATA 2.12, 32-bit counts as in the address book protocols)
# Python form: ('and', [..]) ('or', [..]) ('not', r) ('content', fuzzy, tag, (ptag, v))
# ('property', relop, tag, (ptag, v)) ('compare', relop, tag1, tag2)
# ('bitmask', bmr, tag, mask) ('size', relop, tag, size) ('exist', tag)
# ---------------------------------------------------------------------------
def read_restriction(r, depth=0):
    if depth > 32:
        raise BodyError('restriction nested too deeply')
    rt = r.u8()
    if rt in (0, 1):
        n = r.count()
        return ('and' if rt == 0 else 'or', [read_restriction(r, depth + 1) for _ in range(n)])
    if rt == 2:
        return ('not', read_restriction(r, depth + 1))
    if rt == 3:
        fuzzy = r.u32()
        t = r.u32()
        return ('content', fuzzy, t, read_tagged(r))
    if rt == 4:
        op = r.u8()
        t = r.u32()
        return ('property', op, t, read_tagged(r))
    if rt == 5:
        op = r.u8()
        return ('compare', op, r.u32(), r.u32())
    if rt == 6:
        op = r.u8()
        return ('bitmask', op, r.u32(), r.u32())
    if rt == 7:
        op = r.u8()
        return ('size', op, r.u32(), r.u32())
    if rt == 8:
        return ('exist', r.u32())
    raise BodyError('restriction type %d not supported' % rt)


def write_restriction(w, res):
    kind = res[0]
    if kind in ('and', 'or'):
        w.u8(0 if kind == 'and' else 1).u32(len(res[1]))
        for s in res[1]:
            write_restriction(w, s)
    elif kind == 'not':
        w.u8(2)
        write_restriction(w, res[1])
    elif kind == 'content':
        w.u8(3).u32(res[1]).u32(res[2])
        write_tagged(w, *res[3])
    elif kind == 'property':
        w.u8(4).u8(res[1]).u32(res[2])
        write_tagged(w, *res[3])
    elif kind == 'compare':
        w.u8(5).u8(res[1]).u32(res[2]).u32(res[3])
    elif kind == 'bitmask':
        w.u8(6).u8(res[1]).u32(res[2]).u32(res[3])
    elif kind == 'size':
        w.u8(7).u8(res[1]).u32(res[2]).u32(res[3])
    elif kind == 'exist':
        w.u8(8).u32(res[1])
    else:
        raise ValueError('unknown restriction %r' % (kind,))
