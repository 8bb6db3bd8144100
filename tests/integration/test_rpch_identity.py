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
from test_rpch_passthrough import pass_opts, raw_channel, read_head, read_until_closed

BOB_PW = "B0b-Other!"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-id")))


def channel(p, method, user, pw, body, length):
    s = raw_channel(p.http_port)
    basic = base64.b64encode(f"LAB\\{user}:{pw}".encode()).decode()
    s.sendall(method + b" /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Authorization: Basic " + basic.encode() +
              b"\r\nContent-Length: " + str(length).encode() + b"\r\n\r\n" + body)
    return s


def head_of(s):
    try:
        head = read_head(s)
    except (ConnectionError, ssl.SSLError, socket.timeout):
        head = b""
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


def test_upstream_status_line_is_not_raw_in_the_log(make_proxy, env):
    """Pass-through: an upstream refusing the channel request's logon with a
    status line that carries a bare LF (and a forged log line after it) is
    logged with the control bytes replaced: one log line, nothing forged."""
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def refuse():
        c, _ = srv.accept()
        c.settimeout(10)
        try:
            read_head(c)
            c.sendall(b"HTTP/1.1 401 No\n2099-01-01T00:00:00Z info  forged\r\n"
                      b"Content-Length: 0\r\n\r\n")
            time.sleep(2)
        finally:
            c.close()
    threading.Thread(target=refuse, daemon=True).start()
    over = pass_opts(env)
    over["mapiproxy:rpc over http upstream"] = f"http://127.0.0.1:{srv.getsockname()[1]}"
    p = start(make_proxy, env, **over)
    s = raw_channel(p.http_port)
    cred = base64.b64encode(b"LAB\\alice:" + ALICE_PW.encode())
    s.sendall(b"RPC_IN_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n"
              b"Authorization: Basic " + cred + b"\r\nContent-Length: 1073741824\r\n\r\n")
    read_until_closed(s)
    s.close()
    p.stop()
    srv.close()
    log = p.log()
    assert "the upstream answered the channel request" in log, log[-2000:]
    assert not re.search(r"(?m)^2099-01-01T00:00:00Z info  forged", log), log[-2000:]
    assert "HTTP/1.1 401 No?2099" in log, log[-2000:]
