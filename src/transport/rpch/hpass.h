/* HTTP logon pass-through for RPC over HTTP toward an RPC over HTTP
 * upstream (mapiproxy:http auth = pass-through with mapiproxy:rpc over http
 * upstream): the logon legs of one client channel connection (a request
 * without a body carrying Authorization, the upstream's 401) are relayed to
 * one upstream connection pinned to it; the channel request itself (the one
 * with a body) ends the legs: its Authorization line and the pinned
 * connection become the upstream client's channel (upclient.h pins).
 * doc/internals/rpch.md. */
#ifndef MP_TRANSPORT_RPCH_HPASS_H
#define MP_TRANSPORT_RPCH_HPASS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "event/loop.h"

struct mp_rpch_pin;
struct mp_rpch_pass; /* process-wide: the upstream's address and TLS context */
struct mp_rpch_leg;  /* one client connection's legs */

/* NULL when pass-through does not apply (*failed false), or after a logged
 * error (*failed true). */
struct mp_rpch_pass *mp_rpch_pass_new(struct mp_loop *loop, const struct mp_config *cfg,
                                      bool *failed);
void mp_rpch_pass_free(struct mp_rpch_pass *p);

struct mp_rpch_leg_host {
    void (*send)(void *owner, const uint8_t *p, size_t n); /* to the client */
    void (*fail)(void *owner, const char *why);            /* close the client */
    /* The channel request: method RPC_OUT_DATA when out, its Content-Length,
     * whether it asked for 100 Continue, the pin (taken over), the body bytes
     * that came with it. */
    void (*channel)(void *owner, bool out, uint64_t length, bool cont, struct mp_rpch_pin *pin,
                    const uint8_t *rest, size_t rest_len);
};

/* A client request head: method (RPC_IN_DATA / RPC_OUT_DATA), target
 * (path and query), its Authorization value (NULL: none), Content-Length;
 * rest: the bytes after the head.  Returns the legs' state (NULL: fail
 * called) or, for a channel request at once, NULL after channel(). */
struct mp_rpch_leg *mp_rpch_leg_start(struct mp_rpch_pass *p, const struct mp_rpch_leg_host *h,
                                      void *owner, const char *method, const char *target,
                                      size_t target_len, const char *authz, size_t authz_len,
                                      uint64_t length, bool cont, const uint8_t *rest,
                                      size_t rest_len);
/* More client bytes (the next request).  false when the legs are over
 * (channel() or fail() ran; the leg is freed). */
bool mp_rpch_leg_client_data(struct mp_rpch_leg *l, const uint8_t *p, size_t n);
/* The client connection is gone. */
void mp_rpch_leg_free(struct mp_rpch_leg *l);
#endif
