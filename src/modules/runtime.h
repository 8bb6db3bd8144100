/* The module runtime: loading, the hook chain, sessions, and the calls the
 * module API (include/mapiproxy/module.h) works on.  The relay creates a
 * struct mp_call for each call a module wants, feeds it the reassembled
 * request, and gets it back through the host callbacks to relay it, answer
 * it, or fault it. */
#ifndef MP_RUNTIME_H
#define MP_RUNTIME_H
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
};

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
    /* A module that must see every call it wants (mailbox authorization):
     * a call that cannot be handed to the chain is refused, never relayed
     * untouched. */
    bool fail_closed;
};

/* A session: a client's association group.  The relay keeps the group's
 * upstream id here too. */
struct mp_session {
    uint32_t id, up_id;
    unsigned refs;
    struct mp_session *next; /* relay's hash chain */
    struct mp_modules *mods;
    void (*on_free)(struct mp_session *s); /* relay unlinks it */
    struct mp_ropsess *rops;               /* server objects per EMSMDB context (ropcall.c) */
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
};

enum mp_call_stage {
    MPC_NDR_PULL,
    MPC_PULL,
    MPC_ROP_REQ,
    MPC_DISPATCH,
    MPC_UPSTREAM,
    MPC_NDR_PUSH,
    MPC_ROP_RSP,
    MPC_PUSH
};

struct mp_call {
    struct mp_modules *mods;
    const struct mp_call_host *host;
    void *owner; /* the relay's association, NULL once it has gone */
    struct mp_session *session;
    uint32_t mask; /* modules that want this call */
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
    const char *transport, *auth; /* static strings: mp_call_set_origin */
    uint16_t opnum, ctx_id;
    uint32_t c_id, u_id;
    uint8_t object[16];
    bool has_object;
    struct mp_buf req, resp;
    void *req_dec, *resp_dec;
    bool req_tried, resp_tried, req_changed, resp_changed;
    const struct mp_call_codec *codec;
    struct mp_arena *arena;
    uint32_t fault;
    enum mp_call_stage stage;
    int idx;      /* module index of the hook running or pending */
    int stop_idx; /* the module that answered (MP_STOP), or -1 */
    unsigned relays;
    bool pending;
    bool fault_set;
    bool running;            /* inside the chain: the host must not free it */
    struct mp_ropcall *rops; /* EcDoRpc/EcDoRpcExt2 with ROP modules (ropcall.c) */
    void *host_ctx;          /* the host's own pointer (kept when owner goes NULL) */
    uint64_t t0;
};

int mp_modules_load(struct mp_modules *ms, const struct mp_config *cfg, struct mp_loop *loop);
/* Finds module `name` as mp_modules_load does: a built-in, or
 * MODULE-DIR/NAME.so opened and checked (descriptor, ABI version, size, name).
 * Returns its descriptor (*dl: the dlopen handle of a shared object, else
 * NULL; the caller dlcloses it), or NULL with why ("module NAME: ...; fix"). */
const struct mp_module *mp_module_open(const struct mp_config *cfg, const char *name, void **dl,
                                       char *why, size_t wl);
void mp_modules_unload(struct mp_modules *ms);
/* Which modules want (uuid, opnum); 0 = none (fast path). */
uint32_t mp_modules_want(const struct mp_modules *ms, const uint8_t uuid[16], uint16_t opnum);

struct mp_call *mp_call_new(struct mp_modules *ms, const struct mp_call_host *host, uint32_t mask);
/* What mp_call_transport and mp_call_auth return (static strings). */
void mp_call_set_origin(struct mp_call *m, const char *transport, const char *auth);
void mp_call_free(struct mp_call *m);
/* The request is complete in m->req: run the request hooks, then relay,
 * answer or fault through the host. */
void mp_call_run_request(struct mp_call *m);
/* The upstream's response is complete in m->resp: run the response hooks. */
void mp_call_run_response(struct mp_call *m);

struct mp_session *mp_session_new(struct mp_modules *ms);
/* The call's arena (decoded structures, module allocations); NULL if out of
 * memory or built without codecs. */
struct mp_arena *mp_call_arena(struct mp_call *m);
#endif
