/* mapiproxy module API: NDR types the generated call structures
 * (include/mapiproxy/calls/) use.  Hand-written; included by them. */
#ifndef MAPIPROXY_NDR_TYPES_H
#define MAPIPROXY_NDR_TYPES_H
#include <stdint.h>

/* A context handle (policy handle): attributes and a UUID, 20 bytes on the
 * wire.  EMSMDB's CXH, NSPI's and RFR's handles. */
struct mp_ctxh {
    uint32_t attr;
    uint8_t uuid[16];
};
#endif
