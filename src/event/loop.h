/* The event loop: epoll for descriptors, a binary heap for timers. */
#ifndef MP_LOOP_H
#define MP_LOOP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mp_loop;
struct mp_io;
struct mp_timer;

typedef void (*mp_io_cb)(struct mp_io *io, uint32_t events);
typedef void (*mp_timer_cb)(struct mp_timer *t);

#define MP_READ 0x1u
#define MP_WRITE 0x4u   /* EPOLLOUT */
#define MP_ERRHUP 0x18u /* EPOLLERR | EPOLLHUP */

struct mp_io {
    int fd;
    uint32_t want; /* MP_READ | MP_WRITE currently registered */
    bool registered;
    mp_io_cb cb;
    void *data;
};

struct mp_timer {
    uint64_t when_ms;
    size_t heap_idx; /* 0 = not armed; 1-based position otherwise */
    mp_timer_cb cb;
    void *data;
};

struct mp_loop *mp_loop_new(void);
void mp_loop_free(struct mp_loop *loop);
/* Runs until mp_loop_stop(); returns 0, or -1 on an epoll failure. */
int mp_loop_run(struct mp_loop *loop);
void mp_loop_stop(struct mp_loop *loop);
uint64_t mp_now_ms(void);
uint64_t mp_now_us(void);

/* Sets the events wanted for io->fd (0 removes it from the loop). */
int mp_io_set(struct mp_loop *loop, struct mp_io *io, uint32_t want);
void mp_io_close(struct mp_loop *loop, struct mp_io *io); /* unregisters and closes fd */

/* Runs fn(arg) after the current batch of events: frees objects that other
 * events of the same batch may still point to. */
int mp_loop_defer(struct mp_loop *loop, void (*fn)(void *), void *arg);

void mp_timer_arm(struct mp_loop *loop, struct mp_timer *t, uint64_t delay_ms);
void mp_timer_cancel(struct mp_loop *loop, struct mp_timer *t);
#endif
