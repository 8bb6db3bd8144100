"""phish defangs RTF bodies (issue 15/16 leftover; doc/phish.md, "RTF
bodies"): a message whose only body is compressed RTF (PidTagRtfCompressed,
MS-OXRTFCP) with a feed URL in a HYPERLINK field and in HTML encapsulated
with \\fromhtml (\\htmltag groups) gets its RTF decompressed, the links
defanged in place and the RTF written back in the uncompressed form of
MS-OXRTFCP: the 16-byte header of its ABNF (2.1.3.1.1: COMPSIZE = length +
12, RAWSIZE, COMPTYPE "MELA", CRC 0) followed by the RTF.  Checked byte by
byte against that grammar and read with the lab's decoder (tests/lab/rtfcp.py,
itself checked against the spec's section-4 examples):
  - an online upload through the proxy (RPC): the lab stores the defanged
    RTF; a link not in the feed is untouched;
  - a cached-mode (ICS) download held for the verdict: the client's stream
    carries the defanged RTF, every other message is the lab's.
"""
import os
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import pytest  # noqa: E402

import content_client as CC  # noqa: E402
import lab_store as LS  # noqa: E402
import rtfcp  # noqa: E402
import test_sec_cached as SC  # noqa: E402
from test_mime_dump import connect  # noqa: E402
from test_rop_modules import dump_lab  # noqa: E402,F401 (fixture)
from test_sec_cached import by_mid, mh_env, rpc_lab, synced  # noqa: E402,F401
from test_sec_cached_modify import others_same  # noqa: E402

RTF = (b'{\\rtf1\\ansi\\ansicpg1252\\fromhtml1 \\deff0{\\fonttbl{\\f0\\fswiss Arial;}}\r\n'
       b'{\\*\\htmltag19 <a href="http://evil.example/login">}'
       b'{\\field{\\*\\fldinst{HYPERLINK "http://evil.example/login"}}{\\fldrslt{log in}}}'
       b'{\\*\\htmltag27 </a>}\\par\r\n'
       b'Docs: https://docs.python.org/3/\\par\r\n}\r\n')
DEFANGED = RTF.replace(b"http://evil.example/login", b"hxxp://evil[.]example/login")


def rtf_message(subject):
    return {"props": {LS.PidTagSubject: subject, LS.PidTagMessageClass: "IPM.Note",
                      LS.PidTagRtfCompressed: rtfcp.compress(RTF), LS.PidTagNativeBody: 2}}


def check_mela(value):
    """The uncompressed form, as MS-OXRTFCP 2.1.3.1.1 writes it."""
    comp, raw, kind, crc = struct.unpack("<IIII", value[:16])
    assert (comp, raw, kind, crc) == (len(DEFANGED) + 12, len(DEFANGED), 0x414C454D, 0)
    assert value[8:12] == b"MELA" and value[16:] == DEFANGED
    assert rtfcp.decompress(value) == DEFANGED


def feed(tmp_path):
    f = tmp_path / "feed.txt"
    f.write_text("http://evil.example/login\n")
    return str(f)


def test_rtf_upload_defanged(make_proxy, dump_lab, tmp_path):  # noqa: F811
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": "phish", "phish:feeds": feed(tmp_path),
        "phish:directions": "upload"})
    dce, c, fids = connect(p.rpc_port)
    mid = CC.upload(c, fids[5], rtf_message("rtf phish upload"), flags=0)
    got = CC.download(c, fids[5], mid, flags=0)
    c.disconnect()
    dce.disconnect()
    assert LS.PidTagBody not in got["props"] and LS.PidTagHtml not in got["props"]
    check_mela(got["props"][LS.PidTagRtfCompressed])
    assert p.alive()


@pytest.fixture(params=["rpc"])
def start(request, make_proxy):
    """test_sec_cached's, the stream held (the default hold limit)."""
    return SC.starter(request, make_proxy, {})


@SC.pytestmark
def test_rtf_cached_download_defanged(start, tmp_path):
    tag = "rtf held %d" % os.getpid()
    p, lab, [got], mids, vlog = synced(
        {"dcerpc_mapiproxy:modules": "phish", "phish:feeds": feed(tmp_path),
         "phish:action_download": "defang"}, start, tmp_path,
        [rtf_message("phish " + tag), SC.message("docs " + tag, "Read https://docs.python.org/\r\n")],
        folder=7)
    bad = mids["phish " + tag]
    src, m = by_mid(lab)[bad], by_mid(got)[bad]
    assert rtfcp.decompress(src["props"][LS.PidTagRtfCompressed]) == RTF
    check_mela(m["props"][LS.PidTagRtfCompressed])
    others_same(lab, got, {bad})
    assert p.alive()
