/* libFuzzer target for the ROP codec (src/rop).  Input: a mode byte, then
 * - mode bit 0 clear: one ROP request buffer;
 * - mode bit 0 set: u16 length L, L bytes of request buffer (the context),
 *   then a ROP response buffer.
 * Must never crash; whatever decodes must re-encode, and the re-encoding
 * must decode again to the same bytes (stable); mp_rop_encodes_as must
 * say so, and must see one changed byte.  The decoded buffers are
 * printed as JSON to exercise the printers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rop/rop.h"
#include "rop/ropjson.h"

static void check_stable(const uint8_t *p, size_t n, bool response, const struct mp_rop_ctx *ctx,
                         const struct mp_rop_buf *b)
{
    struct mp_buf o = {0}, o2 = {0}, js = {0};
    if (mp_rop_encode(&o, b) != 0)
        abort();
    /* nothing was changed: the bytes must come back exactly */
    if (o.len != n || memcmp(o.data, p, n) != 0)
        abort();
    struct mp_arena a = {0};
    struct mp_rop_buf b2;
    if (mp_rop_decode(&b2, o.data, o.len, response, ctx, &a) != MP_ROP_OK)
        abort();
    if (mp_rop_encode(&o2, &b2) != 0 || o2.len != o.len || memcmp(o2.data, o.data, o.len) != 0)
        abort();
    /* the verify mode agrees: the same bytes (b's fields point into p, b2's
     * into a copy), and neither one byte changed nor one missing */
    if (!mp_rop_encodes_as(b, p, n) || !mp_rop_encodes_as(&b2, p, n))
        abort();
    if (n && mp_rop_encodes_as(b, p, n - 1))
        abort();
    if (n) {
        uint8_t *f = malloc(n);
        if (!f)
            abort();
        memcpy(f, p, n);
        f[(n * 7) / 13] ^= 0x5A;
        if (mp_rop_encodes_as(b, f, n) || mp_rop_encodes_as(&b2, f, n))
            abort();
        free(f);
    }
    struct mp_json j;
    mp_rj_init(&j, &js);
    mp_rop_print(&j, b);
    mp_arena_free(&a);
    mp_buf_free(&o);
    mp_buf_free(&o2);
    mp_buf_free(&js);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    struct mp_arena a = {.limit = 16u << 20};
    if (!(mode & 1)) {
        struct mp_rop_buf b;
        if (mp_rop_decode(&b, data, size, false, NULL, &a) == MP_ROP_OK)
            check_stable(data, size, false, NULL, &b);
        mp_arena_free(&a);
        return 0;
    }
    if (size < 2)
        return 0;
    size_t l = (size_t)(data[0] | (data[1] << 8));
    if (l > size - 2)
        l = size - 2;
    const uint8_t *q = data + 2, *r = data + 2 + l;
    size_t rn = size - 2 - l;
    struct mp_rop_buf bq, bs;
    struct mp_rop_ctx ctx = {0};
    if (mp_rop_decode(&bq, q, l, false, NULL, &a) == MP_ROP_OK)
        ctx.requests = &bq;
    if (mp_rop_decode(&bs, r, rn, true, &ctx, &a) == MP_ROP_OK)
        check_stable(r, rn, true, &ctx, &bs);
    mp_arena_free(&a);
    return 0;
}
