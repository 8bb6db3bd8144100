"""The module API's services (issue 14 item 6, include/mapiproxy/module.h ABI 3):
descriptor watches with PENDING/resume, server object events with
per-object data, the client's identity, module option checks by --check,
and a module built out of the tree against the installed headers.

Clients are Impacket's (DCE/RPC, RFR) and the lab's EMSMDB client over
Impacket's transport; the outside service of the fd-watch test is Python's
socketserver; the proxy is the ASan build (the fixture fails a test on any
sanitizer report, leaks included)."""
import os
import re
import shutil
import socketserver
import subprocess
import threading
import time

from impacket.dcerpc.v5 import oxabref

import emsmdb_client as EC
from conftest import PROXY_BIN, ROOT, free_port
from rpcutil import dce_connect
from test_lab import ALICE
from test_relay import SERVER_DN, USER_DN, rfr_scenario
from test_http_front_lab import env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import start_front
from test_rop_lifetime import HttpTransport, RpcTransport

PidTagDisplayName = 0x3001001F


class DelayedService:
    """A TCP service (socketserver) that reads one line and answers "OK"
    after `delay` seconds; records when it was asked and when it answered."""

    def __init__(self, delay):
        outer = self
        self.asked = threading.Event()
        self.asked_at = self.replied_at = None
        self.lines = []

        class H(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline().decode()
                outer.lines.append(line.strip())
                outer.asked_at = time.time()
                outer.asked.set()
                time.sleep(delay)
                outer.replied_at = time.time()
                self.wfile.write(b"OK\n")

        self.srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def wait_log(p, text, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if text in p.log():
            return True
        time.sleep(0.05)
    return False


def test_fdwatch_holds_a_call_while_other_sessions_go_on(make_proxy, lab):
    """mpm_fdwatch holds RfrGetFQDNFromServerDN PENDING while it asks an
    outside service (2 s to answer) through mp_module_watch_fd; meanwhile
    other sessions' calls are served; then the held call completes with the
    upstream's answer."""
    delay = 2.0
    svc = DelayedService(delay)
    try:
        p = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"dcerpc_mapiproxy:modules": "mpm_fdwatch",
                              "mpm_fdwatch:server": f"127.0.0.1:{svc.port}"})
        d = dce_connect("127.0.0.1", lab.ports["rfr"], oxabref.MSRPC_UUID_OXABREF)
        direct = oxabref.hRfrGetFQDNFromServerDN(d, SERVER_DN)["ppszServerFQDN"]
        d.disconnect()
        held = {}

        def held_call():
            dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
            t0 = time.time()
            r = oxabref.hRfrGetFQDNFromServerDN(dce, SERVER_DN)
            held["end"] = time.time()
            held["took"] = held["end"] - t0
            held["fqdn"] = r["ppszServerFQDN"]
            dce.disconnect()

        th = threading.Thread(target=held_call)
        th.start()
        assert svc.asked.wait(15), p.log()[-3000:]
        # other sessions while the call waits on the service
        served = []
        while time.time() - svc.asked_at < delay - 0.3:
            t0 = time.time()
            dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
            r = oxabref.hRfrGetNewDSA(dce, USER_DN)
            assert r["ppszServer"], r.dump()
            dce.disconnect()
            served.append((t0, time.time()))
        th.join(30)
        assert held.get("fqdn") == direct
        assert held["took"] >= delay, held
        during = [b for a, b in served if b < svc.replied_at]
        lat = sorted(b - a for a, b in served)
        print(f"fdwatch: held call took {held['took']:.2f} s; {len(during)} other sessions "
              f"served during the wait, latency p50 {lat[len(lat) // 2] * 1000:.1f} ms, "
              f"max {lat[-1] * 1000:.1f} ms")
        assert len(during) >= 3, served
        assert lat[-1] < 1.0, lat
        assert svc.lines and svc.lines[0].startswith("CALL 127.0.0.1:"), svc.lines
        assert svc.lines[0].endswith("RfrGetFQDNFromServerDN")
        log = p.log()
        assert "module mpm_fdwatch: fdwatch holding RfrGetFQDNFromServerDN" in log
        assert "module mpm_fdwatch: fdwatch reply=OK; resuming" in log
        assert held["end"] >= svc.replied_at
    finally:
        svc.close()


def test_object_data_freed_on_release_and_disconnect(make_proxy, lab):
    """mpm_objdata sets data on every object created (object_event) and
    logs what it sees: the data of a folder is freed at its RopRelease; the
    rest when the context ends (EcDoDisconnect; a dropped connection);
    every piece set is freed (totals at fini; ASan checks the leaks)."""
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:modules": "mpm_objdata"})
    t = RpcTransport(p.rpc_port)
    [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    inbox = logon["FolderIds"][4]
    [of] = t.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    assert of["ReturnValue"] == 0
    assert wait_log(p, "objevent created ctx=1")
    [gp] = t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName]).release(1))
    assert gp["Row"][PidTagDisplayName] == "Inbox"
    assert wait_log(p, "objevent released ctx=1")
    log = p.log()
    rel = re.search(r"objevent released ctx=1 handle=(0x[0-9a-f]+) type=folder data=yes", log)
    assert rel, log[-3000:]
    assert f"objdata freed ctx=1 handle={rel.group(1)} type=folder" in log
    # a second folder, not released: freed when the context ends
    [of2] = t.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    assert of2["ReturnValue"] == 0
    t.close()  # EcDoDisconnect
    assert wait_log(p, "objevent context_gone ctx=1")
    log = p.log()
    assert re.search(r"objevent context_gone ctx=1 handle=0x[0-9a-f]+ type=logon data=yes", log)
    assert re.search(r"objevent context_gone ctx=1 handle=0x[0-9a-f]+ type=folder data=yes", log)
    # identity, read by the module's pull hook on EcDoRpcExt2
    ident = re.search(r"ident op=EcDoRpcExt2 user=(\S+) peer=(\S+) version=(\S+) app=(\S+)", log)
    assert ident, log[-3000:]
    assert ident.group(2).startswith("127.0.0.1:")
    # emsmdb_client.CLIENT_VERSION (0x000C, 0x183E, 0x03E8): MS-OXCRPC's old form
    assert ident.group(3) == "12.0.6206.1000"
    assert ident.group(4) == "-"  # X-ClientApplication is MAPI/HTTP's
    # a second session whose connection drops without EcDoDisconnect
    t2 = RpcTransport(p.rpc_port)
    [logon2] = t2.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon2["ReturnValue"] == 0
    t2.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    t2.abandon()
    assert wait_log(p, "type=folder data=yes", 10)
    p.stop()  # fini logs the totals; the fixture's check ran (no ASan report)
    log = p.log()
    tot = re.search(r"objdata totals set=(\d+) freed=(\d+)", log)
    assert tot, log[-3000:]
    created = len(re.findall(r"objevent created ", log))
    freed = len(re.findall(r"objdata freed ", log))
    print(f"objdata: {created} objects created, set={tot.group(1)} freed={tot.group(2)}, "
          f"{freed} destructor lines")
    assert int(tot.group(1)) == created == int(tot.group(2)) == freed >= 5


def test_object_data_and_identity_over_mapihttp(make_proxy, env):  # noqa: F811
    """The same module over MAPI/HTTP (python3-requests through the HTTPS
    front): the client's version comes from X-ClientApplication; object
    data is freed at RopRelease and when the context ends (Disconnect)."""
    p = start_front(make_proxy, env, {"dcerpc_mapiproxy:modules": "mpm_objdata"})
    t = HttpTransport(p.base, env["ca"])
    [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    inbox = logon["FolderIds"][4]
    t.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName]).release(1))
    assert wait_log(p, "type=folder data=yes")
    t.close()
    assert wait_log(p, "objevent context_gone")
    p.stop()
    log = p.log()
    import mapihttp_client as MH
    ident = re.search(r"ident op=EcDoRpcExt2 user=\S+ peer=\S+ version=(\S+) app=(\S+)", log)
    assert ident, log[-3000:]
    assert ident.group(2) == MH.CLIENT_APPLICATION                 # Outlook/16.0.17928.20114
    assert ident.group(1) == MH.CLIENT_APPLICATION.split("/")[1]   # 16.0.17928.20114
    assert re.search(r"objevent released ctx=1 handle=0x[0-9a-f]+ type=folder data=yes", log)
    tot = re.search(r"objdata totals set=(\d+) freed=(\d+)", log)
    assert tot and tot.group(1) == tot.group(2) != "0", log[-3000:]


def run_check(tmp_path, lines):
    conf = tmp_path / "m.conf"
    conf.write_text("\n".join(["[global]",
                               "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1[1]",
                               f"mapiproxy:epmapper port = {free_port()}",
                               f"mapiproxy:rpc port = {free_port()}",
                               "dcerpc_mapiproxy:modules = mpm_fdwatch"] + lines) + "\n")
    chk = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True,
                         text=True, timeout=30)
    return conf, chk


def test_check_rejects_unknown_and_malformed_module_options(tmp_path):
    """--check reads a module's option schema: a misspelt key, a value of
    the wrong type, one out of range, one the module's check hook refuses;
    each with FILE:LINE, like the proxy's own options."""
    conf, r = run_check(tmp_path, ["mpm_fdwatch:sever = 127.0.0.1:7000",   # line 6
                                   "mpm_fdwatch:opnum = two",               # line 7
                                   "mpm_fdwatch:server = localhost-7000"])  # line 8
    assert r.returncode != 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert (f'{conf}:6: unknown option "mpm_fdwatch:sever"; did you mean '
            f'"mpm_fdwatch:server"?') in out, out
    assert f'{conf}:7: mpm_fdwatch:opnum = "two" is not a number' in out, out
    assert (f'{conf}:8: mpm_fdwatch:server = "localhost-7000" is not ADDRESS:PORT') in out, out
    conf, r = run_check(tmp_path, ["mpm_fdwatch:server = 127.0.0.1:7000",
                                   "mpm_fdwatch:opnum = 5"])
    assert r.returncode != 0 and f"{conf}:7: mpm_fdwatch:opnum = \"5\" is out of range; give 0 to 1" \
        in r.stdout + r.stderr, r.stdout + r.stderr
    conf, r = run_check(tmp_path, ["mpm_fdwatch:server = 127.0.0.1:7000",
                                   "mpm_fdwatch:opnum = 0x1"])
    assert r.returncode == 0, r.stdout + r.stderr
    # the daemon refuses to start on the same error
    conf.write_text(conf.read_text() + "mpm_fdwatch:tiemout = 5\n")
    r = subprocess.run([PROXY_BIN, "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and f'{conf}:8: unknown option "mpm_fdwatch:tiemout"' in r.stderr, \
        r.stderr


def test_sample_module_out_of_tree_against_installed_headers(make_proxy, lab, tmp_path):
    """doc/modules.md's sample (installed as an example) built with the
    installed headers alone, loaded into the proxy, sees the calls; the
    built-in modules' sources compile against those headers alone too."""
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install",
                        "DESTDIR=" + str(dest)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    inc = dest / "usr/local/include"
    assert not list(inc.rglob("rop_gen.h")) and (inc / "mapiproxy/calls/nspi.h").exists()
    moddir = tmp_path / "mods"
    moddir.mkdir()
    src = dest / "usr/local/share/doc/mapiproxy/examples/mpm_sample.c"
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fPIC",
                        "-shared", "-I" + str(inc), str(src), "-o", str(moddir / "mpm_sample.so")],
                       capture_output=True, text=True, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    # The built-ins (linked into the daemon) and audit build the same way:
    # their sources alone, copied out of the tree, and the installed headers.
    for name in ("rewrite", "trace", "downgrade", "audit"):
        d = tmp_path / "builtin" / name
        shutil.copytree(os.path.join(ROOT, "modules", name), d)
        for c in sorted(d.glob("*.c")):
            r = subprocess.run(["cc", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
                                "-fPIC", "-I" + str(inc), "-c", str(c), "-o",
                                str(c.with_suffix(".o"))],
                               capture_output=True, text=True, cwd=str(d))
            assert r.returncode == 0, name + ": " + r.stderr
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"mapiproxy:module dir": str(moddir),
                          "dcerpc_mapiproxy:modules": "mpm_sample",
                          "mpm_sample:verbose": "yes"})
    rfr_scenario(p.host, p.rpc_port)
    assert wait_log(p, "calls,")
    log = p.log()
    assert "module mpm_sample loaded (shared object)" in log
    seen = re.findall(r"module mpm_sample: \S+ exchange_ds_rfr (\w+): \d+ bytes back", log)
    assert seen == ["RfrGetNewDSA", "RfrGetFQDNFromServerDN"], log[-3000:]


def test_abi_digest_follows_the_idl(tmp_path):
    """MP_CALLS_DIGEST (folded into MP_MODULE_ABI_VERSION) changes when a
    call structure changes, not when only a comment of the IDL does; the
    committed headers are what the generators make (check-gen)."""
    idl = [os.path.join(ROOT, "idl", f) for f in sorted(os.listdir(os.path.join(ROOT, "idl")))
           if f.endswith(".idl")]

    def digest(rfr_text, name):
        d = tmp_path / name
        (d / "idl").mkdir(parents=True)
        files = []
        for f in idl:
            dst = d / "idl" / os.path.basename(f)
            text = open(f).read()
            dst.write_text(rfr_text if f.endswith("rfr.idl") else text)
            files.append(str(dst))
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "gen_codec.py"), "-o",
                        str(d / "gen"), "--public", str(d / "pub")] + files, check=True)
        return re.search(r"MP_CALLS_DIGEST (0x[0-9a-f]+)u", (d / "pub/calls.h").read_text())[1]

    rfr = open(os.path.join(ROOT, "idl", "rfr.idl")).read()
    base = digest(rfr, "base")
    committed = open(os.path.join(ROOT, "include", "mapiproxy", "calls.h")).read()
    assert f"MP_CALLS_DIGEST {base}u" in committed
    assert digest(rfr.replace("/* opnum 1 */", "/* opnum 1: FQDN */"), "comment") == base
    changed = rfr.replace("[in] unsigned long ulFlags,\n        [in, range(10, 1024)]",
                          "[in] unsigned long ulFlags,\n        [in] unsigned long ulMore,\n"
                          "        [in, range(10, 1024)]")
    assert changed != rfr
    assert digest(changed, "changed") != base
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "check-gen", "check-gen-rops"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
