/* Affinity tables (affinity.h). */
#include "core/affinity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "event/loop.h"

struct mp_aff_ent {
    struct mp_aff_ent *next;
    unsigned worker;
    bool pinned;
    size_t len;
    uint64_t last_ms;
    char *str; /* mp_aff_set_str */
    uint8_t key[MP_AFF_KEY_MAX];
};

static struct mp_aff_ent **find(struct mp_aff *t, const void *key, size_t n)
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
    struct mp_aff_ent **pp = &t->b[x % MP_AFF_BUCKETS];
    while (*pp && ((*pp)->len != n || memcmp((*pp)->key, key, n)))
        pp = &(*pp)->next;
    return pp;
}

static void drop(struct mp_aff *t, struct mp_aff_ent **pp)
{
    struct mp_aff_ent *e = *pp;
    *pp = e->next;
    free(e->str);
    free(e);
    t->n--;
}

/* Under mu. */
static void sweep(struct mp_aff *t, uint64_t now)
{
    if (t->n < MP_AFF_MAX && now - t->swept_ms < 60000)
        return;
    t->swept_ms = now;
    struct mp_aff_ent **oldest = NULL;
    for (size_t b = 0; b < MP_AFF_BUCKETS; b++)
        for (struct mp_aff_ent **pp = &t->b[b]; *pp;) {
            if ((*pp)->pinned) {
                pp = &(*pp)->next;
                continue;
            }
            if (now - (*pp)->last_ms > t->idle_ms) {
                drop(t, pp);
                continue;
            }
            if (!oldest || (*pp)->last_ms < (*oldest)->last_ms)
                oldest = pp;
            pp = &(*pp)->next;
        }
    if (t->n >= MP_AFF_MAX && oldest)
        drop(t, oldest);
}

int mp_aff_get(struct mp_aff *t, const void *key, size_t n)
{
    int w = -1;
    if (n > MP_AFF_KEY_MAX)
        return -1;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = *find(t, key, n);
    if (e) {
        e->last_ms = mp_now_ms();
        w = (int)e->worker;
    }
    pthread_mutex_unlock(&t->mu);
    return w;
}

/* Under mu: the key's entry, made (worker w) when it is not there; NULL
 * when memory runs out.  Its use time is now. */
static struct mp_aff_ent *take(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    uint64_t now = mp_now_ms();
    struct mp_aff_ent **pp = find(t, key, n);
    if (!*pp) {
        sweep(t, now);
        pp = find(t, key, n); /* the sweep may have changed the list */
        if ((*pp = calloc(1, sizeof **pp))) {
            memcpy((*pp)->key, key, n);
            (*pp)->len = n;
            (*pp)->worker = w;
            t->n++;
        }
    }
    if (*pp)
        (*pp)->last_ms = now;
    return *pp;
}

unsigned mp_aff_set(struct mp_aff *t, const void *key, size_t n, unsigned w, bool overwrite)
{
    if (n > MP_AFF_KEY_MAX)
        return w;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = take(t, key, n, w);
    if (e) {
        if (overwrite)
            e->worker = w;
        w = e->worker;
    }
    pthread_mutex_unlock(&t->mu);
    return w;
}

int mp_aff_set_str(struct mp_aff *t, const void *key, size_t n, const char *s)
{
    char *copy = n <= MP_AFF_KEY_MAX ? strdup(s) : NULL;
    if (!copy)
        return -1;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = take(t, key, n, 0);
    if (e) {
        free(e->str);
        e->str = copy;
        copy = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    free(copy);
    return e ? 0 : -1;
}

bool mp_aff_get_str(struct mp_aff *t, const void *key, size_t n, char *out, size_t on)
{
    bool found = false;
    if (n > MP_AFF_KEY_MAX || !on)
        return false;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = *find(t, key, n);
    if (e && e->str) {
        e->last_ms = mp_now_ms();
        snprintf(out, on, "%s", e->str);
        found = true;
    }
    pthread_mutex_unlock(&t->mu);
    return found;
}

bool mp_aff_pin(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    if (n > MP_AFF_KEY_MAX)
        return false;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent *e = *find(t, key, n);
    bool ok = e && e->worker == w;
    if (ok)
        e->pinned = true;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

void mp_aff_forget(struct mp_aff *t, const void *key, size_t n, unsigned w)
{
    if (n > MP_AFF_KEY_MAX)
        return;
    pthread_mutex_lock(&t->mu);
    struct mp_aff_ent **pp = find(t, key, n);
    if (*pp && (*pp)->worker == w)
        drop(t, pp);
    pthread_mutex_unlock(&t->mu);
}

void mp_aff_use(struct mp_aff *t, int delta)
{
    pthread_mutex_lock(&t->mu);
    if (delta > 0) {
        t->users++;
    } else if (t->users && !--t->users) {
        for (size_t b = 0; b < MP_AFF_BUCKETS; b++)
            while (t->b[b])
                drop(t, &t->b[b]);
    }
    pthread_mutex_unlock(&t->mu);
}
