"""RPC over HTTP v2 (MS-RPCH) in front of the lab's RPC listeners.

One HTTP(S) listener on /rpc/rpcproxy.dll plays the inbound proxy, the
outbound proxy and the server role at once (MS-RPCH 3.2.3 to 3.2.5 merged):

- RPC_OUT_DATA: the client's CONN/A1 (2.2.4.2) opens a virtual connection
  under its VirtualConnectionCookie; the answer is a 200 with a large
  Content-Length, CONN/A3 (2.2.4.4) at once, CONN/C2 (2.2.4.9) once the IN
  channel has come, then the server's PDUs.
- RPC_IN_DATA: the client's CONN/B1 (2.2.4.5) names the same cookie; the
  lab connects to the RPC listener named by the request's ?server:port
  (6001 emsmdb, 6002 rfr, 6004 nspi, 593 epm, or a listener's own port) and
  relays every non-RTS PDU to it.
- Flow control (3.2.1.1.4 / 3.2.2.1.4): the OUT channel never has more
  unacknowledged RPC bytes than the client's receive window (CONN/A1, then
  its FlowControlAckWithDestination PDUs); the IN channel acknowledges the
  client's bytes with FlowControlAck on the OUT channel every half window.
- Ping and Keep-Alive PDUs on the IN channel are accepted; channel
  recycling (IN_R1/OUT_R1) is answered by closing the virtual connection.

HTTP authentication (Basic, NTLM on the connection) is lab_mapihttp's.
Written from the specification; it shares no code with src/.
"""

import socket
import struct
import threading
import time

import lab_mapihttp
from rpcserver import log

RTS_PTYPE = 20
FLAG_NONE, FLAG_PING, FLAG_OTHER_CMD, FLAG_RECYCLE = 0, 1, 2, 4
# command types (2.2.3.5) and fixed body sizes
CMD_SIZES = {0: 4, 1: 24, 2: 4, 3: 16, 4: 4, 5: 4, 6: 4, 7: 0, 9: 0, 10: 0, 12: 16, 13: 4, 14: 4}
RECEIVE_WINDOW = 65536
CONNECTION_TIMEOUT = 120000
PAIR_WAIT = 10.0          # seconds a channel waits for its partner
EXCHANGE_PORTS = {6001: 'emsmdb', 6002: 'rfr', 6004: 'nspi', 593: 'epm'}


class RtsError(Exception):
    pass


def rts_pdu(flags, cmds):
    """cmds: list of (type, body bytes)."""
    body = b''.join(struct.pack('<L', t) + b for t, b in cmds)
    return struct.pack('<BBBB4sHHLHH', 5, 0, RTS_PTYPE, 3, b'\x10\0\0\0', 20 + len(body), 0, 0,
                       flags, len(cmds)) + body


def rts_parse(pdu):
    """-> (flags, [(type, body)]); RtsError when malformed."""
    if len(pdu) < 20 or pdu[2] != RTS_PTYPE:
        raise RtsError('not an RTS PDU')
    flags, n = struct.unpack('<HH', pdu[16:20])
    off, cmds = 20, []
    for _ in range(n):
        if off + 4 > len(pdu):
            raise RtsError('command truncated')
        t = struct.unpack('<L', pdu[off:off + 4])[0]
        off += 4
        if t == 8:                           # Padding
            if off + 4 > len(pdu):
                raise RtsError('padding truncated')
            size = 4 + struct.unpack('<L', pdu[off:off + 4])[0]
        elif t == 11:                        # ClientAddress
            if off + 4 > len(pdu):
                raise RtsError('address truncated')
            size = 4 + (4 if pdu[off] == 0 else 16) + 12
        elif t in CMD_SIZES:
            size = CMD_SIZES[t]
        else:
            raise RtsError('unknown command %d' % t)
        if off + size > len(pdu):
            raise RtsError('command %d truncated' % t)
        cmds.append((t, pdu[off:off + size]))
        off += size
    if off != len(pdu):
        raise RtsError('%d bytes after the commands' % (len(pdu) - off))
    return flags, cmds


def u32(b):
    return struct.unpack('<L', b[:4])[0]


class VConn(object):
    """One virtual connection: its OUT channel writer, the backend socket."""

    def __init__(self, cookie):
        self.cookie = cookie
        self.lock = threading.Condition()
        self.out_wfile = None
        self.out_window = RECEIVE_WINDOW   # the client's (CONN/A1, then acks)
        self.out_sent = 0                  # RPC bytes sent on OUT
        self.out_acked = 0                 # BytesReceived of the last ack
        self.in_received = 0
        self.in_acked = 0
        self.in_cookie = None
        self.backend = None
        self.ready = threading.Event()     # the IN channel came and the backend is up
        self.closed = False

    def send_out(self, data, rpc):
        with self.lock:
            if rpc:
                while not self.closed and \
                        self.out_sent + len(data) - self.out_acked > self.out_window:
                    if not self.lock.wait(30):
                        raise RtsError('client never acknowledged its window')
                self.out_sent += len(data)
            if self.closed:
                raise RtsError('closed')
            self.out_wfile.write(data)
            self.out_wfile.flush()

    def close(self):
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        if self.backend is not None:
            try:
                self.backend.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RpchServer(object):
    """Attributes lab_mapihttp's handler reads: config, auth_modes, userdb, tls."""

    def __init__(self, config, host='127.0.0.1', port=0, tls_cert=None, tls_key=None,
                 auth_modes=('ntlm', 'basic'), userdb=None):
        self.config = config
        self.auth_modes = tuple(m for m in auth_modes if m != 'none')
        self.userdb = userdb
        self.tls = None
        if tls_cert:
            import ssl
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(tls_cert, tls_key)
        self.vconns = {}
        self.lock = threading.Lock()
        self.httpd = lab_mapihttp._Httpd((host, port), _RpchHandler, self)
        self.port = self.httpd.server_address[1]

    def start(self):
        t = threading.Thread(target=self.httpd.serve_forever, name='rpch',
                             kwargs={'poll_interval': 0.2}, daemon=True)
        t.start()
        log('rpch: listening on %s:%d (%s, auth %s)' % (
            self.httpd.server_address[0], self.port, 'https' if self.tls else 'http',
            ','.join(self.auth_modes) or 'none'))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            vcs = list(self.vconns.values())
        for vc in vcs:
            vc.close()

    def backend_port(self, target):
        """'EXLAB01:6004' -> the lab listener's port, or None."""
        name, _, port = target.rpartition(':')
        try:
            port = int(port)
        except ValueError:
            return None
        c = self.config
        if name.lower() not in (c.server_name.lower(), c.fqdn.lower()):
            return None
        if port in EXCHANGE_PORTS:
            return c.ports.get(EXCHANGE_PORTS[port])
        return port if port in c.ports.values() else None


class _RpchHandler(lab_mapihttp._Handler):
    def handle_expect_100(self):
        return True      # 100 Continue only after the logon (_channel), as IIS does

    def do_RPC_OUT_DATA(self):
        self._channel(out=True)

    def do_RPC_IN_DATA(self):
        self._channel(out=False)

    def _dispatch(self):
        self._send_simple(404, b'not found\r\n')

    def _read_pdu(self, left):
        hdr = self.rfile.read(16)
        if len(hdr) < 16:
            return None
        if hdr[0] != 5 or hdr[4] & 0xf0 != 0x10:
            raise RtsError('not a DCE/RPC v5 little-endian PDU')
        frag = struct.unpack('<H', hdr[8:10])[0]
        if frag < 16 or frag > left:
            raise RtsError('frag_length %d (%d bytes left in the channel)' % (frag, left))
        rest = self.rfile.read(frag - 16)
        if len(rest) < frag - 16:
            return None
        return hdr + rest

    def _channel(self, out):
        name = 'OUT' if out else 'IN'
        path, _, query = self.path.partition('?')
        if path.lower() != '/rpc/rpcproxy.dll':
            return self._send_simple(404, b'not found\r\n')
        ok, ident = self._authenticate()
        if not ok:
            return
        try:
            length = int(self.headers.get('Content-Length', '0'))
        except ValueError:
            length = 0
        if length <= 0:
            # an NTLM leg may come without a body; nothing to do
            return self._send_simple(200 if not ident else 400, b'')
        self.close_connection = True
        if self.headers.get('Expect', '').lower() == '100-continue':
            self.wfile.write(b'HTTP/1.1 100 Continue\r\n\r\n')
            self.wfile.flush()
        target = self.server.lab.backend_port(query)
        log('rpch: %s channel %s user=%s length=%d' % (name, query, ident, length))
        if target is None:
            log('rpch: %s channel: target %r refused' % (name, query))
            return self._send_simple(503, b'RPC Error: 6ba\r\n')
        try:
            if out:
                self._out_channel(length)
            else:
                self._in_channel(length, target)
        except (RtsError, OSError) as e:
            log('rpch: %s channel error: %s' % (name, e))

    def _register(self, cookie, create):
        lab = self.server.lab
        with lab.lock:
            vc = lab.vconns.get(cookie)
            if vc is None and create:
                vc = lab.vconns[cookie] = VConn(cookie)
            return vc

    def _out_channel(self, length):
        pdu = self._read_pdu(length)
        if pdu is None:
            raise RtsError('OUT channel closed before CONN/A1')
        flags, cmds = rts_parse(pdu)
        if [t for t, _ in cmds] != [6, 3, 3, 0]:
            raise RtsError('OUT channel: expected CONN/A1, got flags %d commands %s'
                           % (flags, [t for t, _ in cmds]))
        cookie = cmds[1][1]
        vc = self._register(cookie, True)
        vc.out_window = u32(cmds[3][1])
        vc.out_wfile = self.wfile
        self.wfile.write(b'HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n'
                         b'Content-Length: 1073741824\r\n\r\n')
        vc.send_out(rts_pdu(FLAG_NONE, [(2, struct.pack('<L', CONNECTION_TIMEOUT))]), False)
        if not vc.ready.wait(PAIR_WAIT):
            vc.close()
            self._forget(vc)
            raise RtsError('virtual connection %s: no IN channel within %d s'
                           % (cookie.hex(), PAIR_WAIT))
        vc.send_out(rts_pdu(FLAG_NONE, [(6, struct.pack('<L', 1)),
                                        (0, struct.pack('<L', RECEIVE_WINDOW)),
                                        (2, struct.pack('<L', CONNECTION_TIMEOUT))]), False)
        log('rpch: virtual connection %s established' % cookie.hex())
        try:
            self._pump(vc)
        finally:
            vc.close()
            self._forget(vc)

    def _forget(self, vc):
        lab = self.server.lab
        with lab.lock:
            if lab.vconns.get(vc.cookie) is vc:
                del lab.vconns[vc.cookie]

    def _pump(self, vc):
        """Backend -> OUT channel, PDU by PDU under the client's window."""
        buf = b''
        while True:
            try:
                data = vc.backend.recv(65536)
            except OSError:
                data = b''
            if not data:
                log('rpch: %s: server closed' % vc.cookie.hex())
                return
            buf += data
            while len(buf) >= 10:
                frag = struct.unpack('<H', buf[8:10])[0]
                if frag < 16:
                    raise RtsError('server sent frag_length %d' % frag)
                if len(buf) < frag:
                    break
                vc.send_out(buf[:frag], True)
                buf = buf[frag:]

    def _in_channel(self, length, target):
        pdu = self._read_pdu(length)
        if pdu is None:
            raise RtsError('IN channel closed before CONN/B1')
        left = length - len(pdu)
        flags, cmds = rts_parse(pdu)
        if [t for t, _ in cmds] != [6, 3, 3, 4, 5, 12]:
            raise RtsError('IN channel: expected CONN/B1, got flags %d commands %s'
                           % (flags, [t for t, _ in cmds]))
        cookie = cmds[1][1]
        vc = None
        deadline = time.time() + PAIR_WAIT
        while vc is None and time.time() < deadline:
            vc = self._register(cookie, False)
            if vc is None:
                time.sleep(0.05)
        if vc is None:
            raise RtsError('CONN/B1 for unknown virtual connection %s' % cookie.hex())
        vc.in_cookie = cmds[2][1]
        vc.backend = socket.create_connection(('127.0.0.1', target), timeout=10)
        vc.backend.settimeout(None)
        vc.ready.set()
        try:
            while left > 0 and not vc.closed:
                pdu = self._read_pdu(left)
                if pdu is None:
                    return
                left -= len(pdu)
                if pdu[2] == RTS_PTYPE:
                    self._in_rts(vc, pdu)
                    continue
                vc.backend.sendall(pdu)
                vc.in_received += len(pdu)
                if vc.in_received - vc.in_acked > RECEIVE_WINDOW:
                    raise RtsError('client overran the IN window (%d unacknowledged bytes)'
                                   % (vc.in_received - vc.in_acked))
                if vc.in_received - vc.in_acked >= RECEIVE_WINDOW // 2:
                    vc.in_acked = vc.in_received
                    ack = struct.pack('<LL', vc.in_received, RECEIVE_WINDOW) + vc.in_cookie
                    vc.send_out(rts_pdu(FLAG_OTHER_CMD, [(1, ack)]), False)
        finally:
            vc.close()

    def _in_rts(self, vc, pdu):
        flags, cmds = rts_parse(pdu)
        types = [t for t, _ in cmds]
        if flags & FLAG_PING or types == [5]:
            return                                 # Ping, Keep-Alive
        if types == [13, 1]:                       # FlowControlAckWithDestination
            body = cmds[1][1]
            with vc.lock:
                vc.out_acked = u32(body[0:4])
                vc.out_window = u32(body[4:8])
                vc.lock.notify_all()
            return
        if flags & FLAG_RECYCLE:
            raise RtsError('channel recycling is not supported by the lab')
        log('rpch: IN channel: RTS flags %d commands %s ignored' % (flags, types))
