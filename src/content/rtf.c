/* Compressed RTF decompression (MS-OXRTFCP 2.1.3.1 and 3.1.3): a 4096-byte
 * dictionary preloaded with 207 bytes of RTF, then runs of a control byte
 * (bits LSB first: 0 literal byte, 1 big-endian reference of 12-bit offset
 * and 4-bit length - 2) until a reference to the dictionary's write position. */
#include "content/rtf.h"

#include <pthread.h>

#include <string.h>

static const char prebuf[] =
    "{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss "
    "\\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier"
    "{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";
#define PREBUF_LEN 207
_Static_assert(sizeof(prebuf) - 1 == PREBUF_LEN, "MS-OXRTFCP dictionary is 207 bytes");

#define COMP_LZFU 0x75465A4Cu
#define COMP_MELA 0x414C454Du

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t mp_rtf_crc(const uint8_t *p, size_t n)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT; /* workers call in at once */
    pthread_once(&once, crc_init);
    const uint32_t *table = crc_table;
    uint32_t crc = 0;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc;
}

const char *mp_rtf_strerror(enum mp_rtf_status s)
{
    switch (s) {
    case MP_RTF_OK:
        return "ok";
    case MP_RTF_SHORT:
        return "compressed RTF header or COMPSIZE past the data";
    case MP_RTF_TYPE:
        return "unknown compressed RTF COMPTYPE";
    case MP_RTF_CRC:
        return "compressed RTF CRC mismatch";
    case MP_RTF_TRUNCATED:
        return "compressed RTF ends before its end token";
    case MP_RTF_TOO_BIG:
        return "decompressed RTF passes the size limit";
    case MP_RTF_NOMEM:
        return "out of memory";
    }
    return "?";
}

enum mp_rtf_status mp_rtf_decompress(const uint8_t *in, size_t n, struct mp_buf *out,
                                     size_t max_out)
{
    if (n < 16)
        return MP_RTF_SHORT;
    uint32_t comp_size = le32(in), raw_size = le32(in + 4), type = le32(in + 8),
             crc = le32(in + 12);
    if (comp_size < 12 || (size_t)comp_size - 12 > n - 16)
        return MP_RTF_SHORT;
    const uint8_t *p = in + 16;
    size_t len = comp_size - 12;
    if (type == COMP_MELA) {
        size_t take = raw_size < len ? raw_size : len;
        if (take > max_out)
            return MP_RTF_TOO_BIG;
        return mp_buf_append(out, p, take) ? MP_RTF_NOMEM : MP_RTF_OK;
    }
    if (type != COMP_LZFU)
        return MP_RTF_TYPE;
    if (mp_rtf_crc(p, len) != crc)
        return MP_RTF_CRC;
    uint8_t dict[4096];
    memcpy(dict, prebuf, PREBUF_LEN);
    memset(dict + PREBUF_LEN, 0, sizeof(dict) - PREBUF_LEN);
    unsigned wpos = PREBUF_LEN;
    size_t produced = 0, i = 0;
    uint8_t chunk[512];
    size_t cn = 0;
#define EMIT(c)                                                                                    \
    do {                                                                                           \
        if (++produced > max_out)                                                                  \
            return MP_RTF_TOO_BIG;                                                                 \
        chunk[cn++] = (c);                                                                         \
        dict[wpos] = (c);                                                                          \
        wpos = (wpos + 1) & 0xFFF;                                                                 \
        if (cn == sizeof(chunk)) {                                                                 \
            if (mp_buf_append(out, chunk, cn))                                                     \
                return MP_RTF_NOMEM;                                                               \
            cn = 0;                                                                                \
        }                                                                                          \
    } while (0)
    while (i < len) {
        uint8_t ctrl = p[i++];
        for (int bit = 0; bit < 8; bit++) {
            if (!(ctrl & (1u << bit))) {
                if (i >= len)
                    return MP_RTF_TRUNCATED;
                uint8_t c = p[i++];
                EMIT(c);
                continue;
            }
            if (len - i < 2)
                return MP_RTF_TRUNCATED;
            unsigned ref = (unsigned)p[i] << 8 | p[i + 1];
            i += 2;
            unsigned off = ref >> 4, count = (ref & 0xF) + 2;
            if (off == wpos) /* the end token */
                return cn && mp_buf_append(out, chunk, cn) ? MP_RTF_NOMEM : MP_RTF_OK;
            for (unsigned k = 0; k < count; k++) {
                uint8_t c = dict[(off + k) & 0xFFF];
                EMIT(c);
            }
        }
    }
#undef EMIT
    return MP_RTF_TRUNCATED;
}

/* MS-OXRTFCP 2.1.3.1.1: COMPSIZE (the contents plus the 12 header bytes
 * after it), RAWSIZE, COMPTYPE UNCOMPRESSED ("MELA"), CRC 0, RAWDATA. */
int mp_rtf_store(const uint8_t *rtf, size_t n, struct mp_buf *out)
{
    if (n > 0xFFFFFFFFu - 12)
        return -1;
    uint8_t h[16];
    uint32_t v[4] = {(uint32_t)n + 12, (uint32_t)n, COMP_MELA, 0};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 4; k++)
            h[4 * i + k] = (uint8_t)(v[i] >> (8 * k));
    return mp_buf_append(out, h, sizeof h) || mp_buf_append(out, rtf, n) ? -1 : 0;
}
