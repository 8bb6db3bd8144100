#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct mp_arena_chunk {
    struct mp_arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define CHUNK_MIN 4096u

void mp_arena_init(struct mp_arena *a)
{
    a->head = NULL;
    a->used = 0;
    a->limit = 0;
}

void *mp_arena_alloc(struct mp_arena *a, size_t n)
{
    size_t limit = a->limit ? a->limit : MP_ARENA_DEFAULT_LIMIT;
    if (n > SIZE_MAX - 32)
        return NULL;
    size_t need = n ? (n + 15u) & ~(size_t)15u : 16u;
    if (a->used > limit || need > limit - a->used)
        return NULL;
    struct mp_arena_chunk *c = a->head;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > CHUNK_MIN ? need : CHUNK_MIN;
        if (c && c->cap * 2 > cap && c->cap * 2 <= ((size_t)1 << 20))
            cap = c->cap * 2 > need ? c->cap * 2 : need;
        struct mp_arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc)
            return NULL;
        nc->cap = cap;
        nc->used = 0;
        nc->next = c;
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    a->used += need;
    memset(p, 0, need);
    return p;
}

void *mp_arena_calloc(struct mp_arena *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return mp_arena_alloc(a, n * size);
}

void *mp_arena_memdup(struct mp_arena *a, const void *p, size_t n)
{
    void *q = mp_arena_alloc(a, n);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

char *mp_arena_strdup(struct mp_arena *a, const char *s)
{
    size_t n = strlen(s);
    char *q = mp_arena_alloc(a, n + 1);
    if (q)
        memcpy(q, s, n);
    return q;
}

void mp_arena_reset(struct mp_arena *a)
{
    struct mp_arena_chunk *c = a->head;
    if (!c)
        return;
    /* keep the oldest chunk */
    while (c->next) {
        struct mp_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    c->used = 0;
    a->head = c;
    a->used = 0;
}

void mp_arena_free(struct mp_arena *a)
{
    struct mp_arena_chunk *c = a->head;
    while (c) {
        struct mp_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}
