/* DCE/RPC connection-oriented PDUs (C706 chapter 12, MS-RPCE 2.2.2).
 * Only the NDR little-endian data representation is produced; received
 * PDUs with another integer representation are refused. */
#ifndef MP_PDU_H
#define MP_PDU_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum mp_ptype {
    MP_PT_REQUEST = 0,
    MP_PT_PING = 1,
    MP_PT_RESPONSE = 2,
    MP_PT_FAULT = 3,
    MP_PT_WORKING = 4,
    MP_PT_NOCALL = 5,
    MP_PT_REJECT = 6,
    MP_PT_ACK = 7,
    MP_PT_CL_CANCEL = 8,
    MP_PT_FACK = 9,
    MP_PT_CANCEL_ACK = 10,
    MP_PT_BIND = 11,
    MP_PT_BIND_ACK = 12,
    MP_PT_BIND_NAK = 13,
    MP_PT_ALTER = 14,
    MP_PT_ALTER_RESP = 15,
    MP_PT_AUTH3 = 16,
    MP_PT_SHUTDOWN = 17,
    MP_PT_CO_CANCEL = 18,
    MP_PT_ORPHANED = 19,
    MP_PT_RTS = 20,
};

#define MP_PFC_FIRST 0x01
#define MP_PFC_LAST 0x02
#define MP_PFC_PENDING_CANCEL 0x04 /* also SUPPORT_HEADER_SIGN on bind */
#define MP_PFC_CONC_MPX 0x10
#define MP_PFC_DID_NOT_EXECUTE 0x20
#define MP_PFC_MAYBE 0x40
#define MP_PFC_OBJECT_UUID 0x80

#define MP_HDR_LEN 16
#define MP_REQ_HDR_LEN 24
#define MP_RESP_HDR_LEN 24
#define MP_FAULT_LEN 32
#define MP_SEC_TRAILER_LEN 8
#define MP_MAX_FRAG 5840 /* largest fragment the proxy negotiates on either leg */

/* Fault and reject codes (C706 appendix E, MS-RPCE 2.2.2.11). */
#define MP_NCA_OP_RNG_ERROR 0x1c010002u
#define MP_NCA_UNK_IF 0x1c010003u
#define MP_NCA_PROTO_ERROR 0x1c01000bu
#define MP_NCA_S_FAULT_NDR 0x000006f7u
#define MP_NCA_S_FAULT_REMOTE_NO_MEMORY 0x1c000016u
#define MP_NCA_S_FAULT_CONTEXT_MISMATCH 0x1c00001au
#define MP_RPC_S_CALL_FAILED 0x000006beu
#define MP_RPC_S_SERVER_UNAVAILABLE 0x000006bau
#define MP_RPC_S_ACCESS_DENIED 0x00000005u

/* bind_nak reasons */
#define MP_BNAK_NOT_SPECIFIED 0
#define MP_BNAK_TEMPORARY_CONGESTION 1
#define MP_BNAK_LOCAL_LIMIT_EXCEEDED 2
#define MP_BNAK_PROTOCOL_VERSION_NOT_SUPPORTED 4

/* presentation context results */
#define MP_CTX_ACCEPT 0
#define MP_CTX_USER_REJECTION 1
#define MP_CTX_PROVIDER_REJECTION 2
#define MP_CTX_NEGOTIATE_ACK 3
/* provider reasons */
#define MP_CTX_REASON_NONE 0
#define MP_CTX_REASON_ABSTRACT_NOT_SUPPORTED 1
#define MP_CTX_REASON_TRANSFER_NOT_SUPPORTED 2
#define MP_CTX_REASON_LOCAL_LIMIT_EXCEEDED 3

struct mp_pdu_hdr {
    uint8_t vers, vers_minor, ptype, flags;
    uint8_t drep[4];
    uint16_t frag_len, auth_len;
    uint32_t call_id;
};

/* A syntax identifier: 16-byte UUID (wire form) and u16 major, u16 minor. */
struct mp_syntax {
    uint8_t uuid[16];
    uint16_t major, minor;
};

extern const struct mp_syntax mp_ndr20_syntax;
extern const struct mp_syntax mp_ndr64_syntax;
bool mp_syntax_is_btfn(const struct mp_syntax *s); /* bind-time feature negotiation */
bool mp_syntax_eq(const struct mp_syntax *a, const struct mp_syntax *b);

#define MP_MAX_TS 8 /* transfer syntaxes per context we keep */
struct mp_pctx {
    uint16_t ctx_id;
    uint8_t n_ts; /* as sent */
    struct mp_syntax abstract;
    struct mp_syntax ts[MP_MAX_TS];
};

struct mp_bind {
    uint16_t max_xmit, max_recv;
    uint32_t assoc_group;
    uint8_t n_ctx;
    struct mp_pctx ctx[256];
};

struct mp_ctx_result {
    uint16_t result, reason;
    struct mp_syntax ts;
};

struct mp_bind_ack {
    uint16_t max_xmit, max_recv;
    uint32_t assoc_group;
    char sec_addr[64];
    uint8_t n_results;
    struct mp_ctx_result res[256];
};

/* The auth verifier found at the end of a PDU (auth_len > 0). */
struct mp_auth {
    uint8_t type, level, pad_len, reserved;
    uint32_t context_id;
    const uint8_t *value; /* points into the PDU */
    uint16_t value_len;
};

static inline uint16_t mp_get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t mp_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void mp_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void mp_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

const char *mp_ptype_name(unsigned ptype);

/* Checks a header: version 5.0/5.1, little-endian NDR, frag_len >= 16 and
 * room for the auth verifier.  Needs len >= 16.  Returns NULL when valid,
 * or a short description of what is wrong. */
const char *mp_pdu_hdr_check(const uint8_t *p, size_t len, struct mp_pdu_hdr *h);

/* Where the stub of a request (after its object UUID, if any), response or
 * fault starts; 0 for other PDU types. */
size_t mp_pdu_body_off(const struct mp_pdu_hdr *h);

/* Parses the auth verifier of a whole PDU; 0 or -1. */
int mp_pdu_auth(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_auth *a);

/* A bind's or alter_context's assoc_group_id (after max_xmit, max_recv);
 * the PDU has at least MP_BIND_ASSOC_GROUP_OFF + 4 bytes.  Little-endian
 * only: mp_pdu_hdr_check refuses the other data representations. */
#define MP_BIND_ASSOC_GROUP_OFF (MP_HDR_LEN + 4)
static inline uint32_t mp_bind_assoc_group(const uint8_t *pdu)
{
    return mp_get32(pdu + MP_BIND_ASSOC_GROUP_OFF);
}

/* Parses a bind or alter_context PDU (whole fragment).  0 or -1. */
int mp_bind_parse(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_bind *b);
/* Parses a bind_ack or alter_context_resp.  0 or -1. */
int mp_bind_ack_parse(const uint8_t *pdu, const struct mp_pdu_hdr *h, struct mp_bind_ack *a);

/* Builders: append a whole PDU to out.  `auth` (may be NULL) is appended
 * as the verifier, 4-byte aligned, with its pad length recorded. */
int mp_build_bind(struct mp_buf *out, uint8_t ptype, uint8_t flags, uint32_t call_id,
                  const struct mp_bind *b, const struct mp_auth *auth);
int mp_build_bind_ack(struct mp_buf *out, uint8_t ptype, uint8_t flags, uint32_t call_id,
                      const struct mp_bind_ack *a, const struct mp_auth *auth);
int mp_build_bind_nak(struct mp_buf *out, uint32_t call_id, uint16_t reason);
int mp_build_fault(struct mp_buf *out, uint32_t call_id, uint16_t ctx_id, uint32_t status,
                   bool did_not_execute);
/* A request or response fragment with the given stub. */
int mp_build_request(struct mp_buf *out, uint8_t flags, uint32_t call_id, uint16_t ctx_id,
                     uint16_t opnum, const uint8_t *object, const uint8_t *stub, size_t stub_len,
                     uint32_t alloc_hint);
int mp_build_response(struct mp_buf *out, uint8_t flags, uint32_t call_id, uint16_t ctx_id,
                      const uint8_t *stub, size_t stub_len, uint32_t alloc_hint);
/* An AUTH3 (the third leg of a bind's authentication): header, 4 bytes of
 * padding, sec_trailer, token.  0 or -1 (token too large). */
int mp_build_auth3(struct mp_buf *out, uint32_t call_id, uint8_t auth_type, uint8_t auth_level,
                   uint32_t context_id, const uint8_t *token, size_t len);

#endif
