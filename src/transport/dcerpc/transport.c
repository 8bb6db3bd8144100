/* The DCE/RPC transport's setup: listeners, per-address connection counts,
 * pass-through interfaces, the public face (transport/dcerpc/dcerpc.h). */
#include "transport/dcerpc/internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/workers.h"
#include "net/accept.h"
#include "net/conn.h"
#include "ops/metrics.h"
#include "ops/pcapng.h"
#include "transport/rpch/upclient.h"

/* Connections per client address are counted for the process, across
 * workers and configuration generations (doc/internals/workers.md): one
 * table under a mutex, taken once per connection. */
static pthread_mutex_t addr_mu = PTHREAD_MUTEX_INITIALIZER;
static struct addr_count *addrs[N_ADDR_BUCKETS];

static struct addr_count **addr_slot(const uint8_t ip[16])
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ ip[i]) * 16777619u;
    struct addr_count **pp = &addrs[h % N_ADDR_BUCKETS];
    while (*pp && memcmp((*pp)->ip, ip, 16))
        pp = &(*pp)->next;
    return pp;
}

/* Counts a new connection from ip: the entry, or NULL when the address has
 * max connections per address open already (or out of memory). */
struct addr_count *dce_addr_take(struct mp_relay *r, const uint8_t ip[16])
{
    uint32_t max = r->cfg->max_conn_per_addr;
    pthread_mutex_lock(&addr_mu);
    struct addr_count **pp = addr_slot(ip);
    struct addr_count *e = *pp;
    if (e && max && e->n >= max) {
        e = NULL;
    } else {
        if (!e && (e = calloc(1, sizeof(*e)))) {
            memcpy(e->ip, ip, 16);
            *pp = e;
        }
        if (e)
            e->n++;
    }
    pthread_mutex_unlock(&addr_mu);
    return e;
}

void dce_addr_release(struct mp_relay *r, struct addr_count *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&addr_mu);
    if (!--e->n) {
        struct addr_count **pp = addr_slot(e->ip);
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&addr_mu);
}

static void accept_cb(struct mp_io *io, uint32_t ev)
{
    struct listener *l = io->data;
    mp_accept_ready(l->r->loop, io, l->epm ? "epmapper" : "rpc", dce_assoc_accept, l);
}

static int listen_on(struct mp_relay *r, const char *host, uint16_t port, bool epm, uint16_t *bound)
{
    int fd =
        mp_listen_tcp(host, port, 1024, epm ? "mapiproxy:epmapper port" : "mapiproxy:rpc port");
    if (fd < 0)
        return -1;
    *bound = mp_sock_local_port(fd);
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

bool dce_iface_is_pt(const struct mp_relay *r, const struct mp_syntax *s)
{
    for (size_t k = 0; k < r->n_pt; k++)
        if (mp_iface_match(&r->pt_ifaces[k], s->uuid, s->major, s->minor))
            return true;
    return false;
}

/* 1: every real context of the bind is a pass-through interface; 0: none
 * is; -1: both kinds (refused: a terminated interface must never ride on
 * an association relayed as it is). */
int dce_bind_pt_kind(const struct mp_relay *r, const struct mp_bind *b)
{
    int pt = 0, other = 0;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        if (b->ctx[i].n_ts && mp_syntax_is_btfn(&b->ctx[i].ts[0]))
            continue;
        if (dce_iface_is_pt(r, &b->ctx[i].abstract))
            pt++;
        else
            other++;
    }
    return pt && other ? -1 : pt ? 1 : 0;
}

bool dce_bind_is_passthrough(const struct mp_relay *r, const struct mp_bind *b)
{
    return dce_bind_pt_kind(r, b) == 1;
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
    if (want_terminate && !cfg->delegated_auth &&
        mp_dce_auth_setup(&r->auth, cfg, loop, dce_kdc_done, r)) {
        mp_modules_unload(&r->mods);
        mp_dce_auth_free(&r->auth);
        free(r);
        return NULL;
    }
    setup_passthrough(r);
    /* mapiproxy:min client auth level: integrity by default where the proxy
     * terminates authentication; elsewhere only when set. */
    int ml = cfg->min_client_auth_level[0] ? mp_auth_level_parse(cfg->min_client_auth_level) : -1;
    r->min_level = ml > 0 ? (uint8_t)ml : r->auth.terminate ? MP_AUTHN_LEVEL_PKT_INTEGRITY : 1;
    r->min_level_set = ml > 0;
    char err[256];
    if (mp_conn_resolve(cfg->binding.host, &r->up_addr, &r->up_addr_len, err, sizeof(err))) {
        mp_error("dcerpc_mapiproxy:binding: cannot resolve upstream host %s: %s; check the "
                 "name or give an address",
                 cfg->binding.host, err);
        mp_modules_unload(&r->mods);
        mp_dce_auth_free(&r->auth);
        free(r);
        return NULL;
    }
    bool up_failed;
    r->rpch_up = mp_rpch_up_new(loop, cfg, &up_failed);
    if (up_failed) {
        mp_modules_unload(&r->mods);
        mp_dce_auth_free(&r->auth);
        free(r);
        return NULL;
    }
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
        dce_assoc_close(r->assocs, "proxy shutting down");
}

void mp_relay_free(struct mp_relay *r)
{
    if (!r)
        return;
    mp_relay_shutdown(r);
    mp_rpch_up_free(r->rpch_up);
    for (size_t i = 0; i < N_GROUP_BUCKETS; i++)
        while (r->groups[i]) {
            struct mp_session *g = r->groups[i];
            g->refs = 1; /* a module that kept a reference gets its unbind now */
            mp_session_unref(g);
        }
    mp_modules_unload(&r->mods);
    mp_dce_auth_free(&r->auth); /* every association (and its contexts) is gone */
    free(r);
}

struct mp_modules *mp_relay_modules(struct mp_relay *r)
{
    return &r->mods;
}

/* ---- connections handed between workers (doc/internals/workers.md) ---- */

struct handover {
    int fd;
    struct mp_pcap *cap;
    char host[64];
    uint16_t port;
    size_t len;
    uint8_t bytes[];
};

/* On the receiving worker: its running relay adopts the connection. */
static void handover_job(void *arg)
{
    struct handover *h = arg;
    struct mp_relay *r = mp_worker_data();
    dce_load_adjust(mp_worker_self(), -1); /* counted ahead by hand_over */
    for (size_t i = 0; r && i < r->n_ls; i++)
        if (!r->ls[i].epm && r->ls[i].io.fd >= 0) {
            dce_assoc_adopt_bytes(&r->ls[i], h->fd, h->host, h->port, h->bytes, h->len, h->cap);
            free(h);
            return;
        }
    mp_warn("conn %s:%u refused: worker %u is shutting down", h->host, h->port, mp_worker_self());
    close(h->fd);
    mp_pcap_end(h->cap);
    free(h);
}

struct handover *dce_handover_new(int fd, const char *host, uint16_t port, const void *bytes,
                                  size_t len, struct mp_pcap *cap)
{
    struct handover *h = malloc(sizeof *h + len);
    if (!h)
        return NULL;
    h->fd = fd;
    h->cap = cap;
    snprintf(h->host, sizeof h->host, "%s", host);
    h->port = port;
    h->len = len;
    memcpy(h->bytes, bytes, len);
    return h;
}

void dce_handover_post(unsigned to, struct handover *h)
{
    if (mp_worker_post(to, handover_job, h)) {
        dce_load_adjust(to, -1);
        mp_warn("conn %s:%u closed: cannot hand it to worker %u (stopping, or out of memory)",
                h->host, h->port, to);
        close(h->fd);
        mp_pcap_end(h->cap);
        free(h);
    }
}
