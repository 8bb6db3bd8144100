/* RPC over HTTP on the HTTPS front's handler route (/rpc/rpcproxy.dll,
 * methods RPC_IN_DATA and RPC_OUT_DATA): the handed-over connections are
 * the channels of transport/rpch/rpch.h. */
#ifndef MP_TRANSPORT_RPCH_HCHAN_H
#define MP_TRANSPORT_RPCH_HCHAN_H
#include "core/config.h"
#include "event/loop.h"

struct mp_http;
struct mp_rpch_http;

/* With mapiproxy:rpc over http: registers the route on the front; each
 * virtual connection's inner DCE/RPC goes to adopt(data, ...)
 * (mp_relay_adopt).  *out NULL when the option is off.  0 or -1. */
int mp_rpch_http_setup(struct mp_loop *loop, const struct mp_config *cfg, struct mp_http *http,
                       void (*adopt)(void *, int, const char *, uint16_t), void *data,
                       struct mp_rpch_http **out);
/* Closes every channel and virtual connection (before mp_http_free). */
void mp_rpch_http_free(struct mp_rpch_http *o);
#endif
