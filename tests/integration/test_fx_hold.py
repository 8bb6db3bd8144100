"""Cached-mode verdicts on messages that span GetBuffers (issue 15): the
proxy holds a download stream from the start of a message change until the
message is complete and decided, then gives the client the stream in the
buffer sizes it asked for (doc/internals/content.md, "Holding and
re-chunking").

The lab (tests/lab/lab_ics.py, streams written by lab_fxwriter.py from
MS-OXCFXICS; LAB_FX_DUMP keeps each stream it served: the direct sync to
compare with) serves the Inbox; "Meeting minutes (RTF)" carries big.bin
(300 KB here), about 80 of the client's 4000-byte buffers.  With
tests/modules/mpm_msgtest.c giving the verdict (over RPC and MAPI/HTTP):
  - block: the client's reassembled stream parses with the lab's Python
    reader and with the C decoder (build/fxdump); the message is a notice
    with the same change header bytes; every other change and the ICS state
    are byte for byte the lab's; every buffer within the client's 4000;
  - modify (subject prefix, PidTagBody set, big.bin replaced by a text
    notice): the lab's reader shows the changes, the header bytes and the
    other changes are the lab's, and the progress size before the change
    follows its new length; the .eml that mime-dump writes from a second,
    unmodified proxy session is read by Python's email package as well;
  - the stream's progressTotal (IncrSyncProgressMode: ProgressInformation,
    read with the layout of MS-OXCFXICS 2.2.2.7) is the lab's but for its
    NormalMessageTotalSize, which follows a verdict that changed a
    message's length when the client had not been given the progressTotal
    yet (then the IncrSyncProgressPerMsg sizes add up to it, as in the
    lab's stream), and is the lab's otherwise;
  - prefix only: the 300 KB message held whole, then given in the client's
    buffers, mostly answered by the proxy from what it holds;
  - an FX copy (RopFastTransferSourceCopyTo of the message) blocked and
    modified the same way;
  - a message past mapiproxy:fx hold limit relayed unchanged, logged once;
  - --check knows the option;
  - in every case no client GetBuffer response before the last is empty:
    while a message is held the proxy asks the upstream for the next
    buffers itself (side GetBuffers on the client's session), the client's
    buffers are full but for the last;
  - with mapiproxy:fx hold limit = 0 nothing is held and the client's
    buffers are the lab's, byte for byte.
"""
import email
import email.policy
import json
import os
import struct
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import emsmdb_client as EC  # noqa: E402
import ics_client as IC  # noqa: E402
import lab_fxwriter as W  # noqa: E402
from conftest import Lab  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_http_front_lab import lab_env  # noqa: E402
from test_rop_lifetime import RpcTransport, proxy_before  # noqa: E402
from test_fx_sync import decode, fxdump, lab_streams  # noqa: E402,F401

SMALL = 300 * 1024
SUBJECT, BODY, MID = 0x0037001F, 0x1000001F, 0x674A0014
TARGET = "Meeting minutes (RTF)"
BUF = 4000
NOTICE = "the attachment was removed by mpm_msgtest"
# the markers that end a message change at the top of an ICS download
ENDS = {W.IncrSyncChg, W.IncrSyncChgPartial, W.IncrSyncDel, W.IncrSyncRead,
        W.IncrSyncStateBegin, W.IncrSyncEnd, W.IncrSyncProgressPerMsg}


@pytest.fixture(scope="module")
def mh_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fxhold-mh")
    for e in lab_env(tmp_path_factory, {"LAB_FX_DUMP": str(d),
                                        "LAB_BIG_ATTACHMENT_SIZE": str(SMALL)}, "fxholdmh", ()):
        e["dump"] = d
        yield e


@pytest.fixture(scope="module")
def rpc_lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("fxhold-rpc-dump")
    lab = Lab(tmp_path_factory.mktemp("fxhold-rpc"),
              env={"LAB_FX_DUMP": str(d), "LAB_BIG_ATTACHMENT_SIZE": str(SMALL)})
    lab.dump = d
    yield lab
    lab.stop()


def proxy(request, make_proxy, tmp_path, action, transport, extra=()):
    out = tmp_path / "eml"
    out.mkdir(exist_ok=True)
    opts = {"dcerpc_mapiproxy:modules": "mime-dump, mpm_msgtest",
            "mpm_msgtest:log": str(tmp_path / "events.log"), "mpm_msgtest:action": action,
            "mpm_msgtest:match": "Meeting", "mpm_msgtest:hold": "50",
            "mime-dump:dir": str(out), "mime-dump:tmpdir": str(tmp_path), **dict(extra)}
    p, t, lab = proxy_before(request, make_proxy, transport, opts, "rpc_lab", "mh_env")
    return p, t, lab.dump if transport == "rpc" else lab["dump"]


def changes(stream):
    """{PidTagMid: (bytes of the change with its IncrSyncProgressPerMsg,
    bytes of its header: IncrSyncChg .. IncrSyncMessage)} and the bytes
    outside every change."""
    spans = W.parse_spans(stream)
    out, rest, i = {}, b"", 0
    while i < len(spans):
        s, e, a = spans[i]
        if a[0] == "marker" and a[1] in (W.IncrSyncProgressPerMsg, W.IncrSyncChg):
            start = s
            j = i + 1
            while not (spans[j][2][0] == "marker" and spans[j][2][1] == W.IncrSyncChg):
                j += 1  # the progress values, up to the change itself
            k = j + 1
            mid, hdr_end = None, None
            while k < len(spans) and not (spans[k][2][0] == "marker" and spans[k][2][1] in ENDS):
                if spans[k][2][0] == "marker" and spans[k][2][1] == W.IncrSyncMessage and \
                        hdr_end is None:
                    hdr_end = spans[k][1]
                if spans[k][2][0] == "prop" and spans[k][2][1] == MID and hdr_end is None:
                    mid = spans[k][2][3]
                k += 1
            end = spans[k][0] if k < len(spans) else len(stream)
            out[mid] = (stream[start:end], stream[spans[j][0]:hdr_end])
            i = k
            continue
        rest += stream[s:e]
        i += 1
    return out, rest


# progressTotal: IncrSyncProgressMode, then PtypBinary 0x00000102 of
# ProgressInformation (MS-OXCFXICS 2.2.4.3.19, 2.2.2.7): Version u16,
# padding u16, FAIMessageCount u32, FAIMessageTotalSize u64,
# NormalMessageCount u32, padding u32, NormalMessageTotalSize u64
PROGRESS_TOTAL = struct.pack("<II", W.IncrSyncProgressMode, 0x00000102)
PROGRESS_INFO = "<HHIQIIQ"


def progress_info(rest):
    """The ProgressInformation at the start of a stream's bytes outside the
    changes: (Version, FAIMessageCount, FAIMessageTotalSize,
    NormalMessageCount, NormalMessageTotalSize), and the bytes after it."""
    assert rest[:8] == PROGRESS_TOTAL and struct.unpack_from("<I", rest, 8)[0] == 32
    v, _, fai_n, fai_size, n, _, size = struct.unpack_from(PROGRESS_INFO, rest, 12)
    return (v, fai_n, fai_size, n, size), rest[:36] + rest[44:]


def per_msg_sizes(chg):
    """The IncrSyncProgressPerMsg size in front of each change."""
    return [struct.unpack_from("<I", c[0], 8)[0] for c in chg.values()
            if c[0][:4] == struct.pack("<I", W.IncrSyncProgressPerMsg)]


def compared(got, dump, progress=None):
    """The client's stream against the lab's last one: the same changes,
    every change but TARGET's and every byte outside the changes the same
    (the progressTotal's NormalMessageTotalSize: the lab's, or the lab's
    changed by as much as the changes' lengths changed; progress True or
    False: that one), TARGET's change header the same.  Returns (the
    client's changes, the lab's, TARGET's PidTagMid, the lab's stream)."""
    lab = lab_streams(dump)[-1]
    mine, rest = changes(got["stream"])
    theirs, lab_rest = changes(lab)
    info, rest = progress_info(rest)
    lab_info, lab_rest = progress_info(lab_rest)
    assert rest == lab_rest and set(mine) == set(theirs)
    # counts exact (a block replaces a message), the FAI total the lab's
    assert info[:3] == lab_info[:3] and info[3] == lab_info[3] == len(theirs)
    delta = sum(len(mine[m][0]) - len(theirs[m][0]) for m in theirs)
    assert info[4] in (lab_info[4], lab_info[4] + delta)
    followed = info[4] == lab_info[4] + delta
    if progress is not None:
        assert followed == progress and (delta != 0 or not progress)
    # the lab's totals are the sum of its per-message sizes; the client's
    # still are when the total followed (the per-message sizes always do)
    assert sum(per_msg_sizes(theirs)) == lab_info[4]
    if followed:
        assert sum(per_msg_sizes(mine)) == info[4]
    mid = next(m for m in theirs if TARGET.encode("utf-16le") in theirs[m][0])
    for m in theirs:
        if m != mid:
            assert mine[m] == theirs[m]
    assert mine[mid][1] == theirs[mid][1]  # the change header, byte for byte
    return mine, theirs, mid, lab


def sync(t, bufsize=BUF):
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    inbox = logon["FolderIds"][4]
    got = IC.sync_folder(c, 0, inbox, buffer_size=bufsize)
    # within the client's BufferSize, and never empty before the last:
    # while a message is held the proxy fetches the next buffers itself
    # (side GetBuffers) instead of answering an empty Partial
    assert all(len(x) <= bufsize for x in got["chunks"])
    assert all(got["chunks"][:-1]), [i for i, x in enumerate(got["chunks"]) if not x]
    return got, inbox


def target_mid(c, inbox):
    """The TARGET message's id, from the Inbox's contents table."""
    cols = [MID, SUBJECT]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, inbox).get_contents_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 100, cols).release(2).release(1))
    return next(r[MID] for r in res[3]["Rows"] if r[SUBJECT] == TARGET)


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_block_spanning(request, make_proxy, tmp_path, fxdump, transport,  # noqa: F811
                        monkeypatch):
    p, t, dump = proxy(request, make_proxy, tmp_path, "block", transport)
    seen, check = [], IC._check

    def counts(results):  # each GetBuffer response's status and progress
        seen.extend((d["TransferStatus"], d["InProgressCount"], d["TotalStepCount"])
                    for d in results if d.get("rop") == 0x4E and "TransferStatus" in d)
        return check(results)
    monkeypatch.setattr(IC, "_check", counts)
    got, _ = sync(t)
    # Partial until the client's last buffer, Done there with InProgressCount
    # at TotalStepCount (the lab's, in its buffers), below it before
    total = seen[0][2]
    assert [x[0] for x in seen] == [1] * (len(seen) - 1) + [3]
    assert all(x[2] == total for x in seen) and seen[-1][1] == total
    assert all(x[1] < total for x in seen[:-1])
    mine, theirs, mid, lab = compared(got, dump)
    assert len(lab) > 20 * BUF
    assert len(mine[mid][0]) < len(theirs[mid][0]) // 10
    [notice] = [x for x in got["messages"] if x["header"][MID] == mid]
    assert notice["props"][SUBJECT] == "[Blocked] mpm_msgtest blocked it"
    assert notice["attachments"] == [] and notice["recipients"] == []
    d = decode(fxdump, tmp_path, got["chunks"])
    assert d["exact"] and d["bytes"] == len(got["stream"])
    assert d["changes"] == len(theirs)
    assert "[Blocked] mpm_msgtest blocked it" in d["subjects"]
    t.close()
    assert p.alive()
    log = p.log()
    assert "blocked by mpm_msgtest" in log
    assert "side GetBuffer(s)" in log


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_modify_spanning(request, make_proxy, tmp_path, fxdump, transport):  # noqa: F811
    p, t, dump = proxy(request, make_proxy, tmp_path, "prefix,set,replace", transport)
    got, _ = sync(t)
    mine, theirs, mid, lab = compared(got, dump)
    # IncrSyncProgressPerMsg's size follows the change's new length
    (old_size,) = struct.unpack_from("<I", theirs[mid][0], 8)
    (new_size,) = struct.unpack_from("<I", mine[mid][0], 8)
    assert new_size - old_size == len(mine[mid][0]) - len(theirs[mid][0])
    [m] = [x for x in got["messages"] if x["header"][MID] == mid]
    assert m["props"][SUBJECT] == "[TEST] " + TARGET
    assert m["props"][BODY] == "replaced body"
    att = m["attachments"][0]["props"]
    assert att[0x37010102] == NOTICE.encode()
    assert att[0x3707001F] == "big.bin.txt" and att[0x370E001F] == "text/plain"
    assert len(m["attachments"]) == 2  # share.docx (by reference) kept
    d = decode(fxdump, tmp_path, got["chunks"])
    assert d["exact"] and "[TEST] " + TARGET in d["subjects"]
    # full but for a few (a message decided with less than a buffer after it)
    assert sum(1 for x in got["chunks"][:-1] if len(x) < BUF) <= 10
    t.close()
    assert p.alive()
    assert "side GetBuffer(s)" in p.log()


@pytest.mark.parametrize("max_out", [0x4000, 0x40000])
@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_babe_buffers_fit_the_clients_pcbout(request, make_proxy, tmp_path, fxdump,  # noqa: F811
                                             transport, max_out):
    """BufferSize 0xBABE lets the server pick the size, up to
    MaximumBufferSize and to what the client's response buffer holds
    (MS-OXCROPS 2.2.12.5.1): with pcbOut 16 KiB (MAPI/HTTP: the Execute
    request's MaxRopOut) and MaximumBufferSize 0xFFF0 the proxy's
    re-chunked buffers must fit it too.  With 256 KiB (the most pcbOut
    may be) a ROP buffer still holds at most one extended buffer's payload,
    32 KB (MS-OXCRPC 3.1.4.2.1): the lab picks its buffers within that, and
    so does the proxy."""
    p, t, dump = proxy(request, make_proxy, tmp_path, "block", transport)
    t.c.max_out = max_out
    got, _ = sync(t, bufsize=0xFFF0)
    room = min(max_out, 0x8000) - 256
    assert max(len(x) for x in got["chunks"]) <= room, [len(x) for x in got["chunks"]]
    compared(got, dump)
    t.close()
    assert p.alive()


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
@pytest.mark.parametrize("action", ["block", "prefix,set,replace"])
def test_progress_total_follows(request, make_proxy, tmp_path, fxdump, transport,  # noqa: F811
                                action):
    """The client asks for 0x7FF0-byte buffers (the lab client's default):
    its first GetBuffer waits while the proxy reads ahead past TARGET (side
    GetBuffers: fewer than 0x7FF0 bytes of other changes come before it),
    so TARGET is
    decided while the progressTotal, the stream's first element, is still
    the proxy's.  Its NormalMessageTotalSize then changes by as much as
    TARGET's change did, and the IncrSyncProgressPerMsg sizes of the
    client's stream add up to it again (MS-OXCFXICS 2.2.4.3.19: servers can
    use the sum of the message sizes).  The C decoder reads the stream."""
    p, t, dump = proxy(request, make_proxy, tmp_path, action, transport)
    got, _ = sync(t, bufsize=0x7FF0)
    mine, theirs, mid, lab = compared(got, dump, progress=True)
    assert len(mine[mid][0]) < len(theirs[mid][0])
    d = decode(fxdump, tmp_path, got["chunks"])
    assert d["exact"] and d["bytes"] == len(got["stream"])
    t.close()
    assert p.alive()


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_prefix_spanning(request, make_proxy, tmp_path, fxdump, transport):  # noqa: F811
    """Only the subject prefixed: the whole message (300 KB) is held until
    its last byte, then the client gets it in its 4000-byte buffers, most of
    them answered by the proxy from what it holds (the upstream is not
    asked for them); the attachment's bytes are the lab's."""
    p, t, dump = proxy(request, make_proxy, tmp_path, "prefix", transport)
    got, _ = sync(t)
    mine, theirs, mid, lab = compared(got, dump)
    assert len(mine[mid][0]) == len(theirs[mid][0]) + len("[TEST] ".encode("utf-16le"))
    assert sum(1 for x in got["chunks"] if len(x) == BUF) >= SMALL // BUF
    [m] = [x for x in got["messages"] if x["header"][MID] == mid]
    assert m["props"][SUBJECT] == "[TEST] " + TARGET
    [src] = [x for x in W.messages_of(W.parse(lab)) if x.get("header", {}).get(MID) == mid]
    assert m["attachments"] == src["attachments"]
    d = decode(fxdump, tmp_path, got["chunks"])
    assert d["exact"] and d["bytes"] == len(got["stream"])
    t.close()
    assert p.alive()
    # the GetBuffers the proxy answered itself (the ROP stage's debug line)
    assert p.log().count("every ROP answered by modules; nothing relayed") >= SMALL // BUF - 5


def test_hold_limit(request, make_proxy, tmp_path):
    """A message past mapiproxy:fx hold limit (64 KiB here; big.bin is 300
    KB) is relayed as it comes, said once in the log, and cannot be
    blocked: the client's stream is the lab's."""
    p, t, dump = proxy(request, make_proxy, tmp_path, "block", "rpc",
                       {"mapiproxy:fx hold limit": "64K"})
    got, _ = sync(t)
    lab = lab_streams(dump)[-1]
    assert got["stream"] == lab
    t.close()
    log = p.log()
    assert log.count("message held past mapiproxy:fx hold limit (65536 bytes): relayed as it "
                     "comes, no verdict can change it") == 1
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    # can_modify 0, not blocked, mp_message_block -1
    assert [e[-3:] for e in ev if TARGET in e[6]] == [["0", "0", "-1"]]


def test_hold_limit_zero(request, make_proxy, tmp_path):
    """mapiproxy:fx hold limit = 0: nothing held, no side GetBuffer; a
    prefix (which needs a held message) cannot be applied and the client's
    stream is the lab's, byte for byte."""
    p, t, dump = proxy(request, make_proxy, tmp_path, "prefix", "rpc",
                       {"mapiproxy:fx hold limit": "0"})
    got, _ = sync(t)
    assert got["stream"] == lab_streams(dump)[-1]
    t.close()
    assert p.alive()
    assert "side GetBuffer" not in p.log()


def eml_of(out, subject):
    for line in (out / "messages.jsonl").read_text().splitlines():
        x = json.loads(line)
        if x["subject"] == subject and x.get("eml"):
            with open(x["eml"], "rb") as f:
                return email.message_from_binary_file(f, policy=email.policy.default)
    return None


@pytest.mark.parametrize("transport", ["rpc"])
def test_modified_stream_as_mime(request, make_proxy, tmp_path, transport):
    """The client's modified stream goes up again through a second proxy
    with mime-dump only: Python's email reads what the client got."""
    p, t, dump = proxy(request, make_proxy, tmp_path, "prefix,replace", transport)
    got, _ = sync(t)
    t.close()
    [m] = [x for x in got["messages"] if x["props"].get(SUBJECT) == "[TEST] " + TARGET]
    # the client's message as a stream of its own, read by the proxy's
    # FastTransfer assembler and MIME writer through an upload
    lab = request.getfixturevalue("rpc_lab")
    out = tmp_path / "eml2"
    out.mkdir()
    p2 = make_proxy(upstream_epm_port=lab.epm_port,
                    extra={"dcerpc_mapiproxy:modules": "mime-dump", "mime-dump:dir": str(out),
                           "mime-dump:tmpdir": str(tmp_path)})
    t2 = RpcTransport(p2.rpc_port)
    c = t2.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    sent = logon["FolderIds"][6]
    up = {"props": dict(m["props"]), "recipients": m["recipients"],
          "attachments": [a for a in m["attachments"] if a["props"].get(0x37050003) == 1]}
    IC.fx_upload(c, 0, sent, [up], chunk=7000)
    t2.close()
    for _ in range(100):
        msg = eml_of(out, "[TEST] " + TARGET) if (out / "messages.jsonl").exists() else None
        if msg:
            break
        import time
        time.sleep(0.1)
    assert msg is not None and msg["Subject"] == "[TEST] " + TARGET
    atts = [x for x in msg.walk() if x.get_content_disposition() == "attachment"]
    assert [(a.get_filename(), a.get_content_type(), a.get_payload(decode=True)) for a in atts] \
        == [("big.bin.txt", "text/plain", NOTICE.encode())]


@pytest.mark.parametrize("action", ["block", "prefix,replace"])
def test_fx_copy(request, make_proxy, tmp_path, action):
    """RopFastTransferSourceCopyTo of the message (a bare messageContent
    stream, in 4000-byte buffers): blocked and modified too."""
    p, t, dump = proxy(request, make_proxy, tmp_path, action, "rpc")
    got, inbox = sync(t, 0x7F00)
    mid = target_mid(t.c, inbox)
    stream, chunks = IC.fx_download_message(t.c, 0, inbox, mid, buffer_size=BUF)
    assert all(len(x) <= BUF for x in chunks)
    [m] = W.messages_of(W.parse(stream))
    if action == "block":
        assert m["props"][SUBJECT] == "[Blocked] mpm_msgtest blocked it"
        assert m["attachments"] == []
    else:
        assert m["props"][SUBJECT] == "[TEST] " + TARGET
        assert m["attachments"][0]["props"][0x37010102] == NOTICE.encode()
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    assert any(e[1] == "fx-copy" and TARGET in e[6] for e in ev)
    t.close()
    assert p.alive()


def test_check_knows_hold_limit(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[global]\n\tdcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "\tmapiproxy:fx hold limit = 4M\n")
    r = subprocess.run([os.path.join(ROOT, "build", "mapiproxy"), "--check", "-c", str(conf)],
                       capture_output=True, text=True)
    assert "fx hold limit" not in r.stdout + r.stderr, r.stdout + r.stderr
    conf.write_text("[global]\n\tdcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "\tmapiproxy:fx hold limit = lots\n")
    r = subprocess.run([os.path.join(ROOT, "build", "mapiproxy"), "--check", "-c", str(conf)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "fx hold limit" in r.stdout + r.stderr
