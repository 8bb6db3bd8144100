/* libFuzzer target for the message rewriter of held FastTransfer downloads
 * (src/content/fxhold.c, mp_fxrw_message) and the hold queue.
 *   make fuzz SECONDS=N   (corpus: tests/fuzz/corpus/fxhold, the samples of
 *                          tests/unit/data/fx)
 * The input is taken as one message of each kind (a change, a partial change, a
 * StartMessage .. EndMessage, a bare messageContent) with a verdict the
 * first byte picks (nothing, block, prefix + set + attachment replaced,
 * attachment dropped); whatever the rewriter writes must decode again as a
 * FastTransfer stream, and with no verdict it must be the input itself.
 * Then the input goes through a queue: appended in two pieces, the
 * rewritten bytes in place of it, taken in 1000-byte buffers. */
#include "content/fxhold.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ignore(void *ud, const struct mp_fx_event *ev)
{
    (void)ud;
    (void)ev;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t body[] = {'b', 0, 0, 0};
    static const uint8_t notice[] = {0x1F, 0x00, 0x37, 0x00, 4, 0, 0, 0, 'x', 0, 0, 0};
    static const struct mp_fx_named np = {{1, 2, 3}, 1, 0, (const uint8_t *)"n\0", 2};
    struct mp_fxrw_set sets[2] = {{0x1000001F, NULL, body, 4}, {0x8001001F, &np, body, 4}};
    struct mp_fxrw_att atts[2] = {{0, "gone"}, {1, NULL}};
    unsigned pick = size ? data[0] % 4 : 0;
    for (int kind = MP_FXRW_CHANGE; kind <= MP_FXRW_PARTIAL; kind++) {
        struct mp_fxrw rw = {.kind = (enum mp_fxrw_kind)kind};
        if (pick == 1) {
            rw.block = notice;
            rw.block_len = sizeof notice;
        } else if (pick == 2) {
            rw.prefix = "[P] ";
            rw.sets = sets;
            rw.nsets = 2;
            rw.atts = atts;
            rw.natts = 1;
        } else if (pick == 3) {
            rw.atts = atts + 1;
            rw.natts = 1;
        }
        struct mp_fx_enc e;
        mp_fx_enc_init(&e);
        if (!mp_fxrw_message(data, size, &rw, &e)) {
            if (pick == 0 && (e.len != size || (size && memcmp(e.out, data, size))))
                abort();
            struct mp_fx_parser *p = mp_fx_parser_new(ignore, NULL);
            if (!p || mp_fx_feed(p, e.out, e.len))
                abort();
            mp_fx_parser_free(p);
            struct mp_fxq q = {0};
            size_t cut = size / 2;
            uint8_t out[1000];
            if (!mp_fxq_append(&q, data, cut) && !mp_fxq_append(&q, data + cut, size - cut) &&
                !mp_fxq_replace(&q, 0, size, e.out, e.len)) {
                q.up_done = true;
                size_t total = 0, k;
                while ((k = mp_fxq_take(&q, sizeof out, out)) > 0)
                    total += k;
                if (total != e.len || mp_fxq_status(&q) != 3)
                    abort();
            }
            mp_fxq_free(&q);
        }
        mp_fx_enc_free(&e);
    }
    return 0;
}
