/* Side GetBuffers for held FastTransfer downloads (fxside.h). */
#include "chain/fxside.h"

#include <stdlib.h>
#include <string.h>

#include "chain/chain.h"
#include "chain/msgevents.h"
#include "chain/ropstage.h"
#include "chain/sidereq.h"
#include "content/assemble.h"
#include "core/arena.h"
#include "core/log.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"
#include "rop/rop.h"

enum {
    MAX_ROUNDS = 256,        /* side GetBuffers per client call */
    SIDE_BUFFER = 0x7F00,    /* BufferSize of a side GetBuffer (at least the client's), and
                                the most a 0xBABE GetBuffer is given: 32 KB less SIDE_RESERVE */
    SIDE_RESERVE = 256,      /* pcbOut left for the RPC_HEADER_EXT and the ROP header */
    STATUS_PARTIAL = 0x0001, /* MS-OXCROPS 2.2.12.5.2 TransferStatus */
    OP_EXT2 = 11,            /* EcDoRpcExt2 (and MAPI/HTTP Execute) */
    UP_SIDE = 0x7000,        /* TransferDataSize of a side PutBuffer */
};

struct fxside {
    bool started;
    struct mp_sidereq h; /* the client's response, the side GetBuffer / PutBuffer */
    struct mp_rop_req_FastTransferSourceGetBuffer gb;
    size_t want; /* the client's BufferSize */
    unsigned rounds;
    uint64_t bytes;
    /* side PutBuffers (held uploads) */
    bool up;
    struct mp_rop_req_FastTransferDestinationPutBuffer pb;
    uint8_t *data;
};

void mp_fxside_call_free(void *state)
{
    struct fxside *s = state;
    if (s) {
        mp_sidereq_free(&s->h);
        free(s->data);
    }
    free(s);
}

/* Whether the client's GetBuffer (request item 0) should wait for more
 * upstream bytes: its context's queue is held (a message open), has fewer
 * than want bytes that can go, and the upstream is not done. */
static bool wants_more(struct mp_call *m, size_t want)
{
    struct mp_asm *a = mp_msgev_asm(m, true);
    struct mp_fx_qstate st;
    int rc = a ? mp_asm_queue_state(a, mp_call_rop_object(m, false, 0), &st) : -1;
    if (a)
        mp_msgev_asm_end(m);
    return !rc && st.open && !st.up_done && st.releasable < want;
}

static void side_cb(struct mp_call *m);

static void feed(struct mp_call *m, void *arg)
{
    (void)arg;
    mp_msgev_response(m);
}

/* The client's request and response back in place; its GetBuffer response
 * was fed already (the response step runs again). */
static void finish(struct mp_call *m, struct fxside *s)
{
    mp_sidereq_restore(m, &s->h, "held FastTransfer download: the client's GetBuffer response");
    struct mp_asm *a = mp_msgev_asm(m, true);
    if (a) {
        mp_asm_fed(a, mp_call_rop_object(m, false, 0), m, 0);
        mp_msgev_asm_end(m);
    }
    mp_debug("session %u: held FastTransfer download: %u side GetBuffer(s), %llu bytes, for the "
             "client's GetBuffer",
             mp_call_sid(m), s->rounds, (unsigned long long)s->bytes);
}

/* The next side GetBuffer, or the end. */
static void next(struct mp_call *m, struct fxside *s)
{
    if (s->rounds < MAX_ROUNDS && wants_more(m, s->want) && !mp_sidereq_send(m, &s->h, side_cb))
        return;
    if (s->rounds >= MAX_ROUNDS)
        mp_info("session %u: held FastTransfer download: %u side GetBuffers for one client "
                "GetBuffer; answered with what can go",
                mp_call_sid(m), s->rounds);
    finish(m, s);
}

/* A side response has come back on m: its fxside (*sp; NULL when the call
 * has none any more, then nothing is to be done) with one more round, and
 * the response's only ROP when it is a decoded rop_id (into *r), else NULL
 * (not decodable, another ROP, more ROPs: logged by the side response). */
static const void *side_answer(struct mp_call *m, struct fxside **sp, uint8_t rop_id,
                               struct mp_rop_buf *r)
{
    void **slot = mp_ropstage_fxside_call(m);
    struct fxside *s = *sp = slot ? *slot : NULL;
    if (!s)
        return NULL;
    s->rounds++;
    return !mp_sidereq_answer(m, &s->h, r) && r->n == 1 && r->rops[0].rop_id == rop_id &&
                   !r->rops[0].opaque
               ? r->rops[0].v
               : NULL;
}

static void side_cb(struct mp_call *m)
{
    struct fxside *s;
    struct mp_rop_buf r = {0};
    const struct mp_rop_rsp_FastTransferSourceGetBuffer *g =
        side_answer(m, &s, MP_ROP_FastTransferSourceGetBuffer, &r);
    if (!s)
        return;
    if (!g || g->ReturnValue || g->HeaderOnly) {
        mp_info("session %u: held FastTransfer download: the upstream refused a side GetBuffer "
                "(0x%08x); the client asks again",
                mp_call_sid(m), g ? (unsigned)g->ReturnValue : 0xFFFFFFFFu);
        finish(m, s);
        return;
    }
    s->bytes += g->TransferBufferSize;
    mp_ropstage_side_view(m, &s->h.req, &r, feed, NULL);
    if (g->TransferStatus != STATUS_PARTIAL) { /* Done, or Error / NoRoom: the client's own call */
        finish(m, s);
        return;
    }
    next(m, s);
}

size_t mp_fxside_room(struct mp_call *m)
{
    const struct emsmdb_EcDoRpcExt2_in *in = m && m->opnum == OP_EXT2 ? mp_call_request(m) : NULL;
    return in && in->pcbOut > SIDE_RESERVE ? in->pcbOut - SIDE_RESERVE : 0;
}

size_t mp_fxside_want(struct mp_call *m, const struct mp_rop_req_FastTransferSourceGetBuffer *q)
{
    if (q->BufferSize != 0xBABE)
        return q->BufferSize;
    /* 0xBABE: the server picks the size, up to MaximumBufferSize and to what
     * the client's response buffer holds (MS-OXCROPS 2.2.12.5.1), which is
     * at most one extended buffer's payload, 32 KB (MS-OXCRPC 3.1.4.2.1; a
     * ROP buffer's RopSize is 16 bits): a MaximumBufferSize of 0xFFF0 with a
     * pcbOut of 256 KB is not a 64 KB TransferBuffer */
    size_t room = mp_fxside_room(m);
    if (!room || room > SIDE_BUFFER)
        room = SIDE_BUFFER;
    return room < q->MaximumBufferSize ? room : q->MaximumBufferSize;
}

/* ---- side PutBuffers: a held upload's released bytes ---- */

static void up_side_cb(struct mp_call *m);

static size_t up_pending(struct mp_call *m)
{
    struct mp_asm *a = mp_msgev_asm(m, false);
    size_t n = a ? mp_asm_up_pending(a, mp_call_rop_object(m, false, 0)) : 0;
    if (a)
        mp_msgev_asm_end(m);
    return n;
}

static void up_finish(struct mp_call *m, struct fxside *s, uint32_t rv, uint16_t status,
                      uint16_t total)
{
    struct mp_asm *a = mp_msgev_asm(m, false);
    if (a) {
        mp_asm_up_result(a, mp_call_rop_object(m, false, 0), rv, status, total);
        mp_msgev_asm_end(m);
    }
    mp_sidereq_restore(m, &s->h, "held FastTransfer upload: the client's PutBuffer response");
    if (rv)
        mp_info("session %u: held FastTransfer upload: the upstream refused side PutBuffer %u "
                "(0x%08x); the client's PutBuffer gets that",
                mp_call_sid(m), s->rounds, (unsigned)rv);
    mp_debug("session %u: held FastTransfer upload: %u side PutBuffer(s), %llu bytes, after the "
             "client's PutBuffer",
             mp_call_sid(m), s->rounds, (unsigned long long)s->bytes);
}

/* The next side PutBuffer, or the end. */
static void up_next(struct mp_call *m, struct fxside *s, uint16_t status, uint16_t total)
{
    struct mp_asm *a = mp_msgev_asm(m, false);
    size_t k = a ? mp_asm_up_take(a, mp_call_rop_object(m, false, 0), s->data, UP_SIDE) : 0;
    if (a)
        mp_msgev_asm_end(m);
    if (!k) {
        up_finish(m, s, 0, status, total);
        return;
    }
    s->pb.TransferDataSize = (uint16_t)k;
    s->pb.TransferData = s->data;
    s->bytes += k;
    if (mp_sidereq_send(m, &s->h, up_side_cb)) {
        up_finish(m, s, 0x8007000E, 0, 0); /* ecOutOfMemory: those bytes are lost */
        return;
    }
}

static void up_side_cb(struct mp_call *m)
{
    struct fxside *s;
    struct mp_rop_buf r = {0};
    const struct mp_rop_rsp_FastTransferDestinationPutBuffer *g =
        side_answer(m, &s, MP_ROP_FastTransferDestinationPutBuffer, &r);
    if (!s)
        return;
    if (!g || g->ReturnValue) {
        up_finish(m, s, g ? g->ReturnValue : 0x80004005, 0, 0);
        return;
    }
    up_next(m, s, g->TransferStatus, g->TotalStepCount);
}

static void up_start(struct mp_call *m, void **slot)
{
    const struct mp_rop_req_FastTransferDestinationPutBuffer *q = mp_call_rop(m, false, 0);
    const struct mp_rop_rsp_FastTransferDestinationPutBuffer *r = mp_call_rop(m, true, 0);
    const struct mp_object *o = mp_call_rop_object(m, false, 0);
    if (!q || !r || !o || !mp_call_request(m) || r->ReturnValue || !up_pending(m))
        return;
    struct fxside *s = *slot ? *slot : (*slot = calloc(1, sizeof(struct fxside)));
    if (!s)
        return;
    s->started = s->up = true;
    if (mp_sidereq_hold(m, &s->h) || !(s->data = malloc(UP_SIDE))) {
        mp_warn("session %u: held FastTransfer upload: cannot hold the client's PutBuffer "
                "response; the rest goes with its next PutBuffer",
                mp_call_sid(m));
        return;
    }
    s->pb = (struct mp_rop_req_FastTransferDestinationPutBuffer){
        .RopId = MP_ROP_FastTransferDestinationPutBuffer,
        .LogonId = q->LogonId,
        .InputHandleIndex = 0,
    };
    mp_sidereq_one_rop(&s->h, MP_ROP_FastTransferDestinationPutBuffer, &s->pb, o->handle);
    up_next(m, s, r->TransferStatus, r->TotalStepCount);
}

void mp_fxside_start(struct mp_call *m)
{
    void **slot = mp_ropstage_fxside_call(m);
    if (slot && !(*slot && ((struct fxside *)*slot)->started) && m->opnum == OP_EXT2 &&
        mp_msgev_wanted(m->mods) && mp_call_rop_count(m, false) == 1 &&
        mp_call_rop_count(m, true) == 1 &&
        mp_call_rop_id(m, false, 0) == MP_ROP_FastTransferDestinationPutBuffer &&
        mp_call_rop_id(m, true, 0) == MP_ROP_FastTransferDestinationPutBuffer &&
        mp_call_rop_request_index(m, 0) == 0) {
        up_start(m, slot);
        return;
    }
    if (!slot || (*slot && ((struct fxside *)*slot)->started) || m->opnum != OP_EXT2 ||
        !mp_msgev_wanted(m->mods) || mp_call_rop_count(m, false) != 1 ||
        mp_call_rop_count(m, true) != 1 ||
        mp_call_rop_id(m, false, 0) != MP_ROP_FastTransferSourceGetBuffer ||
        mp_call_rop_id(m, true, 0) != MP_ROP_FastTransferSourceGetBuffer ||
        mp_call_rop_request_index(m, 0) != 0)
        return;
    const struct mp_rop_req_FastTransferSourceGetBuffer *q = mp_call_rop(m, false, 0);
    const struct mp_rop_rsp_FastTransferSourceGetBuffer *r = mp_call_rop(m, true, 0);
    const struct mp_object *o = mp_call_rop_object(m, false, 0);
    if (!q || !r || !o || !mp_call_request(m) || r->ReturnValue || r->HeaderOnly ||
        r->TransferStatus != STATUS_PARTIAL)
        return;
    size_t want = mp_fxside_want(m, q);
    if (!want || !wants_more(m, want))
        return;
    struct fxside *s = *slot ? *slot : (*slot = calloc(1, sizeof(struct fxside)));
    if (!s)
        return;
    s->started = true;
    if (mp_sidereq_hold(m, &s->h)) {
        mp_warn("session %u: held FastTransfer download: cannot hold the client's GetBuffer "
                "response; answered with what can go",
                mp_call_sid(m));
        return;
    }
    s->want = want;
    /* the proxy's own GetBuffer on the same context handle (slot 0), as big
     * as the client's response may be */
    size_t size = mp_fxside_room(m);
    if (size > SIDE_BUFFER)
        size = SIDE_BUFFER;
    if (size < want)
        size = want;
    s->gb = (struct mp_rop_req_FastTransferSourceGetBuffer){
        .RopId = MP_ROP_FastTransferSourceGetBuffer,
        .LogonId = q->LogonId,
        .InputHandleIndex = 0,
        .BufferSize = (uint16_t)size,
    };
    mp_sidereq_one_rop(&s->h, MP_ROP_FastTransferSourceGetBuffer, &s->gb, o->handle);
    next(m, s);
}
