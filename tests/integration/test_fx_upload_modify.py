"""Verdicts on FastTransfer uploads (issue 15; doc/internals/content.md,
"Holding uploads"): the proxy holds the client's PutBuffer bytes of a
message (RopFastTransferDestinationConfigure, CopyMessages into Sent Items)
until the message is complete and a module decided, then sends the
rewritten stream upstream in PutBuffers of its own size (the client's own
call and side PutBuffers), and gives the client what the server answered.

The lab (tests/lab/lab_ics.py) writes every upload stream it received under
LAB_FX_UPLOAD_DUMP (up-NNNN.fxs, and each PutBuffer's size in
up-NNNN.sizes): the test reads what the lab's store got with the lab's own
reader (lab_fxwriter.py, written from MS-OXCFXICS), not through the proxy.
tests/modules/mpm_msgtest.c gives the verdicts, over RPC and MAPI/HTTP:
  - modify (subject prefix, PidTagBody set, attachment 0 replaced by a text
    notice) of the first of two messages in one stream, 7000-byte
    PutBuffers: every PutBuffer answered success with BufferUsedSize the
    client's size; the lab got the modified message (the notice's name,
    type and text; the second attachment's bytes unchanged) and the second
    message byte for byte; no PutBuffer the lab got passes 0x7000 bytes;
  - block: the PutBuffer with the message's last byte answered
    ecAccessDenied (0x80070005), the others success, and the lab never got
    a byte of the blocked message;
  - the server refuses one of the proxy's side PutBuffers (LAB_FX_PUT_FAIL):
    the client's PutBuffer gets the server's error (ReturnValue,
    TransferStatus Error, BufferUsedSize 0), and the lab never got the
    message's end;
  - past mapiproxy:fx hold limit (30000 here) the message goes upstream
    as it comes: unchanged (the module's event says it cannot modify), all
    PutBuffers the client's own sizes, a warning logged; a block still
    answers the last PutBuffer ecAccessDenied;
  - RopFastTransferDestinationPutBufferExtended is relayed as it comes (not
    held, so a prefix is not applied), byte for byte, a block still works;
  - an ICS upload by RopSynchronizationImportMessageChange and the online
    ROPs (properties, a recipient, two attachments, RopSaveChangesMessage)
    prefixed with its first attachment replaced: read back straight from
    the lab (a session of the test's own, not through the proxy) by an ICS
    sync that the lab's reader parses.
"""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import content_client as CC  # noqa: E402
import emsmdb_client as EC  # noqa: E402
import ics_client as IC  # noqa: E402
import lab_fxwriter as W  # noqa: E402
import lab_store as LS  # noqa: E402
from conftest import Lab  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_http_front_lab import lab_env  # noqa: E402
from test_rop_lifetime import HttpTransport, RpcTransport, proxy_before  # noqa: E402

SUBJECT, BODY = 0x0037001F, 0x1000001F
NOTICE = "the attachment was removed by mpm_msgtest"
EC_ACCESS_DENIED = 0x80070005
BIG = bytes(range(251)) * 400 + b"end"  # ~100 KB: held across 15 PutBuffers
SMALL = b"second attachment, kept as it was\r\n" * 20
# the lab refuses a PutBuffer that takes an upload with this text past 60000 bytes
LABENV = {"LAB_FX_PUT_FAIL": "upstream fails me,60000"}


@pytest.fixture(scope="module")
def mh_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fxup-mh-dump")
    for e in lab_env(tmp_path_factory, dict(LABENV, LAB_FX_UPLOAD_DUMP=str(d)), "fxupmh", ()):
        e["dump"] = d
        yield e


@pytest.fixture(scope="module")
def rpc_lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("fxup-rpc-dump")
    lab = Lab(tmp_path_factory.mktemp("fxup-rpc"), env=dict(LABENV, LAB_FX_UPLOAD_DUMP=str(d)))
    lab.dump = d
    yield lab
    lab.stop()


def session(request, make_proxy, tmp_path, transport, action, match, extra=()):
    opts = {"dcerpc_mapiproxy:modules": "mpm_msgtest",
            "mpm_msgtest:log": str(tmp_path / "events.log"), "mpm_msgtest:action": action,
            "mpm_msgtest:match": match, "mpm_msgtest:hold": "30", **dict(extra)}
    p, t, lab = proxy_before(request, make_proxy, transport, opts, "rpc_lab", "mh_env")
    [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    return p, t, lab.dump if transport == "rpc" else lab["dump"]


def put_stream(t, fid, stream, chunk, put=IC.put_buffer):
    """RopFastTransferDestinationConfigure (CopyMessages) and the stream in
    PutBuffers of chunk bytes: every PutBuffer's response (up to the first
    failure)."""
    rb = EC.RopBuffer().open_folder(0, 1, fid)
    IC.dest_configure(rb, 1, 2, 0x03)
    assert all(x["ReturnValue"] == 0 for x in t.execute(rb))
    out = []
    for i in range(0, len(stream), chunk):
        [r] = t.execute(put(EC.RopBuffer(), 2, stream[i:i + chunk]))
        r["sent"] = len(stream[i:i + chunk])
        out.append(r)
        if r["ReturnValue"]:
            break
    t.execute(EC.RopBuffer().release(2).release(1))
    return out


def received(dump, marker):
    """The upload streams the lab received that contain marker."""
    got = []
    for p in sorted(dump.glob("up-*.fxs")):
        data = p.read_bytes()
        if marker in data:
            sizes = [int(x) for x in p.with_suffix(".sizes").read_text().split()]
            got.append((data, sizes))
    return got


def message(subject, atts):
    return {"props": {SUBJECT: subject, 0x001A001F: "IPM.Note", BODY: "original body\r\n"},
            "recipients": [{"props": {LS.PidTagRecipientType: 1, LS.PidTagDisplayName: "Bob",
                                      LS.PidTagAddressType: "SMTP",
                                      LS.PidTagEmailAddress: "bob@lab.example",
                                      LS.PidTagSmtpAddress: "bob@lab.example"}}],
            "attachments": [{"props": {LS.PidTagAttachMethod: 1,
                                       LS.PidTagAttachLongFilename: name,
                                       LS.PidTagAttachMimeTag: "application/octet-stream",
                                       LS.PidTagAttachDataBinary: data}}
                            for name, data in atts]}


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_upload_modified(request, make_proxy, tmp_path, transport):
    p, t, dump = session(request, make_proxy, tmp_path, transport, "prefix,set,replace",
                         "modify me")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "modify me %s" % transport
    m1 = message(tag, [("big.bin", BIG), ("small.txt", SMALL)])
    m2 = message("kept as sent %s" % transport, [("k.bin", SMALL)])
    stream = W.top_message(m1) + W.top_message(m2)
    rs = put_stream(t, sent, stream, 7000)
    assert len(rs) == (len(stream) + 6999) // 7000
    assert all(r["ReturnValue"] == 0 and r["BufferUsedSize"] == r["sent"] for r in rs), rs
    t.close()
    assert p.alive()

    [(got, sizes)] = received(dump, tag.encode("utf-16le"))
    assert max(sizes) <= 0x7000 and sum(sizes) == len(got)
    msgs = W.messages_of(W.parse(got))
    assert len(msgs) == 2
    a, b = msgs
    assert a["props"][SUBJECT] == "[TEST] " + tag
    assert a["props"][BODY] == "replaced body"
    assert [r["props"][LS.PidTagSmtpAddress] for r in a["recipients"]] == ["bob@lab.example"]
    n0, n1 = a["attachments"]
    assert n0["props"][LS.PidTagAttachLongFilename] == "big.bin.txt"
    assert n0["props"][LS.PidTagAttachMimeTag] == "text/plain"
    assert n0["props"][LS.PidTagAttachDataBinary] == NOTICE.encode()
    assert n1["props"][LS.PidTagAttachLongFilename] == "small.txt"
    assert n1["props"][LS.PidTagAttachDataBinary] == SMALL
    assert got.endswith(W.top_message(m2))  # the second message as the client sent it
    assert b["props"][SUBJECT] == "kept as sent %s" % transport
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    ups = [e for e in ev if e[0] == "upload"]
    assert [e[:3] for e in ups] == \
        [["upload", "ics-upload", "RopFastTransferDestinationPutBuffer"]] * 2, ev


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_upload_blocked_never_sent(request, make_proxy, tmp_path, transport):
    p, t, dump = session(request, make_proxy, tmp_path, transport, "block", "block me")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "block me %s" % transport
    stream = W.top_message(message(tag, [("big.bin", BIG)]))
    rs = put_stream(t, sent, stream, 7000)
    assert [r["ReturnValue"] for r in rs] == [0] * (len(rs) - 1) + [EC_ACCESS_DENIED]
    assert len(rs) == (len(stream) + 6999) // 7000
    assert all(r["BufferUsedSize"] == r["sent"] for r in rs[:-1])
    t.close()
    assert p.alive()
    assert received(dump, tag.encode("utf-16le")) == []


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_upload_prefix_big(request, make_proxy, tmp_path, transport):
    """A prefix only: the ~100 KB message held whole, then sent in the
    client's completing PutBuffer (0x7000 bytes) and side PutBuffers of the
    proxy's own; the client's responses as the server gave them but for
    BufferUsedSize (its own size)."""
    p, t, dump = session(request, make_proxy, tmp_path, transport, "prefix", "prefix me")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "prefix me %s" % transport
    m = message(tag, [("big.bin", BIG)])
    stream = W.top_message(m)
    rs = put_stream(t, sent, stream, 7000)
    assert all(r["ReturnValue"] == 0 and r["BufferUsedSize"] == r["sent"] for r in rs), rs
    assert all(r["TransferStatus"] == 0x0001 for r in rs)  # the lab's Partial, throughout
    t.close()
    assert p.alive()
    [(got, sizes)] = received(dump, tag.encode("utf-16le"))
    # held until its EndMessage: far fewer PutBuffers upstream than the
    # client's, each at most 0x7000 bytes, all of the stream
    assert len(sizes) == (len(got) + 0x6FFF) // 0x7000 and len(sizes) >= 4, sizes
    assert max(sizes) == 0x7000 and sum(sizes) == len(got)
    [a] = W.messages_of(W.parse(got))
    assert a["props"][SUBJECT] == "[TEST] " + tag
    assert a["props"][BODY] == "original body\r\n"
    [att] = a["attachments"]
    assert att["props"][LS.PidTagAttachDataBinary] == BIG
    assert len(got) == len(stream) + len("[TEST] ".encode("utf-16le"))


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_upload_upstream_failure(request, make_proxy, tmp_path, transport):
    p, t, dump = session(request, make_proxy, tmp_path, transport, "prefix", "upstream fails me")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "upstream fails me %s" % transport
    stream = W.top_message(message(tag, [("big.bin", BIG)]))
    rs = put_stream(t, sent, stream, 7000)
    assert len(rs) == (len(stream) + 6999) // 7000
    assert all(r["ReturnValue"] == 0 for r in rs[:-1])
    last = rs[-1]
    assert (last["ReturnValue"], last["TransferStatus"], last["BufferUsedSize"]) == \
        (0x80040102, 0x0000, 0), last  # ecNotSupported, Error: the lab's own answer
    t.close()
    assert p.alive()
    [(got, sizes)] = received(dump, tag.encode("utf-16le"))
    assert sizes == [0x7000, 0x7000]  # the client's PutBuffer and one side PutBuffer
    assert W.EndMessage.to_bytes(4, "little") not in got[-8:]


def direct(transport, lab):
    """A session straight to the lab, not through the proxy."""
    if transport == "rpc":
        return RpcTransport(lab.ports["emsmdb"])
    return HttpTransport("https://localhost:%d" % lab["mapihttp"], lab["ca"])


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_ics_upload_modified(request, make_proxy, tmp_path, transport):
    opts = {"dcerpc_mapiproxy:modules": "mpm_msgtest",
            "mpm_msgtest:log": str(tmp_path / "events.log"),
            "mpm_msgtest:action": "prefix,replace", "mpm_msgtest:match": "ics modify me"}
    p, t, lab = proxy_before(request, make_proxy, transport, opts, "rpc_lab", "mh_env")
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    sent = logon["FolderIds"][6]
    tag = "ics modify me %s" % transport
    header = {W.PidTagSourceKey: bytes(21) + bytes([len(transport)]),
              W.PidTagLastModificationTime: 0x01D9 << 48,
              W.PidTagChangeKey: bytes(16) + b"\0\0\0\0\0\x31",
              W.PidTagPredecessorChangeList: b"\x16" + bytes(16) + b"\0\0\0\0\0\x31"}
    rb = EC.RopBuffer().open_folder(0, 1, sent)
    IC.open_collector(rb, 1, 2)
    IC.import_message_change(rb, 2, 3, header)
    assert all(x.get("ReturnValue", 0) == 0 for x in c.execute(rb))
    slots = CC._Slots()
    slots.free = [x for x in slots.free if x > 3]
    CC._fill(c, 3, message(tag, [("big.bin", BIG), ("small.txt", SMALL)]), slots, 0)
    [sv] = c.execute(EC.RopBuffer().save_changes_message(3, 3))
    assert sv["ReturnValue"] == 0
    c.execute(EC.RopBuffer().release(3).release(2).release(1))
    t.close()
    assert p.alive()
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    assert [e[:3] for e in ev if e[0] == "upload"] == \
        [["upload", "ics-upload", "RopSaveChangesMessage"]], ev

    d = direct(transport, lab)
    [lg] = d.execute(EC.RopBuffer().logon(0, ALICE))
    got = IC.sync_folder(d.c, 0, lg["FolderIds"][6], buffer_size=0x7F00)
    d.close()
    [m] = [x for x in got["messages"] if x["props"].get(SUBJECT) == "[TEST] " + tag]
    assert m["props"][BODY] == "original body\r\n"
    names = {a["props"][LS.PidTagAttachLongFilename]: a["props"] for a in m["attachments"]}
    assert set(names) == {"big.bin.txt", "small.txt"}, names
    assert names["big.bin.txt"][LS.PidTagAttachMimeTag] == "text/plain"
    assert names["big.bin.txt"][LS.PidTagAttachDataBinary] == NOTICE.encode()
    assert names["small.txt"][LS.PidTagAttachDataBinary] == SMALL
    assert not any(x["props"].get(SUBJECT) == tag for x in got["messages"])


@pytest.mark.parametrize("action", ["prefix", "block"])
def test_upload_past_hold_limit(request, make_proxy, tmp_path, action):
    p, t, dump = session(request, make_proxy, tmp_path, "rpc", action, "too big",
                         {"mapiproxy:fx hold limit": "30000"})
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "too big %s" % action
    stream = W.top_message(message(tag, [("big.bin", BIG)]))
    rs = put_stream(t, sent, stream, 7000)
    t.close()
    assert p.alive()
    assert len(rs) == (len(stream) + 6999) // 7000
    [(got, sizes)] = received(dump, tag.encode("utf-16le"))
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    [e] = [x for x in ev if x[0] == "upload"]
    assert e[-3] == "0"  # can_modify: no
    assert "held past mapiproxy:fx hold limit" in p.log()
    if action == "prefix":
        assert all(r["ReturnValue"] == 0 and r["BufferUsedSize"] == r["sent"] for r in rs)
        assert got == stream and max(sizes) <= 0x7000  # unchanged
    else:
        assert [r["ReturnValue"] for r in rs] == [0] * (len(rs) - 1) + [EC_ACCESS_DENIED]
        assert len(got) < len(stream) and stream.startswith(got)  # no end: nothing stored


def test_upload_malformed_passes(request, make_proxy, tmp_path):
    """A stream the proxy cannot decode (a message, then an unknown property
    type) is not held from there on: the upstream gets every byte, in order,
    and judges it; one warning."""
    p, t, dump = session(request, make_proxy, tmp_path, "rpc", "prefix", "malformed")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    good = W.top_message(message("malformed first", [("big.bin", BIG[:20000])]))
    bad = W.StartMessage.to_bytes(4, "little") + b"\x37\x00\x99\x99" + bytes(range(256)) * 40
    rs = put_stream(t, sent, good + bad, 7000)
    t.close()
    assert p.alive()
    assert all(r["ReturnValue"] == 0 and r["BufferUsedSize"] == r["sent"] for r in rs)
    [(got, sizes)] = received(dump, "malformed first".encode("utf-16le"))
    plus = len("[TEST] ".encode("utf-16le"))  # the first message was complete: prefixed
    assert got.endswith(bad) and len(got) == len(good) + plus + len(bad)
    assert W.messages_of(W.parse(got[:-len(bad)]))[0]["props"][SUBJECT] == \
        "[TEST] malformed first"
    assert "ics-upload stream not assembled" in p.log()


@pytest.mark.parametrize("action", ["prefix", "block"])
def test_upload_put_buffer_extended(request, make_proxy, tmp_path, action):
    p, t, dump = session(request, make_proxy, tmp_path, "mapihttp", action, "extended")
    sent = t.c.execute(EC.RopBuffer().logon(0, ALICE))[0]["FolderIds"][6]
    tag = "extended %s" % action
    stream = W.top_message(message(tag, [("big.bin", BIG[:30000])]))
    rs = put_stream(t, sent, stream, 7000, IC.put_buffer_ext)
    t.close()
    assert p.alive()
    [(got, sizes)] = received(dump, tag.encode("utf-16le"))
    if action == "prefix":
        assert all(r["ReturnValue"] == 0 and r["BufferUsedSize"] == r["sent"] for r in rs)
        assert got == stream and set(sizes[:-1]) == {7000}  # the client's, as it sent them
    else:
        assert [r["ReturnValue"] for r in rs] == [0] * (len(rs) - 1) + [EC_ACCESS_DENIED]
        assert stream.startswith(got) and len(got) < len(stream)
