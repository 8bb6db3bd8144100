"""Kerberos through the relay (src/relay/relay.c + src/auth/gss.c): clients
authenticate to the proxy with Kerberos inside SPNEGO (Impacket's DCE/RPC
client, RPC_C_AUTHN_GSS_NEGOTIATE, its own AP-REQ/AP-REP and GSS wrap), and
the proxy authenticates to the lab upstream with Kerberos (auth type 16,
DCE style), where MIT's own acceptor (python3-gssapi, tests/lab/labauth.py
KerberosServerContext) checks the ticket, unseals with gss_unwrap_iov and
logs the principal it saw:

  (a) specified credentials: the proxy's own principal (its keytab);
  (b) mapiproxy:delegation = s4u: alice herself (S4U2Self + S4U2Proxy on
      the LDAP-backed realm of krb5_env.py), for Kerberos and NTLM clients.

Also: a ticket for another service is refused at the proxy and nothing
reaches the upstream; mapiproxy:pass-through interfaces keeps a client's
own authentication for one interface while another is terminated."""
import os
import re

import pytest

import krb5_env
from krb5_env import Krb5Env, PROXY_SPN, UPSTREAM_SPN, UPSTREAM_HOST_SPN
from conftest import Lab

INTEG, PRIV = 5, 6
ALICE_NTLM_PW = "Alice-Ntlm-1"

_why = None
if not krb5_env.available():
    _why = "MIT Kerberos not installed (scripts/install-deps.sh)"
else:
    try:
        import gssapi.raw  # noqa: F401
    except ImportError:
        _why = "python3-gssapi not installed (scripts/install-deps.sh)"
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")


@pytest.fixture(scope="module")
def krb(tmp_path_factory):
    backend = "ldap" if krb5_env.available("ldap") else "db2"
    with Krb5Env(tmp_path_factory.mktemp("realm"), backend=backend) as k:
        k.kinit("alice")
        k.kvno(PROXY_SPN)          # Impacket takes its service ticket from the ccache
        k.kvno(UPSTREAM_HOST_SPN)  # a ticket for another service, for the refusal test
        k.apply()                  # the lab and the proxy inherit KRB5_CONFIG
        try:
            yield k
        finally:
            k.restore()


@pytest.fixture
def lab(krb, tmp_path):
    users = tmp_path / "lab-users"
    users.write_text(f"alice:LAB:{ALICE_NTLM_PW}\n")
    l = Lab(tmp_path, extra=["--keytab", krb.keytab("upstream"), "--users", str(users),
                             "--require-auth", "integrity"])
    yield l
    l.stop()


def ntlm_users(tmp_path):
    from impacket.ntlm import compute_nthash
    creds = tmp_path / "users"
    creds.write_text(f"alice:LAB:{compute_nthash(ALICE_NTLM_PW).hex()}\n")
    os.chmod(creds, 0o600)
    return str(creds)


def proxy_opts(krb, **kw):
    o = {"mapiproxy:keytab": krb.keytab("proxy"),
         "mapiproxy:service principal": PROXY_SPN,
         "mapiproxy:upstream spn": UPSTREAM_SPN,
         "realm": "lab.example",
         "netbios name": "MAPIPROXY"}
    o.update(kw)
    return o


def specified(krb):
    return proxy_opts(krb, **{"mapiproxy:upstream keytab": krb.keytab("proxy"),
                              "mapiproxy:upstream principal": PROXY_SPN})


def kerberos_dce(port, level, monkeypatch, host="mapiproxy.lab.example"):
    from impacket.dcerpc.v5 import transport, rpcrt
    import impacket.krb5.gssapi as igss
    if level == INTEG:
        # Impacket 0.10's AES GSS_GetMIC adds chr(pad) * pad (a str) to bytes;
        # give that one line bytes (see test_krb5_gss.py).
        monkeypatch.setattr(igss, "chr", lambda n: bytes([n]), raising=False)
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{host}[{port}]")
    t.setRemoteHost("127.0.0.1")
    t.set_credentials("alice", "", "LAB.EXAMPLE")
    t.set_kerberos(True, kdcHost="127.0.0.1")
    d = t.get_dce_rpc()
    d.set_auth_type(rpcrt.RPC_C_AUTHN_GSS_NEGOTIATE)
    d.set_auth_level(level)
    d.connect()
    return d


def ntlm_dce(port, level, password=ALICE_NTLM_PW):
    from impacket.dcerpc.v5 import transport
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    t.set_credentials("alice", password, "LAB")
    d = t.get_dce_rpc()
    d.set_auth_level(level)
    d.connect()
    return d


def nspi_round_trip(d):
    from impacket.dcerpc.v5 import nspi
    d.bind(nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(d)["contextHandle"]
    assert nspi.hNspiUnbind(d, h)["ErrorCode"] == 1
    d.disconnect()


def lab_logons(lab, listener="nspi"):
    return re.findall(listener + r": auth: (\w+) logon ok user=(\S+) level=(\w+)", lab.log())


@pytest.mark.parametrize("level", [INTEG, PRIV])
def test_kerberos_client_upstream_sees_the_proxy(krb, lab, make_proxy, monkeypatch, level):
    proxy = make_proxy(upstream_epm_port=lab.epm_port, extra=specified(krb))
    nspi_round_trip(kerberos_dce(proxy.rpc_port, level, monkeypatch))
    log = proxy.log()
    lv = {INTEG: "integrity", PRIV: "privacy"}[level]
    assert f"authenticated alice@{krb.realm} (SPNEGO/Kerberos, {lv})" in log, log
    # the upstream's MIT acceptor saw the proxy's principal, at privacy (the default)
    assert ("Kerberos", f"{PROXY_SPN}@{krb.realm}", "privacy") in lab_logons(lab), lab.log()
    assert "bad signature" not in lab.log()
    assert "NspiUnbind" in log or "exchange_nsp" in log


def test_s4u_upstream_sees_alice(krb, lab, make_proxy, monkeypatch, tmp_path):
    if not krb.s4u2proxy_supported:
        pytest.skip("S4U2Proxy needs the LDAP back end (slapd, ldap-utils, krb5-kdc-ldap)")
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=proxy_opts(krb, **{"mapiproxy:delegation": "s4u",
                                                "mapiproxy:credentials file": ntlm_users(tmp_path),
                                                "dcerpc_mapiproxy:domain": "LAB"}))
    nspi_round_trip(kerberos_dce(proxy.rpc_port, PRIV, monkeypatch))
    assert ("Kerberos", f"alice@{krb.realm}", "privacy") in lab_logons(lab), lab.log()
    # an NTLM client is impersonated by name: alice@REALM
    n = len(lab_logons(lab))
    nspi_round_trip(ntlm_dce(proxy.rpc_port, PRIV))
    assert ("Kerberos", f"alice@{krb.realm}", "privacy") in lab_logons(lab)[n:], lab.log()
    log = proxy.log()
    assert "authenticated LAB\\alice (NTLM, privacy)" in log
    kdc = open(krb.kdc_log).read()
    assert "CONSTRAINED-DELEGATION" in kdc and f"s4u-client=alice@{krb.realm}" in kdc


def test_foreign_ticket_is_denied_and_nothing_goes_upstream(krb, lab, make_proxy, monkeypatch):
    from impacket.dcerpc.v5 import nspi
    proxy = make_proxy(upstream_epm_port=lab.epm_port, extra=specified(krb))
    # Impacket asks for host/<remote name>: a ticket for the upstream's host
    # service, which the proxy's keytab cannot decrypt.
    d = kerberos_dce(proxy.rpc_port, PRIV, monkeypatch, host="exlab01.lab.example")
    with pytest.raises(Exception) as e:
        d.bind(nspi.MSRPC_UUID_NSPI)
    log = proxy.log()
    assert "Kerberos authentication failed" in log, log
    assert re.search(r"conn 127\.0\.0\.1:\d+: bind refused", log), log
    assert "connecting upstream" not in log
    assert "nspi: connection from" not in lab.log()
    assert "bind" in str(e.value).lower() or "reject" in str(e.value).lower() or str(e.value)


def test_allowed_users_applies_to_kerberos_principals(krb, lab, make_proxy, monkeypatch):
    from impacket.dcerpc.v5 import nspi
    from impacket.dcerpc.v5.rpcrt import DCERPCException
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=dict(specified(krb), **{"mapiproxy:allowed users": "bob"}))
    d = kerberos_dce(proxy.rpc_port, PRIV, monkeypatch)
    with pytest.raises(DCERPCException):
        d.bind(nspi.MSRPC_UUID_NSPI)
        nspi.hNspiBind(d)
    log = proxy.log()
    assert f"authentication of alice@{krb.realm} failed: not in mapiproxy:allowed users" in log
    assert "connecting upstream" not in log


def test_pass_through_interface_keeps_the_clients_own_logon(krb, lab, make_proxy, tmp_path):
    import emsmdb_client as EC
    from impacket.dcerpc.v5 import nspi
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=dict(specified(krb), **{
                           "mapiproxy:credentials file": ntlm_users(tmp_path),
                           "mapiproxy:pass-through interfaces": "exchange_nsp"}))
    # NSPI: relayed as is, the lab checks alice's own NTLM logon
    nspi_round_trip(ntlm_dce(proxy.rpc_port, PRIV))
    assert ("NTLM", "LAB\\alice", "privacy") in lab_logons(lab), lab.log()
    assert "authenticated LAB\\alice" not in proxy.log()
    # EMSMDB: terminated by the proxy, the lab sees the proxy's principal
    d = ntlm_dce(proxy.rpc_port, PRIV)
    d.bind(EC.N.MSRPC_UUID_EMSMDB)
    EC.ec_dummy_rpc(d)
    d.disconnect()
    assert "authenticated LAB\\alice (NTLM, privacy)" in proxy.log()
    assert ("Kerberos", f"{PROXY_SPN}@{krb.realm}", "privacy") in lab_logons(lab, "emsmdb"), \
        lab.log()
