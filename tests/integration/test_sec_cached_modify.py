"""The security modules' download actions on held cached-mode streams
(issue 15; doc/internals/content.md, "Holding and re-chunking"): with the
proxy holding each message of an ICS download until its verdict (the
default `mapiproxy:fx hold limit`), the edits reach the client inside the
FastTransfer stream, over RPC and MAPI/HTTP, with the real clamd and spamd
(test_sec_cached.py's services, fixtures and helpers):
  - av replace: the EICAR attachment becomes a text notice attachment;
  - spam tag: GTUBE's message gets the "[SPAM] " prefix and the X-Spam-Flag
    and X-Spam-Status named properties (PS_INTERNET_HEADERS);
  - phish defang: the feed's URL defanged in the body;
  - av block of a message spread over 2000-byte GetBuffers: the notice.
None of their verdict lines says "fallback":"cannot modify"; the change
header (PidTagMid, source and change keys) is the lab's; the other
messages are the lab's."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import lab_store as LS  # noqa: E402
import test_sec_cached as SC  # noqa: E402
from test_sec_cached import (  # noqa: E402,F401
    EICAR, GTUBE, SUBJECT, by_mid, message, mh_env, rpc_lab, services, synced, verdicts)

pytestmark = SC.pytestmark
PS_INTERNET_HEADERS = "00020386-0000-0000-c000-000000000046"
BUF = 0x7F00


@pytest.fixture(params=["rpc", "mapihttp"])
def start(request, make_proxy):
    """As test_sec_cached's, with the stream held (the default hold limit)."""
    return SC.starter(request, make_proxy, {})


LASTMOD = 0x30080040  # the lab stamps it with each sync's time (test_sec_cached.unstamped)


def hdr(m):
    return {k: v for k, v in m["header"].items() if k != LASTMOD}


def others_same(lab, got, bad):
    a, b = by_mid(lab), by_mid(got)
    assert set(a) == set(b)
    for mid in a:
        if mid not in bad:
            assert dict(a[mid], header=hdr(a[mid])) == dict(b[mid], header=hdr(b[mid]))


def one_line(vlog, mid):
    [v] = verdicts(vlog, lambda x: x["message_id"] == "0x%016x" % mid, 1)
    assert "fallback" not in v, v
    return v


def test_av_replace(start, services, tmp_path):
    opts = {"dcerpc_mapiproxy:modules": "av", "av:clamd": services["clamd"],
            "av:action_download": "replace"}
    subj = "eicar replace held %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path, [message(subj, "see the attachment\r\n", EICAR)])
    mid = mids[subj]
    assert EICAR in lab["stream"] and EICAR not in got["stream"]
    v = one_line(vlog, mid)
    assert (v["verdict"], v["action"]) == ("infected", "replace")
    m, src = by_mid(got)[mid], by_mid(lab)[mid]
    assert hdr(m) == hdr(src) and m["props"] == src["props"]
    [att] = m["attachments"]
    assert att["props"][LS.PidTagAttachLongFilename] == "file.bin.txt"
    assert att["props"][LS.PidTagAttachMimeTag] == "text/plain"
    notice = att["props"][LS.PidTagAttachDataBinary]
    assert b"was removed by the mail proxy's virus scanner" in notice
    assert b"Test.EICAR.Made-In-Test" in notice
    others_same(lab, got, {mid})


def test_spam_tag(start, services, tmp_path):
    opts = {"dcerpc_mapiproxy:modules": "spam", "spam:spamd": services["spamd"],
            "spam:action_download": "tag", "spam:threshold": "20"}
    subj = "gtube tag held %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path, [message(subj, "This is the GTUBE\r\n\r\n%s\r\n" % GTUBE)],
        folder=5)
    mid = mids[subj]
    v = one_line(vlog, mid)
    assert (v["verdict"], v["action"]) == ("spam", "tag")
    m, src = by_mid(got)[mid], by_mid(lab)[mid]
    assert hdr(m) == hdr(src)
    assert m["props"][SUBJECT] == "[SPAM] " + subj
    named = {(x["guid"], x.get("name")): x["value"] for x in m.get("named", [])}
    assert named[(PS_INTERNET_HEADERS, "X-Spam-Flag")] == "YES"
    assert named[(PS_INTERNET_HEADERS, "X-Spam-Status")].startswith("Yes")
    assert m["props"][LS.PidTagBody] == src["props"][LS.PidTagBody]
    others_same(lab, got, {mid})


def test_phish_defang(start, tmp_path):
    feed = tmp_path / "feed.txt"
    feed.write_text("http://evil.example/login\n")
    opts = {"dcerpc_mapiproxy:modules": "phish", "phish:feeds": str(feed),
            "phish:action_download": "defang"}
    tag = "held %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(opts, start, tmp_path, [
        message("phish " + tag, "Log in at http://evil.example/login today\r\n"),
        message("docs " + tag, "Read https://docs.python.org/3/\r\n")], folder=7)
    bad = mids["phish " + tag]
    v = one_line(vlog, bad)
    assert v["action"] == "defang"
    m = by_mid(got)[bad]
    assert hdr(m) == hdr(by_mid(lab)[bad])
    body = m["props"][LS.PidTagBody]
    assert "http://evil.example/login" not in body and "hxxp://evil[.]example/login" in body
    others_same(lab, got, {bad})


def test_av_block_across_buffers(start, services, tmp_path):
    """The limit test_sec_cached.py shows for unheld streams, lifted: a
    message over several 2000-byte GetBuffers is blocked."""
    opts = {"dcerpc_mapiproxy:modules": "av", "av:clamd": services["clamd"],
            "av:action_download": "block"}
    subj = "spread eicar held %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path,
        [message(subj, "see the attachment\r\n" + "long line of text\r\n" * 400, EICAR)], buf=2000,
        folder=6)  # Sent Items: test_av_replace's message stays in the Inbox
    mid = mids[subj]
    assert len(lab["chunks"]) > 5 and EICAR not in got["stream"]
    assert all(len(c) <= 2000 for c in got["chunks"])
    v = one_line(vlog, mid)
    assert (v["verdict"], v["action"]) == ("infected", "block")
    n = by_mid(got)[mid]
    assert n["props"][SUBJECT].startswith("[Blocked] av: ")
    assert hdr(n) == hdr(by_mid(lab)[mid])
    others_same(lab, got, {mid})
