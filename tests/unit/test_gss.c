/* Unit tests for src/auth/spnego.c and the parts of src/auth/gss.c that need
 * no KDC (the Kerberos exchanges themselves are in
 * tests/integration/test_krb5_gss.py, against a real MIT KDC). */
#include <stdint.h>
#include <string.h>

#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "auth/spnego.h"
#include "core/buf.h"
#include "dcerpc/pdu.h"
#include "testlib.h"

/* Impacket 0.10: SPNEGO_NegTokenInit, MechTypes [NTLMSSP], MechToken =
 * getNTLMSSPType1('', '').getData(). */
static const char impacket_init_ntlm[] =
    "604006062b0601050502a0363034a00e300c060a2b06010401823702020aa22204204e544c4d5353500001000000"
    "050288a000000000000000000000000000000000";
/* Impacket: SPNEGO_NegTokenResp NegState 1, SupportedMech NTLMSSP, a token. */
static const char impacket_resp_ntlm[] =
    "a1393037a0030a0101a10c060a2b06010401823702020aa22204204e544c4d53535000020000000000000000000000"
    "000000000000000000000000";
static void test_oids(void)
{
    CHECK_EQ(mp_spnego_mech_kind(mp_oid_krb5, sizeof mp_oid_krb5), MP_MECH_KRB5);
    CHECK_EQ(mp_spnego_mech_kind(mp_oid_ms_krb5, sizeof mp_oid_ms_krb5), MP_MECH_MS_KRB5);
    CHECK_EQ(mp_spnego_mech_kind(mp_oid_ntlm, sizeof mp_oid_ntlm), MP_MECH_NTLM);
    CHECK_EQ(mp_spnego_mech_kind(mp_oid_spnego, sizeof mp_oid_spnego), MP_MECH_OTHER);
    CHECK_EQ(mp_spnego_mech_kind(mp_oid_krb5, 8), MP_MECH_OTHER);
    CHECK_EQ(mp_spnego_mech_kind(NULL, 0), MP_MECH_OTHER);
    CHECK(mp_spnego_mech_is_krb5(MP_MECH_MS_KRB5) && !mp_spnego_mech_is_krb5(MP_MECH_NTLM));
}

static void test_impacket_tokens(void)
{
    uint8_t b[512];
    size_t n = t_unhex(impacket_init_ntlm, b, sizeof b);
    struct mp_spnego_init ini;
    CHECK_EQ(mp_spnego_token_kind(b, n), 0);
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), 0);
    CHECK_EQ(ini.n_mechs, 1u);
    CHECK_EQ(mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len), MP_MECH_NTLM);
    CHECK(ini.mech_token && ini.mech_token_len == 32 && !memcmp(ini.mech_token, "NTLMSSP\0", 8));
    CHECK(!ini.mic && !ini.has_req_flags);
    CHECK(ini.mech_list && ini.mech_list[0] == 0x30 && ini.mech_list_len == 14);

    n = t_unhex(impacket_resp_ntlm, b, sizeof b);
    struct mp_spnego_resp r;
    CHECK_EQ(mp_spnego_token_kind(b, n), 1);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), 0);
    CHECK_EQ(r.neg_state, MP_SPNEGO_ACCEPT_INCOMPLETE);
    CHECK_EQ(mp_spnego_mech_kind(r.mech, r.mech_len), MP_MECH_NTLM);
    CHECK(r.token && r.token_len == 32 && !r.mic);
    /* An init is not a resp and the reverse. */
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), -1);
}

static void test_negtokeninit2(void)
{
    /* Built here: mechTypes [MS-KRB5, KRB5, NTLM], negHints { hintName }. */
    struct mp_buf b = {0};
    static const uint8_t hint[] = {0xa3, 0x0a, 0x30, 0x08, 0xa0, 0x06,
                                   0x1b, 0x04, 'a',  '@',  'b',  'c'};
    struct mp_spnego_oid m[3] = {{mp_oid_ms_krb5, 9}, {mp_oid_krb5, 9}, {mp_oid_ntlm, 10}};
    CHECK_EQ(mp_spnego_build_init(&b, m, 3, NULL, 0), 0);
    /* Splice the hint in: grow the three enclosing lengths (all short form). */
    uint8_t t[256];
    size_t n = b.len;
    memcpy(t, b.data, n);
    memcpy(t + n, hint, sizeof hint);
    n += sizeof hint;
    t[1] += sizeof hint;  /* 60 */
    t[11] += sizeof hint; /* a0 */
    t[13] += sizeof hint; /* 30 */
    struct mp_spnego_init ini;
    CHECK_EQ(mp_spnego_parse_init(t, n, &ini), 0);
    CHECK_EQ(ini.n_mechs, 3u);
    CHECK(!ini.mech_token && !ini.mic);
    CHECK_EQ(mp_spnego_mech_kind(ini.mechs[2].p, ini.mechs[2].len), MP_MECH_NTLM);
    mp_buf_free(&b);
}

static void test_build_parse(void)
{
    struct mp_buf b = {0};
    uint8_t tok[300];
    for (size_t i = 0; i < sizeof tok; i++)
        tok[i] = (uint8_t)i;
    struct mp_spnego_oid m[2] = {{mp_oid_ms_krb5, 9}, {mp_oid_krb5, 9}};
    /* Token sizes across the short/long length forms. */
    size_t sizes[] = {0, 1, 100, 127, 128, 200, 255, 256, 300};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        b.len = b.off = 0;
        CHECK_EQ(mp_spnego_build_init(&b, m, 2, tok, sizes[k]), 0);
        struct mp_spnego_init ini;
        CHECK_EQ(mp_spnego_parse_init(b.data, b.len, &ini), 0);
        CHECK_EQ(ini.n_mechs, 2u);
        CHECK_EQ(mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len), MP_MECH_MS_KRB5);
        CHECK_EQ(mp_spnego_mech_kind(ini.mechs[1].p, ini.mechs[1].len), MP_MECH_KRB5);
        CHECK(ini.mech_token && ini.mech_token_len == sizes[k] &&
              !memcmp(ini.mech_token, tok, sizes[k]));
        /* Every truncation fails cleanly. */
        int bad = 0;
        for (size_t cut = 0; cut < b.len; cut++)
            bad += mp_spnego_parse_init(b.data, cut, &ini) == 0;
        CHECK_EQ(bad, 0);

        b.len = b.off = 0;
        CHECK_EQ(mp_spnego_build_resp(&b, MP_SPNEGO_ACCEPT_COMPLETED, mp_oid_krb5, 9, tok, sizes[k],
                                      tok, 16),
                 0);
        struct mp_spnego_resp r;
        CHECK_EQ(mp_spnego_parse_resp(b.data, b.len, &r), 0);
        CHECK_EQ(r.neg_state, 0);
        CHECK_EQ(mp_spnego_mech_kind(r.mech, r.mech_len), MP_MECH_KRB5);
        CHECK(r.token && r.token_len == sizes[k] && !memcmp(r.token, tok, sizes[k]));
        CHECK(r.mic && r.mic_len == 16);
        for (size_t cut = 0; cut < b.len; cut++)
            bad += mp_spnego_parse_resp(b.data, cut, &r) == 0;
        CHECK_EQ(bad, 0);
    }
    /* The final "accept-completed" with nothing else: what our acceptor sends
     * after the third DCE-style leg. */
    b.len = b.off = 0;
    CHECK_EQ(mp_spnego_build_resp(&b, 0, NULL, 0, NULL, 0, NULL, 0), 0);
    static const uint8_t done[] = {0xa1, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x0a, 0x01, 0x00};
    CHECK(b.len == sizeof done && !memcmp(b.data, done, sizeof done));
    /* An empty resp (all absent) parses with neg_state -1. */
    b.len = b.off = 0;
    CHECK_EQ(mp_spnego_build_resp(&b, -1, NULL, 0, NULL, 0, NULL, 0), 0);
    struct mp_spnego_resp r;
    CHECK_EQ(mp_spnego_parse_resp(b.data, b.len, &r), 0);
    CHECK_EQ(r.neg_state, -1);
    /* Bad arguments. */
    CHECK_EQ(mp_spnego_build_init(&b, m, 0, NULL, 0), -1);
    CHECK_EQ(mp_spnego_build_resp(&b, 4, NULL, 0, NULL, 0, NULL, 0), -1);
    mp_buf_free(&b);
}

static void test_der_strictness(void)
{
    struct mp_spnego_resp r;
    struct mp_spnego_init ini;
    uint8_t b[64];
    /* Indefinite length. */
    size_t n = t_unhex("a180300aa0030a0100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* Non-minimal long form (81 07 for 7). */
    n = t_unhex("a181073005a0030a0100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* Trailing garbage. */
    n = t_unhex("a1073005a0030a010000", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* negState out of range, and of the wrong type. */
    n = t_unhex("a1073005a0030a0104", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    n = t_unhex("a1073005a003020100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* Fields out of order / twice. */
    n = t_unhex("a10c300aa2030401aaa0030a0100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    n = t_unhex("a10c300aa0030a0100a0030a0100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* Length past the end. */
    n = t_unhex("a1093005a0030a0100", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    /* Empty mech list; an OID ending mid-subidentifier; wrong framing OID. */
    n = t_unhex("a0043002a000", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), -1);
    n = t_unhex("a0093007a005300306018a", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), -1);
    n = t_unhex("600e06062b0601050503a0043002a000", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), -1);
    /* High tag numbers are refused. */
    n = t_unhex("bf1f00", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_resp(b, n, &r), -1);
    CHECK_EQ(mp_spnego_parse_init(NULL, 0, &ini), -1);
    CHECK_EQ(mp_spnego_token_kind(b, 1), -1);
    /* The bare form (no 60 framing) of an init is accepted. */
    n = t_unhex("a00f300da00b300906072a864886f71201", b, sizeof b);
    CHECK_EQ(mp_spnego_parse_init(b, n, &ini), 0);
    CHECK_EQ(ini.n_mechs, 1u);
}

static void test_gss_no_kdc(void)
{
    char err[MP_GSS_ERRLEN] = "";
    /* Bad auth types. */
    CHECK(mp_gss_acceptor_new(NULL, 10, 0, err, sizeof err) == NULL && err[0]);
    CHECK(mp_gss_initiator_new(NULL, "host/x", 2, 0, err, sizeof err) == NULL);
    CHECK(mp_gss_initiator_new(NULL, NULL, 16, 0, err, sizeof err) == NULL);
    /* (A missing keytab is refused too, but MIT 1.20 leaks on that path,
     * which LeakSanitizer would report here: see kerberos.md.) */
    CHECK(mp_gss_cred_service(NULL, "host/x", err, sizeof err) == NULL);

    /* An acceptor refuses garbage and an NTLM-first SPNEGO init before MIT
     * sees anything; nothing established, nothing to protect. */
    struct mp_gss_ctx *a = mp_gss_acceptor_new(NULL, MP_AUTHN_GSS_NEGOTIATE, 0, err, sizeof err);
    CHECK(a != NULL);
    struct mp_buf out = {0};
    uint8_t b[256];
    size_t n = t_unhex(impacket_init_ntlm, b, sizeof b);
    CHECK_EQ(mp_gss_step(a, b, n, &out), MP_GSS_FAILED);
    CHECK(strstr(mp_gss_error(a), "NTLM") != NULL);
    CHECK_EQ(mp_gss_step(a, (const uint8_t *)"\x01\x02", 2, &out), MP_GSS_FAILED);
    CHECK_EQ(mp_gss_step(a, NULL, 0, &out), MP_GSS_FAILED);
    CHECK(!mp_gss_established(a) && mp_gss_peer_name(a) == NULL);
    CHECK_EQ(mp_gss_sig_len(a, MP_AUTHN_LEVEL_PKT_PRIVACY, 16), 0u);
    mp_gss_ctx_free(a);

    a = mp_gss_acceptor_new(NULL, MP_AUTHN_GSS_KERBEROS, 0, err, sizeof err);
    uint8_t junk[40] = {0x6e, 0x26};
    CHECK_EQ(mp_gss_step(a, junk, sizeof junk, &out), MP_GSS_FAILED);
    CHECK(mp_gss_error(a)[0] != 0);
    mp_buf_free(&out);

    /* A request PDU with a 76-byte auth value: located, but not protectable
     * by a context that is not established. */
    struct mp_buf p = {0};
    uint8_t stub[32] = {1, 2, 3};
    CHECK_EQ(mp_build_request(&p, MP_PFC_FIRST | MP_PFC_LAST, 5, 0, 1, NULL, stub, sizeof stub,
                              sizeof stub),
             0);
    uint8_t tail[8 + 76] = {MP_AUTHN_GSS_KERBEROS, MP_AUTHN_LEVEL_PKT_PRIVACY, 0, 0, 9, 0, 0, 0};
    CHECK_EQ(mp_buf_append(&p, tail, sizeof tail), 0);
    mp_put16(p.data + 8, (uint16_t)p.len);
    mp_put16(p.data + 10, 76);
    struct mp_dcerpc_auth_region r;
    CHECK_EQ(mp_gss_auth_locate(p.data, p.len, &r), 0);
    CHECK_EQ(r.body_off, 24u);
    CHECK_EQ(r.body_len, 32u);
    CHECK_EQ(r.stub_len, 32u);
    CHECK_EQ(r.verifier_off, p.len - 76);
    CHECK_EQ(r.context_id, 9u);
    CHECK_EQ(r.auth_type, MP_AUTHN_GSS_KERBEROS);
    CHECK_EQ(mp_gss_protect(a, p.data, p.len, true), -1);
    CHECK_EQ(mp_gss_unprotect(a, p.data, p.len, true, NULL, NULL), -1);
    /* auth_len larger than the PDU; pad past the body. */
    mp_put16(p.data + 10, 200);
    CHECK_EQ(mp_gss_auth_locate(p.data, p.len, &r), -1);
    mp_put16(p.data + 10, 76);
    p.data[p.len - 76 - 8 + 2] = 33;
    CHECK_EQ(mp_gss_auth_locate(p.data, p.len, &r), -1);
    /* add_verifier needs an established context (the token size). */
    struct mp_buf q = {0};
    CHECK_EQ(mp_build_request(&q, 3, 5, 0, 1, NULL, stub, 5, 5), 0);
    CHECK_EQ(mp_gss_add_verifier(a, &q, 0, 16, 6, 0), -1);
    mp_buf_free(&q);
    mp_buf_free(&p);
    mp_gss_ctx_free(a);
    mp_gss_ctx_free(NULL);
    mp_gss_cred_free(NULL);
}

int main(void)
{
    test_oids();
    test_impacket_tokens();
    test_negtokeninit2();
    test_build_parse();
    test_der_strictness();
    test_gss_no_kdc();
    TEST_DONE();
}
