"""The security modules on cached-mode downloads (issue 16): a message of the
lab's Inbox synced by ICS (RopSynchronizationConfigure +
RopFastTransferSourceGetBuffer) through the proxy (build/mapiproxy-asan)
over RPC and over MAPI/HTTP, with the real services started once for the
file: clamd (an EICAR database made here) and spamd in local mode.

A stream's messages cannot be edited (mp_message_can_modify is false), so
av's block, replace and quarantine all give the client the notice in place
of the message (quarantine still writes the .eml and its JSON record); the
log line says the configured action and the fallback.  spam's tag becomes
a log-only verdict line (the message passes unchanged), its block the
notice; phish's block the notice.  Every other message of the sync is byte
for byte the stream the lab sends to a client that connects to it
directly.  A second session's sync of the same message is answered from the
verdict cache (one scan).  A message spread over several GetBuffers cannot
be blocked (logged `allow (cannot block)`).  av block, spam tag and phish
run over both transports; the other variants over RPC only (the file's
time: past the transport the FastTransfer code is the same).  These are the
verdicts on an unheld stream (`mapiproxy:fx hold limit = 0`); on a held one
the edits and the block across buffers work: test_sec_cached_modify.py."""
import json
import os
import shutil
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
from test_http_front_lab import lab_env, start_front  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_rop_lifetime import HttpTransport, RpcTransport  # noqa: E402
from test_svc import EICAR, GTUBE, Lab as SvcLab  # noqa: E402

SMALL = 4000  # lab_store's big.bin: the whole Inbox in one GetBuffer
LABENV = {"LAB_BIG_ATTACHMENT_SIZE": str(SMALL)}
SUBJECT, PidTagMid = 0x0037001F, 0x674A0014
BUF = 0x7F00
CHG = (IC.W.IncrSyncChg).to_bytes(4, "little")
LASTMOD = (IC.W.PidTagLastModificationTime).to_bytes(4, "little")

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in ("clamd", "spamd")), reason="clamd or spamd missing")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("seccached-svc"))
    os.chmod(d, 0o755)
    s = SvcLab(d)
    try:
        s.start_all(("clamd", "spamd"))
        yield {"clamd": "unix:" + s.path("clamd.sock"), "spamd": "unix:" + s.path("spamd.sock")}
    finally:
        for name in list(s.procs):
            s.stop(name)


@pytest.fixture(scope="module")
def mh_env(tmp_path_factory):
    yield from lab_env(tmp_path_factory, LABENV, "seccached", ())


@pytest.fixture(scope="module")
def rpc_lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("seccached-rpc"), env=LABENV)
    yield lab
    lab.stop()


def starter(request, make_proxy, extra):
    """start(opts) -> (proxy, a client session through it, one straight to
    the lab), the proxy with opts and extra."""
    def go(opts):
        opts = dict(opts, **extra)
        if request.param == "rpc":
            lab = request.getfixturevalue("rpc_lab")
            p = make_proxy(upstream_epm_port=lab.epm_port, extra=opts)
            return p, lambda: RpcTransport(p.rpc_port), \
                lambda: RpcTransport(lab.ports["emsmdb"])
        e = request.getfixturevalue("mh_env")
        p = start_front(make_proxy, e, opts)
        return p, lambda: HttpTransport(p.base, e["ca"]), \
            lambda: HttpTransport("https://localhost:%d" % e["mapihttp"], e["ca"])
    return go


@pytest.fixture(params=["rpc", "mapihttp"])
def start(request, make_proxy):
    # these are the unheld stream's verdicts (no re-chunking: a message
    # either fits its GetBuffer or is relayed as it came); held streams,
    # where the edits apply: test_sec_cached_modify.py
    return starter(request, make_proxy, {"mapiproxy:fx hold limit": "0"})


def message(subject, body, data=None):
    """A small message; its body long enough (~1.5 KB) for the notice's
    subject and body to fit in its place."""
    body += "\r\n" + "Regards,\r\nthe sender\r\n" * 60
    m = {"props": {SUBJECT: subject, LS.PidTagMessageClass: "IPM.Note", LS.PidTagBody: body}}
    if data is not None:
        m["attachments"] = [LS._by_value("file.bin", "application/octet-stream", data)]
    return m


def logon(t, folder=4):
    [lo] = t.execute(EC.RopBuffer().logon(0, ALICE))
    assert lo["ReturnValue"] == 0
    return lo["FolderIds"][folder]


def verdicts(path, pred, n):
    got = []
    for _ in range(200):
        got = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
        got = [x for x in got if pred(x)]
        if len(got) >= n:
            return got
        time.sleep(0.1)
    return got


def synced(opts, start, tmp_path, msgs, sessions=1, buf=BUF, folder=4):
    """Uploads msgs (through the proxy; the module only looks at downloads)
    to a folder (the Inbox; spam and phish use the Outbox and Deleted Items
    so that the Inbox stays one GetBuffer), syncs it straight from the lab,
    then through the
    proxy `sessions` times (each its own session).  Returns (proxy, the
    lab's sync, the proxied syncs, {subject: mid}, verdict log path)."""
    vlog = str(tmp_path / "verdicts")
    opts = dict(opts)
    mod = opts["dcerpc_mapiproxy:modules"]
    opts.update({mod + ":verdict_log": vlog, mod + ":directions": "download"})
    p, via, direct = start(opts)
    t = via()
    inbox = logon(t, folder)
    mids = {m["props"][SUBJECT]: CC.upload(t.c, inbox, m) for m in msgs}
    t.close()
    d = direct()
    logon(d)
    lab = IC.sync_folder(d.c, 0, inbox, buffer_size=buf)
    d.close()
    got = []
    for _ in range(sessions):
        t = via()
        logon(t)
        got.append(IC.sync_folder(t.c, 0, inbox, buffer_size=buf))
        t.close()
    assert p.alive()
    return p, lab, got, mids, vlog


def by_mid(sync):
    return {m["header"][PidTagMid]: m for m in sync["messages"]}


def unstamped(stream):
    """The stream with the values of PidTagLastModificationTime zeroed: the
    lab gives the messages it was started with the time of each sync
    (lab_ics.change_header), so two syncs differ there and only there."""
    out = bytearray(stream)
    i = out.find(LASTMOD)
    while i >= 0:
        out[i + 4:i + 12] = bytes(8)
        i = out.find(LASTMOD, i + 12)
    return bytes(out)


def same_but(lab, got, prefix):
    """got's stream is lab's, byte for byte, but inside the messages whose
    subject starts with prefix (the earlier tests' of the file too: the lab
    is shared), and the buffers' sizes are the lab's; returns got's
    messages, by mid."""
    assert [len(c) for c in got["chunks"]] == [len(c) for c in lab["chunks"]]
    a, b = unstamped(lab["stream"]), unstamped(got["stream"])
    assert len(a) == len(b)
    # each such message's bytes in the lab's stream: from its IncrSyncChg
    # to the next one
    keep, pos = [], 0
    bad = [m for m in lab["messages"] if m["props"].get(SUBJECT, "").startswith(prefix)]
    assert bad
    for m in bad:
        at = a.find(m["props"][SUBJECT].encode("utf-16-le") + b"\0\0")
        start = a.rfind(CHG, 0, at)
        end = a.find(CHG, at)
        end = len(a) if end < 0 else end
        assert pos <= start < at
        assert a[start:end] != b[start:end]
        keep.append((pos, start))
        pos = end
    keep.append((pos, len(a)))
    for x, y in keep:
        assert a[x:y] == b[x:y]
    return {m["header"][PidTagMid]: by_mid(got)[m["header"][PidTagMid]] for m in bad}


def rpc_only(request, cond=True):
    """Some variants over RPC only, for the file's time: past the transport
    the FastTransfer code is the same for RPC and MAPI/HTTP."""
    if cond and request.node.callspec.params["start"] != "rpc":
        pytest.skip("over RPC only (the same FastTransfer code as MAPI/HTTP)")


def line_of(v, mid):
    return [x for x in v if x["message_id"] == "0x%016x" % mid]


@pytest.mark.parametrize("action", ["tag", "block"])
def test_spam_gtube_sync(start, services, tmp_path, action, request):
    """GTUBE in a synced message, spamd: tag cannot edit a stream, so the
    verdict is logged (action log, configured tag, fallback) and the client
    gets the lab's bytes; with action block, the notice."""
    rpc_only(request, action == "block")
    opts = {"dcerpc_mapiproxy:modules": "spam", "spam:spamd": services["spamd"],
            "spam:action_download": action,
            # the test's messages have no From, Date or Received: spamd gives
            # them 5.2 (MISSING_* rules); GTUBE scores 1000
            "spam:threshold": "20"}
    subj = "gtube %s %d" % (action, os.getpid())
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path, [message(subj, "This is the GTUBE\r\n\r\n%s\r\n" % GTUBE)],
        folder=5)
    mid = mids[subj]
    [v] = verdicts(vlog, lambda x: x["message_id"] == "0x%016x" % mid, 1)
    assert v["verdict"] == "spam" and v["service"] == "spamd" and v["mode"] == "ics-download"
    if action == "tag":
        assert unstamped(got["stream"]) == unstamped(lab["stream"])
        assert (v["action"], v["configured"], v["fallback"]) == ("log", "tag", "cannot modify")
    else:
        n = same_but(lab, got, "gtube ")[mid]
        assert n["props"][SUBJECT].startswith("[Blocked] spam: ")
        assert v["action"] == "block" and "fallback" not in v


@pytest.mark.parametrize("action", ["block", "defang"])
def test_phish_feed_sync(start, tmp_path, action):
    """A URL from a feed in a synced message: with phish:action_download =
    block, the notice; with defang (the default), which cannot edit a
    stream, the lab's bytes and a log line saying so.  A clean message next
    to it is the lab's bytes."""
    feed = tmp_path / "feed.txt"
    feed.write_text("http://evil.example/login\n")
    opts = {"dcerpc_mapiproxy:modules": "phish", "phish:feeds": str(feed),
            "phish:action_download": action}
    tag = "%s %d" % (action, os.getpid())
    p, lab, [got], mids, vlog = synced(opts, start, tmp_path, [
        message("phish " + tag, "Log in at http://evil.example/login today\r\n"),
        message("docs " + tag, "Read https://docs.python.org/3/\r\n")], folder=7)
    bad, clean = mids["phish " + tag], mids["docs " + tag]
    [v] = verdicts(vlog, lambda x: x["message_id"] == "0x%016x" % bad, 1)
    assert v["mode"] == "ics-download" and "http://evil.example/login" in v["urls"]
    if action == "defang":
        assert unstamped(got["stream"]) == unstamped(lab["stream"])
        assert (v["action"], v["configured"], v["fallback"]) == ("log", "defang", "cannot modify")
        return
    n = same_but(lab, got, "phish ")[bad]
    assert n["props"][SUBJECT].startswith("[Blocked] phish: ")
    assert by_mid(got)[clean] == by_mid(lab)[clean]
    assert v["action"] == "block"


@pytest.mark.parametrize("action", ["block", "replace", "quarantine"])
def test_av_eicar_sync(start, services, tmp_path, action, request):
    """EICAR in a synced message: the notice, for each action; the clean
    message next to it (and every other one) byte for byte the lab's; the
    second session's sync answered from the verdict cache."""
    rpc_only(request, action != "block")
    qdir = tmp_path / "q"
    qdir.mkdir()
    opts = {"dcerpc_mapiproxy:modules": "av", "av:clamd": services["clamd"],
            "av:action_download": action, "av:quarantine_dir": str(qdir)}
    tag = "%s %d" % (action, os.getpid())
    p, lab, (one, two), mids, vlog = synced(
        opts, start, tmp_path, [message("eicar " + tag, "see the attachment\r\n", EICAR),
                                message("clean " + tag, "nothing here\r\n", b"plain bytes\r\n")],
        sessions=2)
    bad, clean = mids["eicar " + tag], mids["clean " + tag]
    assert EICAR in lab["stream"]
    for got in (one, two):
        assert EICAR not in got["stream"]
        n = same_but(lab, got, "eicar ")[bad]
        assert n["props"][SUBJECT].startswith("[Blocked] av: ")
        assert "Test.EICAR.Made-In-Test" in n["props"][SUBJECT]
        assert "removed from this folder" in n["props"][LS.PidTagBody]
        assert n["attachments"] == [] and n["header"] == by_mid(lab)[bad]["header"]
        assert by_mid(got)[clean] == by_mid(lab)[clean]
    v = verdicts(vlog, lambda x: x["message_id"] in ("0x%016x" % bad, "0x%016x" % clean), 4)
    vb, vc = line_of(v, bad), line_of(v, clean)
    assert [(x["verdict"], x["cached"], x["service"]) for x in vb] == \
        [("infected", False, "clamd"), ("infected", True, "cache")], vb
    assert [(x["verdict"], x["cached"]) for x in vc] == [("clean", False), ("clean", True)], vc
    for x in vb:
        assert x["mode"] == "ics-download" and x["direction"] == "download"
        assert x["action"] == ("quarantine" if action == "quarantine" else "block")
        if action == "replace":
            assert (x["configured"], x["fallback"]) == ("replace", "cannot modify")
        else:
            assert "fallback" not in x
    if action == "quarantine":
        # quarantined once per message (id + change key): the cache hit's
        # line names the first sync's quarantine, no second .eml
        [q] = set(x["quarantine"] for x in vb)
        eml = (qdir / (q + ".eml")).read_bytes()
        assert b"eicar " + tag.encode() in eml
        rec = json.loads((qdir / (q + ".json")).read_text())
        assert rec["id"] == q and rec["verdict"] == "infected"
        assert rec["message_id"] == "0x%016x" % bad
        # (the lab's Inbox also holds the earlier tests' EICAR messages):
        # one quarantine per message, each cached line names its first
        first = {}
        for x in verdicts(vlog, lambda x: "quarantine" in x, 2):
            assert first.setdefault(x["message_id"], x["quarantine"]) == x["quarantine"], x
        assert sorted(os.listdir(qdir)) == sorted(q + e for q in first.values()
                                                  for e in (".eml", ".json"))


def test_av_eicar_across_buffers(start, services, tmp_path, request):
    """The limit: a message spread over several GetBuffers (2000 bytes here)
    has partly reached the client when it completes, so it cannot be
    blocked: the client gets the lab's bytes and the log says so.  Over RPC
    only (the file's time; the FX code is the transports')."""
    rpc_only(request)
    opts = {"dcerpc_mapiproxy:modules": "av", "av:clamd": services["clamd"],
            "av:action_download": "block"}
    subj = "spread eicar %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path, [message(subj, "see the attachment\r\n", EICAR)], buf=2000)
    assert unstamped(got["stream"]) == unstamped(lab["stream"])
    assert [len(c) for c in got["chunks"]] == [len(c) for c in lab["chunks"]]
    [v] = verdicts(vlog, lambda x: x["message_id"] == "0x%016x" % mids[subj], 1)
    assert (v["verdict"], v["action"]) == ("infected", "allow (cannot block)")
