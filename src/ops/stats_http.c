/* The metrics endpoint (doc/monitoring.md): a small HTTP/1.1 server on the
 * event loop.  A request head of at most 2 KiB within 5 s, one answer, then
 * the connection closes; at most 16 connections at once. */
#include "ops/stats_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "net/accept.h"
#include "ops/metrics.h"

#define MAX_CONNS 16
#define HEAD_MAX 2048
#define TIMEOUT_MS 5000

struct sconn {
    struct mp_stats_http *s;
    struct mp_io io;
    struct mp_timer timer;
    char in[HEAD_MAX];
    size_t n;
    struct mp_buf out;
    bool in_use, writing;
};

struct mp_stats_http {
    struct mp_loop *loop;
    struct mp_io ls;
    struct sconn c[MAX_CONNS];
};

static void conn_end(struct sconn *c)
{
    mp_timer_cancel(c->s->loop, &c->timer);
    mp_io_close(c->s->loop, &c->io);
    mp_buf_free(&c->out);
    c->in_use = false;
}

static void reply(struct sconn *c, int code, const char *reason, const char *type,
                  const struct mp_buf *body, bool head_only)
{
    char h[256];
    size_t bl = body ? mp_buf_avail(body) : 0;
    int n = snprintf(h, sizeof h,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     code, reason, type, bl);
    if (mp_buf_append(&c->out, h, (size_t)n) ||
        (bl && !head_only && mp_buf_append(&c->out, mp_buf_head(body), bl))) {
        conn_end(c);
        return;
    }
    c->writing = true;
    mp_io_set(c->s->loop, &c->io, MP_WRITE);
}

static void text(struct mp_buf *b, const char *t)
{
    mp_buf_append(b, t, strlen(t));
}

static void handle(struct sconn *c)
{
    char method[8] = "", target[128] = "";
    /* "METHOD SP TARGET SP HTTP/1.x" */
    if (sscanf(c->in, "%7[A-Z] %127[^ \r\n] HTTP/1.%*1[01]", method, target) != 2) {
        struct mp_buf b = {0};
        text(&b, "bad request\n");
        reply(c, 400, "Bad Request", "text/plain; charset=utf-8", &b, false);
        mp_buf_free(&b);
        return;
    }
    char *q = strchr(target, '?');
    if (q)
        *q = 0;
    bool head = !strcmp(method, "HEAD");
    struct mp_buf b = {0};
    if (strcmp(method, "GET") && !head) {
        text(&b, "only GET and HEAD\n");
        reply(c, 405, "Method Not Allowed", "text/plain; charset=utf-8", &b, head);
    } else if (!strcmp(target, "/metrics")) {
        if (mp_metrics_render(&b))
            conn_end(c);
        else
            reply(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", &b, head);
    } else if (!strcmp(target, "/health")) {
        bool ok = mp_metrics_healthy();
        text(&b, ok ? "ok\n" : "upstream failing\n");
        reply(c, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "text/plain; charset=utf-8", &b,
              head);
    } else {
        text(&b, "not found: try /metrics or /health\n");
        reply(c, 404, "Not Found", "text/plain; charset=utf-8", &b, head);
    }
    mp_buf_free(&b);
}

static void conn_cb(struct mp_io *io, uint32_t ev)
{
    struct sconn *c = io->data;
    if (c->writing) {
        ssize_t n = send(io->fd, mp_buf_head(&c->out), mp_buf_avail(&c->out), MSG_NOSIGNAL);
        if (n > 0)
            mp_buf_consume(&c->out, (size_t)n);
        if ((n < 0 && errno != EAGAIN && errno != EINTR) || !mp_buf_avail(&c->out))
            conn_end(c);
        return;
    }
    ssize_t n = recv(io->fd, c->in + c->n, sizeof c->in - 1 - c->n, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_end(c);
        return;
    }
    c->n += (size_t)n;
    c->in[c->n] = 0;
    if (strstr(c->in, "\r\n\r\n") || strstr(c->in, "\n\n"))
        handle(c);
    else if (c->n == sizeof c->in - 1) {
        mp_info("metrics: request head over %d bytes; closed", HEAD_MAX);
        conn_end(c);
    }
}

static void timer_cb(struct mp_timer *t)
{
    conn_end(t->data);
}

static void accept_one(void *data, int fd, const char *host, uint16_t port)
{
    struct mp_stats_http *s = data;
    for (size_t i = 0; i < MAX_CONNS; i++) {
        struct sconn *c = &s->c[i];
        if (c->in_use)
            continue;
        memset(c, 0, sizeof *c);
        c->s = s;
        c->in_use = true;
        c->io.fd = fd;
        c->io.cb = conn_cb;
        c->io.data = c;
        c->timer.cb = timer_cb;
        c->timer.data = c;
        mp_timer_arm(s->loop, &c->timer, TIMEOUT_MS);
        if (mp_io_set(s->loop, &c->io, MP_READ))
            conn_end(c);
        return;
    }
    mp_debug("metrics: %s:%u refused: %d scrapes in progress", host, port, MAX_CONNS);
    close(fd);
}

static void accept_cb(struct mp_io *io, uint32_t ev)
{
    struct mp_stats_http *s = io->data;
    mp_accept_ready(s->loop, io, "metrics", accept_one, s);
}

static struct mp_stats_http srv;

int mp_stats_http_start(struct mp_loop *loop, const char *host, uint16_t port)
{
    struct mp_stats_http *s = &srv;
    if (s->loop)
        return 0; /* started already */
    int fd = mp_listen_tcp(host, port, 64, "mapiproxy:metrics listen");
    if (fd < 0)
        return -1;
    s->loop = loop;
    s->ls.fd = fd;
    s->ls.cb = accept_cb;
    s->ls.data = s;
    if (mp_io_set(loop, &s->ls, MP_READ)) {
        mp_error("metrics: cannot watch the listener: %s", strerror(errno));
        close(fd);
        s->loop = NULL;
        return -1;
    }
    mp_info("metrics: listening on %s port %u (GET /metrics, GET /health)", host, port);
    return 0;
}
