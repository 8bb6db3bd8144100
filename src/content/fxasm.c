/* Message assembly from FastTransfer streams (cached mode): the decoder of
 * src/fx turns each context's buffers into events, and this file turns the
 * events into messages of the model (doc/internals/content.md).
 *
 *   ICS download  IncrSyncChg / IncrSyncChgPartial: the change header's
 *                 values (PidTagMid gives the message id), IncrSyncMessage,
 *                 then messageContent; ends at MP_FX_EV_CHANGE_END;
 *   copies and    StartMessage / StartFAIMsg .. EndMessage (messageList,
 *   uploads       folderContent), or the whole stream when it is one
 *                 messageContent (CopyTo / CopyProperties of a message):
 *                 that ends with the stream (TransferStatus Done, or the
 *                 context's release).
 * Inside a message: StartRecip .. EndToRecip (a recipient), NewAttach ..
 * EndAttach (an attachment), StartEmbed .. EndEmbed (its embedded message,
 * to any depth).  Values stream into blobs (spilled past the spill size),
 * counted against the maximum message size. */
#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "chain/fxside.h"
#include "chain/ropstage.h"
#include "content/assemble.h"
#include "content/fxhold.h"
#include "fx/fxstream.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

enum fkind { F_MSG, F_RECIP, F_ATT, F_IGNORE };
struct frame {
    enum fkind kind;
    struct mp_message *m;     /* F_MSG: the message; F_RECIP / F_ATT: its owner */
    struct mp_props *props;   /* where values go (NULL: F_IGNORE) */
    struct mp_recipient *r;   /* F_RECIP */
    struct mp_attachment *at; /* F_ATT */
};

struct mp_fxasm {
    struct mp_asm *a;
    enum mp_msg_dir dir;
    enum mp_msg_mode mode;
    uint64_t folder_id, message_id;
    bool bare;
    bool failed;
    struct mp_fx_parser *p;
    const char *by; /* completed_by of the buffer being fed */
    int rop_index;  /* the ROP that carries it (-1: none) */
    bool at_request;
    uint64_t buf_start, buf_len; /* the buffer being fed, in stream offsets */
    uint64_t msg_start, hdr_end; /* the ICS change being built */
    bool have_hdr;
    /* holding (fxhold.h): the context's queue, NULL when not held */
    struct mp_fxq *q;
    uint32_t context_id, handle;
    uint64_t up_start;      /* the message's first byte (its IncrSyncProgressPerMsg) */
    uint64_t ppm_start;     /* the last IncrSyncProgressPerMsg, when the atom before */
    bool ppm_valid, unheld; /* unheld: past the hold limit, relayed as it came */
    bool tag_held;          /* the queue holds a tag split by a buffer's end */
    /* the progressTotal (IncrSyncProgressMode, then its ProgressInformation
     * binary): recorded in q when it comes before every message */
    bool seen_msg, prog_next;
    uint64_t prog_cand; /* the ProgressInformation's first byte, when its length is 32 */
    /* the message being assembled */
    struct mp_message *top;
    bool partial, by_marker; /* StartMessage .. EndMessage */
    struct frame st[MP_FX_MAX_DEPTH + 2];
    int nst;
    /* the value being assembled */
    struct mp_props *vp;
    uint32_t vtag;
    bool vkeep, vfixed;
    struct mp_propname *vname;
    struct mp_blob vb;
};

static void value_reset(struct mp_fxasm *f)
{
    mp_blob_free(&f->vb);
    mp_blob_init(&f->vb);
    if (f->vname)
        free(f->vname->name);
    free(f->vname);
    f->vname = NULL;
    f->vkeep = false;
    f->vp = NULL;
}

static void top_begin_at(struct mp_fxasm *f, bool partial, bool by_marker, uint64_t start)
{
    f->seen_msg = true;
    f->top = mp_asm_begin(f->a);
    if (!f->top)
        return;
    f->up_start = start;
    f->unheld = false;
    if (f->q) {
        f->q->open = true;
        f->q->open_up = start;
    }
    f->top->folder_id = f->folder_id;
    f->top->message_id = f->bare ? f->message_id : 0;
    f->partial = partial;
    f->by_marker = by_marker;
    f->nst = 1;
    f->st[0] = (struct frame){F_MSG, f->top, &f->top->props, NULL, NULL};
}

static void top_begin(struct mp_fxasm *f, bool partial, bool by_marker)
{
    top_begin_at(f, partial, by_marker, 0);
}

static void top_drop(struct mp_fxasm *f);

/* end: the stream offset where the message's bytes end (exclusive). */
static void top_end_at(struct mp_fxasm *f, uint64_t end)
{
    if (!f->top)
        return;
    /* A messageChangeFull is IncrSyncChg, the change header, IncrSyncMessage,
     * then the message.  An IncrSyncChg that ends without IncrSyncMessage is
     * a folderChange (hierarchy synchronization, MS-OXCFXICS 2.2.4.3.5): its
     * properties are a folder's, not a message (Exchange-made sample:
     * tests/unit/data/fx/exchange-hierarchy.fxs). */
    if (!f->by_marker && !f->bare && !f->partial && !f->have_hdr) {
        top_drop(f);
        return;
    }
    value_reset(f);
    struct mp_message *m = f->top;
    f->top = NULL;
    f->nst = 0;
    struct mp_fx_span sp = {0};
    /* an ICS change whose bytes are all in this buffer can be replaced there */
    if (!f->by_marker && !f->bare && f->have_hdr && f->msg_start >= f->buf_start &&
        end <= f->buf_start + f->buf_len && end > f->hdr_end && f->hdr_end > f->msg_start) {
        sp.in_buffer = true;
        sp.off = (uint32_t)(f->msg_start - f->buf_start);
        sp.len = (uint32_t)(end - f->msg_start);
        sp.hdr_len = (uint32_t)(f->hdr_end - f->msg_start);
    }
    if (f->q) {
        f->q->open = false;
        if (!f->unheld && (f->partial || f->bare || f->by_marker || f->have_hdr)) {
            sp.held = true;
            sp.kind = (uint8_t)(f->partial     ? MP_FXRW_PARTIAL
                                : f->bare      ? MP_FXRW_BARE
                                : f->by_marker ? MP_FXRW_MESSAGE
                                               : MP_FXRW_CHANGE);
            sp.context_id = f->context_id;
            sp.handle = f->handle;
            sp.up_start = f->up_start;
            sp.up_end = end;
        }
    }
    mp_asm_end_fx(f->a, m, f->dir, f->mode, f->by, f->partial, f->rop_index, f->at_request, &sp);
}

static void top_end(struct mp_fxasm *f)
{
    top_end_at(f, mp_fx_offset(f->p));
}

static void top_drop(struct mp_fxasm *f)
{
    if (f->q)
        f->q->open = false;
    value_reset(f);
    mp_msg_free(f->top);
    f->top = NULL;
    f->nst = 0;
}

static void push(struct mp_fxasm *f, struct frame fr)
{
    if (f->nst < (int)(sizeof(f->st) / sizeof(f->st[0])))
        f->st[f->nst++] = fr;
}

static void on_marker(struct mp_fxasm *f, const struct mp_fx_event *ev)
{
    switch (ev->elem) {
    case MP_FX_E_CHANGE:
    case MP_FX_E_CHANGE_PARTIAL:
        top_end_at(f, ev->offset); /* CHANGE_END came first; an unended one closes here */
        top_begin_at(f, ev->elem == MP_FX_E_CHANGE_PARTIAL, false,
                     f->ppm_valid ? f->ppm_start : ev->offset);
        f->ppm_valid = false;
        f->msg_start = ev->offset;
        f->have_hdr = false;
        return;
    case MP_FX_E_CHANGE_BODY: /* IncrSyncMessage: the change header ended */
        if (f->top && !f->have_hdr) {
            f->hdr_end = ev->offset;
            f->have_hdr = true;
        }
        return;
    case MP_FX_E_PROGRESS_MSG: /* its size goes with the change after it */
        f->seen_msg = true;
        if (f->top) { /* inside a message: not a change's (a malformed stream) */
            f->ppm_valid = false;
            return;
        }
        f->ppm_valid = true;
        f->ppm_start = ev->offset;
        if (f->q && !f->top) { /* held with it, even when a buffer ends before the change */
            f->q->open = true;
            f->q->open_up = ev->offset;
        }
        return;
    case MP_FX_E_MESSAGE:
        f->ppm_valid = false;
        if (ev->begin && !f->top)
            top_begin_at(f, false, true, ev->offset);
        else if (ev->end && f->top && f->by_marker && f->nst == 1)
            top_end(f);
        return;
    case MP_FX_E_GROUP_INFO:
        /* a messageChangePartial's groupInfo (then MetaTagIncrSyncGroupId,
         * IncrSyncChgPartial: MS-OXCFXICS 2.2.4.3.15) lies between the
         * IncrSyncProgressPerMsg and the change: held with them, so the
         * progress size can follow the change's verdict */
        if (f->ppm_valid && !f->top)
            return;
        /* fall through */
    default:
        if (f->ppm_valid && f->q && !f->top)
            f->q->open = false; /* no change after it */
        f->ppm_valid = false;
        break;
    }
    if (!f->top || f->nst == 0)
        return;
    struct frame *cur = &f->st[f->nst - 1];
    if (ev->begin) {
        struct frame fr = {F_IGNORE, cur->m, NULL, NULL, NULL};
        if (ev->elem == MP_FX_E_RECIP && cur->kind == F_MSG) {
            fr.r = mp_msg_recipient(cur->m, (uint32_t)cur->m->nrcpt);
            if (fr.r) {
                fr.kind = F_RECIP;
                fr.props = &fr.r->props;
            }
        } else if (ev->elem == MP_FX_E_ATTACH && cur->kind == F_MSG) {
            fr.at = mp_msg_attachment(cur->m, (uint32_t)cur->m->natt);
            if (fr.at) {
                fr.kind = F_ATT;
                fr.props = &fr.at->props;
            }
        } else if (ev->elem == MP_FX_E_EMBED && cur->kind == F_ATT && !cur->at->embedded) {
            struct mp_message *e = mp_msg_new();
            if (e) {
                e->parent = cur->m;
                cur->at->embedded = e;
                fr = (struct frame){F_MSG, e, &e->props, NULL, NULL};
            }
        }
        if (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH || ev->elem == MP_FX_E_EMBED)
            push(f, fr);
    } else if (ev->end && f->nst > 1 &&
               (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH ||
                ev->elem == MP_FX_E_EMBED)) {
        f->nst--;
    }
}

/* Meta-properties (MS-OXCFXICS 2.2.4.1.5) are the stream's, not the message's. */
static bool is_meta(uint32_t tag)
{
    switch (tag) {
    case MP_FX_MetaTagDnPrefix:
    case MP_FX_MetaTagEcWarning:
    case MP_FX_MetaTagNewFXFolder:
    case MP_FX_MetaTagFXDelProp:
    case MP_FX_MetaTagIdsetGiven:
    case MP_FX_MetaTagIdsetNoLongerInScope:
    case MP_FX_MetaTagIdsetRead:
    case MP_FX_MetaTagIdsetUnread:
    case MP_FX_MetaTagIncrementalSyncMessagePartial:
    case MP_FX_MetaTagIncrSyncGroupId:
        return true;
    default:
        return false;
    }
}

static void on_prop(struct mp_fxasm *f, const struct mp_fx_event *ev)
{
    value_reset(f);
    if (!f->top || f->nst == 0 || f->top->over_limit || ev->mv || is_meta(ev->tag))
        return;
    struct frame *cur = &f->st[f->nst - 1];
    uint16_t type = ev->type;
    if (type == MP_PT_ERROR || type == MP_PT_OBJECT || !cur->props)
        return;
    uint32_t tag = ev->tag;
    if (type & 0x8000) /* a code page string: kept as string8 */
        tag = (tag & 0xFFFF0000) | MP_PT_STRING8;
    int fixed = mp_fx_type_size(type);
    f->vfixed = fixed > 0 && fixed <= 8;
    f->vp = cur->props;
    f->vtag = tag;
    f->vkeep = true;
    if (ev->named && ev->np) {
        f->vname = calloc(1, sizeof(*f->vname));
        if (f->vname) {
            memcpy(f->vname->guid, ev->np->guid, 16);
            f->vname->is_name = ev->np->kind == 1;
            f->vname->lid = ev->np->lid;
            if (f->vname->is_name)
                f->vname->name = mp_propname_ascii(ev->np->name, ev->np->name_len);
        }
    }
}

static void on_value_end(struct mp_fxasm *f, const struct mp_fx_event *ev)
{
    if (!f->vkeep || !f->top || f->top->over_limit)
        return;
    struct mp_prop *v = mp_props_slot(f->vp, f->vtag);
    if (!v) {
        mp_asm_warn(f->a, "message content: cannot keep property 0x%08x", (unsigned)f->vtag);
        return;
    }
    if (f->vfixed)
        v->u = ev->u;
    else
        mp_blob_move(&v->v, &f->vb);
    v->name = f->vname;
    f->vname = NULL;
    f->vkeep = false;
    struct frame *cur = &f->st[f->nst - 1];
    if (f->vfixed && cur->kind == F_RECIP && f->vtag == MP_TAG_RECIPIENT_TYPE)
        cur->r->type = (uint8_t)ev->u;
    if (f->vfixed && cur->m == f->top && f->vtag == 0x674A0014 /* PidTagMid */)
        f->top->message_id = ev->u;
}

/* The progressTotal (MS-OXCFXICS 2.2.4.3.19: IncrSyncProgressMode, then
 * the ProgressInformation as a PtypBinary with property id 0) of a held
 * download, before any message: where its 32 bytes are, for the verdicts
 * that change a message's length (mp_fxq_progress_resize). */
static void note_progress(struct mp_fxasm *f, const struct mp_fx_event *ev)
{
    bool next = false;
    if (ev->kind == MP_FX_EV_MARKER)
        next = ev->elem == MP_FX_E_PROGRESS && f->q && f->dir == MP_MSG_DOWNLOAD && !f->seen_msg;
    else if (ev->kind == MP_FX_EV_PROP && f->prog_next && ev->tag == 0x00000102 && !ev->mv) {
        f->prog_cand = ev->offset + 8; /* the tag, the length, then the bytes */
        next = true;
    } else if (ev->kind == MP_FX_EV_VALUE && f->prog_next && f->prog_cand) {
        if (ev->len == 32 && f->q) {
            f->q->prog_seen = true;
            f->q->prog_at = f->prog_cand;
        }
    }
    f->prog_next = next;
    if (!next)
        f->prog_cand = 0;
}

static int on_event(void *ud, const struct mp_fx_event *ev)
{
    struct mp_fxasm *f = ud;
    if (f->prog_next || ev->kind == MP_FX_EV_MARKER)
        note_progress(f, ev);
    if (f->bare && !f->top && ev->kind != MP_FX_EV_CHANGE_END)
        top_begin(f, false, false);
    switch (ev->kind) {
    case MP_FX_EV_MARKER:
        value_reset(f);
        on_marker(f, ev);
        break;
    case MP_FX_EV_PROP:
        on_prop(f, ev);
        break;
    case MP_FX_EV_VALUE:
        break;
    case MP_FX_EV_DATA:
        if (!f->vkeep || f->vfixed || !f->top)
            break;
        if (!mp_asm_count(f->a, f->top, ev->n)) {
            value_reset(f); /* over the limit: dropped at its end */
            break;
        }
        if (mp_blob_append(&f->vb, ev->p, ev->n, mp_asm_limits(f->a))) {
            mp_asm_warn(f->a, "message content: cannot keep property 0x%08x (%s)",
                        (unsigned)f->vtag, "temporary file or memory");
            value_reset(f);
        }
        break;
    case MP_FX_EV_VALUE_END:
        on_value_end(f, ev);
        break;
    case MP_FX_EV_PROP_END:
        value_reset(f);
        break;
    case MP_FX_EV_CHANGE_END:
        if (!f->by_marker)
            top_end_at(f, ev->offset);
        break;
    }
    return 0;
}

struct mp_fxasm *mp_fxasm_new(struct mp_asm *a, enum mp_msg_dir dir, enum mp_msg_mode mode,
                              uint64_t folder_id, uint64_t message_id, bool bare)
{
    struct mp_fxasm *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->a = a;
    f->dir = dir;
    f->mode = mode;
    f->folder_id = folder_id;
    f->message_id = message_id;
    f->bare = bare;
    f->rop_index = -1;
    mp_blob_init(&f->vb);
    f->p = mp_fx_parser_new(on_event, f);
    if (!f->p) {
        free(f);
        return NULL;
    }
    return f;
}

static void fail(struct mp_fxasm *f)
{
    mp_asm_warn(f->a, "%s stream not assembled: %s", mp_msg_mode_name(f->mode), mp_fx_error(f->p));
    f->failed = true;
    top_drop(f);
}

/* A buffer that ends inside a tag: the tag may be a message's first
 * marker (StartMessage, IncrSyncChg, IncrSyncProgressPerMsg ...), so its
 * bytes are held until it is complete, or a held message's first bytes
 * would already be gone. */
static void hold_tag(struct mp_fxasm *f)
{
    if (!f->q || f->failed)
        return;
    if (f->top || f->ppm_valid) {
        f->tag_held = false;
        return;
    }
    size_t k = mp_fx_partial_tag(f->p);
    if (k) {
        f->q->open = true;
        f->q->open_up = mp_fx_offset(f->p) - k;
        f->tag_held = true;
    } else if (f->tag_held) {
        f->q->open = false;
        f->tag_held = false;
    }
}

int mp_fxasm_feed(struct mp_fxasm *f, const uint8_t *p, size_t n, const char *completed_by)
{
    if (f->failed)
        return -1;
    f->by = completed_by;
    f->buf_start = mp_fx_offset(f->p);
    f->buf_len = n;
    if (mp_fx_feed(f->p, p, n)) {
        fail(f);
        return -1;
    }
    hold_tag(f);
    return 0;
}

int mp_fxasm_finish(struct mp_fxasm *f, const char *completed_by)
{
    if (f->failed)
        return -1;
    f->by = completed_by;
    if (mp_fx_finish(f->p)) {
        fail(f);
        return -1;
    }
    if (f->top && (f->bare || !f->by_marker))
        top_end(f); /* a bare messageContent, or a change the stream ended */
    if (f->q)       /* a trailing IncrSyncProgressPerMsg with no change after it */
        f->q->open = false;
    f->failed = true; /* nothing more comes */
    return 0;
}

void mp_fxasm_free(struct mp_fxasm *f)
{
    if (!f)
        return;
    top_drop(f);
    mp_fx_parser_free(f->p);
    free(f);
}

void mp_fxasm_hold(struct mp_fxasm *f, struct mp_fxq *q, uint32_t context_id, uint32_t handle)
{
    f->q = q;
    f->context_id = context_id;
    f->handle = handle;
}

/* ---- the contexts of a session ---- */
struct mp_fxctx {
    struct mp_fxctx *next;
    uint32_t context_id, handle;
    bool upload;
    struct mp_fxasm *f;
    struct mp_fxq q; /* downloads, when held (f->q points here) */
    /* the GetBuffer the proxy answered from q itself: not fed again */
    uint64_t local_call; /* mp_call_serial (not the address: reused), 0 none */
    int local_idx;
    /* the client's GetBuffer response already fed before the proxy's side
     * GetBuffers (src/chain/fxside.c): not fed again */
    uint64_t fed_call; /* mp_call_serial, 0 none */
    int fed_idx;
    /* held uploads (fxup below): the PutBuffer sent upstream with other
     * bytes than the client's (its TransferDataSize is client_size), the
     * one a block answered, and the upstream's last counts */
    uint64_t pend_call, answered_call; /* mp_call_serial, 0 none */
    int pend_idx, answered_idx;
    uint16_t client_size;
    bool side_done;
    uint32_t side_rv;
    uint16_t up_status, up_total;
};

static struct mp_fxctx **ctx_find(struct mp_fxctx **list, const struct mp_object *o)
{
    if (!o || o->handle == 0xFFFFFFFF)
        return NULL;
    for (struct mp_fxctx **pp = list; *pp; pp = &(*pp)->next)
        if ((*pp)->handle == o->handle && (*pp)->context_id == o->context_id)
            return pp;
    return NULL;
}

static void ctx_close(struct mp_asm *a, struct mp_fxctx **pp, const char *by)
{
    struct mp_fxctx *c = *pp;
    *pp = c->next;
    c->f->rop_index = -1; /* not the PutBuffer's any more */
    c->f->at_request = false;
    /* an upload's stream ends with its context; a download's must have said Done */
    if (c->upload && !c->f->failed)
        mp_fxasm_finish(c->f, by);
    if (c->upload && c->f->q && mp_fxq_len(&c->q))
        mp_asm_warn(a, "%s stream: %zu held upload bytes dropped at %s (the stream did not end)",
                    mp_msg_mode_name(c->f->mode), mp_fxq_len(&c->q), by);
    mp_fxasm_free(c->f);
    mp_fxq_free(&c->q);
    free(c);
}

void mp_asm_fx_release(struct mp_asm *a, struct mp_fxctx **list, const struct mp_object *o)
{
    struct mp_fxctx **pp = ctx_find(list, o);
    if (pp)
        ctx_close(a, pp, "RopRelease");
}

void mp_asm_fx_free(struct mp_asm *a, struct mp_fxctx **list)
{
    while (*list)
        ctx_close(a, list, "session end");
}

static void ctx_open(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call, size_t i,
                     enum mp_msg_dir dir, enum mp_msg_mode mode)
{
    const struct mp_object *src = mp_call_rop_object(call, true, i);
    const struct mp_object *no = mp_call_rop_new_object(call, i);
    if (!no || no->handle == 0xFFFFFFFF)
        return;
    struct mp_fxctx **old = ctx_find(list, no);
    if (old) /* the handle was reused without a release we saw */
        ctx_close(a, old, "RopRelease");
    bool bare = src && (src->type == MP_OBJ_MESSAGE || src->type == MP_OBJ_ATTACHMENT);
    struct mp_fxctx *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->f = mp_fxasm_new(a, dir, mode, src ? src->folder_id : 0, src ? src->message_id : 0, bare);
    if (!c->f) {
        free(c);
        return;
    }
    c->context_id = no->context_id;
    c->handle = no->handle;
    c->upload = dir == MP_MSG_UPLOAD;
    /* uploads are held only for messages of their own (StartMessage ..
     * EndMessage, a CopyMessages / CopyFolder destination): a bare
     * messageContent (CopyTo into a message) ends at the context's
     * release, when no PutBuffer is left to carry it */
    bool hold = !c->upload ||
                (!bare && mp_call_rop_id(call, true, i) == MP_ROP_FastTransferDestinationConfigure);
    c->up_status = 0x0001; /* Partial until the upstream says otherwise */
    if (hold && mp_asm_limits(a)->fx_hold) {
        c->f->q = &c->q;
        c->f->context_id = c->context_id;
        c->f->handle = c->handle;
    }
    c->next = *list;
    *list = c;
}

enum { TRANSFER_DONE = 0x0003 }; /* MS-OXCROPS 2.2.12.5.2 TransferStatus Done */

static bool is_put(uint8_t id)
{
    return id == MP_ROP_FastTransferDestinationPutBuffer;
}

/* A message whose held bytes passed mapiproxy:fx hold limit goes on as it
 * comes: no verdict can change it. */
static void hold_limit(struct mp_asm *a, struct mp_fxctx *c)
{
    struct mp_fxq *q = c->f->q;
    size_t lim = mp_asm_limits(a)->fx_hold;
    if (q && q->open && mp_fxq_held(q) > lim) {
        mp_asm_warn(a,
                    "%s message held past mapiproxy:fx hold limit (%zu bytes): relayed as "
                    "it comes, no verdict can change it",
                    mp_msg_mode_name(c->f->mode), lim);
        q->open = false;
        c->f->unheld = true;
    }
}

void mp_asm_fx_rop(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call, size_t i,
                   const void *req, const void *rsp)
{
    /* every response starts RopId, handle index, ReturnValue */
    uint32_t rv = ((const struct mp_rop_rsp_FastTransferDestinationConfigure *)rsp)->ReturnValue;
    switch (mp_call_rop_id(call, true, i)) {
    case MP_ROP_SynchronizationConfigure:
        /* SynchronizationType 0x01 Contents; 0x02 Hierarchy carries folders
         * only (MS-OXCFXICS 2.2.3.2.1.1.1) */
        if (!rv && req &&
            ((const struct mp_rop_req_SynchronizationConfigure *)req)->SynchronizationType == 0x01)
            ctx_open(a, list, call, i, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD);
        break;
    case MP_ROP_FastTransferSourceCopyTo:
    case MP_ROP_FastTransferSourceCopyMessages:
    case MP_ROP_FastTransferSourceCopyFolder:
    case MP_ROP_FastTransferSourceCopyProperties:
        if (!rv)
            ctx_open(a, list, call, i, MP_MSG_DOWNLOAD, MP_MSG_FX_COPY);
        break;
    case MP_ROP_FastTransferDestinationConfigure:
    case MP_ROP_SynchronizationOpenCollector:
        if (!rv)
            ctx_open(a, list, call, i, MP_MSG_UPLOAD, MP_MSG_ICS_UPLOAD);
        break;
    case MP_ROP_FastTransferSourceGetBuffer: {
        const struct mp_rop_rsp_FastTransferSourceGetBuffer *r = rsp;
        struct mp_fxctx **pp = ctx_find(list, mp_call_rop_object(call, true, i));
        if (!pp || r->ReturnValue || r->HeaderOnly)
            break;
        struct mp_fxctx *c = *pp;
        int ri = mp_call_rop_request_index(call, i);
        if (c->local_call == mp_call_serial(call) && c->local_idx == ri)
            break; /* the proxy's own answer, out of the queue */
        if (c->fed_call == mp_call_serial(call) && c->fed_idx == ri) {
            c->fed_call = 0; /* fed before the side GetBuffers */
            break;
        }
        c->f->rop_index = ri;
        c->f->at_request = false;
        struct mp_fxq *q = c->f->q;
        if (q) {
            if (mp_fxq_append(q, r->TransferBuffer, r->TransferBuffer ? r->TransferBufferSize : 0))
                mp_asm_warn(a, "%s stream: out of memory holding a buffer",
                            mp_msg_mode_name(c->f->mode));
            q->in_progress = r->InProgressCount;
            q->total_steps = r->TotalStepCount;
            q->up_done |= r->TransferStatus == TRANSFER_DONE;
        }
        if (r->TransferBuffer && r->TransferBufferSize)
            mp_fxasm_feed(c->f, r->TransferBuffer, r->TransferBufferSize,
                          "RopFastTransferSourceGetBuffer");
        if (r->TransferStatus == TRANSFER_DONE && !c->f->failed)
            mp_fxasm_finish(c->f, "RopFastTransferSourceGetBuffer");
        hold_limit(a, c);
        break;
    }
    default:
        break;
    }
}

/* Upload bytes are taken from the request, before it goes upstream (a
 * PutBuffer the server then fails was still fed: the stream is broken then
 * anyway).  A context configured in the same ROP buffer has no handle yet
 * at this point and is not followed. */
/* The client's BufferSize (with the 0xBABE sentinel: mp_fxside_want). */
static size_t wanted(struct mp_call *call, int ri, size_t dflt)
{
    const struct mp_rop_req_FastTransferSourceGetBuffer *rq =
        ri >= 0 ? mp_call_rop(call, false, (size_t)ri) : NULL;
    if (!rq)
        return dflt;
    return mp_fxside_want(call, rq);
}

/* The counts of the response the client gets now (MS-OXCFXICS
 * 2.2.3.1.1.5.2): the upstream's last, with InProgressCount at
 * TotalStepCount only when the client's stream is done. */
static void progress(const struct mp_fxq *q, uint16_t status, uint16_t *done, uint16_t *total)
{
    *total = q->total_steps;
    *done = q->in_progress;
    if (status == TRANSFER_DONE)
        *done = q->total_steps;
    else if (*done >= q->total_steps)
        *done = q->total_steps ? (uint16_t)(q->total_steps - 1) : 0;
}

/* A GetBuffer the held bytes can answer alone (the client's BufferSize of
 * released bytes, or the rest once the upstream is done): answered by the
 * proxy, not sent upstream. */
static void answer_from_queue(struct mp_fxctx *c, struct mp_call *call, size_t ri)
{
    struct mp_fxq *q = c->f->q;
    c->local_call = 0;
    size_t want = wanted(call, (int)ri, 0);
    size_t rel = mp_fxq_releasable(q);
    if (!want || !(rel >= want || (q->up_done && mp_fxq_len(q))))
        return;
    const struct mp_rop_req_FastTransferSourceGetBuffer *rq = mp_call_rop(call, false, ri);
    struct mp_rop_rsp_FastTransferSourceGetBuffer *r = mp_call_alloc(call, sizeof(*r));
    uint8_t *b = r ? mp_call_alloc(call, want) : NULL;
    if (!b)
        return;
    size_t k = mp_fxq_take(q, want, b);
    r->RopId = MP_ROP_FastTransferSourceGetBuffer;
    r->InputHandleIndex = rq->InputHandleIndex;
    r->TransferStatus = mp_fxq_status(q);
    progress(q, r->TransferStatus, &r->InProgressCount, &r->TotalStepCount);
    r->TransferBufferSize = (uint16_t)k;
    r->TransferBuffer = b;
    if (mp_ropstage_answer(call, ri, r))
        return; /* k bytes taken: not expected (one-buffer calls only) */
    c->local_call = mp_call_serial(call);
    c->local_idx = (int)ri;
}

/* A held upload stops being held: what the queue has is lost (the
 * upstream refused the stream, or memory ran out; the client has been or
 * is told the upload failed). */
static void up_unhold(struct mp_fxctx *c)
{
    mp_fxq_free(&c->q);
    c->f->q = NULL;
}

/* RopFastTransferDestinationPutBufferExtended is relayed as it comes (its
 * response counts differ; the proxy answers and sends PutBuffer only):
 * its context is held no more.  Bytes still held (a client that switched
 * in mid-stream) go in front of its data when they fit. */
static void up_extended(struct mp_asm *a, struct mp_fxctx *c, struct mp_call *call, size_t ri)
{
    struct mp_rop_req_FastTransferDestinationPutBufferExtended *rq = mp_call_rop(call, false, ri);
    size_t qn = mp_fxq_len(&c->q);
    c->q.open = false; /* all of it goes */
    if (qn && rq && qn + rq->TransferDataSize <= 0xFFFF) {
        uint8_t *b = mp_call_alloc(call, qn + rq->TransferDataSize);
        if (b) {
            mp_fxq_take(&c->q, qn, b); /* nothing held: all of it releasable */
            memcpy(b + qn, rq->TransferData, rq->TransferDataSize);
            rq->TransferData = b;
            rq->TransferDataSize = (uint16_t)(qn + rq->TransferDataSize);
            mp_call_rop_changed(call, false, ri);
            qn = 0;
        }
    }
    if (qn)
        mp_asm_warn(
            a, "%s stream: %zu held bytes dropped (RopFastTransferDestinationPutBufferExtended)",
            mp_msg_mode_name(c->f->mode), qn);
    c->f->unheld = true; /* the message being assembled goes as it comes */
    up_unhold(c);
}

void mp_asm_fx_request(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call, size_t ri)
{
    uint8_t id = mp_call_rop_id(call, false, ri);
    if (id == MP_ROP_FastTransferSourceGetBuffer) {
        struct mp_fxctx **gp = ctx_find(list, mp_call_rop_object(call, false, ri));
        if (gp)
            (*gp)->fed_call = 0; /* a mark of an earlier call that never came back */
        if (gp && (*gp)->f->q)
            answer_from_queue(*gp, call, ri);
        return;
    }
    if (id != MP_ROP_FastTransferDestinationPutBuffer &&
        id != MP_ROP_FastTransferDestinationPutBufferExtended)
        return;
    const struct mp_rop_req_FastTransferDestinationPutBuffer *q = mp_call_rop(call, false, ri);
    struct mp_fxctx **pp = ctx_find(list, mp_call_rop_object(call, false, ri));
    if (pp) /* marks of an earlier call (its memory may be this call's now) */
        (*pp)->local_call = (*pp)->answered_call = (*pp)->pend_call = 0;
    if (!q || !pp || !q->TransferData || !q->TransferDataSize)
        return;
    struct mp_fxctx *c = *pp;
    c->f->rop_index = (int)ri;
    c->f->at_request = true;
    const uint8_t *data = q->TransferData; /* the client's (up_extended may change q's) */
    size_t size = q->TransferDataSize;
    if (c->f->q && id == MP_ROP_FastTransferDestinationPutBufferExtended)
        up_extended(a, c, call, ri);
    /* appended even when the stream failed to decode: nothing is held then,
     * the bytes go on in order */
    if (c->f->q && mp_fxq_append(c->f->q, data, size)) {
        mp_asm_warn(a, "%s stream: out of memory holding a buffer; not held from here on",
                    mp_msg_mode_name(c->f->mode));
        up_unhold(c);
    }
    mp_fxasm_feed(c->f, data, size, "RopFastTransferDestinationPutBuffer");
    hold_limit(a, c);
}

/* After the verdicts: each upstream GetBuffer response of the call that
 * fed a held context gives the client the released bytes, up to its
 * BufferSize; left as it is when that is what the upstream sent. */
static void up_response(struct mp_fxctx **list, struct mp_call *call, size_t j);

void mp_asm_fx_emit(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call)
{
    (void)a;
    size_t nrs = mp_call_rop_count(call, true);
    for (size_t j = 0; j < nrs; j++) {
        if (is_put(mp_call_rop_id(call, true, j)))
            up_response(list, call, j);
        if (mp_call_rop_id(call, true, j) != MP_ROP_FastTransferSourceGetBuffer)
            continue;
        struct mp_rop_rsp_FastTransferSourceGetBuffer *r = mp_call_rop(call, true, j);
        struct mp_fxctx **pp = ctx_find(list, mp_call_rop_object(call, true, j));
        if (!r || !pp || !(*pp)->f->q || r->ReturnValue || r->HeaderOnly)
            continue;
        struct mp_fxctx *c = *pp;
        int ri = mp_call_rop_request_index(call, j);
        if (c->local_call == mp_call_serial(call) && c->local_idx == ri)
            continue;
        struct mp_fxq *q = c->f->q;
        size_t want = wanted(call, ri, r->TransferBufferSize);
        uint8_t *b = mp_call_alloc(call, want ? want : 1);
        if (!b)
            continue;
        size_t k = mp_fxq_take(q, want, b);
        uint16_t st = mp_fxq_status(q), done, total;
        progress(q, st, &done, &total);
        if (k == r->TransferBufferSize && st == r->TransferStatus && done == r->InProgressCount &&
            (!k || !memcmp(b, r->TransferBuffer, k)))
            continue; /* what the upstream sent */
        r->TransferBuffer = b;
        r->TransferBufferSize = (uint16_t)k;
        r->TransferStatus = st;
        r->InProgressCount = done;
        r->TotalStepCount = total;
        mp_call_rop_changed(call, true, j);
    }
}

int mp_asm_fx_queue_state(struct mp_fxctx **list, const struct mp_object *o,
                          struct mp_fx_qstate *st)
{
    struct mp_fxctx **pp = ctx_find(list, o);
    if (!pp || !(*pp)->f->q || (*pp)->f->failed)
        return -1;
    const struct mp_fxq *q = (*pp)->f->q;
    *st = (struct mp_fx_qstate){.releasable = mp_fxq_releasable(q),
                                .len = mp_fxq_len(q),
                                .open = q->open,
                                .up_done = q->up_done};
    return 0;
}

void mp_asm_fx_fed(struct mp_fxctx **list, const struct mp_object *o, const struct mp_call *call,
                   int ri)
{
    struct mp_fxctx **pp = ctx_find(list, o);
    if (pp) {
        (*pp)->fed_call = mp_call_serial(call);
        (*pp)->fed_idx = ri;
    }
}

static struct mp_fxq *held_queue(struct mp_fxctx **list, const struct mp_fx_span *sp)
{
    for (struct mp_fxctx *c = *list; c; c = c->next)
        if (c->handle == sp->handle && c->context_id == sp->context_id)
            return c->f->q;
    return NULL;
}

const uint8_t *mp_asm_fx_held(struct mp_fxctx **list, const struct mp_fx_span *sp, size_t *len)
{
    struct mp_fxq *q = sp->held ? held_queue(list, sp) : NULL;
    size_t idx;
    const uint8_t *p = q ? mp_fxq_region(q, sp->up_start, sp->up_end, &idx) : NULL;
    *len = p ? (size_t)(sp->up_end - sp->up_start) : 0;
    return p;
}

int mp_asm_fx_replace(struct mp_fxctx **list, const struct mp_fx_span *sp, const uint8_t *p,
                      size_t n)
{
    struct mp_fxq *q = sp->held ? held_queue(list, sp) : NULL;
    return q ? mp_fxq_replace_message(q, sp->up_start, sp->up_end, p, n) : -1;
}

/* ---- held uploads (doc/internals/content.md, "Holding uploads") ---- */

enum {
    UP_CHUNK = 0x7000, /* bytes of a PutBuffer the proxy fills (at least the client's) */
    OP_RPCEXT2 = 11,
};

static struct mp_fxctx *up_ctx(struct mp_fxctx **list, const struct mp_object *o)
{
    struct mp_fxctx **pp = ctx_find(list, o);
    return pp && (*pp)->upload && (*pp)->f->q ? *pp : NULL;
}

void mp_asm_fx_up_block(struct mp_fxctx **list, const struct mp_fx_span *sp, struct mp_call *call,
                        int ri)
{
    for (struct mp_fxctx *c = *list; c; c = c->next) {
        if (!c->upload || !c->f->q || c->handle != sp->handle || c->context_id != sp->context_id)
            continue;
        /* the upstream never sees the message; what came before and after
         * it goes with the next PutBuffer */
        if (mp_fxq_replace(c->f->q, sp->up_start, sp->up_end, NULL, 0))
            up_unhold(c);
        c->answered_call = mp_call_serial(call);
        c->answered_idx = ri;
        return;
    }
}

/* The client's PutBuffer answered by the proxy (its bytes are held):
 * success, BufferUsedSize its TransferDataSize (MS-OXCFXICS 2.2.3.1.2.2.2;
 * InProgressCount 0, TransferStatus and TotalStepCount the upstream's
 * last). */
static int up_answer(struct mp_fxctx *c, struct mp_call *call, size_t ri,
                     const struct mp_rop_req_FastTransferDestinationPutBuffer *rq)
{
    struct mp_rop_rsp_FastTransferDestinationPutBuffer *r = mp_call_alloc(call, sizeof(*r));
    if (!r)
        return -1;
    *r = (struct mp_rop_rsp_FastTransferDestinationPutBuffer){
        .RopId = MP_ROP_FastTransferDestinationPutBuffer,
        .InputHandleIndex = rq->InputHandleIndex,
        .TransferStatus = c->up_status,
        .TotalStepCount = c->up_total,
        .BufferUsedSize = rq->TransferDataSize,
    };
    if (mp_ropstage_answer(call, ri, r))
        return -1;
    c->local_call = mp_call_serial(call);
    c->local_idx = (int)ri;
    return 0;
}

void mp_asm_fx_up_emit(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call)
{
    size_t n = mp_call_rop_count(call, false);
    for (size_t ri = 0; ri < n; ri++) {
        if (!is_put(mp_call_rop_id(call, false, ri)))
            continue;
        struct mp_fxctx *c = up_ctx(list, mp_call_rop_object(call, false, ri));
        struct mp_rop_req_FastTransferDestinationPutBuffer *rq = mp_call_rop(call, false, ri);
        if (!c || !rq || (c->answered_call == mp_call_serial(call) && c->answered_idx == (int)ri))
            continue;
        c->pend_call = 0;
        c->side_done = false;
        c->side_rv = 0;
        struct mp_fxq *q = c->f->q;
        size_t rel = mp_fxq_releasable(q);
        if (!rel) {
            if (!up_answer(c, call, ri, rq))
                continue;
            /* not answerable here (a call of several ROP buffers): the held
             * message goes on as it comes, no verdict can change it */
            mp_asm_warn(a,
                        "%s stream: cannot answer a held PutBuffer; the message is relayed as "
                        "it comes",
                        "ics-upload");
            q->open = false;
            c->f->unheld = true;
            if (!(rel = mp_fxq_releasable(q)))
                continue;
        }
        size_t chunk = rq->TransferDataSize > UP_CHUNK ? rq->TransferDataSize : UP_CHUNK;
        size_t want = rel < chunk ? rel : chunk;
        uint8_t *b = mp_call_alloc(call, want);
        if (!b)
            continue;
        size_t k = mp_fxq_take(q, want, b);
        c->client_size = rq->TransferDataSize;
        if (k == rq->TransferDataSize && !memcmp(b, rq->TransferData, k) && !mp_fxq_releasable(q))
            continue; /* the client's bytes, as it sent them */
        rq->TransferData = b;
        rq->TransferDataSize = (uint16_t)k;
        mp_call_rop_changed(call, false, ri);
        c->pend_call = mp_call_serial(call);
        c->pend_idx = (int)ri;
        if (mp_fxq_releasable(q) && (call->opnum != OP_RPCEXT2 || n != 1))
            mp_asm_warn(a,
                        "%s stream: %zu held bytes wait for the next PutBuffer (no side request "
                        "in this call)",
                        "ics-upload", mp_fxq_releasable(q));
    }
}

size_t mp_asm_fx_up_pending(struct mp_fxctx **list, const struct mp_object *o)
{
    struct mp_fxctx *c = up_ctx(list, o);
    return c ? mp_fxq_releasable(c->f->q) : 0;
}

size_t mp_asm_fx_up_take(struct mp_fxctx **list, const struct mp_object *o, uint8_t *dst,
                         size_t max)
{
    struct mp_fxctx *c = up_ctx(list, o);
    return c ? mp_fxq_take(c->f->q, max, dst) : 0;
}

void mp_asm_fx_up_result(struct mp_fxctx **list, const struct mp_object *o, uint32_t rv,
                         uint16_t status, uint16_t total)
{
    struct mp_fxctx *c = up_ctx(list, o);
    if (!c)
        return;
    c->side_done = true;
    c->side_rv = rv;
    if (!rv) {
        c->up_status = status;
        c->up_total = total;
    }
}

/* The client's PutBuffer responses: BufferUsedSize is the client's
 * TransferDataSize when the upstream took the bytes sent in its place (and
 * every side PutBuffer's); the first failure is the client's. */
static void up_response(struct mp_fxctx **list, struct mp_call *call, size_t j)
{
    struct mp_rop_rsp_FastTransferDestinationPutBuffer *r = mp_call_rop(call, true, j);
    struct mp_fxctx *c = up_ctx(list, mp_call_rop_object(call, true, j));
    int ri = mp_call_rop_request_index(call, j);
    if (!r || !c || (c->local_call == mp_call_serial(call) && c->local_idx == ri) ||
        (c->answered_call == mp_call_serial(call) && c->answered_idx == ri))
        return;
    bool mine = c->pend_call == mp_call_serial(call) && c->pend_idx == ri;
    c->pend_call = 0;
    if (!r->ReturnValue && mine && c->side_done && c->side_rv) {
        r->ReturnValue = c->side_rv;
        r->TransferStatus = 0x0000; /* Error */
        r->BufferUsedSize = 0;
        mp_call_rop_changed(call, true, j);
    } else if (!r->ReturnValue && mine) {
        r->BufferUsedSize = c->client_size;
        if (c->side_done) {
            r->TransferStatus = c->up_status;
            r->TotalStepCount = c->up_total;
        }
        mp_call_rop_changed(call, true, j);
    }
    c->side_done = false;
    if (r->ReturnValue) { /* the stream is broken upstream: nothing more is held */
        up_unhold(c);
        return;
    }
    c->up_status = r->TransferStatus;
    c->up_total = r->TotalStepCount;
}
