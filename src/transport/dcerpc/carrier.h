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
 *     it can from the buffer and consumes it; the rest stays queued): after
 *     the carrier's own calls in, after an answer, or, for output queued
 *     from elsewhere (a winbind answer), on the next loop turn (a zero
 *     timer, as for the server leg),
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
 * still look at its own pointer after a call that closed it.
 *
 * The server leg has the same seam (struct mp_dce_up_ops, below): an
 * association's upstream connection is either its TCP connection or a
 * carrier (the RPC over HTTP upstream client, transport/rpch/upclient.c),
 * which the association opens where it would connect (assoc.c
 * start_connect: mp_rpch_up_open returns the carrier and its ops) and which
 *   - is handed the PDUs for the server through ops->flush() (it takes
 *     whole or partial PDUs and consumes what it took; what it leaves stays
 *     queued in the association, under mapiproxy:max buffer and the send
 *     timeout as for a TCP upstream that does not read),
 *   - calls mp_dce_up_writable() when it can take more after having taken
 *     less than offered,
 *   - feeds the server's bytes with mp_dce_up_input() while
 *     ops->want_input() last said true (false while the client leg is
 *     behind); input fed while false is kept, not lost,
 *   - ends the leg with mp_dce_up_failed(why) (the association's usual
 *     "upstream <why>": faults for the calls in flight, then close), or is
 *     told by ops->closed() that the association let go of the leg.
 * Re-entrancy: the association calls the carrier's ops from inside its own
 * processing, so an op never calls back into the association (no
 * mp_dce_up_input, _writable, _failed from inside flush, want_input or
 * closed): what it would hand over waits for its next event (a channel's
 * I/O, a zero timer).  The carrier calls in only from its own loop events;
 * after mp_dce_up_failed, or once closed() ran, it never calls in again
 * with that association. */
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

/* ---- the server leg ---- */

struct mp_dce_up_ops {
    /* Takes bytes for the server from out (mp_buf_consume what it took).
     * 0, or -1 when the carrier failed (it logged why; the association then
     * fails its upstream leg without calling closed()). */
    int (*flush)(void *up, struct mp_buf *out);
    /* Whether the association takes the server's bytes now. */
    void (*want_input)(void *up, bool want);
    /* The association let go of its upstream leg (closed, or failed it). */
    void (*closed)(void *up);
};

/* Server bytes in (whole or partial PDUs, in order).  0, or -1 when the
 * association let go of the leg (ops->closed ran) or closed. */
int mp_dce_up_input(struct assoc *a, const void *p, size_t len);
/* The carrier can take output again. */
void mp_dce_up_writable(struct assoc *a);
/* The carrier failed (why: for the association's log line and metrics,
 * e.g. "OUT channel: connect failed: ..."): ops->closed is not called. */
void mp_dce_up_failed(struct assoc *a, const char *why);
#endif
