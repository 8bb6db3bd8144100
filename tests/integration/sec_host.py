"""Shared by the test_sec_*.py files: build/sec-host, which loads one
security module (build/asan/modules/av.so, spam.so, phish.so, extract.so) as the
proxy does and gives it message events made from files, and a fixture
factory that starts the real services a file needs once (test_svc.Lab).
The proxy's own message events are tested in test_sec_proxy.py."""
import json
import os
import select
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_svc import EICAR, NEEDED, Lab, mail  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = os.path.join(ROOT, "build", "sec-host")
# sec-host is built with the sanitizers: it loads their twins (build/asan/modules)
MODS = os.path.join(ROOT, "build", "asan", "modules")

SKIP = pytest.mark.skipif(
    any(shutil.which(b) is None for b in NEEDED) or not os.path.exists(HOST)
    or not os.path.exists(os.path.join(MODS, "av.so")),
    reason="services, build/sec-host or the modules missing (scripts/install-deps.sh, make)")

HOSTS = []


def make_lab(tmp_path_factory, which):
    lab = Lab(str(tmp_path_factory.mktemp("sec")))
    os.chmod(lab.d, 0o755)
    extra = {
        "clean_att": mail("report", "the report is attached\n", b"quarterly numbers\x00\x01\x02"),
        "eicar_bin": EICAR,
    }
    for k, v in extra.items():
        lab.files[k] = v
        with open(lab.path(k), "wb") as f:
            f.write(v)
    try:
        lab.start_all(which)
    except BaseException:
        stop_lab(lab)
        raise
    return lab


def stop_lab(lab):
    for h in HOSTS:
        if h.p.poll() is None:
            h.p.kill()
            h.p.wait()
    for name in list(lab.procs):
        lab.stop(name)


class SecHost:
    """build/sec-host MODULE.so key=value...: one JSON line per scan."""

    def __init__(self, lab, module, **opts):
        self.log = lab.path("%s-%d.verdicts" % (module, len(HOSTS)))
        opts.setdefault("verdict_log", self.log)
        args = [HOST, os.path.join(MODS, module + ".so")]
        args += ["%s=%s" % kv for kv in opts.items()]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        HOSTS.append(self)
        assert json.loads(self._line(30)) == {"ready": True}

    def _line(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert r, "sec-host hung"
        ln = self.p.stdout.readline()
        assert ln, "sec-host died"
        return ln

    def scan(self, timeout=30, **fields):
        cmds = ["set noatt"]
        for k, v in fields.items():
            for one in (v if isinstance(v, list) else [v]):
                cmds.append("set %s %s" % (k, one))
        cmds.append("scan")
        self.p.stdin.write(("\n".join(cmds) + "\n").encode())
        self.p.stdin.flush()
        t = time.time()
        out = json.loads(self._line(timeout))
        out["_secs"] = time.time() - t
        print(json.dumps(out)[:400])
        return out

    def verdicts(self):
        with open(self.log) as f:
            return [json.loads(x) for x in f]

    def close(self):
        self.p.stdin.write(b"quit\n")
        self.p.stdin.flush()
        self.p.stdin.close()
        assert self.p.wait(30) == 0  # and no sanitizer report (exit code)
