"""Small hand-rolled NDR (transfer syntax 2.0, little endian) writer/reader.

Used where building a stub by hand is clearer than Impacket's classes
(endpoint mapper towers, RFR strings).  Alignment is relative to the start of
the stub, as required by C706 14.2.
"""

import os
import struct

from rpcserver import StubError


class NdrWriter(object):
    def __init__(self):
        self.buf = bytearray()
        self._ref = 0x00020000

    def align(self, n):
        pad = (-len(self.buf)) % n
        self.buf += b'\x00' * pad

    def u8(self, v):
        self.buf += struct.pack('<B', v)

    def u16(self, v):
        self.align(2)
        self.buf += struct.pack('<H', v & 0xffff)

    def u32(self, v):
        self.align(4)
        self.buf += struct.pack('<L', v & 0xffffffff)

    def raw(self, b):
        self.buf += b

    def refid(self, present=True):
        """A unique/full pointer's referent id (0 for NULL)."""
        if not present:
            self.u32(0)
            return
        self._ref += 4
        self.u32(self._ref)

    def cv_string(self, s):
        """Conformant varying [string] char array (max, offset, actual, bytes incl. NUL)."""
        if isinstance(s, str):
            s = s.encode('utf-8')
        s = s + b'\x00'
        self.u32(len(s))
        self.u32(0)
        self.u32(len(s))
        self.raw(s)

    def cv_bytes(self, data, maxcount=None):
        """Conformant varying byte array."""
        self.u32(len(data) if maxcount is None else maxcount)
        self.u32(0)
        self.u32(len(data))
        self.raw(data)

    def context_handle(self, h):
        assert len(h) == 20
        self.align(4)
        self.raw(h)

    def getvalue(self):
        return bytes(self.buf)


class NdrReader(object):
    def __init__(self, data):
        self.data = data
        self.off = 0

    def align(self, n):
        self.off += (-self.off) % n

    def take(self, n):
        if n < 0 or self.off + n > len(self.data):
            raise StubError('stub too short (need %d at %d, have %d)' % (n, self.off,
                                                                         len(self.data)))
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        self.align(2)
        return struct.unpack('<H', self.take(2))[0]

    def u32(self):
        self.align(4)
        return struct.unpack('<L', self.take(4))[0]

    def context_handle(self):
        self.align(4)
        return self.take(20)

    def cv_string(self):
        maxc = self.u32()
        offset = self.u32()
        actual = self.u32()
        if offset != 0 or actual > maxc:
            raise StubError('bad string bounds max=%d off=%d actual=%d' % (maxc, offset, actual))
        s = self.take(actual)
        if s.endswith(b'\x00'):
            s = s[:-1]
        return s

    def c_bytes(self):
        """Conformant byte array (max count then bytes)."""
        maxc = self.u32()
        return maxc, self.take(maxc)

    def remaining(self):
        return len(self.data) - self.off
