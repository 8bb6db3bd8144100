/* mpm_sample: the smallest useful mapiproxy module, and the one to copy.
 *
 * It counts the calls of each session and, when the session ends, logs how
 * many calls of each interface it saw and how many bytes went each way.
 * Options:
 *   mpm_sample:verbose = yes     also log every call as it completes
 *
 * Build:  cc -std=c17 -fPIC -shared -Iinclude mpm_sample.c -o mpm_sample.so
 * Use:    dcerpc_mapiproxy:modules = mpm_sample   (the .so in mapiproxy:module dir)
 * Walkthrough: doc/modules.md. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"

/* Configuration: read once in init, never changed afterwards. */
struct sample_conf {
    bool verbose;
};

/* Per-session state: lives in the session, freed by its destructor. */
struct sample_session {
    unsigned long calls, bytes_in, bytes_out;
};

static int sample_init(struct mp_module_ctx *mc)
{
    struct sample_conf *conf = calloc(1, sizeof(*conf));
    if (!conf)
        return -1;
    conf->verbose = mp_module_option_bool(mc, "verbose", false);
    mp_module_set_private(mc, conf);
    return 0;
}

static void sample_fini(struct mp_module_ctx *mc)
{
    free(mp_module_private(mc));
}

/* Request side: count the call and its size.  Raw hook: no decoding needed. */
static enum mp_status sample_ndr_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct mp_session *s = mp_call_session(call);
    struct sample_session *st = mp_session_data(s, mc);
    if (!st) {
        st = calloc(1, sizeof(*st));
        if (!st)
            return MP_ERROR; /* the client gets a fault; other sessions are unaffected */
        mp_session_set_data(s, mc, st, free);
    }
    size_t len;
    mp_call_request_stub(call, &len);
    st->calls++;
    st->bytes_in += len;
    return MP_CONTINUE;
}

/* Response side (runs in reverse module order). */
static enum mp_status sample_ndr_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct sample_session *st = mp_session_data(mp_call_session(call), mc);
    size_t len;
    mp_call_response_stub(call, &len);
    if (st)
        st->bytes_out += len;
    const struct sample_conf *conf = mp_module_private(mc);
    if (conf->verbose)
        mp_module_log(mc, MP_MLOG_INFO, "%s %s %s: %zu bytes back", mp_call_peer(call),
                      mp_call_iface(call), mp_call_op_name(call) ? mp_call_op_name(call) : "?",
                      len);
    return MP_CONTINUE;
}

/* The session ends: log the summary.  `data` is freed right after (free). */
static void sample_unbind(struct mp_module_ctx *mc, struct mp_session *s, void *data)
{
    const struct sample_session *st = data;
    mp_module_log(mc, MP_MLOG_INFO, "session %u: %lu calls, %lu bytes in, %lu bytes out",
                  mp_session_id(s), st->calls, st->bytes_in, st->bytes_out);
}

static const struct mp_module_want sample_wants[] = {
    {"exchange_emsmdb", MP_ALL_OPS},
    {"exchange_nsp", MP_ALL_OPS},
    {"exchange_ds_rfr", MP_ALL_OPS},
    {NULL, 0},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "mpm_sample",
    .description = "counts calls and bytes per session",
    .wants = sample_wants,
    .init = sample_init,
    .fini = sample_fini,
    .ndr_pull = sample_ndr_pull,
    .ndr_push = sample_ndr_push,
    .unbind = sample_unbind,
    /* ABI 5: it only watches.  Matters to modules with a message hook
     * (the proxy holds nothing for verdicts when every such module says
     * so); harmless here, and the right habit for an observer. */
    .flags = MP_MODULE_OBSERVES_ONLY,
};
