"""The lab's message content in online mode: lab_store dicts made into store
messages, and the ROPs the base processor (lab_rops) did not serve:
recipients (RopModifyRecipients, RopReadRecipients, RopRemoveAllRecipients
and the recipient rows of RopOpenMessage), RopGetPropertiesAll,
RopOpenEmbeddedMessage, and named properties (RopGetPropertyIdsFromNames,
RopGetNamesFromPropertyIds).  Layouts: MS-OXCROPS 2.2.6 / 2.2.8, RecipientRow
MS-OXCDATA 2.8.3.1, PropertyName MS-OXCDATA 2.6.1."""

import struct
import uuid

import lab_rops as R

PidTagRecipientType = 0x0C150003
PidTagRowid = 0x30000003
PidTagDisplayName = 0x3001001F
PidTagAddressType = 0x3002001F
PidTagEmailAddress = 0x3003001F
PidTagSmtpAddress = 0x39FE001F
PidTagAttachMethod = 0x37050003
PidTagMessageClass = 0x001A001F

# The recipient columns the lab names in RopOpenMessage (and uses for
# RopReadRecipients rows).
RECIP_COLUMNS = [PidTagSmtpAddress]

RF_SMTP, RF_X500, RF_EMAIL, RF_DISPLAY, RF_TRANSMIT = 0x3, 0x1, 0x8, 0x10, 0x20
RF_SIMPLE, RF_UNICODE, RF_OUTOFSTD = 0x400, 0x200, 0x8000


# ---------------------------------------------------------------------------
# Named properties
# ---------------------------------------------------------------------------
def named_id(store, guid, key):
    """guid: 16 bytes (little-endian GUID); key: ('lid', int) or ('name', str)."""
    k = (bytes(guid), key[0], key[1] if key[0] == 'lid' else key[1].lower())
    with store.lock:
        if k not in store.named_ids:
            pid = 0x8000 + len(store.named_ids)
            store.named_ids[k] = pid
            store.named_names[pid] = (bytes(guid), key[0], key[1])
        return store.named_ids[k]


def _guid(g):
    return uuid.UUID(g).bytes_le if isinstance(g, str) else bytes(g)


# ---------------------------------------------------------------------------
# lab_store dicts -> store messages
# ---------------------------------------------------------------------------
def from_dict(store, d, mid, fid):
    m = R.Message(mid, fid, {R.canonical(t): v for t, v in d['props'].items()})
    for n in d.get('named', []):
        key = ('lid', n['lid']) if 'lid' in n else ('name', n['name'])
        pid = named_id(store, _guid(n['guid']), key)
        m.props[(pid << 16) | n['type']] = n['value']
    for i, r in enumerate(d.get('recipients', [])):
        p = dict(r['props'])
        p[PidTagRowid] = i
        m.recipients.append(p)
    for i, a in enumerate(d.get('attachments', [])):
        att = R.Attachment(i)
        att.props = dict(a['props'])
        if a.get('embedded'):
            att.embedded = from_dict(store, a['embedded'], 0, 0)
        m.attachments[i] = att
    m.next_attach = len(m.attachments)
    return m


# ---------------------------------------------------------------------------
# Recipient rows
# ---------------------------------------------------------------------------
def _wstr(s):
    return s.encode('utf-16le') + b'\x00\x00'


def recipient_row(p, columns=RECIP_COLUMNS):
    """RecipientRow (MS-OXCDATA 2.8.3.1) of a recipient property dict: an SMTP
    recipient with Unicode EmailAddress and DisplayName, then the columns."""
    flags = RF_SMTP | RF_EMAIL | RF_DISPLAY | RF_UNICODE
    out = struct.pack('<H', flags) + _wstr(p.get(PidTagEmailAddress, '')) + \
        _wstr(p.get(PidTagDisplayName, ''))
    out += struct.pack('<H', len(columns))
    vals, flagged = [], False
    for tag in columns:
        v = p.get(tag)
        if v is None:
            flagged = True
            vals.append(b'\x0a' + struct.pack('<L', R.ecNotFound))
        else:
            vals.append(b'\x00' + R.write_value(R.ptype(tag), v))
    if flagged:
        out += b'\x01' + b''.join(vals)
    else:
        out += b'\x00' + b''.join(v[1:] for v in vals)
    return out


def parse_recipient_row(data, columns):
    r = R.Reader(data)
    f = r.u16()
    t = f & 7
    p = {}
    if t == RF_X500:
        r.u8()
        r.u8()
        p[PidTagEmailAddress] = r.asciiz()
        p[PidTagAddressType] = 'EX'
    elif t in (6, 7):
        r.take(r.u16())
        r.take(r.u16())
    elif t == RF_SMTP:
        p[PidTagAddressType] = 'SMTP'
    if t == 0 and f & RF_OUTOFSTD:
        p[PidTagAddressType] = r.asciiz()
    wide = f & RF_UNICODE

    def s():
        return r.utf16z() if wide else r.asciiz()
    if f & RF_EMAIL:
        p[PidTagEmailAddress] = s()
    if f & RF_DISPLAY:
        p[PidTagDisplayName] = s()
    if f & RF_SIMPLE:
        s()
    if f & RF_TRANSMIT:
        s()
    n = r.u16()
    if n > len(columns):
        raise R.RopParseError('RecipientColumnCount %d > %d columns' % (n, len(columns)))
    flag = r.u8()
    for tag in columns[:n]:
        if flag == 1:
            fv = r.u8()
            if fv == 0x0A:
                r.u32()
                continue
            if fv == 0x01:
                continue
        p[R.canonical(tag)] = R.read_value(r, R.ptype(tag))
    return p


def message_info(m):
    """The MessageInfo part of RopOpenMessage / RopOpenEmbeddedMessage /
    RopReloadCachedInformation responses, recipients included."""
    subject = m.props.get(R.PidTagSubject)
    out = bytes([1 if any((t >> 16) >= 0x8000 for t in m.props) else 0])
    out += b'\x00'                                    # SubjectPrefix: none
    out += (b'\x04' + _wstr(subject)) if subject else b'\x00'
    out += struct.pack('<HH', len(m.recipients), len(RECIP_COLUMNS))
    out += b''.join(struct.pack('<L', t) for t in RECIP_COLUMNS)
    rows = m.recipients[:254]
    out += struct.pack('<B', len(rows))
    for p in rows:
        row = recipient_row(p)
        out += struct.pack('<BHHH', p.get(PidTagRecipientType, 1), 0x04B0, 0, len(row)) + row
    return out


# ---------------------------------------------------------------------------
# ROPs
# ---------------------------------------------------------------------------
def _hdr(r):
    r.u8()
    r.u8()
    return r.u8()


def rop_get_properties_all(s, r, handles):
    idx = _hdr(r)
    limit = r.u16()
    want_unicode = r.u16()
    o = s.obj(handles, idx, 'folder', 'message', 'attachment')
    if o is None:
        return R.fail(0x08, idx, R.ecNullObject)
    props = R.object_props(o)
    if R.CHANGE_KEYS and isinstance(o, R.MessageObj):
        props = dict(props)
        props[R.PidTagChangeKey] = R.change_key_of(o.msg)
    # Values longer than the limit (8 KB when the client gives none) are
    # answered ecNotEnoughMemory: the client opens a stream for them.
    lim = limit or 0x2000
    out = []
    for tag in sorted(props):
        t = R.ptype(tag)
        if t == R.PT_OBJECT:
            continue
        v = props[tag]
        if t == R.PT_UNICODE and not want_unicode:
            tag = (tag & 0xFFFF0000) | R.PT_STRING8
            t = R.PT_STRING8
        if isinstance(v, (bytes, bytearray, str)) and len(v) > lim:
            enc = None
        else:
            try:
                enc = R.write_value(t, R.convert_for(tag, v))
            except (ValueError, struct.error, TypeError):
                continue
        if enc is None or len(enc) > lim:
            out.append(struct.pack('<LL', (tag & 0xFFFF0000) | R.PT_ERROR,
                                   R.ecNotEnoughMemory))
        else:
            out.append(struct.pack('<L', tag) + enc)
    s.log('emsmdb:   RopGetPropertiesAll %s -> %d values' % (o.kind, len(out)))
    return struct.pack('<BBLH', 0x08, idx, R.ecSuccess, len(out)) + b''.join(out)


def rop_remove_all_recipients(s, r, handles):
    idx = _hdr(r)
    r.u32()
    o = s.obj(handles, idx, 'message')
    if o is None:
        return R.fail(0x0D, idx, R.ecNullObject)
    o.msg.recipients = []
    return struct.pack('<BBL', 0x0D, idx, R.ecSuccess)


def rop_modify_recipients(s, r, handles):
    idx = _hdr(r)
    ncols = r.u16()
    cols = [r.u32() for _ in range(ncols)]
    nrows = r.u16()
    rows = []
    for _ in range(nrows):
        row_id = r.u32()
        rtype = r.u8()
        size = r.u16()
        rows.append((row_id, rtype, r.take(size)))
    o = s.obj(handles, idx, 'message')
    if o is None:
        return R.fail(0x0E, idx, R.ecNullObject)
    byid = {p[PidTagRowid]: p for p in o.msg.recipients}
    for row_id, rtype, data in rows:
        if not data:
            byid.pop(row_id, None)
            continue
        p = parse_recipient_row(data, cols)
        p[PidTagRecipientType] = rtype
        p[PidTagRowid] = row_id
        byid[row_id] = p
    o.msg.recipients = [byid[k] for k in sorted(byid)]
    s.log('emsmdb:   RopModifyRecipients %d rows -> %d recipients' % (
        nrows, len(o.msg.recipients)))
    return struct.pack('<BBL', 0x0E, idx, R.ecSuccess)


def rop_read_recipients(s, r, handles):
    idx = _hdr(r)
    row_id = r.u32()
    r.u16()
    o = s.obj(handles, idx, 'message')
    if o is None:
        return R.fail(0x0F, idx, R.ecNullObject)
    rows = [p for p in o.msg.recipients if p[PidTagRowid] >= row_id][:254]
    if not rows:
        return R.fail(0x0F, idx, R.ecNotFound)
    out = struct.pack('<BBLB', 0x0F, idx, R.ecSuccess, len(rows))
    for p in rows:
        row = recipient_row(p)
        out += struct.pack('<LBHHH', p[PidTagRowid], p.get(PidTagRecipientType, 1), 0x04B0, 0,
                           len(row)) + row
    return out


def rop_open_embedded_message(s, r, handles):
    r.u8()
    r.u8()
    idx = r.u8()
    out_idx = r.u8()
    r.u16()                      # CodePageId
    mode = r.u8()
    a = s.obj(handles, idx, 'attachment')
    if a is None:
        return R.fail(0x46, out_idx, R.ecNullObject)
    emb = a.att.embedded
    new = False
    if emb is None:
        if not mode & 0x02:      # Create
            return R.fail(0x46, out_idx, R.ecNotFound)
        emb = R.Message(0, 0, {PidTagMessageClass: 'IPM.Note'})
        new = True
    mo = R.MessageObj(a.msgobj.mailbox, emb.clone(0, 0), a.msgobj.folder, new)
    mo.parent_att = a
    s.set_out(handles, out_idx, mo)
    s.log('emsmdb:   RopOpenEmbeddedMessage mode=0x%x -> %s' % (mode, 'new' if new else 'ok'))
    return struct.pack('<BBLBQ', 0x46, out_idx, R.ecSuccess, 0, 0) + message_info(emb)


def save_embedded(o):
    """RopSaveChangesMessage on an embedded message: into its attachment."""
    att = o.parent_att.att
    att.embedded = o.msg.clone(0, 0)
    att.props[PidTagAttachMethod] = 5
    o.new = False


def _read_name(r):
    kind = r.u8()
    guid = r.take(16)
    if kind == 0:
        return guid, ('lid', r.u32())
    if kind == 1:
        n = r.u8()
        return guid, ('name', r.take(n).decode('utf-16le').rstrip('\x00'))
    raise R.RopParseError('PropertyName Kind 0x%02x' % kind)


def _write_name(guid, key):
    if key[0] == 'lid':
        return b'\x00' + guid + struct.pack('<L', key[1])
    w = _wstr(key[1])
    return b'\x01' + guid + struct.pack('<B', len(w)) + w


def rop_get_ids_from_names(s, r, handles):
    idx = _hdr(r)
    r.u8()                       # Flags (the lab always creates)
    n = r.u16()
    names = [_read_name(r) for _ in range(n)]
    ids = [named_id(s.store, g, k) for g, k in names]
    return struct.pack('<BBLH', 0x56, idx, R.ecSuccess, len(ids)) + \
        b''.join(struct.pack('<H', i) for i in ids)


def rop_get_names_from_ids(s, r, handles):
    idx = _hdr(r)
    n = r.u16()
    ids = [r.u16() for _ in range(n)]
    out = struct.pack('<BBLH', 0x55, idx, R.ecSuccess, len(ids))
    for i in ids:
        nm = s.store.named_names.get(i)
        out += _write_name(nm[0], (nm[1], nm[2])) if nm else b'\xff' + b'\x00' * 16
    return out


ROP_HANDLERS = {
    0x08: rop_get_properties_all,
    0x0D: rop_remove_all_recipients,
    0x0E: rop_modify_recipients,
    0x0F: rop_read_recipients,
    0x46: rop_open_embedded_message,
    0x55: rop_get_names_from_ids,
    0x56: rop_get_ids_from_names,
}
