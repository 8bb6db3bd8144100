/* The DCE/RPC association fed by another carrier (transport/dcerpc/
 * carrier.h), with no client socket: the proxy's own endpoint mapper is
 * bound and asked, as an RPC-over-HTTP virtual connection would, and the
 * answers are taken a few bytes at a time. */
#include <string.h>

#include "core/config.h"
#include "core/log.h"
#include "dcerpc/ifaces.h"
#include "dcerpc/pdu.h"
#include "epm/epm.h"
#include "event/loop.h"
#include "testlib.h"
#include "transport/dcerpc/carrier.h"

struct cap {
    struct mp_buf got; /* what the association handed over */
    size_t take;       /* bytes flush takes per call (0: all) */
    bool want;
    int n_want;
    char closed[128];
};

static int cap_flush(void *p, struct mp_buf *out)
{
    struct cap *c = p;
    size_t n = mp_buf_avail(out);
    if (c->take && n > c->take)
        n = c->take;
    mp_buf_append(&c->got, mp_buf_head(out), n);
    mp_buf_consume(out, n);
    return 0;
}

static void cap_want(void *p, bool want)
{
    struct cap *c = p;
    c->want = want;
    c->n_want++;
}

static void cap_closed(void *p, const char *reason)
{
    struct cap *c = p;
    snprintf(c->closed, sizeof(c->closed), "%s", reason);
}

static const struct mp_dce_carrier_ops ops = {cap_flush, cap_want, cap_closed};

/* The next whole PDU the association handed over, or NULL. */
static const uint8_t *next_pdu(struct cap *c, struct mp_pdu_hdr *h)
{
    size_t n = mp_buf_avail(&c->got);
    const uint8_t *p = mp_buf_head(&c->got);
    if (n < MP_HDR_LEN || mp_pdu_hdr_check(p, n, h) || n < h->frag_len)
        return NULL;
    mp_buf_consume(&c->got, h->frag_len);
    return p;
}

int main(void)
{
    mp_log_threshold = MP_LOG_ERROR;
    struct mp_config cfg;
    struct mp_diag diag = {0};
    const char *text = "[global]\n"
                       "dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
                       "mapiproxy:listen = 127.0.0.1\n"
                       "mapiproxy:epmapper port = 0\n"
                       "mapiproxy:rpc port = 0\n";
    CHECK_EQ(mp_config_load_text(&cfg, "carrier.conf", text, &diag), 0);
    struct mp_loop *loop = mp_loop_new();
    struct mp_relay *r = mp_relay_new(loop, &cfg);
    CHECK(r != NULL);
    if (!r)
        TEST_DONE();

    struct cap c = {.take = 7};
    struct assoc *a = mp_dce_assoc_open(r, &ops, &c, "test (carrier)", NULL, true);
    CHECK(a != NULL);
    CHECK(c.want); /* waiting for the bind */

    /* bind to the endpoint mapper, fed in two pieces */
    struct mp_bind b;
    memset(&b, 0, sizeof(b));
    b.max_xmit = b.max_recv = 4280;
    b.n_ctx = 1;
    b.ctx[0].n_ts = 1;
    b.ctx[0].abstract = mp_epm_syntax;
    b.ctx[0].ts[0] = mp_ndr20_syntax;
    struct mp_buf in = {0};
    CHECK_EQ(mp_build_bind(&in, MP_PT_BIND, MP_PFC_FIRST | MP_PFC_LAST, 1, &b, NULL), 0);
    CHECK_EQ(mp_dce_assoc_input(a, in.data, 10), 0);
    CHECK_EQ(mp_buf_avail(&c.got), 0);
    CHECK_EQ(mp_dce_assoc_input(a, in.data + 10, in.len - 10), 0);
    /* the carrier took 7 bytes; the rest waits until it can take more */
    CHECK_EQ(mp_buf_avail(&c.got), 7);
    for (int i = 0; i < 40; i++)
        mp_dce_assoc_writable(a);
    struct mp_pdu_hdr h;
    const uint8_t *p = next_pdu(&c, &h);
    CHECK(p && h.ptype == MP_PT_BIND_ACK && h.call_id == 1);
    struct mp_bind_ack ack;
    CHECK(p && mp_bind_ack_parse(p, &h, &ack) == 0 && ack.n_results == 1 &&
          ack.res[0].result == MP_CTX_ACCEPT);

    /* ept_map for the first configured interface: the proxy's RPC port */
    c.take = 0;
    const struct mp_iface_info *info = mp_iface_by_uuid(cfg.ifaces[0].uuid);
    CHECK(info != NULL);
    struct mp_buf stub = {0};
    in.len = in.off = 0;
    CHECK(info && mp_epm_map_request(&stub, &info->syntax) == 0);
    CHECK_EQ(mp_build_request(&in, MP_PFC_FIRST | MP_PFC_LAST, 2, 0, MP_EPM_OP_MAP, NULL, stub.data,
                              stub.len, (uint32_t)stub.len),
             0);
    CHECK_EQ(mp_dce_assoc_input(a, in.data, in.len), 0);
    p = next_pdu(&c, &h);
    CHECK(p && h.ptype == MP_PT_RESPONSE && h.call_id == 2);
    uint16_t port = 0;
    uint32_t status = 1;
    CHECK(p && mp_epm_map_response(p + MP_RESP_HDR_LEN, h.frag_len - MP_RESP_HDR_LEN, &port,
                                   &status) == 0);
    CHECK_EQ(port, mp_relay_rpc_port(r));
    CHECK_EQ(c.closed[0], 0);

    /* a malformed PDU: a fault, then the association ends and says so */
    uint8_t bad[16] = {4, 0, MP_PT_REQUEST, 3, 0x10, 0, 0, 0, 16, 0, 0, 0, 3, 0, 0, 0};
    CHECK_EQ(mp_dce_assoc_input(a, bad, sizeof(bad)), -1);
    p = next_pdu(&c, &h);
    CHECK(p && h.ptype == MP_PT_FAULT);
    CHECK(c.closed[0] != 0); /* "closed after final answer", as on TCP */

    /* a second association, ended by its carrier: not told back */
    struct cap c2 = {0};
    struct assoc *a2 = mp_dce_assoc_open(r, &ops, &c2, "test 2 (carrier)", "192.0.2.9", false);
    CHECK(a2 != NULL);
    if (a2)
        mp_dce_assoc_close(a2, "carrier gone");
    CHECK_EQ(c2.closed[0], 0);

    mp_buf_free(&in);
    mp_buf_free(&stub);
    mp_buf_free(&c.got);
    mp_buf_free(&c2.got);
    mp_relay_free(r);
    mp_loop_free(loop); /* runs the deferred frees */
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    TEST_DONE();
}
