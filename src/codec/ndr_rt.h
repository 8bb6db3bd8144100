/* Runtime of the generated NDR codecs (tools/gen_codec.py): the pull and
 * push contexts, referent ids, conformance bookkeeping, strings, limits.
 * Hand-written; the generated code in src/codec/gen/ calls only this and
 * src/ndr/ndr.h. */
#ifndef MP_CODEC_NDR_RT_H
#define MP_CODEC_NDR_RT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/buf.h"
#include "mapiproxy/ndr_types.h"
#include "ndr/ndr.h"

#define MP_CODEC_MAX_ELEMS 100000u /* elements of one non-byte array */
#define MP_CODEC_MAX_DEPTH 32u     /* nested pointers followed */
#define MP_CODEC_MAX_STUB (64u << 20)

/* struct mp_ctxh (a context handle) is public: mapiproxy/ndr_types.h. */

/* Wire details that the structures do not carry but that a byte-exact
 * re-encoding needs: the referent ids of non-NULL pointers and the
 * max_count of every varying array and string, in wire order, alignment
 * padding that is not zero, and the zero padding after the last parameter.  A zeroed mp_ndr_wire
 * gives the canonical encoding (MIDL-style referent ids 0x00020000 + 4k, max_count from size_is, no
 * trailing padding).  Filled by pull, read by push. */
struct mp_ndr_pad {
    uint32_t off; /* stub offset of the padding */
    uint8_t len, bytes[7];
};
struct mp_ndr_wire {
    struct mp_ndr_pad *pads; /* non-zero alignment padding (Impacket fills with 0xbf, ...) */
    uint32_t n_pads, cap_pads;
    uint32_t *ref_ids;
    uint32_t n_ref_ids, cap_ref_ids;
    uint32_t *max_counts;
    uint32_t n_max_counts, cap_max_counts;
    uint8_t trailing_pad;
};

struct mp_cdc { /* pull */
    struct mp_ndr_pull n;
    struct mp_arena *a;
    struct mp_ndr_wire *w;
    unsigned depth;
};

struct mp_cdp { /* push */
    struct mp_buf *b;
    size_t base;
    const struct mp_ndr_wire *w;
    uint32_t ref_k, max_k, pad_k;
    unsigned depth;
    bool err;
};

extern const uint8_t
    mp_ndr_nonnull; /* placeholder target of a pointer between scalars and buffers */
#define MP_NONNULL ((void *)&mp_ndr_nonnull)

void mp_cdc_init(struct mp_cdc *c, const uint8_t *p, size_t len, struct mp_arena *a,
                 struct mp_ndr_wire *w);
/* Checks the sticky error and that what is left, if anything, is the zero
 * padding of the stub to a multiple of 8 bytes. 0 or -1. */
int mp_cdc_finish(struct mp_cdc *c);
static inline void mp_cdc_fail(struct mp_cdc *c)
{
    c->n.err = true;
}
/* Alignment and integers (recording non-zero padding). */
void mp_cdc_align(struct mp_cdc *c, size_t a);
static inline uint8_t mp_cdc_u8(struct mp_cdc *c)
{
    return mp_ndr_u8(&c->n);
}
static inline uint16_t mp_cdc_u16(struct mp_cdc *c)
{
    mp_cdc_align(c, 2);
    return mp_ndr_u16(&c->n);
}
static inline uint32_t mp_cdc_u32(struct mp_cdc *c)
{
    mp_cdc_align(c, 4);
    return mp_ndr_u32(&c->n);
}
uint64_t mp_cdc_u64(struct mp_cdc *c);
/* A referent id: 0 = NULL; non-zero ids are recorded. Returns the id. */
uint32_t mp_cdc_ref(struct mp_cdc *c);
/* A max_count of a varying array or string (recorded). */
uint32_t mp_cdc_varmax(struct mp_cdc *c);
/* Arena memory for n elements; fails when n is over the limits or could
 * not fit in what is left of the stub (min_wire bytes each). */
void *mp_cdc_array(struct mp_cdc *c, uint32_t n, size_t elem, size_t min_wire);
/* A byte array of n elements: the next n bytes of the stub copied into
 * arena memory (not zeroed first); NULL and c->n.err when short. */
uint8_t *mp_cdc_bytes(struct mp_cdc *c, uint32_t n);
bool mp_cdc_enter(struct mp_cdc *c); /* depth++, false when too deep */
static inline void mp_cdc_leave(struct mp_cdc *c)
{
    c->depth--;
}
/* Conformant varying strings ([string] char* / wchar_t*): NUL-terminated,
 * no embedded NUL, offset 0. */
char *mp_cdc_string(struct mp_cdc *c);
uint16_t *mp_cdc_wstring(struct mp_cdc *c);
void mp_cdc_ctxh(struct mp_cdc *c, struct mp_ctxh *h);

void mp_cdp_init(struct mp_cdp *p, struct mp_buf *b, const struct mp_ndr_wire *w);
int mp_cdp_finish(struct mp_cdp *p);
void mp_cdp_align(struct mp_cdp *p, size_t a);
void mp_cdp_u8(struct mp_cdp *p, uint8_t v);
void mp_cdp_u16(struct mp_cdp *p, uint16_t v);
void mp_cdp_u32(struct mp_cdp *p, uint32_t v);
void mp_cdp_u64(struct mp_cdp *p, uint64_t v);
void mp_cdp_bytes(struct mp_cdp *p, const void *q, size_t n);
/* Writes a referent id for a non-NULL pointer (the recorded one, else a fresh one). */
void mp_cdp_ref(struct mp_cdp *p, const void *ptr);
/* The max_count to write for a varying array: the recorded one when it is
 * >= actual, else canonical. */
uint32_t mp_cdp_varmax(struct mp_cdp *p, uint32_t canonical, uint32_t actual);
/* canon_max: the max_count when none was recorded (0 = length incl. NUL). */
void mp_cdp_string(struct mp_cdp *p, const char *s, uint32_t canon_max);
void mp_cdp_wstring(struct mp_cdp *p, const uint16_t *s, uint32_t canon_max);
void mp_cdp_ctxh(struct mp_cdp *p, const struct mp_ctxh *h);
bool mp_cdp_enter(struct mp_cdp *p);
static inline void mp_cdp_leave(struct mp_cdp *p)
{
    p->depth--;
}
static inline void mp_cdp_fail(struct mp_cdp *p)
{
    p->err = true;
}
size_t mp_wstrlen(const uint16_t *s);
#endif
