/* Kerberos for DCE/RPC through MIT GSSAPI; see gss.h and
 * doc/internals/kerberos.md. */
#include "auth/gss.h"

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/dcerpc_sign.h"
#include "auth/spnego.h"
#include "dcerpc/pdu.h"

struct mp_gss_cred {
    gss_cred_id_t cred;
    char ccache[64]; /* a private MEMORY ccache to destroy with the credential */
};

struct mp_gss_ctx {
    bool initiator, established, dce_style, want_deleg, no_dce_style;
    uint8_t auth_type;
    int legs; /* tokens processed */
    gss_ctx_id_t ctx;
    gss_cred_id_t cred;  /* borrowed */
    gss_name_t target;   /* initiator */
    gss_name_t src_name; /* acceptor: the client */
    gss_cred_id_t deleg; /* acceptor: delegated credential, owned */
    OM_uint32 req_flags, ret_flags;
    char peer[256];
    char err[MP_GSS_ERRLEN];
    /* SPNEGO: the mechanism OID we answer with (the client's choice). */
    uint8_t spnego_mech[16];
    size_t spnego_mech_len;
    /* SPNEGO acceptor: the client's MechTypeList (what mechListMIC covers)
     * and, during a step, the mechListMIC it sent (points into the input). */
    uint8_t *mech_list;
    size_t mech_list_len;
    const uint8_t *peer_mic;
    size_t peer_mic_len;
};

static gss_OID_desc krb5_oid_desc = {9, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02"};
static gss_OID_set_desc krb5_set = {1, &krb5_oid_desc};

/* --- errors -------------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* "what: major text; minor text" */
static void gsserr(char *err, size_t errlen, const char *what, OM_uint32 major, OM_uint32 minor)
{
    if (!err || !errlen)
        return;
    size_t n = (size_t)snprintf(err, errlen, "%s:", what);
    for (int pass = 0; pass < 2 && n < errlen; pass++) {
        OM_uint32 code = pass ? minor : major, ctx = 0, min2;
        if (pass && !minor)
            break;
        do {
            gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
            if (gss_display_status(&min2, code, pass ? GSS_C_MECH_CODE : GSS_C_GSS_CODE,
                                   pass ? &krb5_oid_desc : GSS_C_NO_OID, &ctx,
                                   &b) != GSS_S_COMPLETE)
                break;
            if (n < errlen)
                n += (size_t)snprintf(err + n, errlen - n, " %.*s%s", (int)b.length,
                                      (const char *)b.value, pass || ctx ? "" : ";");
            gss_release_buffer(&min2, &b);
        } while (ctx);
    }
}

/* --- names --------------------------------------------------------------- */

/* "a/b@R" or "alice" or "alice@R": a Kerberos principal; "svc@host"
 * (no '/', and the part after '@' contains a dot and lower case) is a
 * host-based service name only when host_based is allowed. */
static int import_name(const char *s, bool host_based, gss_name_t *out, char *err, size_t errlen)
{
    OM_uint32 minor;
    gss_buffer_desc b = {strlen(s), (void *)s};
    gss_OID type = (gss_OID)GSS_KRB5_NT_PRINCIPAL_NAME;
    if (host_based && !strchr(s, '/') && strchr(s, '@'))
        type = GSS_C_NT_HOSTBASED_SERVICE;
    OM_uint32 major = gss_import_name(&minor, &b, type, out);
    if (GSS_ERROR(major)) {
        gsserr(err, errlen, "gss_import_name", major, minor);
        return -1;
    }
    return 0;
}

static int display_name(gss_name_t n, char *out, size_t outlen)
{
    OM_uint32 minor;
    gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
    if (GSS_ERROR(gss_display_name(&minor, n, &b, NULL)))
        return -1;
    int rc = 0;
    if (b.length >= outlen || memchr(b.value, 0, b.length))
        rc = -1;
    else {
        memcpy(out, b.value, b.length);
        out[b.length] = 0;
    }
    gss_release_buffer(&minor, &b);
    return rc;
}

/* --- credentials --------------------------------------------------------- */

static struct mp_gss_cred *wrap_cred(gss_cred_id_t c, char *err, size_t errlen)
{
    struct mp_gss_cred *r = calloc(1, sizeof(*r));
    if (!r) {
        OM_uint32 minor;
        gss_release_cred(&minor, &c);
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    r->cred = c;
    return r;
}

static struct mp_gss_cred *acquire(const char *principal, gss_cred_usage_t usage,
                                   gss_key_value_element_desc *el, size_t n_el, const char *what,
                                   char *err, size_t errlen)
{
    OM_uint32 major, minor;
    gss_name_t name = GSS_C_NO_NAME;
    gss_cred_id_t c = GSS_C_NO_CREDENTIAL;
    if (principal && import_name(principal, false, &name, err, errlen))
        return NULL;
    gss_key_value_set_desc store = {(OM_uint32)n_el, el};
    major = gss_acquire_cred_from(&minor, name, GSS_C_INDEFINITE, &krb5_set, usage,
                                  n_el ? &store : GSS_C_NO_CRED_STORE, &c, NULL, NULL);
    if (name != GSS_C_NO_NAME)
        gss_release_name(&minor, &name);
    if (GSS_ERROR(major)) {
        gsserr(err, errlen, what, major, minor);
        return NULL;
    }
    return wrap_cred(c, err, errlen);
}

struct mp_gss_cred *mp_gss_cred_acceptor(const char *keytab, const char *principal, char *err,
                                         size_t errlen)
{
    gss_key_value_element_desc el[1] = {{"keytab", keytab}};
    return acquire(principal, GSS_C_ACCEPT, el, keytab ? 1 : 0, "acceptor credential", err, errlen);
}

struct mp_gss_cred *mp_gss_cred_initiator(const char *ccache, const char *client_keytab,
                                          const char *principal, char *err, size_t errlen)
{
    gss_key_value_element_desc el[2];
    size_t n = 0;
    if (ccache)
        el[n++] = (gss_key_value_element_desc){"ccache", ccache};
    if (client_keytab)
        el[n++] = (gss_key_value_element_desc){"client_keytab", client_keytab};
    return acquire(principal, GSS_C_INITIATE, el, n, "initiator credential", err, errlen);
}

/* A forwardable TGT for principal from keytab into the ccache ccname.  The
 * S4U2Self ticket is forwardable (which S4U2Proxy requires of its evidence
 * ticket) only when the TGT it was asked with is; MIT's GSSAPI client-keytab
 * initiation does not ask for a forwardable TGT, so we get it here. */
static int service_tgt(const char *keytab, const char *principal, const char *ccname, char *err,
                       size_t errlen)
{
    krb5_context kc = NULL;
    krb5_keytab kt = NULL;
    krb5_principal p = NULL;
    krb5_get_init_creds_opt *o = NULL;
    krb5_ccache cc = NULL;
    krb5_creds cr;
    bool have_cr = false;
    memset(&cr, 0, sizeof cr);
    krb5_error_code k = krb5_init_context(&kc);
    if (k) {
        seterr(err, errlen, "krb5_init_context failed (%d)", (int)k);
        return -1;
    }
    const char *step = "krb5_kt_resolve";
    if ((k = krb5_kt_resolve(kc, keytab, &kt)))
        goto out;
    step = "krb5_parse_name";
    if ((k = krb5_parse_name(kc, principal, &p)))
        goto out;
    step = "krb5_get_init_creds_opt_alloc";
    if ((k = krb5_get_init_creds_opt_alloc(kc, &o)))
        goto out;
    krb5_get_init_creds_opt_set_forwardable(o, 1);
    step = "krb5_cc_resolve";
    if ((k = krb5_cc_resolve(kc, ccname, &cc)))
        goto out;
    step = "krb5_get_init_creds_keytab";
    if ((k = krb5_get_init_creds_keytab(kc, &cr, p, kt, 0, NULL, o)))
        goto out;
    have_cr = true;
    step = "krb5_cc_initialize";
    if ((k = krb5_cc_initialize(kc, cc, p)))
        goto out;
    step = "krb5_cc_store_cred";
    k = krb5_cc_store_cred(kc, cc, &cr);
out:
    if (k) {
        const char *m = krb5_get_error_message(kc, k);
        seterr(err, errlen, "service credential: %s: %s", step, m);
        krb5_free_error_message(kc, m);
    }
    if (have_cr)
        krb5_free_cred_contents(kc, &cr);
    if (cc)
        krb5_cc_close(kc, cc);
    if (o)
        krb5_get_init_creds_opt_free(kc, o);
    if (p)
        krb5_free_principal(kc, p);
    if (kt)
        krb5_kt_close(kc, kt);
    krb5_free_context(kc);
    return k ? -1 : 0;
}

static void destroy_ccache(const char *ccname)
{
    krb5_context kc;
    krb5_ccache cc;
    if (!ccname[0] || krb5_init_context(&kc))
        return;
    if (!krb5_cc_resolve(kc, ccname, &cc))
        krb5_cc_destroy(kc, cc);
    krb5_free_context(kc);
}

struct mp_gss_cred *mp_gss_cred_service(const char *keytab, const char *principal, char *err,
                                        size_t errlen)
{
    static unsigned serial;
    char cc[64];
    if (!keytab || !principal) {
        seterr(err, errlen, "service credential: keytab and principal are required");
        return NULL;
    }
    snprintf(cc, sizeof cc, "MEMORY:mp-gss-%ld-%u", (long)getpid(),
             __atomic_add_fetch(&serial, 1, __ATOMIC_RELAXED)); /* KDC threads of every worker */
    if (service_tgt(keytab, principal, cc, err, errlen)) {
        destroy_ccache(cc);
        return NULL;
    }
    /* client_keytab too: MIT renews the TGT from it when it expires (that
     * renewed TGT is not forwardable: see doc/internals/kerberos.md). */
    gss_key_value_element_desc el[3] = {
        {"keytab", keytab}, {"client_keytab", keytab}, {"ccache", cc}};
    struct mp_gss_cred *c =
        acquire(principal, GSS_C_BOTH, el, 3, "service credential", err, errlen);
    if (!c)
        destroy_ccache(cc);
    else
        snprintf(c->ccache, sizeof c->ccache, "%s", cc);
    return c;
}

struct mp_gss_cred *mp_gss_cred_impersonate(struct mp_gss_cred *service, const char *user_principal,
                                            char *err, size_t errlen)
{
    if (!service || !user_principal) {
        seterr(err, errlen, "S4U2Self: no service credential or user");
        return NULL;
    }
    gss_name_t user;
    if (import_name(user_principal, false, &user, err, errlen))
        return NULL;
    OM_uint32 major, minor;
    gss_cred_id_t c = GSS_C_NO_CREDENTIAL;
    major = gss_acquire_cred_impersonate_name(&minor, service->cred, user, GSS_C_INDEFINITE,
                                              &krb5_set, GSS_C_INITIATE, &c, NULL, NULL);
    gss_release_name(&minor, &user);
    if (GSS_ERROR(major)) {
        gsserr(err, errlen, "S4U2Self (gss_acquire_cred_impersonate_name)", major, minor);
        return NULL;
    }
    return wrap_cred(c, err, errlen);
}

struct mp_gss_cred *mp_gss_cred_for_client(struct mp_gss_cred *service, struct mp_gss_ctx *accepted,
                                           bool *delegated, char *err, size_t errlen)
{
    if (delegated)
        *delegated = false;
    if (!accepted || accepted->initiator || !accepted->established) {
        seterr(err, errlen, "no established acceptor context");
        return NULL;
    }
    if (accepted->deleg != GSS_C_NO_CREDENTIAL) {
        gss_cred_id_t c = accepted->deleg;
        accepted->deleg = GSS_C_NO_CREDENTIAL;
        if (delegated)
            *delegated = true;
        return wrap_cred(c, err, errlen);
    }
    if (!service) {
        seterr(err, errlen,
               "the client did not delegate and there is no service credential for S4U");
        return NULL;
    }
    /* By name, not with the accepted name itself: that one carries the
     * client ticket's authorization data (MIT exports it into the S4U2Self
     * request and stores it with the evidence ticket, and then MIT 1.20's
     * S4U2Proxy step cannot find its own evidence ticket: "Matching
     * credential not found").  The PAC of the S4U2Self ticket comes from the
     * KDC anyway. */
    return mp_gss_cred_impersonate(service, accepted->peer, err, errlen);
}

int mp_gss_cred_name(struct mp_gss_cred *c, char *out, size_t outlen)
{
    if (!c || !out || !outlen)
        return -1;
    OM_uint32 minor;
    gss_name_t n = GSS_C_NO_NAME;
    if (GSS_ERROR(gss_inquire_cred(&minor, c->cred, &n, NULL, NULL, NULL)))
        return -1;
    int rc = display_name(n, out, outlen);
    gss_release_name(&minor, &n);
    return rc;
}

void mp_gss_cred_free(struct mp_gss_cred *c)
{
    if (!c)
        return;
    OM_uint32 minor;
    if (c->cred != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&minor, &c->cred);
    destroy_ccache(c->ccache);
    free(c);
}

/* --- contexts ------------------------------------------------------------ */

static struct mp_gss_ctx *ctx_new(struct mp_gss_cred *cred, uint8_t auth_type, char *err,
                                  size_t errlen)
{
    if (auth_type != MP_AUTHN_GSS_KERBEROS && auth_type != MP_AUTHN_GSS_NEGOTIATE) {
        seterr(err, errlen, "auth type %u is not Kerberos (16) or SPNEGO (9)", auth_type);
        return NULL;
    }
    struct mp_gss_ctx *c = calloc(1, sizeof(*c));
    if (!c) {
        seterr(err, errlen, "out of memory");
        return NULL;
    }
    c->auth_type = auth_type;
    c->ctx = GSS_C_NO_CONTEXT;
    c->cred = cred ? cred->cred : GSS_C_NO_CREDENTIAL;
    c->target = c->src_name = GSS_C_NO_NAME;
    c->deleg = GSS_C_NO_CREDENTIAL;
    return c;
}

struct mp_gss_ctx *mp_gss_acceptor_new(struct mp_gss_cred *cred, uint8_t auth_type, unsigned flags,
                                       char *err, size_t errlen)
{
    struct mp_gss_ctx *c = ctx_new(cred, auth_type, err, errlen);
    if (c) {
        c->dce_style = true; /* decided by the client's AP-REQ; see step */
        c->want_deleg = (flags & MP_GSS_F_ACCEPT_DELEGATION) != 0;
        c->no_dce_style = (flags & MP_GSS_F_NO_DCE_STYLE) != 0;
    }
    return c;
}

struct mp_gss_ctx *mp_gss_initiator_new(struct mp_gss_cred *cred, const char *target,
                                        uint8_t auth_type, unsigned flags, char *err, size_t errlen)
{
    if (!target) {
        seterr(err, errlen, "no target name");
        return NULL;
    }
    struct mp_gss_ctx *c = ctx_new(cred, auth_type, err, errlen);
    if (!c)
        return NULL;
    c->initiator = true;
    c->dce_style = !(flags & MP_GSS_F_NO_DCE_STYLE);
    c->req_flags = GSS_C_MUTUAL_FLAG | GSS_C_INTEG_FLAG | GSS_C_CONF_FLAG | GSS_C_SEQUENCE_FLAG |
                   GSS_C_REPLAY_FLAG;
    if (c->dce_style)
        c->req_flags |= GSS_C_DCE_STYLE;
    if (flags & MP_GSS_F_DELEGATE)
        c->req_flags |= GSS_C_DELEG_FLAG;
    if (import_name(target, true, &c->target, err, errlen)) {
        free(c);
        return NULL;
    }
    snprintf(c->peer, sizeof c->peer, "%s", target);
    return c;
}

void mp_gss_ctx_free(struct mp_gss_ctx *c)
{
    if (!c)
        return;
    OM_uint32 minor;
    if (c->ctx != GSS_C_NO_CONTEXT)
        gss_delete_sec_context(&minor, &c->ctx, GSS_C_NO_BUFFER);
    if (c->target != GSS_C_NO_NAME)
        gss_release_name(&minor, &c->target);
    if (c->src_name != GSS_C_NO_NAME)
        gss_release_name(&minor, &c->src_name);
    if (c->deleg != GSS_C_NO_CREDENTIAL)
        gss_release_cred(&minor, &c->deleg);
    free(c->mech_list);
    free(c);
}

static int fail(struct mp_gss_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return MP_GSS_FAILED;
}

/* SPNEGO unwrapping of what the peer sent: the inner mechanism token. */
static int spnego_in(struct mp_gss_ctx *c, const uint8_t *in, size_t in_len, const uint8_t **tok,
                     size_t *tok_len)
{
    *tok = NULL;
    *tok_len = 0;
    if (!c->initiator && c->legs == 0) {
        struct mp_spnego_init ini;
        if (mp_spnego_parse_init(in, in_len, &ini))
            return fail(c, "SPNEGO: malformed NegTokenInit");
        enum mp_spnego_mech k = mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len);
        if (!mp_spnego_mech_is_krb5(k))
            return fail(c, "SPNEGO: the client's preferred mechanism is not Kerberos%s",
                        k == MP_MECH_NTLM ? " (NTLM: use the NTLM acceptor)" : "");
        if (!ini.mech_token)
            return fail(c, "SPNEGO: no optimistic Kerberos token");
        memcpy(c->spnego_mech, ini.mechs[0].p, ini.mechs[0].len);
        c->spnego_mech_len = ini.mechs[0].len;
        free(c->mech_list);
        c->mech_list = malloc(ini.mech_list_len);
        if (!c->mech_list)
            return fail(c, "out of memory");
        memcpy(c->mech_list, ini.mech_list, ini.mech_list_len);
        c->mech_list_len = ini.mech_list_len;
        *tok = ini.mech_token;
        *tok_len = ini.mech_token_len;
        return 0;
    }
    struct mp_spnego_resp r;
    if (mp_spnego_parse_resp(in, in_len, &r))
        return fail(c, "SPNEGO: malformed NegTokenResp");
    if (r.neg_state == MP_SPNEGO_REJECT)
        return fail(c, "SPNEGO: the peer rejected the negotiation");
    if (r.mech && !mp_spnego_mech_is_krb5(mp_spnego_mech_kind(r.mech, r.mech_len)))
        return fail(c, "SPNEGO: the peer chose a mechanism other than Kerberos");
    *tok = r.token;
    *tok_len = r.token_len;
    c->peer_mic = r.mic;
    c->peer_mic_len = r.mic_len;
    return 0;
}

static int spnego_out(struct mp_gss_ctx *c, const gss_buffer_desc *tok, bool complete,
                      struct mp_buf *out)
{
    int rc;
    if (c->initiator) {
        if (!tok->length)
            return 0;
        if (c->legs == 0) {
            struct mp_spnego_oid mechs[2] = {{mp_oid_ms_krb5, sizeof mp_oid_ms_krb5},
                                             {mp_oid_krb5, sizeof mp_oid_krb5}};
            rc = mp_spnego_build_init(out, mechs, 2, tok->value, tok->length);
        } else {
            rc = mp_spnego_build_resp(out, -1, NULL, 0, tok->value, tok->length, NULL, 0);
        }
    } else {
        /* mechListMIC: a client that sent one (Samba, Windows: RFC 4178
         * section 5 with an acceptor subkey) gets it checked and gets ours,
         * both gss_get_mic over its MechTypeList with the new context. */
        gss_buffer_desc mine = GSS_C_EMPTY_BUFFER;
        OM_uint32 major, minor;
        if (complete && c->peer_mic && c->mech_list) {
            gss_buffer_desc msg = {c->mech_list_len, c->mech_list};
            gss_buffer_desc mic = {c->peer_mic_len, (void *)c->peer_mic};
            major = gss_verify_mic(&minor, c->ctx, &msg, &mic, NULL);
            if (GSS_ERROR(major)) {
                gsserr(c->err, sizeof c->err, "SPNEGO mechListMIC (gss_verify_mic)", major, minor);
                return -1;
            }
            major = gss_get_mic(&minor, c->ctx, GSS_C_QOP_DEFAULT, &msg, &mine);
            if (GSS_ERROR(major)) {
                gsserr(c->err, sizeof c->err, "SPNEGO mechListMIC (gss_get_mic)", major, minor);
                return -1;
            }
        }
        rc = mp_spnego_build_resp(
            out, complete ? MP_SPNEGO_ACCEPT_COMPLETED : MP_SPNEGO_ACCEPT_INCOMPLETE,
            c->legs == 0 ? c->spnego_mech : NULL, c->legs == 0 ? c->spnego_mech_len : 0,
            tok->length ? tok->value : NULL, tok->length, mine.length ? mine.value : NULL,
            mine.length);
        gss_release_buffer(&minor, &mine);
        c->peer_mic = NULL; /* it pointed into this step's input */
    }
    return rc ? fail(c, "SPNEGO: cannot build the token") : 0;
}

/* An initial context token with a Kerberos AP-REQ (RFC 2743 3.1 framing:
 * 60 len 06 len OID 01 00 AP-REQ) -> the bare AP-REQ; NULL if it is not one.
 * MIT accepts a DCE-style AP-REQ only bare ("only DCE_STYLE clients are
 * allowed to send raw AP-REQs", and the reverse): Windows sends it bare,
 * Impacket frames it.  So a DCE/RPC acceptor unframes it first. */
static const uint8_t *unframe_ap_req(const uint8_t *p, size_t n, size_t *out_len)
{
    if (n < 2 || p[0] != 0x60)
        return NULL;
    size_t i = 1, len;
    if (p[i] < 0x80) {
        len = p[i++];
    } else {
        size_t k = p[i++] & 0x7f;
        if (k == 0 || k > 3 || n - i < k)
            return NULL;
        len = 0;
        while (k--)
            len = (len << 8) | p[i++];
    }
    if (len != n - i || n - i < 2 || p[i] != 0x06)
        return NULL;
    size_t ol = p[i + 1];
    i += 2;
    if (ol >= 0x80 || n - i < ol)
        return NULL;
    if (mp_spnego_mech_kind(p + i, ol) != MP_MECH_KRB5 &&
        mp_spnego_mech_kind(p + i, ol) != MP_MECH_MS_KRB5)
        return NULL;
    i += ol;
    if (n - i < 3 || p[i] != 0x01 || p[i + 1] != 0x00 || p[i + 2] != 0x6e)
        return NULL;
    *out_len = n - i - 2;
    return p + i + 2;
}

int mp_gss_step(struct mp_gss_ctx *c, const uint8_t *in, size_t in_len, struct mp_buf *out)
{
    if (!c || !out)
        return MP_GSS_FAILED;
    if (c->established)
        return fail(c, "the context is already established");
    if (c->legs > 4)
        return fail(c, "too many legs");
    const uint8_t *tok = in;
    size_t tok_len = in_len;
    if (!c->initiator && (!in || !in_len))
        return fail(c, "no token from the client");
    if (c->initiator && c->legs > 0 && (!in || !in_len))
        return fail(c, "no token from the server");
    if (c->auth_type == MP_AUTHN_GSS_NEGOTIATE && in && in_len) {
        if (spnego_in(c, in, in_len, &tok, &tok_len))
            return MP_GSS_FAILED;
        if (!tok && !c->initiator)
            return fail(c, "SPNEGO: no mechanism token");
        if (!tok && c->initiator) {
            return fail(c, "SPNEGO: no response token from the server");
        }
    }
    if (!c->initiator && c->legs == 0 && !c->no_dce_style) {
        size_t bare_len;
        const uint8_t *bare = unframe_ap_req(tok, tok_len, &bare_len);
        if (bare) {
            tok = bare;
            tok_len = bare_len;
        }
    }
    gss_buffer_desc ib = {tok_len, (void *)tok};
    gss_buffer_desc ob = GSS_C_EMPTY_BUFFER;
    OM_uint32 major, minor, flags = 0;
    if (c->initiator) {
        major = gss_init_sec_context(&minor, c->cred, &c->ctx, c->target, &krb5_oid_desc,
                                     c->req_flags, GSS_C_INDEFINITE, GSS_C_NO_CHANNEL_BINDINGS,
                                     c->legs ? &ib : GSS_C_NO_BUFFER, NULL, &ob, &flags, NULL);
    } else {
        /* The delegated credential comes with the AP-REQ (first leg), the
         * name with each leg: keep what an earlier leg gave.  MIT 1.20 builds
         * a delegated credential (a forwarded TGT, or with a GSS_C_BOTH
         * acceptor credential the client's ticket as S4U2Proxy evidence)
         * only when asked, and for a DCE-style client it then neither returns
         * nor frees it: so we ask only when the caller wants delegation. */
        gss_name_t src = GSS_C_NO_NAME;
        gss_cred_id_t deleg = GSS_C_NO_CREDENTIAL;
        major =
            gss_accept_sec_context(&minor, &c->ctx, c->cred, &ib, GSS_C_NO_CHANNEL_BINDINGS, &src,
                                   NULL, &ob, &flags, NULL, c->want_deleg ? &deleg : NULL);
        OM_uint32 m2;
        if (src != GSS_C_NO_NAME) {
            if (c->src_name != GSS_C_NO_NAME)
                gss_release_name(&m2, &c->src_name);
            c->src_name = src;
        }
        if (deleg != GSS_C_NO_CREDENTIAL) {
            if (c->deleg != GSS_C_NO_CREDENTIAL)
                gss_release_cred(&m2, &c->deleg);
            c->deleg = deleg;
        }
    }
    int rc;
    if (GSS_ERROR(major)) {
        gsserr(c->err, sizeof c->err,
               c->initiator ? "gss_init_sec_context" : "gss_accept_sec_context", major, minor);
        /* A KRB-ERROR for the client: raw, or in a NegTokenResp {reject}. */
        if (ob.length && !c->initiator) {
            if (c->auth_type == MP_AUTHN_GSS_NEGOTIATE)
                mp_spnego_build_resp(out, MP_SPNEGO_REJECT, NULL, 0, ob.value, ob.length, NULL, 0);
            else
                mp_buf_append(out, ob.value, ob.length);
        }
        rc = MP_GSS_FAILED;
        goto done;
    }
    bool complete = !(major & GSS_S_CONTINUE_NEEDED);
    if (c->auth_type == MP_AUTHN_GSS_NEGOTIATE) {
        if (spnego_out(c, &ob, complete, out)) {
            rc = MP_GSS_FAILED;
            goto done;
        }
    } else if (ob.length && mp_buf_append(out, ob.value, ob.length)) {
        rc = fail(c, "out of memory");
        goto done;
    }
    c->legs++;
    if (!complete) {
        rc = MP_GSS_CONTINUE;
        goto done;
    }
    c->ret_flags = flags;
    if (!(flags & GSS_C_INTEG_FLAG)) {
        rc = fail(c, "the context has no integrity");
        goto done;
    }
    if (!c->initiator) {
        c->dce_style = (flags & GSS_C_DCE_STYLE) != 0;
        if (display_name(c->src_name, c->peer, sizeof c->peer)) {
            rc = fail(c, "cannot display the client's name");
            goto done;
        }
    }
    c->established = true;
    rc = MP_GSS_DONE;
done:
    gss_release_buffer(&minor, &ob);
    return rc;
}

bool mp_gss_established(const struct mp_gss_ctx *c)
{
    return c && c->established;
}

const char *mp_gss_error(const struct mp_gss_ctx *c)
{
    return c ? c->err : "no context";
}

const char *mp_gss_peer_name(const struct mp_gss_ctx *c)
{
    return c && (c->established || c->initiator) && c->peer[0] ? c->peer : NULL;
}

uint32_t mp_gss_flags(const struct mp_gss_ctx *c)
{
    return c ? c->ret_flags : 0;
}

bool mp_gss_has_delegated(const struct mp_gss_ctx *c)
{
    return c && c->deleg != GSS_C_NO_CREDENTIAL;
}

/* --- per-PDU protection ---------------------------------------------------- */

int mp_gss_auth_locate(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r)
{
    return mp_dcerpc_auth_region_of(pdu, len, r);
}

size_t mp_gss_sig_len(struct mp_gss_ctx *c, uint8_t level, size_t body_len)
{
    if (!c || !c->established)
        return 0;
    OM_uint32 major, minor;
    if (level == MP_AUTHN_LEVEL_PKT_INTEGRITY) {
        gss_iov_buffer_desc iov[2] = {
            {GSS_IOV_BUFFER_TYPE_DATA, {body_len, NULL}},
            {GSS_IOV_BUFFER_TYPE_MIC_TOKEN, {0, NULL}},
        };
        major = gss_get_mic_iov_length(&minor, c->ctx, GSS_C_QOP_DEFAULT, iov, 2);
        if (GSS_ERROR(major)) {
            gsserr(c->err, sizeof c->err, "gss_get_mic_iov_length", major, minor);
            return 0;
        }
        return iov[1].buffer.length;
    }
    if (level == MP_AUTHN_LEVEL_PKT_PRIVACY) {
        gss_iov_buffer_desc iov[3] = {
            {GSS_IOV_BUFFER_TYPE_HEADER, {0, NULL}},
            {GSS_IOV_BUFFER_TYPE_DATA, {body_len, NULL}},
            {GSS_IOV_BUFFER_TYPE_PADDING, {0, NULL}},
        };
        int conf = 0;
        major = gss_wrap_iov_length(&minor, c->ctx, 1, GSS_C_QOP_DEFAULT, &conf, iov, 3);
        if (GSS_ERROR(major)) {
            gsserr(c->err, sizeof c->err, "gss_wrap_iov_length", major, minor);
            return 0;
        }
        if (!conf || iov[2].buffer.length) {
            fail(c, "wrap needs %zu bytes of padding for %zu", (size_t)iov[2].buffer.length,
                 body_len);
            return 0;
        }
        return iov[0].buffer.length;
    }
    fail(c, "auth level %u has no verifier", level);
    return 0;
}

int mp_gss_add_verifier(struct mp_gss_ctx *c, struct mp_buf *buf, size_t pdu_off, uint8_t auth_type,
                        uint8_t auth_level, uint32_t context_id)
{
    size_t len, stub, pad;
    if (!c || mp_dcerpc_verifier_room(buf, pdu_off, &len, &stub, &pad))
        return -1;
    size_t sig = mp_gss_sig_len(c, auth_level, stub + pad);
    if (!sig || sig > 0x1000)
        return -1;
    size_t total = len + pad + MP_SEC_TRAILER_LEN + sig;
    if (total > 0xffff)
        return -1;
    size_t add = pad + MP_SEC_TRAILER_LEN + sig;
    if (mp_buf_reserve(buf, add))
        return -1;
    uint8_t *t = buf->data + buf->len;
    memset(t, 0, add);
    t[pad + 0] = auth_type;
    t[pad + 1] = auth_level;
    t[pad + 2] = (uint8_t)pad;
    mp_put32(t + pad + 4, context_id);
    buf->len += add;
    uint8_t *p = buf->data + pdu_off;
    mp_put16(p + 8, (uint16_t)total);
    mp_put16(p + 10, (uint16_t)sig);
    return 0;
}

/* Supplementary status that means replay or reordering: refused. */
#define BAD_SUPPL (GSS_S_DUPLICATE_TOKEN | GSS_S_OLD_TOKEN | GSS_S_UNSEQ_TOKEN | GSS_S_GAP_TOKEN)

static int check_pdu(struct mp_gss_ctx *c, const uint8_t *pdu, size_t len,
                     struct mp_dcerpc_auth_region *r)
{
    if (!c->established)
        return fail(c, "the context is not established"), -1;
    if (mp_gss_auth_locate(pdu, len, r))
        return fail(c, "malformed PDU or auth trailer"), -1;
    if (r->auth_type != c->auth_type)
        return fail(c, "auth type %u in a PDU of a context of type %u", r->auth_type, c->auth_type),
               -1;
    if (r->auth_level == MP_AUTHN_LEVEL_PKT_PRIVACY && !(c->ret_flags & GSS_C_CONF_FLAG))
        return fail(c, "privacy requested but the context has no confidentiality"), -1;
    return 0;
}

int mp_gss_protect(struct mp_gss_ctx *c, uint8_t *pdu, size_t len, bool header_sign)
{
    struct mp_dcerpc_auth_region r;
    if (!c || check_pdu(c, pdu, len, &r))
        return -1;
    size_t auth_len = len - r.verifier_off;
    OM_uint32 major, minor;
    if (r.auth_level == MP_AUTHN_LEVEL_PKT_INTEGRITY) {
        gss_buffer_desc msg = header_sign ? (gss_buffer_desc){r.verifier_off, pdu}
                                          : (gss_buffer_desc){r.body_len, pdu + r.body_off};
        gss_buffer_desc mic = GSS_C_EMPTY_BUFFER;
        major = gss_get_mic(&minor, c->ctx, GSS_C_QOP_DEFAULT, &msg, &mic);
        if (GSS_ERROR(major)) {
            gsserr(c->err, sizeof c->err, "gss_get_mic", major, minor);
            return -1;
        }
        int rc = 0;
        if (mic.length != auth_len)
            rc = fail(c, "MIC of %zu bytes for an auth_value of %zu", (size_t)mic.length, auth_len);
        else
            memcpy(pdu + r.verifier_off, mic.value, mic.length);
        gss_release_buffer(&minor, &mic);
        return rc ? -1 : 0;
    }
    if (r.auth_level != MP_AUTHN_LEVEL_PKT_PRIVACY)
        return fail(c, "auth level %u cannot be protected", r.auth_level), -1;
    gss_iov_buffer_desc iov[5];
    int n = 0;
    if (header_sign)
        iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_SIGN_ONLY, {r.body_off, pdu}};
    iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_DATA, {r.body_len, pdu + r.body_off}};
    if (header_sign)
        iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_SIGN_ONLY,
                                         {MP_SEC_TRAILER_LEN, pdu + r.trailer_off}};
    int hi = n;
    iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_HEADER, {0, NULL}};
    iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_PADDING, {0, NULL}};
    int conf = 0;
    major = gss_wrap_iov_length(&minor, c->ctx, 1, GSS_C_QOP_DEFAULT, &conf, iov, n);
    if (GSS_ERROR(major)) {
        gsserr(c->err, sizeof c->err, "gss_wrap_iov_length", major, minor);
        return -1;
    }
    if (iov[hi].buffer.length != auth_len || iov[n - 1].buffer.length != 0)
        return fail(c, "wrap token of %zu bytes (+%zu padding) for an auth_value of %zu",
                    (size_t)iov[hi].buffer.length, (size_t)iov[n - 1].buffer.length, auth_len),
               -1;
    iov[hi].buffer.value = pdu + r.verifier_off;
    iov[n - 1].buffer.value = pdu + len; /* 0 bytes */
    major = gss_wrap_iov(&minor, c->ctx, 1, GSS_C_QOP_DEFAULT, &conf, iov, n);
    if (GSS_ERROR(major)) {
        gsserr(c->err, sizeof c->err, "gss_wrap_iov", major, minor);
        return -1;
    }
    if (!conf)
        return fail(c, "gss_wrap_iov did not encrypt"), -1;
    return 0;
}

int mp_gss_unprotect(struct mp_gss_ctx *c, uint8_t *pdu, size_t len, bool header_sign,
                     size_t *stub_off, size_t *stub_len)
{
    struct mp_dcerpc_auth_region r;
    if (!c || check_pdu(c, pdu, len, &r))
        return -1;
    size_t auth_len = len - r.verifier_off;
    OM_uint32 major, minor;
    gss_qop_t qop = 0;
    if (r.auth_level == MP_AUTHN_LEVEL_PKT_INTEGRITY) {
        gss_buffer_desc msg = header_sign ? (gss_buffer_desc){r.verifier_off, pdu}
                                          : (gss_buffer_desc){r.body_len, pdu + r.body_off};
        gss_buffer_desc mic = {auth_len, pdu + r.verifier_off};
        major = gss_verify_mic(&minor, c->ctx, &msg, &mic, &qop);
        if (GSS_ERROR(major)) {
            gsserr(c->err, sizeof c->err, "gss_verify_mic", major, minor);
            return -1;
        }
    } else if (r.auth_level == MP_AUTHN_LEVEL_PKT_PRIVACY) {
        gss_iov_buffer_desc iov[4];
        int n = 0, conf = 0;
        if (header_sign)
            iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_SIGN_ONLY, {r.body_off, pdu}};
        iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_DATA, {r.body_len, pdu + r.body_off}};
        if (header_sign)
            iov[n++] = (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_SIGN_ONLY,
                                             {MP_SEC_TRAILER_LEN, pdu + r.trailer_off}};
        iov[n++] =
            (gss_iov_buffer_desc){GSS_IOV_BUFFER_TYPE_HEADER, {auth_len, pdu + r.verifier_off}};
        major = gss_unwrap_iov(&minor, c->ctx, &conf, &qop, iov, n);
        if (GSS_ERROR(major)) {
            gsserr(c->err, sizeof c->err, "gss_unwrap_iov", major, minor);
            return -1;
        }
        if (!conf)
            return fail(c, "a privacy PDU that was not encrypted"), -1;
    } else {
        return fail(c, "auth level %u has no verifier", r.auth_level), -1;
    }
    if (major & BAD_SUPPL)
        return fail(c, "replayed or out-of-order PDU (GSS status 0x%x)", (unsigned)major), -1;
    if (stub_off)
        *stub_off = r.body_off;
    if (stub_len)
        *stub_len = r.stub_len;
    return 0;
}
