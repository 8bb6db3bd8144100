"""Cached-mode (ICS) client side for the lab's EMSMDB client: ROP request
builders for MS-OXCROPS 2.2.12 (FastTransfer) and 2.2.13 (ICS), a folder
contents sync that keeps its state, and ICS / FastTransfer uploads.

    from ics_client import sync_folder, ics_upload, fx_upload
    res = sync_folder(client, logon_idx=0, fid=inbox_fid, buffer_size=4096)
    res['stream']   the FastTransfer bytes as received (concatenated)
    res['chunks']   each RopFastTransferSourceGetBuffer TransferBuffer
    res['messages'] message dicts (lab_fxwriter.messages_of)
    res['state']    {state tag: IDSET bytes} to pass to the next sync
"""

import struct

import lab_fxwriter as W
from emsmdb_client import RopBuffer
from lab_rops import write_value, ptype


def _hdr(r):
    return {'rop': r.u8(), 'index': r.u8(), 'ReturnValue': r.u32()}


def sync_configure(rb, in_idx, out_idx, sync_type=0x01, send_options=0x01, flags=0x0001,
                   extra=0x0000000E, tags=(), logon_id=0):
    """RopSynchronizationConfigure (0x70): SendOptions Unicode, flags Unicode,
    extra flags Eid|MessageSize|Cn (MS-OXCFXICS 2.2.3.2.1.1)."""
    data = struct.pack('<BBBBBBHHLH', 0x70, logon_id, in_idx, out_idx, sync_type,
                       send_options, flags, 0, extra, len(tags))
    data += b''.join(struct.pack('<L', t) for t in tags)
    return rb.raw(data, _hdr)


def upload_state_begin(rb, in_idx, tag, size, logon_id=0):
    return rb.raw(struct.pack('<BBBLL', 0x75, logon_id, in_idx, tag, size), _hdr)


def upload_state_continue(rb, in_idx, data, logon_id=0):
    return rb.raw(struct.pack('<BBBL', 0x76, logon_id, in_idx, len(data)) + data, _hdr)


def upload_state_end(rb, in_idx, logon_id=0):
    return rb.raw(struct.pack('<BBB', 0x77, logon_id, in_idx), _hdr)


def upload_state(rb, in_idx, tag, blob, logon_id=0):
    """RopSynchronizationUploadStateStreamBegin/Continue/End (0x75-0x77)."""
    upload_state_begin(rb, in_idx, tag, len(blob), logon_id)
    upload_state_continue(rb, in_idx, blob, logon_id)
    return upload_state_end(rb, in_idx, logon_id)


def get_buffer(rb, in_idx, size, logon_id=0):
    """RopFastTransferSourceGetBuffer (0x4E); sizes above 0x7FFF go as 0xBABE +
    MaximumBufferSize (MS-OXCROPS 2.2.12.5.1)."""
    if size > 0x7FFF:
        data = struct.pack('<BBBHH', 0x4E, logon_id, in_idx, 0xBABE, size)
    else:
        data = struct.pack('<BBBH', 0x4E, logon_id, in_idx, size)

    def parse(r):
        d = _hdr(r)
        if d['ReturnValue'] == 0x00000480:
            d['BackoffTime'] = r.u32()
            return d
        d['TransferStatus'], d['InProgressCount'], d['TotalStepCount'] = r.u16(), r.u16(), r.u16()
        r.u8()
        d['TransferBuffer'] = bytes(r.take(r.u16()))
        return d
    return rb.raw(data, parse)


def get_transfer_state(rb, in_idx, out_idx, logon_id=0):
    return rb.raw(struct.pack('<BBBB', 0x82, logon_id, in_idx, out_idx), _hdr)


def copy_to(rb, in_idx, out_idx, excluded=(), level=0, flags=0, send_options=0x01, logon_id=0):
    data = struct.pack('<BBBBBLBH', 0x4D, logon_id, in_idx, out_idx, level, flags,
                       send_options, len(excluded))
    return rb.raw(data + b''.join(struct.pack('<L', t) for t in excluded), _hdr)


def copy_messages(rb, in_idx, out_idx, mids, flags=0, send_options=0x01, logon_id=0):
    data = struct.pack('<BBBBH', 0x4B, logon_id, in_idx, out_idx, len(mids))
    data += b''.join(struct.pack('<Q', m) for m in mids) + struct.pack('<BB', flags, send_options)
    return rb.raw(data, _hdr)


def tell_version(rb, in_idx, version=(15, 0, 0x0847), logon_id=0):
    """RopTellVersion (0x86): the other server's version (3 x u16)."""
    return rb.raw(struct.pack('<BBBHHH', 0x86, logon_id, in_idx, *version), _hdr)


def open_collector(rb, in_idx, out_idx, contents=True, logon_id=0):
    return rb.raw(struct.pack('<BBBBB', 0x7E, logon_id, in_idx, out_idx, 1 if contents else 0),
                  _hdr)


def import_message_change(rb, in_idx, out_idx, header, flag=0, logon_id=0):
    vals = b''.join(struct.pack('<L', t) + write_value(ptype(t), v) for t, v in header.items())

    def parse(r):
        d = _hdr(r)
        if d['ReturnValue'] == 0:
            d['MessageId'] = r.u64()
        return d
    return rb.raw(struct.pack('<BBBBBH', 0x72, logon_id, in_idx, out_idx, flag, len(header)) +
                  vals, parse)


def dest_configure(rb, in_idx, out_idx, source_op, flags=0, logon_id=0):
    return rb.raw(struct.pack('<BBBBBB', 0x53, logon_id, in_idx, out_idx, source_op, flags), _hdr)


def put_buffer(rb, in_idx, data, logon_id=0, rop_id=0x54):
    """RopFastTransferDestinationPutBuffer (0x54), or with rop_id 0x9D
    RopFastTransferDestinationPutBufferExtended: the same request, the
    response's counts 32-bit."""
    count = (lambda r: r.u32()) if rop_id == 0x9D else (lambda r: r.u16())

    def parse(r):
        d = _hdr(r)
        d['TransferStatus'], d['InProgressCount'], d['TotalStepCount'] = r.u16(), count(r), count(r)
        r.u8()
        d['BufferUsedSize'] = r.u16()
        return d
    return rb.raw(struct.pack('<BBBH', rop_id, logon_id, in_idx, len(data)) + data, parse)


def put_buffer_ext(rb, in_idx, data, logon_id=0):
    return put_buffer(rb, in_idx, data, logon_id, 0x9D)


def release(rb, idx, logon_id=0):
    return rb.release(idx, logon_id)


def _check(results):
    for d in results:
        if d.get('ReturnValue'):
            raise RuntimeError('ROP 0x%02x failed: 0x%08x' % (d['rop'], d['ReturnValue']))
    return results


def _drain(client, idx, buffer_size, limit=100000):
    chunks = []
    for _ in range(limit):
        d = _check(client.execute(get_buffer(RopBuffer(), idx, buffer_size)))[0]
        chunks.append(d['TransferBuffer'])
        if d['TransferStatus'] == 0x0003:
            return chunks
        if d['TransferStatus'] != 0x0001:
            raise RuntimeError('TransferStatus 0x%04x' % d['TransferStatus'])
    raise RuntimeError('FastTransfer stream never ended')


def sync_folder(client, logon_idx, fid, state=None, buffer_size=0x7FF0, folder_idx=1, sync_idx=2):
    """Contents sync of folder fid (a cached-mode Outlook's download)."""
    rb = RopBuffer().open_folder(logon_idx, folder_idx, fid)
    sync_configure(rb, folder_idx, sync_idx)
    state = state or {}
    for tag in (W.MetaTagIdsetGiven, W.MetaTagCnsetSeen, W.MetaTagCnsetSeenFAI,
                W.MetaTagCnsetRead):
        upload_state(rb, sync_idx, tag, state.get(tag, b''))
    _check(client.execute(rb))
    chunks = _drain(client, sync_idx, buffer_size)
    stream = b''.join(chunks)
    atoms = W.parse(stream)
    new_state, in_state = {}, False
    for a in atoms:
        if a[0] == 'marker':
            in_state = a[1] == W.IncrSyncStateBegin or (in_state and a[1] != W.IncrSyncStateEnd)
        elif in_state:
            new_state[a[1]] = a[3]
    client.execute(RopBuffer().release(sync_idx).release(folder_idx))
    return {'stream': stream, 'chunks': chunks, 'atoms': atoms,
            'messages': W.messages_of(atoms), 'state': new_state}


def fx_download_message(client, logon_idx, fid, mid, buffer_size=0x7FF0):
    """RopFastTransferSourceCopyTo of one message: its messageContent bytes."""
    rb = RopBuffer().open_message(logon_idx, 1, fid, mid)
    copy_to(rb, 1, 2)
    _check(client.execute(rb))
    chunks = _drain(client, 2, buffer_size)
    client.execute(RopBuffer().release(2).release(1))
    return b''.join(chunks), chunks


def fx_upload(client, logon_idx, fid, msgs, chunk=4096):
    """RopFastTransferDestinationConfigure (CopyMessages) + PutBuffer of
    msgs (message dicts) into folder fid; returns the stream sent."""
    stream = b''.join(W.top_message(m) for m in msgs)
    rb = RopBuffer().open_folder(logon_idx, 1, fid)
    dest_configure(rb, 1, 2, 0x03)
    _check(client.execute(rb))
    for i in range(0, len(stream), chunk):
        _check(client.execute(put_buffer(RopBuffer(), 2, stream[i:i + chunk])))
    client.execute(RopBuffer().release(2).release(1))
    return stream


def ics_upload(client, logon_idx, fid, msg, source_key, change_key, lastmod):
    """RopSynchronizationOpenCollector + ImportMessageChange, then
    SetProperties and SaveChangesMessage on the new message."""
    header = {W.PidTagSourceKey: source_key, W.PidTagLastModificationTime: lastmod,
              W.PidTagChangeKey: change_key,
              W.PidTagPredecessorChangeList: bytes([len(change_key)]) + change_key}
    rb = RopBuffer().open_folder(logon_idx, 1, fid)
    open_collector(rb, 1, 2)
    import_message_change(rb, 2, 3, header)
    rb.set_properties(3, list(msg['props'].items()))
    rb.save_changes_message(3, 3)
    res = _check(client.execute(rb))
    client.execute(RopBuffer().release(3).release(2).release(1))
    return res
