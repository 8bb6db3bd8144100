"""Autodiscover answers through the HTTPS front point only at paths the
proxy relays.  The lab (--web-urls) names EWS (ASUrl, EwsUrl, OOFUrl), OAB,
ECP (EcpUrl) and OWA (WEB OWAUrl) besides MAPI/HTTP; every URL of the
rewritten answer that names the proxy is followed through the proxy with
python3-requests and gets no 404 from it.  By default EWS and OAB are
relayed and rewritten; ECP and OWA keep naming the server
(`mapiproxy:http unrelayed urls = keep`), or their elements are dropped
(`= drop`), or they are relayed and rewritten when listed in
`mapiproxy:http relay paths`.  --check rejects bad values of both options."""
import html
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import requests

from conftest import ROOT
from test_http_front_lab import PUBLIC, lab_https_fixture, ntlm
from test_http_front_lab import start_front as front_with

UPSTREAM = "exlab01.lab.example"


env = lab_https_fixture("adurls", ["--web-urls"])


def autodiscover(base, ca):
    req = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.'
           'microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
           '<EMailAddress>alice@lab.example</EMailAddress><AcceptableResponseSchema>'
           'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
           '</AcceptableResponseSchema></Request></Autodiscover>')
    r = requests.post(base + "/autodiscover/autodiscover.xml", data=req, verify=ca,
                      auth=ntlm(), headers={"Content-Type": "text/xml",
                                            "X-MapiHttpCapability": "1"})
    assert r.status_code == 200
    ET.fromstring(r.content)  # still well-formed XML
    j = requests.get(base + "/autodiscover/autodiscover.json/v1.0/alice@lab.example",
                     params={"Protocol": "AutodiscoverV1"}, verify=ca, auth=ntlm())
    assert j.status_code == 200
    found = [html.unescape(u) for u in re.findall(r"https?://[^<\"\s]+", r.text)]
    # the service URLs (not the XML namespaces' schemas.microsoft.com)
    urls = [u for u in found if "schemas.microsoft.com" not in u] + [j.json()["Url"]]
    assert len(urls) >= 9, urls
    return r.text, urls


def follow(base, ca, url):
    """The URL's path and query, asked of the proxy: (status, body)."""
    path = url.split(PUBLIC, 1)[1]
    s = requests.Session()
    s.auth = ntlm()
    r = s.get(base + path, verify=ca)
    return r.status_code, r.content


def proxy_404(status, body):
    return status == 404 and body == b"404 Not Found\n"


def check_followed(p, env, urls):
    mine = [u for u in urls if u.startswith(f"https://{PUBLIC}/")]
    assert mine
    for u in mine:
        st, body = follow(p.base, env["ca"], u)
        assert st != 404, (u, st, body)
    return mine


def test_default_ews_oab_relayed_ecp_owa_keep_the_server(make_proxy, env):
    p = front_with(make_proxy, env)
    text, urls = autodiscover(p.base, env["ca"])
    mine = check_followed(p, env, urls)
    paths = {u.split(PUBLIC, 1)[1].split("?")[0].lower() for u in mine}
    assert {"/ews/exchange.asmx", "/oab/", "/mapi/emsmdb/", "/mapi/nspi/",
            "/autodiscover/autodiscover.xml"} <= paths, paths
    others = [u for u in urls if u not in mine]
    # only the paths the proxy refuses keep naming the server
    assert sorted({u.split(UPSTREAM, 1)[1].split("/", 1)[1] for u in others}) == \
        ["ecp/", "owa/"], others
    assert all(UPSTREAM in u for u in others)
    for u in others:  # and the proxy would indeed refuse them
        path = "/" + u.split(UPSTREAM, 1)[1].split("/", 1)[1]
        r = requests.get(p.base + path, verify=env["ca"], auth=ntlm())
        assert proxy_404(r.status_code, r.content), (path, r.status_code, r.content)
    assert "<EcpUrl>" in text and "<OWAUrl" in text


def test_unrelayed_urls_dropped(make_proxy, env):
    p = front_with(make_proxy, env, {"mapiproxy:http unrelayed urls": "drop"})
    text, urls = autodiscover(p.base, env["ca"])
    assert "<EcpUrl>" not in text and "<OWAUrl" not in text, text
    assert UPSTREAM not in text.lower()
    mine = check_followed(p, env, urls)
    assert mine == urls
    assert "<EwsUrl>" in text and "<OABUrl>" in text


def test_configured_relay_paths_are_rewritten_and_relayed(make_proxy, env):
    p = front_with(make_proxy, env,
                   {"mapiproxy:http relay paths": "/EWS/, /OAB/, /ecp/, /owa/"})
    text, urls = autodiscover(p.base, env["ca"])
    assert UPSTREAM not in text.lower()
    mine = check_followed(p, env, urls)
    assert mine == urls
    for u in mine:
        if "/ecp/" in u or "/owa/" in u:
            st, body = follow(p.base, env["ca"], u)
            assert st == 200 and b"lab " in body, (u, st, body)


def check(tmp_path, paths, unrelayed):
    """mapiproxy --check of the two options: (exit status, output)."""
    conf = tmp_path / "c.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    f"mapiproxy:http relay paths = {paths}\n"
                    f"mapiproxy:http unrelayed urls = {unrelayed}\n")
    r = subprocess.run([os.path.join(ROOT, "build", "mapiproxy"), "--check", "-c", str(conf)],
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_relay_path_options_checked(tmp_path):
    rc, out = check(tmp_path, "/EWS/, OAB, /x?y", "maybe")
    assert rc != 0, out
    assert '"OAB" is no path prefix' in out and '"/x?y" is no path prefix' in out, out
    assert 'mapiproxy:http unrelayed urls "maybe"' in out, out
    rc, out = check(tmp_path, "/EWS/, /OAB/, /Microsoft-Server-ActiveSync", "drop")
    assert rc == 0, out
