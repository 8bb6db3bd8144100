#!/usr/bin/python3
"""make bench-av: what the av module (clamd) adds to the relay, message
uploads in C at both ends (doc/internals/bench.md).

Starts clamd (a database with only a test-made EICAR signature, as the
tests do), bench/responder -u (a fast upstream in C that answers the ROPs
of a message upload: RopCreateMessage, RopSetProperties,
RopSaveChangesMessage, RopRelease) and build/mapiproxy (the optimised
build, 1 worker, transparent mode) twice before it: once with no module,
once with `av` scanning every upload through clamd's unix socket.  For 1
and 16 concurrent sessions, bench/loadgen -u uploads small clean messages
(class, subject, a ~600-character body, no attachment) in a closed loop,
each in two EcDoRpcExt2 calls as Outlook makes them (create and set
properties; save and release), so that av scans at the save's request,
before it goes upstream, where it could still block it; the subject and
body carry a counter, so no two messages are alike (clamd caches clean
results by content; uploads have no message id, so av's verdict cache
never answers).  The two proxies
take turns (ABAB... rounds) for each session count, against the same
responder and clamd.  Prints uploads/s, p50 / p99 latency per upload (its
two calls), the relay's and
clamd's CPU per call and what other processes of the machine took (cores)
side by side with the ratios, and checks av's verdict lines:
one clamd scan per upload, every one clean, not cached, at the request
(message id 0).

Knobs: BENCH_AV_SECS [8] measured seconds per cell, split over
BENCH_AV_ROUNDS [4] rounds; BENCH_AV_WARMUP [0.5] s before each round;
BENCH_AV_CLIENTS [1,16]; MAPIPROXY [build/mapiproxy]; BENCH_KEEP: keep the
temp dir.  The end-to-end variant through the Python lab and its client
(Impacket) is `make bench-av-lab` (bench/av.py).  Every process started
here is stopped on exit.
"""
import json
import os
import re
import shutil
import subprocess
import sys

from benchlib import Procs, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from test_svc import Lab as SvcLab  # noqa: E402

BUILD = os.path.join(ROOT, "build")
MAPIPROXY = os.environ.get("MAPIPROXY", os.path.join(BUILD, "mapiproxy"))
SECS = float(os.environ.get("BENCH_AV_SECS", "8"))
ROUNDS = max(1, int(os.environ.get("BENCH_AV_ROUNDS", "4")))
WARMUP = float(os.environ.get("BENCH_AV_WARMUP", "0.5"))
CLIENTS = [int(x) for x in os.environ.get("BENCH_AV_CLIENTS", "1,16").split(",") if x]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def proxy_conf(up_port, port, options):
    opts = {"mapiproxy:workers": "1",
            "dcerpc_mapiproxy:binding": "ncacn_ip_tcp:127.0.0.1[%d]" % up_port,
            "dcerpc_mapiproxy:interfaces": "exchange_emsmdb",
            "mapiproxy:listen": "127.0.0.1", "mapiproxy:rpc port": str(port),
            "mapiproxy:epmapper port": "0", "mapiproxy:log level": "0",
            "mapiproxy:module dir": os.path.join(BUILD, "modules")}
    opts.update(options)
    return "[global]\n" + "".join("    %s = %s\n" % kv for kv in opts.items())


def loadgen(port, n, pids, secs):
    """pids: the relay's, clamd's, the responder's."""
    argv = [os.path.join(BUILD, "bench", "loadgen"), "-u", "-p", str(port), "-c", str(n),
            "-w", str(WARMUP), "-d", str(secs), "-P", ",".join(str(p) for p in pids)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=WARMUP + secs + 60)
    line = next((x for x in r.stdout.splitlines() if x.startswith("result ")), None)
    if r.returncode != 0 or not line:
        raise RuntimeError("loadgen failed: " + r.stderr.strip())
    res = dict(kv.split("=", 1) for kv in line.split()[1:])
    cpu = [int(x.split(":")[1]) for x in res["cpu_us"].split(",")]
    return {"calls": int(res["calls"]), "secs": float(res["secs"]), "p50": int(res["p50_us"]),
            "p99": int(res["p99_us"]), "errors": int(res["errors"]), "cpu": cpu[0],
            "clamd": cpu[1],
            # what other processes of the machine took in the window, core-us
            "other": int(res["sys_busy_us"]) - sum(c for c in cpu if c > 0) -
            int(res["self_cpu_us"])}


def main():
    if shutil.which("clamd") is None:
        sys.exit("bench-av: clamd missing (scripts/install-deps.sh)")
    P = Procs("mp-bench-av-")
    d = P.tmpdir
    os.chmod(d, 0o755)
    svc = SvcLab(d)
    ok = False
    try:
        svc.start_all(("clamd",))
        resp = P.start("responder", [os.path.join(BUILD, "bench", "responder"), "-u"],
                       stdout=subprocess.PIPE)
        m = re.match(r"listening (\d+)", resp.stdout.readline().decode())
        if not m:
            raise RuntimeError("responder did not start")
        up = int(m.group(1))
        vlog = os.path.join(d, "verdicts")
        confs = {"without av": {},
                 "with av (clamd)": {"dcerpc_mapiproxy:modules": "av",
                                     "av:clamd": "unix:" + svc.path("clamd.sock"),
                                     "av:directions": "upload", "av:verdict_log": vlog}}
        proxies = []
        for name, options in confs.items():
            port = free_port()
            cfg = os.path.join(d, name.split()[0] + ".conf")
            with open(cfg, "w") as f:
                f.write(proxy_conf(up, port, options))
            chk = subprocess.run([MAPIPROXY, "--check", "-c", cfg], capture_output=True,
                                 text=True)
            if chk.returncode:
                raise RuntimeError("%s: %s" % (cfg, chk.stderr.strip()))
            p = P.start(name.split()[0], [MAPIPROXY, "-c", cfg])
            P.wait_port(port, p, name)
            proxies.append((name, p, port))
        rows = []
        for n in CLIENTS:
            got = {name: [] for name, _, _ in proxies}
            for r in range(ROUNDS):
                for name, p, port in (proxies if r % 2 == 0 else proxies[::-1]):
                    log("bench-av: %s, %d session(s), round %d/%d ..." % (name, n, r + 1, ROUNDS))
                    got[name].append(loadgen(port, n, (p.pid, svc.procs["clamd"].pid,
                                                       resp.pid), SECS / ROUNDS))
            rows.append((n, got))
        lines = [json.loads(x) for x in open(vlog)] if os.path.exists(vlog) else []
        sent_av = sum(c["calls"] for _, got in rows for c in got["with av (clamd)"])
        bad = [x for x in lines if x["verdict"] != "clean" or x["cached"]
               or x["service"] != "clamd" or x["message_id"] != "0x%016x" % 0]
        ms = sorted(x["ms"] for x in lines) or [0]
        print("av (clamd) on message uploads, mapiproxy (1 worker) between bench/loadgen -u "
              "and bench/responder -u; %.0f s per cell in %d alternating rounds; "
              "load average %.1f %.1f %.1f" % ((SECS, ROUNDS) + os.getloadavg()))
        print("| sessions | uploads/s without | uploads/s with av | ratio "
              "| p50 us without / with | p99 us without / with | added p50 us "
              "| relay CPU us/upload without / with | clamd CPU us/upload "
              "| other processes, cores, without / with |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        a, b = [name for name, _, _ in proxies]
        for n, got in rows:
            f = {}
            for name in (a, b):
                cs = got[name]
                calls = sum(c["calls"] for c in cs)
                secs = sum(c["secs"] for c in cs)
                f[name] = (calls / secs, sorted(c["p50"] for c in cs)[len(cs) // 2],
                           sorted(c["p99"] for c in cs)[len(cs) // 2],
                           sum(c["cpu"] for c in cs) / calls if calls else 0,
                           sum(c["errors"] for c in cs),
                           sum(c["clamd"] for c in cs) / calls if calls else 0,
                           max(0, sum(c["other"] for c in cs)) / 1e6 / secs)
            x, y = f[a], f[b]
            print("| %d | %.0f | %.0f | x%.2f | %d / %d | %d / %d | %+d | %.0f / %.0f | %.0f "
                  "| %.2f / %.2f |"
                  % (n, x[0], y[0], y[0] / x[0] if x[0] else 0, x[1], y[1], x[2], y[2],
                     y[1] - x[1], x[3], y[3], y[5], x[6], y[6]))
            if x[4] or y[4]:
                print("  errors: without %d, with av %d" % (x[4], y[4]))
        print("one upload = 2 EcDoRpcExt2 calls; p50/p99: the median of the rounds' values; "
              "uploads/s: all rounds' uploads over their time")
        print("av verdict lines: %d (measured uploads with av: %d, the rest in warm-ups); "
              "not clean, cached, not clamd or not at the request: %d; av's own time per scan p50 %.2f ms, "
              "p99 %.2f ms" % (len(lines), sent_av, len(bad), ms[len(ms) // 2],
                               ms[min(len(ms) - 1, int(len(ms) * 0.99))]))
        if len(lines) < sent_av or bad:
            raise RuntimeError("av did not scan every upload (see %s)" % vlog)
        ok = True
    finally:
        P.stop_all()
        for name in list(svc.procs):
            svc.stop(name)
        if ok and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(d, ignore_errors=True)
        else:
            log("bench-av: configs and logs kept in " + d)


if __name__ == "__main__":
    main()
