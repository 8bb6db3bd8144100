#include "modules/runtime.h"
#include "modules/ropcall.h"
#include "modules/mailboxauth.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "dcerpc/ifaces.h"
#include "dcerpc/pdu.h"

#include "codec/codec.h"
#include "core/arena.h"
#include "core/json.h"
#define MP_HAVE_CODEC 1

#define MAX_RELAYS 4

extern const struct mp_module *const mp_builtin_modules[];

/* ------------------------------------------------------------------ */
/* loading                                                             */

static const struct mp_module *find_builtin(const char *name)
{
    for (size_t i = 0; mp_builtin_modules[i]; i++)
        if (!strcmp(mp_builtin_modules[i]->name, name))
            return mp_builtin_modules[i];
    return NULL;
}

/* The installed layout's module dir, relative to the directory of the
 * executable: PREFIX/sbin/mapiproxy -> PREFIX/lib/mapiproxy/modules (make
 * install, the Debian package).  A build may set another with -D. */
#ifndef MP_MODULE_SUBDIR
#define MP_MODULE_SUBDIR "../lib/mapiproxy/modules"
#endif

/* mapiproxy:module dir, else DIR-OF-EXECUTABLE/modules when that directory
 * exists (the build tree: build/modules), else
 * DIR-OF-EXECUTABLE/MP_MODULE_SUBDIR (an installed daemon). */
static void module_dir(const struct mp_config *cfg, char *out, size_t cap)
{
    if (cfg->module_dir[0]) {
        snprintf(out, cap, "%s", cfg->module_dir);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        snprintf(out, cap, "modules");
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0;
    int w = snprintf(out, cap, "%s/modules", exe);
    struct stat st;
    if (w > 0 && (size_t)w < cap && stat(out, &st) == 0 && S_ISDIR(st.st_mode))
        return;
    w = snprintf(out, cap, "%s/" MP_MODULE_SUBDIR, exe);
    if (w < 0 || (size_t)w >= cap)
        snprintf(out, cap, "modules");
}

static int add_want(struct mp_modules *ms, unsigned idx, const char *iface, uint32_t opnum)
{
    uint8_t uuid[16];
    struct mp_iface_spec spec;
    if (mp_iface_parse(iface, &spec) == 0)
        memcpy(uuid, spec.uuid, 16);
    else if (mp_uuid_parse(iface, uuid) != 0) {
        mp_error("module %s wants unknown interface \"%s\"; it must name a known interface "
                 "or a UUID",
                 ms->mods[idx].name, iface);
        return -1;
    }
    size_t k;
    for (k = 0; k < ms->n_wants; k++)
        if (!memcmp(ms->wants[k].uuid, uuid, 16) && ms->wants[k].opnum == opnum)
            break;
    if (k == ms->n_wants) {
        struct want *nw = realloc(ms->wants, (ms->n_wants + 1) * sizeof(*nw));
        if (!nw)
            return -1;
        ms->wants = nw;
        memcpy(nw[k].uuid, uuid, 16);
        nw[k].opnum = opnum;
        nw[k].mask = 0;
        ms->n_wants++;
    }
    ms->wants[k].mask |= 1u << idx;
    return 0;
}

static int add_wants(struct mp_modules *ms, unsigned idx)
{
    const struct mp_module *m = ms->mods[idx].m;
    for (const struct mp_module_want *w = m->wants; w && w->iface; w++)
        if (add_want(ms, idx, w->iface, w->opnum))
            return -1;
    /* ROP hooks: the calls that carry ROPs, and EcDoDisconnect, which ends
     * a context's server objects */
    if (m->rop_request || m->rop_response) {
        static const uint32_t ops[] = {1, 2, 11};
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
            if (add_want(ms, idx, "exchange_emsmdb", ops[i]))
                return -1;
    }
    return 0;
}

int mp_module_want(struct mp_module_ctx *mc, const char *iface, uint32_t opnum)
{
    return add_want(mc->owner, mc->index, iface, opnum);
}

static bool listed(const struct mp_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_modules; i++)
        if (!strcmp(cfg->modules[i], name))
            return true;
    return false;
}

const struct mp_module *mp_module_open(const struct mp_config *cfg, const char *name, void **dl,
                                       char *why, size_t wl)
{
    *dl = NULL;
    const struct mp_module *m = find_builtin(name);
    if (!m) {
        char dir[PATH_MAX], path[PATH_MAX + 80];
        module_dir(cfg, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/%s.so", dir, name);
        if (access(path, R_OK) != 0) {
            snprintf(why, wl,
                     "module %s: no built-in module of that name and no %s; check "
                     "dcerpc_mapiproxy:modules or mapiproxy:module dir",
                     name, path);
            return NULL;
        }
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            snprintf(why, wl, "module %s: cannot load %s: %s", name, path, dlerror());
            return NULL;
        }
        m = dlsym(h, "mp_module_descriptor");
        if (!m) {
            snprintf(why, wl,
                     "module %s: %s exports no mp_module_descriptor; is it a mapiproxy module?",
                     name, path);
            dlclose(h);
            return NULL;
        }
        *dl = h;
    }
    if (m->abi_version != MP_MODULE_ABI_VERSION)
        snprintf(why, wl,
                 "module %s was built for module ABI %u, this mapiproxy has ABI %u; rebuild "
                 "it against this include/mapiproxy/module.h",
                 name, m->abi_version, MP_MODULE_ABI_VERSION);
    else if (m->size < sizeof(struct mp_module))
        snprintf(why, wl,
                 "module %s: descriptor of %u bytes, expected %zu; rebuild it against this "
                 "include/mapiproxy/module.h",
                 name, m->size, sizeof(struct mp_module));
    else if (!m->name || strcmp(m->name, name))
        snprintf(why, wl,
                 "module %s: its descriptor names itself \"%s\"; the file name and the "
                 "name must match",
                 name, m->name ? m->name : "(null)");
    else
        return m;
    if (*dl)
        dlclose(*dl);
    *dl = NULL;
    return NULL;
}

int mp_modules_load(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop)
{
    memset(ms, 0, sizeof(*ms));
    ms->loop = loop;
    /* The effective chain: the rewrite module first when the proxy is not
     * transparent, then the configured modules, then trace for ndrdump,
     * then mailbox authorization under specified credentials. */
    const char *names[MP_MAX_MODULES + 4];
    size_t n_names = 0;
    if (!cfg->transparent && !listed(cfg, "rewrite"))
        names[n_names++] = "rewrite";
    for (size_t i = 0; i < cfg->n_modules; i++)
        names[n_names++] = cfg->modules[i];
    if (cfg->ndrdump && !listed(cfg, "trace"))
        names[n_names++] = "trace";
    /* last: it checks what goes upstream after every other module */
    if (mp_mailbox_auth_applies(cfg) && !listed(cfg, "mailboxauth"))
        names[n_names++] = "mailboxauth";
    if (n_names > MP_MAX_MODULES) {
        mp_error("%zu modules in the chain; at most %d can be loaded", n_names, MP_MAX_MODULES);
        return -1;
    }
    for (size_t i = 0; i < n_names; i++) {
        const char *name = names[i];
        struct mp_module_ctx *mc = &ms->mods[ms->n];
        memset(mc, 0, sizeof(*mc));
        snprintf(mc->name, sizeof(mc->name), "%s", name);
        mc->index = ms->n;
        mc->owner = ms;
        mc->cfg = cfg;
        mc->loop = loop;
        char why[PATH_MAX + 300];
        mc->m = mp_module_open(cfg, name, &mc->dl, why, sizeof why);
        if (!mc->m) {
            mp_error("%s", why);
            goto fail;
        }
        ms->n++;
        if (add_wants(ms, mc->index))
            goto fail;
        if (mc->m->init && mc->m->init(mc) != 0) {
            mp_error("module %s: initialization failed (see the lines above); fix its options "
                     "or remove it from dcerpc_mapiproxy:modules",
                     name);
            goto fail;
        }
        mc->initialized = true;
        mp_info("module %s loaded (%s)%s", name, mc->dl ? "shared object" : "built-in",
                mc->m->description ? "" : "");
    }
    return 0;
fail:
    mp_modules_unload(ms);
    return -1;
}

void mp_modules_unload(struct mp_modules *ms)
{
    for (unsigned i = ms->n; i-- > 0;) {
        struct mp_module_ctx *mc = &ms->mods[i];
        if (mc->initialized && mc->m->fini)
            mc->m->fini(mc);
        if (mc->dl)
            dlclose(mc->dl);
    }
    free(ms->wants);
    ms->wants = NULL;
    ms->n = 0;
    ms->n_wants = 0;
}

uint32_t mp_modules_want(const struct mp_modules *ms, const uint8_t uuid[16], uint16_t opnum)
{
    uint32_t mask = 0;
    for (size_t i = 0; i < ms->n_wants; i++)
        if ((ms->wants[i].opnum == MP_ALL_OPS || ms->wants[i].opnum == opnum) &&
            !memcmp(ms->wants[i].uuid, uuid, 16))
            mask |= ms->wants[i].mask;
    return mask;
}

/* ------------------------------------------------------------------ */
/* module context API                                                  */

const char *mp_module_name(const struct mp_module_ctx *mc)
{
    return mc->name;
}

const char *mp_module_option(const struct mp_module_ctx *mc, const char *key)
{
    char full[160];
    snprintf(full, sizeof(full), "%s:%s", mc->name, key);
    return mp_config_get(mc->cfg, full);
}

bool mp_module_option_bool(const struct mp_module_ctx *mc, const char *key, bool dflt)
{
    char full[160];
    snprintf(full, sizeof(full), "%s:%s", mc->name, key);
    return mp_config_get_bool(mc->cfg, full, dflt);
}

long mp_module_option_int(const struct mp_module_ctx *mc, const char *key, long dflt)
{
    char full[160];
    snprintf(full, sizeof(full), "%s:%s", mc->name, key);
    return mp_config_get_int(mc->cfg, full, dflt);
}

void *mp_module_private(const struct mp_module_ctx *mc)
{
    return mc->priv;
}

void mp_module_set_private(struct mp_module_ctx *mc, void *priv)
{
    mc->priv = priv;
}

void mp_module_log(const struct mp_module_ctx *mc, int level, const char *fmt, ...)
{
    if (level > mp_log_threshold)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mp_log_at(level, "module %s: %s", mc->name, msg);
}

struct after {
    struct mp_timer t;
    struct mp_loop *loop;
    void (*cb)(void *);
    void *arg;
};

static void after_fire(void *p)
{
    struct after *a = p;
    a->cb(a->arg);
    free(a);
}

static void after_cb(struct mp_timer *t)
{
    struct after *a = t->data;
    /* run outside the timer walk, then free */
    if (mp_loop_defer(a->loop, after_fire, a)) {
        a->cb(a->arg);
        free(a);
    }
}

int mp_module_after(struct mp_module_ctx *mc, uint64_t ms, void (*cb)(void *), void *arg)
{
    struct after *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    a->loop = mc->loop;
    a->cb = cb;
    a->arg = arg;
    a->t.cb = after_cb;
    a->t.data = a;
    mp_timer_arm(mc->loop, &a->t, ms);
    return 0;
}

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
    for (unsigned i = 0; s->mods && i < s->mods->n; i++) {
        struct slot *sl = &s->slots[i];
        struct mp_module_ctx *mc = &s->mods->mods[i];
        if (sl->data && mc->m->unbind)
            mc->m->unbind(mc, s, sl->data);
        if (sl->data && sl->dtor)
            sl->dtor(sl->data);
        sl->data = NULL;
    }
    mp_ropsess_free(s->rops);
    if (s->on_free)
        s->on_free(s);
    free(s);
}

uint32_t mp_session_id(const struct mp_session *s)
{
    return s->id;
}

/* ------------------------------------------------------------------ */
/* calls                                                               */

struct mp_call *mp_call_new(struct mp_modules *ms, const struct mp_call_host *host, uint32_t mask)
{
    struct mp_call *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->mods = ms;
    m->host = host;
    m->mask = mask;
    m->stop_idx = -1;
    m->fault = MP_RPC_S_CALL_FAILED;
    m->t0 = mp_now_us();
    return m;
}

static void drop_decoded(struct mp_call *m, bool req)
{
    if (req) {
        m->req_dec = NULL;
        m->req_tried = false;
        m->req_changed = false;
    } else {
        m->resp_dec = NULL;
        m->resp_tried = false;
        m->resp_changed = false;
    }
}

void mp_call_free(struct mp_call *m)
{
    if (!m)
        return;
    mp_ropcall_free(m);
    mp_buf_free(&m->req);
    mp_buf_free(&m->resp);
#ifdef MP_HAVE_CODEC
    if (m->arena) {
        mp_arena_free(m->arena);
        free(m->arena);
    }
#endif
    if (m->session)
        mp_session_unref(m->session);
    free(m);
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
const char *mp_call_user(const struct mp_call *m)
{
    return m->user[0] ? m->user : NULL;
}
void mp_call_set_origin(struct mp_call *m, const char *transport, const char *auth)
{
    m->transport = transport;
    m->auth = auth;
}
const char *mp_call_transport(const struct mp_call *m)
{
    return m->transport ? m->transport : "rpc";
}
const char *mp_call_auth(const struct mp_call *m)
{
    return m->auth ? m->auth : "pass-through";
}
struct mp_session *mp_call_session(struct mp_call *m)
{
    return m->session;
}
unsigned mp_call_relay_count(const struct mp_call *m)
{
    return m->relays;
}

const uint8_t *mp_call_request_stub(const struct mp_call *m, size_t *len)
{
    *len = mp_buf_avail(&m->req);
    return mp_buf_head(&m->req);
}

const uint8_t *mp_call_response_stub(const struct mp_call *m, size_t *len)
{
    *len = mp_buf_avail(&m->resp);
    return m->resp.data ? mp_buf_head(&m->resp) : NULL;
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
    drop_decoded(m, true);
    return set_stub(&m->req, stub, len);
}

int mp_call_set_response_stub(struct mp_call *m, const uint8_t *stub, size_t len)
{
    drop_decoded(m, false);
    return set_stub(&m->resp, stub, len);
}

#ifdef MP_HAVE_CODEC
struct mp_arena *mp_call_arena(struct mp_call *m)
{
    if (!m->arena) {
        m->arena = malloc(sizeof(*m->arena));
        if (m->arena)
            mp_arena_init(m->arena);
    }
    return m->arena;
}
#define call_arena mp_call_arena

static void *decode(struct mp_call *m, bool req)
{
    if (!m->codec)
        m->codec = mp_codec_find(m->iface_uuid, m->opnum);
    if (!m->codec || !call_arena(m))
        return NULL;
    size_t sz = req ? m->codec->in_size : m->codec->out_size;
    void *p = mp_arena_alloc(m->arena, sz ? sz : 1);
    if (!p)
        return NULL;
    struct mp_buf *b = req ? &m->req : &m->resp;
    int rc = req ? m->codec->pull_in(mp_buf_head(b), mp_buf_avail(b), p, m->arena)
                 : m->codec->pull_out(mp_buf_head(b), mp_buf_avail(b), p, m->arena);
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
    void *p = mp_arena_alloc(m->arena, m->codec->out_size ? m->codec->out_size : 1);
    if (p) {
        memset(p, 0, m->codec->out_size);
        m->resp_dec = p;
        m->resp_tried = true;
        m->resp_changed = true;
    }
    return p;
#else
    return NULL;
#endif
}

void mp_call_request_changed(struct mp_call *m)
{
    if (m->req_dec)
        m->req_changed = true;
}

void mp_call_response_changed(struct mp_call *m)
{
    if (m->resp_dec)
        m->resp_changed = true;
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
static int reencode(struct mp_call *m, bool req)
{
#ifdef MP_HAVE_CODEC
    bool changed = req ? m->req_changed : m->resp_changed;
    void *dec = req ? m->req_dec : m->resp_dec;
    if (!changed || !dec || !m->codec)
        return 0;
    struct mp_buf n = {0};
    int rc = req ? m->codec->push_in(&n, dec) : m->codec->push_out(&n, dec);
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

/* ------------------------------------------------------------------ */
/* the chain                                                           */

typedef enum mp_status (*hook_fn)(struct mp_module_ctx *, struct mp_call *);

static hook_fn stage_hook(const struct mp_module *mod, enum mp_call_stage st)
{
    switch (st) {
    case MPC_NDR_PULL:
        return mod->ndr_pull;
    case MPC_PULL:
        return mod->pull;
    case MPC_ROP_REQ:
        return mod->rop_request;
    case MPC_ROP_RSP:
        return mod->rop_response;
    case MPC_DISPATCH:
        return mod->dispatch;
    case MPC_NDR_PUSH:
        return mod->ndr_push;
    case MPC_PUSH:
        return mod->push;
    default:
        return NULL;
    }
}

static const char *stage_name(enum mp_call_stage st)
{
    static const char *const n[] = {"ndr_pull", "pull",     "rop_request",  "dispatch",
                                    "upstream", "ndr_push", "rop_response", "push"};
    return n[st];
}

static void finish_fault(struct mp_call *m, const char *why)
{
    mp_warn("call %s %s %s(%u): %s; fault 0x%08x to the client", mp_call_peer(m), m->iface,
            m->op_name ? m->op_name : "op", m->opnum, why, m->fault);
    if (m->owner)
        m->host->fault(m);
    m->host->done(m);
}

static void finish_answer(struct mp_call *m)
{
    if (reencode(m, false)) {
        m->fault = MP_NCA_S_FAULT_NDR;
        finish_fault(m, "a module's response does not encode");
        return;
    }
    if (!m->resp.data && m->stop_idx >= 0 && m->fault_set) { /* answered with a fault */
        mp_debug("call %s %s(%u): answered by module %s with fault 0x%08x", mp_call_peer(m),
                 m->op_name ? m->op_name : m->iface, m->opnum, m->mods->mods[m->stop_idx].name,
                 m->fault);
        if (m->owner)
            m->host->fault(m);
        m->host->done(m);
        return;
    }
    if (!m->resp.data) {
        finish_fault(m, "a module answered the call without a response");
        return;
    }
    if (m->owner)
        m->host->answer(m);
    m->host->done(m);
}

static void run(struct mp_call *m, int resumed);

/* Does a module of this call have ROP hooks, and does the call carry ROPs? */
static bool rop_modules(const struct mp_call *m)
{
    for (unsigned i = 0; i < m->mods->n; i++) {
        const struct mp_module *mod = m->mods->mods[i].m;
        if ((m->mask & (1u << i)) && (mod->rop_request || mod->rop_response))
            return mp_ropcall_applies(m) || m->opnum == 1;
    }
    return false;
}

static void send_upstream(struct mp_call *m)
{
    if (reencode(m, true)) {
        m->fault = MP_NCA_S_FAULT_NDR;
        finish_fault(m, "a module's request does not encode");
        return;
    }
    m->stage = MPC_UPSTREAM;
    m->relays++;
    mp_buf_free(&m->resp);
    drop_decoded(m, false);
    mp_ropcall_reset_response(m);
    if (m->owner)
        m->host->relay(m);
    m->running = false;
    if (!m->owner) /* gone, possibly while relaying */
        m->host->done(m);
}

/* Runs hooks from (m->stage, m->idx) on.  `resumed` is the status of the
 * hook that was pending, or -1 when starting fresh. */
static void run(struct mp_call *m, int resumed)
{
    struct mp_modules *ms = m->mods;
    int carried = resumed;
    m->running = true;
    for (;;) {
        bool response = m->stage >= MPC_NDR_PUSH;
        int last = m->stop_idx >= 0 ? m->stop_idx : (int)ms->n - 1;
        while (response ? m->idx >= 0 : m->idx <= last) {
            int i = m->idx;
            enum mp_status st;
            if (carried >= 0) {
                st = (enum mp_status)carried;
                carried = -1;
            } else {
                hook_fn h = (m->mask & (1u << i)) ? stage_hook(ms->mods[i].m, m->stage) : NULL;
                if (h && (m->stage == MPC_ROP_REQ || m->stage == MPC_ROP_RSP) &&
                    !mp_call_rop_count(m, m->stage == MPC_ROP_RSP))
                    h = NULL; /* no ROPs (not a ROP call, or they do not decode) */
                if (!h) {
                    m->idx += response ? -1 : 1;
                    continue;
                }
                st = h(&ms->mods[i], m);
            }
            switch (st) {
            case MP_CONTINUE:
                break;
            case MP_STOP:
                if (response)
                    break; /* already answered: nothing to stop */
                m->stop_idx = i;
                mp_debug("call %s %s: module %s answered it (%s); not relayed", mp_call_peer(m),
                         m->op_name ? m->op_name : m->iface, ms->mods[i].name,
                         stage_name(m->stage));
                reencode(m, false);
                m->stage = MPC_NDR_PUSH;
                m->idx = i;
                goto next_round;
            case MP_ERROR: {
                char why[160];
                snprintf(why, sizeof(why), "module %s failed in %s", ms->mods[i].name,
                         stage_name(m->stage));
                finish_fault(m, why);
                return;
            }
            case MP_PENDING:
                m->pending = true;
                m->running = false;
                return;
            case MP_RELAY_AGAIN:
                if (response && m->stop_idx < 0) {
                    if (m->relays >= MAX_RELAYS) {
                        mp_warn("call %s: module %s asked to relay again after %u relays; "
                                "refused",
                                mp_call_peer(m), ms->mods[i].name, m->relays);
                        break;
                    }
                    mp_debug("call %s: module %s relays the request again", mp_call_peer(m),
                             ms->mods[i].name);
                    send_upstream(m);
                    return;
                }
                break;
            default: {
                char why[160];
                snprintf(why, sizeof(why), "module %s returned unknown status %d in %s",
                         ms->mods[i].name, (int)st, stage_name(m->stage));
                finish_fault(m, why);
                return;
            }
            }
            m->idx += response ? -1 : 1;
        }
        /* stage done */
        switch (m->stage) {
        case MPC_NDR_PULL:
            m->stage++;
            m->idx = 0;
            break;
        case MPC_PULL:
            m->stage = MPC_ROP_REQ;
            m->idx = 0;
            if (rop_modules(m))
                mp_ropcall_request(m);
            break;
        case MPC_ROP_REQ: {
            int st = rop_modules(m) ? mp_ropcall_request_done(m) : 0;
            if (st < 0) {
                m->fault = MP_NCA_S_FAULT_NDR;
                finish_fault(m, "the ROPs as modules changed them do not encode");
                return;
            }
            if (st == 1) { /* every ROP answered by modules: nothing goes upstream */
                m->stop_idx = (int)ms->n - 1;
                reencode(m, false);
                m->stage = MPC_NDR_PUSH;
                m->idx = m->stop_idx;
                break;
            }
            m->stage = MPC_DISPATCH;
            m->idx = 0;
            break;
        }
        case MPC_DISPATCH:
            if (rop_modules(m))
                mp_ropcall_disconnect(m);
            send_upstream(m);
            return;
        case MPC_NDR_PUSH:
            m->stage = MPC_ROP_RSP;
            m->idx = m->stop_idx >= 0 ? m->stop_idx : (int)ms->n - 1;
            if (rop_modules(m))
                mp_ropcall_response(m);
            break;
        case MPC_ROP_RSP:
            if (rop_modules(m) && mp_ropcall_response_done(m)) {
                m->fault = MP_NCA_S_FAULT_NDR;
                finish_fault(m, "the ROP response as modules changed it does not encode");
                return;
            }
            m->stage = MPC_PUSH;
            m->idx = m->stop_idx >= 0 ? m->stop_idx : (int)ms->n - 1;
            break;
        case MPC_PUSH:
            finish_answer(m);
            return;
        default:
            m->running = false;
            return;
        }
    next_round:;
    }
}

void mp_call_run_request(struct mp_call *m)
{
    m->stage = MPC_NDR_PULL;
    m->idx = 0;
    run(m, -1);
}

void mp_call_run_response(struct mp_call *m)
{
    m->stage = MPC_NDR_PUSH;
    m->idx = (int)m->mods->n - 1;
    run(m, -1);
}

void mp_call_resume(struct mp_call *m, enum mp_status status)
{
    if (!m->pending)
        return;
    m->pending = false;
    if (!m->owner) { /* the client went away meanwhile */
        m->host->done(m);
        return;
    }
    run(m, (int)status);
}
