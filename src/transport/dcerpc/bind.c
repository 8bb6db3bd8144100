/* bind and alter_context: presentation contexts decided here or sent
 * upstream, and the upstream's answer merged back for the client. */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "chain/msgevents.h"
#include "core/log.h"
#include "ops/metrics.h"

_Thread_local struct mp_bind dce_scratch_bind;    /* one bind parsed at a time per worker */
_Thread_local struct mp_bind_ack dce_scratch_ack; /* per worker */

/* mapiproxy:online prefetch needs the ROPs: a pass-through association
 * (the client's own logon, relayed as it is, possibly sealed) has none for
 * the proxy.  Said once per relay. */
static void note_no_prefetch(struct assoc *a)
{
    struct mp_relay *r = a->r;
    if (r->prefetch_noted || !r->mods.online_prefetch || !mp_msgev_wanted(&r->mods))
        return;
    r->prefetch_noted = true;
    mp_warn("conn %s: an authenticated pass-through association: the proxy cannot see its ROPs, "
            "so mapiproxy:online prefetch (and every message event) does not apply to it "
            "(logged once)",
            a->peer);
}

static bool iface_allowed(const struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t i = 0; i < r->cfg->n_ifaces; i++)
        if (mp_iface_match(&r->cfg->ifaces[i], s->uuid, s->major, s->minor))
            return true;
    return false;
}

/* Decides each context of a client bind/alter: answered locally or sent
 * upstream (with NDR 2.0 as the only transfer syntax).  Fills m and the
 * upstream's bind in fwd.  Returns the number of contexts forwarded. */
int dce_split_contexts(struct assoc *a, const struct mp_bind *b, struct merge *m,
                       struct mp_bind *fwd)
{
    int n_fwd = 0;
    m->n = b->n_ctx;
    fwd->n_ctx = 0;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        const struct mp_pctx *c = &b->ctx[i];
        m->item[i].ctx_id = c->ctx_id;
        m->item[i].abstract = c->abstract;
        m->item[i].fwd = false;
        m->item[i].result = MP_CTX_PROVIDER_REJECTION;
        bool btfn = false, ndr20 = false;
        for (unsigned j = 0; j < c->n_ts; j++) {
            if (mp_syntax_eq(&c->ts[j], &mp_ndr20_syntax))
                ndr20 = true;
            else if (mp_syntax_is_btfn(&c->ts[j]))
                btfn = true;
        }
        bool local = a->local_epm || a->csec || a->state == A_DENIED;
        bool allowed = a->local_epm ? (!memcmp(c->abstract.uuid, mp_epm_syntax.uuid, 16) &&
                                       c->abstract.major == 3)
                                    : iface_allowed(a->r, &c->abstract);
        /* terminating with pass-through interfaces: an association is one or
         * the other, never both (else an alter_context smuggles a terminated
         * interface upstream unauthenticated) */
        if (allowed && !a->local_epm && a->r->auth.terminate && a->r->n_pt &&
            dce_iface_is_pt(a->r, &c->abstract) != !a->csec) {
            mp_warn("conn %s: presentation context %u (%s interface on a %s association) refused",
                    a->peer, c->ctx_id, a->csec ? "a pass-through" : "a terminated",
                    a->csec ? "terminated" : "pass-through");
            allowed = false;
        }
        if (btfn) {
            /* Bind-time feature negotiation: relayed so the client learns
             * what the upstream supports; answered locally when local. */
            if (local) {
                m->item[i].result = MP_CTX_NEGOTIATE_ACK;
                m->item[i].reason = 0;
                continue;
            }
        } else if (!allowed) {
            m->item[i].reason = MP_CTX_REASON_ABSTRACT_NOT_SUPPORTED;
            continue;
        } else if (!ndr20) {
            m->item[i].reason = MP_CTX_REASON_TRANSFER_NOT_SUPPORTED;
            continue;
        } else if (local) {
            m->item[i].result = MP_CTX_ACCEPT;
            m->item[i].reason = 0;
            dce_ctx_add(a, c->ctx_id, &c->abstract);
            if (a->csec) { /* the upstream gets it after the client authenticated */
                struct mp_pctx *f = &fwd->ctx[fwd->n_ctx++];
                *f = *c;
                f->n_ts = 1;
                f->ts[0] = mp_ndr20_syntax;
                n_fwd++;
            }
            continue;
        }
        m->item[i].fwd = true;
        struct mp_pctx *f = &fwd->ctx[fwd->n_ctx++];
        *f = *c;
        if (!btfn) {
            f->n_ts = 1;
            f->ts[0] = mp_ndr20_syntax;
        }
        n_fwd++;
    }
    return n_fwd;
}

/* Builds the client's bind_ack/alter_resp from the merge and, when the
 * upstream answered, its results (in forwarded order). */
void dce_answer_bind(struct assoc *a, const struct merge *m, const struct mp_bind_ack *up,
                     uint8_t flags, const struct mp_auth *auth)
{
    struct mp_bind_ack *ack = &dce_scratch_ack;
    memset(ack, 0, offsetof(struct mp_bind_ack, res));
    ack->max_xmit = a->c_xmit;
    ack->max_recv = a->c_recv;
    ack->assoc_group = a->shown_group ? a->shown_group : a->group ? a->group->id : 0;
    if (m->ptype == MP_PT_BIND)
        snprintf(ack->sec_addr, sizeof(ack->sec_addr), "%u",
                 a->local_epm ? a->r->epm_port : a->r->rpc_port);
    ack->n_results = m->n;
    unsigned k = 0;
    for (unsigned i = 0; i < m->n; i++) {
        struct mp_ctx_result *res = &ack->res[i];
        memset(res, 0, sizeof(*res));
        if (m->item[i].fwd && up && k < up->n_results) {
            *res = up->res[k++];
            if (res->result == MP_CTX_ACCEPT)
                dce_ctx_add(a, m->item[i].ctx_id, &m->item[i].abstract);
        } else if (m->item[i].fwd) {
            res->result = MP_CTX_PROVIDER_REJECTION;
            res->reason = MP_CTX_REASON_NONE;
        } else {
            res->result = m->item[i].result;
            res->reason = m->item[i].reason;
            if (res->result == MP_CTX_ACCEPT)
                res->ts = mp_ndr20_syntax;
            else if (res->result == MP_CTX_NEGOTIATE_ACK)
                res->reason = 0x0002; /* keep connection on orphan */
        }
    }
    uint8_t ptype = m->ptype == MP_PT_BIND ? MP_PT_BIND_ACK : MP_PT_ALTER_RESP;
    mp_build_bind_ack(&a->c.n.out, ptype, flags | MP_PFC_FIRST | MP_PFC_LAST, m->c_call_id, ack,
                      auth);
}

static void merge_push(struct assoc *a, struct merge *m)
{
    m->next = NULL;
    *a->merges_tail = m;
    a->merges_tail = &m->next;
}

static struct merge *merge_pop(struct assoc *a)
{
    struct merge *m = a->merges;
    if (m) {
        a->merges = m->next;
        if (!a->merges)
            a->merges_tail = &a->merges;
    }
    return m;
}

uint16_t dce_clamp_frag(uint16_t v)
{
    return v > MP_MAX_FRAG ? MP_MAX_FRAG : v < MP_MIN_FRAG ? MP_MIN_FRAG : v;
}

/* The answer being built for a client's bind or alter_context (ptype),
 * and the bind to forward upstream (*fwd); NULL, with the association
 * closed, when memory ran out. */
struct merge *dce_merge_new(struct assoc *a, uint8_t ptype, uint32_t call_id, struct mp_bind **fwd)
{
    struct merge *m = calloc(1, sizeof(*m));
    *fwd = calloc(1, sizeof(**fwd));
    if (!m || !*fwd) {
        free(m);
        free(*fwd);
        *fwd = NULL;
        dce_assoc_close(a, "out of memory");
        return NULL;
    }
    m->ptype = ptype;
    m->c_call_id = call_id;
    return m;
}

/* The client's bind: decide, then resolve/connect/bind upstream. */
void dce_handle_bind(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_relay *r = a->r;
    struct mp_bind *b = &dce_scratch_bind;
    if (mp_bind_parse(pdu, h, b)) {
        dce_client_protocol_error(a, h->call_id, "malformed bind");
        return;
    }
    if (b->n_ctx > MAX_CTX || b->n_ctx == 0) {
        mp_warn("conn %s: bind with %u presentation contexts refused (limit %d)", a->peer, b->n_ctx,
                MAX_CTX);
        mp_build_bind_nak(&a->c.n.out, h->call_id, MP_BNAK_LOCAL_LIMIT_EXCEEDED);
        dce_assoc_finish(a, "bind refused");
        return;
    }
    a->bind_max_xmit = b->max_xmit;
    a->bind_max_recv = b->max_recv;
    a->c_xmit = dce_clamp_frag(b->max_recv);
    a->c_recv = dce_clamp_frag(b->max_xmit);
    if (r->auth.terminate && !a->local_epm && dce_bind_pt_kind(r, b) < 0) {
        mp_warn("conn %s: bind mixes pass-through and terminated interfaces; refused", a->peer);
        mp_build_bind_nak(&a->c.n.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        dce_assoc_finish(a, "bind refused");
        return;
    }
    if (r->auth.terminate && !a->local_epm && !dce_bind_is_passthrough(r, b)) {
        dce_handle_bind_terminate(a, pdu, h, b);
        return;
    }
    struct mp_auth lv = {.level = 1};
    if (!a->local_epm && r->min_level_set && (!h->auth_len || !mp_pdu_auth(pdu, h, &lv)) &&
        lv.level < r->min_level) {
        mp_warn("conn %s: bind at authentication level %s, below mapiproxy:min client auth "
                "level %s; its calls get access denied, nothing relayed",
                a->peer, mp_dce_level_name(lv.level), mp_dce_level_name(r->min_level));
        dce_deny_bind(a, b, h->call_id);
        return;
    }
    if (h->auth_len) {
        if (a->local_epm) {
            mp_warn("conn %s: authenticated bind to the local endpoint mapper refused", a->peer);
            mp_build_bind_nak(&a->c.n.out, h->call_id, 8 /* authentication type not recognized */);
            dce_assoc_finish(a, "bind refused");
            return;
        }
        a->passthrough = true;
        note_no_prefetch(a);
    }
    char ident[80];
    dce_addr_ident(a, ident, sizeof(ident));
    if (dce_join_group(a, b->assoc_group, ident, 0)) {
        return;
    }
    if (!a->group) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    struct mp_bind *fwd;
    struct merge *m = dce_merge_new(a, MP_PT_BIND, h->call_id, &fwd);
    if (!m)
        return;
    int n_fwd = dce_split_contexts(a, b, m, fwd);
    if (a->local_epm || n_fwd == 0) {
        a->state = a->local_epm ? A_OPEN : A_LOCAL;
        if (!a->local_epm)
            mp_info("conn %s: bind with no relayable context; answered locally", a->peer);
        dce_answer_bind(a, m, NULL, 0, NULL);
        free(m);
        free(fwd);
        return;
    }
    /* The upstream bind.  Fragment sizes: our own offer on the upstream leg,
     * except in pass-through mode where both legs must agree. */
    fwd->max_xmit = a->passthrough ? b->max_xmit : MP_MAX_FRAG;
    fwd->max_recv = a->passthrough ? b->max_recv : MP_MAX_FRAG;
    fwd->assoc_group = a->group->up_id;
    uint32_t up_call = a->passthrough ? h->call_id : a->next_u_call++;
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    int rc = mp_build_bind(&a->pending_bind, MP_PT_BIND, h->flags, up_call, fwd, ap);
    for (unsigned i = 0; i < fwd->n_ctx; i++)
        if (!mp_syntax_is_btfn(&fwd->ctx[i].ts[0])) {
            a->target = fwd->ctx[i].abstract;
            break;
        }
    free(fwd);
    if (rc) {
        free(m);
        dce_client_protocol_error(a, h->call_id, "bind too large to relay");
        return;
    }
    merge_push(a, m);
    dce_start_upstream(a);
}

void dce_handle_alter(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_bind *b = &dce_scratch_bind;
    if (mp_bind_parse(pdu, h, b) || b->n_ctx == 0) {
        dce_client_protocol_error(a, h->call_id, "malformed alter_context");
        return;
    }
    if (b->n_ctx + a->n_ctx > MAX_CTX) {
        dce_client_protocol_error(a, h->call_id, "too many presentation contexts");
        return;
    }
    struct mp_bind *fwd;
    struct merge *m = dce_merge_new(a, MP_PT_ALTER, h->call_id, &fwd);
    if (!m)
        return;
    if (h->auth_len && !a->csec) {
        a->passthrough = true;
        note_no_prefetch(a);
    }
    int n_fwd = dce_split_contexts(a, b, m, fwd);
    if (a->csec && a->state == A_OPEN) {
        /* terminated: the client is answered here; the upstream learns the
         * new contexts on the proxy's own security context.  An auth
         * trailer builds a further client security context. */
        struct mp_auth reply;
        struct mp_buf tok = {0};
        if (h->auth_len && dce_alter_security(a, pdu, h, &reply, &tok)) {
            mp_buf_free(&tok);
            free(m);
            free(fwd);
            return;
        }
        dce_answer_bind(a, m, NULL, 0, h->auth_len && tok.len ? &reply : NULL);
        mp_buf_free(&tok);
        m->n = 0;
        fwd->max_xmit = fwd->max_recv = MP_MAX_FRAG;
        fwd->assoc_group = a->group->up_id;
        if (n_fwd && mp_build_bind(&a->u.n.out, MP_PT_ALTER, MP_PFC_FIRST | MP_PFC_LAST,
                                   a->next_u_call++, fwd, NULL) == 0)
            merge_push(a, m);
        else
            free(m);
        free(fwd);
        return;
    }
    if (a->state != A_OPEN || a->local_epm || !n_fwd) {
        if (h->auth_len && !a->local_epm)
            mp_warn("conn %s: authenticated alter_context without upstream; refused", a->peer);
        dce_answer_bind(a, m, NULL, 0, NULL);
        free(m);
        free(fwd);
        return;
    }
    fwd->max_xmit = b->max_xmit;
    fwd->max_recv = b->max_recv;
    fwd->assoc_group = b->assoc_group ? a->group->up_id : 0;
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    uint32_t up_call = a->passthrough ? h->call_id : a->next_u_call++;
    int rc = mp_build_bind(&a->u.n.out, MP_PT_ALTER, h->flags, up_call, fwd, ap);
    free(fwd);
    if (rc) {
        free(m);
        dce_client_protocol_error(a, h->call_id, "alter_context too large to relay");
        return;
    }
    merge_push(a, m);
}

/* Accepts the bind here (a new group, nothing upstream) and puts the
 * association in A_DENIED: each call gets a fault access denied. */
void dce_deny_bind(struct assoc *a, const struct mp_bind *b, uint32_t call_id)
{
    a->state = A_DENIED;
    a->shown_group = dce_group_fresh_id(a->r);
    struct mp_bind *none = calloc(1, sizeof(*none));
    struct merge *m = calloc(1, sizeof(*m));
    if (!none || !m) {
        free(none);
        free(m);
        dce_assoc_close(a, "out of memory");
        return;
    }
    m->ptype = MP_PT_BIND;
    m->c_call_id = call_id;
    dce_split_contexts(a, b, m, none);
    dce_answer_bind(a, m, NULL, 0, NULL);
    free(none);
    free(m);
}

void dce_upstream_bind_ack(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (a->usec && a->state == A_WAIT_ACK && h->ptype != MP_PT_ALTER_RESP) {
        dce_upstream_bind_ack_terminate(a, pdu, h);
        return;
    }
    if (a->usec && h->ptype == MP_PT_ALTER_RESP) { /* the client was answered already */
        free(merge_pop(a));
        return;
    }
    struct merge *m = merge_pop(a);
    if (!m) {
        dce_upstream_failed(a, "sent an unexpected bind answer");
        return;
    }
    if (h->ptype == MP_PT_BIND_NAK) {
        uint16_t reason = h->frag_len >= 18 ? mp_get16(pdu + 16) : 0;
        mp_warn("conn %s: upstream refused the bind (bind_nak reason %u)", a->peer, reason);
        mp_build_bind_nak(&a->c.n.out, m->c_call_id, reason);
        free(m);
        dce_assoc_finish(a, "upstream refused bind");
        return;
    }
    struct mp_bind_ack *up = &dce_scratch_ack;
    if (mp_bind_ack_parse(pdu, h, up)) {
        free(m);
        dce_upstream_failed(a, "sent a malformed bind answer");
        return;
    }
    struct mp_bind_ack upc = *up; /* answer_bind reuses the scratch */
    if (h->ptype == MP_PT_BIND_ACK) {
        mp_timer_cancel(a->r->loop, &a->timer);
        a->u_xmit = dce_clamp_frag(upc.max_recv);
        a->u_recv = dce_clamp_frag(upc.max_xmit);
        if (a->passthrough) {
            a->c_xmit = upc.max_xmit;
            a->c_recv = upc.max_recv;
        }
        if (a->group && !a->group->up_id)
            a->group->up_id = upc.assoc_group;
        a->state = A_OPEN;
    }
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    dce_answer_bind(a, m, &upc, h->flags & ~(MP_PFC_FIRST | MP_PFC_LAST), ap);
    free(m);
}
