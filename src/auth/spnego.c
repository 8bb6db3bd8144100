/* Minimal SPNEGO (RFC 4178) DER codec; see spnego.h. */
#include "auth/spnego.h"

#include <string.h>

const uint8_t mp_oid_spnego[6] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x02};
const uint8_t mp_oid_krb5[9] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02};
const uint8_t mp_oid_ms_krb5[9] = {0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02};
const uint8_t mp_oid_ntlm[10] = {0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a};

enum mp_spnego_mech mp_spnego_mech_kind(const uint8_t *oid, size_t len)
{
    if (!oid)
        return MP_MECH_OTHER;
    if (len == sizeof mp_oid_krb5 && !memcmp(oid, mp_oid_krb5, len))
        return MP_MECH_KRB5;
    if (len == sizeof mp_oid_ms_krb5 && !memcmp(oid, mp_oid_ms_krb5, len))
        return MP_MECH_MS_KRB5;
    if (len == sizeof mp_oid_ntlm && !memcmp(oid, mp_oid_ntlm, len))
        return MP_MECH_NTLM;
    return MP_MECH_OTHER;
}

bool mp_spnego_mech_is_krb5(enum mp_spnego_mech m)
{
    return m == MP_MECH_KRB5 || m == MP_MECH_MS_KRB5;
}

/* --- DER reading ----------------------------------------------------- */

struct der {
    const uint8_t *p;
    size_t n;
};

/* One TLV off the front of d: tag (low tag numbers only), contents. */
static int der_next(struct der *d, uint8_t *tag, struct der *val)
{
    if (d->n < 2)
        return -1;
    uint8_t t = d->p[0];
    if ((t & 0x1f) == 0x1f)
        return -1;
    size_t i = 1, len;
    uint8_t l = d->p[i++];
    if (l < 0x80) {
        len = l;
    } else {
        size_t k = l & 0x7f;
        if (k == 0 || k > 4 || d->n - i < k)
            return -1; /* indefinite or too long */
        len = 0;
        for (size_t j = 0; j < k; j++)
            len = (len << 8) | d->p[i++];
        if (len < 0x80 || (k > 1 && len < (1u << (8 * (k - 1)))))
            return -1; /* not minimal: not DER */
    }
    if (len > d->n - i)
        return -1;
    *tag = t;
    val->p = d->p + i;
    val->n = len;
    d->p += i + len;
    d->n -= i + len;
    return 0;
}

/* Exactly one TLV with this tag fills d. */
static int der_only(const struct der *d, uint8_t tag, struct der *val)
{
    struct der c = *d;
    uint8_t t;
    if (der_next(&c, &t, val) || t != tag || c.n != 0)
        return -1;
    return 0;
}

static int parse_oid(const struct der *v)
{
    /* Non-empty, last octet ends a subidentifier. */
    if (v->n == 0 || v->n > 64 || (v->p[v->n - 1] & 0x80))
        return -1;
    return 0;
}

static int parse_mech_list(struct der seq, struct mp_spnego_init *out)
{
    while (seq.n) {
        uint8_t t;
        struct der v;
        if (der_next(&seq, &t, &v) || t != 0x06 || parse_oid(&v))
            return -1;
        if (out->n_mechs < MP_SPNEGO_MAX_MECHS) {
            out->mechs[out->n_mechs].p = v.p;
            out->mechs[out->n_mechs].len = v.n;
            out->n_mechs++;
        }
    }
    return out->n_mechs ? 0 : -1;
}

static int parse_init_body(struct der a0, struct mp_spnego_init *out)
{
    struct der seq;
    if (der_only(&a0, 0x30, &seq))
        return -1;
    int last = -1;
    while (seq.n) {
        uint8_t t;
        struct der v, in;
        if (der_next(&seq, &t, &v))
            return -1;
        if ((t & 0xe0) != 0xa0)
            return -1; /* context-specific, constructed */
        int n = t & 0x1f;
        if (n <= last)
            return -1;
        last = n;
        switch (n) {
        case 0: { /* mechTypes */
            uint8_t st;
            struct der c = v;
            const uint8_t *start = c.p;
            if (der_next(&c, &st, &in) || st != 0x30 || c.n)
                return -1;
            out->mech_list = start;
            out->mech_list_len = v.n;
            if (parse_mech_list(in, out))
                return -1;
            break;
        }
        case 1: /* reqFlags: BIT STRING */
            if (der_only(&v, 0x03, &in) || in.n < 1 || in.n > 5 || in.p[0] > 7)
                return -1;
            out->has_req_flags = true;
            out->req_flags = in.n > 1 ? in.p[1] : 0;
            break;
        case 2: /* mechToken */
            if (der_only(&v, 0x04, &in))
                return -1;
            out->mech_token = in.p;
            out->mech_token_len = in.n;
            break;
        case 3: /* RFC 4178 mechListMIC, or NegTokenInit2's negHints */
            if (v.n && v.p[0] == 0x30)
                break; /* negHints: ignored */
            if (der_only(&v, 0x04, &in))
                return -1;
            out->mic = in.p;
            out->mic_len = in.n;
            break;
        case 4: /* NegTokenInit2 mechListMIC */
            if (der_only(&v, 0x04, &in) || out->mic)
                return -1;
            out->mic = in.p;
            out->mic_len = in.n;
            break;
        default:
            break; /* unknown extension: skipped */
        }
    }
    return out->n_mechs ? 0 : -1;
}

int mp_spnego_parse_init(const uint8_t *p, size_t n, struct mp_spnego_init *out)
{
    memset(out, 0, sizeof(*out));
    if (!p)
        return -1;
    struct der d = {p, n}, v, a0;
    uint8_t t;
    if (der_next(&d, &t, &v) || d.n != 0)
        return -1;
    if (t == 0x60) {
        /* [APPLICATION 0] { OID spnego, NegotiationToken } */
        struct der oid;
        if (der_next(&v, &t, &oid) || t != 0x06 || oid.n != sizeof mp_oid_spnego ||
            memcmp(oid.p, mp_oid_spnego, oid.n))
            return -1;
        if (der_next(&v, &t, &a0) || t != 0xa0 || v.n != 0)
            return -1;
    } else if (t == 0xa0) {
        a0 = v;
    } else {
        return -1;
    }
    if (parse_init_body(a0, out)) {
        memset(out, 0, sizeof(*out));
        return -1;
    }
    return 0;
}

int mp_spnego_parse_resp(const uint8_t *p, size_t n, struct mp_spnego_resp *out)
{
    memset(out, 0, sizeof(*out));
    out->neg_state = -1;
    if (!p)
        return -1;
    struct der d = {p, n}, a1, seq;
    uint8_t t;
    if (der_next(&d, &t, &a1) || t != 0xa1 || d.n != 0 || der_only(&a1, 0x30, &seq))
        goto bad;
    int last = -1;
    while (seq.n) {
        struct der v, in;
        if (der_next(&seq, &t, &v) || (t & 0xe0) != 0xa0)
            goto bad;
        int k = t & 0x1f;
        if (k <= last)
            goto bad;
        last = k;
        switch (k) {
        case 0:
            if (der_only(&v, 0x0a, &in) || in.n != 1 || in.p[0] > 3)
                goto bad;
            out->neg_state = in.p[0];
            break;
        case 1:
            if (der_only(&v, 0x06, &in) || parse_oid(&in))
                goto bad;
            out->mech = in.p;
            out->mech_len = in.n;
            break;
        case 2:
            if (der_only(&v, 0x04, &in))
                goto bad;
            out->token = in.p;
            out->token_len = in.n;
            break;
        case 3:
            if (der_only(&v, 0x04, &in))
                goto bad;
            out->mic = in.p;
            out->mic_len = in.n;
            break;
        default:
            break;
        }
    }
    return 0;
bad:
    memset(out, 0, sizeof(*out));
    out->neg_state = -1;
    return -1;
}

int mp_spnego_token_kind(const uint8_t *p, size_t n)
{
    if (!p || n < 2)
        return -1;
    if (p[0] == 0x60 || p[0] == 0xa0)
        return 0;
    if (p[0] == 0xa1)
        return 1;
    return -1;
}

/* --- DER writing ----------------------------------------------------- */

static size_t hdr_len(size_t len)
{
    return len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : len < 0x1000000 ? 5 : 6;
}

static size_t tlv_len(size_t len)
{
    return hdr_len(len) + len;
}

static int put_hdr(struct mp_buf *b, uint8_t tag, size_t len)
{
    uint8_t h[6];
    size_t n = 0;
    h[n++] = tag;
    if (len < 0x80) {
        h[n++] = (uint8_t)len;
    } else {
        size_t k = hdr_len(len) - 2;
        if (k > 4)
            return -1;
        h[n++] = (uint8_t)(0x80 | k);
        for (size_t i = k; i-- > 0;)
            h[n++] = (uint8_t)(len >> (8 * i));
    }
    return mp_buf_append(b, h, n);
}

static int put_tlv(struct mp_buf *b, uint8_t tag, const uint8_t *v, size_t len)
{
    if (put_hdr(b, tag, len))
        return -1;
    return len ? mp_buf_append(b, v, len) : 0;
}

int mp_spnego_build_init(struct mp_buf *out, const struct mp_spnego_oid *mechs, size_t n_mechs,
                         const uint8_t *mech_token, size_t mech_token_len)
{
    if (!mechs || n_mechs == 0 || n_mechs > MP_SPNEGO_MAX_MECHS || mech_token_len > 0xffffff)
        return -1;
    size_t list = 0;
    for (size_t i = 0; i < n_mechs; i++) {
        if (!mechs[i].p || !mechs[i].len || mechs[i].len > 64)
            return -1;
        list += tlv_len(mechs[i].len);
    }
    size_t a0m = tlv_len(tlv_len(list)); /* [0] { SEQUENCE OF OID } */
    size_t a2 = mech_token ? tlv_len(tlv_len(mech_token_len)) : 0;
    size_t seq = a0m + a2;
    size_t nti = tlv_len(tlv_len(seq)); /* [0] { SEQUENCE } */
    size_t app = tlv_len(sizeof mp_oid_spnego) + nti;
    size_t start = out->len;
    if (put_hdr(out, 0x60, app) || put_tlv(out, 0x06, mp_oid_spnego, sizeof mp_oid_spnego) ||
        put_hdr(out, 0xa0, tlv_len(seq)) || put_hdr(out, 0x30, seq) ||
        put_hdr(out, 0xa0, tlv_len(list)) || put_hdr(out, 0x30, list))
        goto bad;
    for (size_t i = 0; i < n_mechs; i++)
        if (put_tlv(out, 0x06, mechs[i].p, mechs[i].len))
            goto bad;
    if (mech_token && (put_hdr(out, 0xa2, tlv_len(mech_token_len)) ||
                       put_tlv(out, 0x04, mech_token, mech_token_len)))
        goto bad;
    return 0;
bad:
    out->len = start;
    return -1;
}

int mp_spnego_build_resp(struct mp_buf *out, int neg_state, const uint8_t *mech, size_t mech_len,
                         const uint8_t *token, size_t token_len, const uint8_t *mic, size_t mic_len)
{
    if (neg_state > 3 || (mech && (!mech_len || mech_len > 64)) || token_len > 0xffffff ||
        mic_len > 0xffff)
        return -1;
    size_t seq = (neg_state >= 0 ? tlv_len(tlv_len(1)) : 0) +
                 (mech ? tlv_len(tlv_len(mech_len)) : 0) +
                 (token ? tlv_len(tlv_len(token_len)) : 0) + (mic ? tlv_len(tlv_len(mic_len)) : 0);
    size_t start = out->len;
    if (put_hdr(out, 0xa1, tlv_len(seq)) || put_hdr(out, 0x30, seq))
        goto bad;
    if (neg_state >= 0) {
        uint8_t s = (uint8_t)neg_state;
        if (put_hdr(out, 0xa0, 3) || put_tlv(out, 0x0a, &s, 1))
            goto bad;
    }
    if (mech && (put_hdr(out, 0xa1, tlv_len(mech_len)) || put_tlv(out, 0x06, mech, mech_len)))
        goto bad;
    if (token && (put_hdr(out, 0xa2, tlv_len(token_len)) || put_tlv(out, 0x04, token, token_len)))
        goto bad;
    if (mic && (put_hdr(out, 0xa3, tlv_len(mic_len)) || put_tlv(out, 0x04, mic, mic_len)))
        goto bad;
    return 0;
bad:
    out->len = start;
    return -1;
}
