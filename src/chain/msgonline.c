/* Online downloads read by the proxy before the client (msgonline.h):
 * side requests at RopOpenMessage, the message event, and the client's
 * reads of a blocked or modified message answered from the verdict.
 * doc/internals/module-api.md ("Online downloads: read first").
 *
 * Side requests (MS-OXCROPS): RopOpenMessage 2.2.6.1, RopGetPropertiesAll
 * 2.2.8.4, RopGetPropertiesSpecific 2.2.8.3, RopGetAttachmentTable
 * 2.2.6.17, RopSetColumns 2.2.5.1, RopQueryRows 2.2.5.4, RopOpenAttachment
 * 2.2.6.12, RopOpenStream 2.2.9.1, RopReadStream 2.2.9.2, RopRelease
 * 2.2.15.3; values too long for a property list come back as PT_ERROR
 * ecNotEnoughMemory (MS-OXCPRPT 3.2.5.2) and are read as streams. */
#include "chain/msgonline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/ntlm_crypto.h"
#include "chain/chain.h"
#include "chain/msgevents.h"
#include "chain/ropstage.h"
#include "chain/services.h"
#include "chain/sidereq.h"
#include "core/arena.h"
#include "core/log.h"
#include "mapiproxy/message.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"
#include "rop/rop.h"

#define EC_NOT_FOUND 0x8004010Fu
#define EC_ACCESS_DENIED 0x80070005u
#define EC_NOT_ENOUGH_MEMORY 0x8007000Eu
#define MAX_OPEN 8   /* RopOpenMessage per client buffer read ahead */
#define MAX_BIG 32   /* long values per object read as streams */
#define MAX_ATTS 256 /* attachments of one message */
#define MAX_DEPTH 8  /* embedded levels read ahead at most (mapiproxy:online prefetch depth) */
#define NSLOTS (2 * MAX_DEPTH + 3)
/* RopReadStream ByteCount, one per round: the response must fit one
 * RPC_HEADER_EXT payload (its Size and RopSize are 16 bits) */
#define READ_CHUNK 0x7F00
#define READS_PER_ROUND 1
#define MAX_TOBJ 1024 /* client objects answered from verdicts, per session */
#define MAX_CACHE 1024
/* A binary value set by a verdict goes in a property list up to this size
 * (or the request's PropertySizeLimit); longer, the client is answered
 * ecNotEnoughMemory and reads it as a stream (MS-OXCPRPT 3.2.5.2), so the
 * changed response still fits the client's buffer */
#define MAX_INLINE_BIN 0x1000
#define NONE 0xFFFFFFFFu /* no handle */

#define TAG_CHANGE_KEY 0x65E20102u
#define TAG_ATTACH_NUMBER 0x0E210003u
#define TAG_ATTACH_METHOD 0x37050003u
#define PT_UNSPEC 0x0000
#define PT_LONG 0x0003
#define PT_BOOL 0x000B
#define PT_ERR 0x000A
#define PT_STR8 0x001E
#define PT_UNI 0x001F
#define PT_BIN 0x0102

/* ---- verdicts, shared by the client objects that show them ---- */
struct ov {
    unsigned refs;
    bool blocked;
    char *subject, *body; /* blocked: the notice */
    char *prefix;
    struct {
        uint16_t id;
        bool binary; /* mp_message_set_binary: len bytes */
        char *value;
        size_t len;
    } * sets;
    size_t nsets;
    struct {
        uint32_t num;
        char *notice; /* NULL: dropped */
    } * atts;
    size_t natts;
};

static void ov_unref(struct ov *v)
{
    if (!v || --v->refs)
        return;
    free(v->subject);
    free(v->body);
    free(v->prefix);
    for (size_t i = 0; i < v->nsets; i++)
        free(v->sets[i].value);
    free(v->sets);
    for (size_t i = 0; i < v->natts; i++)
        free(v->atts[i].notice);
    free(v->atts);
    free(v);
}

static bool ov_effect(const struct ov *v)
{
    return v && (v->blocked || v->prefix || v->nsets || v->natts);
}

enum tkind { T_MSG, T_TABLE, T_ATT, T_STREAM };
struct tobj {
    uint32_t ctx, handle;
    enum tkind kind;
    struct ov *v;
    uint32_t att_num;
    uint8_t *data; /* streams: what the client reads */
    size_t len, pos;
};

struct cache {
    uint64_t fid, mid;
    uint8_t ck[64];
    size_t ckl;
    struct ov *v; /* NULL: allowed */
};

struct osess {
    struct tobj *o;
    size_t n;
    struct cache *c;
    size_t nc;
    bool warned_rpc;
};

/* ---- one message read ahead ---- */
enum phase { P_CHECK, P_OPEN, P_STREAM, P_ATT, P_EMB, P_CLOSE, P_DONE };

struct pf {
    struct mp_ropstage_open op;
    struct ocall *oc;
    struct ov *v; /* the verdict (a reference), when decided */
    bool decided;
    int cached; /* index in the session cache, -1 */
};

struct ocall {
    struct pf q[MAX_OPEN];
    size_t nq, cur;
    bool started, finished;
    const void *mods; /* the worker cache's keys: the generation, the user */
    char user[128];
    struct mp_sidereq h; /* the client's response, held */
    /* the read of q[cur] */
    enum phase ph;
    bool cut;
    struct mp_rop_buf req; /* the side request in flight */
    uint32_t msg_h, str_h;
    uint32_t big[MAX_BIG]; /* long values still to read (tags) */
    size_t nbig;
    uint32_t str_size, str_got;
    bool str_open;
    uint32_t rel[NSLOTS]; /* handles to release first in the next round, by slot (NONE) */
    size_t base;          /* the round's first ROP after those releases */
    /* Level 0 is the message (slot 0, its attachment slot 1); level k > 0
     * the embedded message of level k-1's attachment (slot 2k+1, its
     * attachment 2k+2); slot 2 is the stream.  depth: the level read now. */
    struct lvl {
        uint32_t msg_h; /* level 0: msg_h above */
        uint32_t atts[MAX_ATTS];
        uint8_t methods[MAX_ATTS]; /* PidTagAttachMethod (5: an embedded message) */
        size_t natts, next_att;
        uint32_t att_h; /* the attachment being read */
        bool in_att, emb_done;
    } lv[MAX_DEPTH + 1];
    unsigned depth, maxd; /* maxd: mapiproxy:online prefetch depth */
    uint64_t bytes;
    uint32_t cols[2];
    uint8_t ck[64];
    size_t ckl;
};

static struct osess *sess(struct mp_call *m, bool create)
{
    void **slot = mp_ropstage_online_session(mp_call_session(m));
    if (!slot)
        return NULL;
    if (!*slot && create)
        *slot = calloc(1, sizeof(struct osess));
    return *slot;
}

static struct ocall *ocall_of(struct mp_call *m, bool create)
{
    void **slot = mp_ropstage_online_call(m);
    if (!slot)
        return NULL;
    if (!*slot && create)
        *slot = calloc(1, sizeof(struct ocall));
    return *slot;
}

void mp_msgonline_call_free(void *state)
{
    struct ocall *c = state;
    if (!c)
        return;
    for (size_t i = 0; i < c->nq; i++)
        ov_unref(c->q[i].v);
    mp_sidereq_free(&c->h);
    free(c);
}

void mp_msgonline_session_free(void *state)
{
    struct osess *s = state;
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        ov_unref(s->o[i].v);
        free(s->o[i].data);
    }
    for (size_t i = 0; i < s->nc; i++)
        ov_unref(s->c[i].v);
    free(s->o);
    free(s->c);
    free(s);
}

/* ---- the side buffers ---- */

static struct mp_arena *arena(struct mp_call *m)
{
    return mp_call_arena(m);
}

static int sb_init(struct mp_call *m, struct ocall *c, size_t nh)
{
    c->req = (struct mp_rop_buf){0};
    c->req.rops = mp_arena_calloc(arena(m), 16, sizeof(struct mp_rop));
    c->req.handles = mp_arena_calloc(arena(m), nh, sizeof(uint32_t));
    if (!c->req.rops || !c->req.handles)
        return -1;
    for (size_t i = 0; i < nh; i++)
        c->req.handles[i] = 0xFFFFFFFFu;
    c->req.nhandles = nh;
    return 0;
}

static void *sb_add(struct mp_call *m, struct ocall *c, uint8_t rop_id, size_t size)
{
    if (c->req.n >= 16 || !mp_rop_descs[rop_id])
        return NULL;
    void *v = mp_arena_calloc(arena(m), 1, size);
    if (!v)
        return NULL;
    *(uint8_t *)v = rop_id;
    ((uint8_t *)v)[1] = c->q[c->cur].op.logon_id;
    c->req.rops[c->req.n++] =
        (struct mp_rop){.rop_id = rop_id, .desc = mp_rop_descs[rop_id], .v = v, .req_index = -1};
    return v;
}

#define ADD(T, id) ((struct mp_rop_req_##T *)sb_add(m, c, id, sizeof(struct mp_rop_req_##T)))

static int add_release(struct mp_call *m, struct ocall *c, uint8_t slot)
{
    struct mp_rop_req_Release *r = ADD(Release, MP_ROP_Release);
    if (!r)
        return -1;
    r->InputHandleIndex = slot;
    return 0;
}

static int add_props_all(struct mp_call *m, struct ocall *c, uint8_t slot)
{
    struct mp_rop_req_GetPropertiesAll *g = ADD(GetPropertiesAll, MP_ROP_GetPropertiesAll);
    if (!g)
        return -1;
    g->InputHandleIndex = slot;
    g->PropertySizeLimit = 0;
    g->WantUnicode = 1;
    return 0;
}

/* The attachment table of the message in `slot` (through slot 2, released
 * in the same round): PidTagAttachNumber and PidTagAttachMethod of every row. */
static int add_att_table(struct mp_call *m, struct ocall *c, uint8_t slot)
{
    struct mp_rop_req_GetAttachmentTable *at = ADD(GetAttachmentTable, MP_ROP_GetAttachmentTable);
    struct mp_rop_req_SetColumns *sc = ADD(SetColumns, MP_ROP_SetColumns);
    struct mp_rop_req_QueryRows *qr = ADD(QueryRows, MP_ROP_QueryRows);
    if (!at || !sc || !qr)
        return -1;
    at->InputHandleIndex = slot;
    at->OutputHandleIndex = 2;
    c->cols[0] = TAG_ATTACH_NUMBER;
    c->cols[1] = TAG_ATTACH_METHOD;
    sc->InputHandleIndex = 2;
    sc->PropertyTagCount = 2;
    sc->PropertyTags = c->cols;
    qr->InputHandleIndex = 2;
    qr->QueryRowsFlags = 0;
    qr->ForwardRead = 1;
    qr->RowCount = MAX_ATTS;
    return add_release(m, c, 2);
}

/* Ids whose long values are strings (read as PT_UNICODE streams). */
static bool string_id(uint16_t id)
{
    static const uint16_t ids[] = {0x0037, 0x1000, 0x007D, 0x0E1D, 0x0070, 0x0042, 0x0C1A,
                                   0x0E02, 0x0E03, 0x0E04, 0x3704, 0x3707, 0x370E, 0x1035};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if (ids[i] == id)
            return true;
    return false;
}

/* The slots of level k's message and of its attachment. */
static uint8_t msg_slot(unsigned k)
{
    return k ? (uint8_t)(2 * k + 1) : 0;
}

static uint8_t att_slot(unsigned k)
{
    return k ? (uint8_t)(2 * k + 2) : 1;
}

/* mapiproxy:online prefetch depth: embedded levels opened (1-8). */
static unsigned max_depth(const struct mp_call *m)
{
    unsigned d = m->mods->online_prefetch_depth;
    return d == 0 ? 4 : d > MAX_DEPTH ? MAX_DEPTH : d;
}

/* Every level's handles NONE, nothing to release, at the message. */
static void levels_reset(struct ocall *c)
{
    for (unsigned k = 0; k <= MAX_DEPTH; k++) {
        c->lv[k].msg_h = c->lv[k].att_h = NONE;
        c->lv[k].natts = c->lv[k].next_att = 0;
        c->lv[k].in_att = c->lv[k].emb_done = false;
    }
    for (size_t i = 0; i < NSLOTS; i++)
        c->rel[i] = NONE;
    c->depth = 0;
}

/* Slots: 0 the message (the folder in the first round), 1 the message
 * opened / its attachment, 2 table or stream, then per embedded level k
 * its message (2k+1) and attachment (2k+2), up to mapiproxy:online
 * prefetch depth levels (an embedded message deeper is not opened). */
static int build_round(struct mp_call *m, struct ocall *c)
{
    struct pf *p = &c->q[c->cur];
    if (sb_init(m, c, NSLOTS))
        return -1;
    /* what the last round finished with: a stream read to its end (slot
     * 2) first, then the objects done with, the deepest first */
    for (size_t k = 0; k < NSLOTS; k++) {
        size_t s = k == 0 ? 2 : NSLOTS - k; /* 2, then NSLOTS-1 .. 1 */
        if (s == 2 && k)
            continue;
        if (c->rel[s] == NONE)
            continue;
        c->req.handles[s] = c->rel[s];
        if (add_release(m, c, (uint8_t)s))
            return -1;
        c->rel[s] = NONE;
    }
    c->base = c->req.n;
    switch (c->ph) {
    case P_CHECK:
    case P_OPEN: {
        c->req.handles[0] = p->op.in_handle;
        struct mp_rop_req_OpenMessage *om = ADD(OpenMessage, MP_ROP_OpenMessage);
        if (!om)
            return -1;
        om->InputHandleIndex = 0;
        om->OutputHandleIndex = 1;
        om->CodePageId = 0x0FFF;
        om->FolderId = p->op.fid;
        om->MessageId = p->op.mid;
        om->OpenModeFlags = 0; /* read-only */
        if (c->ph == P_CHECK) {
            struct mp_rop_req_GetPropertiesSpecific *g =
                ADD(GetPropertiesSpecific, MP_ROP_GetPropertiesSpecific);
            uint32_t *tags = mp_arena_alloc(arena(m), sizeof(uint32_t));
            if (!g || !tags)
                return -1;
            tags[0] = TAG_CHANGE_KEY;
            g->InputHandleIndex = 1;
            g->WantUnicode = 1;
            g->PropertyTagCount = 1;
            g->PropertyTags = tags;
            return add_release(m, c, 1);
        }
        return add_props_all(m, c, 1) || add_att_table(m, c, 1);
    }
    case P_STREAM: {
        const struct lvl *L = &c->lv[c->depth];
        c->req.handles[0] = c->msg_h;
        for (unsigned k = 0; k <= c->depth; k++) {
            if (k)
                c->req.handles[msg_slot(k)] = c->lv[k].msg_h;
            if (c->lv[k].in_att)
                c->req.handles[att_slot(k)] = c->lv[k].att_h;
        }
        if (c->str_open)
            c->req.handles[2] = c->str_h;
        else {
            struct mp_rop_req_OpenStream *os = ADD(OpenStream, MP_ROP_OpenStream);
            if (!os)
                return -1;
            os->InputHandleIndex = L->in_att ? att_slot(c->depth) : msg_slot(c->depth);
            os->OutputHandleIndex = 2;
            os->PropertyTag = c->big[c->nbig - 1];
            os->OpenModeFlags = 0;
        }
        for (int k = 0; k < READS_PER_ROUND; k++) {
            struct mp_rop_req_ReadStream *rd = ADD(ReadStream, MP_ROP_ReadStream);
            if (!rd)
                return -1;
            rd->InputHandleIndex = 2;
            rd->ByteCount = READ_CHUNK;
        }
        return 0;
    }
    case P_ATT: { /* of the message of level d (slot 2d+1 -> 2d+2; level 0: 0 -> 1) */
        unsigned d = c->depth;
        c->req.handles[0] = c->msg_h;
        /* the open levels above (the slots of this round's releases are
         * not open ones: they were released just before) */
        for (unsigned k = 1; k <= d; k++) {
            c->req.handles[msg_slot(k)] = c->lv[k].msg_h;
            c->req.handles[att_slot(k - 1)] = c->lv[k - 1].att_h;
        }
        struct mp_rop_req_OpenAttachment *oa = ADD(OpenAttachment, MP_ROP_OpenAttachment);
        if (!oa)
            return -1;
        oa->InputHandleIndex = msg_slot(d);
        oa->OutputHandleIndex = att_slot(d);
        oa->AttachmentID = c->lv[d].atts[c->lv[d].next_att];
        return add_props_all(m, c, att_slot(d));
    }
    case P_EMB: { /* level d's attachment's embedded message: level d+1 */
        unsigned d = c->depth;
        c->req.handles[0] = c->msg_h;
        for (unsigned k = 0; k <= d; k++) {
            if (k)
                c->req.handles[msg_slot(k)] = c->lv[k].msg_h;
            c->req.handles[att_slot(k)] = c->lv[k].att_h;
        }
        struct mp_rop_req_OpenEmbeddedMessage *oe =
            ADD(OpenEmbeddedMessage, MP_ROP_OpenEmbeddedMessage);
        if (!oe)
            return -1;
        oe->InputHandleIndex = att_slot(d);
        oe->OutputHandleIndex = msg_slot(d + 1);
        oe->CodePageId = 0x0FFF;
        oe->OpenModeFlags = 0; /* read-only */
        return add_props_all(m, c, msg_slot(d + 1)) || add_att_table(m, c, msg_slot(d + 1));
    }
    case P_CLOSE:
        c->req.handles[0] = c->msg_h;
        return add_release(m, c, 0);
    default:
        return -1;
    }
}

/* ---- reading the responses ---- */

static int cols_cb(void *opaque, uint32_t handle, const uint32_t **tags, size_t *n)
{
    struct ocall *c = opaque;
    (void)handle;
    *tags = c->cols;
    *n = 2;
    return 0;
}

/* The response to the round's ROP req_i (counted after the releases). */
#define rsp_for(r, i, id) rsp_at(r, c->base + (i), id)
static const void *rsp_at(const struct mp_rop_buf *r, size_t req_i, uint8_t id)
{
    for (size_t k = 0; k < r->n; k++)
        if (r->rops[k].req_index == (int)req_i && r->rops[k].rop_id == id && !r->rops[k].opaque)
            return r->rops[k].v;
    return NULL;
}

static void note_big(struct ocall *c, const struct mp_rop_rsp_GetPropertiesAll *g)
{
    c->nbig = 0;
    for (size_t i = 0; g && g->PropertyValues && i < g->PropertyValueCount; i++) {
        const struct mp_rop_tpropval *t = &g->PropertyValues[i];
        if ((t->tag & 0xFFFF) == PT_ERR && t->v.u == EC_NOT_ENOUGH_MEMORY && c->nbig < MAX_BIG) {
            uint16_t id = (uint16_t)(t->tag >> 16);
            c->big[c->nbig++] = (uint32_t)id << 16 | (string_id(id) ? PT_UNI : PT_BIN);
        } else if (t->v.p) {
            c->bytes += t->v.n;
        }
    }
}

/* The next step after an object's properties and long values: its
 * attachment's embedded message (up to maxd levels), the next attachment,
 * back up a level, or the end. */
static void after_object(struct ocall *c)
{
    if (c->nbig) {
        c->ph = P_STREAM;
        c->str_open = false;
        return;
    }
    for (;;) {
        struct lvl *L = &c->lv[c->depth];
        if (L->in_att) {
            if (!L->emb_done && c->depth < c->maxd && L->methods[L->next_att] == 5) {
                c->ph = P_EMB;
                return;
            }
            L->in_att = false; /* its release goes with the next round */
            L->emb_done = false;
            c->rel[att_slot(c->depth)] = L->att_h;
            L->att_h = NONE;
            L->next_att++;
        }
        if (L->next_att < L->natts) {
            c->ph = P_ATT;
            return;
        }
        if (!c->depth) {
            c->ph = P_CLOSE;
            return;
        }
        /* an embedded message done: released next round, back to the
         * attachment it came from */
        c->rel[msg_slot(c->depth)] = L->msg_h;
        L->msg_h = NONE;
        L->natts = L->next_att = 0;
        c->depth--;
        c->lv[c->depth].emb_done = true;
    }
}

/* The attachment table's rows (add_att_table's QueryRows, the round's ROP
 * 4): attachment numbers, and methods when asked; how many. */
static size_t list_atts(struct ocall *c, const struct mp_rop_buf *r, uint32_t *nums,
                        uint8_t *methods)
{
    size_t n = 0;
    const struct mp_rop_rsp_QueryRows *qr = rsp_for(r, 4, MP_ROP_QueryRows);
    for (size_t i = 0; qr && !qr->ReturnValue && qr->RowData && i < qr->RowCount; i++) {
        const struct mp_rop_proprow *row = &qr->RowData[i];
        if (!row->vals || row->ncols < 1 || (row->flag == 1 && row->vals[0].flag))
            continue;
        if (n < MAX_ATTS) {
            bool mv = row->ncols > 1 && !(row->flag == 1 && row->vals[1].flag);
            if (methods)
                methods[n] = mv ? (uint8_t)row->vals[1].v.u : 0;
            nums[n++] = (uint32_t)row->vals[0].v.u;
        }
    }
    return n;
}

/* Slot i of the response's handle table: its length is the upstream's
 * (the bytes after the ROPs), not the slots the side request has. */
static uint32_t rsp_handle(const struct mp_rop_buf *r, size_t i)
{
    return r->handles && i < r->nhandles ? r->handles[i] : NONE;
}

/* Reads one round's response into the state; -1 stops the read. */
static int take_round(struct mp_call *m, struct ocall *c, const struct mp_rop_buf *r)
{
    struct pf *p = &c->q[c->cur];
    const struct mp_rop_buf *q = &c->req;
    switch (c->ph) {
    case P_CHECK: {
        const struct mp_rop_rsp_GetPropertiesSpecific *g =
            rsp_for(r, 1, MP_ROP_GetPropertiesSpecific);
        const struct mp_rop_rsp_OpenMessage *om = rsp_for(r, 0, MP_ROP_OpenMessage);
        if (!om || om->ReturnValue || !g || g->ReturnValue)
            return -1;
        struct osess *s = sess(m, false);
        const struct mp_rop_rowval *v = g->RowData.vals;
        if (s && p->cached >= 0 && (size_t)p->cached < s->nc && v &&
            !(g->RowData.flag == 1 && v->flag) && v->v.n == s->c[p->cached].ckl &&
            !memcmp(v->v.p, s->c[p->cached].ck, v->v.n)) {
            p->decided = true; /* the same version: the verdict of before */
            p->v = s->c[p->cached].v;
            if (p->v)
                p->v->refs++;
            mp_debug("session %u: message 0x%016llx decided before (same change key); not read "
                     "again",
                     mp_call_sid(m), (unsigned long long)p->op.mid);
            c->ph = P_DONE;
            return 0;
        }
        c->ph = P_OPEN; /* changed since: read it */
        return 0;
    }
    case P_OPEN: {
        const struct mp_rop_rsp_OpenMessage *om = rsp_for(r, 0, MP_ROP_OpenMessage);
        if (!om || om->ReturnValue || r->nhandles < 3)
            return -1;
        c->msg_h = rsp_handle(r, 1); /* NONE (0xFFFFFFFF) is no handle: MS-OXCROPS 1.3.1 */
        const struct mp_rop_rsp_GetPropertiesAll *g = rsp_for(r, 1, MP_ROP_GetPropertiesAll);
        if (!g || g->ReturnValue)
            return -1;
        note_big(c, g);
        c->lv[0].next_att = 0;
        c->lv[0].natts = list_atts(c, r, c->lv[0].atts, c->lv[0].methods);
        after_object(c);
        return 0;
    }
    case P_STREAM: {
        size_t k = 0;
        if (!c->str_open) {
            const struct mp_rop_rsp_OpenStream *os = rsp_for(r, 0, MP_ROP_OpenStream);
            if (!os || os->ReturnValue) { /* not as a stream: left out */
                c->nbig--;
                after_object(c);
                return 0;
            }
            c->str_open = true;
            c->str_h = rsp_handle(r, 2);
            c->str_size = os->StreamSize;
            c->str_got = 0;
            k = 1;
        }
        for (; c->base + k < q->n; k++) {
            const struct mp_rop_rsp_ReadStream *rd = rsp_for(r, k, MP_ROP_ReadStream);
            if (!rd || rd->ReturnValue)
                return -1;
            c->str_got += rd->DataSize;
            c->bytes += rd->DataSize;
            if (!rd->DataSize)
                c->str_got = c->str_size; /* the end */
        }
        if (c->str_got >= c->str_size) {
            c->str_open = false;
            c->rel[2] = c->str_h;
            c->nbig--;
            after_object(c); /* the stream's release goes with the next round */
        }
        return 0;
    }
    case P_ATT: { /* an attachment of level depth's message */
        const struct mp_rop_rsp_OpenAttachment *oa = rsp_for(r, 0, MP_ROP_OpenAttachment);
        const struct mp_rop_rsp_GetPropertiesAll *g = rsp_for(r, 1, MP_ROP_GetPropertiesAll);
        if (!oa || oa->ReturnValue || !g || g->ReturnValue)
            return -1;
        struct lvl *L = &c->lv[c->depth];
        L->att_h = rsp_handle(r, att_slot(c->depth));
        L->in_att = true;
        note_big(c, g);
        after_object(c);
        return 0;
    }
    case P_EMB: { /* its embedded message: the next level */
        const struct mp_rop_rsp_OpenEmbeddedMessage *oe = rsp_for(r, 0, MP_ROP_OpenEmbeddedMessage);
        const struct mp_rop_rsp_GetPropertiesAll *g = rsp_for(r, 1, MP_ROP_GetPropertiesAll);
        if (!oe || oe->ReturnValue)
            return -1;
        struct lvl *N = &c->lv[++c->depth];
        N->msg_h = rsp_handle(r, msg_slot(c->depth));
        if (!g || g->ReturnValue)
            return -1;
        note_big(c, g);
        N->next_att = 0;
        N->natts = list_atts(c, r, N->atts, N->methods);
        after_object(c);
        return 0;
    }
    case P_CLOSE:
        c->ph = P_DONE;
        return 0;
    default:
        return -1;
    }
}

/* ---- the state machine ---- */

static void side_cb(struct mp_call *m);

static void feed(struct mp_call *m, void *arg)
{
    mp_msgev_prefetch_rops(m, *(bool *)arg);
}

static void on_decided(struct mp_message_event *ev, const struct mp_msgev_verdict *v, void *arg);

/* The next message's first round, or the end: the client's request and
 * response back in place (0: nothing more to send). */
static int next_round(struct mp_call *m, struct ocall *c)
{
    while (c->cur < c->nq) {
        if (c->ph != P_DONE) {
            if (build_round(m, c) || mp_ropstage_side_request(m, &c->req, side_cb)) {
                mp_warn("session %u: online prefetch: cannot build a side request; message "
                        "0x%016llx not read ahead",
                        mp_call_sid(m), (unsigned long long)c->q[c->cur].op.mid);
                c->ph = P_DONE;
                continue;
            }
            return 1;
        }
        c->cur++;
        if (c->cur < c->nq) {
            c->ph = c->q[c->cur].cached >= 0 ? P_CHECK : P_OPEN;
            c->bytes = 0;
            c->cut = false;
            c->nbig = 0;
            c->msg_h = c->str_h = NONE;
            levels_reset(c);
            c->str_open = false;
        }
    }
    /* done: the client's request and response as they were */
    c->finished = true;
    mp_sidereq_restore(m, &c->h, "online prefetch: the client's response");
    return 0;
}

/* The read of the current message stops (error or size): what the proxy
 * opened is released, nothing is delivered, the client reads as before. */
static void cut_short(struct mp_call *m, struct ocall *c, const char *why)
{
    mp_info("session %u: online prefetch of message 0x%016llx stopped (%s); the client reads it "
            "unchecked",
            mp_call_sid(m), (unsigned long long)c->q[c->cur].op.mid, why);
    c->cut = true;
    if (c->str_open)
        c->rel[2] = c->str_h;
    for (unsigned k = 0; k <= c->depth; k++) { /* every level open: released */
        struct lvl *L = &c->lv[k];
        if (L->att_h != NONE)
            c->rel[att_slot(k)] = L->att_h;
        if (k && L->msg_h != NONE)
            c->rel[msg_slot(k)] = L->msg_h;
        L->att_h = L->msg_h = NONE;
        L->in_att = L->emb_done = false;
        L->natts = L->next_att = 0;
    }
    c->depth = 0;
    c->str_open = false;
    c->ph = c->msg_h != NONE ? P_CLOSE : P_DONE;
}

static void side_cb(struct mp_call *m)
{
    struct ocall *c = ocall_of(m, false);
    if (!c)
        return;
    struct mp_rop_buf r = {0};
    struct mp_rop_ctx ctx = {.requests = &c->req, .table_columns = cols_cb, .opaque = c};
    enum phase was = c->ph;
    if (mp_ropstage_side_response(m, &ctx, &r)) {
        if (was == P_CLOSE || was == P_CHECK)
            c->ph = P_DONE;
        else
            cut_short(m, c, "a side request failed");
        next_round(m, c);
        return;
    }
    /* the assembler sees the proxy's reads (not the change-key check) */
    if (was != P_CHECK) {
        struct mp_message_event *prev = mp_msgev_last(m);
        bool cut = c->cut;
        mp_ropstage_side_view(m, &c->req, &r, feed, &cut);
        struct mp_message_event *ev = mp_msgev_last(m);
        if (ev && ev != prev && was == P_CLOSE && !c->cut)
            mp_msgev_on_decided(ev, on_decided, &c->q[c->cur]);
    }
    if (was == P_CLOSE) {
        c->ph = P_DONE;
    } else if (take_round(m, c, &r)) {
        cut_short(m, c, "the upstream refused a read");
    } else if (c->bytes > m->mods->online_prefetch_max) {
        char why[96];
        snprintf(why, sizeof(why), "past %u bytes, mapiproxy:online prefetch max size",
                 (unsigned)m->mods->online_prefetch_max);
        cut_short(m, c, why);
    }
    next_round(m, c);
}

/* ---- the start, in the response step ---- */

static int find_cache(const struct osess *s, uint64_t fid, uint64_t mid);

/* The session's entry for (fid, mid), made or replaced; -1 when full. */
static int cache_put(struct osess *s, uint64_t fid, uint64_t mid, const uint8_t *ck, size_t ckl,
                     struct ov *v)
{
    int i = find_cache(s, fid, mid);
    if (i < 0) {
        if (s->nc >= MAX_CACHE)
            return -1;
        struct cache *n = realloc(s->c, (s->nc + 1) * sizeof(*n));
        if (!n)
            return -1;
        s->c = n;
        i = (int)s->nc++;
        memset(&s->c[i], 0, sizeof(s->c[i]));
    }
    ov_unref(s->c[i].v);
    s->c[i].fid = fid;
    s->c[i].mid = mid;
    memcpy(s->c[i].ck, ck, ckl);
    s->c[i].ckl = ckl;
    s->c[i].v = v;
    if (v)
        v->refs++;
    return i;
}

/* ---- decided messages shared by the sessions of a worker ----
 * (user, folder id, message id) -> change key + verdict, PCACHE entries in
 * a ring (full: the oldest goes), PCACHE_TTL seconds; a session that has
 * no entry of its own takes this one into its cache, and the change-key
 * check (P_CHECK) decides as for its own.  Keyed by the user (a module's
 * verdict may be the user's) and emptied when another modules generation
 * (a reload) uses it. */
#define PCACHE 1024
#define PCACHE_TTL 600

struct pentry {
    char user[128];
    uint64_t fid, mid;
    uint8_t ck[64];
    size_t ckl;
    struct ov *v;
    time_t at; /* 0: free */
};
static _Thread_local struct pentry *ptab; /* per worker thread: its sessions' */
static _Thread_local size_t pnext;
static _Thread_local const void *pmods;

static time_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1; /* never 0 */
}

static void pentry_clear(struct pentry *e)
{
    ov_unref(e->v);
    memset(e, 0, sizeof(*e));
}

static bool pcache_ready(const void *mods)
{
    if (!ptab && !(ptab = calloc(PCACHE, sizeof(*ptab))))
        return false;
    if (mods != pmods) {
        for (size_t i = 0; i < PCACHE; i++)
            pentry_clear(&ptab[i]);
        pmods = mods;
    }
    return true;
}

void mp_msgonline_worker_release(void)
{
    for (size_t i = 0; ptab && i < PCACHE; i++)
        pentry_clear(&ptab[i]);
    free(ptab);
    ptab = NULL;
    pmods = NULL;
}

static struct pentry *pcache_find(const char *user, const void *mods, uint64_t fid, uint64_t mid)
{
    if (!user || !*user || strlen(user) >= sizeof(ptab->user) || !pcache_ready(mods))
        return NULL;
    time_t now = now_s();
    for (size_t i = 0; i < PCACHE; i++) {
        struct pentry *e = &ptab[i];
        if (!e->at || e->fid != fid || e->mid != mid || strcmp(e->user, user))
            continue;
        if (now - e->at > PCACHE_TTL) {
            pentry_clear(e);
            return NULL;
        }
        return e;
    }
    return NULL;
}

static void pcache_put(const char *user, const void *mods, uint64_t fid, uint64_t mid,
                       const uint8_t *ck, size_t ckl, struct ov *v)
{
    if (ckl > sizeof(ptab->ck))
        return;
    struct pentry *e = pcache_find(user, mods, fid, mid);
    if (!e) {
        if (!user || !*user || strlen(user) >= sizeof(ptab->user) || !ptab)
            return;
        e = &ptab[pnext++ % PCACHE];
    }
    pentry_clear(e);
    snprintf(e->user, sizeof(e->user), "%s", user);
    e->fid = fid;
    e->mid = mid;
    memcpy(e->ck, ck, ckl);
    e->ckl = ckl;
    e->v = v;
    if (v)
        v->refs++;
    e->at = now_s();
}

static int find_cache(const struct osess *s, uint64_t fid, uint64_t mid)
{
    for (size_t i = 0; s && i < s->nc; i++)
        if (s->c[i].fid == fid && s->c[i].mid == mid)
            return (int)i;
    return -1;
}

int mp_msgonline_prefetch(struct mp_call *m)
{
    if (!m->mods->online_prefetch || !mp_msgev_verdicts_wanted(m->mods))
        return 0;
    struct ocall *c = ocall_of(m, false);
    if (c && c->started)
        return 0; /* the second response step, after the side requests */
    struct mp_ropstage_open op[MAX_OPEN];
    size_t n = mp_ropstage_opened(m, op, MAX_OPEN);
    if (!n)
        return 0;
    if (m->opnum != 11) {
        struct osess *s = sess(m, true);
        if (s && !s->warned_rpc) {
            s->warned_rpc = true;
            mp_warn("session %u: online prefetch needs EcDoRpcExt2 (or MAPI/HTTP); this "
                    "client's EcDoRpc opens are not read ahead",
                    mp_call_sid(m));
        }
        return 0;
    }
    if (!(c = ocall_of(m, true)))
        return 0;
    c->started = true;
    struct osess *s = sess(m, true);
    if (mp_sidereq_hold(m, &c->h)) {
        mp_warn("session %u: online prefetch: cannot hold the client's response; not read ahead",
                mp_call_sid(m));
        return 0;
    }
    c->mods = m->mods;
    const char *user = mp_ident_user(m);
    snprintf(c->user, sizeof(c->user), "%s", user && strlen(user) < sizeof(c->user) ? user : "");
    for (size_t i = 0; i < n; i++) {
        c->q[i].op = op[i];
        c->q[i].oc = c;
        c->q[i].cached = find_cache(s, op[i].fid, op[i].mid);
        struct pentry *e;
        if (c->q[i].cached < 0 && s && (e = pcache_find(c->user, c->mods, op[i].fid, op[i].mid))) {
            c->q[i].cached = cache_put(s, op[i].fid, op[i].mid, e->ck, e->ckl, e->v);
            mp_debug("session %u: message 0x%016llx decided in another session of %s",
                     mp_call_sid(m), (unsigned long long)op[i].mid, e->user);
        }
    }
    c->nq = n;
    c->cur = 0;
    c->msg_h = c->str_h = NONE;
    levels_reset(c);
    c->maxd = max_depth(m);
    c->ph = c->q[0].cached >= 0 ? P_CHECK : P_OPEN;
    mp_debug("session %u: online prefetch of %zu message(s) before RopOpenMessage's response",
             mp_call_sid(m), n);
    if (!next_round(m, c))
        return 0;
    return 1;
}

/* ---- verdicts ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static struct tobj *tobj_find(struct osess *s, uint32_t ctx, uint32_t handle)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (s->o[i].ctx == ctx && s->o[i].handle == handle)
            return &s->o[i];
    return NULL;
}

static void tobj_del(struct osess *s, struct tobj *o)
{
    ov_unref(o->v);
    free(o->data);
    *o = s->o[--s->n];
}

static struct tobj *tobj_add(struct osess *s, uint32_t ctx, uint32_t handle, enum tkind k,
                             struct ov *v)
{
    struct tobj *o = tobj_find(s, ctx, handle);
    if (o)
        tobj_del(s, o); /* the server reused the handle */
    if (s->n >= MAX_TOBJ)
        return NULL;
    struct tobj *n = realloc(s->o, (s->n + 1) * sizeof(*n));
    if (!n)
        return NULL;
    s->o = n;
    o = &n[s->n++];
    memset(o, 0, sizeof(*o));
    o->ctx = ctx;
    o->handle = handle;
    o->kind = k;
    o->v = v;
    v->refs++;
    return o;
}

static void on_decided(struct mp_message_event *ev, const struct mp_msgev_verdict *vd, void *arg)
{
    struct pf *p = arg;
    p->decided = true;
    struct ov *v = calloc(1, sizeof(*v));
    if (!v)
        return;
    v->refs = 1;
    v->blocked = vd->blocked;
    if (vd->blocked) {
        size_t n = strlen(vd->reason) + 16;
        v->subject = malloc(n);
        if (v->subject)
            snprintf(v->subject, n, "[Blocked] %s", vd->reason);
        n = strlen(vd->reason) + strlen(vd->by) + 160;
        v->body = malloc(n);
        if (v->body)
            snprintf(v->body, n,
                     "This message was blocked by the mail proxy (%s): %s.\r\nIts content, "
                     "bodies and attachments were removed.\r\n",
                     vd->by, vd->reason);
    }
    v->prefix = dup_or_null(vd->prefix);
    if (vd->nsets && (v->sets = calloc(vd->nsets, sizeof(*v->sets))))
        for (size_t i = 0; i < vd->nsets; i++) {
            const struct mp_msgev_set *vs = &vd->sets[i];
            size_t len = vs->binary ? vs->len : strlen(vs->value);
            v->sets[v->nsets].id = vs->id;
            v->sets[v->nsets].binary = vs->binary;
            v->sets[v->nsets].len = len;
            if (vs->id && (v->sets[v->nsets].value = malloc(len + 1))) {
                memcpy(v->sets[v->nsets].value, vs->value, len);
                v->sets[v->nsets++].value[len] = 0;
            }
        }
    if (vd->natts && (v->atts = calloc(vd->natts, sizeof(*v->atts))))
        for (size_t i = 0; i < vd->natts; i++) {
            v->atts[v->natts].num = vd->atts[i].num;
            v->atts[v->natts++].notice = dup_or_null(vd->atts[i].notice);
        }
    p->v = v;
    /* remembered for the session: the same version is not read again */
    struct ocall *c = p->oc;
    size_t ckl = 0;
    const uint8_t *ck = mp_message_event_change_key(ev, &ckl);
    struct mp_session *ses = mp_message_event_session(ev);
    void **slot = ses ? mp_ropstage_online_session(ses) : NULL;
    if (!slot)
        return;
    if (!*slot)
        *slot = calloc(1, sizeof(struct osess));
    struct osess *s = *slot;
    if (!s || !ck || ckl > sizeof(s->c[0].ck))
        return;
    struct ov *keep = ov_effect(v) ? v : NULL;
    cache_put(s, p->op.fid, p->op.mid, ck, ckl, keep);
    pcache_put(c->user, c->mods, p->op.fid, p->op.mid, ck, ckl, keep);
}

/* ---- values ---- */

static int put_str(struct mp_arena *a, const char *utf8, uint16_t type, struct mp_rop_pval *v)
{
    size_t l = strlen(utf8);
    if (type == PT_STR8) {
        v->type = PT_STR8;
        v->p = mp_arena_memdup(a, utf8, l + 1);
        v->n = (uint32_t)l;
        return v->p ? 0 : -1;
    }
    size_t cap = l * 2 + 2, n = 0;
    uint8_t *p = mp_arena_alloc(a, cap);
    if (!p || mp_utf8_to_utf16le(utf8, p, cap, &n))
        return -1;
    v->type = PT_UNI;
    v->p = p;
    v->n = (uint32_t)n;
    return 0;
}

/* A string value as UTF-8 in call memory ("" if not a string). */
static const char *get_str(struct mp_arena *a, const struct mp_rop_pval *v)
{
    if (!v->p)
        return "";
    if (v->type == PT_STR8) {
        char *s = mp_arena_alloc(a, v->n + 1);
        if (!s)
            return "";
        memcpy(s, v->p, v->n);
        s[v->n] = 0;
        return s;
    }
    if (v->type != PT_UNI)
        return "";
    size_t cap = (size_t)v->n * 2 + 4;
    char *s = mp_arena_alloc(a, cap);
    if (!s || mp_utf16le_to_utf8(v->p, v->n, s, cap) < 0)
        return "";
    return s;
}

static bool is_str(uint16_t t)
{
    return t == PT_STR8 || t == PT_UNI;
}

static bool keep_blocked(uint16_t id, uint16_t t)
{
    /* ids, class, flags and times stay; content does not */
    static const uint16_t bin[] = {0x0FFF, 0x0FF9, 0x300B, 0x65E0, 0x65E1, 0x65E2, 0x65E3, 0x0FF8};
    if (t == PT_BIN) {
        for (size_t i = 0; i < sizeof(bin) / sizeof(bin[0]); i++)
            if (bin[i] == id)
                return true;
        return false;
    }
    if (is_str(t))
        return id == 0x001A;
    return t != PT_ERR && !(t & 0x1000);
}

static const char *att_notice(const struct ov *v, uint32_t num, bool *dropped)
{
    for (size_t i = 0; v && i < v->natts; i++)
        if (v->atts[i].num == num) {
            *dropped = !v->atts[i].notice;
            return v->atts[i].notice;
        }
    *dropped = false;
    return NULL;
}

/* A binary value a verdict set, for a property list whose values may be
 * lim bytes long: the bytes, or ecNotEnoughMemory (the client then reads
 * the stream, answered from the verdict too).  1 changed, 0 keep (the
 * server's answer was that error already). */
static int bin_value(const char *value, size_t len, uint32_t lim, bool present,
                     const struct mp_rop_pval *in, struct mp_rop_pval *out)
{
    if (len > lim) {
        if (!present && in->u == EC_NOT_ENOUGH_MEMORY)
            return 0;
        *out = (struct mp_rop_pval){.type = PT_ERR, .u = EC_NOT_ENOUGH_MEMORY};
        return 1;
    }
    *out = (struct mp_rop_pval){.type = PT_BIN, .p = (const uint8_t *)value, .n = (uint32_t)len};
    return 1;
}

/* Decides one value of an object shown from the verdict: 0 keep, 1
 * changed (in *out), -1 left out (not found).  lim: how long a binary
 * value the list may carry. */
static int one_value(struct mp_arena *a, const struct tobj *o, uint32_t tag, uint16_t t,
                     const struct mp_rop_pval *in, bool present, uint32_t lim,
                     struct mp_rop_pval *out)
{
    const struct ov *v = o->v;
    uint16_t id = (uint16_t)(tag >> 16);
    uint16_t st = is_str(t) ? t : PT_UNI;
    if (o->kind == T_MSG && v->blocked) {
        if (id == 0x0037 || id == 0x0E1D)
            return put_str(a, v->subject ? v->subject : "[Blocked]", st, out) ? 0 : 1;
        if (id == 0x1000)
            return put_str(a, v->body ? v->body : "", st, out) ? 0 : 1;
        if (id == 0x0E1B && present) {
            *out = *in;
            out->u = 0;
            return 1;
        }
        if (id == 0x0E07 && present) {
            *out = *in;
            out->u &= ~(uint64_t)0x10; /* MSGFLAG_HASATTACH */
            return 1;
        }
        return present && keep_blocked(id, t) ? 0 : -1;
    }
    if (o->kind == T_MSG) {
        for (size_t i = 0; i < v->nsets; i++)
            if (v->sets[i].id == id && v->sets[i].binary)
                return bin_value(v->sets[i].value, v->sets[i].len, lim, present, in, out);
            else if (v->sets[i].id == id)
                return put_str(a, v->sets[i].value, st, out) ? 0 : 1;
        if (id == 0x0037 && v->prefix && present && is_str(t)) {
            const char *old = get_str(a, in);
            size_t n = strlen(v->prefix) + strlen(old) + 1;
            char *s = mp_arena_alloc(a, n);
            if (!s)
                return 0;
            snprintf(s, n, "%s%s", v->prefix, old);
            return put_str(a, s, t, out) ? 0 : 1;
        }
        return 0;
    }
    if (o->kind == T_ATT) {
        bool dropped;
        const char *notice = att_notice(v, o->att_num, &dropped);
        if (!notice)
            return 0;
        if (id == 0x3701) {
            out->type = PT_BIN;
            out->p = (const uint8_t *)notice;
            out->n = (uint32_t)strlen(notice);
            return 1;
        }
        if (id == 0x3704 || id == 0x3707) {
            const char *old = present && is_str(t) ? get_str(a, in) : "attachment";
            size_t n = strlen(old) + 5;
            char *s = mp_arena_alloc(a, n);
            if (!s)
                return 0;
            snprintf(s, n, "%s.txt", old);
            return put_str(a, s, st, out) ? 0 : 1;
        }
        if (id == 0x370E)
            return put_str(a, "text/plain", st, out) ? 0 : 1;
        if (id == 0x3703)
            return put_str(a, ".txt", st, out) ? 0 : 1;
        if ((id == 0x0E20 || id == 0x3705) && present) {
            *out = *in;
            out->u = id == 0x0E20 ? strlen(notice) : 1;
            return 1;
        }
        return present && !is_str(t) && t != PT_BIN && t != PT_ERR ? 0 : -1;
    }
    return 0;
}

static uint32_t inline_lim(uint16_t size_limit)
{
    return size_limit && size_limit < MAX_INLINE_BIN ? size_limit : MAX_INLINE_BIN;
}

/* RopGetPropertiesAll on a message or attachment shown from the verdict. */
static bool rw_all(struct mp_arena *a, const struct tobj *o, struct mp_rop_rsp_GetPropertiesAll *g,
                   uint32_t lim)
{
    size_t n = g->PropertyValueCount;
    struct mp_rop_tpropval *nv = mp_arena_calloc(a, n + 4, sizeof(*nv));
    if (!nv || g->ReturnValue)
        return false;
    size_t k = 0;
    bool have_subj = false, have_body = false, have_data = false;
    for (size_t i = 0; i < n; i++) {
        struct mp_rop_tpropval tv = g->PropertyValues[i];
        uint16_t t = tv.tag & 0xFFFF, id = (uint16_t)(tv.tag >> 16);
        bool present = t != PT_ERR;
        struct mp_rop_pval out = {0};
        int d = one_value(a, o, tv.tag, t, &tv.v, present, lim, &out);
        if (d < 0)
            continue;
        if (d > 0) {
            tv.v = out;
            tv.tag = (uint32_t)id << 16 | out.type;
        }
        have_subj |= id == 0x0037;
        have_body |= id == 0x1000;
        have_data |= id == 0x3701;
        nv[k++] = tv;
    }
    struct mp_rop_pval out = {0}, none = {0};
    if (o->kind == T_MSG && o->v->blocked) {
        if (!have_subj && one_value(a, o, 0x0037001F, PT_UNI, &none, false, lim, &out) > 0)
            nv[k++] = (struct mp_rop_tpropval){0x0037u << 16 | out.type, out};
        if (!have_body && one_value(a, o, 0x1000001F, PT_UNI, &none, false, lim, &out) > 0)
            nv[k++] = (struct mp_rop_tpropval){0x1000u << 16 | out.type, out};
    }
    for (size_t i = 0; o->kind == T_MSG && !o->v->blocked && i < o->v->nsets; i++) {
        bool have = false;
        for (size_t j = 0; j < k; j++)
            have |= (nv[j].tag >> 16) == o->v->sets[i].id;
        if (have)
            continue;
        if (o->v->sets[i].binary
                ? bin_value(o->v->sets[i].value, o->v->sets[i].len, lim, true, &none, &out) > 0
                : !put_str(a, o->v->sets[i].value, PT_UNI, &out))
            nv[k++] = (struct mp_rop_tpropval){(uint32_t)o->v->sets[i].id << 16 | out.type, out};
    }
    if (o->kind == T_ATT && !have_data &&
        one_value(a, o, 0x37010102, PT_BIN, &none, false, lim, &out) > 0)
        nv[k++] = (struct mp_rop_tpropval){0x37010102u, out};
    g->PropertyValues = nv;
    g->PropertyValueCount = (uint16_t)k;
    return true;
}

/* RopGetPropertiesSpecific: the row of the requested columns. */
static bool rw_row(struct mp_arena *a, const struct tobj *o, struct mp_rop_proprow *row,
                   uint32_t lim)
{
    if (!row->vals)
        return false;
    bool changed = false;
    for (size_t i = 0; i < row->ncols; i++) {
        struct mp_rop_rowval *rv = &row->vals[i];
        uint16_t ct = (uint16_t)row->cols[i];
        uint16_t t = ct == PT_UNSPEC ? rv->wire_type : ct;
        bool present = !(row->flag == 1 && rv->flag);
        struct mp_rop_pval out = {0};
        int d = one_value(a, o, row->cols[i], t, &rv->v, present, lim, &out);
        if (d == 0)
            continue;
        if (d > 0 && (ct == PT_UNSPEC || out.type == ct)) {
            rv->v = out;
            rv->flag = 0;
            if (ct == PT_UNSPEC)
                rv->wire_type = out.type;
        } else { /* left out, too long, or a type the column cannot carry */
            if (row->flag != 1) {
                row->flag = 1;
                for (size_t j = 0; j < row->ncols; j++)
                    row->vals[j].flag = 0;
            }
            rv->flag = 0x0A;
            rv->v = (struct mp_rop_pval){.type = t,
                                         .u = d > 0 && out.type == PT_ERR ? out.u : EC_NOT_FOUND};
        }
        changed = true;
    }
    return changed;
}

/* The notice or string a stream opened on an object shown from the
 * verdict reads, NULL when the property is the upstream's. */
static const char *stream_text(const struct tobj *o, uint32_t tag)
{
    uint16_t id = (uint16_t)(tag >> 16);
    const struct ov *v = o->v;
    if (o->kind == T_MSG && v->blocked)
        return id == 0x1000 ? v->body : id == 0x0037 ? v->subject : NULL;
    if (o->kind == T_MSG) {
        for (size_t i = 0; i < v->nsets; i++)
            if (v->sets[i].id == id)
                return v->sets[i].value;
        return NULL;
    }
    if (o->kind == T_ATT && id == 0x3701) {
        bool dropped;
        return att_notice(v, o->att_num, &dropped);
    }
    return NULL;
}

/* What a stream opened on an object shown from the verdict reads (a
 * notice, a value set), NULL when the property is the upstream's.  *bin:
 * bytes as they are (*len of them), else UTF-8 text. */
static const char *stream_value(const struct tobj *o, uint32_t tag, size_t *len, bool *bin)
{
    uint16_t id = (uint16_t)(tag >> 16);
    const struct ov *v = o->v;
    *bin = false;
    if (o->kind == T_MSG) {
        for (size_t i = 0; !v->blocked && i < v->nsets; i++)
            if (v->sets[i].id == id) {
                *bin = v->sets[i].binary;
                *len = v->sets[i].len;
                return v->sets[i].value;
            }
    }
    const char *text = stream_text(o, tag);
    *len = text ? strlen(text) : 0;
    return text;
}

static int set_stream(struct tobj *t, const char *text, size_t l, bool bin, uint32_t tag)
{
    if (!bin && (tag & 0xFFFF) == PT_UNI) {
        size_t cap = l * 2 + 2, n = 0;
        t->data = malloc(cap);
        if (!t->data || mp_utf8_to_utf16le(text, t->data, cap, &n))
            return -1;
        t->len = n;
    } else {
        t->data = malloc(l + 1);
        if (!t->data)
            return -1;
        memcpy(t->data, text, l);
        t->len = l;
    }
    return 0;
}

/* RopSeekStream on a notice stream (MS-OXCPRPT 3.2.5.18): the position is
 * the proxy's, from the beginning, the current position or the notice's
 * end; before the start or past 2^31 is StreamSeekError, an unknown origin
 * StreamInvalidParam.  Past the end is allowed (the server would extend a
 * writable stream; reads there answer no bytes). */
static bool seek_stream(struct tobj *o, const void *q, void *r)
{
    const struct mp_rop_req_SeekStream *sq = q;
    struct mp_rop_rsp_SeekStream *sr = r;
    int64_t base = sq->Origin == 0 ? 0 : sq->Origin == 1 ? (int64_t)o->pos : (int64_t)o->len;
    if (sq->Origin > 2) {
        sr->ReturnValue = 0x80030057u;
        return true;
    }
    if ((sq->Offset < 0 && base + sq->Offset < 0) ||
        (sq->Offset > 0 && sq->Offset > ((int64_t)1 << 31) - base)) {
        sr->ReturnValue = 0x80030019u;
        return true;
    }
    o->pos = (size_t)(base + sq->Offset);
    sr->ReturnValue = 0;
    sr->NewPosition = o->pos;
    return true;
}

/* ---- the client's requests ---- */

void mp_msgonline_request(struct mp_call *m)
{
    struct osess *s = sess(m, false);
    if (!s || !s->n)
        return;
    size_t n = mp_call_rop_count(m, false);
    for (size_t i = 0; i < n; i++) {
        const struct mp_object *ob = mp_call_rop_object(m, false, i);
        const void *q = mp_call_rop(m, false, i);
        if (!ob || !q || ob->handle == 0xFFFFFFFFu)
            continue;
        struct tobj *o = tobj_find(s, ob->context_id, ob->handle);
        if (!o)
            continue;
        uint8_t id = mp_call_rop_id(m, false, i);
        uint32_t err = 0;
        switch (id) {
        case MP_ROP_Release:
            tobj_del(s, o);
            continue;
        case MP_ROP_OpenAttachment: {
            const struct mp_rop_req_OpenAttachment *oa = q;
            bool dropped;
            if (o->kind == T_MSG &&
                (o->v->blocked || (!att_notice(o->v, oa->AttachmentID, &dropped) && dropped)))
                err = EC_NOT_FOUND;
            break;
        }
        case MP_ROP_OpenStream:
            if (o->kind == T_MSG && o->v->blocked &&
                !stream_text(o, ((const struct mp_rop_req_OpenStream *)q)->PropertyTag))
                err = EC_NOT_FOUND; /* HTML, RTF, ...: absent */
            break;
        case MP_ROP_OpenEmbeddedMessage:
            if (o->kind == T_ATT && stream_text(o, 0x37010102))
                err = EC_NOT_FOUND;
            break;
        case MP_ROP_ReadRecipients:
        case MP_ROP_FastTransferSourceCopyTo:
        case MP_ROP_FastTransferSourceCopyProperties:
            if (o->kind == T_MSG && o->v->blocked)
                err = EC_ACCESS_DENIED;
            break;
        default:
            break;
        }
        if (err && !mp_call_rop_answer(m, i, err))
            mp_debug("session %u: %s on a message shown from its verdict answered 0x%08x",
                     mp_call_sid(m), mp_call_rop_name(m, false, i), err);
    }
}

/* ---- the client's responses ---- */

/* OutputHandleIndex of the request ROPs whose objects are shown from a
 * verdict (all have it as their fourth byte), else -1. */
static int mp_rop_out_slot_of(const void *q)
{
    const uint8_t *b = q;
    switch (b[0]) {
    case MP_ROP_OpenMessage:
    case MP_ROP_GetAttachmentTable:
    case MP_ROP_OpenAttachment:
    case MP_ROP_OpenStream:
        return b[3];
    default:
        return -1;
    }
}

static void register_opened(struct mp_call *m, struct osess *s, struct ocall *c)
{
    size_t n = mp_call_rop_count(m, true);
    for (size_t qi = 0; qi < c->nq; qi++) {
        struct pf *p = &c->q[qi];
        if (!p->decided || !ov_effect(p->v))
            continue;
        if (!tobj_add(s, p->op.context_id, p->op.handle, T_MSG, p->v))
            continue;
        if (!p->v->blocked)
            continue;
        /* the OpenMessage response: no recipients, the notice's subject */
        for (size_t i = 0; i < n; i++) {
            struct mp_rop_rsp_OpenMessage *om = mp_call_rop(m, true, i);
            const struct mp_object *no = mp_call_rop_new_object(m, i);
            if (!om || mp_call_rop_id(m, true, i) != MP_ROP_OpenMessage || !no ||
                no->handle != p->op.handle)
                continue;
            om->Message.RecipientCount = 0;
            om->Message.RowCount = 0;
            om->Message.RecipientRows = NULL;
            struct mp_rop_pval sv = {0};
            if (p->v->subject && !put_str(arena(m), p->v->subject, PT_UNI, &sv)) {
                om->Message.SubjectPrefix = (struct mp_rop_TypedString){.StringType = 1};
                om->Message.NormalizedSubject = (struct mp_rop_TypedString){
                    .StringType = 4, .String = {.p = sv.p, .n = sv.n, .wide = true}};
            }
            mp_call_rop_changed(m, true, i);
        }
    }
}

void mp_msgonline_response_done(struct mp_call *m)
{
    struct ocall *c = ocall_of(m, false);
    struct osess *s = sess(m, c && c->nq);
    if (!s)
        return;
    if (c && c->finished)
        register_opened(m, s, c);
    if (!s->n)
        return;
    struct mp_arena *a = arena(m);
    size_t n = mp_call_rop_count(m, true);
    /* objects this buffer created, by handle slot: a ROP on one of them
     * sees a provisional object (handle 0xFFFFFFFF) */
    uint32_t made[256];
    memset(made, 0xFF, sizeof(made));
    uint32_t ctx = 0;
    for (size_t i = 0; i < n; i++) {
        const struct mp_object *ob = mp_call_rop_object(m, true, i);
        void *r = mp_call_rop(m, true, i);
        int ri = mp_call_rop_request_index(m, i);
        const void *q = ri >= 0 ? mp_call_rop(m, false, (size_t)ri) : NULL;
        const struct mp_object *no = mp_call_rop_new_object(m, i);
        if (no && no->handle != 0xFFFFFFFFu && q && mp_rop_out_slot_of(q) >= 0) {
            made[mp_rop_out_slot_of(q)] = no->handle;
            ctx = no->context_id;
        }
        if (!ob || !r || !q)
            continue;
        uint32_t h = ob->handle;
        uint32_t cx = ob->context_id;
        if (h == 0xFFFFFFFFu) {
            h = made[((const uint8_t *)q)[2]];
            cx = cx ? cx : ctx;
        }
        struct tobj *o = h != 0xFFFFFFFFu ? tobj_find(s, cx, h) : NULL;
        if (!o)
            continue;
        bool ch = false;
        switch (mp_call_rop_id(m, true, i)) {
        case MP_ROP_GetPropertiesAll:
            ch = (o->kind == T_MSG || o->kind == T_ATT) &&
                 rw_all(a, o, r,
                        inline_lim(
                            ((const struct mp_rop_req_GetPropertiesAll *)q)->PropertySizeLimit));
            break;
        case MP_ROP_GetPropertiesSpecific: {
            struct mp_rop_rsp_GetPropertiesSpecific *g = r;
            ch = !g->ReturnValue && (o->kind == T_MSG || o->kind == T_ATT) &&
                 rw_row(
                     a, o, &g->RowData,
                     inline_lim(
                         ((const struct mp_rop_req_GetPropertiesSpecific *)q)->PropertySizeLimit));
            break;
        }
        case MP_ROP_GetAttachmentTable:
            if (o->kind == T_MSG && no && o->v->blocked | (o->v->natts > 0))
                tobj_add(s, no->context_id, no->handle, T_TABLE, o->v);
            break;
        case MP_ROP_OpenAttachment: {
            const struct mp_rop_req_OpenAttachment *oa = q;
            struct mp_rop_rsp_OpenAttachment *ra = r;
            struct tobj *t;
            bool dropped = false;
            const char *nt = o->kind == T_MSG ? att_notice(o->v, oa->AttachmentID, &dropped) : NULL;
            if (o->kind == T_MSG && !ra->ReturnValue && (o->v->blocked || (!nt && dropped))) {
                /* opened in the buffer that opened the message (the request
                 * side could not know): refused here; the server's object
                 * goes with the message's release */
                ra->ReturnValue = EC_NOT_FOUND;
                ch = true;
                break;
            }
            if (nt && no && (t = tobj_add(s, no->context_id, no->handle, T_ATT, o->v)))
                t->att_num = oa->AttachmentID;
            break;
        }
        case MP_ROP_OpenStream: {
            struct mp_rop_rsp_OpenStream *os = r;
            const struct mp_rop_req_OpenStream *oq = q;
            size_t tl = 0;
            bool bin = false;
            const char *text = stream_value(o, oq->PropertyTag, &tl, &bin);
            struct tobj *t;
            if (!os->ReturnValue && !text && o->kind == T_MSG && o->v->blocked) {
                os->ReturnValue = EC_NOT_FOUND; /* the same, for HTML / RTF */
                ch = true;
                break;
            }
            if (!os->ReturnValue && no && text &&
                (t = tobj_add(s, no->context_id, no->handle, T_STREAM, o->v))) {
                if (set_stream(t, text, tl, bin, oq->PropertyTag)) {
                    tobj_del(s, t);
                    break;
                }
                os->StreamSize = (uint32_t)t->len;
                ch = true;
            }
            break;
        }
        case MP_ROP_ReadStream: {
            struct mp_rop_rsp_ReadStream *rd = r;
            const struct mp_rop_req_ReadStream *rq = q;
            if (o->kind != T_STREAM)
                break;
            size_t want = rq->ByteCount == 0xBABE ? rq->MaximumByteCount : rq->ByteCount;
            size_t left = o->pos < o->len ? o->len - o->pos : 0, k = want < left ? want : left;
            rd->ReturnValue = 0;
            rd->HeaderOnly = 0;
            rd->Data = o->data + (left ? o->pos : o->len);
            rd->DataSize = (uint16_t)(k > 0xFFFF ? 0xFFFF : k);
            o->pos += rd->DataSize;
            ch = true;
            break;
        }
        case MP_ROP_SeekStream: /* the notice's position, whatever the server's */
            ch = o->kind == T_STREAM && seek_stream(o, q, r);
            break;
        case MP_ROP_GetStreamSize: {
            struct mp_rop_rsp_GetStreamSize *gs = r;
            if (o->kind != T_STREAM || gs->ReturnValue)
                break;
            gs->StreamSize = (uint32_t)o->len;
            ch = true;
            break;
        }
        case MP_ROP_QueryRows: {
            struct mp_rop_rsp_QueryRows *qr = r;
            if (o->kind != T_TABLE || qr->ReturnValue)
                break;
            if (o->v->blocked) {
                qr->RowCount = 0;
                ch = true;
                break;
            }
            size_t k = 0;
            for (size_t j = 0; qr->RowData && j < qr->RowCount; j++) {
                struct mp_rop_proprow *row = &qr->RowData[j];
                bool drop = false;
                for (size_t x = 0; row->vals && x < row->ncols; x++) {
                    bool dropped;
                    if (row->cols[x] == TAG_ATTACH_NUMBER &&
                        !(row->flag == 1 && row->vals[x].flag) &&
                        !att_notice(o->v, (uint32_t)row->vals[x].v.u, &dropped) && dropped)
                        drop = true;
                }
                if (!drop)
                    qr->RowData[k++] = *row;
            }
            ch = k != qr->RowCount;
            qr->RowCount = (uint16_t)k;
            break;
        }
        default:
            break;
        }
        if (ch)
            mp_call_rop_changed(m, true, i);
    }
    /* released in the same buffer: forgotten */
    size_t nq = mp_call_rop_count(m, false);
    for (size_t i = 0; i < nq; i++) {
        const uint8_t *q = mp_call_rop(m, false, i);
        struct tobj *o;
        if (q && mp_call_rop_id(m, false, i) == MP_ROP_Release && made[q[2]] != 0xFFFFFFFFu &&
            (o = tobj_find(s, ctx, made[q[2]])))
            tobj_del(s, o);
    }
}
