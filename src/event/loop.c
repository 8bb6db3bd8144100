#include "event/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

struct mp_loop {
    int epfd;
    bool stop;
    struct mp_timer **heap; /* 1-based */
    size_t n_timers, cap_timers;
    struct deferred {
        void (*fn)(void *);
        void *arg;
    } * defer;
    size_t n_defer, cap_defer;
};

int mp_loop_defer(struct mp_loop *l, void (*fn)(void *), void *arg)
{
    if (l->n_defer == l->cap_defer) {
        size_t cap = l->cap_defer ? l->cap_defer * 2 : 64;
        struct deferred *d = realloc(l->defer, cap * sizeof(*d));
        if (!d)
            return -1;
        l->defer = d;
        l->cap_defer = cap;
    }
    l->defer[l->n_defer].fn = fn;
    l->defer[l->n_defer++].arg = arg;
    return 0;
}

static void run_deferred(struct mp_loop *l)
{
    for (size_t i = 0; i < l->n_defer; i++) /* fn may defer more: n_defer re-read */
        l->defer[i].fn(l->defer[i].arg);
    l->n_defer = 0;
}

uint64_t mp_now_ms(void)
{
    return mp_now_us() / 1000;
}

uint64_t mp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

struct mp_loop *mp_loop_new(void)
{
    struct mp_loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        free(l);
        return NULL;
    }
    return l;
}

void mp_loop_free(struct mp_loop *l)
{
    if (!l)
        return;
    run_deferred(l);
    close(l->epfd);
    free(l->heap);
    free(l->defer);
    free(l);
}

void mp_loop_stop(struct mp_loop *l)
{
    l->stop = true;
}

int mp_io_set(struct mp_loop *l, struct mp_io *io, uint32_t want)
{
    if (io->registered && io->want == want)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = io};
    int rc;
    if (!want) {
        rc = io->registered ? epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, &ev) : 0;
        io->registered = false;
    } else if (io->registered) {
        rc = epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev);
    } else {
        rc = epoll_ctl(l->epfd, EPOLL_CTL_ADD, io->fd, &ev);
        if (rc == 0)
            io->registered = true;
    }
    if (rc == 0)
        io->want = want;
    return rc;
}

void mp_io_close(struct mp_loop *l, struct mp_io *io)
{
    if (io->fd < 0)
        return;
    mp_io_set(l, io, 0);
    close(io->fd);
    io->fd = -1;
}

/* ---- timer heap ---- */
static void heap_swap(struct mp_loop *l, size_t a, size_t b)
{
    struct mp_timer *t = l->heap[a];
    l->heap[a] = l->heap[b];
    l->heap[b] = t;
    l->heap[a]->heap_idx = a;
    l->heap[b]->heap_idx = b;
}

static void heap_up(struct mp_loop *l, size_t i)
{
    while (i > 1 && l->heap[i / 2]->when_ms > l->heap[i]->when_ms) {
        heap_swap(l, i, i / 2);
        i /= 2;
    }
}

static void heap_down(struct mp_loop *l, size_t i)
{
    for (;;) {
        size_t m = i, c = 2 * i;
        if (c <= l->n_timers && l->heap[c]->when_ms < l->heap[m]->when_ms)
            m = c;
        if (c + 1 <= l->n_timers && l->heap[c + 1]->when_ms < l->heap[m]->when_ms)
            m = c + 1;
        if (m == i)
            return;
        heap_swap(l, i, m);
        i = m;
    }
}

void mp_timer_cancel(struct mp_loop *l, struct mp_timer *t)
{
    size_t i = t->heap_idx;
    if (!i)
        return;
    t->heap_idx = 0;
    if (i != l->n_timers) {
        l->heap[i] = l->heap[l->n_timers];
        l->heap[i]->heap_idx = i;
        l->n_timers--;
        heap_up(l, i);
        heap_down(l, i);
    } else {
        l->n_timers--;
    }
}

void mp_timer_arm(struct mp_loop *l, struct mp_timer *t, uint64_t delay_ms)
{
    mp_timer_cancel(l, t);
    if (l->n_timers + 2 > l->cap_timers) {
        size_t cap = l->cap_timers ? l->cap_timers * 2 : 64;
        struct mp_timer **h = realloc(l->heap, cap * sizeof(*h));
        if (!h)
            abort(); /* cannot keep a timeout promise; better to stop loudly */
        l->heap = h;
        l->cap_timers = cap;
    }
    t->when_ms = mp_now_ms() + delay_ms;
    l->heap[++l->n_timers] = t;
    t->heap_idx = l->n_timers;
    heap_up(l, l->n_timers);
}

int mp_loop_run(struct mp_loop *l)
{
    struct epoll_event evs[256];
    l->stop = false;
    while (!l->stop) {
        int timeout = -1;
        if (l->n_timers) {
            uint64_t now = mp_now_ms(), w = l->heap[1]->when_ms;
            timeout = w <= now ? 0 : (int)(w - now > 60000 ? 60000 : w - now);
        }
        int n = epoll_wait(l->epfd, evs, 256, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        for (int i = 0; i < n; i++) {
            struct mp_io *io = evs[i].data.ptr;
            io->cb(io, evs[i].events);
        }
        run_deferred(l);
        uint64_t now = mp_now_ms();
        while (l->n_timers && l->heap[1]->when_ms <= now) {
            struct mp_timer *t = l->heap[1];
            mp_timer_cancel(l, t);
            t->cb(t);
        }
        run_deferred(l);
    }
    return 0;
}
