"""A MAPI over HTTP (MS-OXCMAPIHTTP) client on python3-requests, for tests.

    auth = requests_ntlm.HttpNtlmAuth('LAB\\\\alice', 'pw')      # or HTTPBasicAuth / None
    ems = EmsmdbHttp('https://127.0.0.1:PORT', auth=auth, verify=CA_PEM)
    ems.connect(user_dn)                                # Connect (cookies kept)
    [logon] = ems.execute(emsmdb_client.RopBuffer().logon(0, user_dn))
    ems.disconnect()

    ab = NspiHttp('https://127.0.0.1:PORT', auth=auth, verify=CA_PEM)
    ab.bind()
    rows = ab.query_rows(count=50, columns=[0x3001001F])

Every call sends one POST with X-RequestType / X-RequestId / X-ClientInfo /
X-ClientApplication, reads the chunked PROCESSING / PENDING / DONE stream and
returns a Response: .code (X-ResponseCode), .meta (the meta-tags seen, e.g.
['PROCESSING', 'PENDING', 'DONE']), .done (headers after DONE), .body, .http
(the requests.Response).  A non-zero X-ResponseCode raises MapiHttpError
unless check=False.  The session cookies (MapiContext, MapiSequence) live in
the requests.Session's cookie jar.

ROP buffers are built and parsed with emsmdb_client.RopBuffer (the same code
the RPC client uses); the RPC_HEADER_EXT framing (XorMagic, LZ77) with
emsmdb_client.frame_ext / unframe_ext.
"""

import itertools
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import requests                                                  # noqa: E402

import mapihttp_codec as C                                       # noqa: E402
import emsmdb_client as EC                                       # noqa: E402

CLIENT_APPLICATION = 'Outlook/16.0.17928.20114'


class MapiHttpError(Exception):
    def __init__(self, resp):
        Exception.__init__(self, 'X-ResponseCode %s (HTTP %d) for %s' % (
            resp.code, resp.http.status_code, resp.rtype))
        self.resp = resp


class Response(object):
    def __init__(self, rtype, http):
        self.rtype = rtype
        self.http = http
        self.code = None
        self.meta = []
        self.done = {}
        self.body = b''

    def reader(self):
        return C.Reader(self.body)


def parse_stream(data):
    """Splits a MAPI/HTTP response body into (meta-tags, DONE headers, body)."""
    meta = []
    off = 0
    while True:
        end = data.find(b'\r\n', off)
        if end < 0:
            raise C.BodyError('response stream ended before DONE (meta %s)' % meta)
        tagline = data[off:end].decode('ascii', 'replace')
        off = end + 2
        if tagline not in ('PROCESSING', 'PENDING', 'DONE'):
            raise C.BodyError('unexpected meta-tag %r' % tagline)
        meta.append(tagline)
        if tagline == 'DONE':
            break
    headers = {}
    while True:
        end = data.find(b'\r\n', off)
        if end < 0:
            raise C.BodyError('unterminated headers after DONE')
        line = data[off:end].decode('ascii', 'replace')
        off = end + 2
        if not line:
            break
        k, _, v = line.partition(':')
        headers[k.strip()] = v.strip()
    return meta, headers, data[off:]


class Endpoint(object):
    """One MAPI/HTTP endpoint (/mapi/emsmdb or /mapi/nspi) with its own cookies."""

    path = None

    def __init__(self, base_url, auth=None, verify=True, mailbox_id=None, http=None,
                 timeout=60):
        self.base = base_url.rstrip('/')
        self.http = http or requests.Session()
        if auth is not None:
            self.http.auth = auth
        # passed with every request: a session-level verify loses against
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment
        self.verify = verify
        self.mailbox_id = mailbox_id
        self.timeout = timeout
        self.client_id = str(uuid.uuid4()).upper()
        self.counter = itertools.count(1)

    @property
    def url(self):
        u = '%s%s/' % (self.base, self.path)
        if self.mailbox_id:
            u += '?MailboxId=%s' % self.mailbox_id
        return u

    def post(self, rtype, body=b'', check=True, headers=None):
        n = next(self.counter)
        h = {'Content-Type': 'application/mapi-http', 'X-RequestType': rtype,
             'X-RequestId': '%s:%d' % (self.client_id, n),
             'X-ClientInfo': '%s:%d' % (self.client_id, 1),
             'X-ClientApplication': CLIENT_APPLICATION, 'Accept': '*/*'}
        if headers:
            for k, v in headers.items():
                if v is None:
                    h.pop(k, None)
                else:
                    h[k] = v
        r = self.http.post(self.url, data=body, headers=h, stream=True, timeout=self.timeout,
                           verify=self.verify)
        resp = Response(rtype, r)
        raw = b''.join(r.iter_content(chunk_size=None))
        resp.code = int(r.headers.get('X-ResponseCode', '-1'))
        if r.status_code == 200 and resp.code == 0:
            resp.meta, resp.done, resp.body = parse_stream(raw)
            resp.code = int(resp.done.get('X-ResponseCode', resp.code))
        else:
            resp.body = raw
        if check and (r.status_code != 200 or resp.code != 0):
            raise MapiHttpError(resp)
        return resp

    def ping(self, **kw):
        return self.post('PING', b'', **kw)


# ---------------------------------------------------------------------------
# EMSMDB (MS-OXCMAPIHTTP 2.2.4)
# ---------------------------------------------------------------------------
class EmsmdbHttp(Endpoint):
    path = '/mapi/emsmdb'

    def __init__(self, base_url, compress=False, xor=True, handle_slots=16, **kw):
        Endpoint.__init__(self, base_url, **kw)
        self.compress = compress
        self.xor = xor
        self.handles = [0xFFFFFFFF] * handle_slots
        self.connect_response = None

    def connect(self, user_dn, flags=0, cpid=1252, lcid=0x409, check=True):
        body = C.Writer().asciiz(user_dn).u32(flags).u32(cpid).u32(lcid).u32(lcid).aux()
        resp = self.post('Connect', body.bytes(), check=check)
        if resp.code != 0:
            return resp
        r = resp.reader()
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), MaxPollingInterval=r.u32(),
                 MaxRetryCount=r.u32(), RetryDelay=r.u32(), DnPrefix=r.asciiz(),
                 DisplayName=r.utf16z(), AuxiliaryBuffer=r.aux())
        r.end()
        d['response'] = resp
        self.connect_response = d
        return d

    def execute_raw(self, rop_buffer, flags=0, max_out=0x40000, check=True):
        """One Execute with rop_buffer (a complete ROP request buffer incl. handle
        table) framed in RPC_HEADER_EXT; returns (dict, [(ext flags, payload)])."""
        framed = EC.frame_ext(rop_buffer, self.compress, self.xor)
        body = C.Writer().u32(flags).u32(len(framed)).raw(framed).u32(max_out).aux()
        resp = self.post('Execute', body.bytes(), check=check)
        if resp.code != 0:
            return dict(response=resp), []
        r = resp.reader()
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), Flags=r.u32())
        out = r.take(r.u32())
        d['AuxiliaryBuffer'] = r.aux()
        r.end()
        d['response'] = resp
        d['RopBuffer'] = out
        return d, (EC.unframe_ext(out) if d['ErrorCode'] == 0 else [])

    def execute(self, rops, flags=0):
        buf = rops.build(self.handles)
        # MaxRopOut: the client's response room (MS-OXCMAPIHTTP 2.2.4.2.1,
        # EcDoRpcExt2's pcbOut), max_out as the DCE/RPC client's
        d, payloads = self.execute_raw(buf, flags, max_out=getattr(self, 'max_out', 0x40000))
        if d['ErrorCode'] != 0:
            raise RuntimeError('Execute failed: 0x%x' % d['ErrorCode'])
        results, handles = rops.parse(payloads[0][1])
        self.handles = handles + self.handles[len(handles):]
        self.last_execute = d
        return results

    def disconnect(self, check=True):
        resp = self.post('Disconnect', C.Writer().aux().bytes(), check=check)
        if resp.code != 0:
            return dict(response=resp)
        r = resp.reader()
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), AuxiliaryBuffer=r.aux())
        r.end()
        return d

    def notification_wait(self, check=True):
        resp = self.post('NotificationWait', C.Writer().u32(0).aux().bytes(), check=check)
        if resp.code != 0:
            return dict(response=resp)
        r = resp.reader()
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), EventPending=r.u32(),
                 AuxiliaryBuffer=r.aux(), response=resp)
        r.end()
        return d


# ---------------------------------------------------------------------------
# NSPI (MS-OXCMAPIHTTP 2.2.5)
# ---------------------------------------------------------------------------
class NspiHttp(Endpoint):
    path = '/mapi/nspi'

    def __init__(self, base_url, **kw):
        Endpoint.__init__(self, base_url, **kw)
        self.stat = C.new_stat()

    def _call(self, rtype, w, check=True):
        resp = self.post(rtype, w.aux().bytes(), check=check)
        if resp.code != 0:
            return None, resp
        r = resp.reader()
        return r, resp

    @staticmethod
    def _finish(r, d, resp):
        d['AuxiliaryBuffer'] = r.aux()
        r.end()
        d['response'] = resp
        return d

    def bind(self, flags=0, stat=None, check=True):
        stat = stat or self.stat
        w = C.Writer().u32(flags)
        C.write_opt_stat(w, stat)
        r, resp = self._call('Bind', w, check)
        if r is None:
            return dict(response=resp)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), ServerGuid=r.take(16))
        return self._finish(r, d, resp)

    def unbind(self):
        r, resp = self._call('Unbind', C.Writer().u32(0))
        return self._finish(r, dict(StatusCode=r.u32(), ErrorCode=r.u32()), resp)

    def compare_mids(self, m1, m2, stat=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat or self.stat)
        w.u32(m1).u32(m2)
        r, resp = self._call('CompareMIds', w)
        return self._finish(r, dict(StatusCode=r.u32(), ErrorCode=r.u32(), Result=r.i32()),
                            resp)

    def dn_to_mid(self, names):
        w = C.Writer().u32(0).flag(True).u32(len(names))
        for n in names:
            w.asciiz(n)
        r, resp = self._call('DNToMId', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), MinimalIds=C.read_opt_tags(r))
        return self._finish(r, d, resp)

    def get_matches(self, restriction, columns=None, row_count=100, stat=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat or self.stat)
        w.flag(False).u32(0)
        w.flag(restriction is not None)
        if restriction is not None:
            C.write_restriction(w, restriction)
        w.flag(False).u32(row_count)
        C.write_opt_tags(w, columns)
        r, resp = self._call('GetMatches', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), State=C.read_opt_stat(r),
                 MinimalIds=C.read_opt_tags(r))
        d['Columns'], d['Rows'] = C.read_colrows(r) if r.flag() else (None, None)
        return self._finish(r, d, resp)

    def get_prop_list(self, mid, codepage=1252, flags=0):
        r, resp = self._call('GetPropList', C.Writer().u32(flags).u32(mid).u32(codepage))
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), PropertyTags=C.read_opt_tags(r))
        return self._finish(r, d, resp)

    def get_props(self, mid, tags=None, flags=0, codepage=None):
        stat = dict(self.stat, CurrentRec=mid)
        if codepage is not None:
            stat['CodePage'] = codepage
        w = C.Writer().u32(flags)
        C.write_opt_stat(w, stat)
        C.write_opt_tags(w, tags)
        r, resp = self._call('GetProps', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), CodePage=r.u32())
        d['PropertyValues'] = C.read_value_list(r) if r.flag() else None
        return self._finish(r, d, resp)

    def get_special_table(self, flags=0x4, version=None):
        w = C.Writer().u32(flags)
        C.write_opt_stat(w, self.stat)
        w.flag(version is not None)
        if version is not None:
            w.u32(version)
        r, resp = self._call('GetSpecialTable', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), CodePage=r.u32())
        d['Version'] = r.u32() if r.flag() else None
        d['Rows'] = [C.read_value_list(r) for _ in range(r.count())] if r.flag() else None
        return self._finish(r, d, resp)

    def get_template_info(self, ttype, dn=None, codepage=1252, locale=0x409, flags=0):
        w = C.Writer().u32(flags).u32(ttype).flag(dn is not None)
        if dn is not None:
            w.asciiz(dn)
        w.u32(codepage).u32(locale)
        r, resp = self._call('GetTemplateInfo', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), CodePage=r.u32())
        d['Row'] = C.read_value_list(r) if r.flag() else None
        return self._finish(r, d, resp)

    def mod_link_att(self, ptag, mid, entry_ids, delete=False):
        w = C.Writer().u32(1 if delete else 0).u32(ptag).u32(mid).flag(True)
        w.u32(len(entry_ids))
        for e in entry_ids:
            w.u32(len(e)).raw(e)
        r, resp = self._call('ModLinkAtt', w)
        return self._finish(r, dict(StatusCode=r.u32(), ErrorCode=r.u32()), resp)

    def mod_props(self, mid, values, remove=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, dict(self.stat, CurrentRec=mid))
        C.write_opt_tags(w, remove)
        w.flag(True)
        C.write_value_list(w, values)
        r, resp = self._call('ModProps', w)
        return self._finish(r, dict(StatusCode=r.u32(), ErrorCode=r.u32()), resp)

    def query_columns(self, flags=0):
        r, resp = self._call('QueryColumns', C.Writer().u32(0).u32(flags))
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), Columns=C.read_opt_tags(r))
        return self._finish(r, d, resp)

    def query_rows(self, count, columns=None, explicit=None, stat=None, flags=0):
        w = C.Writer().u32(flags)
        C.write_opt_stat(w, stat or self.stat)
        explicit = explicit or []
        w.u32(len(explicit))
        for m in explicit:
            w.u32(m)
        w.u32(count)
        C.write_opt_tags(w, columns)
        r, resp = self._call('QueryRows', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), State=C.read_opt_stat(r))
        d['Columns'], d['Rows'] = C.read_colrows(r) if r.flag() else (None, None)
        return self._finish(r, d, resp)

    def resolve_names(self, names, tags=None, stat=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat or self.stat)
        C.write_opt_tags(w, tags)
        w.flag(True).u32(len(names))
        for n in names:
            w.utf16z(n)
        r, resp = self._call('ResolveNames', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), CodePage=r.u32(),
                 MinimalIds=C.read_opt_tags(r))
        d['Columns'], d['Rows'] = C.read_colrows(r) if r.flag() else (None, None)
        return self._finish(r, d, resp)

    def resort_restriction(self, mids, stat=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat or self.stat)
        C.write_opt_tags(w, mids)
        r, resp = self._call('ResortRestriction', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), State=C.read_opt_stat(r),
                 MinimalIds=C.read_opt_tags(r))
        return self._finish(r, d, resp)

    def seek_entries(self, target, columns=None, explicit=None, stat=None):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat or self.stat)
        w.flag(True)
        C.write_tagged(w, 0x3001001F, target)
        C.write_opt_tags(w, explicit)
        C.write_opt_tags(w, columns)
        r, resp = self._call('SeekEntries', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), State=C.read_opt_stat(r))
        d['Columns'], d['Rows'] = C.read_colrows(r) if r.flag() else (None, None)
        return self._finish(r, d, resp)

    def update_stat(self, stat, want_delta=True):
        w = C.Writer().u32(0)
        C.write_opt_stat(w, stat)
        w.flag(want_delta)
        r, resp = self._call('UpdateStat', w)
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), State=C.read_opt_stat(r))
        d['Delta'] = r.i32() if r.flag() else None
        return self._finish(r, d, resp)

    def get_mailbox_url(self, server_dn, flags=0):
        r, resp = self._call('GetMailboxUrl', C.Writer().u32(flags).utf16z(server_dn))
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), ServerUrl=r.utf16z())
        return self._finish(r, d, resp)

    def get_address_book_url(self, user_dn, flags=0):
        r, resp = self._call('GetAddressBookUrl', C.Writer().u32(flags).utf16z(user_dn))
        d = dict(StatusCode=r.u32(), ErrorCode=r.u32(), ServerUrl=r.utf16z())
        return self._finish(r, d, resp)
