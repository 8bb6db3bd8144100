/* NTLM cryptography (MS-NLMP 3.3, 3.4) on OpenSSL 3.  See ntlm_crypto.h. */
#include "auth/ntlm_crypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

/* ---- the provider context: the only global state ------------------------ */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *g_ctx;
static OSSL_PROVIDER *g_prov_default, *g_prov_legacy;
static EVP_MD *g_md4, *g_md5;
static EVP_CIPHER *g_rc4;
static EVP_MAC *g_hmac;
static const char *g_err = "NTLM crypto not initialised";
static int g_ok;

static void crypto_init_once(void)
{
    g_ctx = OSSL_LIB_CTX_new();
    if (!g_ctx) {
        g_err = "OSSL_LIB_CTX_new failed";
        return;
    }
    g_prov_default = OSSL_PROVIDER_load(g_ctx, "default");
    if (!g_prov_default) {
        g_err = "OpenSSL default provider unavailable";
        goto fail;
    }
    g_prov_legacy = OSSL_PROVIDER_load(g_ctx, "legacy");
    if (!g_prov_legacy) {
        g_err = "OpenSSL legacy provider (MD4, RC4) unavailable: install libssl3's "
                "ossl-modules/legacy.so or set OPENSSL_MODULES";
        goto fail;
    }
    g_md4 = EVP_MD_fetch(g_ctx, "MD4", NULL);
    g_md5 = EVP_MD_fetch(g_ctx, "MD5", NULL);
    g_rc4 = EVP_CIPHER_fetch(g_ctx, "RC4", NULL);
    g_hmac = EVP_MAC_fetch(g_ctx, "HMAC", NULL);
    if (!g_md4 || !g_rc4) {
        g_err = "MD4 or RC4 not available from the OpenSSL legacy provider";
        goto fail;
    }
    if (!g_md5 || !g_hmac) {
        g_err = "MD5 or HMAC not available from the OpenSSL default provider";
        goto fail;
    }
    g_err = NULL;
    g_ok = 1;
    return;
fail:
    ERR_clear_error();
    EVP_MD_free(g_md4);
    EVP_MD_free(g_md5);
    EVP_CIPHER_free(g_rc4);
    EVP_MAC_free(g_hmac);
    g_md4 = g_md5 = NULL;
    g_rc4 = NULL;
    g_hmac = NULL;
    if (g_prov_legacy)
        OSSL_PROVIDER_unload(g_prov_legacy);
    if (g_prov_default)
        OSSL_PROVIDER_unload(g_prov_default);
    g_prov_legacy = g_prov_default = NULL;
    OSSL_LIB_CTX_free(g_ctx);
    g_ctx = NULL;
}

int mp_ntlm_crypto_init(void)
{
    if (pthread_once(&g_once, crypto_init_once) != 0)
        return -1;
    return g_ok ? 0 : -1;
}

const char *mp_ntlm_crypto_error(void)
{
    return g_err;
}

/* ---- primitives ---------------------------------------------------------- */

int mp_ntlm_memcmp(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) ? -1 : 0;
}

void mp_ntlm_cleanse(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

int mp_ntlm_random(uint8_t *out, size_t n)
{
    if (mp_ntlm_crypto_init())
        return -1;
    return RAND_bytes_ex(g_ctx, out, n, 0) == 1 ? 0 : -1;
}

static int digest(EVP_MD *md, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                  uint8_t out[16])
{
    if (mp_ntlm_crypto_init())
        return -1;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    int ok = c && EVP_DigestInit_ex2(c, md, NULL) == 1 &&
             (!alen || EVP_DigestUpdate(c, a, alen) == 1) &&
             (!blen || EVP_DigestUpdate(c, b, blen) == 1) && EVP_DigestFinal_ex(c, out, &n) == 1 &&
             n == 16;
    EVP_MD_CTX_free(c);
    return ok ? 0 : -1;
}

int mp_ntlm_md4(const uint8_t *data, size_t len, uint8_t out[16])
{
    if (mp_ntlm_crypto_init())
        return -1;
    return digest(g_md4, data, len, NULL, 0, out);
}

int mp_ntlm_md5(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[16])
{
    if (mp_ntlm_crypto_init())
        return -1;
    return digest(g_md5, a, alen, b, blen, out);
}

int mp_ntlm_hmac_md5(const uint8_t *key, size_t key_len, const uint8_t *p1, size_t l1,
                     const uint8_t *p2, size_t l2, const uint8_t *p3, size_t l3, uint8_t out[16])
{
    if (mp_ntlm_crypto_init() || !key || !key_len)
        return -1;
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(g_hmac);
    if (!c)
        return -1;
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"MD5", 0);
    params[1] = OSSL_PARAM_construct_end();
    size_t n = 0;
    int ok = EVP_MAC_init(c, key, key_len, params) == 1 &&
             (!l1 || EVP_MAC_update(c, p1, l1) == 1) && (!l2 || EVP_MAC_update(c, p2, l2) == 1) &&
             (!l3 || EVP_MAC_update(c, p3, l3) == 1) && EVP_MAC_final(c, out, &n, 16) == 1 &&
             n == 16;
    EVP_MAC_CTX_free(c);
    return ok ? 0 : -1;
}

static EVP_CIPHER_CTX *rc4_new(const uint8_t *key, size_t key_len)
{
    if (mp_ntlm_crypto_init() || !key || key_len == 0 || key_len > 256)
        return NULL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return NULL;
    if (EVP_EncryptInit_ex2(c, g_rc4, NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_set_key_length(c, (int)key_len) != 1 ||
        EVP_EncryptInit_ex2(c, NULL, key, NULL, NULL) != 1) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

/* Continues the RC4 stream of c over len bytes (in place allowed). */
static int rc4_update(EVP_CIPHER_CTX *c, const uint8_t *in, size_t len, uint8_t *out)
{
    while (len) {
        int chunk = len > (size_t)INT_MAX / 2 ? INT_MAX / 2 : (int)len, n = 0;
        if (EVP_EncryptUpdate(c, out, &n, in, chunk) != 1 || n != chunk)
            return -1;
        in += chunk;
        out += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int mp_ntlm_rc4(const uint8_t *key, size_t key_len, const uint8_t *in, size_t len, uint8_t *out)
{
    EVP_CIPHER_CTX *c = rc4_new(key, key_len);
    if (!c)
        return -1;
    int r = rc4_update(c, in, len, out);
    EVP_CIPHER_CTX_free(c);
    return r;
}

uint32_t mp_ntlm_crc32(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ---- text ---------------------------------------------------------------- */

static void put_u16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

int mp_utf8_to_utf16le(const char *str, uint8_t *out, size_t cap, size_t *out_len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t o = 0;
    *out_len = 0;
    while (*s) {
        uint32_t cp;
        int n;
        if (s[0] < 0x80) {
            cp = s[0];
            n = 1;
        } else if ((s[0] & 0xe0) == 0xc0) {
            cp = s[0] & 0x1fu;
            n = 2;
        } else if ((s[0] & 0xf0) == 0xe0) {
            cp = s[0] & 0x0fu;
            n = 3;
        } else if ((s[0] & 0xf8) == 0xf0) {
            cp = s[0] & 0x07u;
            n = 4;
        } else {
            return -1;
        }
        for (int i = 1; i < n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return -1;
            cp = (cp << 6) | (s[i] & 0x3fu);
        }
        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        s += n;
        if (cp >= 0x10000) {
            if (cap - o < 4 || o > cap)
                return -1;
            cp -= 0x10000;
            put_u16(out + o, 0xd800 + (cp >> 10));
            put_u16(out + o + 2, 0xdc00 + (cp & 0x3ff));
            o += 4;
        } else {
            if (o > cap || cap - o < 2)
                return -1;
            put_u16(out + o, cp);
            o += 2;
        }
    }
    *out_len = o;
    return 0;
}

int mp_utf16le_to_utf8(const uint8_t *p, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    if (!cap)
        return -1;
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t cp = (uint32_t)(p[i] | (p[i + 1] << 8));
        if (cp >= 0xd800 && cp <= 0xdbff && i + 3 < len) {
            uint32_t lo = (uint32_t)(p[i + 2] | (p[i + 3] << 8));
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 2;
            }
        }
        if (cp >= 0xd800 && cp <= 0xdfff)
            cp = 0xfffd;
        uint8_t b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (uint8_t)(0xc0 | (cp >> 6));
            b[1] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (uint8_t)(0xe0 | (cp >> 12));
            b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            b[2] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            b[0] = (uint8_t)(0xf0 | (cp >> 18));
            b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            b[3] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 4;
        }
        if (cap - o <= n) /* keep room for the NUL */
            return -1;
        memcpy(out + o, b, n);
        o += n;
    }
    out[o] = 0;
    return 0;
}

static unsigned upper_cu(unsigned c)
{
    if (c >= 'a' && c <= 'z')
        return c - 0x20;
    if (c < 0xe0)
        return c;
    if (c <= 0xfe)
        return c == 0xf7 ? c : c - 0x20;
    if (c == 0xff)
        return 0x178;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177))
        return c & ~1u;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e))
        return (c & 1u) ? c : c - 1;
    if ((c >= 0x3b1 && c <= 0x3c1) || (c >= 0x3c3 && c <= 0x3cb))
        return c - 0x20;
    if (c == 0x3c2)
        return 0x3a3;
    if (c >= 0x430 && c <= 0x44f)
        return c - 0x20;
    if (c >= 0x450 && c <= 0x45f)
        return c - 0x50;
    return c;
}

void mp_utf16le_upper(uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i += 2)
        put_u16(p + i, upper_cu((unsigned)(p[i] | (p[i + 1] << 8))));
}

/* ---- one-way functions and responses ------------------------------------ */

/* UTF-8 -> freshly allocated UTF-16LE (at most 2 bytes per input byte). */
static uint8_t *to_u16(const char *s, size_t *len)
{
    size_t cap = 2 * strlen(s) + 2;
    uint8_t *p = malloc(cap);
    if (!p)
        return NULL;
    if (mp_utf8_to_utf16le(s, p, cap, len)) {
        free(p);
        return NULL;
    }
    return p;
}

int mp_ntlm_ntowfv1(const char *password, uint8_t nt_hash[16])
{
    size_t n;
    if (!password)
        return -1;
    uint8_t *u = to_u16(password, &n);
    if (!u)
        return -1;
    int r = mp_ntlm_md4(u, n, nt_hash);
    mp_ntlm_cleanse(u, n);
    free(u);
    return r;
}

int mp_ntlm_ntowfv2_u16(const uint8_t nt_hash[16], const uint8_t *user16, size_t user16_len,
                        const uint8_t *dom16, size_t dom16_len, uint8_t out[16])
{
    uint8_t small[512], *up = small;
    if (user16_len > sizeof(small)) {
        up = malloc(user16_len);
        if (!up)
            return -1;
    }
    if (user16_len)
        memcpy(up, user16, user16_len);
    mp_utf16le_upper(up, user16_len);
    int r = mp_ntlm_hmac_md5(nt_hash, 16, up, user16_len, dom16, dom16_len, NULL, 0, out);
    if (up != small)
        free(up);
    return r;
}

int mp_ntlm_ntowfv2(const uint8_t nt_hash[16], const char *user, const char *domain,
                    uint8_t out[16])
{
    size_t ul, dl;
    if (!user || !domain)
        return -1;
    uint8_t *u = to_u16(user, &ul), *d = to_u16(domain, &dl);
    int r = (u && d) ? mp_ntlm_ntowfv2_u16(nt_hash, u, ul, d, dl, out) : -1;
    free(u);
    free(d);
    return r;
}

int mp_ntlmv2_response(const uint8_t response_key[16], const uint8_t server_chal[8],
                       const uint8_t client_chal[8], uint64_t timestamp, const uint8_t *target_info,
                       size_t ti_len, uint8_t *nt_resp, size_t cap, size_t *nt_len,
                       uint8_t lm_resp[24], uint8_t session_base_key[16])
{
    if (ti_len > 0xffff || cap < 16 + MP_NTLMV2_BLOB_FIXED + 4 ||
        ti_len > cap - 16 - MP_NTLMV2_BLOB_FIXED - 4)
        return -1;
    size_t tl = MP_NTLMV2_BLOB_FIXED + ti_len + 4;
    uint8_t *t = nt_resp + 16;
    memset(t, 0, tl);
    t[0] = 1; /* RespType */
    t[1] = 1; /* HiRespType */
    for (int i = 0; i < 8; i++)
        t[8 + i] = (uint8_t)(timestamp >> (8 * i));
    memcpy(t + 16, client_chal, 8);
    if (ti_len)
        memcpy(t + 28, target_info, ti_len);
    if (mp_ntlm_hmac_md5(response_key, 16, server_chal, 8, t, tl, NULL, 0, nt_resp))
        return -1;
    if (mp_ntlm_hmac_md5(response_key, 16, nt_resp, 16, NULL, 0, NULL, 0, session_base_key))
        return -1;
    if (lm_resp) {
        if (mp_ntlm_hmac_md5(response_key, 16, server_chal, 8, client_chal, 8, NULL, 0, lm_resp))
            return -1;
        memcpy(lm_resp + 16, client_chal, 8);
    }
    *nt_len = 16 + tl;
    return 0;
}

int mp_ntlmv2_verify(const uint8_t response_key[16], const uint8_t server_chal[8],
                     const uint8_t *nt_resp, size_t nt_len, uint8_t session_base_key[16])
{
    uint8_t proof[16];
    /* NTProofStr + the fixed blob + at least MsvAvEOL; RespType 1, HiRespType 1. */
    if (!nt_resp || nt_len < 16 + MP_NTLMV2_BLOB_FIXED + 4 || nt_resp[16] != 1 || nt_resp[17] != 1)
        return -1;
    if (mp_ntlm_hmac_md5(response_key, 16, server_chal, 8, nt_resp + 16, nt_len - 16, NULL, 0,
                         proof))
        return -1;
    if (mp_ntlm_memcmp(proof, nt_resp, 16))
        return -1;
    return mp_ntlm_hmac_md5(response_key, 16, proof, 16, NULL, 0, NULL, 0, session_base_key);
}

int mp_lmv2_verify(const uint8_t response_key[16], const uint8_t server_chal[8],
                   const uint8_t lm_resp[24])
{
    uint8_t r[16];
    if (mp_ntlm_hmac_md5(response_key, 16, server_chal, 8, lm_resp + 16, 8, NULL, 0, r))
        return -1;
    return mp_ntlm_memcmp(r, lm_resp, 16);
}

int mp_ntlmv1_session_base_key(const uint8_t nt_hash[16], uint8_t out[16])
{
    return mp_ntlm_md4(nt_hash, 16, out);
}

/* ---- key schedule ----------------------------------------------------------*/

int mp_ntlm_kxkey(uint32_t flags, bool ntlmv2, const uint8_t session_base_key[16],
                  const uint8_t server_chal[8], const uint8_t *lm_resp8, uint8_t out[16])
{
    if (ntlmv2) {
        memcpy(out, session_base_key, 16);
        return 0;
    }
    if (flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) {
        if (!lm_resp8 || !server_chal)
            return -1;
        return mp_ntlm_hmac_md5(session_base_key, 16, server_chal, 8, lm_resp8, 8, NULL, 0, out);
    }
    if (flags & (MP_NTLMSSP_NEGOTIATE_LM_KEY | MP_NTLMSSP_REQUEST_NON_NT_SESSION_KEY))
        return -1; /* DES/LM based: not supported */
    memcpy(out, session_base_key, 16);
    return 0;
}

int mp_ntlm_key_exchange(const uint8_t kxkey[16], const uint8_t in[16], uint8_t out[16])
{
    return mp_ntlm_rc4(kxkey, 16, in, 16, out);
}

static const char c2s_sign[] = "session key to client-to-server signing key magic constant";
static const char s2c_sign[] = "session key to server-to-client signing key magic constant";
static const char c2s_seal[] = "session key to client-to-server sealing key magic constant";
static const char s2c_seal[] = "session key to server-to-client sealing key magic constant";

int mp_ntlm_signkey(uint32_t flags, const uint8_t exported[16], bool client_to_server,
                    uint8_t out[16])
{
    if (!(flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY))
        return -1;
    const char *m = client_to_server ? c2s_sign : s2c_sign;
    /* the constants are hashed with their terminating NUL */
    return mp_ntlm_md5(exported, 16, (const uint8_t *)m, strlen(m) + 1, out);
}

int mp_ntlm_sealkey(uint32_t flags, const uint8_t exported[16], bool client_to_server,
                    uint8_t out[16], size_t *seal_key_len)
{
    if (flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) {
        size_t kl = (flags & MP_NTLMSSP_NEGOTIATE_128)  ? 16
                    : (flags & MP_NTLMSSP_NEGOTIATE_56) ? 7
                                                        : 5;
        const char *m = client_to_server ? c2s_seal : s2c_seal;
        *seal_key_len = 16;
        return mp_ntlm_md5(exported, kl, (const uint8_t *)m, strlen(m) + 1, out);
    }
    if (flags & MP_NTLMSSP_NEGOTIATE_LM_KEY) {
        if (flags & MP_NTLMSSP_NEGOTIATE_56) {
            memcpy(out, exported, 7);
            out[7] = 0xa0;
        } else {
            memcpy(out, exported, 5);
            out[5] = 0xe5;
            out[6] = 0x38;
            out[7] = 0xb0;
        }
        memset(out + 8, 0, 8);
        *seal_key_len = 8;
        return 0;
    }
    memcpy(out, exported, 16);
    *seal_key_len = 16;
    return 0;
}

/* ---- session security ------------------------------------------------------*/

static int dir_init(struct mp_ntlm_dir *d, uint32_t flags, const uint8_t exported[16], bool c2s)
{
    uint8_t seal[16];
    size_t seal_len = 0;
    memset(d, 0, sizeof(*d));
    d->flags = flags;
    if ((flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) &&
        mp_ntlm_signkey(flags, exported, c2s, d->sign_key))
        return -1;
    if (mp_ntlm_sealkey(flags, exported, c2s, seal, &seal_len))
        return -1;
    d->rc4 = rc4_new(seal, seal_len);
    mp_ntlm_cleanse(seal, sizeof(seal));
    return d->rc4 ? 0 : -1;
}

static void dir_free(struct mp_ntlm_dir *d)
{
    EVP_CIPHER_CTX_free(d->rc4);
    mp_ntlm_cleanse(d, sizeof(*d));
    d->rc4 = NULL;
}

int mp_ntlm_session_init(struct mp_ntlm_session *s, uint32_t flags, const uint8_t exported[16],
                         bool is_client)
{
    memset(s, 0, sizeof(*s));
    s->flags = flags;
    if (dir_init(&s->send, flags, exported, is_client) ||
        dir_init(&s->recv, flags, exported, !is_client)) {
        mp_ntlm_session_free(s);
        return -1;
    }
    return 0;
}

void mp_ntlm_session_free(struct mp_ntlm_session *s)
{
    if (!s)
        return;
    dir_free(&s->send);
    dir_free(&s->recv);
}

static void le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* MAC (3.4.4): the signature for msg under d's state; advances seq and,
 * where the protocol says so, the RC4 stream. */
static int mac(struct mp_ntlm_dir *d, const uint8_t *msg, size_t len, uint8_t sig[16])
{
    if (!d || !d->rc4 || (!msg && len))
        return -1;
    le32(sig, 1);
    if (d->flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) {
        uint8_t seq[4], h[16];
        le32(seq, d->seq);
        if (mp_ntlm_hmac_md5(d->sign_key, 16, seq, 4, msg, len, NULL, 0, h))
            return -1;
        if ((d->flags & MP_NTLMSSP_NEGOTIATE_KEY_EXCH) && rc4_update(d->rc4, h, 8, h))
            return -1;
        memcpy(sig + 4, h, 8);
        memcpy(sig + 12, seq, 4);
    } else {
        uint8_t t[12] = {0};
        le32(t + 4, mp_ntlm_crc32(msg, len));
        if (rc4_update(d->rc4, t, 12, t))
            return -1;
        uint32_t s = (uint32_t)(t[8] | (t[9] << 8) | (t[10] << 16) | ((uint32_t)t[11] << 24));
        le32(t + 8, s ^ d->seq);
        memcpy(sig + 4, t, 12);
    }
    d->seq++;
    return 0;
}

static int sig_check(const struct mp_ntlm_dir *d, const uint8_t want[16], const uint8_t got[16])
{
    if (d->flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY)
        return mp_ntlm_memcmp(want, got, 16);
    /* Without ESS the RandomPad is not checked (senders zero it or not). */
    return mp_ntlm_memcmp(want, got, 4) | mp_ntlm_memcmp(want + 8, got + 8, 8);
}

int mp_ntlm_sign(struct mp_ntlm_dir *d, const uint8_t *msg, size_t len, uint8_t sig[16])
{
    return mac(d, msg, len, sig);
}

int mp_ntlm_verify(struct mp_ntlm_dir *d, const uint8_t *msg, size_t len, const uint8_t sig[16])
{
    uint8_t want[16];
    if (mac(d, msg, len, want))
        return -1;
    return sig_check(d, want, sig);
}

int mp_ntlm_seal(struct mp_ntlm_dir *d, uint8_t *data, size_t len, const uint8_t *sign_msg,
                 size_t sign_len, uint8_t sig[16])
{
    if (!d || !d->rc4 || (!data && len))
        return -1;
    if (!sign_msg) {
        sign_msg = data;
        sign_len = len;
    }
    /* The checksum covers the plaintext, but the RC4 stream encrypts the
     * message before the checksum: hash first, then run the stream. */
    if (d->flags & MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY) {
        uint8_t seq[4], h[16];
        le32(seq, d->seq);
        if (mp_ntlm_hmac_md5(d->sign_key, 16, seq, 4, sign_msg, sign_len, NULL, 0, h))
            return -1;
        if (rc4_update(d->rc4, data, len, data))
            return -1;
        if ((d->flags & MP_NTLMSSP_NEGOTIATE_KEY_EXCH) && rc4_update(d->rc4, h, 8, h))
            return -1;
        le32(sig, 1);
        memcpy(sig + 4, h, 8);
        memcpy(sig + 12, seq, 4);
        d->seq++;
        return 0;
    }
    uint32_t crc = mp_ntlm_crc32(sign_msg, sign_len);
    if (rc4_update(d->rc4, data, len, data))
        return -1;
    uint8_t t[12] = {0};
    le32(t + 4, crc);
    if (rc4_update(d->rc4, t, 12, t))
        return -1;
    uint32_t s = (uint32_t)(t[8] | (t[9] << 8) | (t[10] << 16) | ((uint32_t)t[11] << 24));
    le32(t + 8, s ^ d->seq);
    le32(sig, 1);
    memcpy(sig + 4, t, 12);
    d->seq++;
    return 0;
}

int mp_ntlm_unseal(struct mp_ntlm_dir *d, uint8_t *data, size_t len, const uint8_t *sign_msg,
                   size_t sign_len, const uint8_t sig[16])
{
    if (!d || !d->rc4 || (!data && len) || !sig)
        return -1;
    if (rc4_update(d->rc4, data, len, data))
        return -1;
    if (!sign_msg) {
        sign_msg = data;
        sign_len = len;
    }
    return mp_ntlm_verify(d, sign_msg, sign_len, sig);
}

int mp_ntlm_mic(const uint8_t exported[16], const uint8_t *neg, size_t neg_len, const uint8_t *chal,
                size_t chal_len, const uint8_t *auth, size_t auth_len, size_t mic_off,
                uint8_t mic[16])
{
    if (!neg || !chal || !auth || mic_off > auth_len || auth_len - mic_off < 16)
        return -1;
    if (mp_ntlm_crypto_init())
        return -1;
    EVP_MAC_CTX *c = EVP_MAC_CTX_new(g_hmac);
    if (!c)
        return -1;
    static const uint8_t zero[16];
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"MD5", 0);
    params[1] = OSSL_PARAM_construct_end();
    size_t n = 0, tail = auth_len - mic_off - 16;
    int ok = EVP_MAC_init(c, exported, 16, params) == 1 && EVP_MAC_update(c, neg, neg_len) == 1 &&
             EVP_MAC_update(c, chal, chal_len) == 1 &&
             (!mic_off || EVP_MAC_update(c, auth, mic_off) == 1) &&
             EVP_MAC_update(c, zero, 16) == 1 &&
             (!tail || EVP_MAC_update(c, auth + mic_off + 16, tail) == 1) &&
             EVP_MAC_final(c, mic, &n, 16) == 1 && n == 16;
    EVP_MAC_CTX_free(c);
    return ok ? 0 : -1;
}
