#!/usr/bin/python3
"""make bench: the relay benchmark (see doc/internals/bench.md).

Starts bench/responder (a fast DCE/RPC upstream), HAProxy in TCP mode and
mapiproxy on free loopback ports, drives each with bench/loadgen for 1, 16
and 256 concurrent clients, and prints one table: calls/s, p50, p99 and the
relay's CPU time per call (utime+stime from /proc/PID/stat, read by the load
generator at the edges of the measured window).  Then RSS per idle session
with 9,000 idle sessions (fresh HAProxy and mapiproxy processes), then the
LZ77 figures from `make bench-lz77`.  Every process started here is stopped
on exit.

Environment knobs (defaults in brackets):
  BENCH_SECS [6]  measured seconds per cell, split over BENCH_ROUNDS [3] interleaved rounds
  BENCH_WARMUP [0.5]  warm-up seconds before each round
  BENCH_CLIENTS [1,16,256]                      BENCH_IDLE [9000] idle sessions (0: skip)
  BENCH_LZ77 [1]  0 skips make bench-lz77       HAPROXY [haproxy]
  BENCH_QUIET_BUDGET [60]  seconds, in all, to wait for other processes to go idle before cells
  MAPIPROXY [build/mapiproxy]  the binary to measure
  BENCH_KEEP  set: keep the temp dir (configs, logs) even after a good run
  BENCH_ROWS  a regular expression: only the rows whose label it matches
              (re.search; e.g. "HAProxy|re-encode"), for a quick subset

Decoding rows: bench/decode.conf (decode+trace) and bench/reencode.conf
(decode+re-encode: every ROP decoded, marked changed and re-encoded by the
test module mpm_roptest, no output) are appended to the transparent-mode
configuration of further mapiproxy processes, checked with --check, and
measured like the other rows, each with 1 worker and with BENCH_WORKERS [2]
workers (mapiproxy:workers).  Every other mapiproxy row runs 1 worker, as
HAProxy runs one thread.  Without a snippet its rows read "n/a".
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from benchlib import Procs, free_port, rss_kib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
RESPONDER = os.path.join(BUILD, "bench", "responder")
LOADGEN = os.path.join(BUILD, "bench", "loadgen")
MAPIPROXY = os.environ.get("MAPIPROXY", os.path.join(BUILD, "mapiproxy"))
HAPROXY = os.environ.get("HAPROXY", "haproxy")
DECODE_SNIPPET = os.path.join(ROOT, "bench", "decode.conf")
REENCODE_SNIPPET = os.path.join(ROOT, "bench", "reencode.conf")
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
PASSTHRU = "mapiproxy auth pass-thru"

SECS = float(os.environ.get("BENCH_SECS", "6"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "0.5"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "3")))
CLIENTS = [int(x) for x in os.environ.get("BENCH_CLIENTS", "1,16,256").split(",") if x]
IDLE = int(os.environ.get("BENCH_IDLE", "9000"))
RUN_LZ77 = os.environ.get("BENCH_LZ77", "1") != "0"
# Before each cell, wait (from a total budget of this many seconds) for the
# machine to be quiet: other processes below 0.15 cores over 0.5 s.
quiet_budget = [float(os.environ.get("BENCH_QUIET_BUDGET", "60"))]
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROWS = re.compile(os.environ.get("BENCH_ROWS", ""))

P = Procs("mp-bench-")  # everything we started; configs and logs in P.tmpdir
tmpdir = P.tmpdir
start, stop, wait_port, cleanup = P.start, P.stop, P.wait_port, P.stop_all


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def on_signal(sig, _frame):
    cleanup()
    sys.exit(128 + sig)


def start_responder():
    p = start("responder", [RESPONDER], stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    m = re.match(r"listening (\d+)", line)
    if not m:
        raise RuntimeError("responder did not start: " + line)
    return p, int(m.group(1))


def start_haproxy(up_port, name="haproxy"):
    port = free_port()
    cfg = os.path.join(tmpdir, name + ".cfg")
    # maxconn 9600: 9,000 idle sessions + headroom; HAProxy derives its fd
    # limit (~2 x maxconn) from it and must stay under the 20,000 hard limit.
    with open(cfg, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 9600
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:{port}
    maxconn 9600
    default_backend be
backend be
    server up 127.0.0.1:{up_port} maxconn 9600
""")
    p = start(name, [HAPROXY, "-f", cfg, "-db"])
    wait_port(port, p, name)
    return p, port


def mapiproxy_conf(up_port, port, workers=1):
    return f"""[global]
    mapiproxy:workers = {workers}
    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1[{up_port}]
    dcerpc_mapiproxy:interfaces = exchange_emsmdb
    mapiproxy:listen = 127.0.0.1
    mapiproxy:rpc port = {port}
    mapiproxy:epmapper port = 0
    mapiproxy:log level = 0
    # every load-generator connection comes from 127.0.0.1 (9,000 idle sessions)
    mapiproxy:max connections per address = 0
"""


def start_mapiproxy(up_port, name="mapiproxy", extra="", workers=1):
    port = free_port()
    cfg = os.path.join(tmpdir, name + ".conf")
    with open(cfg, "w") as f:
        f.write(mapiproxy_conf(up_port, port, workers))
        if extra:
            f.write("\n# --- bench/decode.conf ---\n" + extra + "\n")
    chk = subprocess.run([MAPIPROXY, "--check", "-c", cfg], capture_output=True, text=True)
    if chk.returncode != 0:
        msg = (chk.stderr or chk.stdout).strip().splitlines()
        raise ValueError(msg[0] if msg else "configuration rejected")
    p = start(name, [MAPIPROXY, "-c", cfg])
    wait_port(port, p, name)
    return p, port


def loadgen(port, clients, pids, secs, extra=()):
    argv = [LOADGEN, "-p", str(port), "-c", str(clients), "-w", str(WARMUP), "-d", str(secs), *extra]
    if pids:
        argv += ["-P", ",".join(str(p) for p in pids)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=WARMUP + secs + 60)
    line = next((l for l in r.stdout.splitlines() if l.startswith("result ")), None)
    if r.returncode != 0 or not line:
        raise RuntimeError(f"loadgen failed: {r.stderr.strip()}")
    res = dict(kv.split("=", 1) for kv in line.split()[1:])
    cpu = {}
    for item in res["cpu_us"].split(","):
        if item:
            pid, us = item.split(":")
            cpu[int(pid)] = int(us)
    calls = int(res["calls"])
    out = {
        "cps": float(res["cps"]), "p50": int(res["p50_us"]), "p99": int(res["p99_us"]),
        "calls": calls, "errors": int(res["errors"]),
        "self": int(res["self_cpu_us"]) / calls if calls else None,
    }
    out["cpu"] = {pid: (us / calls if calls and us >= 0 else None) for pid, us in cpu.items()}
    # What other processes on the machine took during the window, in cores.
    secs = float(res["secs"]) or 1.0
    ours = sum(us for us in cpu.values() if us > 0) + int(res["self_cpu_us"])
    out["other"] = max(0.0, (int(res.get("sys_busy_us", 0)) - ours) / 1e6 / secs)
    return out


def n_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def idle_sessions(port, relay_pid, n):
    before = rss_kib(relay_pid)
    lg = subprocess.Popen([LOADGEN, "-p", str(port), "-i", str(n), "-c", "256"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    P.adopt("loadgen-idle", lg)
    try:
        line = lg.stdout.readline()
        m = re.match(r"ready sessions=(\d+) errors=(\d+) secs=([\d.]+)", line)
        if not m:
            raise RuntimeError("idle loadgen: " + line + lg.stderr.read())
        time.sleep(1.0)  # let the relay finish every upstream bind and settle
        after = rss_kib(relay_pid)
        fds = n_fds(relay_pid)
        lg.stdin.close()
        tail = lg.stdout.read()
        lg.wait(timeout=30)
    finally:
        stop(lg)
    alive = re.search(r"alive=(\d+)", tail)
    ok, errors, secs = int(m.group(1)), int(m.group(2)), float(m.group(3))
    return {
        "ok": ok, "errors": errors, "secs": secs, "before": before, "after": after, "fds": fds,
        "alive": int(alive.group(1)) if alive else -1,
        "per": (after - before) * 1024.0 / ok if ok else None,
    }


def busy_cores(interval=0.5):
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], time.time()
    b0, t0 = read()
    time.sleep(interval)
    b1, t1 = read()
    return (b1 - b0) / CLK_TCK / (t1 - t0)


def wait_quiet():
    """Waits, within the remaining budget, until other processes are idle."""
    while quiet_budget[0] > 0:
        t = time.time()
        b = busy_cores()
        quiet_budget[0] -= time.time() - t
        if b < 0.15:
            return
        log(f"bench: machine busy ({b:.1f} cores used by other processes); waiting"
            f" (budget left {max(0, quiet_budget[0]):.0f} s)")
        time.sleep(0.5)
        quiet_budget[0] -= 0.5


def fmt(v, spec, width):
    return f"{'-' if v is None else format(v, spec):>{width}}"


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "bench"],
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except OSError:
        return "?"


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for exe in (RESPONDER, LOADGEN, MAPIPROXY):
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench: {exe} missing; run `make bench`")
    hz = os.sysconf("SC_CLK_TCK")
    print(f"mapiproxy relay benchmark  commit {git_rev()}  {time.strftime('%Y-%m-%d %H:%M')}  "
          f"{os.cpu_count()} cores, loopback")
    print(f"EcDoRpcExt2-shaped calls: 2 KB request stub, 8 KB response stub (2 fragments of <= 5840 B);"
          f" closed loop, one call in flight per client")
    print(f"each cell: {ROUNDS} rounds of {WARMUP:g} s warm-up + {max(1.0, SECS / ROUNDS):g} s, rows interleaved;"
          " the round with the most calls/s is shown (err: summed over rounds)")
    if "MAPIPROXY" in os.environ:
        print(f"mapiproxy binary: {MAPIPROXY} (MAPIPROXY override)")
    print("load generator, relay and responder share the same cores (nothing pinned); "
          f"CPU from /proc/PID/stat utime+stime ({hz} Hz ticks)")
    print()

    resp, up_port = start_responder()
    rows = []  # (label, {clients: result} or str)
    ha, ha_port = start_haproxy(up_port)
    mp, mp_port = start_mapiproxy(up_port)
    # (label, port, relay pid, extra loadgen arguments)
    targets = [("direct to upstream", up_port, None, ()),
               ("HAProxy 2.6 TCP mode", ha_port, ha.pid, ()),
               ("mapiproxy transparent", mp_port, mp.pid, ()),
               # Same mapiproxy, clients that authenticate (NTLM-shaped
               # verifier, connect level): relayed byte for byte.
               (PASSTHRU, mp_port, mp.pid, ("-a",))]
    missing = []  # (label, why) of decoding rows that cannot run
    decode_rows = []  # (kind, workers, label)
    for kind, snippet in (("decode+trace", DECODE_SNIPPET), ("decode+re-encode", REENCODE_SNIPPET)):
        for w in (1, WORKERS):
            label = f"mapiproxy {kind} {w}w"
            if not os.path.exists(snippet):
                missing.append((label, "n/a (no " + os.path.relpath(snippet, ROOT) + ")"))
                continue
            try:
                with open(snippet) as f:
                    dp, dport = start_mapiproxy(up_port, f"mapiproxy-{kind}-{w}w", f.read(), w)
                targets.append((label, dport, dp.pid, ()))
                decode_rows.append((kind, w, label))
            except (ValueError, RuntimeError) as e:
                missing.append((label, f"n/a ({os.path.basename(snippet)} rejected: {e})"))

    targets = [t for t in targets if ROWS.search(t[0])]
    decode_rows = [d for d in decode_rows if ROWS.search(d[2])]

    # Rounds: every cell is measured ROUNDS times for SECS/ROUNDS seconds,
    # the rows interleaved (direct, HAProxy, mapiproxy, direct, ...), so a
    # burst of outside load hits every row alike; each cell reports its round
    # with the most calls/s (the least disturbed one).
    per_round = max(1.0, SECS / ROUNDS)
    results = {label: {n: [] for n in CLIENTS} for label, _, _, _ in targets}
    for n in CLIENTS:
        for rnd in range(ROUNDS):
            for label, port, pid, extra in targets:
                wait_quiet()
                log(f"bench: {label}, {n} client(s), round {rnd + 1}/{ROUNDS} ...")
                pids = ([pid] if pid else []) + [resp.pid]
                try:
                    r = loadgen(port, n, pids, per_round, extra)
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    results[label][n].append(str(e))
                    continue
                r["relay"] = r["cpu"].get(pid) if pid else None
                r["resp"] = r["cpu"].get(resp.pid)
                results[label][n].append(r)
    for label, _, _, _ in targets:
        res = {}
        for n in CLIENTS:
            ok = [r for r in results[label][n] if isinstance(r, dict)]
            if ok:
                best = max(ok, key=lambda r: r["cps"])
                best["errors"] = sum(r["errors"] for r in ok)
                res[n] = best
            else:
                res[n] = results[label][n][0] if results[label][n] else "not run"
        rows.append((label, res))
    rows.extend(missing)

    # ---- the table ----
    lw = 30
    head1 = f"{'':<{lw}}" + "".join(f" | {str(n) + ' client' + ('s' if n > 1 else ''):^29}" for n in CLIENTS)
    head2 = f"{'':<{lw}}" + "".join(f" | {'calls/s':>7} {'p50 us':>6} {'p99 us':>6} {'cpu us':>6}" for _ in CLIENTS)
    print(head1)
    print(head2)
    print("-" * len(head2))
    for label, res in rows:
        if isinstance(res, str):
            print(f"{label:<{lw}} | {res}")
            continue
        line = f"{label:<{lw}}"
        for n in CLIENTS:
            r = res[n]
            if isinstance(r, str):
                line += f" | {'failed':^29}"
                continue
            line += (f" | {r['cps']:>7.0f} {r['p50']:>6} {r['p99']:>6} "
                     f"{fmt(r['relay'], '.1f', 6)}")
        print(line)
    print("-" * len(head2))
    print("cpu us = relay CPU (user+sys) per call; '-' for the direct row (no relay)")

    # ---- side figures: responder / load generator CPU, errors ----
    print()
    worst_other = [0.0]
    print(f"{'per call, us of CPU':<{lw}}" + "".join(f" | {str(n) + ' cl.':^29}" for n in CLIENTS))
    for label, res in rows:
        if isinstance(res, str):
            continue
        line = f"{label:<{lw}}"
        for n in CLIENTS:
            r = res[n]
            if isinstance(r, str):
                line += f" | {'failed':^29}"
                continue
            line += (f" | resp {fmt(r['resp'], '.1f', 4)} lg {fmt(r['self'], '.1f', 4)}"
                     f" err {r['errors']:>2} oth {r['other']:.1f}")
            worst_other[0] = max(worst_other[0], r["other"])
        print(line)
    print("resp = responder, lg = load generator (CPU us per call); err = failed calls/sessions;"
          " oth = cores used by OTHER processes during the window")
    if worst_other[0] > 0.15:
        print(f"WARNING: other processes used up to {worst_other[0]:.1f} of {os.cpu_count()} cores during"
              " some cells: calls/s and latency of those cells are understated; CPU per call is less affected")
    for label, res in rows:
        if isinstance(res, dict):
            for n, r in res.items():
                if isinstance(r, str):
                    print(f"  {label}, {n} clients: {r}")

    # ---- ratios ----
    byl = {label: res for label, res in rows}
    ha_r = byl.get("HAProxy 2.6 TCP mode")
    for mp_label in ("mapiproxy transparent", PASSTHRU):
        mp_r = byl.get(mp_label)
        if not isinstance(mp_r, dict):
            continue
        print()
        print(f"{mp_label} / HAProxy:")
        worst_cps, worst_cpu = None, None
        for n in CLIENTS:
            a, b = (mp_r or {}).get(n), (ha_r or {}).get(n)
            if not isinstance(a, dict) or not isinstance(b, dict) or not b["cps"] or not b["relay"] or a["relay"] is None:
                print(f"  {n:>3} clients: n/a")
                continue
            rc, ru = a["cps"] / b["cps"], a["relay"] / b["relay"]
            worst_cps = rc if worst_cps is None else min(worst_cps, rc)
            worst_cpu = ru if worst_cpu is None else max(worst_cpu, ru)
            print(f"  {n:>3} clients: calls/s x{rc:.2f}   CPU/call x{ru:.2f}")
        if worst_cps is not None:
            print(f"  target calls/s >= 1.0x HAProxy: {'met' if worst_cps >= 1.0 else 'NOT met'} (worst x{worst_cps:.2f});"
                  f" target CPU/call <= HAProxy: {'met' if worst_cpu <= 1.0 else 'NOT met'} (worst x{worst_cpu:.2f})")
    # decoding rows: against HAProxy (goal x0.6 for decode+re-encode) and
    # N workers against 1 (goal x1.6 on a 2-core machine)
    for kind in ("decode+re-encode", "decode+trace"):
        one = byl.get(f"mapiproxy {kind} 1w")
        many = byl.get(f"mapiproxy {kind} {WORKERS}w")
        if not isinstance(one, dict):
            continue
        print()
        print(f"mapiproxy {kind}: 1 worker / HAProxy, {WORKERS} workers / 1 worker (calls/s):")
        for n in CLIENTS:
            a, h = one.get(n), (ha_r or {}).get(n)
            m = (many or {}).get(n) if isinstance(many, dict) else None
            parts = []
            if isinstance(a, dict) and isinstance(h, dict) and h["cps"]:
                parts.append(f"1w/HAProxy x{a['cps'] / h['cps']:.2f}")
            if isinstance(a, dict) and isinstance(m, dict) and a["cps"]:
                parts.append(f"{WORKERS}w/1w x{m['cps'] / a['cps']:.2f}")
            print(f"  {n:>3} clients: " + ("   ".join(parts) or "n/a"))
        if kind == "decode+re-encode":
            print("  goals: 1w >= x0.6 HAProxy; 2w >= x1.6 of 1w (16 and 256 clients; one client"
                  " is one connection, served by one worker)")
    sys.stdout.flush()

    # ---- idle sessions ----
    if IDLE:
        stop(ha)
        stop(mp)
        print()
        print(f"Idle sessions: {IDLE} client connections, each bound (so the upstream leg exists);"
              " RSS from /proc/PID/status VmRSS, fresh relay processes")
        for name, starter in (("HAProxy 2.6", lambda: start_haproxy(up_port, "haproxy-idle")),
                              ("mapiproxy", lambda: start_mapiproxy(up_port, "mapiproxy-idle"))):
            log(f"bench: {IDLE} idle sessions through {name} ...")
            try:
                p, port = starter()
                time.sleep(0.3)
                r = idle_sessions(port, p.pid, IDLE)
                stop(p)
                per = "-" if r["per"] is None else f"{r['per']:.0f} B ({r['per'] / 1024:.2f} KiB)"
                print(f"  {name:<12} sessions {r['ok']}/{IDLE} (errors {r['errors']}, still open after hold {r['alive']}),"
                      f" open+bind {r['secs']:.1f} s, relay fds {r['fds']}; RSS {r['before']} -> {r['after']} KiB:"
                      f" {per} per session")
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
                print(f"  {name:<12} failed: {e}")
        print("  target: <= 8 KiB per idle session, 9,000 sessions without error"
              " (kernel socket memory is not in RSS and not counted)")
        sys.stdout.flush()

    cleanup()

    # ---- LZ77 ----
    if RUN_LZ77:
        print()
        print("LZ77 (make bench-lz77):")
        sys.stdout.flush()
        wait_quiet()
        make = os.environ.get("MAKE", "make")
        r = subprocess.run([make, "--no-print-directory", "-s", "-C", ROOT, "bench-lz77"],
                           capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith(("cc ", "gcc ", "clang ", "build/")):
                continue
            print("  " + line)
        if r.returncode != 0:
            print("  make bench-lz77 failed: " + r.stderr.strip())


if __name__ == "__main__":
    ok = False
    try:
        main()
        ok = True
    finally:
        cleanup()
        if ok and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmpdir, ignore_errors=True)
        else:
            print(f"bench: configs and logs kept in {tmpdir}", file=sys.stderr)
