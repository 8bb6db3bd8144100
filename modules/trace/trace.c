/* trace: every decoded call as one JSON line per request and per response
 * (OpenChange's ndrdump, which `dcerpc_mapiproxy:ndrdump = yes` turns on).
 * Options:
 *   trace:file = PATH            JSON lines appended there (default: the log, at info)
 *   trace:interfaces = LIST      exchange_emsmdb, exchange_nsp, exchange_ds_rfr,
 *                                exchange_async_emsmdb (default: all four)
 *   trace:operations = LIST      operation names or opnums (default: all)
 * Calls without a codec are written with their size and the raw stub in hex. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/gen/emsmdb.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/json.h"
#include "dcerpc/ifaces.h"
#include "mapiproxy/module.h"
#include "rop/rop.h"
#include "rop/rpcext.h"

struct trace_conf {
    FILE *fp;
    char *ifaces, *ops; /* the filters, NULL = all */
};

static const char *const all_ifaces[] = {"exchange_emsmdb", "exchange_nsp", "exchange_ds_rfr",
                                         "exchange_async_emsmdb"};

static bool in_list(const char *list, const char *word)
{
    if (!list)
        return true;
    size_t n = strlen(word);
    for (const char *p = list; (p = strstr(p, word)); p += n) {
        bool start = p == list || strchr(" ,\t", p[-1]);
        bool end = !p[n] || strchr(" ,\t", p[n]);
        if (start && end)
            return true;
    }
    return false;
}

static int trace_init(struct mp_module_ctx *mc)
{
    struct trace_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    const char *file = mp_module_option(mc, "file");
    if (file) {
        c->fp = fopen(file, "a");
        if (!c->fp) {
            mp_module_log(mc, MP_MLOG_ERROR, "cannot open trace:file %s: %s", file,
                          strerror(errno));
            free(c);
            return -1;
        }
        setvbuf(c->fp, NULL, _IOLBF, 0);
    }
    const char *ifaces = mp_module_option(mc, "interfaces");
    const char *ops = mp_module_option(mc, "operations");
    if ((ifaces && !(c->ifaces = strdup(ifaces))) || (ops && !(c->ops = strdup(ops))))
        goto fail;
    for (size_t i = 0; i < sizeof(all_ifaces) / sizeof(all_ifaces[0]); i++) {
        if (!in_list(ifaces, all_ifaces[i]))
            continue;
        struct mp_iface_spec spec;
        const struct mp_iface_info *info =
            mp_iface_parse(all_ifaces[i], &spec) == 0 ? mp_iface_by_uuid(spec.uuid) : NULL;
        if (!ops || !info) {
            if (mp_module_want(mc, all_ifaces[i], MP_ALL_OPS))
                goto fail;
            continue;
        }
        for (uint16_t op = 0; op < info->n_ops; op++) {
            char num[8];
            snprintf(num, sizeof(num), "%u", op);
            if ((in_list(ops, info->ops[op]) || in_list(ops, num)) &&
                mp_module_want(mc, all_ifaces[i], op))
                goto fail;
        }
    }
    mp_module_set_private(mc, c);
    return 0;
fail:
    if (c->fp)
        fclose(c->fp);
    free(c->ifaces);
    free(c->ops);
    free(c);
    return -1;
}

static void trace_fini(struct mp_module_ctx *mc)
{
    struct trace_conf *c = mp_module_private(mc);
    if (c && c->fp)
        fclose(c->fp);
    if (c) {
        free(c->ifaces);
        free(c->ops);
    }
    free(c);
}

static void trace_rops(struct mp_json *j, struct mp_call *call, bool response);

static void trace_line(struct mp_module_ctx *mc, struct mp_call *call, bool response)
{
    const struct trace_conf *c = mp_module_private(mc);
    /* the ROP hooks bring EMSMDB calls the filters may not have asked for */
    char num[32];
    snprintf(num, sizeof(num), "%u", mp_call_opnum(call));
    if (!in_list(c->ifaces, mp_call_iface(call)) ||
        (c->ops && !in_list(c->ops, num) &&
         !(mp_call_op_name(call) && in_list(c->ops, mp_call_op_name(call)))))
        return;
    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    mp_json_obj_begin(&j);
    snprintf(num, sizeof(num), "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    mp_json_key(&j, "ts");
    mp_json_raw(&j, num);
    mp_json_key(&j, "dir");
    mp_json_str(&j, response ? "response" : "request");
    mp_json_key(&j, "session");
    mp_json_u64(&j, mp_session_id(mp_call_session(call)));
    mp_json_key(&j, "peer");
    mp_json_str(&j, mp_call_peer(call));
    mp_json_key(&j, "iface");
    mp_json_str(&j, mp_call_iface(call));
    mp_json_key(&j, "opnum");
    mp_json_u64(&j, mp_call_opnum(call));
    mp_json_key(&j, "op");
    if (mp_call_op_name(call))
        mp_json_str(&j, mp_call_op_name(call));
    else
        mp_json_null(&j);
    size_t len;
    const uint8_t *stub =
        response ? mp_call_response_stub(call, &len) : mp_call_request_stub(call, &len);
    mp_json_key(&j, "stub_len");
    mp_json_u64(&j, len);
    const char *dec = mp_call_json(call, response);
    if (dec) {
        mp_json_key(&j, response ? "out" : "in");
        mp_json_raw(&j, dec);
        size_t nrops = mp_call_rop_count(call, response);
        if (nrops) { /* decoded by the module chain, with their server objects */
            mp_json_key(&j, "rops");
            mp_json_arr_begin(&j);
            for (size_t i = 0; i < nrops; i++) {
                const char *r = mp_call_rop_json(call, response, i);
                if (r)
                    mp_json_raw(&j, r);
            }
            mp_json_arr_end(&j);
        } else {
            trace_rops(&j, call, response);
        }
    } else {
        mp_json_key(&j, "raw");
        mp_json_hex(&j, stub, len);
    }
    mp_json_obj_end(&j);
    if (!j.err) {
        if (c->fp && !mp_buf_append(&b, "\n", 1)) {
            /* one write(2) per line on the O_APPEND file: the instances of
             * several workers append to it and lines must not interleave */
            const uint8_t *p = b.data;
            for (size_t left = b.len; left;) {
                ssize_t w = write(fileno(c->fp), p, left);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                p += w;
                left -= (size_t)w;
            }
        } else if (c->fp) {
            fwrite(b.data, 1, b.len, c->fp);
            fputc('\n', c->fp);
        } else {
            mp_buf_append(&b, "", 1);
            mp_module_log(mc, MP_MLOG_INFO, "%s", (const char *)b.data);
        }
    }
    mp_buf_free(&b);
}

/* ROP buffers the chain could not decode: RPC_HEADER_EXT payloads, un-XORed
 * and decompressed, each decoded on its own, to show where it fails. */
static void trace_rops(struct mp_json *j, struct mp_call *call, bool response)
{
    if (strcmp(mp_call_iface(call), "exchange_emsmdb") || mp_call_opnum(call) != 11)
        return;
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
        return;
    struct mp_rpcext x;
    mp_json_key(j, "rops");
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

/* Requests are written at dispatch, after the ROP stage, so that ROPs show
 * the objects they work on. */
static enum mp_status trace_dispatch(struct mp_module_ctx *mc, struct mp_call *call)
{
    trace_line(mc, call, false);
    return MP_CONTINUE;
}

/* Present so that the chain decodes ROPs and tracks server objects. */
static enum mp_status trace_rop(struct mp_module_ctx *mc, struct mp_call *call)
{
    (void)mc;
    (void)call;
    return MP_CONTINUE;
}

static enum mp_status trace_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    trace_line(mc, call, true);
    return MP_CONTINUE;
}

const struct mp_module mp_builtin_trace = {
    MP_MODULE_HEADER,
    .name = "trace",
    .description = "every decoded call as JSON lines (OpenChange's ndrdump)",
    .init = trace_init,
    .fini = trace_fini,
    .dispatch = trace_dispatch,
    .push = trace_push,
    .rop_request = trace_rop,
    .rop_response = trace_rop,
};
