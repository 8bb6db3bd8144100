"""Non-transparent mode: the rewrite module keeps clients on the proxy.
Impacket's RFR and NSPI clients, through the proxy before the lab, never
receive the lab's server name (EXLAB01 / exlab01.lab.example) in any ANSI or
Unicode form, anywhere in any answer; and calls that send the proxy's names
back still reach the right objects upstream."""
import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.dcerpc.v5.dtypes import NULL

from rpcutil import dce_connect
from test_relay import SERVER_DN, TAGS, USER_DN, _stat

UPSTREAM_NAMES = ["exlab01"]  # covers EXLAB01 and exlab01.lab.example, any case
HOME_MDB_A, HOME_MDB_W = 0x8006001E, 0x8006001F
NETADDR_A, NETADDR_W = 0x8170101E, 0x8170101F
ALL_TAGS = TAGS + [0x3003001E, 0x39FE001E, 0x0FFF0102, 0x3A00001F]


def recording(dce):
    seen = []
    orig = dce.recv

    def recv():
        data = orig()
        seen.append(data)
        return data

    dce.recv = recv
    return seen


def assert_hidden(blobs):
    for b in blobs:
        low = bytes(b).lower()
        for n in UPSTREAM_NAMES:
            assert n.encode() not in low, low
            assert n.encode("utf-16le") not in low, low


@pytest.fixture
def rw(make_proxy, lab):
    return make_proxy(upstream_epm_port=lab.epm_port,
                      extra={"mapiproxy:transparent": "no", "netbios name": "MAPIPROXY",
                             "realm": "proxy.example"})


def test_rfr_answers_name_the_proxy(rw, lab):
    dce = dce_connect(rw.host, rw.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    seen = recording(dce)
    r = oxabref.hRfrGetNewDSA(dce, USER_DN)
    assert r["ppszServer"].rstrip("\0") == "mapiproxy.proxy.example"
    r = oxabref.hRfrGetFQDNFromServerDN(dce, SERVER_DN)
    assert r["ppszServerFQDN"].rstrip("\0") == "mapiproxy.proxy.example"
    # the client sends the proxy's name back: it reaches the real server
    proxy_dn = SERVER_DN.replace("EXLAB01", "MAPIPROXY")
    r = oxabref.hRfrGetFQDNFromServerDN(dce, proxy_dn)
    assert r["ppszServerFQDN"].rstrip("\0") == "mapiproxy.proxy.example"
    dce.disconnect()
    assert_hidden(seen)
    assert "cn=EXLAB01" in lab.log() or "EXLAB01" in lab.log()


def test_nspi_never_shows_the_upstream(rw, lab):
    dce = dce_connect(rw.host, rw.rpc_port, nspi.MSRPC_UUID_NSPI)
    seen = recording(dce)
    h = nspi.hNspiBind(dce)["contextHandle"]
    answers = [
        nspi.hNspiGetSpecialTable(dce, h),
        nspi.hNspiQueryRows(dce, h, Count=50, pPropTags=ALL_TAGS),
        nspi.hNspiResolveNames(dce, h, paStr=["alice", "bob"], pPropTags=ALL_TAGS),
        nspi.hNspiResolveNamesW(dce, h, paStr=["carol", "Administrator"], pPropTags=ALL_TAGS),
        nspi.hNspiSeekEntries(dce, h, "bob", pPropTags=ALL_TAGS),
    ]
    mids = nspi.hNspiDNToMId(dce, h, [USER_DN])["ppOutMIds"]["aulPropTag"]
    props = nspi.hNspiGetProps(dce, h, CurrentRec=mids[0], pPropTags=ALL_TAGS)
    answers.append(props)
    assert_hidden(seen)
    # what the client sees instead
    rows = nspi.simplifyPropertyRowSet(answers[1]["ppRows"])
    homes = {r.get(HOME_MDB_W) for r in rows if r.get(HOME_MDB_W)}
    assert homes and all("/cn=Servers/cn=MAPIPROXY/" in x for x in homes), homes
    homes_a = {r.get(HOME_MDB_A) for r in rows if r.get(HOME_MDB_A)}
    assert homes_a and all("/cn=Servers/cn=MAPIPROXY/" in str(x) for x in homes_a), homes_a
    addrs = [a for r in rows for a in (r.get(NETADDR_W) or [])]
    assert addrs and any("ncacn_ip_tcp:mapiproxy.proxy.example" in str(a) for a in addrs), addrs
    # the names the client learned, sent back, reach the right objects
    home = sorted(homes)[0].rstrip("\0")
    proxy_server_dn = SERVER_DN.replace("EXLAB01", "MAPIPROXY")
    back = [x["Data"] for x in
            nspi.hNspiDNToMId(dce, h, [home, proxy_server_dn, USER_DN])["ppOutMIds"]["aulPropTag"]]
    direct = _direct_mids(lab, [home.replace("MAPIPROXY", "EXLAB01"), SERVER_DN, USER_DN])
    assert back == direct and all(back), (back, direct)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()


def _direct_mids(lab, dns):
    dce = dce_connect("127.0.0.1", lab.ports["nspi"], nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    r = [x["Data"] for x in nspi.hNspiDNToMId(dce, h, dns)["ppOutMIds"]["aulPropTag"]]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    return r


def test_transparent_mode_changes_nothing(make_proxy, lab):
    p = make_proxy(upstream_epm_port=lab.epm_port)
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    assert oxabref.hRfrGetNewDSA(dce, USER_DN)["ppszServer"].rstrip("\0") == "exlab01.lab.example"
    dce.disconnect()
