/* The HTTP exchange on the front (hconn.h): the request and response
 * parsers' callbacks, what they decide (route, logon, bridge, framing),
 * the proxy's own answers and the request log. */
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "rewrite/rewrite.h"
#include "ops/metrics.h"
#include "transport/http/hconn.h"
#include "transport/http/hmove.h"
#include "transport/http/path.h"
#include "transport/mapihttp/body.h"

static http_parser_settings req_settings, resp_settings;

static const char *reason_of(int st)
{
    switch (st) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 502:
        return "Bad Gateway";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

void mp_hx_log_request(struct hconn *s)
{
    uint64_t ms = (mp_now_us() - s->t_start_us) / 1000;
    mp_info("http #%" PRIu64 " %s %s %s type=%s id=%s status=%d in=%" PRIu64 " out=%" PRIu64
            " ms=%" PRIu64 "%s",
            s->id, s->peer, s->method[0] ? s->method : "-", s->path[0] ? s->path : "-",
            s->xtype[0] ? s->xtype : "-", s->xid[0] ? s->xid : "-", s->status, s->req_bytes,
            s->resp_bytes, ms, s->local_status ? " (proxy)" : "");
    mp_metrics_http(s->xtype, s->status, s->req_bytes, s->resp_bytes, s->t_start_us);
}

/* Queues the proxy's own answer; with close, the session ends once sent. */
void mp_hx_send_local(struct hconn *s, int st, bool close)
{
    char head[256], body[96];
    int bl = snprintf(body, sizeof body, "%d %s\n", st, reason_of(st));
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s", st,
                      reason_of(st), bl, close ? "Connection: close\r\n" : "");
    if (mp_buf_append(&s->c.conn.out, head, (size_t)hl) ||
        (st == 401 && mp_buf_avail(&s->ua.www) &&
         mp_buf_append(&s->c.conn.out, mp_buf_head(&s->ua.www), mp_buf_avail(&s->ua.www))) ||
        mp_hu_mutual_line(s, st, &s->c.conn.out) || mp_buf_append(&s->c.conn.out, "\r\n", 2) ||
        mp_buf_append(&s->c.conn.out, body, (size_t)bl))
        s->closing = true;
    mp_buf_free(&s->ua.www);
    s->status = st;
    s->resp_started = true;
    if (close)
        s->closing = true;
}

/* A MAPI/HTTP failure answered by the proxy (MS-OXCMAPIHTTP 2.2.3.3.3):
 * 200, X-ResponseCode, a short human-readable body. */
void mp_hx_send_mh_error(struct hconn *s, uint32_t code)
{
    char head[512], body[128];
    const char *text = mp_mh_response_code_name(code);
    int bl = snprintf(body, sizeof body, "<html><body><p>%s</p></body></html>\r\n",
                      text ? text : "error");
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-ResponseCode: %u\r\n"
                      "X-RequestType: %s\r\nX-RequestId: %s\r\nCache-Control: private\r\n"
                      "Content-Length: %d\r\n%s",
                      code, s->xtype, s->xid, bl, s->keepalive ? "" : "Connection: close\r\n");
    if (hl < 0 || (size_t)hl >= sizeof head || mp_buf_append(&s->c.conn.out, head, (size_t)hl) ||
        mp_hu_mutual_line(s, 200, &s->c.conn.out) || mp_buf_append(&s->c.conn.out, "\r\n", 2) ||
        mp_buf_append(&s->c.conn.out, body, (size_t)bl))
        s->closing = true;
    s->status = 200;
    s->resp_started = true;
    if (!s->keepalive)
        s->closing = true;
}

static void copy_header(const struct mp_http_msg *m, const char *name, char *dst, size_t n)
{
    size_t l;
    const char *v = mp_http_msg_get(m, name, &l);
    if (v)
        mp_http_log_text(dst, n, v, l);
    else
        dst[0] = 0;
}

static int on_req_begin(http_parser *p)
{
    struct hconn *s = p->data;
    struct mp_http *h = s->h;
    mp_http_msg_reset(&s->req);
    s->in_request = true;
    s->req_complete = s->forwarded = s->resp_started = s->interim = false;
    s->ad.rewrite = s->chunk_out = s->close_after = false;
    s->local_status = s->status = s->err_status = 0;
    s->local_rc = 0;
    s->who[0] = 0;
    s->req_bytes = s->resp_bytes = 0;
    s->method[0] = s->path[0] = s->xtype[0] = s->xid[0] = 0;
    s->route = NULL;
    s->t_start_us = mp_now_us();
    s->idle_dl = 0;
    if (!s->header_dl)
        s->header_dl = mp_now_ms() + (uint64_t)h->cfg->http_header_timeout_s * 1000;
    return 0;
}

static int on_req_url(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    if (mp_http_msg_url(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_req_field(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    if (mp_http_msg_field(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_req_value(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    if (mp_http_msg_value(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

/* The body's deadline from the bytes it has brought so far. */
void mp_hx_body_deadline(struct hconn *s)
{
    s->body_dl = s->body_t0 + (uint64_t)s->h->cfg->http_header_timeout_s * 1000 +
                 s->req_bytes * 1000 / BODY_MIN_RATE;
}

static size_t path_len(const char *url, size_t len)
{
    const char *q = memchr(url, '?', len);
    return q ? (size_t)(q - url) : len;
}

/* The request-target in its normalised form (path.c), before anything
 * decides on it; what is forwarded is that form.  0, or -1 (400). */
static int normalise_target(struct hconn *s)
{
    const char *url = mp_http_msg_url_ptr(&s->req);
    size_t ul = s->req.url_len;
    char *nu = malloc(ul + 1);
    long nl = nu ? mp_http_path_normalise(url, ul, nu) : -1;
    if (nl < 0) {
        char shown[160]; /* never the query: MailboxId is an address */
        mp_http_log_text(shown, sizeof shown, url, path_len(url, ul));
        mp_info("http #%" PRIu64 " %s: request-target refused (not origin-form, a backslash, an "
                "encoded slash or a bad escape): %s",
                s->id, s->peer, shown);
        free(nu);
        s->err_status = 400;
        return -1;
    }
    if ((size_t)nl != ul || memcmp(nu, url, ul)) {
        char was[160], now[160];
        mp_http_log_text(was, sizeof was, url, path_len(url, ul));
        mp_http_log_text(now, sizeof now, nu, path_len(nu, (size_t)nl));
        mp_debug("http #%" PRIu64 " %s: request-target %s normalised to %s", s->id, s->peer, was,
                 now);
        mp_http_msg_set_url(&s->req, nu, (size_t)nl);
    }
    free(nu);
    return 0;
}

static int on_req_headers(http_parser *p)
{
    struct hconn *s = p->data;
    struct mp_http *h = s->h;
    const struct mp_config *cfg = h->cfg;
    s->header_dl = 0;
    s->body_t0 = mp_now_ms();
    mp_hx_body_deadline(s);
    snprintf(s->method, sizeof s->method, "%s",
             s->ext_method ? h->routes.ext[s->ext_method - 1]
                           : http_method_str((enum http_method)p->method));
    bool ext = s->ext_method != 0;
    s->ext_method = 0;
    if (!mp_http_msg_names_ok(&s->req)) { /* "Host :" and the like: RFC 9112 5.1 */
        mp_info("http #%" PRIu64 " %s: a header name that is no token (a space before its "
                "colon?): 400",
                s->id, s->peer);
        s->err_status = 400;
        return -1;
    }
    if (p->upgrade || p->method == HTTP_CONNECT) { /* before the target: CONNECT's is host:port */
        s->err_status = 501;
        return -1;
    }
    if (normalise_target(s))
        return -1;
    const char *url = mp_http_msg_url_ptr(&s->req);
    size_t ul = s->req.url_len, pl = 0;
    while (pl < ul && url[pl] != '?')
        pl++;
    mp_http_log_text(s->path, sizeof s->path, url, pl); /* never the query */
    copy_header(&s->req, "x-requesttype", s->xtype, sizeof s->xtype);
    copy_header(&s->req, "x-requestid", s->xid, sizeof s->xid);
    s->keepalive = http_should_keep_alive(p);
    s->head_req = p->method == HTTP_HEAD;
    s->client_http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
    s->req_chunked = (p->flags & F_CHUNKED) != 0;
    s->route = mp_http_route_find(&h->routes, url, ul);
    bool handler = s->route && s->route->kind == MP_HTTP_ROUTE_HANDLER;
    if (ext && !handler) { /* RPC_IN_DATA and the like elsewhere */
        s->err_status = 501;
        return -1;
    }
    if (!handler && (p->flags & F_CONTENTLENGTH) && p->content_length > cfg->http_max_body) {
        s->err_status = 413; /* a handler (RPC over HTTP) frames its own bodies */
        return -1;
    }
    if (!s->route) {
        s->local_status = 404;
        return 0;
    }
    if ((s->move_to = mp_hm_target(s))) { /* moved once the parser stops (hmove.h) */
        http_parser_pause(p, 1);
        return 0;
    }
    if (h->auth.on && mp_hu_request(s)) {
        if (handler && (p->flags & F_CONTENTLENGTH) && p->content_length > 0) {
            /* a refused channel request (RPC over HTTP): its body, up to
             * 1 GiB, is not waited for; the answer goes now, then close */
            mp_hx_send_local(s, s->local_status, true);
            mp_hx_log_request(s);
            s->linger = true;
            http_parser_pause(p, 1);
        }
        return 0;
    }
    if (handler) { /* handed over once the parser stops (mp_hx_parse_client) */
        s->handover = true;
        http_parser_pause(p, 1);
        return 0;
    }
    if (mp_mhb_cookie_check(s))
        return 0;
    if (!mp_conn_is_open(&s->u.conn) && !s->u.eof) {
        if (mp_hf_upstream_start(s)) {
            char why[160];
            snprintf(why, sizeof why, "cannot connect: %s", strerror(errno));
            s->local_status = 502;
            mp_warn("http #%" PRIu64 " %s upstream %s: %s", s->id, s->peer, h->up_hostport, why);
            return 0;
        }
    } else if (s->u.eof) { /* the pinned connection is gone: never take another */
        s->local_status = 502;
        return 0;
    }
    if (h->auth.on && !h->auth.up_basic && !s->ua.step && mp_hu_begin(s, url, ul)) {
        mp_warn("http #%" PRIu64 " %s upstream %s: cannot start the proxy's NTLM logon", s->id,
                s->peer, h->up_hostport);
        mp_hf_side_close(&s->u);
        s->u.eof = true;
        s->local_status = 502;
        return 0;
    }
    if (s->route->kind == MP_HTTP_ROUTE_RELAY && mp_mhb_wanted(s, p)) {
        int r = mp_mhb_request_head(s, p);
        if (r > 1) {
            s->err_status = r;
            return -1;
        }
        if (r == 0)
            return 0; /* collected for the bridge */
    }
    struct mp_http_head_opts o = {
        .framing = s->req_chunked                 ? MP_HTTP_CHUNKED
                   : (p->flags & F_CONTENTLENGTH) ? MP_HTTP_LENGTH
                                                  : MP_HTTP_NO_BODY,
        .length = p->content_length,
        .host = h->up_hostport,
        .strip_accept_encoding = s->route->kind == MP_HTTP_ROUTE_AUTOD,
    };
    if (mp_http_request_head(&s->req, s->method, &o, &s->u.conn.out)) {
        s->err_status = 502;
        return -1;
    }
    s->forwarded = true;
    mp_hf_upstream_clock_start(s);
    return 0;
}

static int on_req_body(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    s->req_bytes += len;
    mp_hx_body_deadline(s);
    if (s->req_bytes > s->h->cfg->http_max_body) {
        s->err_status = 413;
        return -1;
    }
    if (s->mh.mod && !s->forwarded) {
        int st = mp_mhb_hold(s, mp_buf_avail(&s->mh.mreq), len, s->mh.limit);
        if (st) {
            mp_info("http #%" PRIu64 " %s: %s body %s: %d", s->id, s->peer, s->xtype,
                    st == 413 ? "over what is held for its type"
                              : "over mapiproxy:http held body budget",
                    st);
            s->err_status = st;
            return -1;
        }
        return mp_buf_append(&s->mh.mreq, at, len) ? -1 : 0;
    }
    if (!s->forwarded)
        return 0; /* answered by the proxy: the body is read and dropped */
    if (s->req_chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        if (mp_buf_append(&s->u.conn.out, sz, (size_t)n) ||
            mp_buf_append(&s->u.conn.out, at, len) || mp_buf_append(&s->u.conn.out, "\r\n", 2)) {
            s->err_status = 502;
            return -1;
        }
        return 0;
    }
    if (mp_buf_append(&s->u.conn.out, at, len)) {
        s->err_status = 502;
        return -1;
    }
    return 0;
}

void mp_hx_request_finished(struct hconn *s)
{
    s->in_request = false;
    s->ua.ha.mutual[0] = 0; /* the acceptor's token answers its own request only */
    mp_hx_log_request(s);
    /* the response head's memory goes back: a connection waiting for its
     * next request (or parked on it) keeps none */
    mp_http_msg_free(&s->resp);
    if (!s->keepalive || s->close_after)
        s->closing = true;
    else
        s->idle_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_idle_timeout_s * 1000;
}

static int on_req_complete(http_parser *p)
{
    struct hconn *s = p->data;
    s->req_complete = true;
    s->body_dl = 0;
    if (s->forwarded) /* its answer is awaited now */
        mp_hf_upstream_clock_start(s);
    if (s->mh.mod && !s->forwarded && !s->local_status) {
        if (mp_mhb_request_done(s)) {
            s->err_status = 502;
            return -1;
        }
        return 0;
    }
    if (s->forwarded) {
        if (s->req_chunked && mp_buf_append(&s->u.conn.out, "0\r\n\r\n", 5)) {
            s->err_status = 502;
            return -1;
        }
        if (s->status) { /* the response already ended (early answer) */
            mp_hx_request_finished(s);
            return 0;
        }
        http_parser_pause(p, 1); /* until the response is complete */
        return 0;
    }
    if (s->local_status == 200 && s->local_rc) {
        mp_hx_send_mh_error(s, s->local_rc);
        mp_hx_request_finished(s);
    } else if (s->local_status) {
        mp_hx_send_local(s, s->local_status, !s->keepalive || s->local_status >= 500);
        mp_hx_request_finished(s);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* response parser callbacks (upstream -> client)                      */

int mp_hx_resp_fail(struct hconn *s, const char *why)
{
    mp_warn("http #%" PRIu64 " %s upstream %s: %s", s->id, s->peer, s->h->up_hostport, why);
    return -1;
}

static int on_resp_begin(http_parser *p)
{
    struct hconn *s = p->data;
    if (mp_hu_busy(s)) {
        mp_http_msg_reset(&s->resp);
        return 0;
    }
    if (!s->in_request || !s->forwarded || s->status)
        return mp_hx_resp_fail(s, "sent a response no request asked for");
    mp_http_msg_reset(&s->resp);
    return 0;
}

static int on_resp_status(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    return mp_http_msg_url(&s->resp, at, len) ? mp_hx_resp_fail(s, "status line too long") : 0;
}

static int on_resp_field(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    return mp_http_msg_field(&s->resp, at, len) ? mp_hx_resp_fail(s, "response head too large") : 0;
}

static int on_resp_value(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    return mp_http_msg_value(&s->resp, at, len) ? mp_hx_resp_fail(s, "response head too large") : 0;
}

static bool identity_encoding(const struct mp_http_msg *m)
{
    size_t l;
    const char *v = mp_http_msg_get(m, "content-encoding", &l);
    return !v || l == 0 || (l == 8 && !strncasecmp(v, "identity", 8));
}

static int on_resp_headers(http_parser *p)
{
    struct hconn *s = p->data;
    struct mp_http *h = s->h;
    int st = p->status_code;
    if (!mp_http_msg_names_ok(&s->resp))
        return mp_hx_resp_fail(s,
                               "sent a header name that is no token (a space before its colon?)");
    if (mp_hu_busy(s)) {
        s->ua.status = st;
        return 0;
    }
    if (h->auth.on && st == 401) { /* the proxy's logon, not the client's: never relayed */
        snprintf(s->ua.why, sizeof s->ua.why, "answered 401 to the proxy's logon as %.60s%s%.60s",
                 h->cfg->domain, h->cfg->domain[0] ? "\\" : "", h->cfg->username);
        return -1;
    }
    if (st == 101)
        return mp_hx_resp_fail(s, "switched protocols (101), which the proxy does not relay");
    struct mp_http_head_opts o = {.rewrite_location = &h->names};
    if (st >= 100 && st < 200) { /* 100 Continue, 102, 103: passed on, not final */
        s->interim = true;
        o.framing = MP_HTTP_NO_BODY;
        return mp_http_response_head(&s->resp, st, &o, &s->c.conn.out) ? -1 : 0;
    }
    s->interim = false;
    if (h->auth.on && mp_hu_answer_auth(s, st))
        return -1;
    if (st >= 200 && st < 300 && !strncasecmp(s->path, "/mapi/", 6)) {
        mp_mhb_cookie_issued(s);
        mp_hm_response(s);
    }
    if (s->mh.mod && (s->mh.mc || s->mh.url)) {
        int r = mp_mhb_resp_head(s, p);
        if (r)
            return r < 0 ? -1 : 0;
        mp_mhb_end(s); /* not a success: relayed as it is */
    }
    s->status = st;
    bool up_keep = http_should_keep_alive(p);
    s->close_after = !up_keep || !s->keepalive;
    bool no_body = s->head_req || st == 204 || st == 304;
    if (s->route && s->route->kind == MP_HTTP_ROUTE_AUTOD && st >= 200 && st < 300 && !no_body) {
        if (identity_encoding(&s->resp)) {
            s->ad.rewrite = true;
            s->ad.body.off = s->ad.body.len = 0;
            return 0; /* the head goes out with the rewritten body */
        }
        mp_warn("http #%" PRIu64 " %s: Autodiscover answer is content-encoded; relayed "
                "without rewriting",
                s->id, s->peer);
    }
    if (no_body) {
        o.framing = MP_HTTP_KEEP_LENGTH;
    } else if (p->flags & F_CHUNKED) {
        o.framing = MP_HTTP_CHUNKED;
    } else if (p->flags & F_CONTENTLENGTH) {
        o.framing = MP_HTTP_LENGTH;
        o.length = p->content_length;
    } else { /* ends when the upstream closes: chunked to the client */
        o.framing = MP_HTTP_CHUNKED;
        s->close_after = true;
    }
    if (o.framing == MP_HTTP_CHUNKED && s->client_http10) {
        /* HTTP/1.0 knows no chunking: the body ends when we close */
        o.framing = MP_HTTP_NO_BODY;
        s->close_after = true;
    }
    s->chunk_out = o.framing == MP_HTTP_CHUNKED;
    o.close = s->close_after;
    if (mp_http_response_head(&s->resp, st, &o, &s->c.conn.out))
        return -1;
    s->resp_started = true;
    return s->head_req ? 1 : 0;
}

static int on_resp_body(http_parser *p, const char *at, size_t len)
{
    struct hconn *s = p->data;
    if (mp_hu_busy(s))
        return 0; /* the body of a handshake answer */
    if (s->mh.mod_resp)
        return mp_mhb_resp_body(s, at, len);
    s->resp_bytes += len;
    if (s->ad.rewrite) {
        if (s->ad.body.len + len > s->h->cfg->http_max_rewrite)
            return mp_hx_resp_fail(
                s, "Autodiscover answer larger than mapiproxy:http max rewrite body");
        return mp_buf_append(&s->ad.body, at, len);
    }
    if (s->chunk_out) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        if (mp_buf_append(&s->c.conn.out, sz, (size_t)n) ||
            mp_buf_append(&s->c.conn.out, at, len) || mp_buf_append(&s->c.conn.out, "\r\n", 2))
            return -1;
        return 0;
    }
    return mp_buf_append(&s->c.conn.out, at, len);
}

static int on_resp_complete(http_parser *p)
{
    struct hconn *s = p->data;
    struct mp_http *h = s->h;
    if (mp_hu_busy(s))
        return mp_hu_step(s, p);
    if (s->interim) {
        s->interim = false;
        return 0;
    }
    if (s->mh.mod_resp) {
        if (!s->req_complete) {
            s->close_after = true;
            s->closing = true;
        }
        mp_mhb_resp_done(s);
        return 0;
    }
    if (s->ad.rewrite) {
        struct mp_buf nb = {0};
        size_t bl = mp_buf_avail(&s->ad.body);
        /* non-transparent mode: EXCH <Server>, ServerDN and MdbDN name the
         * proxy's server names, as NSPI and EMSMDB answers do */
        size_t sn = 0;
        char *sv = bl ? mp_rewrite_text((const char *)mp_buf_head(&s->ad.body), bl, true, true, &sn)
                      : NULL;
        const uint8_t *src = sv ? (const uint8_t *)sv : mp_buf_head(&s->ad.body);
        if (sv)
            bl = sn;
        long k = bl ? mp_http_rewrite(&h->names, src, bl, &nb) : 0;
        free(sv);
        struct mp_http_head_opts o = {.framing = MP_HTTP_LENGTH,
                                      .length = nb.len,
                                      .close = s->close_after,
                                      .rewrite_location = &h->names};
        int rc = k < 0 || mp_http_response_head(&s->resp, s->status, &o, &s->c.conn.out) ||
                 mp_buf_append(&s->c.conn.out, nb.data ? nb.data : (uint8_t *)"", nb.len);
        mp_debug("http #%" PRIu64 " %s: Autodiscover answer: %ld name(s) rewritten, %zu -> %zu "
                 "bytes",
                 s->id, s->peer, k, mp_buf_avail(&s->ad.body), nb.len);
        s->resp_bytes = nb.len;
        mp_buf_free(&nb);
        mp_buf_free(&s->ad.body);
        s->resp_started = true;
        if (rc)
            return -1;
    } else if (s->chunk_out && mp_buf_append(&s->c.conn.out, "0\r\n\r\n", 5)) {
        return -1;
    }
    s->upstream_dl = 0;
    if (!s->req_complete) {
        /* answered before the request body ended (e.g. 401 or 413 upstream):
         * the rest of the request cannot be resynchronised; end the session */
        s->close_after = true;
        mp_hx_log_request(s);
        s->closing = true;
        return 0;
    }
    mp_hx_request_finished(s);
    if (!s->closing)
        http_parser_pause(&s->cp, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* parsing what was read                                               */

/* At the start of a request: a method http-parser does not know but a
 * handler route takes (routes.ext) is replaced by POST in the input, and
 * remembered.  false: wait for more bytes (they may start such a method). */
static bool ext_method_prescan(struct hconn *s)
{
    const struct mp_http_routes *t = &s->h->routes;
    struct mp_buf *in = &s->c.conn.in;
    const char *b = (const char *)mp_buf_head(in);
    size_t n = mp_buf_avail(in), i = 0;
    while (i < n && (b[i] == '\r' || b[i] == '\n'))
        i++;
    for (size_t k = 0; k < t->n_ext; k++) {
        size_t l = strlen(t->ext[k]);
        if (n - i <= l) {
            if (!memcmp(b + i, t->ext[k], n - i))
                return false;
            continue;
        }
        if (memcmp(b + i, t->ext[k], l) || b[i + l] != ' ')
            continue;
        memcpy(mp_buf_head(in) + i + l - 4, "POST", 4);
        mp_buf_consume(in, i + l - 4);
        s->ext_method = (int)k + 1;
        return true;
    }
    return true;
}

bool mp_hx_parse_client(struct hconn *s)
{
    struct leg *x = &s->c;
    bool moved = false;
    while (mp_buf_avail(&x->conn.in) && !s->closing && !s->dead) {
        if (HTTP_PARSER_ERRNO(&s->cp) == HPE_PAUSED)
            break;
        if (!s->in_request && s->h->routes.n_ext && !ext_method_prescan(s))
            break;
        size_t n =
            http_parser_execute(&s->cp, &req_settings, (const char *)mp_buf_head(&x->conn.in),
                                mp_buf_avail(&x->conn.in));
        if (n)
            moved = true;
        mp_buf_consume(&x->conn.in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&s->cp);
        if (e == HPE_PAUSED && s->move_to) {
            mp_hm_move(s);
            return true;
        }
        if (e == HPE_PAUSED && s->handover) {
            mp_hf_hand_over(s);
            return true;
        }
        if (e == HPE_PAUSED)
            break;
        if (e != HPE_OK) {
            int st = s->err_status ? s->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
            mp_info("http #%" PRIu64 " %s: bad request (%s): %d", s->id, s->peer,
                    s->err_status ? "limit" : http_errno_name(e), st);
            mp_buf_consume(&x->conn.in, mp_buf_avail(&x->conn.in));
            if (s->resp_started) {
                mp_hf_close(s, "bad request after its response began");
                return true;
            }
            mp_hf_side_close(&s->u);
            mp_hx_send_local(s, st, true);
            mp_hx_log_request(s);
            s->in_request = false;
            s->linger = true; /* the client may still be sending what was refused */
            return true;
        }
        if (s->cp.upgrade) /* refused in on_req_headers; not reached */
            break;
    }
    return moved;
}

bool mp_hx_parse_upstream(struct hconn *s, bool at_eof)
{
    struct leg *x = &s->u;
    bool moved = false;
    if (mp_buf_avail(&x->conn.in)) {
        size_t n =
            http_parser_execute(&s->up, &resp_settings, (const char *)mp_buf_head(&x->conn.in),
                                mp_buf_avail(&x->conn.in));
        mp_buf_consume(&x->conn.in, n);
        moved = n > 0;
        if (HTTP_PARSER_ERRNO(&s->up) != HPE_OK) {
            char why[220];
            if (s->ua.why[0])
                snprintf(why, sizeof why, "%s", s->ua.why);
            else
                snprintf(why, sizeof why, "unusable response (%s)",
                         http_errno_name(HTTP_PARSER_ERRNO(&s->up)));
            mp_hf_upstream_failed(s, 502, why);
            return true;
        }
        if (s->in_request && s->forwarded)
            s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
    }
    if (at_eof && !s->dead) {
        http_parser_execute(&s->up, &resp_settings, NULL, 0); /* may end a body read to EOF */
        if (s->in_request && s->forwarded && !s->status)
            mp_hf_upstream_failed(s, 502, "closed the connection before its response");
        else if (s->in_request && s->forwarded)
            mp_hf_close(s, "upstream closed the connection in a response");
        else if (!s->closing) /* pinned: the client's connection ends with it */
            s->closing = true;
        mp_hf_side_close(&s->u);
        moved = true;
    }
    return moved;
}

/* ------------------------------------------------------------------ */
/* moving bytes                                                        */

/* Autodiscover: is the path of a URL naming the upstream one the proxy
 * relays, as the front will see it (normalised)?  (Else the URL is kept or
 * dropped: mapiproxy:http unrelayed urls.) */
bool mp_hx_url_path_relayed(const void *arg, const char *path, size_t len)
{
    char norm[600];
    long nl = len < sizeof norm ? mp_http_path_normalise(path, len, norm) : -1;
    return nl >= 0 && mp_http_route_find(arg, norm, (size_t)nl) != NULL;
}

void mp_hx_init(void)
{
    req_settings = (http_parser_settings){.on_message_begin = on_req_begin,
                                          .on_url = on_req_url,
                                          .on_header_field = on_req_field,
                                          .on_header_value = on_req_value,
                                          .on_headers_complete = on_req_headers,
                                          .on_body = on_req_body,
                                          .on_message_complete = on_req_complete};
    resp_settings = (http_parser_settings){.on_message_begin = on_resp_begin,
                                           .on_status = on_resp_status,
                                           .on_header_field = on_resp_field,
                                           .on_header_value = on_resp_value,
                                           .on_headers_complete = on_resp_headers,
                                           .on_body = on_resp_body,
                                           .on_message_complete = on_resp_complete};
}
