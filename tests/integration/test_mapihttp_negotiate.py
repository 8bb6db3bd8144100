"""Negotiate (Kerberos) terminated on the HTTPS front for MAPI/HTTP
(mapiproxy:http auth = terminate, mapiproxy:http negotiate = yes): the
client is requests-kerberos (Debian's python3-requests-kerberos over
pykerberos and MIT's GSSAPI, alice's kinit'd cache), which answers the
proxy's `WWW-Authenticate: Negotiate` with a SPNEGO token; the KDC is MIT's
(krb5_env.py).  The proxy checks the ticket with its keytab and logs on to
the lab with its own NTLM account, as for NTLM and Basic clients.  NTLM
inside Negotiate (SPNEGO), built with Impacket, logs on too."""
import re
import subprocess

import pytest

import krb5_env
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
    yield from krb5_env.http_realm(tmp_path_factory.mktemp("realm"), [FRONT_SPN])


def kerberos():
    from requests_kerberos import HTTPKerberosAuth, OPTIONAL
    return HTTPKerberosAuth(mutual_authentication=OPTIONAL)


def neg_opts(keytab):
    return {"mapiproxy:http negotiate": "yes", "mapiproxy:keytab": keytab,
            "realm": "lab.example"}


def test_kerberos_client_proxy_logs_on_upstream(make_proxy, env, krb):  # noqa: F811
    p = start(make_proxy, env, **neg_opts(krb.http_keytab))
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


def _der(tag, body):
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(ln)]) + ln + body


@pytest.mark.parametrize("with_mic", [False, True], ids=["no-mic", "mechListMIC"])
def test_ntlm_inside_negotiate(make_proxy, env, krb, with_mic):  # noqa: F811
    """A client without a ticket sends NTLM inside SPNEGO under Negotiate
    (what Windows' Negotiate package does outside the domain): Impacket's
    SPNEGO NegTokenInit with its NTLM NEGOTIATE gets a 401 whose
    `WWW-Authenticate: Negotiate` NegTokenResp carries the CHALLENGE; the
    NegTokenResp with the AUTHENTICATE (and, in the second case, a
    mechListMIC made with Impacket's NTLM SIGN over the MechTypeList) logs
    the connection on; a wrong mechListMIC is refused."""
    import base64
    import http.client
    import ssl
    from impacket import ntlm
    from impacket.spnego import SPNEGO_NegTokenInit, SPNEGO_NegTokenResp, TypesMech
    from Cryptodome.Cipher import ARC4
    from test_http_auth_terminate import CLIENTS
    p = start(make_proxy, env, **neg_opts(krb.http_keytab))
    ctx = ssl.create_default_context(cafile=env["ca"])
    ctx.check_hostname = False

    def logon(mic_ok):
        c = http.client.HTTPSConnection("127.0.0.1", int(p.base.rsplit(":", 1)[1]), context=ctx,
                                        timeout=10)
        t1 = ntlm.getNTLMSSPType1("", "LAB", signingRequired=True)
        ini = SPNEGO_NegTokenInit()
        ini["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
        ini["MechToken"] = t1.getData()
        c.request("POST", "/mapi/nspi/", body=b"",
                  headers={"Authorization": "Negotiate " + base64.b64encode(ini.getData()).decode()})
        r = c.getresponse()
        r.read()
        assert r.status == 401
        www = [v for k, v in r.getheaders() if k.lower() == "www-authenticate"]
        tok = [w.split(" ", 1)[1] for w in www if w.startswith("Negotiate ")]
        assert tok, www
        resp = SPNEGO_NegTokenResp(base64.b64decode(tok[0]))
        assert resp["SupportedMech"] == TypesMech[
            "NTLMSSP - Microsoft NTLM Security Support Provider"]
        t3, key = ntlm.getNTLMSSPType3(t1, resp["ResponseToken"], "alice", CLIENTS["alice"], "LAB")
        if with_mic:
            flags = t3["flags"]
            mech_list = _der(0x30, _der(0x06, TypesMech[
                "NTLMSSP - Microsoft NTLM Security Support Provider"]))
            rc4 = ARC4.new(ntlm.SEALKEY(flags, key))
            mic = ntlm.SIGN(flags, ntlm.SIGNKEY(flags, key), mech_list, 0, rc4.encrypt).getData()
            if not mic_ok:
                mic = bytes([mic[0] ^ 1]) + mic[1:]
            body = _der(0x30, _der(0xa2, _der(0x04, t3.getData())) + _der(0xa3, _der(0x04, mic)))
            final = _der(0xa1, body)
        else:
            r2 = SPNEGO_NegTokenResp()
            r2["ResponseToken"] = t3.getData()
            final = r2.getData()
        c.request("POST", "/mapi/nspi/", body=b"",
                  headers={"Authorization": "Negotiate " + base64.b64encode(final).decode()})
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    assert logon(True) != 401
    if with_mic:
        assert logon(False) == 401
    p.stop()
    log = p.log()
    print(log[-2500:])
    assert "logged on as LAB\\alice (NTLM, this connection)" in log
    if with_mic:
        assert "bad SPNEGO mechListMIC" in log
    assert_no_secrets(log)


def test_every_logon_on_one_connection_gets_its_own_mutual_token(make_proxy, env, krb):  # noqa: F811
    """RFC 4559 5: the 2xx that ends a Negotiate exchange carries the
    server's final token.  requests-kerberos with mutual authentication
    REQUIRED (it raises MutualAuthenticationError on a 2xx without a token
    it can take) logs on preemptively with a new context for each request,
    all on one kept-alive connection: Connect, two PINGs, and an Execute
    with a session cookie the proxy never saw issued, which the proxy
    answers itself (200, X-ResponseCode 10).  Each success carries the
    token of its own exchange; a request without a Negotiate token gets
    none (none left over from the one before)."""
    from requests_kerberos import REQUIRED, HTTPKerberosAuth
    p = start(make_proxy, env, **neg_opts(krb.http_keytab))

    def auth():
        return HTTPKerberosAuth(mutual_authentication=REQUIRED, force_preemptive=True)

    ems = MH.EmsmdbHttp(p.base, auth=auth(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    for _ in range(2):
        ems.http.auth = auth()  # a new exchange on the same connection
        r = ems.ping()
        assert r.code == 0 and r.http.headers.get("WWW-Authenticate", "").startswith("Negotiate ")
    ems.http.auth = auth()
    r = ems.post("Execute", b"", check=False, headers={"Cookie": "MapiContext=never-issued"})
    assert r.http.status_code == 200 and r.code == 10  # Context Not Found, from the proxy
    assert r.http.headers.get("WWW-Authenticate", "").startswith("Negotiate ")
    ems.http.auth = None  # the connection stays logged on: no token sent, none expected
    r = ems.ping()
    assert r.code == 0 and "WWW-Authenticate" not in r.http.headers
    p.stop()
    log = p.log()
    conns = set(re.findall(r"http #(\d+) \S+ POST /mapi/emsmdb/ type=", log))
    assert len(conns) == 1, log[-3000:]  # every request above on one connection
    assert log.count("logged on as alice@LAB.EXAMPLE (Negotiate, this connection)") == 1
    assert "YII" not in log and "oYG" not in log  # no GSS token in the log
    assert_no_secrets(log)
