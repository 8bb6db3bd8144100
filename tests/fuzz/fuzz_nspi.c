/* libFuzzer target: every nspi call codec.  Byte 0 picks the opnum and the
 * direction, the rest is the stub; whatever decodes must re-encode to the
 * same bytes and decode again (src/codec/codec_check.c). */
#include <stdint.h>
#include <stdlib.h>

#include "codec/codec_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (mp_codec_fuzz_one(&mp_codec_iface_nspi, data, size) < 0)
        abort();

    return 0;
}
