"""NTLM (MS-NLMP) and DCE/RPC sign/seal against code we did not write:
Impacket's NTLM client (getNTLMSSPType1/3), its server-side NTLMv2 check
(impacket.smbserver.computeNTLMv2), its NTLMSSP structures, and its MAC /
SEAL / SIGN / SIGNKEY / SEALKEY with the RPC structures of rpcrt.

Our side is tests/integration/ntlm_driver.c, built here with ASan/UBSan from
src/auth and the DCE/RPC PDU code, and driven over stdin/stdout in hex.
No key leaves the driver: each side derives its own keys."""
import os
import struct
import subprocess
import time

import pytest

from impacket import ntlm
from impacket.dcerpc.v5 import rpcrt
from impacket.smbserver import computeNTLMv2, STATUS_SUCCESS
from Cryptodome.Cipher import ARC4

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
USER, PASSWORD, DOMAIN = "alice", "Secret1!", "DOMAIN"


@pytest.fixture(scope="module")
def driver_bin(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ntlm") / "ntlm_driver")
    srcs = [os.path.join(ROOT, "src", "auth", f)
            for f in ("ntlm_crypto.c", "ntlmssp.c", "dcerpc_sign.c")] + [
        os.path.join(ROOT, "src", "dcerpc", "pdu.c"), os.path.join(ROOT, "src", "core", "buf.c")]
    cmd = [os.environ.get("CC", "cc"), "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
           "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
           "-I" + os.path.join(ROOT, "src"), "-I" + os.path.join(ROOT, "include"),
           os.path.join(ROOT, "tests", "integration", "ntlm_driver.c"), *srcs,
           "-lcrypto", "-ldl", "-o", out]
    subprocess.run(cmd, check=True)
    return out


class Driver:
    def __init__(self, path):
        self.p = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

    def cmd(self, *args):
        self.p.stdin.write(" ".join(a if a != "" else "-" for a in args) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "driver died: " + self.p.stderr.read()
        return line.split()

    def close(self):
        self.p.stdin.close()
        rc = self.p.wait(10)
        err = self.p.stderr.read()
        assert rc == 0 and "Sanitizer" not in err, err


@pytest.fixture
def drv(driver_bin):
    d = Driver(driver_bin)
    yield d
    d.close()


class ImpacketSide:
    """Session security as Impacket's rpcrt does it (ntlm.SIGNKEY/SEALKEY,
    ARC4 handles, ntlm.SEAL/SIGN); is_client picks the direction."""

    def __init__(self, flags, key, is_client):
        me, peer = ("Client", "Server") if is_client else ("Server", "Client")
        self.flags = flags
        self.send_sign = ntlm.SIGNKEY(flags, key, me)
        self.recv_sign = ntlm.SIGNKEY(flags, key, peer)
        self.send_seal = ntlm.SEALKEY(flags, key, me)
        self.recv_seal = ntlm.SEALKEY(flags, key, peer)
        self.send_handle = ARC4.new(self.send_seal).encrypt
        self.recv_handle = ARC4.new(self.recv_seal).encrypt
        self.send_seq = self.recv_seq = 0

    def make_pdu(self, stub, level, request=True):
        """Like rpcrt.DCERPC_v5._transport_send (ESS: sign the whole PDU)."""
        pkt = rpcrt.MSRPCRequestHeader() if request else rpcrt.MSRPCRespHeader()
        if request:
            pkt["op_num"] = 0
        pkt["ctx_id"] = 0
        pkt["call_id"] = 1
        pkt["alloc_hint"] = len(stub)
        pkt["pduData"] = stub
        pkt["sec_trailer"] = b""
        pkt["auth_data"] = b""
        sec = rpcrt.SEC_TRAILER()
        sec["auth_type"] = rpcrt.RPC_C_AUTHN_WINNT
        sec["auth_level"] = level
        sec["auth_ctx_id"] = 79231
        pad = (4 - (len(pkt.get_packet()) % 4)) % 4
        if pad:
            pkt["pduData"] += b"\xbb" * pad
            sec["auth_pad_len"] = pad
        pkt["sec_trailer"] = sec.getData()
        pkt["auth_data"] = b" " * 16
        plain = pkt["pduData"]
        if level == rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY:
            sealed, sig = ntlm.SEAL(self.flags, self.send_sign, self.send_seal,
                                    pkt.get_packet()[:-16], plain, self.send_seq, self.send_handle)
            pkt["pduData"] = sealed
        else:
            sig = ntlm.SIGN(self.flags, self.send_sign, pkt.get_packet()[:-16], self.send_seq,
                            self.send_handle)
        pkt["sec_trailer"] = sec.getData()
        pkt["auth_data"] = sig.getData()
        self.send_seq += 1
        return pkt.get_packet()

    def check_pdu(self, pdu, level):
        """Decrypts (level 6) and recomputes the signature with Impacket's
        functions; returns the stub without the auth pad."""
        hdr, body, trailer, sig = pdu[:24], pdu[24:-24], pdu[-24:-16], pdu[-16:]
        sec = rpcrt.SEC_TRAILER(trailer)
        assert sec["auth_type"] == rpcrt.RPC_C_AUTHN_WINNT and sec["auth_level"] == level
        assert struct.unpack_from("<H", pdu, 8)[0] == len(pdu)
        assert struct.unpack_from("<H", pdu, 10)[0] == 16
        if level == rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY:
            body = self.recv_handle(body)  # SEAL: the data first, then the checksum
        want = ntlm.SIGN(self.flags, self.recv_sign, hdr + body + trailer, self.recv_seq,
                         self.recv_handle)
        self.recv_seq += 1
        assert want.getData() == sig, "signature mismatch"
        return body[:len(body) - sec["auth_pad_len"]]


def impacket_login(drv, user=USER, password=PASSWORD, require_mic=0, v2=True):
    assert drv.cmd("ACCEPT", "SERVER", "DOMAIN", str(require_mic), USER, PASSWORD) == ["READY"]
    t1 = ntlm.getNTLMSSPType1("WS1", "", signingRequired=True, use_ntlmv2=v2)
    r = drv.cmd("NEG", t1.getData().hex())
    assert r[0] == "CHAL", r
    chal = bytes.fromhex(r[1])
    # our CHALLENGE, as Impacket reads it
    c = ntlm.NTLMAuthChallenge(chal)
    assert c["flags"] & ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
    assert c["flags"] & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH
    av = ntlm.AV_PAIRS(c["TargetInfoFields"])
    assert av[ntlm.NTLMSSP_AV_HOSTNAME][1] == "SERVER".encode("utf-16le")
    assert av[ntlm.NTLMSSP_AV_DOMAINNAME][1] == "DOMAIN".encode("utf-16le")
    assert av[ntlm.NTLMSSP_AV_DNS_HOSTNAME][1] == "server.example.com".encode("utf-16le")
    ft = struct.unpack("<q", av[ntlm.NTLMSSP_AV_TIME][1])[0]
    assert abs(ft / 1e7 - 11644473600 - time.time()) < 60
    t3, key = ntlm.getNTLMSSPType3(t1, chal, user, password, DOMAIN, use_ntlmv2=v2)
    return drv.cmd("AUTH", t3.getData().hex()), t3, key


def test_impacket_client_our_acceptor(drv):
    r, t3, key = impacket_login(drv)
    assert r[:4] == ["OK", USER, DOMAIN, "WS1"], r
    flags = int(r[4], 16)
    assert flags == t3["flags"]
    imp = ImpacketSide(flags, key, is_client=True)
    for hdrsign in ("0", "1"):  # with ESS the whole PDU is signed either way
        for level in (rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY):
            for stub in (b"", b"\x01", b"hello, exchange" * 7, os.urandom(333)):
                pdu = imp.make_pdu(stub, level)
                r = drv.cmd("UNPROTECT", hdrsign, pdu.hex())
                assert r[0] == "STUB", r
                assert bytes.fromhex(r[1] if len(r) > 1 else "") == stub
                r = drv.cmd("PROTECT", hdrsign, str(level), "resp", stub.hex() or "")
                assert r[0] == "PDU", r
                out = bytes.fromhex(r[1])
                if level == rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY and len(stub) > 4:
                    assert stub not in out
                assert imp.check_pdu(out, level) == stub
                resp = rpcrt.MSRPCRespHeader(out)
                assert resp["frag_len"] == len(out) and resp["auth_len"] == 16


def test_tampered_pdu_refused(drv):
    r, t3, key = impacket_login(drv)
    assert r[0] == "OK"
    imp = ImpacketSide(int(r[4], 16), key, is_client=True)
    pdu = bytearray(imp.make_pdu(b"top secret stub", rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY))
    pdu[26] ^= 1
    assert drv.cmd("UNPROTECT", "0", pdu.hex()) == ["ERR", "unprotect"]
    # a header byte (call id) is covered too
    pdu = bytearray(imp.make_pdu(b"top secret stub", rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY))
    pdu[12] ^= 1
    assert drv.cmd("UNPROTECT", "0", pdu.hex()) == ["ERR", "unprotect"]


def test_impacket_wrong_password(drv):
    r, _, _ = impacket_login(drv, password="Secret2!")
    assert r[0] == "ERR" and "logon failure" in " ".join(r)


def test_impacket_unknown_user(drv):
    r, _, _ = impacket_login(drv, user="mallory")
    assert r[0] == "ERR" and "logon failure" in " ".join(r)


def test_impacket_ntlmv1_refused(drv):
    r, t3, _ = impacket_login(drv, v2=False)
    assert len(t3["ntlm"]) == 24
    assert r[0] == "ERR" and "NTLMv1" in " ".join(r)


def test_impacket_without_mic_when_required(drv):
    # Impacket sends no MIC (no VERSION flag): refused when the MIC is required
    r, _, _ = impacket_login(drv, require_mic=1)
    assert r[0] == "ERR" and "MIC" in " ".join(r)


def make_challenge(neg_flags, server_chal, with_time=True):
    """A CHALLENGE as impacket.smbserver builds one."""
    flags = (ntlm.NTLMSSP_NEGOTIATE_UNICODE | ntlm.NTLMSSP_NEGOTIATE_NTLM |
             ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO | ntlm.NTLMSSP_REQUEST_TARGET |
             ntlm.NTLMSSP_TARGET_TYPE_DOMAIN | ntlm.NTLMSSP_NEGOTIATE_VERSION |
             (neg_flags & (ntlm.NTLMSSP_NEGOTIATE_SIGN | ntlm.NTLMSSP_NEGOTIATE_SEAL |
                           ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
                           ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY |
                           ntlm.NTLMSSP_NEGOTIATE_128 | ntlm.NTLMSSP_NEGOTIATE_56 |
                           ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH)))
    av = ntlm.AV_PAIRS()
    av[ntlm.NTLMSSP_AV_HOSTNAME] = "SERVER".encode("utf-16le")
    av[ntlm.NTLMSSP_AV_DOMAINNAME] = "DOMAIN".encode("utf-16le")
    av[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = "server.example.com".encode("utf-16le")
    if with_time:
        av[ntlm.NTLMSSP_AV_TIME] = struct.pack("<q", 116444736000000000 + int(time.time()) * 10000000)
    av_data = av.getData()
    c = ntlm.NTLMAuthChallenge()
    c["flags"] = flags
    c["domain_len"] = c["domain_max_len"] = len("DOMAIN".encode("utf-16le"))
    c["domain_offset"] = 40 + 16
    c["challenge"] = server_chal
    c["domain_name"] = "DOMAIN".encode("utf-16le")
    c["TargetInfoFields_len"] = c["TargetInfoFields_max_len"] = len(av_data)
    c["TargetInfoFields"] = av_data
    c["TargetInfoFields_offset"] = 40 + 16 + len(c["domain_name"])
    c["Version"] = b"\x0a\x00\x7c\x4f\x00\x00\x00\x0f"
    c["VersionLen"] = 8
    return c, c.getData()


@pytest.mark.parametrize("with_time", [True, False])
def test_our_initiator_impacket_server(drv, with_time):
    r = drv.cmd("INIT", USER, DOMAIN, PASSWORD)
    assert r[0] == "NEG", r
    neg_bytes = bytes.fromhex(r[1])
    neg = ntlm.NTLMAuthNegotiate()
    neg.fromString(neg_bytes)
    for f in (ntlm.NTLMSSP_NEGOTIATE_UNICODE, ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY,
              ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, ntlm.NTLMSSP_NEGOTIATE_SEAL,
              ntlm.NTLMSSP_NEGOTIATE_SIGN, ntlm.NTLMSSP_NEGOTIATE_128):
        assert neg["flags"] & f
    server_chal = os.urandom(8)
    chal, chal_bytes = make_challenge(neg["flags"], server_chal, with_time)
    r = drv.cmd("CHAL", chal_bytes.hex())
    assert r[0] == "AUTH", r
    auth_bytes, flags = bytes.fromhex(r[1]), int(r[2], 16)
    auth = ntlm.NTLMAuthChallengeResponse()
    auth.fromString(auth_bytes)
    assert auth["flags"] == flags
    assert auth["user_name"].decode("utf-16le") == USER
    assert auth["domain_name"].decode("utf-16le") == DOMAIN
    assert auth["host_name"].decode("utf-16le") == "DRIVER"
    assert len(auth["ntlm"]) > 24  # NTLMv2
    # the client blob echoes the server's pairs and adds MsvAvFlags (MIC)
    # and a target name; its timestamp is the server's when there was one
    blob = ntlm.AV_PAIRS(auth["ntlm"][44:])
    assert struct.unpack("<I", blob[ntlm.NTLMSSP_AV_FLAGS][1])[0] & 2
    assert blob[ntlm.NTLMSSP_AV_TARGET_NAME][1] == "host/server".encode("utf-16le")
    if with_time:
        assert auth["ntlm"][24:32] == ntlm.AV_PAIRS(chal["TargetInfoFields"])[ntlm.NTLMSSP_AV_TIME][1]
        assert auth["lanman"] == b"\0" * 24
    # Impacket's own server-side verification of the NTLMv2 response
    nthash = ntlm.compute_nthash(PASSWORD)
    status, key = computeNTLMv2(USER, "", nthash, server_chal, auth, chal, neg)
    assert status == STATUS_SUCCESS
    bad, _ = computeNTLMv2(USER, "", ntlm.compute_nthash("nope"), server_chal, auth, chal, neg)
    assert bad != STATUS_SUCCESS
    # the MIC, recomputed with Impacket's hmac_md5 over the three messages
    assert auth["MIC"] == ntlm.hmac_md5(
        key, neg_bytes + chal_bytes + auth_bytes[:72] + b"\0" * 16 + auth_bytes[88:])
    # sealing both ways with the keys Impacket derived on its own
    imp = ImpacketSide(flags, key, is_client=False)
    for level in (rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY):
        for stub in (b"ping", os.urandom(100), b""):
            r = drv.cmd("PROTECT", "1", str(level), "req", stub.hex() or "")
            assert r[0] == "PDU", r
            req = bytes.fromhex(r[1])
            hdr = rpcrt.MSRPCRequestHeader(req)
            assert hdr["frag_len"] == len(req) and hdr["auth_len"] == 16
            assert imp.check_pdu(req, level) == stub
            pdu = imp.make_pdu(stub, level, request=False)
            r = drv.cmd("UNPROTECT", "1", pdu.hex())
            assert r[0] == "STUB", r
            assert bytes.fromhex(r[1] if len(r) > 1 else "") == stub


def test_our_initiator_wrong_password_fails_impacket(drv):
    r = drv.cmd("INIT", USER, DOMAIN, "not-the-password")
    neg_bytes = bytes.fromhex(r[1])
    neg = ntlm.NTLMAuthNegotiate()
    neg.fromString(neg_bytes)
    server_chal = os.urandom(8)
    chal, chal_bytes = make_challenge(neg["flags"], server_chal)
    r = drv.cmd("CHAL", chal_bytes.hex())
    auth = ntlm.NTLMAuthChallengeResponse()
    auth.fromString(bytes.fromhex(r[1]))
    status, _ = computeNTLMv2(USER, "", ntlm.compute_nthash(PASSWORD), server_chal, auth, chal, neg)
    assert status != STATUS_SUCCESS


def test_our_initiator_our_acceptor_through_impacket_parsing(drv, driver_bin):
    """Both ends ours (two drivers), every message also parsed by Impacket."""
    srv = Driver(driver_bin)
    try:
        assert srv.cmd("ACCEPT", "SERVER", "DOMAIN", "1", USER, PASSWORD) == ["READY"]
        neg = bytes.fromhex(drv.cmd("INIT", USER, DOMAIN, PASSWORD)[1])
        ntlm.NTLMAuthNegotiate().fromString(neg)
        chal = bytes.fromhex(srv.cmd("NEG", neg.hex())[1])
        assert ntlm.NTLMAuthChallenge(chal)["challenge"] == chal[24:32]
        r = drv.cmd("CHAL", chal.hex())
        auth = bytes.fromhex(r[1])
        a = ntlm.NTLMAuthChallengeResponse()
        a.fromString(auth)
        assert a["user_name"].decode("utf-16le") == USER
        r = srv.cmd("AUTH", auth.hex())
        assert r[:3] == ["OK", USER, DOMAIN] and r[5] == "1", r  # MIC checked
        for level in ("5", "6"):
            pdu = drv.cmd("PROTECT", "1", level, "req", b"abc".hex())[1]
            assert srv.cmd("UNPROTECT", "1", pdu) == ["STUB", b"abc".hex()]
            pdu = srv.cmd("PROTECT", "1", level, "resp", b"xyz!".hex())[1]
            assert drv.cmd("UNPROTECT", "1", pdu) == ["STUB", b"xyz!".hex()]
    finally:
        srv.close()


# ---- tshark: Wireshark's NTLMSSP decrypts what we seal --------------------

EPM_UUID = bytes.fromhex("0883afe11f5dc91191a408002b14a0fa")  # e1af8308-... v3.0
NDR_UUID = bytes.fromhex("045d888aeb1cc9119fe808002b104860")  # 8a885d04-... v2.0


def _hdr(ptype, flags, frag_len, auth_len, call_id):
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, flags, b"\x10\0\0\0", frag_len, auth_len,
                       call_id)


def _with_auth(ptype, flags, call_id, body, token, level=6):
    pad = (4 - (16 + len(body)) % 4) % 4
    trailer = struct.pack("<BBBBI", 10, level, pad, 0, 79231)
    frag = 16 + len(body) + pad + 8 + len(token)
    return _hdr(ptype, flags, frag, len(token), call_id) + body + b"\0" * pad + trailer + token


def _tshark_decrypted(pcap, port, ptype, password):
    """The "Decrypted stub data" tshark -x shows for the PDU of that type."""
    import tshark_util
    cmd = tshark_util._tshark_args(pcap, [port], password, "dcerpc.pkt_type==%d" % ptype) + ["-x"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         timeout=60).stdout
    data, on = b"", False
    for line in out.splitlines():
        if line.startswith("Decrypted stub data"):
            on = True
        elif on and line[:4].strip() and all(c in "0123456789abcdef" for c in line[:4]):
            data += bytes.fromhex(line[6:53].replace(" ", ""))
        elif on:
            break
    return data


def test_tshark_decrypts_our_sealed_pdus(driver_bin, tmp_path):
    import socket
    import tshark_util
    from conftest import free_port
    if tshark_util.tshark_available():
        pytest.skip(tshark_util.tshark_available())
    cli, srv = Driver(driver_bin), Driver(driver_bin)
    port = free_port()
    req_stub = b"request stub sealed by mapiproxy NTLM" + bytes(range(40))
    resp_stub = b"response stub sealed by the acceptor!!" + bytes(range(30))
    try:
        assert srv.cmd("ACCEPT", "SERVER", "DOMAIN", "1", USER, PASSWORD) == ["READY"]
        with tshark_util.Capture([port], tmpdir=tmp_path) as cap:
            ls = socket.create_server(("127.0.0.1", port))
            c = socket.create_connection(("127.0.0.1", port))
            s, _ = ls.accept()
            flags = 0x03 | 0x04  # first, last, PFC_SUPPORT_HEADER_SIGN
            neg = bytes.fromhex(cli.cmd("INIT", USER, DOMAIN, PASSWORD)[1])
            ctx = struct.pack("<HBB", 0, 1, 0) + EPM_UUID + struct.pack("<HH", 3, 0) + \
                NDR_UUID + struct.pack("<I", 2)
            bind = struct.pack("<HHIB3s", 4280, 4280, 0, 1, b"\0" * 3) + ctx
            c.sendall(_with_auth(11, flags, 1, bind, neg))
            s.recv(65536)
            chal = bytes.fromhex(srv.cmd("NEG", neg.hex())[1])
            sec_addr = b"135\0"
            ack = struct.pack("<HHIH", 4280, 4280, 0x1234, len(sec_addr)) + sec_addr
            ack += b"\0" * ((4 - (16 + len(ack)) % 4) % 4)
            ack += struct.pack("<B3sHH", 1, b"\0" * 3, 0, 0) + NDR_UUID + struct.pack("<I", 2)
            s.sendall(_with_auth(12, flags, 1, ack, chal))
            c.recv(65536)
            auth = bytes.fromhex(cli.cmd("CHAL", chal.hex())[1])
            c.sendall(_with_auth(16, flags, 1, b"\0" * 4, auth))
            s.recv(65536)
            r = srv.cmd("AUTH", auth.hex())
            assert r[0] == "OK" and r[5] == "1", r
            req = bytes.fromhex(cli.cmd("PROTECT", "1", "6", "req", req_stub.hex())[1])
            c.sendall(req)
            got = b""
            while len(got) < len(req):
                got += s.recv(65536)
            assert srv.cmd("UNPROTECT", "1", got.hex()) == ["STUB", req_stub.hex()]
            resp = bytes.fromhex(srv.cmd("PROTECT", "1", "6", "resp", resp_stub.hex())[1])
            s.sendall(resp)
            got = b""
            while len(got) < len(resp):
                got += c.recv(65536)
            assert cli.cmd("UNPROTECT", "1", got.hex()) == ["STUB", resp_stub.hex()]
            for x in (c, s, ls):
                x.close()
        pdus = [p for p in tshark_util.dissect(cap.path, decode_as_ports=[port],
                                               nt_password=PASSWORD) if p.ptype in (0, 2)]
        assert [p.ptype for p in pdus] == [0, 2], pdus
        assert all(p.auth_level == 6 and p.decrypted for p in pdus), pdus
        for ptype, stub in ((0, req_stub), (2, resp_stub)):
            dec = _tshark_decrypted(cap.path, port, ptype, PASSWORD)
            assert dec[:len(stub)] == stub  # tshark's bytes include the auth pad
        assert _tshark_decrypted(cap.path, port, 0, None) == b""  # not without the password
    finally:
        cli.close()
        srv.close()
