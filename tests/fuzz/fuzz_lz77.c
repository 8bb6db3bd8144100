/* libFuzzer target for the MS-XCA Plain LZ77 codec (src/xca/lz77.c).
 *   make fuzz-lz77 SECONDS=N
 * Each input is used twice:
 *   1. as a compressed stream: decompression must not misbehave (ASan/UBSan
 *      watch), must honour out_cap, and must be deterministic whatever the
 *      spare room (the exact-size buffer gives the same bytes);
 *   2. as plain data: compress -> decompress must give it back, the
 *      compressed size must respect mp_lz77_compress_bound(), a too-small
 *      out_cap must fail cleanly, and compress_if_worth must agree. */
#include "xca/lz77.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DCAP (1u << 20)
static uint8_t dbuf[DCAP], dbuf2[DCAP];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* 1. decompress arbitrary bytes */
    ssize_t r = mp_lz77_decompress(data, size, dbuf, DCAP);
    if (r < -1 || r > (ssize_t)DCAP)
        abort();
    if (r >= 0) {
        /* the same stream into an exact-size buffer: same result */
        uint8_t *exact = malloc((size_t)r + 1);
        if (mp_lz77_decompress(data, size, exact, (size_t)r) != r || memcmp(exact, dbuf, (size_t)r))
            abort();
        /* one byte less room fails, unless that byte was a zero literal
         * the decoder may take for an old encoder's zero padding (lz77.c,
         * zero_padding): then the rest comes out the same */
        ssize_t s = r > 0 ? mp_lz77_decompress(data, size, exact, (size_t)r - 1) : -1;
        if (s != -1 && !(s == r - 1 && dbuf[r - 1] == 0 && !memcmp(exact, dbuf, (size_t)s)))
            abort();
        free(exact);
    }

    /* 2. round trip */
    size_t bound = mp_lz77_compress_bound(size);
    uint8_t *c = malloc(bound);
    ssize_t n = mp_lz77_compress(data, size, c, bound);
    if (n < 4 || (size_t)n > bound)
        abort();
    uint8_t *d = malloc(size + 1);
    if (mp_lz77_decompress(c, (size_t)n, d, size) != (ssize_t)size || memcmp(d, data, size))
        abort();
    /* one byte short of room: clean failure, no overrun */
    uint8_t *small = malloc((size_t)n - 1);
    if (mp_lz77_compress(data, size, small, (size_t)n - 1) != -1)
        abort();
    free(small);
    /* if_worth: 0 exactly when not smaller than the input, else same output */
    ssize_t w = mp_lz77_compress_if_worth(data, size, dbuf2, size + 8 < DCAP ? size + 8 : DCAP);
    if ((size_t)n < size) {
        if (w != n || memcmp(dbuf2, c, (size_t)n))
            abort();
    } else if (w != MP_LZ77_NOT_WORTH) {
        abort();
    }
    free(c);
    free(d);
    return 0;
}
