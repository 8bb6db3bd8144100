"""The module API's message events and verdicts (issue 15 item 4,
include/mapiproxy/message.h), online mode, with the test module
tests/modules/mpm_msgtest.c (-Iinclude only): every completed message is one
event with its accessors' values logged; per option the module blocks or
modifies.  Asserted against the lab's store (what the upstream kept, read
back through its contents table and the lab's own ROPs) and Python's email
package (mime-dump's .eml of the same session), not only the module's log."""
import json
import time

import content_client as CC
import emsmdb_client as EC
import emsmdb_ndr as N
import lab_store as LS
from test_lab import ALICE, online_session
from test_rop_modules import dump_lab, lab_wire, wire_log  # noqa: F401 (fixtures)
from test_mime_dump import connect, folder_mids, read_eml
from test_http_front_lab import lab_https_fixture, ntlm, start_front

# the lab's MAPI/HTTP server without PENDING delays
env = lab_https_fixture("msgevents")

FL = N.EXT2_NO_COMPRESSION
PidTagSubject, PidTagBody = 0x0037001F, 0x1000001F
EC_ACCESS_DENIED = 0x80070005


def msg_proxy(make_proxy, lab, tmp_path, **opts):
    out = tmp_path / "eml"
    out.mkdir()
    extra = {"dcerpc_mapiproxy:modules": "mpm_msgtest, mime-dump",
             "mpm_msgtest:log": str(tmp_path / "events.log"),
             "mime-dump:dir": str(out), "mime-dump:tmpdir": str(tmp_path)}
    extra.update({"mpm_msgtest:" + k: v for k, v in opts.items()})
    return make_proxy(upstream_epm_port=lab.epm_port, extra=extra), out


def events(tmp_path, n=0):
    p = tmp_path / "events.log"
    for _ in range(100):
        got = [x.split("\t") for x in p.read_text().splitlines()] if p.exists() else []
        if len(got) >= n:
            return got
        time.sleep(0.1)
    return got


def dumped(out):
    p = out / "messages.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def small_upload(subject):
    m = LS.messages()[0]       # two small attachments, To + Cc, HTML body
    m["props"][LS.PidTagSubject] = subject
    m.pop("named", None)
    return m


def save(c, fid, subject, body="body text"):
    """An upload by hand: the save's ReturnValue, and what it answered."""
    c.execute(EC.RopBuffer().create_message(0, 1, fid), FL)
    c.execute(EC.RopBuffer().set_properties(1, [(PidTagSubject, subject),
                                                (PidTagBody, body)]), FL)
    [sv] = c.execute(EC.RopBuffer().save_changes_message(1, 1), FL)
    c.execute(EC.RopBuffer().release(1), FL)
    return sv


def test_events_and_accessors_no_verdict(make_proxy, dump_lab, tmp_path):
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="none")
    dce, c, fids = connect(p.rpc_port)
    mids = folder_mids(c, fids[4])
    src = LS.messages()[0]
    CC.download(c, fids[4], mids[src["props"][LS.PidTagSubject]], flags=FL)
    CC.upload(c, fids[5], small_upload("Event upload"), flags=FL)
    c.disconnect()
    dce.disconnect()
    ev = events(tmp_path, 2)
    assert [e[:3] for e in ev] == [["download", "online", "RopRelease"],
                                   ["upload", "online", "RopSaveChangesMessage"]], ev
    down, up = ev
    assert down[6] == "Quarterly report" and up[6] == "Event upload"
    assert int(down[4], 16) == fids[4] and int(up[4], 16) == fids[5]
    # recipients: type, name, address; attachments: name/type/size/method
    assert down[7] == "1:Alice Lab <alice@lab.example>;2:Carol Copy <carol@lab.example>"
    atts = down[8].split(";")
    assert atts[1] == "notes.txt/text/plain/%d/1" % len(b"plain notes\r\nline 2\r\n")
    assert atts[0].startswith("report.pdf/application/pdf/")
    # the MIME was built (a size); an upload before relay can be modified, a download online not
    assert int(down[9]) > 1000 and int(up[9]) > 1000
    assert down[10] == "0" and up[10] == "1"
    # mime-dump, ported to the message hook, saw the same two messages
    assert [x["direction"] for x in dumped(out)] == ["download", "upload"]
    assert dumped(out)[1]["subject"] == "Event upload"
    assert "Event upload" in folder_mids(connect(p.rpc_port)[1], fids[5])


def test_block_upload(make_proxy, dump_lab, tmp_path):
    """The hook holds each save (MP_PENDING, resumed 300 ms later by a
    timer) and blocks the matching one then: ecAccessDenied, never stored."""
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="block", match="BLOCK",
                       hold="300", **{"rop log": str(tmp_path / "rops.log")})
    dce, c, fids = connect(p.rpc_port)
    t0 = time.monotonic()
    sv = save(c, fids[5], "please BLOCK me")
    assert sv["ReturnValue"] == EC_ACCESS_DENIED, sv
    assert time.monotonic() - t0 >= 0.3
    ok = save(c, fids[5], "an ordinary message")
    assert ok["ReturnValue"] == 0
    have = folder_mids(c, fids[5])
    assert "an ordinary message" in have and "please BLOCK me" not in have, have
    c.disconnect()
    dce.disconnect()
    ev = events(tmp_path, 2)
    assert [(e[6], e[11]) for e in ev] == [("please BLOCK me", "1"),
                                           ("an ordinary message", "0")], ev
    assert "blocked by mpm_msgtest: mpm_msgtest blocked it" in p.log()
    # the module's own rop_request hook saw both held saves, after the hold
    rops = (tmp_path / "rops.log").read_text().splitlines()
    assert rops.count("RopSaveChangesMessage") == 2, rops


def test_byte_identity_with_message_hook(make_proxy, dump_lab, tmp_path, wire_log):  # noqa: F811
    """No verdict: the ROP byte-identity session relays every byte unchanged
    with a message-hook module (and mpm_roptest) loaded."""
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="none")
    online_session({"emsmdb": p.rpc_port})
    up = [{"in": x["in"], "out": x["out"]} for x in lab_wire(dump_lab)]
    assert wire_log and wire_log == up
    ev = events(tmp_path, 2)
    assert {e[0] for e in ev} == {"upload", "download"}, ev


def test_modify_upload(make_proxy, dump_lab, tmp_path):
    """Prefix the subject, set PidTagBody, drop attachment 0: the lab stores
    the changed message (read back through the lab's ROPs); the client's
    save succeeds and sees no answer of the proxy's own ROPs.  A named
    property the session never mapped (PS_INTERNET_HEADERS X-Msgtest) is
    refused honestly (-1), the other verdicts still hold."""
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="prefix,set,drop,named")
    dce, c, fids = connect(p.rpc_port)
    mid = CC.upload(c, fids[5], small_upload("Modify me"), flags=FL)
    got = CC.download(c, fids[5], mid, flags=FL)
    c.disconnect()
    dce.disconnect()
    assert got["props"][PidTagSubject] == "[TEST] Modify me"
    assert got["props"][PidTagBody] == "replaced body"
    names = [a["props"].get(LS.PidTagAttachLongFilename) for a in got["attachments"]]
    assert names == ["notes.txt"], names
    ev = events(tmp_path, 1)
    assert ev[0][6] == "Modify me" and ev[0][10] == "1" and ev[0][12] == "-1", ev


def test_block_and_modify_mapihttp(make_proxy, env, tmp_path):
    """Over MAPI/HTTP (the HTTPS front before the lab's MAPI/HTTP server,
    python3-requests with NTLM): a blocked save gets ecAccessDenied and is
    not stored; a prefixed one is stored prefixed."""
    import mapihttp_client as MH
    p = start_front(make_proxy, env, {"dcerpc_mapiproxy:modules": "mpm_msgtest",
                                      "mpm_msgtest:log": str(tmp_path / "events.log"),
                                      "mpm_msgtest:action": "block",
                                      "mpm_msgtest:match": "BLOCK"})
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fids = logon["FolderIds"]
    assert save(c, fids[5], "BLOCK over http")["ReturnValue"] == EC_ACCESS_DENIED
    assert save(c, fids[5], "fine over http")["ReturnValue"] == 0
    have = folder_mids(c, fids[5])
    assert "fine over http" in have and "BLOCK over http" not in have, have
    assert c.disconnect()["ErrorCode"] == 0
    ev = events(tmp_path, 2)
    assert [(e[0], e[6], e[11]) for e in ev] == [("upload", "BLOCK over http", "1"),
                                                 ("upload", "fine over http", "0")], ev


def test_replace_attachment_with_notice(make_proxy, dump_lab, tmp_path):
    """Attachment 0 replaced by a text/plain notice "<name>.txt": the lab
    stores the notice in its place, the other attachment untouched."""
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="replace")
    dce, c, fids = connect(p.rpc_port)
    up = small_upload("Replace me")
    mid = CC.upload(c, fids[5], up, flags=FL)
    got = CC.download(c, fids[5], mid, flags=FL)
    c.disconnect()
    dce.disconnect()
    by_name = {a["props"].get(LS.PidTagAttachLongFilename): a["props"]
               for a in got["attachments"]}
    assert sorted(by_name) == ["notes.txt", "report.pdf.txt"], by_name
    notice = by_name["report.pdf.txt"]
    assert notice[LS.PidTagAttachDataBinary] == b"the attachment was removed by mpm_msgtest"
    assert notice[LS.PidTagAttachMimeTag] == "text/plain"
    assert by_name["notes.txt"][LS.PidTagAttachDataBinary] == \
        up["attachments"][1]["props"][LS.PidTagAttachDataBinary]


def test_blocked_download_refused_on_reopen(make_proxy, dump_lab, tmp_path):
    """Online downloads complete only when the client has read everything,
    too late to stop that read (doc/internals/module-api.md).  What a block
    does: later opens of the message in the session get ecAccessDenied."""
    p, out = msg_proxy(make_proxy, dump_lab, tmp_path, action="block", match="Quarterly")
    dce, c, fids = connect(p.rpc_port)
    mids = folder_mids(c, fids[4])
    src = LS.messages()
    first, other = (m["props"][LS.PidTagSubject] for m in src[:2:2] + src[2:3])
    CC.download(c, fids[4], mids[first], flags=FL)          # read whole, then blocked
    [om] = c.execute(EC.RopBuffer().open_message(0, 1, fids[4], mids[first]), FL)
    assert om["ReturnValue"] == EC_ACCESS_DENIED, om
    CC.download(c, fids[4], mids[other], flags=FL)          # others still open
    c.disconnect()
    dce.disconnect()
    ev = events(tmp_path, 2)
    assert [(e[0], e[6], e[11]) for e in ev] == [("download", first, "1"),
                                                 ("download", other, "0")], ev
    assert "RopOpenMessage of blocked message" in p.log()
