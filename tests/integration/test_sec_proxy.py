"""The security modules loaded in the proxy (build/mapiproxy-asan, the
message events of include/mapiproxy/message.h), online mode over RPC, with
the lab as the upstream: av with a real clamd (an EICAR database made here)
blocks an EICAR upload (the client gets ecAccessDenied and the lab never
stores it) and lets a clean one through, as av with ICAP (c-icap's
virus_scan) and extract with clamav-milter do; extract hands the uploaded
message to aiosmtpd's LMTP server, read back with Python's email package.
Started once for the file: clamd, c-icap, clamav-milter, the LMTP server."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from email import message_from_bytes, policy

import pytest

import content_client as CC
import emsmdb_client as EC
import lab_store as LS
from test_http_front_lab import lab_https_fixture, ntlm, start_front
from test_rop_modules import dump_lab  # noqa: F401 (fixture)
from test_lab import ALICE
from test_mime_dump import connect, folder_mids
from conftest import free_port
from test_svc import CICAP_CONF, tcp_up, wait_for

HERE = os.path.dirname(__file__)
EICAR = (rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
EC_ACCESS_DENIED = 0x80070005
FL = 0

pytestmark = pytest.mark.skipif(
    any(shutil.which(b) is None for b in ("clamd", "c-icap", "clamav-milter")),
    reason="clamd, c-icap or clamav-milter missing")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("secp"))
    os.chmod(d, 0o755)
    os.makedirs(d + "/db")
    with open(d + "/db/test.hdb", "w") as f:
        f.write("%s:%d:Test.EICAR.Made-In-Test\n" % (hashlib.md5(EICAR).hexdigest(), len(EICAR)))
    with open(d + "/clamd.conf", "w") as f:
        f.write("LocalSocket %s/clamd.sock\nDatabaseDirectory %s/db\nForeground yes\n"
                "LogFile %s/clamd.log\nStreamMaxLength 10M\n" % (d, d, d))
    procs = [subprocess.Popen(["clamd", "-c", d + "/clamd.conf"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)]
    lmtp_port = free_port()
    os.makedirs(d + "/lmtp")
    procs.append(subprocess.Popen([sys.executable, os.path.join(HERE, "svc_lmtp_server.py"),
                                   "127.0.0.1", str(lmtp_port), d + "/lmtp"],
                                  stdout=subprocess.DEVNULL, start_new_session=True))
    try:
        wait_for(lambda: os.path.exists(d + "/clamd.sock"), 60, "clamd")
        icap_port = free_port()
        os.makedirs(d + "/icap")
        with open(d + "/icap/c-icap.conf", "w") as f:
            f.write(CICAP_CONF % dict(d=d + "/icap", port=icap_port, clamd=d + "/clamd.sock"))
        with open(d + "/milter.conf", "w") as f:
            f.write("MilterSocket unix:%s/milter.sock\nClamdSocket unix:%s/clamd.sock\n"
                    "Foreground yes\nLogFile %s/milter.log\nOnInfected Reject\nOnFail Defer\n"
                    "AddHeader Replace\nUser root\n" % (d, d, d))
        for argv in (["c-icap", "-f", d + "/icap/c-icap.conf", "-N", "-D"],
                     ["clamav-milter", "-c", d + "/milter.conf"]):
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        wait_for(tcp_up(icap_port), 30, "c-icap")
        wait_for(lambda: os.path.exists(d + "/milter.sock"), 30, "clamav-milter")
        yield {"dir": d, "clamd": "unix:" + d + "/clamd.sock", "lmtp": "127.0.0.1:%d" % lmtp_port,
               "icap": "127.0.0.1:%d" % icap_port, "milter": "unix:" + d + "/milter.sock"}
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)


def upload_msg(subject, data):
    m = LS.messages()[0]
    m["props"][LS.PidTagSubject] = subject
    m.pop("named", None)
    # no stored transport headers: the MIME's headers are then built from the
    # properties (the subject above)
    m["props"].pop(LS.PidTagTransportMessageHeaders, None)
    m["attachments"] = [LS._by_value("file.bin", "application/octet-stream", data)]
    return m


env = lab_https_fixture("secproxy")


def verdicts(path, n):
    for _ in range(100):
        got = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
        if len(got) >= n:
            return got
        time.sleep(0.1)
    return got


@pytest.mark.parametrize("module,service", [("av", "clamd"), ("av", "icap"),
                                            ("extract", "milter")])
def test_eicar_upload_blocked(make_proxy, dump_lab, services, tmp_path, module,  # noqa: F811
                              service):
    """EICAR uploaded online is blocked by av with clamd, by av with ICAP
    (c-icap virus_scan) and by extract with clamav-milter: the client's save
    gets ecAccessDenied, the lab never stores the message; a clean one is
    stored."""
    vlog = str(tmp_path / "verdicts")
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": module,
        "%s:%s" % (module, service): services[service], "%s:verdict_log" % module: vlog})
    dce, c, fids = connect(p.rpc_port)
    with pytest.raises(RuntimeError) as e:
        CC.upload(c, fids[5], upload_msg("infected upload", EICAR), flags=FL)
    assert "0x%08x" % EC_ACCESS_DENIED in str(e.value)
    CC.upload(c, fids[5], upload_msg("clean upload", b"just some bytes\r\n"), flags=FL)
    have = folder_mids(c, fids[5])
    assert "clean upload" in have and "infected upload" not in have, have
    c.disconnect()
    dce.disconnect()
    v = verdicts(vlog, 2)
    assert [(x["direction"], x["action"]) for x in v[:2]] == [
        ("upload", "block"), ("upload", "allow")], v
    assert v[0]["mode"] == "online" and v[0]["service"] == service
    # transparent mode, unauthenticated binds: the user DN the client's
    # EcDoConnectEx named
    assert v[0]["user"] == v[1]["user"] == ALICE, v
    assert v[0]["verdict"] == ("reject" if service == "milter" else "infected")
    if module == "av":
        assert "Test.EICAR.Made-In-Test" in v[0]["name"]


def test_extract_lmtp_through_proxy(make_proxy, dump_lab, services, tmp_path):  # noqa: F811
    lmtp_dir = os.path.join(services["dir"], "lmtp")
    before = set(os.listdir(lmtp_dir))
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": "extract",
        "extract:lmtp": services["lmtp"], "extract:rcpt": "archive@example.org",
        "extract:directions": "upload"})
    dce, c, fids = connect(p.rpc_port)
    data = bytes(range(256)) * 40
    CC.upload(c, fids[5], upload_msg("archived upload", data), flags=FL)
    c.disconnect()
    dce.disconnect()
    wait_for(lambda: any(n.endswith(".eml") for n in set(os.listdir(lmtp_dir)) - before), 10,
             "the LMTP delivery")
    [name] = [n for n in set(os.listdir(lmtp_dir)) - before if n.endswith(".eml")]
    m = message_from_bytes(open(os.path.join(lmtp_dir, name), "rb").read(),
                           policy=policy.default)
    assert m["Subject"] == "archived upload"
    atts = list(m.iter_attachments())
    assert [a.get_filename() for a in atts] == ["file.bin"]
    assert atts[0].get_content() == data  # byte-exact


def test_check_rejects_misspelt_options(tmp_path):
    """mapiproxy --check reads the modules' option schemas: a misspelt key
    and a wrong enum value are refused with FILE:LINE and a did-you-mean."""
    root = os.path.abspath(os.path.join(HERE, "..", ".."))
    conf = tmp_path / "m.conf"
    conf.write_text("[global]\n    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "    dcerpc_mapiproxy:modules = av, spam, phish, extract\n"
                    "    mapiproxy:module dir = %s/build/modules\n"
                    "    av:clamd = unix:/nonexistent\n    av:fail_uplaod = closed\n"
                    "    spam:spamd = unix:/nonexistent\n    spam:action_download = replce\n"
                    "    phish:protected = example.com\n    extract:lmtp = 127.0.0.1:1\n"
                    % root)
    r = subprocess.run([os.path.join(root, "build", "mapiproxy"), "--check", "-c", str(conf)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert ':6: unknown option "av:fail_uplaod"; did you mean "av:fail_upload"?' in r.stderr
    assert ':8: spam:action_download = "replce" is not one of' in r.stderr


def test_av_blocks_eicar_upload_mapihttp(make_proxy, env, services, tmp_path):
    """The same over MAPI/HTTP (the HTTPS front before the lab's MAPI/HTTP
    server; python3-requests client, NTLM)."""
    import mapihttp_client as MH
    vlog = str(tmp_path / "verdicts")
    p = start_front(make_proxy, env, {"dcerpc_mapiproxy:modules": "av",
                                      "av:clamd": services["clamd"], "av:verdict_log": vlog})
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fids = logon["FolderIds"]
    with pytest.raises(RuntimeError) as e:
        CC.upload(c, fids[5], upload_msg("infected over http", EICAR), flags=FL)
    assert "0x%08x" % EC_ACCESS_DENIED in str(e.value)
    CC.upload(c, fids[5], upload_msg("clean over http", b"just bytes\r\n"), flags=FL)
    have = folder_mids(c, fids[5])
    assert "clean over http" in have and "infected over http" not in have, have
    assert c.disconnect()["ErrorCode"] == 0
    v = verdicts(vlog, 2)
    assert [(x["verdict"], x["action"]) for x in v[:2]] == [("infected", "block"),
                                                           ("clean", "allow")], v
    # HTTP logon passed through (the lab checks it): whom its NTLM
    # AUTHENTICATE names
    assert v[0]["user"] == v[1]["user"] == "LAB\\alice", v


def test_av_replaces_infected_attachment_on_upload(make_proxy, dump_lab, services,  # noqa: F811
                                                   tmp_path):
    """av:action_upload = replace: the lab stores the message with a text
    notice in place of the EICAR attachment, the clean one untouched."""
    vlog = str(tmp_path / "verdicts")
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": "av", "av:clamd": services["clamd"],
        "av:action_upload": "replace", "av:verdict_log": vlog})
    dce, c, fids = connect(p.rpc_port)
    m = upload_msg("replace upload", EICAR)
    m["attachments"].append(LS._by_value("notes.txt", "text/plain", b"plain notes\r\n"))
    mid = CC.upload(c, fids[5], m, flags=FL)
    got = CC.download(c, fids[5], mid, flags=FL)
    c.disconnect()
    dce.disconnect()
    by_name = {a["props"].get(LS.PidTagAttachLongFilename): a["props"]
               for a in got["attachments"]}
    assert sorted(by_name) == ["file.bin.txt", "notes.txt"], by_name
    notice = by_name["file.bin.txt"][LS.PidTagAttachDataBinary]
    assert b"file.bin" in notice and b"Test.EICAR.Made-In-Test" in notice
    assert by_name["notes.txt"][LS.PidTagAttachDataBinary] == b"plain notes\r\n"
    v = verdicts(vlog, 2)
    assert [(x["direction"], x["verdict"], x["action"]) for x in v[:2]] == [
        ("upload", "infected", "replace"), ("download", "clean", "allow")], v


def test_phish_defangs_upload(make_proxy, dump_lab, tmp_path):  # noqa: F811
    """phish with a feed: an uploaded body's listed link and a lookalike of a
    protected domain are stored defanged; other links untouched."""
    feed = tmp_path / "feed.txt"
    feed.write_text("0.0.0.0 evil.example\n")
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": "phish", "phish:feeds": str(feed),
        "phish:protected": "paypal.com", "phish:directions": "upload"})
    dce, c, fids = connect(p.rpc_port)
    m = upload_msg("phish upload", b"x")
    m["props"].pop(LS.PidTagHtml, None)
    m["props"][LS.PidTagBody] = ("Pay at https://www.paypa1.com/x or http://evil.example/login "
                                 "and read https://docs.python.org/3/\r\n")
    mid = CC.upload(c, fids[5], m, flags=FL)
    got = CC.download(c, fids[5], mid, flags=FL)
    c.disconnect()
    dce.disconnect()
    assert got["props"][LS.PidTagBody] == (
        "Pay at hxxps://www[.]paypa1[.]com/x or hxxp://evil[.]example/login "
        "and read https://docs.python.org/3/\r\n")
