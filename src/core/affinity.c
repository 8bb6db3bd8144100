/* Affinity tables (affinity.h). */
#include "core/affinity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "event/loop.h"
#include "ops/metrics.h"

#define EXPIRE_STEP 8 /* idle entries dropped from a list's head per new key, at most */
#define PLACE_STEP 8  /* later entries a pinned one is placed before, at most (link_use) */
#define FULL_LOG_MS 10000

struct mp_aff_ent {
    struct mp_aff_ent *next;          /* in its bucket */
    struct mp_aff_ent *older, *newer; /* in t->free_l or t->pin_l */
    uint64_t hash;
    uint64_t last_ms;
    uint64_t life_ms; /* pinned: unused this long it goes (0: the table's pin_idle_ms) */
    unsigned worker;
    bool pinned;
    size_t len;
    char *str; /* mp_aff_set_str */
    uint8_t key[MP_AFF_KEY_MAX];
};

static uint64_t hash_of(struct mp_aff *t, const void *key, size_t n)
{
    if (!t->seed) { /* under mu */
        if (getrandom(&t->seed, sizeof t->seed, GRND_NONBLOCK) != (ssize_t)sizeof t->seed)
            t->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)t;
        t->seed |= 1;
    }
    /* FNV-1a from a secret basis, then a 64-bit finalizer (splitmix64's):
     * the bucket depends on every bit of the state */
    uint64_t x = 14695981039346656037u ^ t->seed;
    for (size_t i = 0; i < n; i++)
        x = (x ^ ((const uint8_t *)key)[i]) * 1099511628211u;
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebu;
    x ^= x >> 31;
    return x;
}

static struct mp_aff_ent **find_h(struct mp_aff *t, const void *key, size_t n, uint64_t h)
{
    struct mp_aff_ent **pp = &t->b[h % MP_AFF_BUCKETS];
    while (*pp && ((*pp)->hash != h || (*pp)->len != n || memcmp((*pp)->key, key, n)))
        pp = &(*pp)->next;
    return pp;
}

static struct mp_aff_list *list_of(struct mp_aff *t, const struct mp_aff_ent *e)
{
    return e->pinned ? &t->pin_l : &t->free_l;
}

static void unlink_use(struct mp_aff *t, struct mp_aff_ent *e)
{
    struct mp_aff_list *l = list_of(t, e);
    if (e->older)
        e->older->newer = e->newer;
    else
        l->head = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        l->tail = e->older;
    e->older = e->newer = NULL;
}

/* How long e may stay unused (0: for ever). */
static uint64_t idle_of(const struct mp_aff *t, const struct mp_aff_ent *e)
{
    if (!e->pinned)
        return t->idle_ms;
    return e->life_ms ? e->life_ms : t->pin_idle_ms;
}

/* When e goes if unused until then. */
static uint64_t deadline(const struct mp_aff *t, const struct mp_aff_ent *e)
{
    uint64_t idle = idle_of(t, e);
    return idle ? e->last_ms + idle : UINT64_MAX;
}

/* e at its list's tail; a pinned one before the last few entries whose
 * deadline is later (pinned entries may each have their own lifetime, and
 * expiry reads the list's head): the pinned list is by deadline, soonest
 * first.  At most PLACE_STEP entries are passed, so an entry may sit behind
 * a later one and go late, never early. */
static void link_use(struct mp_aff *t, struct mp_aff_ent *e)
{
    struct mp_aff_list *l = list_of(t, e);
    struct mp_aff_ent *after = l->tail;
    if (e->pinned) {
        uint64_t d = deadline(t, e);
        for (int k = 0; k < PLACE_STEP && after && deadline(t, after) > d; k++)
            after = after->older;
    }
    e->older = after;
    e->newer = after ? after->newer : l->head;
    if (e->newer)
        e->newer->older = e;
    else
        l->tail = e;
    if (after)
        after->newer = e;
    else
        l->head = e;
}

/* e was used now: the newest of its list. */
static void touch(struct mp_aff *t, struct mp_aff_ent *e, uint64_t now)
{
    e->last_ms = now;
    if (e->newer) {
        unlink_use(t, e);
        link_use(t, e);
    }
}

/* e pinned (for life_ms; 0: the table's pin_idle_ms) or free. */
static void set_pinned(struct mp_aff *t, struct mp_aff_ent *e, bool pin, uint64_t life_ms)
{
    if (!pin)
        life_ms = 0;
    if (e->pinned == pin && e->life_ms == life_ms)
        return;
    unlink_use(t, e);
    if (e->pinned != pin) {
        if (pin)
            t->n_pinned++;
        else
            t->n_pinned--;
    }
    e->pinned = pin;
    e->life_ms = life_ms;
    link_use(t, e);
}

static void drop(struct mp_aff *t, struct mp_aff_ent *e)
{
    struct mp_aff_ent **pp = &t->b[e->hash % MP_AFF_BUCKETS];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    unlink_use(t, e);
    if (e->pinned)
        t->n_pinned--;
    free(e->str);
    free(e);
    t->n--;
}

static bool expired(const struct mp_aff *t, const struct mp_aff_ent *e, uint64_t now)
{
    uint64_t idle = idle_of(t, e);
    return idle && now - e->last_ms > idle;
}

/* Under mu: a few idle entries from the heads (the least recently used) of
 * both lists go. */
static void expire(struct mp_aff *t, uint64_t now)
{
    for (int k = 0; k < EXPIRE_STEP && t->free_l.head && expired(t, t->free_l.head, now); k++)
        drop(t, t->free_l.head);
    for (int k = 0; k < EXPIRE_STEP && t->pin_l.head && expired(t, t->pin_l.head, now); k++)
        drop(t, t->pin_l.head);
}

/* Under mu: the key's entry, NULL when absent (an idle one found is
 * dropped: it is gone, whether or not expire() reached it yet). */
static struct mp_aff_ent *lookup(struct mp_aff *t, const void *key, size_t n, uint64_t now)
{
    struct mp_aff_ent *e = *find_h(t, key, n, hash_of(t, key, n));
    if (e && expired(t, e, now)) {
        drop(t, e);
        e = NULL;
    }
    return e;
}

/* What a call learned under mu, reported after it. */
struct report {
    bool full, evicted;
    uint64_t log_count; /* new keys not kept since the last warning; 0: no warning now */
    size_t n, pinned, max;
};

static void report(struct mp_aff *t, const struct report *r)
{
    if (r->evicted)
        mp_metrics_affinity(t->name, false);
    if (!r->full)
        return;
    mp_metrics_affinity(t->name, true);
    if (r->log_count)
        mp_warn("affinity %s: full (%zu entries, %zu of them pinned: live sessions or virtual "
                "connections; at most %zu, mapiproxy:affinity table size): %llu new key%s not "
                "kept since the last warning (none of the live ones is pushed out)",
                t->name ? t->name : "-", r->n, r->pinned, r->max, (unsigned long long)r->log_count,
                r->log_count == 1 ? "" : "s");
}

/* Under mu: the key's entry, made (worker w) when it is not there; NULL
 * when it is not kept (r says why).  Its use time is now. */
static struct mp_aff_ent *take(struct mp_aff *t, const void *key, size_t n, unsigned w,
                               struct report *r)
{
    uint64_t now = mp_now_ms();
    struct mp_aff_ent *e = lookup(t, key, n, now);
    if (e) {
        touch(t, e, now);
        return e;
    }
    expire(t, now);
    size_t max = t->max ? t->max : MP_AFF_MAX;
    while (t->n >= max && t->free_l.head) { /* the least recently used free entry */
        drop(t, t->free_l.head);
        t->evicted++;
        r->evicted = true;
    }
    if (t->n >= max) { /* every entry is pinned */
        t->full++;
        t->full_unlogged++;
        r->full = true;
        if (!t->full_logged_ms || now - t->full_logged_ms >= FULL_LOG_MS) {
            t->full_logged_ms = now;
            r->log_count = t->full_unlogged;
            t->full_unlogged = 0;
        }
        r->n = t->n;
        r->pinned = t->n_pinned;
        r->max = max;
        return NULL;
    }
    if (!(e = calloc(1, sizeof *e)))
        return NULL;
    uint64_t h = hash_of(t, key, n);
    memcpy(e->key, key, n);
    e->len = n;
    e->hash = h;
    e->worker = w;
    e->last_ms = now;
    struct mp_aff_ent **pp = &t->b[h % MP_AFF_BUCKETS];
    e->next = *pp;
    *pp = e;
    link_use(t, e);
    t->n++;
    return e;
}

int mp_aff_get(struct mp_aff *t, const void *key, size_t n)
{
    int w = -1;
    if (n > MP_AFF_KEY_MAX)
        return -1;
    pthread_mutex_lock(&t->mu);
    uint64_t now = mp_now_ms();
    struct mp_aff_ent *e = lookup(t, key, n, now);
    if (e) {
        touch(t, e, now);
        w = (int)e->worker;
    }
    pthread_mutex_unlock(&t->mu);
    return w;
}

unsigned mp_aff_set(struct mp_aff *t, const void *key, size_t n, unsigned w, bool overwrite)
{
    if (n > MP_AFF_KEY_MAX)
        return w;
    struct report r = {0};
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = take(t, key, n, w, &r);
    if (e) {
        if (overwrite)
            e->worker = w;
        w = e->worker;
    }
    pthread_mutex_unlock(&t->mu);
    report(t, &r);
    return w;
}

int mp_aff_set_pinned(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    return mp_aff_set_pinned_for(t, key, n, w, 0);
}

int mp_aff_set_pinned_for(struct mp_aff *t, const void *key, size_t n, unsigned w, uint64_t life_ms)
{
    if (n > MP_AFF_KEY_MAX)
        return -1;
    struct report r = {0};
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = take(t, key, n, w, &r);
    if (e) {
        e->worker = w;
        set_pinned(t, e, true, life_ms);
    }
    pthread_mutex_unlock(&t->mu);
    report(t, &r);
    return e ? 0 : -1;
}

int mp_aff_set_str(struct mp_aff *t, const void *key, size_t n, const char *s)
{
    char *copy = n <= MP_AFF_KEY_MAX ? strdup(s) : NULL;
    if (!copy)
        return -1;
    struct report r = {0};
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = take(t, key, n, 0, &r);
    if (e) {
        free(e->str);
        e->str = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    report(t, &r);
    free(copy);
    return e ? 0 : -1;
}

bool mp_aff_get_str(struct mp_aff *t, const void *key, size_t n, char *out, size_t on)
{
    bool found = false;
    if (n > MP_AFF_KEY_MAX || !on)
        return false;
    pthread_mutex_lock(&t->mu);
    uint64_t now = mp_now_ms();
    struct mp_aff_ent *e = lookup(t, key, n, now);
    if (e && e->str) {
        touch(t, e, now);
        snprintf(out, on, "%s", e->str);
        found = true;
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

bool mp_aff_pin(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    return mp_aff_pin_for(t, key, n, w, 0);
}

bool mp_aff_pin_for(struct mp_aff *t, const void *key, size_t n, unsigned w, uint64_t life_ms)
{
    if (n > MP_AFF_KEY_MAX)
        return false;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = lookup(t, key, n, mp_now_ms());
    bool ok = e && e->worker == w;
    if (ok)
        set_pinned(t, e, true, life_ms);
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void mp_aff_unpin(struct mp_aff *t, const void *key, size_t n)
{
    if (n > MP_AFF_KEY_MAX)
        return;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = lookup(t, key, n, mp_now_ms());
    if (e)
        set_pinned(t, e, false, 0);
    pthread_mutex_unlock(&t->mu);
}

void mp_aff_forget(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    if (n > MP_AFF_KEY_MAX)
        return;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = *find_h(t, key, n, hash_of(t, key, n));
    if (e && e->worker == w)
        drop(t, e);
    pthread_mutex_unlock(&t->mu);
}

void mp_aff_set_max(struct mp_aff *t, size_t max)
{
    pthread_mutex_lock(&t->mu);
    t->max = max < 16 ? 16 : max;
    pthread_mutex_unlock(&t->mu);
}

size_t mp_aff_count(struct mp_aff *t, size_t *pinned)
{
    pthread_mutex_lock(&t->mu);
    size_t n = t->n;
    if (pinned)
        *pinned = t->n_pinned;
    pthread_mutex_unlock(&t->mu);
    return n;
}

void mp_aff_use(struct mp_aff *t, int delta)
{
    pthread_mutex_lock(&t->mu);
    if (delta > 0) {
        t->users++;
    } else if (t->users && !--t->users) { /* nobody looks any more */
        while (t->free_l.head)
            drop(t, t->free_l.head);
        while (t->pin_l.head)
            drop(t, t->pin_l.head);
    }
    pthread_mutex_unlock(&t->mu);
}
