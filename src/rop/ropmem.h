/* A small chunked arena for decoded ROP buffers: everything a decode
 * allocates lives until mp_rop_arena_free().  (Kept local to src/rop so the
 * codec has no dependency on the process/session arenas of the core.) */
#ifndef MP_ROP_MEM_H
#define MP_ROP_MEM_H
#include <stddef.h>

struct mp_rop_chunk;
struct mp_rop_arena {
    struct mp_rop_chunk *head;
    size_t used, total; /* bytes handed out / bytes held */
    size_t limit;       /* 0 = default (64 MB): allocation fails beyond it */
};

/* Zeroed memory, aligned for any scalar; NULL on failure or limit. */
void *mp_rop_alloc(struct mp_rop_arena *a, size_t n);
/* n elements of size sz, overflow-checked. */
void *mp_rop_allocn(struct mp_rop_arena *a, size_t n, size_t sz);
void mp_rop_arena_free(struct mp_rop_arena *a);
#endif
