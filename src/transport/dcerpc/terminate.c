/* The association's side of terminated authentication: the PDUs that
 * carry tokens (bind, AUTH3, alter_context, the upstream's bind_ack), the
 * states they move the association through, and the worker's answers.  The
 * security itself is in src/auth/dcerpc_auth.c. */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "ops/metrics.h"

/* The upstream bind with the proxy's first token, into a->pending_bind. */
static int upstream_bind_build(struct assoc *a, const struct mp_buf *tok, char *why, size_t wl)
{
    struct mp_dce_sec *us = a->usec;
    if (tok->len > 0xffff) {
        snprintf(why, wl, "initial token of %zu bytes", tok->len);
        return -1;
    }
    struct mp_bind *fwd = a->up_fwd;
    fwd->max_xmit = fwd->max_recv = MP_MAX_FRAG;
    fwd->assoc_group = a->group->up_id;
    struct mp_auth up = {.type = us->type,
                         .level = us->level,
                         .context_id = us->ctx_id,
                         .value = tok->data,
                         .value_len = (uint16_t)tok->len};
    if (mp_build_bind(&a->pending_bind, MP_PT_BIND,
                      MP_PFC_FIRST | MP_PFC_LAST | MP_PFC_PENDING_CANCEL, a->next_u_call++, fwd,
                      &up)) {
        snprintf(why, wl, "cannot build the upstream bind");
        return -1;
    }
    for (unsigned i = 0; i < fwd->n_ctx; i++)
        if (!mp_syntax_is_btfn(&fwd->ctx[i].ts[0])) {
            a->target = fwd->ctx[i].abstract;
            break;
        }
    return 0;
}

/* Loop thread: winbind's answer is back; the PDU that carried the NTLM
 * response is handled again with it, then whatever the client sent since. */
static void wb_back(struct assoc *a, struct mp_kdc_job *j)
{
    a->job = NULL;
    mp_dce_sec_winbind_result(a->csec, j->wb);
    a->state = A_AUTH;
    struct mp_pdu_hdr h;
    if (mp_pdu_hdr_check(j->pdu.data, j->pdu.len, &h)) {
        dce_assoc_close(a, "internal error: the queued PDU");
        return;
    }
    dce_client_pdu(a, j->pdu.data, &h);
    if (a->dead)
        return;
    dce_client_input(a);
    if (!a->dead)
        dce_update_interest(a);
}

/* Loop thread: a job of the KDC/winbind worker is back (arg: the
 * transport).  Jobs whose association is gone are dropped. */
void dce_kdc_done(void *arg, struct mp_kdc_job *j)
{
    struct assoc *a = j->owner;
    if (a && j->wb) {
        wb_back(a, j);
    } else if (a) {
        a->job = NULL;
        struct mp_dce_sec *us = a->usec;
        us->gss = j->ctx;
        us->cred = j->cred;
        j->ctx = NULL;
        j->cred = NULL;
        char why[600];
        snprintf(why, sizeof(why), "%s", j->why);
        if (j->rc == 0 && upstream_bind_build(a, &j->tok, why, sizeof(why)) == 0)
            dce_start_upstream(a);
        else
            dce_upstream_failed(a, why);
        dce_update_interest(a);
    }
    mp_kdc_job_free(j);
}

/* mapiproxy:ntlm backend = winbind: the client's AUTH3 or alter_context
 * whose NTLM response winbind must check goes to the worker with the logon
 * client_auth_next prepared; the association waits in A_WINBIND (its input
 * is not read) until wb_back. */
static void wb_queue(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_dce_sec *cs = a->csec;
    struct mp_kdc_job *j = calloc(1, sizeof(*j));
    if (!j || mp_buf_append(&j->pdu, pdu, h->frag_len)) {
        if (j)
            mp_buf_free(&j->pdu);
        free(j);
        dce_assoc_close(a, "out of memory");
        return;
    }
    j->wb = cs->wb_pending;
    cs->wb_pending = NULL;
    j->owner = a;
    a->job = j;
    a->state = A_WINBIND;
    mp_kdc_enqueue(&a->r->auth.kdc, j);
}

/* The proxy's own security context towards the upstream.  NTLM here; with
 * Kerberos the KDC worker makes it (S4U2Self, S4U2Proxy, a service ticket)
 * while the association waits in A_KDC.  0, or -1 with why. */
static int upstream_prepare(struct assoc *a, char *why, size_t wl)
{
    struct mp_relay *r = a->r;
    struct mp_dce_sec *us = calloc(1, sizeof(*us));
    if (!us) {
        snprintf(why, wl, "out of memory");
        return -1;
    }
    a->usec = us;
    us->level = r->auth.up_level;
    us->ctx_id = 79231;
    if (r->auth.up_mode != MP_UP_NTLM) {
        us->type = MP_AUTHN_GSS_KERBEROS;
        struct mp_kdc_job *j = calloc(1, sizeof(*j));
        if (!j) {
            snprintf(why, wl, "out of memory");
            return -1;
        }
        j->owner = a;
        mp_dce_sec_s4u_user(&r->auth, a->csec, j->user, sizeof(j->user));
        a->job = j;
        a->state = A_KDC;
        mp_kdc_enqueue(&r->auth.kdc, j);
        return 0;
    }
    struct mp_buf tok = {0};
    int rc = mp_dce_sec_initiate_ntlm(&r->auth, us, &tok, why, wl);
    if (rc == 0)
        rc = upstream_bind_build(a, &tok, why, wl);
    mp_buf_free(&tok);
    if (rc == 0)
        dce_start_upstream(a);
    return rc ? -1 : 0;
}

/* The client proved who it is: log, then the upstream leg. */
static void client_authenticated(struct assoc *a)
{
    struct mp_dce_sec *cs = a->csec;
    cs->done = true;
    mp_info("conn %s: authenticated %s (%s, %s)", a->peer, cs->who, mp_dce_sec_mech(cs),
            mp_dce_level_name(cs->level));
    mp_metrics_auth(mp_dce_sec_mech(cs), cs->level >= a->r->min_level); /* below: refused */
    dce_tap_user(a, cs->who);                                           /* packet export by user */
    if (cs->level < a->r->min_level) {
        mp_warn("conn %s: %s authenticated at level %s, below mapiproxy:min client auth level "
                "%s; its calls get access denied, nothing relayed",
                a->peer, cs->who, mp_dce_level_name(cs->level), mp_dce_level_name(a->r->min_level));
        a->state = A_DENIED;
        return;
    }
    char ident[200];
    snprintf(ident, sizeof(ident), "user:%s", cs->who);
    if (dce_join_group(a, a->named_group, ident, a->shown_group))
        return;
    char why[512] = "";
    if (upstream_prepare(a, why, sizeof(why)))
        dce_upstream_failed(a, why);
}

/* The client's bind when the proxy terminates authentication: its first
 * token in (NTLM NEGOTIATE, SPNEGO, Kerberos AP-REQ), the answer out in a
 * bind_ack the proxy builds itself.  Nothing goes upstream before the client
 * has proven who it is. */
void dce_handle_bind_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                               const struct mp_bind *b)
{
    struct mp_auth auth;
    const char *why = NULL;
    if (!h->auth_len) {
        /* what Windows does: the bind is accepted, each call gets access
         * denied (a bind_nak would say "authentication type not recognized") */
        mp_warn("conn %s: the client sent no authentication (the proxy terminates "
                "authentication: clients authenticate to the proxy); its calls get access "
                "denied, nothing relayed",
                a->peer);
        dce_deny_bind(a, b, h->call_id);
        return;
    }
    if (mp_pdu_auth(pdu, h, &auth))
        why = "malformed auth trailer";
    else if (auth.type != MP_AUTHN_WINNT && auth.type != MP_AUTHN_GSS_NEGOTIATE &&
             auth.type != MP_AUTHN_GSS_KERBEROS)
        why = "only NTLM (10), SPNEGO (9) and Kerberos (16) are accepted from clients";
    else if (auth.level < MP_AUTHN_LEVEL_CONNECT || auth.level > MP_AUTHN_LEVEL_PKT_PRIVACY)
        why = "unknown authentication level";
    if (why) {
        mp_warn("conn %s: bind refused: %s (the proxy terminates authentication: clients "
                "authenticate to the proxy)",
                a->peer, why);
        mp_build_bind_nak(&a->c.n.out, h->call_id, 8 /* authentication type not recognized */);
        dce_assoc_finish(a, "bind refused");
        return;
    }
    /* The group is joined once the client has proven who it is
     * (client_authenticated); until then it is told the id it named, or a
     * fresh one, whatever that group is: the answer says nothing. */
    a->named_group = b->assoc_group;
    a->shown_group = b->assoc_group ? b->assoc_group : dce_group_fresh_id(a->r);
    struct mp_dce_sec *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        dce_assoc_close(a, "out of memory");
        return;
    }
    struct mp_bind *fwd;
    struct merge *m = dce_merge_new(a, MP_PT_BIND, h->call_id, &fwd);
    if (!m) {
        free(cs);
        return;
    }
    a->csec = cs;
    a->up_fwd = fwd;
    cs->type = auth.type;
    cs->level = auth.level;
    cs->ctx_id = auth.context_id;
    cs->header_sign = (h->flags & MP_PFC_PENDING_CANCEL) != 0; /* SUPPORT_HEADER_SIGN */
    struct mp_buf reply_tok = {0};
    char reason[400] = "";
    int st = mp_dce_sec_accept_first(&a->r->auth, cs, &auth, &reply_tok, reason, sizeof(reason));
    if (st == MP_GSS_FAILED || reply_tok.len > 0xffff) {
        mp_warn("conn %s: bind refused: %s authentication failed: %s; access denied, nothing "
                "relayed",
                a->peer, mp_dce_sec_mech(cs), reason[0] ? reason : "token too large");
        mp_metrics_auth(mp_dce_sec_mech(cs), false);
        mp_build_bind_nak(&a->c.n.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        dce_assoc_finish(a, "bind refused");
        mp_buf_free(&reply_tok);
        free(m);
        return;
    }
    int n_fwd = dce_split_contexts(a, b, m, fwd);
    struct mp_auth reply = {.type = cs->type,
                            .level = cs->level,
                            .context_id = cs->ctx_id,
                            .value = reply_tok.data,
                            .value_len = (uint16_t)reply_tok.len};
    dce_answer_bind(a, m, NULL, h->flags & MP_PFC_PENDING_CANCEL, &reply);
    mp_buf_free(&reply_tok);
    free(m);
    a->state = A_AUTH;
    if (!n_fwd) {
        mp_warn("conn %s: no relayable presentation context", a->peer);
        a->state = A_DENIED;
        return;
    }
    if (st == MP_GSS_DONE) { /* a one-leg mechanism: nothing more from the client */
        char r2[400] = "";
        struct mp_auth none = auth;
        none.value_len = 0;
        if (mp_dce_sec_accept_next(&a->r->auth, cs, &none, false, &reply_tok, r2, sizeof(r2)) !=
            MP_GSS_DONE) {
            mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed",
                    a->peer, cs->who[0] ? cs->who : "?", r2);
            a->state = A_DENIED;
        } else {
            client_authenticated(a);
        }
        mp_buf_free(&reply_tok);
    }
}

/* The client's last leg in an AUTH3 (NTLM AUTHENTICATE, Kerberos AP-REP). */
void dce_handle_auth3_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_dce_sec *cs = a->csec;
    struct mp_auth auth;
    if (mp_pdu_auth(pdu, h, &auth) || auth.type != cs->type || auth.context_id != cs->ctx_id) {
        dce_client_protocol_error(a, h->call_id, "auth3 without the security context's token");
        return;
    }
    struct mp_buf out = {0};
    char why[400] = "";
    int st = mp_dce_sec_accept_next(&a->r->auth, cs, &auth, false, &out, why, sizeof(why));
    mp_buf_free(&out); /* an AUTH3 has no answer */
    if (st == MP_DCE_SEC_PENDING) {
        wb_queue(a, pdu, h);
        return;
    }
    if (st == MP_GSS_CONTINUE)
        snprintf(why, sizeof(why), "a token that needs an answer came in an AUTH3");
    if (st != MP_GSS_DONE) {
        mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed", a->peer,
                cs->who[0] ? cs->who : mp_dce_sec_mech(cs), why);
        mp_metrics_auth(mp_dce_sec_mech(cs), false);
        a->state = A_DENIED;
        return;
    }
    client_authenticated(a);
}

/* The client's next leg in an alter_context (what SPNEGO clients and
 * Impacket's Kerberos do; SPNEGO switched to NTLM has two): answered with
 * alter_context_resp carrying the
 * next token, or a fault access denied. */
void dce_handle_alter_auth(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_dce_sec *cs = a->csec;
    struct mp_bind *b = &dce_scratch_bind;
    struct mp_auth auth;
    if (mp_bind_parse(pdu, h, b) || b->n_ctx == 0 || b->n_ctx + a->n_ctx > MAX_CTX ||
        mp_pdu_auth(pdu, h, &auth) || auth.type != cs->type || auth.context_id != cs->ctx_id) {
        dce_client_protocol_error(a, h->call_id,
                                  "alter_context without the security context's token");
        return;
    }
    struct mp_buf out = {0};
    char why[400] = "";
    int st = mp_dce_sec_accept_next(&a->r->auth, cs, &auth, true, &out, why, sizeof(why));
    if (st == MP_DCE_SEC_PENDING) {
        mp_buf_free(&out);
        wb_queue(a, pdu, h);
        return;
    }
    if (st == MP_GSS_FAILED || out.len > 0xffff) {
        mp_buf_free(&out);
        mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed", a->peer,
                cs->who[0] ? cs->who : mp_dce_sec_mech(cs), why);
        mp_metrics_auth(mp_dce_sec_mech(cs), false);
        mp_build_fault(&a->c.n.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        dce_assoc_finish(a, "access denied");
        return;
    }
    struct mp_bind *fwd;
    struct merge *m = dce_merge_new(a, MP_PT_ALTER, h->call_id, &fwd);
    if (!m) {
        mp_buf_free(&out);
        return;
    }
    dce_split_contexts(a, b, m, fwd);
    for (unsigned i = 0; i < fwd->n_ctx; i++) { /* new contexts join the upstream bind */
        bool have = false;
        for (unsigned j = 0; j < a->up_fwd->n_ctx; j++)
            have |= a->up_fwd->ctx[j].ctx_id == fwd->ctx[i].ctx_id;
        if (!have && a->up_fwd->n_ctx < MAX_CTX)
            a->up_fwd->ctx[a->up_fwd->n_ctx++] = fwd->ctx[i];
    }
    struct mp_auth reply = {.type = cs->type,
                            .level = cs->level,
                            .context_id = cs->ctx_id,
                            .value = out.data,
                            .value_len = (uint16_t)out.len};
    dce_answer_bind(a, m, NULL, 0, out.len ? &reply : NULL);
    mp_buf_free(&out);
    free(m);
    free(fwd);
    if (st == MP_GSS_DONE)
        client_authenticated(a);
}

/* ---- further client security contexts (terminated) ----
 *
 * After the logon a client may build another security context on the same
 * connection with an alter_context naming a new auth_context_id (MS-RPCE
 * 3.3.1.5.2.1, 3.3.1.5.4; Impacket's alter_ctx does, with a fresh NTLM
 * NEGOTIATE, then an AUTH3).  Each is checked like the first and must prove
 * the same identity as the association's first one; requests name theirs in
 * the sec_trailer and their answers are protected with it.  A further token
 * for an established context is refused with a fault access denied (Samba's
 * dcesrv_auth_alter does the same). */
struct mp_dce_sec *dce_client_sec_by_id(struct assoc *a, uint32_t id)
{
    if (a->csec && a->csec->ctx_id == id)
        return a->csec;
    for (size_t i = 0; i < a->n_cx; i++)
        if (a->cx[i]->ctx_id == id)
            return a->cx[i];
    return NULL;
}

/* A leg finished: the identity must be the association's.  NULL or why not. */
static const char *sec_established(struct assoc *a, struct mp_dce_sec *s, int st,
                                   const char *reason)
{
    if (st == MP_DCE_SEC_PENDING)
        return "a further security context cannot be checked through winbind";
    if (st == MP_GSS_FAILED)
        return reason;
    if (st != MP_GSS_DONE)
        return NULL; /* more legs to come */
    if (strcasecmp(s->who, a->csec->who))
        return "it is another user than the association's";
    s->done = true;
    mp_info("conn %s: security context %u: authenticated %s (%s, %s)", a->peer, s->ctx_id, s->who,
            mp_dce_sec_mech(s), mp_dce_level_name(s->level));
    return NULL;
}

static void sec_refused(struct assoc *a, uint32_t ctx_id, const char *why)
{
    mp_warn("conn %s: security context %u refused: %s; access denied", a->peer, ctx_id, why);
}

/* The alter_context's auth trailer: the first or a next leg of a further
 * security context.  0 with the reply token in tok (reply points into it),
 * or -1 after a fault access denied. */
int dce_alter_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                       struct mp_auth *reply, struct mp_buf *tok)
{
    struct mp_auth auth;
    struct mp_dce_sec *s = NULL;
    const char *why = NULL;
    char reason[400] = "";
    int st = MP_GSS_FAILED;
    if (mp_pdu_auth(pdu, h, &auth)) {
        why = "malformed auth trailer";
    } else if ((s = dce_client_sec_by_id(a, auth.context_id)) && s->done) {
        why = "a further token for an established security context";
    } else if (s) {
        why = auth.type != s->type || auth.level != s->level ? "auth type or level changed" : NULL;
        if (!why)
            st = mp_dce_sec_accept_next(&a->r->auth, s, &auth, true, tok, reason, sizeof(reason));
    } else if (a->n_cx >= MAX_CSEC - 1) {
        why = "too many security contexts on one connection";
    } else if (auth.level < a->r->min_level || auth.level > MP_AUTHN_LEVEL_PKT_PRIVACY) {
        why = "authentication level below mapiproxy:min client auth level";
    } else if (!(s = calloc(1, sizeof(*s)))) {
        why = "out of memory";
    } else {
        a->cx[a->n_cx++] = s;
        s->type = auth.type;
        s->level = auth.level;
        s->ctx_id = auth.context_id;
        s->header_sign = a->csec->header_sign;
        st = mp_dce_sec_accept_first(&a->r->auth, s, &auth, tok, reason, sizeof(reason));
        if (st == MP_GSS_DONE) { /* a one-leg mechanism */
            struct mp_auth none = auth;
            none.value_len = 0;
            st = mp_dce_sec_accept_next(&a->r->auth, s, &none, true, tok, reason, sizeof(reason));
        }
    }
    if (!why && s)
        why = sec_established(a, s, st, reason[0] ? reason : "authentication failed");
    if (!why && tok->len > 0xffff)
        why = "reply token too large";
    if (why) {
        sec_refused(a, s ? s->ctx_id : 0, why);
        mp_build_fault(&a->c.n.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        dce_assoc_finish(a, "access denied");
        return -1;
    }
    *reply = (struct mp_auth){.type = s->type,
                              .level = s->level,
                              .context_id = s->ctx_id,
                              .value = tok->data,
                              .value_len = (uint16_t)tok->len};
    return 0;
}

/* An AUTH3 after the logon: the last leg of a further security context.
 * It has no answer: a refused context stays unestablished, and the first
 * request on it gets a fault access denied (as in Samba). */
void dce_auth3_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_auth auth;
    struct mp_dce_sec *s = NULL;
    const char *why = NULL;
    char reason[400] = "";
    if (mp_pdu_auth(pdu, h, &auth) || !(s = dce_client_sec_by_id(a, auth.context_id)) || s->done ||
        auth.type != s->type) {
        why = "an AUTH3 for no security context being built";
        s = NULL;
    } else {
        struct mp_buf out = {0};
        int st = mp_dce_sec_accept_next(&a->r->auth, s, &auth, false, &out, reason, sizeof(reason));
        mp_buf_free(&out);
        why = st == MP_GSS_CONTINUE ? "a token that needs an answer came in an AUTH3"
                                    : sec_established(a, s, st, reason);
    }
    if (why && !s) {
        dce_client_protocol_error(a, h->call_id, why);
        return;
    }
    if (why) {
        sec_refused(a, s->ctx_id, why);
        s->type = 0; /* no further leg either */
    }
}

/* The upstream's bind_ack to the proxy's own bind: NTLM CHALLENGE in,
 * AUTHENTICATE out in an AUTH3; or the Kerberos AP-REP in, the DCE-style
 * AP-REP out in an AUTH3. */
void dce_upstream_bind_ack_terminate(struct assoc *a, const uint8_t *pdu,
                                     const struct mp_pdu_hdr *h)
{
    struct mp_relay *r = a->r;
    struct mp_dce_sec *us = a->usec;
    struct mp_bind_ack *ack = &dce_scratch_ack;
    struct mp_auth auth;
    if (h->ptype == MP_PT_BIND_NAK) {
        dce_upstream_failed(a, r->auth.up_mode == MP_UP_NTLM
                                   ? "refused the proxy's bind (bind_nak); check "
                                     "dcerpc_mapiproxy:username, :password and :domain"
                                   : "refused the proxy's Kerberos bind (bind_nak); check "
                                     "mapiproxy:upstream spn and the upstream's keytab");
        return;
    }
    if (mp_bind_ack_parse(pdu, h, ack) || mp_pdu_auth(pdu, h, &auth)) {
        dce_upstream_failed(a, "sent a bind_ack without an authentication token");
        return;
    }
    for (unsigned i = 0; i < ack->n_results; i++)
        if (ack->res[i].result != MP_CTX_ACCEPT && ack->res[i].result != MP_CTX_NEGOTIATE_ACK)
            mp_warn("conn %s: upstream refused presentation context #%u (reason %u); calls on "
                    "it will fail",
                    a->peer, i, ack->res[i].reason);
    us->header_sign = (h->flags & MP_PFC_PENDING_CANCEL) != 0;
    struct mp_buf out = {0};
    char why[400];
    if (mp_dce_sec_initiate_answer(us, &auth, &out, why, sizeof(why))) {
        mp_buf_free(&out);
        dce_upstream_failed(a, why);
        return;
    }
    /* AUTH3: header, 4 bytes of padding, sec_trailer, the token */
    uint8_t hdr[MP_HDR_LEN + 4 + MP_SEC_TRAILER_LEN] = {5, 0, MP_PT_AUTH3,
                                                        MP_PFC_FIRST | MP_PFC_LAST, 0x10};
    if (sizeof(hdr) + out.len > 0xffff) {
        mp_buf_free(&out);
        dce_upstream_failed(a, "authentication token too large");
        return;
    }
    mp_put16(hdr + 8, (uint16_t)(sizeof(hdr) + out.len));
    mp_put16(hdr + 10, (uint16_t)out.len);
    mp_put32(hdr + 12, a->next_u_call++);
    hdr[20] = us->type;
    hdr[21] = us->level;
    mp_put32(hdr + 24, us->ctx_id);
    if (mp_buf_append(&a->u.n.out, hdr, sizeof(hdr)) ||
        mp_buf_append(&a->u.n.out, out.data, out.len)) {
        mp_buf_free(&out);
        dce_assoc_close(a, "out of memory");
        return;
    }
    mp_buf_free(&out);
    mp_timer_cancel(r->loop, &a->timer);
    a->u_xmit = dce_clamp_frag(ack->max_recv);
    a->u_recv = dce_clamp_frag(ack->max_xmit);
    if (a->group && !a->group->up_id)
        a->group->up_id = ack->assoc_group;
    a->state = A_OPEN;
    free(a->up_fwd);
    a->up_fwd = NULL;
    if (us->gss)
        mp_debug("conn %s: authenticated to the upstream %s with Kerberos", a->peer,
                 r->cfg->upstream_spn);
    else
        mp_debug("conn %s: authenticated to the upstream as %s\\%s", a->peer, r->cfg->domain,
                 r->cfg->username);
}

/* A protected fragment in, its plaintext stub located: 0, or -1 after the
 * association was closed (a signature that does not verify ends it). */
int dce_unprotect(struct assoc *a, struct mp_dce_sec *sec, uint8_t *pdu, const struct mp_pdu_hdr *h,
                  size_t hl, const uint8_t **stub, size_t *len, bool from_client)
{
    if (mp_dce_sec_unprotect(sec, pdu, h, hl, stub, len) == 0) {
        dce_tap_clear(a, from_client ? &a->c : &a->u, true, pdu, hl, *stub, *len);
        return 0;
    }
    if (sec->level < MP_AUTHN_LEVEL_CALL) { /* connect: nothing to verify, only cut */
        dce_assoc_close(a, "truncated PDU");
        return -1;
    }
    mp_warn("conn %s: %s PDU fails its %s check (call %u); association closed", a->peer,
            from_client ? "client" : "upstream",
            sec->level == MP_AUTHN_LEVEL_PKT_PRIVACY ? "seal" : "signature", h->call_id);
    if (from_client)
        dce_assoc_close(a, "signature check failed");
    else
        dce_upstream_failed(a, "sent a PDU whose signature does not verify");
    return -1;
}
