"""The security modules (build/modules/av.so, spam.so, phish.so,
extract.so) against the real services, started once for the file as
test_svc.py starts them (clamd with an EICAR database made here, c-icap with
virus_scan, spamd, rspamd and its milter proxy, clamav-milter, aiosmtpd's
LMTP server).  The modules run in build/sec-host, which loads them as the
proxy does and gives them message events made from files (the proxy's own
message events come from the `events` branch; tests through the proxy and
the lab follow when it is merged).  Messages are made with Python's email
package; what reaches the LMTP server is read back with it."""
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_svc import EICAR, GTUBE, NEEDED, Lab, mail, wait_for  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = os.path.join(ROOT, "build", "sec-host")
MODS = os.path.join(ROOT, "build", "modules")

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in NEEDED) or not os.path.exists(HOST)
    or not os.path.exists(os.path.join(MODS, "av.so")),
    reason="services, build/sec-host or the modules missing (scripts/install-deps.sh, make)")

HOSTS = []


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(str(tmp_path_factory.mktemp("sec")))
    os.chmod(lab.d, 0o755)
    extra = {
        "clean_att": mail("report", "the report is attached\n", b"quarterly numbers\x00\x01\x02"),
        "eicar_bin": EICAR,
    }
    for k, v in extra.items():
        lab.files[k] = v
        with open(lab.path(k), "wb") as f:
            f.write(v)
    try:
        lab.start_all()
        yield lab
    finally:
        for h in HOSTS:
            if h.p.poll() is None:
                h.p.kill()
                h.p.wait()
        for name in list(lab.procs):
            lab.stop(name)


class SecHost:
    """build/sec-host MODULE.so key=value...: one JSON line per scan."""

    def __init__(self, lab, module, **opts):
        self.log = lab.path("%s-%d.verdicts" % (module, len(HOSTS)))
        opts.setdefault("verdict_log", self.log)
        args = [HOST, os.path.join(MODS, module + ".so")]
        args += ["%s=%s" % kv for kv in opts.items()]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        HOSTS.append(self)
        assert json.loads(self._line(30)) == {"ready": True}

    def _line(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert r, "sec-host hung"
        ln = self.p.stdout.readline()
        assert ln, "sec-host died"
        return ln

    def scan(self, timeout=30, **fields):
        cmds = ["set noatt"]
        for k, v in fields.items():
            for one in (v if isinstance(v, list) else [v]):
                cmds.append("set %s %s" % (k, one))
        cmds.append("scan")
        self.p.stdin.write(("\n".join(cmds) + "\n").encode())
        self.p.stdin.flush()
        t = time.time()
        out = json.loads(self._line(timeout))
        out["_secs"] = time.time() - t
        print(json.dumps(out)[:400])
        return out

    def verdicts(self):
        with open(self.log) as f:
            return [json.loads(x) for x in f]

    def close(self):
        self.p.stdin.write(b"quit\n")
        self.p.stdin.flush()
        self.p.stdin.close()
        assert self.p.wait(30) == 0  # and no sanitizer report (exit code)


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


def test_spam_spamd_rspamd(lab):
    for opts in ({"spamd": "unix:" + lab.path("spamd.sock")},
                 {"rspamd": "127.0.0.1:%d" % lab.ports["rspamd"]}):
        h = SecHost(lab, "spam", **opts)
        v = h.scan(dir="download", mime=lab.path("gtube"))
        assert not v["blocked"] and v["subject_prefix"] == "[SPAM] "
        assert v["named_X-Spam-Flag"] == "YES" and "score=" in v["named_X-Spam-Status"]
        assert float(v["named_X-Spam-Score"]) >= 15
        v = h.scan(dir="download", mime=lab.path("clean"))
        assert "subject_prefix" not in v and not v["blocked"]
        # uploads are not checked by default
        assert "subject_prefix" not in h.scan(dir="upload", mime=lab.path("gtube"))
        log = h.verdicts()
        assert [x["verdict"] for x in log] == ["spam", "clean"]
        assert "GTUBE" in log[0]["symbols"]
        h.close()
    h = SecHost(lab, "spam", spamd="unix:" + lab.path("spamd.sock"), block_threshold="100")
    v = h.scan(dir="download", mime=lab.path("gtube"))
    assert v["blocked"] and "score 1000.0" in v["reason"]
    h.close()


def test_phish(lab):
    feed = lab.path("feed.txt")
    with open(feed, "w") as f:
        f.write("# URLhaus-style\nhttp://bad.example/payload.exe\n0.0.0.0 evil.example\n")
    body = lab.path("phish_body.txt")
    with open(body, "w") as f:
        f.write("Log in at https://www.p\u0430ypal.com/login (urgent) or "
                "http://evil.example/x.\nDocs: https://docs.python.org/3/\n")
    html = lab.path("phish.html")
    with open(html, "w") as f:
        f.write('<a href="https://eur01.safelinks.protection.outlook.com/?url=http%3A%2F%2F'
                'bad.example%2Fpayload.exe&amp;data=1">invoice</a>')
    h = SecHost(lab, "phish", feeds=feed, protected="paypal.com")
    v = h.scan(dir="download", mime=lab.path("clean"), body=body, html=html)
    assert not v["blocked"]
    assert "hxxps://www[.]p\u0430ypal[.]com/login" in v["prop_1000"]
    assert "hxxp://evil[.]example/x." in v["prop_1000"]
    assert "https://docs.python.org/3/" in v["prop_1000"]  # untouched
    assert "hxxps://eur01[.]safelinks" in v["prop_1013"]
    log = h.verdicts()[0]
    assert log["verdict"] == "lookalike" and log["hits"] == 3
    assert "http://bad.example/payload.exe" in log["urls"]
    assert "https://www.xn--pypal-4ve.com/login" in log["urls"]
    # a clean body: nothing set
    clean = lab.path("clean_body.txt")
    with open(clean, "w") as f:
        f.write("See https://www.paypal.com/ and https://docs.python.org/\n")
    v = h.scan(dir="download", mime=lab.path("clean"), body=clean)
    assert "prop_1000" not in v and not v["blocked"]
    # the feed changes: reloaded (checked at most once a second)
    time.sleep(1.1)
    with open(feed, "a") as f:
        f.write("paypal.com\n")
    v = h.scan(dir="download", mime=lab.path("clean"), body=clean)
    assert "hxxps://www[.]paypal[.]com/" in v["prop_1000"]
    h.close()
    h = SecHost(lab, "phish", feeds=feed, action_upload="block", action_download="tag")
    v = h.scan(dir="upload", mime=lab.path("clean"), body=body)
    assert v["blocked"] and "evil.example" in v["reason"]
    v = h.scan(dir="download", mime=lab.path("clean"), body=body, modify="yes")
    assert v["subject_prefix"] == "[PHISH] " and "evil.example" in v["named_X-Phish"]
    h.close()


def test_extract_lmtp(lab):
    h = SecHost(lab, "extract", lmtp="127.0.0.1:%d" % lab.ports["lmtp"], rcpt="archive@example.org")
    before = set(os.listdir(lab.path("lmtp")))
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert not v["blocked"]
    new = sorted(set(os.listdir(lab.path("lmtp"))) - before)
    eml = [n for n in new if n.endswith(".eml")]
    got = open(os.path.join(lab.path("lmtp"), eml[0]), "rb").read()
    assert got == lab.files["eicar_mail"]
    m = message_from_bytes(got, policy=policy.default)
    assert [a.get_content() for a in m.iter_attachments()] == [EICAR]
    env = json.load(open(os.path.join(lab.path("lmtp"), eml[0][:-4] + ".json")))
    assert env["rcpt"] == ["archive@example.org"]
    # LMTP refuses the only recipient: a reject, acted on (block)
    h.close()
    h = SecHost(lab, "extract", lmtp="127.0.0.1:%d" % lab.ports["lmtp"],
                rcpt="nobody@example.org")
    assert h.scan(dir="upload", mime=lab.path("clean"))["blocked"]
    h.close()


def test_extract_milters(lab):
    h = SecHost(lab, "extract", milter="unix:" + lab.path("milter.sock"))
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert v["blocked"] and "reject" in v["reason"]
    v = h.scan(dir="upload", mime=lab.path("clean"))
    assert not v["blocked"] and v.get("named_X-Virus-Status") == "Clean"
    h.close()
    h = SecHost(lab, "extract", milter="127.0.0.1:%d" % lab.ports["rmilter"])
    assert h.scan(dir="download", mime=lab.path("gtube"))["blocked"]
    h.close()


def socket_service(path, answers, got):
    """A custom service on the documented framing (doc/extract.md)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)

    def run():
        for ans in answers:
            c, _ = srv.accept()
            f = c.makefile("rb")
            assert f.read(4) == b"MPX1"
            (ml,) = struct.unpack(">I", f.read(4))
            meta = json.loads(f.read(ml))
            (n,) = struct.unpack(">Q", f.read(8))
            got.append((meta, f.read(n)))
            c.sendall(ans)
            c.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_extract_socket(lab):
    path = lab.path("custom.sock")
    got = []
    t = socket_service(path, [b"TAG [EXT]\n", b"BLOCK not today\n", b"ALLOW\n"], got)
    h = SecHost(lab, "extract", socket="unix:" + path)
    v = h.scan(dir="download", mime=lab.path("clean"), user="alice", subject="lunch", mid="0x42")
    assert v["subject_prefix"] == "[EXT] " and not v["blocked"]
    v = h.scan(dir="upload", mime=lab.path("clean"))
    assert v["blocked"] and "not today" in v["reason"]
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert not v["blocked"]
    t.join(5)
    meta, mime = got[0]
    assert mime == lab.files["clean"]
    assert meta["user"] == "alice" and meta["direction"] == "download"
    assert meta["message_id"] == "0x0000000000000042" and meta["subject"] == "lunch"
    assert got[2][1] == lab.files["eicar_mail"]
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
