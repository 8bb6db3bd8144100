"""Named properties the modules set, mapped by the proxy itself
(mp_module_map_name, module.h ABI 5; src/chain/msgnames.c): phish with
`tag` declares X-Phish (PS_INTERNET_HEADERS); after the client's RopLogon
the proxy sends its own RopGetPropertyIdsFromNames (create) on the
client's session, so an upload of a client that never mapped the name is
still stored with X-Phish (issue 16's leftover: before, the header was
set only under an id the session had mapped).  The lab's store
(tests/lab, written from MS-OXCPRPT) names the id when asked with
RopGetNamesFromPropertyIds; the client's own logon response is unchanged
(its folder ids work)."""
import pytest

import content_client as CC
import lab_store as LS
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
