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
resource-based delegation allowed_to_delegate_from).  The DB2 back end
(backend="db2", the default) implements neither, so on DB2 every S4U2Proxy
request is refused with KDC_ERR_BADOPTION whatever is configured; the intent
is still recorded as string attributes (kadmin set_string), and
`s4u2proxy_supported` is False.  backend="ldap" runs a private slapd (mdb,
loopback, in the same directory) under MIT's kldap back end and puts
krbAllowedToDelegateTo: exchangeMDB/exlab01...@REALM on the proxy's entry:
there S4U2Proxy works (`s4u2proxy_supported` True).  It needs slapd,
ldap-utils and krb5-kdc-ldap (`available("ldap")`).

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


KLDAP = "/usr/lib/x86_64-linux-gnu/krb5/plugins/kdb/kldap.so"
KRB_SCHEMA = "/usr/share/doc/krb5-kdc-ldap/kerberos.schema.gz"
LDAP_BASE = "dc=lab,dc=example"
LDAP_ADMIN = "cn=admin," + LDAP_BASE
LDAP_PW = "ldap-Pw-1!"


def available(backend="db2"):
    """True when the MIT KDC and client tools (and for backend "ldap",
    slapd, ldap-utils and MIT's kldap module) are installed."""
    try:
        for n in ("krb5kdc", "kdb5_util", "kadmin.local", "kinit", "klist"):
            _which(n)
        if backend == "ldap":
            for n in ("slapd", "ldapadd", "ldapmodify", "kdb5_ldap_util"):
                _which(n)
            import glob
            if not glob.glob("/usr/lib/*/krb5/plugins/kdb/kldap.so") or \
                    not os.path.exists(KRB_SCHEMA) or not os.path.isdir("/usr/lib/ldap"):
                return False
        return True
    except RuntimeError:
        return False


def gss_missing():
    """Why tests of MIT Kerberos through python3-gssapi cannot run, or None."""
    if not available():
        return "MIT Kerberos not installed (scripts/install-deps.sh)"
    try:
        import gssapi.raw  # noqa: F401
    except ImportError:
        return "python3-gssapi not installed (scripts/install-deps.sh)"
    return None


def http_realm(tmpdir, spns):
    """Generator for a module fixture: a realm with the service principals
    spns ("HTTP/127.0.0.1", ...) whose keys are in one keytab (the env's
    http_keytab), alice kinit'd, this process pointed at the realm."""
    with Krb5Env(tmpdir) as k:
        k.http_keytab = os.path.join(str(tmpdir), "http.keytab")
        for spn in spns:
            k.kadmin(f"addprinc -randkey {spn}")
        k.kadmin(f"ktadd -k {k.http_keytab} {' '.join(spns)}")
        k.kinit("alice")
        k.apply()
        try:
            yield k
        finally:
            k.restore()


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
    def __init__(self, tmpdir, realm="LAB.EXAMPLE", backend="db2"):
        if backend not in ("db2", "ldap"):
            raise ValueError("backend is db2 or ldap")
        self.realm = realm
        self.backend = backend
        self.slapd = None
        self.ldap_port = None
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
        self.s4u2proxy_supported = backend == "ldap"

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
        if self.backend == "ldap":
            dbline = "database_module = ldapmod"
            dbmodules = f"""
[dbmodules]
    ldapmod = {{
        db_library = kldap
        ldap_kerberos_container_dn = cn=krbContainer,{LDAP_BASE}
        ldap_kdc_dn = {LDAP_ADMIN}
        ldap_kadmind_dn = {LDAP_ADMIN}
        ldap_service_password_file = {d}/ldap-service.keyfile
        ldap_servers = ldap://127.0.0.1:{self.ldap_port}
        ldap_conns_per_server = 2
    }}
"""
        else:
            dbline = f"database_name = {d}/principal"
            dbmodules = ""
        with open(self.kdc_conf, "w") as f:
            f.write(f"""[kdcdefaults]
    kdc_listen = {kdc}
    kdc_tcp_listen = {kdc}

[realms]
    {self.realm} = {{
        {dbline}
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

{dbmodules}
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
        if self.backend == "ldap":
            self._start_slapd()
        self._write_conf()
        if self.backend == "ldap":
            ldap = ["-D", LDAP_ADMIN, "-w", LDAP_PW, "-H", f"ldap://127.0.0.1:{self.ldap_port}"]
            self.run([_which("kdb5_ldap_util"), *ldap, "create", "-subtrees", LDAP_BASE,
                      "-r", self.realm, "-s", "-P", MASTER_PASSWORD])
            self.run([_which("kdb5_ldap_util"), *ldap, "stashsrvpw", "-f",
                      os.path.join(self.dir, "ldap-service.keyfile"), LDAP_ADMIN],
                     input=f"{LDAP_PW}\n{LDAP_PW}\n")
        else:
            self.run([_which("kdb5_util"), "-r", self.realm, "create", "-s", "-W", "-P",
                      MASTER_PASSWORD])
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
        if self.backend == "ldap":
            # Traditional constrained delegation, as MIT's LDAP back end
            # reads it (check_allowed_to_delegate).
            dn = f"krbPrincipalName={self.proxy_principal},cn={self.realm},cn=krbContainer,{LDAP_BASE}"
            self.ldap("ldapmodify", f"dn: {dn}\nchangetype: modify\nadd: krbAllowedToDelegateTo\n"
                                    f"krbAllowedToDelegateTo: {self.upstream_principal}\n")
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

    def ldap(self, tool, ldif):
        return self.run([_which(tool), "-x", "-H", f"ldap://127.0.0.1:{self.ldap_port}",
                         "-D", LDAP_ADMIN, "-w", LDAP_PW], input=ldif)

    def _start_slapd(self):
        import gzip
        d = self.dir
        os.makedirs(os.path.join(d, "ldapdb"), exist_ok=True)
        with gzip.open(KRB_SCHEMA, "rt") as f, open(os.path.join(d, "kerberos.schema"), "w") as o:
            o.write(f.read())
        with open(os.path.join(d, "slapd.conf"), "w") as f:
            f.write(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {d}/kerberos.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
database mdb
suffix "{LDAP_BASE}"
rootdn "{LDAP_ADMIN}"
rootpw {LDAP_PW}
directory {d}/ldapdb
maxsize 104857600
index objectClass eq
index krbPrincipalName eq,pres,sub
""")
        self.ldap_port = _free_port()
        log = open(os.path.join(d, "slapd.out"), "w")
        # -d 0: stay in the foreground (our child), no debug output.
        self.slapd = subprocess.Popen([_which("slapd"), "-f", os.path.join(d, "slapd.conf"),
                                       "-h", f"ldap://127.0.0.1:{self.ldap_port}/", "-d", "0"],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.time() + 15
        while True:
            if self.slapd.poll() is not None:
                raise RuntimeError("slapd exited: " + self._tail())
            try:
                with socket.create_connection(("127.0.0.1", self.ldap_port), timeout=0.5):
                    break
            except OSError:
                if time.time() > end:
                    raise RuntimeError("slapd did not listen: " + self._tail())
                time.sleep(0.05)
        self.ldap("ldapadd", f"dn: {LDAP_BASE}\nobjectClass: dcObject\nobjectClass: organization\n"
                             f"o: lab\ndc: lab\n")

    def _tail(self):
        out = ""
        for n in ("krb5kdc.out", "kdc.log", "slapd.out"):
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
        if self.slapd is not None and self.slapd.poll() is None:
            self.slapd.send_signal(signal.SIGTERM)
            try:
                self.slapd.wait(10)
            except subprocess.TimeoutExpired:
                self.slapd.kill()
                self.slapd.wait(5)
        self.slapd = None

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
