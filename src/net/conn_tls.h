/* TLS (net/tls.h) under a connection (net/conn.h): mp_conn_use_tls() makes
 * the connection read and write through t, so a transport that took over a
 * TLS connection (the HTTPS front's handler routes hand one over with its
 * TLS session) keeps the buffered I/O of struct mp_conn.  The handshake is
 * done before (mp_tls_handshake); t stays the caller's and must outlive the
 * connection's use of it (mp_conn_close() lets go of it, without freeing). */
#ifndef MP_NET_CONN_TLS_H
#define MP_NET_CONN_TLS_H
#include <stdbool.h>

#include "net/conn.h"
#include "net/tls.h"

void mp_conn_use_tls(struct mp_conn *c, struct mp_tls *t);
/* OpenSSL holds bytes already read from the socket: read again before
 * waiting for the descriptor (it may stay quiet). */
bool mp_conn_tls_pending(const struct mp_conn *c);
#endif
