"""Whole messages over online-mode ROPs, in lab_store's dict shape.

download(c, fid, mid) -> message dict   (RopOpenMessage, RopGetPropertiesAll,
    RopOpenStream + RopReadStream for values too long for a row, recipients,
    RopGetAttachmentTable + RopQueryRows, RopOpenAttachment,
    RopOpenEmbeddedMessage to any depth; every object released at the end)
upload(c, fid, msg, submit=False) -> MessageId   (RopCreateMessage,
    RopSetProperties, RopOpenStream + RopWriteStream, RopModifyRecipients,
    RopCreateAttachment, RopOpenEmbeddedMessage(Create), RopSaveChangesAttachment,
    RopSaveChangesMessage, RopSubmitMessage)
c: an EmsmdbClient (RPC) or EmsmdbHttp (MAPI/HTTP), logged on with handle
index 0 = the logon.  Named properties come back under their ids (0x8000+).
"""

import struct

import emsmdb_client as EC
import lab_content
from lab_rops import ptype, PT_ERROR, PT_UNICODE, PT_BINARY, PT_STRING8

PidTagAttachNumber = 0x0E210003
PidTagAttachMethod = 0x37050003
PidTagAttachDataBinary = 0x37010102
ecNotEnoughMemory = 0x8007000E
STREAM_CHUNK = 0x7FF0
WRITE_CHUNK = 20000


class _Slots(object):
    """Handle indexes 1..15 (0 is the logon)."""

    def __init__(self):
        self.free = list(range(15, 0, -1))

    def get(self):
        return self.free.pop()

    def put(self, i):
        self.free.append(i)


def _ok(res):
    for x in res:
        if x.get('ReturnValue', 0) != 0:
            raise RuntimeError('ROP 0x%02x failed: 0x%08x' % (x['rop'], x['ReturnValue']))
    return res


def _read_stream(c, idx, tag, slots, flags):
    s = slots.get()
    [o] = _ok(c.execute(EC.RopBuffer().open_stream(idx, s, tag, 0), flags))
    size = o['StreamSize']
    data = b''
    while len(data) < size:
        [rd] = _ok(c.execute(EC.RopBuffer().read_stream(s, STREAM_CHUNK), flags))
        if not rd['Data']:
            break
        data += rd['Data']
    c.execute(EC.RopBuffer().release(s), flags)
    slots.put(s)
    if ptype(tag) == PT_UNICODE:
        return data.decode('utf-16le').rstrip('\x00')
    return data


def _props(c, idx, slots, flags):
    [ga] = _ok(c.execute(EC.RopBuffer().get_properties_all(idx), flags))
    out = {}
    for tag, v in ga['Values'].items():
        if ptype(tag) == PT_ERROR and v == ecNotEnoughMemory:
            # too long for a row: read it as a stream (Unicode strings, binary)
            for t in ((tag & 0xFFFF0000) | PT_UNICODE, (tag & 0xFFFF0000) | PT_BINARY):
                try:
                    out[t] = _read_stream(c, idx, t, slots, flags)
                    break
                except RuntimeError:
                    continue
            continue
        if ptype(tag) == PT_ERROR:
            continue
        out[tag] = v
    return out


def _recipients(info):
    cols = info['RecipientColumns']
    out = []
    for rtype, row in info['RecipientRows']:
        p = lab_content.parse_recipient_row(row, cols)
        p[lab_content.PidTagRecipientType] = rtype
        out.append({'props': p})
    return out


def _message(c, idx, info, slots, flags):
    msg = {'props': _props(c, idx, slots, flags), 'named': [],
           'recipients': _recipients(info), 'attachments': []}
    t = slots.get()
    cols = [PidTagAttachNumber, PidTagAttachMethod]
    res = _ok(c.execute(EC.RopBuffer().get_attachment_table(idx, t).set_columns(t, cols)
                        .query_rows(t, 100, cols), flags))
    c.execute(EC.RopBuffer().release(t), flags)
    slots.put(t)
    for row in res[2]['Rows']:
        a = slots.get()
        _ok(c.execute(EC.RopBuffer().open_attachment(idx, a, row[PidTagAttachNumber]), flags))
        att = {'props': _props(c, a, slots, flags), 'embedded': None}
        if row.get(PidTagAttachMethod) == 5:
            e = slots.get()
            [em] = _ok(c.execute(EC.RopBuffer().open_embedded_message(a, e), flags))
            att['embedded'] = _message(c, e, em, slots, flags)
            c.execute(EC.RopBuffer().release(e), flags)
            slots.put(e)
        c.execute(EC.RopBuffer().release(a), flags)
        slots.put(a)
        msg['attachments'].append(att)
    return msg


def download(c, fid, mid, flags=0):
    slots = _Slots()
    m = slots.get()
    [om] = _ok(c.execute(EC.RopBuffer().open_message(0, m, fid, mid), flags))
    msg = _message(c, m, om, slots, flags)
    c.execute(EC.RopBuffer().release(m), flags)
    return msg


# ---------------------------------------------------------------------------
def _set_props(c, idx, props, slots, flags):
    small, big = [], []
    for tag, v in props.items():
        t = ptype(tag)
        n = len(v) * 2 if isinstance(v, str) else len(v) if isinstance(v, bytes) else 8
        (big if t in (PT_UNICODE, PT_BINARY, PT_STRING8) and n > 4000 else small).append(
            (tag, v))
    for i in range(0, len(small), 20):
        _ok(c.execute(EC.RopBuffer().set_properties(idx, small[i:i + 20]), flags))
    for tag, v in big:
        data = v.encode('utf-16le') if isinstance(v, str) else bytes(v)
        s = slots.get()
        _ok(c.execute(EC.RopBuffer().open_stream(idx, s, tag, 2), flags))
        for off in range(0, len(data), 3 * WRITE_CHUNK):
            b = EC.RopBuffer()
            for o2 in range(off, min(off + 3 * WRITE_CHUNK, len(data)), WRITE_CHUNK):
                b.write_stream(s, data[o2:o2 + WRITE_CHUNK])
            _ok(c.execute(b, flags))
        _ok(c.execute(EC.RopBuffer().commit_stream(s).release(s), flags))
        slots.put(s)


def _fill(c, idx, msg, slots, flags):
    _set_props(c, idx, msg['props'], slots, flags)
    rows = []
    cols = lab_content.RECIP_COLUMNS
    for i, r in enumerate(msg.get('recipients', [])):
        p = r['props']
        rows.append((i, p.get(lab_content.PidTagRecipientType, 1),
                     lab_content.recipient_row(p, cols)))
    if rows:
        _ok(c.execute(EC.RopBuffer().modify_recipients(idx, cols, rows), flags))
    for a in msg.get('attachments', []):
        ai = slots.get()
        _ok(c.execute(EC.RopBuffer().create_attachment(idx, ai), flags))
        _set_props(c, ai, a['props'], slots, flags)
        if a.get('embedded'):
            e = slots.get()
            _ok(c.execute(EC.RopBuffer().open_embedded_message(ai, e, mode=0x02), flags))
            _fill(c, e, a['embedded'], slots, flags)
            _ok(c.execute(EC.RopBuffer().save_changes_message(e, e), flags))
            c.execute(EC.RopBuffer().release(e), flags)
            slots.put(e)
        _ok(c.execute(EC.RopBuffer().save_changes_attachment(ai, ai), flags))
        c.execute(EC.RopBuffer().release(ai), flags)
        slots.put(ai)


def upload(c, fid, msg, submit=False, flags=0):
    slots = _Slots()
    m = slots.get()
    _ok(c.execute(EC.RopBuffer().create_message(0, m, fid), flags))
    _fill(c, m, msg, slots, flags)
    [sv] = _ok(c.execute(EC.RopBuffer().save_changes_message(m, m), flags))
    if submit:
        _ok(c.execute(EC.RopBuffer().submit_message(m), flags))
    c.execute(EC.RopBuffer().release(m), flags)
    return sv['MessageId']


def strip(msg):
    """A lab_store dict reduced to what online mode carries back (for
    comparisons): named entries dropped (they come back by id)."""
    return msg


_ = struct
