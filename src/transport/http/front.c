/* The HTTPS front (doc/internals/http.md): listeners, connections, their
 * two legs, the pump and the timers.
 *
 * A connection is one client connection and, from its first relayed
 * request on, its own upstream connection (never shared: NTLM and
 * Negotiate bind their state to the connection).  Requests on a connection
 * are handled one at a time: the request parser pauses when a request is
 * complete and resumes when its response is complete.  Bodies stream both
 * ways as they arrive; only Autodiscover answers are buffered (bounded) to
 * rewrite the names in them.  Every step is non-blocking: pump() moves
 * bytes until nothing moves, then the wanted epoll events and the one
 * timer are set from the state.  What the bytes mean is exchange.c's. */
#include <arpa/inet.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/workers.h"
#include "net/accept.h"
#include "net/tls.h"
#include "ops/metrics.h"
#include "ops/pcapng.h"
#include "transport/http/hconn.h"
#include "transport/http/hmove.h"

static void conn_cb(struct mp_conn *c, uint32_t ev);

void mp_hf_side_close(struct leg *x)
{
    mp_conn_close(&x->conn);
    x->eof = true;
}

void mp_hf_upstream_clock_start(struct hconn *s)
{
    if (!s->u.conn.connecting && !mp_conn_tls_handshaking(&s->u.conn))
        s->upstream_dl = mp_now_ms() + (uint64_t)s->h->cfg->http_upstream_timeout_s * 1000;
}

/* This worker's fronts, newest first (every worker runs one: workers.md). */
static _Thread_local struct mp_http *fronts;
/* Front connections open in the process, every worker and generation: what
 * mapiproxy:max connections limits for the HTTPS front (accepted here, or
 * adopted from another worker: doc/internals/workers.md). */
static size_t n_http_all;

struct mp_http *mp_hf_newest(void)
{
    return fronts;
}

struct mp_http *mp_hf_session_front(struct hconn *s)
{
    if (s->h->mods && mp_mh_has_session(&s->h->cookies, &s->req))
        return s->h;
    for (struct mp_http *f = fronts; f; f = f->gen_next)
        if (f != s->h && f->mods && mp_mh_has_session(&f->cookies, &s->req))
            return f;
    return s->h;
}

void mp_hf_upstream_failed(struct hconn *s, int st, const char *why)
{
    mp_mhb_end(s);
    mp_warn("http #%" PRIu64 " %s upstream %s: %s", s->id, s->peer, s->h->up_hostport, why);
    mp_hf_side_close(&s->u);
    if (s->in_request && !s->resp_started) {
        mp_hx_send_local(s, st, true);
        mp_hx_log_request(s);
        s->in_request = false;
    } else {
        mp_hf_close(s, "upstream closed");
    }
}

/* ------------------------------------------------------------------ */
/* upstream connection                                                 */

int mp_hf_upstream_start(struct hconn *s)
{
    struct mp_http *h = s->h;
    if (mp_conn_connect(&s->u.conn, &h->up_addr, h->up_addr_len, h->cfg->http_upstream.port))
        return -1;
    s->u.eof = false;
    s->upstream_dl = mp_now_ms() + h->cfg->connect_timeout_ms;
    mp_debug("http #%" PRIu64 " %s: connecting to upstream %s", s->id, s->peer, h->up_hostport);
    return 0;
}

/* The TCP connect finished (or not yet): check it, start TLS. */
static void upstream_connected(struct hconn *s, uint32_t ev)
{
    struct mp_http *h = s->h;
    int rc = mp_conn_connected(&s->u.conn, ev);
    if (rc > 0)
        return;
    if (rc < 0) {
        char why[160];
        snprintf(why, sizeof why, "connect failed: %s", strerror(errno));
        mp_hf_upstream_failed(s, 502, why);
        return;
    }
    if (!h->cfg->http_upstream.tls) {
        s->upstream_dl = mp_now_ms() + (uint64_t)h->cfg->http_upstream_timeout_s * 1000;
        return;
    }
    const char *why = NULL;
    if (mp_conn_tls_connect(&s->u.conn, h->client_ctx, h->cfg->http_upstream.host,
                            h->cfg->tls_verify, &why))
        mp_hf_upstream_failed(s, 502, why);
}

/* ------------------------------------------------------------------ */
/* moving bytes                                                        */

static bool may_read(struct hconn *s, struct leg *x)
{
    uint32_t maxb = s->h->cfg->max_buffer;
    const struct mp_conn *c = &x->conn;
    if (!mp_conn_is_open(c) || x->eof || c->connecting || mp_conn_tls_handshaking(c))
        return false;
    if (x->client)
        return !s->closing && mp_buf_avail(&c->in) < MAX_PARKED &&
               mp_buf_avail(&s->u.conn.out) < maxb;
    return mp_buf_avail(&s->c.conn.out) < maxb;
}

/* After a read was parsed: what is left of it (a partial message, a
 * request read ahead) into the leg's own memory, and none kept when all
 * was used. */
static void keep(struct hconn *s, struct leg *x)
{
    if (!s->dead && mp_conn_keep(&x->conn))
        mp_hf_close(s, "out of memory");
}

/* Reads once from leg x, and what OpenSSL already holds beyond that (the
 * loop is level-triggered: bytes left in the kernel bring the next event),
 * then parses.  Returns true when something moved. */
static bool read_leg(struct hconn *s, struct leg *x)
{
    struct mp_http *h = s->h;
    struct mp_conn *c = &x->conn;
    /* the scratch is lent to one read at a time (a parse that ends up
     * reading another connection reads into memory of its own) */
    bool lend = !h->scratch_busy;
    bool got = false;
    h->scratch_busy = true;
    do {
        ssize_t n = mp_conn_read(c, lend ? h->scratch : NULL, sizeof h->scratch);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0 && errno == ENOMEM) {
            mp_hf_close(s, "out of memory");
            h->scratch_busy = !lend;
            return true;
        }
        if (n <= 0) {
            x->eof = true;
            if (x->client) {
                mp_hf_close(s, s->in_request ? "client closed in a request" : "client closed");
            } else {
                if (got)
                    mp_hx_parse_upstream(s, false);
                if (!s->dead)
                    mp_hx_parse_upstream(s, true);
                keep(s, x);
            }
            h->scratch_busy = !lend;
            return true;
        }
        got = true;
    } while (mp_conn_tls_pending(c) && may_read(s, x));
    if (got) {
        if (x->client)
            mp_hx_parse_client(s);
        else
            mp_hx_parse_upstream(s, false);
        keep(s, x);
    }
    h->scratch_busy = !lend;
    return got;
}

/* Writes what is queued for leg x until it is out or the kernel pushes
 * back; after a push-back nothing is tried until the loop reports the leg
 * again (no write-then-EAGAIN loops).  Returns true when something moved. */
static bool write_leg(struct hconn *s, struct leg *x)
{
    struct mp_buf *ob = mp_hu_wbuf(s, x);
    if (!mp_buf_avail(ob) || x->eof || x->conn.wblocked)
        return false;
    ssize_t n = mp_conn_write_buf(&x->conn, ob);
    if (n < 0) {
        x->eof = true;
        if (x->client)
            mp_hf_close(s, "client write failed");
        else
            mp_hf_upstream_failed(s, 502, "write failed");
        return true;
    }
    if (n == 0)
        return false;
    x->out_since = mp_now_ms();
    return true;
}

/* One leg's share of the work: with ev (the loop's events for it) the TLS
 * handshake and one read; always what is queued for it is written and, on
 * the client leg, what was read and not parsed yet (a paused request
 * parser resumes from here) is parsed. */
static bool step(struct hconn *s, struct leg *x, uint32_t ev)
{
    struct mp_http *h = s->h;
    struct mp_conn *c = &x->conn;
    bool moved = false;
    if (!mp_conn_is_open(c) || c->connecting)
        return false;
    if (mp_conn_tls_handshaking(c)) {
        if (!ev)
            return false; /* only when the loop says the leg is ready */
        char why[200];
        int r = mp_conn_tls_handshake(c, why, sizeof why);
        if (r < 0) {
            if (x->client && !mp_tls_heard(&c->tls)) {
                /* connected and left without a byte: a port probe or health check */
                mp_hf_close(s, "closed before TLS");
            } else if (x->client) {
                mp_info("http #%" PRIu64 " %s: TLS handshake failed: %s", s->id, s->peer, why);
                mp_hf_close(s, "TLS handshake failed");
            } else {
                mp_hf_upstream_failed(s, 502, why);
            }
            return true;
        }
        if (r == 0)
            return false;
        char tv[96];
        mp_tls_describe(&c->tls, tv, sizeof tv);
        if (x->client) {
            mp_debug("http #%" PRIu64 " %s: %s", s->id, s->peer, tv);
        } else {
            mp_debug("http #%" PRIu64 " %s: upstream %s %s", s->id, s->peer, tv,
                     h->cfg->tls_verify ? "verified" : "NOT verified");
            s->upstream_dl = mp_now_ms() + (uint64_t)h->cfg->http_upstream_timeout_s * 1000;
        }
        moved = true;
    }
    moved |= write_leg(s, x);
    if (s->dead || x->eof)
        return true;
    if (x->client && mp_buf_avail(&c->in)) {
        moved |= mp_hx_parse_client(s);
        keep(s, x);
    }
    /* bytes OpenSSL holds bring no event: they are read when reading may
     * go on again (backpressure eased, a paused parser resumed) */
    bool rd = (ev & (MP_READ | MP_ERRHUP)) || ((ev & MP_WRITE) && c->tls.rd_wants_write) ||
              mp_conn_tls_pending(c);
    if (!s->dead && rd && may_read(s, x))
        moved |= read_leg(s, x);
    return moved;
}

static void timer_cb(struct mp_timer *t);

/* When a peer that is not reading what we queue for it is given up. */
static uint64_t send_deadline(struct hconn *s, struct leg *x)
{
    const struct mp_conn *c = &x->conn;
    if (!mp_conn_is_open(c) || c->connecting || mp_conn_tls_handshaking(c) ||
        !mp_buf_avail(mp_hu_wbuf(s, x)) || !x->out_since)
        return 0;
    return x->out_since + (uint64_t)s->h->cfg->send_timeout_s * 1000;
}

/* Does the upstream owe us something now?  While the client still sends
 * its body, only a connect, a TLS handshake or the proxy's NTLM logon is
 * timed by http upstream timeout (the body has its own clock). */
bool mp_hf_upstream_clock(struct hconn *s)
{
    return s->req_complete || s->u.conn.connecting || mp_conn_tls_handshaking(&s->u.conn) ||
           mp_hu_busy(s) || s->status;
}

/* Lingering close (RFC 9112 section 9.6).  Closing a socket with the
 * client's bytes unread makes the kernel answer them with a reset, which
 * can destroy our last answer (a 413 for a body over mapiproxy:http max
 * body, a 400) before the client reads it; a client still writing that
 * body gets a write error (EPIPE, an SSL EOF) instead of the answer.  So,
 * after such an answer is out: TLS close_notify, our side shut for writing
 * (the client reads the answer and EOF), and what the client still sends is
 * read and dropped until it closes, for at most LINGER_MS and LINGER_MAX
 * bytes.  Nothing else is held meanwhile (upstream, held bodies). */
#define LINGER_MS 5000
#define LINGER_MAX (16u << 20)

static void linger_start(struct hconn *s)
{
    struct mp_http *h = s->h;
    mp_mhb_end(s);
    mp_conn_tls_end(&s->c.conn); /* close_notify, then plain reads */
    if (shutdown(s->c.conn.io.fd, SHUT_WR) < 0) {
        mp_hf_close(s, "done");
        return;
    }
    s->linger_dl = mp_now_ms() + LINGER_MS;
    mp_io_set(h->loop, &s->c.conn.io, MP_READ);
    mp_timer_arm(h->loop, &s->timer, LINGER_MS);
}

static void linger_read(struct hconn *s)
{
    char buf[16384];
    for (;;) {
        ssize_t n = read(s->c.conn.io.fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) { /* the client closed too (or the connection broke) */
            mp_hf_close(s, "done");
            return;
        }
        s->linger_bytes += (uint64_t)n;
        if (s->linger_bytes > LINGER_MAX) {
            mp_hf_close(s, "still sending after its answer");
            return;
        }
    }
}

static void settle(struct hconn *s)
{
    struct mp_http *h = s->h;
    if (s->dead || s->linger_dl)
        return;
    if (s->closing && !mp_buf_avail(&s->c.conn.out)) {
        if (s->linger && s->c.conn.io.fd >= 0 && !s->c.eof)
            linger_start(s);
        else
            mp_hf_close(s, "done");
        return;
    }
    uint64_t now = mp_now_ms(), dl = 0;
    struct leg *sides[2] = {&s->c, &s->u};
    for (int i = 0; i < 2; i++) {
        struct leg *x = sides[i];
        bool out = mp_buf_avail(mp_hu_wbuf(s, x)) > 0;
        mp_conn_want_rw(&x->conn, may_read(s, x), out);
        if (!out) /* the send clock runs while bytes wait */
            x->out_since = 0;
        else if (!x->out_since)
            x->out_since = now;
    }
    bool up_clock = mp_hf_upstream_clock(s);
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

void mp_hf_pump(struct hconn *s)
{
    bool nested = s->pumping;
    s->pumping = true;
    for (int i = 0; i < 64 && !s->dead; i++) {
        bool a = step(s, &s->c, 0);
        bool b = !s->dead && step(s, &s->u, 0);
        if (!a && !b)
            break;
    }
    s->pumping = nested;
    settle(s);
}

static void conn_cb(struct mp_conn *c, uint32_t ev)
{
    struct leg *x = c->data;
    struct hconn *s = x->s;
    if (s->dead)
        return;
    if (s->linger_dl) {
        if (x->client)
            linger_read(s);
        return;
    }
    if (c->connecting && (ev & (MP_WRITE | MP_ERRHUP)))
        upstream_connected(s, ev);
    if (s->dead)
        return;
    /* only the leg the loop reported is read; then what that produced
     * for the other leg is written (mp_hf_pump reads nothing) */
    bool nested = s->pumping;
    s->pumping = true;
    step(s, x, ev);
    s->pumping = nested;
    if (!s->dead)
        mp_hf_pump(s);
}

/* The request body came slower than BODY_MIN_RATE: 408, and its upstream
 * connection is given up (it is never left to such a client). */
static void body_too_slow(struct hconn *s)
{
    mp_info("http #%" PRIu64 " %s: request body too slow (%" PRIu64 " bytes in %" PRIu64
            " ms; at least %u bytes/s after mapiproxy:http header timeout): 408, closed",
            s->id, s->peer, s->req_bytes, mp_now_ms() - s->body_t0, BODY_MIN_RATE);
    s->body_dl = 0;
    mp_mhb_end(s);
    mp_hf_side_close(&s->u);
    if (s->resp_started) {
        mp_hf_close(s, "request body too slow");
        return;
    }
    mp_hx_send_local(s, 408, true);
    mp_hx_log_request(s);
    s->in_request = false;
    s->c.out_since = mp_now_ms(); /* a client that does not read its 408 is not waited for */
}

static void timer_cb(struct mp_timer *t)
{
    struct hconn *s = t->data;
    struct mp_http *h = s->h;
    uint64_t now = mp_now_ms();
    if (s->dead)
        return;
    if (s->linger_dl) {
        if (now >= s->linger_dl)
            mp_hf_close(s, "done (the client did not close)");
        else
            mp_timer_arm(h->loop, &s->timer, s->linger_dl - now);
        return;
    }
    if (s->header_dl && now >= s->header_dl) {
        mp_info("http #%" PRIu64 " %s: request head not complete after %u s (mapiproxy:http "
                "header timeout): closed",
                s->id, s->peer, h->cfg->http_header_timeout_s);
        s->header_dl = 0;
        if (mp_conn_tls_handshaking(&s->c.conn)) {
            mp_hf_close(s, "header timeout in the TLS handshake");
            return;
        }
        if (!s->resp_started)
            mp_hx_send_local(s, 408, true);
        s->in_request = false;
        s->closing = true;
        /* a client that does not read its 408 is not waited for */
        s->c.out_since = now;
    } else if (!s->in_request && s->idle_dl && now >= s->idle_dl) {
        mp_debug("http #%" PRIu64 " %s: idle for %u s: closed", s->id, s->peer,
                 h->cfg->http_idle_timeout_s);
        mp_hf_close(s, "idle");
        return;
    } else if (s->in_request && !s->req_complete && s->body_dl && now >= s->body_dl) {
        if (mp_buf_avail(&s->u.conn.out) >= h->cfg->max_buffer) { /* we stopped reading it */
            s->body_t0 = now - s->req_bytes * 1000 / BODY_MIN_RATE;
            mp_hx_body_deadline(s);
        } else {
            body_too_slow(s);
            if (s->dead)
                return;
        }
    } else if (s->in_request && s->forwarded && s->upstream_dl && now >= s->upstream_dl &&
               mp_hf_upstream_clock(s)) {
        mp_hf_upstream_failed(s, 504,
                              s->u.conn.connecting || mp_conn_tls_handshaking(&s->u.conn)
                                  ? "connect timed out (mapiproxy:connect timeout)"
                                  : "no answer in time (mapiproxy:http upstream timeout)");
    } else if (send_deadline(s, &s->c) && now >= send_deadline(s, &s->c)) {
        mp_hf_close(s, "client does not read (mapiproxy:send timeout)");
        return;
    } else if (send_deadline(s, &s->u) && now >= send_deadline(s, &s->u)) {
        mp_hf_upstream_failed(s, 504, "does not read (mapiproxy:send timeout)");
    }
    if (!s->dead)
        mp_hf_pump(s);
}

/* ------------------------------------------------------------------ */
/* sessions                                                            */

static void conn_free(void *p)
{
    struct hconn *s = p;
    mp_http_msg_free(&s->req);
    mp_http_msg_free(&s->resp);
    mp_buf_free(&s->ad.body);
    mp_hu_free(&s->ua);
    free(s);
}

void mp_hf_close(struct hconn *s, const char *why)
{
    struct mp_http *h = s->h;
    if (s->dead)
        return;
    s->dead = true;
    mp_mhb_end(s);
    mp_pcap_end(s->cap);
    if (s->in_request && s->status == 0 && s->method[0]) {
        s->status = 0;
        mp_hx_log_request(s);
    }
    mp_debug("http #%" PRIu64 " %s: closed (%s)", s->id, s->peer, why);
    mp_timer_cancel(h->loop, &s->timer);
    mp_hf_side_close(&s->c);
    mp_hf_side_close(&s->u);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->conns = s->next;
    if (s->next)
        s->next->prev = s->prev;
    h->n_conn--;
    __atomic_sub_fetch(&n_http_all, 1, __ATOMIC_RELAXED);
    mp_metrics_open("http", -1);
    if (mp_loop_defer(h->loop, conn_free, s))
        conn_free(s); /* nothing else of this batch can point to it then */
}

/* The packet export's tap on both legs (ops/pcapng.h). */
static void tap(void *arg, const struct mp_conn *c, bool in, const void *p, size_t n)
{
    const struct leg *x = arg;
    mp_pcap_tap(x->s->cap, c->io.fd, x->client, in, p, n);
}

/* A client connection on h: accepted (tls NULL: the TLS handshake starts
 * here), or moved from another worker with its TLS state and its packet
 * export (cap; hmove.c).  NULL when memory runs out (fd closed, tls and cap
 * freed). */
static struct hconn *conn_new(struct mp_http *h, int fd, struct mp_tls *tls, const char *host,
                              uint16_t port, struct mp_pcap *cap)
{
    struct hconn *s = calloc(1, sizeof *s);
    if (!s) {
        if (tls)
            mp_tls_free(tls, false);
        close(fd);
        mp_pcap_end(cap);
        return NULL;
    }
    s->c.s = s->u.s = s;
    s->c.client = true;
    mp_conn_init(&s->c.conn, h->loop, conn_cb, &s->c);
    mp_conn_init(&s->u.conn, h->loop, conn_cb, &s->u);
    s->c.conn.hup_unwatched = s->u.conn.hup_unwatched = true;
    mp_conn_attach(&s->c.conn, fd);
    if (tls) {
        mp_conn_use_tls(&s->c.conn, tls);
    } else if (h->server_ctx && mp_conn_tls_accept(&s->c.conn, h->server_ctx)) {
        mp_conn_close(&s->c.conn);
        free(s);
        mp_pcap_end(cap);
        return NULL;
    }
    s->h = h;
    s->id = ++h->next_id;
    snprintf(s->peer, sizeof s->peer, "%s:%u", host, port);
    /* decrypted export, doc/operations.md: one file per client connection,
     * so a moved one keeps its own */
    s->cap = cap ? cap : mp_pcap_start(host, port, "http");
    if (s->cap) {
        s->c.conn.tap = s->u.conn.tap = tap;
        s->c.conn.tap_arg = &s->c;
        s->u.conn.tap_arg = &s->u;
    }
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
    s->next = h->conns;
    if (h->conns)
        h->conns->prev = s;
    h->conns = s;
    h->n_conn++;
    __atomic_add_fetch(&n_http_all, 1, __ATOMIC_RELAXED);
    mp_metrics_open("http", 1);
    return s;
}

size_t mp_hf_full(const struct mp_http *h)
{
    size_t open = __atomic_load_n(&n_http_all, __ATOMIC_RELAXED);
    return open >= h->cfg->max_connections ? open : 0;
}

struct hconn *mp_hf_adopt(struct mp_http *h, int fd, struct mp_tls *tls, const char *host,
                          uint16_t port, struct mp_pcap *cap)
{
    return conn_new(h, fd, tls, host, port, cap);
}

static void accept_one(void *data, int fd, const char *host, uint16_t port)
{
    struct listener *l = data;
    struct mp_http *h = l->h;
    size_t open = mp_hf_full(h);
    if (open) {
        mp_warn("http %s:%u refused: %zu connections open (mapiproxy:max connections) on worker %u",
                host, port, open, mp_worker_self());
        close(fd);
        return;
    }
    struct hconn *s = conn_new(h, fd, NULL, host, port, NULL);
    if (!s)
        return;
    char wk[24] = "";
    if (mp_workers_count() > 1)
        snprintf(wk, sizeof wk, " on worker %u", mp_worker_self());
    mp_info("http #%" PRIu64 " open %s%s%s", s->id, s->peer, s->c.conn.tls.ssl ? " (TLS)" : "", wk);
    mp_hf_pump(s);
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

static int setup_tls(struct mp_http *h)
{
    const struct mp_config *cfg = h->cfg;
    if (!cfg->http_plain &&
        !(h->server_ctx = mp_tls_server_ctx(cfg->tls_certificate, cfg->tls_key)))
        return -1;
    if (cfg->http_upstream.tls &&
        !(h->client_ctx = mp_tls_client_ctx(cfg->tls_verify, cfg->tls_ca_file)))
        return -1;
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
    static pthread_once_t settings_once = PTHREAD_ONCE_INIT;
    pthread_once(&settings_once, mp_hx_init);
    struct mp_http *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->cfg = cfg;
    h->cookies.aff_max = cfg->affinity_max;
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
    h->names.relayed = mp_hx_url_path_relayed;
    h->names.relayed_arg = &h->routes;
    h->names.drop_unrelayed = cfg->http_drop_unrelayed;
    if (mp_http_routes_init(&h->routes, cfg) || mp_hauth_init(&h->auth, cfg) || mp_hun_init(h) ||
        setup_tls(h) || resolve_upstream(h)) {
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
    if ((h->gen_next = fronts))
        fronts->gen_prevp = &h->gen_next;
    h->gen_prevp = &fronts;
    fronts = h;
    mp_hm_front_added(cfg);
    return h;
}

void mp_http_set_modules(struct mp_http *h, struct mp_modules *mods)
{
    h->mods = mods;
}

void mp_http_stop_listening(struct mp_http *h)
{
    for (size_t i = 0; h && i < h->n_ls; i++) {
        mp_accept_forget(&h->ls[i].io);
        mp_io_close(h->loop, &h->ls[i].io);
    }
    if (h)
        h->n_ls = 0;
}

size_t mp_http_live(const struct mp_http *h)
{
    return h ? h->n_conn : 0;
}

size_t mp_http_sessions(struct mp_http *h)
{
    return h ? mp_mh_sessions_sweep(&h->cookies) + h->lent : 0;
}

void mp_http_share_owners(struct mp_http *h, struct mp_http *prev)
{
    if (h && prev)
        mp_mh_cookies_share_owners(&h->cookies, &prev->cookies);
}

void mp_http_free(struct mp_http *h)
{
    if (!h)
        return;
    while (h->conns)
        mp_hf_close(h->conns, "shutdown");
    mp_mh_cookies_free(&h->cookies);
    if (h->gen_prevp && (*h->gen_prevp = h->gen_next))
        h->gen_next->gen_prevp = h->gen_prevp;
    mp_http_stop_listening(h);
    mp_tls_ctx_free(h->server_ctx);
    mp_tls_ctx_free(h->client_ctx);
    mp_http_routes_free(&h->routes);
    mp_http_names_free(&h->names);
    mp_hun_free(h);
    mp_hauth_free(&h->auth);
    if (h->gen_prevp)
        mp_hm_front_gone();
    free(h);
}

int mp_http_add_handler(struct mp_http *h, const char *prefix, bool any_tail,
                        const char *ext_methods, mp_http_take_fn take, void *arg)
{
    return mp_http_routes_add_handler(&h->routes, prefix, any_tail, ext_methods, take, arg);
}

void mp_hf_hand_over(struct hconn *s)
{
    struct mp_http *h = s->h;
    const struct mp_http_route *r = s->route;
    struct mp_buf *in = &s->c.conn.in;
    if (!r->take) { /* another worker's route (hmove.c): not reached */
        s->in_request = false;
        mp_hf_close(s, "no handler on this worker");
        return;
    }
    /* paused in on_headers_complete, http-parser stops before the head's
     * last LF */
    if (mp_buf_avail(in) && mp_buf_head(in)[0] == '\n')
        mp_buf_consume(in, 1);
    struct mp_http_handover ho = {
        .peer = s->peer,
        .id = s->id,
        .method = s->method,
        .user = h->auth.on ? s->ua.ha.user : "",
        .www = h->auth.on ? s->ua.ha.mutual : "",
        .req = &s->req,
        .rest = mp_buf_head(in),
        .rest_len = mp_buf_avail(in),
        .keepalive = s->keepalive,
    };
    mp_conn_tls_release(&s->c.conn, &ho.tls);
    ho.fd = mp_conn_release(&s->c.conn); /* the buffers (rest) stay until the close below */
    s->in_request = false;
    mp_info("http #%" PRIu64 " %s %s %s: handed to its transport", s->id, s->peer, s->method,
            s->path);
    int rc = r->take(r->arg, &ho);
    mp_hf_close(s, rc ? "refused by its handler" : "handed over");
}
