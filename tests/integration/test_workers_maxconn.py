"""mapiproxy:max connections on the HTTPS front with mapiproxy:workers = 2
(doc/internals/workers.md, "Limits for the process"): the front's
connections are counted for the whole process, whichever worker accepted
them, and a connection handed to another worker (a MAPI/HTTP request moved
to its session's worker, hmove.c) is counted again by the worker that
adopts it, after the one that gave it let it go.

  - with max connections - 1 connections held open, MAPI/HTTP sessions whose
    every request comes on a new connection (so about half of them are
    moved) all succeed: a moved connection is not counted twice;
  - with max connections held (on one worker or both), every further
    connection is refused, on either worker.

The same for DCE/RPC (already counted for the process, doc/internals/
workers.md): with max connections - 2 held, NSPI clients whose second
connection joins the first one's association group (and is handed to the
group's worker when the other worker accepted it) all succeed: the
adopting worker checks the limit after the giving one let it go.

The client is python3-requests under the lab's MAPI/HTTP client."""
import os
import re
import socket
import sys
import time

import requests
from requests.auth import HTTPBasicAuth

from conftest import ROOT
from test_http_front_lab import PASSWORDS, env, start_front  # noqa: F401 (fixture)
from test_rpc_security import closed_count, silent_connections
from test_workers import client

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import mapihttp_client as MH  # noqa: E402

MAX = 4


def held(p, n, addr):
    """n connections that never send a byte (the front counts them from
    the accept; the TLS handshake never starts), non-blocking."""
    port = int(p.base.rsplit(":", 1)[1])
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((addr, 0))
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    return socks


def opened(p, addr):
    return len(re.findall(r"http #\d+ open %s:\d+ \(TLS\) on worker \d" % re.escape(addr),
                          p.log()))


def wait_opened(p, addr, n, secs=10):
    end = time.monotonic() + secs
    while time.monotonic() < end and opened(p, addr) < n:
        time.sleep(0.05)
    assert opened(p, addr) == n, p.log()[-3000:]


def retried(f, *a, **kw):
    """A request whose new connection came while the previous one was still
    being closed by the proxy (one over the limit for a moment) is refused
    at the accept: sent again.  A refusal at adoption is not retried here:
    the log must not have one."""
    for _ in range(5):
        try:
            return f(*a, **kw)
        except requests.exceptions.ConnectionError:
            time.sleep(0.2)
    return f(*a, **kw)


def test_front_limit_counts_moves_once_and_holds_on_every_worker(make_proxy, env):  # noqa: F811
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "mapiproxy:max connections": str(MAX)})
    socks = held(p, MAX - 1, "127.0.0.31")
    wait_opened(p, "127.0.0.31", MAX - 1)
    for _ in range(4):
        ab = MH.NspiHttp(p.base, auth=HTTPBasicAuth("LAB\\bob", PASSWORDS["bob"]),
                         verify=env["ca"])
        ab.http.headers["Connection"] = "close"
        assert retried(ab.bind)["ErrorCode"] == 0
        t1 = retried(ab.get_special_table, flags=0x4)
        t2 = retried(ab.get_special_table, flags=0x4)
        assert t1["ErrorCode"] == 0 and t1["Rows"] and t1["Rows"] == t2["Rows"]
        retried(ab.unbind)
    assert closed_count(socks) == 0
    log = p.log()
    moved = len(re.findall(r"its MAPI/HTTP session's worker: handed to worker \d", log))
    adopted = len(re.findall(r"adopted from worker \d", log))
    print(f"{moved} moved at {MAX - 1} + 1 of {MAX} connections")
    assert moved > 0 and adopted == moved, (moved, adopted)
    assert "refused by worker" not in log and "not adopted" not in log
    # the limit: one more held makes MAX (on one worker or both), once the
    # proxy has closed the sessions' last connection (a moved connection is
    # closed by both workers: once handed over, once done)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        log = p.log()
        opens = len(re.findall(r"http #\d+ open ", log))
        adopted = len(re.findall(r"adopted from worker \d", log))
        if len(re.findall(r"http #\d+ \S+: closed \(", log)) >= opens + adopted - (MAX - 1):
            break
        time.sleep(0.05)
    socks += held(p, 1, "127.0.0.32")
    wait_opened(p, "127.0.0.32", 1)
    workers = set(re.findall(r"http #\d+ open 127\.0\.0\.3[12]:\d+ \(TLS\) on worker (\d)", log
                             + p.log()))
    over = held(p, 12, "127.0.0.33")
    end = time.monotonic() + 10
    while time.monotonic() < end and closed_count(over) < len(over):
        time.sleep(0.1)
    assert closed_count(over) == len(over) and closed_count(socks) == 0
    for s in socks + over:
        s.close()
    refused = re.findall(r"http 127\.0\.0\.33:\d+ refused: %d connections open "
                         r"\(mapiproxy:max connections\) on worker (\d)" % MAX, p.log())
    print(f"held on workers {sorted(workers)}, refused on {sorted(set(refused))}")
    assert len(refused) == len(over), refused
    assert opened(p, "127.0.0.33") == 0
    p.stop()
    assert "Sanitizer" not in p.log()


def test_dce_bind_hand_over_counts_once(lab, make_proxy):
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"mapiproxy:workers": "2", "mapiproxy:max connections": str(MAX)})
    socks = silent_connections(p, MAX - 2, ["127.0.0.34"])
    end = time.monotonic() + 10
    while time.monotonic() < end and p.log().count("conn open 127.0.0.34") < MAX - 2:
        time.sleep(0.05)
    out = [None]
    again = 0
    for i in range(12):
        # two connections of one group: MAX with the held ones, once the
        # proxy closed the previous client's (every association, a handed
        # one's on both workers, logs one open and one close); a client that
        # came while one was still being closed all the same is run again
        end = time.monotonic() + 10
        while time.monotonic() < end:
            log = p.log()
            if log.count("conn close ") >= log.count("conn open ") - (MAX - 2):
                break
            time.sleep(0.02)
        for _ in range(5):
            client(p.host, p.rpc_port, out, 0)
            if isinstance(out[0], tuple):
                break
            again += 1
            time.sleep(0.3)
        assert isinstance(out[0], tuple), out[0]
        group, joined, closed = out[0]
        assert joined == group and closed, (hex(group), hex(joined), closed)
    assert closed_count(socks) == 0
    for s in socks:
        s.close()
    log = p.log()
    handed = len(re.findall(r"of worker \d; handed over", log))
    print(f"{handed} of 12 second connections handed over at {MAX} connections, "
          f"{again} clients run again")
    # a hand-over refused by its adopting worker would fail every time it
    # happens (about half the clients)
    assert handed > 0 and again == 0, (handed, again)
    p.stop()
    assert "Sanitizer" not in p.log()
