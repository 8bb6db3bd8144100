/* NTLMSSP messages (MS-NLMP 2.2): NEGOTIATE, CHALLENGE, AUTHENTICATE and
 * the AV pairs of target info; an acceptor (server) and an initiator
 * (client) for NTLMv2 with extended session security, key exchange and the
 * MIC.
 *
 * Parsers never trust an offset or a length: every payload field must lie
 * inside the message and after the fixed header; fields point into the
 * caller's buffer (no copies).  NTLMv1 and LM responses are refused by the
 * acceptor.  Nothing here logs; secrets are wiped when freed. */
#ifndef MP_NTLMSSP_H
#define MP_NTLMSSP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/ntlm_crypto.h"
#include "core/buf.h"

#define MP_NTLMSSP_NEGOTIATE_MSG 1
#define MP_NTLMSSP_CHALLENGE_MSG 2
#define MP_NTLMSSP_AUTHENTICATE_MSG 3

/* AV pair ids (2.2.2.1) */
#define MP_MSV_AV_EOL 0
#define MP_MSV_AV_NB_COMPUTER 1
#define MP_MSV_AV_NB_DOMAIN 2
#define MP_MSV_AV_DNS_COMPUTER 3
#define MP_MSV_AV_DNS_DOMAIN 4
#define MP_MSV_AV_DNS_TREE 5
#define MP_MSV_AV_FLAGS 6
#define MP_MSV_AV_TIMESTAMP 7
#define MP_MSV_AV_SINGLE_HOST 8
#define MP_MSV_AV_TARGET_NAME 9
#define MP_MSV_AV_CHANNEL_BINDINGS 10
/* MsvAvFlags bits */
#define MP_MSV_AV_FLAG_CONSTRAINED 0x1u
#define MP_MSV_AV_FLAG_MIC 0x2u
#define MP_MSV_AV_FLAG_UNTRUSTED_SPN 0x4u

/* Offsets in the AUTHENTICATE message. */
#define MP_NTLM_AUTH_HDR_LEN 64
#define MP_NTLM_AUTH_VERSION_OFF 64
#define MP_NTLM_AUTH_MIC_OFF 72
#define MP_NTLM_AUTH_PAYLOAD_WITH_MIC 88

/* A payload field: points into the message; len 0 means absent. */
struct mp_ntlm_field {
    const uint8_t *p;
    uint16_t len;
};

struct mp_ntlm_negotiate {
    uint32_t flags;
    struct mp_ntlm_field domain, workstation; /* OEM strings */
    bool has_version;
    uint8_t version[8];
};

struct mp_ntlm_challenge {
    uint32_t flags;
    struct mp_ntlm_field target_name;
    uint8_t server_chal[8];
    struct mp_ntlm_field target_info;
    bool has_version;
    uint8_t version[8];
};

struct mp_ntlm_authenticate {
    uint32_t flags;
    struct mp_ntlm_field lm, nt, domain, user, workstation, enc_session_key;
    bool has_version;
    uint8_t version[8];
    bool has_mic_field; /* the payload starts at 88 or later */
    uint8_t mic[16];
};

/* The AV pairs of a target info list that matter here. */
struct mp_ntlm_av_info {
    struct mp_ntlm_field nb_computer, nb_domain, dns_computer, dns_domain, dns_tree, target_name,
        channel_bindings, single_host;
    bool has_flags, has_timestamp;
    uint32_t flags;
    uint64_t timestamp; /* FILETIME */
};

/* Message type of an NTLMSSP message (checks the signature): 1..3, or -1. */
int mp_ntlmssp_msg_type(const uint8_t *msg, size_t len);
/* Parsers: 0, or -1 for anything malformed. */
int mp_ntlmssp_parse_negotiate(const uint8_t *msg, size_t len, struct mp_ntlm_negotiate *out);
int mp_ntlmssp_parse_challenge(const uint8_t *msg, size_t len, struct mp_ntlm_challenge *out);
int mp_ntlmssp_parse_authenticate(const uint8_t *msg, size_t len, struct mp_ntlm_authenticate *out);
/* Parses a target info list: every pair inside len, ending with MsvAvEOL
 * (bytes after it are ignored), fixed-size pairs of the right size, no
 * duplicates of the pairs kept.  0 or -1. */
int mp_ntlm_av_parse(const uint8_t *ti, size_t len, struct mp_ntlm_av_info *out);
/* The target info inside an NTLMv2 NtChallengeResponse (after NTProofStr
 * and the fixed blob), or -1 when the response is too short. */
int mp_ntlmv2_response_av(const uint8_t *nt, size_t nt_len, struct mp_ntlm_field *ti);

/* Builders: append one whole message to out.  0 or -1.  Strings are UTF-8;
 * the NEGOTIATE's domain/workstation are sent as OEM (must be ASCII) and
 * may be NULL.  version: 8 bytes or NULL (then the VERSION flag is
 * cleared). */
int mp_ntlmssp_build_negotiate(struct mp_buf *out, uint32_t flags, const char *domain,
                               const char *workstation, const uint8_t *version);
int mp_ntlmssp_build_challenge(struct mp_buf *out, uint32_t flags, const uint8_t *target_name16,
                               size_t tn_len, const uint8_t server_chal[8],
                               const uint8_t *target_info, size_t ti_len, const uint8_t *version);
/* Names are UTF-16LE.  with_mic: leaves a zeroed MIC field at offset 72
 * (the version field is then always present). */
int mp_ntlmssp_build_authenticate(struct mp_buf *out, uint32_t flags, const uint8_t *lm,
                                  size_t lm_len, const uint8_t *nt, size_t nt_len,
                                  const uint8_t *domain16, size_t dom_len, const uint8_t *user16,
                                  size_t user_len, const uint8_t *ws16, size_t ws_len,
                                  const uint8_t *enc_key, size_t enc_len, const uint8_t *version,
                                  bool with_mic);
/* Appends one AV pair to a target info list being built. */
int mp_ntlm_av_put(struct mp_buf *out, uint16_t id, const void *val, size_t len);

/* Current time as a FILETIME (100 ns since 1601). */
uint64_t mp_ntlm_filetime_now(void);

/* Results of the acceptor; errors are negative. */
enum mp_ntlm_status {
    MP_NTLM_OK = 0,
    MP_NTLM_E_MALFORMED = -1,   /* a message does not parse */
    MP_NTLM_E_STATE = -2,       /* a message out of order */
    MP_NTLM_E_UNSUPPORTED = -3, /* NTLMv1, LM, OEM-only, DES based keys */
    MP_NTLM_E_ANONYMOUS = -4,   /* anonymous logon refused */
    MP_NTLM_E_LOGON = -5,       /* unknown user or wrong password (not told apart) */
    MP_NTLM_E_MIC = -6,         /* MIC missing where required, or wrong */
    MP_NTLM_E_BINDINGS = -7,    /* channel bindings do not match */
    MP_NTLM_E_INTERNAL = -8,    /* crypto or memory failure */
};
const char *mp_ntlm_strerror(int status);

/* Looks a user up: 0 and the NT hash (MD4 of the UTF-16LE password), or -1
 * when unknown.  user and domain are UTF-8 as the client sent them. */
typedef int (*mp_ntlm_lookup_fn)(void *arg, const char *user, const char *domain,
                                 uint8_t nt_hash[16]);

struct mp_ntlm_acceptor_cfg {
    /* Names announced in the CHALLENGE target info (UTF-8, may be NULL). */
    const char *nb_computer, *nb_domain, *dns_computer, *dns_domain, *dns_tree;
    mp_ntlm_lookup_fn lookup;
    void *lookup_arg;
    bool require_mic;                /* refuse clients that send no MIC */
    const uint8_t *channel_bindings; /* 16-byte hash the client must send, or NULL */
};

#define MP_NTLM_NAME_MAX 256 /* UTF-16 code units kept of user/domain/workstation */

struct mp_ntlm_result {
    char user[3 * MP_NTLM_NAME_MAX + 1], domain[3 * MP_NTLM_NAME_MAX + 1],
        workstation[3 * MP_NTLM_NAME_MAX + 1];
    uint32_t flags;           /* negotiated: the AUTHENTICATE's flags */
    uint8_t exported_key[16]; /* the session key for mp_ntlm_session_init */
    bool mic_checked;
    bool has_timestamp;
    uint64_t client_timestamp;
};

/* One NTLM handshake on the server side. */
struct mp_ntlm_acceptor {
    const struct mp_ntlm_acceptor_cfg *cfg;
    int state; /* 0 wants NEGOTIATE, 1 wants AUTHENTICATE, 2 done, 3 failed */
    uint32_t chal_flags;
    uint8_t server_chal[8];
    struct mp_buf neg, chal; /* kept for the MIC */
};

void mp_ntlm_acceptor_init(struct mp_ntlm_acceptor *a, const struct mp_ntlm_acceptor_cfg *cfg);
/* NEGOTIATE in, CHALLENGE appended to out (fresh CSPRNG challenge, target
 * info with the configured names and the current time). */
int mp_ntlm_acceptor_negotiate(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                               struct mp_buf *out);
/* AUTHENTICATE in: MP_NTLM_OK and *res filled, or an error status. */
int mp_ntlm_acceptor_authenticate(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                                  struct mp_ntlm_result *res);
void mp_ntlm_acceptor_free(struct mp_ntlm_acceptor *a);

/* For a domain that checks the response itself (winbind): the names and
 * responses of an AUTHENTICATE (nt/lm point into msg) and the server
 * challenge the acceptor sent.  The same refusals as the acceptor
 * (malformed, anonymous, NTLMv1/LM).  The acceptor's state is unchanged. */
struct mp_ntlm_logon {
    char user[3 * MP_NTLM_NAME_MAX + 1], domain[3 * MP_NTLM_NAME_MAX + 1],
        workstation[3 * MP_NTLM_NAME_MAX + 1];
    uint8_t server_chal[8];
    struct mp_ntlm_field nt, lm;
};
int mp_ntlm_acceptor_peek(const struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                          struct mp_ntlm_logon *out);
/* As mp_ntlm_acceptor_authenticate, with the NTLMv2 session base key the
 * domain returned (its "user session key") once it accepted the response:
 * key exchange, MIC and channel bindings are then checked here as usual. */
int mp_ntlm_acceptor_authenticate_key(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                                      const uint8_t session_base_key[16],
                                      struct mp_ntlm_result *res);

/* The verification itself, without state: the AUTHENTICATE against a
 * server challenge, with the NEGOTIATE and CHALLENGE messages for the MIC
 * (neg/chal may be NULL when the MIC is not to be checked).  Used by the
 * acceptor; exposed for tests with fixed challenges. */
int mp_ntlm_verify_authenticate(const struct mp_ntlm_acceptor_cfg *cfg,
                                const uint8_t server_chal[8], const uint8_t *neg, size_t neg_len,
                                const uint8_t *chal, size_t chal_len, const uint8_t *msg,
                                size_t len, struct mp_ntlm_result *res);

/* One NTLM handshake on the client side. */
struct mp_ntlm_initiator {
    uint32_t flags; /* requested; after authenticate: negotiated */
    uint8_t nt_hash[16];
    uint8_t *user16, *domain16, *ws16;
    size_t user_len, domain_len, ws_len;
    char *spn; /* MsvAvTargetName, UTF-8, or NULL */
    struct mp_buf neg;
    uint8_t exported_key[16];
    int state; /* 0 init, 1 negotiate sent, 2 done */
};

/* Default flags for the NEGOTIATE: Unicode, NTLM, sign, seal, always sign,
 * extended session security, 128, 56, key exchange, version, request target. */
#define MP_NTLM_INITIATOR_FLAGS                                                                    \
    (MP_NTLMSSP_NEGOTIATE_UNICODE | MP_NTLMSSP_NEGOTIATE_OEM | MP_NTLMSSP_REQUEST_TARGET |         \
     MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL | MP_NTLMSSP_NEGOTIATE_NTLM |           \
     MP_NTLMSSP_NEGOTIATE_ALWAYS_SIGN | MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY |            \
     MP_NTLMSSP_NEGOTIATE_VERSION | MP_NTLMSSP_NEGOTIATE_128 | MP_NTLMSSP_NEGOTIATE_KEY_EXCH |     \
     MP_NTLMSSP_NEGOTIATE_56)

/* password (UTF-8) or nt_hash (16 bytes): one of them.  workstation and spn
 * may be NULL; flags 0 means MP_NTLM_INITIATOR_FLAGS.  0 or -1. */
int mp_ntlm_initiator_init(struct mp_ntlm_initiator *c, const char *user, const char *domain,
                           const char *password, const uint8_t *nt_hash, const char *workstation,
                           const char *spn, uint32_t flags);
int mp_ntlm_initiator_negotiate(struct mp_ntlm_initiator *c, struct mp_buf *out);
/* CHALLENGE in, AUTHENTICATE (NTLMv2, MIC, channel bindings unbound)
 * appended to out; c->flags and c->exported_key then hold the session's
 * parameters.  0 or -1. */
int mp_ntlm_initiator_authenticate(struct mp_ntlm_initiator *c, const uint8_t *msg, size_t len,
                                   struct mp_buf *out);
void mp_ntlm_initiator_free(struct mp_ntlm_initiator *c);

#endif
