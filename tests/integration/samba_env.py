"""A private, throw-away Samba ``samba-dcerpcd`` acting as a real DCE/RPC peer.

``SambaDcerpcd`` starts Samba's standalone DCE/RPC server (``samba-dcerpcd``
plus the ``rpcd_*`` helpers it spawns on demand) as an NTLM-authenticating
server on 127.0.0.1, entirely from a private temporary directory:

* its own ``smb.conf`` (private/lock/state/cache/pid/ncalrpc dirs and logs
  all inside the temp dir; ``server role = standalone server``;
  ``interfaces = 127.0.0.1`` + ``bind interfaces only = yes``;
  ``rpc start on demand helpers = false`` which samba-dcerpcd *requires* to
  run standalone);
* a tdbsam passdb in the private dir holding one NTLM user;
* the endpoint mapper on 127.0.0.1:135.  Samba cannot move it: the port
  comes from the epmapper IDL (``ncacn_ip_tcp:[135]``), ``rpc server port``
  does not apply to it, and even if samba-dcerpcd is made to listen
  elsewhere the rpcd_epmapper worker drops the connection ("Could not find
  endpoint for ncacn_ip_tcp:[N]").  Because of that, instances are
  serialised machine-wide with a lock file (``EPM_LOCK``);
* the other interfaces (lsarpc/samr/dssetup of rpcd_lsad) on one dynamic
  port, found with ept_map through the endpoint mapper;
* every process in one process group that is torn down on exit.

Know before use (details in doc/internals/test-peers.md):

* Samba refuses LSA policy calls (LsarOpenPolicy2, ...) on ncacn_ip_tcp
  with fault nca_s_access_denied; dssetup and samr calls on the same
  endpoint work.
* At auth level connect, a client that negotiates NTLM SIGN/SEAL (Impacket
  always does) gets fault nca_s_fault_other for every request.
* Logs: ``<tmpdir>/log/log.samba-dcerpcd`` and ``log.rpcd_*`` per helper.

Usage::

    with SambaDcerpcd(tmp_path) as samba:
        samba.host, samba.epm_port, samba.user, samba.password, samba.domain
        samba.lsarpc_port            # ncacn_ip_tcp port of lsarpc (via ept_map)
        samba.listening_ports()      # every TCP port samba-dcerpcd listens on

See doc/internals/test-peers.md for why each option is there.
"""

import errno
import fcntl
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import time

SAMBA_DCERPCD = "/usr/libexec/samba/samba-dcerpcd"
SAMBA_LIBEXEC = os.path.dirname(SAMBA_DCERPCD)
SMBPASSWD = shutil.which("smbpasswd") or "/usr/bin/smbpasswd"

# Well-known interface UUIDs (uuid, major version)
EPMAPPER_UUID = ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3)
LSARPC_UUID = ("12345778-1234-abcd-ef00-0123456789ab", 0)
SAMR_UUID = ("12345778-1234-abcd-ef00-0123456789ac", 1)

DEFAULT_PASSWORD = "Lab-Passw0rd!42"

# Only one samba-dcerpcd can own 127.0.0.1:135 at a time; concurrent test runs
# on this machine wait for each other on this lock.
EPM_LOCK = "/tmp/mapiproxy-test-samba-epm135.lock"


def samba_available():
    """Return None if a standalone samba-dcerpcd can be run here, else a reason."""
    if os.geteuid() != 0:
        return "samba-dcerpcd serves its endpoint mapper on port 135, which needs root"
    for path in (SAMBA_DCERPCD, os.path.join(SAMBA_LIBEXEC, "rpcd_epmapper")):
        if not os.access(path, os.X_OK):
            return "%s not installed" % path
    if not os.access(SMBPASSWD, os.X_OK):
        return "smbpasswd not installed"
    return None


def free_tcp_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (racy, but fine for tests)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _port_free(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _wait_eof(fd, timeout, proc):
    """Wait until the write side of pipe fd is closed by everyone."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no ready signal after %.1fs" % timeout)
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            if not os.read(fd, 4096):
                return
        elif proc.poll() is not None:
            raise RuntimeError("samba-dcerpcd exited with %s" % proc.returncode)


def wait_port(host, port, timeout=20.0, proc=None):
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before %s:%d opened"
                               % (proc.returncode, host, port))
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("%s:%d not open after %.1fs" % (host, port, timeout))


class SambaDcerpcd:
    """A running samba-dcerpcd (context manager; also ``start()``/``stop()``).

    Parameters:
      tmpdir        directory to put everything in (created if needed)
      epm_port      TCP port of the endpoint mapper: must be 135 (Samba
                    offers no way to move it, see the module docstring)
      user/password NTLM account created in the private tdbsam passdb
      workgroup     smb.conf workgroup
      netbios_name  server name == SAM domain of a standalone server; this is
                    what ``domain`` returns (clients authenticate against it)
      services      rpcd_* helpers to serve ('epmapper' is always added)
      allow_auth_level_connect  sets ``allow dcerpc auth level connect``
                    (Samba refuses RPC_C_AUTHN_LEVEL_CONNECT by default)
      dynamic_port_range  "lo-hi" for ncacn_ip_tcp endpoints of the other
                    interfaces (``rpc server dynamic port range``)
      extra_options dict of further [global] smb.conf options
      debuglevel    samba debug level for the log file
    """

    def __init__(self, tmpdir, epm_port=135, user="labuser",
                 password=DEFAULT_PASSWORD, workgroup="LABDOM",
                 netbios_name="LABSRV", host="127.0.0.1",
                 services=("epmapper", "lsad"),
                 allow_auth_level_connect=True, dynamic_port_range=None,
                 extra_options=None, debuglevel=3, start_timeout=20.0,
                 lock_timeout=120.0):
        if host != "127.0.0.1":
            raise ValueError("test peers bind to 127.0.0.1 only")
        if epm_port != 135:
            raise ValueError("samba-dcerpcd's endpoint mapper can only listen "
                             "on port 135 (hard-coded in its IDL)")
        self.tmpdir = os.path.abspath(str(tmpdir))
        self.host = host
        self.epm_port = epm_port
        self.user = user
        self.password = password
        self.workgroup = workgroup
        self.netbios_name = netbios_name
        self.services = tuple(dict.fromkeys(("epmapper",) + tuple(services)))
        self.allow_auth_level_connect = allow_auth_level_connect
        self.dynamic_port_range = dynamic_port_range
        self.extra_options = dict(extra_options or {})
        self.debuglevel = debuglevel
        self.start_timeout = start_timeout
        self.lock_timeout = lock_timeout
        self._lock_fd = None
        self.stray = []

        self.smb_conf = os.path.join(self.tmpdir, "smb.conf")
        self.log_dir = os.path.join(self.tmpdir, "log")
        # samba-dcerpcd and each rpcd_* worker log to <log_dir>/log.<prog>
        # (``--log-basename``; the smb.conf ``log file`` is NOT inherited by
        # the workers, they would write to /var/log/samba/log.rpcd_*).
        self.log_path = os.path.join(self.log_dir, "log.samba-dcerpcd")
        self.stdout_path = os.path.join(self.log_dir, "samba-dcerpcd.out")
        self.proc = None
        self._out = None
        self._lsarpc_port = None

    # -- properties ---------------------------------------------------------

    @property
    def domain(self):
        """NTLM domain to authenticate with (standalone: the netbios name)."""
        return self.netbios_name

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def lsarpc_port(self):
        """ncacn_ip_tcp port of lsarpc as reported by the endpoint mapper."""
        if self._lsarpc_port is None:
            self._lsarpc_port = self.map_endpoint(*LSARPC_UUID)
        return self._lsarpc_port

    @property
    def ports(self):
        """{'epmapper': port, 'lsarpc': port} as reported by ept_map."""
        out = {"epmapper": self.epm_port}
        if "lsad" in self.services:
            out["lsarpc"] = self.lsarpc_port
        return out

    def binding(self, port=None):
        return "ncacn_ip_tcp:%s[%d]" % (self.host, port or self.epm_port)

    # -- setup ----------------------------------------------------------------

    def _dirs(self):
        names = ("private", "lock", "state", "cache", "pid", "ncalrpc",
                 "log", "binddns")
        return {n: os.path.join(self.tmpdir, n) for n in names}

    def _write_conf(self):
        d = self._dirs()
        for path in d.values():
            os.makedirs(path, exist_ok=True)
        # Samba insists on restrictive permissions for some of these.
        os.chmod(d["private"], 0o700)
        os.chmod(d["ncalrpc"], 0o755)
        opts = [
            ("workgroup", self.workgroup),
            ("netbios name", self.netbios_name),
            ("server role", "standalone server"),
            ("passdb backend", "tdbsam:%s" % os.path.join(d["private"], "passdb.tdb")),
            ("private dir", d["private"]),
            ("binddns dir", d["binddns"]),
            ("lock directory", d["lock"]),
            ("state directory", d["state"]),
            ("cache directory", d["cache"]),
            ("pid directory", d["pid"]),
            ("ncalrpc dir", d["ncalrpc"]),
            ("max log size", "0"),
            ("log level", str(self.debuglevel)),
            ("interfaces", self.host),
            ("bind interfaces only", "yes"),
            ("rpc start on demand helpers", "false"),
            ("allow dcerpc auth level connect",
             "yes" if self.allow_auth_level_connect else "no"),
            ("disable netbios", "yes"),
            ("load printers", "no"),
            ("printing", "bsd"),
            ("printcap name", "/dev/null"),
            ("disable spoolss", "yes"),
            ("registry shares", "no"),
            ("include system krb5 conf", "no"),
            ("map to guest", "never"),
            ("ntlm auth", "ntlmv2-only"),
        ]
        if self.dynamic_port_range:
            opts.append(("rpc server dynamic port range", self.dynamic_port_range))
        opts.extend(self.extra_options.items())
        with open(self.smb_conf, "w") as f:
            f.write("[global]\n")
            for k, v in opts:
                f.write("\t%s = %s\n" % (k, v))

    def _ensure_unix_user(self):
        """Samba's passdb needs a matching Unix account (getpwnam).

        We create a no-login system account if it is missing (tests run as
        root). It is left in place: it is harmless and other instances may
        share it.
        """
        try:
            pwd.getpwnam(self.user)
            return
        except KeyError:
            pass
        if os.geteuid() != 0:
            raise RuntimeError("Unix user %r missing and not root to create it"
                               % self.user)
        r = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell",
             "/usr/sbin/nologin", self.user],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # 9 == already exists (racing instance)
        if r.returncode not in (0, 9):
            raise RuntimeError("useradd %s failed: %s" % (self.user, r.stdout))

    def _add_passdb_user(self):
        r = subprocess.run(
            [SMBPASSWD, "-c", self.smb_conf, "-a", "-s", self.user],
            input="%s\n%s\n" % (self.password, self.password),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=30)
        if r.returncode != 0:
            raise RuntimeError("smbpasswd -a %s failed: %s" % (self.user, r.stdout))

    # -- lifecycle ------------------------------------------------------------

    def start(self):
        reason = samba_available()
        if reason:
            raise RuntimeError(reason)
        os.makedirs(self.tmpdir, exist_ok=True)
        self._acquire_lock()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _acquire_lock(self):
        fd = os.open(EPM_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError("another samba-dcerpcd test instance "
                                       "holds %s" % EPM_LOCK)
                time.sleep(0.2)
        self._lock_fd = fd
        # The port may still be taken by something that is not ours.
        deadline = time.monotonic() + 10
        while not _port_free(self.host, self.epm_port):
            if time.monotonic() > deadline:
                raise RuntimeError("%s:%d is in use by another program"
                                   % (self.host, self.epm_port))
            time.sleep(0.2)

    def _release_lock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None

    def _start(self):
        self._write_conf()
        self._ensure_unix_user()
        self._add_passdb_user()
        helpers = []
        for svc in self.services:
            helpers.append(os.path.join(SAMBA_LIBEXEC, "rpcd_" + svc))
        # --ready-signal-fd: samba-dcerpcd closes this fd once every rpcd_*
        # helper has listed its interfaces and all sockets are listening
        # (the epmapper port alone opens earlier than the others).
        ready_r, ready_w = os.pipe()
        cmd = [SAMBA_DCERPCD, "--configfile=" + self.smb_conf,
               "--foreground", "--no-process-group",
               "--ready-signal-fd=%d" % ready_w,
               "--log-basename=" + self.log_dir,
               "--debuglevel=%d" % self.debuglevel] + helpers
        self._out = open(self.stdout_path, "wb")
        # Own session/process group: samba-dcerpcd and all the rpcd_* workers
        # it forks stay in it, so stop() can signal the whole group.
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._out,
                stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self.tmpdir, pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        try:
            try:
                _wait_eof(ready_r, self.start_timeout, self.proc)
            finally:
                os.close(ready_r)
            wait_port(self.host, self.epm_port, self.start_timeout, self.proc)
        except Exception as e:
            raise RuntimeError("samba-dcerpcd did not come up: %s\n%s"
                               % (e, self.log_tail())) from None

    def _group_pids(self):
        """PIDs still alive in our process group (excluding zombies)."""
        if self.proc is None:
            return []
        pgid = self.proc.pid
        pids = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % name) as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rfind(")") + 2:].split()
            # rest[0]=state, rest[2]=pgrp
            if int(rest[2]) == pgid and rest[0] != "Z":
                pids.append(int(name))
        return pids

    def stop(self, timeout=10.0):
        try:
            self._stop(timeout)
        finally:
            self._release_lock()

    def _stop(self, timeout):
        if self.proc is None:
            return
        pgid = self.proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        while self._group_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._group_pids():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while self._group_pids() and time.monotonic() < deadline + 5:
                time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._out:
            self._out.close()
            self._out = None
        self.stray = self._group_pids()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- introspection --------------------------------------------------------

    def listening_ports(self):
        """Sorted TCP ports (on self.host) that our process group listens on."""
        inodes = set()
        for pid in self._group_pids():
            fd_dir = "/proc/%d/fd" % pid
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        ports = set()
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and inode in inodes:  # LISTEN
                    ports.add(int(local.split(":")[1], 16))
        return sorted(ports)

    def map_endpoint(self, uuid, version=0, auth=True):
        """ept_map an interface to its ncacn_ip_tcp port via our epmapper.

        Uses impacket (imported lazily); authenticated at packet privacy
        unless auth=False.
        """
        from impacket.dcerpc.v5 import epm, transport
        from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY
        from impacket import uuid as iuuid

        trans = transport.DCERPCTransportFactory(self.binding())
        trans.set_connect_timeout(5)
        dce = trans.get_dce_rpc()
        if auth:
            dce.set_credentials(self.user, self.password, self.domain)
            dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        dce.connect()
        try:
            # hept_map() does the bind itself
            iface = iuuid.uuidtup_to_bin((uuid, "%d.0" % version))
            string = epm.hept_map(self.host, iface, protocol="ncacn_ip_tcp",
                                  dce=dce)
        finally:
            dce.disconnect()
        # 'ncacn_ip_tcp:127.0.0.1[49153]'
        return int(string.rsplit("[", 1)[1].rstrip("]"))

    def log_files(self):
        """All log files: samba-dcerpcd's and one per rpcd_* helper."""
        try:
            names = sorted(os.listdir(self.log_dir))
        except OSError:
            return []
        return [os.path.join(self.log_dir, n) for n in names
                if n.startswith("log.") or n.endswith(".out")]

    def log_text(self):
        """Concatenated text of all log files (e.g. to grep auth results:
        'status [NT_STATUS_WRONG_PASSWORD]')."""
        out = []
        for path in self.log_files():
            with open(path, errors="replace") as f:
                out.append(f.read())
        return "\n".join(out)

    def log_tail(self, n=60):
        out = []
        for path in self.log_files() or [self.stdout_path]:
            try:
                with open(path, errors="replace") as f:
                    lines = f.readlines()[-n:]
                out.append("==> %s <==\n%s" % (path, "".join(lines)))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        return "\n".join(out)
