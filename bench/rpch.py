#!/usr/bin/python3
"""RPC over HTTP bench rows (doc/internals/bench.md, "RPC over HTTP").

Impacket's ncacn_http client (HTTP Basic, TLS, RPC-level NTLM at privacy)
calls RfrGetNewDSA in a loop on one virtual connection per client process,
through three relays of the same traffic to the lab (tests/lab, its RFR
server behind its RPC over HTTP listener or on ncacn_ip_tcp):

  HAProxy      HTTP mode, TLS both legs: relays RPC_IN_DATA / RPC_OUT_DATA
               to the lab's /rpc/rpcproxy.dll (the lab terminates RTS)
  mapiproxy    rpc over http = yes: terminates RTS, HTTP Basic and the RPC
               NTLM (it seals again toward the lab with its own logon), the
               inner DCE/RPC through the relay to the lab over ncacn_ip_tcp
  mapiproxy+   the same, upstream RPC over HTTP to the lab's rpcproxy.dll
               (mapiproxy:rpc over http upstream)

Per relay and client count (1, 4): calls/s and the relay's CPU per call (its
utime+stime over the timed run divided by the calls; the clients' logons
and binds are outside the timed run).  The lab is Python and so are the
clients: calls/s is bounded by them; the CPU per call is the relay's own.

Environment: RPCH_SECS [4] seconds per row, HAPROXY [haproxy], MAPIPROXY
[build/mapiproxy], RPCH_RELAYS (e.g. "mapiproxy": only those rows),
MAPIPROXY_BEFORE (another build, e.g. of the previous commit: its rows
"before" and "before+" run in the same run, for a before/after figure)."""
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from benchlib import Procs, free_port  # noqa: E402
B = os.path.join(ROOT, "build")
PROXY = os.environ.get("MAPIPROXY", os.path.join(B, "mapiproxy"))
SECS = float(os.environ.get("RPCH_SECS", "4"))
PW = "Cl1ent-Alice"
P = Procs("mp-bench-rpch-")  # what we start; configs and logs in P.tmpdir
tmp = P.tmpdir
start, stop, wait_port = P.start, P.stop, P.wait_port


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])


def start_lab(cert, key, users):
    p = start("lab", ["/usr/bin/python3", os.path.join(ROOT, "tests", "lab", "exchange_lab.py"),
                      "--host", "127.0.0.1", "--epm-port", str(free_port()),
                      "--mapihttp-port", "0", "--rpch-port", "0", "--tls-cert", cert,
                      "--tls-key", key, "--users", users, "--http-auth", "basic"],
              stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY "):
        sys.exit(f"lab did not start: {line!r}; see {tmp}/lab.log")
    return p, dict((k, int(v)) for k, v in (kv.split("=") for kv in line.split()[1:]))


def start_haproxy(up, ck):
    return P.haproxy_https(up, ck)


def start_mapiproxy(name, ports, cert, key, creds, rpch_up, binary=PROXY):
    port = free_port()
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1
mapiproxy:upstream epmapper port = {ports['epm']}
mapiproxy:listen = 127.0.0.1
mapiproxy:epmapper port = {free_port()}
mapiproxy:rpc port = {free_port()}
mapiproxy:log level = warning
mapiproxy:http listen = 127.0.0.1:{port}
mapiproxy:tls certificate = {cert}
mapiproxy:tls key = {key}
mapiproxy:tls verify = no
mapiproxy:http upstream = https://localhost:{ports['mapihttp']}
mapiproxy:http auth = terminate
mapiproxy:http basic = yes
mapiproxy:credentials file = {creds}
mapiproxy:rpc over http = yes
netbios name = MAPIPROXY
dcerpc_mapiproxy:username = alice
dcerpc_mapiproxy:domain = LAB
dcerpc_mapiproxy:password = {PW}
mapiproxy:upstream auth level = privacy
""")
        if rpch_up:
            f.write(f"mapiproxy:rpc over http upstream = https://localhost:{ports['rpch']}\n"
                    "mapiproxy:rpc over http upstream server = EXLAB01\n")
    p = start(name, [binary, "-c", conf])
    wait_port(port, p, name)
    return p, port


def client(url, secs, ready, go, q):
    from impacket.dcerpc.v5 import oxabref, rpcrt
    from impacket.http import AUTH_BASIC
    from test_lab_rpch import rpch_dce
    d = rpch_dce(url, 6002, oxabref.MSRPC_UUID_OXABREF, AUTH_BASIC, "alice", PW,
                 level=rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dn = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
    oxabref.hRfrGetNewDSA(d, dn)
    ready.put(1)
    go.wait()
    n, end = 0, time.monotonic() + secs
    while time.monotonic() < end:
        oxabref.hRfrGetNewDSA(d, dn)
        n += 1
    q.put(n)
    d.disconnect()


def load(pid, url, clients):
    ctx = multiprocessing.get_context("fork")
    ready, q, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=client, args=(url, SECS, ready, go, q)) for _ in range(clients)]
    for p in ps:
        p.start()
    for _ in ps:
        ready.get(timeout=60)
    t0 = cpu_ticks(pid)
    go.set()
    calls = sum(q.get(timeout=SECS + 60) for _ in ps)
    cpu = (cpu_ticks(pid) - t0) / os.sysconf("SC_CLK_TCK")
    for p in ps:
        p.join(30)
    return calls / SECS, cpu * 1e6 / max(calls, 1)


def main():
    from http_peer import make_ca, make_cert
    from impacket.ntlm import compute_nthash
    if not os.path.exists(PROXY):
        sys.exit(f"{PROXY} missing: make {os.path.relpath(PROXY, ROOT)}")
    make_ca(tmp, "ca")
    cert, key = make_cert(tmp, "ca", "srv", ["DNS:localhost", "IP:127.0.0.1"])
    ck = os.path.join(tmp, "srv-ck.pem")
    with open(ck, "w") as f:
        f.write(open(cert).read() + open(key).read())
    users = os.path.join(tmp, "lab-users")
    with open(users, "w") as f:
        f.write(f"alice:LAB:{PW}\n")
    creds = os.path.join(tmp, "proxy-users")
    with open(creds, "w") as f:
        f.write(f"alice:LAB:{compute_nthash(PW).hex()}\n")
    os.chmod(creds, 0o600)
    lab, ports = start_lab(cert, key, users)
    relays = [("HAProxy", os.environ.get("HAPROXY", "haproxy"),
               lambda: start_haproxy(ports["rpch"], ck)),
              ("mapiproxy", PROXY,
               lambda: start_mapiproxy("mapiproxy", ports, cert, key, creds, False)),
              ("mapiproxy+", PROXY,
               lambda: start_mapiproxy("mapiproxy-up", ports, cert, key, creds, True))]
    before = os.environ.get("MAPIPROXY_BEFORE")
    if before:
        # each right after its counterpart, so that the machine's load drifts less between them
        relays.insert(2, ("before", before,
                          lambda: start_mapiproxy("before", ports, cert, key, creds, False, before)))
        relays.append(("before+", before,
                       lambda: start_mapiproxy("before-up", ports, cert, key, creds, True, before)))
    print(f"RPC over HTTP: RfrGetNewDSA, Impacket ncacn_http, HTTP Basic, TLS, NTLM privacy, "
          f"{SECS:g} s a "
          f"row; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'relay':<11} {'clients':>7} {'calls/s':>8} {'CPU us/call':>11}")
    rows = {}
    only = os.environ.get("RPCH_RELAYS", "").split()
    for name, binary, starter in relays:
        if only and name not in only:
            continue
        if not shutil.which(binary):
            print(f"{name:<11} skipped: {binary} not found")
            continue
        p, port = starter()
        url = f"https://127.0.0.1:{port}/rpc/rpcproxy.dll"
        for c in (1, 4):
            rps, us = load(p.pid, url, c)
            rows[(name, c)] = (rps, us)
            print(f"{name:<11} {c:>7} {rps:>8.0f} {us:>11.1f}", flush=True)
        stop(p)
    for c in (1, 4):
        h = rows.get(("HAProxy", c))
        for m in ("mapiproxy", "mapiproxy+"):
            r = rows.get((m, c))
            if h and r:
                print(f"{m} at {c} clients: x{r[0] / h[0]:.2f} calls/s, x{r[1] / h[1]:.2f} CPU "
                      "per call vs HAProxy")
        for m, b in (("mapiproxy", "before"), ("mapiproxy+", "before+")):
            r, o = rows.get((m, c)), rows.get((b, c))
            if r and o:
                print(f"{m} at {c} clients: x{r[0] / o[0]:.2f} calls/s, x{r[1] / o[1]:.2f} CPU "
                      f"per call vs {b}")
    stop(lab)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        main()
    finally:
        P.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
