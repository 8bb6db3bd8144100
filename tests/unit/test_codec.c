/* Codecs of EMSMDB/AsyncEMSMDB/NSPI/RFR calls (src/codec):
 *  - every stub captured from the lab with Impacket's clients
 *    (data/codec/<iface>-<opnum>-<in|out>-<N>.bin, see data/codec/capture.py)
 *    decodes, re-encodes byte for byte, prints valid JSON, and every
 *    truncation fails cleanly;
 *  - the stubs in the layouts Impacket uses instead of the IDL
 *    (data/codec/impacket-deviant/) are refused;
 *  - the two Outlook 2007 EcDoRpcExt2 requests of tests/data/emsmdb
 *    decode with every byte accounted for;
 *  - limits: recursion depth, element counts, strings, trailing bytes. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/arena.h"
#include "core/json.h"
#include "testlib.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* ---- a strict JSON validator (RFC 8259 grammar) ---- */
static const char *js_ws(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return s;
}
static const char *js_value(const char *s, int depth);
static const char *js_string(const char *s)
{
    if (*s++ != '"')
        return NULL;
    while (*s != '"') {
        if ((unsigned char)*s < 0x20)
            return NULL;
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (!strchr("0123456789abcdefABCDEF", s[i]) || !s[i])
                        return NULL;
                s += 5;
                continue;
            }
            if (!*s || !strchr("\"\\/bfnrt", *s))
                return NULL;
        }
        s++;
    }
    return s + 1;
}
static const char *js_value(const char *s, int depth)
{
    if (depth > 200)
        return NULL;
    s = js_ws(s);
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        int obj = *s == '{';
        s = js_ws(s + 1);
        if (*s == close)
            return s + 1;
        for (;;) {
            if (obj) {
                s = js_string(js_ws(s));
                if (!s)
                    return NULL;
                s = js_ws(s);
                if (*s++ != ':')
                    return NULL;
            }
            s = js_value(s, depth + 1);
            if (!s)
                return NULL;
            s = js_ws(s);
            if (*s == ',') {
                s++;
                continue;
            }
            if (*s == close)
                return s + 1;
            return NULL;
        }
    }
    if (*s == '"')
        return js_string(s);
    if (!strncmp(s, "true", 4))
        return s + 4;
    if (!strncmp(s, "false", 5))
        return s + 5;
    if (!strncmp(s, "null", 4))
        return s + 4;
    const char *b = s;
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return NULL;
    return s > b ? s : NULL;
}
static int json_valid(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    const char *e = js_value(s, 0);
    int ok = e && *js_ws(e) == 0 && strlen(s) == n;
    free(s);
    return ok;
}

/* Decodes, re-encodes, compares, prints; 0 ok, -1 decode failed, -2 mismatch. */
static int roundtrip(const struct mp_call_codec *cc, int out, const uint8_t *p, size_t n,
                     struct mp_buf *json, const char *what)
{
    struct mp_arena a;
    mp_arena_init(&a);
    size_t sz = out ? cc->out_size : cc->in_size;
    void *v = calloc(1, sz), *v2 = calloc(1, sz);
    int rc = 0;
    struct mp_buf b = {0}, b2 = {0};
    struct mp_ndr_wire wire;
    if ((out ? cc->pull_out_w : cc->pull_in_w)(p, n, v, &a, &wire)) {
        rc = -1;
        goto done;
    }
    if ((out ? cc->push_out_w : cc->push_in_w)(&b, v, &wire) || b.len != n ||
        (n && memcmp(b.data, p, n))) {
        fprintf(stderr, "%s: re-encoding differs (%zu vs %zu bytes)\n", what, b.len, n);
        for (size_t i = 0; i < n && i < b.len; i++)
            if (b.data[i] != p[i]) {
                fprintf(stderr, "  first difference at %zu: %02x vs %02x\n", i, b.data[i], p[i]);
                break;
            }
        rc = -2;
        goto done;
    }
    /* the canonical encoding (no wire details) decodes to the same JSON */
    if ((out ? cc->push_out : cc->push_in)(&b2, v) ||
        (out ? cc->pull_out : cc->pull_in)(b2.data ? b2.data : (const uint8_t *)"", b2.len, v2,
                                           &a)) {
        fprintf(stderr, "%s: canonical re-encoding does not decode\n", what);
        rc = -2;
        goto done;
    }
    struct mp_json j, j2;
    struct mp_buf o2 = {0};
    mp_json_init(&j, json);
    (out ? cc->print_out : cc->print_in)(&j, v);
    mp_json_init(&j2, &o2);
    (out ? cc->print_out : cc->print_in)(&j2, v2);
    if (j.err || !json_valid(json->data, json->len)) {
        fprintf(stderr, "%s: invalid JSON\n", what);
        rc = -2;
    } else if (o2.len != json->len || memcmp(o2.data, json->data, o2.len)) {
        fprintf(stderr, "%s: canonical re-encoding decodes differently\n", what);
        rc = -2;
    }
    mp_buf_free(&o2);
done:
    mp_buf_free(&b);
    mp_buf_free(&b2);
    free(v);
    free(v2);
    mp_arena_free(&a);
    return rc;
}

static const struct mp_call_codec *codec_of(const char *iface, int op)
{
    return mp_codec_iface_call(mp_codec_iface_lookup(iface), (uint16_t)op);
}

/* Every strict prefix that cuts real data must fail (and not crash). */
static int truncations_fail(const struct mp_call_codec *cc, int out, const uint8_t *p, size_t n)
{
    struct mp_arena a;
    mp_arena_init(&a);
    void *v = calloc(1, out ? cc->out_size : cc->in_size);
    size_t pad = 0;
    struct mp_ndr_wire w;
    if (!(out ? cc->pull_out_w : cc->pull_in_w)(p, n, v, &a, &w))
        pad = w.trailing_pad;
    int bad = 0;
    for (size_t k = 0; k + pad < n; k++) {
        uint8_t *q = malloc(k ? k : 1); /* exact-size copies: ASan sees over-reads */
        memcpy(q, p, k);
        mp_arena_reset(&a);
        if (!(out ? cc->pull_out : cc->pull_in)(q, k, v, &a))
            bad++;
        free(q);
    }
    free(v);
    mp_arena_free(&a);
    return bad;
}

static void test_captured(void)
{
    DIR *d = opendir("data/codec");
    CHECK(d != NULL);
    if (!d)
        return;
    struct dirent *e;
    int files = 0, ok = 0;
    int seen_op[4][32] = {{0}};
    while ((e = readdir(d))) {
        char iface[32], dir[8];
        int op, num;
        if (sscanf(e->d_name, "%31[a-z]-%d-%7[a-z]-%d.bin", iface, &op, dir, &num) != 4)
            continue;
        char path[512];
        snprintf(path, sizeof path, "data/codec/%s", e->d_name);
        size_t n;
        uint8_t *p = slurp(path, &n);
        CHECK(p != NULL);
        if (!p)
            continue;
        files++;
        const struct mp_call_codec *cc = codec_of(iface, op);
        CHECK(cc != NULL);
        int out = !strcmp(dir, "out");
        struct mp_buf json = {0};
        int rc = cc ? roundtrip(cc, out, p, n, &json, e->d_name) : -1;
        if (rc)
            fprintf(stderr, "%s: round trip failed (%d)\n", e->d_name, rc);
        CHECK_EQ(rc, 0);
        ok += rc == 0;
        int bad = cc ? truncations_fail(cc, out, p, n) : 1;
        if (bad)
            fprintf(stderr, "%s: %d truncations decoded\n", e->d_name, bad);
        CHECK_EQ(bad, 0);
        int ifx = !strcmp(iface, "nspi")     ? 0
                  : !strcmp(iface, "emsmdb") ? 1
                  : !strcmp(iface, "rfr")    ? 2
                                             : 3;
        if (op < 32)
            seen_op[ifx][op] |= 1 << out;
        mp_buf_free(&json);
        free(p);
    }
    closedir(d);
    printf("captured stubs: %d files, %d round trips\n", files, ok);
    CHECK(files >= 70);
    /* the calls the brief lists all have both directions */
    static const int nspi_ops[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 16, 19, 20};
    for (size_t i = 0; i < sizeof nspi_ops / sizeof nspi_ops[0]; i++)
        CHECK_EQ(seen_op[0][nspi_ops[i]], 3);
    static const int ems_ops[] = {0, 1, 2, 6, 10, 11, 14};
    for (size_t i = 0; i < sizeof ems_ops / sizeof ems_ops[0]; i++)
        CHECK_EQ(seen_op[1][ems_ops[i]], 3);
    /* requests only (the lab does not implement them) */
    static const int nspi_in_only[] = {13, 14, 17};
    for (size_t i = 0; i < sizeof nspi_in_only / sizeof nspi_in_only[0]; i++)
        CHECK(seen_op[0][nspi_in_only[i]] & 1);
    static const int ems_in_only[] = {4, 5, 7, 8, 9};
    for (size_t i = 0; i < sizeof ems_in_only / sizeof ems_in_only[0]; i++)
        CHECK(seen_op[1][ems_in_only[i]] & 1);
    CHECK_EQ(seen_op[2][0], 3);
    CHECK_EQ(seen_op[2][1], 3);
    CHECK_EQ(seen_op[3][0], 3);
}

static void test_impacket_deviant(void)
{
    /* Impacket's NspiGetProps/NspiGetSpecialTable send pStat as a unique
     * pointer, its NspiSeekEntries passes lpETable/pPropTags inline, its
     * NspiGetIDsFromNames sends pNames as a varying array of structures
     * (and its NDR engine writes arrays of pointers without the elements'
     * referent ids): the codec follows MS-OXNSPI and refuses the requests.
     * The responses follow the IDL and decode. */
    DIR *d = opendir("data/codec/impacket-deviant");
    CHECK(d != NULL);
    if (!d)
        return;
    struct dirent *e;
    int n_in = 0;
    while ((e = readdir(d))) {
        char iface[32], dir[8];
        int op, num;
        if (sscanf(e->d_name, "%31[a-z]-%d-%7[a-z]-%d.bin", iface, &op, dir, &num) != 4)
            continue;
        char path[512];
        snprintf(path, sizeof path, "data/codec/impacket-deviant/%s", e->d_name);
        size_t n;
        uint8_t *p = slurp(path, &n);
        const struct mp_call_codec *cc = codec_of(iface, op);
        struct mp_buf json = {0};
        int out = !strcmp(dir, "out");
        int rc = roundtrip(cc, out, p, n, &json, e->d_name);
        if (out) {
            CHECK_EQ(rc, 0);
        } else {
            CHECK_EQ(rc, -1);
            n_in++;
        }
        mp_buf_free(&json);
        free(p);
    }
    closedir(d);
    CHECK_EQ(n_in, 5);
}

static void test_outlook(void)
{
    static const char *const names[] = {"001_Outlook_2007_in_ModifyRecipients_comp.dat",
                                        "002_Outlook_2007_in_Tables_operations_comp.dat"};
    const struct mp_call_codec *cc = codec_of("emsmdb", 11);
    CHECK(cc && !strcmp(cc->name, "EcDoRpcExt2"));
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/emsmdb/%s", TESTDATA, names[i]);
        size_t n;
        uint8_t *p = slurp(path, &n);
        CHECK(p != NULL);
        if (!p)
            continue;
        struct mp_arena a;
        mp_arena_init(&a);
        struct emsmdb_EcDoRpcExt2_in r;
        struct mp_ndr_wire w;
        CHECK_EQ(cc->pull_in_w(p, n, &r, &a, &w), 0);
        /* every byte: no trailing padding; handle 20, pulFlags, rgbIn (max_count +
         * cbIn bytes), pad to 4, cbIn, pcbOut, rgbAuxIn (max_count + bytes), pad,
         * cbAuxIn, pcbAuxOut */
        CHECK_EQ(w.trailing_pad, 0);
        size_t expect = 20 + 4 + 4 + r.cbIn;
        expect = (expect + 3) & ~(size_t)3;
        expect += 4 + 4 + 4 + r.cbAuxIn;
        expect = (expect + 3) & ~(size_t)3;
        expect += 4 + 4;
        CHECK_EQ(expect, n);
        CHECK(r.cbIn >= 8 && r.rgbIn[2] == 0x05 && r.rgbIn[3] == 0);  /* Compressed|Last */
        CHECK_EQ((size_t)(r.rgbIn[4] | r.rgbIn[5] << 8) + 8, r.cbIn); /* Size covers it all */
        CHECK(r.cbAuxIn >= 8 && r.rgbAuxIn[2] == 0x06);               /* XorMagic|Last */
        CHECK_EQ((size_t)(r.rgbAuxIn[4] | r.rgbAuxIn[5] << 8) + 8, r.cbAuxIn);
        struct mp_buf json = {0};
        CHECK_EQ(roundtrip(cc, 0, p, n, &json, names[i]), 0);
        CHECK_EQ(truncations_fail(cc, 0, p, n), 0);
        mp_buf_free(&json);
        mp_arena_free(&a);
        free(p);
    }
}

/* ---- hand-built stubs: limits ---- */
static void put32(struct mp_buf *b, uint32_t v)
{
    uint8_t q[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    mp_buf_append(b, q, 4);
}

/* NspiGetMatches request whose Filter is `depth` nested RES_NOT around an exist. */
static void getmatches_not_chain(struct mp_buf *b, int depth)
{
    uint8_t h[20] = {0};
    mp_buf_append(b, h, 20); /* hRpc */
    put32(b, 0);             /* Reserved1 */
    for (int i = 0; i < 9; i++)
        put32(b, 0);   /* STAT */
    put32(b, 0);       /* pReserved NULL */
    put32(b, 0);       /* Reserved2 */
    put32(b, 0x20000); /* Filter */
    for (int i = 0; i < depth; i++) {
        put32(b, 2);                         /* rt */
        put32(b, 2);                         /* discriminant */
        put32(b, 0x20004 + 4 * (uint32_t)i); /* lpRes */
    }
    put32(b, 8);
    put32(b, 8);
    put32(b, 0);
    put32(b, 0x3001001f);
    put32(b, 0);
    put32(b, 0); /* lpPropName */
    put32(b, 50);
    put32(b, 0); /* pPropTags */
}

static void test_limits(void)
{
    const struct mp_call_codec *gm = codec_of("nspi", 5);
    struct mp_arena a;
    mp_arena_init(&a);
    struct nspi_NspiGetMatches_in r;
    struct mp_ndr_wire w;
    struct mp_buf b = {0};
    getmatches_not_chain(&b, 5);
    CHECK_EQ(gm->pull_in_w(b.data, b.len, &r, &a, &w), 0);
    CHECK(r.Filter && r.Filter->rt == 2 && r.Filter->res.resNot.lpRes->rt == 2);
    struct mp_buf b2 = {0};
    CHECK_EQ(gm->push_in_w(&b2, &r, &w), 0);
    CHECK(b2.len == b.len && !memcmp(b2.data, b.data, b.len));
    mp_buf_free(&b2);
    mp_buf_free(&b);
    getmatches_not_chain(&b, 40); /* over MP_CODEC_MAX_DEPTH pointers */
    CHECK_EQ(gm->pull_in(b.data, b.len, &r, &a), -1);
    mp_buf_free(&b);
    /* trailing bytes: zero padding to a multiple of 8 is fine, nothing else */
    getmatches_not_chain(&b, 1);
    uint8_t z[8] = {0};
    CHECK_EQ(b.len % 8, 4);
    mp_buf_append(&b, z, 4);
    CHECK_EQ(gm->pull_in_w(b.data, b.len, &r, &a, &w), 0);
    CHECK_EQ(w.trailing_pad, 4);
    b.data[b.len - 1] = 1;
    CHECK_EQ(gm->pull_in(b.data, b.len, &r, &a), -1);
    b.data[b.len - 1] = 0;
    mp_buf_append(&b, z, 4);
    CHECK_EQ(gm->pull_in(b.data, b.len, &r, &a), -1);
    mp_buf_free(&b);

    /* huge counts are refused before allocating: QueryRows response with cRows 200000 */
    const struct mp_call_codec *qr = codec_of("nspi", 3);
    struct nspi_NspiQueryRows_out o;
    for (int i = 0; i < 9; i++)
        put32(&b, 0);
    put32(&b, 0x20000);
    put32(&b, 200000); /* max_count */
    put32(&b, 200000); /* cRows */
    CHECK_EQ(qr->pull_out(b.data, b.len, &o, &a), -1);
    mp_buf_free(&b);
    /* cRows within range but more than the stub could hold */
    for (int i = 0; i < 9; i++)
        put32(&b, 0);
    put32(&b, 0x20000);
    put32(&b, 90000);
    put32(&b, 90000);
    put32(&b, 0);
    CHECK_EQ(qr->pull_out(b.data, b.len, &o, &a), -1);
    mp_buf_free(&b);
    /* max_count disagreeing with cRows */
    for (int i = 0; i < 9; i++)
        put32(&b, 0);
    put32(&b, 0x20000);
    put32(&b, 1);
    put32(&b, 0);
    put32(&b, 0);
    CHECK_EQ(qr->pull_out(b.data, b.len, &o, &a), -1);
    mp_buf_free(&b);

    /* strings: missing terminator, embedded NUL, offset != 0 are refused */
    const struct mp_call_codec *fq = codec_of("rfr", 1);
    struct rfr_RfrGetFQDNFromServerDN_in f;
    static const char *const bad[] = {"abcdefghijkl", "abcde\0ghij\0", NULL};
    for (int i = 0; i < 3; i++) {
        put32(&b, 0);
        put32(&b, 12);
        put32(&b, 12);
        put32(&b, i == 2 ? 1 : 0);
        put32(&b, 12 - (i == 2));
        mp_buf_append(&b, i < 2 ? bad[i] : "abcdefghijk", 12 - (i == 2));
        CHECK_EQ(fq->pull_in(b.data, b.len, &f, &a), -1);
        mp_buf_free(&b);
    }
    put32(&b, 0);
    put32(&b, 12);
    put32(&b, 12);
    put32(&b, 0);
    put32(&b, 12);
    mp_buf_append(&b, "abcdefghijk", 12);
    CHECK_EQ(fq->pull_in(b.data, b.len, &f, &a), 0);
    CHECK(!strcmp(f.szMailboxServerDN, "abcdefghijk") && f.cbMailboxServerDN == 12);
    /* [range(10,1024)] on cbMailboxServerDN */
    b.data[4] = 9;
    CHECK_EQ(fq->pull_in(b.data, b.len, &f, &a), -1);
    mp_buf_free(&b);
    mp_arena_free(&a);
}

/* Structures built by code (no wire details) encode canonically and decode back. */
static void test_build(void)
{
    const struct mp_call_codec *cc = codec_of("nspi", 9);
    struct nspi_NspiGetProps_out o;
    memset(&o, 0, sizeof o);
    struct nspi_PropertyValue_r pv[3];
    memset(pv, 0, sizeof pv);
    pv[0].ulPropTag = 0x3001001e;
    pv[0].Value.lpszA = "Alice \"A\" Anders\n";
    pv[1].ulPropTag = 0x3001001f;
    static const uint16_t w[] = {0x41, 0xe9, 0xd83d, 0xde00, 0};
    pv[1].Value.lpszW = (uint16_t *)w;
    pv[2].ulPropTag = 0x8170101e;
    char *mv[] = {"ncacn_ip_tcp:x", "netbios:x"};
    pv[2].Value.MVszA.cValues = 2;
    pv[2].Value.MVszA.lppszA = mv;
    struct nspi_PropertyRow_r row = {0, 3, pv};
    o.ppRows = &row;
    o.result = 0x00040380;
    struct mp_buf b = {0};
    CHECK_EQ(cc->push_out(&b, &o), 0);
    /* MIDL-style referent ids */
    CHECK(b.len > 8 && b.data[0] == 0 && b.data[2] == 2);
    struct mp_arena a;
    mp_arena_init(&a);
    struct nspi_NspiGetProps_out o2;
    CHECK_EQ(cc->pull_out(b.data, b.len, &o2, &a), 0);
    CHECK(o2.ppRows && o2.ppRows->cValues == 3);
    CHECK(!strcmp(o2.ppRows->lpProps[0].Value.lpszA, "Alice \"A\" Anders\n"));
    CHECK(o2.ppRows->lpProps[1].Value.lpszW[2] == 0xd83d);
    CHECK(!strcmp(o2.ppRows->lpProps[2].Value.MVszA.lppszA[1], "netbios:x"));
    CHECK_EQ(o2.result, 0x00040380u);
    struct mp_buf js = {0};
    struct mp_json j;
    mp_json_init(&j, &js);
    cc->print_out(&j, &o2);
    CHECK(json_valid(js.data, js.len));
    CHECK(memmem(js.data, js.len, "\"Alice \\\"A\\\" Anders\\u000a\"", 26) != NULL);
    CHECK(memmem(js.data, js.len, "\"A\xc3\xa9\xf0\x9f\x98\x80\"", 9) != NULL);
    mp_buf_free(&js);
    /* an unknown property type cannot be encoded or decoded */
    pv[0].ulPropTag = 0x30010099;
    struct mp_buf b3 = {0};
    CHECK_EQ(cc->push_out(&b3, &o), -1);
    CHECK_EQ(b3.len, 0);
    b.data[16 + 4] = 0x99; /* first ulPropTag's type in the stub */
    CHECK_EQ(cc->pull_out(b.data, b.len, &o2, &a), -1);
    mp_buf_free(&b3);
    mp_buf_free(&b);
    mp_arena_free(&a);
}

/* NspiGetIDsFromNames request in the MS-OXNSPI layout, written out by hand:
 * [in, size_is(cPropNames)] PropertyName_r **pNames is max_count, one
 * referent id per element, then each PropertyName_r with its FlatUID_r. */
static void test_ids_from_names_layout(void)
{
    const struct mp_call_codec *cc = codec_of("nspi", 18);
    struct mp_buf b = {0};
    uint8_t h[20] = {0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    mp_buf_append(&b, h, 20);
    put32(&b, 0);       /* Reserved */
    put32(&b, 2);       /* dwFlags */
    put32(&b, 2);       /* cPropNames */
    put32(&b, 2);       /* max_count */
    put32(&b, 0x20000); /* pNames[0] */
    put32(&b, 0x20004); /* pNames[1] */
    put32(&b, 0x20008); /* [0].lpguid */
    put32(&b, 0);
    put32(&b, 0x8005);
    uint8_t g[16] = {0xdc, 0xa7, 0x40, 0xc8, 0xc0, 0x42, 0x10, 0x1a,
                     0xb4, 0xb9, 0x08, 0x00, 0x2b, 0x2f, 0xe1, 0x82};
    mp_buf_append(&b, g, 16);
    put32(&b, 0); /* [1].lpguid NULL */
    put32(&b, 0);
    put32(&b, 0x8006);
    struct mp_arena a;
    mp_arena_init(&a);
    struct nspi_NspiGetIDsFromNames_in r;
    CHECK_EQ(cc->pull_in(b.data, b.len, &r, &a), 0);
    CHECK(r.cPropNames == 2 && r.pNames[0]->lID == 0x8005 && r.pNames[1]->lpguid == NULL);
    CHECK(r.pNames[0]->lpguid && r.pNames[0]->lpguid->ab[15] == 0x82);
    /* built from scratch, it encodes to the same bytes (MIDL referent ids) */
    struct nspi_FlatUID_r guid;
    memcpy(guid.ab, g, 16);
    struct nspi_PropertyName_r n0 = {&guid, 0, 0x8005}, n1 = {NULL, 0, 0x8006};
    struct nspi_PropertyName_r *names[2] = {&n0, &n1};
    struct nspi_NspiGetIDsFromNames_in w;
    memset(&w, 0, sizeof w);
    memcpy(w.hRpc.uuid, h + 4, 16);
    w.dwFlags = 2;
    w.cPropNames = 2;
    w.pNames = names;
    struct mp_buf o = {0};
    CHECK_EQ(cc->push_in(&o, &w), 0);
    CHECK(o.len == b.len && !memcmp(o.data, b.data, b.len));
    /* cPropNames disagreeing with the array's max_count */
    b.data[28] = 3;
    CHECK_EQ(cc->pull_in(b.data, b.len, &r, &a), -1);
    /* a NULL element of a [ref] array of unique pointers is fine; the array itself is not */
    w.pNames = NULL;
    mp_buf_free(&o);
    CHECK_EQ(cc->push_in(&o, &w), -1);
    mp_buf_free(&o);
    mp_buf_free(&b);
    mp_arena_free(&a);
}

/* NspiModProps and NspiResortRestriction (no capture: the lab does not
 * implement them and Impacket lacks ModProps): encode, decode, compare. */
static void test_modprops_resort(void)
{
    const struct mp_call_codec *mp = codec_of("nspi", 11), *rr = codec_of("nspi", 6);
    struct mp_arena a;
    mp_arena_init(&a);
    struct nspi_PropertyValue_r pv[2];
    memset(pv, 0, sizeof pv);
    pv[0].ulPropTag = 0x3a08001e;
    pv[0].Value.lpszA = "+1 555";
    pv[1].ulPropTag = 0x81040102;
    uint8_t bin[3] = {1, 2, 3};
    pv[1].Value.bin.cb = 3;
    pv[1].Value.bin.lpb = bin;
    uint32_t tags[2] = {0x3a08001e, 0x81040102};
    struct nspi_PropertyTagArray_r pt = {2, tags};
    struct nspi_NspiModProps_in m;
    memset(&m, 0, sizeof m);
    m.pStat.CodePage = 1252;
    m.pPropTags = &pt;
    m.pRow.cValues = 2;
    m.pRow.lpProps = pv;
    struct mp_buf b = {0}, b2 = {0};
    CHECK_EQ(mp->push_in(&b, &m), 0);
    struct nspi_NspiModProps_in m2;
    CHECK_EQ(mp->pull_in(b.data, b.len, &m2, &a), 0);
    CHECK(m2.pPropTags && m2.pPropTags->cValues == 2 && m2.pPropTags->aulPropTag[1] == tags[1]);
    CHECK(!strcmp(m2.pRow.lpProps[0].Value.lpszA, "+1 555"));
    CHECK(m2.pRow.lpProps[1].Value.bin.cb == 3 && m2.pRow.lpProps[1].Value.bin.lpb[2] == 3);
    CHECK_EQ(mp->push_in(&b2, &m2), 0);
    CHECK(b2.len == b.len && !memcmp(b.data, b2.data, b.len));
    /* PropertyTagArray_r: max_count is cValues + 1 (size_is(cValues+1)) */
    CHECK(b.len > 20 + 4 + 36 + 8 && b.data[20 + 4 + 36 + 4] == 3);
    mp_buf_free(&b);
    mp_buf_free(&b2);
    struct nspi_NspiResortRestriction_out ro;
    memset(&ro, 0, sizeof ro);
    struct nspi_PropertyTagArray_r mids = {2, tags};
    ro.ppOutMIds = &mids; /* [in,out] T **: the top-level ref is flattened */
    CHECK_EQ(rr->push_out(&b, &ro), 0);
    struct nspi_NspiResortRestriction_out ro2;
    CHECK_EQ(rr->pull_out(b.data, b.len, &ro2, &a), 0);
    CHECK(ro2.ppOutMIds && ro2.ppOutMIds->aulPropTag[0] == tags[0]);
    mp_buf_free(&b);
    mp_arena_free(&a);
}

static void test_lookup(void)
{
    static const uint8_t nspi_uuid[16] = {0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10,
                                          0x8c, 0x59, 0x08, 0x00, 0x2b, 0x2f, 0x84, 0x26};
    const struct mp_call_codec *c = mp_codec_find(nspi_uuid, 9);
    CHECK(c && !strcmp(c->name, "NspiGetProps") && !strcmp(c->iface, "exchange_nsp"));
    CHECK(mp_codec_find(nspi_uuid, 15) == NULL);
    CHECK(mp_codec_find(nspi_uuid, 21) == NULL);
    CHECK(mp_codec_find(nspi_uuid, 20) != NULL);
    CHECK(mp_codec_iface_lookup("a4f1db00-ca47-1067-b31f-00dd010662da") ==
          mp_codec_iface_lookup("emsmdb"));
    CHECK(codec_of("emsmdb", 3) == NULL && codec_of("emsmdb", 12) == NULL);
    CHECK(codec_of("emsmdb", 7) && codec_of("emsmdb", 8) && codec_of("emsmdb", 9));
    CHECK(!strcmp(codec_of("asyncemsmdb", 0)->name, "EcDoAsyncWaitEx"));
    CHECK(mp_codec_iface_lookup("nosuch") == NULL);
    /* every interface name of every opnum matches src/dcerpc/ifaces.c */
    for (int k = 0; mp_codec_ifaces[k]; k++)
        for (uint16_t op = 0; op < mp_codec_ifaces[k]->n_calls; op++) {
            const struct mp_call_codec *x = mp_codec_iface_call(mp_codec_ifaces[k], op);
            if (x)
                CHECK(x->opnum == op && x->in_size && x->out_size);
        }
    uint8_t buf[5] = {1, 2, 3, 4, 5};
    mp_emsmdb_xor(buf, 5);
    CHECK(buf[0] == (1 ^ 0xA5) && buf[4] == (5 ^ 0xA5));
    mp_emsmdb_xor(buf, 5);
    CHECK(buf[2] == 3);
}

static void test_arena_json(void)
{
    struct mp_arena a;
    mp_arena_init(&a);
    void *p0 = mp_arena_alloc(&a, 0), *p1 = mp_arena_alloc(&a, 0);
    CHECK(p0 && p1 && p0 != p1);
    char *s = mp_arena_strdup(&a, "hello");
    CHECK(s && !strcmp(s, "hello") && ((uintptr_t)s & 15) == 0);
    void *big = mp_arena_alloc(&a, 100000);
    CHECK(big != NULL);
    CHECK(mp_arena_calloc(&a, SIZE_MAX / 2, 4) == NULL);
    a.limit = 200000;
    CHECK(mp_arena_alloc(&a, 150000) == NULL);
    mp_arena_reset(&a);
    CHECK(a.used == 0 && mp_arena_alloc(&a, 150000) != NULL);
    mp_arena_free(&a);
#if defined(__SANITIZE_ADDRESS__)
    /* the kept chunk's bytes are poisoned once reset (a reused call arena,
     * mp_call_arena): a pointer into the last call's data is reported by
     * ASan, as it was when the chunk was freed; so is the free tail */
    mp_arena_init(&a);
    uint8_t *old = mp_arena_alloc(&a, 100);
    CHECK(old && !__asan_address_is_poisoned(old + 99));
    CHECK(__asan_address_is_poisoned(old + 112)); /* past the allocation: the tail */
    mp_arena_reset(&a);
    CHECK(__asan_address_is_poisoned(old));
    uint8_t *again = mp_arena_memdup(&a, "abc", 3);
    CHECK(again == old && !__asan_address_is_poisoned(again + 15));
    CHECK(__asan_address_is_poisoned(again + 16));
    mp_arena_free(&a);
#endif

    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    mp_json_obj_begin(&j);
    mp_json_key(&j, "a");
    mp_json_arr_begin(&j);
    mp_json_u64(&j, 1);
    mp_json_i64(&j, -2);
    mp_json_bool(&j, true);
    mp_json_null(&j);
    mp_json_str(&j, "x\x01\"\\\xe9");
    mp_json_hex(&j, (const uint8_t *)"\x00\xff", 2);
    mp_json_arr_end(&j);
    mp_json_key(&j, "b");
    mp_json_obj_begin(&j);
    mp_json_obj_end(&j);
    mp_json_obj_end(&j);
    static const char want[] =
        "{\"a\":[1,-2,true,null,\"x\\u0001\\\"\\\\\xc3\xa9\",\"00ff\"],\"b\":{}}";
    CHECK(!j.err && b.len == strlen(want) && !memcmp(b.data, want, b.len));
    CHECK(json_valid(b.data, b.len));
    mp_buf_free(&b);
}

int main(void)
{
    test_arena_json();
    test_lookup();
    test_build();
    test_ids_from_names_layout();
    test_modprops_resort();
    test_limits();
    test_captured();
    test_impacket_deviant();
    test_outlook();
    TEST_DONE();
}
