/* The ROP buffer driver: RopSize, the ROP list (through the generated
 * descriptors), the handle table, request/response matching. */
#include "rop/rop.h"

#include <stddef.h>
#include <string.h>

#include "rop/ropjson.h"

const char *mp_rop_name(uint8_t id)
{
    const struct mp_rop_desc *d = mp_rop_descs[id];
    return d ? d->name : NULL;
}

static int fail(struct mp_rop_buf *b, size_t off, const char *why)
{
    b->bad_off = off;
    b->why = why;
    return MP_ROP_UNDECODABLE;
}

/* The next request (from *pos) a response with this RopId answers. */
static int match_request(const struct mp_rop_buf *rq, size_t *pos, uint8_t id)
{
    if (!rq)
        return -1;
    for (size_t i = *pos; i < rq->n; i++) {
        const struct mp_rop *r = &rq->rops[i];
        if (r->desc && (r->desc->flags & MP_ROPD_NORESPONSE))
            continue;
        if (r->rop_id == id ||
            (id == MP_ROP_SetMessageStatus && r->rop_id == MP_ROP_GetMessageStatus)) {
            *pos = i + 1;
            return (int)i;
        }
    }
    return -1;
}

int mp_rop_decode(struct mp_rop_buf *b, const uint8_t *p, size_t len, bool response,
                  const struct mp_rop_ctx *ctx, struct mp_arena *a)
{
    memset(b, 0, sizeof(*b));
    b->response = response;
    if (len < 2)
        return fail(b, 0, "shorter than RopSize");
    uint16_t rs = (uint16_t)(p[0] | (p[1] << 8));
    if (rs < 2 || rs > len)
        return fail(b, 0, "RopSize out of range");
    if ((len - rs) % 4)
        return fail(b, rs, "handle table not a multiple of 4 bytes");
    b->rop_size = rs;
    size_t cap = 16;
    b->rops = mp_arena_calloc(a, cap, sizeof(*b->rops));
    if (!b->rops)
        return MP_ROP_ENOMEM;
    const struct mp_rop_buf *reqs = ctx ? ctx->requests : NULL;
    size_t rq_pos = 0;
    size_t off = 2;
    while (off < rs) {
        uint8_t id = p[off];
        const struct mp_rop_desc *d = mp_rop_descs[id];
        if (!d)
            return fail(b, off, "unknown RopId");
        int ri = -1;
        if (response) {
            if (!d->pull_rsp)
                return fail(b, off, "ROP has no response");
            if (!(d->flags & MP_ROPD_RESPONSEONLY)) {
                ri = match_request(reqs, &rq_pos, id);
                /* RopGetMessageStatus answers with RopId 0x20 */
                if (ri >= 0 && reqs->rops[ri].rop_id != id)
                    d = reqs->rops[ri].desc;
            }
        } else if (!d->pull_req) {
            return fail(b, off, "response-only ROP in a request buffer");
        }
        if (b->n == cap) {
            struct mp_rop *nr = mp_arena_calloc(a, cap * 2, sizeof(*nr));
            if (!nr)
                return MP_ROP_ENOMEM;
            memcpy(nr, b->rops, cap * sizeof(*nr));
            b->rops = nr;
            cap *= 2;
        }
        void *v = mp_arena_alloc(a, response ? d->rsp_size : d->req_size);
        if (!v)
            return MP_ROP_ENOMEM;
        struct mp_rop_pctx pc = {.arena = a, .ctx = ctx, .reqs = reqs, .self = b};
        pc.req_pos = ri >= 0 ? (size_t)ri : (reqs ? reqs->n : 0);
        const void *req = ri >= 0 && !reqs->rops[ri].opaque ? reqs->rops[ri].v : NULL;
        struct mp_rcur c;
        mp_rcur_init(&c, p, rs);
        c.off = off;
        if (response)
            d->pull_rsp(&c, &pc, v, req);
        else
            d->pull_req(&c, &pc, v, NULL);
        struct mp_rop *r = &b->rops[b->n];
        memset(r, 0, sizeof(*r));
        r->rop_id = id;
        r->desc = d;
        r->off = (uint32_t)off;
        r->raw = p + off;
        r->req_index = ri;
        if (pc.nomem)
            return MP_ROP_ENOMEM;
        if (c.err) {
            if (!pc.need_ctx)
                return fail(b, off, "truncated or malformed ROP");
            r->opaque = true;
            r->len = (uint32_t)(rs - off);
            b->n++;
            off = rs;
            break;
        }
        r->v = v;
        r->len = (uint32_t)(c.off - off);
        b->n++;
        off = c.off;
    }
    b->nhandles = (len - rs) / 4;
    b->handles = mp_arena_calloc(a, b->nhandles ? b->nhandles : 1, sizeof(uint32_t));
    if (!b->handles)
        return MP_ROP_ENOMEM;
    for (size_t i = 0; i < b->nhandles; i++) {
        const uint8_t *q = p + rs + 4 * i;
        b->handles[i] = (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                        ((uint32_t)q[3] << 24);
    }
    return MP_ROP_OK;
}

/* RopSize, the ROPs, the handle table (w in either mode: wire.h). */
static bool push_buf(struct mp_wcur *w, const struct mp_rop_buf *b)
{
    size_t start = mp_wcur_pos(w);
    mp_wcur_hole(w, 2);
    for (size_t i = 0; i < b->n; i++) {
        const struct mp_rop *r = &b->rops[i];
        if (r->opaque || !r->v)
            mp_wcur_bytes(w, r->raw, r->len);
        else if (b->response)
            r->desc->push_rsp(w, r->v);
        else
            r->desc->push_req(w, r->v);
    }
    size_t rs = mp_wcur_pos(w) - start;
    if (rs > 0xFFFF)
        w->err = true;
    mp_wcur_patch_u16(w, start, (uint16_t)rs);
    for (size_t i = 0; i < b->nhandles; i++)
        mp_wcur_u32(w, b->handles[i]);
    return !w->err;
}

int mp_rop_encode(struct mp_buf *out, const struct mp_rop_buf *b)
{
    struct mp_wcur w = {.b = out};
    size_t start = out->len;
    if (!push_buf(&w, b)) {
        if (out->len > start)
            out->len = start;
        return -1;
    }
    return 0;
}

bool mp_rop_encodes_as(const struct mp_rop_buf *b, const uint8_t *ref, size_t ref_len)
{
    struct mp_wcur w = {.ref = ref, .ref_len = ref_len};
    return push_buf(&w, b) && w.pos == ref_len;
}

void mp_rop_print_one(struct mp_json *j, const struct mp_rop *r, bool response,
                      void (*extra)(struct mp_json *j, void *arg), void *arg)
{
    mp_rj_obj(j);
    mp_rj_key(j, "RopId");
    mp_rj_hex(j, r->rop_id, 2);
    mp_rj_key(j, "Name");
    mp_rj_cstr(j, r->desc ? r->desc->name : "?");
    if (r->opaque || !r->v) {
        mp_rj_key(j, "Opaque");
        mp_rj_bin(j, r->raw, r->len, 0);
    } else if (response) {
        r->desc->print_rsp(j, r->v);
    } else {
        r->desc->print_req(j, r->v);
    }
    if (extra)
        extra(j, arg);
    mp_rj_obj_end(j);
}

void mp_rop_print(struct mp_json *j, const struct mp_rop_buf *b)
{
    mp_rj_obj(j);
    mp_rj_key(j, "RopSize");
    mp_rj_u64(j, b->rop_size);
    mp_rj_key(j, "Rops");
    mp_rj_arr(j);
    for (size_t i = 0; i < b->n; i++)
        mp_rop_print_one(j, &b->rops[i], b->response, NULL, NULL);
    mp_rj_arr_end(j);
    mp_rj_key(j, "ServerObjectHandleTable");
    mp_rj_arr(j);
    for (size_t i = 0; i < b->nhandles; i++)
        mp_rj_hex(j, b->handles[i], 8);
    mp_rj_arr_end(j);
    mp_rj_obj_end(j);
}

_Static_assert(offsetof(struct mp_rop_rsp_OpenFolder, ReturnValue) ==
                   offsetof(struct mp_rop_rsp_head, ReturnValue),
               "ROP response header layout");
_Static_assert(offsetof(struct mp_rop_rsp_SaveChangesMessage, ReturnValue) ==
                   offsetof(struct mp_rop_rsp_head, ReturnValue),
               "ROP response header layout");

uint32_t mp_rop_return_value(const struct mp_rop *rsp)
{
    uint32_t rv;
    memcpy(&rv, (const uint8_t *)rsp->v + offsetof(struct mp_rop_rsp_head, ReturnValue), 4);
    return rv;
}

int mp_rop_out_slot(const struct mp_rop *req)
{
    if (req->opaque || !req->v || !req->desc || req->desc->out_hidx < 0)
        return -1;
    return ((const uint8_t *)req->v)[req->desc->out_hidx];
}
