/* The HTTPS front (doc/internals/http.md).
 *
 * A session is one client connection and, from its first relayed request
 * on, its own upstream connection (never shared: NTLM and Negotiate bind
 * their state to the connection).  Requests on a session are handled one at
 * a time: the request parser pauses when a request is complete and resumes
 * when its response is complete.  Bodies stream both ways as they arrive;
 * only Autodiscover answers are buffered (bounded) to rewrite the names in
 * them.  Every step is non-blocking: pump() moves bytes until nothing moves,
 * then the wanted epoll events and the one timer are set from the state. */
#include "http/front.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "http/hauth.h"
#include "http/msg.h"
#include "http/path.h"
#include "http/rewrite.h"
#include "modules/rewrite.h"
#include "mapihttp/mhcall.h"
#include "mapihttp/stream.h"
#include "net/accept.h"
#include "modules/runtime.h"
#include "ops/metrics.h"
#include "transport/rpch/rpch.h"

#define READ_CHUNK 16384
#define MAX_PARKED (64u << 10) /* client bytes read ahead while a request waits */
/* A request body must average this many bytes a second, after a grace of
 * mapiproxy:http header timeout, or the request gets 408 (doc/internals/http.md). */
#define BODY_MIN_RATE 4096u

struct hsess;

#define COWN_BUCKETS 1024u
#define MAX_COWN 65536u

struct side {
    struct hsess *s;
    struct mp_io io;
    SSL *ssl;
    bool client;
    bool connecting;  /* TCP connect in progress (upstream) */
    bool handshaking; /* TLS handshake in progress */
    bool hs_want_write;
    bool rd_wants_write; /* SSL_read asked to wait for writability */
    bool wr_wants_read;  /* SSL_write asked to wait for readability */
    bool open;           /* has a descriptor */
    bool eof;            /* the peer closed (or an error) */
    struct mp_buf in;    /* received, not yet parsed */
    struct mp_buf out;   /* to send */
    uint64_t out_since;  /* last write progress while out was not empty */
};

struct listener {
    struct mp_io io;
    struct mp_http *h;
};

struct mp_http {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    SSL_CTX *server_ctx, *client_ctx;
    struct sockaddr_storage up_addr;
    socklen_t up_addr_len;
    char up_hostport[300]; /* Host header for the upstream */
    struct mp_http_names names;
    struct listener ls[MP_MAX_LISTEN];
    size_t n_ls;
    struct hsess *sessions;
    size_t n_sess;
    uint64_t next_id;
    struct mp_modules *mods; /* the module chain (the relay's), or NULL */
    struct mhsess *mh;       /* module sessions by MapiContext cookie */
    size_t n_mh;
    struct mp_hauth auth; /* mapiproxy:http auth = terminate (hauth.c) */
    uint64_t held;        /* body bytes held by the module path (http held body budget) */
    struct cown *cown[COWN_BUCKETS]; /* MAPI/HTTP session cookies and who they belong to */
    size_t n_cown;
    uint64_t cown_swept_ms;
    struct mp_rpch *rpch; /* mapiproxy:rpc over http (transport/rpch) */
};

/* A MAPI/HTTP session cookie (MapiContext, gromox's sid) the upstream set,
 * and the identity of the request it answered: only that identity may use
 * it (doc/security.md). */
struct cown {
    struct cown *next;
    char cookie[128];
    char who[520];
    uint64_t last_ms;
};

/* A MAPI/HTTP session for the module chain: the upstream's MapiContext
 * cookie names it, whatever client connection a request comes on. */
struct mhsess {
    struct mhsess *next;
    char cookie[128];
    struct mp_session *ses;
    uint64_t last_ms;
};
#define MAX_MH_SESSIONS 4096u
#define MH_SESSION_IDLE_MS (2u * 3600u * 1000u)

enum route { R_NONE, R_RELAY, R_AUTOD };

struct hsess {
    struct mp_http *h;
    struct hsess *next, *prev;
    uint64_t id;
    char peer[64];
    struct side c, u;
    http_parser cp, up;
    struct mp_http_msg req, resp;
    struct mp_timer timer;
    bool dead, closing;
    int err_status; /* set by a request callback that fails: 413, 431 */
    /* the current request */
    bool in_request;    /* between message begin and the end of its response */
    bool req_complete;  /* its body is all read */
    bool forwarded;     /* its head went upstream */
    int local_status;   /* answered by the proxy (body discarded), or 0 */
    uint32_t local_rc;  /* with local_status 200: the X-ResponseCode of the proxy's answer */
    char who[520];      /* the identity of this request ("" when the proxy cannot tell) */
    char conn_who[520]; /* pass-through: the NTLM identity of the connection */
    bool req_chunked, head_req, keepalive, client_http10;
    enum route route;
    char method[16], path[160], xtype[48], xid[96];
    uint64_t req_bytes, t_start_us;
    /* its response */
    bool resp_started; /* bytes of a final response went to the client */
    bool interim;      /* the upstream message being parsed is 1xx */
    bool rewrite, chunk_out, close_after;
    int status;
    uint64_t resp_bytes;
    struct mp_buf body; /* Autodiscover body being collected */
    /* MAPI/HTTP through the module chain (mp_mh_call): the request body is
     * collected, then sent by the chain; the response's meta-tags stream on
     * and its body is collected, then answered by the chain */
    bool mod;      /* this request goes through the chain */
    bool mod_resp; /* its response is being collected */
    int mh_kind;
    struct mp_mh_call *mc;
    struct mp_session *mses; /* the module session of this request */
    struct mp_buf mreq;      /* the request body */
    size_t m_limit;          /* the most of it held for its request type */
    size_t held;             /* this session's part of h->held */
    struct mp_mh_stream mst; /* the response entity */
    struct mp_buf mraw;      /* the response entity as received */
    unsigned m_proc, m_pend; /* meta-tags passed on to the client */
    bool m_head;             /* the client's response head is out */
    bool m_url;              /* GetMailboxUrl/GetAddressBookUrl: its URL is rewritten */
    uint32_t m_http_rc;      /* X-ResponseCode of the head (gromox puts it only there) */
    bool pumping;            /* inside pump(): callbacks must not pump again */
    /* deadlines (ms; 0 = none) */
    uint64_t header_dl, idle_dl, upstream_dl;
    uint64_t body_t0, body_dl; /* the request body's: body_t0 + grace + bytes / BODY_MIN_RATE */
    /* authentication termination (hauth.c): the client's logon, the 401's
     * WWW-Authenticate lines; the proxy's NTLM handshake on the upstream
     * connection, whose requests go from ua_out while u.out is held */
    struct mp_hauth_conn ha;
    struct mp_buf www;
    int ua; /* 0 none yet, 1 NEGOTIATE sent, 2 AUTHENTICATE sent, 3 done */
    int ua_status;
    char ua_why[200]; /* why the handshake failed, for parse_upstream */
    struct mp_hauth_up hup;
    struct mp_buf ua_out;
    char *ua_url; /* the URL of the handshake's GETs (heap: only while it runs) */
    /* RPC over HTTP: this request's method (1 RPC_IN_DATA, 2 RPC_OUT_DATA; http-parser
     * saw POST) and, once accepted, its channel (doc/internals/rpch.md) */
    int rpch_method;
    struct mp_rpch_chan *rpch;
};

static http_parser_settings req_settings, resp_settings;

static void pump(struct hsess *s);
static void session_close(struct hsess *s, const char *why);

/* ------------------------------------------------------------------ */
/* transport: plain or TLS reads and writes                           */

/* > 0 bytes read; 0 would block; -1 end of stream or error. */
static ssize_t side_read(struct side *x, uint8_t *buf, size_t n)
{
    if (!x->ssl) {
        ssize_t r = read(x->io.fd, buf, n);
        if (r > 0)
            return r;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
    ERR_clear_error();
    int r = SSL_read(x->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) {
        x->rd_wants_write = false;
        return r;
    }
    switch (SSL_get_error(x->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        x->rd_wants_write = false;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        x->rd_wants_write = true;
        return 0;
    default:
        return -1;
    }
}

static ssize_t side_write(struct side *x, const uint8_t *buf, size_t n)
{
    if (!x->ssl) {
        ssize_t r = send(x->io.fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        return -1;
    }
    ERR_clear_error();
    int r = SSL_write(x->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) {
        x->wr_wants_read = false;
        return r;
    }
    switch (SSL_get_error(x->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        x->wr_wants_read = true;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        x->wr_wants_read = false;
        return 0;
    default:
        return -1;
    }
}

static void ssl_reason(char *dst, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, dst, n);
    else
        snprintf(dst, n, "connection closed during the handshake");
}

/* 1 done, 0 wait, -1 failed (why filled). */
static int side_handshake(struct side *x, char *why, size_t wn)
{
    ERR_clear_error();
    int r = SSL_do_handshake(x->ssl);
    if (r == 1) {
        x->handshaking = false;
        return 1;
    }
    int e = SSL_get_error(x->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        x->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    long vr = SSL_get_verify_result(x->ssl);
    if (!x->client && vr != X509_V_OK)
        snprintf(why, wn, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else
        ssl_reason(why, wn);
    return -1;
}

static void side_close(struct mp_loop *loop, struct side *x)
{
    if (x->ssl) {
        if (x->open && !x->handshaking && !x->connecting && !x->eof)
            SSL_shutdown(x->ssl); /* best effort close_notify, never waited for */
        SSL_free(x->ssl);
        x->ssl = NULL;
    }
    if (x->open)
        mp_io_close(loop, &x->io);
    x->open = false;
    x->eof = true;
    mp_buf_free(&x->in);
    mp_buf_free(&x->out);
}

/* ------------------------------------------------------------------ */
/* responses of the proxy itself and the request log                   */

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

static void log_request(struct hsess *s)
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
static void send_local(struct hsess *s, int st, bool close)
{
    char head[256], body[96];
    int bl = snprintf(body, sizeof body, "%d %s\n", st, reason_of(st));
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s", st,
                      reason_of(st), bl, close ? "Connection: close\r\n" : "");
    if (mp_buf_append(&s->c.out, head, (size_t)hl) ||
        (st == 401 && mp_buf_avail(&s->www) &&
         mp_buf_append(&s->c.out, mp_buf_head(&s->www), mp_buf_avail(&s->www))) ||
        mp_buf_append(&s->c.out, "\r\n", 2) || mp_buf_append(&s->c.out, body, (size_t)bl))
        s->closing = true;
    mp_buf_free(&s->www);
    s->status = st;
    s->resp_started = true;
    if (close)
        s->closing = true;
}

/* A MAPI/HTTP failure answered by the proxy (MS-OXCMAPIHTTP 2.2.3.3.3):
 * 200, X-ResponseCode, a short human-readable body. */
static void send_mh_error(struct hsess *s, uint32_t code)
{
    char head[512], body[128];
    const char *text = mp_mh_response_code_name(code);
    int bl = snprintf(body, sizeof body, "<html><body><p>%s</p></body></html>\r\n",
                      text ? text : "error");
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-ResponseCode: %u\r\n"
                      "X-RequestType: %s\r\nX-RequestId: %s\r\nCache-Control: private\r\n"
                      "Content-Length: %d\r\n%s\r\n",
                      code, s->xtype, s->xid, bl, s->keepalive ? "" : "Connection: close\r\n");
    if (hl < 0 || (size_t)hl >= sizeof head || mp_buf_append(&s->c.out, head, (size_t)hl) ||
        mp_buf_append(&s->c.out, body, (size_t)bl))
        s->closing = true;
    s->status = 200;
    s->resp_started = true;
    if (!s->keepalive)
        s->closing = true;
}

/* ------------------------------------------------------------------ */
/* MAPI/HTTP through the module chain (src/mapihttp/mhcall.h)          */

static void request_finished(struct hsess *s);
static int resp_fail(struct hsess *s, const char *why);

/* The value of cookie `name` in a Cookie header ("a=b; MapiContext=v"). */
static const char *cookie_in(const char *v, size_t vl, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < vl;) {
        while (i < vl && (v[i] == ' ' || v[i] == ';'))
            i++;
        size_t j = i;
        while (j < vl && v[j] != ';')
            j++;
        if (j - i > nl && !strncmp(v + i, name, nl) && v[i + nl] == '=') {
            *len = j - i - nl - 1;
            return v + i + nl + 1;
        }
        i = j;
    }
    return NULL;
}

/* MapiContext from the request's Cookie headers or the response's
 * Set-Cookie headers. */
static const char *mapi_context(const struct mp_http_msg *m, bool response, size_t *len)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *hd = &m->h[i];
        const char *nm = (const char *)m->raw.data + hd->name_off;
        const char *want = response ? "set-cookie" : "cookie";
        if (hd->name_len != strlen(want) || strncasecmp(nm, want, hd->name_len))
            continue;
        const char *v = (const char *)m->raw.data + hd->val_off;
        size_t vl = hd->val_len;
        if (response) { /* "MapiContext=v; Path=..." */
            size_t k = 0;
            while (k < vl && v[k] != ';')
                k++;
            vl = k;
        }
        /* Exchange's MapiContext; grommunio's gromox calls it "sid" */
        const char *c = cookie_in(v, vl, "MapiContext", len);
        if (!c)
            c = cookie_in(v, vl, "sid", len);
        if (c && *len && *len < sizeof(((struct mhsess *)0)->cookie))
            return c;
    }
    return NULL;
}

static struct mhsess *mh_find(struct mp_http *h, const char *c, size_t n)
{
    for (struct mhsess *m = h->mh; m; m = m->next)
        if (strlen(m->cookie) == n && !memcmp(m->cookie, c, n))
            return m;
    return NULL;
}

static void mh_drop(struct mp_http *h, struct mhsess *m)
{
    for (struct mhsess **pp = &h->mh; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    }
    mp_session_unref(m->ses);
    free(m);
    h->n_mh--;
}

/* Sessions idle for long, and the oldest beyond the limit, go. */
static void mh_expire(struct mp_http *h)
{
    uint64_t now = mp_now_ms();
    for (struct mhsess *m = h->mh, *nx; m; m = nx) {
        nx = m->next;
        if (now - m->last_ms > MH_SESSION_IDLE_MS)
            mh_drop(h, m);
    }
    while (h->n_mh >= MAX_MH_SESSIONS) {
        struct mhsess *old = h->mh;
        for (struct mhsess *m = h->mh; m; m = m->next)
            if (m->last_ms < old->last_ms)
                old = m;
        mh_drop(h, old);
    }
}

/* The module session of the current request: the one its MapiContext
 * cookie names, or a new one (registered when the upstream sets a cookie). */
static struct mp_session *mh_session(struct hsess *s)
{
    struct mp_http *h = s->h;
    size_t n;
    const char *c = mapi_context(&s->req, false, &n);
    struct mhsess *m = c ? mh_find(h, c, n) : NULL;
    if (m) {
        m->last_ms = mp_now_ms();
        mp_session_ref(m->ses);
        return m->ses;
    }
    struct mp_session *ses = mp_session_new(h->mods);
    if (ses)
        ses->id = (uint32_t)(0x40000000u | (h->next_id++ & 0x3fffffffu));
    return ses;
}

/* The upstream named the session (Set-Cookie MapiContext): remember it. */
static void mh_register(struct hsess *s)
{
    struct mp_http *h = s->h;
    size_t n;
    const char *c = mapi_context(&s->resp, true, &n);
    if (!c || !s->mses || mh_find(h, c, n))
        return;
    mh_expire(h);
    struct mhsess *m = calloc(1, sizeof(*m));
    if (!m)
        return;
    memcpy(m->cookie, c, n);
    m->ses = s->mses;
    mp_session_ref(m->ses);
    m->last_ms = mp_now_ms();
    m->next = h->mh;
    h->mh = m;
    h->n_mh++;
}

/* Disconnect / Unbind: the session ends with this request. */
static void mh_forget(struct hsess *s)
{
    size_t n;
    const char *c = mapi_context(&s->req, false, &n);
    struct mhsess *m = c ? mh_find(s->h, c, n) : NULL;
    if (m)
        mh_drop(s->h, m);
}

/* n more bytes of a body held by the module path: 0, 413 when the
 * request type's limit is passed, 503 when mapiproxy:http held body budget
 * is (all sessions together). */
static int hold(struct hsess *s, size_t have, size_t n, size_t limit)
{
    struct mp_http *h = s->h;
    if (n > limit || have > limit - n)
        return 413;
    if (h->held + n > h->cfg->http_held_budget)
        return 503;
    h->held += n;
    s->held += n;
    return 0;
}

/* ---- session cookies bound to identities (doc/security.md) ---- */

static struct cown **cown_bucket(struct mp_http *h, const char *c, size_t n)
{
    uint32_t x = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        x = (x ^ (uint8_t)c[i]) * 16777619u;
    return &h->cown[x % COWN_BUCKETS];
}

static struct cown *cown_find(struct mp_http *h, const char *c, size_t n)
{
    for (struct cown *o = *cown_bucket(h, c, n); o; o = o->next)
        if (strlen(o->cookie) == n && !memcmp(o->cookie, c, n))
            return o;
    return NULL;
}

/* Cookies unused for two hours go (at most once a minute); beyond
 * MAX_COWN, the least recently used. */
static void cown_sweep(struct mp_http *h)
{
    uint64_t now = mp_now_ms();
    if (h->n_cown < MAX_COWN && now - h->cown_swept_ms < 60000)
        return;
    h->cown_swept_ms = now;
    struct cown **oldest = NULL;
    for (size_t b = 0; b < COWN_BUCKETS; b++)
        for (struct cown **pp = &h->cown[b]; *pp;) {
            struct cown *o = *pp;
            if (now - o->last_ms > MH_SESSION_IDLE_MS) {
                *pp = o->next;
                free(o);
                h->n_cown--;
                continue;
            }
            if (!oldest || o->last_ms < (*oldest)->last_ms)
                oldest = pp;
            pp = &o->next;
        }
    if (h->n_cown >= MAX_COWN && oldest) {
        struct cown *o = *oldest;
        *oldest = o->next;
        free(o);
        h->n_cown--;
    }
}

/* The upstream set a session cookie in its answer: it belongs to the
 * identity of the request (nobody's when the proxy cannot tell who). */
static void cown_register(struct hsess *s)
{
    struct mp_http *h = s->h;
    size_t n;
    const char *c = mapi_context(&s->resp, true, &n);
    if (!c || !s->who[0])
        return;
    struct cown *o = cown_find(h, c, n);
    if (!o) {
        cown_sweep(h);
        if (!(o = calloc(1, sizeof *o)))
            return;
        memcpy(o->cookie, c, n);
        struct cown **b = cown_bucket(h, c, n);
        o->next = *b;
        *b = o;
        h->n_cown++;
    }
    snprintf(o->who, sizeof o->who, "%s", s->who);
    o->last_ms = mp_now_ms();
}

/* May this session cookie be used by this request?  Not when it belongs
 * to another identity, nor, when the proxy terminates logons (the upstream
 * sees only the proxy's account), when the proxy never saw it issued. */
static bool cookie_ok(struct hsess *s, const char *c, size_t n, char *owner, size_t on)
{
    struct cown *o = n < sizeof o->cookie ? cown_find(s->h, c, n) : NULL;
    if (!o) {
        owner[0] = 0;
        return !s->h->auth.on;
    }
    if (!strcasecmp(o->who, s->who)) {
        o->last_ms = mp_now_ms();
        return true;
    }
    snprintf(owner, on, "%s", o->who);
    return false;
}

/* Every MapiContext and sid cookie of the request (in any Cookie header,
 * however often) must pass cookie_ok: false (owner set) when one does not. */
static bool cookies_allowed(struct hsess *s, char *owner, size_t on)
{
    const struct mp_http_msg *m = &s->req;
    if (!s->h->auth.on && !s->who[0])
        return true; /* pass-through, nobody the proxy can name: the upstream decides */
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *hd = &m->h[i];
        if (hd->name_len != 6 || strncasecmp((const char *)m->raw.data + hd->name_off, "cookie", 6))
            continue;
        const char *v = (const char *)m->raw.data + hd->val_off;
        size_t vl = hd->val_len;
        for (size_t p = 0; p < vl;) {
            while (p < vl && (v[p] == ' ' || v[p] == ';'))
                p++;
            size_t e = p;
            while (e < vl && v[e] != ';')
                e++;
            const char *eq = memchr(v + p, '=', e - p);
            if (eq) {
                size_t nl = (size_t)(eq - (v + p));
                while (nl && v[p + nl - 1] == ' ')
                    nl--;
                bool ours = (nl == 11 && !strncasecmp(v + p, "MapiContext", 11)) ||
                            (nl == 3 && !strncasecmp(v + p, "sid", 3));
                const char *val = eq + 1;
                size_t len = (size_t)(v + e - val);
                while (len && *val == ' ')
                    val++, len--;
                while (len && val[len - 1] == ' ')
                    len--;
                if (ours && len && !cookie_ok(s, val, len, owner, on))
                    return false;
            }
            p = e;
        }
    }
    return true;
}

static void mh_end(struct hsess *s)
{
    s->h->held -= s->held;
    s->held = 0;
    if (s->mc)
        mp_mh_call_detach(s->mc);
    s->mc = NULL;
    if (s->mses)
        mp_session_unref(s->mses);
    s->mses = NULL;
    s->mod = s->mod_resp = s->m_head = s->m_url = false;
    mp_buf_free(&s->mreq);
    mp_buf_free(&s->mraw);
    mp_mh_stream_free(&s->mst);
}

/* Appends bytes of the response entity for the client (chunked). */
static void mh_out(struct hsess *s, const void *p, size_t n)
{
    if (!n)
        return;
    char sz[24];
    int k = snprintf(sz, sizeof sz, "%zx\r\n", n);
    if (mp_buf_append(&s->c.out, sz, (size_t)k) || mp_buf_append(&s->c.out, p, n) ||
        mp_buf_append(&s->c.out, "\r\n", 2))
        s->closing = true;
    s->resp_bytes += n;
}

/* The client's response head, when the upstream sent none (a module
 * answered): what Exchange sends. */
static void mh_own_head(struct hsess *s, uint32_t code)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/mapi-http\r\n"
                     "X-RequestType: %s\r\nX-RequestId: %s\r\nX-ResponseCode: %u\r\n"
                     "X-ServerApplication: mapiproxy\r\nCache-Control: private\r\n"
                     "Transfer-Encoding: chunked\r\n%s\r\n",
                     s->xtype, s->xid, code, s->keepalive ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(&s->c.out, head, (size_t)n))
        s->closing = true;
    s->m_head = true;
    s->chunk_out = true;
    s->resp_started = true;
    if (!s->keepalive)
        s->close_after = true;
}

/* The request is answered: its response is complete. */
static void mh_finish(struct hsess *s, int status)
{
    if (mp_buf_append(&s->c.out, "0\r\n\r\n", 5))
        s->closing = true;
    s->status = status;
    s->upstream_dl = 0;
    if (!strcasecmp(s->xtype, "Disconnect") || !strcasecmp(s->xtype, "Unbind"))
        mh_forget(s);
    mh_end(s);
    if (s->req_complete) {
        request_finished(s);
        if (!s->closing)
            http_parser_pause(&s->cp, 0);
    }
    if (!s->pumping && !s->dead)
        pump(s);
}

static void mh_answer(void *owner, const uint8_t *body, size_t len)
{
    struct hsess *s = owner;
    if (!s->m_head)
        mh_own_head(s, 0);
    struct mp_buf e = {0};
    int rc = (!s->m_proc && mp_mh_stream_put_meta(&e, "PROCESSING")) ||
             mp_mh_stream_put_meta(&e, "DONE") || mp_mh_stream_put_headers_like(&e, &s->mst, 0) ||
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
    struct hsess *s = owner;
    mp_warn("http #%" PRIu64 " %s %s: the module chain failed; X-ResponseCode %u to the client",
            s->id, s->peer, s->xtype, code);
    if (!s->m_head)
        mh_own_head(s, code);
    struct mp_buf e = {0};
    if ((!s->m_proc && mp_mh_stream_put_meta(&e, "PROCESSING")) ||
        mp_mh_stream_put_meta(&e, "DONE") || mp_mh_stream_put_headers(&e, code, 0, NULL))
        s->closing = true;
    else
        mh_out(s, e.data, e.len);
    mp_buf_free(&e);
    mh_finish(s, 200);
}

static void mh_relay(void *owner, const uint8_t *body, size_t len)
{
    struct hsess *s = owner;
    struct mp_http_head_opts o = {
        .framing = MP_HTTP_LENGTH, .length = len, .host = s->h->up_hostport};
    if (mp_http_request_head(&s->req, s->method, &o, &s->u.out) ||
        (len && mp_buf_append(&s->u.out, body, len))) {
        s->closing = true;
        return;
    }
    s->forwarded = true;
    s->status = 0;
    s->mod_resp = false;
    mp_buf_free(&s->mraw);
    mp_mh_stream_free(&s->mst);
    mp_mh_stream_init(&s->mst);
    if (!s->u.connecting && !s->u.handshaking)
        s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
    if (!s->pumping && !s->dead)
        pump(s);
}

static const struct mp_mh_call_host mh_host = {mh_relay, mh_answer, mh_fail};

/* Does the chain want this request (POST /mapi/..., a type with a twin)? */
static bool mh_wanted(struct hsess *s, const http_parser *p)
{
    struct mp_http *h = s->h;
    if (p->method != HTTP_POST || !s->xtype[0] ||
        (strncasecmp(s->path, "/mapi/emsmdb", 12) && strncasecmp(s->path, "/mapi/nspi", 10)))
        return false;
    int k = mp_mh_kind_lookup(s->xtype);
    if (k == MP_MH_GETMAILBOXURL || k == MP_MH_GETADDRESSBOOKURL) {
        s->mh_kind = k; /* their answers name the upstream: rewritten, no module */
        s->m_url = true;
        return true;
    }
    const struct mp_mh_kind_info *ki = k >= 0 ? mp_mh_kind_info((enum mp_mh_kind)k) : NULL;
    const struct mp_codec_iface *ifc =
        ki && ki->twin_iface ? mp_codec_iface_lookup(ki->twin_iface) : NULL;
    if (!ifc || !h->mods || !mp_modules_want(h->mods, ifc->uuid, (uint16_t)ki->twin_opnum))
        return false;
    s->mh_kind = k;
    return true;
}

/* The request body is complete: into the chain.  0 (the chain has it, or
 * answered it), or -1: relay it as it is. */
static int mh_start(struct hsess *s)
{
    s->mses = mh_session(s);
    uint32_t rc = 0;
    struct mp_mh_call *mc = NULL;
    mp_mh_stream_init(&s->mst);
    s->m_proc = s->m_pend = 0;
    int r = mp_mh_call_start(s->h->mods, s->mses, s->peer, s->h->auth.on ? s->ha.user : NULL,
                             (enum mp_mh_kind)s->mh_kind, mp_buf_head(&s->mreq),
                             mp_buf_avail(&s->mreq), &mh_host, s, &mc, &rc);
    if (r < 0) { /* malformed: the spec's error, nothing upstream */
        mp_info("http #%" PRIu64 " %s %s: request body does not decode; X-ResponseCode %u", s->id,
                s->peer, s->xtype, rc);
        mh_fail(s, rc);
        return 0;
    }
    if (!mc && !s->status && !s->forwarded)
        return -1;            /* no module takes it after all */
    if (s->status || !s->mod) /* answered (or failed) while starting */
        mp_mh_call_detach(mc);
    else
        s->mc = mc;
    return 0;
}

/* Response head of a chain request: only a 200 is collected. */
static int mh_resp_head(struct hsess *s, http_parser *p)
{
    if (p->status_code != 200 || s->head_req) {
        mp_mh_call_detach(s->mc); /* the upstream refused: pass its answer on */
        s->mc = NULL;
        return 0;
    }
    mh_register(s);
    size_t rl;
    const char *rc = mp_http_msg_get(&s->resp, "x-responsecode", &rl);
    s->m_http_rc = rc && rl ? (uint32_t)strtoul(rc, NULL, 10) : 0;
    struct mp_http_head_opts o = {
        .framing = MP_HTTP_CHUNKED, .close = !s->keepalive, .rewrite_location = &s->h->names};
    if (!s->m_head && mp_http_response_head(&s->resp, 200, &o, &s->c.out))
        return -1;
    s->m_head = true;
    s->chunk_out = true;
    s->resp_started = true;
    s->mod_resp = true;
    s->status = 200;
    if (!http_should_keep_alive(p) || !s->keepalive)
        s->close_after = true;
    return 1;
}

/* Response body bytes of a chain request: meta-tags go on at once. */
static int mh_resp_body(struct hsess *s, const char *at, size_t len)
{
    if (mp_buf_avail(&s->mraw) + len > s->h->cfg->http_max_body)
        return resp_fail(s, "MAPI/HTTP response larger than mapiproxy:http max body");
    if (hold(s, 0, 2 * len, SIZE_MAX)) /* held twice: as received, and its body */
        return resp_fail(s, "MAPI/HTTP response over mapiproxy:http held body budget");
    if (mp_buf_append(&s->mraw, at, len))
        return -1;
    mp_mh_stream_feed(&s->mst, (const uint8_t *)at, len);
    for (; s->m_proc < s->mst.n_processing; s->m_proc++)
        mh_out(s, "PROCESSING\r\n", 12);
    for (; s->m_pend < s->mst.n_pending; s->m_pend++)
        mh_out(s, "PENDING\r\n", 9);
    return 0;
}

/* The upstream's response is complete: its body to the chain, or, when it
 * is no success, the rest of it to the client as it is. */
/* GetMailboxUrl / GetAddressBookUrl: the URL in the answer names the
 * upstream; it is rewritten like Autodiscover's. */
static void mh_url_answer(struct hsess *s)
{
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_body b;
    struct mp_buf nb = {0}, out = {0};
    const struct mp_mh_url_out *u = NULL;
    if (mp_mh_decode((enum mp_mh_kind)s->mh_kind, true, s->mst.body.data, s->mst.body.len, &b,
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
        mh_answer(s, s->mst.body.data, s->mst.body.len);
    }
    mp_buf_free(&nb);
    mp_buf_free(&out);
    mp_arena_free(&a);
}

/* GetMailboxUrl's ServerDn / GetAddressBookUrl's UserDn: the proxy's
 * server names the client learned go back to the upstream's (non-transparent
 * mode: the rewrite module's map).  s->mreq is replaced when they change. */
static void mh_url_request(struct hsess *s)
{
    if (!mp_rewrite_active())
        return;
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_body b;
    struct mp_buf nb = {0};
    struct mp_mh_url_in nu;
    const struct mp_mh_url_in *u = NULL;
    if (mp_mh_decode((enum mp_mh_kind)s->mh_kind, false, mp_buf_head(&s->mreq),
                     mp_buf_avail(&s->mreq), &b, &a) == MP_MH_OK)
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
            mp_buf_free(&s->mreq);
            s->mreq = nb;
            nb = (struct mp_buf){0};
        }
    }
    free(back);
    mp_buf_free(&nb);
    mp_arena_free(&a);
}

static void mh_resp_done(struct hsess *s)
{
    s->mod_resp = false;
    s->upstream_dl = 0;
    /* the X-ResponseCode after DONE, else the head's (Exchange sends both) */
    uint32_t code = s->mst.have_response_code ? s->mst.response_code : s->m_http_rc;
    bool ok = s->mst.state == MP_MHS_BODY && code == 0;
    if (s->m_url && ok) {
        mh_url_answer(s);
        return;
    }
    if (ok) {
        mp_mh_call_response(s->mc, s->mst.body.data, s->mst.body.len);
        return; /* mh_answer / mh_fail finish the request */
    }
    /* pass the rest on: everything after the meta-tags already sent */
    size_t sent = (size_t)s->m_proc * 12 + (size_t)s->m_pend * 9;
    if (sent <= mp_buf_avail(&s->mraw))
        mh_out(s, mp_buf_head(&s->mraw) + sent, mp_buf_avail(&s->mraw) - sent);
    mh_finish(s, 200);
}

/* The upstream failed: the request gets 502/504 if nothing of its response
 * was sent yet; the session ends either way (its upstream is gone). */
static void upstream_failed(struct hsess *s, int st, const char *why)
{
    mh_end(s);
    mp_warn("http #%" PRIu64 " %s upstream %s: %s", s->id, s->peer, s->h->up_hostport, why);
    side_close(s->h->loop, &s->u);
    if (s->in_request && !s->resp_started) {
        send_local(s, st, true);
        log_request(s);
        s->in_request = false;
    } else {
        session_close(s, "upstream closed");
    }
}

/* ------------------------------------------------------------------ */
/* upstream connection                                                 */

static void io_cb(struct mp_io *io, uint32_t ev);

static int upstream_start(struct hsess *s)
{
    struct mp_http *h = s->h;
    int fd = socket(h->up_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&h->up_addr, h->up_addr_len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    s->u.io.fd = fd;
    s->u.io.cb = io_cb;
    s->u.io.data = &s->u;
    s->u.open = true;
    s->u.connecting = true;
    s->u.eof = false;
    s->upstream_dl = mp_now_ms() + h->cfg->connect_timeout_ms;
    mp_debug("http #%" PRIu64 " %s: connecting to upstream %s", s->id, s->peer, h->up_hostport);
    return 0;
}

/* The TCP connect finished: check it, start TLS. */
static void upstream_connected(struct hsess *s)
{
    struct mp_http *h = s->h;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(s->u.io.fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err) {
        char why[160];
        snprintf(why, sizeof why, "connect failed: %s", strerror(err));
        upstream_failed(s, 502, why);
        return;
    }
    s->u.connecting = false;
    if (!h->cfg->http_upstream.tls) {
        s->upstream_dl = mp_now_ms() + (uint64_t)h->cfg->http_upstream_timeout_s * 1000;
        return;
    }
    SSL *ssl = SSL_new(h->client_ctx);
    if (!ssl) {
        upstream_failed(s, 502, "out of memory for TLS");
        return;
    }
    s->u.ssl = ssl;
    const char *host = h->cfg->http_upstream.host;
    unsigned char tmp[16];
    bool literal = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
    if (!literal)
        SSL_set_tlsext_host_name(ssl, host);
    if (h->cfg->tls_verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
                         : X509_VERIFY_PARAM_set1_host(vp, host, 0);
        if (!ok) {
            upstream_failed(s, 502, "cannot set the name to verify");
            return;
        }
    }
    SSL_set_fd(ssl, s->u.io.fd);
    SSL_set_connect_state(ssl);
    s->u.handshaking = true;
}

/* ------------------------------------------------------------------ */
/* authentication termination (hauth.c)                                */

/* The client's logon, before its request may reach the upstream: 0 to go
 * on (its Authorization replaced by the proxy's Basic one, or removed), 1
 * when the proxy answers 401 itself. */
static int auth_request(struct hsess *s)
{
    struct mp_http *h = s->h;
    size_t al = 0;
    const char *az = mp_http_msg_get(&s->req, "authorization", &al);
    char why[200];
    bool was = s->ha.authed;
    mp_buf_free(&s->www);
    enum mp_hauth_verdict v = mp_hauth_client(&h->auth, &s->ha, az, al, &s->www, why, sizeof why);
    char user[sizeof s->ha.user]; /* the client's text: never raw in a log line */
    mp_log_safe_copy(user, sizeof user, s->ha.user[0] ? s->ha.user : "-");
    if (v == MP_HAUTH_DENY)
        mp_info("http #%" PRIu64 " %s: logon refused: user=%s: %s", s->id, s->peer, user, why);
    if (v == MP_HAUTH_DENY)
        mp_metrics_auth(az && al > 5 && !strncasecmp(az, "Basic", 5) ? "Basic" : "NTLM", false);
    if (v != MP_HAUTH_PASS) {
        s->local_status = 401;
        return 1;
    }
    if (s->ha.authed && !was)
        mp_info("http #%" PRIu64 " %s: logged on as %s (NTLM, this connection)", s->id, s->peer,
                user);
    else if (!s->ha.authed)
        mp_debug("http #%" PRIu64 " %s: Basic logon of %s", s->id, s->peer, user);
    if (!(s->ha.authed && was))
        mp_metrics_auth(s->ha.authed ? "NTLM" : "Basic", true);
    mp_http_msg_del(&s->req, "authorization");
    if (h->auth.up_basic) {
        char val[1200];
        int bad = mp_hauth_up_basic(&h->auth, val, sizeof val) ||
                  mp_http_msg_add(&s->req, "Authorization", val);
        mp_ntlm_cleanse(val, sizeof val);
        if (bad) {
            s->local_status = 502;
            return 1;
        }
    }
    return 0;
}

/* One leg of the proxy's NTLM handshake on the upstream connection: a GET
 * of the client's first URL without a body, held requests wait in u.out. */
static int ua_send(struct hsess *s, const struct mp_buf *authval)
{
    char head[400];
    int n = snprintf(head, sizeof head, " HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n",
                     s->h->up_hostport);
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(&s->ua_out, "GET ", 4) ||
        mp_buf_append(&s->ua_out, s->ua_url, strlen(s->ua_url)) ||
        mp_buf_append(&s->ua_out, head, (size_t)n) ||
        mp_buf_append(&s->ua_out, "Authorization: ", 15) ||
        mp_buf_append(&s->ua_out, mp_buf_head(authval), mp_buf_avail(authval)) ||
        mp_buf_append(&s->ua_out, "\r\n\r\n", 4))
        return -1;
    return 0;
}

/* Who sends this request: the logged-on user when the proxy terminates
 * logons; in pass-through what the client's NTLM AUTHENTICATE (for its
 * connection) or Basic header (for the request) names, which the upstream
 * verifies; "" when the proxy cannot tell (Kerberos, Bearer). */
static void request_identity(struct hsess *s)
{
    if (s->h->auth.on) {
        snprintf(s->who, sizeof s->who, "%s", s->ha.user);
        return;
    }
    size_t al = 0;
    const char *az = mp_http_msg_get(&s->req, "authorization", &al);
    char w[sizeof s->who];
    int k = az ? mp_hauth_peek_identity(az, al, w, sizeof w) : 0;
    if (k == 1)
        snprintf(s->conn_who, sizeof s->conn_who, "%s", w);
    snprintf(s->who, sizeof s->who, "%s", k == 2 ? w : s->conn_who);
}

/* A MAPI/HTTP session cookie of another identity is answered as an unknown
 * one is: Connect and Bind (they make a new session), GetMailboxUrl and
 * GetAddressBookUrl (they need none) go on without it, the other types get X-ResponseCode 10
 * (Context Not Found) from the proxy, and nothing reaches the upstream.  1 when the proxy answers.
 */
static int session_cookie_check(struct hsess *s)
{
    request_identity(s);
    char owner[sizeof s->who];
    if (s->route != R_RELAY || strncasecmp(s->path, "/mapi/", 6) ||
        cookies_allowed(s, owner, sizeof owner))
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

static int ua_begin(struct hsess *s, const char *url, size_t ul)
{
    free(s->ua_url);
    s->ua_url = strndup(url, ul); /* bounded by mapiproxy:http max header size */
    if (!s->ua_url)
        return -1;
    for (char *q = s->ua_url; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            *q = '_';
    struct mp_buf v = {0};
    int rc = mp_hauth_up_negotiate(&s->h->auth, &s->hup, &v) || ua_send(s, &v);
    mp_buf_free(&v);
    if (rc)
        return -1;
    s->ua = 1;
    return 0;
}

/* A response to a handshake leg is complete.  0, or -1 with ua_why set. */
static int ua_step(struct hsess *s, http_parser *p)
{
    const struct mp_config *cfg = s->h->cfg;
    if (s->ua_status < 200)
        return 0; /* interim */
    if (s->ua == 2 && s->ua_status == 401) {
        snprintf(s->ua_why, sizeof s->ua_why, "refused the proxy's logon as %.60s%s%.60s",
                 cfg->domain, cfg->domain[0] ? "\\" : "", cfg->username);
        return -1;
    }
    if (!http_should_keep_alive(p)) {
        snprintf(s->ua_why, sizeof s->ua_why,
                 "closes its connection in the proxy's NTLM handshake (status %d)", s->ua_status);
        return -1;
    }
    if (s->ua == 2 || s->ua_status != 401) {
        mp_debug("http #%" PRIu64 " %s: upstream logon done (status %d)", s->id, s->peer,
                 s->ua_status);
        s->ua = 3;
        mp_hauth_up_free(&s->hup);
        mp_buf_free(&s->ua_out);
        free(s->ua_url);
        s->ua_url = NULL;
        return 0;
    }
    size_t l = 0;
    const char *w = NULL;
    for (size_t i = 0; (w = mp_http_msg_get_nth(&s->resp, "www-authenticate", i, &l)); i++)
        if (l > 5 && !strncasecmp(w, "NTLM ", 5))
            break;
    struct mp_buf v = {0};
    char why[120];
    int rc = mp_hauth_up_authenticate(&s->hup, w, w ? l : 0, &v, why, sizeof why);
    if (rc)
        snprintf(s->ua_why, sizeof s->ua_why, "%s", why);
    else if (ua_send(s, &v))
        snprintf(s->ua_why, sizeof s->ua_why, "out of memory"), rc = -1;
    mp_buf_free(&v);
    if (rc)
        return -1;
    s->ua = 2;
    return 0;
}

static bool ua_busy(const struct hsess *s)
{
    return s->ua == 1 || s->ua == 2;
}

/* What is written to a leg: the upstream's held requests wait while the
 * proxy's handshake runs. */
static struct mp_buf *wbuf(struct hsess *s, struct side *x)
{
    return !x->client && ua_busy(s) ? &s->ua_out : &x->out;
}

/* ------------------------------------------------------------------ */
/* request parser callbacks (client -> upstream)                       */

static bool path_is(const char *path, size_t len, const char *prefix, bool any_tail)
{
    size_t pl = strlen(prefix);
    if (len < pl || strncasecmp(path, prefix, pl))
        return false;
    if (any_tail || len == pl)
        return true;
    return path[pl] == '/' || path[pl] == '?';
}

/* mapiproxy:http relay paths: a prefix ending in '/' takes any tail,
 * another one the exact path or a '/' or '?' after it. */
static bool relay_path_listed(const struct mp_config *cfg, const char *path, size_t pl)
{
    for (const char *s = cfg->http_relay_paths; *s;) {
        s += strspn(s, ", \t");
        size_t l = strcspn(s, ", \t");
        if (l && l < 256) {
            char pre[256];
            memcpy(pre, s, l);
            pre[l] = 0;
            if (path_is(path, pl, pre, pre[l - 1] == '/'))
                return true;
        }
        s += l;
    }
    return false;
}

static enum route route_of(const struct mp_config *cfg, const char *url, size_t len)
{
    size_t pl = 0;
    while (pl < len && url[pl] != '?' && url[pl] != '#')
        pl++;
    if (path_is(url, pl, "/autodiscover/autodiscover.xml", false) ||
        path_is(url, pl, "/autodiscover/autodiscover.json", false))
        return R_AUTOD;
    if (path_is(url, pl, "/mapi/emsmdb", false) || path_is(url, pl, "/mapi/nspi", false) ||
        path_is(url, pl, "/autodiscover/", true) || path_is(url, pl, "/rpc/", true))
        return R_RELAY;
    if (relay_path_listed(cfg, url, pl))
        return R_RELAY;
    return cfg->http_relay_all ? R_RELAY : R_NONE;
}

/* Autodiscover: is the path of a URL naming the upstream one the proxy
 * relays, as the front will see it (normalised)?  (Else the URL is kept or
 * dropped: mapiproxy:http unrelayed urls.) */
static bool url_path_relayed(const void *arg, const char *path, size_t len)
{
    char norm[600];
    long nl = len < sizeof norm ? mp_http_path_normalise(path, len, norm) : -1;
    return nl >= 0 && route_of(arg, norm, (size_t)nl) != R_NONE;
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
    struct hsess *s = p->data;
    struct mp_http *h = s->h;
    mp_http_msg_reset(&s->req);
    s->in_request = true;
    s->req_complete = s->forwarded = s->resp_started = s->interim = false;
    s->rewrite = s->chunk_out = s->close_after = false;
    s->local_status = s->status = s->err_status = 0;
    s->local_rc = 0;
    s->who[0] = 0;
    s->req_bytes = s->resp_bytes = 0;
    s->method[0] = s->path[0] = s->xtype[0] = s->xid[0] = 0;
    s->route = R_NONE;
    s->rpch_method = 0;
    s->t_start_us = mp_now_us();
    s->idle_dl = 0;
    if (!s->header_dl)
        s->header_dl = mp_now_ms() + (uint64_t)h->cfg->http_header_timeout_s * 1000;
    return 0;
}

static int on_req_url(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    if (mp_http_msg_url(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_req_field(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    if (mp_http_msg_field(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

static int on_req_value(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    if (mp_http_msg_value(&s->req, at, len)) {
        s->err_status = 431;
        return -1;
    }
    return 0;
}

/* The body's deadline from the bytes it has brought so far. */
static void body_deadline(struct hsess *s)
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
static int normalise_target(struct hsess *s)
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

static bool may_read(struct hsess *s, struct side *x);
static uint32_t wanted(struct side *x, bool can_read);

static void rpch_send(void *owner, const uint8_t *p, size_t n)
{
    struct hsess *s = owner;
    if (s->dead)
        return;
    if (mp_buf_append(&s->c.out, p, n)) {
        s->closing = true;
        return;
    }
    s->resp_started = true;
    if (s->c.open) /* written from the loop: never re-entered from here */
        mp_io_set(s->h->loop, &s->c.io, wanted(&s->c, may_read(s, &s->c)));
}

static void rpch_close(void *owner, const char *why)
{
    session_close(owner, why);
}

static const struct mp_rpch_chan_host rpch_host = {rpch_send, rpch_close};

/* A channel request answered by the proxy: now (its body may be 1 GiB),
 * and the connection closed once the answer is out. */
static int rpch_refuse(struct hsess *s, http_parser *p, int st)
{
    side_close(s->h->loop, &s->u);
    send_local(s, st, true);
    log_request(s);
    s->in_request = false;
    s->local_status = 0;
    http_parser_pause(p, 1);
    return 0;
}

/* An RPC_IN_DATA / RPC_OUT_DATA head: the client logs on to the proxy
 * (mapiproxy:http auth = terminate), then its body is the channel's. */
static int rpch_headers(struct hsess *s, http_parser *p, const char *url, size_t pl)
{
    struct mp_http *h = s->h;
    bool out = s->rpch_method == 2;
    snprintf(s->method, sizeof s->method, "%s", out ? "RPC_OUT_DATA" : "RPC_IN_DATA");
    uint64_t len = (p->flags & F_CONTENTLENGTH) ? p->content_length : 0;
    s->body_dl = 0; /* a channel's body is as slow as the client's calls */
    if (s->req_chunked || !path_is(url, pl, "/rpc/rpcproxy.dll", false)) {
        mp_info("http #%" PRIu64 " %s: %s %s: %d", s->id, s->peer, s->method,
                s->req_chunked ? "chunked" : "not on /rpc/rpcproxy.dll",
                s->req_chunked ? 400 : 404);
        return rpch_refuse(s, p, s->req_chunked ? 400 : 404);
    }
    if (h->auth.on && auth_request(s)) /* an NTLM leg has no body: answered at its end */
        return len ? rpch_refuse(s, p, s->local_status) : 0;
    if (!len)
        return rpch_refuse(s, p, 400);
    char host[64];
    snprintf(host, sizeof host, "%s", s->peer);
    char *colon = strrchr(host, ':');
    unsigned port = 0;
    if (colon) {
        *colon = 0;
        port = (unsigned)strtoul(colon + 1, NULL, 10);
    }
    s->rpch = mp_rpch_chan_new(h->rpch, out, host, (uint16_t)port, len, &rpch_host, s);
    if (!s->rpch) {
        s->local_status = 503;
        s->keepalive = false;
        return 0;
    }
    size_t el = 0;
    const char *ex = mp_http_msg_get(&s->req, "expect", &el);
    if (ex && el == 12 && !strncasecmp(ex, "100-continue", 12))
        rpch_send(s, (const uint8_t *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    mp_debug("http #%" PRIu64 " %s: %s channel, %" PRIu64 " bytes", s->id, s->peer, s->method, len);
    return 0;
}

static int on_req_headers(http_parser *p)
{
    struct hsess *s = p->data;
    struct mp_http *h = s->h;
    const struct mp_config *cfg = h->cfg;
    s->header_dl = 0;
    s->body_t0 = mp_now_ms();
    body_deadline(s);
    snprintf(s->method, sizeof s->method, "%s", http_method_str((enum http_method)p->method));
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
    if (s->rpch_method)
        return rpch_headers(s, p, url, pl);
    s->head_req = p->method == HTTP_HEAD;
    s->client_http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
    s->req_chunked = (p->flags & F_CHUNKED) != 0;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > cfg->http_max_body) {
        s->err_status = 413;
        return -1;
    }
    s->route = route_of(cfg, url, ul);
    if (s->route == R_NONE) {
        s->local_status = 404;
        return 0;
    }
    if (h->auth.on && auth_request(s))
        return 0;
    if (session_cookie_check(s))
        return 0;
    if (!s->u.open && !s->u.eof) {
        if (upstream_start(s)) {
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
    if (h->auth.on && !h->auth.up_basic && !s->ua && ua_begin(s, url, ul)) {
        mp_warn("http #%" PRIu64 " %s upstream %s: cannot start the proxy's NTLM logon", s->id,
                s->peer, h->up_hostport);
        side_close(h->loop, &s->u);
        s->u.eof = true;
        s->local_status = 502;
        return 0;
    }
    if (s->route == R_RELAY && mh_wanted(s, p)) {
        s->mod = true;
        mp_buf_free(&s->mreq);
        if (s->m_url && !mp_rewrite_active()) { /* only the answer is rewritten */
            mp_mh_stream_init(&s->mst);
            s->m_proc = s->m_pend = 0;
        } else { /* held, up to its type's limit, for the chain (or the DN mapped back) */
            s->m_limit = mp_mh_max_request_body((enum mp_mh_kind)s->mh_kind);
            if (s->m_limit > cfg->http_max_body)
                s->m_limit = cfg->http_max_body;
            if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->m_limit) {
                mp_info("http #%" PRIu64 " %s: %s body of %" PRIu64 " bytes, over the %zu "
                        "held for its type: 413",
                        s->id, s->peer, s->xtype, (uint64_t)p->content_length, s->m_limit);
                s->err_status = 413;
                return -1;
            }
            return 0;
        }
    }
    struct mp_http_head_opts o = {
        .framing = s->req_chunked                 ? MP_HTTP_CHUNKED
                   : (p->flags & F_CONTENTLENGTH) ? MP_HTTP_LENGTH
                                                  : MP_HTTP_NO_BODY,
        .length = p->content_length,
        .host = h->up_hostport,
        .strip_accept_encoding = s->route == R_AUTOD,
    };
    if (mp_http_request_head(&s->req, s->method, &o, &s->u.out)) {
        s->err_status = 502;
        return -1;
    }
    s->forwarded = true;
    if (!s->u.connecting && !s->u.handshaking)
        s->upstream_dl = mp_now_ms() + (uint64_t)cfg->http_upstream_timeout_s * 1000;
    return 0;
}

static int on_req_body(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    if (s->rpch) {
        const char *err = mp_rpch_chan_data(s->rpch, (const uint8_t *)at, len);
        if (err) {
            mp_warn("http #%" PRIu64 " %s: %s: %s: closed", s->id, s->peer, s->method, err);
            http_parser_pause(p, 1);
            session_close(s, err);
        }
        return 0;
    }
    s->req_bytes += len;
    body_deadline(s);
    if (s->req_bytes > s->h->cfg->http_max_body) {
        s->err_status = 413;
        return -1;
    }
    if (s->mod && !s->forwarded) {
        int st = hold(s, mp_buf_avail(&s->mreq), len, s->m_limit);
        if (st) {
            mp_info("http #%" PRIu64 " %s: %s body %s: %d", s->id, s->peer, s->xtype,
                    st == 413 ? "over what is held for its type"
                              : "over mapiproxy:http held body budget",
                    st);
            s->err_status = st;
            return -1;
        }
        return mp_buf_append(&s->mreq, at, len) ? -1 : 0;
    }
    if (!s->forwarded)
        return 0; /* answered by the proxy: the body is read and dropped */
    if (s->req_chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        if (mp_buf_append(&s->u.out, sz, (size_t)n) || mp_buf_append(&s->u.out, at, len) ||
            mp_buf_append(&s->u.out, "\r\n", 2)) {
            s->err_status = 502;
            return -1;
        }
        return 0;
    }
    if (mp_buf_append(&s->u.out, at, len)) {
        s->err_status = 502;
        return -1;
    }
    return 0;
}

static void request_finished(struct hsess *s)
{
    s->in_request = false;
    log_request(s);
    if (!s->keepalive || s->close_after)
        s->closing = true;
    else
        s->idle_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_idle_timeout_s * 1000;
}

static int on_req_complete(http_parser *p)
{
    struct hsess *s = p->data;
    if (s->rpch && !s->dead) {
        if (s->rpch_method == 1) /* the client recycles before that: we do not yet */
            session_close(s, "RPC_IN_DATA Content-Length used up");
        else
            http_parser_pause(p, 1); /* the OUT channel's answer streams on */
        return 0;
    }
    s->req_complete = true;
    s->body_dl = 0;
    if (s->forwarded && !s->u.connecting && !s->u.handshaking) /* its answer is awaited now */
        s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
    if (s->mod && !s->forwarded && !s->local_status) {
        if (s->m_url)
            mh_url_request(s);
        if (s->m_url || mh_start(s) < 0) { /* relayed as it came */
            struct mp_http_head_opts o = {.framing = MP_HTTP_LENGTH,
                                          .length = mp_buf_avail(&s->mreq),
                                          .host = s->h->up_hostport};
            int bad = mp_http_request_head(&s->req, s->method, &o, &s->u.out) ||
                      mp_buf_append(&s->u.out, mp_buf_head(&s->mreq), mp_buf_avail(&s->mreq));
            if (s->m_url) { /* its answer is collected and rewritten */
                s->h->held -= s->held;
                s->held = 0;
                mp_buf_free(&s->mreq);
                mp_mh_stream_init(&s->mst);
                s->m_proc = s->m_pend = 0;
            } else {
                mh_end(s);
            }
            if (bad) {
                s->err_status = 502;
                return -1;
            }
            s->forwarded = true;
            if (!s->u.connecting && !s->u.handshaking)
                s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
        }
        if (!s->status && !s->dead)
            http_parser_pause(p, 1); /* until the response is complete */
        return 0;
    }
    if (s->forwarded) {
        if (s->req_chunked && mp_buf_append(&s->u.out, "0\r\n\r\n", 5)) {
            s->err_status = 502;
            return -1;
        }
        if (s->status) { /* the response already ended (early answer) */
            request_finished(s);
            return 0;
        }
        http_parser_pause(p, 1); /* until the response is complete */
        return 0;
    }
    if (s->local_status == 200 && s->local_rc) {
        send_mh_error(s, s->local_rc);
        request_finished(s);
    } else if (s->local_status) {
        send_local(s, s->local_status, !s->keepalive || s->local_status >= 500);
        request_finished(s);
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* response parser callbacks (upstream -> client)                      */

static int resp_fail(struct hsess *s, const char *why)
{
    mp_warn("http #%" PRIu64 " %s upstream %s: %s", s->id, s->peer, s->h->up_hostport, why);
    return -1;
}

static int on_resp_begin(http_parser *p)
{
    struct hsess *s = p->data;
    if (ua_busy(s)) {
        mp_http_msg_reset(&s->resp);
        return 0;
    }
    if (!s->in_request || !s->forwarded || s->status)
        return resp_fail(s, "sent a response no request asked for");
    mp_http_msg_reset(&s->resp);
    return 0;
}

static int on_resp_status(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    return mp_http_msg_url(&s->resp, at, len) ? resp_fail(s, "status line too long") : 0;
}

static int on_resp_field(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    return mp_http_msg_field(&s->resp, at, len) ? resp_fail(s, "response head too large") : 0;
}

static int on_resp_value(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    return mp_http_msg_value(&s->resp, at, len) ? resp_fail(s, "response head too large") : 0;
}

static bool identity_encoding(const struct mp_http_msg *m)
{
    size_t l;
    const char *v = mp_http_msg_get(m, "content-encoding", &l);
    return !v || l == 0 || (l == 8 && !strncasecmp(v, "identity", 8));
}

static int on_resp_headers(http_parser *p)
{
    struct hsess *s = p->data;
    struct mp_http *h = s->h;
    int st = p->status_code;
    if (!mp_http_msg_names_ok(&s->resp))
        return resp_fail(s, "sent a header name that is no token (a space before its colon?)");
    if (ua_busy(s)) {
        s->ua_status = st;
        return 0;
    }
    if (h->auth.on && st == 401) { /* the proxy's logon, not the client's: never relayed */
        snprintf(s->ua_why, sizeof s->ua_why, "answered 401 to the proxy's logon as %.60s%s%.60s",
                 h->cfg->domain, h->cfg->domain[0] ? "\\" : "", h->cfg->username);
        return -1;
    }
    if (st == 101)
        return resp_fail(s, "switched protocols (101), which the proxy does not relay");
    struct mp_http_head_opts o = {.rewrite_location = &h->names};
    if (st >= 100 && st < 200) { /* 100 Continue, 102, 103: passed on, not final */
        s->interim = true;
        o.framing = MP_HTTP_NO_BODY;
        return mp_http_response_head(&s->resp, st, &o, &s->c.out) ? -1 : 0;
    }
    s->interim = false;
    if (st >= 200 && st < 300 && !strncasecmp(s->path, "/mapi/", 6))
        cown_register(s);
    if (s->mod && (s->mc || s->m_url)) {
        int r = mh_resp_head(s, p);
        if (r)
            return r < 0 ? -1 : 0;
        mh_end(s); /* not a success: relayed as it is */
    }
    s->status = st;
    bool up_keep = http_should_keep_alive(p);
    s->close_after = !up_keep || !s->keepalive;
    bool no_body = s->head_req || st == 204 || st == 304;
    if (s->route == R_AUTOD && st >= 200 && st < 300 && !no_body) {
        if (identity_encoding(&s->resp)) {
            s->rewrite = true;
            s->body.off = s->body.len = 0;
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
    if (mp_http_response_head(&s->resp, st, &o, &s->c.out))
        return -1;
    s->resp_started = true;
    return s->head_req ? 1 : 0;
}

static int on_resp_body(http_parser *p, const char *at, size_t len)
{
    struct hsess *s = p->data;
    if (ua_busy(s))
        return 0; /* the body of a handshake answer */
    if (s->mod_resp)
        return mh_resp_body(s, at, len);
    s->resp_bytes += len;
    if (s->rewrite) {
        if (s->body.len + len > s->h->cfg->http_max_rewrite)
            return resp_fail(s, "Autodiscover answer larger than mapiproxy:http max rewrite body");
        return mp_buf_append(&s->body, at, len);
    }
    if (s->chunk_out) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        if (mp_buf_append(&s->c.out, sz, (size_t)n) || mp_buf_append(&s->c.out, at, len) ||
            mp_buf_append(&s->c.out, "\r\n", 2))
            return -1;
        return 0;
    }
    return mp_buf_append(&s->c.out, at, len);
}

static int on_resp_complete(http_parser *p)
{
    struct hsess *s = p->data;
    struct mp_http *h = s->h;
    if (ua_busy(s))
        return ua_step(s, p);
    if (s->interim) {
        s->interim = false;
        return 0;
    }
    if (s->mod_resp) {
        if (!s->req_complete) {
            s->close_after = true;
            s->closing = true;
        }
        mh_resp_done(s);
        return 0;
    }
    if (s->rewrite) {
        struct mp_buf nb = {0};
        size_t bl = mp_buf_avail(&s->body);
        /* non-transparent mode: EXCH <Server>, ServerDN and MdbDN name the
         * proxy's server names, as NSPI and EMSMDB answers do */
        size_t sn = 0;
        char *sv =
            bl ? mp_rewrite_text((const char *)mp_buf_head(&s->body), bl, true, true, &sn) : NULL;
        const uint8_t *src = sv ? (const uint8_t *)sv : mp_buf_head(&s->body);
        if (sv)
            bl = sn;
        long k = bl ? mp_http_rewrite(&h->names, src, bl, &nb) : 0;
        free(sv);
        struct mp_http_head_opts o = {.framing = MP_HTTP_LENGTH,
                                      .length = nb.len,
                                      .close = s->close_after,
                                      .rewrite_location = &h->names};
        int rc = k < 0 || mp_http_response_head(&s->resp, s->status, &o, &s->c.out) ||
                 mp_buf_append(&s->c.out, nb.data ? nb.data : (uint8_t *)"", nb.len);
        mp_debug("http #%" PRIu64 " %s: Autodiscover answer: %ld name(s) rewritten, %zu -> %zu "
                 "bytes",
                 s->id, s->peer, k, mp_buf_avail(&s->body), nb.len);
        s->resp_bytes = nb.len;
        mp_buf_free(&nb);
        mp_buf_free(&s->body);
        s->resp_started = true;
        if (rc)
            return -1;
    } else if (s->chunk_out && mp_buf_append(&s->c.out, "0\r\n\r\n", 5)) {
        return -1;
    }
    s->upstream_dl = 0;
    if (!s->req_complete) {
        /* answered before the request body ended (e.g. 401 or 413 upstream):
         * the rest of the request cannot be resynchronised; end the session */
        s->close_after = true;
        log_request(s);
        s->closing = true;
        return 0;
    }
    request_finished(s);
    if (!s->closing)
        http_parser_pause(&s->cp, 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* parsing what was read                                               */

/* RPC_IN_DATA / RPC_OUT_DATA: http-parser 2.9 knows no such methods, so it
 * is fed POST in their place (doc/internals/rpch.md, "HTTP parsing").
 * Returns -1 while the method cannot be told yet. */
static int rpch_method_swap(struct hsess *s, struct side *x)
{
    size_t ml = 0;
    int m = mp_rpch_method(mp_buf_head(&x->in), mp_buf_avail(&x->in), &ml);
    if (m <= 0)
        return m;
    http_parser_execute(&s->cp, &req_settings, "POST", 4);
    mp_buf_consume(&x->in, ml);
    s->rpch_method = m;
    return m;
}

static bool parse_client(struct hsess *s)
{
    struct side *x = &s->c;
    bool moved = false;
    while (mp_buf_avail(&x->in) && !s->closing && !s->dead) {
        if (HTTP_PARSER_ERRNO(&s->cp) == HPE_PAUSED)
            break;
        if (s->h->rpch && !s->in_request && rpch_method_swap(s, x) < 0)
            break; /* too few bytes to tell the method */
        size_t n = http_parser_execute(&s->cp, &req_settings, (const char *)mp_buf_head(&x->in),
                                       mp_buf_avail(&x->in));
        if (n)
            moved = true;
        mp_buf_consume(&x->in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&s->cp);
        if (e == HPE_PAUSED)
            break;
        if (e != HPE_OK) {
            int st = s->err_status ? s->err_status : e == HPE_HEADER_OVERFLOW ? 431 : 400;
            mp_info("http #%" PRIu64 " %s: bad request (%s): %d", s->id, s->peer,
                    s->err_status ? "limit" : http_errno_name(e), st);
            mp_buf_consume(&x->in, mp_buf_avail(&x->in));
            if (s->resp_started) {
                session_close(s, "bad request after its response began");
                return true;
            }
            side_close(s->h->loop, &s->u);
            send_local(s, st, true);
            log_request(s);
            s->in_request = false;
            return true;
        }
        if (s->cp.upgrade) /* refused in on_req_headers; not reached */
            break;
    }
    if (!mp_buf_avail(&x->in))
        mp_buf_trim(&x->in);
    return moved;
}

static bool parse_upstream(struct hsess *s, bool at_eof)
{
    struct side *x = &s->u;
    bool moved = false;
    if (mp_buf_avail(&x->in)) {
        size_t n = http_parser_execute(&s->up, &resp_settings, (const char *)mp_buf_head(&x->in),
                                       mp_buf_avail(&x->in));
        mp_buf_consume(&x->in, n);
        moved = n > 0;
        if (HTTP_PARSER_ERRNO(&s->up) != HPE_OK) {
            char why[220];
            if (s->ua_why[0])
                snprintf(why, sizeof why, "%s", s->ua_why);
            else
                snprintf(why, sizeof why, "unusable response (%s)",
                         http_errno_name(HTTP_PARSER_ERRNO(&s->up)));
            upstream_failed(s, 502, why);
            return true;
        }
        if (s->in_request && s->forwarded)
            s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
    }
    if (at_eof && !s->dead) {
        http_parser_execute(&s->up, &resp_settings, NULL, 0); /* may end a body read to EOF */
        if (s->in_request && s->forwarded && !s->status)
            upstream_failed(s, 502, "closed the connection before its response");
        else if (s->in_request && s->forwarded)
            session_close(s, "upstream closed the connection in a response");
        else if (!s->closing) /* pinned: the client's connection ends with it */
            s->closing = true;
        side_close(s->h->loop, &s->u);
        moved = true;
    }
    return moved;
}

/* ------------------------------------------------------------------ */
/* moving bytes                                                        */

static bool may_read(struct hsess *s, struct side *x)
{
    uint32_t maxb = s->h->cfg->max_buffer;
    if (!x->open || x->eof || x->connecting || x->handshaking)
        return false;
    if (x->client)
        return !s->closing && mp_buf_avail(&x->in) < MAX_PARKED && mp_buf_avail(&s->u.out) < maxb;
    return mp_buf_avail(&s->c.out) < maxb;
}

static bool step(struct hsess *s, struct side *x)
{
    struct mp_http *h = s->h;
    bool moved = false;
    if (!x->open || x->connecting)
        return false;
    if (x->handshaking) {
        char why[200];
        int r = side_handshake(x, why, sizeof why);
        if (r < 0) {
            if (x->client && BIO_number_read(SSL_get_rbio(x->ssl)) == 0) {
                /* connected and left without a byte: a port probe or health check */
                session_close(s, "closed before TLS");
            } else if (x->client) {
                mp_info("http #%" PRIu64 " %s: TLS handshake failed: %s", s->id, s->peer, why);
                session_close(s, "TLS handshake failed");
            } else {
                upstream_failed(s, 502, why);
            }
            return true;
        }
        if (r == 0)
            return false;
        if (x->client) {
            mp_debug("http #%" PRIu64 " %s: %s %s", s->id, s->peer, SSL_get_version(x->ssl),
                     SSL_get_cipher_name(x->ssl));
        } else {
            mp_debug("http #%" PRIu64 " %s: upstream %s %s", s->id, s->peer,
                     SSL_get_version(x->ssl), h->cfg->tls_verify ? "verified" : "NOT verified");
            s->upstream_dl = mp_now_ms() + (uint64_t)h->cfg->http_upstream_timeout_s * 1000;
        }
        moved = true;
    }
    struct mp_buf *ob = wbuf(s, x);
    while (mp_buf_avail(ob) && !x->eof) {
        ssize_t n = side_write(x, mp_buf_head(ob), mp_buf_avail(ob));
        if (n < 0) {
            x->eof = true;
            if (x->client) {
                session_close(s, "client write failed");
            } else {
                upstream_failed(s, 502, "write failed");
            }
            return true;
        }
        if (n == 0)
            break;
        mp_buf_consume(ob, (size_t)n);
        x->out_since = mp_now_ms();
        moved = true;
    }
    if (!mp_buf_avail(ob))
        mp_buf_trim(ob);
    if (x->client)
        moved |= parse_client(s);
    while (!s->dead && may_read(s, x)) {
        if (mp_buf_reserve(&x->in, READ_CHUNK)) {
            session_close(s, "out of memory");
            return true;
        }
        ssize_t n = side_read(x, x->in.data + x->in.len, READ_CHUNK);
        if (n == 0)
            break;
        moved = true;
        if (n < 0) {
            x->eof = true;
            if (x->client) {
                session_close(s, s->in_request ? "client closed in a request" : "client closed");
                return true;
            }
            parse_upstream(s, true);
            return true;
        }
        x->in.len += (size_t)n;
        if (x->client)
            parse_client(s);
        else
            parse_upstream(s, false);
    }
    return moved;
}

static uint32_t wanted(struct side *x, bool can_read)
{
    if (x->connecting)
        return MP_WRITE;
    if (x->handshaking)
        return x->hs_want_write ? MP_WRITE : MP_READ;
    uint32_t w = 0;
    if ((can_read && !x->rd_wants_write) || x->wr_wants_read)
        w |= MP_READ;
    if ((mp_buf_avail(wbuf(x->s, x)) && !x->wr_wants_read) || x->rd_wants_write)
        w |= MP_WRITE;
    return w;
}

static void timer_cb(struct mp_timer *t);

/* When a peer that is not reading what we queue for it is given up. */
static uint64_t send_deadline(struct hsess *s, struct side *x)
{
    if (!x->open || x->connecting || x->handshaking || !mp_buf_avail(wbuf(s, x)) || !x->out_since)
        return 0;
    return x->out_since + (uint64_t)s->h->cfg->send_timeout_s * 1000;
}

/* Does the upstream owe us something now?  While the client still sends
 * its body, only a connect, a TLS handshake or the proxy's NTLM logon is
 * timed by http upstream timeout (the body has its own clock). */
static bool upstream_clock(struct hsess *s)
{
    return s->req_complete || s->u.connecting || s->u.handshaking || ua_busy(s) || s->status;
}

static void settle(struct hsess *s)
{
    struct mp_http *h = s->h;
    if (s->dead)
        return;
    if (s->closing && !mp_buf_avail(&s->c.out)) {
        session_close(s, "done");
        return;
    }
    if (s->c.open)
        mp_io_set(h->loop, &s->c.io, wanted(&s->c, may_read(s, &s->c)));
    if (s->u.open)
        mp_io_set(h->loop, &s->u.io, wanted(&s->u, may_read(s, &s->u)));
    uint64_t now = mp_now_ms(), dl = 0;
    struct side *sides[2] = {&s->c, &s->u};
    for (int i = 0; i < 2; i++) /* the send clock runs while bytes wait */
        if (!mp_buf_avail(wbuf(s, sides[i])))
            sides[i]->out_since = 0;
        else if (!sides[i]->out_since)
            sides[i]->out_since = now;
    bool up_clock = upstream_clock(s);
    uint64_t cand[6] = {s->header_dl,
                        s->in_request ? 0 : s->idle_dl,
                        s->in_request && s->forwarded && up_clock ? s->upstream_dl : 0,
                        send_deadline(s, &s->c),
                        send_deadline(s, &s->u),
                        s->in_request && !s->req_complete ? s->body_dl : 0};
    for (int i = 0; i < 6; i++)
        if (cand[i] && (!dl || cand[i] < dl))
            dl = cand[i];
    if (dl) {
        mp_timer_arm(h->loop, &s->timer, dl > now ? dl - now : 0);
    } else {
        mp_timer_cancel(h->loop, &s->timer);
    }
}

static void pump(struct hsess *s)
{
    bool nested = s->pumping;
    s->pumping = true;
    for (int i = 0; i < 64 && !s->dead; i++) {
        bool a = step(s, &s->c);
        bool b = !s->dead && step(s, &s->u);
        if (!a && !b)
            break;
    }
    s->pumping = nested;
    settle(s);
}

static void io_cb(struct mp_io *io, uint32_t ev)
{
    struct side *x = io->data;
    struct hsess *s = x->s;
    if (s->dead)
        return;
    if (x->connecting && (ev & (MP_WRITE | MP_ERRHUP)))
        upstream_connected(s);
    if (!s->dead)
        pump(s);
}

/* The request body came slower than BODY_MIN_RATE: 408, and its upstream
 * connection is given up (it is never left to such a client). */
static void body_too_slow(struct hsess *s)
{
    struct mp_http *h = s->h;
    mp_info("http #%" PRIu64 " %s: request body too slow (%" PRIu64 " bytes in %" PRIu64
            " ms; at least %u bytes/s after mapiproxy:http header timeout): 408, closed",
            s->id, s->peer, s->req_bytes, mp_now_ms() - s->body_t0, BODY_MIN_RATE);
    s->body_dl = 0;
    mh_end(s);
    side_close(h->loop, &s->u);
    if (s->resp_started) {
        session_close(s, "request body too slow");
        return;
    }
    send_local(s, 408, true);
    log_request(s);
    s->in_request = false;
    s->c.out_since = mp_now_ms(); /* a client that does not read its 408 is not waited for */
}

static void timer_cb(struct mp_timer *t)
{
    struct hsess *s = t->data;
    struct mp_http *h = s->h;
    uint64_t now = mp_now_ms();
    if (s->dead)
        return;
    if (s->header_dl && now >= s->header_dl) {
        mp_info("http #%" PRIu64 " %s: request head not complete after %u s (mapiproxy:http "
                "header timeout): closed",
                s->id, s->peer, h->cfg->http_header_timeout_s);
        s->header_dl = 0;
        if (s->c.handshaking) {
            session_close(s, "header timeout in the TLS handshake");
            return;
        }
        if (!s->resp_started)
            send_local(s, 408, true);
        s->in_request = false;
        s->closing = true;
        /* a client that does not read its 408 is not waited for */
        s->c.out_since = now;
    } else if (!s->in_request && s->idle_dl && now >= s->idle_dl) {
        mp_debug("http #%" PRIu64 " %s: idle for %u s: closed", s->id, s->peer,
                 h->cfg->http_idle_timeout_s);
        session_close(s, "idle");
        return;
    } else if (s->in_request && !s->req_complete && s->body_dl && now >= s->body_dl) {
        if (mp_buf_avail(&s->u.out) >= h->cfg->max_buffer) { /* we stopped reading it */
            s->body_t0 = now - s->req_bytes * 1000 / BODY_MIN_RATE;
            body_deadline(s);
        } else {
            body_too_slow(s);
            if (s->dead)
                return;
        }
    } else if (s->in_request && s->forwarded && s->upstream_dl && now >= s->upstream_dl &&
               upstream_clock(s)) {
        upstream_failed(s, 504,
                        s->u.connecting || s->u.handshaking
                            ? "connect timed out (mapiproxy:connect timeout)"
                            : "no answer in time (mapiproxy:http upstream timeout)");
    } else if (send_deadline(s, &s->c) && now >= send_deadline(s, &s->c)) {
        session_close(s, "client does not read (mapiproxy:send timeout)");
        return;
    } else if (send_deadline(s, &s->u) && now >= send_deadline(s, &s->u)) {
        upstream_failed(s, 504, "does not read (mapiproxy:send timeout)");
    }
    if (!s->dead)
        pump(s);
}

/* ------------------------------------------------------------------ */
/* sessions                                                            */

static void session_free(void *p)
{
    struct hsess *s = p;
    mp_http_msg_free(&s->req);
    mp_http_msg_free(&s->resp);
    mp_buf_free(&s->body);
    mp_hauth_conn_free(&s->ha);
    mp_hauth_up_free(&s->hup);
    mp_buf_free(&s->www);
    mp_buf_free(&s->ua_out);
    free(s->ua_url);
    free(s);
}

static void session_close(struct hsess *s, const char *why)
{
    struct mp_http *h = s->h;
    if (s->dead)
        return;
    s->dead = true;
    mh_end(s);
    if (s->in_request && s->status == 0 && s->method[0]) {
        s->status = 0;
        log_request(s);
    }
    mp_debug("http #%" PRIu64 " %s: closed (%s)", s->id, s->peer, why);
    struct mp_rpch_chan *rc = s->rpch;
    s->rpch = NULL;
    mp_rpch_chan_free(rc); /* may close the other channel's session */
    mp_timer_cancel(h->loop, &s->timer);
    side_close(h->loop, &s->c);
    side_close(h->loop, &s->u);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->n_sess--;
    mp_metrics_open("http", -1);
    if (mp_loop_defer(h->loop, session_free, s))
        session_free(s); /* nothing else of this batch can point to it then */
}

static void accept_one(void *data, int fd, const char *host, uint16_t port)
{
    struct listener *l = data;
    struct mp_http *h = l->h;
    if (h->n_sess >= h->cfg->max_connections) {
        mp_warn("http %s:%u refused: %zu connections open (mapiproxy:max connections)", host, port,
                h->n_sess);
        close(fd);
        return;
    }
    struct hsess *s = calloc(1, sizeof *s);
    SSL *ssl = NULL;
    if (!s || (h->server_ctx && !(ssl = SSL_new(h->server_ctx)))) {
        free(s);
        close(fd);
        return;
    }
    s->h = h;
    s->id = ++h->next_id;
    snprintf(s->peer, sizeof s->peer, "%s:%u", host, port);
    s->c.s = s->u.s = s;
    s->c.client = true;
    s->c.io.fd = fd;
    s->c.io.cb = io_cb;
    s->c.io.data = &s->c;
    s->c.open = true;
    s->u.io.fd = -1;
    if (ssl) {
        SSL_set_fd(ssl, fd);
        SSL_set_accept_state(ssl);
        s->c.ssl = ssl;
        s->c.handshaking = true;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    http_parser_init(&s->cp, HTTP_REQUEST);
    s->cp.data = s;
    http_parser_init(&s->up, HTTP_RESPONSE);
    s->up.data = s;
    mp_http_msg_init(&s->req, h->cfg->http_max_header);
    mp_http_msg_init(&s->resp, h->cfg->http_max_header);
    s->timer.cb = timer_cb;
    s->timer.data = s;
    /* the TLS handshake and the first head count against the header timeout */
    s->header_dl = mp_now_ms() + (uint64_t)h->cfg->http_header_timeout_s * 1000;
    s->next = h->sessions;
    if (h->sessions)
        h->sessions->prev = s;
    h->sessions = s;
    h->n_sess++;
    mp_metrics_open("http", 1);
    mp_info("http #%" PRIu64 " open %s%s", s->id, s->peer, ssl ? " (TLS)" : "");
    pump(s);
}

static void accept_cb(struct mp_io *io, uint32_t ev)
{
    struct listener *l = io->data;
    mp_accept_ready(l->h->loop, io, "http", accept_one, l);
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static int listen_http(struct mp_http *h, const struct mp_http_listen *la)
{
    int fd = mp_listen_tcp(la->host, la->port, 1024, "mapiproxy:http listen");
    if (fd < 0)
        return -1;
    struct listener *l = &h->ls[h->n_ls++];
    l->h = h;
    l->io.fd = fd;
    l->io.cb = accept_cb;
    l->io.data = l;
    return mp_io_set(h->loop, &l->io, MP_READ);
}

static void log_ssl_errors(const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "unknown error");
    mp_error("%s: %s", what, buf);
    ERR_clear_error();
}

static int setup_tls(struct mp_http *h)
{
    const struct mp_config *cfg = h->cfg;
    if (!cfg->http_plain) {
        h->server_ctx = SSL_CTX_new(TLS_server_method());
        if (!h->server_ctx || !SSL_CTX_set_min_proto_version(h->server_ctx, TLS1_2_VERSION)) {
            log_ssl_errors("TLS server context");
            return -1;
        }
        if (SSL_CTX_use_certificate_chain_file(h->server_ctx, cfg->tls_certificate) != 1) {
            char what[700];
            snprintf(what, sizeof what, "mapiproxy:tls certificate %s cannot be used",
                     cfg->tls_certificate);
            log_ssl_errors(what);
            return -1;
        }
        if (SSL_CTX_use_PrivateKey_file(h->server_ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(h->server_ctx) != 1) {
            char what[700];
            snprintf(what, sizeof what,
                     "mapiproxy:tls key %s cannot be used (or does not match the certificate)",
                     cfg->tls_key);
            log_ssl_errors(what);
            return -1;
        }
        /* idle connections (parked NotificationWaits) give their buffers back */
        SSL_CTX_set_mode(h->server_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                            SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_options(h->server_ctx, SSL_OP_NO_RENEGOTIATION);
    }
    if (!cfg->http_upstream.tls)
        return 0;
    h->client_ctx = SSL_CTX_new(TLS_client_method());
    if (!h->client_ctx || !SSL_CTX_set_min_proto_version(h->client_ctx, TLS1_2_VERSION)) {
        log_ssl_errors("TLS client context");
        return -1;
    }
    SSL_CTX_set_mode(h->client_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                        SSL_MODE_RELEASE_BUFFERS);
    if (cfg->tls_verify) {
        SSL_CTX_set_verify(h->client_ctx, SSL_VERIFY_PEER, NULL);
        int ok = cfg->tls_ca_file[0]
                     ? SSL_CTX_load_verify_locations(h->client_ctx, cfg->tls_ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(h->client_ctx);
        if (ok != 1) {
            char what[700];
            snprintf(what, sizeof what, "mapiproxy:tls ca file %s cannot be loaded",
                     cfg->tls_ca_file[0] ? cfg->tls_ca_file : "(system bundle)");
            log_ssl_errors(what);
            return -1;
        }
    } else {
        SSL_CTX_set_verify(h->client_ctx, SSL_VERIFY_NONE, NULL);
        mp_warn("mapiproxy:tls verify = no: the upstream's certificate is NOT verified; use this "
                "in labs only");
    }
    return 0;
}

static int resolve_upstream(struct mp_http *h)
{
    const struct mp_http_url *u = &h->cfg->http_upstream;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai, *a;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", u->port);
    int rc = getaddrinfo(u->host, ps, &hints, &ai);
    if (rc) {
        mp_error("mapiproxy:http upstream: cannot resolve %s: %s; check the name", u->host,
                 gai_strerror(rc));
        return -1;
    }
    struct addrinfo *pick = ai;
    for (a = ai; a; a = a->ai_next) /* IPv4 first: "localhost" may also be ::1 */
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    memcpy(&h->up_addr, pick->ai_addr, pick->ai_addrlen);
    h->up_addr_len = pick->ai_addrlen;
    freeaddrinfo(ai);
    bool v6 = strchr(u->host, ':') != NULL;
    bool dflt = u->port == (u->tls ? 443 : 80);
    char port[8] = "";
    if (!dflt)
        snprintf(port, sizeof port, ":%u", u->port);
    snprintf(h->up_hostport, sizeof h->up_hostport, "%s%s%s%s", v6 ? "[" : "", u->host,
             v6 ? "]" : "", port);
    return 0;
}

struct mp_http *mp_http_new(struct mp_loop *loop, const struct mp_config *cfg)
{
    static bool settings_done;
    if (!settings_done) {
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
        settings_done = true;
    }
    struct mp_http *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->cfg = cfg;
    for (size_t i = 0; i < MP_MAX_LISTEN; i++)
        h->ls[i].io.fd = -1;
    char pub[320];
    if (cfg->http_public_name[0])
        snprintf(pub, sizeof pub, "%s", cfg->http_public_name);
    else if (strchr(cfg->http_listen[0].host, ':'))
        snprintf(pub, sizeof pub, "[%s]:%u", cfg->http_listen[0].host, cfg->http_listen[0].port);
    else
        snprintf(pub, sizeof pub, "%s:%u", cfg->http_listen[0].host, cfg->http_listen[0].port);
    if (mp_http_names_init(&h->names, cfg->http_upstream.host, cfg->http_upstream_names, pub)) {
        mp_error("mapiproxy:http upstream names / public name: a name is empty or too long, or "
                 "there are more than %d; fix them",
                 MP_HTTP_MAX_NAMES);
        free(h);
        return NULL;
    }
    h->names.relayed = url_path_relayed;
    h->names.relayed_arg = cfg;
    h->names.drop_unrelayed = cfg->http_drop_unrelayed;
    if (mp_hauth_init(&h->auth, cfg) || setup_tls(h) || resolve_upstream(h)) {
        mp_http_free(h);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_http_listen; i++)
        if (listen_http(h, &cfg->http_listen[i])) {
            mp_http_free(h);
            return NULL;
        }
    mp_info("http front ready: %zu listener(s), %s, upstream %s://%s, public name %s",
            cfg->n_http_listen, cfg->http_plain ? "plain HTTP" : "TLS",
            cfg->http_upstream.tls ? "https" : "http", h->up_hostport, h->names.pub_authority);
    return h;
}

void mp_http_set_modules(struct mp_http *h, struct mp_modules *mods)
{
    h->mods = mods;
}

int mp_http_set_rpch(struct mp_http *h, void (*adopt)(void *, int, const char *, uint16_t),
                     void *data)
{
    const struct mp_config *c = h->cfg;
    if (!c->rpch)
        return 0;
    struct mp_rpch_opts o = {.recv_window = c->rpch_window,
                             .conn_timeout_ms = c->rpch_conn_timeout_s * 1000,
                             .pair_timeout_ms = c->rpch_pair_timeout_s * 1000,
                             .max_pending = c->max_buffer};
    if (!(h->rpch = mp_rpch_new(h->loop, &o, adopt, data)))
        return -1;
    mp_info("http front: RPC over HTTP on /rpc/rpcproxy.dll, receive window %u bytes",
            c->rpch_window);
    return 0;
}

void mp_http_free(struct mp_http *h)
{
    if (!h)
        return;
    while (h->sessions)
        session_close(h->sessions, "shutdown");
    while (h->mh)
        mh_drop(h, h->mh);
    for (size_t b = 0; b < COWN_BUCKETS; b++)
        while (h->cown[b]) {
            struct cown *o = h->cown[b];
            h->cown[b] = o->next;
            free(o);
        }
    for (size_t i = 0; i < h->n_ls; i++) {
        mp_accept_forget(&h->ls[i].io);
        mp_io_close(h->loop, &h->ls[i].io);
    }
    SSL_CTX_free(h->server_ctx);
    SSL_CTX_free(h->client_ctx);
    mp_http_names_free(&h->names);
    mp_hauth_free(&h->auth);
    mp_rpch_free(h->rpch);
    free(h);
}
