"""The proxy's own MAPI/HTTP upstream logon with Negotiate (Kerberos):
mapiproxy:http auth = terminate with mapiproxy:http upstream auth =
negotiate.  Clients log on to the proxy (NTLM from requests-ntlm, checked
against its credentials file); each upstream connection of the proxy's
carries one Negotiate token of its own (MIT's initiator, the proxy's keytab
for host/mapiproxy.lab.example) that the lab's MAPI/HTTP acceptor (MIT's,
through python3-gssapi, tests/lab/lab_mapihttp.py) checks: the lab logs the
proxy's principal, never alice, and NSPI/EMSMDB answers through the proxy
equal a direct NTLM client's."""
import re
import subprocess
import sys

import pytest
from requests_ntlm import HttpNtlmAuth

import krb5_env
from conftest import ROOT
from krb5_env import PROXY_SPN
from test_rpch import ALICE_PW, PROXY_PW, rpch_lab_env, start
from test_rpch_negotiate import krb, lab_mark, lab_since, merge_keytabs  # noqa: F401

sys.path.insert(0, f"{ROOT}/tests/lab")
import mapihttp_client as MH  # noqa: E402

_why = krb5_env.gss_missing()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
ALICE = ORG + "/cn=Recipients/cn=alice"
PRINC = f"{PROXY_SPN}@LAB.EXAMPLE"


@pytest.fixture(scope="module")
def env(krb, tmp_path_factory):  # noqa: F811
    """The lab with Negotiate on, its keytab, and the proxy's principal given
    FullAccess to the mailboxes (as the proxy's service account would be)."""
    d = tmp_path_factory.mktemp("mh-up-neg")
    lab_kt = merge_keytabs(krb, str(d / "lab.keytab"), krb.keytab("upstream"), krb.http_keytab)
    yield from rpch_lab_env(str(d), "--keytab", lab_kt, "--http-auth", "ntlm,basic,negotiate",
                            "--full-access", PRINC)


def up_neg(krb, tmp_path, **over):
    mbx = tmp_path / "mailbox-map"   # mapiproxy:mailbox map: alice's own mailbox
    mbx.write_text(f"alice: {ALICE}\n")
    mbx.chmod(0o600)
    o = {"mapiproxy:mailbox map": str(mbx),"mapiproxy:http upstream auth": "negotiate",
         "mapiproxy:upstream keytab": krb.keytab("proxy"),
         "mapiproxy:upstream principal": PROXY_SPN,
         "mapiproxy:rpc over http": None,
         "dcerpc_mapiproxy:username": None, "mapiproxy:password file": None}
    o.update(over)
    return o


def answers(base, ca):
    """NSPI and EMSMDB answers of one client (alice by NTLM) at base."""
    auth = HttpNtlmAuth("LAB\\alice", ALICE_PW)
    ab = MH.NspiHttp(base, auth=auth, verify=ca)
    b = ab.bind()
    assert b["ErrorCode"] == 0
    res = ab.resolve_names(["alice"])
    ems = MH.EmsmdbHttp(base, auth=HttpNtlmAuth("LAB\\alice", ALICE_PW), verify=ca)
    c = ems.connect(ALICE)
    assert c["ErrorCode"] == 0
    keep = ("ErrorCode", "DisplayName", "DnPrefix")
    return (b["ErrorCode"], {k: res.get(k) for k in ("ErrorCode", "MinimalIds", "Rows")},
            {k: c.get(k) for k in keep})


def test_proxy_logs_on_upstream_with_kerberos(make_proxy, env, krb, tmp_path):  # noqa: F811
    direct = answers(f"https://localhost:{env['ports']['mapihttp']}", env["ca"])
    before = lab_mark(env)
    p = start(make_proxy, env, **up_neg(krb, tmp_path))
    via = answers(f"https://127.0.0.1:{p.http_port}", env["ca"])
    p.stop()
    log, lab = p.log(), lab_since(env, before)
    assert via == direct
    oks = re.findall(r"mapihttp: auth: (.*) logon ok user=(\S+)", lab)
    assert oks and all(o == ("Negotiate (Kerberos)", PRINC) for o in oks), lab[-2000:]
    assert "the proxy to the upstream as host/mapiproxy.lab.example (Negotiate (Kerberos))" in log
    assert "logged on as LAB\\alice (NTLM, this connection)" in log
    assert "YII" not in log and ALICE_PW not in log and PROXY_PW not in log


def test_upstream_refuses_the_proxys_ticket(make_proxy, env, krb, tmp_path):  # noqa: F811
    """A ticket for a name the lab has no key for (http upstream spn =
    the proxy's own): the lab refuses it, the client gets 502 and the log
    says why; alice's request never reaches the lab's handlers."""
    before = lab_mark(env)
    p = start(make_proxy, env, **up_neg(krb, tmp_path, **{"mapiproxy:http upstream spn": PROXY_SPN}))
    ab = MH.NspiHttp(f"https://127.0.0.1:{p.http_port}",
                     auth=HttpNtlmAuth("LAB\\alice", ALICE_PW), verify=env["ca"])
    r = ab.bind(check=False)["response"].http
    p.stop()
    assert r.status_code == 502
    assert "refused the proxy's Kerberos logon" in p.log()
    lab = lab_since(env, before)
    assert "Negotiate refused" in lab and "logon ok" not in lab


def test_options_checked(tmp_path):
    """--check: negotiate without the proxy's Kerberos identity is an
    error; with it no username/password is needed; an spn without negotiate
    is a warning."""
    kt = tmp_path / "k.keytab"
    kt.write_bytes(b"\x05\x02")   # a keytab file's header: --check reads the path only
    base = ["mapiproxy:http auth = terminate", "mapiproxy:credentials file = /dev/null",
            "mapiproxy:http upstream auth = negotiate"]
    out, rc = check_conf(tmp_path, base)
    assert rc != 0 and "mapiproxy:upstream keytab" in out
    out, rc = check_conf(tmp_path, base + [f"mapiproxy:upstream keytab = {kt}"])
    assert "dcerpc_mapiproxy:username" not in out and "http upstream auth" not in out, out
    out, rc = check_conf(tmp_path, ["mapiproxy:http upstream spn = HTTP/x"])
    assert "mapiproxy:http upstream spn is used with" in out


def check_conf(tmp_path, lines):
    from conftest import PROXY_BIN
    conf = tmp_path / "c.conf"
    conf.write_text("\n".join(["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
                               "mapiproxy:http listen = 127.0.0.1:1",
                               "mapiproxy:http plain = yes",
                               "mapiproxy:http upstream = https://localhost"] + lines) + "\n")
    r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    return r.stdout + r.stderr, r.returncode


def test_passthrough_relays_the_upstreams_mutual_token(make_proxy, env, krb):  # noqa: F811
    """http auth = pass-through: alice's Kerberos logon (requests-kerberos,
    mutual authentication REQUIRED, so it checks the AP-REP itself) goes to
    the lab; the lab's 200 carries `WWW-Authenticate: Negotiate <AP-REP>`
    and the proxy relays it unchanged (requests-kerberos raises otherwise)."""
    requests_kerberos = pytest.importorskip("requests_kerberos")
    before = lab_mark(env)
    p = start(make_proxy, env, **{"mapiproxy:http auth": "pass-through",
                                  "mapiproxy:rpc over http": None})
    auth = requests_kerberos.HTTPKerberosAuth(
        mutual_authentication=requests_kerberos.REQUIRED)
    ab = MH.NspiHttp(f"https://127.0.0.1:{p.http_port}", auth=auth, verify=env["ca"])
    b = ab.bind()
    assert b["ErrorCode"] == 0
    assert b["response"].http.headers.get("WWW-Authenticate", "").startswith("Negotiate ")
    p.stop()
    assert "Negotiate (Kerberos) logon ok user=alice@LAB.EXAMPLE" in lab_since(env, before)


def test_terminated_kerberos_client_gets_the_proxys_mutual_token(make_proxy, env, krb,
                                                                tmp_path):  # noqa: F811
    """Termination with a Kerberos client (requests-kerberos, mutual
    authentication REQUIRED: it checks the AP-REP against its own context)
    and the proxy's Kerberos logon upstream: the client's first answer
    carries the proxy's acceptor token, never the lab's (which is about the
    proxy's logon and would not verify)."""
    requests_kerberos = pytest.importorskip("requests_kerberos")
    p = start(make_proxy, env, **up_neg(krb, tmp_path, **{
        "mapiproxy:http negotiate": "yes", "mapiproxy:keytab": krb.http_keytab,
        "realm": "lab.example"}))
    auth = requests_kerberos.HTTPKerberosAuth(
        mutual_authentication=requests_kerberos.REQUIRED)
    ab = MH.NspiHttp(f"https://127.0.0.1:{p.http_port}", auth=auth, verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    p.stop()
    assert "logged on as alice@LAB.EXAMPLE (Negotiate, this connection)" in p.log()
