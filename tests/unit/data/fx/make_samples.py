#!/usr/bin/python3
"""Writes the FastTransfer stream samples of this folder with the lab's
writer (tests/lab/lab_fxwriter.py, written from MS-OXCFXICS independently of
src/fx).  Run: /usr/bin/python3 tests/unit/data/fx/make_samples.py"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', '..', '..', 'lab'))
import lab_fxwriter as w  # noqa: E402

PS_PUBLIC_STRINGS = '00020329-0000-0000-c000-000000000046'
PSETID_COMMON = '00062008-0000-0000-c000-000000000046'
REPLGUID = '12345678-9abc-def0-1234-56789abcdef0'


def u32(v):
    return struct.pack('<I', v)


inner = {'props': {0x0037001F: 'Forwarded inside', 0x001A001F: 'IPM.Note',
                   0x1000001F: 'embedded body'},
         'recipients': [{'props': {0x3001001F: 'Carol', 0x0C150003: 1}}]}
message = {
    'props': {0x001A001F: 'IPM.Note', 0x0037001F: 'Quarterly report \u00e9\u4e2d',
              0x0E070003: 0x11, 0x0E060040: 0x01D9A0B0C0D0E0F0, 0x1000001F: 'Plain body\r\n',
              0x10130102: b'<html><body>hi</body></html>', 0x0E1B000B: True,
              0x00170003: 1, 0x10F4000B: False, 0x0FFF0102: bytes(range(46))},
    'named': [{'guid': PSETID_COMMON, 'lid': 0x8501, 'type': 0x0003, 'value': 15},
              {'guid': PS_PUBLIC_STRINGS, 'name': 'Keywords', 'type': 0x101F,
               'value': ['red', 'blue']},
              {'guid': PS_PUBLIC_STRINGS, 'name': 'x-custom', 'type': 0x0102,
               'value': b'\x00\x01\x02'}],
    'recipients': [{'props': {0x3001001F: 'Alice', 0x3003001F: 'alice@example.com',
                              0x0C150003: 1, 0x3002001F: 'SMTP'}},
                   {'props': {0x3001001F: 'Bob', 0x0C150003: 2}}],
    'attachments': [
        {'props': {0x37050003: 1, 0x3707001F: 'data.bin', 0x37010102: bytes(range(256)) * 40,
                   0x0E200003: 10240}},
        {'props': {0x37050003: 5, 0x3001001F: 'Forwarded inside'}, 'embedded': inner}],
}

types = {'props': {
    0x66000002: 0x1234, 0x66010003: 0xDEADBEEF, 0x66020004: 1.5, 0x66030005: 2.25,
    0x66040006: 123456789, 0x66050007: 45000.5, 0x6606000A: 0x8004010F, 0x6607000B: True,
    0x66080014: 0x0102030405060708, 0x66090040: 0x01D000000000000, 0x660A0048: REPLGUID,
    0x660B001E: 'eight bit', 0x660C001F: 'wide', 0x660D0102: b'', 0x660E00FB: b'\x01' + bytes(20),
    0x660F000D: b'object bytes', 0x661104E4 | 0x8000: 'code page 1252',
    0x66121002: [1, 2, 3], 0x66131003: [7], 0x66141004: [0.5, 1.0], 0x66151005: [3.0],
    0x66161006: [5, 6], 0x66171007: [1.0], 0x66181014: [9, 10], 0x66191040: [11],
    0x661A1048: [REPLGUID, REPLGUID], 0x661B101E: ['a', 'bc'], 0x661C101F: ['x', '', 'yz'],
    0x661D1102: [b'\x01', b'', b'\x02\x03'], 0x661E101F: []}}


def header(mid, cn):
    return {w.PidTagSourceKey: bytes(16) + struct.pack('<Q', mid)[2:8],
            w.PidTagLastModificationTime: 0x01D9000000000000 + mid,
            w.PidTagChangeKey: bytes(16) + struct.pack('<I', cn),
            w.PidTagPredecessorChangeList: bytes([20]) + bytes(16) + struct.pack('<I', cn),
            w.PidTagAssociated: False, w.PidTagMid: mid, w.PidTagMessageSize: 1000}


def state():
    return {w.MetaTagIdsetGiven: w.idset([(1, 3), (7, 7)], guid=REPLGUID),
            w.MetaTagCnsetSeen: w.idset([(1, 0x20)], guid=REPLGUID),
            w.MetaTagCnsetSeenFAI: w.idset([], guid=REPLGUID),
            w.MetaTagCnsetRead: w.idset([(1, 0x10), (0x10000, 0x20000)], guid=REPLGUID)}


ics = w.contents_sync(
    [(message, header(0x0001000000000001, 0x20), 5000),
     (inner, header(0x0001000000000002, 0x21), 300)],
    state(), deleted=w.idset([(4, 6)], replid=1), read=w.idset([(1, 1)], replid=1),
    unread=w.idset([(2, 2)], replid=1), progress=(2, 5300))

# messageChangePartial (2.2.4.3.18): groupInfo, MetaTagIncrSyncGroupId,
# IncrSyncChgPartial, header, then property groups.
groupinfo = struct.pack('<IIII', 1, 0, 1, 1) + u32(0x0037001F)
partial = (u32(w.IncrSyncGroupInfo) + w.prop(0x00000102, groupinfo) +
           w.prop(0x407C0003, 1) + u32(w.IncrSyncChgPartial) +
           w.prop_list(header(0x0001000000000003, 0x22)) +
           w.prop(0x407A0003, 0) + w.prop(0x0037001F, 'changed subject') +
           w.message_children({'recipients': [{'props': {0x3001001F: 'Dan'}}]}) +
           u32(w.IncrSyncStateBegin) + w.prop(w.MetaTagCnsetSeen, w.idset([(1, 0x22)], guid=REPLGUID)) +
           u32(w.IncrSyncStateEnd) + u32(w.IncrSyncEnd))

folder = (u32(w.StartTopFld) + w.prop_list({0x3001001F: 'Inbox', 0x36010003: 1}) +
          w.prop(0x40160003, 0x0E12000D) +        # MetaTagFXDelProp PidTagContainerContents
          w.top_message(message) + w.top_message({'props': {0x001A001F: 'IPM.Rule'}}, fai=True) +
          u32(w.StartSubFld) + w.prop_list({0x3001001F: 'Sub'}) + u32(w.EndFolder) +
          u32(w.EndFolder))

# progressTotal, then a messageChangePartial with its
# IncrSyncProgressPerMsg in front (before its groupInfo) and a full change
# with one: contentsSync = [progressTotal] *([progressPerMessage]
# messageChange) ... (MS-OXCFXICS 2.2.4.3.2, 2.2.4.3.15, 2.2.4.3.19)
progress_partial = (w.progress_total(2, 1300) + u32(w.IncrSyncProgressPerMsg) +
                    w.prop(0x00000003, 1000) + w.prop(0x0000000B, False) +
                    u32(w.IncrSyncGroupInfo) + w.prop(0x00000102, groupinfo) +
                    w.prop(0x407C0003, 1) + u32(w.IncrSyncChgPartial) +
                    w.prop_list(header(0x0001000000000003, 0x22)) +
                    w.prop(0x407A0003, 0) + w.prop(0x0037001F, 'changed subject') +
                    w.message_children({'recipients': [{'props': {0x3001001F: 'Dan'}}]}) +
                    w.message_change(inner, header(0x0001000000000004, 0x23), 300) +
                    u32(w.IncrSyncStateBegin) +
                    w.prop(w.MetaTagCnsetSeen, w.idset([(1, 0x23)], guid=REPLGUID)) +
                    u32(w.IncrSyncStateEnd) + u32(w.IncrSyncEnd))

# progressTotal (1 normal message of 300 bytes, 1 FAI of 400), then an FAI
# messageChangeFull and a normal one, neither with an IncrSyncProgressPerMsg
# (optional: contentsSync's [progressPerMessage], MS-OXCFXICS 2.2.4.3.2):
# only the header's PidTagAssociated says which is FAI
fai_header = {**header(0x0001000000000005, 0x24), w.PidTagAssociated: True}
progress_fai = (w.progress_total(1, 300, fai_count=1, fai_size=400) +
                w.message_change({'props': {0x001A001F: 'IPM.Rule', 0x0037001F: 'rule'}},
                                 fai_header) +
                w.message_change(inner, header(0x0001000000000006, 0x25)) +
                u32(w.IncrSyncStateBegin) +
                w.prop(w.MetaTagCnsetSeen, w.idset([(1, 0x25)], guid=REPLGUID)) +
                u32(w.IncrSyncStateEnd) + u32(w.IncrSyncEnd))

errinfo = (w.prop(0x400F0003, 0x80040102) + u32(w.FXErrorInfo) +
           w.prop(0x00000003, 0x8004010F))

samples = {'message.fxs': w.top_message(message), 'content.fxs': w.message_content(message),
           'types.fxs': w.message_content(types), 'ics.fxs': ics, 'partial.fxs': partial,
           'folder.fxs': folder, 'errinfo.fxs': errinfo,
           'progress_partial.fxs': progress_partial, 'progress_fai.fxs': progress_fai}
for name, data in samples.items():
    with open(os.path.join(HERE, name), 'wb') as f:
        f.write(data)
    print(name, len(data))
