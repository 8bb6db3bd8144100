"""A private, throw-away Samba Active Directory domain controller whose
winbindd the proxy asks to check NTLM logons (mapiproxy:ntlm backend =
winbind).

    with SambaADDC(tmp_path) as dc:
        dc.add_user("carol", "Carol-Pw-1!x")
        dc.add_group("mapi-users", ["carol"])
        dc.socket_dir          # winbindd's socket directory
        dc.domain, dc.realm    # "WBLAB", "WBLAB.EXAMPLE"

* ``samba-tool domain provision`` (server role dc, --use-rfc2307,
  --dns-backend=NONE) into the temporary directory: its sam.ldb, secrets
  and sysvol stay there.  Provisioning takes about 20 s.
* Then ``samba -i`` (foreground) with an smb.conf of our own: every
  directory (private, state, cache, lock, pid, ncalrpc, winbindd socket,
  logs) inside the temporary directory; ``server services = rpc, winbindd``
  (winbindd checks the logons; the rpc service answers its SID-to-name
  look-ups for the groups; no LDAP, KDC, SMB or DNS);
  ``interfaces = 127.0.0.7`` with ``bind interfaces only = yes``: Samba finds
  no such interface and so listens on no TCP port at all ("no network
  interfaces found"), which keeps it clear of the other tests' 135/445/88.
* Users and groups are added with ``samba-tool user add`` / ``group add`` /
  ``group addmembers`` on the sam.ldb directly.
* Samba runs in its own process group, torn down on exit.

Needs root (samba refuses otherwise) and the Debian packages samba,
samba-ad-dc, samba-ad-provision and winbind (``available()`` says why not).
"""
import os
import shutil
import signal
import subprocess
import time

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = shutil.which("samba-tool") or "/usr/bin/samba-tool"
WINBINDD = "/usr/sbin/winbindd"

ADMIN_PASSWORD = "Adm1n-Pw-42!x"


def available():
    """None when an AD DC can be run here, else the reason."""
    if os.geteuid() != 0:
        return "the Samba AD DC needs root"
    for p in (SAMBA, SAMBA_TOOL, WINBINDD):
        if not os.access(p, os.X_OK):
            return "%s not installed (samba, samba-ad-dc, winbind)" % p
    if not os.path.isdir("/usr/share/samba/setup"):
        return "samba-ad-provision not installed"
    return None


class SambaADDC:
    def __init__(self, tmpdir, realm="WBLAB.EXAMPLE", domain="WBLAB", host_name="wbdc",
                 start_timeout=60.0):
        self.tmpdir = os.path.abspath(str(tmpdir))
        self.realm, self.domain, self.host_name = realm, domain, host_name
        self.start_timeout = start_timeout
        self.dir = os.path.join(self.tmpdir, "dc")
        self.smb_conf = os.path.join(self.dir, "mapiproxy-test-smb.conf")
        self.socket_dir = os.path.join(self.dir, "wbsock")
        self.log_dir = os.path.join(self.dir, "log")
        self.sam = os.path.join(self.dir, "private", "sam.ldb")
        self.proc = None
        self._out = None

    # -- set-up ---------------------------------------------------------------

    def _run(self, args, timeout=120):
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s" % (" ".join(args[:3]), r.returncode,
                                                        r.stdout[-3000:]))
        return r.stdout

    def _provision(self):
        os.makedirs(self.dir, exist_ok=True)
        self._run([SAMBA_TOOL, "domain", "provision", "--use-rfc2307",
                   "--realm=" + self.realm, "--domain=" + self.domain,
                   "--server-role=dc", "--dns-backend=NONE",
                   "--host-name=" + self.host_name,
                   "--adminpass=" + ADMIN_PASSWORD, "--targetdir=" + self.dir,
                   "--option=interfaces=127.0.0.7",
                   "--option=bind interfaces only=yes"], timeout=300)

    def _write_conf(self):
        d = self.dir
        for sub in ("pid", "ncalrpc", "wbsock", "log", "cache", "state"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        opts = [
            ("netbios name", self.host_name.upper()),
            ("workgroup", self.domain),
            ("realm", self.realm),
            ("server role", "active directory domain controller"),
            ("server services", "rpc, winbindd"),
            ("interfaces", "127.0.0.7"),
            ("bind interfaces only", "yes"),
            ("disable netbios", "yes"),
            ("private dir", os.path.join(d, "private")),
            ("binddns dir", os.path.join(d, "bind-dns")),
            ("lock directory", d),
            ("state directory", os.path.join(d, "state")),
            ("cache directory", os.path.join(d, "cache")),
            ("pid directory", os.path.join(d, "pid")),
            ("ncalrpc dir", os.path.join(d, "ncalrpc")),
            ("winbindd socket directory", self.socket_dir),
            ("log file", os.path.join(self.log_dir, "log.%m")),
            ("max log size", "0"),
            ("log level", "2"),
            ("idmap_ldb:use rfc2307", "yes"),
            ("include system krb5 conf", "no"),
            ("ntlm auth", "mschapv2-and-ntlmv2-only"),
            ("template shell", "/bin/false"),
        ]
        with open(self.smb_conf, "w") as f:
            f.write("[global]\n")
            for k, v in opts:
                f.write("\t%s = %s\n" % (k, v))

    def add_user(self, name, password):
        self._run([SAMBA_TOOL, "user", "add", name, password, "-H", self.sam])

    def add_group(self, name, members):
        self._run([SAMBA_TOOL, "group", "add", name, "-H", self.sam])
        if members:
            self._run([SAMBA_TOOL, "group", "addmembers", name, ",".join(members),
                       "-H", self.sam])

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        reason = available()
        if reason:
            raise RuntimeError(reason)
        self._provision()
        self._write_conf()
        return self

    def run(self):
        """Starts samba -i once the users and groups are in place; returns
        when winbindd answers a ping on its socket."""
        self._out = open(os.path.join(self.log_dir, "samba.out"), "wb")
        self.proc = subprocess.Popen([SAMBA, "-i", "-s", self.smb_conf],
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=self.dir)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("samba exited with %s:\n%s" % (self.proc.returncode,
                                                                   self.log_tail()))
            if self.winbind_ready():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("winbindd did not answer:\n" + self.log_tail())
            time.sleep(0.25)

    def winbind_ready(self):
        """winbindd's socket in our directory accepts connections (wbinfo
        cannot be pointed at another directory)."""
        pipe = os.path.join(self.socket_dir, "pipe")
        if not os.path.exists(pipe):
            return False
        import socket
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(pipe)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, timeout=15.0):
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
            # children (winbindd, rpc workers) in the same group
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc = None
        if self._out:
            self._out.close()
            self._out = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_text(self):
        out = []
        try:
            names = sorted(os.listdir(self.log_dir))
        except OSError:
            return ""
        for n in names:
            with open(os.path.join(self.log_dir, n), errors="replace") as f:
                out.append("==> %s <==\n%s" % (n, f.read()))
        return "\n".join(out)

    def log_tail(self, n=4000):
        return self.log_text()[-n:]
