#!/usr/bin/python3
"""make bench-av: what the av module (clamd) adds to online uploads.

Starts clamd (a database with only a test-made EICAR signature, as
tests/integration/test_sec_proxy.py does), the Python lab (tests/lab) as the
upstream, and build/mapiproxy (the optimised build) twice before it: once
with no module, once with `av` scanning every upload through clamd's unix
socket.  For 1 and 16 concurrent sessions (one process each, the lab's own
Python client tests/integration/emsmdb_client.py over RPC) every session
uploads a small clean message (one 1 KB attachment, online mode: create,
set properties, attachment, save) in a closed loop for BENCH_AV_SECS, and
the script prints messages/s and p50/p99 per upload for both proxies side by
side with the ratio.  The two proxies take turns for each client count,
against the same lab and clamd.

Knobs: BENCH_AV_SECS [10] seconds per cell, split over BENCH_AV_ROUNDS [2]
rounds that alternate which proxy goes first, BENCH_AV_CLIENTS [1,16],
MAPIPROXY [build/mapiproxy].  Every process started here is stopped on exit.
"""
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from conftest import Lab, Proxy  # noqa: E402
from test_sec_proxy import upload_msg  # noqa: E402
from test_svc import Lab as SvcLab  # noqa: E402

SECS = float(os.environ.get("BENCH_AV_SECS", "10"))
ROUNDS = max(1, int(os.environ.get("BENCH_AV_ROUNDS", "2")))
CLIENTS = [int(x) for x in os.environ.get("BENCH_AV_CLIENTS", "1,16").split(",") if x]
MAPIPROXY = os.environ.get("MAPIPROXY", os.path.join(ROOT, "build", "mapiproxy"))
BODY = bytes(range(256)) * 4  # the clean 1 KB attachment


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def session(port, deadline, start_at, out):
    """One session: log on, then upload until the deadline; latencies in s."""
    from test_mime_dump import connect
    import content_client as CC
    dce, c, fids = connect(port)
    lats = []
    while time.time() < start_at:
        time.sleep(0.005)
    while time.time() < deadline:
        t = time.perf_counter()
        CC.upload(c, fids[5], upload_msg("bench upload", BODY))
        lats.append(time.perf_counter() - t)
    c.disconnect()
    dce.disconnect()
    out.put(lats)


def cell(port, n, secs):
    """n sessions for secs: their latencies (s)."""
    q = mp.Queue()
    start_at = time.time() + 1.0 + 0.1 * n  # every session logged on first
    deadline = start_at + secs
    ps = [mp.Process(target=session, args=(port, deadline, start_at, q)) for _ in range(n)]
    for p in ps:
        p.start()
    lats = []
    for _ in ps:
        lats += q.get(timeout=secs + 120)
    for p in ps:
        p.join(30)
        if p.exitcode != 0:
            raise RuntimeError("a session failed (exit %s)" % p.exitcode)
    return lats


def figures(lats):
    """messages/s, p50 and p99 in ms."""
    lats = sorted(lats)

    def pct(x):
        return lats[min(len(lats) - 1, int(len(lats) * x))] * 1000
    return len(lats) / SECS, pct(0.50), pct(0.99)


def main():
    if shutil.which("clamd") is None:
        sys.exit("bench-av: clamd missing (scripts/install-deps.sh)")
    d = tempfile.mkdtemp(prefix="mp-bench-av-")
    os.chmod(d, 0o755)
    svc = SvcLab(d)  # clamd with a test-made EICAR database
    lab = None
    proxies = []
    try:
        svc.start_all(("clamd",))
        lab = Lab(d)
        vlog = d + "/verdicts"
        confs = {"without av": {"mapiproxy:log level": "warning"},
                 "with av (clamd)": {"mapiproxy:log level": "warning",
                                     "dcerpc_mapiproxy:modules": "av",
                                     "av:clamd": "unix:" + svc.path("clamd.sock"),
                                     "av:verdict_log": vlog}}
        for name, extra in confs.items():
            proxies.append((name, Proxy(d, upstream_epm_port=lab.epm_port, extra=extra,
                                        binary=MAPIPROXY, check_leaks=False)))
        rows = []
        for n in CLIENTS:
            lats = {name: [] for name, _ in proxies}
            for r in range(ROUNDS):  # ABBA...: neither proxy always goes first
                for name, p in (proxies if r % 2 == 0 else proxies[::-1]):
                    log("bench-av: %s, %d session(s), round %d, %.1f s ..."
                        % (name, n, r + 1, SECS / ROUNDS))
                    lats[name] += cell(p.rpc_port, n, SECS / ROUNDS)
            rows.append((n, {name: figures(x) for name, x in lats.items()}))
        ms = sorted(json.loads(x)["ms"] for x in open(vlog)) if os.path.exists(vlog) else [0]
        print("av (clamd) on online uploads: closed loop, %.0f s per cell in %d rounds, "
              "1 KB clean attachment per message; load: %s"
              % (SECS, ROUNDS, os.getloadavg()))
        print("| sessions | msg/s without | msg/s with av | ratio | p50 ms without / with "
              "| p99 ms without / with | added p50 ms |")
        print("|---|---|---|---|---|---|---|")
        (a, b) = [name for name, _ in proxies]
        for n, got in rows:
            x, y = got[a], got[b]
            print("| %d | %.1f | %.1f | x%.2f | %.1f / %.1f | %.1f / %.1f | %+.1f |"
                  % (n, x[0], y[0], y[0] / x[0] if x[0] else 0, x[1], y[1], x[2], y[2],
                     y[1] - x[1]))
        print("av's own time per scan (its verdict lines, both cells): %d scans, "
              "p50 %.1f ms, p99 %.1f ms" % (len(ms), ms[len(ms) // 2],
                                           ms[min(len(ms) - 1, int(len(ms) * 0.99))]))
    finally:
        for _, p in proxies:
            p.stop(check=False)
        if lab:
            lab.stop()
        for name in list(svc.procs):
            svc.stop(name)
        if os.environ.get("BENCH_KEEP"):
            log("bench-av: kept " + d)
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
