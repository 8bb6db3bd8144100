/* libFuzzer target: RTS PDUs (MS-RPCH 2.2.3), src/transport/rpch/rts.c.
 * Each input is a stream of PDUs as an RPC over HTTP channel body carries
 * them; every one that decodes is named, re-encoded and decoded again, and
 * must come back byte for byte. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/rpch/rts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (size - off >= 10) {
        size_t frag = (size_t)data[off + 8] | (size_t)data[off + 9] << 8;
        if (frag < 10 || frag > size - off)
            break;
        struct mp_rts_pdu p;
        if (mp_rts_decode(data + off, frag, &p) == NULL) {
            (void)mp_rts_kind_name(mp_rts_identify(&p));
            uint8_t out[0x10000];
            size_t n = mp_rts_encode(&p, out, sizeof(out));
            if (n != frag || memcmp(out, data + off, n) != 0) {
                /* reserved bytes (ClientAddress padding, drep[1..3]) may
                 * differ; a second round trip must be exact */
                struct mp_rts_pdu q;
                if (!n || mp_rts_decode(out, n, &q) != NULL)
                    abort();
                uint8_t out2[0x10000];
                if (mp_rts_encode(&q, out2, sizeof(out2)) != n || memcmp(out, out2, n) != 0)
                    abort();
            }
        }
        off += frag;
    }
    return 0;
}
