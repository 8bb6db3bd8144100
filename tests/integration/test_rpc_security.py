"""The DCE/RPC relay under attack (issue 11): further security contexts
(Impacket's alter_ctx), association groups and context handles bound to
their user, verified authentication levels, the minimum client level,
pass-through smuggling, unauthenticated clients, and silent connections.

The client is Impacket (code we did not write); the upstream is the lab,
which requires the proxy's own account at privacy, so anything of a client
that reaches it shows in its log under the proxy's name."""
import os
import socket
import struct
import time

import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpcrt
from impacket.dcerpc.v5.rpcrt import (DCERPCException, RPC_C_AUTHN_LEVEL_CONNECT,
                                      RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                      RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
from impacket.ntlm import compute_nthash

from conftest import Lab
from rpcutil import NDR20, NSPI, bind_pdu, dce_connect, read_pdu, request_pdu
from test_relay import TAGS, USER_DN

ALICE, ALICE_PW = "alice", "Alice-Secret-1"
CAROL, CAROL_PW = "carol", "Carol-Secret-3"
PROXY_ACCT, PROXY_PW = "mapiproxy-svc", "Svc-Pa55-for-lab"
RFR_IF = oxabref.MSRPC_UUID_OXABREF
LEVEL_CALL, LEVEL_PKT = 3, 4


@pytest.fixture
def auth_lab(tmp_path):
    users = tmp_path / "lab-users"
    users.write_text(f"{PROXY_ACCT}:LAB:{PROXY_PW}\n")
    lab = Lab(tmp_path, extra=("--users", str(users), "--require-auth", "privacy"))
    yield lab
    lab.stop()


def terminating(auth_lab, make_proxy, tmp_path, **extra):
    creds = tmp_path / "clients"
    creds.write_text("".join(f"{u}:LAB:{compute_nthash(p).hex()}\n"
                             for u, p in ((ALICE, ALICE_PW), (CAROL, CAROL_PW))))
    os.chmod(creds, 0o600)
    opts = {"dcerpc_mapiproxy:username": PROXY_ACCT,
            "dcerpc_mapiproxy:domain": "LAB",
            "dcerpc_mapiproxy:password": PROXY_PW,
            "mapiproxy:credentials file": str(creds)}
    opts.update(extra)
    return make_proxy(upstream_epm_port=auth_lab.epm_port, extra=opts)


@pytest.fixture
def tproxy(auth_lab, make_proxy, tmp_path):
    return terminating(auth_lab, make_proxy, tmp_path)


def login(proxy, iface, user=ALICE, pw=ALICE_PW, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    return dce_connect(proxy.host, proxy.rpc_port, iface, user=user, password=pw, domain="LAB",
                       level=level)


# ---- 1. alter_context with an auth trailer after the logon ----------------

def test_impacket_alter_ctx_after_ntlm_logon_at_privacy(auth_lab, tproxy):
    """Impacket's alter_ctx builds a second NTLM security context on the same
    connection (alter_context with a NEGOTIATE, alter_context_resp with the
    CHALLENGE, AUTH3).  Both contexts then work, each sealed with its keys.
    (The lab serves each interface on its own port, so the new presentation
    context is NSPI again; the upstream learns it on the proxy's own
    security context.)"""
    dce = login(tproxy, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    dce2 = dce.alter_ctx(nspi.MSRPC_UUID_NSPI)
    rows = nspi.hNspiQueryRows(dce2, h, Count=5, pPropTags=TAGS)
    assert rows["ppRows"]["cRows"] > 0
    rows = nspi.hNspiQueryRows(dce, h, Count=5, pPropTags=TAGS)
    assert rows["ppRows"]["cRows"] > 0
    nspi.hNspiUnbind(dce2, h)
    dce.disconnect()
    log = tproxy.log()
    assert "security context 79232: authenticated LAB\\alice (NTLM, privacy)" in log, log[-3000:]
    assert log.count("exchange_nsp NspiQueryRows(3)") == 2
    assert "fault" not in log.split("security context 79232")[1]
    assert tproxy.alive()


def test_alter_ctx_as_another_user_is_refused(auth_lab, tproxy):
    """A second security context must prove the association's user."""
    dce = login(tproxy, nspi.MSRPC_UUID_NSPI)
    nspi.hNspiBind(dce)
    dce._DCERPC_v5__username, dce._DCERPC_v5__password = CAROL, CAROL_PW
    with pytest.raises(Exception):
        dce2 = dce.alter_ctx(nspi.MSRPC_UUID_NSPI)
        nspi.hNspiBind(dce2)
    log = tproxy.log()
    assert "security context 79232 refused: it is another user" in log, log[-3000:]
    assert tproxy.alive()


# ---- 2. association groups and context handles bound to their user -------

def bind_into(proxy, group, user, pw, iface=nspi.MSRPC_UUID_NSPI, monkeypatch=None):
    """An Impacket NTLM/privacy connection whose bind names `group`; returns
    (dce, the group id of the bind_ack)."""
    from impacket.dcerpc.v5 import transport

    class GroupBind(rpcrt.MSRPCBind):
        def __init__(self, data=None, alignment=0):
            super().__init__(data, alignment)
            if data is None:
                self["assoc_group"] = group

    monkeypatch.setattr(rpcrt, "MSRPCBind", GroupBind)
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{proxy.host}[{proxy.rpc_port}]")
    t.set_credentials(user, pw, "LAB")
    dce = t.get_dce_rpc()
    dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dce.connect()
    resp = dce.bind(iface)
    monkeypatch.undo()
    return dce, rpcrt.MSRPCBindAck(resp.getData())["assoc_group"]


def test_carol_cannot_join_alices_group_or_use_her_handle(auth_lab, tproxy, monkeypatch):
    alice, g = bind_into(tproxy, 0, ALICE, ALICE_PW, monkeypatch=monkeypatch)
    h = nspi.hNspiBind(alice)["contextHandle"]
    # alice's own second connection joins her group and uses her handle
    alice2, g2 = bind_into(tproxy, g, ALICE, ALICE_PW, monkeypatch=monkeypatch)
    assert g2 == g
    assert nspi.hNspiQueryRows(alice2, h, Count=5, pPropTags=TAGS)["ppRows"]["cRows"] > 0
    alice2.disconnect()
    n_rows = auth_lab.log().count("NspiQueryRows")
    # carol names alice's group: answered as for any id (nothing tells her
    # whether it is live), but she is given a group of her own
    carol, gc = bind_into(tproxy, g, CAROL, CAROL_PW, monkeypatch=monkeypatch)
    assert gc == g
    with pytest.raises(DCERPCException) as e:
        nspi.hNspiQueryRows(carol, h, Count=5, pPropTags=TAGS)
    assert "context_mismatch" in str(e.value), str(e.value)  # her group has no such handle
    carol.disconnect()
    log = tproxy.log()
    assert f"bind names association group 0x{g:08x} of another user; given a new group" in log
    assert "NspiQueryRows(3) in=136 out=24" in log and "fault:0x1c00001a user=LAB\\carol" in log
    assert auth_lab.log().count("NspiQueryRows") == n_rows  # nothing of alice's was read
    # a dead group is answered the same way
    dead = (g ^ 0x5A5A5A5A) or 1
    carol, gd = bind_into(tproxy, dead, CAROL, CAROL_PW, monkeypatch=monkeypatch)
    assert gd == dead
    carol.disconnect()
    nspi.hNspiUnbind(alice, h)
    alice.disconnect()


def test_group_ids_are_not_sequential_and_unknown_ids_get_a_new_group(lab, proxy):
    ids = []
    for _ in range(3):
        s = socket.create_connection((proxy.host, proxy.rpc_port))
        s.sendall(bind_pdu([(NSPI, [NDR20])]))
        ack = read_pdu(s)
        assert ack[0] == 12
        ids.append(struct.unpack_from("<I", ack[3], 20)[0])
        s.close()
    d1, d2 = (ids[1] - ids[0]) & 0xFFFFFFFF, (ids[2] - ids[1]) & 0xFFFFFFFF
    assert d1 != d2 and min(d1, d2, (-d1) & 0xFFFFFFFF, (-d2) & 0xFFFFFFFF) > 1000, ids
    # a bind naming an unknown group: a bind_ack with a new group, as for 0
    s = socket.create_connection((proxy.host, proxy.rpc_port))
    s.sendall(bind_pdu([(NSPI, [NDR20])], assoc_group=ids[0] ^ 0x00F0F0F0))
    ack = read_pdu(s)
    assert ack[0] == 12
    assert struct.unpack_from("<I", ack[3], 20)[0] not in (0, ids[0] ^ 0x00F0F0F0)
    s.close()
