/* Affinity tables: which worker serves what a key names (a MAPI/HTTP
 * session cookie, an RPC over HTTP virtual connection cookie), shared by
 * every worker under one mutex per table (doc/internals/workers.md); or a
 * string kept with a key (who a MAPI/HTTP session cookie was issued to,
 * transport/mapihttp/cookies.c).
 *
 * An entry is either free or pinned.  A free one goes when unused for
 * idle_ms, or, when the table is full (max entries), for a new key: the
 * least recently used free entry first.  A pinned one (mp_aff_pin,
 * mp_aff_set_pinned: what it names is alive, e.g. a virtual connection or
 * a MAPI/HTTP session) goes only when forgotten, unpinned, or unused for
 * pin_idle_ms (0: never), or its own lifetime (mp_aff_set_pinned_for,
 * mp_aff_pin_for: a MAPI/HTTP session's, from the server's
 * X-ExpirationInfo): neither a flood of new keys nor free entries' idle
 * time takes it.  When every entry is pinned a new key is not kept:
 * the table counts it, a warning says so (at most every 10 s) and the
 * metric mapiproxy_affinity_full_total{table=name} goes up.
 *
 * Every operation is O(1) under the mutex apart from walking one bucket:
 * free entries sit on a list by last use (oldest first) and pinned ones on
 * another by deadline (last use plus lifetime, soonest first), so the
 * oldest free entry is the first one, and expiry looks at no more than
 * a few entries at the lists' heads on each new key (there is no periodic
 * scan of the whole table).  Keys are hashed with a per-table random seed
 * (keys a client chooses cannot be made to share one bucket). */
#ifndef MP_CORE_AFFINITY_H
#define MP_CORE_AFFINITY_H
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_AFF_KEY_MAX 128 /* longest key, in bytes */
#define MP_AFF_BUCKETS 16384u
#define MP_AFF_MAX 65536u /* entries, unless mp_aff_set_max says otherwise */

struct mp_aff_ent;

struct mp_aff_list {
    struct mp_aff_ent *head, *tail; /* least recently used first */
};

struct mp_aff {
    pthread_mutex_t mu;
    const char *name;     /* log lines, metrics */
    uint64_t idle_ms;     /* free entries */
    uint64_t pin_idle_ms; /* pinned entries (0: only forgetting or unpinning takes them) */
    size_t max;           /* 0: MP_AFF_MAX */
    struct mp_aff_ent *b[MP_AFF_BUCKETS];
    struct mp_aff_list free_l, pin_l; /* by last use; by deadline */
    size_t n, n_pinned;
    uint64_t seed;    /* the hash's, drawn at the first use */
    unsigned users;   /* mp_aff_use: the table is emptied when the last one goes */
    uint64_t full;    /* new keys not kept: every entry pinned */
    uint64_t evicted; /* free entries pushed out by new keys */
    uint64_t full_logged_ms;
    uint64_t full_unlogged;
};
#define MP_AFF_INIT(nm, idle, pin_idle)                                                            \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .name = (nm), .idle_ms = (idle),                          \
        .pin_idle_ms = (pin_idle)                                                                  \
    }

/* The worker the key names, or -1. */
int mp_aff_get(struct mp_aff *t, const void *key, size_t n);
/* The key is served by worker w from now on (overwrite), or by w unless
 * another worker has it already (!overwrite).  Returns the worker that
 * serves it (w when it is not kept: memory, or a table full of pinned
 * entries). */
unsigned mp_aff_set(struct mp_aff *t, const void *key, size_t n, unsigned w, bool overwrite);
/* The key is served by worker w from now on, pinned.  0, or -1 when it is
 * not kept (key too long, table full of pinned entries, out of memory). */
int mp_aff_set_pinned(struct mp_aff *t, const void *key, size_t n, unsigned w);
/* The same, unused for life_ms it goes (0: the table's pin_idle_ms). */
int mp_aff_set_pinned_for(struct mp_aff *t, const void *key, size_t n, unsigned w,
                          uint64_t life_ms);
/* The key, served by worker w, is pinned (see above); false when the
 * table does not give it to w. */
bool mp_aff_pin(struct mp_aff *t, const void *key, size_t n, unsigned w);
/* The same, unused for life_ms it goes (0: the table's pin_idle_ms). */
bool mp_aff_pin_for(struct mp_aff *t, const void *key, size_t n, unsigned w, uint64_t life_ms);
/* The key is free again (what it named has ended; it may still be asked
 * for a while). */
void mp_aff_unpin(struct mp_aff *t, const void *key, size_t n);
/* The key is forgotten (only while worker w serves it). */
void mp_aff_forget(struct mp_aff *t, const void *key, size_t n, unsigned w);
/* The key's string is s (a copy; the entry made if new, worker 0).  0, or
 * -1 (key too long, not kept, out of memory). */
int mp_aff_set_str(struct mp_aff *t, const void *key, size_t n, const char *s);
/* The key's string into out (on bytes with the NUL, cut to fit): true, or
 * false when the key has none. */
bool mp_aff_get_str(struct mp_aff *t, const void *key, size_t n, char *out, size_t on);
/* At most max entries from now on (at least 16); the entries over it go
 * as new keys come. */
void mp_aff_set_max(struct mp_aff *t, size_t max);
/* Entries now, and how many of them are pinned. */
size_t mp_aff_count(struct mp_aff *t, size_t *pinned);
/* One user more (delta 1) or less (-1); the last one's going empties it. */
void mp_aff_use(struct mp_aff *t, int delta);
#endif
