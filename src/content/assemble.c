/* Online-mode message assembly from ROP request/response pairs.  See
 * assemble.h for what completes a message; doc/internals/content.md. */
#include "content/assemble.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

/* A top-level message being assembled: the objects that reach it hold refs. */
struct tmsg {
    struct mp_message *m; /* NULL once dropped (over the size limit) */
    int refs;
    enum mp_msg_dir dir;
    enum mp_msg_mode mode; /* online, or ICS upload (RopSynchronizationImportMessageChange) */
    bool touched;          /* download: something was read */
    bool dirty;            /* upload: changed since the last completion */
    bool delivered;        /* an event went out */
    bool warned;
};

enum kind { K_MSG, K_ATT, K_STREAM };
struct obj {
    uint32_t handle;
    enum kind kind;
    struct tmsg *t;
    struct mp_message *m; /* the (possibly embedded) message it belongs to */
    uint32_t att_num;     /* K_ATT, and streams on an attachment */
    bool on_att;          /* K_STREAM: owner is attachment att_num */
    uint32_t tag;         /* K_STREAM */
    bool write;           /* K_STREAM opened for writing */
    struct mp_blob data;  /* K_STREAM */
};

struct name_map {
    uint16_t id;
    struct mp_propname name;
};

struct mp_asm {
    struct mp_content_limits lim;
    struct mp_asm_ops ops;
    struct obj **objs;
    size_t nobj, capobj;
    struct name_map *names;
    size_t nnames;
    struct mp_fxctx *fx; /* FastTransfer contexts (fxasm.c) */
    /* mp_asm_request: the request ROPs applied before relay (by index) */
    bool *applied;
    size_t napplied;
};

const char *mp_msg_dir_name(enum mp_msg_dir d)
{
    return d == MP_MSG_UPLOAD ? "upload" : "download";
}

const char *mp_msg_mode_name(enum mp_msg_mode m)
{
    static const char *const n[] = {"online", "ics-download", "ics-upload", "fx-copy"};
    return (unsigned)m < 4 ? n[m] : "?";
}

#define warn mp_asm_warn
void mp_asm_warn(struct mp_asm *a, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (a->ops.log)
        a->ops.log(a->ops.arg, line);
}

struct mp_asm *mp_asm_new(const struct mp_content_limits *limits, const struct mp_asm_ops *ops)
{
    struct mp_asm *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->lim = *limits;
    a->ops = *ops;
    return a;
}

const struct mp_content_limits *mp_asm_limits(const struct mp_asm *a)
{
    return &a->lim;
}

/* ---- named properties: the session's id <-> name map ---- */
static const struct mp_propname *name_of(const struct mp_asm *a, uint16_t id)
{
    for (size_t i = 0; i < a->nnames; i++)
        if (a->names[i].id == id)
            return &a->names[i].name;
    return NULL;
}

static void learn_name(struct mp_asm *a, uint16_t id, const struct mp_rop_PropertyName *pn)
{
    if (id < 0x8000 || name_of(a, id) || (pn->Kind != 0 && pn->Kind != 1) || a->nnames >= 4096)
        return;
    struct name_map *nm = realloc(a->names, (a->nnames + 1) * sizeof(*nm));
    if (!nm)
        return;
    a->names = nm;
    struct name_map *e = &a->names[a->nnames];
    memset(e, 0, sizeof(*e));
    e->id = id;
    memcpy(e->name.guid, pn->Guid, 16);
    e->name.lid = pn->LID;
    if (pn->Kind == 1) {
        e->name.is_name = true;
        e->name.name = mp_propname_ascii(pn->Name, pn->Name ? pn->NameSize : 0);
        if (!e->name.name)
            return;
    }
    a->nnames++;
}

int mp_asm_name_id(const struct mp_asm *a, const uint8_t guid[16], const char *name)
{
    for (size_t i = 0; i < a->nnames; i++) {
        const struct mp_propname *pn = &a->names[i].name;
        if (pn->is_name && pn->name && !memcmp(pn->guid, guid, 16) && !strcmp(pn->name, name))
            return a->names[i].id;
    }
    return -1;
}

/* Names the named properties of m (and its parts) from the session's map. */
static void name_props(const struct mp_asm *a, struct mp_props *p)
{
    for (size_t i = 0; i < p->n; i++) {
        struct mp_prop *v = &p->v[i];
        const struct mp_propname *pn = (v->tag >> 16) >= 0x8000 ? name_of(a, v->tag >> 16) : NULL;
        if (!pn || v->name)
            continue;
        v->name = calloc(1, sizeof(*v->name));
        if (!v->name)
            continue;
        *v->name = *pn;
        v->name->name = pn->name ? strdup(pn->name) : NULL;
    }
}

static void name_message(const struct mp_asm *a, struct mp_message *m)
{
    name_props(a, &m->props);
    for (size_t i = 0; i < m->natt; i++) {
        name_props(a, &m->att[i].props);
        if (m->att[i].embedded)
            name_message(a, m->att[i].embedded);
    }
}

/* ---- delivery ---- */
static void deliver_fx(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir,
                       enum mp_msg_mode mode, const char *by, bool partial, int rop_index,
                       bool at_request, bool fx, const struct mp_fx_span *span)
{
    name_message(a, m);
    struct mp_msg_event ev = {.dir = dir,
                              .mode = mode,
                              .folder_id = m->folder_id,
                              .message_id = m->message_id,
                              .completed_by = by,
                              .partial = partial,
                              .msg = m,
                              .rop_index = rop_index,
                              .at_request = at_request,
                              .fx = fx};
    if (span) {
        ev.fx_in_buffer = span->in_buffer;
        ev.fx_off = span->off;
        ev.fx_len = span->len;
        ev.fx_hdr_len = span->hdr_len;
        ev.fx_span = *span;
    }
    if (a->ops.done)
        a->ops.done(a->ops.arg, &ev);
}

static void deliver(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir,
                    enum mp_msg_mode mode, const char *by, bool partial, int rop_index,
                    bool at_request)
{
    deliver_fx(a, m, dir, mode, by, partial, rop_index, at_request, false, NULL);
}

static bool alive(struct mp_asm *a, struct tmsg *t)
{
    if (!t->m)
        return false;
    if (!t->m->over_limit)
        return true;
    if (!t->warned)
        warn(a,
             "message (folder 0x%016llx, %s) passes the maximum message size of %llu bytes: "
             "not assembled, relayed unchanged",
             (unsigned long long)t->m->folder_id, mp_msg_dir_name(t->dir),
             (unsigned long long)a->lim.max_message);
    t->warned = true;
    mp_msg_free(t->m);
    t->m = NULL;
    return false;
}

static void tmsg_unref(struct mp_asm *a, struct tmsg *t)
{
    if (--t->refs > 0)
        return;
    mp_msg_free(t->m);
    free(t);
}

/* ---- objects ---- */
static struct obj *obj_new(struct mp_asm *a, enum kind k, struct tmsg *t, struct mp_message *m)
{
    struct obj *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->kind = k;
    o->t = t;
    o->m = m;
    o->handle = 0xFFFFFFFF;
    mp_blob_init(&o->data);
    t->refs++;
    return o;
}

static struct obj *find(struct mp_asm *a, uint32_t handle)
{
    if (handle == 0xFFFFFFFF)
        return NULL;
    for (size_t i = 0; i < a->nobj; i++)
        if (a->objs[i]->handle == handle)
            return a->objs[i];
    return NULL;
}

static int track(struct mp_asm *a, struct obj *o)
{
    if (a->nobj == a->capobj) {
        size_t cap = a->capobj ? a->capobj * 2 : 16;
        struct obj **n = realloc(a->objs, cap * sizeof(*n));
        if (!n)
            return -1;
        a->objs = n;
        a->capobj = cap;
    }
    a->objs[a->nobj++] = o;
    return 0;
}

static void untrack(struct mp_asm *a, struct obj *o)
{
    for (size_t i = 0; i < a->nobj; i++)
        if (a->objs[i] == o) {
            a->objs[i] = a->objs[--a->nobj];
            return;
        }
}

static struct mp_props *owner_props(struct obj *o)
{
    if (o->kind == K_MSG || (o->kind == K_STREAM && !o->on_att))
        return &o->m->props;
    struct mp_attachment *at = mp_msg_attachment(o->m, o->att_num);
    return at ? &at->props : NULL;
}

/* A stream's bytes become its property (commit, or release). */
static void stream_store(struct mp_asm *a, struct obj *o)
{
    if (!alive(a, o->t) || (!o->data.len && !o->write))
        return;
    struct mp_props *p = owner_props(o);
    struct mp_prop *v = p ? mp_props_slot(p, o->tag) : NULL;
    if (!v)
        return;
    struct mp_blob copy;
    mp_blob_init(&copy);
    /* keep the stream's bytes for further writes/commits: copy */
    uint8_t buf[16384];
    for (uint64_t off = 0; off < o->data.len;) {
        long r = mp_blob_read(&o->data, off, buf, sizeof(buf));
        if (r <= 0 || mp_blob_append(&copy, buf, (size_t)r, &a->lim)) {
            warn(a, "message content: cannot keep a stream's data (%s)",
                 r < 0 ? "read" : "temporary file or memory");
            break;
        }
        off += (uint64_t)r;
    }
    mp_blob_move(&v->v, &copy);
}

static void complete_at(struct mp_asm *a, struct tmsg *t, const char *by, int rop_index,
                        bool at_request)
{
    if (!alive(a, t))
        return;
    deliver(a, t->m, t->dir, t->mode, by, false, rop_index, at_request);
    t->delivered = true;
    t->dirty = false;
}

static void complete(struct mp_asm *a, struct tmsg *t, const char *by)
{
    complete_at(a, t, by, -1, false);
}

static void obj_release(struct mp_asm *a, struct obj *o, const char *why)
{
    untrack(a, o);
    if (o->kind == K_STREAM)
        stream_store(a, o);
    if (o->kind == K_MSG && o->t->m && !o->m->parent && o->t->dir == MP_MSG_DOWNLOAD &&
        o->t->touched && !o->t->delivered)
        complete(a, o->t, why);
    mp_blob_free(&o->data);
    tmsg_unref(a, o->t);
    free(o);
}

void mp_asm_free(struct mp_asm *a)
{
    if (!a)
        return;
    /* streams first, so that their data reaches the messages */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = a->nobj; i-- > 0;)
            if ((a->objs[i]->kind == K_STREAM) == (pass == 0))
                obj_release(a, a->objs[i], "session end");
    mp_asm_fx_free(a, &a->fx);
    free(a->objs);
    for (size_t i = 0; i < a->nnames; i++)
        free(a->names[i].name.name);
    free(a->names);
    free(a->applied);
    free(a);
}

/* ---- property values from the ROP codec ---- */
static void set_val(struct mp_asm *a, struct tmsg *t, struct mp_message *m, struct mp_props *p,
                    uint32_t tag, const struct mp_rop_pval *v)
{
    uint16_t type = tag & 0xFFFF;
    if (type == MP_PT_ERROR || (type & MP_PT_MV) || type == MP_PT_UNSPECIFIED ||
        type == MP_PT_NULL || type == MP_PT_OBJECT || type == MP_PT_SRESTRICT ||
        type == MP_PT_ACTIONS)
        return;
    if (v->p || type == MP_PT_UNICODE || type == MP_PT_STRING8 || type == MP_PT_BINARY ||
        type == MP_PT_CLSID || type == MP_PT_SVREID) {
        if (mp_msg_count(m, v->n, &a->lim) || !alive(a, t))
            return;
        if (mp_props_set_bytes(p, tag, v->p, v->n, &a->lim))
            warn(a, "message content: cannot keep property 0x%08x", (unsigned)tag);
    } else {
        mp_props_set_u(p, tag, v->u);
    }
}

static void set_tpropvals(struct mp_asm *a, struct obj *o, const struct mp_rop_tpropval *vals,
                          size_t n)
{
    if (!alive(a, o->t))
        return;
    struct mp_props *p = owner_props(o);
    for (size_t i = 0; p && i < n; i++)
        set_val(a, o->t, o->m, p, vals[i].tag, &vals[i].v);
}

static void set_row(struct mp_asm *a, struct obj *o, const struct mp_rop_proprow *row)
{
    if (!alive(a, o->t) || !row->vals)
        return;
    struct mp_props *p = owner_props(o);
    for (size_t i = 0; p && i < row->ncols; i++) {
        const struct mp_rop_rowval *rv = &row->vals[i];
        if (row->flag == 1 && rv->flag != 0)
            continue;
        uint32_t tag = row->cols[i];
        if ((tag & 0xFFFF) == MP_PT_UNSPECIFIED)
            tag = (tag & 0xFFFF0000) | rv->wire_type;
        set_val(a, o->t, o->m, p, tag, &rv->v);
    }
}

static void str_prop(struct mp_asm *a, struct tmsg *t, struct mp_message *m, struct mp_props *p,
                     uint32_t id, const struct mp_rop_str *s)
{
    if (!s->p)
        return;
    struct mp_rop_pval v = {.type = s->wide ? MP_PT_UNICODE : MP_PT_STRING8, .p = s->p, .n = s->n};
    set_val(a, t, m, p, id << 16 | v.type, &v);
}

/* A RecipientRow (decoded view of the codec) into recipient row_id. */
static void recipient(struct mp_asm *a, struct obj *o, uint32_t row_id, uint8_t type,
                      const struct mp_rop_recipient_row *rr)
{
    if (!alive(a, o->t))
        return;
    struct mp_recipient *r = mp_msg_recipient(o->m, row_id);
    if (!r)
        return;
    r->type = type;
    mp_props_set_u(&r->props, MP_TAG_RECIPIENT_TYPE, type);
    if (!rr->decoded)
        return;
    str_prop(a, o->t, o->m, &r->props, 0x3001, &rr->DisplayName);
    str_prop(a, o->t, o->m, &r->props, 0x3003, &rr->EmailAddress);
    if (!rr->EmailAddress.p)
        str_prop(a, o->t, o->m, &r->props, 0x3003, &rr->X500DN);
    unsigned t = rr->RecipientFlags & 7;
    static const char *const types[8] = {NULL, "EX", "MSMAIL", "SMTP", "FAX", "PROFS", NULL, NULL};
    if (types[t] && !mp_props_find(&r->props, MP_TAG_ADDRESS_TYPE)) {
        struct mp_rop_str s = {(const uint8_t *)types[t], (uint32_t)strlen(types[t]), false};
        str_prop(a, o->t, o->m, &r->props, 0x3002, &s);
    } else if (rr->AddressType.p) {
        str_prop(a, o->t, o->m, &r->props, 0x3002, &rr->AddressType);
    }
    if (rr->has_props) {
        const struct mp_rop_proprow *row = &rr->RecipientProperties;
        for (size_t i = 0; row->vals && i < row->ncols; i++)
            if (row->flag != 1 || row->vals[i].flag == 0)
                set_val(a, o->t, o->m, &r->props, row->cols[i], &row->vals[i].v);
    }
}

/* Upload content a request carries (both mp_asm_request and pair). */
static void req_write(struct mp_asm *a, struct obj *o, const uint8_t *data, uint16_t n)
{
    o->t->dirty = true;
    if (!mp_msg_count(o->m, n, &a->lim) && mp_blob_append(&o->data, data, n, &a->lim))
        warn(a, "message content: cannot keep stream data");
}

static void req_modify_recipients(struct mp_asm *a, struct obj *o,
                                  const struct mp_rop_req_ModifyRecipients *q)
{
    o->t->dirty = true;
    for (size_t k = 0; q->RecipientRows && k < q->RowCount; k++) {
        const struct mp_rop_ModifyRecipientRow *row = &q->RecipientRows[k];
        if (!row->RecipientRow.RecipientRowSize)
            mp_msg_remove_recipient(o->m, row->RowId);
        else
            recipient(a, o, row->RowId, row->RecipientType, &row->RecipientRow);
    }
}

static void message_info(struct mp_asm *a, struct obj *o, const struct mp_rop_MessageInfo *mi)
{
    for (size_t i = 0; mi->RecipientRows && i < mi->RowCount; i++)
        recipient(a, o, (uint32_t)i, mi->RecipientRows[i].RecipientType,
                  &mi->RecipientRows[i].RecipientRow);
}

/* ---- one call ---- */
struct callctx {
    struct mp_asm *a;
    struct mp_call *call;
    struct obj *slot[256]; /* objects created in this call, by handle index */
    struct obj *created[256];
    int created_rsp[256];
    size_t ncreated;
};

static struct obj *input(struct callctx *c, uint8_t idx, const struct mp_object *ob)
{
    if (c->slot[idx])
        return c->slot[idx];
    return ob ? find(c->a, ob->handle) : NULL;
}

static void created(struct callctx *c, uint8_t idx, struct obj *o, int rsp)
{
    if (!o)
        return;
    if (c->ncreated == 256) {
        obj_release(c->a, o, "RopRelease");
        return;
    }
    if (c->slot[idx]) { /* the slot is reused within the buffer */
        for (size_t i = 0; i < c->ncreated; i++)
            if (c->created[i] == c->slot[idx])
                c->created_rsp[i] = -1;
    }
    c->slot[idx] = o;
    c->created[c->ncreated] = o;
    c->created_rsp[c->ncreated++] = rsp;
}

static struct obj *new_message(struct callctx *c, enum mp_msg_dir dir, uint64_t fid, uint64_t mid)
{
    struct tmsg *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->m = mp_msg_new();
    if (!t->m) {
        free(t);
        return NULL;
    }
    t->dir = dir;
    t->m->folder_id = fid;
    t->m->message_id = mid;
    struct obj *o = obj_new(c->a, K_MSG, t, t->m);
    if (!o) {
        mp_msg_free(t->m);
        free(t);
    }
    return o;
}

#define REQ(T) const struct mp_rop_req_##T *q = req
#define RSP(T)                                                                                     \
    const struct mp_rop_rsp_##T *r = rsp;                                                          \
    if (r->ReturnValue)                                                                            \
    return

static bool applied(const struct mp_asm *a, size_t ri)
{
    return ri < a->napplied && a->applied[ri];
}

static void pair(struct callctx *c, size_t i, size_t ri, const void *req, const void *rsp)
{
    struct mp_asm *a = c->a;
    const struct mp_object *ob = mp_call_rop_object(c->call, true, i);
    if (applied(a, ri)) { /* mp_asm_request did it; the save's response names the id */
        const struct mp_rop_rsp_SaveChangesMessage *r = rsp;
        struct obj *o =
            input(c, ((const struct mp_rop_req_SaveChangesMessage *)req)->InputHandleIndex, ob);
        if (mp_call_rop_id(c->call, true, i) == MP_ROP_SaveChangesMessage && !r->ReturnValue && o &&
            o->kind == K_MSG && o->t->m)
            o->m->message_id = r->MessageId;
        return;
    }
    switch (mp_call_rop_id(c->call, true, i)) {
    case MP_ROP_OpenMessage: {
        REQ(OpenMessage);
        RSP(OpenMessage);
        struct obj *o = new_message(c, MP_MSG_DOWNLOAD, q->FolderId, q->MessageId);
        if (o)
            message_info(a, o, &r->Message);
        created(c, q->OutputHandleIndex, o, (int)i);
        break;
    }
    case MP_ROP_SynchronizationImportMessageChange: {
        REQ(SynchronizationImportMessageChange);
        RSP(SynchronizationImportMessageChange);
        /* ICS upload: a message object that the online-mode ROPs fill and
         * RopSaveChangesMessage stores; the request's values are the change
         * header (source key, change key, ...) */
        struct obj *o = new_message(c, MP_MSG_UPLOAD, ob ? ob->folder_id : 0, r->MessageId);
        if (o) {
            o->t->mode = MP_MSG_ICS_UPLOAD;
            o->t->dirty = true;
            set_tpropvals(a, o, q->PropertyValues, q->PropertyValueCount);
        }
        created(c, q->OutputHandleIndex, o, (int)i);
        break;
    }
    case MP_ROP_CreateMessage: {
        REQ(CreateMessage);
        RSP(CreateMessage);
        struct obj *o = new_message(c, MP_MSG_UPLOAD, q->FolderId, 0);
        if (o)
            o->t->dirty = true;
        created(c, q->OutputHandleIndex, o, (int)i);
        break;
    }
    case MP_ROP_OpenEmbeddedMessage: {
        REQ(OpenEmbeddedMessage);
        RSP(OpenEmbeddedMessage);
        struct obj *at = input(c, q->InputHandleIndex, ob);
        if (!at || at->kind != K_ATT || !alive(a, at->t))
            break;
        struct mp_attachment *att = mp_msg_attachment(at->m, at->att_num);
        if (!att)
            break;
        if (!att->embedded) {
            att->embedded = mp_msg_new();
            if (!att->embedded)
                break;
            att->embedded->parent = at->m;
        }
        struct obj *o = obj_new(a, K_MSG, at->t, att->embedded);
        if (o) {
            att->embedded->message_id = r->MessageId;
            message_info(a, o, &r->Message);
            if (at->t->dir == MP_MSG_DOWNLOAD)
                at->t->touched = true;
        }
        created(c, q->OutputHandleIndex, o, (int)i);
        break;
    }
    case MP_ROP_OpenAttachment:
    case MP_ROP_CreateAttachment: {
        bool open = mp_call_rop_id(c->call, true, i) == MP_ROP_OpenAttachment;
        const struct mp_rop_req_OpenAttachment *qo = req;
        const struct mp_rop_req_CreateAttachment *qc = req;
        uint8_t in = open ? qo->InputHandleIndex : qc->InputHandleIndex;
        uint8_t out = open ? qo->OutputHandleIndex : qc->OutputHandleIndex;
        uint32_t num;
        if (open) {
            const struct mp_rop_rsp_OpenAttachment *r = rsp;
            if (r->ReturnValue)
                return;
            num = qo->AttachmentID;
        } else {
            const struct mp_rop_rsp_CreateAttachment *r = rsp;
            if (r->ReturnValue)
                return;
            num = r->AttachmentID;
        }
        struct obj *m = input(c, in, ob);
        if (!m || m->kind != K_MSG || !alive(a, m->t) || !mp_msg_attachment(m->m, num))
            break;
        struct obj *o = obj_new(a, K_ATT, m->t, m->m);
        if (o)
            o->att_num = num;
        if (m->t->dir == MP_MSG_UPLOAD)
            m->t->dirty = true;
        created(c, out, o, (int)i);
        break;
    }
    case MP_ROP_OpenStream: {
        REQ(OpenStream);
        RSP(OpenStream);
        struct obj *ow = input(c, q->InputHandleIndex, ob);
        if (!ow || ow->kind == K_STREAM || !alive(a, ow->t))
            break;
        struct obj *o = obj_new(a, K_STREAM, ow->t, ow->m);
        if (o) {
            o->on_att = ow->kind == K_ATT;
            o->att_num = ow->att_num;
            o->tag = q->PropertyTag;
            o->write = q->OpenModeFlags != 0; /* ReadWrite (1) or Create (2) */
        }
        created(c, q->OutputHandleIndex, o, (int)i);
        break;
    }
    case MP_ROP_ReadStream: {
        REQ(ReadStream);
        RSP(ReadStream);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind != K_STREAM || !alive(a, o->t) || !r->Data)
            break;
        o->t->touched = true;
        if (!mp_msg_count(o->m, r->DataSize, &a->lim) &&
            mp_blob_append(&o->data, r->Data, r->DataSize, &a->lim))
            warn(a, "message content: cannot keep stream data");
        break;
    }
    case MP_ROP_WriteStream:
    case MP_ROP_WriteStreamExtended: {
        const struct mp_rop_req_WriteStream *q = req; /* same leading fields */
        const struct mp_rop_req_WriteStreamExtended *qx = req;
        const uint8_t *data =
            mp_call_rop_id(c->call, true, i) == MP_ROP_WriteStream ? q->Data : qx->Data;
        uint16_t n =
            mp_call_rop_id(c->call, true, i) == MP_ROP_WriteStream ? q->DataSize : qx->DataSize;
        const struct mp_rop_rsp_WriteStream *r = rsp;
        if (mp_call_rop_id(c->call, true, i) == MP_ROP_WriteStream && r->ReturnValue)
            return;
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind != K_STREAM || !alive(a, o->t) || !data)
            break;
        req_write(a, o, data, n);
        break;
    }
    case MP_ROP_CommitStream: {
        REQ(CommitStream);
        RSP(CommitStream);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (o && o->kind == K_STREAM)
            stream_store(a, o);
        break;
    }
    case MP_ROP_GetPropertiesSpecific: {
        REQ(GetPropertiesSpecific);
        RSP(GetPropertiesSpecific);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind == K_STREAM)
            break;
        o->t->touched = o->t->touched || o->t->dir == MP_MSG_DOWNLOAD;
        set_row(a, o, &r->RowData);
        break;
    }
    case MP_ROP_GetPropertiesAll: {
        REQ(GetPropertiesAll);
        RSP(GetPropertiesAll);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind == K_STREAM)
            break;
        o->t->touched = o->t->touched || o->t->dir == MP_MSG_DOWNLOAD;
        set_tpropvals(a, o, r->PropertyValues, r->PropertyValueCount);
        break;
    }
    case MP_ROP_SetProperties:
    case MP_ROP_SetPropertiesNoReplicate: {
        const struct mp_rop_req_SetProperties *q = req; /* same layout */
        const struct mp_rop_rsp_SetProperties *r = rsp;
        if (r->ReturnValue)
            return;
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind == K_STREAM)
            break;
        o->t->dirty = true;
        set_tpropvals(a, o, q->PropertyValues, q->PropertyValueCount);
        break;
    }
    case MP_ROP_ModifyRecipients: {
        REQ(ModifyRecipients);
        RSP(ModifyRecipients);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind != K_MSG || !alive(a, o->t))
            break;
        req_modify_recipients(a, o, q);
        break;
    }
    case MP_ROP_ReadRecipients: {
        REQ(ReadRecipients);
        RSP(ReadRecipients);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind != K_MSG)
            break;
        o->t->touched = true;
        for (size_t k = 0; r->RecipientRows && k < r->RowCount; k++)
            recipient(a, o, r->RecipientRows[k].RowId, r->RecipientRows[k].RecipientType,
                      &r->RecipientRows[k].RecipientRow);
        break;
    }
    case MP_ROP_RemoveAllRecipients: {
        REQ(RemoveAllRecipients);
        RSP(RemoveAllRecipients);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (o && o->kind == K_MSG && alive(a, o->t)) {
            mp_msg_clear_recipients(o->m);
            o->t->dirty = true;
        }
        break;
    }
    case MP_ROP_SaveChangesMessage: {
        REQ(SaveChangesMessage);
        RSP(SaveChangesMessage);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (!o || o->kind != K_MSG || !alive(a, o->t) || o->m->parent || o->t->dir != MP_MSG_UPLOAD)
            break;
        o->m->message_id = r->MessageId;
        complete(a, o->t, "RopSaveChangesMessage");
        break;
    }
    case MP_ROP_SubmitMessage: {
        REQ(SubmitMessage);
        RSP(SubmitMessage);
        struct obj *o = input(c, q->InputHandleIndex, ob);
        if (o && o->kind == K_MSG && alive(a, o->t) && !o->m->parent &&
            o->t->dir == MP_MSG_UPLOAD && (o->t->dirty || !o->t->delivered))
            complete(a, o->t, "RopSubmitMessage");
        break;
    }
    case MP_ROP_GetPropertyIdsFromNames: {
        REQ(GetPropertyIdsFromNames);
        RSP(GetPropertyIdsFromNames);
        for (size_t k = 0; q->PropertyNames && r->PropertyIds && k < q->PropertyNameCount &&
                           k < r->PropertyIdCount;
             k++)
            learn_name(a, r->PropertyIds[k], &q->PropertyNames[k]);
        break;
    }
    case MP_ROP_GetNamesFromPropertyIds: {
        REQ(GetNamesFromPropertyIds);
        RSP(GetNamesFromPropertyIds);
        for (size_t k = 0; q->PropertyIds && r->PropertyNames && k < q->PropertyIdCount &&
                           k < r->PropertyNameCount;
             k++)
            learn_name(a, q->PropertyIds[k], &r->PropertyNames[k]);
        break;
    }
    default:
        mp_asm_fx_rop(a, &a->fx, c->call, i, req, rsp);
        break;
    }
    (void)ri;
}

void mp_asm_rops(struct mp_asm *a, struct mp_call *call)
{
    size_t nrq = mp_call_rop_count(call, false), nrs = mp_call_rop_count(call, true);
    if (!nrq)
        return;
    struct callctx *c = calloc(1, sizeof(*c));
    int *rsp_of = calloc(nrq, sizeof(int));
    if (!c || !rsp_of) {
        free(c);
        free(rsp_of);
        return;
    }
    c->a = a;
    c->call = call;
    for (size_t k = 0; k < nrq; k++)
        rsp_of[k] = -1;
    for (size_t i = 0; i < nrs; i++) {
        int ri = mp_call_rop_request_index(call, i);
        if (ri >= 0 && (size_t)ri < nrq)
            rsp_of[ri] = (int)i;
    }
    /* in request order: RopRelease has no response */
    for (size_t ri = 0; ri < nrq; ri++) {
        if (mp_call_rop_id(call, false, ri) == MP_ROP_Release) {
            const struct mp_rop_req_Release *q = mp_call_rop(call, false, ri);
            if (!q)
                continue;
            mp_asm_fx_release(a, &a->fx, mp_call_rop_object(call, false, ri));
            struct obj *o = input(c, q->InputHandleIndex, mp_call_rop_object(call, false, ri));
            if (!o)
                continue;
            if (c->slot[q->InputHandleIndex] == o) {
                c->slot[q->InputHandleIndex] = NULL;
                for (size_t k = 0; k < c->ncreated; k++)
                    if (c->created[k] == o)
                        c->created_rsp[k] = -2; /* released here */
            }
            obj_release(a, o, "RopRelease");
            continue;
        }
        int i = rsp_of[ri];
        const void *req = mp_call_rop(call, false, ri);
        const void *rsp = i >= 0 ? mp_call_rop(call, true, (size_t)i) : NULL;
        if (req && rsp)
            pair(c, (size_t)i, ri, req, rsp);
    }
    /* objects created in this call: tracked by their server handle */
    for (size_t k = 0; k < c->ncreated; k++) {
        struct obj *o = c->created[k];
        if (c->created_rsp[k] == -2)
            continue; /* already released */
        const struct mp_object *nob =
            c->created_rsp[k] >= 0 ? mp_call_rop_new_object(call, (size_t)c->created_rsp[k]) : NULL;
        if (nob && nob->handle != 0xFFFFFFFF && !find(a, nob->handle) && !track(a, o)) {
            o->handle = nob->handle;
            continue;
        }
        o->handle = 0xFFFFFFFF;
        track(a, o); /* obj_release untracks */
        obj_release(a, o, "RopRelease");
    }
    free(rsp_of);
    free(c);
    a->napplied = 0;
}

void mp_asm_request(struct mp_asm *a, struct mp_call *call)
{
    a->napplied = 0;
    size_t n = mp_call_rop_count(call, false);
    if (!n)
        return;
    bool *ap = realloc(a->applied, n * sizeof(*ap));
    if (!ap)
        return;
    a->applied = ap;
    memset(ap, 0, n * sizeof(*ap));
    a->napplied = n;
    for (size_t i = 0; i < n; i++) {
        mp_asm_fx_request(a, &a->fx, call, i); /* FastTransfer upload bytes */
        const void *req = mp_call_rop(call, false, i);
        const struct mp_object *ob = mp_call_rop_object(call, false, i);
        /* objects of earlier calls only: one created in this buffer has
         * no handle yet, and its ROPs are followed at the response */
        struct obj *o = req && ob && ob->handle != 0xFFFFFFFF ? find(a, ob->handle) : NULL;
        if (!o || o->t->dir != MP_MSG_UPLOAD || !alive(a, o->t))
            continue;
        switch (mp_call_rop_id(call, false, i)) {
        case MP_ROP_SetProperties:
        case MP_ROP_SetPropertiesNoReplicate: {
            const struct mp_rop_req_SetProperties *q = req;
            if (o->kind == K_STREAM)
                continue;
            o->t->dirty = true;
            set_tpropvals(a, o, q->PropertyValues, q->PropertyValueCount);
            break;
        }
        case MP_ROP_WriteStream:
        case MP_ROP_WriteStreamExtended: {
            const struct mp_rop_req_WriteStream *q = req;
            const struct mp_rop_req_WriteStreamExtended *qx = req;
            bool ws = mp_call_rop_id(call, false, i) == MP_ROP_WriteStream;
            const uint8_t *data = ws ? q->Data : qx->Data;
            uint16_t len = ws ? q->DataSize : qx->DataSize;
            if (o->kind != K_STREAM || !data)
                continue;
            req_write(a, o, data, len);
            break;
        }
        case MP_ROP_CommitStream:
            if (o->kind != K_STREAM)
                continue;
            stream_store(a, o);
            break;
        case MP_ROP_ModifyRecipients: {
            const struct mp_rop_req_ModifyRecipients *q = req;
            if (o->kind != K_MSG)
                continue;
            req_modify_recipients(a, o, q);
            break;
        }
        case MP_ROP_RemoveAllRecipients:
            if (o->kind != K_MSG)
                continue;
            mp_msg_clear_recipients(o->m);
            o->t->dirty = true;
            break;
        case MP_ROP_SaveChangesMessage:
            if (o->kind != K_MSG || o->m->parent)
                continue;
            complete_at(a, o->t, "RopSaveChangesMessage", (int)i, true);
            break;
        case MP_ROP_SubmitMessage:
            if (o->kind != K_MSG || o->m->parent)
                continue;
            if (o->t->dirty || !o->t->delivered)
                complete_at(a, o->t, "RopSubmitMessage", (int)i, true);
            break;
        default:
            continue;
        }
        a->applied[i] = true;
    }
}

/* ---- FastTransfer entry points ---- */
struct mp_message *mp_asm_begin(struct mp_asm *a)
{
    (void)a;
    return mp_msg_new();
}

bool mp_asm_count(struct mp_asm *a, struct mp_message *m, uint64_t n)
{
    return !mp_msg_count(m, n, &a->lim);
}

void mp_asm_end(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir, enum mp_msg_mode mode,
                const char *completed_by, bool partial)
{
    mp_asm_end_fx(a, m, dir, mode, completed_by, partial, -1, false, NULL);
}

void mp_asm_end_fx(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir,
                   enum mp_msg_mode mode, const char *completed_by, bool partial, int rop_index,
                   bool at_request, const struct mp_fx_span *span)
{
    if (m->over_limit)
        warn(a,
             "message (folder 0x%016llx, %s) passes the maximum message size of %llu bytes: "
             "not assembled",
             (unsigned long long)m->folder_id, mp_msg_dir_name(dir),
             (unsigned long long)a->lim.max_message);
    else
        deliver_fx(a, m, dir, mode, completed_by, partial, rop_index, at_request, true, span);
    mp_msg_free(m);
}

void mp_asm_emit(struct mp_asm *a, struct mp_call *call)
{
    mp_asm_fx_emit(a, &a->fx, call);
}

int mp_asm_queue_state(struct mp_asm *a, const struct mp_object *o, struct mp_fx_qstate *st)
{
    return mp_asm_fx_queue_state(&a->fx, o, st);
}

void mp_asm_fed(struct mp_asm *a, const struct mp_object *o, const struct mp_call *call, int ri)
{
    mp_asm_fx_fed(&a->fx, o, call, ri);
}

const uint8_t *mp_asm_held(struct mp_asm *a, const struct mp_fx_span *sp, size_t *len)
{
    return mp_asm_fx_held(&a->fx, sp, len);
}

int mp_asm_replace(struct mp_asm *a, const struct mp_fx_span *sp, const uint8_t *p, size_t n)
{
    return mp_asm_fx_replace(&a->fx, sp, p, n);
}

void mp_asm_up_emit(struct mp_asm *a, struct mp_call *call)
{
    mp_asm_fx_up_emit(a, &a->fx, call);
}

void mp_asm_up_block(struct mp_asm *a, const struct mp_fx_span *sp, struct mp_call *call, int ri)
{
    mp_asm_fx_up_block(&a->fx, sp, call, ri);
}

size_t mp_asm_up_pending(struct mp_asm *a, const struct mp_object *o)
{
    return mp_asm_fx_up_pending(&a->fx, o);
}

size_t mp_asm_up_take(struct mp_asm *a, const struct mp_object *o, uint8_t *dst, size_t max)
{
    return mp_asm_fx_up_take(&a->fx, o, dst, max);
}

void mp_asm_up_result(struct mp_asm *a, const struct mp_object *o, uint32_t rv, uint16_t status,
                      uint16_t total)
{
    mp_asm_fx_up_result(&a->fx, o, rv, status, total);
}
