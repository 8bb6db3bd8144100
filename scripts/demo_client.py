"""Relays a few real calls through mapiproxy with Impacket's clients, as
Outlook would start a session: endpoint mapper, referral, address book."""
import argparse

from impacket.dcerpc.v5 import epm, nspi, oxabref, transport


def connect(binding, iface):
    dce = transport.DCERPCTransportFactory(binding).get_dce_rpc()
    dce.connect()
    dce.bind(iface)
    return dce


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--epm-port", type=int, default=135)
    a = ap.parse_args()

    def mapper():
        d = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{a.host}[{a.epm_port}]").get_dce_rpc()
        d.connect()
        return d

    rfr_b = epm.hept_map(a.host, oxabref.MSRPC_UUID_OXABREF, protocol="ncacn_ip_tcp", dce=mapper())
    nspi_b = epm.hept_map(a.host, nspi.MSRPC_UUID_NSPI, protocol="ncacn_ip_tcp", dce=mapper())
    print(f"endpoint mapper: RFR at {rfr_b}, NSPI at {nspi_b}")
    dce = connect(rfr_b, oxabref.MSRPC_UUID_OXABREF)
    dn = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
    r = oxabref.hRfrGetNewDSA(dce, dn)
    print("RfrGetNewDSA: address book server is", r["ppszServer"].rstrip("\0"))
    dce.disconnect()
    dce = connect(nspi_b, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    rows = nspi.hNspiQueryRows(dce, h, Count=20, pPropTags=[0x3001001F, 0x39FE001F])
    print("NspiQueryRows: the directory holds")
    for row in nspi.simplifyPropertyRowSet(rows["ppRows"]):
        print("   ", " | ".join(str(v) for v in row.values()))
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()


if __name__ == "__main__":
    main()
