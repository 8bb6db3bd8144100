/* NTLM (MS-NLMP) crypto, NTLMSSP codec, acceptor/initiator and DCE/RPC
 * sign/seal.  Vectors: MS-NLMP 4.2.1 (common values), 4.2.2 (NTLMv1),
 * 4.2.3 (NTLMv1 with extended session security), 4.2.4 (NTLMv2).
 * Keys are compared in memory and never printed. */
#include <stdint.h>
#include <string.h>

#include "auth/ntlm_crypto.h"
#include "testlib.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
#define EQ(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

/* 4.2.1 common values */
static const uint8_t server_chal[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
static const uint8_t client_chal[8] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
static const uint8_t random_session_key[16] = {0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
                                               0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55};
/* "Plaintext" in UTF-16LE */
static const uint8_t plaintext[18] = {0x50, 0x00, 0x6c, 0x00, 0x61, 0x00, 0x69, 0x00, 0x6e,
                                      0x00, 0x74, 0x00, 0x65, 0x00, 0x78, 0x00, 0x74, 0x00};

/* 4.2.4 target info: NetBIOS domain "Domain", NetBIOS server "Server", EOL */
static const uint8_t v2_target_info[36] = {0x02, 0x00, 0x0c, 0x00, 0x44, 0x00, 0x6f, 0x00, 0x6d,
                                           0x00, 0x61, 0x00, 0x69, 0x00, 0x6e, 0x00, 0x01, 0x00,
                                           0x0c, 0x00, 0x53, 0x00, 0x65, 0x00, 0x72, 0x00, 0x76,
                                           0x00, 0x65, 0x00, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00};

static void test_primitives(void)
{
    uint8_t out[32];
    CHECK_EQ(mp_ntlm_crypto_init(), 0);
    if (mp_ntlm_crypto_error())
        fprintf(stderr, "crypto: %s\n", mp_ntlm_crypto_error());
    /* RFC 1320 */
    static const uint8_t md4_abc[16] = {0xa4, 0x48, 0x01, 0x7a, 0xaf, 0x21, 0xd8, 0x52,
                                        0x5f, 0xc1, 0x0a, 0xe8, 0x7a, 0xa6, 0x72, 0x9d};
    CHECK_EQ(mp_ntlm_md4((const uint8_t *)"abc", 3, out), 0);
    EQ(out, md4_abc, 16);
    /* RFC 6229, 128-bit key 0102..10, offset 0 */
    static const uint8_t rc4_key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    static const uint8_t rc4_ks[16] = {0x9a, 0xc7, 0xcc, 0x9a, 0x60, 0x9d, 0x1e, 0xf7,
                                       0xb2, 0x93, 0x28, 0x99, 0xcd, 0xe4, 0x1b, 0x97};
    memset(out, 0, 16);
    CHECK_EQ(mp_ntlm_rc4(rc4_key, 16, out, 16, out), 0);
    EQ(out, rc4_ks, 16);
    /* RFC 2202 HMAC-MD5 test 2 */
    static const uint8_t hm[16] = {0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03,
                                   0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d, 0xb7, 0x38};
    CHECK_EQ(mp_ntlm_hmac_md5((const uint8_t *)"Jefe", 4, (const uint8_t *)"what do ya want ", 16,
                              (const uint8_t *)"for nothing?", 12, NULL, 0, out),
             0);
    EQ(out, hm, 16);
    CHECK_EQ(mp_ntlm_crc32((const uint8_t *)"123456789", 9), 0xcbf43926u);
    /* text */
    size_t n = 0;
    CHECK_EQ(mp_utf8_to_utf16le("Us\xc3\xa9r", out, sizeof(out), &n), 0);
    CHECK_EQ(n, 8u);
    mp_utf16le_upper(out, n);
    CHECK(out[0] == 'U' && out[2] == 'S' && out[4] == 0xc9 && out[6] == 'R');
    char s[16];
    CHECK_EQ(mp_utf16le_to_utf8(out, n, s, sizeof(s)), 0);
    CHECK(strcmp(s, "US\xc3\x89R") == 0);
    CHECK_EQ(mp_utf8_to_utf16le("\xc3", out, sizeof(out), &n), -1);     /* truncated */
    CHECK_EQ(mp_utf8_to_utf16le("\xc0\xaf", out, sizeof(out), &n), -1); /* overlong */
    CHECK_EQ(mp_utf8_to_utf16le("abcd", out, 6, &n), -1);               /* no room */
    CHECK_EQ(mp_utf16le_to_utf8(out, 2, s, 1), -1);
}

/* 4.2.2 NTLMv1 */
static void test_v1_vectors(void)
{
    static const uint8_t ntowfv1[16] = {0xa4, 0xf4, 0x9c, 0x40, 0x65, 0x10, 0xbd, 0xca,
                                        0xb6, 0x82, 0x4e, 0xe7, 0xc3, 0x0f, 0xd8, 0x52};
    static const uint8_t sbk[16] = {0xd8, 0x72, 0x62, 0xb0, 0xcd, 0xe4, 0xb1, 0xcb,
                                    0x74, 0x99, 0xbe, 0xcc, 0xcd, 0xf1, 0x07, 0x84};
    /* 4.2.2.2.3: with KXKEY = session base key (no ESS, no LM_KEY) */
    static const uint8_t enc1[16] = {0x51, 0x88, 0x22, 0xb1, 0xb3, 0xf3, 0x50, 0xc8,
                                     0x95, 0x86, 0x82, 0xec, 0xbb, 0x3e, 0x3c, 0xb7};
    uint8_t h[16], k[16], kx[16], e[16];
    CHECK_EQ(mp_ntlm_ntowfv1("Password", h), 0);
    EQ(h, ntowfv1, 16);
    CHECK_EQ(mp_ntlmv1_session_base_key(h, k), 0);
    EQ(k, sbk, 16);
    uint32_t fl = MP_NTLMSSP_NEGOTIATE_KEY_EXCH | MP_NTLMSSP_NEGOTIATE_NTLM;
    CHECK_EQ(mp_ntlm_kxkey(fl, false, k, server_chal, NULL, kx), 0);
    CHECK_EQ(mp_ntlm_key_exchange(kx, random_session_key, e), 0);
    EQ(e, enc1, 16);
    CHECK_EQ(mp_ntlm_kxkey(fl | MP_NTLMSSP_NEGOTIATE_LM_KEY, false, k, server_chal, NULL, kx), -1);

    /* 4.2.2.4 GSS_WrapEx without extended session security: SealKey is the
     * random session key itself, checksum CRC32, RC4 over pad/crc/seq. */
    static const uint8_t data[18] = {0x56, 0xfe, 0x04, 0xd8, 0x61, 0xf9, 0x31, 0x9a, 0xf0,
                                     0xd7, 0x23, 0x8a, 0x2e, 0x3b, 0x4d, 0x45, 0x7f, 0xb8};
    static const uint8_t sig[16] = {0x01, 0x00, 0x00, 0x00, 0x45, 0xc8, 0x44, 0xe5,
                                    0x09, 0xdc, 0xd1, 0xdf, 0x2e, 0x45, 0x9d, 0x36};
    uint32_t f1 = MP_NTLMSSP_NEGOTIATE_KEY_EXCH | MP_NTLMSSP_NEGOTIATE_56 |
                  MP_NTLMSSP_NEGOTIATE_128 | MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL |
                  MP_NTLMSSP_NEGOTIATE_NTLM;
    struct mp_ntlm_session cli, srv;
    CHECK_EQ(mp_ntlm_session_init(&cli, f1, random_session_key, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&srv, f1, random_session_key, false), 0);
    uint8_t buf[18], sg[16];
    memcpy(buf, plaintext, 18);
    CHECK_EQ(mp_ntlm_seal(&cli.send, buf, 18, NULL, 0, sg), 0);
    EQ(buf, data, 18);
    EQ(sg, sig, 16);
    CHECK_EQ(mp_ntlm_unseal(&srv.recv, buf, 18, NULL, 0, sg), 0);
    EQ(buf, plaintext, 18);
    CHECK_EQ(cli.send.seq, 1u);
    CHECK_EQ(srv.recv.seq, 1u);
    mp_ntlm_session_free(&cli);
    mp_ntlm_session_free(&srv);
}

/* 4.2.3 NTLMv1 with extended session security, 56-bit, no key exchange */
static void test_ess_vectors(void)
{
    static const uint8_t kxkey[16] = {0xeb, 0x93, 0x42, 0x9a, 0x8b, 0xd9, 0x52, 0xf8,
                                      0xb8, 0x9c, 0x55, 0xb8, 0x7f, 0x47, 0x5e, 0xdc};
    static const uint8_t sealk[16] = {0x04, 0xdd, 0x7f, 0x01, 0x4d, 0x85, 0x04, 0xd2,
                                      0x65, 0xa2, 0x5c, 0xc8, 0x6a, 0x3a, 0x7c, 0x06};
    static const uint8_t signk[16] = {0x60, 0xe7, 0x99, 0xbe, 0x5c, 0x72, 0xfc, 0x92,
                                      0x92, 0x2a, 0xe8, 0xeb, 0xe9, 0x61, 0xfb, 0x8d};
    static const uint8_t data[18] = {0xa0, 0x23, 0x72, 0xf6, 0x53, 0x02, 0x73, 0xf3, 0xaa,
                                     0x1e, 0xb9, 0x01, 0x90, 0xce, 0x52, 0x00, 0xc9, 0x9d};
    static const uint8_t sig[16] = {0x01, 0x00, 0x00, 0x00, 0xff, 0x2a, 0xeb, 0x52,
                                    0xf6, 0x81, 0x79, 0x3a, 0x00, 0x00, 0x00, 0x00};
    /* 4.2.3.1.2: NTLMv1 ESS session base key (MD4 of the NT hash) and
     * KXKEY = HMAC_MD5(base, server_chal || LM response[0..7]) where the LM
     * response is the client challenge padded with zeros. */
    uint8_t h[16], base[16], kx[16], lm[24] = {0};
    memcpy(lm, client_chal, 8);
    uint32_t fl = MP_NTLMSSP_NEGOTIATE_56 | MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL |
                  MP_NTLMSSP_NEGOTIATE_NTLM | MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY;
    CHECK_EQ(mp_ntlm_ntowfv1("Password", h), 0);
    CHECK_EQ(mp_ntlmv1_session_base_key(h, base), 0);
    CHECK_EQ(mp_ntlm_kxkey(fl, false, base, server_chal, lm, kx), 0);
    EQ(kx, kxkey, 16);

    uint8_t k[16];
    size_t kl = 0;
    CHECK_EQ(mp_ntlm_sealkey(fl, kxkey, true, k, &kl), 0);
    CHECK_EQ(kl, 16u);
    EQ(k, sealk, 16);
    CHECK_EQ(mp_ntlm_signkey(fl, kxkey, true, k), 0);
    EQ(k, signk, 16);
    CHECK_EQ(mp_ntlm_signkey(fl & ~MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY, kxkey, true, k),
             -1);

    struct mp_ntlm_session cli, srv;
    CHECK_EQ(mp_ntlm_session_init(&cli, fl, kxkey, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&srv, fl, kxkey, false), 0);
    uint8_t buf[18], sg[16];
    memcpy(buf, plaintext, 18);
    CHECK_EQ(mp_ntlm_seal(&cli.send, buf, 18, NULL, 0, sg), 0);
    EQ(buf, data, 18);
    EQ(sg, sig, 16);
    CHECK_EQ(mp_ntlm_unseal(&srv.recv, buf, 18, NULL, 0, sg), 0);
    EQ(buf, plaintext, 18);
    mp_ntlm_session_free(&cli);
    mp_ntlm_session_free(&srv);
}

/* 4.2.4 NTLMv2 */
static void test_v2_vectors(void)
{
    static const uint8_t ntowfv2[16] = {0x0c, 0x86, 0x8a, 0x40, 0x3b, 0xfd, 0x7a, 0x93,
                                        0xa3, 0x00, 0x1e, 0xf2, 0x2e, 0xf0, 0x2e, 0x3f};
    static const uint8_t sbk[16] = {0x8d, 0xe4, 0x0c, 0xca, 0xdb, 0xc1, 0x4a, 0x82,
                                    0xf1, 0x5c, 0xb0, 0xad, 0x0d, 0xe9, 0x5c, 0xa3};
    static const uint8_t lmv2[16] = {0x86, 0xc3, 0x50, 0x97, 0xac, 0x9c, 0xec, 0x10,
                                     0x25, 0x54, 0x76, 0x4a, 0x57, 0xcc, 0xcc, 0x19};
    static const uint8_t proof[16] = {0x68, 0xcd, 0x0a, 0xb8, 0x51, 0xe5, 0x1c, 0x96,
                                      0xaa, 0xbc, 0x92, 0x7b, 0xeb, 0xef, 0x6a, 0x1c};
    static const uint8_t enc[16] = {0xc5, 0xda, 0xd2, 0x54, 0x4f, 0xc9, 0x79, 0x90,
                                    0x94, 0xce, 0x1c, 0xe9, 0x0b, 0xc9, 0xd0, 0x3e};
    static const uint8_t sealk[16] = {0x59, 0xf6, 0x00, 0x97, 0x3c, 0xc4, 0x96, 0x0a,
                                      0x25, 0x48, 0x0a, 0x7c, 0x19, 0x6e, 0x4c, 0x58};
    static const uint8_t signk[16] = {0x47, 0x88, 0xdc, 0x86, 0x1b, 0x47, 0x82, 0xf3,
                                      0x5d, 0x43, 0xfd, 0x98, 0xfe, 0x1a, 0x2d, 0x39};
    static const uint8_t data[18] = {0x54, 0xe5, 0x01, 0x65, 0xbf, 0x19, 0x36, 0xdc, 0x99,
                                     0x60, 0x20, 0xc1, 0x81, 0x1b, 0x0f, 0x06, 0xfb, 0x5f};
    static const uint8_t sig[16] = {0x01, 0x00, 0x00, 0x00, 0x7f, 0xb3, 0x8e, 0xc5,
                                    0xc5, 0x5d, 0x49, 0x76, 0x00, 0x00, 0x00, 0x00};
    const uint32_t fl = 0xe28a8233u; /* 4.2.4 challenge flags */

    uint8_t h[16], key[16], resp[128], lm[24], base[16], k[16];
    size_t n = 0, kl;
    CHECK_EQ(mp_ntlm_ntowfv1("Password", h), 0);
    CHECK_EQ(mp_ntlm_ntowfv2(h, "User", "Domain", key), 0);
    EQ(key, ntowfv2, 16);
    CHECK_EQ(mp_ntlm_ntowfv2(h, "USER", "Domain", k), 0); /* user is case-insensitive */
    EQ(k, ntowfv2, 16);
    CHECK_EQ(mp_ntlm_ntowfv2(h, "User", "DOMAIN", k), 0); /* domain is not */
    CHECK(memcmp(k, ntowfv2, 16) != 0);
    CHECK_EQ(mp_ntlmv2_response(key, server_chal, client_chal, 0, v2_target_info, 36, resp,
                                sizeof(resp), &n, lm, base),
             0);
    CHECK_EQ(n, 84u);
    EQ(resp, proof, 16);
    EQ(lm, lmv2, 16);
    EQ(lm + 16, client_chal, 8);
    EQ(base, sbk, 16);
    CHECK_EQ(mp_lmv2_verify(key, server_chal, lm), 0);
    CHECK_EQ(mp_ntlmv2_response(key, server_chal, client_chal, 0, v2_target_info, 36, resp, 83, &n,
                                lm, base),
             -1);
    n = 84;
    memset(base, 0, 16);
    CHECK_EQ(mp_ntlmv2_verify(key, server_chal, resp, n, base), 0);
    EQ(base, sbk, 16);
    resp[40] ^= 1;
    CHECK_EQ(mp_ntlmv2_verify(key, server_chal, resp, n, base), -1);
    resp[40] ^= 1;
    CHECK_EQ(mp_ntlmv2_verify(key, server_chal, resp, 24, base), -1); /* v1-sized */
    uint8_t kx[16], e[16], back[16];
    CHECK_EQ(mp_ntlm_kxkey(fl, true, sbk, server_chal, NULL, kx), 0);
    EQ(kx, sbk, 16);
    CHECK_EQ(mp_ntlm_key_exchange(kx, random_session_key, e), 0);
    EQ(e, enc, 16);
    CHECK_EQ(mp_ntlm_key_exchange(kx, e, back), 0);
    EQ(back, random_session_key, 16);
    CHECK_EQ(mp_ntlm_sealkey(fl, random_session_key, true, k, &kl), 0);
    EQ(k, sealk, 16);
    CHECK_EQ(mp_ntlm_signkey(fl, random_session_key, true, k), 0);
    EQ(k, signk, 16);

    struct mp_ntlm_session cli, srv;
    CHECK_EQ(mp_ntlm_session_init(&cli, fl, random_session_key, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&srv, fl, random_session_key, false), 0);
    EQ(cli.send.sign_key, signk, 16);
    EQ(srv.recv.sign_key, signk, 16);
    uint8_t buf[18], sg[16];
    memcpy(buf, plaintext, 18);
    CHECK_EQ(mp_ntlm_seal(&cli.send, buf, 18, NULL, 0, sg), 0);
    EQ(buf, data, 18);
    EQ(sg, sig, 16);
    CHECK_EQ(mp_ntlm_unseal(&srv.recv, buf, 18, NULL, 0, sg), 0);
    EQ(buf, plaintext, 18);

    /* sequence numbers: the next messages carry 1, 2 and verify in order;
     * a replayed or reordered signature fails */
    uint8_t s1[16], s2[16];
    CHECK_EQ(mp_ntlm_sign(&cli.send, plaintext, 18, s1), 0);
    CHECK_EQ(mp_ntlm_sign(&cli.send, plaintext, 18, s2), 0);
    CHECK_EQ(get32(s1 + 12), 1u);
    CHECK_EQ(get32(s2 + 12), 2u);
    CHECK_EQ(mp_ntlm_verify(&srv.recv, plaintext, 18, s2), -1); /* out of order */
    mp_ntlm_session_free(&srv);
    CHECK_EQ(mp_ntlm_session_init(&srv, fl, random_session_key, false), 0);
    CHECK_EQ(mp_ntlm_unseal(&srv.recv, (uint8_t[18]){0}, 0, data, 0, sg), -1);
    mp_ntlm_session_free(&cli);
    mp_ntlm_session_free(&srv);

    /* server-to-client direction: server's send keys = client's recv keys */
    CHECK_EQ(mp_ntlm_session_init(&cli, fl, random_session_key, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&srv, fl, random_session_key, false), 0);
    memcpy(buf, plaintext, 18);
    CHECK_EQ(mp_ntlm_seal(&srv.send, buf, 18, NULL, 0, sg), 0);
    CHECK(memcmp(buf, data, 18) != 0);
    CHECK_EQ(mp_ntlm_unseal(&cli.recv, buf, 18, NULL, 0, sg), 0);
    EQ(buf, plaintext, 18);
    mp_ntlm_session_free(&cli);
    mp_ntlm_session_free(&srv);
}

int main(void)
{
    test_primitives();
    test_v1_vectors();
    test_ess_vectors();
    test_v2_vectors();
    TEST_DONE();
}
