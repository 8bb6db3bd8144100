/* Accepting connections, shared by every listener (src/relay, src/transport/http).
 *
 * mp_accept_ready() takes what a readable listening socket has queued and
 * hands each connection to the transport.  When the process is out of file
 * descriptors (or kernel memory), accept keeps failing while the connection
 * stays queued, so polling the listener again would spin: instead the
 * listener is taken out of the loop for MP_ACCEPT_PAUSE_MS and put back, and
 * the failures are logged at most once per second, with their count, until
 * accept works again (doc/operations.md). */
#ifndef MP_NET_ACCEPT_H
#define MP_NET_ACCEPT_H
#include <stdint.h>

#include "event/loop.h"

#define MP_ACCEPT_PAUSE_MS 250

/* One accepted connection: fd is non-blocking and close-on-exec; host is the
 * peer's numeric address ("?" if not IP), port its port.  The callee owns fd. */
typedef void (*mp_accept_fn)(void *data, int fd, const char *host, uint16_t port);

/* Accepts up to 64 connections from the listening socket of io (registered
 * for MP_READ in loop); `what` names the listener in log lines ("rpc",
 * "http"). */
void mp_accept_ready(struct mp_loop *loop, struct mp_io *io, const char *what, mp_accept_fn fn,
                     void *data);

/* Forgets io if a back-off holds it (call before closing a listener). */
void mp_accept_forget(struct mp_io *io);

/* A non-blocking, close-on-exec listening TCP socket on host:port
 * (SO_REUSEADDR), or -1 after an error log line naming `option` (the
 * configuration option that gave the address). */
int mp_listen_tcp(const char *host, uint16_t port, int backlog, const char *option);

/* The local port of a TCP socket (a listener's, or a connection's own end),
 * 0 when fd is not an IPv4/IPv6 socket. */
uint16_t mp_sock_local_port(int fd);

/* Listeners across a reload (doc/operations.md): the process keeps a
 * descriptor of every listening socket mp_listen_tcp made while a
 * configuration was built (begin ... commit), by the address
 * and port asked for.  While a configuration is built (begin ... commit or
 * abort), mp_listen_tcp hands out a duplicate of a held socket with the same
 * address and port instead of binding again: no moment without a listener,
 * and port 135 after root was dropped.  commit closes the held sockets the
 * new configuration did not ask for; abort those it bound new; release all
 * (at exit). */
void mp_listen_begin(void);
void mp_listen_commit(void);
void mp_listen_abort(void);
void mp_listen_release(void);
#endif
