/* Unit tests for the EMSMDB payload layer (src/rop): RPC_HEADER_EXT chains,
 * auxiliary buffers and the generated ROP codec.
 *
 * Golden inputs: the two Outlook 2007 EcDoRpcExt2 request stubs of
 * tests/data/emsmdb (made by Outlook, not by us), and ROP buffers
 * recorded from the Exchange lab (tests/unit/data/rop, see capture.py). */
#include "testlib.h"

#include <dirent.h>
#include <stdint.h>

#include "rop/aux.h"
#include "rop/objects.h"
#include "rop/rop.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static char *json_of_buf(const struct mp_rop_buf *b)
{
    struct mp_buf o = {0};
    struct mp_json j;
    mp_rj_init(&j, &o);
    mp_rop_print(&j, b);
    mp_buf_append(&o, "", 1);
    return (char *)o.data;
}

/* Decode, check every ROP is named and decoded, re-encode, compare. */
static int roundtrip(const uint8_t *p, size_t n, bool response, const struct mp_rop_ctx *ctx,
                     struct mp_arena *a, struct mp_rop_buf *b, bool allow_opaque)
{
    int st = mp_rop_decode(b, p, n, response, ctx, a);
    if (st != MP_ROP_OK) {
        fprintf(stderr, "decode: %d at %zu: %s\n", st, b->bad_off, b->why ? b->why : "");
        return -1;
    }
    for (size_t i = 0; i < b->n; i++) {
        if (!b->rops[i].desc)
            return -2;
        if (b->rops[i].opaque && !allow_opaque) {
            fprintf(stderr, "ROP %zu (%s) opaque\n", i, b->rops[i].desc->name);
            return -3;
        }
    }
    struct mp_buf o = {0};
    int ok = mp_rop_encode(&o, b) == 0 && o.len == n && memcmp(o.data, p, n) == 0;
    if (!ok)
        fprintf(stderr, "re-encoding differs (%zu vs %zu bytes)\n", o.len, n);
    mp_buf_free(&o);
    return ok ? 0 : -4;
}

/* ---- the Outlook 2007 EcDoRpcExt2 stubs ---- */
struct stub {
    const uint8_t *rgb_in, *rgb_aux_in;
    uint32_t cb_in, cb_aux_in, pul_flags, pcb_out, pcb_aux_out;
};

/* NDR_IN of EcDoRpcExt2: [in,out,ref] pcxh (20), [in,out] pulFlags,
 * [in,size_is(cbIn)] rgbIn (conformant: max count, bytes), [in] cbIn,
 * [in,out] pcbOut, [in,size_is(cbAuxIn)] rgbAuxIn, [in] cbAuxIn,
 * [in,out] pcbAuxOut.  Every byte must be accounted for. */
static int parse_stub(const uint8_t *d, size_t n, struct stub *s)
{
    size_t off = 20;
#define NEED(k)                                                                                    \
    if (n - off < (k))                                                                             \
        return -1;
    NEED(8);
    s->pul_flags = le32(d + off);
    uint32_t mc = le32(d + off + 4);
    off += 8;
    NEED(mc);
    s->rgb_in = d + off;
    off += mc;
    off = (off + 3) & ~(size_t)3;
    NEED(12);
    s->cb_in = le32(d + off);
    s->pcb_out = le32(d + off + 4);
    uint32_t mc2 = le32(d + off + 8);
    off += 12;
    if (s->cb_in != mc)
        return -2;
    NEED(mc2);
    s->rgb_aux_in = d + off;
    off += mc2;
    off = (off + 3) & ~(size_t)3;
    NEED(8);
    s->cb_aux_in = le32(d + off);
    s->pcb_aux_out = le32(d + off + 4);
    off += 8;
    if (s->cb_aux_in != mc2)
        return -3;
#undef NEED
    return off == n ? 0 : -4;
}

static void test_outlook_stub(const char *name, const char *const *expect, size_t nexpect)
{
    char path[512];
    snprintf(path, sizeof path, "%s/emsmdb/%s", TESTDATA, name);
    size_t n;
    uint8_t *d = slurp(path, &n);
    CHECK(d != NULL);
    if (!d)
        return;
    struct stub s;
    CHECK_EQ(parse_stub(d, n, &s), 0);

    /* rgbIn: Compressed|Last, one payload holding a ROP request buffer */
    struct mp_rpcext x;
    CHECK_EQ(mp_rpcext_parse(&x, s.rgb_in, s.cb_in), MP_RPCEXT_OK);
    CHECK_EQ(x.consumed, s.cb_in);
    CHECK_EQ(x.n, 1);
    CHECK_EQ(x.p[0].flags, MP_RHE_COMPRESSED | MP_RHE_LAST);
    struct mp_buf re = {0};
    CHECK_EQ(mp_rpcext_reencode_same(&re, &x), 0);
    CHECK(re.len == s.cb_in && memcmp(re.data, s.rgb_in, re.len) == 0);
    mp_buf_free(&re);
    /* a rebuilt chain (our own LZ77) decodes to the same content */
    CHECK_EQ(mp_rpcext_build(&re, x.data, x.len, MP_RHE_COMPRESSED | MP_RHE_LAST), 0);
    struct mp_rpcext y;
    CHECK_EQ(mp_rpcext_parse(&y, re.data, re.len), 0);
    CHECK(y.len == x.len && memcmp(y.data, x.data, x.len) == 0);
    CHECK(y.p[0].flags & MP_RHE_COMPRESSED);
    mp_rpcext_free(&y);
    mp_buf_free(&re);

    struct mp_arena a = {0};
    struct mp_rop_buf b;
    CHECK_EQ(roundtrip(x.data, x.len, false, NULL, &a, &b, false), 0);
    CHECK_EQ(b.n, nexpect);
    for (size_t i = 0; i < b.n && i < nexpect; i++) {
        if (strcmp(b.rops[i].desc->name, expect[i]) != 0)
            fprintf(stderr, "%s: ROP %zu is %s, expected %s\n", name, i, b.rops[i].desc->name,
                    expect[i]);
        CHECK(strcmp(b.rops[i].desc->name, expect[i]) == 0);
    }
    char *js = json_of_buf(&b);
    if (getenv("ROP_VERBOSE"))
        printf("%s\n", js);
    CHECK(js && strstr(js, "\"Rops\":[") != NULL);
    if (strstr(name, "ModifyRecipients")) {
        /* the RecipientRow decodes to its end, with the 12 columns */
        CHECK(strstr(js, "\"DisplayName\":\"Julien Kerihuel\"") != NULL);
        CHECK(strstr(js, "\"Value\":\"jkerihuel@openchange2003.local\"") != NULL);
        const struct mp_rop_req_ModifyRecipients *mr = b.rops[1].v;
        CHECK(mr->RecipientRows[0].RecipientRow.decoded);
        CHECK(mr->RecipientRows[0].RecipientRow.has_props);
        CHECK_EQ(mr->RecipientRows[0].RecipientRow.RecipientProperties.ncols, 12);
    }
    free(js);

    /* rgbAuxIn: XorMagic|Last, AUX blocks */
    struct mp_rpcext ax;
    CHECK_EQ(mp_rpcext_parse(&ax, s.rgb_aux_in, s.cb_aux_in), MP_RPCEXT_OK);
    CHECK_EQ(ax.consumed, s.cb_aux_in);
    CHECK_EQ(ax.p[0].flags, MP_RHE_XORMAGIC | MP_RHE_LAST);
    struct mp_aux_block blk[16];
    size_t nb = 0;
    CHECK_EQ(mp_aux_parse(ax.data, ax.len, blk, 16, &nb), 0);
    CHECK(nb >= 1);
    for (size_t i = 0; i < nb; i++)
        CHECK(mp_aux_type_name(blk[i].version, blk[i].type) != NULL);
    struct mp_buf o = {0};
    struct mp_json j;
    mp_rj_init(&j, &o);
    mp_aux_print(&j, ax.data, ax.len);
    mp_buf_append(&o, "", 1);
    if (getenv("ROP_VERBOSE"))
        printf("%s\n", (char *)o.data);
    CHECK(strstr((char *)o.data, "Undecodable") == NULL);
    mp_buf_free(&o);
    CHECK_EQ(mp_rpcext_reencode_same(&re, &ax), 0);
    CHECK(re.len == s.cb_aux_in && memcmp(re.data, s.rgb_aux_in, re.len) == 0);
    mp_buf_free(&re);
    mp_rpcext_free(&ax);
    mp_rpcext_free(&x);
    mp_arena_free(&a);
    free(d);
}

/* ---- lab captures (tests/unit/data/rop, made by capture.py) ---- */
static void test_lab_pairs(void)
{
    DIR *dir = opendir("data/rop");
    CHECK(dir != NULL);
    if (!dir)
        return;
    struct dirent *e;
    int pairs = 0;
    while ((e = readdir(dir))) {
        size_t nl = strlen(e->d_name);
        if (nl < 9 || strcmp(e->d_name + nl - 8, ".req.bin") != 0)
            continue;
        char qp[600], sp[600];
        snprintf(qp, sizeof qp, "data/rop/%s", e->d_name);
        snprintf(sp, sizeof sp, "data/rop/%.*s.rsp.bin", (int)(nl - 8), e->d_name);
        size_t nq, ns;
        uint8_t *q = slurp(qp, &nq), *r = slurp(sp, &ns);
        CHECK(q && r);
        if (!q || !r) {
            free(q);
            free(r);
            continue;
        }
        struct mp_arena a = {0};
        struct mp_rop_buf bq, bs;
        if (strstr(e->d_name, "unknown_rop")) {
            /* RopId 0x99 is no ROP: the whole buffer is relayed untouched */
            CHECK_EQ(mp_rop_decode(&bq, q, nq, false, NULL, &a), MP_ROP_UNDECODABLE);
            CHECK_EQ(bq.bad_off, 2);
            CHECK_EQ(mp_rop_decode(&bs, r, ns, true, NULL, &a), MP_ROP_UNDECODABLE);
            CHECK_EQ(bs.bad_off, 2);
        } else {
            int rq = roundtrip(q, nq, false, NULL, &a, &bq, false);
            if (rq)
                fprintf(stderr, "%s: request %d\n", e->d_name, rq);
            CHECK_EQ(rq, 0);
            struct mp_rop_ctx ctx = {.requests = &bq};
            int rs = roundtrip(r, ns, true, &ctx, &a, &bs, false);
            if (rs)
                fprintf(stderr, "%s: response %d\n", e->d_name, rs);
            CHECK_EQ(rs, 0);
            /* every response answers a request of the same RopId */
            for (size_t i = 0; rs == 0 && i < bs.n; i++) {
                int ri = bs.rops[i].req_index;
                CHECK(ri >= 0 && bq.rops[ri].rop_id == bs.rops[i].rop_id);
            }
            /* without the requests, context-dependent responses turn opaque:
             * still OK and byte-exact */
            struct mp_rop_buf bn;
            CHECK_EQ(roundtrip(r, ns, true, NULL, &a, &bn, true), 0);
            pairs++;
        }
        mp_arena_free(&a);
        free(q);
        free(r);
    }
    closedir(dir);
    CHECK(pairs >= 8);
}

static uint8_t *lab_file(const char *name, size_t *n)
{
    char p[300];
    snprintf(p, sizeof p, "data/rop/%s", name);
    return slurp(p, n);
}

/* Context rules: QueryRows rows need the columns of their table. */
static void test_context(void)
{
    size_t nq, ns;
    uint8_t *q = lab_file("01_hierarchy.req.bin", &nq), *r = lab_file("01_hierarchy.rsp.bin", &ns);
    CHECK(q && r);
    if (!q || !r)
        return;
    struct mp_arena a = {0};
    struct mp_rop_buf bq, bs;
    CHECK_EQ(mp_rop_decode(&bs, r, ns, true, NULL, &a), MP_ROP_OK);
    CHECK_EQ(bs.n, 4);
    CHECK(bs.n == 4 && bs.rops[3].opaque && bs.rops[3].rop_id == MP_ROP_QueryRows);
    CHECK(bs.n == 4 && !bs.rops[2].opaque);
    CHECK_EQ(mp_rop_decode(&bq, q, nq, false, NULL, &a), MP_ROP_OK);
    struct mp_rop_ctx ctx = {.requests = &bq};
    CHECK_EQ(mp_rop_decode(&bs, r, ns, true, &ctx, &a), MP_ROP_OK);
    CHECK(bs.n == 4 && !bs.rops[3].opaque);
    if (bs.n == 4 && !bs.rops[3].opaque) {
        const struct mp_rop_rsp_QueryRows *qr = bs.rops[3].v;
        CHECK(qr->RowCount >= 4);
        CHECK_EQ(qr->RowData[0].ncols, 3);
        char *js = json_of_buf(&bs);
        CHECK(strstr(js, "\"Inbox\"") != NULL);
        free(js);
    }
    /* edit: change the folder id of RopOpenFolder and re-encode */
    struct mp_rop_req_OpenFolder *of = bq.rops[0].v;
    uint64_t old = of->FolderId;
    of->FolderId = 0x1122334455667788ull;
    struct mp_buf o = {0};
    CHECK_EQ(mp_rop_encode(&o, &bq), 0);
    CHECK_EQ(o.len, nq);
    struct mp_rop_buf b2;
    CHECK_EQ(mp_rop_decode(&b2, o.data, o.len, false, NULL, &a), MP_ROP_OK);
    CHECK_EQ(((struct mp_rop_req_OpenFolder *)b2.rops[0].v)->FolderId, 0x1122334455667788ull);
    of->FolderId = old;
    mp_buf_free(&o);
    mp_arena_free(&a);
    free(q);
    free(r);
}

/* SetProperties: PropertyValueSize follows an edit (a sender's deviation
 * from counting PropertyValueCount would be kept as a delta; the lab now
 * counts it, as MS-OXCROPS 2.2.8.6.1 and the MS-OXCPRPT example do). */
static void test_setprops_edit(void)
{
    size_t nq;
    uint8_t *q = lab_file("02_create_message.req.bin", &nq);
    CHECK(q != NULL);
    if (!q)
        return;
    struct mp_arena a = {0};
    struct mp_rop_buf b;
    CHECK_EQ(mp_rop_decode(&b, q, nq, false, NULL, &a), MP_ROP_OK);
    struct mp_rop_req_SetProperties *sp = b.rops[1].v;
    CHECK_EQ(b.rops[1].rop_id, MP_ROP_SetProperties);
    uint16_t size0 = sp->PropertyValueSize;
    static const uint8_t subj[] = {'X', 0, 'Y', 0};
    sp->PropertyValues[0].v.p = subj;
    uint32_t oldn = sp->PropertyValues[0].v.n;
    sp->PropertyValues[0].v.n = 4;
    struct mp_buf o = {0};
    CHECK_EQ(mp_rop_encode(&o, &b), 0);
    struct mp_rop_buf b2;
    CHECK_EQ(mp_rop_decode(&b2, o.data, o.len, false, NULL, &a), MP_ROP_OK);
    CHECK_EQ(b2.n, b.n);
    const struct mp_rop_req_SetProperties *sp2 = b2.rops[1].v;
    CHECK_EQ(sp2->PropertyValueSize, size0 - (oldn - 4));
    CHECK(sp2->PropertyValues[0].v.n == 4 && memcmp(sp2->PropertyValues[0].v.p, subj, 4) == 0);
    CHECK_EQ(o.len, nq - (oldn - 4));
    mp_buf_free(&o);
    mp_arena_free(&a);
    free(q);
}

/* Truncated and corrupted buffers never crash and never decode past the end. */
static void test_truncation(void)
{
    size_t nq;
    uint8_t *q = lab_file("02_create_message.req.bin", &nq);
    CHECK(q != NULL);
    if (!q)
        return;
    uint16_t rs = (uint16_t)(q[0] | (q[1] << 8));
    uint8_t *t = malloc(nq);
    int ok = 0, bad = 0;
    for (size_t cut = 2; cut <= rs; cut += 7) {
        memcpy(t, q, cut);
        t[0] = (uint8_t)cut;
        t[1] = (uint8_t)(cut >> 8);
        struct mp_arena a = {0};
        struct mp_rop_buf b;
        int st = mp_rop_decode(&b, t, cut, false, NULL, &a);
        if (st == MP_ROP_OK) {
            struct mp_buf o = {0};
            CHECK(mp_rop_encode(&o, &b) == 0 && o.len == cut && memcmp(o.data, t, cut) == 0);
            mp_buf_free(&o);
            ok++;
        } else {
            CHECK_EQ(st, MP_ROP_UNDECODABLE);
            CHECK(b.bad_off >= 2 && b.bad_off < cut);
            bad++;
        }
        mp_arena_free(&a);
    }
    CHECK(ok > 0 && bad > 0);
    /* RopSize beyond the buffer, odd handle table */
    struct mp_arena a = {0};
    struct mp_rop_buf b;
    uint8_t x[] = {0x10, 0x00, 0x01};
    CHECK_EQ(mp_rop_decode(&b, x, sizeof x, false, NULL, &a), MP_ROP_UNDECODABLE);
    uint8_t y[] = {0x02, 0x00, 0x01};
    CHECK_EQ(mp_rop_decode(&b, y, sizeof y, false, NULL, &a), MP_ROP_UNDECODABLE);
    uint8_t z[] = {0x02, 0x00, 0xff, 0xff, 0xff, 0xff};
    CHECK_EQ(mp_rop_decode(&b, z, sizeof z, false, NULL, &a), MP_ROP_OK);
    CHECK(b.n == 0 && b.nhandles == 1 && b.handles[0] == 0xffffffffu);
    mp_arena_free(&a);
    free(t);
    free(q);
}

/* ---- RPC_HEADER_EXT chains ---- */
static void test_rpcext(void)
{
    size_t n = 70000;
    uint8_t *d = malloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)((i * 7) ^ (i >> 9));
    struct mp_buf o = {0};
    CHECK_EQ(mp_rpcext_build_split(&o, d, n, 0, MP_RHE_COMPRESSED | MP_RHE_XORMAGIC), 0);
    struct mp_rpcext x;
    CHECK_EQ(mp_rpcext_parse(&x, o.data, o.len), 0);
    CHECK_EQ(x.n, 3);
    CHECK(x.len == n && memcmp(x.data, d, n) == 0);
    for (size_t i = 0; i < x.n; i++) {
        CHECK(x.p[i].size_actual <= MP_RPCEXT_MAX_PAYLOAD);
        CHECK(x.p[i].flags & MP_RHE_XORMAGIC);
        CHECK(!!(x.p[i].flags & MP_RHE_LAST) == (i + 1 == x.n));
    }
    struct mp_buf r = {0};
    CHECK_EQ(mp_rpcext_reencode_same(&r, &x), 0);
    CHECK(r.len == o.len && memcmp(r.data, o.data, o.len) == 0);
    mp_buf_free(&r);
    /* change payload 1 only: payloads 0 and 2 keep their bytes */
    size_t l0, l1, l2;
    const uint8_t *c0 = mp_rpcext_content(&x, 0, &l0), *c1 = mp_rpcext_content(&x, 1, &l1),
                  *c2 = mp_rpcext_content(&x, 2, &l2);
    uint8_t *m = malloc(l1);
    memcpy(m, c1, l1);
    m[5] ^= 0xFF;
    const uint8_t *segs[3] = {c0, m, c2};
    size_t lens[3] = {l0, l1, l2};
    CHECK_EQ(mp_rpcext_reencode(&r, &x, segs, lens, 3), 0);
    size_t p0 = 8 + x.p[0].size;
    CHECK(r.len >= p0 && memcmp(r.data, o.data, p0) == 0);
    struct mp_rpcext y;
    CHECK_EQ(mp_rpcext_parse(&y, r.data, r.len), 0);
    uint8_t want = d[l0 + 5];
    want ^= 0xFF;
    CHECK(y.len == n && y.data[l0 + 5] == want);
    mp_rpcext_free(&y);
    mp_buf_free(&r);
    /* drop the last payload: Last moves to the (reused) second one */
    CHECK_EQ(mp_rpcext_reencode(&r, &x, segs, lens, 2), 0);
    CHECK_EQ(mp_rpcext_parse(&y, r.data, r.len), 0);
    CHECK(y.n == 2 && (y.p[1].flags & MP_RHE_LAST) && !(y.p[0].flags & MP_RHE_LAST));
    mp_rpcext_free(&y);
    mp_buf_free(&r);
    free(m);
    mp_rpcext_free(&x);
    /* incompressible data: the Compressed flag is cleared */
    uint32_t s = 1;
    for (size_t i = 0; i < 1000; i++) {
        s = s * 1103515245u + 12345u;
        d[i] = (uint8_t)(s >> 16);
    }
    mp_buf_free(&o);
    CHECK_EQ(mp_rpcext_build(&o, d, 1000, MP_RHE_COMPRESSED | MP_RHE_LAST), 0);
    CHECK_EQ(o.data[2], MP_RHE_LAST);
    CHECK_EQ(mp_rpcext_build(&o, d, MP_RPCEXT_MAX_PAYLOAD + 1, MP_RHE_LAST), MP_RPCEXT_ETOOBIG);
    /* errors */
    uint8_t h1[] = {0, 0, 4, 0, 5, 0, 5, 0, 1, 2};
    CHECK_EQ(mp_rpcext_parse(&x, h1, sizeof h1), MP_RPCEXT_ETRUNC);
    uint8_t h2[] = {1, 0, 4, 0, 0, 0, 0, 0};
    CHECK_EQ(mp_rpcext_parse(&x, h2, sizeof h2), MP_RPCEXT_EVERSION);
    uint8_t h3[] = {0, 0, 0, 0, 0, 0, 0, 0};
    CHECK_EQ(mp_rpcext_parse(&x, h3, sizeof h3), MP_RPCEXT_ENOLAST);
    uint8_t h4[] = {0, 0, 5, 0, 4, 0, 9, 0, 0xff, 0xff, 0xff, 0xff};
    CHECK_EQ(mp_rpcext_parse(&x, h4, sizeof h4), MP_RPCEXT_ELZ77);
    uint8_t h5[] = {0, 0, 4, 0, 1, 0, 2, 0, 7};
    CHECK_EQ(mp_rpcext_parse(&x, h5, sizeof h5), MP_RPCEXT_ESIZE);
    uint8_t h6[] = {0, 0, 0x0c, 0, 0, 0, 0, 0};
    CHECK_EQ(mp_rpcext_parse(&x, h6, sizeof h6), MP_RPCEXT_EFLAGS);
    mp_buf_free(&o);
    free(d);
}

/* Every ROP of the table has a name and both directions where it should. */
static void test_table(void)
{
    int n = 0;
    for (int i = 0; i < 256; i++) {
        const struct mp_rop_desc *d = mp_rop_descs[i];
        if (!d)
            continue;
        n++;
        CHECK_EQ(d->id, i);
        CHECK(d->name && strncmp(d->name, "Rop", 3) == 0);
        CHECK(!!d->pull_req == !(d->flags & MP_ROPD_RESPONSEONLY));
        CHECK(!!d->pull_rsp == !(d->flags & MP_ROPD_NORESPONSE));
    }
    CHECK_EQ(n, MP_ROP_COUNT);
    CHECK(mp_rop_name(0x99) == NULL);
    CHECK(strcmp(mp_rop_name(0xFE), "RopLogon") == 0);
}

static int cols_cb(void *opaque, uint32_t handle, const uint32_t **tags, size_t *n)
{
    static const uint32_t cols[] = {0x67480014u, 0x3001001Fu};
    (void)opaque;
    (void)handle;
    *tags = cols;
    *n = 2;
    return 0;
}
static int private_cb(void *opaque, uint8_t logon_id)
{
    (void)opaque;
    (void)logon_id;
    return 1;
}

/* Every ROP of the table decodes a minimal request and response: the ROP
 * header followed by zero bytes (all counts 0, empty strings), for the
 * shortest tail that decodes to exactly one ROP; then re-encodes exactly.
 * Responses are tried with ReturnValue 0 and with an error. */
static void test_every_rop_minimal(void)
{
    int nreq = 0, nrsp = 0, nrsp_err = 0, total = 0;
    uint8_t buf[256];
    struct mp_rop_ctx ctx = {.table_columns = cols_cb, .logon_is_private = private_cb};
    for (int id = 0; id < 256; id++) {
        const struct mp_rop_desc *d = mp_rop_descs[id];
        if (!d)
            continue;
        total++;
        for (int dir = 0; dir < 3; dir++) {
            bool response = dir > 0;
            if ((!response && !d->pull_req) || (response && !d->pull_rsp))
                continue;
            if (dir == 2 && (d->flags & MP_ROPD_RESPONSEONLY))
                continue;
            /* need their request (tested with lab captures) / a notification
             * type (test_notify) */
            if (response && (id == MP_ROP_GetPropertiesSpecific || id == MP_ROP_Notify) && dir == 1)
                continue;
            bool found = false;
            for (size_t tail = 0; tail < 200 && !found; tail++) {
                memset(buf, 0, sizeof buf);
                size_t n = 2;
                buf[n++] = (uint8_t)id;
                if (response && !(d->flags & MP_ROPD_RESPONSEONLY)) {
                    buf[n++] = 0;                             /* handle index */
                    uint32_t rv = dir == 2 ? 0x80004005u : 0; /* ecError */
                    memcpy(buf + n, &rv, 4);
                    n += 4;
                } else if (!response) {
                    buf[n++] = 0; /* LogonId */
                }
                n += tail;
                buf[0] = (uint8_t)n;
                struct mp_arena a = {0};
                struct mp_rop_buf b;
                /* a request buffer with one SetColumns on handle 0 gives
                 * table ROPs their columns */
                struct mp_rop_buf rq;
                static const uint8_t sc[] = {0x0c, 0x00, 0x12, 0x00, 0x00, 0x00, 0x01, 0x00,
                                             0x14, 0x00, 0x48, 0x67, 0x00, 0x00, 0x00, 0x00};
                CHECK_EQ(mp_rop_decode(&rq, sc, sizeof sc, false, NULL, &a), MP_ROP_OK);
                ctx.requests = &rq;
                int st = mp_rop_decode(&b, buf, n, response, &ctx, &a);
                if (st == MP_ROP_OK && b.n == 1 && !b.rops[0].opaque && b.rops[0].len == n - 2) {
                    struct mp_buf o = {0};
                    CHECK(mp_rop_encode(&o, &b) == 0 && o.len == n && memcmp(o.data, buf, n) == 0);
                    struct mp_buf js = {0};
                    struct mp_json j;
                    mp_rj_init(&j, &js);
                    mp_rop_print(&j, &b);
                    CHECK(!j.err && js.len > 0);
                    mp_buf_free(&js);
                    mp_buf_free(&o);
                    found = true;
                }
                mp_arena_free(&a);
            }
            if (!found)
                fprintf(stderr, "%s: no minimal %s decodes\n", d->name,
                        dir == 0   ? "request"
                        : dir == 1 ? "response"
                                   : "error response");
            CHECK(found);
            if (found)
                *(dir == 0 ? &nreq : dir == 1 ? &nrsp : &nrsp_err) += 1;
        }
    }
    printf("minimal buffers: %d ROPs, %d requests, %d responses, %d error responses\n", total, nreq,
           nrsp, nrsp_err);
}

static void test_notify(void)
{
    /* NewMail on a message, then a table RowAdded on a message row */
    static const uint8_t nm[] = {
        0x2A, 0x11, 0x00, 0x00, 0x00, 0x00, 0x02, 0x80, /* handle, LogonId, flags */
        1,    0,    0,    0,    0,    0,    0,    1,    1,    0,    0,   0,   0,   0, 0, 2, /* FID,
                                                                                               MID
                                                                                             */
        0x04, 0,    0,    0,    0x00, 'I',  'P',  'M',  '.',  'N',  'o', 't', 'e', 0, /* flags,
                                                                                         class */
        0x2A, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x81, 0x03, 0x00, /* table, RowAdded */
        1,    0,    0,    0,    0,    0,    0,    1,    1,    0,    0,   0,   0,   0, 0, 3, 0,
        0,    0,    0, /* row fid, mid, inst */
        1,    0,    0,    0,    0,    0,    0,    1,    1,    0,    0,   0,   0,   0, 0, 4, 0,
        0,    0,    0,                /* after fid, id, inst */
        0x03, 0x00, 0x00, 0xAA, 0xBB, /* TableRowData */
        0x6E, 0x05, 0x00,             /* RopPending */
    };
    uint8_t buf[sizeof nm + 2];
    buf[0] = (uint8_t)sizeof buf;
    buf[1] = 0;
    memcpy(buf + 2, nm, sizeof nm);
    struct mp_arena a = {0};
    struct mp_rop_buf b;
    CHECK_EQ(roundtrip(buf, sizeof buf, true, NULL, &a, &b, false), 0);
    CHECK_EQ(b.n, 3);
    if (b.n == 3) {
        const struct mp_rop_rsp_Notify *n0 = b.rops[0].v, *n1 = b.rops[1].v;
        CHECK_EQ(n0->NotificationHandle, 0x11);
        CHECK_EQ(n0->NotificationData.MessageId, 0x0200000000000001ull);
        CHECK(n0->NotificationData.MessageClass.n == 8);
        CHECK_EQ(n1->NotificationData.TableEventType, 3);
        CHECK_EQ(n1->NotificationData.TableRowDataSize, 3);
        CHECK_EQ(b.rops[2].rop_id, MP_ROP_Pending);
        char *js = json_of_buf(&b);
        CHECK(strstr(js, "\"MessageClass\":\"IPM.Note\"") != NULL);
        free(js);
    }
    /* an unmodelled notification type: opaque to the end, bytes kept */
    buf[2 + 7] = 0x04; /* NotificationFlags 0x0400 (extended) */
    buf[2 + 6] = 0x00;
    CHECK_EQ(roundtrip(buf, sizeof buf, true, NULL, &a, &b, true), 0);
    CHECK(b.n == 1 && b.rops[0].opaque);
    mp_arena_free(&a);
}

/* Example request buffers printed in Microsoft's specifications (an
 * independent source): MS-OXCPRPT 4.x RopSetProperties (two Unicode
 * properties; PropertyValueSize counts PropertyValueCount too) and
 * MS-OXCMSG 4.8.1 RopSaveChangesMessage. */
static void test_spec_examples(void)
{
    static const uint8_t setprops[] = {
        0x0A, 0x00, 0x00, 0x24, 0x00, 0x02, 0x00, 0x1F, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x1F,
        0x00, 0x1D, 0x0E, 0x48, 0x00, 0x65, 0x00, 0x6C, 0x00, 0x6C, 0x00, 0x6F, 0x00, 0x20,
        0x00, 0x57, 0x00, 0x6F, 0x00, 0x72, 0x00, 0x6C, 0x00, 0x64, 0x00, 0x00, 0x00};
    static const uint8_t savechanges[] = {0x0c, 0x00, 0x00, 0x01, 0x0a};
    uint8_t buf[128];
    size_t n = 2;
    memcpy(buf + n, setprops, sizeof setprops);
    n += sizeof setprops;
    memcpy(buf + n, savechanges, sizeof savechanges);
    n += sizeof savechanges;
    buf[0] = (uint8_t)n;
    buf[1] = 0;
    memset(buf + n, 0xFF, 8); /* two handles */
    n += 8;
    struct mp_arena a = {0};
    struct mp_rop_buf b;
    CHECK_EQ(roundtrip(buf, n, false, NULL, &a, &b, false), 0);
    CHECK_EQ(b.n, 2);
    CHECK_EQ(b.nhandles, 2);
    if (b.n == 2) {
        const struct mp_rop_req_SetProperties *sp = b.rops[0].v;
        CHECK_EQ(sp->PropertyValueSize, 0x24);
        CHECK_EQ(sp->PropertyValueSize__delta, 0);
        CHECK_EQ(sp->PropertyValueCount, 2);
        CHECK_EQ(sp->PropertyValues[0].tag, 0x003D001Fu);
        CHECK_EQ(sp->PropertyValues[1].tag, 0x0E1D001Fu);
        CHECK_EQ(sp->PropertyValues[1].v.n, 22); /* "Hello World" in UTF-16 */
        const struct mp_rop_req_SaveChangesMessage *sc = b.rops[1].v;
        CHECK(sc->ResponseHandleIndex == 0 && sc->InputHandleIndex == 1 && sc->SaveFlags == 0x0A);
        char *js = json_of_buf(&b);
        CHECK(strstr(js, "\"Value\":\"Hello World\"") != NULL);
        free(js);
    }
    mp_arena_free(&a);
}

/* The server object table is reference counted (a call keeps the table of
 * its context while an EcDoDisconnect drops the session's reference), and
 * an object that leaves it is gone at once: callers copy what they keep. */
static void test_objtab_lifetime(void)
{
    struct mp_objtab *t = mp_objtab_new();
    CHECK(t != NULL);
    struct mp_object o = {.type = MP_OBJ_TABLE, .handle = 0x101, .parent = MP_OBJ_NONE};
    CHECK(mp_objtab_put(t, &o) == 0);
    static const uint32_t cols[] = {0x3001001F, 0x67480014};
    CHECK(mp_objtab_set_columns(t, 0x101, cols, 2) == 0);
    struct mp_objtab *call_ref = mp_objtab_ref(t); /* a call in flight */
    CHECK(call_ref == t);
    mp_objtab_unref(t); /* EcDoDisconnect: the session's reference */
    /* the call still reads, changes and releases in its table */
    const struct mp_object *g = mp_objtab_get(call_ref, 0x101);
    CHECK(g && g->ncolumns == 2 && g->columns[1] == 0x67480014);
    mp_objtab_del(call_ref, 0x101);
    CHECK(mp_objtab_get(call_ref, 0x101) == NULL && mp_objtab_count(call_ref) == 0);
    mp_objtab_del(call_ref, 0x101); /* twice: nothing */
    mp_objtab_del(NULL, 0x101);
    mp_objtab_unref(call_ref); /* the call ends: the table goes (ASan: no leak) */
    mp_objtab_unref(NULL);
    CHECK(mp_objtab_ref(NULL) == NULL);
    /* the cap: new objects beyond MP_OBJTAB_MAX are refused, replacing works */
    t = mp_objtab_new();
    for (uint32_t h = 0; h < MP_OBJTAB_MAX; h++) {
        o.handle = h;
        if (mp_objtab_put(t, &o))
            break;
    }
    CHECK(mp_objtab_count(t) == MP_OBJTAB_MAX);
    o.handle = MP_OBJTAB_MAX;
    CHECK(mp_objtab_put(t, &o) == -1);
    o.handle = 7;
    o.type = MP_OBJ_FOLDER;
    CHECK(mp_objtab_put(t, &o) == 0 && mp_objtab_get(t, 7)->type == MP_OBJ_FOLDER);
    mp_objtab_unref(t);
}

/* A failed RopReadStream in both forms: with DataSize (MS-OXCROPS
 * 2.2.9.2.2, Exchange, the lab) and as the header alone (gromox); the same
 * for a failed RopWriteStream and RopDeleteMessages (PartialCompletion),
 * which declare fields for failures too.  Every form decodes to its fields
 * and re-encodes byte for byte, in the middle of a buffer and at its end. */
static void test_failure_forms(void)
{
    struct mp_arena a = {0};
    /* requests: ReadStream(h1), GetPropertiesSpecific(h0, 1 tag), ReadStream(h1) */
    static const uint8_t rq[] = {0x20, 0x00, 0x2C, 0x00, 0x01, 0x00, 0x10, 0x07, 0x00, 0x00,
                                 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x1F, 0x00, 0x37, 0x00,
                                 0x2C, 0x00, 0x01, 0x00, 0x10, 0x2D, 0x00, 0x01, 0x02, 0x00,
                                 0x41, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00};
    struct mp_rop_buf bq;
    CHECK_EQ(roundtrip(rq, sizeof(rq), false, NULL, &a, &bq, false), 0);
    CHECK_EQ(bq.n, 4);
    struct mp_rop_ctx ctx = {.requests = &bq};
    /* gromox: header-only failures, in the middle and at the end */
    static const uint8_t gx[] = {0x1F, 0x00, 0x2C, 0x01, 0xB9, 0x04, 0x00, 0x00, 0x07, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x41, 0x00, 0x00, 0x00, 0x2C,
                                 0x01, 0x05, 0x40, 0x00, 0x80, 0x2D, 0x01, 0x05, 0x40, 0x00,
                                 0x80, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00};
    struct mp_rop_buf bs;
    CHECK_EQ(roundtrip(gx, sizeof(gx), true, &ctx, &a, &bs, false), 0);
    CHECK_EQ(bs.n, 4);
    if (bs.n == 4) {
        const struct mp_rop_rsp_ReadStream *r0 = bs.rops[0].v, *r2 = bs.rops[2].v;
        const struct mp_rop_rsp_WriteStream *w3 = bs.rops[3].v;
        CHECK(r0->HeaderOnly && r0->ReturnValue == 0x4B9 && r0->DataSize == 0);
        CHECK(r2->HeaderOnly && w3->HeaderOnly);
        char *js = json_of_buf(&bs);
        CHECK(strstr(js, "\"HeaderOnly\":true") != NULL);
        free(js);
    }
    /* Exchange / MS-OXCROPS: DataSize 0 and WrittenSize 0 on failure */
    static const uint8_t ex[] = {
        0x25, 0x00, 0x2C, 0x01, 0xB9, 0x04, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x41, 0x00, 0x00, 0x00, 0x2C, 0x01, 0x05, 0x40, 0x00, 0x80, 0x00, 0x00, 0x2D,
        0x01, 0x05, 0x40, 0x00, 0x80, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00};
    CHECK_EQ(roundtrip(ex, sizeof(ex), true, &ctx, &a, &bs, false), 0);
    CHECK_EQ(bs.n, 4);
    if (bs.n == 4) {
        const struct mp_rop_rsp_ReadStream *r0 = bs.rops[0].v;
        const struct mp_rop_rsp_WriteStream *w3 = bs.rops[3].v;
        CHECK(!r0->HeaderOnly && !w3->HeaderOnly && w3->WrittenSize == 0);
    }
    /* without the requests: header-only when a RopId with a response follows */
    CHECK_EQ(mp_rop_decode(&bs, gx, sizeof(gx), true, NULL, &a), MP_ROP_OK);
    CHECK(bs.n >= 2 && ((const struct mp_rop_rsp_ReadStream *)bs.rops[0].v)->HeaderOnly);
    /* DeleteMessages failure without PartialCompletion, then a success */
    static const uint8_t dq[] = {0x20, 0x00, 0x1E, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
                                 0x34, 0x12, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1E,
                                 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x34, 0x12, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00};
    CHECK_EQ(roundtrip(dq, sizeof(dq), false, NULL, &a, &bq, false), 0);
    static const uint8_t ds[] = {0x0F, 0x00, 0x1E, 0x00, 0x05, 0x40, 0x00, 0x80, 0x1E, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00};
    CHECK_EQ(roundtrip(ds, sizeof(ds), true, &ctx, &a, &bs, false), 0);
    CHECK(bs.n == 2 && ((const struct mp_rop_rsp_DeleteMessages *)bs.rops[0].v)->HeaderOnly);
    mp_arena_free(&a);
}

int main(void)
{
    test_objtab_lifetime();
    test_failure_forms();
    test_spec_examples();
    test_notify();
    test_every_rop_minimal();
    test_table();
    test_rpcext();
    test_lab_pairs();
    test_context();
    test_setprops_edit();
    test_truncation();
    static const char *const mr[] = {"RopRemoveAllRecipients", "RopModifyRecipients",
                                     "RopSetProperties", "RopSubmitMessage",
                                     "RopGetPropertiesSpecific"};
    test_outlook_stub("001_Outlook_2007_in_ModifyRecipients_comp.dat", mr, 5);
    static const char *const tb[] = {
        "RopGetContentsTable",     "RopSetColumns", "RopFindRow",
        "RopOpenFolder",           "RopOpenFolder", "RopRegisterNotification",
        "RopGetPropertiesSpecific"};
    test_outlook_stub("002_Outlook_2007_in_Tables_operations_comp.dat", tb, 7);
    TEST_DONE();
}
