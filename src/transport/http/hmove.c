/* Moving front connections between workers (hmove.h). */
#include "transport/http/hmove.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/affinity.h"
#include "core/log.h"
#include "core/workers.h"
#include "ops/pcapng.h"
#include "transport/http/hconn.h"
#include "transport/mapihttp/cookies.h"

/* which worker holds a MAPI/HTTP session: its cookie -> the worker.  An
 * entry is pinned from the response that sets the cookie until Disconnect
 * or Unbind, or until unused for two hours, as the module sessions
 * (cookies.c): new sessions, however many, never push out a live one's. */
static struct mp_aff sessions =
    MP_AFF_INIT("mapihttp-sessions", 2u * 3600u * 1000u, 2u * 3600u * 1000u);

void mp_hm_front_added(const struct mp_config *cfg)
{
    mp_aff_use(&sessions, 1);
    mp_aff_set_max(&sessions, cfg->affinity_max);
}

void mp_hm_front_gone(void)
{
    mp_aff_use(&sessions, -1);
}

void mp_hm_response(struct hconn *s)
{
    if (mp_workers_count() < 2)
        return;
    size_t n;
    const char *c = mp_mh_cookie_of(&s->resp, true, &n);
    if (c && mp_aff_set_pinned(&sessions, c, n, mp_worker_self()))
        mp_debug("http #%" PRIu64 " %s: %s: MAPI/HTTP session not kept in the worker table (full "
                 "or out of memory): its next requests are served where they are read",
                 s->id, s->peer, s->xtype[0] ? s->xtype : "-");
    if (!strcasecmp(s->xtype, "Disconnect") || !strcasecmp(s->xtype, "Unbind"))
        if ((c = mp_mh_cookie_of(&s->req, false, &n)))
            mp_aff_forget(&sessions, c, n, mp_worker_self());
}

unsigned mp_hm_target(struct hconn *s)
{
    unsigned n = mp_workers_count(), me = mp_worker_self();
    bool adopted = s->adopted;
    s->adopted = false; /* only the request it was moved for stays here unasked */
    const struct mp_http_route *r = s->route;
    if (n < 2 || adopted || !r)
        return 0;
    if (r->kind == MP_HTTP_ROUTE_HANDLER && !r->take) /* served on worker 0 (hchan.c) */
        return me ? 1 : 0;
    if (r->kind != MP_HTTP_ROUTE_RELAY || strncasecmp(s->path, "/mapi/", 6))
        return 0;
    size_t len;
    const char *c = mp_mh_cookie_of(&s->req, false, &len);
    int w = c ? mp_aff_get(&sessions, c, len) : -1;
    if (w < 0 || (unsigned)w == me || (unsigned)w >= n)
        return 0;
    return (unsigned)w + 1;
}

/* ------------------------------------------------------------------ */
/* the hand-over                                                        */

struct hmove {
    int fd;
    struct mp_tls tls;
    char peer[64];
    uint64_t from_id;
    unsigned from_worker;
    struct mp_buf in;    /* the request head rebuilt, then what was read after it */
    struct mp_buf out;   /* bytes still queued for the client */
    struct mp_pcap *cap; /* the connection's packet export, which goes with it */
    struct mp_hauth_conn ha;
};

/* The head may hold an Authorization (Basic: a password): its copies are
 * wiped, here and in the connection that let it go (mp_hm_move). */
static void move_free(struct hmove *m)
{
    if (m->fd >= 0) {
        mp_tls_free(&m->tls, false);
        close(m->fd);
    }
    mp_pcap_end(m->cap);
    mp_hauth_conn_free(&m->ha);
    mp_buf_free_wiped(&m->in);
    mp_buf_free_wiped(&m->out);
    free(m);
}

/* "METHOD target HTTP/x.y", every header field as received (none was
 * changed before the move: it happens before the logon), an empty line. */
static int head_bytes(struct hconn *s, struct mp_buf *b)
{
    const struct mp_http_msg *m = &s->req;
    char ver[16];
    int vl = snprintf(ver, sizeof ver, " HTTP/%u.%u\r\n", s->cp.http_major, s->cp.http_minor);
    if (mp_buf_append(b, s->method, strlen(s->method)) || mp_buf_append(b, " ", 1) ||
        mp_buf_append(b, mp_http_msg_url_ptr(m), m->url_len) || mp_buf_append(b, ver, (size_t)vl))
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *hd = &m->h[i];
        if (mp_buf_append(b, m->raw.data + hd->name_off, hd->name_len) ||
            mp_buf_append(b, ": ", 2) || mp_buf_append(b, m->raw.data + hd->val_off, hd->val_len) ||
            mp_buf_append(b, "\r\n", 2))
            return -1;
    }
    return mp_buf_append(b, "\r\n", 2);
}

static void adopt_job(void *arg)
{
    struct hmove *m = arg;
    struct mp_http *h = mp_hf_newest();
    char host[64];
    snprintf(host, sizeof host, "%s", m->peer);
    char *colon = strrchr(host, ':');
    uint16_t port = 0;
    if (colon) {
        *colon = 0;
        port = (uint16_t)strtoul(colon + 1, NULL, 10);
    }
    size_t open = h ? mp_hf_full(h) : 0;
    if (open) { /* counted again here: the giving worker let it go first */
        mp_warn("http %s (#%" PRIu64 " of worker %u): refused by worker %u: %zu connections open "
                "(mapiproxy:max connections)",
                m->peer, m->from_id, m->from_worker, mp_worker_self(), open);
        move_free(m);
        return;
    }
    struct hconn *s = NULL;
    if (h) { /* it takes the socket, the TLS state and the capture, whatever happens */
        int fd = m->fd;
        struct mp_pcap *cap = m->cap;
        m->fd = -1;
        m->cap = NULL;
        s = mp_hf_adopt(h, fd, &m->tls, host, port, cap);
    }
    if (!s) {
        mp_warn("http %s (#%" PRIu64 " of worker %u): not adopted by worker %u (%s): closed",
                m->peer, m->from_id, m->from_worker, mp_worker_self(),
                h ? "out of memory" : "no HTTPS front");
        move_free(m);
        return;
    }
    if (mp_buf_append(&s->c.conn.in, mp_buf_head(&m->in), mp_buf_avail(&m->in)) ||
        mp_buf_append(&s->c.conn.out, mp_buf_head(&m->out), mp_buf_avail(&m->out))) {
        move_free(m);
        mp_hf_close(s, "out of memory");
        return;
    }
    s->ua.ha = m->ha;
    if (s->ua.ha.acc_on) /* the acceptor's options: this front's (the same file) */
        s->ua.ha.acc.cfg = &h->auth.acc_cfg;
    memset(&m->ha, 0, sizeof m->ha);
    s->adopted = true;
    mp_info("http #%" PRIu64 " %s: adopted from worker %u (its #%" PRIu64 ")", s->id, s->peer,
            m->from_worker, m->from_id);
    move_free(m);
    mp_hf_pump(s);
}

void mp_hm_move(struct hconn *s)
{
    unsigned to = s->move_to - 1;
    s->move_to = 0;
    struct mp_buf *in = &s->c.conn.in;
    /* paused in on_headers_complete, http-parser stops before the head's
     * last LF */
    if (mp_buf_avail(in) && mp_buf_head(in)[0] == '\n')
        mp_buf_consume(in, 1);
    struct hmove *m = calloc(1, sizeof *m);
    if (!m || head_bytes(s, &m->in) || mp_buf_append(&m->in, mp_buf_head(in), mp_buf_avail(in)) ||
        mp_buf_append(&m->out, mp_buf_head(&s->c.conn.out), mp_buf_avail(&s->c.conn.out))) {
        if (m) {
            m->fd = -1;
            move_free(m);
        }
        s->in_request = false;
        mp_hf_close(s, "out of memory");
        return;
    }
    snprintf(m->peer, sizeof m->peer, "%s", s->peer);
    m->from_id = s->id;
    m->from_worker = mp_worker_self();
    m->ha = s->ua.ha;
    memset(&s->ua.ha, 0, sizeof s->ua.ha);
    /* One export file per client connection: it goes along, its client leg
     * goes on in it; the upstream leg of this worker ends (the adopting
     * worker's upstream connection starts a new one in the same file). */
    m->cap = s->cap;
    s->cap = NULL;
    mp_pcap_leg_end(m->cap, false);
    mp_conn_tls_release(&s->c.conn, &m->tls);
    m->fd = mp_conn_release(&s->c.conn);
    s->in_request = false;
    /* the head is in m now: this worker's copies are wiped (a borrowed
     * input buffer is the loop's read scratch, overwritten by its next read) */
    mp_buf_free_wiped(&s->req.raw);
    mp_http_msg_reset(&s->req);
    if (!s->c.conn.in_borrowed)
        mp_buf_free_wiped(&s->c.conn.in);
    bool rpch = s->route && s->route->kind == MP_HTTP_ROUTE_HANDLER;
    mp_info("http #%" PRIu64 " %s %s %s: %s: handed to worker %u", s->id, s->peer, s->method,
            s->path, rpch ? "RPC over HTTP" : "its MAPI/HTTP session's worker", to);
    mp_hf_close(s, "handed to another worker");
    if (mp_worker_post(to, adopt_job, m)) {
        mp_warn("http %s: cannot hand it to worker %u (stopping?): closed", m->peer, to);
        move_free(m);
    }
}
