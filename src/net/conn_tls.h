/* TLS (net/tls.h) under a connection (net/conn.h): the connection reads and
 * writes through its TLS state (c->tls), so every transport keeps the
 * buffered I/O of struct mp_conn over TLS.  The connection owns that state:
 * mp_conn_close() frees it (with a best-effort close_notify unless the peer
 * is gone).
 *
 * A connection starts TLS as a server (mp_conn_tls_accept, on an accepted
 * descriptor) or a client (mp_conn_tls_connect, once the TCP connect is
 * done), then drives the handshake from its events callback with
 * mp_conn_tls_handshake() until it returns 1; meanwhile mp_conn_want()
 * waits for what the handshake needs, whatever the caller asks. */
#ifndef MP_NET_CONN_TLS_H
#define MP_NET_CONN_TLS_H
#include <stdbool.h>
#include <stddef.h>

#include "net/conn.h"
#include "net/tls.h"

/* The server side of a handshake on the attached descriptor.  0, or -1 (out
 * of memory). */
int mp_conn_tls_accept(struct mp_conn *c, SSL_CTX *ctx);
/* The client side (after mp_conn_connected() returned 0): SNI for a host
 * name, and with verify the name the certificate must carry.  0, or -1 with
 * why. */
int mp_conn_tls_connect(struct mp_conn *c, SSL_CTX *ctx, const char *host, bool verify,
                        const char **why);
/* Drives the handshake: 1 done, 0 wait (mp_conn_want() waits for what it
 * needs), -1 failed with why filled. */
int mp_conn_tls_handshake(struct mp_conn *c, char *why, size_t wn);
static inline bool mp_conn_tls_handshaking(const struct mp_conn *c)
{
    return c->tls.handshaking;
}
/* Takes over TLS state set up elsewhere (a handshake done before, or plain
 * mp_tls): it moves into c->tls and *t is cleared. */
void mp_conn_use_tls(struct mp_conn *c, struct mp_tls *t);
/* OpenSSL holds bytes already read from the socket: read again before
 * waiting for the descriptor (it may stay quiet). */
bool mp_conn_tls_pending(const struct mp_conn *c);
/* Ends TLS but not the connection: close_notify (best effort, once the
 * handshake is done), the TLS state freed; reads and writes go on plain
 * (a lingering close that reads and drops what the peer still sends). */
void mp_conn_tls_end(struct mp_conn *c);
/* For a hand-over (mp_conn_release): the TLS state moves to *t, and the
 * connection forgets it. */
void mp_conn_tls_release(struct mp_conn *c, struct mp_tls *t);
#endif
