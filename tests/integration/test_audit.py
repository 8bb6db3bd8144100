"""The audit module (modules/audit, doc/audit.md): one JSON line per logon,
mailbox operation of interest and logoff, for a session through the proxy
over DCE/RPC (Impacket's transport, the lab's EMSMDB client) and over MAPI
over HTTP (python3-requests through the HTTPS front).  The lines are read
with Python's json module."""
import json
import os
import struct

import pytest

import emsmdb_client as EC
from test_lab import ALICE, rop_session
from test_http_front_lab import env  # noqa: F401 (fixture)
from test_http_front_lab import start_front
from test_ops import wait_for
from test_rop_lifetime import HttpTransport, RpcTransport

KEYS = {"ts", "event", "session", "user", "client", "transport"}


def audit_lines(path):
    try:
        with open(path) as f:
            return [json.loads(x) for x in f.read().splitlines()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("transport", ["rpc", "mapihttp"])
def test_audit_trail(request, make_proxy, tmp_path, transport):
    path = str(tmp_path / "audit.jsonl")
    extra = {"dcerpc_mapiproxy:modules": "audit", "audit:file": path}
    if transport == "rpc":
        lab = request.getfixturevalue("lab")
        p = make_proxy(upstream_epm_port=lab.epm_port, extra=extra)
        t = RpcTransport(p.rpc_port)
    else:
        e = request.getfixturevalue("env")
        p = start_front(make_proxy, e, extra)
        t = HttpTransport(p.base, e["ca"])
    subject = rop_session(t.c)
    # DeleteMessages of a message id that does not exist, on the Inbox.
    [logon] = t.execute(EC.RopBuffer().logon(0, ALICE))
    inbox = logon["FolderIds"][4]
    t.execute(EC.RopBuffer().open_folder(0, 1, inbox))
    t.execute(EC.RopBuffer().raw(struct.pack("<BBBBBHQ", 0x1E, 0, 1, 0, 0, 1, 0x1234),
                                 parser=EC.RopBuffer._hdr))
    t.close()
    assert wait_for(lambda: any(x["event"] == "logoff" for x in audit_lines(path))), \
        audit_lines(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    lines = audit_lines(path)
    for x in lines:
        assert KEYS <= set(x), x
        assert x["transport"] == ("rpc" if transport == "rpc" else "mapi-http"), x
        assert x["client"].startswith("127.0.0.1:"), x
    ev = [x["event"] for x in lines]
    assert ev[0] == "logon" and ev[-1] == "logoff", ev
    logon = lines[0]
    assert logon["user_dn"] == ALICE and logon["result"] == "0x00000000", logon
    assert logon["display_name"] == "Alice Anders", logon
    assert logon["auth"] == "pass-through", logon
    if transport == "rpc":      # rgwClientVersion as the lab's client sends it
        assert logon["client_version"] == "%d.%d.%d" % EC.CLIENT_VERSION, logon
        assert logon["client_application"] is None, logon
    else:                       # MAPI/HTTP: the X-ClientApplication header
        import mapihttp_client as MH
        assert logon["client_application"] == MH.CLIENT_APPLICATION, logon
        assert logon["client_version"] == MH.CLIENT_APPLICATION.split("/")[1], logon
    assert lines[-1]["reason"] == "disconnect" and lines[-1]["operations"] >= 6, lines[-1]
    assert len({x["session"] for x in lines}) == 1
    by = {}
    for x in lines:
        by.setdefault(x["event"], []).append(x)
    assert by["mailbox_opened"][0]["mailbox"] == ALICE
    assert {"0x%016x" % inbox} <= {x["folder_id"] for x in by["folder_opened"]}
    saved = by["message_saved"][0]
    assert saved["result"] == "0x00000000" and saved["message_id"], saved
    assert by["message_submitted"][0]["message_id"] == saved["message_id"]
    opened = by["message_opened"][0]
    assert opened["subject"] == subject and opened["folder_id"] == "0x%016x" % inbox, opened
    att = by["attachment_opened"][0]
    assert att["message_id"] == opened["message_id"] and att["attachment_id"] == 0, att
    assert att["subject"] == subject, att
    dele = by["messages_deleted"][0]
    assert dele["message_ids"] == ["0x%016x" % 0x1234] and \
        dele["folder_id"] == "0x%016x" % inbox, dele
    text = open(path).read()
    assert "Pa55" not in text and "NTLMSSP" not in text


def test_audit_needs_a_destination(tmp_path):
    import subprocess
    from conftest import PROXY_BIN
    conf = tmp_path / "c.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "mapiproxy:epmapper port = 0\nmapiproxy:rpc port = 0\n"
                    "dcerpc_mapiproxy:modules = audit\n")
    r = subprocess.run([PROXY_BIN, "-c", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "set audit:file = PATH or audit:syslog = yes" in r.stderr, \
        r.stderr
