/* RPC over HTTP v2 as the relay's upstream (mapiproxy:rpc over http upstream):
 * the proxy is the RPC over HTTP client of the server's /rpc/rpcproxy.dll
 * (MS-RPCH 3.2.2: CONN/A1 on RPC_OUT_DATA, CONN/B1 on RPC_IN_DATA, CONN/A3
 * and CONN/C2 awaited, flow control both ways, Ping on an idle IN channel).
 *
 * Each association's upstream connection is one virtual connection.  The
 * association sees a connected stream socket (one end of a socketpair)
 * carrying the inner DCE/RPC PDUs; the other end is read and written here.
 * doc/internals/rpch.md. */
#ifndef MP_TRANSPORT_RPCH_UPCLIENT_H
#define MP_TRANSPORT_RPCH_UPCLIENT_H
#include <stdint.h>

#include "core/config.h"
#include "event/loop.h"

struct mp_rpch_up;

/* NULL when the option is off (*failed false) or after a logged error
 * (*failed true: address, TLS context, password file). */
struct mp_rpch_up *mp_rpch_up_new(struct mp_loop *loop, const struct mp_config *cfg, bool *failed);
/* Closes every virtual connection. */
void mp_rpch_up_free(struct mp_rpch_up *u);
/* A virtual connection to ?SERVER:port (peer names the association in log
 * lines): the caller's end of its socketpair (non-blocking), or -1. */
int mp_rpch_up_open(struct mp_rpch_up *u, const char *peer, uint16_t port);
#endif
