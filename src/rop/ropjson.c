#include "rop/ropjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Tokens are built in a scratch buffer and handed to mp_json_raw(), which
 * places the separators. */
static void tok_put(struct mp_buf *t, bool *err, const void *p, size_t n)
{
    if (!*err && mp_buf_append(t, p, n))
        *err = true;
}

static void tok_emit(struct mp_json *j, struct mp_buf *t, bool err)
{
    if (err || mp_buf_append(t, "", 1))
        j->err = true;
    else
        mp_json_raw(j, (const char *)t->data);
    mp_buf_free(t);
}

static void esc_cp(struct mp_buf *t, bool *err, uint32_t cp)
{
    char c[16];
    size_t n;
    if (cp == '"' || cp == '\\') {
        c[0] = '\\';
        c[1] = (char)cp;
        n = 2;
    } else if (cp < 0x20 || cp == 0x7f || cp == 0) {
        n = (size_t)snprintf(c, sizeof c, "\\u%04x", (unsigned)cp);
    } else if (cp < 0x80) {
        c[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        c[0] = (char)(0xC0 | (cp >> 6));
        c[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        c[0] = (char)(0xE0 | (cp >> 12));
        c[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        c[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        c[0] = (char)(0xF0 | (cp >> 18));
        c[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        c[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        c[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    tok_put(t, err, c, n);
}

void mp_rj_str8(struct mp_json *j, const uint8_t *s, size_t n)
{
    struct mp_buf t = {0};
    bool err = false;
    tok_put(&t, &err, "\"", 1);
    for (size_t i = 0; i < n; i++)
        esc_cp(&t, &err, s[i]);
    tok_put(&t, &err, "\"", 1);
    tok_emit(j, &t, err);
}

void mp_rj_str16(struct mp_json *j, const uint8_t *s, size_t n)
{
    struct mp_buf t = {0};
    bool err = false;
    tok_put(&t, &err, "\"", 1);
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint32_t u = (uint32_t)(s[i] | (s[i + 1] << 8));
        if (u >= 0xD800 && u < 0xDC00 && i + 3 < n) {
            uint32_t v = (uint32_t)(s[i + 2] | (s[i + 3] << 8));
            if (v >= 0xDC00 && v < 0xE000) {
                u = 0x10000 + ((u - 0xD800) << 10) + (v - 0xDC00);
                i += 2;
            } else
                u = 0xFFFD;
        } else if (u >= 0xD800 && u < 0xE000)
            u = 0xFFFD;
        esc_cp(&t, &err, u);
    }
    tok_put(&t, &err, "\"", 1);
    tok_emit(j, &t, err);
}

void mp_rj_dbl(struct mp_json *j, double v)
{
    char t[40];
    if (v != v || v - v != 0) /* NaN or infinity: not JSON */
        snprintf(t, sizeof t, "null");
    else
        snprintf(t, sizeof t, "%.17g", v);
    mp_json_raw(j, t);
}

void mp_rj_hex(struct mp_json *j, uint64_t v, int digits)
{
    char t[40];
    snprintf(t, sizeof t, "\"0x%0*" PRIx64 "\"", digits, v);
    mp_json_raw(j, t);
}

void mp_rj_bin(struct mp_json *j, const uint8_t *p, size_t n, size_t max)
{
    static const char hx[] = "0123456789abcdef";
    if (!p && n) {
        mp_json_null(j);
        return;
    }
    struct mp_buf t = {0};
    bool err = false;
    size_t m = (max && n > max) ? max : n;
    tok_put(&t, &err, "\"", 1);
    for (size_t i = 0; i < m; i++) {
        char c[2] = {hx[p[i] >> 4], hx[p[i] & 15]};
        tok_put(&t, &err, c, 2);
    }
    if (m < n) {
        char s[48];
        int k = snprintf(s, sizeof s, "...(%zu bytes)", n);
        tok_put(&t, &err, s, (size_t)k);
    }
    tok_put(&t, &err, "\"", 1);
    tok_emit(j, &t, err);
}

void mp_rj_guid(struct mp_json *j, const uint8_t *p)
{
    char t[48];
    if (!p) {
        mp_json_null(j);
        return;
    }
    snprintf(t, sizeof t,
             "\"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\"", p[3], p[2],
             p[1], p[0], p[5], p[4], p[7], p[6], p[8], p[9], p[10], p[11], p[12], p[13], p[14],
             p[15]);
    mp_json_raw(j, t);
}
