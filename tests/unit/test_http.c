/* Unit tests of the HTTP front's own text handling: Autodiscover rewriting
 * (src/transport/http/names.c), head collection and rebuilding (src/transport/http/msg.c),
 * and the configuration's http options. */
#include "auth/ntlm_crypto.h"
#include "core/config.h"
#include "transport/http/hauth.h"
#include "transport/http/msg.h"
#include "transport/http/path.h"
#include "transport/http/names.h"
#include "testlib.h"

static struct mp_http_names nm;

/* Rewrites `in`; true when the result is `want` with `n` replacements. */
static int rw(const char *in, const char *want, long n)
{
    struct mp_buf out = {0};
    long k = mp_http_rewrite(&nm, (const uint8_t *)in, strlen(in), &out);
    int ok = k == n && out.len == strlen(want) &&
             !memcmp(out.data ? (char *)out.data : "", want, out.len);
    if (!ok)
        fprintf(stderr, "rewrite \"%s\" -> \"%.*s\" (%ld)\n", in, (int)out.len,
                out.data ? (char *)out.data : "", k);
    mp_buf_free(&out);
    return ok;
}

static void test_rewrite(void)
{
    CHECK_EQ(mp_http_names_init(&nm, "exch01.corp.example", "EXCH01, mail.corp.example",
                                "proxy.example.com:8443"),
             0);
    CHECK(!strcmp(nm.pub_host, "proxy.example.com"));
    CHECK(rw("", "", 0));
    CHECK(rw("https://exch01.corp.example/mapi/emsmdb/?MailboxId=a@corp.example",
             "https://proxy.example.com:8443/mapi/emsmdb/?MailboxId=a@corp.example", 1));
    /* the upstream's port goes with the name in URLs */
    CHECK(rw("https://EXCH01.Corp.Example:444/EWS", "https://proxy.example.com:8443/EWS", 1));
    CHECK(rw("http://exch01:80", "http://proxy.example.com:8443", 1));
    /* a colon not followed by digits stays */
    CHECK(rw("https://exch01:x", "https://proxy.example.com:8443:x", 1));
    /* JSON's escaped slashes */
    CHECK(rw("\"https:\\/\\/mail.corp.example\\/mapi\"",
             "\"https:\\/\\/proxy.example.com:8443\\/mapi\"", 1));
    /* bare names get the host only */
    CHECK(rw("<Server>EXCH01</Server><Server>exch01.corp.example</Server>",
             "<Server>proxy.example.com</Server><Server>proxy.example.com</Server>", 2));
    /* not inside longer names, not e-mail domains, not DN values */
    CHECK(rw("exch01x xexch01 exch01.other.example sub.exch01 a@exch01 cn=EXCH01",
             "exch01x xexch01 exch01.other.example sub.exch01 a@exch01 cn=EXCH01", 0));
    /* a full stop ending a sentence is not part of the name */
    CHECK(rw("see exch01.", "see proxy.example.com.", 1));
    /* longest name first: the FQDN is not cut at "exch01" */
    CHECK(rw("exch01.corp.example", "proxy.example.com", 1));
    CHECK(rw("x exch01", "x proxy.example.com", 1));
    mp_http_names_free(&nm);
    /* IPv6 public name: brackets kept in both forms */
    CHECK_EQ(mp_http_names_init(&nm, "up", "", "[2001:db8::1]:443"), 0);
    CHECK(!strcmp(nm.pub_host, "[2001:db8::1]"));
    CHECK(rw("https://up/x up", "https://[2001:db8::1]:443/x [2001:db8::1]", 2));
    mp_http_names_free(&nm);
    CHECK_EQ(mp_http_names_init(&nm, "up", "", ""), -1);
    CHECK_EQ(mp_http_names_init(&nm, "", "", "p"), -1);
}

/* A front that relays /mapi/... and /EWS/... only. */
static bool relays(const void *arg, const char *path, size_t len)
{
    (void)arg;
    return (len >= 6 && !strncasecmp(path, "/mapi/", 6)) ||
           (len >= 5 && !strncasecmp(path, "/EWS/", 5));
}

static void test_rewrite_paths(void)
{
    CHECK_EQ(mp_http_names_init(&nm, "up.example", "", "px:1"), 0);
    nm.relayed = relays;
    /* relayed paths are rewritten, others keep naming the server */
    CHECK(rw("<A>https://up.example/mapi/nspi/?x=1</A><B>https://up.example:444/ecp/</B>",
             "<A>https://px:1/mapi/nspi/?x=1</A><B>https://up.example:444/ecp/</B>", 1));
    /* JSON's escaped slashes are read as the path's */
    CHECK(rw("\"https:\\/\\/up.example\\/EWS\\/x\" \"https:\\/\\/up.example\\/owa\"",
             "\"https:\\/\\/px:1\\/EWS\\/x\" \"https:\\/\\/up.example\\/owa\"", 1));
    /* no path at all: "/", not relayed */
    CHECK(rw("https://up.example", "https://up.example", 0));
    /* bare names are no URLs: still rewritten */
    CHECK(rw("<Server>up.example</Server>", "<Server>px</Server>", 1));
    nm.drop_unrelayed = true;
    /* dropped: the element with its line; an attribute's URL is kept */
    CHECK(rw("<P>\r\n  <EwsUrl>https://up.example/EWS/a</EwsUrl>\r\n"
             "  <EcpUrl>https://up.example/ecp/</EcpUrl>\r\n"
             "  <OWAUrl Auth=\"Ntlm\">https://up.example/owa/</OWAUrl>\r\n</P>",
             "<P>\r\n  <EwsUrl>https://px:1/EWS/a</EwsUrl>\r\n</P>", 3));
    CHECK(rw("<a href=\"https://up.example/owa/\"/>", "<a href=\"https://up.example/owa/\"/>", 0));
    CHECK(rw("x<E>https://up.example/ecp/</E>y", "xy", 1));
    /* an unclosed element is kept */
    CHECK(rw("<E>https://up.example/ecp/", "<E>https://up.example/ecp/", 0));
    mp_http_names_free(&nm);
}

static void feed_head(struct mp_http_msg *m)
{
    mp_http_msg_init(m, 200);
    CHECK_EQ(mp_http_msg_url(m, "/mapi/", 6), 0);
    CHECK_EQ(mp_http_msg_url(m, "nspi/", 5), 0);
    const char *h[][2] = {
        {"Host", "client.example"},  {"Connection", "keep-alive, X-Hop"}, {"X-Hop", "1"},
        {"Keep-Alive", "300"},       {"Authorization", "NTLM abc"},       {"Content-Length", "5"},
        {"Accept-Encoding", "gzip"}, {"Location", "https://up/x"},        {"X-Fold", "a\r\n b"}};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        CHECK_EQ(mp_http_msg_field(m, h[i][0], strlen(h[i][0])), 0);
        CHECK_EQ(mp_http_msg_value(m, h[i][1], strlen(h[i][1])), 0);
    }
}

/* Field names must be tokens; at most MP_HTTP_MAX_HEADERS fields; the
 * headers the Connection header names are dropped (each of them, once or
 * repeated, whatever the case), the others kept in order. */
static void test_head_limits(void)
{
    struct mp_http_msg m;
    mp_http_msg_init(&m, 1 << 20);
    CHECK_EQ(mp_http_msg_url(&m, "/", 1), 0);
    CHECK_EQ(mp_http_msg_field(&m, "Host", 4), 0);
    CHECK_EQ(mp_http_msg_value(&m, "x", 1), 0);
    CHECK(mp_http_msg_names_ok(&m));
    CHECK_EQ(mp_http_msg_field(&m, "Transfer-Encoding ", 18), 0);
    CHECK_EQ(mp_http_msg_value(&m, "chunked", 7), 0);
    CHECK(!mp_http_msg_names_ok(&m));
    mp_http_msg_reset(&m);
    CHECK_EQ(mp_http_msg_url(&m, "/", 1), 0);
    CHECK_EQ(mp_http_msg_field(&m, "X\tY", 3), 0);
    CHECK_EQ(mp_http_msg_value(&m, "1", 1), 0);
    CHECK(!mp_http_msg_names_ok(&m));
    mp_http_msg_reset(&m);
    CHECK_EQ(mp_http_msg_url(&m, "/", 1), 0);
    int failed_at = -1;
    for (int i = 0; i < MP_HTTP_MAX_HEADERS + 5 && failed_at < 0; i++) {
        char hn[16];
        int n = snprintf(hn, sizeof hn, "X-%d", i);
        if (mp_http_msg_field(&m, hn, (size_t)n) || mp_http_msg_value(&m, "v", 1))
            failed_at = i;
    }
    CHECK_EQ(failed_at, MP_HTTP_MAX_HEADERS);
    mp_http_msg_reset(&m);
    static const char *const h[][2] = {
        {"A", "1"}, {"Connection", "b, x-c"}, {"B", "2"}, {"x-C", "3"}, {"D", "4"},
        {"b", "5"}, {"Connection", "E"},      {"e", "6"}};
    CHECK_EQ(mp_http_msg_url(&m, "/", 1), 0);
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
        CHECK(!mp_http_msg_field(&m, h[i][0], strlen(h[i][0])) &&
              !mp_http_msg_value(&m, h[i][1], strlen(h[i][1])));
    struct mp_buf out = {0};
    struct mp_http_head_opts o = {.framing = MP_HTTP_NO_BODY};
    CHECK_EQ(mp_http_request_head(&m, "GET", &o, &out), 0);
    const char *want = "GET / HTTP/1.1\r\nA: 1\r\nD: 4\r\n\r\n";
    CHECK(out.len == strlen(want) && !memcmp(out.data, want, out.len));
    mp_buf_free(&out);
    mp_http_msg_free(&m);
}

static void test_heads(void)
{
    struct mp_http_msg m;
    feed_head(&m);
    size_t l;
    const char *v = mp_http_msg_get(&m, "authorization", &l);
    CHECK(v && l == 8 && !memcmp(v, "NTLM abc", 8));
    CHECK(mp_http_msg_get(&m, "cookie", &l) == NULL);
    struct mp_buf out = {0};
    struct mp_http_head_opts o = {
        .framing = MP_HTTP_CHUNKED, .host = "up:444", .strip_accept_encoding = true};
    CHECK_EQ(mp_http_request_head(&m, "POST", &o, &out), 0);
    const char *want = "POST /mapi/nspi/ HTTP/1.1\r\nAuthorization: NTLM abc\r\n"
                       "Location: https://up/x\r\nX-Fold: a   b\r\nHost: up:444\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    CHECK(out.len == strlen(want) && !memcmp(out.data, want, out.len));
    if (out.len != strlen(want) || memcmp(out.data, want, out.len))
        fprintf(stderr, "got: %.*s\n", (int)out.len, (char *)out.data);
    mp_buf_free(&out);
    /* a response: Location rewritten, Content-Length from the framing */
    CHECK_EQ(mp_http_names_init(&nm, "up", "", "proxy:1"), 0);
    mp_http_msg_reset(&m);
    CHECK_EQ(mp_http_msg_url(&m, "OK", 2), 0);
    CHECK_EQ(mp_http_msg_field(&m, "Location", 8), 0);
    CHECK_EQ(mp_http_msg_value(&m, "https://up:9/a", 14), 0);
    CHECK_EQ(mp_http_msg_field(&m, "Content-Length", 14), 0);
    CHECK_EQ(mp_http_msg_value(&m, "99", 2), 0);
    struct mp_http_head_opts r = {
        .framing = MP_HTTP_LENGTH, .length = 7, .close = true, .rewrite_location = &nm};
    CHECK_EQ(mp_http_response_head(&m, 302, &r, &out), 0);
    want = "HTTP/1.1 302 OK\r\nLocation: https://proxy:1/a\r\nContent-Length: 7\r\n"
           "Connection: close\r\n\r\n";
    CHECK(out.len == strlen(want) && !memcmp(out.data, want, out.len));
    mp_buf_free(&out);
    mp_http_names_free(&nm);
    /* the bound: 200 bytes of URL, names and values */
    mp_http_msg_reset(&m);
    char big[300];
    memset(big, 'a', sizeof big);
    CHECK_EQ(mp_http_msg_url(&m, big, 150), 0);
    CHECK_EQ(mp_http_msg_field(&m, big, 40), 0);
    CHECK_EQ(mp_http_msg_value(&m, big, 20), -1);
    /* a value before any name is refused */
    mp_http_msg_reset(&m);
    CHECK_EQ(mp_http_msg_value(&m, "x", 1), -1);
    mp_http_msg_free(&m);
    test_head_limits();
}

static int load(const char *extra, struct mp_config *c)
{
    char text[2048];
    snprintf(text, sizeof text, "[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:x\n%s", extra);
    struct mp_diag d = {0};
    int rc = mp_config_load_text(c, "t.conf", text, &d);
    mp_diag_free(&d);
    return rc;
}

static void test_config(void)
{
    struct mp_config c;
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:8443, [::1]:9443\n"
                  "mapiproxy:http upstream = https://[2001:db8::5]:444/\n"
                  "mapiproxy:tls certificate = c.pem\nmapiproxy:tls key = k.pem\n",
                  &c),
             0);
    CHECK(c.n_http_listen == 2 && c.http_listen[1].port == 9443 &&
          !strcmp(c.http_listen[1].host, "::1"));
    CHECK(c.http_upstream.tls && c.http_upstream.port == 444 &&
          !strcmp(c.http_upstream.host, "2001:db8::5"));
    CHECK(c.tls_verify && c.http_header_timeout_s == 30 && c.http_max_header == 32768);
    mp_config_free(&c);
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:8443\nmapiproxy:http plain = yes\n"
                  "mapiproxy:http upstream = http://up\n",
                  &c),
             0);
    CHECK(!c.http_upstream.tls && c.http_upstream.port == 80 && c.warnings.n == 1);
    mp_config_free(&c);
    /* errors: no port, no TLS material, no upstream, a path, a bad scheme */
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1\n", &c), -1);
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http upstream = https://u\n", &c),
             -1);
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http plain = yes\n", &c), -1);
    CHECK_EQ(load("mapiproxy:http upstream = https://u/owa\n", &c), -1);
    CHECK_EQ(load("mapiproxy:http upstream = ftp://u\n", &c), -1);
    CHECK_EQ(load("mapiproxy:http upstream = https://u:0\n", &c), -1);
    CHECK_EQ(load("mapiproxy:http listen = ::1:80\n", &c), -1);
}

/* base64 as the front reads and writes it: strict, bounded */
static void test_b64(void)
{
    uint8_t o[16];
    struct mp_buf b = {0};
    CHECK_EQ(mp_b64_encode((const uint8_t *)"any carnal pleas", 16, &b), 0);
    CHECK(b.len == 24 && !memcmp(b.data, "YW55IGNhcm5hbCBwbGVhcw==", 24));
    mp_buf_free(&b);
    CHECK_EQ(mp_b64_decode("YW55IGNhcm5hbCBwbGVhcw==", 24, o, sizeof o), 16);
    CHECK(!memcmp(o, "any carnal pleas", 16));
    CHECK_EQ(mp_b64_decode("", 0, o, sizeof o), 0);
    CHECK_EQ(mp_b64_decode("YQ==", 4, o, sizeof o), 1);
    CHECK_EQ(mp_b64_decode("YWI=", 4, o, sizeof o), 2);
    CHECK_EQ(mp_b64_decode("YQ=", 3, o, sizeof o), -1);  /* not a multiple of 4 */
    CHECK_EQ(mp_b64_decode("Y===", 4, o, sizeof o), -1); /* padding too early */
    CHECK_EQ(mp_b64_decode("YQ=a", 4, o, sizeof o), -1); /* data after padding */
    CHECK_EQ(mp_b64_decode("YQ==YQ==", 8, o, sizeof o), -1);
    CHECK_EQ(mp_b64_decode("Y Q=", 4, o, sizeof o), -1);
    CHECK_EQ(mp_b64_decode("YR==", 4, o, sizeof o), -1); /* not canonical */
    CHECK_EQ(mp_b64_decode("YWJ=", 4, o, sizeof o), -1);
    CHECK_EQ(mp_b64_decode("YWJj", 4, o, 2), -1); /* over the bound */
}

/* Authorization handled on a parsed head: removed, the proxy's added */
static void test_head_auth(void)
{
    struct mp_http_msg m;
    feed_head(&m);
    mp_http_msg_del(&m, "Authorization");
    size_t l;
    CHECK(mp_http_msg_get(&m, "authorization", &l) == NULL);
    CHECK_EQ(mp_http_msg_add(&m, "Authorization", "Basic eA=="), 0);
    const char *v = mp_http_msg_get(&m, "authorization", &l);
    CHECK(v && l == 10 && !memcmp(v, "Basic eA==", 10));
    CHECK(mp_http_msg_get(&m, "x-fold", &l) != NULL);
    CHECK(mp_http_msg_get_nth(&m, "authorization", 1, &l) == NULL);
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ(mp_http_msg_add(&m, "X-Big", big), -1); /* over the head's bound */
    mp_http_msg_free(&m);
}

static int add_token(struct mp_buf *hdr, const char *scheme, const struct mp_buf *tok)
{
    return mp_buf_append(hdr, scheme, strlen(scheme)) ||
           mp_b64_encode(mp_buf_head(tok), mp_buf_avail(tok), hdr);
}

/* The client side of termination with our own NTLM initiator as the client */
static void test_hauth(void)
{
    CHECK_EQ(mp_ntlm_crypto_init(), 0);
    struct mp_config c;
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http plain = yes\n"
                  "mapiproxy:http upstream = https://up\nmapiproxy:http auth = terminate\n"
                  "mapiproxy:http basic = yes\nmapiproxy:credentials file = /x\n"
                  "dcerpc_mapiproxy:username = svc\ndcerpc_mapiproxy:password = p\n"
                  "dcerpc_mapiproxy:domain = LAB\nmapiproxy:allowed users = alice\n",
                  &c),
             0);
    struct mp_cred creds[2] = {{.user = "alice", .domain = "LAB"}, {.user = "eve", .domain = ""}};
    CHECK_EQ(mp_ntlm_ntowfv1("Pw-alice", creds[0].nt_hash), 0);
    CHECK_EQ(mp_ntlm_ntowfv1("Pw-eve", creds[1].nt_hash), 0);
    struct mp_hauth a;
    memset(&a, 0, sizeof a);
    a.cfg = &c;
    a.on = true;
    a.creds.c = creds;
    a.creds.n = 2;
    a.acc_cfg.nb_computer = "PROXY";
    a.acc_cfg.nb_domain = "LAB";
    a.acc_cfg.lookup = mp_credstore_lookup;
    a.acc_cfg.lookup_arg = &a.creds;
    snprintf(a.realm, sizeof a.realm, "r");
    struct mp_hauth_conn hc;
    memset(&hc, 0, sizeof hc);
    struct mp_buf h = {0};
    char why[200];
    /* nothing: offered NTLM and Basic */
    CHECK_EQ(mp_hauth_client(&a, &hc, NULL, 0, &h, why, sizeof why), MP_HAUTH_CHALLENGE);
    const char *offer = "WWW-Authenticate: NTLM\r\nWWW-Authenticate: Basic realm=\"r\", "
                        "charset=\"UTF-8\"\r\n";
    CHECK(h.len == strlen(offer) && !memcmp(h.data, offer, h.len));
    mp_buf_free(&h);
    /* Basic: right, wrong, not allowed, malformed */
    static const struct {
        const char *b64; /* of user:password */
        int want;
    } basic[] = {
        {"Basic YWxpY2U6UHctYWxpY2U=", MP_HAUTH_PASS},     /* alice:Pw-alice */
        {"Basic TEFCXGFsaWNlOlB3LWFsaWNl", MP_HAUTH_PASS}, /* LAB\alice:Pw-alice */
        {"Basic YWxpY2U6cHctYWxpY2U=", MP_HAUTH_DENY},     /* alice:pw-alice */
        {"Basic ZXZlOlB3LWV2ZQ==", MP_HAUTH_DENY},         /* eve:Pw-eve, not allowed */
        {"Basic YWxpY2U=", MP_HAUTH_DENY},                 /* no colon */
        {"Basic ***", MP_HAUTH_DENY},
        {"Bearer abc", MP_HAUTH_DENY},
    };
    for (size_t i = 0; i < sizeof basic / sizeof basic[0]; i++) {
        int got =
            (int)mp_hauth_client(&a, &hc, basic[i].b64, strlen(basic[i].b64), &h, why, sizeof why);
        CHECK_EQ(got, basic[i].want);
        mp_buf_free(&h);
    }
    CHECK(!hc.authed);
    /* NTLM: NEGOTIATE -> 401 CHALLENGE -> AUTHENTICATE -> the connection is logged on */
    for (int round = 0; round < 2; round++) {
        struct mp_ntlm_initiator ini;
        CHECK_EQ(mp_ntlm_initiator_init(&ini, "alice", "LAB", round ? "wrong" : "Pw-alice", NULL,
                                        "WS", NULL, 0),
                 0);
        struct mp_buf tok = {0}, hdr = {0};
        CHECK_EQ(mp_ntlm_initiator_negotiate(&ini, &tok), 0);
        CHECK_EQ(add_token(&hdr, "NTLM ", &tok), 0);
        CHECK_EQ(mp_hauth_client(&a, &hc, (char *)hdr.data, hdr.len, &h, why, sizeof why),
                 MP_HAUTH_CHALLENGE);
        static const char pre[] = "WWW-Authenticate: NTLM ";
        CHECK(h.len > sizeof pre && !memcmp(h.data, pre, sizeof pre - 1));
        uint8_t chal[1024];
        long cl = mp_b64_decode((char *)h.data + sizeof pre - 1, h.len - (sizeof pre - 1) - 2, chal,
                                sizeof chal);
        CHECK(cl > 0);
        mp_buf_free(&h);
        tok.off = tok.len = hdr.off = hdr.len = 0;
        CHECK_EQ(mp_ntlm_initiator_authenticate(&ini, chal, (size_t)(cl > 0 ? cl : 0), &tok), 0);
        CHECK_EQ(add_token(&hdr, "NTLM ", &tok), 0);
        CHECK_EQ(mp_hauth_client(&a, &hc, (char *)hdr.data, hdr.len, &h, why, sizeof why),
                 round ? MP_HAUTH_DENY : MP_HAUTH_PASS);
        CHECK(!strcmp(hc.user, "LAB\\alice"));
        CHECK(hc.authed == !round);
        if (!round) /* later requests on the connection need nothing */
            CHECK_EQ(mp_hauth_client(&a, &hc, NULL, 0, &h, why, sizeof why), MP_HAUTH_PASS);
        mp_buf_free(&h);
        mp_buf_free(&tok);
        mp_buf_free(&hdr);
        mp_ntlm_initiator_free(&ini);
    }
    /* an AUTHENTICATE without a NEGOTIATE, garbage */
    CHECK_EQ(mp_hauth_client(&a, &hc, "NTLM TlRMTVNTUAADAAAA", 20, &h, why, sizeof why),
             MP_HAUTH_DENY);
    mp_buf_free(&h);
    CHECK_EQ(mp_hauth_client(&a, &hc, "NTLM !!!!", 9, &h, why, sizeof why), MP_HAUTH_DENY);
    mp_buf_free(&h);
    mp_hauth_conn_free(&hc);
    /* the proxy's Basic header */
    char val[200];
    snprintf(a.up_password, sizeof a.up_password, "p");
    CHECK_EQ(mp_hauth_up_basic(&a, val, sizeof val), 0);
    CHECK(!strcmp(val, "Basic TEFCXHN2Yzpw")); /* LAB\svc:p */
    mp_config_free(&c);
    /* option errors */
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http plain = yes\n"
                  "mapiproxy:http upstream = https://up\nmapiproxy:http auth = terminate\n",
                  &c),
             -1);
    CHECK_EQ(load("mapiproxy:http listen = 127.0.0.1:1\nmapiproxy:http plain = yes\n"
                  "mapiproxy:http upstream = https://up\nmapiproxy:http auth = maybe\n",
                  &c),
             -1);
}

/* nrm(in) is the normalised target, or "!" when it is refused. */
static const char *nrm(const char *in)
{
    static char out[512];
    size_t n = strlen(in);
    memset(out, 'Z', sizeof out);
    long k = mp_http_path_normalise(in, n, out);
    if (k < 0)
        return "!";
    if ((size_t)k > n || out[k] != 0)
        return "?overrun";
    return out;
}

static void test_path(void)
{
    /* the variants: decided and forwarded in their normalised form */
    CHECK(!strcmp(nrm("/autodiscover/../ecp/"), "/ecp/"));
    CHECK(!strcmp(nrm("/mapi/emsmdb/../../ews/exchange.asmx"), "/ews/exchange.asmx"));
    CHECK(!strcmp(nrm("/autodiscover/%2e%2e/powershell/"), "/powershell/"));
    CHECK(!strcmp(nrm("/autodiscover/%2E%2e/powershell/"), "/powershell/"));
    CHECK(!strcmp(nrm("/autodiscover/.%2e/powershell/"), "/powershell/"));
    CHECK(!strcmp(nrm("/autodiscover/..%2fecp/"), "!"));
    CHECK(!strcmp(nrm("/autodiscover/..%2Fecp/"), "!"));
    CHECK(!strcmp(nrm("/autodiscover/..%5cecp/"), "!"));
    CHECK(!strcmp(nrm("/rpc/..\\owa/"), "!"));
    /* RFC 3986 5.4 examples, as paths (5.2.4 on the merged path) */
    CHECK(!strcmp(nrm("/b/c/./../../g"), "/g"));
    CHECK(!strcmp(nrm("/b/c/../../../g"), "/g"));
    CHECK(!strcmp(nrm("/./g"), "/g"));
    CHECK(!strcmp(nrm("/../g"), "/g"));
    CHECK(!strcmp(nrm("/b/c/g."), "/b/c/g."));
    CHECK(!strcmp(nrm("/b/c/.g"), "/b/c/.g"));
    CHECK(!strcmp(nrm("/b/c/g.."), "/b/c/g.."));
    CHECK(!strcmp(nrm("/b/c/..g"), "/b/c/..g"));
    CHECK(!strcmp(nrm("/b/c/./g/."), "/b/c/g/"));
    CHECK(!strcmp(nrm("/b/c/g/./h"), "/b/c/g/h"));
    CHECK(!strcmp(nrm("/b/c/g/../h"), "/b/c/h"));
    CHECK(!strcmp(nrm("/b/c/.."), "/b/"));
    CHECK(!strcmp(nrm("/.."), "/"));
    CHECK(!strcmp(nrm("/."), "/"));
    CHECK(!strcmp(nrm("/"), "/"));
    /* runs of slashes merged (IIS does), before the dots are removed */
    CHECK(!strcmp(nrm("/autodiscover//../ecp"), "/ecp"));
    CHECK(!strcmp(nrm("//mapi///emsmdb/"), "/mapi/emsmdb/"));
    /* unreserved decoded, the rest kept with upper-case digits */
    CHECK(!strcmp(nrm("/%6dapi/%45msmdb/%7e%5F"), "/mapi/Emsmdb/~_"));
    CHECK(!strcmp(nrm("/a%20b/%3f%25%c3%a9"), "/a%20b/%3F%25%C3%A9"));
    CHECK(!strcmp(nrm("/%252e%252e/x"), "/%252e%252e/x")); /* one decoding only */
    /* the query is not touched, nor used */
    CHECK(!strcmp(nrm("/mapi/emsmdb/?MailboxId=a@b&x=/../%2f"),
                  "/mapi/emsmdb/?MailboxId=a@b&x=/../%2f"));
    CHECK(!strcmp(nrm("/ecp?/mapi/emsmdb/"), "/ecp?/mapi/emsmdb/"));
    CHECK(!strcmp(nrm("/a/..?q"), "/?q"));
    /* absolute-form: origin-form, the authority dropped */
    CHECK(!strcmp(nrm("https://evil.example/mapi/../ecp/x"), "/ecp/x"));
    CHECK(!strcmp(nrm("http://h"), "/"));
    CHECK(!strcmp(nrm("http://h?q=1"), "/?q=1"));
    /* refused */
    CHECK(!strcmp(nrm("*"), "!"));
    CHECK(!strcmp(nrm(""), "!"));
    CHECK(!strcmp(nrm("ecp/"), "!"));
    CHECK(!strcmp(nrm("/a%2"), "!"));
    CHECK(!strcmp(nrm("/a%zz"), "!"));
    CHECK(!strcmp(nrm("/a%u002e"), "!"));
    CHECK(!strcmp(nrm("/a#frag"), "!"));
    CHECK(!strcmp(nrm("/a?b#frag"), "!"));
    CHECK(!strcmp(nrm("/a\x01"), "!"));
    CHECK(!strcmp(nrm("/\xc0\xae\xc0\xae/ecp"), "!"));
    /* case is kept; the allowlist compares without it (front.c) */
    CHECK(!strcmp(nrm("/MAPI/EmsMdb/"), "/MAPI/EmsMdb/"));
}

int main(void)
{
    test_path();
    test_rewrite();
    test_rewrite_paths();
    test_heads();
    test_config();
    test_b64();
    test_head_auth();
    test_hauth();
    TEST_DONE();
}
