#include "codec/ndr_rt.h"

#include <string.h>

const uint8_t mp_ndr_nonnull = 0;

void mp_cdc_init(struct mp_cdc *c, const uint8_t *p, size_t len, struct mp_arena *a,
                 struct mp_ndr_wire *w)
{
    mp_ndr_pull_init(&c->n, p, len);
    c->a = a;
    c->w = w;
    c->depth = 0;
    memset(w, 0, sizeof *w);
    if (len > MP_CODEC_MAX_STUB)
        c->n.err = true;
}

int mp_cdc_finish(struct mp_cdc *c)
{
    if (c->n.err)
        return -1;
    size_t left = c->n.len - c->n.off;
    /* only padding of the stub to a multiple of 8 */
    if (left && left != ((8 - (c->n.off & 7)) & 7))
        return -1;
    for (size_t i = 0; i < left; i++)
        if (c->n.p[c->n.off + i])
            return -1;
    c->w->trailing_pad = (uint8_t)left;
    return 0;
}

static int push_rec(struct mp_cdc *c, uint32_t **arr, uint32_t *n, uint32_t *cap, uint32_t v)
{
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 16;
        uint32_t *na = mp_arena_calloc(c->a, nc, sizeof *na);
        if (!na) {
            c->n.err = true;
            return -1;
        }
        if (*n)
            memcpy(na, *arr, *n * sizeof *na);
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = v;
    return 0;
}

void mp_cdc_align(struct mp_cdc *c, size_t a)
{
    struct mp_ndr_pull *n = &c->n;
    size_t pad = (a - (n->off & (a - 1))) & (a - 1);
    if (!pad || !mp_ndr_need(n, pad))
        return;
    const uint8_t *q = n->p + n->off;
    size_t nz = 0;
    for (size_t i = 0; i < pad; i++)
        nz |= q[i];
    if (nz) {
        struct mp_ndr_wire *w = c->w;
        if (w->n_pads == w->cap_pads) {
            uint32_t cap = w->cap_pads ? w->cap_pads * 2 : 16;
            struct mp_ndr_pad *np = mp_arena_calloc(c->a, cap, sizeof *np);
            if (!np) {
                n->err = true;
                return;
            }
            if (w->n_pads)
                memcpy(np, w->pads, w->n_pads * sizeof *np);
            w->pads = np;
            w->cap_pads = cap;
        }
        struct mp_ndr_pad *e = &w->pads[w->n_pads++];
        e->off = (uint32_t)n->off;
        e->len = (uint8_t)pad;
        memcpy(e->bytes, q, pad);
    }
    n->off += pad;
}

uint64_t mp_cdc_u64(struct mp_cdc *c)
{
    mp_cdc_align(c, 8);
    uint64_t lo = mp_ndr_u32(&c->n);
    uint64_t hi = mp_ndr_u32(&c->n);
    return lo | (hi << 32);
}

uint32_t mp_cdc_ref(struct mp_cdc *c)
{
    uint32_t id = mp_cdc_u32(c);
    if (id && !c->n.err)
        push_rec(c, &c->w->ref_ids, &c->w->n_ref_ids, &c->w->cap_ref_ids, id);
    return c->n.err ? 0 : id;
}

uint32_t mp_cdc_varmax(struct mp_cdc *c)
{
    uint32_t m = mp_cdc_u32(c);
    if (!c->n.err)
        push_rec(c, &c->w->max_counts, &c->w->n_max_counts, &c->w->cap_max_counts, m);
    return m;
}

void *mp_cdc_array(struct mp_cdc *c, uint32_t n, size_t elem, size_t min_wire)
{
    if (c->n.err)
        return NULL;
    size_t left = c->n.len - c->n.off;
    if ((elem > 1 && n > MP_CODEC_MAX_ELEMS) || (min_wire && (size_t)n > left / min_wire)) {
        c->n.err = true;
        return NULL;
    }
    void *p = mp_arena_calloc(c->a, n, elem);
    if (!p)
        c->n.err = true;
    return p;
}

uint8_t *mp_cdc_bytes(struct mp_cdc *c, uint32_t n)
{
    if (c->n.err)
        return NULL;
    const uint8_t *q = mp_ndr_bytes(&c->n, n);
    uint8_t *p = q ? mp_arena_memdup(c->a, q, n) : NULL;
    if (!p)
        c->n.err = true;
    return p;
}

bool mp_cdc_enter(struct mp_cdc *c)
{
    if (c->depth >= MP_CODEC_MAX_DEPTH) {
        c->n.err = true;
        return false;
    }
    c->depth++;
    return true;
}

/* max_count, offset, actual_count of a string; returns actual or -1 */
static int64_t str_hdr(struct mp_cdc *c)
{
    mp_cdc_align(c, 4);
    uint32_t max = mp_cdc_varmax(c);
    uint32_t off = mp_cdc_u32(c);
    uint32_t act = mp_cdc_u32(c);
    if (c->n.err || off != 0 || act == 0 || act > max) {
        c->n.err = true;
        return -1;
    }
    return act;
}

char *mp_cdc_string(struct mp_cdc *c)
{
    int64_t act = str_hdr(c);
    if (act < 0)
        return NULL;
    const uint8_t *q = mp_ndr_bytes(&c->n, (size_t)act);
    if (!q || q[act - 1] != 0 || memchr(q, 0, (size_t)act - 1)) {
        c->n.err = true;
        return NULL;
    }
    char *s = mp_arena_memdup(c->a, q, (size_t)act);
    if (!s)
        c->n.err = true;
    return s;
}

uint16_t *mp_cdc_wstring(struct mp_cdc *c)
{
    int64_t act = str_hdr(c);
    if (act < 0)
        return NULL;
    if ((uint64_t)act > (c->n.len - c->n.off) / 2) {
        c->n.err = true;
        return NULL;
    }
    uint16_t *s = mp_arena_calloc(c->a, (size_t)act, 2);
    if (!s) {
        c->n.err = true;
        return NULL;
    }
    const uint8_t *q = mp_ndr_bytes(&c->n, (size_t)act * 2);
    if (!q)
        return NULL;
    for (int64_t i = 0; i < act; i++) {
        s[i] = (uint16_t)(q[2 * i] | (q[2 * i + 1] << 8));
        if ((s[i] == 0) != (i == act - 1)) {
            c->n.err = true;
            return NULL;
        }
    }
    return s;
}

void mp_cdc_ctxh(struct mp_cdc *c, struct mp_ctxh *h)
{
    h->attr = mp_cdc_u32(c);
    const uint8_t *q = mp_ndr_bytes(&c->n, 16);
    if (q)
        memcpy(h->uuid, q, 16);
}

/* ---- push ---- */
void mp_cdp_init(struct mp_cdp *p, struct mp_buf *b, const struct mp_ndr_wire *w)
{
    memset(p, 0, sizeof *p);
    p->b = b;
    p->base = b->len;
    p->w = w;
}

int mp_cdp_finish(struct mp_cdp *p)
{
    static const uint8_t z[8];
    if (!p->err && p->w && p->w->trailing_pad && p->w->trailing_pad < 8)
        mp_cdp_bytes(p, z, p->w->trailing_pad);
    if (p->err) {
        p->b->len = p->base; /* nothing half-written stays */
        return -1;
    }
    return 0;
}

void mp_cdp_bytes(struct mp_cdp *p, const void *q, size_t n)
{
    if (!p->err && n && mp_buf_append(p->b, q, n))
        p->err = true;
}

void mp_cdp_align(struct mp_cdp *p, size_t a)
{
    static const uint8_t z[8];
    size_t off = p->b->len - p->base;
    size_t pad = (a - (off & (a - 1))) & (a - 1);
    if (p->err || !pad)
        return;
    const uint8_t *fill = z;
    if (p->w) {
        while (p->pad_k < p->w->n_pads && p->w->pads[p->pad_k].off < off)
            p->pad_k++;
        if (p->pad_k < p->w->n_pads && p->w->pads[p->pad_k].off == off &&
            p->w->pads[p->pad_k].len == pad)
            fill = p->w->pads[p->pad_k].bytes;
    }
    mp_cdp_bytes(p, fill, pad);
}

void mp_cdp_u8(struct mp_cdp *p, uint8_t v)
{
    mp_cdp_bytes(p, &v, 1);
}

void mp_cdp_u16(struct mp_cdp *p, uint16_t v)
{
    mp_cdp_align(p, 2);
    if (!p->err && mp_ndr_push_u16(p->b, p->base, v))
        p->err = true;
}

void mp_cdp_u32(struct mp_cdp *p, uint32_t v)
{
    mp_cdp_align(p, 4);
    if (!p->err && mp_ndr_push_u32(p->b, p->base, v))
        p->err = true;
}

void mp_cdp_u64(struct mp_cdp *p, uint64_t v)
{
    mp_cdp_align(p, 8);
    mp_cdp_u32(p, (uint32_t)v);
    mp_cdp_u32(p, (uint32_t)(v >> 32));
}

void mp_cdp_ref(struct mp_cdp *p, const void *ptr)
{
    if (!ptr) {
        mp_cdp_u32(p, 0);
        return;
    }
    uint32_t k = p->ref_k++;
    uint32_t id = (p->w && k < p->w->n_ref_ids) ? p->w->ref_ids[k] : 0x00020000u + 4u * k;
    mp_cdp_u32(p, id ? id : 0x00020000u + 4u * k);
}

uint32_t mp_cdp_varmax(struct mp_cdp *p, uint32_t canonical, uint32_t actual)
{
    uint32_t k = p->max_k++;
    if (p->w && k < p->w->n_max_counts && p->w->max_counts[k] >= actual)
        return p->w->max_counts[k];
    return canonical;
}

size_t mp_wstrlen(const uint16_t *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

void mp_cdp_string(struct mp_cdp *p, const char *s, uint32_t canon_max)
{
    if (!s) {
        p->err = true;
        return;
    }
    uint32_t act = (uint32_t)strlen(s) + 1;
    mp_cdp_u32(p, mp_cdp_varmax(p, canon_max > act ? canon_max : act, act));
    mp_cdp_u32(p, 0);
    mp_cdp_u32(p, act);
    mp_cdp_bytes(p, s, act);
}

void mp_cdp_wstring(struct mp_cdp *p, const uint16_t *s, uint32_t canon_max)
{
    if (!s) {
        p->err = true;
        return;
    }
    uint32_t act = (uint32_t)mp_wstrlen(s) + 1;
    mp_cdp_u32(p, mp_cdp_varmax(p, canon_max > act ? canon_max : act, act));
    mp_cdp_u32(p, 0);
    mp_cdp_u32(p, act);
    for (uint32_t i = 0; i < act; i++) {
        uint8_t q[2] = {(uint8_t)s[i], (uint8_t)(s[i] >> 8)};
        mp_cdp_bytes(p, q, 2);
    }
}

void mp_cdp_ctxh(struct mp_cdp *p, const struct mp_ctxh *h)
{
    mp_cdp_u32(p, h->attr);
    mp_cdp_bytes(p, h->uuid, 16);
}

bool mp_cdp_enter(struct mp_cdp *p)
{
    if (p->depth >= MP_CODEC_MAX_DEPTH) {
        p->err = true;
        return false;
    }
    p->depth++;
    return true;
}
