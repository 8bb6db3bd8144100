#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

int mp_buf_reserve(struct mp_buf *b, size_t extra)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= extra)
        return 0;
    if (b->off) { /* compact first */
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra)
            return 0;
    }
    size_t need = b->len + extra, cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int mp_buf_append(struct mp_buf *b, const void *p, size_t n)
{
    if (!n) /* p may be NULL then (an empty token) */
        return 0;
    if (mp_buf_reserve(b, n))
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void mp_buf_consume(struct mp_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void mp_buf_free(struct mp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void mp_buf_trim(struct mp_buf *b)
{
    if (b->off == b->len)
        mp_buf_free(b);
}
