"""LZ77 + DIRECT2 (MS-OXCRPC 3.1.7.2), i.e. MS-XCA "Plain LZ77", in pure Python.

Written from the MS-XCA 2.3/2.4 pseudocode: 32-bit flag words (MSB first;
0 = literal byte, 1 = match), a match is a u16 with (offset-1) << 3 | length-3
in the low 3 bits, with length extensions through a shared half byte, a byte,
a u16 and a u32.
"""

import struct


class LzError(ValueError):
    pass


def decompress(data, expected_size=None):
    data = bytes(data)
    out = bytearray()
    n = len(data)
    pos = 0
    flags = 0
    flag_count = 0
    last_half = 0       # position of the shared half byte, 0 if none pending
    while True:
        if flag_count == 0:
            if pos + 4 > n:
                if pos == n:
                    break
                raise LzError('truncated flag word at %d' % pos)
            flags = struct.unpack_from('<L', data, pos)[0]
            pos += 4
            flag_count = 32
        flag_count -= 1
        if not flags & (1 << flag_count):
            if pos >= n:
                break
            out.append(data[pos])
            pos += 1
        else:
            if pos == n:
                break
            if pos + 2 > n:
                raise LzError('truncated match at %d' % pos)
            match = struct.unpack_from('<H', data, pos)[0]
            pos += 2
            length = match & 7
            offset = (match >> 3) + 1
            if length == 7:
                if last_half == 0:
                    if pos >= n:
                        raise LzError('truncated length nibble')
                    length = data[pos] & 0x0F
                    last_half = pos
                    pos += 1
                else:
                    length = data[last_half] >> 4
                    last_half = 0
                if length == 15:
                    if pos >= n:
                        raise LzError('truncated length byte')
                    length = data[pos]
                    pos += 1
                    if length == 255:
                        if pos + 2 > n:
                            raise LzError('truncated length u16')
                        length = struct.unpack_from('<H', data, pos)[0]
                        pos += 2
                        if length == 0:
                            if pos + 4 > n:
                                raise LzError('truncated length u32')
                            length = struct.unpack_from('<L', data, pos)[0]
                            pos += 4
                        if length < 15 + 7:
                            raise LzError('bad extended length %d' % length)
                        length -= 15 + 7
                    length += 15
                length += 7
            length += 3
            if offset > len(out):
                raise LzError('match offset %d beyond output %d' % (offset, len(out)))
            start = len(out) - offset
            if offset >= length:
                out += out[start:start + length]
            else:
                for i in range(length):
                    out.append(out[start + i])
        if expected_size is not None and len(out) > expected_size:
            raise LzError('output exceeds expected size %d' % expected_size)
    if expected_size is not None and len(out) != expected_size:
        raise LzError('decompressed %d bytes, expected %d' % (len(out), expected_size))
    return bytes(out)


MAX_OFFSET = 8192
MIN_MATCH = 3


def compress(data):
    """Greedy LZ77 with a hash chain over 3-byte prefixes (window 8 KB)."""
    data = bytes(data)
    n = len(data)
    out = bytearray(b'\x00\x00\x00\x00')
    flag_pos = 0
    flags = 0
    flag_count = 0
    half_pos = 0            # output position of a half-used nibble byte, 0 if none
    heads = {}
    i = 0

    def put_flag(bit):
        nonlocal flags, flag_count, flag_pos
        if flag_count == 32:
            struct.pack_into('<L', out, flag_pos, flags)
            flag_pos = len(out)
            out.extend(b'\x00\x00\x00\x00')
            flags = 0
            flag_count = 0
        flags = (flags << 1) | bit
        flag_count += 1

    while i < n:
        best_len = 0
        best_off = 0
        if i + MIN_MATCH <= n:
            key = data[i:i + 3]
            cands = heads.get(key)
            if cands:
                limit = min(n - i, 65535 + 3)
                for j in reversed(cands[-16:]):
                    off = i - j
                    if off > MAX_OFFSET:
                        break
                    ln = 3
                    while ln < limit and data[j + ln] == data[i + ln]:
                        ln += 1
                    if ln > best_len:
                        best_len, best_off = ln, off
                        if ln == limit:
                            break
        if best_len >= MIN_MATCH:
            put_flag(1)
            ml = best_len - 3
            if ml < 7:
                out += struct.pack('<H', ((best_off - 1) << 3) | ml)
            else:
                out += struct.pack('<H', ((best_off - 1) << 3) | 7)
                ml -= 7
                nib = min(ml, 15)
                if half_pos == 0:
                    half_pos = len(out)
                    out.append(nib)
                else:
                    out[half_pos] |= nib << 4
                    half_pos = 0
                if ml >= 15:
                    ml -= 15
                    if ml < 255:
                        out.append(ml)
                    else:
                        out.append(255)
                        total = best_len - 3
                        if total < 0x10000:
                            out += struct.pack('<H', total)
                        else:
                            out += struct.pack('<HL', 0, total)
            for k in range(i, min(i + best_len, n - 2)):
                heads.setdefault(data[k:k + 3], []).append(k)
            i += best_len
        else:
            put_flag(0)
            out.append(data[i])
            if i + 3 <= n:
                heads.setdefault(data[i:i + 3], []).append(i)
            i += 1
    # Terminate: pad the last flag word with 1 bits (decoder stops at end of input).
    if flag_count == 32:
        struct.pack_into('<L', out, flag_pos, flags)
        flag_pos = len(out)
        out.extend(b'\x00\x00\x00\x00')
        flags = 0
        flag_count = 0
    flags = (flags << (32 - flag_count)) | ((1 << (32 - flag_count)) - 1)
    struct.pack_into('<L', out, flag_pos, flags & 0xFFFFFFFF)
    return bytes(out)
