"""Tests for the Exchange lab upstream (run: /usr/bin/python3 -m pytest tests/lab).

The lab is started once as a subprocess; it is exercised with Impacket's own
clients (epm, oxabref, nspi), with emsmdb_client.py, and with a raw socket
client for the DCE/RPC corner cases (multiple contexts, feature negotiation,
assoc groups, fragmentation, pipelining, faults).
"""

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from impacket.dcerpc.v5 import transport, epm, oxabref, nspi            # noqa: E402
from impacket.dcerpc.v5.rpcrt import (DCERPCException, MSRPCHeader, MSRPCBind, CtxItem,  # noqa
                                      MSRPCBindAck, CtxItemResult, MSRPCRequestHeader,
                                      MSRPCRespHeader, MSRPC_BIND, MSRPC_ALTERCTX,
                                      MSRPC_REQUEST, MSRPC_RESPONSE, MSRPC_FAULT,
                                      MSRPC_BINDACK, MSRPC_ALTERCTX_R, PFC_FIRST_FRAG,
                                      PFC_LAST_FRAG)
from impacket.dcerpc.v5.dtypes import NULL                              # noqa: E402
from impacket.uuid import uuidtup_to_bin, string_to_bin                 # noqa: E402

import lzxpress                                                          # noqa: E402
import emsmdb_client as EC                                               # noqa: E402
import emsmdb_ndr as N                                                   # noqa: E402
from lab_nspi import NspiGetMatches                                      # noqa: E402

PY = '/usr/bin/python3'
ORG = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)'
SERVER_DN = ORG + '/cn=Configuration/cn=Servers/cn=EXLAB01'
ALICE = ORG + '/cn=Recipients/cn=alice'
NDR32 = ('8a885d04-1ceb-11c9-9fe8-08002b104860', '2.0')
NDR64 = ('71710533-beba-4937-8319-b5dbef9ccc36', '1.0')
NSPI_IF = ('f5cc5a18-4264-101a-8c59-08002b2f8426', '56.0')
RFR_IF = ('1544f5e0-613c-11d1-93df-00c04fd7bd09', '1.0')
EMSMDB_IF = ('a4f1db00-ca47-1067-b31f-00dd010662da', '0.81')
ASYNC_IF = ('5261574a-4572-206e-b268-6b199213b4e4', '0.1')
XCA = os.path.join(HERE, '..', 'data', 'xca-plain')


@pytest.fixture(scope='module')
def lab():
    proc = subprocess.Popen([PY, os.path.join(HERE, 'exchange_lab.py'), '--host', '127.0.0.1',
                             '--epm-port', '0'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith('READY '), line
    ports = dict((k, int(v)) for k, v in (kv.split('=') for kv in line.split()[1:]))
    # drain stderr so the lab never blocks on a full pipe
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    yield ports
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def dce_for(port, iface=None):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:127.0.0.1[%d]' % port)
    d = t.get_dce_rpc()
    d.connect()
    if iface is not None:
        d.bind(uuidtup_to_bin(iface))
    return d


# ---------------------------------------------------------------------------
# raw DCE/RPC client
# ---------------------------------------------------------------------------
class Raw(object):
    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', port), timeout=10)

    def send(self, data):
        self.s.sendall(data)

    def recv_pdu(self):
        hdr = b''
        while len(hdr) < 16:
            c = self.s.recv(16 - len(hdr))
            assert c, 'connection closed'
            hdr += c
        n = struct.unpack('<H', hdr[8:10])[0]
        body = b''
        while len(body) < n - 16:
            c = self.s.recv(n - 16 - len(body))
            assert c
            body += c
        return hdr + body

    def bind(self, items, assoc=0, alter=False, call_id=1, max_frag=5840):
        """items: list of (ctx_id, iface tuple, [transfer syntax tuples or 20-byte bins])."""
        b = MSRPCBind()
        b['max_tfrag'] = max_frag
        b['max_rfrag'] = max_frag
        b['assoc_group'] = assoc
        for ctx_id, iface, transfers in items:
            it = CtxItem()
            it['ContextID'] = ctx_id
            it['TransItems'] = len(transfers)
            it['AbstractSyntax'] = uuidtup_to_bin(iface)
            ts = [t if isinstance(t, bytes) else uuidtup_to_bin(t) for t in transfers]
            it['TransferSyntax'] = ts[0]
            data = it.getData() + b''.join(ts[1:])
            b['ctx_items'] += data
        b['ctx_num'] = len(items)
        body = struct.pack('<HHLBBH', max_frag, max_frag, assoc, len(items), 0, 0) + \
            b['ctx_items']
        h = MSRPCHeader()
        h['type'] = MSRPC_ALTERCTX if alter else MSRPC_BIND
        h['call_id'] = call_id
        h['pduData'] = body
        self.send(h.get_packet())
        resp = self.recv_pdu()
        assert resp[2] == (MSRPC_ALTERCTX_R if alter else MSRPC_BINDACK)
        max_x, max_r, group, sa_len = struct.unpack_from('<HHLH', resp, 16)
        off = 26 + sa_len
        off += (-off) % 4
        n = resp[off]
        results = []
        for i in range(n):
            r = CtxItemResult(resp[off + 4 + 24 * i:off + 28 + 24 * i])
            results.append((r['Result'], r['Reason'], r['TransferSyntax']))
        secaddr = resp[26:26 + sa_len].rstrip(b'\x00') if sa_len else b''
        return dict(max_xmit=max_x, max_recv=max_r, assoc=group, results=results,
                    secaddr=secaddr)

    def request_pdus(self, ctx_id, opnum, stub, call_id, frag=None):
        frag = frag or len(stub) or 1
        pdus = []
        for off in range(0, max(len(stub), 1), frag):
            chunk = stub[off:off + frag]
            r = MSRPCRequestHeader()
            r['type'] = MSRPC_REQUEST
            r['flags'] = (PFC_FIRST_FRAG if off == 0 else 0) | \
                (PFC_LAST_FRAG if off + frag >= len(stub) else 0)
            r['call_id'] = call_id
            r['ctx_id'] = ctx_id
            r['op_num'] = opnum
            r['alloc_hint'] = len(stub) - off
            r['pduData'] = chunk
            pdus.append(r.get_packet())
        return pdus

    def read_response(self):
        """Reassemble one response; returns (ptype, call_id, stub or status, nfrags)."""
        stub = b''
        nfrags = 0
        while True:
            p = self.recv_pdu()
            nfrags += 1
            h = MSRPCRespHeader(p)
            if p[2] == MSRPC_FAULT:
                return MSRPC_FAULT, h['call_id'], struct.unpack('<L', h['pduData'][:4])[0], \
                    nfrags
            stub += h['pduData']
            if h['flags'] & PFC_LAST_FRAG:
                return MSRPC_RESPONSE, h['call_id'], stub, nfrags

    def call(self, ctx_id, opnum, stub, call_id=5, frag=None):
        for p in self.request_pdus(ctx_id, opnum, stub, call_id, frag):
            self.send(p)
        return self.read_response()


# ---------------------------------------------------------------------------
# epmapper / RFR
# ---------------------------------------------------------------------------
def test_epm_map(lab):
    d = dce_for(lab['epm'])
    for iface, port in ((NSPI_IF, lab['nspi']), (RFR_IF, lab['rfr']),
                        (EMSMDB_IF, lab['emsmdb']), (ASYNC_IF, lab['emsmdb'])):
        b = epm.hept_map('127.0.0.1', uuidtup_to_bin(iface), protocol='ncacn_ip_tcp', dce=d)
        assert b == 'ncacn_ip_tcp:127.0.0.1[%d]' % port
    with pytest.raises(DCERPCException) as e:
        epm.hept_map('127.0.0.1', uuidtup_to_bin(('12345678-1234-abcd-ef00-0123456789ab',
                                                  '1.0')), protocol='ncacn_ip_tcp', dce=d)
    assert e.value.get_error_code() == 0x16c9a0d6
    d.disconnect()


def test_epm_lookup(lab):
    d = dce_for(lab['epm'])
    entries = epm.hept_lookup('127.0.0.1', dce=d)
    bindings = sorted(epm.PrintStringBinding(e['tower']['Floors']) for e in entries)
    assert len(entries) == 4
    assert 'ncacn_ip_tcp:127.0.0.1[%d]' % lab['nspi'] in bindings
    one = epm.hept_lookup('127.0.0.1', inquiry_type=epm.RPC_C_EP_MATCH_BY_IF,
                          ifId=uuidtup_to_bin(RFR_IF), dce=d)
    assert len(one) == 1 and b'RFR' in one[0]['annotation']
    d.disconnect()


def test_epm_lookup_paged_and_handle_free(lab):
    r = Raw(lab['epm'])
    r.bind([(0, ('e1af8308-5d1f-11c9-91a4-08002b14a0fa', '3.0'), [NDR32])])
    req = epm.ept_lookup()
    req['inquiry_type'] = 0
    req['object'] = NULL
    req['Ifid'] = NULL
    req['vers_option'] = 1
    req['max_ents'] = 3
    kind, _, stub, _ = r.call(0, 2, req.getData())
    resp = epm.ept_lookupResponse(stub)
    assert resp['num_ents'] == 3 and not resp['entry_handle'].isNull()
    req['entry_handle'] = resp['entry_handle']
    kind, _, stub, _ = r.call(0, 2, req.getData(), call_id=6)
    resp2 = epm.ept_lookupResponse(stub)
    assert resp2['num_ents'] == 1 and resp2['entry_handle'].isNull()
    # ept_lookup_handle_free on a fresh handle
    kind, _, stub, _ = r.call(0, 2, req.getData().replace(
        resp['entry_handle'].getData(), b'\x00' * 20), call_id=7)
    h = epm.ept_lookupResponse(stub)['entry_handle'].getData()
    kind, _, stub, _ = r.call(0, 4, h, call_id=8)
    assert kind == MSRPC_RESPONSE and stub[:20] == b'\x00' * 20 and stub[20:24] == b'\0' * 4


def test_rfr(lab):
    d = dce_for(lab['rfr'], RFR_IF)
    r = oxabref.hRfrGetNewDSA(d, ALICE)
    assert r['ppszServer'] == 'exlab01.lab.example'
    r = oxabref.hRfrGetFQDNFromServerDN(d, SERVER_DN)
    assert r['ppszServerFQDN'] == 'exlab01.lab.example'
    d.disconnect()


# ---------------------------------------------------------------------------
# NSPI
# ---------------------------------------------------------------------------
def mids_of(arr):
    return [x['Data'] if hasattr(x, 'fields') else x for x in arr]


def ALL_MIDS_BOB(d, h):
    return mids_of(nspi.hNspiDNToMId(d, h, [ORG + '/cn=Recipients/cn=bob'])
                   ['ppOutMIds']['aulPropTag'])[0]


def test_nspi_directory(lab):
    d = dce_for(lab['nspi'], NSPI_IF)
    resp = nspi.hNspiBind(d)
    assert resp['ErrorCode'] == 0
    h = resp['contextHandle']
    rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(d, h)['ppRows'])
    assert rows[0][0x3001001F] == 'Global Address List' and rows[0][0xFFFD0003] == 0
    r = nspi.hNspiQueryRows(d, h, Count=100, pPropTags=[
        0x3001001E, 0x3001001F, 0x3003001E, 0x3A00001F, 0x39FE001F, 0x0FFE0003, 0x39000003,
        0x0FFF0102, 0x0FF60102, 0x8170101E, 0x8170101F, 0x8006001E, 0x8006001F])
    rows = nspi.simplifyPropertyRowSet(r['ppRows'])
    names = [x[0x3001001F] for x in rows]
    assert names == sorted(names, key=str.lower) and len(rows) == 7
    assert 'Lab Staff' in names and 'Alice Anders' in names
    alice = [x for x in rows if x[0x3A00001F] == 'alice'][0]
    assert alice[0x3001001E] == 'Alice Anders'
    assert alice[0x39FE001F] == 'alice@lab.example'
    assert 'ncacn_ip_tcp:EXLAB01.lab.example' in alice[0x8170101E]
    assert 'ncalrpc:EXLAB01' in alice[0x8170101F]
    assert alice[0x8006001E] == alice[0x8006001F] == SERVER_DN + '/cn=Microsoft Private MDB'
    assert str(alice[0x0FFF0102]) == ALICE            # PermanentEntryID
    assert r['pStat']['CurrentRec'] == nspi.MID_END_OF_TABLE

    mids = mids_of(nspi.hNspiDNToMId(d, h, [SERVER_DN, ALICE, '/o=Nobody/cn=x'])
                   ['ppOutMIds']['aulPropTag'])
    assert mids[0] and mids[1] and mids[2] == 0
    srv = nspi.simplifyPropertyRow(nspi.hNspiGetProps(
        d, h, CurrentRec=mids[0], pPropTags=[0x8170101F, 0x8170101E, 0x3001001E])['ppRows'])
    assert srv[0x8170101F] == srv[0x8170101E] and srv[0x3001001E] == 'EXLAB01'
    # missing property -> PtypErrorCode + ErrorsReturned
    with pytest.raises(nspi.DCERPCSessionError) as e:
        nspi.hNspiGetProps(d, h, CurrentRec=mids[1], pPropTags=[0x3001001F, 0x12340003])
    assert e.value.get_error_code() == 0x00040380
    row = nspi.simplifyPropertyRow(e.value.get_packet()['ppRows'])
    assert row[0x3001001F] == 'Alice Anders' and row[0x1234000A] == 0x8004010F
    proplist = mids_of(nspi.hNspiGetPropList(d, h, dwMId=mids[1])['ppOutMIds']['aulPropTag'])
    assert 0x8006001E in proplist and 0x8170101E in proplist
    cols = mids_of(nspi.hNspiQueryColumns(d, h)['ppColumns']['aulPropTag'])
    assert 0x3001001F in cols
    # Impacket has the NspiCompareMIds call but no helper for it
    cmpreq = nspi.NspiCompareMIds()
    cmpreq['hRpc'] = h
    cmpreq['MId1'] = mids[1]
    cmpreq['MId2'] = ALL_MIDS_BOB(d, h)
    cmp = d.request(cmpreq)
    assert cmp['plResult'] < 0                       # alice sorts before bob
    r = nspi.hNspiResolveNamesW(d, h, pPropTags=[0x3001001F, 0x3003001F],
                                paStr=['alice', 'carol@lab.example', 'nobody', 'Lab'])
    m = mids_of(r['ppMIds']['aulPropTag'])
    assert m[0] == mids[1] and m[1] > 2 and m[2] == nspi.MID_UNRESOLVED
    assert len(nspi.simplifyPropertyRowSet(r['ppRows'])) == 3
    r = nspi.hNspiResolveNames(d, h, pPropTags=[0x3001001E], paStr=['bob'])
    assert nspi.simplifyPropertyRowSet(r['ppRows'])[0][0x3001001E] == 'Bob Brown'
    r = nspi.hNspiSeekEntries(d, h, 'C')
    assert r['pStat']['CurrentRec'] == mids_of(nspi.hNspiDNToMId(
        d, h, [ORG + '/cn=Recipients/cn=carol'])['ppOutMIds']['aulPropTag'])[0]
    st = nspi.STAT()
    st['CurrentRec'] = nspi.MID_BEGINNING_OF_TABLE
    st['Delta'] = 2
    r = nspi.hNspiUpdateStat(d, h, st)
    assert r['pStat']['NumPos'] == 2 and r['pStat']['TotalRecs'] == 7
    assert nspi.hNspiUnbind(d, h)['ErrorCode'] == 1
    d.disconnect()


def _restr(rt, **kw):
    r = nspi.Restriction_r()
    r['rt'] = rt
    r['res']['tag'] = rt
    return r


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


def _get_matches(d, h, filt, tags=(0x3001001F,)):
    req = NspiGetMatches()
    req['hRpc'] = h
    req['pReserved'] = NULL
    req['Filter'] = filt
    req['lpPropName'] = NULL
    req['ulRequested'] = 50
    for t in tags:
        x = nspi.DWORD()
        x['Data'] = t
        req['pPropTags']['aulPropTag'].append(x)
    req['pPropTags']['cValues'] = len(tags)
    req.fields['pPropTags'].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = \
        len(tags) + 1
    stub = req.getData()
    from lab_nspi import NspiGetMatchesResponse
    resp = d.request(req, checkError=False)
    return resp


def test_nspi_get_matches(lab):
    r = Raw(lab['nspi'])
    r.bind([(0, NSPI_IF, [NDR32])])
    b = nspi.NspiBind()
    b['pStat']['CodePage'] = 1252
    kind, _, stub, _ = r.call(0, 0, b.getData())
    h = nspi.NspiBindResponse(stub)['contextHandle']

    def matches(filt):
        req = NspiGetMatches()
        req['hRpc'] = h
        req['pStat']['CodePage'] = 1252
        req['pReserved'] = NULL
        req['Filter'] = filt
        req['lpPropName'] = NULL
        req['ulRequested'] = 50
        x = nspi.DWORD()
        x['Data'] = 0x3001001F
        req['pPropTags']['aulPropTag'].append(x)
        req['pPropTags']['cValues'] = 1
        req.fields['pPropTags'].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = 2
        kind, _, stub, _ = r.call(0, 5, req.getData())
        assert kind == MSRPC_RESPONSE
        from lab_nspi import NspiGetMatchesResponse
        resp = NspiGetMatchesResponse(stub)
        assert resp['ErrorCode'] == 0
        return sorted(x[0x3001001F] for x in nspi.simplifyPropertyRowSet(resp['ppRows']))

    def content(tag, text, fuzzy):
        f = nspi.Restriction_r()
        f['rt'] = 3
        f['res']['tag'] = 3
        f['res']['resContent']['ulFuzzyLevel'] = fuzzy
        f['res']['resContent']['ulPropTag'] = tag
        f['res']['resContent']['lpProp']['ulPropTag'] = tag
        f['res']['resContent']['lpProp']['ulReserved'] = 0
        f['res']['resContent']['lpProp']['Value']['tag'] = tag & 0xFFFF
        f['res']['resContent']['lpProp']['Value']['lpszW'] = text + '\x00'
        return f

    def prop_eq(tag, value):
        f = nspi.Restriction_r()
        f['rt'] = 4
        f['res']['tag'] = 4
        f['res']['resProperty']['relop'] = 4
        f['res']['resProperty']['ulPropTag'] = tag
        f['res']['resProperty']['lpProp']['ulPropTag'] = tag
        f['res']['resProperty']['lpProp']['ulReserved'] = 0
        f['res']['resProperty']['lpProp']['Value']['tag'] = tag & 0xFFFF
        f['res']['resProperty']['lpProp']['Value']['l'] = value
        return f

    def exist(tag):
        f = nspi.Restriction_r()
        f['rt'] = 8
        f['res']['tag'] = 8
        f['res']['resExist']['ulReserved1'] = 0
        f['res']['resExist']['ulPropTag'] = tag
        f['res']['resExist']['ulReserved2'] = 0
        return f

    def combine(rt, subs):
        f = nspi.Restriction_r()
        f['rt'] = rt
        f['res']['tag'] = rt
        key = 'resAnd' if rt == 0 else 'resOr'
        f['res'][key]['cRes'] = len(subs)
        for s in subs:
            f['res'][key]['lpRes'].append(s)
        return f

    def negate(sub):
        f = nspi.Restriction_r()
        f['rt'] = 2
        f['res']['tag'] = 2
        f['res']['resNot']['lpRes'] = sub
        return f

    assert matches(content(0x3001001F, 'alice', 0x00010002)) == ['Alice Anders']
    assert matches(content(0x3001001F, 'ar', 0x00010001)) == ['Carol Clark']
    assert matches(prop_eq(0x39000003, 1)) == ['Lab Staff']
    assert len(matches(exist(0x3A06001F))) == 5                      # users with given name
    assert matches(combine(0, [exist(0x3A06001F), content(0x3A18001F, 'sales', 0x10000)])) \
        == ['Carol Clark', 'Dave Davis']
    assert matches(combine(1, [content(0x3A00001F, 'bob', 0x10000),
                               content(0x3A00001F, 'erin', 0x10000)])) == \
        ['Bob Brown', 'Erin Evans']
    assert 'Lab Staff' not in matches(negate(prop_eq(0x39000003, 1)))


def test_nspi_handle_on_second_connection(lab):
    r1 = Raw(lab['nspi'])
    ack = r1.bind([(0, NSPI_IF, [NDR32])])
    assert ack['assoc'] != 0 and ack['secaddr'] == str(lab['nspi']).encode()
    b = nspi.NspiBind()
    kind, _, stub, _ = r1.call(0, 0, b.getData())
    h = nspi.NspiBindResponse(stub)['contextHandle']
    r2 = Raw(lab['nspi'])
    ack2 = r2.bind([(0, NSPI_IF, [NDR32])], assoc=ack['assoc'])
    assert ack2['assoc'] == ack['assoc']
    q = nspi.NspiQueryRows()
    q['hRpc'] = h
    q['lpETable'] = NULL
    q['Count'] = 2
    q['pPropTags'] = NULL
    kind, _, stub, _ = r2.call(0, 3, q.getData())
    assert kind == MSRPC_RESPONSE
    assert nspi.NspiQueryRowsResponse(stub)['ppRows']['cRows'] == 2
    # a different association group does not see the handle
    r3 = Raw(lab['nspi'])
    r3.bind([(0, NSPI_IF, [NDR32])])
    kind, _, status, _ = r3.call(0, 3, q.getData())
    assert kind == MSRPC_FAULT and status == 0x1c00001a


# ---------------------------------------------------------------------------
# DCE/RPC runtime behaviour
# ---------------------------------------------------------------------------
def test_bind_negotiation(lab):
    r = Raw(lab['emsmdb'])
    btfn = string_to_bin('6cb71c2c-9812-4540-0300-000000000000') + struct.pack('<HH', 1, 0)
    ack = r.bind([(0, EMSMDB_IF, [NDR64]),
                  (1, EMSMDB_IF, [NDR32]),
                  (2, EMSMDB_IF, [btfn]),
                  (3, ('12345678-1234-abcd-ef00-0123456789ab', '1.0'), [NDR32]),
                  (4, ASYNC_IF, [NDR64, NDR32])], max_frag=8000)
    res = ack['results']
    assert res[0][:2] == (2, 2)
    assert res[1] == (0, 0, uuidtup_to_bin(NDR32))
    assert res[2][0] == 3
    assert res[3][:2] == (2, 1)
    assert res[4] == (0, 0, uuidtup_to_bin(NDR32))
    assert ack['max_xmit'] == 5840 and ack['max_recv'] == 5840
    # alter_context adds a context on the same connection
    ack2 = r.bind([(7, RFR_IF, [NDR32]), (8, EMSMDB_IF, [NDR32])], alter=True, call_id=2)
    assert ack2['results'][0][:2] == (2, 1) and ack2['results'][1][0] == 0
    kind, _, stub, _ = r.call(8, 6, b'', call_id=3)           # EcDummyRpc
    assert kind == MSRPC_RESPONSE and stub == b'\0' * 4
    kind, _, status, _ = r.call(1, 99, b'', call_id=4)
    assert kind == MSRPC_FAULT and status == 0x1c010002      # nca_op_rng_error
    kind, _, status, _ = r.call(42, 6, b'', call_id=5)
    assert kind == MSRPC_FAULT and status == 0x1c010003      # nca_unk_if
    kind, _, status, _ = r.call(1, 10, b'\x01\x02', call_id=6)
    assert kind == MSRPC_FAULT and status == 0x000006f7      # nca_s_fault_ndr
    ack3 = Raw(lab['emsmdb']).bind([(0, EMSMDB_IF, [NDR32])], max_frag=2048)
    assert ack3['max_xmit'] == 2048


def test_fragmented_and_pipelined(lab):
    r = Raw(lab['nspi'])
    r.bind([(0, NSPI_IF, [NDR32])], max_frag=1024)
    b = nspi.NspiBind()
    kind, _, stub, _ = r.call(0, 0, b.getData(), frag=8)      # request in 8-byte fragments
    h = nspi.NspiBindResponse(stub)['contextHandle']
    q = nspi.NspiQueryRows()
    q['hRpc'] = h
    q['lpETable'] = NULL
    q['Count'] = 50
    tags = [0x3001001F, 0x3003001F, 0x8170101F, 0x8006001F, 0x800F101F, 0x0FFF0102]
    for t in tags:
        x = nspi.DWORD()
        x['Data'] = t
        q['pPropTags']['aulPropTag'].append(x)
    q['pPropTags']['cValues'] = len(tags)
    q.fields['pPropTags'].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = \
        len(tags) + 1
    # two pipelined calls, the first one fragmented
    data = b''.join(r.request_pdus(0, 3, q.getData(), 10, frag=16)) + \
        b''.join(r.request_pdus(0, 3, q.getData(), 11))
    r.send(data)
    k1, c1, s1, n1 = r.read_response()
    k2, c2, s2, n2 = r.read_response()
    assert (k1, c1, k2, c2) == (MSRPC_RESPONSE, 10, MSRPC_RESPONSE, 11)
    assert n1 > 1                                           # response was fragmented
    rows1 = nspi.simplifyPropertyRowSet(nspi.NspiQueryRowsResponse(s1)['ppRows'])
    rows2 = nspi.simplifyPropertyRowSet(nspi.NspiQueryRowsResponse(s2)['ppRows'])
    norm = lambda rows: [dict((k, str(v)) for k, v in x.items()) for x in rows]   # noqa
    assert len(rows1) == 7 and norm(rows1) == norm(rows2)


def test_concurrent_clients(lab):
    errors = []

    def worker():
        try:
            for _ in range(3):
                d = dce_for(lab['nspi'], NSPI_IF)
                h = nspi.hNspiBind(d)['contextHandle']
                rows = nspi.hNspiQueryRows(d, h, pPropTags=[0x3001001F])['ppRows']['cRows']
                assert rows == 7
                d.disconnect()
        except Exception as e:   # pragma: no cover
            errors.append(e)
    ts = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    assert not errors


# ---------------------------------------------------------------------------
# EMSMDB
# ---------------------------------------------------------------------------
PidTagFolderId, PidTagMid, PidTagDisplayName = 0x67480014, 0x674A0014, 0x3001001F
PidTagContentCount, PidTagSubject, PidTagBody = 0x36020003, 0x0037001F, 0x1000001F
PidTagAttachDataBinary, PidTagAttachLongFilename = 0x37010102, 0x3707001F


def online_session(lab, use_ext2=True, compress=False, xor=True, flags=0, server='EXLAB01'):
    """server: the server name the DN prefix names (through a non-transparent
    proxy, the proxy's own)."""
    dce = EC.connect('127.0.0.1', lab['emsmdb'])
    c = EC.EmsmdbClient(dce, use_ext2=use_ext2, compress=compress, xor=xor)
    r = c.connect_ex(ALICE) if use_ext2 else c.connect(ALICE)
    assert r['ErrorCode'] == 0
    assert r['szDisplayName'].rstrip('\x00') == 'Alice Anders'
    assert r['szDNPrefix'].rstrip('\x00').endswith('/cn=Servers/cn=' + server)
    rop_session(c, flags)
    assert c.disconnect()['ErrorCode'] == 0
    dce.disconnect()


def rop_session(c, flags=0):
    """The ROP part of the online session on a connected client c (RPC's
    EmsmdbClient or MAPI/HTTP's EmsmdbHttp); returns the submitted subject."""
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE), flags)
    assert logon['ReturnValue'] == 0 and len(logon['FolderIds']) == 13
    fids = logon['FolderIds']
    inbox, outbox = fids[4], fids[5]
    cols = [PidTagFolderId, PidTagDisplayName, PidTagContentCount]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, fids[3]).get_hierarchy_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 50, cols), flags)
    assert [x['ReturnValue'] for x in res] == [0, 0, 0, 0]
    names = [row[PidTagDisplayName] for row in res[3]['Rows']]
    assert 'Inbox' in names and 'Sent Items' in names
    assert [row[PidTagFolderId] for row in res[3]['Rows'] if
            row[PidTagDisplayName] == 'Inbox'] == [inbox]
    subject = 'Lab test %f' % time.time()
    body = 'Hello from the lab, EXLAB01.lab.example \u00e9\u00e8 ' * 40
    attach = bytes(range(256)) * 150             # 38 KB: several ReadStream/fragments
    b = EC.RopBuffer().create_message(0, 3, outbox) \
        .set_properties(3, [(PidTagSubject, subject), (0x001A001F, 'IPM.Note')]) \
        .open_stream(3, 4, PidTagBody, 2) \
        .write_stream(4, body.encode('utf-16le')).commit_stream(4).release(4) \
        .create_attachment(3, 5) \
        .set_properties(5, [(PidTagAttachLongFilename, 'data.bin'), (0x37050003, 1)]) \
        .open_stream(5, 6, PidTagAttachDataBinary, 2)
    for off in range(0, len(attach), 8000):
        b.write_stream(6, attach[off:off + 8000])
    b.commit_stream(6).save_changes_attachment(5, 5).save_changes_message(3, 3) \
        .submit_message(3)
    res = c.execute(b, flags)
    assert all(x['ReturnValue'] == 0 for x in res), res
    mcols = [PidTagMid, PidTagSubject, 0x0E1B000B]
    res = c.execute(EC.RopBuffer().open_folder(0, 7, inbox).get_contents_table(7, 8)
                    .set_columns(8, mcols).query_rows(8, 100, mcols), flags)
    mine = [row for row in res[3]['Rows'] if row[PidTagSubject] == subject]
    assert len(mine) == 1 and mine[0][0x0E1B000B] is True
    mid = mine[0][PidTagMid]
    res = c.execute(EC.RopBuffer().open_message(0, 9, inbox, mid)
                    .open_stream(9, 10, PidTagBody, 0).read_stream(10, 0xBABE + 0x10000)
                    .get_attachment_table(9, 11)
                    .set_columns(11, [0x0E210003, PidTagAttachLongFilename])
                    .query_rows(11, 10, [0x0E210003, PidTagAttachLongFilename])
                    .open_attachment(9, 12, 0).open_stream(12, 13, PidTagAttachDataBinary, 0),
                    flags)
    assert res[0]['NormalizedSubject'] == subject
    assert res[2]['Data'].decode('utf-16le') == body
    assert res[5]['Rows'] == [{0x0E210003: 0, PidTagAttachLongFilename: 'data.bin'}]
    assert res[7]['StreamSize'] == len(attach)
    got = b''
    while len(got) < len(attach):
        [rd] = c.execute(EC.RopBuffer().read_stream(13, 10000), flags)
        assert rd['ReturnValue'] == 0 and rd['Data']
        got += rd['Data']
    assert got == attach
    [rd] = c.execute(EC.RopBuffer().read_stream(13, 10000), flags)
    assert rd['Data'] == b''
    [gp] = c.execute(EC.RopBuffer().get_properties_specific(9, [PidTagSubject, 0x0037001E,
                                                                0x7777001F]), flags)
    assert gp['Row'][PidTagSubject] == subject and gp['Row'][0x0037001E] == subject
    assert gp['Row'][0x7777001F] == ('error', 0x8004010F)
    [rf] = c.execute(EC.RopBuffer().get_receive_folder(0, 'IPM.Note'), flags)
    assert rf['FolderId'] == inbox
    # unknown ROP -> ecNotSupported
    out = EC.RopBuffer().raw(b'\x99\x00\x00', parser=EC.RopBuffer._hdr)
    [unk] = c.execute(out, flags)
    assert unk['rop'] == 0x99 and unk['ReturnValue'] == 0x80040102
    return subject


def test_emsmdb_online_session(lab):
    online_session(lab)


def test_emsmdb_compressed_session(lab):
    online_session(lab, compress=True, xor=True)


def test_emsmdb_plain_payloads(lab):
    online_session(lab, compress=False, xor=False,
                   flags=N.EXT2_NO_COMPRESSION | N.EXT2_NO_XOR_MAGIC)


def test_emsmdb_legacy_ecdorpc(lab):
    online_session(lab, use_ext2=False)


def test_emsmdb_server_compresses(lab):
    dce = EC.connect('127.0.0.1', lab['emsmdb'])
    c = EC.EmsmdbClient(dce)
    c.connect_ex(ALICE)
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    buf = EC.RopBuffer().open_folder(0, 1, logon['FolderIds'][4]) \
        .get_properties_specific(1, [PidTagDisplayName] * 200).build(c.handles)
    resp, payloads = EC.ec_do_rpc_ext2(dce, c.cxh, buf)
    assert payloads[0][0] & N.RHE_COMPRESSED and payloads[0][0] & N.RHE_XORMAGIC
    assert len(N.array_bytes(resp['rgbOut'])) < len(payloads[0][1])
    c.disconnect()


def test_emsmdb_unknown_user_and_dummy(lab):
    dce = EC.connect('127.0.0.1', lab['emsmdb'])
    assert EC.ec_dummy_rpc(dce)['ErrorCode'] == 0
    r = EC.ec_do_connect_ex(dce, ORG + '/cn=Recipients/cn=mallory')
    assert r['ErrorCode'] == 0x3EB and r['pcxh'].getData() == b'\0' * 20
    with pytest.raises(DCERPCException):
        EC.ec_do_rpc_ext2(dce, b'\0' * 4 + b'\x11' * 16, b'\x02\x00')
    dce.disconnect()


# ---------------------------------------------------------------------------
# LZ77 + DIRECT2
# ---------------------------------------------------------------------------
def test_lz77_vectors():
    n = 0
    for f in sorted(os.listdir(os.path.join(XCA, 'compressed-plain'))):
        base = f[:-len('.lzplain')]
        exp = os.path.join(XCA, 'decompressed', base + '.decomp')
        if not os.path.exists(exp):
            continue
        with open(os.path.join(XCA, 'compressed-plain', f), 'rb') as fh:
            comp = fh.read()
        with open(exp, 'rb') as fh:
            plain = fh.read()
        assert lzxpress.decompress(comp, len(plain)) == plain, f
        n += 1
    assert n >= 40


def test_lz77_roundtrip():
    samples = [b'', b'a', b'abc' * 1000, bytes(range(256)) * 20, b'\0' * 70000]
    with open(os.path.join(XCA, 'decompressed', 'setup.log.decomp'), 'rb') as fh:
        samples.append(fh.read()[:50000])
    for s in samples:
        c = lzxpress.compress(s)
        assert lzxpress.decompress(c, len(s)) == s
    assert len(lzxpress.compress(b'abc' * 1000)) < 100
    with pytest.raises(lzxpress.LzError):
        lzxpress.decompress(b'\xff\xff\xff\xff\x10\x00')         # offset beyond output


def test_nspi_spec_layouts(lab):
    """MS-OXNSPI IDL layouts (pStat by reference, unique lpETable/pPropTags)."""
    from lab_nspi import NspiGetPropsSpec, NspiGetSpecialTableSpec, NspiSeekEntriesSpec, \
        NspiGetSpecialTableResponse
    r = Raw(lab['nspi'])
    r.bind([(0, NSPI_IF, [NDR32])])
    kind, _, stub, _ = r.call(0, 0, nspi.NspiBind().getData())
    h = nspi.NspiBindResponse(stub)['contextHandle']
    dn = nspi.NspiDNToMId()
    dn['hRpc'] = h
    s = nspi.LPSTR()
    s['Data'] = SERVER_DN + '\x00'
    dn['pNames']['Strings'].append(s)
    dn['pNames']['Count'] = 1
    kind, _, stub, _ = r.call(0, 7, dn.getData(), call_id=2)
    from lab_nspi import NspiDNToMIdResponse
    mid = mids_of(NspiDNToMIdResponse(stub)['ppOutMIds']['aulPropTag'])[0]
    gp = NspiGetPropsSpec()
    gp['hRpc'] = h
    gp['pStat']['CurrentRec'] = mid
    gp['pStat']['CodePage'] = 0x4B0                      # CP_WINUNICODE
    x = nspi.DWORD()
    x['Data'] = 0x8170101E
    gp['pPropTags']['aulPropTag'].append(x)
    gp['pPropTags']['cValues'] = 1
    gp.fields['pPropTags'].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = 2
    kind, _, stub, _ = r.call(0, 9, gp.getData(), call_id=3)
    row = nspi.simplifyPropertyRow(nspi.NspiGetPropsResponse(stub)['ppRows'])
    # String8 asked with CP_WINUNICODE comes back as PtypMultipleString
    assert row == {0x8170101F: ['ncacn_ip_tcp:EXLAB01.lab.example', 'ncalrpc:EXLAB01',
                                'ncacn_http:EXLAB01.lab.example', 'netbios:EXLAB01']}
    st = NspiGetSpecialTableSpec()
    st['hRpc'] = h
    st['dwFlags'] = 0x4
    st['lpVersion'] = 0
    kind, _, stub, _ = r.call(0, 12, st.getData(), call_id=4)
    rows = nspi.simplifyPropertyRowSet(NspiGetSpecialTableResponse(stub)['ppRows'])
    assert [x[0x3001001F] for x in rows] == ['Global Address List', 'All Users']
    se = NspiSeekEntriesSpec()
    se['hRpc'] = h
    se['pTarget']['ulPropTag'] = 0x3001001F
    se['pTarget']['Value']['tag'] = 0x1F
    se['pTarget']['Value']['lpszW'] = 'bob\x00'
    se['lpETable'] = NULL
    x = nspi.DWORD()
    x['Data'] = 0x3001001F
    se['pPropTags']['aulPropTag'].append(x)
    se['pPropTags']['cValues'] = 1
    se.fields['pPropTags'].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = 2
    kind, _, stub, _ = r.call(0, 4, se.getData(), call_id=5)
    resp = nspi.NspiSeekEntriesResponse(stub)
    assert resp['ErrorCode'] == 0
    assert nspi.simplifyPropertyRowSet(resp['ppRows'])[0][0x3001001F] == 'Bob Brown'
