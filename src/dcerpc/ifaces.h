/* Names of well-known interfaces and their operations, for logs and traces. */
#ifndef MP_IFACES_H
#define MP_IFACES_H
#include <stdint.h>

#include "dcerpc/pdu.h"

struct mp_iface_info {
    const char *name;
    struct mp_syntax syntax;
    const char *const *ops;
    uint16_t n_ops;
};

/* NULL when the UUID is not one we know. */
const struct mp_iface_info *mp_iface_by_uuid(const uint8_t uuid[16]);
/* The operation's name, or NULL. */
const char *mp_iface_op_name(const struct mp_iface_info *info, uint16_t opnum);
#endif
