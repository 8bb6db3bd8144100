#!/usr/bin/python3
"""The HTTPS front's bench rows (doc/internals/bench.md, "HTTPS front").

MAPI/HTTP Execute (2 KiB POST -> 8 KiB answer, keep-alive, TLS 1.3 on both
legs) through three relays of the same traffic, one worker each: HAProxy in
HTTP mode, nginx as TLS reverse proxy, mapiproxy's HTTPS front.  Per relay and
client count (1, 16, 64): requests/s, p50/p99 latency, and the relay's CPU
per request (its utime+stime over the timed run, TLS handshakes of the
clients included, divided by the answers).  Then KiB of RSS per parked
NotificationWait (N requests the upstream never answers).

Environment: HTTPS_SECS [4] seconds per row, HTTPS_PARK [400] parked
requests, HAPROXY [haproxy], NGINX [nginx] (a relay whose binary is missing
is skipped), MAPIPROXY [build/mapiproxy], HTTPS_RELAYS (e.g. "mapiproxy":
only those rows), HTTPS_BASELINE [none]: another mapiproxy build measured in
the same run, as "baseline" (before/after), HTTPS_WORKERS [1]: mapiproxy's
mapiproxy:workers (the anchors run one worker each).  About 70 s in all
with the defaults."""
import os
import shutil
import signal
import subprocess
import sys
import time

from benchlib import Procs, free_port, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.join(ROOT, "build")
PEER = os.path.join(B, "bench", "https_peer")
PROXY = os.environ.get("MAPIPROXY", os.path.join(B, "mapiproxy"))
SECS = int(os.environ.get("HTTPS_SECS", "4"))
PARK = int(os.environ.get("HTTPS_PARK", "400"))
WORKERS = int(os.environ.get("HTTPS_WORKERS", "1"))
BASELINE = os.environ.get("HTTPS_BASELINE", "")
REQ, RESP = 2048, 8192
P = Procs("mp-bench-https-")  # what we start; configs and logs in P.tmpdir
tmp = P.tmpdir
start, stop = P.start, P.stop


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) + int(v[12])


def certs():
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], cwd=tmp, check=True, capture_output=True)
    with open(os.path.join(tmp, "ck.pem"), "w") as f:
        f.write(open(os.path.join(tmp, "c.pem")).read() + open(os.path.join(tmp, "k.pem")).read())
    return os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem"), os.path.join(tmp, "ck.pem")


def start_mapiproxy(up, cert, key, binary=PROXY, name="mapiproxy"):
    port = free_port()
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(f"""[global]
    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1[{free_port()}]
    dcerpc_mapiproxy:interfaces = exchange_emsmdb
    mapiproxy:listen = 127.0.0.1
    mapiproxy:rpc port = {free_port()}
    mapiproxy:epmapper port = 0
    mapiproxy:log level = 0
    mapiproxy:workers = {WORKERS}
    mapiproxy:max connections = 4000
    mapiproxy:max connections per address = 0
    mapiproxy:http listen = 127.0.0.1:{port}
    mapiproxy:tls certificate = {cert}
    mapiproxy:tls key = {key}
    mapiproxy:http upstream = https://localhost:{up}
    mapiproxy:tls verify = no
""")
    p = start(name, [binary, "-c", conf])
    P.wait_port(port, p, name)
    return p, port


def start_haproxy(up, ck):
    return P.haproxy_https(up, ck)


def start_nginx(up, cert, key):
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4000; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nb; proxy_temp_path {tmp}/np;
    fastcgi_temp_path {tmp}/nf; uwsgi_temp_path {tmp}/nu; scgi_temp_path {tmp}/ns;
    upstream up {{ server 127.0.0.1:{up}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        keepalive_requests 1000000;
        location / {{
            proxy_pass https://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_session_reuse on;
            proxy_read_timeout 120s;
        }}
    }}
}}
""")
    p = start("nginx", [os.environ.get("NGINX", "nginx"), "-c", conf, "-p", tmp])
    P.wait_port(port, p, "nginx")
    return p, port


def load(port, clients, secs):
    out = subprocess.run([PEER, "load", str(port), str(clients), str(secs), str(REQ)],
                         capture_output=True, text=True, timeout=secs + 60)
    if out.returncode:
        raise RuntimeError(out.stderr.strip())
    v = out.stdout.split()
    return {v[i]: float(v[i + 1]) for i in range(0, len(v), 2)}


def parked_kib(p, port):
    before = rss_kib(p.pid)
    k = subprocess.Popen([PEER, "park", str(port), str(PARK)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    line = k.stdout.readline()
    time.sleep(1.0)
    after = rss_kib(p.pid) if line.startswith("parked") else before
    k.stdin.close()
    k.wait(timeout=30)
    return (after - before) / PARK


def main():
    for tool in (PEER, PROXY):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: make {os.path.relpath(tool, ROOT)}")
    cert, key, ck = certs()
    up = free_port()
    peer = start("upstream", [PEER, "serve", str(up), cert, key, str(RESP)])
    P.wait_port(up, peer, "upstream")
    relays = [("HAProxy", os.environ.get("HAPROXY", "haproxy"), lambda: start_haproxy(up, ck)),
              ("nginx", os.environ.get("NGINX", "nginx"), lambda: start_nginx(up, cert, key)),
              ("mapiproxy", PROXY, lambda: start_mapiproxy(up, cert, key))]
    if BASELINE:  # another build of the front, in the same run (before/after)
        relays.append(("baseline", BASELINE,
                       lambda: start_mapiproxy(up, cert, key, BASELINE, "baseline")))
    print(f"HTTPS front: MAPI/HTTP Execute {REQ} B -> {RESP} B, TLS both legs, keep-alive, "
          f"{SECS} s a row; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'relay':<10} {'clients':>7} {'req/s':>8} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>10}")
    rows = {}
    parked = {}
    hz = os.sysconf("SC_CLK_TCK")
    only = os.environ.get("HTTPS_RELAYS", "").split()
    for name, binary, starter in relays:
        if only and name not in only:
            continue
        if not shutil.which(binary):
            print(f"{name:<10} skipped: {binary} not found")
            continue
        p, port = starter()
        load(port, 4, 1)  # warm-up
        for c in (1, 16, 64):
            t0 = cpu_ticks(p.pid)
            r = load(port, c, SECS)
            cpu = (cpu_ticks(p.pid) - t0) / hz
            us = cpu * 1e6 / max(r["all"], 1)
            rows[(name, c)] = (r["rps"], us)
            print(f"{name:<10} {c:>7} {r['rps']:>8.0f} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
                  f"{us:>10.1f}", flush=True)
        parked[name] = parked_kib(p, port)
        stop(p)
    for me in ("mapiproxy", "baseline"):
        for c in (1, 16, 64):
            m = rows.get((me, c))
            if not m:
                continue
            rel = []
            for other in ("HAProxy", "nginx"):
                o = rows.get((other, c))
                if o:
                    rel.append(f"x{m[0] / o[0]:.2f} req/s, x{m[1] / o[1]:.2f} CPU vs {other}")
            print(f"{me} at {c:>2} clients: " + "; ".join(rel))
    print(f"KiB per parked NotificationWait ({PARK} parked): " +
          ", ".join(f"{n} {k:.1f}" for n, k in parked.items()))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        main()
    finally:
        P.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
