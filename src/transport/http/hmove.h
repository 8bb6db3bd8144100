/* The HTTPS front with several workers (doc/internals/workers.md, "The
 * HTTPS front on every worker"): a client connection moved to another
 * worker at a request boundary, and the process-wide table that says which
 * worker holds each MAPI/HTTP session.
 *
 * Every worker runs a front of its own (its own listening socket,
 * SO_REUSEPORT).  A request is served where it was read unless
 *   - it carries a MAPI/HTTP session cookie (MapiContext, gromox's sid) that
 *     the table names another worker for: that worker holds the session's
 *     module state and its cookie owners;
 *   - it is RPC over HTTP with logons passed through to an RPC over HTTP
 *     upstream, on a worker other than 0: that runs on worker 0 only (with
 *     terminated logons every worker serves RPC over HTTP, and a channel
 *     goes to its virtual connection's worker later, in rpch/hchan.c).
 * Then the connection (descriptor, TLS state, the client's logon of the
 * connection, the request head rebuilt as bytes, what was read after it,
 * what was still queued for the client) goes to that worker's mailbox
 * before anything went upstream; the upstream leg is closed, and the
 * worker that adopts it parses the request again from its bytes. */
#ifndef MP_HTTP_HMOVE_H
#define MP_HTTP_HMOVE_H
#include <stdbool.h>
#include <stddef.h>

struct mp_config;

struct hconn;

/* On a complete request head (route found, before the logon): 0 to serve it
 * here, else 1 + the worker to move the connection to. */
unsigned mp_hm_target(struct hconn *s);
/* Moves the connection to worker s->move_to - 1 (the request parser paused
 * on the head); s is closed either way. */
void mp_hm_move(struct hconn *s);
/* A successful /mapi/ response: a session cookie it sets is held by this
 * worker from now on, pinned in the table while the session lives; a
 * Disconnect or Unbind forgets the request's. */
void mp_hm_response(struct hconn *s);
/* The fronts in the process: the table goes with the last one; its size
 * is the newest front's mapiproxy:affinity table size. */
void mp_hm_front_added(const struct mp_config *cfg);
void mp_hm_front_gone(void);
#endif
