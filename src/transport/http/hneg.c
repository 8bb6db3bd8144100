/* HTTP Negotiate (RFC 4559) with Kerberos: see hneg.h. */
#include "transport/http/hneg.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/kdc_worker.h"
#include "auth/ntlm_crypto.h"
#include "core/config.h"
#include "core/log.h"
#include "transport/http/hauth.h"

#define HNEG_MAX_TOKEN 12288 /* a ticket with a large PAC fits */

int mp_hneg_authz(struct mp_gss_cred *cred, const char *spn, char *line, size_t len, char *err,
                  size_t errlen)
{
    struct mp_gss_ctx *c =
        mp_gss_initiator_new(cred, spn, MP_AUTHN_GSS_NEGOTIATE, MP_GSS_F_NO_DCE_STYLE, err, errlen);
    if (!c)
        return -1;
    struct mp_buf tok = {0}, b64 = {0};
    int rc = -1;
    int st = mp_gss_step(c, NULL, 0, &tok);
    if (st == MP_GSS_FAILED || !tok.len)
        snprintf(err, errlen, "Kerberos toward %s: %s", spn, mp_gss_error(c));
    else if (mp_b64_encode(tok.data, tok.len, &b64) || b64.len + 40 > len)
        snprintf(err, errlen, "Negotiate token too long (%zu bytes)", tok.len);
    else {
        snprintf(line, len, "Authorization: Negotiate %.*s\r\n", (int)b64.len,
                 (const char *)b64.data);
        rc = 0;
    }
    if (b64.data)
        mp_ntlm_cleanse(b64.data, b64.len);
    if (tok.data)
        mp_ntlm_cleanse(tok.data, tok.len);
    mp_buf_free(&b64);
    mp_buf_free(&tok);
    mp_gss_ctx_free(c); /* the upstream's mutual token is not checked (TLS names it) */
    return rc;
}

struct mp_gss_cred *mp_hneg_up_cred(const struct mp_config *cfg, const void *tag,
                                    const char *option, const char *spn)
{
    char err[MP_GSS_ERRLEN] = "", cc[600];
    const char *ccache = cfg->upstream_ccache[0] ? cfg->upstream_ccache : NULL;
    if (!ccache && cfg->upstream_keytab[0]) {
        snprintf(cc, sizeof cc, "MEMORY:mapiproxy-http-up-%p", tag);
        ccache = cc;
    }
    struct mp_gss_cred *c = mp_gss_cred_initiator(
        ccache, cfg->upstream_keytab[0] ? cfg->upstream_keytab : NULL,
        cfg->upstream_principal[0] ? cfg->upstream_principal : NULL, err, sizeof err);
    if (!c)
        mp_error("%s = negotiate: the proxy's Kerberos identity (mapiproxy:upstream "
                 "keytab/ccache/principal): %s",
                 option, err);
    char line[16384];
    if (c && mp_hneg_authz(c, spn, line, sizeof line, err, sizeof err))
        mp_warn("%s = negotiate: no Kerberos service ticket for %s yet (%s); each upstream "
                "connection will try again",
                option, spn, err);
    mp_ntlm_cleanse(line, sizeof line);
    return c;
}

void mp_hneg_job(struct mp_kdc_job *j, struct mp_gss_cred *cred, const char *spn)
{
    char line[16384], err[MP_GSS_ERRLEN + 64];
    j->rc = -1;
    if (mp_hneg_authz(cred, spn, line, sizeof line, err, sizeof err))
        snprintf(j->why, sizeof j->why, "%s", err);
    else if (mp_buf_append(&j->tok, line, strlen(line) + 1))
        snprintf(j->why, sizeof j->why, "out of memory");
    else
        j->rc = 0;
    mp_ntlm_cleanse(line, sizeof line);
}

/* RFC 2743 3.1 framing with SPNEGO's OID (60 len 06 06 2b0601050502 ...)
 * or a bare NegTokenInit (a0 ...); anything else goes to Kerberos as is. */
static bool is_spnego(const uint8_t *t, size_t n)
{
    static const uint8_t oid[] = {0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02};
    if (n && t[0] == 0xa0)
        return true;
    if (n < 2 || t[0] != 0x60)
        return false;
    size_t off = 2;
    if (t[1] & 0x80) {
        size_t k = t[1] & 0x7f;
        if (k == 0 || k > 4)
            return false;
        off += k;
    }
    return n >= off + sizeof oid && !memcmp(t + off, oid, sizeof oid);
}

int mp_hneg_accept(struct mp_gss_cred *acc, const char *val, size_t n, char *user, size_t ul,
                   struct mp_buf *reply, char *err, size_t errlen)
{
    if (n < 10 || strncasecmp(val, "Negotiate ", 10)) {
        snprintf(err, errlen, "not a Negotiate header");
        return -1;
    }
    val += 10;
    n -= 10;
    while (n && val[0] == ' ')
        val++, n--;
    uint8_t *tok = malloc(HNEG_MAX_TOKEN);
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    long tl = n <= HNEG_MAX_TOKEN * 4 / 3 + 4 ? mp_b64_decode(val, n, tok, HNEG_MAX_TOKEN) : -1;
    int rc = -1;
    struct mp_gss_ctx *c = NULL;
    struct mp_buf out = {0};
    if (tl <= 0)
        snprintf(err, errlen, "malformed Negotiate token");
    else if (tl >= 8 && !memcmp(tok, "NTLMSSP", 8))
        snprintf(err, errlen, "ntlm");
    else if (!(c = mp_gss_acceptor_new(
                   acc, is_spnego(tok, (size_t)tl) ? MP_AUTHN_GSS_NEGOTIATE : MP_AUTHN_GSS_KERBEROS,
                   MP_GSS_F_NO_DCE_STYLE, err, errlen)))
        ;
    else if (mp_gss_step(c, tok, (size_t)tl, &out) != MP_GSS_DONE)
        snprintf(err, errlen, "%s", mp_gss_error(c)[0] ? mp_gss_error(c) : "more than one leg");
    else if (out.len && mp_b64_encode(out.data, out.len, reply))
        snprintf(err, errlen, "out of memory");
    else {
        snprintf(user, ul, "%s", mp_gss_peer_name(c));
        rc = 0;
    }
    mp_ntlm_cleanse(tok, HNEG_MAX_TOKEN);
    free(tok);
    mp_buf_free(&out);
    mp_gss_ctx_free(c);
    return rc;
}
