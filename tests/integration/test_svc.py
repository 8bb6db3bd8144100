"""The outside-service clients (src/svc, doc/internals/svc.md) against the
real services, each started here on loopback ports or unix sockets in the
test's tmp dir: clamd (an EICAR database made here), c-icap with
virus_scan over that clamd, spamd in local mode, rspamd (its normal worker
and its milter proxy), clamav-milter, and aiosmtpd's LMTP server.  Driven
through build/svc-probe, which runs the engine on the proxy's event loop.
The EICAR and GTUBE messages are made with Python's email package."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import free_port  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE = os.path.join(ROOT, "build", "svc-probe")
EICAR = (rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
NEEDED = ["clamd", "c-icap", "spamd", "rspamd", "clamav-milter"]

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in NEEDED) or not os.path.exists(PROBE),
    reason="services or build/svc-probe missing (scripts/install-deps.sh, make)")


def mail(subject, body, attach=None):
    m = EmailMessage()
    m["From"] = "alice@example.org"
    m["To"] = "bob@example.org"
    m["Subject"] = subject
    m["Date"] = "Fri, 04 Dec 2026 12:00:00 +0000"
    m["Message-ID"] = "<%s@example.org>" % subject.replace(" ", ".")
    m.set_content(body)
    if attach:
        m.add_attachment(attach, maintype="application", subtype="octet-stream",
                         filename="file.bin")
    return m.as_bytes(policy=policy.SMTP)


def wait_for(cond, secs, what):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("not up in %d s: %s" % (secs, what))


def tcp_up(port):
    def f():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    return f


class Lab:
    def __init__(self, d):
        self.d = d
        self.procs = {}
        self.ports = {k: free_port() for k in ("icap", "rspamd", "rmilter", "lmtp")}
        with open(os.path.join(d, "eicar"), "wb") as f:
            f.write(EICAR)
        os.makedirs(os.path.join(d, "db"))
        import hashlib
        with open(os.path.join(d, "db", "test.hdb"), "w") as f:
            f.write("%s:%d:Test.EICAR.Made-In-Test\n" % (hashlib.md5(EICAR).hexdigest(), len(EICAR)))
        self.files = {
            "eicar_mail": mail("eicar", "see the attachment\n", EICAR),
            "clean": mail("lunch", "Shall we have lunch on Friday at noon?\n"),
            "gtube": mail("gtube", "This is the GTUBE\n\n%s\n" % GTUBE),
            "big": os.urandom(300000),
            "dots": b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n",
        }
        for k, v in self.files.items():
            with open(self.path(k), "wb") as f:
                f.write(v)

    def path(self, name):
        return os.path.join(self.d, name)

    def start(self, name, argv, **kw):
        log = open(self.path(name + ".out"), "wb")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, **kw)

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            os.killpg(p.pid, sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def start_clamd(self):
        sock = self.path("clamd.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        with open(self.path("clamd.conf"), "w") as f:
            f.write("LocalSocket %s\nDatabaseDirectory %s\nForeground yes\nLogFile %s\n"
                    "StreamMaxLength 100K\n" % (sock, self.path("db"), self.path("clamd.log")))
        self.start("clamd", ["clamd", "-c", self.path("clamd.conf")])

    def start_later(self, which):
        """start_all(which) in a thread (rspamd takes ~20 s on a loaded
        machine: the tests that do not need it run meanwhile); returns a
        function that waits for it and raises what it raised."""
        import threading
        err = []

        def run():
            try:
                self.start_all(which)
            except Exception as e:  # noqa: BLE001 (re-raised by wait)
                err.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()

        def wait():
            t.join()
            if err:
                raise err[0]
        return wait

    def start_all(self, which=("clamd", "spamd", "rspamd", "lmtp", "icap", "milter")):
        """Starts the services named in which (all by default; icap and
        milter need clamd) and waits until each answers."""
        if "clamd" in which:
            self.start_clamd()
        if "spamd" in which:
            os.makedirs(self.path("sa"))
            self.start("spamd", ["spamd", "-L", "-x", "-s", "stderr", "--socketpath=" + self.path("spamd.sock"),
                                 "--pidfile=" + self.path("sa/pid"), "-u", "nobody", "-m", "2"])
        if "rspamd" in which:
            rs = self.path("rs")
            os.makedirs(rs + "/db")
            with open(rs + "/rspamd.conf", "w") as f:
                f.write(RSPAMD_CONF % dict(d=rs, port=self.ports["rspamd"], mport=self.ports["rmilter"]))
            shutil.chown(rs, "nobody")
            shutil.chown(rs + "/db", "nobody")
            self.start("rspamd", ["rspamd", "-f", "-c", rs + "/rspamd.conf", "-u", "nobody", "-g",
                                  "nogroup", "--var", "DBDIR=" + rs + "/db", "--var",
                                  "LOCAL_CONFDIR=" + rs + "/none", "--var", "RUNDIR=" + rs])
        if "lmtp" in which:
            os.makedirs(self.path("lmtp"))
            self.start("lmtp", [sys.executable, os.path.join(os.path.dirname(__file__), "svc_lmtp_server.py"),
                                "127.0.0.1", str(self.ports["lmtp"]), self.path("lmtp")])
        if "clamd" in which:
            wait_for(lambda: os.path.exists(self.path("clamd.sock")), 60, "clamd")
        if "icap" in which:
            os.makedirs(self.path("icap"))
            with open(self.path("icap/c-icap.conf"), "w") as f:
                f.write(CICAP_CONF % dict(d=self.path("icap"), port=self.ports["icap"],
                                          clamd=self.path("clamd.sock")))
            self.start("icap", ["c-icap", "-f", self.path("icap/c-icap.conf"), "-N", "-D"])
        if "milter" in which:
            with open(self.path("milter.conf"), "w") as f:
                f.write("MilterSocket unix:%s\nClamdSocket unix:%s\nForeground yes\nLogFile %s\n"
                        "OnInfected Reject\nOnFail Defer\nAddHeader Replace\nUser root\n"
                        % (self.path("milter.sock"), self.path("clamd.sock"), self.path("milter.log")))
            self.start("milter", ["clamav-milter", "-c", self.path("milter.conf")])
        if "icap" in which:
            wait_for(tcp_up(self.ports["icap"]), 30, "c-icap")
        if "milter" in which:
            wait_for(lambda: os.path.exists(self.path("milter.sock")), 30, "clamav-milter")
        if "spamd" in which:
            wait_for(lambda: os.path.exists(self.path("spamd.sock")), 60, "spamd")
        if "lmtp" in which:
            wait_for(tcp_up(self.ports["lmtp"]), 30, "lmtp")
        if "rspamd" in which:
            wait_for(tcp_up(self.ports["rspamd"]), 80, "rspamd")
            wait_for(tcp_up(self.ports["rmilter"]), 30, "rspamd proxy")

RSPAMD_CONF = """.include "$CONFDIR/common.conf"
options {
    pidfile = "%(d)s/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }
}
logging { type = "file"; filename = "%(d)s/rspamd.log"; level = "warning"; }
worker "normal" { bind_socket = "127.0.0.1:%(port)d"; count = 1; .include "$CONFDIR/worker-normal.inc" }
worker "rspamd_proxy" { bind_socket = "127.0.0.1:%(mport)d"; count = 1; milter = yes; timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; } }
"""

CICAP_CONF = """PidFile %(d)s/c-icap.pid
CommandsSocket %(d)s/c-icap.ctl
Timeout 30
MaxKeepAliveRequests 100
KeepAliveTimeout 60
StartServers 1
MaxServers 2
MinSpareThreads 2
MaxSpareThreads 4
ThreadsPerChild 4
Port 127.0.0.1:%(port)d
ServerLog %(d)s/server.log
AccessLog %(d)s/access.log
TmpDir %(d)s
ModulesDir /usr/lib/x86_64-linux-gnu/c_icap
ServicesDir /usr/lib/x86_64-linux-gnu/c_icap
Module common clamd_mod.so
clamd_mod.ClamdSocket %(clamd)s
Service antivirus_module virus_scan.so
ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple
virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE
virus_scan.DefaultEngine clamd
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(str(tmp_path_factory.mktemp("svc")))
    os.chmod(lab.d, 0o755)
    try:
        lab.start_all()
        yield lab
    finally:
        for name in list(lab.procs):
            lab.stop(name)
        for p in PROBES:  # a probe left by a failed test
            if p.poll() is None:
                p.kill()
                p.wait()


PROBES = []


class Probe:
    """build/svc-probe with commands on stdin, one JSON line back per job."""

    def __init__(self, *args):
        # stderr (the engine's log, a sanitizer's report) stays on the terminal
        self.p = subprocess.Popen([PROBE] + list(args), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        PROBES.append(self.p)

    def cmd(self, line, nlines=1, timeout=60):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        out = []
        end = time.time() + timeout
        for _ in range(nlines):
            ln = self.p.stdout.readline()
            assert ln, "svc-probe died"
            assert time.time() < end, "svc-probe hung"
            out.append(json.loads(ln))
        for o in out:
            print(json.dumps(o)[:300])
        return out

    def scan(self, path):
        return self.cmd("scan " + path)[0]

    def close(self):
        self.p.stdin.close()
        assert self.p.wait(30) == 0


def test_clamd(lab):
    p = Probe("clamd", "unix:" + lab.path("clamd.sock"))
    v = p.scan(lab.path("eicar"))
    assert v["verdict"] == "infected" and v["name"].startswith("Test.EICAR.Made-In-Test")
    assert p.scan(lab.path("eicar_mail"))["verdict"] == "infected"
    assert p.scan(lab.path("clean"))["verdict"] == "clean"
    v = p.scan(lab.path("big"))  # 300 kB over clamd's StreamMaxLength 100K
    assert v["verdict"] == "error" and "size limit" in v["name"]
    p.close()
    p = Probe("clamd", "unix:" + lab.path("clamd.sock"), "maxstream=102400")
    v = p.scan(lab.path("big"))  # known limit: not sent at all
    assert v["verdict"] == "toobig"
    out = p.cmd("par 6 " + lab.path("eicar_mail"), 7)
    assert all(o["verdict"] == "infected" for o in out[:6])
    p.close()


def test_icap(lab):
    host = "127.0.0.1:%d" % lab.ports["icap"]
    p = Probe("icap", host, "service=avscan", "preview=1024")
    v = p.scan(lab.path("eicar"))
    assert v["verdict"] == "infected" and v["status"] == 200
    assert v["name"].startswith("Test.EICAR.Made-In-Test")
    assert p.scan(lab.path("clean"))["status"] == 204
    assert p.scan(lab.path("big"))["status"] == 204  # preview, 100 Continue, the rest
    out = p.cmd("par 4 " + lab.path("clean"), 5)
    assert all(o["verdict"] == "clean" for o in out[:4])
    assert out[4]["reuses"] >= 1  # ICAP keep-alive
    p.close()
    p = Probe("icap", host, "service=avscan", "reqmod=1", "preview=0")
    assert p.scan(lab.path("eicar_mail"))["verdict"] == "infected"
    p.close()


def test_spamd(lab):
    p = Probe("spamd", "unix:" + lab.path("spamd.sock"))
    v = p.scan(lab.path("gtube"))
    assert v["verdict"] == "spam" and v["score"] >= 1000 and v["required"] == 5.0
    p.close()
    p = Probe("spamd", "unix:" + lab.path("spamd.sock"), "cmd=SYMBOLS")
    v = p.scan(lab.path("gtube"))
    assert "GTUBE" in v["detail"].split(",")
    p.close()
    p = Probe("spamd", "unix:" + lab.path("spamd.sock"), "cmd=REPORT")
    assert "GTUBE" in p.scan(lab.path("gtube"))["detail"]
    p.close()


def test_rspamd(lab):
    p = Probe("rspamd", "127.0.0.1:%d" % lab.ports["rspamd"], "rcpt=bob@example.org")
    v = p.scan(lab.path("gtube"))
    assert v["verdict"] == "reject" and v["name"] == "reject" and "GTUBE" in v["detail"]
    v = p.scan(lab.path("clean"))
    assert v["verdict"] in ("clean", "spam") and v["name"] != "reject"
    p.close()


def test_milters(lab):
    p = Probe("milter", "unix:" + lab.path("milter.sock"), "rcpt=bob@example.org")
    v = p.scan(lab.path("eicar_mail"))
    assert v["verdict"] == "reject" and "Infected (Test.EICAR" in v["detail"]
    v = p.scan(lab.path("clean"))
    assert v["verdict"] in ("clean", "modified") and "X-Virus-Status|Clean" in v["detail"]
    p.close()
    p = Probe("milter", "127.0.0.1:%d" % lab.ports["rmilter"], "rcpt=bob@example.org")
    v = p.scan(lab.path("gtube"))
    assert v["verdict"] == "reject" and v["status"] == 554
    p.close()


def test_lmtp(lab):
    p = Probe("lmtp", "127.0.0.1:%d" % lab.ports["lmtp"],
              "rcpt=bob@example.org,nobody@example.org,carol@example.org")
    v = p.scan(lab.path("eicar_mail"))
    assert v["name"] == "2 of 3 recipients delivered" and "550" in v["detail"]
    p.scan(lab.path("dots"))
    st = p.cmd("stats")[0]
    assert st["connects"] == 1 and st["reuses"] == 1  # RSET on the pooled connection
    p.close()
    got = open(os.path.join(lab.path("lmtp"), "1.eml"), "rb").read()
    assert got == lab.files["eicar_mail"]
    m = message_from_bytes(got, policy=policy.default)
    att = [a for a in m.iter_attachments()]
    assert att[0].get_content() == EICAR
    assert open(os.path.join(lab.path("lmtp"), "2.eml"), "rb").read() == lab.files["dots"]
    env = json.load(open(os.path.join(lab.path("lmtp"), "1.json")))
    assert env["rcpt"] == ["bob@example.org", "carol@example.org"]


@pytest.mark.parametrize("policy_", ["closed", "open"])
def test_service_killed(lab, policy_):
    """clamd killed in the middle: the policy holds, nothing hangs, the next
    scans after it is back succeed on a new connection."""
    p = Probe("clamd", "unix:" + lab.path("clamd.sock"), "fail=" + policy_, "io_ms=3000", "max=2")
    assert p.scan(lab.path("eicar"))["verdict"] == "infected"
    lab.stop("clamd", signal.SIGKILL)
    t = time.time()
    out = p.cmd("par 4 " + lab.path("eicar"), 5, timeout=15)
    assert time.time() - t < 10
    assert all(o["verdict"] == "unavailable" for o in out[:4])
    assert all(o["policy"] == ("pass" if policy_ == "open" else "block") for o in out[:4])
    lab.start_clamd()
    wait_for(lambda: os.path.exists(lab.path("clamd.sock")), 60, "clamd again")
    time.sleep(0.5)
    assert p.scan(lab.path("eicar"))["verdict"] == "infected"
    p.close()


def test_icap_killed_pool(lab):
    """c-icap killed while the pool holds idle connections: they are dropped,
    the scans fail by policy, and the pool refills when it is back."""
    host = "127.0.0.1:%d" % lab.ports["icap"]
    p = Probe("icap", host, "fail=open", "io_ms=3000")
    p.cmd("par 2 " + lab.path("clean"), 3)
    lab.stop("icap", signal.SIGKILL)
    out = p.cmd("par 2 " + lab.path("eicar"), 3, timeout=15)
    assert all(o["verdict"] == "unavailable" and o["policy"] == "pass" for o in out[:2])
    lab.start("icap", ["c-icap", "-f", lab.path("icap/c-icap.conf"), "-N", "-D"])
    wait_for(tcp_up(lab.ports["icap"]), 30, "c-icap again")
    assert p.scan(lab.path("eicar"))["verdict"] == "infected"
    p.close()


# ---- the modules on these services (the rest of them: test_sec_*.py) ----
def sec_host_or_skip():
    """spamd and rspamd start slowly: the spam module's tests share this
    file's services instead of starting their own."""
    import sec_host
    if not os.path.exists(sec_host.HOST) or not os.path.exists(os.path.join(sec_host.MODS, "spam.so")):
        pytest.skip("build/sec-host or build/asan/modules/spam.so missing (make)")
    return sec_host.SecHost


def test_sec_spam_module(lab):
    """modules/spam in build/sec-host (tests/integration/sec_host.py) on this
    file's spamd and rspamd, started once here: GTUBE tagged (subject prefix,
    X-Spam-* named properties), or blocked over block_threshold."""
    SecHost = sec_host_or_skip()
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



def test_sec_extract_rspamd_milter(lab):
    """modules/extract with rspamd's milter proxy: GTUBE rejected -> blocked."""
    SecHost = sec_host_or_skip()
    h = SecHost(lab, "extract", milter="127.0.0.1:%d" % lab.ports["rmilter"])
    assert h.scan(dir="download", mime=lab.path("gtube"))["blocked"]
    h.close()
