"""Mailbox authorization under specified credentials (issue 11, item 1).

The proxy terminates authentication and logs on to the lab as its own
account (LAB\\Administrator, which the lab, like an Exchange service account
with FullAccess, lets into every mailbox).  carol logs on to the proxy as
herself and names alice's mailbox: in EcDoConnectEx, in a private RopLogon,
and in MAPI/HTTP's Connect.  Each must be refused with the error a server
gives, a log line naming both users, and nothing of it at the lab; with a
delegate rule in mapiproxy:mailbox map each must work; carol's own mailbox
always works.  The clients are Impacket's DCE/RPC (NTLM at privacy) and
python-requests with requests-ntlm."""
import os
import re

import pytest
from impacket.dcerpc.v5.rpcrt import DCERPCException, RPC_C_AUTHN_LEVEL_PKT_PRIVACY
from impacket.ntlm import compute_nthash

import emsmdb_client as EC
import emsmdb_ndr as N
import mapihttp_client as MH
from conftest import ntlm_lab
from rpcutil import dce_connect
from test_http_auth_terminate import env, start as http_start  # noqa: F401 (fixture)

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
DN = {u: ORG + "/cn=Recipients/cn=" + u for u in ("alice", "bob", "carol")}  # "ali": none
CLIENTS = {"alice": "Alice-Pw.1", "bob": "Bob-Pw.2", "carol": "Carol-Pw.3", "ali": "Ali-Pw.4"}
PROXY_ACCT, PROXY_PW = "Administrator", "Adm1n-Proxy.9"
EC_ACCESS_DENIED, EC_LOGIN_PERM = 0x80070005, 0x000003F2
INBOX_NAME = 0x3001001F


def private_file(path, text):
    path.write_text(text)
    os.chmod(path, 0o600)
    return str(path)


def mailbox_map(tmp_path, *delegates):
    # written in another case than the clients send, to show the comparison ignores it
    lines = [f"{u}: {DN[u].upper() if u == 'alice' else DN[u]}" for u in DN]
    lines += [f"delegate {who}: {what}" for who, what in delegates]
    return private_file(tmp_path / "mailbox-map", "# user: DN\n" + "\n".join(lines) + "\n")


@pytest.fixture
def auth_lab(tmp_path):
    lab = ntlm_lab(tmp_path, PROXY_ACCT, PROXY_PW)
    yield lab
    lab.stop()


def rpc_proxy(make_proxy, lab, tmp_path, *delegates, extra=None):
    creds = private_file(tmp_path / "clients", "".join(
        f"{u}:LAB:{compute_nthash(p).hex()}\n" for u, p in CLIENTS.items()))
    opts = {"dcerpc_mapiproxy:username": PROXY_ACCT,
            "dcerpc_mapiproxy:domain": "LAB",
            "dcerpc_mapiproxy:password": PROXY_PW,
            "mapiproxy:credentials file": creds,
            "mapiproxy:mailbox map": mailbox_map(tmp_path, *delegates)}
    opts.update(extra or {})
    return make_proxy(upstream_epm_port=lab.epm_port, extra=opts)


def session(proxy, user):
    dce = dce_connect(proxy.host, proxy.rpc_port, N.MSRPC_UUID_EMSMDB, user=user,
                      password=CLIENTS[user], domain="LAB", level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    return dce, EC.EmsmdbClient(dce)


def read_inbox(client, dn):
    [logon] = client.execute(EC.RopBuffer().logon(0, dn))
    assert logon["ReturnValue"] == 0, hex(logon["ReturnValue"])
    res = client.execute(EC.RopBuffer().open_folder(0, 1, logon["FolderIds"][4])
                         .get_properties_specific(1, [INBOX_NAME]))
    return res[-1]["Row"][INBOX_NAME]


def new_lab_lines(lab, mark):
    return lab.log()[mark:]


# ---- EcDoConnectEx / EcDoConnect ------------------------------------------

def test_connect_to_another_mailbox_is_refused(make_proxy, auth_lab, tmp_path):
    p = rpc_proxy(make_proxy, auth_lab, tmp_path)
    mark = len(auth_lab.log())
    dce, c = session(p, "carol")
    r = c.connect_ex(DN["alice"])
    assert r["ErrorCode"] == EC_ACCESS_DENIED and r["pcxh"].getData() == b"\0" * 20
    r = c.connect(DN["alice"])  # the Exchange 2003 form, EcDoConnect (opnum 0)
    assert r["ErrorCode"] == EC_ACCESS_DENIED
    assert "cn=alice" not in new_lab_lines(auth_lab, mark).lower()  # nothing reached the lab
    # carol's own mailbox, on the same connection: allowed, and she reads her Inbox
    assert c.connect_ex(DN["carol"])["ErrorCode"] == 0
    assert read_inbox(c, DN["carol"]) == "Inbox"
    c.disconnect()
    dce.disconnect()
    lab = new_lab_lines(auth_lab, mark)
    assert "EcDoConnectEx %r" % DN["carol"] in lab and "cn=alice" not in lab.lower()
    assert f"user=LAB\\{PROXY_ACCT}" in lab  # the lab only ever sees the proxy's account
    log = p.log()
    assert re.search(r"LAB\\carol from 127\.0\.0\.1:\d+: EcDoConnectEx of mailbox "
                     + re.escape(DN["alice"]) + r" \(owner: alice\) refused with 0x80070005",
                     log), log[-3000:]
    assert "EcDoConnect of mailbox " + DN["alice"] in log
    assert CLIENTS["carol"] not in log and PROXY_PW not in log


def test_connect_with_administrator_privilege_is_refused(make_proxy, auth_lab, tmp_path):
    """ulFlags FLAG_PRIVILEGE_ADMIN would be the proxy account's privilege."""
    p = rpc_proxy(make_proxy, auth_lab, tmp_path)
    mark = len(auth_lab.log())
    dce, _ = session(p, "carol")
    req = N.EcDoConnectEx()
    req["szUserDN"] = DN["carol"] + "\x00"
    req["ulFlags"] = 1
    req["ulConMod"], req["cbLimit"], req["ulCpid"] = 0, 0, 1252
    req["ulLcidString"] = req["ulLcidSort"] = 0x409
    req["ulIcxrLink"], req["usFCanConvertCodePages"] = 0xFFFFFFFF, 1
    for i in range(3):
        req["rgwClientVersion%d" % i] = EC.CLIENT_VERSION[i]
    req["pulTimeStamp"], req["rgbAuxIn"], req["cbAuxIn"], req["pcbAuxOut"] = 0, b"", 0, 0x1008
    r = dce.request(req, checkError=False)
    assert r["ErrorCode"] == EC_LOGIN_PERM
    dce.disconnect()
    assert "EcDoConnectEx" not in new_lab_lines(auth_lab, mark)
    assert "with administrator privilege refused with 0x000003f2" in p.log()


# ---- RopLogon ---------------------------------------------------------------

def test_roplogon_to_another_mailbox_is_refused(make_proxy, auth_lab, tmp_path):
    p = rpc_proxy(make_proxy, auth_lab, tmp_path)
    dce, c = session(p, "carol")
    assert c.connect_ex(DN["carol"])["ErrorCode"] == 0
    mark = len(auth_lab.log())
    [logon] = c.execute(EC.RopBuffer().logon(0, DN["alice"]))
    assert logon["ReturnValue"] == EC_LOGIN_PERM
    # in a buffer with other ROPs, and with alice's DN in another case
    res = c.execute(EC.RopBuffer().logon(0, DN["alice"].swapcase()).logon(1, DN["carol"]))
    assert [x["ReturnValue"] for x in res] == [EC_LOGIN_PERM, 0]
    lab = new_lab_lines(auth_lab, mark)
    assert "cn=alice" not in lab.lower() and "RopLogon" in lab  # carol's logon went on
    # public folder logons are the same for everyone: not checked (the lab serves none)
    [pf] = c.execute(EC.RopBuffer().logon(0, "", logon_flags=0x00, open_flags=0x01000002))
    assert pf["ReturnValue"] != EC_LOGIN_PERM
    # USE_ADMIN_PRIVILEGE on her own mailbox: refused too
    [adm] = c.execute(EC.RopBuffer().logon(0, DN["carol"], open_flags=0x01000001))
    assert adm["ReturnValue"] == EC_LOGIN_PERM
    assert read_inbox(c, DN["carol"]) == "Inbox"
    c.disconnect()
    dce.disconnect()
    log = p.log()
    assert re.search(r"LAB\\carol from 127\.0\.0\.1:\d+: RopLogon of mailbox "
                     + re.escape(DN["alice"]) + r" \(owner: alice\) refused with 0x000003f2",
                     log), log[-3000:]


def test_unreadable_rop_buffer_is_refused(make_proxy, auth_lab, tmp_path):
    """A buffer the proxy cannot decode could hide a RopLogon: fault, nothing upstream."""
    p = rpc_proxy(make_proxy, auth_lab, tmp_path)
    dce, c = session(p, "carol")
    assert c.connect_ex(DN["carol"])["ErrorCode"] == 0
    mark = len(auth_lab.log())
    # a RopLogon of alice's mailbox, then a ROP of an unknown id (0x00): the
    # proxy's decoder gives up on the buffer, a server would run the logon first
    bad = EC.RopBuffer().logon(0, DN["alice"]).raw(b"\x00\x00\x00").build([0xFFFFFFFF] * 16)
    with pytest.raises(DCERPCException) as e:
        EC.ec_do_rpc_ext2(dce, c.cxh, bad)
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value)
    dce.disconnect()
    assert "EcDoRpcExt2" not in new_lab_lines(auth_lab, mark)
    assert "a ROP buffer the proxy cannot read could hold a RopLogon" in p.log()


# ---- delegate rules ---------------------------------------------------------

def test_delegate_rule_allows_that_mailbox_only(make_proxy, auth_lab, tmp_path):
    p = rpc_proxy(make_proxy, auth_lab, tmp_path, ("carol", "alice"))
    mark = len(auth_lab.log())
    dce, c = session(p, "carol")
    r = c.connect_ex(DN["alice"])
    assert r["ErrorCode"] == 0 and r["szDisplayName"].rstrip("\0") == "Alice Anders"
    assert read_inbox(c, DN["alice"]) == "Inbox"
    c.disconnect()
    # from her own session: RopLogon into alice's mailbox, allowed too
    assert c.connect_ex(DN["carol"])["ErrorCode"] == 0
    assert read_inbox(c, DN["alice"]) == "Inbox"
    # but not bob's
    assert c.connect_ex(DN["bob"])["ErrorCode"] == EC_ACCESS_DENIED
    [logon] = c.execute(EC.RopBuffer().logon(0, DN["bob"]))
    assert logon["ReturnValue"] == EC_LOGIN_PERM
    c.disconnect()
    dce.disconnect()
    # and the rule is carol's: bob still cannot open alice's mailbox
    dce, b = session(p, "bob")
    assert b.connect_ex(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    dce.disconnect()
    lab = new_lab_lines(auth_lab, mark)
    assert "EcDoConnectEx %r" % DN["alice"] in lab
    assert "RopLogon flags=0x1 open=0x1000000 essdn=%r" % DN["alice"] in lab
    assert "cn=bob" not in lab.lower()
    assert "LAB\\bob from" in p.log() and "(owner: alice) refused" in p.log()


def test_delegate_rule_by_group_dn_and_everyone(make_proxy, auth_lab, tmp_path):
    groups = private_file(tmp_path / "groups", "helpdesk: carol\n")
    shared = ORG + "/cn=Recipients/cn=dave"
    p = rpc_proxy(make_proxy, auth_lab, tmp_path, ("@helpdesk", DN["bob"].lower()),
                  ("*", shared), extra={"mapiproxy:groups file": groups})
    dce, c = session(p, "carol")
    assert c.connect_ex(DN["bob"])["ErrorCode"] == 0
    assert c.connect_ex(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    dce.disconnect()
    dce, a = session(p, "alice")
    assert a.connect_ex(DN["bob"])["ErrorCode"] == EC_ACCESS_DENIED  # not in @helpdesk
    assert a.connect_ex(shared)["ErrorCode"] == 0  # "*": every user
    dce.disconnect()


def test_legacy_ecdoconnect_and_ecdorpc(make_proxy, auth_lab, tmp_path):
    """The Exchange 2003 calls: EcDoConnect (opnum 0) and EcDoRpc (opnum 2)."""
    p = rpc_proxy(make_proxy, auth_lab, tmp_path)
    mark = len(auth_lab.log())
    dce = dce_connect(p.host, p.rpc_port, N.MSRPC_UUID_EMSMDB, user="carol",
                      password=CLIENTS["carol"], domain="LAB", level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    c = EC.EmsmdbClient(dce, use_ext2=False)
    assert c.connect(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    assert c.connect(DN["carol"])["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, DN["alice"]))
    assert logon["ReturnValue"] == EC_LOGIN_PERM
    assert read_inbox(c, DN["carol"]) == "Inbox"
    c.disconnect()
    dce.disconnect()
    lab = new_lab_lines(auth_lab, mark)
    assert "EcDoRpc " in lab and "cn=alice" not in lab.lower()


def test_without_any_source_every_mailbox_is_refused(make_proxy, auth_lab, tmp_path):
    p = rpc_proxy(make_proxy, auth_lab, tmp_path, extra={"mapiproxy:mailbox map": "",
                                                        "mapiproxy:mailbox directory": "no"})
    mark = len(auth_lab.log())
    dce, c = session(p, "carol")
    assert c.connect_ex(DN["carol"])["ErrorCode"] == EC_ACCESS_DENIED
    dce.disconnect()
    assert "EcDoConnectEx" not in new_lab_lines(auth_lab, mark)
    log = p.log()
    assert "mapiproxy:mailbox map is not set: every EcDoConnect(Ex)" in log
    assert "(owner: not in mapiproxy:mailbox map) refused with 0x80070005" in log


def test_directory_gives_each_users_mailbox(make_proxy, auth_lab, tmp_path):
    """No map: the proxy asks the directory (NspiResolveNamesW through its own
    NSPI session, as its own account) which mailbox is carol's."""
    p = rpc_proxy(make_proxy, auth_lab, tmp_path, extra={"mapiproxy:mailbox map": ""})
    mark = len(auth_lab.log())
    dce, c = session(p, "carol")
    assert c.connect_ex(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    assert c.connect_ex(DN["carol"])["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, DN["alice"]))
    assert logon["ReturnValue"] == EC_LOGIN_PERM
    assert read_inbox(c, DN["carol"]) == "Inbox"
    c.disconnect()
    dce.disconnect()
    dce, a = session(p, "alice")  # another user: her own lookup
    assert a.connect_ex(DN["alice"])["ErrorCode"] == 0
    assert a.connect_ex(DN["carol"])["ErrorCode"] == EC_ACCESS_DENIED
    dce.disconnect()
    lab = new_lab_lines(auth_lab, mark)
    assert lab.count("NspiResolveNamesW") == 2, lab  # one lookup per user, then cached
    assert "EcDoConnectEx %r" % DN["alice"] in lab  # alice's own, not carol's attempt
    assert lab.count("EcDoConnectEx %r" % DN["alice"]) == 1
    log = p.log()
    assert "directory: LAB\\carol's mailbox is " + DN["carol"] in log
    assert "LAB\\carol from" in log and "(owner: not in mapiproxy:mailbox map) refused" in log


def test_directory_match_must_be_the_account(make_proxy, auth_lab, tmp_path):
    """"ali" has no mailbox; the directory's name resolution (ANR, prefixes)
    finds alice for "ali": her account is not ali's, so nothing is allowed."""
    p = rpc_proxy(make_proxy, auth_lab, tmp_path, extra={"mapiproxy:mailbox map": ""})
    mark = len(auth_lab.log())
    dce, c = session(p, "ali")
    assert c.connect_ex(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    dce.disconnect()
    lab = new_lab_lines(auth_lab, mark)
    assert "NspiResolveNamesW ['ali']" in lab and "EcDoConnectEx" not in lab
    assert "directory lookup of LAB\\ali's mailbox failed: the directory has no mailbox of " \
           "account ali" in p.log()


def test_malformed_map_stops_the_daemon(make_proxy, auth_lab, tmp_path):
    bad = private_file(tmp_path / "bad-map", "alice /o=LabOrg/no-colon\n")
    with pytest.raises(RuntimeError) as e:
        rpc_proxy(make_proxy, auth_lab, tmp_path, extra={"mapiproxy:mailbox map": bad})
    assert "bad-map:1: not \"USER: DN\"" in str(e.value)


# ---- MAPI over HTTP Connect ---------------------------------------------------

def http_proxy(make_proxy, env, tmp_path, *delegates):  # noqa: F811
    creds = private_file(tmp_path / "http-clients", "".join(
        f"{u}:LAB:{compute_nthash(p).hex()}\n" for u, p in CLIENTS.items()))
    return http_start(make_proxy, env, **{"mapiproxy:credentials file": creds,
                                          "mapiproxy:allowed users": "alice, bob, carol",
                                          "mapiproxy:mailbox map":
                                              mailbox_map(tmp_path, *delegates)})


def http_lab(env):  # noqa: F811
    with open(env["lab_log"]) as f:
        return f.read()


def ems_as(p, env, user):  # noqa: F811
    from requests_ntlm import HttpNtlmAuth
    return MH.EmsmdbHttp(p.base, auth=HttpNtlmAuth("LAB\\" + user, CLIENTS[user]),
                         verify=env["ca"])


def test_mapihttp_connect_to_another_mailbox_is_refused(make_proxy, env, tmp_path):  # noqa: F811
    p = http_proxy(make_proxy, env, tmp_path)
    mark = len(http_lab(env))
    ems = ems_as(p, env, "carol")
    r = ems.connect(DN["alice"])
    assert r["ErrorCode"] == EC_ACCESS_DENIED and r["DisplayName"] == ""
    assert "cn=alice" not in http_lab(env)[mark:].lower()
    assert ems.connect(DN["carol"])["ErrorCode"] == 0
    [logon] = ems.execute(EC.RopBuffer().logon(0, DN["alice"]))
    assert logon["ReturnValue"] == EC_LOGIN_PERM  # Execute's RopLogon, checked as over RPC
    [logon] = ems.execute(EC.RopBuffer().logon(0, DN["carol"]))
    assert logon["ReturnValue"] == 0
    assert ems.disconnect()["ErrorCode"] == 0
    p.stop()
    lab = http_lab(env)[mark:]
    assert "emsmdb Connect %r" % DN["carol"] in lab and "cn=alice" not in lab.lower()
    log = p.log()
    assert re.search(r"LAB\\carol from 127\.0\.0\.1:\d+: EcDoConnectEx of mailbox "
                     + re.escape(DN["alice"]) + r" \(owner: alice\) refused with 0x80070005",
                     log), log[-3000:]


def test_mapihttp_delegate_rule(make_proxy, env, tmp_path):  # noqa: F811
    p = http_proxy(make_proxy, env, tmp_path, ("carol", "alice"))
    mark = len(http_lab(env))
    ems = ems_as(p, env, "carol")
    r = ems.connect(DN["alice"])
    assert r["ErrorCode"] == 0 and r["DisplayName"] == "Alice Anders"
    [logon] = ems.execute(EC.RopBuffer().logon(0, DN["alice"]))
    assert logon["ReturnValue"] == 0
    assert ems.disconnect()["ErrorCode"] == 0
    bob = ems_as(p, env, "bob")
    assert bob.connect(DN["alice"])["ErrorCode"] == EC_ACCESS_DENIED
    p.stop()
    lab = http_lab(env)[mark:]
    assert lab.count("emsmdb Connect %r" % DN["alice"]) == 1  # carol's; bob's never arrived
