/* RPC over HTTP channels on connections the HTTPS front hands over
 * (mp_http_add_handler on /rpc/rpcproxy.dll): the connection's I/O (TLS
 * through net/tls), the request's Content-Length, 100 Continue; the bytes
 * go to rpch.c.  doc/internals/rpch.md. */
#include "transport/rpch/hchan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/affinity.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/workers.h"
#include "dcerpc/pdu.h"
#include "net/tls.h"
#include "transport/http/front.h"
#include "transport/http/msg.h"
#include "transport/rpch/hpass.h"
#include "transport/rpch/rpch.h"
#include "transport/rpch/vconn.h"
#include "transport/rpch/upclient.h"

#define HCHAN_READ 65536

struct hchan {
    struct hchan *next, *prev;
    struct mp_rpch_http *owner;
    struct mp_io io;
    struct mp_tls tls;
    struct mp_buf out;
    struct mp_rpch_chan *chan;
    uint64_t id, left;
    char peer[64], method[16];
    const char *closing; /* close once out is written (why) */
    bool dead;
    struct mp_rpch_leg *leg; /* pass-through: the logon legs before the channel request */
    char host_addr[64];
    uint16_t port;
    /* the body's first bytes, held until its first RTS PDU names the
     * virtual connection (and so its worker and generation: pre_input) */
    bool deciding;
    uint64_t length; /* the request's Content-Length */
    struct mp_buf pre;
    /* a Negotiate acceptor's mutual token for the OUT channel's 200 (until chan_begin) */
    char *www;
    struct mp_timer first_t; /* while deciding: its first RTS PDU must come within first_ms */
    char user[520];          /* who logged on to the proxy (terminated), else "" */
};

struct mp_rpch_http {
    struct mp_loop *loop;
    /* a channel's first RTS PDU within it (mapiproxy:rpc over http pairing timeout) */
    uint64_t first_ms;
    struct mp_rpch *rpch;
    struct hchan *all;
    bool stopping;
    struct mp_rpch_pass *pass; /* HTTP logons passed through to the RPC over HTTP upstream */
    struct mp_rpch_http *gen_next, **gen_prevp; /* this worker's, newest first */
};

/* This worker's RPC over HTTP instances (one per configuration generation),
 * newest first: a channel goes to the one that has its virtual connection,
 * else the newest (moved here) or its front's (read here). */
static _Thread_local struct mp_rpch_http *gens;

/* Which worker serves each virtual connection (its cookie), for every
 * worker: an entry goes when its virtual connection ends (vc_gone); one
 * whose virtual connection was never made (a channel refused first, a
 * cookie a client invented) when unused for a day or pushed out by newer
 * ones.  A made virtual connection's is pinned (vc_pin): neither its age
 * nor a client filling the table with invented cookies takes it. */
static struct mp_aff vcs = MP_AFF_INIT("rpch-vcs", 24u * 3600u * 1000u, 0);

static void vc_gone(const void *cookie)
{
    mp_aff_forget(&vcs, cookie, 16, mp_worker_self());
}

static void hchan_close(struct hchan *c, const char *why);

/* c, started on this worker, made or joined the virtual connection of
 * cookie: its entry stays until vc_gone. */
static void vc_pin(struct hchan *c, const uint8_t *cookie)
{
    if (mp_workers_count() > 1 && mp_rpch_has_vc(c->owner->rpch, cookie))
        mp_aff_pin(&vcs, cookie, 16, mp_worker_self());
}

/* c onto o's list of channels, and off its owner's. */
static void list_in(struct hchan *c, struct mp_rpch_http *o)
{
    c->owner = o;
    c->prev = NULL;
    c->next = o->all;
    if (o->all)
        o->all->prev = c;
    o->all = c;
}

static void list_out(struct hchan *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->owner->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void hchan_interest(struct hchan *c)
{
    if (c->dead)
        return;
    mp_io_set(c->owner->loop, &c->io, mp_tls_events(&c->tls, true, mp_buf_avail(&c->out) != 0));
}

static void h_send(void *owner, const uint8_t *p, size_t n)
{
    struct hchan *c = owner;
    if (c->dead)
        return;
    if (mp_buf_append(&c->out, p, n)) {
        hchan_close(c, "out of memory");
        return;
    }
    hchan_interest(c);
}

static void h_close(void *owner, const char *why)
{
    hchan_close(owner, why);
}

static void h_close_flushed(void *owner, const char *why)
{
    struct hchan *c = owner;
    c->closing = why;
    if (!mp_buf_avail(&c->out))
        hchan_close(c, why);
}

static const struct mp_rpch_chan_host host = {h_send, h_close, h_close_flushed};

static void hchan_free(void *p)
{
    struct hchan *c = p;
    mp_buf_free(&c->out);
    mp_buf_free(&c->pre);
    free(c->www);
    free(c);
}

static void hchan_close(struct hchan *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    mp_timer_cancel(c->owner->loop, &c->first_t);
    mp_info("http #%" PRIu64 " %s %s /rpc/rpcproxy.dll: closed (%s)", c->id, c->peer, c->method,
            why);
    struct mp_rpch_chan *ch = c->chan;
    c->chan = NULL;
    mp_rpch_leg_free(c->leg);
    c->leg = NULL;
    mp_tls_free(&c->tls, false);
    mp_io_close(c->owner->loop, &c->io);
    mp_rpch_chan_free(ch); /* may close the other channel */
    struct mp_rpch_http *o = c->owner;
    list_out(c);
    if (o->stopping || mp_loop_defer(o->loop, hchan_free, c))
        hchan_free(c);
}

/* Body bytes: never past the Content-Length. */
static void hchan_input(struct hchan *c, const uint8_t *p, size_t n)
{
    if (n > c->left) {
        hchan_close(c, "bytes past the request's Content-Length");
        return;
    }
    c->left -= n;
    const char *err = mp_rpch_chan_data(c->chan, p, n);
    if (err) {
        mp_warn("http #%" PRIu64 " %s %s: %s: closed", c->id, c->peer, c->method, err);
        hchan_close(c, err);
        return;
    }
    if (!c->left && !strcmp(c->method, "RPC_IN_DATA"))
        hchan_close(c, "RPC_IN_DATA Content-Length used up");
}

static void pre_input(struct hchan *c, const uint8_t *p, size_t n);

static void io_cb(struct mp_io *io, uint32_t ev)
{
    struct hchan *c = io->data;
    while (!c->dead && mp_buf_avail(&c->out)) {
        ssize_t w = mp_tls_write(&c->tls, io->fd, mp_buf_head(&c->out), mp_buf_avail(&c->out));
        if (w < 0) {
            hchan_close(c, "client write failed");
            return;
        }
        if (!w)
            break;
        mp_buf_consume(&c->out, (size_t)w);
    }
    mp_buf_trim(&c->out);
    if (c->closing && !mp_buf_avail(&c->out)) {
        hchan_close(c, c->closing);
        return;
    }
    for (int i = 0; i < 16 && !c->dead; i++) {
        uint8_t buf[HCHAN_READ];
        ssize_t r = mp_tls_read(&c->tls, io->fd, buf, sizeof buf);
        if (r < 0) {
            hchan_close(c, "client closed");
            return;
        }
        if (!r)
            break;
        if (c->closing && !c->chan && !c->leg)
            continue; /* refused during the logon: the answer is going out, the rest is dropped */
        if (c->leg)
            mp_rpch_leg_client_data(c->leg, buf, (size_t)r);
        else if (c->deciding)
            pre_input(c, buf, (size_t)r);
        else
            hchan_input(c, buf, (size_t)r);
    }
    hchan_interest(c);
}

static void l_fail(void *owner, const char *why)
{
    struct hchan *c = owner;
    c->leg = NULL; /* hpass frees it */
    mp_info("http #%" PRIu64 " %s: %s during the HTTP logon (pass-through)", c->id, c->peer, why);
    h_close_flushed(c, why); /* an upstream's answer relayed just before goes out first */
}

/* The channel request after the logon legs (pass-through). */
static void l_channel(void *owner, bool out, uint64_t length, bool cont, struct mp_rpch_pin *pin,
                      const uint8_t *rest, size_t rest_len)
{
    struct hchan *c = owner;
    if (cont)
        h_send(c, (const uint8_t *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->leg = NULL;
    snprintf(c->method, sizeof c->method, "%s", out ? "RPC_OUT_DATA" : "RPC_IN_DATA");
    c->left = length;
    c->chan = mp_rpch_chan_new(c->owner->rpch, out, c->host_addr, c->port, length, &host, c);
    if (!c->chan) {
        mp_rpch_pin_free(pin);
        hchan_close(c, "out of memory");
        return;
    }
    mp_rpch_chan_pin(c->chan, pin);
    mp_debug("http #%" PRIu64 " %s: %s channel of %" PRIu64 " bytes, logon passed through%s", c->id,
             c->peer, c->method, length, pin->fd >= 0 ? " (pinned connection)" : "");
    if (rest_len)
        hchan_input(c, rest, rest_len);
}

static const struct mp_rpch_leg_host leg_host = {h_send, l_fail, l_channel};

/* A channel on o: its connection (fd, tls moved in), the request's
 * numbers.  Listed on o; NULL when memory runs out (fd closed, tls freed). */
static struct hchan *hchan_new(struct mp_rpch_http *o, int fd, struct mp_tls *tls, uint64_t id,
                               const char *peer, const char *method, uint64_t len)
{
    struct hchan *c = calloc(1, sizeof *c);
    if (!c) {
        mp_tls_free(tls, false);
        close(fd);
        return NULL;
    }
    list_in(c, o);
    c->tls = *tls;
    memset(tls, 0, sizeof *tls);
    c->io.fd = fd;
    c->io.cb = io_cb;
    c->io.data = c;
    c->id = id;
    c->left = c->length = len;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    snprintf(c->method, sizeof c->method, "%s", method);
    snprintf(c->host_addr, sizeof c->host_addr, "%s", peer);
    char *colon = strrchr(c->host_addr, ':');
    if (colon) {
        *colon = 0;
        c->port = (uint16_t)strtoul(colon + 1, NULL, 10);
    }
    return c;
}

/* The channel of a terminated logon starts: bytes (the body's first) go to
 * it.  0, or -1 when it was closed. */
static int chan_begin(struct hchan *c, const uint8_t *p, size_t n)
{
    c->deciding = false;
    mp_timer_cancel(c->owner->loop, &c->first_t);
    c->chan = mp_rpch_chan_new(c->owner->rpch, !strcmp(c->method, "RPC_OUT_DATA"), c->host_addr,
                               c->port, c->length, &host, c);
    if (!c->chan || (c->www && mp_rpch_chan_www(c->chan, c->www))) {
        hchan_close(c, "out of memory");
        return -1;
    }
    mp_rpch_chan_user(c->chan, c->user);
    if (n)
        hchan_input(c, p, n);
    return c->dead ? -1 : 0;
}

/* ---- several workers: a channel goes to its virtual connection's ---- */

struct hmove {
    int fd;
    struct mp_tls tls;
    uint64_t id, length;
    char peer[64], method[16];
    unsigned from;
    uint8_t cookie[16];     /* its virtual connection's */
    struct mp_buf pre, out; /* the body's first bytes; bytes queued for the client */
    char *www;              /* hchan's www */
    char user[520];         /* hchan's user */
};

/* The instance of this worker that has the virtual connection of cookie
 * (an older generation's after a reload), else dflt. */
static struct mp_rpch_http *holder(struct mp_rpch_http *dflt, const uint8_t *cookie)
{
    for (struct mp_rpch_http *o = gens; o; o = o->gen_next)
        if (!o->pass && mp_rpch_has_vc(o->rpch, cookie))
            return o;
    return dflt;
}

/* c moves to another instance of its worker (same loop). */
static void relink(struct hchan *c, struct mp_rpch_http *o)
{
    list_out(c);
    list_in(c, o);
}

static void hmove_free(struct hmove *m)
{
    if (m->fd >= 0) {
        mp_tls_free(&m->tls, false);
        close(m->fd);
    }
    mp_buf_free(&m->pre);
    mp_buf_free(&m->out);
    free(m->www);
    free(m);
}

static void adopt_job(void *arg)
{
    struct hmove *m = arg;
    struct mp_rpch_http *o = holder(gens, m->cookie);
    struct hchan *c =
        o && !o->pass ? hchan_new(o, m->fd, &m->tls, m->id, m->peer, m->method, m->length) : NULL;
    if (!c) {
        mp_warn("http #%" PRIu64 " %s %s (worker %u): not adopted by worker %u: closed", m->id,
                m->peer, m->method, m->from, mp_worker_self());
        hmove_free(m);
        return;
    }
    m->fd = -1;
    c->www = m->www;
    m->www = NULL;
    snprintf(c->user, sizeof c->user, "%s", m->user);
    mp_info("http #%" PRIu64 " %s %s: channel adopted from worker %u", c->id, c->peer, c->method,
            m->from);
    if (mp_buf_append(&c->out, mp_buf_head(&m->out), mp_buf_avail(&m->out))) {
        hmove_free(m);
        hchan_close(c, "out of memory");
        return;
    }
    if (!chan_begin(c, mp_buf_head(&m->pre), mp_buf_avail(&m->pre))) {
        vc_pin(c, m->cookie);
        io_cb(&c->io, 0); /* TLS may hold decrypted bytes already */
    }
    hmove_free(m);
}

/* The channel goes to worker w: descriptor, TLS state, the bytes read and
 * those queued (nothing of it reached a virtual connection here). */
static void hchan_move(struct hchan *c, unsigned w, const uint8_t *cookie)
{
    struct hmove *m = calloc(1, sizeof *m);
    if (!m || mp_buf_append(&m->pre, mp_buf_head(&c->pre), mp_buf_avail(&c->pre)) ||
        mp_buf_append(&m->out, mp_buf_head(&c->out), mp_buf_avail(&c->out))) {
        if (m) {
            m->fd = -1;
            hmove_free(m);
        }
        hchan_close(c, "out of memory");
        return;
    }
    m->id = c->id;
    m->length = c->length;
    m->from = mp_worker_self();
    memcpy(m->cookie, cookie, sizeof m->cookie);
    snprintf(m->peer, sizeof m->peer, "%s", c->peer);
    snprintf(m->method, sizeof m->method, "%s", c->method);
    m->tls = c->tls;
    memset(&c->tls, 0, sizeof c->tls);
    m->www = c->www;
    c->www = NULL;
    snprintf(m->user, sizeof m->user, "%s", c->user);
    mp_io_set(c->owner->loop, &c->io, 0);
    m->fd = c->io.fd;
    c->io.fd = -1;
    mp_info("http #%" PRIu64 " %s %s: its virtual connection is on worker %u: handed over", c->id,
            c->peer, c->method, w);
    hchan_close(c, "handed to its virtual connection's worker");
    if (mp_worker_post(w, adopt_job, m)) {
        mp_warn("http #%" PRIu64 " %s: cannot hand it to worker %u (stopping?): closed", m->id,
                m->peer, w);
        hmove_free(m);
    }
}

/* Body bytes while the worker is not chosen yet: once the first RTS PDU is
 * complete, its virtual connection cookie names the worker (the first
 * channel to claim it makes it this one).  A PDU that does not parse is
 * left to rpch.c, here, to refuse. */
static void pre_input(struct hchan *c, const uint8_t *p, size_t n)
{
    if (mp_buf_append(&c->pre, p, n)) {
        hchan_close(c, "out of memory");
        return;
    }
    const uint8_t *b = mp_buf_head(&c->pre);
    size_t have = mp_buf_avail(&c->pre);
    size_t want = have >= 10 ? mp_get16(b + 8) : 10;
    if (have < want && want >= 10 && want <= 128 && have < c->length)
        return; /* more of it is to come */
    struct mp_rts_cookie ck;
    bool recycle, named = false;
    unsigned me = mp_worker_self(), w = me;
    if (have >= want &&
        !mp_rpch_first_cookie(b, want, !strcmp(c->method, "RPC_OUT_DATA"), &ck, &recycle)) {
        named = true;
        if (mp_workers_count() > 1)
            w = mp_aff_set(&vcs, ck.b, sizeof ck.b, me, false);
        if (w != me) {
            hchan_move(c, w, ck.b);
            return;
        }
        struct mp_rpch_http *o = holder(c->owner, ck.b);
        if (o != c->owner) /* its virtual connection began before a reload */
            relink(c, o);
    }
    struct mp_buf pre = c->pre;
    c->pre = (struct mp_buf){0};
    if (!chan_begin(c, mp_buf_head(&pre), mp_buf_avail(&pre)) && named)
        vc_pin(c, ck.b);
    mp_buf_free(&pre);
}

static void first_late(struct mp_timer *t)
{
    struct hchan *c = t->data;
    char why[80];
    snprintf(why, sizeof why,
             "no first RTS PDU within %" PRIu64 " ms (mapiproxy:rpc over http pairing timeout)",
             c->owner->first_ms);
    hchan_close(c, why);
}

static int take(void *arg, struct mp_http_handover *ho)
{
    struct mp_rpch_http *o = arg;
    size_t cl = 0;
    const char *v = mp_http_msg_get(ho->req, "content-length", &cl);
    char num[24] = "";
    if (v && cl < sizeof num)
        memcpy(num, v, cl);
    uint64_t len = strtoull(num, NULL, 10);
    if ((!len && !o->pass) || mp_http_msg_get(ho->req, "transfer-encoding", &cl)) {
        mp_info("http #%" PRIu64 " %s %s: no Content-Length (or chunked): refused", ho->id,
                ho->peer, ho->method);
        mp_tls_free(&ho->tls, false);
        close(ho->fd);
        return -1;
    }
    struct hchan *c = hchan_new(o, ho->fd, &ho->tls, ho->id, ho->peer, ho->method, len);
    if (!c)
        return 0;
    const char *ex = mp_http_msg_get(ho->req, "expect", &cl);
    bool cont = ex && cl == 12 && !strncasecmp(ex, "100-continue", 12);
    if (o->pass) { /* the logon goes to the upstream (hpass.c) */
        size_t al = 0;
        const char *az = mp_http_msg_get(ho->req, "authorization", &al);
        c->leg = mp_rpch_leg_start(o->pass, &leg_host, c, ho->method, mp_http_msg_url_ptr(ho->req),
                                   ho->req->url_len, az, al, len, cont, ho->rest, ho->rest_len);
        if (!c->dead)
            io_cb(&c->io, 0);
        return 0;
    }
    if (!strcmp(ho->method, "RPC_OUT_DATA") && ho->www && ho->www[0] &&
        !(c->www = strdup(ho->www))) { /* the acceptor's mutual token, for the OUT channel's 200 */
        hchan_close(c, "out of memory");
        return 0;
    }
    snprintf(c->user, sizeof c->user, "%s", ho->user);
    if (cont)
        h_send(c, (const uint8_t *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    mp_debug("http #%" PRIu64 " %s: %s channel of %" PRIu64 " bytes%s%s", c->id, c->peer, c->method,
             len, ho->user[0] ? ", user " : "", ho->user);
    /* its worker, and its generation there, are chosen by its first RTS PDU,
     * which must come in time: until then the channel is neither an HTTP
     * connection nor a virtual connection's, so nothing else would end it */
    c->deciding = true;
    c->first_t.cb = first_late;
    c->first_t.data = c;
    mp_timer_arm(o->loop, &c->first_t, o->first_ms);
    if (ho->rest_len)
        pre_input(c, ho->rest, ho->rest_len);
    if (!c->dead && c->io.fd >= 0)
        io_cb(&c->io, 0); /* TLS may hold decrypted bytes already */
    return 0;
}

int mp_rpch_http_setup(struct mp_loop *loop, const struct mp_config *cfg, struct mp_http *http,
                       struct mp_relay *relay, struct mp_rpch_http **out)
{
    *out = NULL;
    if (!cfg->rpch || !http)
        return 0;
    struct mp_rpch_http *o = calloc(1, sizeof *o);
    if (!o)
        return -1;
    o->loop = loop;
    o->first_ms = (uint64_t)cfg->rpch_pair_timeout_s * 1000;
    struct mp_rpch_opts opts = {.recv_window = cfg->rpch_window,
                                .conn_timeout_ms = cfg->rpch_conn_timeout_s * 1000,
                                .pair_timeout_ms = cfg->rpch_pair_timeout_s * 1000,
                                .max_pending = cfg->max_buffer,
                                .out_length = cfg->rpch_out_length,
                                .vc_gone = vc_gone};
    bool failed = false;
    o->pass = mp_rpch_pass_new(loop, cfg, &failed);
    if (!failed && o->pass && mp_worker_self()) {
        /* logons passed through pin upstream connections per worker: RPC
         * over HTTP then runs on worker 0 only, this front hands it there
         * (transport/http/hmove.h) */
        mp_rpch_pass_free(o->pass);
        free(o);
        return mp_http_add_handler(http, "/rpc/rpcproxy.dll", false, "RPC_IN_DATA RPC_OUT_DATA",
                                   NULL, NULL);
    }
    if (failed || !(o->rpch = mp_rpch_new(loop, &opts, &mp_rpch_dce_sink, relay)) ||
        mp_http_add_handler(http, "/rpc/rpcproxy.dll", false, "RPC_IN_DATA RPC_OUT_DATA", take,
                            o)) {
        mp_error("http front: cannot set up RPC over HTTP");
        mp_rpch_free(o->rpch);
        mp_rpch_pass_free(o->pass);
        free(o);
        return -1;
    }
    if (!mp_worker_self())
        mp_info("http front: RPC over HTTP on /rpc/rpcproxy.dll, receive window %u bytes%s",
                cfg->rpch_window, o->pass ? ", HTTP logons passed through to the upstream" : "");
    if ((o->gen_next = gens))
        gens->gen_prevp = &o->gen_next;
    o->gen_prevp = &gens;
    gens = o;
    mp_aff_use(&vcs, 1);
    mp_aff_set_max(&vcs, cfg->affinity_max);
    *out = o;
    return 0;
}

size_t mp_rpch_http_live(const struct mp_rpch_http *o)
{
    size_t n = 0;
    for (const struct hchan *c = o ? o->all : NULL; c; c = c->next)
        n++;
    return n;
}

void mp_rpch_http_free(struct mp_rpch_http *o)
{
    if (!o)
        return;
    o->stopping = true;
    while (o->all)
        hchan_close(o->all, "shutdown");
    mp_rpch_free(o->rpch);
    mp_rpch_pass_free(o->pass);
    if ((*o->gen_prevp = o->gen_next))
        o->gen_next->gen_prevp = o->gen_prevp;
    mp_aff_use(&vcs, -1);
    free(o);
}
