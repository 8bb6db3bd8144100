/* Unit tests for src/content: the compressed-RTF decompressor against the
 * examples of MS-OXRTFCP section 4 (the specification's bytes), its error
 * paths, the blobs that spill to a private temporary file, and the
 * message model's properties. */
#include "testlib.h"

#include <string.h>
#include <sys/stat.h>

#include "content/message.h"
#include "content/rtf.h"

/* MS-OXRTFCP 4.1 */
static const uint8_t ex1[] = {0x2d, 0x00, 0x00, 0x00, 0x2b, 0x00, 0x00, 0x00, 0x4c, 0x5a,
                              0x46, 0x75, 0xf1, 0xc5, 0xc7, 0xa7, 0x03, 0x00, 0x0a, 0x00,
                              0x72, 0x63, 0x70, 0x67, 0x31, 0x32, 0x35, 0x42, 0x32, 0x0a,
                              0xf3, 0x20, 0x68, 0x65, 0x6c, 0x09, 0x00, 0x20, 0x62, 0x77,
                              0x05, 0xb0, 0x6c, 0x64, 0x7d, 0x0a, 0x80, 0x0f, 0xa0};
static const char ex1_raw[] = "{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n";
/* MS-OXRTFCP 4.2: a reference that crosses the write position */
static const uint8_t ex2[] = {0x1a, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x00, 0x4c, 0x5a,
                              0x46, 0x75, 0xe2, 0xd4, 0x4b, 0x51, 0x41, 0x00, 0x04, 0x20,
                              0x57, 0x58, 0x59, 0x5a, 0x0d, 0x6e, 0x7d, 0x01, 0x0e, 0xb0};
static const char ex2_raw[] = "{\\rtf1 WXYZWXYZWXYZWXYZWXYZ}";

static void test_rtf(void)
{
    struct mp_buf out = {0};
    CHECK_EQ(mp_rtf_decompress(ex1, sizeof(ex1), &out, 1 << 20), MP_RTF_OK);
    CHECK(out.len == strlen(ex1_raw) && !memcmp(out.data, ex1_raw, out.len));
    out.len = 0;
    CHECK_EQ(mp_rtf_decompress(ex2, sizeof(ex2), &out, 1 << 20), MP_RTF_OK);
    CHECK(out.len == strlen(ex2_raw) && !memcmp(out.data, ex2_raw, out.len));
    /* the CRC of the spec's contents is the header's */
    CHECK_EQ(mp_rtf_crc(ex1 + 16, sizeof(ex1) - 16), 0xA7C7C5F1u);
    /* limits and damage */
    out.len = 0;
    CHECK_EQ(mp_rtf_decompress(ex1, sizeof(ex1), &out, 10), MP_RTF_TOO_BIG);
    CHECK_EQ(mp_rtf_decompress(ex1, 15, &out, 1 << 20), MP_RTF_SHORT);
    CHECK_EQ(mp_rtf_decompress(ex1, sizeof(ex1) - 1, &out, 1 << 20), MP_RTF_SHORT);
    uint8_t bad[sizeof(ex1)];
    memcpy(bad, ex1, sizeof(ex1));
    bad[20] ^= 1;
    CHECK_EQ(mp_rtf_decompress(bad, sizeof(bad), &out, 1 << 20), MP_RTF_CRC);
    memcpy(bad, ex1, sizeof(ex1));
    bad[8] = 'X';
    CHECK_EQ(mp_rtf_decompress(bad, sizeof(bad), &out, 1 << 20), MP_RTF_TYPE);
    /* written back uncompressed (MELA): the spec example's text, header as
     * MS-OXRTFCP 2.1.3.1.1 says, read again by the decompressor */
    {
        struct mp_buf raw = {0}, st = {0}, back = {0};
        CHECK_EQ(mp_rtf_decompress(ex1, sizeof(ex1), &raw, 1 << 20), MP_RTF_OK);
        CHECK_EQ(mp_rtf_store(raw.data, raw.len, &st), 0);
        size_t rl = sizeof(ex1_raw) - 1;
        const uint8_t hdr[16] = {
            (uint8_t)(rl + 12), 0, 0, 0, (uint8_t)rl, 0, 0, 0, 'M', 'E', 'L', 'A', 0, 0, 0, 0};
        CHECK(st.len == 16 + rl && !memcmp(st.data, hdr, 16));
        CHECK(!memcmp(st.data + 16, ex1_raw, rl));
        CHECK_EQ(mp_rtf_decompress(st.data, st.len, &back, 1 << 20), MP_RTF_OK);
        CHECK(back.len == rl && !memcmp(back.data, ex1_raw, rl));
        mp_buf_free(&raw);
        mp_buf_free(&st);
        mp_buf_free(&back);
    }
    /* MELA: stored as it is */
    static const uint8_t mela[] = {22, 0, 0, 0,   10,   0,   0,   0,   'M', 'E', 'L', 'A', 0,
                                   0,  0, 0, '{', '\\', 'r', 't', 'f', '1', ' ', 'h', 'i', '}'};
    out.len = 0;
    CHECK_EQ(mp_rtf_decompress(mela, sizeof(mela), &out, 100), MP_RTF_OK);
    CHECK(out.len == 10 && !memcmp(out.data, "{\\rtf1 hi}", 10));
    mp_buf_free(&out);
}

static void test_blob_spill(void)
{
    struct mp_content_limits l = {.spill_at = 100, .max_message = 1000, .tmpdir = "."};
    struct mp_blob b;
    mp_blob_init(&b);
    uint8_t chunk[64];
    for (int i = 0; i < 64; i++)
        chunk[i] = (uint8_t)i;
    CHECK_EQ(mp_blob_append(&b, chunk, 64, &l), 0);
    CHECK_EQ(mp_blob_fd(&b), -1);
    CHECK_EQ(mp_blob_append(&b, chunk, 64, &l), 0);
    CHECK(mp_blob_fd(&b) >= 0);
    struct stat st;
    CHECK(fstat(mp_blob_fd(&b), &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_nlink == 0);
    CHECK_EQ(b.len, 128u);
    struct mp_buf all = {0};
    CHECK_EQ(mp_blob_copy(&b, &all), 0);
    CHECK(all.len == 128 && !memcmp(all.data, chunk, 64) && !memcmp(all.data + 64, chunk, 64));
    uint8_t two[2];
    CHECK_EQ(mp_blob_read(&b, 127, two, 2), 1);
    CHECK_EQ(two[0], 63);
    mp_buf_free(&all);
    mp_blob_free(&b);
}

static void test_model(void)
{
    struct mp_content_limits l = {.spill_at = 0, .max_message = 100};
    struct mp_message *m = mp_msg_new();
    CHECK(m != NULL);
    /* string8 and Unicode of one id are one property */
    CHECK_EQ(mp_props_set_bytes(&m->props, 0x0037001E, "caf\xe9", 4, &l), 0);
    static const uint8_t w[] = {'c', 0, 'a', 0, 'f', 0, 0xe9, 0, 0xac, 0x20};
    CHECK_EQ(mp_props_set_bytes(&m->props, MP_TAG_SUBJECT, w, sizeof(w), &l), 0);
    CHECK_EQ(m->props.n, 1u);
    struct mp_buf s = {0};
    CHECK_EQ(mp_props_string(&m->props, 0x0037, &s), 0);
    CHECK(s.len == 8 && !memcmp(s.data, "caf\xc3\xa9\xe2\x82\xac", 8));
    mp_buf_free(&s);
    struct mp_attachment *a = mp_msg_attachment(m, 3);
    CHECK(a && a->num == 3 && m->natt == 1 && mp_msg_attachment(m, 3) == a);
    a->embedded = mp_msg_new();
    a->embedded->parent = m;
    CHECK(!mp_msg_count(a->embedded, 60, &l));
    CHECK(mp_msg_count(a->embedded, 60, &l)); /* 120 > 100, counted on the top */
    CHECK(m->over_limit && m->content_bytes == 120);
    CHECK(mp_msg_recipient(m, 7) && m->nrcpt == 1);
    mp_msg_remove_recipient(m, 7);
    CHECK_EQ(m->nrcpt, 0u);
    mp_msg_free(m);
}

int main(void)
{
    test_rtf();
    test_blob_spill();
    test_model();
    TEST_DONE();
}
