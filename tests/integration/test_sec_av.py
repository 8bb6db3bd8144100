"""The av module (and extract with clamav-milter) in build/sec-host against
clamd (an EICAR database made here), c-icap's virus_scan and clamav-milter,
started once for the file: blocking, replacing, quarantine, the verdict
cache, the JSON verdict log, a scanner killed mid-session, the option schema."""
import json
import os
import signal
import subprocess
import time

import pytest

from sec_host import HOST, MODS, SKIP, SecHost, make_lab, stop_lab
from test_svc import wait_for

pytestmark = SKIP


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = make_lab(tmp_path_factory, ('clamd', 'icap', 'milter'))
    yield lab
    stop_lab(lab)


def test_av_clamd(lab):
    qdir = lab.path("quarantine")
    os.makedirs(qdir)
    h = SecHost(lab, "av", clamd="unix:" + lab.path("clamd.sock"))
    eml, att = lab.path("eicar_mail"), lab.path("eicar_bin")
    # upload: blocked (default action_upload = block)
    v = h.scan(dir="upload", mime=eml, att=att + ":application/octet-stream", user="alice")
    assert v["blocked"] and "Test.EICAR.Made-In-Test" in v["reason"]
    # download: the infected attachment is replaced by a notice
    v = h.scan(dir="download", mime=eml, att=att)
    assert not v["blocked"] and "removed" in v["replaced_0"]
    # a clean message: no verdict at all
    v = h.scan(dir="download", mime=lab.path("clean_att"),
               att=lab.path("clean_att") + ":text/plain")
    assert v == {"blocked": False, "reason": "", "pending": True, "_secs": v["_secs"]}
    # the JSON log line per verdict
    log = h.verdicts()
    assert [x["verdict"] for x in log] == ["infected", "infected", "clean"]
    assert log[0]["user"] == "alice" and log[0]["direction"] == "upload"
    assert log[0]["mode"] == "online" and log[0]["service"] == "clamd"
    assert log[0]["action"] == "block" and log[1]["action"] == "replace"
    assert all("ms" in x and "message_id" in x for x in log)
    h.close()
    # quarantine: the .eml as it was, a JSON record, the id in the log
    h = SecHost(lab, "av", clamd="unix:" + lab.path("clamd.sock"), action_upload="quarantine",
                quarantine_dir=qdir)
    v = h.scan(dir="upload", mime=eml)
    assert v["blocked"] and "quarantined" in v["reason"]
    qid = h.verdicts()[0]["quarantine"]
    assert open(os.path.join(qdir, qid + ".eml"), "rb").read() == lab.files["eicar_mail"]
    rec = json.load(open(os.path.join(qdir, qid + ".json")))
    assert rec["id"] == qid and rec["verdict"] == "infected" and rec["module"] == "av"
    assert oct(os.stat(os.path.join(qdir, qid + ".eml")).st_mode & 0o777) == "0o600"
    h.close()


def test_av_cache(lab):
    """The same message id + change key (a message synced to several
    clients) is scanned once; another change key is scanned again."""
    h = SecHost(lab, "av", clamd="unix:" + lab.path("clamd.sock"))
    for ck in ("0a0b0c", "0a0b0c", "0a0b0d"):
        v = h.scan(dir="download", mime=lab.path("eicar_mail"), att=lab.path("eicar_bin"),
                   mid="0x1234", ck=ck)
        assert "replaced_0" in v
    log = h.verdicts()
    assert [x["cached"] for x in log] == [False, True, False]
    assert log[1]["service"] == "cache" and log[1]["verdict"] == "infected"
    h.close()


def test_av_icap(lab):
    h = SecHost(lab, "av", icap="127.0.0.1:%d" % lab.ports["icap"], icap_service="avscan")
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert v["blocked"] and "Test.EICAR" in v["reason"]
    v = h.scan(dir="download", mime=lab.path("eicar_mail"), att=lab.path("eicar_bin"))
    assert "replaced_0" in v and not v["blocked"]
    assert not h.scan(dir="upload", mime=lab.path("clean"))["blocked"]
    assert [x["service"] for x in h.verdicts()] == ["icap"] * 3
    h.close()


def test_scanner_killed(lab):
    """clamd killed mid-session: each direction's policy holds at once (no
    hang), and the module reconnects when clamd is back."""
    sock = "unix:" + lab.path("clamd.sock")
    h = SecHost(lab, "av", clamd=sock, fail_upload="closed", fail_download="open",
                timeout="3000")
    assert h.scan(dir="upload", mime=lab.path("eicar_mail"))["blocked"]
    lab.stop("clamd", signal.SIGKILL)
    v = h.scan(dir="upload", mime=lab.path("clean"), timeout=10)
    assert v["blocked"] and "could not check" in v["reason"] and v["_secs"] < 5
    v = h.scan(dir="download", mime=lab.path("eicar_mail"), timeout=10)
    assert not v["blocked"] and v["_secs"] < 5
    log = h.verdicts()
    assert log[-2]["action"] == "block (fail closed)" and log[-1]["action"] == "allow (fail open)"
    lab.start_clamd()
    wait_for(lambda: os.path.exists(lab.path("clamd.sock")), 60, "clamd again")
    time.sleep(0.5)
    assert h.scan(dir="upload", mime=lab.path("eicar_mail"))["blocked"]
    assert h.verdicts()[-1]["verdict"] == "infected"
    h.close()


def test_options_checked(lab):
    """A misspelt option is refused before init (the schema)."""
    p = subprocess.run([HOST, os.path.join(MODS, "av.so"), "clamd=x", "fail_uplaod=open"],
                       input=b"quit\n", capture_output=True, timeout=30)
    assert p.returncode == 2 and b"fail_uplaod" in p.stderr
    p = subprocess.run([HOST, os.path.join(MODS, "spam.so")], input=b"quit\n",
                       capture_output=True, timeout=30)
    assert p.returncode == 3 and b"spam:spamd" in p.stderr


def test_extract_clamav_milter(lab):
    h = SecHost(lab, "extract", milter="unix:" + lab.path("milter.sock"))
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert v["blocked"] and "reject" in v["reason"]
    v = h.scan(dir="upload", mime=lab.path("clean"))
    assert not v["blocked"] and v.get("named_X-Virus-Status") == "Clean"
    h.close()
