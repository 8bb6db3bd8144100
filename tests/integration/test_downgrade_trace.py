"""The downgrade and trace built-in modules, with the lab's EMSMDB client
(an independent Python implementation) and Impacket's NSPI client."""
import json
import os

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.dcerpc.v5.rpcrt import DCERPCException

import emsmdb_client as EC
from rpcutil import dce_connect
from test_relay import TAGS, USER_DN

ALICE = USER_DN


def test_downgrade_client_falls_back_to_ecdoconnect(make_proxy, lab):
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:modules": "downgrade"})
    dce = EC.connect("127.0.0.1", p.rpc_port)
    c = EC.EmsmdbClient(dce, use_ext2=False)
    with pytest.raises(DCERPCException) as e:  # as Outlook: EcDoConnectEx first
        c.connect_ex(ALICE)
    assert "nca_s_op_rng_error" in str(e.value)
    r = c.connect(ALICE)  # then the Exchange 2000 call on the same association
    assert r["ErrorCode"] == 0
    assert (r["rgwServerVersion0"], r["rgwServerVersion1"], r["rgwServerVersion2"]) == \
        (0x0006, 0x1141, 0x0005)
    [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))  # EcDoRpc, XOR only
    assert logon["ReturnValue"] == 0 and len(logon["FolderIds"]) == 13
    assert c.disconnect()["ErrorCode"] == 0
    dce.disconnect()
    assert "EcDoConnectEx" not in lab.log()  # never reached the server
    assert "EcDoRpc(2)" in p.log()


def test_downgrade_version_option(make_proxy, lab):
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:modules": "downgrade",
                          "downgrade:server version": "6.4417.7"})
    dce = EC.connect("127.0.0.1", p.rpc_port)
    c = EC.EmsmdbClient(dce, use_ext2=False)
    r = c.connect(ALICE)
    assert (r["rgwServerVersion0"], r["rgwServerVersion1"], r["rgwServerVersion2"]) == (6, 4417, 7)
    c.disconnect()
    dce.disconnect()


def test_trace_writes_json_lines(make_proxy, lab, tmp_path):
    out = tmp_path / "trace.jsonl"
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:ndrdump": "yes", "trace:file": str(out),
                          "trace:interfaces": "exchange_nsp exchange_ds_rfr",
                          "trace:operations": "NspiQueryRows, RfrGetNewDSA, 9"})
    dce = dce_connect(p.host, p.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    rows = nspi.hNspiQueryRows(dce, h, Count=50, pPropTags=TAGS)
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()
    dce = dce_connect(p.host, p.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    dsa = oxabref.hRfrGetNewDSA(dce, ALICE)
    dce.disconnect()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    ops = [(x["op"], x["dir"]) for x in lines]
    assert ops == [("NspiQueryRows", "request"), ("NspiQueryRows", "response"),
                   ("RfrGetNewDSA", "request"), ("RfrGetNewDSA", "response")], ops
    # what the trace says matches what Impacket itself decoded
    resp = lines[1]["out"]
    assert resp["ppRows"]["cRows"] == rows["ppRows"]["cRows"]
    names = {r.get(0x3001001F) for r in nspi.simplifyPropertyRowSet(rows["ppRows"])}
    text = json.dumps(resp)
    assert all(n.rstrip("\0") in text for n in names if n)
    assert lines[3]["out"]["ppszServer"] == dsa["ppszServer"].rstrip("\0")
    assert lines[2]["in"]["pUserDN"] == ALICE


def test_trace_shows_rops(make_proxy, lab, tmp_path):
    """EcDoRpcExt2's ROP buffers, compressed and XOR-ed by the lab's client,
    appear decoded and named in the trace."""
    from test_lab import online_session
    out = tmp_path / "trace.jsonl"
    p = make_proxy(upstream_epm_port=lab.epm_port,
                   extra={"dcerpc_mapiproxy:modules": "trace", "trace:file": str(out),
                          "trace:interfaces": "exchange_emsmdb",
                          "trace:operations": "EcDoRpcExt2"})
    online_session({"emsmdb": p.rpc_port}, compress=True, xor=True)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines and all(x["op"] == "EcDoRpcExt2" for x in lines)
    names = json.dumps([x.get("rops") for x in lines])
    for rop in ("RopLogon", "RopOpenFolder", "RopGetHierarchyTable", "RopCreateMessage",
                "RopWriteStream", "RopSubmitMessage", "RopReadStream"):
        assert rop in names, rop
    # the session's deliberate unknown ROP 0x99 (request and response) is the
    # only buffer left undecoded (and relayed untouched)
    assert names.count('"undecodable"') == 2 and names.count("unknown RopId") == 2, names
    # server objects: what each ROP works on, tracked across calls
    rops = [(x["dir"], r) for x in lines for r in (x.get("rops") or []) if "Name" in r]
    opened = [r["NewObject"] for d, r in rops if r["Name"] == "RopOpenStream" and d == "response"]
    assert opened and all(o["type"] == "stream" for o in opened), opened
    writes = [r["Object"] for d, r in rops if r["Name"] == "RopWriteStream" and d == "request"]
    assert {o["property_tag"] for o in writes} == {"0x1000001f", "0x37010102"}, writes
    # ReadStream alone in its call: the stream was opened by an earlier call
    alone = [x for x in lines if x["dir"] == "request" and len(x.get("rops") or []) == 1 and
             x["rops"][0].get("Name") == "RopReadStream"]
    assert alone
    obj = alone[0]["rops"][0]["Object"]
    assert obj["type"] == "stream" and obj["property_tag"] == "0x37010102", obj
    assert obj.get("attachment_id", 0) == 0 and int(obj["message_id"], 16) != 0, obj
    tables = [r["NewObject"] for d, r in rops if r["Name"] == "RopGetContentsTable" and
              d == "response"]
    assert tables and tables[0]["table"] == "RopGetContentsTable", tables
