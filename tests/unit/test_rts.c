/* RTS PDU codec (src/transport/rpch/rts.c).  The reference bytes are what
 * Impacket's rpch module (code we did not write) sends for CONN/A1, CONN/B1,
 * FlowControlAckWithDestination and Ping, with the cookies 00..0f, 10..1f,
 * 20..2f. */
#include <stdint.h>
#include <string.h>

#include "rts_vectors.h"
#include "testlib.h"
#include "transport/rpch/rts.h"

static const char *IMPACKET_FA =
    "05001403100000003800000000000000020002000d000000030000000100000045"
    "23010000000100101112131415161718191a1b1c1d1e1f";
static const char *IMPACKET_PING = "0500140310000000140000000000000001000000";

static int roundtrip(const uint8_t *b, size_t n)
{
    struct mp_rts_pdu p;
    if (mp_rts_decode(b, n, &p))
        return 0;
    uint8_t out[512];
    size_t m = mp_rts_encode(&p, out, sizeof(out));
    return m == n && memcmp(out, b, n) == 0;
}

static void test_impacket_vectors(void)
{
    uint8_t b[256];
    struct mp_rts_pdu p;
    size_t n = t_unhex(IMPACKET_A1, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_CONN_A1);
    CHECK_EQ(p.cmd[0].v.u32, 1u); /* version */
    CHECK(p.cmd[1].v.cookie.b[0] == 0 && p.cmd[1].v.cookie.b[15] == 15);
    CHECK(p.cmd[2].v.cookie.b[0] == 16);
    CHECK_EQ(p.cmd[3].v.u32, 65536u);
    CHECK(roundtrip(b, n));

    n = t_unhex(IMPACKET_B1, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_CONN_B1);
    CHECK_EQ(p.cmd[3].v.u32, 0x40000000u); /* channel lifetime */
    CHECK_EQ(p.cmd[4].v.u32, 300000u);     /* keep-alive */
    CHECK(p.cmd[5].type == MP_RTS_ASSOCIATION_GROUP_ID && p.cmd[5].v.cookie.b[0] == 32);
    CHECK(roundtrip(b, n));

    n = t_unhex(IMPACKET_FA, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_FLOW_CONTROL_ACK_DEST);
    CHECK_EQ(p.cmd[0].v.u32, (uint32_t)MP_RTS_FD_OUT_PROXY);
    CHECK_EQ(p.cmd[1].v.ack.bytes_received, 0x12345u);
    CHECK_EQ(p.cmd[1].v.ack.available_window, 65536u);
    CHECK(roundtrip(b, n));
    /* our builder gives the same bytes */
    struct mp_rts_cookie oc;
    for (int i = 0; i < 16; i++)
        oc.b[i] = (uint8_t)(16 + i);
    mp_rts_flow_ack(&p, 1, MP_RTS_FD_OUT_PROXY, 0x12345, 65536, &oc);
    uint8_t out[128];
    CHECK(mp_rts_encode(&p, out, sizeof(out)) == n && memcmp(out, b, n) == 0);

    n = t_unhex(IMPACKET_PING, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_PING);
    mp_rts_ping(&p);
    CHECK(mp_rts_encode(&p, out, sizeof(out)) == n && memcmp(out, b, n) == 0);
}

static void test_builders(void)
{
    struct mp_rts_pdu p, q;
    uint8_t out[128];
    mp_rts_conn_a3(&p, 120000);
    size_t n = mp_rts_encode(&p, out, sizeof(out));
    CHECK_EQ(n, 28u);
    CHECK(mp_rts_decode(out, n, &q) == NULL);
    CHECK_EQ(mp_rts_identify(&q), MP_RTS_CONN_A3);
    mp_rts_conn_c2(&p, 1, 65536, 120000);
    n = mp_rts_encode(&p, out, sizeof(out));
    CHECK_EQ(n, 44u);
    CHECK(mp_rts_decode(out, n, &q) == NULL);
    CHECK_EQ(mp_rts_identify(&q), MP_RTS_CONN_C1);
    CHECK(mp_rts_find(&q, MP_RTS_CONNECTION_TIMEOUT)->v.u32 == 120000);
    CHECK(mp_rts_find(&q, MP_RTS_COOKIE) == NULL);
    CHECK_EQ(mp_rts_encode(&p, out, 43), 0u); /* does not fit */
    CHECK(strcmp(mp_rts_kind_name(MP_RTS_CONN_B1), "CONN/B1") == 0);
    CHECK(strcmp(mp_rts_cmd_name(MP_RTS_PADDING), "Padding") == 0);
}

static void test_variable_commands(void)
{
    /* CONN/B2 with an IPv4 and one with an IPv6 ClientAddress, and a
     * Padding command: encode, decode, same again. */
    struct mp_rts_pdu p = {.flags = MP_RTS_FLAG_IN_CHANNEL, .ncmds = 7};
    uint32_t types[7] = {MP_RTS_VERSION,
                         MP_RTS_COOKIE,
                         MP_RTS_COOKIE,
                         MP_RTS_RECEIVE_WINDOW_SIZE,
                         MP_RTS_CONNECTION_TIMEOUT,
                         MP_RTS_ASSOCIATION_GROUP_ID,
                         MP_RTS_CLIENT_ADDRESS};
    for (int i = 0; i < 7; i++)
        p.cmd[i].type = types[i];
    p.cmd[6].v.client_address.type = 0;
    memcpy(p.cmd[6].v.client_address.addr, "\x7f\0\0\1", 4);
    uint8_t out[256];
    size_t n = mp_rts_encode(&p, out, sizeof(out));
    CHECK_EQ(n, 20u + 8 + 20 + 20 + 8 + 8 + 20 + 24);
    struct mp_rts_pdu q;
    CHECK(mp_rts_decode(out, n, &q) == NULL);
    CHECK_EQ(mp_rts_identify(&q), MP_RTS_CONN_B2);
    CHECK(memcmp(q.cmd[6].v.client_address.addr, "\x7f\0\0\1", 4) == 0);
    p.cmd[6].v.client_address.type = 1;
    n = mp_rts_encode(&p, out, sizeof(out));
    CHECK_EQ(n, 20u + 8 + 20 + 20 + 8 + 8 + 20 + 36);
    CHECK(roundtrip(out, n));
    p.cmd[6].v.client_address.type = 2;
    CHECK_EQ(mp_rts_encode(&p, out, sizeof(out)), 0u);

    struct mp_rts_pdu pad = {.flags = MP_RTS_FLAG_OTHER_CMD, .ncmds = 2};
    pad.cmd[0].type = MP_RTS_PADDING;
    pad.cmd[0].v.padding.count = 5;
    pad.cmd[1].type = MP_RTS_EMPTY;
    n = mp_rts_encode(&pad, out, sizeof(out));
    CHECK_EQ(n, 20u + 8 + 5 + 4);
    CHECK(mp_rts_decode(out, n, &q) == NULL);
    CHECK_EQ(q.cmd[0].v.padding.count, 5u);
    CHECK(q.cmd[1].type == MP_RTS_EMPTY);
}

static void test_malformed(void)
{
    uint8_t b[256], c[256];
    struct mp_rts_pdu p;
    size_t n = t_unhex(IMPACKET_B1, b, sizeof b);
    /* every truncation is refused */
    for (size_t k = 0; k < n; k++) {
        memcpy(c, b, n);
        c[8] = (uint8_t)k; /* frag_length follows the cut */
        CHECK(mp_rts_decode(c, k, &p) != NULL);
    }
    /* one byte more than the commands */
    memcpy(c, b, n);
    c[n] = 0;
    c[8] = (uint8_t)(n + 1);
    CHECK(mp_rts_decode(c, n + 1, &p) != NULL);
    /* frag_length disagreeing with the buffer */
    memcpy(c, b, n);
    c[8] = (uint8_t)(n - 4);
    CHECK(mp_rts_decode(c, n, &p) != NULL);
    /* wrong ptype, PFC flags, call_id, auth_length, command count, command type */
    const struct {
        size_t off;
        uint8_t v;
    } bad[] = {{2, 0},  {3, 0x01}, {3, 0x13},  {12, 1}, {10, 4},
               {18, 7}, {18, 200}, {20, 0x0f}, {0, 4},  {4, 0x00}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(c, b, n);
        c[bad[i].off] = bad[i].v;
        CHECK(mp_rts_decode(c, n, &p) != NULL);
    }
    /* Padding whose count runs past the PDU */
    struct mp_rts_pdu pad = {.flags = 0, .ncmds = 1};
    pad.cmd[0].type = MP_RTS_PADDING;
    pad.cmd[0].v.padding.count = 4;
    size_t m = mp_rts_encode(&pad, c, sizeof(c));
    CHECK(m == 32);
    c[24] = 200;
    CHECK(mp_rts_decode(c, m, &p) != NULL);
    c[24] = 0xff, c[25] = 0xff, c[26] = 0xff, c[27] = 0xff;
    CHECK(mp_rts_decode(c, m, &p) != NULL);
    /* unknown shapes are decoded but not named */
    struct mp_rts_pdu u = {.flags = MP_RTS_FLAG_ECHO, .ncmds = 1};
    u.cmd[0].type = MP_RTS_ANCE;
    CHECK_EQ(mp_rts_identify(&u), MP_RTS_UNKNOWN);
}

/* IN channel recycling PDUs: decoded, named, and our IN_R1/A4 builder gives
 * the bytes Impacket's structures give. */
static void test_in_recycling_pdus(void)
{
    uint8_t b[256], out[128];
    struct mp_rts_pdu p;
    size_t n = t_unhex(IMPACKET_IN_R1_A1, b, sizeof b);
    CHECK_EQ(n, 88u);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_IN_R1_A1);
    CHECK(p.cmd[1].v.cookie.b[0] == 0 && p.cmd[2].v.cookie.b[0] == 16 &&
          p.cmd[3].v.cookie.b[15] == 0x3f);
    CHECK(roundtrip(b, n));
    n = t_unhex(IMPACKET_IN_R1_A5, b, sizeof b);
    CHECK_EQ(n, 40u);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_IN_R1_A5);
    CHECK(p.cmd[0].v.cookie.b[0] == 0x30);
    CHECK(roundtrip(b, n));
    n = t_unhex(IMPACKET_IN_R1_A4, b, sizeof b);
    CHECK_EQ(n, 52u);
    CHECK(mp_rts_decode(b, n, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_IN_R1_A3); /* A4 has A3's layout */
    mp_rts_in_r1_a4(&p, 1, 0x2000, 120000);
    CHECK_EQ(mp_rts_encode(&p, out, sizeof out), n);
    CHECK(memcmp(out, b, n) == 0);
    /* A1 cut short or with a command missing: refused or not A1 */
    n = t_unhex(IMPACKET_IN_R1_A1, b, sizeof b);
    CHECK(mp_rts_decode(b, n - 1, &p) != NULL);
    b[18] = 3; /* NumberOfCommands 3: the last cookie is trailing bytes */
    CHECK(mp_rts_decode(b, n, &p) != NULL || mp_rts_identify(&p) != MP_RTS_IN_R1_A1);
}

/* OUT channel recycling PDUs: our A2, A6, A10 builders give Impacket's
 * bytes; the client's A3 and A7 decode and are named. */
static void test_out_recycling_pdus(void)
{
    uint8_t b[256], out[128];
    struct mp_rts_pdu p;
    size_t n = t_unhex(IMPACKET_OUT_R1_A2, b, sizeof b);
    mp_rts_out_r1_a2(&p);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A1);
    n = t_unhex(IMPACKET_OUT_R1_A6, b, sizeof b);
    mp_rts_out_r1_a6(&p, 1, 120000);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A5);
    n = t_unhex(IMPACKET_OUT_R1_A10, b, sizeof b);
    mp_rts_out_r1_a10(&p);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A9);
    n = t_unhex(IMPACKET_OUT_R1_A3, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A3);
    CHECK_EQ(p.cmd[4].v.u32, 65536u);
    CHECK(roundtrip(b, n));
    n = t_unhex(IMPACKET_OUT_R1_A7, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A7);
    CHECK_EQ(p.cmd[0].v.u32, (uint32_t)MP_RTS_FD_SERVER);
    CHECK(roundtrip(b, n));
}

/* OUT_R2: A6 and B3 decode and are named (A6 has A5's layout), our A6, B3
 * and C1 builders give Impacket's bytes, C1 the size of
 * OUT_R1/A11; a B3 without its EOF flag is an ANCE (OUT_R1/A10), not B3. */
static void test_out_r2_pdus(void)
{
    uint8_t b[256], out[128];
    struct mp_rts_pdu p;
    size_t n = t_unhex(IMPACKET_OUT_R2_A6, b, sizeof b);
    CHECK_EQ(n, 32u);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R2_A5);
    CHECK_EQ(p.cmd[0].v.u32, (uint32_t)MP_RTS_FD_CLIENT);
    CHECK(roundtrip(b, n));
    mp_rts_out_r2_a6(&p);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    n = t_unhex(IMPACKET_OUT_R2_B3, b, sizeof b);
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R2_B3);
    CHECK(roundtrip(b, n));
    mp_rts_out_r2_b3(&p);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    b[16] = 0; /* Flags: EOF cleared */
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R1_A9);
    n = t_unhex(IMPACKET_OUT_R2_C1, b, sizeof b);
    mp_rts_out_r2_c1(&p);
    CHECK(mp_rts_encode(&p, out, sizeof out) == n && memcmp(out, b, n) == 0);
    mp_rts_out_r1_a10(&p);
    CHECK_EQ(mp_rts_encoded_len(&p), n); /* C1 is exactly OUT_R1/A11's size */
    CHECK(mp_rts_decode(b, n, &p) == NULL && mp_rts_identify(&p) == MP_RTS_OUT_R2_C1);
    /* A6 cut before its ANCE: refused or not A6 */
    n = t_unhex(IMPACKET_OUT_R2_A6, b, sizeof b);
    CHECK(mp_rts_decode(b, n - 4, &p) != NULL);
}

int main(void)
{
    test_out_r2_pdus();
    test_out_recycling_pdus();
    test_in_recycling_pdus();
    test_impacket_vectors();
    test_builders();
    test_variable_commands();
    test_malformed();
    TEST_DONE();
}
