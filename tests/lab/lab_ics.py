"""Incremental Change Synchronization and FastTransfer ROPs for the Exchange
lab (MS-OXCFXICS; request/response layouts from MS-OXCROPS 2.2.12, 2.2.13).

Download: RopSynchronizationConfigure on a folder, the client's state by
RopSynchronizationUploadStateStreamBegin/Continue/End, then
RopFastTransferSourceGetBuffer in the sizes the client asks for;
RopSynchronizationGetTransferState for the final state alone;
RopFastTransferSourceCopyTo (a message) and RopFastTransferSourceCopyMessages
(a folder).  Streams are written by lab_fxwriter.

Upload: RopSynchronizationOpenCollector, RopSynchronizationImportMessageChange
(then the ordinary property, stream, attachment and save ROPs of lab_rops),
RopFastTransferDestinationConfigure + RopFastTransferDestinationPutBuffer
(the stream is read with lab_fxwriter.parse and stored as messages).

Change numbers: the lab keeps none of its own, so a message's CN is given
the first time the sync sees its (MID, PidTagLastModificationTime) pair; the
client's MetaTagCnsetSeen decides what it already has, MetaTagIdsetGiven what
it holds (IDs gone from the folder become MetaTagIdsetDeleted).

The handlers register themselves in lab_rops.ROP_HANDLERS on import.
"""

import itertools
import os
import struct
import threading
import uuid as uuidlib

import lab_fxwriter as W
import lab_rops as R

ecSuccess = R.ecSuccess
# TransferStatus (MS-OXCROPS 2.2.12.5.2)
TS_ERROR, TS_PARTIAL, TS_NOROOM, TS_DONE = 0x0000, 0x0001, 0x0002, 0x0003
# SourceOperation (MS-OXCFXICS 2.2.3.1.2.1.1)
SRC_COPYTO, SRC_COPYPROPERTIES, SRC_COPYMESSAGES, SRC_COPYFOLDER = 1, 2, 3, 4

# Properties the lab computes and does not send as message content
COMPUTED = {R.PidTagMid, R.PidTagFolderId, R.PidTagParentFolderId, R.PidTagInstID,
            R.PidTagInstanceNum, R.PidTagEntryId, R.PidTagRecordKey}


_dump_seq = itertools.count(1)
_dump_lock = threading.Lock()


def dump_stream(data):
    """With LAB_FX_DUMP=DIR in the environment, every stream the lab sends
    is written to DIR/NNNN.fxs (tests compare what the client got)."""
    d = os.environ.get('LAB_FX_DUMP')
    if d:
        with _dump_lock:
            n = next(_dump_seq)
        with open(os.path.join(d, '%04d.fxs' % n), 'wb') as f:
            f.write(data)
    return data


class FxDownload(object):
    """A FastTransfer download context: a stream made on first GetBuffer."""
    kind = 'fxdown'

    def __init__(self, make):
        self.make = lambda: dump_stream(make())
        self.data = None
        self.pos = 0


class SyncDownload(FxDownload):
    kind = 'fxdown'

    def __init__(self, mailbox, folder, sync_type, flags, tags):
        FxDownload.__init__(self, self._stream)
        self.mailbox, self.folder = mailbox, folder
        self.sync_type, self.flags, self.tags = sync_type, flags, tags
        self.state = {}            # state property tag -> bytes uploaded so far
        self.upload_tag = None
        self.final_state = None

    def _stream(self):
        store = self.mailbox.store
        guid = str(uuidlib.UUID(bytes_le=store.repl_guid))
        if self.sync_type != 0x01:  # hierarchy: the lab sends no folder changes
            return W.contents_sync([], self._state(guid, [], []))
        seen = self._ranges(W.MetaTagCnsetSeen)
        given = self._ranges(W.MetaTagIdsetGiven)
        changes, cns, mids = [], [], []
        for m in sorted(self.folder.messages.values(), key=lambda m: m.mid):
            cn = cn_of(store, m)
            g = W.globcnt_of(m.mid)
            mids.append(g)
            cns.append(cn)
            if W.in_ranges(cn, seen):
                continue
            d = message_dict(m, store)
            header = change_header(store, m, cn)
            changes.append((d, header, len(W.message_content(d))))
        have = {W.globcnt_of(m.mid) for m in self.folder.messages.values()}
        gone = [g for lo, hi in given for g in range(lo, min(hi, lo + 100000) + 1)
                if g not in have]
        deleted = W.idset(W.ranges_of(gone), replid=1) if gone else None
        total = sum(c[2] for c in changes)
        self.final_state = self._state(guid, mids, sorted(set(cns) | set(
            v for lo, hi in seen for v in range(lo, min(hi, lo + 100000) + 1))))
        return W.contents_sync(changes, self.final_state, deleted=deleted,
                               progress=(len(changes), total))

    def _ranges(self, tag):
        b = self.state.get(tag)
        if not b:
            return []
        out = []
        for _, rs in W.parse_idset(b, guid_form=True):
            out += rs
        return out

    @staticmethod
    def _state(guid, mids, cns):
        return {W.MetaTagIdsetGiven: W.idset(W.ranges_of(mids), guid=guid),
                W.MetaTagCnsetSeen: W.idset(W.ranges_of(cns), guid=guid),
                W.MetaTagCnsetSeenFAI: W.idset([], guid=guid),
                W.MetaTagCnsetRead: W.idset(W.ranges_of(cns), guid=guid)}


class Collector(object):
    kind = 'collector'

    def __init__(self, mailbox, folder, contents):
        self.mailbox, self.folder, self.contents = mailbox, folder, contents


class FxUpload(object):
    kind = 'fxup'

    def __init__(self, mailbox, target, op):
        self.mailbox, self.target, self.op = mailbox, target, op
        self.data = bytearray()
        self.stored = 0
        self.sizes = []                 # each PutBuffer's TransferDataSize
        with _dump_lock:
            self.seq = next(_up_seq)


_up_seq = itertools.count(1)


def dump_upload(o):
    """With LAB_FX_UPLOAD_DUMP=DIR in the environment, the stream an upload
    context received so far is DIR/up-NNNN.fxs and its PutBuffer sizes
    DIR/up-NNNN.sizes (one a line): tests read what the lab got."""
    d = os.environ.get('LAB_FX_UPLOAD_DUMP')
    if d:
        base = os.path.join(d, 'up-%04d' % o.seq)
        with open(base + '.fxs', 'wb') as f:
            f.write(bytes(o.data))
        with open(base + '.sizes', 'w') as f:
            f.write(''.join('%d\n' % n for n in o.sizes))


def cn_of(store, m):
    cns = store.__dict__.setdefault('ics_cns', {})
    key = (m.mid, m.props.get(R.PidTagLastModificationTime, 0))
    if key not in cns:
        cns[key] = len(cns) + 1
    return cns[key]


def change_header(store, m, cn):
    g = struct.pack('<Q', m.mid)[2:8]
    xid = store.repl_guid + cn.to_bytes(6, 'big')
    return {W.PidTagSourceKey: store.repl_guid + g,
            W.PidTagLastModificationTime: m.props.get(R.PidTagLastModificationTime,
                                                      R.filetime_now()),
            W.PidTagChangeKey: xid,
            W.PidTagPredecessorChangeList: bytes([len(xid)]) + xid,
            W.PidTagAssociated: False,
            W.PidTagMid: m.mid}


def _props(p):
    return {t: v for t, v in p.items() if t not in COMPUTED and v is not None}


def message_dict(m, store=None):
    """A lab_rops.Message (or a message dict) as the writer's message dict.
    Named properties stored under a mapped id (store.named_names: id ->
    (guid, 'lid'|'name', key)) go out as named entries; mapped ids the store
    cannot name are left out."""
    if isinstance(m, dict):
        return m
    names = getattr(store, 'named_names', None) or {}
    d = {'props': {}, 'named': list(getattr(m, 'named', None) or []),
         'recipients': [], 'attachments': []}
    for t, v in _props(m.props).items():
        if t >> 16 < 0x8000:
            d['props'][t] = v
        elif t >> 16 in names:
            guid, kind, key = names[t >> 16]
            d['named'].append({'guid': str(uuidlib.UUID(bytes_le=bytes(guid))), kind: key,
                               'type': t & 0xFFFF, 'value': v})
    for r in getattr(m, 'recipients', None) or []:
        p = r.get('props', r) if isinstance(r, dict) else r.props
        d['recipients'].append({'props': dict(p)})
    atts = m.attachments.values() if isinstance(m.attachments, dict) else m.attachments
    for a in atts:
        emb = getattr(a, 'embedded', None)
        d['attachments'].append({'props': _props(a.props),
                                 'embedded': message_dict(emb, store) if emb is not None
                                 else None})
    return d


def set_children(m, d, store=None):
    """Named properties, recipients and attachments of message dict d on m.
    With a store that maps names to ids (store.named_ids, lab_content), named
    properties are stored under their mapped ids like the online-mode ROPs
    store them; otherwise they stay a list on m.named."""
    m.named = []
    for n in d.get('named', []):
        if getattr(store, 'named_ids', None) is not None:
            import lab_content
            key = ('lid', n['lid']) if n.get('lid') is not None else ('name', n['name'])
            pid = lab_content.named_id(store, uuidlib.UUID(n['guid']).bytes_le, key)
            m.props[(pid << 16) | n['type']] = n['value']
        else:
            m.named.append(n)
    m.recipients = [dict(r['props']) for r in d.get('recipients', [])]
    m.attachments = {}
    for i, a in enumerate(d.get('attachments', [])):
        att = R.Attachment(i)
        att.props.update(a.get('props', {}))
        if a.get('embedded') is not None:
            att.embedded = R.Message(0, 0, {R.canonical(t): v
                                            for t, v in a['embedded'].get('props', {}).items()})
            set_children(att.embedded, a['embedded'], store)
        else:
            att.embedded = None
        m.attachments[i] = att
    m.next_attach = len(m.attachments)


def store_message_dict(s, folder, d):
    """Store an uploaded message dict in folder as a lab_rops.Message."""
    m = R.Message(s.store.new_id(), folder.fid, {R.canonical(t): v
                                                 for t, v in d.get('props', {}).items()})
    m.props.setdefault(R.PidTagLastModificationTime, R.filetime_now())
    set_children(m, d, s.store)
    folder.messages[m.mid] = m
    s.store.__dict__.setdefault('fx_uploads', []).append(d)
    return m


# ---- ROP handlers ----

def rop_sync_configure(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx = r.u8(), r.u8()
    sync_type, _send_options, flags = r.u8(), r.u8(), r.u16()
    rsize = r.u16()
    r.take(rsize)                       # restriction: not applied by the lab
    _extra = r.u32()
    tags = [r.u32() for _ in range(r.u16())]
    o = s.obj(handles, in_idx, 'folder')
    if o is None or sync_type not in (0x01, 0x02):
        return R.fail(0x70, out_idx, R.ecNullObject if o is None else R.ecInvalidParam)
    s.set_out(handles, out_idx, SyncDownload(o.mailbox, o.folder, sync_type, flags, tags))
    s.log('emsmdb:   RopSynchronizationConfigure %s type=%d flags=0x%04x' % (
        o.folder.name, sync_type, flags))
    return struct.pack('<BBL', 0x70, out_idx, ecSuccess)


def rop_upload_state_begin(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    tag, _size = r.u32(), r.u32()
    o = s.obj(handles, in_idx, 'fxdown')
    if not isinstance(o, SyncDownload) or tag not in (W.MetaTagIdsetGiven, 0x40170102, W.MetaTagCnsetSeen,
                        W.MetaTagCnsetSeenFAI, W.MetaTagCnsetRead):
        return R.fail(0x75, in_idx, R.ecInvalidParam if o else R.ecNullObject)
    o.upload_tag = W.MetaTagIdsetGiven if tag == 0x40170102 else tag
    o.state[o.upload_tag] = b''
    return struct.pack('<BBL', 0x75, in_idx, ecSuccess)


def rop_upload_state_continue(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    data = r.take(r.u32())
    o = s.obj(handles, in_idx, 'fxdown')
    if not isinstance(o, SyncDownload) or o.upload_tag is None:
        return R.fail(0x76, in_idx, R.ecNullObject)
    o.state[o.upload_tag] += bytes(data)
    return struct.pack('<BBL', 0x76, in_idx, ecSuccess)


def rop_upload_state_end(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    o = s.obj(handles, in_idx, 'fxdown')
    if not isinstance(o, SyncDownload) or o.upload_tag is None:
        return R.fail(0x77, in_idx, R.ecNullObject)
    try:
        W.parse_idset(o.state[o.upload_tag], guid_form=True)
    except W.FxError as e:
        s.log('emsmdb:   state 0x%08x: %s' % (o.upload_tag, e))
        return R.fail(0x77, in_idx, R.ecInvalidParam)
    o.upload_tag = None
    return struct.pack('<BBL', 0x77, in_idx, ecSuccess)


def rop_get_buffer(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    size = r.u16()
    if size == 0xBABE:  # the server picks, up to MaximumBufferSize and what fits
        size = r.u16()
        room = getattr(s, 'room', None)
        if room is not None:
            size = max(0, min(size, room - 64))
    o = s.obj(handles, in_idx, 'fxdown')
    if o is None:
        return struct.pack('<BBLHHHBH', 0x4E, in_idx, R.ecNullObject, TS_ERROR, 0, 0, 0, 0)
    if o.data is None:
        o.data = o.make()
        s.log('emsmdb:   FastTransfer stream of %d bytes' % len(o.data))
    chunk = o.data[o.pos:o.pos + size]
    o.pos += len(chunk)
    status = TS_DONE if o.pos >= len(o.data) else TS_PARTIAL
    # InProgressCount / TotalStepCount (u16): progress in buffers, capped
    steps = min(0xFFFF, max(1, (len(o.data) + max(size, 1) - 1) // max(size, 1)))
    done = min(steps, (o.pos + max(size, 1) - 1) // max(size, 1))
    return struct.pack('<BBLHHHBH', 0x4E, in_idx, ecSuccess, status, done, steps, 0,
                       len(chunk)) + chunk


def rop_get_transfer_state(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx = r.u8(), r.u8()
    o = s.obj(handles, in_idx, 'fxdown', 'collector')
    if o is None:
        return R.fail(0x82, out_idx, R.ecNullObject)
    if isinstance(o, SyncDownload):
        if o.data is None:
            o.data = o.make()
        st = o.final_state or {}
    else:
        st = {}
    blob = struct.pack('<I', W.IncrSyncStateBegin) + b''.join(
        W.prop(t, v) for t, v in st.items()) + struct.pack('<I', W.IncrSyncStateEnd)
    s.set_out(handles, out_idx, FxDownload(lambda: blob))
    return struct.pack('<BBL', 0x82, out_idx, ecSuccess)


def rop_copy_to(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx = r.u8(), r.u8()
    _level, _flags, _send = r.u8(), r.u32(), r.u8()
    excluded = {r.u32() for _ in range(r.u16())}
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return R.fail(0x4D, out_idx, R.ecNullObject)
    d = message_dict(o.msg, s.store)
    d = dict(d, props={t: v for t, v in d['props'].items() if t not in excluded})
    if 0x0E12000D in excluded:          # PidTagMessageRecipients
        d['recipients'] = []
    if 0x0E13000D in excluded:          # PidTagMessageAttachments
        d['attachments'] = []
    s.set_out(handles, out_idx, FxDownload(lambda: W.message_content(d)))
    return struct.pack('<BBL', 0x4D, out_idx, ecSuccess)


def rop_copy_messages(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx = r.u8(), r.u8()
    mids = [r.u64() for _ in range(r.u16())]
    _flags, _send = r.u8(), r.u8()
    o = s.obj(handles, in_idx, 'folder')
    if o is None:
        return R.fail(0x4B, out_idx, R.ecNullObject)
    msgs = [o.folder.messages[m] for m in mids if m in o.folder.messages]
    if len(msgs) != len(mids):
        return R.fail(0x4B, out_idx, R.ecNotFound)
    s.set_out(handles, out_idx, FxDownload(
        lambda: b''.join(W.top_message(message_dict(m, s.store)) for m in msgs)))
    return struct.pack('<BBL', 0x4B, out_idx, ecSuccess)


def rop_tell_version(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    r.take(6)
    return struct.pack('<BBL', 0x86, in_idx, ecSuccess)


def rop_open_collector(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx, contents = r.u8(), r.u8(), r.u8()
    o = s.obj(handles, in_idx, 'folder')
    if o is None:
        return R.fail(0x7E, out_idx, R.ecNullObject)
    s.set_out(handles, out_idx, Collector(o.mailbox, o.folder, bool(contents)))
    return struct.pack('<BBL', 0x7E, out_idx, ecSuccess)


def rop_import_message_change(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx, _flag = r.u8(), r.u8(), r.u8()
    vals = []
    for _ in range(r.u16()):
        tag = r.u32()
        vals.append((tag, R.read_value(r, R.ptype(tag))))
    o = s.obj(handles, in_idx, 'collector')
    if o is None:
        return R.fail(0x72, out_idx, R.ecNullObject)
    m = R.Message(0, o.folder.fid, {})
    for tag, v in vals:
        if tag == W.PidTagLastModificationTime:
            m.props[tag] = v
    m.ics_header = dict(vals)
    s.set_out(handles, out_idx, R.MessageObj(o.mailbox, m, o.folder, True))
    s.log('emsmdb:   RopSynchronizationImportMessageChange in %s' % o.folder.name)
    return struct.pack('<BBLQ', 0x72, out_idx, ecSuccess, 0)


def rop_dest_configure(s, r, handles):
    r.u8()
    r.u8()
    in_idx, out_idx, op, _flags = r.u8(), r.u8(), r.u8(), r.u8()
    o = s.obj(handles, in_idx, 'folder', 'message')
    ok = (op == SRC_COPYMESSAGES and o is not None and o.kind == 'folder') or \
        (op in (SRC_COPYTO, SRC_COPYPROPERTIES) and o is not None and o.kind == 'message')
    if not ok:
        return R.fail(0x53, out_idx, R.ecNullObject if o is None else R.ecNotSupported)
    s.set_out(handles, out_idx, FxUpload(o.mailbox, o, op))
    return struct.pack('<BBL', 0x53, out_idx, ecSuccess)


def rop_put_buffer(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    data = r.take(r.u16())
    o = s.obj(handles, in_idx, 'fxup')
    if o is None:
        return struct.pack('<BBLHHHBH', 0x54, in_idx, R.ecNullObject, TS_ERROR, 0, 0, 0, 0)
    if _put_fails(o, data):
        s.log('emsmdb:   RopFastTransferDestinationPutBuffer refused (LAB_FX_PUT_FAIL)')
        return struct.pack('<BBLHHHBH', 0x54, in_idx, R.ecNotSupported, TS_ERROR, 0, 0, 0, 0)
    o.data += data
    o.sizes.append(len(data))
    dump_upload(o)
    _apply_upload(s, o)
    return struct.pack('<BBLHHHBH', 0x54, in_idx, ecSuccess, TS_PARTIAL, 0, 0, 0, len(data))


def rop_put_buffer_ext(s, r, handles):
    """RopFastTransferDestinationPutBufferExtended (MS-OXCROPS 2.2.12.3):
    the request as PutBuffer's; the response's counts are 32-bit."""
    r.u8()
    r.u8()
    in_idx = r.u8()
    data = r.take(r.u16())
    o = s.obj(handles, in_idx, 'fxup')
    if o is None or _put_fails(o, data):
        return struct.pack('<BBLHLLBH', 0x9D, in_idx, R.ecNullObject if o is None
                           else R.ecNotSupported, TS_ERROR, 0, 0, 0, 0)
    o.data += data
    o.sizes.append(len(data))
    dump_upload(o)
    _apply_upload(s, o)
    return struct.pack('<BBLHLLBH', 0x9D, in_idx, ecSuccess, TS_PARTIAL, 0, 0, 0, len(data))


def _put_fails(o, data):
    """LAB_FX_PUT_FAIL=TEXT,N: a PutBuffer that would take an upload whose
    stream carries TEXT (UTF-16LE) past N bytes is refused (tests of how a
    server's failure reaches the client)."""
    spec = os.environ.get('LAB_FX_PUT_FAIL')
    if not spec:
        return False
    text, n = spec.rsplit(',', 1)
    return text.encode('utf-16le') in bytes(o.data) + data and len(o.data) + len(data) > int(n)


def _apply_upload(s, o):
    """Store what the upload stream holds so far when it parses whole."""
    try:
        atoms = W.parse(bytes(o.data))
    except W.FxError:
        return                          # a value is still split: wait for more
    depth = 0
    for a in atoms:
        if a[0] == 'marker':
            if a[1] in (W.StartMessage, W.StartFAIMsg, W.StartRecip, W.NewAttach, W.StartEmbed):
                depth += 1
            elif a[1] in (W.EndMessage, W.EndToRecip, W.EndAttach, W.EndEmbed):
                depth -= 1
    if depth:
        return
    msgs = W.messages_of(atoms)
    if o.op == SRC_COPYMESSAGES:
        for d in msgs[o.stored:]:
            m = store_message_dict(s, o.target.folder, d)
            s.log('emsmdb:   FastTransfer upload -> mid=0x%016x in %s' % (m.mid, o.target.folder.name))
        o.stored = len(msgs)
    elif msgs:
        tgt = o.target.msg
        d = msgs[0]
        tgt.props.update({R.canonical(t): v for t, v in d['props'].items()})
        set_children(tgt, d, s.store)


R.ROP_HANDLERS.update({
    0x4B: rop_copy_messages,
    0x4D: rop_copy_to,
    0x4E: rop_get_buffer,
    0x53: rop_dest_configure,
    0x54: rop_put_buffer,
    0x9D: rop_put_buffer_ext,
    0x70: rop_sync_configure,
    0x72: rop_import_message_change,
    0x75: rop_upload_state_begin,
    0x76: rop_upload_state_continue,
    0x77: rop_upload_state_end,
    0x7E: rop_open_collector,
    0x82: rop_get_transfer_state,
    0x86: rop_tell_version,
})
