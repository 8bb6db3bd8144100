/* mp_module_watch_fd: a module's descriptor on the proxy's loop, so that it
 * can wait on an outside service (with MP_PENDING and mp_call_resume)
 * without blocking.  A watch is an mp_io whose callback hands the ready
 * events to the module.  Cancelling unregisters at once and frees after
 * the current batch of events (mp_loop_defer): another event of the same
 * epoll batch may still point at the watch. */
#include <stdlib.h>

#include "chain/services.h"
#include "core/log.h"
#include "event/loop.h"
#include "chain/chain.h"

struct mp_fdwatch {
    struct mp_io io;
    struct mp_loop *loop;
    const struct mp_module_ctx *mc;
    mp_fdwatch_cb cb;
    void *arg;
    bool cancelled;
    struct mp_fdwatch *prev, *next; /* every live watch: cancelled at unload */
};

/* The live watches of every module instance on this worker (each worker
 * has its own loop and module instances: doc/internals/workers.md). */
static _Thread_local struct mp_fdwatch *live;

static uint32_t loop_events(unsigned ev)
{
    return (ev & MP_FD_READ ? MP_READ : 0) | (ev & MP_FD_WRITE ? MP_WRITE : 0);
}

static void io_cb(struct mp_io *io, uint32_t events)
{
    struct mp_fdwatch *w = io->data;
    if (w->cancelled)
        return; /* cancelled earlier in this batch */
    unsigned ev = (events & MP_READ ? MP_FD_READ : 0) | (events & MP_WRITE ? MP_FD_WRITE : 0) |
                  (events & MP_ERRHUP ? MP_FD_ERROR : 0);
    w->cb(w, io->fd, ev, w->arg);
}

struct mp_fdwatch *mp_module_watch_fd(struct mp_module_ctx *mc, int fd, unsigned events,
                                      mp_fdwatch_cb cb, void *arg)
{
    if (fd < 0 || !cb || !mc->loop)
        return NULL;
    struct mp_fdwatch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->io.fd = fd;
    w->io.cb = io_cb;
    w->io.data = w;
    w->loop = mc->loop;
    w->mc = mc;
    w->cb = cb;
    w->arg = arg;
    if (events && mp_io_set(w->loop, &w->io, loop_events(events))) {
        mp_warn("module %s: cannot watch descriptor %d", mc->name, fd);
        free(w);
        return NULL;
    }
    w->next = live;
    if (live)
        live->prev = w;
    live = w;
    return w;
}

int mp_fdwatch_set(struct mp_fdwatch *w, unsigned events)
{
    if (!w || w->cancelled)
        return -1;
    return mp_io_set(w->loop, &w->io, loop_events(events)) ? -1 : 0;
}

static void watch_free(void *p)
{
    free(p);
}

void mp_fdwatch_cancel(struct mp_fdwatch *w)
{
    if (!w || w->cancelled)
        return;
    w->cancelled = true;
    mp_io_set(w->loop, &w->io, 0);
    if (w->prev)
        w->prev->next = w->next;
    else
        live = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (mp_loop_defer(w->loop, watch_free, w))
        free(w); /* out of memory: no event of this batch can follow a cancel from fini */
}

size_t mp_fdwatch_cancel_module(const struct mp_module_ctx *mc)
{
    size_t n = 0;
    for (struct mp_fdwatch *w = live, *nx; w; w = nx) {
        nx = w->next;
        if (w->mc == mc) {
            mp_fdwatch_cancel(w);
            n++;
        }
    }
    if (n)
        mp_warn("module %s left %zu descriptor watch(es) at unload; cancelled", mc->name, n);
    return n;
}
