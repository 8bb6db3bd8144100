/* Server object table: a chained hash of handle -> object. */
#include "rop/objects.h"

#include <stdlib.h>
#include <string.h>

struct ent {
    struct ent *next;
    struct mp_object o;
    uint32_t *cols; /* owned copy of o.columns */
    void *ext;      /* the observer's (per-object module data) */
};

struct mp_objtab {
    struct ent **b;
    size_t nb, n;
    unsigned refs;
    int8_t logon[256]; /* -1 unknown, 0 public, 1 private */
    uint32_t context_id;
    mp_objtab_obs_fn obs;
    void *obs_ctx;
};

/* Tells the observer (src/chain/objevents.c) about e (ev: enum
 * mp_object_event). */
static void notify(struct mp_objtab *t, struct ent *e, int ev)
{
    if (t->obs)
        t->obs(t->obs_ctx, &e->o, ev, &e->ext);
}

static size_t slot(const struct mp_objtab *t, uint32_t h)
{
    uint32_t x = h * 2654435761u;
    return (size_t)(x ^ (x >> 16)) & (t->nb - 1);
}

struct mp_objtab *mp_objtab_new(void)
{
    struct mp_objtab *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->refs = 1;
    t->nb = 64;
    t->b = calloc(t->nb, sizeof(*t->b));
    if (!t->b) {
        free(t);
        return NULL;
    }
    memset(t->logon, -1, sizeof(t->logon));
    return t;
}

static void ent_free(struct ent *e)
{
    /* the observer was told and cleared e->ext */
    free(e->cols);
    free(e);
}

struct mp_objtab *mp_objtab_ref(struct mp_objtab *t)
{
    if (t)
        t->refs++;
    return t;
}

void mp_objtab_unref(struct mp_objtab *t)
{
    if (!t || --t->refs)
        return;
    for (size_t i = 0; i < t->nb; i++) {
        for (struct ent *e = t->b[i], *nx; e; e = nx) {
            nx = e->next;
            notify(t, e, MP_OBJECT_CONTEXT_GONE);
            ent_free(e);
        }
    }
    free(t->b);
    free(t);
}

static struct ent *find(const struct mp_objtab *t, uint32_t h)
{
    for (struct ent *e = t->b[slot(t, h)]; e; e = e->next)
        if (e->o.handle == h)
            return e;
    return NULL;
}

const struct mp_object *mp_objtab_get(const struct mp_objtab *t, uint32_t handle)
{
    struct ent *e = t ? find(t, handle) : NULL;
    return e ? &e->o : NULL;
}

static void grow(struct mp_objtab *t)
{
    size_t nb = t->nb * 2;
    struct ent **b = calloc(nb, sizeof(*b));
    if (!b)
        return; /* keep the longer chains */
    struct ent **old = t->b;
    size_t onb = t->nb;
    t->b = b;
    t->nb = nb;
    for (size_t i = 0; i < onb; i++) {
        for (struct ent *e = old[i], *nx; e; e = nx) {
            nx = e->next;
            size_t s = slot(t, e->o.handle);
            e->next = t->b[s];
            t->b[s] = e;
        }
    }
    free(old);
}

int mp_objtab_put(struct mp_objtab *t, const struct mp_object *o)
{
    struct ent *e = find(t, o->handle);
    if (e) {
        notify(t, e, MP_OBJECT_RELEASED); /* the server reused the handle */
        free(e->cols);
        e->cols = NULL;
        e->o = *o;
        e->o.columns = NULL;
        e->o.ncolumns = 0;
        e->o.context_id = t->context_id;
        notify(t, e, MP_OBJECT_CREATED);
        return 0;
    }
    if (t->n >= MP_OBJTAB_MAX)
        return -1;
    e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    e->o = *o;
    e->o.columns = NULL;
    e->o.ncolumns = 0;
    e->o.context_id = t->context_id;
    size_t s = slot(t, o->handle);
    e->next = t->b[s];
    t->b[s] = e;
    if (++t->n > t->nb)
        grow(t);
    notify(t, e, MP_OBJECT_CREATED);
    return 0;
}

void mp_objtab_del(struct mp_objtab *t, uint32_t handle)
{
    if (!t)
        return;
    for (struct ent **pp = &t->b[slot(t, handle)]; *pp; pp = &(*pp)->next) {
        if ((*pp)->o.handle == handle) {
            struct ent *e = *pp;
            *pp = e->next;
            notify(t, e, MP_OBJECT_RELEASED);
            ent_free(e);
            t->n--;
            return;
        }
    }
}

int mp_objtab_set_columns(struct mp_objtab *t, uint32_t handle, const uint32_t *tags, size_t n)
{
    struct ent *e = find(t, handle);
    if (!e)
        return -1;
    uint32_t *c = NULL;
    if (n) {
        c = malloc(n * sizeof(*c));
        if (!c)
            return -1;
        memcpy(c, tags, n * sizeof(*c));
    }
    free(e->cols);
    e->cols = c;
    e->o.columns = c;
    e->o.ncolumns = n;
    return 0;
}

void mp_objtab_set_message_id(struct mp_objtab *t, uint32_t handle, uint64_t mid)
{
    struct ent *e = find(t, handle);
    if (e)
        e->o.message_id = mid;
}

void mp_objtab_observe(struct mp_objtab *t, uint32_t context_id, mp_objtab_obs_fn fn, void *ctx)
{
    t->context_id = context_id;
    t->obs = fn;
    t->obs_ctx = ctx;
}

uint32_t mp_objtab_context_id(const struct mp_objtab *t)
{
    return t ? t->context_id : 0;
}

void **mp_objtab_ext(struct mp_objtab *t, uint32_t handle)
{
    struct ent *e = t ? find(t, handle) : NULL;
    return e ? &e->ext : NULL;
}

size_t mp_objtab_count(const struct mp_objtab *t)
{
    return t ? t->n : 0;
}

void mp_objtab_set_logon(struct mp_objtab *t, uint8_t logon_id, int private_mailbox)
{
    t->logon[logon_id] = (int8_t)(private_mailbox < 0 ? -1 : private_mailbox != 0);
}

int mp_objtab_logon(const struct mp_objtab *t, uint8_t logon_id)
{
    return t ? t->logon[logon_id] : -1;
}

enum mp_object_type mp_object_type_for_rop(uint8_t id)
{
    switch (id) {
    case 0xFE:
        return MP_OBJ_LOGON;
    case 0x02: /* OpenFolder */
    case 0x1C: /* CreateFolder */
        return MP_OBJ_FOLDER;
    case 0x03: /* OpenMessage */
    case 0x06: /* CreateMessage */
    case 0x46: /* OpenEmbeddedMessage */
        return MP_OBJ_MESSAGE;
    case 0x04: /* GetHierarchyTable */
    case 0x05: /* GetContentsTable */
    case 0x21: /* GetAttachmentTable */
    case 0x3E: /* GetPermissionsTable */
    case 0x3F: /* GetRulesTable */
        return MP_OBJ_TABLE;
    case 0x22: /* OpenAttachment */
    case 0x23: /* CreateAttachment */
        return MP_OBJ_ATTACHMENT;
    case 0x2B: /* OpenStream */
    case 0x3B: /* CloneStream */
        return MP_OBJ_STREAM;
    case 0x29:
        return MP_OBJ_NOTIFICATION;
    case 0x4B: /* FastTransferSourceCopyMessages */
    case 0x4C: /* FastTransferSourceCopyFolder */
    case 0x4D: /* FastTransferSourceCopyTo */
    case 0x69: /* FastTransferSourceCopyProperties */
    case 0x53: /* FastTransferDestinationConfigure */
    case 0x82: /* SynchronizationGetTransferState */
        return MP_OBJ_FASTTRANSFER;
    case 0x70:
        return MP_OBJ_ICS_DOWNLOAD;
    case 0x7E:
        return MP_OBJ_ICS_UPLOAD;
    default:
        return MP_OBJ_OTHER;
    }
}

const char *mp_object_type_name(enum mp_object_type t)
{
    static const char *const names[] = {
        "unknown", "logon",        "folder",       "message",    "attachment",   "stream",
        "table",   "fasttransfer", "ics-download", "ics-upload", "notification", "other"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}
