"""clamd killed while two sessions upload through the proxy with av
(build/mapiproxy-asan, online mode over RPC, the lab as upstream): the
configured fail policy (av:fail_upload = closed, av:fail_download = open)
holds for both sessions at once and neither hangs; when clamd is back the module scans again (a new
connection to the restarted clamd: EICAR blocked with its signature name,
a clean message stored)."""
import json
import os
import shutil
import signal
import threading
import time

import pytest

import content_client as CC
from test_mime_dump import connect, folder_mids
from test_sec_proxy import EC_ACCESS_DENIED, EICAR, upload_msg, verdicts
from test_svc import Lab as SvcLab, wait_for

pytestmark = pytest.mark.skipif(shutil.which("clamd") is None, reason="clamd missing")


def both(sessions, subject, data):
    """Both sessions upload at the same time; each gets its message id or
    the error text, and neither may take more than 15 s."""
    out = [None, None]

    def one(i):
        dce, c, fids = sessions[i]
        try:
            out[i] = CC.upload(c, fids[5], upload_msg("%s %d" % (subject, i), data))
        except RuntimeError as e:
            out[i] = str(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join(15)
    assert not any(t.is_alive() for t in ts), "an upload hung"
    return out, time.time() - t0


def test_clamd_killed_and_back(make_proxy, lab, tmp_path):
    os.makedirs(tmp_path / "svc")
    os.chmod(tmp_path / "svc", 0o755)
    svc = SvcLab(str(tmp_path / "svc"))  # clamd with a test-made EICAR database
    try:
        svc.start_all(("clamd",))
        vlog = str(tmp_path / "verdicts")
        p = make_proxy(upstream_epm_port=lab.epm_port, extra={
            "dcerpc_mapiproxy:modules": "av", "av:clamd": "unix:" + svc.path("clamd.sock"),
            "av:fail_upload": "closed", "av:fail_download": "open", "av:verdict_log": vlog})
        sessions = [connect(p.rpc_port) for _ in range(2)]
        out, _ = both(sessions, "before", b"clean bytes\r\n")
        assert all(isinstance(x, int) for x in out), out
        mids = out

        svc.stop("clamd", signal.SIGKILL)
        out, secs = both(sessions, "while down", b"clean bytes\r\n")
        # fail closed: both refused with Outlook's error, at once
        assert all(isinstance(x, str) and "0x%08x" % EC_ACCESS_DENIED in x for x in out), out
        assert secs < 10, secs
        # fail open for downloads: both sessions still read their message
        t0 = time.time()
        for (dce, c, fids), mid in zip(sessions, mids):
            got = CC.download(c, fids[5], mid)
            assert got["attachments"], got
        assert time.time() - t0 < 10

        svc.start_clamd()
        wait_for(lambda: os.path.exists(svc.path("clamd.sock")), 60, "clamd again")
        # clamd answers once its database is loaded; retry the clean upload
        # until it is stored (each try is refused at once while clamd is not up)
        deadline = time.time() + 20
        while True:
            out, _ = both(sessions, "after", b"clean bytes\r\n")
            if all(isinstance(x, int) for x in out) or time.time() > deadline:
                break
            time.sleep(0.5)
        assert all(isinstance(x, int) for x in out), out
        out, _ = both(sessions, "eicar after", EICAR)
        assert all(isinstance(x, str) and "0x%08x" % EC_ACCESS_DENIED in x for x in out), out

        dce, c, fids = sessions[0]
        have = folder_mids(c, fids[5])
        for s in sessions:
            s[1].disconnect()
            s[0].disconnect()
        assert {"before 0", "before 1", "after 0", "after 1"} <= set(have), have
        assert not any(k.startswith(("while down", "eicar after")) for k in have), have
        v = verdicts(vlog, 8)
        down = [x for x in v if x["verdict"] not in ("clean", "infected")]
        assert sorted(set((x["direction"], x["action"]) for x in down)) == [
            ("download", "allow (fail open)"), ("upload", "block (fail closed)")], down
        infected = [x for x in v if x["verdict"] == "infected"]
        assert len(infected) == 2 and all("Test.EICAR.Made-In-Test" in x["name"]
                                          for x in infected), v
        print(json.dumps(v[-4:]))
    finally:
        for name in list(svc.procs):
            svc.stop(name)
