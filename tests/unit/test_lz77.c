/* Unit tests for the MS-XCA Plain LZ77 codec (src/xca/lz77.c).
 * Test vectors: tests/data/xca-plain (Windows' own encoder; see
 * tests/data/README.md). */
#include "testlib.h"
#include "xca/lz77.h"

#include <stdint.h>

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

/* The 60 inputs; the 10 without a Windows twin are marked 0. */
static const struct {
    const char *name;
    int twin;
} vectors[] = {
    {"27826-8.txt", 1},
    {"5d049b4cb1bd933f5e8ex19", 1},
    {"638e61e96d54279981c3x5", 1},
    {"64k-minus-one-zeros", 1},
    {"64k-plus-one-zeros", 1},
    {"64k-zeros", 1},
    {"96f696a4e5ce56c61a3dx10", 1},
    {"9e0b6a12febf38e98f13", 1},
    {"abc-times-101", 1},
    {"abc-times-105", 1},
    {"abc-times-200", 1},
    {"and_rand", 0},
    {"and_rand-128k+", 0},
    {"b63289ccc7f218c0d56b", 1},
    {"beta-variate1-128k+", 1},
    {"beta-variate2-128k+", 0},
    {"beta-variate3-128k+", 1},
    {"decayed_alphabet_128k+", 1},
    {"decayed_alphabet_64k", 1},
    {"exp_shuffle", 0},
    {"exp_shuffle-128k+", 0},
    {"f00842317dc6d5695b02", 1},
    {"fib_shuffle", 1},
    {"fib_shuffle-128k+", 1},
    {"fuzzing-0fc2d461b56cd8103c91", 1},
    {"fuzzing-17c961778538cc10ab7c", 0},
    {"fuzzing-3591f9dc02bb00a54b60", 1},
    {"fuzzing-3ec3bca27bb9eb40c128", 1},
    {"fuzzing-80b4fa18ff5f8dd04862", 0},
    {"fuzzing-a3115a81d1ac500318f9", 1},
    {"midsummer-nights-dream.txt", 1},
    {"notes-on-the-underground.txt", 1},
    {"pg22009.txt", 1},
    {"repeating", 1},
    {"repeating-exactly-64k", 1},
    {"setup.log", 1},
    {"skewed_choices", 0},
    {"skewed_choices-128k+", 0},
    {"slow-015ddc36a71412ccc50d", 1},
    {"slow-100e9f966a7feb9ca40a", 1},
    {"slow-2a671c3cff4f1574cbab", 1},
    {"slow-33d90a24e70515b14cd0", 1},
    {"slow-49d8c05261e3f412fc72", 1},
    {"slow-50a249d2fe56873e56a0", 1},
    {"slow-63e9f0b52235fb0129fa", 1},
    {"slow-73b7f971d65908ac0095", 1},
    {"slow-8b61e3dd267908544531", 1},
    {"slow-9d1c5a079b0462986f1f", 1},
    {"slow-aa7262a821dabdcf04a6", 1},
    {"slow-b8a91d142b0d2af7f5ca", 1},
    {"slow-c79142457734bbc8d575", 1},
    {"slow-d736544545b90d83fe75", 1},
    {"slow-e3b9bdfaed7d1a606fdb", 1},
    {"slow-f3f1c02a9d006e5e1703", 1},
    {"square_series", 0},
    {"square_series-128k+", 0},
    {"trigram_128k+", 1},
    {"trigram_64k", 1},
    {"trigram_sum_128k+", 1},
    {"trigram_sum_64k", 1},
};
#define NVEC (sizeof vectors / sizeof vectors[0])

/* Compress, check the framing, decompress, compare.  Returns the size. */
static ssize_t round_trip(const uint8_t *data, size_t len)
{
    size_t cap = mp_lz77_compress_bound(len);
    uint8_t *c = malloc(cap);
    uint8_t *d = malloc(len + 1);
    ssize_t r = mp_lz77_compress(data, len, c, cap);
    CHECK(r >= 4);
    if (r >= 4) {
        /* The stream ends with a 1-padded flag word: its last bit is 1. */
        CHECK_EQ(mp_lz77_decompress(c, (size_t)r, d, len), (ssize_t)len);
        CHECK(memcmp(d, data, len) == 0);
        /* Exactly the right out_cap is enough; one byte less is not. */
        if (len)
            CHECK_EQ(mp_lz77_decompress(c, (size_t)r, d, len - 1), -1);
    }
    free(c);
    free(d);
    return r;
}

static void test_vectors(void)
{
    char path[4096];
    size_t win_total = 0, our_total = 0, nwin = 0, nread = 0;
    for (size_t i = 0; i < NVEC; i++) {
        size_t rlen = 0, wlen = 0;
        snprintf(path, sizeof path, "%s/xca-plain/decompressed/%s.decomp", TESTDATA,
                 vectors[i].name);
        uint8_t *raw = slurp(path, &rlen);
        CHECK(raw != NULL);
        if (!raw) {
            fprintf(stderr, "missing %s\n", path);
            continue;
        }
        nread++;
        snprintf(path, sizeof path, "%s/xca-plain/compressed-plain/%s.lzplain", TESTDATA,
                 vectors[i].name);
        uint8_t *win = slurp(path, &wlen);
        CHECK_EQ(win != NULL, vectors[i].twin != 0);

        /* 1. Windows-made stream decompresses byte for byte. */
        if (win) {
            nwin++;
            uint8_t *d = malloc(rlen + 64);
            ssize_t r = mp_lz77_decompress(win, wlen, d, rlen + 64);
            CHECK_EQ(r, (ssize_t)rlen);
            if (r != (ssize_t)rlen || memcmp(d, raw, rlen))
                fprintf(stderr, "windows stream %s: decompression mismatch\n", vectors[i].name);
            CHECK(r == (ssize_t)rlen && memcmp(d, raw, rlen) == 0);
            /* also with an exact-size buffer */
            CHECK_EQ(mp_lz77_decompress(win, wlen, d, rlen), (ssize_t)rlen);
            CHECK(memcmp(d, raw, rlen) == 0);
            free(d);
        }

        /* 2. Round trip. */
        ssize_t c = round_trip(raw, rlen);
        if (win && c > 0) {
            win_total += wlen;
            our_total += (size_t)c;
        }

        /* 3. "Not worth it" exactly for the inputs Windows left alone. */
        uint8_t *o = malloc(rlen + 16);
        ssize_t w = mp_lz77_compress_if_worth(raw, rlen, o, rlen + 16);
        if (vectors[i].twin) {
            CHECK(w > 0 && (size_t)w < rlen);
            CHECK_EQ(w, c);
        } else {
            CHECK_EQ(w, MP_LZ77_NOT_WORTH);
            if (w != MP_LZ77_NOT_WORTH)
                fprintf(stderr, "%s: expected not worth it, got %zd\n", vectors[i].name, w);
        }
        free(o);
        free(raw);
        free(win);
    }
    CHECK_EQ(nread, NVEC);
    CHECK_EQ(nwin, (size_t)49);
    printf("ratio: ours %zu / windows %zu = %.4f (limit 0.96)\n", our_total, win_total,
           win_total ? (double)our_total / (double)win_total : 0.0);
    CHECK(win_total > 0 && (double)our_total <= 0.96 * (double)win_total);
}

static void test_edges(void)
{
    uint8_t out[256], dec[256];
    /* empty input: a lone all-ones flag word */
    CHECK_EQ(mp_lz77_compress((const uint8_t *)"", 0, out, sizeof out), 4);
    CHECK(memcmp(out, "\xff\xff\xff\xff", 4) == 0);
    CHECK_EQ(mp_lz77_decompress(out, 4, dec, 0), 0);
    CHECK_EQ(mp_lz77_decompress(out, 0, dec, 0), 0);
    CHECK_EQ(mp_lz77_compress_if_worth((const uint8_t *)"", 0, out, sizeof out), 0);
    CHECK_EQ(mp_lz77_compress_if_worth((const uint8_t *)"x", 1, out, sizeof out), 0);

    /* 32 literals fill a group; the encoder reserves the next flag word,
     * which ends up 0xFFFFFFFF. */
    uint8_t lit[32];
    for (int i = 0; i < 32; i++)
        lit[i] = (uint8_t)(i * 7 + 1);
    CHECK_EQ(mp_lz77_compress(lit, 32, out, sizeof out), 40);
    CHECK(memcmp(out, "\0\0\0\0", 4) == 0);
    CHECK(memcmp(out + 36, "\xff\xff\xff\xff", 4) == 0);
    CHECK_EQ(mp_lz77_decompress(out, 40, dec, 32), 32);
    CHECK(memcmp(dec, lit, 32) == 0);
    CHECK_EQ(mp_lz77_compress_bound(32), (size_t)40);

    /* "abc" then a match: the Windows layout from MS-XCA's example */
    const uint8_t abc[] = "abcabcabcabcabcabcabcabcabcabcabcabcabcabcabc"; /* 45 */
    ssize_t r = mp_lz77_compress(abc, 45, out, sizeof out);
    CHECK(r > 0);
    /* flags: 0,0,0,1 then padding 1s -> 0x1FFFFFFF; match (off 3, len 42):
     * u16 = (2 << 3) | 7, nibble 15, byte 42 - 3 - 22 = 17. */
    const uint8_t want[] = {0xff, 0xff, 0xff, 0x1f, 'a', 'b', 'c', 0x17, 0x00, 0x0f, 17};
    CHECK_EQ(r, (ssize_t)sizeof want);
    CHECK(memcmp(out, want, sizeof want) == 0);

    /* out_cap too small: every cap below the size fails cleanly, and the
     * size itself succeeds with identical bytes. */
    uint8_t src[200];
    for (int i = 0; i < 200; i++)
        src[i] = (uint8_t)((i % 11) * 3 + (i / 60) + (i % 7 == 0));
    uint8_t ref[300];
    ssize_t full = mp_lz77_compress(src, 200, ref, sizeof ref);
    CHECK(full > 0 && full < 180);
    printf("200-byte sample compresses to %zd\n", full);
    int bad = 0;
    for (ssize_t cap = 0; cap < full; cap++)
        bad += mp_lz77_compress(src, 200, out, (size_t)cap) != -1;
    CHECK_EQ(bad, 0);
    CHECK_EQ(mp_lz77_compress(src, 200, out, (size_t)full), full);
    CHECK(memcmp(out, ref, (size_t)full) == 0);
    /* if_worth with a small caller buffer: -1, not a false "not worth" */
    CHECK_EQ(mp_lz77_compress_if_worth(src, 200, out, (size_t)full - 1), -1);
    CHECK_EQ(mp_lz77_compress_if_worth(src, 200, out, 200), full);

    /* Malformed streams */
    CHECK_EQ(mp_lz77_decompress((const uint8_t *)"\0\0", 2, dec, sizeof dec), -1);
    /* match with offset before the start of the output */
    const uint8_t badoff[] = {0xff, 0xff, 0xff, 0x7f, 'a', 0x08, 0x00};
    CHECK_EQ(mp_lz77_decompress(badoff, sizeof badoff, dec, sizeof dec), -1);
    /* truncated match */
    const uint8_t trunc[] = {0xff, 0xff, 0xff, 0x7f, 'a', 0x00};
    CHECK_EQ(mp_lz77_decompress(trunc, sizeof trunc, dec, sizeof dec), -1);
    /* long-length u16 below 22 is invalid */
    const uint8_t short16[] = {0xff, 0xff, 0xff, 0x7f, 'a', 0x07, 0x00, 0x0f, 0xff, 0x05, 0x00};
    CHECK_EQ(mp_lz77_decompress(short16, sizeof short16, dec, sizeof dec), -1);
    /* u32 length form: 'a' then 100 more 'a' as u16 0, u32 97 */
    const uint8_t long32[] = {0xff, 0xff, 0xff, 0x7f, 'a', 0x07, 0x00, 0x0f,
                              0xff, 0x00, 0x00, 97,   0,   0,    0};
    CHECK_EQ(mp_lz77_decompress(long32, sizeof long32, dec, sizeof dec), 101);
    CHECK(dec[0] == 'a' && dec[100] == 'a');
    CHECK_EQ(mp_lz77_decompress(long32, sizeof long32, dec, 100), -1);
    /* shared nibble: two matches of length 10+5 and 10+9 share one byte
     * (low nibble for the first, high nibble for the second). */
    const uint8_t nib[] = {0xff, 0xff, 0xff, 0x7f, 'x', 0x07, 0x00, 0x95, 0x07, 0x00};
    CHECK_EQ(mp_lz77_decompress(nib, sizeof nib, dec, sizeof dec), 1 + 15 + 19);
    for (int i = 0; i < 35; i++)
        bad += dec[i] != 'x';
    CHECK_EQ(bad, 0);
    /* Samba's 2010-era encoder padded the last flag word with 0 bits and
     * appended zero bytes: they decode as literal zeros past the end.  The
     * vector is fixed_out_old_version of test_lzxpress() in Samba's
     * lib/compression/tests/test_lzxpress_plain.c (samba-team/samba). */
    static const char tt[] = "this is a test. and this is a test too";
    const uint8_t old[] = {0x00, 0x20, 0x00, 0x04, 0x74, 0x68, 0x69, 0x73, 0x20, 0x10, 0x00, 0x61,
                           0x20, 0x74, 0x65, 0x73, 0x74, 0x2E, 0x20, 0x61, 0x6E, 0x64, 0x20, 0x9F,
                           0x00, 0x04, 0x20, 0x74, 0x6F, 0x6F, 0x00, 0x00, 0x00, 0x00};
    CHECK_EQ(mp_lz77_decompress(old, sizeof old, dec, 38), 38);
    CHECK(memcmp(dec, tt, 38) == 0);
    /* the same stream without its padding, and Samba's current encoding */
    CHECK_EQ(mp_lz77_decompress(old, sizeof old - 4, dec, 38), 38);
    const uint8_t cur[] = {0xff, 0x21, 0x00, 0x04, 0x74, 0x68, 0x69, 0x73, 0x20, 0x10,
                           0x00, 0x61, 0x20, 0x74, 0x65, 0x73, 0x74, 0x2E, 0x20, 0x61,
                           0x6E, 0x64, 0x20, 0x9F, 0x00, 0x04, 0x20, 0x74, 0x6F, 0x6F};
    CHECK_EQ(mp_lz77_decompress(cur, sizeof cur, dec, 38), 38);
    CHECK(memcmp(dec, tt, 38) == 0);
    /* with room to spare the padding is output: 42 bytes, four of them 0 */
    CHECK_EQ(mp_lz77_decompress(old, sizeof old, dec, sizeof dec), 42);
    CHECK(memcmp(dec, tt, 38) == 0 && !dec[38] && !dec[41]);
    /* every other overrun is still an error: a non-zero padding byte, */
    uint8_t bad1[sizeof old];
    memcpy(bad1, old, sizeof old);
    bad1[sizeof old - 1] = 1;
    CHECK_EQ(mp_lz77_decompress(bad1, sizeof bad1, dec, 38), -1);
    /* output too small for real data (the last 't', 'o', 'o'), */
    CHECK_EQ(mp_lz77_decompress(old, sizeof old, dec, 37), -1);
    /* a 1 bit left in the flag word (0x04002001: its last flag is a match,
     * or the end marker of a 1-padded word), */
    uint8_t bad2[sizeof old + 16];
    memcpy(bad2, old, sizeof old);
    memset(bad2 + sizeof old, 0, 16);
    bad2[0] = 0x01;
    CHECK_EQ(mp_lz77_decompress(bad2, sizeof bad2, dec, 38), -1);
    /* but zero flag words after the padded one are literals too */
    uint8_t pad2[sizeof old + 16];
    memcpy(pad2, old, sizeof old);
    memset(pad2 + sizeof old, 0, 16);
    CHECK_EQ(mp_lz77_decompress(pad2, sizeof pad2, dec, 38), 38);
    /* every truncation of a valid stream is handled without overrun */
    for (ssize_t n = 0; n < full; n++) {
        ssize_t d = mp_lz77_decompress(ref, (size_t)n, dec, 200);
        CHECK(d >= -1 && d <= 200);
    }
}

static uint64_t rng = 88172645463325252ull;
static uint32_t xr(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static void test_random(void)
{
    /* Mixed-structure random inputs of many sizes: runs, repeats at all
     * distances (including > 8192), literals. */
    size_t sizes[] = {1,  2,  3,  4,  5,   7,    8,    9,    15,   16,    31,    32,
                      33, 63, 64, 65, 100, 1000, 8191, 8192, 8193, 20000, 70000, 140000};
    int fails = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int kind = 0; kind < 4; kind++) {
            size_t n = sizes[s];
            uint8_t *b = malloc(n);
            for (size_t i = 0; i < n;) {
                uint32_t op = xr() % 8;
                if (kind == 0 || op < 3 || i < 16) {
                    b[i++] = (uint8_t)(kind == 3 ? xr() % 4 : xr());
                } else {
                    size_t dist = 1 + xr() % (op == 7 ? 20000 : (op == 6 ? 16 : 9000));
                    if (dist > i)
                        dist = i;
                    size_t l = 3 + xr() % (op == 5 ? 3000 : 40);
                    for (size_t k = 0; k < l && i < n; k++, i++)
                        b[i] = b[i - dist];
                }
            }
            fails += round_trip(b, n) < 0;
            /* decompressing garbage never overruns (ASan watches) */
            uint8_t *o = malloc(n + 1);
            ssize_t d = mp_lz77_decompress(b, n, o, n + 1);
            CHECK(d >= -1 && d <= (ssize_t)n + 1);
            free(o);
            free(b);
        }
    }
    CHECK_EQ(fails, 0);
}

/* Outlook 2007 EcDoRpcExt2 requests: the rgbIn RPC_HEADER_EXT (at offset
 * 0x1c: Version, Flags = Compressed|Last, Size, SizeActual) is followed by
 * Size bytes of LZ77 that must inflate to exactly SizeActual bytes. */
static void test_emsmdb(void)
{
    const char *names[] = {"001_Outlook_2007_in_ModifyRecipients_comp.dat",
                           "002_Outlook_2007_in_Tables_operations_comp.dat"};
    char path[4096];
    for (size_t i = 0; i < 2; i++) {
        size_t len = 0;
        snprintf(path, sizeof path, "%s/emsmdb/%s", TESTDATA, names[i]);
        uint8_t *b = slurp(path, &len);
        CHECK(b != NULL && len > 0x24);
        if (!b || len <= 0x24) {
            free(b);
            continue;
        }
        unsigned flags = b[0x1e] | b[0x1f] << 8;
        size_t size = (size_t)(b[0x20] | b[0x21] << 8);
        size_t actual = (size_t)(b[0x22] | b[0x23] << 8);
        CHECK_EQ(flags, 0x0005u);
        CHECK(0x24 + size <= len);
        uint8_t out[65536];
        ssize_t r = mp_lz77_decompress(b + 0x24, size, out, actual);
        CHECK_EQ(r, (ssize_t)actual);
        /* a ROP request buffer starts with its RopSize */
        if (r >= 2)
            CHECK((size_t)(out[0] | out[1] << 8) <= actual);
        if (r > 0) {
            ssize_t c = round_trip(out, (size_t)r);
            printf("%s: %zu -> %zu (Outlook %zu, ours %zd)\n", names[i], size, actual, size, c);
        }
        free(b);
    }
}

int main(void)
{
    test_emsmdb();
    test_edges();
    test_random();
    test_vectors();
    TEST_DONE();
}
