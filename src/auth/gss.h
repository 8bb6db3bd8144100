/* Kerberos for connection-oriented DCE/RPC through MIT GSSAPI
 * (MS-RPCE 2.2.1.1.7 auth type 16 RPC_C_AUTHN_GSS_KERBEROS, and 9
 * RPC_C_AUTHN_GSS_NEGOTIATE with Kerberos chosen inside SPNEGO).
 * See doc/internals/kerberos.md.
 *
 * - Credentials: an acceptor from a keytab, an initiator from a ccache or a
 *   client keytab (gss_acquire_cred_from: nothing is read from or written to
 *   the process environment), the proxy's own service credential (accept +
 *   initiate, for S4U), and a credential acting as the client towards other
 *   services (delegated TGT, or S4U2Self; S4U2Proxy happens when that
 *   credential initiates to a third service).
 * - Contexts: DCE style (GSS_C_DCE_STYLE, mutual): AP-REQ (bind) ->
 *   AP-REP (bind_ack) -> AP-REP (auth3/alter_context) -> done.  With auth
 *   type 9 the tokens are wrapped in SPNEGO NegTokenInit/NegTokenResp by
 *   this module (spnego.c); NTLM inside SPNEGO is not handled here.
 * - Per-PDU protection: integrity = gss_get_mic over the body, or the whole
 *   PDU up to the end of the sec_trailer with header signing; privacy =
 *   gss_wrap_iov, the stub (+ auth pad) encrypted in place, the auth_value
 *   being the whole wrap token (header + the rotated trailer, DCE style),
 *   header and sec_trailer as SIGN_ONLY with header signing.
 *
 * Blocking: calls that need a ticket the credential does not have (an
 * initiator's first step, S4U2Self, S4U2Proxy) talk to the KDC
 * synchronously.  Accepting and per-PDU protection never do.
 *
 * Every function that can fail takes or keeps an error text (never secrets).
 * Nothing here logs. */
#ifndef MP_GSS_H
#define MP_GSS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_AUTHN_GSS_KERBEROS 16
#define MP_AUTHN_GSS_NEGOTIATE 9

#define MP_GSS_ERRLEN 256

/* mp_gss_step results */
#define MP_GSS_DONE 0
#define MP_GSS_CONTINUE 1
#define MP_GSS_FAILED (-1)

/* Initiator flags (mp_gss_initiator_new) */
#define MP_GSS_F_DELEGATE 0x1 /* forward a TGT (GSS_C_DELEG_FLAG) */
#define MP_GSS_F_NO_DCE_STYLE                                                                      \
    0x2 /* initiator: plain RFC 4121 two legs;                                                     \
         * acceptor: keep the AP-REQ framing (else a                                               \
         * framed AP-REQ is unframed for MIT, as a                                                 \
         * DCE-style one must be bare) */
/* Acceptor flags (mp_gss_acceptor_new) */
#define MP_GSS_F_ACCEPT_DELEGATION                                                                 \
    0x4 /* keep a forwarded TGT: non-DCE-style                                                     \
         * clients only, see kerberos.md */

struct mp_gss_cred;
struct mp_gss_ctx;

/* Acceptor credential from keytab ("FILE:/path" or a path; NULL: the
 * library default or KRB5_KTNAME).  principal ("host/name@REALM", or
 * "host/name" in the default realm) or NULL: any key of the keytab
 * (GSS_C_NO_NAME).  NULL on failure with err set. */
struct mp_gss_cred *mp_gss_cred_acceptor(const char *keytab, const char *principal, char *err,
                                         size_t errlen);

/* Initiator credential: from ccache ("FILE:/path", "MEMORY:x", ...) and/or
 * client_keytab (then tickets are fetched with the keytab's key and kept in
 * ccache, which must then be given, e.g. "MEMORY:name").  principal may be
 * NULL (the ccache's default principal).  NULL on failure. */
struct mp_gss_cred *mp_gss_cred_initiator(const char *ccache, const char *client_keytab,
                                          const char *principal, char *err, size_t errlen);

/* The proxy's own service credential: accepts with keytab's key for
 * principal and initiates as principal (TGT from the same keytab into a
 * private MEMORY ccache).  This is what S4U2Self needs. */
struct mp_gss_cred *mp_gss_cred_service(const char *keytab, const char *principal, char *err,
                                        size_t errlen);

/* S4U2Self: a credential for user_principal ("alice@REALM") obtained with
 * the service credential (gss_acquire_cred_impersonate_name).  Initiating
 * with it to the service itself uses the S4U2Self ticket; to any other
 * service, MIT does S4U2Proxy with it as evidence. */
struct mp_gss_cred *mp_gss_cred_impersonate(struct mp_gss_cred *service, const char *user_principal,
                                            char *err, size_t errlen);

/* A credential that acts as the client of an established acceptor context:
 * the delegated credential when the client forwarded a TGT (only possible
 * with MP_GSS_F_ACCEPT_DELEGATION and a non-DCE-style client: MIT drops
 * DCE-style delegation), otherwise S4U2Self for the client's name through
 * service (may be NULL: then only delegation works).  *delegated says
 * which.  NULL on failure. */
struct mp_gss_cred *mp_gss_cred_for_client(struct mp_gss_cred *service, struct mp_gss_ctx *accepted,
                                           bool *delegated, char *err, size_t errlen);

/* The principal a credential is for ("alice@LAB.EXAMPLE"), into out. */
int mp_gss_cred_name(struct mp_gss_cred *c, char *out, size_t outlen);

void mp_gss_cred_free(struct mp_gss_cred *c);

/* Security contexts.  auth_type is MP_AUTHN_GSS_KERBEROS (16, raw
 * Kerberos tokens) or MP_AUTHN_GSS_NEGOTIATE (9, SPNEGO-wrapped).  The
 * credential must outlive the context. */
struct mp_gss_ctx *mp_gss_acceptor_new(struct mp_gss_cred *cred, uint8_t auth_type, unsigned flags,
                                       char *err, size_t errlen);
/* target: a Kerberos principal ("exchangeMDB/exlab01.lab.example",
 * "@REALM" optional) or a host-based name ("service@host"). */
struct mp_gss_ctx *mp_gss_initiator_new(struct mp_gss_cred *cred, const char *target,
                                        uint8_t auth_type, unsigned flags, char *err,
                                        size_t errlen);
void mp_gss_ctx_free(struct mp_gss_ctx *c);

/* One leg: the peer's token in (in_len 0 / in NULL for the initiator's first
 * call), the token to send appended to out (possibly nothing).  Returns
 * MP_GSS_DONE when the context is established, MP_GSS_CONTINUE when more
 * legs are needed, MP_GSS_FAILED (error text in mp_gss_error).  An acceptor
 * may have a token to send with MP_GSS_FAILED (a KRB-ERROR): send it then
 * drop the association. */
int mp_gss_step(struct mp_gss_ctx *c, const uint8_t *in, size_t in_len, struct mp_buf *out);

bool mp_gss_established(const struct mp_gss_ctx *c);
const char *mp_gss_error(const struct mp_gss_ctx *c);
/* The client's principal name ("alice@LAB.EXAMPLE") once an acceptor is
 * established; NULL before.  For an initiator: the target. */
const char *mp_gss_peer_name(const struct mp_gss_ctx *c);
/* The GSS flags granted (GSS_C_*) once established. */
uint32_t mp_gss_flags(const struct mp_gss_ctx *c);
/* Whether the client forwarded a TGT (acceptor, established). */
bool mp_gss_has_delegated(const struct mp_gss_ctx *c);

/* The auth_len a PDU protected at level (5 or 6) needs for a body (stub +
 * auth pad) of body_len bytes: the MIC length or the wrap token length.
 * 0 on error. */
size_t mp_gss_sig_len(struct mp_gss_ctx *c, uint8_t level, size_t body_len);

/* Appends auth pad (to 16 from the stub start), a sec_trailer and a zeroed
 * auth_value of mp_gss_sig_len bytes to the request/response/fault
 * fragment that ends buf (from pdu_off, without auth), fixing frag_len and
 * auth_len.  0 or -1. */
int mp_gss_add_verifier(struct mp_gss_ctx *c, struct mp_buf *buf, size_t pdu_off, uint8_t auth_type,
                        uint8_t auth_level, uint32_t context_id);

/* Sending: signs (level 5) or seals (level 6) the PDU in place, as its
 * sec_trailer says; the auth_value must already have the right size.
 * header_sign: PFC_SUPPORT_HEADER_SIGN was negotiated (the header and
 * sec_trailer are signed too).  0 or -1. */
int mp_gss_protect(struct mp_gss_ctx *c, uint8_t *pdu, size_t len, bool header_sign);

/* Receiving: verifies (and at level 6 decrypts in place).  0 with the
 * plaintext stub (without auth pad) at *stub_off / *stub_len; -1 when
 * malformed, the token does not verify, or it is a replay / out of order
 * (then drop the association: the body may be half-decrypted). */
int mp_gss_unprotect(struct mp_gss_ctx *c, uint8_t *pdu, size_t len, bool header_sign,
                     size_t *stub_off, size_t *stub_len);

/* Where the auth parts of a request/response/fault with any auth_len are:
 * like mp_dcerpc_auth_locate, with the auth_value length free.  Fills the
 * same fields (verifier_off = auth_value, its length = len - verifier_off).
 * 0 or -1. */
struct mp_dcerpc_auth_region;
int mp_gss_auth_locate(const uint8_t *pdu, size_t len, struct mp_dcerpc_auth_region *r);

#endif
