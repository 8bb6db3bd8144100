#include "rop/rpcext.h"

#include <stdlib.h>
#include <string.h>

#include "rop/ropjson.h"
#include "rop/wire.h"
#include "xca/lz77.h"

const char *mp_rpcext_strerror(int st)
{
    switch (st) {
    case MP_RPCEXT_OK:
        return "ok";
    case MP_RPCEXT_ETRUNC:
        return "truncated RPC_HEADER_EXT chain";
    case MP_RPCEXT_EVERSION:
        return "RPC_HEADER_EXT Version is not 0";
    case MP_RPCEXT_ELZ77:
        return "bad LZ77 payload";
    case MP_RPCEXT_ESIZE:
        return "Size != SizeActual in an uncompressed payload";
    case MP_RPCEXT_ENOLAST:
        return "no payload with the Last flag";
    case MP_RPCEXT_ENOMEM:
        return "out of memory";
    case MP_RPCEXT_EFLAGS:
        return "unknown RPC_HEADER_EXT flags";
    case MP_RPCEXT_ETOOBIG:
        return "payload larger than 32 KB";
    }
    return "?";
}

void mp_rpcext_free(struct mp_rpcext *x)
{
    mp_buf_give(x->p, x->cap_p);
    mp_buf_give(x->data, x->cap_data);
    memset(x, 0, sizeof(*x));
}

const uint8_t *mp_rpcext_content(const struct mp_rpcext *x, size_t i, size_t *len)
{
    if (i >= x->n) {
        *len = 0;
        return NULL;
    }
    size_t end = i + 1 < x->n ? x->p[i + 1].off : x->len;
    *len = end - x->p[i].off;
    return x->data + x->p[i].off;
}

/* *p (of *cap bytes, used of them kept) made at least need bytes. */
static int grow(void **p, size_t *cap, size_t used, size_t need)
{
    size_t got;
    void *n = mp_buf_take(need, &got);
    if (!n)
        return -1;
    if (used)
        memcpy(n, *p, used);
    mp_buf_give(*p, *cap);
    *p = n;
    *cap = got;
    return 0;
}

int mp_rpcext_parse(struct mp_rpcext *x, const uint8_t *in, size_t len)
{
    memset(x, 0, sizeof(*x));
    struct mp_rcur c;
    mp_rcur_init(&c, in, len);
    /* un-XORed compressed payload: the thread's, not a malloc and free of
     * 64 KiB per payload (a free that large consolidates the heap) */
    static _Thread_local uint8_t scratch[0x10000];
    int st = MP_RPCEXT_ENOLAST;
    while (mp_rcur_left(&c) > 0) {
        size_t hoff = c.off;
        if (mp_rcur_left(&c) < MP_RHE_HDRLEN) {
            st = MP_RPCEXT_ETRUNC;
            break;
        }
        struct mp_rpcext_payload pl = {0};
        pl.wire_off = hoff;
        pl.version = mp_rcur_u16(&c);
        pl.flags = mp_rcur_u16(&c);
        pl.size = mp_rcur_u16(&c);
        pl.size_actual = mp_rcur_u16(&c);
        if (pl.version != 0) {
            st = MP_RPCEXT_EVERSION;
            break;
        }
        if (pl.flags & ~(MP_RHE_COMPRESSED | MP_RHE_XORMAGIC | MP_RHE_LAST)) {
            st = MP_RPCEXT_EFLAGS;
            break;
        }
        pl.wire = mp_rcur_bytes(&c, pl.size);
        if (!pl.wire) {
            st = MP_RPCEXT_ETRUNC;
            break;
        }
        if (!(pl.flags & MP_RHE_COMPRESSED) && pl.size != pl.size_actual) {
            st = MP_RPCEXT_ESIZE;
            break;
        }
        /* the thread's cached buffer memory (core/buf.h): a decoded call
         * costs no malloc and free of these */
        if ((x->n + 1) * sizeof(*x->p) > x->cap_p &&
            grow((void **)&x->p, &x->cap_p, x->n * sizeof(*x->p), (x->n + 1) * sizeof(*x->p))) {
            st = MP_RPCEXT_ENOMEM;
            break;
        }
        if ((x->len + pl.size_actual + 1 > x->cap_data || !x->data) &&
            grow((void **)&x->data, &x->cap_data, x->len, x->len + pl.size_actual + 1)) {
            st = MP_RPCEXT_ENOMEM;
            break;
        }
        const uint8_t *src = pl.wire;
        if ((pl.flags & MP_RHE_XORMAGIC) && pl.size) {
            /* un-XOR into scratch (compressed) or straight into place */
            uint8_t *dst = (pl.flags & MP_RHE_COMPRESSED) ? NULL : x->data + x->len;
            if (!dst)
                dst = scratch;
            for (size_t i = 0; i < pl.size; i++)
                dst[i] = pl.wire[i] ^ 0xA5;
            src = dst;
        }
        pl.off = x->len;
        if (pl.flags & MP_RHE_COMPRESSED) {
            /* out_cap = SizeActual: a stream that would decode to more is
             * rejected, and nothing past SizeActual is touched */
            uint8_t dummy;
            uint8_t *o = pl.size_actual ? x->data + x->len : &dummy;
            ssize_t r = mp_lz77_decompress(src, pl.size, o, pl.size_actual);
            if (r < 0 || (size_t)r != pl.size_actual) {
                st = MP_RPCEXT_ELZ77;
                break;
            }
        } else if (src != x->data + x->len && pl.size) {
            memcpy(x->data + x->len, src, pl.size);
        }
        x->len += pl.size_actual;
        x->p[x->n++] = pl;
        if (pl.flags & MP_RHE_LAST) {
            x->consumed = c.off;
            return MP_RPCEXT_OK;
        }
    }
    mp_rpcext_free(x);
    return st;
}

static int put_hdr(struct mp_buf *out, uint16_t flags, uint16_t size, uint16_t actual)
{
    uint8_t h[8] = {0,
                    0,
                    (uint8_t)flags,
                    (uint8_t)(flags >> 8),
                    (uint8_t)size,
                    (uint8_t)(size >> 8),
                    (uint8_t)actual,
                    (uint8_t)(actual >> 8)};
    return mp_buf_append(out, h, 8) ? MP_RPCEXT_ENOMEM : 0;
}

/* limit: the largest content allowed (32 KB, or up to 0xFFFF when
 * re-encoding a payload that was already larger, as some clients send) */
static int build_lim(struct mp_buf *out, const uint8_t *content, size_t len, uint16_t flags,
                     size_t limit)
{
    if (len > limit || len > 0xFFFF)
        return MP_RPCEXT_ETOOBIG;
    flags &= MP_RHE_COMPRESSED | MP_RHE_XORMAGIC | MP_RHE_LAST;
    uint8_t comp[0x10000 + 16];
    const uint8_t *body = content;
    size_t blen = len;
    if (flags & MP_RHE_COMPRESSED) {
        ssize_t r = len ? mp_lz77_compress_if_worth(content, len, comp, sizeof comp) : 0;
        if (r > 0 && (size_t)r < len) {
            body = comp;
            blen = (size_t)r;
        } else
            flags &= (uint16_t)~MP_RHE_COMPRESSED;
    }
    size_t hpos = out->len;
    if (put_hdr(out, flags, (uint16_t)blen, (uint16_t)len))
        return MP_RPCEXT_ENOMEM;
    if (blen && mp_buf_append(out, body, blen)) {
        out->len = hpos;
        return MP_RPCEXT_ENOMEM;
    }
    if (flags & MP_RHE_XORMAGIC)
        for (size_t i = 0; i < blen; i++)
            out->data[hpos + 8 + i] ^= 0xA5;
    return MP_RPCEXT_OK;
}

int mp_rpcext_build(struct mp_buf *out, const uint8_t *content, size_t len, uint16_t flags)
{
    return build_lim(out, content, len, flags, MP_RPCEXT_MAX_PAYLOAD);
}

int mp_rpcext_build_chain(struct mp_buf *out, const uint8_t *const *seg, const size_t *seglen,
                          size_t nseg, uint16_t flags)
{
    flags &= MP_RHE_COMPRESSED | MP_RHE_XORMAGIC;
    if (nseg == 0)
        return mp_rpcext_build(out, NULL, 0, flags | MP_RHE_LAST);
    size_t start = out->len;
    for (size_t i = 0; i < nseg; i++) {
        int st = mp_rpcext_build(out, seg[i], seglen[i],
                                 (uint16_t)(flags | (i + 1 == nseg ? MP_RHE_LAST : 0)));
        if (st) {
            out->len = start;
            return st;
        }
    }
    return MP_RPCEXT_OK;
}

int mp_rpcext_build_split(struct mp_buf *out, const uint8_t *content, size_t len, size_t max,
                          uint16_t flags)
{
    if (max == 0 || max > MP_RPCEXT_MAX_PAYLOAD)
        max = MP_RPCEXT_MAX_PAYLOAD;
    size_t start = out->len, off = 0;
    do {
        size_t n = len - off < max ? len - off : max;
        uint16_t f = (uint16_t)(flags & (MP_RHE_COMPRESSED | MP_RHE_XORMAGIC));
        if (off + n == len)
            f |= MP_RHE_LAST;
        int st = mp_rpcext_build(out, content + off, n, f);
        if (st) {
            out->len = start;
            return st;
        }
        off += n;
    } while (off < len);
    return MP_RPCEXT_OK;
}

int mp_rpcext_reencode(struct mp_buf *out, const struct mp_rpcext *orig, const uint8_t *const *seg,
                       const size_t *seglen, size_t nseg)
{
    size_t start = out->len;
    if (nseg == 0)
        return mp_rpcext_build(out, NULL, 0, MP_RHE_LAST);
    for (size_t i = 0; i < nseg; i++) {
        uint16_t last = i + 1 == nseg ? MP_RHE_LAST : 0;
        int st = 0;
        if (i < orig->n) {
            const struct mp_rpcext_payload *p = &orig->p[i];
            size_t olen;
            const uint8_t *oc = mp_rpcext_content(orig, i, &olen);
            if (olen == seglen[i] && (olen == 0 || memcmp(oc, seg[i], olen) == 0)) {
                uint16_t f = (uint16_t)((p->flags & ~MP_RHE_LAST) | last);
                if (put_hdr(out, f, p->size, p->size_actual) ||
                    (p->size && mp_buf_append(out, p->wire, p->size)))
                    st = MP_RPCEXT_ENOMEM;
            } else {
                st = build_lim(out, seg[i], seglen[i], (uint16_t)((p->flags & ~MP_RHE_LAST) | last),
                               p->size_actual > MP_RPCEXT_MAX_PAYLOAD ? 0xFFFF
                                                                      : MP_RPCEXT_MAX_PAYLOAD);
            }
        } else {
            uint16_t f = orig->n ? orig->p[orig->n - 1].flags : 0;
            st = mp_rpcext_build(out, seg[i], seglen[i], (uint16_t)((f & ~MP_RHE_LAST) | last));
        }
        if (st) {
            out->len = start;
            return st;
        }
    }
    return MP_RPCEXT_OK;
}

int mp_rpcext_reencode_same(struct mp_buf *out, const struct mp_rpcext *orig)
{
    const uint8_t *segs[64] = {0};
    size_t lens[64] = {0};
    const uint8_t **sp = segs;
    size_t *lp = lens;
    if (orig->n > 64) {
        sp = malloc(orig->n * sizeof(*sp));
        lp = malloc(orig->n * sizeof(*lp));
        if (!sp || !lp) {
            if (sp != segs)
                free(sp);
            if (lp != lens)
                free(lp);
            return MP_RPCEXT_ENOMEM;
        }
    }
    for (size_t i = 0; i < orig->n; i++)
        sp[i] = mp_rpcext_content(orig, i, &lp[i]);
    int st = mp_rpcext_reencode(out, orig, (const uint8_t *const *)sp, lp, orig->n);
    if (sp != segs) {
        free(sp);
        free(lp);
    }
    return st;
}

void mp_rpcext_print(struct mp_json *j, const struct mp_rpcext *x)
{
    mp_rj_arr(j);
    for (size_t i = 0; i < x->n; i++) {
        const struct mp_rpcext_payload *p = &x->p[i];
        mp_rj_obj(j);
        mp_rj_key(j, "Version");
        mp_rj_u64(j, p->version);
        mp_rj_key(j, "Flags");
        mp_rj_arr(j);
        if (p->flags & MP_RHE_COMPRESSED)
            mp_rj_cstr(j, "Compressed");
        if (p->flags & MP_RHE_XORMAGIC)
            mp_rj_cstr(j, "XorMagic");
        if (p->flags & MP_RHE_LAST)
            mp_rj_cstr(j, "Last");
        mp_rj_arr_end(j);
        mp_rj_key(j, "Size");
        mp_rj_u64(j, p->size);
        mp_rj_key(j, "SizeActual");
        mp_rj_u64(j, p->size_actual);
        mp_rj_obj_end(j);
    }
    mp_rj_arr_end(j);
}
