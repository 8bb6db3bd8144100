"""RPC over HTTP, logons terminated on the proxy (mapiproxy:http auth =
terminate, Basic): a virtual connection takes channels of its first
channel's identity only.  The virtual connection cookie is the client's
secret; a leaked one must not let another account pair its own OUT
channel with the victim's IN channel (it would read the victim's
responses) or add a channel to it.  With mapiproxy:workers = 2 the check
runs where the virtual connection is, after a channel was moved there.
The RTS PDUs are Impacket's (hCONN_A1, hCONN_B1); the HTTP heads are
written here."""
import base64
import os
import re
import socket
import ssl
import time

import pytest
from impacket.dcerpc.v5.rpch import hCONN_A1, hCONN_B1
from impacket.ntlm import compute_nthash

from test_rpch import ALICE_PW, rpch_lab_env, start

BOB_PW = "B0b-Other!"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-id")))


def channel(p, method, user, pw, body, length):
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    s = tls.wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=10))
    basic = base64.b64encode(f"LAB\\{user}:{pw}".encode()).decode()
    s.sendall(method + b" /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Basic " + basic.encode() +
              b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body)
    return s


def head_of(s):
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    except (ConnectionError, ssl.SSLError, socket.timeout):
        pass
    return head.split(b"\r\n\r\n")[0].decode(errors="replace")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_channel_of_another_identity_refused(make_proxy, env, tmp_path, workers):
    creds = tmp_path / "users"
    creds.write_text(f"alice:LAB:{compute_nthash(ALICE_PW).hex()}\n"
                     f"bob:LAB:{compute_nthash(BOB_PW).hex()}\n")
    os.chmod(creds, 0o600)
    p = start(make_proxy, env, **{"mapiproxy:credentials file": str(creds),
                                  "mapiproxy:workers": workers})
    socks = []
    try:
        vc = os.urandom(16)
        socks.append(channel(p, b"RPC_IN_DATA", "alice", ALICE_PW,
                             hCONN_B1(vc, os.urandom(16), os.urandom(16)), 1073741824))
        time.sleep(0.5)
        # bob's OUT channel with alice's virtual connection cookie: refused, no 200
        s = channel(p, b"RPC_OUT_DATA", "bob", BOB_PW, hCONN_A1(vc, os.urandom(16), 65536), 76)
        socks.append(s)
        head = head_of(s)
        assert not head.startswith("HTTP/1.1 200"), head
        deadline = time.time() + 10
        while time.time() < deadline and "another identity" not in p.log():
            time.sleep(0.1)
        assert "another identity" in p.log(), p.log()[-3000:]
        # alice's own OUT channel pairs with her IN channel
        s = channel(p, b"RPC_OUT_DATA", "alice", ALICE_PW,
                    hCONN_A1(vc, os.urandom(16), 65536), 76)
        socks.append(s)
        assert head_of(s).startswith("HTTP/1.1 200")
        deadline = time.time() + 10
        while time.time() < deadline and "virtual connection open" not in p.log():
            time.sleep(0.1)
    finally:
        for s in socks:
            s.close()
    p.stop()
    log = p.log()
    assert "virtual connection open" in log, log[-3000:]
    assert ALICE_PW not in log and BOB_PW not in log
    print(re.findall(r".*(?:handed over|adopted|another identity).*", log))
