/* The security leg of a DCE/RPC association (auth/dcerpc_auth.h): the
 * acceptor for the clients, the initiator towards the upstream, and the
 * per-fragment protection, for terminated authentication. */
#include "auth/dcerpc_auth.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "auth/spnego.h"
#include "auth/winbind.h"
#include "core/log.h"
#include "event/loop.h"

static const char *const level_names[7] = {"",       "none",      "connect", "call",
                                           "packet", "integrity", "privacy"};

const char *mp_dce_level_name(unsigned level)
{
    return level_names[level < 7 ? level : 0];
}

void mp_dce_sec_free(struct mp_dce_sec *l)
{
    if (!l)
        return;
    if (l->acc_init)
        mp_ntlm_acceptor_free(&l->acc);
    if (l->ini_init)
        mp_ntlm_initiator_free(&l->ini);
    if (l->sess_init)
        mp_ntlm_session_free(&l->sess);
    free(l->mech_list);
    free(l->wb_groups);
    mp_ntlm_cleanse(l->wb_key, sizeof(l->wb_key));
    if (l->wb_pending) {
        mp_wb_logon_free(l->wb_pending);
        free(l->wb_pending);
    }
    mp_gss_ctx_free(l->gss); /* before the credential it was made from */
    mp_gss_cred_free(l->cred);
    free(l);
}

/* Whether dom_groups ("DOMAIN\group" lines, from winbind) holds g, given
 * as "group" or "DOMAIN\group" (case-insensitive). */
static bool in_dom_groups(const char *dom_groups, const char *g, size_t gl)
{
    for (const char *p = dom_groups; p && *p;) {
        size_t n = strcspn(p, "\n");
        const char *bs = memchr(p, '\\', n);
        if ((n == gl && !strncasecmp(p, g, gl)) ||
            (bs && (size_t)(p + n - bs - 1) == gl && !strncasecmp(bs + 1, g, gl)))
            return true;
        p += n;
        if (*p)
            p++;
    }
    return false;
}

/* mapiproxy:allowed users: a name matches "user", "DOMAIN\user" (NTLM) or
 * "user@REALM" (Kerberos principal), case-insensitively; "@group" matches
 * the members of group: a winbind user's domain groups (dom_groups), or the
 * group's lines in mapiproxy:groups file that list one of the user's names. */
static bool user_allowed(const struct mp_dce_auth *au, const char *user, const char *domain,
                         const char *principal, const char *dom_groups)
{
    const char *list = au->cfg->allowed_users;
    if (!list[0])
        return true;
    char full[400];
    if (domain)
        snprintf(full, sizeof(full), "%s\\%s", domain, user);
    else
        snprintf(full, sizeof(full), "%s", principal ? principal : user);
    const char *names[2] = {user, full};
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t w = strcspn(p, " ,\t");
        if (w > 1 && p[0] == '@') {
            char g[256];
            snprintf(g, sizeof(g), "%.*s", (int)(w - 1), p + 1);
            if (in_dom_groups(dom_groups, g, strlen(g)) || mp_groups_has(&au->ugroups, g, names, 2))
                return true;
        } else {
            for (int k = 0; k < 2; k++)
                if (w && w == strlen(names[k]) && !strncasecmp(p, names[k], w))
                    return true;
        }
        p += w;
    }
    return false;
}

size_t mp_dce_sec_vlen(const struct mp_dce_sec *sec)
{
    return sec->gss ? sec->vlen : MP_NTLM_VERIFIER_LEN;
}

/* Pads, appends the sec_trailer and verifier to the fragment at start and
 * signs or seals it for the leg. */
int mp_dce_sec_protect(struct mp_dce_sec *sec, struct mp_buf *out, size_t start)
{
    if (sec->gss)
        return mp_gss_add_verifier(sec->gss, out, start, sec->type, sec->level, sec->ctx_id) ||
                       mp_gss_protect(sec->gss, out->data + start, out->len - start,
                                      sec->header_sign)
                   ? -1
                   : 0;
    return mp_dcerpc_add_verifier(out, start, sec->type, sec->level, sec->ctx_id) ||
                   mp_dcerpc_ntlm_protect(&sec->sess.send, out->data + start, out->len - start,
                                          sec->header_sign)
               ? -1
               : 0;
}

const char *mp_dce_sec_mech(const struct mp_dce_sec *s)
{
    if (s->gss)
        return s->type == MP_AUTHN_GSS_NEGOTIATE ? "SPNEGO/Kerberos" : "Kerberos";
    return s->spnego_ntlm ? "SPNEGO/NTLM" : "NTLM";
}

/* NTLM NEGOTIATE in, CHALLENGE out: bare, or in a NegTokenResp (with the
 * NTLM OID as supportedMech when mech_oid). */
static int ntlm_challenge(const struct mp_dce_auth *au, struct mp_dce_sec *cs, const uint8_t *tok,
                          size_t len, bool mech_oid, struct mp_buf *out, char *why, size_t wl)
{
    if (!au->ntlm_on) {
        snprintf(why, wl,
                 "NTLM is not enabled (neither mapiproxy:credentials file nor "
                 "mapiproxy:ntlm backend = winbind is set)");
        return MP_GSS_FAILED;
    }
    if (cs->acc_init) {
        snprintf(why, wl, "a second NTLM NEGOTIATE");
        return MP_GSS_FAILED;
    }
    mp_ntlm_acceptor_init(&cs->acc, &au->acc_cfg);
    cs->acc_init = true;
    struct mp_buf chal = {0};
    int rc = mp_ntlm_acceptor_negotiate(&cs->acc, tok, len, &chal);
    if (rc) {
        snprintf(why, wl, "malformed NTLM NEGOTIATE (%s)", mp_ntlm_strerror(rc));
    } else if (cs->spnego_ntlm) {
        rc = mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_INCOMPLETE, mech_oid ? mp_oid_ntlm : NULL,
                                  mech_oid ? sizeof(mp_oid_ntlm) : 0, chal.data, chal.len, NULL, 0);
    } else {
        rc = mp_buf_append(out, chal.data, chal.len);
    }
    mp_buf_free(&chal);
    if (rc && !why[0])
        snprintf(why, wl, "out of memory");
    return rc ? MP_GSS_FAILED : MP_GSS_CONTINUE;
}

/* The client's first token (bind): NTLM NEGOTIATE, SPNEGO NegTokenInit (Kerberos
 * or NTLM first) or a Kerberos AP-REQ.  The reply token is appended to out.
 * MP_GSS_CONTINUE, MP_GSS_DONE, or MP_GSS_FAILED with why set. */
int mp_dce_sec_accept_first(const struct mp_dce_auth *au, struct mp_dce_sec *cs,
                            const struct mp_auth *auth, struct mp_buf *out, char *why, size_t wl)
{
    char err[MP_GSS_ERRLEN] = "";
    if (auth->type == MP_AUTHN_WINNT)
        return ntlm_challenge(au, cs, auth->value, auth->value_len, false, out, why, wl);
    if (auth->type == MP_AUTHN_GSS_NEGOTIATE) {
        struct mp_spnego_init ini;
        if (mp_spnego_parse_init(auth->value, auth->value_len, &ini)) {
            snprintf(why, wl, "malformed SPNEGO NegTokenInit");
            return MP_GSS_FAILED;
        }
        enum mp_spnego_mech first = mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len);
        bool offers_ntlm = false;
        for (size_t i = 0; i < ini.n_mechs; i++)
            offers_ntlm |= mp_spnego_mech_kind(ini.mechs[i].p, ini.mechs[i].len) == MP_MECH_NTLM;
        /* Kerberos first without a keytab here: ask for NTLM instead when the
         * client offers it (RFC 4178 section 3.2: supportedMech with no token). */
        bool switch_to_ntlm =
            mp_spnego_mech_is_krb5(first) && !au->acc_cred && offers_ntlm && au->ntlm_on;
        if (first == MP_MECH_NTLM || switch_to_ntlm) {
            cs->spnego_ntlm = true;
            cs->mech_list = malloc(ini.mech_list_len);
            if (!cs->mech_list) {
                snprintf(why, wl, "out of memory");
                return MP_GSS_FAILED;
            }
            memcpy(cs->mech_list, ini.mech_list, ini.mech_list_len);
            cs->mech_list_len = ini.mech_list_len;
            if (switch_to_ntlm) {
                cs->ntlm_switched = true;
                if (mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_INCOMPLETE, mp_oid_ntlm,
                                         sizeof(mp_oid_ntlm), NULL, 0, NULL, 0)) {
                    snprintf(why, wl, "out of memory");
                    return MP_GSS_FAILED;
                }
                return MP_GSS_CONTINUE;
            }
            if (!ini.mech_token) {
                snprintf(why, wl, "SPNEGO with NTLM first but no NTLM token");
                return MP_GSS_FAILED;
            }
            return ntlm_challenge(au, cs, ini.mech_token, ini.mech_token_len, true, out, why, wl);
        }
        if (!mp_spnego_mech_is_krb5(first)) {
            snprintf(why, wl, "SPNEGO whose first mechanism is neither Kerberos nor NTLM");
            return MP_GSS_FAILED;
        }
    } else if (auth->type != MP_AUTHN_GSS_KERBEROS) {
        snprintf(why, wl, "auth type %u (only NTLM 10, SPNEGO 9 and Kerberos 16 are accepted)",
                 auth->type);
        return MP_GSS_FAILED;
    }
    if (!au->acc_cred) {
        snprintf(why, wl, "Kerberos is not enabled (mapiproxy:keytab is not set)");
        return MP_GSS_FAILED;
    }
    cs->gss = mp_gss_acceptor_new(au->acc_cred, auth->type, 0, err, sizeof(err));
    if (!cs->gss) {
        snprintf(why, wl, "%s", err);
        return MP_GSS_FAILED;
    }
    int st = mp_gss_step(cs->gss, auth->value, auth->value_len, out);
    if (st == MP_GSS_FAILED)
        snprintf(why, wl, "%s", mp_gss_error(cs->gss));
    return st;
}

/* The client's next token (auth3 or alter_context): NTLM AUTHENTICATE (bare
 * or in a NegTokenResp) or the Kerberos AP-REP of DCE style.  On success the
 * client's name is in cs->user / cs->who and the policy was checked.
 * can_reply: the token came in an alter_context, whose answer can carry
 * the proxy's SPNEGO mechListMIC (an AUTH3 has none). */
int mp_dce_sec_accept_next(const struct mp_dce_auth *au, struct mp_dce_sec *cs,
                           const struct mp_auth *auth, bool can_reply, struct mp_buf *out,
                           char *why, size_t wl)
{
    if (cs->gss) {
        /* established already (one leg, at bind): called without a token */
        int st = MP_GSS_DONE;
        if (mp_gss_established(cs->gss) && auth->value_len) {
            snprintf(why, wl, "a further token after the Kerberos context was established");
            return MP_GSS_FAILED;
        }
        if (!mp_gss_established(cs->gss))
            st = mp_gss_step(cs->gss, auth->value, auth->value_len, out);
        if (st == MP_GSS_FAILED) {
            snprintf(why, wl, "%s", mp_gss_error(cs->gss));
            return st;
        }
        if (st != MP_GSS_DONE) {
            snprintf(why, wl, "Kerberos needs more legs than DCE style has");
            return MP_GSS_FAILED;
        }
        const char *peer = mp_gss_peer_name(cs->gss);
        snprintf(cs->user, sizeof(cs->user), "%s", peer ? peer : "?");
        snprintf(cs->who, sizeof(cs->who), "%s", cs->user);
        mp_log_safe(cs->who);
        size_t v = mp_gss_sig_len(cs->gss, cs->level, MP_MAX_FRAG);
        cs->vlen = v > 16 ? v : 16; /* any MIC or wrap token is longer */
        if (cs->level >= MP_AUTHN_LEVEL_CALL && !v) {
            snprintf(why, wl, "no verifier length for level %u", cs->level);
            return MP_GSS_FAILED;
        }
        char name[160];
        snprintf(name, sizeof(name), "%s", cs->user);
        char *at = strrchr(name, '@');
        /* a bare name in the list covers principals of the proxy's own realm
         * (realm) only: alice@OTHER.REALM must be listed in full */
        bool own = at && (!au->realm_uc[0] || !strcasecmp(at + 1, au->realm_uc));
        if (at)
            *at = 0;
        if (!user_allowed(au, own ? name : cs->user, NULL, cs->user, NULL)) {
            snprintf(why, wl, "not in mapiproxy:allowed users");
            return MP_GSS_FAILED;
        }
        return MP_GSS_DONE;
    }
    const uint8_t *tok = auth->value;
    size_t len = auth->value_len;
    struct mp_spnego_resp resp = {.neg_state = -1};
    if (cs->spnego_ntlm) {
        if (mp_spnego_parse_resp(auth->value, auth->value_len, &resp) || !resp.token) {
            snprintf(why, wl, "SPNEGO NegTokenResp without an NTLM AUTHENTICATE");
            return MP_GSS_FAILED;
        }
        tok = resp.token;
        len = resp.token_len;
        if (!cs->acc_init) /* after the switch from Kerberos: the NEGOTIATE */
            return ntlm_challenge(au, cs, tok, len, false, out, why, wl);
        if (cs->ntlm_switched && !resp.mic) {
            snprintf(why, wl, "no SPNEGO mechListMIC after the switch to NTLM (RFC 4178)");
            return MP_GSS_FAILED;
        }
    }
    struct mp_ntlm_result res;
    memset(&res, 0, sizeof(res));
    int rc;
    char wb_note[520] = "";
    if (au->winbind && !cs->wb_done) {
        /* mapiproxy:ntlm backend = winbind: the domain checks the response
         * on the worker; the caller queues cs->wb_pending with its PDU,
         * which is handled again when the answer is back (cs->wb_done). */
        struct mp_ntlm_logon lg;
        rc = mp_ntlm_acceptor_peek(&cs->acc, tok, len, &lg);
        if (rc == MP_NTLM_OK) {
            snprintf(cs->who, sizeof(cs->who), "%.70s\\%.70s", lg.domain, lg.user);
            mp_log_safe(cs->who);
            struct mp_wb_logon *lo = calloc(1, sizeof(*lo));
            if (!lo || mp_wb_logon_set(lo, lg.user, lg.domain, lg.workstation, lg.server_chal,
                                       lg.nt.p, lg.nt.len, lg.lm.p, lg.lm.len)) {
                free(lo);
                snprintf(why, wl,
                         "cannot prepare the winbind logon (out of memory or names "
                         "too long)");
                return MP_GSS_FAILED;
            }
            cs->wb_pending = lo;
            return MP_DCE_SEC_PENDING;
        }
        rc = mp_ntlm_acceptor_authenticate(&cs->acc, tok, len, &res); /* refuses the same */
    } else if (au->winbind) {
        if (cs->wb_rc == MP_WB_OK) {
            rc = mp_ntlm_acceptor_authenticate_key(&cs->acc, tok, len, cs->wb_key, &res);
            if (rc == MP_NTLM_OK) { /* the names the domain knows the user by */
                snprintf(res.user, sizeof(res.user), "%s", cs->wb_account);
                snprintf(res.domain, sizeof(res.domain), "%s", cs->wb_domain);
            }
        } else {
            struct mp_ntlm_logon lg;
            mp_ntlm_acceptor_peek(&cs->acc, tok, len, &lg);
            snprintf(res.user, sizeof(res.user), "%s", lg.user);
            snprintf(res.domain, sizeof(res.domain), "%s", lg.domain);
            rc = MP_NTLM_E_LOGON;
            snprintf(wb_note, sizeof(wb_note), "%s (winbind: %s)",
                     cs->wb_rc == MP_WB_DENIED ? mp_ntlm_strerror(rc)
                                               : "the domain could not check the logon",
                     cs->wb_why);
        }
        mp_ntlm_cleanse(cs->wb_key, sizeof(cs->wb_key));
    } else {
        rc = mp_ntlm_acceptor_authenticate(&cs->acc, tok, len, &res);
    }
    snprintf(cs->user, sizeof(cs->user), "%.150s", res.user);
    bool upn = !res.domain[0] && strchr(res.user, '@'); /* user@dns.domain, no domain */
    if (upn)
        snprintf(cs->who, sizeof(cs->who), "%.150s", res.user);
    else
        snprintf(cs->who, sizeof(cs->who), "%.70s\\%.70s", res.domain, res.user);
    mp_log_safe(cs->who);
    char bare[160];
    snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(res.user, "@"), res.user);
    const char *bad = rc ? (wb_note[0] ? wb_note : mp_ntlm_strerror(rc))
                      : !(upn ? user_allowed(au, bare, NULL, res.user, cs->wb_groups)
                              : user_allowed(au, res.user, res.domain, NULL, cs->wb_groups))
                          ? "not in mapiproxy:allowed users"
                          : NULL;
    if (!bad && mp_ntlm_session_init(&cs->sess, res.flags, res.exported_key, false))
        bad = "session keys could not be derived";
    if (!bad)
        cs->sess_init = true;
    /* SPNEGO mechListMIC (RFC 4178, MS-SPNG 3.3.5.1): the client's NTLM
     * signature over its MechTypeList (its first sequence number) is checked
     * and answered with ours; then both RC4 streams start again from the
     * sealing keys while the sequence numbers go on (what Samba and Windows
     * do). */
    uint8_t our_mic[16];
    bool mic = false;
    if (!bad && resp.mic) {
        if (resp.mic_len != 16 ||
            mp_ntlm_verify(&cs->sess.recv, cs->mech_list, cs->mech_list_len, resp.mic) ||
            (can_reply &&
             mp_ntlm_sign(&cs->sess.send, cs->mech_list, cs->mech_list_len, our_mic))) {
            bad = "bad SPNEGO mechListMIC";
        } else {
            uint32_t s_seq = cs->sess.send.seq, r_seq = cs->sess.recv.seq;
            mp_ntlm_session_free(&cs->sess);
            if (mp_ntlm_session_init(&cs->sess, res.flags, res.exported_key, false)) {
                cs->sess_init = false;
                bad = "session keys could not be derived";
            }
            cs->sess.send.seq = s_seq;
            cs->sess.recv.seq = r_seq;
            mic = can_reply;
        }
    }
    mp_ntlm_cleanse(res.exported_key, sizeof(res.exported_key));
    if (bad) {
        snprintf(why, wl, "%s", bad);
        return MP_GSS_FAILED;
    }
    if (cs->spnego_ntlm && mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_COMPLETED, NULL, 0, NULL, 0,
                                                mic ? our_mic : NULL, mic ? 16 : 0)) {
        snprintf(why, wl, "out of memory");
        return MP_GSS_FAILED;
    }
    return MP_GSS_DONE;
}

/* Specified credentials: clients authenticate to the proxy against the
 * credentials file; the proxy authenticates to the upstream as
 * dcerpc_mapiproxy:username. */
/* Kerberos credentials for termination: the acceptor (or the service
 * credential, which also accepts, for S4U) and the upstream initiator.  The
 * initiator's first service ticket is fetched here, so a wrong SPN or
 * keytab shows at startup and the first association does not wait for the
 * KDC. */
static int setup_kerberos(struct mp_dce_auth *au, struct mp_loop *loop, mp_kdc_done_fn done,
                          void *arg)
{
    const struct mp_config *cfg = au->cfg;
    char err[MP_GSS_ERRLEN];
    bool s4u = !strcasecmp(cfg->delegation, "s4u");
    for (size_t i = 0; cfg->realm[i] && i + 1 < sizeof(au->realm_uc); i++)
        au->realm_uc[i] = (char)toupper((unsigned char)cfg->realm[i]);
    if (cfg->keytab[0]) {
        /* any key of the keytab: Outlook asks for exchangeMDB/, exchangeRFR/
         * and exchangeAB/ of the name it connects to, all the proxy's */
        au->acc_cred = mp_gss_cred_acceptor(cfg->keytab, NULL, err, sizeof(err));
        if (!au->acc_cred) {
            mp_error("mapiproxy:keytab %s: %s", cfg->keytab, err);
            return -1;
        }
    }
    if (s4u) {
        au->up_mode = MP_UP_S4U;
        /* a credential of its own for the worker thread (S4U2Self): the
         * loop thread accepts with acc_cred */
        au->svc_cred = mp_gss_cred_service(cfg->keytab, cfg->service_principal, err, sizeof(err));
        if (!au->svc_cred) {
            mp_error("mapiproxy:delegation = s4u: the proxy's TGT from mapiproxy:keytab for %s: %s",
                     cfg->service_principal, err);
            return -1;
        }
        au->svc_born_ms = mp_now_ms();
    } else if (cfg->upstream_spn[0]) {
        au->up_mode = MP_UP_KRB;
        char ccache[600];
        const char *cc = cfg->upstream_ccache[0] ? cfg->upstream_ccache : NULL;
        if (!cc && cfg->upstream_keytab[0]) { /* tickets from the keytab, kept in memory */
            snprintf(ccache, sizeof(ccache), "MEMORY:mapiproxy-upstream-%p", (void *)au);
            cc = ccache;
        }
        au->up_cred = mp_gss_cred_initiator(
            cc, cfg->upstream_keytab[0] ? cfg->upstream_keytab : NULL,
            cfg->upstream_principal[0] ? cfg->upstream_principal : NULL, err, sizeof(err));
        if (!au->up_cred) {
            mp_error("mapiproxy:upstream keytab/ccache/principal: %s", err);
            return -1;
        }
    } else {
        au->up_mode = MP_UP_NTLM;
        return 0;
    }
    if (au->up_mode == MP_UP_KRB) { /* warm the ticket cache */
        struct mp_gss_ctx *c = mp_gss_initiator_new(au->up_cred, cfg->upstream_spn,
                                                    MP_AUTHN_GSS_KERBEROS, 0, err, sizeof(err));
        struct mp_buf tok = {0};
        if (!c || mp_gss_step(c, NULL, 0, &tok) != MP_GSS_CONTINUE)
            mp_warn("mapiproxy:upstream spn %s: no service ticket yet (%s); each association "
                    "will try again",
                    cfg->upstream_spn, c ? mp_gss_error(c) : err);
        mp_buf_free(&tok);
        mp_gss_ctx_free(c);
    }
    return mp_kdc_start(&au->kdc, loop, au, done, arg);
}

void mp_dce_auth_free(struct mp_dce_auth *au)
{
    mp_kdc_stop(&au->kdc); /* first: the worker uses the credentials */
    if (au->winbind)
        mp_winbind_shutdown();
    mp_groups_free(&au->ugroups);
    mp_credstore_free(&au->creds);
    mp_gss_cred_free(au->acc_cred);
    mp_gss_cred_free(au->up_cred);
    mp_gss_cred_free(au->svc_cred);
    for (size_t i = 0; i < au->n_retired; i++)
        mp_gss_cred_free(au->retired[i]);
    au->acc_cred = au->up_cred = au->svc_cred = NULL;
    mp_ntlm_cleanse(au->up_password, sizeof(au->up_password));
    au->n_retired = 0;
}

/* The credentials file, and NTLM user names in UPN form (user@dns.domain
 * with an empty domain, as clients logged on with a UPN send them): these
 * match an entry for user whose domain is empty, the DNS domain, or its
 * first label (the usual NetBIOS name). */
static int ntlm_lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    if (mp_credstore_lookup(arg, user, domain, nt_hash) == 0)
        return 0;
    const char *at = strchr(user, '@');
    if ((domain && domain[0]) || !at || at == user || !at[1])
        return -1;
    char name[160], dom[256];
    snprintf(name, sizeof(name), "%.*s", (int)(at - user), user);
    snprintf(dom, sizeof(dom), "%s", at + 1);
    if (mp_credstore_lookup(arg, name, dom, nt_hash) == 0)
        return 0;
    dom[strcspn(dom, ".")] = 0;
    return mp_credstore_lookup(arg, name, dom, nt_hash);
}

int mp_dce_auth_setup(struct mp_dce_auth *au, const struct mp_config *cfg, struct mp_loop *loop,
                      mp_kdc_done_fn done, void *arg)
{
    au->cfg = cfg;
    char why[600];
    au->terminate = true;
    au->winbind = !strcasecmp(cfg->ntlm_backend, "winbind");
    au->ntlm_on = au->winbind || cfg->credentials_file[0];
    if (!au->ntlm_on && !cfg->keytab[0]) {
        mp_error("the proxy terminates authentication (dcerpc_mapiproxy:username, "
                 "mapiproxy:upstream spn or mapiproxy:delegation is set), so clients "
                 "authenticate to the proxy: set mapiproxy:credentials file (NTLM, "
                 "user:domain:NTHASH lines) or mapiproxy:ntlm backend = winbind (NTLM users "
                 "of the domain) and/or mapiproxy:keytab (Kerberos), or set "
                 "dcerpc_mapiproxy:delegated_auth = yes to relay the clients' own logons");
        return -1;
    }
    if (au->winbind && mp_winbind_init(cfg->winbind_socket_dir, why, sizeof(why))) {
        mp_error("mapiproxy:ntlm backend = winbind: %s", why);
        return -1;
    }
    if (cfg->groups_file[0] && mp_groups_load(&au->ugroups, cfg->groups_file, why, sizeof(why))) {
        mp_error("mapiproxy:groups file: %s", why);
        return -1;
    }
    if (cfg->credentials_file[0] &&
        mp_credstore_load(&au->creds, cfg->credentials_file, why, sizeof(why))) {
        mp_error("mapiproxy:credentials file: %s", why);
        return -1;
    }
    if (setup_kerberos(au, loop, done, arg))
        return -1;
    if (au->winbind && !au->kdc.started &&
        mp_kdc_start(&au->kdc, loop, au, done, arg)) /* winbind's calls run on the worker */
        return -1;
    if (au->up_mode != MP_UP_NTLM) {
        /* the upstream password is not needed */
    } else if (cfg->password_file[0]) {
        if (mp_read_secret_file(cfg->password_file, au->up_password, sizeof(au->up_password), why,
                                sizeof(why))) {
            mp_error("mapiproxy:password file: %s", why);
            return -1;
        }
    } else if (cfg->password[0]) {
        snprintf(au->up_password, sizeof(au->up_password), "%s", cfg->password);
    } else {
        mp_error("dcerpc_mapiproxy:username is set without a password: set "
                 "dcerpc_mapiproxy:password or, better, mapiproxy:password file");
        return -1;
    }
    const char *lv = cfg->upstream_auth_level[0] ? cfg->upstream_auth_level : "privacy";
    if (!strcasecmp(lv, "privacy"))
        au->up_level = MP_AUTHN_LEVEL_PKT_PRIVACY;
    else if (!strcasecmp(lv, "integrity"))
        au->up_level = MP_AUTHN_LEVEL_PKT_INTEGRITY;
    else if (!strcasecmp(lv, "connect"))
        au->up_level = MP_AUTHN_LEVEL_CONNECT;
    else {
        mp_error("mapiproxy:upstream auth level \"%s\": use privacy, integrity or connect", lv);
        return -1;
    }
    if (mp_ntlm_crypto_init()) {
        mp_error("NTLM needs MD4 and RC4 from OpenSSL's legacy provider: %s",
                 mp_ntlm_crypto_error());
        return -1;
    }
    if (cfg->realm[0])
        snprintf(au->fqdn, sizeof(au->fqdn), "%.63s.%.180s", cfg->netbios_name, cfg->realm);
    else
        snprintf(au->fqdn, sizeof(au->fqdn), "%s", cfg->netbios_name);
    au->acc_cfg.nb_computer = cfg->netbios_name;
    au->acc_cfg.nb_domain = cfg->domain[0] ? cfg->domain : cfg->netbios_name;
    au->acc_cfg.dns_computer = au->fqdn;
    au->acc_cfg.dns_domain = cfg->realm;
    au->acc_cfg.dns_tree = cfg->realm;
    au->acc_cfg.lookup = ntlm_lookup;
    au->acc_cfg.lookup_arg = &au->creds;
    char up[700];
    if (au->up_mode == MP_UP_NTLM)
        snprintf(up, sizeof(up), "%s\\%s (NTLM)", cfg->domain, cfg->username);
    else if (au->up_mode == MP_UP_KRB)
        snprintf(up, sizeof(up), "the proxy's Kerberos identity at %s", cfg->upstream_spn);
    else
        snprintf(up, sizeof(up), "each client (S4U2Self + S4U2Proxy via %s) at %s",
                 cfg->service_principal, cfg->upstream_spn);
    mp_info("clients authenticate to the proxy (%s%s%s); the upstream sees %s at level %s",
            au->winbind                ? "NTLM via winbind"
            : cfg->credentials_file[0] ? "NTLM"
                                       : "",
            au->ntlm_on && au->acc_cred ? ", " : "", au->acc_cred ? "Kerberos" : "", up, lv);
    if (au->winbind)
        mp_info("winbind: NTLM responses are checked by the domain through winbindd at %s",
                mp_winbind_socket_dir());
    return 0;
}

void mp_dce_sec_winbind_result(struct mp_dce_sec *cs, struct mp_wb_logon *l)
{
    cs->wb_done = true;
    cs->wb_rc = l->rc;
    memcpy(cs->wb_key, l->key, sizeof(cs->wb_key));
    snprintf(cs->wb_why, sizeof(cs->wb_why), "%s", l->why);
    snprintf(cs->wb_account, sizeof(cs->wb_account), "%s", l->account);
    snprintf(cs->wb_domain, sizeof(cs->wb_domain), "%s", l->account_domain);
    free(cs->wb_groups);
    cs->wb_groups = l->groups;
    l->groups = NULL;
}

int mp_dce_sec_initiate_ntlm(const struct mp_dce_auth *au, struct mp_dce_sec *us,
                             struct mp_buf *tok, char *why, size_t wl)
{
    us->type = MP_AUTHN_WINNT;
    int rc = mp_ntlm_initiator_init(&us->ini, au->cfg->username, au->cfg->domain, au->up_password,
                                    NULL, au->cfg->netbios_name, NULL, MP_NTLM_INITIATOR_FLAGS);
    us->ini_init = rc == 0;
    if (rc == 0)
        rc = mp_ntlm_initiator_negotiate(&us->ini, tok);
    if (rc)
        snprintf(why, wl, "NTLM initiator: %s", mp_ntlm_strerror(rc));
    return rc ? -1 : 0;
}

int mp_dce_sec_initiate_answer(struct mp_dce_sec *us, const struct mp_auth *auth,
                               struct mp_buf *out, char *why, size_t wl)
{
    if (us->gss) {
        int rc = mp_gss_step(us->gss, auth->value, auth->value_len, out) == MP_GSS_DONE ? 0 : -1;
        if (rc == 0) {
            size_t v = mp_gss_sig_len(us->gss, us->level, MP_MAX_FRAG);
            us->vlen = v > 16 ? v : 16;
            if (us->level >= MP_AUTHN_LEVEL_PKT_INTEGRITY && !v)
                rc = -1;
        }
        if (rc)
            snprintf(why, wl, "Kerberos AP-REP not accepted: %s", mp_gss_error(us->gss));
        return rc;
    }
    int rc = mp_ntlm_initiator_authenticate(&us->ini, auth->value, auth->value_len, out);
    if (rc == 0)
        rc = mp_ntlm_session_init(&us->sess, us->ini.flags, us->ini.exported_key, true);
    if (rc) {
        snprintf(why, wl, "sent an NTLM CHALLENGE the proxy cannot answer");
        return -1;
    }
    us->sess_init = true;
    return 0;
}

void mp_dce_sec_s4u_user(const struct mp_dce_auth *au, const struct mp_dce_sec *cs, char *out,
                         size_t n)
{
    if (cs->gss || strchr(cs->user, '@')) /* a principal, or an NTLM UPN */
        snprintf(out, n, "%s", cs->user);
    else
        snprintf(out, n, "%.150s@%.250s", cs->user, au->realm_uc);
}

int mp_dce_sec_unprotect(struct mp_dce_sec *sec, uint8_t *pdu, const struct mp_pdu_hdr *h,
                         size_t hl, const uint8_t **stub, size_t *len)
{
    if (sec->level < MP_AUTHN_LEVEL_CALL) { /* connect: nothing to verify */
        size_t end =
            h->auth_len ? (size_t)h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN : h->frag_len;
        if (end < hl)
            return -1;
        *stub = pdu + hl;
        *len = end - hl;
        return 0;
    }
    size_t off, n;
    bool bad;
    if (!h->auth_len || (size_t)h->auth_len + MP_SEC_TRAILER_LEN + hl > h->frag_len)
        bad = true;
    else if (pdu[h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN + 1] != sec->level)
        bad = true; /* a PDU at another level than the association's */
    else if (sec->gss)
        bad = mp_gss_unprotect(sec->gss, pdu, h->frag_len, sec->header_sign, &off, &n) != 0;
    else
        bad = mp_dcerpc_ntlm_unprotect(&sec->sess.recv, pdu, h->frag_len, sec->header_sign, &off,
                                       &n) != 0;
    if (bad)
        return -1;
    *stub = pdu + off;
    *len = n;
    return 0;
}
