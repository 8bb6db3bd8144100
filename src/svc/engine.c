/* The client engine for outside services (engine.h, doc/internals/svc.md). */
#include "svc/engine.h"

#ifdef MP_SVC_NO_LOOP
#include "svc/modshim.h"
void (*mp_svc_log_fn)(int level, const char *fmt, ...);
#else
#include "core/log.h"
#include "event/loop.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct job {
    struct mp_svc_conv *c;
    mp_svc_done_cb done;
    void *arg;
    uint64_t start_us;
    struct job *next;
};

struct conn {
    struct mp_svc *s;
    int fd;
    void *w, *t;
    struct job *job; /* NULL while idle */
    bool connecting, reused, begun;
    struct mp_buf in;
    struct conn *next; /* idle list */
};

struct mp_svc {
    struct mp_svc_loopif lif;
    struct mp_svc_config cfg;
    char *name;
    struct sockaddr_storage sa;
    socklen_t salen;
    struct conn *idle;
    struct job *qhead, *qtail;
    struct mp_svc_stats st;
};

static void conn_event(void *arg, int fd, unsigned ev);
static void pump(struct mp_svc *s);

static int resolve(struct mp_svc *s, const char *addr)
{
    memset(&s->sa, 0, sizeof s->sa);
    if (!strncmp(addr, "unix:", 5) || addr[0] == '/') {
        const char *path = addr[0] == '/' ? addr : addr + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&s->sa;
        if (strlen(path) >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        s->salen = sizeof *un;
        return 0;
    }
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') {
        h[strlen(h) - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai;
    if (getaddrinfo(h, colon + 1, &hints, &ai))
        return -1;
    memcpy(&s->sa, ai->ai_addr, ai->ai_addrlen);
    s->salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

struct mp_svc *mp_svc_new(const struct mp_svc_loopif *lif, const struct mp_svc_config *cfg)
{
    struct mp_svc *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->lif = *lif;
    s->cfg = *cfg;
    if (!s->cfg.connect_ms)
        s->cfg.connect_ms = 2000;
    if (!s->cfg.io_ms)
        s->cfg.io_ms = 30000;
    if (!s->cfg.max_conns)
        s->cfg.max_conns = 4;
    if (!s->cfg.max_idle)
        s->cfg.max_idle = s->cfg.max_conns;
    if (!s->cfg.max_queue)
        s->cfg.max_queue = 1000;
    s->name = strdup(cfg->name ? cfg->name : "svc");
    if (!s->name || !cfg->addr || resolve(s, cfg->addr)) {
        mp_error("svc %s: bad address %s", cfg->name ? cfg->name : "?",
                 cfg->addr ? cfg->addr : "(none)");
        free(s->name);
        free(s);
        return NULL;
    }
    s->cfg.name = s->name;
    s->cfg.addr = NULL;
    mp_info("svc %s: %u connections, fail %s when the service cannot answer", s->name,
            s->cfg.max_conns, s->cfg.fail_open ? "open" : "closed");
    return s;
}

static void conn_close(struct conn *k)
{
    struct mp_svc *s = k->s;
    if (k->t)
        s->lif.timer_cancel(s->lif.ctx, k->t);
    if (k->w)
        s->lif.cancel(s->lif.ctx, k->w);
    if (k->fd >= 0)
        close(k->fd);
    mp_buf_free(&k->in);
    free(k);
}

static void arm(struct conn *k, unsigned ms);

static void timer_fired(void *arg);

static void arm(struct conn *k, unsigned ms)
{
    struct mp_svc *s = k->s;
    if (k->t)
        s->lif.timer_cancel(s->lif.ctx, k->t);
    k->t = ms ? s->lif.timer(s->lif.ctx, ms, timer_fired, k) : NULL;
}

static void job_done(struct mp_svc *s, struct job *j)
{
    j->c->v.took_us = mp_now_us() - j->start_us;
    j->done(j->c, j->arg);
    mp_svc_conv_free(j->c);
    free(j);
}

static void job_fail(struct mp_svc *s, struct job *j, const char *why)
{
    struct mp_svc_verdict *v = &j->c->v;
    v->kind = MP_SVC_UNAVAILABLE;
    v->fail_open = s->cfg.fail_open;
    snprintf(v->name, sizeof v->name, "%s", why);
    s->st.failures++;
    mp_warn("svc %s: %s; failing %s", s->name, why, s->cfg.fail_open ? "open" : "closed");
    job_done(s, j);
}

static void start(struct mp_svc *s, struct job *j);

/* The conversation ended on k: the verdict (ok) or a failure (why). */
static void conn_end(struct conn *k, const char *why)
{
    struct mp_svc *s = k->s;
    struct job *j = k->job;
    k->job = NULL;
    s->st.active--;
    if (why && k->reused && !j->c->answered) {
        /* a pooled connection the service had closed: once more, fresh */
        conn_close(k);
        j->c->out.off = j->c->out.len = 0;
        mp_buf_free(&j->c->v.detail);
        memset(&j->c->v, 0, sizeof j->c->v);
        start(s, j);
        return;
    }
    if (why) {
        conn_close(k);
        job_fail(s, j, why);
    } else {
        bool keep = j->c->ops->poolable && j->c->reusable && !mp_buf_avail(&k->in) &&
                    !mp_buf_avail(&j->c->out) && s->st.idle < s->cfg.max_idle;
        if (keep) {
            arm(k, 0);
            k->next = s->idle;
            s->idle = k;
            s->st.idle++;
            s->lif.set(s->lif.ctx, k->w, MP_SVC_EV_READ);
        } else {
            if (mp_buf_avail(&j->c->out)) /* a last word (QUIT), best effort */
                (void)!send(k->fd, mp_buf_head(&j->c->out), mp_buf_avail(&j->c->out),
                            MSG_NOSIGNAL | MSG_DONTWAIT);
            conn_close(k);
        }
        job_done(s, j);
    }
    pump(s);
}

static void want(struct conn *k)
{
    unsigned ev = MP_SVC_EV_READ;
    if (k->connecting || !k->begun || mp_buf_avail(&k->job->c->out))
        ev |= MP_SVC_EV_WRITE;
    if (k->connecting)
        ev = MP_SVC_EV_WRITE;
    k->s->lif.set(k->s->lif.ctx, k->w, ev);
}

static void begin(struct conn *k)
{
    struct mp_svc_conv *c = k->job->c;
    k->begun = true;
    int r = c->ops->begin(c, k->reused);
    if (r == MP_SVC_DONE) {
        c->reusable = !mp_buf_avail(&c->out) && k->reused; /* nothing was said */
        conn_end(k, NULL);
        return;
    }
    if (r != MP_SVC_MORE) {
        conn_end(k, "cannot encode the request");
        return;
    }
    arm(k, k->s->cfg.io_ms);
    want(k);
}

static void timer_fired(void *arg)
{
    struct conn *k = arg;
    k->t = NULL;
    if (k->job)
        conn_end(k, k->connecting ? "connect timeout" : "timeout");
}

static struct conn *conn_new(struct mp_svc *s)
{
    struct conn *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->s = s;
    k->fd = socket(s->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        free(k);
        return NULL;
    }
    s->st.connects++;
    k->connecting = connect(k->fd, (struct sockaddr *)&s->sa, s->salen) != 0;
    if (k->connecting && errno != EINPROGRESS && errno != EAGAIN) {
        close(k->fd);
        free(k);
        return NULL;
    }
    k->w = s->lif.watch(s->lif.ctx, k->fd, MP_SVC_EV_WRITE, conn_event, k);
    if (!k->w) {
        close(k->fd);
        free(k);
        return NULL;
    }
    return k;
}

static void reject_later(void *arg);

/* done() always runs from the loop, never inside mp_svc_submit. */
static void fail_later(struct mp_svc *s, struct job *j, const char *why)
{
    snprintf(j->c->v.name, sizeof j->c->v.name, "connect: %s", why);
    j->next = (struct job *)s;
    if (!s->lif.timer(s->lif.ctx, 0, reject_later, j))
        job_fail(s, j, why);
}

static void start(struct mp_svc *s, struct job *j)
{
    struct conn *k = s->idle;
    s->st.active++;
    if (s->st.active > s->st.peak_active)
        s->st.peak_active = s->st.active;
    if (k) {
        s->idle = k->next;
        s->st.idle--;
        k->reused = true;
        s->st.reuses++;
    } else {
        k = conn_new(s);
        if (!k) {
            s->st.active--;
            fail_later(s, j, strerror(errno));
            return;
        }
    }
    k->job = j;
    k->begun = false;
    /* begin from the loop (a writable event), never inside submit */
    arm(k, k->connecting ? s->cfg.connect_ms : s->cfg.io_ms);
    want(k);
}

static void pump(struct mp_svc *s)
{
    while (s->qhead && s->st.active < s->cfg.max_conns) {
        struct job *j = s->qhead;
        s->qhead = j->next;
        if (!s->qhead)
            s->qtail = NULL;
        s->st.queued--;
        start(s, j);
    }
}

static void conn_event(void *arg, int fd, unsigned ev)
{
    struct conn *k = arg;
    struct mp_svc *s = k->s;
    if (!k->job) { /* idle: the service closed it (or talks out of turn) */
        struct conn **pp = &s->idle;
        while (*pp && *pp != k)
            pp = &(*pp)->next;
        if (*pp) {
            *pp = k->next;
            s->st.idle--;
        }
        conn_close(k);
        return;
    }
    if (k->connecting) {
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) || err) {
            char why[128];
            snprintf(why, sizeof why, "connect: %s", strerror(err ? err : errno));
            conn_end(k, why);
            return;
        }
        k->connecting = false;
        begin(k);
        return;
    }
    if (!k->begun) {
        begin(k);
        return;
    }
    struct mp_svc_conv *c = k->job->c;
    bool progress = false;
    if ((ev & MP_SVC_EV_WRITE) && mp_buf_avail(&c->out)) {
        ssize_t n = send(fd, mp_buf_head(&c->out), mp_buf_avail(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            mp_buf_consume(&c->out, (size_t)n);
            progress = true;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            /* the service may have answered before closing (clamd's limit) */
            ev |= MP_SVC_EV_READ;
            c->out.off = c->out.len;
        }
    }
    if (ev & (MP_SVC_EV_READ | MP_SVC_EV_ERROR)) {
        for (int round = 0; round < 16; round++) {
            if (mp_buf_reserve(&k->in, 65536)) {
                conn_end(k, "out of memory");
                return;
            }
            ssize_t n = recv(fd, k->in.data + k->in.len, 65536, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (n <= 0) {
                int r = mp_buf_avail(&k->in) ? MP_SVC_BAD : c->ops->eof(c);
                if (r == MP_SVC_DONE) {
                    c->reusable = false;
                    conn_end(k, NULL);
                } else {
                    conn_end(k, n < 0 ? strerror(errno) : "connection closed by the service");
                }
                return;
            }
            k->in.len += (size_t)n;
            progress = true;
            int r = mp_svc_conv_feed(c, &k->in);
            if (r == MP_SVC_DONE) {
                conn_end(k, NULL);
                return;
            }
            if (r != MP_SVC_MORE) {
                conn_end(k, "protocol error in the service's answer");
                return;
            }
        }
    }
    if (progress)
        arm(k, s->cfg.io_ms);
    want(k);
}

static void reject_later(void *arg)
{
    struct job *j = arg;
    struct mp_svc *s = (struct mp_svc *)j->next;
    char why[sizeof j->c->v.name];
    j->next = NULL;
    snprintf(why, sizeof why, "%s", j->c->v.name[0] ? j->c->v.name : "queue full");
    job_fail(s, j, why);
}

int mp_svc_submit(struct mp_svc *s, struct mp_svc_conv *conv, mp_svc_done_cb done, void *arg)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->c = conv;
    j->done = done;
    j->arg = arg;
    j->start_us = mp_now_us();
    j->c->v.attempts = 0;
    if (s->st.queued >= s->cfg.max_queue) {
        j->next = (struct job *)s; /* done() always runs from the loop */
        if (!s->lif.timer(s->lif.ctx, 0, reject_later, j)) {
            free(j);
            return -1;
        }
        return 0;
    }
    if (s->qtail)
        s->qtail->next = j;
    else
        s->qhead = j;
    s->qtail = j;
    s->st.queued++;
    pump(s);
    return 0;
}

void mp_svc_stats(const struct mp_svc *s, struct mp_svc_stats *st)
{
    *st = s->st;
}

void mp_svc_free(struct mp_svc *s)
{
    if (!s)
        return;
    while (s->idle) {
        struct conn *k = s->idle;
        s->idle = k->next;
        conn_close(k);
    }
    while (s->qhead) {
        struct job *j = s->qhead;
        s->qhead = j->next;
        job_fail(s, j, "shutting down");
    }
    free(s->name);
    free(s);
}

/* ---- the loopif on src/event/loop.c ---- */
/* Left out where the engine is compiled into a module (MP_SVC_NO_LOOP):
 * modules/sec/sec.c gives it a loopif on the module API instead. */
#ifndef MP_SVC_NO_LOOP
struct lw {
    struct mp_io io;
    mp_svc_fd_cb cb;
    void *arg;
    struct mp_loop *loop;
};
struct lt {
    struct mp_timer t;
    mp_svc_timer_cb cb;
    void *arg;
    struct mp_loop *loop;
};

static void lw_io(struct mp_io *io, uint32_t events)
{
    struct lw *w = io->data;
    unsigned ev = 0;
    if (events & MP_READ)
        ev |= MP_SVC_EV_READ;
    if (events & MP_WRITE)
        ev |= MP_SVC_EV_WRITE;
    if (events & MP_ERRHUP)
        ev |= MP_SVC_EV_ERROR | MP_SVC_EV_READ;
    if (w->cb)
        w->cb(w->arg, io->fd, ev);
}

static void *lw_watch(void *ctx, int fd, unsigned events, mp_svc_fd_cb cb, void *arg)
{
    struct lw *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->io.fd = fd;
    w->io.cb = lw_io;
    w->io.data = w;
    w->cb = cb;
    w->arg = arg;
    w->loop = ctx;
    uint32_t want =
        (events & MP_SVC_EV_READ ? MP_READ : 0) | (events & MP_SVC_EV_WRITE ? MP_WRITE : 0);
    if (mp_io_set(ctx, &w->io, want)) {
        free(w);
        return NULL;
    }
    return w;
}

static int lw_set(void *ctx, void *watch, unsigned events)
{
    struct lw *w = watch;
    uint32_t want =
        (events & MP_SVC_EV_READ ? MP_READ : 0) | (events & MP_SVC_EV_WRITE ? MP_WRITE : 0);
    return want == w->io.want && w->io.registered ? 0 : mp_io_set(ctx, &w->io, want);
}

static void lw_cancel(void *ctx, void *watch)
{
    struct lw *w = watch;
    mp_io_set(ctx, &w->io, 0);
    w->cb = NULL;
    mp_loop_defer(ctx, free, w); /* events of this batch may still name it */
}

static void lt_fire(struct mp_timer *t)
{
    struct lt *x = t->data;
    x->cb(x->arg);
    free(x);
}

static void *lt_timer(void *ctx, uint64_t ms, mp_svc_timer_cb cb, void *arg)
{
    struct lt *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->t.cb = lt_fire;
    x->t.data = x;
    x->cb = cb;
    x->arg = arg;
    x->loop = ctx;
    mp_timer_arm(ctx, &x->t, ms);
    return x;
}

static void lt_cancel(void *ctx, void *timer)
{
    struct lt *x = timer;
    mp_timer_cancel(ctx, &x->t);
    free(x);
}

void mp_svc_loopif_mp_loop(struct mp_svc_loopif *lif, struct mp_loop *loop)
{
    *lif = (struct mp_svc_loopif){loop, lw_watch, lw_set, lw_cancel, lt_timer, lt_cancel};
}
#endif
