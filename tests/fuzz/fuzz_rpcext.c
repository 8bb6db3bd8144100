/* libFuzzer target for RPC_HEADER_EXT chains (src/rop/rpcext.c) with LZ77 and
 * XOR, and the auxiliary-buffer printer.  Any chain that parses must
 * re-encode to the same bytes; its contents rebuilt with our own LZ77 must
 * parse back to the same contents. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rop/aux.h"
#include "rop/rop.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mp_rpcext x;
    if (mp_rpcext_parse(&x, data, size) != MP_RPCEXT_OK)
        return 0;
    if (x.consumed > size || x.n == 0)
        abort();
    struct mp_buf o = {0}, js = {0};
    if (mp_rpcext_reencode_same(&o, &x) != 0)
        abort();
    if (o.len != x.consumed || memcmp(o.data, data, o.len) != 0)
        abort();
    /* rebuild each payload with our compressor and the original flags */
    const uint8_t **segs = malloc(x.n * sizeof(*segs));
    size_t *lens = malloc(x.n * sizeof(*lens));
    bool fits = true;
    for (size_t i = 0; i < x.n; i++) {
        segs[i] = mp_rpcext_content(&x, i, &lens[i]);
        if (lens[i] > MP_RPCEXT_MAX_PAYLOAD)
            fits = false;
    }
    uint16_t fl = x.p[0].flags & (MP_RHE_COMPRESSED | MP_RHE_XORMAGIC);
    mp_buf_free(&o);
    if (fits) {
        if (mp_rpcext_build_chain(&o, segs, lens, x.n, fl) != 0)
            abort();
        struct mp_rpcext y;
        if (mp_rpcext_parse(&y, o.data, o.len) != MP_RPCEXT_OK || y.len != x.len || y.n != x.n ||
            (x.len && memcmp(y.data, x.data, x.len) != 0) || y.consumed != o.len)
            abort();
        mp_rpcext_free(&y);
    }
    struct mp_json j;
    mp_rj_init(&j, &js);
    mp_rpcext_print(&j, &x);
    mp_aux_print(&j, x.data, x.len);
    /* the content as a ROP request buffer */
    struct mp_arena a = {.limit = 16u << 20};
    struct mp_rop_buf b;
    if (mp_rop_decode(&b, x.data, x.len, false, NULL, &a) == MP_ROP_OK)
        mp_rop_print(&j, &b);
    mp_arena_free(&a);
    free(segs);
    free(lens);
    mp_buf_free(&o);
    mp_buf_free(&js);
    mp_rpcext_free(&x);
    return 0;
}
