/* RPC over HTTP termination glue (src/transport/rpch/rpch.c) on the real
 * event loop: two channels paired by cookie, the inner association opened
 * through a stand-in for transport/dcerpc/carrier.h, PDUs both ways, the
 * client's OUT window holding the association back, pairing timeout.
 * CONN/A1 and CONN/B1 are the bytes Impacket's rpch client sends. */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"
#include "rts_vectors.h"
#include "testlib.h"
#include "transport/dcerpc/carrier.h"
#include "transport/rpch/rpch.h"
#include "transport/rpch/rts.h"

struct sess {
    struct mp_buf got;
    int closed;
    char why[128];
};
static struct sess s_in, s_out;
static void h_send(void *owner, const uint8_t *p, size_t n)
{
    mp_buf_append(&((struct sess *)owner)->got, p, n);
}
static void h_close(void *owner, const char *why)
{
    struct sess *s = owner;
    s->closed++;
    snprintf(s->why, sizeof(s->why), "%s", why);
}
static const struct mp_rpch_chan_host host = {h_send, h_close, h_close};

/* the stand-in association */
static struct {
    const struct mp_dce_carrier_ops *ops;
    void *carrier;
    char peer[96], host[64];
    struct mp_buf in;  /* what the carrier fed it */
    struct mp_buf out; /* what it offers the client */
    int opened, closed, writable;
} as;

static void *s_open(void *data, const struct mp_dce_carrier_ops *ops, void *carrier,
                    const char *peer, const char *h)
{
    as.ops = ops;
    as.carrier = carrier;
    snprintf(as.peer, sizeof as.peer, "%s", peer);
    snprintf(as.host, sizeof as.host, "%s", h);
    as.opened++;
    ops->want_input(carrier, true);
    return &as;
}
static int s_input(void *a, const void *p, size_t n)
{
    return mp_buf_append(&as.in, p, n) ? -1 : 0;
}
static void s_writable(void *a)
{
    as.writable++;
    as.ops->flush(as.carrier, &as.out);
}
static void s_close(void *a, const char *why)
{
    as.closed++;
}
static const struct mp_rpch_sink sink = {s_open, s_input, s_writable, s_close};

static struct mp_loop *loop;
static struct mp_timer stopper;
static void stop_cb(struct mp_timer *t)
{
    mp_loop_stop(loop);
}
static void run_for(uint64_t ms)
{
    stopper.cb = stop_cb;
    mp_timer_arm(loop, &stopper, ms);
    mp_loop_run(loop);
}

static void test_pair_and_relay(void)
{
    struct mp_rpch_opts o = {.recv_window = 65536,
                             .conn_timeout_ms = 120000,
                             .pair_timeout_ms = 1000,
                             .max_pending = 1 << 20};
    struct mp_rpch *r = mp_rpch_new(loop, &o, &sink, NULL);
    uint8_t a1[128], b1[128];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    /* IN first this time (the order on the wire is not guaranteed) */
    struct mp_rpch_chan *in = mp_rpch_chan_new(r, false, "192.0.2.7", 5555, 1u << 30, &host, &s_in);
    struct mp_rpch_chan *out = mp_rpch_chan_new(r, true, "192.0.2.7", 5556, 76, &host, &s_out);
    CHECK(mp_rpch_chan_data(in, b1, 7) == NULL); /* in pieces */
    CHECK(mp_rpch_chan_data(in, b1 + 7, nb - 7) == NULL);
    CHECK_EQ(mp_rpch_count(r), 1u);
    CHECK_EQ(as.opened, 0);
    CHECK(mp_rpch_chan_data(out, a1, na) == NULL);
    CHECK_EQ(as.opened, 1);
    CHECK(strcmp(as.peer, "192.0.2.7:5555 (rpch)") == 0);
    CHECK(strcmp(as.host, "192.0.2.7") == 0);
    /* OUT: 200 head, CONN/A3, CONN/C2 */
    const char *head = (const char *)s_out.got.data;
    CHECK(s_out.got.len > 20 && memcmp(head, "HTTP/1.1 200 Success\r\n", 22) == 0);
    const uint8_t *body = (const uint8_t *)strstr(head, "\r\n\r\n") + 4;
    size_t blen = s_out.got.len - (size_t)(body - s_out.got.data);
    CHECK_EQ(blen, 28u + 44u);
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(body, 28, &p) == NULL && mp_rts_identify(&p) == MP_RTS_CONN_A3);
    CHECK(mp_rts_decode(body + 28, 44, &p) == NULL && mp_rts_identify(&p) == MP_RTS_CONN_C1);
    s_out.got.len = s_out.got.off = 0;

    /* a request on IN reaches the association as it is */
    uint8_t req[64] = {5, 0, MP_PT_REQUEST, 3, 0x10};
    mp_put16(req + 8, sizeof(req));
    mp_put32(req + 12, 9);
    CHECK(mp_rpch_chan_data(in, req, sizeof(req)) == NULL);
    CHECK_EQ(as.in.len, sizeof(req));
    CHECK(memcmp(as.in.data, req, sizeof(req)) == 0);
    /* while the association does not want input, the calls wait */
    as.ops->want_input(as.carrier, false);
    CHECK(mp_rpch_chan_data(in, req, sizeof(req)) == NULL);
    CHECK_EQ(as.in.len, sizeof(req));
    as.ops->want_input(as.carrier, true);
    run_for(20);
    CHECK_EQ(as.in.len, 2 * sizeof(req));

    /* the association answers: whole PDUs come out on the OUT channel, a
     * partial one stays with it */
    static uint8_t resp[16384];
    memcpy(resp, req, 16);
    resp[2] = MP_PT_RESPONSE;
    mp_put16(resp + 8, sizeof(resp));
    mp_buf_append(&as.out, resp, sizeof(resp));
    mp_buf_append(&as.out, resp, 100);
    CHECK(as.ops->flush(as.carrier, &as.out) == 0);
    CHECK_EQ(s_out.got.len, sizeof(resp));
    CHECK_EQ(as.out.len - as.out.off, 100u);
    mp_buf_append(&as.out, resp + 100, sizeof(resp) - 100);
    /* Impacket's window is 64 KiB: with the first, four 16 KiB PDUs go, the
     * fifth is held, the sixth stays with the association until the client
     * acknowledges */
    for (int k = 0; k < 4; k++)
        mp_buf_append(&as.out, resp, sizeof(resp));
    CHECK(as.ops->flush(as.carrier, &as.out) == 0);
    CHECK_EQ(s_out.got.len, 4 * sizeof(resp));
    CHECK_EQ(as.out.len - as.out.off, sizeof(resp));
    struct mp_rts_pdu ack;
    struct mp_rts_cookie oc;
    memcpy(oc.b, a1 + 52, 16); /* CONN/A1's OUT channel cookie */
    mp_rts_flow_ack(&ack, 1, MP_RTS_FD_OUT_PROXY, 0x8000, 65536, &oc);
    uint8_t ab[128];
    size_t m = mp_rts_encode(&ack, ab, sizeof(ab));
    CHECK(mp_rpch_chan_data(in, ab, m) == NULL);
    CHECK_EQ(as.writable, 1);
    CHECK_EQ(s_out.got.len, 6 * sizeof(resp));
    CHECK_EQ(as.out.len - as.out.off, 0u);

    /* the association closes: both sessions are told, with its reason */
    as.ops->closed(as.carrier, "closed after final answer");
    CHECK(s_in.closed == 1 && s_out.closed == 1);
    CHECK(strstr(s_in.why, "association closed (closed after final answer)") != NULL);
    CHECK_EQ(as.closed, 0); /* it closed itself: not told again */
    CHECK_EQ(mp_rpch_count(r), 0u);
    mp_rpch_chan_free(in);
    mp_rpch_chan_free(out);
    run_for(10);

    /* a channel closing closes the association */
    mp_buf_free(&s_in.got);
    mp_buf_free(&s_out.got);
    memset(&s_in, 0, sizeof s_in);
    memset(&s_out, 0, sizeof s_out);
    in = mp_rpch_chan_new(r, false, "192.0.2.7", 5555, 1u << 30, &host, &s_in);
    out = mp_rpch_chan_new(r, true, "192.0.2.7", 5556, 76, &host, &s_out);
    CHECK(mp_rpch_chan_data(out, a1, na) == NULL);
    CHECK(mp_rpch_chan_data(in, b1, nb) == NULL);
    CHECK_EQ(as.opened, 2);
    mp_rpch_chan_free(in);
    CHECK_EQ(as.closed, 1);
    CHECK_EQ(s_out.closed, 1);
    mp_rpch_chan_free(out);
    mp_rpch_free(r);
    mp_buf_free(&as.in);
    mp_buf_free(&as.out);
}

static void test_partner_never_comes(void)
{
    struct mp_rpch_opts o = {.recv_window = 65536,
                             .conn_timeout_ms = 120000,
                             .pair_timeout_ms = 30,
                             .max_pending = 1 << 20};
    struct mp_rpch *r = mp_rpch_new(loop, &o, &sink, NULL);
    memset(&s_in, 0, sizeof(s_in));
    uint8_t b1[128];
    size_t nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    struct mp_rpch_chan *in = mp_rpch_chan_new(r, false, "::1", 1, 1u << 30, &host, &s_in);
    CHECK(mp_rpch_chan_data(in, b1, nb) == NULL);
    run_for(100);
    CHECK_EQ(s_in.closed, 1);
    CHECK(strstr(s_in.why, "no OUT channel") != NULL);
    CHECK(mp_rpch_chan_data(in, b1, 10) != NULL); /* closed: refused */
    mp_rpch_chan_free(in);
    /* garbage as a first PDU */
    struct mp_rpch_chan *out = mp_rpch_chan_new(r, true, "::1", 1, 76, &host, &s_out);
    uint8_t junk[76] = {5, 0, 20, 3, 0x10, 0, 0, 0, 76};
    CHECK(mp_rpch_chan_data(out, junk, sizeof(junk)) != NULL);
    mp_rpch_chan_free(out);
    CHECK_EQ(mp_rpch_count(r), 0u);
    mp_rpch_free(r);
}

/* OUT_R2 toward the client (8 KiB OUT channel): the successor's answer head
 * goes only at the switch, after OUT_R2/B3 on the predecessor (MS-RPCH
 * 3.2.4.5.10 steps 2 to 5), followed by the held PDUs; its body after
 * OUT_R2/A3 is decoded: one OUT_R2/C1 (before or after the switch) is
 * taken, anything else (bad: 1 a Ping, 2 OUT_R1/A11, 3 a second C1 after
 * the switch, 4 a truncated PDU then junk) is a protocol error that ends
 * the virtual connection (3.2.4.5.14), with its reason. */
static void test_out_r2_successor(int bad)
{
    struct mp_rpch_opts o = {.recv_window = 65536,
                             .conn_timeout_ms = 120000,
                             .pair_timeout_ms = 1000,
                             .max_pending = 1 << 20,
                             .out_length = 8192};
    struct mp_rpch *r = mp_rpch_new(loop, &o, &sink, NULL);
    static struct sess s_next;
    mp_buf_free(&s_in.got);
    mp_buf_free(&s_out.got);
    memset(&s_in, 0, sizeof s_in);
    memset(&s_out, 0, sizeof s_out);
    memset(&s_next, 0, sizeof s_next);
    memset(&as, 0, sizeof as);
    uint8_t a1[128], b1[128], a3[128], a7[128], c1[32];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    size_t n3 = t_unhex(IMPACKET_OUT_R1_A3, a3, sizeof a3);
    size_t n7 = t_unhex(IMPACKET_OUT_R1_A7, a7, sizeof a7);
    size_t nc = t_unhex(IMPACKET_OUT_R2_C1, c1, sizeof c1);
    struct mp_rpch_chan *in = mp_rpch_chan_new(r, false, "192.0.2.7", 5555, 1u << 30, &host, &s_in);
    struct mp_rpch_chan *out = mp_rpch_chan_new(r, true, "192.0.2.7", 5556, 76, &host, &s_out);
    CHECK(mp_rpch_chan_data(out, a1, na) == NULL);
    CHECK(mp_rpch_chan_data(in, b1, nb) == NULL);
    CHECK_EQ(as.opened, 1);
    static uint8_t resp[3000];
    resp[0] = 5, resp[2] = MP_PT_RESPONSE, resp[3] = 3, resp[4] = 0x10;
    mp_put16(resp + 8, sizeof resp);
    for (int k = 0; k < 3; k++) /* the third would leave less than the reserve */
        mp_buf_append(&as.out, resp, sizeof resp);
    CHECK(as.ops->flush(as.carrier, &as.out) == 0);
    size_t before = s_out.got.len;
    struct mp_rpch_chan *next = mp_rpch_chan_new(r, true, "192.0.2.7", 5557, 120, &host, &s_next);
    CHECK(mp_rpch_chan_data(next, a3, n3) == NULL);
    CHECK_EQ(s_next.got.len, 0u); /* no head at OUT_R2/A3 */
    struct mp_rts_pdu p;
    CHECK(mp_rts_decode(s_out.got.data + before, s_out.got.len - before, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_OUT_R2_A5); /* OUT_R2/A6 on the predecessor */
    uint8_t x[64];
    size_t nx = 0;
    if (bad == 1) {
        mp_rts_ping(&p);
        nx = mp_rts_encode(&p, x, sizeof x);
    } else if (bad == 2) {
        mp_rts_out_r1_a10(&p); /* OUT_R1/A11: the same layout */
        nx = mp_rts_encode(&p, x, sizeof x);
    } else if (bad == 4) {
        memcpy(x, c1, nc);
        mp_put16(x + 8, 200); /* longer than any PDU allowed here */
        nx = nc;
    }
    if (nx) {
        CHECK(mp_rpch_chan_data(next, x, nx) != NULL);
        CHECK(s_in.closed == 1 && s_out.closed == 1 && s_next.closed == 1);
        CHECK(strstr(s_in.why, "successor OUT channel") != NULL);
        CHECK_EQ(as.closed, 1);
        CHECK_EQ(mp_rpch_count(r), 0u);
        goto done;
    }
    CHECK(mp_rpch_chan_data(next, c1, 7) == NULL); /* C1 before the switch, in pieces */
    CHECK(mp_rpch_chan_data(next, c1 + 7, nc - 7) == NULL);
    before = s_out.got.len;
    CHECK(mp_rpch_chan_data(in, a7, n7) == NULL); /* OUT_R2/A7 */
    CHECK(mp_rts_decode(s_out.got.data + before, s_out.got.len - before, &p) == NULL);
    CHECK_EQ(mp_rts_identify(&p), MP_RTS_OUT_R2_B3);
    CHECK_EQ(s_out.closed, 1); /* closed once B3 is written */
    const char *head = (const char *)s_next.got.data;
    CHECK(s_next.got.len > 22 && memcmp(head, "HTTP/1.1 200 Success\r\n", 22) == 0);
    const uint8_t *body = (const uint8_t *)strstr(head, "\r\n\r\n") + 4;
    CHECK_EQ(s_next.got.len - (size_t)(body - s_next.got.data), sizeof resp); /* the held PDU */
    if (bad == 3) {
        CHECK(mp_rpch_chan_data(next, c1, nc) != NULL); /* a second C1 */
        CHECK(s_in.closed == 1 && s_next.closed == 1);
        CHECK(strstr(s_in.why, "after OUT_R2/C1") != NULL);
        CHECK_EQ(mp_rpch_count(r), 0u);
    } else {
        CHECK(s_in.closed == 0 && s_next.closed == 0);
        CHECK_EQ(mp_rpch_count(r), 1u);
    }
done:
    mp_rpch_chan_free(in);
    mp_rpch_chan_free(out);
    mp_rpch_chan_free(next);
    mp_rpch_free(r);
    run_for(10);
    mp_buf_free(&s_in.got);
    mp_buf_free(&s_out.got);
    mp_buf_free(&s_next.got);
    mp_buf_free(&as.in);
    mp_buf_free(&as.out);
}

int main(void)
{
    loop = mp_loop_new();
    test_pair_and_relay();
    test_partner_never_comes();
    for (int bad = 0; bad <= 4; bad++)
        test_out_r2_successor(bad);
    mp_buf_free(&s_in.got);
    mp_buf_free(&s_out.got);
    mp_loop_free(loop);
    TEST_DONE();
}
