"""ROPs in the module chain (issue #5): the lab's Outlook-like online session
through the proxy with a module that has ROP hooks, so every EcDoRpcExt2 and
EcDoRpc buffer is decoded, tracked and (with touch) re-encoded from its
fields.  The client is the Impacket-based lab client; the upstream is the
lab.  The lab writes every rgbIn it received and rgbOut it sent
(LAB_WIRE_DUMP), the client records what it sent and got (EC.WIRE_LOG), so
the tests compare the bytes on both legs."""
import json
import struct

import pytest

import emsmdb_client as EC
import emsmdb_ndr as N
import lzxpress
from conftest import Lab
from test_lab import ALICE, PidTagSubject, online_session

MODES = {"xor": dict(), "compressed": dict(compress=True, xor=True),
         "plain": dict(compress=False, xor=False,
                       flags=N.EXT2_NO_COMPRESSION | N.EXT2_NO_XOR_MAGIC),
         "legacy": dict(use_ext2=False)}


@pytest.fixture
def dump_lab(tmp_path):
    path = tmp_path / "wire.jsonl"
    lab = Lab(tmp_path, env={"LAB_WIRE_DUMP": str(path)})
    lab.wire_path = path
    yield lab
    lab.stop()


def lab_wire(lab):
    if not lab.wire_path.exists():
        return []
    return [json.loads(x) for x in lab.wire_path.read_text().splitlines()]


def contents(rgb_hex):
    """The payload contents of an RPC_HEADER_EXT chain (un-XORed, decompressed)."""
    buf, off, out = bytes.fromhex(rgb_hex), 0, []
    while off < len(buf):
        ver, fl, size, actual = struct.unpack_from("<HHHH", buf, off)
        p = buf[off + 8:off + 8 + size]
        off += 8 + size
        if fl & N.RHE_XORMAGIC:
            p = N.xor_a5(p)
        if fl & N.RHE_COMPRESSED:
            p = lzxpress.decompress(p, actual)
        out.append(p)
        if fl & N.RHE_LAST:
            break
    return out


def roptest_proxy(make_proxy, lab, tmp_path, **opts):
    extra = {"dcerpc_mapiproxy:modules": "mpm_roptest",
             "mpm_roptest:log": str(tmp_path / "roptest.log")}
    extra.update({"mpm_roptest:" + k: v for k, v in opts.items()})
    return make_proxy(upstream_epm_port=lab.epm_port, extra=extra)


def ext2_request(cxh, rgb):
    """An EcDoRpcExt2 request (Impacket's NDR, emsmdb_ndr) carrying rgb."""
    req = N.EcDoRpcExt2()
    req["pcxh"].set_raw(cxh)
    req["pulFlags"] = 0
    req["rgbIn"] = rgb
    req["cbIn"] = len(rgb)
    req["pcbOut"] = 0x40000
    req["rgbAuxIn"] = b""
    req["cbAuxIn"] = 0
    req["pcbAuxOut"] = 0x1008
    return req


@pytest.fixture
def wire_log():
    EC.WIRE_LOG = []
    yield EC.WIRE_LOG
    EC.WIRE_LOG = None


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("touch", ["no", "yes"])
def test_session_decoded_and_byte_identical(make_proxy, dump_lab, tmp_path, wire_log, mode,
                                            touch):
    """Every ROP decoded (touch: and re-encoded from its fields): the session
    gives the lab's answers, and the upstream receives exactly the bytes the
    client sent, and the client exactly what the upstream answered."""
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, touch=touch)
    online_session({"emsmdb": p.rpc_port}, **MODES[mode])
    seen = (tmp_path / "roptest.log").read_text().splitlines()
    for rop in ("RopLogon", "RopOpenFolder", "RopGetHierarchyTable", "RopSetColumns",
                "RopQueryRows", "RopCreateMessage", "RopOpenStream", "RopWriteStream",
                "RopCommitStream", "RopCreateAttachment", "RopSaveChangesAttachment",
                "RopSaveChangesMessage", "RopSubmitMessage", "RopGetContentsTable",
                "RopOpenMessage", "RopReadStream", "RopGetAttachmentTable",
                "RopOpenAttachment", "RopGetPropertiesSpecific", "RopGetReceiveFolder",
                "RopRelease"):
        assert any(rop in x for x in seen), rop
    # the ROPs work on tracked objects: every ReadStream on a stream object
    reads = [x for x in seen if x.startswith("req RopReadStream")]
    assert reads and all(x.endswith(" stream") for x in reads), reads
    if mode != "legacy":
        up = [{"in": x["in"], "out": x["out"]} for x in lab_wire(dump_lab)]
        assert wire_log and wire_log == up
    log = p.log()
    # the session's deliberate unknown RopId 0x99 is the only buffer left undecoded
    bad = [x for x in log.splitlines() if "does not decode" in x]
    assert bad and all("unknown RopId" in x for x in bad), bad


def test_modules_change_rops_both_ways(make_proxy, dump_lab, tmp_path, wire_log):
    """swap: the module turns UTF-16 'H' into 'J' in every RopWriteStream, and
    back in every RopReadStream.  The upstream stores "Jello", the client
    reads "Hello" (the session asserts its body), and the changed payloads
    are re-compressed."""
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, swap="yes")
    online_session({"emsmdb": p.rpc_port}, compress=True, xor=True)
    up = lab_wire(dump_lab)
    sent = b"".join(c for x in up for c in contents(x["in"]))
    assert "Jello from the lab".encode("utf-16le") in sent
    assert "Hello from the lab".encode("utf-16le") not in sent
    got = b"".join(c for x in wire_log for c in contents(x["out"]))
    assert "Hello from the lab".encode("utf-16le") in got
    assert "Jello".encode("utf-16le") not in got
    # what changed travels compressed again (the client asked for it)
    client_ins = {w["in"] for w in wire_log}
    changed = [x for x in up if x["in"] not in client_ins]
    assert changed
    assert all(struct.unpack_from("<H", bytes.fromhex(x["in"]), 2)[0] & N.RHE_COMPRESSED
               for x in changed)


def test_module_answers_one_rop(make_proxy, dump_lab, tmp_path, wire_log):
    """answer 0x27 (RopGetReceiveFolder) with ecNotFound: the client gets
    that answer in place, the other ROPs of the buffer get the upstream's,
    and the upstream never sees a RopGetReceiveFolder."""
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, answer="0x27:0x8004010F")
    dce = EC.connect("127.0.0.1", p.rpc_port)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]
    res = c.execute(EC.RopBuffer().get_receive_folder(0, "IPM.Note")
                    .open_folder(0, 1, inbox)
                    .get_receive_folder(0, "IPM")
                    .get_properties_specific(1, [0x3001001F]))
    assert [x["ReturnValue"] for x in res] == [0x8004010F, 0, 0x8004010F, 0]
    assert res[3]["Row"][0x3001001F] == "Inbox"
    # a buffer of nothing but answered ROPs never leaves the proxy
    before = len(lab_wire(dump_lab))
    [only] = c.execute(EC.RopBuffer().get_receive_folder(0, "IPM.Note"))
    assert only["ReturnValue"] == 0x8004010F
    assert len(lab_wire(dump_lab)) == before
    assert c.disconnect()["ErrorCode"] == 0
    dce.disconnect()
    ids = [i for x in lab_wire(dump_lab) for i in x["rops"]]
    assert 0x02 in ids and 0x27 not in ids, "GetReceiveFolder reached the upstream"


def test_module_drops_release(make_proxy, dump_lab, tmp_path, wire_log):
    """drop 0x01: RopRelease never reaches the upstream (no response is
    expected for it), and the session goes on."""
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, drop="0x01")
    online_session({"emsmdb": p.rpc_port})
    seen = (tmp_path / "roptest.log").read_text().splitlines()
    assert "req RopRelease stream" in seen
    ids = [i for x in lab_wire(dump_lab) for i in x["rops"]]
    assert 0x2B in ids and 0x01 not in ids


def test_decode_tool_shows_rops_and_objects():
    """build/mapiproxy-decode names the ROPs of EcDoRpcExt2/EcDoRpc stubs
    (Outlook 2007's, from tests/data, and captured lab calls) and, given
    the request, the server objects a response created."""
    import os
    import subprocess
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    tool = os.path.join(root, "build", "mapiproxy-decode")
    data = os.path.join(root, "tests", "unit", "data", "codec")

    def run(*args):
        out = subprocess.run([tool, "--interface", "emsmdb", *args], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    outlook = os.path.join(root, "tests", "data", "emsmdb",
                           "002_Outlook_2007_in_Tables_operations_comp.dat")
    d = run("--opnum", "11", "--in", outlook)
    assert [r["Name"] for b in d["rops"] for r in b["Rops"]] == [
        "RopGetContentsTable", "RopSetColumns", "RopFindRow", "RopOpenFolder", "RopOpenFolder",
        "RopRegisterNotification", "RopGetPropertiesSpecific"]
    d = run("--opnum", "11", "--out", os.path.join(data, "emsmdb-11-out-2.bin"), "--request",
            os.path.join(data, "emsmdb-11-in-2.bin"))
    assert [r["Name"] for b in d["rops"] for r in b["Rops"]] == ["RopOpenFolder"]
    assert d["objects"] == [{"handle": "0x00000102", "type": "folder",
                             "created_by": "RopOpenFolder", "handle_index": 1}]
    d = run("--opnum", "2", "--out", os.path.join(data, "emsmdb-2-out-1.bin"), "--request",
            os.path.join(data, "emsmdb-2-in-1.bin"))
    assert d["rops"][0]["Rops"][0]["Name"] == "RopLogon"
    assert d["objects"][0]["type"] == "logon"


def test_buffer_too_small_with_proxy_answers(make_proxy, dump_lab, tmp_path, wire_log):
    """The upstream runs out of pcbOut and answers RopBufferTooSmall
    (MS-OXCROPS 2.2.15.1) with the request bytes it did not process.  The
    proxy answered RopGetReceiveFolder itself, before and after the cut:
    the client gets the proxy's answer in place, the upstream's answers, and
    a RopBufferTooSmall whose RequestBuffers are the client's own remaining
    ROPs, including the one the upstream never saw."""
    from test_lab import PidTagDisplayName
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, answer="0x27:0x8004010F")
    dce = EC.connect("127.0.0.1", p.rpc_port)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    cols = [PidTagDisplayName]
    b = EC.RopBuffer().get_receive_folder(0, "IPM.Note") \
        .open_folder(0, 1, logon["FolderIds"][3]).get_hierarchy_table(1, 2) \
        .set_columns(2, cols)
    tail = EC.RopBuffer().query_rows(2, 50, cols).get_receive_folder(0, "IPM")
    for d in tail.rops:
        b.rops.append(d)
    req = b.build(c.handles)
    resp, payloads = EC.ec_do_rpc_ext2(dce, c.cxh, req, max_out=8 + 2 + 6 + 8 + 6 + 7 + 4 * 16)
    assert resp["ErrorCode"] == 0
    out = payloads[0][1]
    rop_size = struct.unpack_from("<H", out)[0]
    body = out[2:rop_size]
    # RopGetReceiveFolder answered by the proxy, then the upstream's three
    assert body[:6] == struct.pack("<BBL", 0x27, 0, 0x8004010F)
    assert body[6] == 0x02 and struct.unpack_from("<L", body, 8)[0] == 0       # RopOpenFolder
    k = body.index(b"\xff", 6)
    assert body[k] == 0xFF                                                      # RopBufferTooSmall
    rest = body[k + 3:]
    assert rest == b"".join(d for d, _ in tail.rops)
    # the upstream saw neither GetReceiveFolder, and stopped at QueryRows
    [x] = [x for x in lab_wire(dump_lab) if 0x04 in x["rops"]]
    assert 0x27 not in x["rops"] and x["rops"][-1] == 0x15
    c.disconnect()
    dce.disconnect()


@pytest.mark.parametrize("touch", ["no", "yes"])
def test_chained_payloads(make_proxy, dump_lab, tmp_path, touch):
    """rgbIn with two RPC_HEADER_EXT payloads (two ROP buffers) gets rgbOut
    with two payloads: both decoded (and, with touch, re-encoded), both legs
    byte for byte the same."""
    from test_lab import PidTagDisplayName
    p = roptest_proxy(make_proxy, dump_lab, tmp_path, touch=touch)
    dce = EC.connect("127.0.0.1", p.rpc_port)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    h = c.handles
    b1 = EC.RopBuffer().open_folder(0, 1, logon["FolderIds"][3]).build(h)
    b2 = EC.RopBuffer().get_receive_folder(0, "IPM.Note") \
        .get_properties_specific(0, [PidTagDisplayName]).build(h)
    x1, x2 = N.xor_a5(lzxpress.compress(b1)), N.xor_a5(b2)
    rgb = struct.pack("<HHHH", 0, N.RHE_COMPRESSED | N.RHE_XORMAGIC, len(x1), len(b1)) + x1 + \
        struct.pack("<HHHH", 0, N.RHE_XORMAGIC | N.RHE_LAST, len(x2), len(b2)) + x2
    resp = dce.request(ext2_request(c.cxh, rgb), checkError=False)
    assert resp["ErrorCode"] == 0
    out = N.array_bytes(resp["rgbOut"])
    [x] = [x for x in lab_wire(dump_lab) if x["in"] == rgb.hex()]
    assert x["out"] == out.hex()
    assert len(contents(out.hex())) == 2
    seen = (tmp_path / "roptest.log").read_text().splitlines()
    assert "rsp RopOpenFolder logon" in seen and "rsp RopGetReceiveFolder logon" in seen
    c.disconnect()
    dce.disconnect()


def test_decode_tool_exit_status(tmp_path):
    """mapiproxy-decode exits 3 when the NDR of an EcDoRpcExt2 decodes but a
    ROP buffer does not (the JSON still names where), 0 when everything
    decodes, 1 when the NDR does not, 2 on usage errors; --help lists the
    codes.  The stubs are Impacket's NDR encoding (emsmdb_ndr)."""
    import os
    import subprocess
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    tool = os.path.join(root, "build", "mapiproxy-decode")

    def stub(rop_buffer):
        req = ext2_request(b"\0" * 20, EC.frame_ext(rop_buffer, compress=True, xor=True))
        f = tmp_path / ("s%d.bin" % len(list(tmp_path.iterdir())))
        f.write_bytes(req.getData())
        return str(f)

    def run(*args):
        return subprocess.run([tool, *args], capture_output=True, text=True)

    good = stub(EC.RopBuffer().get_properties_specific(0, [PidTagSubject]).build([0x101]))
    r = run("--interface", "emsmdb", "--opnum", "11", "--in", good)
    assert r.returncode == 0, r.stderr
    [rop] = json.loads(r.stdout)["rops"][0]["Rops"]
    assert rop["PropertyTags"] == ["0x0037001f"]
    bad = stub(EC.RopBuffer().get_properties_specific(0, [PidTagSubject])
               .raw(b"\x99\x00\x00").build([0x101]))
    r = run("--interface", "emsmdb", "--opnum", "11", "--in", bad)
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert json.loads(r.stdout)["rops"][0]["undecodable"] == "unknown RopId"
    assert "does not decode" in r.stderr
    trunc = tmp_path / "trunc.bin"
    trunc.write_bytes(open(good, "rb").read()[:30])
    assert run("--interface", "emsmdb", "--opnum", "11", "--in", str(trunc)).returncode == 1
    assert run("--interface", "emsmdb").returncode == 2
    h = run("--help")
    assert h.returncode == 0 and "  3  " in h.stdout and "0x0037001F" in h.stdout
    # NSPI property tags as MAPI tools print them
    data = os.path.join(root, "tests", "unit", "data", "codec", "nspi-3-in-1.bin")
    r = run("--interface", "nspi", "--opnum", "3", "--in", data)
    assert r.returncode == 0
    tags = json.loads(r.stdout)["value"]["pPropTags"]["aulPropTag"]
    assert tags[0] == "0x3001001F" and all(len(t) == 10 for t in tags)
