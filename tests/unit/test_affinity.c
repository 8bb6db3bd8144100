/* Affinity tables (core/affinity.h): which worker a key names, the first
 * claim winning, forgetting only the owner's, bounds, strings kept with
 * keys, emptied by its last user; pinned entries (live sessions) against a
 * flood of new keys, a full table, least recently used eviction, idle
 * expiry without scans; and the latency of lookups while another thread
 * floods a full table (printed). */
#include "core/affinity.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "testlib.h"

static struct mp_aff t = MP_AFF_INIT("test", 3600u * 1000u, 0);

/* Threads claiming the same keys at once agree on one owner per key. */
#define RACE_KEYS 200
static unsigned won[2][RACE_KEYS];

static void *racer(void *arg)
{
    unsigned w = (unsigned)(size_t)arg;
    for (unsigned k = 0; k < RACE_KEYS; k++) {
        char key[16];
        int n = snprintf(key, sizeof key, "race-%u", k);
        won[w][k] = mp_aff_set(&t, key, (size_t)n, w, false);
    }
    return NULL;
}

/* Pinned keys: neither a flood of new keys nor idle sweeps take them. */
static void pinned(void)
{
    static struct mp_aff flood = MP_AFF_INIT("test", 3600u * 1000u, 0);
    mp_aff_use(&flood, 1);
    /* a pinned key (a live virtual connection) outlives a client filling
     * the table with keys of its own invention, and idle sweeps */
    CHECK_EQ(mp_aff_set(&flood, "live", 4, 1, false), 1u);
    CHECK(!mp_aff_pin(&flood, "live", 4, 0)); /* not worker 0's */
    CHECK(mp_aff_pin(&flood, "live", 4, 1));
    CHECK(!mp_aff_pin(&flood, "absent", 6, 1));
    for (unsigned i = 0; i < MP_AFF_MAX + 4; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "flood-%u", i);
        mp_aff_set(&flood, key, (size_t)n, 0, false);
    }
    CHECK(flood.n <= MP_AFF_MAX + 1);
    CHECK_EQ(mp_aff_get(&flood, "live", 4), 1);
    mp_aff_forget(&flood, "live", 4, 1); /* its end takes it */
    CHECK_EQ(mp_aff_get(&flood, "live", 4), -1);
    mp_aff_use(&flood, -1);
    static struct mp_aff quick = MP_AFF_INIT("test", 1, 0);
    mp_aff_use(&quick, 1);
    mp_aff_set(&quick, "live", 4, 1, false);
    CHECK(mp_aff_pin(&quick, "live", 4, 1));
    mp_aff_set(&quick, "idle", 4, 1, false);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    mp_aff_set(&quick, "new", 3, 1, false); /* expires the idle ones at the heads */
    CHECK_EQ(mp_aff_get(&quick, "idle", 4), -1);
    CHECK_EQ(mp_aff_get(&quick, "live", 4), 1);
    mp_aff_use(&quick, -1);
    CHECK_EQ(quick.n, 0u);
    /* each table's hash has its own random seed */
    CHECK(quick.seed != 0 && flood.seed != 0 && quick.seed != flood.seed);
}

/* MAPI/HTTP sessions (set_pinned): a flood of new sessions never pushes out
 * a live one; ended sessions' entries (unpinned) and keys no session holds
 * go first, least recently used first; a table full of live sessions keeps
 * no new key and counts it; pinned entries with an idle limit expire. */
static void sessions(void)
{
    static struct mp_aff s = MP_AFF_INIT("mapihttp-sessions", 3600u * 1000u, 3600u * 1000u);
    mp_aff_use(&s, 1);
    mp_aff_set_max(&s, 64);
    CHECK_EQ(s.max, 64u);
    CHECK_EQ(mp_aff_set_pinned(&s, "live", 4, 1), 0);
    CHECK_EQ(mp_aff_set_pinned(&s, "ended", 5, 1), 0);
    mp_aff_unpin(&s, "ended", 5); /* Disconnect: free, still asked for a while */
    CHECK_EQ(mp_aff_get(&s, "ended", 5), 1);
    CHECK_EQ(mp_aff_set(&s, "old", 3, 0, false), 0u);
    CHECK_EQ(mp_aff_set(&s, "recent", 6, 0, false), 0u);
    CHECK_EQ(mp_aff_get(&s, "old", 3), 0); /* used again: now newer than "ended" */
    size_t pinned = 0;
    CHECK_EQ(mp_aff_count(&s, &pinned), 4u);
    CHECK_EQ(pinned, 1u);
    /* 60 free keys fill it (64); the next one pushes out the least recently
     * used free entry: "ended" (its last use is the oldest of the free) */
    for (unsigned i = 0; i < 60; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "x-%u", i);
        mp_aff_set(&s, key, (size_t)n, 0, false);
    }
    CHECK_EQ(mp_aff_count(&s, NULL), 64u);
    uint64_t ev = s.evicted;
    mp_aff_set(&s, "y", 1, 0, false);
    CHECK_EQ(s.evicted, ev + 1);
    CHECK_EQ(mp_aff_get(&s, "ended", 5), -1);
    CHECK_EQ(mp_aff_get(&s, "recent", 6), 0);
    /* a flood of new sessions (pinned): every free entry goes, then the
     * table is full of live sessions and keeps no more */
    unsigned kept = 0, refused = 0;
    for (unsigned i = 0; i < 200; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "flood-%u", i);
        if (mp_aff_set_pinned(&s, key, (size_t)n, 0))
            refused++;
        else
            kept++;
    }
    CHECK_EQ(kept, 63u); /* 64 less "live" */
    CHECK_EQ(refused, 137u);
    CHECK_EQ(s.full, 137u);
    CHECK_EQ(mp_aff_count(&s, &pinned), 64u);
    CHECK_EQ(pinned, 64u);
    CHECK_EQ(mp_aff_get(&s, "live", 4), 1); /* the live session is where it was */
    CHECK_EQ(mp_aff_get(&s, "flood-199", 9), -1);
    /* a free key is not kept either (and says so: w back) */
    CHECK_EQ(mp_aff_set(&s, "late", 4, 1, false), 1u);
    CHECK_EQ(mp_aff_get(&s, "late", 4), -1);
    /* a session that ends makes room */
    mp_aff_forget(&s, "flood-0", 7, 0);
    CHECK_EQ(mp_aff_set_pinned(&s, "next", 4, 1), 0);
    CHECK_EQ(mp_aff_get(&s, "next", 4), 1);
    /* pin on an entry already pinned, unpin of an unknown key: no change */
    CHECK(mp_aff_pin(&s, "next", 4, 1));
    mp_aff_unpin(&s, "nobody", 6);
    CHECK_EQ(mp_aff_count(&s, &pinned), 64u);
    CHECK_EQ(pinned, 64u);
    mp_aff_use(&s, -1);
    CHECK_EQ(s.n, 0u);
    CHECK_EQ(s.n_pinned, 0u);

    /* pinned entries with an idle limit (MAPI/HTTP: two hours) expire */
    static struct mp_aff q = MP_AFF_INIT("mapihttp-sessions", 1, 1);
    mp_aff_use(&q, 1);
    CHECK_EQ(mp_aff_set_pinned(&q, "a", 1, 1), 0);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK_EQ(mp_aff_get(&q, "a", 1), -1);
    CHECK_EQ(q.n, 0u);
    mp_aff_use(&q, -1);

    /* a pin's own lifetime (a MAPI/HTTP session's, from the server's
     * X-ExpirationInfo) instead of the table's: the pinned list is kept by
     * deadline, so a short-lived entry pinned after a long-lived one is at
     * the head and idle expiry takes it without a lookup; the long-lived
     * one and the table's default stay */
    static struct mp_aff life = MP_AFF_INIT("mapihttp-sessions", 3600u * 1000u, 3600u * 1000u);
    mp_aff_use(&life, 1);
    CHECK_EQ(mp_aff_set_pinned(&life, "default", 7, 1), 0);
    CHECK_EQ(mp_aff_set_pinned_for(&life, "long", 4, 1, 3600u * 1000u), 0);
    CHECK_EQ(mp_aff_set_pinned_for(&life, "short", 5, 1, 5), 0);
    CHECK_EQ(mp_aff_set(&life, "other", 5, 0, false), 0u);
    CHECK(mp_aff_pin_for(&life, "other", 5, 0, 5));
    CHECK_EQ(mp_aff_count(&life, &pinned), 4u);
    CHECK_EQ(pinned, 4u);
    nanosleep(&ts, NULL);
    mp_aff_set(&life, "new", 3, 0, false);      /* expires what is idle at the heads */
    CHECK_EQ(mp_aff_count(&life, &pinned), 3u); /* "short" and "other" gone, "new" */
    CHECK_EQ(pinned, 2u);
    CHECK_EQ(mp_aff_get(&life, "short", 5), -1);
    CHECK_EQ(mp_aff_get(&life, "other", 5), -1);
    CHECK_EQ(mp_aff_get(&life, "long", 4), 1);
    CHECK_EQ(mp_aff_get(&life, "default", 7), 1);
    /* pinned again with the table's lifetime: used now, not taken */
    CHECK_EQ(mp_aff_set_pinned_for(&life, "again", 5, 1, 5), 0);
    CHECK_EQ(mp_aff_set_pinned(&life, "again", 5, 1), 0);
    nanosleep(&ts, NULL);
    CHECK_EQ(mp_aff_get(&life, "again", 5), 1);
    /* unpinned: free, the table's idle time (an hour) */
    CHECK_EQ(mp_aff_set_pinned_for(&life, "ended", 5, 1, 5), 0);
    mp_aff_unpin(&life, "ended", 5);
    nanosleep(&ts, NULL);
    CHECK_EQ(mp_aff_get(&life, "ended", 5), 1);
    mp_aff_use(&life, -1);
    CHECK_EQ(life.n, 0u);
}

/* ---- lookup latency while another thread floods a full table ---- */

static struct mp_aff bench = MP_AFF_INIT("mapihttp-sessions", 3600u * 1000u, 3600u * 1000u);
static volatile int flooding;
static unsigned long flooded;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *flooder(void *arg)
{
    (void)arg;
    unsigned long i = 0;
    while (flooding) {
        char key[40];
        int n = snprintf(key, sizeof key, "new-session-%lu", i++);
        mp_aff_set(&bench, key, (size_t)n, 0, true);
    }
    flooded = i;
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void latency(void)
{
    mp_aff_use(&bench, 1);
    /* 64 live sessions pinned, then the table filled (65,536) */
    for (unsigned i = 0; i < 64; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "live-%u", i);
        CHECK_EQ(mp_aff_set_pinned(&bench, key, (size_t)n, 1), 0);
    }
    for (unsigned i = 0; mp_aff_count(&bench, NULL) < MP_AFF_MAX; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "fill-%u", i);
        mp_aff_set(&bench, key, (size_t)n, 0, false);
    }
    enum { N = 200000 };
    uint64_t *lat = malloc(N * sizeof *lat);
    CHECK(lat != NULL);
    if (!lat)
        return;
    flooding = 1;
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, flooder, NULL), 0);
    unsigned wrong = 0;
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < N; i++) {
        char key[24];
        int n = snprintf(key, sizeof key, "live-%u", i % 64);
        uint64_t a = now_ns();
        int w = mp_aff_get(&bench, key, (size_t)n);
        lat[i] = now_ns() - a;
        if (w != 1)
            wrong++;
    }
    uint64_t wall = now_ns() - t0;
    flooding = 0;
    pthread_join(th, NULL);
    CHECK_EQ(wrong, 0u); /* every live session answered by its worker throughout */
    CHECK(flooded > 0);
    CHECK_EQ(mp_aff_count(&bench, NULL), (size_t)MP_AFF_MAX);
    qsort(lat, N, sizeof *lat, cmp_u64);
    printf("affinity: %d lookups of 64 pinned sessions in %.2f s while another thread put %lu "
           "new keys into the full table (%u entries, %llu evicted): lookup ns p50 %llu p99 %llu "
           "p99.9 %llu max %llu\n",
           N, (double)wall / 1e9, flooded, MP_AFF_MAX, (unsigned long long)bench.evicted,
           (unsigned long long)lat[N / 2], (unsigned long long)lat[N * 99 / 100],
           (unsigned long long)lat[N * 999 / 1000], (unsigned long long)lat[N - 1]);
    free(lat);
    mp_aff_use(&bench, -1);
}

int main(void)
{
    mp_aff_use(&t, 1);
    CHECK_EQ(mp_aff_get(&t, "abc", 3), -1);
    /* a claim without overwrite: the first wins */
    CHECK_EQ(mp_aff_set(&t, "abc", 3, 1, false), 1u);
    CHECK_EQ(mp_aff_set(&t, "abc", 3, 0, false), 1u);
    CHECK_EQ(mp_aff_get(&t, "abc", 3), 1);
    /* keys are bytes with a length: a prefix is another key */
    CHECK_EQ(mp_aff_get(&t, "ab", 2), -1);
    static const uint8_t bin[16] = {0, 1, 0, 2};
    CHECK_EQ(mp_aff_set(&t, bin, sizeof bin, 3, false), 3u);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), 3);
    /* overwrite: the session's new worker */
    CHECK_EQ(mp_aff_set(&t, "abc", 3, 2, true), 2u);
    CHECK_EQ(mp_aff_get(&t, "abc", 3), 2);
    /* only the owner forgets */
    mp_aff_forget(&t, "abc", 3, 1);
    CHECK_EQ(mp_aff_get(&t, "abc", 3), 2);
    mp_aff_forget(&t, "abc", 3, 2);
    CHECK_EQ(mp_aff_get(&t, "abc", 3), -1);
    /* a key over MP_AFF_KEY_MAX is never kept */
    char big[MP_AFF_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    CHECK_EQ(mp_aff_set(&t, big, sizeof big, 5, false), 5u);
    CHECK_EQ(mp_aff_get(&t, big, sizeof big), -1);
    CHECK_EQ(mp_aff_get(&t, big, MP_AFF_KEY_MAX), -1);
    CHECK_EQ(mp_aff_set(&t, big, MP_AFF_KEY_MAX, 5, false), 5u);
    CHECK_EQ(mp_aff_get(&t, big, MP_AFF_KEY_MAX), 5);
    /* strings kept with keys (who a cookie was issued to): set, replaced,
     * cut to the caller's buffer; a key without one has none */
    char who[8];
    CHECK(!mp_aff_get_str(&t, "ck", 2, who, sizeof who));
    CHECK_EQ(mp_aff_set_str(&t, "ck", 2, "LAB\\alice"), 0);
    CHECK(mp_aff_get_str(&t, "ck", 2, who, sizeof who));
    CHECK(!strcmp(who, "LAB\\ali"));
    CHECK_EQ(mp_aff_set_str(&t, "ck", 2, "bob"), 0);
    CHECK(mp_aff_get_str(&t, "ck", 2, who, sizeof who) && !strcmp(who, "bob"));
    CHECK(!mp_aff_get_str(&t, bin, sizeof bin, who, sizeof who));
    CHECK_EQ(mp_aff_set_str(&t, big, sizeof big, "x"), -1);
    mp_aff_forget(&t, "ck", 2, 0);
    CHECK(!mp_aff_get_str(&t, "ck", 2, who, sizeof who));
    /* two threads claiming the same keys agree */
    pthread_t th[2];
    for (size_t i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&th[i], NULL, racer, (void *)i), 0);
    for (size_t i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (unsigned k = 0; k < RACE_KEYS; k++)
        CHECK_EQ(won[0][k], won[1][k]);
    pinned();
    sessions();
    latency();
    /* a second user keeps it; the last one's going empties it (LSan) */
    mp_aff_use(&t, 1);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), 3);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), -1);
    CHECK_EQ(t.n, 0u);
    TEST_DONE();
}
