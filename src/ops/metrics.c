/* Counters and their Prometheus text exposition (doc/monitoring.md). */
#include "ops/metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "event/loop.h"

/* Relaxed atomics: the hooks run on the event loop, but a scrape or a
 * worker thread must never see torn counters. */
#define ADD(x, n) __atomic_add_fetch(&(x), (n), __ATOMIC_RELAXED)
#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

enum { ST_OK, ST_FAULT, ST_ERROR, N_ST };
static const char *const st_names[N_ST] = {"ok", "fault", "error"};

/* Latency bucket bounds, in microseconds (shown in seconds). */
static const uint64_t bounds_us[] = {1000,   5000,   10000,   25000,   50000,   100000,
                                     250000, 500000, 1000000, 2500000, 5000000, 10000000};
#define N_B (sizeof bounds_us / sizeof bounds_us[0])

struct hist {
    uint64_t b[N_B]; /* non-cumulative here; summed when rendered */
    uint64_t sum_us, count;
};

static const char *const listeners[] = {"epmapper", "rpc", "http"};
#define N_L (sizeof listeners / sizeof listeners[0])

static const char *const mechs[] = {"NTLM",  "SPNEGO/NTLM", "Kerberos", "SPNEGO/Kerberos",
                                    "Basic", "other"};
#define N_M (sizeof mechs / sizeof mechs[0])

/* MAPI/HTTP X-RequestType values (MS-OXCMAPIHTTP 2.2.2, 2.2.5); the last
 * two catch the rest and requests without one. */
static const char *const htypes[] = {
    "Connect",     "Execute",      "Disconnect",      "NotificationWait",  "PING",
    "Bind",        "Unbind",       "CompareMIds",     "DNToMId",           "GetMatches",
    "GetPropList", "GetProps",     "GetSpecialTable", "GetTemplateInfo",   "ModLinkAtt",
    "ModProps",    "QueryColumns", "QueryRows",       "ResolveNames",      "ResortRestriction",
    "SeekEntries", "UpdateStat",   "GetMailboxUrl",   "GetAddressBookUrl", "other",
    "none"};
#define N_HT (sizeof htypes / sizeof htypes[0])
static const char *const hcodes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
#define N_HC (sizeof hcodes / sizeof hcodes[0])

enum { UP_CONNECT, UP_TIMEOUT, UP_OTHER, N_UP };
static const char *const up_names[N_UP] = {"connect", "timeout", "other"};
/* affinity tables (core/affinity.h), by name */
static const char *const aff_names[] = {"mapihttp-sessions", "mapihttp-owners", "rpch-vcs",
                                        "other"};
#define N_AFF (sizeof aff_names / sizeof aff_names[0])

struct iface_m {
    const struct mp_iface_info *info; /* NULL: not yet used, or "other" (last slot) */
    bool used;
    uint64_t calls[MP_METRICS_OPS + 1][N_ST]; /* [MP_METRICS_OPS]: op="other" */
    uint64_t in, out;
    struct hist lat;
};

static struct {
    uint64_t accepted[N_L];
    int64_t open[N_L];
    struct iface_m ifs[MP_METRICS_IFACES]; /* the last one is "other" */
    uint64_t verdict_answered, verdict_fault;
    uint64_t http[N_HT][N_HC];
    uint64_t http_in, http_out;
    struct hist http_lat;
    uint64_t auth[N_M][2]; /* [..][0] refused, [1] ok */
    uint64_t up[N_UP];
    uint64_t aff_full[N_AFF], aff_evicted[N_AFF];
    uint64_t last_ok_ms, last_err_ms;
} M;

void mp_metrics_reset(void)
{
    memset(&M, 0, sizeof M);
}

static int idx_of(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (s && !strcmp(names[i], s))
            return (int)i;
    return -1;
}

void mp_metrics_accepted(const char *listener)
{
    int i = idx_of(listeners, N_L, listener);
    if (i >= 0)
        ADD(M.accepted[i], 1);
}

void mp_metrics_open(const char *listener, int delta)
{
    int i = idx_of(listeners, N_L, listener);
    if (i >= 0)
        ADD(M.open[i], delta);
}

static void hist_add(struct hist *h, uint64_t us)
{
    for (size_t i = 0; i < N_B; i++)
        if (us <= bounds_us[i]) {
            ADD(h->b[i], 1);
            break;
        }
    ADD(h->sum_us, us);
    ADD(h->count, 1);
}

/* Slots are claimed under slot_mu (workers call in at once); a claimed
 * slot is never given up, so the lookup reads `used` with acquire. */
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;

static struct iface_m *iface_slot(const struct mp_iface_info *info)
{
    struct iface_m *other = &M.ifs[MP_METRICS_IFACES - 1];
    if (!info)
        return other;
    for (size_t i = 0; i + 1 < MP_METRICS_IFACES; i++) {
        struct iface_m *s = &M.ifs[i];
        if (!__atomic_load_n(&s->used, __ATOMIC_ACQUIRE))
            break;
        if (s->info == info)
            return s;
    }
    pthread_mutex_lock(&slot_mu);
    struct iface_m *found = other;
    for (size_t i = 0; i + 1 < MP_METRICS_IFACES; i++) {
        struct iface_m *s = &M.ifs[i];
        if (s->used && s->info == info) {
            found = s;
            break;
        }
        if (!s->used) {
            s->info = info;
            __atomic_store_n(&s->used, true, __ATOMIC_RELEASE);
            found = s;
            break;
        }
    }
    pthread_mutex_unlock(&slot_mu);
    return found;
}

void mp_metrics_call(const struct mp_iface_info *info, uint16_t opnum, uint64_t in, uint64_t out,
                     uint64_t t0_us, const char *status)
{
    uint64_t lat_us = mp_now_us() - t0_us;
    struct iface_m *s = iface_slot(info);
    int st = !strncmp(status, "ok", 2) ? ST_OK : !strncmp(status, "fault", 5) ? ST_FAULT : ST_ERROR;
    ADD(s->calls[opnum < MP_METRICS_OPS ? opnum : MP_METRICS_OPS][st], 1);
    ADD(s->in, in);
    ADD(s->out, out);
    hist_add(&s->lat, lat_us);
    if (strstr(status, "(module)"))
        ADD(*(st == ST_OK ? &M.verdict_answered : &M.verdict_fault), 1);
    if (st != ST_ERROR)
        __atomic_store_n(&M.last_ok_ms, mp_now_ms(), __ATOMIC_RELAXED);
}

void mp_metrics_http(const char *type, int status, uint64_t in, uint64_t out, uint64_t t0_us)
{
    uint64_t lat_us = mp_now_us() - t0_us;
    int t = type && type[0] ? idx_of(htypes, N_HT - 2, type) : (int)N_HT - 1;
    if (t < 0)
        t = (int)N_HT - 2;
    int c = status >= 100 && status < 600 ? status / 100 : 0;
    ADD(M.http[t][c], 1);
    ADD(M.http_in, in);
    ADD(M.http_out, out);
    hist_add(&M.http_lat, lat_us);
    if (status && status != 502 && status != 504)
        __atomic_store_n(&M.last_ok_ms, mp_now_ms(), __ATOMIC_RELAXED);
}

void mp_metrics_auth(const char *mech, bool ok)
{
    int m = idx_of(mechs, N_M - 1, mech);
    ADD(M.auth[m < 0 ? (int)N_M - 1 : m][ok], 1);
}

void mp_metrics_upstream_error(const char *why)
{
    int k = !why                                                        ? UP_OTHER
            : strstr(why, "connect failed")                             ? UP_CONNECT
            : strstr(why, "did not answer") || strstr(why, "timed out") ? UP_TIMEOUT
                                                                        : UP_OTHER;
    ADD(M.up[k], 1);
    __atomic_store_n(&M.last_err_ms, mp_now_ms(), __ATOMIC_RELAXED);
}

void mp_metrics_affinity(const char *table, bool full)
{
    int k = table ? idx_of(aff_names, N_AFF - 1, table) : -1;
    size_t i = k < 0 ? N_AFF - 1 : (size_t)k;
    ADD(*(full ? &M.aff_full[i] : &M.aff_evicted[i]), 1);
}

bool mp_metrics_healthy(void)
{
    uint64_t now = mp_now_ms(), err = GET(M.last_err_ms), ok = GET(M.last_ok_ms);
    return !(err && now - err < 60000 && err > ok);
}

/* ---- exposition ---- */

struct out {
    struct mp_buf *b;
    int rc;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp || mp_buf_append(o->b, tmp, (size_t)n))
        o->rc = -1;
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_put(struct out *o, const char *name, const char *labels, const struct hist *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < N_B; i++) {
        cum += GET(h->b[i]);
        put(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, labels[0] ? "," : "",
            (double)bounds_us[i] / 1e6, (unsigned long long)cum);
    }
    uint64_t n = GET(h->count);
    put(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, labels[0] ? "," : "",
        (unsigned long long)n);
    const char *lb = labels[0] ? "{" : "", *le = labels[0] ? "}" : "";
    put(o, "%s_sum%s%s%s %.6f\n", name, lb, labels, le, (double)GET(h->sum_us) / 1e6);
    put(o, "%s_count%s%s%s %llu\n", name, lb, labels, le, (unsigned long long)n);
}

static const char *iface_name(const struct iface_m *s)
{
    return s->info ? s->info->name : "other";
}

static bool iface_shown(size_t i)
{
    const struct iface_m *s = &M.ifs[i];
    return s->used || (i == MP_METRICS_IFACES - 1 && GET(s->lat.count));
}

/* A metric with one label: vals[i] (signed) for label=names[i]. */
static void series(struct out *o, const char *name, const char *type, const char *help,
                   const char *label, const char *const *names, size_t n, const int64_t *vals)
{
    head(o, name, type, help);
    for (size_t i = 0; i < n; i++)
        put(o, "%s{%s=\"%s\"} %lld\n", name, label, names[i], (long long)GET(vals[i]));
}

int mp_metrics_render(struct mp_buf *b)
{
    struct out o = {b, 0};
    series(&o, "mapiproxy_connections_accepted_total", "counter",
           "Connections accepted, by listener.", "listener", listeners, N_L,
           (const int64_t *)M.accepted);
    series(&o, "mapiproxy_connections_open", "gauge", "Connections open now, by listener.",
           "listener", listeners, N_L, M.open);
    head(&o, "mapiproxy_associations_open", "gauge",
         "DCE/RPC associations open now (one per client connection of the epmapper and rpc "
         "listeners).");
    put(&o, "mapiproxy_associations_open %lld\n", (long long)(GET(M.open[0]) + GET(M.open[1])));
    head(&o, "mapiproxy_http_sessions_open", "gauge",
         "HTTP front sessions (client connections) open now.");
    put(&o, "mapiproxy_http_sessions_open %lld\n", (long long)GET(M.open[2]));

    head(&o, "mapiproxy_rpc_calls_total", "counter",
         "DCE/RPC calls answered, by interface, operation and status (ok, fault, error: no "
         "answer from the upstream).");
    for (size_t i = 0; i < MP_METRICS_IFACES; i++) {
        if (!iface_shown(i))
            continue;
        const struct iface_m *s = &M.ifs[i];
        for (size_t op = 0; op <= MP_METRICS_OPS; op++)
            for (int st = 0; st < N_ST; st++) {
                uint64_t n = GET(s->calls[op][st]);
                if (!n)
                    continue;
                const char *name =
                    op < MP_METRICS_OPS ? mp_iface_op_name(s->info, (uint16_t)op) : "other";
                if (name)
                    put(&o,
                        "mapiproxy_rpc_calls_total{interface=\"%s\",op=\"%s\",status=\"%s\"} "
                        "%llu\n",
                        iface_name(s), name, st_names[st], (unsigned long long)n);
                else
                    put(&o,
                        "mapiproxy_rpc_calls_total{interface=\"%s\",op=\"op%zu\",status=\"%s\"} "
                        "%llu\n",
                        iface_name(s), op, st_names[st], (unsigned long long)n);
            }
    }
    for (int dir = 0; dir < 2; dir++) {
        const char *name =
            dir ? "mapiproxy_rpc_sent_bytes_total" : "mapiproxy_rpc_received_bytes_total";
        head(&o, name, "counter",
             dir ? "Response stub bytes sent to clients, by interface."
                 : "Request stub bytes received from clients, by interface.");
        for (size_t i = 0; i < MP_METRICS_IFACES; i++)
            if (iface_shown(i))
                put(&o, "%s{interface=\"%s\"} %llu\n", name, iface_name(&M.ifs[i]),
                    (unsigned long long)(dir ? GET(M.ifs[i].out) : GET(M.ifs[i].in)));
    }
    head(&o, "mapiproxy_rpc_call_duration_seconds", "histogram",
         "Time from a call's first request fragment to its answer, by interface.");
    for (size_t i = 0; i < MP_METRICS_IFACES; i++)
        if (iface_shown(i)) {
            char lab[80];
            snprintf(lab, sizeof lab, "interface=\"%s\"", iface_name(&M.ifs[i]));
            hist_put(&o, "mapiproxy_rpc_call_duration_seconds", lab, &M.ifs[i].lat);
        }
    head(&o, "mapiproxy_module_verdicts_total", "counter",
         "Calls that a module answered itself or refused with a fault.");
    put(&o, "mapiproxy_module_verdicts_total{verdict=\"answered\"} %llu\n",
        (unsigned long long)GET(M.verdict_answered));
    put(&o, "mapiproxy_module_verdicts_total{verdict=\"fault\"} %llu\n",
        (unsigned long long)GET(M.verdict_fault));

    head(&o, "mapiproxy_http_requests_total", "counter",
         "HTTP front requests, by X-RequestType and status class.");
    for (size_t t = 0; t < N_HT; t++)
        for (size_t c = 0; c < N_HC; c++)
            if (GET(M.http[t][c]))
                put(&o, "mapiproxy_http_requests_total{type=\"%s\",code=\"%s\"} %llu\n", htypes[t],
                    hcodes[c], (unsigned long long)GET(M.http[t][c]));
    head(&o, "mapiproxy_http_received_bytes_total", "counter", "HTTP request body bytes received.");
    put(&o, "mapiproxy_http_received_bytes_total %llu\n", (unsigned long long)GET(M.http_in));
    head(&o, "mapiproxy_http_sent_bytes_total", "counter", "HTTP response body bytes sent.");
    put(&o, "mapiproxy_http_sent_bytes_total %llu\n", (unsigned long long)GET(M.http_out));
    head(&o, "mapiproxy_http_request_duration_seconds", "histogram", "HTTP request durations.");
    hist_put(&o, "mapiproxy_http_request_duration_seconds", "", &M.http_lat);

    head(&o, "mapiproxy_auth_total", "counter",
         "Client authentications the proxy terminated, by mechanism and result.");
    for (size_t m = 0; m < N_M; m++)
        for (int ok = 1; ok >= 0; ok--)
            put(&o, "mapiproxy_auth_total{mechanism=\"%s\",result=\"%s\"} %llu\n", mechs[m],
                ok ? "ok" : "refused", (unsigned long long)GET(M.auth[m][ok]));
    series(&o, "mapiproxy_upstream_errors_total", "counter",
           "Upstream failures, by kind (connect, timeout, other).", "kind", up_names, N_UP,
           (const int64_t *)M.up);
    series(&o, "mapiproxy_affinity_full_total", "counter",
           "New keys an affinity table (MAPI/HTTP session -> worker, MAPI/HTTP cookie -> "
           "owner, RPC over HTTP virtual connection -> worker) did not keep because every "
           "entry was pinned by a live session (mapiproxy:affinity table size).",
           "table", aff_names, N_AFF, (const int64_t *)M.aff_full);
    series(&o, "mapiproxy_affinity_evicted_total", "counter",
           "Entries of no live session pushed out of a full affinity table by new keys.", "table",
           aff_names, N_AFF, (const int64_t *)M.aff_evicted);
    head(&o, "mapiproxy_up", "gauge", "1 while the upstream answers (what /health reports).");
    put(&o, "mapiproxy_up %d\n", mp_metrics_healthy() ? 1 : 0);
    return o.rc;
}
