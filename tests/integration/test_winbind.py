"""NTLM users of a Windows/Samba domain through winbind, and access by group.

A real Samba AD DC (samba_ad_env.py: provisioned here, its winbindd on a
private socket directory) checks the NTLM responses that Impacket's DCE/RPC
client sends to the proxy (mapiproxy:ntlm backend = winbind); the proxy then
logs on to the lab upstream (tests/lab) with the specified credentials.
Access by group: "@group" entries in mapiproxy:allowed users, with the
domain's groups (winbind) or mapiproxy:groups file (credentials-file users).
"""
import os
import re

import pytest
from impacket.dcerpc.v5 import nspi, transport
from impacket.dcerpc.v5.rpcrt import (DCERPCException, RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
                                      RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
from impacket.ntlm import compute_nthash

import samba_ad_env
from conftest import Lab

LAB_USER, LAB_PW = "mapisvc", "Lab-Svc-Pw-9!"
CAROL, CAROL_PW = "carol", "Carol-Pw-42!x"   # in mapi-users
DAVE, DAVE_PW = "dave", "Dave-Pw-42!x"       # not
GROUP = "mapi-users"


@pytest.fixture(scope="module")
def dc(tmp_path_factory):
    reason = samba_ad_env.available()
    if reason:
        pytest.skip("Samba AD DC unavailable: " + reason)
    env = samba_ad_env.SambaADDC(tmp_path_factory.mktemp("addc"))
    with env:
        env.add_user(CAROL, CAROL_PW)
        env.add_user(DAVE, DAVE_PW)
        env.add_group(GROUP, [CAROL])
        env.run()
        yield env


@pytest.fixture
def lab(tmp_path):
    users = tmp_path / "lab-users"
    users.write_text(f"{LAB_USER}:LAB:{LAB_PW}\n")
    l = Lab(tmp_path, extra=["--users", str(users), "--require-auth", "privacy"])
    yield l
    l.stop()


def upstream_opts(tmp_path, **kw):
    pwfile = tmp_path / "upstream-password"
    pwfile.write_text(LAB_PW + "\n")
    os.chmod(pwfile, 0o600)
    o = {"dcerpc_mapiproxy:username": LAB_USER,
         "dcerpc_mapiproxy:domain": "LAB",
         "mapiproxy:password file": str(pwfile),
         "netbios name": "MAPIPROXY"}
    o.update(kw)
    return o


def winbind_proxy(dc, lab, make_proxy, tmp_path, allowed=None):
    o = upstream_opts(tmp_path, **{"mapiproxy:ntlm backend": "winbind",
                                   "mapiproxy:winbind socket dir": dc.socket_dir})
    if allowed is not None:
        o["mapiproxy:allowed users"] = allowed
    return make_proxy(upstream_epm_port=lab.epm_port, extra=o)


def dce(port, user, password, domain, level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY):
    t = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{port}]")
    t.set_credentials(user, password, domain)
    d = t.get_dce_rpc()
    d.set_auth_level(level)
    d.connect()
    return d


def nspi_round_trip(d):
    d.bind(nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(d)["contextHandle"]
    assert nspi.hNspiUnbind(d, h)["ErrorCode"] == 1
    d.disconnect()


def lab_logons(lab):
    return re.findall(r"nspi: auth: (\w+) logon ok user=(\S+) level=(\w+)", lab.log())


@pytest.mark.parametrize("level", [RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                                   RPC_C_AUTHN_LEVEL_PKT_INTEGRITY])
def test_domain_user_through_winbind_reaches_the_lab(dc, lab, make_proxy, tmp_path, level):
    proxy = winbind_proxy(dc, lab, make_proxy, tmp_path)
    nspi_round_trip(dce(proxy.rpc_port, CAROL, CAROL_PW, dc.domain, level))
    log = proxy.log()
    assert re.search(r"authenticated WBLAB\\carol \(NTLM, (privacy|integrity)\)", log), log
    # the upstream saw the proxy's specified account, not carol
    assert lab_logons(lab) and all(u.lower().endswith(LAB_USER) for _, u, _ in lab_logons(lab))
    assert CAROL_PW not in log and LAB_PW not in log


# Samba's own client (python3-samba): SPNEGO with NTLM inside, whose last
# leg comes in an alter_context that the proxy answers with its mechListMIC
# once winbind's answer is back.
SAMBA_EPM_CLIENT = r"""
import sys
from samba import credentials, param
from samba.dcerpc import epmapper, misc
port, user, domain, password, opts = sys.argv[1:6]
lp = param.LoadParm()
c = credentials.Credentials()
c.guess(lp)
c.set_username(user)
c.set_domain(domain)
c.set_password(password)
c.set_workstation("WS7")
c.set_kerberos_state(credentials.DONT_USE_KERBEROS)
pipe = epmapper.epmapper("ncacn_ip_tcp:127.0.0.1[%s,%s]" % (port, opts), lp, c)
_, entries, result = pipe.epm_Lookup(0, None, None, 0, misc.policy_handle(), 10)
print("lookup", result, len(entries))
"""


@pytest.mark.parametrize("opts,how", [("spnego,seal", "SPNEGO/NTLM, privacy"),
                                      ("spnego,sign", "SPNEGO/NTLM, integrity")])
def test_samba_client_spnego_ntlm_through_winbind(dc, lab, make_proxy, tmp_path, opts, how):
    import subprocess
    try:
        import samba.dcerpc.epmapper  # noqa: F401
    except ImportError:
        pytest.skip("python3-samba not installed")
    o = upstream_opts(tmp_path, **{"mapiproxy:ntlm backend": "winbind",
                                   "mapiproxy:winbind socket dir": dc.socket_dir,
                                   "mapiproxy:allowed users": "@" + GROUP})
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       interfaces=["epmapper", "exchange_nsp", "exchange_emsmdb"], extra=o)
    r = subprocess.run(["/usr/bin/python3", "-c", SAMBA_EPM_CLIENT, str(proxy.rpc_port), CAROL,
                        dc.domain, CAROL_PW, opts], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=120)
    log = proxy.log()
    assert r.returncode == 0, r.stdout + log[-3000:]
    assert r.stdout.split() == ["lookup", "0", "4"], r.stdout
    assert f"authenticated WBLAB\\carol ({how})" in log, log


def test_wrong_password_is_denied_with_winbinds_reason(dc, lab, make_proxy, tmp_path):
    proxy = winbind_proxy(dc, lab, make_proxy, tmp_path)
    with pytest.raises(DCERPCException) as e:
        nspi_round_trip(dce(proxy.rpc_port, CAROL, "Wr0ng-Pa55!", dc.domain))
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    log = proxy.log()
    assert re.search(r"authentication of WBLAB\\carol failed: .*winbind: NT_STATUS_\w+", log), log
    assert "connecting upstream" not in log
    assert not lab_logons(lab)
    assert "Wr0ng-Pa55!" not in log and CAROL_PW not in log


def test_unknown_domain_user_is_denied(dc, lab, make_proxy, tmp_path):
    proxy = winbind_proxy(dc, lab, make_proxy, tmp_path)
    with pytest.raises(DCERPCException):
        nspi_round_trip(dce(proxy.rpc_port, "mallory", "Whatever-1!", dc.domain))
    assert "authentication of WBLAB\\mallory failed" in proxy.log()
    assert not lab_logons(lab)


def test_concurrent_domain_logons_through_the_worker(dc, lab, make_proxy, tmp_path):
    """Eight clients at once, right and wrong passwords mixed: each gets its
    own answer from winbind (the worker's queue), the loop serves them all."""
    from concurrent.futures import ThreadPoolExecutor
    proxy = winbind_proxy(dc, lab, make_proxy, tmp_path, allowed="@" + GROUP)

    def one(i):
        pw = CAROL_PW if i % 2 == 0 else "Wr0ng-%d!" % i
        try:
            nspi_round_trip(dce(proxy.rpc_port, CAROL, pw, dc.domain))
            return "ok"
        except DCERPCException as e:
            return "denied" if ("access_denied" in str(e).lower() or "0x5" in str(e)) else str(e)

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(one, range(8)))
    assert got == ["ok", "denied"] * 4, got
    log = proxy.log()
    assert log.count("authenticated WBLAB\\carol (NTLM, privacy)") == 4, log
    assert len(re.findall(r"authentication of WBLAB\\carol failed: .*winbind: ", log)) == 4, log
    assert len(lab_logons(lab)) == 4
    assert proxy.alive()


def test_winbindd_not_reachable_is_denied(lab, make_proxy, tmp_path):
    """No winbindd behind the socket directory: the logon is refused (access
    denied, nothing upstream), the log says winbindd is not reachable."""
    empty = tmp_path / "no-winbindd"
    empty.mkdir(mode=0o755)
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=upstream_opts(tmp_path, **{"mapiproxy:ntlm backend": "winbind",
                                                        "mapiproxy:winbind socket dir": str(empty)}))
    with pytest.raises(DCERPCException) as e:
        nspi_round_trip(dce(proxy.rpc_port, CAROL, CAROL_PW, "WBLAB"))
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    log = proxy.log()
    assert re.search(r"authentication of WBLAB\\carol failed: the domain could not check the "
                     r"logon \(winbind: winbindd is not reachable", log), log
    assert not lab_logons(lab)
    assert proxy.alive()


@pytest.mark.parametrize("entry", ["@" + GROUP, "@WBLAB\\" + GROUP])
def test_domain_group_member_passes_and_others_are_refused(dc, lab, make_proxy, tmp_path,
                                                            entry):
    proxy = winbind_proxy(dc, lab, make_proxy, tmp_path, allowed=entry)
    nspi_round_trip(dce(proxy.rpc_port, CAROL, CAROL_PW, dc.domain))
    with pytest.raises(DCERPCException) as e:
        nspi_round_trip(dce(proxy.rpc_port, DAVE, DAVE_PW, dc.domain))
    assert "access_denied" in str(e.value).lower() or "0x5" in str(e.value), str(e.value)
    log = proxy.log()
    assert "authenticated WBLAB\\carol" in log
    assert re.search(r"authentication of WBLAB\\dave failed: not in mapiproxy:allowed users",
                     log), log
    assert [u.lower().endswith(LAB_USER) for _, u, _ in lab_logons(lab)] == [True]


# ---- groups file: users of the credentials file (no domain needed) -------

def test_groups_file_for_credentials_file_users(lab, make_proxy, tmp_path):
    creds = tmp_path / "users"
    creds.write_text(f"alice:LAB:{compute_nthash('Alice-Pw-1!').hex()}\n"
                     f"bob:LAB:{compute_nthash('Bob-Pw-1!').hex()}\n")
    os.chmod(creds, 0o600)
    groups = tmp_path / "groups"
    groups.write_text("# group: members\nmapi-users: LAB\\alice, carol@LAB.EXAMPLE\n"
                      "other: bob\n")
    os.chmod(groups, 0o600)
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra=upstream_opts(tmp_path, **{
                           "mapiproxy:credentials file": str(creds),
                           "mapiproxy:groups file": str(groups),
                           "mapiproxy:allowed users": "@mapi-users"}))
    nspi_round_trip(dce(proxy.rpc_port, "alice", "Alice-Pw-1!", "LAB"))
    with pytest.raises(DCERPCException):
        nspi_round_trip(dce(proxy.rpc_port, "bob", "Bob-Pw-1!", "LAB"))
    log = proxy.log()
    assert "authenticated LAB\\alice" in log
    assert "authentication of LAB\\bob failed: not in mapiproxy:allowed users" in log
    assert len(lab_logons(lab)) == 1


def test_groups_file_readable_by_others_is_refused(lab, make_proxy, tmp_path):
    import subprocess
    from conftest import PROXY_BIN
    creds = tmp_path / "users"
    creds.write_text(f"alice:LAB:{compute_nthash('Alice-Pw-1!').hex()}\n")
    os.chmod(creds, 0o600)
    groups = tmp_path / "groups"
    groups.write_text("mapi-users: alice\n")
    os.chmod(groups, 0o644)
    conf = tmp_path / "p.conf"
    lines = ["[global]", "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1",
             "mapiproxy:listen = 127.0.0.1", "mapiproxy:epmapper port = 0",
             "mapiproxy:rpc port = 0"]
    for k, v in upstream_opts(tmp_path, **{"mapiproxy:credentials file": str(creds),
                                           "mapiproxy:groups file": str(groups)}).items():
        lines.append(f"{k} = {v}")
    conf.write_text("\n".join(lines) + "\n")
    r = subprocess.run([PROXY_BIN, "-c", str(conf)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    assert r.returncode != 0
    assert "readable by group or others" in r.stdout, r.stdout


@pytest.mark.parametrize("members,passes", [("LAB\\bob, alice@LAB.EXAMPLE", True),
                                            ("bob, alice@OTHER.EXAMPLE", False)])
def test_groups_file_for_kerberos_principals(make_proxy, tmp_path, monkeypatch, members,
                                             passes):
    """A Kerberos client (Impacket, SPNEGO with MIT's KDC) is let in by its
    principal's line in the groups file, and kept out without one."""
    import krb5_env
    if not krb5_env.available():
        pytest.skip("MIT Kerberos not installed (scripts/install-deps.sh)")
    from test_krb5_relay import PRIV, kerberos_dce
    groups = tmp_path / "groups"
    groups.write_text(f"mapi-users: {members}\n")
    os.chmod(groups, 0o600)
    with krb5_env.Krb5Env(tmp_path / "realm") as k:
        k.kinit("alice")
        k.kvno(krb5_env.PROXY_SPN)
        k.apply()
        users = tmp_path / "lab-users"
        users.write_text(f"{LAB_USER}:LAB:{LAB_PW}\n")
        lab = Lab(tmp_path, extra=["--users", str(users), "--require-auth", "privacy"])
        try:
            proxy = make_proxy(upstream_epm_port=lab.epm_port, extra=upstream_opts(tmp_path, **{
                "mapiproxy:keytab": k.keytab("proxy"),
                "mapiproxy:service principal": krb5_env.PROXY_SPN,
                "realm": "lab.example",
                "mapiproxy:groups file": str(groups),
                "mapiproxy:allowed users": "@mapi-users"}))
            if passes:
                nspi_round_trip(kerberos_dce(proxy.rpc_port, PRIV, monkeypatch))
                assert f"authenticated alice@{k.realm}" in proxy.log(), proxy.log()
                assert len(lab_logons(lab)) == 1
            else:
                with pytest.raises(Exception):
                    nspi_round_trip(kerberos_dce(proxy.rpc_port, PRIV, monkeypatch))
                assert re.search(r"authentication of alice@\S+ failed: not in "
                                 r"mapiproxy:allowed users", proxy.log()), proxy.log()
                assert not lab_logons(lab)
        finally:
            lab.stop()
            k.restore()
