"""The codecs against code we did not write: stubs captured live from the lab
with Impacket's clients are decoded by build/mapiproxy-decode, and its JSON is
compared with what Impacket itself parsed from the same bytes (row counts,
display names, DNs, minimal entry ids, server names)."""
import json
import os
import re
import struct
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DECODE = os.environ.get("MAPIPROXY_DECODE", os.path.join(ROOT, "build", "mapiproxy-decode"))
sys.path.insert(0, os.path.join(ROOT, "tests", "unit", "data", "codec"))

import importlib.util  # noqa: E402

# Loaded under a name of its own: tests/unit/data/{codec,rop}/ both have a
# capture.py, and pytest runs both test files in one interpreter.
_spec = importlib.util.spec_from_file_location(
    "codec_capture", os.path.join(ROOT, "tests", "unit", "data", "codec", "capture.py"))
capture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(capture)
from impacket.dcerpc.v5 import nspi  # noqa: E402

PR_DISPLAY_NAME_W = 0x3001001F
PR_DISPLAY_NAME_A = 0x3001001E
PR_EMAIL_ADDRESS_W = 0x3003001F


def decode(tmp_path, iface, opnum, direction, stub, pdu=False):
    f = tmp_path / ("stub-%s-%d-%s.bin" % (iface, opnum, direction))
    f.write_bytes(stub)
    args = [DECODE, "--interface", iface, "--opnum", str(opnum)]
    args += ["--pdu", str(f)] if pdu else ["--" + direction, str(f)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def calls():
    if not os.path.exists(DECODE):
        pytest.skip("build/mapiproxy-decode not built")
    return capture.capture()


def find(calls, iface, opnum, n=1, tag=None):
    got = [c for c in calls if c.iface == iface and c.opnum == opnum and c.tag == tag]
    return got[n - 1]


def strip(s):
    if isinstance(s, bytes):
        s = s.decode("latin-1")
    return s.rstrip("\x00")


def test_every_spec_stub_decodes(calls, tmp_path):
    n = 0
    for c in calls:
        if c.tag or (c.iface == "emsmdb" and c.opnum == 0):
            continue
        for d, stub in (("in", c.stub_in), ("out", c.stub_out)):
            if stub is not None:
                j = decode(tmp_path, c.iface, c.opnum, d, stub)
                assert j["stub_len"] == len(stub)
                n += 1
    assert n >= 60


def test_rfr(calls, tmp_path):
    c = find(calls, "rfr", 0)
    j = decode(tmp_path, "rfr", 0, "out", c.stub_out)["value"]
    assert j["ppszServer"] == strip(c.parsed["ppszServer"]) == "exlab01.lab.example"
    ji = decode(tmp_path, "rfr", 0, "in", c.stub_in)["value"]
    assert ji["pUserDN"] == capture.USER_DN
    c = find(calls, "rfr", 1)
    j = decode(tmp_path, "rfr", 1, "out", c.stub_out)["value"]
    assert j["ppszServerFQDN"] == strip(c.parsed["ppszServerFQDN"])
    ji = decode(tmp_path, "rfr", 1, "in", c.stub_in)["value"]
    assert ji["szMailboxServerDN"] == capture.SERVER_DN
    assert ji["cbMailboxServerDN"] == len(capture.SERVER_DN) + 1


def tag(x):
    """The codec prints property tags (and MS-NSPI's MId arrays, which share
    PropertyTagArray_r) as hex strings, "0x0037001F", as MAPI tools do."""
    assert isinstance(x, str) and re.fullmatch(r"0x[0-9A-F]{8}", x), x
    return int(x, 16)


def _rows(j):
    """{proptag: value} per row, from the codec's JSON of a PropertyRowSet_r."""
    out = []
    for row in j["aRow"]:
        d = {}
        for p in row["lpProps"]:
            (arm, v), = p["Value"].items()
            if arm == "bin":
                v = bytes.fromhex(v["lpb"])
            elif arm in ("MVszA", "MVszW"):
                v = v["lppszA" if arm == "MVszA" else "lppszW"]
            d[tag(p["ulPropTag"])] = v
        out.append(d)
    return out


def _impacket_value(v):
    if hasattr(v, "getData"):        # Impacket parses some binaries (entry ids)
        v = v.getData()
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return strip(v)
    if isinstance(v, list):
        return [_impacket_value(x) for x in v]
    return v


def test_nspi_query_rows(calls, tmp_path):
    for k in (1, 2):
        c = find(calls, "nspi", 3, k)
        j = decode(tmp_path, "nspi", 3, "out", c.stub_out)["value"]
        ours = _rows(j["ppRows"])
        theirs = c.parsed["rows"]
        assert len(ours) == len(theirs) == j["ppRows"]["cRows"] > 0
        for a, b in zip(ours, theirs):
            for tag, v in b.items():
                if tag & 0xFFFF in (0x1E, 0x1F, 0x102, 0x101E, 0x101F, 0x3):
                    assert a[tag] == _impacket_value(v), hex(tag)
        names = {r.get(PR_DISPLAY_NAME_W) or r.get(PR_DISPLAY_NAME_A) for r in ours}
        assert "Alice Anders" in names


def test_nspi_resolve_and_dn(calls, tmp_path):
    c = find(calls, "nspi", 19)
    j = decode(tmp_path, "nspi", 19, "out", c.stub_out)["value"]
    assert [tag(x) for x in j["ppMIds"]["aulPropTag"]] == c.parsed["mids"]
    assert len(_rows(j["ppRows"])) == len(c.parsed["rows"])
    ji = decode(tmp_path, "nspi", 19, "in", c.stub_in)["value"]
    assert ji["paStr"]["Strings"] == ["alice", "bob", "nobody"]
    c = find(calls, "nspi", 20)
    j = decode(tmp_path, "nspi", 20, "out", c.stub_out)["value"]
    ours = _rows(j["ppRows"])
    assert [r[PR_DISPLAY_NAME_W] for r in ours] == \
        [strip(r[PR_DISPLAY_NAME_W]) for r in c.parsed["rows"]]
    assert [r[PR_EMAIL_ADDRESS_W] for r in ours] == \
        [strip(r[PR_EMAIL_ADDRESS_W]) for r in c.parsed["rows"]]
    ji = decode(tmp_path, "nspi", 20, "in", c.stub_in)["value"]
    assert ji["paWStr"]["Strings"] == ["carol", "Administrator", "Lab"]
    c = find(calls, "nspi", 7)
    j = decode(tmp_path, "nspi", 7, "out", c.stub_out)["value"]
    assert [tag(x) for x in j["ppOutMIds"]["aulPropTag"]] == c.parsed["mids"]
    ji = decode(tmp_path, "nspi", 7, "in", c.stub_in)["value"]
    assert ji["pNames"]["Strings"] == [capture.USER_DN, capture.SERVER_DN, "/o=nowhere"]


def test_nspi_misc(calls, tmp_path):
    c = find(calls, "nspi", 16)
    j = decode(tmp_path, "nspi", 16, "out", c.stub_out)["value"]
    assert j["ppColumns"]["cValues"] == len(j["ppColumns"]["aulPropTag"]) == c.parsed["cols"]
    c = find(calls, "nspi", 8)
    j = decode(tmp_path, "nspi", 8, "out", c.stub_out)["value"]
    assert len(j["ppPropTags"]["aulPropTag"]) == c.parsed["tags"]
    c = find(calls, "nspi", 10)
    j = decode(tmp_path, "nspi", 10, "out", c.stub_out)["value"]
    assert j["plResult"] == c.parsed["plResult"]


def test_nspi_get_props_network_address(calls, tmp_path):
    """The property the rewrite module works on: PR_EMS_AB_NETWORK_ADDRESS."""
    c = find(calls, "nspi", 9)
    j = decode(tmp_path, "nspi", 9, "out", c.stub_out)["value"]
    props = {tag(p["ulPropTag"]): p["Value"] for p in j["ppRows"]["lpProps"]}
    assert "ncacn_ip_tcp:EXLAB01.lab.example" in props[0x8170101E]["MVszA"]["lppszA"]
    assert "ncacn_ip_tcp:EXLAB01.lab.example" in props[0x8170101F]["MVszW"]["lppszW"]
    assert "/cn=EXLAB01/" in props[0x8006001E]["lpszA"]


def test_nspi_get_matches_restrictions(calls, tmp_path):
    c = find(calls, "nspi", 5, 4)
    j = decode(tmp_path, "nspi", 5, "in", c.stub_in)["value"]
    f = j["Filter"]
    assert f["rt"] == 2
    o = f["res"]["resNot"]["lpRes"]["res"]["resOr"]
    assert o["cRes"] == 3 and [x["rt"] for x in o["lpRes"]] == [0, 6, 5]
    assert [x["rt"] for x in o["lpRes"][0]["res"]["resAnd"]["lpRes"]] == [8, 7]
    c = find(calls, "nspi", 5, 1)
    j = decode(tmp_path, "nspi", 5, "in", c.stub_in)["value"]
    rc = j["Filter"]["res"]["resContent"]
    assert rc["lpProp"]["Value"]["lpszW"] == "ali" and rc["ulFuzzyLevel"] == 0x10001


def test_impacket_deviant_requests_refused(calls, tmp_path):
    """Impacket's NspiGetProps/GetSpecialTable/SeekEntries/GetIDsFromNames
    requests do not follow the MS-OXNSPI IDL; the codec refuses them (exit 1)."""
    dev = [c for c in calls if c.tag == "impacket"]
    assert {c.opnum for c in dev} == {4, 9, 12, 18}
    for c in dev:
        f = tmp_path / "dev.bin"
        f.write_bytes(c.stub_in)
        r = subprocess.run([DECODE, "--interface", "nspi", "--opnum", str(c.opnum), "--in",
                            str(f)], capture_output=True, text=True)
        assert r.returncode == 1 and "cannot decode" in r.stderr


def test_emsmdb(calls, tmp_path):
    c = find(calls, "emsmdb", 10)
    j = decode(tmp_path, "emsmdb", 10, "out", c.stub_out)["value"]
    assert j["szDisplayName"] == strip(c.parsed["szDisplayName"])
    assert j["szDNPrefix"] == strip(c.parsed["szDNPrefix"])
    ji = decode(tmp_path, "emsmdb", 10, "in", c.stub_in)["value"]
    assert ji["szUserDN"] == capture.USER_DN and ji["rgwClientVersion"] == [0x0C, 0x183E, 0x3E8]
    c = find(calls, "emsmdb", 11)
    ji = decode(tmp_path, "emsmdb", 11, "in", c.stub_in)["value"]
    rgb = bytes.fromhex(ji["rgbIn"])
    assert len(rgb) == ji["cbIn"]
    ver, flags, size, actual = struct.unpack_from("<HHHH", rgb)
    assert flags & 0x4 and size + 8 == len(rgb)
    jo = decode(tmp_path, "emsmdb", 11, "out", c.stub_out)["value"]
    assert len(bytes.fromhex(jo["rgbOut"])) == jo["pcbOut"]
    c = find(calls, "emsmdb", 2)
    ji = decode(tmp_path, "emsmdb", 2, "in", c.stub_in)["value"]
    rops = bytes(b ^ 0xA5 for b in bytes.fromhex(ji["rgb"]))
    assert struct.unpack_from("<H", rops)[0] <= ji["pcb"] == len(rops)
    assert rops[2] == 0xFE   # RopLogon


def _fragments(stub, opnum, call_id, frag, ptype):
    """Request/response PDUs carrying stub in fragments of `frag` stub bytes,
    built with Impacket's own header classes."""
    from impacket.dcerpc.v5.rpcrt import MSRPCHeader, MSRPCRequestHeader, MSRPCRespHeader
    out = b""
    pieces = [stub[i:i + frag] for i in range(0, len(stub), frag)] or [b""]
    for k, piece in enumerate(pieces):
        h = MSRPCRequestHeader() if ptype == 0 else MSRPCRespHeader()
        h["type"] = ptype
        h["flags"] = (1 if k == 0 else 0) | (2 if k == len(pieces) - 1 else 0)
        h["call_id"] = call_id
        h["alloc_hint"] = len(stub) - k * frag
        h["ctx_id"] = 0
        if ptype == 0:
            h["op_num"] = opnum
        h["pduData"] = piece
        out += h.get_packet()
    return out


def test_pdu_reassembly(calls, tmp_path):
    c = find(calls, "nspi", 3)
    want = decode(tmp_path, "nspi", 3, "out", c.stub_out)
    pdu = _fragments(c.stub_out, 3, 7, 64, 2)
    got = decode(tmp_path, "nspi", 3, "out", pdu, pdu=True)
    assert got == want
    c = find(calls, "nspi", 19)
    f = tmp_path / "req.bin"
    f.write_bytes(_fragments(c.stub_in, 19, 8, 40, 0))
    r = subprocess.run([DECODE, "--interface", "nspi", "--pdu", str(f)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["operation"] == "NspiResolveNames" and j["direction"] == "in"
    # a missing last fragment is refused
    f.write_bytes(_fragments(c.stub_in, 19, 8, 40, 0)[:-60])
    r = subprocess.run([DECODE, "--interface", "nspi", "--pdu", str(f)], capture_output=True,
                       text=True)
    assert r.returncode == 1


def test_emsmdb_connect(calls, tmp_path):
    """EcDoConnect (Exchange 2003) with rgwClientVersion and pullTimeStamp in
    and out, as in OpenChange's and Wireshark's IDLs (and now the lab)."""
    c = find(calls, "emsmdb", 0)
    ji = decode(tmp_path, "emsmdb", 0, "in", c.stub_in)["value"]
    assert ji["szUserDN"] == capture.USER_DN
    assert ji["rgwClientVersion"] == [0x0C, 0x183E, 0x3E8]
    jo = decode(tmp_path, "emsmdb", 0, "out", c.stub_out)["value"]
    assert jo["result"] == 0 and jo["szDisplayName"] and len(jo["rgwServerVersion"]) == 3
