/* RPC over HTTP termination glue (src/transport/rpch/rpch.c) on the real
 * event loop: two channels paired by cookie, the association's socketpair
 * handed to the adopt function, PDUs both ways, pairing timeout.  CONN/A1
 * and CONN/B1 are the bytes Impacket's rpch client sends. */
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"
#include "rts_vectors.h"
#include "testlib.h"
#include "transport/rpch/rpch.h"
#include "transport/rpch/rts.h"

struct sess {
    struct mp_buf got;
    int closed;
    char why[128];
};
static struct sess s_in, s_out;
static int adopted_fd = -1;
static char adopted_host[64];

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
static const struct mp_rpch_chan_host host = {h_send, h_close};

static void adopt(void *data, int fd, const char *h, uint16_t port)
{
    adopted_fd = fd;
    snprintf(adopted_host, sizeof(adopted_host), "%s:%u", h, port);
}

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
    struct mp_rpch *r = mp_rpch_new(loop, &o, adopt, NULL);
    uint8_t a1[128], b1[128];
    size_t na = t_unhex(IMPACKET_A1, a1, sizeof a1), nb = t_unhex(IMPACKET_B1, b1, sizeof b1);
    /* IN first this time (the order on the wire is not guaranteed) */
    struct mp_rpch_chan *in = mp_rpch_chan_new(r, false, "192.0.2.7", 5555, 1u << 30, &host, &s_in);
    struct mp_rpch_chan *out = mp_rpch_chan_new(r, true, "192.0.2.7", 5556, 76, &host, &s_out);
    CHECK(mp_rpch_chan_data(in, b1, 7) == NULL); /* in pieces */
    CHECK(mp_rpch_chan_data(in, b1 + 7, nb - 7) == NULL);
    CHECK_EQ(mp_rpch_count(r), 1u);
    CHECK(adopted_fd < 0);
    CHECK(mp_rpch_chan_data(out, a1, na) == NULL);
    CHECK(adopted_fd >= 0);
    CHECK(strcmp(adopted_host, "192.0.2.7:5555") == 0);
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

    /* a request on IN reaches the association's end of the socketpair */
    uint8_t req[64] = {5, 0, MP_PT_REQUEST, 3, 0x10};
    mp_put16(req + 8, sizeof(req));
    mp_put32(req + 12, 9);
    CHECK(mp_rpch_chan_data(in, req, sizeof(req)) == NULL);
    uint8_t got[128];
    CHECK(recv(adopted_fd, got, sizeof(got), 0) == (ssize_t)sizeof(req));
    CHECK(memcmp(got, req, sizeof(req)) == 0);
    /* the association answers: it comes out on the OUT channel */
    req[2] = MP_PT_RESPONSE;
    CHECK(send(adopted_fd, req, sizeof(req), 0) == (ssize_t)sizeof(req));
    run_for(50);
    CHECK_EQ(s_out.got.len, sizeof(req));
    /* the association closes: both sessions are told */
    close(adopted_fd);
    adopted_fd = -1;
    run_for(50);
    CHECK(s_in.closed == 1 && s_out.closed == 1);
    CHECK(strstr(s_in.why, "association closed") != NULL);
    CHECK_EQ(mp_rpch_count(r), 0u);
    mp_rpch_chan_free(in);
    mp_rpch_chan_free(out);
    mp_rpch_free(r);
}

static void test_partner_never_comes(void)
{
    struct mp_rpch_opts o = {.recv_window = 65536,
                             .conn_timeout_ms = 120000,
                             .pair_timeout_ms = 30,
                             .max_pending = 1 << 20};
    struct mp_rpch *r = mp_rpch_new(loop, &o, adopt, NULL);
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

int main(void)
{
    loop = mp_loop_new();
    test_pair_and_relay();
    test_partner_never_comes();
    mp_buf_free(&s_in.got);
    mp_buf_free(&s_out.got);
    mp_loop_free(loop);
    TEST_DONE();
}
