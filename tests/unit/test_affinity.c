/* Affinity tables (core/affinity.h): which worker a key names, the first
 * claim winning, forgetting only the owner's, bounds, strings kept with
 * keys, emptied by its last user. */
#include "core/affinity.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

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
    /* a second user keeps it; the last one's going empties it (LSan) */
    mp_aff_use(&t, 1);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), 3);
    mp_aff_use(&t, -1);
    CHECK_EQ(mp_aff_get(&t, bin, sizeof bin), -1);
    CHECK_EQ(t.n, 0u);
    TEST_DONE();
}
