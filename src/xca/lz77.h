/* LZ77+DIRECT2 ("Plain LZ77", MS-XCA sections 2.3 and 2.4): the compression
 * of MS-OXCRPC 3.1.4.1.1.2 (RPC_HEADER_EXT payloads with the Compressed flag).
 *
 * All functions are thread-safe and reentrant: no globals, no allocation.
 * See doc/internals/lz77.md for the design and measured figures. */
#ifndef MP_XCA_LZ77_H
#define MP_XCA_LZ77_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Largest back-reference distance the format can express. */
#define MP_LZ77_WINDOW 8192u

/* Decompress in[0..in_len) into out[0..out_cap).  Returns the number of bytes
 * written, or -1 if the input is malformed (truncated, offset before the start
 * of the output, ...) or the output would exceed out_cap -- except by literal
 * zero bytes only, the padding of older encoders (then out_cap is returned;
 * see lz77.c, zero_padding).  Safe for any input.
 * Decoding stops at the end of the input (the final flag word is padded with
 * 1-bits, which read as "match" at end of input, i.e. the end marker).
 * out must not be NULL (unless in_len is 0).  For speed, bytes of out past
 * the returned length (but below out_cap) may be overwritten. */
ssize_t mp_lz77_decompress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);

/* Worst-case compressed size of in_len bytes (all literals, flag words, final
 * flag word).  out_cap >= this guarantees mp_lz77_compress() succeeds. */
size_t mp_lz77_compress_bound(size_t in_len);

/* Matcher scratch state.  mp_lz77_compress() keeps one on its stack (about
 * 32 KB); callers that run on small stacks can pass their own to
 * mp_lz77_compress_st(). The contents need no initialisation. */
#ifndef MP_LZ77_HASH_BITS
#define MP_LZ77_HASH_BITS 13
#endif
struct mp_lz77_state {
    uint32_t tab[1u << MP_LZ77_HASH_BITS]; /* two 16-bit entries per bucket */
};

/* Compress in[0..in_len) into out[0..out_cap).  Returns the compressed size,
 * or -1 when out_cap is too small.  The output follows the Windows layout:
 * the last flag word is padded with 1-bits (a whole 0xFFFFFFFF word when the
 * last group was full). */
ssize_t mp_lz77_compress(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);
ssize_t mp_lz77_compress_st(struct mp_lz77_state *st, const uint8_t *in, size_t in_len,
                            uint8_t *out, size_t out_cap);

/* Like mp_lz77_compress(), but returns MP_LZ77_NOT_WORTH (0) when the
 * compressed form would not be smaller than the input: the sender then sends
 * the data as is with the Compressed flag clear.  Gives up as soon as the
 * output reaches in_len bytes, so incompressible data costs little.  Returns
 * -1 only when out_cap < in_len - 1 and the output did not fit in out_cap;
 * pass out_cap >= in_len for a definite answer. */
#define MP_LZ77_NOT_WORTH 0
ssize_t mp_lz77_compress_if_worth(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap);
ssize_t mp_lz77_compress_if_worth_st(struct mp_lz77_state *st, const uint8_t *in, size_t in_len,
                                     uint8_t *out, size_t out_cap);

#endif
