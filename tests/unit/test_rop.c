/* Unit tests for the EMSMDB payload layer (src/rop): RPC_HEADER_EXT chains,
 * auxiliary buffers and the generated ROP codec.
 *
 * Golden inputs: the two Outlook 2007 EcDoRpcExt2 request stubs of
 * shared/testdata/emsmdb (made by Outlook, not by us), and ROP buffers
 * recorded from the Exchange lab (tests/unit/data/rop, see capture.py). */
#include "testlib.h"

#include <dirent.h>
#include <stdint.h>

#include "rop/aux.h"
#include "rop/rop.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"

static const char *shared_dir(void)
{
    const char *d = getenv("MP_SHARED");
    return d ? d : "../../../shared/testdata";
}

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
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static char *json_of_buf(const struct mp_rop_buf *b)
{
    struct mp_buf o = {0};
    struct mp_rj j;
    mp_rj_init(&j, &o);
    mp_rop_print(&j, b);
    mp_buf_append(&o, "", 1);
    return (char *)o.data;
}

/* Decode, check every ROP is named and decoded, re-encode, compare. */
static int roundtrip(const uint8_t *p, size_t n, bool response, const struct mp_rop_ctx *ctx,
                     struct mp_rop_arena *a, struct mp_rop_buf *b, bool allow_opaque)
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
    snprintf(path, sizeof path, "%s/emsmdb/%s", shared_dir(), name);
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

    struct mp_rop_arena a = {0};
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
    struct mp_rj j;
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
    mp_rop_arena_free(&a);
    free(d);
}

int main(void)
{
    static const char *const mr[] = {"RopRemoveAllRecipients", "RopModifyRecipients",
                                     "RopSetProperties", "RopSubmitMessage",
                                     "RopGetPropertiesSpecific"};
    test_outlook_stub("001_Outlook_2007_in_ModifyRecipients_comp.dat", mr, 5);
    static const char *const tb[] = {"RopGetContentsTable", "RopSetColumns",
                                     "RopFindRow",          "RopOpenFolder",
                                     "RopOpenFolder",       "RopRegisterNotification",
                                     "RopGetPropertiesSpecific"};
    test_outlook_stub("002_Outlook_2007_in_Tables_operations_comp.dat", tb, 7);
    TEST_DONE();
}
