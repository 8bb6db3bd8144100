"""The HTTPS front with mapiproxy:workers = 2 (doc/internals/workers.md, "The
HTTPS front on every worker"): each worker accepts on a socket of its own;
every request of one MAPI/HTTP session is served by the worker holding the
session (its module state), whichever worker accepted its TCP connection;
RPC over HTTP is handed to worker 0, so both channels of a virtual
connection meet there.

The clients are code we did not write at one end: python3-requests (with
requests_ntlm) under the lab's MAPI/HTTP client, Impacket's ncacn_http
transport for RPC over HTTP; the answers through the proxy are compared with
what a direct client gets."""
import os
import re
import sys
import threading
import time

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.http import AUTH_BASIC
from requests.auth import HTTPBasicAuth

from conftest import ROOT
from test_http_front_lab import ALICE, PASSWORDS, env, ntlm, start_front  # noqa: F401 (fixture)
import test_rpch as R
from test_rpch_passthrough import pass_opts
from test_lab_auth import nspi_answers, rfr_answers

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import mapihttp_client as MH  # noqa: E402

N_SESSIONS = 32
CALLS = 4  # Bind, 2 x GetSpecialTable, Unbind


def module_counts(log):
    counts = {}
    for m in re.finditer(r"module mpm_test_a: session=(\d+) calls=(\d+)", log):
        counts.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return counts


def nspi_session(base, ca, out, i):
    """One NSPI session, every request on a new TCP connection (Connection:
    close), so its requests land on both workers."""
    try:
        ab = MH.NspiHttp(base, auth=HTTPBasicAuth("LAB\\bob", PASSWORDS["bob"]), verify=ca)
        ab.http.headers["Connection"] = "close"
        ab.bind()
        t1 = ab.get_special_table(flags=0x4)
        t2 = ab.get_special_table(flags=0x4)
        ab.unbind()
        same = t1["ErrorCode"] == 0 and t1["Rows"] and t1["Rows"] == t2["Rows"]
        out[i] = (same, ab)
    except Exception as e:  # reported by the test
        out[i] = e


def test_mapihttp_sessions_stay_on_their_worker(make_proxy, env):  # noqa: F811
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "dcerpc_mapiproxy:modules": "mpm_test_a"})
    out = [None] * N_SESSIONS
    ts = [threading.Thread(target=nspi_session, args=(p.base, env["ca"], out, i))
          for i in range(N_SESSIONS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    errors = [o for o in out if not isinstance(o, tuple)]
    assert not errors, errors[:3]
    assert all(same for same, _ in out)
    # keep-alive: an NTLM session on one connection (a 401 handshake bound to
    # that connection) goes on wherever its first request lands
    ems = MH.NspiHttp(p.base, auth=ntlm(), verify=env["ca"])
    ems.bind()
    for _ in range(3):
        ems.get_special_table(flags=0x4)
    ems.unbind()
    p.stop()
    log = p.log()
    assert "Sanitizer" not in log
    # both workers accepted front connections
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker (\d)", log)
    assert set(opened) == {"0", "1"}, opened[:5]
    # requests that reached the worker without the session were moved there
    moved = len(re.findall(r"its MAPI/HTTP session's worker: handed to worker \d", log))
    adopted = len(re.findall(r"adopted from worker \d", log))
    print(f"{len(opened)} connections, {moved} moved")
    assert moved > 0 and adopted == moved, (moved, adopted)
    # the module's state of each session went on across its connections: one
    # module session per client session, its calls counted 1..4 in order
    counts = module_counts(log)
    full = sorted((v for v in counts.values() if len(v) > 1), key=len)
    assert full == [list(range(1, CALLS + 1))] * N_SESSIONS + [[1, 2, 3, 4, 5]], counts
    # the NTLM handshake's requests (401, no cookie yet): sessions of one call
    assert all(v == [1] for v in counts.values() if len(v) == 1), counts
    assert "not adopted" not in log and "cannot hand it" not in log


def test_parked_waits_and_stop_with_two_workers(make_proxy, env):  # noqa: F811
    """NotificationWait requests parked on both workers (each moved to its
    session's worker when it came on the other), new connections being
    moved while SIGTERM arrives: the proxy ends cleanly (exit 0, nothing
    leaked: the fixture's ASan/LSan check), every client gets its answer
    or a closed connection, none hangs."""
    p = start_front(make_proxy, env, {"mapiproxy:workers": "2",
                                      "dcerpc_mapiproxy:modules": "mpm_test_a"})
    basic = HTTPBasicAuth("LAB\\alice", PASSWORDS["alice"])
    sessions = []
    for _ in range(6):
        ems = MH.EmsmdbHttp(p.base, auth=basic, verify=env["ca"], timeout=20)
        ems.http.headers["Connection"] = "close"
        assert ems.connect(ALICE)["ErrorCode"] == 0
        sessions.append(ems)
    ended = []

    def park(ems):
        try:
            ems.notification_wait()
            ended.append("answered")
        except Exception:
            ended.append("closed")

    parked = [threading.Thread(target=park, args=(e,)) for e in sessions]
    for t in parked:
        t.start()
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            try:
                nspi_session(p.base, env["ca"], [None], 0)
            except Exception:
                pass

    churners = [threading.Thread(target=churn) for _ in range(4)]
    for t in churners:
        t.start()
    time.sleep(1.0)
    log = p.log()
    assert len(re.findall(r"adopted from worker \d", log)) > 0, log[-3000:]
    p.stop()  # asserts exit 0 and no sanitizer report
    stop.set()
    for t in parked + churners:
        t.join(30)
        assert not t.is_alive()
    assert len(ended) == len(sessions), ended


@pytest.fixture(scope="module")
def term_env(tmp_path_factory):
    """test_http_auth_terminate.py's lab and files: the proxy ends logons."""
    import test_http_auth_terminate as T
    yield from T.env.__pytest_wrapped__.obj(tmp_path_factory)


def test_terminated_logons_with_two_workers(make_proxy, term_env):
    """mapiproxy:http auth = terminate: a request moves before its logon,
    so the worker holding the session checks it (Basic on each request,
    NTLM on the connection).  10 Basic sessions on new connections per
    request, and an NTLM session on one kept-alive connection."""
    import test_http_auth_terminate as T
    p = T.start(make_proxy, term_env, **{"mapiproxy:workers": "2", "mapiproxy:http basic": "yes"})
    out = [None] * 10

    def session(i):
        try:
            ab = MH.NspiHttp(p.base, auth=HTTPBasicAuth("LAB\\bob", T.CLIENTS["bob"]),
                             verify=term_env["ca"])
            ab.http.headers["Connection"] = "close"
            ab.bind()
            ab.get_special_table(flags=0x4)
            ab.unbind()
            out[i] = True
        except Exception as e:  # reported below
            out[i] = e

    ts = [threading.Thread(target=session, args=(i,)) for i in range(len(out))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert all(o is True for o in out), [o for o in out if o is not True][:3]
    ems = MH.EmsmdbHttp(p.base, auth=T.ntlm(), verify=term_env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    for _ in range(3):
        assert ems.ping().code == 0
    assert ems.disconnect()["ErrorCode"] == 0
    p.stop()
    log = p.log()
    moved = len(re.findall(r"its MAPI/HTTP session's worker: handed to worker \d", log))
    print(f"{moved} requests moved")
    assert moved > 0 and len(re.findall(r"adopted from worker \d", log)) == moved
    assert "logon refused" not in log
    T.assert_no_secrets(log)


@pytest.fixture(scope="module")
def rpch_env(tmp_path_factory):
    yield from R.rpch_lab_env(str(tmp_path_factory.mktemp("rpch")))


@pytest.fixture(scope="module")
def rpch_ref(rpch_env):
    """RFR's and NSPI's answers to a direct ncacn_ip_tcp client."""
    d = R.tcp_dce(rpch_env["ports"]["rfr"], oxabref.MSRPC_UUID_OXABREF)
    ref_rfr = rfr_answers(d)
    d.disconnect()
    d = R.tcp_dce(rpch_env["ports"]["nspi"], nspi.MSRPC_UUID_NSPI)
    ref_nspi = nspi_answers(d)
    d.disconnect()
    return ref_rfr, ref_nspi


def test_rpch_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """Impacket's ncacn_http client: the IN and OUT channels of a virtual
    connection are two HTTP connections, each accepted by either worker;
    the second to arrive is handed to the worker of the first (its first
    RTS PDU names the virtual connection), and the answers equal a direct
    client's."""
    ref_rfr, ref_nspi = rpch_ref
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2"})
    n = 6
    for _ in range(n):
        d = R.rpch_dce(p.url, 6002, oxabref.MSRPC_UUID_OXABREF, AUTH_BASIC)
        assert rfr_answers(d) == ref_rfr
        d.disconnect()
        d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d) == ref_nspi
        d.disconnect()
    p.stop()
    log = p.log()
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker (\d)", log)
    moved = re.findall(r"its virtual connection is on worker (\d): handed over", log)
    adopted = re.findall(r"channel adopted from worker (\d)", log)
    print(f"{len(opened)} channels ({opened.count('1')} on worker 1), {len(moved)} moved")
    assert "1" in opened and "0" in opened
    # a channel pair split by the kernel's hash met on one worker (all 2n
    # pairs on one worker each: a chance of 2**-12)
    assert moved and len(adopted) == len(moved), (moved, adopted)
    assert log.count("virtual connection open") >= 2 * n
    assert "not adopted" not in log and "cannot hand it" not in log


def test_rpch_across_a_reload_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """SIGHUP with a virtual connection open: it goes on in the generation
    it began in, a new one uses the new generation, each worker retires the
    old one when its channels are gone."""
    import signal
    from test_ops import wait_for
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2"})
    d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == rpch_ref[1]
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()[-3000:]
    assert nspi_answers(d) == rpch_ref[1]
    for _ in range(2):
        d2 = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d2) == rpch_ref[1]
        d2.disconnect()
    d.disconnect()
    assert wait_for(lambda: "reload: configuration 1 retired" in p.log()
                    and "reload: worker 1: configuration 1 retired" in p.log(),
                    timeout=10), p.log()[-3000:]
    p.stop()


def test_rpch_passthrough_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """With logons passed through (upstream connections pinned on worker 0),
    RPC over HTTP is served by worker 0: worker 1 hands it each request it
    reads, at the request boundary."""
    ref_nspi = rpch_ref[1]
    p = R.start(make_proxy, rpch_env, **pass_opts(rpch_env), **{"mapiproxy:workers": "2"})
    for _ in range(4):
        d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
        assert nspi_answers(d) == ref_nspi
        d.disconnect()
    p.stop()
    log = p.log()
    opened = re.findall(r"http #\d+ open \S+ \(TLS\) on worker (\d)", log)
    moved = len(re.findall(r"RPC over HTTP: handed to worker 0", log))
    print(f"{len(opened)} connections ({opened.count('1')} on worker 1), {moved} moved")
    assert moved > 0 and len(re.findall(r"adopted from worker 1", log)) == moved


def test_rpch_bad_input_with_two_workers(make_proxy, rpch_env, rpch_ref):
    """Channels that break the rules on either worker, while the worker of
    their virtual connection is being chosen: a first PDU whose length is
    out of range, a body that ends before its first PDU, a broken RTS PDU,
    a CONN/B1 naming a cookie no OUT channel has, a first PDU sent a byte at
    a time, an IN channel carrying a bind and more than the window after its
    CONN/B1 (moved with all those bytes when the OUT channel is on the
    other worker).  Each ends with a log line; the next client goes on; the
    proxy ends cleanly (ASan/LSan)."""
    import os
    import struct
    import time
    from impacket.dcerpc.v5 import rpch
    from rpcutil import NDR20, NSPI, bind_pdu, request_pdu
    p = R.start(make_proxy, rpch_env, **{"mapiproxy:workers": "2",
                                         "mapiproxy:rpc over http receive window": "8K"})
    port = p.http_port
    bad_len = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    bad_len[8:10] = struct.pack("<H", 500)
    R.drain(R.channel(port, "RPC_OUT_DATA", 76, bytes(bad_len)))
    # all of its body, shorter than a PDU head: decided on what there is
    R.channel(port, "RPC_OUT_DATA", 8, b"\x05\x00\x14\x03\x10\x00\x00\x00").close()
    a1 = bytearray(rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536))
    a1[20:24] = struct.pack("<L", 99)
    R.drain(R.channel(port, "RPC_OUT_DATA", 76, bytes(a1)))
    lone = R.channel(port, "RPC_IN_DATA", 1 << 30,  # drained last: its pairing timeout
                     rpch.hCONN_B1(os.urandom(16), os.urandom(16), os.urandom(16)))
    slow = R.channel(port, "RPC_OUT_DATA", 76)
    for b in rpch.hCONN_A1(os.urandom(16), os.urandom(16), 65536):
        slow.sendall(bytes([b]))
        time.sleep(0.002)
    bind = bind_pdu([(NSPI, [NDR20])])
    reqs = b"".join(request_pdu(2 + k, 1, b"\0" * 4000) for k in range(20))
    for _ in range(4):
        vc, oc, ic = os.urandom(16), os.urandom(16), os.urandom(16)
        o = R.channel(port, "RPC_OUT_DATA", 76, rpch.hCONN_A1(vc, oc, 65536))
        time.sleep(0.05)  # the OUT channel claims the virtual connection first
        i = R.channel(port, "RPC_IN_DATA", 1 << 30, rpch.hCONN_B1(vc, ic, os.urandom(16))
                      + bind + reqs)
        R.drain(i)
        R.drain(o)
    R.drain(slow)
    R.drain(lone)
    d = R.rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    assert nspi_answers(d) == rpch_ref[1]
    d.disconnect()
    p.stop()
    log = p.log()
    assert "first RTS PDU of the channel too long or too short" in log
    assert "unknown RTS command" in log
    assert "no OUT channel within 2000 ms" in log
    assert log.count("overran the IN channel's receive window") >= 4
    print(len(re.findall(r"its virtual connection is on worker \d: handed over", log)),
          "channels moved")


def test_second_instance_on_the_https_port_is_refused(make_proxy, env):  # noqa: F811
    """Every worker's front socket has SO_REUSEPORT; a second mapiproxy on
    the same mapiproxy:http listen port must still be refused ("Address
    already in use": worker 0 probes a new port without SO_REUSEPORT first),
    and the first goes on serving."""
    import subprocess
    from conftest import PROXY_BIN, free_port
    a = start_front(make_proxy, env, {"mapiproxy:workers": "2"})
    with open(a.conf) as f:
        conf = f.read()
    conf = conf.replace(f"rpc port = {a.rpc_port}", f"rpc port = {free_port()}")
    conf = conf.replace(f"epmapper port = {a.epm_port}", f"epmapper port = {free_port()}")
    second = a.conf + ".second"
    with open(second, "w") as f:
        f.write(conf)
    b = subprocess.run([PROXY_BIN, "-c", second], capture_output=True, text=True, timeout=30)
    assert b.returncode != 0, b.stdout[-3000:] + b.stderr[-3000:]
    assert "(mapiproxy:http listen): Address already in use" in b.stdout + b.stderr
    ab = MH.NspiHttp(a.base, auth=HTTPBasicAuth("LAB\\bob", PASSWORDS["bob"]), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    a.stop()
