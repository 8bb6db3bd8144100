/* The seam for another carrier of DCE/RPC PDUs (RPC over HTTP, issue 17).
 *
 * On ncacn_ip_tcp an association's client leg is a TCP connection the
 * transport reads and writes itself.  Another carrier (an RPC-over-HTTP
 * virtual connection, whose IN channel brings the client's PDUs and whose
 * OUT channel takes the answers) opens an association with
 * mp_dce_assoc_open() and then:
 *   - feeds it the client's bytes with mp_dce_assoc_input() (whole or
 *     partial PDUs, in order; the association reassembles them),
 *   - is handed what goes to the client through ops->flush() (it takes what
 *     it can from the buffer and consumes it; the rest stays queued),
 *   - calls mp_dce_assoc_writable() when it can take more after having
 *     taken less than offered,
 *   - is told by ops->want_input() whether the association reads more now
 *     (back-pressure: false while the upstream or the client is behind, or
 *     128 calls are in flight); input fed while false is kept, not lost,
 *   - is told by ops->closed() that the association ended (after its last
 *     flush); it must not call in again with that association,
 *   - or ends it first with mp_dce_assoc_close().
 * Everything else (binds, security contexts, calls, the module chain, the
 * upstream connection, timeouts and logs) is the same code as for TCP.
 *
 * Only the loop thread calls in.  The association's memory stays valid until
 * the current batch of loop events is over (mp_loop_defer), so a carrier may
 * still look at its own pointer after a call that closed it. */
#ifndef MP_TRANSPORT_DCERPC_CARRIER_H
#define MP_TRANSPORT_DCERPC_CARRIER_H
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "transport/dcerpc/dcerpc.h"

struct assoc;

struct mp_dce_carrier_ops {
    /* Takes bytes for the client from out (mp_buf_consume what it took).
     * 0, or -1 when the carrier cannot send any more (the association then
     * closes). */
    int (*flush)(void *carrier, struct mp_buf *out);
    /* Whether the association wants more input now. */
    void (*want_input)(void *carrier, bool want);
    /* The association ended (reason as in its log line). */
    void (*closed)(void *carrier, const char *reason);
};

/* A new association whose client leg is the carrier; peer names the client
 * in log lines (e.g. "10.0.0.5:51234 (rpch)"); host is the client's address
 * (IPv4 or IPv6 text), counted against mapiproxy:max connections per
 * address (NULL: not counted).  epm: the association serves the proxy's own
 * endpoint mapper (as on the epmapper port).  NULL when out of memory or
 * over mapiproxy:max connections (per address) (logged). */
struct assoc *mp_dce_assoc_open(struct mp_relay *r, const struct mp_dce_carrier_ops *ops,
                                void *carrier, const char *peer, const char *host, bool epm);
/* Client bytes in.  0, or -1 when the association closed (ops->closed ran). */
int mp_dce_assoc_input(struct assoc *a, const void *p, size_t len);
/* The carrier can take output again. */
void mp_dce_assoc_writable(struct assoc *a);
/* The carrier is gone: closes the association (ops->closed is not called). */
void mp_dce_assoc_close(struct assoc *a, const char *reason);
#endif
