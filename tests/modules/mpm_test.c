/* A test-only module, built several times under different names
 * (-DMODNAME=...), whose behaviour comes from its options:
 *   NAME:dispatch = continue | stop | error | pending
 *   NAME:push     = continue | again | error
 *   NAME:fault    = fault status for error (default 0x1c010002)
 * Every hook writes one log line, so tests read the order off the log. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"

#ifndef MODNAME
#define MODNAME mpm_test_a
#endif
#define STR2(x) #x
#define STR(x) STR2(x)

struct conf {
    char dispatch[16], push[16];
    uint32_t fault;
};

struct sdata {
    struct mp_module_ctx *mc;
    uint32_t session;
    int calls;
};

static const char *opt(struct mp_module_ctx *mc, const char *k, const char *d)
{
    const char *v = mp_module_option(mc, k);
    return v ? v : d;
}

static int t_init(struct mp_module_ctx *mc)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    strncpy(c->dispatch, opt(mc, "dispatch", "continue"), sizeof(c->dispatch) - 1);
    strncpy(c->push, opt(mc, "push", "continue"), sizeof(c->push) - 1);
    c->fault = (uint32_t)strtoul(opt(mc, "fault", "0x1c010002"), NULL, 0);
    mp_module_set_private(mc, c);
    mp_module_log(mc, 2, "init dispatch=%s push=%s", c->dispatch, c->push);
    return 0;
}

static void t_fini(struct mp_module_ctx *mc)
{
    free(mp_module_private(mc));
}

static void hook_log(struct mp_module_ctx *mc, struct mp_call *call, const char *hook)
{
    size_t lreq = 0, lresp = 0;
    mp_call_request_stub(call, &lreq);
    mp_call_response_stub(call, &lresp);
    mp_module_log(mc, 2, "hook=%s op=%s req=%zu resp=%zu relays=%u", hook,
                  mp_call_op_name(call) ? mp_call_op_name(call) : "?", lreq, lresp,
                  mp_call_relay_count(call));
}

static void sdata_free(void *p)
{
    struct sdata *d = p;
    mp_module_log(d->mc, 2, "session data freed session=%u calls=%d", d->session, d->calls);
    free(d);
}

static enum mp_status t_ndr_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    hook_log(mc, call, "ndr_pull");
    struct mp_session *s = mp_call_session(call);
    struct sdata *d = mp_session_data(s, mc);
    if (!d) {
        d = calloc(1, sizeof(*d));
        if (!d)
            return MP_ERROR;
        d->mc = mc;
        d->session = mp_session_id(s);
        mp_session_set_data(s, mc, d, sdata_free);
    }
    d->calls++;
    mp_module_log(mc, 2, "session=%u calls=%d", d->session, d->calls);
    return MP_CONTINUE;
}

static enum mp_status t_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    hook_log(mc, call, "pull");
    return MP_CONTINUE;
}

/* RfrGetFQDNFromServerDN's response: a ref pointer to a string, then the status. */
static void canned_fqdn(struct mp_call *call)
{
    static const char name[] = "answered.by.module";
    uint8_t b[64] = {0};
    uint32_t n = sizeof(name);
    size_t o = 0;
    uint32_t v[4] = {0x00020000u, n, 0, n};
    for (int i = 0; i < 4; i++, o += 4)
        memcpy(b + o, &v[i], 4);
    memcpy(b + o, name, n);
    o += (n + 3) & ~3u;
    memset(b + o, 0, 4);
    o += 4;
    mp_call_set_response_stub(call, b, o);
}

static void resume_later(void *arg)
{
    mp_call_resume(arg, MP_CONTINUE);
}

static enum mp_status t_dispatch(struct mp_module_ctx *mc, struct mp_call *call)
{
    hook_log(mc, call, "dispatch");
    struct conf *c = mp_module_private(mc);
    if (!strcmp(c->dispatch, "stop") && mp_call_opnum(call) == 1 &&
        !strcmp(mp_call_iface(call), "exchange_ds_rfr")) {
        canned_fqdn(call);
        return MP_STOP;
    }
    if (!strcmp(c->dispatch, "error")) {
        mp_call_fault(call, c->fault);
        return MP_ERROR;
    }
    if (!strcmp(c->dispatch, "pending")) {
        if (mp_module_after(mc, 100, resume_later, call))
            return MP_ERROR;
        return MP_PENDING;
    }
    return MP_CONTINUE;
}

static enum mp_status t_ndr_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    hook_log(mc, call, "ndr_push");
    return MP_CONTINUE;
}

static enum mp_status t_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    hook_log(mc, call, "push");
    struct conf *c = mp_module_private(mc);
    if (!strcmp(c->push, "again") && mp_call_relay_count(call) < 2)
        return MP_RELAY_AGAIN;
    if (!strcmp(c->push, "error"))
        return MP_ERROR;
    return MP_CONTINUE;
}

static void t_unbind(struct mp_module_ctx *mc, struct mp_session *s, void *data)
{
    mp_module_log(mc, 2, "unbind session=%u", mp_session_id(s));
}

static const struct mp_module_want wants[] = {
    {"exchange_ds_rfr", MP_ALL_OPS},
    {"exchange_nsp", MP_ALL_OPS},
    {NULL, 0},
};

const struct mp_module mp_module_descriptor = {
#ifdef BAD_ABI
    MP_MODULE_ABI_VERSION + 1000,
    (uint32_t)sizeof(struct mp_module),
#else
    MP_MODULE_HEADER,
#endif
    .name = STR(MODNAME),
    .description = "test module",
    .wants = wants,
    .init = t_init,
    .fini = t_fini,
    .ndr_pull = t_ndr_pull,
    .pull = t_pull,
    .dispatch = t_dispatch,
    .ndr_push = t_ndr_push,
    .push = t_push,
    .unbind = t_unbind,
};
