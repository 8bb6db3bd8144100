"""The phish module (feeds, lookalikes, defang, tag, block) and the extract
module's LMTP (aiosmtpd) and unix-socket hand-offs in build/sec-host; the
LMTP server's copy is read back with Python's email package."""
import json
import os
import socket
import struct
import threading
import time
from email import message_from_bytes, policy

import pytest

from sec_host import EICAR, SKIP, SecHost, make_lab, stop_lab

pytestmark = SKIP


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = make_lab(tmp_path_factory, ('lmtp',))
    yield lab
    stop_lab(lab)


def test_phish(lab):
    feed = lab.path("feed.txt")
    with open(feed, "w") as f:
        f.write("# URLhaus-style\nhttp://bad.example/payload.exe\n0.0.0.0 evil.example\n")
    body = lab.path("phish_body.txt")
    with open(body, "w") as f:
        f.write("Log in at https://www.p\u0430ypal.com/login (urgent) or "
                "http://evil.example/x.\nDocs: https://docs.python.org/3/\n")
    html = lab.path("phish.html")
    with open(html, "w") as f:
        f.write('<a href="https://eur01.safelinks.protection.outlook.com/?url=http%3A%2F%2F'
                'bad.example%2Fpayload.exe&amp;data=1">invoice</a>')
    h = SecHost(lab, "phish", feeds=feed, protected="paypal.com")
    v = h.scan(dir="download", mime=lab.path("clean"), body=body, html=html)
    assert not v["blocked"]
    assert "hxxps://www[.]p\u0430ypal[.]com/login" in v["prop_1000"]
    assert "hxxp://evil[.]example/x." in v["prop_1000"]
    assert "https://docs.python.org/3/" in v["prop_1000"]  # untouched
    assert "hxxps://eur01[.]safelinks" in v["prop_1013"]
    log = h.verdicts()[0]
    assert log["verdict"] == "lookalike" and log["hits"] == 3
    assert "http://bad.example/payload.exe" in log["urls"]
    assert "https://www.xn--pypal-4ve.com/login" in log["urls"]
    # a clean body: nothing set
    clean = lab.path("clean_body.txt")
    with open(clean, "w") as f:
        f.write("See https://www.paypal.com/ and https://docs.python.org/\n")
    v = h.scan(dir="download", mime=lab.path("clean"), body=clean)
    assert "prop_1000" not in v and not v["blocked"]
    # the feed changes: reloaded (checked at most once a second)
    time.sleep(1.1)
    with open(feed, "a") as f:
        f.write("paypal.com\n")
    v = h.scan(dir="download", mime=lab.path("clean"), body=clean)
    assert "hxxps://www[.]paypal[.]com/" in v["prop_1000"]
    h.close()
    h = SecHost(lab, "phish", feeds=feed, action_upload="block", action_download="tag")
    v = h.scan(dir="upload", mime=lab.path("clean"), body=body)
    assert v["blocked"] and "evil.example" in v["reason"]
    v = h.scan(dir="download", mime=lab.path("clean"), body=body, modify="yes")
    assert v["subject_prefix"] == "[PHISH] " and "evil.example" in v["named_X-Phish"]
    h.close()


def test_extract_lmtp(lab):
    h = SecHost(lab, "extract", lmtp="127.0.0.1:%d" % lab.ports["lmtp"], rcpt="archive@example.org")
    before = set(os.listdir(lab.path("lmtp")))
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert not v["blocked"]
    new = sorted(set(os.listdir(lab.path("lmtp"))) - before)
    eml = [n for n in new if n.endswith(".eml")]
    got = open(os.path.join(lab.path("lmtp"), eml[0]), "rb").read()
    assert got == lab.files["eicar_mail"]
    m = message_from_bytes(got, policy=policy.default)
    assert [a.get_content() for a in m.iter_attachments()] == [EICAR]
    env = json.load(open(os.path.join(lab.path("lmtp"), eml[0][:-4] + ".json")))
    assert env["rcpt"] == ["archive@example.org"]
    # LMTP refuses the only recipient: a reject, acted on (block)
    h.close()
    h = SecHost(lab, "extract", lmtp="127.0.0.1:%d" % lab.ports["lmtp"],
                rcpt="nobody@example.org")
    assert h.scan(dir="upload", mime=lab.path("clean"))["blocked"]
    h.close()


def socket_service(path, answers, got):
    """A custom service on the documented framing (doc/extract.md)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)

    def run():
        for ans in answers:
            c, _ = srv.accept()
            f = c.makefile("rb")
            assert f.read(4) == b"MPX1"
            (ml,) = struct.unpack(">I", f.read(4))
            meta = json.loads(f.read(ml))
            (n,) = struct.unpack(">Q", f.read(8))
            got.append((meta, f.read(n)))
            c.sendall(ans)
            c.close()
        srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_extract_socket(lab):
    path = lab.path("custom.sock")
    got = []
    t = socket_service(path, [b"TAG [EXT]\n", b"BLOCK not today\n", b"ALLOW\n"], got)
    h = SecHost(lab, "extract", socket="unix:" + path)
    v = h.scan(dir="download", mime=lab.path("clean"), user="alice", subject="lunch", mid="0x42")
    assert v["subject_prefix"] == "[EXT] " and not v["blocked"]
    v = h.scan(dir="upload", mime=lab.path("clean"))
    assert v["blocked"] and "not today" in v["reason"]
    v = h.scan(dir="upload", mime=lab.path("eicar_mail"))
    assert not v["blocked"]
    t.join(5)
    meta, mime = got[0]
    assert mime == lab.files["clean"]
    assert meta["user"] == "alice" and meta["direction"] == "download"
    assert meta["message_id"] == "0x0000000000000042" and meta["subject"] == "lunch"
    assert got[2][1] == lab.files["eicar_mail"]
    h.close()

