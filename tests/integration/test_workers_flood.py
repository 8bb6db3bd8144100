"""A flood of new MAPI/HTTP sessions with mapiproxy:workers = 2 must not
move a live session off its worker (doc/internals/workers.md, "The tables
and a flood"): the session cookie -> worker table pins a live session's
entry from the response that sets its cookie until Disconnect/Unbind (or
unused for the server's X-ExpirationInfo and a minute: the lab says
900000 ms), so however many new sessions come, only entries of no
live session are pushed out; when every entry is a live session's, a new
one is not kept, with a warning and mapiproxy_affinity_full_total.

The table is made small (mapiproxy:affinity table size = 16) so that a
flood of 120 sessions, bounded in count and time, overfills it.  The
clients are python3-requests under the lab's MAPI/HTTP client; the metrics
are read as Prometheus text over http.client."""
import http.client
import os
import re
import sys
import threading
import time

from requests.auth import HTTPBasicAuth

from conftest import ROOT, free_port
from test_http_front_lab import PASSWORDS, env, start_front  # noqa: F401 (fixture)
from test_workers_https import module_counts

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import mapihttp_client as MH  # noqa: E402

FLOOD = 120          # new sessions, never ended (a client logging on again and again)
FLOOD_SECONDS = 90   # the flood stops by then whatever it reached
TABLE = 16


def bob():
    return HTTPBasicAuth("LAB\\bob", PASSWORDS["bob"])


def metric(port, name, label):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    m = re.search(r"^%s\{table=\"%s\"\} (\d+)$" % (re.escape(name), re.escape(label)), body, re.M)
    return int(m.group(1)) if m else None


def test_live_session_keeps_its_worker_through_a_flood(make_proxy, env):  # noqa: F811
    mport = free_port()
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "dcerpc_mapiproxy:modules": "mpm_test_a",
                                      "mapiproxy:affinity table size": str(TABLE),
                                      "mapiproxy:metrics listen": f"127.0.0.1:{mport}"})
    # the live session: every request on a new TCP connection, so about
    # half of them are accepted by the worker that does not hold it
    live = MH.NspiHttp(p.base, auth=bob(), verify=env["ca"])
    live.http.headers["Connection"] = "close"
    live.bind()
    first = live.get_special_table(flags=0x4)
    assert first["ErrorCode"] == 0 and first["Rows"]
    # its pin lasts as long as the server keeps the session unused (the
    # lab's X-ExpirationInfo, 900000 ms, and a minute), not a fixed 2 hours
    assert "MAPI/HTTP session kept on worker" in p.log() and "every 960 s" in p.log()
    stop = threading.Event()
    made, errors = [], []
    lock = threading.Lock()

    def flood():
        while not stop.is_set():
            with lock:
                if len(made) >= FLOOD:
                    return
                made.append(None)
            try:
                ab = MH.NspiHttp(p.base, auth=bob(), verify=env["ca"])
                ab.http.headers["Connection"] = "close"
                ab.bind()  # never unbound
            except Exception as e:  # reported below
                errors.append(e)

    t0 = time.monotonic()
    flooders = [threading.Thread(target=flood) for _ in range(4)]
    for t in flooders:
        t.start()
    answers = []
    # the live session idles while the first part of the flood goes by (an
    # LRU table would push it out: more new sessions than the table holds),
    # then keeps working while the rest comes
    while len(made) < 3 * TABLE and time.monotonic() - t0 < FLOOD_SECONDS:
        time.sleep(0.05)
    while any(t.is_alive() for t in flooders) and time.monotonic() - t0 < FLOOD_SECONDS:
        answers.append(live.get_special_table(flags=0x4))
    stop.set()
    for t in flooders:
        t.join(30)
    for _ in range(6):  # after the flood too
        answers.append(live.get_special_table(flags=0x4))
    live.unbind()
    elapsed = time.monotonic() - t0
    full = metric(mport, "mapiproxy_affinity_full_total", "mapihttp-sessions")
    p.stop()
    log = p.log()
    print(f"{len(made)} new sessions in {elapsed:.1f} s, {len(answers)} requests of the live "
          f"session during and after them; affinity_full_total {full}")
    assert not errors, errors[:3]
    assert len(made) == FLOOD, len(made)
    assert len(answers) >= 8
    # every request of the live session answered, with the same rows
    assert all(a["ErrorCode"] == 0 and a["Rows"] == first["Rows"] for a in answers)
    # ... by the same module session, so on the same worker: the live
    # session's module call count goes 1, 2, ... (Bind, the first table,
    # every answer above, Unbind) in one session whose id names its worker
    # (MAPI/HTTP session ids: 0x40000000 | (serial * workers + worker))
    counts = module_counts(log)
    mine = [sid for sid, v in counts.items() if len(v) == len(answers) + 3]
    assert len(mine) == 1, {k: v for k, v in counts.items() if len(v) > 1}
    assert counts[mine[0]] == list(range(1, len(answers) + 4))
    # its requests did land on both workers' sockets and were moved
    moved = len(re.findall(r"its MAPI/HTTP session's worker: handed to worker \d", log))
    assert moved > 0
    # the table was full of live sessions: said in the log, and counted
    assert re.search(r"affinity mapihttp-sessions: full \(16 entries, 16 of them pinned", log), \
        log[-3000:]
    assert full and full > 0
    assert "Sanitizer" not in log
