#include "core/buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/poison.h"

/* The thread's cache of buffer memory (mp_buf_cache_enable): a decoded
 * call's buffers (reassembled stubs, decompressed payloads, re-encoded ROP
 * buffers, the connections' output) come and go several times per call;
 * taking them from here costs no malloc and no free, and no consolidation
 * of the heap when a large one is freed.  Blocks of 1 to 128 KiB in eight
 * power-of-two classes, a stack of at most CLASS_SLOTS per class and
 * CACHE_BYTES (16 MiB) in all per thread: enough for the calls ending in
 * one turn of a worker's loop with 256 clients to leave theirs for the
 * calls starting in the next.  Under AddressSanitizer a cached block is
 * poisoned, as a freed one would be. */
#define N_CLASS 8 /* 1 KiB << k */
#define CLASS_SLOTS 512
#define CACHE_MIN ((size_t)1024)
#define CACHE_MAX (CACHE_MIN << (N_CLASS - 1))
#define CACHE_BYTES ((size_t)16 << 20)

/* class k holds blocks of at least CACHE_MIN << k bytes */
static _Thread_local void *cache[N_CLASS][CLASS_SLOTS];
static _Thread_local unsigned n_cache[N_CLASS];
static _Thread_local size_t cache_bytes;
static _Thread_local bool cache_on;

void mp_buf_cache_enable(void)
{
    cache_on = true;
}

void mp_buf_cache_release(void)
{
    for (unsigned k = 0; k < N_CLASS; k++) {
        while (n_cache[k]) {
            void *p = cache[k][--n_cache[k]];
            UNPOISON(p, CACHE_MIN << k);
            free(p);
        }
    }
    cache_bytes = 0;
    cache_on = false;
}

void *mp_buf_take(size_t need, size_t *cap)
{
    size_t c = CACHE_MIN;
    unsigned k = 0;
    while (c < need) {
        c *= 2;
        k++;
    }
    /* the class of need, or one or two above (at most 4 times the need) */
    for (unsigned j = k; j < N_CLASS && j <= k + 2; j++) {
        if (!n_cache[j])
            continue;
        void *p = cache[j][--n_cache[j]];
        *cap = CACHE_MIN << j;
        cache_bytes -= *cap;
        UNPOISON(p, *cap);
        return p;
    }
    void *p = malloc(c);
    if (p)
        *cap = c;
    return p;
}

void mp_buf_give(void *p, size_t cap)
{
    if (!p)
        return;
    unsigned k = 0;
    while (k + 1 < N_CLASS && (CACHE_MIN << (k + 1)) <= cap)
        k++;
    size_t c = CACHE_MIN << k; /* the class's size: cap or less */
    if (!cache_on || cap < CACHE_MIN || cap >= 2 * CACHE_MAX || n_cache[k] == CLASS_SLOTS ||
        cache_bytes + c > CACHE_BYTES) {
        free(p);
        return;
    }
    POISON(p, c);
    cache[k][n_cache[k]++] = p;
    cache_bytes += c;
}

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
    if (extra > SIZE_MAX - b->len)
        return -1; /* len + extra would wrap */
    size_t need = b->len + extra, cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2; /* doubling would wrap: just enough */
    if (!b->data || (cache_on && cap <= CACHE_MAX)) {
        size_t got;
        uint8_t *p = mp_buf_take(cap, &got);
        if (!p)
            return -1;
        if (b->len)
            memcpy(p, b->data, b->len);
        mp_buf_give(b->data, b->cap);
        b->data = p;
        b->cap = got;
        return 0;
    }
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
    mp_buf_give(b->data, b->cap);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void mp_buf_free_wiped(struct mp_buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    mp_buf_free(b);
}

void mp_buf_trim(struct mp_buf *b)
{
    if (b->off == b->len)
        mp_buf_free(b);
}
