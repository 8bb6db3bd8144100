/* Server object lifetime events and per-object module data.  Each object
 * table of a session (one per MAPI context, src/rop/objects.c) reports to
 * observe(): the modules' object_event hooks run, and on release or the
 * context's end the data modules set on the object is destroyed.  The data
 * hangs off the table entry (its `ext` pointer): a short list, one node
 * per module that set some. */
#include <stdlib.h>

#include "chain/services.h"
#include "chain/chain.h"
#include "chain/ropstage.h"
#include "rop/objects.h"

struct odata {
    struct odata *next;
    unsigned idx; /* module index */
    void *data;
    void (*dtor)(void *);
};

bool mp_objevents_wanted(const struct mp_module *m)
{
    return m->object_event != NULL;
}

static struct odata **find(void **ext, unsigned idx)
{
    struct odata **pp = (struct odata **)ext;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->idx == idx)
            return pp;
    return NULL;
}

static void observe(void *ctx, const struct mp_object *o, int ev, void **ext)
{
    struct mp_session *s = ctx;
    struct mp_modules *ms = s->mods;
    for (unsigned i = 0; ms && i < ms->n; i++) {
        struct mp_module_ctx *mc = &ms->mods[i];
        if (!mc->initialized || !mc->m->object_event)
            continue;
        struct odata **pp = ev == MP_OBJECT_CREATED ? NULL : find(ext, i);
        mc->m->object_event(mc, s, o, (enum mp_object_event)ev, pp ? (*pp)->data : NULL);
    }
    if (ev == MP_OBJECT_CREATED)
        return;
    for (struct odata *d = *ext, *nx; d; d = nx) {
        nx = d->next;
        if (d->dtor)
            d->dtor(d->data);
        free(d);
    }
    *ext = NULL;
}

void mp_objevents_attach(struct mp_objtab *t, struct mp_session *s, uint32_t context_id)
{
    mp_objtab_observe(t, context_id, observe, s);
}

static void **ext_of(struct mp_session *s, const struct mp_object *o)
{
    if (!s || !o || o->handle == MP_OBJ_NONE)
        return NULL;
    return mp_objtab_ext(mp_ropsess_table(s, o->context_id), o->handle);
}

void *mp_object_data(struct mp_session *s, const struct mp_module_ctx *mc,
                     const struct mp_object *o)
{
    void **ext = ext_of(s, o);
    struct odata **pp = ext ? find(ext, mc->index) : NULL;
    return pp ? (*pp)->data : NULL;
}

int mp_object_set_data(struct mp_session *s, const struct mp_module_ctx *mc,
                       const struct mp_object *o, void *data, void (*destructor)(void *))
{
    void **ext = ext_of(s, o);
    if (!ext)
        return -1;
    struct odata **pp = find(ext, mc->index);
    if (pp) {
        struct odata *d = *pp;
        if (d->data != data && d->dtor)
            d->dtor(d->data);
        d->data = data;
        d->dtor = destructor;
        return 0;
    }
    struct odata *d = calloc(1, sizeof(*d));
    if (!d)
        return -1;
    d->idx = mc->index;
    d->data = data;
    d->dtor = destructor;
    d->next = *ext;
    *ext = d;
    return 0;
}
