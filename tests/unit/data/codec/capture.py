#!/usr/bin/python3
"""Capture request and response stubs of RFR, NSPI and EMSMDB calls made by
Impacket's clients (and the lab's EMSMDB client) against the Exchange lab.

    /usr/bin/python3 tests/unit/data/codec/capture.py [OUTDIR]

writes OUTDIR/<iface>-<opnum>-<in|out>-<N>.bin (default: this directory).
Stubs that follow Impacket's non-spec layouts (see tests/lab/lab_nspi.py) go
to OUTDIR/impacket-deviant/ instead: the codec follows MS-OXNSPI and must
refuse them.

The module is also imported by tests/integration/test_codec_wire.py, which
captures live and compares mapiproxy-decode's JSON with what Impacket parsed.
"""
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..', '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'lab'))

from impacket.dcerpc.v5 import nspi, oxabref, transport        # noqa: E402
from impacket.dcerpc.v5.dtypes import ULONG, USHORT             # noqa: E402
from impacket.dcerpc.v5.ndr import (NDRCALL, NDRUniConformantArray, NULL)  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException            # noqa: E402

import emsmdb_client as EC                                      # noqa: E402
import emsmdb_ndr as N                                          # noqa: E402
import lab_nspi as L                                            # noqa: E402

ORG = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)'
USER_DN = ORG + '/cn=Recipients/cn=alice'
SERVER_DN = ORG + '/cn=Configuration/cn=Servers/cn=EXLAB01'
TAGS = [0x3001001F, 0x3001001E, 0x3003001F, 0x39FE001F, 0x0FFE0003, 0x39000003, 0x0FFF0102,
        0x8170101E, 0x8170101F, 0x8006001E, 0x8006001F]


class Lab:
    """The Exchange lab upstream (tests/lab/exchange_lab.py) on ephemeral ports."""

    def __init__(self):
        self.p = subprocess.Popen(
            ['/usr/bin/python3', os.path.join(ROOT, 'tests/lab/exchange_lab.py'), '--host',
             '127.0.0.1', '--epm-port', '0'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        line = self.p.stdout.readline()
        if not line.startswith('READY'):
            self.close()
            raise RuntimeError('lab did not start: %r' % line)
        self.ports = {k: int(v) for k, v in (kv.split('=') for kv in line.split()[1:])}

    def close(self):
        self.p.terminate()
        self.p.wait(timeout=10)


class Call:
    def __init__(self, iface, opnum, stub_in, stub_out, tag):
        self.iface, self.opnum, self.stub_in, self.stub_out, self.tag = \
            iface, opnum, stub_in, stub_out, tag
        self.parsed = None    # what Impacket made of the response, when we keep it


class Recorder:
    """Wraps dce.call/dce.recv: the exact stub bytes Impacket sent and got."""

    def __init__(self):
        self.calls = []
        self.tag = None       # None = spec layout; 'impacket' = Impacket's own layout

    def wrap(self, dce, iface):
        orig_call, orig_recv = dce.call, dce.recv
        pending = []

        def call(function, body, uuid=None):
            data = body.getData() if hasattr(body, 'getData') else body
            pending.append((function, data))
            return orig_call(function, data, uuid)

        def recv():
            fn, data = pending.pop(0)
            try:
                out = orig_recv()
            except DCERPCException:
                self.calls.append(Call(iface, fn, data, None, self.tag))
                raise
            self.calls.append(Call(iface, fn, data, out, self.tag))
            return out

        dce.call, dce.recv = call, recv
        return dce

    def last(self):
        return self.calls[-1]


# Calls the lab does not implement (it answers nca_op_rng_error): only the
# requests are captured, encoded by Impacket's NDR engine from these
# declarations, which follow MS-OXNSPI / MS-OXCRPC / OpenChange.
class PropertyNamePtrArray(NDRUniConformantArray):
    item = nspi.PPropertyName_r


class NspiGetIDsFromNamesSpec(NDRCALL):
    opnum = 18
    structure = (('hRpc', nspi.handle_t), ('Reserved', nspi.DWORD), ('dwFlags', nspi.DWORD),
                 ('cPropNames', nspi.DWORD), ('pNames', PropertyNamePtrArray))


class EcRRegisterPushNotification(NDRCALL):
    opnum = 4
    structure = (('pcxh', N.CXH), ('iRpc', ULONG), ('rgbContext', N.BYTE_ARRAY),
                 ('cbContext', USHORT), ('grbitAdviseBits', ULONG),
                 ('rgbCallbackAddress', N.BYTE_ARRAY), ('cbCallbackAddress', USHORT))


class EcRUnregisterPushNotification(NDRCALL):
    opnum = 5
    structure = (('pcxh', N.CXH), ('iRpc', ULONG), ('hNotification', ULONG))


class EcDoRpcExt(NDRCALL):
    opnum = 9
    structure = (('pcxh', N.CXH), ('pulFlags', ULONG), ('rgbIn', N.BYTE_ARRAY), ('cbIn', ULONG),
                 ('pcbOut', ULONG), ('Reserved0', N.BYTE_VARRAY), ('Reserved1', ULONG))


class Empty(NDRCALL):
    structure = ()


def dce_connect(port, uuid):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:127.0.0.1[%d]' % port)
    dce = t.get_dce_rpc()
    dce.connect()
    dce.bind(uuid)
    return dce


def raw(d, req):
    """Sends a request and returns the response stub without parsing it."""
    d.call(req.opnum, req)
    return d.recv()


def try_(fn):
    try:
        return fn()
    except DCERPCException as e:
        return e


def rfr(rec, port):
    d = rec.wrap(dce_connect(port, oxabref.MSRPC_UUID_OXABREF), 'rfr')
    r = oxabref.hRfrGetNewDSA(d, USER_DN)
    rec.last().parsed = {'ppszServer': r['ppszServer']}
    r = oxabref.hRfrGetFQDNFromServerDN(d, SERVER_DN)
    rec.last().parsed = {'ppszServerFQDN': r['ppszServerFQDN']}
    d.disconnect()


def _tagarray(req, field, tags):
    for t in tags:
        x = nspi.DWORD()
        x['Data'] = t
        req[field]['aulPropTag'].append(x)
    req[field]['cValues'] = len(tags)


def nspi_calls(rec, port):
    d = rec.wrap(dce_connect(port, nspi.MSRPC_UUID_NSPI), 'nspi')
    h = nspi.hNspiBind(d)['contextHandle']
    # Impacket's own helpers (those whose layout follows the IDL)
    st = nspi.STAT()
    st['CurrentRec'] = nspi.MID_BEGINNING_OF_TABLE
    st['Delta'] = 2
    nspi.hNspiUpdateStat(d, h, st)
    r = nspi.hNspiQueryRows(d, h, Count=50, pPropTags=TAGS)
    rec.last().parsed = {'rows': nspi.simplifyPropertyRowSet(r['ppRows'])}
    r = nspi.hNspiQueryRows(d, h, Count=3, pPropTags=[0x3001001E, 0x0FFF0102, 0x8170101E])
    rec.last().parsed = {'rows': nspi.simplifyPropertyRowSet(r['ppRows'])}
    r = nspi.hNspiResolveNames(d, h, paStr=['alice', 'bob', 'nobody'], pPropTags=TAGS)
    rec.last().parsed = {'mids': [x['Data'] if hasattr(x, 'fields') else x
                                  for x in r['ppMIds']['aulPropTag']],
                         'rows': nspi.simplifyPropertyRowSet(r['ppRows'])}
    r = nspi.hNspiResolveNamesW(d, h, paStr=['carol', 'Administrator', 'Lab'],
                                pPropTags=[0x3001001F, 0x3003001F])
    rec.last().parsed = {'rows': nspi.simplifyPropertyRowSet(r['ppRows'])}
    r = nspi.hNspiDNToMId(d, h, [USER_DN, SERVER_DN, '/o=nowhere'])
    mids = [x['Data'] if hasattr(x, 'fields') else x for x in r['ppOutMIds']['aulPropTag']]
    rec.last().parsed = {'mids': mids}
    r = nspi.hNspiQueryColumns(d, h)
    rec.last().parsed = {'cols': len(r['ppColumns']['aulPropTag'])}
    r = nspi.hNspiGetPropList(d, h, mids[0])
    rec.last().parsed = {'tags': len(r['ppOutMIds']['aulPropTag'])}
    cmpreq = nspi.NspiCompareMIds()
    cmpreq['hRpc'] = h
    cmpreq['MId1'] = mids[0]
    cmpreq['MId2'] = mids[1]
    r = d.request(cmpreq, checkError=False)
    rec.last().parsed = {'plResult': r['plResult']}
    # Spec layouts the lab declares where Impacket deviates
    req = L.NspiGetPropsSpec()
    req['hRpc'] = h
    req['dwFlags'] = 0
    req['pStat']['CurrentRec'] = mids[0]
    req['pStat']['CodePage'] = 1252
    _tagarray(req, 'pPropTags', TAGS)
    try_(lambda: raw(d, req))
    req = L.NspiGetPropsSpec()
    req['hRpc'] = h
    req['pStat']['CurrentRec'] = mids[1]
    req['pStat']['CodePage'] = 1252
    _tagarray(req, 'pPropTags', [0x3001001F, 0x12340003, 0x8170101F])
    try_(lambda: raw(d, req))
    req = L.NspiGetSpecialTableSpec()
    req['hRpc'] = h
    req['dwFlags'] = nspi.NspiUnicodeStrings
    req['pStat']['CodePage'] = 1252
    req['lpVersion'] = 0
    try_(lambda: raw(d, req))
    req = L.NspiSeekEntriesSpec()
    req['hRpc'] = h
    req['pStat']['CodePage'] = 1252
    req['pTarget']['ulPropTag'] = 0x3001001F
    req['pTarget']['ulReserved'] = 0
    req['pTarget']['Value']['tag'] = 0x1F
    req['pTarget']['Value']['lpszW'] = 'C\x00'
    req['lpETable'] = NULL
    _tagarray(req, 'pPropTags', [0x3001001F, 0x3003001E])
    try_(lambda: raw(d, req))
    # GetMatches with each restriction type
    for filt in _filters():
        req = L.NspiGetMatches()
        req['hRpc'] = h
        req['pStat']['CodePage'] = 1252
        req['pReserved'] = NULL
        req['Filter'] = filt
        req['lpPropName'] = NULL
        req['ulRequested'] = 50
        _tagarray(req, 'pPropTags', [0x3001001F, 0x39FE001E])
        try_(lambda: raw(d, req))
    # calls the lab does not implement: requests only
    try_(lambda: nspi.hNspiGetTemplateInfo(d, h, pDN=SERVER_DN, dwFlags=nspi.TI_TEMPLATE,
                                           ulType=0, dwCodePage=1252, dwLocaleID=0x409))
    try_(lambda: nspi.hNspiGetTemplateInfo(d, h))
    class Eid:   # a permanent entry id (MS-OXNSPI 2.2.9.3)
        def getData(self):
            return (b'\x00' * 4 + nspi.GUID_NSPI + struct.pack('<II', 1, 0) +
                    USER_DN.encode() + b'\x00')
    eid = Eid()
    try_(lambda: nspi.hNspiModLinkAtt(d, h, 0, 0x8009101E, mids[0], [eid]))
    try_(lambda: nspi.hNspiGetNamesFromIDs(d, h, pPropTags=[0x80010003, 0x80020102]))
    try_(lambda: nspi.hNspiGetNamesFromIDs(d, h))
    # Impacket's NDR engine writes an array of pointers without the
    # elements' referent ids (the pointees follow inline), so even this
    # spec-shaped declaration does not give the MS-OXNSPI layout: deviant.
    rec.tag = 'impacket'
    req = NspiGetIDsFromNamesSpec()
    req['hRpc'] = h
    req['dwFlags'] = 2
    for lid in (0x8005, 0x8006):
        pn = nspi.PropertyName_r()
        pn['lpguid'] = nspi.GUID_NSPI
        pn['ulReserved'] = 0
        pn['lID'] = lid
        req['pNames'].append(pn)
    req['cPropNames'] = 2
    try_(lambda: raw(d, req))
    # Impacket's own (non-spec) layouts: kept apart, the codec must refuse them
    req = nspi.NspiGetIDsFromNames()
    req['hRpc'] = h
    pn = nspi.PropertyName_r()
    pn['lpguid'] = nspi.GUID_NSPI
    pn['ulReserved'] = 0
    pn['lID'] = 0x8005
    req['pNames'].append(pn)
    req['cPropNames'] = 1
    try_(lambda: raw(d, req))
    try_(lambda: nspi.hNspiGetProps(d, h, CurrentRec=mids[0], pPropTags=TAGS))
    try_(lambda: nspi.hNspiGetSpecialTable(d, h))
    try_(lambda: nspi.hNspiSeekEntries(d, h, 'bob', pPropTags=TAGS))
    rec.tag = None
    nspi.hNspiUnbind(d, h)
    d.disconnect()


def _value(tag, v):
    pv = nspi.PropertyValue_r()
    pv['ulPropTag'] = tag
    pv['ulReserved'] = 0
    pv['Value']['tag'] = tag & 0xFFFF
    if tag & 0xFFFF == 0x1F:
        pv['Value']['lpszW'] = v + '\x00'
    else:
        pv['Value']['l'] = v
    return pv


def _r(rt):
    f = nspi.Restriction_r()
    f['rt'] = rt
    f['res']['tag'] = rt
    return f


def _filters():
    out = []
    f = _r(3)
    f['res']['resContent']['ulFuzzyLevel'] = 0x10001
    f['res']['resContent']['ulPropTag'] = 0x3001001F
    f['res']['resContent']['lpProp'] = _value(0x3001001F, 'ali')
    out.append(f)
    f = _r(4)
    f['res']['resProperty']['relop'] = 4
    f['res']['resProperty']['ulPropTag'] = 0x39000003
    f['res']['resProperty']['lpProp'] = _value(0x39000003, 0)
    out.append(f)
    e = _r(8)
    e['res']['resExist']['ulReserved1'] = 0
    e['res']['resExist']['ulPropTag'] = 0x3003001F
    e['res']['resExist']['ulReserved2'] = 0
    out.append(e)
    b = _r(6)
    b['res']['resBitMask']['relBMR'] = 1
    b['res']['resBitMask']['ulPropTag'] = 0x0FFE0003
    b['res']['resBitMask']['ulMask'] = 8
    s = _r(7)
    s['res']['resSize']['relop'] = 2
    s['res']['resSize']['ulPropTag'] = 0x3001001F
    s['res']['resSize']['cb'] = 4
    c = _r(5)
    c['res']['resCompareProps']['relop'] = 4
    c['res']['resCompareProps']['ulPropTag1'] = 0x3001001F
    c['res']['resCompareProps']['ulPropTag2'] = 0x3001001F
    a = _r(0)
    a['res']['resAnd']['cRes'] = 2
    a['res']['resAnd']['lpRes'].append(e)
    a['res']['resAnd']['lpRes'].append(s)
    o = _r(1)
    o['res']['resOr']['cRes'] = 3
    o['res']['resOr']['lpRes'].append(a)
    o['res']['resOr']['lpRes'].append(b)
    o['res']['resOr']['lpRes'].append(c)
    n = _r(2)
    n['res']['resNot']['lpRes'] = o
    out.append(n)
    return out


def emsmdb_calls(rec, port):
    d = rec.wrap(EC.connect('127.0.0.1', port), 'emsmdb')
    c = EC.EmsmdbClient(d, compress=True)
    r = c.connect_ex(USER_DN)
    rec.last().parsed = {'szDisplayName': r['szDisplayName'], 'szDNPrefix': r['szDNPrefix']}
    [logon] = c.execute(EC.RopBuffer().logon(0, USER_DN))
    c.compress = False
    c.execute(EC.RopBuffer().open_folder(0, 1, logon['FolderIds'][4]))
    # the async context on the same connection
    a = d.alter_ctx(N.MSRPC_UUID_ASYNCEMSMDB)
    req = N.EcDoAsyncConnectEx()
    req['cxh'].set_raw(c.cxh)
    r = d.request(req, checkError=False)
    acxh = r['pacxh'].getData()
    rec.wrap(a, 'asyncemsmdb')
    req = N.EcDoAsyncWaitEx()
    req['acxh'].set_raw(acxh)
    req['ulFlagsIn'] = 0
    try_(lambda: a.request(req, checkError=False))
    EC.ec_dummy_rpc(d)
    # calls the lab does not implement: requests only
    req = EcRRegisterPushNotification()
    req['pcxh'].set_raw(c.cxh)
    req['iRpc'] = 0
    req['rgbContext'] = b'\x01\x02\x03\x04\x05'
    req['cbContext'] = 5
    req['grbitAdviseBits'] = 0xFFFFFFFF
    req['rgbCallbackAddress'] = b'\x02\x00\x1f\x90\x7f\x00\x00\x01' + b'\x00' * 8
    req['cbCallbackAddress'] = 16
    try_(lambda: raw(d, req))
    req = EcRUnregisterPushNotification()
    req['pcxh'].set_raw(c.cxh)
    req['iRpc'] = 0
    req['hNotification'] = 7
    try_(lambda: raw(d, req))
    req = EcDoRpcExt()
    req['pcxh'].set_raw(c.cxh)
    req['pulFlags'] = 3
    req['rgbIn'] = b'\x00\x00\x04\x00\x04\x00\x04\x00\x04\x00\x00\x00'
    req['cbIn'] = 12
    req['pcbOut'] = 0x8000
    req['Reserved0'] = b''
    req['Reserved1'] = 0
    try_(lambda: raw(d, req))
    for op in (7, 8):
        req = Empty()
        req.opnum = op
        try_(lambda: raw(d, req))
    c.disconnect()
    # Exchange 2003 calls
    c2 = EC.EmsmdbClient(d, use_ext2=False)
    c2.connect(USER_DN)
    c2.execute(EC.RopBuffer().logon(0, USER_DN))
    c2.disconnect()
    d.disconnect()


def capture():
    lab = Lab()
    rec = Recorder()
    try:
        rfr(rec, lab.ports['rfr'])
        nspi_calls(rec, lab.ports['nspi'])
        emsmdb_calls(rec, lab.ports['emsmdb'])
    finally:
        lab.close()
    return rec.calls


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    calls = capture()
    seen = {}
    os.makedirs(os.path.join(out, 'impacket-deviant'), exist_ok=True)
    for c in calls:
        k = (c.iface, c.opnum, c.tag)
        seen[k] = seen.get(k, 0) + 1
        d = os.path.join(out, 'impacket-deviant') if c.tag else out
        for direction, stub in (('in', c.stub_in), ('out', c.stub_out)):
            if stub is None:
                continue
            name = '%s-%d-%s-%d.bin' % (c.iface, c.opnum, direction, seen[k])
            with open(os.path.join(d, name), 'wb') as f:
                f.write(stub)
    print('%d calls captured' % len(calls))


if __name__ == '__main__':
    main()
