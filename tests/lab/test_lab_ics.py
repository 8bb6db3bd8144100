"""The lab's ICS / FastTransfer side (tests/lab/lab_ics.py) with the lab's
cached-mode client (tests/lab/ics_client.py): a contents sync of the Inbox
in small buffers, state carried to the next sync, ICS and FastTransfer
uploads read back.  The C codec (build/fxdump) decodes each stream with the
client's buffer splits when it has been built."""
import json
import os
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import emsmdb_client as EC                                               # noqa: E402
import ics_client as IC                                                  # noqa: E402
import lab_fxwriter as W                                                 # noqa: E402
from test_lab import lab, ALICE                                          # noqa: E402,F401

FXDUMP = os.path.join(HERE, '..', '..', 'build', 'fxdump')
PidTagSubject = 0x0037001F


def fxdump(chunks):
    """Decode the chunks with the C codec; None when build/fxdump is absent."""
    if not os.path.exists(FXDUMP):
        return None
    with tempfile.TemporaryDirectory() as d:
        names = []
        for i, c in enumerate(chunks):
            names.append(os.path.join(d, '%05d' % i))
            with open(names[-1], 'wb') as f:
                f.write(c)
        out = subprocess.run([FXDUMP] + names, capture_output=True, text=True, timeout=120)
    res = json.loads(out.stdout)
    assert out.returncode == 0, res
    return res


def session(port):
    dce = EC.connect('127.0.0.1', port)
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)['ErrorCode'] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon['ReturnValue'] == 0
    return dce, c, logon['FolderIds']


def sample_message(subject):
    return {'props': {PidTagSubject: subject, 0x001A001F: 'IPM.Note',
                      0x1000001F: 'body of ' + subject, 0x0E070003: 1},
            'named': [{'guid': '00020329-0000-0000-c000-000000000046', 'name': 'Keywords',
                       'type': 0x101F, 'value': ['fx']}],
            'recipients': [{'props': {0x3001001F: 'Bob', 0x0C150003: 1}}],
            'attachments': [{'props': {0x37050003: 1, 0x3707001F: 'a.bin',
                                       0x37010102: bytes(range(256)) * 200}},
                            {'props': {0x37050003: 5},
                             'embedded': {'props': {PidTagSubject: 'inner ' + subject}}}]}


def test_ics_sync_of_the_inbox(lab):
    """The whole Inbox (with lab_store's messages when the lab has them: a
    big attachment (10 MB where asked for, lab_store.big_size), HTML, RTF, an
    embedded message, named properties)."""
    dce, c, fids = session(lab['emsmdb'])
    first = IC.sync_folder(c, 0, fids[4], buffer_size=0x7F00)
    subjects = [m['props'].get(PidTagSubject) for m in first['messages']]
    assert 'Welcome to the lab' in subjects
    assert set(first['state']) >= {W.MetaTagIdsetGiven, W.MetaTagCnsetSeen}
    d = fxdump(first['chunks'])
    if d is not None:
        assert d['exact'] and d['bytes'] == len(first['stream'])
        assert d['changes'] == len(first['messages'])
        assert sorted(x for x in subjects if x) == sorted(
            x for x in d['subjects'] if x in subjects)
    try:
        import lab_store
    except ImportError:
        lab_store = None
    if lab_store is not None:
        want = {m['props'][PidTagSubject]: m for m in lab_store.messages()}
        got = {m['props'].get(PidTagSubject): m for m in first['messages']}
        for subj, m in want.items():
            g = got[subj]
            for t, v in m['props'].items():
                assert g['props'][t] == v, (subj, hex(t))
            assert len(g['attachments']) == len(m.get('attachments', []))
            for ga, wa in zip(g['attachments'], m.get('attachments', [])):
                assert ga['props'][0x37050003] == wa['props'][0x37050003]
                if 0x37010102 in wa['props']:
                    assert ga['props'][0x37010102] == wa['props'][0x37010102]
            assert sorted((n['guid'], n.get('lid'), n.get('name'), n['value'])
                          for n in g['named']) == \
                sorted((n['guid'], n.get('lid'), n.get('name'), n['value'])
                       for n in m.get('named', []))
    # nothing new: the second sync with the state carries no change
    again = IC.sync_folder(c, 0, fids[4], state=first['state'])
    assert again['messages'] == []
    c.disconnect()
    dce.disconnect()


def test_ics_sync_and_uploads(lab):
    dce, c, fids = session(lab['emsmdb'])
    inbox = fids[6]   # Sent Items: small, so 97-byte buffers stay quick
    first = IC.sync_folder(c, 0, inbox, buffer_size=97)
    assert first['messages'] == [] and set(first['state']) >= {W.MetaTagCnsetSeen}

    # FastTransfer upload (CopyMessages), split in 1000-byte PutBuffers
    m = sample_message('fx upload')
    IC.fx_upload(c, 0, inbox, [m], chunk=1000)
    # ICS upload: ImportMessageChange + SetProperties + SaveChangesMessage
    repl = bytes(16)
    IC.ics_upload(c, 0, inbox, {'props': {PidTagSubject: 'ics upload', 0x001A001F: 'IPM.Note'}},
                  repl + bytes(6), repl + b'\x00\x00\x00\x00\x00\x07', 0x01D9000000000000)
    third = IC.sync_folder(c, 0, inbox, state=first['state'], buffer_size=4096)
    got = {x['props'].get(PidTagSubject): x for x in third['messages']}
    assert set(got) == {'fx upload', 'ics upload'}
    up = got['fx upload']
    assert up['props'][0x1000001F] == 'body of fx upload'
    assert up['recipients'] == m['recipients']
    assert up['attachments'][0]['props'][0x37010102] == bytes(range(256)) * 200
    assert up['attachments'][1]['embedded']['props'][PidTagSubject] == 'inner fx upload'
    assert up['named'][0]['name'] == 'Keywords' and up['named'][0]['value'] == ['fx']
    d = fxdump(third['chunks'])
    if d is not None:
        assert d['exact'] and d['changes'] == 2 and d['max_depth'] == 2
        assert sorted(d['subjects']) == ['fx upload', 'ics upload', 'inner fx upload']

    # RopFastTransferSourceCopyTo of the uploaded message: its messageContent
    mid = [x for x in third['messages'] if x['props'].get(PidTagSubject) == 'fx upload'][0]
    mid = mid['header'][W.PidTagMid]
    stream, chunks = IC.fx_download_message(c, 0, inbox, mid, buffer_size=0x8000 + 10)
    [msg] = W.messages_of(W.parse(stream))
    assert msg['attachments'][0]['props'][0x37010102] == bytes(range(256)) * 200
    d = fxdump(chunks)
    if d is not None:
        assert d['exact'] and d['changes'] == 0
    c.disconnect()
    dce.disconnect()


def test_ics_bad_state_rejected(lab):
    dce, c, fids = session(lab['emsmdb'])
    rb = EC.RopBuffer().open_folder(0, 1, fids[4])
    IC.sync_configure(rb, 1, 2)
    IC.upload_state(rb, 2, W.MetaTagCnsetSeen, b'\x01' * 16 + b'\x77')
    res = c.execute(rb)
    assert [x['ReturnValue'] for x in res] == [0, 0, 0, 0, 0x80070057]
    c.disconnect()
    dce.disconnect()


def test_lab_ics_answers_decode_as_the_client_parsed(tmp_path):
    """The lab's ICS / FastTransfer answers, in process, decoded by the
    project's ROP codec (build/ropdump) with the request as context: the
    values must be those the lab's client parsed."""
    from test_lab_crosscheck import ROPDUMP, dump, lab_session, rops_of
    if not os.path.exists(ROPDUMP):
        pytest.skip('build/ropdump not built')
    s, _ = lab_session()
    mb = s.store.mailbox(ALICE, 'Alice')
    H = [0xFFFFFFFF] * 8
    rb = EC.RopBuffer().logon(0, ALICE).open_folder(0, 1, mb.inbox.fid)
    IC.sync_configure(rb, 1, 2)
    IC.upload_state(rb, 2, W.MetaTagCnsetSeen, b'')
    IC.get_buffer(rb, 2, 64)
    IC.get_buffer(rb, 2, 0x9000)
    IC.get_transfer_state(rb, 2, 3)
    IC.get_buffer(rb, 3, 100)
    IC.open_collector(rb, 1, 4)
    IC.import_message_change(rb, 4, 5, {W.PidTagSourceKey: bytes(22)})
    IC.dest_configure(rb, 1, 6, 0x03)
    IC.put_buffer(rb, 6, W.top_message({'props': {PidTagSubject: 'x'}}))
    welcome = [m for m, x in mb.inbox.messages.items()
               if x.props.get(PidTagSubject) == 'Welcome to the lab']
    IC.copy_messages(rb, 1, 7, welcome)
    IC.get_buffer(rb, 7, 0x7000)
    IC.tell_version(rb, 7)
    req = rb.build(H)
    out = s.process(req)
    res, _ = rb.parse(out)
    assert all(r['ReturnValue'] == 0 for r in res), res
    got = rops_of(dump(ROPDUMP, tmp_path, req, out), 'response')
    assert len(got) == len(res)
    for g, r in zip(got, res):
        assert int(g['RopId'], 16) == r['rop']
        for k in ('TransferStatus', 'InProgressCount', 'TotalStepCount', 'BufferUsedSize',
                  'MessageId'):
            if k in r:
                assert g[k] == r[k] or int(str(g[k]), 0) == r[k], (g['Name'], k, g[k], r[k])
        if 'TransferBuffer' in r:
            assert g['TransferBufferSize'] == len(r['TransferBuffer'])
    names = [g['Name'] for g in got]
    assert 'RopFastTransferSourceGetBuffer' in names and \
        'RopSynchronizationImportMessageChange' in names
