/* RPC_HEADER_EXT chains (MS-OXCRPC 2.2.2.1, 3.1.4.1.1, 3.1.4.2.1): the
 * framing of rgbIn/rgbOut/rgbAuxIn/rgbAuxOut of EcDoConnectEx/EcDoRpcExt2
 * and of the MAPI/HTTP Execute body.
 *
 * Wire: { Version u16 = 0, Flags u16, Size u16, SizeActual u16 } then Size
 * bytes of payload; the sender compresses (LZ77+DIRECT2) then XORs every byte
 * with 0xA5; payloads are chained until one carries Last.
 *
 * Parsing undoes XOR, then decompression, for each payload, and keeps both
 * the decoded content (concatenated, with per-payload offsets) and a pointer
 * to the original payload bytes, so that re-encoding an unchanged payload
 * reproduces the original bytes exactly (LZ77 output is not unique: our
 * compressor would not give Outlook's or Exchange's bytes back).
 *
 * For rgbOut, each payload holds a whole ROP response buffer (extended
 * buffer packing); for rgbIn, packing also gives one ROP request buffer per
 * payload.  Callers that want one flat stream use x->data/x->len. */
#ifndef MP_ROP_RPCEXT_H
#define MP_ROP_RPCEXT_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_RHE_COMPRESSED 0x0001u
#define MP_RHE_XORMAGIC 0x0002u
#define MP_RHE_LAST 0x0004u
#define MP_RHE_HDRLEN 8u
/* Largest content per payload a sender may put in one payload. */
#define MP_RPCEXT_MAX_PAYLOAD 0x8000u

enum mp_rpcext_status {
    MP_RPCEXT_OK = 0,
    MP_RPCEXT_ETRUNC = -1,   /* header or payload runs past the input */
    MP_RPCEXT_EVERSION = -2, /* Version != 0 */
    MP_RPCEXT_ELZ77 = -3,    /* LZ77 payload malformed or its size != SizeActual */
    MP_RPCEXT_ESIZE = -4,    /* uncompressed payload with Size != SizeActual */
    MP_RPCEXT_ENOLAST = -5,  /* input ended before a payload with Last */
    MP_RPCEXT_ENOMEM = -6,
    MP_RPCEXT_EFLAGS = -7, /* unknown flag bits */
    MP_RPCEXT_ETOOBIG = -8 /* build: content larger than the payload limit */
};
const char *mp_rpcext_strerror(int status);

struct mp_rpcext_payload {
    uint16_t version, flags, size, size_actual;
    const uint8_t *wire; /* Size payload bytes as received (points into the input) */
    size_t wire_off;     /* offset of the RPC_HEADER_EXT in the input */
    size_t off;          /* offset of the decoded content in mp_rpcext.data */
};

struct mp_rpcext {
    struct mp_rpcext_payload *p;
    size_t n;
    uint8_t *data; /* decoded contents, concatenated (mp_buf_take) */
    size_t len;
    size_t consumed;        /* input bytes up to the end of the Last payload */
    size_t cap_p, cap_data; /* the sizes of p and data, in bytes */
};

/* Parses a chain from in[0..len).  Stops after the payload with Last
 * (x->consumed tells where; bytes after it are the caller's business).
 * The input must outlive x (payload wire pointers point into it).  On error
 * x is left empty (safe to free). */
int mp_rpcext_parse(struct mp_rpcext *x, const uint8_t *in, size_t len);
void mp_rpcext_free(struct mp_rpcext *x);
/* Decoded content of payload i. */
const uint8_t *mp_rpcext_content(const struct mp_rpcext *x, size_t i, size_t *len);

/* Appends one RPC_HEADER_EXT + payload.  flags may hold Compressed (applied
 * only when LZ77 makes the payload smaller; otherwise the flag is cleared,
 * as Exchange does), XorMagic and Last.  len <= MP_RPCEXT_MAX_PAYLOAD. */
int mp_rpcext_build(struct mp_buf *out, const uint8_t *content, size_t len, uint16_t flags);

/* Appends a chain of segments, one payload each (segment i of seglen[i]
 * bytes), each with flags & (Compressed|XorMagic); Last on the final one.
 * nseg 0 makes one empty payload. */
int mp_rpcext_build_chain(struct mp_buf *out, const uint8_t *const *seg, const size_t *seglen,
                          size_t nseg, uint16_t flags);

/* Splits content into payloads of at most max bytes (0 = 32 KB) and builds
 * the chain. */
int mp_rpcext_build_split(struct mp_buf *out, const uint8_t *content, size_t len, size_t max,
                          uint16_t flags);

/* Re-encodes with new contents (segment i replaces payload i of orig).
 * A changed segment may exceed 32 KB only if the original payload did
 * (some clients send larger ones), up to SizeActual's 0xFFFF.
 * A segment equal to the original decoded content reuses the original header
 * and payload bytes unchanged (only Last is corrected if the chain grew or
 * shrank); a changed one is rebuilt with the original payload's flags
 * (Compressed only if worth it).  Segments beyond orig->n take the flags of
 * orig's last payload.  Passing orig's own contents gives the original bytes
 * back exactly. */
int mp_rpcext_reencode(struct mp_buf *out, const struct mp_rpcext *orig, const uint8_t *const *seg,
                       const size_t *seglen, size_t nseg);
/* Same, with orig's decoded contents: the original bytes. */
int mp_rpcext_reencode_same(struct mp_buf *out, const struct mp_rpcext *orig);

struct mp_json;
/* [{"Version":0,"Flags":["Compressed","Last"],"Size":..,"SizeActual":..}, ...] */
void mp_rpcext_print(struct mp_json *j, const struct mp_rpcext *x);
#endif
