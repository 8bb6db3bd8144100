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

pytestmark = pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")


def test_relay_clean_under_valgrind(make_proxy, lab, tmp_path):
    vlog = tmp_path / "valgrind.log"
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   binary=os.path.join(ROOT, "build", "mapiproxy"),
                   wrapper=["valgrind", "--error-exitcode=3", "--leak-check=full",
                            "--show-leak-kinds=definite,indirect,possible",
                            "--errors-for-leak-kinds=definite,indirect,possible",
                            f"--log-file={vlog}"],
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
