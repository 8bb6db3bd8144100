/* MAPI/HTTP module sessions by cookie (transport/mapihttp/cookies.c): one
 * per session cookie, found again by the request's Cookie, ended by
 * Disconnect/Unbind; a flood of new sessions beyond the limit (4,096 per
 * worker) keeps every live one and is not kept itself; the owner table
 * pins a live session's cookie against a flood of new ones; a session's
 * lifetime from the server's X-ExpirationInfo (bounded, two hours
 * without); a reload's table size reaches the shared owner table. */
#include "transport/mapihttp/cookies.h"

#include <stdio.h>
#include <string.h>

#include "chain/chain.h"
#include "testlib.h"
#include "transport/http/msg.h"

static void head(struct mp_http_msg *m, const char *name, const char *fmt, unsigned i)
{
    char v[96];
    snprintf(v, sizeof v, fmt, i);
    mp_http_msg_reset(m);
    mp_http_msg_url(m, "/", 1);
    CHECK_EQ(mp_http_msg_add(m, name, v), 0);
}

int main(void)
{
    struct mp_mh_cookies k;
    memset(&k, 0, sizeof k);
    k.aff_max = 64;
    struct mp_http_msg req, resp;
    mp_http_msg_init(&req, 8192);
    mp_http_msg_init(&resp, 8192);
    /* the live session */
    struct mp_session *live = mp_mh_session_for(&k, NULL, &req);
    CHECK(live != NULL);
    head(&resp, "Set-Cookie", "MapiContext=live-%u; path=/mapi/emsmdb", 0);
    mp_mh_session_register(&k, &resp, live);
    mp_mh_cookie_issued(&k, &resp, "LAB\\alice");
    head(&req, "Cookie", "MapiContext=live-%u", 0);
    CHECK(mp_mh_has_session(&k, &req));
    struct mp_session *again = mp_mh_session_for(&k, NULL, &req);
    CHECK(again == live);
    mp_session_unref(again);
    /* 5,000 new sessions (a client logging on again and again): 4,095 kept
     * beside the live one, the rest not; the live one stays */
    unsigned kept = 0;
    for (unsigned i = 1; i <= 5000; i++) {
        head(&req, "Cookie", "Other=%u", i);
        struct mp_session *s = mp_mh_session_for(&k, NULL, &req);
        head(&resp, "Set-Cookie", "MapiContext=flood-%u; path=/mapi/emsmdb", i);
        mp_mh_session_register(&k, &resp, s);
        mp_mh_cookie_issued(&k, &resp, "LAB\\mallory");
        head(&req, "Cookie", "MapiContext=flood-%u", i);
        kept += mp_mh_has_session(&k, &req);
        mp_session_unref(s);
    }
    CHECK_EQ(kept, 4095u);
    CHECK_EQ(mp_mh_sessions_sweep(&k), 4096u);
    head(&req, "Cookie", "MapiContext=live-%u", 0);
    CHECK(mp_mh_has_session(&k, &req));
    again = mp_mh_session_for(&k, NULL, &req);
    CHECK(again == live);
    mp_session_unref(again);
    /* the owner table (64 here) kept alice's live cookie: she may use it,
     * mallory may not */
    char owner[64];
    CHECK(mp_mh_cookies_allowed(&k, &req, "LAB\\alice", true, owner, sizeof owner));
    CHECK(!mp_mh_cookies_allowed(&k, &req, "LAB\\mallory", true, owner, sizeof owner));
    CHECK(!strcmp(owner, "LAB\\alice"));
    /* Disconnect ends it: room for a new one */
    mp_mh_session_forget(&k, &req);
    CHECK(!mp_mh_has_session(&k, &req));
    CHECK_EQ(mp_mh_sessions_sweep(&k), 4095u);
    struct mp_session *s = mp_mh_session_for(&k, NULL, &req);
    head(&resp, "Set-Cookie", "MapiContext=new-%u; path=/mapi/emsmdb", 1);
    mp_mh_session_register(&k, &resp, s);
    mp_session_unref(s);
    head(&req, "Cookie", "MapiContext=new-%u", 1);
    CHECK(mp_mh_has_session(&k, &req));
    /* lifetime: X-ExpirationInfo (ms) and a minute; two hours when absent,
     * not a number, or absurd (below a second, above a day) */
    CHECK_EQ(mp_mh_session_life_ms(&resp), 2u * 3600u * 1000u);
    static const struct {
        const char *v;
        uint64_t ms;
    } life[] = {
        {"900000", 960000},
        {" 900000 ", 960000},
        {"1000", 61000},
        {"86400000", 86460000},
        {"86400001", 7200000},
        {"999", 7200000},
        {"0", 7200000},
        {"", 7200000},
        {"-5", 7200000},
        {"9000x", 7200000},
        {"99999999999999999999999999", 7200000},
    };
    for (size_t i = 0; i < sizeof life / sizeof life[0]; i++) {
        head(&resp, "Set-Cookie", "MapiContext=life-%u", (unsigned)i);
        CHECK_EQ(mp_http_msg_add(&resp, "X-ExpirationInfo", life[i].v), 0);
        CHECK_EQ(mp_mh_session_life_ms(&resp), life[i].ms);
    }
    /* a session registered with its lifetime is found (within it) */
    head(&req, "Cookie", "Other=%u", 9);
    s = mp_mh_session_for(&k, NULL, &req);
    head(&resp, "Set-Cookie", "MapiContext=timed-%u; path=/mapi/emsmdb", 1);
    CHECK_EQ(mp_http_msg_add(&resp, "X-ExpirationInfo", "900000"), 0);
    head(&req, "Cookie", "MapiContext=new-%u", 1); /* room: new-1 ends */
    mp_mh_session_forget(&k, &req);
    mp_mh_session_register(&k, &resp, s);
    mp_session_unref(s);
    head(&req, "Cookie", "MapiContext=timed-%u", 1);
    CHECK(mp_mh_has_session(&k, &req));
    /* a reload (a new generation sharing the owner table) with another
     * mapiproxy:affinity table size: the shared table takes it */
    struct mp_mh_cookies k2;
    memset(&k2, 0, sizeof k2);
    k2.aff_max = 32;
    mp_mh_cookies_share_owners(&k2, &k);
    CHECK(k2.own == k.own);
    CHECK_EQ(k.own->t.max, 32u);
    mp_mh_cookies_free(&k2);
    mp_session_unref(live);
    mp_http_msg_free(&req);
    mp_http_msg_free(&resp);
    mp_mh_cookies_free(&k);
    TEST_DONE();
}
