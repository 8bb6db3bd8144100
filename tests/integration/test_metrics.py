"""The metrics endpoint (doc/monitoring.md): scraped with the Prometheus
client library's own parser (python3-prometheus-client), its counters must
equal the calls Impacket made through the proxy; /health answers."""
import http.client
import subprocess
import time

import pytest
from impacket.dcerpc.v5 import epm, nspi, oxabref, transport

from conftest import PROXY_BIN, free_port
from rpcutil import dce_connect

parser = pytest.importorskip("prometheus_client.parser")

USER_DN = "/o=LabOrg/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type"), body


def samples(port):
    status, ctype, body = get(port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    out = {}
    types = {}
    for fam in parser.text_string_to_metric_families(body):
        types[fam.name] = fam.type
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out, types


def val(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0)


def test_counters_match_calls(lab, make_proxy):
    mport = free_port()
    proxy = make_proxy(upstream_epm_port=lab.epm_port,
                       extra={"mapiproxy:metrics listen": f"127.0.0.1:{mport}"}, wait_ports=(mport,))
    m0, types = samples(mport)
    assert types["mapiproxy_rpc_calls"] == "counter"
    assert types["mapiproxy_rpc_call_duration_seconds"] == "histogram"
    assert types["mapiproxy_connections_open"] == "gauge"
    # (the fixture's start-up probe connected to the rpc and epmapper ports once)
    assert val(m0, "mapiproxy_rpc_calls_total", interface="exchange_nsp", op="NspiBind",
               status="ok") == 0

    # the proxy's endpoint mapper: one ept_map, served locally
    e = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{proxy.epm_port}]").get_dce_rpc()
    e.connect()
    epm.hept_map("127.0.0.1", oxabref.MSRPC_UUID_OXABREF, protocol="ncacn_ip_tcp", dce=e)
    e.disconnect()
    # RFR: two calls; NSPI: bind and unbind; all relayed to the lab
    dce = dce_connect(proxy.host, proxy.rpc_port, oxabref.MSRPC_UUID_OXABREF)
    oxabref.hRfrGetNewDSA(dce, USER_DN)
    oxabref.hRfrGetNewDSA(dce, USER_DN)
    dce.disconnect()
    dce = dce_connect(proxy.host, proxy.rpc_port, nspi.MSRPC_UUID_NSPI)
    h = nspi.hNspiBind(dce)["contextHandle"]
    nspi.hNspiUnbind(dce, h)
    dce.disconnect()

    deadline = time.time() + 10
    while True:  # the closes are seen by the proxy a moment after ours
        m, _ = samples(mport)
        if sum(val(m, "mapiproxy_connections_open", listener=x) for x in ("rpc", "epmapper")) == 0:
            break
        assert time.time() < deadline, "connections still open"
        time.sleep(0.1)

    def calls(iface, op, status="ok"):
        return val(m, "mapiproxy_rpc_calls_total", interface=iface, op=op, status=status)

    assert calls("exchange_ds_rfr", "RfrGetNewDSA") == 2
    assert calls("exchange_nsp", "NspiBind") == 1
    assert calls("exchange_nsp", "NspiUnbind") == 1
    assert calls("epmapper", "ept_map") == 1
    assert calls("exchange_nsp", "NspiBind", "fault") == 0
    def accepted(mm, listener):
        return val(mm, "mapiproxy_connections_accepted_total", listener=listener)

    assert accepted(m, "rpc") - accepted(m0, "rpc") == 2
    assert accepted(m, "epmapper") - accepted(m0, "epmapper") == 1
    assert val(m, "mapiproxy_associations_open") == 0
    # the histogram holds every call of the interface; bytes moved both ways
    assert val(m, "mapiproxy_rpc_call_duration_seconds_count", interface="exchange_ds_rfr") == 2
    assert val(m, "mapiproxy_rpc_call_duration_seconds_bucket", interface="exchange_nsp",
               le="+Inf") == 2
    assert val(m, "mapiproxy_rpc_call_duration_seconds_sum", interface="exchange_nsp") > 0
    assert val(m, "mapiproxy_rpc_received_bytes_total", interface="exchange_ds_rfr") > 0
    assert val(m, "mapiproxy_rpc_sent_bytes_total", interface="exchange_nsp") > 0
    assert val(m, "mapiproxy_upstream_errors_total", kind="connect") == 0
    # the call counters equal the relay's own per-call log lines
    log = proxy.log()
    assert log.count(" exchange_ds_rfr RfrGetNewDSA(0) ") == 2

    status, _, body = get(mport, "/health")
    assert (status, body) == (200, "ok\n")
    assert get(mport, "/nothing")[0] == 404
    assert get(mport, "/metrics", "POST")[0] == 405


def test_health_503_when_upstream_down(tmp_path, make_proxy):
    mport = free_port()
    dead = free_port()  # nothing listens there
    proxy = make_proxy(binding_port=dead, extra={"mapiproxy:metrics listen": f"127.0.0.1:{mport}",
                                                 "mapiproxy:connect timeout": "2000"},
                       wait_ports=(mport,))
    assert get(mport, "/health")[0] == 200  # nothing known yet
    with pytest.raises(Exception):
        dce_connect(proxy.host, proxy.rpc_port, nspi.MSRPC_UUID_NSPI)
    m, _ = samples(mport)
    assert val(m, "mapiproxy_upstream_errors_total", kind="connect") >= 1
    assert val(m, "mapiproxy_up") == 0
    status, _, body = get(mport, "/health")
    assert status == 503, body


def test_check_refuses_bad_metrics_listen(tmp_path):
    conf = tmp_path / "m.conf"
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "mapiproxy:rpc port = 6100\nmapiproxy:metrics listen = 127.0.0.1\n")
    r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode != 0 and "mapiproxy:metrics listen" in r.stdout + r.stderr
    conf.write_text("[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                    "mapiproxy:rpc port = 6100\nmapiproxy:metrics listen = 127.0.0.1:6100\n")
    r = subprocess.run([PROXY_BIN, "--check", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode != 0 and "another listener" in r.stdout + r.stderr


def test_http_front_requests_counted(make_proxy, tmp_path_factory):
    """The HTTPS front's requests (Python's http.client against http_peer's
    upstream) are counted by X-RequestType and status class."""
    from http_peer import Peer
    from test_http_front import certs as certs_fixture, connect, post, start_front
    certs = certs_fixture.__wrapped__(tmp_path_factory)
    peer = Peer(*certs["upstream"])
    try:
        mport = free_port()
        front = start_front(make_proxy, certs, peer.url,
                            **{"mapiproxy:metrics listen": f"127.0.0.1:{mport}"})
        m0, _ = samples(mport)
        c = connect(front, certs)
        codes = []
        for i in range(3):
            r, _ = post(c, "/mapi/emsmdb/", {"X-RequestType": "Execute", "X-RequestId": f"m:{i}"})
            codes.append(r.status)
        c.close()
        m, _ = samples(mport)
        cls = f"{codes[0] // 100}xx"
        assert len(set(codes)) == 1, codes
        assert val(m, "mapiproxy_http_requests_total", type="Execute", code=cls) == 3
        assert (val(m, "mapiproxy_connections_accepted_total", listener="http")
                - val(m0, "mapiproxy_connections_accepted_total", listener="http")) == 1
        assert val(m, "mapiproxy_http_request_duration_seconds_count") == 3
    finally:
        peer.stop()
