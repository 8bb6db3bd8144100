/* The call and the session: what a transport hands the module chain, and
 * the module API's accessors on them (include/mapiproxy/module.h).  See
 * doc/internals/architecture.md ("Call and chain"). */
#include "chain/chain.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/services.h"
#include "codec/codec.h"
#include "codec/ndr_rt.h"
#include "core/arena.h"
#include "core/json.h"
#include "core/log.h"
#include "dcerpc/pdu.h"
#define MP_HAVE_CODEC 1

/* ------------------------------------------------------------------ */
/* sessions                                                            */

struct mp_session *mp_session_new(struct mp_modules *ms)
{
    struct mp_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->refs = 1;
    s->mods = ms;
    return s;
}

void *mp_session_data(struct mp_session *s, const struct mp_module_ctx *mc)
{
    return s->slots[mc->index].data;
}

int mp_session_set_data(struct mp_session *s, const struct mp_module_ctx *mc, void *data,
                        void (*destructor)(void *))
{
    struct slot *sl = &s->slots[mc->index];
    if (sl->data && sl->dtor && sl->data != data)
        sl->dtor(sl->data);
    sl->data = data;
    sl->dtor = destructor;
    return 0;
}

void mp_session_ref(struct mp_session *s)
{
    s->refs++;
}

void mp_session_unref(struct mp_session *s)
{
    if (!s || --s->refs)
        return;
    /* the stages' session state first (the ROP stage's object tables: the
     * objects' context_gone events and their data before unbind) */
    for (unsigned k = 0; s->mods && k < s->mods->n_stages; k++)
        if (s->stage_ctx[k]) {
            s->mods->stages[k].p->session_free(s->stage_ctx[k]);
            s->stage_ctx[k] = NULL;
        }
    for (unsigned i = 0; s->mods && i < s->mods->n; i++) {
        struct slot *sl = &s->slots[i];
        struct mp_module_ctx *mc = &s->mods->mods[i];
        if (sl->data && mc->m->unbind)
            mc->m->unbind(mc, s, sl->data);
        if (sl->data && sl->dtor)
            sl->dtor(sl->data);
        sl->data = NULL;
    }
    if (s->on_free)
        s->on_free(s);
    free(s);
}

uint32_t mp_session_id(const struct mp_session *s)
{
    return s->id;
}

unsigned mp_call_sid(struct mp_call *m)
{
    struct mp_session *s = mp_call_session(m);
    return s ? (unsigned)s->id : 0u;
}

/* ------------------------------------------------------------------ */
/* calls                                                               */

/* The stage providers that take part in a call of (uuid, opnum) that
 * modules `mask` want. */
static uint32_t call_stages(const struct mp_modules *ms, uint32_t mask, const uint8_t uuid[16],
                            uint16_t opnum)
{
    uint32_t on = 0;
    for (unsigned k = 0; k < ms->n_stages; k++) {
        const struct mp_stage_use *u = &ms->stages[k];
        if (!(u->modmask & mask) || memcmp(u->uuid, uuid, 16))
            continue;
        for (size_t i = 0; i < u->p->n_ops; i++)
            if (u->p->ops[i] == opnum)
                on |= 1u << k;
    }
    return on;
}

static _Atomic uint64_t call_serial; /* every worker's calls: mp_call_serial */

uint64_t mp_call_serial(const struct mp_call *m)
{
    return m->serial;
}

/* s (NULL: "") into out[cap], cut to fit and NUL-terminated, as
 * snprintf("%s") would, without its formatting machinery (per call) */
static void copy_cut(char *out, size_t cap, const char *s)
{
    size_t n = s ? strnlen(s, cap - 1) : 0;
    memcpy(out, s ? s : "", n);
    out[n] = 0;
}

struct mp_call *mp_call_new(struct mp_modules *ms, uint32_t mask, const struct mp_call_origin *o)
{
    size_t extra = o->ctx_size ? (o->ctx_size + 15) & ~(size_t)15 : 0;
    size_t cap; /* the thread's cached memory (core/buf.h): no malloc per call */
    struct mp_call *m = mp_buf_take(sizeof(*m) + extra, &cap);
    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m) + extra);
    m->alloc_cap = cap;
    m->mods = ms;
    m->host = o->host;
    m->owner = o->owner;
    m->host_ctx = o->ctx_size ? (void *)(m + 1) : o->ctx;
    m->mask = mask;
    m->stop_idx = -1;
    m->fault = MP_RPC_S_CALL_FAILED;
    m->t0 = mp_now_us();
    m->serial = atomic_fetch_add_explicit(&call_serial, 1, memory_order_relaxed) + 1;
    memcpy(m->iface_uuid, o->iface_uuid, 16);
    copy_cut(m->iface, sizeof(m->iface), o->iface);
    m->opnum = o->opnum;
    m->op_name = o->op_name;
    copy_cut(m->peer, sizeof(m->peer), o->peer);
    m->transport = o->transport;
    m->auth = o->auth;
    if (o->user && *o->user) {
        copy_cut(m->user, sizeof(m->user), o->user);
        m->proxy_identity = o->proxy_identity;
    }
    if (o->session) {
        m->session = o->session;
        mp_session_ref(o->session);
    }
    m->stages = call_stages(ms, mask, m->iface_uuid, m->opnum);
    return m;
}

void **mp_call_stage_slot(struct mp_call *m, const struct mp_stage_provider *p)
{
    for (unsigned k = 0; k < m->mods->n_stages; k++)
        if (m->mods->stages[k].p == p)
            return &m->stage_ctx[k];
    return NULL;
}

void **mp_session_stage_slot(struct mp_session *s, const struct mp_stage_provider *p)
{
    for (unsigned k = 0; s->mods && k < s->mods->n_stages; k++)
        if (s->mods->stages[k].p == p)
            return &s->stage_ctx[k];
    return NULL;
}

void mp_call_drop_decoded(struct mp_call *m, bool req)
{
    if (req) {
        m->req_dec = NULL;
        m->req_tried = false;
        m->req_changed = false;
        m->req_given = false;
    } else {
        m->resp_dec = NULL;
        m->resp_tried = false;
        m->resp_changed = false;
        m->resp_given = false;
    }
}

#ifdef MP_HAVE_CODEC
/* The last calls' arenas, reset, for the thread's next calls: a decoded
 * call (decode+re-encode: chunks of 4 to 64 KiB) then costs no malloc and
 * free of its chunks, and no heap consolidation on freeing the large one.
 * Many: with many calls in flight on a worker (each holds its arena while
 * the upstream answers; 256 clients of make bench), the calls ending in
 * one turn of the loop leave theirs for the calls starting in the next
 * (with 16, a third of the calls at 256 clients still took new chunks). */
#define SPARE_ARENAS 256
#define SPARE_LARGE ((size_t)64 << 10)
static _Thread_local struct mp_arena *spare_arena[SPARE_ARENAS];
static _Thread_local unsigned n_spare;

static void arena_put(struct mp_arena *a)
{
    mp_arena_reset(a);
    /* past the first few, only arenas of an ordinary call's size (a burst
     * of large calls leaves no tens of MiB behind) */
    if (n_spare == SPARE_ARENAS || (n_spare >= 16 && mp_arena_held(a) > SPARE_LARGE)) {
        mp_arena_free(a);
        free(a);
        return;
    }
    spare_arena[n_spare++] = a;
}
#endif

void mp_call_cache_release(void)
{
#ifdef MP_HAVE_CODEC
    while (n_spare) {
        struct mp_arena *a = spare_arena[--n_spare];
        mp_arena_free(a);
        free(a);
    }
#endif
}

void mp_call_free(struct mp_call *m)
{
    if (!m)
        return;
    for (unsigned k = 0; k < m->mods->n_stages; k++)
        if (m->stage_ctx[k]) {
            m->mods->stages[k].p->call_free(m, m->stage_ctx[k]);
            m->stage_ctx[k] = NULL;
        }
    mp_buf_free(&m->req);
    mp_buf_free(&m->resp);
#ifdef MP_HAVE_CODEC
    if (m->arena)
        arena_put(m->arena);
#endif
    if (m->session)
        mp_session_unref(m->session);
    mp_buf_give(m, m->alloc_cap);
}

const char *mp_call_iface(const struct mp_call *m)
{
    return m->iface;
}
uint16_t mp_call_opnum(const struct mp_call *m)
{
    return m->opnum;
}
const char *mp_call_op_name(const struct mp_call *m)
{
    return m->op_name;
}
const char *mp_call_peer(const struct mp_call *m)
{
    return m->peer;
}
const char *mp_call_transport(const struct mp_call *m)
{
    return m->transport ? m->transport : "rpc";
}
const char *mp_call_auth(const struct mp_call *m)
{
    return m->auth ? m->auth : "pass-through";
}
const char *mp_call_user(const struct mp_call *m)
{
    return m->user[0] ? m->user : NULL;
}
struct mp_session *mp_call_session(struct mp_call *m)
{
    return m->session;
}
unsigned mp_call_relay_count(const struct mp_call *m)
{
    return m->relays;
}

/* The raw form is derived on demand from a decoded form that is newer (a
 * module changed it, or the transport gave only the decoded form: MAPI/HTTP),
 * so the API's const accessors may write the call's stub. */
static const struct mp_buf *fresh_stub(const struct mp_call *cm, bool req)
{
    struct mp_call *m = (struct mp_call *)cm; /* calls are never const objects */
    if ((req ? m->req_changed : m->resp_changed) && mp_call_reencode(m, req)) {
        mp_debug("call %s %s: the %s does not encode as NDR; raw hooks see none", m->peer,
                 m->op_name ? m->op_name : m->iface, req ? "request" : "response");
        return NULL;
    }
    return req ? &m->req : &m->resp;
}

const uint8_t *mp_call_request_stub(const struct mp_call *m, size_t *len)
{
    const struct mp_buf *b = fresh_stub(m, true);
    *len = b ? mp_buf_avail(b) : 0;
    return b && b->data ? mp_buf_head(b) : NULL;
}

const uint8_t *mp_call_response_stub(const struct mp_call *m, size_t *len)
{
    const struct mp_buf *b = fresh_stub(m, false);
    *len = b ? mp_buf_avail(b) : 0;
    return b && b->data ? mp_buf_head(b) : NULL;
}

void mp_call_set_decoded(struct mp_call *m, bool response, void *dec)
{
    if (!m->codec)
        m->codec = mp_codec_find(m->iface_uuid, m->opnum);
    if (response) {
        mp_buf_free(&m->resp);
        m->resp_dec = dec;
        m->resp_tried = true;
        m->resp_changed = dec != NULL; /* the raw form is made when asked for */
        m->resp_modified = false;
        m->resp_given = dec != NULL;
    } else {
        mp_buf_free(&m->req);
        m->req_dec = dec;
        m->req_tried = true;
        m->req_changed = dec != NULL;
        m->req_modified = false;
        m->req_given = dec != NULL;
    }
}

static int set_stub(struct mp_buf *b, const uint8_t *stub, size_t len)
{
    struct mp_buf n = {0};
    if (mp_buf_append(&n, stub, len))
        return -1;
    mp_buf_free(b);
    *b = n;
    return 0;
}

int mp_call_set_request_stub(struct mp_call *m, const uint8_t *stub, size_t len)
{
    mp_call_drop_decoded(m, true);
    m->req_modified = true;
    return set_stub(&m->req, stub, len);
}

int mp_call_set_response_stub(struct mp_call *m, const uint8_t *stub, size_t len)
{
    mp_call_drop_decoded(m, false);
    m->resp_modified = true;
    return set_stub(&m->resp, stub, len);
}

#ifdef MP_HAVE_CODEC
struct mp_arena *mp_call_arena(struct mp_call *m)
{
    if (!m->arena && n_spare) {
        m->arena = spare_arena[--n_spare];
    } else if (!m->arena) {
        m->arena = malloc(sizeof(*m->arena));
        if (m->arena)
            mp_arena_init(m->arena);
    }
    return m->arena;
}
#define call_arena mp_call_arena

/* A decoded structure sits in the arena right after the wire details of
 * its stub (the public structures have no room for them): byte-exact
 * re-encoding of what modules left unchanged. */
static void *dec_alloc(struct mp_arena *a, size_t sz)
{
    uint8_t *p = mp_arena_alloc(a, sizeof(struct mp_ndr_wire) + (sz ? sz : 1));
    if (!p)
        return NULL;
    memset(p, 0, sizeof(struct mp_ndr_wire) + sz);
    return p + sizeof(struct mp_ndr_wire);
}

static struct mp_ndr_wire *dec_wire(void *dec)
{
    return (struct mp_ndr_wire *)(void *)((uint8_t *)dec - sizeof(struct mp_ndr_wire));
}

static void *decode(struct mp_call *m, bool req)
{
    if (!m->codec)
        m->codec = mp_codec_find(m->iface_uuid, m->opnum);
    if (!m->codec || !call_arena(m))
        return NULL;
    size_t sz = req ? m->codec->in_size : m->codec->out_size;
    void *p = dec_alloc(m->arena, sz);
    if (!p)
        return NULL;
    struct mp_buf *b = req ? &m->req : &m->resp;
    int rc = req ? m->codec->pull_in_w(mp_buf_head(b), mp_buf_avail(b), p, m->arena, dec_wire(p))
                 : m->codec->pull_out_w(mp_buf_head(b), mp_buf_avail(b), p, m->arena, dec_wire(p));
    if (rc) {
        mp_debug("call %s %s: %s stub does not decode; modules see it raw only", m->peer,
                 m->codec->name, req ? "request" : "response");
        return NULL;
    }
    return p;
}
#endif

void *mp_call_request(struct mp_call *m)
{
#ifdef MP_HAVE_CODEC
    if (!m->req_tried) {
        m->req_tried = true;
        m->req_dec = decode(m, true);
    }
#endif
    return m->req_dec;
}

void *mp_call_response(struct mp_call *m)
{
#ifdef MP_HAVE_CODEC
    if (!m->resp_tried && m->resp.data) {
        m->resp_tried = true;
        m->resp_dec = decode(m, false);
    }
#endif
    return m->resp_dec;
}

void *mp_call_new_response(struct mp_call *m)
{
#ifdef MP_HAVE_CODEC
    if (!m->codec)
        m->codec = mp_codec_find(m->iface_uuid, m->opnum);
    if (!m->codec || !call_arena(m))
        return NULL;
    void *p = dec_alloc(m->arena, m->codec->out_size);
    if (p) {
        m->resp_dec = p;
        m->resp_tried = true;
        m->resp_changed = true;
        m->resp_modified = true;
        m->resp_given = false;
    }
    return p;
#else
    return NULL;
#endif
}

void mp_call_request_changed(struct mp_call *m)
{
    if (m->req_dec)
        m->req_changed = m->req_modified = true;
}

void mp_call_response_changed(struct mp_call *m)
{
    if (m->resp_dec)
        m->resp_changed = m->resp_modified = true;
}

bool mp_call_has_response(const struct mp_call *m)
{
    return m->resp.data || m->resp_dec;
}

void *mp_call_alloc(struct mp_call *m, size_t size)
{
#ifdef MP_HAVE_CODEC
    return call_arena(m) ? mp_arena_alloc(m->arena, size) : NULL;
#else
    (void)m;
    (void)size;
    return NULL;
#endif
}

char *mp_call_strdup(struct mp_call *m, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = mp_call_alloc(m, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

void mp_call_fault(struct mp_call *m, uint32_t status)
{
    m->fault = status;
    m->fault_set = true;
}

const char *mp_call_json(struct mp_call *m, bool response)
{
    void *dec = response ? mp_call_response(m) : mp_call_request(m);
    if (!dec || !m->codec)
        return NULL;
    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    if (response)
        m->codec->print_out(&j, dec);
    else
        m->codec->print_in(&j, dec);
    char *out = NULL;
    if (!j.err && mp_buf_append(&b, "", 1) == 0) {
        out = mp_call_alloc(m, b.len);
        if (out)
            memcpy(out, b.data, b.len);
    }
    mp_buf_free(&b);
    return out;
}

/* Re-encodes a changed decoded request/response into its stub. */
int mp_call_reencode(struct mp_call *m, bool req)
{
#ifdef MP_HAVE_CODEC
    bool changed = req ? m->req_changed : m->resp_changed;
    void *dec = req ? m->req_dec : m->resp_dec;
    if (!changed || !dec || !m->codec)
        return 0;
    /* A structure the transport gave (MAPI/HTTP: decoded from the body,
     * mp_call_set_decoded) has no wire details before it: it gets the
     * canonical encoding. */
    static const struct mp_ndr_wire canonical;
    bool given = req ? m->req_given : m->resp_given;
    const struct mp_ndr_wire *w = given ? &canonical : dec_wire(dec);
    struct mp_buf n = {0};
    int rc = req ? m->codec->push_in_w(&n, dec, w) : m->codec->push_out_w(&n, dec, w);
    if (rc) {
        mp_buf_free(&n);
        return -1;
    }
    struct mp_buf *b = req ? &m->req : &m->resp;
    mp_buf_free(b);
    *b = n;
    if (req)
        m->req_changed = false;
    else
        m->resp_changed = false;
#else
    (void)m;
    (void)req;
#endif
    return 0;
}
