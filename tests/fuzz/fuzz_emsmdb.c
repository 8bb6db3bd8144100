/* libFuzzer target: every EMSMDB call codec, and AsyncEMSMDB's (same
 * endpoint).  Byte 0: bit 7 picks AsyncEMSMDB, bit 0 the direction, bits 1-6
 * the opnum; the rest is the stub.  Whatever decodes must re-encode to the
 * same bytes and decode again (src/codec/codec_check.c). */
#include <stdint.h>
#include <stdlib.h>

#include "codec/codec_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct mp_codec_iface *ifc =
        (data[0] & 0x80) ? &mp_codec_iface_asyncemsmdb : &mp_codec_iface_emsmdb;
    uint8_t first = data[0] & 0x7f;
    const struct mp_call_codec *cc =
        mp_codec_iface_call(ifc, (uint16_t)((first >> 1) % ifc->n_calls));
    if (cc && mp_codec_check(cc, first & 1, data + 1, size - 1) < 0)
        abort();
    return 0;
}
