"""The lab's ROP client and ROP server checked against what the project did not write.

Both ends of the lab are ours (emsmdb_client.RopBuffer builds requests and
parses responses, lab_rops.RopSession parses requests and builds responses),
so a layout mistake made on both ends goes unnoticed (RopSetProperties'
PropertyValueSize did).  Checked here against:

  * the byte examples of the specifications' section 4 (MS-OXCPRPT,
    MS-OXCMSG, MS-OXCTABL, MS-OXORULE, MS-OXCFOLD): the lab's client must
    build the same bytes, the lab's server and client parsers must read them;
  * the project's generated C ROP codec (build/ropdump, from idl/rops/rops.idl),
    fed with the same spec bytes: it must decode them with the field values
    the spec names and re-encode them byte for byte; and fed with every ROP
    the lab's client builds and every answer the lab's server gives, the
    field values must be those the builder was given / the lab client parsed.

Impacket (python3-impacket) has no ROP structures (its dcerpc/v5 covers
neither EMSMDB's ROP buffers nor MS-OXCDATA values), so it is not used here.

Run: /usr/bin/python3 -m pytest -q tests/lab/test_lab_crosscheck.py
"""

import json
import os
import struct
import subprocess
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)

import emsmdb_client as EC                                    # noqa: E402
import ics_client as IC                                       # noqa: E402
import lab_rops as L                                          # noqa: E402

ROPDUMP = os.path.join(ROOT, 'build', 'ropdump')
ALICE = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice'


def hx(s):
    """Spec dump text ("0000: 0A 00 ..-..") to bytes; offsets dropped."""
    out = []
    for line in s.strip().splitlines():
        if ':' in line:
            line = line.split(':', 1)[1]
        out.append(line.replace('-', ' '))
    return bytes.fromhex(' '.join(out))


# --- section 4 examples (byte for byte from the specifications) -----------------
# MS-OXCPRPT 4.3 "Setting Properties", client request buffer: RopSetProperties on
# a Message object, PidTagSubjectPrefix "" and PidTagNormalizedSubject
# "Hello World"; "PropertyValueSize: 0x0024. There are 36 (decimal) bytes
# contained in both the PropertyValueCount field and the PropertyValues field."
SPEC_SETPROPS_REQ = hx('''
0000: 0A 00 00 24 00 02 00 1F-00 3D 00 00 00 1F 00 1D
0010: 0E 48 00 65 00 6C 00 6C-00 6F 00 20 00 57 00 6F
0020: 00 72 00 6C 00 64 00 00-00''')
# MS-OXCMSG 4.8.1 RopSaveChangesMessage Request Buffer (KeepOpenReadWrite|0x08)
SPEC_SAVECHANGES_REQ = hx('0000: 0c 00 00 01 0a')
# MS-OXCTABL 4.5.3.1 RopQueryRows client request buffer: forward, 50 rows
SPEC_QUERYROWS_REQ = hx('0000: 15 00 00 00 01 32 00')
# MS-OXCFOLD 4.5.1 RopMoveFolder client request (not built by the lab; decoded
# by the codec only)
SPEC_MOVEFOLDER_REQ = hx('''
0000: 35 00 01 02 01 01 01 00-00 00 0E 8E DF 36 46 00
0010: 6F 00 6C 00 64 00 65 00-72 00 31 00 00 00''')
# MS-OXORULE 4.2.2 server responses: RopSetColumns (TBLSTAT_COMPLETE) and
# RopQueryRows (Bookmark BOOKMARK_END, one row: an 8-byte rule id, a 16-byte
# binary value and the Unicode name "Project X")
SPEC_SETCOLUMNS_RSP = hx('0000: 12 01 00 00 00 00 00')
SPEC_QUERYROWS_RSP = hx('''
0000: 15 01 00 00 00 00 02 01-00 00 01 00 00 00 01 3f
0010: f8 56 10 00 01 00 00 00-01 00 00 00 55 55 55 55
0020: d1 44 e3 40 50 00 72 00-6f 00 6a 00 65 00 63 00
0030: 74 00 20 00 58 00 00 00''')
# MS-OXCTABL 4.3.2 RopSortTable server response (codec only)
SPEC_SORTTABLE_RSP = hx('0000: 13 01 00 00 00 00 00')
# The columns of the MS-OXORULE example row, typed as the bytes require:
# PtypInteger64, PtypBinary, PtypString
RULE_COLUMNS = [0x66740014, 0x66780102, 0x6682001F]


def rop_buffer(rops, handles=(0xFFFFFFFF,)):
    body = b''.join(rops)
    return struct.pack('<H', len(body) + 2) + body + b''.join(struct.pack('<L', h) for h in handles)


@pytest.fixture(scope='module')
def ropdump():
    r = subprocess.run(['make', '-s', 'build/ropdump'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return ROPDUMP


def dump(ropdump, tmp_path, req, rsp=None):
    q = tmp_path / 'req.bin'
    q.write_bytes(req)
    args = [ropdump, str(q)]
    if rsp is not None:
        s = tmp_path / 'rsp.bin'
        s.write_bytes(rsp)
        args.append(str(s))
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    d = json.loads(r.stdout)
    assert d['request']['status'] == 'ok' and d['request']['exact'], d
    if rsp is not None:
        assert d['response']['status'] == 'ok' and d['response']['exact'], d
    return d


def rops_of(d, side='request'):
    return d[side]['buffer']['Rops']


# ---------------------------------------------------------------------------
# spec bytes <-> the lab's client builder
# ---------------------------------------------------------------------------
def test_client_builds_spec_bytes():
    b = EC.RopBuffer().set_properties(0, [(0x003D001F, ''), (0x0E1D001F, 'Hello World')])
    assert b.rops[0][0] == SPEC_SETPROPS_REQ
    b = EC.RopBuffer().save_changes_message(0, 1, flags=0x0A)
    assert b.rops[0][0] == SPEC_SAVECHANGES_REQ
    b = EC.RopBuffer().query_rows(0, 0x32, [], flags=0, forward=1)
    assert b.rops[0][0] == SPEC_QUERYROWS_REQ


# ---------------------------------------------------------------------------
# spec bytes -> the generated C codec
# ---------------------------------------------------------------------------
def test_codec_decodes_spec_requests(ropdump, tmp_path):
    d = dump(ropdump, tmp_path, rop_buffer([SPEC_SETPROPS_REQ]))
    [sp] = rops_of(d)
    assert sp['Name'] == 'RopSetProperties'
    assert sp['PropertyValueSize'] == 0x24 and sp['PropertyValueCount'] == 2
    assert sp['PropertyValues'] == [{'Tag': '0x003d001f', 'Value': ''},
                                    {'Tag': '0x0e1d001f', 'Value': 'Hello World'}]
    d = dump(ropdump, tmp_path, rop_buffer([SPEC_SAVECHANGES_REQ], (1, 2)))
    [sc] = rops_of(d)
    assert (sc['Name'], sc['ResponseHandleIndex'], sc['InputHandleIndex'], sc['SaveFlags']) == \
        ('RopSaveChangesMessage', 0, 1, 0x0A)
    d = dump(ropdump, tmp_path, rop_buffer([SPEC_QUERYROWS_REQ]))
    [qr] = rops_of(d)
    assert (qr['QueryRowsFlags'], qr['ForwardRead'], qr['RowCount']) == (0, 1, 50)
    d = dump(ropdump, tmp_path, rop_buffer([SPEC_MOVEFOLDER_REQ], (1, 2, 3)))
    [mf] = rops_of(d)
    assert mf['Name'] == 'RopMoveFolder'
    assert (mf['SourceHandleIndex'], mf['DestHandleIndex'], mf['WantAsynchronous'],
            mf['UseUnicode']) == (1, 2, 1, 1)
    assert mf['NewFolderName'] == 'Folder1'


def test_codec_decodes_spec_responses(ropdump, tmp_path):
    # the requests that make the spec's responses decodable: the columns of
    # the MS-OXORULE rules table, then QueryRows
    setcols = EC.RopBuffer().set_columns(1, RULE_COLUMNS).rops[0][0]
    query = EC.RopBuffer().query_rows(1, 0x10, RULE_COLUMNS).rops[0][0]
    sort_req = struct.pack('<BBBBHHH', 0x13, 0, 1, 0, 0, 0, 0)   # RopSortTable, no sorts
    req = rop_buffer([setcols, query, sort_req], (0, 0x55))
    rsp = rop_buffer([SPEC_SETCOLUMNS_RSP, SPEC_QUERYROWS_RSP, SPEC_SORTTABLE_RSP], (0, 0x55))
    d = dump(ropdump, tmp_path, req, rsp)
    sc, qr, st = rops_of(d, 'response')
    assert sc['Name'] == 'RopSetColumns' and sc['TableStatus'] in (0, '0x00')
    assert qr['Name'] == 'RopQueryRows' and qr['RowCount'] == 1
    text = json.dumps(qr)
    assert 'Project X' in text
    assert st['Name'] == 'RopSortTable'


# ---------------------------------------------------------------------------
# spec bytes -> the lab's parsers (server side and client side)
# ---------------------------------------------------------------------------
def lab_session():
    logs = []
    store = L.Store({})
    return L.RopSession(store, ALICE, 'Alice', logs.append), logs


def test_lab_server_reads_spec_setproperties():
    s, logs = lab_session()
    mb = s.store.mailbox(ALICE, 'Alice')
    b = EC.RopBuffer().logon(0, ALICE).create_message(0, 1, mb.inbox.fid)
    out = s.process(b.build([0xFFFFFFFF, 0xFFFFFFFF]))
    results, handles = b.parse(out)
    assert [r['ReturnValue'] for r in results] == [0, 0]
    # the spec's buffer, InputHandleIndex 0 -> the new message
    out = s.process(rop_buffer([SPEC_SETPROPS_REQ], (handles[1],)))
    c = EC.RopBuffer().set_properties(0, [])
    [res], _ = c.parse(out)
    assert res['ReturnValue'] == 0 and res['PropertyProblems'] == []
    msg = s.objects[handles[1]].msg
    assert msg.props[0x003D001F] == '' and msg.props[0x0E1D001F] == 'Hello World'


def test_lab_server_rejects_old_layout():
    """The layout the lab used to write (size without the count) is malformed."""
    s, _ = lab_session()
    bad = bytearray(SPEC_SETPROPS_REQ)
    bad[3] = 0x22
    with pytest.raises(L.RopParseError):
        s.process(rop_buffer([bytes(bad)], (0x101,)))


def test_lab_client_parses_spec_responses():
    b = EC.RopBuffer().set_columns(1, RULE_COLUMNS).query_rows(1, 0x10, RULE_COLUMNS)
    res, handles = b.parse(rop_buffer([SPEC_SETCOLUMNS_RSP, SPEC_QUERYROWS_RSP], (0, 0x55)))
    sc, qr = res
    assert (sc['rop'], sc['index'], sc['ReturnValue'], sc['TableStatus']) == (0x12, 1, 0, 0)
    assert (qr['rop'], qr['ReturnValue'], qr['Origin']) == (0x15, 0, 2)
    [row] = qr['Rows']
    assert row[RULE_COLUMNS[0]] == 0x56F83F0100000001
    assert row[RULE_COLUMNS[1]] == bytes.fromhex('0100000001000000 55555555d144e340')
    assert row[RULE_COLUMNS[2]] == 'Project X'
    assert handles == [0, 0x55]


# ---------------------------------------------------------------------------
# every ROP the lab builds / answers -> the generated C codec
# ---------------------------------------------------------------------------
BUILT = [
    # (builder call, fields the codec must read)
    (lambda b: b.logon(0, ALICE, logon_flags=1, open_flags=0x01000000),
     {'Name': 'RopLogon', 'OutputHandleIndex': 0, 'LogonFlags': 1, 'OpenFlags': '0x01000000',
      'EssdnSize': len(ALICE) + 1, 'Essdn': ALICE}),
    (lambda b: b.release(3), {'Name': 'RopRelease', 'InputHandleIndex': 3}),
    (lambda b: b.open_folder(0, 1, 0x1122334455667788, mode=4),
     {'Name': 'RopOpenFolder', 'InputHandleIndex': 0, 'OutputHandleIndex': 1,
      'FolderId': 0x1122334455667788, 'OpenModeFlags': 4}),
    (lambda b: b.open_message(1, 2, 0x1234, 0x5678, mode=3, codepage=1252),
     {'Name': 'RopOpenMessage', 'InputHandleIndex': 1, 'OutputHandleIndex': 2,
      'CodePageId': 1252, 'FolderId': 0x1234, 'OpenModeFlags': 3, 'MessageId': 0x5678}),
    (lambda b: b.get_hierarchy_table(1, 3, flags=0x04),
     {'Name': 'RopGetHierarchyTable', 'OutputHandleIndex': 3, 'TableFlags': 4}),
    (lambda b: b.get_contents_table(1, 3, flags=0x40),
     {'Name': 'RopGetContentsTable', 'OutputHandleIndex': 3, 'TableFlags': 0x40}),
    (lambda b: b.get_attachment_table(2, 4, flags=0x40),
     {'Name': 'RopGetAttachmentTable', 'InputHandleIndex': 2, 'OutputHandleIndex': 4,
      'TableFlags': 0x40}),
    (lambda b: b.create_message(1, 2, 0x99, associated=1),
     {'Name': 'RopCreateMessage', 'FolderId': 0x99, 'AssociatedFlag': 1, 'CodePageId': 0x0FFF}),
    (lambda b: b.get_properties_specific(2, [0x0037001F, 0x0E080003], size_limit=0x100),
     {'Name': 'RopGetPropertiesSpecific', 'PropertySizeLimit': 0x100, 'WantUnicode': 1,
      'PropertyTagCount': 2, 'PropertyTags': ['0x0037001f', '0x0e080003']}),
    (lambda b: b.set_properties(2, [(0x0037001F, 'Hi'), (0x0E070003, 9),
                                    (0x37010102, b'\x01\x02\x03')]),
     {'Name': 'RopSetProperties', 'PropertyValueCount': 3,
      'PropertyValueSize': 2 + (4 + 6) + (4 + 4) + (4 + 2 + 3)}),
    (lambda b: b.save_changes_message(1, 2, flags=0x02),
     {'Name': 'RopSaveChangesMessage', 'ResponseHandleIndex': 1, 'InputHandleIndex': 2,
      'SaveFlags': 2}),
    (lambda b: b.set_columns(3, [0x0037001F, 0x674A0014]),
     {'Name': 'RopSetColumns', 'PropertyTagCount': 2,
      'PropertyTags': ['0x0037001f', '0x674a0014']}),
    (lambda b: b.query_rows(3, 10, [], flags=1, forward=0),
     {'Name': 'RopQueryRows', 'QueryRowsFlags': 1, 'ForwardRead': 0, 'RowCount': 10}),
    (lambda b: b.create_attachment(2, 5),
     {'Name': 'RopCreateAttachment', 'InputHandleIndex': 2, 'OutputHandleIndex': 5}),
    (lambda b: b.open_attachment(2, 5, 7, flags=1),
     {'Name': 'RopOpenAttachment', 'OpenAttachmentFlags': 1, 'AttachmentID': 7}),
    (lambda b: b.delete_attachment(2, 9),
     {'Name': 'RopDeleteAttachment', 'InputHandleIndex': 2, 'AttachmentID': 9}),
    (lambda b: b.save_changes_attachment(2, 5, flags=0x0A),
     {'Name': 'RopSaveChangesAttachment', 'ResponseHandleIndex': 2, 'InputHandleIndex': 5,
      'SaveFlags': 0x0A}),
    (lambda b: b.get_receive_folder(0, 'IPM.Note'),
     {'Name': 'RopGetReceiveFolder', 'MessageClass': 'IPM.Note'}),
    (lambda b: b.open_stream(2, 6, 0x1000001F, mode=2),
     {'Name': 'RopOpenStream', 'PropertyTag': '0x1000001f', 'OpenModeFlags': 2}),
    (lambda b: b.read_stream(6, 100), {'Name': 'RopReadStream', 'ByteCount': 100}),
    (lambda b: b.read_stream(6, 0x12345),
     {'Name': 'RopReadStream', 'ByteCount': 0xBABE, 'MaximumByteCount': 0x12345}),
    (lambda b: b.seek_stream(6, 1, -5),
     {'Name': 'RopSeekStream', 'InputHandleIndex': 6, 'Origin': 1, 'Offset': -5}),
    (lambda b: b.write_stream(6, b'abc'),
     {'Name': 'RopWriteStream', 'DataSize': 3, 'Data': '616263'}),
    (lambda b: b.commit_stream(6), {'Name': 'RopCommitStream', 'InputHandleIndex': 6}),
    (lambda b: b.submit_message(2, flags=1), {'Name': 'RopSubmitMessage', 'SubmitFlags': 1}),
    # ICS and FastTransfer (tests/lab/ics_client.py)
    (lambda b: IC.sync_configure(b, 1, 2, sync_type=1, send_options=3, flags=0x0081,
                                 extra=0x0E, tags=[0x0E080003]),
     {'Name': 'RopSynchronizationConfigure', 'InputHandleIndex': 1, 'OutputHandleIndex': 2,
      'SynchronizationType': 1, 'SendOptions': 3, 'RestrictionDataSize': 0,
      'PropertyTagCount': 1, 'PropertyTags': ['0x0e080003']}),
    (lambda b: IC.upload_state_begin(b, 2, 0x67960102, 2),
     {'Name': 'RopSynchronizationUploadStateStreamBegin', 'InputHandleIndex': 2,
      'StateProperty': 0x67960102, 'TransferBufferSize': 2}),
    (lambda b: IC.upload_state_continue(b, 2, b'\x01\x02'),
     {'Name': 'RopSynchronizationUploadStateStreamContinue', 'StreamDataSize': 2,
      'StreamData': '0102'}),
    (lambda b: IC.upload_state_end(b, 2),
     {'Name': 'RopSynchronizationUploadStateStreamEnd', 'InputHandleIndex': 2}),
    (lambda b: IC.get_buffer(b, 2, 0x1000),
     {'Name': 'RopFastTransferSourceGetBuffer', 'InputHandleIndex': 2, 'BufferSize': 0x1000}),
    (lambda b: IC.get_buffer(b, 2, 0x9000),
     {'Name': 'RopFastTransferSourceGetBuffer', 'BufferSize': 0xBABE,
      'MaximumBufferSize': 0x9000}),
    (lambda b: IC.get_transfer_state(b, 2, 3),
     {'Name': 'RopSynchronizationGetTransferState', 'InputHandleIndex': 2,
      'OutputHandleIndex': 3}),
    (lambda b: IC.copy_to(b, 2, 3, excluded=[0x0E12000D], level=0, flags=0, send_options=1),
     {'Name': 'RopFastTransferSourceCopyTo', 'Level': 0, 'SendOptions': 1,
      'PropertyTagCount': 1, 'PropertyTags': ['0x0e12000d']}),
    (lambda b: IC.copy_messages(b, 1, 3, [0x1234, 0x5678], flags=0, send_options=1),
     {'Name': 'RopFastTransferSourceCopyMessages', 'MessageIdCount': 2,
      'MessageIds': [0x1234, 0x5678], 'SendOptions': 1}),
    (lambda b: IC.tell_version(b, 3), {'Name': 'RopTellVersion', 'InputHandleIndex': 3}),
    (lambda b: IC.open_collector(b, 1, 4, contents=True),
     {'Name': 'RopSynchronizationOpenCollector', 'InputHandleIndex': 1,
      'OutputHandleIndex': 4, 'IsContentsCollector': 1}),
    (lambda b: IC.import_message_change(b, 4, 5, {0x65E00102: b'\x01' * 22}, flag=0x40),
     {'Name': 'RopSynchronizationImportMessageChange', 'InputHandleIndex': 4,
      'OutputHandleIndex': 5, 'ImportFlag': 0x40, 'PropertyValueCount': 1}),
    (lambda b: IC.dest_configure(b, 1, 6, 0x03, flags=0),
     {'Name': 'RopFastTransferDestinationConfigure', 'InputHandleIndex': 1,
      'OutputHandleIndex': 6, 'SourceOperation': 3, 'CopyFlags': 0}),
    (lambda b: IC.put_buffer(b, 6, b'\x03\x00\x0c\x40'),
     {'Name': 'RopFastTransferDestinationPutBuffer', 'InputHandleIndex': 6,
      'TransferDataSize': 4, 'TransferData': '03000c40'}),
    (lambda b: IC.put_buffer_ext(b, 6, b'\x03\x00\x0d\x40'),
     {'Name': 'RopFastTransferDestinationPutBufferExtended', 'InputHandleIndex': 6,
      'TransferDataSize': 4, 'TransferData': '03000d40'}),
]


def test_every_built_rop_decodes_as_given(ropdump, tmp_path):
    b = EC.RopBuffer()
    for build, _ in BUILT:
        build(b)
    d = dump(ropdump, tmp_path, b.build([0xFFFFFFFF] * 8))
    got = rops_of(d)
    assert len(got) == len(BUILT)
    for g, (_, want) in zip(got, BUILT):
        for k, v in want.items():
            assert g.get(k) == v, (want['Name'], k, g)
    # every RopId the lab's server handles is one the lab's client builds
    assert {int(g['RopId'], 16) for g in got} == set(L.ROP_HANDLERS)


def test_lab_answers_decode_as_the_lab_client_parsed(ropdump, tmp_path):
    """One Outlook-like session against the lab's RopSession, in process: each
    response buffer is decoded by the C codec with its request as context;
    the values must be those the lab's client parsed."""
    s, _ = lab_session()
    mb = s.store.mailbox(ALICE, 'Alice')
    H = [0xFFFFFFFF] * 8
    steps = [
        EC.RopBuffer().logon(0, ALICE).open_folder(0, 1, mb.inbox.fid)
        .get_contents_table(1, 2).set_columns(2, [0x674A0014, 0x0037001F])
        .query_rows(2, 10, [0x674A0014, 0x0037001F]),
        EC.RopBuffer().create_message(1, 3, mb.inbox.fid)
        .set_properties(3, [(0x0037001F, 'cross'), (0x0E070003, 1)])
        .open_stream(3, 4, 0x1000001F, mode=2).write_stream(4, 'body'.encode('utf-16le'))
        .commit_stream(4).create_attachment(3, 5)
        .set_properties(5, [(0x37010102, b'xyz')]).save_changes_attachment(3, 5)
        .save_changes_message(1, 3),
        EC.RopBuffer().get_properties_specific(3, [0x0037001F, 0x0E1B000B, 0x0E080003])
        .get_attachment_table(3, 6).open_attachment(3, 7, 0)
        .open_stream(3, 4, 0x1000001F).read_stream(4, 100).get_receive_folder(0, 'IPM.Note')
        .get_hierarchy_table(1, 2).submit_message(3).release(7),
    ]
    for b in steps:
        req = b.build(H)
        out = s.process(req)
        res, handles = b.parse(out)
        H = handles + H[len(handles):]
        assert all(r['ReturnValue'] == 0 for r in res), res
        d = dump(ropdump, tmp_path, req, out)
        got = [r for r in rops_of(d, 'response')]
        assert len(got) == len(res)
        for g, r in zip(got, res):
            assert int(g['RopId'], 16) == r['rop']
            assert g['ReturnValue'] in (0, '0x00000000'), g
            for k, v in r.items():
                if k in ('rop', 'index', 'ReturnValue') or k not in g:
                    continue
                gv = g[k]
                if k == 'LogonTime':     # MS-OXCSTOR 2.2.1.1.3: sec, min, hour, dow, day, month, year
                    sec, mi, hr, dow, day, mon, yr = struct.unpack('<BBBBBBH', v)
                    v = {'Seconds': sec, 'Minutes': mi, 'Hour': hr, 'DayOfWeek': dow, 'Day': day,
                         'Month': mon, 'Year': yr}
                elif isinstance(v, bytes) and len(v) == 16 and isinstance(gv, str) and '-' in gv:
                    v = str(uuid.UUID(bytes_le=v))       # a GUID
                elif isinstance(v, bytes):
                    v = v.hex()
                if isinstance(gv, str) and gv.startswith('0x') and isinstance(v, int):
                    gv = int(gv, 16)
                if k in ('Row', 'Rows', 'PropertyProblems'):
                    continue           # compared below
                assert gv == v, (g['Name'], k, gv, v)
            if r['rop'] == 0x07:
                assert 'cross' in json.dumps(g)
            if r['rop'] == 0x15:
                assert g['RowCount'] == len(r['Rows'])
