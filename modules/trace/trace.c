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

#include "mapiproxy/module.h"

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
        if (!ops || !mp_iface_op(all_ifaces[i], 0)) {
            if (mp_module_want(mc, all_ifaces[i], MP_ALL_OPS))
                goto fail;
            continue;
        }
        const char *name;
        for (uint32_t op = 0; (name = mp_iface_op(all_ifaces[i], op)); op++) {
            char num[16];
            snprintf(num, sizeof(num), "%u", op);
            if ((in_list(ops, name) || in_list(ops, num)) && mp_module_want(mc, all_ifaces[i], op))
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

/* ---- one JSON line, grown as needed ---- */
struct line {
    char *p;
    size_t n, cap;
    bool err;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->err)
        return;
    if (l->cap - l->n < n + 1) {
        size_t cap = l->cap ? l->cap : 1024;
        while (cap - l->n < n + 1)
            cap *= 2;
        char *q = realloc(l->p, cap);
        if (!q) {
            l->err = true;
            return;
        }
        l->p = q;
        l->cap = cap;
    }
    memcpy(l->p + l->n, s, n);
    l->n += n;
    l->p[l->n] = 0;
}

static void put_raw(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

static void put_u64(struct line *l, unsigned long long v)
{
    char t[24];
    put(l, t, (size_t)snprintf(t, sizeof t, "%llu", v));
}

/* ,"key": (the first key of the line has no comma) */
static void put_key(struct line *l, const char *k)
{
    put_raw(l, l->n > 1 ? ",\"" : "\"");
    put_raw(l, k);
    put_raw(l, "\":");
}

static const char hx[] = "0123456789abcdef";

/* A JSON string (the names written here are ASCII), or null. */
static void put_str(struct line *l, const char *s)
{
    if (!s) {
        put_raw(l, "null");
        return;
    }
    put_raw(l, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[6] = {'\\', (char)c};
        if (c == '"' || c == '\\') {
            put(l, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(e, "\\u00", 4);
            e[4] = hx[c >> 4];
            e[5] = hx[c & 15];
            put(l, e, 6);
        } else {
            put(l, s, 1);
        }
    }
    put_raw(l, "\"");
}

static void put_hex(struct line *l, const uint8_t *p, size_t n)
{
    if (!p && n) {
        put_raw(l, "null");
        return;
    }
    put_raw(l, "\"");
    for (size_t i = 0; i < n; i++) {
        char h[2] = {hx[p[i] >> 4], hx[p[i] & 15]};
        put(l, h, 2);
    }
    put_raw(l, "\"");
}

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
    struct line l = {0};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    put_raw(&l, "{");
    snprintf(num, sizeof(num), "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    put_key(&l, "ts");
    put_raw(&l, num);
    put_key(&l, "dir");
    put_str(&l, response ? "response" : "request");
    put_key(&l, "session");
    put_u64(&l, mp_session_id(mp_call_session(call)));
    put_key(&l, "peer");
    put_str(&l, mp_call_peer(call));
    put_key(&l, "iface");
    put_str(&l, mp_call_iface(call));
    put_key(&l, "opnum");
    put_u64(&l, mp_call_opnum(call));
    put_key(&l, "op");
    put_str(&l, mp_call_op_name(call));
    size_t len;
    const uint8_t *stub =
        response ? mp_call_response_stub(call, &len) : mp_call_request_stub(call, &len);
    put_key(&l, "stub_len");
    put_u64(&l, len);
    const char *dec = mp_call_json(call, response);
    if (dec) {
        put_key(&l, response ? "out" : "in");
        put_raw(&l, dec);
        size_t nrops = mp_call_rop_count(call, response);
        const char *bufs;
        if (nrops) { /* decoded by the module chain, with their server objects */
            put_key(&l, "rops");
            put_raw(&l, "[");
            bool first = true;
            for (size_t i = 0; i < nrops; i++) {
                const char *r = mp_call_rop_json(call, response, i);
                if (r) {
                    put_raw(&l, first ? "" : ",");
                    put_raw(&l, r);
                    first = false;
                }
            }
            put_raw(&l, "]");
        } else if ((bufs = mp_call_rop_buffer_json(call, response))) {
            /* a ROP buffer the chain could not decode: where it fails */
            put_key(&l, "rops");
            put_raw(&l, bufs);
        }
    } else {
        put_key(&l, "raw");
        put_hex(&l, stub, len);
    }
    put_raw(&l, "}");
    if (!l.err) {
        if (c->fp) {
            /* one write(2) per line on the O_APPEND file: the instances of
             * several workers append to it and lines must not interleave */
            put_raw(&l, "\n");
            const char *p = l.p;
            for (size_t left = l.err ? 0 : l.n; left;) {
                ssize_t w = write(fileno(c->fp), p, left);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                p += w;
                left -= (size_t)w;
            }
        } else {
            mp_module_log(mc, MP_MLOG_INFO, "%s", l.p);
        }
    }
    free(l.p);
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
