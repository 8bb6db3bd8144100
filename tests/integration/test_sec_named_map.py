"""Named properties the modules set, mapped by the proxy itself
(mp_module_map_name, module.h ABI 5; src/chain/msgnames.c): phish with
`tag` declares X-Phish (PS_INTERNET_HEADERS); after the client's RopLogon
the proxy sends its own RopGetPropertyIdsFromNames (create) on the
client's session, so an upload of a client that never mapped the name is
still stored with X-Phish (issue 16's leftover: before, the header was
set only under an id the session had mapped).  The lab's store
(tests/lab, written from MS-OXCPRPT) names the id when asked with
RopGetNamesFromPropertyIds; the client's own logon response is unchanged
(its folder ids work).  Over RPC (tag; defang declares no header: nothing
sent) and MAPI/HTTP."""
import pytest

import content_client as CC
import emsmdb_client as EC
import lab_store as LS
from test_http_front_lab import lab_https_fixture, ntlm, start_front
from test_lab import ALICE
from test_mime_dump import connect
from test_rop_modules import dump_lab  # noqa: F401 (fixture)
from test_sec_spam_phish_online import OUTBOX, named, text_msg


@pytest.mark.parametrize("action", ["tag", "defang"])
def test_phish_tag_without_client_mapping(make_proxy, dump_lab, tmp_path, action):  # noqa: F811
    feed = tmp_path / "feed.txt"
    feed.write_text("http://evil.example/login\n")
    p = make_proxy(upstream_epm_port=dump_lab.epm_port, extra={
        "dcerpc_mapiproxy:modules": "phish", "phish:feeds": str(feed),
        "phish:directions": "upload", "phish:action_upload": action})
    dce, c, fids = connect(p.rpc_port)
    mid = CC.upload(c, fids[OUTBOX], text_msg("feed url", "Log in at http://evil.example/login\r\n"))
    got = CC.download(c, fids[OUTBOX], mid)
    n = named(c, got["props"])
    c.disconnect()
    dce.disconnect()
    log = p.log()
    if action == "tag":
        assert got["props"][LS.PidTagSubject] == "[PHISH] feed url"
        assert "evil.example" in n.get("X-Phish", ""), n
        assert "1 named property of the modules mapped" in log
    else:  # defang declares no header: no side request
        assert "X-Phish" not in n
        assert "named propert" not in log
    assert p.alive()


env = lab_https_fixture("secnamedmap")


def test_phish_tag_without_client_mapping_mapihttp(make_proxy, env, tmp_path):
    """The same over MAPI/HTTP (the side request in an Execute, its
    MapiSequence kept in step by the proxy)."""
    import mapihttp_client as MH
    feed = tmp_path / "feed.txt"
    feed.write_text("http://evil.example/login\n")
    p = start_front(make_proxy, env, {
        "dcerpc_mapiproxy:modules": "phish", "phish:feeds": str(feed),
        "phish:directions": "upload", "phish:action_upload": "tag"})
    c = MH.EmsmdbHttp(p.base, auth=ntlm(), verify=env["ca"])
    assert c.connect(ALICE)["ErrorCode"] == 0
    [lo] = c.execute(EC.RopBuffer().logon(0, ALICE))
    fid = lo["FolderIds"][OUTBOX]
    mid = CC.upload(c, fid, text_msg("feed url", "Log in at http://evil.example/login\r\n"))
    got = CC.download(c, fid, mid)
    n = named(c, got["props"])
    assert c.disconnect()["ErrorCode"] == 0
    assert got["props"][LS.PidTagSubject] == "[PHISH] feed url"
    assert "evil.example" in n.get("X-Phish", ""), n
    assert "1 named property of the modules mapped" in p.log()
