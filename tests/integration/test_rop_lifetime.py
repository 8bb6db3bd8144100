"""Server object lifetime in the ROP stage (issue 12, item 1).

The patterns Outlook uses all day -- open, read, release, in one buffer and
across buffers -- through the proxy with a read-only ROP module (trace,
which prints every ROP with its object at dispatch and push) and a
ROP-changing one (mpm_roptest with touch: every ROP re-encoded from its
fields, and every ROP's object read in both hooks), under ASan
(build/mapiproxy-asan: the Proxy fixture fails the test on any sanitizer
report or a non-zero exit).  Both transports: DCE/RPC with Impacket's
transport and the lab's client, MAPI over HTTP through the HTTPS front with
python3-requests.

Patterns:
  * release of a handle opened by an earlier call;
  * one buffer that opens a child of an object and releases that object;
  * an object opened and released in the same buffer: gone from the
    proxy's table afterwards (a later ROP on the stale handle works on an
    "unknown" object, and the table does not grow);
  * the session's EcDoDisconnect from another connection while a call of
    the same session is held PENDING by a module (before and after the
    upstream)."""
import json
import re
import socket
import struct
import threading
import time

import pytest
from impacket.dcerpc.v5.rpcrt import MSRPCBindAck
from impacket.uuid import uuidtup_to_bin

import emsmdb_client as EC
import emsmdb_ndr as N
from rpcutil import bind_pdu, read_pdu, request_pdu
from test_lab import ALICE
from test_http_front_lab import env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import start_front

NDR20 = ("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0")
EMSMDB = ("a4f1db00-ca47-1067-b31f-00dd010662da", "0.81")
PidTagDisplayName = 0x3001001F
PidTagFolderId = 0x67480014
ecNullObject = 0x4B9

MODULES = {
    "trace": lambda tmp: {"dcerpc_mapiproxy:modules": "trace",
                          "trace:file": str(tmp / "trace.jsonl")},
    "roptest": lambda tmp: {"dcerpc_mapiproxy:modules": "mpm_roptest",
                            "mpm_roptest:touch": "yes",
                            "mpm_roptest:log": str(tmp / "rops.log")},
    "both": lambda tmp: {"dcerpc_mapiproxy:modules": "trace, mpm_roptest",
                         "trace:file": str(tmp / "trace.jsonl"),
                         "mpm_roptest:touch": "yes",
                         "mpm_roptest:log": str(tmp / "rops.log")},
}


class RpcTransport:
    """The lab's EMSMDB client over DCE/RPC (Impacket's transport)."""

    def __init__(self, port):
        from impacket.dcerpc.v5 import transport
        t = transport.DCERPCTransportFactory("ncacn_ip_tcp:127.0.0.1[%d]" % port)
        t.set_connect_timeout(60)  # also the read timeout: a dead proxy fails the test
        self.port = port
        self.dce = t.get_dce_rpc()
        self.dce.connect()
        ack = self.dce.bind(N.MSRPC_UUID_EMSMDB)
        self.group = MSRPCBindAck(ack.getData())["assoc_group"]
        self.c = EC.EmsmdbClient(self.dce)
        assert self.c.connect_ex(ALICE)["ErrorCode"] == 0

    def execute(self, rops):
        return self.c.execute(rops)

    def close(self):
        assert self.c.disconnect()["ErrorCode"] == 0
        self.dce.disconnect()

    def disconnect_elsewhere(self):
        """EcDoDisconnect of this session's context handle on a second
        connection of the same association group (as Outlook may)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(bind_pdu([(uuidtup_to_bin(EMSMDB), [uuidtup_to_bin(NDR20)])],
                           assoc_group=self.group))
        ack = read_pdu(s)
        assert ack[0] == 12 and struct.unpack_from("<I", ack[3], 20)[0] == self.group
        s.sendall(request_pdu(2, 1, self.c.cxh))
        r = read_pdu(s, timeout=30)
        s.close()
        return r[0]

    def abandon(self):
        self.dce.disconnect()


class HttpTransport:
    """The lab's MAPI/HTTP client (python3-requests) through the front."""

    def __init__(self, base, ca):
        import mapihttp_client as MH
        self.c = MH.EmsmdbHttp(base, auth=ntlm(), verify=ca)
        assert self.c.connect(ALICE)["ErrorCode"] == 0

    def execute(self, rops):
        return self.c.execute(rops)

    def close(self):
        assert self.c.disconnect()["ErrorCode"] == 0

    def disconnect_elsewhere(self):
        """Disconnect with this session's cookies on another HTTP connection."""
        import mapihttp_client as MH
        other = MH.EmsmdbHttp(self.c.base, auth=ntlm(), verify=self.c.verify)
        other.http.cookies.update(self.c.http.cookies)
        return other.disconnect(check=False)

    def abandon(self):
        self.c.http.close()


def proxy_before(request, make_proxy, kind, opts, rpc_lab="lab", mh_env="env"):
    """mapiproxy with opts before the RPC lab (kind "rpc", the fixture named
    rpc_lab) or the MAPI/HTTP lab's front (the fixture named mh_env), and a
    logged-on client session through it: (proxy, transport, lab or env)."""
    if kind == "rpc":
        lab = request.getfixturevalue(rpc_lab)
        p = make_proxy(upstream_epm_port=lab.epm_port, extra=opts)
        return p, RpcTransport(p.rpc_port), lab
    e = request.getfixturevalue(mh_env)
    p = start_front(make_proxy, e, opts)
    return p, HttpTransport(p.base, e["ca"]), e


@pytest.fixture(params=["rpc", "mapihttp"])
def session_factory(request, make_proxy, tmp_path):
    """f(module set) -> (proxy, transport): a proxy with those modules and a
    connected, logged-on EMSMDB session through it."""
    def make(mods, **more):
        extra = dict(MODULES[mods](tmp_path), **more)
        p, t, _ = proxy_before(request, make_proxy, request.param, extra)
        [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
        assert logon["ReturnValue"] == 0
        t.fids = logon["FolderIds"]
        return p, t
    make.transport = request.param
    return make


def trace_rops(tmp_path, response):
    """The ROPs of every traced EcDoRpcExt2, per call, in order."""
    path = tmp_path / "trace.jsonl"
    out = []
    for line in path.read_text().splitlines():
        x = json.loads(line)
        if x.get("op") != "EcDoRpcExt2" or (x["dir"] == "response") != response:
            continue
        out.append([r for r in x.get("rops") or [] if "Name" in r])
    return out


def objects_forgotten(p):
    """The server object counts the proxy logged when contexts ended."""
    return [int(x) for x in re.findall(r"forgets (\d+) server objects", p.log())]


def check_modules_saw(tmp_path, mods):
    if mods in ("roptest", "both"):
        seen = (tmp_path / "rops.log").read_text().splitlines()
        assert "req RopRelease folder" in seen, seen[-20:]


@pytest.mark.parametrize("mods", ["trace", "roptest", "both"])
def test_release_of_an_earlier_handle(session_factory, tmp_path, mods):
    """RopRelease of a folder opened by an earlier call: the modules see the
    folder with the release (dispatch and push included), and a later ROP
    on the stale handle works on an unknown object."""
    p, t = session_factory(mods)
    inbox = t.fids[4]
    [of] = t.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    assert of["ReturnValue"] == 0
    [gp] = t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName])
                     .release(1))
    assert gp["Row"][PidTagDisplayName] == "Inbox"
    [stale] = t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName]))
    assert stale["ReturnValue"] == ecNullObject
    t.close()
    check_modules_saw(tmp_path, mods)
    if mods != "roptest":
        req = trace_rops(tmp_path, False)
        rel = [r for c in req for r in c if r["Name"] == "RopRelease"]
        assert rel and rel[-1]["Object"]["type"] == "folder"
        assert rel[-1]["Object"]["folder_id"] == "0x%016x" % inbox
        last = [r for r in req[-1] if r["Name"] == "RopGetPropertiesSpecific"]
        assert last and last[0]["Object"]["type"] == "unknown"
    assert objects_forgotten(p) == [1]          # the logon only
    assert not [x for x in p.log().splitlines() if "does not decode" in x]


@pytest.mark.parametrize("mods", ["trace", "roptest", "both"])
def test_open_child_and_release_parent_in_one_buffer(session_factory, tmp_path, mods):
    """One buffer opens a hierarchy table and a subfolder of a folder and
    releases that folder; the children keep the parent's identity and work
    in the next buffers."""
    p, t = session_factory(mods)
    root = t.fids[3]
    [of] = t.execute(EC.RopBuffer().open_folder(0, 1, root))
    assert of["ReturnValue"] == 0
    res = t.execute(EC.RopBuffer().get_hierarchy_table(1, 2).open_folder(1, 3, t.fids[4])
                    .release(1))
    assert [x["ReturnValue"] for x in res] == [0, 0]
    cols = [PidTagFolderId, PidTagDisplayName]
    res = t.execute(EC.RopBuffer().set_columns(2, cols).query_rows(2, 50, cols)
                    .get_properties_specific(3, [PidTagDisplayName]).release(2).release(3))
    assert [x["ReturnValue"] for x in res] == [0, 0, 0]
    assert "Inbox" in [r[PidTagDisplayName] for r in res[1]["Rows"]]
    assert res[2]["Row"][PidTagDisplayName] == "Inbox"
    t.close()
    check_modules_saw(tmp_path, mods)
    if mods != "roptest":
        rsp = trace_rops(tmp_path, True)
        tbl = [r for c in rsp for r in c if r["Name"] == "RopGetHierarchyTable"]
        assert tbl and tbl[-1]["NewObject"]["type"] == "table"
        assert tbl[-1]["NewObject"]["folder_id"] == "0x%016x" % root
        qr = [r for c in rsp for r in c if r["Name"] == "RopQueryRows"]
        assert qr and qr[-1]["Object"]["type"] == "table" and "RowData" in qr[-1]
    assert objects_forgotten(p) == [1]


@pytest.mark.parametrize("mods", ["trace", "roptest"])
def test_open_and_release_in_one_buffer_never_lingers(session_factory, tmp_path, mods):
    """Outlook's open, read, release in one buffer, many times: the proxy's
    table keeps nothing of it, and a ROP on the released handle value (still
    in the client's handle table) is on an unknown object, as the server
    says (ecNullObject)."""
    p, t = session_factory(mods)
    cols = [PidTagFolderId, PidTagDisplayName]
    for i in range(40):
        res = t.execute(EC.RopBuffer().open_folder(0, 1, t.fids[4]).get_hierarchy_table(1, 2)
                        .set_columns(2, cols).query_rows(2, 50, cols)
                        .get_properties_specific(1, [PidTagDisplayName])
                        .release(2).release(1))
        assert [x["ReturnValue"] for x in res] == [0, 0, 0, 0, 0], res
    [stale] = t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName]))
    assert stale["ReturnValue"] == ecNullObject
    t.close()
    if mods == "trace":
        req = trace_rops(tmp_path, False)
        assert [r["Object"]["type"] for r in req[-1]] == ["unknown"]
        rels = [r for c in req for r in c if r["Name"] == "RopRelease"]
        assert len(rels) == 80 and all(r["Object"]["handle"] == "0xffffffff" for r in rels)
    else:
        seen = (tmp_path / "rops.log").read_text().splitlines()
        assert seen[-1] == "rsp RopGetPropertiesSpecific unknown", seen[-3:]
    assert objects_forgotten(p) == [1]


@pytest.mark.parametrize("held", ["request", "response"])
def test_disconnect_from_another_connection_while_a_call_is_held(session_factory, tmp_path,
                                                                 held):
    """A module holds an EMSMDB call PENDING (in rop_request: before the
    upstream; in rop_response: after it) while another connection of the
    same session disconnects it (EcDoDisconnect on a second connection of
    the association group; MAPI/HTTP: Disconnect with the session's cookies
    on another connection), which ends the context's object table.  The held
    call still reads its objects when it resumes, its releases and new
    objects land in a table nobody else sees any more, and that table goes
    with the call."""
    p, t = session_factory("roptest", **{"mpm_roptest:hold " + held: "1000"})
    [of] = t.execute(EC.RopBuffer().open_folder(0, 1, t.fids[3]))
    assert of["ReturnValue"] == 0
    out = {}

    def run():
        try:
            out["res"] = t.execute(EC.RopBuffer().get_properties_specific(1, [PidTagDisplayName])
                                   .get_hierarchy_table(1, 2).release(1))
        except Exception as e:  # the upstream may refuse the dead session: not the point
            out["err"] = e
    th = threading.Thread(target=run)
    th.start()
    time.sleep(0.6 if held == "response" else 0.3)
    t.disconnect_elsewhere()
    th.join(60)
    assert not th.is_alive()
    assert p.alive()
    seen = (tmp_path / "rops.log").read_text().splitlines()
    # logged when the hold ended: the objects were read after the disconnect
    if held == "request":
        assert seen[-3:] == ["req RopGetPropertiesSpecific folder",
                             "req RopGetHierarchyTable folder", "req RopRelease folder"], seen
    elif "res" in out:
        assert seen[-2:] == ["rsp RopGetPropertiesSpecific folder",
                             "rsp RopGetHierarchyTable folder"], seen
    assert objects_forgotten(p) == [2]          # the logon and the folder
    t.abandon()
