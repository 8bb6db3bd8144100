"""A client that goes away while the proxy works on its call (the hardening
review of this session's new code, doc/internals/testing.md):
  - online prefetch: the client closes its socket right after the
    RopOpenMessage request, while the proxy reads the message ahead with
    side requests, and while a module's verdict is pending
    (mpm_msgtest:hold);
  - FastTransfer holding: the client closes in the middle of a held
    download stream (a GetBuffer in flight while the proxy holds the
    message and the module's verdict is pending).
Each time the proxy logs the closed connection, serves the next session
(checked against the verdict), and exits clean under ASan/LSan (the
Proxy fixture's check: no sanitizer report, exit status 0).  The client
is Impacket's DCE/RPC transport, the upstream the lab."""
import time

import emsmdb_client as EC
import ics_client as IC
from conftest import Lab
from test_lab import ALICE
from test_mime_dump import connect, folder_mids
from test_online_download import QUARTERLY, NOTICE_SUBJECT, through
from test_rop_lifetime import RpcTransport
from test_rop_modules import ext2_request

FL = 0x1  # EXT2_NO_COMPRESSION


def send_and_close(dce, cxh, rops, handles, delay):
    """An EcDoRpcExt2 sent, its answer never read: the socket closes
    `delay` seconds later."""
    req = ext2_request(cxh, EC.frame_ext(rops.build(handles)))
    req['pulFlags'] = FL
    dce.call(req.opnum, req)
    time.sleep(delay)
    dce.get_rpc_transport().disconnect()


def test_prefetch_client_gone(make_proxy, tmp_path):
    lab = Lab(tmp_path)
    try:
        for hold in ("0", "300"):
            p = make_proxy(upstream_epm_port=lab.epm_port, extra={
                "dcerpc_mapiproxy:modules": "mpm_msgtest",
                "mpm_msgtest:log": str(tmp_path / ("events%s.log" % hold)),
                "mpm_msgtest:action": "block", "mpm_msgtest:match": "Quarterly",
                "mpm_msgtest:hold": hold, "mapiproxy:online prefetch": "yes"})
            for delay in (0, 0.002, 0.01, 0.05):
                dce, c, fids = connect(p.rpc_port)
                mid = folder_mids(c, fids[4])[QUARTERLY]
                send_and_close(dce, c.cxh, EC.RopBuffer().open_message(0, 1, fids[4], mid),
                               c.handles, delay)
            time.sleep(0.6 if hold != "0" else 0.1)  # a pending verdict resumes after the close
            assert p.alive(), p.log()[-3000:]
            [got] = through(p, QUARTERLY)  # another session: the verdict as always
            assert got["props"][0x0037001F] == NOTICE_SUBJECT
            p.stop()
            log = p.log()
            assert "online download message" in log
            assert "in_flight=1 after=" in log and "reason=client closed" in log
    finally:
        lab.stop()


def test_fx_hold_client_gone(make_proxy, tmp_path):
    lab = Lab(tmp_path, env={"LAB_BIG_ATTACHMENT_SIZE": str(300 * 1024)})
    try:
        p = make_proxy(upstream_epm_port=lab.epm_port, extra={
            "dcerpc_mapiproxy:modules": "mpm_msgtest",
            "mpm_msgtest:log": str(tmp_path / "events.log"), "mpm_msgtest:action": "block",
            "mpm_msgtest:match": "Meeting", "mpm_msgtest:hold": "200"})
        for n_buffers in (3, 20, 40):
            t = RpcTransport(p.rpc_port)
            c = t.c
            [logon] = c.execute(EC.RopBuffer().logon(0, ALICE))
            inbox = logon["FolderIds"][4]
            rb = EC.RopBuffer().open_folder(0, 1, inbox)
            IC.sync_configure(rb, 1, 2)
            for tag in (IC.W.MetaTagIdsetGiven, IC.W.MetaTagCnsetSeen,
                        IC.W.MetaTagCnsetSeenFAI, IC.W.MetaTagCnsetRead):
                IC.upload_state(rb, 2, tag, b'')
            IC._check(c.execute(rb))
            for _ in range(n_buffers):
                d = IC._check(c.execute(IC.get_buffer(EC.RopBuffer(), 2, 4000)))[0]
                if d["TransferStatus"] == 0x0003:
                    break
            send_and_close(t.dce, c.cxh, IC.get_buffer(EC.RopBuffer(), 2, 4000), c.handles, 0)
        time.sleep(0.5)
        assert p.alive(), p.log()[-3000:]
        t = RpcTransport(p.rpc_port)  # another session: the whole stream, the verdict applied
        [logon] = t.c.execute(EC.RopBuffer().logon(0, ALICE))
        got = IC.sync_folder(t.c, 0, logon["FolderIds"][4], buffer_size=4000)
        assert all(len(x) <= 4000 for x in got["chunks"])
        subjects = [m["props"].get(0x0037001F) for m in got["messages"]]
        assert "Meeting minutes (RTF)" not in subjects, subjects
        assert "[Blocked] mpm_msgtest blocked it" in subjects, subjects
        t.close()
        p.stop()
        assert "in_flight=1 after=" in p.log() and "reason=client closed" in p.log()
    finally:
        lab.stop()
