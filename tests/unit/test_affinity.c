/* Affinity tables (core/affinity.h): which worker a key names, the first
 * claim winning, forgetting only the owner's, bounds, strings kept with
 * keys, emptied by its last user. */
#include "core/affinity.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testlib.h"

static struct mp_aff t = MP_AFF_INIT(3600u * 1000u);

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
    static struct mp_aff flood = MP_AFF_INIT(3600u * 1000u);
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
    static struct mp_aff quick = MP_AFF_INIT(1);
    mp_aff_use(&quick, 1);
    mp_aff_set(&quick, "live", 4, 1, false);
    CHECK(mp_aff_pin(&quick, "live", 4, 1));
    mp_aff_set(&quick, "idle", 4, 1, false);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    quick.swept_ms = 0;                     /* a sweep is due */
    mp_aff_set(&quick, "new", 3, 1, false); /* sweeps */
    CHECK_EQ(mp_aff_get(&quick, "idle", 4), -1);
    CHECK_EQ(mp_aff_get(&quick, "live", 4), 1);
    mp_aff_use(&quick, -1);
    CHECK_EQ(quick.n, 0u);
    /* each table's hash has its own random seed */
    CHECK(quick.seed != 0 && flood.seed != 0 && quick.seed != flood.seed);
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
    /* a second user keeps it; the last one's going empties it (LSan) */
    mp_aff_use(&t, 1);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), 3);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), -1);
    CHECK_EQ(t.n, 0u);
    TEST_DONE();
}
