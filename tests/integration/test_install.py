"""make install into a temporary DESTDIR (doc/install.md): the files land
where the FHS and Debian put them, the installed headers alone build a module
out of the tree (gcc), the installed daemon loads it (--check, then a start),
systemd-analyze verifies the unit, man(1) and groff render the pages, and
make uninstall removes what install put there, but never mapiproxy.conf."""
import grp as grp_mod
import os
import re
import pwd
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import ROOT, free_port, wait_port

FILES = {
    "usr/sbin/mapiproxy": 0o755,
    "usr/bin/mapiproxy-decode": 0o755,
    "usr/lib/mapiproxy/modules/mpm_sample.so": 0o644,
    "usr/lib/mapiproxy/modules/audit.so": 0o644,
    "usr/lib/mapiproxy/modules/av.so": 0o644,       # the security modules
    "usr/lib/mapiproxy/modules/spam.so": 0o644,     # (doc/security-modules.md)
    "usr/lib/mapiproxy/modules/phish.so": 0o644,
    "usr/lib/mapiproxy/modules/extract.so": 0o644,
    "usr/include/mapiproxy/module.h": 0o644,
    "usr/include/mapiproxy/rops.h": 0o644,
    "usr/include/mapiproxy/calls.h": 0o644,        # the API stands alone: no
    "usr/include/mapiproxy/calls/emsmdb.h": 0o644,  # codec internals installed
    "usr/include/mapiproxy/ropvals.h": 0o644,
    "usr/share/man/man8/mapiproxy.8": 0o644,
    "usr/share/man/man5/mapiproxy.conf.5": 0o644,
    "usr/share/man/man1/mapiproxy-decode.1": 0o644,
    "lib/systemd/system/mapiproxy.service": 0o644,
    "etc/logrotate.d/mapiproxy": 0o644,
    "etc/mapiproxy/mapiproxy.conf.sample": 0o644,
    "usr/share/doc/mapiproxy/examples/mpm_sample.c": 0o644,
    "usr/share/doc/mapiproxy/configuration.md": 0o644,
    "usr/share/doc/mapiproxy/security-modules.md": 0o644,
    "usr/share/doc/mapiproxy/av.md": 0o644,
}
PAGES = ["man8/mapiproxy.8", "man5/mapiproxy.conf.5", "man1/mapiproxy-decode.1"]


def make(*args):
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("destdir"))
    # An administrator's configuration, which install must leave alone.
    os.makedirs(d + "/etc/mapiproxy")
    with open(d + "/etc/mapiproxy/mapiproxy.conf", "w") as f:
        f.write("# mine\n")
    make("install", "DESTDIR=" + d, "PREFIX=/usr")
    return d


def test_files_and_modes(dest):
    for rel, mode in FILES.items():
        st = os.stat(os.path.join(dest, rel))
        assert stat.S_IMODE(st.st_mode) == mode, rel
    with open(dest + "/etc/mapiproxy/mapiproxy.conf") as f:
        assert f.read() == "# mine\n"
    r = subprocess.run([dest + "/usr/sbin/mapiproxy", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("mapiproxy ")
    # The sample configuration is valid as shipped.
    r = subprocess.run([dest + "/usr/sbin/mapiproxy", "--check", "-c",
                        dest + "/etc/mapiproxy/mapiproxy.conf.sample"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_security_modules_from_default_dir(dest, tmp_path):
    """The installed daemon finds av, spam, phish and extract in its default
    module dir and checks their options (--check loads them)."""
    cfg = tmp_path / "sec.conf"
    cfg.write_text("[global]\n    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                   "    dcerpc_mapiproxy:modules = av, spam, phish, extract\n"
                   "    av:clamd = unix:/nonexistent\n    spam:spamd = unix:/nonexistent\n"
                   "    phish:protected = example.com\n    extract:lmtp = 127.0.0.1:1\n")
    r = subprocess.run([dest + "/usr/sbin/mapiproxy", "--check", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "configuration OK" in r.stdout + r.stderr, r.stderr
    cfg.write_text(cfg.read_text() + "    av:fail_uplaod = closed\n")
    r = subprocess.run([dest + "/usr/sbin/mapiproxy", "--check", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and 'unknown option "av:fail_uplaod"' in r.stderr, r.stderr


def conf(path, moddir, log, epm, rpc):
    with open(path, "w") as f:
        f.write("[global]\n"
                "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                "dcerpc_mapiproxy:modules = mpm_sample\n"
                "mpm_sample:verbose = yes\n"
                "mapiproxy:listen = 127.0.0.1\n"
                f"mapiproxy:epmapper port = {epm}\n"
                f"mapiproxy:rpc port = {rpc}\n"
                f"mapiproxy:log file = {log}\n"
                + (f"mapiproxy:module dir = {moddir}\n" if moddir else ""))


def test_module_built_against_installed_headers(dest, tmp_path):
    inc = dest + "/usr/include"
    # Both public headers, rops.h with the codec headers it pulls in, compile
    # with -I$DESTDIR/usr/include alone (no -D_GNU_SOURCE, no source tree).
    src = tmp_path / "hdrs.c"
    src.write_text('#include "mapiproxy/module.h"\n#include "mapiproxy/rops.h"\n'
                   "int hdrs(void);\nint hdrs(void) { return (int)sizeof(struct mp_module); }\n")
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-I" + inc, "-c",
                        str(src), "-o", str(tmp_path / "hdrs.o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # The sample module, from the installed example source.
    moddir = tmp_path / "mods"
    moddir.mkdir()
    r = subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", "-shared", "-fPIC", "-I" + inc,
                        dest + "/usr/share/doc/mapiproxy/examples/mpm_sample.c", "-o",
                        str(moddir / "mpm_sample.so")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    daemon = dest + "/usr/sbin/mapiproxy"
    log = tmp_path / "proxy.log"
    epm, rpc = free_port(), free_port()
    cfg = tmp_path / "oot.conf"
    conf(cfg, str(moddir), log, epm, rpc)
    r = subprocess.run([daemon, "--check", "-c", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0 and "configuration OK" in r.stdout + r.stderr, r.stderr
    # The default module dir of the installed daemon is ../lib/mapiproxy/modules.
    cfg2 = tmp_path / "default.conf"
    conf(cfg2, None, log, epm, rpc)
    r = subprocess.run([daemon, "--check", "-c", str(cfg2)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    os.unlink(dest + "/usr/lib/mapiproxy/modules/mpm_sample.so")
    try:
        r = subprocess.run([daemon, "--check", "-c", str(cfg2)], capture_output=True, text=True)
        assert r.returncode == 1
        assert dest + "/usr/sbin/../lib/mapiproxy/modules/mpm_sample.so" in r.stderr, r.stderr
    finally:
        shutil.copy(moddir / "mpm_sample.so", dest + "/usr/lib/mapiproxy/modules/mpm_sample.so")
    # Started, it loads the out-of-tree module and serves its endpoint mapper.
    p = subprocess.Popen([daemon, "-c", str(cfg)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert wait_port("127.0.0.1", epm), "proxy did not listen"
        end = time.time() + 5
        while time.time() < end and "module mpm_sample loaded" not in log.read_text():
            time.sleep(0.05)
        text = log.read_text()
        assert "module mpm_sample loaded (shared object)" in text, text
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, p.stderr.read()


def test_systemd_unit_verifies(dest, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = open(dest + "/lib/systemd/system/mapiproxy.service").read()
    for want in ("ExecStart=/usr/sbin/mapiproxy -c /etc/mapiproxy/mapiproxy.conf",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "User=mapiproxy",
                 "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "Type=notify", "NotifyAccess=main",
                 "SystemCallFilter=@system-service"):
        assert want in unit, want
    # verify checks that ExecStart's binary exists and that the
    # Documentation= man pages open: point both at the DESTDIR.
    local = tmp_path / "mapiproxy.service"
    local.write_text(unit.replace("/usr/sbin/mapiproxy", dest + "/usr/sbin/mapiproxy"))
    env = dict(os.environ, MANPATH=dest + "/usr/share/man")
    r = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # systemd's own exposure score of the hardening (0 best, 10 worst; 3.4
    # before Type=notify's round of options, 1.5 after).
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                        str(local)], capture_output=True, text=True, env=env)
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert m and float(m.group(1)) <= 2.0, r.stdout[-3000:] + r.stderr


def test_man_pages_render(dest):
    for page in PAGES:
        path = dest + "/usr/share/man/" + page
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", path], capture_output=True,
                           text=True)
        assert r.returncode == 0 and r.stderr == "", page + ": " + r.stderr
        r = subprocess.run(["man", "-l", path], capture_output=True, text=True,
                           env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        assert r.returncode == 0 and "SEE ALSO" in r.stdout, page + ": " + r.stderr
    r = subprocess.run(["man", "-l", dest + "/usr/share/man/man8/mapiproxy.8"],
                       capture_output=True, text=True, env=dict(os.environ, MANPAGER="cat"))
    # Every option of --help is documented.
    helptext = subprocess.run([dest + "/usr/sbin/mapiproxy", "--help"], capture_output=True,
                              text=True).stdout
    for opt in ("--config", "--check", "--print-default", "--log-level", "--version", "--help",
                "SIGHUP", "SIGUSR1", "SIGTERM"):
        assert opt in r.stdout.replace("‐", "-"), opt
        assert opt.lstrip("-").replace("SIG", "") in helptext, opt


def test_logrotate_rotates_and_daemon_reopens(dest, tmp_path):
    """logrotate(8) itself runs the installed stanza; its postrotate is
    pointed at this test's daemon alone (the shipped one signals every
    process named mapiproxy, other tests' daemons included)."""
    if not shutil.which("logrotate"):
        pytest.skip("logrotate is not installed (Debian package logrotate)")
    logdir = tmp_path / "log"
    logdir.mkdir()
    log = logdir / "mapiproxy.log"
    epm, rpc = free_port(), free_port()
    cfg = tmp_path / "rot.conf"
    conf(cfg, None, log, epm, rpc)
    p = subprocess.Popen([dest + "/usr/sbin/mapiproxy", "-c", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_port("127.0.0.1", epm), "proxy did not listen"
        stanza = open(dest + "/etc/logrotate.d/mapiproxy").read()
        assert "kill -USR1" in stanza and "--signal=USR1" in stanza
        head, _, rest = stanza.partition("postrotate")
        _, _, tail = rest.partition("endscript")
        user = pwd.getpwuid(os.getuid()).pw_name
        grp = grp_mod.getgrgid(os.getgid()).gr_name
        head = (head.replace("/var/log/mapiproxy/", str(logdir) + "/")
                .replace("create 0640 mapiproxy adm", f"create 0640 {user} {grp}"))
        rot = tmp_path / "logrotate.conf"
        rot.write_text(head + f"postrotate\n\t\tkill -USR1 {p.pid}\n\tendscript" + tail)
        r = subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "state"), str(rot)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (logdir / "mapiproxy.log.1").exists()
        end = time.time() + 5
        while time.time() < end and "reopened" not in log.read_text():
            time.sleep(0.05)
        assert f"log file {log} reopened" in log.read_text(), log.read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0, p.stderr.read()


def test_uninstall(dest):
    make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
    left = sorted(os.path.relpath(os.path.join(d, f), dest)
                  for d, _, fs in os.walk(dest) for f in fs)
    assert left == ["etc/mapiproxy/mapiproxy.conf"], left
