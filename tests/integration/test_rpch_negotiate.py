"""Negotiate (Kerberos, RFC 4559) on RPC over HTTP: a private MIT KDC
(krb5_env.py), the lab's /rpc/rpcproxy.dll accepting Negotiate with MIT's
acceptor through python3-gssapi (tests/lab/lab_mapihttp.py), and a client
that is Impacket's ncacn_http transport whose HTTP Authorization header is
a SPNEGO token built by MIT's initiator through python3-gssapi from alice's
kinit'd credentials cache (Impacket's HTTP layer knows Basic and NTLM only,
so its header function is replaced for the Negotiate case).  None of that is
our code; the proxy sits in between:

- pass-through (mapiproxy:http auth = pass-through): alice's Kerberos logon
  reaches the lab on the IN and the OUT channel (the lab names alice's
  principal on both), NSPI and RFR answers equal a direct client's;
- termination: the proxy accepts alice's ticket with its own keytab and
  logs on to the lab with its own Kerberos identity (mapiproxy:rpc over
  http upstream auth = negotiate): the lab names the proxy's principal;
- a ticket the upstream cannot decrypt gets the upstream's 401."""
import base64
import os
import re
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.http import AUTH_NEGOTIATE, HTTPClientSecurityProvider

import krb5_env
from krb5_env import PROXY_SPN
from test_rpch import ALICE_PW, PROXY_PW, reference, rpch_lab_env, start  # noqa: F401
from test_rpch_passthrough import nspi_answers, rfr_answers
from test_lab_rpch import rpch_dce as lab_rpch_dce

_why = krb5_env.gss_missing()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")

FRONT_SPN = "HTTP/127.0.0.1"      # what a client asks for, given https://127.0.0.1:PORT
LAB_SPN = "HTTP/localhost"        # the proxy's upstream URL is https://localhost:PORT


def merge_keytabs(krb, out, *ins):
    cmds = "".join(f"rkt {k}\n" for k in ins) + f"wkt {out}\nq\n"
    subprocess.run(["ktutil"], input=cmds, text=True, check=True, capture_output=True,
                   env=krb.env())
    os.chmod(out, 0o600)
    return out


@pytest.fixture(scope="module")
def krb(tmp_path_factory):
    yield from krb5_env.http_realm(tmp_path_factory.mktemp("realm"), [FRONT_SPN, LAB_SPN])


@pytest.fixture(scope="module")
def env(krb, tmp_path_factory):
    d = tmp_path_factory.mktemp("rpch-neg")
    lab_kt = merge_keytabs(krb, str(d / "lab.keytab"), krb.keytab("upstream"), krb.http_keytab)
    yield from rpch_lab_env(str(d), "--keytab", lab_kt, "--http-auth", "ntlm,basic,negotiate")


@pytest.fixture
def negotiate_client(monkeypatch):
    """Impacket's HTTP security provider with a Negotiate case: a SPNEGO token
    from MIT's initiator (python3-gssapi, alice's ccache) for HTTP@<host of
    the RPC proxy URL>, a fresh context per channel; the tokens are kept."""
    import gssapi
    orig = HTTPClientSecurityProvider.get_auth_headers

    class Sent(list):
        target = None    # a service name instead of HTTP@<host>
    sent = Sent()

    def get_auth_headers(self, http_obj, method, path, headers):
        if self.get_auth_type() != AUTH_NEGOTIATE:
            return orig(self, http_obj, method, path, headers)
        host = urlsplit(self._rpcProxyUrl.geturl()).hostname
        ctx = gssapi.SecurityContext(name=gssapi.Name(sent.target or f"HTTP@{host}",
                                                      gssapi.NameType.hostbased_service),
                                     mech=gssapi.Mechanism.from_sasl_name("SPNEGO"),
                                     usage="initiate")
        tok = ctx.step()
        sent.append(tok)
        return {"Authorization": "Negotiate " + base64.b64encode(tok).decode()}, None

    monkeypatch.setattr(HTTPClientSecurityProvider, "get_auth_headers", get_auth_headers)
    return sent


def neg_dce(url, port, iface):
    return lab_rpch_dce(url, port, iface, AUTH_NEGOTIATE, "alice", ALICE_PW)


def lab_since(env, before):
    with open(env["lab_log"]) as f:
        return f.read()[before:]


def lab_mark(env):
    with open(env["lab_log"]) as f:
        return len(f.read())


def channels(lab):
    return re.findall(r"rpch: (IN|OUT) channel \S+ user=(\S+) length", lab)


def test_lab_accepts_negotiate_directly(env, negotiate_client, reference):  # noqa: F811
    """The lab's acceptor with MIT's initiator, no proxy: the reference for
    what follows."""
    before = lab_mark(env)
    d = neg_dce(f"https://localhost:{env['ports']['rpch']}/rpc/rpcproxy.dll", 6004,
                nspi.MSRPC_UUID_NSPI)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    lab = lab_since(env, before)
    assert channels(lab) and all(u == "alice@LAB.EXAMPLE" for _, u in channels(lab)), lab
    assert len(negotiate_client) == 2


def pass_opts(env):
    return {"mapiproxy:http auth": "pass-through",
            "mapiproxy:rpc over http upstream": f"https://localhost:{env['ports']['rpch']}",
            "mapiproxy:rpc over http upstream server": "EXLAB01"}


def nspi_rfr_rounds(p, env, before, reference):
    """Three NSPI rounds and RFR over Negotiate through proxy p, answers as
    direct; then the proxy stopped: (its log, the lab's log since before,
    the lab's channel lines)."""
    try:
        d = neg_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI)
        for _ in range(3):
            assert nspi_answers(d) == reference[1]
        d.disconnect()
        d = neg_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF)
        assert rfr_answers(d) == reference[0]
        d.disconnect()
    except BaseException:
        print(p.log()[-4000:])
        raise
    p.stop()
    lab = lab_since(env, before)
    print(channels(lab))
    return p.log(), lab, channels(lab)


def test_kerberos_logon_passes_through(make_proxy, env, negotiate_client, reference):  # noqa: F811
    before = lab_mark(env)
    p = start(make_proxy, env, **pass_opts(env))
    log, lab, chans = nspi_rfr_rounds(p, env, before, reference)
    # two virtual connections, each an IN and an OUT channel, all alice's ticket
    assert sorted(c for c, _ in chans) == ["IN", "IN", "OUT", "OUT"], chans
    assert all(u == "alice@LAB.EXAMPLE" for _, u in chans), chans
    assert lab.count("Negotiate (Kerberos) logon ok user=alice@LAB.EXAMPLE") == 4
    assert len(negotiate_client) == 4
    for tok in negotiate_client:   # no token, not even a prefix of one, in the log
        assert base64.b64encode(tok).decode()[:24] not in log
    assert ALICE_PW not in log and PROXY_PW not in log


def test_wrong_ticket_passes_through_to_the_upstreams_401(make_proxy, env, negotiate_client):
    """A ticket the lab cannot decrypt (for host@mapiproxy.lab.example, not in
    the lab's keytab) in pass-through: the channel request goes to the lab
    at once (Expect: 100-continue) and its 401 is the client's answer."""
    from impacket.dcerpc.v5.rpch import RPCProxyClientException
    negotiate_client.target = "host@mapiproxy.lab.example"
    before = lab_mark(env)
    p = start(make_proxy, env, **pass_opts(env))
    with pytest.raises(RPCProxyClientException) as ei:
        neg_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI)
    p.stop()
    print(ei.value)
    assert "401" in str(ei.value)
    assert re.search(r'the upstream answered the channel request "HTTP/1.[01] 401', p.log())
    assert "Negotiate refused" in lab_since(env, before)
    assert "virtual connection open" not in p.log()


def front_keytab(krb, tmp_path):
    """The proxy's keytab: its own principal and the front's HTTP one."""
    return merge_keytabs(krb, str(tmp_path / "proxy.keytab"), krb.keytab("proxy"),
                         krb.http_keytab)


def neg_up_opts(krb, env):
    """The proxy logs on to the lab's RPC proxy with its own Kerberos identity."""
    return {"mapiproxy:rpc over http upstream": f"https://localhost:{env['ports']['rpch']}",
            "mapiproxy:rpc over http upstream server": "EXLAB01",
            "mapiproxy:rpc over http upstream auth": "negotiate",
            "mapiproxy:upstream keytab": krb.keytab("proxy"),
            "mapiproxy:upstream principal": PROXY_SPN}


def test_proxy_terminates_negotiate_and_logs_on_as_itself(make_proxy, env, krb, tmp_path,
                                                          negotiate_client, reference):  # noqa: F811
    """alice's ticket for HTTP/127.0.0.1 is checked by the proxy (its keytab,
    mapiproxy:http negotiate); the proxy's channels toward the lab carry its
    own ticket for HTTP/localhost: the lab names the proxy's principal on
    them, never alice.  The RPC-level logon is the proxy's as before."""
    before = lab_mark(env)
    over = neg_up_opts(krb, env)
    over.update({"mapiproxy:http negotiate": "yes",
                 "mapiproxy:keytab": front_keytab(krb, tmp_path)})
    p = start(make_proxy, env, **over)
    log, lab, chans = nspi_rfr_rounds(p, env, before, reference)
    proxy_princ = f"{PROXY_SPN}@LAB.EXAMPLE"
    assert sorted(c for c, _ in chans) == ["IN", "IN", "OUT", "OUT"], chans
    assert all(u == proxy_princ for _, u in chans), chans
    assert "alice" not in " ".join(u for _, u in chans)
    assert re.search(r"logged on .*alice@LAB\.EXAMPLE .*Negotiate", log), log[-3000:]
    assert "HTTP Negotiate (Kerberos)" in log
    for tok in negotiate_client:
        assert base64.b64encode(tok).decode()[:24] not in log
    assert ALICE_PW not in log and PROXY_PW not in log


def test_front_refuses_a_ticket_it_cannot_read(make_proxy, env, krb, tmp_path):
    """A ticket for another service (HTTP/localhost, whose key the proxy's
    keytab lacks) gets 401 with WWW-Authenticate: Negotiate, seen by curl
    (--negotiate, alice's ccache), and a log line; no secret in the log."""
    kt = merge_keytabs(krb, str(tmp_path / "proxy-only.keytab"), krb.keytab("proxy"))
    over = neg_up_opts(krb, env)
    over.update({"mapiproxy:http negotiate": "yes", "mapiproxy:keytab": kt})
    p = start(make_proxy, env, **over)
    r = subprocess.run(["curl", "-sk", "--negotiate", "-u", ":", "-o", "/dev/null", "-D", "-",
                        "-X", "RPC_IN_DATA", "-H", "Content-Length: 0",
                        p.url + "?EXLAB01:6004"],
                       capture_output=True, text=True, timeout=30, env=krb.env())
    p.stop()
    print(r.stdout, r.stderr)
    assert r.stdout.startswith("HTTP/1.1 401"), r.stdout
    assert re.search(r"(?im)^WWW-Authenticate: Negotiate\s*$", r.stdout), r.stdout
    log = p.log()
    assert re.search(r"Negotiate logon refused", log), log[-3000:]


def test_upstream_refuses_the_proxys_ticket(make_proxy, env, krb, tmp_path, reference):  # noqa: F811
    """The proxy's ticket names a service the lab has no key for
    (rpc over http upstream spn = host/mapiproxy...): the lab's 401 ends that
    virtual connection with the status line in the log; the next proxy with
    the right target goes on (client: Basic to the proxy)."""
    from impacket.http import AUTH_BASIC
    from test_rpch import rpch_dce
    over = neg_up_opts(krb, env)
    over["mapiproxy:rpc over http upstream spn"] = PROXY_SPN
    p = start(make_proxy, env, **over)
    import threading

    def attempt():
        try:
            d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
            nspi_answers(d)
        except Exception:
            pass
    threading.Thread(target=attempt, daemon=True).start()
    want = re.compile(r"rpch upstream .*: virtual connection closed: .*answered \"HTTP/1.1 401")
    deadline = time.time() + 15
    while time.time() < deadline and not want.search(p.log()):
        time.sleep(0.2)
    p.stop()
    assert want.search(p.log()), p.log()[-3000:]
    p = start(make_proxy, env, **neg_up_opts(krb, env))
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()


def test_negotiate_options_checked(tmp_path):
    """--check: upstream auth = negotiate without the proxy's Kerberos
    identity, and http negotiate without a keytab or without termination,
    are refused naming the option; with them, --check passes."""
    from conftest import PROXY_BIN
    kt = tmp_path / "k.keytab"
    kt.write_bytes(b"\x05\x02")   # a keytab file's header: --check reads the path only
    base = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
            "mapiproxy:rpc over http upstream = https://localhost"]
    cases = {
        "up": (["mapiproxy:rpc over http upstream auth = negotiate"],
               "mapiproxy:upstream keytab"),
        "front": (["mapiproxy:http negotiate = yes"], "mapiproxy:http negotiate"),
        "ok": (["mapiproxy:rpc over http upstream auth = negotiate",
                f"mapiproxy:upstream keytab = {kt}",
                f"mapiproxy:upstream principal = {PROXY_SPN}"], None),
    }
    for name, (lines, want) in cases.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text("\n".join(base + lines) + "\n")
        r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True,
                           text=True, timeout=30)
        out = r.stdout + r.stderr
        if want is None:
            assert r.returncode == 0, (name, out)
        else:
            assert r.returncode != 0 and want in out, (name, out)


def mutual_ctx():
    """MIT's SPNEGO initiator for HTTP@127.0.0.1 asking for mutual
    authentication, and its first token (base64)."""
    import gssapi
    ctx = gssapi.SecurityContext(name=gssapi.Name("HTTP@127.0.0.1",
                                                  gssapi.NameType.hostbased_service),
                                 mech=gssapi.Mechanism.from_sasl_name("SPNEGO"),
                                 flags=gssapi.RequirementFlag.mutual_authentication,
                                 usage="initiate")
    return ctx, base64.b64encode(ctx.step()).decode()


def client_tls():
    import ssl
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls


def test_out_channel_answer_carries_the_mutual_token(make_proxy, env, krb, tmp_path):
    """Terminated Negotiate: the proxy's own 200 to RPC_OUT_DATA carries
    `WWW-Authenticate: Negotiate <token>` (RFC 4559 5); MIT's initiator
    (python3-gssapi) takes it and its context completes: mutual
    authentication of the proxy to the client."""
    import socket
    from impacket.dcerpc.v5.rpch import hCONN_A1
    over = neg_up_opts(krb, env)
    over.update({"mapiproxy:http negotiate": "yes",
                 "mapiproxy:keytab": front_keytab(krb, tmp_path)})
    p = start(make_proxy, env, **over)
    ctx, tok = mutual_ctx()
    tls = client_tls()
    s = tls.wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=10))
    a1 = hCONN_A1(receiveWindowSize=65536)
    s.sendall(b"RPC_OUT_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Negotiate " + tok.encode() +
              b"\r\nContent-Length: 76\r\n\r\n" + a1)
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    s.close()
    p.stop()
    head = head.split(b"\r\n\r\n")[0].decode()
    print(head)
    assert head.startswith("HTTP/1.1 200")
    m = re.search(r"(?im)^WWW-Authenticate: Negotiate (\S+)\r?$", head)
    assert m, head
    assert not ctx.complete
    ctx.step(base64.b64decode(m.group(1)))
    assert ctx.complete
    assert m.group(1)[:20] not in p.log() and tok[:20] not in p.log()


def test_upstream_negotiate_with_recycling(make_proxy, env, krb, reference):  # noqa: F811
    """upstream auth = negotiate with a 4 KiB upstream IN channel: every
    successor channel (IN_R1) gets a fresh ticket authenticator, made on
    the KDC worker; the lab names the proxy's principal on each."""
    from impacket.http import AUTH_BASIC
    from test_rpch import rpch_dce
    before = lab_mark(env)
    over = neg_up_opts(krb, env)
    over["mapiproxy:rpc over http upstream in channel length"] = "4K"
    p = start(make_proxy, env, **over)
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(14):
        assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    chans = channels(lab_since(env, before))
    ins = len(re.findall(r"IN channel recycled", log))
    print(ins, chans)
    assert ins >= 2
    assert len(chans) >= 2 + ins and all(u == f"{PROXY_SPN}@LAB.EXAMPLE" for _, u in chans)


def test_mapihttp_negotiate_passes_through(make_proxy, env, krb):
    """MAPI/HTTP with http auth = pass-through: requests-kerberos's Kerberos
    logon (Debian's python3-requests-kerberos) reaches the lab's MAPI/HTTP
    acceptor over the client's pinned upstream connection; the lab logs
    alice's principal, the proxy's account is not used."""
    import sys
    requests_kerberos = pytest.importorskip("requests_kerberos")
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lab"))
    import mapihttp_client as MH
    before = lab_mark(env)
    p = start(make_proxy, env, **{"mapiproxy:http auth": "pass-through",
                                  "mapiproxy:rpc over http": None})
    auth = requests_kerberos.HTTPKerberosAuth(
        mutual_authentication=requests_kerberos.OPTIONAL)
    ab = MH.NspiHttp(f"https://127.0.0.1:{p.http_port}", auth=auth, verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    p.stop()
    lab = lab_since(env, before)
    assert "Negotiate (Kerberos) logon ok user=alice@LAB.EXAMPLE" in lab, lab[-2000:]
    assert "logon ok user=LAB\\Administrator" not in lab
    assert PROXY_PW not in p.log()


def test_moved_out_channel_still_carries_the_mutual_token(make_proxy, env, krb, tmp_path):
    """mapiproxy:workers = 2, Negotiate terminated on the front: an IN
    channel (CONN/B1) names a virtual connection on the worker that accepted
    it; the OUT channel of that virtual connection (CONN/A1, a new TLS
    connection with its own ticket) accepted by the other worker is handed
    over with the acceptor's mutual token, and its 200 from the new worker
    still carries `WWW-Authenticate: Negotiate <token>` that MIT's initiator
    (python3-gssapi) completes with.  The kernel picks the accepting worker:
    virtual connections are tried until one OUT channel was moved."""
    import socket
    from impacket.dcerpc.v5.rpch import hCONN_A1, hCONN_B1
    over = neg_up_opts(krb, env)
    over.update({"mapiproxy:http negotiate": "yes", "mapiproxy:workers": "2",
                 "mapiproxy:keytab": front_keytab(krb, tmp_path)})
    p = start(make_proxy, env, **over)
    tls = client_tls()
    moved_re = re.compile(r"RPC_OUT_DATA: its virtual connection is on worker \d: handed over")

    def channel(method, body, length):
        ctx, tok = mutual_ctx()
        s = tls.wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=10))
        s.sendall(method + b" /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Authorization: Negotiate " + tok.encode() +
                  b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body)
        return s, ctx, tok

    socks, found = [], None
    try:
        for _ in range(16):
            vc = os.urandom(16)
            s_in, _ctx, _t = channel(b"RPC_IN_DATA", hCONN_B1(vc, os.urandom(16), os.urandom(16)),
                                     1073741824)
            socks.append(s_in)
            time.sleep(0.4)  # its first RTS PDU has named the virtual connection's worker
            before = len(moved_re.findall(p.log()))
            s_out, ctx, tok = channel(b"RPC_OUT_DATA", hCONN_A1(vc, os.urandom(16), 65536), 76)
            socks.append(s_out)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s_out.recv(4096)
                assert chunk, head
                head += chunk
            if len(moved_re.findall(p.log())) > before:
                found = (head.split(b"\r\n\r\n")[0].decode(), ctx, tok)
                break
    finally:
        for s in socks:
            s.close()
    p.stop()
    log = p.log()
    assert found, log[-3000:]
    head, ctx, tok = found
    print(head)
    assert "channel adopted from worker" in log
    assert head.startswith("HTTP/1.1 200"), head
    m = re.search(r"(?im)^WWW-Authenticate: Negotiate (\S+)\r?$", head)
    assert m, head
    assert not ctx.complete
    ctx.step(base64.b64decode(m.group(1)))
    assert ctx.complete
    assert m.group(1)[:20] not in log and tok[:20] not in log


def test_channel_request_after_another_logon_on_one_connection(make_proxy, env, krb, tmp_path):
    """One kept-alive connection, two Negotiate exchanges of MIT's
    initiator (python3-gssapi), each asking for mutual authentication: a
    MAPI/HTTP request the proxy answers itself (an Execute with a session
    cookie it never saw issued: 200, X-ResponseCode 10), then an
    RPC_OUT_DATA channel request.  Each 200 carries the token of its own
    exchange and each context completes with it (RFC 4559 5): the first
    success does not use up the connection's mutual authentication."""
    import socket
    from impacket.dcerpc.v5.rpch import hCONN_A1
    over = neg_up_opts(krb, env)
    over.update({"mapiproxy:http negotiate": "yes",
                 "mapiproxy:keytab": front_keytab(krb, tmp_path)})
    p = start(make_proxy, env, **over)
    s = client_tls().wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=10))

    def head_of(buf):
        while b"\r\n\r\n" not in buf:
            more = s.recv(4096)
            assert more, buf
            buf += more
        head, rest = buf.split(b"\r\n\r\n", 1)
        return head.decode(), rest

    def token(head):
        m = re.search(r"(?im)^WWW-Authenticate: Negotiate (\S+)\r?$", head)
        assert m, head
        return base64.b64decode(m.group(1))

    ctx1, tok1 = mutual_ctx()
    s.sendall(b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-RequestType: Execute\r\n"
              b"X-RequestId: {1}:1\r\nCookie: MapiContext=never-issued\r\n"
              b"Content-Type: application/mapi-http\r\nAuthorization: Negotiate " +
              tok1.encode() + b"\r\nContent-Length: 0\r\n\r\n")
    head1, rest = head_of(b"")
    length = int(re.search(r"(?im)^Content-Length: (\d+)", head1).group(1))
    while len(rest) < length:
        rest += s.recv(4096)
    assert head1.startswith("HTTP/1.1 200") and "X-ResponseCode: 10" in head1, head1
    ctx1.step(token(head1))
    assert ctx1.complete
    ctx2, tok2 = mutual_ctx()
    a1 = hCONN_A1(receiveWindowSize=65536)
    s.sendall(b"RPC_OUT_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Negotiate " + tok2.encode() +
              b"\r\nContent-Length: 76\r\n\r\n" + a1)
    head2, _ = head_of(rest[length:])
    s.close()
    p.stop()
    print(head1, "\n", head2)
    assert head2.startswith("HTTP/1.1 200"), head2
    t2 = token(head2)
    assert t2 != token(head1)
    assert not ctx2.complete
    ctx2.step(t2)
    assert ctx2.complete
    log = p.log()
    conns = re.findall(r"http #(\d+) \S+ (?:POST /mapi/emsmdb/ type=Execute|RPC_OUT_DATA \S+: handed)", log)
    assert len(conns) == 2 and len(set(conns)) == 1, log[-3000:]  # both on one connection
    assert tok1[:20] not in log and tok2[:20] not in log
