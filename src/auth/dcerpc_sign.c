/* NTLM sign/seal of DCE/RPC PDUs.  See dcerpc_sign.h. */
#include "auth/dcerpc_sign.h"

#include <string.h>

#include "dcerpc/pdu.h"

int mp_dcerpc_auth_region_of(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r)
{
    struct mp_pdu_hdr h;
    memset(r, 0, sizeof(*r));
    if (!pdu || mp_pdu_hdr_check(pdu, len, &h) || h.frag_len != len)
        return -1;
    size_t hl = mp_pdu_body_off(&h);
    if (!hl || h.auth_len == 0 || len < hl + MP_SEC_TRAILER_LEN + (size_t)h.auth_len)
        return -1;
    r->body_off = hl;
    r->verifier_off = len - h.auth_len;
    r->trailer_off = r->verifier_off - MP_SEC_TRAILER_LEN;
    r->body_len = r->trailer_off - hl;
    const uint8_t *t = pdu + r->trailer_off;
    r->auth_type = t[0];
    r->auth_level = t[1];
    r->pad_len = t[2];
    r->context_id = mp_get32(t + 4);
    if (r->pad_len > r->body_len)
        return -1;
    r->stub_len = r->body_len - r->pad_len;
    return 0;
}

int mp_dcerpc_auth_locate(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r)
{
    if (mp_dcerpc_auth_region_of(pdu, len, r))
        return -1;
    if (len - r->verifier_off != MP_NTLM_VERIFIER_LEN ||
        (r->auth_type != MP_AUTHN_WINNT && r->auth_type != MP_AUTHN_SPNEGO))
        return -1;
    return 0;
}

int mp_dcerpc_verifier_room(const struct mp_buf *buf, size_t pdu_off, size_t *len, size_t *stub,
                            size_t *pad)
{
    struct mp_pdu_hdr h;
    if (!buf || pdu_off > buf->len)
        return -1;
    const uint8_t *p = buf->data + pdu_off;
    *len = buf->len - pdu_off;
    if (mp_pdu_hdr_check(p, *len, &h) || h.frag_len != *len || h.auth_len)
        return -1;
    size_t hl = mp_pdu_body_off(&h);
    if (!hl || *len < hl)
        return -1;
    *stub = *len - hl;
    *pad = (MP_AUTH_PAD_ALIGN - *stub % MP_AUTH_PAD_ALIGN) % MP_AUTH_PAD_ALIGN;
    return 0;
}

int mp_dcerpc_add_verifier(struct mp_buf *buf, size_t pdu_off, uint8_t auth_type,
                           uint8_t auth_level, uint32_t context_id)
{
    size_t len, stub, pad;
    if (mp_dcerpc_verifier_room(buf, pdu_off, &len, &stub, &pad))
        return -1;
    size_t total = len + pad + MP_SEC_TRAILER_LEN + MP_NTLM_VERIFIER_LEN;
    if (total > 0xffff)
        return -1;
    uint8_t tail[MP_AUTH_PAD_ALIGN + MP_SEC_TRAILER_LEN + MP_NTLM_VERIFIER_LEN] = {0};
    uint8_t *t = tail + pad;
    t[0] = auth_type;
    t[1] = auth_level;
    t[2] = (uint8_t)pad;
    mp_put32(t + 4, context_id);
    if (mp_buf_append(buf, tail, pad + MP_SEC_TRAILER_LEN + MP_NTLM_VERIFIER_LEN))
        return -1;
    uint8_t *p = buf->data + pdu_off; /* the buffer may have moved */
    mp_put16(p + 8, (uint16_t)total);
    mp_put16(p + 10, MP_NTLM_VERIFIER_LEN);
    return 0;
}

/* The bytes the signature covers (see the header). */
static void signed_span(const struct mp_ntlm_dir *d, const struct mp_dcerpc_auth_region *r,
                        const uint8_t *pdu, bool header_sign, const uint8_t **p, size_t *n)
{
    if ((d->flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) || header_sign) {
        *p = pdu;
        *n = r->verifier_off;
    } else {
        *p = pdu + r->body_off;
        *n = r->body_len;
    }
}

int mp_dcerpc_ntlm_protect(struct mp_ntlm_dir *send, uint8_t *pdu, size_t len, bool header_sign)
{
    struct mp_dcerpc_auth_region r;
    const uint8_t *sp;
    size_t sn;
    uint8_t sig[MP_NTLM_SIG_LEN];
    if (!send || mp_dcerpc_auth_locate(pdu, len, &r))
        return -1;
    signed_span(send, &r, pdu, header_sign, &sp, &sn);
    int rc;
    if (r.auth_level == MP_AUTHN_LEVEL_PKT_PRIVACY)
        rc = mp_ntlm_seal(send, pdu + r.body_off, r.body_len, sp, sn, sig);
    else if (r.auth_level >= MP_AUTHN_LEVEL_CALL)
        rc = mp_ntlm_sign(send, sp, sn, sig);
    else
        return -1;
    if (rc)
        return -1;
    memcpy(pdu + r.verifier_off, sig, MP_NTLM_SIG_LEN);
    return 0;
}

int mp_dcerpc_ntlm_unprotect(struct mp_ntlm_dir *recv, uint8_t *pdu, size_t len, bool header_sign,
                             size_t *stub_off, size_t *stub_len)
{
    struct mp_dcerpc_auth_region r;
    const uint8_t *sp;
    size_t sn;
    uint8_t sig[MP_NTLM_SIG_LEN];
    if (!recv || mp_dcerpc_auth_locate(pdu, len, &r))
        return -1;
    memcpy(sig, pdu + r.verifier_off, MP_NTLM_SIG_LEN);
    signed_span(recv, &r, pdu, header_sign, &sp, &sn);
    int rc;
    if (r.auth_level == MP_AUTHN_LEVEL_PKT_PRIVACY)
        rc = mp_ntlm_unseal(recv, pdu + r.body_off, r.body_len, sp, sn, sig);
    else if (r.auth_level >= MP_AUTHN_LEVEL_CALL)
        rc = mp_ntlm_verify(recv, sp, sn, sig);
    else
        return -1;
    if (rc)
        return -1;
    if (stub_off)
        *stub_off = r.body_off;
    if (stub_len)
        *stub_len = r.stub_len;
    return 0;
}
