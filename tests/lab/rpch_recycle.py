"""An RPC over HTTP v2 client that recycles its IN channel (MS-RPCH 3.2.2,
protocol sequence IN_R1), for the tests.

Impacket's ncacn_http client (impacket.dcerpc.v5.transport.HTTPTransport)
does the HTTP side, the authentication, CONN/A1..C2 and flow control; it
never recycles (its IN channel has a 1 GiB Content-Length).  This subclass
gives the IN channel a small Content-Length and, before a PDU would pass
it, replaces the channel as the client role of MS-RPCH does:

  1. a new RPC_IN_DATA request (the successor), whose body starts with
     IN_R1/A1 (2.2.4.10): Version, the virtual connection cookie, the
     predecessor IN channel cookie, a new successor cookie;
  2. wait on the OUT channel for IN_R1/A4 (2.2.4.13): Destination FDClient,
     Version, ReceiveWindowSize, ConnectionTimeout;
  3. IN_R1/A5 (2.2.4.14) on the predecessor: the successor cookie; close
     the predecessor; the successor is the IN channel from now on.

The PDU layouts are written here from MS-RPCH 2.2.3.5 / 2.2.4 (struct, not
the proxy's code); tests check them against Impacket's RTS command
structures.

OUT channel recycling (OUT_R1, client steps of 3.2.2.5.x), when the OUT
channel brings OUT_R1/A2 (2.2.4.24: RECYCLE_CHANNEL, Destination):

  1. a new RPC_OUT_DATA (the successor) whose body is OUT_R1/A3 (2.2.4.25:
     Version, virtual connection cookie, predecessor and successor OUT
     channel cookies, the client's ReceiveWindowSize), later OUT_R1/A11;
  2. OUT_R1/A6 (2.2.4.28: Destination FDClient, Version, ConnectionTimeout)
     on the predecessor;
  3. OUT_R1/A7 (2.2.4.29: Destination FDServer, successor cookie, Version)
     on the IN channel;
  4. OUT_R1/A10 (2.2.4.32: ANCE) ends the predecessor; the successor's
     answer head, OUT_R1/A11 (2.2.4.33: ANCE) on it, and its flow control
     counts from 0.

The outbound proxy picks the sequence when the A3 reaches it (3.2.4.5.6: one
that finds the virtual connection runs OUT_R2, 3.2.1.5.3.5), so in step 2
the predecessor may bring OUT_R2/A6 instead (2.2.4.39: Destination
FDClient, ANCE); then, as the client of 3.2.2.5.9 and 3.2.2.5.10:

  3'. OUT_R2/A7 (2.2.4.40, OUT_R1/A7's layout) on the IN channel and
      OUT_R2/C1 (2.2.4.45: PING flag, Empty, the size of OUT_R1/A11) on the
      successor;
  4'. OUT_R2/B3 (2.2.4.44: EOF flag, ANCE) ends the predecessor; the
      successor's answer head; its flow control counts from 0."""
import os
import struct

from impacket.dcerpc.v5 import transport

RTS_FLAG_NONE = 0x0000
RTS_FLAG_PING = 0x0001
RTS_FLAG_EOF = 0x0020
CMD_EMPTY = 7
RTS_FLAG_RECYCLE_CHANNEL = 0x0004
CMD_RECEIVE_WINDOW_SIZE = 0
CMD_CONNECTION_TIMEOUT = 2
CMD_COOKIE = 3
CMD_VERSION = 6
CMD_ANCE = 10
CMD_DESTINATION = 13
RTS_FLAG_OUT_CHANNEL = 0x0010
FD_CLIENT = 0
FD_SERVER = 2
A5_LEN = 20 + 20


def rts(flags, cmds):
    """2.2.3.6.1: the CO header (version 5.0, type RTS 20, PFC_FIRST|LAST,
    NDR little-endian), frag_length, auth_length 0, call_id 0, then Flags
    and NumberOfCommands, then the commands."""
    body = b"".join(cmds)
    return struct.pack("<BBBB4sHHLHH", 5, 0, 20, 3, b"\x10\0\0\0", 20 + len(body), 0, 0,
                       flags, len(cmds)) + body


def u32_cmd(kind, value):
    return struct.pack("<LL", kind, value)


def cookie_cmd(cookie):
    assert len(cookie) == 16
    return struct.pack("<L", CMD_COOKIE) + cookie


def in_r1_a1(vc, predecessor, successor, version=1):
    return rts(RTS_FLAG_RECYCLE_CHANNEL, [u32_cmd(CMD_VERSION, version), cookie_cmd(vc),
                                          cookie_cmd(predecessor), cookie_cmd(successor)])


def in_r1_a5(successor):
    return rts(RTS_FLAG_NONE, [cookie_cmd(successor)])


def out_r1_a3(vc, predecessor, successor, window, version=1):
    return rts(RTS_FLAG_RECYCLE_CHANNEL, [u32_cmd(CMD_VERSION, version), cookie_cmd(vc),
                                          cookie_cmd(predecessor), cookie_cmd(successor),
                                          u32_cmd(CMD_RECEIVE_WINDOW_SIZE, window)])


def out_r1_a7(successor, version=1):
    return rts(RTS_FLAG_OUT_CHANNEL, [u32_cmd(CMD_DESTINATION, FD_SERVER), cookie_cmd(successor),
                                      u32_cmd(CMD_VERSION, version)])


def ance():  # OUT_R1/A10, OUT_R1/A11
    return rts(RTS_FLAG_NONE, [struct.pack("<L", CMD_ANCE)])


def out_r2_c1():
    return rts(RTS_FLAG_PING, [struct.pack("<L", CMD_EMPTY)])


def is_out_r2_a6(pdu):
    return pdu == rts(RTS_FLAG_NONE, [u32_cmd(CMD_DESTINATION, FD_CLIENT),
                                      struct.pack("<L", CMD_ANCE)])


def is_out_r2_b3(pdu):
    return pdu == rts(RTS_FLAG_EOF, [struct.pack("<L", CMD_ANCE)])


def is_out_r1_a2(pdu):
    return pdu == rts(RTS_FLAG_RECYCLE_CHANNEL, [u32_cmd(CMD_DESTINATION, FD_CLIENT)])


def parse_out_r1_a6(pdu):
    if len(pdu) != 44 or pdu[2] != 20:
        return None
    flags, n = struct.unpack_from("<HH", pdu, 16)
    kinds = [struct.unpack_from("<L", pdu, 20 + 8 * i)[0] for i in range(3)]
    if flags != RTS_FLAG_OUT_CHANNEL or n != 3 or kinds != [CMD_DESTINATION, CMD_VERSION,
                                                            CMD_CONNECTION_TIMEOUT]:
        return None
    dest, version, timeout = (struct.unpack_from("<L", pdu, 24 + 8 * i)[0] for i in range(3))
    return {"version": version, "timeout": timeout} if dest == FD_CLIENT else None


def parse_in_r1_a4(pdu):
    """IN_R1/A4's fields, or None when pdu is something else."""
    if len(pdu) != 52 or pdu[2] != 20:
        return None
    flags, n = struct.unpack_from("<HH", pdu, 16)
    kinds = [struct.unpack_from("<L", pdu, 20 + 8 * i)[0] for i in range(4)]
    if flags != RTS_FLAG_NONE or n != 4 or kinds != [CMD_DESTINATION, CMD_VERSION,
                                                     CMD_RECEIVE_WINDOW_SIZE,
                                                     CMD_CONNECTION_TIMEOUT]:
        return None
    dest, version, window, timeout = (struct.unpack_from("<L", pdu, 24 + 8 * i)[0]
                                      for i in range(4))
    if dest != FD_CLIENT:
        return None
    return {"version": version, "window": window, "timeout": timeout}


class RecyclingHTTPTransport(transport.HTTPTransport):
    CONN_B1_LEN = 104

    def __init__(self, *args, in_length=4096, **kw):
        super().__init__(*args, **kw)
        self.in_length = in_length
        self.in_sent = 0
        self.in_recycles = 0
        self.out_recycles = 0
        self.a4 = []
        self.a6 = []
        self.old_out_closed = []
        self._recycling = False

    # name-mangled state of Impacket's RPCProxyClient
    def _channels(self):
        return self._RPCProxyClient__channels

    def create_rpc_in_channel(self):
        headers = self.default_headers.copy()
        headers["Content-Length"] = str(self.in_length)
        self.create_channel("RPC_IN_DATA", headers)

    def connect(self):
        super().connect()
        self.in_sent = self.CONN_B1_LEN  # Impacket wrote CONN/B1 on the IN socket

    def send(self, data, forceWriteAndx=0, forceRecv=0):
        if not self._recycling and self.in_sent + len(data) + A5_LEN > self.in_length:
            self.recycle_in()
        if self.in_sent + len(data) > self.in_length:
            raise RuntimeError("PDU of %d bytes does not fit an IN channel" % len(data))
        self.get_socket_in().sendall(data)
        self.in_sent += len(data)

    def recycle_in(self):
        self._recycling = True
        try:
            chans = self._channels()
            old = chans["RPC_IN_DATA"]
            vc = self._RPCProxyClient__virtualConnectionCookie
            pred = self._RPCProxyClient__inChannelCookie
            succ = os.urandom(16)
            self.create_rpc_in_channel()  # the successor takes the "RPC_IN_DATA" slot
            a1 = in_r1_a1(vc, pred, succ)
            self.get_socket_in().sendall(a1)
            self.in_sent = len(a1)
            while True:  # IN_R1/A4 on the OUT channel; other RTS PDUs as Impacket does
                pdu = self.rpc_out_read_pkt(handle_rts=False)
                if pdu[2] != 20:
                    raise RuntimeError("an RPC PDU while recycling the IN channel")
                a4 = parse_in_r1_a4(pdu)
                if a4:
                    self.a4.append(a4)
                    break
                self.handle_out_of_sequence_rts(pdu)
            old.sock.sendall(in_r1_a5(succ))
            old.close()
            self._RPCProxyClient__inChannelCookie = succ
            self.in_recycles += 1
        finally:
            self._recycling = False


    def _read_rts_until(self, want):
        """RTS PDUs from the OUT channel until want(pdu) says yes; the others
        as Impacket handles them."""
        while True:
            pdu = self.rpc_out_read_pkt(handle_rts=False)
            if pdu[2] != 20:
                raise RuntimeError("an RPC PDU while recycling a channel")
            got = want(pdu)
            if got:
                return got
            self.handle_out_of_sequence_rts(pdu)

    @staticmethod
    def _closed_after(sock, wait=5.0):
        """True when the peer closes sock (with nothing more) within wait s."""
        import ssl
        sock.settimeout(wait)
        try:
            return sock.recv(1) == b""
        except (ssl.SSLEOFError, ConnectionResetError):
            return True
        except OSError:  # timeout
            return False

    def handle_out_of_sequence_rts(self, response_data):
        if is_out_r1_a2(response_data):
            self.recycle_out()
        else:
            super().handle_out_of_sequence_rts(response_data)

    def recycle_out(self):
        chans = self._channels()
        old = chans["RPC_OUT_DATA"]
        vc = self._RPCProxyClient__virtualConnectionCookie
        pred = self._RPCProxyClient__outChannelCookie
        window = self._RPCProxyClient__availableWindowAdvertised
        succ = os.urandom(16)
        a3, a11 = out_r1_a3(vc, pred, succ, window), ance()
        headers = self.default_headers.copy()
        headers["Content-Length"] = str(len(a3) + len(a11))  # OUT_R2/C1: A11's size
        self.create_channel("RPC_OUT_DATA", headers)
        new = chans["RPC_OUT_DATA"]
        chans["RPC_OUT_DATA"] = old  # read the predecessor until OUT_R1/A10
        new.sock.sendall(a3)
        # OUT_R1/A6 or OUT_R2/A6: the outbound proxy's choice
        a6 = self._read_rts_until(
            lambda pdu: ({"seq": "OUT_R2"} if is_out_r2_a6(pdu) else
                         dict(parse_out_r1_a6(pdu), seq="OUT_R1") if parse_out_r1_a6(pdu)
                         else None))
        self.a6.append(a6)
        r2 = a6["seq"] == "OUT_R2"
        a7 = out_r1_a7(succ)  # OUT_R2/A7: the same layout
        if self.in_sent + len(a7) + A5_LEN > self.in_length:
            self.recycle_in()
        self.send(a7)
        if r2:
            new.sock.sendall(out_r2_c1())
            self._read_rts_until(is_out_r2_b3)
        else:
            self._read_rts_until(lambda pdu: pdu == ance())
        # the outbound proxy closes the predecessor after OUT_R1/A10 (MS-RPCH
        # 3.2.4.5.x) or OUT_R2/B3 (3.2.4.5.10): what follows on it is the end
        # of the connection
        self.old_out_closed.append(self._closed_after(old.sock))
        chans["RPC_OUT_DATA"] = new
        old.close()
        head = b""
        while b"\r\n\r\n" not in head:
            more = new.sock.recv(4096)
            if not more:
                raise RuntimeError("successor OUT channel closed before its answer")
            head += more
        if head[9:12] != b"200":
            raise RuntimeError("successor OUT channel answered %r" % head[:40])
        self._RPCProxyClient__readBuffer = head[head.find(b"\r\n\r\n") + 4:]
        if not r2:
            new.sock.sendall(a11)
        self._RPCProxyClient__outChannelCookie = succ
        self._RPCProxyClient__bytesReceived = 0
        self._RPCProxyClient__receiverAvailableWindow = window
        self.out_recycles += 1


def recycling_dce(url, rpc_port, iface, http_auth, user, password, level, in_length=4096):
    """As Impacket's exchanger example sets up ncacn_http, with the
    recycling transport."""
    t = RecyclingHTTPTransport("EXLAB01", rpc_port, in_length=in_length)
    t.set_stringbinding(transport.DCERPCStringBinding("ncacn_http:EXLAB01[%d]" % rpc_port))
    t.set_rpc_proxy_url(url)
    t.set_credentials(user, password, "LAB")
    t.set_auth_type(http_auth)
    d = t.get_dce_rpc()
    d.set_credentials(user, password, "LAB")
    d.set_auth_level(level)
    d.connect()
    d.bind(iface)
    return t, d
