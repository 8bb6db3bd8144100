/* MapiSequence across side requests (src/transport/mapihttp/mhseq.c): the
 * pair (what the client was given, what the upstream expects) replaces
 * the client's sequence for as long as the client sends it (requests the
 * proxy answers itself give the client no new cookie), and is dropped once
 * the client sends another. */
#include <stdio.h>
#include <string.h>

#include "transport/http/msg.h"
#include "transport/mapihttp/mhseq.h"
#include "testlib.h"

static void head(struct mp_http_msg *m, const char *cookie)
{
    mp_http_msg_init(m, 8192);
    CHECK(!mp_http_msg_url(m, "/mapi/emsmdb/", 13));
    CHECK(!mp_http_msg_add(m, "Cookie", cookie));
}

static void seq_is(const char *cookie_in, struct mp_mh_seqmap **t, bool replaced, const char *want)
{
    struct mp_http_msg m;
    char got[MP_MH_SEQ_MAX];
    head(&m, cookie_in);
    CHECK_EQ(mp_mh_seq_fix(t, &m), replaced);
    CHECK(!mp_mh_seq_get(&m, false, got, sizeof got));
    CHECK(!strcmp(got, want));
    /* the other cookies kept */
    size_t l;
    const char *c = mp_http_msg_get(&m, "cookie", &l);
    CHECK(c && memmem(c, l, "MapiContext=ctx1", 16));
    mp_http_msg_free(&m);
}

static void test_kept_while_repeated(void)
{
    struct mp_mh_seqmap *t = NULL;
    struct mp_http_msg r;
    head(&r, "MapiContext=ctx1; MapiSequence=C1");
    mp_mh_seq_remember(&t, &r, "C1", "U9");
    mp_http_msg_free(&r);
    /* the client's next requests, some answered by the proxy itself: each
     * carries C1 and gets U9 */
    for (int i = 0; i < 3; i++)
        seq_is("MapiContext=ctx1; MapiSequence=C1", &t, true, "U9");
    /* the upstream's answer reached the client: its new sequence passes
     * and the pair is gone */
    seq_is("MapiContext=ctx1; MapiSequence=U10", &t, false, "U10");
    seq_is("MapiContext=ctx1; MapiSequence=C1", &t, false, "C1");
    /* a new pair replaces an old one of the same context */
    head(&r, "MapiContext=ctx1; MapiSequence=U10");
    mp_mh_seq_remember(&t, &r, "U10", "U12");
    mp_mh_seq_remember(&t, &r, "U10", "U13");
    mp_http_msg_free(&r);
    seq_is("MapiContext=ctx1; MapiSequence=U10", &t, true, "U13");
    mp_mh_seq_free(&t);
}

/* Exchange's cookies can be long (X-BackEndCookie alone passes 1 KiB): a
 * 3 KB Cookie header still gets its MapiSequence replaced (a fixed 2 KiB
 * buffer gave up, and the upstream then refused the stale sequence). */
static void test_long_cookie_header(void)
{
    static char cookie[4096];
    char big[3000];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    snprintf(cookie, sizeof cookie, "X-BackEndCookie=%s; MapiContext=ctx1; MapiSequence=C1", big);
    struct mp_mh_seqmap *t = NULL;
    struct mp_http_msg r;
    head(&r, cookie);
    mp_mh_seq_remember(&t, &r, "C1", "U9");
    mp_http_msg_free(&r);
    seq_is(cookie, &t, true, "U9");
    struct mp_http_msg m;
    head(&m, cookie);
    CHECK(mp_mh_seq_fix(&t, &m));
    size_t l;
    const char *c = mp_http_msg_get(&m, "cookie", &l);
    CHECK(c && memmem(c, l, big, sizeof big - 1)); /* the long cookie kept whole */
    mp_http_msg_free(&m);
    mp_mh_seq_free(&t);
}

int main(void)
{
    test_kept_while_repeated();
    test_long_cookie_header();
    TEST_DONE();
}
