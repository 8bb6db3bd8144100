/* MAPI over HTTP requests through the module chain; see mhcall.h. */
#include "transport/mapihttp/mhcall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/log.h"
#include "dcerpc/pdu.h"
#include "chain/chain.h"

struct mp_mh_call {
    struct mp_call *m; /* NULL once the chain is done with it */
    const struct mp_mh_call_host *host;
    void *owner; /* the front's; NULL once detached */
    enum mp_mh_kind kind;
    const struct mp_call_codec *twin;
    struct mp_arena arena; /* the decoded bodies: the call's decoded forms */
    struct mp_mh_body req, rsp;
    bool have_rsp;
};

static void c_free(struct mp_mh_call *c)
{
    mp_arena_free(&c->arena);
    free(c);
}

/* The MAPI/HTTP body of one side of the call: the bytes as they came when
 * no module changed it, else written from the call's decoded form (the
 * body's own structures, or the twin's decoded from a stub a module set). */
static int to_body(struct mp_mh_call *c, struct mp_call *m, bool response, struct mp_buf *out)
{
    const struct mp_mh_body *ob = response ? &c->rsp : &c->req;
    bool have = !response || c->have_rsp;
    if (have && !(response ? m->resp_modified : m->req_modified))
        return mp_buf_append(out, ob->raw, ob->raw_len);
    void *v = response ? mp_call_response(m) : mp_call_request(m);
    if (!v) {
        mp_warn("mapihttp %s: a module's %s does not decode as %s; not sent",
                mp_mh_kind_info(c->kind)->name, response ? "response" : "request", c->twin->name);
        return -1;
    }
    struct mp_mh_body b;
    if (!have) {
        if (mp_mh_body_new(&b, c->kind, true, &c->arena))
            return -1;
    } else {
        b = *ob;
    }
    b.call = v;
    return mp_mh_encode(out, &b);
}

static void h_relay(struct mp_call *m)
{
    struct mp_mh_call *c = mp_call_ctx(m);
    struct mp_buf body = {0};
    if (to_body(c, m, false, &body) == 0)
        c->host->relay(c->owner, body.data, body.len);
    else
        c->host->fail(c->owner, MP_MH_RC_UNKNOWN_FAILURE);
    mp_buf_free(&body);
}

static void h_answer(struct mp_call *m)
{
    struct mp_mh_call *c = mp_call_ctx(m);
    struct mp_buf body = {0};
    if (to_body(c, m, true, &body) == 0)
        c->host->answer(c->owner, body.data, body.len);
    else
        c->host->fail(c->owner, MP_MH_RC_UNKNOWN_FAILURE);
    mp_buf_free(&body);
}

/* A fault becomes a failure body: StatusCode = the fault status. */
static void h_fault(struct mp_call *m)
{
    struct mp_mh_call *c = mp_call_ctx(m);
    struct mp_mh_body b;
    struct mp_buf body = {0};
    if (mp_mh_body_new(&b, c->kind, true, &c->arena) == 0) {
        b.side.status_code = m->fault ? m->fault : MP_RPC_S_CALL_FAILED;
        if (mp_mh_encode(&body, &b) == 0) {
            c->host->answer(c->owner, body.data, body.len);
            mp_buf_free(&body);
            return;
        }
    }
    mp_buf_free(&body);
    c->host->fail(c->owner, MP_MH_RC_UNKNOWN_FAILURE);
}

static void h_done(struct mp_call *m)
{
    struct mp_mh_call *c = mp_call_ctx(m);
    c->m = NULL;
    mp_call_free(m);
    if (!c->owner)
        c_free(c);
}

static const struct mp_call_host mh_host = {h_relay, h_answer, h_fault, h_done,
                                            .decoded_form = true};

/* An EMSMDB request the chain wants but cannot take: relayed raw (0), or
 * refused with X-ResponseCode 1, unknown failure (-1) when the chain must
 * see every one (mailbox authorization: a Connect or Execute relayed raw
 * would name any mailbox).  Address book requests, and requests that go
 * upstream with the client's own logon (no user), are relayed raw. */
static int closed(const struct mp_modules *ms, const struct mp_mh_kind_info *ki, const char *user,
                  uint32_t *rc)
{
    if (!ms->fail_closed || !user || !*user || strcmp(ki->twin_iface, "emsmdb"))
        return 0;
    *rc = MP_MH_RC_UNKNOWN_FAILURE;
    return -1;
}

int mp_mh_call_start(struct mp_modules *ms, struct mp_session *s, const char *peer,
                     const char *user, enum mp_mh_kind k, const uint8_t *body, size_t len,
                     const struct mp_mh_call_host *host, void *owner, struct mp_mh_call **out,
                     uint32_t *rc)
{
    *out = NULL;
    *rc = 0;
    const struct mp_mh_kind_info *ki = mp_mh_kind_info(k);
    const struct mp_call_codec *twin = mp_mh_twin(k);
    const struct mp_codec_iface *ifc =
        ki && ki->twin_iface ? mp_codec_iface_lookup(ki->twin_iface) : NULL;
    if (!twin || !ifc || !ms)
        return 0;
    uint32_t mask = mp_modules_want(ms, ifc->uuid, (uint16_t)ki->twin_opnum);
    if (!mask)
        return 0;
    struct mp_mh_call *c = calloc(1, sizeof(*c));
    if (!c)
        return closed(ms, ki, user, rc); /* relayed raw rather than failed, unless fail-closed */
    mp_arena_init(&c->arena);
    c->host = host;
    c->owner = owner;
    c->kind = k;
    c->twin = twin;
    int d = mp_mh_decode(k, false, body, len, &c->req, &c->arena);
    if (d == MP_MH_EMALFORMED) {
        *rc = mp_mh_request_error_code(d);
        c_free(c);
        return -1;
    }
    if (d != MP_MH_OK) {
        mp_info("mapihttp %s from %s: not representable for modules; %s", ki->name, peer,
                closed(ms, ki, user, rc) ? "refused (mailbox authorization must see it)"
                                         : "relayed untouched");
        c_free(c);
        return closed(ms, ki, user, rc);
    }
    struct mp_call_origin o = {
        .host = &mh_host,
        .owner = c,
        .session = s,
        .iface_uuid = ifc->uuid,
        .iface = ifc->name,
        .opnum = (uint16_t)ki->twin_opnum,
        .op_name = twin->name,
        .peer = peer,
        .user = user, /* the HTTPS front logs on upstream as the proxy's account */
        .proxy_identity = true,
        .transport = "mapi-http",
        .auth = user && *user ? "terminate" : "pass-through",
        .ctx = c,
    };
    struct mp_call *m = mp_call_new(ms, mask, &o);
    if (!m) {
        c_free(c);
        return closed(ms, ki, user, rc);
    }
    mp_call_set_decoded(m, false, c->req.call); /* decoded once: no NDR unless a hook asks */
    c->m = m;
    *out = c;
    mp_call_run_request(m);
    return 0;
}

bool mp_mh_call_side_pending(const struct mp_mh_call *c)
{
    return c && c->m && c->m->side_cb;
}

bool mp_mh_call_side_failed(struct mp_mh_call *c, const char *why, uint32_t code)
{
    struct mp_call *m = c ? c->m : NULL;
    if (!m || !m->side_cb)
        return false;
    mp_info("mapihttp %s from %s: upstream %s %u to the proxy's side request; the client's "
            "call goes on",
            mp_mh_kind_info(c->kind)->name, m->peer, why, code);
    c->have_rsp = false;
    mp_call_set_decoded(m, true, NULL); /* no response: the stage stops reading ahead */
    mp_call_run_response(m);
    return true;
}

void mp_mh_call_response(struct mp_mh_call *c, const uint8_t *body, size_t len)
{
    struct mp_call *m = c->m;
    if (!m)
        return;
    c->have_rsp = false;
    int d = mp_mh_decode(c->kind, true, body, len, &c->rsp, &c->arena);
    if (d != MP_MH_OK && m->side_cb) {
        mp_mh_call_side_failed(c, "response that does not decode, size", (uint32_t)len);
        return;
    }
    if (d != MP_MH_OK) {
        /* the upstream's answer goes to the client as it is, without the
         * response hooks */
        mp_info("mapihttp %s from %s: upstream response %s; passed on untouched",
                mp_mh_kind_info(c->kind)->name, m->peer,
                d == MP_MH_EMALFORMED ? "does not decode" : "not representable for modules");
        c->host->answer(c->owner, body, len);
        c->m = NULL;
        mp_call_free(m);
        return;
    }
    c->have_rsp = true;
    mp_call_set_decoded(m, true, c->rsp.call);
    mp_call_run_response(m);
}

void mp_mh_call_detach(struct mp_mh_call *c)
{
    if (!c)
        return;
    c->owner = NULL;
    struct mp_call *m = c->m;
    if (m) {
        m->owner = NULL; /* the runtime makes no host call after this */
        if (m->running || m->pending)
            return; /* h_done frees both */
        c->m = NULL;
        mp_call_free(m);
    }
    c_free(c);
}
