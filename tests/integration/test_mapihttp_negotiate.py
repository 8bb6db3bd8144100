"""Negotiate (Kerberos) terminated on the HTTPS front for MAPI/HTTP
(mapiproxy:http auth = terminate, mapiproxy:http negotiate = yes): the
client is requests-kerberos (Debian's python3-requests-kerberos over
pykerberos and MIT's GSSAPI, alice's kinit'd cache), which answers the
proxy's `WWW-Authenticate: Negotiate` with a SPNEGO token; the KDC is MIT's
(krb5_env.py).  The proxy checks the ticket with its keytab and logs on to
the lab with its own NTLM account, as for NTLM and Basic clients."""
import subprocess

import pytest

import krb5_env
from krb5_env import Krb5Env
from test_http_auth_terminate import (ALICE, MH, assert_no_secrets, env, lab_log,  # noqa: F401
                                      start)

_why = krb5_env.gss_missing()
if _why is None:
    try:
        import requests_kerberos  # noqa: F401
    except ImportError:
        _why = "python3-requests-kerberos not installed (scripts/install-deps.sh)"
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")

FRONT_SPN = "HTTP/127.0.0.1"


@pytest.fixture(scope="module")
def krb(tmp_path_factory):
    d = tmp_path_factory.mktemp("realm")
    with Krb5Env(d) as k:
        k.kadmin(f"addprinc -randkey {FRONT_SPN}")
        k.front_keytab = str(d / "front.keytab")
        k.kadmin(f"ktadd -k {k.front_keytab} {FRONT_SPN}")
        k.kinit("alice")
        k.apply()
        try:
            yield k
        finally:
            k.restore()


def kerberos():
    from requests_kerberos import HTTPKerberosAuth, OPTIONAL
    return HTTPKerberosAuth(mutual_authentication=OPTIONAL)


def neg_opts(keytab):
    return {"mapiproxy:http negotiate": "yes", "mapiproxy:keytab": keytab,
            "realm": "lab.example"}


def test_kerberos_client_proxy_logs_on_upstream(make_proxy, env, krb):  # noqa: F811
    p = start(make_proxy, env, **neg_opts(krb.front_keytab))
    before = len(lab_log(env))
    ab = MH.NspiHttp(p.base, auth=kerberos(), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    ems = MH.EmsmdbHttp(p.base, auth=kerberos(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    p.stop()
    lab = lab_log(env)[before:]
    log = p.log()
    print(log[-3000:])
    assert "logged on as alice@LAB.EXAMPLE (Negotiate, this connection)" in log
    assert "NTLM logon ok user=LAB\\Administrator" in lab
    assert "Negotiate" not in lab and "logon ok user=LAB\\alice" not in lab  # only the proxy
    assert "YII" not in log     # the start of a base64 GSS token
    assert_no_secrets(log)


def test_ticket_the_keytab_cannot_read(make_proxy, env, krb, tmp_path):  # noqa: F811
    """A keytab without the front's key: 401 with WWW-Authenticate:
    Negotiate and a log line; the lab is never asked."""
    other = tmp_path / "other.keytab"
    subprocess.run(["ktutil"], input=f"rkt {krb.keytab('proxy')}\nwkt {other}\nq\n", text=True,
                   check=True, capture_output=True, env=krb.env())
    p = start(make_proxy, env, **neg_opts(str(other)))
    before = len(lab_log(env))
    ab = MH.NspiHttp(p.base, auth=kerberos(), verify=env["ca"])
    r = ab.bind(check=False)["response"].http
    p.stop()
    assert r.status_code == 401
    assert "Negotiate" in r.headers.get("WWW-Authenticate", "")
    assert "Negotiate logon refused" in p.log()
    assert "/mapi/nspi" not in lab_log(env)[before:]
