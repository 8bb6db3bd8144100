"""Decrypted packet export of DCE/RPC (mapiproxy:packet export dir and
users, doc/operations.md): the proxy terminates NTLM (specified
credentials), Impacket logs on at packet privacy and makes NSPI and EMSMDB
calls; the lab upstream requires the proxy's own account at privacy.  The
export holds both legs with the sealing removed, and tshark (Wireshark's
dissectors) names the calls from the plain stubs.  Sessions are chosen by
user: another user's association is not written."""
import glob
import os
import shutil

import pytest
from impacket.dcerpc.v5 import nspi

import emsmdb_client as EC
import emsmdb_ndr as N
import tshark_util
from conftest import LAB_SVC_ACCT, LAB_SVC_PW, ntlm_lab
from test_relay import USER_DN
from test_rpc_security import CAROL, CAROL_PW, login, terminating
from test_ops import wait_for

pytestmark = pytest.mark.skipif(not shutil.which("tshark"), reason="tshark is not installed")


def test_ntlm_sealed_session_export_dissected_by_tshark(auth_lab, make_proxy, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    p = terminating(auth_lab, make_proxy, tmp_path,
                    **{"mapiproxy:packet export dir": str(out),
                       "mapiproxy:packet export users": "LAB\\alice"})
    assert "PACKET EXPORT IS ON" in p.log()
    dce = login(p, nspi.MSRPC_UUID_NSPI)  # alice, packet privacy
    h = nspi.hNspiBind(dce)["contextHandle"]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    dce = login(p, N.MSRPC_UUID_EMSMDB)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(USER_DN)["ErrorCode"] == 0
    c.disconnect()
    dce.disconnect()
    carol = login(p, nspi.MSRPC_UUID_NSPI, user=CAROL, pw=CAROL_PW)  # not chosen
    nspi.hNspiUnbind(carol, nspi.hNspiBind(carol)["contextHandle"])
    carol.disconnect()
    p.stop()
    files = sorted(glob.glob(str(out / "*.pcapng")))
    assert len(files) == 2, (os.listdir(out), p.log()[-3000:])  # alice's two, not carol's
    for f in files:
        assert os.stat(f).st_mode & 0o777 == 0o600
    assert "packet export: rpc connection from 127.0.0.1" in p.log()
    ports = [p.rpc_port] + list(auth_lab.ports.values())
    names, ifaces = [], set()
    for f in files:
        pdus = tshark_util.dissect(f, decode_as_ports=ports)
        assert pdus, f
        for x in pdus:
            # no sealing left: no auth trailer, no encrypted stub
            assert int(x.get("dcerpc.auth_len", "0")) == 0 and not x.encrypted, x
            if x.interface:
                ifaces.add(x.interface)
        text = tshark_util.text(f, decode_as_ports=ports)
        names += [n for n in ("NspiBind", "NspiUnbind", "EcDoDisconnect")
                  for line in text.splitlines() if n + " request" in line]
        assert not tshark_util.malformed_or_unknown(f, decode_as_ports=ports), f
        # EcDoConnectEx (opnum 10; tshark 4.0 has no name for it): one
        # request per leg, its user DN in plain text
        connects = tshark_util.calls(pdus, interface="mapi", opnum=10)
        assert len(connects) in (0, 2), connects
        if connects:
            assert USER_DN.encode() in open(f, "rb").read()
            names.append("EcDoConnectEx")
    # each call on both legs (client -> proxy, proxy -> lab), named
    for n in ("NspiBind", "NspiUnbind", "EcDoDisconnect"):
        assert names.count(n) == 2, (n, names)
    assert "EcDoConnectEx" in names, names
    assert {"nspi", "mapi"} <= ifaces, ifaces


def test_pass_through_session_is_written_sealed_and_said(make_proxy, tmp_path):
    """Transparent mode: the client logs on to the lab itself (NTLM at
    privacy); the proxy has no keys, says so, and writes the association as
    it crossed, logon included, so tshark unseals it with the password."""
    lab = ntlm_lab(tmp_path, LAB_SVC_ACCT, LAB_SVC_PW)
    try:
        out = tmp_path / "export"
        out.mkdir()
        p = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"mapiproxy:packet export dir": str(out),
                              "mapiproxy:packet export clients": "127.0.0.1"})
        assert "does not terminate DCE/RPC authentication" in p.log()
        dce = login(p, nspi.MSRPC_UUID_NSPI, user=LAB_SVC_ACCT, pw=LAB_SVC_PW)
        nspi.hNspiUnbind(dce, nspi.hNspiBind(dce)["contextHandle"])
        dce.disconnect()
        p.stop()
        assert "sealed PDUs of a pass-through association" in p.log()
        ports = [p.rpc_port] + list(lab.ports.values())
        # (the fixture's port probes give files with no PDU)
        [f] = [f for f in glob.glob(str(out / "*.pcapng"))
               if tshark_util.dissect(f, decode_as_ports=ports)]
        sealed = tshark_util.calls(tshark_util.dissect(f, decode_as_ports=ports), "nspi")
        assert sealed and all(x.encrypted and not x.decrypted for x in sealed), sealed
        opened = tshark_util.calls(tshark_util.dissect(f, decode_as_ports=ports,
                                                       nt_password=LAB_SVC_PW), "nspi")
        assert [x.opnum for x in opened] == [0, 0, 1, 1], opened  # both legs
        assert all(x.decrypted for x in opened), opened
    finally:
        lab.stop()
