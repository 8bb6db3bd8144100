/* The call chain (src/chain/): loading modules (loader.c), sessions and the
 * calls the module API (include/mapiproxy/module.h) works on (call.c), the
 * hook chain (runner.c) and the ROP stage (ropstage.c).  The relay creates a
 * struct mp_call for each call a module wants, feeds it the reassembled
 * request, and gets it back through the host callbacks to relay it, answer
 * it, or fault it. */
#ifndef MP_CHAIN_CHAIN_H
#define MP_CHAIN_CHAIN_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "event/loop.h"
#include "mapiproxy/module.h"

struct mp_arena;

struct mp_module_ctx {
    const struct mp_module *m;
    void *priv;
    void *dl; /* dlopen handle, NULL for built-ins */
    char name[64];
    unsigned index;
    const struct mp_config *cfg;
    struct mp_loop *loop;
    bool initialized;
    struct mp_modules *owner;
    struct mp_module compat; /* m points here for a module built for ABI 4 */
    bool verdict_warned;     /* an observe-only module gave a verdict: logged once */
};

/* A stage provider: a part of the core that decodes more of some calls and
 * runs its own module hooks between pull and dispatch (request) and between
 * ndr_push and push (response).  The ROP stage (ropstage.c: rop_request,
 * rop_response) is one.  Providers are listed in builtins.c; the loader
 * resolves each one's interface once, and mp_call_new marks the calls a
 * provider takes part in (mp_call.stages), so the runner never looks at a
 * call's interface or operation itself and calls providers only through
 * this table. */
#define MP_MAX_STAGES 4
typedef enum mp_status (*mp_hook_fn)(struct mp_module_ctx *mc, struct mp_call *call);
struct mp_stage_provider {
    const char *name;         /* "ROP" */
    const char *hook_name[2]; /* its request and response hooks, for logs */
    const char *iface;        /* the interface whose operations it serves */
    const uint16_t *ops;      /* those operations */
    size_t n_ops;
    /* The module's hook for this stage (request or response), NULL if it
     * has none; a module with one wants (iface, ops) implicitly. */
    mp_hook_fn (*hook)(const struct mp_module *m, bool response);
    /* Does module m make the provider take part in the calls it serves,
     * with or without hooks (the ROP stage: object_event)?  NULL: when m
     * has one of the hooks. */
    bool (*uses)(const struct mp_module *m);
    /* How many items the hooks would see; 0 skips the hooks (nothing decoded). */
    size_t (*count)(struct mp_call *m, bool response);
    /* Before the request hooks: decode. */
    void (*request)(struct mp_call *m);
    /* After them: 0 relay, 1 the provider answered the whole call (the
     * decoded response is set), -1 cannot encode (fault). */
    int (*request_done)(struct mp_call *m);
    /* After dispatch, just before the request goes upstream. */
    void (*before_relay)(struct mp_call *m);
    /* The request goes upstream again (MP_RELAY_AGAIN): forget the response. */
    void (*reset_response)(struct mp_call *m);
    /* Before the response hooks: decode; after them: 0, or -1 (fault). */
    void (*response)(struct mp_call *m);
    int (*response_done)(struct mp_call *m);
    /* The call's / the session's slot (mp_call_stage_slot) is freed. */
    void (*call_free)(struct mp_call *m, void *ctx);
    void (*session_free)(void *ctx);
};
extern const struct mp_stage_provider *const mp_builtin_stages[]; /* builtins.c */

/* The mask bit of calls the runtime itself wants (chain/ident.c: the
 * client's version from EcDoConnectEx); used only while fewer modules are
 * loaded, so it never names a module. */
#define MP_IDENT_BIT 31u

struct mp_modules {
    struct mp_module_ctx mods[MP_MAX_MODULES];
    unsigned n;
    struct mp_loop *loop;
    /* (uuid, opnum) -> module mask, flattened from every module's wants */
    struct want {
        uint8_t uuid[16];
        uint32_t opnum;
        uint32_t mask;
    } * wants;
    size_t n_wants;
    /* the stage providers, their interface resolved, and the modules with
     * hooks for each */
    struct mp_stage_use {
        const struct mp_stage_provider *p;
        uint8_t uuid[16];
        uint32_t modmask;
    } stages[MP_MAX_STAGES];
    unsigned n_stages;
    /* A module that must see every call it wants (mailbox authorization):
     * a call that cannot be handed to the chain is refused, never relayed
     * untouched. */
    bool fail_closed;
    /* mapiproxy:online prefetch (msgonline.c) and its size limit */
    bool online_prefetch;
    uint64_t online_prefetch_max;
    unsigned online_prefetch_depth; /* embedded messages read ahead, levels (1-8) */
    /* named properties the modules set, mapped by the proxy in each
     * session (mp_module_map_name; msgnames.c) */
    struct mp_named_want {
        uint8_t guid[16];
        char name[64];
    } names[32];
    unsigned n_names;
};

/* A session: a client's association group.  The relay keeps the group's
 * upstream id here too. */
struct mp_session {
    uint32_t id, up_id;
    unsigned refs;
    struct mp_session *next; /* relay's hash chain */
    struct mp_modules *mods;
    void (*on_free)(struct mp_session *s); /* relay unlinks it */
    void *stage_ctx[MP_MAX_STAGES];        /* per stage provider (the ROP stage: server objects) */
    /* the client's version and MAPI/HTTP X-ClientApplication (chain/ident.c) */
    char client_version[32];
    char client_app[128];
    /* who the client says it is when the proxy does not authenticate it
     * (chain/ident.c, mp_ident_user): the identity its pass-through HTTP
     * logon names (NTLM AUTHENTICATE, Basic), and the user DN of its
     * EcDoConnectEx / MAPI/HTTP Connect */
    char seen_user[256];
    char user_dn[256];
    void *owner;
    char ident[192]; /* relay: who created the group ("user:DOMAIN\\user" when the proxy
                        terminates authentication, else "addr:IP"); only they join it */
    struct slot {
        void *data;
        void (*dtor)(void *);
    } slots[MP_MAX_MODULES];
};

struct mp_call_host {
    /* send m->req upstream (the relay splits it into fragments) */
    void (*relay)(struct mp_call *m);
    /* send m->resp to the client */
    void (*answer)(struct mp_call *m);
    /* send a fault with m->fault to the client */
    void (*fault)(struct mp_call *m);
    /* the chain is finished with this call (after answer/fault); the host
     * frees it with mp_call_free */
    void (*done)(struct mp_call *m);
    /* The transport writes the request and the response from their decoded
     * forms (MAPI/HTTP bodies), so the chain does not re-encode the raw
     * form (NDR) before relay and answer; the transport asks for the form
     * it needs (mp_call_request/response, or the stubs). */
    bool decoded_form;
};

enum mp_call_stage {
    MPC_NDR_PULL,
    MPC_PULL,
    MPC_STAGE_REQ, /* a stage provider's request hooks (rop_request) */
    MPC_DISPATCH,
    MPC_UPSTREAM,
    MPC_NDR_PUSH,
    MPC_STAGE_RSP, /* a stage provider's response hooks (rop_response) */
    MPC_PUSH
};

/* Where a call comes from: what its transport knows about it.  The one
 * constructor, mp_call_new, takes it; the transport's own per-call fields
 * (DCE/RPC: call id, presentation context, object UUID; MAPI/HTTP: the
 * bridge's state) stay in the transport's context, never in the call. */
struct mp_call_origin {
    const struct mp_call_host *host;
    void *owner;                  /* the transport's connection; see mp_call.owner */
    struct mp_session *session;   /* may be NULL; the call takes a reference */
    const uint8_t *iface_uuid;    /* 16 bytes */
    const char *iface;            /* "exchange_emsmdb", or the UUID text */
    uint16_t opnum;               /* the DCE/RPC operation (MAPI/HTTP: its twin's) */
    const char *op_name;          /* static; NULL when unknown */
    const char *peer;             /* "ADDR:PORT" of the client */
    const char *user;             /* who the proxy authenticated, NULL or "" if nobody */
    bool proxy_identity;          /* the upstream sees the proxy's own account */
    const char *transport, *auth; /* static: mp_call_transport, mp_call_auth (NULL: rpc,
                                     pass-through) */
    /* The transport's context: with ctx_size, the call holds ctx_size zeroed
     * bytes for it (mp_call_ctx); else ctx is kept as the pointer. */
    void *ctx;
    size_t ctx_size;
};

struct mp_call {
    size_t alloc_cap; /* the block's size (mp_buf_take) */
    struct mp_modules *mods;
    const struct mp_call_host *host;
    /* the transport's connection; the transport sets it to NULL when the
     * connection goes, after which the chain makes no host call but done */
    void *owner;
    struct mp_session *session;
    uint32_t mask;   /* modules that want this call */
    uint32_t stages; /* stage providers that take part in it (loader.c) */
    uint8_t iface_uuid[16];
    char iface[48];
    const char *op_name; /* static table */
    char peer[64];
    /* The user the proxy authenticated on the call's connection ("" when
     * it did not: transparent mode, pass-through interfaces), and whether
     * the upstream sees the proxy's own account for it (specified
     * credentials) rather than the client (S4U delegation). */
    char user[520];
    bool proxy_identity;
    const char *transport, *auth; /* static strings, from the origin */
    uint16_t opnum;
    /* Each side in a raw form (the NDR stub) and/or a decoded one (the
     * codec's structure).  The transport gives one: DCE/RPC the raw stub
     * (decoded when a module asks), MAPI/HTTP the decoded body
     * (mp_call_set_decoded; NDR made only when a raw hook asks).
     *   *_tried    decoding was tried (*_dec may be NULL: did not decode)
     *   *_changed  the decoded form is newer than the raw one (re-encode
     *              before the raw one is read)
     *   *_modified a module changed this side (stub set, decoded changed,
     *              new response): the transport cannot send what it got */
    struct mp_buf req, resp;
    void *req_dec, *resp_dec;
    bool req_tried, resp_tried, req_changed, resp_changed, req_modified, resp_modified;
    /* the decoded form is the transport's own structure (mp_call_set_decoded),
     * not one the call's codec allocated in its arena */
    bool req_given, resp_given;
    const struct mp_call_codec *codec;
    struct mp_arena *arena;
    uint32_t fault;
    enum mp_call_stage stage;
    int idx;      /* module index of the hook running or pending */
    int stop_idx; /* the module that answered (MP_STOP), or -1 */
    int sp;       /* the stage provider running (MPC_STAGE_*) */
    unsigned relays;
    bool pending;
    bool fault_set;
    bool running;                   /* inside the chain: the host must not free it */
    void *stage_ctx[MP_MAX_STAGES]; /* per stage provider (e.g. the ROP stage's) */
    void *host_ctx;                 /* the transport's context (kept when owner goes NULL) */
    uint64_t t0;
    uint64_t serial; /* mp_call_serial */
    /* A side request (the proxy's own ROPs on the client's session,
     * mp_call_side_request): set by a stage provider's response step, the
     * call's request goes upstream again and its response goes to side_cb,
     * never to a hook or the client (runner.c). */
    void (*side_cb)(struct mp_call *m);
    int side_sp;
    unsigned side_relays;
};

int mp_modules_load(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop);
/* The same, with `extra` (NULL-terminated) found by name before the
 * built-ins and the module dir: modules linked into a test or a tool. */
int mp_modules_load_with(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop,
                         const struct mp_module *const *extra);
/* Finds module `name` as mp_modules_load does: a built-in, or
 * MODULE-DIR/NAME.so opened and checked (descriptor, ABI version, size, name).
 * Returns its descriptor (*dl: the dlopen handle of a shared object, else
 * NULL; the caller dlcloses it), or NULL with why ("module NAME: ...; fix").
 * A module built for ABI 4 (same structures) is accepted as a copy in
 * *compat (flags 0), which must live as long as the module is used. */
/* A number no other call of the process had (from 1): for marks that must
 * name one call, where its address could be reused by a later one. */
uint64_t mp_call_serial(const struct mp_call *m);
/* The id of the call's session for log lines, 0 without one. */
unsigned mp_call_sid(struct mp_call *m);
const struct mp_module *mp_module_open(const struct mp_config *cfg, const char *name, void **dl,
                                       struct mp_module *compat, char *why, size_t wl);
void mp_modules_unload(struct mp_modules *ms);
/* Which modules want (uuid, opnum); 0 = none (fast path). */
uint32_t mp_modules_want(const struct mp_modules *ms, const uint8_t uuid[16], uint16_t opnum);

/* The one constructor: a call that modules `mask` want, from `o`.  NULL when
 * out of memory. */
struct mp_call *mp_call_new(struct mp_modules *ms, uint32_t mask, const struct mp_call_origin *o);
/* A stage provider's slot in the call / the session: NULL when p is not
 * loaded.  The provider keeps its per-call / per-session state there. */
void **mp_call_stage_slot(struct mp_call *m, const struct mp_stage_provider *p);
void **mp_session_stage_slot(struct mp_session *s, const struct mp_stage_provider *p);
/* The transport's context (mp_call_origin.ctx / ctx_size). */
static inline void *mp_call_ctx(const struct mp_call *m)
{
    return m->host_ctx;
}
void mp_call_free(struct mp_call *m);
/* Frees what the calling thread keeps for its next call (a reset arena);
 * a worker calls it last, on its thread, as it ends. */
void mp_call_cache_release(void);
/* The request is complete in m->req: run the request hooks, then relay,
 * answer or fault through the host. */
void mp_call_run_request(struct mp_call *m);
/* The upstream's response is complete in m->resp: run the response hooks. */
void mp_call_run_response(struct mp_call *m);

/* The transport's decoded form of a side (its memory outlives the call):
 * the raw form is made from it only when asked for. */
void mp_call_set_decoded(struct mp_call *m, bool response, void *dec);
/* Does the call hold a response, raw or decoded? */
bool mp_call_has_response(const struct mp_call *m);
/* call.c, for the runner: re-encode a changed decoded request/response into
 * its stub (0, or -1 when it does not encode); forget the decoded form. */
int mp_call_reencode(struct mp_call *m, bool req);
void mp_call_drop_decoded(struct mp_call *m, bool req);

struct mp_session *mp_session_new(struct mp_modules *ms);
/* The call's arena (decoded structures, module allocations); NULL if out of
 * memory or built without codecs. */
struct mp_arena *mp_call_arena(struct mp_call *m);
#endif
