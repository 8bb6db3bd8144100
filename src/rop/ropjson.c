#include "rop/ropjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put(struct mp_rj *j, const void *p, size_t n)
{
    if (!j->err && mp_buf_append(j->b, p, n))
        j->err = true;
}
static void puts_(struct mp_rj *j, const char *s)
{
    put(j, s, strlen(s));
}

/* Comma before a value unless it follows a key. */
static void pre(struct mp_rj *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0 && j->depth <= MP_RJ_MAXDEPTH) {
        if (j->need_comma[j->depth - 1])
            put(j, ",", 1);
        j->need_comma[j->depth - 1] = true;
    }
}

void mp_rj_init(struct mp_rj *j, struct mp_buf *out)
{
    memset(j, 0, sizeof(*j));
    j->b = out;
}
static void open_(struct mp_rj *j, const char *c)
{
    pre(j);
    puts_(j, c);
    if (j->depth < MP_RJ_MAXDEPTH)
        j->need_comma[j->depth] = false;
    j->depth++;
}
static void close_(struct mp_rj *j, const char *c)
{
    if (j->depth > 0)
        j->depth--;
    puts_(j, c);
}
void mp_rj_obj(struct mp_rj *j)
{
    open_(j, "{");
}
void mp_rj_obj_end(struct mp_rj *j)
{
    close_(j, "}");
}
void mp_rj_arr(struct mp_rj *j)
{
    open_(j, "[");
}
void mp_rj_arr_end(struct mp_rj *j)
{
    close_(j, "]");
}

static void escaped_cp(struct mp_rj *j, uint32_t cp)
{
    char t[16];
    if (cp == '"' || cp == '\\') {
        t[0] = '\\';
        t[1] = (char)cp;
        put(j, t, 2);
    } else if (cp < 0x20 || cp == 0x7f) {
        snprintf(t, sizeof t, "\\u%04x", (unsigned)cp);
        puts_(j, t);
    } else if (cp < 0x80) {
        t[0] = (char)cp;
        put(j, t, 1);
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | (cp >> 6));
        t[1] = (char)(0x80 | (cp & 0x3F));
        put(j, t, 2);
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | (cp >> 12));
        t[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[2] = (char)(0x80 | (cp & 0x3F));
        put(j, t, 3);
    } else {
        t[0] = (char)(0xF0 | (cp >> 18));
        t[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        t[3] = (char)(0x80 | (cp & 0x3F));
        put(j, t, 4);
    }
}

static void str8_raw(struct mp_rj *j, const uint8_t *s, size_t n)
{
    put(j, "\"", 1);
    for (size_t i = 0; i < n; i++)
        escaped_cp(j, s[i]);
    put(j, "\"", 1);
}
void mp_rj_str8(struct mp_rj *j, const uint8_t *s, size_t n)
{
    pre(j);
    str8_raw(j, s, n);
}
void mp_rj_key(struct mp_rj *j, const char *k)
{
    pre(j);
    str8_raw(j, (const uint8_t *)k, strlen(k));
    put(j, ":", 1);
    j->after_key = true;
}
void mp_rj_cstr(struct mp_rj *j, const char *s)
{
    mp_rj_str8(j, (const uint8_t *)s, strlen(s));
}
void mp_rj_str16(struct mp_rj *j, const uint8_t *s, size_t n)
{
    pre(j);
    put(j, "\"", 1);
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
        escaped_cp(j, u);
    }
    put(j, "\"", 1);
}
void mp_rj_u64(struct mp_rj *j, uint64_t v)
{
    char t[32];
    pre(j);
    snprintf(t, sizeof t, "%" PRIu64, v);
    puts_(j, t);
}
void mp_rj_i64(struct mp_rj *j, int64_t v)
{
    char t[32];
    pre(j);
    snprintf(t, sizeof t, "%" PRId64, v);
    puts_(j, t);
}
void mp_rj_dbl(struct mp_rj *j, double v)
{
    char t[40];
    pre(j);
    if (v != v || v - v != 0) /* NaN or infinity: not JSON */
        snprintf(t, sizeof t, "null");
    else
        snprintf(t, sizeof t, "%.17g", v);
    puts_(j, t);
}
void mp_rj_bool(struct mp_rj *j, bool v)
{
    pre(j);
    puts_(j, v ? "true" : "false");
}
void mp_rj_null(struct mp_rj *j)
{
    pre(j);
    puts_(j, "null");
}
void mp_rj_hex(struct mp_rj *j, uint64_t v, int digits)
{
    char t[40];
    pre(j);
    snprintf(t, sizeof t, "\"0x%0*" PRIx64 "\"", digits, v);
    puts_(j, t);
}
void mp_rj_bin(struct mp_rj *j, const uint8_t *p, size_t n, size_t max)
{
    static const char hx[] = "0123456789abcdef";
    char t[64];
    size_t m = (max && n > max) ? max : n;
    pre(j);
    put(j, "\"", 1);
    for (size_t i = 0; i < m; i++) {
        char c[2] = {hx[p[i] >> 4], hx[p[i] & 15]};
        put(j, c, 2);
    }
    if (m < n) {
        snprintf(t, sizeof t, "...(%zu bytes)", n);
        puts_(j, t);
    }
    put(j, "\"", 1);
}
void mp_rj_guid(struct mp_rj *j, const uint8_t *p)
{
    char t[48];
    pre(j);
    snprintf(t, sizeof t,
             "\"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\"", p[3],
             p[2], p[1], p[0], p[5], p[4], p[7], p[6], p[8], p[9], p[10], p[11], p[12], p[13],
             p[14], p[15]);
    puts_(j, t);
}
