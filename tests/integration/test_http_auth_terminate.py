"""Authentication termination on the HTTPS front (mapiproxy:http auth =
terminate): clients log on to the proxy (NTLM with requests-ntlm, or Basic
with requests) against its credentials file of NT hashes, and the proxy logs
on to the lab's MAPI over HTTP server (tests/lab/lab_mapihttp.py, real NTLM
and Basic) with its own account.  The lab knows only the proxy's account;
the proxy knows only the clients' ones."""
import os
import signal
import subprocess
import sys
import threading

import pytest
import requests
from requests.auth import HTTPBasicAuth
from requests_ntlm import HttpNtlmAuth
from impacket.ntlm import compute_nthash

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
# the proxy's clients (its credentials file) ...
CLIENTS = {"alice": "Cl1ent-Alice", "bob": "Cl1ent:Bob 2", "mallory": "Mall-Pw.9"}
# ... and the proxy's own account, the only one the lab knows
PROXY_USER, PROXY_PW = "Administrator", "Adm1n!Proxy"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("httpauth"))
    ca = make_ca(d, "ca")
    lab_cert = make_cert(d, "ca", "lab", ["DNS:localhost", "DNS:exlab01.lab.example"])
    proxy_cert = make_cert(d, "ca", "proxy", ["DNS:mail.proxy.test", "IP:127.0.0.1"])
    users = os.path.join(d, "lab-users")
    with open(users, "w") as f:
        f.write(f"{PROXY_USER}:LAB:{PROXY_PW}\n")
    creds = os.path.join(d, "proxy-users")
    with open(creds, "w") as f:
        f.write("# user:domain:NT hash\n")
        for u, p in CLIENTS.items():
            f.write(f"{u}:LAB:{compute_nthash(p).hex()}\n")
    os.chmod(creds, 0o600)
    pwfile = os.path.join(d, "upstream-password")
    with open(pwfile, "w") as f:
        f.write(PROXY_PW + "\n")
    os.chmod(pwfile, 0o600)
    mbxmap = os.path.join(d, "mailbox-map")  # mapiproxy:mailbox map: alice's own mailbox
    with open(mbxmap, "w") as f:
        f.write(f"alice: {ALICE}\n")
    os.chmod(mbxmap, 0o600)
    badpw = os.path.join(d, "bad-password")
    with open(badpw, "w") as f:
        f.write("not-the-password\n")
    os.chmod(badpw, 0o600)
    lab_log = os.path.join(d, "lab.log")
    logf = open(lab_log, "w")
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LAB_DIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", "0", "--mapihttp-port", "0", "--tls-cert", lab_cert[0], "--tls-key",
         lab_cert[1], "--users", users, "--http-auth", "ntlm,basic", "--pending-period", "0.1",
         "--pending-delay", "0.2"],
        stdout=subprocess.PIPE, stderr=logf, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY ") and "mapihttp=" in line, line
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    yield {"ca": ca, "proxy_cert": proxy_cert, "mapihttp": ports["mapihttp"], "creds": creds,
           "pwfile": pwfile, "badpw": badpw, "lab_log": lab_log, "mbxmap": mbxmap}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    logf.close()


def lab_log(env):
    with open(env["lab_log"]) as f:
        return f.read()


def start(make_proxy, env, **over):
    port = free_port()
    extra = {
        "mapiproxy:http listen": f"127.0.0.1:{port}",
        "mapiproxy:tls certificate": env["proxy_cert"][0],
        "mapiproxy:tls key": env["proxy_cert"][1],
        "mapiproxy:tls ca file": env["ca"],
        "mapiproxy:http upstream": f"https://localhost:{env['mapihttp']}",
        "mapiproxy:http public name": "mail.proxy.test",
        "mapiproxy:http auth": "terminate",
        "mapiproxy:credentials file": env["creds"],
        "mapiproxy:allowed users": "alice, LAB\\bob",
        "dcerpc_mapiproxy:username": PROXY_USER,
        "dcerpc_mapiproxy:domain": "LAB",
        "mapiproxy:password file": env["pwfile"],
        "mapiproxy:mailbox map": env["mbxmap"],
        "netbios name": "MAPIPROXY",
    }
    extra.update(over)
    p = make_proxy(upstream_epm_port=1, wait_ports=(port,), extra=extra)
    p.base = f"https://127.0.0.1:{port}"
    return p


def ntlm(user="alice", pw=None):
    return HttpNtlmAuth("LAB\\" + user, pw or CLIENTS[user])


def assert_no_secrets(log):
    for secret in (*CLIENTS.values(), PROXY_PW, "TlRMTVNT", "MapiContext="):
        assert secret not in log


def test_ntlm_client_proxy_logs_on_upstream(make_proxy, env):
    p = start(make_proxy, env)
    before = len(lab_log(env))
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    r = ems.connect(ALICE)
    assert r["ErrorCode"] == 0 and r["DisplayName"] == "Alice Anders"
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    res = ems.execute(EC.RopBuffer().open_folder(0, 1, logon["FolderIds"][4])
                      .get_properties_specific(1, [0x3001001F]))
    assert res[1]["Row"][0x3001001F] == "Inbox"
    assert ems.disconnect()["ErrorCode"] == 0
    ab = MH.NspiHttp(p.base, auth=ntlm("bob"), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    p.stop()
    log = p.log()
    assert "logged on as LAB\\alice (NTLM, this connection)" in log
    assert "logged on as LAB\\bob (NTLM, this connection)" in log
    assert "type=Connect" in log and "type=Execute" in log and "type=Bind" in log
    assert_no_secrets(log)
    lab = lab_log(env)[before:]
    assert "NTLM logon ok user=LAB\\Administrator" in lab
    assert "alice" not in lab.split("Connect")[0].lower().replace("cn=alice", "")


def test_wrong_password_never_reaches_the_upstream(make_proxy, env):
    p = start(make_proxy, env)
    before = lab_log(env)
    ems = MH.EmsmdbHttp(p.base, auth=ntlm("alice", "wrong-password"), verify=env["ca"])
    with pytest.raises(MH.MapiHttpError) as e:
        ems.connect(ALICE)
    assert e.value.resp.http.status_code == 401
    r = requests.post(p.base + "/mapi/emsmdb/", data=b"x", verify=env["ca"],
                      auth=ntlm("alice", "wrong-password"),
                      headers={"Content-Type": "application/mapi-http",
                               "X-RequestType": "Connect"})
    assert r.status_code == 401
    offered = r.headers.get("WWW-Authenticate", "")
    assert "NTLM" in offered and "Basic" not in offered  # Basic is off by default
    # no credentials at all, and a Bearer token: 401 as well
    assert requests.get(p.base + "/mapi/emsmdb/", verify=env["ca"]).status_code == 401
    r = requests.get(p.base + "/mapi/emsmdb/", verify=env["ca"],
                     headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."})
    assert r.status_code == 401
    p.stop()
    assert lab_log(env) == before  # the lab saw nothing
    log = p.log()
    assert "logon refused: user=LAB\\alice: NTLM logon failed" in log
    assert "Bearer tokens are not accepted" in log
    assert "wrong-password" not in log and "eyJhbGciOiJub25lIn0" not in log
    assert "connecting to upstream" not in log
    assert_no_secrets(log)


def test_second_connection_cannot_ride_on_the_first(make_proxy, env):
    p = start(make_proxy, env)
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    before = lab_log(env)
    other = requests.Session()
    other.cookies.update(ems.http.cookies)
    r = other.post(p.base + "/mapi/emsmdb/", data=b"", verify=env["ca"],
                   headers={"Content-Type": "application/mapi-http", "X-RequestType": "PING",
                            "X-RequestId": "{x}:1", "X-ClientInfo": "{x}:1"})
    assert r.status_code == 401
    assert lab_log(env) == before
    assert ems.ping().code == 0  # the first connection is still logged on
    p.stop()


def test_basic_client_ntlm_upstream(make_proxy, env):
    p = start(make_proxy, env, **{"mapiproxy:http basic": "yes",
                                  "mapiproxy:http realm": "mail.proxy.test"})
    r = requests.get(p.base + "/mapi/nspi/", verify=env["ca"])
    assert r.status_code == 401
    assert 'Basic realm="mail.proxy.test"' in r.headers["WWW-Authenticate"]
    before = len(lab_log(env))
    ab = MH.NspiHttp(p.base, auth=HTTPBasicAuth("LAB\\bob", CLIENTS["bob"]), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    ems = MH.EmsmdbHttp(p.base, auth=HTTPBasicAuth("alice", CLIENTS["alice"]), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    bad = MH.NspiHttp(p.base, auth=HTTPBasicAuth("LAB\\bob", "nope"), verify=env["ca"])
    assert bad.bind(check=False)["response"].http.status_code == 401
    p.stop()
    lab = lab_log(env)[before:]
    assert "NTLM logon ok user=LAB\\Administrator" in lab and "Basic logon" not in lab
    log = p.log()
    assert "logon refused: user=LAB\\bob: Basic logon failed" in log
    assert_no_secrets(log)


def test_user_not_in_allowed_users_is_refused(make_proxy, env):
    p = start(make_proxy, env, **{"mapiproxy:http basic": "yes"})
    before = lab_log(env)
    r = requests.post(p.base + "/mapi/emsmdb/", data=b"", verify=env["ca"], auth=ntlm("mallory"))
    assert r.status_code == 401
    r = requests.post(p.base + "/mapi/emsmdb/", data=b"", verify=env["ca"],
                      auth=HTTPBasicAuth("LAB\\mallory", CLIENTS["mallory"]))
    assert r.status_code == 401
    p.stop()
    assert lab_log(env) == before
    log = p.log()
    assert log.count("logon refused: user=LAB\\mallory: not in mapiproxy:allowed users") == 2


def test_basic_upstream(make_proxy, env):
    """gromox's default: the upstream takes Basic; the proxy sends its own
    Basic header on every request, the client's NTLM stays with the proxy."""
    p = start(make_proxy, env, **{"mapiproxy:http upstream auth": "basic"})
    before = len(lab_log(env))
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    assert ems.ping().code == 0
    p.stop()
    lab = lab_log(env)[before:]
    assert "Basic logon ok user=LAB\\Administrator" in lab and "NTLM logon ok" not in lab
    assert_no_secrets(p.log())


@pytest.mark.parametrize("scheme", ["ntlm", "basic"])
def test_upstream_refuses_the_proxys_password(make_proxy, env, scheme):
    """The upstream's 401 is about the proxy's account: the client gets 502,
    never the upstream's challenge."""
    p = start(make_proxy, env, **{"mapiproxy:password file": env["badpw"],
                                  "mapiproxy:http upstream auth": scheme})
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    r = ems.connect(ALICE, check=False)
    assert r.http.status_code == 502
    assert "WWW-Authenticate" not in r.http.headers
    p.stop()
    log = p.log()
    assert (("refused the proxy's logon as LAB\\Administrator" if scheme == "ntlm" else
             "answered 401 to the proxy's logon as LAB\\Administrator") in log)
    assert "not-the-password" not in log


def test_terminate_needs_its_options(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[global]\nmapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http plain = yes\n"
                    "mapiproxy:http upstream = https://localhost\n"
                    "mapiproxy:http auth = terminate\nmapiproxy:http upstream auth = digest\n")
    out = subprocess.run([os.path.join(ROOT, "build", "mapiproxy"), "--check", "-c", str(conf)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "mapiproxy:credentials file" in text and "dcerpc_mapiproxy:username" in text
    assert "mapiproxy:http upstream auth = \"digest\"" in text


def test_module_chain_behind_termination(make_proxy, env):
    """MAPI/HTTP requests that go through the module chain carry the proxy's
    logon as well: a module answering one ROP in place, the upstream the
    rest, over the proxy's own NTLM connection."""
    p = start(make_proxy, env, **{"dcerpc_mapiproxy:modules": "mpm_roptest",
                                  "mpm_roptest:answer": "0x27:0x8004010F"})
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]
    [answered] = ems.execute(EC.RopBuffer().get_receive_folder(0, "IPM.Note"))
    assert answered["ReturnValue"] == 0x8004010F  # the module's answer
    opened = ems.execute(EC.RopBuffer().open_folder(0, 1, inbox)
                         .get_properties_specific(1, [0x3001001F]))
    assert opened[-1]["Row"][0x3001001F] == "Inbox"  # the upstream's, as the proxy's account
    assert ems.disconnect()["ErrorCode"] == 0
    p.stop()
    log = p.log()
    assert "logged on as LAB\\alice" in log and "type=Execute" in log
    assert_no_secrets(log)


def test_allowed_users_by_group(make_proxy, env, tmp_path):
    """"@group" in allowed users, with the group's members in mapiproxy:groups file."""
    groups = tmp_path / "groups"
    groups.write_text("# group: members\nmapi-users: LAB\\mallory\n")
    os.chmod(groups, 0o600)
    p = start(make_proxy, env, **{"mapiproxy:allowed users": "@mapi-users",
                                  "mapiproxy:groups file": str(groups)})
    ab = MH.NspiHttp(p.base, auth=ntlm("mallory"), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    r = requests.post(p.base + "/mapi/nspi/", data=b"", verify=env["ca"], auth=ntlm("alice"))
    assert r.status_code == 401
    p.stop()
    log = p.log()
    assert "logged on as LAB\\mallory" in log
    assert "logon refused: user=LAB\\alice: not in mapiproxy:allowed users" in log


def test_session_cookies_bound_to_the_user(make_proxy, env):
    """The issue's replay: bob, logged on to the proxy as himself, sends
    alice's MapiContext and MapiSequence cookies.  The lab sees only the
    proxy's account, so the proxy is what tells them apart: bob's requests
    are answered as an unknown cookie is (X-ResponseCode 10, Context Not
    Found) and reach nothing; alice's own second connection (Outlook's
    NotificationWait and PING use one) shares her session."""
    p = start(make_proxy, env, **{"mapiproxy:http basic": "yes"})
    alice = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert alice.connect(ALICE)["ErrorCode"] == 0
    alice2 = MH.EmsmdbHttp(p.base, auth=HTTPBasicAuth("LAB\\alice", CLIENTS["alice"]),
                           verify=env["ca"])
    alice2.http.cookies.update(alice.http.cookies)
    assert alice2.ping().code == 0
    before = lab_log(env)
    for auth in (ntlm("bob"), HTTPBasicAuth("LAB\\bob", CLIENTS["bob"])):
        bob = MH.EmsmdbHttp(p.base, auth=auth, verify=env["ca"])
        bob.http.cookies.update(alice.http.cookies)
        d, _ = bob.execute_raw(EC.RopBuffer().logon(0, ALICE).build([0xFFFFFFFF]), check=False)
        assert d["response"].http.status_code == 200 and d["response"].code == 10
        assert bob.ping(check=False).code == 10
        # the cookie given twice, bob's own name first: still refused
        r = bob.post("PING", check=False, headers={
            "Cookie": "MapiContext=not-issued; MapiContext=" + alice.http.cookies["MapiContext"]})
        assert r.code == 10
    # a cookie the proxy never saw issued (under terminate): unknown as well
    mallory = MH.EmsmdbHttp(p.base, auth=ntlm("bob"), verify=env["ca"])
    mallory.http.cookies.set("MapiContext", "guessed-" + alice.http.cookies["MapiContext"][:8])
    assert mallory.ping(check=False).code == 10
    assert lab_log(env) == before  # none of it reached the lab
    # alice goes on: her session and its sequence were not touched
    [logon] = alice.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    assert alice.disconnect()["ErrorCode"] == 0
    p.stop()
    log = p.log()
    assert "MAPI/HTTP session cookie of LAB\\alice used by LAB\\bob: answered as unknown" in log
    assert_no_secrets(log)


def test_refused_user_names_cannot_forge_log_lines(make_proxy, env):
    """User names of refused Basic and NTLM logons go into the log through
    the filter the RPC relay uses: CR, LF, ESC and spaces become '?'."""
    p = start(make_proxy, env, **{"mapiproxy:http basic": "yes"})
    evil = "ev\r\n2026-01-01T00.00.00Z info FAKE logged on as admin\x1b[2J"  # no ':' (Basic)
    r = requests.post(p.base + "/mapi/emsmdb/", data=b"", verify=env["ca"],
                      auth=HTTPBasicAuth("LAB\\" + evil, "x"))
    assert r.status_code == 401
    r = requests.post(p.base + "/mapi/emsmdb/", data=b"", verify=env["ca"],
                      auth=HttpNtlmAuth("LAB\\" + evil, "x"))
    assert r.status_code == 401
    p.stop()
    log = p.log()
    assert "FAKE" in log and not [x for x in log.splitlines() if "FAKE" in x.split("http #")[0]]
    assert "\x1b" not in log
    assert log.count("user=LAB\\ev??2026-01-01T00.00.00Z?info?FAKE?logged?on?as?admin?[2J: ") == 2


def test_dot_segments_never_carry_the_proxys_basic(make_proxy, env):
    """Issue 11's paths under http upstream auth = basic, sent as they are by
    http.client (requests would normalise them itself): each is decided on
    its normalised form, so none reaches the lab with the proxy's Basic
    header; one inside the allowlist goes in its normalised form."""
    import base64
    import http.client
    import ssl
    p = start(make_proxy, env, **{"mapiproxy:http upstream auth": "basic",
                                  "mapiproxy:http basic": "yes"})
    ctx = ssl.create_default_context(cafile=env["ca"])
    port = int(p.base.rsplit(":", 1)[1])
    cred = base64.b64encode(("LAB\\alice:" + CLIENTS["alice"]).encode()).decode()
    hdrs = {"Authorization": "Basic " + cred, "Content-Type": "application/mapi-http",
            "X-RequestType": "PING", "X-RequestId": "{x}:1", "X-ClientInfo": "{x}:1"}

    def post(path):
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        c.request("POST", path, body=b"", headers=hdrs)
        r = c.getresponse()
        r.read()
        c.close()
        return r

    before = lab_log(env)
    for path in ("/ecp/", "/autodiscover/../ecp/", "/autodiscover/%2e%2e/powershell/",
                 "/mapi/emsmdb/../../owa/", "/AutoDiscover/%2E%2E/ECP/"):
        assert post(path).status == 404, path
    for path in ("/autodiscover/..%2fecp/", "/rpc/..%5cowa/", "/rpc/..\\owa/"):
        assert post(path).status == 400, path
    assert lab_log(env) == before  # nothing reached the lab
    r = post("/ecp/../mapi/%65msmdb/")  # the lab's own answer: PING without a session
    assert r.status == 200 and r.getheader("X-ResponseCode") is not None
    assert "Basic logon ok user=LAB\\Administrator" in lab_log(env)[len(before):]


def test_session_cookies_bound_across_a_reload(make_proxy, env):
    """Who each session cookie was issued to outlives a SIGHUP reload
    (doc/operations.md): alice's session goes on through the new listeners'
    connections, bob still cannot use her cookie."""
    from test_ops import wait_for
    p = start(make_proxy, env)
    alice = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert alice.connect(ALICE)["ErrorCode"] == 0
    alice.http.close()  # her next requests come on connections after the reload
    with open(p.conf, "a") as f:
        f.write("mapiproxy:http header timeout = 31\n")
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()
    [logon] = alice.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    bob = MH.EmsmdbHttp(p.base, auth=ntlm("bob"), verify=env["ca"])
    bob.http.cookies.update(alice.http.cookies)
    assert bob.ping(check=False).code == 10
    assert alice.disconnect()["ErrorCode"] == 0
    alice.http.close()
    assert wait_for(lambda: "reload: configuration 1 retired" in p.log()), p.log()[-3000:]
    p.stop()
    assert "MAPI/HTTP session cookie of LAB\\alice used by LAB\\bob: answered as unknown" \
        in p.log()
