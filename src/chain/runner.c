/* The chain runner: request hooks in module order, the relay, response
 * hooks in reverse order; MP_STOP, MP_ERROR, MP_PENDING with
 * mp_call_resume, MP_RELAY_AGAIN.  See doc/internals/architecture.md
 * ("Call and chain"). */
#include "chain/chain.h"
#include "chain/services.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "dcerpc/pdu.h"

#define MAX_RELAYS 4

#define reencode mp_call_reencode
#define drop_decoded mp_call_drop_decoded

/* ------------------------------------------------------------------ */
/* the chain                                                           */

typedef mp_hook_fn hook_fn;

/* The stage provider running (MPC_STAGE_*). */
#define SP(m) ((m)->mods->stages[(m)->sp].p)

/* The first stage provider of the call from index k on, or -1. */
static int next_provider(const struct mp_call *m, int k)
{
    for (; k < (int)m->mods->n_stages; k++)
        if (m->stages & (1u << k))
            return k;
    return -1;
}

static hook_fn stage_hook(const struct mp_module *mod, enum mp_call_stage st)
{
    switch (st) {
    case MPC_NDR_PULL:
        return mod->ndr_pull;
    case MPC_PULL:
        return mod->pull;
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

static const char *stage_name(const struct mp_call *m)
{
    static const char *const n[] = {"ndr_pull", "pull",     "stage request",  "dispatch",
                                    "upstream", "ndr_push", "stage response", "push"};
    if (m->stage == MPC_STAGE_REQ || m->stage == MPC_STAGE_RSP)
        return SP(m)->hook_name[m->stage == MPC_STAGE_RSP];
    return n[m->stage];
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
    if (!m->host->decoded_form && reencode(m, false)) {
        m->fault = MP_NCA_S_FAULT_NDR;
        finish_fault(m, "a module's response does not encode");
        return;
    }
    if (!mp_call_has_response(m) && m->stop_idx >= 0 && m->fault_set) { /* answered: a fault */
        mp_debug("call %s %s(%u): answered by module %s with fault 0x%08x", mp_call_peer(m),
                 m->op_name ? m->op_name : m->iface, m->opnum, m->mods->mods[m->stop_idx].name,
                 m->fault);
        if (m->owner)
            m->host->fault(m);
        m->host->done(m);
        return;
    }
    if (!mp_call_has_response(m)) {
        finish_fault(m, "a module answered the call without a response");
        return;
    }
    if (m->owner)
        m->host->answer(m);
    m->host->done(m);
}

static void run(struct mp_call *m, int resumed);

/* The request (as it is now) to the upstream; the response comes back
 * through mp_call_run_response. */
static void go_upstream(struct mp_call *m)
{
    m->stage = MPC_UPSTREAM;
    mp_buf_free(&m->resp);
    drop_decoded(m, false);
    m->resp_modified = false;
    for (int k = next_provider(m, 0); k >= 0; k = next_provider(m, k + 1))
        m->mods->stages[k].p->reset_response(m);
    if (m->owner)
        m->host->relay(m);
    m->running = false;
    if (!m->owner) /* gone, possibly while relaying */
        m->host->done(m);
}

static void send_upstream(struct mp_call *m)
{
    if (!m->host->decoded_form && reencode(m, true)) {
        m->fault = MP_NCA_S_FAULT_NDR;
        finish_fault(m, "a module's request does not encode");
        return;
    }
    m->relays++;
    go_upstream(m);
}

/* A side request (chain.h, side_cb): the request as the stage provider
 * set it goes upstream; its response comes back to side_cb through
 * mp_call_run_response, without a hook.  Not counted in m->relays (a
 * module's MP_RELAY_AGAIN keeps its own limit). */
static void side_send(struct mp_call *m)
{
    if (!m->host->decoded_form && reencode(m, true)) {
        m->side_cb = NULL;
        m->fault = MP_NCA_S_FAULT_NDR;
        finish_fault(m, "a side request does not encode");
        return;
    }
    m->side_sp = m->sp;
    m->side_relays++;
    go_upstream(m);
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
                hook_fn h = NULL;
                if (!(m->mask & (1u << i)))
                    ;
                else if (m->stage == MPC_STAGE_REQ || m->stage == MPC_STAGE_RSP) {
                    bool rsp = m->stage == MPC_STAGE_RSP;
                    h = SP(m)->hook(ms->mods[i].m, rsp);
                    if (h && !SP(m)->count(m, rsp))
                        h = NULL; /* nothing decoded (e.g. ROPs that do not decode) */
                } else {
                    h = stage_hook(ms->mods[i].m, m->stage);
                }
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
                         m->op_name ? m->op_name : m->iface, ms->mods[i].name, stage_name(m));
                m->stage = MPC_NDR_PUSH;
                m->idx = i;
                goto next_round;
            case MP_ERROR: {
                char why[160];
                snprintf(why, sizeof(why), "module %s failed in %s", ms->mods[i].name,
                         stage_name(m));
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
                         ms->mods[i].name, (int)st, stage_name(m));
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
            m->sp = next_provider(m, 0);
            m->idx = 0;
            if (m->sp < 0) {
                m->stage = MPC_DISPATCH;
                break;
            }
            m->stage = MPC_STAGE_REQ;
            SP(m)->request(m);
            break;
        case MPC_STAGE_REQ: {
            int st = SP(m)->request_done(m);
            if (st < 0) {
                char why[160];
                snprintf(why, sizeof(why), "the %s request as modules changed it does not encode",
                         SP(m)->name);
                m->fault = MP_NCA_S_FAULT_NDR;
                finish_fault(m, why);
                return;
            }
            if (st == 1) { /* answered whole by the provider: nothing goes upstream */
                m->stop_idx = (int)ms->n - 1;
                m->stage = MPC_NDR_PUSH;
                m->idx = m->stop_idx;
                break;
            }
            m->idx = 0;
            m->sp = next_provider(m, m->sp + 1);
            if (m->sp < 0)
                m->stage = MPC_DISPATCH;
            else
                SP(m)->request(m);
            break;
        }
        case MPC_DISPATCH:
            for (int k = next_provider(m, 0); k >= 0; k = next_provider(m, k + 1))
                ms->stages[k].p->before_relay(m);
            send_upstream(m);
            return;
        case MPC_NDR_PUSH:
            m->idx = m->stop_idx >= 0 ? m->stop_idx : (int)ms->n - 1;
            m->sp = next_provider(m, 0);
            if (m->sp < 0) {
                m->stage = MPC_PUSH;
                break;
            }
            m->stage = MPC_STAGE_RSP;
            SP(m)->response(m);
            if (m->side_cb) {
                side_send(m);
                return;
            }
            break;
        case MPC_STAGE_RSP:
            if (SP(m)->response_done(m)) {
                char why[160];
                snprintf(why, sizeof(why), "the %s response as modules changed it does not encode",
                         SP(m)->name);
                m->fault = MP_NCA_S_FAULT_NDR;
                finish_fault(m, why);
                return;
            }
            m->idx = m->stop_idx >= 0 ? m->stop_idx : (int)ms->n - 1;
            m->sp = next_provider(m, m->sp + 1);
            if (m->sp < 0) {
                m->stage = MPC_PUSH;
            } else {
                SP(m)->response(m);
                if (m->side_cb) {
                    side_send(m);
                    return;
                }
            }
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
    mp_ident_request(m);
    m->stage = MPC_NDR_PULL;
    m->idx = 0;
    run(m, -1);
}

void mp_call_run_response(struct mp_call *m)
{
    if (m->side_cb) { /* the response to a side request: the provider's */
        void (*cb)(struct mp_call *) = m->side_cb;
        m->side_cb = NULL;
        m->running = true;
        m->sp = m->side_sp;
        m->stage = MPC_STAGE_RSP;
        m->idx = m->stop_idx >= 0 ? m->stop_idx : (int)m->mods->n - 1;
        cb(m);
        if (!m->side_cb) /* done: the client's response is back; the step again */
            SP(m)->response(m);
        if (m->side_cb) {
            side_send(m);
            return;
        }
        run(m, -1);
        return;
    }
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
