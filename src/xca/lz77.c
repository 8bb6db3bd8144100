/* LZ77+DIRECT2 / MS-XCA "Plain LZ77" codec (MS-XCA 2.3 compression, 2.4
 * decompression).  Design notes and measured figures: doc/internals/lz77.md.
 *
 * Stream format, as a reminder:
 *   - a 32-bit little-endian flag word precedes each group of 32 symbols;
 *     its bits, most significant first, say literal (0) or match (1);
 *   - literal: one byte;
 *   - match: u16 LE = (offset - 1) << 3 | min(length - 3, 7), offset 1..8192;
 *     if length - 3 >= 7: a 4-bit extension (two successive such matches
 *     share one byte: low nibble first, the byte sits where the first of
 *     them needed it); if that nibble is 15: one more byte; if that byte is
 *     255: a u16 holding length - 3 (or 0 and then a u32 holding it);
 *   - the last flag word is padded with 1-bits; a match flag at the end of
 *     the input ends decoding.  When the last group is full the encoder
 *     (like Windows) has already reserved the next flag word: 0xFFFFFFFF. */
#include "xca/lz77.h"

#include <stdbool.h>
#include <string.h>
#ifdef MP_LZ77_PARANOID
#include <stdlib.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define MP_LZ77_BE 1
#else
#define MP_LZ77_BE 0
#endif

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define ALWAYS_INLINE inline
#endif

static ALWAYS_INLINE uint16_t ld16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
#if MP_LZ77_BE
    v = __builtin_bswap16(v);
#endif
    return v;
}
static ALWAYS_INLINE uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if MP_LZ77_BE
    v = __builtin_bswap32(v);
#endif
    return v;
}
static ALWAYS_INLINE uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if MP_LZ77_BE
    v = __builtin_bswap64(v);
#endif
    return v;
}
static ALWAYS_INLINE void st16(uint8_t *p, uint16_t v)
{
#if MP_LZ77_BE
    v = __builtin_bswap16(v);
#endif
    memcpy(p, &v, 2);
}
static ALWAYS_INLINE void st32(uint8_t *p, uint32_t v)
{
#if MP_LZ77_BE
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

/* ------------------------------------------------------------------------ */
/* Decompression                                                            */
/* ------------------------------------------------------------------------ */

#define SENTINEL (UINT64_C(1) << 63)

/* Copy a match of len bytes from op - off to op, off >= 1, knowing that
 * [op, op + len + 16) lies inside the output buffer: may write up to 15
 * bytes of junk past op + len (overwritten later or beyond the result). */
static ALWAYS_INLINE void copy_match_wild(uint8_t *op, size_t off, size_t len)
{
    uint8_t *end = op + len;
    if (off >= 16) {
        do {
            memcpy(op, op - off, 16);
            op += 16;
        } while (op < end);
        return;
    }
    if (off == 1) {
        memset(op, op[-1], len);
        return;
    }
    /* Short period: copy one period at a time, doubling the period (the
     * bytes written so far repeat with period off, so a copy from 2 * off
     * back is as good as one from off back and is non-overlapping). */
    do {
        memcpy(op, op - off, off);
        op += off;
        off *= 2;
    } while (off < 16 && op < end);
    while (op < end) {
        memcpy(op, op - off, 16);
        op += 16;
    }
}

/* Older encoders (Samba's until 2022, and OpenChange's copy of it) fill the
 * last flag word with 0 bits and append zero bytes, so a stream may go on
 * past the output's end with literals of zero bytes only.  Samba's,
 * gromox's and OpenChange's decoders stop when the output is full.  Exactly
 * that is accepted: the output is full, every byte left (from p on) is zero,
 * and the current flag word has no 1 bit left (0-padded: a 1-padded word,
 * as Windows and our encoder write, ends in the end marker, so a zero
 * literal beyond the output there is real data).  Zero flag words after it
 * are literals too.  Any other overrun stays an error. */
static bool zero_padding(const uint8_t *p, const uint8_t *iend)
{
    for (; p < iend; p++)
        if (*p)
            return false;
    return true;
}

ssize_t mp_lz77_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    const uint8_t *ip = in;
    const uint8_t *const iend = in + in_len;
    uint8_t *op = out;
    uint8_t *const oend = out + out_cap;
    const uint8_t *nib = NULL; /* byte whose high nibble is still unused */
    uint64_t fl = SENTINEL;    /* flag bits, MSB first, then a 1 sentinel */

    if (in_len == 0)
        return 0;
    if (in == NULL || out == NULL)
        return -1;
    for (;;) {
        if (UNLIKELY(ip >= iend))
            break;
        if (fl == SENTINEL) {
            if (UNLIKELY(iend - ip < 4))
                return -1;
            fl = ((uint64_t)ld32(ip) << 32) | (UINT64_C(1) << 31);
            ip += 4;
            continue; /* input may end right after the flag word */
        }
        unsigned n = (unsigned)__builtin_clzll(fl); /* literals before next 1 */
        if (n) {
            if (LIKELY(iend - ip >= 32 && oend - op >= 32)) {
                memcpy(op, ip, 16);
                memcpy(op + 16, ip + 16, 16);
            } else {
                unsigned word = n; /* literal flags before the next 1 bit */
                if ((size_t)(iend - ip) < n)
                    n = (unsigned)(iend - ip); /* unpadded end: accept */
                if ((size_t)(oend - op) < n) {
                    size_t room = (size_t)(oend - op);
                    if ((fl << word) != SENTINEL || !zero_padding(ip + room, iend))
                        return -1;
                    memcpy(op, ip, room);
                    return (ssize_t)out_cap;
                }
                memcpy(op, ip, n);
            }
            op += n;
            ip += n;
            fl <<= n;
            if (fl == SENTINEL)
                continue;
            if (UNLIKELY(ip >= iend))
                break;
        }
        /* a match (or, at the end of the input, the end marker) */
        fl <<= 1;
        if (UNLIKELY(iend - ip < 2)) {
            if (ip == iend)
                break;
            return -1;
        }
        uint32_t m = ld16(ip);
        ip += 2;
        size_t off = (m >> 3) + 1;
        uint64_t len = m & 7;
        if (len == 7) {
            if (nib == NULL) {
                if (UNLIKELY(ip >= iend))
                    return -1;
                nib = ip;
                len = *ip++ & 15u;
            } else {
                len = *nib >> 4;
                nib = NULL;
            }
            if (len == 15) {
                if (UNLIKELY(ip >= iend))
                    return -1;
                len = *ip++;
                if (len == 255) {
                    if (UNLIKELY(iend - ip < 2))
                        return -1;
                    len = ld16(ip);
                    ip += 2;
                    if (len == 0) {
                        if (UNLIKELY(iend - ip < 4))
                            return -1;
                        len = ld32(ip);
                        ip += 4;
                    }
                    if (UNLIKELY(len < 15 + 7))
                        return -1;
                    len -= 15 + 7;
                }
                len += 15;
            }
            len += 7;
        }
        len += 3;
        if (UNLIKELY(off > (size_t)(op - out)))
            return -1;
        size_t room = (size_t)(oend - op);
        if (UNLIKELY(len > room))
            return -1;
        if (LIKELY(room - len >= 16)) {
            /* one test for the common case (a match of up to 16 bytes from
             * 16 or more back): 6 % faster than testing off, len and room
             * together (lz77.md) */
            if (LIKELY(off >= 16)) {
                memcpy(op, op - off, 16);
                if (UNLIKELY(len > 16))
                    copy_match_wild(op + 16, off, (size_t)len - 16);
            } else {
                copy_match_wild(op, off, (size_t)len);
            }
            op += len;
        } else {
            const uint8_t *src = op - off;
            for (size_t i = 0; i < len; i++)
                op[i] = src[i];
            op += len;
        }
    }
    return (ssize_t)(op - out);
}

/* ------------------------------------------------------------------------ */
/* Compression                                                              */
/* ------------------------------------------------------------------------ */

#define MIN_MATCH 3
/* Longest match we emit: the u16 length form (no u32 form needed). */
#define MAX_MATCH (0xFFFFu + 3u)

size_t mp_lz77_compress_bound(size_t in_len)
{
    return in_len + 4 * (in_len / 32 + 1);
}

/* Number of equal bytes at a and b, at most limit - b bytes (a < b). */
static ALWAYS_INLINE size_t match_len(const uint8_t *a, const uint8_t *b, const uint8_t *limit)
{
    const uint8_t *start = b;
    while (b + 8 <= limit) {
        uint64_t x = ld64(a) ^ ld64(b);
        if (x) {
#if MP_LZ77_BE
            return (size_t)(b - start) + ((unsigned)__builtin_clzll(x) >> 3);
#else
            return (size_t)(b - start) + ((unsigned)__builtin_ctzll(x) >> 3);
#endif
        }
        a += 8;
        b += 8;
    }
    while (b < limit && *a == *b) {
        a++;
        b++;
    }
    return (size_t)(b - start);
}

struct writer {
    uint8_t *op;
    uint8_t *oend;
    uint8_t *fp;  /* where the current flag word goes */
    uint8_t *nib; /* byte with a free high nibble, or NULL */
    uint64_t flags;
    unsigned nf; /* flags in the current group */
};

/* Emit n literals; false if out of room. */
static ALWAYS_INLINE int put_literals(struct writer *w, const uint8_t *p, size_t n,
                                      const uint8_t *iend)
{
    /* fast path: the run does not complete the group; copy 32 bytes
     * blindly when both buffers have the room */
    if (LIKELY(w->nf + n < 32 && (size_t)(w->oend - w->op) >= 32 && (size_t)(iend - p) >= 32)) {
        memcpy(w->op, p, 16);
        memcpy(w->op + 16, p + 16, 16);
        w->op += n;
        w->flags <<= n;
        w->nf += (unsigned)n;
        return 1;
    }
    while (n) {
        size_t k = 32 - w->nf;
        if (k > n)
            k = n;
        size_t need = k + (w->nf + k == 32 ? 4 : 0);
        if (UNLIKELY((size_t)(w->oend - w->op) < need))
            return 0;
        memcpy(w->op, p, k);
        w->op += k;
        p += k;
        n -= k;
        w->flags <<= k;
        w->nf += (unsigned)k;
        if (w->nf == 32) {
            st32(w->fp, (uint32_t)w->flags);
            w->fp = w->op;
            w->op += 4;
            w->nf = 0;
            w->flags = 0;
        }
    }
    return 1;
}

static ALWAYS_INLINE int put_match(struct writer *w, size_t off, size_t len)
{
    size_t l = len - 3;
    size_t need = 2 + (w->nf == 31 ? 4 : 0);
    if (LIKELY(l < 7)) {
        /* short match: the common case */
        if (UNLIKELY((size_t)(w->oend - w->op) < need))
            return 0;
        st16(w->op, (uint16_t)(((off - 1) << 3) | l));
        w->op += 2;
        goto flag;
    }
    {
        need += w->nib ? 0 : 1;
        if (l >= 7 + 15) {
            need += 1;
            if (l >= 7 + 15 + 255)
                need += 2;
        }
    }
    if (UNLIKELY((size_t)(w->oend - w->op) < need))
        return 0;
    uint8_t *op = w->op;
    st16(op, (uint16_t)(((off - 1) << 3) | (l < 7 ? l : 7)));
    op += 2;
    if (l >= 7) {
        size_t r = l - 7;
        unsigned v = r < 15 ? (unsigned)r : 15u;
        if (w->nib == NULL) {
            w->nib = op;
            *op++ = (uint8_t)v;
        } else {
            *w->nib |= (uint8_t)(v << 4);
            w->nib = NULL;
        }
        if (r >= 15) {
            r -= 15;
            *op++ = (uint8_t)(r < 255 ? r : 255);
            if (r >= 255) {
                st16(op, (uint16_t)l);
                op += 2;
            }
        }
    }
    w->op = op;
flag:
    w->flags = (w->flags << 1) | 1;
    if (++w->nf == 32) {
        st32(w->fp, (uint32_t)w->flags);
        w->fp = w->op;
        w->op += 4;
        w->nf = 0;
        w->flags = 0;
    }
    return 1;
}

#define HBITS MP_LZ77_HASH_BITS

static ALWAYS_INLINE uint32_t hash3(const uint8_t *p, unsigned shift)
{
    return ((ld32(p) << 8) * 2654435761u) >> shift;
}

#ifndef LAZY_MAX
#define LAZY_MAX 64
#endif
#ifndef SKIP_SHIFT
#define SKIP_SHIFT 4
#endif
#ifndef SKIP_MAX
#define SKIP_MAX 8
#endif
#ifndef INS_ALL
#define INS_ALL 32
#endif

/* Longest match at p among the two candidates of bucket b (0 if none). */
static ALWAYS_INLINE size_t best_of(uint32_t b, uint32_t pos, uint32_t cur, const uint8_t *p,
                                    const uint8_t *iend, uint32_t *dist)
{
    uint32_t d0 = (pos - b) & 0xFFFFu;
    uint32_t d1 = (pos - (b >> 16)) & 0xFFFFu;
#ifdef MP_LZ77_PARANOID /* set by the fuzz build */
    if ((b & 0xFFFFu) > (pos & 0xFFFFu) && pos < 65536)
        abort();
    if ((b >> 16) > (pos & 0xFFFFu) && pos < 65536)
        abort();
    if (d0 > pos || d1 > pos)
        abort();
#endif
    /* Invariant kept by compress_core: every table entry is a position
     * <= pos (or the initial 0).  Hence (pos - e) mod 65536 <= pos - e <= pos
     * and p - d never lies before the input, valid candidate or not, and
     * both loads can be done without branches. */
    uint32_t x0 = (ld32(p - d0) ^ cur) << 8, x1 = (ld32(p - d1) ^ cur) << 8;
    int ok0 = (d0 - 1 < MP_LZ77_WINDOW) & (x0 == 0);
    int ok1 = (d1 - 1 < MP_LZ77_WINDOW) & (x1 == 0) & (d1 != d0);
    if (LIKELY(!(ok0 | ok1)))
        return 0;
    size_t l0 = ok0 ? 3 + match_len(p - d0 + 3, p + 3, iend) : 0;
    size_t l1 = ok1 ? 3 + match_len(p - d1 + 3, p + 3, iend) : 0;
    if (l1 > l0) {
        *dist = d1;
        return l1;
    }
    *dist = d0;
    return l0;
}

/* The matcher.  Hash table of buckets of two 16-bit entries (one u32: the
 * most recent position in the low half), holding the low 16 bits of recent
 * positions with a given 3-byte hash.  The distance is recovered modulo
 * 65536: exact for every usable candidate (distance <= 8192), merely a
 * wasted probe for stale ones (all candidates are verified).
 * Greedy parse with lazy evaluation; in long literal stretches only every
 * few positions are probed (all are still indexed, so matches are found
 * whatever their alignment, and extended backwards). */
static ssize_t compress_core(struct mp_lz77_state *st, const uint8_t *in, size_t in_len,
                             uint8_t *out, size_t out_cap)
{
    struct writer w;
    if (out_cap < 4)
        return -1;
    w.op = out + 4;
    w.oend = out + out_cap;
    w.fp = out;
    w.nib = NULL;
    w.flags = 0;
    w.nf = 0;

    unsigned hbits = HBITS;
    while (hbits > 8 && ((size_t)1 << (hbits - 1)) >= in_len)
        hbits--;
    const unsigned shift = 32 - hbits;
    uint32_t *const tab = st->tab;
    memset(tab, 0, sizeof(tab[0]) << hbits);

    const uint8_t *const iend = in + in_len;
    const uint8_t *anchor = in;
    const uint8_t *p = in;

    if (in_len >= 8) {
        const uint8_t *const mlimit = iend - 4; /* last position we hash */
        while (p < mlimit) {
            uint32_t d = 0;
            uint32_t pos = (uint32_t)(p - in);
            uint32_t cur = ld32(p);
            uint32_t h = hash3(p, shift);
            uint32_t b = tab[h];
            tab[h] = (b << 16) | (pos & 0xFFFFu);
            size_t len = best_of(b, pos, cur, p, iend, &d);
            if (!len) {
                size_t step = 1 + ((size_t)(p - anchor) >> SKIP_SHIFT);
                if (step == 1) {
                    p++;
                    continue;
                }
                /* skip: index the positions, probe only the next one */
                if (step > SKIP_MAX)
                    step = SKIP_MAX;
                const uint8_t *q = p + step < mlimit ? p + step : mlimit;
                for (p++; p < q - 1; p++) {
                    uint32_t hh = hash3(p, shift);
                    tab[hh] = (tab[hh] << 16) | ((uint32_t)(p - in) & 0xFFFFu);
                }
                continue;
            }
            /* A match found after skipping may start earlier.  Then the
             * table holds positions ahead of p: no lazy probe at p + 1
             * (it would break the invariant that best_of() relies on). */
            size_t lazy_max = LAZY_MAX;
            while (p > anchor && p - d > in && p[-1] == (p - d)[-1]) {
                p--;
                len++;
                lazy_max = 0;
            }
            /* lazy: is there a longer match at p + 1? */
            while (len < lazy_max && p + 1 < mlimit) {
                uint32_t d2 = 0;
                const uint8_t *q = p + 1;
                uint32_t pos2 = (uint32_t)(q - in);
                uint32_t h2 = hash3(q, shift);
                uint32_t b2 = tab[h2];
                tab[h2] = (b2 << 16) | (pos2 & 0xFFFFu);
                size_t len2 = best_of(b2, pos2, ld32(q), q, iend, &d2);
                if (len2 <= len)
                    break;
                p = q;
                d = d2;
                len = len2;
            }
            if (len > MAX_MATCH)
                len = MAX_MATCH;
            if (!put_literals(&w, anchor, (size_t)(p - anchor), iend) || !put_match(&w, d, len))
                return -1;
            /* index (some of) the positions inside the match */
            const uint8_t *e = p + len;
            const uint8_t *ins = p + 1;
            const uint8_t *ins_end = e < mlimit ? e : mlimit;
            if (len > INS_ALL)
                ins = ins_end - 16 > ins ? ins_end - 16 : ins;
            for (; ins < ins_end; ins++) {
                uint32_t hh = hash3(ins, shift);
                tab[hh] = (tab[hh] << 16) | ((uint32_t)(ins - in) & 0xFFFFu);
            }
            p = e;
            anchor = p;
        }
    }
    if (!put_literals(&w, anchor, (size_t)(iend - anchor), iend))
        return -1;
    /* pad the last flag word with 1-bits */
    uint32_t f = (uint32_t)w.flags;
    if (w.nf)
        f = (f << (32 - w.nf)) | (0xFFFFFFFFu >> w.nf);
    else
        f = 0xFFFFFFFFu;
    st32(w.fp, f);
    return (ssize_t)(w.op - out);
}

ssize_t mp_lz77_compress_st(struct mp_lz77_state *st, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap)
{
    if (out == NULL || (in_len && in == NULL))
        return -1;
    if (in_len == 0) { /* a lone, all-padding flag word */
        if (out_cap < 4)
            return -1;
        st32(out, 0xFFFFFFFFu);
        return 4;
    }
    return compress_core(st, in, in_len, out, out_cap);
}

ssize_t mp_lz77_compress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    struct mp_lz77_state st;
    return mp_lz77_compress_st(&st, in, in_len, out, out_cap);
}

ssize_t mp_lz77_compress_if_worth_st(struct mp_lz77_state *st, const uint8_t *in, size_t in_len,
                                     uint8_t *out, size_t out_cap)
{
    if (in_len <= 1)
        return MP_LZ77_NOT_WORTH; /* output is at least 4 bytes */
    size_t cap = in_len - 1;
    int limited_by_us = out_cap >= cap;
    if (!limited_by_us)
        cap = out_cap;
    ssize_t r = mp_lz77_compress_st(st, in, in_len, out, cap);
    if (r < 0)
        return limited_by_us ? MP_LZ77_NOT_WORTH : -1;
    return r;
}

ssize_t mp_lz77_compress_if_worth(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap)
{
    struct mp_lz77_state st;
    return mp_lz77_compress_if_worth_st(&st, in, in_len, out, out_cap);
}
