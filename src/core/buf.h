/* A growable byte buffer with a read offset: data lives in [off, len). */
#ifndef MP_BUF_H
#define MP_BUF_H
#include <stddef.h>
#include <stdint.h>

struct mp_buf {
    uint8_t *data;
    size_t off, len, cap;
};

static inline size_t mp_buf_avail(const struct mp_buf *b)
{
    return b->len - b->off;
}
static inline uint8_t *mp_buf_head(const struct mp_buf *b)
{
    return b->data + b->off;
}
/* Room for extra bytes at the end: 0, or -1 without memory or when len + extra
 * would pass SIZE_MAX (the buffer then as it was). */
int mp_buf_reserve(struct mp_buf *b, size_t extra);
int mp_buf_append(struct mp_buf *b, const void *p, size_t n);
void mp_buf_consume(struct mp_buf *b, size_t n);
void mp_buf_free(struct mp_buf *b);
/* mp_buf_free for a buffer that held a secret (an Authorization header, a
 * token): its whole capacity is zeroed first (explicit_bzero: not optimised
 * away), so the memory goes back to the cache or malloc clean. */
void mp_buf_free_wiped(struct mp_buf *b);
/* Releases the memory of an empty buffer (idle sessions keep none). */
void mp_buf_trim(struct mp_buf *b);
/* A per-thread cache of buffer memory, for event-loop threads: enabled on
 * the thread by mp_buf_cache_enable, emptied (and disabled) by
 * mp_buf_cache_release before the thread ends.  mp_buf_take returns a
 * block of at least need bytes (its size in *cap: a power of two, at least
 * 1 KiB), mp_buf_give takes one back (p from malloc or mp_buf_take, cap its
 * size or less; freed when the cache is off or full). */
void mp_buf_cache_enable(void);
void mp_buf_cache_release(void);
void *mp_buf_take(size_t need, size_t *cap);
void mp_buf_give(void *p, size_t cap);
#endif
