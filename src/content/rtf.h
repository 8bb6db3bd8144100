/* Compressed RTF (MS-OXRTFCP): the decompressor for PidTagRtfCompressed.
 * Written from the specification; checked against its section-4 examples
 * (tests/unit/test_content.c) and fuzzed (tests/fuzz/fuzz_rtf.c). */
#ifndef MP_CONTENT_RTF_H
#define MP_CONTENT_RTF_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum mp_rtf_status {
    MP_RTF_OK = 0,
    MP_RTF_SHORT,     /* shorter than the 16-byte header, or COMPSIZE past the data */
    MP_RTF_TYPE,      /* COMPTYPE neither LZFu nor MELA */
    MP_RTF_CRC,       /* CRC of the compressed contents does not match */
    MP_RTF_TRUNCATED, /* the contents end before the end token */
    MP_RTF_TOO_BIG,   /* the output would pass max_out */
    MP_RTF_NOMEM,
};

/* Appends the decompressed RTF of in[0..n) to out, at most max_out bytes
 * (RAWSIZE is advisory: the output stops at the end token). */
enum mp_rtf_status mp_rtf_decompress(const uint8_t *in, size_t n, struct mp_buf *out,
                                     size_t max_out);
const char *mp_rtf_strerror(enum mp_rtf_status s);
/* The CRC of MS-OXRTFCP 3.1.3.2 (CRC-32 table, starting at 0, no final xor). */
uint32_t mp_rtf_crc(const uint8_t *p, size_t n);
/* Appends rtf[0..n) to out as a PidTagRtfCompressed value in the
 * uncompressed form (COMPTYPE "MELA", CRC 0: MS-OXRTFCP 2.1.3.1.1), which
 * every reader of the property must accept.  0, or -1 (too big, no memory). */
int mp_rtf_store(const uint8_t *rtf, size_t n, struct mp_buf *out);

#endif
