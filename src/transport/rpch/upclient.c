/* RPC over HTTP v2 client toward the upstream's /rpc/rpcproxy.dll: see
 * upclient.h and doc/internals/rpch.md. */
#include "transport/rpch/upclient.h"

#include <errno.h>
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/credstore.h"
#include "auth/kdc_worker.h"
#include "auth/ntlm_crypto.h"
#include "core/buf.h"
#include "core/log.h"
#include "dcerpc/pdu.h"
#include "net/conn.h"
#include "net/tls.h"
#include "transport/http/hauth.h"
#include "transport/http/hneg.h"
#include "transport/dcerpc/carrier.h"
#include "transport/rpch/rpch.h"
#include "transport/rpch/rts.h"
#include "transport/rpch/vconn.h"

#define UP_WINDOW 65536u        /* our OUT channel receive window (CONN/A1, OUT_R1/A3) */
#define UP_OUT_LENGTH 76u       /* RPC_OUT_DATA: CONN/A1 only */
#define UP_LIFETIME 0x40000000u /* CONN/B1 ChannelLifetime */
#define UP_MAX_HEAD 8192        /* the OUT channel's response head */
#define UP_IN_RESERVE 1024u     /* IN bytes kept for RTS PDUs (IN_R1/A5, acks, Ping, OUT_R1/A7) */
#define UP_A1_LEN 88u           /* IN_R1/A1: header, Version, three cookies */
#define UP_OUT_NEXT_LENGTH 120u /* a successor RPC_OUT_DATA: OUT_R1/A3 (96) + OUT_R1/A11 (24) */
/* a successor OUT channel is not read past this before the switch */
#define UP_MAX_NEXT_RQ (UP_MAX_HEAD + UP_WINDOW + 4096)

struct mp_rpch_up {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    SSL_CTX *tls_ctx;         /* NULL for http:// */
    char authz[1024];         /* "Authorization: Basic ...\r\n" or "" (never logged) */
    bool ntlm;                /* mapiproxy:rpc over http upstream auth = ntlm */
    struct mp_hauth ha;       /* for the NTLM initiator: cfg and up_password only */
    struct mp_gss_cred *krb;  /* upstream auth = negotiate: the proxy's Kerberos identity */
    struct mp_kdc_worker kdc; /* ... whose tokens are made here (the KDC may be slow) */
    char spn[300];            /* ... and the target (rpc over http upstream spn) */
    char server[256];         /* the ?SERVER:port name */
    struct upvc *all;
    struct mp_rpch_up *next_up; /* this thread's other upstream clients (ups) */
};

/* This thread's upstream clients (a reload may keep two): where
 * mp_rpch_up_successor looks for a virtual connection by its key. */
static _Thread_local struct mp_rpch_up *ups;

struct upchan {
    struct upvc *v;
    bool out;
    struct mp_io io;
    struct mp_tls tls;
    bool tls_on, connected, hs_done, head_done;
    struct mp_buf wq; /* to write on the channel */
    struct mp_buf rq; /* read, not parsed yet */
    /* NTLM: the first leg (Content-Length 0, NEGOTIATE) goes from leg; the
     * request's head (with the AUTHENTICATE) is put before wq once the
     * upstream's 401 brings the CHALLENGE */
    bool ntlm_wait;
    bool krb_wait;              /* Negotiate: the token is being made (krb_job) */
    struct mp_kdc_job *krb_job; /* ... on the KDC worker; its owner is this channel */
    uint64_t req_length;
    struct mp_buf leg;
    struct mp_hauth_up hu;
    char *authz;    /* pass-through: the client's Authorization line for this channel */
    bool head_sent; /* pass-through: hpass.c sent the head (the logon was checked) */
};

/* The channels of a virtual connection: in and out are the default ones;
 * in_next and out_next the successors while a channel is recycled
 * (MS-RPCH 3.2.2: IN_R1 when our IN channel's Content-Length runs out,
 * OUT_R1 when the server asks with OUT_R1/A2); in_old a predecessor IN
 * channel still writing its IN_R1/A5. */
struct upvc {
    struct upvc *next, *prev;
    struct mp_rpch_up *u;
    /* the association whose upstream carrier this is (transport/dcerpc/
     * carrier.h); NULL once it let go (closed()) or was told of a failure */
    struct assoc *a;
    struct mp_buf to_a;   /* server PDUs for the association */
    bool a_want;          /* the association takes them now (want_input) */
    bool a_blocked;       /* its flush was refused for want of room: writable() owed */
    struct mp_timer feed; /* to_a handed over on the next loop turn (after want_input) */
    struct mp_buf
        held; /* whole PDUs waiting for CONN/C2, the server's window or a new IN channel */
    struct upchan *in, *out, *in_next, *out_next, *in_old;
    struct mp_rts_cookie vc, inc, outc, group, in_succ, out_succ, inc_prev;
    bool open, dying, have_inc_prev;
    int out_state; /* 0 none, 1 A3 sent (wait OUT_R1/A6 or OUT_R2/A6), 2 OUT_R1/A7 sent
                    * (wait A10), 3 OUT_R2/A7 and C1 sent (wait B3) */
    uint64_t in_sent, in_limit, in_left; /* RPC bytes on IN, what the server allows, length left */
    uint64_t in_next_left;               /* the successor's Content-Length after IN_R1/A1 */
    uint64_t out_app, out_taken;         /* RPC bytes from the OUT channels, handed to the assoc. */
    uint64_t out_base, out_acked;        /* out_app at the last OUT switch; acked up to */
    unsigned in_recycles, out_recycles;
    char *pass_basic; /* pass-through Basic: the client's line, for successor channels */
    bool pass;        /* the client's own HTTP logon (pass-through pins) */
    /* pass-through NTLM or Negotiate: the client's own recycling carries
     * ours.  key: the client's virtual connection (the association's
     * carrier; NULL once it is gone); pend_in: a client's successor IN
     * logon waiting for the recycling under way (or CONN/C2); out_asked:
     * the upstream's OUT_R1/A2 came, the client was asked to recycle its
     * OUT channel and out_wait bounds the wait. */
    const void *key;
    struct mp_rpch_pin *pend_in;
    bool out_asked;
    struct mp_timer out_wait;
    struct mp_timer ping;
    uint64_t last_in_ms;
    uint32_t conn_timeout;
    char peer[96];
    uint16_t port;
};

static void vc_fail(struct upvc *v, const char *why);
static void vc_kick(struct upvc *v);
static void vc_run(struct upvc *v);
static void chan_cb(struct mp_io *io, uint32_t ev);

/* ---- one channel's bytes ---- */

static ssize_t ch_read(struct upchan *c, void *p, size_t n)
{
    if (c->tls_on)
        return mp_tls_read(&c->tls, c->io.fd, p, n);
    ssize_t r = recv(c->io.fd, p, n, 0);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return r > 0 ? r : -1;
}

static ssize_t ch_write(struct upchan *c, const void *p, size_t n)
{
    if (c->tls_on)
        return mp_tls_write(&c->tls, c->io.fd, p, n);
    ssize_t w = send(c->io.fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    return w > 0 ? w : -1;
}

static void ch_interest(struct upchan *c)
{
    if (!c || c->io.fd < 0)
        return;
    struct mp_loop *l = c->v->u->loop;
    bool wr = mp_buf_avail(c->ntlm_wait || c->krb_wait ? &c->leg : &c->wq) != 0;
    if (!c->connected)
        mp_io_set(l, &c->io, MP_WRITE);
    else if (c->tls_on)
        mp_io_set(l, &c->io, mp_tls_events(&c->tls, true, wr));
    else
        mp_io_set(l, &c->io, MP_READ | (wr ? MP_WRITE : 0));
}

static const char *queue_rts(struct mp_buf *q, const struct mp_rts_pdu *pdu)
{
    uint8_t b[160];
    size_t n = mp_rts_encode(pdu, b, sizeof b);
    if (!n || mp_buf_append(q, b, n))
        return "out of memory";
    return NULL;
}

/* An RTS PDU on the IN channel: it takes its share of the request's
 * Content-Length like the RPC PDUs (UP_IN_RESERVE is kept for them). */
static const char *queue_in_rts(struct upvc *v, const struct mp_rts_pdu *pdu)
{
    size_t n = mp_rts_encoded_len(pdu);
    if (n > v->in_left)
        return "the IN channel's Content-Length is used up (no room left for RTS PDUs)";
    v->in_left -= n;
    return queue_rts(&v->in->wq, pdu);
}

static void set_u32(struct mp_rts_cmd *c, uint32_t type, uint32_t v)
{
    c->type = type;
    c->v.u32 = v;
}

static void set_cookie(struct mp_rts_cmd *c, uint32_t type, const struct mp_rts_cookie *k)
{
    c->type = type;
    c->v.cookie = *k;
}

/* A channel request's head (RPC_OUT_DATA or RPC_IN_DATA with its
 * Content-Length and the Authorization line authz) appended to dst. */
static const char *put_head(struct upvc *v, struct upchan *c, uint64_t length, const char *authz,
                            struct mp_buf *dst)
{
    struct mp_rpch_up *u = v->u;
    char head[20480];
    int n = snprintf(head, sizeof head,
                     "%s /rpc/rpcproxy.dll?%s:%u HTTP/1.1\r\nHost: %s\r\n"
                     "Accept: application/rpc\r\nUser-Agent: MSRPC\r\n"
                     "Cache-Control: no-cache\r\nPragma: no-cache\r\nConnection: Keep-Alive\r\n"
                     "Content-Length: %" PRIu64 "\r\n%s\r\n",
                     c->out ? "RPC_OUT_DATA" : "RPC_IN_DATA", u->server, v->port,
                     u->cfg->rpch_upstream.host, length, authz);
    const char *err = NULL;
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(dst, head, (size_t)n))
        err = "out of memory";
    mp_ntlm_cleanse(head, sizeof head); /* it held the Authorization */
    return err;
}

/* KDC worker thread: the channel's "Authorization: Negotiate ..." line
 * (NUL-terminated) into j->tok, or j->rc -1 and j->why.  u's credential and
 * target are not changed while the worker runs. */
static void krb_run(struct mp_kdc_job *j)
{
    struct mp_rpch_up *u = j->arg;
    mp_hneg_job(j, u->krb, u->spn);
}

/* Loop thread: the token came; the head goes before what waits in wq. */
static void krb_done(void *arg, struct mp_kdc_job *j)
{
    struct upchan *c = j->owner;
    if (c) {
        static _Thread_local char why[sizeof j->why];
        struct mp_buf nw = {0};
        const char *err = NULL;
        c->krb_job = NULL;
        c->krb_wait = false;
        if (j->rc)
            err = strcpy(why, j->why);
        else if (!(err = put_head(c->v, c, c->req_length, (const char *)j->tok.data, &nw)) &&
                 mp_buf_append(&nw, mp_buf_head(&c->wq), mp_buf_avail(&c->wq)))
            err = "out of memory";
        if (!err) {
            mp_buf_free(&c->wq);
            c->wq = nw;
            nw = (struct mp_buf){0};
        }
        mp_buf_free(&nw);
        if (j->tok.data)
            mp_ntlm_cleanse(j->tok.data, j->tok.cap);
        mp_kdc_job_free(j);
        if (err)
            vc_fail(c->v, err);
        else
            ch_interest(c);
        return;
    }
    if (j->tok.data)
        mp_ntlm_cleanse(j->tok.data, j->tok.cap);
    mp_kdc_job_free(j);
}

/* The channel's request head: at once (Basic or no logon), or with NTLM
 * the first leg now and the head when the CHALLENGE comes (ntlm_answer). */
static const char *queue_head(struct upvc *v, struct upchan *c, uint64_t length)
{
    struct mp_rpch_up *u = v->u;
    if (c->authz || v->pass_basic) /* the client's logon (pass-through) */
        return put_head(v, c, length, c->authz ? c->authz : v->pass_basic, &c->wq);
    if (u->krb) { /* Negotiate: one leg; the token is made on the KDC worker (krb_done) */
        struct mp_kdc_job *j = calloc(1, sizeof *j);
        if (!j)
            return "out of memory";
        j->run = krb_run;
        j->arg = u;
        j->owner = c;
        c->krb_job = j;
        c->krb_wait = true;
        c->req_length = length;
        mp_kdc_enqueue(&u->kdc, j);
        return NULL;
    }
    if (!u->ntlm)
        return put_head(v, c, length, u->authz, &c->wq);
    struct mp_buf val = {0};
    char line[2048];
    const char *err = NULL;
    if (mp_hauth_up_negotiate(&u->ha, &c->hu, &val) || val.len + 20 > sizeof line)
        err = "the NTLM initiator failed";
    else {
        snprintf(line, sizeof line, "Authorization: %.*s\r\n", (int)val.len,
                 (const char *)val.data);
        err = put_head(v, c, 0, line, &c->leg);
        c->req_length = length;
        c->ntlm_wait = true;
    }
    mp_buf_free(&val);
    return err;
}

/* Why a channel's request was answered: its status line. */
static const char *answered(const struct upchan *c)
{
    static _Thread_local char why[128];
    const char *h = (const char *)mp_buf_head(&c->rq);
    size_t n = mp_buf_avail(&c->rq);
    const char *eol = memchr(h, '\r', n);
    size_t k = (size_t)((eol ? eol : h + n) - h);
    snprintf(why, sizeof why, "%s answered \"%.*s\"", c->out ? "RPC_OUT_DATA" : "RPC_IN_DATA",
             (int)(k > 80 ? 80 : k), h);
    return why;
}

/* A header's value in a response head h[0..n) (the first one whose value
 * starts with prefix, when given); NULL when none. */
const char *mp_rpch_head_value(const char *h, size_t n, const char *name, const char *prefix,
                               size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = h; p < h + n;) {
        const char *eol = memmem(p, (size_t)(h + n - p), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *q = p + nl + 1;
            while (q < eol && *q == ' ')
                q++;
            if (!prefix ||
                ((size_t)(eol - q) >= strlen(prefix) && !strncasecmp(q, prefix, strlen(prefix)))) {
                *len = (size_t)(eol - q);
                return q;
            }
        }
        p = eol + 2;
    }
    return NULL;
}

/* NTLM: the upstream's 401 to the first leg (head and body) brings the
 * CHALLENGE; the request's head with the AUTHENTICATE goes before what
 * waits in wq. */
static const char *ntlm_answer(struct upchan *c, bool eof)
{
    const char *h = (const char *)mp_buf_head(&c->rq);
    size_t n = mp_buf_avail(&c->rq);
    const char *end = n ? memmem(h, n, "\r\n\r\n", 4) : NULL;
    if (!end) {
        if (n > UP_MAX_HEAD)
            return "response head too long";
        return eof ? "the upstream closed the channel during the NTLM logon" : NULL;
    }
    if (n < 12 || memcmp(h, "HTTP/1.", 7) || memcmp(h + 8, " 401", 4))
        return answered(c);
    size_t hl = (size_t)(end + 4 - h), cl = 0, vl = 0;
    const char *v = mp_rpch_head_value(h, hl, "Content-Length", NULL, &vl);
    if (v) {
        char num[24] = "";
        memcpy(num, v, vl < sizeof num - 1 ? vl : sizeof num - 1);
        cl = strtoul(num, NULL, 10);
    }
    if (cl > 65536)
        return "401 body too long";
    if (n < hl + cl)
        return eof ? "the upstream closed the channel during the NTLM logon" : NULL;
    const char *www = mp_rpch_head_value(h, hl, "WWW-Authenticate", "NTLM ", &vl);
    static _Thread_local char why[160];
    struct mp_buf val = {0}, nw = {0};
    char line[4096];
    const char *err = NULL;
    if (!www)
        err = "the upstream's 401 has no NTLM challenge";
    else if (mp_hauth_up_authenticate(&c->hu, www, vl, &val, why, sizeof why))
        err = why;
    else if (val.len + 20 > sizeof line)
        err = "NTLM AUTHENTICATE too long";
    else {
        snprintf(line, sizeof line, "Authorization: %.*s\r\n", (int)val.len,
                 (const char *)val.data);
        err = put_head(c->v, c, c->req_length, line, &nw);
        mp_ntlm_cleanse(line, sizeof line);
        if (!err && mp_buf_append(&nw, mp_buf_head(&c->wq), mp_buf_avail(&c->wq)))
            err = "out of memory";
        if (!err) {
            mp_buf_free(&c->wq);
            c->wq = nw;
            nw = (struct mp_buf){0};
            c->ntlm_wait = false;
            mp_buf_consume(&c->rq, hl + cl);
            mp_buf_trim(&c->rq);
        }
    }
    if (val.data)
        mp_ntlm_cleanse(val.data, val.len);
    mp_buf_free(&val);
    mp_buf_free(&nw);
    mp_hauth_up_free(&c->hu);
    return err;
}

/* The request heads with CONN/A1 (OUT) and CONN/B1 (IN), 2.2.4.2 / 2.2.4.5. */
uint64_t mp_rpch_up_length(const struct mp_config *cfg, bool out)
{
    return out ? (uint64_t)UP_OUT_LENGTH : cfg->rpch_up_in_length;
}

static const char *queue_heads(struct upvc *v)
{
    for (int k = 0; k < 2; k++) {
        bool out = k == 0;
        struct upchan *c = out ? v->out : v->in;
        const char *err = c->head_sent ? NULL : queue_head(v, c, mp_rpch_up_length(v->u->cfg, out));
        if (err)
            return err;
        struct mp_rts_pdu p;
        memset(&p, 0, sizeof p);
        set_u32(&p.cmd[0], MP_RTS_VERSION, 1);
        set_cookie(&p.cmd[1], MP_RTS_COOKIE, &v->vc);
        if (out) {
            p.ncmds = 4;
            set_cookie(&p.cmd[2], MP_RTS_COOKIE, &v->outc);
            set_u32(&p.cmd[3], MP_RTS_RECEIVE_WINDOW_SIZE, UP_WINDOW);
        } else {
            p.ncmds = 6;
            set_cookie(&p.cmd[2], MP_RTS_COOKIE, &v->inc);
            set_u32(&p.cmd[3], MP_RTS_CHANNEL_LIFETIME, UP_LIFETIME);
            set_u32(&p.cmd[4], MP_RTS_CLIENT_KEEPALIVE, MP_RTS_DEFAULT_KEEPALIVE);
            set_cookie(&p.cmd[5], MP_RTS_ASSOCIATION_GROUP_ID, &v->group);
        }
        if ((err = queue_rts(&c->wq, &p)))
            return err;
        if (!out)
            v->in_left -= mp_rts_encoded_len(&p); /* CONN/B1 is the body's start */
    }
    return NULL;
}

static struct upchan *chan_open(struct upvc *v, bool out);
static void chan_free(struct mp_loop *l, struct upchan *c);

/* A successor channel (IN_R1 or OUT_R1): a new request of that length
 * whose body starts with IN_R1/A1 or OUT_R1/A3 (RECYCLE_CHANNEL: Version,
 * the virtual connection cookie, the predecessor's and a new successor
 * cookie in *succ, for OUT our ReceiveWindowSize). */
static struct upchan *chan_pinned(struct upvc *v, bool out, struct mp_rpch_pin *pin);
static const char *open_successor(struct upvc *v, bool out, uint64_t length,
                                  const struct mp_rts_cookie *pred, struct mp_rts_cookie *succ,
                                  struct upchan **slot, size_t *body_used, struct mp_rpch_pin *pin)
{
    if (getrandom(succ, 16, 0) != 16)
        return "no random bytes for a channel cookie";
    if (v->pass && !v->pass_basic && !pin) /* never the proxy's own account in pass-through */
        return "pass-through: the upstream IN channel cannot be recycled without the client's "
               "logon (NTLM and Negotiate authenticate one connection, the client's), and its "
               "Content-Length ran out before the client recycled its own IN channel: raise "
               "mapiproxy:rpc over http upstream in channel length";
    /* pin: the client's successor connection, its head sent (hpass.c) */
    struct upchan *c = pin ? chan_pinned(v, out, pin) : chan_open(v, out);
    if (!c)
        return "cannot open a successor channel";
    if (c->head_sent)
        length = pin->length;
    *slot = c;
    struct mp_rts_pdu p;
    memset(&p, 0, sizeof p);
    p.flags = MP_RTS_FLAG_RECYCLE_CHANNEL;
    p.ncmds = out ? 5 : 4;
    set_u32(&p.cmd[0], MP_RTS_VERSION, 1);
    set_cookie(&p.cmd[1], MP_RTS_COOKIE, &v->vc);
    set_cookie(&p.cmd[2], MP_RTS_COOKIE, pred);
    set_cookie(&p.cmd[3], MP_RTS_COOKIE, succ);
    set_u32(&p.cmd[4], MP_RTS_RECEIVE_WINDOW_SIZE, UP_WINDOW);
    const char *err = c->head_sent ? NULL : queue_head(v, c, length);
    if (!err)
        err = queue_rts(&c->wq, &p);
    *body_used = mp_rts_encoded_len(&p);
    if (!err && *body_used > length)
        err = "the successor channel's Content-Length cannot hold its first RTS PDU";
    return err;
}

/* IN_R1 (3.2.2.4.2 as the client): a successor RPC_IN_DATA whose body
 * starts with IN_R1/A1; RPC PDUs wait until the server's IN_R1/A4. */
static const char *in_recycle_start(struct upvc *v, struct mp_rpch_pin *pin)
{
    uint64_t length = pin && pin->head_sent ? pin->length : v->u->cfg->rpch_up_in_length;
    size_t used = 0;
    const char *err =
        open_successor(v, false, length, &v->inc, &v->in_succ, &v->in_next, &used, pin);
    v->in_next_left = used < length ? length - used : 0;
    mp_debug("rpch upstream %s: IN channel recycling (IN_R1/A1 on a new RPC_IN_DATA%s)", v->peer,
             pin ? ", the client's successor logon" : "");
    return err;
}

/* A client's successor IN logon that waited (pend_in): used now. */
static const char *in_pending(struct upvc *v)
{
    struct mp_rpch_pin *pin = v->pend_in;
    if (!pin || !v->open || v->in_next)
        return NULL;
    v->pend_in = NULL;
    const char *err = in_recycle_start(v, pin);
    mp_rpch_pin_free(pin);
    return err;
}

/* Whole PDUs from held to the IN channel while the server's window and the
 * request's Content-Length allow; a PDU the Content-Length cannot take
 * starts IN channel recycling. */
static const char *release_held(struct upvc *v)
{
    if (!v->open || v->in_next)
        return NULL;
    uint64_t room = v->in_left > UP_IN_RESERVE ? v->in_left - UP_IN_RESERVE : 0;
    uint64_t before = v->in_sent, end = v->in_sent + room;
    const char *err = mp_rpch_release_held(&v->held, &v->in->wq, &v->in_sent,
                                           v->in_limit < end ? v->in_limit : end);
    v->in_left -= v->in_sent - before;
    if (v->in_sent != before)
        v->last_in_ms = mp_now_ms();
    if (!err && mp_buf_avail(&v->held) >= MP_HDR_LEN) {
        uint64_t fl = mp_get16(mp_buf_head(&v->held) + 8);
        if (v->in_sent + fl > end) {
            if (fl + UP_A1_LEN + UP_IN_RESERVE > v->u->cfg->rpch_up_in_length)
                return "a PDU larger than the IN channel's Content-Length (mapiproxy:rpc over "
                       "http upstream in channel length)";
            err = in_recycle_start(v, NULL);
        }
    }
    return err;
}

/* IN_R1/A4 (Destination FDClient, Version, ReceiveWindowSize,
 * ConnectionTimeout): IN_R1/A5 on the predecessor, which is then closed
 * once written; the successor is the IN channel. */
static const char *in_r1_a4(struct upvc *v, const struct mp_rts_pdu *pdu)
{
    if (!v->in_next)
        return "IN_R1/A4 without IN channel recycling";
    if (pdu->cmd[0].v.u32 != MP_RTS_FD_CLIENT)
        return "IN_R1/A4 for another destination";
    uint32_t win = pdu->cmd[2].v.u32;
    if (win < MP_RTS_MIN_WINDOW || win > MP_RTS_MAX_WINDOW)
        return "IN_R1/A4 ReceiveWindowSize out of range";
    struct mp_rts_pdu a5;
    memset(&a5, 0, sizeof a5);
    a5.ncmds = 1;
    set_cookie(&a5.cmd[0], MP_RTS_COOKIE, &v->in_succ);
    const char *err = queue_in_rts(v, &a5);
    if (err)
        return err;
    if (v->in_old)
        chan_free(v->u->loop, v->in_old);
    v->in_old = v->in;
    v->in = v->in_next;
    v->in_next = NULL;
    v->inc_prev = v->inc;
    v->have_inc_prev = true;
    v->inc = v->in_succ;
    v->in_left = v->in_next_left;
    v->in_sent = 0;
    v->in_limit = win;
    if (pdu->cmd[3].v.u32 >= MP_RTS_MIN_CONN_TIMEOUT)
        v->conn_timeout = pdu->cmd[3].v.u32;
    v->in_recycles++;
    mp_info("rpch upstream %s: IN channel recycled (%u so far)", v->peer, v->in_recycles);
    if ((err = in_pending(v)))
        return err;
    return release_held(v);
}

/* OUT_R1/A2 (RECYCLE_CHANNEL, Destination FDClient): a successor
 * RPC_OUT_DATA with OUT_R1/A3 (3.2.2.5.x as the client). */
static const char *out_r1_a2(struct upvc *v, const struct mp_rts_pdu *pdu)
{
    if (!v->open || v->out_state || v->out_next)
        return "OUT_R1/A2 while the OUT channel is not open or already recycling";
    if (pdu->cmd[0].v.u32 != MP_RTS_FD_CLIENT)
        return "OUT_R1/A2 for another destination";
    if (v->pass && !v->pass_basic) {
        /* only the client's own logon may open our successor: the client
         * is asked to recycle its OUT channel, its successor's logon
         * becomes ours (mp_rpch_up_successor) */
        if (v->out_asked)
            return "second OUT_R1/A2 before the client recycled its OUT channel";
        const char *why = v->key ? mp_rpch_up_wants_out_recycling(v->key)
                                 : "the client's virtual connection is gone";
        if (why) {
            static _Thread_local char msg[200];
            snprintf(msg, sizeof msg,
                     "pass-through: the upstream asked to recycle its OUT "
                     "channel and the client cannot be asked: %s",
                     why);
            return msg;
        }
        v->out_asked = true;
        uint64_t wait = v->conn_timeout >= MP_RTS_MIN_CONN_TIMEOUT ? v->conn_timeout : 120000;
        mp_timer_arm(v->u->loop, &v->out_wait, wait);
        mp_info("rpch upstream %s: the upstream asks to recycle its OUT channel: the client is "
                "asked to recycle its own (pass-through logon; at most %" PRIu64 " ms)",
                v->peer, wait);
        return NULL;
    }
    size_t used = 0;
    const char *err = open_successor(v, true, UP_OUT_NEXT_LENGTH, &v->outc, &v->out_succ,
                                     &v->out_next, &used, NULL);
    v->out_state = 1;
    mp_debug("rpch upstream %s: OUT channel recycling asked (OUT_R1/A2)", v->peer);
    return err;
}

static void out_wait_cb(struct mp_timer *t)
{
    struct upvc *v = t->data;
    if (v->dying || !v->out_asked)
        return;
    char why[200];
    snprintf(why, sizeof why,
             "pass-through: the client did not recycle its OUT channel within %" PRIu64
             " ms of the upstream's OUT_R1/A2 (the upstream's connection timeout)",
             v->conn_timeout >= MP_RTS_MIN_CONN_TIMEOUT ? (uint64_t)v->conn_timeout : 120000u);
    vc_fail(v, why);
}

/* OUT_R1/A6 or OUT_R2/A6 on the predecessor (3.2.2.5.7, 3.2.2.5.9): the
 * outbound proxy chose the sequence when our A3 reached it (3.2.4.5.6: a
 * proxy that knows the virtual connection runs OUT_R2).  Either way
 * OUT_R1/A7 or OUT_R2/A7 (the same layout: Destination FDServer, the
 * successor cookie, Version) goes on the IN channel; in OUT_R2 the
 * successor's last PDU, OUT_R2/C1 (the size of OUT_R1/A11), goes too, and
 * the switch comes with OUT_R2/B3 instead of OUT_R1/A10. */
static const char *out_a6(struct upvc *v, const struct mp_rts_pdu *pdu, bool r2)
{
    if (v->out_state != 1 || !v->out_next)
        return r2 ? "OUT_R2/A6 without OUT_R2/A3" : "OUT_R1/A6 without OUT_R1/A3";
    if (pdu->cmd[0].v.u32 != MP_RTS_FD_CLIENT)
        return r2 ? "OUT_R2/A6 for another destination" : "OUT_R1/A6 for another destination";
    struct mp_rts_pdu p;
    memset(&p, 0, sizeof p);
    p.flags = MP_RTS_FLAG_OUT_CHANNEL;
    p.ncmds = 3;
    set_u32(&p.cmd[0], MP_RTS_DESTINATION, MP_RTS_FD_SERVER);
    set_cookie(&p.cmd[1], MP_RTS_COOKIE, &v->out_succ);
    set_u32(&p.cmd[2], MP_RTS_VERSION, 1);
    v->out_state = r2 ? 3 : 2;
    const char *err = queue_in_rts(v, &p);
    if (err || !r2)
        return err;
    mp_rts_out_r2_c1(&p);
    return queue_rts(&v->out_next->wq, &p);
}

/* OUT_R1/A10 or OUT_R2/B3, the predecessor's last PDU: the successor is
 * the OUT channel (its answer head and PDUs are parsed from now on; bytes
 * after A10/B3 on the predecessor are dropped with it), OUT_R1/A11 on it
 * (OUT_R2/C1 went with OUT_R2/A7), the predecessor closed; flow control
 * counts from 0. */
static void out_switch(struct upvc *v)
{
    struct upchan *old = v->out;
    bool r2 = v->out_state == 3;
    v->out = v->out_next;
    v->out_next = NULL;
    v->outc = v->out_succ;
    v->out_state = 0;
    v->out_base = v->out_acked = v->out_app;
    const char *err = NULL;
    if (!r2) {
        struct mp_rts_pdu a11;
        mp_rts_out_r1_a10(&a11); /* the same ANCE PDU */
        err = queue_rts(&v->out->wq, &a11);
    }
    chan_free(v->u->loop, old);
    v->out_recycles++;
    if (err)
        vc_fail(v, err);
    else
        mp_info("rpch upstream %s: OUT channel recycled (%s, %u so far)", v->peer,
                r2 ? "OUT_R2" : "OUT_R1", v->out_recycles);
}

static const char *out_rts(struct upvc *v, const uint8_t *p, size_t n)
{
    struct mp_rts_pdu pdu;
    const char *err = mp_rts_decode(p, n, &pdu);
    if (err)
        return err;
    const struct mp_rts_cmd *ack;
    switch (mp_rts_identify(&pdu)) {
    case MP_RTS_CONN_A3:
        return NULL;
    case MP_RTS_CONN_C1: /* CONN/C2: Version, ReceiveWindowSize, ConnectionTimeout */
        if (v->open)
            return "second CONN/C2";
        if (pdu.cmd[1].v.u32 < MP_RTS_MIN_WINDOW || pdu.cmd[1].v.u32 > MP_RTS_MAX_WINDOW)
            return "CONN/C2 ReceiveWindowSize out of range";
        v->open = true;
        v->in_limit = pdu.cmd[1].v.u32;
        v->conn_timeout = pdu.cmd[2].v.u32;
        mp_info("rpch upstream %s: virtual connection open (?%s:%u, window %u)", v->peer,
                v->u->server, v->port, pdu.cmd[1].v.u32);
        mp_timer_arm(v->u->loop, &v->ping, 10000);
        if ((err = in_pending(v)))
            return err;
        return release_held(v);
    case MP_RTS_FLOW_CONTROL_ACK_PDU:
    case MP_RTS_FLOW_CONTROL_ACK_DEST:
        if (!(ack = mp_rts_find(&pdu, MP_RTS_FLOW_CONTROL_ACK)))
            return "FlowControlAck without its command";
        if (v->have_inc_prev && !memcmp(&ack->v.ack.channel, &v->inc_prev, 16))
            return NULL; /* late, for the predecessor IN channel */
        if (memcmp(&ack->v.ack.channel, &v->inc, 16) != 0)
            return "FlowControlAck for another IN channel";
        if (ack->v.ack.bytes_received > (uint32_t)v->in_sent ||
            ack->v.ack.available_window > MP_RTS_MAX_WINDOW)
            return "FlowControlAck out of range";
        v->in_limit = (v->in_sent & ~(uint64_t)0xffffffffu) + ack->v.ack.bytes_received +
                      ack->v.ack.available_window;
        return release_held(v);
    case MP_RTS_PING:
        return NULL;
    case MP_RTS_IN_R1_A3: /* IN_R1/A4: the same layout */
        return in_r1_a4(v, &pdu);
    case MP_RTS_OUT_R1_A1: /* OUT_R1/A2 */
        return out_r1_a2(v, &pdu);
    case MP_RTS_OUT_R1_A5: /* OUT_R1/A6 */
        return out_a6(v, &pdu, false);
    case MP_RTS_OUT_R2_A5: /* OUT_R2/A6: Destination, ANCE */
        return out_a6(v, &pdu, true);
    case MP_RTS_OUT_R1_A9: /* OUT_R1/A10 (ANCE) */
        if (v->out_state != 2)
            return v->out_state == 3 ? "OUT_R1/A10 in OUT_R2 (OUT_R2/A6 came, not OUT_R1/A6)"
                                     : "OUT_R1/A10 without OUT_R1/A7";
        out_switch(v);
        return NULL;
    case MP_RTS_OUT_R2_B3: /* EOF, ANCE */
        if (v->out_state != 3)
            return v->out_state == 2 ? "OUT_R2/B3 in OUT_R1 (OUT_R1/A6 came, not OUT_R2/A6)"
                                     : "OUT_R2/B3 without OUT_R2/A7";
        out_switch(v);
        return NULL;
    default:
        mp_debug("rpch upstream %s: RTS PDU %s ignored", v->peer,
                 mp_rts_kind_name(mp_rts_identify(&pdu)));
        return NULL;
    }
}

/* The OUT channel's response head, then its PDUs (after an OUT switch the
 * successor's, which may have waited). */
static const char *out_parse(struct upvc *v)
{
    struct upchan *c = v->out;
    if (!c->head_done) {
        const char *h = (const char *)mp_buf_head(&c->rq);
        size_t n = mp_buf_avail(&c->rq);
        if (!n)
            return NULL;
        const char *end = memmem(h, n, "\r\n\r\n", 4);
        if (!end)
            return n > UP_MAX_HEAD ? "RPC_OUT_DATA response head too long" : NULL;
        if (n < 12 || memcmp(h, "HTTP/1.", 7) || memcmp(h + 8, " 200", 4))
            return answered(c);
        mp_buf_consume(&c->rq, (size_t)(end + 4 - h));
        c->head_done = true;
    }
    struct mp_pdu_hdr h;
    const char *err = NULL;
    int more;
    while ((more = mp_rpch_next_pdu(&c->rq, &h, &err)) > 0) {
        const uint8_t *p = mp_buf_head(&c->rq);
        if (h.ptype == MP_PT_RTS) {
            if ((err = out_rts(v, p, h.frag_len)))
                return err;
            if (v->dying)
                return NULL;
            if (v->out != c) /* OUT_R1/A10: c is closed, the successor goes on */
                return out_parse(v);
            mp_buf_consume(&c->rq, h.frag_len);
            continue;
        }
        if (!v->open)
            return "RPC PDU on the OUT channel before CONN/C2";
        if (mp_buf_append(&v->to_a, p, h.frag_len))
            return "out of memory";
        v->out_app += h.frag_len;
        /* the server may have at most our window unacknowledged (MS-RPCH
         * 3.2.1.1.4): past twice that it ignores flow control, and to_a
         * would grow with whatever it sends */
        if (v->out_app - v->out_acked > 2 * (uint64_t)UP_WINDOW)
            return "the upstream sent past the OUT channel's receive window";
        mp_buf_consume(&c->rq, h.frag_len);
    }
    mp_buf_trim(&c->rq);
    return more < 0 ? err : NULL;
}

/* Connects, handshakes, writes and reads one channel; *eof when the
 * upstream closed it. */
static const char *chan_io(struct upchan *c, uint32_t ev, bool *eof)
{
    struct upvc *v = c->v;
    if (!c->connected) {
        int e = 0;
        socklen_t l = sizeof e;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
            e = errno;
        if (e) {
            static _Thread_local char why[96];
            snprintf(why, sizeof why, "connect failed: %s", strerror(e));
            return why;
        }
        if (!(ev & MP_WRITE))
            return NULL;
        c->connected = true;
        if (c->tls_on) {
            const char *why = NULL;
            if (mp_tls_connect(&c->tls, v->u->tls_ctx, c->io.fd, v->u->cfg->rpch_upstream.host,
                               v->u->cfg->tls_verify, &why) < 0)
                return why ? why : "TLS setup failed";
        }
    }
    if (c->tls_on && !c->hs_done) {
        static _Thread_local char why[160];
        int rc = mp_tls_handshake(&c->tls, why, sizeof why);
        if (rc < 0)
            return why;
        if (rc == 0)
            return NULL;
        c->hs_done = true;
    }
    struct mp_buf *q = c->ntlm_wait || c->krb_wait ? &c->leg : &c->wq;
    while (mp_buf_avail(q)) {
        ssize_t w = ch_write(c, mp_buf_head(q), mp_buf_avail(q));
        if (w < 0)
            return "write failed";
        if (!w)
            break;
        mp_buf_consume(q, (size_t)w);
    }
    mp_buf_trim(q);
    /* a successor OUT channel is read only up to a window before the switch */
    while (c != v->out_next || mp_buf_avail(&c->rq) <= UP_MAX_NEXT_RQ) {
        uint8_t buf[16384];
        ssize_t r = ch_read(c, buf, sizeof buf);
        if (r < 0) {
            *eof = true;
            break;
        }
        if (!r)
            break;
        if (mp_buf_append(&c->rq, buf, (size_t)r))
            return "out of memory";
    }
    return NULL;
}

/* An IN channel's answer: it comes only when the channel fails. */
static const char *in_answer(struct upchan *c, bool eof)
{
    if (mp_buf_avail(&c->rq))
        return answered(c);
    return eof ? "the upstream closed the IN channel" : NULL;
}

/* The channel's bytes by its role in the virtual connection. */
static const char *chan_step(struct upchan *c, uint32_t ev)
{
    struct upvc *v = c->v;
    bool eof = false;
    const char *err = chan_io(c, ev, &eof);
    if (err)
        return err;
    if (c->ntlm_wait) {
        if ((err = ntlm_answer(c, eof)) || c->ntlm_wait)
            return err;
        return chan_io(c, MP_WRITE, &eof); /* the request goes now */
    }
    if (c == v->out) {
        if ((err = out_parse(v)))
            return err;
        /* closed after an answer (parsed above) or midway; after OUT_R1/A10
         * c is no longer the OUT channel and its close is no error */
        return eof && c == v->out && !v->dying ? "the upstream closed the OUT channel" : NULL;
    }
    if (c == v->out_next) {
        if (eof)
            return "the upstream closed the successor OUT channel before the switch";
        if (mp_buf_avail(&c->rq) > UP_MAX_NEXT_RQ)
            return "the successor OUT channel sent more than a window before the switch";
        return NULL;
    }
    if (c == v->in_old) { /* IN_R1/A5 written, or the upstream closed it: done */
        if (eof || mp_buf_avail(&c->rq) || !mp_buf_avail(&c->wq)) {
            v->in_old = NULL;
            chan_free(v->u->loop, c);
        }
        return NULL;
    }
    return in_answer(c, eof);
}

static void chan_cb(struct mp_io *io, uint32_t ev)
{
    struct upchan *c = io->data;
    if (c->io.fd < 0) /* closed in this loop turn; freed after it */
        return;
    struct upvc *v = c->v;
    bool out = c->out, next = c == v->in_next || c == v->out_next;
    const char *err = chan_step(c, ev);
    if (err) {
        char why[256];
        snprintf(why, sizeof why, "%s%s channel: %s", next ? "successor " : "", out ? "OUT" : "IN",
                 err);
        vc_fail(v, why);
        return;
    }
    vc_run(v);
}

/* ---- the association's side: the upstream carrier (transport/dcerpc/carrier.h) ---- */

/* The association's PDUs for the server: whole ones into held while less
 * than a window's worth waits there (back-pressure: the rest stays with the
 * association, which is told writable() once held drained), then on to the
 * IN channel as far as the server's window allows.  Never calls back into
 * the association: a failure is logged (vc_fail) and returned. */
static int up_flush(void *up, struct mp_buf *out)
{
    struct upvc *v = up;
    if (v->dying)
        return -1;
    const char *err = NULL;
    while (mp_buf_avail(out) >= MP_HDR_LEN && mp_buf_avail(&v->held) < UP_WINDOW) {
        size_t fl = mp_get16(mp_buf_head(out) + 8);
        if (fl < MP_HDR_LEN) {
            err = "the association sent a PDU shorter than its header";
            break;
        }
        if (mp_buf_avail(out) < fl)
            break;
        if (mp_buf_append(&v->held, mp_buf_head(out), fl)) {
            err = "out of memory";
            break;
        }
        mp_buf_consume(out, fl);
    }
    if (mp_buf_avail(out))
        v->a_blocked = true;
    if (!err)
        err = release_held(v);
    if (err)
        vc_fail(v, err);
    else
        vc_kick(v);
    return v->dying ? -1 : 0;
}

static void up_want(void *up, bool want)
{
    struct upvc *v = up;
    v->a_want = want;
    /* not from inside the association: on the next loop turn */
    if (want && mp_buf_avail(&v->to_a) && !v->dying && !v->feed.heap_idx)
        mp_timer_arm(v->u->loop, &v->feed, 0);
}

static void up_closed(void *up)
{
    struct upvc *v = up;
    v->a = NULL;
    vc_fail(v, "the association closed");
}

static const struct mp_dce_up_ops up_ops = {up_flush, up_want, up_closed};

/* From the upclient's own events only (a channel's I/O, a timer): the
 * server's PDUs to the association while it takes them, a FlowControlAck
 * after every half window it took, writable() once held has room again. */
static const char *deliver(struct upvc *v)
{
    while (v->a && v->a_want && mp_buf_avail(&v->to_a)) {
        size_t n = mp_buf_avail(&v->to_a);
        int rc = mp_dce_up_input(v->a, mp_buf_head(&v->to_a), n);
        if (v->dying) /* the association let go (closed()) or its flush failed */
            return NULL;
        if (rc < 0) {
            v->a = NULL;
            return "the association closed";
        }
        mp_buf_consume(&v->to_a, n);
        v->out_taken += n;
    }
    mp_buf_trim(&v->to_a);
    if (v->a && v->a_blocked && mp_buf_avail(&v->held) < UP_WINDOW) {
        v->a_blocked = false;
        mp_dce_up_writable(v->a);
        if (v->dying)
            return NULL;
    }
    /* the current OUT channel's bytes count from out_base (its switch) */
    if (v->out_taken >= v->out_acked + UP_WINDOW / 2) {
        /* 2.2.4.52 FlowControlAckWithDestination toward the outbound proxy */
        struct mp_rts_pdu ack;
        mp_rts_flow_ack(&ack, 1, MP_RTS_FD_OUT_PROXY, (uint32_t)(v->out_taken - v->out_base),
                        UP_WINDOW, &v->outc);
        v->out_acked = v->out_taken;
        return queue_in_rts(v, &ack);
    }
    return NULL;
}

/* deliver(), then the channels' writes (an event's last step). */
static void vc_run(struct upvc *v)
{
    if (v->dying)
        return;
    const char *err = deliver(v);
    if (err)
        vc_fail(v, err);
    else
        vc_kick(v);
}

static void feed_cb(struct mp_timer *t)
{
    vc_run(t->data);
}

/* Writes what can go now on the channels and sets their interest. */
static void vc_kick(struct upvc *v)
{
    if (v->dying)
        return;
    const char *err = NULL;
    struct upchan *cs[5] = {v->in, v->out, v->in_next, v->out_next, v->in_old};
    for (int k = 0; !err && k < 5; k++) {
        struct upchan *c = cs[k];
        if (!c || c->io.fd < 0)
            continue;
        struct mp_buf *q = c->ntlm_wait || c->krb_wait ? &c->leg : &c->wq;
        if (c->connected && (!c->tls_on || c->hs_done))
            while (mp_buf_avail(q)) {
                ssize_t w = ch_write(c, mp_buf_head(q), mp_buf_avail(q));
                if (w < 0) {
                    err = c->out ? "OUT channel: write failed" : "IN channel: write failed";
                    break;
                }
                if (!w)
                    break;
                mp_buf_consume(q, (size_t)w);
            }
        if (c == v->in_old && !mp_buf_avail(&c->wq)) { /* IN_R1/A5 is out */
            v->in_old = NULL;
            chan_free(v->u->loop, c);
            continue;
        }
        ch_interest(c);
    }
    if (err)
        vc_fail(v, err);
}

static void ping_cb(struct mp_timer *t)
{
    struct upvc *v = t->data;
    /* an idle IN channel gets a Ping (3.2.2.3.1 keep-alive), so that
     * intermediaries do not drop it */
    uint64_t every = v->conn_timeout >= MP_RTS_MIN_CONN_TIMEOUT ? v->conn_timeout / 2 : 60000;
    if (mp_now_ms() - v->last_in_ms >= every) {
        struct mp_rts_pdu p;
        mp_rts_ping(&p);
        const char *err = queue_in_rts(v, &p);
        if (err) {
            vc_fail(v, err);
            return;
        }
        v->last_in_ms = mp_now_ms();
        vc_kick(v);
    }
    mp_timer_arm(v->u->loop, &v->ping, 10000);
}

/* ---- virtual connections ---- */

static void chan_release(void *p)
{
    struct upchan *c = p;
    mp_buf_free(&c->wq);
    mp_buf_free(&c->rq);
    mp_buf_free(&c->leg);
    mp_hauth_up_free(&c->hu);
    if (c->authz)
        mp_ntlm_cleanse(c->authz, strlen(c->authz));
    free(c->authz);
    free(c);
}

/* Closes a channel now; its memory goes after this loop turn (an event
 * for it may still be in the turn's batch: chan_cb sees fd -1). */
static void chan_free(struct mp_loop *l, struct upchan *c)
{
    if (c && c->krb_job) /* the token comes for nobody */
        c->krb_job->owner = NULL;
    if (!c)
        return;
    if (c->tls_on)
        mp_tls_free(&c->tls, false);
    c->tls_on = false;
    if (c->io.fd >= 0)
        mp_io_close(l, &c->io);
    if (mp_loop_defer(l, chan_release, c))
        chan_release(c);
}

static void vc_free(void *p)
{
    free(p);
}

static void vc_unlink(struct upvc *v)
{
    struct mp_rpch_up *u = v->u;
    v->dying = true;
    if (v->prev)
        v->prev->next = v->next;
    else
        u->all = v->next;
    if (v->next)
        v->next->prev = v->prev;
    mp_timer_cancel(u->loop, &v->ping);
    mp_timer_cancel(u->loop, &v->out_wait);
    mp_timer_cancel(u->loop, &v->feed);
    mp_rpch_pin_free(v->pend_in);
    v->pend_in = NULL;
    struct upchan *cs[5] = {v->in, v->out, v->in_next, v->out_next, v->in_old};
    for (int k = 0; k < 5; k++)
        chan_free(u->loop, cs[k]);
    v->in = v->out = v->in_next = v->out_next = v->in_old = NULL;
    if (v->pass_basic)
        mp_ntlm_cleanse(v->pass_basic, strlen(v->pass_basic));
    free(v->pass_basic);
    v->pass_basic = NULL;
    mp_buf_free(&v->to_a);
    mp_buf_free(&v->held);
    if (mp_loop_defer(u->loop, vc_free, v))
        free(v);
}

/* Ends the virtual connection; the association is told (its upstream
 * failed with why; it acts on it at its own flush or on the next loop
 * turn, so this may run anywhere), unless it let go already. */
static void vc_fail(struct upvc *v, const char *why)
{
    if (v->dying)
        return;
    if (!strcmp(why, "the association closed"))
        mp_debug("rpch upstream %s: virtual connection closed: %s", v->peer, why);
    else
        mp_warn("rpch upstream %s: virtual connection closed: %s", v->peer, why);
    struct assoc *a = v->a;
    char msg[300];
    snprintf(msg, sizeof msg, "RPC over HTTP virtual connection closed: %s", why);
    v->a = NULL;
    vc_unlink(v);
    if (a)
        mp_dce_up_failed(a, msg);
}

/* A new channel (TCP connect under way) to the upstream's RPC proxy. */
static struct upchan *chan_open(struct upvc *v, bool out)
{
    struct mp_rpch_up *u = v->u;
    struct upchan *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->v = v;
    c->out = out;
    c->tls_on = u->tls_ctx != NULL;
    c->io.cb = chan_cb;
    c->io.data = c;
    c->io.fd = mp_tcp_connect_start(&u->addr, u->addr_len, u->cfg->rpch_upstream.port);
    if (c->io.fd < 0) {
        c->tls_on = false;
        free(c);
        return NULL;
    }
    ch_interest(c);
    return c;
}

/* ---- HTTP logon pass-through: pins (upclient.h) ---- */

struct pinent {
    struct pinent *next;
    const void *key;
    struct mp_rpch_pin *pin[2]; /* [0] IN, [1] OUT */
};
static _Thread_local struct pinent *pins;

void mp_rpch_pin_free(struct mp_rpch_pin *pin)
{
    if (!pin)
        return;
    if (pin->tls_on)
        mp_tls_free(&pin->tls, false);
    if (pin->fd >= 0)
        close(pin->fd);
    mp_ntlm_cleanse(pin->authz, sizeof pin->authz);
    free(pin);
}

static struct pinent *pin_take(const void *key)
{
    for (struct pinent **pp = &pins; key && *pp; pp = &(*pp)->next)
        if ((*pp)->key == key) {
            struct pinent *e = *pp;
            *pp = e->next;
            return e;
        }
    return NULL;
}

static void pinent_free(struct pinent *e)
{
    if (!e)
        return;
    mp_rpch_pin_free(e->pin[0]);
    mp_rpch_pin_free(e->pin[1]);
    free(e);
}

void mp_rpch_up_pin(const void *key, bool out, struct mp_rpch_pin *pin)
{
    struct pinent *e = pin_take(key);
    if (!e && !(e = calloc(1, sizeof *e))) {
        mp_rpch_pin_free(pin);
        return;
    }
    e->key = key;
    mp_rpch_pin_free(e->pin[out]);
    e->pin[out] = pin;
    e->next = pins;
    pins = e;
}

/* The upstream virtual connection of a client's virtual connection (its
 * key; one association, so one upstream virtual connection, each). */
static struct upvc *vc_by_key(const void *key)
{
    for (struct mp_rpch_up *u = ups; key && u; u = u->next_up)
        for (struct upvc *v = u->all; v; v = v->next)
            if (v->key == key)
                return v;
    return NULL;
}

void mp_rpch_up_unpin(const void *key)
{
    pinent_free(pin_take(key));
    /* the client's virtual connection is gone: its key names nothing */
    struct upvc *v = vc_by_key(key);
    if (v)
        v->key = NULL;
}

uint64_t mp_rpch_up_chan_length(const struct mp_config *cfg, bool out, uint64_t client_length)
{
    if (out && client_length == UP_OUT_NEXT_LENGTH)
        return UP_OUT_NEXT_LENGTH;
    return mp_rpch_up_length(cfg, out);
}

bool mp_rpch_up_successor(const void *key, bool out, struct mp_rpch_pin *pin)
{
    struct upvc *v = vc_by_key(key);
    if (v && v->dying)
        v = NULL;
    if (!v && !out && pin->head_sent && pin->fd >= 0) {
        /* not opened upstream yet: the successor replaces the first IN
         * channel's pin, which mp_rpch_up_open would have used */
        for (struct pinent *e = pins; key && e; e = e->next)
            if (e->key == key && e->pin[0]) {
                mp_rpch_up_pin(key, false, pin);
                return true;
            }
    }
    if (!v || !v->pass || v->pass_basic)
        return false; /* Basic: the upstream client repeats it by itself */
    if (!pin->head_sent || pin->fd < 0) {
        mp_debug("rpch upstream %s: the client's successor %s channel has no checked logon on an "
                 "idle upstream connection: not used",
                 v->peer, out ? "OUT" : "IN");
        return false;
    }
    const char *err = NULL;
    if (!out) {
        if (!v->open || v->in_next) { /* after the recycling under way (in_pending) */
            mp_rpch_pin_free(v->pend_in);
            v->pend_in = pin;
            return true;
        }
        err = in_recycle_start(v, pin);
    } else {
        if (!v->out_asked || v->out_state || v->out_next)
            return false; /* the upstream did not ask: its OUT channel stays */
        if (pin->length < UP_OUT_NEXT_LENGTH) {
            mp_warn("rpch upstream %s: the client's successor OUT channel request is %" PRIu64
                    " bytes long, OUT_R1/A3 and A11 take %u: not used",
                    v->peer, pin->length, UP_OUT_NEXT_LENGTH);
            return false;
        }
        size_t used = 0;
        v->out_asked = false;
        mp_timer_cancel(v->u->loop, &v->out_wait);
        err = open_successor(v, true, UP_OUT_NEXT_LENGTH, &v->outc, &v->out_succ, &v->out_next,
                             &used, pin);
        v->out_state = 1;
    }
    mp_rpch_pin_free(pin);
    if (err) {
        vc_fail(v, err);
        return true;
    }
    mp_info("rpch upstream %s: %s channel recycling on the client's successor logon "
            "(pass-through)",
            v->peer, out ? "OUT" : "IN");
    vc_kick(v);
    return true;
}

/* A channel on the connection the client's logon ran on, or a new one;
 * its head carries the client's Authorization line.  The pin is used up. */
static struct upchan *chan_pinned(struct upvc *v, bool out, struct mp_rpch_pin *pin)
{
    if (!pin)
        return chan_open(v, out);
    struct upchan *c = pin->fd >= 0 ? calloc(1, sizeof *c) : chan_open(v, out);
    if (!c || !(c->authz = strdup(pin->authz))) {
        if (c && pin->fd >= 0)
            free(c);
        else if (c)
            chan_free(v->u->loop, c);
        return NULL;
    }
    if (!strncasecmp(pin->authz, "Authorization: Basic ", 21) && !v->pass_basic)
        v->pass_basic = strdup(pin->authz);
    if (pin->fd >= 0) {
        c->head_sent = pin->head_sent;
        c->v = v;
        c->out = out;
        c->io.cb = chan_cb;
        c->io.data = c;
        c->io.fd = pin->fd;
        c->tls = pin->tls;
        c->tls_on = pin->tls_on;
        c->connected = c->hs_done = true;
        pin->fd = -1;
        pin->tls_on = false;
        ch_interest(c);
    }
    return c;
}

void *mp_rpch_up_open(struct mp_rpch_up *u, struct assoc *a, const void *key, const char *peer,
                      uint16_t port, const struct mp_dce_up_ops **ops)
{
    struct upvc *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->u = u;
    v->port = port;
    v->in_left = u->cfg->rpch_up_in_length;
    v->last_in_ms = mp_now_ms();
    v->ping.cb = ping_cb;
    v->ping.data = v;
    v->out_wait.cb = out_wait_cb;
    v->out_wait.data = v;
    v->feed.cb = feed_cb;
    v->feed.data = v;
    v->key = key;
    snprintf(v->peer, sizeof v->peer, "%s", peer);
    v->next = u->all;
    if (u->all)
        u->all->prev = v;
    u->all = v;
    if (getrandom(&v->vc, 16, 0) != 16 || getrandom(&v->inc, 16, 0) != 16 ||
        getrandom(&v->outc, 16, 0) != 16 || getrandom(&v->group, 16, 0) != 16)
        goto fail;
    struct pinent *pe = pin_take(key);
    v->out = chan_pinned(v, true, pe ? pe->pin[1] : NULL);
    v->in = v->out ? chan_pinned(v, false, pe ? pe->pin[0] : NULL) : NULL;
    v->pass = pe != NULL;
    if (pe)
        mp_debug("rpch upstream %s: the client's HTTP logon (pass-through)", peer);
    pinent_free(pe);
    if (!v->out || !v->in || queue_heads(v))
        goto fail;
    mp_debug("rpch upstream %s: connecting to %s:%u for ?%s:%u", peer, u->cfg->rpch_upstream.host,
             u->cfg->rpch_upstream.port, u->server, port);
    v->a = a;
    v->a_want = true;
    *ops = &up_ops;
    return v;
fail:
    mp_warn("rpch upstream %s: cannot open a virtual connection: %s", peer, strerror(errno));
    vc_unlink(v);
    return NULL;
}

int mp_rpch_up_target(const struct mp_config *cfg, struct sockaddr_storage *addr, socklen_t *len,
                      SSL_CTX **tls_ctx, char *server, size_t sl)
{
    char err[256];
    *tls_ctx = NULL;
    if (mp_conn_resolve(cfg->rpch_upstream.host, addr, len, err, sizeof err)) {
        mp_error("mapiproxy:rpc over http upstream: %s: %s", cfg->rpch_upstream.host, err);
        return -1;
    }
    if (cfg->rpch_upstream.tls &&
        !(*tls_ctx = mp_tls_client_ctx(cfg->tls_verify, cfg->tls_ca_file)))
        return -1;
    snprintf(server, sl, "%s",
             cfg->rpch_upstream_server[0] ? cfg->rpch_upstream_server : cfg->binding.host);
    return 0;
}

/* upstream auth = negotiate: the proxy's Kerberos identity, as for the
 * DCE/RPC upstream (mapiproxy:upstream ccache, keytab, principal; tickets
 * from a keytab kept in a MEMORY: cache of its own) and the target, with a
 * first service ticket fetched now so that channels do not wait for the
 * KDC (a later renewal does, on the loop). */
static int up_krb(struct mp_rpch_up *u)
{
    const struct mp_config *cfg = u->cfg;
    if (cfg->rpch_upstream_spn[0])
        snprintf(u->spn, sizeof u->spn, "%s", cfg->rpch_upstream_spn);
    else
        snprintf(u->spn, sizeof u->spn, "HTTP@%s", cfg->rpch_upstream.host);
    u->krb = mp_hneg_up_cred(cfg, u, "mapiproxy:rpc over http upstream auth", u->spn);
    if (!u->krb)
        return -1;
    if (mp_kdc_start(&u->kdc, u->loop, NULL, krb_done, u)) {
        mp_gss_cred_free(u->krb);
        u->krb = NULL;
        return -1;
    }
    return 0;
}

struct mp_rpch_up *mp_rpch_up_new(struct mp_loop *loop, const struct mp_config *cfg, bool *failed)
{
    *failed = false;
    if (!cfg->have_rpch_upstream)
        return NULL;
    *failed = true;
    struct mp_rpch_up *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->loop = loop;
    u->cfg = cfg;
    if (mp_rpch_up_target(cfg, &u->addr, &u->addr_len, &u->tls_ctx, u->server, sizeof u->server)) {
        free(u);
        return NULL;
    }
    u->ntlm = cfg->username[0] && !strcasecmp(cfg->rpch_upstream_auth, "ntlm");
    if (!strcasecmp(cfg->rpch_upstream_auth, "negotiate")) {
        if (up_krb(u)) {
            mp_tls_ctx_free(u->tls_ctx);
            free(u);
            return NULL;
        }
    } else if (cfg->username[0]) {
        char pw[256] = "", why[256] = "";
        if (cfg->password_file[0]) {
            if (mp_read_secret_file(cfg->password_file, pw, sizeof pw, why, sizeof why)) {
                mp_error("mapiproxy:password file: %s", why);
                mp_tls_ctx_free(u->tls_ctx);
                free(u);
                return NULL;
            }
        } else {
            snprintf(pw, sizeof pw, "%s", cfg->password);
        }
        char plain[800];
        int n = snprintf(plain, sizeof plain, "%s%s%s:%s", cfg->domain, cfg->domain[0] ? "\\" : "",
                         cfg->username, pw);
        struct mp_buf b = {0};
        if (n > 0 && (size_t)n < sizeof plain && !mp_b64_encode((uint8_t *)plain, (size_t)n, &b) &&
            b.len + 40 < sizeof u->authz)
            snprintf(u->authz, sizeof u->authz, "Authorization: Basic %.*s\r\n", (int)b.len,
                     (const char *)b.data);
        mp_ntlm_cleanse(plain, sizeof plain);
        if (u->ntlm) { /* the NTLM initiator's password; no Basic header */
            u->ha.cfg = cfg;
            snprintf(u->ha.up_password, sizeof u->ha.up_password, "%s", pw);
            mp_ntlm_cleanse(u->authz, sizeof u->authz);
            u->authz[0] = 0;
        }
        mp_ntlm_cleanse(pw, sizeof pw);
        if (b.data)
            mp_ntlm_cleanse(b.data, b.len);
        mp_buf_free(&b);
    }
    u->next_up = ups;
    ups = u;
    mp_info("rpch upstream: RPC over HTTP to %s://%s:%u/rpc/rpcproxy.dll?%s:<port>%s",
            cfg->rpch_upstream.tls ? "https" : "http", cfg->rpch_upstream.host,
            cfg->rpch_upstream.port, u->server,
            u->krb        ? ", HTTP Negotiate (Kerberos)"
            : u->ntlm     ? ", HTTP NTLM"
            : u->authz[0] ? ", HTTP Basic"
                          : "");
    *failed = false;
    return u;
}

void mp_rpch_up_free(struct mp_rpch_up *u)
{
    if (!u)
        return;
    while (u->all)
        vc_unlink(u->all);
    for (struct mp_rpch_up **pp = &ups; *pp; pp = &(*pp)->next_up)
        if (*pp == u) {
            *pp = u->next_up;
            break;
        }
    mp_kdc_stop(&u->kdc); /* after the channels (their jobs lose their owner), before the cred */
    mp_tls_ctx_free(u->tls_ctx);
    mp_gss_cred_free(u->krb);
    mp_ntlm_cleanse(u->authz, sizeof u->authz);
    mp_ntlm_cleanse(u->ha.up_password, sizeof u->ha.up_password);
    free(u);
}
