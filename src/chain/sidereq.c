/* The client's response held around the proxy's side requests (sidereq.h). */
#include "chain/sidereq.h"

#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "chain/ropstage.h"
#include "core/log.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

int mp_sidereq_hold(struct mp_call *m, struct mp_sidereq *h)
{
    size_t len = 0;
    const uint8_t *stub = mp_call_response_stub(m, &len);
    const struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
    if (!stub || !len || !in)
        return -1;
    uint8_t *copy = malloc(len);
    if (!copy)
        return -1;
    memcpy(copy, stub, len);
    free(h->saved);
    h->saved = copy;
    h->saved_len = len;
    h->orig_rgb = in->rgbIn;
    h->orig_cb = in->cbIn;
    return 0;
}

void mp_sidereq_one_rop(struct mp_sidereq *h, uint8_t rop_id, void *v, uint32_t handle)
{
    h->handle = handle;
    h->rop =
        (struct mp_rop){.rop_id = rop_id, .desc = mp_rop_descs[rop_id], .v = v, .req_index = -1};
    h->req = (struct mp_rop_buf){.rops = &h->rop, .n = 1, .handles = &h->handle, .nhandles = 1};
}

int mp_sidereq_send(struct mp_call *m, struct mp_sidereq *h, void (*cb)(struct mp_call *m))
{
    return mp_ropstage_side_request(m, &h->req, cb);
}

int mp_sidereq_answer(struct mp_call *m, struct mp_sidereq *h, struct mp_rop_buf *out)
{
    struct mp_rop_ctx ctx = {.requests = &h->req};
    return mp_ropstage_side_response(m, &ctx, out);
}

void mp_sidereq_restore(struct mp_call *m, struct mp_sidereq *h, const char *what)
{
    struct emsmdb_EcDoRpcExt2_in *in = mp_call_request(m);
    if (in) {
        in->rgbIn = (uint8_t *)h->orig_rgb;
        in->cbIn = h->orig_cb;
        mp_call_request_changed(m);
    }
    if (mp_call_set_response_stub(m, h->saved, h->saved_len))
        mp_warn("session %u: %s could not be restored", mp_call_sid(m), what);
}

void mp_sidereq_free(struct mp_sidereq *h)
{
    if (h) {
        free(h->saved);
        h->saved = NULL;
    }
}
