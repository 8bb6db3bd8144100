/* A small streaming JSON writer over mp_buf: objects, arrays, strings with
 * escaping, numbers, hex strings for binary, booleans, null.  Commas are
 * placed automatically.  Nesting deeper than MP_JSON_MAX_DEPTH sets err. */
#ifndef MP_JSON_H
#define MP_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_JSON_MAX_DEPTH 96

struct mp_json {
    struct mp_buf *b;
    int depth;
    bool err;                          /* out of memory or too deep */
    bool first[MP_JSON_MAX_DEPTH + 1]; /* no element written yet at this level */
    bool after_key;
};

void mp_json_init(struct mp_json *j, struct mp_buf *b);
void mp_json_obj_begin(struct mp_json *j);
void mp_json_obj_end(struct mp_json *j);
void mp_json_arr_begin(struct mp_json *j);
void mp_json_arr_end(struct mp_json *j);
void mp_json_key(struct mp_json *j, const char *k);
/* Bytes: valid UTF-8 is kept, other bytes are read as Latin-1 (CP1252-ish). */
void mp_json_str(struct mp_json *j, const char *s);
void mp_json_strn(struct mp_json *j, const char *s, size_t n);
/* NUL-terminated UTF-16 code units; lone surrogates become U+FFFD. */
void mp_json_wstr(struct mp_json *j, const uint16_t *s);
/* n bytes of UTF-16LE (an odd last byte is ignored), surrogates as above. */
void mp_json_utf16le(struct mp_json *j, const uint8_t *s, size_t n);
/* n bytes, each one a code point (Latin-1), whatever they hold. */
void mp_json_latin1(struct mp_json *j, const uint8_t *s, size_t n);
void mp_json_u64(struct mp_json *j, uint64_t v);
void mp_json_i64(struct mp_json *j, int64_t v);
void mp_json_bool(struct mp_json *j, bool v);
void mp_json_null(struct mp_json *j);
/* A lowercase hex string of the bytes. */
void mp_json_hex(struct mp_json *j, const uint8_t *p, size_t n);
/* The same for at most max bytes (0: all), then "...(N bytes)" when cut. */
void mp_json_hexn(struct mp_json *j, const uint8_t *p, size_t n, size_t max);
/* A raw token (caller guarantees it is valid JSON). */
void mp_json_raw(struct mp_json *j, const char *tok);
#endif
