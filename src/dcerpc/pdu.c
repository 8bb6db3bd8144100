#include "dcerpc/pdu.h"

#include <string.h>

/* 8a885d04-1ceb-11c9-9fe8-08002b104860 v2.0 */
const struct mp_syntax mp_ndr20_syntax = {{0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f,
                                           0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60},
                                          2,
                                          0};
/* 71710533-beba-4937-8319-b5dbef9ccc36 v1.0 */
const struct mp_syntax mp_ndr64_syntax = {{0x33, 0x05, 0x71, 0x71, 0xba, 0xbe, 0x37, 0x49, 0x83,
                                           0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc, 0x36},
                                          1,
                                          0};
/* 6cb71c2c-9812-4540-XXXX-XXXXXXXXXXXX: the first 8 bytes are fixed. */
static const uint8_t btfn_prefix[8] = {0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45};

bool mp_syntax_is_btfn(const struct mp_syntax *s)
{
    return memcmp(s->uuid, btfn_prefix, 8) == 0;
}

bool mp_syntax_eq(const struct mp_syntax *a, const struct mp_syntax *b)
{
    return memcmp(a->uuid, b->uuid, 16) == 0 && a->major == b->major && a->minor == b->minor;
}

const char *mp_ptype_name(unsigned ptype)
{
    static const char *const names[] = {
        "request",   "ping",     "response",      "fault",
        "working",   "nocall",   "reject",        "ack",
        "cl_cancel", "fack",     "cancel_ack",    "bind",
        "bind_ack",  "bind_nak", "alter_context", "alter_context_resp",
        "auth3",     "shutdown", "co_cancel",     "orphaned",
        "rts"};
    return ptype < sizeof(names) / sizeof(names[0]) ? names[ptype] : "unknown";
}

const char *mp_pdu_hdr_check(const uint8_t *p, size_t len, struct mp_pdu_hdr *h)
{
    if (len < MP_HDR_LEN)
        return "short header";
    h->vers = p[0];
    h->vers_minor = p[1];
    h->ptype = p[2];
    h->flags = p[3];
    memcpy(h->drep, p + 4, 4);
    h->frag_len = mp_get16(p + 8);
    h->auth_len = mp_get16(p + 10);
    h->call_id = mp_get32(p + 12);
    if (h->vers != 5 || h->vers_minor > 1)
        return "not DCE/RPC version 5.0 or 5.1";
    if ((h->drep[0] & 0xf0) != 0x10)
        return "big-endian data representation is not supported";
    if (h->frag_len < MP_HDR_LEN)
        return "frag_len smaller than the header";
    if (h->auth_len && (size_t)h->auth_len + MP_SEC_TRAILER_LEN + MP_HDR_LEN > h->frag_len)
        return "auth_len larger than the fragment";
    return NULL;
}

int mp_pdu_auth(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_auth *a)
{
    memset(a, 0, sizeof(*a));
    if (!h->auth_len)
        return -1;
    size_t t = (size_t)h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN;
    if (t < MP_HDR_LEN)
        return -1;
    a->type = pdu[t];
    a->level = pdu[t + 1];
    a->pad_len = pdu[t + 2];
    a->reserved = pdu[t + 3];
    a->context_id = mp_get32(pdu + t + 4);
    a->value = pdu + t + MP_SEC_TRAILER_LEN;
    a->value_len = h->auth_len;
    return 0;
}

/* End of the body proper: before the verifier when there is one. */
static size_t body_end(const struct mp_pdu_hdr *h)
{
    return h->auth_len ? (size_t)h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN : h->frag_len;
}

static void get_syntax(const uint8_t *p, struct mp_syntax *s)
{
    memcpy(s->uuid, p, 16);
    s->major = mp_get16(p + 16);
    s->minor = mp_get16(p + 18);
}

static void put_syntax(uint8_t *p, const struct mp_syntax *s)
{
    memcpy(p, s->uuid, 16);
    mp_put16(p + 16, s->major);
    mp_put16(p + 18, s->minor);
}

int mp_bind_parse(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_bind *b)
{
    size_t end = body_end(h), o = MP_HDR_LEN;
    if (end < o + 12)
        return -1;
    b->max_xmit = mp_get16(pdu + o);
    b->max_recv = mp_get16(pdu + o + 2);
    b->assoc_group = mp_bind_assoc_group(pdu);
    b->n_ctx = pdu[o + 8];
    o += 12;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        struct mp_pctx *c = &b->ctx[i];
        if (end < o + 24)
            return -1;
        c->ctx_id = mp_get16(pdu + o);
        c->n_ts = pdu[o + 2];
        get_syntax(pdu + o + 4, &c->abstract);
        o += 24;
        if (c->n_ts == 0 || end < o + (size_t)c->n_ts * 20)
            return -1;
        for (unsigned j = 0; j < c->n_ts; j++) {
            if (j < MP_MAX_TS)
                get_syntax(pdu + o, &c->ts[j]);
            o += 20;
        }
        if (c->n_ts > MP_MAX_TS)
            c->n_ts = MP_MAX_TS; /* the rest are never chosen */
    }
    return 0;
}

int mp_bind_ack_parse(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_bind_ack *a)
{
    size_t end = body_end(h), o = MP_HDR_LEN;
    if (end < o + 10)
        return -1;
    a->max_xmit = mp_get16(pdu + o);
    a->max_recv = mp_get16(pdu + o + 2);
    a->assoc_group = mp_get32(pdu + o + 4);
    uint16_t alen = mp_get16(pdu + o + 8);
    o += 10;
    if (end < o + alen)
        return -1;
    size_t copy = alen < sizeof(a->sec_addr) ? alen : sizeof(a->sec_addr) - 1;
    memcpy(a->sec_addr, pdu + o, copy);
    a->sec_addr[copy] = 0;
    o += alen;
    o = (o + 3) & ~(size_t)3;
    if (end < o + 4)
        return -1;
    a->n_results = pdu[o];
    o += 4;
    if (end < o + (size_t)a->n_results * 24)
        return -1;
    for (unsigned i = 0; i < a->n_results; i++) {
        a->res[i].result = mp_get16(pdu + o);
        a->res[i].reason = mp_get16(pdu + o + 2);
        get_syntax(pdu + o + 4, &a->res[i].ts);
        o += 24;
    }
    return 0;
}

/* Starts a PDU in out; returns its offset. */
static int begin_pdu(struct mp_buf *out, uint8_t ptype, uint8_t flags, uint32_t call_id,
                     size_t *start)
{
    if (mp_buf_reserve(out, MP_HDR_LEN))
        return -1;
    /* Relative to the read offset: an append that compacts the buffer moves
     * the data, and an absolute offset would then point elsewhere. */
    *start = out->len - out->off;
    uint8_t *p = out->data + out->len;
    p[0] = 5;
    p[1] = 0;
    p[2] = ptype;
    p[3] = flags;
    p[4] = 0x10;
    p[5] = p[6] = p[7] = 0;
    mp_put16(p + 8, 0);
    mp_put16(p + 10, 0);
    mp_put32(p + 12, call_id);
    out->len += MP_HDR_LEN;
    return 0;
}

static int put_zeros(struct mp_buf *out, size_t n)
{
    static const uint8_t z[16];
    while (n) {
        size_t k = n > sizeof(z) ? sizeof(z) : n;
        if (mp_buf_append(out, z, k))
            return -1;
        n -= k;
    }
    return 0;
}

/* Appends the verifier (if any), then fills frag_len and auth_len. */
static int end_pdu(struct mp_buf *out, size_t start, const struct mp_auth *auth)
{
    /* start is relative to out->off (see begin_pdu): appends below may
     * compact the buffer, so the PDU is found again after them. */
    if (auth) {
        size_t body = out->len - out->off - start;
        uint8_t pad = (uint8_t)((4 - (body & 3)) & 3);
        uint8_t tr[MP_SEC_TRAILER_LEN] = {auth->type, auth->level, pad, auth->reserved};
        mp_put32(tr + 4, auth->context_id);
        if (put_zeros(out, pad) || mp_buf_append(out, tr, sizeof(tr)) ||
            mp_buf_append(out, auth->value, auth->value_len))
            return -1;
        mp_put16(out->data + out->off + start + 10, auth->value_len);
    }
    size_t len = out->len - out->off - start;
    if (len > 0xffff)
        return -1;
    mp_put16(out->data + out->off + start + 8, (uint16_t)len);
    return 0;
}

int mp_build_bind(struct mp_buf *out, uint8_t ptype, uint8_t flags, uint32_t call_id,
                  const struct mp_bind *b, const struct mp_auth *auth)
{
    size_t start;
    uint8_t tmp[12] = {0};
    if (begin_pdu(out, ptype, flags, call_id, &start))
        return -1;
    mp_put16(tmp, b->max_xmit);
    mp_put16(tmp + 2, b->max_recv);
    mp_put32(tmp + 4, b->assoc_group);
    tmp[8] = b->n_ctx;
    if (mp_buf_append(out, tmp, 12))
        return -1;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        const struct mp_pctx *c = &b->ctx[i];
        uint8_t e[24] = {0};
        mp_put16(e, c->ctx_id);
        e[2] = c->n_ts;
        put_syntax(e + 4, &c->abstract);
        if (mp_buf_append(out, e, 24))
            return -1;
        for (unsigned j = 0; j < c->n_ts; j++) {
            uint8_t s[20];
            put_syntax(s, &c->ts[j]);
            if (mp_buf_append(out, s, 20))
                return -1;
        }
    }
    return end_pdu(out, start, auth);
}

int mp_build_bind_ack(struct mp_buf *out, uint8_t ptype, uint8_t flags, uint32_t call_id,
                      const struct mp_bind_ack *a, const struct mp_auth *auth)
{
    size_t start;
    uint8_t tmp[10];
    if (begin_pdu(out, ptype, flags, call_id, &start))
        return -1;
    size_t alen = a->sec_addr[0] ? strlen(a->sec_addr) + 1 : 0;
    mp_put16(tmp, a->max_xmit);
    mp_put16(tmp + 2, a->max_recv);
    mp_put32(tmp + 4, a->assoc_group);
    mp_put16(tmp + 8, (uint16_t)alen);
    if (mp_buf_append(out, tmp, 10) || mp_buf_append(out, a->sec_addr, alen))
        return -1;
    size_t body = out->len - out->off - start;
    uint8_t nr[4] = {a->n_results, 0, 0, 0};
    if (put_zeros(out, (4 - (body & 3)) & 3) || mp_buf_append(out, nr, 4))
        return -1;
    for (unsigned i = 0; i < a->n_results; i++) {
        uint8_t r[24];
        mp_put16(r, a->res[i].result);
        mp_put16(r + 2, a->res[i].reason);
        put_syntax(r + 4, &a->res[i].ts);
        if (mp_buf_append(out, r, 24))
            return -1;
    }
    return end_pdu(out, start, auth);
}

int mp_build_bind_nak(struct mp_buf *out, uint32_t call_id, uint16_t reason)
{
    size_t start;
    /* reason, then one supported protocol version: 5.0 */
    uint8_t b[5] = {(uint8_t)reason, (uint8_t)(reason >> 8), 1, 5, 0};
    if (begin_pdu(out, MP_PT_BIND_NAK, MP_PFC_FIRST | MP_PFC_LAST, call_id, &start) ||
        mp_buf_append(out, b, sizeof(b)) || put_zeros(out, 3))
        return -1;
    return end_pdu(out, start, NULL);
}

int mp_build_fault(struct mp_buf *out, uint32_t call_id, uint16_t ctx_id, uint32_t status,
                   bool did_not_execute)
{
    size_t start;
    uint8_t b[16] = {0};
    uint8_t flags = MP_PFC_FIRST | MP_PFC_LAST | (did_not_execute ? MP_PFC_DID_NOT_EXECUTE : 0);
    mp_put16(b + 4, ctx_id);
    mp_put32(b + 8, status);
    if (begin_pdu(out, MP_PT_FAULT, flags, call_id, &start) || mp_buf_append(out, b, 16))
        return -1;
    return end_pdu(out, start, NULL);
}

int mp_build_request(struct mp_buf *out, uint8_t flags, uint32_t call_id, uint16_t ctx_id,
                     uint16_t opnum, const uint8_t *object, const uint8_t *stub, size_t stub_len,
                     uint32_t alloc_hint)
{
    size_t start;
    uint8_t b[8];
    if (object)
        flags |= MP_PFC_OBJECT_UUID;
    mp_put32(b, alloc_hint);
    mp_put16(b + 4, ctx_id);
    mp_put16(b + 6, opnum);
    if (begin_pdu(out, MP_PT_REQUEST, flags, call_id, &start) || mp_buf_append(out, b, 8) ||
        (object && mp_buf_append(out, object, 16)) || mp_buf_append(out, stub, stub_len))
        return -1;
    return end_pdu(out, start, NULL);
}

int mp_build_response(struct mp_buf *out, uint8_t flags, uint32_t call_id, uint16_t ctx_id,
                      const uint8_t *stub, size_t stub_len, uint32_t alloc_hint)
{
    size_t start;
    uint8_t b[8] = {0};
    mp_put32(b, alloc_hint);
    mp_put16(b + 4, ctx_id);
    if (begin_pdu(out, MP_PT_RESPONSE, flags, call_id, &start) || mp_buf_append(out, b, 8) ||
        mp_buf_append(out, stub, stub_len))
        return -1;
    return end_pdu(out, start, NULL);
}

int mp_build_auth3(struct mp_buf *out, uint32_t call_id, uint8_t auth_type, uint8_t auth_level,
                   uint32_t context_id, const uint8_t *token, size_t len)
{
    uint8_t hdr[MP_HDR_LEN + 4 + 8] = {5, 0, MP_PT_AUTH3, MP_PFC_FIRST | MP_PFC_LAST, 0x10};
    if (sizeof(hdr) + len > 0xffff)
        return -1;
    mp_put16(hdr + 8, (uint16_t)(sizeof(hdr) + len));
    mp_put16(hdr + 10, (uint16_t)len);
    mp_put32(hdr + 12, call_id);
    hdr[20] = auth_type;
    hdr[21] = auth_level;
    mp_put32(hdr + 24, context_id);
    return mp_buf_append(out, hdr, sizeof(hdr)) || mp_buf_append(out, token, len) ? -1 : 0;
}

size_t mp_pdu_body_off(const struct mp_pdu_hdr *h)
{
    switch (h->ptype) {
    case MP_PT_REQUEST:
        return MP_REQ_HDR_LEN + ((h->flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
    case MP_PT_RESPONSE:
        return MP_RESP_HDR_LEN;
    case MP_PT_FAULT:
        return MP_FAULT_LEN;
    default:
        return 0;
    }
}
