#include "core/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void put(struct mp_json *j, const char *s, size_t n)
{
    struct mp_buf *b = j->b;
    if (j->err)
        return;
    if (b->cap - b->len >= n && n) { /* the common case: room already there */
        memcpy(b->data + b->len, s, n);
        b->len += n;
    } else if (mp_buf_append(b, s, n)) {
        j->err = true;
    }
}

/* Room for n more bytes at the end of the output, or NULL (err set). The
 * caller writes at most n bytes there and then calls put_done(). */
static char *put_room(struct mp_json *j, size_t n)
{
    if (j->err || mp_buf_reserve(j->b, n)) {
        j->err = true;
        return NULL;
    }
    return (char *)j->b->data + j->b->len;
}

static void put_done(struct mp_json *j, size_t n)
{
    j->b->len += n;
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

/* Code point cp as JSON string content, written to o (room for 6 bytes);
 * returns the number of bytes. */
static size_t esc_cp(char *o, uint32_t cp)
{
    static const char hx[] = "0123456789abcdef";
    if (cp == '"' || cp == '\\') {
        o[0] = '\\';
        o[1] = (char)cp;
        return 2;
    } else if (cp < 0x20 || cp == 0x7f) {
        memcpy(o, "\\u00", 4);
        o[4] = hx[cp >> 4];
        o[5] = hx[cp & 15];
        return 6;
    } else if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Escaped string content collected in a stack buffer and written to the
 * output a block at a time, not a character at a time. */
struct strout {
    struct mp_json *j;
    size_t n;
    char buf[512];
};

static void so_cp(struct strout *o, uint32_t cp)
{
    if (o->n > sizeof o->buf - 6) {
        put(o->j, o->buf, o->n);
        o->n = 0;
    }
    o->n += esc_cp(o->buf + o->n, cp);
}

static void so_open(struct strout *o, struct mp_json *j)
{
    o->j = j;
    o->n = 1;
    o->buf[0] = '"';
    sep(j);
}

static void so_close(struct strout *o)
{
    if (o->n == sizeof o->buf) {
        put(o->j, o->buf, o->n);
        o->n = 0;
    }
    o->buf[o->n++] = '"';
    put(o->j, o->buf, o->n);
}

/* UTF-16 code units as code points: a high surrogate followed by a low one
 * makes one code point, a lone surrogate becomes U+FFFD.  unit(i) reads
 * unit i of n. */
#define UTF16_LOOP(o, n, unit)                                                                     \
    for (size_t i_ = 0; i_ < (n); i_++) {                                                          \
        uint32_t cp_ = (unit(i_));                                                                 \
        if (cp_ >= 0xd800 && cp_ <= 0xdbff && i_ + 1 < (n) && (unit(i_ + 1)) >= 0xdc00 &&          \
            (unit(i_ + 1)) <= 0xdfff) {                                                            \
            cp_ = 0x10000 + ((cp_ - 0xd800) << 10) + ((unit(i_ + 1)) - 0xdc00);                    \
            i_++;                                                                                  \
        } else if (cp_ >= 0xd800 && cp_ <= 0xdfff) {                                               \
            cp_ = 0xfffd;                                                                          \
        }                                                                                          \
        so_cp((o), cp_);                                                                           \
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
    struct strout o;
    so_open(&o, j);
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = utf8_len(p + i, n - i, &cp);
        if (!k) {
            cp = p[i]; /* Latin-1 */
            k = 1;
        }
        so_cp(&o, cp);
        i += k;
    }
    so_close(&o);
}

void mp_json_str(struct mp_json *j, const char *s)
{
    if (!s) {
        mp_json_null(j);
        return;
    }
    mp_json_strn(j, s, strlen(s));
}

void mp_json_latin1(struct mp_json *j, const uint8_t *s, size_t n)
{
    struct strout o;
    so_open(&o, j);
    for (size_t i = 0; i < n; i++)
        so_cp(&o, s[i]);
    so_close(&o);
}

void mp_json_wstr(struct mp_json *j, const uint16_t *s)
{
    if (!s) {
        mp_json_null(j);
        return;
    }
    size_t n = 0;
    while (s[n])
        n++;
    struct strout o;
    so_open(&o, j);
#define WUNIT(i) ((uint32_t)s[i])
    UTF16_LOOP(&o, n, WUNIT)
#undef WUNIT
    so_close(&o);
}

void mp_json_utf16le(struct mp_json *j, const uint8_t *s, size_t n)
{
    struct strout o;
    so_open(&o, j);
    size_t units = n / 2;
#define LEUNIT(i) ((uint32_t)(s[2 * (i)] | (s[2 * (i) + 1] << 8)))
    UTF16_LOOP(&o, units, LEUNIT)
#undef LEUNIT
    so_close(&o);
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

/* "00" .. "ff": two digits per byte in one copy. */
#define HXD(v) ((char)((v) < 10 ? '0' + (v) : 'a' + (v)-10))
#define HX1(b) HXD((b) >> 4), HXD((b)&15)
#define HX4(b) HX1(b), HX1((b) + 1), HX1((b) + 2), HX1((b) + 3)
#define HX16(b) HX4(b), HX4((b) + 4), HX4((b) + 8), HX4((b) + 12)
#define HX64(b) HX16(b), HX16((b) + 16), HX16((b) + 32), HX16((b) + 48)
static const char hex_pairs[512] = {HX64(0), HX64(64), HX64(128), HX64(192)};

void mp_json_hexn(struct mp_json *j, const uint8_t *p, size_t n, size_t max)
{
    if (!p && n) {
        mp_json_null(j);
        return;
    }
    size_t m = (max && n > max) ? max : n;
    sep(j);
    char *o = put_room(j, 2 * m + 40);
    if (!o)
        return;
    size_t t = 0;
    o[t++] = '"';
    for (size_t i = 0; i < m; i++, t += 2)
        memcpy(o + t, hex_pairs + 2 * p[i], 2);
    if (m < n)
        t += (size_t)snprintf(o + t, 38, "...(%zu bytes)", n);
    o[t++] = '"';
    put_done(j, t);
}

void mp_json_hex(struct mp_json *j, const uint8_t *p, size_t n)
{
    mp_json_hexn(j, p, n, 0);
}
