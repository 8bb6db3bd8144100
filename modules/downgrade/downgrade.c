/* downgrade: keeps Outlook on the Exchange 2000 EMSMDB protocol.
 *
 * EcDoConnectEx gets the fault nca_op_rng_error (0x1c010002) without
 * reaching the server, so the client falls back to EcDoConnect and EcDoRpc,
 * whose ROP buffers are only XOR-obfuscated; the store version in
 * EcDoConnect's answer is rewritten to an Exchange 2000 one, or Outlook
 * would retry EcDoConnectEx (an Exchange 2003 version makes it retry
 * forever).  Option:
 *   downgrade:server version = 6.4417.5   (three numbers: . or , separated,
 *                                          decimal or 0x; OpenChange used 6.0x1141.5)
 */
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/calls.h"
#include "mapiproxy/module.h"

#define OP_ECDOCONNECT 0
#define OP_ECDOCONNECTEX 10
#define NCA_OP_RNG_ERROR 0x1c010002u

struct dg_conf {
    uint16_t version[3];
};

static int dg_init(struct mp_module_ctx *mc)
{
    struct dg_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->version[0] = 0x0006;
    c->version[1] = 0x1141;
    c->version[2] = 0x0005;
    const char *v = mp_module_option(mc, "server version");
    if (v) {
        const char *p = v;
        for (int i = 0; i < 3; i++) {
            char *end;
            unsigned long n = strtoul(p, &end, 0);
            if (end == p || n > 0xffff || (i < 2 && *end != '.' && *end != ',') ||
                (i == 2 && *end)) {
                mp_module_log(mc, MP_MLOG_ERROR,
                              "server version \"%s\" is not three numbers up to 65535 such as "
                              "6.4417.5; fix downgrade:server version",
                              v);
                free(c);
                return -1;
            }
            c->version[i] = (uint16_t)n;
            p = end + 1;
        }
    }
    mp_module_set_private(mc, c);
    return 0;
}

static void dg_fini(struct mp_module_ctx *mc)
{
    free(mp_module_private(mc));
}

static enum mp_status dg_dispatch(struct mp_module_ctx *mc, struct mp_call *call)
{
    if (mp_call_opnum(call) != OP_ECDOCONNECTEX)
        return MP_CONTINUE;
    mp_module_log(mc, MP_MLOG_INFO,
                  "%s: EcDoConnectEx refused so the client falls back to "
                  "EcDoConnect",
                  mp_call_peer(call));
    mp_call_fault(call, NCA_OP_RNG_ERROR);
    return MP_STOP;
}

static enum mp_status dg_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    if (mp_call_opnum(call) != OP_ECDOCONNECT)
        return MP_CONTINUE;
    struct emsmdb_EcDoConnect_out *out = mp_call_response(call);
    if (!out) {
        mp_module_log(mc, MP_MLOG_WARN, "%s: EcDoConnect answer does not decode; left as is",
                      mp_call_peer(call));
        return MP_CONTINUE;
    }
    const struct dg_conf *c = mp_module_private(mc);
    memcpy(out->rgwServerVersion, c->version, sizeof(c->version));
    mp_call_response_changed(call);
    return MP_CONTINUE;
}

static const struct mp_module_want dg_wants[] = {
    {"exchange_emsmdb", OP_ECDOCONNECT},
    {"exchange_emsmdb", OP_ECDOCONNECTEX},
    {NULL, 0},
};

const struct mp_module mp_builtin_downgrade = {
    MP_MODULE_HEADER,
    .name = "downgrade",
    .description = "forces the Exchange 2000 EMSMDB protocol (EcDoConnect/EcDoRpc)",
    .wants = dg_wants,
    .init = dg_init,
    .fini = dg_fini,
    .dispatch = dg_dispatch,
    .push = dg_push,
};
