/* RPC over HTTP v2 virtual connection, proxy side (src/transport/rpch/vconn.c),
 * driven with the CONN/A1 and CONN/B1 bytes Impacket's rpch client sends
 * (cookies 00..0f virtual connection, 10..1f channel, 20..2f group). */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dcerpc/pdu.h"
#include "rts_vectors.h"
#include "testlib.h"
#include "transport/rpch/vconn.h"

/* a request PDU of n bytes (n >= 24) */
static size_t request(uint8_t *b, size_t n, uint32_t call_id)
{
    memset(b, 0x5a, n);
    b[0] = 5, b[1] = 0, b[2] = MP_PT_REQUEST, b[3] = 3;
    b[4] = 0x10, b[5] = b[6] = b[7] = 0;
    mp_put16(b + 8, (uint16_t)n);
    mp_put16(b + 10, 0);
    mp_put32(b + 12, call_id);
    return n;
}

static struct mp_rpch_vc vc;
static const struct mp_rpch_limits LIM = {
    .recv_window = 0x2000, .conn_timeout = 120000, .max_pending = 1 << 20};

static void open_vc(void)
{
    uint8_t a1[128], b1[128];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    mp_rpch_vc_init(&vc, &LIM);
    struct mp_rts_cookie c;
    bool rec;
    CHECK(mp_rpch_first_cookie(a1, na, true, &c, &rec) == NULL && c.b[0] == 0 && c.b[15] == 15);
    CHECK(mp_rpch_first_cookie(b1, nb, true, &c, &rec) != NULL); /* B1 is not an OUT start */
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 28u); /* CONN/A3 */
    CHECK(vc.state == MP_RPCH_WAIT_CHANNELS);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, 1u << 30) == NULL);
    CHECK(vc.state == MP_RPCH_OPEN);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 28u + 44u); /* + CONN/C2 */
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q) + 28, 44, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_CONN_C1);
    CHECK_EQ(p.cmd[1].v.u32, 0x2000u);
    CHECK_EQ(vc.out_window, 65536u);
    CHECK_EQ(vc.keepalive, 300000u);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
}

static void test_establish_and_relay(void)
{
    open_vc();
    uint8_t b[0x3000];
    size_t n = request(b, 1000, 1);
    /* split in two reads: whole PDUs only reach up_q */
    CHECK(mp_rpch_vc_in_data(&vc, b, 10) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.up_q), 0u);
    CHECK(mp_rpch_vc_in_data(&vc, b + 10, n - 10) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.up_q), 1000u);
    /* 5000 bytes in: no ack while the association has not taken them */
    for (int i = 0; i < 4; i++)
        CHECK(mp_rpch_vc_in_data(&vc, b, n) == NULL);
    CHECK_EQ(vc.acks_sent, 0u);
    /* a 4 KiB request more would pass the 8 KiB window: refused later */
    CHECK(mp_rpch_vc_consumed(&vc, 3000) == NULL);
    CHECK_EQ(vc.acks_sent, 0u);
    /* half the window taken by the association: a FlowControlAck goes out */
    CHECK(mp_rpch_vc_consumed(&vc, 2000) == NULL);
    CHECK_EQ(vc.acks_sent, 1u);
    CHECK_EQ(vc.in_limit, 5000u + 0x2000);
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q), mp_buf_avail(&vc.out_q), &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_FLOW_CONTROL_ACK_PDU);
    CHECK_EQ(p.cmd[0].v.ack.bytes_received, 5000u);
    CHECK_EQ(p.cmd[0].v.ack.available_window, 0x2000u);
    CHECK(p.cmd[0].v.ack.channel.b[0] == 0x10);
    /* Ping and Keep-Alive are taken */
    mp_rts_ping(&p);
    uint8_t r[64];
    size_t m = mp_rts_encode(&p, r, sizeof(r));
    CHECK(mp_rpch_vc_in_data(&vc, r, m) == NULL);
    CHECK_EQ(vc.pings, 1u);
    mp_rpch_vc_free(&vc);
}

static void test_out_window(void)
{
    open_vc();
    uint8_t b[0x4000];
    size_t n = request(b, 0x4000, 7);
    b[2] = MP_PT_RESPONSE;
    /* the client's window is 64 KiB: four 16 KiB PDUs go, the fifth waits */
    for (int i = 0; i < 5; i++)
        CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 4u * 0x4000);
    CHECK_EQ(mp_buf_avail(&vc.held), 0x4000u);
    /* the client acknowledges (FlowControlAckWithDestination, FDOutProxy) */
    struct mp_rts_pdu ack;
    struct mp_rts_cookie oc;
    for (int i = 0; i < 16; i++)
        oc.b[i] = (uint8_t)(0x10 + i);
    mp_rts_flow_ack(&ack, 1, MP_RTS_FD_OUT_PROXY, 0x8000, 65536, &oc);
    uint8_t r[64];
    size_t m = mp_rts_encode(&ack, r, sizeof(r));
    CHECK(mp_rpch_vc_in_data(&vc, r, m) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.held), 0u);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 5u * 0x4000);
    /* an ack for more than was sent is refused */
    mp_rts_flow_ack(&ack, 1, MP_RTS_FD_OUT_PROXY, 0x100000, 65536, &oc);
    m = mp_rts_encode(&ack, r, sizeof(r));
    CHECK(mp_rpch_vc_in_data(&vc, r, m) != NULL);
    mp_rpch_vc_free(&vc);
}

static void test_bad_input(void)
{
    uint8_t a1[128], b1[128], b[0x3000];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    /* window overrun: a client that ignores our 8 KiB window */
    open_vc();
    size_t n = request(b, 0x2001, 1);
    CHECK(mp_rpch_vc_in_data(&vc, b, n) != NULL);
    mp_rpch_vc_free(&vc);
    /* data before the connection is open; B1 on the OUT channel; a second A1 */
    mp_rpch_vc_init(&vc, &LIM);
    CHECK(mp_rpch_vc_in_data(&vc, b, 100) != NULL);
    CHECK(mp_rpch_vc_conn_a1(&vc, b1, nb) != NULL);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) != NULL);
    /* B1 with another virtual connection cookie */
    uint8_t other[128];
    memcpy(other, b1, nb);
    other[32] ^= 1;
    CHECK(mp_rpch_vc_conn_b1(&vc, other, nb, 1u << 30) != NULL);
    /* truncated / padded */
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb - 1, 1u << 30) != NULL);
    mp_rpch_vc_free(&vc);
    /* beyond the IN channel's Content-Length */
    mp_rpch_vc_init(&vc, &LIM);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, nb + 50) == NULL);
    n = request(b, 100, 1);
    CHECK(mp_rpch_vc_in_data(&vc, b, n) != NULL);
    mp_rpch_vc_free(&vc);
    /* a recycling request: refused with a reason */
    open_vc();
    struct mp_rts_pdu p = {.flags = MP_RTS_FLAG_RECYCLE_CHANNEL, .ncmds = 4};
    p.cmd[0].type = MP_RTS_VERSION;
    p.cmd[1].type = p.cmd[2].type = p.cmd[3].type = MP_RTS_COOKIE;
    uint8_t r[128];
    size_t m = mp_rts_encode(&p, r, sizeof(r));
    const char *err = mp_rpch_vc_in_data(&vc, r, m);
    CHECK(err && strstr(err, "recycling"));
    mp_rpch_vc_free(&vc);
}

/* IN channel recycling (IN_R1): the successor's IN_R1/A1 gets IN_R1/A4 on
 * the OUT channel; its bytes wait until IN_R1/A5 on the predecessor; then
 * they flow, acks name the successor and count its bytes from 0. */
static void test_in_recycling(void)
{
    open_vc();
    uint8_t a1[128], a5[64], b[4096];
    size_t n1 = t_unhex(IMPACKET_IN_R1_A1, a1, sizeof a1);
    size_t n5 = t_unhex(IMPACKET_IN_R1_A5, a5, sizeof a5);
    struct mp_rts_cookie c;
    bool rec;
    CHECK(mp_rpch_first_cookie(a1, n1, false, &c, &rec) == NULL && rec && c.b[0] == 0);
    CHECK(mp_rpch_first_cookie(a1, n1, true, &c, &rec) != NULL); /* not an OUT start */
    size_t n = request(b, 1000, 1);
    CHECK(mp_rpch_vc_in_data(&vc, b, n) == NULL); /* 1000 bytes on the predecessor */
    /* cut short, or a Content-Length shorter than itself: refused */
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1 - 1, 4096) != NULL);
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1, n1 - 1) != NULL);
    CHECK(!vc.in_recycling);
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1, n1 + 6000) == NULL);
    CHECK(vc.in_recycling);
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1, n1 + 6000) != NULL); /* a second one */
    struct mp_rts_pdu p;
    CHECK_EQ(mp_buf_avail(&vc.out_q), 52u);
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q), 52, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_IN_R1_A3); /* IN_R1/A4: A3's layout */
    CHECK_EQ(p.cmd[0].v.u32, (uint32_t)MP_RTS_FD_CLIENT);
    CHECK_EQ(p.cmd[2].v.u32, 0x2000u);
    mp_buf_consume(&vc.out_q, 52);
    /* successor bytes before A5: held */
    n = request(b, 500, 2);
    CHECK(mp_rpch_vc_in_next_data(&vc, b, n) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.up_q), 1000u);
    /* A5 naming another successor: refused */
    uint8_t bad[256];
    memcpy(bad, a5, n5);
    bad[39] ^= 1;
    /* A5 on the predecessor: the switch, the held request flows */
    CHECK(mp_rpch_vc_in_data(&vc, a5, n5) == NULL);
    CHECK(vc.in_switched && !vc.in_recycling);
    CHECK_EQ(vc.in_recycles, 1u);
    CHECK_EQ(mp_buf_avail(&vc.up_q), 1500u);
    CHECK(vc.in_cookie.b[0] == 0x30);
    CHECK_EQ(vc.in_left, 6000u - 500u);
    /* the association takes it all: the ack names the successor, counts 500 */
    CHECK(mp_rpch_vc_consumed(&vc, 1500) == NULL);
    CHECK(mp_rpch_vc_consumed(&vc, 0) == NULL);
    n = request(b, 2600, 3); /* 4100 taken in all: past half the window */
    CHECK(mp_rpch_vc_in_data(&vc, b, n) == NULL);
    CHECK(mp_rpch_vc_consumed(&vc, 2600) == NULL);
    CHECK_EQ(vc.acks_sent, 1u);
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q), mp_buf_avail(&vc.out_q), &p) == NULL);
    CHECK_EQ(p.cmd[0].v.ack.bytes_received, 3100u); /* 500 + 2600 on the successor */
    CHECK(p.cmd[0].v.ack.channel.b[0] == 0x30);
    /* data after the switch for the successor's handle: refused */
    CHECK(mp_rpch_vc_in_next_data(&vc, b, 10) != NULL);
    /* A5 with no recycling under way, and a wrong successor cookie */
    CHECK(mp_rpch_vc_in_data(&vc, a5, n5) != NULL);
    mp_rpch_vc_free(&vc);
    open_vc();
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1, 1u << 20) == NULL);
    CHECK(mp_rpch_vc_in_data(&vc, bad, n5) != NULL);
    mp_rpch_vc_free(&vc);
    /* A1 naming another predecessor; A5 followed by more predecessor bytes */
    open_vc();
    memcpy(bad, a1, n1);
    bad[48] ^= 1; /* the predecessor cookie */
    CHECK(mp_rpch_vc_in_r1_a1(&vc, bad, n1, 1u << 20) != NULL);
    CHECK(mp_rpch_vc_in_r1_a1(&vc, a1, n1, 1u << 20) == NULL);
    memcpy(bad, a5, n5);
    n = request(bad + n5, 100, 4);
    CHECK(mp_rpch_vc_in_data(&vc, bad, n5 + n) != NULL);
    mp_rpch_vc_free(&vc);
}

/* OUT channel recycling (OUT_R2: we are the outbound proxy that finds the
 * virtual connection, MS-RPCH 3.2.4.5.6.1) with an 8 KiB OUT channel: A2
 * before a PDU would leave less than the reserve, PDUs held, A3 -> A6
 * (Impacket's OUT_R2/A6 bytes), A7 -> B3 (Impacket's), then the switch
 * releases them under the successor's window. */
static void test_out_recycling(void)
{
    struct mp_rpch_limits lim = LIM;
    lim.out_length = 8192;
    uint8_t a1[128], b1[128], a3[128], a7[128], b[4096];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    size_t n3 = t_unhex(IMPACKET_OUT_R1_A3, a3, sizeof a3);
    size_t n7 = t_unhex(IMPACKET_OUT_R1_A7, a7, sizeof a7);
    mp_rpch_vc_init(&vc, &lim);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, 1u << 30) == NULL);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    CHECK_EQ(vc.out_chan_sent, 72u); /* CONN/A3 + CONN/C2 */
    struct mp_rts_cookie c;
    bool rec;
    CHECK(mp_rpch_first_cookie(a3, n3, true, &c, &rec) == NULL && rec);
    CHECK(mp_rpch_vc_out_r1_a3(&vc, a3, n3) != NULL); /* before A2 */
    CHECK(mp_rpch_vc_in_data(&vc, a7, n7) != NULL);   /* A7 before A3 */
    mp_rpch_vc_free(&vc);
    mp_rpch_vc_init(&vc, &lim);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, 1u << 30) == NULL);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    size_t n = request(b, 3000, 1);
    CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL);
    CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 6000u);
    CHECK(!vc.out_recycling);
    CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL); /* 72 + 9000 + 1024 > 8192 */
    CHECK(vc.out_recycling);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 6028u); /* + OUT_R1/A2 */
    CHECK_EQ(mp_buf_avail(&vc.held), 3000u);
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q) + 6000, 28, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_OUT_R1_A1); /* A2's layout */
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL); /* still held */
    CHECK_EQ(mp_buf_avail(&vc.out_q), 0u);
    CHECK(mp_rpch_vc_out_r1_a3(&vc, a3, n3) == NULL);
    CHECK(mp_rpch_vc_out_r1_a3(&vc, a3, n3) != NULL); /* a second one */
    uint8_t want[64];
    size_t nw = t_unhex(IMPACKET_OUT_R2_A6, want, sizeof want);
    CHECK_EQ(mp_buf_avail(&vc.out_q), nw); /* OUT_R2/A6 */
    CHECK(memcmp(mp_buf_head(&vc.out_q), want, nw) == 0);
    mp_buf_consume(&vc.out_q, nw);
    CHECK(mp_rpch_vc_in_data(&vc, a7, n7) == NULL); /* OUT_R2/A7: OUT_R1/A7's layout */
    CHECK(vc.out_switch);
    nw = t_unhex(IMPACKET_OUT_R2_B3, want, sizeof want);
    CHECK_EQ(mp_buf_avail(&vc.out_q), nw); /* OUT_R2/B3 */
    CHECK(memcmp(mp_buf_head(&vc.out_q), want, nw) == 0);
    mp_buf_consume(&vc.out_q, nw);
    CHECK(mp_rpch_vc_out_switch(&vc) == NULL);
    CHECK(!vc.out_switch && !vc.out_recycling);
    CHECK(vc.out_cookie.b[0] == 0x40);
    CHECK_EQ(vc.out_recycles, 1u);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 6000u); /* both held PDUs on the successor */
    CHECK_EQ(vc.out_sent, 6000u);
    CHECK_EQ(vc.out_chan_sent, 6000u);
    mp_rpch_vc_free(&vc);
    /* a PDU larger than the channel minus the reserve: refused */
    lim.out_length = 4096;
    mp_rpch_vc_init(&vc, &lim);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, 1u << 30) == NULL);
    n = request(b, 3500, 1);
    CHECK(mp_rpch_vc_from_server(&vc, b, n) != NULL);
    mp_rpch_vc_free(&vc);
}

/* The upstream asked for OUT recycling (pass-through, mp_rpch_vc_out_recycle):
 * OUT_R1/A2 at once, long before the channel's length, then the usual
 * A3/A6, A7/A10; the server's PDUs wait meanwhile. */
static void test_out_recycling_asked(void)
{
    uint8_t a1[128], b1[128], a3[128], a7[128], b[512];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    size_t n3 = t_unhex(IMPACKET_OUT_R1_A3, a3, sizeof a3);
    size_t n7 = t_unhex(IMPACKET_OUT_R1_A7, a7, sizeof a7);
    mp_rpch_vc_init(&vc, &LIM);                 /* out_length 0: 1 GiB */
    CHECK(mp_rpch_vc_out_recycle(&vc) != NULL); /* not open yet */
    CHECK(!vc.out_recycling && mp_buf_avail(&vc.out_q) == 0);
    CHECK(mp_rpch_vc_conn_a1(&vc, a1, na) == NULL);
    CHECK(mp_rpch_vc_conn_b1(&vc, b1, nb, 1u << 30) == NULL);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    CHECK(mp_rpch_vc_out_recycle(&vc) == NULL);
    CHECK(vc.out_recycling);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 28u);
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(mp_buf_head(&vc.out_q), 28, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_OUT_R1_A1); /* A2's layout */
    CHECK(mp_rpch_vc_out_recycle(&vc) == NULL);      /* under way: nothing more */
    CHECK_EQ(mp_buf_avail(&vc.out_q), 28u);
    mp_buf_consume(&vc.out_q, 28);
    size_t n = request(b, 300, 1);
    CHECK(mp_rpch_vc_from_server(&vc, b, n) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 0u); /* held for the successor */
    CHECK(mp_rpch_vc_out_r1_a3(&vc, a3, n3) == NULL);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    CHECK(mp_rpch_vc_in_data(&vc, a7, n7) == NULL && vc.out_switch);
    mp_buf_consume(&vc.out_q, mp_buf_avail(&vc.out_q));
    CHECK(mp_rpch_vc_out_switch(&vc) == NULL);
    CHECK_EQ(mp_buf_avail(&vc.out_q), 300u);
    CHECK_EQ(vc.out_recycles, 1u);
    mp_rpch_vc_free(&vc);
}

int main(void)
{
    test_out_recycling();
    test_out_recycling_asked();
    test_in_recycling();
    test_establish_and_relay();
    test_out_window();
    test_bad_input();
    TEST_DONE();
}
