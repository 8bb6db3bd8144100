"""Online downloads read by the proxy before the client (issue 15, item 4's
download verdicts; mapiproxy:online prefetch, doc/internals/module-api.md):
when the client opens a message, the proxy holds the RopOpenMessage
response, reads the message itself with side requests on the client's
session, delivers the message event, and then answers the client's reads
of that message handle from the verdict.

The client is the lab's EMSMDB client (content_client.download: RopOpenMessage,
RopGetPropertiesAll, streams, attachment table, RopOpenAttachment), over RPC
and MAPI/HTTP (the HTTPS front before the lab's MAPI/HTTP server); the
verdicts come from tests/modules/mpm_msgtest.c.  Checked against the lab's
store read directly (untouched), not only against the proxy's log."""
import json
import os
import shutil

import pytest

import content_client as CC
import emsmdb_client as EC
import lab_store as LS
from conftest import Lab
from test_lab import ALICE
from test_rop_modules import dump_lab  # noqa: F401 (fixture)
from test_mime_dump import connect, folder_mids, read_eml
from test_message_events import msg_proxy, events
from test_http_front_lab import lab_https_fixture, ntlm, start_front
from test_svc import EICAR, Lab as SvcLab

env = lab_https_fixture("onlinedl")

FL = 0x1  # EXT2_NO_COMPRESSION
PidTagSubject, PidTagBody, PidTagHtml = 0x0037001F, 0x1000001F, 0x10130102
PidTagRtfCompressed, PidTagHasAttachments = 0x10090102, 0x0E1B000B
NOTICE_SUBJECT = "[Blocked] mpm_msgtest blocked it"
EC_NOT_FOUND = 0x8004010F
QUARTERLY = "Quarterly report"


def module_opts(tmp_path, **opts):
    extra = {"dcerpc_mapiproxy:modules": "mpm_msgtest",
             "mpm_msgtest:log": str(tmp_path / "events.log"),
             "mapiproxy:online prefetch": "yes"}
    extra.update({"mpm_msgtest:" + k: v for k, v in opts.items()})
    return extra


def prefetch_proxy(make_proxy, lab, tmp_path, **opts):
    return make_proxy(upstream_epm_port=lab.epm_port, extra=module_opts(tmp_path, **opts))


def src(subject):
    return [m for m in LS.messages() if m["props"][LS.PidTagSubject] == subject][0]


def direct(lab, subject):
    """The lab's own copy, read without the proxy."""
    dce, c, fids = connect(lab.ports["emsmdb"])
    mids = folder_mids(c, fids[4])
    got = CC.download(c, fids[4], mids[subject])
    c.disconnect()
    dce.disconnect()
    return got


def through(p, subject, times=1):
    dce, c, fids = connect(p.rpc_port)
    mids = folder_mids(c, fids[4])
    got = [CC.download(c, fids[4], mids[subject], flags=FL) for _ in range(times)]
    c.disconnect()
    dce.disconnect()
    return got


def test_block_rpc(make_proxy, dump_lab, tmp_path):
    p = prefetch_proxy(make_proxy, dump_lab, tmp_path, action="block", match="Quarterly")
    [got] = through(p, QUARTERLY)
    # the RopOpenMessage response itself: the notice's subject, no recipients
    dce, c, fids = connect(p.rpc_port)
    [om] = c.execute(EC.RopBuffer().open_message(0, 1, fids[4], folder_mids(c, fids[4])[QUARTERLY]),
                     FL)
    c.execute(EC.RopBuffer().release(1), FL)
    c.disconnect()
    dce.disconnect()
    assert om["ReturnValue"] == 0 and om["NormalizedSubject"] == NOTICE_SUBJECT, om
    assert om["SubjectPrefix"] == "" and om["RecipientRows"] == [], om
    props = got["props"]
    assert props[PidTagSubject] == NOTICE_SUBJECT, props.get(PidTagSubject)
    assert "blocked by the mail proxy (mpm_msgtest)" in props[PidTagBody]
    for tag in (PidTagHtml, PidTagRtfCompressed):
        assert tag not in props
    assert props.get(PidTagHasAttachments) in (None, False, 0)
    assert got["attachments"] == [] and got["recipients"] == []
    ev = events(tmp_path, 2)   # one per session: no change key (lab), nothing cached
    assert [(e[0], e[1], e[2], e[6], e[10], e[11]) for e in ev] == [
        ("download", "online", "RopOpenMessage", QUARTERLY, "1", "1")] * 2, ev
    assert "online download message (folder" in p.log() and "blocked by mpm_msgtest" in p.log()
    # the store is untouched: read directly, the original
    d = direct(dump_lab, QUARTERLY)
    s = src(QUARTERLY)
    assert d["props"][PidTagSubject] == QUARTERLY
    assert d["props"][PidTagBody] == s["props"][LS.PidTagBody]
    assert len(d["attachments"]) == len(s["attachments"])


def test_modify_rpc_and_not_read_twice(make_proxy, tmp_path):
    """Prefix the subject, set PidTagBody, drop attachment 0 (report.pdf):
    the client reads the changed message; opened a second time in the
    session (the same change key) it is not read again: one event; nor in
    the user's next session (the worker's cache of decided messages)."""
    lab = Lab(tmp_path, env={"LAB_CHANGE_KEYS": "1"})
    try:
        p = prefetch_proxy(make_proxy, lab, tmp_path, action="prefix,set,drop", match="Quarterly")
        first, second = through(p, QUARTERLY, times=2)
        s = src(QUARTERLY)
        for got in (first, second):
            props = got["props"]
            assert props[PidTagSubject] == "[TEST] " + QUARTERLY
            assert props[PidTagBody] == "replaced body"
            names = [a["props"].get(LS.PidTagAttachLongFilename) for a in got["attachments"]]
            assert names == ["notes.txt"], names
            assert len(got["recipients"]) == len(s["recipients"])
        # opened in the same buffer as the message: the dropped attachment
        # refused, the other one opens; then refused before it goes upstream
        dce, c, fids = connect(p.rpc_port)
        mid = folder_mids(c, fids[4])[QUARTERLY]
        res = c.execute(EC.RopBuffer().open_message(0, 1, fids[4], mid)
                        .open_attachment(1, 2, 0).open_attachment(1, 3, 1), FL)
        again = c.execute(EC.RopBuffer().open_attachment(1, 2, 0), FL)
        c.execute(EC.RopBuffer().release(3).release(1), FL)
        c.disconnect()
        dce.disconnect()
        assert [x["ReturnValue"] for x in res] == [0, EC_NOT_FOUND, 0], res
        assert [x["ReturnValue"] for x in again] == [EC_NOT_FOUND], again
        # one event: the second session (the same user) takes the first
        # one's verdict from the worker's cache, checked by its change key
        ev = events(tmp_path, 1)
        assert [(e[2], e[6], e[10]) for e in ev] == [("RopOpenMessage", QUARTERLY, "1")], ev
        assert "decided before (same change key)" in p.log()
        assert "decided in another session of" in p.log()
        d = direct(lab, QUARTERLY)
        assert d["props"][PidTagSubject] == QUARTERLY
        assert len(d["attachments"]) == 2
    finally:
        lab.stop()


def test_replace_attachment_rpc(make_proxy, dump_lab, tmp_path):
    """Attachment 0 replaced by a notice: listed, opened, read: the notice."""
    p = prefetch_proxy(make_proxy, dump_lab, tmp_path, action="replace", match="Quarterly")
    [got] = through(p, QUARTERLY)
    by_name = {a["props"].get(LS.PidTagAttachLongFilename): a["props"] for a in got["attachments"]}
    assert sorted(by_name) == ["notes.txt", "report.pdf.txt"], by_name
    n = by_name["report.pdf.txt"]
    assert n[LS.PidTagAttachDataBinary] == b"the attachment was removed by mpm_msgtest"
    assert n[LS.PidTagAttachMimeTag] == "text/plain"
    s = src(QUARTERLY)
    assert by_name["notes.txt"][LS.PidTagAttachDataBinary] == \
        s["attachments"][1]["props"][LS.PidTagAttachDataBinary]


def test_block_and_modify_mapihttp(make_proxy, env, tmp_path):
    """Over MAPI/HTTP (the HTTPS front before the lab's MAPI/HTTP server,
    python3-requests with NTLM): the side requests ride the client's
    session cookies; the blocked message reads as the notice, the other one
    with the prefixed subject."""
    import mapihttp_client as MH
    opts = module_opts(tmp_path, action="prefix", match="", **{"block match": "Quarterly"})
    p = start_front(make_proxy, env, opts)
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fids = logon["FolderIds"]
    mids = folder_mids(c, fids[4])
    blocked = CC.download(c, fids[4], mids[QUARTERLY])
    other_subject = [s for s in mids if s != QUARTERLY][0]
    other = CC.download(c, fids[4], mids[other_subject])
    assert c.disconnect()["ErrorCode"] == 0
    assert blocked["props"][PidTagSubject] == NOTICE_SUBJECT
    assert blocked["attachments"] == [] and PidTagHtml not in blocked["props"]
    assert other["props"][PidTagSubject] == "[TEST] " + other_subject
    ev = events(tmp_path, 2)
    assert [(e[2], e[6], e[11]) for e in ev] == [("RopOpenMessage", QUARTERLY, "1"),
                                                 ("RopOpenMessage", other_subject, "0")], ev


@pytest.fixture(scope="module")
def clamd(tmp_path_factory):
    if shutil.which("clamd") is None:
        pytest.skip("clamd missing")
    d = str(tmp_path_factory.mktemp("onlinedl-svc"))
    os.chmod(d, 0o755)
    s = SvcLab(d)
    try:
        s.start_all(("clamd",))
        yield "unix:" + s.path("clamd.sock")
    finally:
        for name in list(s.procs):
            s.stop(name)


def test_av_blocks_eicar_opened_online(make_proxy, tmp_path, clamd):
    """The real service: av with clamd (an EICAR database made by the test
    services) blocks an EICAR message when the client opens it online; the
    client reads the notice, never the EICAR bytes; a clean message reads
    as it is; the lab keeps both."""
    lab = Lab(tmp_path)
    try:
        vlog = str(tmp_path / "verdicts")
        p = make_proxy(upstream_epm_port=lab.epm_port, extra={
            "dcerpc_mapiproxy:modules": "av", "av:clamd": clamd,
            "av:action_download": "block", "av:directions": "download",
            "av:verdict_log": vlog, "mapiproxy:online prefetch": "yes"})
        dce, c, fids = connect(lab.ports["emsmdb"])    # straight to the lab
        body = "see the attachment\r\n"
        bad = CC.upload(c, fids[4], {"props": {PidTagSubject: "eicar online", PidTagBody: body},
                                     "attachments": [LS._by_value("file.bin",
                                                                  "application/octet-stream",
                                                                  EICAR)]})
        good = CC.upload(c, fids[4], {"props": {PidTagSubject: "clean online",
                                                PidTagBody: "nothing here\r\n"}})
        c.disconnect()
        dce.disconnect()
        dce, c, fids = connect(p.rpc_port)
        got = CC.download(c, fids[4], bad, flags=FL)
        clean = CC.download(c, fids[4], good, flags=FL)
        c.disconnect()
        dce.disconnect()
        assert got["props"][PidTagSubject].startswith("[Blocked] ")
        assert "Test.EICAR.Made-In-Test" in got["props"][PidTagSubject]
        assert got["attachments"] == [] and EICAR not in repr(got).encode()
        assert clean["props"][PidTagSubject] == "clean online"
        v = [json.loads(x) for x in open(vlog)]
        assert [(x["verdict"], x["mode"], x["direction"]) for x in v] == [
            ("infected", "online", "download"), ("clean", "online", "download")], v
        dce, c, fids = connect(lab.ports["emsmdb"])
        d = CC.download(c, fids[4], bad)
        c.disconnect()
        dce.disconnect()
        assert d["attachments"][0]["props"][LS.PidTagAttachDataBinary] == EICAR
    finally:
        lab.stop()


def test_prefetch_size_limit(make_proxy, dump_lab, tmp_path):
    """Past mapiproxy:online prefetch max size the proxy stops reading
    (what it opened released), says so, and the client reads the message
    unchecked; its event then comes at the client's release, as without
    prefetch (and can no longer stop that read)."""
    extra = module_opts(tmp_path, action="block", match="Quarterly")
    extra["mapiproxy:online prefetch max size"] = "1K"
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra=extra)
    [got] = through(p, QUARTERLY)
    assert got["props"][PidTagSubject] == QUARTERLY
    assert len(got["attachments"]) == 2
    assert "stopped (past 1024 bytes, mapiproxy:online prefetch max size)" in p.log()
    ev = events(tmp_path, 1)
    assert [(e[2], e[6]) for e in ev] == [("RopRelease", QUARTERLY)], ev
    # the proxy released its own message object (its slot 0; the client's is 1)
    assert "RopRelease idx=0 (message)" in dump_lab.log()


def test_block_rpc_sealed_upstream(make_proxy, tmp_path):
    """The proxy terminates the client's NTLM logon (Impacket, privacy) and
    seals its own upstream logon (the lab requires privacy): the side
    requests go sealed on the proxy's association like the client's."""
    from test_mailbox_auth import rpc_proxy, session, DN
    from conftest import ntlm_lab
    lab = ntlm_lab(tmp_path, "Administrator", "Adm1n-Proxy.9")
    try:
        p = rpc_proxy(make_proxy, lab, tmp_path,
                      extra=module_opts(tmp_path, action="block", match="Quarterly"))
        dce, c = session(p, "alice")
        assert c.connect_ex(DN["alice"])["ErrorCode"] == 0
        [logon] = c.execute(EC.RopBuffer().logon(0, DN["alice"]))
        fids = logon["FolderIds"]
        mids = folder_mids(c, fids[4])
        got = CC.download(c, fids[4], mids[QUARTERLY], flags=FL)
        c.disconnect()
        dce.disconnect()
        assert got["props"][PidTagSubject] == NOTICE_SUBJECT
        assert got["attachments"] == []
        ev = events(tmp_path, 1)
        assert [(e[2], e[6], e[11]) for e in ev] == [("RopOpenMessage", QUARTERLY, "1")], ev
        assert "RopRelease idx=0 (message)" in lab.log()
    finally:
        lab.stop()


def test_sealed_pass_through_is_said_once(make_proxy, tmp_path):
    """Transparent mode, the client's own NTLM logon sealed end to end
    (Impacket at privacy to the lab through the proxy): the proxy cannot
    see the ROPs, so nothing is read ahead; it says so once, and the client
    reads the lab's message."""
    from rpcutil import dce_connect
    from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY
    import emsmdb_ndr as N
    from conftest import ntlm_lab
    lab = ntlm_lab(tmp_path, "alice", "Alice-Pw.1")
    try:
        p = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=module_opts(tmp_path, action="block", match="Quarterly"))
        for _ in range(2):
            dce = dce_connect(p.host, p.rpc_port, N.MSRPC_UUID_EMSMDB, user="alice",
                              password="Alice-Pw.1", domain="LAB",
                              level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
            c = EC.EmsmdbClient(dce)
            assert c.connect_ex(ALICE)["ErrorCode"] == 0
            [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
            fids = logon["FolderIds"]
            got = CC.download(c, fids[4], folder_mids(c, fids[4])[QUARTERLY], flags=FL)
            c.disconnect()
            dce.disconnect()
            assert got["props"][PidTagSubject] == QUARTERLY
        assert p.log().count("online prefetch (and every message event) does not apply") == 1
        assert "RopRelease idx=0" not in lab.log()
    finally:
        lab.stop()


def test_embedded_message_read_ahead(make_proxy, dump_lab, tmp_path):
    """A message with an embedded message (lab: "Fwd: Original question"):
    the proxy's read includes the embedded message (RopOpenEmbeddedMessage,
    its properties); mime-dump's .eml of the event, read with Python's
    email package, has it as message/rfc822.  One event only: the client's
    own read of it is none."""
    out = tmp_path / "eml"
    out.mkdir()
    extra = module_opts(tmp_path, action="none")
    extra["dcerpc_mapiproxy:modules"] = "mpm_msgtest, mime-dump"
    extra.update({"mime-dump:dir": str(out), "mime-dump:tmpdir": str(tmp_path)})
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra=extra)
    subject = "Fwd: Original question"
    [got] = through(p, subject)
    assert got["attachments"][0]["embedded"]["props"][PidTagSubject] == "Original question"
    ev = events(tmp_path, 1)
    assert [(e[2], e[6]) for e in ev] == [("RopOpenMessage", subject)], ev
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == 1, emls
    msg = read_eml(emls[0])
    assert msg["Subject"] == subject
    inner = [x for x in msg.walk() if x.get_content_type() == "message/rfc822"]
    assert inner, [x.get_content_type() for x in msg.walk()]
    emb = inner[0].get_content()
    assert emb["Subject"] == "Original question"
    assert "Is the lab open on Sunday?" in emb.get_body(("plain",)).get_content()
    # the embedded message's own attachment, read ahead too (slot 4): in the
    # event, which came before the client read any of it
    [csv] = [x for x in emb.iter_attachments()]
    assert csv.get_filename() == "schedule.csv", csv.get_filename()
    assert csv.get_content().replace("\r\n", "\n") == "day,open\nsun,no\n"


def test_long_values_read_as_streams(make_proxy, dump_lab, tmp_path):
    """"Meeting minutes (RTF)": a compressed RTF body and a 1 MB attachment,
    too long for RopGetPropertiesAll (the lab answers them ecNotEnoughMemory):
    the proxy reads them with RopOpenStream + RopReadStream before the
    client's RopOpenMessage response; the event has the attachment's full
    size and the replace verdict gives the client the notice in its place."""
    subject = "Meeting minutes (RTF)"
    p = prefetch_proxy(make_proxy, dump_lab, tmp_path, action="replace", match="Meeting")
    [got] = through(p, subject)
    s = src(subject)
    ev = events(tmp_path, 1)
    assert [(e[2], e[6]) for e in ev] == [("RopOpenMessage", subject)], ev
    big = len(s["attachments"][0]["props"][LS.PidTagAttachDataBinary])
    assert ev[0][8].split(";")[0].startswith("big.bin/") and "/%d/" % big in ev[0][8], ev[0][8]
    by_name = {a["props"].get(LS.PidTagAttachLongFilename): a["props"] for a in got["attachments"]}
    assert by_name["big.bin.txt"][LS.PidTagAttachDataBinary] == \
        b"the attachment was removed by mpm_msgtest"
    assert got["props"][PidTagRtfCompressed] == s["props"][LS.PidTagRtfCompressed]
    assert "RopReadStream" in dump_lab.log()


def unchecked_read(p, got, tmp_path):
    """The read stopped: the client read the message as it is, its event
    at its own release (as without prefetch)."""
    s = src(QUARTERLY)
    assert got["props"][PidTagSubject] == QUARTERLY
    assert len(got["attachments"]) == len(s["attachments"]) == 2
    assert "online prefetch of message" in p.log()
    assert "stopped (a side request failed); the client reads it unchecked" in p.log()
    ev = events(tmp_path, 1)
    assert [(e[2], e[6]) for e in ev] == [("RopRelease", QUARTERLY)], ev


def test_side_request_fault_rpc(make_proxy, tmp_path):
    """The upstream answers one of the proxy's side requests (its first
    RopOpenAttachment) with a fault PDU (lab LAB_FAIL_EXECUTE): the proxy
    stops reading, releases its message object, and the client's call goes
    on; the client's own RopOpenAttachment later succeeds."""
    lab = Lab(tmp_path, env={"LAB_FAIL_EXECUTE": "22:1"})
    try:
        p = prefetch_proxy(make_proxy, lab, tmp_path, action="block", match="Quarterly")
        [got] = through(p, QUARTERLY)
        unchecked_read(p, got, tmp_path)
        assert "upstream fault 0x000006f7 to the proxy's side request" in p.log()
        assert "fails (LAB_FAIL_EXECUTE=22:1)" in lab.log()
        assert "RopRelease idx=0 (message)" in lab.log()
    finally:
        lab.stop()


FAILS = {"code": ({"LAB_FAIL_EXECUTE": "22:1"}, "upstream X-ResponseCode 1 to"),
         "http": ({"LAB_MH_HTTP_FAIL": "22:1"}, "upstream HTTP status 500 to")}


@pytest.fixture(params=sorted(FAILS))
def env_fail(request, tmp_path_factory):
    from test_http_front_lab import lab_env
    environ, said = FAILS[request.param]
    for e in lab_env(tmp_path_factory, environ, "onlinefail", ()):
        e["said"] = said
        yield e


def test_side_request_failed_mapihttp(make_proxy, env_fail, tmp_path):
    """Over MAPI/HTTP the upstream answers the proxy's first RopOpenAttachment
    with X-ResponseCode 1 (in the DONE trailer, MS-OXCMAPIHTTP 2.2.2.2.2),
    or with HTTP 500 (LAB_MH_HTTP_FAIL): the read stops as over DCE/RPC,
    the client's Execute gets its own answer (its session and MapiSequence
    intact: it reads on)."""
    import mapihttp_client as MH
    p = start_front(make_proxy, env_fail,
                    module_opts(tmp_path, action="block", match="Quarterly"))
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env_fail["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fids = logon["FolderIds"]
    got = CC.download(c, fids[4], folder_mids(c, fids[4])[QUARTERLY])
    assert c.disconnect()["ErrorCode"] == 0
    unchecked_read(p, got, tmp_path)
    assert env_fail["said"] + " the proxy's side request" in p.log()


def test_seek_notice_stream(make_proxy, dump_lab, tmp_path):
    """A blocked message's PidTagBody opened as a stream reads as the
    notice; RopSeekStream (MS-OXCPRPT 3.2.5.18: from the beginning, the
    current position, the end) moves the proxy's position in the notice,
    NewPosition counted in the notice, and a read after it reads from
    there; before the start is StreamSeekError."""
    p = prefetch_proxy(make_proxy, dump_lab, tmp_path, action="block", match="Quarterly")
    dce, c, fids = connect(p.rpc_port)
    mid = folder_mids(c, fids[4])[QUARTERLY]
    om, os_ = c.execute(EC.RopBuffer().open_message(0, 1, fids[4], mid)
                        .open_stream(1, 2, PidTagBody), FL)
    size = os_["StreamSize"]
    [whole] = c.execute(EC.RopBuffer().read_stream(2, 0x1000), FL)
    notice = whole["Data"]
    assert len(notice) == size and "blocked by the mail proxy" in notice.decode("utf-16-le")
    sk1, rd1 = c.execute(EC.RopBuffer().seek_stream(2, 0, 4).read_stream(2, 6), FL)
    sk2, rd2 = c.execute(EC.RopBuffer().seek_stream(2, 1, -4).read_stream(2, 4), FL)
    sk3, rd3 = c.execute(EC.RopBuffer().seek_stream(2, 2, -8).read_stream(2, 0x100), FL)
    [bad] = c.execute(EC.RopBuffer().seek_stream(2, 1, -0x10000), FL)
    [past] = c.execute(EC.RopBuffer().seek_stream(2, 2, 10), FL)
    [rd4] = c.execute(EC.RopBuffer().read_stream(2, 0x100), FL)
    c.execute(EC.RopBuffer().release(2).release(1), FL)
    c.disconnect()
    dce.disconnect()
    assert (sk1["ReturnValue"], sk1["NewPosition"], rd1["Data"]) == (0, 4, notice[4:10])
    assert (sk2["ReturnValue"], sk2["NewPosition"], rd2["Data"]) == (0, 6, notice[6:10])
    assert (sk3["ReturnValue"], sk3["NewPosition"], rd3["Data"]) == (0, size - 8, notice[-8:])
    assert bad["ReturnValue"] == 0x80030019, bad
    assert (past["ReturnValue"], past["NewPosition"], rd4["Data"]) == (0, size + 10, b"")
    assert "RopSeekStream" in dump_lab.log()   # it went upstream (the server's stream moves)
