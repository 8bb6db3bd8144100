#include "rop/ropmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct mp_rop_chunk {
    struct mp_rop_chunk *next;
    size_t cap, used;
    _Alignas(max_align_t) unsigned char data[];
};

#define CHUNK_MIN 16384u
#define ARENA_DEFAULT_LIMIT (64u << 20)

void *mp_rop_alloc(struct mp_rop_arena *a, size_t n)
{
    size_t al = _Alignof(max_align_t);
    n = (n + al - 1) & ~(al - 1);
    if (n == 0)
        n = al;
    size_t limit = a->limit ? a->limit : ARENA_DEFAULT_LIMIT;
    struct mp_rop_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_MIN ? n : CHUNK_MIN;
        if (a->total + cap > limit)
            return NULL;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
        a->total += cap;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

void *mp_rop_allocn(struct mp_rop_arena *a, size_t n, size_t sz)
{
    if (sz && n > SIZE_MAX / sz)
        return NULL;
    return mp_rop_alloc(a, n * sz);
}

void mp_rop_arena_free(struct mp_rop_arena *a)
{
    struct mp_rop_chunk *c = a->head;
    while (c) {
        struct mp_rop_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = a->total = 0;
}
