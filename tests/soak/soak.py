#!/usr/bin/python3
"""Soak and fault test for mapiproxy (see doc/internals/soak.md).

    make soak                 # 15 minutes
    make soak MINUTES=3
    /usr/bin/python3 tests/soak/soak.py --minutes 3 [--clients 200] [--workers 4]

Starts the lab upstream and the ASan build of mapiproxy before it, runs 200
clients of mixed calls through the proxy, kills the upstream twice, sends
garbage every second, keeps a client that never reads, samples the proxy's
RSS and descriptors, and prints a summary ending in `soak: PASS` or
`soak: FAIL (reasons)` (exit status 0 / 1).
"""
import argparse
import calendar
import multiprocessing as mp
import os
import queue as queue_mod
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import workload as W  # noqa: E402

LAB = os.path.join(ROOT, "tests", "lab", "exchange_lab.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


def log(msg):
    print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Lab:
    """The lab upstream; restartable on the same endpoint-mapper port."""

    def __init__(self, outdir, epm_port):
        self.outdir = outdir
        self.epm_port = epm_port
        self.proc = None
        self.ports = None
        self.starts = 0

    def start(self, same_ports=False, timeout=30):
        extra = []
        if same_ports and self.ports:
            extra = ["--rfr-port", str(self.ports["rfr"]), "--nspi-port", str(self.ports["nspi"]),
                     "--emsmdb-port", str(self.ports["emsmdb"])]
        self.starts += 1
        logf = open(os.path.join(self.outdir, "lab-%d.log" % self.starts), "w")
        end = time.time() + timeout
        while True:
            self.proc = subprocess.Popen(
                ["/usr/bin/python3", LAB, "--host", "127.0.0.1", "--epm-port", str(self.epm_port),
                 *extra], stdout=subprocess.PIPE, stderr=logf, text=True)
            line = self.proc.stdout.readline()
            m = re.match(r"READY epm=(\d+) rfr=(\d+) nspi=(\d+) emsmdb=(\d+)", line or "")
            if m:
                break
            self.proc.wait()
            if time.time() > end:  # e.g. a port still taken
                raise RuntimeError("lab did not start: %r (see %s)" % (line, logf.name))
            time.sleep(0.5)
        logf.close()
        self.ports = {k: int(v) for k, v in zip(("epm", "rfr", "nspi", "emsmdb"), m.groups())}
        return self.ports

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Proxy:
    def __init__(self, outdir, binary, upstream_epm_port, send_timeout, log_level, modules=True):
        self.epm_port = free_port()
        self.rpc_port = free_port()
        self.conf = os.path.join(outdir, "mapiproxy.conf")
        self.log_path = os.path.join(outdir, "mapiproxy.log")
        with open(self.conf, "w") as f:
            f.write("\n".join([
                "[global]",
                "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
                "mapiproxy:listen = 127.0.0.1",
                "mapiproxy:epmapper port = %d" % self.epm_port,
                "mapiproxy:rpc port = %d" % self.rpc_port,
                "mapiproxy:upstream epmapper port = %d" % upstream_epm_port,
                "mapiproxy:log level = %s" % log_level,
                "mapiproxy:send timeout = %d" % send_timeout,
                "mapiproxy:idle timeout = 120",
            ] + ([
                # ROPs through a read-only module that prints every ROP with
                # its server object at dispatch and push (trace, to
                # /dev/null: the formatting is what is exercised) and one
                # that re-encodes every ROP from its fields both ways
                "dcerpc_mapiproxy:modules = trace, mpm_roptest",
                "trace:file = %s" % os.devnull,
                "trace:interfaces = exchange_emsmdb",
                "mpm_roptest:touch = yes",
            ] if modules else [])) + "\n")
        env = dict(os.environ)
        # Quarantine kept small so that RSS follows the live heap (the default
        # 256 MiB quarantine alone would make RSS climb for minutes).
        env["ASAN_OPTIONS"] = ("detect_leaks=1:abort_on_error=0:exitcode=66:"
                               "quarantine_size_mb=16:allocator_release_to_os_interval_ms=1000")
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:exitcode=67"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "-c", self.conf], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        wait_port(self.rpc_port)
        wait_port(self.epm_port)

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            return int(f.read().split("VmRSS:")[1].split()[0])

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                return None
        self._log.close()
        return self.proc.returncode


def merge(into, snap):
    for k, v in snap["calls"].items():
        d = into["calls"].setdefault(k, {})
        for o, n in v.items():
            d[o] = d.get(o, 0) + n
    for k, v in snap["seconds"].items():
        b = into["seconds"].setdefault(k, [0, 0])
        b[0] += v[0]
        b[1] += v[1]
    for k, v in snap["examples"].items():
        e = into["examples"].get(k)
        if e is None:
            into["examples"][k] = list(v)
        else:
            e[0] += v[0]
            e[1] = min(e[1], v[1])
            e[2] = max(e[2], v[2])
    for k, v in snap["lat_max"].items():
        into["lat_max"][k] = max(into["lat_max"].get(k, 0), v)
    for k, v in snap["lat_hist"].items():
        h = into["lat_hist"].setdefault(k, {})
        for b, n in v.items():
            h[b] = h.get(b, 0) + n


def empty_stats():
    return {"calls": {}, "seconds": {}, "examples": {}, "lat_max": {}, "lat_hist": {}}


def pct(hist, q):
    total = sum(hist.values())
    if not total:
        return 0
    acc = 0
    for b in sorted(hist):
        acc += hist[b]
        if acc >= q * total:
            return (1 << b) if b else 1  # upper bound in ms
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("MINUTES") or 15))
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--workers", type=int, default=4, help="client processes")
    ap.add_argument("--call-timeout", type=float, default=30.0)
    ap.add_argument("--send-timeout", type=int, default=10)
    ap.add_argument("--session-pause", type=float, nargs=2, default=(0.5, 2.5),
                    help="seconds a client waits between two sessions (min max)")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds before the RSS reference")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-modules", action="store_true",
                    help="plain relay: without trace and mpm_roptest on the ROPs")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mapiproxy-asan"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "soak"))
    args = ap.parse_args()

    duration = args.minutes * 60
    outdir = os.path.join(args.out, time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(outdir, exist_ok=True)
    random.seed(args.seed)
    log("output in %s, seed %d, %.1f min, %d clients in %d processes" % (
        outdir, args.seed, args.minutes, args.clients, args.workers))

    # A private copy: other builds in the tree must not swap the binary mid-run.
    binary = os.path.join(outdir, os.path.basename(args.binary))
    shutil.copy2(args.binary, binary)
    rev = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or "?"
    log("proxy binary %s (tree %s)" % (args.binary, rev))
    lab = Lab(outdir, free_port())
    lab.start()
    proxy = Proxy(outdir, binary, lab.epm_port, args.send_timeout, args.log_level,
                  modules=not args.no_modules)
    log("lab %s, proxy pid %d epm %d rpc %d" % (lab.ports, proxy.pid, proxy.epm_port,
                                                 proxy.rpc_port))
    time.sleep(0.5)
    fd_base = proxy.fds()
    rss_base = proxy.rss_kib()
    cfg = {"host": "127.0.0.1", "rpc_port": proxy.rpc_port, "epm_port": proxy.epm_port,
           "call_timeout": args.call_timeout, "pause_min": 0.05, "pause_max": 0.2,
           "session_pause_min": args.session_pause[0], "session_pause_max": args.session_pause[1],
           "ramp": min(10.0, duration / 6), "seed": args.seed}

    # Client processes first (fork before this process starts threads).
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    q = ctx.Queue()
    per = [args.clients // args.workers + (1 if i < args.clients % args.workers else 0)
           for i in range(args.workers)]
    workers = [ctx.Process(target=W.worker_main, args=(i, per[i], cfg, stop, q), daemon=True)
               for i in range(args.workers)]
    t0 = time.time()
    for p in workers:
        p.start()

    reasons = []
    samples = []                      # (t, rss KiB, fds)
    kills = []                        # dicts
    garbage = {}                      # kind -> {answer: n}
    garbage_fail = []
    stallers = []
    progress = {}
    finals = {}
    tstop = threading.Event()
    proxy_pid_changes = []

    def sampler():
        while not tstop.is_set():
            if not proxy.alive():
                proxy_pid_changes.append("proxy exited with %s at t=%.0fs" % (
                    proxy.proc.returncode, time.time() - t0))
                return
            try:
                samples.append((time.time() - t0, proxy.rss_kib(), proxy.fds()))
            except (OSError, IndexError):
                pass
            tstop.wait(5)

    def garbage_sender():
        n = 0
        rng = random.Random(args.seed + 1)
        while not tstop.wait(1.0):
            try:
                kind, ans, detail = W.garbage_probe(n, "127.0.0.1", proxy.rpc_port,
                                                    proxy.epm_port, 5.0, rng)
            except Exception as e:  # noqa: BLE001 - counted as a failed probe
                kind, ans, detail = W.GARBAGE_KINDS[n % len(W.GARBAGE_KINDS)], "error", repr(e)
                if isinstance(e, ConnectionRefusedError):
                    ans = "connect refused"
            d = garbage.setdefault(kind, {})
            d[ans] = d.get(ans, 0) + 1
            if ans in ("timeout", "connect refused", "error") or ans.startswith("unexpected"):
                garbage_fail.append("t=%.0fs %s: %s %s" % (time.time() - t0, kind, ans, detail))
            n += 1

    def staller():
        limit = 2 * args.send_timeout + 30  # the proxy re-arms its timer: 1-2 x send timeout
        while not tstop.is_set():
            try:
                r = W.staller_once("127.0.0.1", proxy.rpc_port, args.send_timeout, tstop, limit)
            except Exception as e:  # noqa: BLE001 - reported in the summary
                r = {"result": "error: %s: %s" % (type(e).__name__, e), "held": 0}
            r["t"] = time.time() - t0
            stallers.append(r)
            tstop.wait(0.5)

    def drain(timeout):
        try:
            msg = q.get(timeout=timeout)
        except queue_mod.Empty:
            return
        if msg[0] == "progress":
            progress[msg[1]] = msg[2]
        else:
            finals[msg[1]] = (msg[2], msg[3])

    threads = [threading.Thread(target=f, daemon=True) for f in (sampler, garbage_sender, staller)]
    for t in threads:
        t.start()

    # The proxy caches upstream ports for 60 s from the first bind (t ~ 0), so
    # entries expire near multiples of 60 s: kill #1 (new ports) half-way
    # between two expiries so the stale cache is really exercised.
    k1 = duration / 3
    k1s = k1 + (30 - k1 % 60) % 60
    kill_at = [k1s if k1s < 2 * duration / 3 - 15 else k1, 2 * duration / 3]
    last_print = 0
    while time.time() - t0 < duration:
        drain(0.5)
        el = time.time() - t0
        if kill_at and el >= kill_at[0]:
            kill_at.pop(0)
            # The first restart gets new service ports (the proxy's port cache,
            # 60 s, points at dead ports until it expires), the second the same ones.
            same = len(kills) == 1
            old = dict(lab.ports)
            lab.kill()
            tk = time.time() - t0
            lab.start(same_ports=same)
            tr = time.time() - t0
            kills.append({"killed": tk, "restarted": tr, "same_ports": same,
                          "old": old, "new": dict(lab.ports)})
            log("upstream killed at %.0fs, back at %.1fs, %s ports %s" % (
                tk, tr, "same" if same else "new", lab.ports))
        if el - last_print >= 30:
            last_print = el
            agg = empty_stats()
            for s in progress.values():
                merge(agg, s)
            tot = {}
            for v in agg["calls"].values():
                for o, n in v.items():
                    tot[o] = tot.get(o, 0) + n
            smp = samples[-1] if samples else (0, 0, 0)
            log("t=%4.0fs calls %s  rss %.1f MiB fds %d  garbage %d  stallers %d" % (
                el, tot, smp[1] / 1024, smp[2], sum(sum(v.values()) for v in garbage.values()),
                len(stallers)))
        if not proxy.alive():
            reasons.append("proxy died during the run (exit %s)" % proxy.proc.returncode)
            break

    # --- stop the clients
    t_end = time.time() - t0
    log("stopping clients at t=%.0fs" % t_end)
    stop.set()
    tstop.set()
    end = time.time() + args.call_timeout * 2 + 30
    while len(finals) < len(workers) and time.time() < end:
        drain(1.0)
    for p in workers:
        p.join(5)
        if p.is_alive():
            p.kill()
    for t in threads:
        t.join(args.call_timeout)
    if len(finals) < len(workers):
        reasons.append("%d client process(es) never reported" % (len(workers) - len(finals)))
    stats = empty_stats()
    stuck_threads = 0
    for s, stuck in finals.values():
        merge(stats, s)
        stuck_threads += stuck
    if stuck_threads:
        reasons.append("%d client thread(s) still stuck at the end" % stuck_threads)

    # --- fds back to baseline once every client is gone
    fd_end = None
    settle_end = time.time() + 30
    while proxy.alive() and time.time() < settle_end:
        fd_end = proxy.fds()
        if fd_end <= fd_base + 2:
            break
        time.sleep(0.5)
    rss_end = proxy.rss_kib() if proxy.alive() else None
    if proxy.alive():
        samples.append((time.time() - t0, rss_end, fd_end))
    pid_same = proxy.alive() and proxy.pid == proxy.proc.pid
    # --- proxy exit
    alive_at_end = proxy.alive()
    rc = proxy.stop()
    lab.stop()
    with open(proxy.log_path, errors="replace") as f:
        plog = f.read()

    # ================= verdict and summary =================
    if not alive_at_end:
        reasons.append("proxy not alive at the end")
    if proxy_pid_changes:
        reasons.extend(proxy_pid_changes)
    if rc is None:
        reasons.append("proxy did not exit within 60 s of SIGTERM")
    elif rc != 0:
        reasons.append("proxy exit status %s on SIGTERM" % rc)
    san = [ln for ln in plog.splitlines() if "Sanitizer" in ln or "runtime error" in ln
           or "LeakSanitizer" in ln]
    if san:
        reasons.append("sanitizer report in the proxy log (%d lines)" % len(san))

    per_kind = {}
    for (kind, op), v in stats["calls"].items():
        d = per_kind.setdefault(kind, dict.fromkeys(W.OUTCOMES, 0))
        for o, n in v.items():
            d[o] += n
    hangs = sum(d["hang"] for d in per_kind.values())
    bad = sum(d["bad"] for d in per_kind.values())
    if hangs:
        reasons.append("%d hung call(s)" % hangs)
    if bad:
        reasons.append("%d wrong answer(s)" % bad)
    for k in W.KINDS:
        if not per_kind.get(k, {}).get("ok"):
            reasons.append("no successful %s call" % k)

    # failures outside the upstream-outage windows, and recovery after each kill
    secs = stats["seconds"]

    def first_ok_after(kind, t):
        ts = sorted(s for (k, s), v in secs.items() if k == kind and s >= t0 + t and v[0])
        return (ts[0] - t0) if ts else None
    windows = []
    for i, k in enumerate(kills):
        rec = {}
        for kind in ("rfr", "nspi", "emsmdb"):
            f = first_ok_after(kind, k["restarted"])
            rec[kind] = None if f is None else max(0.0, f - k["restarted"])
        k["recovery"] = rec
        budget = 15 if k["same_ports"] else 60 + 15   # port cache TTL is 60 s
        if i:  # ports cached before an earlier restart may still be stale
            budget = max(budget, kills[i - 1]["restarted"] + kills[i - 1]["budget"]
                         - k["restarted"])
        budget = int(budget)
        k["budget"] = budget
        room = t_end - k["restarted"]
        for kind, r in rec.items():
            if (r is None or r > budget) and room > budget:
                reasons.append("%s did not recover within %d s of upstream restart %d" % (
                    kind, budget, i + 1))
        done = [r for r in rec.values() if r is not None]
        windows.append((k["killed"] - 1, k["restarted"] + 5 + (
            max(done) if len(done) == len(rec) else budget)))
    outside = {}
    for (kind, s), v in secs.items():
        t = s - t0
        if v[1] and not any(a <= t <= b for a, b in windows):
            outside[kind] = outside.get(kind, 0) + v[1]
    epm_fail = sum(v[1] for (kind, s), v in secs.items() if kind == "epm")
    if epm_fail:
        reasons.append("%d failed endpoint-mapper call(s) (served by the proxy itself)" % epm_fail)
    total_calls = sum(sum(d.values()) for d in per_kind.values())
    outside_total = sum(outside.values())
    if outside_total > max(5, total_calls // 10000):
        reasons.append("%d failed call(s) outside the upstream-restart windows (allowed %d)" % (
            outside_total, max(5, total_calls // 10000)))

    if garbage_fail:
        reasons.append("%d garbage probe(s) not answered by a fault/close in 5 s" %
                       len(garbage_fail))
    if not garbage:
        reasons.append("no garbage sent")
    closed = [s for s in stallers if s["result"] == "closed by proxy"]
    not_closed = [s for s in stallers if s["result"] == "NOT closed"]
    if not_closed:
        reasons.append("%d staller(s) not closed within 2 x send timeout + 30 s" % len(not_closed))
    if not closed and duration >= 60:
        reasons.append("no staller was ever closed by the proxy")

    # memory rule
    warm = [s for s in samples if s[0] >= min(args.warmup, duration / 2)]
    rss_ref = warm[0][1] if warm else rss_base
    rss_limit = max(rss_ref * 1.5, rss_ref + 32 * 1024)
    rss_last = samples[-1][1] if samples else 0
    if rss_last > rss_limit:
        reasons.append("RSS grew: %.1f MiB at the end > limit %.1f MiB" % (
            rss_last / 1024, rss_limit / 1024))
    if fd_end is None or fd_end > fd_base + 2:
        reasons.append("open fds %s at the end, baseline %d" % (fd_end, fd_base))

    close_reasons = {}
    close_by_port = {}   # port -> [(epoch, reason)]: ports are reused during a run
    for m in re.finditer(r"(\S+)Z info  conn close 127\.0\.0\.1:(\d+) .* reason=(.*)", plog):
        close_reasons[m.group(3)] = close_reasons.get(m.group(3), 0) + 1
        ts = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) + float(
            "0" + m.group(1)[19:])
        close_by_port.setdefault(int(m.group(2)), []).append((ts, m.group(3)))
    staller_why = {}
    for st in closed:
        cand = [(abs(ts - (t0 + st["t"])), why) for ts, why in close_by_port.get(st.get("port"), [])]
        why = min(cand)[1] if cand and min(cand)[0] < 10 else "?"
        staller_why.setdefault(why, []).append(st.get("after_block") or 0)
    oom = close_reasons.get("out of memory", 0)
    if oom:
        # RSS stays in tens of MiB and the machine has GiBs free: never a real OOM
        reasons.append("proxy closed %d association(s) with reason=out of memory" % oom)
    warn_lines = [ln for ln in plog.splitlines() if re.match(r"\S+ warn ", ln)]
    err_lines = [ln for ln in plog.splitlines() if re.match(r"\S+ error ", ln)]
    warn_kinds = {}
    for ln in warn_lines:
        key = re.sub(r"\d+(\.\d+)?", "N", ln.split(" ", 2)[2])[:90]
        warn_kinds[key] = warn_kinds.get(key, 0) + 1

    P = print
    P("")
    P("=" * 78)
    P("mapiproxy soak summary  (output: %s)" % outdir)
    P("=" * 78)
    P("tree                %s" % rev)
    P("duration            %.1f min of load (%.0f s), %d clients in %d processes, seed %d" % (
        t_end / 60, t_end, args.clients, args.workers, args.seed))
    P("proxy               pid %d, %s, same PID throughout: %s, exit status on SIGTERM: %s" % (
        proxy.pid, os.path.basename(args.binary), "yes" if pid_same and not proxy_pid_changes
        else "NO", rc))
    P("calls               %-8s %9s %9s %8s %8s %6s %6s  %s" % (
        "kind", "attempted", "succeeded", "faulted", "errored", "hangs", "bad", "latency p50/p99/max"))
    for k in W.KINDS:
        d = per_kind.get(k, dict.fromkeys(W.OUTCOMES, 0))
        h = stats["lat_hist"].get(k, {})
        P("                    %-8s %9d %9d %8d %8d %6d %6d  <=%dms/<=%dms/%.1fs" % (
            k, sum(d.values()), d["ok"], d["fault"], d["error"], d["hang"], d["bad"],
            pct(h, 0.5), pct(h, 0.99), stats["lat_max"].get(k, 0)))
    P("                    %-8s %9d %9d %8d %8d %6d %6d" % (
        "total", total_calls, sum(d["ok"] for d in per_kind.values()),
        sum(d["fault"] for d in per_kind.values()), sum(d["error"] for d in per_kind.values()),
        hangs, bad))
    P("failures outside    %s (windows: %s)" % (
        outside or "none", ", ".join("%.0f-%.0fs" % w for w in windows) or "none"))
    tl = {}
    for (kind, s), v in secs.items():
        if v[1]:
            b = int((s - t0) // 10 * 10)
            tl[b] = tl.get(b, 0) + v[1]
    P("failed calls by 10 s of the run: %s" % (
        " ".join("%d:%d" % kv for kv in sorted(tl.items())) or "none"))
    P("upstream kills      %d" % len(kills))
    for i, k in enumerate(kills):
        P("  #%d SIGKILL at %.0fs, back at %.1fs (%s ports), first success after restart: %s"
          " (budget %d s)" % (i + 1, k["killed"], k["restarted"],
                              "same" if k["same_ports"] else "new",
                              ", ".join("%s %s" % (kk, "n/a" if v is None else "%.0fs" % v)
                                        for kk, v in k["recovery"].items()), k["budget"]))
    top = sorted(stats["examples"].items(), key=lambda kv: -kv[1][0])[:12]
    if top:
        P("failure messages    (count, kind, outcome, first/last t)")
        for (kind, out, msg), (n, a, b) in top:
            P("  %6d %-7s %-6s %5.0fs-%5.0fs %s" % (n, kind, out, a - t0, b - t0, msg[:100]))
    P("garbage sent        %d probes" % sum(sum(v.values()) for v in garbage.values()))
    for kind in W.GARBAGE_KINDS:
        if kind in garbage:
            P("  %-24s %s" % (kind, ", ".join("%s %d" % kv for kv in sorted(garbage[kind].items()))))
    for g in garbage_fail[:10]:
        P("  FAILED: %s" % g)
    P("stallers            %d opened, %d closed by the proxy, %d not closed, %d other" % (
        len(stallers), len(closed), len(not_closed),
        len(stallers) - len(closed) - len(not_closed)))
    ab = [s["after_block"] for s in closed if s.get("after_block") is not None]
    if closed:
        P("  held %.1f-%.1f s; closed %.1f-%.1f s after the proxy stopped reading them "
          "(send timeout %d s); requests sent per staller %d-%d" % (
              min(s["held"] for s in closed), max(s["held"] for s in closed),
              min(ab) if ab else 0, max(ab) if ab else 0, args.send_timeout,
              min(s.get("sent", 0) for s in closed), max(s.get("sent", 0) for s in closed)))
    for why, ab in sorted(staller_why.items()):
        P("  proxy's reason %-22s %d (closed %.1f-%.1f s after the proxy stopped reading)" % (
            why, len(ab), min(ab), max(ab)))
    other = {}
    for s in stallers:
        if s["result"] not in ("closed by proxy", "NOT closed"):
            other[s["result"]] = other.get(s["result"], 0) + 1
    if other:
        P("  other outcomes: %s" % other)
    rs = [s[1] for s in samples]
    P("RSS (KiB)           %d samples: start %d, min %d, max %d, first %d, warm-up ref %d (t=%.0fs),"
      " last %d" % (len(rs), rss_base, min(rs or [0]), max(rs or [0]), rs[0] if rs else 0,
                    rss_ref, warm[0][0] if warm else 0, rss_last))
    P("  rule: last <= max(1.5 x ref, ref + 32 MiB) = %d KiB -> %s" % (
        rss_limit, "ok" if rss_last <= rss_limit else "EXCEEDED"))
    fs = [s[2] for s in samples if s[2] is not None]
    P("fds                 baseline %d, max %d during the run, %s at the end (rule: <= baseline+2)" % (
        fd_base, max(fs or [0]), fd_end))
    P("proxy log           %d lines, %d warn, %d error, %d sanitizer" % (
        plog.count("\n"), len(warn_lines), len(err_lines), len(san)))
    for key, n in sorted(warn_kinds.items(), key=lambda kv: -kv[1])[:12]:
        P("  %6d %s" % (n, key))
    P("  connection close reasons: %s" % ", ".join(
        "%s %d" % kv for kv in sorted(close_reasons.items(), key=lambda kv: -kv[1])))
    for ln in [ln for ln in plog.splitlines() if "reason=out of memory" in ln][:5]:
        P("  OOM: %s" % ln)
    for ln in san[:20]:
        P("  SAN: %s" % ln)
    P("=" * 78)
    if reasons:
        P("soak: FAIL (%s)" % "; ".join(reasons))
        return 1
    P("soak: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
