#include "core/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put(struct mp_json *j, const char *s, size_t n)
{
    if (!j->err && mp_buf_append(j->b, s, n))
        j->err = true;
}

static void putc_(struct mp_json *j, char c)
{
    put(j, &c, 1);
}

/* Separator before a value (or key). */
static void sep(struct mp_json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0) {
        if (!j->first[j->depth])
            putc_(j, ',');
        j->first[j->depth] = false;
    }
}

void mp_json_init(struct mp_json *j, struct mp_buf *b)
{
    memset(j, 0, sizeof *j);
    j->b = b;
}

static void open_(struct mp_json *j, char c)
{
    sep(j);
    putc_(j, c);
    if (j->depth >= MP_JSON_MAX_DEPTH) {
        j->err = true;
        return;
    }
    j->depth++;
    j->first[j->depth] = true;
}

static void close_(struct mp_json *j, char c)
{
    if (j->depth > 0)
        j->depth--;
    putc_(j, c);
}

void mp_json_obj_begin(struct mp_json *j)
{
    open_(j, '{');
}
void mp_json_obj_end(struct mp_json *j)
{
    close_(j, '}');
}
void mp_json_arr_begin(struct mp_json *j)
{
    open_(j, '[');
}
void mp_json_arr_end(struct mp_json *j)
{
    close_(j, ']');
}

static void esc_cp(struct mp_json *j, uint32_t cp)
{
    char tmp[16];
    if (cp == '"' || cp == '\\') {
        tmp[0] = '\\';
        tmp[1] = (char)cp;
        put(j, tmp, 2);
    } else if (cp < 0x20 || cp == 0x7f) {
        int n = snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
        put(j, tmp, (size_t)n);
    } else if (cp < 0x80) {
        putc_(j, (char)cp);
    } else if (cp < 0x800) {
        tmp[0] = (char)(0xc0 | (cp >> 6));
        tmp[1] = (char)(0x80 | (cp & 0x3f));
        put(j, tmp, 2);
    } else if (cp < 0x10000) {
        tmp[0] = (char)(0xe0 | (cp >> 12));
        tmp[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[2] = (char)(0x80 | (cp & 0x3f));
        put(j, tmp, 3);
    } else {
        tmp[0] = (char)(0xf0 | (cp >> 18));
        tmp[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        tmp[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        tmp[3] = (char)(0x80 | (cp & 0x3f));
        put(j, tmp, 4);
    }
}

/* Length of a valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t utf8_len(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t c = p[0];
    size_t k;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        k = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return k;
}

void mp_json_strn(struct mp_json *j, const char *s, size_t n)
{
    sep(j);
    putc_(j, '"');
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_len(p + i, n - i, &cp);
        if (!k) {
            cp = p[i]; /* Latin-1 */
            k = 1;
        }
        esc_cp(j, cp);
        i += k;
    }
    putc_(j, '"');
}

void mp_json_str(struct mp_json *j, const char *s)
{
    if (!s) {
        mp_json_null(j);
        return;
    }
    mp_json_strn(j, s, strlen(s));
}

void mp_json_wstr(struct mp_json *j, const uint16_t *s)
{
    if (!s) {
        mp_json_null(j);
        return;
    }
    sep(j);
    putc_(j, '"');
    for (size_t i = 0; s[i]; i++) {
        uint32_t cp = s[i];
        if (cp >= 0xd800 && cp <= 0xdbff && s[i + 1] >= 0xdc00 && s[i + 1] <= 0xdfff) {
            cp = 0x10000 + ((cp - 0xd800) << 10) + (s[i + 1] - 0xdc00);
            i++;
        } else if (cp >= 0xd800 && cp <= 0xdfff) {
            cp = 0xfffd;
        }
        esc_cp(j, cp);
    }
    putc_(j, '"');
}

void mp_json_key(struct mp_json *j, const char *k)
{
    mp_json_str(j, k);
    putc_(j, ':');
    j->after_key = true;
}

void mp_json_u64(struct mp_json *j, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    sep(j);
    put(j, tmp, (size_t)n);
}

void mp_json_i64(struct mp_json *j, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
    sep(j);
    put(j, tmp, (size_t)n);
}

void mp_json_raw(struct mp_json *j, const char *tok)
{
    sep(j);
    put(j, tok, strlen(tok));
}

void mp_json_bool(struct mp_json *j, bool v)
{
    mp_json_raw(j, v ? "true" : "false");
}

void mp_json_null(struct mp_json *j)
{
    mp_json_raw(j, "null");
}

void mp_json_hex(struct mp_json *j, const uint8_t *p, size_t n)
{
    static const char hx[] = "0123456789abcdef";
    if (!p && n) {
        mp_json_null(j);
        return;
    }
    sep(j);
    putc_(j, '"');
    char tmp[64];
    size_t t = 0;
    for (size_t i = 0; i < n; i++) {
        tmp[t++] = hx[p[i] >> 4];
        tmp[t++] = hx[p[i] & 15];
        if (t == sizeof tmp) {
            put(j, tmp, t);
            t = 0;
        }
    }
    put(j, tmp, t);
    putc_(j, '"');
}
