"""NTLM authentication of the Exchange lab (run: /usr/bin/python3 -m pytest tests/lab).

Three labs are started with --users: one with --require-auth none (the
default behaviour plus optional NTLM), one with connect, one with privacy.
Impacket's client authenticates at connect / integrity / privacy and must get
the same answers as an unauthenticated client; refusals (wrong password,
unknown user, no auth, too low a level, bad signature) are checked, a
sealed call captured on lo is decrypted by tshark with the password, and
Samba's client (python3-samba, an independent implementation that sends an
NTLM MIC and checks the lab's signatures) logs on with NTLM and SPNEGO/NTLM.
"""

import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))

from impacket import ntlm                                                # noqa: E402
from impacket.dcerpc.v5 import transport, oxabref, nspi, rpcrt, epm     # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException                    # noqa: E402

PY = '/usr/bin/python3'
ORG = '/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)'
SERVER_DN = ORG + '/cn=Configuration/cn=Servers/cn=EXLAB01'
ALICE = ORG + '/cn=Recipients/cn=alice'
PASSWORD = 'Alice-Pass.1'
USERS = """# lab accounts
alice:%s
bob:OTHER:b:o:b
""" % PASSWORD

CONNECT = rpcrt.RPC_C_AUTHN_LEVEL_CONNECT
INTEGRITY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY
PRIVACY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY
LEVEL_NAMES = {CONNECT: 'connect', INTEGRITY: 'integrity', PRIVACY: 'privacy'}
QUERY_TAGS = [0x3001001E, 0x3001001F, 0x3003001E, 0x3A00001F, 0x39FE001F, 0x0FFE0003,
              0x39000003, 0x0FFF0102, 0x0FF60102, 0x8170101E, 0x8170101F, 0x8006001E,
              0x8006001F]


class Lab(object):
    def __init__(self, tmpdir, require):
        users = os.path.join(str(tmpdir), 'users-%s.txt' % require)
        with open(users, 'w') as f:
            f.write(USERS)
        self.proc = subprocess.Popen([PY, os.path.join(HERE, 'exchange_lab.py'), '--host',
                                      '127.0.0.1', '--epm-port', '0', '--users', users,
                                      '--require-auth', require],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith('READY '), line
        self.ports = dict((k, int(v)) for k, v in (kv.split('=') for kv in line.split()[1:]))
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line.rstrip('\n'))

    def log(self):
        time.sleep(0.1)
        with self.lock:
            return '\n'.join(self.lines)

    def mark(self):
        with self.lock:
            return len(self.lines)

    def log_since(self, mark):
        time.sleep(0.1)
        with self.lock:
            return '\n'.join(self.lines[mark:])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0


@pytest.fixture(scope='module')
def labs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('labauth')
    out = {r: Lab(tmp, r) for r in ('none', 'connect', 'privacy')}
    yield out
    for lab in out.values():
        lab.stop()


def dce(port, iface, user=None, password=None, domain='LAB', level=None):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:127.0.0.1[%d]' % port)
    if user is not None:
        t.set_credentials(user, password, domain)
    d = t.get_dce_rpc()
    if level is not None:
        d.set_auth_level(level)
    d.connect()
    if iface is not None:
        d.bind(iface)
    return d


def rfr_answers(d):
    return (oxabref.hRfrGetNewDSA(d, ALICE)['ppszServer'],
            oxabref.hRfrGetFQDNFromServerDN(d, SERVER_DN)['ppszServerFQDN'])


def plain(rows):
    return [{k: (v.getData() if hasattr(v, 'getData') else v) for k, v in r.items()}
            for r in rows]


def nspi_answers(d):
    resp = nspi.hNspiBind(d)
    assert resp['ErrorCode'] == 0
    h = resp['contextHandle']
    rows = plain(nspi.simplifyPropertyRowSet(
        nspi.hNspiQueryRows(d, h, Count=100, pPropTags=QUERY_TAGS)['ppRows']))
    mids = [x['Data'] if hasattr(x, 'fields') else x for x in nspi.hNspiDNToMId(
        d, h, [SERVER_DN, ALICE])['ppOutMIds']['aulPropTag']]
    assert nspi.hNspiUnbind(d, h)['ErrorCode'] == 1
    return rows, mids


@pytest.fixture(scope='module')
def reference(labs):
    ports = labs['none'].ports
    d = dce(ports['rfr'], oxabref.MSRPC_UUID_OXABREF)
    r = rfr_answers(d)
    d.disconnect()
    d = dce(ports['nspi'], nspi.MSRPC_UUID_NSPI)
    n = nspi_answers(d)
    d.disconnect()
    assert r == ('exlab01.lab.example', 'exlab01.lab.example')
    assert len(n[0]) == 7
    return r, n


@pytest.mark.parametrize('level', [CONNECT, INTEGRITY, PRIVACY],
                         ids=['connect', 'integrity', 'privacy'])
@pytest.mark.parametrize('require', ['none', 'connect'])
def test_same_answers_at_each_level(labs, reference, level, require):
    lab = labs[require]
    m = lab.mark()
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', level)
    assert rfr_answers(d) == reference[0]
    d.disconnect()
    d = dce(lab.ports['nspi'], nspi.MSRPC_UUID_NSPI, 'alice', PASSWORD, 'lab', level)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    log = lab.log_since(m)
    want = 'auth: NTLM user=LAB\\alice level=%s' % LEVEL_NAMES[level]
    assert log.count(want) >= 2 + 4, log       # 2 RFR + 4 NSPI calls
    assert 'nspi: auth: NTLM logon ok user=LAB\\alice level=%s' % LEVEL_NAMES[level] in log


def test_large_fragmented_request_and_response_sealed(labs, reference):
    """A request larger than max_xmit (several signed+sealed fragments) and a
    response larger than one fragment."""
    lab = labs['privacy']
    d = dce(lab.ports['nspi'], nspi.MSRPC_UUID_NSPI, 'alice', PASSWORD, 'LAB', PRIVACY)
    h = nspi.hNspiBind(d)['contextHandle']
    dns = [ORG + '/cn=Recipients/cn=nobody-%04d' % i for i in range(150)] + [ALICE]
    r = nspi.hNspiDNToMId(d, h, dns)
    mids = [x['Data'] if hasattr(x, 'fields') else x for x in r['ppOutMIds']['aulPropTag']]
    assert mids[:150] == [0] * 150 and mids[150] == reference[1][1][1]
    rows = plain(nspi.simplifyPropertyRowSet(
        nspi.hNspiQueryRows(d, h, Count=100, pPropTags=QUERY_TAGS)['ppRows']))
    assert rows == reference[1][0]
    d.disconnect()


def test_ntlm_in_alter_context(labs):
    """Unauthenticated bind, then alter_context carrying the NTLM NEGOTIATE
    (alter_context_resp carries the CHALLENGE), then AUTH3."""
    lab = labs['privacy']
    m = lab.mark()
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:127.0.0.1[%d]' % lab.ports['rfr'])
    t.set_credentials('alice', PASSWORD, 'LAB')
    d = t.get_dce_rpc()
    d.connect()
    d.bind(oxabref.MSRPC_UUID_OXABREF)
    d.set_auth_level(PRIVACY)
    d.bind(oxabref.MSRPC_UUID_OXABREF, alter=1)
    assert rfr_answers(d)[0] == 'exlab01.lab.example'
    d.disconnect()
    log = lab.log_since(m)
    assert 'rfr: alter_context ctx 0' in log
    assert 'auth: NTLM user=LAB\\alice level=privacy' in log


def test_user_with_domain(labs):
    lab = labs['connect']
    m = lab.mark()
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'bob', 'b:o:b', 'OTHER', INTEGRITY)
    assert rfr_answers(d)[0] == 'exlab01.lab.example'
    d.disconnect()
    assert 'auth: NTLM user=OTHER\\bob level=integrity' in lab.log_since(m)
    # same user in a domain he does not belong to
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'bob', 'b:o:b', 'LAB', INTEGRITY)
    with pytest.raises(DCERPCException) as e:
        rfr_answers(d)
    assert 'rpc_s_access_denied' in str(e.value)
    d.disconnect()


@pytest.mark.parametrize('require', ['none', 'connect', 'privacy'])
@pytest.mark.parametrize('user,password', [('alice', 'wrong'), ('mallory', PASSWORD)],
                         ids=['wrong-password', 'unknown-user'])
def test_bad_credentials_refused(labs, require, user, password):
    lab = labs[require]
    m = lab.mark()
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, user, password, 'LAB', PRIVACY)
    for _ in range(2):      # every call on the association is refused
        with pytest.raises(DCERPCException) as e:
            oxabref.hRfrGetNewDSA(d, ALICE)
        assert 'rpc_s_access_denied' in str(e.value)
    d.disconnect()
    log = lab.log_since(m)
    reason = 'wrong password for LAB\\alice' if user == 'alice' else 'unknown user LAB\\mallory'
    assert 'auth: NTLM logon refused: %s' % reason in log, log
    assert 'fault nca_s_fault_access_denied' in log
    assert 'RfrGetNewDSA' not in log


@pytest.mark.parametrize('require', ['connect', 'privacy'])
def test_no_auth_refused_when_required(labs, require):
    lab = labs[require]
    m = lab.mark()
    for port, iface in ((lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF),
                        (lab.ports['nspi'], nspi.MSRPC_UUID_NSPI)):
        d = dce(port, iface)            # the bind itself is accepted
        with pytest.raises(DCERPCException) as e:
            if iface == nspi.MSRPC_UUID_NSPI:
                nspi.hNspiBind(d)
            else:
                oxabref.hRfrGetNewDSA(d, ALICE)
        assert 'rpc_s_access_denied' in str(e.value)
        d.disconnect()
    log = lab.log_since(m)
    assert 'auth: none: level none below required %s' % require in log, log


@pytest.mark.parametrize('level', [CONNECT, INTEGRITY], ids=['connect', 'integrity'])
def test_lower_level_refused(labs, level):
    lab = labs['privacy']
    m = lab.mark()
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', level)
    with pytest.raises(DCERPCException) as e:
        oxabref.hRfrGetNewDSA(d, ALICE)
    assert 'rpc_s_access_denied' in str(e.value)
    d.disconnect()
    assert ('auth: NTLM user=LAB\\alice level=%s: level %s below required privacy'
            % (LEVEL_NAMES[level], LEVEL_NAMES[level])) in lab.log_since(m)


def test_unknown_auth_type_bind_nak(labs):
    """Kerberos / SPNEGO binds get bind_nak reason 8 (authentication type not recognized)."""
    lab = labs['connect']
    m = lab.mark()
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:127.0.0.1[%d]' % lab.ports['rfr'])
    t.set_credentials('alice', PASSWORD, 'LAB')
    d = t.get_dce_rpc()
    d.set_auth_level(INTEGRITY)
    d.set_auth_type(rpcrt.RPC_C_AUTHN_NETLOGON)     # auth type 0x44, simplest non-NTLM token
    d.connect()
    with pytest.raises(DCERPCException) as e:
        d.bind(oxabref.MSRPC_UUID_OXABREF)
    assert 'authentication type not recognized' in str(e.value).lower() or \
        'authentication_type_not_recognized' in str(e.value).lower(), str(e.value)
    assert 'auth type 68 not supported (only NTLM 10 and SPNEGO/NTLM 9)' in lab.log_since(m)
    d.disconnect()


def _capture_recv(d):
    """Wraps the transport's recv so the raw PDUs stay visible."""
    t = d.get_rpc_transport()
    seen = []
    orig = t.recv

    def recv(*a, **kw):
        data = orig(*a, **kw)
        seen.append(data)
        return data
    t.recv = recv
    return seen


@pytest.mark.parametrize('level', [INTEGRITY, PRIVACY], ids=['integrity', 'privacy'])
def test_fault_is_signed(labs, level):
    """A fault on a signed/sealed association carries a verifier with the next
    server sequence number; checking it keeps the client's RC4 state in step,
    so the association goes on working."""
    lab = labs['privacy' if level == PRIVACY else 'connect']
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', level)
    assert rfr_answers(d)[0] == 'exlab01.lab.example'          # server seq 0, 1
    seen = _capture_recv(d)
    with pytest.raises(DCERPCException) as e:
        d.call(9, b'\x00' * 8)                                 # unknown opnum
        d.recv()
    assert 'op_rng_error' in str(e.value)
    pdu = b''.join(seen)
    ptype, flags = pdu[2], pdu[3]
    frag_len, auth_len = struct.unpack('<HH', pdu[8:12])
    assert ptype == 3 and auth_len == 16 and frag_len == len(pdu) == 32 + 8 + 16
    assert struct.unpack('<L', pdu[24:28])[0] == 0x1c010002
    assert pdu[32:34] == bytes([10, level])
    flags = d._DCERPC_v5__flags
    key = d._DCERPC_v5__serverSigningKey
    handle = d._DCERPC_v5__serverSealingHandle
    sig = ntlm.MAC(flags, handle, key, 2, pdu[:-16]).getData()
    assert sig == pdu[-16:]
    assert rfr_answers(d)[0] == 'exlab01.lab.example'
    d.disconnect()


@pytest.mark.parametrize('level', [INTEGRITY, PRIVACY], ids=['integrity', 'privacy'])
def test_bad_signature_closes_association(labs, level):
    lab = labs['connect']
    m = lab.mark()
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', level)
    assert rfr_answers(d)[0] == 'exlab01.lab.example'
    t = d.get_rpc_transport()
    orig = t.send

    def send(data, *a, **kw):
        if data[2] == 0:        # request: flip one bit of the verifier's checksum
            data = data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]
        return orig(data, *a, **kw)
    t.send = send
    with pytest.raises(DCERPCException) as e:
        oxabref.hRfrGetNewDSA(d, ALICE)
    assert '00000721' in str(e.value)                   # nca_s_fault_sec_pkg_error
    sock = t.get_socket()
    sock.settimeout(5)
    assert sock.recv(1) == b''                          # the lab closed the connection
    log = lab.log_since(m)
    assert 'bad signature (seq 2) -> fault nca_s_fault_sec_pkg_error, closing' in log, log


# ---------------------------------------------------------------------------
# tshark decrypts a sealed call with the password
# ---------------------------------------------------------------------------
def test_tshark_decrypts_sealed_call(labs, tmp_path):
    import tshark_util as TU
    reason = TU.tshark_available()
    if reason:
        pytest.skip(reason)
    lab = labs['privacy']
    port = lab.ports['rfr']
    pcap = str(tmp_path / 'sealed.pcapng')
    with TU.Capture([port], path=pcap):
        d = dce(port, oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', PRIVACY)
        assert rfr_answers(d)[0] == 'exlab01.lab.example'
        d.disconnect()
    pdus = TU.dissect(pcap, [port], nt_password=PASSWORD)
    types = [p.ptype_name for p in pdus]
    assert types[:3] == ['bind', 'bind_ack', 'auth3'], pdus
    reqs = [p for p in pdus if p.ptype == 0]
    resps = [p for p in pdus if p.ptype == 2]
    assert len(reqs) == 2 and len(resps) == 2, pdus
    for p in reqs + resps:
        assert p.auth_level == 6 and p.encrypted and p.decrypted, p
    assert [p.opnum for p in reqs] == [0, 1]
    text = TU.text(pcap, [port], nt_password=PASSWORD, verbose=True)
    assert 'exlab01.lab.example' in text
    assert 'alice' in text
    # without the password the stubs stay sealed
    for p in TU.dissect(pcap, [port]):
        if p.ptype in (0, 2):
            assert p.encrypted and not p.decrypted, p


@pytest.mark.parametrize('level', [None, PRIVACY], ids=['none', 'privacy'])
def test_epm_never_requires_auth(labs, level):
    """The endpoint mapper answers unauthenticated clients even with
    --require-auth privacy (as Windows does), and NTLM works there too."""
    lab = labs['privacy']
    user = 'alice' if level else None
    m = lab.mark()
    d = dce(lab.ports['epm'], None, user, PASSWORD, 'LAB', level)     # hept_map binds
    tower = epm.hept_map('127.0.0.1', nspi.MSRPC_UUID_NSPI, protocol='ncacn_ip_tcp', dce=d)
    assert tower == 'ncacn_ip_tcp:127.0.0.1[%d]' % lab.ports['nspi']
    d.disconnect()
    assert re.search(r'epm: call \d+ ctx 0 opnum 3 auth: %s$' % re.escape(
        'NTLM user=LAB\\alice level=privacy' if level else 'none'), lab.log_since(m), re.M)


# ---------------------------------------------------------------------------
# Samba's client (python3-samba): an independent NTLM / SPNEGO implementation
# that sends an NTLM MIC and checks the lab's signatures and sequence numbers.
# ---------------------------------------------------------------------------
SAMBA_CLIENT = r"""
import sys
from samba.dcerpc import epmapper, misc
from samba import credentials, param
port, opts, user, password, domain = sys.argv[1:6]
lp = param.LoadParm()
creds = credentials.Credentials()
creds.guess(lp)
creds.set_username(user)
creds.set_password(password)
creds.set_domain(domain)
creds.set_workstation('WS1')
creds.set_kerberos_state(credentials.DONT_USE_KERBEROS)
c = epmapper.epmapper('ncacn_ip_tcp:127.0.0.1[%s,%s]' % (port, opts), lp, creds)
for _ in range(2):
    h, entries, result = c.epm_Lookup(0, None, None, 0, misc.policy_handle(), 10)
    print(result, sorted(e.annotation for e in entries))
"""


def samba_epm(port, opts, user='alice', password=PASSWORD, domain='LAB'):
    """Two ept_lookup calls with Samba's client, in a subprocess (python3-samba's
    raw ClientConnection crashes with credentials, so its epmapper class is
    used, on the lab's epm listener)."""
    try:
        import samba.dcerpc.epmapper  # noqa: F401
    except ImportError:
        pytest.skip('python3-samba not installed')
    r = subprocess.run([PY, '-c', SAMBA_CLIENT, str(port), opts, user, password, domain],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    return r.returncode, r.stdout


@pytest.mark.parametrize('opts,level', [
    ('ntlm,seal', 'privacy'), ('ntlm,sign', 'integrity'), ('ntlm,connect', 'connect'),
    ('spnego,seal', 'privacy'), ('spnego,sign', 'integrity'), ('spnego,connect', 'connect')])
def test_samba_client(labs, opts, level):
    lab = labs['privacy']
    m = lab.mark()
    rc, out = samba_epm(lab.ports['epm'], opts)
    assert rc == 0, out
    want = "0 ['Exchange Server STORE ASYNCEMSMDB Interface', 'Exchange Server STORE EMSMDB " \
        "Interface', 'MS Exchange Directory NSPI Proxy', 'MS Exchange Directory RFR Interface']"
    assert out.splitlines() == [want, want], out
    log = lab.log_since(m)
    via = ' via=spnego' if opts.startswith('spnego') else ''
    assert log.count('auth: NTLM user=LAB\\alice level=%s%s' % (level, via)) == 2, log
    if via and level != 'connect':
        assert '(mechListMIC exchanged)' in log


@pytest.mark.parametrize('opts', ['ntlm,seal', 'spnego,seal'])
def test_samba_client_wrong_password(labs, opts):
    lab = labs['privacy']
    m = lab.mark()
    rc, out = samba_epm(lab.ports['epm'], opts, password='nope')
    # NTLM: the call gets fault 0x5 (NT_STATUS_ACCESS_DENIED); SPNEGO: the
    # alter_context carrying the AUTHENTICATE gets it (NT_STATUS_LOGON_FAILURE)
    want = 'Access Denied' if opts.startswith('ntlm') else 'NT_STATUS_LOGON_FAILURE'
    assert rc != 0 and want in out, out
    log = lab.log_since(m)
    assert 'wrong password for LAB\\alice' in log, log
    assert 'ept_lookup' not in log
