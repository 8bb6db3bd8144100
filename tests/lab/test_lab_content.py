"""The lab mailbox's content in online mode (lab_store, lab_content,
content_client) and the compressed-RTF codec against MS-OXRTFCP section 4."""

import emsmdb_client as EC
import emsmdb_ndr as N
import content_client as CC
import lab_store as LS
import rtfcp
from test_lab import lab, ALICE  # noqa: F401 (fixture)

PidTagMid, PidTagSubject = 0x674A0014, 0x0037001F
# big transfers uncompressed: the lab's LZ77 is pure Python
FL = N.EXT2_NO_COMPRESSION


def test_rtf_spec_examples():
    for raw, comp in (rtfcp.SPEC_EXAMPLE_1, rtfcp.SPEC_EXAMPLE_2):
        assert rtfcp.decompress(comp) == raw
        assert rtfcp.compress(raw) == comp       # byte for byte as the spec shows
    assert rtfcp.decompress(rtfcp.compress(LS.RTF_TEXT)) == LS.RTF_TEXT


def session(lab):
    dce = EC.connect('127.0.0.1', lab['emsmdb'])
    c = EC.EmsmdbClient(dce)
    assert c.connect_ex(ALICE)['ErrorCode'] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    return dce, c, logon['FolderIds']


def inbox_mids(c, inbox):
    cols = [PidTagMid, PidTagSubject]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, inbox).get_contents_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 100, cols).release(2).release(1))
    return {row[PidTagSubject]: row[PidTagMid] for row in res[3]['Rows']}


def same_message(got, src):
    """Every tagged property, recipient and attachment of src is in got."""
    for tag, v in src['props'].items():
        assert got['props'].get(tag) == v, hex(tag)
    assert len(got['recipients']) == len(src['recipients'])
    for g, s in zip(got['recipients'], src['recipients']):
        for tag, v in s['props'].items():
            assert g['props'].get(tag) == v, hex(tag)
    assert len(got['attachments']) == len(src['attachments'])
    for g, s in zip(got['attachments'], src['attachments']):
        for tag, v in s['props'].items():
            assert g['props'].get(tag) == v, hex(tag)
        assert (g['embedded'] is None) == (s['embedded'] is None)
        if s['embedded']:
            same_message(g['embedded'], s['embedded'])


def test_download_and_upload(lab):
    dce, c, fids = session(lab)
    mids = inbox_mids(c, fids[4])
    src = LS.messages()
    for m in src:
        got = CC.download(c, fids[4], mids[m["props"][LS.PidTagSubject]], flags=FL)
        same_message(got, m)
    # upload the three (the big one included: past 1 MB) to Drafts-like Outbox, read back
    for m in src:
        m['props'][LS.PidTagSubject] = 'Up: ' + m['props'][LS.PidTagSubject]
        CC.upload(c, fids[5], m, flags=FL)
    mids = {}
    cols = [PidTagMid, PidTagSubject]
    res = c.execute(EC.RopBuffer().open_folder(0, 1, fids[5]).get_contents_table(1, 2)
                    .set_columns(2, cols).query_rows(2, 100, cols).release(2).release(1))
    mids = {row[PidTagSubject]: row[PidTagMid] for row in res[3]['Rows']}
    for m in src:
        same_message(CC.download(c, fids[5], mids[m["props"][LS.PidTagSubject]], flags=FL), m)
    c.disconnect()
    dce.disconnect()
