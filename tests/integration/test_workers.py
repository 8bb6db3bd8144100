"""mapiproxy:workers = 2 (doc/internals/workers.md): connections of one
association group, and requests of one MAPI/HTTP session, are served by the
worker that holds the group's context handles and its modules' session data.

The requests and answers are built and read with Impacket's NSPI structures
(code we did not write); the lab answers as Exchange would."""
import os
import re
import struct
import socket
import sys
import threading

from impacket.dcerpc.v5 import nspi

from conftest import ROOT
from rpcutil import NDR20, NSPI, bind_pdu, read_pdu, request_pdu
from test_http_front_lab import env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import start_front

N_CLIENTS = 64


def nspi_bind_req():
    b = nspi.NspiBind()
    b["dwFlags"] = 0
    b["pStat"]["CodePage"] = 1252
    b["pServerGuid"] = b"\0" * 16
    return b.getData()


def client(host, port, out, i):
    """Connection 1 binds NSPI and NspiBinds; connection 2 joins its
    association group and NspiUnbinds the handle connection 1 got."""
    try:
        s1 = socket.create_connection((host, port), timeout=20)
        s1.sendall(bind_pdu([(NSPI, [NDR20])]))
        ack = read_pdu(s1)
        assert ack and ack[0] == 12, ack
        group = struct.unpack_from("<I", ack[3], 20)[0]
        s1.sendall(request_pdu(2, 0, nspi_bind_req()))
        r = read_pdu(s1)
        assert r and r[0] == 2, r
        handle = r[3][24:44]
        s2 = socket.create_connection((host, port), timeout=20)
        s2.sendall(bind_pdu([(NSPI, [NDR20])], assoc_group=group))
        ack2 = read_pdu(s2)
        assert ack2 and ack2[0] == 12, ack2
        joined = struct.unpack_from("<I", ack2[3], 20)[0]
        s2.sendall(request_pdu(7, 1, handle + b"\0\0\0\0"))  # NspiUnbind(handle, 0)
        r2 = read_pdu(s2)
        assert r2 and r2[0] == 2, f"NspiUnbind on the second connection: {r2 and r2[0]}"
        out[i] = (group, joined, r2[3][24:44] == b"\0" * 20)  # the handle, closed
        s1.close()
        s2.close()
    except Exception as e:  # reported by the test
        out[i] = e


def test_association_groups_stay_on_their_worker(lab, make_proxy):
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"mapiproxy:workers": "2",
                          "dcerpc_mapiproxy:modules": "mpm_test_a"})
    out = [None] * N_CLIENTS
    ts = [threading.Thread(target=client, args=(p.host, p.rpc_port, out, i))
          for i in range(N_CLIENTS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    errors = [o for o in out if not isinstance(o, tuple)]
    assert not errors, errors[:3]
    for group, joined, closed in out:
        assert joined == group and closed, (hex(group), hex(joined), closed)
    # NspiUnbind answered through the handle on the second connection: the
    # handle was found, on the worker that holds the group
    log = p.log()
    assert "2 workers" in log
    assert "Sanitizer" not in log
    # both workers own groups: the low bit of a group id names its worker
    assert {g & 1 for g, _, _ in out} == {0, 1}, [hex(g) for g, _, _ in out]
    # the module's session data followed the group: calls 1 (NspiBind) and
    # 2 (NspiUnbind, on the second connection) in one session each
    counts = {}
    for m in re.finditer(r"module mpm_test_a: session=(\d+) calls=(\d+)", log):
        counts.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    assert len(counts) == N_CLIENTS, len(counts)
    assert all(sorted(v) == [1, 2] for v in counts.values()), counts
    bad = [l for l in log.splitlines() if "does not exist; given a new group" in l]
    assert not bad, bad + [l for l in log.splitlines()
                           if any(w in l for w in (b.split()[3].rstrip(":") for b in bad))]
    # some second connections reached the other worker first and were handed over
    handed = len(re.findall(r"of worker \d; handed over", log))
    print(f"{handed} of {N_CLIENTS} second connections handed over")
    assert handed > 0


def test_mapihttp_session_keeps_module_state(make_proxy, env):  # noqa: F811
    sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
    import mapihttp_client as MH
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "dcerpc_mapiproxy:modules": "mpm_test_a"})
    sessions = []
    for _ in range(4):
        ab = MH.NspiHttp(p.base, auth=ntlm(), verify=env["ca"])
        ab.bind()
        ab.get_special_table(flags=0x4)
        ab.get_special_table(flags=0x4)
        ab.unbind()
        sessions.append(ab)
    log = p.log()
    counts = {}
    for m in re.finditer(r"module mpm_test_a: session=(\d+) calls=(\d+)", log):
        counts.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    # one session per NspiHttp client, its four calls counted in order; the
    # requests of the NTLM handshake (401 answers, no cookie yet) make
    # sessions of one call each, as with one worker
    full = [v for v in counts.values() if len(v) > 1]
    assert full == [[1, 2, 3, 4]] * 4, counts
    assert all(v == [1] for v in counts.values() if len(v) == 1), counts


def test_reload_and_stop_with_two_workers(lab, make_proxy):
    """SIGHUP builds a generation on every worker; the groups made before
    go on, new clients use the new one; SIGTERM ends every worker cleanly
    (Proxy.stop checks exit 0 and no sanitizer report)."""
    import signal
    import time
    p = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:workers": "2"})
    out = [None] * 8
    for i in range(4):
        client(p.host, p.rpc_port, out, i)
    p.proc.send_signal(signal.SIGHUP)
    end = time.time() + 20
    while "applied as configuration 2" not in p.log() and time.time() < end:
        time.sleep(0.1)
    assert "applied as configuration 2" in p.log(), p.log()[-3000:]
    ts = [threading.Thread(target=client, args=(p.host, p.rpc_port, out, i)) for i in range(4, 8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert all(isinstance(o, tuple) and o[1] == o[0] and o[2] for o in out), out
    p.stop()
    log = p.log()
    assert "Sanitizer" not in log and p.proc.returncode == 0


def test_limits_count_for_the_process(lab, make_proxy):
    """max connections per address and max connections hold for all workers
    together (doc/internals/workers.md): 5 silent connections from one
    address stay, the 6th is closed, whichever worker accepts it."""
    import time
    from test_rpc_security import closed_count, silent_connections
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"mapiproxy:workers": "2",
                          "mapiproxy:max connections per address": "5",
                          "mapiproxy:max connections": "8"})

    def closed_within(socks, n, secs=5):
        end = time.monotonic() + secs
        while time.monotonic() < end and closed_count(socks) < n:
            time.sleep(0.1)
        return closed_count(socks)

    socks = silent_connections(p, 5, ["127.0.0.20"])
    # each worker has its own listening socket (SO_REUSEPORT) and accept
    # queue: wait until the 5 are counted, or a worker may take one of
    # `extra` before the other worker took the last of `socks`
    end = time.monotonic() + 10
    while time.monotonic() < end and p.log().count("conn open 127.0.0.20") < 5:
        time.sleep(0.05)
    extra = silent_connections(p, 2, ["127.0.0.20"])
    assert closed_within(extra, 2) == 2 and closed_count(socks) == 0
    more = silent_connections(p, 3, ["127.0.0.21"])  # 5 + 3 = max connections
    # the two workers accept in any order: let both count `more` before the
    # 9th arrives, or `over` may be taken and one of `more` refused instead
    end = time.monotonic() + 10
    while time.monotonic() < end and p.log().count("conn open 127.0.0.21") < 3:
        time.sleep(0.05)
    over = silent_connections(p, 1, ["127.0.0.22"])
    assert closed_within(over, 1) == 1 and closed_count(more) == 0
    for x in socks + extra + more + over:
        x.close()
    log = p.log()
    assert "connections open from 127.0.0.20 (mapiproxy:max connections per address)" in log
    assert "8 connections open (mapiproxy:max connections)" in log


def test_connections_spread_over_workers(lab, make_proxy):
    """Each worker has a listening socket of its own (SO_REUSEPORT,
    doc/internals/workers.md): 16 connections opened at once land on both
    workers, not all on the one that woke first.  Counted from each
    worker's epoll registrations (/proc/PID/fdinfo).  The kernel spreads by
    a hash of the addresses and ports (all 16 on one worker: a chance of 2
    in 65,536); these connections never bind, so the least-busy hand-over
    (made on the bind) does not move them."""
    import time
    from test_rpc_security import silent_connections

    p = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:workers": "2"})
    pid = p.proc.pid
    # the port accepts once worker 0 listens; worker 1's socket is there by
    # the "ready" line (before it, every connection queues at worker 0)
    end = time.monotonic() + 30
    while " ready: " not in p.log() and time.monotonic() < end:
        time.sleep(0.05)
    assert " ready: " in p.log(), p.log()[-3000:]

    def per_epoll():
        n = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]":
                    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                        n[fd] = f.read().count("tfd:")
            except OSError:
                pass
        return n

    before = per_epoll()
    assert len(before) >= 2, before  # one epoll per worker (and maybe others)
    socks = silent_connections(p, 16, ["127.0.0.30", "127.0.0.31"])
    try:
        end = time.monotonic() + 10
        while True:  # until every worker has registered what it accepted
            after = per_epoll()
            grew = sorted(after.get(fd, 0) - before.get(fd, 0) for fd in before)
            # (a registration or two may be missing at any moment: a
            # connection's interest is re-set as it goes)
            if (sum(grew) >= 14 and grew[-2] > 0) or time.monotonic() > end:
                break
            time.sleep(0.05)
        assert sum(grew) >= 14 and grew[-2] > 0, (before, after)
    finally:
        for s in socks:
            s.close()


def test_new_groups_go_to_the_least_busy_worker(lab, make_proxy):
    """16 connections bound one after the other and kept open: a new
    group's first connection is handed to the least busy worker when the
    one that accepted it has 2 more (doc/internals/workers.md), so both
    workers end with 7 to 9, whatever the kernel's hash did (alone, one
    worker would get 5 or fewer about one time in five).  The worker of a
    connection is its group id modulo 2 (the ids a worker gives out)."""
    p = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:workers": "2"})
    socks, per = [], [0, 0]
    try:
        for _ in range(16):
            s = socket.create_connection((p.host, p.rpc_port), timeout=20)
            socks.append(s)
            s.sendall(bind_pdu([(NSPI, [NDR20])]))
            ack = read_pdu(s)
            assert ack and ack[0] == 12, ack
            per[struct.unpack_from("<I", ack[3], 20)[0] % 2] += 1
        assert min(per) >= 7, per
    finally:
        for s in socks:
            s.close()


def test_second_instance_on_the_same_port_is_refused(lab, make_proxy):
    """With workers > 1 every worker's socket has SO_REUSEPORT, which would
    let a second process of the same user share the port (and take part of
    the connections) silently.  A second mapiproxy on the same ports must be
    refused as it is with one worker: "Address already in use", exit not 0,
    and the first one goes on serving."""
    import time
    a = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:workers": "2"})
    b = make_proxy(upstream_epm_port=lab.epm_port, extra={"mapiproxy:workers": "2"},
                   rpc_port=a.rpc_port, epm_port=a.epm_port)
    try:
        b.proc.wait(30)
    except Exception:
        pass
    assert b.proc.returncode not in (None, 0), b.log()[-3000:]
    assert "Address already in use" in b.log(), b.log()[-3000:]
    b.killed = True  # ended by itself, checked above
    out = [None]
    client(a.host, a.rpc_port, out, 0)
    assert isinstance(out[0], tuple) and out[0][1] == out[0][0] and out[0][2], out
    time.sleep(0.1)
    assert a.alive()
