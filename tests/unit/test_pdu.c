/* DCE/RPC PDU and endpoint-mapper tower codecs, against bytes made by
 * Impacket (vectors generated with Impacket 0.10's MSRPCBind and EPMTower). */
#include <arpa/inet.h>

#include "dcerpc/pdu.h"
#include "epm/epm.h"
#include "testlib.h"

/* Impacket: bind, call_id 7, assoc group 0x11223344, max frag 4280, NSPI
 * v56.0 proposed with NDR 2.0 (context 0) and NDR64 (context 1). */
static const uint8_t impacket_bind[] = {
    0x05, 0x00, 0x0b, 0x03, 0x10, 0x00, 0x00, 0x00, 0x74, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00,
    0x00, 0xb8, 0x10, 0xb8, 0x10, 0x44, 0x33, 0x22, 0x11, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10, 0x8c, 0x59, 0x08, 0x00, 0x2b,
    0x2f, 0x84, 0x26, 0x38, 0x00, 0x00, 0x00, 0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11,
    0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
    0x00, 0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10, 0x8c, 0x59, 0x08, 0x00, 0x2b, 0x2f,
    0x84, 0x26, 0x38, 0x00, 0x00, 0x00, 0x33, 0x05, 0x71, 0x71, 0xba, 0xbe, 0x37, 0x49, 0x83,
    0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc, 0x36, 0x01, 0x00, 0x00, 0x00};

/* Impacket: EPMTower for NSPI v56.0, NDR 2.0, ncacn_ip_tcp port 6001, 127.0.0.1. */
static const uint8_t impacket_tower[] = {
    0x05, 0x00, 0x13, 0x00, 0x0d, 0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10, 0x8c, 0x59,
    0x08, 0x00, 0x2b, 0x2f, 0x84, 0x26, 0x38, 0x00, 0x02, 0x00, 0x00, 0x00, 0x13, 0x00, 0x0d,
    0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48,
    0x60, 0x02, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x0b, 0x02, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x07, 0x02, 0x00, 0x17, 0x71, 0x01, 0x00, 0x09, 0x04, 0x00, 0x7f, 0x00, 0x00, 0x01};

static struct mp_bind b;
static struct mp_bind_ack ack, ack2;

static void test_bind(void)
{
    struct mp_pdu_hdr h;
    CHECK(mp_pdu_hdr_check(impacket_bind, sizeof(impacket_bind), &h) == NULL);
    CHECK_EQ(h.ptype, MP_PT_BIND);
    CHECK_EQ(h.frag_len, sizeof(impacket_bind));
    CHECK_EQ(h.call_id, 7u);
    CHECK_EQ(mp_bind_parse(impacket_bind, &h, &b), 0);
    CHECK_EQ(b.max_xmit, 4280);
    CHECK_EQ(b.assoc_group, 0x11223344u);
    CHECK_EQ(b.n_ctx, 2);
    CHECK_EQ(b.ctx[0].abstract.major, 56);
    CHECK(mp_syntax_eq(&b.ctx[0].ts[0], &mp_ndr20_syntax));
    CHECK(mp_syntax_eq(&b.ctx[1].ts[0], &mp_ndr64_syntax));
    /* re-encoding gives Impacket's bytes back */
    struct mp_buf out = {0};
    CHECK_EQ(mp_build_bind(&out, MP_PT_BIND, h.flags, 7, &b, NULL), 0);
    CHECK_EQ(out.len, sizeof(impacket_bind));
    CHECK(out.len == sizeof(impacket_bind) && !memcmp(out.data, impacket_bind, out.len));
    /* every truncation is refused, never read past the end */
    for (size_t n = 16; n < sizeof(impacket_bind); n++) {
        struct mp_pdu_hdr t = h;
        t.frag_len = (uint16_t)n;
        CHECK(mp_bind_parse(impacket_bind, &t, &b) != 0);
    }
    mp_buf_free(&out);
}

static void test_bind_ack_round_trip(void)
{
    memset(&ack, 0, sizeof(ack));
    ack.max_xmit = 4280;
    ack.max_recv = 5840;
    ack.assoc_group = 0xabcdef01;
    strcpy(ack.sec_addr, "6001");
    ack.n_results = 2;
    ack.res[0].ts = mp_ndr20_syntax;
    ack.res[1].result = MP_CTX_PROVIDER_REJECTION;
    ack.res[1].reason = MP_CTX_REASON_TRANSFER_NOT_SUPPORTED;
    uint8_t token[5] = {1, 2, 3, 4, 5};
    struct mp_auth auth = {
        .type = 10, .level = 6, .context_id = 79231, .value = token, .value_len = 5};
    struct mp_buf out = {0};
    CHECK_EQ(mp_build_bind_ack(&out, MP_PT_BIND_ACK, 3, 9, &ack, &auth), 0);
    struct mp_pdu_hdr h;
    CHECK(mp_pdu_hdr_check(out.data, out.len, &h) == NULL);
    CHECK_EQ(h.frag_len, out.len);
    CHECK_EQ(h.auth_len, 5);
    CHECK_EQ(mp_bind_ack_parse(out.data, &h, &ack2), 0);
    CHECK_EQ(ack2.max_recv, 5840);
    CHECK(!strcmp(ack2.sec_addr, "6001"));
    CHECK_EQ(ack2.n_results, 2);
    CHECK_EQ(ack2.res[1].reason, MP_CTX_REASON_TRANSFER_NOT_SUPPORTED);
    struct mp_auth got;
    CHECK_EQ(mp_pdu_auth(out.data, &h, &got), 0);
    CHECK_EQ(got.context_id, 79231u);
    CHECK(got.value_len == 5 && !memcmp(got.value, token, 5));
    CHECK_EQ((h.frag_len - h.auth_len - 8) % 4, 0); /* verifier 4-byte aligned */
    mp_buf_free(&out);
}

static void test_header_checks(void)
{
    struct mp_pdu_hdr h;
    uint8_t p[16];
    memcpy(p, impacket_bind, 16);
    CHECK(mp_pdu_hdr_check(p, 10, &h) != NULL);
    p[0] = 4;
    CHECK(mp_pdu_hdr_check(p, 16, &h) != NULL);
    memcpy(p, impacket_bind, 16);
    p[4] = 0x00; /* big-endian */
    CHECK(mp_pdu_hdr_check(p, 16, &h) != NULL);
    memcpy(p, impacket_bind, 16);
    mp_put16(p + 8, 12);
    CHECK(mp_pdu_hdr_check(p, 16, &h) != NULL);
    memcpy(p, impacket_bind, 16);
    mp_put16(p + 10, 200); /* auth_len larger than the fragment */
    CHECK(mp_pdu_hdr_check(p, 16, &h) != NULL);
}

static void test_fault_and_fragments(void)
{
    struct mp_buf out = {0};
    CHECK_EQ(mp_build_fault(&out, 5, 1, MP_NCA_OP_RNG_ERROR, true), 0);
    CHECK_EQ(out.len, MP_FAULT_LEN);
    CHECK_EQ(mp_get32(out.data + 24), MP_NCA_OP_RNG_ERROR);
    CHECK(out.data[3] & MP_PFC_DID_NOT_EXECUTE);
    mp_buf_free(&out);
    uint8_t stub[100];
    for (int i = 0; i < 100; i++)
        stub[i] = (uint8_t)i;
    CHECK_EQ(mp_build_request(&out, 3, 9, 2, 11, NULL, stub, sizeof(stub), 100), 0);
    CHECK_EQ(out.len, MP_REQ_HDR_LEN + 100);
    CHECK_EQ(mp_get16(out.data + 22), 11);
    mp_buf_free(&out);
}

static void test_tower(void)
{
    struct mp_tower t;
    CHECK_EQ(mp_tower_parse(impacket_tower, sizeof(impacket_tower), &t), 0);
    CHECK_EQ(t.port, 6001);
    CHECK_EQ(t.ipv4, htonl(0x7f000001));
    CHECK_EQ(t.iface.major, 56);
    CHECK(mp_syntax_eq(&t.transfer, &mp_ndr20_syntax));
    uint8_t built[128];
    size_t n = mp_tower_build(built, sizeof(built), &t.iface, 6001, htonl(0x7f000001));
    CHECK_EQ(n, sizeof(impacket_tower));
    CHECK(n == sizeof(impacket_tower) && !memcmp(built, impacket_tower, n));
    for (size_t k = 0; k < sizeof(impacket_tower); k++)
        (void)mp_tower_parse(impacket_tower, k, &t); /* must not read past k */
    CHECK_EQ(mp_tower_build(built, 10, &t.iface, 1, 0), 0u);
}

int main(void)
{
    test_bind();
    test_bind_ack_round_trip();
    test_header_checks();
    test_fault_and_fragments();
    test_tower();
    TEST_DONE();
}
