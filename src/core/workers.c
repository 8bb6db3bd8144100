/* Worker threads and their mailboxes (core/workers.h). */
#include "core/workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"

struct job {
    void (*fn)(void *);
    void *arg;
    struct job *next;
    bool sync, done; /* sync: on the caller's stack, done under mu */
};

struct worker {
    unsigned idx;
    struct mp_loop *loop;
    bool own_loop; /* made here (workers 1..n-1) */
    pthread_t th;
    bool started;
    struct mp_io io; /* the mailbox's eventfd */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a sync job is done */
    bool closed;       /* its mailbox was drained for the last time (under mu) */
    struct job *head, *tail;
    void *data;
    void (*on_exit)(unsigned);
};

static struct worker ws[MP_MAX_WORKERS];
static unsigned n_ws = 1;
/* mp_workers_stop has begun: workers 1..n-1 end one after the other while
 * the others still run, so nothing more is posted to them (a hand-over to
 * a worker whose mailbox is gone would be lost: its socket leaked, its
 * job never run).  Worker 0 drains its mailbox last and still takes posts. */
static bool stopping;
static _Thread_local unsigned self;

unsigned mp_workers_count(void)
{
    return n_ws;
}

unsigned mp_worker_self(void)
{
    return self;
}

struct mp_loop *mp_worker_loop(unsigned i)
{
    return i < n_ws ? ws[i].loop : NULL;
}

void mp_worker_set_data(void *p)
{
    ws[self].data = p;
}

void *mp_worker_data(void)
{
    return ws[self].data;
}

uint32_t mp_worker_group_id(uint32_t id)
{
    unsigned n = n_ws;
    if (n <= 1)
        return id;
    uint32_t base = id - id % n;
    if (base > UINT32_MAX - n)
        base -= n;
    return base + self; /* 0 only for worker 0 with base 0 */
}

static void mailbox_cb(struct mp_io *io, uint32_t ev)
{
    struct worker *w = io->data;
    uint64_t v;
    while (read(w->io.fd, &v, sizeof v) == (ssize_t)sizeof v)
        ;
    pthread_mutex_lock(&w->mu);
    struct job *j = w->head;
    w->head = w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    while (j) {
        struct job *next = j->next;
        j->fn(j->arg);
        if (j->sync) {
            pthread_mutex_lock(&w->mu);
            j->done = true;
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        } else {
            free(j);
        }
        j = next;
    }
}

/* -1 when w's mailbox is closed: its last drain is over (a job queued then
 * would never run).  The eventfd is written under mu: it is open while
 * the mailbox is. */
static int enqueue(struct worker *w, struct job *j)
{
    pthread_mutex_lock(&w->mu);
    if (w->closed) {
        pthread_mutex_unlock(&w->mu);
        return -1;
    }
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    uint64_t one = 1;
    while (write(w->io.fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int mp_worker_post(unsigned i, void (*fn)(void *), void *arg)
{
    if (i >= n_ws || (i && __atomic_load_n(&stopping, __ATOMIC_ACQUIRE)))
        return -1;
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->fn = fn;
    j->arg = arg;
    if (enqueue(&ws[i], j)) { /* stopping checked above, but a post from a
                               * third worker may race the stop */
        free(j);
        return -1;
    }
    return 0;
}

void mp_worker_call(unsigned i, void (*fn)(void *), void *arg)
{
    if (i == self || i >= n_ws) {
        fn(arg);
        return;
    }
    struct worker *w = &ws[i];
    struct job j = {.fn = fn, .arg = arg, .sync = true};
    if (enqueue(w, &j))
        return; /* ended: nothing runs there any more */
    pthread_mutex_lock(&w->mu);
    while (!j.done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    self = w->idx;
    mp_buf_cache_enable(); /* emptied by on_exit (main.c: exit_job) */
    mp_loop_run(w->loop);
    pthread_mutex_lock(&w->mu);
    w->closed = true; /* posts fail from now on */
    pthread_mutex_unlock(&w->mu);
    mailbox_cb(&w->io, 0); /* handovers that came after the stop */
    if (w->on_exit)
        w->on_exit(w->idx);
    mp_io_close(w->loop, &w->io);
    mp_loop_free(w->loop);
    w->loop = NULL;
    return NULL;
}

static void stop_job(void *arg)
{
    struct worker *w = arg;
    mp_loop_stop(w->loop);
}

static int mailbox_open(struct worker *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->io.cb = mailbox_cb;
    w->io.data = w;
    if (w->io.fd < 0 || mp_io_set(w->loop, &w->io, MP_READ)) {
        mp_error("worker %u: cannot make its mailbox: %s", w->idx, strerror(errno));
        return -1;
    }
    return 0;
}

int mp_workers_start(unsigned n, struct mp_loop *loop0)
{
    if (n < 1 || n > MP_MAX_WORKERS)
        n = 1;
    __atomic_store_n(&stopping, false, __ATOMIC_RELEASE);
    ws[0] = (struct worker){.idx = 0, .loop = loop0};
    if (mailbox_open(&ws[0]))
        return -1;
    for (unsigned i = 1; i < n; i++) {
        struct worker *w = &ws[i];
        *w = (struct worker){.idx = i, .own_loop = true};
        w->loop = mp_loop_new();
        if (!w->loop || mailbox_open(w)) {
            mp_error("worker %u: cannot make its event loop: %s", i, strerror(errno));
            n_ws = i + 1;
            mp_workers_stop(NULL);
            return -1;
        }
        n_ws = i + 1;
        if (pthread_create(&w->th, NULL, worker_main, w)) {
            mp_error("worker %u: cannot start its thread", i);
            mp_workers_stop(NULL);
            return -1;
        }
        w->started = true;
    }
    n_ws = n;
    return 0;
}

void mp_workers_stop(void (*on_exit)(unsigned worker))
{
    __atomic_store_n(&stopping, true, __ATOMIC_RELEASE);
    for (unsigned i = 1; i < n_ws; i++) {
        struct worker *w = &ws[i];
        if (w->started) {
            w->on_exit = on_exit;
            /* on_exit is read by the thread after the stop job ran */
            mp_worker_call(i, stop_job, w);
            pthread_join(w->th, NULL);
        } else if (w->loop) {
            if (w->io.fd >= 0)
                mp_io_close(w->loop, &w->io);
            mp_loop_free(w->loop);
        }
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        /* closed: a post that passed the stopping check before it was set
         * fails (the zeroed mutex is PTHREAD_MUTEX_INITIALIZER's state) */
        *w = (struct worker){.closed = true};
    }
    /* what the others handed worker 0 last runs now, before its
     * generations (and what was handed over) are freed */
    if (ws[0].loop && ws[0].io.fd > 0) {
        mailbox_cb(&ws[0].io, 0);
        mp_io_close(ws[0].loop, &ws[0].io);
    }
    n_ws = 1;
}
