/* NDR 2.0 primitives (little-endian): a bounds-checked pull cursor with a
 * sticky error, and push helpers on mp_buf.  Offsets and alignment are
 * relative to the start of the stub. */
#ifndef MP_NDR_H
#define MP_NDR_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"

struct mp_ndr_pull {
    const uint8_t *p;
    size_t len, off;
    bool err;
};

static inline void mp_ndr_pull_init(struct mp_ndr_pull *n, const uint8_t *p, size_t len)
{
    n->p = p;
    n->len = len;
    n->off = 0;
    n->err = false;
}

static inline bool mp_ndr_need(struct mp_ndr_pull *n, size_t k)
{
    if (n->err || n->len - n->off < k) {
        n->err = true;
        return false;
    }
    return true;
}

static inline void mp_ndr_align(struct mp_ndr_pull *n, size_t a)
{
    size_t pad = (a - (n->off & (a - 1))) & (a - 1);
    if (mp_ndr_need(n, pad))
        n->off += pad;
}

static inline uint8_t mp_ndr_u8(struct mp_ndr_pull *n)
{
    if (!mp_ndr_need(n, 1))
        return 0;
    return n->p[n->off++];
}

static inline uint16_t mp_ndr_u16(struct mp_ndr_pull *n)
{
    mp_ndr_align(n, 2);
    if (!mp_ndr_need(n, 2))
        return 0;
    uint16_t v = (uint16_t)(n->p[n->off] | (n->p[n->off + 1] << 8));
    n->off += 2;
    return v;
}

static inline uint32_t mp_ndr_u32(struct mp_ndr_pull *n)
{
    mp_ndr_align(n, 4);
    if (!mp_ndr_need(n, 4))
        return 0;
    const uint8_t *q = n->p + n->off;
    n->off += 4;
    return (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) | ((uint32_t)q[3] << 24);
}

/* Points at k raw bytes (no alignment); NULL and sticky error if short. */
static inline const uint8_t *mp_ndr_bytes(struct mp_ndr_pull *n, size_t k)
{
    if (!mp_ndr_need(n, k))
        return NULL;
    const uint8_t *q = n->p + n->off;
    n->off += k;
    return q;
}

/* ---- push ---- */
int mp_ndr_push_align(struct mp_buf *b, size_t base, size_t a);
int mp_ndr_push_u16(struct mp_buf *b, size_t base, uint16_t v);
int mp_ndr_push_u32(struct mp_buf *b, size_t base, uint32_t v);
int mp_ndr_push_bytes(struct mp_buf *b, const void *p, size_t k);
#endif
