/* Byte queues and the PDU builders on a partly sent queue: an append that
 * compacts the buffer must not misplace the PDU being built (found by the
 * soak test: a stalled client's queue, then a split response). */
#include <stdint.h>
#include <string.h>

#include "core/buf.h"
#include "dcerpc/pdu.h"
#include "testlib.h"

static void check_queue(struct mp_buf *q, size_t expect_pdus, size_t stub_len)
{
    size_t off = 0, n = 0;
    const uint8_t *p = mp_buf_head(q);
    size_t avail = mp_buf_avail(q);
    while (off + MP_HDR_LEN <= avail) {
        struct mp_pdu_hdr h;
        const char *bad = mp_pdu_hdr_check(p + off, avail - off, &h);
        CHECK(bad == NULL);
        CHECK_EQ(h.frag_len, MP_RESP_HDR_LEN + stub_len);
        if (bad || h.frag_len != MP_RESP_HDR_LEN + stub_len)
            return; /* the queue is corrupt: stop walking it */
        off += h.frag_len;
        n++;
    }
    CHECK_EQ(off, avail);
    CHECK_EQ(n, expect_pdus);
}

/* The thread's buffer-memory cache (mp_buf_cache_enable): blocks come back
 * by size class, a grown buffer keeps its bytes, everything goes at
 * release (LeakSanitizer checks that), and with the cache off nothing is
 * kept. */
static void cache_test(void)
{
    size_t cap;
    void *p = mp_buf_take(100, &cap);
    CHECK(p != NULL);
    CHECK_EQ(cap, 1024);
    mp_buf_give(p, cap); /* cache off: freed */
    mp_buf_cache_enable();
    p = mp_buf_take(5000, &cap);
    CHECK_EQ(cap, 8192);
    mp_buf_give(p, cap);
    void *q = mp_buf_take(3000, &cap); /* a class or two above: the same block */
    CHECK(q == p);
    CHECK_EQ(cap, 8192);
    mp_buf_give(q, cap);
    q = mp_buf_take(1000, &cap); /* over 4 times the need: a new one */
    CHECK(q != p);
    CHECK_EQ(cap, 1024);
    mp_buf_give(q, cap);
    q = mp_buf_take(200000, &cap); /* over the largest class: malloc'd, freed */
    CHECK(q != NULL);
    CHECK_EQ(cap, 262144);
    mp_buf_give(q, cap);
    struct mp_buf b = {0};
    for (int i = 0; i < 40000; i++) {
        uint8_t c = (uint8_t)(i * 7);
        CHECK_EQ(mp_buf_append(&b, &c, 1), 0);
    }
    int bad = 0;
    for (int i = 0; i < 40000; i++)
        bad += b.data[i] != (uint8_t)(i * 7);
    CHECK_EQ(bad, 0);
    CHECK_EQ(b.cap, 65536);
    mp_buf_free(&b);
    mp_buf_cache_release();
    p = mp_buf_take(5000, &cap); /* released and off again */
    mp_buf_give(p, cap);
}

/* len + extra past SIZE_MAX: refused, the buffer as it was (no wrap to a
 * small allocation that the caller would then write past). */
static void reserve_overflow_test(void)
{
    struct mp_buf b = {0};
    CHECK_EQ(mp_buf_append(&b, "abcdef", 6), 0);
    size_t cap = b.cap;
    CHECK_EQ(mp_buf_reserve(&b, SIZE_MAX), -1);
    CHECK_EQ(mp_buf_reserve(&b, SIZE_MAX - 5), -1);
    CHECK_EQ(b.len, 6);
    CHECK_EQ(b.cap, cap);
    CHECK(!memcmp(b.data, "abcdef", 6));
    CHECK_EQ(mp_buf_reserve(&b, 100), 0);
    mp_buf_free(&b);
}

int main(void)
{
    reserve_overflow_test();
    cache_test();
    static uint8_t stub[3000];
    for (size_t i = 0; i < sizeof(stub); i++)
        stub[i] = (uint8_t)i;
    for (size_t sent = 1; sent < 6000; sent += 997) {
        struct mp_buf q = {0};
        /* two PDUs queued, part of the first already sent */
        CHECK_EQ(mp_build_response(&q, 3, 1, 0, stub, sizeof(stub), sizeof(stub)), 0);
        CHECK_EQ(mp_build_response(&q, 3, 2, 0, stub, sizeof(stub), sizeof(stub)), 0);
        size_t first_len = MP_RESP_HDR_LEN + sizeof(stub);
        size_t consumed = sent % first_len;
        mp_buf_consume(&q, consumed);
        /* the rest of the first PDU "sent" too: the queue holds whole PDUs */
        mp_buf_consume(&q, first_len - consumed);
        /* more PDUs: appends may compact the buffer under the builders */
        for (int k = 0; k < 4; k++)
            CHECK_EQ(mp_build_response(&q, 3, 3 + (uint32_t)k, 0, stub, sizeof(stub), sizeof(stub)),
                     0);
        check_queue(&q, 5, sizeof(stub));
        struct mp_auth a = {.type = 10, .level = 6, .value = stub, .value_len = 16};
        struct mp_bind_ack ack = {.max_xmit = 4280, .max_recv = 4280, .n_results = 1};
        mp_buf_consume(&q, MP_RESP_HDR_LEN + 100);
        size_t before = mp_buf_avail(&q);
        CHECK_EQ(mp_build_bind_ack(&q, MP_PT_BIND_ACK, 3, 9, &ack, &a), 0);
        struct mp_pdu_hdr h;
        CHECK(mp_pdu_hdr_check(mp_buf_head(&q) + before, mp_buf_avail(&q) - before, &h) == NULL);
        CHECK_EQ(h.frag_len, mp_buf_avail(&q) - before);
        CHECK_EQ(h.auth_len, 16);
        mp_buf_free(&q);
    }
    TEST_DONE();
}
