"""In-memory mailbox store and ROP processor (MS-OXCROPS) for the Exchange lab.

A ROP buffer is RopSize (u16, counting itself and the ROPs), the ROP requests,
then the server object handle table (u32 each).  The response has the same
shape.  Property values use the MS-OXCDATA 2.11 encodings.
"""

import datetime
import hashlib
import itertools
import os
import struct
import threading
import time
import uuid as uuidlib

import lab_content
import lab_store

# Return values
ecSuccess = 0x00000000
ecNotSupported = 0x80040102
ecNotFound = 0x8004010F
ecInvalidParam = 0x80070057
ecNullObject = 0x000004B9
ecError = 0x80004005
ecNotEnoughMemory = 0x8007000E
ecTooBig = 0x80040305
ecStreamSizeError = 0x80030070
ecAccessDenied = 0x80070005
ecUnknownUser = 0x000003EB

# Property types
PT_I2, PT_LONG, PT_R4, PT_DOUBLE, PT_CURRENCY, PT_APPTIME = 0x2, 0x3, 0x4, 0x5, 0x6, 0x7
PT_ERROR, PT_BOOLEAN, PT_OBJECT, PT_I8 = 0xA, 0xB, 0xD, 0x14
PT_STRING8, PT_UNICODE, PT_SYSTIME, PT_CLSID = 0x1E, 0x1F, 0x40, 0x48
PT_SVREID, PT_SRESTRICT, PT_ACTIONS, PT_BINARY = 0xFB, 0xFD, 0xFE, 0x102
PT_UNSPECIFIED, PT_NULL = 0x0, 0x1
MV = 0x1000
PAYLOAD_MAX = 0x8000  # one extended buffer's payload (MS-OXCRPC 3.1.4.2.1)

# Property tags used by the store
PidTagFolderId = 0x67480014
PidTagParentFolderId = 0x67490014
PidTagMid = 0x674A0014
PidTagInstID = 0x674D0014
PidTagInstanceNum = 0x674E0003
PidTagDisplayName = 0x3001001F
PidTagContentCount = 0x36020003
PidTagContentUnreadCount = 0x36030003
PidTagSubfolders = 0x360A000B
PidTagFolderType = 0x36010003
PidTagContainerClass = 0x3613001F
PidTagSubject = 0x0037001F
PidTagMessageClass = 0x001A001F
PidTagMessageFlags = 0x0E070003
PidTagMessageSize = 0x0E080003
PidTagHasAttachments = 0x0E1B000B
PidTagBody = 0x1000001F
PidTagAttachNumber = 0x0E210003
PidTagAttachSize = 0x0E200003
PidTagAttachDataBinary = 0x37010102
PidTagAttachLongFilename = 0x3707001F
PidTagAttachFilename = 0x3704001F
PidTagAttachMethod = 0x37050003
PidTagLastModificationTime = 0x30080040
PidTagCreationTime = 0x30070040
PidTagMessageDeliveryTime = 0x0E060040
PidTagSentRepresentingName = 0x0042001F
PidTagSenderName = 0x0C1A001F
PidTagDisplayTo = 0x0E04001F
PidTagRecordKey = 0x0FF90102
PidTagEntryId = 0x0FFF0102

SPECIAL_FOLDERS = ['Root', 'Deferred Action', 'Spooler Queue', 'Top of Information Store',
                   'Inbox', 'Outbox', 'Sent Items', 'Deleted Items', 'Common Views',
                   'Schedule', 'Finder', 'Views', 'Shortcuts']


def ptype(tag):
    return tag & 0xFFFF


def canonical(tag):
    """Store string8 values under their Unicode tag."""
    t = tag & 0xFFFF
    if t == PT_STRING8:
        return (tag & 0xFFFF0000) | PT_UNICODE
    if t == PT_STRING8 | MV:
        return (tag & 0xFFFF0000) | PT_UNICODE | MV
    return tag


def filetime_now():
    return int((time.time() + 11644473600) * 10000000)


# ---------------------------------------------------------------------------
# Buffer helpers
# ---------------------------------------------------------------------------
class RopParseError(Exception):
    pass


class Reader(object):
    def __init__(self, data, off=0, end=None):
        self.data = data
        self.off = off
        self.end = len(data) if end is None else end

    def take(self, n):
        if self.off + n > self.end:
            raise RopParseError('ROP buffer too short')
        b = self.data[self.off:self.off + n]
        self.off += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack('<H', self.take(2))[0]

    def u32(self):
        return struct.unpack('<L', self.take(4))[0]

    def u64(self):
        return struct.unpack('<Q', self.take(8))[0]

    def asciiz(self):
        idx = self.data.find(b'\x00', self.off, self.end)
        if idx < 0:
            raise RopParseError('unterminated string')
        s = self.data[self.off:idx]
        self.off = idx + 1
        return s.decode('latin-1')

    def utf16z(self):
        i = self.off
        while True:
            if i + 2 > self.end:
                raise RopParseError('unterminated unicode string')
            if self.data[i:i + 2] == b'\x00\x00':
                break
            i += 2
        s = self.data[self.off:i].decode('utf-16le', 'replace')
        self.off = i + 2
        return s


def read_value(r, t):
    """Decode one property value of type t (MS-OXCDATA 2.11.1)."""
    if t & MV:
        n = r.u32()
        return [read_value(r, t & ~MV) for _ in range(n)]
    if t == PT_I2:
        return struct.unpack('<h', r.take(2))[0]
    if t in (PT_LONG, PT_ERROR):
        return struct.unpack('<l' if t == PT_LONG else '<L', r.take(4))[0]
    if t == PT_R4:
        return struct.unpack('<f', r.take(4))[0]
    if t in (PT_DOUBLE, PT_APPTIME):
        return struct.unpack('<d', r.take(8))[0]
    if t in (PT_CURRENCY, PT_I8, PT_SYSTIME):
        return struct.unpack('<q' if t != PT_SYSTIME else '<Q', r.take(8))[0]
    if t == PT_BOOLEAN:
        return r.u8() != 0
    if t == PT_STRING8:
        return r.asciiz()
    if t == PT_UNICODE:
        return r.utf16z()
    if t == PT_CLSID:
        return r.take(16)
    if t in (PT_BINARY, PT_SVREID):
        n = r.u16()
        return r.take(n)
    if t in (PT_NULL, PT_UNSPECIFIED):
        return None
    raise RopParseError('unsupported property type 0x%04x' % t)


def write_value(t, v):
    if t & MV:
        return struct.pack('<L', len(v)) + b''.join(write_value(t & ~MV, x) for x in v)
    if t == PT_I2:
        return struct.pack('<h', v)
    if t == PT_LONG:
        return struct.pack('<l', v) if v < 0x80000000 else struct.pack('<L', v)
    if t == PT_ERROR:
        return struct.pack('<L', v)
    if t == PT_R4:
        return struct.pack('<f', v)
    if t in (PT_DOUBLE, PT_APPTIME):
        return struct.pack('<d', v)
    if t in (PT_CURRENCY, PT_I8):
        return struct.pack('<q', v) if v < 0x8000000000000000 else struct.pack('<Q', v)
    if t == PT_SYSTIME:
        return struct.pack('<Q', v)
    if t == PT_BOOLEAN:
        return b'\x01' if v else b'\x00'
    if t == PT_STRING8:
        if isinstance(v, bytes):
            return v + b'\x00'
        return v.encode('cp1252', 'replace') + b'\x00'
    if t == PT_UNICODE:
        if isinstance(v, bytes):
            v = v.decode('utf-16le', 'replace')
        return v.encode('utf-16le') + b'\x00\x00'
    if t == PT_CLSID:
        return bytes(v)
    if t in (PT_BINARY, PT_SVREID):
        return struct.pack('<H', len(v)) + bytes(v)
    raise ValueError('cannot encode type 0x%04x' % t)


def convert_for(tag, value):
    """Adapt a stored value to the requested tag's type (string8 <-> unicode)."""
    t = ptype(tag)
    if t in (PT_STRING8, PT_UNICODE) and isinstance(value, bytes):
        return value.decode('utf-16le', 'replace')
    return value


# ---------------------------------------------------------------------------
# Store model
# ---------------------------------------------------------------------------
class Attachment(object):
    def __init__(self, num):
        self.num = num
        self.props = {PidTagAttachMethod: 1}
        self.embedded = None      # Message (attach method 5)

    def clone(self):
        b = Attachment(self.num)
        b.props = dict(self.props)
        b.embedded = self.embedded.clone(0, 0) if self.embedded else None
        return b


class Message(object):
    def __init__(self, mid, fid, props=None):
        self.mid = mid
        self.fid = fid
        self.props = dict(props or {})
        self.attachments = {}
        self.next_attach = 0
        self.recipients = []      # property dicts (PidTagRowid = position)

    def clone(self, mid, fid):
        m = Message(mid, fid, self.props)
        for n, a in self.attachments.items():
            m.attachments[n] = a.clone()
        m.next_attach = self.next_attach
        m.recipients = [dict(x) for x in self.recipients]
        return m


class Folder(object):
    def __init__(self, fid, parent, name, container_class=None):
        self.fid = fid
        self.parent = parent
        self.props = {PidTagDisplayName: name, PidTagFolderType: 1}
        if container_class:
            self.props[PidTagContainerClass] = container_class
        self.children = []
        self.messages = {}

    @property
    def name(self):
        return self.props[PidTagDisplayName]


class Mailbox(object):
    def __init__(self, store, owner_dn, display_name):
        self.store = store
        self.owner_dn = owner_dn
        self.display_name = display_name
        self.guid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'mbx:' + owner_dn.lower()).bytes_le
        self.folders = {}
        self.special = []
        self.lock = threading.RLock()
        root = self._mkfolder(None, '')
        self.special.append(root.fid)
        ipm = None
        for name in SPECIAL_FOLDERS[1:]:
            if name in ('Inbox', 'Outbox', 'Sent Items', 'Deleted Items'):
                f = self._mkfolder(ipm, name, 'IPF.Note')
            elif name == 'Top of Information Store':
                f = self._mkfolder(root, name)
                ipm = f
            else:
                f = self._mkfolder(root, name)
            self.special.append(f.fid)
        for name, cls in (('Calendar', 'IPF.Appointment'), ('Contacts', 'IPF.Contact'),
                          ('Drafts', 'IPF.Note')):
            self._mkfolder(ipm, name, cls)
        self.inbox = self.folders[self.special[4]]
        self.outbox = self.folders[self.special[5]]
        self.sent = self.folders[self.special[6]]
        # A welcome message so that a fresh Inbox has content.
        m = Message(store.new_id(), self.inbox.fid, {
            PidTagSubject: 'Welcome to the lab', PidTagMessageClass: 'IPM.Note',
            PidTagBody: 'Hello %s, this mailbox lives on the Exchange lab.' % display_name,
            PidTagMessageFlags: 0x1, PidTagSenderName: 'Administrator',
            PidTagMessageDeliveryTime: filetime_now()})
        self.inbox.messages[m.mid] = m
        # The lab's mailbox content (tests/lab/lab_store.py): HTML, RTF,
        # attachments (one of 10 MB), an embedded message, named properties.
        for d in lab_store.messages():
            m = lab_content.from_dict(store, d, store.new_id(), self.inbox.fid)
            self.inbox.messages[m.mid] = m

    def _mkfolder(self, parent, name, cls=None):
        f = Folder(self.store.new_id(), parent.fid if parent else 0, name, cls)
        self.folders[f.fid] = f
        if parent:
            parent.children.append(f.fid)
        return f

    def find_message(self, mid):
        for f in self.folders.values():
            if mid in f.messages:
                return f.messages[mid]
        return None


class Store(object):
    """All mailboxes of the lab, shared by every session."""

    def __init__(self, config):
        self.config = config
        self.lock = threading.RLock()
        self.mailboxes = {}
        self.counter = itertools.count(0x100)
        self.repl_guid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'lab-repl').bytes_le
        # New-mail events (MAPI over HTTP NotificationWait): owner DN -> count
        self.events = threading.Condition(self.lock)
        self.new_mail = {}
        # Named properties (MS-OXCPRPT 3.1.4.2): (guid, lid or name) <-> id
        self.named_ids = {}
        self.named_names = {}

    def notify_new_mail(self, owner_dn):
        with self.events:
            key = owner_dn.lower()
            self.new_mail[key] = self.new_mail.get(key, 0) + 1
            self.events.notify_all()

    def new_mail_count(self, owner_dn):
        with self.lock:
            return self.new_mail.get(owner_dn.lower(), 0)

    def wait_new_mail(self, owner_dn, seen, timeout):
        """Blocks until owner_dn's new-mail count exceeds seen or timeout seconds
        pass; returns the current count."""
        key = owner_dn.lower()
        with self.events:
            self.events.wait_for(lambda: self.new_mail.get(key, 0) > seen, timeout)
            return self.new_mail.get(key, 0)

    def new_id(self):
        """A FID/MID: ReplId 1 (u16) followed by a 6-byte big-endian GlobCnt."""
        with self.lock:
            g = next(self.counter)
        return struct.unpack('<Q', struct.pack('<H', 1) + g.to_bytes(6, 'big'))[0]

    def mailbox(self, owner_dn, display_name):
        with self.lock:
            key = owner_dn.lower()
            if key not in self.mailboxes:
                self.mailboxes[key] = Mailbox(self, owner_dn, display_name)
            return self.mailboxes[key]


# ---------------------------------------------------------------------------
# Server objects referenced from the handle table
# ---------------------------------------------------------------------------
class LogonObj(object):
    kind = 'logon'

    def __init__(self, mailbox):
        self.mailbox = mailbox


class FolderObj(object):
    kind = 'folder'

    def __init__(self, mailbox, folder):
        self.mailbox = mailbox
        self.folder = folder


class TableObj(object):
    kind = 'table'

    def __init__(self, mailbox, source, what, flags):
        self.mailbox = mailbox
        self.source = source      # Folder or MessageObj
        self.what = what          # 'hierarchy', 'contents', 'attachments'
        self.flags = flags
        self.columns = None
        self.cursor = 0

    def rows(self):
        mb = self.mailbox
        if self.what == 'hierarchy':
            out = []

            def walk(f, depth):
                for c in f.children:
                    out.append(mb.folders[c])
                    if self.flags & 0x04:      # Depth: whole subtree
                        walk(mb.folders[c], depth + 1)
            walk(self.source, 0)
            return out
        if self.what == 'contents':
            return sorted(self.source.messages.values(), key=lambda m: m.mid)
        if self.what == 'attachments':
            return [self.source.msg.attachments[k] for k in sorted(self.source.msg.attachments)]
        return []


class MessageObj(object):
    kind = 'message'

    def __init__(self, mailbox, msg, folder, new):
        self.mailbox = mailbox
        self.msg = msg            # working copy
        self.folder = folder
        self.new = new


class AttachmentObj(object):
    kind = 'attachment'

    def __init__(self, msgobj, att, new):
        self.msgobj = msgobj
        self.att = att            # working copy
        self.new = new


class StreamObj(object):
    kind = 'stream'

    def __init__(self, owner, tag, data, mode):
        self.owner = owner
        self.tag = tag
        self.data = bytearray(data)
        self.pos = 0
        self.mode = mode
        self.dirty = False


# LAB_CHANGE_KEYS=1: messages show PidTagChangeKey (MS-OXCFXICS 2.2.1.2.7: a
# 16-byte GUID and a counter) in RopGetPropertiesSpecific / All, made from the
# message id and its last modification time.  Off by default: other tests
# compare whole property lists.
PidTagChangeKey = 0x65E20102
CHANGE_KEYS = os.environ.get('LAB_CHANGE_KEYS') == '1'
CHANGE_KEY_GUID = bytes.fromhex('6c61622d6368616e67652d6b65792d31')


def change_key_of(m):
    t = m.props.get(PidTagLastModificationTime, 0)
    h = hashlib.sha256(struct.pack('<Q', m.mid) + repr(t).encode()).digest()[:6]
    return CHANGE_KEY_GUID + h


def object_props(obj):
    """The property dictionary of the object a handle refers to."""
    if isinstance(obj, FolderObj):
        return obj.folder.props
    if isinstance(obj, MessageObj):
        return obj.msg.props
    if isinstance(obj, AttachmentObj):
        return obj.att.props
    return {}


def encode_stream_value(tag, value):
    t = ptype(tag)
    if value is None:
        return b''
    if t == PT_UNICODE:
        return value.encode('utf-16le') if isinstance(value, str) else bytes(value)
    if t == PT_STRING8:
        return value.encode('cp1252', 'replace') if isinstance(value, str) else bytes(value)
    return bytes(value)


def decode_stream_value(tag, data):
    t = ptype(tag)
    if t == PT_UNICODE:
        return bytes(data).decode('utf-16le', 'replace').rstrip('\x00')
    if t == PT_STRING8:
        return bytes(data).decode('cp1252', 'replace').rstrip('\x00')
    return bytes(data)


# ---------------------------------------------------------------------------
# ROP processing
# ---------------------------------------------------------------------------
class RopSession(object):
    """Per EMSMDB session: server object table and ROP dispatch."""

    def __init__(self, store, user_dn, display_name, log):
        self.store = store
        self.user_dn = user_dn
        self.display_name = display_name
        self.log = log
        self.other_mailbox = None  # dn -> (dn, display name) of a mailbox it may also open
        self.objects = {}
        self.seen_ids = []       # RopIds processed (the wire dump of tests)
        self.next_handle = itertools.count(0x00000101)
        self.lock = threading.RLock()

    def _new_handle(self, obj):
        h = next(self.next_handle)
        self.objects[h] = obj
        return h

    # -- computed properties --
    def get_prop(self, obj_or_item, tag, mailbox):
        """Value of tag on a Folder/Message/Attachment (model object); None if absent."""
        it = obj_or_item
        ctag = canonical(tag)
        if isinstance(it, Folder):
            if tag == PidTagFolderId:
                return it.fid
            if tag == PidTagParentFolderId:
                return it.parent
            if tag == PidTagContentCount:
                return len(it.messages)
            if tag == PidTagContentUnreadCount:
                return len([m for m in it.messages.values()
                            if not m.props.get(PidTagMessageFlags, 0) & 1])
            if tag == PidTagSubfolders:
                return bool(it.children)
            if tag == PidTagEntryId:
                return self._entryid(mailbox, it.fid, None)
            return it.props.get(ctag)
        if isinstance(it, Message):
            if tag == PidTagChangeKey and CHANGE_KEYS:
                return change_key_of(it)
            if tag in (PidTagMid, PidTagInstID):
                return it.mid
            if tag == PidTagInstanceNum:
                return 0
            if tag == PidTagFolderId:
                return it.fid
            if tag == PidTagHasAttachments:
                return bool(it.attachments)
            if tag == PidTagMessageSize:
                return self._size(it.props) + sum(self._size(a.props)
                                                  for a in it.attachments.values())
            if tag == PidTagMessageFlags:
                return it.props.get(PidTagMessageFlags, 0) | (0x10 if it.attachments else 0)
            if tag == PidTagEntryId and it.mid:
                return self._entryid(mailbox, it.fid, it.mid)
            return it.props.get(ctag)
        if isinstance(it, Attachment):
            if tag == PidTagAttachNumber:
                return it.num
            if tag == PidTagAttachSize:
                return self._size(it.props)
            return it.props.get(ctag)
        return None

    @staticmethod
    def _size(props):
        n = 0
        for v in props.values():
            if isinstance(v, (bytes, bytearray)):
                n += len(v)
            elif isinstance(v, str):
                n += 2 * len(v)
            else:
                n += 8
        return n

    def _entryid(self, mailbox, fid, mid):
        def gid(x):
            b = struct.pack('<Q', x)
            return self.store.repl_guid + b[2:8] + b'\x00\x00'
        if mid is None:
            return b'\x00' * 4 + mailbox.guid + struct.pack('<H', 1) + gid(fid)
        return b'\x00' * 4 + mailbox.guid + struct.pack('<H', 7) + gid(fid) + gid(mid)

    def property_row(self, item, columns, mailbox, size_limit=0):
        """PropertyRow (MS-OXCDATA 2.8.1): standard if all present, else flagged."""
        values = []
        flagged = False
        for tag in columns:
            v = self.get_prop(item, tag, mailbox)
            t = ptype(tag)
            if v is None or t in (PT_UNSPECIFIED,):
                values.append((0x0A, struct.pack('<L', ecNotFound)))
                flagged = True
                continue
            try:
                enc = write_value(t, convert_for(tag, v))
            except (ValueError, struct.error, TypeError, AttributeError):
                values.append((0x0A, struct.pack('<L', ecNotSupported)))
                flagged = True
                continue
            if size_limit and len(enc) > size_limit:
                values.append((0x0A, struct.pack('<L', ecNotEnoughMemory)))
                flagged = True
                continue
            values.append((0x00, enc))
        if not flagged:
            return b'\x00' + b''.join(v for _, v in values)
        return b'\x01' + b''.join(bytes([f]) + v for f, v in values)

    # -- buffer level --
    def process(self, rop_buffer, max_size=None):
        """Process a ROP request buffer, return the ROP response buffer.
        max_size: when the responses would not fit (with the handle table),
        the rest is answered with RopBufferTooSmall (MS-OXCROPS 2.2.15.1)
        carrying the request bytes from the ROP that did not fit."""
        if len(rop_buffer) < 2:
            raise RopParseError('ROP buffer shorter than RopSize')
        rop_size = struct.unpack('<H', rop_buffer[:2])[0]
        if rop_size < 2 or rop_size > len(rop_buffer):
            raise RopParseError('bad RopSize %d (buffer %d)' % (rop_size, len(rop_buffer)))
        hraw = rop_buffer[rop_size:]
        if len(hraw) % 4:
            raise RopParseError('handle table not a multiple of 4 bytes')
        handles = list(struct.unpack('<%dL' % (len(hraw) // 4), hraw))
        r = Reader(rop_buffer, 2, rop_size)
        out = bytearray()
        # what a ROP whose size the server picks (BufferSize 0xBABE) may fill:
        # the response buffer (pcbOut / MaxRopOut), and at most one extended
        # buffer's payload, 32 KB (MS-OXCRPC 3.1.4.2.1: a single payload MUST
        # NOT exceed 32 KB; RopSize is 16 bits): a MaxRopOut of 0x40000 and a
        # MaximumBufferSize of 0xFFF0 do not make a 64 KB ROP buffer
        self.room = None if max_size is None else \
            min(max_size, PAYLOAD_MAX) - 2 - 4 * len(handles)
        with self.lock, self.store.lock:
            while r.off < r.end:
                rop_id = r.data[r.off]
                self.seen_ids.append(rop_id)
                fn = ROP_HANDLERS.get(rop_id) or lab_content.ROP_HANDLERS.get(rop_id)
                if fn is None:
                    hidx = r.data[r.off + 2] if r.off + 2 < r.end else 0
                    self.log('emsmdb:   ROP 0x%02x not supported -> ecNotSupported, '
                             'remaining ROPs skipped' % rop_id)
                    out += struct.pack('<BBL', rop_id, hidx, ecNotSupported)
                    break
                start = r.off
                try:
                    resp = fn(self, r, handles)
                except RopParseError:
                    raise
                # RopSize (16 bits) covers itself and the responses: more
                # does not make a ROP buffer, whatever pcbOut says
                if resp is not None and (2 + len(out) + len(resp) > 0xFFFF or (
                        max_size is not None and
                        2 + len(out) + len(resp) + 4 * len(handles) > max_size)):
                    rest = rop_buffer[start:rop_size]
                    out += struct.pack('<BH', 0xFF, min(0xFFFF, 2 + len(out) + len(resp) +
                                                        4 * len(handles))) + rest
                    break
                if resp is not None:
                    out += resp
        return struct.pack('<H', len(out) + 2) + bytes(out) + \
            b''.join(struct.pack('<L', h & 0xFFFFFFFF) for h in handles)

    def obj(self, handles, idx, *kinds):
        if idx >= len(handles):
            return None
        o = self.objects.get(handles[idx])
        if o is None or (kinds and o.kind not in kinds):
            return None
        return o

    def set_out(self, handles, idx, obj):
        h = self._new_handle(obj)
        while len(handles) <= idx:
            handles.append(0xFFFFFFFF)
        handles[idx] = h
        return h


def fail(rop_id, idx, code):
    return struct.pack('<BBL', rop_id, idx, code)


def rop_release(s, r, handles):
    r.u8()
    r.u8()          # LogonId
    idx = r.u8()
    if idx < len(handles):
        obj = s.objects.pop(handles[idx], None)
        s.log('emsmdb:   RopRelease idx=%d (%s)' % (idx, obj.kind if obj else 'none'))
    return None


def rop_logon(s, r, handles):
    r.u8()
    logon_id = r.u8()
    out_idx = r.u8()
    logon_flags = r.u8()
    open_flags = r.u32()
    store_state = r.u32()
    essdn_size = r.u16()
    essdn = r.take(essdn_size).rstrip(b'\x00').decode('latin-1')
    s.log('emsmdb:   RopLogon flags=0x%x open=0x%x essdn=%r' % (logon_flags, open_flags, essdn))
    if not logon_flags & 0x01:
        return fail(0xFE, out_idx, ecNotSupported)     # public folders not served
    dn = essdn or s.user_dn
    if dn.lower() != s.user_dn.lower():
        # The session owner's mailbox, or any with full access (Administrator).
        other = s.other_mailbox(dn) if s.other_mailbox else None
        if other is None:
            return fail(0xFE, out_idx, ecUnknownUser)
        mb = s.store.mailbox(*other)
    else:
        mb = s.store.mailbox(s.user_dn, s.display_name)
    s.set_out(handles, out_idx, LogonObj(mb))
    now = datetime.datetime.utcnow()
    out = struct.pack('<BBL', 0xFE, out_idx, ecSuccess)
    out += struct.pack('<B', logon_flags)
    out += b''.join(struct.pack('<Q', f) for f in mb.special)
    out += struct.pack('<B', 0x01 | 0x02 | 0x04)          # ResponseFlags: Reserved|OwnerRight|SendAsRight
    out += mb.guid
    out += struct.pack('<H', 1) + s.store.repl_guid
    out += struct.pack('<BBBBBBH', now.second, now.minute, now.hour, (now.weekday() + 1) % 7,
                       now.day, now.month, now.year)
    out += struct.pack('<Q', 0)                           # GwartTime
    out += struct.pack('<L', 0)                           # StoreState
    return out


def rop_open_folder(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    fid = r.u64()
    mode = r.u8()
    base = s.obj(handles, in_idx, 'logon', 'folder')
    if base is None:
        return fail(0x02, out_idx, ecNullObject)
    f = base.mailbox.folders.get(fid)
    s.log('emsmdb:   RopOpenFolder fid=0x%016x -> %s' % (fid, f.name if f else 'not found'))
    if f is None:
        return fail(0x02, out_idx, ecNotFound)
    s.set_out(handles, out_idx, FolderObj(base.mailbox, f))
    return struct.pack('<BBLBB', 0x02, out_idx, ecSuccess, 0, 0)   # HasRules, IsGhosted


def rop_open_message(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    r.u16()                      # CodePageId
    fid = r.u64()
    mode = r.u8()
    mid = r.u64()
    base = s.obj(handles, in_idx, 'logon', 'folder')
    if base is None:
        return fail(0x03, out_idx, ecNullObject)
    f = base.mailbox.folders.get(fid)
    m = f.messages.get(mid) if f else None
    s.log('emsmdb:   RopOpenMessage fid=0x%016x mid=0x%016x -> %s' % (
        fid, mid, 'ok' if m else 'not found'))
    if m is None:
        return fail(0x03, out_idx, ecNotFound)
    s.set_out(handles, out_idx, MessageObj(base.mailbox, m.clone(m.mid, m.fid), f, False))
    return struct.pack('<BBL', 0x03, out_idx, ecSuccess) + lab_content.message_info(m)


def _get_table(s, r, handles, rop_id, what):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    flags = r.u8()
    if what == 'attachments':
        base = s.obj(handles, in_idx, 'message')
        if base is None:
            return fail(rop_id, out_idx, ecNullObject)
        t = TableObj(base.mailbox, base, what, flags)
        s.set_out(handles, out_idx, t)
        s.log('emsmdb:   RopGetAttachmentTable -> %d rows' % len(t.rows()))
        return struct.pack('<BBL', rop_id, out_idx, ecSuccess)
    base = s.obj(handles, in_idx, 'folder')
    if base is None:
        return fail(rop_id, out_idx, ecNullObject)
    t = TableObj(base.mailbox, base.folder, what, flags)
    s.set_out(handles, out_idx, t)
    n = len(t.rows())
    s.log('emsmdb:   RopGet%sTable %s -> %d rows' % (what.capitalize(), base.folder.name, n))
    return struct.pack('<BBLL', rop_id, out_idx, ecSuccess, n)


def rop_get_hierarchy_table(s, r, handles):
    return _get_table(s, r, handles, 0x04, 'hierarchy')


def rop_get_contents_table(s, r, handles):
    return _get_table(s, r, handles, 0x05, 'contents')


def rop_get_attachment_table(s, r, handles):
    return _get_table(s, r, handles, 0x21, 'attachments')


def rop_create_message(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    r.u16()
    fid = r.u64()
    assoc = r.u8()
    base = s.obj(handles, in_idx, 'logon', 'folder')
    if base is None:
        return fail(0x06, out_idx, ecNullObject)
    f = base.mailbox.folders.get(fid)
    s.log('emsmdb:   RopCreateMessage fid=0x%016x assoc=%d' % (fid, assoc))
    if f is None:
        return fail(0x06, out_idx, ecNotFound)
    m = Message(0, f.fid, {PidTagMessageClass: 'IPM.Note', PidTagMessageFlags: 0x8,
                           PidTagCreationTime: filetime_now()})
    s.set_out(handles, out_idx, MessageObj(base.mailbox, m, f, True))
    return struct.pack('<BBLB', 0x06, out_idx, ecSuccess, 0)     # HasMessageId = 0


def rop_get_properties_specific(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    limit = r.u16()
    want_unicode = r.u16()
    n = r.u16()
    tags = [r.u32() for _ in range(n)]
    o = s.obj(handles, in_idx)
    if o is None:
        return fail(0x07, in_idx, ecNullObject)
    if isinstance(o, FolderObj):
        item = o.folder
    elif isinstance(o, MessageObj):
        item = o.msg
    elif isinstance(o, AttachmentObj):
        item = o.att
    elif isinstance(o, LogonObj):
        item = o.mailbox.folders[o.mailbox.special[0]]
    else:
        return fail(0x07, in_idx, ecNotSupported)
    s.log('emsmdb:   RopGetPropertiesSpecific %s tags=%s' % (
        o.kind, ','.join('%08x' % t for t in tags)))
    mailbox = o.mailbox if hasattr(o, 'mailbox') else o.msgobj.mailbox
    return struct.pack('<BBL', 0x07, in_idx, ecSuccess) + \
        s.property_row(item, tags, mailbox, limit)


def rop_set_properties(s, r, handles, rop_id=0x0A):
    r.u8()
    r.u8()
    in_idx = r.u8()
    # PropertyValueSize counts PropertyValueCount and PropertyValues
    # (MS-OXCROPS 2.2.8.6.1).
    size = r.u16()
    if size < 2:
        raise RopParseError('PropertyValueSize %d below PropertyValueCount' % size)
    end = r.off + size
    if end > r.end:
        raise RopParseError('PropertyValueSize %d past the ROP buffer' % size)
    count = r.u16()
    sub = Reader(r.data, r.off, end)
    vals = []
    for _ in range(count):
        tag = sub.u32()
        vals.append((tag, read_value(sub, ptype(tag))))
    if sub.off != end:
        raise RopParseError('PropertyValueSize %d, values take %d' % (size, sub.off - end + size))
    r.off = end
    o = s.obj(handles, in_idx, 'folder', 'message', 'attachment')
    if o is None:
        return fail(rop_id, in_idx, ecNullObject)
    props = object_props(o)
    for tag, v in vals:
        props[canonical(tag)] = v
    s.log('emsmdb:   RopSetProperties %s %s' % (o.kind, ','.join('%08x' % t for t, _ in vals)))
    return struct.pack('<BBLH', rop_id, in_idx, ecSuccess, 0)


def rop_save_changes_message(s, r, handles):
    r.u8()
    r.u8()
    resp_idx = r.u8()
    in_idx = r.u8()
    flags = r.u8()
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return fail(0x0C, resp_idx, ecNullObject)
    save_message(s, o)
    s.log('emsmdb:   RopSaveChangesMessage -> mid=0x%016x in %s' % (o.msg.mid, o.folder.name))
    return struct.pack('<BBLBQ', 0x0C, resp_idx, ecSuccess, in_idx, o.msg.mid)


def save_message(s, o):
    if getattr(o, 'parent_att', None) is not None:
        lab_content.save_embedded(o)
        return
    if not o.msg.mid:
        o.msg.mid = s.store.new_id()
    o.msg.props[PidTagLastModificationTime] = filetime_now()
    o.msg.props[PidTagMessageFlags] = o.msg.props.get(PidTagMessageFlags, 0) & ~0x8 | 0x1
    o.folder.messages[o.msg.mid] = o.msg.clone(o.msg.mid, o.folder.fid)
    o.new = False


def rop_set_columns(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    flags = r.u8()
    n = r.u16()
    tags = [r.u32() for _ in range(n)]
    t = s.obj(handles, in_idx, 'table')
    if t is None:
        return fail(0x12, in_idx, ecNullObject)
    t.columns = tags
    s.log('emsmdb:   RopSetColumns %s' % ','.join('%08x' % x for x in tags))
    return struct.pack('<BBLB', 0x12, in_idx, ecSuccess, 0)     # TBLSTAT_COMPLETE


def rop_query_rows(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    flags = r.u8()
    forward = r.u8()
    count = r.u16()
    t = s.obj(handles, in_idx, 'table')
    if t is None:
        return fail(0x15, in_idx, ecNullObject)
    if t.columns is None:
        return fail(0x15, in_idx, ecNullObject)
    rows = t.rows()
    if forward:
        sel = rows[t.cursor:t.cursor + count]
        newpos = t.cursor + len(sel)
    else:
        start = max(0, t.cursor - count)
        sel = list(reversed(rows[start:t.cursor]))
        newpos = start
    if not flags & 0x01:          # NoAdvance
        t.cursor = newpos
    origin = 0 if t.cursor == 0 else (2 if t.cursor >= len(rows) else 1)
    mailbox = t.mailbox
    data = b''.join(s.property_row(item, t.columns, mailbox) for item in sel)
    s.log('emsmdb:   RopQueryRows %s count=%d -> %d rows' % (t.what, count, len(sel)))
    return struct.pack('<BBLBH', 0x15, in_idx, ecSuccess, origin, len(sel)) + data


def rop_create_attachment(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return fail(0x23, out_idx, ecNullObject)
    num = o.msg.next_attach
    o.msg.next_attach += 1
    a = Attachment(num)
    s.set_out(handles, out_idx, AttachmentObj(o, a, True))
    s.log('emsmdb:   RopCreateAttachment -> %d' % num)
    return struct.pack('<BBLL', 0x23, out_idx, ecSuccess, num)


def rop_open_attachment(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    flags = r.u8()
    num = r.u32()
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return fail(0x22, out_idx, ecNullObject)
    a = o.msg.attachments.get(num)
    s.log('emsmdb:   RopOpenAttachment %d -> %s' % (num, 'ok' if a else 'not found'))
    if a is None:
        return fail(0x22, out_idx, ecNotFound)
    s.set_out(handles, out_idx, AttachmentObj(o, a.clone(), False))
    return struct.pack('<BBL', 0x22, out_idx, ecSuccess)


def rop_delete_attachment(s, r, handles):
    """MS-OXCROPS 2.2.6.11: RopId, LogonId, InputHandleIndex, AttachmentID;
    the response: RopId, InputHandleIndex, ReturnValue.  The attachment goes
    from the open message (saved with it, MS-OXCMSG 3.2.5.4)."""
    r.u8()
    r.u8()
    in_idx = r.u8()
    num = r.u32()
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return fail(0x24, in_idx, ecNullObject)
    gone = o.msg.attachments.pop(num, None)
    s.log('emsmdb:   RopDeleteAttachment %d -> %s' % (num, 'ok' if gone else 'not found'))
    return struct.pack('<BBL', 0x24, in_idx, ecSuccess if gone else ecNotFound)


def rop_save_changes_attachment(s, r, handles):
    r.u8()
    r.u8()
    resp_idx = r.u8()
    in_idx = r.u8()
    flags = r.u8()
    o = s.obj(handles, in_idx, 'attachment')
    if o is None:
        return fail(0x25, resp_idx, ecNullObject)
    o.msgobj.msg.attachments[o.att.num] = o.att.clone()
    o.new = False
    s.log('emsmdb:   RopSaveChangesAttachment %d (%d bytes data)' % (
        o.att.num, len(o.att.props.get(PidTagAttachDataBinary, b''))))
    return struct.pack('<BBL', 0x25, resp_idx, ecSuccess)


def rop_get_receive_folder(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    cls = r.asciiz()
    o = s.obj(handles, in_idx, 'logon')
    if o is None:
        return fail(0x27, in_idx, ecNullObject)
    s.log('emsmdb:   RopGetReceiveFolder %r' % cls)
    return struct.pack('<BBLQ', 0x27, in_idx, ecSuccess, o.mailbox.inbox.fid) + b'\x00'


def rop_open_stream(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    out_idx = r.u8()
    tag = r.u32()
    mode = r.u8()
    o = s.obj(handles, in_idx, 'folder', 'message', 'attachment')
    if o is None:
        return fail(0x2B, out_idx, ecNullObject)
    t = ptype(tag)
    if t not in (PT_BINARY, PT_STRING8, PT_UNICODE, PT_OBJECT):
        return fail(0x2B, out_idx, ecNotSupported)
    props = object_props(o)
    cur = props.get(canonical(tag))
    if cur is None and mode == 0:
        s.log('emsmdb:   RopOpenStream %08x read -> not found' % tag)
        return fail(0x2B, out_idx, ecNotFound)
    data = b'' if mode == 2 else encode_stream_value(tag, cur)
    st = StreamObj(o, tag, data, mode)
    s.set_out(handles, out_idx, st)
    s.log('emsmdb:   RopOpenStream %s %08x mode=%d size=%d' % (o.kind, tag, mode, len(data)))
    return struct.pack('<BBLL', 0x2B, out_idx, ecSuccess, len(data))


def rop_read_stream(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    count = r.u16()
    if count == 0xBABE:
        count = r.u32()
    st = s.obj(handles, in_idx, 'stream')
    if st is None:
        return fail(0x2C, in_idx, ecNullObject)
    count = min(count, 0x7FF0)
    chunk = bytes(st.data[st.pos:st.pos + count])
    st.pos += len(chunk)
    s.log('emsmdb:   RopReadStream %d -> %d bytes' % (count, len(chunk)))
    return struct.pack('<BBLH', 0x2C, in_idx, ecSuccess, len(chunk)) + chunk


def rop_seek_stream(s, r, handles):
    """MS-OXCPRPT 3.2.5.18: from the beginning (0), the current position (1)
    or the end (2); before the start or past 2^31 StreamSeekError."""
    r.u8()
    r.u8()
    in_idx = r.u8()
    origin = r.u8()
    offset = struct.unpack('<q', r.take(8))[0]
    st = s.obj(handles, in_idx, 'stream')
    if st is None:
        return fail(0x2E, in_idx, ecNullObject)
    if origin > 2:
        return fail(0x2E, in_idx, 0x80030057)
    new = (0, st.pos, len(st.data))[origin] + offset
    if new < 0 or new > 1 << 31:
        return fail(0x2E, in_idx, 0x80030019)
    st.pos = new
    s.log('emsmdb:   RopSeekStream origin=%d offset=%d -> %d' % (origin, offset, new))
    return struct.pack('<BBLQ', 0x2E, in_idx, ecSuccess, new)


def rop_write_stream(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    size = r.u16()
    data = r.take(size)
    st = s.obj(handles, in_idx, 'stream')
    if st is None:
        return fail(0x2D, in_idx, ecNullObject)
    if st.mode == 0:
        return struct.pack('<BBLH', 0x2D, in_idx, ecAccessDenied, 0)
    st.data[st.pos:st.pos + len(data)] = data
    st.pos += len(data)
    st.dirty = True
    # Like Exchange, written data is visible on the owning object immediately
    # (past 1 MB at RopCommitStream / the owner's save, not to copy it per write).
    if len(st.data) <= 1 << 20:
        object_props(st.owner)[canonical(st.tag)] = decode_stream_value(st.tag, st.data)
    s.log('emsmdb:   RopWriteStream %d bytes' % len(data))
    return struct.pack('<BBLH', 0x2D, in_idx, ecSuccess, len(data))


def rop_commit_stream(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    st = s.obj(handles, in_idx, 'stream')
    if st is None:
        return fail(0x5D, in_idx, ecNullObject)
    object_props(st.owner)[canonical(st.tag)] = decode_stream_value(st.tag, st.data)
    st.dirty = False
    s.log('emsmdb:   RopCommitStream %08x (%d bytes)' % (st.tag, len(st.data)))
    return struct.pack('<BBL', 0x5D, in_idx, ecSuccess)


def rop_submit_message(s, r, handles):
    r.u8()
    r.u8()
    in_idx = r.u8()
    flags = r.u8()
    o = s.obj(handles, in_idx, 'message')
    if o is None:
        return fail(0x32, in_idx, ecNullObject)
    save_message(s, o)
    mb = o.mailbox
    # Deliver to self: a copy lands in the Inbox.
    copy = o.msg.clone(s.store.new_id(), mb.inbox.fid)
    copy.props[PidTagMessageFlags] = 0x0
    copy.props[PidTagMessageDeliveryTime] = filetime_now()
    copy.props.setdefault(PidTagSenderName, s.display_name)
    mb.inbox.messages[copy.mid] = copy
    # The submitted original moves from the Outbox to Sent Items.
    if o.folder is mb.outbox:
        orig = mb.outbox.messages.pop(o.msg.mid, None)
        if orig is not None:
            orig.fid = mb.sent.fid
            mb.sent.messages[orig.mid] = orig
    s.store.notify_new_mail(mb.owner_dn)
    s.log('emsmdb:   RopSubmitMessage mid=0x%016x -> delivered to Inbox as 0x%016x' % (
        o.msg.mid, copy.mid))
    return struct.pack('<BBL', 0x32, in_idx, ecSuccess)


ROP_HANDLERS = {
    0x01: rop_release,
    0x02: rop_open_folder,
    0x03: rop_open_message,
    0x04: rop_get_hierarchy_table,
    0x05: rop_get_contents_table,
    0x06: rop_create_message,
    0x07: rop_get_properties_specific,
    0x0A: rop_set_properties,
    0x0C: rop_save_changes_message,
    0x12: rop_set_columns,
    0x15: rop_query_rows,
    0x21: rop_get_attachment_table,
    0x22: rop_open_attachment,
    0x23: rop_create_attachment,
    0x24: rop_delete_attachment,
    0x25: rop_save_changes_attachment,
    0x27: rop_get_receive_folder,
    0x2B: rop_open_stream,
    0x2C: rop_read_stream,
    0x2D: rop_write_stream,
    0x2E: rop_seek_stream,
    0x32: rop_submit_message,
    0x5D: rop_commit_stream,
    0xFE: rop_logon,
}


import lab_ics  # noqa: E402,F401  ICS and FastTransfer ROPs (register in ROP_HANDLERS)
