/* RPC over HTTP on the HTTPS front's handler route (/rpc/rpcproxy.dll,
 * methods RPC_IN_DATA and RPC_OUT_DATA): the handed-over connections are
 * the channels of transport/rpch/rpch.h. */
#ifndef MP_TRANSPORT_RPCH_HCHAN_H
#define MP_TRANSPORT_RPCH_HCHAN_H
#include <stddef.h>

#include "core/config.h"
#include "event/loop.h"

struct mp_http;
struct mp_rpch_http;

struct mp_relay;
/* With mapiproxy:rpc over http: registers the route on the front; each
 * virtual connection's inner DCE/RPC is an association of relay (through
 * transport/dcerpc/carrier.h).  *out NULL when the option is off.  0 or -1. */
int mp_rpch_http_setup(struct mp_loop *loop, const struct mp_config *cfg, struct mp_http *http,
                       struct mp_relay *relay, struct mp_rpch_http **out);
/* Channels open on o (a reload keeps their generation until none is
 * left: a channel waiting for its partner too). */
size_t mp_rpch_http_live(const struct mp_rpch_http *o);
/* Closes every channel and virtual connection (before mp_http_free). */
void mp_rpch_http_free(struct mp_rpch_http *o);
#endif
