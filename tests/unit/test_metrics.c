/* src/ops/metrics.c: counters, bounded labels, the exposition's form. */
#include <stdint.h>

#include "core/buf.h"
#include "dcerpc/ifaces.h"
#include "event/loop.h"
#include "ops/metrics.h"
#include "testlib.h"

static char text[65536];

static const char *render(void)
{
    struct mp_buf b = {0};
    CHECK_EQ(mp_metrics_render(&b), 0);
    size_t n = mp_buf_avail(&b) < sizeof text - 1 ? mp_buf_avail(&b) : sizeof text - 1;
    memcpy(text, mp_buf_head(&b), n);
    text[n] = 0;
    mp_buf_free(&b);
    return text;
}

int main(void)
{
    /* NSPI 3.1 {f5cc5a18-4264-101a-8c59-08002b2f8426}, as on the wire */
    static const uint8_t nspi[16] = {0x18, 0x5a, 0xcc, 0xf5, 0x64, 0x42, 0x1a, 0x10,
                                     0x8c, 0x59, 0x08, 0x00, 0x2b, 0x2f, 0x84, 0x26};
    const struct mp_iface_info *ni = mp_iface_by_uuid(nspi);
    CHECK(ni != NULL);
    mp_metrics_reset();
    uint64_t t0 = mp_now_us();
    mp_metrics_call(ni, 0, 100, 200, t0, "ok");
    mp_metrics_call(ni, 0, 100, 200, t0, "ok");
    mp_metrics_call(ni, 1, 10, 20, t0, "fault:0x1c010002");
    mp_metrics_call(ni, 9999, 1, 1, t0, "upstream-failed"); /* op out of range: "other" */
    mp_metrics_call(NULL, 3, 1, 1, t0, "ok(module)");       /* unknown interface */
    mp_metrics_accepted("rpc");
    mp_metrics_accepted("nonsense"); /* ignored */
    mp_metrics_open("rpc", 1);
    mp_metrics_auth("NTLM", true);
    mp_metrics_auth("Made-Up", false);
    mp_metrics_upstream_error("exlab port 6001: connect failed: Connection refused");
    mp_metrics_http("Execute", 200, 5, 6, t0);
    mp_metrics_http("<script>", 404, 5, 6, t0); /* client text never becomes a label */
    const char *t = render();
    CHECK(strstr(t, "mapiproxy_rpc_calls_total{interface=\"exchange_nsp\",op=\"NspiBind\","
                    "status=\"ok\"} 2\n"));
    CHECK(strstr(t, "op=\"NspiUnbind\",status=\"fault\"} 1\n"));
    CHECK(strstr(t, "interface=\"exchange_nsp\",op=\"other\",status=\"error\"} 1\n"));
    CHECK(strstr(t, "interface=\"other\",op=\"op3\",status=\"ok\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_rpc_received_bytes_total{interface=\"exchange_nsp\"} 211\n"));
    CHECK(strstr(t, "mapiproxy_rpc_call_duration_seconds_count{interface=\"exchange_nsp\"} 4\n"));
    CHECK(strstr(t, "mapiproxy_rpc_call_duration_seconds_bucket{interface=\"exchange_nsp\","
                    "le=\"+Inf\"} 4\n"));
    CHECK(strstr(t, "# TYPE mapiproxy_rpc_call_duration_seconds histogram\n"));
    CHECK(strstr(t, "mapiproxy_module_verdicts_total{verdict=\"answered\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_connections_accepted_total{listener=\"rpc\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_connections_open{listener=\"rpc\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_auth_total{mechanism=\"NTLM\",result=\"ok\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_auth_total{mechanism=\"other\",result=\"refused\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_upstream_errors_total{kind=\"connect\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_http_requests_total{type=\"Execute\",code=\"2xx\"} 1\n"));
    CHECK(strstr(t, "mapiproxy_http_requests_total{type=\"other\",code=\"4xx\"} 1\n"));
    CHECK(!strstr(t, "<script>"));
    /* the newest upstream event was an answer: healthy; then a failure: not */
    CHECK(mp_metrics_healthy());
    uint64_t t1 = mp_now_ms();
    while (mp_now_ms() == t1) /* a later millisecond than the last answer */
        ;
    mp_metrics_upstream_error("exlab port 6001 did not answer within 10000 ms");
    CHECK(!mp_metrics_healthy());
    CHECK(strstr(render(), "mapiproxy_upstream_errors_total{kind=\"timeout\"} 1\n"));
    CHECK(strstr(render(), "mapiproxy_up 0\n"));
    mp_metrics_reset();
    CHECK(mp_metrics_healthy());
    TEST_DONE();
}
