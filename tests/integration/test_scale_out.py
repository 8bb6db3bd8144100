"""Two mapiproxy instances behind HAProxy 2.6 (code we did not write), with
the configuration shipped in deploy/haproxy-mapiproxy.cfg used as it stands
(doc/scale-out.md): sessions stick to one instance (source-address affinity
for RPC associations, the MAPI/HTTP session cookie for MAPI/HTTP); one
instance is killed and its clients log on again through the other.

Loopback addresses: HAProxy on 127.0.0.20, the instances on 127.0.0.21 and
127.0.0.22 with the same ports; the RPC clients connect from their own
source addresses 127.0.1.N (the whole 127/8 is local)."""
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest
import requests
from requests.auth import HTTPBasicAuth

from conftest import ROOT, free_port
from rpcutil import NDR20, NSPI, bind_pdu, read_pdu, request_pdu
from impacket.dcerpc.v5 import nspi

HAPROXY_CFG = os.path.join(ROOT, "deploy", "haproxy-mapiproxy.cfg")
VIP, INST = "127.0.0.20", ("127.0.0.21", "127.0.0.22")

if subprocess.run(["which", "haproxy"], capture_output=True).returncode:
    pytest.skip("haproxy is not installed (scripts/install-deps.sh installs it)",
                allow_module_level=True)


class HAProxy:
    def __init__(self, tmp_path, env):
        self.env = {**os.environ, **env}
        chk = subprocess.run(["haproxy", "-c", "-f", HAPROXY_CFG], env=self.env,
                             capture_output=True, text=True)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        self.lines = []
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", HAPROXY_CFG], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, pattern, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            if any(re.search(pattern, l) for l in self.lines):
                return
            time.sleep(0.1)
        raise AssertionError(f"HAProxy never logged {pattern!r}:\n" + "\n".join(self.lines[-40:]))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_tcp(host, port, ha, timeout=20):
    end = time.time() + timeout
    while time.time() < end and ha.proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"HAProxy does not listen on {host}:{port}:\n" + "\n".join(ha.lines))


def kill(p):
    """SIGKILL: the instance dies as a crashed or unplugged one would."""
    p.proc.kill()
    p.proc.wait()
    p.killed = True


def instances(make_proxy, lab_epm, epm_port, rpc_port, extra=None, wait_ports=()):
    extra = {"mapiproxy:max connections per address": "0", **(extra or {})}
    out = []
    for ip in INST:
        e = {k: v.replace("{ip}", ip) for k, v in extra.items()}
        out.append(make_proxy(upstream_epm_port=lab_epm, listen=ip, epm_port=epm_port,
                              rpc_port=rpc_port, extra=e, wait_ports=wait_ports))
    return out


def vip_pem(d, ca="ca"):
    """HAProxy's certificate and key in one PEM, for mail.proxy.test and VIP,
    signed by d's CA (http_peer.make_ca's ca.pem / ca.key)."""
    from http_peer import make_cert
    cert, key = make_cert(d, ca, "vip", ["DNS:mail.proxy.test", f"IP:{VIP}"])
    pem = os.path.join(d, "vip-full.pem")
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return pem


def haproxy_env(epm_port, rpc_port, https_port, pem, ca):
    return {"MP_VIP": VIP, "MP_INSTANCE_1": INST[0], "MP_INSTANCE_2": INST[1],
            "MP_EPM_PORT": str(epm_port), "MP_RPC_PORT": str(rpc_port),
            "MP_HTTPS_PORT": str(https_port), "MP_TLS_PEM": pem,
            "MP_CA_FILE": ca, "MP_PUBLIC_NAME": "mail.proxy.test"}


def connect_from(src, port):
    s = socket.socket()
    s.settimeout(10)
    s.bind((src, 0))
    s.connect((VIP, port))
    return s


def nspi_bind(s, call_id=2):
    b = nspi.NspiBind()
    b["dwFlags"] = 0
    b["pStat"]["CodePage"] = 1252
    b["pServerGuid"] = b"\0" * 16
    s.sendall(request_pdu(call_id, 0, b.getData()))
    r = read_pdu(s)
    assert r and r[0] == 2, r
    return r[3][24:44]


class Client:
    """An RPC client on its own source address: connection 1 binds NSPI and
    NspiBinds; connection 2 joins its association group, as Outlook's second
    connection does, and must reach the same instance for the handle to work."""

    def __init__(self, src, port):
        self.src, self.port = src, port
        self.s1 = connect_from(src, port)
        self.s1.sendall(bind_pdu([(NSPI, [NDR20])]))
        ack = read_pdu(self.s1)
        assert ack and ack[0] == 12, ack
        self.group = struct.unpack_from("<I", ack[3], 20)[0]
        self.handle = nspi_bind(self.s1)
        self.local_port = self.s1.getsockname()[1]

    def join_and_unbind(self):
        s2 = connect_from(self.src, self.port)
        s2.sendall(bind_pdu([(NSPI, [NDR20])], assoc_group=self.group))
        ack = read_pdu(s2)
        assert ack[0] == 12
        joined = struct.unpack_from("<I", ack[3], 20)[0] == self.group
        s2.sendall(request_pdu(7, 1, self.handle + b"\0\0\0\0"))  # NspiUnbind
        r = read_pdu(s2)
        s2.close()
        return joined, r[0] == 2 and r[3][24:44] == b"\0" * 20

    def close(self):
        self.s1.close()


def servers_by_source(ha, backend):
    """{source ip: {server, ...}} from HAProxy's tcplog lines."""
    out = {}
    for l in ha.lines:
        m = re.match(r"(\d+\.\d+\.\d+\.\d+):\d+ \[[^\]]+\] \S+ " + backend + r"/(mp\d)", l)
        if m:
            out.setdefault(m.group(1), set()).add(m.group(2))
    return out


def test_rpc_associations_stick_and_fail_over(tmp_path, lab, make_proxy):
    epm_port, rpc_port = free_port(), free_port()
    a, b = instances(make_proxy, lab.epm_port, epm_port, rpc_port)
    from http_peer import make_ca
    ca = make_ca(str(tmp_path), "ca")
    ha = HAProxy(tmp_path, haproxy_env(epm_port, rpc_port, free_port(), vip_pem(str(tmp_path)), ca))
    try:
        wait_tcp(VIP, rpc_port, ha)
        # the endpoint mapper through HAProxy names the port every instance shares
        from impacket.dcerpc.v5 import epm, transport
        dce = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{VIP}[{epm_port}]").get_dce_rpc()
        dce.connect()
        assert epm.hept_map(VIP, NSPI, protocol="ncacn_ip_tcp", dce=dce) == \
            f"ncacn_ip_tcp:{VIP}[{rpc_port}]"
        dce.disconnect()
        clients = []
        for n in range(1, 25):  # one after the other, as clients arrive
            c = Client(f"127.0.1.{n}", rpc_port)
            assert c.join_and_unbind() == (True, True), c.src
            clients.append(c)
        # HAProxy logs a TCP session when it ends
        for c in clients:
            c.close()
        ha.wait(r"127\.0\.1\.24:\d+ .* mapiproxy_rpc/mp\d")
        time.sleep(0.5)
        by_src = servers_by_source(ha, "mapiproxy_rpc")
        assert all(len(v) == 1 for v in by_src.values()), by_src
        used = {next(iter(v)) for v in by_src.values()}
        assert used == {"mp1", "mp2"}, f"source hashing used only {used}"
        on_a = [c for c in clients if by_src[c.src] == {"mp1"}]

        kill(a)
        ha.wait(r"Server mapiproxy_rpc/mp1 is DOWN")
        # the clients of the dead instance log on again, through the other
        for c in on_a:
            again = Client(c.src, rpc_port)
            assert again.join_and_unbind() == (True, True)
            again.close()
        time.sleep(1.5)  # the last tcplog lines
        moved = servers_by_source(ha, "mapiproxy_rpc")
        assert all("mp2" in moved[c.src] for c in on_a)
        assert "Sanitizer" not in b.log()
    finally:
        ha.stop()


def test_mapihttp_sessions_stick_by_cookie_and_fail_over(tmp_path, make_proxy):
    from test_http_front_lab import ALICE, PASSWORDS, start_lab_https
    import mapihttp_client as MH
    d = str(tmp_path)
    lab_proc, env = start_lab_https(d)
    try:
        https_port, epm_port, rpc_port = free_port(), free_port(), free_port()
        a, b = instances(make_proxy, 1, epm_port, rpc_port, wait_ports=(https_port,), extra={
            "mapiproxy:http listen": f"{{ip}}:{https_port}",
            "mapiproxy:tls certificate": env["proxy_cert"][0],
            "mapiproxy:tls key": env["proxy_cert"][1],
            "mapiproxy:tls ca file": env["ca"],
            "mapiproxy:http upstream": f"https://localhost:{env['mapihttp']}",
            "mapiproxy:http upstream names": "exlab01.lab.example",
            "mapiproxy:http public name": "mail.proxy.test",
        })
        ha = HAProxy(tmp_path, haproxy_env(epm_port, rpc_port, https_port, vip_pem(d), env["ca"]))
        try:
            wait_tcp(VIP, https_port, ha)
            base = f"https://{VIP}:{https_port}"
            auth = HTTPBasicAuth("LAB\\alice", PASSWORDS["alice"])
            sessions = []
            for _ in range(5):
                ems = MH.EmsmdbHttp(base, auth=auth, verify=env["ca"])
                assert ems.connect(ALICE)["ErrorCode"] == 0
                sessions.append(ems)
            # an order that a balancer without affinity would not map back to
            # each session's instance: forwards, backwards, rotated
            for order in (sessions, sessions[::-1], sessions[2:] + sessions[:2]):
                for ems in order:
                    ems.http.close()  # each request on a new connection, as Outlook's several
                    assert ems.ping().code == 0
            time.sleep(1)
            # httplog: "... mapiproxy_https mapiproxy_https/mpN ... {cookie|type} ..."
            served = {}
            for l in ha.lines:
                m = re.search(r"mapiproxy_https/(mp\d) .*\{([^|}]*)\|([^}]*)\}", l)
                if m:
                    served.setdefault(m.group(2), []).append((m.group(1), m.group(3)))
            cookies = {ems.http.cookies.get("MapiContext") for ems in sessions}
            assert len(cookies) == 5
            for ck in cookies:
                pings = served.get(ck, [])
                assert len(pings) >= 3 and len({srv for srv, _ in pings}) == 1, (ck, pings)
            home = {ck: served[ck][0][0] for ck in cookies}
            assert set(home.values()) == {"mp1", "mp2"}, home

            kill(a)
            ha.wait(r"Server mapiproxy_https/mp1 is DOWN")
            for ems in sessions:
                if home[ems.http.cookies.get("MapiContext")] != "mp1":
                    assert ems.ping().code == 0  # the other instance's sessions go on
                    continue
                ems.http.cookies.clear()  # the session died with its instance: log on again
                assert ems.connect(ALICE)["ErrorCode"] == 0
                assert ems.ping().code == 0
            assert "Sanitizer" not in b.log()
        finally:
            ha.stop()
    finally:
        lab_proc.send_signal(signal.SIGTERM)
        lab_proc.wait(10)
