"""Server-side NTLM (MS-NLMP) for the Exchange lab's DCE/RPC runtime.

Built on Impacket's NTLM building blocks (impacket.ntlm): the NEGOTIATE /
CHALLENGE / AUTHENTICATE structures, NTOWFv2, KXKEY, generateEncryptedSessionKey
(RC4 un-wrapping of the exchanged key), SIGNKEY / SEALKEY and MAC.

Only NTLMv2 with extended session security (ESS) is accepted; that is what
Windows, Samba and Impacket clients send.  NTLMv1 / LM responses and
anonymous logons are refused.

Per-message protection (MS-NLMP 3.4.4 with ESS, as used by DCE/RPC): the
signature is HMAC_MD5(SignKey, SeqNum + whole PDU without the 16-byte
verifier, plaintext stub)[:8], RC4-ed with the direction's sealing handle when
KEY_EXCH is negotiated; at privacy the stub + auth padding are RC4-ed with the
same handle first.  Each direction has its own keys, RC4 state and sequence
number (starting at 0, +1 per PDU / fragment).
"""

import calendar
import hmac
import os
import struct
import time

from Cryptodome.Cipher import ARC4
from impacket import ntlm

AUTH_LEVEL_NAMES = {1: 'none', 2: 'connect', 3: 'call', 4: 'packet', 5: 'integrity', 6: 'privacy'}
LEVELS_BY_NAME = {'none': 1, 'connect': 2, 'integrity': 5, 'privacy': 6}

DEFAULT_DOMAIN = 'LAB'


class UserDb(object):
    """Users allowed to log on: (user.lower(), domain.lower()) -> (user, domain, password)."""

    def __init__(self):
        self.users = {}

    @classmethod
    def load(cls, path):
        db = cls()
        with open(path, encoding='utf-8') as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.rstrip('\r\n')
                if not line.strip() or line.lstrip().startswith('#'):
                    continue
                parts = line.split(':', 2)
                if len(parts) == 2:
                    user, password = parts
                    domain = DEFAULT_DOMAIN
                elif len(parts) == 3:
                    user, domain, password = parts
                else:
                    raise ValueError('%s:%d: expected user:password or user:domain:password'
                                     % (path, lineno))
                if not user:
                    raise ValueError('%s:%d: empty user name' % (path, lineno))
                db.add(user, domain or DEFAULT_DOMAIN, password)
        return db

    def add(self, user, domain, password):
        self.users[(user.lower(), domain.lower())] = (user, domain, password)

    def lookup(self, user, domain):
        """Exact (case-insensitive) user + domain; an empty client domain matches a
        user that exists in exactly one domain."""
        hit = self.users.get((user.lower(), domain.lower()))
        if hit or domain:
            return hit
        cands = [v for k, v in self.users.items() if k[0] == user.lower()]
        return cands[0] if len(cands) == 1 else None


class AuthError(Exception):
    pass


def _rc4(key):
    return ARC4.new(key).encrypt


class NtlmServerContext(object):
    """One NTLM security context (one per DCE/RPC connection)."""

    auth_name = 'NTLM'
    via = ''

    def __init__(self, userdb, server_name='EXLAB01', domain=DEFAULT_DOMAIN,
                 dns_domain='lab.example'):
        self.userdb = userdb
        self.server_name = server_name
        self.domain = domain
        self.dns_domain = dns_domain
        self.negotiate_raw = None
        self.challenge_raw = None
        self.server_challenge = None
        self.flags = 0
        self.complete = False
        self.user = None           # canonical (from the users file) after success
        self.user_domain = None
        self.session_key = None
        self.send_seq = 0
        self.recv_seq = 0
        self.had_mic = False

    @property
    def identity(self):
        return '%s\\%s' % (self.user_domain, self.user) if self.user else None

    # -- handshake -----------------------------------------------------------
    def negotiate(self, token):
        """NEGOTIATE_MESSAGE -> CHALLENGE_MESSAGE bytes."""
        if token[:8] != b'NTLMSSP\x00' or struct.unpack('<L', token[8:12])[0] != 1:
            raise AuthError('not an NTLM NEGOTIATE message')
        neg = ntlm.NTLMAuthNegotiate()
        neg.fromString(token)
        self.negotiate_raw = token
        cf = neg['flags']
        flags = (ntlm.NTLMSSP_NEGOTIATE_UNICODE | ntlm.NTLMSSP_REQUEST_TARGET |
                 ntlm.NTLMSSP_NEGOTIATE_NTLM | ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
                 ntlm.NTLMSSP_TARGET_TYPE_DOMAIN | ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY |
                 ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO | ntlm.NTLMSSP_NEGOTIATE_VERSION)
        for f in (ntlm.NTLMSSP_NEGOTIATE_SIGN, ntlm.NTLMSSP_NEGOTIATE_SEAL,
                  ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, ntlm.NTLMSSP_NEGOTIATE_128,
                  ntlm.NTLMSSP_NEGOTIATE_56):
            if cf & f:
                flags |= f
        self.flags = flags
        self.server_challenge = os.urandom(8)

        av = ntlm.AV_PAIRS()
        av[ntlm.NTLMSSP_AV_DOMAINNAME] = self.domain.encode('utf-16le')
        av[ntlm.NTLMSSP_AV_HOSTNAME] = self.server_name.encode('utf-16le')
        av[ntlm.NTLMSSP_AV_DNS_DOMAINNAME] = self.dns_domain.encode('utf-16le')
        av[ntlm.NTLMSSP_AV_DNS_HOSTNAME] = ('%s.%s' % (self.server_name.lower(),
                                                        self.dns_domain)).encode('utf-16le')
        av[ntlm.NTLMSSP_AV_DNS_TREENAME] = self.dns_domain.encode('utf-16le')
        av[ntlm.NTLMSSP_AV_TIME] = struct.pack(
            '<q', 116444736000000000 + int(calendar.timegm(time.gmtime())) * 10000000)
        av_bytes = av.getData()

        ch = ntlm.NTLMAuthChallenge()
        dom = self.domain.encode('utf-16le')
        ch['flags'] = flags
        ch['domain_len'] = ch['domain_max_len'] = len(dom)
        ch['domain_offset'] = 40 + 16
        ch['challenge'] = self.server_challenge
        ch['domain_name'] = dom
        ch['TargetInfoFields_len'] = ch['TargetInfoFields_max_len'] = len(av_bytes)
        ch['TargetInfoFields'] = av_bytes
        ch['TargetInfoFields_offset'] = 40 + 16 + len(dom)
        # Windows Server 2016 (10.0.14393), NTLM revision 15
        ch['Version'] = struct.pack('<BBH3sB', 10, 0, 14393, b'\0\0\0', 15)
        ch['VersionLen'] = 8
        self.challenge_raw = ch.getData()
        return self.challenge_raw

    def authenticate(self, token):
        """AUTHENTICATE_MESSAGE: verify NTLMv2, derive the keys.  Raises AuthError
        (the message says why) on any failure."""
        if self.challenge_raw is None:
            raise AuthError('AUTHENTICATE without a preceding CHALLENGE')
        if token[:8] != b'NTLMSSP\x00' or struct.unpack('<L', token[8:12])[0] != 3:
            raise AuthError('not an NTLM AUTHENTICATE message')
        msg = ntlm.NTLMAuthChallengeResponse()
        msg.fromString(token)
        # Impacket does not extract the EncryptedRandomSessionKey payload field.
        sk_len, _, sk_off = struct.unpack('<HHL', token[52:60])
        enc_session_key = token[sk_off:sk_off + sk_len]
        cflags = struct.unpack('<L', token[60:64])[0]
        unicode_ = cflags & ntlm.NTLMSSP_NEGOTIATE_UNICODE
        dec = (lambda b: b.decode('utf-16le')) if unicode_ else (lambda b: b.decode('latin-1'))
        user = dec(msg['user_name'])
        cdomain = dec(msg['domain_name'])
        self.client_user = '%s\\%s' % (cdomain, user)
        nt_resp = msg['ntlm']
        if not user or len(nt_resp) == 0:
            raise AuthError('anonymous logon refused')
        if len(nt_resp) <= 24:
            raise AuthError('NTLMv1 response refused (user %s)' % self.client_user)
        entry = self.userdb.lookup(user, cdomain) if self.userdb else None
        if entry is None:
            raise AuthError('unknown user %s' % self.client_user)
        # NTOWFv2 uses the names as the client sent them (user upper-cased).
        response_key_nt = ntlm.NTOWFv2(user, entry[2], cdomain)
        nt_proof = nt_resp[:16]
        blob = nt_resp[16:]
        expect = ntlm.hmac_md5(response_key_nt, self.server_challenge + blob)
        if not hmac.compare_digest(expect, nt_proof):
            raise AuthError('wrong password for %s' % self.client_user)
        session_base_key = ntlm.hmac_md5(response_key_nt, nt_proof)
        # NTLMv2: KeyExchangeKey = SessionBaseKey
        kxkey = ntlm.KXKEY(self.flags, session_base_key, msg['lanman'], self.server_challenge,
                           '', '', '', True)
        if self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            if len(enc_session_key) != 16:
                raise AuthError('KEY_EXCH negotiated but no EncryptedRandomSessionKey')
            exported = ntlm.generateEncryptedSessionKey(kxkey, enc_session_key)  # RC4 decrypt
        else:
            exported = kxkey
        # MIC (present when the client's MsvAvFlags has 0x2)
        av = ntlm.AV_PAIRS(blob[28:])
        avflags = av[ntlm.NTLMSSP_AV_FLAGS]
        if avflags is not None and struct.unpack('<L', avflags[1][:4])[0] & 0x2:
            mic = token[72:88]
            zeroed = token[:72] + b'\0' * 16 + token[88:]
            want = ntlm.hmac_md5(exported, self.negotiate_raw + self.challenge_raw + zeroed)
            if not hmac.compare_digest(mic, want):
                raise AuthError('bad MIC from %s' % self.client_user)
            self.had_mic = True
        # The client's final flags must not add what the server did not offer.
        self.flags &= cflags | ~(ntlm.NTLMSSP_NEGOTIATE_SIGN | ntlm.NTLMSSP_NEGOTIATE_SEAL |
                                 ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH | ntlm.NTLMSSP_NEGOTIATE_128 |
                                 ntlm.NTLMSSP_NEGOTIATE_56)
        if not self.flags & ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY:
            raise AuthError('no extended session security')
        self.session_key = exported
        self.client_sign_key = ntlm.SIGNKEY(self.flags, exported, 'Client')
        self.server_sign_key = ntlm.SIGNKEY(self.flags, exported, 'Server')
        self.client_seal = _rc4(ntlm.SEALKEY(self.flags, exported, 'Client'))
        self.server_seal = _rc4(ntlm.SEALKEY(self.flags, exported, 'Server'))
        self.send_seq = 0
        self.recv_seq = 0
        self.user = entry[0]
        self.user_domain = entry[1]
        self.complete = True
        return self.identity

    def reset_crypto(self, seqnums=False):
        """Restart both RC4 states (optionally the sequence numbers) after SPNEGO's
        mechListMIC."""
        self.client_seal = _rc4(ntlm.SEALKEY(self.flags, self.session_key, 'Client'))
        self.server_seal = _rc4(ntlm.SEALKEY(self.flags, self.session_key, 'Server'))
        if seqnums:
            self.send_seq = 0
            self.recv_seq = 0

    # -- per-message protection ----------------------------------------------
    def _mac(self, key, handle, seq, pdu):
        return ntlm.MAC(self.flags, handle, key, seq, pdu).getData()

    def sign_outgoing(self, pdu_no_verifier):
        sig = self._mac(self.server_sign_key, self.server_seal, self.send_seq, pdu_no_verifier)
        self.send_seq += 1
        return sig

    def seal_outgoing(self, pdu_no_verifier, start, end):
        """Encrypts pdu[start:end] (stub + auth pad); returns (sealed_pdu, signature)."""
        sealed = self.server_seal(pdu_no_verifier[start:end])
        sig = self._mac(self.server_sign_key, self.server_seal, self.send_seq, pdu_no_verifier)
        self.send_seq += 1
        return pdu_no_verifier[:start] + sealed + pdu_no_verifier[end:], sig

    def verify_incoming(self, pdu_no_verifier, signature):
        want = self._mac(self.client_sign_key, self.client_seal, self.recv_seq, pdu_no_verifier)
        self.recv_seq += 1
        return hmac.compare_digest(want, signature)

    def unseal_incoming(self, pdu_no_verifier, start, end, signature):
        """Decrypts pdu[start:end]; returns (plain_pdu, signature_ok)."""
        plain = self.client_seal(pdu_no_verifier[start:end])
        pdu = pdu_no_verifier[:start] + plain + pdu_no_verifier[end:]
        return pdu, self.verify_incoming(pdu, signature)


# ---------------------------------------------------------------------------
# SPNEGO (RFC 4178, MS-SPNG) wrapping NTLM: DCE/RPC auth type 9
# ---------------------------------------------------------------------------
OID_SPNEGO = bytes.fromhex('2b0601050502')                 # 1.3.6.1.5.5.2
OID_NTLM = bytes.fromhex('2b0601040182370202' '0a')        # 1.3.6.1.4.1.311.2.2.10


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, 'big')
    return bytes([0x80 | len(b)]) + b


def der(tag, content):
    return bytes([tag]) + _der_len(len(content)) + content


def der_tlv(data, off=0):
    """-> (tag, content, end offset, start offset).  Definite lengths only."""
    if off + 2 > len(data):
        raise AuthError('truncated DER')
    tag = data[off]
    n = data[off + 1]
    p = off + 2
    if n & 0x80:
        k = n & 0x7f
        if k == 0 or k > 4 or p + k > len(data):
            raise AuthError('bad DER length')
        n = int.from_bytes(data[p:p + k], 'big')
        p += k
    if p + n > len(data):
        raise AuthError('truncated DER')
    return tag, data[p:p + n], p + n, off


def der_items(data):
    out = {}
    off = 0
    while off < len(data):
        tag, content, end, start = der_tlv(data, off)
        out[tag] = (content, data[start:end])
        off = end
    return out


def neg_token_resp(state=None, mech=None, token=None, mic=None):
    body = b''
    if state is not None:
        body += der(0xa0, der(0x0a, bytes([state])))
    if mech is not None:
        body += der(0xa1, der(0x06, mech))
    if token is not None:
        body += der(0xa2, der(0x04, token))
    if mic is not None:
        body += der(0xa3, der(0x04, mic))
    return der(0xa1, der(0x30, body))


class SpnegoServerContext(object):
    """SPNEGO acceptor that only offers NTLM.  Legs:
    NegTokenInit(mechTypes incl. NTLM, mechToken=NEGOTIATE if NTLM is first)
      -> NegTokenResp(accept-incomplete, NTLM, CHALLENGE)   [bind_ack]
    NegTokenResp(AUTHENTICATE, mechListMIC)
      -> NegTokenResp(accept-completed, mechListMIC)        [alter_context_resp]
    mechListMIC = NTLM signature over the DER mechTypes list (client's with
    its sequence 0, ours with ours); afterwards both directions' RC4 states
    start again from the sealing keys while the sequence numbers go on (as
    Samba does).  A client that sends no mechListMIC (and no NTLM MIC) gets
    accept-completed without one and no reset.
    """

    auth_name = 'NTLM'
    via = ' via=spnego'

    def __init__(self, ntlm_ctx):
        self.ntlm = ntlm_ctx
        self.mech_types = None
        self.mic_exchanged = False

    def __getattr__(self, name):
        return getattr(self.ntlm, name)

    def init(self, token):
        tag, content, _, _ = der_tlv(token)
        if tag != 0x60:
            raise AuthError('not a GSS-API InitialContextToken')
        items = der_tlv(content)
        if items[0] != 0x06 or items[1] != OID_SPNEGO:
            raise AuthError('not SPNEGO')
        tag, init, _, _ = der_tlv(content, items[2])
        if tag != 0xa0:
            raise AuthError('not a NegTokenInit')
        tag, seq, _, _ = der_tlv(init)
        fields = der_items(seq)
        if 0xa0 not in fields:
            raise AuthError('NegTokenInit without mechTypes')
        self.mech_types = fields[0xa0][0]             # the DER "30 ..." list
        tag, mlist, _, _ = der_tlv(self.mech_types)
        mechs = []
        off = 0
        while off < len(mlist):
            t, oid, off, _ = der_tlv(mlist, off)
            mechs.append(oid)
        if OID_NTLM not in mechs:
            raise AuthError('SPNEGO without NTLM among its mechanisms')
        if mechs[0] == OID_NTLM and 0xa2 in fields:
            mech_token = der_tlv(fields[0xa2][0])[1]
            return neg_token_resp(1, OID_NTLM, self.ntlm.negotiate(mech_token))
        # optimistic token for another mechanism: ask for NTLM
        return neg_token_resp(1, OID_NTLM)

    def step(self, token):
        tag, content, _, _ = der_tlv(token)
        if tag != 0xa1:
            raise AuthError('not a NegTokenResp')
        fields = der_items(der_tlv(content)[1])
        if 0xa2 not in fields:
            raise AuthError('NegTokenResp without responseToken')
        inner = der_tlv(fields[0xa2][0])[1]
        if inner[8:12] == b'\x01\x00\x00\x00':
            return neg_token_resp(1, None, self.ntlm.negotiate(inner))
        self.ntlm.authenticate(inner)
        mic = der_tlv(fields[0xa3][0])[1] if 0xa3 in fields else None
        if mic is None:
            if self.ntlm.had_mic:
                raise AuthError('mechListMIC missing (NTLM MIC present)')
            return neg_token_resp(0)
        if not self.ntlm.verify_incoming(self.mech_types, mic):
            raise AuthError('bad SPNEGO mechListMIC')
        ours = self.ntlm.sign_outgoing(self.mech_types)
        # Both RC4 states restart; the sequence numbers go on (1 after the MICs),
        # which is what Samba 4.17's client expects and checks.
        self.ntlm.reset_crypto(seqnums=False)
        self.mic_exchanged = True
        return neg_token_resp(0, None, None, ours)


# --- Kerberos (auth type 16, DCE style) through MIT's GSSAPI (python3-gssapi) ---

def kerberos_available():
    """None when python3-gssapi is importable, else why not."""
    try:
        import gssapi.raw  # noqa: F401
        from gssapi.raw import ext_dce  # noqa: F401
    except ImportError as e:
        return 'python3-gssapi missing (%s)' % e
    return None


class KerberosServerContext(object):
    """Kerberos acceptor for DCE/RPC auth type 16 (MS-RPCE 2.2.1.1.7,
    MS-KILE 3.4.5): MIT's own acceptor with the lab's keytab, DCE style.
    Legs: AP-REQ (bind; bare, or framed by Impacket) -> AP-REP (bind_ack);
    the client's DCE-style AP-REP (auth3 or alter_context) -> done.

    Per-PDU protection (MS-RPCE 3.3.1.5.2): integrity = gss_get_mic over the
    body (stub + auth pad), or over header..sec_trailer with header signing;
    privacy = gss_wrap_iov with the body as DATA, the header and sec_trailer
    as SIGN_ONLY (header signing only) and the whole auth_value as the
    HEADER buffer (no TRAILER: MIT rotates it into the header, DCE style)."""

    auth_name = 'Kerberos'
    via = ' via=kerberos'

    def __init__(self, keytab):
        import gssapi.raw as graw
        self._g = graw
        self.creds = graw.acquire_cred_from({b'keytab': keytab.encode()}, usage='accept').creds
        self.ctx = None
        self.complete = False
        self.identity = None
        self.header_sign = False
        self.recv_seq = 0
        self.mic_exchanged = False
        self.had_mic = False

    @staticmethod
    def _unframe(token):
        """Impacket frames its DCE-style AP-REQ (60 .. krb5 OID 01 00 AP-REQ);
        MIT's acceptor wants a DCE-style one bare."""
        if token[:1] != b'\x60':
            return token
        _, content, _, _ = der_tlv(token)
        t, oid, off, _ = der_tlv(content)
        if t != 0x06 or content[off:off + 2] != b'\x01\x00':
            raise AuthError('not a Kerberos AP-REQ')
        return content[off + 2:]

    def init(self, token):
        try:
            res = self._g.accept_sec_context(self._unframe(token), acceptor_creds=self.creds)
        except Exception as e:
            raise AuthError('Kerberos AP-REQ refused: %s' % e)
        self.ctx = res.context
        if not res.more_steps:       # not DCE style: done in one leg
            self._done()
        return res.token or b''

    def step(self, token):
        if self.ctx is None or self.complete:
            raise AuthError('unexpected Kerberos token')
        try:
            res = self._g.accept_sec_context(token, acceptor_creds=self.creds, context=self.ctx)
        except Exception as e:
            raise AuthError('Kerberos AP-REP refused: %s' % e)
        if res.more_steps:
            raise AuthError('Kerberos wants more than three legs')
        self._done()
        return res.token or None

    def authenticate(self, token):
        self.step(token)
        return self.identity

    def _done(self):
        self.complete = True
        name = self._g.inquire_context(self.ctx, initiator_name=True, target_name=False,
                                       lifetime=False, mech=False, flags=False, locally_init=False,
                                       complete=False).initiator_name
        self.identity = self._g.display_name(name).name.decode()

    # -- protection; nov = the PDU up to the end of the sec_trailer ---------
    def verifier_len(self, level, body_len):
        from gssapi.raw import IOV, IOVBufferType as T
        if level == 6:
            iov = IOV((T.header, True), (T.data, b'\x00' * body_len), std_layout=False)
            self._g.wrap_iov_length(self.ctx, iov, confidential=True)
            return len(iov[0].value) if iov[0].value is not None else iov[0].length
        # a MIC's length without making one (get_mic would use up a sequence number)
        iov = IOV((T.mic_token, True), (T.data, b'\x00' * body_len), std_layout=False)
        self._g.get_mic_iov_length(self.ctx, iov)
        return len(iov[0].value) if iov[0].value is not None else 28

    @staticmethod
    def _body(nov):
        hl = 24 + (16 if nov[2] == 0 and nov[3] & 0x80 else 0)
        return hl, len(nov) - 8

    def sign_outgoing(self, nov):
        start, end = self._body(nov)
        return self._g.get_mic(self.ctx, nov if self.header_sign else nov[start:end])

    def verify_incoming(self, nov, sig):
        start, end = self._body(nov)
        self.recv_seq += 1
        try:
            self._g.verify_mic(self.ctx, nov if self.header_sign else nov[start:end], sig)
            return True
        except Exception:
            return False

    def _iov(self, nov, start, end, header, body):
        from gssapi.raw import IOV, IOVBufferType as T
        parts = [(T.header, header is None, header)] if header is not None else [(T.header, True)]
        if self.header_sign:
            return IOV(*parts, (T.sign_only, nov[:start]), (T.data, body),
                       (T.sign_only, nov[end:]), std_layout=False)
        return IOV(*parts, (T.data, body), std_layout=False)

    def seal_outgoing(self, nov, start, end):
        iov = self._iov(nov, start, end, None, nov[start:end])
        self._g.wrap_iov(self.ctx, iov, confidential=True)
        data_i = 2 if self.header_sign else 1
        return nov[:start] + iov[data_i].value + nov[end:], iov[0].value

    def unseal_incoming(self, nov, start, end, sig):
        iov = self._iov(nov, start, end, sig, nov[start:end])
        self.recv_seq += 1
        try:
            self._g.unwrap_iov(self.ctx, iov)
        except Exception:
            return nov, False
        data_i = 2 if self.header_sign else 1
        return nov[:start] + iov[data_i].value + nov[end:], True
