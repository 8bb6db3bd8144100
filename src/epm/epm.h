/* Endpoint mapper (epmapper v3.0, C706 appendix I / MS-RPCE 2.2.1.2): the
 * proxy's own service (ept_map, ept_lookup, ept_lookup_handle_free) and the
 * client side it uses to find the upstream's ports. */
#ifndef MP_EPM_H
#define MP_EPM_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"

#define MP_EPM_OP_LOOKUP 2
#define MP_EPM_OP_MAP 3
#define MP_EPM_OP_LOOKUP_HANDLE_FREE 4
#define MP_EPT_S_NOT_REGISTERED 0x16c9a0d6u
#define MP_EPM_MAX_ENTRIES 64

extern const struct mp_syntax mp_epm_syntax;

struct mp_epm_entry {
    struct mp_syntax iface;
    uint16_t port;
    char annotation[64];
};

/* What the proxy's own epmapper answers: every relayed interface at the
 * proxy's address (given per call: the address the client reached) and port. */
struct mp_epm_registry {
    struct mp_epm_entry e[MP_EPM_MAX_ENTRIES];
    size_t n;
};

struct mp_tower {
    struct mp_syntax iface;
    struct mp_syntax transfer;
    uint8_t proto; /* 0x0b connection-oriented */
    uint16_t port; /* host order; 0 when absent */
    uint32_t ipv4; /* network order; 0 when absent */
    int floors;
};

/* Encodes an ncacn_ip_tcp tower; returns its length or 0 if cap too small. */
size_t mp_tower_build(uint8_t *out, size_t cap, const struct mp_syntax *iface, uint16_t port,
                      uint32_t ipv4_netorder);
int mp_tower_parse(const uint8_t *t, size_t len, struct mp_tower *tw);

/* Serves one epmapper call: appends the response stub to out.  Returns 0,
 * or a fault status (nca_op_rng_error, nca_s_fault_ndr) when it cannot. */
uint32_t mp_epm_serve(const struct mp_epm_registry *reg, uint32_t ipv4_netorder, uint16_t opnum,
                      const uint8_t *stub, size_t len, struct mp_buf *out);

/* Client side: the ept_map request stub asking for iface over ncacn_ip_tcp,
 * and the port found in its answer (0 when not registered; -1 malformed). */
int mp_epm_map_request(struct mp_buf *out, const struct mp_syntax *iface);
int mp_epm_map_response(const uint8_t *stub, size_t len, uint16_t *port, uint32_t *status);
#endif
