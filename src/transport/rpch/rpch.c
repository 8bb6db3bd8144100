/* RPC over HTTP v2 termination: channels, pairing, the inner association
 * (transport/dcerpc/carrier.h), timers.  See rpch.h and
 * doc/internals/rpch.md. */
#include "transport/rpch/rpch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "dcerpc/pdu.h"
#include "transport/dcerpc/carrier.h"
#include "transport/rpch/upclient.h"
#include "transport/rpch/vconn.h"

#define FIRST_MAX 128 /* CONN/A1 is 76 bytes, CONN/B1 104 */

struct vcent {
    struct vcent *next;
    char user[520]; /* its first channel's identity: every other channel's must be it */
    bool krb;       /* ... a Kerberos logon passed through (no name the proxy can read) */
    struct mp_rpch *r;
    struct mp_rpch_vc vc;
    struct mp_rpch_chan *in, *out;
    struct mp_rpch_chan *in_next;  /* the successor IN channel (IN_R1/A1) */
    struct mp_rpch_chan *out_next; /* the successor OUT channel (OUT_R1/A3) */
    void *assoc;                   /* the inner association (carrier.h), once open */
    bool want;                     /* the association takes input now */
    bool blocked;                  /* it offered PDUs the client's window could not take */
    const char *err;               /* why a carrier callback refused, for the close line */
    struct mp_timer pair, ping, feed;
    uint64_t last_out_ms;
    char cookie[40];
    bool dying;
    bool up_out_wanted; /* the upstream waits for the client's OUT recycling (pass-through) */
};

struct mp_rpch_chan {
    char *www; /* WWW-Authenticate value for the OUT channel's 200, or NULL */
    struct mp_rpch *r;
    struct vcent *v;
    bool out;
    const struct mp_rpch_chan_host *host;
    void *owner;
    uint64_t length;
    uint8_t first[FIRST_MAX];
    size_t nfirst;
    bool started;
    bool successor;   /* an OUT channel that began with OUT_R1/A3 */
    bool c1;          /* ... whose OUT_R2/C1 came */
    uint8_t tail[32]; /* ... the PDU after its A3 so far (OUT_R2/C1 is 24 bytes) */
    size_t ntail;
    char host_addr[64];
    uint16_t port;
    struct mp_rpch_pin *pin; /* pass-through: the client's logon toward the upstream */
    struct mp_timer first_t; /* until its first RTS PDU is complete (the pairing timeout) */
    char user[520]; /* who logged on for it (terminated, or the upstream took it), else "" */
    bool krb;       /* pass-through: a Kerberos ticket, whose name the proxy cannot read */
};

struct mp_rpch {
    struct mp_loop *loop;
    struct mp_rpch_opts o;
    const struct mp_rpch_sink *sink;
    void *sink_data;
    struct vcent *all;
    size_t n;
    struct mp_rpch *next_r; /* this thread's others (rall) */
};

/* This thread's instances: where mp_rpch_up_wants_out_recycling looks. */
static _Thread_local struct mp_rpch *rall;

static void vc_end(struct vcent *v, const char *why);

static void *dce_open(void *data, const struct mp_dce_carrier_ops *ops, void *carrier,
                      const char *peer, const char *host)
{
    return mp_dce_assoc_open(data, ops, carrier, peer, host, false);
}
static int dce_input(void *assoc, const void *p, size_t n)
{
    return mp_dce_assoc_input(assoc, p, n);
}
static void dce_writable(void *assoc)
{
    mp_dce_assoc_writable(assoc);
}
static void dce_close(void *assoc, const char *why)
{
    mp_dce_assoc_close(assoc, why);
}
const struct mp_rpch_sink mp_rpch_dce_sink = {dce_open, dce_input, dce_writable, dce_close};

struct mp_rpch *mp_rpch_new(struct mp_loop *loop, const struct mp_rpch_opts *o,
                            const struct mp_rpch_sink *sink, void *sink_data)
{
    struct mp_rpch *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->o = *o;
    r->sink = sink;
    r->sink_data = sink_data;
    r->next_r = rall;
    rall = r;
    return r;
}

size_t mp_rpch_count(const struct mp_rpch *r)
{
    return r->n;
}

static void cookie_str(const struct mp_rts_cookie *c, char *dst, size_t n)
{
    const uint8_t *b = c->b; /* a GUID: the first three fields little-endian */
    snprintf(dst, n, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[3],
             b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* out_q to the OUT channel's client. */
static void send_out(struct vcent *v)
{
    struct mp_rpch_vc *vc = &v->vc;
    if (mp_buf_avail(&vc->out_q) && v->out) {
        v->out->host->send(v->out->owner, mp_buf_head(&vc->out_q), mp_buf_avail(&vc->out_q));
        mp_buf_consume(&vc->out_q, mp_buf_avail(&vc->out_q));
        mp_buf_trim(&vc->out_q);
        v->last_out_ms = mp_now_ms();
    }
}

/* Moves what the virtual connection queued: up_q into the association
 * while it takes input, out_q to the OUT channel's client; tells the
 * association when the client's window opened again.  Never called from
 * inside the association's callbacks. */
static const char *flush(struct vcent *v)
{
    struct mp_rpch_vc *vc = &v->vc;
    const char *err = NULL;
    if (mp_buf_avail(&vc->up_q) > v->r->o.max_pending)
        return "the association does not take the client's calls";
    while (v->assoc && v->want && mp_buf_avail(&vc->up_q)) {
        size_t n = mp_buf_avail(&vc->up_q);
        int rc = v->r->sink->input(v->assoc, mp_buf_head(&vc->up_q), n);
        if (v->dying) /* its closed() ended the virtual connection */
            return NULL;
        if (rc < 0)
            return "the association closed";
        mp_buf_consume(&vc->up_q, n);
        if ((err = mp_rpch_vc_consumed(vc, n))) /* may queue a FlowControlAck */
            return err;
    }
    mp_buf_trim(&vc->up_q);
    send_out(v);
    if (v->assoc && v->blocked && !mp_buf_avail(&vc->held)) {
        v->blocked = false;
        v->r->sink->writable(v->assoc);
        if (v->dying)
            return NULL;
    }
    return NULL;
}

/* ---- the association's side (transport/dcerpc/carrier.h) ---- */

/* Whole PDUs for the client, while its OUT window has room. */
static int c_flush(void *carrier, struct mp_buf *out)
{
    struct vcent *v = carrier;
    if (v->dying)
        return -1;
    while (mp_buf_avail(out) >= MP_HDR_LEN) {
        if (mp_buf_avail(&v->vc.held)) {
            v->blocked = true; /* flush() calls writable() once the client acked */
            break;
        }
        size_t fl = mp_get16(mp_buf_head(out) + 8);
        if (fl < MP_HDR_LEN) {
            v->err = "association sent a PDU shorter than its header";
            return -1;
        }
        if (mp_buf_avail(out) < fl)
            break;
        if ((v->err = mp_rpch_vc_from_server(&v->vc, mp_buf_head(out), fl)))
            return -1;
        mp_buf_consume(out, fl);
    }
    send_out(v);
    return 0;
}

static void c_want(void *carrier, bool want)
{
    struct vcent *v = carrier;
    v->want = want;
    /* not from inside the association: on the next loop turn */
    if (want && mp_buf_avail(&v->vc.up_q) && !v->feed.heap_idx)
        mp_timer_arm(v->r->loop, &v->feed, 0);
}

static void c_closed(void *carrier, const char *reason)
{
    struct vcent *v = carrier;
    v->assoc = NULL;
    char why[160];
    snprintf(why, sizeof(why), "%s", v->err ? v->err : "the association closed");
    if (!v->err && reason)
        snprintf(why, sizeof(why), "the association closed (%s)", reason);
    vc_end(v, why);
}

static const struct mp_dce_carrier_ops carrier_ops = {c_flush, c_want, c_closed};

static void feed_cb(struct mp_timer *t)
{
    struct vcent *v = t->data;
    const char *err = flush(v);
    if (err)
        vc_end(v, err);
}

static void ping_cb(struct mp_timer *t)
{
    struct vcent *v = t->data;
    uint64_t half = v->r->o.conn_timeout_ms / 2;
    if (mp_now_ms() - v->last_out_ms >= half) {
        mp_rpch_vc_ping(&v->vc);
        const char *err = flush(v);
        if (err) {
            vc_end(v, err);
            return;
        }
    }
    mp_timer_arm(v->r->loop, &v->ping, half);
}

static void pair_cb(struct mp_timer *t)
{
    struct vcent *v = t->data;
    char why[96];
    snprintf(why, sizeof(why), "no %s channel within %u ms", v->out ? "IN" : "OUT",
             v->r->o.pair_timeout_ms);
    vc_end(v, why);
}

static const char *vc_opened(struct vcent *v)
{
    mp_timer_cancel(v->r->loop, &v->pair);
    mp_info("rpch %s: virtual connection open (client %s:%u, keep-alive %u ms, channel lifetime "
            "%u bytes)",
            v->cookie, v->in->host_addr, v->in->port, v->vc.keepalive, v->vc.lifetime);
    char peer[96];
    snprintf(peer, sizeof(peer), "%s:%u (rpch)", v->in->host_addr, v->in->port);
    v->want = false; /* the association says when (want_input) */
    /* pass-through: the channels' logons for the upstream client
     * (upclient.c), found by this virtual connection as the carrier */
    for (int k = 0; k < 2; k++) {
        struct mp_rpch_chan *c = k ? v->out : v->in;
        if (c->pin)
            mp_rpch_up_pin(v, c->out, c->pin);
        c->pin = NULL;
    }
    v->assoc = v->r->sink->open(v->r->sink_data, &carrier_ops, v, peer, v->in->host_addr);
    if (!v->assoc)
        return "the relay refused the association";
    v->ping.cb = ping_cb;
    v->ping.data = v;
    mp_timer_arm(v->r->loop, &v->ping, v->r->o.conn_timeout_ms / 2);
    return NULL;
}

static struct vcent *vc_find(struct mp_rpch *r, const struct mp_rts_cookie *c)
{
    for (struct vcent *v = r->all; v; v = v->next)
        if (!v->dying && memcmp(&v->vc.vc_cookie, c, sizeof(*c)) == 0)
            return v;
    return NULL;
}

bool mp_rpch_has_vc(struct mp_rpch *r, const void *cookie)
{
    struct mp_rts_cookie c;
    memcpy(c.b, cookie, sizeof c.b);
    return vc_find(r, &c) != NULL;
}

static struct vcent *vc_new(struct mp_rpch *r, const struct mp_rts_cookie *c)
{
    struct vcent *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->r = r;
    struct mp_rpch_limits lim = {.recv_window = r->o.recv_window,
                                 .conn_timeout = r->o.conn_timeout_ms,
                                 .max_pending = r->o.max_pending,
                                 .out_length = r->o.out_length};
    mp_rpch_vc_init(&v->vc, &lim);
    v->vc.vc_cookie = *c;
    cookie_str(c, v->cookie, sizeof(v->cookie));
    v->pair.cb = pair_cb;
    v->pair.data = v;
    v->feed.cb = feed_cb;
    v->feed.data = v;
    mp_timer_arm(r->loop, &v->pair, r->o.pair_timeout_ms);
    v->next = r->all;
    r->all = v;
    r->n++;
    return v;
}

static void vc_free(void *p)
{
    struct vcent *v = p;
    mp_rpch_vc_free(&v->vc);
    free(v);
}

/* Out of the registry, timers off, the association closed; the memory
 * stays until the loop's batch is over (we may be inside a callback). */
static void vc_unlink(struct vcent *v, const char *why)
{
    struct mp_rpch *r = v->r;
    mp_rpch_up_unpin(v);
    if (r->o.vc_gone)
        r->o.vc_gone(v->vc.vc_cookie.b);
    for (struct vcent **pp = &r->all; *pp; pp = &(*pp)->next)
        if (*pp == v) {
            *pp = v->next;
            r->n--;
            break;
        }
    mp_timer_cancel(r->loop, &v->pair);
    mp_timer_cancel(r->loop, &v->ping);
    mp_timer_cancel(r->loop, &v->feed);
    v->dying = true;
    void *a = v->assoc;
    v->assoc = NULL;
    if (a)
        r->sink->close(a, why);
    if (mp_loop_defer(r->loop, vc_free, v))
        vc_free(v);
}

/* Ends the virtual connection: logs why, frees it, then asks both
 * sessions to close (they call mp_rpch_chan_free on channels already
 * detached). */
static void vc_end(struct vcent *v, const char *why)
{
    if (v->dying)
        return;
    v->dying = true;
    mp_warn("rpch %s: virtual connection closed: %s", v->cookie, why);
    struct mp_rpch_chan *ch[4] = {v->in, v->out, v->in_next, v->out_next};
    for (int i = 0; i < 4; i++)
        if (ch[i])
            ch[i]->v = NULL;
    v->in = v->out = v->in_next = v->out_next = NULL;
    vc_unlink(v, why);
    for (int i = 0; i < 4; i++)
        if (ch[i])
            ch[i]->host->close(ch[i]->owner, why);
}

/* A channel whose first RTS PDU did not come in time (it belongs to no
 * virtual connection yet, so no other timer would end it). */
static void first_late(struct mp_timer *t)
{
    struct mp_rpch_chan *c = t->data;
    char why[96];
    snprintf(why, sizeof why,
             "no first RTS PDU within %" PRIu64 " ms (mapiproxy:rpc over http pairing timeout)",
             (uint64_t)c->r->o.pair_timeout_ms);
    c->host->close(c->owner, why);
}

struct mp_rpch_chan *mp_rpch_chan_new(struct mp_rpch *r, bool out, const char *peer_host,
                                      uint16_t peer_port, uint64_t content_length,
                                      const struct mp_rpch_chan_host *host, void *owner)
{
    struct mp_rpch_chan *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->r = r;
    c->out = out;
    c->host = host;
    c->owner = owner;
    c->length = content_length;
    snprintf(c->host_addr, sizeof(c->host_addr), "%s", peer_host);
    c->port = peer_port;
    c->first_t.cb = first_late;
    c->first_t.data = c;
    mp_timer_arm(r->loop, &c->first_t, r->o.pair_timeout_ms);
    return c;
}

/* The OUT channel's answer head: its Content-Length is the channel's
 * lifetime (mapiproxy:rpc over http out channel length). */
static void send_out_head(struct mp_rpch_chan *c)
{
    char head[1400];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
                     "%s%.1100s%s"
                     "Content-Length: %u\r\n\r\n",
                     c->www ? "WWW-Authenticate: " : "", c->www ? c->www : "", c->www ? "\r\n" : "",
                     c->r->o.out_length ? c->r->o.out_length : 1u << 30);
    c->host->send(c->owner, (const uint8_t *)head, (size_t)n);
}

void mp_rpch_chan_user(struct mp_rpch_chan *c, const char *user)
{
    snprintf(c->user, sizeof c->user, "%s", user ? user : "");
}

int mp_rpch_chan_www(struct mp_rpch_chan *c, const char *value)
{
    free(c->www);
    c->www = NULL;
    if (!value || !value[0])
        return 0;
    return strlen(value) <= 1100 && (c->www = strdup(value)) ? 0 : -1;
}

/* DOMAIN\user (NTLM, Basic) and user@REALM (Kerberos) name one account by
 * its user part: a client whose Negotiate falls back to NTLM on one channel
 * is still itself. */
static bool same_account(const char *a, const char *b)
{
    const char *x[2] = {a, b};
    size_t n[2];
    for (int i = 0; i < 2; i++) {
        const char *bs = strrchr(x[i], '\\');
        if (bs)
            x[i] = bs + 1;
        const char *at = strchr(x[i], '@');
        n[i] = at ? (size_t)(at - x[i]) : strlen(x[i]);
    }
    return n[0] == n[1] && !strncasecmp(x[0], x[1], n[0]);
}

/* A successor channel of the client's own recycling was accepted: with a
 * connection-based logon passed through, its pinned upstream connection
 * carries the upstream client's recycling of the same channel
 * (mp_rpch_up_successor); otherwise (Basic, which the upstream client
 * repeats by itself, or an OUT channel the upstream did not ask to
 * recycle) the pin is dropped and the upstream virtual connection stays as
 * it is. */
static void hand_pin(struct vcent *v, struct mp_rpch_chan *c)
{
    struct mp_rpch_pin *pin = c->pin;
    c->pin = NULL;
    if (!pin)
        return;
    if (!mp_rpch_up_successor(v, c->out, pin)) {
        mp_rpch_pin_free(pin);
        return;
    }
    if (c->out)
        v->up_out_wanted = false;
    mp_info("rpch %s: %s channel successor's logon handed to the upstream client (pass-through)",
            v->cookie, c->out ? "OUT" : "IN");
}

const char *mp_rpch_up_wants_out_recycling(const void *key)
{
    struct vcent *v = NULL;
    for (struct mp_rpch *r = rall; r && !v; r = r->next_r)
        for (struct vcent *w = r->all; w && !v; w = w->next)
            if (w == key && !w->dying)
                v = w;
    if (!v || !v->out)
        return "no such virtual connection";
    v->up_out_wanted = true;
    const char *err = mp_rpch_vc_out_recycle(&v->vc);
    if (err)
        return err;
    mp_info("rpch %s: OUT channel recycling asked of the client (the upstream recycles its own)",
            v->cookie);
    send_out(v);
    return NULL;
}

/* A successor OUT channel's body after its OUT_R2/A3: the client's
 * OUT_R2/C1 (3.2.2.5.9), before or after the switch (the outbound proxy's
 * B1OrC1W and R2C1W states), and nothing else: any other PDU, a second
 * C1 or bytes after it are a protocol error, which ends the virtual
 * connection (3.2.4.5.14: all its OUT channels close). */
static const char *successor_body(struct mp_rpch_chan *c, const uint8_t *p, size_t n)
{
    struct vcent *v = c->v;
    const char *err = NULL;
    while (n && !err) {
        if (c->c1) {
            err = "bytes after OUT_R2/C1 on the successor OUT channel";
            break;
        }
        size_t want = c->ntail < 10 ? 10 : mp_get16(c->tail + 8);
        if (c->ntail >= 10 && (want < MP_RTS_HDR_LEN || want > sizeof c->tail)) {
            err = "a PDU other than OUT_R2/C1 on the successor OUT channel";
            break;
        }
        size_t k = want - c->ntail < n ? want - c->ntail : n;
        memcpy(c->tail + c->ntail, p, k);
        c->ntail += k, p += k, n -= k;
        if (c->ntail < want || want == 10) /* the header's first 10 bytes name the length */
            continue;
        struct mp_rts_pdu pdu;
        if ((err = mp_rts_decode(c->tail, c->ntail, &pdu)))
            break;
        if (mp_rts_identify(&pdu) != MP_RTS_OUT_R2_C1) {
            err = "a PDU other than OUT_R2/C1 on the successor OUT channel";
            break;
        }
        c->c1 = true;
        c->ntail = 0;
    }
    if (!err)
        return NULL;
    vc_end(v, err); /* its line names the PDU; c is closed with the others */
    return "protocol error on the successor OUT channel";
}

/* The channel's first PDU is complete: pair it. */
static const char *chan_start(struct mp_rpch_chan *c)
{
    struct mp_rts_cookie ck;
    bool recycle;
    const char *err = mp_rpch_first_cookie(c->first, c->nfirst, c->out, &ck, &recycle);
    if (err)
        return err;
    struct vcent *v = vc_find(c->r, &ck);
    /* a channel logged on as another identity never joins a virtual
     * connection (its cookie is the client's secret, but a leaked one must
     * not let another account read or write the session) */
    if (v && (v->krb != c->krb || !same_account(v->user, c->user))) {
        mp_warn("rpch %s: channel from %s:%u logged on as %s, the virtual connection is %s's: "
                "refused",
                v->cookie, c->host_addr, c->port,
                c->krb       ? "a Kerberos principal"
                : c->user[0] ? c->user
                             : "nobody",
                v->krb       ? "a Kerberos principal"
                : v->user[0] ? v->user
                             : "nobody");
        return "a channel logged on as another identity for the virtual connection";
    }
    if (recycle && c->out) {
        if (!v || !v->in || !v->out)
            return "OUT_R1/A3 for an unknown virtual connection";
        if (v->out_next)
            return "second successor OUT channel for a virtual connection";
        if ((err = mp_rpch_vc_out_r1_a3(&v->vc, c->first, c->nfirst)))
            return err; /* this channel only */
        c->v = v;
        c->successor = true;
        v->out_next = c;
        hand_pin(v, c); /* the upstream's own recycling goes on meanwhile */
        /* its answer head goes at the switch, after OUT_R2/B3 (3.2.4.5.10) */
        mp_info("rpch %s: OUT channel recycling: successor from %s:%u", v->cookie, c->host_addr,
                c->port);
        return flush(v); /* OUT_R1/A6 on the predecessor */
    }
    if (recycle) {
        if (!v || !v->in || !v->out)
            return "IN_R1/A1 for an unknown virtual connection";
        if (v->in_next)
            return "second successor IN channel for a virtual connection";
        if ((err = mp_rpch_vc_in_r1_a1(&v->vc, c->first, c->nfirst, c->length)))
            return err; /* this channel only: the virtual connection goes on */
        c->v = v;
        v->in_next = c;
        hand_pin(v, c);
        mp_info("rpch %s: IN channel recycling: successor from %s:%u", v->cookie, c->host_addr,
                c->port);
        return flush(v); /* IN_R1/A4 on the OUT channel */
    }
    if (v && (c->out ? v->out != NULL : v->in != NULL))
        return c->out ? "second OUT channel for a virtual connection"
                      : "second IN channel for a virtual connection";
    if (!v && !(v = vc_new(c->r, &ck)))
        return "out of memory";
    if (!v->in && !v->out) {
        snprintf(v->user, sizeof v->user, "%s", c->user);
        v->krb = c->krb;
    }
    c->v = v;
    if (c->out) {
        v->out = c;
        send_out_head(c);
        err = mp_rpch_vc_conn_a1(&v->vc, c->first, c->nfirst);
    } else {
        v->in = c;
        err = mp_rpch_vc_conn_b1(&v->vc, c->first, c->nfirst, c->length);
    }
    mp_debug("rpch %s: %s channel from %s:%u", v->cookie, c->out ? "OUT" : "IN", c->host_addr,
             c->port);
    if (!err && v->vc.state == MP_RPCH_OPEN && !v->assoc)
        err = vc_opened(v);
    if (!err)
        err = flush(v);
    return err;
}

const char *mp_rpch_chan_data(struct mp_rpch_chan *c, const uint8_t *p, size_t n)
{
    const char *err = NULL;
    while (n && !c->started) {
        size_t want = c->nfirst < 10 ? 10 : mp_get16(c->first + 8);
        if (want < 10 || want > FIRST_MAX)
            return "first RTS PDU of the channel too long or too short";
        size_t k = want - c->nfirst < n ? want - c->nfirst : n;
        memcpy(c->first + c->nfirst, p, k);
        c->nfirst += k, p += k, n -= k;
        if (c->nfirst >= 10 && c->nfirst == mp_get16(c->first + 8)) {
            c->started = true;
            mp_timer_cancel(c->r->loop, &c->first_t);
            if ((err = chan_start(c)))
                return err;
        }
    }
    if (!n)
        return NULL;
    if (!c->v)
        return "the virtual connection is closed";
    if (c->out && c->successor)
        return successor_body(c, p, n);
    if (c->out)
        return "data on the OUT channel after CONN/A1";
    struct vcent *v = c->v;
    if (c == v->in_next)
        return mp_rpch_vc_in_next_data(&v->vc, p, n);
    if ((err = mp_rpch_vc_in_data(&v->vc, p, n)))
        return err;
    while (v->vc.out_switch && v->out_next) {
        /* OUT_R2/A7: OUT_R2/B3 ends the predecessor OUT channel, the
         * successor carries on; then the rest of the IN bytes */
        send_out(v);
        struct mp_rpch_chan *old = v->out;
        v->out = v->out_next;
        v->out_next = NULL;
        /* 3.2.4.5.10 in that order: B3 on the predecessor (above), the
         * switch, the successor's response head, then its PDUs */
        send_out_head(v->out);
        old->v = NULL; /* detached: its session writes OUT_R2/B3, then closes it
                          (the outbound proxy closes it after B3, MS-RPCH 3.2.4.5.10) */
        old->host->close_flushed(old->owner, "OUT channel recycled");
        if ((err = mp_rpch_vc_out_switch(&v->vc)) || (err = mp_rpch_vc_in_data(&v->vc, p, 0)))
            return err; /* c is the IN channel: its close ends v */
        mp_info("rpch %s: OUT channel recycled (%u so far)", v->cookie, v->vc.out_recycles);
        /* the upstream still waits for a successor logon: ask again */
        if (v->up_out_wanted && !v->vc.out_recycling && (err = mp_rpch_vc_out_recycle(&v->vc)))
            return err;
    }
    if (v->vc.in_switched) {
        /* IN_R1/A5: the successor is the IN channel; the predecessor is
         * detached and closed (the client closes it too) */
        v->vc.in_switched = false;
        struct mp_rpch_chan *old = v->in;
        v->in = v->in_next;
        v->in_next = NULL;
        old->v = NULL;
        mp_info("rpch %s: IN channel recycled (%u so far)", v->cookie, v->vc.in_recycles);
        if ((err = flush(v)))
            vc_end(v, err); /* old is detached: its close would not end v */
        if (err || v->dying)
            return err ? err : "the virtual connection is closed";
        old->host->close(old->owner, "IN channel recycled");
        return NULL; /* old is freed */
    }
    return flush(v);
}

void mp_rpch_chan_free(struct mp_rpch_chan *c)
{
    if (!c)
        return;
    struct vcent *v = c->v;
    if (v) {
        if (v->in == c)
            v->in = NULL;
        if (v->out == c)
            v->out = NULL;
        if (v->in_next == c)
            v->in_next = NULL;
        if (v->out_next == c)
            v->out_next = NULL;
        c->v = NULL;
        vc_end(v, c->out ? "the OUT channel closed" : "the IN channel closed");
    }
    mp_timer_cancel(c->r->loop, &c->first_t);
    mp_rpch_pin_free(c->pin);
    free(c->www);
    free(c);
}

void mp_rpch_free(struct mp_rpch *r)
{
    if (!r)
        return;
    while (r->all) {
        struct vcent *v = r->all;
        if (v->in)
            v->in->v = NULL;
        if (v->out)
            v->out->v = NULL;
        if (v->in_next)
            v->in_next->v = NULL;
        if (v->out_next)
            v->out_next->v = NULL;
        v->in = v->out = v->in_next = v->out_next = NULL;
        vc_unlink(v, "shutdown");
    }
    for (struct mp_rpch **pp = &rall; *pp; pp = &(*pp)->next_r)
        if (*pp == r) {
            *pp = r->next_r;
            break;
        }
    free(r);
}

void mp_rpch_chan_pin(struct mp_rpch_chan *c, struct mp_rpch_pin *pin)
{
    mp_rpch_pin_free(c->pin);
    c->pin = pin;
    /* the account the upstream took the logon of (hpass.c): every channel
     * of a virtual connection must be its first channel's */
    snprintf(c->user, sizeof c->user, "%s", pin ? pin->user : "");
    c->krb = pin && pin->krb;
}
