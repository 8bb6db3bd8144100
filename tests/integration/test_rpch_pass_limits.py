"""HTTP logon pass-through for RPC over HTTP (src/transport/rpch/hpass.c):
while a logon leg waits for the upstream's answer, the client may not make
the proxy buffer more than one request head.  The upstream here is a TCP
listener that never answers (the leg stays out); the client (Python's ssl
socket) sends an NTLM NEGOTIATE leg, then streams bytes: the proxy closes
the connection with a log line, and stays up."""
import os
import socket
import ssl
import sys
import time

import pytest

from conftest import ROOT
from test_rpch import rpch_lab_env, start

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

NEGOTIATE = "TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw=="


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch-pass-limits")))


def test_client_stream_during_leg_closed(make_proxy, env):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    port = silent.getsockname()[1]
    p = start(make_proxy, env, **{"mapiproxy:http auth": "pass-through",
                                  "mapiproxy:rpc over http upstream": f"http://127.0.0.1:{port}",
                                  "mapiproxy:rpc over http upstream server": "EXLAB01"})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", p.http_port), timeout=20)
    s = ctx.wrap_socket(raw)
    s.sendall(("RPC_IN_DATA /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n"
               "Content-Length: 0\r\nAuthorization: NTLM %s\r\n\r\n" % NEGOTIATE).encode())
    up, _ = silent.accept()  # the leg reached the upstream, which says nothing
    up.settimeout(5)
    closed = False
    try:
        for _ in range(256):  # 4 MB at most
            s.sendall(b"x" * 16384)
        s.settimeout(20)
        closed = s.recv(100) == b""
    except (ConnectionError, ssl.SSLError, OSError):
        closed = True
    assert closed, "the proxy kept buffering the client's bytes"
    deadline = time.time() + 10
    while "while the upstream answers a leg" not in p.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "while the upstream answers a leg" in p.log(), p.log()[-3000:]
    assert p.alive()
    s.close()
    up.close()
    silent.close()
    p.stop()
