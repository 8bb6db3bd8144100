/* ROPs in the module chain.  See ropcall.h and doc/internals/rop.md.
 *
 * Request: rgbIn (EcDoRpcExt2: an RPC_HEADER_EXT chain; EcDoRpc: one XOR'd
 * ROP buffer) is decoded into the client's ROP list.  Modules may change,
 * drop or answer ROPs; what goes upstream is the client's list without the
 * dropped and answered ROPs (the "upstream list", up), re-encoded only if it
 * differs.  Response: rgbOut is decoded with `up` as the request context,
 * then the proxy's answers are put back where the client expects them (the
 * "client view"), and it is re-encoded only if anything differs, so that
 * with no module changing anything both legs carry the original bytes. */
#include "chain/ropstage.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "chain/msgevents.h"
#include "chain/fxside.h"
#include "chain/msgnames.h"
#include "chain/msgonline.h"
#include "chain/services.h"
#include "codec/codec.h"
#include "codec/gen/emsmdb.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "chain/chain.h"
#include "rop/objects.h"
#include "rop/rop.h"
#include "rop/ropval.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"

#define OP_DISCONNECT 1
#define OP_RPC 2
#define OP_RPCEXT2 11
#define MAX_CONTEXTS 64 /* EMSMDB contexts tracked per session */
#define ERR_RSP_LEN 6   /* RopId, handle index, ReturnValue */

struct item {
    struct mp_rop *r;
    uint16_t buf;
    bool changed, dropped, local;
    uint32_t error;
    void *answer; /* local: the proxy's whole response (mp_ropstage_answer), else a failure */
    int req;      /* responses: index of the client's request item, or -1 */
    /* requests: 1 + the index of the RopRelease of the same buffer that
     * releases the object this ROP creates; 0 when none */
    size_t released_by;
    /* call memory (copies, never the table's): valid until the call ends */
    const struct mp_object *obj, *newobj;
};

struct side {
    bool ok;
    struct mp_rpcext x; /* EcDoRpcExt2 */
    bool have_x;
    uint8_t *flat; /* EcDoRpc: the un-XORed buffer */
    size_t flat_len;
    struct mp_rop_buf *bufs;
    bool *buf_ok;
    size_t nbuf;
    struct item *it;
    size_t n;
    bool rebuilt; /* response: the proxy's answers were merged in */
};

struct mp_ropcall {
    struct mp_objtab *tab; /* a reference, dropped when the call ends */
    struct mp_arena *a;    /* the call's */
    size_t rel_next;       /* request items before it: releases applied */
    struct side rq, rs;
    struct mp_rop_buf up; /* request ROP buffer 0 as sent upstream */
    int *up_map;          /* up.rops[k] is client request item up_map[k] */
    bool up_differs;
    bool all_local; /* every ROP answered by the proxy */
    void *msgev;    /* message events of the call (msgevents.c) */
    /* ROPs the proxy adds to the upstream list (mp_ropstage_inject): their
     * responses never reach the client */
    struct inj {
        size_t before; /* client request item */
        struct mp_rop r;
    } * inj;
    size_t ninj;
    size_t extra_handles; /* handle table slots the injected ROPs use */
    void *online;         /* online prefetch of the call (msgonline.c) */
    void *fxside;         /* side GetBuffers of the call (fxside.c) */
    void *names;          /* the proxy's named-property mapping (msgnames.c) */
};

struct mp_ropsess {
    struct cxt {
        uint8_t cxh[16];
        struct mp_objtab *t;
        uint32_t id; /* mp_object.context_id */
    } v[MAX_CONTEXTS];
    size_t n;
    uint32_t last_id;
    void *msgev;  /* the session's message assembler (msgevents.c) */
    void *online; /* online prefetch verdicts (msgonline.c) */
};

extern const struct mp_stage_provider mp_rop_stage;

/* The call's ROP state (NULL until the stage's request step), the
 * session's server object tables. */
static struct mp_ropcall *call_rops(struct mp_call *m)
{
    void **slot = mp_call_stage_slot(m, &mp_rop_stage);
    return slot ? *slot : NULL;
}
#define RC(m) call_rops(m)

static struct mp_ropsess *session_rops(struct mp_session *ses)
{
    void **slot = mp_session_stage_slot(ses, &mp_rop_stage);
    return slot ? *slot : NULL;
}

struct mp_objtab *mp_ropsess_table(struct mp_session *ses, uint32_t context_id)
{
    struct mp_ropsess *s = ses ? session_rops(ses) : NULL;
    for (size_t i = 0; s && context_id && i < s->n; i++)
        if (s->v[i].id == context_id)
            return s->v[i].t;
    return NULL;
}

static void ropsess_free(void *p)
{
    struct mp_ropsess *s = p;
    if (!s)
        return;
    mp_msgev_session_free(s->msgev);
    mp_msgonline_session_free(s->online);
    for (size_t i = 0; i < s->n; i++)
        mp_objtab_unref(s->v[i].t);
    free(s);
}

void **mp_ropstage_msgev_session(struct mp_session *ses)
{
    void **slot = mp_session_stage_slot(ses, &mp_rop_stage);
    if (!slot || (!*slot && !(*slot = calloc(1, sizeof(struct mp_ropsess)))))
        return NULL;
    return &((struct mp_ropsess *)*slot)->msgev;
}

static struct mp_objtab *session_tab(struct mp_session *ses, const uint8_t cxh[16])
{
    if (!ses)
        return NULL;
    void **slot = mp_session_stage_slot(ses, &mp_rop_stage);
    if (!slot || (!*slot && !(*slot = calloc(1, sizeof(struct mp_ropsess)))))
        return NULL;
    struct mp_ropsess *s = *slot;
    for (size_t i = 0; i < s->n; i++)
        if (!memcmp(s->v[i].cxh, cxh, 16))
            return s->v[i].t;
    if (s->n == MAX_CONTEXTS)
        return NULL;
    struct mp_objtab *t = mp_objtab_new();
    if (!t)
        return NULL;
    memcpy(s->v[s->n].cxh, cxh, 16);
    s->v[s->n].id = ++s->last_id;
    mp_objevents_attach(t, ses, s->v[s->n].id);
    s->v[s->n++].t = t;
    return t;
}

/* The stage runs for exchange_emsmdb's ops[] only (chain.h): of them,
 * EcDoRpc and EcDoRpcExt2 carry ROPs. */
static bool carries_rops(const struct mp_call *m)
{
    return m->opnum == OP_RPC || m->opnum == OP_RPCEXT2;
}

/* Before relay: EcDoDisconnect forgets that context's objects. */
static void before_relay(struct mp_call *m)
{
    if (m->opnum != OP_DISCONNECT || !m->session || !session_rops(m->session))
        return;
    const struct emsmdb_EcDoDisconnect_in *in = mp_call_request(m);
    if (!in)
        return;
    struct mp_ropsess *s = session_rops(m->session);
    for (size_t i = 0; i < s->n; i++) {
        if (!memcmp(s->v[i].cxh, in->pcxh.uuid, 16)) {
            /* calls of this context still running keep their reference */
            mp_debug("call %s EcDoDisconnect: the context forgets %zu server objects", m->peer,
                     mp_objtab_count(s->v[i].t));
            mp_objtab_unref(s->v[i].t);
            s->v[i] = s->v[--s->n];
            return;
        }
    }
}

static void side_free(struct side *s)
{
    if (s->have_x)
        mp_rpcext_free(&s->x);
    memset(s, 0, sizeof(*s));
}

static void apply_releases(struct mp_ropcall *rc, size_t upto);

static void call_free(struct mp_call *m, void *ctx)
{
    struct mp_ropcall *rc = ctx;
    /* releases the upstream got, whose response was never tracked */
    if (rc->rq.ok && m->relays)
        apply_releases(rc, rc->rq.n);
    mp_objtab_unref(rc->tab);
    mp_msgev_call_free(rc->msgev);
    mp_msgonline_call_free(rc->online);
    mp_fxside_call_free(rc->fxside);
    mp_msgnames_call_free(rc->names);
    side_free(&rc->rq);
    side_free(&rc->rs);
}

void **mp_ropstage_msgev_call(struct mp_call *m)
{
    return RC(m) ? &RC(m)->msgev : NULL;
}

int mp_ropstage_new_handle(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rq.ok || m->stage != MPC_STAGE_REQ || rc->rq.nbuf != 1)
        return -1;
    size_t k = rc->rq.bufs[0].nhandles + rc->extra_handles;
    if (k > 254)
        return -1;
    rc->extra_handles++;
    return (int)k;
}

int mp_ropstage_inject(struct mp_call *m, size_t before, uint8_t rop_id, void *v)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rq.ok || m->stage != MPC_STAGE_REQ || rc->rq.nbuf != 1 ||
        before >= rc->rq.bufs[0].n || !mp_rop_descs[rop_id] || !v)
        return -1;
    struct inj *n = mp_arena_calloc(rc->a, rc->ninj + 1, sizeof(*n));
    if (!n)
        return -1;
    if (rc->ninj)
        memcpy(n, rc->inj, rc->ninj * sizeof(*n));
    n[rc->ninj].before = before;
    n[rc->ninj].r =
        (struct mp_rop){.rop_id = rop_id, .desc = mp_rop_descs[rop_id], .v = v, .req_index = -1};
    rc->inj = n;
    rc->ninj++;
    return 0;
}

static void reset_response(struct mp_call *m)
{
    if (RC(m))
        side_free(&RC(m)->rs);
}

/* ---- the buffers in the decoded call ---- */

static const uint8_t *call_rgb(struct mp_call *m, bool response, size_t *len)
{
    *len = 0;
    if (m->opnum == OP_RPCEXT2) {
        if (response) {
            const struct emsmdb_EcDoRpcExt2_out *o = mp_call_response(m);
            if (o && o->rgbOut)
                *len = o->pcbOut;
            return o ? o->rgbOut : NULL;
        }
        const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
        if (in && in->rgbIn)
            *len = in->cbIn;
        return in ? in->rgbIn : NULL;
    }
    if (response) {
        const struct emsmdb_EcDoRpc_out *o = mp_call_response(m);
        if (o && o->rgb)
            *len = o->pcb;
        return o ? o->rgb : NULL;
    }
    const struct emsmdb_EcDoRpc_in *in = mp_call_request(m);
    if (in && in->rgb)
        *len = in->pcb;
    return in ? in->rgb : NULL;
}

static const uint8_t *call_cxh(struct mp_call *m)
{
    if (m->opnum == OP_RPCEXT2) {
        const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
        return in ? in->pcxh.uuid : NULL;
    }
    const struct emsmdb_EcDoRpc_in *in = mp_call_request(m);
    return in ? in->pcxh.uuid : NULL;
}

/* ---- decoding context from the object table ---- */

/* The decoded rows keep the columns: a copy in call memory, since the
 * table's own may change or go before the call ends. */
static int ctx_columns(void *opaque, uint32_t handle, const uint32_t **tags, size_t *n)
{
    const struct mp_ropcall *rc = opaque;
    const struct mp_object *o = mp_objtab_get(rc->tab, handle);
    if (!o || o->type != MP_OBJ_TABLE || !o->columns)
        return -1;
    uint32_t *c = mp_arena_memdup(rc->a, o->columns, o->ncolumns * sizeof(*c));
    if (!c)
        return -1;
    *tags = c;
    *n = o->ncolumns;
    return 0;
}

static int ctx_logon(void *opaque, uint8_t logon_id)
{
    const struct mp_ropcall *rc = opaque;
    return mp_objtab_logon(rc->tab, logon_id);
}

static uint8_t req_byte(const struct mp_rop *r, int16_t off)
{
    return ((const uint8_t *)r->v)[off];
}

/* The proxy answered request ROP r: a handle it would have created is
 * invalid (0xFFFFFFFF) in the client's handle table. */
static void invalidate_created(uint32_t *handles, size_t n, const struct mp_rop *r)
{
    int oh = mp_rop_out_slot(r);
    if (oh >= 0 && (size_t)oh < n)
        handles[oh] = MP_OBJ_NONE;
}

/* Decodes rgb into s.  Payloads after the first one of a response
 * (extended buffer packing) that do not decode stay untouched. */
static int decode_side(struct mp_call *m, struct side *s, bool response,
                       const struct mp_rop_buf *reqs)
{
    struct mp_ropcall *rc = RC(m);
    size_t len;
    const uint8_t *rgb = call_rgb(m, response, &len);
    if (!rgb || !len)
        return -1;
    struct mp_arena *a = mp_call_arena(m);
    if (!a)
        return -1;
    if (m->opnum == OP_RPCEXT2) {
        int st = mp_rpcext_parse(&s->x, rgb, len);
        if (st) {
            mp_info("call %s %s: %s RPC_HEADER_EXT chain does not decode (%s); relayed untouched",
                    m->peer, m->op_name, response ? "rgbOut" : "rgbIn", mp_rpcext_strerror(st));
            return -1;
        }
        s->have_x = true;
        s->nbuf = s->x.n;
    } else {
        s->flat = mp_arena_memdup(a, rgb, len);
        if (!s->flat)
            return -1;
        mp_emsmdb_xor(s->flat, len);
        s->flat_len = len;
        s->nbuf = 1;
    }
    s->bufs = mp_arena_calloc(a, s->nbuf, sizeof(*s->bufs));
    s->buf_ok = mp_arena_calloc(a, s->nbuf, sizeof(*s->buf_ok));
    if (!s->bufs || !s->buf_ok)
        return -1;
    struct mp_rop_ctx ctx = {.requests = reqs,
                             .table_columns = rc->tab ? ctx_columns : NULL,
                             .logon_is_private = rc->tab ? ctx_logon : NULL,
                             .opaque = rc};
    size_t total = 0;
    for (size_t i = 0; i < s->nbuf; i++) {
        size_t n;
        const uint8_t *p = s->have_x ? mp_rpcext_content(&s->x, i, &n) : s->flat;
        if (!s->have_x)
            n = s->flat_len;
        /* chained payloads: response payload i answers request payload i */
        ctx.requests =
            response && i > 0 && i < rc->rq.nbuf && rc->rq.buf_ok[i] ? &rc->rq.bufs[i] : reqs;
        int st = mp_rop_decode(&s->bufs[i], p, n, response, response ? &ctx : NULL, a);
        if (st == MP_ROP_OK) {
            s->buf_ok[i] = true;
            total += s->bufs[i].n;
            continue;
        }
        if (i == 0 || !response) {
            mp_info("call %s %s: %s ROP buffer %zu does not decode (%s at offset %zu); relayed "
                    "untouched",
                    m->peer, m->op_name, response ? "response" : "request", i,
                    st == MP_ROP_UNDECODABLE && s->bufs[i].why ? s->bufs[i].why : "no memory",
                    s->bufs[i].bad_off);
            return -1;
        }
        memset(&s->bufs[i], 0, sizeof(s->bufs[i]));
    }
    s->it = mp_arena_calloc(a, total ? total : 1, sizeof(*s->it));
    if (!s->it)
        return -1;
    for (size_t b = 0; b < s->nbuf; b++) {
        for (size_t k = 0; k < s->bufs[b].n; k++) {
            struct item *it = &s->it[s->n++];
            it->r = &s->bufs[b].rops[k];
            it->buf = (uint16_t)b;
            it->req = response ? s->bufs[b].rops[k].req_index : -1;
        }
    }
    s->ok = true;
    return 0;
}

/* ---- objects ---- */

/* The object a ROP request creates, as far as its request tells. */
static struct mp_object *provisional(struct mp_arena *a, const struct mp_rop *r,
                                     const struct mp_object *parent)
{
    struct mp_object *o = mp_arena_alloc(a, sizeof(*o));
    if (!o)
        return NULL;
    o->type = mp_object_type_for_rop(r->rop_id);
    o->handle = MP_OBJ_NONE;
    o->logon_id = req_byte(r, 1);
    o->created_by = r->rop_id;
    o->private_mailbox = -1;
    o->parent = parent ? parent->handle : MP_OBJ_NONE;
    if (parent) {
        o->folder_id = parent->folder_id;
        o->message_id = parent->message_id;
        o->attachment_id = parent->attachment_id;
        if (o->type == MP_OBJ_STREAM && r->rop_id == 0x3B)
            o->property_tag = parent->property_tag;
    }
    switch (r->rop_id) {
    case 0xFE:
        o->private_mailbox = ((const struct mp_rop_req_Logon *)r->v)->LogonFlags & 1;
        break;
    case 0x02:
        o->folder_id = ((const struct mp_rop_req_OpenFolder *)r->v)->FolderId;
        o->message_id = 0;
        o->attachment_id = 0;
        break;
    case 0x03:
        o->folder_id = ((const struct mp_rop_req_OpenMessage *)r->v)->FolderId;
        o->message_id = ((const struct mp_rop_req_OpenMessage *)r->v)->MessageId;
        o->attachment_id = 0;
        break;
    case 0x06:
        o->folder_id = ((const struct mp_rop_req_CreateMessage *)r->v)->FolderId;
        o->message_id = 0;
        o->attachment_id = 0;
        break;
    case 0x1C:
        o->folder_id = 0;
        o->message_id = 0;
        break;
    case 0x46:
        o->message_id = 0;
        o->attachment_id = 0;
        break;
    case 0x22:
        o->attachment_id = ((const struct mp_rop_req_OpenAttachment *)r->v)->AttachmentID;
        break;
    case 0x2B:
        o->property_tag = ((const struct mp_rop_req_OpenStream *)r->v)->PropertyTag;
        break;
    case 0x04:
    case 0x05:
    case 0x21:
    case 0x3E:
    case 0x3F:
        o->table_rop = r->rop_id;
        break;
    default:
        break;
    }
    return o;
}

/* A table object as the call sees it: a copy in call memory (columns too). */
static const struct mp_object *snapshot(struct mp_arena *a, const struct mp_object *t)
{
    struct mp_object *o = mp_arena_memdup(a, t, sizeof(*t));
    if (o && t->columns && t->ncolumns) {
        o->columns = mp_arena_memdup(a, t->columns, t->ncolumns * sizeof(*t->columns));
        if (!o->columns)
            o->ncolumns = 0;
    }
    return o;
}

static const struct mp_object *unknown_object(struct mp_arena *a, uint32_t handle, uint8_t logon)
{
    struct mp_object *o = mp_arena_alloc(a, sizeof(*o));
    if (o) {
        o->type = MP_OBJ_UNKNOWN;
        o->handle = handle;
        o->logon_id = logon;
        o->private_mailbox = -1;
        o->parent = MP_OBJ_NONE;
    }
    return o;
}

/* The input object of every request ROP, following handles created earlier
 * in the same buffer; a RopRelease of such a handle marks the ROP that
 * created it (released_by). */
static void request_objects(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    struct mp_arena *a = rc->a;
    struct side *s = &rc->rq;
    const struct mp_object *slot[256];
    size_t creator[256]; /* 1 + the request item that created slot[h], 0 */
    int cur = -1;
    for (size_t i = 0; i < s->n; i++) {
        struct item *it = &s->it[i];
        if (it->buf != cur) {
            memset(slot, 0, sizeof(slot));
            memset(creator, 0, sizeof(creator));
            cur = it->buf;
        }
        const struct mp_rop *r = it->r;
        if (r->opaque || !r->v)
            continue;
        const struct mp_rop_buf *b = &s->bufs[it->buf];
        const struct mp_object *in = NULL;
        if (r->desc->in_hidx >= 0) {
            uint8_t h = req_byte(r, r->desc->in_hidx);
            in = slot[h];
            if (!in) {
                uint32_t handle = h < b->nhandles ? b->handles[h] : MP_OBJ_NONE;
                const struct mp_object *t = mp_objtab_get(rc->tab, handle);
                in = t ? snapshot(a, t) : NULL;
                if (!in)
                    in = unknown_object(a, handle, req_byte(r, 1));
                slot[h] = in;
            }
            it->obj = in;
            if (r->rop_id == 0x01 && creator[h])
                s->it[creator[h] - 1].released_by = i + 1;
        }
        int oh = mp_rop_out_slot(r);
        if (oh >= 0) {
            slot[oh] = provisional(a, r, in);
            creator[oh] = i + 1;
        }
    }
}

/* The RopReleases among request items [rc->rel_next, upto) that went
 * upstream: their objects leave the table.  Applied in request order
 * between the responses around them (as the server executed them), after
 * the response was decoded (a release after a RopQueryRows on the same
 * table still lets the rows decode), and at the latest when the call ends.
 * The call's modules keep their copies (item.obj). */
static void apply_releases(struct mp_ropcall *rc, size_t upto)
{
    for (; rc->rel_next < upto && rc->rel_next < rc->rq.n; rc->rel_next++) {
        const struct item *it = &rc->rq.it[rc->rel_next];
        if (rc->tab && it->r->rop_id == 0x01 && it->obj && !it->dropped && !it->local &&
            it->obj->type != MP_OBJ_UNKNOWN && it->obj->handle != MP_OBJ_NONE)
            mp_objtab_del(rc->tab, it->obj->handle);
    }
}

/* A successful response: record what it created or changed. */
static void track_response(struct mp_ropcall *rc, struct item *it, const struct mp_rop_buf *rb,
                           struct mp_arena *a)
{
    if (!rc->tab || it->req < 0 || it->r->opaque || !it->r->v)
        return;
    const struct item *q = &rc->rq.it[it->req];
    const struct mp_rop *rq = q->r;
    if (rq->opaque || !rq->v || mp_rop_return_value(it->r) != 0)
        return;
    const void *rv = it->r->v;
    switch (rq->rop_id) {
    case 0x12: { /* SetColumns: on the table at the input handle */
        uint8_t h = req_byte(rq, rq->desc->in_hidx);
        if (h < rb->nhandles) {
            const struct mp_rop_req_SetColumns *sc = rq->v;
            mp_objtab_set_columns(rc->tab, rb->handles[h], sc->PropertyTags, sc->PropertyTagCount);
        }
        return;
    }
    case 0x0C: { /* SaveChangesMessage: the message has an id now */
        const struct mp_rop_rsp_SaveChangesMessage *sv = rv;
        if (sv->InputHandleIndex < rb->nhandles)
            mp_objtab_set_message_id(rc->tab, rb->handles[sv->InputHandleIndex], sv->MessageId);
        return;
    }
    default:
        break;
    }
    int oh = mp_rop_out_slot(rq);
    if (oh < 0 || (size_t)oh >= rb->nhandles)
        return;
    struct mp_object *o = provisional(a, rq, q->obj); /* q->obj: call memory */
    if (!o)
        return;
    o->handle = rb->handles[oh];
    switch (rq->rop_id) {
    case 0xFE:
        o->private_mailbox = ((const struct mp_rop_rsp_Logon *)rv)->LogonFlags & 1;
        mp_objtab_set_logon(rc->tab, o->logon_id, o->private_mailbox);
        break;
    case 0x1C:
        o->folder_id = ((const struct mp_rop_rsp_CreateFolder *)rv)->FolderId;
        break;
    case 0x06:
        if (((const struct mp_rop_rsp_CreateMessage *)rv)->HasMessageId)
            o->message_id = ((const struct mp_rop_rsp_CreateMessage *)rv)->MessageId;
        break;
    case 0x46:
        o->message_id = ((const struct mp_rop_rsp_OpenEmbeddedMessage *)rv)->MessageId;
        break;
    case 0x23:
        o->attachment_id = ((const struct mp_rop_rsp_CreateAttachment *)rv)->AttachmentID;
        break;
    case 0x2B:
        o->stream_size = ((const struct mp_rop_rsp_OpenStream *)rv)->StreamSize;
        break;
    default:
        break;
    }
    it->newobj = o;
    const struct item *rel = q->released_by ? &rc->rq.it[q->released_by - 1] : NULL;
    if (rel && !rel->dropped && !rel->local)
        return; /* released by the same buffer: never in the table */
    if (mp_objtab_put(rc->tab, o))
        mp_debug("server object table full (%u objects); handle 0x%08x not tracked", MP_OBJTAB_MAX,
                 o->handle);
}

/* ---- request ---- */

static void request(struct mp_call *m)
{
    /* the stage also runs for EcDoDisconnect (for the table's end): that
     * call has no ROPs, and its request is not an EcDoRpc's */
    if (!carries_rops(m))
        return;
    void **slot = mp_call_stage_slot(m, &mp_rop_stage);
    struct mp_arena *ca = mp_call_arena(m);
    /* call memory: gone with the call's arena, after call_free */
    if (!slot || !ca || (!*slot && !(*slot = mp_arena_calloc(ca, 1, sizeof(struct mp_ropcall)))))
        return;
    struct mp_ropcall *rc = *slot;
    side_free(&rc->rq);
    rc->rel_next = 0;
    rc->a = mp_call_arena(m);
    const uint8_t *cxh = call_cxh(m);
    mp_objtab_unref(rc->tab);
    rc->tab = cxh ? mp_objtab_ref(session_tab(m->session, cxh)) : NULL;
    if (decode_side(m, &rc->rq, false, NULL)) {
        side_free(&rc->rq);
        return;
    }
    request_objects(m);
    mp_msgev_request(m);
    mp_msgonline_request(m);
}

/* Appends a ROP buffer: rops whose item is unchanged are written as their
 * original bytes.  With ref: appends nothing, and returns 1 when the buffer
 * would come out as ref[0..ref_len), else 0. */
static int encode_rops(struct mp_buf *out, const struct mp_rop_buf *b, struct mp_rop *tmp,
                       const bool *changed, const uint8_t *ref, size_t ref_len)
{
    struct mp_rop_buf e = *b;
    for (size_t i = 0; i < b->n; i++) {
        tmp[i] = b->rops[i];
        if (!changed[i] && tmp[i].raw)
            tmp[i].v = NULL;
    }
    e.rops = tmp;
    if (ref)
        return mp_rop_encodes_as(&e, ref, ref_len);
    return mp_rop_encode(out, &e);
}

/* The proxy's failure response to request ROP r (no response: NULL). */
static int synth_answer(struct mp_arena *a, const struct item *it, struct mp_rop *out)
{
    const struct mp_rop *r = it->r;
    uint32_t error = it->error;
    const struct mp_rop_desc *d = r->desc;
    if (d->flags & MP_ROPD_NORESPONSE || !d->push_rsp)
        return 0;
    if (it->answer) {
        memset(out, 0, sizeof(*out));
        out->rop_id = r->rop_id;
        out->desc = d;
        out->v = it->answer;
        out->req_index = -1;
        return 1;
    }
    struct mp_rop_rsp_head *h =
        mp_arena_alloc(a, d->rsp_size > sizeof(*h) ? d->rsp_size : sizeof(*h));
    if (!h)
        return -1;
    h->RopId = r->rop_id == 0x1F ? 0x20 : r->rop_id; /* GetMessageStatus answers as 0x20 */
    h->HandleIndex = d->rsp_hidx >= 0 ? req_byte(r, d->rsp_hidx) : 0;
    h->ReturnValue = error;
    memset(out, 0, sizeof(*out));
    out->rop_id = h->RopId;
    out->desc = d;
    out->v = h;
    out->req_index = -1;
    return 1;
}

/* Writes the payload contents back into the decoded call: content[i] for
 * payload i. */
static int store_rgb(struct mp_call *m, bool response, const uint8_t *const *seg, const size_t *len,
                     size_t nseg, const struct side *s, uint32_t reserve)
{
    struct mp_arena *a = mp_call_arena(m);
    struct mp_buf out = {0};
    if (m->opnum == OP_RPCEXT2) {
        /* about the original's size: one allocation, not a doubling chain */
        size_t hint = 0;
        for (size_t i = 0; i < s->x.n; i++)
            hint += 8 + s->x.p[i].size;
        if (mp_buf_reserve(&out, hint + 64))
            return -1;
        int st = mp_rpcext_reencode(&out, &s->x, seg, len, nseg);
        if (st) {
            mp_warn("call %s %s: the changed %s does not fit its RPC_HEADER_EXT chain (%s)",
                    m->peer, m->op_name, response ? "response" : "request", mp_rpcext_strerror(st));
            mp_buf_free(&out);
            return -1;
        }
    } else {
        if (mp_buf_append(&out, seg[0], len[0])) {
            mp_buf_free(&out);
            return -1;
        }
        mp_emsmdb_xor(out.data, out.len);
    }
    uint8_t *copy = mp_arena_memdup(a, out.data, out.len ? out.len : 1);
    size_t n = out.len;
    mp_buf_free(&out);
    if (!copy)
        return -1;
    if (m->opnum == OP_RPCEXT2) {
        if (response) {
            struct emsmdb_EcDoRpcExt2_out *o = mp_call_response(m);
            const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
            if (in && n > in->pcbOut) {
                mp_warn("call %s %s: the changed response (%zu bytes) exceeds the client's "
                        "pcbOut %u",
                        m->peer, m->op_name, n, in->pcbOut);
                return -1;
            }
            o->rgbOut = copy;
            o->pcbOut = (uint32_t)n;
            mp_call_response_changed(m);
        } else {
            struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
            in->rgbIn = copy;
            in->cbIn = (uint32_t)n;
            if (in->pcbOut > reserve + 0x100)
                in->pcbOut -= reserve;
            mp_call_request_changed(m);
        }
    } else {
        if (n > 0xFFFF)
            return -1;
        if (response) {
            struct emsmdb_EcDoRpc_out *o = mp_call_response(m);
            o->rgb = copy;
            o->pcb = (uint16_t)n;
            mp_call_response_changed(m);
        } else {
            struct emsmdb_EcDoRpc_in *in = mp_call_request(m);
            in->rgb = copy;
            in->pcb = (uint16_t)n;
            if (in->cbMax > reserve + 0x100)
                in->cbMax = (uint16_t)(in->cbMax - reserve);
            mp_call_request_changed(m);
        }
    }
    return 0;
}

/* Whether the call's rgb is exactly what side s decoded (no bytes after the
 * RPC_HEADER_EXT chain's Last payload), so that contents equal to the
 * decoded ones mean the original rgb. */
static bool side_whole(struct mp_call *m, bool response, const struct side *s)
{
    size_t len;
    if (!call_rgb(m, response, &len))
        return false;
    return !s->have_x || s->x.consumed == len;
}

/* Encodes every buffer of side s (buffer 0 replaced by b0 if not NULL) and
 * stores the result in the call, unless it comes out as the original. */
static int encode_side(struct mp_call *m, bool response, struct side *s,
                       const struct mp_rop_buf *b0, const bool *b0_changed, uint32_t reserve)
{
    struct mp_arena *a = mp_call_arena(m);
    size_t nseg = s->nbuf;
    const uint8_t **seg = mp_arena_calloc(a, nseg, sizeof(*seg));
    size_t *len = mp_arena_calloc(a, nseg, sizeof(*len));
    struct mp_buf *bufs = mp_arena_calloc(a, nseg, sizeof(*bufs));
    int rc = -1;
    if (!seg || !len || !bufs)
        goto out;
    size_t it = 0;
    /* every buffer re-encodes to its original bytes (a module marked ROPs
     * changed but left their fields as they were): the call keeps its
     * original rgb, and nothing is re-compressed or re-encoded as NDR */
    bool same = reserve == 0 && side_whole(m, response, s);
    for (size_t i = 0; i < nseg; i++) {
        const struct mp_rop_buf *b = i == 0 && b0 ? b0 : &s->bufs[i];
        size_t nb = s->bufs[i].n;
        bool any = i == 0 && (b0 || s->rebuilt); /* rebuilt: answers left out too */
        for (size_t k = 0; k < nb; k++)
            any |= s->it[it + k].changed || s->it[it + k].dropped;
        if (!any || !s->buf_ok[i]) {
            if (s->have_x) {
                seg[i] = mp_rpcext_content(&s->x, i, &len[i]);
            } else {
                seg[i] = s->flat;
                len[i] = s->flat_len;
            }
            it += nb;
            continue;
        }
        bool *ch = mp_arena_calloc(a, b->n ? b->n : 1, sizeof(*ch));
        struct mp_rop *tmp = mp_arena_calloc(a, b->n ? b->n : 1, sizeof(*tmp));
        if (!ch || !tmp)
            goto out;
        if (i == 0 && b0) {
            memcpy(ch, b0_changed, b->n * sizeof(*ch));
        } else { /* the buffer's own ROPs minus the dropped ones */
            struct mp_rop_buf *nbf = mp_arena_alloc(a, sizeof(*nbf));
            struct mp_rop *kept = mp_arena_calloc(a, nb ? nb : 1, sizeof(*kept));
            if (!nbf || !kept)
                goto out;
            *nbf = *b;
            nbf->n = 0;
            for (size_t k = 0; k < nb; k++) {
                if (s->it[it + k].dropped)
                    continue;
                ch[nbf->n] = s->it[it + k].changed;
                kept[nbf->n++] = b->rops[k];
            }
            nbf->rops = kept;
            b = nbf;
        }
        size_t olen = s->flat_len; /* about the original's size: one allocation */
        const uint8_t *orig = s->have_x ? mp_rpcext_content(&s->x, i, &olen) : s->flat;
        if (same && encode_rops(NULL, b, tmp, ch, orig, olen)) {
            seg[i] = orig; /* the same bytes, found without making a copy */
            len[i] = olen;
            it += nb;
            continue;
        }
        same = false;
        if (mp_buf_reserve(&bufs[i], olen + 64))
            goto out;
        if (encode_rops(&bufs[i], b, tmp, ch, NULL, 0)) {
            mp_warn("call %s %s: a changed ROP buffer does not encode (RopSize over 65535?)",
                    m->peer, m->op_name);
            goto out;
        }
        seg[i] = bufs[i].data;
        len[i] = bufs[i].len;
        it += nb;
    }
    rc = same ? 0 : store_rgb(m, response, seg, len, nseg, s, reserve);
out:
    for (size_t i = 0; bufs && i < nseg; i++)
        mp_buf_free(&bufs[i]);
    return rc;
}

/* Every ROP answered by the proxy: the whole response is ours. */
static int answer_all(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    struct mp_arena *a = mp_call_arena(m);
    const struct mp_rop_buf *cb = &rc->rq.bufs[0];
    struct mp_rop_buf rb = {.response = true};
    rb.rops = mp_arena_calloc(a, cb->n ? cb->n : 1, sizeof(*rb.rops));
    rb.handles = mp_arena_memdup(a, cb->handles, cb->nhandles * 4 + 4);
    rb.nhandles = cb->nhandles;
    if (!rb.rops || !rb.handles)
        return -1;
    for (size_t i = 0; i < rc->rq.n; i++) {
        struct item *it = &rc->rq.it[i];
        if (!it->local)
            continue;
        int st = synth_answer(a, it, &rb.rops[rb.n]);
        if (st < 0)
            return -1;
        rb.n += (size_t)st;
        invalidate_created(rb.handles, rb.nhandles, it->r);
    }
    struct mp_buf content = {0}, chain = {0};
    int rcode = -1;
    if (mp_rop_encode(&content, &rb))
        goto out;
    uint8_t *rgb;
    size_t n;
    if (m->opnum == OP_RPCEXT2) {
        uint16_t fl = rc->rq.x.n ? rc->rq.x.p[0].flags & (MP_RHE_COMPRESSED | MP_RHE_XORMAGIC) : 0;
        const uint8_t *seg = content.data;
        size_t sl = content.len;
        if (mp_rpcext_build_chain(&chain, &seg, &sl, 1, fl))
            goto out;
        rgb = mp_arena_memdup(a, chain.data, chain.len);
        n = chain.len;
    } else {
        rgb = mp_arena_memdup(a, content.data, content.len);
        n = content.len;
        if (rgb)
            mp_emsmdb_xor(rgb, n);
    }
    if (!rgb)
        goto out;
    if (m->opnum == OP_RPCEXT2) {
        const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
        struct emsmdb_EcDoRpcExt2_out *o = mp_call_new_response(m);
        if (!o)
            goto out;
        o->pcxh = in->pcxh;
        o->rgbOut = rgb;
        o->pcbOut = (uint32_t)n;
        o->rgbAuxOut = mp_arena_alloc(a, 0);
    } else {
        const struct emsmdb_EcDoRpc_in *in = mp_call_request(m);
        struct emsmdb_EcDoRpc_out *o = mp_call_new_response(m);
        if (!o || n > 0xFFFF)
            goto out;
        o->pcxh = in->pcxh;
        o->rgb = rgb;
        o->pcb = (uint16_t)n;
    }
    rcode = 0;
out:
    mp_buf_free(&content);
    mp_buf_free(&chain);
    return rcode;
}

static int request_done(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rq.ok)
        return 0;
    if (mp_msgev_request_done(m))
        return -1;
    struct side *s = &rc->rq;
    struct mp_arena *a = mp_call_arena(m);
    /* the upstream list: buffer 0 without what the proxy answered */
    const struct mp_rop_buf *b0 = &s->bufs[0];
    size_t n0 = b0->n, nlocal = 0;
    bool excl = false, changed = false;
    for (size_t i = 0; i < s->n; i++) {
        excl |= s->it[i].dropped || s->it[i].local;
        changed |= s->it[i].changed;
        nlocal += s->it[i].local;
    }
    rc->up = *b0;
    rc->up_map = mp_arena_calloc(a, n0 ? n0 : 1, sizeof(int));
    bool *ch = mp_arena_calloc(a, n0 ? n0 : 1, sizeof(bool));
    if (!rc->up_map || !ch)
        return -1;
    if (!excl && !changed && !rc->ninj) {
        for (size_t k = 0; k < n0; k++)
            rc->up_map[k] = (int)k;
        return 0;
    }
    size_t cap = n0 + rc->ninj;
    rc->up.rops = mp_arena_calloc(a, cap ? cap : 1, sizeof(*rc->up.rops));
    if (rc->ninj) {
        rc->up_map = mp_arena_calloc(a, cap, sizeof(int));
        ch = mp_arena_calloc(a, cap, sizeof(bool));
    }
    if (!rc->up.rops || !rc->up_map || !ch)
        return -1;
    rc->up.n = 0;
    for (size_t k = 0; k < n0; k++) { /* buffer 0's items are the first n0 */
        if (s->it[k].dropped || s->it[k].local)
            continue;
        for (size_t j = 0; j < rc->ninj; j++) {
            if (rc->inj[j].before != k)
                continue;
            rc->up_map[rc->up.n] = -1; /* the proxy's own */
            ch[rc->up.n] = true;
            rc->up.rops[rc->up.n++] = rc->inj[j].r;
        }
        rc->up_map[rc->up.n] = (int)k;
        ch[rc->up.n] = s->it[k].changed;
        rc->up.rops[rc->up.n++] = b0->rops[k];
    }
    rc->up_differs = excl || rc->ninj;
    if (rc->extra_handles) { /* slots of the proxy's own at the table's end */
        size_t nh = b0->nhandles + rc->extra_handles;
        uint32_t *h = mp_arena_calloc(a, nh, sizeof(*h));
        if (!h)
            return -1;
        memcpy(h, b0->handles, b0->nhandles * sizeof(*h));
        for (size_t k = b0->nhandles; k < nh; k++)
            h[k] = 0xFFFFFFFF;
        rc->up.handles = h;
        rc->up.nhandles = nh;
    }
    if (rc->up.n == 0 && excl) {
        rc->all_local = true;
        mp_debug("call %s %s: every ROP answered by modules; nothing relayed", m->peer, m->op_name);
        return answer_all(m) ? -1 : 1;
    }
    return encode_side(m, false, s, &rc->up, ch, (uint32_t)(nlocal * ERR_RSP_LEN)) ? -1 : 0;
}

/* ---- response ---- */

/* Builds the client view of response buffer 0 from the upstream's answers
 * and the proxy's own. */
static int merge_answers(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    struct mp_arena *a = mp_call_arena(m);
    struct side *s = &rc->rs;
    const struct side *q = &rc->rq;
    const struct mp_rop_buf *ub = &s->bufs[0];
    const size_t un = ub->n;
    size_t cn = q->bufs[0].n;
    size_t cap = un + cn + 1;
    struct mp_rop *rops = mp_arena_calloc(a, cap, sizeof(*rops));
    int *reqs = mp_arena_calloc(a, cap, sizeof(int));
    uint32_t *handles = mp_arena_memdup(a, ub->handles, ub->nhandles * 4 + 4);
    if (!rops || !reqs || !handles)
        return -1;
    size_t n = 0, next = 0;
    int last_up = -1;
#define EMIT_LOCALS(upto)                                                                          \
    for (; next < (upto); next++) {                                                                \
        const struct item *ci = &q->it[next];                                                      \
        if (!ci->local)                                                                            \
            continue;                                                                              \
        int st_ = synth_answer(a, ci, &rops[n]);                                                   \
        if (st_ < 0)                                                                               \
            return -1;                                                                             \
        if (st_) {                                                                                 \
            reqs[n++] = (int)next;                                                                 \
            invalidate_created(handles, ub->nhandles, ci->r);                                      \
        }                                                                                          \
    }
    for (size_t k = 0; k < un; k++) {
        struct mp_rop *r = &ub->rops[k];
        if (r->rop_id == 0xFF && r->v) { /* RopBufferTooSmall */
            size_t up_cut = (size_t)(last_up + 1);
            while (up_cut < rc->up.n && rc->up_map[up_cut] < 0)
                up_cut++; /* the proxy's own ROPs are not the client's to resend */
            size_t cut = up_cut < rc->up.n ? (size_t)rc->up_map[up_cut] : cn;
            EMIT_LOCALS(cut);
            struct mp_rop_rsp_BufferTooSmall *bt =
                mp_arena_memdup(a, r->v, sizeof(struct mp_rop_rsp_BufferTooSmall));
            if (!bt)
                return -1;
            /* the client resends what was not done: its own ROPs from the cut */
            size_t total = 0;
            for (size_t c = cut; c < cn; c++)
                total += q->it[c].r->len;
            uint8_t *p = mp_arena_alloc(a, total ? total : 1);
            if (!p)
                return -1;
            size_t off = 0;
            for (size_t c = cut; c < cn; c++) {
                memcpy(p + off, q->it[c].r->raw, q->it[c].r->len);
                off += q->it[c].r->len;
            }
            bt->RequestBuffers.p = p;
            bt->RequestBuffers.n = (uint32_t)total;
            rops[n] = *r;
            rops[n].v = bt;
            rops[n].raw = NULL; /* re-encode it */
            reqs[n++] = -1;
            next = cn; /* nothing after it is answered */
            continue;
        }
        if (r->req_index >= 0 && (size_t)r->req_index < rc->up.n) {
            if (rc->up_map[r->req_index] < 0)
                continue; /* the answer to a ROP the proxy added */
            size_t c = (size_t)rc->up_map[r->req_index];
            EMIT_LOCALS(c);
            if (next == c)
                next++;
            last_up = r->req_index;
            reqs[n] = (int)c;
        } else {
            reqs[n] = -1;
        }
        rops[n++] = *r;
    }
    EMIT_LOCALS(cn);
#undef EMIT_LOCALS
    struct mp_rop_buf *nb = &s->bufs[0];
    nb->rops = rops;
    nb->n = n;
    nb->handles = handles;
    if (rc->extra_handles && nb->nhandles > q->bufs[0].nhandles)
        nb->nhandles = q->bufs[0].nhandles; /* the proxy's own slots stay its own */
    /* the items: buffer 0 replaced, the others as they are */
    size_t rest = s->n - un;
    struct item *it = mp_arena_calloc(a, n + rest + 1, sizeof(*it));
    if (!it)
        return -1;
    for (size_t k = 0; k < n; k++) {
        it[k].r = &rops[k];
        it[k].req = reqs[k];
        /* the proxy's answers and a rebuilt RopBufferTooSmall are new bytes */
        it[k].changed = rops[k].raw == NULL;
    }
    memcpy(it + n, s->it + un, rest * sizeof(*it));
    for (size_t k = n; k < n + rest; k++) {
        int ri = it[k].req;
        it[k].req = ri >= 0 && (size_t)ri < rc->up.n ? rc->up_map[ri] : -1;
    }
    s->it = it;
    s->n = n + rest;
    s->rebuilt = true;
    return 0;
}

static void response(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rq.ok)
        return;
    side_free(&rc->rs);
    const struct mp_rop_buf *ctx = rc->all_local ? &rc->rq.bufs[0] : &rc->up;
    if (decode_side(m, &rc->rs, true, ctx)) {
        side_free(&rc->rs);
        return;
    }
    if (mp_msgnames_map(m) || mp_msgonline_prefetch(m)) /* side requests first (m->side_cb) */
        return;
    if (rc->all_local) {
        for (size_t i = 0; i < rc->rs.n; i++) /* the request list itself was the context */
            rc->rs.it[i].changed = false;
    } else if (rc->up_differs) {
        if (merge_answers(m)) {
            mp_warn("call %s %s: out of memory merging the proxy's ROP answers", m->peer,
                    m->op_name);
            side_free(&rc->rs);
            return;
        }
    } else {
        for (size_t i = 0; i < rc->rs.n; i++) {
            struct item *it = &rc->rs.it[i];
            int ri = it->req;
            if (it->buf > 0 && it->buf < rc->rq.nbuf && rc->rq.buf_ok[it->buf]) {
                size_t off = 0; /* request payload it->buf's first item */
                for (size_t b = 0; b < it->buf; b++)
                    off += rc->rq.bufs[b].n;
                it->req =
                    ri >= 0 && (size_t)ri < rc->rq.bufs[it->buf].n ? (int)(off + (size_t)ri) : -1;
            } else {
                it->req = ri >= 0 && (size_t)ri < rc->up.n ? rc->up_map[ri] : -1;
            }
        }
    }
    struct mp_arena *a = mp_call_arena(m);
    for (size_t i = 0; i < rc->rs.n; i++) {
        struct item *it = &rc->rs.it[i];
        if (it->req >= 0)
            apply_releases(rc, (size_t)it->req);
        track_response(rc, it, &rc->rs.bufs[it->buf], a);
    }
    apply_releases(rc, rc->rq.n);
    mp_msgev_response(m);
    if (!rc->all_local) /* a held GetBuffer: side GetBuffers (m->side_cb) */
        mp_fxside_start(m);
}

static int response_done(struct mp_call *m)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rs.ok)
        return 0;
    if (mp_msgev_response_done(m))
        return -1;
    mp_msgonline_response_done(m);
    struct side *s = &rc->rs;
    bool any = s->rebuilt;
    for (size_t i = 0; i < s->n; i++)
        any |= s->it[i].changed || s->it[i].dropped;
    if (!any)
        return 0;
    return encode_side(m, true, s, NULL, NULL, 0);
}

/* ---- side requests (msgonline.c) ---- */

void **mp_ropstage_online_call(struct mp_call *m)
{
    return RC(m) ? &RC(m)->online : NULL;
}

void **mp_ropstage_fxside_call(struct mp_call *m)
{
    return RC(m) ? &RC(m)->fxside : NULL;
}

void **mp_ropstage_names_call(struct mp_call *m)
{
    return RC(m) ? &RC(m)->names : NULL;
}

void **mp_ropstage_online_session(struct mp_session *ses)
{
    void **slot = ses ? mp_session_stage_slot(ses, &mp_rop_stage) : NULL;
    if (!slot || (!*slot && !(*slot = calloc(1, sizeof(struct mp_ropsess)))))
        return NULL;
    return &((struct mp_ropsess *)*slot)->online;
}

size_t mp_ropstage_opened(struct mp_call *m, struct mp_ropstage_open *out, size_t max)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rs.ok || !rc->rs.nbuf || !rc->rs.buf_ok[0] || rc->all_local)
        return 0;
    const struct mp_rop_buf *b = &rc->rs.bufs[0];
    size_t n = 0;
    for (size_t k = 0; k < b->n && n < max; k++) {
        const struct mp_rop *r = &b->rops[k];
        if (r->rop_id != 0x03 || r->opaque || !r->v || mp_rop_return_value(r) || r->req_index < 0 ||
            (size_t)r->req_index >= rc->up.n)
            continue;
        const struct mp_rop *q = &rc->up.rops[r->req_index];
        if (q->rop_id != 0x03 || q->opaque || !q->v)
            continue;
        const struct mp_rop_req_OpenMessage *om = q->v;
        if (om->InputHandleIndex >= rc->up.nhandles || om->OutputHandleIndex >= b->nhandles)
            continue;
        out[n] = (struct mp_ropstage_open){
            .logon_id = om->LogonId,
            .fid = om->FolderId,
            .mid = om->MessageId,
            .in_handle = rc->up.handles[om->InputHandleIndex],
            .handle = b->handles[om->OutputHandleIndex],
            .context_id = mp_objtab_context_id(rc->tab),
        };
        n++;
    }
    return n;
}

uint32_t mp_ropstage_rsp_handle(struct mp_call *m, uint8_t idx)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc || !rc->rs.ok || !rc->rs.nbuf || !rc->rs.buf_ok[0] || rc->all_local ||
        idx >= rc->rs.bufs[0].nhandles)
        return 0xFFFFFFFFu;
    return rc->rs.bufs[0].handles[idx];
}

int mp_ropstage_side_request(struct mp_call *m, const struct mp_rop_buf *b,
                             void (*cb)(struct mp_call *m))
{
    struct mp_ropcall *rc = RC(m);
    struct emsmdb_EcDoRpcExt2_in *in = m->opnum == OP_RPCEXT2 ? mp_call_request(m) : NULL;
    if (!rc || !in)
        return -1;
    struct mp_buf content = {0}, chain = {0};
    int st = -1;
    if (mp_rop_encode(&content, b))
        goto out;
    const uint8_t *seg = content.data;
    size_t sl = content.len;
    if (mp_rpcext_build_chain(&chain, &seg, &sl, 1, 0))
        goto out;
    uint8_t *copy = mp_arena_memdup(rc->a, chain.data, chain.len);
    if (!copy)
        goto out;
    in->rgbIn = copy;
    in->cbIn = (uint32_t)chain.len;
    mp_call_request_changed(m);
    m->side_cb = cb;
    st = 0;
out:
    mp_buf_free(&content);
    mp_buf_free(&chain);
    return st;
}

int mp_ropstage_side_response(struct mp_call *m, const struct mp_rop_ctx *ctx,
                              struct mp_rop_buf *out)
{
    struct mp_ropcall *rc = RC(m);
    const struct emsmdb_EcDoRpcExt2_out *o = mp_call_response(m);
    if (!rc || !o || !o->rgbOut || !o->pcbOut) {
        mp_warn("call %s %s: the side request got no ROP response", m->peer, m->op_name);
        return -1;
    }
    struct mp_rpcext x;
    int st = mp_rpcext_parse(&x, o->rgbOut, o->pcbOut);
    if (st) {
        mp_warn("call %s %s: the side request's response chain does not decode (%s)", m->peer,
                m->op_name, mp_rpcext_strerror(st));
        return -1;
    }
    size_t n = 0;
    const uint8_t *p = x.n ? mp_rpcext_content(&x, 0, &n) : NULL;
    uint8_t *copy = p ? mp_arena_memdup(rc->a, p, n ? n : 1) : NULL;
    mp_rpcext_free(&x);
    if (!copy || mp_rop_decode(out, copy, n, true, ctx, rc->a) != MP_ROP_OK) {
        mp_warn("call %s %s: the side request's ROP response does not decode (%s)", m->peer,
                m->op_name, out->why ? out->why : "no memory");
        return -1;
    }
    return 0;
}

void mp_ropstage_side_view(struct mp_call *m, const struct mp_rop_buf *req,
                           const struct mp_rop_buf *rsp, void (*fn)(struct mp_call *m, void *arg),
                           void *arg)
{
    struct mp_ropcall *rc = RC(m);
    if (!rc)
        return;
    struct mp_arena *a = rc->a;
    struct side q = {.ok = true, .nbuf = 1}, r = {.ok = true, .nbuf = 1};
    q.it = mp_arena_calloc(a, req->n + 1, sizeof(*q.it));
    r.it = mp_arena_calloc(a, rsp->n + 1, sizeof(*r.it));
    if (!q.it || !r.it)
        return;
    const struct mp_object *slot[256] = {0};
    for (size_t i = 0; i < req->n; i++) {
        const struct mp_rop *x = &req->rops[i];
        q.it[i].r = (struct mp_rop *)x;
        q.it[i].req = -1;
        if (x->opaque || !x->v)
            continue;
        const struct mp_object *in = NULL;
        if (x->desc->in_hidx >= 0) {
            uint8_t h = req_byte(x, x->desc->in_hidx);
            in = slot[h];
            if (!in)
                in = slot[h] = unknown_object(a, h < req->nhandles ? req->handles[h] : MP_OBJ_NONE,
                                              req_byte(x, 1));
            q.it[i].obj = in;
        }
        int oh = mp_rop_out_slot(x);
        if (oh >= 0)
            slot[oh] = provisional(a, x, in);
    }
    q.n = req->n;
    for (size_t k = 0; k < rsp->n; k++) {
        struct mp_rop *x = &rsp->rops[k];
        r.it[k].r = x;
        r.it[k].req = x->req_index >= 0 && (size_t)x->req_index < req->n ? x->req_index : -1;
        if (r.it[k].req < 0 || x->opaque || !x->v || mp_rop_return_value(x))
            continue;
        const struct mp_rop *rq = &req->rops[r.it[k].req];
        int oh = mp_rop_out_slot(rq);
        if (oh < 0 || (size_t)oh >= rsp->nhandles)
            continue;
        struct mp_object *o = provisional(a, rq, q.it[r.it[k].req].obj);
        if (o)
            o->handle = rsp->handles[oh];
        r.it[k].newobj = o;
    }
    r.n = rsp->n;
    struct side sq = rc->rq, sr = rc->rs;
    rc->rq = q;
    rc->rs = r;
    fn(m, arg);
    rc->rq = sq;
    rc->rs = sr;
}

/* ---- the module API ---- */

static struct side *api_side(struct mp_call *m, bool response)
{
    if (!RC(m))
        return NULL;
    struct side *s = response ? &RC(m)->rs : &RC(m)->rq;
    return s->ok ? s : NULL;
}

static struct item *api_item(struct mp_call *m, bool response, size_t i)
{
    struct side *s = api_side(m, response);
    return s && i < s->n ? &s->it[i] : NULL;
}

size_t mp_call_rop_count(struct mp_call *m, bool response)
{
    struct side *s = api_side(m, response);
    return s ? s->n : 0;
}

uint8_t mp_call_rop_id(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    return it ? it->r->rop_id : 0;
}

const char *mp_call_rop_name(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    return it && it->r->desc ? it->r->desc->name : NULL;
}

void *mp_call_rop(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    return it && !it->r->opaque ? it->r->v : NULL;
}

int mp_call_rop_request_index(struct mp_call *m, size_t i)
{
    struct item *it = api_item(m, true, i);
    return it ? it->req : -1;
}

static void json_object(struct mp_json *j, const struct mp_object *o)
{
    mp_rj_obj(j);
    mp_rj_key(j, "type");
    mp_rj_cstr(j, mp_object_type_name(o->type));
    mp_rj_key(j, "handle");
    mp_rj_hex(j, o->handle, 8);
    if (o->type == MP_OBJ_LOGON && o->private_mailbox >= 0) {
        mp_rj_key(j, "private");
        mp_rj_bool(j, o->private_mailbox != 0);
    }
    if (o->folder_id) {
        mp_rj_key(j, "folder_id");
        mp_rj_hex(j, o->folder_id, 16);
    }
    if (o->message_id) {
        mp_rj_key(j, "message_id");
        mp_rj_hex(j, o->message_id, 16);
    }
    if (o->type == MP_OBJ_ATTACHMENT || o->attachment_id) {
        mp_rj_key(j, "attachment_id");
        mp_rj_u64(j, o->attachment_id);
    }
    if (o->type == MP_OBJ_STREAM) {
        mp_rj_key(j, "property_tag");
        mp_rj_hex(j, o->property_tag, 8);
    }
    if (o->type == MP_OBJ_TABLE) {
        mp_rj_key(j, "table");
        mp_rj_cstr(j, mp_rop_name(o->table_rop));
        mp_rj_key(j, "columns");
        mp_rj_u64(j, o->ncolumns);
    }
    mp_rj_obj_end(j);
}

static void json_extra(struct mp_json *j, void *arg)
{
    const struct item *it = arg;
    if (it->obj) {
        mp_rj_key(j, "Object");
        json_object(j, it->obj);
    }
    if (it->newobj) {
        mp_rj_key(j, "NewObject");
        json_object(j, it->newobj);
    }
    if (it->local) {
        mp_rj_key(j, "AnsweredByProxy");
        mp_rj_hex(j, it->error, 8);
    }
    if (it->dropped) {
        mp_rj_key(j, "Dropped");
        mp_rj_bool(j, true);
    }
}

const char *mp_call_rop_json(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    if (!it)
        return NULL;
    struct item view = *it;
    if (response && it->req >= 0)
        view.obj = RC(m)->rq.it[it->req].obj;
    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    mp_rop_print_one(&j, it->r, response, json_extra, &view);
    char *out = NULL;
    if (!j.err && mp_buf_append(&b, "", 1) == 0)
        out = mp_arena_memdup(mp_call_arena(m), b.data, b.len);
    mp_buf_free(&b);
    return out;
}

void mp_call_rop_changed(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    if (it && !it->r->opaque && it->r->v)
        it->changed = true;
}

int mp_call_rop_answer(struct mp_call *m, size_t i, uint32_t error)
{
    struct item *it = api_item(m, false, i);
    if (!it || m->stage != MPC_STAGE_REQ || it->buf != 0 || RC(m)->rq.nbuf != 1 || !error ||
        it->r->opaque)
        return -1;
    it->local = true;
    it->dropped = false;
    it->error = error;
    it->answer = NULL;
    return 0;
}

int mp_ropstage_answer(struct mp_call *m, size_t i, void *rsp)
{
    struct item *it = api_item(m, false, i);
    if (!rsp || mp_call_rop_answer(m, i, 0x80004005))
        return -1;
    it->answer = rsp;
    it->error = 0;
    return 0;
}

int mp_call_rop_drop(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    if (!it || m->stage != (response ? MPC_STAGE_RSP : MPC_STAGE_REQ))
        return -1;
    if (!response && (it->buf != 0 || RC(m)->rq.nbuf != 1))
        return -1;
    it->dropped = true;
    it->local = false;
    return 0;
}

/* The call's copies of objects made before the table was asked carry no
 * context yet: the call's context (call memory, so writable). */
static const struct mp_object *with_context(struct mp_call *m, const struct mp_object *o)
{
    if (o && !o->context_id)
        ((struct mp_object *)o)->context_id = mp_objtab_context_id(RC(m)->tab);
    return o;
}

const struct mp_object *mp_call_rop_object(struct mp_call *m, bool response, size_t i)
{
    struct item *it = api_item(m, response, i);
    if (!it)
        return NULL;
    if (!response)
        return with_context(m, it->obj);
    return it->req >= 0 ? with_context(m, RC(m)->rq.it[it->req].obj) : NULL;
}

const struct mp_object *mp_call_rop_new_object(struct mp_call *m, size_t i)
{
    struct item *it = api_item(m, true, i);
    return it ? with_context(m, it->newobj) : NULL;
}

/* ---- the provider ---- */

/* msgevents.c's: the module's ROP hook when there are ROPs, then, with
 * the message hook, the message events of that side */
static mp_hook_fn rop_hook(const struct mp_module *mod, bool response)
{
    return mp_msgev_rop_hook(mod, response);
}

/* ROP hooks, object events (the stage keeps the object tables), or
 * messages (the stage feeds the assembler). */
static bool rop_uses(const struct mp_module *mod)
{
    return mod->rop_request || mod->rop_response || mp_objevents_wanted(mod) || mod->message;
}

/* The ROPs the hooks see, plus the message events of that side. */
static size_t rop_count(struct mp_call *m, bool response)
{
    return mp_call_rop_count(m, response) + mp_msgev_count(m, response);
}

static const uint16_t rop_ops[] = {OP_DISCONNECT, OP_RPC, OP_RPCEXT2};

const struct mp_stage_provider mp_rop_stage = {
    .name = "ROP",
    .hook_name = {"rop_request", "rop_response"},
    .iface = "exchange_emsmdb",
    .ops = rop_ops,
    .n_ops = sizeof(rop_ops) / sizeof(rop_ops[0]),
    .hook = rop_hook,
    .uses = rop_uses,
    .count = rop_count,
    .request = request,
    .request_done = request_done,
    .before_relay = before_relay,
    .reset_response = reset_response,
    .response = response,
    .response_done = response_done,
    .call_free = call_free,
    .session_free = ropsess_free,
};
