/* Calls: the request/response relay (the transparent fast path), the
 * module chain's host for calls modules want (the slow path), and the
 * calls the proxy answers itself (its endpoint mapper). */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "ops/metrics.h"

static const struct mp_call_host relay_host;

static struct call *call_by_c(struct assoc *a, uint32_t id)
{
    for (size_t i = 0; i < a->n_calls; i++)
        if (a->calls[i].c_id == id)
            return &a->calls[i];
    return NULL;
}

static struct call *call_by_u(struct assoc *a, uint32_t id)
{
    for (size_t i = 0; i < a->n_calls; i++)
        if (a->calls[i].u_id == id)
            return &a->calls[i];
    return NULL;
}

/* Lets go of a call's module state: a call parked in a module (MP_PENDING)
 * is freed when the module resumes it; any other is freed now. */
void dce_call_detach(struct call *c)
{
    struct mp_call *m = c->m;
    if (!m)
        return;
    c->m = NULL;
    m->owner = NULL;
    if (!m->pending && !m->running) /* else the chain frees it when it ends */
        mp_call_free(m);
}

static void call_remove(struct assoc *a, struct call *c)
{
    dce_call_detach(c);
    size_t i = (size_t)(c - a->calls);
    a->calls[i] = a->calls[--a->n_calls]; /* the array stays: no malloc per call */
}

static struct call *call_add(struct assoc *a)
{
    if (a->n_calls == a->cap_calls) {
        size_t cap = a->cap_calls ? a->cap_calls * 2 : 4;
        struct call *n = realloc(a->calls, cap * sizeof(*n));
        if (!n)
            return NULL;
        a->calls = n;
        a->cap_calls = cap;
    }
    struct call *c = &a->calls[a->n_calls++];
    memset(c, 0, sizeof(*c));
    return c;
}

static const struct pctx_entry *ctx_find(const struct assoc *a, uint16_t id)
{
    for (size_t i = 0; i < a->n_ctx; i++)
        if (a->ctx[i].ctx_id == id)
            return &a->ctx[i];
    return NULL;
}

void dce_ctx_add(struct assoc *a, uint16_t id, const struct mp_syntax *abstract)
{
    struct pctx_entry *e = (struct pctx_entry *)ctx_find(a, id);
    if (!e) {
        if (a->n_ctx >= MAX_CTX)
            return;
        struct pctx_entry *n = realloc(a->ctx, (a->n_ctx + 1) * sizeof(*n));
        if (!n)
            return;
        a->ctx = n;
        e = &a->ctx[a->n_ctx++];
    }
    e->ctx_id = id;
    e->abstract_known = true;
    memcpy(e->uuid, abstract->uuid, 16);
    e->info = mp_iface_by_uuid(abstract->uuid);
    if (e->info)
        snprintf(e->name, sizeof(e->name), "%s", e->info->name);
    else
        mp_uuid_format(abstract->uuid, e->name);
}

void dce_log_call(struct assoc *a, struct call *c, const char *status)
{
    const struct pctx_entry *e = ctx_find(a, c->ctx_id);
    const char *op = e ? mp_iface_op_name(e->info, c->opnum) : NULL;
    const char *user = a->csec && a->usec ? a->csec->who : NULL; /* terminated: who it is */
    mp_info("call %s %s %s(%u) in=%u out=%u lat=%.3fms status=%s%s%s", a->peer, e ? e->name : "?",
            op ? op : "op", c->opnum, c->in_bytes, c->out_bytes,
            (double)(mp_now_us() - c->t0) / 1000.0, status, user ? " user=" : "", user ? user : "");
    mp_metrics_call(e ? e->info : NULL, c->opnum, c->in_bytes, c->out_bytes, c->t0, status);
}

/* Copies one fragment into out, with a new call id, splitting it into
 * fragments of at most max_frag bytes when needed.  hdr_len is the
 * request/response header length (with an object UUID if any). */
static int forward_fragment(struct conn *dst, uint8_t *pdu, const struct mp_pdu_hdr *h,
                            uint32_t call_id, size_t max_frag)
{
    if (h->frag_len <= max_frag) {
        mp_put32(pdu + 12, call_id); /* in place: the input is consumed after this */
        return dce_conn_send(dst, pdu, h->frag_len);
    }
    bool req = h->ptype == MP_PT_REQUEST;
    size_t hl = req ? MP_REQ_HDR_LEN : MP_RESP_HDR_LEN;
    const uint8_t *object = NULL;
    if (req && (h->flags & MP_PFC_OBJECT_UUID)) {
        object = pdu + MP_REQ_HDR_LEN;
        hl += 16;
    }
    if (h->frag_len < hl)
        return -1;
    /* for a response, emit's opnum argument carries the cancel count */
    return dce_emit(dst, NULL, req, h->flags, call_id, mp_get16(pdu + 20),
                    req ? mp_get16(pdu + 22) : pdu[22], object, pdu + hl, h->frag_len - hl,
                    mp_get32(pdu + 16), max_frag);
}

/* Splits a whole response stub into fragments for the client. */
int dce_send_response_stub(struct assoc *a, struct mp_dce_sec *sec, uint32_t call_id,
                           uint16_t ctx_id, const uint8_t *stub, size_t len)
{
    return dce_emit(&a->c, sec, false, MP_PFC_FIRST | MP_PFC_LAST, call_id, ctx_id, 0, NULL, stub,
                    len, (uint32_t)len, a->c_xmit);
}

/* Appends fragments carrying stub to dst, each protected for the leg when
 * it signs or seals (sec may be NULL).  in_flags: the source's PFC flags;
 * PFC_FIRST/PFC_LAST go on the first/last piece only.  For a response,
 * opnum is the cancel count. */
int dce_emit(struct conn *dst, struct mp_dce_sec *sec, bool req, uint8_t in_flags, uint32_t call_id,
             uint16_t ctx_id, uint16_t opnum, const uint8_t *object, const uint8_t *stub,
             size_t len, uint32_t hint, size_t max_frag)
{
    bool prot = sec && sec->level >= MP_AUTHN_LEVEL_CALL; /* CALL and PKT sign too */
    size_t hl = MP_REQ_HDR_LEN + (object ? 16 : 0);
    size_t vlen = prot ? mp_dce_sec_vlen(sec) : 0;
    size_t room = max_frag - hl - (prot ? MP_SEC_TRAILER_LEN + vlen + 15 : 0);
    size_t chunk = room & ~(size_t)15, off = 0;
    /* room for every fragment at once: one allocation, not a doubling
     * chain for a large stub */
    size_t nfrag = len && chunk ? (len + chunk - 1) / chunk : 1;
    if (mp_buf_reserve(&dst->n.out, len + nfrag * (hl + MP_SEC_TRAILER_LEN + vlen + 16)))
        return -1;
    do {
        size_t k = len - off > chunk ? chunk : len - off;
        uint8_t fl = in_flags & ~(MP_PFC_FIRST | MP_PFC_LAST | MP_PFC_OBJECT_UUID);
        if (off == 0)
            fl |= in_flags & MP_PFC_FIRST;
        if (off + k == len)
            fl |= in_flags & MP_PFC_LAST;
        /* room for the whole fragment first: the verifier code below uses an
         * absolute offset, which a compacting append would invalidate */
        if (mp_buf_reserve(&dst->n.out, hl + k + MP_SEC_TRAILER_LEN + vlen + 16))
            return -1;
        size_t start = dst->n.out.len;
        int rc = req ? mp_build_request(&dst->n.out, fl, call_id, ctx_id, opnum, object, stub + off,
                                        k, hint > off ? hint - (uint32_t)off : 0)
                     : mp_build_response(&dst->n.out, fl, call_id, ctx_id, stub + off, k,
                                         hint > off ? hint - (uint32_t)off : 0);
        if (rc)
            return -1;
        if (!req)
            dst->n.out.data[start + 22] = (uint8_t)opnum; /* cancel count */
        if (prot)
            dce_tap_out(dst->a, dst); /* the packet export gets it in plaintext */
        if (prot && mp_dce_sec_protect(sec, &dst->n.out, start))
            return -1;
        if (prot)
            dce_tap_synced(dst->a, dst);
        off += k;
    } while (off < len);
    return 0;
}

void dce_local_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    size_t hl = MP_REQ_HDR_LEN + ((h->flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
    if (h->frag_len < hl || h->auth_len) {
        dce_client_protocol_error(a, h->call_id, "malformed request");
        return;
    }
    uint16_t ctx_id = mp_get16(pdu + 20), opnum = mp_get16(pdu + 22);
    if (h->flags & MP_PFC_FIRST) {
        mp_buf_free(&a->reasm);
        a->reasm_active = true;
        a->reasm_call = h->call_id;
        a->reasm_ctx = ctx_id;
        a->reasm_op = opnum;
    } else if (!a->reasm_active || a->reasm_call != h->call_id) {
        dce_client_protocol_error(a, h->call_id, "request fragment of no call in progress");
        return;
    }
    if (mp_buf_avail(&a->reasm) + (h->frag_len - hl) > MAX_LOCAL_STUB) {
        mp_warn("conn %s: local call larger than %d bytes refused", a->peer, MAX_LOCAL_STUB);
        mp_build_fault(&a->c.n.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, true);
        dce_assoc_finish(a, "call too large");
        return;
    }
    mp_buf_append(&a->reasm, pdu + hl, h->frag_len - hl);
    if (!(h->flags & MP_PFC_LAST))
        return;
    a->reasm_active = false;
    uint64_t t0 = mp_now_us();
    const struct pctx_entry *e = ctx_find(a, a->reasm_ctx);
    struct call c = {.c_id = h->call_id, .ctx_id = a->reasm_ctx, .opnum = a->reasm_op, .t0 = t0};
    c.in_bytes = (uint32_t)mp_buf_avail(&a->reasm);
    char status[32] = "ok";
    if (!e || a->state == A_LOCAL) {
        mp_build_fault(&a->c.n.out, h->call_id, a->reasm_ctx, MP_NCA_UNK_IF, true);
        snprintf(status, sizeof(status), "fault:0x%08x", MP_NCA_UNK_IF);
    } else {
        struct mp_buf out = {0};
        uint32_t st = mp_epm_serve(&a->r->reg, a->local_ip, a->reasm_op, mp_buf_head(&a->reasm),
                                   mp_buf_avail(&a->reasm), &out);
        if (st) {
            mp_build_fault(&a->c.n.out, h->call_id, a->reasm_ctx, st, true);
            snprintf(status, sizeof(status), "fault:0x%08x", st);
        } else {
            dce_send_response_stub(a, a->csec, h->call_id, a->reasm_ctx, mp_buf_head(&out),
                                   mp_buf_avail(&out));
            c.out_bytes = (uint32_t)mp_buf_avail(&out);
        }
        mp_buf_free(&out);
    }
    mp_buf_free(&a->reasm);
    a->n_done++;
    if (e)
        dce_log_call(a, &c, status);
    else
        mp_info("call %s ? op(%u) in=%u out=0 status=%s", a->peer, c.opnum, c.in_bytes, status);
}

/* The DCE/RPC fields of a call that modules want, kept in the call's
 * transport context (mp_call_ctx). */
struct dce_call {
    uint32_t c_id, u_id;
    uint16_t ctx_id;
    bool has_object;
    uint8_t object[16];
};

static struct call *call_of(struct mp_call *m)
{
    struct assoc *a = m->owner;
    const struct dce_call *d = mp_call_ctx(m);
    return a ? call_by_c(a, d->c_id) : NULL;
}

/* Sends the (possibly changed) request upstream, cut to the upstream's
 * fragment size. */
static void host_relay(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct dce_call *d = mp_call_ctx(m);
    struct call *c = call_of(m);
    if (!c)
        return;
    c->u_id = d->u_id = (a->passthrough || a->csec) ? c->c_id : a->next_u_call++;
    if (dce_emit(&a->u, a->usec, true, MP_PFC_FIRST | MP_PFC_LAST, d->u_id, d->ctx_id, m->opnum,
                 d->has_object ? d->object : NULL, mp_buf_head(&m->req), mp_buf_avail(&m->req),
                 (uint32_t)mp_buf_avail(&m->req), a->u_xmit)) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    dce_conn_flush(a, &a->u);
    if (!a->dead)
        dce_update_interest(a);
}

static void host_answer(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct call *c = call_of(m);
    if (!c)
        return;
    c->out_bytes = (uint32_t)mp_buf_avail(&m->resp);
    dce_log_call(a, c, m->stop_idx >= 0 ? "ok(module)" : "ok");
    const struct dce_call *d = mp_call_ctx(m);
    if (dce_send_response_stub(a, c->sec, d->c_id, d->ctx_id, mp_buf_head(&m->resp),
                               mp_buf_avail(&m->resp))) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    a->n_done++;
    c->m = NULL; /* host_done frees it */
    call_remove(a, c);
    dce_conn_flush(a, &a->c);
    if (!a->dead)
        dce_update_interest(a);
}

static void host_fault(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct call *c = call_of(m);
    if (!c)
        return;
    const struct dce_call *d = mp_call_ctx(m);
    mp_build_fault(&a->c.n.out, d->c_id, d->ctx_id, m->fault, m->stage < MPC_UPSTREAM);
    char status[32];
    snprintf(status, sizeof(status), "fault:0x%08x(module)", m->fault);
    dce_log_call(a, c, status);
    a->n_done++;
    c->m = NULL;
    call_remove(a, c);
    dce_conn_flush(a, &a->c);
    if (!a->dead)
        dce_update_interest(a);
}

static void host_done(struct mp_call *m)
{
    struct call *c = call_of(m);
    if (c)
        c->m = NULL;
    mp_call_free(m);
}

static const struct mp_call_host relay_host = {host_relay, host_answer, host_fault, host_done,
                                               .decoded_form = false};

/* On a call's first fragment: when modules want it, set it up for
 * reassembly.  Returns -1 when the association was closed. */
static int slow_path_start(struct assoc *a, struct call *c, const uint8_t *pdu,
                           const struct mp_pdu_hdr *h)
{
    const struct pctx_entry *e = ctx_find(a, c->ctx_id);
    if (!e || !e->abstract_known)
        return 0;
    uint32_t mask = mp_modules_want(&a->r->mods, e->uuid, c->opnum);
    if (!mask)
        return 0;
    const char *user = NULL;
    bool proxy_identity = false;
    if (a->csec) { /* terminated: who logged on, and whom the upstream sees */
        user = a->csec->who;
        proxy_identity = a->r->auth.up_mode != MP_UP_S4U;
    }
    struct mp_call_origin o = {
        .host = &relay_host,
        .owner = a,
        .session = a->group,
        .iface_uuid = e->uuid,
        .iface = e->name,
        .opnum = c->opnum,
        .op_name = mp_iface_op_name(e->info, c->opnum),
        .peer = a->peer,
        .user = user,
        .proxy_identity = proxy_identity,
        .transport = "rpc",
        .auth = !a->csec       ? "pass-through"
                : a->csec->gss ? "kerberos"
                               : "ntlm",
        .ctx_size = sizeof(struct dce_call),
    };
    struct mp_call *m = mp_call_new(&a->r->mods, mask, &o);
    if (!m) {
        dce_assoc_close(a, "out of memory");
        return -1;
    }
    struct dce_call *d = mp_call_ctx(m);
    d->ctx_id = c->ctx_id;
    d->c_id = c->c_id;
    if (h->flags & MP_PFC_OBJECT_UUID) {
        d->has_object = true;
        memcpy(d->object, pdu + MP_REQ_HDR_LEN, 16);
    }
    c->m = m;
    return 0;
}

void dce_relay_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    const struct mp_config *cfg = a->r->cfg;
    size_t hl = MP_REQ_HDR_LEN + ((h->flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
    if (h->frag_len < hl + (h->auth_len ? h->auth_len + MP_SEC_TRAILER_LEN : 0)) {
        dce_client_protocol_error(a, h->call_id, "request shorter than its header");
        return;
    }
    if (h->auth_len && !a->passthrough && !a->csec) {
        dce_client_protocol_error(a, h->call_id,
                                  "signed request on an unauthenticated association");
        return;
    }
    uint16_t ctx_id = mp_get16(pdu + 20), opnum = mp_get16(pdu + 22);
    uint32_t alloc_hint = mp_get32(pdu + 16);
    uint32_t stub_len = (uint32_t)(h->frag_len - hl);
    const uint8_t *stub = pdu + hl;
    struct mp_dce_sec *sec = a->csec;
    if (a->csec) {       /* terminated: verify and decrypt, go on with the plaintext */
        if (h->auth_len) /* the sec_trailer names the security context */
            sec = dce_client_sec_by_id(a, mp_get32(pdu + h->frag_len - h->auth_len - 4));
        if (!sec || !sec->done) {
            mp_warn("conn %s: request %u on no established security context; access denied",
                    a->peer, h->call_id);
            mp_build_fault(&a->c.n.out, h->call_id, ctx_id, MP_RPC_S_ACCESS_DENIED, true);
            dce_assoc_finish(a, "access denied");
            return;
        }
        size_t n;
        if (dce_unprotect(a, sec, (uint8_t *)pdu, h, hl, &stub, &n, true))
            return;
        stub_len = (uint32_t)n;
    }
    struct call *c = call_by_c(a, h->call_id);
    if (c && !(h->flags & MP_PFC_FIRST) && c->sec != sec) {
        dce_client_protocol_error(a, h->call_id, "request fragment on another security context");
        return;
    }
    if (h->flags & MP_PFC_FIRST) {
        if (c) {
            dce_client_protocol_error(a, h->call_id, "call id reused while in flight");
            return;
        }
        if (!ctx_find(a, ctx_id)) {
            mp_warn("conn %s: request on unknown presentation context %u", a->peer, ctx_id);
            mp_build_fault(&a->c.n.out, h->call_id, ctx_id, MP_NCA_UNK_IF, true);
            if (!(h->flags & MP_PFC_LAST))
                dce_assoc_finish(a, "request on unknown context");
            return;
        }
        if (alloc_hint > cfg->max_call_size) {
            mp_warn("conn %s: call %u announces %u bytes (alloc_hint), over max call size %u; "
                    "refused",
                    a->peer, h->call_id, alloc_hint, cfg->max_call_size);
            mp_build_fault(&a->c.n.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, true);
            if (!(h->flags & MP_PFC_LAST))
                dce_assoc_finish(a, "call too large");
            return;
        }
        c = call_add(a);
        if (!c) {
            dce_assoc_close(a, "out of memory");
            return;
        }
        c->c_id = h->call_id;
        c->sec = sec;
        c->u_id = (a->passthrough || a->csec) ? h->call_id : a->next_u_call++;
        c->ctx_id = ctx_id;
        c->opnum = opnum;
        c->t0 = mp_now_us();
        if (!a->passthrough && a->r->mods.n && slow_path_start(a, c, pdu, h) < 0)
            return;
    } else if (!c || c->req_done) {
        dce_client_protocol_error(a, h->call_id, "request fragment of no call in progress");
        return;
    }
    c->in_bytes += stub_len;
    c->frags++;
    uint32_t max_frags = cfg->max_fragments;
    if (c->in_bytes > cfg->max_call_size || c->frags > max_frags) {
        mp_warn("conn %s: call %u exceeds max call size %u bytes or %u fragments (%u bytes, %u "
                "fragments so far); faulted and closed",
                a->peer, h->call_id, cfg->max_call_size, max_frags, c->in_bytes, c->frags);
        mp_build_fault(&a->c.n.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, false);
        call_remove(a, c);
        dce_assoc_finish(a, "call too large");
        return;
    }
    if (h->flags & MP_PFC_LAST)
        c->req_done = true;
    if (c->m) { /* modules want it: reassemble, then run the chain */
        if (mp_buf_append(&c->m->req, stub, stub_len)) {
            dce_assoc_close(a, "out of memory");
            return;
        }
        if (c->req_done)
            mp_call_run_request(c->m);
        return;
    }
    int rc;
    if (a->usec)
        rc = dce_emit(&a->u, a->usec, true, h->flags, c->u_id, ctx_id, opnum,
                      (h->flags & MP_PFC_OBJECT_UUID) ? pdu + MP_REQ_HDR_LEN : NULL, stub, stub_len,
                      alloc_hint, a->u_xmit);
    else if (a->passthrough)
        rc = dce_conn_send(&a->u, pdu, h->frag_len);
    else
        rc = forward_fragment(&a->u, (uint8_t *)pdu, h, c->u_id, a->u_xmit);
    if (rc)
        dce_assoc_close(a, "out of memory");
}

/* co_cancel and orphaned: relayed with the call id mapped. */
void dce_relay_cancel(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct call *c = call_by_c(a, h->call_id);
    if (!c) {
        mp_debug("conn %s: %s for call %u not in flight; dropped", a->peer, mp_ptype_name(h->ptype),
                 h->call_id);
        return;
    }
    if (mp_buf_append(&a->u.n.out, pdu, h->frag_len)) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    mp_put32(a->u.n.out.data + a->u.n.out.len - h->frag_len + 12, c->u_id); /* found from the end */
    if (h->ptype == MP_PT_ORPHANED) {
        dce_log_call(a, c, "orphaned");
        call_remove(a, c);
    }
}

void dce_upstream_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    switch (h->ptype) {
    case MP_PT_BIND_ACK:
    case MP_PT_BIND_NAK:
    case MP_PT_ALTER_RESP:
        dce_upstream_bind_ack(a, pdu, h);
        return;
    case MP_PT_RESPONSE:
    case MP_PT_FAULT: {
        if (a->state != A_OPEN)
            break;
        struct call *c = call_by_u(a, h->call_id);
        if (!c) {
            mp_debug("conn %s: upstream answered call %u not in flight; dropped", a->peer,
                     h->call_id);
            return;
        }
        size_t hl = h->ptype == MP_PT_FAULT ? MP_FAULT_LEN : MP_RESP_HDR_LEN;
        if (h->frag_len < hl) {
            dce_upstream_failed(a, "sent a truncated response");
            return;
        }
        const uint8_t *rstub = pdu + hl;
        size_t rlen = h->frag_len - hl;
        if (a->usec && h->ptype == MP_PT_RESPONSE) {
            if (dce_unprotect(a, a->usec, (uint8_t *)pdu, h, hl, &rstub, &rlen, false))
                return;
        }
        if (c->m && h->ptype == MP_PT_FAULT && c->m->side_cb) {
            /* the proxy's own side request failed: its stage sees no
             * response (and stops reading ahead); the client's call goes on */
            mp_info("conn %s: upstream fault 0x%08x to the proxy's side request", a->peer,
                    mp_get32(pdu + 24));
            mp_buf_free(&c->m->resp);
            mp_call_run_response(c->m);
            return;
        }
        if (c->m && h->ptype == MP_PT_RESPONSE) {
            struct mp_call *m = c->m;
            if (mp_buf_avail(&m->resp) + rlen > a->r->cfg->max_call_size) {
                char why[96];
                snprintf(why, sizeof(why), "sent a response over max call size (%u bytes)",
                         a->r->cfg->max_call_size);
                dce_upstream_failed(a, why);
                return;
            }
            if (mp_buf_append(&m->resp, rstub, rlen)) {
                dce_assoc_close(a, "out of memory");
                return;
            }
            if (h->flags & MP_PFC_LAST)
                mp_call_run_response(m);
            return;
        }
        bool final = h->ptype == MP_PT_FAULT || (h->flags & MP_PFC_LAST);
        c->out_bytes += (uint32_t)(h->frag_len - hl);
        uint32_t c_id = c->c_id;
        struct mp_dce_sec *csec = c->sec;
        if (final) { /* logged before the answer leaves: a reader of the log never races it */
            char status[32] = "ok";
            if (h->ptype == MP_PT_FAULT)
                snprintf(status, sizeof(status), "fault:0x%08x", mp_get32(pdu + 24));
            if (!c->req_done)
                mp_debug("conn %s: upstream answered call %u before its last fragment", a->peer,
                         c->c_id);
            dce_log_call(a, c, status);
            a->n_done++;
            call_remove(a, c);
        }
        int rc;
        if (a->csec && h->ptype == MP_PT_FAULT)
            rc = mp_build_fault(&a->c.n.out, c_id, mp_get16(pdu + 20), mp_get32(pdu + 24),
                                (h->flags & MP_PFC_DID_NOT_EXECUTE) != 0);
        else if (a->csec)
            rc = dce_emit(&a->c, csec, false, h->flags, c_id, mp_get16(pdu + 20), 0, NULL, rstub,
                          rlen, mp_get32(pdu + 16), a->c_xmit);
        else
            rc = a->passthrough ? dce_conn_send(&a->c, pdu, h->frag_len)
                                : forward_fragment(&a->c, (uint8_t *)pdu, h, c_id, a->c_xmit);
        if (rc)
            dce_assoc_close(a, "out of memory");
        return;
    }
    case MP_PT_SHUTDOWN:
        mp_info("conn %s: upstream sent shutdown; relayed", a->peer);
        if (mp_buf_append(&a->c.n.out, pdu, h->frag_len))
            dce_assoc_close(a, "out of memory");
        return;
    default:
        break;
    }
    char what[96];
    snprintf(what, sizeof(what), "sent an unexpected PDU type %u (%s)", h->ptype,
             mp_ptype_name(h->ptype));
    dce_upstream_failed(a, what);
}
