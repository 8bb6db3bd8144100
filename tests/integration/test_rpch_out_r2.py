"""OUT channel recycling 2 (OUT_R2, MS-RPCH 3.2.1.5.3.5) toward an RPC over
HTTP upstream: a single RPC proxy (Exchange's or IIS's rpcproxy) that finds
the virtual connection cookie of the successor's OUT_R2/A3 in its table runs
OUT_R2 (3.2.4.5.6.1), so the client gets OUT_R2/A6 and OUT_R2/B3 instead of
OUT_R1/A6 and OUT_R1/A10.  The proxy (src/transport/rpch/upclient.c, the
client of 3.2.2.5.9 and 3.2.2.5.10) answers A6 with OUT_R2/A7 on the IN
channel and OUT_R2/C1 on the successor, and switches on B3.

The lab's RPC proxy (tests/lab/lab_rpch.py, --rpch-out-recycling r2, written
from MS-RPCH) runs OUT_R2 with a 16 KiB RPC_OUT_DATA length, so an Impacket
ncacn_http session through the proxy recycles the upstream OUT channel
several times and gets the answers a direct ncacn_ip_tcp client gets.  The
PDUs are checked against Impacket's RTS structures (Impacket has no OUT_R2
PDU classes; its RTSHeader and Destination, ANCE and Empty commands are
its own).  Bad input: an upstream sending OUT_R2 PDUs out of order, or
mixing OUT_R1 and OUT_R2, ends that virtual connection with its reason in
the log; the next session goes on."""
import os
import re
import struct
import sys
import threading
import time

import pytest
from impacket.dcerpc.v5 import nspi, rpch
from impacket.http import AUTH_BASIC, AUTH_NTLM

from conftest import ROOT
from test_rpch import (ALICE_PW, PROXY_PW, reference, rpch_dce, rpch_lab_env,  # noqa: F401
                       start)
from test_rpch_recycle import impacket_cookie, impacket_rts
from test_rpch_up_recycle import (OUT_LENGTH, BadUpstream, bad_then_good, sessions_to_lab,
                                  u32cmd, up_opts)

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import lab_rpch  # noqa: E402
from test_lab_auth import nspi_answers  # noqa: E402

p32 = lambda v: struct.pack("<L", v)  # noqa: E731
# what an RPC proxy sends the client (2.2.4.24, 2.2.4.39, 2.2.4.44, 2.2.4.28, 2.2.4.32)
A2 = lab_rpch.rts_pdu(lab_rpch.FLAG_RECYCLE, [(13, p32(0))])
R2_A6 = lab_rpch.rts_pdu(0, [(13, p32(0)), (10, b"")])
R2_B3 = lab_rpch.rts_pdu(lab_rpch.FLAG_EOF, [(10, b"")])
R1_A6 = lab_rpch.rts_pdu(0x10, [(13, p32(0)), (6, p32(1)), (2, p32(120000))])
R1_A10 = lab_rpch.rts_pdu(0, [(10, b"")])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-out-r2")),
                            "--rpch-out-length", str(OUT_LENGTH), "--rpch-out-recycling", "r2")


def test_out_r2_pdus_match_impacket_structures():
    """The lab's OUT_R2/A6 and B3 and the C1 the lab takes are Impacket's bytes;
    the client's OUT_R2/A7 is OUT_R1/A7's layout, which the lab parses."""
    d = u32cmd(rpch.Destination, "Destination", rpch.FDClient)
    assert R2_A6 == impacket_rts(rpch.RTS_FLAG_NONE, [d, rpch.ANCE()])
    assert R2_B3 == impacket_rts(rpch.RTS_FLAG_EOF, [rpch.ANCE()])
    c1 = impacket_rts(rpch.RTS_FLAG_PING, [rpch.Empty()])
    assert len(c1) == len(impacket_rts(rpch.RTS_FLAG_NONE, [rpch.ANCE()])) == 24  # OUT_R1/A11
    assert lab_rpch.rts_parse(c1) == (lab_rpch.FLAG_PING, [(7, b"")])
    ds = u32cmd(rpch.Destination, "Destination", rpch.FDServer)
    a7 = impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL,
                      [ds, impacket_cookie(bytes(range(16))), u32cmd(rpch.Version, "Version", 1)])
    assert [t for t, _ in lab_rpch.rts_parse(a7)[1]] == [13, 3, 6]


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_out_r2_toward_upstream(make_proxy, env, reference, http_auth):  # noqa: F811
    """NSPI (16 rounds) and RFR (6 rounds) through the proxy to the lab
    running OUT_R2 with 16 KiB OUT channels (and the proxy's 4 KiB IN
    channels): the answers equal a direct client's, the upstream OUT channel
    is recycled with OUT_R2 at least 3 times, the lab's count agrees, and no
    upstream virtual connection ends before its association."""
    p, log, lab = sessions_to_lab(make_proxy, env, reference, http_auth)
    r2 = len(re.findall(r"rpch upstream .*: OUT channel recycled \(OUT_R2, ", log))
    r1 = len(re.findall(r"rpch upstream .*: OUT channel recycled \(OUT_R1, ", log))
    ins = len(re.findall(r"rpch upstream .*: IN channel recycled", log))
    print("proxy: OUT_R2 %d, OUT_R1 %d, IN %d; lab: OUT %d, IN %d" % (
        r2, r1, ins, lab.count("OUT channel recycled (OUT_R2"), lab.count("IN channel recycled")))
    assert r2 >= 3 and r1 == 0, (r2, r1)
    assert lab.count("OUT channel recycled (OUT_R2") == r2
    assert lab.count("IN channel recycled") == ins >= 3
    assert "expected OUT_R2/C1" not in lab
    assert not re.search(r"rpch upstream .*: virtual connection closed: (?!the association closed)",
                         log), log[-3000:]
    assert ALICE_PW not in log and PROXY_PW not in log


def test_out_r2_with_upstream_ntlm(make_proxy, env, reference):  # noqa: F811
    """upstream auth = ntlm: each successor OUT channel logs on first (its
    request waits for the NTLM challenge), so the OUT_R2/C1 queued on
    OUT_R2/A6 goes after its head; 12 NSPI rounds with OUT_R2 recycles."""
    over = dict(up_opts(env["ports"]["rpch"]))
    over["mapiproxy:rpc over http upstream auth"] = "ntlm"
    p = start(make_proxy, env, **over)
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(12):
        assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert "HTTP NTLM" in log
    r2 = len(re.findall(r"rpch upstream .*: OUT channel recycled \(OUT_R2, ", log))
    assert r2 >= 2, r2
    assert not re.search(r"rpch upstream .*: virtual connection closed: (?!the association closed)",
                         log), log[-3000:]


class ScriptedUpstream(BadUpstream):
    """An RPC proxy (TLS) that opens the virtual connection (CONN/A3,
    CONN/C2), sends `first` on the OUT channel, and once the proxy's
    successor RPC_OUT_DATA (OUT_R2/A3) has come, `after_a3` on the
    predecessor; the item "wait" waits for the proxy's OUT_R2/A7 (IN
    channel) and OUT_R2/C1 (successor).  What each channel's body carried
    is kept."""

    def __init__(self, cert, first, after_a3=()):
        self.first, self.after_a3 = first, list(after_a3)
        self.pred = None
        self.bodies = {"in": b"", "succ": b""}
        self.lock = threading.Lock()
        super().__init__(cert, b"".join(first))

    def _read_head(self, c):
        head = b""
        while b"\r\n\r\n" not in head:
            more = c.recv(4096)
            if not more:
                return None, b""
            head += more
        head, _, body = head.partition(b"\r\n\r\n")
        return head, body

    def _keep(self, c, key, body):
        while True:
            with self.lock:
                self.bodies[key] += body
            body = c.recv(4096)
            if not body:
                return

    def _has(self, key, pdu_prefix):
        with self.lock:
            return pdu_prefix in self.bodies[key]

    def channel(self, raw):
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
            self.conns.append(c)
            head, body = self._read_head(c)
            if head is None:
                return
            if head.startswith(b"RPC_IN_DATA"):
                return self._keep(c, "in", body)
            while len(body) < 20:
                more = c.recv(4096)
                if not more:
                    return
                body += more
            if struct.unpack("<H", body[16:18])[0] == lab_rpch.FLAG_RECYCLE:   # OUT_R2/A3
                threading.Thread(target=self.answer_a3, daemon=True).start()
                return self._keep(c, "succ", body)
            self.pred = c
            c.sendall(b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
                      b"Content-Length: 1073741824\r\n\r\n"
                      + lab_rpch.rts_pdu(0, [(2, p32(120000))])
                      + lab_rpch.rts_pdu(0, [(6, p32(1)), (0, p32(65536)), (2, p32(120000))])
                      + self.pdu)
            while c.recv(4096):
                pass
        except OSError:
            pass

    def answer_a3(self):
        try:
            for item in self.after_a3:
                if item == "wait":
                    end = time.time() + 10
                    while time.time() < end and not (
                            self._has("in", b"\x10\x00\x03\x00\x0d\x00\x00\x00\x02\x00\x00\x00")
                            and self._has("succ", C1_BYTES)):
                        time.sleep(0.05)
                    continue
                self.pred.sendall(item)
        except OSError:
            pass


C1_BYTES = impacket_rts(rpch.RTS_FLAG_PING, [rpch.Empty()])

BAD = {
    # OUT_R2/B3 with no recycling under way
    "b3_unasked": ([R2_B3], [], "OUT_R2/B3 without OUT_R2/A7"),
    # OUT_R2/A6 with no OUT_R2/A2 before it
    "a6_unasked": ([R2_A6], [], "OUT_R2/A6 without OUT_R2/A3"),
    # a second OUT_R2/A6 after the proxy answered the first
    "a6_twice": ([A2], [R2_A6, "wait", R2_A6], "OUT_R2/A6 without OUT_R2/A3"),
    # OUT_R2/A6 naming the server as its destination
    "a6_destination": ([A2], [lab_rpch.rts_pdu(0, [(13, p32(2)), (10, b"")])],
                       "OUT_R2/A6 for another destination"),
    # OUT_R1/A6 then OUT_R2/B3: the sequences mixed
    "b3_after_r1_a6": ([A2], [R1_A6, R2_B3], "OUT_R2/B3 in OUT_R1"),
    # OUT_R2/A6 then OUT_R1/A10
    "a10_after_r2_a6": ([A2], [R2_A6, "wait", R1_A10], "OUT_R1/A10 in OUT_R2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_out_r2_from_upstream(make_proxy, env, case):
    first, after_a3, why = BAD[case]
    bad = ScriptedUpstream(env["lab_cert"], first, after_a3)
    try:
        log = bad_then_good(make_proxy, env, bad)
        assert re.search(r"rpch upstream .*: virtual connection closed: OUT channel: " +
                         re.escape(why), log), log[-3000:]
        if "wait" in after_a3:
            # before the bad PDU the proxy answered OUT_R2/A6 as the client does:
            # OUT_R2/A7 (FDServer, the successor cookie, Version) on the IN channel,
            # OUT_R2/C1 (Impacket's bytes) after OUT_R2/A3 on the successor
            with bad.lock:
                succ, inb = bad.bodies["succ"], bad.bodies["in"]
            assert succ[96:120] == C1_BYTES, succ.hex()
            a3_succ = lab_rpch.rts_parse(succ[:96])[1][3][1]
            a7 = impacket_rts(rpch.RTS_FLAG_OUT_CHANNEL, [
                u32cmd(rpch.Destination, "Destination", rpch.FDServer),
                impacket_cookie(a3_succ), u32cmd(rpch.Version, "Version", 1)])
            assert a7 in inb, inb.hex()
    finally:
        bad.close()
