"""The HTTPS front with mapiproxy:workers = 2 (doc/internals/workers.md, "The
HTTPS front on every worker"): each worker accepts on a socket of its own;
every request of one MAPI/HTTP session is served by the worker holding the
session (its module state), whichever worker accepted its TCP connection
(RPC over HTTP with 2 workers: test_workers_rpch.py).

The clients are code we did not write at one end: python3-requests (with
requests_ntlm) under the lab's MAPI/HTTP client."""
import os
import re
import sys
import threading
import time

import pytest
from requests.auth import HTTPBasicAuth

from conftest import ROOT
from test_http_front_lab import ALICE, PASSWORDS, env, ntlm, start_front  # noqa: F401 (fixture)

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
