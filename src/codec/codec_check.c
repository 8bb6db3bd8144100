#include "codec/codec_check.h"

#include <stdlib.h>
#include <string.h>

#include "codec/ndr_rt.h"
#include "core/arena.h"
#include "core/json.h"

int mp_codec_check(const struct mp_call_codec *cc, int out, const uint8_t *p, size_t n)
{
    static const uint8_t empty[1];
    size_t sz = out ? cc->out_size : cc->in_size;
    int (*pull)(const uint8_t *, size_t, void *, struct mp_arena *, struct mp_ndr_wire *) =
        out ? cc->pull_out_w : cc->pull_in_w;
    int (*push)(struct mp_buf *, const void *, const struct mp_ndr_wire *) =
        out ? cc->push_out_w : cc->push_in_w;
    struct mp_ndr_wire w, w2;
    struct mp_arena a;
    mp_arena_init(&a);
    void *v = calloc(1, sz), *v2 = calloc(1, sz);
    struct mp_buf b = {0}, b2 = {0}, js = {0};
    int rc = 0;
    if (!v || !v2) {
        rc = 0;
        goto done;
    }
    if (pull(p ? p : empty, n, v, &a, &w))
        goto done; /* not decodable: fine */
    rc = -1;
    if (push(&b, v, &w) || b.len != n || (n && memcmp(b.data, p, n)))
        goto done; /* decode then encode must give the same bytes */
    if (pull(b.data ? b.data : empty, b.len, v2, &a, &w2) || push(&b2, v2, &w2) ||
        b2.len != b.len || (b.len && memcmp(b.data, b2.data, b.len)))
        goto done; /* and be stable */
    struct mp_json j;
    mp_json_init(&j, &js);
    (out ? cc->print_out : cc->print_in)(&j, v);
    if (j.err || j.depth != 0)
        goto done;
    rc = 1;
done:
    mp_buf_free(&b);
    mp_buf_free(&b2);
    mp_buf_free(&js);
    free(v);
    free(v2);
    mp_arena_free(&a);
    return rc;
}

int mp_codec_fuzz_one(const struct mp_codec_iface *ifc, const uint8_t *data, size_t size)
{
    if (size < 1 || !ifc->n_calls)
        return 0;
    uint16_t op = (uint16_t)((data[0] >> 1) % ifc->n_calls);
    const struct mp_call_codec *cc = mp_codec_iface_call(ifc, op);
    if (!cc)
        return 0;
    return mp_codec_check(cc, data[0] & 1, data + 1, size - 1);
}
