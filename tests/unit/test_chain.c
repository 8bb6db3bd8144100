/* The module chain (src/chain) with no socket: modules linked into the test
 * (mp_modules_load_with), a host that records what the chain asks of it,
 * and calls made with the one constructor.  Load, the request and response
 * hooks in order, STOP, ERROR, PENDING and resume (also after the client
 * went away), RELAY_AGAIN and its limit, the ROP stage provider's marking,
 * sessions and their module data. */
#include <stdarg.h>

#include "chain/chain.h"
#include "codec/gen/rfr.h"
#include "core/config.h"
#include "core/log.h"
#include "dcerpc/ifaces.h"
#include "testlib.h"

/* ---- what happened, as one line ---- */

static char trail[2048];

static void note(const char *fmt, ...)
{
    size_t n = strlen(trail);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(trail + n, sizeof(trail) - n, fmt, ap);
    va_end(ap);
}

/* ---- scripted modules ---- */

enum hook { H_NDR_PULL, H_PULL, H_ROP_REQ, H_DISPATCH, H_NDR_PUSH, H_ROP_RSP, H_PUSH, H_N };
static const char *const hook_names[H_N] = {"ndr_pull", "pull",         "rop_request", "dispatch",
                                            "ndr_push", "rop_response", "push"};

struct script {
    const char *name;
    enum mp_status ret[H_N]; /* what each hook returns (MP_CONTINUE = 0 by default) */
    int pend_at;             /* hook that returns PENDING once, -1 none */
    bool pended;
    bool relay_again_once; /* push: RELAY_AGAIN while the request went up once */
    bool relay_again_always;
    bool keep_session_data; /* pull: sets session data */
} scripts[3];

static struct mp_call *parked; /* the call a module holds PENDING */
static int unbinds, dtors;

static void data_dtor(void *p)
{
    dtors++;
    free(p);
}

static enum mp_status run_hook(struct mp_module_ctx *mc, struct mp_call *call, enum hook h)
{
    struct script *s = mp_module_private(mc);
    note("%c.%s ", s->name[2], hook_names[h]);
    if (s->pend_at == (int)h && !s->pended) {
        s->pended = true;
        parked = call;
        return MP_PENDING;
    }
    if (h == H_PULL && s->keep_session_data && mp_call_session(call)) {
        int *d = malloc(sizeof(*d));
        *d = 7;
        mp_session_set_data(mp_call_session(call), mc, d, data_dtor);
    }
    if (h == H_PUSH && s->relay_again_always)
        return MP_RELAY_AGAIN;
    if (h == H_PUSH && s->relay_again_once && mp_call_relay_count(call) < 2)
        return MP_RELAY_AGAIN;
    if (s->ret[h] == MP_STOP && h == H_DISPATCH)
        mp_call_set_response_stub(call, (const uint8_t *)"ANSWER", 6);
    if (s->ret[h] == MP_ERROR)
        mp_call_fault(call, 0x5);
    return s->ret[h];
}

#define HOOK(fn, h)                                                                                \
    static enum mp_status fn(struct mp_module_ctx *mc, struct mp_call *call)                       \
    {                                                                                              \
        return run_hook(mc, call, h);                                                              \
    }
HOOK(h_ndr_pull, H_NDR_PULL)
HOOK(h_pull, H_PULL)
HOOK(h_rop_req, H_ROP_REQ)
HOOK(h_dispatch, H_DISPATCH)
HOOK(h_ndr_push, H_NDR_PUSH)
HOOK(h_rop_rsp, H_ROP_RSP)
HOOK(h_push, H_PUSH)

static int t_init(struct mp_module_ctx *mc)
{
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++)
        if (scripts[i].name && !strcmp(scripts[i].name, mp_module_name(mc)))
            mp_module_set_private(mc, &scripts[i]);
    return mp_module_private(mc) ? 0 : -1;
}

static void t_unbind(struct mp_module_ctx *mc, struct mp_session *s, void *data)
{
    (void)mc;
    (void)s;
    if (data && *(int *)data == 7)
        unbinds++;
}

static const struct mp_module_want nsp_all[] = {{"exchange_nsp", MP_ALL_OPS}, {NULL, 0}};

static const struct mp_module t_a = {
    MP_MODULE_HEADER,       .name = "t_a",      .wants = nsp_all,       .init = t_init,
    .ndr_pull = h_ndr_pull, .pull = h_pull,     .dispatch = h_dispatch, .ndr_push = h_ndr_push,
    .push = h_push,         .unbind = t_unbind,
};
static const struct mp_module t_b = {
    MP_MODULE_HEADER,       .name = "t_b",      .wants = nsp_all,       .init = t_init,
    .ndr_pull = h_ndr_pull, .pull = h_pull,     .dispatch = h_dispatch, .ndr_push = h_ndr_push,
    .push = h_push,         .unbind = t_unbind,
};
/* ROP hooks only: wants nothing itself; the ROP stage adds its calls */
static const struct mp_module t_r = {
    MP_MODULE_HEADER,          .name = "t_r", .init = t_init, .rop_request = h_rop_req,
    .rop_response = h_rop_rsp,
};
/* RFR calls: reads the raw request when asked to, changes the decoded one
 * when asked to */
static bool d_read_raw, d_change;
static size_t d_raw_len;
static enum mp_status d_ndr_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    (void)mc;
    if (d_read_raw)
        mp_call_request_stub(call, &d_raw_len);
    return MP_CONTINUE;
}
static enum mp_status d_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    (void)mc;
    struct rfr_RfrGetFQDNFromServerDN_in *in = mp_call_request(call);
    note("d.pull(%s) ", in ? in->szMailboxServerDN : "-");
    if (in && d_change) {
        in->ulFlags = 1;
        mp_call_request_changed(call);
    }
    return MP_CONTINUE;
}
static const struct mp_module_want rfr_all[] = {{"exchange_ds_rfr", MP_ALL_OPS}, {NULL, 0}};
static const struct mp_module t_d = {
    MP_MODULE_HEADER, .name = "t_d", .wants = rfr_all, .ndr_pull = d_ndr_pull, .pull = d_pull,
};
static const struct mp_module *const linked[] = {&t_a, &t_b, &t_r, &t_d, NULL};

/* ---- the host: a transport with no socket ---- */

static struct mp_call *upstream; /* the call whose request went upstream */
static int connection;           /* what the call's owner points at */
static int relays;

static void host_relay(struct mp_call *m)
{
    note("relay ");
    relays++;
    upstream = m;
}
static void host_answer(struct mp_call *m)
{
    size_t n;
    const uint8_t *p = mp_call_response_stub(m, &n);
    note("answer(%.*s) ", (int)n, (const char *)p);
}
static void host_fault(struct mp_call *m)
{
    note("fault:%x ", m->fault);
}
static void host_done(struct mp_call *m)
{
    note("done");
    mp_call_free(m);
}
static const struct mp_call_host host = {host_relay, host_answer, host_fault, host_done,
                                         .decoded_form = false};

struct tctx {
    uint32_t call_id;
    uint8_t pad[20];
};

static struct mp_call *new_call(struct mp_modules *ms, struct mp_session *s, const char *iface,
                                uint16_t opnum)
{
    struct mp_iface_spec spec;
    if (mp_iface_parse(iface, &spec))
        return NULL;
    uint32_t mask = mp_modules_want(ms, spec.uuid, opnum);
    if (!mask)
        return NULL;
    struct mp_call_origin o = {
        .host = &host,
        .owner = &connection, /* the connection is there */
        .session = s,
        .iface_uuid = spec.uuid,
        .iface = iface,
        .opnum = opnum,
        .peer = "192.0.2.1:5000",
        .ctx_size = sizeof(struct tctx),
    };
    struct mp_call *m = mp_call_new(ms, mask, &o);
    if (m)
        mp_buf_append(&m->req, "REQ", 3);
    return m;
}

/* The upstream answers whatever went up, until nothing does. */
static void upstream_answers(void)
{
    while (upstream) {
        struct mp_call *m = upstream;
        upstream = NULL;
        mp_call_set_response_stub(m, (const uint8_t *)"RESP", 4);
        mp_call_run_response(m);
    }
}

static void reset(void)
{
    trail[0] = 0;
    relays = 0;
    parked = NULL;
    upstream = NULL;
    static const char *const names[] = {"t_a", "t_b", "t_r"};
    for (size_t i = 0; i < 3; i++) {
        memset(&scripts[i], 0, sizeof(scripts[i]));
        scripts[i].name = names[i];
        scripts[i].pend_at = -1;
    }
}

static int load(struct mp_modules *ms, struct mp_config *cfg, const char *list)
{
    char text[256];
    snprintf(text, sizeof text,
             "dcerpc_mapiproxy:binding = ncacn_ip_tcp:192.0.2.9\n"
             "dcerpc_mapiproxy:modules = %s\n",
             list);
    struct mp_diag diag = {0};
    if (mp_config_load_text(cfg, "test.conf", text, &diag)) {
        mp_diag_free(&diag);
        return -2;
    }
    mp_diag_free(&diag);
    return mp_modules_load_with(ms, cfg, NULL, linked);
}

/* One call through t_a, t_b: request, relay, response. */
static void run_one(struct mp_modules *ms)
{
    struct mp_call *m = new_call(ms, NULL, "exchange_nsp", 9);
    CHECK(m != NULL);
    if (!m)
        return;
    mp_call_run_request(m);
    upstream_answers();
}

static void test_load(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_b"), 0);
    CHECK_EQ(ms.n, 2u);
    struct mp_iface_spec nsp, emsmdb;
    CHECK_EQ(mp_iface_parse("exchange_nsp", &nsp), 0);
    CHECK_EQ(mp_iface_parse("exchange_emsmdb", &emsmdb), 0);
    CHECK_EQ(mp_modules_want(&ms, nsp.uuid, 9), 3u);
    CHECK_EQ(mp_modules_want(&ms, nsp.uuid, 0), 3u);
    CHECK_EQ(mp_modules_want(&ms, emsmdb.uuid, 11), 0u); /* the fast path */
    mp_modules_unload(&ms);
    mp_config_free(&cfg);

    /* unknown names are refused, and nothing stays loaded */
    CHECK_EQ(load(&ms, &cfg, "t_a, no_such_module"), -1);
    CHECK_EQ(ms.n, 0u);
    mp_config_free(&cfg);
}

static void test_order(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_b"), 0);

    reset();
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push a.ndr_push b.push a.push answer(RESP) done"));

    /* the transport's context: zeroed, its own */
    reset();
    struct mp_call *m = new_call(&ms, NULL, "exchange_nsp", 9);
    struct tctx *t = mp_call_ctx(m);
    CHECK(t != NULL && t->call_id == 0 && t->pad[19] == 0);
    CHECK(!strcmp(mp_call_iface(m), "exchange_nsp"));
    CHECK_EQ(mp_call_opnum(m), 9);
    CHECK(!strcmp(mp_call_peer(m), "192.0.2.1:5000"));
    CHECK(mp_call_user(m) == NULL);
    mp_call_free(m);

    /* STOP in dispatch: not relayed; the response hooks run from the module
     * that answered down to the first */
    reset();
    scripts[1].ret[H_DISPATCH] = MP_STOP;
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch "
                         "b.ndr_push a.ndr_push b.push a.push answer(ANSWER) done"));
    CHECK_EQ(relays, 0);
    reset();
    scripts[0].ret[H_DISPATCH] = MP_STOP;
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch "
                         "a.ndr_push a.push answer(ANSWER) done"));

    /* ERROR: a fault with the module's status, nothing more runs */
    reset();
    scripts[0].ret[H_PULL] = MP_ERROR;
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull fault:5 done"));
    CHECK_EQ(relays, 0);

    /* an unknown status is an error too */
    reset();
    scripts[1].ret[H_NDR_PUSH] = (enum mp_status)42;
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push fault:6be done"));

    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

static void test_pending(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_b"), 0);

    /* request side: the chain stops at the pending hook, then goes on from
     * the next module with the status the module resumes with */
    reset();
    scripts[1].pend_at = H_PULL;
    struct mp_call *m = new_call(&ms, NULL, "exchange_nsp", 9);
    mp_call_run_request(m);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull "));
    CHECK(parked == m && m->pending && !m->running);
    mp_call_resume(m, MP_CONTINUE);
    mp_call_resume(m, MP_CONTINUE); /* a second resume is ignored */
    upstream_answers();
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push a.ndr_push b.push a.push answer(RESP) done"));

    /* response side, resumed with STOP (nothing to stop: goes on) */
    reset();
    scripts[0].pend_at = H_NDR_PUSH;
    m = new_call(&ms, NULL, "exchange_nsp", 9);
    mp_call_run_request(m);
    upstream_answers();
    CHECK(parked == m);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push a.ndr_push "));
    mp_call_resume(m, MP_STOP);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push a.ndr_push b.push a.push answer(RESP) done"));

    /* resumed with ERROR: a fault */
    reset();
    scripts[0].pend_at = H_DISPATCH;
    m = new_call(&ms, NULL, "exchange_nsp", 9);
    mp_call_run_request(m);
    mp_call_fault(m, 0x1c010003);
    mp_call_resume(m, MP_ERROR);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch fault:1c010003 done"));

    /* the client went away while the call was parked: freed quietly */
    reset();
    scripts[0].pend_at = H_PULL;
    m = new_call(&ms, NULL, "exchange_nsp", 9);
    mp_call_run_request(m);
    m->owner = NULL; /* what a transport does when the connection closes */
    mp_call_resume(m, MP_CONTINUE);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull done"));
    CHECK_EQ(relays, 0);

    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

static void test_relay_again(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_b"), 0);

    /* the first module's push sends the request up once more */
    reset();
    scripts[0].relay_again_once = true;
    run_one(&ms);
    CHECK(!strcmp(trail, "a.ndr_pull b.ndr_pull a.pull b.pull a.dispatch b.dispatch relay "
                         "b.ndr_push a.ndr_push b.push a.push relay "
                         "b.ndr_push a.ndr_push b.push a.push answer(RESP) done"));
    CHECK_EQ(relays, 2);

    /* at most four times */
    reset();
    scripts[1].relay_again_always = true;
    run_one(&ms);
    CHECK_EQ(relays, 4);
    CHECK(strstr(trail, "answer(RESP) done") != NULL);

    /* after a STOP there is nothing to relay again */
    reset();
    scripts[1].ret[H_DISPATCH] = MP_STOP;
    scripts[0].relay_again_always = true;
    run_one(&ms);
    CHECK_EQ(relays, 0);
    CHECK(strstr(trail, "answer(ANSWER) done") != NULL);

    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

static void test_rop_stage(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_r"), 0);
    CHECK_EQ(ms.n_stages, 1u);
    CHECK(!strcmp(ms.stages[0].p->name, "ROP"));
    CHECK_EQ(ms.stages[0].modmask, 2u); /* t_r only */
    struct mp_iface_spec emsmdb;
    CHECK_EQ(mp_iface_parse("exchange_emsmdb", &emsmdb), 0);
    /* the stage's operations: EcDoDisconnect, EcDoRpc, EcDoRpcExt2 */
    CHECK_EQ(mp_modules_want(&ms, emsmdb.uuid, 1), 2u);
    CHECK_EQ(mp_modules_want(&ms, emsmdb.uuid, 2), 2u);
    CHECK_EQ(mp_modules_want(&ms, emsmdb.uuid, 11), 2u);
    /* EcDoConnectEx: no module's hooks, only the loader's capture of the
     * client's version (chain.h MP_IDENT_BIT) */
    CHECK_EQ(mp_modules_want(&ms, emsmdb.uuid, 10), 1u << MP_IDENT_BIT);

    /* the constructor marks the calls the stage takes part in */
    struct mp_call *m = new_call(&ms, NULL, "exchange_emsmdb", 11);
    CHECK(m && m->stages == 1u);
    mp_call_free(m);
    m = new_call(&ms, NULL, "exchange_nsp", 9);
    CHECK(m && m->stages == 0u);
    mp_call_free(m);

    /* an EcDoRpcExt2 whose stub does not decode has no ROPs: the ROP hooks
     * do not run, and the request goes up untouched */
    reset();
    m = new_call(&ms, NULL, "exchange_emsmdb", 11);
    mp_call_run_request(m);
    CHECK(!strcmp(trail, "relay "));
    size_t n = 0;
    const uint8_t *req = upstream ? mp_call_request_stub(upstream, &n) : NULL;
    CHECK(n == 3 && req && !memcmp(req, "REQ", 3));
    upstream_answers();
    CHECK(!strcmp(trail, "relay answer(RESP) done"));

    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

/* A transport that gives the decoded form (MAPI/HTTP): no NDR is made
 * unless a raw hook asks, and the transport learns whether a module
 * changed the request. */
static struct mp_call *sent;
static void dhost_relay(struct mp_call *m)
{
    sent = m;
    note("relay(%s) ", m->req_modified ? "modified" : "as received");
}
static const struct mp_call_host dhost = {dhost_relay, host_answer, host_fault, host_done,
                                          .decoded_form = true};

static void test_decoded_form(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_d"), 0);
    struct mp_iface_spec rfr;
    CHECK_EQ(mp_iface_parse("exchange_ds_rfr", &rfr), 0);
    static char dn[] = "/o=First Organization/ou=x/cn=Servers/cn=ex1";
    for (int round = 0; round < 3; round++) {
        reset();
        sent = NULL;
        d_read_raw = round == 1;
        d_change = round == 2;
        d_raw_len = 0;
        struct rfr_RfrGetFQDNFromServerDN_in in = {
            .ulFlags = 0, .cbMailboxServerDN = sizeof(dn), .szMailboxServerDN = dn};
        struct mp_call_origin o = {.host = &dhost,
                                   .owner = &connection,
                                   .iface_uuid = rfr.uuid,
                                   .iface = "exchange_ds_rfr",
                                   .opnum = 1,
                                   .peer = "192.0.2.1:443"};
        struct mp_call *m = mp_call_new(&ms, mp_modules_want(&ms, rfr.uuid, 1), &o);
        mp_call_set_decoded(m, false, &in);
        mp_call_run_request(m);
        CHECK(sent == m);
        CHECK(mp_call_request(m) == &in); /* the transport's structure itself */
        if (round == 0) {
            CHECK(!strcmp(trail, "d.pull(/o=First Organization/ou=x/cn=Servers/cn=ex1) "
                                 "relay(as received) "));
            CHECK(m->req.data == NULL); /* no NDR pass at all */
        } else if (round == 1) {
            CHECK(d_raw_len > sizeof(dn)); /* NDR made for the raw hook */
            CHECK(!m->req_modified);
        } else {
            CHECK(strstr(trail, "relay(modified)") != NULL);
            CHECK(m->req.data == NULL); /* the transport writes from the decoded form */
            size_t n;
            CHECK(mp_call_request_stub(m, &n) != NULL && n > sizeof(dn)); /* on demand */
        }
        m->owner = NULL;
        mp_call_free(m);
    }
    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

static void test_session(void)
{
    struct mp_config cfg;
    struct mp_modules ms;
    CHECK_EQ(load(&ms, &cfg, "t_a, t_b"), 0);
    reset();
    unbinds = dtors = 0;
    scripts[1].keep_session_data = true;
    struct mp_session *s = mp_session_new(&ms);
    s->id = 77;
    struct mp_call *m = new_call(&ms, s, "exchange_nsp", 9);
    CHECK(mp_call_session(m) == s && mp_session_id(s) == 77);
    mp_call_run_request(m);
    upstream_answers();
    CHECK_EQ(s->refs, 1u); /* the call's reference went with it */
    CHECK(mp_session_data(s, &ms.mods[1]) != NULL);
    CHECK(mp_session_data(s, &ms.mods[0]) == NULL);
    mp_session_unref(s);
    CHECK_EQ(unbinds, 1);
    CHECK_EQ(dtors, 1);
    mp_modules_unload(&ms);
    mp_config_free(&cfg);
}

int main(void)
{
    mp_log_threshold =
        getenv("TEST_LOG") ? MP_LOG_DEBUG : MP_LOG_ERROR - 1; /* quiet: the refusals are expected */
    reset();
    test_load();
    test_order();
    test_pending();
    test_relay_again();
    test_rop_stage();
    test_session();
    test_decoded_form();
    TEST_DONE();
}
