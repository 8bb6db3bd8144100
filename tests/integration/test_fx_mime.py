"""Cached mode, messages not ROPs (issue 15): mime-dump over FastTransfer
streams through the proxy, over RPC and over MAPI/HTTP.

The lab (tests/lab/lab_ics.py; streams written by lab_fxwriter.py from
MS-OXCFXICS) serves an ICS download of its Inbox (lab_store's messages: HTML,
compressed RTF, attachments, an embedded message, named properties; big.bin
at 300 KB here, LAB_BIG_ATTACHMENT_SIZE, to stay fast) in 4000-byte
GetBuffers; the client then uploads by ICS (ImportMessageChange + online
ROPs, with an attachment), by FastTransfer (DestinationConfigure + PutBuffer
in 7000-byte pieces) and copies a message back (CopyTo).  Every .eml that
mime-dump writes is read with Python's `email` package and compared with the
source: subject, sender, recipients, bodies, every attachment's bytes; the
JSON lines say mode, direction, folder and message ids (from the change
headers)."""
import json
import os
import sys
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import content_client as CC  # noqa: E402
import emsmdb_client as EC  # noqa: E402
import ics_client as IC  # noqa: E402
import lab_store as LS  # noqa: E402
from conftest import Lab  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_http_front_lab import lab_env  # noqa: E402
from test_mime_dump import addrs, check_eml, check_line, parts, read_eml  # noqa: E402
from test_rop_lifetime import proxy_before  # noqa: E402

SMALL = 300 * 1024
LABENV = {"LAB_BIG_ATTACHMENT_SIZE": str(SMALL)}
SUBJECT, PidTagMid = 0x0037001F, 0x674A0014
ATT_DATA = bytes(range(256)) * 300 + b"tail"


@pytest.fixture(scope="module")
def mh_env(tmp_path_factory):
    yield from lab_env(tmp_path_factory, LABENV, "fxmime", ())


@pytest.fixture(scope="module")
def rpc_lab(tmp_path_factory):
    """One RPC lab for the file (as the MAPI/HTTP one): the tests allow for
    each other's uploads in Sent Items."""
    lab = Lab(tmp_path_factory.mktemp("fxmime-rpc"), env=LABENV)
    yield lab
    lab.stop()


@pytest.fixture(params=["rpc", "mapihttp"])
def session(request, make_proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_BIG_ATTACHMENT_SIZE", str(SMALL))  # lab_store here, too
    out = tmp_path / "eml"
    out.mkdir()
    opts = {"dcerpc_mapiproxy:modules": "mime-dump", "mime-dump:dir": str(out),
            "mime-dump:spill size": "65536", "mime-dump:tmpdir": str(tmp_path)}
    p, t, _ = proxy_before(request, make_proxy, request.param, opts, "rpc_lab", "mh_env")
    yield p, t, out


def wait_lines(out, pred, n, timeout=20):
    path = out / "messages.jsonl"
    got = []
    for _ in range(timeout * 10):
        got = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        got = [x for x in got if pred(x)]
        if len(got) >= n:
            return got
        time.sleep(0.1)
    raise AssertionError("%d of %d messages in %s" % (len(got), n, path))


def attachments(msg):
    return [p for p in parts(msg) if p.get_content_disposition() == "attachment"]


def test_cached_mode_mime(session, tmp_path):
    p, t, out = session
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    inbox, sent = logon["FolderIds"][4], logon["FolderIds"][6]

    # ---- ICS download of the Inbox, split at 4000 bytes
    inb = IC.sync_folder(c, 0, inbox, buffer_size=4000)
    src = {m["props"][SUBJECT]: m for m in LS.messages()}
    mids = {m["props"][SUBJECT]: m["header"][PidTagMid] for m in inb["messages"]}
    assert set(src) < set(mids)  # lab_store's, and the lab's welcome message
    down = wait_lines(out, lambda x: x["mode"] == "ics-download", len(mids))
    assert sorted(x["subject"] for x in down) == sorted(mids)
    for line in down:
        assert line["direction"] == "download" and not line.get("partial")
        assert line["completed_by"] == "RopFastTransferSourceGetBuffer"
        assert line["folder"] == "0x%016x" % inbox
        assert line["message_id"] == "0x%016x" % mids[line["subject"]]
        if line["subject"] not in src:
            assert read_eml(line["eml"])["Subject"] == line["subject"]
            continue
        s = src[line["subject"]]
        check_line(line, s)
        check_eml(read_eml(line["eml"]), s)

    # ---- ICS upload: ImportMessageChange, then properties, a recipient and
    # an attachment by the online ROPs, then RopSaveChangesMessage
    up = {"props": {SUBJECT: "ics upload with attachment", 0x001A001F: "IPM.Note",
                    LS.PidTagBody: "uploaded in cached mode\r\n"},
          "recipients": [{"props": {LS.PidTagRecipientType: 1, LS.PidTagDisplayName: "Bob",
                                    LS.PidTagAddressType: "SMTP",
                                    LS.PidTagEmailAddress: "bob@lab.example",
                                    LS.PidTagSmtpAddress: "bob@lab.example"}}],
          "attachments": [{"props": {LS.PidTagAttachMethod: 1,
                                     LS.PidTagAttachLongFilename: "upload.bin",
                                     LS.PidTagAttachMimeTag: "application/octet-stream",
                                     LS.PidTagAttachDataBinary: ATT_DATA}}]}
    header = {IC.W.PidTagSourceKey: bytes(22), IC.W.PidTagLastModificationTime: 0x01D9 << 48,
              IC.W.PidTagChangeKey: bytes(16) + b"\0\0\0\0\0\x09",
              IC.W.PidTagPredecessorChangeList: b"\x16" + bytes(16) + b"\0\0\0\0\0\x09"}
    rb = EC.RopBuffer().open_folder(0, 1, sent)
    IC.open_collector(rb, 1, 2)
    IC.import_message_change(rb, 2, 3, header)
    res = c.execute(rb)
    assert all(x.get("ReturnValue", 0) == 0 for x in res), res
    slots = CC._Slots()
    slots.free = [s for s in slots.free if s > 3]
    CC._fill(c, 3, up, slots, 0)
    [sv] = c.execute(EC.RopBuffer().save_changes_message(3, 3))
    assert sv["ReturnValue"] == 0
    c.execute(EC.RopBuffer().release(3).release(2).release(1))
    [ics] = wait_lines(out, lambda x: x["mode"] == "ics-upload", 1)
    assert ics["direction"] == "upload" and ics["completed_by"] == "RopSaveChangesMessage"
    assert ics["folder"] == "0x%016x" % sent
    m = read_eml(ics["eml"])
    assert m["Subject"] == "ics upload with attachment"
    assert addrs(m, "To") == ["bob@lab.example"]
    [a] = attachments(m)
    assert a.get_filename() == "upload.bin" and a.get_payload(decode=True) == ATT_DATA

    # ---- FastTransfer upload (PutBuffer in 7000-byte pieces) of a message
    # with an attachment and an embedded message
    fx = {"props": {SUBJECT: "fx upload", 0x001A001F: "IPM.Note", LS.PidTagBody: "fx body"},
          "recipients": [{"props": {LS.PidTagDisplayName: "Carol", LS.PidTagRecipientType: 2,
                                    LS.PidTagSmtpAddress: "carol@lab.example"}}],
          "attachments": [{"props": {LS.PidTagAttachMethod: 1,
                                     LS.PidTagAttachLongFilename: "fx.bin",
                                     LS.PidTagAttachDataBinary: ATT_DATA[::-1]}},
                          {"props": {LS.PidTagAttachMethod: 5},
                           "embedded": {"props": {SUBJECT: "embedded one",
                                                  LS.PidTagBody: "inner"}}}]}
    IC.fx_upload(c, 0, sent, [fx], chunk=7000)
    fxl = wait_lines(out, lambda x: x["mode"] == "ics-upload", 2)[1]
    assert fxl["completed_by"] == "RopFastTransferDestinationPutBuffer"
    m = read_eml(fxl["eml"])
    assert m["Subject"] == "fx upload" and addrs(m, "Cc") == ["carol@lab.example"]
    a, e = attachments(m)
    assert a.get_filename() == "fx.bin" and a.get_payload(decode=True) == ATT_DATA[::-1]
    assert e.get_content_type() == "message/rfc822"
    assert e.get_content()["Subject"] == "embedded one"

    # ---- the ICS upload stored with its attachment; CopyTo of it back
    later = IC.sync_folder(c, 0, sent, buffer_size=0x7F00)
    got = {x["props"][SUBJECT]: x for x in later["messages"]}
    assert got["ics upload with attachment"]["attachments"][0]["props"][
        LS.PidTagAttachDataBinary] == ATT_DATA
    mid = got["fx upload"]["header"][PidTagMid]
    IC.fx_download_message(c, 0, sent, mid, buffer_size=3000)
    [cp] = wait_lines(out, lambda x: x["mode"] == "fx-copy", 1)
    assert cp["direction"] == "download" and cp["message_id"] == "0x%016x" % mid
    m = read_eml(cp["eml"])
    assert m["Subject"] == "fx upload"
    assert attachments(m)[0].get_payload(decode=True) == ATT_DATA[::-1]
    t.close()
    assert p.alive()


EC_ACCESS_DENIED = 0x80070005


def blocking(request, make_proxy, tmp_path, match, hold=None):
    """The proxy with tests/modules/mpm_msgtest.c blocking every message
    whose subject contains `match` (and mime-dump after it)."""
    out = tmp_path / "eml"
    out.mkdir()
    opts = {"dcerpc_mapiproxy:modules": "mpm_msgtest, mime-dump",
            "mpm_msgtest:log": str(tmp_path / "events.log"), "mpm_msgtest:action": "block",
            "mpm_msgtest:match": match, "mime-dump:dir": str(out),
            "mime-dump:tmpdir": str(tmp_path)}
    if hold:
        opts["mpm_msgtest:hold"] = hold  # the verdict comes PENDING, later
    p, t, _ = proxy_before(request, make_proxy, request.param, opts, "rpc_lab", "mh_env")
    yield p, t, out


@pytest.fixture(params=["rpc", "mapihttp"])
def block_session(request, make_proxy, tmp_path):
    yield from blocking(request, make_proxy, tmp_path, "blocked")


@pytest.fixture(params=["rpc", "mapihttp"])
def block_download_session(request, make_proxy, tmp_path):
    yield from blocking(request, make_proxy, tmp_path, "Quarterly", hold="300")


def test_cached_mode_download_block(block_download_session, tmp_path, monkeypatch):
    """A blocked message inside an ICS download (the verdict given 300 ms
    later, MP_PENDING: the GetBuffer response waits): replaced, in the
    GetBuffer response that carries it, by a notice of the same length with the same
    change header (PidTagMid, source and change keys); every other message
    and every buffer size as the lab sent them."""
    p, t, out = block_download_session
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]
    cols = [PidTagMid, SUBJECT]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, inbox).get_contents_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 100, cols).release(2).release(1))
    mids = {row[SUBJECT]: row[PidTagMid] for row in res[3]["Rows"]}
    got = IC.sync_folder(c, 0, inbox, buffer_size=0x7F00)
    assert all(len(x) <= 0x7F00 for x in got["chunks"][:-1])
    by_mid = {m["header"][PidTagMid]: m for m in got["messages"]}
    assert set(by_mid) == set(mids.values())        # every change, the same ids
    notice = by_mid[mids["Quarterly report"]]
    assert notice["props"][SUBJECT] == "[Blocked] mpm_msgtest blocked it"
    assert "removed from this folder" in notice["props"][LS.PidTagBody]
    assert notice["recipients"] == [] and notice["attachments"] == []
    monkeypatch.setenv("LAB_BIG_ATTACHMENT_SIZE", str(SMALL))
    src = {m["props"][SUBJECT]: m for m in LS.messages()}
    for subject, mid in mids.items():
        if subject != "Quarterly report":
            assert by_mid[mid]["props"][SUBJECT] == subject
            for a, b in zip(by_mid[mid]["attachments"], src.get(subject, {}).get("attachments", [])):
                assert a["props"].get(LS.PidTagAttachDataBinary) == \
                    b["props"].get(LS.PidTagAttachDataBinary)
    # the state is the lab's: a second sync with it brings nothing
    again = IC.sync_folder(c, 0, inbox, state=got["state"], buffer_size=0x7F00)
    assert again["messages"] == []
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    assert [e[:3] for e in ev if "Quarterly" in "\t".join(e)] == \
        [["download", "ics-download", "RopFastTransferSourceGetBuffer"]]
    t.close()
    assert p.alive()


def put_stream(c, fid, msg, chunk):
    """IC.fx_upload by hand: every PutBuffer's ReturnValue."""
    stream = IC.W.top_message(msg)
    rb = EC.RopBuffer().open_folder(0, 1, fid)
    IC.dest_configure(rb, 1, 2, 0x03)
    assert all(x["ReturnValue"] == 0 for x in c.execute(rb))
    rvs = []
    for i in range(0, len(stream), chunk):
        [r] = c.execute(IC.put_buffer(EC.RopBuffer(), 2, stream[i:i + chunk]))
        rvs.append(r["ReturnValue"])
        if r["ReturnValue"]:
            break
    c.execute(EC.RopBuffer().release(2).release(1))
    return rvs


def test_cached_mode_upload_block(block_session, tmp_path):
    """ICS upload verdicts: a blocked FastTransfer upload's last PutBuffer
    and a blocked ImportMessageChange's save are answered ecAccessDenied and
    not relayed; the lab never stores either; an allowed one goes through."""
    p, t, out = block_session
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    sent = logon["FolderIds"][6]
    att = {"props": {LS.PidTagAttachMethod: 1, LS.PidTagAttachLongFilename: "x.bin",
                     LS.PidTagAttachDataBinary: ATT_DATA}}
    rvs = put_stream(c, sent, {"props": {SUBJECT: "fx blocked upload"}, "attachments": [att]},
                     7000)
    assert rvs[:-1] == [0] * (len(rvs) - 1) and rvs[-1] == EC_ACCESS_DENIED, rvs
    assert len(rvs) == len(IC.W.top_message({"props": {SUBJECT: "fx blocked upload"},
                                             "attachments": [att]})) // 7000 + 1
    rvs = put_stream(c, sent, {"props": {SUBJECT: "fx allowed upload"}, "attachments": [att]},
                     7000)
    assert set(rvs) == {0}

    header = {IC.W.PidTagSourceKey: bytes(22), IC.W.PidTagLastModificationTime: 0x01D9 << 48,
              IC.W.PidTagChangeKey: bytes(16) + b"\0\0\0\0\0\x0a",
              IC.W.PidTagPredecessorChangeList: b"\x16" + bytes(16) + b"\0\0\0\0\0\x0a"}
    rb = EC.RopBuffer().open_folder(0, 1, sent)
    IC.open_collector(rb, 1, 2)
    IC.import_message_change(rb, 2, 3, header)
    assert all(x.get("ReturnValue", 0) == 0 for x in c.execute(rb))
    c.execute(EC.RopBuffer().set_properties(3, [(SUBJECT, "ics blocked upload")]))
    [sv] = c.execute(EC.RopBuffer().save_changes_message(3, 3))
    assert sv["ReturnValue"] == EC_ACCESS_DENIED
    c.execute(EC.RopBuffer().release(3).release(2).release(1))

    # what the lab stored: the allowed one, not the blocked ones (the
    # MAPI/HTTP lab is shared with test_cached_mode_mime: its uploads too)
    got = IC.sync_folder(c, 0, sent, buffer_size=0x7F00)
    subjects = {m["props"].get(SUBJECT) for m in got["messages"]}
    assert "fx allowed upload" in subjects
    assert not {"fx blocked upload", "ics blocked upload"} & subjects
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    ups = [e[:3] for e in ev if e[0] == "upload"]
    assert ups == [["upload", "ics-upload", "RopFastTransferDestinationPutBuffer"]] * 2 + \
        [["upload", "ics-upload", "RopSaveChangesMessage"]], ev
    t.close()
    assert p.alive()
