"""mapiproxy:online prefetch depth (default 4, 1-8; doc/configuration.md):
how many levels of embedded messages the proxy's own read opens before the
client's RopOpenMessage response (src/chain/msgonline.c).  A message with
embedded messages three levels deep (uploaded to the lab straight, as the
lab's client writes it from MS-OXCMSG: RopCreateAttachment, RopOpenEmbeddedMessage),
opened online through the proxy with mime-dump: Python's email package
reads the .eml of the event, and the nesting of message/rfc822 parts shows
how deep the proxy read:
  - default: all three levels, the innermost attachment's bytes included;
  - depth 1 (what the proxy always read before it became an option): one
    level, the embedded message's own embedded attachment not opened.
  - --check knows the option and its bounds."""
import email
import email.policy
import os
import subprocess

import pytest

import content_client as CC
import lab_store as LS
from test_mime_dump import connect, folder_mids
from test_rop_modules import dump_lab  # noqa: F401 (fixture)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEEP = b"deepest attachment bytes\r\n"


def level(n, last):
    m = {"props": {LS.PidTagMessageClass: "IPM.Note", LS.PidTagSubject: "level %d" % n,
                   LS.PidTagBody: "body of level %d\r\n" % n}}
    if n == last:
        m["attachments"] = [LS._by_value("deep.txt", "text/plain", DEEP)]
    else:
        m["attachments"] = [{"props": {LS.PidTagAttachMethod: LS.ATTACH_EMBEDDED_MSG,
                                       LS.PidTagDisplayName: "level %d" % (n + 1),
                                       LS.PidTagAttachLongFilename: "level %d.eml" % (n + 1)},
                             "embedded": level(n + 1, last)}]
    return m


@pytest.fixture
def deep_mid(dump_lab):  # noqa: F811
    dce, c, fids = connect(dump_lab.ports["emsmdb"])
    mid = CC.upload(c, fids[4], level(0, 3))
    c.disconnect()
    dce.disconnect()
    return mid


def nesting(msg):
    """Subjects down the message/rfc822 chain, and the innermost
    attachment's bytes (None when not there)."""
    subjects, data = [msg["Subject"]], None
    while True:
        inner = [x for x in msg.iter_attachments() if x.get_content_type() == "message/rfc822"]
        if not inner:
            for a in msg.iter_attachments():
                if a.get_filename() == "deep.txt":
                    data = a.get_payload(decode=True)
            return subjects, data
        msg = inner[0].get_content()
        subjects.append(msg["Subject"])


@pytest.mark.parametrize("depth,want", [(None, 4), ("1", 2)])
def test_prefetch_depth(make_proxy, dump_lab, deep_mid, tmp_path, depth, want):  # noqa: F811
    out = tmp_path / "eml"
    out.mkdir()
    extra = {"dcerpc_mapiproxy:modules": "mpm_msgtest, mime-dump",
             "mpm_msgtest:log": str(tmp_path / "events.log"),
             "mapiproxy:online prefetch": "yes",
             "mime-dump:dir": str(out), "mime-dump:tmpdir": str(tmp_path)}
    if depth:
        extra["mapiproxy:online prefetch depth"] = depth
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra=extra)
    dce, c, fids = connect(p.rpc_port)
    assert folder_mids(c, fids[4])["level 0"] == deep_mid
    got = CC.download(c, fids[4], deep_mid)
    c.disconnect()
    dce.disconnect()
    # the client's own read is whole either way
    e = got
    for _ in range(3):
        e = e["attachments"][0]["embedded"]
    assert e["attachments"][0]["props"][LS.PidTagAttachDataBinary] == DEEP
    ev = [x.split("\t") for x in (tmp_path / "events.log").read_text().splitlines()]
    assert [(x[2], x[6]) for x in ev] == [("RopOpenMessage", "level 0")], ev
    [eml] = sorted(out.glob("*.eml"))
    with open(eml, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.default)
    subjects, data = nesting(msg)
    assert subjects == ["level %d" % i for i in range(want)], subjects
    assert (data == DEEP) == (want == 4), data
    assert p.alive()



@pytest.mark.parametrize("value,ok", [("8", True), ("9", False), ("0", False)])
def test_check_knows_depth(tmp_path, value, ok):
    conf = tmp_path / "m.conf"
    conf.write_text("[global]\n\tdcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "\tmapiproxy:online prefetch depth = %s\n" % value)
    r = subprocess.run([os.path.join(ROOT, "build", "mapiproxy"), "--check", "-c", str(conf)],
                       capture_output=True, text=True)
    said = "online prefetch depth" in r.stdout + r.stderr
    assert (r.returncode == 0 and not said) if ok else (r.returncode != 0 and said), \
        r.stdout + r.stderr
