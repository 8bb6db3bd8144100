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
/* mapiproxy:rpc over http: each virtual connection's inner DCE/RPC stream
 * goes to adopt(data, fd, client host, client port) (mp_relay_adopt). */
int mp_http_set_rpch(struct mp_http *h, void (*adopt)(void *, int, const char *, uint16_t),
                     void *data);
/* Closes the listeners and every connection. */
void mp_http_free(struct mp_http *h);
#endif
