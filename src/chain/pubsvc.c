/* Public services that let the built-in modules (modules/rewrite, trace)
 * build with -I include only (module.h: "the proxy's names", "operation
 * names", mp_call_rop_buffer_json). */
#include <stdio.h>
#include <string.h>

#include "chain/chain.h"
#include "codec/gen/emsmdb.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "dcerpc/ifaces.h"
#include "mapiproxy/module.h"
#include "rop/rop.h"
#include "rop/rpcext.h"

const char *mp_module_proxy_name(const struct mp_module_ctx *mc, enum mp_proxy_name which)
{
    const struct mp_config *cfg = mc ? mc->cfg : NULL;
    if (!cfg)
        return NULL;
    switch (which) {
    case MP_PROXY_NETBIOS_NAME:
        return cfg->netbios_name;
    case MP_PROXY_REALM:
        return cfg->realm;
    case MP_PROXY_UPSTREAM_HOST:
        return cfg->binding.host;
    }
    return NULL;
}

const char *mp_iface_op(const char *iface, uint32_t opnum)
{
    struct mp_iface_spec spec;
    if (!iface || opnum > 0xffff || mp_iface_parse(iface, &spec))
        return NULL;
    const struct mp_iface_info *info = mp_iface_by_uuid(spec.uuid);
    return info ? mp_iface_op_name(info, (uint16_t)opnum) : NULL;
}

/* Each RPC_HEADER_EXT payload of rgb[0..len) decoded on its own, to show
 * where decoding fails. */
static void rop_buffers(struct mp_json *j, const uint8_t *rgb, size_t len, bool response)
{
    struct mp_rpcext x;
    if (mp_rpcext_parse(&x, rgb, len)) {
        mp_json_str(j, "undecodable RPC_HEADER_EXT chain");
        return;
    }
    struct mp_arena arena;
    mp_arena_init(&arena);
    mp_json_arr_begin(j);
    for (size_t i = 0; i < x.n; i++) {
        size_t n;
        const uint8_t *p = mp_rpcext_content(&x, i, &n);
        struct mp_rop_buf b;
        int rc = p ? mp_rop_decode(&b, p, n, response, NULL, &arena) : -1;
        if (rc == MP_ROP_OK) {
            mp_rop_print(j, &b);
        } else {
            mp_json_obj_begin(j);
            mp_json_key(j, "undecodable");
            mp_json_str(j, rc == MP_ROP_UNDECODABLE && b.why ? b.why : "error");
            mp_json_key(j, "offset");
            mp_json_u64(j, rc == MP_ROP_UNDECODABLE ? b.bad_off : 0);
            mp_json_obj_end(j);
        }
    }
    mp_json_arr_end(j);
    mp_arena_free(&arena);
    mp_rpcext_free(&x);
}

const char *mp_call_rop_buffer_json(struct mp_call *call, bool response)
{
    if (strcmp(mp_call_iface(call), "exchange_emsmdb") || mp_call_opnum(call) != 11)
        return NULL;
    const uint8_t *rgb = NULL;
    size_t len = 0;
    if (response) {
        const struct emsmdb_EcDoRpcExt2_out *o = mp_call_response(call);
        if (o && o->rgbOut) {
            rgb = o->rgbOut;
            len = o->pcbOut;
        }
    } else {
        const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(call);
        if (in && in->rgbIn) {
            rgb = in->rgbIn;
            len = in->cbIn;
        }
    }
    if (!rgb || !len)
        return NULL;
    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    rop_buffers(&j, rgb, len, response);
    const char *out = NULL;
    if (!j.err && mp_buf_append(&b, "", 1) == 0)
        out = mp_call_strdup(call, (const char *)b.data);
    mp_buf_free(&b);
    return out;
}
