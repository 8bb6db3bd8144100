/* The HTTPS front: MAPI over HTTP and Autodiscover relayed to an HTTPS
 * upstream, one upstream connection per client connection
 * (doc/internals/http.md). */
#ifndef MP_HTTP_FRONT_H
#define MP_HTTP_FRONT_H
#include <stdint.h>

#include "core/config.h"
#include "event/loop.h"

struct mp_http;

/* Loads the certificates, resolves the upstream and binds every
 * mapiproxy:http listen address.  NULL after logging what failed. */
struct mp_http *mp_http_new(struct mp_loop *loop, const struct mp_config *cfg);
struct mp_modules;
/* MAPI/HTTP requests that modules want go through this chain (the relay's:
 * mp_relay_modules), decoded into their RPC twins (src/mapihttp/mhcall.h). */
void mp_http_set_modules(struct mp_http *h, struct mp_modules *mods);
/* A transport that serves a path itself (RPC over HTTP): requests whose
 * path matches prefix (see src/transport/http/route.h for the matching and
 * for what take() gets) are handed to take() with their connection, once
 * the request head is complete and, with mapiproxy:http auth = terminate,
 * the client logged on.  ext_methods: methods http-parser does not know
 * that this route takes ("RPC_IN_DATA RPC_OUT_DATA"), or NULL.  0 or -1. */
#include "transport/http/route.h"
int mp_http_add_handler(struct mp_http *h, const char *prefix, bool any_tail,
                        const char *ext_methods, mp_http_take_fn take, void *arg);
/* Closes the listeners and every connection. */
void mp_http_free(struct mp_http *h);
/* Reload: stop accepting (connections go on); how many connections are left. */
void mp_http_stop_listening(struct mp_http *h);
size_t mp_http_live(const struct mp_http *h);
/* MAPI/HTTP module sessions still open on h (after dropping those idle for
 * two hours), counting requests of newer fronts that use them now: an old
 * generation stays until this and mp_http_live are 0. */
size_t mp_http_sessions(struct mp_http *h);
/* A reload: h (new) shares prev's table of who each session cookie was
 * issued to. */
void mp_http_share_owners(struct mp_http *h, struct mp_http *prev);
#endif
