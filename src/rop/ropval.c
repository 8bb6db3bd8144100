/* Hand-written value types of the ROP codec: strings, property values,
 * property rows (MS-OXCDATA 2.8, 2.11), and the context look-ups. */
#include "rop/ropval.h"

#include <string.h>

#include "rop/gen/rop_gen.h"
#include "rop/rop.h"
#include "rop/ropjson.h"

const uint32_t mp_rop_cols_receive_folder_table[3] = {0x67480014u, 0x001A001Eu, 0x30080040u};

void mp_rop_need_ctx(struct mp_rcur *c, struct mp_rop_pctx *pc)
{
    pc->need_ctx = true;
    c->err = true;
}

void mp_rop_nomem(struct mp_rcur *c, struct mp_rop_pctx *pc)
{
    pc->nomem = true;
    c->err = true;
}

bool mp_rop_logon_private(struct mp_rcur *c, struct mp_rop_pctx *pc, uint8_t logon_id)
{
    /* A RopLogon request with this LogonId, in this buffer or in the
     * requests of this call, settles it (LogonFlags bit 0x01: Private). */
    const struct mp_rop_buf *bufs[2] = {pc->self, pc->reqs};
    for (int k = 0; k < 2; k++) {
        const struct mp_rop_buf *b = bufs[k];
        if (!b || b->response)
            continue;
        for (size_t i = b->n; i-- > 0;) {
            const struct mp_rop *r = &b->rops[i];
            if (r->opaque || r->rop_id != MP_ROP_Logon)
                continue;
            const struct mp_rop_req_Logon *l = r->v;
            if (l->LogonId == logon_id)
                return (l->LogonFlags & 0x01) != 0;
        }
    }
    if (pc->ctx && pc->ctx->logon_is_private) {
        int v = pc->ctx->logon_is_private(pc->ctx->opaque, logon_id);
        if (v >= 0)
            return v != 0;
    }
    mp_rop_need_ctx(c, pc);
    return false;
}

/* MS-OXCROPS gives some ROPs fields on failure too (RopReadStream's
 * DataSize, the WrittenSize of the write ROPs, PartialCompletion,
 * TransferStatus); others (gromox) answer those failures with the header
 * alone, MS-OXCROPS' general form.  The header alone is taken when nothing
 * follows in the ROP list, or when the next byte is the RopId of the
 * response that comes next: the next request ROP that has a response
 * (RopGetMessageStatus answers as 0x20), or a response-only ROP.  Without
 * the requests, any RopId that has a response.  The fields' first byte on
 * failure is 0 in practice (sizes of nothing, PartialCompletion 0/1), never
 * a RopId with a response. */
bool mp_rop_header_only(const struct mp_rcur *c, const struct mp_rop_pctx *pc)
{
    if (c->off >= c->len)
        return true;
    uint8_t next = c->p[c->off];
    const struct mp_rop_desc *d = mp_rop_descs[next];
    if (!d || !d->pull_rsp)
        return false;
    if (d->flags & MP_ROPD_RESPONSEONLY)
        return true;
    const struct mp_rop_buf *rq = pc->reqs;
    if (!rq)
        return true;
    for (size_t i = pc->req_pos + 1; i < rq->n; i++) {
        const struct mp_rop *r = &rq->rops[i];
        if (r->desc && (r->desc->flags & MP_ROPD_NORESPONSE))
            continue;
        return next == (r->rop_id == 0x1F ? 0x20 : r->rop_id);
    }
    return false;
}

bool mp_rop_table_columns(struct mp_rcur *c, struct mp_rop_pctx *pc, uint8_t hidx,
                          const uint32_t **cols, size_t *ncols)
{
    const struct mp_rop_buf *rq = pc->reqs;
    if (rq) {
        /* the last RopSetColumns on this handle index before the request */
        size_t end = pc->req_pos < rq->n ? pc->req_pos : rq->n;
        for (size_t i = end; i-- > 0;) {
            const struct mp_rop *r = &rq->rops[i];
            if (r->opaque || r->rop_id != MP_ROP_SetColumns)
                continue;
            const struct mp_rop_req_SetColumns *s = r->v;
            if (s->InputHandleIndex == hidx) {
                *cols = s->PropertyTags;
                *ncols = s->PropertyTagCount;
                return true;
            }
        }
        if (pc->ctx && pc->ctx->table_columns && hidx < rq->nhandles) {
            if (pc->ctx->table_columns(pc->ctx->opaque, rq->handles[hidx], cols, ncols) == 0)
                return true;
        }
    }
    mp_rop_need_ctx(c, pc);
    return false;
}

/* ---- strings ---- */
void mp_rop_pull_str(struct mp_rcur *c, struct mp_rop_str *s, bool wide)
{
    size_t n = 0;
    s->wide = wide;
    s->p = wide ? mp_rcur_utf16z(c, &n) : mp_rcur_asciiz(c, &n);
    s->n = (uint32_t)n;
}

void mp_rop_push_str(struct mp_wcur *w, const struct mp_rop_str *s)
{
    static const uint8_t z[2];
    mp_wcur_bytes(w, s->p, s->n);
    mp_wcur_bytes(w, z, s->wide ? 2 : 1);
}

void mp_rop_print_str(struct mp_json *j, const struct mp_rop_str *s)
{
    if (!s->p)
        mp_rj_null(j);
    else if (s->wide)
        mp_rj_str16(j, s->p, s->n);
    else
        mp_rj_str8(j, s->p, s->n);
}

void mp_rop_print_text(struct mp_json *j, const uint8_t *p, size_t n, bool wide)
{
    if (!p) {
        mp_rj_null(j);
        return;
    }
    if (wide) {
        while (n >= 2 && p[n - 1] == 0 && p[n - 2] == 0)
            n -= 2;
        mp_rj_str16(j, p, n);
    } else {
        while (n > 0 && p[n - 1] == 0)
            n--;
        mp_rj_str8(j, p, n);
    }
}

/* ---- property values ---- */
static uint16_t base_type(uint16_t t)
{
    /* MVI (0x3000): one value of the base type, as in a table row */
    if ((t & (MP_PT_MV | MP_PT_MVI)) == (MP_PT_MV | MP_PT_MVI))
        t &= (uint16_t) ~(MP_PT_MV | MP_PT_MVI);
    return t;
}

static void pull_single(struct mp_rcur *c, struct mp_rop_pctx *pc, uint16_t t,
                        struct mp_rop_pval *v)
{
    size_t n = 0;
    switch (t) {
    case MP_PT_NULL:
        break;
    case MP_PT_I2:
        v->u = mp_rcur_u16(c);
        break;
    case MP_PT_LONG:
    case MP_PT_R4:
    case MP_PT_ERROR:
        v->u = mp_rcur_u32(c);
        break;
    case MP_PT_DOUBLE:
    case MP_PT_CURRENCY:
    case MP_PT_APPTIME:
    case MP_PT_I8:
    case MP_PT_SYSTIME:
        v->u = mp_rcur_u64(c);
        break;
    case MP_PT_BOOLEAN:
        v->u = mp_rcur_u8(c);
        break;
    case MP_PT_STRING8:
        v->p = mp_rcur_asciiz(c, &n);
        v->n = (uint32_t)n;
        break;
    case MP_PT_UNICODE:
        v->p = mp_rcur_utf16z(c, &n);
        v->n = (uint32_t)n;
        break;
    case MP_PT_CLSID:
        v->p = mp_rcur_bytes(c, 16);
        v->n = 16;
        break;
    case MP_PT_BINARY:
    case MP_PT_SVREID:
    case MP_PT_OBJECT:
        v->n = mp_rcur_u16(c);
        v->p = mp_rcur_bytes(c, v->n);
        break;
    case MP_PT_SRESTRICT:
        v->res = mp_arena_alloc(pc->arena, sizeof(*v->res));
        if (!v->res) {
            mp_rop_nomem(c, pc);
            return;
        }
        mp_rop_pull_Restriction(c, pc, v->res);
        break;
    case MP_PT_ACTIONS: {
        /* RuleAction (MS-OXORULE 2.2.5): NoOfActions u16, then blocks each
         * led by ActionLength u16; kept as bytes. */
        size_t start = c->off;
        uint16_t na = mp_rcur_u16(c);
        for (uint16_t i = 0; i < na && !c->err; i++) {
            uint16_t al = mp_rcur_u16(c);
            mp_rcur_bytes(c, al);
        }
        if (!c->err) {
            v->p = c->p + start;
            v->n = (uint32_t)(c->off - start);
        }
        break;
    }
    default:
        c->err = true;
    }
}

void mp_rop_pull_pval(struct mp_rcur *c, struct mp_rop_pctx *pc, uint16_t type,
                      struct mp_rop_pval *v)
{
    uint16_t t = base_type(type);
    v->type = type;
    if (!(t & MP_PT_MV)) {
        pull_single(c, pc, t, v);
        return;
    }
    uint16_t e = (uint16_t)(t & ~MP_PT_MV);
    switch (e) {
    case MP_PT_I2:
    case MP_PT_LONG:
    case MP_PT_R4:
    case MP_PT_DOUBLE:
    case MP_PT_CURRENCY:
    case MP_PT_APPTIME:
    case MP_PT_I8:
    case MP_PT_SYSTIME:
    case MP_PT_STRING8:
    case MP_PT_UNICODE:
    case MP_PT_CLSID:
    case MP_PT_BINARY:
        break;
    default:
        c->err = true;
        return;
    }
    v->count = mp_rcur_u32(c);
    if (c->err || v->count > mp_rcur_left(c)) {
        c->err = true;
        return;
    }
    v->mv = mp_arena_calloc(pc->arena, v->count ? v->count : 1, sizeof(*v->mv));
    if (!v->mv) {
        mp_rop_nomem(c, pc);
        return;
    }
    for (uint32_t i = 0; i < v->count && !c->err; i++) {
        v->mv[i].type = e;
        pull_single(c, pc, e, &v->mv[i]);
    }
}

static void push_single(struct mp_wcur *w, uint16_t t, const struct mp_rop_pval *v)
{
    static const uint8_t z[2];
    switch (t) {
    case MP_PT_I2:
        mp_wcur_u16(w, (uint16_t)v->u);
        break;
    case MP_PT_LONG:
    case MP_PT_R4:
    case MP_PT_ERROR:
        mp_wcur_u32(w, (uint32_t)v->u);
        break;
    case MP_PT_DOUBLE:
    case MP_PT_CURRENCY:
    case MP_PT_APPTIME:
    case MP_PT_I8:
    case MP_PT_SYSTIME:
        mp_wcur_u64(w, v->u);
        break;
    case MP_PT_BOOLEAN:
        mp_wcur_u8(w, (uint8_t)v->u);
        break;
    case MP_PT_STRING8:
        mp_wcur_bytes(w, v->p, v->n);
        mp_wcur_bytes(w, z, 1);
        break;
    case MP_PT_UNICODE:
        mp_wcur_bytes(w, v->p, v->n);
        mp_wcur_bytes(w, z, 2);
        break;
    case MP_PT_CLSID:
    case MP_PT_ACTIONS:
        mp_wcur_bytes(w, v->p, v->n);
        break;
    case MP_PT_BINARY:
    case MP_PT_SVREID:
    case MP_PT_OBJECT:
        mp_wcur_u16(w, (uint16_t)v->n);
        mp_wcur_bytes(w, v->p, v->n);
        break;
    case MP_PT_SRESTRICT:
        if (v->res)
            mp_rop_push_Restriction(w, v->res);
        break;
    default:
        break;
    }
}

void mp_rop_push_pval(struct mp_wcur *w, const struct mp_rop_pval *v)
{
    uint16_t t = base_type(v->type);
    if (!(t & MP_PT_MV)) {
        push_single(w, t, v);
        return;
    }
    mp_wcur_u32(w, v->count);
    for (uint32_t i = 0; i < v->count; i++)
        push_single(w, (uint16_t)(t & ~MP_PT_MV), &v->mv[i]);
}

static void print_single(struct mp_json *j, uint16_t t, const struct mp_rop_pval *v)
{
    switch (t) {
    case MP_PT_NULL:
        mp_rj_null(j);
        break;
    case MP_PT_I2:
        mp_rj_i64(j, (int16_t)v->u);
        break;
    case MP_PT_LONG:
        mp_rj_i64(j, (int32_t)v->u);
        break;
    case MP_PT_ERROR:
        mp_rj_hex(j, v->u, 8);
        break;
    case MP_PT_R4: {
        float f;
        uint32_t b = (uint32_t)v->u;
        memcpy(&f, &b, 4);
        mp_rj_dbl(j, f);
        break;
    }
    case MP_PT_DOUBLE:
    case MP_PT_APPTIME: {
        double d;
        memcpy(&d, &v->u, 8);
        mp_rj_dbl(j, d);
        break;
    }
    case MP_PT_CURRENCY:
    case MP_PT_I8:
        mp_rj_i64(j, (int64_t)v->u);
        break;
    case MP_PT_SYSTIME:
        mp_rj_u64(j, v->u);
        break;
    case MP_PT_BOOLEAN:
        mp_rj_bool(j, v->u != 0);
        break;
    case MP_PT_STRING8:
        mp_rj_str8(j, v->p, v->n);
        break;
    case MP_PT_UNICODE:
        mp_rj_str16(j, v->p, v->n);
        break;
    case MP_PT_CLSID:
        if (v->p)
            mp_rj_guid(j, v->p);
        else
            mp_rj_null(j);
        break;
    case MP_PT_SRESTRICT:
        if (v->res)
            mp_rop_print_Restriction(j, v->res);
        else
            mp_rj_null(j);
        break;
    default:
        mp_rj_bin(j, v->p, v->n, MP_ROP_PRINT_MAXBIN);
        break;
    }
}

void mp_rop_print_pval(struct mp_json *j, const struct mp_rop_pval *v)
{
    uint16_t t = base_type(v->type);
    if (!(t & MP_PT_MV)) {
        print_single(j, t, v);
        return;
    }
    mp_rj_arr(j);
    for (uint32_t i = 0; i < v->count; i++)
        print_single(j, (uint16_t)(t & ~MP_PT_MV), &v->mv[i]);
    mp_rj_arr_end(j);
}

void mp_rop_tpropval_pull(struct mp_rcur *c, struct mp_rop_pctx *pc, struct mp_rop_tpropval *t)
{
    t->tag = mp_rcur_u32(c);
    if (c->err)
        return;
    if ((t->tag & 0xFFFF) == MP_PT_UNSPECIFIED) {
        c->err = true;
        return;
    }
    if (++pc->depth > MP_ROP_MAX_DEPTH) {
        c->err = true;
    } else {
        mp_rop_pull_pval(c, pc, (uint16_t)t->tag, &t->v);
    }
    pc->depth--;
}

void mp_rop_tpropval_push(struct mp_wcur *w, const struct mp_rop_tpropval *t)
{
    mp_wcur_u32(w, t->tag);
    mp_rop_push_pval(w, &t->v);
}

void mp_rop_tpropval_print(struct mp_json *j, const struct mp_rop_tpropval *t)
{
    mp_rj_obj(j);
    mp_rj_key(j, "Tag");
    mp_rj_hex(j, t->tag, 8);
    mp_rj_key(j, "Value");
    mp_rop_print_pval(j, &t->v);
    mp_rj_obj_end(j);
}

/* ---- property rows ---- */
void mp_rop_pull_proprow(struct mp_rcur *c, struct mp_rop_pctx *pc, struct mp_rop_proprow *r,
                         const uint32_t *cols, size_t ncols)
{
    if (!cols && ncols) {
        mp_rop_need_ctx(c, pc);
        return;
    }
    r->flag = mp_rcur_u8(c);
    if (c->err)
        return;
    if (r->flag > 1 || ncols > 0xFFFF) {
        c->err = true;
        return;
    }
    r->ncols = (uint32_t)ncols;
    r->cols = cols;
    r->vals = mp_arena_calloc(pc->arena, ncols ? ncols : 1, sizeof(*r->vals));
    if (!r->vals) {
        mp_rop_nomem(c, pc);
        return;
    }
    for (size_t i = 0; i < ncols && !c->err; i++) {
        struct mp_rop_rowval *v = &r->vals[i];
        uint16_t t = (uint16_t)cols[i];
        if (t == MP_PT_UNSPECIFIED) {
            v->wire_type = mp_rcur_u16(c);
            t = v->wire_type;
            if (t == MP_PT_UNSPECIFIED) {
                c->err = true;
                break;
            }
        }
        v->v.type = t;
        if (r->flag == 1) {
            v->flag = mp_rcur_u8(c);
            if (v->flag == 0x01)
                continue;
            if (v->flag == 0x0A) {
                v->v.u = mp_rcur_u32(c);
                continue;
            }
            if (v->flag != 0x00) {
                c->err = true;
                break;
            }
        }
        mp_rop_pull_pval(c, pc, t, &v->v);
    }
}

void mp_rop_push_proprow(struct mp_wcur *w, const struct mp_rop_proprow *r)
{
    mp_wcur_u8(w, r->flag);
    for (uint32_t i = 0; i < r->ncols; i++) {
        const struct mp_rop_rowval *v = &r->vals[i];
        if ((uint16_t)r->cols[i] == MP_PT_UNSPECIFIED)
            mp_wcur_u16(w, v->wire_type);
        if (r->flag == 1) {
            mp_wcur_u8(w, v->flag);
            if (v->flag == 0x01)
                continue;
            if (v->flag == 0x0A) {
                mp_wcur_u32(w, (uint32_t)v->v.u);
                continue;
            }
        }
        mp_rop_push_pval(w, &v->v);
    }
}

void mp_rop_print_proprow(struct mp_json *j, const struct mp_rop_proprow *r)
{
    mp_rj_obj(j);
    mp_rj_key(j, "Flag");
    mp_rj_u64(j, r->flag);
    mp_rj_key(j, "Values");
    mp_rj_arr(j);
    for (uint32_t i = 0; i < r->ncols; i++) {
        const struct mp_rop_rowval *v = &r->vals[i];
        mp_rj_obj(j);
        mp_rj_key(j, "Tag");
        mp_rj_hex(j, r->cols[i], 8);
        if ((uint16_t)r->cols[i] == MP_PT_UNSPECIFIED) {
            mp_rj_key(j, "Type");
            mp_rj_hex(j, v->wire_type, 4);
        }
        if (r->flag == 1 && v->flag == 0x01) {
            mp_rj_key(j, "Unavailable");
            mp_rj_bool(j, true);
        } else if (r->flag == 1 && v->flag == 0x0A) {
            mp_rj_key(j, "Error");
            mp_rj_hex(j, v->v.u, 8);
        } else {
            mp_rj_key(j, "Value");
            mp_rop_print_pval(j, &v->v);
        }
        mp_rj_obj_end(j);
    }
    mp_rj_arr_end(j);
    mp_rj_obj_end(j);
}
