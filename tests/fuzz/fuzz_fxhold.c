/* libFuzzer target for the message rewriter of held FastTransfer downloads
 * (src/content/fxhold.c, mp_fxrw_message) and the hold queue.
 *   make fuzz SECONDS=N   (corpus: tests/fuzz/corpus/fxhold, the samples of
 *                          tests/unit/data/fx)
 * The input is taken as one message of each kind (a change, a partial change, a
 * StartMessage .. EndMessage, a bare messageContent) with a verdict the
 * first byte picks (nothing, block, prefix + set + attachment replaced,
 * attachment dropped); whatever the rewriter writes must decode again as a
 * FastTransfer stream, and with no verdict it must be the input itself.
 * Then the input goes through a queue behind a progressTotal (NormalMessage
 * and FAIMessageTotalSize 1000): appended in two pieces, the rewritten
 * bytes in place of it (mp_fxq_replace_message), taken in 1000-byte
 * buffers; one of the totals must have changed by the rewrite's delta
 * (clamped at 0), the rest of the progressTotal not at all. */
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
            /* IncrSyncProgressMode, PtypBinary 0x00000102 of 32 bytes:
             * Version 0, FAIMessageTotalSize and NormalMessageTotalSize 1000 */
            uint8_t pt[44] = {0x0B, 0x00, 0x74, 0x40, 0x02, 0x01, 0x00, 0x00, 32};
            pt[12 + 8] = pt[12 + 24] = 0xE8;
            pt[12 + 9] = pt[12 + 25] = 0x03;
            struct mp_fxq q = {.prog_seen = true, .prog_at = 12};
            size_t cut = size / 2;
            uint8_t out[1000], first[44];
            if (!mp_fxq_append(&q, pt, sizeof pt) && !mp_fxq_append(&q, data, cut) &&
                !mp_fxq_append(&q, data + cut, size - cut) &&
                !mp_fxq_replace_message(&q, sizeof pt, sizeof pt + size, e.out, e.len)) {
                q.up_done = true;
                size_t total = 0, k;
                while ((k = mp_fxq_take(&q, total ? sizeof out : sizeof first,
                                        total ? out : first)) > 0)
                    total += k;
                if (total != sizeof pt + e.len || mp_fxq_status(&q) != 3)
                    abort();
                int64_t d = (int64_t)e.len - (int64_t)size, want = 1000 + d < 0 ? 0 : 1000 + d;
                uint64_t fai = 0, normal = 0;
                for (int i = 7; i >= 0; i--) {
                    fai = fai << 8 | first[12 + 8 + i];
                    normal = normal << 8 | first[12 + 24 + i];
                }
                if (!((fai == (uint64_t)want && normal == 1000) ||
                      (normal == (uint64_t)want && fai == 1000)) ||
                    memcmp(first, pt, 12 + 8) || memcmp(first + 28, pt + 28, 8))
                    abort();
            }
            mp_fxq_free(&q);
        }
        mp_fx_enc_free(&e);
    }
    return 0;
}
