/* JSON helpers of the ROP and RPC_HEADER_EXT printers, over the project's
 * writer (core/json.h, struct mp_json) so that a call printer can embed ROP
 * buffers: MAPI-specific tokens (hex numbers for ids/tags/codes, GUIDs,
 * counted 8-bit and UTF-16LE strings straight from wire bytes, cut blobs). */
#ifndef MP_ROP_JSON_H
#define MP_ROP_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/json.h"

static inline void mp_rj_init(struct mp_json *j, struct mp_buf *out)
{
    mp_json_init(j, out);
}
static inline void mp_rj_obj(struct mp_json *j)
{
    mp_json_obj_begin(j);
}
static inline void mp_rj_obj_end(struct mp_json *j)
{
    mp_json_obj_end(j);
}
static inline void mp_rj_arr(struct mp_json *j)
{
    mp_json_arr_begin(j);
}
static inline void mp_rj_arr_end(struct mp_json *j)
{
    mp_json_arr_end(j);
}
static inline void mp_rj_key(struct mp_json *j, const char *k)
{
    mp_json_key(j, k);
}
static inline void mp_rj_u64(struct mp_json *j, uint64_t v)
{
    mp_json_u64(j, v);
}
static inline void mp_rj_i64(struct mp_json *j, int64_t v)
{
    mp_json_i64(j, v);
}
static inline void mp_rj_bool(struct mp_json *j, bool v)
{
    mp_json_bool(j, v);
}
static inline void mp_rj_null(struct mp_json *j)
{
    mp_json_null(j);
}
static inline void mp_rj_cstr(struct mp_json *j, const char *s)
{
    mp_json_str(j, s);
}
void mp_rj_dbl(struct mp_json *j, double v);
/* "0x%0*x" string, for ids, tags, flags and error codes. */
void mp_rj_hex(struct mp_json *j, uint64_t v, int digits);
/* Escaped string from 8-bit bytes, read as Latin-1 (CP1252's printable
 * subset); n bytes, no terminator. */
void mp_rj_str8(struct mp_json *j, const uint8_t *s, size_t n);
/* Escaped string from n bytes of UTF-16LE (any alignment). */
void mp_rj_str16(struct mp_json *j, const uint8_t *s, size_t n);
/* Lowercase hex of the bytes; longer than max (0 = no limit) is cut with a
 * "...(N bytes)" suffix. */
void mp_rj_bin(struct mp_json *j, const uint8_t *p, size_t n, size_t max);
/* A GUID in registry form from its 16 wire bytes. */
void mp_rj_guid(struct mp_json *j, const uint8_t *p);
#endif
