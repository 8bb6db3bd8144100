"""Generic relay in transparent mode before a real NTLM server: Impacket
authenticates with NTLM through mapiproxy to Samba's samba-dcerpcd, at packet
privacy and integrity, for the epmapper and the lsarpc endpoint's interfaces;
tshark, given the password, decrypts the calls on both legs."""
import os

import pytest
from impacket.dcerpc.v5.rpcrt import (DCERPCException, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                      RPC_C_AUTHN_LEVEL_PKT_PRIVACY)

import samba_env
import tshark_util
from test_samba_direct import (dssetup_primary_domain, ept_map_lsarpc, port_of,
                               samr_domains)

_reason = samba_env.samba_available()
if _reason:
    pytest.skip("samba-dcerpcd unavailable: %s" % _reason, allow_module_level=True)

DSSETUP = "3919286a-b10c-11d0-9ba8-00c04fd92ef5/0.0"


class ViaProxy:
    """Looks like the Samba peer to the helpers of test_samba_direct, but every
    connection goes to the proxy."""

    def __init__(self, samba, proxy):
        self.host = proxy.host
        self.epm_port = proxy.rpc_port  # the epmapper interface, relayed
        self.user, self.password, self.domain = samba.user, samba.password, samba.domain

    def binding(self, port=None):
        return f"ncacn_ip_tcp:{self.host}[{port or self.epm_port}]"


@pytest.fixture(scope="module")
def samba(tmp_path_factory):
    env = samba_env.SambaDcerpcd(tmp_path_factory.mktemp("samba"))
    with env:
        yield env


@pytest.fixture
def relay(samba, make_proxy):
    return make_proxy(upstream_epm_port=samba.epm_port,
                      interfaces=["epmapper", "lsarpc", "samr", DSSETUP])


def test_ntlm_ept_map_through_proxy(samba, relay):
    via = ViaProxy(samba, relay)
    for level in (RPC_C_AUTHN_LEVEL_PKT_PRIVACY, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY):
        binding = ept_map_lsarpc(via, level)
        assert port_of(binding) == samba.lsarpc_port  # relayed: Samba's own answer
    assert relay.log().count("epmapper ept_map(3)") == 2


def test_wrong_password_is_refused_by_the_server(samba, relay):
    via = ViaProxy(samba, relay)
    with pytest.raises(DCERPCException):
        ept_map_lsarpc(via, RPC_C_AUTHN_LEVEL_PKT_PRIVACY, password="wrong")
    assert relay.alive()


def test_tshark_decrypts_both_legs(samba, relay, tmp_path):
    if tshark_util.tshark_available():
        pytest.skip(tshark_util.tshark_available())
    via = ViaProxy(samba, relay)
    with tshark_util.Capture([relay.rpc_port, samba.epm_port, samba.lsarpc_port],
                             tmpdir=tmp_path) as cap:
        ept_map_lsarpc(via, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        name = dssetup_primary_domain(via, relay.rpc_port)
        doms = samr_domains(via, relay.rpc_port)
        ept_map_lsarpc(via, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    assert name and doms
    # port 135 is Samba's whoever talks to it: only this test's connections
    # (the client's to the proxy, the proxy's to Samba) are judged
    ups = tshark_util.proxy_upstream_pairs(relay.log())
    assert {samba.epm_port, samba.lsarpc_port} <= {u[1] for u in ups}, relay.log()
    own = tshark_util.only_conversations(cap.path, ports=[relay.rpc_port], pairs=ups)
    pdus = tshark_util.dissect(own, decode_as_ports=[relay.rpc_port, samba.lsarpc_port],
                               nt_password=samba.password)
    client_leg = [p for p in pdus if relay.rpc_port in (p.src_port, p.dst_port)]
    server_leg = [p for p in pdus if relay.rpc_port not in (p.src_port, p.dst_port)]
    for leg, name_ in ((client_leg, "client"), (server_leg, "server")):
        maps = tshark_util.calls(leg, interface="epm", opnum=3)
        sealed = [p for p in maps if p.auth_level_name == "privacy"]
        assert sealed and all(p.decrypted for p in sealed), (name_, maps)
        assert samba_env.LSARPC_UUID[0] in sealed[0].fields["epm.uuid"]
        for opnum in (57, 6, 5, 1):
            c = tshark_util.calls(leg, interface="samr", opnum=opnum, ptype=2)
            assert c and all(p.decrypted for p in c), (name_, opnum)
    bad = tshark_util.malformed_or_unknown(own,
                                           decode_as_ports=[relay.rpc_port, samba.lsarpc_port],
                                           nt_password=samba.password)
    # tshark 4.0 flags sealed stubs under 16 bytes (the dssetup request) as
    # malformed on its own; tshark_util ignores exactly those.
    assert bad == [], bad
