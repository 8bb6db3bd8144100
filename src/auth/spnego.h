/* Minimal SPNEGO (RFC 4178) for DCE/RPC auth type 9: NegTokenInit and
 * NegTokenResp, DER, parse and build.  Enough to choose Kerberos or NTLM
 * and carry the chosen mechanism's tokens; the mechanisms themselves are in
 * gss.c (Kerberos, MIT GSSAPI) and ntlmssp.c (NTLM).
 *
 * Parsing is bounds-checked and zero-copy: the pointers of the parse results
 * point into the caller's buffer.  Definite lengths only (DER), lengths up to
 * 4 bytes, nesting is fixed by the grammar (no recursion on input).  Unknown
 * context tags inside the sequences are skipped (NegTokenInit2's negHints
 * included), a tag seen twice or out of order is an error.
 *
 * OIDs are handled as their DER contents (no tag, no length). */
#ifndef MP_SPNEGO_H
#define MP_SPNEGO_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* DER contents of the OIDs we know. */
extern const uint8_t mp_oid_spnego[6];  /* 1.3.6.1.5.5.2 */
extern const uint8_t mp_oid_krb5[9];    /* 1.2.840.113554.1.2.2 */
extern const uint8_t mp_oid_ms_krb5[9]; /* 1.2.840.48018.1.2.2 */
extern const uint8_t mp_oid_ntlm[10];   /* 1.3.6.1.4.1.311.2.2.10 */

enum mp_spnego_mech { MP_MECH_OTHER = 0, MP_MECH_KRB5, MP_MECH_MS_KRB5, MP_MECH_NTLM };
enum mp_spnego_mech mp_spnego_mech_kind(const uint8_t *oid, size_t len);
bool mp_spnego_mech_is_krb5(enum mp_spnego_mech m);

/* negState */
#define MP_SPNEGO_ACCEPT_COMPLETED 0
#define MP_SPNEGO_ACCEPT_INCOMPLETE 1
#define MP_SPNEGO_REJECT 2
#define MP_SPNEGO_REQUEST_MIC 3

#define MP_SPNEGO_MAX_MECHS 16

struct mp_spnego_oid {
    const uint8_t *p;
    size_t len;
};

struct mp_spnego_init {
    struct mp_spnego_oid mechs[MP_SPNEGO_MAX_MECHS];
    size_t n_mechs;
    /* The whole MechTypeList (SEQUENCE tag to end): what mechListMIC covers. */
    const uint8_t *mech_list;
    size_t mech_list_len;
    bool has_req_flags;
    uint8_t req_flags;         /* the first octet of the bit string */
    const uint8_t *mech_token; /* NULL when absent */
    size_t mech_token_len;
    const uint8_t *mic; /* NULL when absent */
    size_t mic_len;
};

struct mp_spnego_resp {
    int neg_state;       /* -1 when absent */
    const uint8_t *mech; /* supportedMech, NULL when absent */
    size_t mech_len;
    const uint8_t *token; /* responseToken, NULL when absent */
    size_t token_len;
    const uint8_t *mic;
    size_t mic_len;
};

/* A NegTokenInit, framed (60 .. 06 SPNEGO-OID a0 ..) as initial context
 * tokens are, or bare (a0 ..).  0 or -1.  At least one mechanism. */
int mp_spnego_parse_init(const uint8_t *p, size_t n, struct mp_spnego_init *out);
/* A NegTokenResp (a1 ..).  0 or -1. */
int mp_spnego_parse_resp(const uint8_t *p, size_t n, struct mp_spnego_resp *out);
/* Which kind the token is: 0 init, 1 resp, -1 neither (first bytes only). */
int mp_spnego_token_kind(const uint8_t *p, size_t n);

/* Appends a framed NegTokenInit with these mechanisms (first = preferred),
 * and mech_token (may be NULL) for the first.  0 or -1. */
int mp_spnego_build_init(struct mp_buf *out, const struct mp_spnego_oid *mechs, size_t n_mechs,
                         const uint8_t *mech_token, size_t mech_token_len);
/* Appends a NegTokenResp; neg_state < 0, mech, token, mic NULL: left out. */
int mp_spnego_build_resp(struct mp_buf *out, int neg_state, const uint8_t *mech, size_t mech_len,
                         const uint8_t *token, size_t token_len, const uint8_t *mic,
                         size_t mic_len);

#endif
