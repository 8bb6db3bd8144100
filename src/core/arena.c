#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/poison.h"

struct mp_arena_chunk {
    struct mp_arena_chunk *next;
    size_t cap, used;
    _Alignas(16) unsigned char data[];
};

#define CHUNK_MIN 4096u

/* Under AddressSanitizer a chunk's bytes not handed out are poisoned: a
 * read past an allocation into the chunk's free tail, or of an allocation
 * of a call whose arena was reset (a reused chunk, mp_call_arena), is
 * reported as it would be for freed memory (core/poison.h). */

static void chunk_free(struct mp_arena_chunk *c)
{
    UNPOISON(c->data, c->cap);
    free(c);
}

void mp_arena_init(struct mp_arena *a)
{
    a->head = NULL;
    a->used = 0;
    a->limit = 0;
}

/* n bytes, not zeroed (for copies) */
static void *arena_take(struct mp_arena *a, size_t n);

void *mp_arena_alloc(struct mp_arena *a, size_t n)
{
    void *p = arena_take(a, n);
    if (p)
        memset(p, 0, n ? (n + 15u) & ~(size_t)15u : 16u);
    return p;
}

static void *arena_take(struct mp_arena *a, size_t n)
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
        POISON(nc->data, cap);
        a->head = c = nc;
    }
    void *p = c->data + c->used;
    UNPOISON(p, need);
    c->used += need;
    a->used += need;
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
    uint8_t *q = arena_take(a, n);
    if (!q)
        return NULL;
    if (n)
        memcpy(q, p, n);
    size_t pad = (n ? (n + 15u) & ~(size_t)15u : 16u) - n;
    memset(q + n, 0, pad); /* as mp_arena_alloc leaves it */
    return q;
}

char *mp_arena_strdup(struct mp_arena *a, const char *s)
{
    return mp_arena_memdup(a, s, strlen(s) + 1);
}

void mp_arena_reset(struct mp_arena *a)
{
    /* keep the largest chunk (a call's arena grows by doubling: the
     * newest), unless it is larger than MP_ARENA_KEEP_MAX */
    struct mp_arena_chunk *keep = NULL;
    for (struct mp_arena_chunk *c = a->head; c; c = c->next)
        if (c->cap <= MP_ARENA_KEEP_MAX && (!keep || c->cap > keep->cap))
            keep = c;
    for (struct mp_arena_chunk *c = a->head; c;) {
        struct mp_arena_chunk *n = c->next;
        if (c != keep)
            chunk_free(c);
        c = n;
    }
    if (keep) {
        keep->used = 0;
        keep->next = NULL;
        POISON(keep->data, keep->cap);
    }
    a->head = keep;
    a->used = 0;
}

size_t mp_arena_held(const struct mp_arena *a)
{
    size_t n = 0;
    for (const struct mp_arena_chunk *c = a->head; c; c = c->next)
        n += c->cap;
    return n;
}

void mp_arena_free(struct mp_arena *a)
{
    struct mp_arena_chunk *c = a->head;
    while (c) {
        struct mp_arena_chunk *n = c->next;
        chunk_free(c);
        c = n;
    }
    a->head = NULL;
    a->used = 0;
}
