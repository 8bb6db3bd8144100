/* A test-only module for object lifetime events and per-object data: on
 * every object created it sets data (with a destructor), and logs every
 * event; the destructor logs and counts.  At fini: the totals, so a test
 * sees that every piece of data was freed (and ASan sees no leak).  Its
 * pull hook on EcDoRpcExt2 logs who the client is (identity accessors). */
#include <stdint.h>
#include <stdlib.h>

#include "mapiproxy/module.h"

struct counts {
    unsigned long set, freed;
};

struct odata {
    struct counts *n;
    struct mp_module_ctx *mc;
    uint32_t ctx, handle;
    char type[16];
};

static int od_init(struct mp_module_ctx *mc)
{
    struct counts *n = calloc(1, sizeof *n);
    if (!n)
        return -1;
    mp_module_set_private(mc, n);
    return 0;
}

static void od_fini(struct mp_module_ctx *mc)
{
    struct counts *n = mp_module_private(mc);
    mp_module_log(mc, MP_MLOG_INFO, "objdata totals set=%lu freed=%lu", n->set, n->freed);
    free(n);
}

static void od_free(void *p)
{
    struct odata *d = p;
    d->n->freed++;
    mp_module_log(d->mc, MP_MLOG_INFO, "objdata freed ctx=%u handle=0x%08x type=%s", d->ctx,
                  d->handle, d->type);
    free(d);
}

static const char *ev_name(enum mp_object_event ev)
{
    return ev == MP_OBJECT_CREATED    ? "created"
           : ev == MP_OBJECT_RELEASED ? "released"
                                      : "context_gone";
}

static void od_event(struct mp_module_ctx *mc, struct mp_session *s, const struct mp_object *o,
                     enum mp_object_event ev, void *data)
{
    mp_module_log(mc, MP_MLOG_INFO, "objevent %s ctx=%u handle=0x%08x type=%s data=%s", ev_name(ev),
                  o->context_id, o->handle, mp_object_type_name(o->type), data ? "yes" : "no");
    if (ev != MP_OBJECT_CREATED)
        return;
    struct odata *d = calloc(1, sizeof *d);
    if (!d)
        return;
    struct counts *n = mp_module_private(mc);
    d->n = n;
    d->mc = mc;
    d->ctx = o->context_id;
    d->handle = o->handle;
    const char *t = mp_object_type_name(o->type);
    for (size_t i = 0; t[i] && i + 1 < sizeof d->type; i++)
        d->type[i] = t[i];
    if (mp_object_set_data(s, mc, o, d, od_free)) {
        free(d);
        return;
    }
    n->set++;
    if (mp_object_data(s, mc, o) != d)
        mp_module_log(mc, MP_MLOG_ERROR, "objdata lookup failed");
}

static enum mp_status od_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    const char *u = mp_call_user(call), *v = mp_call_client_version(call),
               *a = mp_call_client_application(call);
    mp_module_log(mc, MP_MLOG_INFO, "ident op=%s user=%s peer=%s version=%s app=%s",
                  mp_call_op_name(call), u ? u : "-", mp_call_peer(call), v ? v : "-", a ? a : "-");
    return MP_CONTINUE;
}

static const struct mp_module_want od_wants[] = {
    {"exchange_emsmdb", 11}, /* EcDoRpcExt2 */
    {NULL, 0},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "mpm_objdata",
    .description = "per-object data freed on release and context end (test)",
    .init = od_init,
    .fini = od_fini,
    .wants = od_wants,
    .pull = od_pull,
    .object_event = od_event,
};
