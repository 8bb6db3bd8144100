"""The HTTPS front before the lab's MAPI over HTTP server (tests/lab,
lab_mapihttp.py, over HTTPS with NTLM and Basic) and the lab's MAPI/HTTP
client on python3-requests / requests-ntlm: real NTLM handshakes bound to
connections, MAPI/HTTP's PROCESSING / PENDING / DONE streams, session
cookies, Autodiscover answers of the lab rewritten to name the proxy."""
import os
import signal
import subprocess
import sys
import threading

import pytest
import requests
from requests.auth import HTTPBasicAuth
from requests_ntlm import HttpNtlmAuth

from conftest import ROOT, free_port
from http_peer import make_ca, make_cert

LAB_DIR = os.path.join(ROOT, "tests", "lab")
if not os.path.exists(os.path.join(LAB_DIR, "lab_mapihttp.py")):
    pytest.skip("the lab has no MAPI over HTTP server", allow_module_level=True)
sys.path.insert(0, LAB_DIR)

import emsmdb_client as EC  # noqa: E402
import mapihttp_client as MH  # noqa: E402

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
ALICE = ORG + "/cn=Recipients/cn=alice"
PASSWORDS = {"alice": "Alice-Pw.1", "bob": "Bob:pw 2"}
PUBLIC = "mail.proxy.test"


def start_lab_https(d, extra=(), environ=None):
    """The lab's MAPI/HTTP server over TLS with NTLM and Basic for PASSWORDS'
    users, files in d; extra: more lab options; environ: more environment for
    the lab process.  Returns (process, env)."""
    ca = make_ca(d, "ca")
    lab_cert = make_cert(d, "ca", "lab", ["DNS:localhost", "DNS:exlab01.lab.example"])
    proxy_cert = make_cert(d, "ca", "proxy", ["DNS:mail.proxy.test", "IP:127.0.0.1"])
    users = os.path.join(d, "users")
    with open(users, "w") as f:
        for u, p in PASSWORDS.items():
            f.write(f"{u}:LAB:{p}\n")
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LAB_DIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", "0", "--mapihttp-port", "0", "--tls-cert", lab_cert[0], "--tls-key",
         lab_cert[1], "--users", users, "--http-auth", "ntlm,basic", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(environ or {})})
    line = proc.stdout.readline()
    assert line.startswith("READY ") and "mapihttp=" in line, line
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    return proc, {"ca": ca, "proxy_cert": proxy_cert, "mapihttp": ports["mapihttp"]}


PENDING = ["--pending-period", "0.1", "--pending-delay", "0.3"]


def lab_env(tmp_path_factory, lab_environ=None, name="mhfront", extra=PENDING):
    """start_lab_https as a generator: yields the env dict, stops the lab after."""
    proc, e = start_lab_https(str(tmp_path_factory.mktemp(name)), extra, lab_environ)
    yield e
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def lab_https_fixture(name, extra=()):
    """A module-scoped fixture: start_lab_https's env, the lab stopped after."""
    @pytest.fixture(scope="module")
    def env(tmp_path_factory):
        yield from lab_env(tmp_path_factory, None, name, extra)
    return env


env = lab_https_fixture("mhfront", PENDING)


def start_front(make_proxy, env, extra=None):
    """The proxy's HTTPS front before the lab's MAPI/HTTP server; extra: more
    options (modules, ...).  Also used by test_mapihttp_modules.py."""
    port = free_port()
    opts = {
        "mapiproxy:http listen": f"127.0.0.1:{port}",
        "mapiproxy:tls certificate": env["proxy_cert"][0],
        "mapiproxy:tls key": env["proxy_cert"][1],
        "mapiproxy:tls ca file": env["ca"],
        "mapiproxy:http upstream": f"https://localhost:{env['mapihttp']}",
        "mapiproxy:http upstream names": "exlab01.lab.example",
        "mapiproxy:http public name": PUBLIC,
    }
    opts.update(extra or {})
    p = make_proxy(upstream_epm_port=1, wait_ports=(port,), extra=opts)
    p.base = f"https://127.0.0.1:{port}"
    return p


@pytest.fixture
def front(make_proxy, env):
    return start_front(make_proxy, env)


def ntlm(user="alice"):
    return HttpNtlmAuth("LAB\\" + user, PASSWORDS[user])


def test_emsmdb_and_nspi_with_ntlm_through_the_front(front, env):
    ems = MH.EmsmdbHttp(front.base, auth=ntlm(), verify=env["ca"])
    r = ems.connect(ALICE)
    assert r["ErrorCode"] == 0 and r["DisplayName"] == "Alice Anders"
    meta = r["response"].meta
    assert meta[0] == "PROCESSING" and "PENDING" in meta and meta[-1] == "DONE"
    assert set(ems.http.cookies.get_dict()) == {"MapiContext", "MapiSequence"}
    assert ems.ping().code == 0
    assert ems.disconnect()["ErrorCode"] == 0
    ab = MH.NspiHttp(front.base, auth=HTTPBasicAuth("LAB\\bob", PASSWORDS["bob"]),
                     verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    front.stop()
    log = front.log()
    assert "type=Connect" in log and "type=Bind" in log and "status=200" in log
    for secret in (PASSWORDS["alice"], PASSWORDS["bob"], "MapiContext=", "TlRMTVNT"):
        assert secret not in log


def test_ntlm_connection_does_not_lend_its_logon(front, env):
    """Alice's session cookies on another client connection, without NTLM,
    are refused by the upstream: that connection has its own upstream one."""
    ems = MH.EmsmdbHttp(front.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    other = requests.Session()
    other.cookies.update(ems.http.cookies)
    r = other.post(front.base + "/mapi/emsmdb/", data=b"", verify=env["ca"],
                   headers={"Content-Type": "application/mapi-http", "X-RequestType": "PING",
                            "X-RequestId": "{x}:1", "X-ClientInfo": "{x}:1"})
    assert r.status_code == 401
    # the first connection is still logged on
    assert ems.ping().code == 0


def test_lab_autodiscover_names_only_the_proxy(front, env):
    req = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
           'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
           '<EMailAddress>alice@lab.example</EMailAddress><AcceptableResponseSchema>'
           'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
           '</AcceptableResponseSchema></Request></Autodiscover>')
    s = requests.Session()
    s.auth = ntlm()
    r = s.post(front.base + "/autodiscover/autodiscover.xml", data=req, verify=env["ca"],
               headers={"Content-Type": "text/xml", "X-MapiHttpCapability": "1",
                        "Accept-Encoding": "gzip"})
    assert r.status_code == 200
    text = r.text
    assert "exlab01.lab.example" not in text and str(env["mapihttp"]) not in text
    assert f"<InternalUrl>https://{PUBLIC}/mapi/emsmdb/?MailboxId=" in text
    assert f"<Server>{PUBLIC}</Server>" in text
    assert "cn=EXLAB01" in text  # legacy DNs stay
    j = s.get(front.base + "/autodiscover/autodiscover.json/v1.0/alice@lab.example",
              params={"Protocol": "AutodiscoverV1"}, verify=env["ca"])
    assert j.json()["Url"] == f"https://{PUBLIC}/autodiscover/autodiscover.xml"
    # the rewritten URLs work against the proxy: a client that follows them
    mbx = text.split("<InternalUrl>")[1].split("</InternalUrl>")[0]
    path = mbx.split(PUBLIC, 1)[1].replace("&amp;", "&")
    ems = MH.EmsmdbHttp(front.base, auth=ntlm(), verify=env["ca"],
                        mailbox_id=path.split("MailboxId=")[1])
    assert ems.connect(ALICE)["ErrorCode"] == 0


def test_pass_through_cookies_bound_to_the_ntlm_user(front, env):
    """Pass-through: the lab authenticates each connection; the proxy binds a
    session cookie to the user the connection's NTLM AUTHENTICATE named (the
    lab accepted it), so bob's connection with alice's cookies is answered
    as an unknown cookie is, before the lab; alice's own second connection
    (NTLM or Basic) shares her session."""
    ems = MH.EmsmdbHttp(front.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    again = MH.EmsmdbHttp(front.base, auth=ntlm(), verify=env["ca"])
    again.http.cookies.update(ems.http.cookies)
    assert again.ping().code == 0
    basic = MH.EmsmdbHttp(front.base, auth=HTTPBasicAuth("LAB\\alice", PASSWORDS["alice"]),
                          verify=env["ca"])
    basic.http.cookies.update(ems.http.cookies)
    assert basic.ping().code == 0
    bob = MH.EmsmdbHttp(front.base, auth=ntlm("bob"), verify=env["ca"])
    bob.http.cookies.update(ems.http.cookies)
    d, _ = bob.execute_raw(EC.RopBuffer().logon(0, ALICE).build([0xFFFFFFFF]), check=False)
    assert d["response"].code == 10
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    front.stop()
    assert "MAPI/HTTP session cookie of LAB\\alice used by LAB\\bob" in front.log()
