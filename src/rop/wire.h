/* Little-endian packed cursors for ROP and auxiliary buffers (MS-OXCROPS,
 * MS-OXCRPC): no alignment, bounds-checked, sticky error.  Pushing appends to
 * an mp_buf and records allocation failure in a sticky flag as well. */
#ifndef MP_ROP_WIRE_H
#define MP_ROP_WIRE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"

struct mp_rcur {
    const uint8_t *p;
    size_t len, off; /* p[0..len) valid; reading at off */
    bool err;
};

static inline void mp_rcur_init(struct mp_rcur *c, const uint8_t *p, size_t len)
{
    c->p = p;
    c->len = len;
    c->off = 0;
    c->err = false;
}
static inline size_t mp_rcur_left(const struct mp_rcur *c)
{
    return c->err ? 0 : c->len - c->off;
}
static inline bool mp_rcur_need(struct mp_rcur *c, size_t k)
{
    if (c->err || c->len - c->off < k) {
        c->err = true;
        return false;
    }
    return true;
}
static inline const uint8_t *mp_rcur_bytes(struct mp_rcur *c, size_t k)
{
    if (!mp_rcur_need(c, k))
        return NULL;
    const uint8_t *q = c->p + c->off;
    c->off += k;
    return q;
}
static inline uint8_t mp_rcur_u8(struct mp_rcur *c)
{
    const uint8_t *q = mp_rcur_bytes(c, 1);
    return q ? q[0] : 0;
}
static inline uint16_t mp_rcur_u16(struct mp_rcur *c)
{
    const uint8_t *q = mp_rcur_bytes(c, 2);
    return q ? (uint16_t)(q[0] | (q[1] << 8)) : 0;
}
static inline uint32_t mp_rcur_u32(struct mp_rcur *c)
{
    const uint8_t *q = mp_rcur_bytes(c, 4);
    return q ? (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                   ((uint32_t)q[3] << 24)
             : 0;
}
static inline uint64_t mp_rcur_u64(struct mp_rcur *c)
{
    uint64_t lo = mp_rcur_u32(c);
    uint64_t hi = mp_rcur_u32(c);
    return lo | (hi << 32);
}
/* Null-terminated 8-bit string: returns its start, *n = length without the
 * terminator; the terminator is consumed. */
static inline const uint8_t *mp_rcur_asciiz(struct mp_rcur *c, size_t *n)
{
    if (c->err)
        return NULL;
    const uint8_t *s = c->p + c->off;
    const uint8_t *z = memchr(s, 0, c->len - c->off);
    if (!z) {
        c->err = true;
        return NULL;
    }
    *n = (size_t)(z - s);
    c->off += *n + 1;
    return s;
}
/* Null-terminated UTF-16LE string (2-byte units): *n = bytes without the
 * terminator. */
static inline const uint8_t *mp_rcur_utf16z(struct mp_rcur *c, size_t *n)
{
    if (c->err)
        return NULL;
    const uint8_t *s = c->p + c->off;
    size_t left = c->len - c->off;
    for (size_t i = 0; i + 1 < left; i += 2)
        if (s[i] == 0 && s[i + 1] == 0) {
            *n = i;
            c->off += i + 2;
            return s;
        }
    c->err = true;
    return NULL;
}

/* ---- push ---- */
/* Writes to b; or, with b NULL (verify mode, mp_rop_encodes_as), compares
 * what would be written with ref[0..ref_len) from pos on and sets err at
 * the first difference: nothing is copied, and bytes that come from ref
 * itself at their own offset (an unchanged ROP's raw bytes, a stream's
 * data inside the decoded buffer) are not even compared. */
struct mp_wcur {
    struct mp_buf *b;
    bool err;
    const uint8_t *ref;
    size_t ref_len, pos;
};
static inline void mp_wcur_verify(struct mp_wcur *w, const void *p, size_t n)
{
    if (n > w->ref_len - w->pos || (p != w->ref + w->pos && memcmp(p, w->ref + w->pos, n)))
        w->err = true;
    else
        w->pos += n;
}
static inline void mp_wcur_bytes(struct mp_wcur *w, const void *p, size_t n)
{
    if (w->err || !n)
        return;
    if (!w->b)
        mp_wcur_verify(w, p, n);
    else if (mp_buf_append(w->b, p, n))
        w->err = true;
}
static inline void mp_wcur_u8(struct mp_wcur *w, uint8_t v)
{
    mp_wcur_bytes(w, &v, 1);
}
static inline void mp_wcur_u16(struct mp_wcur *w, uint16_t v)
{
    uint8_t q[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    mp_wcur_bytes(w, q, 2);
}
static inline void mp_wcur_u32(struct mp_wcur *w, uint32_t v)
{
    uint8_t q[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    mp_wcur_bytes(w, q, 4);
}
static inline void mp_wcur_u64(struct mp_wcur *w, uint64_t v)
{
    mp_wcur_u32(w, (uint32_t)v);
    mp_wcur_u32(w, (uint32_t)(v >> 32));
}
/* Current write position (relative to the buffer's data start). */
static inline size_t mp_wcur_pos(const struct mp_wcur *w)
{
    return w->b ? w->b->len : w->pos;
}
/* n bytes that a patch fills in later (zeros; verify mode: skipped, the
 * patch compares). */
static inline void mp_wcur_hole(struct mp_wcur *w, size_t n)
{
    static const uint8_t zero[8];
    if (w->err)
        return;
    if (w->b) {
        mp_wcur_bytes(w, zero, n);
    } else if (n > w->ref_len - w->pos) {
        w->err = true;
    } else {
        w->pos += n;
    }
}
static inline void mp_wcur_patch_u16(struct mp_wcur *w, size_t at, uint16_t v)
{
    if (w->err)
        return;
    uint8_t *d = w->b ? w->b->data + at : NULL;
    if (d) {
        d[0] = (uint8_t)v;
        d[1] = (uint8_t)(v >> 8);
    } else if (at + 2 > w->pos || w->ref[at] != (uint8_t)v || w->ref[at + 1] != (uint8_t)(v >> 8)) {
        w->err = true;
    }
}
static inline void mp_wcur_patch_u32(struct mp_wcur *w, size_t at, uint32_t v)
{
    if (w->err)
        return;
    for (int i = 0; i < 4; i++) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        if (w->b)
            w->b->data[at + i] = c;
        else if (at + 4 > w->pos || w->ref[at + i] != c)
            w->err = true;
    }
}
#endif
