/* libFuzzer target: DCE/RPC PDU parsing (header, bind/alter, bind_ack,
 * auth verifier), endpoint-mapper towers and calls.  Each input is a
 * stream of PDUs as a client or a server would send them. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"
#include "epm/epm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mp_bind b;
static struct mp_bind_ack a;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mp_epm_registry reg = {.n = 1};
    reg.e[0].iface = mp_epm_syntax;
    reg.e[0].port = 135;
    strcpy(reg.e[0].annotation, "fuzz");
    size_t off = 0;
    while (size - off >= MP_HDR_LEN) {
        const uint8_t *p = data + off;
        struct mp_pdu_hdr h;
        if (mp_pdu_hdr_check(p, size - off, &h) || h.frag_len > size - off)
            break;
        struct mp_auth au;
        (void)mp_pdu_auth(p, &h, &au);
        struct mp_buf out = {0};
        switch (h.ptype) {
        case MP_PT_BIND:
        case MP_PT_ALTER:
            if (mp_bind_parse(p, &h, &b) == 0)
                (void)mp_build_bind(&out, h.ptype, h.flags, h.call_id, &b,
                                    h.auth_len && mp_pdu_auth(p, &h, &au) == 0 ? &au : NULL);
            break;
        case MP_PT_BIND_ACK:
        case MP_PT_ALTER_RESP:
            if (mp_bind_ack_parse(p, &h, &a) == 0)
                (void)mp_build_bind_ack(&out, h.ptype, h.flags, h.call_id, &a, NULL);
            break;
        case MP_PT_REQUEST:
            if (h.frag_len >= MP_REQ_HDR_LEN)
                (void)mp_epm_serve(&reg, 0x0100007f, mp_get16(p + 22), p + MP_REQ_HDR_LEN,
                                   h.frag_len - MP_REQ_HDR_LEN, &out);
            break;
        case MP_PT_RESPONSE:
            if (h.frag_len >= MP_RESP_HDR_LEN) {
                uint16_t port;
                uint32_t status;
                (void)mp_epm_map_response(p + MP_RESP_HDR_LEN, h.frag_len - MP_RESP_HDR_LEN, &port,
                                          &status);
                struct mp_tower t;
                (void)mp_tower_parse(p + MP_RESP_HDR_LEN, h.frag_len - MP_RESP_HDR_LEN, &t);
            }
            break;
        default:
            break;
        }
        mp_buf_free(&out);
        off += h.frag_len;
    }
    return 0;
}
