/* HTTP logon pass-through for RPC over HTTP toward an RPC over HTTP
 * upstream: see hpass.h and doc/internals/rpch.md. */
#include "transport/rpch/hpass.h"

#include <errno.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/ntlm_crypto.h"
#include "core/buf.h"
#include "core/log.h"
#include "net/conn.h"
#include "net/tls.h"
#include "transport/http/hauth.h"
#include "transport/rpch/upclient.h"

#define LEG_MAX_HEAD 16384 /* a client request head or an upstream answer head */
#define LEG_MAX_BODY 65536 /* an upstream answer's body during the logon */

struct mp_rpch_pass {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    SSL_CTX *tls_ctx;
    char server[256];
};

struct mp_rpch_leg {
    struct mp_rpch_pass *p;
    const struct mp_rpch_leg_host *h;
    void *owner;
    struct mp_io io; /* the pinned upstream connection, fd -1 before the first leg */
    struct mp_tls tls;
    bool tls_on, connected, hs_done, waiting, over;
    struct mp_buf up_out, up_in, cin;
    /* the channel request whose logon the upstream is checking (Expect:
     * 100-continue); its body waits in cin */
    struct mp_rpch_pin *chk;
    bool chk_out, chk_cont;
    uint64_t chk_length;
    /* NTLM on a leg (an AUTHENTICATE on a request without a body): its
     * user, and once the upstream answered that leg with a 2xx the
     * connection's, which a later channel request without Authorization
     * carries */
    char leg_user[520], conn_user[520];
    struct mp_timer tmo; /* the upstream's answer to a leg: mapiproxy:http upstream timeout */
};

struct mp_rpch_pass *mp_rpch_pass_new(struct mp_loop *loop, const struct mp_config *cfg,
                                      bool *failed)
{
    *failed = false;
    if (!cfg->rpch || !cfg->have_rpch_upstream ||
        (cfg->http_auth[0] && !strcasecmp(cfg->http_auth, "terminate")))
        return NULL;
    *failed = true;
    struct mp_rpch_pass *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = loop;
    p->cfg = cfg;
    if (mp_rpch_up_target(cfg, &p->addr, &p->addr_len, &p->tls_ctx, p->server, sizeof p->server)) {
        free(p);
        return NULL;
    }
    *failed = false;
    return p;
}

void mp_rpch_pass_free(struct mp_rpch_pass *p)
{
    if (!p)
        return;
    mp_tls_ctx_free(p->tls_ctx);
    free(p);
}

static void leg_release(void *arg)
{
    struct mp_rpch_leg *l = arg;
    mp_rpch_pin_free(l->chk);
    mp_buf_free(&l->up_out);
    if (l->up_in.data)
        mp_ntlm_cleanse(l->up_in.data, l->up_in.cap);
    mp_buf_free(&l->up_in);
    if (l->cin.data)
        mp_ntlm_cleanse(l->cin.data, l->cin.cap);
    mp_buf_free(&l->cin);
    free(l);
}

static void up_close(struct mp_rpch_leg *l)
{
    if (l->tls_on)
        mp_tls_free(&l->tls, false);
    l->tls_on = l->connected = l->hs_done = false;
    if (l->io.fd >= 0)
        mp_io_close(l->p->loop, &l->io);
}

void mp_rpch_leg_free(struct mp_rpch_leg *l)
{
    if (!l)
        return;
    mp_timer_cancel(l->p->loop, &l->tmo);
    up_close(l);
    l->over = true;
    if (mp_loop_defer(l->p->loop, leg_release, l))
        leg_release(l);
}

/* The legs end: fail() called, the leg freed. */
static void leg_fail(struct mp_rpch_leg *l, const char *why)
{
    l->over = true;
    l->h->fail(l->owner, why);
    mp_rpch_leg_free(l);
}

static void up_interest(struct mp_rpch_leg *l)
{
    if (l->io.fd < 0)
        return;
    bool wr = mp_buf_avail(&l->up_out) != 0;
    if (!l->connected)
        mp_io_set(l->p->loop, &l->io, MP_WRITE);
    else if (l->tls_on)
        mp_io_set(l->p->loop, &l->io, mp_tls_events(&l->tls, true, wr));
    else
        mp_io_set(l->p->loop, &l->io, MP_READ | (wr ? MP_WRITE : 0));
}

static void up_cb(struct mp_io *io, uint32_t ev);

static int up_open(struct mp_rpch_leg *l)
{
    struct mp_rpch_pass *p = l->p;
    l->io.cb = up_cb;
    l->io.data = l;
    l->io.fd = mp_tcp_connect_start(&p->addr, p->addr_len, p->cfg->rpch_upstream.port);
    if (l->io.fd < 0)
        return -1;
    l->tls_on = p->tls_ctx != NULL;
    up_interest(l);
    return 0;
}

static bool hnum(const char *v, size_t n, uint64_t *out)
{
    if (!v || !n || n > 19)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return true;
}

static bool leg_next(struct mp_rpch_leg *l);

/* The channel request goes on as the proxy's channel: the pinned upstream
 * connection (if any, and idle) goes with the pin.  The legs are over. */
static bool chan_go(struct mp_rpch_leg *l, bool out, uint64_t length, bool cont,
                    struct mp_rpch_pin *pin, const uint8_t *rest, size_t rl)
{
    if (l->io.fd >= 0 && l->connected && (!l->tls_on || l->hs_done) && !mp_buf_avail(&l->up_out) &&
        !mp_buf_avail(&l->up_in)) {
        mp_io_set(l->p->loop, &l->io, 0);
        pin->fd = l->io.fd;
        pin->tls = l->tls;
        pin->tls_on = l->tls_on;
        l->io.fd = -1;
        l->tls_on = false;
    } else {
        pin->head_sent = false;
    }
    l->over = true;
    l->h->channel(l->owner, out, length, cont, pin, rest, rl);
    mp_rpch_leg_free(l);
    return false;
}

/* One client request: a leg (no body) to the pinned upstream connection,
 * or the channel request, which ends the legs.  false when they ended. */
static bool leg_request(struct mp_rpch_leg *l, const char *method, const char *target, size_t tl,
                        const char *authz, size_t al, uint64_t length, bool cont,
                        const uint8_t *rest, size_t rl)
{
    bool out = !strcmp(method, "RPC_OUT_DATA");
    if (strcmp(method, "RPC_IN_DATA") && !out) {
        leg_fail(l, "not an RPC over HTTP request");
        return false;
    }
    size_t pl = 0;
    while (pl < tl && target[pl] != '?')
        pl++;
    if (pl != 17 || strncasecmp(target, "/rpc/rpcproxy.dll", 17)) {
        leg_fail(l, "a request for another path during the logon");
        return false;
    }
    if (al > 12000) { /* a Kerberos ticket with a large PAC fits */
        leg_fail(l, "Authorization header too long");
        return false;
    }
    if (length && !authz) { /* a channel request without a logon: the upstream decides later */
        struct mp_rpch_pin *pin = calloc(1, sizeof *pin);
        if (!pin) {
            leg_fail(l, "out of memory");
            return false;
        }
        pin->fd = -1;
        snprintf(pin->user, sizeof pin->user, "%s", l->conn_user);
        return chan_go(l, out, length, cont, pin, rest, rl);
    }
    /* A leg, or the channel request with its logon (then the head the
     * upstream client will use, with Expect: 100-continue: the upstream
     * checks the logon now and a refusal reaches this client as it is). */
    if (length) {
        if (!(l->chk = calloc(1, sizeof *l->chk))) {
            leg_fail(l, "out of memory");
            return false;
        }
        l->chk->fd = -1;
        l->chk->length = mp_rpch_up_chan_length(l->p->cfg, out, length);
        /* the account the channel is for, if the upstream takes it (read
         * here, kept only then: up_answer's 100 Continue) */
        l->chk->krb = mp_hauth_peek_identity(authz, al, l->chk->user, sizeof l->chk->user) == 3;
        snprintf(l->chk->authz, sizeof l->chk->authz, "Authorization: %.*s\r\n", (int)al, authz);
        l->chk_out = out;
        l->chk_cont = cont;
        l->chk_length = length;
    } else if (mp_hauth_peek_identity(authz, al, l->leg_user, sizeof l->leg_user) != 1)
        l->leg_user[0] = 0;
    /* a leg: to the pinned connection, the target naming the upstream's server */
    const char *port = NULL;
    for (size_t i = tl; i > pl; i--)
        if (target[i - 1] == ':') {
            port = target + i;
            break;
        }
    char head[16384];
    int n = snprintf(head, sizeof head,
                     "%s /rpc/rpcproxy.dll%s%s%s%.*s HTTP/1.1\r\nHost: %s\r\n"
                     "Accept: application/rpc\r\nUser-Agent: MSRPC\r\nContent-Length: %" PRIu64
                     "\r\n%sConnection: Keep-Alive\r\n%s%.*s%s\r\n",
                     method, pl < tl ? "?" : "", pl < tl ? l->p->server : "", port ? ":" : "",
                     port ? (int)(target + tl - port) : 0, port ? port : "",
                     l->p->cfg->rpch_upstream.host, l->chk ? l->chk->length : 0,
                     length ? "Cache-Control: no-cache\r\nPragma: no-cache\r\n"
                              "Expect: 100-continue\r\n"
                            : "",
                     authz ? "Authorization: " : "", authz ? (int)al : 0, authz ? authz : "",
                     authz ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(&l->up_out, head, (size_t)n) ||
        mp_buf_append(&l->cin, rest, rl)) {
        mp_ntlm_cleanse(head, sizeof head);
        leg_fail(l, "out of memory");
        return false;
    }
    mp_ntlm_cleanse(head, sizeof head);
    l->waiting = true;
    mp_timer_arm(l->p->loop, &l->tmo, (uint64_t)l->p->cfg->http_upstream_timeout_s * 1000);
    if (l->io.fd < 0 && up_open(l)) {
        char why[128];
        snprintf(why, sizeof why, "cannot connect to the upstream: %s", strerror(errno));
        leg_fail(l, why);
        return false;
    }
    up_interest(l);
    return true;
}

/* The next client request from cin, when its head is complete. */
static bool leg_next(struct mp_rpch_leg *l)
{
    if (l->waiting)
        return true;
    const char *h = (const char *)mp_buf_head(&l->cin);
    size_t n = mp_buf_avail(&l->cin);
    const char *end = n ? memmem(h, n, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if (n > LEG_MAX_HEAD) {
            leg_fail(l, "request head too long");
            return false;
        }
        return true;
    }
    size_t hl = (size_t)(end + 4 - h), vl = 0;
    const char *sp1 = memchr(h, ' ', hl);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
    char method[16];
    uint64_t length = 0;
    const char *cl = mp_rpch_head_value(h, hl, "Content-Length", NULL, &vl);
    if (!sp1 || !sp2 || sp1 - h >= (long)sizeof method || (cl && !hnum(cl, vl, &length)) ||
        mp_rpch_head_value(h, hl, "Transfer-Encoding", NULL, &vl)) {
        leg_fail(l, "malformed request during the logon");
        return false;
    }
    memcpy(method, h, (size_t)(sp1 - h));
    method[sp1 - h] = 0;
    size_t al = 0;
    const char *authz = mp_rpch_head_value(h, hl, "Authorization", NULL, &al);
    const char *ex = mp_rpch_head_value(h, hl, "Expect", NULL, &vl);
    bool cont = ex && vl == 12 && !strncasecmp(ex, "100-continue", 12);
    /* the head stays in cin while leg_request reads it; the rest follows */
    struct mp_buf head = {0};
    if (mp_buf_append(&head, h, n)) {
        leg_fail(l, "out of memory");
        return false;
    }
    mp_buf_consume(&l->cin, n);
    mp_buf_trim(&l->cin);
    const char *hh = (const char *)mp_buf_head(&head);
    bool more = leg_request(l, method, hh + (sp1 + 1 - h), (size_t)(sp2 - sp1 - 1),
                            authz ? hh + (authz - h) : NULL, al, length, cont,
                            (const uint8_t *)hh + hl, n - hl);
    mp_ntlm_cleanse(head.data, head.cap);
    mp_buf_free(&head);
    return more;
}

/* The upstream's answer to a leg, whole (head and body): to the client. */
static bool up_answer(struct mp_rpch_leg *l, bool eof)
{
    const char *h = (const char *)mp_buf_head(&l->up_in);
    size_t n = mp_buf_avail(&l->up_in), vl = 0;
    const char *end = n ? memmem(h, n, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if (n > LEG_MAX_HEAD || eof) {
            leg_fail(l, eof ? "the upstream closed during the logon"
                            : "the upstream's answer head is too long");
            return false;
        }
        return true;
    }
    size_t hl = (size_t)(end + 4 - h);
    if (l->chk && hl >= 12 && !memcmp(h, "HTTP/1.", 7) && !memcmp(h + 8, " 100", 4)) {
        /* the upstream took the channel request's logon */
        mp_timer_cancel(l->p->loop, &l->tmo);
        mp_buf_consume(&l->up_in, hl);
        mp_buf_trim(&l->up_in);
        l->waiting = false;
        struct mp_rpch_pin *pin = l->chk;
        l->chk = NULL;
        pin->head_sent = true;
        size_t rn = mp_buf_avail(&l->cin);
        uint8_t *rest = rn ? malloc(rn) : NULL;
        if (rn && !rest) {
            mp_rpch_pin_free(pin);
            leg_fail(l, "out of memory");
            return false;
        }
        if (rn)
            memcpy(rest, mp_buf_head(&l->cin), rn);
        chan_go(l, l->chk_out, l->chk_length, l->chk_cont, pin, rest, rn);
        free(rest);
        return false;
    }
    uint64_t cl = 0;
    const char *v = mp_rpch_head_value(h, hl, "Content-Length", NULL, &vl);
    if ((v && !hnum(v, vl, &cl)) || cl > LEG_MAX_BODY ||
        mp_rpch_head_value(h, hl, "Transfer-Encoding", NULL, &vl)) {
        leg_fail(l, "the upstream's answer during the logon is not framed by a small "
                    "Content-Length");
        return false;
    }
    if (n < hl + cl) {
        if (eof) {
            leg_fail(l, "the upstream closed during the logon");
            return false;
        }
        return true;
    }
    mp_timer_cancel(l->p->loop, &l->tmo);
    l->h->send(l->owner, (const uint8_t *)h, hl + cl);
    if (l->chk) { /* the channel request refused: the client has the upstream's answer */
        char why[160], line[64];
        const char *eol = memchr(h, '\r', hl);
        snprintf(line, sizeof line, "%.*s",
                 (int)((eol ? eol : h) - h > 60 ? 60 : (eol ? eol : h) - h), h);
        for (char *q = line; *q; q++) /* the upstream's text: no control byte in a log line */
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                *q = '?';
        snprintf(why, sizeof why, "the upstream answered the channel request \"%s\"", line);
        leg_fail(l, why);
        return false;
    }
    if (hl >= 12 && !memcmp(h, "HTTP/1.", 7) && h[9] == '2' && l->leg_user[0])
        /* the leg's NTLM logon taken: the connection's account */
        snprintf(l->conn_user, sizeof l->conn_user, "%s", l->leg_user);
    mp_buf_consume(&l->up_in, hl + cl);
    mp_buf_trim(&l->up_in);
    l->waiting = false;
    if (mp_buf_avail(&l->up_in)) {
        leg_fail(l, "the upstream sent more than its answer");
        return false;
    }
    if (eof) /* the upstream ended this connection: the next leg opens another */
        up_close(l);
    return leg_next(l);
}

static void up_cb(struct mp_io *io, uint32_t ev)
{
    struct mp_rpch_leg *l = io->data;
    if (l->over || l->io.fd < 0)
        return;
    if (!l->connected) {
        int e = 0;
        socklen_t sl = sizeof e;
        if (getsockopt(l->io.fd, SOL_SOCKET, SO_ERROR, &e, &sl) < 0)
            e = errno;
        if (e) {
            char why[128];
            snprintf(why, sizeof why, "cannot connect to the upstream: %s", strerror(e));
            leg_fail(l, why);
            return;
        }
        if (!(ev & MP_WRITE))
            return;
        l->connected = true;
        const char *why = NULL;
        if (l->tls_on &&
            mp_tls_connect(&l->tls, l->p->tls_ctx, l->io.fd, l->p->cfg->rpch_upstream.host,
                           l->p->cfg->tls_verify, &why) < 0) {
            l->tls_on = false;
            leg_fail(l, why ? why : "TLS setup failed");
            return;
        }
    }
    if (l->tls_on && !l->hs_done) {
        char why[160];
        int rc = mp_tls_handshake(&l->tls, why, sizeof why);
        if (rc < 0) {
            leg_fail(l, why);
            return;
        }
        if (rc == 0) {
            up_interest(l);
            return;
        }
        l->hs_done = true;
    }
    while (mp_buf_avail(&l->up_out)) {
        ssize_t w =
            l->tls_on
                ? mp_tls_write(&l->tls, l->io.fd, mp_buf_head(&l->up_out), mp_buf_avail(&l->up_out))
                : send(l->io.fd, mp_buf_head(&l->up_out), mp_buf_avail(&l->up_out), MSG_NOSIGNAL);
        if (w < 0 && !l->tls_on && (errno == EAGAIN || errno == EWOULDBLOCK))
            w = 0;
        if (w < 0) {
            leg_fail(l, "write to the upstream failed");
            return;
        }
        if (!w)
            break;
        mp_buf_consume(&l->up_out, (size_t)w);
    }
    bool eof = false;
    for (;;) {
        uint8_t buf[16384];
        ssize_t r = l->tls_on ? mp_tls_read(&l->tls, l->io.fd, buf, sizeof buf)
                              : recv(l->io.fd, buf, sizeof buf, 0);
        if (r < 0 && !l->tls_on && (errno == EAGAIN || errno == EWOULDBLOCK))
            r = 0;
        else if (r == 0 && !l->tls_on)
            r = -1;
        if (r < 0) {
            eof = true;
            break;
        }
        if (!r)
            break;
        if (mp_buf_append(&l->up_in, buf, (size_t)r)) {
            leg_fail(l, "out of memory");
            return;
        }
        if (mp_buf_avail(&l->up_in) > LEG_MAX_HEAD + LEG_MAX_BODY)
            break; /* more than an answer can be: up_answer refuses it */
    }
    if (l->waiting) {
        if (!up_answer(l, eof))
            return;
    } else if (mp_buf_avail(&l->up_in) || eof) { /* nothing asked: drop the connection */
        mp_buf_consume(&l->up_in, mp_buf_avail(&l->up_in));
        up_close(l);
        return;
    }
    up_interest(l);
}

static void tmo_cb(struct mp_timer *t)
{
    struct mp_rpch_leg *l = t->data;
    if (l->over)
        return;
    char why[120];
    snprintf(why, sizeof why,
             "the upstream did not answer within %u s (mapiproxy:http upstream timeout)",
             l->p->cfg->http_upstream_timeout_s);
    leg_fail(l, why);
}

struct mp_rpch_leg *mp_rpch_leg_start(struct mp_rpch_pass *p, const struct mp_rpch_leg_host *h,
                                      void *owner, const char *method, const char *target,
                                      size_t target_len, const char *authz, size_t authz_len,
                                      uint64_t length, bool cont, const uint8_t *rest,
                                      size_t rest_len)
{
    struct mp_rpch_leg *l = calloc(1, sizeof *l);
    if (!l) {
        h->fail(owner, "out of memory");
        return NULL;
    }
    l->p = p;
    l->h = h;
    l->owner = owner;
    l->io.fd = -1;
    l->tmo.cb = tmo_cb;
    l->tmo.data = l;
    return leg_request(l, method, target, target_len, authz, authz_len, length, cont, rest,
                       rest_len)
               ? l
               : NULL;
}

bool mp_rpch_leg_client_data(struct mp_rpch_leg *l, const uint8_t *p, size_t n)
{
    /* A leg has no body and the client waits for the upstream's 401 before
     * its next request: while a leg is out, no more than one request head
     * may wait here (else a client streaming bytes at a slow upstream would
     * grow cin without end). */
    if (l->waiting && mp_buf_avail(&l->cin) + n > LEG_MAX_HEAD) {
        leg_fail(l, "the client sent more than a request head while the upstream answers a leg");
        return false;
    }
    if (mp_buf_append(&l->cin, p, n)) {
        leg_fail(l, "out of memory");
        return false;
    }
    return leg_next(l);
}
