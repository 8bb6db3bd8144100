#!/usr/bin/python3
"""make mem-fx: mapiproxy's memory while 50 sessions sync the lab's Inbox
(with its 10 MB attachment) at once, in cached mode, through the mime-dump
module (doc/internals/content.md, "Memory").

Starts the lab (tests/lab/exchange_lab.py) and build/mapiproxy (-O2, no
sanitizers) with `mime-dump` (spill size 1 MiB, .eml files and spilled
values in a temporary directory), then 50 clients (5 processes x 10
threads) that each connect, log on and, released together, run an ICS
download of the Inbox in 0x7F00-byte GetBuffers (tests/lab/ics_client.py).
The proxy's VmRSS is sampled every 0.1 s; at the end its VmHWM (peak RSS)
is printed with the idle RSS before the load, and checked against the
documented bound (FX_MEM_LIMIT_MIB, default 200):

    fx-mem: 50 sessions, 200 messages (50 x 10 MB) in N s; RSS idle X MiB,
    peak Y MiB (limit 200 MiB): PASS

Exit status 0 on PASS, 1 otherwise.  Knobs: FX_MEM_SESSIONS [50],
FX_MEM_LIMIT_MIB [200], MAPIPROXY [build/mapiproxy].
"""
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import soak as S  # noqa: E402

SESSIONS = int(os.environ.get("FX_MEM_SESSIONS", "50"))
os.environ.setdefault("LAB_BIG_ATTACHMENT", "1")  # the 10 MB message (lab_store.big_size)
LIMIT_MIB = int(os.environ.get("FX_MEM_LIMIT_MIB", "200"))
BINARY = os.environ.get("MAPIPROXY", os.path.join(ROOT, "build", "mapiproxy"))
PER_PROC = 10


def client_proc(port, n, ready, go, results):
    import emsmdb_client as EC
    import emsmdb_ndr as N
    import ics_client as IC
    from test_lab import ALICE

    def one():
        try:
            from impacket.dcerpc.v5 import transport
            t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % port)
            t.set_connect_timeout(900)  # also the read timeout: the lab is slow under 50 syncs
            dce = t.get_dce_rpc()
            dce.connect()
            dce.bind(N.MSRPC_UUID_EMSMDB)
            c = EC.EmsmdbClient(dce)
            plain = c.execute  # the lab's LZ77 is pure Python: ask for none
            c.execute = lambda rops, flags=0: plain(rops, flags | N.EXT2_NO_COMPRESSION)
            assert c.connect_ex(ALICE)["ErrorCode"] == 0
            [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
            ready.put(1)
            go.wait()
            res = IC.sync_folder(c, 0, logon["FolderIds"][4], buffer_size=0x7F00)
            results.put(("ok", len(res["messages"]), len(res["stream"])))
            c.disconnect()
        except Exception as e:  # reported by the parent
            ready.put(1)
            results.put(("error", repr(e)[:300], 0))

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def rss_kib(pid, key="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        return int(f.read().split(key + ":")[1].split()[0])


def main():
    out = tempfile.mkdtemp(prefix="mp-fxmem-")
    eml = os.path.join(out, "eml")
    os.mkdir(eml)
    lab = S.Lab(out, S.free_port())
    lab.start()
    proxy = None
    procs = []
    try:
        rpc = S.free_port()
        epm = S.free_port()
        conf = os.path.join(out, "mapiproxy.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "[global]",
                "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
                "mapiproxy:listen = 127.0.0.1",
                "mapiproxy:epmapper port = %d" % epm,
                "mapiproxy:rpc port = %d" % rpc,
                "mapiproxy:upstream epmapper port = %d" % lab.epm_port,
                "mapiproxy:log level = warning",
                "dcerpc_mapiproxy:modules = mime-dump",
                "mime-dump:dir = %s" % eml,
                "mime-dump:spill size = 1048576",
                "mime-dump:tmpdir = %s" % out,
            ]) + "\n")
        logf = open(os.path.join(out, "mapiproxy.log"), "w")
        import subprocess
        proxy = subprocess.Popen([BINARY, "-c", conf], stdout=logf, stderr=subprocess.STDOUT)
        S.wait_port(rpc)
        time.sleep(0.5)
        idle = rss_kib(proxy.pid)
        ctx = mp.get_context("fork")
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        left = SESSIONS
        while left:
            n = min(PER_PROC, left)
            p = ctx.Process(target=client_proc, args=(rpc, n, ready, go, results))
            p.start()
            procs.append(p)
            left -= n
        for _ in range(SESSIONS):
            ready.get(timeout=120)
        peak = idle
        t0 = time.time()
        go.set()
        got = []
        while len(got) < SESSIONS:
            try:
                got.append(results.get(timeout=0.1))
            except Exception:
                pass
            peak = max(peak, rss_kib(proxy.pid))
            if time.time() - t0 > 1800:
                break
        secs = time.time() - t0
        hwm = rss_kib(proxy.pid, "VmHWM")
        errors = [g for g in got if g[0] != "ok"]
        msgs = sum(g[1] for g in got if g[0] == "ok")
        emls = len([x for x in os.listdir(eml) if x.endswith(".eml")])
        ok = not errors and len(got) == SESSIONS and hwm <= LIMIT_MIB * 1024 and \
            proxy.poll() is None and emls == msgs
        print("fx-mem: %d sessions, %d messages synced, %d .eml files, in %.1f s; RSS idle "
              "%.1f MiB, peak %.1f MiB (VmHWM; sampled %.1f MiB) (limit %d MiB): %s"
              % (SESSIONS, msgs, emls, secs, idle / 1024, hwm / 1024, peak / 1024, LIMIT_MIB,
                 "PASS" if ok else "FAIL"))
        for e in errors[:5]:
            print("  client error:", e[1])
        return 0 if ok else 1
    finally:
        for p in procs:
            p.join(30)
        if proxy and proxy.poll() is None:
            proxy.terminate()
            proxy.wait(30)
        lab.stop()
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
