/* RPC over HTTP v2 termination: channels, pairing, the association's
 * socketpair, timers.  See rpch.h and doc/internals/rpch.md. */
#include "transport/rpch/rpch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "dcerpc/pdu.h"
#include "transport/rpch/vconn.h"

#define FIRST_MAX 128 /* CONN/A1 is 76 bytes, CONN/B1 104 */

struct vcent {
    struct vcent *next;
    struct mp_rpch *r;
    struct mp_rpch_vc vc;
    struct mp_rpch_chan *in, *out;
    struct mp_io sp;      /* our end of the association's socketpair */
    struct mp_buf sp_in;  /* from the association: partial PDUs */
    struct mp_buf sp_out; /* toward the association */
    struct mp_timer pair, ping;
    uint64_t last_out_ms;
    char cookie[40];
    bool dying;
};

struct mp_rpch_chan {
    struct mp_rpch *r;
    struct vcent *v;
    bool out;
    const struct mp_rpch_chan_host *host;
    void *owner;
    uint64_t length;
    uint8_t first[FIRST_MAX];
    size_t nfirst;
    bool started;
    char host_addr[64];
    uint16_t port;
};

struct mp_rpch {
    struct mp_loop *loop;
    struct mp_rpch_opts o;
    mp_rpch_adopt_fn adopt;
    void *adopt_data;
    struct vcent *all;
    size_t n;
};

static void vc_end(struct vcent *v, const char *why);

struct mp_rpch *mp_rpch_new(struct mp_loop *loop, const struct mp_rpch_opts *o,
                            mp_rpch_adopt_fn adopt, void *adopt_data)
{
    struct mp_rpch *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->o = *o;
    r->adopt = adopt;
    r->adopt_data = adopt_data;
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

/* Writes what the virtual connection queued: out_q to the OUT channel's
 * client, up_q toward the association. */
static const char *flush(struct vcent *v)
{
    struct mp_rpch_vc *vc = &v->vc;
    const char *err = NULL;
    if (mp_buf_avail(&vc->up_q) && v->sp.fd >= 0) {
        if (mp_buf_avail(&v->sp_out) + mp_buf_avail(&vc->up_q) > v->r->o.max_pending)
            return "the association does not take the client's calls";
        if (mp_buf_append(&v->sp_out, mp_buf_head(&vc->up_q), mp_buf_avail(&vc->up_q)))
            return "out of memory";
        mp_buf_consume(&vc->up_q, mp_buf_avail(&vc->up_q));
        mp_buf_trim(&vc->up_q);
    }
    while (mp_buf_avail(&v->sp_out)) {
        ssize_t w = send(v->sp.fd, mp_buf_head(&v->sp_out), mp_buf_avail(&v->sp_out), MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (w <= 0)
            return "the association closed";
        mp_buf_consume(&v->sp_out, (size_t)w);
        if ((err = mp_rpch_vc_consumed(vc, (size_t)w))) /* may queue a FlowControlAck */
            return err;
    }
    mp_buf_trim(&v->sp_out);
    if (v->sp.fd >= 0)
        mp_io_set(v->r->loop, &v->sp, MP_READ | (mp_buf_avail(&v->sp_out) ? MP_WRITE : 0));
    if (mp_buf_avail(&vc->out_q) && v->out) {
        v->out->host->send(v->out->owner, mp_buf_head(&vc->out_q), mp_buf_avail(&vc->out_q));
        mp_buf_consume(&vc->out_q, mp_buf_avail(&vc->out_q));
        mp_buf_trim(&vc->out_q);
        v->last_out_ms = mp_now_ms();
    }
    return NULL;
}

static void sp_cb(struct mp_io *io, uint32_t ev)
{
    struct vcent *v = io->data;
    const char *err = NULL;
    if (ev & (MP_READ | MP_ERRHUP)) {
        uint8_t buf[65536];
        ssize_t n = recv(io->fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            vc_end(v, "the association closed");
            return;
        }
        if (n > 0 && mp_buf_append(&v->sp_in, buf, (size_t)n))
            err = "out of memory";
        while (!err && mp_buf_avail(&v->sp_in) >= MP_HDR_LEN) {
            size_t fl = mp_get16(mp_buf_head(&v->sp_in) + 8);
            if (fl < MP_HDR_LEN) {
                err = "association sent a PDU shorter than its header";
                break;
            }
            if (mp_buf_avail(&v->sp_in) < fl)
                break;
            err = mp_rpch_vc_from_server(&v->vc, mp_buf_head(&v->sp_in), fl);
            mp_buf_consume(&v->sp_in, fl);
        }
        mp_buf_trim(&v->sp_in);
    }
    if (!err)
        err = flush(v);
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
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return "socketpair failed";
    v->sp.fd = sv[0];
    v->sp.cb = sp_cb;
    v->sp.data = v;
    mp_info("rpch %s: virtual connection open (client %s:%u, keep-alive %u ms, channel lifetime "
            "%u bytes)",
            v->cookie, v->in->host_addr, v->in->port, v->vc.keepalive, v->vc.lifetime);
    v->r->adopt(v->r->adopt_data, sv[1], v->in->host_addr, v->in->port);
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

static struct vcent *vc_new(struct mp_rpch *r, const struct mp_rts_cookie *c)
{
    struct vcent *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->r = r;
    struct mp_rpch_limits lim = {.recv_window = r->o.recv_window,
                                 .conn_timeout = r->o.conn_timeout_ms,
                                 .max_pending = r->o.max_pending};
    mp_rpch_vc_init(&v->vc, &lim);
    v->vc.vc_cookie = *c;
    v->sp.fd = -1;
    cookie_str(c, v->cookie, sizeof(v->cookie));
    v->pair.cb = pair_cb;
    v->pair.data = v;
    mp_timer_arm(r->loop, &v->pair, r->o.pair_timeout_ms);
    v->next = r->all;
    r->all = v;
    r->n++;
    return v;
}

static void vc_unlink(struct vcent *v)
{
    struct mp_rpch *r = v->r;
    for (struct vcent **pp = &r->all; *pp; pp = &(*pp)->next)
        if (*pp == v) {
            *pp = v->next;
            r->n--;
            break;
        }
    mp_timer_cancel(r->loop, &v->pair);
    mp_timer_cancel(r->loop, &v->ping);
    if (v->sp.fd >= 0)
        mp_io_close(r->loop, &v->sp);
    mp_buf_free(&v->sp_in);
    mp_buf_free(&v->sp_out);
    mp_rpch_vc_free(&v->vc);
    free(v);
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
    struct mp_rpch_chan *in = v->in, *out = v->out;
    if (in)
        in->v = NULL;
    if (out)
        out->v = NULL;
    v->in = v->out = NULL;
    vc_unlink(v);
    if (in)
        in->host->close(in->owner, why);
    if (out)
        out->host->close(out->owner, why);
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
    return c;
}

static const char *OUT_HEAD = "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
                              "Content-Length: 1073741824\r\n\r\n";

/* The channel's first PDU is complete: pair it. */
static const char *chan_start(struct mp_rpch_chan *c)
{
    struct mp_rts_cookie ck;
    const char *err = mp_rpch_first_cookie(c->first, c->nfirst, c->out, &ck);
    if (err)
        return err;
    struct vcent *v = vc_find(c->r, &ck);
    if (v && (c->out ? v->out != NULL : v->in != NULL))
        return c->out ? "second OUT channel for a virtual connection"
                      : "second IN channel for a virtual connection";
    if (!v && !(v = vc_new(c->r, &ck)))
        return "out of memory";
    c->v = v;
    if (c->out) {
        v->out = c;
        c->host->send(c->owner, (const uint8_t *)OUT_HEAD, strlen(OUT_HEAD));
        err = mp_rpch_vc_conn_a1(&v->vc, c->first, c->nfirst);
    } else {
        v->in = c;
        err = mp_rpch_vc_conn_b1(&v->vc, c->first, c->nfirst, c->length);
    }
    mp_debug("rpch %s: %s channel from %s:%u", v->cookie, c->out ? "OUT" : "IN", c->host_addr,
             c->port);
    if (!err && v->vc.state == MP_RPCH_OPEN && v->sp.fd < 0)
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
            if ((err = chan_start(c)))
                return err;
        }
    }
    if (!n)
        return NULL;
    if (!c->v)
        return "the virtual connection is closed";
    if (c->out)
        return "data on the OUT channel after CONN/A1";
    struct vcent *v = c->v;
    if ((err = mp_rpch_vc_in_data(&v->vc, p, n)))
        return err;
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
        c->v = NULL;
        vc_end(v, c->out ? "the OUT channel closed" : "the IN channel closed");
    }
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
        v->in = v->out = NULL;
        vc_unlink(v);
    }
    free(r);
}
