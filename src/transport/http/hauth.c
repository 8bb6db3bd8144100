/* Authentication termination on the HTTPS front (doc/internals/http.md,
 * "Authentication termination"). */
#include "transport/http/hauth.h"

#include "auth/spnego.h"
#include "transport/http/hneg.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/ntlm_crypto.h"
#include "core/log.h"

/* ------------------------------------------------------------------ */
/* base64                                                              */

int mp_b64_encode(const uint8_t *p, size_t n, struct mp_buf *out)
{
    if (n > (1u << 24) || mp_buf_reserve(out, 4 * ((n + 2) / 3) + 1))
        return -1;
    int k = EVP_EncodeBlock(out->data + out->len, p, (int)n);
    if (k < 0)
        return -1;
    out->len += (size_t)k;
    return 0;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long mp_b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
    if (n % 4)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad || (v[j] = b64_val(s[i + j])) < 0)
                return -1; /* a letter after '=', or outside the alphabet */
        }
        if ((pad == 2 && (v[1] & 0xf)) || (pad == 1 && (v[2] & 0x3)))
            return -1; /* bits beyond the data: not the canonical form */
        uint32_t w =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t k = 3 - (size_t)pad;
        if (o + k > cap)
            return -1;
        for (size_t j = 0; j < k; j++)
            out[o++] = (uint8_t)(w >> (16 - 8 * j));
    }
    return (long)o;
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

int mp_hauth_init(struct mp_hauth *a, const struct mp_config *cfg)
{
    char why[600];
    memset(a, 0, sizeof *a);
    a->cfg = cfg;
    a->on = !strcasecmp(cfg->http_auth, "terminate");
    if (!a->on)
        return 0;
    a->up_basic = !strcasecmp(cfg->http_upstream_auth, "basic");
    if (mp_credstore_load(&a->creds, cfg->credentials_file, why, sizeof why)) {
        mp_error("mapiproxy:credentials file: %s", why);
        return -1;
    }
    if (cfg->groups_file[0] && mp_groups_load(&a->groups, cfg->groups_file, why, sizeof why)) {
        mp_error("mapiproxy:groups file: %s", why);
        return -1;
    }
    if (cfg->password_file[0]) {
        if (mp_read_secret_file(cfg->password_file, a->up_password, sizeof a->up_password, why,
                                sizeof why)) {
            mp_error("mapiproxy:password file: %s", why);
            return -1;
        }
    } else {
        snprintf(a->up_password, sizeof a->up_password, "%s", cfg->password);
    }
    if (mp_ntlm_crypto_init()) {
        mp_error("NTLM needs MD4 and RC4 from OpenSSL's legacy provider: %s",
                 mp_ntlm_crypto_error());
        return -1;
    }
    if (cfg->realm[0])
        snprintf(a->fqdn, sizeof a->fqdn, "%.63s.%.200s", cfg->netbios_name, cfg->realm);
    else
        snprintf(a->fqdn, sizeof a->fqdn, "%s", cfg->netbios_name);
    a->acc_cfg.nb_computer = cfg->netbios_name;
    a->acc_cfg.nb_domain = cfg->domain[0] ? cfg->domain : cfg->netbios_name;
    a->acc_cfg.dns_computer = a->fqdn;
    a->acc_cfg.dns_domain = cfg->realm[0] ? cfg->realm : NULL;
    a->acc_cfg.lookup = mp_credstore_lookup;
    a->acc_cfg.lookup_arg = &a->creds;
    a->acc_cfg.require_mic = false;
    snprintf(a->realm, sizeof a->realm, "%.127s",
             cfg->http_realm[0] ? cfg->http_realm : cfg->http_public_name);
    for (char *q = a->realm; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            *q = '_'; /* it goes inside a quoted string */
    if (cfg->http_negotiate) {
        char err[MP_GSS_ERRLEN];
        a->neg = true;
        a->krb = mp_gss_cred_acceptor(cfg->keytab, NULL, err, sizeof err);
        if (!a->krb) {
            mp_error("mapiproxy:http negotiate: mapiproxy:keytab: %s", err);
            return -1;
        }
    }
    bool up_neg = !strcasecmp(cfg->http_upstream_auth, "negotiate");
    mp_info("http front: authentication terminated: clients log on to the proxy (NTLM%s%s, %zu "
            "account(s)), the proxy to the upstream as %s%s%s (%s)",
            cfg->http_basic ? ", Basic" : "", a->krb ? ", Negotiate (Kerberos)" : "", a->creds.n,
            up_neg ? "" : cfg->domain, !up_neg && cfg->domain[0] ? "\\" : "",
            up_neg
                ? (cfg->upstream_principal[0] ? cfg->upstream_principal : "its Kerberos identity")
                : cfg->username,
            up_neg        ? "Negotiate (Kerberos)"
            : a->up_basic ? "Basic"
                          : "NTLM");
    return 0;
}

void mp_hauth_free(struct mp_hauth *a)
{
    mp_credstore_free(&a->creds);
    mp_groups_free(&a->groups);
    mp_gss_cred_free(a->krb);
    a->krb = NULL;
    mp_ntlm_cleanse(a->up_password, sizeof a->up_password);
}

/* ------------------------------------------------------------------ */
/* client side                                                         */

/* mapiproxy:allowed users (shared with the DCE/RPC relay): a list entry
 * matches "user" or "DOMAIN\user", case-insensitively, and "@group" the
 * users its lines in mapiproxy:groups file list; empty allows all. */
static bool allowed(const struct mp_hauth *a, const char *user, const char *domain)
{
    char full[600];
    snprintf(full, sizeof full, "%s\\%s", domain, user);
    const char *const names[2] = {user, full};
    size_t lu = strlen(user), lf = strlen(full);
    const char *p = a->cfg->allowed_users;
    if (!*p)
        return true;
    while (*p) {
        size_t skip = strspn(p, " ,\t");
        p += skip;
        size_t w = strcspn(p, " ,\t");
        char g[256];
        if (w > 1 && *p == '@' && w - 1 < sizeof g) {
            memcpy(g, p + 1, w - 1);
            g[w - 1] = 0;
            if (mp_groups_has(&a->groups, g, names, domain[0] ? 2 : 1))
                return true;
        } else if ((w == lu && lu && !strncasecmp(p, user, w)) ||
                   (w == lf && domain[0] && !strncasecmp(p, full, w))) {
            return true;
        }
        p += w;
    }
    return false;
}

static int offer(const struct mp_hauth *a, struct mp_buf *hdrs, const char *ntlm_tok)
{
    static const char ntlm[] = "WWW-Authenticate: NTLM", neg[] = "WWW-Authenticate: Negotiate\r\n";
    if (!ntlm_tok && a->neg && mp_buf_append(hdrs, neg, sizeof neg - 1))
        return -1;
    if (mp_buf_append(hdrs, ntlm, sizeof ntlm - 1))
        return -1;
    if (ntlm_tok &&
        (mp_buf_append(hdrs, " ", 1) || mp_buf_append(hdrs, ntlm_tok, strlen(ntlm_tok))))
        return -1;
    if (mp_buf_append(hdrs, "\r\n", 2))
        return -1;
    if (ntlm_tok || !a->cfg->http_basic)
        return 0;
    char b[200];
    int n = snprintf(b, sizeof b, "WWW-Authenticate: Basic realm=\"%s\", charset=\"UTF-8\"\r\n",
                     a->realm);
    return mp_buf_append(hdrs, b, (size_t)n);
}

static enum mp_hauth_verdict deny(const struct mp_hauth *a, struct mp_buf *hdrs, char *why,
                                  size_t wl, const char *what)
{
    snprintf(why, wl, "%s", what);
    offer(a, hdrs, NULL);
    return MP_HAUTH_DENY;
}

/* Basic: "user:password" (user may be DOMAIN\user or user@domain); the
 * password's NT hash is compared with the credentials file's. */
static enum mp_hauth_verdict basic(struct mp_hauth *a, struct mp_hauth_conn *c, const char *v,
                                   size_t n, struct mp_buf *hdrs, char *why, size_t wl)
{
    uint8_t raw[768];
    long k = mp_b64_decode(v, n, raw, sizeof raw - 1);
    if (k < 0)
        return deny(a, hdrs, why, wl, "malformed Basic credentials");
    raw[k] = 0;
    char *colon = memchr(raw, ':', (size_t)k);
    if (!colon || memchr(raw, 0, (size_t)k)) {
        mp_ntlm_cleanse(raw, sizeof raw);
        return deny(a, hdrs, why, wl, "malformed Basic credentials");
    }
    *colon = 0;
    char *user = (char *)raw, *domain = "";
    const char *pw = colon + 1;
    char *sep = strchr(user, '\\');
    if (sep) {
        *sep = 0;
        domain = user;
        user = sep + 1;
    } else if ((sep = strchr(user, '@'))) {
        *sep = 0;
        domain = sep + 1;
    }
    if (!domain[0]) /* a bare user name: the proxy's own domain, as NTLM clients do */
        domain = (char *)a->acc_cfg.nb_domain;
    snprintf(c->user, sizeof c->user, "%.200s%s%.200s", domain, domain[0] ? "\\" : "", user);
    uint8_t want[16], got[16];
    bool ok = user[0] && mp_credstore_lookup(&a->creds, user, domain, want) == 0 &&
              mp_ntlm_ntowfv1(pw, got) == 0 && CRYPTO_memcmp(want, got, 16) == 0;
    if (!ok && sep && sep[1] && strchr(domain, '.')) { /* user@dns.domain: its first label */
        domain[strcspn(domain, ".")] = 0;
        ok = mp_credstore_lookup(&a->creds, user, domain, want) == 0 &&
             mp_ntlm_ntowfv1(pw, got) == 0 && CRYPTO_memcmp(want, got, 16) == 0;
    }
    bool in_list = ok && allowed(a, user, domain);
    mp_ntlm_cleanse(want, sizeof want);
    mp_ntlm_cleanse(got, sizeof got);
    mp_ntlm_cleanse(raw, sizeof raw);
    if (!ok)
        return deny(a, hdrs, why, wl, "Basic logon failed (unknown user or wrong password)");
    if (!in_list)
        return deny(a, hdrs, why, wl, "not in mapiproxy:allowed users");
    return MP_HAUTH_PASS;
}

/* The NTLM reply token (CHALLENGE, or under SPNEGO the final NegTokenResp)
 * as a WWW-Authenticate line: "NTLM <b64>" or "Negotiate <b64>". */
static int ntlm_reply(const struct mp_hauth *a, struct mp_hauth_conn *c, struct mp_buf *hdrs,
                      const uint8_t *tok, size_t n)
{
    struct mp_buf b64 = {0}, w = {0};
    int rc = -1;
    if (c->spnego) {
        if (!mp_spnego_build_resp(&w, MP_SPNEGO_ACCEPT_INCOMPLETE, mp_oid_ntlm, sizeof mp_oid_ntlm,
                                  tok, n, NULL, 0) &&
            !mp_b64_encode(w.data, w.len, &b64) && !mp_buf_append(&b64, "", 1)) {
            static const char neg[] = "WWW-Authenticate: Negotiate ";
            rc = mp_buf_append(hdrs, neg, sizeof neg - 1) ||
                 mp_buf_append(hdrs, b64.data, b64.len - 1) || mp_buf_append(hdrs, "\r\n", 2);
        }
    } else if (!mp_b64_encode(tok, n, &b64) && !mp_buf_append(&b64, "", 1)) {
        rc = offer(a, hdrs, (const char *)mp_buf_head(&b64));
    }
    mp_buf_free(&w);
    mp_buf_free(&b64);
    return rc;
}

/* NTLM on the connection, raw (scheme NTLM) or inside SPNEGO (scheme
 * Negotiate, c->spnego: the CHALLENGE goes back in a NegTokenResp, the
 * client's mechListMIC over its MechTypeList, when sent, is checked with the
 * new session's keys and answered in the accept-completed token, kept in
 * c->mutual).  mic: the client's mechListMIC with the AUTHENTICATE. */
static enum mp_hauth_verdict ntlm_tok(struct mp_hauth *a, struct mp_hauth_conn *c,
                                      const uint8_t *tok, long k, const uint8_t *mic,
                                      size_t mic_len, struct mp_buf *hdrs, char *why, size_t wl)
{
    int type = k < 0 ? -1 : mp_ntlmssp_msg_type(tok, (size_t)k);
    if (type == MP_NTLMSSP_NEGOTIATE_MSG) {
        if (c->acc_on)
            mp_ntlm_acceptor_free(&c->acc);
        c->authed = c->krb = false; /* a new handshake replaces the connection's logon */
        c->user[0] = 0;
        mp_ntlm_acceptor_init(&c->acc, &a->acc_cfg);
        c->acc_on = true;
        struct mp_buf chal = {0};
        /* HTTP clients built on python's ntlm-auth announce neither Unicode
         * nor NTLM in their NEGOTIATE (they use both); the acceptor, which
         * insists on them, gets a copy with the two flags set, and keeps the
         * original bytes for the MIC */
        uint8_t fixed[4096];
        memcpy(fixed, tok, (size_t)k);
        if (k >= 16) {
            uint32_t f = (uint32_t)fixed[12] | (uint32_t)fixed[13] << 8 |
                         (uint32_t)fixed[14] << 16 | (uint32_t)fixed[15] << 24;
            f |= MP_NTLMSSP_NEGOTIATE_UNICODE | MP_NTLMSSP_NEGOTIATE_NTLM;
            for (int i = 0; i < 4; i++)
                fixed[12 + i] = (uint8_t)(f >> (8 * i));
        }
        int rc = mp_ntlm_acceptor_negotiate(&c->acc, fixed, (size_t)k, &chal);
        if (!rc && mp_buf_avail(&c->acc.neg) == (size_t)k)
            memcpy(mp_buf_head(&c->acc.neg), tok, (size_t)k);
        if (rc || ntlm_reply(a, c, hdrs, mp_buf_head(&chal), mp_buf_avail(&chal))) {
            mp_buf_free(&chal);
            mp_ntlm_acceptor_free(&c->acc);
            c->acc_on = false;
            char w[120];
            snprintf(w, sizeof w, "bad NTLM NEGOTIATE (%s)", mp_ntlm_strerror(rc ? rc : -8));
            return deny(a, hdrs, why, wl, w);
        }
        mp_buf_free(&chal);
        return MP_HAUTH_CHALLENGE;
    }
    if (type != MP_NTLMSSP_AUTHENTICATE_MSG || !c->acc_on) {
        if (c->acc_on)
            mp_ntlm_acceptor_free(&c->acc);
        c->acc_on = false;
        return deny(a, hdrs, why, wl,
                    type == MP_NTLMSSP_AUTHENTICATE_MSG ? "NTLM AUTHENTICATE without NEGOTIATE on "
                                                          "this connection"
                                                        : "malformed NTLM message");
    }
    struct mp_ntlm_result res;
    memset(&res, 0, sizeof res);
    int rc = mp_ntlm_acceptor_authenticate(&c->acc, tok, (size_t)k, &res);
    mp_ntlm_acceptor_free(&c->acc);
    c->acc_on = false;
    const char *bad = NULL;
    uint8_t ours[16];
    if (!rc && c->spnego && mic) { /* RFC 4178 mechListMIC, MS-SPNG 3.3.5.1 */
        struct mp_ntlm_session ss;
        memset(&ss, 0, sizeof ss);
        if (mic_len != 16 || mp_ntlm_session_init(&ss, res.flags, res.exported_key, false) ||
            mp_ntlm_verify(&ss.recv, c->mech_list, c->mech_list_len, mic) ||
            mp_ntlm_sign(&ss.send, c->mech_list, c->mech_list_len, ours))
            bad = "bad SPNEGO mechListMIC";
        mp_ntlm_session_free(&ss);
    }
    mp_ntlm_cleanse(res.exported_key, sizeof res.exported_key);
    if (res.user[0] || res.domain[0])
        snprintf(c->user, sizeof c->user, "%.250s%s%.250s", res.domain, res.domain[0] ? "\\" : "",
                 res.user);
    if (rc) {
        char w[120];
        snprintf(w, sizeof w, "NTLM logon failed: %s", mp_ntlm_strerror(rc));
        return deny(a, hdrs, why, wl, w);
    }
    if (bad)
        return deny(a, hdrs, why, wl, bad);
    if (!allowed(a, res.user, res.domain))
        return deny(a, hdrs, why, wl, "not in mapiproxy:allowed users");
    c->mutual[0] = 0;
    if (c->spnego) { /* accept-completed, with our MIC when the client sent one */
        struct mp_buf w = {0}, b64 = {0};
        if (!mp_spnego_build_resp(&w, MP_SPNEGO_ACCEPT_COMPLETED, NULL, 0, NULL, 0,
                                  mic ? ours : NULL, mic ? 16 : 0) &&
            !mp_b64_encode(w.data, w.len, &b64) && b64.len + 11 < sizeof c->mutual)
            snprintf(c->mutual, sizeof c->mutual, "Negotiate %.*s", (int)b64.len,
                     (const char *)b64.data);
        mp_buf_free(&w);
        mp_buf_free(&b64);
    }
    c->authed = true;
    return MP_HAUTH_PASS;
}

static enum mp_hauth_verdict ntlm(struct mp_hauth *a, struct mp_hauth_conn *c, const char *v,
                                  size_t n, struct mp_buf *hdrs, char *why, size_t wl)
{
    uint8_t tok[4096];
    long k = mp_b64_decode(v, n, tok, sizeof tok);
    c->spnego = false;
    return ntlm_tok(a, c, tok, k, NULL, 0, hdrs, why, wl);
}

/* Negotiate carrying NTLM (RFC 4559 with SPNEGO, MS-SPNG): a NegTokenInit
 * whose first mechanism is NTLM with the NEGOTIATE, or a NegTokenResp with
 * the AUTHENTICATE on the connection that got the CHALLENGE; a raw NTLM
 * token under Negotiate is taken as such.  1: not NTLM (Kerberos). */
static int spnego_ntlm(struct mp_hauth *a, struct mp_hauth_conn *c, const uint8_t *tok, long k,
                       struct mp_buf *hdrs, char *why, size_t wl, enum mp_hauth_verdict *v)
{
    if (k >= 8 && !memcmp(tok, "NTLMSSP", 8)) {
        c->spnego = false;
        *v = ntlm_tok(a, c, tok, k, NULL, 0, hdrs, why, wl);
        return 0;
    }
    struct mp_spnego_init ini;
    struct mp_spnego_resp r;
    if (k > 0 && !mp_spnego_parse_init(tok, (size_t)k, &ini)) {
        if (mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len) != MP_MECH_NTLM)
            return 1;
        free(c->mech_list);
        c->mech_list = malloc(ini.mech_list_len);
        if (!c->mech_list) {
            *v = deny(a, hdrs, why, wl, "out of memory");
            return 0;
        }
        memcpy(c->mech_list, ini.mech_list, ini.mech_list_len);
        c->mech_list_len = ini.mech_list_len;
        c->spnego = true;
        *v = ini.mech_token
                 ? ntlm_tok(a, c, ini.mech_token, (long)ini.mech_token_len, NULL, 0, hdrs, why, wl)
                 : deny(a, hdrs, why, wl, "SPNEGO NTLM without a NEGOTIATE");
        return 0;
    }
    if (k > 0 && c->spnego && c->acc_on && !mp_spnego_parse_resp(tok, (size_t)k, &r)) {
        *v = r.token ? ntlm_tok(a, c, r.token, (long)r.token_len, r.mic, r.mic_len, hdrs, why, wl)
                     : deny(a, hdrs, why, wl, "SPNEGO NegTokenResp without an NTLM AUTHENTICATE");
        return 0;
    }
    return 1;
}

/* Negotiate with Kerberos (RFC 4559): one leg, the ticket checked with the
 * proxy's keytab; the connection is authenticated as the client's
 * principal.  An NTLM token inside Negotiate goes to the NTLM handshake. */
static enum mp_hauth_verdict negotiate(struct mp_hauth *a, struct mp_hauth_conn *c,
                                       const char *authz, size_t len, struct mp_buf *hdrs,
                                       char *why, size_t wl)
{
    char err[MP_GSS_ERRLEN + 64], user[sizeof c->user];
    struct mp_buf reply = {0};
    c->authed = c->krb = false;
    c->user[0] = 0;
    int rc = a->krb ? mp_hneg_accept(a->krb, authz, len, user, sizeof user, &reply, err, sizeof err)
                    : (snprintf(err, sizeof err, "no Kerberos keytab"), -1);
    c->mutual[0] = 0; /* the acceptor's token, for an answer of the proxy's own (RPC over HTTP) */
    if (!rc && reply.len && reply.len + 11 < sizeof c->mutual)
        snprintf(c->mutual, sizeof c->mutual, "Negotiate %.*s", (int)reply.len,
                 (const char *)reply.data);
    mp_buf_free(&reply);
    if (rc) {
        char w[MP_GSS_ERRLEN + 100];
        snprintf(w, sizeof w, "Negotiate logon refused: %s", err);
        return deny(a, hdrs, why, wl, w);
    }
    snprintf(c->user, sizeof c->user, "%s", user);
    /* allowed users: the whole principal, or the bare name within our realm */
    char *at = strrchr(user, '@');
    bool ok = allowed(a, user, "");
    if (!ok && at && a->cfg->realm[0] && !strcasecmp(at + 1, a->cfg->realm)) {
        *at = 0;
        ok = allowed(a, user, "");
    }
    if (!ok)
        return deny(a, hdrs, why, wl, "not in mapiproxy:allowed users");
    c->authed = c->krb = true;
    return MP_HAUTH_PASS;
}

enum mp_hauth_verdict mp_hauth_client(struct mp_hauth *a, struct mp_hauth_conn *c,
                                      const char *authz, size_t len, struct mp_buf *hdrs, char *why,
                                      size_t wl)
{
    why[0] = 0;
    size_t sl = 0;
    while (authz && sl < len && authz[sl] != ' ')
        sl++;
    const char *v = authz ? authz + sl : NULL;
    size_t vl = authz ? len - sl : 0;
    while (vl && *v == ' ')
        v++, vl--;
    while (vl && v[vl - 1] == ' ')
        vl--;
    bool is_ntlm = authz && sl == 4 && !strncasecmp(authz, "NTLM", 4) && vl;
    if (is_ntlm) /* a handshake step (a NEGOTIATE restarts the connection's logon) */
        return ntlm(a, c, v, vl, hdrs, why, wl);
    if (authz && sl == 9 && !strncasecmp(authz, "Negotiate", 9) && vl && a->neg) {
        uint8_t tok[4096]; /* NTLM under Negotiate, raw or in SPNEGO; else Kerberos */
        long k = vl <= 5460 ? mp_b64_decode(v, vl, tok, sizeof tok) : -1;
        enum mp_hauth_verdict nv;
        if (k > 0 && !spnego_ntlm(a, c, tok, k, hdrs, why, wl, &nv))
            return nv;
        return negotiate(a, c, authz, len, hdrs, why, wl);
    }
    if (c->authed && !(authz && sl == 5 && !strncasecmp(authz, "Basic", 5)))
        return MP_HAUTH_PASS; /* the connection is authenticated (NTLM) */
    if (authz && sl == 5 && !strncasecmp(authz, "Basic", 5) && a->cfg->http_basic) {
        c->authed = c->krb = false;
        return basic(a, c, v, vl, hdrs, why, wl);
    }
    if (offer(a, hdrs, NULL))
        return MP_HAUTH_DENY;
    if (authz && sl == 6 && !strncasecmp(authz, "Bearer", 6)) {
        snprintf(why, wl, "Bearer tokens are not accepted when the proxy terminates logons");
        return MP_HAUTH_DENY;
    }
    return MP_HAUTH_CHALLENGE;
}

/* "DOMAIN\user" from an NTLM AUTHENTICATE's fields. */
static int ntlm_who(const uint8_t *tok, size_t k, char *who, size_t n)
{
    struct mp_ntlm_authenticate am;
    if (mp_ntlmssp_msg_type(tok, k) != MP_NTLMSSP_AUTHENTICATE_MSG ||
        mp_ntlmssp_parse_authenticate(tok, k, &am))
        return 0;
    char d[3 * 256 + 1] = "", u[3 * 256 + 1] = "";
    const struct mp_ntlm_field *f[2] = {&am.domain, &am.user};
    char *o[2] = {d, u};
    for (int i = 0; i < 2; i++) {
        if (!f[i]->len)
            continue;
        if (am.flags & MP_NTLMSSP_NEGOTIATE_UNICODE) {
            if (f[i]->len % 2 || mp_utf16le_to_utf8(f[i]->p, f[i]->len, o[i], sizeof d))
                return 0;
        } else {
            snprintf(o[i], sizeof d, "%.*s", (int)(f[i]->len < 256 ? f[i]->len : 256),
                     (const char *)f[i]->p);
        }
    }
    if (!u[0])
        return 0; /* anonymous */
    snprintf(who, n, "%.250s%s%.250s", d, d[0] ? "\\" : "", u);
    return 1;
}

int mp_hauth_peek_identity(const char *authz, size_t len, char *who, size_t n)
{
    who[0] = 0;
    size_t sl = 0;
    while (authz && sl < len && authz[sl] != ' ')
        sl++;
    if (!authz || sl == len)
        return 0;
    const char *v = authz + sl + 1;
    size_t vl = len - sl - 1;
    while (vl && *v == ' ')
        v++, vl--;
    while (vl && v[vl - 1] == ' ')
        vl--;
    bool nego = sl == 9 && !strncasecmp(authz, "Negotiate", 9);
    uint8_t tok[4096];
    long k = mp_b64_decode(v, vl, tok, sizeof tok - 1);
    if (k <= 0)
        return nego && vl ? 3 : 0; /* a Kerberos ticket with a large PAC is longer */
    int r = 0;
    if ((sl == 4 && !strncasecmp(authz, "NTLM", 4)) || nego) {
        r = ntlm_who(tok, (size_t)k, who, n);
        struct mp_spnego_init ini;
        struct mp_spnego_resp rs;
        /* SPNEGO around NTLM: the AUTHENTICATE is a NegTokenResp's
         * responseToken (or, from a client that skips the negotiation, a
         * NegTokenInit's mechToken) */
        if (!r && nego && mp_spnego_token_kind(tok, (size_t)k) == 1 &&
            !mp_spnego_parse_resp(tok, (size_t)k, &rs) && rs.token)
            r = ntlm_who(rs.token, rs.token_len, who, n);
        else if (!r && nego && mp_spnego_token_kind(tok, (size_t)k) == 0 &&
                 !mp_spnego_parse_init(tok, (size_t)k, &ini) && ini.mech_token)
            r = ntlm_who(ini.mech_token, ini.mech_token_len, who, n);
        /* anything else under Negotiate on a request the server takes is a
         * Kerberos AP-REQ (raw or in SPNEGO): the client's name is inside
         * the ticket, encrypted for the server */
        if (!r && nego && mp_ntlmssp_msg_type(tok, (size_t)k) < 0)
            r = 3;
    } else if (sl == 5 && !strncasecmp(authz, "Basic", 5)) {
        tok[k] = 0;
        char *colon = memchr(tok, ':', (size_t)k);
        if (colon && colon > (char *)tok && !memchr(tok, 0, (size_t)k)) {
            *colon = 0;
            char *user = (char *)tok, *at = strchr(user, '@');
            if (!strchr(user, '\\') && at && at[1]) { /* user@dns.domain: DNSLABEL\user */
                *at = 0;
                snprintf(who, n, "%.*s\\%.250s", (int)strcspn(at + 1, "."), at + 1, user);
            } else {
                snprintf(who, n, "%.500s", user);
            }
            r = 2;
        }
    }
    mp_ntlm_cleanse(tok, sizeof tok);
    return r;
}

void mp_hauth_conn_free(struct mp_hauth_conn *c)
{
    if (c->acc_on)
        mp_ntlm_acceptor_free(&c->acc);
    c->acc_on = c->authed = c->krb = c->spnego = false;
    c->mutual[0] = 0;
    free(c->mech_list);
    c->mech_list = NULL;
}

/* ------------------------------------------------------------------ */
/* upstream side                                                       */

int mp_hauth_up_basic(const struct mp_hauth *a, char *out, size_t cap)
{
    char plain[800];
    int n = snprintf(plain, sizeof plain, "%s%s%s:%s", a->cfg->domain,
                     a->cfg->domain[0] ? "\\" : "", a->cfg->username, a->up_password);
    struct mp_buf b = {0};
    int rc = n < 0 || (size_t)n >= sizeof plain ||
             mp_b64_encode((const uint8_t *)plain, (size_t)n, &b) || b.len + 7 > cap;
    if (!rc)
        snprintf(out, cap, "Basic %.*s", (int)b.len, (const char *)b.data);
    mp_ntlm_cleanse(plain, sizeof plain);
    mp_buf_free_wiped(&b);
    return rc ? -1 : 0;
}

static int ntlm_value(const struct mp_buf *tok, struct mp_buf *out)
{
    return mp_buf_append(out, "NTLM ", 5) || mp_b64_encode(mp_buf_head(tok), mp_buf_avail(tok), out)
               ? -1
               : 0;
}

int mp_hauth_up_negotiate(struct mp_hauth *a, struct mp_hauth_up *u, struct mp_buf *out)
{
    mp_hauth_up_free(u);
    if (mp_ntlm_initiator_init(&u->ini, a->cfg->username, a->cfg->domain, a->up_password, NULL,
                               a->cfg->netbios_name[0] ? a->cfg->netbios_name : NULL, NULL, 0))
        return -1;
    u->ini_on = true;
    struct mp_buf tok = {0};
    int rc = mp_ntlm_initiator_negotiate(&u->ini, &tok) || ntlm_value(&tok, out);
    mp_buf_free(&tok);
    return rc ? -1 : 0;
}

int mp_hauth_up_authenticate(struct mp_hauth_up *u, const char *www, size_t len, struct mp_buf *out,
                             char *why, size_t wl)
{
    if (!u->ini_on || len < 6 || strncasecmp(www, "NTLM ", 5)) {
        snprintf(why, wl, "no NTLM challenge in its 401");
        return -1;
    }
    const char *v = www + 5;
    size_t vl = len - 5;
    while (vl && *v == ' ')
        v++, vl--;
    while (vl && v[vl - 1] == ' ')
        vl--;
    uint8_t tok[4096];
    long k = mp_b64_decode(v, vl, tok, sizeof tok);
    if (k < 0 || mp_ntlmssp_msg_type(tok, (size_t)k) != MP_NTLMSSP_CHALLENGE_MSG) {
        snprintf(why, wl, "malformed NTLM CHALLENGE");
        return -1;
    }
    struct mp_buf am = {0};
    int rc = mp_ntlm_initiator_authenticate(&u->ini, tok, (size_t)k, &am) || ntlm_value(&am, out);
    mp_buf_free(&am);
    mp_ntlm_cleanse(u->ini.exported_key, sizeof u->ini.exported_key);
    if (rc)
        snprintf(why, wl, "NTLM CHALLENGE refused by the initiator (malformed or unsupported)");
    return rc ? -1 : 0;
}

void mp_hauth_up_free(struct mp_hauth_up *u)
{
    if (u->ini_on)
        mp_ntlm_initiator_free(&u->ini);
    u->ini_on = false;
}
