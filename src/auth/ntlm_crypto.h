/* NTLM (MS-NLMP) cryptography: one-way functions, NTLMv2 responses, the
 * key schedule and session security (MAC, SEAL).
 *
 * Primitives (MD4, MD5, HMAC-MD5, RC4) come from OpenSSL 3.  MD4 and RC4
 * live in OpenSSL's legacy provider, which is loaded into a library context
 * owned by this module (never the process default context), once, on the
 * first call of mp_ntlm_crypto_init() (thread-safe; every other function
 * calls it).  That context and the fetched algorithms are the only global
 * state.
 *
 * Conventions: functions return 0 on success and -1 on failure (bad
 * arguments, a buffer too small, a crypto failure, or a failed verification);
 * keys are 16 bytes; strings handed in are UTF-8 and converted to UTF-16LE
 * as the protocol requires.  Nothing here logs or prints key material. */
#ifndef MP_NTLM_CRYPTO_H
#define MP_NTLM_CRYPTO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_NTLM_KEY_LEN 16
#define MP_NTLM_CHAL_LEN 8
#define MP_NTLM_SIG_LEN 16 /* NTLMSSP_MESSAGE_SIGNATURE */

/* NEGOTIATE flags (MS-NLMP 2.2.2.5). */
#define MP_NTLMSSP_NEGOTIATE_UNICODE 0x00000001u
#define MP_NTLMSSP_NEGOTIATE_OEM 0x00000002u
#define MP_NTLMSSP_REQUEST_TARGET 0x00000004u
#define MP_NTLMSSP_NEGOTIATE_SIGN 0x00000010u
#define MP_NTLMSSP_NEGOTIATE_SEAL 0x00000020u
#define MP_NTLMSSP_NEGOTIATE_DATAGRAM 0x00000040u
#define MP_NTLMSSP_NEGOTIATE_LM_KEY 0x00000080u
#define MP_NTLMSSP_NEGOTIATE_NTLM 0x00000200u
#define MP_NTLMSSP_ANONYMOUS 0x00000800u
#define MP_NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED 0x00001000u
#define MP_NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED 0x00002000u
#define MP_NTLMSSP_NEGOTIATE_ALWAYS_SIGN 0x00008000u
#define MP_NTLMSSP_TARGET_TYPE_DOMAIN 0x00010000u
#define MP_NTLMSSP_TARGET_TYPE_SERVER 0x00020000u
#define MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY 0x00080000u
#define MP_NTLMSSP_NEGOTIATE_IDENTIFY 0x00100000u
#define MP_NTLMSSP_REQUEST_NON_NT_SESSION_KEY 0x00400000u
#define MP_NTLMSSP_NEGOTIATE_TARGET_INFO 0x00800000u
#define MP_NTLMSSP_NEGOTIATE_VERSION 0x02000000u
#define MP_NTLMSSP_NEGOTIATE_128 0x20000000u
#define MP_NTLMSSP_NEGOTIATE_KEY_EXCH 0x40000000u
#define MP_NTLMSSP_NEGOTIATE_56 0x80000000u

/* Loads the providers and fetches the algorithms, once.  0, or -1 when
 * OpenSSL's legacy provider (MD4, RC4) or the default one is unavailable;
 * mp_ntlm_crypto_error() then says what failed. */
int mp_ntlm_crypto_init(void);
const char *mp_ntlm_crypto_error(void);

/* Primitives (exposed for tests and the codec).  HMAC-MD5 over the
 * concatenation of up to 4 parts (NULL/0 parts are skipped). */
int mp_ntlm_md4(const uint8_t *data, size_t len, uint8_t out[16]);
int mp_ntlm_md5(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[16]);
int mp_ntlm_hmac_md5(const uint8_t *key, size_t key_len, const uint8_t *p1, size_t l1,
                     const uint8_t *p2, size_t l2, const uint8_t *p3, size_t l3, uint8_t out[16]);
/* One-shot RC4 (a fresh key schedule): out may equal in. */
int mp_ntlm_rc4(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len, uint8_t *out);
uint32_t mp_ntlm_crc32(const uint8_t *p, size_t n);

/* UTF-8 -> UTF-16LE into out (capacity cap bytes); *out_len bytes written.
 * Invalid UTF-8 fails.  UTF-16LE -> UTF-8 with a NUL; ill-formed code units
 * become U+FFFD.  Both return 0/-1. */
int mp_utf8_to_utf16le(const char *s, uint8_t *out, size_t cap, size_t *out_len);
int mp_utf16le_to_utf8(const uint8_t *p, size_t len, char *out, size_t cap);
/* In-place uppercase of UTF-16LE text as NTOWFv2 requires (ASCII, Latin-1,
 * Latin Extended-A, Greek and Cyrillic; other code units are kept). */
void mp_utf16le_upper(uint8_t *p, size_t len);

/* NTOWFv1(password) = MD4(UTF-16LE(password)): the NT hash. */
int mp_ntlm_ntowfv1(const char *password, uint8_t nt_hash[16]);
/* NTOWFv2 = HMAC_MD5(NT hash, UTF-16LE(Uppercase(user) || domain)).  The
 * _u16 form takes the names as found on the wire (UTF-16LE). LMOWFv2 is the
 * same function. */
int mp_ntlm_ntowfv2(const uint8_t nt_hash[16], const char *user, const char *domain,
                    uint8_t out[16]);
int mp_ntlm_ntowfv2_u16(const uint8_t nt_hash[16], const uint8_t *user16, size_t user16_len,
                        const uint8_t *dom16, size_t dom16_len, uint8_t out[16]);
#define mp_ntlm_lmowfv2 mp_ntlm_ntowfv2

/* NTLMv2 (MS-NLMP 3.3.2).  The client's blob ("temp") is
 *   0x01 0x01 Z(6) timestamp(8) client_challenge(8) Z(4) target_info Z(4)
 * and the NtChallengeResponse is NTProofStr(16) || temp.
 * mp_ntlmv2_response writes it to nt_resp (capacity cap) and sets *nt_len;
 * lm_resp gets LMv2 = HMAC_MD5(key, SC || CC) || CC (24 bytes, may be NULL);
 * session_base_key = HMAC_MD5(key, NTProofStr).  target_info is the AV pair
 * list as the client sends it (ending with MsvAvEOL). */
#define MP_NTLMV2_BLOB_FIXED 28 /* temp without target_info and its trailing Z(4) */
int mp_ntlmv2_response(const uint8_t response_key[16], const uint8_t server_chal[8],
                       const uint8_t client_chal[8], uint64_t timestamp, const uint8_t *target_info,
                       size_t ti_len, uint8_t *nt_resp, size_t cap, size_t *nt_len,
                       uint8_t lm_resp[24], uint8_t session_base_key[16]);
/* Server side: recomputes NTProofStr over the received response and
 * compares in constant time.  0 and the session base key, or -1. */
int mp_ntlmv2_verify(const uint8_t response_key[16], const uint8_t server_chal[8],
                     const uint8_t *nt_resp, size_t nt_len, uint8_t session_base_key[16]);
/* LMv2 check (when the client sent one that is not all zero). */
int mp_lmv2_verify(const uint8_t response_key[16], const uint8_t server_chal[8],
                   const uint8_t lm_resp[24]);

/* NTLMv1 session base key = MD4(NT hash) (MS-NLMP 3.3.1). */
int mp_ntlmv1_session_base_key(const uint8_t nt_hash[16], uint8_t out[16]);

/* KXKEY (3.4.5.1).  NTLMv2: the session base key.  NTLMv1 with extended
 * session security: HMAC_MD5(base, server_chal || lm_resp[0..7]).  NTLMv1
 * without it: the base key (LM_KEY / NON_NT_SESSION_KEY need DES and are
 * refused: -1).  lm_resp (8 bytes) is only read for v1 with ESS. */
int mp_ntlm_kxkey(uint32_t flags, bool ntlmv2, const uint8_t session_base_key[16],
                  const uint8_t server_chal[8], const uint8_t *lm_resp8, uint8_t out[16]);

/* Key exchange: EncryptedRandomSessionKey = RC4(KXKEY, ExportedSessionKey),
 * and the inverse on the server.  in and out may be the same buffer. */
int mp_ntlm_key_exchange(const uint8_t kxkey[16], const uint8_t in[16], uint8_t out[16]);

/* SIGNKEY / SEALKEY (3.4.5.2, 3.4.5.3) for one direction: client_to_server
 * selects the "client-to-server" magic constants.  SIGNKEY is only defined
 * with extended session security (-1 otherwise).  SEALKEY writes
 * *seal_key_len bytes (16, or 8 for the weakened keys of LM_KEY). */
int mp_ntlm_signkey(uint32_t flags, const uint8_t exported[16], bool client_to_server,
                    uint8_t out[16]);
int mp_ntlm_sealkey(uint32_t flags, const uint8_t exported[16], bool client_to_server,
                    uint8_t out[16], size_t *seal_key_len);

/* Session security for one direction (3.4): its own RC4 stream, signing key
 * and sequence number.  A connection has two: what we send and what we
 * receive (struct mp_ntlm_session). */
struct mp_ntlm_dir {
    uint32_t flags;
    uint32_t seq;
    uint8_t sign_key[16];
    void *rc4; /* EVP_CIPHER_CTX */
};

struct mp_ntlm_session {
    uint32_t flags;
    struct mp_ntlm_dir send, recv;
};

/* Derives both directions from the exported session key.  is_client: we are
 * the initiator (we send with the client-to-server keys). */
int mp_ntlm_session_init(struct mp_ntlm_session *s, uint32_t flags, const uint8_t exported[16],
                         bool is_client);
/* Frees the RC4 states and wipes the keys; safe on a zeroed struct. */
void mp_ntlm_session_free(struct mp_ntlm_session *s);

/* MAC (3.4.4) over msg with the direction's sequence number, which is then
 * incremented; with key exchange the checksum goes through the RC4 stream.
 * mp_ntlm_sign: makes the 16-byte signature.  mp_ntlm_verify: compares
 * (constant time; without ESS only checksum and sequence number) -- the
 * sequence number and RC4 stream advance whether or not it matches. */
int mp_ntlm_sign(struct mp_ntlm_dir *d, const uint8_t *msg, size_t len, uint8_t sig[16]);
int mp_ntlm_verify(struct mp_ntlm_dir *d, const uint8_t *msg, size_t len, const uint8_t sig[16]);

/* SEAL (3.4.3): RC4-encrypts data in place, then signs.  The signature is
 * computed over the plaintext of sign_msg (which may contain data, as in
 * DCE/RPC: the whole PDU is signed, only the stub is encrypted).  With
 * sign_msg == NULL the data itself is signed.  mp_ntlm_unseal decrypts in
 * place and verifies; on failure the data stays decrypted (discard it). */
int mp_ntlm_seal(struct mp_ntlm_dir *d, uint8_t *data, size_t len, const uint8_t *sign_msg,
                 size_t sign_len, uint8_t sig[16]);
int mp_ntlm_unseal(struct mp_ntlm_dir *d, uint8_t *data, size_t len, const uint8_t *sign_msg,
                   size_t sign_len, const uint8_t sig[16]);

/* MIC (3.1.5.1.2): HMAC_MD5(ExportedSessionKey, NEGOTIATE || CHALLENGE ||
 * AUTHENTICATE), the AUTHENTICATE message with its MIC field zeroed (the
 * caller passes mic_off, the offset of the 16-byte field; the message itself
 * is not modified). */
int mp_ntlm_mic(const uint8_t exported[16], const uint8_t *neg, size_t neg_len, const uint8_t *chal,
                size_t chal_len, const uint8_t *auth, size_t auth_len, size_t mic_off,
                uint8_t mic[16]);

/* Constant-time compare: 0 when equal. */
int mp_ntlm_memcmp(const void *a, const void *b, size_t n);
/* Wipes secrets (not optimised away). */
void mp_ntlm_cleanse(void *p, size_t n);
/* n bytes from OpenSSL's CSPRNG; 0/-1. */
int mp_ntlm_random(uint8_t *out, size_t n);

#endif
