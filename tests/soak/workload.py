"""Client side of the soak test (tests/soak/soak.py): Outlook-like sessions
(RFR, NSPI, EMSMDB, endpoint mapper) run by many threads, a garbage sender and
a client that never reads.  Every call is classified:

  ok     the call returned what the lab serves
  fault  a DCE/RPC fault, bind_nak or rejected bind (a clean refusal)
  error  a clean transport error: refused, reset, EOF (the peer closed)
  hang   no answer within the call timeout (socket timeout or wall clock)
  bad    an answer that is wrong or undecodable (would mean corruption)
"""
import os
import random
import socket
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from impacket.dcerpc.v5 import epm, nspi, oxabref, transport  # noqa: E402
from impacket.dcerpc.v5.rpcrt import DCERPCException  # noqa: E402

import emsmdb_client as EC  # noqa: E402
import emsmdb_ndr as N  # noqa: E402
from rpcutil import (EMSMDB, NDR20, NSPI, RFR, bind_pdu, request_pdu)  # noqa: E402

ORG = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)"
USERS = ["alice", "bob", "carol", "dave", "erin"]
SERVER_DN = ORG + "/cn=Configuration/cn=Servers/cn=EXLAB01"
TAGS = [0x3001001F, 0x3001001E, 0x3003001F, 0x39FE001F, 0x0FFE0003, 0x39000003, 0x0FFF0102,
        0x8170101E, 0x8170101F, 0x8006001E, 0x8006001F]
PidTagFolderId = 0x67480014
PidTagDisplayName = 0x3001001F
PidTagMid = 0x674A0014
PidTagSubject = 0x0037001F
PidTagBody = 0x1000001F
KINDS = ("rfr", "nspi", "emsmdb", "epm")
OUTCOMES = ("ok", "fault", "error", "hang", "bad")


def user_dn(alias):
    return ORG + "/cn=Recipients/cn=" + alias


# --- Impacket's TCPTransport.recv loops forever on EOF (recv() returning b''
# is appended and retried).  A proxy that closes a connection must show up as
# a clean error here, not as a spinning client, so EOF raises.
def _recv(self, forceRecv=0, count=0):
    s = self.get_socket()
    if count:
        buf = b""
        while len(buf) < count:
            c = s.recv(count - len(buf))
            if not c:
                raise ConnectionError("connection closed by the peer (EOF)")
            buf += c
        return buf
    c = s.recv(8192)
    if not c:
        raise ConnectionError("connection closed by the peer (EOF)")
    return c


def _send(self, data, forceWriteAndx=0, forceRecv=0):
    self.get_socket().sendall(data)


transport.TCPTransport.recv = _recv
transport.TCPTransport.send = _send


def ints(seq):
    return [x["Data"] if hasattr(x, "fields") else int(x) for x in seq]


class Bad(Exception):
    """A wrong answer."""


class Hang(Exception):
    pass


def classify(exc):
    if isinstance(exc, Bad):
        return "bad"
    if isinstance(exc, (socket.timeout, Hang)):
        return "hang"
    if isinstance(exc, DCERPCException):
        # Impacket wraps a refused connect as "Could not connect: ..."
        return "error" if "Could not connect" in str(exc) else "fault"
    if isinstance(exc, OSError):
        return "error"
    if isinstance(exc, RuntimeError) and "failed: 0x" in str(exc):
        return "fault"  # EcDoRpcExt2 returned an error code (e.g. after an upstream restart)
    return "bad"


class Stats:
    """Counters of one process, merged by soak.py."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}      # (kind, op) -> {outcome: n}
        self.seconds = {}    # (kind, int(t)) -> [ok, failed]
        self.examples = {}   # (kind, outcome, message) -> [count, first_t, last_t]
        self.lat_max = {}    # kind -> max seconds
        self.lat_hist = {}   # kind -> {bucket: n}  (bucket = ceil(log2(ms)))

    def add(self, kind, op, outcome, t, lat, msg=None):
        with self.lock:
            d = self.calls.setdefault((kind, op), {})
            d[outcome] = d.get(outcome, 0) + 1
            b = self.seconds.setdefault((kind, int(t + lat)), [0, 0])  # when it ended
            b[0 if outcome == "ok" else 1] += 1
            if lat > self.lat_max.get(kind, 0):
                self.lat_max[kind] = lat
            h = self.lat_hist.setdefault(kind, {})
            bucket = max(0, int(lat * 1000)).bit_length()
            h[bucket] = h.get(bucket, 0) + 1
            if outcome != "ok":
                key = (kind, outcome, (msg or "")[:160])
                e = self.examples.get(key)
                if e is None:
                    if len(self.examples) < 400:
                        self.examples[key] = [1, t + lat, t + lat]
                else:
                    e[0] += 1
                    e[2] = t + lat

    def snapshot(self):
        with self.lock:
            return {"calls": {k: dict(v) for k, v in self.calls.items()},
                    "seconds": {k: list(v) for k, v in self.seconds.items()},
                    "examples": {k: list(v) for k, v in self.examples.items()},
                    "lat_max": dict(self.lat_max),
                    "lat_hist": {k: dict(v) for k, v in self.lat_hist.items()}}


class Client:
    """One simulated user: runs sessions until stop is set, reconnecting after errors."""

    WEIGHTS = (("rfr", 25), ("nspi", 30), ("emsmdb", 25), ("epm", 20))

    def __init__(self, cfg, stats, stop, rng):
        self.cfg = cfg
        self.stats = stats
        self.stop = stop
        self.rng = rng
        self.host = cfg["host"]
        self.inflight = None  # (kind, op, start) for the watchdog
        self.expect_rows = None

    def pause(self, lo=None, hi=None):
        lo = self.cfg["pause_min"] if lo is None else lo
        hi = self.cfg["pause_max"] if hi is None else hi
        self.stop.wait(self.rng.uniform(lo, hi))

    def call(self, kind, op, fn):
        """Runs one call; returns its result or raises (after recording it)."""
        t0 = time.time()
        self.inflight = (kind, op, t0)
        try:
            r = fn()
            lat = time.time() - t0
            if lat > self.cfg["call_timeout"]:
                raise Hang("%s took %.1f s" % (op, lat))
            self.stats.add(kind, op, "ok", t0, lat)
            return r
        except Exception as e:  # noqa: BLE001 - classified and re-raised
            lat = time.time() - t0
            out = "hang" if lat > self.cfg["call_timeout"] else classify(e)
            self.stats.add(kind, op, out, t0, lat, "%s: %s" % (type(e).__name__, e))
            raise
        finally:
            self.inflight = None

    def dce(self, port, iface):
        t = transport.DCERPCTransportFactory("ncacn_ip_tcp:%s[%d]" % (self.host, port))
        t.set_connect_timeout(self.cfg["call_timeout"])
        d = t.get_dce_rpc()
        d.connect()
        try:
            d.bind(iface)
        except Exception:
            d.disconnect()
            raise
        return d

    def run(self):
        kinds = [k for k, w in self.WEIGHTS for _ in range(w)]
        while not self.stop.is_set():
            kind = self.rng.choice(kinds)
            d = None
            try:
                d = getattr(self, "session_" + kind)()
            except Exception:  # noqa: BLE001 - recorded by call(); back off, reconnect
                self.pause(0.5, 1.5)
            finally:
                if d is not None:
                    try:
                        d.disconnect()
                    except Exception:  # noqa: BLE001
                        pass
            self.pause(self.cfg["session_pause_min"], self.cfg["session_pause_max"])

    # --- sessions: each returns nothing; a dce left open is closed by run()
    def session_rfr(self):
        d = self.call("rfr", "bind", lambda: self.dce(self.cfg["rpc_port"], RFR))
        try:
            r = self.call("rfr", "RfrGetNewDSA", lambda: oxabref.hRfrGetNewDSA(
                d, user_dn(self.rng.choice(USERS))))
            if "exlab01" not in str(r["ppszServer"]).lower():
                self._bad("rfr", "RfrGetNewDSA", "server %r" % r["ppszServer"])
            self.pause()
            r = self.call("rfr", "RfrGetFQDNFromServerDN",
                          lambda: oxabref.hRfrGetFQDNFromServerDN(d, SERVER_DN))
            if "exlab01" not in str(r["ppszServerFQDN"]).lower():
                self._bad("rfr", "RfrGetFQDNFromServerDN", "fqdn %r" % r["ppszServerFQDN"])
        finally:
            d.disconnect()

    def _bad(self, kind, op, what):
        self.stats.add(kind, op + " (check)", "bad", time.time(), 0, what)
        raise Bad(what)

    def session_nspi(self):
        d = self.call("nspi", "bind", lambda: self.dce(self.cfg["rpc_port"], NSPI))
        try:
            h = self.call("nspi", "NspiBind", lambda: nspi.hNspiBind(d))["contextHandle"]
            self.pause()
            rows = self.call("nspi", "NspiQueryRows", lambda: nspi.hNspiQueryRows(
                d, h, Count=50, pPropTags=TAGS))
            n = len(rows["ppRows"]["aRow"])
            if n == 0 or (self.expect_rows is not None and n != self.expect_rows):
                self._bad("nspi", "NspiQueryRows", "%d rows, expected %s" % (n, self.expect_rows))
            self.expect_rows = n
            self.pause()
            who = self.rng.sample(USERS, 2)
            r = self.call("nspi", "NspiResolveNames", lambda: nspi.hNspiResolveNames(
                d, h, paStr=who, pPropTags=TAGS))
            mids = ints(r["ppMIds"]["aulPropTag"])
            if len(mids) != 2 or 0 in mids:
                self._bad("nspi", "NspiResolveNames", "mids %r for %r" % (mids, who))
            self.pause()
            r = self.call("nspi", "NspiDNToMId", lambda: nspi.hNspiDNToMId(
                d, h, [user_dn(who[0]), SERVER_DN]))
            mids = ints(r["ppOutMIds"]["aulPropTag"])
            if len(mids) != 2 or 0 in mids:
                self._bad("nspi", "NspiDNToMId", "mids %r" % mids)
            self.pause()
            r = self.call("nspi", "NspiGetProps", lambda: nspi.hNspiGetProps(
                d, h, CurrentRec=mids[0], pPropTags=TAGS))
            row = nspi.simplifyPropertyRow(r["ppRows"])
            if row.get(0x3003001F) != user_dn(who[0]):
                self._bad("nspi", "NspiGetProps", "PR_EMAIL_ADDRESS %r for %r" % (
                    row.get(0x3003001F), who[0]))
            self.pause()
            self.call("nspi", "NspiUnbind", lambda: nspi.hNspiUnbind(d, h))
        finally:
            d.disconnect()

    def session_epm(self):
        want = "ncacn_ip_tcp:%s[%d]" % (self.host, self.cfg["rpc_port"])
        iface = self.rng.choice((NSPI, RFR, EMSMDB))

        def one():
            t = transport.DCERPCTransportFactory("ncacn_ip_tcp:%s[%d]" % (
                self.host, self.cfg["epm_port"]))
            t.set_connect_timeout(self.cfg["call_timeout"])
            d = t.get_dce_rpc()
            d.connect()
            try:
                return epm.hept_map(self.host, iface, protocol="ncacn_ip_tcp", dce=d)
            finally:
                d.disconnect()
        got = self.call("epm", "ept_map", one)
        if got != want:
            self._bad("epm", "ept_map", "%r, expected %r" % (got, want))

    def session_emsmdb(self):
        alias = self.rng.choice(USERS)
        dn = user_dn(alias)
        compress = self.rng.random() < 0.1  # the lab compresses in pure Python: costly
        d = self.call("emsmdb", "bind", lambda: self.dce(self.cfg["rpc_port"],
                                                         N.MSRPC_UUID_EMSMDB))
        c = EC.EmsmdbClient(d, compress=compress, xor=True)
        try:
            r = self.call("emsmdb", "EcDoConnectEx", lambda: c.connect_ex(dn))
            if r["ErrorCode"] != 0:
                raise RuntimeError("EcDoConnectEx failed: 0x%x" % r["ErrorCode"])
            self.pause()
            [logon] = self.call("emsmdb", "Logon", lambda: c.execute(EC.RopBuffer().logon(0, dn)))
            if logon["ReturnValue"] != 0 or len(logon["FolderIds"]) != 13:
                self._bad("emsmdb", "Logon", "logon %r" % logon)
            fids = logon["FolderIds"]
            inbox, outbox, sent = fids[4], fids[5], fids[6]
            self.pause()
            cols = [PidTagFolderId, PidTagDisplayName]
            res = self.call("emsmdb", "HierarchyTable", lambda: c.execute(
                EC.RopBuffer().open_folder(0, 1, fids[3]).get_hierarchy_table(1, 2)
                .set_columns(2, cols).query_rows(2, 50, cols)))
            names = [row[PidTagDisplayName] for row in res[3].get("Rows", [])]
            if "Inbox" not in names or "Sent Items" not in names:
                self._bad("emsmdb", "HierarchyTable", "folders %r" % names)
            self.pause()
            # Outlook's open, read, release: a folder opened, read and
            # released in one buffer; the table of the buffer before read
            # once more, then released with its folder (handles of an earlier
            # call) -- with the proxy's ROP modules on every one of them
            res = self.call("emsmdb", "OpenReadRelease", lambda: c.execute(
                EC.RopBuffer().open_folder(0, 3, inbox)
                .get_properties_specific(3, [PidTagDisplayName]).release(3)
                .query_rows(2, 5, cols).release(2).release(1)))
            if [x["ReturnValue"] for x in res] != [0, 0, 0] or \
                    res[1].get("Row", {}).get(PidTagDisplayName) != "Inbox":
                self._bad("emsmdb", "OpenReadRelease", "%r" % res)
            self.pause()
            subject = "soak %s %d %f" % (alias, threading.get_ident(), time.time())
            body = ("Soak body for %s. " % alias) * self.rng.randint(1, 150)
            b = EC.RopBuffer().create_message(0, 3, outbox) \
                .set_properties(3, [(PidTagSubject, subject), (0x001A001F, "IPM.Note")]) \
                .open_stream(3, 4, PidTagBody, 2) \
                .write_stream(4, body.encode("utf-16le")).commit_stream(4).release(4) \
                .save_changes_message(3, 3).submit_message(3)
            res = self.call("emsmdb", "CreateSubmit", lambda: c.execute(b))
            if not all(x["ReturnValue"] == 0 for x in res):
                self._bad("emsmdb", "CreateSubmit", "return values %r" % (
                    [x["ReturnValue"] for x in res]))
            mid = [x for x in res if "MessageId" in x and x.get("InputHandleIndex") is not None]
            mid = mid[-1]["MessageId"] if mid else res[0]["MessageId"]
            self.pause()
            res = self.call("emsmdb", "ReadBack", lambda: c.execute(
                EC.RopBuffer().open_message(0, 9, sent, mid)
                .open_stream(9, 10, PidTagBody, 0).read_stream(10, 0xBABE + 0x10000)
                .get_properties_specific(9, [PidTagSubject]).release(10)))
            if res[0].get("NormalizedSubject") != subject or \
                    res[2].get("Data", b"").decode("utf-16le", "replace") != body:
                self._bad("emsmdb", "ReadBack", "subject %r / body of %d bytes differ" % (
                    res[0].get("NormalizedSubject"), len(res[2].get("Data", b""))))
            self.pause()
            # a child opened beside the release of its parent (an earlier
            # call's message)
            res = self.call("emsmdb", "MessageRelease", lambda: c.execute(
                EC.RopBuffer().get_properties_specific(9, [PidTagSubject])
                .get_attachment_table(9, 11).release(9)))
            if [x["ReturnValue"] for x in res] != [0, 0] or \
                    res[0].get("Row", {}).get(PidTagSubject) != subject:
                self._bad("emsmdb", "MessageRelease", "%r" % res)
            self.pause()
            mcols = [PidTagMid, PidTagSubject]
            res = self.call("emsmdb", "ContentsTable", lambda: c.execute(
                EC.RopBuffer().release(11).open_folder(0, 7, inbox).get_contents_table(7, 8)
                .set_columns(8, mcols).query_rows(8, 10, mcols).release(8).release(7)))
            if [x["ReturnValue"] for x in res] != [0, 0, 0, 0] or not res[3].get("Rows"):
                self._bad("emsmdb", "ContentsTable", "%r" % [x["ReturnValue"] for x in res])
            self.pause()
            r = self.call("emsmdb", "EcDoDisconnect", c.disconnect)
            if r["ErrorCode"] != 0:
                raise RuntimeError("EcDoDisconnect failed: 0x%x" % r["ErrorCode"])
        finally:
            d.disconnect()


def worker_main(idx, nthreads, cfg, stop, queue):
    """One worker process: nthreads clients; reports its Stats on queue."""
    stats = Stats()
    tstop = threading.Event()
    clients = [Client(cfg, stats, tstop, random.Random(cfg["seed"] * 1000 + idx * 100 + i))
               for i in range(nthreads)]
    threads = []

    def start(cl, delay):
        if not tstop.wait(delay):
            cl.run()
    for i, cl in enumerate(clients):
        t = threading.Thread(target=start, args=(cl, cfg["ramp"] * i / max(1, nthreads)),
                             daemon=True)
        t.start()
        threads.append(t)
    stuck_seen = set()
    last = 0
    while not stop.is_set():
        stop.wait(1.0)
        now = time.time()
        for cl in clients:
            f = cl.inflight
            if f and now - f[2] > cfg["call_timeout"] + 5 and (id(cl), f[2]) not in stuck_seen:
                stuck_seen.add((id(cl), f[2]))
                stats.add(f[0], f[1] + " (watchdog)", "hang", f[2], now - f[2],
                          "call still in progress after %.0f s" % (now - f[2]))
        if now - last >= 10:
            last = now
            queue.put(("progress", idx, stats.snapshot()))
    tstop.set()
    end = time.time() + cfg["call_timeout"] * 2 + 10
    for t in threads:
        t.join(max(0.1, end - time.time()))
    stuck = sum(t.is_alive() for t in threads)
    for cl in clients:
        f = cl.inflight
        if f and any(t.is_alive() for t in threads):
            stats.add(f[0], f[1] + " (not finished at stop)", "hang", f[2], time.time() - f[2],
                      "thread still in a call when the run ended")
    queue.put(("final", idx, stats.snapshot(), stuck))


# --- the garbage sender ------------------------------------------------------
def _read_pdu(s, deadline):
    """Reads one PDU before deadline: ('pdu', ptype, bytes) / ('close',) / ('reset',) / ('timeout',)."""
    buf = b""
    need = 16
    while len(buf) < need:
        left = deadline - time.time()
        if left <= 0:
            return ("timeout",)
        s.settimeout(left)
        try:
            c = s.recv(need - len(buf))
        except socket.timeout:
            return ("timeout",)
        except ConnectionResetError:
            return ("reset",)
        if not c:
            return ("close",) if not buf else ("close-mid-pdu",)
        buf += c
        if len(buf) >= 10 and need == 16:
            need = max(16, struct.unpack_from("<H", buf, 8)[0])
    return ("pdu", buf[2], buf)


def _fqdn_stub():
    req = oxabref.RfrGetFQDNFromServerDN()
    req["ulFlags"] = 0
    req["cbMailboxServerDN"] = len(SERVER_DN) + 1
    req["szMailboxServerDN"] = SERVER_DN + "\x00"
    return req.getData()


GARBAGE_KINDS = ["random bytes", "random bytes (epm port)", "truncated PDU", "frag_len < 16",
                 "unknown ptype", "bad rpc version", "oversized fragment",
                 "request before bind", "lying alloc_hint", "200-context bind",
                 "zero frag_len header"]


def garbage_probe(n, host, rpc_port, epm_port, answer_s, rng):
    """Sends the n-th kind of garbage on a fresh connection.  Returns
    (kind, answer, detail); answer is 'fault', 'bind_nak', 'close', 'reset',
    'fault+close', or a failure: 'timeout', 'unexpected PDU type N'."""
    kind = GARBAGE_KINDS[n % len(GARBAGE_KINDS)]
    port = epm_port if "epm port" in kind else rpc_port
    s = socket.create_connection((host, port), timeout=answer_s)
    try:
        stub = _fqdn_stub()
        deadline = time.time() + answer_s
        needs_bind = kind in ("truncated PDU", "frag_len < 16", "unknown ptype",
                              "oversized fragment", "lying alloc_hint")
        if needs_bind:
            s.sendall(bind_pdu([(RFR, [NDR20])]))
            r = _read_pdu(s, deadline)
            if r[0] != "pdu" or r[1] != 12:
                # upstream down: a bind_nak (or a close) is a clean answer too
                return kind, ("bind_nak" if r[0] == "pdu" and r[1] == 13 else r[0]), "at bind"
            deadline = time.time() + answer_s
        shut = False
        if kind.startswith("random bytes"):
            data = os.urandom(rng.randint(16, 600))
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            shut = True
        elif kind == "truncated PDU":
            s.sendall(request_pdu(2, 1, stub)[:rng.randint(17, 60)])
            s.shutdown(socket.SHUT_WR)
            shut = True
        elif kind == "frag_len < 16":
            p = bytearray(request_pdu(2, 1, stub))
            struct.pack_into("<H", p, 8, rng.randint(0, 15))
            s.sendall(p)
        elif kind == "zero frag_len header":
            s.sendall(b"\x05\x00\x0b\x03\x10\x00\x00\x00" + b"\x00" * 8)
        elif kind == "unknown ptype":
            p = bytearray(request_pdu(2, 1, stub))
            p[2] = rng.choice([4, 5, 6, 7, 8, 9, 10, 21, 99, 200, 255])
            s.sendall(p)
        elif kind == "bad rpc version":
            p = bytearray(bind_pdu([(NSPI, [NDR20])]))
            p[0] = rng.choice([4, 6, 0, 255])
            s.sendall(p)
        elif kind == "oversized fragment":
            s.sendall(request_pdu(2, 1, b"\0" * 20000))
        elif kind == "request before bind":
            s.sendall(request_pdu(2, 1, stub))
        elif kind == "lying alloc_hint":
            s.sendall(request_pdu(2, 1, stub, alloc_hint=0xFFFFFFF0))
        elif kind == "200-context bind":
            s.sendall(bind_pdu([(NSPI, [NDR20])] * 200))
        r = _read_pdu(s, deadline)
        if r[0] == "pdu":
            if r[1] == 3:
                ans = "fault"
            elif r[1] == 13:
                ans = "bind_nak"
            else:
                return kind, "unexpected PDU type %d" % r[1], ""
            # does it close too?  Only a short look: a fault may leave it open.
            r2 = _read_pdu(s, time.time() + (2.0 if not shut else answer_s))
            if r2[0] in ("close", "reset"):
                ans += "+close"
            return kind, ans, ""
        if r[0] == "close-mid-pdu":
            return kind, "close", "mid-PDU"
        return kind, r[0], ""
    finally:
        s.close()


# --- the client that never reads ---------------------------------------------
TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT"}


def tcp_state(s):
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return info[0]


def staller_once(host, rpc_port, send_timeout, stop, limit_s):
    """Binds NSPI, opens a session, then sends QueryRows requests and never
    reads.  Returns a dict: how long it was held, how long after the proxy
    stopped reading us it was closed, how many requests were sent."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((host, rpc_port))
    port = s.getsockname()[1]
    t_open = time.time()
    try:
        r = _staller_run(s, t_open, stop, limit_s)
        r["port"] = port
        return r
    finally:
        s.close()


def _staller_run(s, t_open, stop, limit_s):
    if True:
        s.sendall(bind_pdu([(NSPI, [NDR20])]))
        r = _read_pdu(s, time.time() + 10)
        if r[0] != "pdu" or r[1] != 12:
            return {"result": "bind refused", "held": time.time() - t_open}
        bind = nspi.NspiBind()
        bind["dwFlags"] = 0
        bind["pStat"]["CodePage"] = 1252
        bind["pServerGuid"] = b"\0" * 16
        s.sendall(request_pdu(2, 0, bind.getData()))
        r = _read_pdu(s, time.time() + 10)
        if r[0] != "pdu" or r[1] != 2:
            return {"result": "NspiBind failed", "held": time.time() - t_open}
        resp = nspi.NspiBindResponse(r[2][24:])
        if resp["ErrorCode"] != 0:
            return {"result": "NspiBind failed", "held": time.time() - t_open}
        handle = resp["contextHandle"].getData()

        class Cap:
            def request(self, req):
                self.stub = req.getData()
                raise StopIteration
        cap = Cap()
        try:
            # 330 columns: each answer is tens of KB, so the queues fill in seconds
            nspi.hNspiQueryRows(cap, nspi.handle_t(b"\0" * 20), Count=50, pPropTags=TAGS * 30)
        except StopIteration:
            pass
        cap.stub = handle + cap.stub[20:]  # hRpc is the first 20 bytes
        s.setblocking(False)
        pending = b""
        sent = 0
        call_id = 10
        blocked_at = None
        while True:
            if stop.is_set():
                return {"result": "stopped", "held": time.time() - t_open, "sent": sent}
            st = tcp_state(s)
            if st != 1:
                now = time.time()
                return {"result": "closed by proxy", "state": TCP_STATES.get(st, st),
                        "held": now - t_open, "sent": sent,
                        "after_block": (now - blocked_at) if blocked_at else None}
            if not pending:
                pending = request_pdu(call_id, 3, cap.stub)
                call_id += 1
            try:
                n = s.send(pending)
                pending = pending[n:]
                if not pending:
                    sent += 1
                if blocked_at is not None and n:
                    blocked_at = None  # it read again: the proxy keeps pace, wait on
            except BlockingIOError:
                if blocked_at is None:
                    blocked_at = time.time()
                if time.time() - blocked_at > limit_s:
                    return {"result": "NOT closed", "held": time.time() - t_open,
                            "sent": sent, "after_block": time.time() - blocked_at}
                time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError) as e:
                now = time.time()
                return {"result": "closed by proxy", "state": type(e).__name__,
                        "held": now - t_open, "sent": sent,
                        "after_block": (now - blocked_at) if blocked_at else None}
