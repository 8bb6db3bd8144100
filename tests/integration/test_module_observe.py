"""The descriptor flag MP_MODULE_OBSERVES_ONLY (module ABI 5,
include/mapiproxy/module.h; doc/modules.md, "Observers"): whether the proxy
holds cached-mode downloads for verdicts is decided by the flags of the
modules with a message hook, not by their names.

Outside-built modules (tests/modules/mpm_msgtest.c compiled with -Iinclude
only, as a third party would) against the lab's ICS download (streams the
lab writes from MS-OXCFXICS and keeps: LAB_FX_DUMP):
  - mpm_msgobs (the flag set) asking for a subject prefix: nothing is held,
    the client's stream is the lab's byte for byte, no side GetBuffer; its
    verdict is refused (-1 in its log) and said once in the proxy's log;
  - mpm_msgabi4 (a descriptor as built for ABI 4: no flags field) loads,
    says so once, and counts as a module that gives verdicts: the message is
    held and its prefix reaches the client (the lab's Python reader shows
    it).
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import lab_fxwriter as W  # noqa: E402
from test_fx_hold import TARGET, rpc_lab, sync  # noqa: E402,F401
from test_fx_sync import lab_streams  # noqa: E402
from test_rop_lifetime import proxy_before  # noqa: E402


def proxy(request, make_proxy, tmp_path, module):
    opts = {"dcerpc_mapiproxy:modules": module,
            module + ":log": str(tmp_path / "events.log"), module + ":action": "prefix",
            module + ":match": "Meeting", "mapiproxy:online prefetch": "yes"}
    p, t, lab = proxy_before(request, make_proxy, "rpc", opts, "rpc_lab")
    return p, t, lab.dump


def events(tmp_path):
    return [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]


def subjects(stream):
    return [a[3] for _, _, a in W.parse_spans(stream)
            if a[0] == "prop" and a[1] == 0x0037001F]


def test_observer_is_not_held(request, make_proxy, tmp_path):
    p, t, dump = proxy(request, make_proxy, tmp_path, "mpm_msgobs")
    got, _ = sync(t)
    assert got["stream"] == lab_streams(dump)[-1]
    t.close()
    log = p.log()
    assert "side GetBuffer" not in log
    assert log.count("module mpm_msgobs: gave a message verdict but its descriptor says "
                     "MP_MODULE_OBSERVES_ONLY; ignored") == 1, log
    ev = [e for e in events(tmp_path) if TARGET in e[6]]
    assert ev and all(e[-1] == "-1" for e in ev), ev  # mp_message_prefix_subject refused


def test_abi4_module_loads_and_is_held_for(request, make_proxy, tmp_path):
    p, t, dump = proxy(request, make_proxy, tmp_path, "mpm_msgabi4")
    got, _ = sync(t)
    lab = lab_streams(dump)[-1]
    assert got["stream"] != lab
    assert "[TEST] " + TARGET in subjects(got["stream"])
    assert TARGET in subjects(lab) and "[TEST] " + TARGET not in subjects(lab)
    t.close()
    log = p.log()
    assert log.count("module mpm_msgabi4 was built for module ABI 4; loaded as one that may "
                     "give verdicts") == 1, log
    assert "MP_MODULE_OBSERVES_ONLY" not in log
