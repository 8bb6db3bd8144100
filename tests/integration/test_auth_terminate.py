"""Specified credentials: clients authenticate to the proxy with NTLM (its
credentials file holds NT hashes), and the proxy authenticates to a real
NTLM server, Samba's samba-dcerpcd, as another account at packet privacy.
Impacket is the client, at connect, integrity and privacy levels."""
import hashlib
import os
import re

import pytest
from impacket.dcerpc.v5 import epm, samr
from impacket.dcerpc.v5.rpcrt import (DCERPCException, RPC_C_AUTHN_LEVEL_CONNECT,
                                      RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                      RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
from impacket.ntlm import compute_nthash

import samba_env
import tshark_util
from test_samba_direct import LSARPC_IF, port_of

_reason = samba_env.samba_available()
if _reason:
    pytest.skip("samba-dcerpcd unavailable: %s" % _reason, allow_module_level=True)

ALICE, ALICE_PW = "alice", "Alice-Secret-1"


@pytest.fixture(scope="module")
def samba(tmp_path_factory):
    env = samba_env.SambaDcerpcd(tmp_path_factory.mktemp("samba"))
    with env:
        yield env


@pytest.fixture
def proxy(samba, make_proxy, tmp_path):
    creds = tmp_path / "users"
    creds.write_text(f"# user:domain:NT hash\n{ALICE}:LAB:{compute_nthash(ALICE_PW).hex()}\n")
    os.chmod(creds, 0o600)
    pwfile = tmp_path / "upstream-password"
    pwfile.write_text(samba.password + "\n")
    os.chmod(pwfile, 0o600)
    return make_proxy(upstream_epm_port=samba.epm_port,
                      interfaces=["epmapper", "lsarpc", "samr"],
                      extra={"dcerpc_mapiproxy:username": samba.user,
                             "dcerpc_mapiproxy:domain": samba.domain,
                             "mapiproxy:password file": str(pwfile),
                             "mapiproxy:credentials file": str(creds),
                             # the connect level below is tested too (default: integrity)
                             "mapiproxy:min client auth level": "connect",
                             "netbios name": "MAPIPROXY"})


class ViaProxy:
    def __init__(self, proxy, user=ALICE, password=ALICE_PW):
        self.host, self.epm_port = proxy.host, proxy.rpc_port
        self.user, self.password, self.domain = user, password, "LAB"

    def binding(self, port=None):
        return f"ncacn_ip_tcp:{self.host}[{port or self.epm_port}]"


def ept_map(via, level):
    from test_samba_direct import connect
    dce = connect(via, via.epm_port, level)
    try:
        return epm.hept_map(via.host, LSARPC_IF, protocol="ncacn_ip_tcp", dce=dce)
    finally:
        dce.disconnect()


@pytest.mark.parametrize("level", [RPC_C_AUTHN_LEVEL_PKT_PRIVACY, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                   RPC_C_AUTHN_LEVEL_CONNECT])
def test_client_levels_reach_samba_as_the_configured_account(samba, proxy, level):
    binding = ept_map(ViaProxy(proxy), level)
    assert port_of(binding) == samba.lsarpc_port
    log = proxy.log()
    assert re.search(r"authenticated LAB\\alice \(NTLM, (privacy|integrity|connect)\)", log), log
    assert "epmapper ept_map(3)" in log


def test_samr_calls_at_privacy(samba, proxy):
    from test_samba_direct import connect
    via = ViaProxy(proxy)
    dce = connect(via, proxy.rpc_port, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dce.bind(samr.MSRPC_UUID_SAMR)
    h = samr.hSamrConnect2(dce)["ServerHandle"]
    doms = [d["Name"] for d in samr.hSamrEnumerateDomainsInSamServer(dce, h)["Buffer"]["Buffer"]]
    assert samba.domain.upper() in [d.upper() for d in doms], doms
    samr.hSamrCloseHandle(dce, h)
    dce.disconnect()


def test_wrong_password_is_denied_and_nothing_goes_upstream(samba, proxy):
    with pytest.raises(DCERPCException) as e:
        ept_map(ViaProxy(proxy, password="Wr0ng-Pa55"), RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    log = proxy.log()
    assert "authentication of LAB\\alice failed" in log
    assert "connecting upstream" not in log  # nothing was sent upstream
    assert ALICE_PW not in log and "Wr0ng-Pa55" not in log


def test_unknown_user_and_no_auth_are_refused(samba, proxy):
    with pytest.raises(DCERPCException):
        ept_map(ViaProxy(proxy, user="mallory", password="x"), RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    from impacket.dcerpc.v5 import transport
    d = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{proxy.host}[{proxy.rpc_port}]").get_dce_rpc()
    d.connect()
    # as Windows does (issue 12): the bind is accepted, the call is denied
    d.bind(epm.MSRPC_UUID_PORTMAP)
    with pytest.raises(DCERPCException) as e:
        epm.hept_map(proxy.host, LSARPC_IF, protocol="ncacn_ip_tcp", dce=d)
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    assert "the client sent no authentication" in proxy.log()


def test_tshark_decrypts_each_leg_with_its_own_password(samba, proxy, tmp_path):
    if tshark_util.tshark_available():
        pytest.skip(tshark_util.tshark_available())
    with tshark_util.Capture([proxy.rpc_port, samba.epm_port], tmpdir=tmp_path) as cap:
        ept_map(ViaProxy(proxy), RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    # port 135 is Samba's whoever talks to it: only this test's connections
    # (the client's to the proxy, the proxy's to Samba) are judged
    ups = tshark_util.proxy_upstream_pairs(proxy.log())
    assert [u for u in ups if u[1] == samba.epm_port], proxy.log()
    own = tshark_util.only_conversations(cap.path, ports=[proxy.rpc_port], pairs=ups)
    legs = {}
    for pw, port in ((ALICE_PW, proxy.rpc_port), (samba.password, samba.epm_port)):
        pdus = tshark_util.dissect(own, decode_as_ports=[proxy.rpc_port], nt_password=pw)
        leg = [p for p in pdus if port in (p.src_port, p.dst_port)]
        maps = [p for p in tshark_util.calls(leg, interface="epm", opnum=3)
                if p.auth_level_name == "privacy"]
        assert maps and all(p.decrypted for p in maps), (port, leg)
        legs[port] = maps
    assert legs[proxy.rpc_port] and legs[samba.epm_port]


# ---- the lab as an NTLM upstream that requires other credentials ----------

from conftest import LAB_SVC_ACCT as PROXY_ACCT, LAB_SVC_PW as PROXY_PW  # noqa: E402
from impacket.dcerpc.v5 import nspi, oxabref  # noqa: E402
from rpcutil import dce_connect  # noqa: E402


@pytest.fixture
def lab_proxy(auth_lab, make_proxy, tmp_path):
    creds = tmp_path / "clients"
    creds.write_text(f"{ALICE}:LAB:{compute_nthash(ALICE_PW).hex()}\n")
    os.chmod(creds, 0o600)
    return make_proxy(upstream_epm_port=auth_lab.epm_port,
                      extra={"dcerpc_mapiproxy:username": PROXY_ACCT,
                             "dcerpc_mapiproxy:domain": "LAB",
                             "dcerpc_mapiproxy:password": PROXY_PW,
                             "mapiproxy:credentials file": str(creds),
                             # the connect level below is tested too (default: integrity)
                             "mapiproxy:min client auth level": "connect"})


@pytest.mark.parametrize("level", [RPC_C_AUTHN_LEVEL_PKT_PRIVACY, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                   RPC_C_AUTHN_LEVEL_CONNECT])
def test_lab_requires_other_credentials(auth_lab, lab_proxy, level):
    from test_relay import SERVER_DN, TAGS, USER_DN, norm
    dce = dce_connect(lab_proxy.host, lab_proxy.rpc_port, oxabref.MSRPC_UUID_OXABREF,
                      user=ALICE, password=ALICE_PW, domain="LAB", level=level)
    relayed = [norm(oxabref.hRfrGetNewDSA(dce, USER_DN)),
               norm(oxabref.hRfrGetFQDNFromServerDN(dce, SERVER_DN))]
    dce.disconnect()
    direct = dce_connect("127.0.0.1", auth_lab.ports["rfr"], oxabref.MSRPC_UUID_OXABREF,
                         user=PROXY_ACCT, password=PROXY_PW, domain="LAB",
                         level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    expect = [norm(oxabref.hRfrGetNewDSA(direct, USER_DN)),
              norm(oxabref.hRfrGetFQDNFromServerDN(direct, SERVER_DN))]
    direct.disconnect()
    assert relayed == expect
    dce = dce_connect(lab_proxy.host, lab_proxy.rpc_port, nspi.MSRPC_UUID_NSPI,
                      user=ALICE, password=ALICE_PW, domain="LAB", level=level)
    h = nspi.hNspiBind(dce)["contextHandle"]
    rows = nspi.hNspiQueryRows(dce, h, Count=50, pPropTags=TAGS)
    assert rows["ppRows"]["cRows"] > 3
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    log = auth_lab.log()
    assert f"user=LAB\\{PROXY_ACCT} level=privacy" in log, log[-2000:]
    assert "user=LAB\\alice" not in log
