/* The metrics endpoint: plain HTTP/1.1 on mapiproxy:metrics listen, serving
 * GET /metrics (Prometheus text format 0.0.4) and GET /health
 * (doc/monitoring.md).  One request per connection, then close. */
#ifndef MP_OPS_STATS_HTTP_H
#define MP_OPS_STATS_HTTP_H
#include <stdint.h>

#include "event/loop.h"

/* Starts the endpoint (once per process; its state is static, so it lives
 * as long as the loop runs).  -1 (logged) when the address cannot be bound. */
int mp_stats_http_start(struct mp_loop *loop, const char *host, uint16_t port);
#endif
