/* Named properties the modules set (mp_module_map_name, module.h ABI 5)
 * mapped in every session by the proxy itself: after the upstream answered
 * the client's RopLogon of a private mailbox, and before the client gets
 * that response, one side request (ropstage.c mp_ropstage_side_request)
 * with RopGetPropertyIdsFromNames (Flags 0x02, create: MS-OXCROPS
 * 2.2.8.1) for the names the session's assembler does not know yet.  The
 * answer goes through the assembler like the client's own mappings
 * (assemble.c learn_name), so mp_message_set_named_string finds an id for
 * an upload even when the client never mapped the name.
 * doc/internals/module-api.md, "Named properties the proxy maps". */
#include "chain/msgnames.h"

#include <stdlib.h>
#include <string.h>

#include "auth/ntlm_crypto.h"
#include "chain/chain.h"
#include "chain/msgevents.h"
#include "chain/ropstage.h"
#include "chain/sidereq.h"
#include "core/arena.h"
#include "core/log.h"
#include "mapiproxy/rops.h"
#include "rop/rop.h"

#define EC_DO_RPC_EXT2 11
#define NAMED_CREATE 0x02 /* RopGetPropertyIdsFromNames Flags: create the mapping */

struct ncall {
    bool started;
    size_t n;            /* names asked */
    struct mp_sidereq h; /* the client's response; the side request */
};

void mp_msgnames_call_free(void *state)
{
    struct ncall *c = state;
    if (c)
        mp_sidereq_free(&c->h);
    free(c);
}

/* The client's RopLogon of a private mailbox that succeeded in this
 * response: its logon id and server handle.  -1 if none. */
static int private_logon(struct mp_call *m, uint8_t *logon_id, uint32_t *handle)
{
    size_t n = mp_call_rop_count(m, true);
    for (size_t i = 0; i < n; i++) {
        const struct mp_rop_rsp_Logon *r = mp_call_rop(m, true, i);
        int ri = mp_call_rop_request_index(m, i);
        const struct mp_rop_req_Logon *q = ri >= 0 ? mp_call_rop(m, false, (size_t)ri) : NULL;
        if (mp_call_rop_id(m, true, i) != MP_ROP_Logon || !r || !q || r->ReturnValue ||
            !(r->LogonFlags & 0x01))
            continue;
        /* the object tables follow this step: the handle from the response */
        uint32_t h = mp_ropstage_rsp_handle(m, r->OutputHandleIndex);
        if (h == 0xFFFFFFFFu)
            continue;
        *logon_id = q->LogonId;
        *handle = h;
        return 0;
    }
    return -1;
}

/* RopGetPropertyIdsFromNames for the names not known yet; 0 when none. */
static size_t build(struct mp_call *m, struct ncall *c, uint8_t logon_id, uint32_t handle)
{
    const struct mp_modules *ms = m->mods;
    struct mp_arena *a = mp_call_arena(m);
    struct mp_rop_PropertyName *pn = a ? mp_arena_calloc(a, ms->n_names, sizeof(*pn)) : NULL;
    struct mp_rop_req_GetPropertyIdsFromNames *q = a ? mp_arena_calloc(a, 1, sizeof(*q)) : NULL;
    if (!pn || !q)
        return 0;
    size_t k = 0;
    for (unsigned i = 0; i < ms->n_names; i++) {
        const char *name = ms->names[i].name;
        if (mp_msgev_name_id(m, ms->names[i].guid, name) >= 0)
            continue;
        size_t cap = strlen(name) * 2 + 2, len = 0;
        uint8_t *w = mp_arena_alloc(a, cap);
        if (!w || mp_utf8_to_utf16le(name, w, cap, &len) || len + 2 > cap || len + 2 > 255)
            continue;
        w[len] = w[len + 1] = 0; /* null-terminated (MS-OXCDATA 2.6.1) */
        pn[k] = (struct mp_rop_PropertyName){.Kind = 1, .NameSize = (uint8_t)(len + 2), .Name = w};
        memcpy(pn[k].Guid, ms->names[i].guid, 16);
        k++;
    }
    if (!k)
        return 0;
    q->RopId = MP_ROP_GetPropertyIdsFromNames;
    q->LogonId = logon_id;
    q->InputHandleIndex = 0;
    q->Flags = NAMED_CREATE;
    q->PropertyNameCount = (uint16_t)k;
    q->PropertyNames = pn;
    mp_sidereq_one_rop(&c->h, MP_ROP_GetPropertyIdsFromNames, q, handle);
    return k;
}

static void feed(struct mp_call *m, void *arg)
{
    (void)arg;
    mp_msgev_prefetch_rops(m, false); /* the assembler learns the names */
}

static void side_cb(struct mp_call *m)
{
    void **slot = mp_ropstage_names_call(m);
    struct ncall *c = slot ? *slot : NULL;
    if (!c)
        return;
    struct mp_rop_buf r = {0};
    if (mp_sidereq_answer(m, &c->h, &r))
        mp_warn("session %u: the upstream refused the proxy's RopGetPropertyIdsFromNames; "
                "named properties the client did not map are not set",
                mp_call_sid(m));
    else {
        mp_ropstage_side_view(m, &c->h.req, &r, feed, NULL);
        mp_debug("session %u: %zu named propert%s of the modules mapped", mp_call_sid(m), c->n,
                 c->n == 1 ? "y" : "ies");
    }
    /* no side_cb set: the client's response step runs again */
    mp_sidereq_restore(m, &c->h, "mapping named properties: the client's response");
}

int mp_msgnames_map(struct mp_call *m)
{
    if (!m->mods->n_names || m->opnum != EC_DO_RPC_EXT2 || !mp_msgev_verdicts_wanted(m->mods))
        return 0;
    void **slot = mp_ropstage_names_call(m);
    if (!slot || *slot)
        return 0; /* none, or the second response step after the side request */
    uint8_t logon_id;
    uint32_t handle;
    if (private_logon(m, &logon_id, &handle))
        return 0;
    struct ncall *c = calloc(1, sizeof(*c));
    if (!c)
        return 0;
    *slot = c;
    c->started = true;
    if (!(c->n = build(m, c, logon_id, handle)) || mp_sidereq_hold(m, &c->h))
        return 0;
    if (mp_sidereq_send(m, &c->h, side_cb)) {
        mp_warn("session %u: cannot send the proxy's RopGetPropertyIdsFromNames; named "
                "properties the client did not map are not set",
                mp_call_sid(m));
        return 0;
    }
    return 1;
}
