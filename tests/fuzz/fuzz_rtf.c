/* libFuzzer target for the compressed-RTF decompressor (src/content/rtf.c):
 * any input decodes or fails cleanly, within the output limit; the first
 * 16 bytes are also tried as a header with a correct CRC over the rest, so
 * that the token decoder itself is reached. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "content/rtf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mp_buf out = {0};
    enum mp_rtf_status st = mp_rtf_decompress(data, size, &out, 1 << 16);
    if (st == MP_RTF_OK && out.len > (1 << 16))
        abort();
    mp_buf_free(&out);
    if (size < 16 || size > (1 << 20))
        return 0;
    uint8_t *b = malloc(size);
    if (!b)
        return 0;
    memcpy(b, data, size);
    uint32_t comp = (uint32_t)(size - 4), crc = mp_rtf_crc(b + 16, size - 16);
    memcpy(b, &comp, 4);
    memcpy(b + 8, "LZFu", 4);
    memcpy(b + 12, &crc, 4);
    st = mp_rtf_decompress(b, size, &out, 1 << 16);
    if (st != MP_RTF_OK && st != MP_RTF_TRUNCATED && st != MP_RTF_TOO_BIG && st != MP_RTF_NOMEM)
        abort();
    mp_buf_free(&out);
    free(b);
    return 0;
}
