/* NTLM packet integrity and privacy for connection-oriented DCE/RPC
 * (MS-RPCE 2.2.2.11, 3.3.1.5.2.2; MS-NLMP 3.4.6).
 *
 * A protected PDU is
 *   header | (object uuid) | stub | auth pad | sec_trailer (8) | verifier (16)
 * where auth_len = 16 and the verifier is an NTLMSSP_MESSAGE_SIGNATURE.
 * PKT_INTEGRITY signs (so do CALL and PKT: over a connection Windows raises
 * CALL to PKT, and NTLM signs PKT as integrity, as Samba does);
 * PKT_PRIVACY encrypts stub + auth pad and signs.
 *
 * What the signature covers:
 *  - extended session security (NTLMv2, every modern peer): the whole PDU
 *    from the header to the end of the sec_trailer, with the plaintext stub.
 *    MS-NLMP 3.4.6.1 puts every buffer into an NTLMv2 signature, so this is
 *    so whether or not PFC_SUPPORT_HEADER_SIGN was negotiated (Windows,
 *    Samba and Impacket agree);
 *  - without it (NTLMv1 MAC, CRC32): only the buffers marked for signing:
 *    the whole PDU with header signing, else stub + auth pad.
 * Only stub + auth pad are ever encrypted. */
#ifndef MP_DCERPC_SIGN_H
#define MP_DCERPC_SIGN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/ntlm_crypto.h"
#include "core/buf.h"

#define MP_AUTHN_SPNEGO 9
#define MP_AUTHN_WINNT 10
#define MP_AUTHN_LEVEL_CONNECT 2
#define MP_AUTHN_LEVEL_CALL 3 /* connection-oriented: signed as packet integrity */
#define MP_AUTHN_LEVEL_PKT 4  /* the same */
#define MP_AUTHN_LEVEL_PKT_INTEGRITY 5
#define MP_AUTHN_LEVEL_PKT_PRIVACY 6
#define MP_NTLM_VERIFIER_LEN 16
#define MP_AUTH_PAD_ALIGN 16

/* Where things are in a protected request/response/fault PDU. */
struct mp_dcerpc_auth_region {
    size_t body_off;     /* after the request/response/fault header */
    size_t body_len;     /* stub + auth pad */
    size_t stub_len;     /* body_len - pad */
    size_t trailer_off;  /* the sec_trailer */
    size_t verifier_off; /* the 16-byte signature */
    uint8_t auth_type, auth_level, pad_len;
    uint32_t context_id;
};

/* Validates a whole fragment (frag_len == len, NDR little-endian, a
 * request, response or fault, auth_len > 0, pad inside the body) and
 * locates its parts, whatever the auth type and verifier length.  0 or -1. */
int mp_dcerpc_auth_region_of(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r);

/* The same for NTLM: auth_len 16, auth type NTLM or SPNEGO.  0 or -1. */
int mp_dcerpc_auth_locate(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r);

/* The request/response/fault fragment that ends buf (from pdu_off, without
 * auth yet): its length, its stub's, and the auth pad the stub needs (to
 * MP_AUTH_PAD_ALIGN).  0, or -1 when it is not such a fragment. */
int mp_dcerpc_verifier_room(const struct mp_buf *buf, size_t pdu_off, size_t *len, size_t *stub,
                            size_t *pad);
/* Appends auth pad (to MP_AUTH_PAD_ALIGN from the stub start), a sec_trailer
 * and a zeroed verifier to the request/response/fault fragment that ends
 * buf (starting at pdu_off, without auth), fixing frag_len and auth_len.
 * 0 or -1. */
int mp_dcerpc_add_verifier(struct mp_buf *buf, size_t pdu_off, uint8_t auth_type,
                           uint8_t auth_level, uint32_t context_id);

/* Sending: signs (level 5) or seals and signs (level 6) the PDU in place,
 * as its sec_trailer says, writing the verifier.  Uses and advances the
 * direction's sequence number.  0 or -1. */
int mp_dcerpc_ntlm_protect(struct mp_ntlm_dir *send, uint8_t *pdu, size_t len, bool header_sign);

/* Receiving: verifies (and at level 6 decrypts in place) a PDU.  0, with
 * *stub_off / *stub_len (may be NULL) the plaintext stub without the auth
 * pad; -1 when malformed or the signature does not match (then the body
 * must be discarded: it may be half-decrypted). */
int mp_dcerpc_ntlm_unprotect(struct mp_ntlm_dir *recv, uint8_t *pdu, size_t len, bool header_sign,
                             size_t *stub_off, size_t *stub_len);

#endif
