"""MAPI over HTTP under load and bad input, through the HTTPS front (the
optimized build, measured from /proc) to the lab's MAPI/HTTP server:

- 1,000 NotificationWait long-polls parked at once: while they wait, the
  proxy's memory and CPU time stay flat (no thread, no polling per request);
  then new mail wakes them all and each gets its answer;
- bad MAPI/HTTP bodies get the spec's X-ResponseCode while another
  client's session goes on."""
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import ROOT, free_port
from http_peer import make_ca, make_cert

LAB_DIR = os.path.join(ROOT, "tests", "lab")
sys.path.insert(0, LAB_DIR)
import emsmdb_client as EC  # noqa: E402
import mapihttp_client as MH  # noqa: E402

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
ALICE = ORG + "/cn=Recipients/cn=alice"
PASSWORD = "Alice-Pw.1"
PARKED = 1000


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("mhload"))
    ca = make_ca(d, "ca")
    lab_cert = make_cert(d, "ca", "lab", ["DNS:localhost"])
    proxy_cert = make_cert(d, "ca", "proxy", ["DNS:mail.proxy.test", "IP:127.0.0.1"])
    users = os.path.join(d, "users")
    with open(users, "w") as f:
        f.write(f"alice:LAB:{PASSWORD}\n")
    log = open(os.path.join(d, "lab.log"), "w")
    proc = subprocess.Popen(
        ["/usr/bin/python3", os.path.join(LAB_DIR, "exchange_lab.py"), "--host", "127.0.0.1",
         "--epm-port", "0", "--mapihttp-port", "0", "--tls-cert", lab_cert[0], "--tls-key",
         lab_cert[1], "--users", users, "--http-auth", "basic", "--notification-wait", "120",
         "--pending-period", "300"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY ") and "mapihttp=" in line, line
    ports = dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))
    yield {"ca": ca, "proxy_cert": proxy_cert, "mapihttp": ports["mapihttp"],
           "log": os.path.join(d, "lab.log")}
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    log.close()


def front(make_proxy, lab, binary=None, extra=None):
    port = free_port()
    opts = {"mapiproxy:http listen": f"127.0.0.1:{port}",
            "mapiproxy:tls certificate": lab["proxy_cert"][0],
            "mapiproxy:tls key": lab["proxy_cert"][1],
            "mapiproxy:tls ca file": lab["ca"],
            "mapiproxy:http upstream": f"https://localhost:{lab['mapihttp']}",
            "mapiproxy:http public name": "mail.proxy.test",
            "mapiproxy:max connections": "5000"}
    opts.update(extra or {})
    p = make_proxy(upstream_epm_port=1, wait_ports=(port,), extra=opts,
                   binary=binary)
    p.base = f"https://127.0.0.1:{port}"
    p.http_port = port
    return p


def basic():
    return requests.auth.HTTPBasicAuth("LAB\\alice", PASSWORD)


def proc_usage(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = [int(x.split()[1]) for x in f if x.startswith("VmRSS:")][0]
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def count_in(path, text):
    with open(path) as f:
        return f.read().count(text)


def test_thousand_parked_notification_waits(make_proxy, lab):
    p = front(make_proxy, lab, binary=os.path.join(ROOT, "build", "mapiproxy"))
    ems = MH.EmsmdbHttp(p.base, auth=basic(), verify=lab["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    cookies = "; ".join(f"{k}={v}" for k, v in ems.http.cookies.get_dict().items())
    auth = requests.auth._basic_auth_str("LAB\\alice", PASSWORD)
    ctx = ssl.create_default_context(cafile=lab["ca"])
    body = b"\x00" * 8                                  # Flags, AuxiliaryBufferSize
    req = (f"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: mail.proxy.test\r\n"
           f"Authorization: {auth}\r\nCookie: {cookies}\r\n"
           f"Content-Type: application/mapi-http\r\nX-RequestType: NotificationWait\r\n"
           f"X-RequestId: {{1}}:1\r\nX-ClientInfo: {{1}}:1\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    rss0, cpu0 = proc_usage(p.proc.pid)
    parks0 = count_in(lab["log"], "NotificationWait flags=0x0 parks")
    socks = []
    for _ in range(PARKED):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=120),
                            server_hostname="mail.proxy.test")
        s.sendall(req)
        socks.append(s)
    deadline = time.time() + 120
    while count_in(lab["log"], "NotificationWait flags=0x0 parks") - parks0 < PARKED:
        assert time.time() < deadline, "not every NotificationWait reached the lab"
        time.sleep(0.2)
    rss1, cpu1 = proc_usage(p.proc.pid)
    time.sleep(3)                                       # all parked: nothing should move
    rss2, cpu2 = proc_usage(p.proc.pid)
    print(f"\nproxy RSS: idle {rss0} KiB, {PARKED} parked {rss1} KiB "
          f"({(rss1 - rss0) / PARKED:.1f} KiB each, TLS on both legs), 3 s later {rss2} KiB; "
          f"CPU while parked: {cpu2 - cpu1:.3f} s")
    assert rss2 - rss1 < 1024, (rss1, rss2)             # flat: under 1 MiB of drift
    assert cpu2 - cpu1 < 0.3, (cpu1, cpu2)              # flat: no polling per request
    # new mail wakes them: every parked request gets its answer
    sub = MH.EmsmdbHttp(p.base, auth=basic(), verify=lab["ca"])
    assert sub.connect(ALICE)["ErrorCode"] == 0
    [logon] = sub.execute(EC.RopBuffer().logon(0, ALICE))
    outbox = logon["FolderIds"][5]
    res = sub.execute(EC.RopBuffer().create_message(0, 1, outbox)
                      .set_properties(1, [(0x0037001F, "wake up")])
                      .save_changes_message(1, 1).submit_message(1))
    assert all(x["ReturnValue"] == 0 for x in res), res
    answered = 0
    for s in socks:
        data = b""
        while b"\r\n0\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        answered += data.startswith(b"HTTP/1.1 200") and b"DONE" in data and \
            b"X-ResponseCode: 0" in data
        s.close()
    assert answered == PARKED
    rss3, _ = proc_usage(p.proc.pid)
    print(f"proxy RSS after they were answered and closed: {rss3} KiB")


def test_bad_bodies_get_response_codes_while_others_go_on(make_proxy, lab):
    """With a module loaded (so bodies are decoded): a truncated Execute body
    gets X-ResponseCode 12 (Invalid Request Body) from the proxy without
    reaching the lab; an unknown X-RequestType and a request without its
    session cookie get the lab's codes; an oversized body gets 413; another
    client's session goes on meanwhile."""
    p = front(make_proxy, lab, extra={"dcerpc_mapiproxy:modules": "trace",
                                      "trace:file": "/dev/null",
                                      "mapiproxy:http max body": "1048576"})
    good = MH.EmsmdbHttp(p.base, auth=basic(), verify=lab["ca"])
    assert good.connect(ALICE)["ErrorCode"] == 0
    bad = MH.EmsmdbHttp(p.base, auth=basic(), verify=lab["ca"])
    assert bad.connect(ALICE)["ErrorCode"] == 0
    before = count_in(lab["log"], "Execute")
    r = bad.post("Execute", b"\x00\x00\x00\x00\x10\x00", check=False)
    assert r.code == 12                                  # Invalid Request Body
    assert count_in(lab["log"], "Execute") == before     # never reached the lab
    r = bad.post("Frobnicate", b"", check=False)
    assert r.code == 5                                   # Invalid Request Type (the lab's)
    nocookie = MH.EmsmdbHttp(p.base, auth=basic(), verify=lab["ca"])
    d, _ = nocookie.execute_raw(EC.RopBuffer().logon(0, ALICE).build([0xFFFFFFFF]),
                                check=False)
    assert d["response"].code in (10, 13)                # no context / missing cookie
    # an oversized body is refused from its Content-Length, before it is sent
    # (a client still uploading when the proxy closes would see a reset)
    ctx = ssl.create_default_context(cafile=lab["ca"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.http_port), timeout=30),
                         server_hostname="mail.proxy.test") as big:
        big.sendall(b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: mail.proxy.test\r\n"
                    b"X-RequestType: Execute\r\nContent-Type: application/mapi-http\r\n"
                    b"Content-Length: 2097152\r\n\r\n")
        assert big.recv(4096).startswith(b"HTTP/1.1 413")
    # the other session is unaffected
    [logon] = good.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    assert good.disconnect()["ErrorCode"] == 0
