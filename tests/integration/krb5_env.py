"""A private MIT Kerberos realm for tests: one krb5kdc on 127.0.0.1 (a free
port, UDP and TCP), its DB2 database, stash, kdc.conf, krb5.conf, keytabs and
credential caches all inside one temporary directory.

    with Krb5Env(tmp_path) as k:
        k.kinit("alice")                       # alice's TGT into k.ccache
        subprocess.run([...], env=k.env())     # KRB5_CONFIG etc. for children
        k.keytab("proxy")                      # host/mapiproxy.lab.example

Principals (realm LAB.EXAMPLE by default):
  alice@R                              user, password ALICE_PASSWORD
  host/mapiproxy.lab.example@R         the proxy's service; keytab "proxy";
                                       +ok_to_auth_as_delegate (S4U2Self gives
                                       a forwardable ticket) and +ok_as_delegate
                                       (clients that honour it forward their TGT)
  exchangeMDB/exlab01.lab.example@R    the upstream's services; keytab
  host/exlab01.lab.example@R           "upstream" holds both

Constrained delegation (S4U2Proxy) from the proxy to the upstream: MIT's
KDC asks the database back end (check_allowed_to_delegate, or for
resource-based delegation allowed_to_delegate_from).  The DB2 back end that
Debian ships implements neither (only the LDAP back end implements the first,
through krbAllowedToDelegateTo), so on DB2 every S4U2Proxy request is refused
with KDC_ERR_BADOPTION whatever is configured.  We still record the intent as
string attributes (kadmin set_string) -- harmless on DB2, documented in
doc/internals/kerberos.md -- and `s4u2proxy_supported` says False.

Nothing here leaves the directory or touches /etc; the KDC is stopped (and
waited for) on exit.  The process environment of the caller is not changed:
use env() for subprocesses, or apply() / restore() around in-process GSSAPI.
"""
import os
import shutil
import signal
import socket
import subprocess
import time

ALICE_PASSWORD = "Alice-Pw-1!"
PROXY_SPN = "host/mapiproxy.lab.example"
UPSTREAM_SPN = "exchangeMDB/exlab01.lab.example"
UPSTREAM_HOST_SPN = "host/exlab01.lab.example"
MASTER_PASSWORD = "master-Pw-1!"

SBIN = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]


def _which(name):
    for d in SBIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if not p:
        raise RuntimeError(f"{name} not found: install krb5-kdc krb5-admin-server krb5-user")
    return p


def available():
    """True when the MIT KDC and client tools are installed."""
    try:
        for n in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist"):
            _which(n)
        return True
    except RuntimeError:
        return False


def _free_port():
    """A port free on 127.0.0.1 for both TCP and UDP."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for the KDC")


class Krb5Env:
    def __init__(self, tmpdir, realm="LAB.EXAMPLE"):
        self.realm = realm
        self.dir = os.path.join(str(tmpdir), "krb5")
        self.port = None
        self.proc = None
        self.ccache = os.path.join(self.dir, "ccache-alice")
        self.krb5_conf = os.path.join(self.dir, "krb5.conf")
        self.kdc_conf = os.path.join(self.dir, "kdc.conf")
        self.kdc_log = os.path.join(self.dir, "kdc.log")
        self._keytabs = {"proxy": os.path.join(self.dir, "proxy.keytab"),
                         "upstream": os.path.join(self.dir, "upstream.keytab")}
        self._saved = None
        # See the module docstring: DB2 has no S4U2Proxy policy hook.
        self.s4u2proxy_supported = False

    # --- names -----------------------------------------------------------
    def princ(self, name):
        return name if "@" in name else f"{name}@{self.realm}"

    @property
    def proxy_principal(self):
        return self.princ(PROXY_SPN)

    @property
    def upstream_principal(self):
        return self.princ(UPSTREAM_SPN)

    def keytab(self, which="proxy"):
        return self._keytabs[which]

    def env(self, **extra):
        """os.environ plus this realm's configuration, for subprocesses."""
        e = dict(os.environ)
        e.update(KRB5_CONFIG=self.krb5_conf, KRB5_KDC_PROFILE=self.kdc_conf,
                 KRB5CCNAME=self.ccache, KRB5RCACHETYPE="none",
                 KRB5_TRACE=os.path.join(self.dir, "trace.log"))
        e.pop("KRB5_KTNAME", None)
        e.pop("KRB5_CLIENT_KTNAME", None)
        e.update(extra)
        return e

    def apply(self):
        """Points this process's environment at the realm (for Impacket,
        which reads KRB5CCNAME).  restore() undoes it."""
        keys = ("KRB5_CONFIG", "KRB5_KDC_PROFILE", "KRB5CCNAME", "KRB5RCACHETYPE")
        self._saved = {k: os.environ.get(k) for k in keys}
        e = self.env()
        for k in keys:
            os.environ[k] = e[k]

    def restore(self):
        if self._saved is None:
            return
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved = None

    # --- tools -----------------------------------------------------------
    def run(self, argv, input=None, check=True, **extra_env):
        r = subprocess.run(argv, input=input, capture_output=True, text=True,
                           env=self.env(**extra_env), timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r

    def kadmin(self, query, check=True):
        return self.run([_which("kadmin.local"), "-r", self.realm, "-q", query], check=check)

    def kinit(self, user="alice", password=ALICE_PASSWORD, ccache=None, forwardable=True):
        """A TGT for user into ccache (default self.ccache); returns its path."""
        cc = ccache or self.ccache
        argv = [_which("kinit"), "-c", "FILE:" + cc]
        if forwardable:
            argv.append("-f")
        argv.append(self.princ(user))
        self.run(argv, input=password + "\n")
        return cc

    def kvno(self, service, ccache=None):
        """A service ticket for service into the ccache (so that clients that
        cannot reach a KDC on a non-default port, such as Impacket, find it)."""
        cc = ccache or self.ccache
        self.run([_which("kvno"), "-c", "FILE:" + cc, self.princ(service)])

    def klist(self, ccache=None):
        cc = ccache or self.ccache
        return self.run([_which("klist"), "-f", "-e", "-c", "FILE:" + cc]).stdout

    # --- life cycle ------------------------------------------------------
    def _write_conf(self):
        d = self.dir
        kdc = f"127.0.0.1:{self.port}"
        enct = "aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal"
        with open(self.kdc_conf, "w") as f:
            f.write(f"""[kdcdefaults]
    kdc_listen = {kdc}
    kdc_tcp_listen = {kdc}

[realms]
    {self.realm} = {{
        database_name = {d}/principal
        key_stash_file = {d}/stash
        acl_file = {d}/kadm5.acl
        kdc_listen = {kdc}
        kdc_tcp_listen = {kdc}
        kadmind_listen = 127.0.0.1:{_free_port()}
        kpasswd_listen = 127.0.0.1:{_free_port()}
        max_life = 10h 0m 0s
        max_renewable_life = 7d 0h 0m 0s
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = {enct}
    }}

[logging]
    kdc = FILE:{self.kdc_log}
    admin_server = FILE:{d}/kadmin.log
    default = FILE:{d}/krb5lib.log
""")
        with open(self.krb5_conf, "w") as f:
            f.write(f"""[libdefaults]
    default_realm = {self.realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    forwardable = true
    ignore_acceptor_hostname = false
    permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
    default_ccache_name = FILE:{self.ccache}
    default_keytab_name = FILE:{self._keytabs['proxy']}

[realms]
    {self.realm} = {{
        kdc = {kdc}
        admin_server = {kdc}
    }}

[domain_realm]
    .{self.realm.lower()} = {self.realm}
    {self.realm.lower()} = {self.realm}
""")
        with open(os.path.join(d, "kadm5.acl"), "w") as f:
            f.write(f"*/admin@{self.realm} *\n")

    def start(self):
        if not available():
            raise RuntimeError("MIT Kerberos is not installed (krb5-kdc krb5-admin-server krb5-user)")
        os.makedirs(self.dir, exist_ok=True)
        self.port = _free_port()
        self._write_conf()
        self.run([_which("kdb5_util"), "-r", self.realm, "create", "-s", "-W", "-P", MASTER_PASSWORD])
        # Pre-authentication for the user only: a service principal that
        # requires it refuses S4U2Proxy tickets ("NO PREAUTH": the evidence
        # ticket of protocol transition has no pre-auth flag).
        self.kadmin(f"addprinc -pw {ALICE_PASSWORD} +requires_preauth alice")
        # Service principals with random keys.  ok_to_auth_as_delegate makes
        # the proxy's S4U2Self tickets forwardable (the precondition of
        # S4U2Proxy); ok_as_delegate tells clients they may forward a TGT.
        self.kadmin(f"addprinc -randkey +ok_to_auth_as_delegate +ok_as_delegate {PROXY_SPN}")
        self.kadmin(f"addprinc -randkey {UPSTREAM_SPN}")
        self.kadmin(f"addprinc -randkey {UPSTREAM_HOST_SPN}")
        # The constrained-delegation intent, in the names MIT's LDAP back end
        # and Samba use.  DB2 stores the strings but the KDC never asks it.
        self.kadmin(f"set_string {PROXY_SPN} allowed_to_delegate_to {self.upstream_principal}")
        self.kadmin(f"set_string {UPSTREAM_SPN} allowed_to_delegate_from {self.proxy_principal}")
        self.kadmin(f"ktadd -k {self._keytabs['proxy']} {PROXY_SPN}")
        self.kadmin(f"ktadd -k {self._keytabs['upstream']} {UPSTREAM_SPN}")
        self.kadmin(f"ktadd -k {self._keytabs['upstream']} {UPSTREAM_HOST_SPN}")
        log = open(os.path.join(self.dir, "krb5kdc.out"), "w")
        self.proc = subprocess.Popen([_which("krb5kdc"), "-n", "-r", self.realm],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                     start_new_session=True)
        log.close()
        end = time.time() + 15
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("krb5kdc exited: " + self._tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("krb5kdc did not listen: " + self._tail())

    def _tail(self):
        out = ""
        for n in ("krb5kdc.out", "kdc.log"):
            try:
                with open(os.path.join(self.dir, n)) as f:
                    out += f.read()[-2000:]
            except OSError:
                pass
        return out

    def stop(self):
        self.restore()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        # Nothing is left behind, unless MP_KRB5_KEEP=1 (to read the logs).
        if os.environ.get("MP_KRB5_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)
        return False
