"""MAPI over HTTP through the module chain (src/transport/mapihttp/mhcall.c wired into
the HTTPS front): the lab's MAPI/HTTP client (python3-requests,
requests-ntlm) through the proxy to the lab's MAPI/HTTP server, with the
same modules as on the RPC transport: rewrite (non-transparent mode) on the
NSPI answers, trace, and a ROP module that changes WriteStream and
ReadStream data both ways.  Bodies are decoded into their RPC twins and
re-encoded only when a module changed them."""
import json
import os
import sys

import pytest

from conftest import ROOT
from test_http_front_lab import ALICE, PASSWORDS, env, ntlm  # noqa: F401 (fixture)
from test_http_front_lab import lab_env
from test_http_front_lab import start_front as front_with

sys.path.insert(0, os.path.join(ROOT, "tests", "lab"))
import emsmdb_client as EC  # noqa: E402
import mapihttp_client as MH  # noqa: E402
from test_lab import rop_session  # noqa: E402

STR_COLS = [0x3001001F, 0x3003001F, 0x3A00001F, 0x39FE001F, 0x8170101F, 0x8006001F]
SERVER_DN = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)" \
    "/cn=Configuration/cn=Servers/cn=EXLAB01"


def nspi_answers(base, ca):
    """NSPI over MAPI/HTTP: the answers and the raw response bodies."""
    ab = MH.NspiHttp(base, auth=ntlm(), verify=ca)
    out = [ab.bind(), ab.get_special_table(flags=0x4), ab.query_rows(100, STR_COLS)]
    mids = ab.dn_to_mid([SERVER_DN, ALICE])["MinimalIds"]
    out.append({"mids": mids})
    out.append(ab.get_props(mids[1], STR_COLS))
    out.append(ab.resolve_names(["alice"], STR_COLS))
    out.append(ab.unbind())
    bodies = [d["response"].body for d in out if isinstance(d, dict) and "response" in d]
    for d in out:
        d.pop("response", None)
        d.pop("AuxiliaryBuffer", None)
    return out, bodies


def test_nspi_over_mapihttp_rewritten(make_proxy, env):  # noqa: F811
    """Non-transparent mode: the rewrite module, written for NSPI over RPC,
    removes the upstream's name from every NSPI answer over MAPI/HTTP; the
    rows are otherwise the lab's."""
    direct, dbodies = nspi_answers(f"https://localhost:{env['mapihttp']}", env["ca"])
    assert any(b"exlab01" in b.lower() or "exlab01".encode("utf-16le") in b.lower()
               for b in dbodies)
    p = front_with(make_proxy, env, {"mapiproxy:transparent": "no",
                                     "netbios name": "MAPIPROXY", "realm": "proxy.example"})
    proxied, bodies = nspi_answers(p.base, env["ca"])
    for b in bodies:
        low = b.lower()
        assert b"exlab01" not in low and "exlab01".encode("utf-16-le") not in low, b
    # the same rows, names aside
    rows_d, rows_p = direct[2]["Rows"], proxied[2]["Rows"]
    assert [r[0x3A00001F] for r in rows_d] == [r[0x3A00001F] for r in rows_p]
    assert direct[3] == proxied[3]                                 # DNToMId: same MIds
    log = p.log()
    assert "type=QueryRows" in log and "type=GetProps" in log


def test_online_session_over_mapihttp_through_rop_modules(make_proxy, env, tmp_path):  # noqa
    """The online ROP session over MAPI/HTTP: Execute bodies decoded into
    EcDoRpcExt2, their ROPs through a module that turns 'H' into 'J' in
    WriteStream and back in ReadStream (the session asserts it reads what
    it wrote), and trace showing the ROPs with their server objects."""
    trace = tmp_path / "trace.jsonl"
    p = front_with(make_proxy, env, {
        "dcerpc_mapiproxy:modules": "trace, mpm_roptest",
        "trace:file": str(trace), "mpm_roptest:swap": "yes",
        "mpm_roptest:log": str(tmp_path / "rops.log")})
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    r = ems.connect(ALICE)
    assert r["ErrorCode"] == 0 and r["DisplayName"] == "Alice Anders"
    subject = rop_session(ems)
    assert ems.disconnect()["ErrorCode"] == 0
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    ops = {x["op"] for x in lines}
    assert {"EcDoConnectEx", "EcDoRpcExt2", "EcDoDisconnect"} <= ops, ops
    rops = [r for x in lines for r in (x.get("rops") or []) if "Name" in r]
    reads = [r for r in rops if r["Name"] == "RopReadStream" and "Object" in r]
    assert reads and all(r["Object"]["type"] == "stream" for r in reads)
    seen = (tmp_path / "rops.log").read_text()
    assert "req RopWriteStream stream" in seen and "rsp RopReadStream stream" in seen
    # the upstream stored what the module wrote ("Jello"): read it directly
    direct = MH.EmsmdbHttp(f"https://localhost:{env['mapihttp']}", auth=ntlm(),
                           verify=env["ca"])
    assert direct.connect(ALICE)["ErrorCode"] == 0
    [logon] = direct.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]
    mcols = [0x674A0014, 0x0037001F]                      # PidTagMid, PidTagSubject
    res = direct.execute(EC.RopBuffer().open_folder(0, 1, inbox).get_contents_table(1, 2)
                         .set_columns(2, mcols).query_rows(2, 200, mcols))
    [mid] = [r[0x674A0014] for r in res[3]["Rows"] if r[0x0037001F] == subject]
    res = direct.execute(EC.RopBuffer().open_message(0, 3, inbox, mid)
                         .open_stream(3, 4, 0x1000001F, 0).read_stream(4, 0xBABE + 0x10000))
    body = res[2]["Data"].decode("utf-16le")
    assert body.startswith("Jello from the lab") and "Hello" not in body
    direct.disconnect()


def test_module_answers_over_mapihttp(make_proxy, env, tmp_path):  # noqa: F811
    """A ROP answered by a module over MAPI/HTTP: in place, with the
    upstream's answers for the rest; a buffer of only answered ROPs never
    reaches the upstream, and the client still gets a well-formed
    PROCESSING/DONE stream."""
    p = front_with(make_proxy, env, {"dcerpc_mapiproxy:modules": "mpm_roptest",
                                     "mpm_roptest:answer": "0x27:0x8004010F"})
    ems = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert ems.connect(ALICE)["ErrorCode"] == 0
    [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
    res = ems.execute(EC.RopBuffer().get_receive_folder(0, "IPM.Note")
                      .open_folder(0, 1, logon["FolderIds"][4])
                      .get_properties_specific(1, [0x3001001F]))
    assert [x["ReturnValue"] for x in res] == [0x8004010F, 0, 0]
    assert res[2]["Row"][0x3001001F] == "Inbox"
    [only] = ems.execute(EC.RopBuffer().get_receive_folder(0, "IPM"))
    assert only["ReturnValue"] == 0x8004010F
    assert ems.disconnect()["ErrorCode"] == 0


def test_mailbox_and_address_book_urls_name_the_proxy(make_proxy, env):  # noqa: F811
    """GetMailboxUrl and GetAddressBookUrl answers carry server URLs: the
    front rewrites them to the proxy's public name, as it does Autodiscover
    (no module needed)."""
    direct = MH.NspiHttp(f"https://localhost:{env['mapihttp']}", auth=ntlm(), verify=env["ca"])
    assert direct.bind()["ErrorCode"] == 0
    d1 = direct.get_mailbox_url(SERVER_DN)["ServerUrl"]
    d2 = direct.get_address_book_url(ALICE)["ServerUrl"]
    assert "exlab01.lab.example" in d1.lower() and "exlab01.lab.example" in d2.lower()
    p = front_with(make_proxy, env, {})
    ab = MH.NspiHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert ab.bind()["ErrorCode"] == 0
    u1 = ab.get_mailbox_url(SERVER_DN)
    u2 = ab.get_address_book_url(ALICE)
    assert u1["ErrorCode"] == 0 and u2["ErrorCode"] == 0
    assert u1["ServerUrl"].startswith("https://mail.proxy.test/mapi/emsmdb/"), u1["ServerUrl"]
    assert u2["ServerUrl"].startswith("https://mail.proxy.test/mapi/nspi/"), u2["ServerUrl"]
    assert u1["ServerUrl"].split("/mapi/")[1] == d1.split("/mapi/")[1]
    # the host is the proxy's; the query (the upstream's MailboxId) is kept
    assert "exlab01" not in (u1["ServerUrl"].split("?")[0] + u2["ServerUrl"]).lower()


@pytest.fixture(scope="module")
def gromox_env(tmp_path_factory):
    """The lab answering as gromox does: X-ResponseCode in the HTTP head only,
    not after DONE."""
    yield from lab_env(tmp_path_factory, {"LAB_MH_CODE_IN_HEAD_ONLY": "1"})


@pytest.mark.parametrize("form", ["exchange", "gromox"])
def test_rebuilt_answer_keeps_the_upstreams_done_headers(make_proxy, env, gromox_env,  # noqa
                                                         form):
    """The module path rebuilds every Execute answer (PROCESSING/DONE, the
    headers after DONE, the body): X-ResponseCode appears after DONE only if
    the upstream put it there; X-ElapsedTime and X-StartTime are kept."""
    e = env if form == "exchange" else gromox_env
    p = front_with(make_proxy, e, {"dcerpc_mapiproxy:modules": "mpm_roptest",
                                   "mpm_roptest:touch": "yes"})
    for base in (f"https://localhost:{e['mapihttp']}", p.base):
        ems = MH.EmsmdbHttp(base, auth=ntlm(), verify=e["ca"])
        assert ems.connect(ALICE)["ErrorCode"] == 0
        [logon] = ems.execute(EC.RopBuffer().logon(0, ALICE))
        assert logon["ReturnValue"] == 0
        done = ems.last_execute["response"].done
        assert ("X-ResponseCode" in done) == (form == "exchange"), (base, done)
        assert "X-ElapsedTime" in done and "X-StartTime" in done
        assert ems.last_execute["response"].code == 0
        assert ems.disconnect()["ErrorCode"] == 0
    assert "type=Execute" in p.log()
