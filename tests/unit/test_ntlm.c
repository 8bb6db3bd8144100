/* NTLM (MS-NLMP) crypto, NTLMSSP codec, acceptor/initiator and DCE/RPC
 * sign/seal.  Vectors: MS-NLMP 4.2.1 (common values), 4.2.2 (NTLMv1),
 * 4.2.3 (NTLMv1 with extended session security), 4.2.4 (NTLMv2).
 * Keys are compared in memory and never printed. */
#include <stdint.h>
#include <string.h>

#include "auth/dcerpc_sign.h"
#include "auth/ntlm_crypto.h"
#include "auth/ntlmssp.h"
#include "dcerpc/pdu.h"
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

/* 4.2.4.3 messages */
static const uint8_t v2_challenge_msg[0x68] = {
    0x4e, 0x54, 0x4c, 0x4d, 0x53, 0x53, 0x50, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0c,
    0x00, 0x38, 0x00, 0x00, 0x00, 0x33, 0x82, 0x8a, 0xe2, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
    0xcd, 0xef, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x24, 0x00, 0x44,
    0x00, 0x00, 0x00, 0x06, 0x00, 0x70, 0x17, 0x00, 0x00, 0x00, 0x0f, 0x53, 0x00, 0x65, 0x00,
    0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x02, 0x00, 0x0c, 0x00, 0x44, 0x00, 0x6f,
    0x00, 0x6d, 0x00, 0x61, 0x00, 0x69, 0x00, 0x6e, 0x00, 0x01, 0x00, 0x0c, 0x00, 0x53, 0x00,
    0x65, 0x00, 0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00};
static const uint8_t v2_auth_msg[0xe8] = {
    0x4e, 0x54, 0x4c, 0x4d, 0x53, 0x53, 0x50, 0x00, 0x03, 0x00, 0x00, 0x00, 0x18, 0x00, 0x18, 0x00,
    0x6c, 0x00, 0x00, 0x00, 0x54, 0x00, 0x54, 0x00, 0x84, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0c, 0x00,
    0x48, 0x00, 0x00, 0x00, 0x08, 0x00, 0x08, 0x00, 0x54, 0x00, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00,
    0x5c, 0x00, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00, 0xd8, 0x00, 0x00, 0x00, 0x35, 0x82, 0x88, 0xe2,
    0x05, 0x01, 0x28, 0x0a, 0x00, 0x00, 0x00, 0x0f, 0x44, 0x00, 0x6f, 0x00, 0x6d, 0x00, 0x61, 0x00,
    0x69, 0x00, 0x6e, 0x00, 0x55, 0x00, 0x73, 0x00, 0x65, 0x00, 0x72, 0x00, 0x43, 0x00, 0x4f, 0x00,
    0x4d, 0x00, 0x50, 0x00, 0x55, 0x00, 0x54, 0x00, 0x45, 0x00, 0x52, 0x00, 0x86, 0xc3, 0x50, 0x97,
    0xac, 0x9c, 0xec, 0x10, 0x25, 0x54, 0x76, 0x4a, 0x57, 0xcc, 0xcc, 0x19, 0xaa, 0xaa, 0xaa, 0xaa,
    0xaa, 0xaa, 0xaa, 0xaa, 0x68, 0xcd, 0x0a, 0xb8, 0x51, 0xe5, 0x1c, 0x96, 0xaa, 0xbc, 0x92, 0x7b,
    0xeb, 0xef, 0x6a, 0x1c, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x0c, 0x00, 0x44, 0x00, 0x6f, 0x00, 0x6d, 0x00, 0x61, 0x00, 0x69, 0x00, 0x6e, 0x00,
    0x01, 0x00, 0x0c, 0x00, 0x53, 0x00, 0x65, 0x00, 0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc5, 0xda, 0xd2, 0x54, 0x4f, 0xc9, 0x79, 0x90,
    0x94, 0xce, 0x1c, 0xe9, 0x0b, 0xc9, 0xd0, 0x3e};

/* The user database of the tests: User/Password and alice/Secret1!. */
static int lookups;
static int lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    (void)arg;
    (void)domain;
    lookups++;
    if (strcmp(user, "User") == 0)
        return mp_ntlm_ntowfv1("Password", nt_hash);
    if (strcmp(user, "alice") == 0)
        return mp_ntlm_ntowfv1("Secret1!", nt_hash);
    return -1;
}

static void test_v2_messages(void)
{
    struct mp_ntlm_challenge ch;
    CHECK_EQ(mp_ntlmssp_msg_type(v2_challenge_msg, sizeof(v2_challenge_msg)), 2);
    CHECK_EQ(mp_ntlmssp_parse_challenge(v2_challenge_msg, sizeof(v2_challenge_msg), &ch), 0);
    CHECK_EQ(ch.flags, 0xe28a8233u);
    EQ(ch.server_chal, server_chal, 8);
    CHECK(ch.target_info.len == 36 && memcmp(ch.target_info.p, v2_target_info, 36) == 0);
    CHECK(ch.target_name.len == 12 && memcmp(ch.target_name.p, "S\0e\0r\0v\0e\0r\0", 12) == 0);
    CHECK(ch.has_version);

    struct mp_ntlm_authenticate au;
    CHECK_EQ(mp_ntlmssp_parse_authenticate(v2_auth_msg, sizeof(v2_auth_msg), &au), 0);
    CHECK_EQ(au.flags, 0xe2888235u);
    CHECK_EQ(au.nt.len, 84);
    CHECK_EQ(au.lm.len, 24);
    CHECK(au.has_version);
    CHECK(!au.has_mic_field); /* payload at 72: no room for a MIC */
    struct mp_ntlm_field ti;
    struct mp_ntlm_av_info av;
    CHECK_EQ(mp_ntlmv2_response_av(au.nt.p, au.nt.len, &ti), 0);
    CHECK_EQ(mp_ntlm_av_parse(ti.p, ti.len, &av), 0);
    CHECK(av.nb_domain.len == 12 && av.nb_computer.len == 12 && !av.has_flags);

    /* the spec's AUTHENTICATE verifies against its CHALLENGE */
    struct mp_ntlm_acceptor_cfg cfg = {.lookup = lookup};
    struct mp_ntlm_result res;
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, v2_auth_msg,
                                         sizeof(v2_auth_msg), &res),
             MP_NTLM_OK);
    CHECK(strcmp(res.user, "User") == 0);
    CHECK(strcmp(res.domain, "Domain") == 0);
    CHECK(strcmp(res.workstation, "COMPUTER") == 0);
    EQ(res.exported_key, random_session_key, 16);
    CHECK(!res.mic_checked);
    /* ... but not when a MIC is required, nor against another challenge */
    cfg.require_mic = true;
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, v2_auth_msg,
                                         sizeof(v2_auth_msg), &res),
             MP_NTLM_E_MIC);
    cfg.require_mic = false;
    uint8_t other[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, other, NULL, 0, NULL, 0, v2_auth_msg,
                                         sizeof(v2_auth_msg), &res),
             MP_NTLM_E_LOGON);

    /* every truncation and single-byte corruption is refused or verified
     * safely (ASan watches the reads) */
    uint8_t m[sizeof(v2_auth_msg)];
    for (size_t n = 0; n < sizeof(v2_auth_msg); n++)
        CHECK(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, v2_auth_msg, n,
                                          &res) != MP_NTLM_OK);
    int accepted = 0;
    for (size_t i = 0; i < sizeof(v2_auth_msg); i++) {
        memcpy(m, v2_auth_msg, sizeof(m));
        m[i] ^= 0x80;
        if (mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res) ==
            MP_NTLM_OK)
            accepted++;
    }
    /* flags, version and workstation are not covered without a MIC; the
     * proof, names and blob are */
    CHECK(accepted > 0 && accepted < (int)sizeof(v2_auth_msg) / 2);
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x84] ^= 1; /* NTProofStr */
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_LOGON);
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x20] = 0xff; /* domain offset out of the message */
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_MALFORMED);
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x48] = 'X'; /* domain "Xomain": a different NTOWFv2 */
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_LOGON);
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x54] = 'u'; /* "user": the user name is case-insensitive, lookup is exact */
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_LOGON);

    /* an NTLMv1 response (24 bytes) is refused */
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x14] = 24;
    m[0x16] = 24;
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_UNSUPPORTED);
    /* anonymous: empty NT response, LM Z(1) */
    memcpy(m, v2_auth_msg, sizeof(m));
    m[0x14] = m[0x16] = 0;
    m[0x0c] = m[0x0e] = 1;
    CHECK_EQ(mp_ntlm_verify_authenticate(&cfg, server_chal, NULL, 0, NULL, 0, m, sizeof(m), &res),
             MP_NTLM_E_ANONYMOUS);
}

static void test_av_pairs(void)
{
    struct mp_ntlm_av_info av;
    static const uint8_t no_eol[4] = {1, 0, 0, 0};
    static const uint8_t overrun[8] = {1, 0, 9, 0, 0, 0, 0, 0};
    static const uint8_t dup[12] = {1, 0, 0, 0, 1, 0, 2, 0, 'a', 0, 0, 0};
    static const uint8_t badflags[10] = {6, 0, 2, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t ok[20] = {6, 0, 4, 0, 2, 0, 0, 0, 7, 0, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t ok_eol[24];
    memcpy(ok_eol, ok, 20);
    memset(ok_eol + 20, 0, 4);
    CHECK_EQ(mp_ntlm_av_parse(no_eol, 4, &av), -1);
    CHECK_EQ(mp_ntlm_av_parse(overrun, 8, &av), -1);
    CHECK_EQ(mp_ntlm_av_parse(dup, 12, &av), -1); /* a pair twice */
    CHECK_EQ(mp_ntlm_av_parse(badflags, 10, &av), -1);
    CHECK_EQ(mp_ntlm_av_parse(ok, 20, &av), -1);
    CHECK_EQ(mp_ntlm_av_parse(ok_eol, 24, &av), 0);
    CHECK(av.has_flags && av.flags == 2 && av.has_timestamp &&
          av.timestamp == 0x0807060504030201ull);
    CHECK_EQ(mp_ntlm_av_parse(NULL, 0, &av), -1);
}

static void handshake(struct mp_ntlm_acceptor_cfg *cfg, const char *user, const char *pw, int want,
                      struct mp_ntlm_result *res, uint8_t cli_key[16], uint32_t *cli_flags,
                      int tamper)
{
    struct mp_ntlm_initiator c;
    struct mp_ntlm_acceptor a;
    struct mp_buf neg = {0}, chal = {0}, auth = {0};
    CHECK_EQ(mp_ntlm_initiator_init(&c, user, "Domain", pw, NULL, "WS1", "host/server", 0), 0);
    mp_ntlm_acceptor_init(&a, cfg);
    CHECK_EQ(mp_ntlm_initiator_negotiate(&c, &neg), 0);
    CHECK_EQ(mp_ntlm_acceptor_negotiate(&a, neg.data, neg.len, &chal), MP_NTLM_OK);
    CHECK_EQ(mp_ntlm_initiator_authenticate(&c, chal.data, chal.len, &auth), 0);
    if (tamper == 1)
        auth.data[MP_NTLM_AUTH_MIC_OFF] ^= 1; /* the MIC */
    if (tamper == 2)
        auth.data[60] &= (uint8_t)~MP_NTLMSSP_NEGOTIATE_SEAL; /* strip SEAL: MIC breaks */
    int r = mp_ntlm_acceptor_authenticate(&a, auth.data, auth.len, res);
    CHECK_EQ(r, want);
    if (r != want)
        fprintf(stderr, "  handshake: %s\n", mp_ntlm_strerror(r));
    memcpy(cli_key, c.exported_key, 16);
    *cli_flags = c.flags;
    /* a second AUTHENTICATE on the same acceptor is out of order */
    struct mp_ntlm_result again;
    CHECK_EQ(mp_ntlm_acceptor_authenticate(&a, auth.data, auth.len, &again), MP_NTLM_E_STATE);
    mp_ntlm_acceptor_free(&a);
    mp_ntlm_initiator_free(&c);
    mp_buf_free(&neg);
    mp_buf_free(&chal);
    mp_buf_free(&auth);
}

/* mapiproxy:ntlm backend = winbind: the acceptor hands the names and the
 * responses out (peek), a "domain" (here: the same computation, as a DC
 * makes it) checks them and returns the session base key, and the acceptor
 * finishes with that key: same exported key as the client's. */
static void test_domain_key(void)
{
    struct mp_ntlm_acceptor_cfg cfg = {.nb_computer = "SERVER", .require_mic = true};
    for (int wrong = 0; wrong < 2; wrong++) {
        struct mp_ntlm_initiator c;
        struct mp_ntlm_acceptor a;
        struct mp_buf neg = {0}, chal = {0}, auth = {0};
        CHECK_EQ(mp_ntlm_initiator_init(&c, "Carol", "WBLAB", "Carol-Pw-1", NULL, "WS7", NULL, 0),
                 0);
        mp_ntlm_acceptor_init(&a, &cfg);
        CHECK_EQ(mp_ntlm_initiator_negotiate(&c, &neg), 0);
        struct mp_ntlm_logon lg;
        CHECK_EQ(mp_ntlm_acceptor_peek(&a, neg.data, neg.len, &lg), MP_NTLM_E_STATE);
        CHECK_EQ(mp_ntlm_acceptor_negotiate(&a, neg.data, neg.len, &chal), MP_NTLM_OK);
        CHECK_EQ(mp_ntlm_initiator_authenticate(&c, chal.data, chal.len, &auth), 0);
        CHECK_EQ(mp_ntlm_acceptor_peek(&a, auth.data, 40, &lg), MP_NTLM_E_MALFORMED);
        CHECK_EQ(mp_ntlm_acceptor_peek(&a, auth.data, auth.len, &lg), MP_NTLM_OK);
        CHECK(!strcmp(lg.user, "Carol") && !strcmp(lg.domain, "WBLAB") &&
              !strcmp(lg.workstation, "WS7"));
        CHECK(!memcmp(lg.server_chal, a.server_chal, 8));
        CHECK(lg.nt.len > 24 && lg.lm.len == 24);
        /* what the DC does */
        uint8_t h[16], u16[32], d16[32], key[16], base[16];
        size_t ul, dl;
        CHECK_EQ(mp_ntlm_ntowfv1("Carol-Pw-1", h), 0);
        CHECK_EQ(mp_utf8_to_utf16le(lg.user, u16, sizeof(u16), &ul), 0);
        CHECK_EQ(mp_utf8_to_utf16le(lg.domain, d16, sizeof(d16), &dl), 0);
        CHECK_EQ(mp_ntlm_ntowfv2_u16(h, u16, ul, d16, dl, key), 0);
        CHECK_EQ(mp_ntlmv2_verify(key, lg.server_chal, lg.nt.p, lg.nt.len, base), 0);
        if (wrong)
            base[0] ^= 1;
        struct mp_ntlm_result res;
        int r = mp_ntlm_acceptor_authenticate_key(&a, auth.data, auth.len, base, &res);
        if (wrong) {
            CHECK_EQ(r, MP_NTLM_E_MIC); /* a wrong key cannot make the client's MIC */
        } else {
            CHECK_EQ(r, MP_NTLM_OK);
            CHECK(res.mic_checked);
            CHECK(!memcmp(res.exported_key, c.exported_key, 16));
            CHECK(!strcmp(res.user, "Carol"));
        }
        mp_ntlm_acceptor_free(&a);
        mp_ntlm_initiator_free(&c);
        mp_buf_free(&neg);
        mp_buf_free(&chal);
        mp_buf_free(&auth);
    }
}

static void test_round_trip(void)
{
    struct mp_ntlm_acceptor_cfg cfg = {.nb_computer = "SERVER",
                                       .nb_domain = "DOMAIN",
                                       .dns_computer = "server.example.com",
                                       .dns_domain = "example.com",
                                       .lookup = lookup,
                                       .require_mic = true};
    struct mp_ntlm_result res;
    uint8_t ck[16];
    uint32_t cf;
    handshake(&cfg, "alice", "Secret1!", MP_NTLM_OK, &res, ck, &cf, 0);
    CHECK(strcmp(res.user, "alice") == 0 && strcmp(res.domain, "Domain") == 0 &&
          strcmp(res.workstation, "WS1") == 0);
    CHECK(res.mic_checked);
    CHECK(res.has_timestamp);
    EQ(res.exported_key, ck, 16);
    CHECK_EQ(res.flags, cf);
    CHECK(cf & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY);
    CHECK(cf & MP_NTLMSSP_NEGOTIATE_KEY_EXCH);
    CHECK(cf & MP_NTLMSSP_NEGOTIATE_SEAL);

    /* the keys agree: client seals, server unseals, and back */
    struct mp_ntlm_session cs, ss;
    CHECK_EQ(mp_ntlm_session_init(&cs, cf, ck, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&ss, res.flags, res.exported_key, false), 0);
    uint8_t buf[18], sg[16];
    for (int i = 0; i < 3; i++) {
        memcpy(buf, plaintext, 18);
        CHECK_EQ(mp_ntlm_seal(&cs.send, buf, 18, NULL, 0, sg), 0);
        CHECK_EQ(mp_ntlm_unseal(&ss.recv, buf, 18, NULL, 0, sg), 0);
        EQ(buf, plaintext, 18);
        CHECK_EQ(mp_ntlm_seal(&ss.send, buf, 18, NULL, 0, sg), 0);
        CHECK_EQ(mp_ntlm_unseal(&cs.recv, buf, 18, NULL, 0, sg), 0);
        EQ(buf, plaintext, 18);
    }
    mp_ntlm_session_free(&cs);
    mp_ntlm_session_free(&ss);

    handshake(&cfg, "alice", "wrong", MP_NTLM_E_LOGON, &res, ck, &cf, 0);
    CHECK(memcmp(res.exported_key, ck, 16) != 0);
    handshake(&cfg, "mallory", "Secret1!", MP_NTLM_E_LOGON, &res, ck, &cf, 0);
    handshake(&cfg, "alice", "Secret1!", MP_NTLM_E_MIC, &res, ck, &cf, 1);
    handshake(&cfg, "alice", "Secret1!", MP_NTLM_E_MIC, &res, ck, &cf, 2);

    /* channel bindings: the initiator sends unbound (zero) bindings */
    static const uint8_t zero16[16], cbt[16] = {1};
    cfg.channel_bindings = zero16;
    handshake(&cfg, "alice", "Secret1!", MP_NTLM_OK, &res, ck, &cf, 0);
    cfg.channel_bindings = cbt;
    handshake(&cfg, "alice", "Secret1!", MP_NTLM_E_BINDINGS, &res, ck, &cf, 0);
    cfg.channel_bindings = NULL;

    /* order: AUTHENTICATE first; NEGOTIATE twice */
    struct mp_ntlm_acceptor a;
    struct mp_buf out = {0};
    mp_ntlm_acceptor_init(&a, &cfg);
    CHECK_EQ(mp_ntlm_acceptor_authenticate(&a, v2_auth_msg, sizeof(v2_auth_msg), &res),
             MP_NTLM_E_STATE);
    mp_ntlm_acceptor_free(&a);
    mp_ntlm_acceptor_init(&a, &cfg);
    CHECK_EQ(mp_ntlm_acceptor_negotiate(&a, v2_challenge_msg, sizeof(v2_challenge_msg), &out),
             MP_NTLM_E_MALFORMED);
    CHECK_EQ(out.len, 0u);
    mp_ntlm_acceptor_free(&a);

    /* the initiator with an NT hash instead of a password */
    struct mp_ntlm_initiator c;
    uint8_t h[16];
    CHECK_EQ(mp_ntlm_ntowfv1("Secret1!", h), 0);
    CHECK_EQ(mp_ntlm_initiator_init(&c, "alice", "Domain", NULL, h, NULL, NULL, 0), 0);
    CHECK_EQ(mp_ntlm_initiator_authenticate(&c, v2_challenge_msg, sizeof(v2_challenge_msg), &out),
             -1); /* no NEGOTIATE yet */
    mp_ntlm_initiator_free(&c);
    CHECK_EQ(mp_ntlm_initiator_init(&c, "", "Domain", "x", NULL, NULL, NULL, 0), -1);
    mp_buf_free(&out);
}

/* A request PDU with a stub, protected by one side and checked by the other. */
static size_t make_request(struct mp_buf *b, size_t stub_len, uint8_t level)
{
    uint8_t stub[300];
    for (size_t i = 0; i < sizeof(stub); i++)
        stub[i] = (uint8_t)(i * 7 + 1);
    b->len = b->off = 0;
    CHECK_EQ(mp_build_request(b, MP_PFC_FIRST | MP_PFC_LAST, 7, 0, 3, NULL, stub, stub_len,
                              (uint32_t)stub_len),
             0);
    CHECK_EQ(mp_dcerpc_add_verifier(b, 0, MP_AUTHN_WINNT, level, 79231), 0);
    return b->len;
}

static void test_dcerpc(uint32_t flags, bool header_sign)
{
    struct mp_ntlm_session cs, ss;
    CHECK_EQ(mp_ntlm_session_init(&cs, flags, random_session_key, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&ss, flags, random_session_key, false), 0);
    struct mp_buf b = {0};
    uint8_t plain[400];
    size_t so, sl;
    for (uint8_t level = 5; level <= 6; level++) {
        for (size_t stub_len = 0; stub_len < 40; stub_len += 13) {
            size_t n = make_request(&b, stub_len, level);
            CHECK_EQ(n % 4, 0u);
            memcpy(plain, b.data, n);
            CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), 0);
            if (level == 6 && stub_len)
                CHECK(memcmp(b.data + 24, plain + 24, stub_len) != 0);
            if (level == 5)
                CHECK(memcmp(b.data, plain, n - 16) == 0);
            CHECK(memcmp(b.data, plain, 24) == 0); /* the header is never encrypted */
            CHECK_EQ(mp_dcerpc_ntlm_unprotect(&ss.recv, b.data, n, header_sign, &so, &sl), 0);
            CHECK_EQ(so, 24u);
            CHECK_EQ(sl, stub_len);
            CHECK(memcmp(b.data, plain, n - 16) == 0);
        }
    }
    /* tampering: stub, header (call id), sec_trailer, verifier */
    size_t offs[4] = {24, 12, 0, 0};
    for (int t = 0; t < 4; t++) {
        size_t n = make_request(&b, 33, 6);
        offs[2] = n - 16 - 8 + 4; /* context id in the sec_trailer */
        offs[3] = n - 5;          /* checksum */
        CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), 0);
        b.data[offs[t]] ^= 0x40;
        int r = mp_dcerpc_ntlm_unprotect(&ss.recv, b.data, n, header_sign, &so, &sl);
        bool covered = (flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) || header_sign ||
                       t == 0 || t == 3;
        CHECK_EQ(r, covered ? -1 : 0);
        if (r == 0 && !covered) { /* resync is not needed: seq advanced on both */
        }
    }
    /* after failures the streams are out of step only for KEY_EXCH; start over */
    mp_ntlm_session_free(&cs);
    mp_ntlm_session_free(&ss);
    CHECK_EQ(mp_ntlm_session_init(&cs, flags, random_session_key, true), 0);
    CHECK_EQ(mp_ntlm_session_init(&ss, flags, random_session_key, false), 0);
    /* replay: the same PDU twice fails the second time (sequence number) */
    size_t n = make_request(&b, 20, 5);
    CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), 0);
    memcpy(plain, b.data, n);
    CHECK_EQ(mp_dcerpc_ntlm_unprotect(&ss.recv, b.data, n, header_sign, NULL, NULL), 0);
    CHECK_EQ(mp_dcerpc_ntlm_unprotect(&ss.recv, plain, n, header_sign, NULL, NULL), -1);
    /* the response direction: server sends, client receives */
    b.len = 0;
    uint8_t stub[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    CHECK_EQ(mp_build_response(&b, MP_PFC_FIRST | MP_PFC_LAST, 7, 0, stub, 10, 10), 0);
    CHECK_EQ(mp_dcerpc_add_verifier(&b, 0, MP_AUTHN_WINNT, 6, 79231), 0);
    CHECK_EQ(mp_dcerpc_ntlm_protect(&ss.send, b.data, b.len, header_sign), 0);
    CHECK_EQ(mp_dcerpc_ntlm_unprotect(&cs.recv, b.data, b.len, header_sign, &so, &sl), 0);
    CHECK(sl == 10 && memcmp(b.data + so, stub, 10) == 0);
    /* malformed: wrong auth_len, pad beyond the body, bad level, short */
    n = make_request(&b, 8, 6);
    b.data[10] = 15;
    CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), -1);
    n = make_request(&b, 8, 6);
    b.data[n - 16 - 8 + 2] = 200;
    CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), -1);
    n = make_request(&b, 8, 2);
    CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n, header_sign), -1);
    CHECK_EQ(mp_dcerpc_ntlm_protect(&cs.send, b.data, n - 1, header_sign), -1);
    mp_buf_free(&b);
    mp_ntlm_session_free(&cs);
    mp_ntlm_session_free(&ss);
}

int main(void)
{
    test_primitives();
    test_v1_vectors();
    test_ess_vectors();
    test_v2_vectors();
    test_v2_messages();
    test_av_pairs();
    test_round_trip();
    test_domain_key();
    const uint32_t ess = 0xe28a8233u, ess_nokx = ess & ~MP_NTLMSSP_NEGOTIATE_KEY_EXCH,
                   v1 = MP_NTLMSSP_NEGOTIATE_KEY_EXCH | MP_NTLMSSP_NEGOTIATE_128 |
                        MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL;
    test_dcerpc(ess, true);
    test_dcerpc(ess, false);
    test_dcerpc(ess_nokx, false);
    test_dcerpc(v1, true);
    test_dcerpc(v1, false);
    TEST_DONE();
}
