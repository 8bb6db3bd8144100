/* Worker threads (mapiproxy:workers; doc/internals/workers.md).
 *
 * Worker 0 is the main thread; workers 1..n-1 are threads, each running an
 * event loop of its own.  Nothing is shared between them but the listening
 * sockets and the process-wide counters: every worker runs its own
 * configuration generation (relay, module instances, sessions).  A worker
 * talks to another only through that worker's mailbox: mp_worker_post runs
 * a function on the worker's thread, mp_worker_call does and waits. */
#ifndef MP_CORE_WORKERS_H
#define MP_CORE_WORKERS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event/loop.h"

/* The number of workers (1 until mp_workers_start) and the calling
 * thread's index (0 on the main thread and on threads that are no worker). */
unsigned mp_workers_count(void);
unsigned mp_worker_self(void);

/* Starts the mailboxes of n workers; worker 0's loop is loop0 (the caller's
 * thread runs it), workers 1..n-1 get a loop and a thread each.  0, or -1
 * after an error line with nothing left started. */
int mp_workers_start(unsigned n, struct mp_loop *loop0);
/* Stops and joins workers 1..n-1 (each runs on_exit on its thread after its
 * loop ended, then frees its loop) and closes every mailbox. */
void mp_workers_stop(void (*on_exit)(unsigned worker));

struct mp_loop *mp_worker_loop(unsigned i);

/* Runs fn(arg) on worker i's thread, later (0), or -1 (out of memory, no
 * such worker, or worker i > 0 once mp_workers_stop began): fn does not
 * run and the caller keeps arg. */
int mp_worker_post(unsigned i, void (*fn)(void *), void *arg);
/* Runs fn(arg) on worker i's thread and returns when it has run (at once
 * when i is the caller). */
void mp_worker_call(unsigned i, void (*fn)(void *), void *arg);

/* A pointer each worker keeps for itself (the running relay). */
void mp_worker_set_data(void *p);
void *mp_worker_data(void);

/* Association groups: which worker owns the group with this id.  A worker
 * hands out only ids it owns (mp_worker_group_id). */
static inline unsigned mp_worker_of_group(uint32_t id)
{
    unsigned n = mp_workers_count();
    return n > 1 ? id % n : 0;
}
/* id moved to the nearest id the calling worker owns; 0 if there is none
 * (the caller draws again). */
uint32_t mp_worker_group_id(uint32_t id);
#endif
