"""RPC over HTTP v2 (Outlook Anywhere) terminated by the proxy
(mapiproxy:rpc over http = yes, src/transport/rpch/): Impacket's ncacn_http
client (impacket.dcerpc.v5.rpch, code we did not write, set up as its
exchanger example does) runs NSPI and RFR through the proxy's HTTPS front to
the lab over ncacn_ip_tcp, with RPC-level NTLM at packet privacy, over HTTP
Basic and HTTP NTLM, and gets the answers a direct ncacn_ip_tcp client
gets.  Bad input (a broken RTS PDU, a CONN/B1 for a cookie no OUT channel
names, an OUT channel that never comes, a window overrun) ends that virtual
connection with a log line; the next client goes on."""
import base64
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading

import pytest
from impacket.dcerpc.v5 import transport, oxabref, nspi, rpcrt, rpch
from impacket.http import AUTH_BASIC, AUTH_NTLM
from impacket.ntlm import compute_nthash

from conftest import ROOT, free_port
from rpcutil import NDR20, NSPI, bind_pdu, request_pdu
from http_peer import make_ca, make_cert

LAB_DIR = os.path.join(ROOT, "tests", "lab")
sys.path.insert(0, LAB_DIR)
from test_lab_auth import rfr_answers, nspi_answers  # noqa: E402
from test_lab_rpch import drain, rpch_dce as lab_rpch_dce  # noqa: E402

PRIVACY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY
ALICE_PW = "Cl1ent-Alice"
PROXY_USER, PROXY_PW = "Administrator", "Adm1n!Proxy"


def rpch_files(d, lab_users=""):
    """The certificates and secrets of an RPC-over-HTTP lab and proxy in d:
    (lab cert, proxy cert, the lab's users file (lab_users: more lines for
    it), the proxy's credentials file, the proxy's upstream password file);
    the secret files mode 0600."""
    make_ca(d, "ca")
    lab_cert = make_cert(d, "ca", "lab", ["DNS:localhost", "DNS:exlab01.lab.example"])
    proxy_cert = make_cert(d, "ca", "proxy", ["DNS:mail.proxy.test", "IP:127.0.0.1"])
    users = os.path.join(d, "lab-users")
    with open(users, "w") as f:
        f.write(f"{PROXY_USER}:LAB:{PROXY_PW}\nalice:LAB:{ALICE_PW}\n{lab_users}")
    creds = os.path.join(d, "proxy-users")
    with open(creds, "w") as f:
        f.write(f"alice:LAB:{compute_nthash(ALICE_PW).hex()}\n")
    os.chmod(creds, 0o600)
    pwfile = os.path.join(d, "upstream-password")
    with open(pwfile, "w") as f:
        f.write(PROXY_PW + "\n")
    os.chmod(pwfile, 0o600)
    return lab_cert, proxy_cert, users, creds, pwfile


def rpch_lab_env(d, *lab_args, lab_users=""):
    """Generator: the lab (RPC over HTTP on TLS, privacy required, lab_args
    added) and rpch_files in d; yields the env dict, stops the lab after."""
    lab_cert, proxy_cert, users, creds, pwfile = rpch_files(d, lab_users)
    lab_log = os.path.join(d, "lab.log")
    logf = open(lab_log, "w")
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LAB_DIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", str(free_port()), "--mapihttp-port", "0", "--rpch-port", "0",
         "--tls-cert", lab_cert[0], "--tls-key", lab_cert[1], "--users", users,
         "--require-auth", "privacy", *lab_args],
        stdout=subprocess.PIPE, stderr=logf, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    yield {"ports": ports, "proxy_cert": proxy_cert, "ca": os.path.join(d, "ca.pem"),
           "creds": creds, "pwfile": pwfile, "lab_log": lab_log, "lab_cert": lab_cert}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    logf.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from rpch_lab_env(str(tmp_path_factory.mktemp("rpch")))


def start(make_proxy, env, **over):
    port = free_port()
    extra = {
        "mapiproxy:http listen": f"127.0.0.1:{port}",
        "mapiproxy:tls certificate": env["proxy_cert"][0],
        "mapiproxy:tls key": env["proxy_cert"][1],
        "mapiproxy:tls verify": "no",
        "mapiproxy:http upstream": f"https://localhost:{env['ports']['mapihttp']}",
        "mapiproxy:http auth": "terminate",
        "mapiproxy:http basic": "yes",
        "mapiproxy:credentials file": env["creds"],
        "dcerpc_mapiproxy:username": PROXY_USER,
        "dcerpc_mapiproxy:domain": "LAB",
        "mapiproxy:password file": env["pwfile"],
        "mapiproxy:upstream auth level": "privacy",
        "mapiproxy:rpc over http": "yes",
        "mapiproxy:rpc over http pairing timeout": "2",
        "netbios name": "MAPIPROXY",
    }
    extra.update(over)  # an option given as None is left out (its default)
    extra = {k: v for k, v in extra.items() if v is not None}
    p = make_proxy(upstream_epm_port=env["ports"]["epm"], wait_ports=(port,), extra=extra)
    p.url = f"https://127.0.0.1:{port}/rpc/rpcproxy.dll"
    p.http_port = port
    return p


def rpch_dce(url, rpc_port, iface, http_auth):
    return lab_rpch_dce(url, rpc_port, iface, http_auth, "alice", ALICE_PW)


def tcp_dce(port, iface):
    t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % port)
    t.set_credentials("alice", ALICE_PW, "LAB")
    d = t.get_dce_rpc()
    d.set_auth_level(PRIVACY)
    d.connect()
    d.bind(iface)
    return d


@pytest.fixture(scope="module")
def reference(env):
    d = tcp_dce(env["ports"]["rfr"], oxabref.MSRPC_UUID_OXABREF)
    r = rfr_answers(d)
    d.disconnect()
    d = tcp_dce(env["ports"]["nspi"], nspi.MSRPC_UUID_NSPI)
    n = nspi_answers(d)
    d.disconnect()
    return r, n


@pytest.mark.parametrize("http_auth", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_nspi_rfr_through_proxy(make_proxy, env, reference, http_auth):
    p = start(make_proxy, env)
    d = rpch_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, http_auth)
    assert rfr_answers(d) == reference[0]
    d.disconnect()
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, http_auth)
    assert nspi_answers(d) == reference[1]
    for _ in range(20):  # more than a 64 KiB window each way
        assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert "virtual connection open" in log
    assert ALICE_PW not in log and "TlRMTVNT" not in log


def channel(port, method, length, body=b"", auth=True):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15))
    cred = base64.b64encode(("LAB\\alice:" + ALICE_PW).encode()).decode()
    head = (f"{method} /rpc/rpcproxy.dll?EXLAB01:6004 HTTP/1.1\r\nHost: x\r\n"
            + (f"Authorization: Basic {cred}\r\n" if auth else "")
            + f"Content-Length: {length}\r\n\r\n")
    try:
        s.sendall(head.encode() + body)
    except OSError:  # the proxy may close first (overrun, broken PDU): read what it said
        pass
    return s


def test_bad_input(make_proxy, env, reference):
    # an 8 KiB window: one TLS record (16 KiB) holds more than that
    p = start(make_proxy, env, **{"mapiproxy:rpc over http receive window": "8K"})
    # a CONN/B1 whose cookie no OUT channel names: closed after the pairing timeout
    s = channel(p.http_port, "RPC_IN_DATA", 1 << 30,
                rpch.hCONN_B1(os.urandom(16), os.urandom(16), os.urandom(16)))
    drain(s)
    # an OUT channel whose IN channel never comes
    s = channel(p.http_port, "RPC_OUT_DATA", 76,
                rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    out = drain(s)
    assert out.startswith(b"HTTP/1.1 200")
    # a broken RTS PDU: an unknown command
    a1 = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    a1[20:24] = struct.pack("<L", 99)
    drain(channel(p.http_port, "RPC_OUT_DATA", 76, bytes(a1)))
    # a window overrun: a bind, then requests in one go on the IN channel: more than
    # the 8 KiB window before the association took any of it
    vc, oc, ic = os.urandom(16), os.urandom(16), os.urandom(16)
    o = channel(p.http_port, "RPC_OUT_DATA", 76, rpch.hCONN_A1(vc, oc, 65536))
    bind = bind_pdu([(NSPI, [NDR20])])
    reqs = b"".join(request_pdu(2 + k, 1, b"\0" * 4000) for k in range(20))
    i = channel(p.http_port, "RPC_IN_DATA", 1 << 30,
                rpch.hCONN_B1(vc, ic, os.urandom(16)) + bind + reqs)
    drain(i)
    drain(o)
    # the next client goes on
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == reference[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert "no OUT channel within 2000 ms" in log
    assert "no IN channel within 2000 ms" in log
    assert "unknown RTS command" in log
    assert "overran the IN channel's receive window" in log


def test_options_checked(tmp_path, env):
    """rpc over http without the HTTPS front, or with http auth = pass-through, is
    refused by --check with the option named."""
    from conftest import PROXY_BIN
    base = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
            "mapiproxy:rpc over http = yes"]
    cases = {
        "no-front": base,
        "pass-through": base + [f"mapiproxy:http listen = 127.0.0.1:{free_port()}",
                                f"mapiproxy:tls certificate = {env['proxy_cert'][0]}",
                                f"mapiproxy:tls key = {env['proxy_cert'][1]}",
                                "mapiproxy:http upstream = https://localhost"],
        "window": base + ["mapiproxy:rpc over http receive window = 1M"],
    }
    want = {"no-front": "set mapiproxy:http listen",
            "pass-through": "set mapiproxy:http auth = terminate",
            "window": "mapiproxy:rpc over http receive window"}
    for name, lines in cases.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text("\n".join(lines) + "\n")
        r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0, name
        assert want[name] in r.stdout + r.stderr, (name, r.stdout + r.stderr)
