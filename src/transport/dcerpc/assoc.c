/* An association's lifetime: accept, its connections (client, upstream,
 * upstream endpoint mapper), their I/O and timers, connecting upstream, and
 * the client PDU dispatcher. */
#include "transport/dcerpc/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/workers.h"
#include "net/accept.h"
#include "transport/dcerpc/carrier.h"
#include "transport/rpch/upclient.h"
#include "ops/metrics.h"
#include "ops/pcapng.h"

static void conn_cb(struct mp_conn *n, uint32_t ev);
static void upstream_input(struct assoc *a);
static void on_connected(struct assoc *a, struct conn *c);
static void carrier_after(struct assoc *a);

void dce_conn_release(struct mp_relay *r, struct conn *c)
{
    struct assoc *a = c->a;
    if (c == &a->u && a->up_ops) { /* the upstream carrier is told once, then forgotten */
        const struct mp_dce_up_ops *ops = a->up_ops;
        a->up_ops = NULL;
        ops->closed(a->up_data);
        a->up_data = NULL;
    }
    mp_conn_close(&c->n);
}

bool dce_leg_carried(const struct assoc *a, const struct conn *c)
{
    return (c == &a->c && a->carrier) || (c == &a->u && a->up_ops);
}

bool dce_leg_open(const struct assoc *a, const struct conn *c)
{
    return c->n.io.fd >= 0 || dce_leg_carried(a, c);
}

static void assoc_free(void *p)
{
    struct assoc *a = p;
    mp_dce_sec_free(a->csec);
    mp_dce_sec_free(a->usec);
    for (size_t i = 0; i < a->n_cx; i++)
        mp_dce_sec_free(a->cx[i]);
    free(a->up_fwd);
    struct merge *m = a->merges;
    while (m) {
        struct merge *n = m->next;
        free(m);
        m = n;
    }
    free(a->ctx);
    free(a->calls);
    mp_buf_free(&a->pending_bind);
    mp_buf_free(&a->reasm);
    mp_pcap_end(a->cap);
    free(a);
}

/* Associations open in the process, every worker and generation: what
 * mapiproxy:max connections limits (doc/internals/workers.md). */
static size_t n_open_all;
/* Direct client connections (not carriers, not the endpoint mapper's) open
 * on each worker: a new association group's first connection goes to the
 * least busy worker (hand_over). */
static size_t n_open_w[MP_MAX_WORKERS];

static bool counts_for_load(const struct assoc *a)
{
    return !a->carrier && !a->local_epm;
}

void dce_load_adjust(unsigned worker, int delta)
{
    if (worker < MP_MAX_WORKERS)
        __atomic_add_fetch(&n_open_w[worker], (size_t)(ssize_t)delta, __ATOMIC_RELAXED);
}

void dce_assoc_close(struct assoc *a, const char *reason)
{
    if (a->dead)
        return;
    struct mp_relay *r = a->r;
    a->dead = true;
    if (a->job) {
        a->job->owner = NULL; /* the worker's result is dropped when it comes back */
        a->job = NULL;
    }
    mp_info("conn close %s calls=%llu in_flight=%zu after=%.1fs reason=%s", a->peer,
            (unsigned long long)a->n_done, a->n_calls, (double)(mp_now_ms() - a->t_open) / 1000.0,
            reason);
    mp_metrics_open(a->local_epm ? "epmapper" : "rpc", -1);
    if (a->carrier)
        a->carrier->closed(a->carrier_data, reason);
    a->carrier = NULL;
    for (size_t i = 0; i < a->n_calls; i++)
        dce_call_detach(&a->calls[i]);
    mp_timer_cancel(r->loop, &a->timer);
    mp_timer_cancel(r->loop, &a->idle);
    mp_timer_cancel(r->loop, &a->bindt);
    mp_timer_cancel(r->loop, &a->stall);
    mp_timer_cancel(r->loop, &a->kick);
    dce_addr_release(r, a->addr);
    a->addr = NULL;
    dce_conn_release(r, &a->c);
    dce_conn_release(r, &a->u);
    dce_conn_release(r, &a->res);
    dce_group_unref(r, a->group);
    a->group = NULL;
    if (a->prev)
        a->prev->next = a->next;
    else
        r->assocs = a->next;
    if (a->next)
        a->next->prev = a->prev;
    r->n_assoc--;
    __atomic_sub_fetch(&n_open_all, 1, __ATOMIC_RELAXED);
    if (a->load_w)
        __atomic_sub_fetch(&n_open_w[a->load_w - 1], 1, __ATOMIC_RELAXED);
    mp_loop_defer(r->loop, assoc_free, a);
}

/* Sends what is queued to the client, then closes everything. */
void dce_assoc_finish(struct assoc *a, const char *reason)
{
    if (a->dead)
        return;
    dce_conn_release(a->r, &a->u);
    dce_conn_release(a->r, &a->res);
    if (!mp_buf_avail(&a->c.n.out) || (a->c.n.io.fd < 0 && !a->carrier)) {
        dce_assoc_close(a, reason);
        return;
    }
    a->c.n.closing = true;
    mp_debug("conn %s: closing after flush (%s)", a->peer, reason);
    if (a->carrier) /* no descriptor to wait on: hand it over now */
        dce_conn_flush(a, &a->c);
    dce_update_interest(a);
}

/* A carrier (carrier.h) takes what it can of c's output through flush. */
static int carrier_flush(struct conn *c, int (*flush)(void *, struct mp_buf *), void *data)
{
    size_t before = mp_buf_avail(&c->n.out);
    int rc = before ? flush(data, &c->n.out) : 0;
    if (mp_buf_avail(&c->n.out) < before)
        c->n.write_ms = mp_now_ms();
    if (!mp_buf_avail(&c->n.out))
        mp_buf_trim(&c->n.out);
    return rc;
}

void dce_conn_flush(struct assoc *a, struct conn *c)
{
    if (a->dead)
        return;
    int rc;
    dce_tap_out(a, c);
    if (c == &a->c && a->carrier) {
        rc = carrier_flush(c, a->carrier->flush, a->carrier_data);
        a->c_blocked = rc == 0 && mp_buf_avail(&c->n.out);
    } else if (c == &a->u && a->up_ops) {
        rc = carrier_flush(c, a->up_ops->flush, a->up_data);
        a->up_blocked = rc == 0 && mp_buf_avail(&c->n.out);
        if (rc < 0) /* the carrier failed and logged why: not told again */
            a->up_ops = NULL;
    } else if (c == &a->u && a->up_why[0]) { /* the carrier failed in this batch */
        char why[sizeof a->up_why];
        snprintf(why, sizeof why, "%s", a->up_why);
        a->up_why[0] = 0;
        dce_upstream_failed(a, why);
        return;
    } else {
        rc = mp_conn_flush(&c->n);
    }
    dce_tap_synced(a, c);
    if (rc < 0) {
        if (c->role == ROLE_CLIENT)
            dce_assoc_close(a, "client write failed");
        else if (c->role == ROLE_UPSTREAM && a->up_why[0])
            dce_conn_flush(a, c); /* the carrier's reason */
        else if (c->role == ROLE_UPSTREAM)
            dce_upstream_failed(a, "write to upstream failed");
        else
            dce_upstream_failed(a, "write to upstream endpoint mapper failed");
        return;
    }
    if (c->role == ROLE_CLIENT && c->n.closing && !mp_buf_avail(&c->n.out))
        dce_assoc_close(a, "closed after final answer");
}

void dce_update_interest(struct assoc *a)
{
    if (a->dead)
        return;
    struct mp_relay *r = a->r;
    size_t high = r->cfg->max_buffer;
    bool c_room = mp_buf_avail(&a->c.n.out) < high, u_room = mp_buf_avail(&a->u.n.out) < high;
    if ((!c_room || !u_room) && !a->stall.heap_idx)
        mp_timer_arm(r->loop, &a->stall, (uint64_t)r->cfg->send_timeout_s * 1000);
    bool rd = !a->c.n.closing &&
              (a->state == A_WAIT_BIND || a->state == A_OPEN || a->state == A_LOCAL ||
               a->state == A_AUTH || a->state == A_DENIED) &&
              c_room && u_room && a->n_calls < MAX_PENDING;
    if (!a->carrier) {
        mp_conn_want(&a->c.n, rd);
    } else if (rd != a->carrier_want) {
        a->carrier_want = rd;
        a->carrier->want_input(a->carrier_data, rd);
    }
    if (!a->up_ops) {
        mp_conn_want(&a->u.n, c_room);
    } else if (c_room != a->up_want) {
        a->up_want = c_room;
        a->up_ops->want_input(a->up_data, c_room);
    }
    /* output queued where no flush followed (a winbind or KDC answer, a
     * timer): what MP_WRITE does for a socket, a carrier's leg gets on the
     * next loop turn, unless the carrier said it takes no more for now */
    bool c_wait = a->carrier && mp_buf_avail(&a->c.n.out) && !a->c_blocked;
    bool u_wait = a->up_ops && mp_buf_avail(&a->u.n.out) && !a->up_blocked;
    if ((c_wait || u_wait) && !a->kick.heap_idx)
        mp_timer_arm(r->loop, &a->kick, 0);
    mp_conn_want(&a->res.n, c_room);
}

/* Queues bytes for a connection, writing them at once when nothing is
 * queued before them (most PDUs never touch a buffer). */
int dce_conn_send(struct conn *c, const uint8_t *p, size_t len)
{
    dce_tap_send(c->a, c, p, len);
    int rc = mp_conn_send(&c->n, p, len, c->a->r->more_input);
    dce_tap_synced(c->a, c);
    return rc;
}

void dce_client_protocol_error(struct assoc *a, uint32_t call_id, const char *what)
{
    mp_warn("conn %s: protocol error from client: %s; sending a fault and closing", a->peer, what);
    mp_build_fault(&a->c.n.out, call_id, 0, MP_NCA_PROTO_ERROR, true);
    dce_assoc_finish(a, "client protocol error");
}

/* Answers every call in flight with a fault, then closes. */
void dce_upstream_failed(struct assoc *a, const char *why)
{
    if (a->dead)
        return;
    a->up_why[0] = 0; /* a carrier's failure pending, if any, is this one's now */
    mp_warn("conn %s: upstream %s; %zu call(s) in flight get a fault", a->peer, why, a->n_calls);
    mp_metrics_upstream_error(why);
    if (a->state != A_OPEN && !a->csec) {
        uint32_t id = a->merges ? a->merges->c_call_id : 0;
        /* MS-RPCE 2.2.2.5: the server could not complete the request for
         * want of resources; Windows clients report RPC_S_SERVER_TOO_BUSY,
         * which Outlook retries (MS-OXCRPC 3.2.4.4).  (temporary_congestion
         * is "not used" there.) */
        mp_build_bind_nak(&a->c.n.out, id, MP_BNAK_LOCAL_LIMIT_EXCEEDED);
    } else {
        for (size_t i = 0; i < a->n_calls; i++) {
            dce_log_call(a, &a->calls[i], "upstream-failed");
            mp_build_fault(&a->c.n.out, a->calls[i].c_id, a->calls[i].ctx_id, MP_RPC_S_CALL_FAILED,
                           false);
            dce_call_detach(&a->calls[i]);
        }
        a->n_calls = 0;
    }
    dce_assoc_finish(a, "upstream failed");
}

static void timeout_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    char why[400];
    const struct conn *c = a->state == A_RESOLVING ? &a->res : &a->u;
    snprintf(why, sizeof(why), "%s port %u%s did not answer within %u ms", a->r->cfg->binding.host,
             c->n.port, c == &a->res ? " (endpoint mapper)" : "", a->r->cfg->connect_timeout_ms);
    dce_upstream_failed(a, why);
}

/* A queue over `max buffer` that has not drained for `send timeout`: the
 * peer is not reading.  Re-armed while the queue moves. */
static void stall_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    const struct mp_config *cfg = a->r->cfg;
    uint64_t now = mp_now_ms(), limit = (uint64_t)cfg->send_timeout_s * 1000;
    bool c_full = mp_buf_avail(&a->c.n.out) >= cfg->max_buffer;
    bool u_full = mp_buf_avail(&a->u.n.out) >= cfg->max_buffer;
    if (c_full && now - a->c.n.write_ms >= limit) {
        mp_warn(
            "conn %s: client not reading for %u s with %zu bytes queued; closed (mapiproxy:send "
            "timeout)",
            a->peer, cfg->send_timeout_s, mp_buf_avail(&a->c.n.out));
        dce_assoc_close(a, "client not reading");
    } else if (u_full && now - a->u.n.write_ms >= limit) {
        char why[96];
        snprintf(why, sizeof(why), "not reading for %u s (mapiproxy:send timeout)",
                 cfg->send_timeout_s);
        dce_upstream_failed(a, why);
    } else if (c_full || u_full) {
        mp_timer_arm(a->r->loop, t, limit);
    }
}

/* mapiproxy:bind timeout: a client that has not bound (and, where the proxy
 * terminates authentication, logged on) within it is closed. */
static void bind_timeout_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    if (a->state != A_WAIT_BIND && a->state != A_AUTH)
        return;
    mp_info("conn %s: no %s within %u s; closed (mapiproxy:bind timeout)", a->peer,
            a->state == A_WAIT_BIND ? "bind" : "logon", a->r->cfg->bind_timeout_s);
    dce_assoc_close(a, "bind timeout");
}

/* The last byte read, or written with progress, on any of the association's
 * connections (or its start). */
static uint64_t last_io_ms(const struct assoc *a)
{
    uint64_t t = a->t_open;
    const struct mp_conn *cs[3] = {&a->c.n, &a->u.n, &a->res.n};
    for (int i = 0; i < 3; i++) {
        if (cs[i]->read_ms > t)
            t = cs[i]->read_ms;
        if (cs[i]->write_ms > t)
            t = cs[i]->write_ms;
    }
    return t;
}

static void idle_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    uint64_t now = mp_now_ms(), limit = (uint64_t)a->r->cfg->idle_timeout_s * 1000;
    uint64_t last = last_io_ms(a);
    if (a->n_calls == 0 && now - last >= limit) {
        mp_info("conn %s: idle for %u s; closed (mapiproxy:idle timeout)", a->peer,
                a->r->cfg->idle_timeout_s);
        dce_assoc_close(a, "idle timeout");
        return;
    }
    mp_timer_arm(a->r->loop, t, limit - (now - last < limit ? now - last : 0));
}

static void kick_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    if (a->up_why[0]) /* mp_dce_up_failed */
        dce_conn_flush(a, &a->u);
    carrier_after(a);
}

static int start_connect(struct assoc *a, struct conn *c, uint16_t port)
{
    if (c->role != ROLE_UPSTREAM || !a->r->rpch_up)
        return mp_conn_connect(&c->n, &a->r->up_addr, a->r->up_addr_len, port);
    /* RPC over HTTP upstream: a virtual connection to ?SERVER:port, the
     * upstream carrier (carrier.h), which takes PDUs at once (it holds
     * them until the virtual connection is open) */
    const struct mp_dce_up_ops *ops = NULL;
    void *up = mp_rpch_up_open(a->r->rpch_up, a, a->carrier_data, a->peer, port, &ops);
    if (!up)
        return -1;
    a->up_ops = ops;
    a->up_data = up;
    a->up_want = true;
    a->up_blocked = false;
    c->n.port = port;
    c->n.read_ms = c->n.write_ms = mp_now_ms();
    return 0;
}

/* Finds the upstream's port (fixed, cached, or from its endpoint mapper)
 * and connects; a->pending_bind is sent once connected. */
void dce_start_upstream(struct assoc *a)
{
    struct mp_relay *r = a->r;
    a->timer.cb = timeout_cb;
    a->timer.data = a;
    mp_timer_arm(r->loop, &a->timer, r->cfg->connect_timeout_ms);
    uint16_t port = r->cfg->binding.port;
    if (!port && !memcmp(a->target.uuid, mp_epm_syntax.uuid, 16))
        port = r->cfg->upstream_epm_port;
    if (!port)
        port = dce_port_lookup(r, &a->target);
    if (port) {
        dce_upstream_connect(a, port);
        return;
    }
    /* Ask the upstream's endpoint mapper, as a client would. */
    a->state = A_RESOLVING;
    a->res.role = ROLE_RESOLVER;
    if (start_connect(a, &a->res, r->cfg->upstream_epm_port) < 0) {
        char why[400];
        snprintf(why, sizeof(why), "%s port %u (endpoint mapper): connect failed: %s",
                 r->cfg->binding.host, r->cfg->upstream_epm_port, strerror(errno));
        dce_upstream_failed(a, why);
    }
}

void dce_upstream_connect(struct assoc *a, uint16_t port)
{
    a->state = A_CONNECTING;
    a->u.role = ROLE_UPSTREAM;
    if (start_connect(a, &a->u, port) < 0) {
        char why[400];
        snprintf(why, sizeof(why), "%s port %u: connect failed: %s", a->r->cfg->binding.host, port,
                 strerror(errno));
        dce_upstream_failed(a, why);
        return;
    }
    mp_debug("conn %s: connecting upstream port %u", a->peer, port);
    if (a->up_ops) { /* a carrier is connected at once: the bind goes now */
        on_connected(a, &a->u);
        dce_conn_flush(a, &a->u);
    }
}

void dce_client_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (a->state == A_WAIT_BIND) {
        if (h->ptype != MP_PT_BIND) {
            dce_client_protocol_error(a, h->call_id, "first PDU is not a bind");
            return;
        }
        dce_handle_bind(a, pdu, h);
        return;
    }
    if (a->state == A_AUTH) {
        if (h->ptype == MP_PT_AUTH3)
            dce_handle_auth3_terminate(a, pdu, h);
        else if (h->ptype == MP_PT_ALTER)
            dce_handle_alter_auth(a, pdu, h);
        else
            dce_client_protocol_error(a, h->call_id, "authentication not completed");
        return;
    }
    if (a->state == A_DENIED) { /* each call: access denied, as Windows answers */
        if (h->ptype == MP_PT_REQUEST && h->frag_len >= MP_REQ_HDR_LEN) {
            if (h->flags & MP_PFC_FIRST) {
                mp_info("call %s op(%u) status=fault:0x%08x (access denied: not authenticated)",
                        a->peer, mp_get16(pdu + 22), MP_RPC_S_ACCESS_DENIED);
                mp_build_fault(&a->c.n.out, h->call_id, mp_get16(pdu + 20), MP_RPC_S_ACCESS_DENIED,
                               true);
            }
            return;
        }
        mp_build_fault(&a->c.n.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        dce_assoc_finish(a, "access denied");
        return;
    }
    switch (h->ptype) {
    case MP_PT_REQUEST:
        if (a->local_epm || a->state == A_LOCAL)
            dce_local_request(a, pdu, h);
        else
            dce_relay_request(a, pdu, h);
        break;
    case MP_PT_ALTER:
        dce_handle_alter(a, pdu, h);
        break;
    case MP_PT_AUTH3:
        if (a->csec && a->state == A_OPEN) {
            dce_auth3_security(a, pdu, h);
            break;
        }
        if (!a->passthrough || a->state != A_OPEN || a->csec) {
            dce_client_protocol_error(a, h->call_id, "auth3 on an unauthenticated association");
            return;
        }
        if (mp_buf_append(&a->u.n.out, pdu, h->frag_len))
            dce_assoc_close(a, "out of memory");
        break;
    case MP_PT_CO_CANCEL:
    case MP_PT_ORPHANED:
        if (a->state == A_OPEN && !a->local_epm && !a->csec)
            dce_relay_cancel(a, pdu, h);
        break;
    case MP_PT_BIND:
        mp_warn("conn %s: second bind on an association refused", a->peer);
        mp_build_bind_nak(&a->c.n.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        dce_assoc_finish(a, "second bind");
        break;
    default: {
        char what[64];
        snprintf(what, sizeof(what), "unexpected PDU type %u (%s)", h->ptype,
                 mp_ptype_name(h->ptype));
        dce_client_protocol_error(a, h->call_id, what);
    }
    }
}

int dce_pdu_head(struct conn *c, const uint8_t **pp, struct mp_pdu_hdr *h, const char **bad)
{
    size_t avail = mp_buf_avail(&c->n.in);
    h->frag_len = 0;
    if (avail < MP_HDR_LEN)
        return 0;
    *pp = mp_buf_head(&c->n.in);
    if ((*bad = mp_pdu_hdr_check(*pp, avail, h)))
        return -1;
    return avail >= h->frag_len;
}

/* Hands the whole PDU at the head of c's input to fn (more_input: whether
 * more bytes follow it, for one send() per batch); true when it was
 * consumed, false when the association went away (or, need_fd, c's
 * socket was closed). */
static bool pdu_run(struct assoc *a, struct conn *c, const uint8_t *p, const struct mp_pdu_hdr *h,
                    void (*fn)(struct assoc *, const uint8_t *, const struct mp_pdu_hdr *),
                    bool need_fd)
{
    a->r->more_input = mp_buf_avail(&c->n.in) > h->frag_len;
    dce_tap_in(a, c, p, h);
    fn(a, p, h);
    a->r->more_input = false;
    if (a->dead || (need_fd && !dce_leg_open(a, c)))
        return false;
    mp_buf_consume(&c->n.in, h->frag_len);
    return true;
}

static bool hand_over(struct assoc *a, const uint8_t *p, const struct mp_pdu_hdr *h);

void dce_client_input(struct assoc *a)
{
    struct conn *c = &a->c;
    while (!a->dead && !c->n.closing &&
           (a->state == A_WAIT_BIND || a->state == A_OPEN || a->state == A_LOCAL ||
            a->state == A_AUTH || a->state == A_DENIED)) {
        const uint8_t *p;
        struct mp_pdu_hdr h;
        const char *bad;
        int whole = dce_pdu_head(c, &p, &h, &bad);
        if (whole < 0) {
            dce_client_protocol_error(a, mp_buf_avail(&c->n.in) >= 16 ? mp_get32(p + 12) : 0, bad);
            return;
        }
        if (!h.frag_len)
            break;
        size_t limit = a->state == A_WAIT_BIND || h.ptype == MP_PT_ALTER || h.ptype == MP_PT_AUTH3
                           ? 0xffff
                           : a->c_recv;
        if (h.frag_len > limit) {
            char what[96];
            snprintf(what, sizeof(what), "fragment of %u bytes over the negotiated %zu", h.frag_len,
                     limit);
            dce_client_protocol_error(a, h.call_id, what);
            return;
        }
        if (!whole)
            break;
        if (h.ptype != MP_PT_BIND && a->state == A_WAIT_BIND) {
            dce_client_protocol_error(a, h.call_id, "first PDU is not a bind");
            return;
        }
        if (a->state == A_WAIT_BIND && hand_over(a, p, &h))
            return;
        if (!pdu_run(a, c, p, &h, dce_client_pdu, false))
            return;
    }
}

static void upstream_input(struct assoc *a)
{
    struct conn *c = &a->u;
    while (!a->dead && dce_leg_open(a, c)) {
        const uint8_t *p;
        struct mp_pdu_hdr h;
        const char *bad;
        int whole = dce_pdu_head(c, &p, &h, &bad);
        if (whole < 0) {
            char what[96];
            snprintf(what, sizeof(what), "sent a bad PDU: %s", bad);
            dce_upstream_failed(a, what);
            return;
        }
        if (!whole)
            break;
        if (!pdu_run(a, c, p, &h, dce_upstream_pdu, true))
            return;
    }
    /* A completed bind lets the client's queued PDUs through. */
    if (!a->dead && a->state == A_OPEN && mp_buf_avail(&a->c.n.in))
        dce_client_input(a);
}

static void on_connected(struct assoc *a, struct conn *c)
{
    /* Both ends of the upstream connection, so that a capture's connection
     * can be told from others to the same server (tests/integration:
     * tshark_util.only_conversations).  An RPC/HTTP upstream's virtual
     * connection is a carrier (carrier.h): no descriptor, no port. */
    uint16_t me =
        mp_log_threshold >= MP_LOG_DEBUG && c->n.io.fd >= 0 ? mp_sock_local_port(c->n.io.fd) : 0;
    if (me)
        mp_debug("conn %s: connected upstream port %u%s from local port %u", a->peer, c->n.port,
                 c->role == ROLE_RESOLVER ? " (endpoint mapper)" : "", me);
    if (c->role == ROLE_RESOLVER) {
        dce_resolver_start(a);
    } else {
        a->state = A_WAIT_ACK;
        mp_buf_append(&c->n.out, mp_buf_head(&a->pending_bind), mp_buf_avail(&a->pending_bind));
        mp_buf_free(&a->pending_bind);
    }
}

static void conn_read(struct assoc *a, struct conn *c)
{
    ssize_t n = mp_conn_read(&c->n, a->r->rbuf, sizeof(a->r->rbuf));
    if (n < 0 && errno == EAGAIN)
        return;
    if (n < 0 && errno == ENOMEM) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    if (n <= 0) {
        const char *why = n == 0 ? "closed the connection" : strerror(errno);
        if (c->role == ROLE_CLIENT) {
            if (mp_buf_avail(&c->n.in))
                mp_warn("conn %s: client closed in the middle of a PDU (%zu bytes pending)",
                        a->peer, mp_buf_avail(&c->n.in));
            dce_assoc_close(a, n == 0 ? "client closed" : "client read error");
        } else {
            char what[128];
            snprintf(what, sizeof(what), "%s%s", c->role == ROLE_RESOLVER ? "endpoint mapper " : "",
                     why);
            dce_upstream_failed(a, what);
        }
        return;
    }
    if (c->role == ROLE_CLIENT)
        dce_client_input(a);
    else if (c->role == ROLE_UPSTREAM)
        upstream_input(a);
    else
        dce_resolver_input(a);
    /* keep only what is left (a partial PDU), in memory of its own; a
     * closed connection let go of its input already */
    if (!a->dead && mp_conn_keep(&c->n))
        dce_assoc_close(a, "out of memory");
}

static void conn_cb(struct mp_conn *n, uint32_t ev)
{
    struct conn *c = n->data;
    struct assoc *a = c->a;
    if (a->dead)
        return;
    if (n->connecting) {
        int rc = mp_conn_connected(n, ev);
        if (rc < 0) {
            char why[400];
            snprintf(why, sizeof(why), "%s port %u%s: connect failed: %s", a->r->cfg->binding.host,
                     n->port, c->role == ROLE_RESOLVER ? " (endpoint mapper)" : "",
                     strerror(errno));
            if (c->role == ROLE_UPSTREAM)
                dce_port_forget(a->r, &a->target); /* the server may have moved: ask again */
            dce_upstream_failed(a, why);
            return;
        }
        if (rc > 0)
            return;
        on_connected(a, c);
    }
    if (ev & (MP_READ | MP_ERRHUP | MP_RDHUP))
        conn_read(a, c);
    if (!a->dead) {
        dce_conn_flush(a, &a->c);
        if (!a->dead)
            dce_conn_flush(a, &a->u);
        if (!a->dead)
            dce_conn_flush(a, &a->res);
    }
    dce_update_interest(a);
}

/* An association with its timers, in the transport's list; its client
 * connection is not set up yet.  NULL when out of memory. */
static struct assoc *assoc_new(struct mp_relay *r, const char *peer, bool epm)
{
    struct assoc *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->r = r;
    a->merges_tail = &a->merges;
    a->next_u_call = 1;
    a->local_epm = epm;
    a->t_open = mp_now_ms();
    a->stall.cb = stall_cb;
    a->stall.data = a;
    a->idle.cb = idle_cb;
    a->idle.data = a;
    if (r->cfg->idle_timeout_s)
        mp_timer_arm(r->loop, &a->idle, (uint64_t)r->cfg->idle_timeout_s * 1000);
    a->bindt.cb = bind_timeout_cb;
    a->bindt.data = a;
    a->kick.cb = kick_cb;
    a->kick.data = a;
    if (r->cfg->bind_timeout_s)
        mp_timer_arm(r->loop, &a->bindt, (uint64_t)r->cfg->bind_timeout_s * 1000);
    snprintf(a->peer, sizeof(a->peer), "%s", peer);
    struct conn *cs[3] = {&a->c, &a->u, &a->res};
    for (int k = 0; k < 3; k++) {
        cs[k]->a = a;
        mp_conn_init(&cs[k]->n, r->loop, conn_cb, cs[k]);
    }
    a->c.role = ROLE_CLIENT;
    a->next = r->assocs;
    if (r->assocs)
        r->assocs->prev = a;
    r->assocs = a;
    r->n_assoc++;
    __atomic_add_fetch(&n_open_all, 1, __ATOMIC_RELAXED);
    mp_info("conn open %s -> %s", peer, epm ? "epmapper" : "rpc");
    mp_metrics_open(epm ? "epmapper" : "rpc", 1);
    return a;
}

/* The per-address count (mapiproxy:max connections per address); NULL and
 * a log line when the address is over it. */
static struct addr_count *addr_take_logged(struct mp_relay *r, const uint8_t ip[16],
                                           const char *peer, const char *host)
{
    struct addr_count *ac = dce_addr_take(r, ip);
    if (!ac)
        mp_warn("conn %s refused: %u connections open from %s (mapiproxy:max connections per "
                "address)",
                peer, r->cfg->max_conn_per_addr, host);
    return ac;
}

/* cap: the packet export of a connection handed over by another worker
 * (taken, whatever happens), NULL: a new one if this client is chosen. */
static struct assoc *accept_fd(struct listener *l, int fd, const char *host, uint16_t port,
                               struct mp_pcap *cap)
{
    struct mp_relay *r = l->r;
    char peer[64];
    snprintf(peer, sizeof(peer), "%s:%u", host, port);
    size_t open_all = __atomic_load_n(&n_open_all, __ATOMIC_RELAXED);
    if (open_all >= r->cfg->max_connections) {
        mp_warn("conn %s refused: %zu connections open (mapiproxy:max connections)", peer,
                open_all);
        close(fd);
        mp_pcap_end(cap);
        return NULL;
    }
    uint8_t ip[16] = {0};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) {
        memcpy(ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    } else if (ss.ss_family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    }
    struct addr_count *ac = addr_take_logged(r, ip, peer, host);
    if (!ac) {
        close(fd);
        mp_pcap_end(cap);
        return NULL;
    }
    struct assoc *a = assoc_new(r, peer, l->epm);
    if (!a) {
        dce_addr_release(r, ac);
        close(fd);
        mp_pcap_end(cap);
        return NULL;
    }
    a->addr = ac;
    if (counts_for_load(a)) {
        a->load_w = mp_worker_self() + 1;
        __atomic_add_fetch(&n_open_w[mp_worker_self()], 1, __ATOMIC_RELAXED);
    }
    mp_conn_attach(&a->c.n, fd);
    /* decrypted export, doc/operations.md: one file per client connection,
     * so one handed over keeps its own */
    a->cap = cap ? cap : mp_pcap_start(host, port, "rpc");
    struct sockaddr_storage me;
    socklen_t ml = sizeof(me);
    if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && me.ss_family == AF_INET)
        a->local_ip = ((struct sockaddr_in *)&me)->sin_addr.s_addr;
    return a;
}

void dce_assoc_accept(void *data, int fd, const char *host, uint16_t port)
{
    struct assoc *a = accept_fd(data, fd, host, port, NULL);
    if (a)
        dce_update_interest(a);
}

/* A connection another worker accepted and read the first bind of, which
 * names an association group of this worker (doc/internals/workers.md):
 * bytes are what that worker had read. */
void dce_assoc_adopt_bytes(struct listener *l, int fd, const char *host, uint16_t port,
                           const void *bytes, size_t len, struct mp_pcap *cap)
{
    struct assoc *a = accept_fd(l, fd, host, port, cap);
    if (!a)
        return;
    a->steered = true;
    if (mp_buf_append(&a->c.n.in, bytes, len)) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    dce_client_input(a);
    if (!a->dead) {
        dce_conn_flush(a, &a->c);
        if (!a->dead)
            dce_conn_flush(a, &a->u);
    }
    if (!a->dead && mp_conn_keep(&a->c.n)) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    dce_update_interest(a);
}

/* The first PDU is a bind naming an association group another worker
 * owns: that worker gets the connection (a duplicate of its descriptor)
 * and what was read of it; this association ends here, before anything
 * went upstream.  Returns true when the connection was handed over. */
static bool hand_over(struct assoc *a, const uint8_t *p, const struct mp_pdu_hdr *h)
{
    if (a->steered || a->carrier || a->local_epm || mp_workers_count() < 2 ||
        h->frag_len < MP_BIND_ASSOC_GROUP_OFF + 4)
        return false;
    uint32_t id = mp_bind_assoc_group(p);
    unsigned to = mp_worker_of_group(id), me = mp_worker_self();
    bool spread = false;
    if (!id) { /* a new group: to the least busy worker if this one has 2 more */
        size_t mine = __atomic_load_n(&n_open_w[me], __ATOMIC_RELAXED), least = mine;
        for (unsigned i = 0; i < mp_workers_count(); i++) {
            size_t n = __atomic_load_n(&n_open_w[i], __ATOMIC_RELAXED);
            if (n < least) {
                least = n;
                to = i;
            }
        }
        spread = mine >= least + 2;
    }
    if ((!id && !spread) || to == me)
        return false;
    const char *colon = strrchr(a->peer, ':');
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(colon ? colon - a->peer : (long)strlen(a->peer)),
             a->peer);
    uint16_t port = colon ? (uint16_t)atoi(colon + 1) : 0;
    int fd = fcntl(a->c.n.io.fd, F_DUPFD_CLOEXEC, 0);
    struct handover *ho = fd < 0 ? NULL
                                 : dce_handover_new(fd, host, port, mp_buf_head(&a->c.n.in),
                                                    mp_buf_avail(&a->c.n.in), a->cap);
    if (!ho) {
        if (fd >= 0)
            close(fd);
        return false; /* served here: the group is not found, a new one is made */
    }
    a->cap = NULL; /* its packet export goes along (nothing was tapped yet: the bind is next) */
    if (spread)
        mp_debug("conn %s: a new association group; handed to worker %u, less busy", a->peer, to);
    else
        mp_debug("conn %s: bind names association group 0x%08x of worker %u; handed over", a->peer,
                 id, to);
    /* counted on its new worker at once (dce_handover_post takes it back
     * when the adoption ran): the next bind here sees it gone already */
    dce_load_adjust(to, 1);
    /* closed (its address count released) before the owner counts it again */
    dce_assoc_close(a, spread ? "handed to a less busy worker" : "handed to its group's worker");
    dce_handover_post(to, ho);
    return true;
}

/* ---- other carriers (transport/dcerpc/carrier.h) ---- */

struct assoc *mp_dce_assoc_open(struct mp_relay *r, const struct mp_dce_carrier_ops *ops,
                                void *carrier, const char *peer, const char *host, bool epm)
{
    if (!r->n_ls) {
        mp_warn("conn %s refused: the relay is shutting down", peer);
        return NULL;
    }
    size_t open_all = __atomic_load_n(&n_open_all, __ATOMIC_RELAXED);
    if (open_all >= r->cfg->max_connections) {
        mp_warn("conn %s refused: %zu connections open (mapiproxy:max connections)", peer,
                open_all);
        return NULL;
    }
    struct addr_count *ac = NULL;
    if (host) {
        uint8_t ip[16] = {0};
        if (inet_pton(AF_INET6, host, ip) != 1 && inet_pton(AF_INET, host, ip + 12) == 1)
            ip[10] = ip[11] = 0xff;
        if (!(ac = addr_take_logged(r, ip, peer, host)))
            return NULL;
    }
    struct assoc *a = assoc_new(r, peer, epm);
    if (!a) {
        dce_addr_release(r, ac);
        return NULL;
    }
    a->addr = ac;
    a->carrier = ops;
    a->carrier_data = carrier;
    a->c.n.read_ms = a->c.n.write_ms = a->t_open;
    dce_update_interest(a);
    return a;
}

/* After input or writability: what conn_cb does after a read. */
static void carrier_after(struct assoc *a)
{
    if (!a->dead) {
        dce_conn_flush(a, &a->c);
        if (!a->dead)
            dce_conn_flush(a, &a->u);
    }
    dce_update_interest(a);
}

int mp_dce_assoc_input(struct assoc *a, const void *p, size_t len)
{
    if (a->dead)
        return -1;
    if (mp_buf_append(&a->c.n.in, p, len)) {
        dce_assoc_close(a, "out of memory");
        return -1;
    }
    a->c.n.read_ms = mp_now_ms();
    dce_client_input(a);
    carrier_after(a);
    if (!a->dead)
        mp_buf_trim(&a->c.n.in);
    return a->dead ? -1 : 0;
}

void mp_dce_assoc_writable(struct assoc *a)
{
    a->c_blocked = false;
    carrier_after(a);
}

void mp_dce_assoc_close(struct assoc *a, const char *reason)
{
    a->carrier = NULL; /* the carrier is gone: not told */
    dce_assoc_close(a, reason);
}

/* ---- the upstream leg through a carrier (carrier.h, struct mp_dce_up_ops) ---- */

int mp_dce_up_input(struct assoc *a, const void *p, size_t len)
{
    if (a->dead || !a->up_ops)
        return -1;
    struct conn *c = &a->u;
    if (mp_buf_append(&c->n.in, p, len)) {
        dce_assoc_close(a, "out of memory");
        return -1;
    }
    c->n.read_ms = mp_now_ms();
    upstream_input(a);
    carrier_after(a);
    if (a->dead || !a->up_ops)
        return -1;
    mp_buf_trim(&c->n.in);
    return 0;
}

void mp_dce_up_writable(struct assoc *a)
{
    a->up_blocked = false;
    carrier_after(a);
}

void mp_dce_up_failed(struct assoc *a, const char *why)
{
    if (a->dead || !a->up_ops)
        return;
    a->up_ops = NULL; /* the carrier is gone: not told */
    a->up_data = NULL;
    /* on the next loop turn (or at the flush that asked the carrier):
     * whoever called the carrier may be inside the association's client
     * carrier, which the failure may close */
    snprintf(a->up_why, sizeof a->up_why, "%s", why && why[0] ? why : "carrier failed");
    if (!a->kick.heap_idx)
        mp_timer_arm(a->r->loop, &a->kick, 0);
}
