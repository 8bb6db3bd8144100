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

#include "core/buf.h"
#include "core/log.h"
#include "net/tls.h"
#include "transport/http/front.h"
#include "transport/http/msg.h"
#include "transport/rpch/hpass.h"
#include "transport/rpch/rpch.h"
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
};

struct mp_rpch_http {
    struct mp_loop *loop;
    struct mp_rpch *rpch;
    struct hchan *all;
    bool stopping;
    struct mp_rpch_pass *pass; /* HTTP logons passed through to the RPC over HTTP upstream */
};

static void hchan_close(struct hchan *c, const char *why);

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
    free(c);
}

static void hchan_close(struct hchan *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
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
    if (c->prev)
        c->prev->next = c->next;
    else
        o->all = c->next;
    if (c->next)
        c->next->prev = c->prev;
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

static int take(void *arg, struct mp_http_handover *ho)
{
    struct mp_rpch_http *o = arg;
    bool out = !strcmp(ho->method, "RPC_OUT_DATA");
    size_t cl = 0;
    const char *v = mp_http_msg_get(ho->req, "content-length", &cl);
    char num[24] = "";
    if (v && cl < sizeof num)
        memcpy(num, v, cl);
    uint64_t len = strtoull(num, NULL, 10);
    struct hchan *c = calloc(1, sizeof *c);
    if (!c || (!len && !o->pass) || mp_http_msg_get(ho->req, "transfer-encoding", &cl)) {
        mp_info("http #%" PRIu64 " %s %s: %s: refused", ho->id, ho->peer, ho->method,
                c ? "no Content-Length (or chunked)" : "out of memory");
        free(c);
        mp_tls_free(&ho->tls, false);
        close(ho->fd);
        return -1;
    }
    c->owner = o;
    c->next = o->all;
    if (o->all)
        o->all->prev = c;
    o->all = c;
    c->tls = ho->tls;
    c->io.fd = ho->fd;
    c->io.cb = io_cb;
    c->io.data = c;
    c->id = ho->id;
    c->left = len;
    snprintf(c->peer, sizeof c->peer, "%s", ho->peer);
    snprintf(c->method, sizeof c->method, "%s", ho->method);
    snprintf(c->host_addr, sizeof c->host_addr, "%s", ho->peer);
    char *colon = strrchr(c->host_addr, ':');
    if (colon) {
        *colon = 0;
        c->port = (uint16_t)strtoul(colon + 1, NULL, 10);
    }
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
    c->chan = mp_rpch_chan_new(o->rpch, out, c->host_addr, c->port, len, &host, c);
    if (!c->chan || (out && mp_rpch_chan_www(c->chan, ho->www))) {
        hchan_close(c, "out of memory");
        return 0;
    }
    if (cont)
        h_send(c, (const uint8_t *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    mp_debug("http #%" PRIu64 " %s: %s channel of %" PRIu64 " bytes%s%s", c->id, c->peer, c->method,
             len, ho->user[0] ? ", user " : "", ho->user);
    if (ho->rest_len)
        hchan_input(c, ho->rest, ho->rest_len);
    if (!c->dead)
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
    struct mp_rpch_opts opts = {.recv_window = cfg->rpch_window,
                                .conn_timeout_ms = cfg->rpch_conn_timeout_s * 1000,
                                .pair_timeout_ms = cfg->rpch_pair_timeout_s * 1000,
                                .max_pending = cfg->max_buffer,
                                .out_length = cfg->rpch_out_length};
    bool failed = false;
    o->pass = mp_rpch_pass_new(loop, cfg, &failed);
    if (failed || !(o->rpch = mp_rpch_new(loop, &opts, &mp_rpch_dce_sink, relay)) ||
        mp_http_add_handler(http, "/rpc/rpcproxy.dll", false, "RPC_IN_DATA RPC_OUT_DATA", take,
                            o)) {
        mp_error("http front: cannot set up RPC over HTTP");
        mp_rpch_free(o->rpch);
        mp_rpch_pass_free(o->pass);
        free(o);
        return -1;
    }
    mp_info("http front: RPC over HTTP on /rpc/rpcproxy.dll, receive window %u bytes%s",
            cfg->rpch_window, o->pass ? ", HTTP logons passed through to the upstream" : "");
    *out = o;
    return 0;
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
    free(o);
}
