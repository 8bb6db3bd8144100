/* The module loader: the effective chain from the configuration, built-ins
 * and shared objects, their wants, and the module context API. */
#include "chain/chain.h"
#include "chain/msgevents.h"
#include "chain/services.h"

#include "auth/mailboxauth.h"

#include <dlfcn.h>
#include <stddef.h>
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

/* The build tree's module dir beside the executable: build/modules for
 * build/mapiproxy; the sanitizer build sets "asan/modules", so
 * build/mapiproxy-asan loads modules built with the same sanitizers. */
#ifndef MP_BUILD_MODULE_SUBDIR
#define MP_BUILD_MODULE_SUBDIR "modules"
#endif

/* mapiproxy:module dir, else DIR-OF-EXECUTABLE/MP_BUILD_MODULE_SUBDIR when
 * that directory exists (the build tree), else
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
    int w = snprintf(out, cap, "%s/" MP_BUILD_MODULE_SUBDIR, exe);
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
    /* Stage providers' hooks (rop_request, rop_response): the provider's
     * interface and operations */
    for (unsigned k = 0; k < ms->n_stages; k++) {
        struct mp_stage_use *u = &ms->stages[k];
        if (u->p->uses ? !u->p->uses(m) : (!u->p->hook(m, false) && !u->p->hook(m, true)))
            continue;
        u->modmask |= 1u << idx;
        for (size_t i = 0; i < u->p->n_ops; i++)
            if (add_want(ms, idx, u->p->iface, u->p->ops[i]))
                return -1;
    }
    return 0;
}

int mp_module_want(struct mp_module_ctx *mc, const char *iface, uint32_t opnum)
{
    return add_want(mc->owner, mc->index, iface, opnum);
}

int mp_module_map_name(struct mp_module_ctx *mc, const uint8_t guid[16], const char *name)
{
    struct mp_modules *ms = mc ? mc->owner : NULL;
    if (!ms || !guid || !name || !*name || strlen(name) >= sizeof(ms->names[0].name))
        return -1;
    for (unsigned i = 0; i < ms->n_names; i++)
        if (!memcmp(ms->names[i].guid, guid, 16) && !strcmp(ms->names[i].name, name))
            return 0;
    if (ms->n_names >= sizeof(ms->names) / sizeof(ms->names[0]))
        return -1;
    memcpy(ms->names[ms->n_names].guid, guid, 16);
    snprintf(ms->names[ms->n_names].name, sizeof(ms->names[0].name), "%s", name);
    ms->n_names++;
    return 0;
}

static bool listed(const struct mp_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_modules; i++)
        if (!strcmp(cfg->modules[i], name))
            return true;
    return false;
}

/* A descriptor built for ABI 4 with this build's call and ROP structures:
 * the ABI 5 layout without the trailing `flags` (doc/internals/module-api.md,
 * "ABI").  Copied into *compat with flags 0 (it may give verdicts). */
static const struct mp_module *abi4_compat(const struct mp_module *m, struct mp_module *compat)
{
    const uint32_t v4 = (4u << 24) | (MP_MODULE_ABI_VERSION & 0xffffffu);
    const size_t size4 = offsetof(struct mp_module, flags);
    if (!compat || m->abi_version != v4 || m->size != size4)
        return NULL;
    memset(compat, 0, sizeof(*compat));
    memcpy(compat, m, size4);
    compat->abi_version = MP_MODULE_ABI_VERSION;
    compat->size = (uint32_t)sizeof(*compat);
    return compat;
}

const struct mp_module *mp_module_open(const struct mp_config *cfg, const char *name, void **dl,
                                       struct mp_module *compat, char *why, size_t wl)
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
    const struct mp_module *old = abi4_compat(m, compat);
    if (old) {
        m = old;
        mp_info("module %s was built for module ABI 4; loaded as one that may give verdicts "
                "(rebuild it against this include/mapiproxy to set descriptor flags)",
                name);
    }
    if (m->abi_version != MP_MODULE_ABI_VERSION)
        snprintf(why, wl,
                 "module %s was built for module ABI 0x%08x, this mapiproxy has ABI 0x%08x "
                 "(the ABI changes with module.h and with the call and ROP structures); "
                 "rebuild it against this mapiproxy's include/mapiproxy",
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

static void opt_error(void *ctx, const char *file, int line, const char *msg)
{
    (void)ctx;
    if (line > 0)
        mp_error("%s:%d: %s", file, line, msg);
    else
        mp_error("%s: %s", file, msg);
}

int mp_modules_load(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop)
{
    return mp_modules_load_with(ms, cfg, loop, NULL);
}

int mp_modules_load_with(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop,
                         const struct mp_module *const *extra)
{
    memset(ms, 0, sizeof(*ms));
    ms->loop = loop;
    ms->online_prefetch = cfg->online_prefetch;
    ms->online_prefetch_max = cfg->online_prefetch_max;
    ms->online_prefetch_depth = cfg->online_prefetch_depth;
    for (size_t k = 0; mp_builtin_stages[k] && k < MP_MAX_STAGES; k++) {
        struct mp_stage_use *u = &ms->stages[ms->n_stages];
        struct mp_iface_spec spec;
        if (mp_iface_parse(mp_builtin_stages[k]->iface, &spec)) {
            mp_error("stage %s: unknown interface %s", mp_builtin_stages[k]->name,
                     mp_builtin_stages[k]->iface);
            return -1;
        }
        u->p = mp_builtin_stages[k];
        memcpy(u->uuid, spec.uuid, 16);
        ms->n_stages++;
    }
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
        mc->m = NULL;
        for (size_t k = 0; extra && extra[k]; k++)
            if (!strcmp(extra[k]->name, name))
                mc->m = extra[k];
        if (!mc->m)
            mc->m = mp_module_open(cfg, name, &mc->dl, &mc->compat, why, sizeof why);
        if (!mc->m) {
            mp_error("%s", why);
            goto fail;
        }
        ms->n++;
        if (mp_modopts_check(cfg, name, mc->m, opt_error, NULL))
            goto fail;
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
    if (!ms->online_prefetch && mp_msgev_verdicts_wanted(ms))
        mp_info("message hook: online downloads reach the modules when the client releases the "
                "message, after it has read it; set mapiproxy:online prefetch = yes to let them "
                "block or change it first (doc/configuration.md)");
    /* the client's version for mp_call_client_version: EcDoConnectEx goes
     * through the chain (no module's hooks run) when a bit is free */
    if (ms->n && ms->n < MP_IDENT_BIT && add_want(ms, MP_IDENT_BIT, "exchange_emsmdb", 10))
        goto fail;
    return 0;
fail:
    mp_modules_unload(ms);
    return -1;
}

static size_t after_cancel_module(const struct mp_module_ctx *mc);

void mp_modules_unload(struct mp_modules *ms)
{
    for (unsigned i = ms->n; i-- > 0;) {
        struct mp_module_ctx *mc = &ms->mods[i];
        if (mc->initialized && mc->m->fini)
            mc->m->fini(mc);
        mp_fdwatch_cancel_module(mc);
        size_t nt = after_cancel_module(mc);
        if (nt)
            mp_debug("module %s: %zu pending timer(s) cancelled at unload", mc->name, nt);
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

/* mp_module_after timers, every pending one in `afters` (the daemon has
 * one loop), so that unload cancels those a module left: after dlclose
 * their callbacks would point into unmapped code, and their memory would
 * leak at shutdown. */
struct after {
    struct mp_timer t;
    struct mp_loop *loop;
    const struct mp_module_ctx *mc;
    void (*cb)(void *);
    void *arg;
    struct after *prev, *next;
};
static struct after *afters;

static void after_unlink(struct after *a)
{
    if (a->prev)
        a->prev->next = a->next;
    else
        afters = a->next;
    if (a->next)
        a->next->prev = a->prev;
}

static void after_fire(void *p)
{
    struct after *a = p;
    a->cb(a->arg);
    free(a);
}

static void after_cb(struct mp_timer *t)
{
    struct after *a = t->data;
    after_unlink(a);
    /* run outside the timer walk, then free */
    if (mp_loop_defer(a->loop, after_fire, a)) {
        a->cb(a->arg);
        free(a);
    }
}

static size_t after_cancel_module(const struct mp_module_ctx *mc)
{
    size_t n = 0;
    for (struct after *a = afters, *nx; a; a = nx) {
        nx = a->next;
        if (a->mc == mc) {
            after_unlink(a);
            mp_timer_cancel(a->loop, &a->t);
            free(a);
            n++;
        }
    }
    return n;
}

int mp_module_after(struct mp_module_ctx *mc, uint64_t ms, void (*cb)(void *), void *arg)
{
    struct after *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    a->loop = mc->loop;
    a->mc = mc;
    a->cb = cb;
    a->arg = arg;
    a->t.cb = after_cb;
    a->t.data = a;
    a->next = afters;
    if (afters)
        afters->prev = a;
    afters = a;
    mp_timer_arm(mc->loop, &a->t, ms);
    return 0;
}
