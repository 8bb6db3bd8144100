/* HTTP Negotiate's acceptor (src/transport/http/hneg.c) on malformed and
 * foreign input, without a KDC: every refusal is a -1 with a reason, never
 * a crash (ASan); an NTLM token under Negotiate is named "ntlm" for the
 * caller.  The Kerberos paths with a KDC are in
 * tests/integration/test_rpch_negotiate.py and test_mapihttp_negotiate.py. */
#include <stdlib.h>
#include <string.h>

#include "auth/ntlmssp.h"
#include "auth/spnego.h"
#include "core/buf.h"
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

/* Pass-through's reading of a client's Authorization (mp_hauth_peek_identity,
 * rpch.c's account per virtual connection): an NTLM AUTHENTICATE raw and
 * inside SPNEGO (a NegTokenResp's responseToken, as after NTLM legs under
 * Negotiate) names DOMAIN\user; a Kerberos AP-REQ under Negotiate (here its
 * framing only) is 3 with no name; Basic names its user. */
static void test_peek_identity(void)
{
    static const uint8_t dom[] = {'L', 0, 'A', 0, 'B', 0}, usr[] = {'b', 0, 'o', 0, 'b', 0};
    uint8_t nt[48] = {1}, lm[24] = {0};
    struct mp_buf am = {0}, sp = {0}, b64 = {0};
    CHECK(mp_ntlmssp_build_authenticate(&am, MP_NTLMSSP_NEGOTIATE_UNICODE, lm, sizeof lm, nt,
                                        sizeof nt, dom, sizeof dom, usr, sizeof usr, NULL, 0, NULL,
                                        0, NULL, false) == 0);
    char line[4096], who[520];
    CHECK(mp_b64_encode(am.data, am.len, &b64) == 0);
    int n = snprintf(line, sizeof line, "NTLM %.*s", (int)b64.len, (const char *)b64.data);
    CHECK_EQ(mp_hauth_peek_identity(line, (size_t)n, who, sizeof who), 1);
    CHECK(strcmp(who, "LAB\\bob") == 0);
    CHECK(mp_spnego_build_resp(&sp, MP_SPNEGO_ACCEPT_INCOMPLETE, NULL, 0, am.data, am.len, NULL,
                               0) == 0);
    b64.len = b64.off = 0;
    CHECK(mp_b64_encode(sp.data, sp.len, &b64) == 0);
    n = snprintf(line, sizeof line, "Negotiate %.*s", (int)b64.len, (const char *)b64.data);
    CHECK_EQ(mp_hauth_peek_identity(line, (size_t)n, who, sizeof who), 1);
    CHECK(strcmp(who, "LAB\\bob") == 0);
    /* GSS framing of a krb5 AP-REQ (RFC 4121 4.1): 60 len 06 09 <krb5 OID> 01 00 ... */
    n = snprintf(line, sizeof line, "Negotiate YIIBAAYJKoZIhvcSAQICAQBuggEAMIH8oAMCAQU=");
    CHECK_EQ(mp_hauth_peek_identity(line, (size_t)n, who, sizeof who), 3);
    CHECK(who[0] == 0);
    n = snprintf(line, sizeof line, "Basic TEFCXGJvYjpCMGItT3RoZXIh"); /* LAB\bob:B0b-Other! */
    CHECK_EQ(mp_hauth_peek_identity(line, (size_t)n, who, sizeof who), 2);
    CHECK(strcmp(who, "LAB\\bob") == 0);
    CHECK_EQ(mp_hauth_peek_identity("Bearer abc", 10, who, sizeof who), 0);
    mp_buf_free(&am);
    mp_buf_free(&sp);
    mp_buf_free(&b64);
}

int main(void)
{
    test_refusals();
    test_peek_identity();
    TEST_DONE();
}
