/* Worker threads (core/workers.h): group ids each worker owns, mailboxes
 * that run a function on another worker's thread, a clean stop. */
#include "core/workers.h"

#include <pthread.h>
#include <stdint.h>

#include "testlib.h"

static pthread_t seen_thread[4];
static unsigned seen_self[4];
static int posted_ran;

static void record(void *arg)
{
    unsigned i = (unsigned)(uintptr_t)arg;
    seen_thread[i] = pthread_self();
    seen_self[i] = mp_worker_self();
}

static void posted(void *arg)
{
    posted_ran = (int)(uintptr_t)arg;
    mp_loop_stop(mp_worker_loop(0));
}

static void post_back(void *arg)
{
    (void)arg;
    CHECK_EQ(mp_worker_post(0, posted, (void *)(uintptr_t)42), 0);
}

static int exits;
static void on_exit_cb(unsigned w)
{
    __atomic_add_fetch(&exits, 1, __ATOMIC_RELAXED);
}

int main(void)
{
    /* one worker: ids unchanged, every group on worker 0 */
    CHECK_EQ(mp_workers_count(), 1u);
    CHECK_EQ(mp_worker_group_id(0x12345677u), 0x12345677u);
    CHECK_EQ(mp_worker_of_group(0x12345677u), 0u);

    struct mp_loop *loop = mp_loop_new();
    CHECK(loop != NULL);
    CHECK_EQ(mp_workers_start(3, loop), 0);
    CHECK_EQ(mp_workers_count(), 3u);
    /* worker 0 (this thread) draws ids it owns, at any value */
    uint32_t samples[] = {0, 1, 2, 3, 0x7fffffffu, 0xfffffffdu, 0xfffffffeu, 0xffffffffu};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        uint32_t id = mp_worker_group_id(samples[i]);
        CHECK_EQ(mp_worker_of_group(id), 0u);
    }
    /* mp_worker_call runs on the worker's own thread, which knows its index */
    for (unsigned w = 0; w < 3; w++)
        mp_worker_call(w, record, (void *)(uintptr_t)w);
    CHECK(pthread_equal(seen_thread[0], pthread_self()));
    CHECK(!pthread_equal(seen_thread[1], pthread_self()));
    CHECK(!pthread_equal(seen_thread[1], seen_thread[2]));
    CHECK_EQ(seen_self[1], 1u);
    CHECK_EQ(seen_self[2], 2u);
    /* a post from worker 2 back to worker 0 runs in worker 0's loop */
    CHECK_EQ(mp_worker_post(2, post_back, NULL), 0);
    CHECK_EQ(mp_worker_post(7, post_back, NULL), -1); /* no such worker */
    mp_loop_run(loop);
    CHECK_EQ(posted_ran, 42);
    mp_workers_stop(on_exit_cb);
    CHECK_EQ(exits, 2);
    CHECK_EQ(mp_workers_count(), 1u);
    mp_loop_free(loop);
    TEST_DONE();
}
