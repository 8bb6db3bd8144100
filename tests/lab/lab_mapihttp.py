"""MAPI over HTTP (MS-OXCMAPIHTTP) and Autodiscover (MS-OXDSCLI) for the Exchange lab.

One HTTP/1.1 listener (TLS when a certificate is given) with keep-alive:

  POST /mapi/emsmdb   Connect, Execute, Disconnect, NotificationWait, PING
  POST /mapi/nspi     Bind, Unbind, CompareMIds, DNToMId, GetMatches, GetPropList,
                      GetProps, GetSpecialTable, GetTemplateInfo, ModLinkAtt, ModProps,
                      QueryColumns, QueryRows, ResolveNames, ResortRestriction,
                      SeekEntries, UpdateStat, GetMailboxUrl, GetAddressBookUrl, PING
  POST /autodiscover/autodiscover.xml      POX (EXCH / EXPR / EXHTTP / mapiHttp)
  GET  /autodiscover/autodiscover.json...  v1.0 JSON {"Protocol": ..., "Url": ...}

It serves the same in-process mailbox store (lab_emsmdb.Emsmdb / lab_rops) and
directory (lab_nspi.Directory / Nspi helpers) as the RPC listeners.

Authentication (--http-auth): NTLM (connection-based: the connection that
finished the handshake is authenticated, no other), Basic (every request),
Negotiate with Kerberos (RFC 4559: MIT's acceptor through python3-gssapi with
the lab's --keytab; SPNEGO or a bare krb5 token; the connection is
authenticated, the 200 carries the acceptor's mutual token), or none.
Accounts come from the lab's users file (labauth.UserDb).
"""

import base64
import binascii
import email.utils
import json
import os
import re
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
import uuid as uuidlib
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit, parse_qs, unquote

import labauth
import mapihttp_codec as C
from mapihttp_codec import BodyError
from rpcserver import log
import lab_nspi as NS
from lab_nspi import PR
import lab_emsmdb

SERVER_APPLICATION = 'Exchange/15.01.2507.000'
MAX_BODY = 16 * 1024 * 1024

# X-ResponseCode (MS-OXCMAPIHTTP 2.2.3.3.3)
RC_SUCCESS = 0
RC_UNKNOWN_FAILURE = 1
RC_INVALID_VERB = 2
RC_INVALID_PATH = 3
RC_INVALID_HEADER = 4
RC_INVALID_REQUEST_TYPE = 5
RC_INVALID_CONTEXT_COOKIE = 6
RC_MISSING_HEADER = 7
RC_ANONYMOUS_NOT_ALLOWED = 8
RC_TOO_LARGE = 9
RC_CONTEXT_NOT_FOUND = 10
RC_NO_PRIVILEGE = 11
RC_INVALID_REQUEST_BODY = 12
RC_MISSING_COOKIE = 13
RC_INVALID_SEQUENCE = 15
RC_TEXT = {
    1: 'Unknown Failure', 2: 'Invalid Verb', 3: 'Invalid Path', 4: 'Invalid Header',
    5: 'Invalid Request Type', 6: 'Invalid Context Cookie', 7: 'Missing Header',
    8: 'Anonymous Not Allowed', 9: 'Too Large', 10: 'Context Not Found', 11: 'No Privilege',
    12: 'Invalid Request Body', 13: 'Missing Cookie', 15: 'Invalid Sequence',
}

EMSMDB_TYPES = ('Connect', 'Execute', 'Disconnect', 'NotificationWait', 'PING')
NSPI_TYPES = ('Bind', 'Unbind', 'CompareMIds', 'DNToMId', 'GetMatches', 'GetPropList',
              'GetProps', 'GetSpecialTable', 'GetTemplateInfo', 'ModLinkAtt', 'ModProps',
              'QueryColumns', 'QueryRows', 'ResolveNames', 'ResortRestriction', 'SeekEntries',
              'UpdateStat', 'GetMailboxUrl', 'GetAddressBookUrl', 'PING')
# request types that create a session / need none / need one
CREATES = ('Connect', 'Bind')
SESSIONLESS = ('PING', 'GetMailboxUrl', 'GetAddressBookUrl')
NO_SEQUENCE = ('NotificationWait', 'PING')

ecSuccess = 0
ecAccessDenied = 0x80070005
ecNotFound = 0x8004010F

COOKIE_RE = re.compile(r'^[0-9a-f]{32}$')


class MhError(Exception):
    """A request refused with a non-zero X-ResponseCode."""

    def __init__(self, code, detail=''):
        Exception.__init__(self, '%d %s%s' % (code, RC_TEXT.get(code, '?'),
                                              ': ' + detail if detail else ''))
        self.code = code


class HttpFailure(Exception):
    """A request answered with an HTTP error status (LAB_MH_HTTP_FAIL)."""


HTTP_FAIL = {'lock': threading.Lock(), 'seen': 0}


def http_failure(rop):
    """LAB_MH_HTTP_FAIL=ROPID:N (hex RopId, N from 1): the Nth Execute whose
    first ROP is that RopId is answered HTTP 500 before it runs."""
    knob = os.environ.get('LAB_MH_HTTP_FAIL')
    if not knob:
        return
    rid, nth = knob.split(':')
    try:
        payloads = lab_emsmdb.parse_ext_chain(rop)
        first = payloads[0][1][2] if payloads and len(payloads[0][1]) > 2 else None
    except Exception:
        return
    if first != int(rid, 16):
        return
    with HTTP_FAIL['lock']:
        HTTP_FAIL['seen'] += 1
        hit = HTTP_FAIL['seen'] == int(nth)
    if hit:
        raise HttpFailure('Execute with RopId 0x%02x (LAB_MH_HTTP_FAIL=%s)' % (int(rid, 16), knob))


class MhSession(object):
    def __init__(self, kind, owner, context_id):
        self.kind = kind              # 'emsmdb' | 'nspi'
        self.owner = owner            # authenticated identity (or None)
        self.context_id = context_id
        self.sequence = None
        self.lock = threading.Lock()  # one request at a time per session
        self.emsmdb = None            # lab_emsmdb.EmsmdbSession
        self.nspi_flags = 0
        self.codepage = 1252
        self.seen_mail = 0


def new_token():
    return uuidlib.uuid4().hex


def http_date(t=None):
    return email.utils.formatdate(t, usegmt=True)


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------
class MapiHttpServer(object):
    keytab = None      # --keytab: the Negotiate (Kerberos) acceptor's keys
    def __init__(self, config, directory, nspi, emsmdb, host='127.0.0.1', port=0,
                 tls_cert=None, tls_key=None, auth_modes=('ntlm', 'basic'), userdb=None,
                 pending_period=15.0, pending_delay=0.0, wait_timeout=30.0):
        self.config = config
        self.dir = directory
        self.nspi = nspi
        self.emsmdb = emsmdb
        self.auth_modes = tuple(m for m in auth_modes if m != 'none')
        self.userdb = userdb
        self.pending_period = pending_period
        self.pending_delay = pending_delay
        self.wait_timeout = wait_timeout
        self.sessions = {}
        self.lock = threading.Lock()
        self.tls = None
        if tls_cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(tls_cert, tls_key)
        self.httpd = _Httpd((host, port), _Handler, self)
        self.port = self.httpd.server_address[1]
        self.thread = None

    @property
    def scheme(self):
        return 'https' if self.tls else 'http'

    def base_url(self):
        return '%s://%s:%d' % (self.scheme, self.config.fqdn, self.port)

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, name='mapihttp',
                                       kwargs={'poll_interval': 0.2}, daemon=True)
        self.thread.start()
        log('mapihttp: listening on %s:%d (%s, auth %s)' % (
            self.httpd.server_address[0], self.port, self.scheme,
            ','.join(self.auth_modes) or 'none'))

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- sessions ---------------------------------------------------------
    def add_session(self, s):
        with self.lock:
            self.sessions[s.context_id] = s

    def drop_session(self, s):
        with self.lock:
            self.sessions.pop(s.context_id, None)

    def find_session(self, kind, cookies, owner, rtype):
        ctx = cookies.get('MapiContext')
        if ctx is None:
            raise MhError(RC_MISSING_COOKIE, 'no MapiContext cookie')
        if not COOKIE_RE.match(ctx):
            raise MhError(RC_INVALID_CONTEXT_COOKIE, 'malformed MapiContext')
        with self.lock:
            s = self.sessions.get(ctx)
        if s is None or s.kind != kind:
            raise MhError(RC_CONTEXT_NOT_FOUND, 'unknown MapiContext')
        if s.owner != owner:
            raise MhError(RC_NO_PRIVILEGE, 'session belongs to %s' % s.owner)
        if rtype not in NO_SEQUENCE and cookies.get('MapiSequence') is None:
            raise MhError(RC_MISSING_COOKIE, 'no MapiSequence cookie')
        return s

    def advance_sequence(self, s, seq, new):
        with self.lock:
            if seq != s.sequence:
                raise MhError(RC_INVALID_SEQUENCE, 'stale MapiSequence')
            s.sequence = new

    # -- mailbox URLs -----------------------------------------------------
    def mailbox_id(self, user):
        g = uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'mbx:' + user.dn.lower())
        return '%s@%s' % (g, self.config.domain)

    def emsmdb_url(self, user):
        return '%s/mapi/emsmdb/?MailboxId=%s' % (self.base_url(), self.mailbox_id(user))

    def nspi_url(self, user):
        return '%s/mapi/nspi/?MailboxId=%s' % (self.base_url(), self.mailbox_id(user))

    def user_for_identity(self, identity):
        """Directory user for 'DOMAIN\\user' (None if anonymous / not in the directory)."""
        if not identity:
            return None
        name = identity.split('\\')[-1].lower()
        for u in self.dir.users:
            if u.alias.lower() == name:
                return u
        return None

    def user_for_email(self, addr):
        a = addr.strip().lower()
        for u in self.dir.users:
            smtp = u.props.get(PR['SMTP_ADDRESS'], (0, ''))[1].lower()
            if a == smtp or a == u.alias.lower():
                return u
        return None


class _Httpd(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, lab):
        self.lab = lab
        HTTPServer.__init__(self, addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        if self.lab.tls is not None:
            # handshake in the connection's own thread (on first read)
            sock = self.lab.tls.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        log('mapihttp: connection %s: error %s' % (client_address, _exc()))


def _exc():
    e = sys.exc_info()[1]
    return '%s: %s' % (type(e).__name__, e)


# ---------------------------------------------------------------------------
# per-connection handler
# ---------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def version_string(self):
        return 'Microsoft-IIS/10.0'

    def setup(self):
        BaseHTTPRequestHandler.setup(self)
        self.lab = self.server.lab
        self.ntlm = None            # NtlmServerContext of this connection
        self.conn_identity = None   # set once NTLM completed on this connection
        self.neg_token = None       # the Kerberos acceptor's mutual token, for the 200

    def log_message(self, fmt, *args):
        pass

    # -- plumbing -------------------------------------------------------------
    def _read_body(self):
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            data = b''
            while True:
                line = self.rfile.readline(100)
                try:
                    n = int(line.split(b';')[0].strip(), 16)
                except ValueError:
                    raise MhError(RC_INVALID_REQUEST_BODY, 'bad chunk size')
                if n == 0:
                    while self.rfile.readline(1000) not in (b'\r\n', b'\n', b''):
                        pass
                    return data
                if len(data) + n > MAX_BODY:
                    raise MhError(RC_TOO_LARGE)
                data += self.rfile.read(n)
                self.rfile.readline(10)
        try:
            n = int(self.headers.get('Content-Length', '0'))
        except ValueError:
            n = -1
        if n < 0:
            raise MhError(RC_INVALID_HEADER, 'bad Content-Length')
        if n > MAX_BODY:
            raise MhError(RC_TOO_LARGE, '%d bytes' % n)
        return self.rfile.read(n) if n else b''

    def _send_mutual(self):
        """RFC 4559 5: the Kerberos acceptor's token goes with the first
        answer after the logon (once per connection)."""
        if self.neg_token:
            self.send_header('WWW-Authenticate',
                             'Negotiate ' + base64.b64encode(self.neg_token).decode())
            self.neg_token = None

    def _send_simple(self, status, body=b'', ctype='text/html', headers=()):
        self.send_response(status)
        if status < 300:
            self._send_mutual()
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != 'HEAD':
            self.wfile.write(body)

    def _cookies(self):
        out = {}
        for h in self.headers.get_all('Cookie') or []:
            for part in h.split(';'):
                k, sep, v = part.strip().partition('=')
                if sep:
                    out[k.strip()] = v.strip()
        return out

    # -- authentication ----------------------------------------------------
    def _challenge(self, token=None, close=False, scheme='NTLM'):
        hdrs = []
        if token is not None:
            hdrs.append(('WWW-Authenticate', '%s %s' % (scheme, base64.b64encode(token).decode())))
        else:
            if 'ntlm' in self.lab.auth_modes:
                hdrs.append(('WWW-Authenticate', 'NTLM'))
            if 'negotiate' in self.lab.auth_modes:
                hdrs.append(('WWW-Authenticate', 'Negotiate'))
            if 'basic' in self.lab.auth_modes:
                hdrs.append(('WWW-Authenticate', 'Basic realm="%s"' % self.lab.config.fqdn))
        if close:
            hdrs.append(('Connection', 'close'))
            self.close_connection = True
        self._send_simple(401, b'<html><body>401 Unauthorized</body></html>\r\n',
                          headers=hdrs)

    def _authenticate(self):
        """Returns (True, identity) to go on, or (False, None) after answering 401."""
        modes = self.lab.auth_modes
        if not modes:
            return True, None
        if self.conn_identity is not None:
            return True, self.conn_identity
        hdr = self.headers.get('Authorization', '')
        scheme, _, cred = hdr.partition(' ')
        scheme = scheme.lower()
        cred = cred.strip()
        if scheme == 'basic' and 'basic' in modes:
            try:
                user, _, pw = base64.b64decode(cred, validate=True).decode('utf-8').partition(':')
            except (binascii.Error, UnicodeDecodeError):
                log('mapihttp: auth: malformed Basic credentials')
                self._challenge()
                return False, None
            domain = ''
            if '\\' in user:
                domain, _, user = user.partition('\\')
            elif '@' in user:
                user, _, domain = user.partition('@')
                domain = '' if '.' in domain else domain
            entry = self.lab.userdb.lookup(user, domain) if self.lab.userdb and user else None
            if entry is None or entry[2] != pw:
                log('mapihttp: auth: Basic logon refused for %r' % user)
                self._challenge()
                return False, None
            ident = '%s\\%s' % (entry[1], entry[0])
            log('mapihttp: auth: Basic logon ok user=%s' % ident)
            return True, ident
        if scheme == 'negotiate' and 'negotiate' in modes and \
                not base64.b64decode(cred + '===')[:8].startswith(b'NTLMSSP'):
            return self._negotiate(cred)
        if scheme in ('ntlm', 'negotiate') and 'ntlm' in modes:
            try:
                token = base64.b64decode(cred, validate=True)
            except binascii.Error:
                token = b''
            mtype = struct.unpack('<L', token[8:12])[0] if len(token) >= 12 and \
                token[:8] == b'NTLMSSP\x00' else 0
            if mtype == 1:
                a = self.lab.config
                self.ntlm = labauth.NtlmServerContext(self.lab.userdb, a.server_name,
                                                      labauth.DEFAULT_DOMAIN, a.domain)
                try:
                    ch = self.ntlm.negotiate(token)
                except Exception as e:
                    log('mapihttp: auth: bad NTLM NEGOTIATE: %s' % e)
                    self.ntlm = None
                    self._challenge()
                    return False, None
                log('mapihttp: auth: NTLM NEGOTIATE -> CHALLENGE')
                self._challenge(ch, scheme='Negotiate' if scheme == 'negotiate' else 'NTLM')
                return False, None
            if mtype == 3 and self.ntlm is not None:
                try:
                    ident = self.ntlm.authenticate(token)
                except labauth.AuthError as e:
                    log('mapihttp: auth: NTLM logon refused: %s' % e)
                    self.ntlm = None
                    self._challenge(close=True)
                    return False, None
                except Exception as e:
                    log('mapihttp: auth: malformed NTLM AUTHENTICATE: %s' % e)
                    self.ntlm = None
                    self._challenge(close=True)
                    return False, None
                self.conn_identity = ident
                log('mapihttp: auth: NTLM logon ok user=%s (this connection)' % ident)
                return True, ident
            log('mapihttp: auth: unexpected NTLM message type %d' % mtype)
            self._challenge()
            return False, None
        log('mapihttp: auth: %s %s -> 401' % (self.command, self.path))
        self._challenge()
        return False, None

    def _negotiate(self, cred):
        """Negotiate (RFC 4559) with Kerberos: one leg, MIT's acceptor with the
        lab's keytab (no acceptor name: any key in it)."""
        import gssapi.raw as graw
        try:
            token = base64.b64decode(cred, validate=True)
            creds = graw.acquire_cred_from({b'keytab': (self.lab.keytab or '').encode()},
                                           usage='accept').creds
            res = graw.accept_sec_context(token, acceptor_creds=creds)
        except Exception as e:
            log('mapihttp: auth: Negotiate refused: %s' % str(e).splitlines()[0][:200])
            self._challenge(close=True)
            return False, None
        if res.more_steps:
            log('mapihttp: auth: Negotiate wants another leg (not Kerberos)')
            self._challenge(close=True)
            return False, None
        ident = graw.display_name(res.initiator_name).name.decode()
        self.neg_token = res.token
        self.conn_identity = ident
        log('mapihttp: auth: Negotiate (Kerberos) logon ok user=%s (this connection)' % ident)
        return True, ident

    # -- verbs -------------------------------------------------------------------
    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_PUT(self):
        self._dispatch()

    def do_DELETE(self):
        self._dispatch()

    def _dispatch(self):
        try:
            body = self._read_body()
        except MhError as e:
            self.close_connection = True
            return self._mh_error(e)
        ok, ident = self._authenticate()
        if not ok:
            return
        path = urlsplit(self.path).path.rstrip('/').lower()
        if path in ('/mapi/emsmdb', '/mapi/nspi'):
            return self._mapi(path.rsplit('/', 1)[1], body, ident)
        if path.startswith('/mapi/'):
            return self._mh_error(MhError(RC_INVALID_PATH, path))
        if path == '/autodiscover/autodiscover.xml':
            return self._autodiscover_pox(body, ident)
        if path.startswith('/autodiscover/autodiscover.json'):
            return self._autodiscover_json(ident)
        if path.split('/')[1:2] and path.split('/')[1] in WEB_PATHS:
            # EWS, OAB, ECP, OWA: no service behind them, an answer that says so
            log('mapihttp: %s %s (web path)' % (self.command, self.path))
            return self._send_simple(200, ('<html><body>lab %s</body></html>\r\n' %
                                           path.split('/')[1]).encode())
        self._send_simple(404, b'<html><body>404 Not Found</body></html>\r\n')

    # -- MAPI over HTTP ------------------------------------------------------
    def _mh_error(self, err):
        log('mapihttp: %s %s -> X-ResponseCode %s' % (self.command, self.path, err))
        body = ('<html><head><title>MAPI over HTTP error</title></head><body>'
                '<h1>Diagnostic information</h1><p>%s</p></body></html>\r\n'
                % RC_TEXT.get(err.code, 'error')).encode()
        hdrs = [('X-ResponseCode', str(err.code)),
                ('X-ServerApplication', SERVER_APPLICATION), ('Cache-Control', 'private')]
        for h in ('X-RequestType', 'X-RequestId', 'X-ClientInfo'):
            if self.headers.get(h) is not None:
                hdrs.append((h, self.headers.get(h)))
        self._send_simple(200, body, headers=hdrs)

    def _mapi(self, endpoint, body, ident):
        try:
            if self.command != 'POST':
                raise MhError(RC_INVALID_VERB, self.command)
            rtype = self.headers.get('X-RequestType')
            for h in ('X-RequestType', 'X-RequestId', 'X-ClientInfo'):
                if not self.headers.get(h):
                    raise MhError(RC_MISSING_HEADER, h)
            ctype = self.headers.get('Content-Type', '').split(';')[0].strip().lower()
            if ctype not in ('application/mapi-http', 'application/octet-stream'):
                raise MhError(RC_INVALID_HEADER, 'Content-Type %r' % ctype)
            types = EMSMDB_TYPES if endpoint == 'emsmdb' else NSPI_TYPES
            match = [t for t in types if t.lower() == rtype.lower()]
            if not match:
                raise MhError(RC_INVALID_REQUEST_TYPE, rtype)
            rtype = match[0]
            if not ident and self.lab.auth_modes:
                raise MhError(RC_ANONYMOUS_NOT_ALLOWED)
            cookies = self._cookies()
            session = None
            if rtype not in CREATES and rtype not in SESSIONLESS:
                session = self.lab.find_session(endpoint, cookies, ident, rtype)
            elif rtype == 'PING' and 'MapiContext' in cookies:
                session = self.lab.find_session(endpoint, cookies, ident, rtype)
            handler = getattr(self, 'mh_%s_%s' % (endpoint, rtype.lower()))
            # parse before answering so that a bad body gets X-ResponseCode 12
            try:
                work = handler(C.Reader(body), session, ident)
            except HttpFailure as e:
                log('mapihttp: %s -> HTTP 500' % e)
                return self._send_simple(500, b'<html><body>500 lab failure</body></html>\r\n')
            except BodyError as e:
                raise MhError(RC_INVALID_REQUEST_BODY, str(e))
            except (ValueError, TypeError, KeyError, IndexError, struct.error) as e:
                raise MhError(RC_INVALID_REQUEST_BODY, '%s: %s' % (type(e).__name__, e))
            new_seq = new_token()
            if session is not None and rtype not in NO_SEQUENCE:
                # check and advance in one step: of two requests with the same
                # MapiSequence only one runs
                self.lab.advance_sequence(session, cookies.get('MapiSequence'), new_seq)
        except MhError as e:
            return self._mh_error(e)
        self._stream(endpoint, rtype, session, work, new_seq)

    def _stream(self, endpoint, rtype, session, work, new_seq):
        """Answers 200 with chunked PROCESSING / PENDING... / DONE + body.  work(target)
        runs in a helper thread and returns the response body; target is the session
        (a new one for Connect / Bind, which work() marks .created on success)."""
        start = time.time()
        cookies = []
        target = session
        result = {}
        if rtype in CREATES:
            target = MhSession(endpoint, None, new_token())
            target.sequence = new_seq
        drop = rtype in ('Disconnect', 'Unbind')
        secure = '; secure' if self.lab.tls else ''
        path = '/mapi/' + endpoint
        if target is not None and not drop:
            cookies.append('MapiContext=%s; path=%s%s; HttpOnly' % (target.context_id, path,
                                                                    secure))
            if rtype not in NO_SEQUENCE:
                cookies.append('MapiSequence=%s; path=%s%s; HttpOnly' % (new_seq, path, secure))
        elif drop:
            for c in ('MapiContext', 'MapiSequence'):
                cookies.append('%s=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=%s%s' % (
                    c, path, secure))

        def run():
            try:
                if self.lab.pending_delay and rtype not in ('NotificationWait', 'PING'):
                    time.sleep(self.lab.pending_delay)
                if session is not None and rtype != 'NotificationWait':
                    with session.lock:
                        result['body'] = work(target)
                else:
                    result['body'] = work(target)
            except Exception as e:     # logged, answered with X-ResponseCode 1
                log('mapihttp: %s failed: %s\n%s' % (rtype, e, traceback.format_exc()))
                result['error'] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.send_response(200)
        self._send_mutual()
        for k, v in (('Content-Type', 'application/mapi-http'), ('Cache-Control', 'private'),
                     ('X-RequestType', rtype), ('X-RequestId', self.headers.get('X-RequestId')),
                     ('X-ClientInfo', self.headers.get('X-ClientInfo')),
                     ('X-ResponseCode', '0'),
                     ('X-PendingPeriod', str(int(self.lab.pending_period * 1000))),
                     ('X-ExpirationInfo', '900000'),
                     ('X-ServerApplication', SERVER_APPLICATION),
                     ('Transfer-Encoding', 'chunked')):
            self.send_header(k, v)
        for c in cookies:
            self.send_header('Set-Cookie', c)
        self.end_headers()
        self._chunk(b'PROCESSING\r\n')
        pending = 0
        while True:
            t.join(self.lab.pending_period)
            if not t.is_alive():
                break
            self._chunk(b'PENDING\r\n')
            pending += 1
        if 'error' in result:
            code, body = RC_UNKNOWN_FAILURE, b''
        else:
            code, body = RC_SUCCESS, result['body']
            if rtype in CREATES and target.context_id is not None and \
                    getattr(target, 'created', False):
                self.lab.add_session(target)
            if drop and session is not None:
                self.lab.drop_session(session)
        ms = int((time.time() - start) * 1000)
        if code == RC_SUCCESS and os.environ.get('LAB_MH_CODE_IN_HEAD_ONLY'):
            # gromox's form: X-ResponseCode only in the HTTP head
            meta = ('DONE\r\nX-ElapsedTime: %d\r\nX-StartTime: %s\r\n\r\n'
                    % (ms, http_date(start))).encode()
        else:
            meta = ('DONE\r\nX-ResponseCode: %d\r\nX-ElapsedTime: %d\r\nX-StartTime: %s\r\n\r\n'
                    % (code, ms, http_date(start))).encode()
        self._chunk(meta + body)
        self.wfile.write(b'0\r\n\r\n')
        self.wfile.flush()
        log('mapihttp: %s %s -> %d bytes, %d PENDING, %d ms' % (
            endpoint, rtype, len(body), pending, ms))

    def _chunk(self, data):
        self.wfile.write(b'%x\r\n' % len(data) + data + b'\r\n')
        self.wfile.flush()

    # -- EMSMDB request types (MS-OXCMAPIHTTP 2.2.4.1 / 2.2.4.2) -------------
    def mh_emsmdb_connect(self, r, _session, ident):
        user_dn = r.asciiz()
        flags = r.u32()
        cpid = r.u32()
        lcid_sort = r.u32()
        lcid_string = r.u32()
        r.aux()
        r.end()
        em = self.lab.emsmdb
        user = em._user(user_dn)
        if user is not None and ident is not None:
            me = self.lab.user_for_identity(ident)
            if me is not user and not lab_emsmdb.full_access(ident):
                log('mapihttp: Connect as %s for %r refused' % (ident, user_dn))
                user = 'denied'

        def work(target):
            w = C.Writer()
            if user is None or user == 'denied':
                code = lab_emsmdb.ecUnknownUser if user is None else ecAccessDenied
                w.u32(0).u32(code).u32(0).u32(0).u32(0).asciiz('').utf16z('').aux()
            else:
                target.owner = ident
                target.emsmdb = em.new_session(user, ident)
                target.seen_mail = em.store.new_mail_count(user.dn)
                target.created = True
                w.u32(0).u32(ecSuccess).u32(60000).u32(6).u32(10000)
                w.asciiz(self.lab.config.user_server_dn(user.dn))
                w.utf16z(user.display_name()).aux()
                code = ecSuccess
            log('mapihttp: emsmdb Connect %r flags=0x%x cpid=%d lcid=%x/%x -> 0x%x' % (
                user_dn, flags, cpid, lcid_sort, lcid_string, code))
            return w.bytes()
        return work

    def mh_emsmdb_execute(self, r, session, ident):
        flags = r.u32()
        rop = r.take(r.u32())
        max_out = r.u32()
        r.aux()
        r.end()
        http_failure(rop)
        em = self.lab.emsmdb

        def work(target):
            code, out, _ = em.execute_ext(session.emsmdb, flags, rop, max_out,
                                          what='mapihttp Execute')
            w = C.Writer().u32(0).u32(code).u32(0).u32(len(out)).raw(out).aux()
            return w.bytes()
        return work

    def mh_emsmdb_disconnect(self, r, session, ident):
        r.aux()
        r.end()

        def work(target):
            log('mapihttp: emsmdb Disconnect %s' % session.emsmdb.user.dn)
            return C.Writer().u32(0).u32(ecSuccess).aux().bytes()
        return work

    def mh_emsmdb_notificationwait(self, r, session, ident):
        flags = r.u32()
        r.aux()
        r.end()
        store = self.lab.emsmdb.store

        def work(target):
            dn = session.emsmdb.user.dn
            log('mapihttp: NotificationWait flags=0x%x parks (up to %g s)' % (
                flags, self.lab.wait_timeout))
            n = store.wait_new_mail(dn, session.seen_mail, self.lab.wait_timeout)
            pending = n > session.seen_mail
            session.seen_mail = n
            log('mapihttp: NotificationWait -> EventPending=%d' % pending)
            return C.Writer().u32(0).u32(ecSuccess).u32(1 if pending else 0).aux().bytes()
        return work

    def _ping(self, r, session, ident):
        r.end()
        return lambda target: b''

    mh_emsmdb_ping = _ping
    mh_nspi_ping = _ping

    # -- NSPI request types (MS-OXCMAPIHTTP 2.2.5) ---------------------------------
    def mh_nspi_bind(self, r, _session, ident):
        flags = r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        r.aux()
        r.end()
        nspi = self.lab.nspi

        def work(target):
            target.owner = ident
            target.nspi_flags = flags
            target.codepage = stat['CodePage']
            target.created = True
            log('mapihttp: nspi Bind flags=0x%x codepage=%d' % (flags, stat['CodePage']))
            return C.Writer().u32(0).u32(ecSuccess).raw(nspi.server_guid).aux().bytes()
        return work

    def mh_nspi_unbind(self, r, session, ident):
        r.u32()
        r.aux()
        r.end()
        return lambda target: C.Writer().u32(0).u32(1).aux().bytes()   # UnbindSuccess

    def _nspi(self, name, *args):
        core = NspiCore(self.lab)
        return lambda target: getattr(core, name)(*args)

    def mh_nspi_comparemids(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        m1, m2 = r.u32(), r.u32()
        r.aux()
        r.end()
        return self._nspi('compare_mids', stat, m1, m2)

    def mh_nspi_dntomid(self, r, session, ident):
        r.u32()
        names = []
        if r.flag():
            names = [r.asciiz() for _ in range(r.count())]
        r.aux()
        r.end()
        return self._nspi('dn_to_mid', names)

    def mh_nspi_getmatches(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        C.read_opt_tags(r)                     # reserved MinimalIds
        r.u32()                                # InterfaceOptionFlags
        filt = C.read_restriction(r) if r.flag() else None
        propname = (r.take(16), r.u32()) if r.flag() else None
        count = r.u32()
        cols = C.read_opt_tags(r)
        r.aux()
        r.end()
        return self._nspi('get_matches', stat, filt, propname, count, cols)

    def mh_nspi_getproplist(self, r, session, ident):
        flags, mid, cp = r.u32(), r.u32(), r.u32()
        r.aux()
        r.end()
        return self._nspi('get_prop_list', flags, mid, cp)

    def mh_nspi_getprops(self, r, session, ident):
        flags = r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        tags = C.read_opt_tags(r)
        r.aux()
        r.end()
        return self._nspi('get_props', flags, stat, tags)

    def mh_nspi_getspecialtable(self, r, session, ident):
        flags = r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        version = r.u32() if r.flag() else None
        r.aux()
        r.end()
        return self._nspi('get_special_table', flags, stat, version)

    def mh_nspi_gettemplateinfo(self, r, session, ident):
        flags, ttype = r.u32(), r.u32()
        dn = r.asciiz() if r.flag() else None
        cp, locale = r.u32(), r.u32()
        r.aux()
        r.end()
        return self._nspi('get_template_info', flags, ttype, dn, cp, locale)

    def mh_nspi_modlinkatt(self, r, session, ident):
        flags, ptag, mid = r.u32(), r.u32(), r.u32()
        eids = []
        if r.flag():
            eids = [r.take(r.u32()) for _ in range(r.count())]
        r.aux()
        r.end()
        return self._nspi('mod_link_att', flags, ptag, mid, eids)

    def mh_nspi_modprops(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        remove = C.read_opt_tags(r)
        values = C.read_value_list(r) if r.flag() else []
        r.aux()
        r.end()
        return self._nspi('mod_props', stat, remove, values)

    def mh_nspi_querycolumns(self, r, session, ident):
        r.u32()
        flags = r.u32()
        r.aux()
        r.end()
        return self._nspi('query_columns', flags)

    def mh_nspi_queryrows(self, r, session, ident):
        flags = r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        n = r.count()
        etable = [r.u32() for _ in range(n)] if n else None
        count = r.u32()
        cols = C.read_opt_tags(r)
        r.aux()
        r.end()
        return self._nspi('query_rows', flags, stat, etable, count, cols)

    def mh_nspi_resolvenames(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        tags = C.read_opt_tags(r)
        names = []
        if r.flag():
            names = [r.utf16z() for _ in range(r.count())]
        r.aux()
        r.end()
        return self._nspi('resolve_names', stat, tags, names)

    def mh_nspi_resortrestriction(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        mids = C.read_opt_tags(r) or []
        r.aux()
        r.end()
        return self._nspi('resort_restriction', stat, mids)

    def mh_nspi_seekentries(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        target = C.read_tagged(r) if r.flag() else None
        etable = C.read_opt_tags(r)
        cols = C.read_opt_tags(r)
        r.aux()
        r.end()
        return self._nspi('seek_entries', stat, target, etable, cols)

    def mh_nspi_updatestat(self, r, session, ident):
        r.u32()
        stat = C.read_opt_stat(r) or C.new_stat()
        want_delta = r.flag()
        r.aux()
        r.end()
        return self._nspi('update_stat', stat, want_delta)

    def mh_nspi_getmailboxurl(self, r, session, ident):
        flags = r.u32()
        dn = r.utf16z()
        r.aux()
        r.end()
        return self._nspi('get_mailbox_url', flags, dn)

    def mh_nspi_getaddressbookurl(self, r, session, ident):
        flags = r.u32()
        dn = r.utf16z()
        r.aux()
        r.end()
        return self._nspi('get_address_book_url', flags, dn, ident)

    # -- Autodiscover ----------------------------------------------------------
    def _autodiscover_pox(self, body, ident):
        if self.command != 'POST':
            return self._send_simple(405, b'', headers=[('Allow', 'POST')])
        email_addr = schema = None
        try:
            root = ET.fromstring(body)
            for el in root.iter():
                name = el.tag.rsplit('}', 1)[-1]
                if name == 'EMailAddress':
                    email_addr = (el.text or '').strip()
                elif name == 'AcceptableResponseSchema':
                    schema = (el.text or '').strip()
        except ET.ParseError as e:
            log('mapihttp: autodiscover: bad XML: %s' % e)
        out = autodiscover_xml(self.lab, email_addr, schema,
                               self.headers.get('X-MapiHttpCapability'))
        log('mapihttp: autodiscover POX %r -> %d bytes' % (email_addr, len(out)))
        self._send_simple(200, out, ctype='text/xml; charset=utf-8')

    def _autodiscover_json(self, ident):
        u = urlsplit(self.path)
        q = dict((k.lower(), v[0]) for k, v in parse_qs(u.query).items())
        rest = unquote(u.path)[len('/autodiscover/autodiscover.json'):].strip('/')
        addr = q.get('email')
        if rest.lower().startswith('v1.0/'):
            addr = rest[5:]
        proto = q.get('protocol', '')
        base = self.lab.base_url()
        urls = {'autodiscoverv1': base + '/autodiscover/autodiscover.xml',
                'ews': base + '/EWS/Exchange.asmx',
                'activesync': base + '/Microsoft-Server-ActiveSync',
                'mapihttp': base + '/mapi/emsmdb/'}
        if not addr or self.lab.user_for_email(addr) is None:
            status, obj = 404, {'ErrorCode': 'UserNotFound',
                                'ErrorMessage': 'The user was not found'}
        elif proto.lower() not in urls:
            status, obj = 400, {'ErrorCode': 'ProtocolNotSupported',
                                'ErrorMessage': 'The given protocol value \'%s\' is invalid.'
                                % proto}
        else:
            name = {'autodiscoverv1': 'AutodiscoverV1', 'ews': 'Ews',
                    'activesync': 'ActiveSync', 'mapihttp': 'MapiHttp'}[proto.lower()]
            status, obj = 200, {'Protocol': name, 'Url': urls[proto.lower()]}
        log('mapihttp: autodiscover JSON %r %r -> %d' % (addr, proto, status))
        self._send_simple(status, json.dumps(obj).encode(), ctype='application/json')


# ---------------------------------------------------------------------------
# Autodiscover POX (MS-OXDSCLI)
# ---------------------------------------------------------------------------
NS_RESP = 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006'
NS_OUTLOOK = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'


def _x(s):
    return (s or '').replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


WEB_PATHS = ('ews', 'oab', 'ecp', 'owa')


def autodiscover_xml(lab, email_addr, schema, mapihttp_cap):
    c = lab.config
    user = lab.user_for_email(email_addr) if email_addr else None
    head = '<?xml version="1.0" encoding="utf-8"?>\r\n<Autodiscover xmlns="%s">\r\n' % NS_RESP
    if user is None or (schema and schema != NS_OUTLOOK):
        code, msg = (500, 'The email address can\'t be found.') if user is None else \
            (600, 'Invalid Request')
        return (head + '  <Response>\r\n    <Error Time="%s" Id="2477272013">\r\n'
                '      <ErrorCode>%d</ErrorCode>\r\n      <Message>%s</Message>\r\n'
                '      <DebugData />\r\n    </Error>\r\n  </Response>\r\n</Autodiscover>\r\n'
                % (time.strftime('%H:%M:%S'), code, msg)).encode()
    base = lab.base_url()
    mbx = lab.mailbox_id(user)
    smtp = user.props[PR['SMTP_ADDRESS']][1]
    ex_urls = ''.join('        <%s>%s</%s>\r\n' % (k, _x(v), k) for k, v in (
        ('ASUrl', base + '/EWS/Exchange.asmx'), ('EwsUrl', base + '/EWS/Exchange.asmx'),
        ('OOFUrl', base + '/EWS/Exchange.asmx'), ('OABUrl', base + '/OAB/')) +
        ((('EcpUrl', base + '/ecp/'),) if c.web_urls else ()))
    protos = []
    protos.append('      <Protocol>\r\n        <Type>EXCH</Type>\r\n'
                  '        <Server>%s</Server>\r\n        <ServerDN>%s</ServerDN>\r\n'
                  '        <ServerVersion>73C18880</ServerVersion>\r\n'
                  '        <MdbDN>%s</MdbDN>\r\n'
                  '        <PublicFolderServer>%s</PublicFolderServer>\r\n'
                  '        <Port>0</Port>\r\n        <DirectoryPort>0</DirectoryPort>\r\n'
                  '        <ReferralPort>0</ReferralPort>\r\n%s'
                  '      </Protocol>\r\n' % (_x(mbx), _x(c.user_server_dn(user.dn)),
                                              _x(c.user_mdb_dn(user.dn)), c.fqdn,
                                              ex_urls))
    for ptype in ('EXPR', 'EXHTTP'):
        protos.append('      <Protocol>\r\n        <Type>%s</Type>\r\n'
                      '        <Server>%s</Server>\r\n        <SSL>%s</SSL>\r\n'
                      '        <AuthPackage>Ntlm</AuthPackage>\r\n%s'
                      '      </Protocol>\r\n' % (ptype, c.fqdn, 'On' if lab.tls else 'Off',
                                                  ex_urls))
    if c.web_urls:
        protos.append('      <Protocol>\r\n        <Type>WEB</Type>\r\n        <Internal>\r\n'
                      '          <OWAUrl AuthenticationMethod="Ntlm">%s</OWAUrl>\r\n'
                      '        </Internal>\r\n      </Protocol>\r\n' % _x(base + '/owa/'))
    protos.append('      <Protocol Type="mapiHttp" Version="1">\r\n'
                  '        <MailStore>\r\n          <InternalUrl>%s</InternalUrl>\r\n'
                  '          <ExternalUrl>%s</ExternalUrl>\r\n        </MailStore>\r\n'
                  '        <AddressBook>\r\n          <InternalUrl>%s</InternalUrl>\r\n'
                  '          <ExternalUrl>%s</ExternalUrl>\r\n        </AddressBook>\r\n'
                  '      </Protocol>\r\n' % ((_x(lab.emsmdb_url(user)),) * 2 +
                                             (_x(lab.nspi_url(user)),) * 2))
    return (head + '  <Response xmlns="%s">\r\n    <User>\r\n'
            '      <DisplayName>%s</DisplayName>\r\n      <LegacyDN>%s</LegacyDN>\r\n'
            '      <AutoDiscoverSMTPAddress>%s</AutoDiscoverSMTPAddress>\r\n'
            '      <DeploymentId>%s</DeploymentId>\r\n    </User>\r\n'
            '    <Account>\r\n      <AccountType>email</AccountType>\r\n'
            '      <Action>settings</Action>\r\n      <MicrosoftOnline>False</MicrosoftOnline>\r\n'
            '%s    </Account>\r\n  </Response>\r\n</Autodiscover>\r\n' % (
                NS_OUTLOOK, _x(user.display_name()), _x(user.dn), _x(smtp),
                uuidlib.uuid5(uuidlib.NAMESPACE_URL, 'lab-deployment'), ''.join(protos))
            ).encode()


# ---------------------------------------------------------------------------
# NSPI over MAPI/HTTP: the operations on the shared directory, answering with
# MS-OXCMAPIHTTP 2.2.5 response bodies.  Values and positioning come from
# lab_nspi.Nspi (the RPC server's helpers), so both transports agree.
# ---------------------------------------------------------------------------
class NspiCore(object):
    def __init__(self, lab):
        self.lab = lab
        self.nspi = lab.nspi
        self.dir = lab.dir

    def cells(self, obj, cols, flags, cp):
        return [self.nspi._value_for(obj, t, flags, cp) for t in cols]

    def rows(self, objs, cols, flags, cp):
        return [self.cells(o, cols, flags, cp) for o in objs]

    @staticmethod
    def head(code, w=None):
        w = w or C.Writer()
        return w.u32(0).u32(code)

    # CompareMIds: StatusCode, ErrorCode, Result
    def compare_mids(self, stat, m1, m2):
        code, result = self.nspi.compare(stat['ContainerID'], m1, m2)
        log('mapihttp: nspi CompareMIds 0x%x 0x%x -> %d (0x%x)' % (m1, m2, result, code))
        return self.head(code).i32(result).aux().bytes()

    def dn_to_mid(self, names):
        mids = []
        for n in names:
            o = self.dir.lookup_dn(n)
            mids.append(o.mid if o is not None else 0)
        log('mapihttp: nspi DNToMId %s -> %s' % (names, ['0x%x' % m for m in mids]))
        w = self.head(ecSuccess)
        C.write_opt_tags(w, mids)
        return w.aux().bytes()

    def get_matches(self, stat, filt, propname, requested, cols):
        try:
            code, matches = self.nspi.matches(stat, None if filt is None else _ndr_like(filt))
        except Exception as e:
            log('mapihttp: nspi GetMatches: restriction not evaluable: %s' % e)
            code, matches = NS.TOO_COMPLEX, None
        if matches is not None and len(matches) > requested:
            code = NS.TABLE_TOO_BIG
            matches = None
        out = dict(stat)
        w = self.head(code)
        if matches is not None:
            out.update(CurrentRec=NS.MID_BEGINNING_OF_TABLE, NumPos=0, TotalRecs=len(matches))
        C.write_opt_stat(w, out)
        if matches is None:
            w.flag(False).flag(False)
        else:
            C.write_opt_tags(w, [o.mid for o in matches])
            if cols is None:
                w.flag(False)
            else:
                w.flag(True)
                C.write_colrows(w, cols, self.rows(matches, cols, 0, stat['CodePage']))
        log('mapihttp: nspi GetMatches container=%d -> %s matches, 0x%x' % (
            stat['ContainerID'], None if matches is None else len(matches), code))
        return w.aux().bytes()

    def get_prop_list(self, flags, mid, cp):
        obj = self.dir.by_mid.get(mid)
        w = self.head(ecSuccess if obj is not None else NS.NOT_FOUND)
        C.write_opt_tags(w, None if obj is None else
                         self.nspi.prop_tags_of(obj, cp == NS.CP_WINUNICODE))
        log('mapihttp: nspi GetPropList mid=0x%x -> %s' % (mid, obj is not None))
        return w.aux().bytes()

    def get_props(self, flags, stat, tags):
        obj = self.dir.by_mid.get(stat['CurrentRec'])
        cp = stat['CodePage']
        if tags is None:
            tags = self.nspi.prop_tags_of(obj, cp == NS.CP_WINUNICODE) if obj is not None \
                else []
        if obj is None and not tags:
            w = self.head(NS.NOT_FOUND).u32(cp).flag(False)
            code = NS.NOT_FOUND
        else:
            cells = self.cells(obj, tags, flags, cp)
            code = NS.ERRORS_RETURNED if any(t & 0xFFFF == C.PT_ERROR for t, _ in cells) \
                else ecSuccess
            w = self.head(code).u32(cp).flag(True)
            C.write_value_list(w, cells)
        log('mapihttp: nspi GetProps mid=0x%x %d tags -> 0x%x' % (
            stat['CurrentRec'], len(tags), code))
        return w.aux().bytes()

    def get_special_table(self, flags, stat, version):
        unicode = bool(flags & NS.NspiUnicodeStrings)
        cp = NS.CP_WINUNICODE if unicode else stat['CodePage']
        w = self.head(ecSuccess).u32(cp)
        w.flag(True).u32(1)          # version of the hierarchy table
        if flags & NS.NspiAddressCreationTemplates:
            w.flag(False)            # no address creation templates in the lab
        else:
            tags, conts, vcp = self.nspi.special_table_rows(unicode)
            w.flag(True).u32(len(conts))
            for o in conts:
                C.write_value_list(w, self.cells(o, tags, 0, vcp))
        log('mapihttp: nspi GetSpecialTable flags=0x%x' % flags)
        return w.aux().bytes()

    def get_template_info(self, flags, ttype, dn, cp, locale):
        # The lab holds no display / addressing templates.
        log('mapihttp: nspi GetTemplateInfo type=0x%x dn=%r -> not found (no templates)' % (
            ttype, dn))
        return self.head(NS.NOT_FOUND).u32(cp).flag(False).aux().bytes()

    def _mid_of_entryid(self, eid):
        if len(eid) >= 32 and eid[0] == 0x87:
            return struct.unpack_from('<L', eid, 28)[0]
        if len(eid) > 28 and eid[0] == 0:
            o = self.dir.lookup_dn(eid[28:].split(b'\x00')[0].decode('ascii', 'replace'))
            return o.mid if o is not None else None
        return None

    def mod_link_att(self, flags, ptag, mid, eids):
        obj = self.dir.by_mid.get(mid)
        code = ecSuccess
        if obj is None:
            code = NS.NOT_FOUND
        elif ptag >> 16 != PR['EMS_AB_MEMBER'] or obj.kind != 'dl':
            code = ecAccessDenied
        else:
            with self.dir.lock:
                for e in eids:
                    m = self._mid_of_entryid(e)
                    if m is None or m not in self.dir.by_mid:
                        continue
                    if flags & 0x1:          # fDelete
                        if m in obj.members:
                            obj.members.remove(m)
                    elif m not in obj.members:
                        obj.members.append(m)
        log('mapihttp: nspi ModLinkAtt flags=0x%x tag=0x%08x mid=0x%x %d ids -> 0x%x' % (
            flags, ptag, mid, len(eids), code))
        return self.head(code).aux().bytes()

    WRITABLE = ('BUSINESS_TELEPHONE', 'OFFICE_LOCATION', 'TITLE', 'DEPARTMENT_NAME', 'COMMENT')

    def mod_props(self, stat, remove, values):
        obj = self.dir.by_mid.get(stat['CurrentRec'])
        writable = [PR[k] for k in self.WRITABLE]
        code = ecSuccess
        if obj is None or obj.kind != 'user':
            code = NS.NOT_FOUND if obj is None else ecAccessDenied
        elif any(t >> 16 not in writable for t, _ in values) or \
                any(t >> 16 not in writable for t in remove or []):
            code = ecAccessDenied
        else:
            with self.dir.lock:
                for t in remove or []:
                    obj.props.pop(t >> 16, None)
                for t, v in values:
                    if t & 0xFFFF in (C.PT_STRING8, C.PT_UNICODE) and v is not None:
                        obj.set(t >> 16, C.PT_UNICODE, v)
        log('mapihttp: nspi ModProps mid=0x%x %d values -> 0x%x' % (
            stat['CurrentRec'], len(values), code))
        return self.head(code).aux().bytes()

    def query_columns(self, flags):
        w = self.head(ecSuccess)
        C.write_opt_tags(w, self.nspi.all_columns(bool(flags & NS.NspiUnicodeProptypes)))
        return w.aux().bytes()

    def query_rows(self, flags, stat, etable, count, cols):
        if cols is None:
            cols = self.nspi.default_columns(stat['CodePage'])
        code, objs, out = self.nspi.rows_at(stat, etable, count)
        w = self.head(code)
        C.write_opt_stat(w, out)
        if objs is None:
            w.flag(False)
        else:
            w.flag(True)
            C.write_colrows(w, cols, self.rows(objs, cols, flags, stat['CodePage']))
        log('mapihttp: nspi QueryRows container=%d count=%d -> %s rows, 0x%x' % (
            stat['ContainerID'], count, None if objs is None else len(objs), code))
        return w.aux().bytes()

    def resolve_names(self, stat, tags, names):
        cp = stat['CodePage']
        if tags is None:
            tags = self.nspi.default_columns(cp)
        mids, found = self.nspi.resolve(names)
        w = self.head(ecSuccess).u32(cp)
        C.write_opt_tags(w, mids)
        w.flag(True)
        C.write_colrows(w, tags, self.rows(found, tags, 0, cp))
        log('mapihttp: nspi ResolveNames %s -> %s' % (names, ['0x%x' % m for m in mids]))
        return w.aux().bytes()

    def resort_restriction(self, stat, mids):
        objs = [self.dir.by_mid[m] for m in mids if m in self.dir.by_mid]
        objs.sort(key=lambda o: o.display_name().lower())
        out = dict(stat)
        new = [o.mid for o in objs]
        pos = new.index(stat['CurrentRec']) if stat['CurrentRec'] in new else 0
        out.update(CurrentRec=new[pos] if new else NS.MID_END_OF_TABLE, NumPos=pos,
                   TotalRecs=len(new), Delta=0)
        w = self.head(ecSuccess)
        C.write_opt_stat(w, out)
        C.write_opt_tags(w, new)
        log('mapihttp: nspi ResortRestriction %d mids -> %d' % (len(mids), len(new)))
        return w.aux().bytes()

    def seek_entries(self, stat, target, etable, cols):
        ttag, value = target if target else (0, None)
        code, rows, out = self.nspi.seek(stat, ttag, value if isinstance(value, str) else None,
                                         etable, cols is not None)
        w = self.head(code)
        C.write_opt_stat(w, out)
        if rows is None:
            w.flag(False)
        else:
            w.flag(True)
            C.write_colrows(w, cols, self.rows(rows, cols, 0, stat['CodePage']))
        log('mapihttp: nspi SeekEntries target=0x%08x -> 0x%x cur=%d' % (
            ttag, code, out['CurrentRec']))
        return w.aux().bytes()

    def update_stat(self, stat, want_delta):
        code, out, moved = self.nspi.move(stat)
        w = self.head(code)
        C.write_opt_stat(w, out)
        w.flag(want_delta)
        if want_delta:
            w.i32(moved if code == ecSuccess else 0)
        log('mapihttp: nspi UpdateStat container=%d -> 0x%x' % (stat['ContainerID'], code))
        return w.aux().bytes()

    def get_mailbox_url(self, flags, server_dn):
        name = self.lab.config.server_of_dn(server_dn)
        ok = name is not None
        if name in self.lab.config.mailbox_servers:    # a mailbox's own server name
            url = '%s/mapi/emsmdb/?MailboxId=%s' % (self.lab.base_url(), name)
        else:
            url = '%s/mapi/emsmdb/?MailboxId=%s' % (self.lab.base_url(), self.lab.config.fqdn) \
                if ok else ''
        log('mapihttp: nspi GetMailboxUrl %r -> %r' % (server_dn, url))
        return self.head(ecSuccess if ok else NS.NOT_FOUND).utf16z(url).aux().bytes()

    def get_address_book_url(self, flags, user_dn, ident):
        o = self.dir.lookup_dn(user_dn)
        if o is None or o.kind != 'user':
            o = self.lab.user_for_identity(ident)
        url = self.lab.nspi_url(o) if o is not None else ''
        log('mapihttp: nspi GetAddressBookUrl %r -> %r' % (user_dn, url))
        return self.head(ecSuccess if url else NS.NOT_FOUND).utf16z(url).aux().bytes()


def _ndr_like(res):
    """The restriction tuples of mapihttp_codec in the shape lab_nspi.Nspi._eval reads
    (Impacket NDR field names), so both transports share one evaluator."""
    kind = res[0]

    def pv(tagged):
        t, v = tagged
        u = {'lpszA': v, 'lpszW': v, 'l': v, 'b': v}
        if isinstance(v, (bytes, bytearray)):
            u['bin'] = {'cValues': len(v), 'lpb': [bytes([x]) for x in v]}
        return {'ulPropTag': t, 'Value': u}
    if kind in ('and', 'or'):
        key = 'resAnd' if kind == 'and' else 'resOr'
        return {'rt': 0 if kind == 'and' else 1,
                'res': {key: {'cRes': len(res[1]), 'lpRes': [_ndr_like(s) for s in res[1]]}}}
    if kind == 'not':
        return {'rt': 2, 'res': {'resNot': {'lpRes': _ndr_like(res[1])}}}
    if kind == 'content':
        return {'rt': 3, 'res': {'resContent': {'ulFuzzyLevel': res[1], 'ulPropTag': res[2],
                                                'lpProp': pv(res[3])}}}
    if kind == 'property':
        return {'rt': 4, 'res': {'resProperty': {'relop': res[1], 'ulPropTag': res[2],
                                                 'lpProp': pv(res[3])}}}
    if kind == 'compare':
        return {'rt': 5, 'res': {'resCompareProps': {'relop': res[1], 'ulPropTag1': res[2],
                                                     'ulPropTag2': res[3]}}}
    if kind == 'bitmask':
        return {'rt': 6, 'res': {'resBitMask': {'relBMR': res[1], 'ulPropTag': res[2],
                                                'ulMask': res[3]}}}
    if kind == 'size':
        return {'rt': 7, 'res': {'resSize': {'relop': res[1], 'ulPropTag': res[2],
                                             'cb': res[3]}}}
    if kind == 'exist':
        return {'rt': 8, 'res': {'resExist': {'ulPropTag': res[1]}}}
    raise BodyError('restriction %r' % (kind,))
