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
- Ping and Keep-Alive PDUs on the IN channel are accepted.
- Channel recycling, the server side (inbound, outbound proxy and server
  merged):
  IN_R1: a new RPC_IN_DATA starting with IN_R1/A1 (2.2.4.10) naming the
  live IN channel gets IN_R1/A4 (2.2.4.13) on the OUT channel; its PDUs wait
  until IN_R1/A5 (2.2.4.14) ends the predecessor, then it is the IN channel
  (flow control counted from 0 under its cookie).
  OUT_R1: the OUT answer's Content-Length is out_length; before an RPC PDU
  would leave less than OUT_RESERVE of it, OUT_R1/A2 (2.2.4.24) goes out
  and RPC PDUs wait; a new RPC_OUT_DATA with OUT_R1/A3 (2.2.4.25) gets
  OUT_R1/A6 (2.2.4.28) on the predecessor; OUT_R1/A7 (2.2.4.29) on the IN
  channel gets OUT_R1/A10 (2.2.4.32) on the predecessor, which is then
  closed (3.2.4.5.x: the outbound proxy closes it after A10); the successor
  gets its answer head, its OUT_R1/A11 (2.2.4.33) is read, and RPC PDUs go
  on under the window of A3.
  OUT_R2 (out_recycling='r2', --rpch-out-recycling r2): what a single RPC
  proxy that finds the virtual connection cookie of OUT_R2/A3 runs
  (3.2.4.5.6.1): the same A2 and A3, then OUT_R2/A6 (2.2.4.39: Destination
  FDClient, ANCE) on the predecessor; the client's OUT_R2/A7 (2.2.4.40) on
  the IN channel gets OUT_R2/B3 (2.2.4.44: EOF flag, ANCE) as the
  predecessor's last PDU (3.2.4.5.10, the server's B1 being internal here),
  then the successor's answer head; the successor carries OUT_R2/C1
  (2.2.4.45: PING flag, Empty or Padding, the size of OUT_R1/A11), before
  or after the switch (B1OrC1W / R2C1W).

HTTP authentication (Basic, NTLM on the connection, Negotiate with Kerberos)
is lab_mapihttp's.
Written from the specification; it shares no code with src/.
"""

import base64
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
FLAG_OUT_CHANNEL = 0x10
FLAG_EOF = 0x20
FD_CLIENT, FD_SERVER = 0, 2
OUT_RESERVE = 512         # OUT channel bytes kept for RTS PDUs once OUT_R1/A2 is out
RECYCLE_WAIT = 30.0


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

    def __init__(self, cookie, out_length):
        self.cookie = cookie
        self.lock = threading.Condition()
        self.out_wfile = None
        self.out_cookie = None
        self.out_length = out_length       # the OUT answers' Content-Length
        self.out_chan_sent = 0             # bytes written on the current OUT channel
        self.out_window = RECEIVE_WINDOW   # the client's (CONN/A1, then acks)
        self.out_sent = 0                  # RPC bytes sent on OUT
        self.out_acked = 0                 # BytesReceived of the last ack
        self.out_state = None              # None, 'a2' (A2 sent), 'a6' (OUT_R1/A6 or OUT_R2/A6 sent)
        self.out_done = None               # set: the current OUT channel's thread ends
        self.out_next = None               # (wfile, cookie, window, done, switched)
        self.out_recycles = 0
        self.in_received = 0
        self.in_acked = 0
        self.in_cookie = None
        self.in_next = None                # successor IN cookie while IN_R1 runs
        self.in_switch = None              # set when IN_R1/A5 ended the predecessor
        self.in_recycles = 0
        self.backend = None
        self.ready = threading.Event()     # the IN channel came and the backend is up
        self.closed = False

    def _write(self, data):
        """Under self.lock: bytes on the current OUT channel, within its length."""
        if self.out_chan_sent + len(data) > self.out_length:
            raise RtsError('OUT channel Content-Length used up')
        self.out_chan_sent += len(data)
        self.out_wfile.write(data)
        self.out_wfile.flush()

    def send_out(self, data, rpc):
        with self.lock:
            while rpc:
                if self.closed:
                    raise RtsError('closed')
                if self.out_state is None and \
                        self.out_chan_sent + len(data) + OUT_RESERVE > self.out_length:
                    if len(data) + 2 * OUT_RESERVE > self.out_length:
                        raise RtsError('a PDU of %d bytes does not fit an OUT channel' % len(data))
                    self.out_state = 'a2'           # OUT_R1/A2: RECYCLE_CHANNEL, FDClient
                    self._write(rts_pdu(FLAG_RECYCLE, [(13, struct.pack('<L', FD_CLIENT))]))
                    log('rpch: %s: OUT_R1/A2 sent' % self.cookie.hex())
                if self.out_state is None and \
                        self.out_sent + len(data) - self.out_acked <= self.out_window:
                    break
                if not self.lock.wait(RECYCLE_WAIT):
                    raise RtsError('client never acknowledged its window or never recycled')
            if rpc:
                self.out_sent += len(data)
            if self.closed:
                raise RtsError('closed')
            self._write(data)

    def close(self):
        with self.lock:
            self.closed = True
            self.lock.notify_all()
            if self.out_done is not None:
                self.out_done.set()
            if self.out_next is not None:
                self.out_next[3].set()
            if self.in_switch is not None:
                self.in_switch.set()
        if self.backend is not None:
            try:
                self.backend.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RpchServer(object):
    keytab = None      # --keytab: the Negotiate (Kerberos) acceptor's keys
    """Attributes lab_mapihttp's handler reads: config, auth_modes, userdb, tls."""

    def __init__(self, config, host='127.0.0.1', port=0, tls_cert=None, tls_key=None,
                 auth_modes=('ntlm', 'basic'), userdb=None, out_length=1 << 30,
                 out_recycling='r1'):
        self.config = config
        self.out_length = out_length
        if out_recycling not in ('r1', 'r2'):
            raise ValueError('out_recycling: r1 or r2')
        self.out_r2 = out_recycling == 'r2'     # OUT_R2 instead of OUT_R1
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
                vc = lab.vconns[cookie] = VConn(cookie, lab.out_length)
            return vc

    def _out_head(self, vc):
        mutual = b''
        if self.neg_token:      # RFC 4559 5: the acceptor's token with the answer
            mutual = b'WWW-Authenticate: Negotiate %s\r\n' % base64.b64encode(self.neg_token)
        return (b'HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n' + mutual +
                b'Content-Length: %d\r\n\r\n' % vc.out_length)

    def _out_channel(self, length):
        pdu = self._read_pdu(length)
        if pdu is None:
            raise RtsError('OUT channel closed before CONN/A1')
        flags, cmds = rts_parse(pdu)
        types = [t for t, _ in cmds]
        if flags == FLAG_RECYCLE and types == [6, 3, 3, 3, 0]:
            return self._out_successor(cmds, length - len(pdu))
        if types != [6, 3, 3, 0]:
            raise RtsError('OUT channel: expected CONN/A1, got flags %d commands %s'
                           % (flags, types))
        cookie = cmds[1][1]
        vc = self._register(cookie, True)
        vc.out_window = u32(cmds[3][1])
        vc.out_cookie = cmds[2][1]
        vc.out_wfile = self.wfile
        done = vc.out_done = threading.Event()
        self.wfile.write(self._out_head(vc))
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
        threading.Thread(target=self._pump_thread, args=(vc,), daemon=True).start()
        done.wait()        # until the virtual connection ends or OUT_R1/A10 retires it

    def _pump_thread(self, vc):
        try:
            self._pump(vc)
        except (RtsError, OSError) as e:
            log('rpch: %s: OUT channel error: %s' % (vc.cookie.hex(), e))
        finally:
            vc.close()
            self._forget(vc)

    def _out_successor(self, cmds, left):
        """OUT_R1/A3 on a new RPC_OUT_DATA: OUT_R1/A6 (OUT_R2: OUT_R2/A6) on the
        predecessor; the switch comes with the client's OUT_R1/A7 (OUT_R2/A7)
        on the IN channel."""
        r2 = self.server.lab.out_r2
        vc = self._register(cmds[1][1], False)
        if vc is None:
            raise RtsError('OUT_R1/A3 for an unknown virtual connection')
        window = u32(cmds[4][1])
        if not 0x2000 <= window <= 0x40000:
            raise RtsError('OUT_R1/A3 ReceiveWindowSize %d out of range' % window)
        done, switched = threading.Event(), threading.Event()
        with vc.lock:
            if vc.out_state != 'a2':
                raise RtsError('OUT_R1/A3 without OUT_R1/A2')
            if cmds[2][1] != vc.out_cookie:
                raise RtsError('OUT_R1/A3 names another predecessor OUT channel')
            vc.out_next = (self.wfile, cmds[3][1], window, done, switched)
            vc.out_state = 'a6'
            if r2:     # OUT_R2/A6: Destination FDClient, ANCE
                vc._write(rts_pdu(FLAG_NONE, [(13, struct.pack('<L', FD_CLIENT)), (10, b'')]))
            else:      # OUT_R1/A6: OUT_CHANNEL; Destination FDClient, Version, ConnectionTimeout
                vc._write(rts_pdu(FLAG_OUT_CHANNEL, [(13, struct.pack('<L', FD_CLIENT)),
                                                     (6, struct.pack('<L', 1)),
                                                     (2, struct.pack('<L', CONNECTION_TIMEOUT))]))
        if r2:
            # OUT_R2/C1, the successor's last PDU: before or after the switch
            c1 = self._read_pdu(left)
            if c1 is None or len(c1) != 24 or rts_parse(c1)[0] != FLAG_PING or \
                    [t for t, _ in rts_parse(c1)[1]] not in ([7], [8]):
                vc.close()
                raise RtsError('successor OUT channel: expected OUT_R2/C1')
        if not switched.wait(RECYCLE_WAIT) or vc.closed:
            vc.close()
            raise RtsError('%s: no OUT_R1/A7 for the successor OUT channel' % vc.cookie.hex())
        if r2:
            done.wait()
            return
        a11 = self._read_pdu(left)
        if a11 is None or rts_parse(a11) != (FLAG_NONE, [(10, b'')]):
            vc.close()
            raise RtsError('successor OUT channel: expected OUT_R1/A11')
        done.wait()

    def _out_a7(self, vc, cmds):
        """OUT_R1/A7 (IN channel): OUT_R1/A10 ends the predecessor, the
        successor is the OUT channel.  OUT_R2/A7 (the same layout): OUT_R2/B3
        ends it instead."""
        with vc.lock:
            if vc.out_state != 'a6' or u32(cmds[0][1]) != FD_SERVER:
                raise RtsError('OUT_R1/A7 without OUT_R1/A3')
            wfile, cookie, window, done, switched = vc.out_next
            if cmds[1][1] != cookie:
                raise RtsError('OUT_R1/A7 names another successor OUT channel')
            # OUT_R1/A10 (ANCE), or OUT_R2/B3 (EOF, ANCE)
            vc._write(rts_pdu(FLAG_EOF if self.server.lab.out_r2 else FLAG_NONE, [(10, b'')]))
            vc.out_done.set()                               # its thread closes it
            vc.out_wfile, vc.out_cookie, vc.out_window, vc.out_done = wfile, cookie, window, done
            vc.out_next = None
            vc.out_chan_sent = vc.out_sent = vc.out_acked = 0
            vc.out_state = None
            vc.out_recycles += 1
            wfile.write(self._out_head(vc))
            wfile.flush()
            switched.set()
            vc.lock.notify_all()
        log('rpch: %s: OUT channel recycled (%s, %d so far)' % (
            vc.cookie.hex(), 'OUT_R2' if self.server.lab.out_r2 else 'OUT_R1', vc.out_recycles))

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
        types = [t for t, _ in cmds]
        if flags == FLAG_RECYCLE and types == [6, 3, 3, 3]:
            return self._in_successor(cmds, left)
        if types != [6, 3, 3, 4, 5, 12]:
            raise RtsError('IN channel: expected CONN/B1, got flags %d commands %s'
                           % (flags, types))
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
        self._in_loop(vc, left)

    def _in_successor(self, cmds, left):
        """IN_R1/A1 on a new RPC_IN_DATA: IN_R1/A4 on the OUT channel, then
        this channel waits for the predecessor's IN_R1/A5."""
        vc = self._register(cmds[1][1], False)
        if vc is None or not vc.ready.is_set():
            raise RtsError('IN_R1/A1 for an unknown virtual connection')
        with vc.lock:
            if vc.in_next is not None:
                raise RtsError('second IN_R1/A1')
            if cmds[2][1] != vc.in_cookie:
                raise RtsError('IN_R1/A1 names another predecessor IN channel')
            vc.in_next = cmds[3][1]
            vc.in_switch = switch = threading.Event()
        # IN_R1/A4: Destination FDClient, Version, ReceiveWindowSize, ConnectionTimeout
        vc.send_out(rts_pdu(FLAG_NONE, [(13, struct.pack('<L', FD_CLIENT)),
                                        (6, struct.pack('<L', 1)),
                                        (0, struct.pack('<L', RECEIVE_WINDOW)),
                                        (2, struct.pack('<L', CONNECTION_TIMEOUT))]), False)
        if not switch.wait(RECYCLE_WAIT) or vc.closed:
            vc.close()
            raise RtsError('%s: no IN_R1/A5 on the predecessor' % vc.cookie.hex())
        self._in_loop(vc, left)

    def _in_loop(self, vc, left):
        handed_over = False
        try:
            while left > 0 and not vc.closed:
                pdu = self._read_pdu(left)
                if pdu is None:
                    return
                left -= len(pdu)
                if pdu[2] == RTS_PTYPE:
                    if self._in_rts(vc, pdu):
                        handed_over = True
                        return
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
            if not handed_over:
                vc.close()

    def _in_rts(self, vc, pdu):
        """True when the PDU ended this IN channel (IN_R1/A5)."""
        flags, cmds = rts_parse(pdu)
        types = [t for t, _ in cmds]
        if flags & FLAG_PING or types == [5]:
            return False                           # Ping, Keep-Alive
        if types == [13, 1]:                       # FlowControlAckWithDestination
            body = cmds[1][1]
            with vc.lock:
                if body[8:24] == vc.out_cookie:    # a late one for a predecessor: dropped
                    vc.out_acked = u32(body[0:4])
                    vc.out_window = u32(body[4:8])
                    vc.lock.notify_all()
            return False
        if flags == FLAG_NONE and types == [3]:    # IN_R1/A5: the successor's cookie
            with vc.lock:
                if vc.in_next is None or cmds[0][1] != vc.in_next:
                    raise RtsError('IN_R1/A5 without IN_R1/A1 or naming another channel')
                vc.in_cookie, vc.in_next = cmds[0][1], None
                vc.in_received = vc.in_acked = 0
                vc.in_recycles += 1
                vc.in_switch.set()
            log('rpch: %s: IN channel recycled (%d so far)' % (vc.cookie.hex(), vc.in_recycles))
            return True
        if flags == FLAG_OUT_CHANNEL and types == [13, 3, 6]:    # OUT_R1/A7
            self._out_a7(vc, cmds)
            return False
        if flags & FLAG_RECYCLE:
            raise RtsError('unexpected recycling PDU: flags %d commands %s' % (flags, types))
        log('rpch: IN channel: RTS flags %d commands %s ignored' % (flags, types))
        return False
