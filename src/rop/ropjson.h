/* Minimal JSON emitter used by the ROP and RPC_HEADER_EXT printers: compact
 * output appended to an mp_buf, commas handled by the writer. */
#ifndef MP_ROP_JSON_H
#define MP_ROP_JSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_RJ_MAXDEPTH 64
struct mp_rj {
    struct mp_buf *b;
    int depth;
    bool need_comma[MP_RJ_MAXDEPTH];
    bool after_key;
    bool err;
};

void mp_rj_init(struct mp_rj *j, struct mp_buf *out);
void mp_rj_obj(struct mp_rj *j);     /* { */
void mp_rj_obj_end(struct mp_rj *j); /* } */
void mp_rj_arr(struct mp_rj *j);     /* [ */
void mp_rj_arr_end(struct mp_rj *j); /* ] */
void mp_rj_key(struct mp_rj *j, const char *k);
void mp_rj_u64(struct mp_rj *j, uint64_t v);
void mp_rj_i64(struct mp_rj *j, int64_t v);
void mp_rj_dbl(struct mp_rj *j, double v);
void mp_rj_bool(struct mp_rj *j, bool v);
void mp_rj_null(struct mp_rj *j);
/* "0x%0*x" string, for ids, tags, flags and error codes. */
void mp_rj_hex(struct mp_rj *j, uint64_t v, int digits);
/* Escaped string from 8-bit bytes (Latin-1/CP1252 taken as Latin-1). */
void mp_rj_str8(struct mp_rj *j, const uint8_t *s, size_t n);
void mp_rj_cstr(struct mp_rj *j, const char *s);
/* Escaped string from UTF-16LE bytes (n bytes). */
void mp_rj_str16(struct mp_rj *j, const uint8_t *s, size_t n);
/* Bytes as a lowercase hex string; long blobs are cut at max bytes with a
 * "...(N bytes)" suffix (max 0 = no limit). */
void mp_rj_bin(struct mp_rj *j, const uint8_t *p, size_t n, size_t max);
/* A GUID in registry form from its 16 little-endian wire bytes. */
void mp_rj_guid(struct mp_rj *j, const uint8_t *p);
#endif
