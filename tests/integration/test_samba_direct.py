"""The Samba + tshark test peers work on their own (no proxy involved).

Impacket (an NTLM DCE/RPC client) talks straight to a private
samba-dcerpcd: ept_map at packet privacy, integrity and connect, calls on the
lsarpc ncacn_ip_tcp endpoint the endpoint mapper reports (at privacy), a
wrong password is refused. tshark captures it all and, given the NTLM
password, decrypts the sealed calls and finds no malformed packets.

Samba (4.17) refuses the LSA policy calls (LsarOpenPolicy2, ...) on
ncacn_ip_tcp by design -- only named pipes / ncalrpc -- and answers with a
DCE/RPC fault nca_s_access_denied (0x5). That call is still made and checked
(it is a real sealed lsarpc request and fault), and the calls that Samba
does serve on that same lsarpc TCP endpoint are made too: dssetup
DsRoleGetPrimaryDomainInformation (MS-DSSP, part of the LSA server) and
samr Connect/EnumerateDomains/LookupDomain/Close.
"""

import contextlib
import os
import subprocess

import pytest

import samba_env
import tshark_util

from impacket import ntlm
from impacket.dcerpc.v5 import dssp, epm, lsad, rpcrt, samr, transport
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


# (client port, server port) of every connection connect() opened: a
# capture of Samba's 135 keeps only these (others may talk to 135 meanwhile)
OPENED = []


def connect(samba, port, level, password=None, user=None):
    trans = transport.DCERPCTransportFactory(samba.binding(port))
    trans.set_connect_timeout(5)
    dce = trans.get_dce_rpc()
    dce.set_credentials(user or samba.user,
                        samba.password if password is None else password,
                        samba.domain)
    dce.set_auth_level(level)
    dce.connect()
    OPENED.append((trans.get_socket().getsockname()[1], port))
    return dce


def ept_map_lsarpc(samba, level, password=None):
    dce = connect(samba, samba.epm_port, level, password)
    try:
        binding = epm.hept_map(samba.host, LSARPC_IF,
                               protocol="ncacn_ip_tcp", dce=dce)
    finally:
        dce.disconnect()
    return binding


@contextlib.contextmanager
def ntlm_without_sign_seal():
    """Make impacket's NTLM NEGOTIATE omit SIGN/SEAL/KEY_EXCH.

    Impacket always asks for SIGN|SEAL, even at auth level connect. Samba
    4.17 then computes a 16-byte signature size for the response
    (gensec_sig_size) but refuses to sign at level connect
    (dcerpc_ncacn_push_pkt_auth: sig_size != 0 -> INTERNAL_ERROR), so every
    request gets a fault nca_s_fault_other (0x1) although the call itself
    ran. A connect-level client that does not negotiate signing works.
    """
    orig = rpcrt.ntlm.getNTLMSSPType1
    strip = (ntlm.NTLMSSP_NEGOTIATE_SIGN | ntlm.NTLMSSP_NEGOTIATE_SEAL
             | ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
             | ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH)

    def type1(*args, **kwargs):
        msg = orig(*args, **kwargs)
        msg["flags"] &= ~strip
        return msg

    rpcrt.ntlm.getNTLMSSPType1 = type1
    try:
        yield
    finally:
        rpcrt.ntlm.getNTLMSSPType1 = orig


def lsarpc_open_policy(samba, port, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    """Bind lsarpc and call LsarOpenPolicy2; return the exception text.

    Samba denies it on ncacn_ip_tcp (fault nca_s_access_denied)."""
    dce = connect(samba, port, level)
    try:
        dce.bind(lsad.MSRPC_UUID_LSAD)
        try:
            lsad.hLsarOpenPolicy2(dce, lsad.POLICY_VIEW_LOCAL_INFORMATION)
        except DCERPCException as e:
            return str(e)
        return None
    finally:
        dce.disconnect()


def dssetup_primary_domain(samba, port, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    """DsRolerGetPrimaryDomainInformation(level 1) on the lsarpc endpoint."""
    dce = connect(samba, port, level)
    try:
        dce.bind(dssp.MSRPC_UUID_DSSP)
        resp = dssp.hDsRolerGetPrimaryDomainInformation(dce, 1)
        name = resp["DomainInfo"]["DomainInfoBasic"]["DomainNameFlat"]
        return name.rstrip("\x00")
    finally:
        dce.disconnect()


def samr_domains(samba, port, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    """SamrConnect2, EnumerateDomainsInSamServer, LookupDomain, CloseHandle.

    (SamrConnect2, not SamrConnect: the latter's 12-byte sealed stub trips
    tshark, see tshark_util.SHORT_SEALED_STUB.)"""
    dce = connect(samba, port, level)
    try:
        dce.bind(samr.MSRPC_UUID_SAMR)
        handle = samr.hSamrConnect2(dce)["ServerHandle"]
        resp = samr.hSamrEnumerateDomainsInSamServer(dce, handle)
        names = [e["Name"] for e in resp["Buffer"]["Buffer"]]
        sid = samr.hSamrLookupDomainInSamServer(
            dce, handle, samba.domain)["DomainId"].formatCanonical()
        samr.hSamrCloseHandle(dce, handle)
        return names, sid
    finally:
        dce.disconnect()


def lsarpc_query(samba, port, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    """LsarOpenPolicy2 + LsarQueryInformationPolicy(AccountDomain) + Close.

    Only works where Samba serves LSA policy calls (not on ncacn_ip_tcp)."""
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
    # needs "allow dcerpc auth level connect = yes" (samba_env sets it) and
    # a client that does not negotiate NTLM signing (see the helper).
    with ntlm_without_sign_seal():
        binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_CONNECT)
    assert port_of(binding) == samba.lsarpc_port


def test_lsarpc_endpoint_privacy_via_epmapper(samba):
    port = port_of(ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY))
    assert port != samba.epm_port
    # LSA policy calls: a sealed request, refused by Samba on TCP
    err = lsarpc_open_policy(samba, port)
    assert err is not None and "access_denied" in err.lower(), err
    # calls served on that same endpoint
    assert dssetup_primary_domain(samba, port).upper() == samba.domain.upper()
    names, sid = samr_domains(samba, port)
    assert samba.domain in names and "Builtin" in names
    assert sid.startswith("S-1-5-21-")


def test_lsarpc_endpoint_integrity(samba):
    port = samba.lsarpc_port
    assert dssetup_primary_domain(
        samba, port, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY).upper() == \
        samba.domain.upper()


def test_wrong_password_refused(samba):
    with pytest.raises(DCERPCException) as ei:
        ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                       password=samba.password + "-wrong")
    # AUTH3 has no reply; Samba 4.17 answers the first request after a
    # failed AUTH3 with fault nca_s_proto_error (Windows: access denied).
    msg = str(ei.value).lower()
    assert any(s in msg for s in ("access_denied", "logon_failure",
                                  "proto_error")), msg
    assert "NT_STATUS_WRONG_PASSWORD" in samba.log_text()
    # the server is still fine for the right password
    assert port_of(ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)) \
        == samba.lsarpc_port


def test_tshark_decrypts_sealed_calls(samba, tmp_path):
    need_tshark()
    lsa_port = samba.lsarpc_port
    first = len(OPENED)
    with tshark_util.Capture([samba.epm_port, lsa_port],
                             tmpdir=tmp_path) as cap:
        binding = ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
        assert port_of(binding) == lsa_port
        lsarpc_open_policy(samba, lsa_port)
        dssetup_primary_domain(samba, lsa_port)
        samr_domains(samba, lsa_port)
        ept_map_lsarpc(samba, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    assert os.path.getsize(cap.path) > 0
    # 135 is Samba's whoever talks to it (another test run, a client by
    # hand, with other accounts): only this test's connections are judged
    mine = OPENED[first:]
    epm = samba.epm_port
    assert [p for _, p in mine] == [epm] + [lsa_port] * 3 + [epm], mine
    pcap = tshark_util.only_conversations(cap.path, pairs=mine)

    pdus = tshark_util.dissect(pcap, decode_as_ports=[lsa_port],
                               nt_password=samba.password)
    # every one of them is in the capture: bind, bind_ack and a request
    for cport, sport in mine:
        conn = {p.ptype_name for p in pdus
                if {p.src_port, p.dst_port} == {cport, sport}}
        assert {"bind", "bind_ack", "request"} <= conn, (cport, sport, pdus)
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

    # lsarpc LsarOpenPolicy2 (opnum 44): sealed request decrypted, fault back
    c = tshark_util.calls(pdus, interface="lsarpc", opnum=44)
    assert c and all(p.auth_level_name == "privacy" and p.decrypted
                     for p in c), pdus
    faults = [p for p in pdus if p.ptype_name == "fault"
              and p.dst_port == c[0].src_port]
    assert faults and faults[0].get("dcerpc.cn_status") == "0x00000005"

    # samr Connect2 (57), EnumDomains (6), LookupDomain (5), Close (1):
    # requests and responses all sealed and decrypted
    for iface, opnums in (("samr", (57, 6, 5, 1)),):
        for opnum in opnums:
            for ptype in (0, 2):
                c = tshark_util.calls(pdus, interface=iface, opnum=opnum,
                                      ptype=ptype)
                assert c, "%s opnum %d ptype %d not found: %s" % (
                    iface, opnum, ptype, pdus)
                assert all(p.auth_level_name == "privacy" and p.decrypted
                           for p in c), c

    # dssetup DsRoleGetPrimaryDomainInformation (0): the sealed response
    # is decrypted; its 2-byte sealed request is decrypted but tshark 4.0
    # calls it malformed (short sealed stub, see tshark_util).
    c = tshark_util.calls(pdus, interface="dssetup", opnum=0, ptype=2)
    assert c and all(p.decrypted for p in c), pdus

    assert tshark_util.malformed_or_unknown(
        pcap, decode_as_ports=[lsa_port], nt_password=samba.password) == []
    strict = tshark_util.malformed_or_unknown(
        pcap, decode_as_ports=[lsa_port], nt_password=samba.password,
        ignore_short_sealed_stubs=False)
    dssetup_requests = [p.frame for p in pdus
                        if p.ptype == 0 and p.src_port == c[0].dst_port]
    assert sorted(set(x["frame"] for x in strict)) == dssetup_requests, strict

    # Without the password the sealed stubs stay opaque.
    blind = tshark_util.dissect(pcap, decode_as_ports=[lsa_port])
    sealed_blind = [p for p in tshark_util.calls(blind, interface="epm",
                                                 opnum=3)
                    if p.auth_level_name == "privacy"]
    assert sealed_blind and not any(p.decrypted for p in sealed_blind)
