/* Affinity tables: which worker serves what a key names (a MAPI/HTTP
 * session cookie, an RPC over HTTP virtual connection cookie), shared by
 * every worker under one mutex per table (doc/internals/workers.md); or a
 * string kept with a key (who a MAPI/HTTP session cookie was issued to,
 * transport/mapihttp/cookies.c).
 * Entries unused for idle_ms go (swept at most once a minute); beyond
 * MP_AFF_MAX, the least recently used.  A pinned entry (mp_aff_pin: what
 * it names is alive, e.g. a virtual connection) goes only when forgotten:
 * neither idle time nor a flood of new keys takes it.  Keys are hashed
 * with a per-table random seed (keys a client chooses cannot be made to
 * share one bucket). */
#ifndef MP_CORE_AFFINITY_H
#define MP_CORE_AFFINITY_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_AFF_KEY_MAX 128 /* longest key, in bytes */
#define MP_AFF_BUCKETS 1024u
#define MP_AFF_MAX 65536u

struct mp_aff_ent;

struct mp_aff {
    pthread_mutex_t mu;
    uint64_t idle_ms;
    struct mp_aff_ent *b[MP_AFF_BUCKETS];
    size_t n;
    uint64_t swept_ms;
    uint64_t seed;  /* the hash's, drawn at the first use */
    unsigned users; /* mp_aff_use: the table is emptied when the last one goes */
};
#define MP_AFF_INIT(idle)                                                                          \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .idle_ms = (idle)                                         \
    }

/* The worker the key names, or -1. */
int mp_aff_get(struct mp_aff *t, const void *key, size_t n);
/* The key is served by worker w from now on (overwrite), or by w unless
 * another worker has it already (!overwrite).  Returns the worker that
 * serves it (w when memory runs out). */
unsigned mp_aff_set(struct mp_aff *t, const void *key, size_t n, unsigned w, bool overwrite);
/* The key, served by worker w, stays until forgotten (see above); false
 * when the table does not give it to w. */
bool mp_aff_pin(struct mp_aff *t, const void *key, size_t n, unsigned w);
/* The key is forgotten (only while worker w serves it). */
void mp_aff_forget(struct mp_aff *t, const void *key, size_t n, unsigned w);
/* The key's string is s (a copy; the entry made if new).  0, or -1 (key
 * too long, out of memory). */
int mp_aff_set_str(struct mp_aff *t, const void *key, size_t n, const char *s);
/* The key's string into out (on bytes with the NUL, cut to fit): true, or
 * false when the key has none. */
bool mp_aff_get_str(struct mp_aff *t, const void *key, size_t n, char *out, size_t on);
/* One user more (delta 1) or less (-1); the last one's going empties it. */
void mp_aff_use(struct mp_aff *t, int delta);
#endif
