/* Self-checks of a codec, shared by the unit tests and the fuzz targets. */
#ifndef MP_CODEC_CHECK_H
#define MP_CODEC_CHECK_H
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

/* Decodes p (request if out == 0, response otherwise).  Returns 0 when it
 * does not decode, 1 when it decodes, re-encodes to the same bytes,
 * decodes again to a stable encoding and prints; -1 when any of that fails
 * (a bug). */
int mp_codec_check(const struct mp_call_codec *cc, int out, const uint8_t *p, size_t n);
/* Fuzz input: byte 0 picks the direction (bit 0) and the opnum (the rest,
 * modulo the interface's opnum count); the stub follows. Same results. */
int mp_codec_fuzz_one(const struct mp_codec_iface *ifc, const uint8_t *data, size_t size);
#endif
