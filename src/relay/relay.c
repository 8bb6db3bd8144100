/* The relay engine.
 *
 * Each client connection is an association (struct assoc) that owns up to
 * three connections: the client's, the upstream's, and, while the upstream
 * port is being looked up, one to the upstream's endpoint mapper.  All I/O is
 * non-blocking on one epoll loop.  Request and response fragments are
 * streamed: a fragment is forwarded as soon as it is complete, split when it
 * exceeds what the other leg negotiated, so no call is ever buffered whole.
 * Reading from a side stops while the other side's output buffer is above
 * `mapiproxy:max buffer`, so a peer that does not read holds back only its
 * own association.
 *
 * Associations whose client authenticates (an auth verifier in bind or
 * alter_context) are relayed byte for byte: call ids, context ids and
 * fragment sizes stay as the client sent them, because signatures and the
 * verification trailer cover them (transparent mode, MS-RPCE 2.2.2.13). */
#include "relay/relay.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "dcerpc/ifaces.h"
#include "dcerpc/pdu.h"
#include "auth/credstore.h"
#include "auth/groups.h"
#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "auth/ntlmssp.h"
#include "auth/winbind.h"
#include "auth/spnego.h"
#include "epm/epm.h"
#include "net/accept.h"
#include "modules/runtime.h"
#include "ops/metrics.h"

#define MP_MAX_FRAG 5840     /* largest fragment we negotiate on either leg */
#define MP_MIN_FRAG 1432     /* smallest allowed by C706 */
#define MAX_CTX 64           /* presentation contexts per association */
#define MAX_PENDING 128      /* calls in flight per association */
#define MAX_LOCAL_STUB 65536 /* reassembly limit for calls the proxy answers itself */
#define PORT_CACHE_TTL_MS 60000
#define READ_CHUNK 65536
#define N_GROUP_BUCKETS 1024
#define MAX_CSEC 4 /* client security contexts per connection (terminated) */

enum role { ROLE_CLIENT, ROLE_UPSTREAM, ROLE_RESOLVER };
enum astate {
    A_WAIT_BIND,  /* client connected, no bind yet */
    A_RESOLVING,  /* asking the upstream's endpoint mapper for the port */
    A_CONNECTING, /* connecting to the upstream */
    A_WAIT_ACK,   /* upstream bind sent, waiting for bind_ack */
    A_OPEN,       /* relaying */
    A_LOCAL,      /* no context could be relayed: answering locally */
    A_AUTH,       /* proxy-terminated auth: bind answered, waiting for AUTH3 */
    A_DENIED,     /* the client failed authentication: its calls get access denied */
    A_KDC,        /* authenticated; the KDC worker prepares the upstream's Kerberos leg */
    A_WINBIND,    /* the worker asks winbindd to check the client's NTLM response */
};

/* client_auth_next: the NTLM response went to winbind (the worker). */
#define AUTH_PENDING 2

/* One leg's security context when the proxy terminates authentication:
 * the acceptor on the client leg, the initiator on the upstream leg.
 * Either NTLM (acc/ini/sess; auth type 10, or 9 with NTLM inside SPNEGO)
 * or Kerberos through gss.c (auth type 16, or 9 with Kerberos first). */
struct leg_sec {
    uint8_t type, level;
    uint32_t ctx_id;
    bool header_sign;
    bool acc_init, ini_init, sess_init;
    bool done;          /* client leg: established and its identity checked */
    bool spnego_ntlm;   /* auth type 9 carrying NTLM: tokens in NegTokenResp */
    bool ntlm_switched; /* SPNEGO: Kerberos was first, the proxy asked for NTLM */
    uint8_t *mech_list; /* SPNEGO/NTLM: the client's MechTypeList, for mechListMIC */
    size_t mech_list_len;
    struct mp_ntlm_acceptor acc;
    struct mp_ntlm_initiator ini;
    struct mp_ntlm_session sess;
    struct mp_gss_ctx *gss;   /* Kerberos context, when the leg uses Kerberos */
    struct mp_gss_cred *cred; /* owned: the credential gss initiates with (S4U) */
    size_t vlen;              /* verifier length for a full fragment (room in emit) */
    char user[160];           /* DOMAIN\user or user@REALM, for logs and policy */
    char who[160];            /* what the logs say */
    /* mapiproxy:ntlm backend = winbind: the domain's answer, once back */
    bool wb_done;
    int wb_rc;
    uint8_t wb_key[16]; /* NTLMv2 session base key from the DC */
    char *wb_groups;    /* "DOMAIN\group\n" lines */
    char wb_why[400];
    char wb_account[256], wb_domain[256];
    struct mp_wb_logon *wb_pending; /* prepared by client_auth_next, queued by its caller */
};

struct conn {
    struct mp_io io;
    struct mp_buf in, out;
    struct assoc *a;
    uint8_t role;
    uint16_t port; /* upstream and resolver: the port connected to (for log lines) */
    bool connecting;
    bool closing;     /* close once out is flushed */
    bool in_borrowed; /* in points into the relay's read buffer */
};

struct call {
    uint32_t c_id, u_id;
    uint16_t ctx_id, opnum;
    uint64_t t0;
    uint32_t in_bytes, out_bytes, frags;
    bool req_done;
    struct leg_sec *sec; /* terminated: the client security context the call came on */
    struct mp_call *m;   /* set when modules want this call (slow path) */
};

struct pctx_entry {
    uint16_t ctx_id;
    bool abstract_known;
    uint8_t uuid[16];
    const struct mp_iface_info *info;
    char name[48];
};

/* How the client's bind or alter_context contexts were split between local
 * answers and the upstream, so the upstream's answer can be merged back. */
struct merge {
    struct merge *next;
    uint8_t ptype;
    uint32_t c_call_id;
    uint8_t n;
    struct {
        bool fwd;
        uint16_t result, reason, ctx_id;
        struct mp_syntax abstract;
    } item[MAX_CTX];
};

struct port_cache {
    struct mp_syntax iface;
    uint16_t port;
    uint64_t expires;
};

/* Connections per client address (mapiproxy:max connections per address). */
#define N_ADDR_BUCKETS 4096
struct addr_count {
    struct addr_count *next;
    uint8_t ip[16]; /* IPv4 as ::ffff:a.b.c.d */
    uint32_t n;
};

struct listener {
    struct mp_io io;
    struct mp_relay *r;
    bool epm;
};

struct assoc {
    struct mp_relay *r;
    struct conn c, u, res;
    enum astate state;
    bool local_epm;
    bool passthrough;
    bool dead;
    uint16_t c_xmit, c_recv; /* fragment limits on the client leg (we send / we accept) */
    uint16_t u_xmit, u_recv; /* and on the upstream leg */
    uint16_t bind_max_xmit, bind_max_recv;
    struct mp_session *group;
    uint32_t shown_group; /* the group id the client was told */
    uint32_t named_group; /* terminated: the group its bind named, joined once authenticated */
    struct pctx_entry *ctx;
    size_t n_ctx;
    struct call *calls;
    size_t n_calls, cap_calls;
    uint32_t next_u_call;
    struct merge *merges, **merges_tail;
    struct mp_buf pending_bind; /* the upstream bind, while resolving/connecting */
    struct mp_syntax target;
    struct mp_timer timer;                 /* connect and bind timeout */
    struct mp_timer idle;                  /* mapiproxy:idle timeout */
    struct mp_timer bindt;                 /* mapiproxy:bind timeout */
    struct addr_count *addr;               /* its client address's connection count */
    struct mp_timer stall;                 /* mapiproxy:send timeout */
    uint64_t last_io_ms;                   /* last byte read or written, either side */
    uint64_t c_progress_ms, u_progress_ms; /* last write progress per side */
    struct mp_buf reasm;                   /* local answers: the request being reassembled */
    uint32_t reasm_call;
    uint16_t reasm_ctx, reasm_op;
    bool reasm_active;
    uint32_t local_ip;                /* the address the client reached, network order */
    struct leg_sec *csec, *usec;      /* set when the proxy terminates authentication */
    struct leg_sec *cx[MAX_CSEC - 1]; /* further client security contexts (alter_context) */
    size_t n_cx;
    struct mp_bind *up_fwd; /* terminated: the upstream bind's contexts, until sent */
    struct kdc_job *job;    /* queued for the KDC worker (A_KDC) */
    uint64_t n_done;
    uint64_t t_open;
    char peer[64];
    struct assoc *next, *prev;
};

struct mp_relay {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    struct listener ls[2 * MP_MAX_LISTEN];
    size_t n_ls;
    uint16_t rpc_port, epm_port;
    struct mp_epm_registry reg;
    struct sockaddr_storage up_addr;
    socklen_t up_addr_len;
    struct port_cache cache[MP_MAX_IFACES];
    size_t n_cache;
    struct mp_session *groups[N_GROUP_BUCKETS];
    struct mp_modules mods;
    struct assoc *assocs;
    size_t n_assoc;
    struct addr_count *addrs[N_ADDR_BUCKETS];
    uint8_t rbuf[READ_CHUNK]; /* reads land here; only partial PDUs are kept per conn */
    bool more_input;          /* more bytes follow the PDU being handled: batch the writes */
    /* specified credentials: clients authenticate to the proxy (NTLM), the
     * proxy to the upstream with dcerpc_mapiproxy:username/password */
    bool terminate;
    struct mp_credstore creds;
    struct mp_ntlm_acceptor_cfg acc_cfg;
    char up_password[256];
    uint8_t up_level;
    char fqdn[256];
    /* Kerberos: the proxy's acceptor (or service credential, for S4U) and,
     * for specified credentials over Kerberos, its initiator credential */
    struct mp_gss_cred *acc_cred, *up_cred;
    /* The KDC worker: one thread that makes the upstream's Kerberos leg
     * (S4U2Self, S4U2Proxy, service tickets) so the loop never waits for a
     * KDC.  svc_cred, up_cred and retired are its own once it runs. */
    struct mp_gss_cred *svc_cred;
    uint64_t svc_born_ms;
    struct mp_gss_cred *retired[8]; /* replaced service credentials, freed at exit */
    size_t n_retired;
    pthread_t kdc_thread;
    bool kdc_started, kdc_stop;
    pthread_mutex_t kdc_mu;
    pthread_cond_t kdc_cv;
    struct kdc_job *kdc_q, **kdc_q_tail, *kdc_done, **kdc_done_tail;
    struct mp_io kdc_io; /* eventfd: jobs done */
    enum { UP_NTLM, UP_KRB, UP_S4U } up_mode;
    char realm_uc[256]; /* NTLM users are impersonated as user@REALM_UC */
    struct mp_iface_spec pt_ifaces[MP_MAX_IFACES]; /* mapiproxy:pass-through interfaces */
    size_t n_pt;
    bool ntlm_on;             /* NTLM clients: a credentials file or winbind */
    bool winbind;             /* mapiproxy:ntlm backend = winbind */
    uint8_t min_level;        /* mapiproxy:min client auth level */
    bool min_level_set;       /* ... given explicitly: binds relayed as they are obey it too */
    struct mp_groups ugroups; /* mapiproxy:groups file */
};

/* Work for the KDC worker thread.  The loop thread owns a and reads the
 * results once the job is back on the done list; the worker owns the rest
 * while the job is queued or running. */
struct kdc_job {
    struct kdc_job *next;
    struct assoc *a;        /* NULL once the association is gone */
    struct mp_wb_logon *wb; /* set: a winbind logon check, not Kerberos */
    struct mp_buf pdu;      /* winbind: the client's AUTH3/alter_context, handled again after */
    char user[420];         /* S4U: whom to impersonate */
    struct mp_gss_cred *cred;
    struct mp_gss_ctx *ctx;
    struct mp_buf tok;
    char why[600];
    char note[400]; /* for the log, written by the loop thread */
    int rc;
};

static struct mp_bind scratch_bind; /* single-threaded: one bind parsed at a time */
static struct mp_bind_ack scratch_ack;

static void conn_cb(struct mp_io *io, uint32_t ev);
static void addr_release(struct mp_relay *r, struct addr_count *e);
static void client_input(struct assoc *a);
static void client_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
static void upstream_connect(struct assoc *a, uint16_t port);
static void upstream_failed(struct assoc *a, const char *why);
static void update_interest(struct assoc *a);
static void start_upstream(struct assoc *a);
static bool bind_is_passthrough(const struct mp_relay *r, const struct mp_bind *b);
static bool iface_is_pt(const struct mp_relay *r, const struct mp_syntax *s);
static int bind_pt_kind(const struct mp_relay *r, const struct mp_bind *b);
struct leg_sec;
static int emit(struct conn *dst, struct leg_sec *sec, bool req, uint8_t in_flags, uint32_t call_id,
                uint16_t ctx_id, uint16_t opnum, const uint8_t *object, const uint8_t *stub,
                size_t len, uint32_t hint, size_t max_frag);
static void handle_bind_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                                  const struct mp_bind *b);
static void deny_bind(struct assoc *a, const struct mp_bind *b, uint32_t call_id);
static const char *const level_names[];
static void call_detach(struct call *c);
static int alter_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                          struct mp_auth *reply, struct mp_buf *tok);
static void auth3_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
static struct leg_sec *client_sec_by_id(struct assoc *a, uint32_t id);

/* ------------------------------------------------------------------ */
/* association lifetime                                                */

static void group_unlink(struct mp_session *g)
{
    struct mp_relay *r = g->owner;
    struct mp_session **pp = &r->groups[g->id % N_GROUP_BUCKETS];
    while (*pp && *pp != g)
        pp = &(*pp)->next;
    if (*pp)
        *pp = g->next;
}

static void group_unref(struct mp_relay *r, struct mp_session *g)
{
    (void)r;
    mp_session_unref(g);
}

static struct mp_session *group_find(struct mp_relay *r, uint32_t id)
{
    for (struct mp_session *g = r->groups[id % N_GROUP_BUCKETS]; g; g = g->next)
        if (g->id == id)
            return g;
    return NULL;
}

/* An association group id no group has: from the CSPRNG, so ids say
 * nothing about each other (issue 11: sequential ids could be guessed). */
static uint32_t group_fresh_id(struct mp_relay *r)
{
    uint32_t id = 0;
    while (!id || group_find(r, id)) {
        if (getrandom(&id, sizeof(id), 0) != sizeof(id) &&
            mp_ntlm_random((uint8_t *)&id, sizeof(id))) {
            mp_error("no random bytes for an association group id");
            abort(); /* never fall back to guessable ids */
        }
    }
    return id;
}

/* A new association group owned by ident, the session modules keep their
 * data in.  Its id is want when that is free, else a fresh one. */
static struct mp_session *group_new(struct mp_relay *r, const char *ident, uint32_t want)
{
    struct mp_session *g = mp_session_new(&r->mods);
    if (!g)
        return NULL;
    g->id = want && !group_find(r, want) ? want : group_fresh_id(r);
    snprintf(g->ident, sizeof(g->ident), "%s", ident);
    g->owner = r;
    g->on_free = group_unlink;
    g->next = r->groups[g->id % N_GROUP_BUCKETS];
    r->groups[g->id % N_GROUP_BUCKETS] = g;
    return g;
}

static struct addr_count **addr_slot(struct mp_relay *r, const uint8_t ip[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ ip[i]) * 16777619u;
    struct addr_count **pp = &r->addrs[h % N_ADDR_BUCKETS];
    while (*pp && memcmp((*pp)->ip, ip, 16))
        pp = &(*pp)->next;
    return pp;
}

/* Counts a new connection from ip: the entry, or NULL when the address has
 * max connections per address open already (or out of memory). */
static struct addr_count *addr_take(struct mp_relay *r, const uint8_t ip[16])
{
    struct addr_count **pp = addr_slot(r, ip);
    uint32_t max = r->cfg->max_conn_per_addr;
    if (*pp && max && (*pp)->n >= max)
        return NULL;
    if (!*pp) {
        struct addr_count *e = calloc(1, sizeof(*e));
        if (!e)
            return NULL;
        memcpy(e->ip, ip, 16);
        *pp = e;
    }
    (*pp)->n++;
    return *pp;
}

static void addr_release(struct mp_relay *r, struct addr_count *e)
{
    if (!e || --e->n)
        return;
    struct addr_count **pp = addr_slot(r, e->ip);
    *pp = e->next;
    free(e);
}

static void conn_release(struct mp_relay *r, struct conn *c)
{
    mp_io_close(r->loop, &c->io);
    if (c->in_borrowed)
        c->in = (struct mp_buf){0};
    mp_buf_free(&c->in);
    mp_buf_free(&c->out);
    c->connecting = c->closing = false;
}

static void leg_free(struct leg_sec *l)
{
    if (!l)
        return;
    if (l->acc_init)
        mp_ntlm_acceptor_free(&l->acc);
    if (l->ini_init)
        mp_ntlm_initiator_free(&l->ini);
    if (l->sess_init)
        mp_ntlm_session_free(&l->sess);
    free(l->mech_list);
    free(l->wb_groups);
    mp_ntlm_cleanse(l->wb_key, sizeof(l->wb_key));
    if (l->wb_pending) {
        mp_wb_logon_free(l->wb_pending);
        free(l->wb_pending);
    }
    mp_gss_ctx_free(l->gss); /* before the credential it was made from */
    mp_gss_cred_free(l->cred);
    free(l);
}

static void assoc_free(void *p)
{
    struct assoc *a = p;
    leg_free(a->csec);
    leg_free(a->usec);
    for (size_t i = 0; i < a->n_cx; i++)
        leg_free(a->cx[i]);
    free(a->up_fwd);
    struct merge *m = a->merges;
    while (m) {
        struct merge *n = m->next;
        free(m);
        m = n;
    }
    free(a->ctx);
    free(a->calls);
    mp_buf_free(&a->pending_bind);
    mp_buf_free(&a->reasm);
    free(a);
}

static void assoc_close(struct assoc *a, const char *reason)
{
    if (a->dead)
        return;
    struct mp_relay *r = a->r;
    a->dead = true;
    if (a->job) {
        a->job->a = NULL; /* the worker's result is dropped when it comes back */
        a->job = NULL;
    }
    mp_info("conn close %s calls=%llu in_flight=%zu after=%.1fs reason=%s", a->peer,
            (unsigned long long)a->n_done, a->n_calls, (double)(mp_now_ms() - a->t_open) / 1000.0,
            reason);
    mp_metrics_open(a->local_epm ? "epmapper" : "rpc", -1);
    for (size_t i = 0; i < a->n_calls; i++)
        call_detach(&a->calls[i]);
    mp_timer_cancel(r->loop, &a->timer);
    mp_timer_cancel(r->loop, &a->idle);
    mp_timer_cancel(r->loop, &a->bindt);
    mp_timer_cancel(r->loop, &a->stall);
    addr_release(r, a->addr);
    a->addr = NULL;
    conn_release(r, &a->c);
    conn_release(r, &a->u);
    conn_release(r, &a->res);
    group_unref(r, a->group);
    a->group = NULL;
    if (a->prev)
        a->prev->next = a->next;
    else
        r->assocs = a->next;
    if (a->next)
        a->next->prev = a->prev;
    r->n_assoc--;
    mp_loop_defer(r->loop, assoc_free, a);
}

/* Sends what is queued to the client, then closes everything. */
static void assoc_finish(struct assoc *a, const char *reason)
{
    if (a->dead)
        return;
    conn_release(a->r, &a->u);
    conn_release(a->r, &a->res);
    if (!mp_buf_avail(&a->c.out) || a->c.io.fd < 0) {
        assoc_close(a, reason);
        return;
    }
    a->c.closing = true;
    mp_debug("conn %s: closing after flush (%s)", a->peer, reason);
    update_interest(a);
}

/* ------------------------------------------------------------------ */
/* output                                                              */

/* Writes what it can; returns -1 on a write error. */
static int conn_flush(struct conn *c)
{
    while (mp_buf_avail(&c->out)) {
        ssize_t n = send(c->io.fd, mp_buf_head(&c->out), mp_buf_avail(&c->out), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            return -1;
        }
        if (n > 0) { /* progress: the peer is reading */
            uint64_t now = mp_now_ms();
            c->a->last_io_ms = now;
            if (c->role == ROLE_CLIENT)
                c->a->c_progress_ms = now;
            else
                c->a->u_progress_ms = now;
        }
        mp_buf_consume(&c->out, (size_t)n);
    }
    mp_buf_trim(&c->out);
    return 0;
}

static void flush_side(struct assoc *a, struct conn *c)
{
    if (c->io.fd < 0 || c->connecting || a->dead)
        return;
    if (conn_flush(c) < 0) {
        if (c->role == ROLE_CLIENT)
            assoc_close(a, "client write failed");
        else if (c->role == ROLE_UPSTREAM)
            upstream_failed(a, "write to upstream failed");
        else
            upstream_failed(a, "write to upstream endpoint mapper failed");
        return;
    }
    if (c->role == ROLE_CLIENT && c->closing && !mp_buf_avail(&c->out))
        assoc_close(a, "closed after final answer");
}

static void update_interest(struct assoc *a)
{
    if (a->dead)
        return;
    struct mp_relay *r = a->r;
    size_t high = r->cfg->max_buffer;
    if ((mp_buf_avail(&a->c.out) >= high || mp_buf_avail(&a->u.out) >= high) && !a->stall.heap_idx)
        mp_timer_arm(r->loop, &a->stall, (uint64_t)r->cfg->send_timeout_s * 1000);
    if (a->c.io.fd >= 0) {
        bool rd = !a->c.closing &&
                  (a->state == A_WAIT_BIND || a->state == A_OPEN || a->state == A_LOCAL ||
                   a->state == A_AUTH || a->state == A_DENIED) &&
                  mp_buf_avail(&a->c.out) < high && mp_buf_avail(&a->u.out) < high &&
                  a->n_calls < MAX_PENDING;
        uint32_t want = (rd ? MP_READ : 0) | (mp_buf_avail(&a->c.out) ? MP_WRITE : 0);
        if (!want)
            want = 0x2000; /* EPOLLRDHUP alone: keep the fd registered, learn of hang-ups */
        mp_io_set(r->loop, &a->c.io, want);
    }
    struct conn *us[2] = {&a->u, &a->res};
    for (int i = 0; i < 2; i++) {
        struct conn *c = us[i];
        if (c->io.fd < 0)
            continue;
        uint32_t want;
        if (c->connecting)
            want = MP_WRITE;
        else
            want = (mp_buf_avail(&a->c.out) < high ? MP_READ : 0) |
                   (mp_buf_avail(&c->out) ? MP_WRITE : 0);
        if (!want)
            want = 0x2000;
        mp_io_set(r->loop, &c->io, want);
    }
}

/* ------------------------------------------------------------------ */
/* calls                                                               */

static struct call *call_by_c(struct assoc *a, uint32_t id)
{
    for (size_t i = 0; i < a->n_calls; i++)
        if (a->calls[i].c_id == id)
            return &a->calls[i];
    return NULL;
}

static struct call *call_by_u(struct assoc *a, uint32_t id)
{
    for (size_t i = 0; i < a->n_calls; i++)
        if (a->calls[i].u_id == id)
            return &a->calls[i];
    return NULL;
}

/* Lets go of a call's module state: a call parked in a module (MP_PENDING)
 * is freed when the module resumes it; any other is freed now. */
static void call_detach(struct call *c)
{
    struct mp_call *m = c->m;
    if (!m)
        return;
    c->m = NULL;
    m->owner = NULL;
    if (!m->pending && !m->running) /* else the chain frees it when it ends */
        mp_call_free(m);
}

static void call_remove(struct assoc *a, struct call *c)
{
    call_detach(c);
    size_t i = (size_t)(c - a->calls);
    a->calls[i] = a->calls[--a->n_calls]; /* the array stays: no malloc per call */
}

static struct call *call_add(struct assoc *a)
{
    if (a->n_calls == a->cap_calls) {
        size_t cap = a->cap_calls ? a->cap_calls * 2 : 4;
        struct call *n = realloc(a->calls, cap * sizeof(*n));
        if (!n)
            return NULL;
        a->calls = n;
        a->cap_calls = cap;
    }
    struct call *c = &a->calls[a->n_calls++];
    memset(c, 0, sizeof(*c));
    return c;
}

static const struct pctx_entry *ctx_find(const struct assoc *a, uint16_t id)
{
    for (size_t i = 0; i < a->n_ctx; i++)
        if (a->ctx[i].ctx_id == id)
            return &a->ctx[i];
    return NULL;
}

static void ctx_add(struct assoc *a, uint16_t id, const struct mp_syntax *abstract)
{
    struct pctx_entry *e = (struct pctx_entry *)ctx_find(a, id);
    if (!e) {
        if (a->n_ctx >= MAX_CTX)
            return;
        struct pctx_entry *n = realloc(a->ctx, (a->n_ctx + 1) * sizeof(*n));
        if (!n)
            return;
        a->ctx = n;
        e = &a->ctx[a->n_ctx++];
    }
    e->ctx_id = id;
    e->abstract_known = true;
    memcpy(e->uuid, abstract->uuid, 16);
    e->info = mp_iface_by_uuid(abstract->uuid);
    if (e->info)
        snprintf(e->name, sizeof(e->name), "%s", e->info->name);
    else
        mp_uuid_format(abstract->uuid, e->name);
}

static void log_call(struct assoc *a, struct call *c, const char *status)
{
    const struct pctx_entry *e = ctx_find(a, c->ctx_id);
    const char *op = e ? mp_iface_op_name(e->info, c->opnum) : NULL;
    const char *user = a->csec && a->usec ? a->csec->who : NULL; /* terminated: who it is */
    mp_info("call %s %s %s(%u) in=%u out=%u lat=%.3fms status=%s%s%s", a->peer, e ? e->name : "?",
            op ? op : "op", c->opnum, c->in_bytes, c->out_bytes,
            (double)(mp_now_us() - c->t0) / 1000.0, status, user ? " user=" : "", user ? user : "");
    mp_metrics_call(e ? e->info : NULL, c->opnum, c->in_bytes, c->out_bytes, c->t0, status);
}

/* Queues bytes for a connection, writing them at once when nothing is
 * queued before them (most PDUs never touch a buffer). */
static int conn_send(struct conn *c, const uint8_t *p, size_t len)
{
    if (!mp_buf_avail(&c->out) && !c->connecting && c->io.fd >= 0 && !c->a->r->more_input) {
        ssize_t n = send(c->io.fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            c->a->last_io_ms = mp_now_ms();
            if (c->role == ROLE_CLIENT)
                c->a->c_progress_ms = c->a->last_io_ms;
            else
                c->a->u_progress_ms = c->a->last_io_ms;
            p += n;
            len -= (size_t)n;
        }
        /* errors other than EAGAIN show again at the next flush */
    }
    return len ? mp_buf_append(&c->out, p, len) : 0;
}

/* Copies one fragment into out, with a new call id, splitting it into
 * fragments of at most max_frag bytes when needed.  hdr_len is the
 * request/response header length (with an object UUID if any). */
static int forward_fragment(struct conn *dst, uint8_t *pdu, const struct mp_pdu_hdr *h,
                            uint32_t call_id, size_t max_frag)
{
    if (h->frag_len <= max_frag) {
        mp_put32(pdu + 12, call_id); /* in place: the input is consumed after this */
        return conn_send(dst, pdu, h->frag_len);
    }
    bool req = h->ptype == MP_PT_REQUEST;
    size_t hl = req ? MP_REQ_HDR_LEN : MP_RESP_HDR_LEN;
    const uint8_t *object = NULL;
    if (req && (h->flags & MP_PFC_OBJECT_UUID)) {
        object = pdu + MP_REQ_HDR_LEN;
        hl += 16;
    }
    if (h->frag_len < hl)
        return -1;
    /* for a response, emit's opnum argument carries the cancel count */
    return emit(dst, NULL, req, h->flags, call_id, mp_get16(pdu + 20),
                req ? mp_get16(pdu + 22) : pdu[22], object, pdu + hl, h->frag_len - hl,
                mp_get32(pdu + 16), max_frag);
}

/* Splits a whole response stub into fragments for the client. */
static int send_response_stub(struct assoc *a, struct leg_sec *sec, uint32_t call_id,
                              uint16_t ctx_id, const uint8_t *stub, size_t len)
{
    return emit(&a->c, sec, false, MP_PFC_FIRST | MP_PFC_LAST, call_id, ctx_id, 0, NULL, stub, len,
                (uint32_t)len, a->c_xmit);
}

/* ------------------------------------------------------------------ */
/* protocol errors                                                     */

static void client_protocol_error(struct assoc *a, uint32_t call_id, const char *what)
{
    mp_warn("conn %s: protocol error from client: %s; sending a fault and closing", a->peer, what);
    mp_build_fault(&a->c.out, call_id, 0, MP_NCA_PROTO_ERROR, true);
    assoc_finish(a, "client protocol error");
}

/* Answers every call in flight with a fault, then closes. */
static void upstream_failed(struct assoc *a, const char *why)
{
    if (a->dead)
        return;
    mp_warn("conn %s: upstream %s; %zu call(s) in flight get a fault", a->peer, why, a->n_calls);
    mp_metrics_upstream_error(why);
    if (a->state != A_OPEN && !a->csec) {
        uint32_t id = a->merges ? a->merges->c_call_id : 0;
        /* MS-RPCE 2.2.2.5: the server could not complete the request for
         * want of resources; Windows clients report RPC_S_SERVER_TOO_BUSY,
         * which Outlook retries (MS-OXCRPC 3.2.4.4).  (temporary_congestion
         * is "not used" there.) */
        mp_build_bind_nak(&a->c.out, id, MP_BNAK_LOCAL_LIMIT_EXCEEDED);
    } else {
        for (size_t i = 0; i < a->n_calls; i++) {
            log_call(a, &a->calls[i], "upstream-failed");
            mp_build_fault(&a->c.out, a->calls[i].c_id, a->calls[i].ctx_id, MP_RPC_S_CALL_FAILED,
                           false);
            call_detach(&a->calls[i]);
        }
        a->n_calls = 0;
    }
    assoc_finish(a, "upstream failed");
}

/* ------------------------------------------------------------------ */
/* bind and alter_context                                              */

static bool iface_allowed(const struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t i = 0; i < r->cfg->n_ifaces; i++)
        if (mp_iface_match(&r->cfg->ifaces[i], s->uuid, s->major, s->minor))
            return true;
    return false;
}

/* Decides each context of a client bind/alter: answered locally or sent
 * upstream (with NDR 2.0 as the only transfer syntax).  Fills m and the
 * upstream's bind in fwd.  Returns the number of contexts forwarded. */
static int split_contexts(struct assoc *a, const struct mp_bind *b, struct merge *m,
                          struct mp_bind *fwd)
{
    int n_fwd = 0;
    m->n = b->n_ctx;
    fwd->n_ctx = 0;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        const struct mp_pctx *c = &b->ctx[i];
        m->item[i].ctx_id = c->ctx_id;
        m->item[i].abstract = c->abstract;
        m->item[i].fwd = false;
        m->item[i].result = MP_CTX_PROVIDER_REJECTION;
        bool btfn = false, ndr20 = false;
        for (unsigned j = 0; j < c->n_ts; j++) {
            if (mp_syntax_eq(&c->ts[j], &mp_ndr20_syntax))
                ndr20 = true;
            else if (mp_syntax_is_btfn(&c->ts[j]))
                btfn = true;
        }
        bool local = a->local_epm || a->csec || a->state == A_DENIED;
        bool allowed = a->local_epm ? (!memcmp(c->abstract.uuid, mp_epm_syntax.uuid, 16) &&
                                       c->abstract.major == 3)
                                    : iface_allowed(a->r, &c->abstract);
        /* terminating with pass-through interfaces: an association is one or
         * the other, never both (else an alter_context smuggles a terminated
         * interface upstream unauthenticated) */
        if (allowed && !a->local_epm && a->r->terminate && a->r->n_pt &&
            iface_is_pt(a->r, &c->abstract) != !a->csec) {
            mp_warn("conn %s: presentation context %u (%s interface on a %s association) refused",
                    a->peer, c->ctx_id, a->csec ? "a pass-through" : "a terminated",
                    a->csec ? "terminated" : "pass-through");
            allowed = false;
        }
        if (btfn) {
            /* Bind-time feature negotiation: relayed so the client learns
             * what the upstream supports; answered locally when local. */
            if (local) {
                m->item[i].result = MP_CTX_NEGOTIATE_ACK;
                m->item[i].reason = 0;
                continue;
            }
        } else if (!allowed) {
            m->item[i].reason = MP_CTX_REASON_ABSTRACT_NOT_SUPPORTED;
            continue;
        } else if (!ndr20) {
            m->item[i].reason = MP_CTX_REASON_TRANSFER_NOT_SUPPORTED;
            continue;
        } else if (local) {
            m->item[i].result = MP_CTX_ACCEPT;
            m->item[i].reason = 0;
            ctx_add(a, c->ctx_id, &c->abstract);
            if (a->csec) { /* the upstream gets it after the client authenticated */
                struct mp_pctx *f = &fwd->ctx[fwd->n_ctx++];
                *f = *c;
                f->n_ts = 1;
                f->ts[0] = mp_ndr20_syntax;
                n_fwd++;
            }
            continue;
        }
        m->item[i].fwd = true;
        struct mp_pctx *f = &fwd->ctx[fwd->n_ctx++];
        *f = *c;
        if (!btfn) {
            f->n_ts = 1;
            f->ts[0] = mp_ndr20_syntax;
        }
        n_fwd++;
    }
    return n_fwd;
}

/* Builds the client's bind_ack/alter_resp from the merge and, when the
 * upstream answered, its results (in forwarded order). */
static void answer_bind(struct assoc *a, const struct merge *m, const struct mp_bind_ack *up,
                        uint8_t flags, const struct mp_auth *auth)
{
    struct mp_bind_ack *ack = &scratch_ack;
    memset(ack, 0, offsetof(struct mp_bind_ack, res));
    ack->max_xmit = a->c_xmit;
    ack->max_recv = a->c_recv;
    ack->assoc_group = a->shown_group ? a->shown_group : a->group ? a->group->id : 0;
    if (m->ptype == MP_PT_BIND)
        snprintf(ack->sec_addr, sizeof(ack->sec_addr), "%u",
                 a->local_epm ? a->r->epm_port : a->r->rpc_port);
    ack->n_results = m->n;
    unsigned k = 0;
    for (unsigned i = 0; i < m->n; i++) {
        struct mp_ctx_result *res = &ack->res[i];
        memset(res, 0, sizeof(*res));
        if (m->item[i].fwd && up && k < up->n_results) {
            *res = up->res[k++];
            if (res->result == MP_CTX_ACCEPT)
                ctx_add(a, m->item[i].ctx_id, &m->item[i].abstract);
        } else if (m->item[i].fwd) {
            res->result = MP_CTX_PROVIDER_REJECTION;
            res->reason = MP_CTX_REASON_NONE;
        } else {
            res->result = m->item[i].result;
            res->reason = m->item[i].reason;
            if (res->result == MP_CTX_ACCEPT)
                res->ts = mp_ndr20_syntax;
            else if (res->result == MP_CTX_NEGOTIATE_ACK)
                res->reason = 0x0002; /* keep connection on orphan */
        }
    }
    uint8_t ptype = m->ptype == MP_PT_BIND ? MP_PT_BIND_ACK : MP_PT_ALTER_RESP;
    mp_build_bind_ack(&a->c.out, ptype, flags | MP_PFC_FIRST | MP_PFC_LAST, m->c_call_id, ack,
                      auth);
}

static void merge_push(struct assoc *a, struct merge *m)
{
    m->next = NULL;
    *a->merges_tail = m;
    a->merges_tail = &m->next;
}

static struct merge *merge_pop(struct assoc *a)
{
    struct merge *m = a->merges;
    if (m) {
        a->merges = m->next;
        if (!a->merges)
            a->merges_tail = &a->merges;
    }
    return m;
}

static uint16_t clamp_frag(uint16_t v)
{
    return v > MP_MAX_FRAG ? MP_MAX_FRAG : v < MP_MIN_FRAG ? MP_MIN_FRAG : v;
}

static uint16_t port_lookup(struct mp_relay *r, const struct mp_syntax *s)
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
static void port_forget(struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t i = 0; i < r->n_cache; i++)
        if (mp_syntax_eq(&r->cache[i].iface, s))
            r->cache[i].expires = 0;
}

static void timeout_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    char why[400];
    const struct conn *c = a->state == A_RESOLVING ? &a->res : &a->u;
    snprintf(why, sizeof(why), "%s port %u%s did not answer within %u ms", a->r->cfg->binding.host,
             c->port, c == &a->res ? " (endpoint mapper)" : "", a->r->cfg->connect_timeout_ms);
    upstream_failed(a, why);
}

/* A queue over `max buffer` that has not drained for `send timeout`: the
 * peer is not reading.  Re-armed while the queue moves. */
static void stall_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    const struct mp_config *cfg = a->r->cfg;
    uint64_t now = mp_now_ms(), limit = (uint64_t)cfg->send_timeout_s * 1000;
    bool c_full = mp_buf_avail(&a->c.out) >= cfg->max_buffer;
    bool u_full = mp_buf_avail(&a->u.out) >= cfg->max_buffer;
    if (c_full && now - a->c_progress_ms >= limit) {
        mp_warn(
            "conn %s: client not reading for %u s with %zu bytes queued; closed (mapiproxy:send "
            "timeout)",
            a->peer, cfg->send_timeout_s, mp_buf_avail(&a->c.out));
        assoc_close(a, "client not reading");
    } else if (u_full && now - a->u_progress_ms >= limit) {
        char why[96];
        snprintf(why, sizeof(why), "not reading for %u s (mapiproxy:send timeout)",
                 cfg->send_timeout_s);
        upstream_failed(a, why);
    } else if (c_full || u_full) {
        mp_timer_arm(a->r->loop, t, limit);
    }
}

/* mapiproxy:bind timeout: a client that has not bound (and, where the proxy
 * terminates authentication, logged on) within it is closed. */
static void bind_timeout_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    if (a->state != A_WAIT_BIND && a->state != A_AUTH)
        return;
    mp_info("conn %s: no %s within %u s; closed (mapiproxy:bind timeout)", a->peer,
            a->state == A_WAIT_BIND ? "bind" : "logon", a->r->cfg->bind_timeout_s);
    assoc_close(a, "bind timeout");
}

static void idle_cb(struct mp_timer *t)
{
    struct assoc *a = t->data;
    uint64_t now = mp_now_ms(), limit = (uint64_t)a->r->cfg->idle_timeout_s * 1000;
    if (a->n_calls == 0 && now - a->last_io_ms >= limit) {
        mp_info("conn %s: idle for %u s; closed (mapiproxy:idle timeout)", a->peer,
                a->r->cfg->idle_timeout_s);
        assoc_close(a, "idle timeout");
        return;
    }
    mp_timer_arm(a->r->loop, t, limit - (now - a->last_io_ms < limit ? now - a->last_io_ms : 0));
}

static int start_connect(struct assoc *a, struct conn *c, uint16_t port)
{
    struct mp_relay *r = a->r;
    struct sockaddr_storage ss = r->up_addr;
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&ss, r->up_addr_len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->port = port;
    c->io.fd = fd;
    c->io.cb = conn_cb;
    c->io.data = c;
    c->connecting = true;
    return 0;
}

/* Puts the association in a group: the one named (id) when it exists and
 * belongs to ident, else a new one, exactly as for a bind naming none.  In
 * terminated mode the client was told an id before it authenticated
 * (shown_group): the new group takes that id (new_id) when it is free.
 * Returns 0, or -1 after closing (out of memory). */
static int join_group(struct assoc *a, uint32_t id, const char *ident, uint32_t new_id)
{
    struct mp_session *g = id ? group_find(a->r, id) : NULL;
    if (g && strcasecmp(g->ident, ident)) {
        mp_warn("conn %s: bind names association group 0x%08x of another %s; given a new group",
                a->peer, id, strncmp(ident, "user:", 5) ? "address" : "user");
        g = NULL;
    } else if (id && !g) {
        mp_info("conn %s: bind names association group 0x%08x, which does not exist; given a new "
                "group",
                a->peer, id);
    }
    if (g) {
        mp_session_ref(g);
        a->group = g;
    } else if (!(a->group = group_new(a->r, ident, new_id))) {
        assoc_close(a, "out of memory");
        return -1;
    }
    if (!a->shown_group)
        a->shown_group = a->group->id;
    return 0;
}

/* Transparent mode: the peer's address is all the proxy knows at the bind. */
static void addr_ident(const struct assoc *a, char *out, size_t n)
{
    const char *colon = strrchr(a->peer, ':');
    snprintf(out, n, "addr:%.*s", (int)(colon ? colon - a->peer : (long)strlen(a->peer)), a->peer);
}

/* The client's bind: decide, then resolve/connect/bind upstream. */
static void handle_bind(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_relay *r = a->r;
    struct mp_bind *b = &scratch_bind;
    if (mp_bind_parse(pdu, h, b)) {
        client_protocol_error(a, h->call_id, "malformed bind");
        return;
    }
    if (b->n_ctx > MAX_CTX || b->n_ctx == 0) {
        mp_warn("conn %s: bind with %u presentation contexts refused (limit %d)", a->peer, b->n_ctx,
                MAX_CTX);
        mp_build_bind_nak(&a->c.out, h->call_id, MP_BNAK_LOCAL_LIMIT_EXCEEDED);
        assoc_finish(a, "bind refused");
        return;
    }
    struct merge *m = calloc(1, sizeof(*m));
    if (!m) {
        assoc_close(a, "out of memory");
        return;
    }
    m->ptype = MP_PT_BIND;
    m->c_call_id = h->call_id;
    a->bind_max_xmit = b->max_xmit;
    a->bind_max_recv = b->max_recv;
    a->c_xmit = clamp_frag(b->max_recv);
    a->c_recv = clamp_frag(b->max_xmit);
    if (r->terminate && !a->local_epm && bind_pt_kind(r, b) < 0) {
        mp_warn("conn %s: bind mixes pass-through and terminated interfaces; refused", a->peer);
        free(m);
        mp_build_bind_nak(&a->c.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        assoc_finish(a, "bind refused");
        return;
    }
    if (r->terminate && !a->local_epm && !bind_is_passthrough(r, b)) {
        handle_bind_terminate(a, pdu, h, b);
        free(m);
        return;
    }
    struct mp_auth lv = {.level = 1};
    if (!a->local_epm && r->min_level_set && (!h->auth_len || !mp_pdu_auth(pdu, h, &lv)) &&
        lv.level < r->min_level) {
        mp_warn("conn %s: bind at authentication level %s, below mapiproxy:min client auth "
                "level %s; its calls get access denied, nothing relayed",
                a->peer, level_names[lv.level < 7 ? lv.level : 0], level_names[r->min_level]);
        free(m);
        deny_bind(a, b, h->call_id);
        return;
    }
    if (h->auth_len) {
        if (a->local_epm) {
            mp_warn("conn %s: authenticated bind to the local endpoint mapper refused", a->peer);
            free(m);
            mp_build_bind_nak(&a->c.out, h->call_id, 8 /* authentication type not recognized */);
            assoc_finish(a, "bind refused");
            return;
        }
        a->passthrough = true;
    }
    char ident[80];
    addr_ident(a, ident, sizeof(ident));
    if (join_group(a, b->assoc_group, ident, 0)) {
        free(m);
        return;
    }
    struct mp_bind *fwd = calloc(1, sizeof(*fwd));
    if (!fwd || !a->group) {
        free(fwd);
        free(m);
        assoc_close(a, "out of memory");
        return;
    }
    int n_fwd = split_contexts(a, b, m, fwd);
    if (a->local_epm || n_fwd == 0) {
        a->state = a->local_epm ? A_OPEN : A_LOCAL;
        if (!a->local_epm)
            mp_info("conn %s: bind with no relayable context; answered locally", a->peer);
        answer_bind(a, m, NULL, 0, NULL);
        free(m);
        free(fwd);
        return;
    }
    /* The upstream bind.  Fragment sizes: our own offer on the upstream leg,
     * except in pass-through mode where both legs must agree. */
    fwd->max_xmit = a->passthrough ? b->max_xmit : MP_MAX_FRAG;
    fwd->max_recv = a->passthrough ? b->max_recv : MP_MAX_FRAG;
    fwd->assoc_group = a->group->up_id;
    uint32_t up_call = a->passthrough ? h->call_id : a->next_u_call++;
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    int rc = mp_build_bind(&a->pending_bind, MP_PT_BIND, h->flags, up_call, fwd, ap);
    for (unsigned i = 0; i < fwd->n_ctx; i++)
        if (!mp_syntax_is_btfn(&fwd->ctx[i].ts[0])) {
            a->target = fwd->ctx[i].abstract;
            break;
        }
    free(fwd);
    if (rc) {
        free(m);
        client_protocol_error(a, h->call_id, "bind too large to relay");
        return;
    }
    merge_push(a, m);
    start_upstream(a);
}

/* Finds the upstream's port (fixed, cached, or from its endpoint mapper)
 * and connects; a->pending_bind is sent once connected. */
static void start_upstream(struct assoc *a)
{
    struct mp_relay *r = a->r;
    a->timer.cb = timeout_cb;
    a->timer.data = a;
    mp_timer_arm(r->loop, &a->timer, r->cfg->connect_timeout_ms);
    uint16_t port = r->cfg->binding.port;
    if (!port && !memcmp(a->target.uuid, mp_epm_syntax.uuid, 16))
        port = r->cfg->upstream_epm_port;
    if (!port)
        port = port_lookup(r, &a->target);
    if (port) {
        upstream_connect(a, port);
        return;
    }
    /* Ask the upstream's endpoint mapper, as a client would. */
    a->state = A_RESOLVING;
    a->res.role = ROLE_RESOLVER;
    if (start_connect(a, &a->res, r->cfg->upstream_epm_port) < 0) {
        char why[400];
        snprintf(why, sizeof(why), "%s port %u (endpoint mapper): connect failed: %s",
                 r->cfg->binding.host, r->cfg->upstream_epm_port, strerror(errno));
        upstream_failed(a, why);
    }
}

static void upstream_connect(struct assoc *a, uint16_t port)
{
    a->state = A_CONNECTING;
    a->u.role = ROLE_UPSTREAM;
    if (start_connect(a, &a->u, port) < 0) {
        char why[400];
        snprintf(why, sizeof(why), "%s port %u: connect failed: %s", a->r->cfg->binding.host, port,
                 strerror(errno));
        upstream_failed(a, why);
        return;
    }
    mp_debug("conn %s: connecting upstream port %u", a->peer, port);
}

static void handle_alter(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_bind *b = &scratch_bind;
    if (mp_bind_parse(pdu, h, b) || b->n_ctx == 0) {
        client_protocol_error(a, h->call_id, "malformed alter_context");
        return;
    }
    if (b->n_ctx + a->n_ctx > MAX_CTX) {
        client_protocol_error(a, h->call_id, "too many presentation contexts");
        return;
    }
    struct merge *m = calloc(1, sizeof(*m));
    struct mp_bind *fwd = calloc(1, sizeof(*fwd));
    if (!m || !fwd) {
        free(m);
        free(fwd);
        assoc_close(a, "out of memory");
        return;
    }
    m->ptype = MP_PT_ALTER;
    m->c_call_id = h->call_id;
    if (h->auth_len && !a->csec)
        a->passthrough = true;
    int n_fwd = split_contexts(a, b, m, fwd);
    if (a->csec && a->state == A_OPEN) {
        /* terminated: the client is answered here; the upstream learns the
         * new contexts on the proxy's own security context.  An auth
         * trailer builds a further client security context. */
        struct mp_auth reply;
        struct mp_buf tok = {0};
        if (h->auth_len && alter_security(a, pdu, h, &reply, &tok)) {
            mp_buf_free(&tok);
            free(m);
            free(fwd);
            return;
        }
        answer_bind(a, m, NULL, 0, h->auth_len && tok.len ? &reply : NULL);
        mp_buf_free(&tok);
        m->n = 0;
        fwd->max_xmit = fwd->max_recv = MP_MAX_FRAG;
        fwd->assoc_group = a->group->up_id;
        if (n_fwd && mp_build_bind(&a->u.out, MP_PT_ALTER, MP_PFC_FIRST | MP_PFC_LAST,
                                   a->next_u_call++, fwd, NULL) == 0)
            merge_push(a, m);
        else
            free(m);
        free(fwd);
        return;
    }
    if (a->state != A_OPEN || a->local_epm || !n_fwd) {
        if (h->auth_len && !a->local_epm)
            mp_warn("conn %s: authenticated alter_context without upstream; refused", a->peer);
        answer_bind(a, m, NULL, 0, NULL);
        free(m);
        free(fwd);
        return;
    }
    fwd->max_xmit = b->max_xmit;
    fwd->max_recv = b->max_recv;
    fwd->assoc_group = b->assoc_group ? a->group->up_id : 0;
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    uint32_t up_call = a->passthrough ? h->call_id : a->next_u_call++;
    int rc = mp_build_bind(&a->u.out, MP_PT_ALTER, h->flags, up_call, fwd, ap);
    free(fwd);
    if (rc) {
        free(m);
        client_protocol_error(a, h->call_id, "alter_context too large to relay");
        return;
    }
    merge_push(a, m);
}

/* ------------------------------------------------------------------ */
/* proxy-terminated authentication (specified credentials)             */

/* Whether dom_groups ("DOMAIN\group" lines, from winbind) holds g, given
 * as "group" or "DOMAIN\group" (case-insensitive). */
static bool in_dom_groups(const char *dom_groups, const char *g, size_t gl)
{
    for (const char *p = dom_groups; p && *p;) {
        size_t n = strcspn(p, "\n");
        const char *bs = memchr(p, '\\', n);
        if ((n == gl && !strncasecmp(p, g, gl)) ||
            (bs && (size_t)(p + n - bs - 1) == gl && !strncasecmp(bs + 1, g, gl)))
            return true;
        p += n;
        if (*p)
            p++;
    }
    return false;
}

/* mapiproxy:allowed users: a name matches "user", "DOMAIN\user" (NTLM) or
 * "user@REALM" (Kerberos principal), case-insensitively; "@group" matches
 * the members of group: a winbind user's domain groups (dom_groups), or the
 * group's lines in mapiproxy:groups file that list one of the user's names. */
static bool user_allowed(const struct mp_relay *r, const char *user, const char *domain,
                         const char *principal, const char *dom_groups)
{
    const char *list = r->cfg->allowed_users;
    if (!list[0])
        return true;
    char full[400];
    if (domain)
        snprintf(full, sizeof(full), "%s\\%s", domain, user);
    else
        snprintf(full, sizeof(full), "%s", principal ? principal : user);
    const char *names[2] = {user, full};
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t w = strcspn(p, " ,\t");
        if (w > 1 && p[0] == '@') {
            char g[256];
            snprintf(g, sizeof(g), "%.*s", (int)(w - 1), p + 1);
            if (in_dom_groups(dom_groups, g, strlen(g)) || mp_groups_has(&r->ugroups, g, names, 2))
                return true;
        } else {
            for (int k = 0; k < 2; k++)
                if (w && w == strlen(names[k]) && !strncasecmp(p, names[k], w))
                    return true;
        }
        p += w;
    }
    return false;
}

static size_t sec_vlen(const struct leg_sec *sec)
{
    return sec->gss ? sec->vlen : MP_NTLM_VERIFIER_LEN;
}

/* Pads, appends the sec_trailer and verifier to the fragment at start and
 * signs or seals it for the leg. */
static int sec_protect(struct leg_sec *sec, struct mp_buf *out, size_t start)
{
    if (sec->gss)
        return mp_gss_add_verifier(sec->gss, out, start, sec->type, sec->level, sec->ctx_id) ||
                       mp_gss_protect(sec->gss, out->data + start, out->len - start,
                                      sec->header_sign)
                   ? -1
                   : 0;
    return mp_dcerpc_add_verifier(out, start, sec->type, sec->level, sec->ctx_id) ||
                   mp_dcerpc_ntlm_protect(&sec->sess.send, out->data + start, out->len - start,
                                          sec->header_sign)
               ? -1
               : 0;
}

/* Appends fragments carrying stub to dst, each protected for the leg when
 * it signs or seals (sec may be NULL).  in_flags: the source's PFC flags;
 * PFC_FIRST/PFC_LAST go on the first/last piece only.  For a response,
 * opnum is the cancel count. */
static int emit(struct conn *dst, struct leg_sec *sec, bool req, uint8_t in_flags, uint32_t call_id,
                uint16_t ctx_id, uint16_t opnum, const uint8_t *object, const uint8_t *stub,
                size_t len, uint32_t hint, size_t max_frag)
{
    bool prot = sec && sec->level >= MP_AUTHN_LEVEL_CALL; /* CALL and PKT sign too */
    size_t hl = MP_REQ_HDR_LEN + (object ? 16 : 0);
    size_t vlen = prot ? sec_vlen(sec) : 0;
    size_t room = max_frag - hl - (prot ? MP_SEC_TRAILER_LEN + vlen + 15 : 0);
    size_t chunk = room & ~(size_t)15, off = 0;
    do {
        size_t k = len - off > chunk ? chunk : len - off;
        uint8_t fl = in_flags & ~(MP_PFC_FIRST | MP_PFC_LAST | MP_PFC_OBJECT_UUID);
        if (off == 0)
            fl |= in_flags & MP_PFC_FIRST;
        if (off + k == len)
            fl |= in_flags & MP_PFC_LAST;
        /* room for the whole fragment first: the verifier code below uses an
         * absolute offset, which a compacting append would invalidate */
        if (mp_buf_reserve(&dst->out, hl + k + MP_SEC_TRAILER_LEN + vlen + 16))
            return -1;
        size_t start = dst->out.len;
        int rc = req ? mp_build_request(&dst->out, fl, call_id, ctx_id, opnum, object, stub + off,
                                        k, hint > off ? hint - (uint32_t)off : 0)
                     : mp_build_response(&dst->out, fl, call_id, ctx_id, stub + off, k,
                                         hint > off ? hint - (uint32_t)off : 0);
        if (rc)
            return -1;
        if (!req)
            dst->out.data[start + 22] = (uint8_t)opnum; /* cancel count */
        if (prot && sec_protect(sec, &dst->out, start))
            return -1;
        off += k;
    } while (off < len);
    return 0;
}

static const char *const level_names[7] = {"",       "none",      "connect", "call",
                                           "packet", "integrity", "privacy"};

static const char *mech_name(const struct leg_sec *s)
{
    if (s->gss)
        return s->type == MP_AUTHN_GSS_NEGOTIATE ? "SPNEGO/Kerberos" : "Kerberos";
    return s->spnego_ntlm ? "SPNEGO/NTLM" : "NTLM";
}

/* NTLM NEGOTIATE in, CHALLENGE out: bare, or in a NegTokenResp (with the
 * NTLM OID as supportedMech when mech_oid). */
static int ntlm_challenge(struct assoc *a, struct leg_sec *cs, const uint8_t *tok, size_t len,
                          bool mech_oid, struct mp_buf *out, char *why, size_t wl)
{
    struct mp_relay *r = a->r;
    if (!r->ntlm_on) {
        snprintf(why, wl,
                 "NTLM is not enabled (neither mapiproxy:credentials file nor "
                 "mapiproxy:ntlm backend = winbind is set)");
        return MP_GSS_FAILED;
    }
    if (cs->acc_init) {
        snprintf(why, wl, "a second NTLM NEGOTIATE");
        return MP_GSS_FAILED;
    }
    mp_ntlm_acceptor_init(&cs->acc, &r->acc_cfg);
    cs->acc_init = true;
    struct mp_buf chal = {0};
    int rc = mp_ntlm_acceptor_negotiate(&cs->acc, tok, len, &chal);
    if (rc) {
        snprintf(why, wl, "malformed NTLM NEGOTIATE (%s)", mp_ntlm_strerror(rc));
    } else if (cs->spnego_ntlm) {
        rc = mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_INCOMPLETE, mech_oid ? mp_oid_ntlm : NULL,
                                  mech_oid ? sizeof(mp_oid_ntlm) : 0, chal.data, chal.len, NULL, 0);
    } else {
        rc = mp_buf_append(out, chal.data, chal.len);
    }
    mp_buf_free(&chal);
    if (rc && !why[0])
        snprintf(why, wl, "out of memory");
    return rc ? MP_GSS_FAILED : MP_GSS_CONTINUE;
}

/* The client's first token (bind): NTLM NEGOTIATE, SPNEGO NegTokenInit (Kerberos
 * or NTLM first) or a Kerberos AP-REQ.  The reply token is appended to out.
 * MP_GSS_CONTINUE, MP_GSS_DONE, or MP_GSS_FAILED with why set. */
static int client_auth_first(struct assoc *a, struct leg_sec *cs, const struct mp_auth *auth,
                             struct mp_buf *out, char *why, size_t wl)
{
    struct mp_relay *r = a->r;
    char err[MP_GSS_ERRLEN] = "";
    if (auth->type == MP_AUTHN_WINNT)
        return ntlm_challenge(a, cs, auth->value, auth->value_len, false, out, why, wl);
    if (auth->type == MP_AUTHN_GSS_NEGOTIATE) {
        struct mp_spnego_init ini;
        if (mp_spnego_parse_init(auth->value, auth->value_len, &ini)) {
            snprintf(why, wl, "malformed SPNEGO NegTokenInit");
            return MP_GSS_FAILED;
        }
        enum mp_spnego_mech first = mp_spnego_mech_kind(ini.mechs[0].p, ini.mechs[0].len);
        bool offers_ntlm = false;
        for (size_t i = 0; i < ini.n_mechs; i++)
            offers_ntlm |= mp_spnego_mech_kind(ini.mechs[i].p, ini.mechs[i].len) == MP_MECH_NTLM;
        /* Kerberos first without a keytab here: ask for NTLM instead when the
         * client offers it (RFC 4178 section 3.2: supportedMech with no token). */
        bool switch_to_ntlm =
            mp_spnego_mech_is_krb5(first) && !r->acc_cred && offers_ntlm && r->ntlm_on;
        if (first == MP_MECH_NTLM || switch_to_ntlm) {
            cs->spnego_ntlm = true;
            cs->mech_list = malloc(ini.mech_list_len);
            if (!cs->mech_list) {
                snprintf(why, wl, "out of memory");
                return MP_GSS_FAILED;
            }
            memcpy(cs->mech_list, ini.mech_list, ini.mech_list_len);
            cs->mech_list_len = ini.mech_list_len;
            if (switch_to_ntlm) {
                cs->ntlm_switched = true;
                if (mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_INCOMPLETE, mp_oid_ntlm,
                                         sizeof(mp_oid_ntlm), NULL, 0, NULL, 0)) {
                    snprintf(why, wl, "out of memory");
                    return MP_GSS_FAILED;
                }
                return MP_GSS_CONTINUE;
            }
            if (!ini.mech_token) {
                snprintf(why, wl, "SPNEGO with NTLM first but no NTLM token");
                return MP_GSS_FAILED;
            }
            return ntlm_challenge(a, cs, ini.mech_token, ini.mech_token_len, true, out, why, wl);
        }
        if (!mp_spnego_mech_is_krb5(first)) {
            snprintf(why, wl, "SPNEGO whose first mechanism is neither Kerberos nor NTLM");
            return MP_GSS_FAILED;
        }
    } else if (auth->type != MP_AUTHN_GSS_KERBEROS) {
        snprintf(why, wl, "auth type %u (only NTLM 10, SPNEGO 9 and Kerberos 16 are accepted)",
                 auth->type);
        return MP_GSS_FAILED;
    }
    if (!r->acc_cred) {
        snprintf(why, wl, "Kerberos is not enabled (mapiproxy:keytab is not set)");
        return MP_GSS_FAILED;
    }
    cs->gss = mp_gss_acceptor_new(r->acc_cred, auth->type, 0, err, sizeof(err));
    if (!cs->gss) {
        snprintf(why, wl, "%s", err);
        return MP_GSS_FAILED;
    }
    int st = mp_gss_step(cs->gss, auth->value, auth->value_len, out);
    if (st == MP_GSS_FAILED)
        snprintf(why, wl, "%s", mp_gss_error(cs->gss));
    return st;
}

/* The client's next token (auth3 or alter_context): NTLM AUTHENTICATE (bare
 * or in a NegTokenResp) or the Kerberos AP-REP of DCE style.  On success the
 * client's name is in cs->user / cs->who and the policy was checked.
 * can_reply: the token came in an alter_context, whose answer can carry
 * the proxy's SPNEGO mechListMIC (an AUTH3 has none). */
static int client_auth_next(struct assoc *a, struct leg_sec *cs, const struct mp_auth *auth,
                            bool can_reply, struct mp_buf *out, char *why, size_t wl)
{
    if (cs->gss) {
        /* established already (one leg, at bind): called without a token */
        int st = MP_GSS_DONE;
        if (mp_gss_established(cs->gss) && auth->value_len) {
            snprintf(why, wl, "a further token after the Kerberos context was established");
            return MP_GSS_FAILED;
        }
        if (!mp_gss_established(cs->gss))
            st = mp_gss_step(cs->gss, auth->value, auth->value_len, out);
        if (st == MP_GSS_FAILED) {
            snprintf(why, wl, "%s", mp_gss_error(cs->gss));
            return st;
        }
        if (st != MP_GSS_DONE) {
            snprintf(why, wl, "Kerberos needs more legs than DCE style has");
            return MP_GSS_FAILED;
        }
        const char *peer = mp_gss_peer_name(cs->gss);
        snprintf(cs->user, sizeof(cs->user), "%s", peer ? peer : "?");
        snprintf(cs->who, sizeof(cs->who), "%s", cs->user);
        mp_log_safe(cs->who);
        size_t v = mp_gss_sig_len(cs->gss, cs->level, MP_MAX_FRAG);
        cs->vlen = v > 16 ? v : 16; /* any MIC or wrap token is longer */
        if (cs->level >= MP_AUTHN_LEVEL_CALL && !v) {
            snprintf(why, wl, "no verifier length for level %u", cs->level);
            return MP_GSS_FAILED;
        }
        char name[160];
        snprintf(name, sizeof(name), "%s", cs->user);
        char *at = strrchr(name, '@');
        /* a bare name in the list covers principals of the proxy's own realm
         * (realm) only: alice@OTHER.REALM must be listed in full */
        bool own = at && (!a->r->realm_uc[0] || !strcasecmp(at + 1, a->r->realm_uc));
        if (at)
            *at = 0;
        if (!user_allowed(a->r, own ? name : cs->user, NULL, cs->user, NULL)) {
            snprintf(why, wl, "not in mapiproxy:allowed users");
            return MP_GSS_FAILED;
        }
        return MP_GSS_DONE;
    }
    const uint8_t *tok = auth->value;
    size_t len = auth->value_len;
    struct mp_spnego_resp resp = {.neg_state = -1};
    if (cs->spnego_ntlm) {
        if (mp_spnego_parse_resp(auth->value, auth->value_len, &resp) || !resp.token) {
            snprintf(why, wl, "SPNEGO NegTokenResp without an NTLM AUTHENTICATE");
            return MP_GSS_FAILED;
        }
        tok = resp.token;
        len = resp.token_len;
        if (!cs->acc_init) /* after the switch from Kerberos: the NEGOTIATE */
            return ntlm_challenge(a, cs, tok, len, false, out, why, wl);
        if (cs->ntlm_switched && !resp.mic) {
            snprintf(why, wl, "no SPNEGO mechListMIC after the switch to NTLM (RFC 4178)");
            return MP_GSS_FAILED;
        }
    }
    struct mp_ntlm_result res;
    memset(&res, 0, sizeof(res));
    int rc;
    char wb_note[520] = "";
    if (a->r->winbind && !cs->wb_done) {
        /* mapiproxy:ntlm backend = winbind: the domain checks the response
         * on the worker; the caller queues cs->wb_pending with its PDU,
         * which is handled again when the answer is back (cs->wb_done). */
        struct mp_ntlm_logon lg;
        rc = mp_ntlm_acceptor_peek(&cs->acc, tok, len, &lg);
        if (rc == MP_NTLM_OK) {
            snprintf(cs->who, sizeof(cs->who), "%.70s\\%.70s", lg.domain, lg.user);
            mp_log_safe(cs->who);
            struct mp_wb_logon *lo = calloc(1, sizeof(*lo));
            if (!lo || mp_wb_logon_set(lo, lg.user, lg.domain, lg.workstation, lg.server_chal,
                                       lg.nt.p, lg.nt.len, lg.lm.p, lg.lm.len)) {
                free(lo);
                snprintf(why, wl,
                         "cannot prepare the winbind logon (out of memory or names "
                         "too long)");
                return MP_GSS_FAILED;
            }
            cs->wb_pending = lo;
            return AUTH_PENDING;
        }
        rc = mp_ntlm_acceptor_authenticate(&cs->acc, tok, len, &res); /* refuses the same */
    } else if (a->r->winbind) {
        if (cs->wb_rc == MP_WB_OK) {
            rc = mp_ntlm_acceptor_authenticate_key(&cs->acc, tok, len, cs->wb_key, &res);
            if (rc == MP_NTLM_OK) { /* the names the domain knows the user by */
                snprintf(res.user, sizeof(res.user), "%s", cs->wb_account);
                snprintf(res.domain, sizeof(res.domain), "%s", cs->wb_domain);
            }
        } else {
            struct mp_ntlm_logon lg;
            mp_ntlm_acceptor_peek(&cs->acc, tok, len, &lg);
            snprintf(res.user, sizeof(res.user), "%s", lg.user);
            snprintf(res.domain, sizeof(res.domain), "%s", lg.domain);
            rc = MP_NTLM_E_LOGON;
            snprintf(wb_note, sizeof(wb_note), "%s (winbind: %s)",
                     cs->wb_rc == MP_WB_DENIED ? mp_ntlm_strerror(rc)
                                               : "the domain could not check the logon",
                     cs->wb_why);
        }
        mp_ntlm_cleanse(cs->wb_key, sizeof(cs->wb_key));
    } else {
        rc = mp_ntlm_acceptor_authenticate(&cs->acc, tok, len, &res);
    }
    snprintf(cs->user, sizeof(cs->user), "%.150s", res.user);
    bool upn = !res.domain[0] && strchr(res.user, '@'); /* user@dns.domain, no domain */
    if (upn)
        snprintf(cs->who, sizeof(cs->who), "%.150s", res.user);
    else
        snprintf(cs->who, sizeof(cs->who), "%.70s\\%.70s", res.domain, res.user);
    mp_log_safe(cs->who);
    char bare[160];
    snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(res.user, "@"), res.user);
    const char *bad = rc ? (wb_note[0] ? wb_note : mp_ntlm_strerror(rc))
                      : !(upn ? user_allowed(a->r, bare, NULL, res.user, cs->wb_groups)
                              : user_allowed(a->r, res.user, res.domain, NULL, cs->wb_groups))
                          ? "not in mapiproxy:allowed users"
                          : NULL;
    if (!bad && mp_ntlm_session_init(&cs->sess, res.flags, res.exported_key, false))
        bad = "session keys could not be derived";
    if (!bad)
        cs->sess_init = true;
    /* SPNEGO mechListMIC (RFC 4178, MS-SPNG 3.3.5.1): the client's NTLM
     * signature over its MechTypeList (its first sequence number) is checked
     * and answered with ours; then both RC4 streams start again from the
     * sealing keys while the sequence numbers go on (what Samba and Windows
     * do). */
    uint8_t our_mic[16];
    bool mic = false;
    if (!bad && resp.mic) {
        if (resp.mic_len != 16 ||
            mp_ntlm_verify(&cs->sess.recv, cs->mech_list, cs->mech_list_len, resp.mic) ||
            (can_reply &&
             mp_ntlm_sign(&cs->sess.send, cs->mech_list, cs->mech_list_len, our_mic))) {
            bad = "bad SPNEGO mechListMIC";
        } else {
            uint32_t s_seq = cs->sess.send.seq, r_seq = cs->sess.recv.seq;
            mp_ntlm_session_free(&cs->sess);
            if (mp_ntlm_session_init(&cs->sess, res.flags, res.exported_key, false)) {
                cs->sess_init = false;
                bad = "session keys could not be derived";
            }
            cs->sess.send.seq = s_seq;
            cs->sess.recv.seq = r_seq;
            mic = can_reply;
        }
    }
    mp_ntlm_cleanse(res.exported_key, sizeof(res.exported_key));
    if (bad) {
        snprintf(why, wl, "%s", bad);
        return MP_GSS_FAILED;
    }
    if (cs->spnego_ntlm && mp_spnego_build_resp(out, MP_SPNEGO_ACCEPT_COMPLETED, NULL, 0, NULL, 0,
                                                mic ? our_mic : NULL, mic ? 16 : 0)) {
        snprintf(why, wl, "out of memory");
        return MP_GSS_FAILED;
    }
    return MP_GSS_DONE;
}

/* The upstream bind with the proxy's first token, into a->pending_bind. */
static int upstream_bind_build(struct assoc *a, const struct mp_buf *tok, char *why, size_t wl)
{
    struct leg_sec *us = a->usec;
    if (tok->len > 0xffff) {
        snprintf(why, wl, "initial token of %zu bytes", tok->len);
        return -1;
    }
    struct mp_bind *fwd = a->up_fwd;
    fwd->max_xmit = fwd->max_recv = MP_MAX_FRAG;
    fwd->assoc_group = a->group->up_id;
    struct mp_auth up = {.type = us->type,
                         .level = us->level,
                         .context_id = us->ctx_id,
                         .value = tok->data,
                         .value_len = (uint16_t)tok->len};
    if (mp_build_bind(&a->pending_bind, MP_PT_BIND,
                      MP_PFC_FIRST | MP_PFC_LAST | MP_PFC_PENDING_CANCEL, a->next_u_call++, fwd,
                      &up)) {
        snprintf(why, wl, "cannot build the upstream bind");
        return -1;
    }
    for (unsigned i = 0; i < fwd->n_ctx; i++)
        if (!mp_syntax_is_btfn(&fwd->ctx[i].ts[0])) {
            a->target = fwd->ctx[i].abstract;
            break;
        }
    return 0;
}

/* ---- the KDC worker ---- */

#define SVC_CRED_MAX_AGE_MS (4ull * 3600 * 1000) /* well inside a 10 h TGT */

/* Worker thread: the service credential's TGT must stay forwardable for
 * S4U2Proxy, and MIT renews it without that flag; so it is replaced
 * before it expires.  The old one is kept until exit (credentials made
 * from it may still be in use). */
static void svc_refresh(struct mp_relay *r, struct kdc_job *j)
{
    if (mp_now_ms() - r->svc_born_ms < SVC_CRED_MAX_AGE_MS)
        return;
    char err[MP_GSS_ERRLEN];
    struct mp_gss_cred *n =
        mp_gss_cred_service(r->cfg->keytab, r->cfg->service_principal, err, sizeof(err));
    if (!n) {
        snprintf(j->note, sizeof(j->note), "service credential not renewed: %.300s", err);
        return;
    }
    if (r->n_retired == sizeof(r->retired) / sizeof(r->retired[0])) {
        mp_gss_cred_free(r->retired[0]);
        memmove(r->retired, r->retired + 1, sizeof(r->retired) - sizeof(r->retired[0]));
        r->n_retired--;
    }
    r->retired[r->n_retired++] = r->svc_cred;
    r->svc_cred = n;
    r->svc_born_ms = mp_now_ms();
    snprintf(j->note, sizeof(j->note), "service credential renewed (forwardable TGT)");
}

/* Worker thread: the credential and first leg towards the upstream.  These
 * are the calls that can wait for the KDC. */
static void kdc_run(struct mp_relay *r, struct kdc_job *j)
{
    if (j->wb) {
        mp_winbind_authenticate(j->wb);
        return;
    }
    char err[MP_GSS_ERRLEN] = "";
    const char *spn = r->cfg->upstream_spn;
    struct mp_gss_cred *cred = r->up_cred;
    j->rc = -1;
    if (r->up_mode == UP_S4U) {
        svc_refresh(r, j);
        j->cred = mp_gss_cred_impersonate(r->svc_cred, j->user, err, sizeof(err));
        if (!j->cred) {
            snprintf(j->why, sizeof(j->why), "S4U2Self for %.200s: %.300s", j->user, err);
            return;
        }
        cred = j->cred;
    }
    j->ctx = mp_gss_initiator_new(cred, spn, MP_AUTHN_GSS_KERBEROS, 0, err, sizeof(err));
    if (!j->ctx) {
        snprintf(j->why, sizeof(j->why), "Kerberos initiator for %.200s: %.300s", spn, err);
        return;
    }
    if (mp_gss_step(j->ctx, NULL, 0, &j->tok) != MP_GSS_CONTINUE) {
        snprintf(j->why, sizeof(j->why), "Kerberos towards %.200s%s: %.300s", spn,
                 r->up_mode == UP_S4U ? " (S4U2Proxy)" : "", mp_gss_error(j->ctx));
        return;
    }
    j->rc = 0;
}

static void *kdc_main(void *arg)
{
    struct mp_relay *r = arg;
    pthread_mutex_lock(&r->kdc_mu);
    for (;;) {
        while (!r->kdc_q && !r->kdc_stop)
            pthread_cond_wait(&r->kdc_cv, &r->kdc_mu);
        if (r->kdc_stop)
            break;
        struct kdc_job *j = r->kdc_q;
        r->kdc_q = j->next;
        if (!r->kdc_q)
            r->kdc_q_tail = &r->kdc_q;
        pthread_mutex_unlock(&r->kdc_mu);
        kdc_run(r, j);
        pthread_mutex_lock(&r->kdc_mu);
        j->next = NULL;
        *r->kdc_done_tail = j;
        r->kdc_done_tail = &j->next;
        uint64_t one = 1;
        if (write(r->kdc_io.fd, &one, sizeof(one)) < 0) {
            /* the counter is only full after 2^64 - 1 jobs */
        }
    }
    pthread_mutex_unlock(&r->kdc_mu);
    return NULL;
}

static void kdc_job_free(struct kdc_job *j)
{
    if (j->wb) {
        mp_wb_logon_free(j->wb);
        free(j->wb);
    }
    mp_buf_free(&j->pdu);
    mp_gss_ctx_free(j->ctx);
    mp_gss_cred_free(j->cred);
    mp_buf_free(&j->tok);
    free(j);
}

/* Loop thread: winbind's answer is back; the PDU that carried the NTLM
 * response is handled again with it, then whatever the client sent since. */
static void wb_back(struct assoc *a, struct kdc_job *j)
{
    struct leg_sec *cs = a->csec;
    struct mp_wb_logon *l = j->wb;
    a->job = NULL;
    cs->wb_done = true;
    cs->wb_rc = l->rc;
    memcpy(cs->wb_key, l->key, sizeof(cs->wb_key));
    snprintf(cs->wb_why, sizeof(cs->wb_why), "%s", l->why);
    snprintf(cs->wb_account, sizeof(cs->wb_account), "%s", l->account);
    snprintf(cs->wb_domain, sizeof(cs->wb_domain), "%s", l->account_domain);
    free(cs->wb_groups);
    cs->wb_groups = l->groups;
    l->groups = NULL;
    a->state = A_AUTH;
    struct mp_pdu_hdr h;
    if (mp_pdu_hdr_check(j->pdu.data, j->pdu.len, &h)) {
        assoc_close(a, "internal error: the queued PDU");
        return;
    }
    client_pdu(a, j->pdu.data, &h);
    if (a->dead)
        return;
    client_input(a);
    if (!a->dead)
        update_interest(a);
}

/* Loop thread: jobs come back. */
static void kdc_io_cb(struct mp_io *io, uint32_t ev)
{
    struct mp_relay *r = io->data;
    uint64_t n;
    if (read(io->fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: nothing new */
    }
    pthread_mutex_lock(&r->kdc_mu);
    struct kdc_job *j = r->kdc_done;
    r->kdc_done = NULL;
    r->kdc_done_tail = &r->kdc_done;
    pthread_mutex_unlock(&r->kdc_mu);
    while (j) {
        struct kdc_job *next = j->next;
        struct assoc *a = j->a;
        if (j->note[0])
            mp_info("kerberos: %s", j->note);
        if (a && j->wb) {
            wb_back(a, j);
        } else if (a) {
            a->job = NULL;
            struct leg_sec *us = a->usec;
            us->gss = j->ctx;
            us->cred = j->cred;
            j->ctx = NULL;
            j->cred = NULL;
            char why[600];
            snprintf(why, sizeof(why), "%s", j->why);
            if (j->rc == 0 && upstream_bind_build(a, &j->tok, why, sizeof(why)) == 0)
                start_upstream(a);
            else
                upstream_failed(a, why);
            update_interest(a);
        }
        kdc_job_free(j);
        j = next;
    }
}

static int kdc_start(struct mp_relay *r)
{
    r->kdc_q_tail = &r->kdc_q;
    r->kdc_done_tail = &r->kdc_done;
    r->kdc_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->kdc_io.fd < 0) {
        mp_error("eventfd: %s", strerror(errno));
        return -1;
    }
    r->kdc_io.cb = kdc_io_cb;
    r->kdc_io.data = r;
    pthread_mutex_init(&r->kdc_mu, NULL);
    pthread_cond_init(&r->kdc_cv, NULL);
    int rc = pthread_create(&r->kdc_thread, NULL, kdc_main, r);
    if (rc) {
        mp_error("cannot start the KDC worker thread: %s", strerror(rc));
        close(r->kdc_io.fd);
        r->kdc_io.fd = -1;
        return -1;
    }
    r->kdc_started = true;
    mp_io_set(r->loop, &r->kdc_io, MP_READ);
    return 0;
}

static void kdc_stop(struct mp_relay *r)
{
    if (!r->kdc_started)
        return;
    pthread_mutex_lock(&r->kdc_mu);
    r->kdc_stop = true;
    pthread_cond_broadcast(&r->kdc_cv);
    pthread_mutex_unlock(&r->kdc_mu);
    pthread_join(r->kdc_thread, NULL); /* waits for a KDC call in progress */
    r->kdc_started = false;
    for (struct kdc_job *lists[2] = {r->kdc_q, r->kdc_done}, **l = lists; l < lists + 2; l++)
        while (*l) {
            struct kdc_job *n = (*l)->next;
            kdc_job_free(*l);
            *l = n;
        }
    r->kdc_q = r->kdc_done = NULL;
    mp_io_close(r->loop, &r->kdc_io);
    pthread_cond_destroy(&r->kdc_cv);
    pthread_mutex_destroy(&r->kdc_mu);
}

static void kdc_enqueue(struct mp_relay *r, struct kdc_job *j)
{
    pthread_mutex_lock(&r->kdc_mu);
    *r->kdc_q_tail = j;
    r->kdc_q_tail = &j->next;
    pthread_cond_signal(&r->kdc_cv);
    pthread_mutex_unlock(&r->kdc_mu);
}

/* mapiproxy:ntlm backend = winbind: the client's AUTH3 or alter_context
 * whose NTLM response winbind must check goes to the worker with the logon
 * client_auth_next prepared; the association waits in A_WINBIND (its input
 * is not read) until wb_back. */
static void wb_queue(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct leg_sec *cs = a->csec;
    struct kdc_job *j = calloc(1, sizeof(*j));
    if (!j || mp_buf_append(&j->pdu, pdu, h->frag_len)) {
        if (j)
            mp_buf_free(&j->pdu);
        free(j);
        assoc_close(a, "out of memory");
        return;
    }
    j->wb = cs->wb_pending;
    cs->wb_pending = NULL;
    j->a = a;
    a->job = j;
    a->state = A_WINBIND;
    kdc_enqueue(a->r, j);
}

/* The proxy's own security context towards the upstream.  NTLM here; with
 * Kerberos the KDC worker makes it (S4U2Self, S4U2Proxy, a service ticket)
 * while the association waits in A_KDC.  0, or -1 with why. */
static int upstream_prepare(struct assoc *a, char *why, size_t wl)
{
    struct mp_relay *r = a->r;
    struct leg_sec *us = calloc(1, sizeof(*us));
    if (!us) {
        snprintf(why, wl, "out of memory");
        return -1;
    }
    a->usec = us;
    us->level = r->up_level;
    us->ctx_id = 79231;
    if (r->up_mode != UP_NTLM) {
        us->type = MP_AUTHN_GSS_KERBEROS;
        struct kdc_job *j = calloc(1, sizeof(*j));
        if (!j) {
            snprintf(why, wl, "out of memory");
            return -1;
        }
        j->a = a;
        struct leg_sec *cs = a->csec;
        if (cs->gss || strchr(cs->user, '@')) /* a principal, or an NTLM UPN */
            snprintf(j->user, sizeof(j->user), "%s", cs->user);
        else
            snprintf(j->user, sizeof(j->user), "%.150s@%.250s", cs->user, r->realm_uc);
        a->job = j;
        a->state = A_KDC;
        kdc_enqueue(r, j);
        return 0;
    }
    us->type = MP_AUTHN_WINNT;
    struct mp_buf tok = {0};
    int rc = mp_ntlm_initiator_init(&us->ini, r->cfg->username, r->cfg->domain, r->up_password,
                                    NULL, r->cfg->netbios_name, NULL, MP_NTLM_INITIATOR_FLAGS);
    us->ini_init = rc == 0;
    if (rc == 0)
        rc = mp_ntlm_initiator_negotiate(&us->ini, &tok);
    if (rc)
        snprintf(why, wl, "NTLM initiator: %s", mp_ntlm_strerror(rc));
    else
        rc = upstream_bind_build(a, &tok, why, wl);
    mp_buf_free(&tok);
    if (rc == 0)
        start_upstream(a);
    return rc ? -1 : 0;
}

/* The client proved who it is: log, then the upstream leg. */
static void client_authenticated(struct assoc *a)
{
    struct leg_sec *cs = a->csec;
    cs->done = true;
    mp_info("conn %s: authenticated %s (%s, %s)", a->peer, cs->who, mech_name(cs),
            level_names[cs->level]);
    mp_metrics_auth(mech_name(cs), cs->level >= a->r->min_level); /* below: refused */
    if (cs->level < a->r->min_level) {
        mp_warn("conn %s: %s authenticated at level %s, below mapiproxy:min client auth level "
                "%s; its calls get access denied, nothing relayed",
                a->peer, cs->who, level_names[cs->level], level_names[a->r->min_level]);
        a->state = A_DENIED;
        return;
    }
    char ident[200];
    snprintf(ident, sizeof(ident), "user:%s", cs->who);
    if (join_group(a, a->named_group, ident, a->shown_group))
        return;
    char why[512] = "";
    if (upstream_prepare(a, why, sizeof(why)))
        upstream_failed(a, why);
}

/* Accepts the bind here (a new group, nothing upstream) and puts the
 * association in A_DENIED: each call gets a fault access denied. */
static void deny_bind(struct assoc *a, const struct mp_bind *b, uint32_t call_id)
{
    a->state = A_DENIED;
    a->shown_group = group_fresh_id(a->r);
    struct mp_bind *none = calloc(1, sizeof(*none));
    struct merge *m = calloc(1, sizeof(*m));
    if (!none || !m) {
        free(none);
        free(m);
        assoc_close(a, "out of memory");
        return;
    }
    m->ptype = MP_PT_BIND;
    m->c_call_id = call_id;
    split_contexts(a, b, m, none);
    answer_bind(a, m, NULL, 0, NULL);
    free(none);
    free(m);
}

/* The client's bind when the proxy terminates authentication: its first
 * token in (NTLM NEGOTIATE, SPNEGO, Kerberos AP-REQ), the answer out in a
 * bind_ack the proxy builds itself.  Nothing goes upstream before the client
 * has proven who it is. */
static void handle_bind_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                                  const struct mp_bind *b)
{
    struct mp_auth auth;
    const char *why = NULL;
    if (!h->auth_len) {
        /* what Windows does: the bind is accepted, each call gets access
         * denied (a bind_nak would say "authentication type not recognized") */
        mp_warn("conn %s: the client sent no authentication (the proxy terminates "
                "authentication: clients authenticate to the proxy); its calls get access "
                "denied, nothing relayed",
                a->peer);
        deny_bind(a, b, h->call_id);
        return;
    }
    if (mp_pdu_auth(pdu, h, &auth))
        why = "malformed auth trailer";
    else if (auth.type != MP_AUTHN_WINNT && auth.type != MP_AUTHN_GSS_NEGOTIATE &&
             auth.type != MP_AUTHN_GSS_KERBEROS)
        why = "only NTLM (10), SPNEGO (9) and Kerberos (16) are accepted from clients";
    else if (auth.level < MP_AUTHN_LEVEL_CONNECT || auth.level > MP_AUTHN_LEVEL_PKT_PRIVACY)
        why = "unknown authentication level";
    if (why) {
        mp_warn("conn %s: bind refused: %s (the proxy terminates authentication: clients "
                "authenticate to the proxy)",
                a->peer, why);
        mp_build_bind_nak(&a->c.out, h->call_id, 8 /* authentication type not recognized */);
        assoc_finish(a, "bind refused");
        return;
    }
    /* The group is joined once the client has proven who it is
     * (client_authenticated); until then it is told the id it named, or a
     * fresh one, whatever that group is: the answer says nothing. */
    a->named_group = b->assoc_group;
    a->shown_group = b->assoc_group ? b->assoc_group : group_fresh_id(a->r);
    struct leg_sec *cs = calloc(1, sizeof(*cs));
    struct merge *m = calloc(1, sizeof(*m));
    struct mp_bind *fwd = calloc(1, sizeof(*fwd));
    if (!cs || !m || !fwd) {
        free(cs);
        free(m);
        free(fwd);
        assoc_close(a, "out of memory");
        return;
    }
    a->csec = cs;
    a->up_fwd = fwd;
    cs->type = auth.type;
    cs->level = auth.level;
    cs->ctx_id = auth.context_id;
    cs->header_sign = (h->flags & MP_PFC_PENDING_CANCEL) != 0; /* SUPPORT_HEADER_SIGN */
    struct mp_buf reply_tok = {0};
    char reason[400] = "";
    int st = client_auth_first(a, cs, &auth, &reply_tok, reason, sizeof(reason));
    if (st == MP_GSS_FAILED || reply_tok.len > 0xffff) {
        mp_warn("conn %s: bind refused: %s authentication failed: %s; access denied, nothing "
                "relayed",
                a->peer, mech_name(cs), reason[0] ? reason : "token too large");
        mp_metrics_auth(mech_name(cs), false);
        mp_build_bind_nak(&a->c.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        assoc_finish(a, "bind refused");
        mp_buf_free(&reply_tok);
        free(m);
        return;
    }
    m->ptype = MP_PT_BIND;
    m->c_call_id = h->call_id;
    int n_fwd = split_contexts(a, b, m, fwd);
    struct mp_auth reply = {.type = cs->type,
                            .level = cs->level,
                            .context_id = cs->ctx_id,
                            .value = reply_tok.data,
                            .value_len = (uint16_t)reply_tok.len};
    answer_bind(a, m, NULL, h->flags & MP_PFC_PENDING_CANCEL, &reply);
    mp_buf_free(&reply_tok);
    free(m);
    a->state = A_AUTH;
    if (!n_fwd) {
        mp_warn("conn %s: no relayable presentation context", a->peer);
        a->state = A_DENIED;
        return;
    }
    if (st == MP_GSS_DONE) { /* a one-leg mechanism: nothing more from the client */
        char r2[400] = "";
        struct mp_auth none = auth;
        none.value_len = 0;
        if (client_auth_next(a, cs, &none, false, &reply_tok, r2, sizeof(r2)) != MP_GSS_DONE) {
            mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed",
                    a->peer, cs->who[0] ? cs->who : "?", r2);
            a->state = A_DENIED;
        } else {
            client_authenticated(a);
        }
        mp_buf_free(&reply_tok);
    }
}

/* The client's last leg in an AUTH3 (NTLM AUTHENTICATE, Kerberos AP-REP). */
static void handle_auth3_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct leg_sec *cs = a->csec;
    struct mp_auth auth;
    if (mp_pdu_auth(pdu, h, &auth) || auth.type != cs->type || auth.context_id != cs->ctx_id) {
        client_protocol_error(a, h->call_id, "auth3 without the security context's token");
        return;
    }
    struct mp_buf out = {0};
    char why[400] = "";
    int st = client_auth_next(a, cs, &auth, false, &out, why, sizeof(why));
    mp_buf_free(&out); /* an AUTH3 has no answer */
    if (st == AUTH_PENDING) {
        wb_queue(a, pdu, h);
        return;
    }
    if (st == MP_GSS_CONTINUE)
        snprintf(why, sizeof(why), "a token that needs an answer came in an AUTH3");
    if (st != MP_GSS_DONE) {
        mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed", a->peer,
                cs->who[0] ? cs->who : mech_name(cs), why);
        mp_metrics_auth(mech_name(cs), false);
        a->state = A_DENIED;
        return;
    }
    client_authenticated(a);
}

/* The client's next leg in an alter_context (what SPNEGO clients and
 * Impacket's Kerberos do; SPNEGO switched to NTLM has two): answered with
 * alter_context_resp carrying the
 * next token, or a fault access denied. */
static void handle_alter_auth(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct leg_sec *cs = a->csec;
    struct mp_bind *b = &scratch_bind;
    struct mp_auth auth;
    if (mp_bind_parse(pdu, h, b) || b->n_ctx == 0 || b->n_ctx + a->n_ctx > MAX_CTX ||
        mp_pdu_auth(pdu, h, &auth) || auth.type != cs->type || auth.context_id != cs->ctx_id) {
        client_protocol_error(a, h->call_id, "alter_context without the security context's token");
        return;
    }
    struct mp_buf out = {0};
    char why[400] = "";
    int st = client_auth_next(a, cs, &auth, true, &out, why, sizeof(why));
    if (st == AUTH_PENDING) {
        mp_buf_free(&out);
        wb_queue(a, pdu, h);
        return;
    }
    if (st == MP_GSS_FAILED || out.len > 0xffff) {
        mp_buf_free(&out);
        mp_warn("conn %s: authentication of %s failed: %s; access denied, nothing relayed", a->peer,
                cs->who[0] ? cs->who : mech_name(cs), why);
        mp_metrics_auth(mech_name(cs), false);
        mp_build_fault(&a->c.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        assoc_finish(a, "access denied");
        return;
    }
    struct merge *m = calloc(1, sizeof(*m));
    struct mp_bind *fwd = calloc(1, sizeof(*fwd));
    if (!m || !fwd) {
        free(m);
        free(fwd);
        mp_buf_free(&out);
        assoc_close(a, "out of memory");
        return;
    }
    m->ptype = MP_PT_ALTER;
    m->c_call_id = h->call_id;
    split_contexts(a, b, m, fwd);
    for (unsigned i = 0; i < fwd->n_ctx; i++) { /* new contexts join the upstream bind */
        bool have = false;
        for (unsigned j = 0; j < a->up_fwd->n_ctx; j++)
            have |= a->up_fwd->ctx[j].ctx_id == fwd->ctx[i].ctx_id;
        if (!have && a->up_fwd->n_ctx < MAX_CTX)
            a->up_fwd->ctx[a->up_fwd->n_ctx++] = fwd->ctx[i];
    }
    struct mp_auth reply = {.type = cs->type,
                            .level = cs->level,
                            .context_id = cs->ctx_id,
                            .value = out.data,
                            .value_len = (uint16_t)out.len};
    answer_bind(a, m, NULL, 0, out.len ? &reply : NULL);
    mp_buf_free(&out);
    free(m);
    free(fwd);
    if (st == MP_GSS_DONE)
        client_authenticated(a);
}

/* ---- further client security contexts (terminated) ----
 *
 * After the logon a client may build another security context on the same
 * connection with an alter_context naming a new auth_context_id (MS-RPCE
 * 3.3.1.5.2.1, 3.3.1.5.4; Impacket's alter_ctx does, with a fresh NTLM
 * NEGOTIATE, then an AUTH3).  Each is checked like the first and must prove
 * the same identity as the association's first one; requests name theirs in
 * the sec_trailer and their answers are protected with it.  A further token
 * for an established context is refused with a fault access denied (Samba's
 * dcesrv_auth_alter does the same). */
static struct leg_sec *client_sec_by_id(struct assoc *a, uint32_t id)
{
    if (a->csec && a->csec->ctx_id == id)
        return a->csec;
    for (size_t i = 0; i < a->n_cx; i++)
        if (a->cx[i]->ctx_id == id)
            return a->cx[i];
    return NULL;
}

/* A leg finished: the identity must be the association's.  NULL or why not. */
static const char *sec_established(struct assoc *a, struct leg_sec *s, int st, const char *reason)
{
    if (st == AUTH_PENDING)
        return "a further security context cannot be checked through winbind";
    if (st == MP_GSS_FAILED)
        return reason;
    if (st != MP_GSS_DONE)
        return NULL; /* more legs to come */
    if (strcasecmp(s->who, a->csec->who))
        return "it is another user than the association's";
    s->done = true;
    mp_info("conn %s: security context %u: authenticated %s (%s, %s)", a->peer, s->ctx_id, s->who,
            mech_name(s), level_names[s->level]);
    return NULL;
}

static void sec_refused(struct assoc *a, uint32_t ctx_id, const char *why)
{
    mp_warn("conn %s: security context %u refused: %s; access denied", a->peer, ctx_id, why);
}

/* The alter_context's auth trailer: the first or a next leg of a further
 * security context.  0 with the reply token in tok (reply points into it),
 * or -1 after a fault access denied. */
static int alter_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                          struct mp_auth *reply, struct mp_buf *tok)
{
    struct mp_auth auth;
    struct leg_sec *s = NULL;
    const char *why = NULL;
    char reason[400] = "";
    int st = MP_GSS_FAILED;
    if (mp_pdu_auth(pdu, h, &auth)) {
        why = "malformed auth trailer";
    } else if ((s = client_sec_by_id(a, auth.context_id)) && s->done) {
        why = "a further token for an established security context";
    } else if (s) {
        why = auth.type != s->type || auth.level != s->level ? "auth type or level changed" : NULL;
        if (!why)
            st = client_auth_next(a, s, &auth, true, tok, reason, sizeof(reason));
    } else if (a->n_cx >= MAX_CSEC - 1) {
        why = "too many security contexts on one connection";
    } else if (auth.level < a->r->min_level || auth.level > MP_AUTHN_LEVEL_PKT_PRIVACY) {
        why = "authentication level below mapiproxy:min client auth level";
    } else if (!(s = calloc(1, sizeof(*s)))) {
        why = "out of memory";
    } else {
        a->cx[a->n_cx++] = s;
        s->type = auth.type;
        s->level = auth.level;
        s->ctx_id = auth.context_id;
        s->header_sign = a->csec->header_sign;
        st = client_auth_first(a, s, &auth, tok, reason, sizeof(reason));
        if (st == MP_GSS_DONE) { /* a one-leg mechanism */
            struct mp_auth none = auth;
            none.value_len = 0;
            st = client_auth_next(a, s, &none, true, tok, reason, sizeof(reason));
        }
    }
    if (!why && s)
        why = sec_established(a, s, st, reason[0] ? reason : "authentication failed");
    if (!why && tok->len > 0xffff)
        why = "reply token too large";
    if (why) {
        sec_refused(a, s ? s->ctx_id : 0, why);
        mp_build_fault(&a->c.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        assoc_finish(a, "access denied");
        return -1;
    }
    *reply = (struct mp_auth){.type = s->type,
                              .level = s->level,
                              .context_id = s->ctx_id,
                              .value = tok->data,
                              .value_len = (uint16_t)tok->len};
    return 0;
}

/* An AUTH3 after the logon: the last leg of a further security context.
 * It has no answer: a refused context stays unestablished, and the first
 * request on it gets a fault access denied (as in Samba). */
static void auth3_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_auth auth;
    struct leg_sec *s = NULL;
    const char *why = NULL;
    char reason[400] = "";
    if (mp_pdu_auth(pdu, h, &auth) || !(s = client_sec_by_id(a, auth.context_id)) || s->done ||
        auth.type != s->type) {
        why = "an AUTH3 for no security context being built";
        s = NULL;
    } else {
        struct mp_buf out = {0};
        int st = client_auth_next(a, s, &auth, false, &out, reason, sizeof(reason));
        mp_buf_free(&out);
        why = st == MP_GSS_CONTINUE ? "a token that needs an answer came in an AUTH3"
                                    : sec_established(a, s, st, reason);
    }
    if (why && !s) {
        client_protocol_error(a, h->call_id, why);
        return;
    }
    if (why) {
        sec_refused(a, s->ctx_id, why);
        s->type = 0; /* no further leg either */
    }
}

/* The upstream's bind_ack to the proxy's own bind: NTLM CHALLENGE in,
 * AUTHENTICATE out in an AUTH3; or the Kerberos AP-REP in, the DCE-style
 * AP-REP out in an AUTH3. */
static void upstream_bind_ack_terminate(struct assoc *a, const uint8_t *pdu,
                                        const struct mp_pdu_hdr *h)
{
    struct mp_relay *r = a->r;
    struct leg_sec *us = a->usec;
    struct mp_bind_ack *ack = &scratch_ack;
    struct mp_auth auth;
    if (h->ptype == MP_PT_BIND_NAK) {
        upstream_failed(a, r->up_mode == UP_NTLM
                               ? "refused the proxy's bind (bind_nak); check "
                                 "dcerpc_mapiproxy:username, :password and :domain"
                               : "refused the proxy's Kerberos bind (bind_nak); check "
                                 "mapiproxy:upstream spn and the upstream's keytab");
        return;
    }
    if (mp_bind_ack_parse(pdu, h, ack) || mp_pdu_auth(pdu, h, &auth)) {
        upstream_failed(a, "sent a bind_ack without an authentication token");
        return;
    }
    for (unsigned i = 0; i < ack->n_results; i++)
        if (ack->res[i].result != MP_CTX_ACCEPT && ack->res[i].result != MP_CTX_NEGOTIATE_ACK)
            mp_warn("conn %s: upstream refused presentation context #%u (reason %u); calls on "
                    "it will fail",
                    a->peer, i, ack->res[i].reason);
    us->header_sign = (h->flags & MP_PFC_PENDING_CANCEL) != 0;
    struct mp_buf out = {0};
    int rc;
    if (us->gss) {
        rc = mp_gss_step(us->gss, auth.value, auth.value_len, &out) == MP_GSS_DONE ? 0 : -1;
        if (rc == 0) {
            size_t v = mp_gss_sig_len(us->gss, us->level, MP_MAX_FRAG);
            us->vlen = v > 16 ? v : 16;
            if (us->level >= MP_AUTHN_LEVEL_PKT_INTEGRITY && !v)
                rc = -1;
        }
        if (rc) {
            char why[400];
            snprintf(why, sizeof(why), "Kerberos AP-REP not accepted: %s", mp_gss_error(us->gss));
            mp_buf_free(&out);
            upstream_failed(a, why);
            return;
        }
    } else {
        rc = mp_ntlm_initiator_authenticate(&us->ini, auth.value, auth.value_len, &out);
        if (rc == 0)
            rc = mp_ntlm_session_init(&us->sess, us->ini.flags, us->ini.exported_key, true);
        if (rc) {
            mp_buf_free(&out);
            upstream_failed(a, "sent an NTLM CHALLENGE the proxy cannot answer");
            return;
        }
        us->sess_init = true;
    }
    /* AUTH3: header, 4 bytes of padding, sec_trailer, the token */
    uint8_t hdr[MP_HDR_LEN + 4 + MP_SEC_TRAILER_LEN] = {5, 0, MP_PT_AUTH3,
                                                        MP_PFC_FIRST | MP_PFC_LAST, 0x10};
    if (sizeof(hdr) + out.len > 0xffff) {
        mp_buf_free(&out);
        upstream_failed(a, "authentication token too large");
        return;
    }
    mp_put16(hdr + 8, (uint16_t)(sizeof(hdr) + out.len));
    mp_put16(hdr + 10, (uint16_t)out.len);
    mp_put32(hdr + 12, a->next_u_call++);
    hdr[20] = us->type;
    hdr[21] = us->level;
    mp_put32(hdr + 24, us->ctx_id);
    if (mp_buf_append(&a->u.out, hdr, sizeof(hdr)) || mp_buf_append(&a->u.out, out.data, out.len)) {
        mp_buf_free(&out);
        assoc_close(a, "out of memory");
        return;
    }
    mp_buf_free(&out);
    mp_timer_cancel(r->loop, &a->timer);
    a->u_xmit = clamp_frag(ack->max_recv);
    a->u_recv = clamp_frag(ack->max_xmit);
    if (a->group && !a->group->up_id)
        a->group->up_id = ack->assoc_group;
    a->state = A_OPEN;
    free(a->up_fwd);
    a->up_fwd = NULL;
    if (us->gss)
        mp_debug("conn %s: authenticated to the upstream %s with Kerberos", a->peer,
                 r->cfg->upstream_spn);
    else
        mp_debug("conn %s: authenticated to the upstream as %s\\%s", a->peer, r->cfg->domain,
                 r->cfg->username);
}

/* A protected fragment in, its plaintext stub located: 0, or -1 after the
 * association was closed (a signature that does not verify ends it). */
static int unprotect(struct assoc *a, struct leg_sec *sec, uint8_t *pdu, const struct mp_pdu_hdr *h,
                     size_t hl, const uint8_t **stub, size_t *len, bool from_client)
{
    if (sec->level < MP_AUTHN_LEVEL_CALL) { /* connect: nothing to verify */
        size_t end =
            h->auth_len ? (size_t)h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN : h->frag_len;
        if (end < hl) {
            assoc_close(a, "truncated PDU");
            return -1;
        }
        *stub = pdu + hl;
        *len = end - hl;
        return 0;
    }
    size_t off, n;
    bool bad;
    if (!h->auth_len || (size_t)h->auth_len + MP_SEC_TRAILER_LEN + hl > h->frag_len)
        bad = true;
    else if (pdu[h->frag_len - h->auth_len - MP_SEC_TRAILER_LEN + 1] != sec->level)
        bad = true; /* a PDU at another level than the association's */
    else if (sec->gss)
        bad = mp_gss_unprotect(sec->gss, pdu, h->frag_len, sec->header_sign, &off, &n) != 0;
    else
        bad = mp_dcerpc_ntlm_unprotect(&sec->sess.recv, pdu, h->frag_len, sec->header_sign, &off,
                                       &n) != 0;
    if (bad) {
        mp_warn("conn %s: %s PDU fails its %s check (call %u); association closed", a->peer,
                from_client ? "client" : "upstream",
                sec->level == MP_AUTHN_LEVEL_PKT_PRIVACY ? "seal" : "signature", h->call_id);
        if (from_client)
            assoc_close(a, "signature check failed");
        else
            upstream_failed(a, "sent a PDU whose signature does not verify");
        return -1;
    }
    *stub = pdu + off;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* client input                                                        */

static void local_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    size_t hl = MP_REQ_HDR_LEN + ((h->flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
    if (h->frag_len < hl || h->auth_len) {
        client_protocol_error(a, h->call_id, "malformed request");
        return;
    }
    uint16_t ctx_id = mp_get16(pdu + 20), opnum = mp_get16(pdu + 22);
    if (h->flags & MP_PFC_FIRST) {
        mp_buf_free(&a->reasm);
        a->reasm_active = true;
        a->reasm_call = h->call_id;
        a->reasm_ctx = ctx_id;
        a->reasm_op = opnum;
    } else if (!a->reasm_active || a->reasm_call != h->call_id) {
        client_protocol_error(a, h->call_id, "request fragment of no call in progress");
        return;
    }
    if (mp_buf_avail(&a->reasm) + (h->frag_len - hl) > MAX_LOCAL_STUB) {
        mp_warn("conn %s: local call larger than %d bytes refused", a->peer, MAX_LOCAL_STUB);
        mp_build_fault(&a->c.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, true);
        assoc_finish(a, "call too large");
        return;
    }
    mp_buf_append(&a->reasm, pdu + hl, h->frag_len - hl);
    if (!(h->flags & MP_PFC_LAST))
        return;
    a->reasm_active = false;
    uint64_t t0 = mp_now_us();
    const struct pctx_entry *e = ctx_find(a, a->reasm_ctx);
    struct call c = {.c_id = h->call_id, .ctx_id = a->reasm_ctx, .opnum = a->reasm_op, .t0 = t0};
    c.in_bytes = (uint32_t)mp_buf_avail(&a->reasm);
    char status[32] = "ok";
    if (!e || a->state == A_LOCAL) {
        mp_build_fault(&a->c.out, h->call_id, a->reasm_ctx, MP_NCA_UNK_IF, true);
        snprintf(status, sizeof(status), "fault:0x%08x", MP_NCA_UNK_IF);
    } else {
        struct mp_buf out = {0};
        uint32_t st = mp_epm_serve(&a->r->reg, a->local_ip, a->reasm_op, mp_buf_head(&a->reasm),
                                   mp_buf_avail(&a->reasm), &out);
        if (st) {
            mp_build_fault(&a->c.out, h->call_id, a->reasm_ctx, st, true);
            snprintf(status, sizeof(status), "fault:0x%08x", st);
        } else {
            send_response_stub(a, a->csec, h->call_id, a->reasm_ctx, mp_buf_head(&out),
                               mp_buf_avail(&out));
            c.out_bytes = (uint32_t)mp_buf_avail(&out);
        }
        mp_buf_free(&out);
    }
    mp_buf_free(&a->reasm);
    a->n_done++;
    if (e)
        log_call(a, &c, status);
    else
        mp_info("call %s ? op(%u) in=%u out=0 status=%s", a->peer, c.opnum, c.in_bytes, status);
}

/* ---- calls that modules want (the slow path) ---- */

static struct call *call_of(struct mp_call *m)
{
    struct assoc *a = m->owner;
    return a ? call_by_c(a, m->c_id) : NULL;
}

/* Sends the (possibly changed) request upstream, cut to the upstream's
 * fragment size. */
static void host_relay(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct call *c = call_of(m);
    if (!c)
        return;
    c->u_id = m->u_id = (a->passthrough || a->csec) ? c->c_id : a->next_u_call++;
    if (emit(&a->u, a->usec, true, MP_PFC_FIRST | MP_PFC_LAST, m->u_id, m->ctx_id, m->opnum,
             m->has_object ? m->object : NULL, mp_buf_head(&m->req), mp_buf_avail(&m->req),
             (uint32_t)mp_buf_avail(&m->req), a->u_xmit)) {
        assoc_close(a, "out of memory");
        return;
    }
    flush_side(a, &a->u);
    if (!a->dead)
        update_interest(a);
}

static void host_answer(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct call *c = call_of(m);
    if (!c)
        return;
    c->out_bytes = (uint32_t)mp_buf_avail(&m->resp);
    log_call(a, c, m->stop_idx >= 0 ? "ok(module)" : "ok");
    if (send_response_stub(a, c->sec, m->c_id, m->ctx_id, mp_buf_head(&m->resp),
                           mp_buf_avail(&m->resp))) {
        assoc_close(a, "out of memory");
        return;
    }
    a->n_done++;
    c->m = NULL; /* host_done frees it */
    call_remove(a, c);
    flush_side(a, &a->c);
    if (!a->dead)
        update_interest(a);
}

static void host_fault(struct mp_call *m)
{
    struct assoc *a = m->owner;
    struct call *c = call_of(m);
    if (!c)
        return;
    mp_build_fault(&a->c.out, m->c_id, m->ctx_id, m->fault, m->stage < MPC_UPSTREAM);
    char status[32];
    snprintf(status, sizeof(status), "fault:0x%08x(module)", m->fault);
    log_call(a, c, status);
    a->n_done++;
    c->m = NULL;
    call_remove(a, c);
    flush_side(a, &a->c);
    if (!a->dead)
        update_interest(a);
}

static void host_done(struct mp_call *m)
{
    struct call *c = call_of(m);
    if (c)
        c->m = NULL;
    mp_call_free(m);
}

static const struct mp_call_host relay_host = {host_relay, host_answer, host_fault, host_done};

/* On a call's first fragment: when modules want it, set it up for
 * reassembly.  Returns -1 when the association was closed. */
static int slow_path_start(struct assoc *a, struct call *c, const uint8_t *pdu,
                           const struct mp_pdu_hdr *h)
{
    const struct pctx_entry *e = ctx_find(a, c->ctx_id);
    if (!e || !e->abstract_known)
        return 0;
    uint32_t mask = mp_modules_want(&a->r->mods, e->uuid, c->opnum);
    if (!mask)
        return 0;
    struct mp_call *m = mp_call_new(&a->r->mods, &relay_host, mask);
    if (!m) {
        assoc_close(a, "out of memory");
        return -1;
    }
    m->owner = a;
    m->session = a->group;
    mp_session_ref(a->group);
    memcpy(m->iface_uuid, e->uuid, 16);
    snprintf(m->iface, sizeof(m->iface), "%s", e->name);
    m->op_name = mp_iface_op_name(e->info, c->opnum);
    snprintf(m->peer, sizeof(m->peer), "%s", a->peer);
    if (a->csec) { /* terminated: who logged on, and whom the upstream sees */
        snprintf(m->user, sizeof(m->user), "%s", a->csec->who);
        m->proxy_identity = a->r->up_mode != UP_S4U;
    }
    mp_call_set_origin(m, "rpc", !a->csec ? "pass-through" : a->csec->gss ? "kerberos" : "ntlm");
    m->opnum = c->opnum;
    m->ctx_id = c->ctx_id;
    m->c_id = c->c_id;
    if (h->flags & MP_PFC_OBJECT_UUID) {
        m->has_object = true;
        memcpy(m->object, pdu + MP_REQ_HDR_LEN, 16);
    }
    c->m = m;
    return 0;
}

static void relay_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    const struct mp_config *cfg = a->r->cfg;
    size_t hl = MP_REQ_HDR_LEN + ((h->flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
    if (h->frag_len < hl + (h->auth_len ? h->auth_len + MP_SEC_TRAILER_LEN : 0)) {
        client_protocol_error(a, h->call_id, "request shorter than its header");
        return;
    }
    if (h->auth_len && !a->passthrough && !a->csec) {
        client_protocol_error(a, h->call_id, "signed request on an unauthenticated association");
        return;
    }
    uint16_t ctx_id = mp_get16(pdu + 20), opnum = mp_get16(pdu + 22);
    uint32_t alloc_hint = mp_get32(pdu + 16);
    uint32_t stub_len = (uint32_t)(h->frag_len - hl);
    const uint8_t *stub = pdu + hl;
    struct leg_sec *sec = a->csec;
    if (a->csec) {       /* terminated: verify and decrypt, go on with the plaintext */
        if (h->auth_len) /* the sec_trailer names the security context */
            sec = client_sec_by_id(a, mp_get32(pdu + h->frag_len - h->auth_len - 4));
        if (!sec || !sec->done) {
            mp_warn("conn %s: request %u on no established security context; access denied",
                    a->peer, h->call_id);
            mp_build_fault(&a->c.out, h->call_id, ctx_id, MP_RPC_S_ACCESS_DENIED, true);
            assoc_finish(a, "access denied");
            return;
        }
        size_t n;
        if (unprotect(a, sec, (uint8_t *)pdu, h, hl, &stub, &n, true))
            return;
        stub_len = (uint32_t)n;
    }
    struct call *c = call_by_c(a, h->call_id);
    if (c && !(h->flags & MP_PFC_FIRST) && c->sec != sec) {
        client_protocol_error(a, h->call_id, "request fragment on another security context");
        return;
    }
    if (h->flags & MP_PFC_FIRST) {
        if (c) {
            client_protocol_error(a, h->call_id, "call id reused while in flight");
            return;
        }
        if (!ctx_find(a, ctx_id)) {
            mp_warn("conn %s: request on unknown presentation context %u", a->peer, ctx_id);
            mp_build_fault(&a->c.out, h->call_id, ctx_id, MP_NCA_UNK_IF, true);
            if (!(h->flags & MP_PFC_LAST))
                assoc_finish(a, "request on unknown context");
            return;
        }
        if (alloc_hint > cfg->max_call_size) {
            mp_warn("conn %s: call %u announces %u bytes (alloc_hint), over max call size %u; "
                    "refused",
                    a->peer, h->call_id, alloc_hint, cfg->max_call_size);
            mp_build_fault(&a->c.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, true);
            if (!(h->flags & MP_PFC_LAST))
                assoc_finish(a, "call too large");
            return;
        }
        c = call_add(a);
        if (!c) {
            assoc_close(a, "out of memory");
            return;
        }
        c->c_id = h->call_id;
        c->sec = sec;
        c->u_id = (a->passthrough || a->csec) ? h->call_id : a->next_u_call++;
        c->ctx_id = ctx_id;
        c->opnum = opnum;
        c->t0 = mp_now_us();
        if (!a->passthrough && a->r->mods.n && slow_path_start(a, c, pdu, h) < 0)
            return;
    } else if (!c || c->req_done) {
        client_protocol_error(a, h->call_id, "request fragment of no call in progress");
        return;
    }
    c->in_bytes += stub_len;
    c->frags++;
    uint32_t max_frags = cfg->max_fragments;
    if (c->in_bytes > cfg->max_call_size || c->frags > max_frags) {
        mp_warn("conn %s: call %u exceeds max call size %u bytes or %u fragments (%u bytes, %u "
                "fragments so far); faulted and closed",
                a->peer, h->call_id, cfg->max_call_size, max_frags, c->in_bytes, c->frags);
        mp_build_fault(&a->c.out, h->call_id, ctx_id, MP_NCA_S_FAULT_REMOTE_NO_MEMORY, false);
        call_remove(a, c);
        assoc_finish(a, "call too large");
        return;
    }
    if (h->flags & MP_PFC_LAST)
        c->req_done = true;
    if (c->m) { /* modules want it: reassemble, then run the chain */
        if (mp_buf_append(&c->m->req, stub, stub_len)) {
            assoc_close(a, "out of memory");
            return;
        }
        if (c->req_done)
            mp_call_run_request(c->m);
        return;
    }
    int rc;
    if (a->usec)
        rc = emit(&a->u, a->usec, true, h->flags, c->u_id, ctx_id, opnum,
                  (h->flags & MP_PFC_OBJECT_UUID) ? pdu + MP_REQ_HDR_LEN : NULL, stub, stub_len,
                  alloc_hint, a->u_xmit);
    else if (a->passthrough)
        rc = conn_send(&a->u, pdu, h->frag_len);
    else
        rc = forward_fragment(&a->u, (uint8_t *)pdu, h, c->u_id, a->u_xmit);
    if (rc)
        assoc_close(a, "out of memory");
}

/* co_cancel and orphaned: relayed with the call id mapped. */
static void relay_cancel(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct call *c = call_by_c(a, h->call_id);
    if (!c) {
        mp_debug("conn %s: %s for call %u not in flight; dropped", a->peer, mp_ptype_name(h->ptype),
                 h->call_id);
        return;
    }
    if (mp_buf_append(&a->u.out, pdu, h->frag_len)) {
        assoc_close(a, "out of memory");
        return;
    }
    mp_put32(a->u.out.data + a->u.out.len - h->frag_len + 12, c->u_id); /* found from the end */
    if (h->ptype == MP_PT_ORPHANED) {
        log_call(a, c, "orphaned");
        call_remove(a, c);
    }
}

static void client_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (a->state == A_WAIT_BIND) {
        if (h->ptype != MP_PT_BIND) {
            client_protocol_error(a, h->call_id, "first PDU is not a bind");
            return;
        }
        handle_bind(a, pdu, h);
        return;
    }
    if (a->state == A_AUTH) {
        if (h->ptype == MP_PT_AUTH3)
            handle_auth3_terminate(a, pdu, h);
        else if (h->ptype == MP_PT_ALTER)
            handle_alter_auth(a, pdu, h);
        else
            client_protocol_error(a, h->call_id, "authentication not completed");
        return;
    }
    if (a->state == A_DENIED) { /* each call: access denied, as Windows answers */
        if (h->ptype == MP_PT_REQUEST && h->frag_len >= MP_REQ_HDR_LEN) {
            if (h->flags & MP_PFC_FIRST) {
                mp_info("call %s op(%u) status=fault:0x%08x (access denied: not authenticated)",
                        a->peer, mp_get16(pdu + 22), MP_RPC_S_ACCESS_DENIED);
                mp_build_fault(&a->c.out, h->call_id, mp_get16(pdu + 20), MP_RPC_S_ACCESS_DENIED,
                               true);
            }
            return;
        }
        mp_build_fault(&a->c.out, h->call_id, 0, MP_RPC_S_ACCESS_DENIED, true);
        assoc_finish(a, "access denied");
        return;
    }
    switch (h->ptype) {
    case MP_PT_REQUEST:
        if (a->local_epm || a->state == A_LOCAL)
            local_request(a, pdu, h);
        else
            relay_request(a, pdu, h);
        break;
    case MP_PT_ALTER:
        handle_alter(a, pdu, h);
        break;
    case MP_PT_AUTH3:
        if (a->csec && a->state == A_OPEN) {
            auth3_security(a, pdu, h);
            break;
        }
        if (!a->passthrough || a->state != A_OPEN || a->csec) {
            client_protocol_error(a, h->call_id, "auth3 on an unauthenticated association");
            return;
        }
        if (mp_buf_append(&a->u.out, pdu, h->frag_len))
            assoc_close(a, "out of memory");
        break;
    case MP_PT_CO_CANCEL:
    case MP_PT_ORPHANED:
        if (a->state == A_OPEN && !a->local_epm && !a->csec)
            relay_cancel(a, pdu, h);
        break;
    case MP_PT_BIND:
        mp_warn("conn %s: second bind on an association refused", a->peer);
        mp_build_bind_nak(&a->c.out, h->call_id, MP_BNAK_NOT_SPECIFIED);
        assoc_finish(a, "second bind");
        break;
    default: {
        char what[64];
        snprintf(what, sizeof(what), "unexpected PDU type %u (%s)", h->ptype,
                 mp_ptype_name(h->ptype));
        client_protocol_error(a, h->call_id, what);
    }
    }
}

static void client_input(struct assoc *a)
{
    struct conn *c = &a->c;
    while (!a->dead && !c->closing &&
           (a->state == A_WAIT_BIND || a->state == A_OPEN || a->state == A_LOCAL ||
            a->state == A_AUTH || a->state == A_DENIED)) {
        size_t avail = mp_buf_avail(&c->in);
        if (avail < MP_HDR_LEN)
            break;
        const uint8_t *p = mp_buf_head(&c->in);
        struct mp_pdu_hdr h;
        const char *bad = mp_pdu_hdr_check(p, avail, &h);
        if (bad) {
            client_protocol_error(a, avail >= 16 ? mp_get32(p + 12) : 0, bad);
            return;
        }
        size_t limit = a->state == A_WAIT_BIND || h.ptype == MP_PT_ALTER || h.ptype == MP_PT_AUTH3
                           ? 0xffff
                           : a->c_recv;
        if (h.frag_len > limit) {
            char what[96];
            snprintf(what, sizeof(what), "fragment of %u bytes over the negotiated %zu", h.frag_len,
                     limit);
            client_protocol_error(a, h.call_id, what);
            return;
        }
        if (avail < h.frag_len)
            break;
        if (h.ptype != MP_PT_BIND && a->state == A_WAIT_BIND) {
            client_protocol_error(a, h.call_id, "first PDU is not a bind");
            return;
        }
        a->r->more_input = avail > h.frag_len; /* one send() for the whole batch */
        client_pdu(a, p, &h);
        a->r->more_input = false;
        if (a->dead)
            return;
        mp_buf_consume(&c->in, h.frag_len);
    }
}

/* ------------------------------------------------------------------ */
/* upstream input                                                      */

static void upstream_bind_ack(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (a->usec && a->state == A_WAIT_ACK && h->ptype != MP_PT_ALTER_RESP) {
        upstream_bind_ack_terminate(a, pdu, h);
        return;
    }
    if (a->usec && h->ptype == MP_PT_ALTER_RESP) { /* the client was answered already */
        free(merge_pop(a));
        return;
    }
    struct merge *m = merge_pop(a);
    if (!m) {
        upstream_failed(a, "sent an unexpected bind answer");
        return;
    }
    if (h->ptype == MP_PT_BIND_NAK) {
        uint16_t reason = h->frag_len >= 18 ? mp_get16(pdu + 16) : 0;
        mp_warn("conn %s: upstream refused the bind (bind_nak reason %u)", a->peer, reason);
        mp_build_bind_nak(&a->c.out, m->c_call_id, reason);
        free(m);
        assoc_finish(a, "upstream refused bind");
        return;
    }
    struct mp_bind_ack *up = &scratch_ack;
    if (mp_bind_ack_parse(pdu, h, up)) {
        free(m);
        upstream_failed(a, "sent a malformed bind answer");
        return;
    }
    struct mp_bind_ack upc = *up; /* answer_bind reuses the scratch */
    if (h->ptype == MP_PT_BIND_ACK) {
        mp_timer_cancel(a->r->loop, &a->timer);
        a->u_xmit = clamp_frag(upc.max_recv);
        a->u_recv = clamp_frag(upc.max_xmit);
        if (a->passthrough) {
            a->c_xmit = upc.max_xmit;
            a->c_recv = upc.max_recv;
        }
        if (a->group && !a->group->up_id)
            a->group->up_id = upc.assoc_group;
        a->state = A_OPEN;
    }
    struct mp_auth auth, *ap = NULL;
    if (h->auth_len && mp_pdu_auth(pdu, h, &auth) == 0)
        ap = &auth;
    answer_bind(a, m, &upc, h->flags & ~(MP_PFC_FIRST | MP_PFC_LAST), ap);
    free(m);
}

static void upstream_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    switch (h->ptype) {
    case MP_PT_BIND_ACK:
    case MP_PT_BIND_NAK:
    case MP_PT_ALTER_RESP:
        upstream_bind_ack(a, pdu, h);
        return;
    case MP_PT_RESPONSE:
    case MP_PT_FAULT: {
        if (a->state != A_OPEN)
            break;
        struct call *c = call_by_u(a, h->call_id);
        if (!c) {
            mp_debug("conn %s: upstream answered call %u not in flight; dropped", a->peer,
                     h->call_id);
            return;
        }
        size_t hl = h->ptype == MP_PT_FAULT ? MP_FAULT_LEN : MP_RESP_HDR_LEN;
        if (h->frag_len < hl) {
            upstream_failed(a, "sent a truncated response");
            return;
        }
        const uint8_t *rstub = pdu + hl;
        size_t rlen = h->frag_len - hl;
        if (a->usec && h->ptype == MP_PT_RESPONSE) {
            if (unprotect(a, a->usec, (uint8_t *)pdu, h, hl, &rstub, &rlen, false))
                return;
        }
        if (c->m && h->ptype == MP_PT_RESPONSE) {
            struct mp_call *m = c->m;
            if (mp_buf_avail(&m->resp) + rlen > a->r->cfg->max_call_size) {
                char why[96];
                snprintf(why, sizeof(why), "sent a response over max call size (%u bytes)",
                         a->r->cfg->max_call_size);
                upstream_failed(a, why);
                return;
            }
            if (mp_buf_append(&m->resp, rstub, rlen)) {
                assoc_close(a, "out of memory");
                return;
            }
            if (h->flags & MP_PFC_LAST)
                mp_call_run_response(m);
            return;
        }
        bool final = h->ptype == MP_PT_FAULT || (h->flags & MP_PFC_LAST);
        c->out_bytes += (uint32_t)(h->frag_len - hl);
        uint32_t c_id = c->c_id;
        struct leg_sec *csec = c->sec;
        if (final) { /* logged before the answer leaves: a reader of the log never races it */
            char status[32] = "ok";
            if (h->ptype == MP_PT_FAULT)
                snprintf(status, sizeof(status), "fault:0x%08x", mp_get32(pdu + 24));
            if (!c->req_done)
                mp_debug("conn %s: upstream answered call %u before its last fragment", a->peer,
                         c->c_id);
            log_call(a, c, status);
            a->n_done++;
            call_remove(a, c);
        }
        int rc;
        if (a->csec && h->ptype == MP_PT_FAULT)
            rc = mp_build_fault(&a->c.out, c_id, mp_get16(pdu + 20), mp_get32(pdu + 24),
                                (h->flags & MP_PFC_DID_NOT_EXECUTE) != 0);
        else if (a->csec)
            rc = emit(&a->c, csec, false, h->flags, c_id, mp_get16(pdu + 20), 0, NULL, rstub, rlen,
                      mp_get32(pdu + 16), a->c_xmit);
        else
            rc = a->passthrough ? conn_send(&a->c, pdu, h->frag_len)
                                : forward_fragment(&a->c, (uint8_t *)pdu, h, c_id, a->c_xmit);
        if (rc)
            assoc_close(a, "out of memory");
        return;
    }
    case MP_PT_SHUTDOWN:
        mp_info("conn %s: upstream sent shutdown; relayed", a->peer);
        if (mp_buf_append(&a->c.out, pdu, h->frag_len))
            assoc_close(a, "out of memory");
        return;
    default:
        break;
    }
    char what[96];
    snprintf(what, sizeof(what), "sent an unexpected PDU type %u (%s)", h->ptype,
             mp_ptype_name(h->ptype));
    upstream_failed(a, what);
}

static void upstream_input(struct assoc *a)
{
    struct conn *c = &a->u;
    while (!a->dead && c->io.fd >= 0) {
        size_t avail = mp_buf_avail(&c->in);
        if (avail < MP_HDR_LEN)
            break;
        const uint8_t *p = mp_buf_head(&c->in);
        struct mp_pdu_hdr h;
        const char *bad = mp_pdu_hdr_check(p, avail, &h);
        if (bad) {
            char what[96];
            snprintf(what, sizeof(what), "sent a bad PDU: %s", bad);
            upstream_failed(a, what);
            return;
        }
        if (avail < h.frag_len)
            break;
        a->r->more_input = avail > h.frag_len;
        upstream_pdu(a, p, &h);
        a->r->more_input = false;
        if (a->dead || c->io.fd < 0)
            return;
        mp_buf_consume(&c->in, h.frag_len);
    }
    /* A completed bind lets the client's queued PDUs through. */
    if (!a->dead && a->state == A_OPEN && mp_buf_avail(&a->c.in))
        client_input(a);
}

/* ------------------------------------------------------------------ */
/* upstream endpoint mapper lookup                                     */

static void resolver_start(struct assoc *a)
{
    struct mp_bind *b = &scratch_bind;
    memset(b, 0, offsetof(struct mp_bind, ctx));
    b->max_xmit = b->max_recv = MP_MAX_FRAG;
    b->n_ctx = 1;
    b->ctx[0].ctx_id = 0;
    b->ctx[0].n_ts = 1;
    b->ctx[0].abstract = mp_epm_syntax;
    b->ctx[0].ts[0] = mp_ndr20_syntax;
    struct mp_buf stub = {0};
    int rc =
        mp_build_bind(&a->res.out, MP_PT_BIND, MP_PFC_FIRST | MP_PFC_LAST, 1, b, NULL) ||
        mp_epm_map_request(&stub, &a->target) ||
        mp_build_request(&a->res.out, MP_PFC_FIRST | MP_PFC_LAST, 2, 0, MP_EPM_OP_MAP, NULL,
                         mp_buf_head(&stub), mp_buf_avail(&stub), (uint32_t)mp_buf_avail(&stub));
    mp_buf_free(&stub);
    if (rc)
        upstream_failed(a, "endpoint mapper request could not be built");
}

static void resolver_input(struct assoc *a)
{
    struct conn *c = &a->res;
    while (!a->dead && c->io.fd >= 0) {
        size_t avail = mp_buf_avail(&c->in);
        struct mp_pdu_hdr h;
        if (avail < MP_HDR_LEN)
            return;
        const uint8_t *p = mp_buf_head(&c->in);
        if (mp_pdu_hdr_check(p, avail, &h)) {
            upstream_failed(a, "endpoint mapper sent a bad PDU");
            return;
        }
        if (avail < h.frag_len)
            return;
        if (h.ptype == MP_PT_BIND_ACK) {
            struct mp_bind_ack *ack = &scratch_ack;
            if (mp_bind_ack_parse(p, &h, ack) || ack->n_results < 1 ||
                ack->res[0].result != MP_CTX_ACCEPT) {
                upstream_failed(a, "endpoint mapper refused the bind");
                return;
            }
        } else if (h.ptype == MP_PT_RESPONSE && h.frag_len >= MP_RESP_HDR_LEN) {
            if (mp_buf_avail(&a->reasm) + h.frag_len > MAX_LOCAL_STUB) {
                upstream_failed(a, "endpoint mapper answer too large");
                return;
            }
            mp_buf_append(&a->reasm, p + MP_RESP_HDR_LEN, h.frag_len - MP_RESP_HDR_LEN);
            if (h.flags & MP_PFC_LAST) {
                uint16_t port = 0;
                uint32_t status = 0;
                int rc = mp_epm_map_response(mp_buf_head(&a->reasm), mp_buf_avail(&a->reasm), &port,
                                             &status);
                mp_buf_free(&a->reasm);
                conn_release(a->r, c);
                char uuid[37];
                mp_uuid_format(a->target.uuid, uuid);
                if (rc || !port) {
                    char why[160];
                    snprintf(why, sizeof(why),
                             "endpoint mapper has no ncacn_ip_tcp endpoint for %s v%u.%u "
                             "(status 0x%08x)",
                             uuid, a->target.major, a->target.minor, status);
                    upstream_failed(a, why);
                    return;
                }
                mp_debug("conn %s: upstream endpoint mapper: %s is at port %u", a->peer, uuid,
                         port);
                port_store(a->r, &a->target, port);
                upstream_connect(a, port);
                return;
            }
        } else {
            char why[96];
            snprintf(why, sizeof(why), "endpoint mapper answered with %s", mp_ptype_name(h.ptype));
            upstream_failed(a, why);
            return;
        }
        mp_buf_consume(&c->in, h.frag_len);
    }
}

/* ------------------------------------------------------------------ */
/* I/O callbacks                                                       */

static void on_connected(struct assoc *a, struct conn *c)
{
    c->connecting = false;
    if (c->role == ROLE_RESOLVER) {
        resolver_start(a);
    } else {
        a->state = A_WAIT_ACK;
        mp_buf_append(&c->out, mp_buf_head(&a->pending_bind), mp_buf_avail(&a->pending_bind));
        mp_buf_free(&a->pending_bind);
    }
}

static void conn_read(struct assoc *a, struct conn *c)
{
    struct mp_relay *r = a->r;
    bool borrow = mp_buf_avail(&c->in) == 0;
    uint8_t *dst;
    size_t room;
    if (borrow) {
        mp_buf_free(&c->in);
        dst = r->rbuf;
        room = sizeof(r->rbuf);
    } else {
        if (mp_buf_reserve(&c->in, READ_CHUNK)) {
            assoc_close(a, "out of memory");
            return;
        }
        dst = c->in.data + c->in.len;
        room = READ_CHUNK;
    }
    ssize_t n = recv(c->io.fd, dst, room, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        const char *why = n == 0 ? "closed the connection" : strerror(errno);
        if (c->role == ROLE_CLIENT) {
            if (mp_buf_avail(&c->in))
                mp_warn("conn %s: client closed in the middle of a PDU (%zu bytes pending)",
                        a->peer, mp_buf_avail(&c->in));
            assoc_close(a, n == 0 ? "client closed" : "client read error");
        } else {
            char what[128];
            snprintf(what, sizeof(what), "%s%s", c->role == ROLE_RESOLVER ? "endpoint mapper " : "",
                     why);
            upstream_failed(a, what);
        }
        return;
    }
    if (borrow) {
        c->in = (struct mp_buf){.data = r->rbuf, .off = 0, .len = (size_t)n, .cap = room};
        c->in_borrowed = true;
    } else {
        c->in.len += (size_t)n;
    }
    a->last_io_ms = mp_now_ms();
    if (c->role == ROLE_CLIENT)
        client_input(a);
    else if (c->role == ROLE_UPSTREAM)
        upstream_input(a);
    else
        resolver_input(a);
    if (c->in_borrowed) { /* keep only what is left, in memory of its own */
        struct mp_buf keep = {0};
        size_t left = a->dead ? 0 : mp_buf_avail(&c->in);
        c->in_borrowed = false;
        if (left && mp_buf_append(&keep, mp_buf_head(&c->in), left)) {
            c->in = (struct mp_buf){0};
            assoc_close(a, "out of memory");
            return;
        }
        c->in = keep;
    }
}

static void conn_cb(struct mp_io *io, uint32_t ev)
{
    struct conn *c = io->data;
    struct assoc *a = c->a;
    if (a->dead || io->fd < 0)
        return;
    if (c->connecting) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            char why[400];
            snprintf(why, sizeof(why), "%s port %u%s: connect failed: %s", a->r->cfg->binding.host,
                     c->port, c->role == ROLE_RESOLVER ? " (endpoint mapper)" : "", strerror(err));
            if (c->role == ROLE_UPSTREAM)
                port_forget(a->r, &a->target); /* the server may have moved: ask again */
            upstream_failed(a, why);
            return;
        }
        if (!(ev & MP_WRITE))
            return;
        on_connected(a, c);
    }
    if (ev & (MP_READ | MP_ERRHUP | 0x2000))
        conn_read(a, c);
    if (!a->dead) {
        flush_side(a, &a->c);
        if (!a->dead)
            flush_side(a, &a->u);
        if (!a->dead)
            flush_side(a, &a->res);
    }
    update_interest(a);
}

static void accept_one(void *data, int fd, const char *host, uint16_t port)
{
    struct listener *l = data;
    struct mp_relay *r = l->r;
    char peer[64];
    snprintf(peer, sizeof(peer), "%s:%u", host, port);
    if (r->n_assoc >= r->cfg->max_connections) {
        mp_warn("conn %s refused: %zu connections open (mapiproxy:max connections)", peer,
                r->n_assoc);
        close(fd);
        return;
    }
    uint8_t ip[16] = {0};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET6) {
        memcpy(ip, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    } else if (ss.ss_family == AF_INET) {
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &((struct sockaddr_in *)&ss)->sin_addr, 4);
    }
    struct addr_count *ac = addr_take(r, ip);
    if (!ac) {
        mp_warn("conn %s refused: %u connections open from %s (mapiproxy:max connections per "
                "address)",
                peer, r->cfg->max_conn_per_addr, host);
        close(fd);
        return;
    }
    struct assoc *a = calloc(1, sizeof(*a));
    if (!a) {
        addr_release(r, ac);
        close(fd);
        return;
    }
    a->addr = ac;
    a->r = r;
    a->merges_tail = &a->merges;
    a->next_u_call = 1;
    a->local_epm = l->epm;
    a->t_open = a->last_io_ms = a->c_progress_ms = a->u_progress_ms = mp_now_ms();
    a->stall.cb = stall_cb;
    a->stall.data = a;
    a->idle.cb = idle_cb;
    a->idle.data = a;
    if (r->cfg->idle_timeout_s)
        mp_timer_arm(r->loop, &a->idle, (uint64_t)r->cfg->idle_timeout_s * 1000);
    a->bindt.cb = bind_timeout_cb;
    a->bindt.data = a;
    if (r->cfg->bind_timeout_s)
        mp_timer_arm(r->loop, &a->bindt, (uint64_t)r->cfg->bind_timeout_s * 1000);
    snprintf(a->peer, sizeof(a->peer), "%s", peer);
    struct conn *cs[3] = {&a->c, &a->u, &a->res};
    for (int k = 0; k < 3; k++) {
        cs[k]->a = a;
        cs[k]->io.fd = -1;
    }
    a->c.role = ROLE_CLIENT;
    a->c.io.fd = fd;
    a->c.io.cb = conn_cb;
    a->c.io.data = &a->c;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_storage me;
    socklen_t ml = sizeof(me);
    if (getsockname(fd, (struct sockaddr *)&me, &ml) == 0 && me.ss_family == AF_INET)
        a->local_ip = ((struct sockaddr_in *)&me)->sin_addr.s_addr;
    a->next = r->assocs;
    if (r->assocs)
        r->assocs->prev = a;
    r->assocs = a;
    r->n_assoc++;
    mp_info("conn open %s -> %s", peer, l->epm ? "epmapper" : "rpc");
    mp_metrics_open(l->epm ? "epmapper" : "rpc", 1);
    update_interest(a);
}

static void accept_cb(struct mp_io *io, uint32_t ev)
{
    struct listener *l = io->data;
    mp_accept_ready(l->r->loop, io, l->epm ? "epmapper" : "rpc", accept_one, l);
}

/* ------------------------------------------------------------------ */
/* setup                                                               */

static int listen_on(struct mp_relay *r, const char *host, uint16_t port, bool epm, uint16_t *bound)
{
    int fd =
        mp_listen_tcp(host, port, 1024, epm ? "mapiproxy:epmapper port" : "mapiproxy:rpc port");
    if (fd < 0)
        return -1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                           : ((struct sockaddr_in6 *)&ss)->sin6_port);
    struct listener *l = &r->ls[r->n_ls++];
    l->r = r;
    l->epm = epm;
    l->io.fd = fd;
    l->io.cb = accept_cb;
    l->io.data = l;
    mp_io_set(r->loop, &l->io, MP_READ);
    mp_info("listening on %s port %u (%s)", host, *bound, epm ? "epmapper" : "rpc");
    return 0;
}

/* Specified credentials: clients authenticate to the proxy against the
 * credentials file; the proxy authenticates to the upstream as
 * dcerpc_mapiproxy:username. */
/* Kerberos credentials for termination: the acceptor (or the service
 * credential, which also accepts, for S4U) and the upstream initiator.  The
 * initiator's first service ticket is fetched here, so a wrong SPN or
 * keytab shows at startup and the first association does not wait for the
 * KDC. */
static int setup_kerberos(struct mp_relay *r)
{
    const struct mp_config *cfg = r->cfg;
    char err[MP_GSS_ERRLEN];
    bool s4u = !strcasecmp(cfg->delegation, "s4u");
    for (size_t i = 0; cfg->realm[i] && i + 1 < sizeof(r->realm_uc); i++)
        r->realm_uc[i] = (char)toupper((unsigned char)cfg->realm[i]);
    if (cfg->keytab[0]) {
        /* any key of the keytab: Outlook asks for exchangeMDB/, exchangeRFR/
         * and exchangeAB/ of the name it connects to, all the proxy's */
        r->acc_cred = mp_gss_cred_acceptor(cfg->keytab, NULL, err, sizeof(err));
        if (!r->acc_cred) {
            mp_error("mapiproxy:keytab %s: %s", cfg->keytab, err);
            return -1;
        }
    }
    if (s4u) {
        r->up_mode = UP_S4U;
        /* a credential of its own for the worker thread (S4U2Self): the
         * loop thread accepts with acc_cred */
        r->svc_cred = mp_gss_cred_service(cfg->keytab, cfg->service_principal, err, sizeof(err));
        if (!r->svc_cred) {
            mp_error("mapiproxy:delegation = s4u: the proxy's TGT from mapiproxy:keytab for %s: %s",
                     cfg->service_principal, err);
            return -1;
        }
        r->svc_born_ms = mp_now_ms();
    } else if (cfg->upstream_spn[0]) {
        r->up_mode = UP_KRB;
        char ccache[600];
        const char *cc = cfg->upstream_ccache[0] ? cfg->upstream_ccache : NULL;
        if (!cc && cfg->upstream_keytab[0]) { /* tickets from the keytab, kept in memory */
            snprintf(ccache, sizeof(ccache), "MEMORY:mapiproxy-upstream-%p", (void *)r);
            cc = ccache;
        }
        r->up_cred = mp_gss_cred_initiator(
            cc, cfg->upstream_keytab[0] ? cfg->upstream_keytab : NULL,
            cfg->upstream_principal[0] ? cfg->upstream_principal : NULL, err, sizeof(err));
        if (!r->up_cred) {
            mp_error("mapiproxy:upstream keytab/ccache/principal: %s", err);
            return -1;
        }
    } else {
        r->up_mode = UP_NTLM;
        return 0;
    }
    if (r->up_mode == UP_KRB) { /* warm the ticket cache */
        struct mp_gss_ctx *c = mp_gss_initiator_new(r->up_cred, cfg->upstream_spn,
                                                    MP_AUTHN_GSS_KERBEROS, 0, err, sizeof(err));
        struct mp_buf tok = {0};
        if (!c || mp_gss_step(c, NULL, 0, &tok) != MP_GSS_CONTINUE)
            mp_warn("mapiproxy:upstream spn %s: no service ticket yet (%s); each association "
                    "will try again",
                    cfg->upstream_spn, c ? mp_gss_error(c) : err);
        mp_buf_free(&tok);
        mp_gss_ctx_free(c);
    }
    return kdc_start(r);
}

static void auth_free(struct mp_relay *r)
{
    kdc_stop(r); /* first: the worker uses the credentials */
    if (r->winbind)
        mp_winbind_shutdown();
    mp_groups_free(&r->ugroups);
    mp_credstore_free(&r->creds);
    mp_gss_cred_free(r->acc_cred);
    mp_gss_cred_free(r->up_cred);
    mp_gss_cred_free(r->svc_cred);
    for (size_t i = 0; i < r->n_retired; i++)
        mp_gss_cred_free(r->retired[i]);
    r->acc_cred = r->up_cred = r->svc_cred = NULL;
    r->n_retired = 0;
}

/* The credentials file, and NTLM user names in UPN form (user@dns.domain
 * with an empty domain, as clients logged on with a UPN send them): these
 * match an entry for user whose domain is empty, the DNS domain, or its
 * first label (the usual NetBIOS name). */
static int ntlm_lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    if (mp_credstore_lookup(arg, user, domain, nt_hash) == 0)
        return 0;
    const char *at = strchr(user, '@');
    if ((domain && domain[0]) || !at || at == user || !at[1])
        return -1;
    char name[160], dom[256];
    snprintf(name, sizeof(name), "%.*s", (int)(at - user), user);
    snprintf(dom, sizeof(dom), "%s", at + 1);
    if (mp_credstore_lookup(arg, name, dom, nt_hash) == 0)
        return 0;
    dom[strcspn(dom, ".")] = 0;
    return mp_credstore_lookup(arg, name, dom, nt_hash);
}

static int setup_terminate(struct mp_relay *r)
{
    const struct mp_config *cfg = r->cfg;
    char why[600];
    r->terminate = true;
    r->winbind = !strcasecmp(cfg->ntlm_backend, "winbind");
    r->ntlm_on = r->winbind || cfg->credentials_file[0];
    if (!r->ntlm_on && !cfg->keytab[0]) {
        mp_error("the proxy terminates authentication (dcerpc_mapiproxy:username, "
                 "mapiproxy:upstream spn or mapiproxy:delegation is set), so clients "
                 "authenticate to the proxy: set mapiproxy:credentials file (NTLM, "
                 "user:domain:NTHASH lines) or mapiproxy:ntlm backend = winbind (NTLM users "
                 "of the domain) and/or mapiproxy:keytab (Kerberos), or set "
                 "dcerpc_mapiproxy:delegated_auth = yes to relay the clients' own logons");
        return -1;
    }
    if (r->winbind && mp_winbind_init(cfg->winbind_socket_dir, why, sizeof(why))) {
        mp_error("mapiproxy:ntlm backend = winbind: %s", why);
        return -1;
    }
    if (cfg->groups_file[0] && mp_groups_load(&r->ugroups, cfg->groups_file, why, sizeof(why))) {
        mp_error("mapiproxy:groups file: %s", why);
        return -1;
    }
    if (cfg->credentials_file[0] &&
        mp_credstore_load(&r->creds, cfg->credentials_file, why, sizeof(why))) {
        mp_error("mapiproxy:credentials file: %s", why);
        return -1;
    }
    if (setup_kerberos(r))
        return -1;
    if (r->winbind && !r->kdc_started && kdc_start(r)) /* winbind's calls run on the worker */
        return -1;
    if (r->up_mode != UP_NTLM) {
        /* the upstream password is not needed */
    } else if (cfg->password_file[0]) {
        if (mp_read_secret_file(cfg->password_file, r->up_password, sizeof(r->up_password), why,
                                sizeof(why))) {
            mp_error("mapiproxy:password file: %s", why);
            return -1;
        }
    } else if (cfg->password[0]) {
        snprintf(r->up_password, sizeof(r->up_password), "%s", cfg->password);
    } else {
        mp_error("dcerpc_mapiproxy:username is set without a password: set "
                 "dcerpc_mapiproxy:password or, better, mapiproxy:password file");
        return -1;
    }
    const char *lv = cfg->upstream_auth_level[0] ? cfg->upstream_auth_level : "privacy";
    if (!strcasecmp(lv, "privacy"))
        r->up_level = MP_AUTHN_LEVEL_PKT_PRIVACY;
    else if (!strcasecmp(lv, "integrity"))
        r->up_level = MP_AUTHN_LEVEL_PKT_INTEGRITY;
    else if (!strcasecmp(lv, "connect"))
        r->up_level = MP_AUTHN_LEVEL_CONNECT;
    else {
        mp_error("mapiproxy:upstream auth level \"%s\": use privacy, integrity or connect", lv);
        return -1;
    }
    if (mp_ntlm_crypto_init()) {
        mp_error("NTLM needs MD4 and RC4 from OpenSSL's legacy provider: %s",
                 mp_ntlm_crypto_error());
        return -1;
    }
    if (cfg->realm[0])
        snprintf(r->fqdn, sizeof(r->fqdn), "%.63s.%.180s", cfg->netbios_name, cfg->realm);
    else
        snprintf(r->fqdn, sizeof(r->fqdn), "%s", cfg->netbios_name);
    r->acc_cfg.nb_computer = cfg->netbios_name;
    r->acc_cfg.nb_domain = cfg->domain[0] ? cfg->domain : cfg->netbios_name;
    r->acc_cfg.dns_computer = r->fqdn;
    r->acc_cfg.dns_domain = cfg->realm;
    r->acc_cfg.dns_tree = cfg->realm;
    r->acc_cfg.lookup = ntlm_lookup;
    r->acc_cfg.lookup_arg = &r->creds;
    char up[700];
    if (r->up_mode == UP_NTLM)
        snprintf(up, sizeof(up), "%s\\%s (NTLM)", cfg->domain, cfg->username);
    else if (r->up_mode == UP_KRB)
        snprintf(up, sizeof(up), "the proxy's Kerberos identity at %s", cfg->upstream_spn);
    else
        snprintf(up, sizeof(up), "each client (S4U2Self + S4U2Proxy via %s) at %s",
                 cfg->service_principal, cfg->upstream_spn);
    mp_info("clients authenticate to the proxy (%s%s%s); the upstream sees %s at level %s",
            r->winbind                 ? "NTLM via winbind"
            : cfg->credentials_file[0] ? "NTLM"
                                       : "",
            r->ntlm_on && r->acc_cred ? ", " : "", r->acc_cred ? "Kerberos" : "", up, lv);
    if (r->winbind)
        mp_info("winbind: NTLM responses are checked by the domain through winbindd at %s",
                mp_winbind_socket_dir());
    return 0;
}

/* mapiproxy:pass-through interfaces: binds to these keep the clients' own
 * authentication (relayed byte for byte) while the others are terminated. */
static void setup_passthrough(struct mp_relay *r)
{
    char list[sizeof(r->cfg->passthrough_ifaces)];
    snprintf(list, sizeof(list), "%s", r->cfg->passthrough_ifaces);
    for (char *save = NULL, *t = strtok_r(list, " ,\t", &save); t && r->n_pt < MP_MAX_IFACES;
         t = strtok_r(NULL, " ,\t", &save))
        if (mp_iface_parse(t, &r->pt_ifaces[r->n_pt]) == 0)
            r->n_pt++;
}

static bool iface_is_pt(const struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t k = 0; k < r->n_pt; k++)
        if (mp_iface_match(&r->pt_ifaces[k], s->uuid, s->major, s->minor))
            return true;
    return false;
}

/* 1: every real context of the bind is a pass-through interface; 0: none
 * is; -1: both kinds (refused: a terminated interface must never ride on
 * an association relayed as it is). */
static int bind_pt_kind(const struct mp_relay *r, const struct mp_bind *b)
{
    int pt = 0, other = 0;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        if (b->ctx[i].n_ts && mp_syntax_is_btfn(&b->ctx[i].ts[0]))
            continue;
        if (iface_is_pt(r, &b->ctx[i].abstract))
            pt++;
        else
            other++;
    }
    return pt && other ? -1 : pt ? 1 : 0;
}

static bool bind_is_passthrough(const struct mp_relay *r, const struct mp_bind *b)
{
    return bind_pt_kind(r, b) == 1;
}

struct mp_relay *mp_relay_new(struct mp_loop *loop, const struct mp_config *cfg)
{
    struct mp_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->cfg = cfg;
    if (mp_modules_load(&r->mods, cfg, loop)) {
        free(r);
        return NULL;
    }
    bool want_terminate =
        cfg->username[0] || cfg->upstream_spn[0] || !strcasecmp(cfg->delegation, "s4u");
    if (want_terminate && !cfg->delegated_auth && setup_terminate(r)) {
        mp_modules_unload(&r->mods);
        auth_free(r);
        free(r);
        return NULL;
    }
    setup_passthrough(r);
    /* mapiproxy:min client auth level: integrity by default where the proxy
     * terminates authentication; elsewhere only when set. */
    int ml = cfg->min_client_auth_level[0] ? mp_auth_level_parse(cfg->min_client_auth_level) : -1;
    r->min_level = ml > 0 ? (uint8_t)ml : r->terminate ? MP_AUTHN_LEVEL_PKT_INTEGRITY : 1;
    r->min_level_set = ml > 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(cfg->binding.host, NULL, &hints, &ai);
    if (rc) {
        mp_error("dcerpc_mapiproxy:binding: cannot resolve upstream host %s: %s; check the "
                 "name or give an address",
                 cfg->binding.host, gai_strerror(rc));
        mp_modules_unload(&r->mods);
        auth_free(r);
        free(r);
        return NULL;
    }
    memcpy(&r->up_addr, ai->ai_addr, ai->ai_addrlen);
    r->up_addr_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    uint16_t rpc = cfg->rpc_port, epm = cfg->epm_port;
    for (size_t i = 0; i < cfg->n_listen; i++) {
        uint16_t got;
        if (listen_on(r, cfg->listen[i].host, rpc, false, &got)) {
            mp_relay_free(r);
            return NULL;
        }
        rpc = got;
        if (cfg->epm_port) {
            if (listen_on(r, cfg->listen[i].host, epm, true, &got)) {
                mp_relay_free(r);
                return NULL;
            }
            epm = got;
        }
    }
    r->rpc_port = rpc;
    r->epm_port = epm;
    for (size_t i = 0; i < cfg->n_ifaces && r->reg.n < MP_EPM_MAX_ENTRIES; i++) {
        struct mp_epm_entry *e = &r->reg.e[r->reg.n++];
        memcpy(e->iface.uuid, cfg->ifaces[i].uuid, 16);
        e->iface.major = cfg->ifaces[i].vers_major;
        e->iface.minor = cfg->ifaces[i].vers_minor;
        if (cfg->ifaces[i].any_version) {
            const struct mp_iface_info *info = mp_iface_by_uuid(e->iface.uuid);
            if (info)
                e->iface = info->syntax;
        }
        e->port = rpc;
        snprintf(e->annotation, sizeof(e->annotation), "mapiproxy %s", cfg->ifaces[i].name);
    }
    return r;
}

uint16_t mp_relay_rpc_port(const struct mp_relay *r)
{
    return r->rpc_port;
}

uint16_t mp_relay_epm_port(const struct mp_relay *r)
{
    return r->epm_port;
}

void mp_relay_stop_listening(struct mp_relay *r)
{
    for (size_t i = 0; i < r->n_ls; i++) {
        mp_accept_forget(&r->ls[i].io);
        mp_io_close(r->loop, &r->ls[i].io);
    }
    r->n_ls = 0;
}

size_t mp_relay_live(const struct mp_relay *r)
{
    return r->n_assoc;
}

void mp_relay_shutdown(struct mp_relay *r)
{
    mp_relay_stop_listening(r);
    while (r->assocs)
        assoc_close(r->assocs, "proxy shutting down");
}

void mp_relay_free(struct mp_relay *r)
{
    if (!r)
        return;
    mp_relay_shutdown(r);
    for (size_t i = 0; i < N_GROUP_BUCKETS; i++)
        while (r->groups[i]) {
            struct mp_session *g = r->groups[i];
            g->refs = 1; /* a module that kept a reference gets its unbind now */
            mp_session_unref(g);
        }
    mp_modules_unload(&r->mods);
    auth_free(r); /* every association (and its contexts) is gone */
    mp_ntlm_cleanse(r->up_password, sizeof(r->up_password));
    free(r);
}

struct mp_modules *mp_relay_modules(struct mp_relay *r)
{
    return &r->mods;
}
