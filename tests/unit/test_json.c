/* The JSON writer's string and binary output (src/core/json.c): escaping,
 * UTF-8 / Latin-1 / UTF-16 input, strings longer than the writer's 512-byte
 * block, truncated hex, checked byte for byte; and every output is parsed
 * back by Python's json module (code we did not write) when it is there. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "testlib.h"

static char *out_of(struct mp_buf *b)
{
    static char s[70000];
    size_t n = b->len - b->off;
    if (n >= sizeof s)
        n = sizeof s - 1;
    memcpy(s, b->data + b->off, n);
    s[n] = 0;
    return s;
}

/* Parse with /usr/bin/python3's json and print it back compactly. */
static int python_agrees(const char *json, const char *expect_repr)
{
    if (access("/usr/bin/python3", X_OK))
        return 1;
    FILE *f = fopen("json-check.in", "w");
    if (!f)
        return 0;
    fputs(json, f);
    fclose(f);
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import json,sys; v=json.load(open(\"json-check.in\"));"
             " sys.stdout.write(ascii(v))' > json-check.out");
    int rc = system(cmd);
    remove("json-check.in");
    f = fopen("json-check.out", "r");
    static char got[140000];
    size_t n = f ? fread(got, 1, sizeof got - 1, f) : 0;
    if (f)
        fclose(f);
    remove("json-check.out");
    got[n] = 0;
    if (rc || strcmp(got, expect_repr)) {
        fprintf(stderr, "python read %s\n  as %s\n  want %s\n", json, got, expect_repr);
        return 0;
    }
    return 1;
}

int main(void)
{
    struct mp_buf b = {0};
    struct mp_json j;

    /* escapes, control characters, valid UTF-8 kept, a stray byte as Latin-1 */
    mp_json_init(&j, &b);
    mp_json_arr_begin(&j);
    mp_json_str(&j, "a\"b\\c\n\x01\x7f");
    mp_json_str(&j, "caf\xc3\xa9 \xe2\x82\xac \xff");
    mp_json_arr_end(&j);
    CHECK(!j.err);
    CHECK(!strcmp(out_of(&b),
                  "[\"a\\\"b\\\\c\\u000a\\u0001\\u007f\",\"caf\xc3\xa9 \xe2\x82\xac \xc3\xbf\"]"));
    CHECK(python_agrees(out_of(&b), "['a\"b\\\\c\\n\\x01\\x7f', 'caf\\xe9 \\u20ac \\xff']"));

    /* Latin-1 bytes, UTF-16LE with a pair, a lone high and a lone low surrogate */
    b.len = b.off = 0;
    mp_json_init(&j, &b);
    mp_json_obj_begin(&j);
    mp_json_key(&j, "l1");
    mp_json_latin1(&j, (const uint8_t *)"\xe9\x00z", 3);
    static const uint8_t u16[] = {'A',  0,   0x3d, 0xd8, 0x00, 0xde, 0x00,
                                  0xd8, 'B', 0,    0x00, 0xdc, 'C'};
    mp_json_key(&j, "u16");
    mp_json_utf16le(&j, u16, sizeof u16); /* the odd last byte is ignored */
    static const uint16_t w[] = {'x', 0xd83d, 0xde00, 0xdbff, 0};
    mp_json_key(&j, "w");
    mp_json_wstr(&j, w);
    mp_json_obj_end(&j);
    CHECK(!j.err);
    CHECK(!strcmp(out_of(&b), "{\"l1\":\"\xc3\xa9\\u0000z\",\"u16\":\"A\xf0\x9f\x98\x80\xef\xbf\xbd"
                              "B\xef\xbf\xbd\",\"w\":\"x\xf0\x9f\x98\x80\xef\xbf\xbd\"}"));
    CHECK(python_agrees(out_of(&b), "{'l1': '\\xe9\\x00z', 'u16': 'A\\U0001f600\\ufffdB\\ufffd', "
                                    "'w': 'x\\U0001f600\\ufffd'}"));

    /* strings across the writer's block boundary: every length 500..530 of
     * quotes (2 bytes out each) and surrogate pairs (4 bytes out each) */
    for (size_t n = 500; n <= 530; n++) {
        char s[600];
        memset(s, '"', n);
        s[n] = 0;
        b.len = b.off = 0;
        mp_json_init(&j, &b);
        mp_json_str(&j, s);
        CHECK(b.len == 2 * n + 2 && b.data[0] == '"' && b.data[b.len - 1] == '"');
        int ok = 1;
        for (size_t i = 0; i < n; i++)
            ok &= b.data[1 + 2 * i] == '\\' && b.data[2 + 2 * i] == '"';
        CHECK(ok);
        uint8_t u[1200];
        for (size_t i = 0; i < n; i++) /* pairs, and a lone high surrogate last when n is odd */
            memcpy(u + 2 * i, i % 2 ? "\x00\xde" : "\x3d\xd8", 2);
        b.len = b.off = 0;
        mp_json_init(&j, &b);
        mp_json_utf16le(&j, u, 2 * n);
        CHECK(!j.err && b.len == 2 + (n / 2) * 4 + (n % 2) * 3);
    }

    /* hex: all of it, cut at max, empty, NULL */
    static const uint8_t bytes[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    b.len = b.off = 0;
    mp_json_init(&j, &b);
    mp_json_arr_begin(&j);
    mp_json_hex(&j, bytes, sizeof bytes);
    mp_json_hexn(&j, bytes, sizeof bytes, 2);
    mp_json_hexn(&j, bytes, sizeof bytes, 5);
    mp_json_hex(&j, bytes, 0);
    mp_json_hex(&j, NULL, 3);
    mp_json_arr_end(&j);
    CHECK(!strcmp(out_of(&b), "[\"000fa5ff10\",\"000f...(5 bytes)\",\"000fa5ff10\",\"\",null]"));
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    b.len = b.off = 0;
    mp_json_init(&j, &b);
    mp_json_hex(&j, all, sizeof all);
    int ok = b.len == 514;
    for (int i = 0; i < 256 && ok; i++) {
        char t[3];
        snprintf(t, sizeof t, "%02x", i);
        ok = !memcmp(b.data + 1 + 2 * i, t, 2);
    }
    CHECK(ok);
    mp_buf_free(&b);
    TEST_DONE();
}
