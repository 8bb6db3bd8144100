/* A connection: one non-blocking stream socket on the loop, with an input
 * and an output buffer.  Used by every transport for its client connection
 * and its upstream connection (the connector below); a layer such as TLS
 * plugs in under it through struct mp_conn_layer (net/conn_tls.h puts
 * net/tls.h there).
 *
 * Vocabulary (doc/internals/architecture.md): a *connection* is one socket,
 * this struct.  What a transport carries over it (a DCE/RPC association, an
 * HTTP exchange) is the transport's and lives in the transport's struct,
 * which points to its connections.
 *
 * Ownership: the transport embeds struct mp_conn (no allocation of its own)
 * and owns it; mp_conn_close() is the only way the descriptor is closed.
 * Only the loop thread calls in here.
 *
 * Fast path: nothing here copies or allocates per read or per write when the
 * peer keeps up.  mp_conn_read() may land bytes in a scratch buffer the
 * caller lends (one per process, say) when nothing partial is kept, and
 * mp_conn_send() writes at once when nothing is queued before it; only what
 * the kernel does not take, and what is left of a partial frame after the
 * caller has parsed a read, is copied into the connection's own buffers.
 *
 * The events callback gets the loop's events (MP_READ, MP_WRITE, MP_ERRHUP,
 * MP_RDHUP); while the connection is connecting, call mp_conn_connected()
 * first.  Typical use in the callback:
 *
 *     if (c->connecting && (rc = mp_conn_connected(c, ev)) != 0) { rc < 0: failed; else wait }
 *     if (ev & (MP_READ | MP_ERRHUP | MP_RDHUP)) {
 *         ssize_t n = mp_conn_read(c, scratch, sizeof scratch);
 *         n > 0: parse mp_buf_head(&c->in) .. mp_buf_avail(&c->in), mp_buf_consume() what
 *                was used, then mp_conn_keep(c); n == 0: the peer closed;
 *         n < 0 and errno EAGAIN: nothing yet; other n < 0: read error
 *     }
 *     if (mp_conn_flush(c) < 0) write error;
 *     mp_conn_want(c, may_read);
 */
#ifndef MP_NET_CONN_H
#define MP_NET_CONN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "core/buf.h"
#include "event/loop.h"
#include "net/tls.h"

#define MP_RDHUP 0x2000u /* EPOLLRDHUP: the peer shut down its side */
/* What mp_conn_read() reads at most at a time into the connection's own
 * input buffer (when a partial frame is kept). */
#define MP_CONN_READ_CHUNK 65536

struct mp_conn;
typedef void (*mp_conn_cb)(struct mp_conn *c, uint32_t events);

/* A layer between the connection's buffers and its socket (TLS).  Each
 * function behaves like recv()/send(): > 0 bytes moved; recv 0: end of
 * stream; -1 with errno set, EAGAIN when it would block.  events(), when
 * given, turns "the caller would read / has bytes to write" into the loop
 * events to wait for (TLS may need the opposite readiness: a read that
 * must write first, or only its handshake's).  close() frees the layer's
 * state before the descriptor is closed.  Set c->layer and c->layer_data
 * after mp_conn_attach() or once mp_conn_connected() returned 0
 * (net/conn_tls.h does it for TLS). */
struct mp_conn_layer {
    ssize_t (*recv)(struct mp_conn *c, void *p, size_t n);
    ssize_t (*send)(struct mp_conn *c, const void *p, size_t n);
    void (*close)(struct mp_conn *c);
    uint32_t (*events)(const struct mp_conn *c, bool want_read, bool want_write);
};

/* A tap: every byte read (in) or written on the connection, as the
 * transport sees it (after TLS), e.g. for the packet export (ops/pcapng.h). */
typedef void (*mp_conn_tap_fn)(void *arg, const struct mp_conn *c, bool in, const void *p,
                               size_t n);

struct mp_conn {
    struct mp_io io; /* io.fd is -1 while closed; io.data is the mp_conn */
    struct mp_loop *loop;
    struct mp_buf in;                  /* read, not yet consumed by the transport */
    struct mp_buf out;                 /* queued, not yet taken by the kernel */
    mp_conn_cb cb;                     /* the transport's events callback */
    void *data;                        /* the transport's object (its association, session ...) */
    const struct mp_conn_layer *layer; /* NULL: plain TCP */
    void *layer_data;
    struct mp_tls tls;  /* the TLS layer's state (net/conn_tls.h); unused otherwise */
    mp_conn_tap_fn tap; /* NULL: none */
    void *tap_arg;
    uint64_t read_ms;   /* last bytes read (mp_now_ms) */
    uint64_t write_ms;  /* last write progress */
    uint16_t port;      /* connector: the peer's port (for log lines) */
    bool connecting;    /* mp_conn_connect() has not completed */
    bool closing;       /* the transport closes once out is flushed (its flag) */
    bool in_borrowed;   /* in points into the caller's scratch buffer */
    bool wblocked;      /* the kernel pushed a write back: wait for the loop's next event */
    bool failed;        /* the peer closed, or a read or write failed */
    bool hup_unwatched; /* with nothing to wait for, unregister (a transport that
                           learns of hang-ups only by reading: the HTTPS front) */
};

/* Sets up a closed connection (fd -1) whose events go to cb(c, ev) with
 * c->data == data.  Call once before any other function. */
void mp_conn_init(struct mp_conn *c, struct mp_loop *loop, mp_conn_cb cb, void *data);

/* Takes an accepted, non-blocking descriptor (mp_accept_fn) and sets
 * TCP_NODELAY.  Not registered yet: call mp_conn_want(). */
void mp_conn_attach(struct mp_conn *c, int fd);

/* The connector: starts a non-blocking connect to addr with its port set to
 * port (TCP_NODELAY).  Returns 0 with c->connecting set (mp_conn_want()
 * then waits for writability), or -1 with errno set. */
/* A non-blocking TCP connect to addr:port started (TCP_NODELAY): the fd,
 * or -1 (errno). */
int mp_tcp_connect_start(const struct sockaddr_storage *addr, socklen_t len, uint16_t port);
int mp_conn_connect(struct mp_conn *c, const struct sockaddr_storage *addr, socklen_t len,
                    uint16_t port);

/* For the events of a connecting connection: 0 connected (connecting
 * cleared), 1 not yet, -1 failed with errno set to the connect error. */
int mp_conn_connected(struct mp_conn *c, uint32_t events);

/* Reads once.  When c->in is empty and scratch is given, the bytes land in
 * scratch and c->in borrows it (no copy) until mp_conn_keep(); otherwise
 * up to MP_CONN_READ_CHUNK bytes are appended to c->in (what a previous
 * read left borrowed is kept first).  Returns the number of bytes read
 * (> 0), 0 when the peer closed, or -1 with errno (EAGAIN: nothing to read
 * now; ENOMEM: no room). */
ssize_t mp_conn_read(struct mp_conn *c, uint8_t *scratch, size_t scratch_len);

/* After parsing a read: copies what is left of a borrowed input into the
 * connection's own memory (only a partial frame is ever left), and gives
 * back the memory of an input that was all consumed (an idle connection
 * holds no input buffer).  Returns 0, or -1 when out of memory (the input
 * is then dropped). */
int mp_conn_keep(struct mp_conn *c);

/* Sends len bytes: written at once when nothing is queued, the connection
 * is open and more is false; what the kernel does not take is queued in
 * c->out for mp_conn_flush().  more: further output follows at once (the
 * caller is in the middle of a batch), queue only so one write carries it
 * all.  Returns 0, or -1 when out of memory.  Write errors show at the next
 * mp_conn_flush(). */
int mp_conn_send(struct mp_conn *c, const void *p, size_t len, bool more);

/* Writes what is queued until the kernel pushes back.  Returns 0 (also when
 * closed or connecting: nothing to do), or -1 on a write error. */
int mp_conn_flush(struct mp_conn *c);

/* Writes from b (c->out, or a buffer of the transport's that goes out
 * before it) until b is empty or the kernel pushes back: then c->wblocked
 * is set (a plain write that the kernel took only in part counts: trying
 * again would only return EAGAIN), and the caller waits for the loop's
 * next event on c before writing again.  Returns the bytes written (0 when
 * none, also while closed or connecting), or -1 on a write error. */
ssize_t mp_conn_write_buf(struct mp_conn *c, struct mp_buf *b);

/* Registers the events to wait for: MP_READ when may_read, MP_WRITE while
 * output is queued or a connect is in progress (then only that), as the
 * layer translates them.  With nothing to wait for the descriptor stays
 * registered for hang-ups (MP_RDHUP), unless c->hup_unwatched.  No-op while
 * closed. */
void mp_conn_want(struct mp_conn *c, bool may_read);
/* The same with the transport saying whether it has bytes to write (output
 * it keeps in a buffer of its own, mp_conn_write_buf). */
void mp_conn_want_rw(struct mp_conn *c, bool may_read, bool may_write);

/* Closes: the layer, then the descriptor (unregistered), and frees both
 * buffers.  The connection can be connected or attached again.  Safe on a
 * closed connection. */
void mp_conn_close(struct mp_conn *c);

/* Gives the descriptor away (another transport takes the connection over):
 * unregistered, not closed, and c is closed as far as it knows; the
 * buffers stay until mp_conn_close().  Returns the descriptor.  With TLS,
 * take its state first (mp_conn_tls_release). */
int mp_conn_release(struct mp_conn *c);

static inline bool mp_conn_is_open(const struct mp_conn *c)
{
    return c->io.fd >= 0;
}

/* Resolves host (a name or numeric address) for a connector; 0, or -1 with
 * the resolver's message in err. */
int mp_conn_resolve(const char *host, struct sockaddr_storage *addr, socklen_t *len, char *err,
                    size_t errlen);
#endif
