/* A chunked arena: many small allocations, freed all at once.  Used by the
 * codecs: everything a decoded call points to lives in one arena, so a call
 * is released with one mp_arena_reset()/mp_arena_free(). */
#ifndef MP_ARENA_H
#define MP_ARENA_H
#include <stddef.h>

struct mp_arena_chunk;
struct mp_arena {
    struct mp_arena_chunk *head; /* newest chunk first */
    size_t used;                 /* bytes handed out since init/reset */
    size_t limit;                /* 0 = MP_ARENA_DEFAULT_LIMIT; allocations beyond fail */
};

#define MP_ARENA_DEFAULT_LIMIT ((size_t)256 << 20)

void mp_arena_init(struct mp_arena *a);
/* Zeroed, 16-byte aligned memory, or NULL (out of memory or over the limit).
 * mp_arena_alloc(a, 0) returns a valid unique pointer. */
void *mp_arena_alloc(struct mp_arena *a, size_t n);
/* n elements of size each, with overflow check. */
void *mp_arena_calloc(struct mp_arena *a, size_t n, size_t size);
char *mp_arena_strdup(struct mp_arena *a, const char *s);
void *mp_arena_memdup(struct mp_arena *a, const void *p, size_t n);
/* Forgets every allocation; keeps the largest chunk of at most
 * MP_ARENA_KEEP_MAX bytes for reuse. */
#define MP_ARENA_KEEP_MAX ((size_t)256 << 10)
void mp_arena_reset(struct mp_arena *a);
/* Releases everything; the arena may be init'ed again. */
void mp_arena_free(struct mp_arena *a);
/* Bytes of chunk memory the arena holds (after a reset: the kept chunk). */
size_t mp_arena_held(const struct mp_arena *a);
#endif
