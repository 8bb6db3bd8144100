/* mailboxauth: mailbox authorization under specified credentials.
 *
 * When the proxy terminates authentication and logs on upstream as its own
 * account, the upstream cannot tell carol from alice: whatever mailbox DN
 * a client names, the server checks it against the proxy's account.  This
 * module does the server's check in its place, on both fronts (the ROPs
 * and EcDoConnectEx of MAPI/HTTP arrive as their RPC twins):
 *
 *   EcDoConnect, EcDoConnectEx, MAPI/HTTP Connect: szUserDN / UserDn must be
 *       a mailbox the user may open, else result ecAccessDenied (0x80070005,
 *       what gromox answers for a DN that is not the caller's), nothing
 *       upstream; FLAG_PRIVILEGE_ADMIN (ulFlags 0x1) gets ecLoginPerm
 *       (0x3F2): the administrator rights would be the proxy account's.
 *   RopLogon, private mailbox (LogonFlags 0x01): Essdn likewise, else the
 *       ROP's ReturnValue is ecLoginPerm (0x3F2, "this user does not have
 *       access rights to the mailbox", what Exchange and gromox answer); so
 *       is USE_ADMIN_PRIVILEGE (OpenFlags 0x1).  Public folder logons pass.
 *   A ROP buffer the proxy cannot read completely (it does not decode, or
 *       holds an opaque ROP) could hide a RopLogon: the call gets the fault
 *       access denied (0x5).  So do EcDoRpcExt (opnum 9, whose ROPs the
 *       chain does not decode: nca_op_rng_error, as Exchange 2010 and later
 *       answer it) and a connect request that does not decode.
 *
 * Which mailbox is whose comes from mapiproxy:mailbox map, and for users it
 * does not name from the directory (mbxdir.c: NspiResolveNamesW through the
 * proxy's own NSPI session, on a worker thread while the connect waits,
 * MP_PENDING; cached per user).  The map:
 *
 *   # USER: legacyExchangeDN of USER's own mailbox (several lines: several DNs)
 *   alice: /o=Org/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice
 *   # delegate GRANTEE: MAILBOX (a user of this file, meaning their DNs, or a DN)
 *   delegate carol: alice
 *   delegate @helpdesk: /o=Org/ou=.../cn=Recipients/cn=support
 *   delegate *: /o=Org/ou=.../cn=Recipients/cn=PublicFolderMailbox
 *
 * USER and GRANTEE are written as in mapiproxy:allowed users: "user" (any
 * NTLM domain, or a Kerberos principal of the proxy's realm), "DOMAIN\user",
 * "user@REALM"; "@group" is a group of mapiproxy:groups file, "*" every user.  DNs compare
 * case-insensitively.  A user without a line opens no private mailbox. */
#include "auth/mailboxauth.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/credstore.h"
#include "auth/groups.h"
#include "codec/gen/emsmdb.h"
#include "core/config.h"
#include "event/loop.h"
#include "mapiproxy/module.h"
#include "auth/mbxdir.h"
#include "chain/chain.h"
#include "rop/gen/rop_gen.h"

#define OP_CONNECT 0
#define OP_RPC 2
#define OP_RPCEXT 9
#define OP_CONNECTEX 10
#define OP_RPCEXT2 11

#define EC_ACCESS_DENIED 0x80070005u
#define EC_LOGIN_PERM 0x000003F2u
#define FAULT_ACCESS_DENIED 0x00000005u
#define NCA_OP_RNG_ERROR 0x1c010002u
#define CONNECT_FLAG_ADMIN 0x00000001u /* EcDoConnectEx ulFlags: FLAG_PRIVILEGE_ADMIN */
#define LOGON_PRIVATE 0x01u            /* RopLogon LogonFlags */
#define LOGON_USE_ADMIN 0x00000001u    /* RopLogon OpenFlags: USE_ADMIN_PRIVILEGE */
#define DIR_POLL_MS 20
#define DIR_RETRY_MS 60000 /* a failed directory lookup is tried again after a minute */

struct own {
    char *user, *dn;
};
struct grant {
    char *who, *target; /* target: a DN ("/...") or a user of the map */
};
/* A connect waiting for the directory. */
struct waiter {
    struct waiter *next;
    struct mp_call *call;
    const char *what;
    char *dn;
};

/* The directory's answer for one user (cached for the process's life; a
 * failure is tried again after DIR_RETRY_MS).  The worker thread writes
 * dn/why/rc, then done; the loop thread reads them after done. */
enum { D_PENDING, D_OK, D_FAILED };
struct dentry {
    struct dentry *next;
    struct mp_module_ctx *mc;
    char user[520], account[260];
    char dn[1024], why[300];
    int state, rc;
    uint64_t t_ms;
    pthread_t th;
    bool th_live;
    atomic_bool done;
    struct waiter *waiters;
};

struct mbx {
    struct own *own;
    size_t n_own;
    struct grant *gr;
    size_t n_gr;
    struct mp_groups groups;
    char realm[256];
    struct mp_mbxdir *dir; /* NULL: the map only */
    struct dentry *dents;
};

bool mp_mailbox_auth_applies(const struct mp_config *cfg)
{
    bool rpc = (cfg->username[0] || cfg->upstream_spn[0]) &&
               strcasecmp(cfg->delegation, "s4u") != 0 && !cfg->delegated_auth;
    bool http = cfg->n_http_listen && !strcasecmp(cfg->http_auth, "terminate");
    return cfg->mailbox_auth && (rpc || http);
}

/* ---- the map ---- */

static void mbx_free(struct mbx *x)
{
    if (!x)
        return;
    for (struct dentry *e = x->dents, *nx; e; e = nx) {
        nx = e->next;
        if (e->th_live)
            pthread_join(e->th, NULL);
        for (struct waiter *w = e->waiters, *wn; w; w = wn) {
            wn = w->next;
            free(w->dn);
            free(w);
        }
        free(e);
    }
    mp_mbxdir_free(x->dir);
    for (size_t i = 0; i < x->n_own; i++) {
        free(x->own[i].user);
        free(x->own[i].dn);
    }
    for (size_t i = 0; i < x->n_gr; i++) {
        free(x->gr[i].who);
        free(x->gr[i].target);
    }
    free(x->own);
    free(x->gr);
    mp_groups_free(&x->groups);
    free(x);
}

static bool one_word(const char *s)
{
    return *s && !strpbrk(s, " \t,");
}

/* One line "USER: DN" or "delegate WHO: MAILBOX".  0, or -1 (why set). */
static int map_line(struct mbx *x, char *p, const char *path, int lineno, char *why, size_t wl)
{
    char *colon = strchr(p, ':');
    if (!colon) {
        snprintf(why, wl,
                 "%s:%d: not \"USER: DN\" or \"delegate USER: MAILBOX\" (no colon); fix the "
                 "line",
                 path, lineno);
        return -1;
    }
    *colon = 0;
    char *left = mp_trim(p), *right = mp_trim(colon + 1);
    bool del = !strncasecmp(left, "delegate", 8) && isspace((unsigned char)left[8]);
    if (del)
        left = mp_trim(left + 9);
    if (!one_word(left) || !*right || (!del && right[0] != '/') ||
        (del && right[0] != '/' && !one_word(right))) {
        const char *what = del ? "not \"delegate USER: MAILBOX\" (one user or @group, then a "
                                 "user of this file or a legacyExchangeDN starting with /)"
                               : "not \"USER: DN\" (one user name, then the legacyExchangeDN "
                                 "of the user's mailbox, starting with /)";
        snprintf(why, wl, "%.200s:%d: %s; fix the line", path, lineno, what);
        return -1;
    }
    char *a = strdup(left), *b = strdup(right);
    void *grown = del ? realloc(x->gr, (x->n_gr + 1) * sizeof(*x->gr))
                      : realloc(x->own, (x->n_own + 1) * sizeof(*x->own));
    if (!a || !b || !grown) {
        free(a);
        free(b);
        if (grown && del)
            x->gr = grown;
        else if (grown)
            x->own = grown;
        snprintf(why, wl, "out of memory reading %s", path);
        return -1;
    }
    if (del) {
        x->gr = grown;
        x->gr[x->n_gr++] = (struct grant){a, b};
    } else {
        x->own = grown;
        x->own[x->n_own++] = (struct own){a, b};
    }
    return 0;
}

static int map_load(struct mbx *x, const char *path, char *why, size_t wl)
{
    FILE *fp = mp_open_private_file(path, "mailbox map", why, wl);
    if (!fp)
        return -1;
    char line[4096];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof(line), fp)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(fp)) {
            snprintf(why, wl, "%s:%d: line longer than %zu bytes", path, lineno, sizeof(line) - 2);
            rc = -1;
            break;
        }
        char *p = mp_trim(line);
        if (*p && *p != '#')
            rc = map_line(x, p, path, lineno, why, wl);
    }
    fclose(fp);
    return rc;
}

/* ---- matching ---- */

/* Does entry (as written in the map: user, DOMAIN\user, user@REALM) name
 * the authenticated user ("DOMAIN\user" or "user@REALM")?  A bare name
 * covers any NTLM domain (as mapiproxy:allowed users does) and principals
 * of the proxy's own realm. */
static bool names_user(const struct mbx *x, const char *entry, const char *user)
{
    if (!strcasecmp(entry, user))
        return true;
    if (strpbrk(entry, "\\@"))
        return false;
    const char *bs = strchr(user, '\\');
    if (bs)
        return !strcasecmp(entry, bs + 1);
    const char *at = strrchr(user, '@');
    if (!at)
        return false;
    size_t n = (size_t)(at - user);
    return strlen(entry) == n && !strncasecmp(entry, user, n) &&
           (!x->realm[0] || !strcasecmp(at + 1, x->realm));
}

static bool grantee_is(const struct mbx *x, const char *who, const char *user)
{
    if (!strcmp(who, "*")) /* every user (public folder mailboxes, shared ones) */
        return true;
    if (who[0] != '@')
        return names_user(x, who, user);
    const char *bs = strchr(user, '\\'), *at = strrchr(user, '@');
    char bare[520];
    if (bs)
        snprintf(bare, sizeof(bare), "%s", bs + 1);
    else
        snprintf(bare, sizeof(bare), "%.*s", (int)(at ? (size_t)(at - user) : strlen(user)), user);
    const char *names[2] = {bare, user};
    return mp_groups_has(&x->groups, who + 1, names, 2);
}

/* The map user whose own mailbox dn is, or NULL. */
static const char *owner_of(const struct mbx *x, const char *dn)
{
    for (size_t i = 0; i < x->n_own; i++)
        if (!strcasecmp(x->own[i].dn, dn))
            return x->own[i].user;
    return NULL;
}

/* Does grant g cover dn: its DN, or a DN of the map user it names? */
static bool grant_covers(const struct mbx *x, const struct grant *g, const char *dn)
{
    if (g->target[0] == '/')
        return !strcasecmp(g->target, dn);
    for (size_t i = 0; i < x->n_own; i++)
        if (!strcasecmp(x->own[i].dn, dn) && !strcasecmp(x->own[i].user, g->target))
            return true;
    return false;
}

static struct dentry *dent_find(const struct mbx *x, const char *user)
{
    for (struct dentry *e = x->dents; e; e = e->next)
        if (!strcmp(e->user, user))
            return e;
    return NULL;
}

/* Does the map give user's own mailbox?  Then it alone says which. */
static bool in_map(const struct mbx *x, const char *user)
{
    for (size_t i = 0; i < x->n_own; i++)
        if (names_user(x, x->own[i].user, user))
            return true;
    return false;
}

/* "own", "directory", "delegate", or NULL when user may not open dn. */
static const char *may_open(const struct mbx *x, const char *user, const char *dn)
{
    if (!dn[0])
        return NULL;
    for (size_t i = 0; i < x->n_own; i++)
        if (!strcasecmp(x->own[i].dn, dn) && names_user(x, x->own[i].user, user))
            return "own";
    const struct dentry *e = x->dir && !in_map(x, user) ? dent_find(x, user) : NULL;
    if (e && e->state == D_OK && !strcasecmp(e->dn, dn))
        return "own, from the directory";
    for (size_t i = 0; i < x->n_gr; i++)
        if (grantee_is(x, x->gr[i].who, user) && grant_covers(x, &x->gr[i], dn))
            return "delegate";
    return NULL;
}

/* Copies text for a log line: control characters, blanks and non-ASCII
 * bytes become '?', so a client cannot write lines of its own. */
static const char *log_text(char *out, size_t cap, const char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && p[i] && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)p[i];
        out[k++] = c <= 0x20 && c != ' ' ? '?' : c >= 0x7f ? '?' : (char)c;
    }
    out[k] = 0;
    return out;
}

/* The check itself, with the log line on refusal.  true: allowed. */
static bool check(struct mp_module_ctx *mc, struct mp_call *call, const char *dn, size_t dn_len,
                  const char *what, uint32_t flags_admin, uint32_t code)
{
    const struct mbx *x = mp_module_private(mc);
    const char *user = mp_call_user(call);
    char dnz[1024], shown[1024];
    bool fits = dn_len < sizeof(dnz);
    snprintf(dnz, sizeof(dnz), "%.*s", (int)(fits ? dn_len : 0), fits ? dn : "");
    log_text(shown, sizeof(shown), dn, dn_len);
    const char *how = fits && !flags_admin ? may_open(x, user, dnz) : NULL;
    if (how) {
        mp_module_log(mc, MP_MLOG_DEBUG, "%s from %s: %s of %s allowed (%s)", user,
                      mp_call_peer(call), what, shown, how);
        return true;
    }
    const char *owner = fits ? owner_of(x, dnz) : NULL;
    mp_module_log(mc, MP_MLOG_WARN,
                  "%s from %s: %s of mailbox %s (owner: %s)%s refused with 0x%08x; not sent "
                  "upstream",
                  user, mp_call_peer(call), what, shown[0] ? shown : "(empty DN)",
                  owner ? owner : "not in mapiproxy:mailbox map",
                  flags_admin ? " with administrator privilege" : "", code);
    return false;
}

/* Does this call go upstream as the proxy's own account? */
static bool applies(const struct mp_call *call)
{
    return mp_call_user(call) && call->proxy_identity;
}

/* ---- hooks ---- */

static int mbx_init(struct mp_module_ctx *mc)
{
    const struct mp_config *cfg = mc->cfg;
    struct mbx *x = calloc(1, sizeof(*x));
    if (!x)
        return -1;
    snprintf(x->realm, sizeof(x->realm), "%s", cfg->realm);
    char why[600];
    if (cfg->mailbox_map[0] && map_load(x, cfg->mailbox_map, why, sizeof(why))) {
        mp_module_log(mc, MP_MLOG_ERROR, "mapiproxy:mailbox map: %s", why);
        mbx_free(x);
        return -1;
    }
    if (cfg->groups_file[0] && mp_groups_load(&x->groups, cfg->groups_file, why, sizeof(why))) {
        mp_module_log(mc, MP_MLOG_ERROR, "mapiproxy:groups file: %s", why);
        mbx_free(x);
        return -1;
    }
    if (cfg->mailbox_directory) {
        x->dir = mp_mbxdir_new(cfg, why, sizeof(why));
        if (!x->dir)
            mp_module_log(mc, MP_MLOG_INFO,
                          "mailbox DNs from mapiproxy:mailbox map only, not from the "
                          "directory: %s",
                          why);
    }
    mc->owner->fail_closed = true;
    mp_module_set_private(mc, x);
    if (!cfg->mailbox_map[0] && x->dir)
        mp_module_log(mc, MP_MLOG_INFO,
                      "each user's mailbox DN comes from the directory (NspiResolveNamesW as "
                      "the proxy's account), cached per user");
    else if (!cfg->mailbox_map[0])
        mp_module_log(mc, MP_MLOG_WARN,
                      "the upstream sees the proxy's account and mapiproxy:mailbox map is not "
                      "set: every EcDoConnect(Ex), MAPI/HTTP Connect and private RopLogon will "
                      "be refused; write each user's mailbox DN there (doc/security.md)");
    else
        mp_module_log(mc, MP_MLOG_INFO, "%zu mailbox DNs and %zu delegate rules from %s", x->n_own,
                      x->n_gr, cfg->mailbox_map);
    return 0;
}

static void mbx_fini(struct mp_module_ctx *mc)
{
    mbx_free(mp_module_private(mc));
}

/* A connect refused: the answer a server gives, nothing upstream. */
static enum mp_status refuse_connect(struct mp_call *call, uint32_t code)
{
    uint16_t op = mp_call_opnum(call);
    char *empty = mp_call_strdup(call, "");
    if (op == OP_CONNECTEX) {
        struct emsmdb_EcDoConnectEx_out *o = mp_call_new_response(call);
        uint8_t *aux = mp_call_alloc(call, 1);
        if (!o || !empty || !aux)
            return MP_ERROR;
        o->szDNPrefix = o->szDisplayName = empty;
        o->rgbAuxOut = aux;
        o->result = (int32_t)code;
    } else {
        struct emsmdb_EcDoConnect_out *o = mp_call_new_response(call);
        if (!o || !empty)
            return MP_ERROR;
        o->szDNPrefix = o->szDisplayName = empty;
        o->result = (int32_t)code;
    }
    mp_call_response_changed(call);
    return MP_STOP;
}

static enum mp_status fault(struct mp_module_ctx *mc, struct mp_call *call, uint32_t status,
                            const char *why)
{
    mp_module_log(mc, MP_MLOG_WARN, "%s from %s: %s refused (%s): fault 0x%08x", mp_call_user(call),
                  mp_call_peer(call), mp_call_op_name(call) ? mp_call_op_name(call) : "call", why,
                  status);
    mp_call_fault(call, status);
    return MP_STOP;
}

/* ---- the directory, on a worker thread per lookup ---- */

static void *dir_worker(void *arg)
{
    struct dentry *e = arg;
    const struct mbx *x = mp_module_private(e->mc);
    e->rc = mp_mbxdir_lookup(x->dir, e->account, e->dn, sizeof(e->dn), e->why, sizeof(e->why));
    atomic_store(&e->done, true);
    return NULL;
}

static enum mp_status connect_decide(struct mp_module_ctx *mc, struct mp_call *call,
                                     const char *what, const char *dn, uint32_t admin)
{
    uint32_t code = admin ? EC_LOGIN_PERM : EC_ACCESS_DENIED;
    if (check(mc, call, dn, strlen(dn), what, admin, code))
        return MP_CONTINUE;
    return refuse_connect(call, code);
}

static void dir_poll(void *arg)
{
    struct dentry *e = arg;
    struct mp_module_ctx *mc = e->mc;
    if (!atomic_load(&e->done)) {
        if (mp_module_after(mc, DIR_POLL_MS, dir_poll, e) == 0)
            return;
        /* out of memory: wait here; the lookup is bounded by its timeouts */
        while (!atomic_load(&e->done))
            usleep(1000);
    }
    pthread_join(e->th, NULL);
    e->th_live = false;
    e->state = e->rc ? D_FAILED : D_OK;
    e->t_ms = mp_now_ms();
    if (e->rc)
        mp_module_log(mc, MP_MLOG_WARN, "directory lookup of %s's mailbox failed: %s", e->user,
                      e->why);
    else
        mp_module_log(mc, MP_MLOG_INFO, "directory: %s's mailbox is %s", e->user, e->dn);
    struct waiter *w = e->waiters;
    e->waiters = NULL;
    while (w) {
        struct waiter *nx = w->next;
        mp_call_resume(w->call, connect_decide(mc, w->call, w->what, w->dn, 0));
        free(w->dn);
        free(w);
        w = nx;
    }
}

/* The user's DN is not known yet: ask the directory, the call waits.
 * MP_PENDING, or MP_CONTINUE when there is nothing to wait for. */
static enum mp_status dir_wait(struct mp_module_ctx *mc, struct mp_call *call, const char *what,
                               const char *dn)
{
    struct mbx *x = mp_module_private(mc);
    const char *user = mp_call_user(call);
    if (!x->dir || in_map(x, user))
        return MP_CONTINUE;
    struct dentry *e = dent_find(x, user);
    if (e && (e->state == D_OK || (e->state == D_FAILED && mp_now_ms() - e->t_ms < DIR_RETRY_MS)))
        return MP_CONTINUE;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e)
            return MP_CONTINUE;
        e->mc = mc;
        snprintf(e->user, sizeof(e->user), "%s", user);
        const char *bs = strchr(user, '\\'), *at = strrchr(user, '@');
        snprintf(e->account, sizeof(e->account), "%.*s",
                 (int)(bs   ? strlen(bs + 1)
                       : at ? (size_t)(at - user)
                            : strlen(user)),
                 bs ? bs + 1 : user);
        e->next = x->dents;
        x->dents = e;
        e->state = D_FAILED; /* until a lookup starts */
    }
    struct waiter *w = calloc(1, sizeof(*w));
    char *copy = strdup(dn);
    if (!w || !copy) {
        free(w);
        free(copy);
        return MP_CONTINUE;
    }
    if (e->state != D_PENDING) {
        atomic_store(&e->done, false);
        e->dn[0] = e->why[0] = 0;
        if (pthread_create(&e->th, NULL, dir_worker, e)) {
            free(w);
            free(copy);
            return MP_CONTINUE;
        }
        if (mp_module_after(mc, DIR_POLL_MS, dir_poll, e)) { /* no memory: wait here */
            pthread_join(e->th, NULL);
            e->state = e->rc ? D_FAILED : D_OK;
            e->t_ms = mp_now_ms();
            free(w);
            free(copy);
            return MP_CONTINUE;
        }
        e->th_live = true;
        e->state = D_PENDING;
    }
    w->call = call;
    w->what = what;
    w->dn = copy;
    w->next = e->waiters;
    e->waiters = w;
    return MP_PENDING;
}

static enum mp_status connect_check(struct mp_module_ctx *mc, struct mp_call *call,
                                    const char *what, const char *dn, uint32_t flags)
{
    uint32_t admin = flags & CONNECT_FLAG_ADMIN;
    if (!admin && !may_open(mp_module_private(mc), mp_call_user(call), dn) &&
        dir_wait(mc, call, what, dn) == MP_PENDING)
        return MP_PENDING;
    return connect_decide(mc, call, what, dn, admin);
}

static enum mp_status mbx_dispatch(struct mp_module_ctx *mc, struct mp_call *call)
{
    if (!applies(call))
        return MP_CONTINUE;
    switch (mp_call_opnum(call)) {
    case OP_CONNECT: {
        const struct emsmdb_EcDoConnect_in *in = mp_call_request(call);
        if (!in || !in->szUserDN)
            return fault(mc, call, FAULT_ACCESS_DENIED, "the request does not decode");
        return connect_check(mc, call, "EcDoConnect", in->szUserDN, in->ulFlags);
    }
    case OP_CONNECTEX: {
        const struct emsmdb_EcDoConnectEx_in *in = mp_call_request(call);
        if (!in || !in->szUserDN)
            return fault(mc, call, FAULT_ACCESS_DENIED, "the request does not decode");
        return connect_check(mc, call, "EcDoConnectEx", in->szUserDN, in->ulFlags);
    }
    case OP_RPCEXT:
        return fault(mc, call, NCA_OP_RNG_ERROR, "its ROPs are not checked");
    case OP_RPC:
    case OP_RPCEXT2:
        /* ROPs that decode were checked by mbx_rop_request */
        if (!mp_call_rop_count(call, false))
            return fault(mc, call, FAULT_ACCESS_DENIED,
                         "a ROP buffer the proxy cannot read could hold a RopLogon");
        return MP_CONTINUE;
    default:
        return MP_CONTINUE;
    }
}

static enum mp_status mbx_rop_request(struct mp_module_ctx *mc, struct mp_call *call)
{
    if (!applies(call))
        return MP_CONTINUE;
    size_t n = mp_call_rop_count(call, false);
    for (size_t i = 0; i < n; i++) {
        const void *r = mp_call_rop(call, false, i);
        if (!r)
            return fault(mc, call, FAULT_ACCESS_DENIED,
                         "a ROP the proxy cannot read could hide a RopLogon");
        if (mp_call_rop_id(call, false, i) != MP_ROP_Logon)
            continue;
        const struct mp_rop_req_Logon *l = r;
        if (!(l->LogonFlags & LOGON_PRIVATE))
            continue; /* public folders: the same for every user */
        size_t len = 0;
        while (len < l->EssdnSize && l->Essdn[len])
            len++;
        uint32_t admin = l->OpenFlags & LOGON_USE_ADMIN;
        if (check(mc, call, (const char *)l->Essdn, len, "RopLogon", admin, EC_LOGIN_PERM))
            continue;
        if (mp_call_rop_answer(call, i, EC_LOGIN_PERM))
            return fault(mc, call, FAULT_ACCESS_DENIED, "a refused RopLogon cannot be answered");
    }
    return MP_CONTINUE;
}

static const struct mp_module_want mbx_wants[] = {
    {"exchange_emsmdb", OP_CONNECT},
    {"exchange_emsmdb", OP_RPCEXT},
    {"exchange_emsmdb", OP_CONNECTEX},
    {NULL, 0},
};

const struct mp_module mp_builtin_mailboxauth = {
    MP_MODULE_HEADER,
    .name = "mailboxauth",
    .description = "keeps each user to their own mailbox when the upstream sees the proxy's "
                   "account",
    .wants = mbx_wants,
    .init = mbx_init,
    .fini = mbx_fini,
    .dispatch = mbx_dispatch,
    .rop_request = mbx_rop_request,
};
