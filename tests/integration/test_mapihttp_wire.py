"""MAPI over HTTP bodies from a client and a server we did not write
(tests/lab/mapihttp_client.py on python3-requests, talking to the lab's
lab_mapihttp.py; both with their own body codec, tests/lab/mapihttp_codec.py)
decoded by our codec (src/transport/mapihttp) through build/mapiproxy-decode --mapihttp.

Every request body and every response stream (PROCESSING / PENDING / DONE,
headers, body) the client and server exchange in an EMSMDB session and an
NSPI session covering every request type is captured; each must decode,
re-encode exactly, and give the values the client read.

The lab's MAPI/HTTP side lives in tests/lab (branch mhlab); until that is in
this tree, MAPIHTTP_LAB_DIR may point at a tests/lab directory that has it.
Run: /usr/bin/python3 -m pytest -q tests/integration/test_mapihttp_wire.py
"""
import json
import os
import signal
import subprocess
import sys
import threading

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DECODE = os.path.join(ROOT, "build", "mapiproxy-decode")


def _lab_dir():
    for d in (os.path.join(ROOT, "tests", "lab"), os.environ.get("MAPIHTTP_LAB_DIR", "")):
        if d and os.path.exists(os.path.join(d, "mapihttp_client.py")):
            return os.path.abspath(d)
    return None


LABDIR = _lab_dir()
needs_lab = pytest.mark.skipif(LABDIR is None, reason="the lab has no MAPI/HTTP listener yet")

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
SERVER_DN = ORG + "/cn=Configuration/cn=Servers/cn=EXLAB01"
ALICE = ORG + "/cn=Recipients/cn=alice"
BOB = ORG + "/cn=Recipients/cn=bob"
STAFF = ORG + "/cn=Recipients/cn=staff"


@pytest.fixture(scope="module")
def mh():
    """The lab with MAPI/HTTP on plain HTTP, no authentication, PENDING
    keep-alives every 0.05 s and every request held 0.12 s."""
    sys.path.insert(0, LABDIR)
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LABDIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", "0", "--mapihttp-port", "0", "--http-auth", "none",
         "--pending-period", "0.05", "--pending-delay", "0.12", "--notification-wait", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY ") and "mapihttp=" in line, line
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    yield "http://127.0.0.1:%d" % ports["mapihttp"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


class Capture:
    """Tees what a requests.Session sends and receives."""

    def __init__(self, session):
        self.calls = []
        orig = session.post

        def post(url, data=None, headers=None, **kw):
            r = orig(url, data=data, headers=headers, **kw)
            chunks = []
            inner = r.iter_content

            def tee(*a, **k):
                for c in inner(*a, **k):
                    chunks.append(c)
                    yield c
            r.iter_content = tee
            self.calls.append(dict(rtype=headers["X-RequestType"], request=bytes(data or b""),
                                   chunks=chunks, http=r))
            return r
        session.post = post


def decode(tmp_path, rtype, direction, data, stream=False):
    f = tmp_path / ("%s-%s.bin" % (rtype, direction))
    f.write_bytes(data)
    cmd = [DECODE, "--mapihttp", rtype, "--" + direction, str(f)] + (["--stream"] if stream else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, (rtype, direction, p.stderr)
    return json.loads(p.stdout)


def run_sessions(base):
    import mapihttp_client as MH
    import emsmdb_client as EC
    import mapihttp_codec as C
    seen = {}
    ems = MH.EmsmdbHttp(base)
    cap_e = Capture(ems.http)
    seen["connect"] = ems.connect(ALICE)
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    seen["logon"] = logon
    seen["notification"] = ems.notification_wait()
    ems.ping()
    seen["disconnect"] = ems.disconnect()

    ab = MH.NspiHttp(base)
    cap_n = Capture(ab.http)
    seen["bind"] = ab.bind()
    seen["special"] = ab.get_special_table(flags=0x4)
    seen["rows"] = ab.query_rows(100, [0x3001001F, 0x3A00001F, 0x39FE001F, 0x0FFF0102,
                                       0x8170101F, 0x12340003])
    seen["rows_unspec"] = ab.query_rows(1, [0x30010000, 0x12340000])
    mids = ab.dn_to_mid([SERVER_DN, ALICE, "/o=Nobody/cn=x"])["MinimalIds"]
    seen["mids"] = mids
    seen["props"] = ab.get_props(mids[1], [0x3001001F, 0x12340003])
    ab.get_prop_list(mids[1])
    ab.query_columns(flags=0x80000000)
    bob = ab.dn_to_mid([BOB])["MinimalIds"][0]
    seen["cmp"] = ab.compare_mids(mids[1], bob)
    seen["resolve"] = ab.resolve_names(["alice", "nobody", "Lab"], [0x3001001F, 0x3003001F])
    ab.get_matches(("content", 0x00010002, 0x3001001F, (0x3001001F, "bo")), [0x3001001F])
    ab.get_matches(("and", [("exist", 0x3A18001F),
                            ("property", 4, 0x3A18001F, (0x3A18001F, "sales"))]), [0x3A00001F])
    staff = ab.dn_to_mid([STAFF])["MinimalIds"][0]
    ab.get_matches(None, [0x3A00001F], stat=dict(ab.stat, CurrentRec=staff))
    ab.seek_entries("C", [0x3001001F])
    ab.update_stat(C.new_stat(CurrentRec=0, Delta=2))
    ab.resort_restriction([bob, mids[1], 0x7777])
    ab.get_mailbox_url(SERVER_DN)
    ab.get_address_book_url(ALICE)
    ab.get_template_info(0x0)
    ab.mod_props(mids[1], [(0x3001001F, "Eve")])     # refused: AccessDenied
    eid = seen["rows"]["Rows"][0][0x0FFF0102]
    ab.mod_link_att(0x8009000D, staff, [eid])
    ab.mod_link_att(0x8009000D, staff, [eid], delete=True)
    ab.ping()
    ab.unbind()
    return cap_e.calls + cap_n.calls, seen


@needs_lab
def test_lab_bodies_decode(mh, tmp_path):
    calls, seen = run_sessions(mh)
    types = set()
    pending = 0
    out = {}
    for c in calls:
        rt = c["rtype"]
        types.add(rt)
        req = decode(tmp_path, rt, "request", c["request"])
        assert req["exact"] is True and req["value"]["request_type"] == rt
        assert c["http"].status_code == 200
        assert c["http"].headers.get("X-ResponseCode") == "0"
        stream = b"".join(c["chunks"])
        resp = decode(tmp_path, rt, "response", stream, stream=True)
        st = resp["stream"]
        assert st["processing"] == 1 and st["X-ResponseCode"] == 0
        assert st["X-ElapsedTime"] is not None and st["X-StartTime"]
        pending += st["pending"]
        assert resp["exact"] is True, rt
        out.setdefault(rt, []).append((req["value"], resp["value"]))

    # every request type of the brief went over the wire
    assert types == {"Connect", "Execute", "NotificationWait", "PING", "Disconnect", "Bind",
                     "GetSpecialTable", "QueryRows", "DNToMId", "GetProps", "GetPropList",
                     "QueryColumns", "CompareMIds", "ResolveNames", "GetMatches", "SeekEntries",
                     "UpdateStat", "ResortRestriction", "GetMailboxUrl", "GetAddressBookUrl",
                     "GetTemplateInfo", "ModProps", "ModLinkAtt", "Unbind"}
    assert pending > 0          # the stream parser saw PENDING keep-alives

    # our values are the ones the lab's client read
    creq, cresp = out["Connect"][0]
    assert creq["twin"] == "EcDoConnectEx" and creq["call"]["szUserDN"] == ALICE
    assert cresp["call"]["szDisplayName"] == seen["connect"]["DisplayName"]
    assert cresp["call"]["szDNPrefix"] == seen["connect"]["DnPrefix"]
    ereq, eresp = out["Execute"][0]
    assert ereq["twin"] == "EcDoRpcExt2" and ereq["call"]["cbIn"] > 0
    assert eresp["call"]["pcbOut"] == len(bytes.fromhex(eresp["call"]["rgbOut"])) > 0
    _, bresp = out["Bind"][0]
    assert bytes.fromhex(bresp["call"]["pServerGuid"]["ab"]) == seen["bind"]["ServerGuid"]
    _, qresp = out["QueryRows"][0]
    rows = qresp["call"]["ppRows"]["aRow"]
    assert len(rows) == len(seen["rows"]["Rows"]) > 0
    for mine, theirs in zip(rows, seen["rows"]["Rows"]):
        for v in mine["lpProps"]:
            tag = int(v["ulPropTag"], 16)
            if tag & 0xFFFF == 0x001F:
                assert v["Value"]["lpszW"] == theirs[tag]
            elif tag & 0xFFFF == 0x000A:      # errors are PtypErrorCode values in the twin
                col = [t for t in theirs if t >> 16 == tag >> 16][0]
                assert theirs[col] in (("error", v["Value"]["err"] & 0xFFFFFFFF), ("missing",))
    _, uresp = out["QueryRows"][1]
    vals = uresp["call"]["ppRows"]["aRow"][0]["lpProps"]
    assert vals[0]["ulPropTag"] == "0x3001001E"   # PtypUnspecified column, typed value
    assert vals[1]["ulPropTag"] == "0x1234000A" and vals[1]["Value"]["err"] & 0xFFFFFFFF == 0x8004010F
    dreq, dresp = out["DNToMId"][0]
    assert dreq["call"]["pNames"]["Strings"][1] == ALICE
    assert [int(x, 16) for x in dresp["call"]["ppOutMIds"]["aulPropTag"]] == seen["mids"]
    _, presp = out["GetProps"][0]
    assert presp["CodePage"] > 0
    assert [v["ulPropTag"] for v in presp["call"]["ppRows"]["lpProps"]] == \
        ["0x%08X" % t for t, _ in seen["props"]["PropertyValues"]]
    _, cmpresp = out["CompareMIds"][0]
    assert cmpresp["call"]["plResult"] == seen["cmp"]["Result"]
    rreq, _ = out["ResolveNames"][0]
    assert rreq["twin"] == "NspiResolveNamesW" and rreq["call"]["paWStr"]["Strings"] == \
        ["alice", "nobody", "Lab"]
    greq, _ = out["GetMatches"][0]
    assert greq["call"]["Filter"]["rt"] == 3
    _, nresp = out["NotificationWait"][0]
    assert nresp["call"]["EventPending"] == seen["notification"]["EventPending"]


def test_malformed_request_body_maps_to_invalid_request_body(tmp_path):
    f = tmp_path / "bad.bin"
    f.write_bytes(b"\x00\x00\x00\x00\xff")       # Bind: HasState true, no STAT
    p = subprocess.run([DECODE, "--mapihttp", "Bind", "--request", str(f)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "X-ResponseCode 12" in p.stderr


def test_spec_vectors_print_json(tmp_path):
    """The request and response vectors of tests/unit/test_mapihttp.c (the
    fuzz seeds) through mapiproxy-decode: Python's json module must accept
    every output, and the direction and request type must be the seed's."""
    corpus = os.path.join(ROOT, "tests", "fuzz", "corpus", "mapihttp")
    seen = set()
    for name in sorted(os.listdir(corpus)):
        if "-" not in name or name.startswith("regress"):
            continue
        rtype, direction = name.rsplit("-", 1)
        with open(os.path.join(corpus, name), "rb") as f:
            body = f.read()[1:]
        out = decode(tmp_path, rtype, direction, body)
        assert out["exact"] is True and out["body_len"] == len(body)
        assert out["value"]["request_type"] == rtype
        assert out["value"]["direction"] == direction
        seen.add(rtype)
    assert len(seen) == 24
