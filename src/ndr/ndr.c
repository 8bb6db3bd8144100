#include "ndr/ndr.h"

int mp_ndr_push_align(struct mp_buf *b, size_t base, size_t a)
{
    static const uint8_t z[8];
    size_t pad = (a - ((b->len - base) & (a - 1))) & (a - 1);
    return pad ? mp_buf_append(b, z, pad) : 0;
}

int mp_ndr_push_u16(struct mp_buf *b, size_t base, uint16_t v)
{
    uint8_t q[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return mp_ndr_push_align(b, base, 2) || mp_buf_append(b, q, 2);
}

int mp_ndr_push_u32(struct mp_buf *b, size_t base, uint32_t v)
{
    uint8_t q[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return mp_ndr_push_align(b, base, 4) || mp_buf_append(b, q, 4);
}

int mp_ndr_push_bytes(struct mp_buf *b, const void *p, size_t k)
{
    return mp_buf_append(b, p, k);
}
