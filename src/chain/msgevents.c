/* Message events (include/mapiproxy/message.h; msgevents.h): one
 * assembler per session, fed by the ROP stage, its completed messages
 * delivered to the modules' message hooks, their verdicts applied.
 * doc/internals/module-api.md, "Message events". */
#include "chain/msgevents.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/chain.h"
#include "chain/ropstage.h"
#include "chain/services.h"
#include "content/assemble.h"
#include "content/message.h"
#include "content/mime.h"
#include "core/log.h"
#include "mapiproxy/rops.h"

#define EC_ACCESS_DENIED 0x80070005u

struct mem {
    struct mem *next;
    max_align_t data[];
};

struct mp_message_event {
    struct msess *ms; /* NULL once the session ended (pending at its end) */
    struct mp_modules *mods;
    struct mp_content_limits lim; /* the session's, tmpdir copied */
    char tmpdir[512];
    struct mp_session *session; /* NULL once a session-end event outlived its session */
    struct mp_call *call;       /* NULL: not bound to a call (the session's end) */
    struct mp_message_event *next;
    enum mp_message_dir dir;
    enum mp_message_mode mode;
    uint64_t folder_id, message_id;
    char completed_by[48];
    bool partial, response_side, at_request, can_block, can_modify;
    bool fx;           /* out of a FastTransfer stream: rop_index carried its last byte */
    bool fx_in_buffer; /* fx download: whole in that GetBuffer's TransferBuffer */
    uint32_t fx_off, fx_len, fx_hdr_len;
    struct mp_fx_span fx_span; /* held (msgfx.c, mp_msgfx_apply_held) */
    int rop_index;
    struct mp_message *msg; /* held (mp_msg_hold) */
    char user[256], peer[64], transport[32];
    uint32_t seen;                /* modules whose hook saw it */
    struct mp_module_ctx *cur_mc; /* the module whose hook runs (or holds it) */
    int next_mod;                 /* unbound events: the next module to see it */
    bool pending;                 /* a hook returned MP_PENDING */
    bool decided;                 /* on_decided ran */
    bool prefetched;              /* read by the proxy at RopOpenMessage (msgonline.c) */
    int mime_fd;                  /* -1 until built */
    uint64_t mime_size;
    bool mime_tried;
    struct mem *mem;
    struct mp_msgev_verdict v;
    void (*on_decided)(struct mp_message_event *ev, const struct mp_msgev_verdict *v, void *arg);
    void *on_decided_arg;
};

/* per session */
struct msess {
    struct mp_modules *mods;
    struct mp_session *session;
    struct mp_asm *a;
    struct mp_content_limits lim;
    char tmpdir[512];
    char user[256], peer[64], transport[32];
    struct mp_call *cur; /* the call feeding the assembler now */
    /* online downloads a module blocked: later RopOpenMessage of them in
     * this session are refused (folder id, message id) */
    struct blk {
        uint64_t fid, mid;
    } * blocked;
    size_t nblocked;
    bool cur_rsp;
    bool freeing;
    /* msgonline.c: 1 while the proxy's own reads feed the assembler, 2 when
     * such a read was cut short (its message is not delivered); the
     * messages it read (the client's own read of them is no event) */
    int prefetch;
    struct blk *fetched;
    size_t nfetched;
};

/* per call */
struct mcall {
    struct mp_message_event *head, *tail, *last;
    bool releases_only;
    struct mp_module_ctx *pending_mc; /* the module whose hook holds the call */
    bool pending_rsp;
};

/* ---- helpers ---- */

static bool has_hook(const struct mp_modules *ms, unsigned i)
{
    return ms->mods[i].m && ms->mods[i].m->message;
}

bool mp_msgev_wanted(const struct mp_modules *ms)
{
    for (unsigned i = 0; ms && i < ms->n; i++)
        if (has_hook(ms, i))
            return true;
    return false;
}

/* A message hook that may give verdicts (not MP_MODULE_OBSERVES_ONLY). */
static bool gives_verdicts(const struct mp_modules *ms, unsigned i)
{
    return has_hook(ms, i) && !(ms->mods[i].m->flags & MP_MODULE_OBSERVES_ONLY);
}

bool mp_msgev_verdicts_wanted(const struct mp_modules *ms)
{
    for (unsigned i = 0; ms && i < ms->n; i++)
        if (gives_verdicts(ms, i))
            return true;
    return false;
}

static void copy_str(char *dst, size_t n, const char *s)
{
    snprintf(dst, n, "%s", s ? s : "");
}

static void ev_free(struct mp_message_event *ev)
{
    if (!ev)
        return;
    mp_msg_free(ev->msg);
    if (ev->mime_fd >= 0)
        close(ev->mime_fd);
    for (struct mem *m = ev->mem, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    free(ev->v.prefix);
    for (size_t i = 0; i < ev->v.nsets; i++) {
        free(ev->v.sets[i].name);
        free(ev->v.sets[i].value);
    }
    free(ev->v.sets);
    for (size_t i = 0; i < ev->v.natts; i++)
        free(ev->v.atts[i].notice);
    free(ev->v.atts);
    free(ev);
}

/* ---- session state ---- */

static void limits_from_modules(struct msess *s)
{
    long spill = 1L << 20, max = 64L << 20;
    const char *tmp = NULL;
    for (unsigned i = 0; i < s->mods->n; i++) {
        if (!has_hook(s->mods, i))
            continue;
        struct mp_module_ctx *mc = &s->mods->mods[i];
        long sp = mp_module_option_int(mc, "spill size", spill);
        long mx = mp_module_option_int(mc, "max message size", max);
        if (sp >= 0 && sp < spill)
            spill = sp;
        if (mx > 0 && mx < max)
            max = mx;
        if (!tmp)
            tmp = mp_module_option(mc, "tmpdir");
    }
    copy_str(s->tmpdir, sizeof(s->tmpdir), tmp);
    /* FastTransfer downloads are held for verdicts (msgfx.c) unless the
     * only message hooks are observers (MP_MODULE_OBSERVES_ONLY: mime-dump,
     * message-log), which give none: their sessions stay byte for byte as
     * the server sent them */
    for (unsigned i = 0; i < s->mods->n; i++)
        if (gives_verdicts(s->mods, i) && s->mods->mods[i].cfg)
            s->lim.fx_hold = s->mods->mods[i].cfg->fx_hold_limit;
    s->lim.spill_at = (size_t)spill;
    s->lim.max_message = (uint64_t)max;
    s->lim.tmpdir = s->tmpdir[0] ? s->tmpdir : NULL;
}

static void asm_done(void *arg, const struct mp_msg_event *e);
static void asm_log(void *arg, const char *msg)
{
    struct msess *s = arg;
    mp_warn("session %u: %s", s->session ? (unsigned)mp_session_id(s->session) : 0u, msg);
}

static struct msess *session_state(struct mp_call *call)
{
    struct mp_session *ses = mp_call_session(call);
    void **slot = ses ? mp_ropstage_msgev_session(ses) : NULL;
    if (!slot)
        return NULL;
    if (*slot)
        return *slot;
    struct msess *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->mods = call->mods;
    s->session = ses;
    limits_from_modules(s);
    struct mp_asm_ops ops = {asm_done, asm_log, s};
    s->a = mp_asm_new(&s->lim, &ops);
    if (!s->a) {
        free(s);
        return NULL;
    }
    *slot = s;
    return s;
}

static void deliver_unbound(struct mp_message_event *ev);

void mp_msgev_session_free(void *state)
{
    struct msess *s = state;
    if (!s)
        return;
    s->freeing = true;
    s->cur = NULL;
    mp_asm_free(s->a); /* downloads still open: "session end" events */
    free(s->blocked);
    free(s->fetched);
    free(s);
}

static void **call_slot(struct mp_call *call)
{
    return mp_ropstage_msgev_call(call);
}

static struct mcall *call_state(struct mp_call *call, bool create)
{
    void **slot = call_slot(call);
    if (!slot)
        return NULL;
    if (!*slot && create)
        *slot = calloc(1, sizeof(struct mcall));
    return *slot;
}

void mp_msgev_call_free(void *state)
{
    struct mcall *c = state;
    if (!c)
        return;
    for (struct mp_message_event *ev = c->head, *n; ev; ev = n) {
        n = ev->next;
        ev_free(ev);
    }
    free(c);
}

/* ---- events from the assembler ---- */

static bool prefetch_skip(struct msess *s, const struct mp_msg_event *e);

static void asm_done(void *arg, const struct mp_msg_event *e)
{
    struct msess *s = arg;
    if (prefetch_skip(s, e))
        return;
    struct mp_message_event *ev = calloc(1, sizeof(*ev));
    if (!ev) {
        mp_warn("session %u: out of memory for a message event; message not delivered",
                s->session ? (unsigned)mp_session_id(s->session) : 0u);
        return;
    }
    ev->ms = s;
    ev->mods = s->mods;
    ev->lim = s->lim;
    copy_str(ev->tmpdir, sizeof(ev->tmpdir), s->tmpdir);
    ev->lim.tmpdir = ev->tmpdir[0] ? ev->tmpdir : NULL;
    ev->session = s->session;
    ev->dir = (enum mp_message_dir)e->dir;
    ev->mode = (enum mp_message_mode)e->mode;
    ev->folder_id = e->folder_id;
    ev->message_id = e->message_id;
    copy_str(ev->completed_by, sizeof(ev->completed_by), e->completed_by);
    ev->partial = e->partial;
    ev->at_request = e->at_request;
    ev->rop_index = e->rop_index;
    /* online downloads: the client has read it all; a block refuses later
     * opens of it in the session (doc/internals/module-api.md) */
    ev->can_block = (e->at_request && e->rop_index >= 0) ||
                    (e->mode == MP_MSG_ONLINE && e->dir == MP_MSG_DOWNLOAD && e->message_id);
    ev->fx = e->fx;
    ev->fx_in_buffer = e->fx_in_buffer;
    ev->fx_off = e->fx_off;
    ev->fx_len = e->fx_len;
    ev->fx_hdr_len = e->fx_hdr_len;
    /* an ICS download change whole in the response that completed it can be
     * replaced there (msgfx.c) */
    if (e->fx && e->dir == MP_MSG_DOWNLOAD && e->fx_in_buffer && !e->partial && e->rop_index >= 0)
        ev->can_block = true;
    /* a FastTransfer upload's edits would have to rewrite the stream */
    ev->can_modify = ev->can_block && ev->dir == MP_MESSAGE_UPLOAD && !e->partial && !e->fx &&
                     mp_msgev_edits_supported();
    if (s->prefetch == 1) { /* read before the client got RopOpenMessage's response */
        ev->prefetched = true;
        ev->can_block = ev->can_modify = true;
        copy_str(ev->completed_by, sizeof(ev->completed_by), "RopOpenMessage");
    }
    ev->fx_span = e->fx_span; /* a held download is re-encoded with its verdict */
    if (e->fx && e->dir == MP_MSG_DOWNLOAD && e->fx_span.held && e->rop_index >= 0)
        ev->can_block = ev->can_modify = true;
    /* a held FastTransfer upload is rewritten before it goes upstream */
    if (e->fx && e->dir == MP_MSG_UPLOAD && e->fx_span.held && e->at_request && e->rop_index >= 0)
        ev->can_block = ev->can_modify = true;
    ev->mime_fd = -1;
    ev->msg = e->msg;
    mp_msg_hold(ev->msg);
    copy_str(ev->user, sizeof(ev->user), s->user);
    copy_str(ev->peer, sizeof(ev->peer), s->peer);
    copy_str(ev->transport, sizeof(ev->transport), s->transport);
    struct mcall *c = s->cur && !s->freeing ? call_state(s->cur, true) : NULL;
    if (!c) { /* the session's end: no call to hold */
        ev->next_mod = ev->dir == MP_MESSAGE_UPLOAD ? 0 : (int)s->mods->n - 1;
        deliver_unbound(ev);
        return;
    }
    ev->call = s->cur;
    /* downloads in the response hooks (reverse order); uploads where they
     * completed (the request hooks when the ROP has not gone upstream) */
    ev->response_side = ev->dir == MP_MESSAGE_DOWNLOAD || s->cur_rsp;
    if (c->tail)
        c->tail->next = ev;
    else
        c->head = ev;
    c->tail = ev;
    c->last = ev;
}

static void note_call(struct msess *s, struct mp_call *call)
{
    const char *u = mp_ident_user(call); /* transparent mode: who the session saw */
    if (u && *u)
        copy_str(s->user, sizeof(s->user), u);
    copy_str(s->peer, sizeof(s->peer), mp_call_peer(call));
    copy_str(s->transport, sizeof(s->transport), mp_call_transport(call));
}

static bool is_blocked(const struct msess *s, uint64_t fid, uint64_t mid)
{
    for (size_t i = 0; i < s->nblocked; i++)
        if (s->blocked[i].mid == mid && s->blocked[i].fid == fid)
            return true;
    return false;
}

static void remember_block(struct msess *s, uint64_t fid, uint64_t mid)
{
    if (is_blocked(s, fid, mid) || s->nblocked >= 4096)
        return;
    struct blk *n = realloc(s->blocked, (s->nblocked + 1) * sizeof(*n));
    if (!n)
        return;
    s->blocked = n;
    n[s->nblocked++] = (struct blk){fid, mid};
}

/* RopOpenMessage of a blocked download: answered ecAccessDenied here. */
static void refuse_blocked(struct msess *s, struct mp_call *call)
{
    size_t n = s->nblocked ? mp_call_rop_count(call, false) : 0;
    for (size_t i = 0; i < n; i++) {
        const struct mp_rop_req_OpenMessage *q = mp_call_rop(call, false, i);
        if (q && mp_call_rop_id(call, false, i) == MP_ROP_OpenMessage &&
            is_blocked(s, q->FolderId, q->MessageId) &&
            !mp_call_rop_answer(call, i, EC_ACCESS_DENIED))
            mp_info("session %u: RopOpenMessage of blocked message 0x%016llx refused",
                    s->session ? (unsigned)mp_session_id(s->session) : 0u,
                    (unsigned long long)q->MessageId);
    }
}

static bool releases_only(struct mp_call *call)
{
    size_t n = mp_call_rop_count(call, false);
    for (size_t i = 0; i < n; i++)
        if (mp_call_rop_id(call, false, i) != MP_ROP_Release)
            return false;
    return n > 0;
}

void mp_msgev_request(struct mp_call *call)
{
    if (!mp_msgev_wanted(call->mods))
        return;
    struct msess *s = session_state(call);
    struct mcall *c = call_state(call, true);
    if (!s || !c)
        return;
    note_call(s, call);
    refuse_blocked(s, call);
    s->cur = call;
    s->cur_rsp = false;
    /* a buffer of RopRelease only gets no response ROPs: follow it now */
    c->releases_only = releases_only(call);
    if (c->releases_only)
        mp_asm_rops(s->a, call);
    else
        mp_asm_request(s->a, call);
    s->cur = NULL;
}

void mp_msgev_response(struct mp_call *call)
{
    if (!mp_msgev_wanted(call->mods))
        return;
    struct msess *s = session_state(call);
    struct mcall *c = call_state(call, true);
    if (!s || !c || c->releases_only)
        return;
    s->cur = call;
    s->cur_rsp = true;
    mp_asm_rops(s->a, call);
    s->cur = NULL;
}

struct mp_asm *mp_msgev_asm(struct mp_call *call, bool response)
{
    if (!mp_msgev_wanted(call->mods))
        return NULL;
    struct msess *s = session_state(call);
    if (!s || !call_state(call, true))
        return NULL;
    s->cur = call;
    s->cur_rsp = response;
    return s->a;
}

void mp_msgev_asm_end(struct mp_call *call)
{
    struct mp_session *ses = mp_call_session(call);
    void **slot = ses ? mp_ropstage_msgev_session(ses) : NULL;
    if (slot && *slot)
        ((struct msess *)*slot)->cur = NULL;
}

struct mp_message_event *mp_msgev_last(struct mp_call *call)
{
    struct mcall *c = call_state(call, false);
    return c ? c->last : NULL;
}

/* ---- delivery ---- */

static enum mp_status run_hook(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    ev->seen |= 1u << mc->index;
    ev->cur_mc = mc;
    enum mp_status st = mc->m->message(mc, ev);
    if (st == MP_PENDING) {
        ev->pending = true;
        return st;
    }
    if (st != MP_CONTINUE)
        mp_warn("module %s: message hook returned %d; taken as MP_CONTINUE", mc->name, (int)st);
    return MP_CONTINUE;
}

/* The events of the call's side that module mc has not seen. */
static enum mp_status deliver_call(struct mp_module_ctx *mc, struct mp_call *call, bool response)
{
    struct mcall *c = call_state(call, false);
    for (struct mp_message_event *ev = c ? c->head : NULL; ev; ev = ev->next) {
        if (ev->response_side != response || (ev->seen & (1u << mc->index)))
            continue;
        if (run_hook(mc, ev) == MP_PENDING) {
            c->pending_mc = mc;
            c->pending_rsp = response;
            return MP_PENDING;
        }
    }
    return MP_CONTINUE;
}

/* The module's own ROP hook of that side, when the call has ROPs there. */
static enum mp_status rop_hook_of(struct mp_module_ctx *mc, struct mp_call *call, bool response)
{
    mp_hook_fn h = response ? mc->m->rop_response : mc->m->rop_request;
    return h && mp_call_rop_count(call, response) ? h(mc, call) : MP_CONTINUE;
}

/* The side's message events first, then the ROP hook (after
 * mp_message_resume when a message hook held the call). */
static enum mp_status hook_common(struct mp_module_ctx *mc, struct mp_call *call, bool response)
{
    if (mc->m->message && deliver_call(mc, call, response) == MP_PENDING)
        return MP_PENDING;
    return rop_hook_of(mc, call, response);
}

static enum mp_status hook_request(struct mp_module_ctx *mc, struct mp_call *call)
{
    return hook_common(mc, call, false);
}

static enum mp_status hook_response(struct mp_module_ctx *mc, struct mp_call *call)
{
    return hook_common(mc, call, true);
}

mp_hook_fn mp_msgev_rop_hook(const struct mp_module *mod, bool response)
{
    mp_hook_fn h = response ? mod->rop_response : mod->rop_request;
    if (!h && !mod->message)
        return NULL;
    return response ? hook_response : hook_request;
}

size_t mp_msgev_count(struct mp_call *call, bool response)
{
    struct mcall *c = call_state(call, false);
    size_t n = 0;
    for (struct mp_message_event *ev = c ? c->head : NULL; ev; ev = ev->next)
        n += ev->response_side == response;
    return n;
}

/* Events of the session's end: every module with the hook, one after the
 * other (a pending one continues at mp_message_resume). */
static void deliver_unbound(struct mp_message_event *ev)
{
    struct mp_modules *ms = ev->mods;
    bool up = ev->dir == MP_MESSAGE_UPLOAD;
    while (up ? ev->next_mod < (int)ms->n : ev->next_mod >= 0) {
        int i = ev->next_mod;
        ev->next_mod += up ? 1 : -1;
        if (!has_hook(ms, (unsigned)i))
            continue;
        if (run_hook(&ms->mods[i], ev) == MP_PENDING) {
            ev->session = NULL; /* it ends as this returns */
            ev->ms = NULL;
            return;
        }
    }
    ev_free(ev);
}

void mp_message_resume(struct mp_message_event *ev)
{
    if (!ev || !ev->pending)
        return;
    ev->pending = false;
    if (!ev->call) {
        deliver_unbound(ev);
        return;
    }
    struct mp_call *call = ev->call;
    struct mcall *c = call_state(call, false);
    enum mp_status st = MP_CONTINUE;
    if (c && c->pending_mc) {
        if (deliver_call(c->pending_mc, call, c->pending_rsp) == MP_PENDING)
            return;
        /* then the module's ROP hook, as hook_common would have; if that
         * one holds the call, the module resumes it with mp_call_resume */
        if (call->owner)
            st = rop_hook_of(c->pending_mc, call, c->pending_rsp);
        c->pending_mc = NULL;
        if (st == MP_PENDING)
            return;
    }
    mp_call_resume(call, st);
}

/* ---- applying the verdicts ---- */

static void log_verdict(struct mp_message_event *ev)
{
    const struct mp_msgev_verdict *v = &ev->v;
    if (v->blocked)
        mp_info("session %u: %s %s message (folder 0x%016llx) blocked by %s: %s",
                ev->session ? (unsigned)mp_session_id(ev->session) : 0u,
                mp_message_mode_name(ev->mode), mp_message_dir_name(ev->dir),
                (unsigned long long)ev->folder_id, v->by, v->reason);
}

static int decide(struct mp_call *call, bool response)
{
    struct mcall *c = call_state(call, false);
    int rc = 0;
    for (struct mp_message_event *ev = c ? c->head : NULL; ev; ev = ev->next) {
        if (ev->response_side != response || ev->decided)
            continue;
        ev->decided = true;
        if (ev->on_decided)
            ev->on_decided(ev, &ev->v, ev->on_decided_arg);
        log_verdict(ev);
        if (ev->v.blocked && ev->mode == MP_MESSAGE_ONLINE && ev->dir == MP_MESSAGE_DOWNLOAD &&
            !ev->prefetched)
            remember_block(ev->ms, ev->folder_id, ev->message_id);
        if (response && ev->fx && ev->dir == MP_MESSAGE_DOWNLOAD && ev->fx_span.held) {
            if (!ev->ms || mp_msgfx_apply_held(ev->ms->a, &ev->fx_span, &ev->v))
                mp_warn("session %u: the verdict could not be applied in the FastTransfer "
                        "stream; message relayed unchanged",
                        ev->session ? (unsigned)mp_session_id(ev->session) : 0u);
            continue;
        }
        if (response && ev->fx && ev->dir == MP_MESSAGE_DOWNLOAD && ev->v.blocked) {
            if (mp_msgfx_block_download(call, ev->rop_index, ev->fx_off, ev->fx_len, ev->fx_hdr_len,
                                        ev->v.reason))
                mp_warn("session %u: the blocked message could not be replaced in its "
                        "FastTransfer stream; relayed unchanged",
                        ev->session ? (unsigned)mp_session_id(ev->session) : 0u);
            continue;
        }
        /* uploads completed before relay: online, ICS (ImportMessageChange +
         * the save) and FastTransfer (the PutBuffer with the last byte) */
        if (ev->dir != MP_MESSAGE_UPLOAD || response || ev->rop_index < 0)
            continue;
        bool held_up = ev->fx && ev->fx_span.held && ev->ms;
        if (held_up && ev->v.blocked) /* never sent upstream: cut from the held stream */
            mp_asm_up_block(ev->ms->a, &ev->fx_span, call, ev->rop_index);
        else if (held_up && mp_msgfx_apply_held(ev->ms->a, &ev->fx_span, &ev->v))
            mp_warn("session %u: the verdict could not be applied in the FastTransfer upload "
                    "stream; message relayed unchanged",
                    ev->session ? (unsigned)mp_session_id(ev->session) : 0u);
        if (ev->v.blocked) {
            if (mp_call_rop_answer(call, (size_t)ev->rop_index, EC_ACCESS_DENIED))
                mp_warn("session %u: cannot answer the blocked message's %s",
                        ev->session ? (unsigned)mp_session_id(ev->session) : 0u, ev->completed_by);
            continue;
        }
        if (!ev->fx && mp_msgev_apply_edits(call, ev->rop_index, ev->msg, &ev->v))
            rc = -1;
    }
    struct mp_session *ses = mp_call_session(call);
    void **slot = ses ? mp_ropstage_msgev_session(ses) : NULL;
    if (slot && *slot && response) /* held FastTransfer downloads: the client's buffers */
        mp_asm_emit(((struct msess *)*slot)->a, call);
    else if (slot && *slot) /* held FastTransfer uploads: what goes upstream */
        mp_asm_up_emit(((struct msess *)*slot)->a, call);
    return rc;
}

int mp_msgev_request_done(struct mp_call *call)
{
    return decide(call, false);
}

int mp_msgev_response_done(struct mp_call *call)
{
    return decide(call, true);
}

/* ---- the public API ---- */

const char *mp_message_dir_name(enum mp_message_dir d)
{
    return mp_msg_dir_name((enum mp_msg_dir)d);
}

const char *mp_message_mode_name(enum mp_message_mode m)
{
    return mp_msg_mode_name((enum mp_msg_mode)m);
}

enum mp_message_dir mp_message_event_dir(const struct mp_message_event *ev)
{
    return ev->dir;
}

enum mp_message_mode mp_message_event_mode(const struct mp_message_event *ev)
{
    return ev->mode;
}

struct mp_session *mp_message_event_session(struct mp_message_event *ev)
{
    return ev->session;
}

const char *mp_message_event_user(const struct mp_message_event *ev)
{
    return ev->user[0] ? ev->user : NULL;
}

const char *mp_message_event_peer(const struct mp_message_event *ev)
{
    return ev->peer;
}

const char *mp_message_event_transport(const struct mp_message_event *ev)
{
    return ev->transport;
}

uint64_t mp_message_event_folder_id(const struct mp_message_event *ev)
{
    return ev->folder_id;
}

uint64_t mp_message_event_message_id(const struct mp_message_event *ev)
{
    return ev->message_id;
}

#define TAG_CHANGE_KEY 0x65E20102u

const uint8_t *mp_message_event_change_key(const struct mp_message_event *ev, size_t *len)
{
    const struct mp_prop *p = mp_props_find(&ev->msg->props, TAG_CHANGE_KEY);
    if (!p || p->v.len > 256)
        return NULL;
    uint8_t *b = mp_message_event_alloc((struct mp_message_event *)ev, p->v.len + 1);
    if (!b || mp_blob_read(&p->v, 0, b, (size_t)p->v.len) != (long)p->v.len)
        return NULL;
    if (len)
        *len = (size_t)p->v.len;
    return b;
}

const char *mp_message_event_completed_by(const struct mp_message_event *ev)
{
    return ev->completed_by;
}

bool mp_message_event_partial(const struct mp_message_event *ev)
{
    return ev->partial;
}

const struct mp_message *mp_message_event_message(const struct mp_message_event *ev)
{
    return ev->msg;
}

int mp_message_event_mime_fd(struct mp_message_event *ev, uint64_t *size)
{
    if (!ev->mime_tried) {
        ev->mime_tried = true;
        static bool inited;
        if (!inited) {
            mp_mime_init(); /* once per process: GMime's global state */
            inited = true;
        }
        int fd = mp_private_tmpfile(ev->lim.tmpdir);
        if (fd < 0 || mp_mime_write(ev->msg, fd, (size_t)ev->lim.max_message)) {
            mp_warn("message event: MIME conversion failed (%s)",
                    fd < 0 ? strerror(errno) : "GMime");
            if (fd >= 0)
                close(fd);
        } else {
            struct stat st;
            if (fstat(fd, &st) || lseek(fd, 0, SEEK_SET)) {
                close(fd);
            } else {
                ev->mime_fd = fd;
                ev->mime_size = (uint64_t)st.st_size;
            }
        }
    }
    if (size)
        *size = ev->mime_fd >= 0 ? ev->mime_size : 0;
    return ev->mime_fd;
}

void *mp_message_event_alloc(struct mp_message_event *ev, size_t size)
{
    struct mem *m = calloc(1, sizeof(*m) + size);
    if (!m)
        return NULL;
    m->next = ev->mem;
    ev->mem = m;
    return m->data;
}

static const char *props_string(struct mp_message_event *ev, const struct mp_props *p, uint16_t id)
{
    struct mp_buf b = {0};
    if (mp_props_string(p, id, &b)) {
        mp_buf_free(&b);
        return NULL;
    }
    if (b.len && b.data[b.len - 1] == 0) /* NUL-terminated in out */
        b.len--;
    char *s = mp_message_event_alloc(ev, b.len + 1);
    if (s && b.len)
        memcpy(s, b.data, b.len);
    mp_buf_free(&b);
    return s;
}

const char *mp_message_string(struct mp_message_event *ev, const struct mp_message *m, uint16_t id)
{
    return props_string(ev, &m->props, id);
}

static bool fixed_type(uint16_t t)
{
    return t == MP_PT_I2 || t == MP_PT_LONG || t == MP_PT_R4 || t == MP_PT_DOUBLE ||
           t == MP_PT_CURRENCY || t == MP_PT_APPTIME || t == MP_PT_ERROR || t == MP_PT_BOOLEAN ||
           t == MP_PT_I8 || t == MP_PT_SYSTIME;
}

bool mp_message_number(const struct mp_message *m, uint32_t tag, uint64_t *v)
{
    uint64_t u;
    if (!fixed_type(tag & 0xFFFF) || !mp_props_u(&m->props, tag, &u))
        return false;
    if (v)
        *v = u;
    return true;
}

int64_t mp_message_bytes_size(const struct mp_message *m, uint32_t tag)
{
    const struct mp_prop *p = mp_props_find(&m->props, tag);
    if (!p)
        return -1;
    if (fixed_type(p->tag & 0xFFFF))
        return 8;
    return (int64_t)p->v.len;
}

long mp_message_bytes_read(const struct mp_message *m, uint32_t tag, uint64_t off, void *buf,
                           size_t n)
{
    const struct mp_prop *p = mp_props_find(&m->props, tag);
    if (!p)
        return -1;
    if (fixed_type(p->tag & 0xFFFF)) {
        uint8_t le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (uint8_t)(p->u >> (8 * i));
        if (off >= 8)
            return 0;
        size_t k = n < 8 - off ? n : (size_t)(8 - off);
        memcpy(buf, le + off, k);
        return (long)k;
    }
    return mp_blob_read(&p->v, off, buf, n);
}

size_t mp_message_prop_count(const struct mp_message *m)
{
    return m->props.n;
}

uint32_t mp_message_prop_tag(const struct mp_message *m, size_t i)
{
    return i < m->props.n ? m->props.v[i].tag : 0;
}

size_t mp_message_recipient_count(const struct mp_message *m)
{
    return m->nrcpt;
}

int mp_message_recipient(struct mp_message_event *ev, const struct mp_message *m, size_t i,
                         const char **display_name, const char **address)
{
    if (i >= m->nrcpt)
        return 0;
    const struct mp_props *p = &m->rcpt[i].props;
    if (display_name)
        *display_name = props_string(ev, p, MP_TAG_DISPLAY_NAME >> 16);
    if (address) {
        *address = props_string(ev, p, MP_TAG_SMTP_ADDRESS >> 16);
        if (!*address)
            *address = props_string(ev, p, MP_TAG_EMAIL_ADDRESS >> 16);
    }
    return m->rcpt[i].type;
}

size_t mp_message_attachment_count(const struct mp_message *m)
{
    return m->natt;
}

/* Attachment i in PidTagAttachNumber order. */
static const struct mp_attachment *att_at(const struct mp_message *m, size_t i)
{
    for (size_t k = 0; k < m->natt; k++) {
        size_t below = 0;
        for (size_t j = 0; j < m->natt; j++)
            below += m->att[j].num < m->att[k].num;
        if (below == i)
            return &m->att[k];
    }
    return NULL;
}

const char *mp_message_attachment_name(struct mp_message_event *ev, const struct mp_message *m,
                                       size_t i)
{
    const struct mp_attachment *a = att_at(m, i);
    if (!a)
        return NULL;
    const char *s = props_string(ev, &a->props, MP_TAG_ATTACH_LONG_FILENAME >> 16);
    return s ? s : props_string(ev, &a->props, MP_TAG_ATTACH_FILENAME >> 16);
}

const char *mp_message_attachment_mime_type(struct mp_message_event *ev, const struct mp_message *m,
                                            size_t i)
{
    const struct mp_attachment *a = att_at(m, i);
    return a ? props_string(ev, &a->props, MP_TAG_ATTACH_MIME_TAG >> 16) : NULL;
}

uint32_t mp_message_attachment_method(const struct mp_message *m, size_t i)
{
    const struct mp_attachment *a = att_at(m, i);
    uint64_t u = 0;
    if (!a)
        return 0;
    if (mp_props_u(&a->props, MP_TAG_ATTACH_METHOD, &u))
        return (uint32_t)u;
    return a->embedded ? MP_ATTACH_EMBEDDED : 0;
}

int64_t mp_message_attachment_size(const struct mp_message *m, size_t i)
{
    const struct mp_attachment *a = att_at(m, i);
    const struct mp_prop *p = a ? mp_props_find(&a->props, MP_TAG_ATTACH_DATA) : NULL;
    return p ? (int64_t)p->v.len : -1;
}

long mp_message_attachment_read(const struct mp_message *m, size_t i, uint64_t off, void *buf,
                                size_t n)
{
    const struct mp_attachment *a = att_at(m, i);
    const struct mp_prop *p = a ? mp_props_find(&a->props, MP_TAG_ATTACH_DATA) : NULL;
    return p ? mp_blob_read(&p->v, off, buf, n) : -1;
}

const struct mp_message *mp_message_attachment_embedded(const struct mp_message *m, size_t i)
{
    const struct mp_attachment *a = att_at(m, i);
    return a ? a->embedded : NULL;
}

/* ---- verdicts ---- */

/* A module that said MP_MODULE_OBSERVES_ONLY gives a verdict anyway: the
 * proxy may not have held the message for it, so it is ignored (the
 * verdict function returns -1), said once per module. */
static bool observer_verdict(struct mp_message_event *ev)
{
    struct mp_module_ctx *mc = ev->cur_mc;
    if (!mc || !mc->m || !(mc->m->flags & MP_MODULE_OBSERVES_ONLY))
        return false;
    if (!mc->verdict_warned) {
        mc->verdict_warned = true;
        mp_warn("module %s: gave a message verdict but its descriptor says "
                "MP_MODULE_OBSERVES_ONLY; ignored (this and any later one)",
                mc->name);
    }
    return true;
}

int mp_message_block(struct mp_message_event *ev, const char *reason)
{
    if (observer_verdict(ev) || !ev->can_block)
        return -1;
    if (!ev->v.blocked) {
        ev->v.blocked = true;
        copy_str(ev->v.reason, sizeof(ev->v.reason), reason ? reason : "blocked");
        for (char *p = ev->v.reason; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        copy_str(ev->v.by, sizeof(ev->v.by), ev->cur_mc ? ev->cur_mc->name : "?");
    }
    return 0;
}

bool mp_message_blocked(const struct mp_message_event *ev)
{
    return ev->v.blocked;
}

bool mp_message_can_modify(const struct mp_message_event *ev)
{
    return ev->can_modify;
}

int mp_message_replace_attachment(struct mp_message_event *ev, size_t i, const char *notice)
{
    const struct mp_attachment *a = att_at(ev->msg, i);
    if (observer_verdict(ev) || !ev->can_modify || !a)
        return -1;
    for (size_t k = 0; k < ev->v.natts; k++)
        if (ev->v.atts[k].index == i)
            return 0; /* the first verdict on it holds */
    struct mp_msgev_att *n = realloc(ev->v.atts, (ev->v.natts + 1) * sizeof(*n));
    if (!n)
        return -1;
    ev->v.atts = n;
    char *copy = notice ? strdup(notice) : NULL;
    if (notice && !copy)
        return -1;
    n[ev->v.natts++] = (struct mp_msgev_att){i, a->num, copy};
    return 0;
}

int mp_message_prefix_subject(struct mp_message_event *ev, const char *prefix)
{
    if (observer_verdict(ev) || !ev->can_modify || !prefix)
        return -1;
    size_t old = ev->v.prefix ? strlen(ev->v.prefix) : 0, n = strlen(prefix);
    char *p = malloc(old + n + 1);
    if (!p)
        return -1;
    /* a later module's prefix goes in front: it sees the subject as the
     * earlier ones left it */
    memcpy(p, prefix, n);
    if (old)
        memcpy(p + n, ev->v.prefix, old);
    p[old + n] = 0;
    free(ev->v.prefix);
    ev->v.prefix = p;
    return 0;
}

static int add_set(struct mp_message_event *ev, uint16_t id, const uint8_t *guid, const char *name,
                   const char *utf8)
{
    if (observer_verdict(ev) || !ev->can_modify || !utf8 || (!guid && (id == 0 || id >= 0x8000)))
        return -1;
    struct mp_msgev_set *n = realloc(ev->v.sets, (ev->v.nsets + 1) * sizeof(*n));
    if (!n)
        return -1;
    ev->v.sets = n;
    if (guid) { /* Exchange's id for it in this session, as the session showed it */
        int nid = ev->ms ? mp_asm_name_id(ev->ms->a, guid, name) : -1;
        if (nid < 0x8000 && ev->fx_span.held) /* a stream names it itself (msgfx.c) */
            nid = mp_msgfx_free_named_id(ev->msg, ev->v.sets, ev->v.nsets);
        if (nid < 0x8000)
            return -1;
        id = (uint16_t)nid;
    }
    struct mp_msgev_set s = {.id = id, .named = guid != NULL};
    if (guid)
        memcpy(s.guid, guid, 16);
    s.name = name ? strdup(name) : NULL;
    s.value = strdup(utf8);
    if (!s.value || (name && !s.name)) {
        free(s.name);
        free(s.value);
        return -1;
    }
    n[ev->v.nsets++] = s;
    return 0;
}

int mp_message_set_string(struct mp_message_event *ev, uint16_t id, const char *utf8)
{
    return add_set(ev, id, NULL, NULL, utf8);
}

int mp_message_set_binary(struct mp_message_event *ev, uint16_t id, const void *data, size_t n)
{
    if (observer_verdict(ev) || !ev->can_modify || id == 0 || id >= 0x8000 || (!data && n))
        return -1;
    struct mp_msgev_set *sets = realloc(ev->v.sets, (ev->v.nsets + 1) * sizeof(*sets));
    if (!sets)
        return -1;
    ev->v.sets = sets;
    struct mp_msgev_set s = {.id = id, .binary = true, .len = n, .value = malloc(n ? n : 1)};
    if (!s.value)
        return -1;
    if (n)
        memcpy(s.value, data, n);
    sets[ev->v.nsets++] = s;
    return 0;
}

int mp_message_set_named_string(struct mp_message_event *ev, const uint8_t guid[16],
                                const char *name, const char *utf8)
{
    if (!guid || !name)
        return -1;
    return add_set(ev, 0, guid, name, utf8);
}

int mp_msgev_name_id(struct mp_call *call, const uint8_t guid[16], const char *name)
{
    struct msess *s = mp_msgev_wanted(call->mods) ? session_state(call) : NULL;
    return s ? mp_asm_name_id(s->a, guid, name) : -1;
}

/* ---- for the online prefetch (msgonline.c) ---- */

/* The proxy's own read of a message (a side request's ROPs, in the view
 * mp_ropstage_side_view gives) into the session's assembler; cut: the
 * read was cut short, its message is dropped. */
void mp_msgev_prefetch_rops(struct mp_call *call, bool cut)
{
    if (!mp_msgev_wanted(call->mods))
        return;
    struct msess *s = session_state(call);
    if (!s || !call_state(call, true))
        return;
    s->cur = call;
    s->cur_rsp = true;
    s->prefetch = cut ? 2 : 1;
    mp_asm_rops(s->a, call);
    s->prefetch = 0;
    s->cur = NULL;
}

static bool prefetch_skip(struct msess *s, const struct mp_msg_event *e)
{
    if (e->mode != MP_MSG_ONLINE || e->dir != MP_MSG_DOWNLOAD || !e->message_id)
        return false;
    if (s->prefetch == 2)
        return true;
    bool seen = false;
    for (size_t i = 0; i < s->nfetched && !seen; i++)
        seen = s->fetched[i].fid == e->folder_id && s->fetched[i].mid == e->message_id;
    if (s->prefetch == 1) {
        if (!seen && s->nfetched < 4096) {
            struct blk *n = realloc(s->fetched, (s->nfetched + 1) * sizeof(*n));
            if (n) {
                s->fetched = n;
                n[s->nfetched++] = (struct blk){e->folder_id, e->message_id};
            }
        }
        return false;
    }
    return seen; /* the client's own read of a message the proxy read */
}

/* ---- for the FastTransfer code ---- */

const struct mp_msgev_verdict *mp_msgev_verdict(const struct mp_message_event *ev)
{
    return &ev->v;
}

void mp_msgev_set_caps(struct mp_message_event *ev, bool can_block, bool can_modify)
{
    ev->can_block = can_block;
    ev->can_modify = can_modify;
}

void mp_msgev_on_decided(struct mp_message_event *ev,
                         void (*cb)(struct mp_message_event *ev, const struct mp_msgev_verdict *v,
                                    void *arg),
                         void *arg)
{
    ev->on_decided = cb;
    ev->on_decided_arg = arg;
}
