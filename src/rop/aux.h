/* Auxiliary buffers (MS-OXCRPC 2.2.2.2): the content of rgbAuxIn/rgbAuxOut
 * after RPC_HEADER_EXT decoding is a sequence of blocks, each
 * AUX_HEADER { Size u16 (header included), Version u8, Type u8 } + body.
 * Parsed for inspection and printing; a proxy relays the bytes as they are. */
#ifndef MP_ROP_AUX_H
#define MP_ROP_AUX_H
#include <stddef.h>
#include <stdint.h>

#define MP_AUX_HDRLEN 4u

struct mp_aux_block {
    uint16_t size;
    uint8_t version, type;
    const uint8_t *body; /* size - 4 bytes, pointing into the parsed content */
    size_t body_len;
    size_t off; /* offset of the AUX_HEADER in the content */
};

/* Parses content[0..len) into at most max blocks; *n = blocks found.
 * Returns 0, or -1 when a block is malformed (Size < 4 or past the end) or
 * there are more than max blocks (*n then counts the good ones). */
int mp_aux_parse(const uint8_t *content, size_t len, struct mp_aux_block *blocks, size_t max,
                 size_t *n);

/* "AUX_PERF_CLIENTINFO", "AUX_OSVERSIONINFO", ...; NULL if unknown. */
const char *mp_aux_type_name(uint8_t version, uint8_t type);

struct mp_json;
/* Array of {"Type":"AUX_...","Version":1,"Size":..,<fields>...}; a block that
 * does not parse prints with "Raw". */
void mp_aux_print(struct mp_json *j, const uint8_t *content, size_t len);
#endif
