/* libFuzzer target for the FastTransfer stream codec (src/fx/fxstream.c).
 *   make fuzz SECONDS=N   (corpus: tests/fuzz/corpus/fx, the samples of tests/data/fx)
 * Each input is decoded three ways: whole, split at a point taken from the
 * input, and byte by byte with coalescing.  The three must agree on the
 * outcome and the byte offset where it happened; whenever decoding
 * succeeds, the encoder fed the events must give the input back byte for
 * byte.  Every IDSET-looking input is also given to mp_fx_idset_decode. */
#include "fx/fxstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_ev(void *ud, const struct mp_fx_event *ev)
{
    struct mp_fx_enc *e = ud;
    mp_fx_enc_event(e, ev);
    if (ev->kind == MP_FX_EV_DATA && ev->n && !ev->p)
        abort();
    return 0;
}

static int decode(const uint8_t *d, size_t n, size_t cut, int bytewise, uint64_t *off)
{
    struct mp_fx_enc e;
    mp_fx_enc_init(&e);
    struct mp_fx_parser *p = mp_fx_parser_new(on_ev, &e);
    if (!p)
        abort();
    int r = 0;
    if (bytewise) {
        mp_fx_parser_set_coalesce(p, 4096);
        for (size_t i = 0; i < n && !r; i++)
            r = mp_fx_feed(p, d + i, 1);
    } else {
        r = mp_fx_feed(p, d, cut);
        if (!r)
            r = mp_fx_feed(p, d + cut, n - cut);
    }
    if (!r)
        r = mp_fx_finish(p);
    if (r && !mp_fx_error(p))
        abort();
    *off = mp_fx_offset(p);
    if (!r && (e.err || e.len != n || (n && memcmp(e.out, d, n))))
        abort();
    mp_fx_parser_free(p);
    mp_fx_enc_free(&e);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t o1, o2, o3;
    int r1 = decode(data, size, size, 0, &o1);
    size_t cut = size ? (size_t)data[0] * 131 % (size + 1) : 0;
    int r2 = decode(data, size, cut, 0, &o2);
    int r3 = decode(data, size, 0, 1, &o3);
    if (r1 != r2 || r1 != r3 || o1 != o2 || o1 != o3)
        abort();
    (void)mp_fx_idset_decode(data, size, size && (data[0] & 1), NULL, NULL);
    return 0;
}
