"""Messages, not ROPs (issue 15): online-mode sessions through the proxy with
the mime-dump module; the .eml files it writes are read with Python's
`email` package (code we did not write) and compared with the lab's source
messages (tests/lab/lab_store.py): subject, sender, recipients, both bodies
and every attachment's bytes.  Downloads (the lab's Inbox) and an upload with
a 10 MB attachment; values past the spill size go to private temporary files.
Also: with mime-dump loaded, the ROP byte-identity session still relays every
byte unchanged."""
import email
import email.policy
import hashlib
import json
import os
import time

import pytest

import content_client as CC
import emsmdb_client as EC
import emsmdb_ndr as N
import lab_store as LS
from test_lab import ALICE, online_session
from test_http_front_lab import lab_https_fixture, ntlm, start_front
from test_rop_modules import dump_lab, lab_wire, wire_log  # noqa: F401 (fixtures)



@pytest.fixture(scope="module", autouse=True)
def ten_mb():
    """This file checks the 10 MB case: its labs and LS.messages() carry the
    10 MB attachment (other tests' labs a smaller one, lab_store.big_size)."""
    with LS.big_attachments():
        yield


# the lab's MAPI/HTTP server without PENDING delays (each Execute would wait)
env = lab_https_fixture("mimedump")

FL = N.EXT2_NO_COMPRESSION      # the lab's LZ77 is pure Python: big transfers uncompressed
PidTagMid, PidTagSubject = 0x674A0014, 0x0037001F


def dump_proxy(make_proxy, lab, tmp_path, mods="mime-dump", **opts):
    out = tmp_path / "eml"
    out.mkdir()
    extra = {"dcerpc_mapiproxy:modules": mods, "mime-dump:dir": str(out),
             "mime-dump:spill size": "65536", "mime-dump:tmpdir": str(tmp_path)}
    extra.update(opts)
    return make_proxy(upstream_epm_port=lab.epm_port, extra=extra), out


def lines(out):
    p = out / "messages.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def read_eml(path):
    with open(path, "rb") as f:
        return email.message_from_binary_file(f, policy=email.policy.default)


def addrs(msg, header):
    h = msg.get(header)
    return sorted(a.addr_spec for a in h.addresses) if h else []


def parts(msg):
    """The leaf parts of msg, not descending into message/rfc822."""
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        for sub in msg.iter_parts():
            yield from parts(sub)
    else:
        yield msg


def check_eml(msg, src):
    """An email.message.EmailMessage against a lab_store dict."""
    p = src["props"]
    assert msg["Subject"] == p[LS.PidTagSubject]
    sender = p.get(LS.PidTagSentRepresentingEmailAddress)
    assert addrs(msg, "From") == [sender]
    for kind, header in ((LS.MAPI_TO, "To"), (LS.MAPI_CC, "Cc")):
        want = sorted(r["props"][LS.PidTagSmtpAddress] for r in src["recipients"]
                      if r["props"][LS.PidTagRecipientType] == kind)
        assert addrs(msg, header) == want, header
    bodies = {}
    atts = []
    for part in parts(msg):
        ct = part.get_content_type()
        if part.get_content_disposition() == "attachment":
            atts.append(part)
            continue
        if ct in ("text/plain", "text/html", "text/rtf") and ct not in bodies:
            bodies[ct] = part.get_payload(decode=True)
    assert bodies["text/plain"].decode("utf-8") == p[LS.PidTagBody]
    if LS.PidTagHtml in p:
        assert bodies["text/html"] == p[LS.PidTagHtml]
    if LS.PidTagRtfCompressed in p:
        assert bodies["text/rtf"] == LS.rtf_of(src)
    want = [a for a in src["attachments"]
            if a["props"][LS.PidTagAttachMethod] in (LS.ATTACH_BY_VALUE, LS.ATTACH_EMBEDDED_MSG)]
    assert len(atts) == len(want)
    for part, a in zip(atts, want):
        if a["embedded"]:
            assert part.get_content_type() == "message/rfc822"
            inner = part.get_content()
            check_eml(inner, a["embedded"])
        else:
            assert part.get_filename() == a["props"][LS.PidTagAttachLongFilename]
            assert part.get_content_type() == a["props"][LS.PidTagAttachMimeTag]
            assert part.get_payload(decode=True) == a["props"][LS.PidTagAttachDataBinary]


def check_line(line, src):
    assert line["subject"] == src["props"][LS.PidTagSubject]
    by_name = {a.get("name"): a for a in line["attachments"]}
    for a in src["attachments"]:
        data = a["props"].get(LS.PidTagAttachDataBinary)
        if data is not None:
            got = by_name[a["props"][LS.PidTagAttachLongFilename]]
            assert got["sha256"] == hashlib.sha256(data).hexdigest()
            assert got["size"] == len(data)


def connect(port):
    dce = EC.connect("127.0.0.1", port)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    return dce, c, logon["FolderIds"]


def folder_mids(c, fid):
    cols = [PidTagMid, PidTagSubject]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, fid).get_contents_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 100, cols).release(2).release(1))
    return {row[PidTagSubject]: row[PidTagMid] for row in res[3]["Rows"]}


def test_online_download_and_upload_rpc(make_proxy, dump_lab, tmp_path):
    p, out = dump_proxy(make_proxy, dump_lab, tmp_path)
    dce, c, fids = connect(p.rpc_port)
    src = LS.messages()
    mids = folder_mids(c, fids[4])
    for m in src:
        CC.download(c, fids[4], mids[m["props"][LS.PidTagSubject]], flags=FL)
    up = LS.messages()[1]           # the 10 MB attachment, RTF body
    up["props"][LS.PidTagSubject] = "Upload with 10 MB"
    CC.upload(c, fids[5], up, submit=True, flags=FL)
    c.disconnect()
    dce.disconnect()
    got = lines(out)
    downs = [x for x in got if x["direction"] == "download"]
    ups = [x for x in got if x["direction"] == "upload"]
    assert len(downs) == 3 and len(ups) == 1, got
    assert all(x["mode"] == "online" for x in got)
    for line, m in zip(downs, src):
        assert line["completed_by"] == "RopRelease"
        check_line(line, m)
        check_eml(read_eml(line["eml"]), m)
    assert ups[0]["completed_by"] == "RopSaveChangesMessage"
    check_line(ups[0], up)
    check_eml(read_eml(ups[0]["eml"]), up)
    # m1 carries PidTagTransportMessageHeaders: its headers are those
    m1 = read_eml(downs[0]["eml"])
    assert m1["X-Lab-Scanned"] == "yes" and m1["Message-ID"] == "<report-1@lab.example>"
    # the .eml files are the proxy's alone; no temporary file is left behind
    assert all(os.stat(x["eml"]).st_mode & 0o077 == 0 for x in got)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("mapiproxy-msg-")]


def test_max_message_size_logged(make_proxy, dump_lab, tmp_path):
    p, out = dump_proxy(make_proxy, dump_lab, tmp_path,
                        **{"mime-dump:max message size": "1000000"})
    dce, c, fids = connect(p.rpc_port)
    mids = folder_mids(c, fids[4])
    big = LS.messages()[1]["props"][LS.PidTagSubject]
    small = LS.messages()[0]["props"][LS.PidTagSubject]
    CC.download(c, fids[4], mids[big], flags=FL)
    CC.download(c, fids[4], mids[small], flags=FL)
    c.disconnect()
    dce.disconnect()
    got = lines(out)
    assert [x["subject"] for x in got] == [small]
    assert "passes the maximum message size of 1000000 bytes" in p.log()


def test_byte_identity_with_mime_dump(make_proxy, dump_lab, tmp_path, wire_log):  # noqa: F811
    """test_rop_modules' byte-identity session, with mime-dump loaded too."""
    p, out = dump_proxy(make_proxy, dump_lab, tmp_path, mods="mpm_roptest, mime-dump",
                        **{"mpm_roptest:log": str(tmp_path / "roptest.log")})
    online_session({"emsmdb": p.rpc_port})
    up = [{"in": x["in"], "out": x["out"]} for x in lab_wire(dump_lab)]
    assert wire_log and wire_log == up
    # the download is never released: it completes when the session ends
    for _ in range(100):
        got = lines(out)
        mine = [x for x in got if x.get("subject", "").startswith("Lab test ")]
        if len(mine) >= 2:
            break
        time.sleep(0.1)
    subject = mine[0]["subject"]
    assert {x["direction"] for x in mine} == {"upload", "download"}, got
    msg = read_eml([x for x in mine if x["direction"] == "upload"][0]["eml"])
    assert msg["Subject"] == subject
    att = [x for x in msg.walk() if x.get_filename() == "data.bin"]
    assert att and att[0].get_payload(decode=True) == bytes(range(256)) * 150


def test_online_download_and_upload_mapihttp(make_proxy, env, tmp_path):
    """The same over MAPI/HTTP: the HTTPS front before the lab's MAPI/HTTP
    server (python3-requests client, NTLM)."""
    import mapihttp_client as MH
    out = tmp_path / "eml"
    out.mkdir()
    p = start_front(make_proxy, env, {"dcerpc_mapiproxy:modules": "mime-dump",
                                      "mime-dump:dir": str(out),
                                      "mime-dump:spill size": "65536",
                                      "mime-dump:tmpdir": str(tmp_path)})
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fids = logon["FolderIds"]
    src = LS.messages()
    mids = folder_mids(c, fids[4])
    for m in src:
        CC.download(c, fids[4], mids[m["props"][LS.PidTagSubject]], flags=FL)
    up = LS.messages()[1]
    up["props"][LS.PidTagSubject] = "Upload with 10 MB over MAPI/HTTP"
    CC.upload(c, fids[5], up, submit=True, flags=FL)
    assert c.disconnect()["ErrorCode"] == 0
    got = lines(out)
    downs = [x for x in got if x["direction"] == "download"]
    ups = [x for x in got if x["direction"] == "upload"]
    assert len(downs) == 3 and len(ups) == 1, got
    # "user": this front relays NTLM to the lab without terminating it, so
    # the identity the client's NTLM AUTHENTICATE names (mp_ident_user)
    assert all(x["user"] == "LAB\\alice" for x in got), got
    for line, m in zip(downs, src):
        check_line(line, m)
        check_eml(read_eml(line["eml"]), m)
    check_line(ups[0], up)
    check_eml(read_eml(ups[0]["eml"]), up)
