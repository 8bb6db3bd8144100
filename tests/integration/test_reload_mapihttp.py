"""SIGHUP reload and MAPI/HTTP sessions (doc/operations.md, doc/internals/http.md):
a session keeps the configuration generation it began in until it ends,
also when its requests come on connections accepted after the reload (its
MapiContext cookie names it); a new session gets the new module list; the
old generation is freed once its last MAPI/HTTP session has ended.

The client is tests/lab/mapihttp_client.py over python3-requests with
requests_ntlm (code we did not write for HTTP, NTLM and cookies); the lab
answers as Exchange would.  mpm_test_a and mpm_test_b count the calls of
each session (tests/modules/mpm_test.c)."""
import os
import re
import signal
import sys

import pytest

from conftest import ROOT
from test_http_front_lab import env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import start_front
from test_ops import wait_for


def counts(log, module):
    out = {}
    for m in re.finditer(r"module %s: session=(\d+) calls=(\d+)" % module, log):
        out.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_mapihttp_session_keeps_its_generation(make_proxy, env, workers):  # noqa: F811
    sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
    import mapihttp_client as MH
    extra = {"dcerpc_mapiproxy:modules": "mpm_test_a"}
    if workers > 1:
        extra["mapiproxy:workers"] = str(workers)
    p = start_front(make_proxy, env, extra)

    old = MH.NspiHttp(p.base, auth=ntlm(), verify=env["ca"])
    old.bind()
    old.get_special_table(flags=0x4)
    old.http.close()  # its next requests come on new connections
    before = counts(p.log(), "mpm_test_a")
    [sid] = [k for k, v in before.items() if len(v) > 1]
    assert before[sid] == [1, 2], before

    with open(p.conf) as f:
        conf = f.read()
    assert "mpm_test_a" in conf
    with open(p.conf, "w") as f:
        f.write(conf.replace("mpm_test_a", "mpm_test_b"))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()
    at = len(p.log())

    # The old session goes on with its modules and their session data.
    old.get_special_table(flags=0x4)
    old.get_special_table(flags=0x4)
    log = p.log()
    assert "session of an earlier configuration" in log[at:], log[at:]
    after = counts(log, "mpm_test_a")[sid]
    # every call counted in one sequence (the NTLM handshake's requests on
    # the new connection carry the cookie too, and are counted with it)
    assert after == list(range(1, len(after) + 1)) and len(after) >= 4, after
    assert counts(log[at:], "mpm_test_b") == {}, log[at:]

    # A new session sees the new module list only.
    new = MH.NspiHttp(p.base, auth=ntlm(), verify=env["ca"])
    new.bind()
    new.get_special_table(flags=0x4)
    log = p.log()
    assert [v for v in counts(log[at:], "mpm_test_b").values() if len(v) > 1] == [[1, 2]], log[at:]
    assert counts(log, "mpm_test_a")[sid] == after  # not the old modules'

    # The old generation stays while its session lives, and goes with it.
    # Each worker retires its own copy of configuration 1: with 2 workers the
    # one that does not hold the session may retire it at once (worker 0 logs
    # "reload: configuration 1 retired", worker N "reload: worker N: ..."), so
    # what must hold is that not every worker's copy is gone before the
    # session ends, and every one after.
    def retired():
        return len(re.findall(r"reload: (?:worker \d+: )?configuration 1 retired", p.log()))
    assert retired() < workers, p.log()[-3000:]
    old.unbind()
    old.http.close()
    assert wait_for(lambda: retired() == workers, timeout=10), p.log()[-3000:]
    assert re.search(r"module mpm_test_a: session data freed session=%d calls=%d"
                     % (sid, len(after) + 1), p.log()), p.log()[-3000:]
    new.unbind()
    new.http.close()
    assert p.alive()
