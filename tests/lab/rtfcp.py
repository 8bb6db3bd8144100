"""Compressed RTF (MS-OXRTFCP), written from the specification.

compress(raw) -> bytes   LZFu stream (section 2.1.3.1, compressor of 3.1.3)
decompress(data) -> bytes  LZFu or MELA (uncompressed) stream
The section-4 examples are checked in tests/lab/test_lab_content.py.
"""

import struct

# The dictionary's initial content (MS-OXRTFCP 3.1.1.1.1), 207 bytes.
PREBUF = (b'{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman '
          b'\\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New '
          b'RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par '
          b'\\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx')
assert len(PREBUF) == 207

COMPRESSED = 0x75465A4C    # 'LZFu'
UNCOMPRESSED = 0x414C454D  # 'MELA'


def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t.append(c)
    return t


_TABLE = _crc_table()


def crc32(data):
    """The CRC of 3.1.3.2: starts at 0, no final inversion."""
    crc = 0
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _longest_match(dic, write, raw, pos):
    """Longest run (2..17) of raw[pos:] found in the dictionary; a match may
    run into the bytes it writes itself (3.1.3.1 example 2)."""
    best_len, best_off = 0, 0
    limit = min(17, len(raw) - pos)
    if limit < 2:
        return 0, 0
    for start in range(4096):
        if start == write:
            continue
        # compare, simulating the dictionary being written as we match
        n = 0
        while n < limit:
            idx = (start + n) % 4096
            # bytes past the write position come from the match itself
            d = (idx - write) % 4096
            if d < n:
                c = raw[pos + d]
            else:
                c = dic[idx]
            if c != raw[pos + n]:
                break
            n += 1
        if n > best_len:
            best_len, best_off = n, start
            if n == limit:
                break
    return best_len, best_off


def compress(raw):
    raw = bytes(raw)
    dic = bytearray(4096)
    dic[:207] = PREBUF
    write = 207
    out = bytearray()
    pos = 0
    done = False
    while not done:
        ctrl_at = len(out)
        out.append(0)
        ctrl = 0
        for bit in range(8):
            if pos >= len(raw):
                # the end token: a reference to the write position
                ctrl |= 1 << bit
                out += struct.pack('>H', write << 4)
                done = True
                break
            n, off = _longest_match(dic, write, raw, pos)
            if n >= 2:
                ctrl |= 1 << bit
                out += struct.pack('>H', (off << 4) | (n - 2))
                for k in range(n):
                    dic[write] = raw[pos + k]
                    write = (write + 1) % 4096
                pos += n
            else:
                out.append(raw[pos])
                dic[write] = raw[pos]
                write = (write + 1) % 4096
                pos += 1
        out[ctrl_at] = ctrl
    body = bytes(out)
    return struct.pack('<LLLL', len(body) + 12, len(raw), COMPRESSED, crc32(body)) + body


def decompress(data):
    data = bytes(data)
    if len(data) < 16:
        raise ValueError('compressed RTF shorter than its header')
    comp_size, raw_size, ctype, crc = struct.unpack('<LLLL', data[:16])
    if comp_size < 12 or comp_size + 4 > len(data):
        raise ValueError('COMPSIZE %d past the data' % comp_size)
    body = data[16:comp_size + 4]
    if ctype == UNCOMPRESSED:
        return body[:raw_size]
    if ctype != COMPRESSED:
        raise ValueError('unknown COMPTYPE 0x%08x' % ctype)
    if crc32(body) != crc:
        raise ValueError('CRC mismatch')
    dic = bytearray(4096)
    dic[:207] = PREBUF
    write = 207
    out = bytearray()
    i = 0
    while i < len(body):
        ctrl = body[i]
        i += 1
        for bit in range(8):
            if ctrl & (1 << bit):
                if i + 2 > len(body):
                    raise ValueError('truncated reference')
                ref = struct.unpack('>H', body[i:i + 2])[0]
                i += 2
                off, n = ref >> 4, (ref & 0xF) + 2
                if off == write:
                    return bytes(out)
                for k in range(n):
                    c = dic[(off + k) % 4096]
                    out.append(c)
                    dic[write] = c
                    write = (write + 1) % 4096
            else:
                if i >= len(body):
                    raise ValueError('truncated literal')
                c = body[i]
                i += 1
                out.append(c)
                dic[write] = c
                write = (write + 1) % 4096
    raise ValueError('no end token')


# MS-OXRTFCP section 4 examples.
SPEC_EXAMPLE_1 = (b'{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n', bytes.fromhex(
    '2d0000002b0000004c5a4675f1c5c7a703000a0072637067313235423'
    '20af32068656c0900206277 05b06c647d0a800fa0'.replace(' ', '')))
SPEC_EXAMPLE_2 = (b'{\\rtf1 WXYZWXYZWXYZWXYZWXYZ}', bytes.fromhex(
    '1a0000001c0000004c5a4675e2d44b51410004205758595a0d6e7d010eb0'))
