"""The lab mailbox's content: messages the lab serves (online mode, and the
FastTransfer helper writes its streams from the same dicts).

A message is a dict:
  {"props": {proptag: value},           tagged properties (MS-OXPROPS tags)
   "named": [{"guid": "xxxxxxxx-...", "lid": int | "name": str,
              "type": PT_*, "value": v}],   named properties (MS-OXCDATA 2.6.1)
   "recipients": [{"props": {proptag: value}}],
   "attachments": [{"props": {proptag: value}, "embedded": <message dict> | None}]}

Values: str for PT_UNICODE, bytes for PT_BINARY, int for integer and time
types, bool for PT_BOOLEAN.  Everything is deterministic (no clock, no
randomness) so tests can compare what crossed the proxy byte for byte.
"""

import contextlib
import functools
import hashlib
import os
import struct

import rtfcp

PT_LONG, PT_BOOLEAN, PT_UNICODE, PT_SYSTIME, PT_BINARY = 0x3, 0xB, 0x1F, 0x40, 0x102

# Message
PidTagMessageClass = 0x001A001F
PidTagSubject = 0x0037001F
PidTagClientSubmitTime = 0x00390040
PidTagSentRepresentingName = 0x0042001F
PidTagSentRepresentingEmailAddress = 0x0065001F
PidTagSentRepresentingAddressType = 0x0064001F
PidTagTransportMessageHeaders = 0x007D001F
PidTagSenderName = 0x0C1A001F
PidTagSenderEmailAddress = 0x0C1F001F
PidTagSenderAddressType = 0x0C1E001F
PidTagSenderSmtpAddress = 0x5D01001F
PidTagMessageDeliveryTime = 0x0E060040
PidTagMessageFlags = 0x0E070003
PidTagBody = 0x1000001F
PidTagRtfCompressed = 0x10090102
PidTagHtml = 0x10130102
PidTagInternetMessageId = 0x1035001F
PidTagNativeBody = 0x10160003
# Recipient
PidTagRecipientType = 0x0C150003
PidTagDisplayName = 0x3001001F
PidTagAddressType = 0x3002001F
PidTagEmailAddress = 0x3003001F
PidTagSmtpAddress = 0x39FE001F
# Attachment
PidTagAttachDataBinary = 0x37010102
PidTagAttachDataObject = 0x3701000D
PidTagAttachFilename = 0x3704001F
PidTagAttachMethod = 0x37050003
PidTagAttachLongFilename = 0x3707001F
PidTagAttachPathname = 0x3708001F
PidTagAttachMimeTag = 0x370E001F
PidTagAttachContentId = 0x3712001F
PidTagAttachLongPathname = 0x370D001F

ATTACH_BY_VALUE, ATTACH_BY_REFERENCE, ATTACH_EMBEDDED_MSG = 1, 2, 5
MAPI_TO, MAPI_CC, MAPI_BCC = 1, 2, 3

PS_PUBLIC_STRINGS = '00020329-0000-0000-c000-000000000046'
PSETID_Common = '00062008-0000-0000-c000-000000000046'

T0 = 133_000_000_000_000_000  # a fixed FILETIME (2022-06-18)


# The second message's big.bin: 10 MB only where a test checks the 10 MB case
# and asks for it (big_attachments() below, or LAB_BIG_ATTACHMENT=1 in the
# lab's and the test's environment); elsewhere 1 MB + 64 KB, still past the
# sizes that matter to the code it crosses (1 MB: the lab's stream commit,
# 64 KB: spill sizes and 16-bit lengths, 0x7F00: FastTransfer buffers), at a
# tenth of the time every Inbox sync and lab start paid for 10 MB.
BIG_ENV = 'LAB_BIG_ATTACHMENT'
BIG_SIZE = 10 * 1024 * 1024
DEFAULT_BIG_SIZE = (1 << 20) + (64 << 10)


def big_size(big=None):
    """The size of big.bin: 10 MB when asked for (big, or LAB_BIG_ATTACHMENT=1),
    else LAB_BIG_ATTACHMENT_SIZE bytes when set (a test's own size), else 1 MB +
    64 KB."""
    if big is None:
        big = os.environ.get(BIG_ENV) == '1'
    if big:
        return BIG_SIZE
    if os.environ.get('LAB_BIG_ATTACHMENT_SIZE'):
        return int(os.environ['LAB_BIG_ATTACHMENT_SIZE'])
    return DEFAULT_BIG_SIZE


@contextlib.contextmanager
def big_attachments():
    """Within it, labs started (they inherit os.environ) and messages() here
    carry the 10 MB attachment.  For a test module:
        @pytest.fixture(scope="module", autouse=True)
        def ten_mb():
            with lab_store.big_attachments():
                yield"""
    old = os.environ.get(BIG_ENV)
    os.environ[BIG_ENV] = '1'
    try:
        yield
    finally:
        if old is None:
            del os.environ[BIG_ENV]
        else:
            os.environ[BIG_ENV] = old


@functools.lru_cache(maxsize=2)
def big_attachment(size=BIG_SIZE):
    """size bytes of deterministic, poorly compressible bytes (SHA-256 counter stream)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(b'mapiproxy-lab-%d' % i).digest()
        i += 1
    return bytes(out[:size])


def _recipient(kind, name, smtp):
    return {'props': {PidTagRecipientType: kind, PidTagDisplayName: name,
                      PidTagAddressType: 'SMTP', PidTagEmailAddress: smtp,
                      PidTagSmtpAddress: smtp}}


def _sender(props, name, smtp):
    props.update({PidTagSenderName: name, PidTagSenderEmailAddress: smtp,
                  PidTagSenderAddressType: 'SMTP', PidTagSenderSmtpAddress: smtp,
                  PidTagSentRepresentingName: name,
                  PidTagSentRepresentingEmailAddress: smtp,
                  PidTagSentRepresentingAddressType: 'SMTP'})
    return props


def _by_value(name, mime, data, cid=None):
    p = {PidTagAttachMethod: ATTACH_BY_VALUE, PidTagAttachLongFilename: name,
         PidTagAttachFilename: name[:12], PidTagAttachMimeTag: mime,
         PidTagAttachDataBinary: data}
    if cid:
        p[PidTagAttachContentId] = cid
    return {'props': p, 'embedded': None}


RTF_TEXT = (b'{\\rtf1\\ansi\\ansicpg1252\\deff0{\\fonttbl{\\f0\\fswiss Arial;}}'
            b'\\pard\\f0\\fs20 Minutes of the \\b lab\\b0  meeting.\\par '
            b'Action items are attached.\\par }\r\n')

HTML_1 = ('<html><head><meta charset="utf-8"></head><body>'
          '<p>Hello Alice,</p><p>the <b>quarterly report</b> is attached. '
          'Caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9.</p></body></html>')

HEADERS_1 = ('Received: from mx.lab.example ([127.0.0.1]) by lab.example\r\n'
             '\twith ESMTP; Sat, 18 Jun 2022 10:00:00 +0000\r\n'
             'From: Bob Sender <bob@lab.example>\r\n'
             'To: Alice Lab <alice@lab.example>\r\n'
             'Cc: Carol Copy <carol@lab.example>\r\n'
             'Subject: Quarterly report\r\n'
             'Date: Sat, 18 Jun 2022 10:00:00 +0000\r\n'
             'Message-ID: <report-1@lab.example>\r\n'
             'MIME-Version: 1.0\r\n'
             'X-Lab-Scanned: yes\r\n')


def _pdf():
    return (b'%PDF-1.4\n% lab report\n' + b''.join(b'line %04d of the report\n' % i
                                                    for i in range(200)) + b'%%EOF\n')


def messages(big=None):
    """The lab Inbox's messages, oldest first (a new list each call); big:
    the 10 MB attachment (default: as LAB_BIG_ATTACHMENT says, big_size())."""
    m1 = {
        'props': _sender({
            PidTagMessageClass: 'IPM.Note', PidTagSubject: 'Quarterly report',
            PidTagBody: 'Hello Alice,\r\n\r\nthe quarterly report is attached. '
                        'Caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9.\r\n',
            PidTagHtml: HTML_1.encode('utf-8'), PidTagNativeBody: 3,
            PidTagTransportMessageHeaders: HEADERS_1,
            PidTagInternetMessageId: '<report-1@lab.example>',
            PidTagClientSubmitTime: T0, PidTagMessageDeliveryTime: T0 + 10_000_000,
            PidTagMessageFlags: 0x1}, 'Bob Sender', 'bob@lab.example'),
        'named': [{'guid': PS_PUBLIC_STRINGS, 'name': 'Keywords', 'type': PT_UNICODE,
                   'value': 'finance'},
                  {'guid': PSETID_Common, 'lid': 0x8580, 'type': PT_UNICODE,
                   'value': 'lab-category'}],
        'recipients': [_recipient(MAPI_TO, 'Alice Lab', 'alice@lab.example'),
                       _recipient(MAPI_CC, 'Carol Copy', 'carol@lab.example')],
        'attachments': [_by_value('report.pdf', 'application/pdf', _pdf()),
                        _by_value('notes.txt', 'text/plain', b'plain notes\r\nline 2\r\n')],
    }
    m2 = {
        'props': _sender({
            PidTagMessageClass: 'IPM.Note', PidTagSubject: 'Meeting minutes (RTF)',
            PidTagBody: 'Minutes of the lab meeting.\r\nAction items are attached.\r\n',
            PidTagRtfCompressed: rtfcp.compress(RTF_TEXT), PidTagNativeBody: 2,
            PidTagClientSubmitTime: T0 + 36_000_000_000,
            PidTagMessageDeliveryTime: T0 + 36_010_000_000,
            PidTagMessageFlags: 0x1}, 'Dave Minutes', 'dave@lab.example'),
        'named': [{'guid': PS_PUBLIC_STRINGS, 'name': 'X-Lab-Meeting', 'type': PT_LONG,
                   'value': 42}],
        'recipients': [_recipient(MAPI_TO, 'Alice Lab', 'alice@lab.example')],
        'attachments': [_by_value('big.bin', 'application/octet-stream',
                                  big_attachment(big_size(big))),
                        {'props': {PidTagAttachMethod: ATTACH_BY_REFERENCE,
                                   PidTagAttachLongFilename: 'share.docx',
                                   PidTagAttachLongPathname: '\\\\files\\share\\share.docx'},
                         'embedded': None}],
    }
    inner = {
        'props': _sender({
            PidTagMessageClass: 'IPM.Note', PidTagSubject: 'Original question',
            PidTagBody: 'Is the lab open on Sunday?\r\n',
            PidTagHtml: b'<html><body><p>Is the lab open on <i>Sunday</i>?</p></body></html>',
            PidTagClientSubmitTime: T0 - 864_000_000_000}, 'Erin Asker', 'erin@lab.example'),
        'named': [],
        'recipients': [_recipient(MAPI_TO, 'Bob Sender', 'bob@lab.example')],
        'attachments': [_by_value('schedule.csv', 'text/csv', b'day,open\r\nsun,no\r\n')],
    }
    m3 = {
        'props': _sender({
            PidTagMessageClass: 'IPM.Note', PidTagSubject: 'Fwd: Original question',
            PidTagBody: 'See the forwarded message.\r\n',
            PidTagHtml: b'<html><body><p>See the forwarded message.</p></body></html>',
            PidTagClientSubmitTime: T0 + 72_000_000_000,
            PidTagMessageDeliveryTime: T0 + 72_010_000_000,
            PidTagMessageFlags: 0x1}, 'Bob Sender', 'bob@lab.example'),
        'named': [],
        'recipients': [_recipient(MAPI_TO, 'Alice Lab', 'alice@lab.example'),
                       _recipient(MAPI_BCC, 'Frank Hidden', 'frank@lab.example')],
        'attachments': [{'props': {PidTagAttachMethod: ATTACH_EMBEDDED_MSG,
                                   PidTagDisplayName: 'Original question',
                                   PidTagAttachLongFilename: 'Original question.eml'},
                         'embedded': inner}],
    }
    return [m1, m2, m3]


def rtf_of(msg):
    """The decompressed RTF body of a message dict, or None."""
    c = msg['props'].get(PidTagRtfCompressed)
    return rtfcp.decompress(c) if c else None


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def _selftest():
    for raw, comp in (rtfcp.SPEC_EXAMPLE_1, rtfcp.SPEC_EXAMPLE_2):
        assert rtfcp.decompress(comp) == raw and rtfcp.compress(raw) == comp
    ms = messages(big=True)
    assert rtf_of(ms[1]) == RTF_TEXT
    assert len(ms[1]['attachments'][0]['props'][PidTagAttachDataBinary]) == 10 * 1024 * 1024
    small = messages(big=False)[1]['attachments'][0]['props'][PidTagAttachDataBinary]
    assert len(small) == DEFAULT_BIG_SIZE > 1 << 20 and small == big_attachment()[:len(small)]
    return struct.calcsize('<L')


if __name__ == '__main__':
    _selftest()
    print('lab_store ok')
