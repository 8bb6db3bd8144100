/* The MAPI/HTTP bridge (bridge.h). */
#include "transport/mapihttp/bridge.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "core/log.h"
#include "rewrite/rewrite.h"
#include "chain/chain.h"
#include "chain/services.h"
#include "transport/http/hconn.h"
#include "transport/mapihttp/body.h"
#include "transport/mapihttp/cookies.h"
#include "transport/mapihttp/mhseq.h"
#include "transport/mapihttp/mhcall.h"

int mp_mhb_hold(struct hconn *s, size_t have, size_t n, size_t limit)
{
    struct mp_http *h = s->h;
    if (n > limit || have > limit - n)
        return 413;
    if (h->held + n > h->cfg->http_held_budget)
        return 503;
    h->held += n;
    s->mh.held += n;
    return 0;
}

/* A MAPI/HTTP session cookie of another identity is answered as an unknown
 * one is: Connect and Bind (they make a new session), GetMailboxUrl and
 * GetAddressBookUrl (they need none) go on without it, the other types get
 * X-ResponseCode 10 (Context Not Found) from the proxy, and nothing reaches
 * the upstream. */
int mp_mhb_cookie_check(struct hconn *s)
{
    mp_hu_identity(s);
    char owner[sizeof s->who];
    if (!s->route || s->route->kind != MP_HTTP_ROUTE_RELAY || strncasecmp(s->path, "/mapi/", 6) ||
        mp_mh_cookies_allowed(&s->h->cookies, &s->req, s->who, s->h->auth.on, owner, sizeof owner))
        return 0;
    char a[sizeof s->who], b[sizeof s->who];
    int k = mp_mh_kind_lookup(s->xtype); /* these open a session, or need none */
    bool creates = k == MP_MH_CONNECT || k == MP_MH_BIND || k == MP_MH_GETMAILBOXURL ||
                   k == MP_MH_GETADDRESSBOOKURL;
    mp_info("http #%" PRIu64 " %s: %s: MAPI/HTTP session cookie %s%s used by %s: %s", s->id,
            s->peer, s->xtype[0] ? s->xtype : "-",
            owner[0] ? "of " : "the proxy did not see issued",
            owner[0] ? mp_log_safe_copy(a, sizeof a, owner) : "",
            s->who[0] ? mp_log_safe_copy(b, sizeof b, s->who) : "an unknown identity",
            creates ? "dropped, the request goes on" : "answered as unknown (X-ResponseCode 10)");
    if (creates) {
        mp_http_msg_del(&s->req, "cookie");
        return 0;
    }
    s->local_status = 200;
    s->local_rc = MP_MH_RC_CONTEXT_NOT_FOUND;
    return 1;
}

void mp_mhb_cookie_issued(struct hconn *s)
{
    mp_mh_cookie_issued(&s->h->cookies, &s->resp, s->who);
    /* A Disconnect or Unbind relayed past the chain ends its session too
     * (the chain's own end in mh_finish), whichever generation holds it. */
    if (!(s->mh.mod && s->mh.mc) &&
        (!strcasecmp(s->xtype, "Disconnect") || !strcasecmp(s->xtype, "Unbind")))
        mp_mh_session_forget(&mp_hf_session_front(s)->cookies, &s->req);
}

/* The request no longer uses an older front's sessions. */
static void mh_release_gen(struct hconn *s)
{
    if (s->mh.gh && s->mh.gh != s->h)
        s->mh.gh->lent--;
    s->mh.gh = NULL;
}

void mp_mhb_end(struct hconn *s)
{
    s->h->held -= s->mh.held;
    s->mh.held = 0;
    if (s->mh.mc)
        mp_mh_call_detach(s->mh.mc);
    s->mh.mc = NULL;
    if (s->mh.mses)
        mp_session_unref(s->mh.mses);
    s->mh.mses = NULL;
    mh_release_gen(s);
    s->mh.mod = s->mh.mod_resp = s->mh.head = s->mh.url = false;
    s->mh.relays = 0;
    s->mh.client_seq[0] = 0;
    mp_buf_free(&s->mh.mreq);
    mp_buf_free(&s->mh.mraw);
    mp_mh_stream_free(&s->mh.mst);
}

/* The front whose sessions and modules the request uses. */
static struct mp_http *mh_gen(struct hconn *s)
{
    return s->mh.gh ? s->mh.gh : s->h;
}

/* Appends bytes of the response entity for the client (chunked). */
static void mh_out(struct hconn *s, const void *p, size_t n)
{
    if (!n)
        return;
    char sz[24];
    int k = snprintf(sz, sizeof sz, "%zx\r\n", n);
    if (mp_buf_append(&s->c.conn.out, sz, (size_t)k) || mp_buf_append(&s->c.conn.out, p, n) ||
        mp_buf_append(&s->c.conn.out, "\r\n", 2))
        s->closing = true;
    s->resp_bytes += n;
}

/* The client's response head, when the upstream sent none (a module
 * answered): what Exchange sends. */
static void mh_own_head(struct hconn *s, uint32_t code)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/mapi-http\r\n"
                     "X-RequestType: %s\r\nX-RequestId: %s\r\nX-ResponseCode: %u\r\n"
                     "X-ServerApplication: mapiproxy\r\nCache-Control: private\r\n"
                     "Transfer-Encoding: chunked\r\n%s",
                     s->xtype, s->xid, code, s->keepalive ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(&s->c.conn.out, head, (size_t)n) ||
        mp_hu_mutual_line(s, 200, &s->c.conn.out) || mp_buf_append(&s->c.conn.out, "\r\n", 2))
        s->closing = true;
    s->mh.head = true;
    s->chunk_out = true;
    s->resp_started = true;
    if (!s->keepalive)
        s->close_after = true;
}

/* The request is answered: its response is complete. */
static void mh_finish(struct hconn *s, int status)
{
    if (mp_buf_append(&s->c.conn.out, "0\r\n\r\n", 5))
        s->closing = true;
    s->status = status;
    s->upstream_dl = 0;
    if (!strcasecmp(s->xtype, "Disconnect") || !strcasecmp(s->xtype, "Unbind"))
        mp_mh_session_forget(&mh_gen(s)->cookies, &s->req);
    mp_mhb_end(s);
    if (s->req_complete) {
        mp_hx_request_finished(s);
        if (!s->closing)
            http_parser_pause(&s->cp, 0);
    }
    if (!s->pumping && !s->dead)
        mp_hf_pump(s);
}

static void mh_answer(void *owner, const uint8_t *body, size_t len)
{
    struct hconn *s = owner;
    char seq[MP_MH_SEQ_MAX];
    if (s->mh.relays > 1 && s->mh.client_seq[0] && !mp_mh_seq_get(&s->resp, true, seq, sizeof seq))
        mp_mh_seq_remember(&mh_gen(s)->cookies.seq, &s->req, s->mh.client_seq, seq);
    if (!s->mh.head)
        mh_own_head(s, 0);
    struct mp_buf e = {0};
    int rc = (!s->mh.proc && mp_mh_stream_put_meta(&e, "PROCESSING")) ||
             mp_mh_stream_put_meta(&e, "DONE") ||
             mp_mh_stream_put_headers_like(&e, &s->mh.mst, 0) ||
             (len && mp_buf_append(&e, body, len));
    if (rc)
        s->closing = true;
    else
        mh_out(s, e.data, e.len);
    mp_buf_free(&e);
    mh_finish(s, 200);
}

static void mh_fail(void *owner, uint32_t code)
{
    struct hconn *s = owner;
    mp_warn("http #%" PRIu64 " %s %s: the module chain failed; X-ResponseCode %u to the client",
            s->id, s->peer, s->xtype, code);
    if (!s->mh.head)
        mh_own_head(s, code);
    struct mp_buf e = {0};
    if ((!s->mh.proc && mp_mh_stream_put_meta(&e, "PROCESSING")) ||
        mp_mh_stream_put_meta(&e, "DONE") || mp_mh_stream_put_headers(&e, code, 0, NULL))
        s->closing = true;
    else
        mh_out(s, e.data, e.len);
    mp_buf_free(&e);
    mh_finish(s, 200);
}

static void mh_relay(void *owner, const uint8_t *body, size_t len)
{
    struct hconn *s = owner;
    char seq[MP_MH_SEQ_MAX];
    /* again for the same request (a side request): the sequence the
     * upstream's last answer set */
    if (s->mh.relays++ && !mp_mh_seq_get(&s->resp, true, seq, sizeof seq))
        mp_mh_seq_set(&s->req, seq);
    struct mp_http_head_opts o = {
        .framing = MP_HTTP_LENGTH, .length = len, .host = s->h->up_hostport};
    if (mp_http_request_head(&s->req, s->method, &o, &s->u.conn.out) ||
        (len && mp_buf_append(&s->u.conn.out, body, len))) {
        s->closing = true;
        return;
    }
    s->forwarded = true;
    s->status = 0;
    s->mh.mod_resp = false;
    mp_buf_free(&s->mh.mraw);
    mp_mh_stream_free(&s->mh.mst);
    mp_mh_stream_init(&s->mh.mst);
    mp_hf_upstream_clock_start(s);
    if (!s->pumping && !s->dead)
        mp_hf_pump(s);
}

static const struct mp_mh_call_host mh_host = {mh_relay, mh_answer, mh_fail};

/* Does the chain want this request (POST /mapi/..., a type with a twin)? */
bool mp_mhb_wanted(struct hconn *s, const http_parser *p)
{
    if (p->method != HTTP_POST || !s->xtype[0] ||
        (strncasecmp(s->path, "/mapi/emsmdb", 12) && strncasecmp(s->path, "/mapi/nspi", 10)))
        return false;
    /* A session keeps the generation it began in: after a reload, its
     * requests on the new front's connections use the old front's
     * sessions and modules (doc/internals/http.md). */
    mh_release_gen(s);
    struct mp_http *h = mp_hf_session_front(s);
    if (mp_mh_seq_fix(&h->cookies.seq, &s->req))
        mp_debug("http #%" PRIu64 " %s %s: MapiSequence after the proxy's side requests", s->id,
                 s->peer, s->xtype);
    int k = mp_mh_kind_lookup(s->xtype);
    if (k == MP_MH_GETMAILBOXURL || k == MP_MH_GETADDRESSBOOKURL) {
        s->mh.kind = k; /* their answers name the upstream: rewritten, no module */
        s->mh.url = true;
        return true;
    }
    const struct mp_mh_kind_info *ki = k >= 0 ? mp_mh_kind_info((enum mp_mh_kind)k) : NULL;
    const struct mp_codec_iface *ifc =
        ki && ki->twin_iface ? mp_codec_iface_lookup(ki->twin_iface) : NULL;
    /* (the runtime's own want of EcDoConnectEx is for DCE/RPC: MAPI/HTTP
     * says the client's version in X-ClientApplication) */
    if (!ifc || !h->mods ||
        !(mp_modules_want(h->mods, ifc->uuid, (uint16_t)ki->twin_opnum) & ~(1u << MP_IDENT_BIT)))
        return false;
    s->mh.kind = k;
    s->mh.gh = h;
    if (h != s->h) {
        h->lent++;
        mp_info("http #%" PRIu64 " %s %s: session of an earlier configuration: its modules", s->id,
                s->peer, s->xtype);
    }
    return true;
}

/* The request body is complete: into the chain.  0 (the chain has it, or
 * answered it), or -1: relay it as it is. */
static int mh_start(struct hconn *s)
{
    struct mp_http *gh = mh_gen(s);
    s->mh.mses = mp_mh_session_for(&gh->cookies, gh->mods, &s->req);
    size_t xal;
    const char *xa = mp_http_msg_get(&s->req, "x-clientapplication", &xal);
    if (s->mh.mses && xa) {
        char v[128];
        snprintf(v, sizeof v, "%.*s", (int)(xal < sizeof v ? xal : sizeof v - 1), xa);
        mp_ident_client_application(s->mh.mses, v);
    }
    if (!s->h->auth.on) /* pass-through: whom the HTTP logon names (mp_hu_identity) */
        mp_ident_seen_user(s->mh.mses, s->who);
    uint32_t rc = 0;
    struct mp_mh_call *mc = NULL;
    mp_mh_stream_init(&s->mh.mst);
    s->mh.proc = s->mh.pend = 0;
    int r = mp_mh_call_start(gh->mods, s->mh.mses, s->peer, s->h->auth.on ? s->ua.ha.user : NULL,
                             (enum mp_mh_kind)s->mh.kind, mp_buf_head(&s->mh.mreq),
                             mp_buf_avail(&s->mh.mreq), &mh_host, s, &mc, &rc);
    if (r < 0) { /* malformed: the spec's error, nothing upstream */
        mp_info("http #%" PRIu64 " %s %s: request body does not decode; X-ResponseCode %u", s->id,
                s->peer, s->xtype, rc);
        mh_fail(s, rc);
        return 0;
    }
    if (!mc && !s->status && !s->forwarded)
        return -1;               /* no module takes it after all */
    if (s->status || !s->mh.mod) /* answered (or failed) while starting */
        mp_mh_call_detach(mc);
    else
        s->mh.mc = mc;
    return 0;
}

/* Response head of a chain request: only a 200 is collected. */
int mp_mhb_resp_head(struct hconn *s, http_parser *p)
{
    if (p->status_code != 200 && !s->head_req && mp_mh_call_side_pending(s->mh.mc)) {
        /* the proxy's side request refused: its body is collected and
         * dropped, the chain told at its end (mp_mhb_resp_done) */
        s->mh.http_rc = p->status_code;
        s->mh.side_http = true;
        s->mh.mod_resp = true;
        s->status = 200; /* the client's, whose head went out before */
        if (!http_should_keep_alive(p) || !s->keepalive)
            s->close_after = true;
        return 1;
    }
    s->mh.side_http = false;
    if (p->status_code != 200 || s->head_req) {
        mp_mh_call_detach(s->mh.mc); /* the upstream refused: pass its answer on */
        s->mh.mc = NULL;
        return 0;
    }
    mp_mh_session_register(&mh_gen(s)->cookies, &s->resp, s->mh.mses);
    size_t rl;
    const char *rc = mp_http_msg_get(&s->resp, "x-responsecode", &rl);
    s->mh.http_rc = rc && rl ? (uint32_t)strtoul(rc, NULL, 10) : 0;
    struct mp_http_head_opts o = {
        .framing = MP_HTTP_CHUNKED, .close = !s->keepalive, .rewrite_location = &s->h->names};
    if (!s->mh.head) {
        if (mp_mh_seq_get(&s->resp, true, s->mh.client_seq, sizeof s->mh.client_seq))
            s->mh.client_seq[0] = 0;
        if (mp_http_response_head(&s->resp, 200, &o, &s->c.conn.out))
            return -1;
    }
    s->mh.head = true;
    s->chunk_out = true;
    s->resp_started = true;
    s->mh.mod_resp = true;
    s->status = 200;
    if (!http_should_keep_alive(p) || !s->keepalive)
        s->close_after = true;
    return 1;
}

/* Response body bytes of a chain request: meta-tags go on at once. */
int mp_mhb_resp_body(struct hconn *s, const char *at, size_t len)
{
    if (mp_buf_avail(&s->mh.mraw) + len > s->h->cfg->http_max_body)
        return mp_hx_resp_fail(s, "MAPI/HTTP response larger than mapiproxy:http max body");
    if (mp_mhb_hold(s, 0, 2 * len, SIZE_MAX)) /* held twice: as received, and its body */
        return mp_hx_resp_fail(s, "MAPI/HTTP response over mapiproxy:http held body budget");
    if (mp_buf_append(&s->mh.mraw, at, len))
        return -1;
    mp_mh_stream_feed(&s->mh.mst, (const uint8_t *)at, len);
    for (; s->mh.proc < s->mh.mst.n_processing; s->mh.proc++)
        mh_out(s, "PROCESSING\r\n", 12);
    for (; s->mh.pend < s->mh.mst.n_pending; s->mh.pend++)
        mh_out(s, "PENDING\r\n", 9);
    return 0;
}

/* The upstream's response is complete: its body to the chain, or, when it
 * is no success, the rest of it to the client as it is. */
/* GetMailboxUrl / GetAddressBookUrl: the URL in the answer names the
 * upstream; it is rewritten like Autodiscover's. */
static void mh_url_answer(struct hconn *s)
{
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_body b;
    struct mp_buf nb = {0}, out = {0};
    const struct mp_mh_url_out *u = NULL;
    if (mp_mh_decode((enum mp_mh_kind)s->mh.kind, true, s->mh.mst.body.data, s->mh.mst.body.len, &b,
                     &a) == MP_MH_OK &&
        !b.side.status_code)
        u = b.call;
    char *url8 = u && u->url ? mp_mh_utf16_to_utf8(u->url, &a) : NULL;
    long k = url8 ? mp_http_rewrite(&s->h->names, (const uint8_t *)url8, strlen(url8), &nb) : 0;
    struct mp_mh_url_out nu = {0};
    if (k > 0 && !mp_buf_append(&nb, "", 1)) {
        nu = *u;
        nu.url = mp_mh_utf8_to_utf16((const char *)nb.data, &a);
        b.call = &nu;
    }
    if (k > 0 && nu.url && mp_mh_encode(&out, &b) == 0) {
        mp_debug("http #%" PRIu64 " %s %s: server URL rewritten to the proxy", s->id, s->peer,
                 s->xtype);
        mh_answer(s, out.data, out.len);
    } else {
        mh_answer(s, s->mh.mst.body.data, s->mh.mst.body.len);
    }
    mp_buf_free(&nb);
    mp_buf_free(&out);
    mp_arena_free(&a);
}

/* GetMailboxUrl's ServerDn / GetAddressBookUrl's UserDn: the proxy's
 * server names the client learned go back to the upstream's (non-transparent
 * mode: the rewrite module's map).  s->mh.mreq is replaced when they change. */
static void mh_url_request(struct hconn *s)
{
    if (!mp_rewrite_active())
        return;
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_body b;
    struct mp_buf nb = {0};
    struct mp_mh_url_in nu;
    const struct mp_mh_url_in *u = NULL;
    if (mp_mh_decode((enum mp_mh_kind)s->mh.kind, false, mp_buf_head(&s->mh.mreq),
                     mp_buf_avail(&s->mh.mreq), &b, &a) == MP_MH_OK)
        u = b.call;
    char *dn8 = u && u->dn ? mp_mh_utf16_to_utf8(u->dn, &a) : NULL;
    size_t n = 0;
    char *back = dn8 ? mp_rewrite_text(dn8, strlen(dn8), false, false, &n) : NULL;
    if (back) {
        nu = *u;
        nu.dn = mp_mh_utf8_to_utf16(back, &a);
        b.call = &nu;
        if (nu.dn && mp_mh_encode(&nb, &b) == 0) {
            mp_debug("http #%" PRIu64 " %s %s: the proxy's server name mapped back", s->id, s->peer,
                     s->xtype);
            mp_buf_free(&s->mh.mreq);
            s->mh.mreq = nb;
            nb = (struct mp_buf){0};
        }
    }
    free(back);
    mp_buf_free(&nb);
    mp_arena_free(&a);
}

void mp_mhb_resp_done(struct hconn *s)
{
    s->mh.mod_resp = false;
    s->upstream_dl = 0;
    /* the X-ResponseCode after DONE, else the head's (Exchange sends both) */
    uint32_t code = s->mh.mst.have_response_code ? s->mh.mst.response_code : s->mh.http_rc;
    bool ok = s->mh.mst.state == MP_MHS_BODY && code == 0 && !s->mh.side_http;
    if (!ok && !s->mh.url &&
        mp_mh_call_side_failed(s->mh.mc,
                               s->mh.side_http ? "HTTP status"
                               : code          ? "X-ResponseCode"
                                               : "incomplete answer, X-ResponseCode",
                               code))
        return; /* the chain goes on: another side request, or the client's answer */
    if (s->mh.url && ok) {
        mh_url_answer(s);
        return;
    }
    if (ok) {
        mp_mh_call_response(s->mh.mc, s->mh.mst.body.data, s->mh.mst.body.len);
        return; /* mh_answer / mh_fail finish the request */
    }
    /* pass the rest on: everything after the meta-tags already sent */
    size_t sent = (size_t)s->mh.proc * 12 + (size_t)s->mh.pend * 9;
    if (sent <= mp_buf_avail(&s->mh.mraw))
        mh_out(s, mp_buf_head(&s->mh.mraw) + sent, mp_buf_avail(&s->mh.mraw) - sent);
    mh_finish(s, 200);
}

int mp_mhb_request_head(struct hconn *s, const http_parser *p)
{
    s->mh.mod = true;
    mp_buf_free(&s->mh.mreq);
    if (s->mh.url && !mp_rewrite_active()) { /* only the answer is rewritten */
        mp_mh_stream_init(&s->mh.mst);
        s->mh.proc = s->mh.pend = 0;
        return 1;
    }
    /* held, up to its type's limit, for the chain (or the DN mapped back) */
    s->mh.limit = mp_mh_max_request_body((enum mp_mh_kind)s->mh.kind);
    if (s->mh.limit > s->h->cfg->http_max_body)
        s->mh.limit = s->h->cfg->http_max_body;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->mh.limit) {
        mp_info("http #%" PRIu64 " %s: %s body of %" PRIu64 " bytes, over the %zu "
                "held for its type: 413",
                s->id, s->peer, s->xtype, (uint64_t)p->content_length, s->mh.limit);
        return 413;
    }
    return 0;
}

int mp_mhb_request_done(struct hconn *s)
{
    if (s->mh.url)
        mh_url_request(s);
    if (s->mh.url || mh_start(s) < 0) { /* relayed as it came */
        struct mp_http_head_opts o = {.framing = MP_HTTP_LENGTH,
                                      .length = mp_buf_avail(&s->mh.mreq),
                                      .host = s->h->up_hostport};
        int bad =
            mp_http_request_head(&s->req, s->method, &o, &s->u.conn.out) ||
            mp_buf_append(&s->u.conn.out, mp_buf_head(&s->mh.mreq), mp_buf_avail(&s->mh.mreq));
        if (s->mh.url) { /* its answer is collected and rewritten */
            s->h->held -= s->mh.held;
            s->mh.held = 0;
            mp_buf_free(&s->mh.mreq);
            mp_mh_stream_init(&s->mh.mst);
            s->mh.proc = s->mh.pend = 0;
        } else {
            mp_mhb_end(s);
        }
        if (bad)
            return -1;
        s->forwarded = true;
        mp_hf_upstream_clock_start(s);
    }
    if (!s->status && !s->dead)
        http_parser_pause(&s->cp, 1); /* until the response is complete */
    return 0;
}
