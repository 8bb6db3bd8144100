/* Accepting connections with a back-off when descriptors run out (net/accept.h).
 *
 * The back-off state is the process's, not a listener's: descriptors are a
 * process-wide resource, so one report covers every listener of a worker:
 * each worker has its own (thread-local).  The held listeners are touched
 * only while configurations are built, one worker at a time, the main
 * thread waiting (core/main.c). */
#include "net/accept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/workers.h"
#include "ops/metrics.h"

#define MAX_PAUSED 64

static _Thread_local struct {
    struct mp_loop *loop;
    struct mp_io *paused[MAX_PAUSED];
    size_t n_paused;
    struct mp_timer resume;   /* puts the paused listeners back */
    struct mp_timer report;   /* one line per second while failures go on */
    bool reporting;           /* an episode is going on (report armed) */
    unsigned long unreported; /* failures since the last line */
    unsigned long total;      /* failures in this episode */
    unsigned long pauses;     /* pauses since the last line */
    int last_errno;
    uint64_t since_ms; /* start of the episode */
} bo;

static unsigned long long nofile_limit(void)
{
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) ? 0 : (unsigned long long)rl.rlim_cur;
}

static void resume_cb(struct mp_timer *t)
{
    for (size_t i = 0; i < bo.n_paused; i++)
        mp_io_set(bo.loop, bo.paused[i], MP_READ);
    bo.n_paused = 0;
}

static void report_cb(struct mp_timer *t)
{
    if (bo.unreported) {
        mp_warn("accept: %lu more failure(s) in the last second (%s), listeners paused %lu "
                "time(s) for %u ms; open files limit %llu",
                bo.unreported, strerror(bo.last_errno), bo.pauses, MP_ACCEPT_PAUSE_MS,
                nofile_limit());
        bo.unreported = bo.pauses = 0;
        mp_timer_arm(bo.loop, &bo.report, 1000);
        return;
    }
    mp_info("accept: working again after %lu failure(s) in %.1f s", bo.total,
            (double)(mp_now_ms() - bo.since_ms) / 1000.0);
    bo.reporting = false;
    bo.total = 0;
}

/* accept failed for want of resources: pause io, count, report. */
static void back_off(struct mp_loop *loop, struct mp_io *io, const char *what, int err)
{
    if (bo.loop != loop) { /* first use, or a new loop (the old one is gone) */
        memset(&bo, 0, sizeof bo);
        bo.loop = loop;
        bo.resume.cb = resume_cb;
        bo.report.cb = report_cb;
    }
    bo.last_errno = err;
    bo.total++;
    if (!bo.reporting) {
        bo.reporting = true;
        bo.since_ms = mp_now_ms();
        mp_warn("accept (%s) failed: %s; open files limit %llu; listeners pause %u ms at a "
                "time and failures are counted, one line per second, until it clears",
                what, strerror(err), nofile_limit(), MP_ACCEPT_PAUSE_MS);
        mp_timer_arm(loop, &bo.report, 1000);
    } else {
        bo.unreported++;
    }
    if (bo.n_paused < MAX_PAUSED) {
        mp_io_set(loop, io, 0);
        bo.paused[bo.n_paused++] = io;
        bo.pauses++;
        if (!bo.resume.heap_idx)
            mp_timer_arm(loop, &bo.resume, MP_ACCEPT_PAUSE_MS);
    }
}

void mp_accept_forget(struct mp_io *io)
{
    for (size_t i = 0; i < bo.n_paused; i++)
        if (bo.paused[i] == io) {
            bo.paused[i] = bo.paused[--bo.n_paused];
            break;
        }
    if (!bo.n_paused && bo.loop) {
        mp_timer_cancel(bo.loop, &bo.resume);
        mp_timer_cancel(bo.loop, &bo.report);
        bo.reporting = false;
    }
}

void mp_accept_ready(struct mp_loop *loop, struct mp_io *io, const char *what, mp_accept_fn fn,
                     void *data)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EINTR || e == ECONNABORTED)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
                back_off(loop, io, what, e);
            else if (e != EAGAIN && e != EWOULDBLOCK)
                mp_warn("accept (%s) failed: %s", what, strerror(e));
            return;
        }
        char host[INET6_ADDRSTRLEN] = "?";
        uint16_t port = 0;
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        mp_metrics_accepted(what);
        fn(data, fd, host, port);
    }
}

/* The listening sockets the process holds across reloads (net/accept.h):
 * its own descriptor of each, keyed by the address and port asked for and
 * the worker that listens on it (with several workers, each has a socket of
 * its own on the same port, SO_REUSEPORT: doc/internals/workers.md). */
struct held {
    char host[64];
    uint16_t port;   /* as asked: 0 = the free port the kernel gave, kept */
    unsigned worker; /* whose socket */
    int fd;
    bool used, created; /* by the configuration being built */
};
static struct held *held;
static size_t n_held, cap_held;
static bool building; /* between mp_listen_begin and commit/abort */

void mp_listen_begin(void)
{
    building = true;
    for (size_t i = 0; i < n_held; i++)
        held[i].used = held[i].created = false;
}

static void held_drop(bool keep(const struct held *))
{
    size_t o = 0;
    for (size_t i = 0; i < n_held; i++) {
        if (keep(&held[i]))
            held[o++] = held[i];
        else
            close(held[i].fd);
    }
    n_held = o;
    if (!n_held) {
        free(held);
        held = NULL;
        cap_held = 0;
    }
}

static bool was_used(const struct held *h)
{
    return h->used;
}
static bool not_new(const struct held *h)
{
    return !h->created;
}
static bool none(const struct held *h)
{
    return false;
}

void mp_listen_commit(void)
{
    building = false;
    held_drop(was_used);
}

void mp_listen_abort(void)
{
    building = false;
    held_drop(not_new);
}

void mp_listen_release(void)
{
    held_drop(none);
}

static int listen_new(const char *host, uint16_t port, int backlog, const char *option,
                      bool reuseport);

static struct held *held_find(const char *host, uint16_t port, unsigned worker)
{
    for (size_t i = 0; i < n_held; i++)
        if (held[i].port == port && held[i].worker == worker && !strcmp(held[i].host, host))
            return &held[i];
    return NULL;
}

uint16_t mp_sock_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl))
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

int mp_listen_tcp(const char *host, uint16_t port, int backlog, const char *option)
{
    if (!building) /* a listener outside a configuration (metrics, tests): not held */
        return listen_new(host, port, backlog, option, false);
    unsigned w = mp_worker_self(), n = mp_workers_count();
    struct held *h = held_find(host, port, w);
    if (h) {
        int fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            mp_error("cannot take over the listener on %s port %u (%s): %s", host, port, option,
                     strerror(errno));
            return -1;
        }
        h->used = true;
        return fd;
    }
    /* a worker after the first joins the port worker 0 bound (its free
     * port when 0 was asked) */
    uint16_t at = port;
    if (w > 0) {
        struct held *h0 = held_find(host, port, 0);
        if (h0 && !(at = mp_sock_local_port(h0->fd))) {
            mp_error("cannot listen on %s port %u (%s): %s", host, port, option, strerror(errno));
            return -1;
        }
    }
    if (n_held == cap_held) {
        size_t cap = cap_held ? 2 * cap_held : 16;
        struct held *nh = realloc(held, cap * sizeof *nh);
        if (!nh) {
            mp_error("cannot listen on %s port %u (%s): out of memory", host, port, option);
            return -1;
        }
        held = nh;
        cap_held = cap;
    }
    /* SO_REUSEPORT would let a second process of the same user share the
     * port silently (a second mapiproxy started by mistake takes half the
     * connections): the first socket of a port is tried without it first,
     * so a port that anything listens on is refused as it is with one
     * worker. */
    if (n > 1 && w == 0 && at) {
        int probe = listen_new(host, at, 1, option, false);
        if (probe < 0)
            return -1;
        close(probe);
    }
    int fd = listen_new(host, at, backlog, option, n > 1);
    if (fd >= 0 && strlen(host) < sizeof held[0].host) {
        h = &held[n_held];
        h->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (h->fd >= 0) {
            strcpy(h->host, host);
            h->port = port;
            h->worker = w;
            h->used = h->created = true;
            n_held++;
        }
    }
    return fd;
}

static int listen_new(const char *host, uint16_t port, int backlog, const char *option,
                      bool reuseport)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc) {
        mp_error("listen address %s (%s): %s; give a numeric address or a resolvable name", host,
                 option, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) {
        mp_error("cannot listen on %s port %u (%s): SO_REUSEPORT: %s", host, port, option,
                 strerror(errno));
        close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        mp_error("cannot listen on %s port %u (%s): %s; choose another address or port, or stop "
                 "what uses it",
                 host, port, option, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}
