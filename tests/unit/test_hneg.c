/* HTTP Negotiate's acceptor (src/transport/http/hneg.c) on malformed and
 * foreign input, without a KDC: every refusal is a -1 with a reason, never
 * a crash (ASan); an NTLM token under Negotiate is named "ntlm" for the
 * caller.  The Kerberos paths with a KDC are in
 * tests/integration/test_rpch_negotiate.py and test_mapihttp_negotiate.py. */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "transport/http/hauth.h"
#include "transport/http/hneg.h"

static int accept_raw(const uint8_t *tok, size_t n, char *err, size_t el)
{
    struct mp_buf b64 = {0}, reply = {0};
    if (mp_b64_encode(tok, n, &b64))
        return -2;
    size_t len = 10 + b64.len;
    char *v = malloc(len + 1);
    memcpy(v, "Negotiate ", 10);
    memcpy(v + 10, b64.data, b64.len);
    char user[64] = "";
    int rc = mp_hneg_accept(NULL, v, len, user, sizeof user, &reply, err, el);
    CHECK(rc != 0 || user[0]);
    free(v);
    mp_buf_free(&b64);
    mp_buf_free(&reply);
    return rc;
}

static void test_refusals(void)
{
    char err[300], user[64];
    struct mp_buf reply = {0};
    CHECK_EQ(mp_hneg_accept(NULL, "Basic YTpi", 10, user, sizeof user, &reply, err, sizeof err),
             -1);
    CHECK(strstr(err, "not a Negotiate") != NULL);
    CHECK_EQ(mp_hneg_accept(NULL, "Negotiate", 9, user, sizeof user, &reply, err, sizeof err), -1);
    CHECK_EQ(mp_hneg_accept(NULL, "Negotiate !!!!", 14, user, sizeof user, &reply, err, sizeof err),
             -1);
    CHECK(strstr(err, "malformed") != NULL);
    /* longer than any token the acceptor takes */
    size_t big = 40000;
    char *v = malloc(big);
    memcpy(v, "Negotiate ", 10);
    memset(v + 10, 'A', big - 10);
    CHECK_EQ(mp_hneg_accept(NULL, v, big, user, sizeof user, &reply, err, sizeof err), -1);
    free(v);
    CHECK_EQ(reply.len, 0u);

    static const uint8_t ntlm[] = "NTLMSSP\0\1\0\0\0\x07\x82\x08\xa2";
    CHECK_EQ(accept_raw(ntlm, sizeof ntlm - 1, err, sizeof err), -1);
    CHECK(!strcmp(err, "ntlm"));
    /* SPNEGO framing cut short, a long-form length past the token, junk */
    static const uint8_t cut[] = {0x60, 0x82};
    static const uint8_t longlen[] = {0x60, 0x84, 0xff, 0xff, 0xff, 0xff, 0x06, 0x06, 0x2b};
    static const uint8_t spnego_junk[] = {0x60, 0x0a, 0x06, 0x06, 0x2b, 0x06,
                                          0x01, 0x05, 0x05, 0x02, 0xa0, 0x00};
    static const uint8_t bare_init[] = {0xa0, 0x03, 0x30, 0x01, 0x00};
    static const uint8_t junk[] = {0x6e, 0x01, 0x02, 0x03};
    CHECK_EQ(accept_raw(cut, sizeof cut, err, sizeof err), -1);
    CHECK_EQ(accept_raw(longlen, sizeof longlen, err, sizeof err), -1);
    CHECK_EQ(accept_raw(spnego_junk, sizeof spnego_junk, err, sizeof err), -1);
    CHECK(err[0] != 0);
    CHECK_EQ(accept_raw(bare_init, sizeof bare_init, err, sizeof err), -1);
    CHECK_EQ(accept_raw(junk, sizeof junk, err, sizeof err), -1);
    CHECK(err[0] != 0);
}

int main(void)
{
    test_refusals();
    TEST_DONE();
}
