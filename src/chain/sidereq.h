/* The client's response held while the proxy's own side requests use its
 * call (mp_ropstage_side_request): the response stub and the request's ROP
 * buffer are kept, the side requests go upstream on the same call (and its
 * session's handles), then both are put back and the response step runs
 * again.  Used by the online prefetch (msgonline.c), the side GetBuffers
 * and PutBuffers of held FastTransfer streams (fxside.c) and the proxy's
 * own named-property mapping (msgnames.c); doc/internals/module-api.md,
 * "Online downloads: read first". */
#ifndef MP_CHAIN_SIDEREQ_H
#define MP_CHAIN_SIDEREQ_H

#include <stddef.h>
#include <stdint.h>

#include "rop/rop.h"

struct mp_call;

struct mp_sidereq {
    uint8_t *saved; /* the client's response stub (malloc'd) */
    size_t saved_len;
    const uint8_t *orig_rgb; /* the client's request ROP buffer */
    uint32_t orig_cb;
    /* a side request of one ROP (mp_sidereq_one_rop) */
    struct mp_rop rop;
    uint32_t handle;
    struct mp_rop_buf req;
};

/* Keeps the client's response stub and request buffer of m: 0, or -1 when
 * the call has none (EcDoRpc, no response yet) or without memory. */
int mp_sidereq_hold(struct mp_call *m, struct mp_sidereq *h);
/* h->req becomes one ROP (v, a decoded request of rop_id: its
 * InputHandleIndex 0) on the server handle `handle` (slot 0). */
void mp_sidereq_one_rop(struct mp_sidereq *h, uint8_t rop_id, void *v, uint32_t handle);
/* Sends h->req as the call's side request; its response goes to cb (as
 * mp_ropstage_side_request).  0 or -1. */
int mp_sidereq_send(struct mp_call *m, struct mp_sidereq *h, void (*cb)(struct mp_call *m));
/* In cb: the side response decoded against h->req (mp_ropstage_side_response
 * with only the requests as context).  0 or -1 (logged). */
int mp_sidereq_answer(struct mp_call *m, struct mp_sidereq *h, struct mp_rop_buf *out);
/* The client's request and response back in place; a response that cannot
 * be put back is logged as "session N: <what> could not be restored". */
void mp_sidereq_restore(struct mp_call *m, struct mp_sidereq *h, const char *what);
/* Frees what mp_sidereq_hold kept (h itself is the caller's). */
void mp_sidereq_free(struct mp_sidereq *h);
#endif
