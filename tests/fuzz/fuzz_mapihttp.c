/* libFuzzer target: MAPI over HTTP bodies (src/transport/mapihttp/body.c) and the
 * response stream parser (stream.c).  Byte 0 picks the request type
 * (bits 1-7, modulo the number of types) and the direction (bit 0); the
 * rest is the body.  Whatever decodes must re-encode: exactly to the input
 * when the decoder says so, and in every case to a body that decodes again
 * and re-encodes to itself.  The same bytes are fed to the stream parser in
 * two pieces. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/json.h"
#include "transport/mapihttp/body.h"
#include "transport/mapihttp/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum mp_mh_kind k = (enum mp_mh_kind)((data[0] >> 1) % MP_MH_N_KINDS);
    bool resp = data[0] & 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_body body;
    if (mp_mh_decode(k, resp, p, n, &body, &a) == MP_MH_OK) {
        struct mp_buf e1 = {0}, e2 = {0}, js = {0};
        if (mp_mh_encode(&e1, &body))
            abort();
        if (body.exact && (e1.len != n || (n && memcmp(e1.data, p, n))))
            abort();
        struct mp_mh_body again;
        static const uint8_t empty[1];
        if (mp_mh_decode(k, resp, e1.len ? e1.data : empty, e1.len, &again, &a) != MP_MH_OK)
            abort();
        if (mp_mh_encode(&e2, &again) || e2.len != e1.len ||
            (e1.len && memcmp(e1.data, e2.data, e1.len)))
            abort();
        struct mp_json j;
        mp_json_init(&j, &js);
        mp_mh_print(&j, &body);
        mp_buf_free(&e1);
        mp_buf_free(&e2);
        mp_buf_free(&js);
    }
    mp_arena_free(&a);

    struct mp_mh_stream st;
    mp_mh_stream_init(&st);
    size_t cut = n ? data[0] % (n + 1) : 0;
    if (mp_mh_stream_feed(&st, p, cut) == 0)
        mp_mh_stream_feed(&st, p + cut, n - cut);
    mp_mh_stream_free(&st);
    return 0;
}
