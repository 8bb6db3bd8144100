"""The Samba + tshark test peers work on their own (no proxy involved).

Impacket (an NTLM DCE/RPC client) talks straight to a private
samba-dcerpcd: ept_map at packet privacy and integrity, lsarpc at privacy
through the port the endpoint mapper reports, a wrong password is refused.
tshark captures it all and, given the NTLM password, decrypts the sealed
calls and finds no malformed packets.
"""

import os
import subprocess

import pytest

import samba_env
import tshark_util

from impacket.dcerpc.v5 import epm, lsad, transport
from impacket.dcerpc.v5.rpcrt import (
    DCERPCException,
    RPC_C_AUTHN_LEVEL_CONNECT,
    RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
    RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
)
from impacket.uuid import uuidtup_to_bin

LSARPC_IF = uuidtup_to_bin((samba_env.LSARPC_UUID[0], "0.0"))

_reason = samba_env.samba_available()
if _reason:
    pytest.skip("samba-dcerpcd unavailable: %s" % _reason,
                allow_module_level=True)


@pytest.fixture(scope="module")
def samba(tmp_path_factory):
    env = samba_env.SambaDcerpcd(tmp_path_factory.mktemp("samba"))
    with env:
        yield env
    assert env.stray == [], "processes left behind: %s" % env.stray


def need_tshark():
    reason = tshark_util.tshark_available()
    if reason:
        pytest.skip(reason)


def connect(samba, port, level, password=None, user=None):
    trans = transport.DCERPCTransportFactory(samba.binding(port))
    trans.set_connect_timeout(5)
    dce = trans.get_dce_rpc()
    dce.set_credentials(user or samba.user,
                        samba.password if password is None else password,
                        samba.domain)
    dce.set_auth_level(level)
    dce.connect()
    return dce


def ept_map_lsarpc(samba, level, password=None):
    dce = connect(samba, samba.epm_port, level, password)
    try:
        binding = epm.hept_map(samba.host, LSARPC_IF,
                               protocol="ncacn_ip_tcp", dce=dce)
    finally:
        dce.disconnect()
    return binding


def lsarpc_query(samba, port, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    """LsarOpenPolicy2 + LsarQueryInformationPolicy(AccountDomain) + Close."""
    dce = connect(samba, port, level)
    try:
        dce.bind(lsad.MSRPC_UUID_LSAD)
        resp = lsad.hLsarOpenPolicy2(
            dce, lsad.POLICY_VIEW_LOCAL_INFORMATION)
        handle = resp["PolicyHandle"]
        resp = lsad.hLsarQueryInformationPolicy(
            dce, handle,
            lsad.POLICY_INFORMATION_CLASS.PolicyAccountDomainInformation)
        name = resp["PolicyInformation"]["PolicyAccountDomainInfo"][
            "DomainName"]
        lsad.hLsarClose(dce, handle)
    finally:
        dce.disconnect()
    return name


def port_of(binding):
    return int(binding.rsplit("[", 1)[1].rstrip("]"))


# ------------------------------------------------------------------ tests ---

def test_environment_listens_only_on_loopback(samba):
    assert samba.epm_port == 135
    ports = samba.listening_ports()
    assert 135 in ports and samba.lsarpc_port in ports
    out = subprocess.run(["ss", "-Hltnp"], stdout=subprocess.PIPE,
                         text=True).stdout
    ours = [l for l in out.splitlines()
            if "samba-dcerpcd" in l or "rpcd_" in l]
    assert ours
    for line in ours:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), line


def test_ept_map_privacy(samba):
    binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    assert binding == "ncacn_ip_tcp:127.0.0.1[%d]" % samba.lsarpc_port


def test_ept_map_integrity(samba):
    binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    assert port_of(binding) == samba.lsarpc_port


def test_ept_map_connect_level_allowed(samba):
    # only because samba_env sets "allow dcerpc auth level connect = yes"
    binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_CONNECT)
    assert port_of(binding) == samba.lsarpc_port


def test_lsarpc_privacy_via_epmapper(samba):
    port = port_of(ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY))
    assert port != samba.epm_port
    name = lsarpc_query(samba, port)
    assert name.upper() == samba.domain.upper()


def test_wrong_password_refused(samba):
    with pytest.raises(DCERPCException) as ei:
        ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                       password=samba.password + "-wrong")
    assert "access_denied" in str(ei.value).lower() or \
        "logon_failure" in str(ei.value).lower(), str(ei.value)


def test_tshark_decrypts_sealed_calls(samba, tmp_path):
    need_tshark()
    lsa_port = samba.lsarpc_port
    with tshark_util.Capture([samba.epm_port, lsa_port],
                             tmpdir=tmp_path) as cap:
        binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        lsarpc_query(samba, port_of(binding))
        ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    pcap = cap.path
    assert os.path.getsize(pcap) > 0

    pdus = tshark_util.dissect(pcap, decode_as_ports=[lsa_port],
                               nt_password=samba.password)
    ptypes = {p.ptype_name for p in pdus}
    assert {"bind", "bind_ack", "auth3", "request", "response"} <= ptypes

    # ept_map (epm opnum 3) at privacy: decrypted, NDR dissected
    maps = tshark_util.calls(pdus, interface="epm", opnum=3)
    sealed = [p for p in maps if p.auth_level_name == "privacy"]
    assert sealed and all(p.decrypted for p in sealed), maps
    assert sealed[0].get("epm.max_towers") == "1"
    assert samba_env.LSARPC_UUID[0] in sealed[0].fields["epm.uuid"]
    # ... and its response carries the lsarpc port
    replies = [p for p in tshark_util.calls(pdus, interface="epm", ptype=2)
               if p.auth_level_name == "privacy"]
    assert replies and replies[0].decrypted
    assert str(lsa_port) in replies[0].fields["epm.proto.tcp_port"]

    # ept_map at integrity: not encrypted, dissected in clear
    signed = [p for p in maps if p.auth_level_name == "integrity"]
    assert signed and all(p.stub_dissected and not p.encrypted
                          for p in signed)

    # lsarpc: LsarOpenPolicy2 (44), LsarQueryInformationPolicy (7),
    # LsarClose (0), all sealed and decrypted
    for opnum in (44, 7, 0):
        c = tshark_util.calls(pdus, interface="lsarpc", opnum=opnum)
        assert c, "lsarpc opnum %d not found: %s" % (opnum, pdus)
        assert all(p.auth_level_name == "privacy" and p.decrypted
                   for p in c), c

    assert tshark_util.malformed_or_unknown(
        pcap, decode_as_ports=[lsa_port], nt_password=samba.password) == []

    # Without the password the sealed stubs stay opaque.
    blind = tshark_util.dissect(pcap, decode_as_ports=[lsa_port])
    sealed_blind = [p for p in tshark_util.calls(blind, interface="epm",
                                                 opnum=3)
                    if p.auth_level_name == "privacy"]
    assert sealed_blind and not any(p.decrypted for p in sealed_blind)
