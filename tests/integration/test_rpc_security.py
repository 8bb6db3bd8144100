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
