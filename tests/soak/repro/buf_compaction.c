/* Reproduces the stale-offset bug found by the soak test (doc/internals/soak.md):
 * the PDU builders in src/dcerpc/pdu.c remember `start = out->len` in
 * begin_pdu(), then append more; mp_buf_reserve() may compact the buffer
 * (memmove of [off, len) to 0) in the middle, so end_pdu() computes
 * out->len - start on a moved buffer: the length wraps (-> -1, which the relay
 * reports as "out of memory" and closes the association) or frag_len is
 * written off bytes too far (the real header keeps frag_len 0 and the stub is
 * corrupted).  From the repository root:
 *   make build/libmp-asan.a && mkdir -p build/soak
 *   cc -std=c17 -D_GNU_SOURCE -fsanitize=address,undefined -g -Isrc \
 *      tests/soak/repro/buf_compaction.c build/libmp-asan.a -lcrypto -ldl \
 *      -o build/soak/buf_compaction && build/soak/buf_compaction
 * Exit status 1 and "BUG reproduced" while the bug is there, 0 once fixed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"

static int one(size_t queued, size_t consumed, size_t stub_len)
{
    struct mp_buf b = {0};
    uint8_t *junk = calloc(1, queued);
    mp_buf_append(&b, junk, queued); /* a queue that was partly sent... */
    mp_buf_consume(&b, consumed);    /* ...so off > 0 */
    size_t before = b.len, cap = b.cap;
    uint8_t *stub = malloc(stub_len);
    memset(stub, 0xAB, stub_len);
    int rc = mp_build_response(&b, 3, 7, 0, stub, stub_len, (uint32_t)stub_len);
    int bad = 0;
    if (rc) {
        printf("queued %zu consumed %zu cap %zu stub %zu: mp_build_response failed (rc %d) "
               "although memory is plentiful\n",
               queued, consumed, cap, stub_len, rc);
        bad = 1;
    } else {
        /* the new PDU is the last 24 + stub_len bytes */
        const uint8_t *p = b.data + b.len - 24 - stub_len;
        unsigned fl = p[8] | p[9] << 8;
        if (fl != 24 + stub_len || p[24] != 0xAB || p[b.len - (size_t)(p - b.data) - 1] != 0xAB) {
            printf("queued %zu consumed %zu cap %zu stub %zu: frag_len in header %u, expected %zu "
                   "(before %zu, now off %zu len %zu)\n",
                   queued, consumed, cap, stub_len, fl, 24 + stub_len, before, b.off, b.len);
            bad = 1;
        }
    }
    free(stub);
    free(junk);
    mp_buf_free(&b);
    return bad;
}

int main(void)
{
    int bad = 0;
    /* cap 4096 after 4076 bytes queued: the 16-byte header fits, the next 8 bytes do not ->
     * compaction */
    bad += one(4076, 4000, 100); /* off 4000 > 24+100: length wraps, rc -1 */
    bad += one(4076, 50, 100);   /* off 50 < 124: frag_len written 50 bytes too far */
    bad += one(1000, 0, 100);    /* control: no offset, no problem */
    printf("%s\n", bad ? "BUG reproduced" : "no problem found");
    return bad ? 1 : 0;
}
