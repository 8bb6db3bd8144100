"""The security modules' other services on cached-mode downloads (issue 16):
a message of the lab's store synced by ICS through the proxy
(build/mapiproxy-asan) over RPC and over MAPI/HTTP, the module set to block
downloads, with the real services started once for the file: av with ICAP
(c-icap's virus_scan over clamd), extract with clamav-milter and with
rspamd's milter proxy, spam with rspamd's /checkv2.  The EICAR / GTUBE
message reaches the client as the notice, every other byte of the sync is
the lab's (test_sec_cached.py's helpers: same_but); the verdict line names
the service.  test_sec_cached.py runs clamd and spamd the same way."""
import os
import shutil

import pytest

import lab_store as LS
from test_sec_cached import (BUF, SUBJECT, by_mid, line_of, message, mh_env,  # noqa: F401
                             rpc_lab, same_but, start, synced, verdicts)
from test_svc import EICAR, GTUBE, Lab as SvcLab

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in ("clamd", "c-icap", "clamav-milter", "rspamd")),
    reason="clamd, c-icap, clamav-milter or rspamd missing")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("seccs-svc"))
    os.chmod(d, 0o755)
    s = SvcLab(d)
    try:
        rspamd_up = s.start_later(("rspamd",))  # the rspamd cases run last
        s.start_all(("clamd", "icap", "milter"))
        yield {"icap": "127.0.0.1:%d" % s.ports["icap"],
               "milter": "unix:" + s.path("milter.sock"),
               "rmilter": "127.0.0.1:%d" % s.ports["rmilter"],
               "rspamd": "127.0.0.1:%d" % s.ports["rspamd"], "rspamd_up": rspamd_up}
    finally:
        rspamd_up()
        for name in list(s.procs):
            s.stop(name)


# (module, its option -> service, the verdict line's service and verdict,
# the bad content, the folder: one per case, so that each stays within
# one GetBuffer)
CASES = {
    "icap": ("av", {"av:icap": "icap"}, "icap", "infected", "eicar", 4),
    "clamav-milter": ("extract", {"extract:milter": "milter"}, "milter", "reject", "eicar", 5),
    "rspamd-milter": ("extract", {"extract:milter": "rmilter"}, "milter", "reject", "gtube", 6),
    "rspamd": ("spam", {"spam:rspamd": "rspamd"}, "rspamd", "spam", "gtube", 7),
}
# rspamd's "add header" (8.5) for any message of the test without From, To
# or Date would be spam too: only GTUBE's 15 is, here
MORE = {"rspamd": {"spam:threshold": "12"}}


@pytest.mark.parametrize("case", ["icap", "clamav-milter"])
def test_blocked_download_is_the_notice(start, services, tmp_path, case):
    """EICAR (ICAP, clamav-milter) in a synced message, the module's
    action_download block: the client gets the notice in its place
    (subject "[Blocked] MODULE: ...", no attachment, the lab's change
    header), the clean message next to it and every other byte the lab's;
    one verdict line each."""
    blocked(start, services, tmp_path, case)


# after the others: rspamd starts slowly (services: start_later)
@pytest.mark.parametrize("case", ["rspamd-milter", "rspamd"])
def test_rspamd_blocked_download_is_the_notice(start, services, tmp_path, case):
    """The same with GTUBE, rspamd's milter proxy (extract) and rspamd's
    /checkv2 (spam)."""
    services["rspamd_up"]()
    blocked(start, services, tmp_path, case)


def blocked(start, services, tmp_path, case):
    mod, svc, service, verdict, what, folder = CASES[case]
    opts = {"dcerpc_mapiproxy:modules": mod, "%s:action_download" % mod: "block"}
    opts.update({k: services[v] for k, v in svc.items()})
    opts.update(MORE.get(case, {}))
    tag = "%s %d" % (case, os.getpid())
    if what == "eicar":
        bad_msg = message("bad " + tag, "see the attachment\r\n", EICAR)
    else:
        bad_msg = message("bad " + tag, "This is the GTUBE\r\n\r\n%s\r\n" % GTUBE)
    p, lab, [got], mids, vlog = synced(
        opts, start, tmp_path,
        [bad_msg, message("fine " + tag, "Shall we have lunch on Friday at noon?\r\n")],
        folder=folder)
    bad, clean = mids["bad " + tag], mids["fine " + tag]
    n = same_but(lab, got, "bad " + case)[bad]
    assert n["props"][SUBJECT].startswith("[Blocked] %s: " % mod), n["props"][SUBJECT]
    assert "removed from this folder" in n["props"][LS.PidTagBody]
    assert n["attachments"] == [] and n["header"] == by_mid(lab)[bad]["header"]
    assert EICAR not in got["stream"] and GTUBE.encode("utf-16-le") not in got["stream"]
    assert by_mid(got)[clean] == by_mid(lab)[clean]
    v = verdicts(vlog, lambda x: x["message_id"] in ("0x%016x" % bad, "0x%016x" % clean), 2)
    [vb], [vc] = line_of(v, bad), line_of(v, clean)
    assert (vb["service"], vb["verdict"], vb["action"]) == (service, verdict, "block"), vb
    assert vb["mode"] == "ics-download" and vb["direction"] == "download"
    assert vc["action"] == "allow" and vc["service"] == service, vc
    if case == "icap":
        assert "Test.EICAR.Made-In-Test" in vb["name"]
