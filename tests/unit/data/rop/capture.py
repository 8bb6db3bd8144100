#!/usr/bin/python3
"""Record ROP buffers from the Exchange lab (tests/lab) for the ROP codec tests.

    /usr/bin/python3 tests/unit/data/rop/capture.py [OUTDIR]

Starts the lab, runs an Outlook-like EMSMDB session with the lab's own Python
client (tests/lab/emsmdb_client.py: logon, folders, hierarchy and contents
tables, message creation with streams and an attachment, submit, reading it
back, GetReceiveFolder, Release ...) and writes, for every EcDoRpcExt2 call,
NN_name.req.bin (the ROP request buffer) and NN_name.rsp.bin (the ROP response
buffer, decompressed), plus manifest.json with what the Python client sent
and parsed.  The lab is an independent Python implementation: the C codec is
checked against it, it shares no code with it.

tests/integration/test_rop_wire.py imports run_session() to drive a live lab.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, '..', '..', '..', '..'))
LAB = os.path.join(ROOT, 'tests', 'lab')
sys.path.insert(0, LAB)

import emsmdb_client as EC      # noqa: E402
import emsmdb_ndr as N          # noqa: E402

ORG = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)'
ALICE = ORG + '/cn=Recipients/cn=alice'
PidTagFolderId, PidTagMid, PidTagDisplayName = 0x67480014, 0x674A0014, 0x3001001F
PidTagContentCount, PidTagSubject, PidTagBody = 0x36020003, 0x0037001F, 0x1000001F
PidTagAttachDataBinary, PidTagAttachLongFilename = 0x37010102, 0x3707001F
PidTagHasAttachments, PidTagAttachNumber = 0x0E1B000B, 0x0E210003


def start_lab():
    proc = subprocess.Popen([sys.executable, os.path.join(LAB, 'exchange_lab.py'),
                             '--host', '127.0.0.1', '--epm-port', '0'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith('READY '):
        proc.kill()
        raise RuntimeError('lab did not start: %r' % line)
    ports = dict((k, int(v)) for k, v in (kv.split('=') for kv in line.split()[1:]))
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, ports


def stop_lab(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


class Recorder(object):
    """Wraps dce.request to keep rgbIn/rgbOut of every EcDoRpcExt2."""

    def __init__(self, dce):
        self.calls = []
        orig = dce.request

        def request(req, *a, **k):
            resp = orig(req, *a, **k)
            if req.__class__.__name__ == 'EcDoRpcExt2':
                self.calls.append((bytes(req['rgbIn']), N.array_bytes(resp['rgbOut'])))
            return resp
        dce.request = request


def decode_rgb(rgb):
    """The content of an RPC_HEADER_EXT chain (XOR undone, decompressed)."""
    import lzxpress
    off, out = 0, b''
    while off < len(rgb):
        ver, fl, size, actual = struct.unpack_from('<HHHH', rgb, off)
        off += 8
        p = rgb[off:off + size]
        off += size
        if fl & N.RHE_XORMAGIC:
            p = N.xor_a5(p)
        if fl & N.RHE_COMPRESSED:
            p = lzxpress.decompress(p, actual)
        out += p
        if fl & N.RHE_LAST:
            break
    return out


def _jsonable(v):
    if isinstance(v, bytes):
        return {'len': len(v)}
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def run_session(ports, compress=True, xor=True):
    """One session; returns a list of steps: name, sent RopIds, parsed
    results (the Python client's view), the ROP request and response buffers
    and the raw rgbIn/rgbOut."""
    dce = EC.connect('127.0.0.1', ports['emsmdb'])
    rec = Recorder(dce)
    c = EC.EmsmdbClient(dce, compress=compress, xor=xor)
    r = c.connect_ex(ALICE)
    assert r['ErrorCode'] == 0
    steps = []

    def run(name, b):
        sent = [d[0] for d, _ in b.rops]
        res = c.execute(b)
        rgb_in, rgb_out = rec.calls[-1]
        req, out = decode_rgb(rgb_in), decode_rgb(rgb_out)
        steps.append({'name': name, 'sent': sent, 'results': res, 'req': req, 'rsp': out,
                      'rgbIn': rgb_in, 'rgbOut': rgb_out})
        return res

    [logon] = run('logon', EC.RopBuffer().logon(0, ALICE))
    fids = logon['FolderIds']
    inbox, outbox = fids[4], fids[5]
    cols = [PidTagFolderId, PidTagDisplayName, PidTagContentCount]
    run('hierarchy', EC.RopBuffer().open_folder(0, 1, fids[3]).get_hierarchy_table(1, 2)
        .set_columns(2, cols).query_rows(2, 50, cols))
    subject = 'ROP capture %d' % int(time.time())
    body = 'Hello from the ROP capture, EXLAB01.lab.example \u00e9\u00e8 ' * 20
    attach = bytes(range(256)) * 40
    b = EC.RopBuffer().create_message(0, 3, outbox) \
        .set_properties(3, [(PidTagSubject, subject), (0x001A001F, 'IPM.Note')]) \
        .open_stream(3, 4, PidTagBody, 2) \
        .write_stream(4, body.encode('utf-16le')).commit_stream(4).release(4) \
        .create_attachment(3, 5) \
        .set_properties(5, [(PidTagAttachLongFilename, 'data.bin'), (0x37050003, 1)]) \
        .open_stream(5, 6, PidTagAttachDataBinary, 2)
    for off in range(0, len(attach), 4000):
        b.write_stream(6, attach[off:off + 4000])
    b.commit_stream(6).save_changes_attachment(5, 5).save_changes_message(3, 3).submit_message(3)
    run('create_message', b)
    mcols = [PidTagMid, PidTagSubject, PidTagHasAttachments]
    res = run('contents', EC.RopBuffer().open_folder(0, 7, inbox).get_contents_table(7, 8)
              .set_columns(8, mcols).query_rows(8, 100, mcols))
    mid = [row[PidTagMid] for row in res[3]['Rows'] if row[PidTagSubject] == subject][0]
    run('open_message', EC.RopBuffer().open_message(0, 9, inbox, mid)
        .open_stream(9, 10, PidTagBody, 0).read_stream(10, 0xBABE + 0x10000)
        .get_attachment_table(9, 11)
        .set_columns(11, [PidTagAttachNumber, PidTagAttachLongFilename])
        .query_rows(11, 10, [PidTagAttachNumber, PidTagAttachLongFilename])
        .open_attachment(9, 12, 0).open_stream(12, 13, PidTagAttachDataBinary, 0))
    run('read_stream', EC.RopBuffer().read_stream(13, 4000))
    run('get_props', EC.RopBuffer().get_properties_specific(
        9, [PidTagSubject, 0x0037001E, 0x7777001F, PidTagHasAttachments]))
    run('receive_folder', EC.RopBuffer().get_receive_folder(0, 'IPM.Note'))
    run('release', EC.RopBuffer().release(13).release(12).release(11).release(10)
        .get_receive_folder(0, ''))
    run('unknown_rop', EC.RopBuffer().raw(b'\x99\x00\x00', parser=EC.RopBuffer._hdr))
    c.disconnect()
    dce.disconnect()
    return steps


def main(argv):
    out = argv[0] if argv else HERE
    proc, ports = start_lab()
    try:
        steps = run_session(ports)
    finally:
        stop_lab(proc)
    manifest = []
    for i, s in enumerate(steps):
        base = '%02d_%s' % (i, s['name'])
        with open(os.path.join(out, base + '.req.bin'), 'wb') as f:
            f.write(s['req'])
        with open(os.path.join(out, base + '.rsp.bin'), 'wb') as f:
            f.write(s['rsp'])
        manifest.append({'base': base, 'sent': s['sent'], 'results': _jsonable(s['results'])})
    with open(os.path.join(out, 'manifest.json'), 'w') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print('wrote %d request/response pairs to %s' % (len(steps), out))


if __name__ == '__main__':
    main(sys.argv[1:])
