/* The upstream endpoint mapper lookup (ept_map over a short-lived
 * connection) and the port cache. */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "ops/metrics.h"

uint16_t dce_port_lookup(struct mp_relay *r, const struct mp_syntax *s)
{
    uint64_t now = mp_now_ms();
    for (size_t i = 0; i < r->n_cache; i++)
        if (mp_syntax_eq(&r->cache[i].iface, s) && r->cache[i].expires > now)
            return r->cache[i].port;
    return 0;
}

static void port_store(struct mp_relay *r, const struct mp_syntax *s, uint16_t port)
{
    size_t i;
    for (i = 0; i < r->n_cache; i++)
        if (mp_syntax_eq(&r->cache[i].iface, s))
            break;
    if (i == r->n_cache) {
        if (r->n_cache == MP_MAX_IFACES)
            i = 0;
        else
            r->n_cache++;
    }
    r->cache[i].iface = *s;
    r->cache[i].port = port;
    r->cache[i].expires = mp_now_ms() + PORT_CACHE_TTL_MS;
}

/* Drops a cached port (a connect to it failed). */
void dce_port_forget(struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t i = 0; i < r->n_cache; i++)
        if (mp_syntax_eq(&r->cache[i].iface, s))
            r->cache[i].expires = 0;
}

void dce_resolver_start(struct assoc *a)
{
    struct mp_bind *b = &dce_scratch_bind;
    memset(b, 0, offsetof(struct mp_bind, ctx));
    b->max_xmit = b->max_recv = MP_MAX_FRAG;
    b->n_ctx = 1;
    b->ctx[0].ctx_id = 0;
    b->ctx[0].n_ts = 1;
    b->ctx[0].abstract = mp_epm_syntax;
    b->ctx[0].ts[0] = mp_ndr20_syntax;
    struct mp_buf stub = {0};
    int rc =
        mp_build_bind(&a->res.n.out, MP_PT_BIND, MP_PFC_FIRST | MP_PFC_LAST, 1, b, NULL) ||
        mp_epm_map_request(&stub, &a->target) ||
        mp_build_request(&a->res.n.out, MP_PFC_FIRST | MP_PFC_LAST, 2, 0, MP_EPM_OP_MAP, NULL,
                         mp_buf_head(&stub), mp_buf_avail(&stub), (uint32_t)mp_buf_avail(&stub));
    mp_buf_free(&stub);
    if (rc)
        dce_upstream_failed(a, "endpoint mapper request could not be built");
}

void dce_resolver_input(struct assoc *a)
{
    struct conn *c = &a->res;
    while (!a->dead && c->n.io.fd >= 0) {
        const uint8_t *p;
        struct mp_pdu_hdr h;
        const char *bad;
        int whole = dce_pdu_head(c, &p, &h, &bad);
        if (whole < 0) {
            dce_upstream_failed(a, "endpoint mapper sent a bad PDU");
            return;
        }
        if (!whole)
            return;
        if (h.ptype == MP_PT_BIND_ACK) {
            struct mp_bind_ack *ack = &dce_scratch_ack;
            if (mp_bind_ack_parse(p, &h, ack) || ack->n_results < 1 ||
                ack->res[0].result != MP_CTX_ACCEPT) {
                dce_upstream_failed(a, "endpoint mapper refused the bind");
                return;
            }
        } else if (h.ptype == MP_PT_RESPONSE && h.frag_len >= MP_RESP_HDR_LEN) {
            if (mp_buf_avail(&a->reasm) + h.frag_len > MAX_LOCAL_STUB) {
                dce_upstream_failed(a, "endpoint mapper answer too large");
                return;
            }
            mp_buf_append(&a->reasm, p + MP_RESP_HDR_LEN, h.frag_len - MP_RESP_HDR_LEN);
            if (h.flags & MP_PFC_LAST) {
                uint16_t port = 0;
                uint32_t status = 0;
                int rc = mp_epm_map_response(mp_buf_head(&a->reasm), mp_buf_avail(&a->reasm), &port,
                                             &status);
                mp_buf_free(&a->reasm);
                dce_conn_release(a->r, c);
                char uuid[37];
                mp_uuid_format(a->target.uuid, uuid);
                if (rc || !port) {
                    char why[160];
                    snprintf(why, sizeof(why),
                             "endpoint mapper has no ncacn_ip_tcp endpoint for %s v%u.%u "
                             "(status 0x%08x)",
                             uuid, a->target.major, a->target.minor, status);
                    dce_upstream_failed(a, why);
                    return;
                }
                mp_debug("conn %s: upstream endpoint mapper: %s is at port %u", a->peer, uuid,
                         port);
                port_store(a->r, &a->target, port);
                dce_upstream_connect(a, port);
                return;
            }
        } else {
            char why[96];
            snprintf(why, sizeof(why), "endpoint mapper answered with %s", mp_ptype_name(h.ptype));
            dce_upstream_failed(a, why);
            return;
        }
        mp_buf_consume(&c->n.in, h.frag_len);
    }
}
