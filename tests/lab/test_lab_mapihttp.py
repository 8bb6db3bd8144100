"""Tests for the lab's MAPI over HTTP upstream (lab_mapihttp.py) with
mapihttp_client.py on python3-requests / python3-requests-ntlm, Python's ssl
(certificate made with the openssl CLI) and Impacket's NSPI client for the RPC
side of the comparisons.

Run: /usr/bin/python3 -m pytest -q tests/lab/test_lab_mapihttp.py
"""

import base64
import http.client
import os
import signal
import ssl
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import requests                                                        # noqa: E402
from requests.auth import HTTPBasicAuth                                # noqa: E402
from requests_ntlm import HttpNtlmAuth                                 # noqa: E402
from ntlm_auth.ntlm import NtlmContext                                 # noqa: E402
from impacket.dcerpc.v5 import nspi                                    # noqa: E402

import emsmdb_client as EC                                             # noqa: E402
import mapihttp_client as MH                                           # noqa: E402
import mapihttp_codec as C                                             # noqa: E402
from test_lab import (PY, ORG, SERVER_DN, ALICE, NSPI_IF, dce_for, mids_of,  # noqa: E402
                      rop_session, PidTagMid, PidTagSubject)

PASSWORDS = {'alice': 'Alice-Pw.1', 'bob': 'Bob:pw 2', 'Administrator': 'Adm1n!'}
BOB = ORG + '/cn=Recipients/cn=bob'
CAROL = ORG + '/cn=Recipients/cn=carol'
STAFF = ORG + '/cn=Recipients/cn=staff'
NS_RESP = '{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}'


def start_lab(args):
    proc = subprocess.Popen([PY, os.path.join(HERE, 'exchange_lab.py'), '--host', '127.0.0.1',
                             '--epm-port', '0', '--mapihttp-port', '0'] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith('READY ') and 'mapihttp=' in line, line
    ports = dict((k, int(v)) for k, v in (kv.split('=') for kv in line.split()[1:]))
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, ports


def stop_lab(proc):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


@pytest.fixture(scope='module')
def tlsdir(tmp_path_factory):
    d = tmp_path_factory.mktemp('mhlab')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
                    '-keyout', str(d / 'key.pem'), '-out', str(d / 'cert.pem'),
                    '-subj', '/CN=exlab01.lab.example',
                    '-addext', 'subjectAltName=DNS:exlab01.lab.example,IP:127.0.0.1'],
                   check=True, capture_output=True)
    with open(d / 'users', 'w') as f:
        f.write('# lab accounts\n')
        for u, p in PASSWORDS.items():
            f.write('%s:LAB:%s\n' % (u, p))
    return d


@pytest.fixture(scope='module')
def lab(tlsdir):
    """TLS, NTLM + Basic, PENDING every 0.2 s."""
    proc, ports = start_lab(['--tls-cert', str(tlsdir / 'cert.pem'),
                             '--tls-key', str(tlsdir / 'key.pem'),
                             '--users', str(tlsdir / 'users'), '--http-auth', 'ntlm,basic',
                             '--pending-period', '0.2', '--notification-wait', '60'])
    ports['base'] = 'https://127.0.0.1:%d' % ports['mapihttp']
    ports['ca'] = str(tlsdir / 'cert.pem')
    yield ports
    stop_lab(proc)


@pytest.fixture(scope='module')
def slowlab():
    """Plain HTTP, no authentication, every request delayed past X-PendingPeriod."""
    proc, ports = start_lab(['--http-auth', 'none', '--pending-period', '0.1',
                             '--pending-delay', '0.5', '--notification-wait', '1'])
    ports['base'] = 'http://127.0.0.1:%d' % ports['mapihttp']
    yield ports
    stop_lab(proc)


def ntlm(user='alice'):
    return HttpNtlmAuth('LAB\\' + user, PASSWORDS[user])


def basic(user='alice'):
    return HTTPBasicAuth('LAB\\' + user, PASSWORDS[user])


def ems_for(lab, auth, **kw):
    return MH.EmsmdbHttp(lab['base'], auth=auth, verify=lab.get('ca', True), **kw)


def nspi_for(lab, auth):
    return MH.NspiHttp(lab['base'], auth=auth, verify=lab.get('ca', True))


def rpc_inbox_subjects(lab):
    """Inbox subjects of alice's mailbox as seen over the RPC EMSMDB listener."""
    dce = EC.connect('127.0.0.1', lab['emsmdb'])
    c = EC.EmsmdbClient(dce)
    c.connect_ex(ALICE)
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    cols = [PidTagMid, PidTagSubject]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, logon['FolderIds'][4])
                    .get_contents_table(1, 2).set_columns(2, cols).query_rows(2, 200, cols))
    c.disconnect()
    dce.disconnect()
    return [row[PidTagSubject] for row in res[3]['Rows']]


# ---------------------------------------------------------------------------
# EMSMDB
# ---------------------------------------------------------------------------
def mh_online_session(lab, auth, flags=0, **kw):
    ems = ems_for(lab, auth, **kw)
    r = ems.connect(ALICE)
    assert r['StatusCode'] == 0 and r['ErrorCode'] == 0
    assert r['DisplayName'] == 'Alice Anders' and 'cn=EXLAB01' in r['DnPrefix']
    assert r['response'].meta[0] == 'PROCESSING' and r['response'].meta[-1] == 'DONE'
    cookies = ems.http.cookies.get_dict()
    assert set(cookies) == {'MapiContext', 'MapiSequence'}
    subject = rop_session(ems, flags)
    assert ems.disconnect()['ErrorCode'] == 0
    assert 'MapiContext' not in ems.http.cookies.get_dict()
    return subject


def test_online_session_ntlm_tls(lab):
    subject = mh_online_session(lab, ntlm())
    # the same mailbox as the RPC listener: the delivered copy is in alice's Inbox
    assert subject in rpc_inbox_subjects(lab)


def test_online_session_basic_compressed(lab):
    mh_online_session(lab, basic(), compress=True, xor=True)


def test_online_session_plain_payloads(lab):
    mh_online_session(lab, ntlm(), compress=False, xor=False, flags=0x3)


def test_server_compresses(lab):
    ems = ems_for(lab, ntlm())
    ems.connect(ALICE)
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    buf = EC.RopBuffer().open_folder(0, 1, logon['FolderIds'][4]) \
        .get_properties_specific(1, [0x3001001F] * 200).build(ems.handles)
    d, payloads = ems.execute_raw(buf)
    assert d['ErrorCode'] == 0
    assert payloads[0][0] & 0x2 and payloads[0][0] & 0x1          # compressed + XorMagic
    assert len(d['RopBuffer']) < len(payloads[0][1])
    d, payloads = ems.execute_raw(buf, flags=0x1, max_out=64)   # MaxRopOut too small
    assert d['ErrorCode'] == 0x47D and d['RopBuffer'] == b'' and payloads == []
    ems.disconnect()


def test_connect_unknown_user_and_other_users_mailbox(lab):
    ems = ems_for(lab, ntlm())
    r = ems.connect(ORG + '/cn=Recipients/cn=mallory')
    assert r['ErrorCode'] == 0x3EB and r['DisplayName'] == ''
    r = ems.connect(BOB)                    # alice may not open bob's mailbox
    assert r['ErrorCode'] == 0x80070005


def test_notification_wait_event(lab):
    ems = ems_for(lab, ntlm())
    ems.connect(ALICE)
    # a second HTTP session (own connection, own NTLM logon) carrying the same cookies
    waiter = ems_for(lab, ntlm())
    waiter.http.cookies.update(ems.http.cookies)
    out = {}
    t = threading.Thread(target=lambda: out.update(waiter.notification_wait()))
    t.start()
    # The long poll must not hold up the session's other requests.
    assert ems.ping().code == 0
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    outbox = logon['FolderIds'][5]
    res = ems.execute(EC.RopBuffer().create_message(0, 1, outbox)
                      .set_properties(1, [(PidTagSubject, 'notify me')])
                      .save_changes_message(1, 1).submit_message(1))
    assert all(x['ReturnValue'] == 0 for x in res)
    t.join(30)
    assert not t.is_alive()
    assert out['ErrorCode'] == 0 and out['EventPending'] == 1
    assert out['response'].meta[0] == 'PROCESSING' and out['response'].meta[-1] == 'DONE'
    ems.disconnect()


def test_notification_wait_timeout_and_pending(slowlab):
    ems = ems_for(slowlab, None)
    r = ems.connect(ALICE)
    assert r['ErrorCode'] == 0
    meta = r['response'].meta
    assert meta[0] == 'PROCESSING' and meta[-1] == 'DONE' and 'PENDING' in meta
    assert set(meta[1:-1]) == {'PENDING'}
    assert int(r['response'].http.headers['X-PendingPeriod']) == 100
    assert r['response'].http.headers.get('Transfer-Encoding') == 'chunked'
    w = ems.notification_wait()
    assert w['ErrorCode'] == 0 and w['EventPending'] == 0
    assert 'PENDING' in w['response'].meta
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon['ReturnValue'] == 0 and 'PENDING' in ems.last_execute['response'].meta
    ems.disconnect()


# ---------------------------------------------------------------------------
# NSPI: the same answers as the RPC NSPI listener of the same lab
# ---------------------------------------------------------------------------
STR_COLS = [0x3001001F, 0x3003001F, 0x3A00001F, 0x39FE001F, 0x0FFE0003, 0x39000003,
            0x8170101F, 0x8006001F]


def rpc_nspi(lab):
    d = dce_for(lab['nspi'], NSPI_IF)
    resp = nspi.hNspiBind(d)
    return d, resp['contextHandle']


def test_nspi_scenarios(lab):
    d, h = rpc_nspi(lab)
    ab = nspi_for(lab, ntlm())
    b = ab.bind()
    assert b['ErrorCode'] == 0 and len(b['ServerGuid']) == 16
    # GetSpecialTable
    st = ab.get_special_table(flags=0x4)
    assert st['ErrorCode'] == 0 and st['Version'] == 1
    rows = [dict(r) for r in st['Rows']]
    rpc_rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(d, h)['ppRows'])
    assert [r[0x3001001F] for r in rows] == [r[0x3001001F] for r in rpc_rows]
    assert rows[0][0x3001001F] == 'Global Address List' and rows[0][0xFFFD0003] == 0
    # QueryRows over the GAL
    q = ab.query_rows(100, STR_COLS)
    assert q['ErrorCode'] == 0 and q['Columns'] == STR_COLS
    assert q['State']['CurrentRec'] == 2                      # MID_END_OF_TABLE
    rq = nspi.simplifyPropertyRowSet(nspi.hNspiQueryRows(d, h, Count=100,
                                                         pPropTags=STR_COLS)['ppRows'])
    assert len(q['Rows']) == len(rq) == 7
    for mine, theirs in zip(q['Rows'], rq):
        for t in STR_COLS:
            if t in theirs:
                assert mine[t] == theirs[t], hex(t)
            else:       # an error value: RPC reports it under the PT_ERROR tag
                assert mine[t] == ('error', theirs[(t & 0xFFFF0000) | 0xA]), hex(t)
    alice = [r for r in q['Rows'] if r[0x3A00001F] == 'alice'][0]
    assert alice[0x39FE001F] == 'alice@lab.example'
    assert 'ncacn_http:EXLAB01.lab.example' in alice[0x8170101F]
    # String8 columns with the default code page
    q8 = ab.query_rows(2, [0x3001001E, 0x0FFF0102])
    assert q8['Rows'][0][0x3001001E] == 'Administrator'
    assert q8['Rows'][0][0x0FFF0102].endswith(b'cn=Administrator\x00')
    # PtypUnspecified columns come back with their type (and an error value flagged)
    qu = ab.query_rows(1, [0x30010000, 0x0FFE0000])
    assert qu['Rows'] == [{0x3001001E: 'Administrator', 0x0FFE0003: 6}]
    qu = ab.query_rows(1, [0x30010000, 0x12340000])
    assert qu['Rows'] == [{0x3001001E: 'Administrator', 0x12340000: ('error', 0x8004010F)}]
    # DNToMId
    mids = ab.dn_to_mid([SERVER_DN, ALICE, '/o=Nobody/cn=x'])['MinimalIds']
    rmids = mids_of(nspi.hNspiDNToMId(d, h, [SERVER_DN, ALICE, '/o=Nobody/cn=x'])
                    ['ppOutMIds']['aulPropTag'])
    assert mids == rmids and mids[2] == 0
    # GetProps, with a missing property -> ErrorsReturned + PtypErrorCode
    gp = ab.get_props(mids[0], [0x8170101F, 0x3001001E])
    vals = dict(gp['PropertyValues'])
    assert gp['ErrorCode'] == 0 and vals[0x3001001E] == 'EXLAB01'
    gp = ab.get_props(mids[1], [0x3001001F, 0x12340003])
    assert gp['ErrorCode'] == 0x00040380
    assert gp['PropertyValues'] == [(0x3001001F, 'Alice Anders'), (0x1234000A, 0x8004010F)]
    # GetPropList / QueryColumns agree with RPC
    pl = ab.get_prop_list(mids[1])['PropertyTags']
    assert pl == mids_of(nspi.hNspiGetPropList(d, h, dwMId=mids[1])['ppOutMIds']['aulPropTag'])
    cols = ab.query_columns(flags=0x80000000)['Columns']      # NspiUnicodeProptypes
    assert cols == mids_of(nspi.hNspiQueryColumns(d, h)['ppColumns']['aulPropTag'])
    # CompareMIds
    bob = ab.dn_to_mid([BOB])['MinimalIds'][0]
    assert ab.compare_mids(mids[1], bob)['Result'] < 0
    # ResolveNames
    r = ab.resolve_names(['alice', 'carol@lab.example', 'nobody', 'Lab'],
                         [0x3001001F, 0x3003001F])
    rr = nspi.hNspiResolveNamesW(d, h, pPropTags=[0x3001001F, 0x3003001F],
                                 paStr=['alice', 'carol@lab.example', 'nobody', 'Lab'])
    assert r['MinimalIds'] == mids_of(rr['ppMIds']['aulPropTag'])
    assert [x[0x3001001F] for x in r['Rows']] == \
        [x[0x3001001F] for x in nspi.simplifyPropertyRowSet(rr['ppRows'])]
    # GetMatches: display name prefix "Bo" (content restriction, prefix + ignore case)
    gm = ab.get_matches(('content', 0x00010002, 0x3001001F, (0x3001001F, 'bo')),
                        [0x3001001F])
    assert gm['ErrorCode'] == 0 and [x[0x3001001F] for x in gm['Rows']] == ['Bob Brown']
    gm = ab.get_matches(('and', [('exist', 0x3A18001F),
                                 ('property', 4, 0x3A18001F, (0x3A18001F, 'sales'))]),
                        [0x3A00001F])
    assert sorted(x[0x3A00001F] for x in gm['Rows']) == ['carol', 'dave']
    staff = ab.dn_to_mid([STAFF])['MinimalIds'][0]
    gm = ab.get_matches(None, [0x3A00001F], stat=dict(ab.stat, CurrentRec=staff))
    assert len(gm['MinimalIds']) == 5
    # SeekEntries / UpdateStat / ResortRestriction
    se = ab.seek_entries('C', [0x3001001F])
    carol = ab.dn_to_mid([CAROL])['MinimalIds'][0]
    assert se['State']['CurrentRec'] == carol and se['Rows'][0][0x3001001F] == 'Carol Clark'
    assert nspi.hNspiSeekEntries(d, h, 'C')['pStat']['CurrentRec'] == carol
    us = ab.update_stat(C.new_stat(CurrentRec=0, Delta=2))
    assert us['State']['NumPos'] == 2 and us['State']['TotalRecs'] == 7 and us['Delta'] == 2
    rs = ab.resort_restriction([carol, bob, mids[1], 0x7777])
    assert rs['MinimalIds'] == [mids[1], bob, carol] and rs['State']['TotalRecs'] == 3
    # URLs
    mu = ab.get_mailbox_url(SERVER_DN)
    assert mu['ErrorCode'] == 0 and '/mapi/emsmdb/' in mu['ServerUrl']
    au = ab.get_address_book_url(ALICE)
    assert au['ErrorCode'] == 0 and au['ServerUrl'].startswith(
        'https://exlab01.lab.example:%d/mapi/nspi/?MailboxId=' % lab['mapihttp'])
    # GetTemplateInfo: the lab has no templates
    assert ab.get_template_info(0x0)['ErrorCode'] == 0x8004010F
    # ModProps / ModLinkAtt change the shared directory (seen over RPC), then restore
    assert ab.mod_props(mids[1], [(0x3A19001F, 'Room 42')])['ErrorCode'] == 0
    v = nspi.simplifyPropertyRow(nspi.hNspiGetProps(d, h, CurrentRec=mids[1],
                                                    pPropTags=[0x3A19001F])['ppRows'])
    assert v[0x3A19001F] == 'Room 42'
    assert ab.mod_props(mids[1], [(0x3A19001F, 'Lab EXLAB01')])['ErrorCode'] == 0
    assert ab.mod_props(mids[1], [(0x3001001F, 'Eve')])['ErrorCode'] == 0x80070005
    admin_eid = q8['Rows'][0][0x0FFF0102]
    assert ab.mod_link_att(0x8009000D, staff, [admin_eid])['ErrorCode'] == 0
    gm = ab.get_matches(None, [0x3A00001F], stat=dict(ab.stat, CurrentRec=staff))
    assert 'Administrator' in [x[0x3A00001F] for x in gm['Rows']]
    assert ab.mod_link_att(0x8009000D, staff, [admin_eid], delete=True)['ErrorCode'] == 0
    gm = ab.get_matches(None, [0x3A00001F], stat=dict(ab.stat, CurrentRec=staff))
    assert len(gm['Rows']) == 5
    assert ab.unbind()['ErrorCode'] == 1
    assert nspi.hNspiUnbind(d, h)['ErrorCode'] == 1
    d.disconnect()


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------
def _conn(lab):
    ctx = ssl.create_default_context(cafile=lab['ca'])
    return http.client.HTTPSConnection('127.0.0.1', lab['mapihttp'], context=ctx, timeout=30)


def _post(conn, rtype, body=b'', headers=None, path='/mapi/emsmdb/'):
    h = {'Content-Type': 'application/mapi-http', 'X-RequestType': rtype,
         'X-RequestId': '{1}:1', 'X-ClientInfo': '{1}'}
    h.update(headers or {})
    conn.request('POST', path, body, h)
    r = conn.getresponse()
    return r, r.read()


def test_ntlm_is_bound_to_the_connection(lab):
    c1 = _conn(lab)
    ctx = NtlmContext('alice', PASSWORDS['alice'], domain='LAB')
    r, _ = _post(c1, 'PING', headers={
        'Authorization': 'NTLM ' + base64.b64encode(ctx.step()).decode()})
    assert r.status == 401
    chal = r.getheader('WWW-Authenticate').split()[1]
    auth3 = ctx.step(base64.b64decode(chal))
    body = C.Writer().asciiz(ALICE).u32(0).u32(1252).u32(0x409).u32(0x409).aux().bytes()
    r, data = _post(c1, 'Connect', body,
                    headers={'Authorization': 'NTLM ' + base64.b64encode(auth3).decode()})
    assert r.status == 200 and r.getheader('X-ResponseCode') == '0'
    cookies = '; '.join(c.split(';')[0] for c in r.headers.get_all('Set-Cookie'))
    # the authenticated connection goes on without credentials ...
    r, data = _post(c1, 'PING', headers={'Cookie': cookies})
    assert r.status == 200 and data.startswith(b'PROCESSING\r\n')
    # ... another connection with the same cookies does not
    c2 = _conn(lab)
    r, _ = _post(c2, 'PING', headers={'Cookie': cookies})
    assert r.status == 401
    assert sorted(r.headers.get_all('WWW-Authenticate')) == \
        ['Basic realm="exlab01.lab.example"', 'NTLM']
    r, _ = _post(c2, 'Execute', C.Writer().u32(0).u32(0).u32(0x1000).aux().bytes(),
                 headers={'Cookie': cookies})
    assert r.status == 401
    # Basic on the second connection is bob: alice's session is not his
    cred = base64.b64encode(('LAB\\bob:' + PASSWORDS['bob']).encode()).decode()
    r, _ = _post(c2, 'Disconnect', C.Writer().aux().bytes(),
                 headers={'Cookie': cookies, 'Authorization': 'Basic ' + cred})
    assert r.status == 200 and r.getheader('X-ResponseCode') == '11'
    c1.close()
    c2.close()
    # NTLM wrapped in the Negotiate scheme (raw NTLM tokens) is answered in kind
    c3 = _conn(lab)
    ctx = NtlmContext('bob', PASSWORDS['bob'], domain='LAB')
    r, _ = _post(c3, 'PING', headers={
        'Authorization': 'Negotiate ' + base64.b64encode(ctx.step()).decode()})
    scheme, chal = r.getheader('WWW-Authenticate').split()
    assert r.status == 401 and scheme == 'Negotiate'
    auth3 = ctx.step(base64.b64decode(chal))
    r, data = _post(c3, 'PING', headers={
        'Authorization': 'Negotiate ' + base64.b64encode(auth3).decode()})
    assert r.status == 200 and data.endswith(b'\r\n\r\n') and b'DONE\r\n' in data
    c3.close()


def test_auth_refusals(lab):
    ems = ems_for(lab, HttpNtlmAuth('LAB\\alice', 'wrong'))
    with pytest.raises(MH.MapiHttpError) as e:
        ems.connect(ALICE)
    assert e.value.resp.http.status_code == 401
    ems = ems_for(lab, HTTPBasicAuth('alice', 'wrong'))
    with pytest.raises(MH.MapiHttpError) as e:
        ems.connect(ALICE)
    assert e.value.resp.http.status_code == 401
    ems = ems_for(lab, HttpNtlmAuth('LAB\\mallory', 'x'))
    with pytest.raises(MH.MapiHttpError):
        ems.connect(ALICE)
    # Basic with user@domain and the Administrator may open alice's mailbox
    ems = ems_for(lab, HTTPBasicAuth('Administrator@LAB', PASSWORDS['Administrator']))
    assert ems.connect(ALICE)['ErrorCode'] == 0
    ems.disconnect()


# ---------------------------------------------------------------------------
# protocol errors (X-ResponseCode)
# ---------------------------------------------------------------------------
def test_response_codes(lab):
    ems = ems_for(lab, basic())

    def code(rtype, body=b'', **kw):
        return ems.post(rtype, body, check=False, **kw).code
    assert code('Bogus') == 5
    assert code('PING', headers={'X-RequestId': None}) == 7
    assert code('PING', headers={'X-ClientInfo': None}) == 7
    assert code('PING', headers={'Content-Type': 'text/plain'}) == 4
    assert code('Execute', C.Writer().u32(0).u32(0).u32(0x1000).aux().bytes()) == 13
    ems.http.cookies.set('MapiContext', 'not-a-cookie', path='/mapi/emsmdb')
    assert code('Disconnect', C.Writer().aux().bytes()) == 6
    ems.http.cookies.set('MapiContext', '0' * 32, path='/mapi/emsmdb')
    assert code('Disconnect', C.Writer().aux().bytes()) == 10
    ems.http.cookies.clear()
    assert code('Connect', b'\x01\x02') == 12                        # truncated body
    assert code('Connect', C.Writer().asciiz(ALICE).u32(0).bytes()) == 12
    ems.connect(ALICE)
    good = dict(ems.http.cookies.get_dict())
    assert code('Execute', b'\xff' * 3) == 12
    # a replayed (stale) MapiSequence
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    ems.http.cookies.set('MapiSequence', good['MapiSequence'], path='/mapi/emsmdb')
    assert code('Disconnect', C.Writer().aux().bytes()) == 15
    # wrong verb and path
    r = ems.http.get(lab['base'] + '/mapi/emsmdb/', verify=lab['ca'], headers={
        'X-RequestType': 'PING', 'X-RequestId': '1', 'X-ClientInfo': '1'})
    assert r.status_code == 200 and r.headers['X-ResponseCode'] == '2'
    r = ems.http.post(lab['base'] + '/mapi/nowhere/', verify=lab['ca'], headers={
        'X-RequestType': 'PING', 'X-RequestId': '1', 'X-ClientInfo': '1',
        'Content-Type': 'application/mapi-http'})
    assert r.headers['X-ResponseCode'] == '3'
    # NSPI: context-needing request without Bind, then malformed bodies
    ab = nspi_for(lab, basic())
    assert ab.post('QueryRows', b'', check=False).code == 13
    ab.bind()
    for rtype in MH_NSPI_TYPES:
        for body in (b'', b'\x00', b'\xff' * 7, b'\x00\x00\x00\x00\xff' + b'\x01' * 3):
            assert ab.post(rtype, body, check=False).code in (0, 12), (rtype, body)
    # a restriction of an unknown type, a HasValue byte that is neither 0 nor 0xFF
    w = C.Writer().u32(0).flag(False).flag(False).u32(0).flag(True).u8(0x42)
    assert ab.post('GetMatches', w.aux().bytes(), check=False).code == 12
    w = C.Writer().u32(0).flag(False).flag(True).u32(0x3001001F).u8(0x7).u32(0)
    w.flag(False).flag(False)
    assert ab.post('SeekEntries', w.aux().bytes(), check=False).code == 12
    assert ab.ping().code == 0
    ab.unbind()
    ems.http.cookies.clear()


MH_NSPI_TYPES = ('Bind', 'Unbind', 'CompareMIds', 'DNToMId', 'GetMatches', 'GetPropList',
                 'GetProps', 'GetSpecialTable', 'GetTemplateInfo', 'ModLinkAtt', 'ModProps',
                 'QueryColumns', 'QueryRows', 'ResolveNames', 'ResortRestriction',
                 'SeekEntries', 'UpdateStat', 'GetMailboxUrl', 'GetAddressBookUrl')


# ---------------------------------------------------------------------------
# Autodiscover
# ---------------------------------------------------------------------------
AD_REQ = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
          'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
          '<EMailAddress>%s</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.'
          'com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>'
          '</Request></Autodiscover>')


def test_autodiscover(lab):
    s = requests.Session()
    s.auth = ntlm()
    url = lab['base'] + '/autodiscover/autodiscover.xml'
    r = s.post(url, data=AD_REQ % 'alice@lab.example', verify=lab['ca'],
               headers={'Content-Type': 'text/xml', 'X-MapiHttpCapability': '1'})
    assert r.status_code == 200
    root = ET.fromstring(r.content)
    resp = root.find(NS_RESP + 'Response')
    assert resp.find(NS_RESP + 'User/' + NS_RESP + 'LegacyDN').text == ALICE
    protos = resp.findall(NS_RESP + 'Account/' + NS_RESP + 'Protocol')
    types = [p.findtext(NS_RESP + 'Type') or p.get('Type') for p in protos]
    assert types == ['EXCH', 'EXPR', 'EXHTTP', 'mapiHttp']
    assert protos[1].findtext(NS_RESP + 'Server') == 'exlab01.lab.example'
    assert protos[0].findtext(NS_RESP + 'ServerDN') == SERVER_DN
    url_prefix = 'https://exlab01.lab.example:%d/mapi/' % lab['mapihttp']
    ms = protos[3].findtext(NS_RESP + 'MailStore/' + NS_RESP + 'InternalUrl')
    abk = protos[3].findtext(NS_RESP + 'AddressBook/' + NS_RESP + 'ExternalUrl')
    assert ms.startswith(url_prefix + 'emsmdb/?MailboxId=') and ms.endswith('@lab.example')
    assert abk.startswith(url_prefix + 'nspi/?MailboxId=')
    r = s.post(url, data=AD_REQ % 'nobody@lab.example', verify=lab['ca'],
               headers={'Content-Type': 'text/xml'})
    assert b'<ErrorCode>500</ErrorCode>' in r.content
    j = s.get(lab['base'] + '/autodiscover/autodiscover.json/v1.0/alice@lab.example',
              params={'Protocol': 'AutodiscoverV1'}, verify=lab['ca'])
    assert j.status_code == 200 and j.json() == {
        'Protocol': 'AutodiscoverV1',
        'Url': 'https://exlab01.lab.example:%d/autodiscover/autodiscover.xml' % lab['mapihttp']}
    j = s.get(lab['base'] + '/autodiscover/autodiscover.json',
              params={'Email': 'alice@lab.example', 'Protocol': 'Bogus'}, verify=lab['ca'])
    assert j.status_code == 400 and j.json()['ErrorCode'] == 'ProtocolNotSupported'
    r = requests.post(url, data=AD_REQ % 'alice@lab.example', verify=lab['ca'])
    assert r.status_code == 401
