"""The lab's RPC over HTTP v2 listener (lab_rpch.py) tested directly with
Impacket's ncacn_http client (impacket.dcerpc.v5.rpch, code we did not
write), as its exchanger example uses it: NSPI and RFR with RPC-level NTLM
at packet privacy over HTTP Basic and HTTP NTLM, same answers as over
ncacn_ip_tcp; bad input on the channels.

Run: /usr/bin/python3 -m pytest -q tests/lab/test_lab_rpch.py
"""
import os
import socket
import struct
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from impacket.dcerpc.v5 import transport, oxabref, nspi, rpch  # noqa: E402
from impacket.http import AUTH_BASIC, AUTH_NTLM                       # noqa: E402

from test_lab_auth import (Lab, USERS, PASSWORD, PRIVACY, rfr_answers, nspi_answers,  # noqa
                           dce)

RFR_PORT, NSPI_PORT = 6002, 6004


class RpchLab(Lab):
    def __init__(self, tmpdir, require='privacy'):
        import subprocess
        import threading
        users = os.path.join(str(tmpdir), 'users-rpch.txt')
        with open(users, 'w') as f:
            f.write(USERS)
        self.proc = subprocess.Popen(
            ['/usr/bin/python3', os.path.join(HERE, 'exchange_lab.py'), '--host', '127.0.0.1',
             '--epm-port', '0', '--users', users, '--require-auth', require,
             '--rpch-port', '0'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith('READY '), line
        self.ports = dict((k, int(v)) for k, v in (kv.split('=') for kv in line.split()[1:]))
        self.lines = []
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    lab = RpchLab(tmp_path_factory.mktemp('rpch'))
    yield lab
    lab.stop()


def rpch_dce(url, rpc_port, iface, http_auth, user='alice', password=PASSWORD,
             level=PRIVACY):
    """Impacket's RPC over HTTP v2 client, set up as examples/exchanger.py does."""
    t = transport.DCERPCTransportFactory('ncacn_http:EXLAB01[%d]' % rpc_port)
    t.set_rpc_proxy_url(url)
    t.set_credentials(user, password, 'LAB')
    t.set_auth_type(http_auth)
    d = t.get_dce_rpc()
    d.set_credentials(user, password, 'LAB')
    d.set_auth_level(level)
    d.connect()
    d.bind(iface)
    return d


def url_of(port):
    return 'http://127.0.0.1:%d/rpc/rpcproxy.dll' % port


@pytest.fixture(scope='module')
def reference(lab):
    d = dce(lab.ports['rfr'], oxabref.MSRPC_UUID_OXABREF, 'alice', PASSWORD, 'LAB', PRIVACY)
    r = rfr_answers(d)
    d.disconnect()
    d = dce(lab.ports['nspi'], nspi.MSRPC_UUID_NSPI, 'alice', PASSWORD, 'LAB', PRIVACY)
    n = nspi_answers(d)
    d.disconnect()
    assert r == ('exlab01.lab.example', 'exlab01.lab.example')
    return r, n


@pytest.mark.parametrize('http_auth', [AUTH_BASIC, AUTH_NTLM], ids=['basic', 'ntlm'])
def test_nspi_and_rfr_over_rpch(lab, reference, http_auth):
    mark = lab.mark()
    d = rpch_dce(url_of(lab.ports['rpch']), RFR_PORT, oxabref.MSRPC_UUID_OXABREF, http_auth)
    assert rfr_answers(d) == reference[0]
    d.disconnect()
    d = rpch_dce(url_of(lab.ports['rpch']), NSPI_PORT, nspi.MSRPC_UUID_NSPI, http_auth)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    log = lab.log_since(mark)
    assert 'rpch: virtual connection' in log
    assert ('Basic logon ok' if http_auth == AUTH_BASIC else 'NTLM logon ok') in log
    assert 'auth: NTLM logon ok user=LAB\\alice level=privacy' in log


def test_many_calls_cross_the_window(lab, reference):
    """More than a receive window (64 KiB) each way: flow control acks."""
    d = rpch_dce(url_of(lab.ports['rpch']), NSPI_PORT, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(40):
        assert nspi_answers(d) == reference[1]
    d.disconnect()


def test_wrong_http_password(lab):
    with pytest.raises(Exception):
        rpch_dce(url_of(lab.ports['rpch']), NSPI_PORT, nspi.MSRPC_UUID_NSPI, AUTH_BASIC,
                 password='wrong')


def channel(port, method, length, body=b''):
    s = socket.create_connection(('127.0.0.1', port), timeout=15)
    import base64
    cred = base64.b64encode(('LAB\\alice:' + PASSWORD).encode()).decode()
    s.sendall(('%s /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n'
               'Authorization: Basic %s\r\nContent-Length: %d\r\n\r\n'
               % (method, cred, length)).encode() + body)
    return s


def drain(s):
    out = b''
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    return out


def test_unknown_cookie_and_broken_rts(lab, reference):
    mark = lab.mark()
    b1 = rpch.hCONN_B1(os.urandom(16), os.urandom(16), os.urandom(16))
    s = channel(lab.ports['rpch'], 'RPC_IN_DATA', 1 << 30, b1)
    broken = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    broken[20:24] = struct.pack('<L', 99)        # unknown command
    s2 = channel(lab.ports['rpch'], 'RPC_OUT_DATA', len(broken), bytes(broken))
    drain(s2)
    s2.close()
    drain(s)
    s.close()
    log = lab.log_since(mark)
    assert 'CONN/B1 for unknown virtual connection' in log
    assert 'unknown command 99' in log
    # other sessions go on
    d = rpch_dce(url_of(lab.ports['rpch']), NSPI_PORT, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
