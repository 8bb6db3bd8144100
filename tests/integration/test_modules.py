"""The module chain, with test-only modules (tests/modules/mpm_test.c built as
mpm_test_a/b/c): hook order, stop, error, pending, relay-again, reverse
response order, session data and destructors, refusal of bad modules.
Clients are Impacket's; the upstream is the lab."""
import os
import re
import subprocess

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.dcerpc.v5.rpcrt import DCERPCException

from conftest import PROXY_BIN, ROOT, free_port
from rpcutil import dce_connect, raw_session, read_pdu, request_pdu, RFR, NDR20, bind_pdu
from test_relay import SERVER_DN, USER_DN, rfr_scenario

MODS = ["mpm_test_a", "mpm_test_b", "mpm_test_c"]


def hooks(log, op=None):
    """[(module, hook)] in log order."""
    out = []
    for m in re.finditer(r"module (mpm_test_\w+): hook=(\w+) op=(\w+)", log):
        if op is None or m.group(3) == op:
            out.append((m.group(1)[-1], m.group(2)))
    return out


def chain_proxy(make_proxy, lab, **opts):
    extra = {"dcerpc_mapiproxy:modules": ", ".join(opts.pop("modules", MODS))}
    extra.update(opts)
    return make_proxy(upstream_epm_port=lab.epm_port, extra=extra)


def test_hook_order_and_reverse_response_order(make_proxy, lab):
    p = chain_proxy(make_proxy, lab)
    direct = rfr_scenario("127.0.0.1", lab.ports["rfr"])
    assert rfr_scenario(p.host, p.rpc_port) == direct
    seq = hooks(p.log(), "RfrGetNewDSA")
    assert seq == [("a", "ndr_pull"), ("b", "ndr_pull"), ("c", "ndr_pull"),
                   ("a", "pull"), ("b", "pull"), ("c", "pull"),
                   ("a", "dispatch"), ("b", "dispatch"), ("c", "dispatch"),
                   ("c", "ndr_push"), ("b", "ndr_push"), ("a", "ndr_push"),
                   ("c", "push"), ("b", "push"), ("a", "push")], seq


def test_stop_answers_without_relaying(make_proxy, lab):
    p = chain_proxy(make_proxy, lab, **{"mpm_test_b:dispatch": "stop"})
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    r = oxabref.hRfrGetFQDNFromServerDN(dce, SERVER_DN)
    assert r["ppszServerFQDN"].rstrip("\0") == "answered.by.module"
    dce.disconnect()
    seq = hooks(p.log(), "RfrGetFQDNFromServerDN")
    assert ("c", "dispatch") not in seq
    assert seq[-4:] == [("b", "ndr_push"), ("a", "ndr_push"), ("b", "push"), ("a", "push")], seq
    assert ("c", "ndr_push") not in seq
    assert "RfrGetFQDNFromServerDN" not in lab.log()  # never reached the upstream


def test_error_gives_fault_and_others_go_on(make_proxy, lab):
    p = chain_proxy(make_proxy, lab, **{"mpm_test_a:dispatch": "error",
                                        "mpm_test_a:fault": "0x1c010002"})
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    with pytest.raises(DCERPCException) as e:
        oxabref.hRfrGetNewDSA(dce, USER_DN)
    assert "nca_s_op_rng_error" in str(e.value)  # Impacket names 0x1c010002
    assert ("b", "dispatch") not in hooks(p.log())
    # another session on an interface no module wants goes on
    from test_lab import online_session
    online_session({"emsmdb": p.rpc_port})
    assert p.alive()
    assert "module mpm_test_a failed in dispatch" in p.log()


def test_pending_then_resume(make_proxy, lab):
    p = chain_proxy(make_proxy, lab, **{"mpm_test_a:dispatch": "pending"})
    direct = rfr_scenario("127.0.0.1", lab.ports["rfr"])
    assert rfr_scenario(p.host, p.rpc_port) == direct
    seq = hooks(p.log(), "RfrGetNewDSA")
    assert seq.index(("a", "dispatch")) < seq.index(("b", "dispatch"))


def test_relay_again(make_proxy, lab):
    p = chain_proxy(make_proxy, lab, **{"mpm_test_c:push": "again"})
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    before = lab.log().count("RfrGetNewDSA")
    r = oxabref.hRfrGetNewDSA(dce, USER_DN)
    assert r["ppszServer"].rstrip("\0")
    dce.disconnect()
    assert lab.log().count("RfrGetNewDSA") - before == 2  # sent upstream twice
    seq = hooks(p.log(), "RfrGetNewDSA")
    assert seq.count(("c", "push")) == 2 and seq.count(("a", "push")) == 1


def test_session_data_destructor_and_unbind(make_proxy, lab):
    p = chain_proxy(make_proxy, lab, modules=["mpm_test_a"])
    s1 = raw_session(p.host, p.rpc_port, RFR)
    s1.close()
    dce = dce_connect(p.host, p.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    nspi.hNspiQueryRows(dce, h, Count=5, pPropTags=[0x3001001F])
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    import time
    for _ in range(50):
        if "session data freed" in p.log():
            break
        time.sleep(0.1)
    log = p.log()
    m = re.search(r"session data freed session=(\d+) calls=(\d+)", log)
    assert m and m.group(2) == "3", log[-2000:]
    assert f"unbind session={m.group(1)}" in log
    assert log.index("unbind session=") < log.index("session data freed")


def test_fast_path_untouched(make_proxy, lab):
    """EMSMDB is wanted by no test module: relayed without reassembly."""
    p = chain_proxy(make_proxy, lab)
    from test_lab import online_session
    online_session({"emsmdb": p.rpc_port})
    assert "EcDoConnectEx" not in " ".join(h for _, h in hooks(p.log()))


def test_sample_module(make_proxy, lab):
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:modules": "mpm_sample", "mpm_sample:verbose": "yes"})
    rfr_scenario(p.host, p.rpc_port)
    import time
    for _ in range(50):
        if "calls," in p.log():
            break
        time.sleep(0.1)
    assert re.search(r"module mpm_sample: session \d+: 2 calls, \d+ bytes in, \d+ bytes out",
                     p.log()), p.log()[-2000:]


@pytest.mark.parametrize("modules,message", [
    # (the ABI is MP_MODULE_ABI_VERSION + 1000: checked below)
    ("mpm_test_badabi", "built for module ABI 0x"),
    ("no_such_module", "no built-in module of that name"),
])
def test_bad_modules_refused(tmp_path, modules, message):
    conf = tmp_path / "bad.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1[1]\n"
                    f"mapiproxy:epmapper port = {free_port()}\nmapiproxy:rpc port = {free_port()}\n"
                    f"dcerpc_mapiproxy:modules = {modules}\n")
    r = subprocess.run([PROXY_BIN, "-c", str(conf)], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert message in r.stderr, r.stderr
    m = re.search(r"built for module ABI (0x[0-9a-f]+), this mapiproxy has ABI (0x[0-9a-f]+)",
                  r.stderr)
    assert m or modules != "mpm_test_badabi", r.stderr
    if m:
        assert int(m.group(1), 16) == int(m.group(2), 16) + 1000, r.stderr


def test_duplicate_module_refused(tmp_path):
    conf = tmp_path / "dup.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1[1]\n"
                    "dcerpc_mapiproxy:modules = mpm_test_a, mpm_test_a\n")
    r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 1 and "mpm_test_a" in r.stderr, r.stderr
