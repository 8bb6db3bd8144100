"""Non-transparent mode with one server name per mailbox (Exchange 2013 and
later, gromox: `<mailbox-guid>@<domain>`): the lab started with
--per-mailbox-servers gives alice and bob different server names.  Through
`mapiproxy:transparent = no` every server name the client sees -- EMSMDB's
DN prefix (RPC EcDoConnectEx and MAPI/HTTP Connect), NSPI's home MDB,
Autodiscover's EXCH Server, ServerDN and MdbDN -- is the proxy's, the two
stay distinct, and each maps back to its own mailbox: GetMailboxUrl, DNToMId
and RfrGetFQDNFromServerDN with what the client learned reach the right
objects upstream.  Clients: Impacket (RPC), python3-requests (MAPI/HTTP)."""
import os
import re
import sys
import uuid

import pytest
import requests
from impacket.dcerpc.v5 import nspi, oxabref

from conftest import ROOT, Lab
from rpcutil import dce_connect
from test_http_front_lab import ALICE, lab_https_fixture, ntlm
from test_http_front_lab import start_front as front_with

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import emsmdb_client as EC  # noqa: E402
import mapihttp_client as MH  # noqa: E402

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
BOB = ORG + "/cn=Recipients/cn=bob"
USERS = {"alice": ALICE, "bob": BOB}
PROXY_FQDN = "mapiproxy.proxy.example"
RW = {"mapiproxy:transparent": "no", "netbios name": "MAPIPROXY", "realm": "proxy.example"}
HOME_MDB_W = 0x8006001F


def upstream_server(dn):
    """The lab's per-mailbox server name (lab_mapihttp.mailbox_id)."""
    return "%s@lab.example" % uuid.uuid5(uuid.NAMESPACE_URL, "mbx:" + dn.lower())


def server_dn(name):
    return f"{ORG}/cn=Configuration/cn=Servers/cn={name}"


def hidden(text):
    low = text.lower()
    return all(upstream_server(dn).lower() not in low for dn in USERS.values()) and \
        "exlab01" not in low


env = lab_https_fixture("perbox", ["--per-mailbox-servers"])


def autodiscover(base, ca, user):
    req = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
           'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
           f'<EMailAddress>{user}@lab.example</EMailAddress><AcceptableResponseSchema>'
           'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
           '</AcceptableResponseSchema></Request></Autodiscover>')
    r = requests.post(base + "/autodiscover/autodiscover.xml", data=req, verify=ca,
                      auth=ntlm(user), headers={"Content-Type": "text/xml"})
    assert r.status_code == 200
    return r.text


def element(text, tag):
    exch = text.split("<Type>EXCH</Type>", 1)[1]
    return exch.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]


def test_per_mailbox_servers_over_mapihttp(make_proxy, env):
    direct_base = f"https://localhost:{env['mapihttp']}"
    p = front_with(make_proxy, env, RW)
    seen = {}
    for user, dn in USERS.items():
        # EMSMDB Connect: the DN prefix
        ems = MH.EmsmdbHttp(p.base, auth=ntlm(user), verify=env["ca"])
        c = ems.connect(dn)
        assert c["ErrorCode"] == 0
        prefix = c["DnPrefix"]
        assert hidden(prefix), prefix
        assert ems.disconnect()["ErrorCode"] == 0
        # NSPI: the home MDB names the same proxy server
        ab = MH.NspiHttp(p.base, auth=ntlm(user), verify=env["ca"])
        assert ab.bind()["ErrorCode"] == 0
        [mid] = ab.dn_to_mid([dn])["MinimalIds"]
        props = ab.get_props(mid, [HOME_MDB_W])
        home = str(props["PropertyValues"][HOME_MDB_W] if isinstance(props["PropertyValues"], dict)
                   else props["PropertyValues"][0][1])
        assert hidden(home), home
        assert home.lower() == (prefix + "/cn=Microsoft Private MDB").lower(), (home, prefix)
        # Autodiscover through the same proxy agrees
        text = autodiscover(p.base, env["ca"], user)
        assert element(text, "ServerDN") == prefix
        assert element(text, "MdbDN") == home
        srv = element(text, "Server")
        assert prefix.endswith("/cn=" + srv), (srv, prefix)
        assert hidden(srv + element(text, "ServerDN") + element(text, "MdbDN"))
        # GetMailboxUrl with what the client learned: the upstream answers
        u = ab.get_mailbox_url(prefix)
        assert u["ErrorCode"] == 0 and u["ServerUrl"], u
        # DNToMId of the learned server DN: the mailbox's own server object
        [smid] = ab.dn_to_mid([prefix])["MinimalIds"]
        ab.unbind()
        seen[user] = (prefix, home, srv, u["ServerUrl"], smid)
    # distinct upstream names stay distinct through the proxy
    assert seen["alice"][0] != seen["bob"][0] and seen["alice"][2] != seen["bob"][2]
    assert all(s[2].endswith("@" + PROXY_FQDN) for s in seen.values()), seen
    # and each maps back to its own mailbox: compare with the lab itself
    for user, dn in USERS.items():
        ab = MH.NspiHttp(direct_base, auth=ntlm(user), verify=env["ca"])
        assert ab.bind()["ErrorCode"] == 0
        up = server_dn(upstream_server(dn))
        d = ab.get_mailbox_url(up)
        assert d["ErrorCode"] == 0
        assert "MailboxId=" + upstream_server(dn) in d["ServerUrl"]
        # the URL through the proxy names the proxy's host, and the same mailbox
        assert seen[user][3].split("?", 1)[1] == d["ServerUrl"].split("?", 1)[1]
        assert seen[user][4] == ab.dn_to_mid([up])["MinimalIds"][0] != 0
        ab.unbind()
    p.stop()


def short_server(dn):
    """The lab's --per-mailbox-servers=short name."""
    return "MBX" + uuid.uuid5(uuid.NAMESPACE_URL, "mbx:" + dn.lower()).hex[:8].upper()


@pytest.fixture(params=["guid", "short"])
def perbox_lab(tmp_path, request):
    lab = Lab(tmp_path, extra=["--per-mailbox-servers=" + request.param])
    lab.style = request.param
    yield lab
    lab.stop()


def test_per_mailbox_servers_over_rpc(make_proxy, perbox_lab):
    """Both styles: <guid>@<domain> keeps the GUID and names the proxy's
    FQDN; NetBIOS-style names become the proxy's NetBIOS name (the first
    one) and NAME-<hash> (the others)."""
    lab = perbox_lab
    name_of = upstream_server if lab.style == "guid" else short_server
    p = make_proxy(upstream_epm_port=lab.epm_port, extra=RW)
    prefixes = {}
    for user, dn in USERS.items():
        dce = EC.connect(p.host, p.rpc_port)
        sess = EC.EmsmdbClient(dce)
        r = sess.connect_ex(dn)
        assert r["ErrorCode"] == 0
        prefix = r["szDNPrefix"].rstrip("\0")
        assert name_of(dn).lower() not in prefix.lower() and hidden(prefix), prefix
        if lab.style == "guid":
            assert prefix == server_dn(name_of(dn).split("@")[0] + "@" + PROXY_FQDN)
        else:
            assert re.fullmatch(re.escape(server_dn("MAPIPROXY")) + "(-[0-9A-F]{8})?",
                                prefix), prefix
        # the session works on: logon to the mailbox
        [logon] = sess.execute(EC.RopBuffer().logon(0, dn))
        assert logon["ReturnValue"] == 0
        sess.disconnect()
        dce.disconnect()
        prefixes[user] = prefix
    assert prefixes["alice"] != prefixes["bob"]
    # RFR and NSPI with the learned server DNs reach each mailbox's server
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    for user, dn in USERS.items():
        r = oxabref.hRfrGetFQDNFromServerDN(dce, prefixes[user])
        assert r["ppszServerFQDN"].rstrip("\0") == PROXY_FQDN
    dce.disconnect()
    assert all(f"cn={name_of(dn)}" in lab.log() for dn in USERS.values())
    dce = dce_connect(p.host, p.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    back = [x["Data"] for x in nspi.hNspiDNToMId(
        dce, h, [prefixes["alice"], prefixes["bob"]])["ppOutMIds"]["aulPropTag"]]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    dce = dce_connect("127.0.0.1", lab.ports["nspi"], nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    direct = [x["Data"] for x in nspi.hNspiDNToMId(
        dce, h, [server_dn(name_of(ALICE)), server_dn(name_of(BOB))])
        ["ppOutMIds"]["aulPropTag"]]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    assert back == direct and all(back) and back[0] != back[1], (back, direct)
