"""The optimized build (no sanitizers) under valgrind's memcheck: a session
of relayed, module-processed and locally answered calls, then a clean exit
with no error and no leak."""
import os
import shutil

import pytest

from conftest import ROOT
from test_relay import nspi_scenario, rfr_scenario, _unbound
from impacket.dcerpc.v5 import epm
from rpcutil import NSPI
import test_rpch
from test_rpch_emsmdb import env, upstream_opts  # noqa: F401 (env: the lab with its RPC proxy)

pytestmark = pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")


def memcheck(vlog):
    """valgrind's command line: any error or leak is exit code 3."""
    return ["valgrind", "--error-exitcode=3", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible", f"--log-file={vlog}"]


def test_relay_clean_under_valgrind(make_proxy, lab, tmp_path):
    vlog = tmp_path / "valgrind.log"
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   binary=os.path.join(ROOT, "build", "mapiproxy"),
                   wrapper=memcheck(vlog),
                   extra={"mapiproxy:transparent": "no", "netbios name": "MAPIPROXY",
                          "dcerpc_mapiproxy:modules": "trace, mpm_roptest",
                          "trace:file": str(tmp_path / "t.jsonl"), "mpm_roptest:swap": "yes"})
    epm.hept_map("127.0.0.1", NSPI, protocol="ncacn_ip_tcp", dce=_unbound(p.host, p.epm_port))
    rfr_scenario(p.host, p.rpc_port)
    nspi_scenario(p.host, p.rpc_port)
    # ROPs decoded, changed both ways, re-compressed; server objects tracked
    from test_lab import online_session
    # non-transparent: the DN prefix names the proxy (the rewrite module)
    online_session({"emsmdb": p.rpc_port}, compress=True, server="MAPIPROXY")
    p.stop()  # asserts exit code 0 (valgrind's error exit code is 3)
    text = vlog.read_text()
    assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]


def test_rpch_upstream_clean_under_valgrind(make_proxy, env, tmp_path):
    """The RPC over HTTP upstream (the association's upstream carrier,
    transport/dcerpc/carrier.h) under memcheck: NSPI rounds from an
    ncacn_ip_tcp client and from Impacket's ncacn_http client (both carriers
    of one association) through the lab's /rpc/rpcproxy.dll, then a clean
    exit with no error and no leak."""
    from impacket.dcerpc.v5 import nspi
    from impacket.http import AUTH_BASIC
    from test_lab_auth import nspi_answers
    from test_rpch import rpch_dce, tcp_dce
    vlog = tmp_path / "valgrind.log"

    def under_valgrind(**kw):
        return make_proxy(binary=os.path.join(ROOT, "build", "mapiproxy"),
                          wrapper=memcheck(vlog), **kw)
    d = tcp_dce(env["ports"]["nspi"], nspi.MSRPC_UUID_NSPI)
    want = nspi_answers(d)
    d.disconnect()
    p = test_rpch.start(under_valgrind, env, **upstream_opts(env, "rpch"))
    d = tcp_dce(p.rpc_port, nspi.MSRPC_UUID_NSPI)
    for _ in range(3):
        assert nspi_answers(d) == want
    d.disconnect()
    d = rpch_dce(p.url, 6004, nspi.MSRPC_UUID_NSPI, AUTH_BASIC)
    for _ in range(3):
        assert nspi_answers(d) == want
    d.disconnect()
    p.stop()  # asserts exit code 0 (valgrind's error exit code is 3)
    log = p.log()
    assert log.count("rpch upstream") and "virtual connection open (?EXLAB01:" in log
    text = vlog.read_text()
    assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]
