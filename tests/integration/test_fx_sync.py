"""Cached-mode sync through the proxy, over RPC and over MAPI/HTTP.

The lab (tests/lab/lab_ics.py, FastTransfer streams written by
tests/lab/lab_fxwriter.py from MS-OXCFXICS) serves an ICS download of the
Inbox and takes a FastTransfer upload (CopyMessages + PutBuffer) and an ICS
upload (ImportMessageChange).  Checks:
  - the FastTransfer bytes the client receives through the proxy equal, byte
    for byte, the stream the lab wrote (LAB_FX_DUMP), in the buffer sizes
    the client asked for;
  - the C codec (build/fxdump, src/fx) decodes the client's buffers, with the
    wire's splits, and re-encodes them exactly; its subjects and message
    changes agree with the Python reader's.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))

import emsmdb_client as EC  # noqa: E402
import ics_client as IC  # noqa: E402
from conftest import Lab  # noqa: E402
from test_lab import ALICE  # noqa: E402
from test_rop_lifetime import RpcTransport, HttpTransport  # noqa: E402
from test_http_front_lab import lab_env, start_front  # noqa: E402

FXDUMP = os.path.join(ROOT, "build", "fxdump")
SUBJECT = 0x0037001F
BIG = bytes(range(251)) * 800  # 200 KB: many 1000-byte GetBuffers, 7000-byte PutBuffers


@pytest.fixture(scope="module")
def fxdump():
    r = subprocess.run(["make", "-s", "build/fxdump"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return FXDUMP


@pytest.fixture(scope="module")
def mh_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fxdump-mh")
    # no PENDING delays: every Execute of the sync would wait for them
    for e in lab_env(tmp_path_factory, {"LAB_FX_DUMP": str(d)}, "fxmh", ()):
        e["dump"] = d
        yield e


@pytest.fixture(params=["rpc", "mapihttp"])
def session(request, make_proxy, tmp_path):
    # the trace module prints every ROP as the proxy's ROP codec (src/rop)
    # decoded it
    trace = {"dcerpc_mapiproxy:modules": "trace", "trace:file": str(tmp_path / "trace.jsonl")}
    if request.param == "rpc":
        d = tmp_path / "fxdump"
        d.mkdir()
        lab = Lab(tmp_path, env={"LAB_FX_DUMP": str(d)})
        try:
            p = make_proxy(upstream_epm_port=lab.epm_port, extra=trace)
            t = RpcTransport(p.rpc_port)
            t.dump = d
            yield p, t
        finally:
            lab.stop()
    else:
        e = request.getfixturevalue("mh_env")
        p = start_front(make_proxy, e, trace)
        t = HttpTransport(p.base, e["ca"])
        t.dump = e["dump"]
        yield p, t


def decode(tool, tmp_path, chunks):
    names = []
    for i, c in enumerate(chunks):
        f = tmp_path / ("chunk%05d" % i)
        f.write_bytes(c)
        names.append(str(f))
    r = subprocess.run([tool] + names, capture_output=True, text=True, timeout=300)
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    res = json.loads(r.stdout)
    assert r.returncode == 0, res.get("error")
    return res


def lab_streams(d):
    return [p.read_bytes() for p in sorted(d.iterdir())]


def test_cached_mode_sync_through_proxy(session, fxdump, tmp_path):
    p, t = session
    c = t.c
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
    assert logon["ReturnValue"] == 0
    inbox, sent = logon["FolderIds"][4], logon["FolderIds"][6]

    # the Inbox as the lab has it (with lab_store's content: a 1 MB + 64 KB
    # attachment among others, lab_store.big_size), in 0x7F00-byte buffers
    inb = IC.sync_folder(c, 0, inbox, buffer_size=0x7F00)
    assert inb["stream"] in lab_streams(t.dump)
    d = decode(fxdump, tmp_path, inb["chunks"])
    assert d["exact"] and d["bytes"] == len(inb["stream"])
    assert d["changes"] == len(inb["messages"]) >= 1
    assert "Welcome to the lab" in d["subjects"]

    # Sent Items (empty), then uploads into it, then syncs in 1000-byte buffers
    first = IC.sync_folder(c, 0, sent, buffer_size=1000)
    assert first["messages"] == [] and first["stream"] in lab_streams(t.dump)

    # uploads through the proxy: FastTransfer (PutBuffer in 7000-byte pieces)
    # and ICS (ImportMessageChange + SetProperties + SaveChangesMessage)
    msg = {"props": {SUBJECT: "through the proxy", 0x001A001F: "IPM.Note",
                     0x1000001F: "plain body"},
           "recipients": [{"props": {0x3001001F: "Bob", 0x0C150003: 1}}],
           "attachments": [{"props": {0x37050003: 1, 0x3707001F: "big.bin", 0x37010102: BIG}},
                           {"props": {0x37050003: 5},
                            "embedded": {"props": {SUBJECT: "embedded one"}}}]}
    IC.fx_upload(c, 0, sent, [msg], chunk=7000)
    IC.ics_upload(c, 0, sent, {"props": {SUBJECT: "ics through the proxy"}},
                  bytes(22), bytes(16) + b"\0\0\0\0\0\x09", 0x01D9000000000000)

    second = IC.sync_folder(c, 0, sent, state=first["state"], buffer_size=1000)
    assert all(len(x) <= 1000 for x in second["chunks"])
    assert second["stream"] in lab_streams(t.dump)
    got = {m["props"].get(SUBJECT): m for m in second["messages"]}
    assert set(got) == {"through the proxy", "ics through the proxy"}
    up = got["through the proxy"]
    assert up["attachments"][0]["props"][0x37010102] == BIG
    assert up["attachments"][1]["embedded"]["props"][SUBJECT] == "embedded one"
    assert up["recipients"] == msg["recipients"]
    d = decode(fxdump, tmp_path, second["chunks"])
    assert d["exact"] and d["changes"] == 2 and d["max_depth"] == 2
    assert sorted(d["subjects"]) == ["embedded one", "ics through the proxy",
                                     "through the proxy"]
    big = [a for a in d["atoms"] if a.get("tag") == "0x37010102"]
    assert [a["len"] for a in big] == [len(BIG)]

    # RopFastTransferSourceCopyTo of the uploaded message
    mid = up["header"][0x674A0014]
    stream, chunks = IC.fx_download_message(c, 0, sent, mid, buffer_size=0x8000 + 100)
    assert stream in lab_streams(t.dump)
    d = decode(fxdump, tmp_path, chunks)
    assert d["exact"] and d["max_depth"] == 2  # attachment > embedded message

    t.close()
    assert p.alive()
    check_trace(tmp_path / "trace.jsonl",
                inb["chunks"] + first["chunks"] + second["chunks"] + chunks)


NEW_ROPS = {"RopSynchronizationConfigure", "RopSynchronizationUploadStateStreamBegin",
            "RopSynchronizationUploadStateStreamContinue",
            "RopSynchronizationUploadStateStreamEnd", "RopFastTransferSourceGetBuffer",
            "RopFastTransferDestinationConfigure", "RopFastTransferDestinationPutBuffer",
            "RopSynchronizationOpenCollector", "RopSynchronizationImportMessageChange",
            "RopFastTransferSourceCopyTo"}


def check_trace(path, chunks):
    """The proxy's ROP codec decoded every request and response of the sync
    (none undecodable), named the ICS / FastTransfer ROPs, and read each
    GetBuffer's TransferBufferSize as the lab client did."""
    names, sizes = set(), []
    for line in path.read_text().splitlines():
        x = json.loads(line)
        if x.get("op") not in ("EcDoRpcExt2", "Execute"):
            continue
        assert "undecodable" not in line, line[:2000]
        for r in x.get("rops") or []:
            names.add(r.get("Name"))
            if x["dir"] == "response" and r.get("Name") == "RopFastTransferSourceGetBuffer":
                sizes.append(r["TransferBufferSize"])
    assert NEW_ROPS <= names, NEW_ROPS - names
    assert sizes == [len(c) for c in chunks]


def test_fxdump_unreadable_input(fxdump, tmp_path):  # noqa: F811
    """A file it cannot read after one it has fed: exit 2, said on stderr,
    and what it had allocated freed (the ASan build's leak check is quiet)."""
    first = tmp_path / "chunk0"
    first.write_bytes(open(os.path.join(ROOT, "tests/unit/data/fx/ics.fxs"), "rb").read())
    r = subprocess.run([fxdump, str(first), str(tmp_path / "missing")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "cannot read" in r.stderr and r.stdout == ""
    assert "Sanitizer" not in r.stderr and "leak" not in r.stderr, r.stderr
