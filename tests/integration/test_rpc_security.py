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

from conftest import LAB_SVC_ACCT as PROXY_ACCT, LAB_SVC_PW as PROXY_PW
from rpcutil import NDR20, NSPI, bind_pdu, dce_connect, read_pdu, request_pdu
from test_relay import TAGS, USER_DN

ALICE, ALICE_PW = "alice", "Alice-Secret-1"
CAROL, CAROL_PW = "carol", "Carol-Secret-3"
RFR_IF = oxabref.MSRPC_UUID_OXABREF
LEVEL_CALL, LEVEL_PKT = 3, 4


def terminating(upstream_lab, make_proxy, tmp_path, **extra):
    creds = tmp_path / "clients"
    creds.write_text("".join(f"{u}:LAB:{compute_nthash(p).hex()}\n"
                             for u, p in ((ALICE, ALICE_PW), (CAROL, CAROL_PW))))
    os.chmod(creds, 0o600)
    opts = {"dcerpc_mapiproxy:username": PROXY_ACCT,
            "dcerpc_mapiproxy:domain": "LAB",
            "dcerpc_mapiproxy:password": PROXY_PW,
            "mapiproxy:credentials file": str(creds)}
    opts.update(extra)
    return make_proxy(upstream_epm_port=upstream_lab.epm_port, extra=opts)


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


# ---- 3. authentication levels ------------------------------------------------

@pytest.fixture
def lowproxy(auth_lab, make_proxy, tmp_path):
    """min client auth level = connect, so call/packet levels reach the checks."""
    return terminating(auth_lab, make_proxy, tmp_path,
                       **{"mapiproxy:min client auth level": "connect"})


def refused(dce):
    """Sends NspiBind; True when the proxy closes the connection without an
    answer (what it does to a PDU that fails its check).  Read here, since
    Impacket's own recv loops on a closed socket."""
    req = nspi.NspiBind()
    req["dwFlags"] = 0
    req["pStat"]["CodePage"] = 1252
    req["pServerGuid"] = b"\0" * 16
    dce.call(req.opnum, req)
    s = dce.get_rpc_transport().get_socket()
    s.settimeout(10)
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True


def nspi_binds(lab):
    return lab.log().count("NspiBind")


@pytest.mark.parametrize("level", [LEVEL_CALL, LEVEL_PKT])
def test_call_and_packet_levels_are_signed_and_verified(auth_lab, lowproxy, monkeypatch, level):
    """Levels 3 and 4 are verified as packet integrity (Windows raises call
    to packet over a connection; NTLM signs packet as integrity, as Samba
    does).  Impacket signs only at 5 and 6, so it is told that `level` is
    its integrity level to sign a correct verifier."""
    monkeypatch.setattr(rpcrt, "RPC_C_AUTHN_LEVEL_PKT_INTEGRITY", level)
    dce = login(lowproxy, nspi.MSRPC_UUID_NSPI, level=level)
    h = nspi.hNspiBind(dce)["contextHandle"]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    assert nspi_binds(auth_lab) == 1


@pytest.mark.parametrize("level", [LEVEL_CALL, LEVEL_PKT])
def test_unsigned_requests_at_call_and_packet_levels_are_refused(auth_lab, lowproxy, level):
    dce = login(lowproxy, nspi.MSRPC_UUID_NSPI, level=level)  # Impacket sends no verifier
    assert refused(dce)
    assert nspi_binds(auth_lab) == 0
    assert "client PDU fails its signature check" in lowproxy.log()


@pytest.mark.parametrize("level", [LEVEL_CALL, LEVEL_PKT, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY])
def test_garbage_verifiers_are_refused(auth_lab, lowproxy, monkeypatch, level):
    from impacket import ntlm
    monkeypatch.setattr(rpcrt, "RPC_C_AUTHN_LEVEL_PKT_INTEGRITY", level)
    dce = login(lowproxy, nspi.MSRPC_UUID_NSPI, level=level)
    monkeypatch.setattr(ntlm, "SIGN", lambda *a: b"\x01\x00\x00\x00" + b"\x13" * 12)
    assert refused(dce)
    assert "client PDU fails its signature check" in lowproxy.log()
    assert nspi_binds(auth_lab) == 0


def test_below_the_minimum_level_is_refused(auth_lab, tproxy):
    """The default minimum where the proxy terminates is integrity: a
    client at connect level logs on, but its calls get access denied and
    nothing reaches the upstream."""
    dce = login(tproxy, nspi.MSRPC_UUID_NSPI, level=RPC_C_AUTHN_LEVEL_CONNECT)
    with pytest.raises(DCERPCException) as e:
        nspi.hNspiBind(dce)
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    dce.disconnect()
    log = tproxy.log()
    assert "below mapiproxy:min client auth level integrity" in log
    assert "connecting upstream" not in log and nspi_binds(auth_lab) == 0
    # integrity and privacy pass
    for level in (RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
        dce = login(tproxy, nspi.MSRPC_UUID_NSPI, level=level)
        nspi.hNspiUnbind(dce, nspi.hNspiBind(dce)["contextHandle"])
        dce.disconnect()
    assert nspi_binds(auth_lab) == 2


def alter_pdu(contexts, call_id):
    p = bytearray(bind_pdu(contexts, call_id=call_id))
    p[2] = 14  # alter_context
    return bytes(p)


def ctx_results(body):
    alen = struct.unpack_from("<H", body, 24)[0]
    off = 26 + alen
    off += (4 - off % 4) % 4
    return [struct.unpack_from("<HH", body, off + 4 + 24 * i) for i in range(body[off])]


@pytest.fixture
def ptproxy(lab, make_proxy, tmp_path):
    """Terminating, with RFR passed through, before a lab that asks nobody
    to authenticate (so a smuggled NSPI context would be served)."""
    return terminating(lab, make_proxy, tmp_path,
                       **{"mapiproxy:pass-through interfaces": "exchange_ds_rfr"})


def test_pass_through_smuggling_is_refused(lab, ptproxy):
    """With RFR passed through, an unauthenticated association must not carry
    NSPI upstream: neither in its bind nor added by an alter_context."""
    from rpcutil import RFR
    s = socket.create_connection((ptproxy.host, ptproxy.rpc_port))
    s.sendall(bind_pdu([(RFR, [NDR20]), (NSPI, [NDR20])]))
    assert read_pdu(s)[0] == 13  # bind_nak
    s.close()
    s = socket.create_connection((ptproxy.host, ptproxy.rpc_port))
    s.sendall(bind_pdu([(RFR, [NDR20])]))
    ack = read_pdu(s)
    assert ack[0] == 12 and ctx_results(ack[3])[0] == (0, 0)
    s.sendall(alter_pdu([(NSPI, [NDR20])], call_id=2))
    resp = read_pdu(s)
    assert resp[0] == 15 and ctx_results(resp[3])[0] == (2, 1), resp  # rejected
    s.sendall(request_pdu(3, 0, b"\0" * 40, ctx_id=0))  # NspiBind on "NSPI"'s id 0
    s.close()
    log = ptproxy.log()
    assert "bind mixes pass-through and terminated interfaces; refused" in log
    assert "a terminated interface on a pass-through association" in log
    assert "NspiBind" not in lab.log()


# ---- 5. no authentication where the proxy requires it (issue 12) -------------

def test_unauthenticated_bind_is_accepted_and_each_call_denied(auth_lab, tproxy):
    """As Windows does: the bind is accepted, each call faults with access
    denied (0x5); the connection stays; nothing goes upstream."""
    s = socket.create_connection((tproxy.host, tproxy.rpc_port))
    s.sendall(bind_pdu([(NSPI, [NDR20])]))
    ack = read_pdu(s)
    assert ack[0] == 12 and ctx_results(ack[3])[0] == (0, 0)
    for call in (2, 3):
        s.sendall(request_pdu(call, 0, b"\0" * 40))
        f = read_pdu(s)
        assert f[0] == 3 and f[2] == call and struct.unpack_from("<I", f[3], 24)[0] == 5, f
    s.close()
    assert "the client sent no authentication" in tproxy.log()
    assert nspi_binds(auth_lab) == 0


# ---- 4. defaults that hold under attack ---------------------------------------

def silent_connections(proxy, n, addrs):
    """n connections that never send a byte, spread over source addresses
    (127.0.0.x: loopback takes any), non-blocking."""
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((addrs[i % len(addrs)], 0))
        s.connect((proxy.host, proxy.rpc_port))
        s.setblocking(False)
        socks.append(s)
    return socks


def closed_count(socks):
    n = 0
    for s in socks:
        try:
            if s.recv(1) == b"":
                n += 1
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


def test_silent_connections_are_closed_and_a_bystander_works(lab, make_proxy):
    """3,000 connections that never send a byte (6 source addresses, 500
    each: under the default 512 per address).  The bind timeout (shortened
    to 3 s here; 30 s by default) closes them, the idle timeout (5 s here,
    900 s by default) would close them after a bind; meanwhile a bystander
    works."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 7000:
        pytest.skip(f"needs 7000 descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 7000), hard))
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"mapiproxy:bind timeout": "3", "mapiproxy:idle timeout": "5",
                              "mapiproxy:log level": "warn"})
    t0 = time.monotonic()
    socks = silent_connections(proxy, 3000, [f"127.0.0.{i}" for i in range(2, 8)])
    opened = time.monotonic() - t0
    dce = dce_connect(proxy.host, proxy.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    deadline = time.monotonic() + 30
    calls = 0
    while time.monotonic() < deadline and closed_count(socks) < 3000:
        # the bystander works throughout (and, busy, is never idle)
        assert nspi.hNspiQueryRows(dce, h, Count=5, pPropTags=TAGS)["ppRows"]["cRows"] > 0
        calls += 1
        time.sleep(0.5)
    assert closed_count(socks) == 3000
    took = time.monotonic() - t0
    assert calls >= 3 and took > 3, (calls, took, opened)
    assert nspi.hNspiQueryRows(dce, h, Count=5, pPropTags=TAGS)["ppRows"]["cRows"] > 0
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    for s in socks:
        s.close()
    assert took < 30, took
    assert proxy.alive()


def test_connections_per_address_are_limited(lab, make_proxy):
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"mapiproxy:max connections per address": "5"})
    socks = silent_connections(proxy, 5, ["127.0.0.20"])
    extra = silent_connections(proxy, 1, ["127.0.0.20"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and closed_count(extra) < 1:
        time.sleep(0.1)
    assert closed_count(extra) == 1 and closed_count(socks) == 0
    # another address is not affected
    s = socket.socket()
    s.bind(("127.0.0.21", 0))
    s.connect((proxy.host, proxy.rpc_port))
    s.sendall(bind_pdu([(NSPI, [NDR20])]))
    assert read_pdu(s)[0] == 12
    for x in socks + extra + [s]:
        x.close()
    assert "connections open from 127.0.0.20 (mapiproxy:max connections per address)" in proxy.log()
