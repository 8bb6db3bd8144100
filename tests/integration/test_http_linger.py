"""The HTTPS front's lingering close (src/transport/http/front.c, RFC 9112
section 9.6): a request refused before its body ended (413 over mapiproxy:http
max body) still reaches a client that writes its whole body before reading,
as Python's http.client does, however much of the body is left to come; the
proxy reads and drops the rest, then closes.  Before, the proxy closed with
the body unread, the kernel answered with a reset, and the client got
SSLEOFError or ECONNRESET instead of its 413 (flaky under load)."""
from test_http_front import certs, connect, peer, post, start_front  # noqa: F401 (fixtures)


def test_413_reaches_a_client_still_sending_its_body(make_proxy, certs, peer):  # noqa: F811
    front = start_front(make_proxy, certs, peer.url, **{"mapiproxy:http max body": "64K"})
    for size in (100000, 1 << 20, 4 << 20):
        conn = connect(front, certs)
        r, body = post(conn, "/mapi/emsmdb/", {"Authorization": peer.basic}, b"z" * size)
        assert r.status == 413 and body == b"413 Content Too Large\n", (size, r.status, body)
        assert r.getheader("Connection") == "close"
        conn.close()
    assert not peer.requests
    front.stop()
    assert front.log().count("status=413") == 3
