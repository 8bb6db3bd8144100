"""phish defangs the RTF body of an online download read ahead by the proxy
(mapiproxy:online prefetch = yes; doc/phish.md, "RTF bodies"): the verdict's
PidTagRtfCompressed (mp_message_set_binary, the uncompressed MELA form of
MS-OXRTFCP 2.1.3.1.1) is what the client reads on that message handle:

  - RopGetPropertiesAll / RopGetPropertiesSpecific: the new bytes when they
    are short; a long one answered ecNotEnoughMemory (MS-OXCPRPT 3.2.5.2),
    which makes the client open a stream;
  - RopOpenStream (its StreamSize), RopReadStream, RopSeekStream and
    RopGetStreamSize on PidTagRtfCompressed: the new bytes.

The messages are stored in the lab by the client directly (not through the
proxy); the client reads them through the proxy over RPC and over MAPI/HTTP
(the HTTPS front before the lab's MAPI/HTTP server).  What it reads is
checked against MS-OXRTFCP's grammar and decompressed with the lab's
decoder (tests/lab/rtfcp.py, checked against the spec's section-4
examples); the lab's copy, read directly, is the original LZFu.
"""
import os
import random
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import content_client as CC  # noqa: E402
import emsmdb_client as EC  # noqa: E402
import lab_store as LS  # noqa: E402
import rtfcp  # noqa: E402
from test_http_front_lab import lab_https_fixture, ntlm, start_front  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_mime_dump import connect, folder_mids  # noqa: E402
from test_rop_modules import dump_lab  # noqa: E402,F401 (fixture)
from test_sec_phish_rtf import RTF, feed  # noqa: E402

env = lab_https_fixture("phishrtfol")

FL = 0x1  # EXT2_NO_COMPRESSION
TAG = 0x10090102  # PidTagRtfCompressed
EC_NOT_ENOUGH_MEMORY = 0x8007000E
EVIL, DEFANGED_URL = b"http://evil.example/login", b"hxxp://evil[.]example/login"


def big_rtf():
    """RTF whose LZFu form is well over the lab's 8 KB property-list limit:
    random words do not compress."""
    rnd = random.Random(7)
    words = b" ".join(b"%08x" % rnd.getrandbits(32) for _ in range(2500))
    return RTF.replace(b"Docs:", b"Filler " + words + b"\\par\r\nDocs:")


SMALL, BIG = RTF, big_rtf()


def message(subject, raw):
    return {"props": {LS.PidTagSubject: subject, LS.PidTagMessageClass: "IPM.Note",
                      LS.PidTagRtfCompressed: rtfcp.compress(raw), LS.PidTagNativeBody: 2}}


def check_mela(value, raw):
    """The uncompressed form, as MS-OXRTFCP 2.1.3.1.1 writes it, of raw
    with its listed link defanged."""
    want = raw.replace(EVIL, DEFANGED_URL)
    assert want != raw
    comp, size, kind, crc = struct.unpack("<IIII", value[:16])
    assert (comp, size, kind, crc) == (len(want) + 12, len(want), 0x414C454D, 0)
    assert value[8:12] == b"MELA" and value[16:] == want
    assert rtfcp.decompress(value) == want
    assert b"https://docs.python.org/3/" in value  # not in the feed: untouched


def opts(tmp_path):
    return {"dcerpc_mapiproxy:modules": "phish", "phish:feeds": feed(tmp_path),
            "phish:directions": "download", "phish:action_download": "defang",
            "mapiproxy:online prefetch": "yes"}


def store(c, fid, tag):
    """Both messages, stored by the client (no proxy in between)."""
    for name, raw in (("small", SMALL), ("big", BIG)):
        CC.upload(c, fid, message("rtf %s %s" % (name, tag), raw), flags=0)
    return folder_mids(c, fid)


def read_all(c, fid, mids, tag):
    """What the client reads through the proxy: the whole messages
    (RopGetPropertiesAll, streams for long values), then the RTF of each
    with RopGetPropertiesSpecific and of the long one as a stream read in
    pieces, with seeks."""
    got = {}
    for name in ("small", "big"):
        mid = mids["rtf %s %s" % (name, tag)]
        got[name] = CC.download(c, fid, mid, flags=FL)
        om, gs = c.execute(EC.RopBuffer().open_message(0, 1, fid, mid)
                           .get_properties_specific(1, [TAG]), FL)
        assert om["ReturnValue"] == 0 and gs["ReturnValue"] == 0, (om, gs)
        got[name + " specific"] = gs["Row"][TAG]
        if name == "big":
            [os_] = c.execute(EC.RopBuffer().open_stream(1, 2, TAG, 0), FL)
            assert os_["ReturnValue"] == 0, os_
            got["size"] = os_["StreamSize"]
            data = b""
            while True:
                [rd] = c.execute(EC.RopBuffer().read_stream(2, 0x1000), FL)
                assert rd["ReturnValue"] == 0, rd
                if not rd["Data"]:
                    break
                data += rd["Data"]
            got["stream"] = data
            sk, rd = c.execute(EC.RopBuffer().seek_stream(2, 0, 8).read_stream(2, 8), FL)
            got["seek"] = (sk["ReturnValue"], sk["NewPosition"], rd["Data"])
            sk, rd = c.execute(EC.RopBuffer().seek_stream(2, 2, -40).read_stream(2, 0x100), FL)
            got["tail"] = (sk["ReturnValue"], sk["NewPosition"], rd["Data"])
            c.execute(EC.RopBuffer().release(2), FL)
        c.execute(EC.RopBuffer().release(1), FL)
    return got


def check(got, p):
    small, big = got["small"]["props"], got["big"]["props"]
    assert LS.PidTagBody not in small and LS.PidTagHtml not in small
    check_mela(small[TAG], SMALL)        # inline in RopGetPropertiesAll
    check_mela(got["small specific"], SMALL)
    check_mela(big[TAG], BIG)            # ecNotEnoughMemory, then the stream
    assert got["big specific"] == ("error", EC_NOT_ENOUGH_MEMORY)
    mela = got["stream"]
    check_mela(mela, BIG)
    assert got["size"] == len(mela) > 0x2000
    assert got["seek"] == (0, 8, b"MELA\x00\x00\x00\x00")
    assert got["tail"] == (0, len(mela) - 40, mela[-40:])
    log = p.log()
    assert "cannot write the defanged RTF body back" not in log
    assert p.alive()


def direct_rtf(c, fid, mid):
    return CC.download(c, fid, mid, flags=0)["props"][TAG]


def test_online_rtf_rpc(make_proxy, dump_lab, tmp_path):  # noqa: F811
    tag = "rpc %d" % os.getpid()
    dce, c, fids = connect(dump_lab.ports["emsmdb"])
    mids = store(c, fids[4], tag)
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra=opts(tmp_path))
    pdce, pc, pfids = connect(p.rpc_port)
    got = read_all(pc, pfids[4], mids, tag)
    pc.disconnect()
    pdce.disconnect()
    check(got, p)
    # the store keeps the original LZFu RTF
    for name, raw in (("small", SMALL), ("big", BIG)):
        v = direct_rtf(c, fids[4], mids["rtf %s %s" % (name, tag)])
        assert v[8:12] == b"LZFu" and rtfcp.decompress(v) == raw
    c.disconnect()
    dce.disconnect()
    assert "RopReadStream" in dump_lab.log()  # the proxy read the long one as a stream


def test_online_rtf_mapihttp(make_proxy, env, tmp_path):
    import mapihttp_client as MH
    tag = "mh %d" % os.getpid()
    p = start_front(make_proxy, env, opts(tmp_path))
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fid = logon["FolderIds"][4]
    mids = store(c, fid, tag)   # an upload: phish looks at downloads only
    got = read_all(c, fid, mids, tag)
    assert c.disconnect()["ErrorCode"] == 0
    check(got, p)
