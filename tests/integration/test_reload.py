"""SIGHUP reload (doc/operations.md): the new interface list, module list
and options take effect for new sessions while an NSPI session (Impacket)
and a MAPI/HTTP session (python3-requests through the HTTPS front) go on
untouched; a configuration that fails --check is refused and the running
one stays; the old configuration is retired once its last session ends."""
import json
import signal

import pytest
from impacket.dcerpc.v5 import epm, nspi
from impacket.dcerpc.v5.rpcrt import DCERPCException

import emsmdb_client as EC
from conftest import free_port
from rpcutil import EMSMDB, NSPI
from test_http_front_lab import env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import PUBLIC
from test_lab import ALICE
from test_ops import nspi_bind, wait_for
from test_relay import _unbound
from test_rop_lifetime import HttpTransport


def audit(path):
    try:
        with open(path) as f:
            return [json.loads(x) for x in f.read().splitlines()]
    except FileNotFoundError:
        return []


def test_reload_new_sessions_see_it_old_ones_go_on(lab, env, make_proxy, tmp_path):
    port = free_port()
    opts = {
        "mapiproxy:http listen": f"127.0.0.1:{port}",
        "mapiproxy:tls certificate": env["proxy_cert"][0],
        "mapiproxy:tls key": env["proxy_cert"][1],
        "mapiproxy:tls ca file": env["ca"],
        "mapiproxy:http upstream": f"https://localhost:{env['mapihttp']}",
        "mapiproxy:http upstream names": "exlab01.lab.example",
        "mapiproxy:http public name": PUBLIC,
    }
    p = make_proxy(upstream_epm_port=lab.epm_port, wait_ports=(port,), extra=opts)
    base = f"https://127.0.0.1:{port}"
    with open(p.conf) as f:
        good = f.read()

    # Two sessions before the reload.
    dce, h = nspi_bind(p)
    old_http = HttpTransport(base, env["ca"])
    [logon] = old_http.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]

    # Reload: NSPI only, and the audit module.
    trail = str(tmp_path / "audit.jsonl")
    with open(p.conf, "w") as f:
        f.write(good + "dcerpc_mapiproxy:interfaces = exchange_nsp\n"
                "dcerpc_mapiproxy:modules = audit\naudit:file = %s\n" % trail)
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "applied as configuration 2" in p.log()), p.log()
    line = p.log().split("applied as configuration 2")[1].splitlines()[0]
    assert "dcerpc_mapiproxy:interfaces" in line and "dcerpc_mapiproxy:modules" in line, line

    # The sessions in progress go on, with the configuration they began with.
    nspi.hNspiGetSpecialTable(dce, h)
    [of] = old_http.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    assert of["ReturnValue"] == 0
    assert audit(trail) == []               # the old session has no audit module

    # New sessions see the new configuration: EMSMDB is no longer offered by
    # the endpoint mapper, NSPI is; a new MAPI/HTTP session is audited.
    t = epm.hept_map("127.0.0.1", NSPI, protocol="ncacn_ip_tcp",
                     dce=_unbound(p.host, p.epm_port))
    assert t == f"ncacn_ip_tcp:127.0.0.1[{p.rpc_port}]"     # same port, taken over
    with pytest.raises(DCERPCException) as e:
        epm.hept_map("127.0.0.1", EMSMDB, protocol="ncacn_ip_tcp",
                     dce=_unbound(p.host, p.epm_port))
    assert "ept_s_not_registered" in str(e.value)
    dce2, h2 = nspi_bind(p)
    nspi.hNspiUnbind(dce2, h2)
    dce2.disconnect()
    new_http = HttpTransport(base, env["ca"])
    new_http.execute(EC.RopBuffer().logon(0, ALICE))
    new_http.close()
    assert wait_for(lambda: [x["event"] for x in audit(trail)][-1:] == ["logoff"]), audit(trail)
    assert [x["event"] for x in audit(trail)] == ["logon", "mailbox_opened", "logoff"]

    # A broken configuration is refused; everything goes on.
    with open(p.conf, "a") as f:
        f.write("mapiproxy:max buffer = lots\n")
    p.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "refused (the errors above); the running configuration stays"
                    in p.log()), p.log()
    nspi.hNspiGetSpecialTable(dce, h)
    [of] = old_http.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    assert of["ReturnValue"] == 0
    dce3, h3 = nspi_bind(p)
    nspi.hNspiUnbind(dce3, h3)
    dce3.disconnect()

    # The first configuration is retired when its sessions end.
    assert "configuration 1 retired" not in p.log()
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    old_http.close()
    old_http.abandon()
    assert wait_for(lambda: "configuration 1 retired" in p.log(), timeout=20), p.log()[-3000:]
    assert p.alive()
