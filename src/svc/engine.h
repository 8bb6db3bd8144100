/* The client engine for outside services: runs mp_svc_conv conversations
 * on non-blocking sockets (unix or TCP), with connect and I/O timeouts, a
 * pool of idle connections per service (for protocols that allow reuse),
 * a concurrency limit with a FIFO queue, and a fail policy reported with
 * each verdict.  It reaches the event loop only through struct
 * mp_svc_loopif (watch a fd, one-shot timer), the shape of the module
 * API's mp_module_watch_fd, so a module can run it on the proxy's loop. */
#ifndef MP_SVC_ENGINE_H
#define MP_SVC_ENGINE_H
#include "svc/svc.h"

#define MP_SVC_EV_READ 0x1u
#define MP_SVC_EV_WRITE 0x4u
#define MP_SVC_EV_ERROR 0x8u

typedef void (*mp_svc_fd_cb)(void *arg, int fd, unsigned events);
typedef void (*mp_svc_timer_cb)(void *arg);
struct mp_svc_loopif {
    void *ctx;
    void *(*watch)(void *ctx, int fd, unsigned events, mp_svc_fd_cb cb, void *arg);
    int (*set)(void *ctx, void *watch, unsigned events);
    void (*cancel)(void *ctx, void *watch); /* safe inside cb; frees the watch */
    void *(*timer)(void *ctx, uint64_t ms, mp_svc_timer_cb cb, void *arg);
    void (*timer_cancel)(void *ctx, void *timer); /* also frees; not after it fired */
};
struct mp_loop;
/* A loopif on the proxy's own loop (src/event/loop.h). */
void mp_svc_loopif_mp_loop(struct mp_svc_loopif *lif, struct mp_loop *loop);

struct mp_svc_config {
    const char *name;    /* for logs */
    const char *addr;    /* "unix:/path", "/path", "host:port" */
    unsigned connect_ms; /* default 2000 */
    unsigned io_ms;      /* no progress for this long: give up (default 30000) */
    unsigned max_conns;  /* concurrent conversations (default 4) */
    unsigned max_idle;   /* idle connections kept (default = max_conns) */
    unsigned max_queue;  /* waiting conversations (default 1000) */
    bool fail_open;      /* policy when the service cannot answer */
};

struct mp_svc;
typedef void (*mp_svc_done_cb)(struct mp_svc_conv *c, void *arg);
struct mp_svc *mp_svc_new(const struct mp_svc_loopif *lif, const struct mp_svc_config *cfg);
/* Takes conv (frees it after done() returns).  done() always runs, later,
 * from the loop; with an UNAVAILABLE verdict when the service did not
 * answer (conv->v.fail_open says what the policy is). */
int mp_svc_submit(struct mp_svc *s, struct mp_svc_conv *conv, mp_svc_done_cb done, void *arg);
struct mp_svc_stats {
    unsigned active, queued, idle, peak_active;
    unsigned long connects, reuses, failures;
};
void mp_svc_stats(const struct mp_svc *s, struct mp_svc_stats *st);
/* Ends every conversation (done() with UNAVAILABLE) and frees. */
void mp_svc_free(struct mp_svc *s); /* NULL: nothing */
#endif
