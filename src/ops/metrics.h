/* Counters for the metrics endpoint (src/ops/stats_http.c, doc/monitoring.md).
 *
 * Fixed arrays, no allocation: interfaces by their mp_iface_info (at most
 * MP_METRICS_IFACES, the rest counted as "other"), operations by opnum (below
 * MP_METRICS_OPS; higher ones as op="other").  The hooks are one-line calls
 * at the sites that log the same event (the relay's and the HTTP front's
 * per-call lines, accept, authentication, upstream failures). */
#ifndef MP_OPS_METRICS_H
#define MP_OPS_METRICS_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "dcerpc/ifaces.h"

#define MP_METRICS_IFACES 16
#define MP_METRICS_OPS 64

/* A connection accepted on a listener ("epmapper", "rpc", "http"). */
void mp_metrics_accepted(const char *listener);
/* A connection of a listener opened (+1) or closed (-1). */
void mp_metrics_open(const char *listener, int delta);
/* One DCE/RPC call answered: status is the relay's log status ("ok",
 * "ok(module)", "fault:0x...", "fault:0x...(module)", "upstream-failed", ...). */
void mp_metrics_call(const struct mp_iface_info *info, uint16_t opnum, uint64_t in, uint64_t out,
                     uint64_t t0_us, const char *status);
/* One HTTP request: its X-RequestType (or ""), HTTP status (0: none sent).
 * t0_us: when the call or request began (mp_now_us()). */
void mp_metrics_http(const char *type, int status, uint64_t in, uint64_t out, uint64_t t0_us);
/* A client's authentication: mech as logged ("NTLM", "SPNEGO/Kerberos", "Basic", ...). */
void mp_metrics_auth(const char *mech, bool ok);
/* The upstream failed; why is the log text ("... connect failed ...", "... did not answer ..."). */
void mp_metrics_upstream_error(const char *why);

/* An affinity table (core/affinity.h) named table kept no new key because
 * every entry was pinned (full), or pushed out a free entry (!full). */
void mp_metrics_affinity(const char *table, bool full);

/* The Prometheus text exposition (format 0.0.4) of every counter. */
int mp_metrics_render(struct mp_buf *out);
/* false when the last upstream event, within the last 60 s, was a failure. */
bool mp_metrics_healthy(void);
/* Back to zero (tests). */
void mp_metrics_reset(void);
#endif
