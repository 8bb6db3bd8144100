/* Shared code of the security modules: see sec.h. */
#include "sec.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const sec_dir_choices[] = {"both", "upload", "download", "none", NULL};
const char *const sec_fail_choices[] = {"open", "closed", NULL};
const char *const sec_action_choices[] = {"block",  "replace", "quarantine", "tag",
                                          "defang", "log",     NULL};

const char *sec_action_name(enum sec_action a)
{
    return a <= SEC_ACT_LOG ? sec_action_choices[a] : "?";
}

uint64_t sec_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void sec_json_str(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    if (!cap)
        return;
    for (; s && *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = 0;
}

/* ---- the engine's loop interface on the module API ---- */
struct sec_watch {
    struct mp_fdwatch *w;
    mp_svc_fd_cb cb;
    void *arg;
};

static void sw_cb(struct mp_fdwatch *w, int fd, unsigned events, void *arg)
{
    struct sec_watch *sw = arg;
    sw->cb(sw->arg, fd, events); /* MP_FD_* and MP_SVC_EV_* are the same bits */
}

static void *sw_watch(void *ctx, int fd, unsigned events, mp_svc_fd_cb cb, void *arg)
{
    struct sec_ctx *sc = ctx;
    struct sec_watch *sw = calloc(1, sizeof *sw);
    if (!sw)
        return NULL;
    sw->cb = cb;
    sw->arg = arg;
    sw->w = mp_module_watch_fd(sc->mc, fd, events, sw_cb, sw);
    if (!sw->w) {
        free(sw);
        return NULL;
    }
    return sw;
}

static int sw_set(void *ctx, void *watch, unsigned events)
{
    struct sec_watch *sw = watch;
    return mp_fdwatch_set(sw->w, events);
}

static void sw_cancel(void *ctx, void *watch)
{
    struct sec_watch *sw = watch;
    mp_fdwatch_cancel(sw->w); /* no callback after this */
    free(sw);
}

/* mp_module_after has no cancel: a cancelled timer stays in the list,
 * silent, until it fires; fini frees whatever is left. */
struct sec_timer {
    struct sec_timer *next, *prev;
    struct sec_ctx *sc;
    mp_svc_timer_cb cb;
    void *arg;
    bool cancelled;
};

static void st_unlink(struct sec_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        t->sc->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

static void st_fire(void *arg)
{
    struct sec_timer *t = arg;
    st_unlink(t);
    if (!t->cancelled)
        t->cb(t->arg);
    free(t);
}

static void *st_timer(void *ctx, uint64_t ms, mp_svc_timer_cb cb, void *arg)
{
    struct sec_ctx *sc = ctx;
    struct sec_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->sc = sc;
    t->cb = cb;
    t->arg = arg;
    if (mp_module_after(sc->mc, ms, st_fire, t)) {
        free(t);
        return NULL;
    }
    t->next = sc->timers;
    if (t->next)
        t->next->prev = t;
    sc->timers = t;
    return t;
}

static void st_cancel(void *ctx, void *timer)
{
    ((struct sec_timer *)timer)->cancelled = true;
}

/* ---- the verdict cache: message id + change key -> result ---- */
#define CK_MAX 64
struct centry {
    struct centry *hnext;         /* hash chain */
    struct centry *older, *newer; /* insertion order (eviction) */
    uint64_t mid, at_us;
    uint8_t ck[CK_MAX];
    size_t cklen;
    struct sec_result r;
};
struct sec_cache {
    struct centry **tab;
    size_t nbuckets, count, max;
    uint64_t ttl_us;
    struct centry *oldest, *newest;
};

static uint64_t ckey_hash(uint64_t mid, const uint8_t *ck, size_t n)
{
    uint64_t h = 1469598103934665603ull ^ mid;
    for (size_t i = 0; i < n; i++)
        h = (h ^ ck[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void cache_remove(struct sec_cache *c, struct centry *e)
{
    struct centry **pp = &c->tab[ckey_hash(e->mid, e->ck, e->cklen) % c->nbuckets];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    c->count--;
    free(e);
}

static struct sec_cache *cache_new(size_t max, uint64_t ttl_us)
{
    if (!max)
        return NULL;
    struct sec_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->nbuckets = max < 64 ? 64 : max;
    c->tab = calloc(c->nbuckets, sizeof *c->tab);
    if (!c->tab) {
        free(c);
        return NULL;
    }
    c->max = max;
    c->ttl_us = ttl_us;
    return c;
}

static void cache_free(struct sec_cache *c)
{
    if (!c)
        return;
    while (c->oldest)
        cache_remove(c, c->oldest);
    free(c->tab);
    free(c);
}

static bool cache_get(struct sec_cache *c, uint64_t mid, const uint8_t *ck, size_t n,
                      struct sec_result *out)
{
    if (!c || !mid || !ck || !n || n > CK_MAX)
        return false;
    uint64_t now = sec_now_us();
    for (struct centry *e = c->tab[ckey_hash(mid, ck, n) % c->nbuckets]; e; e = e->hnext) {
        if (e->mid == mid && e->cklen == n && !memcmp(e->ck, ck, n)) {
            if (now - e->at_us > c->ttl_us) {
                cache_remove(c, e);
                return false;
            }
            *out = e->r;
            return true;
        }
    }
    return false;
}

static void cache_put(struct sec_cache *c, uint64_t mid, const uint8_t *ck, size_t n,
                      const struct sec_result *r)
{
    struct sec_result old;
    if (!c || !mid || !ck || !n || n > CK_MAX || cache_get(c, mid, ck, n, &old))
        return;
    while (c->count >= c->max && c->oldest)
        cache_remove(c, c->oldest);
    struct centry *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->mid = mid;
    e->cklen = n;
    memcpy(e->ck, ck, n);
    e->r = *r;
    e->at_us = sec_now_us();
    size_t b = ckey_hash(mid, ck, n) % c->nbuckets;
    e->hnext = c->tab[b];
    c->tab[b] = e;
    e->older = c->newest;
    if (c->newest)
        c->newest->newer = e;
    else
        c->oldest = e;
    c->newest = e;
    c->count++;
}

/* ---- options ---- */
static int pick(const char *v, const char *const *choices, int dflt)
{
    if (!v)
        return dflt;
    for (int i = 0; choices[i]; i++)
        if (!strcmp(v, choices[i]))
            return i;
    return dflt;
}

static char *opt_dup(struct mp_module_ctx *mc, const char *key, const char *dflt)
{
    const char *v = mp_module_option(mc, key);
    if (!v)
        v = dflt;
    return v ? strdup(v) : NULL;
}

/* The engine's own log lines (src/svc/modshim.h).  The one piece of
 * module-wide state outside the private pointer: each module is its own
 * shared object, loaded once, and init sets it before any service runs. */
extern void (*mp_svc_log_fn)(int level, const char *fmt, ...);
static struct mp_module_ctx *svc_log_mc;
static void svc_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void svc_log(int level, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (svc_log_mc)
        mp_module_log(svc_log_mc, level, "%s", msg);
}

int sec_init(struct sec_ctx *sc, struct mp_module_ctx *mc, const char *dflt_dirs,
             enum sec_action dflt_up, enum sec_action dflt_down)
{
    svc_log_mc = mc;
    mp_svc_log_fn = svc_log;
    memset(sc, 0, sizeof *sc);
    sc->mc = mc;
    sc->mod = mp_module_name(mc);
    sc->lif = (struct mp_svc_loopif){sc, sw_watch, sw_set, sw_cancel, st_timer, st_cancel};
    int d = pick(mp_module_option(mc, "directions"), sec_dir_choices,
                 pick(dflt_dirs, sec_dir_choices, 0));
    sc->dir_on[MP_MESSAGE_UPLOAD] = d == 0 || d == 1;
    sc->dir_on[MP_MESSAGE_DOWNLOAD] = d == 0 || d == 2;
    /* Default: fail open both ways (the mail was most likely scanned on its
     * SMTP path already; a scanner outage must not stop Outlook). */
    sc->fail_open[0] = pick(mp_module_option(mc, "fail_upload"), sec_fail_choices, 0) == 0;
    sc->fail_open[1] = pick(mp_module_option(mc, "fail_download"), sec_fail_choices, 0) == 0;
    sc->action[0] =
        (enum sec_action)pick(mp_module_option(mc, "action_upload"), sec_action_choices, dflt_up);
    sc->action[1] = (enum sec_action)pick(mp_module_option(mc, "action_download"),
                                          sec_action_choices, dflt_down);
    sc->quarantine_dir = opt_dup(mc, "quarantine_dir", NULL);
    sc->verdict_log = opt_dup(mc, "verdict_log", NULL);
    sc->tag_prefix = opt_dup(mc, "tag_prefix", NULL);
    sc->max_size = (size_t)mp_module_option_int(mc, "max_size", 50L << 20);
    sc->svc_defaults = (struct mp_svc_config){
        .connect_ms = (unsigned)mp_module_option_int(mc, "connect_timeout", 2000),
        .io_ms = (unsigned)mp_module_option_int(mc, "timeout", 30000),
        .max_conns = (unsigned)mp_module_option_int(mc, "max_conns", 8),
        .max_queue = (unsigned)mp_module_option_int(mc, "max_queue", 1000),
    };
    long csize = mp_module_option_int(mc, "cache_size", 10000);
    long cttl = mp_module_option_int(mc, "cache_ttl", 3600);
    sc->cache = cache_new((size_t)csize, (uint64_t)cttl * 1000000u);
    for (int i = 0; i < 2; i++)
        if (sc->action[i] == SEC_ACT_QUARANTINE && !sc->quarantine_dir) {
            mp_module_log(mc, MP_MLOG_ERROR, "action_%s = quarantine needs quarantine_dir",
                          i ? "download" : "upload");
            return -1;
        }
    mp_module_log(mc, MP_MLOG_INFO,
                  "policy: upload %s (action %s, fail %s), download %s (action %s, fail %s); "
                  "cache %ld entries, %ld s",
                  sc->dir_on[0] ? "scanned" : "not scanned", sec_action_name(sc->action[0]),
                  sc->fail_open[0] ? "open" : "closed", sc->dir_on[1] ? "scanned" : "not scanned",
                  sec_action_name(sc->action[1]), sc->fail_open[1] ? "open" : "closed", csize,
                  cttl);
    return 0;
}

void sec_fini(struct sec_ctx *sc)
{
    svc_log_mc = NULL;
    while (sc->timers) {
        struct sec_timer *t = sc->timers;
        st_unlink(t);
        free(t);
    }
    cache_free(sc->cache);
    free(sc->quarantine_dir);
    free(sc->verdict_log);
    free(sc->tag_prefix);
}

void sec_map_header_names(struct sec_ctx *sc, const char *const *names)
{
    static const uint8_t ps[16] = MP_PS_INTERNET_HEADERS;
    for (int d = 0; d < 2; d++)
        if (sc->dir_on[d] && sc->action[d] == SEC_ACT_TAG) {
            for (size_t i = 0; names[i]; i++)
                if (mp_module_map_name(sc->mc, ps, names[i]))
                    mp_module_log(sc->mc, MP_MLOG_WARN,
                                  "cannot have %s mapped by the proxy (too many names)", names[i]);
            return;
        }
}

void sec_cache_disable(struct sec_ctx *sc)
{
    cache_free(sc->cache);
    sc->cache = NULL;
    mp_module_log(sc->mc, MP_MLOG_INFO, "no verdict cache (each message is checked)");
}

struct mp_svc *sec_service(struct sec_ctx *sc, const char *name, const char *addr)
{
    struct mp_svc_config cfg = sc->svc_defaults;
    cfg.name = name;
    cfg.addr = addr;
    cfg.max_idle = cfg.max_conns;
    /* the engine's own policy flag is not used: sec_job_finish applies the
     * per-direction one */
    cfg.fail_open = true;
    struct mp_svc *s = mp_svc_new(&sc->lif, &cfg);
    if (!s)
        mp_module_log(sc->mc, MP_MLOG_ERROR, "%s: cannot use address %s", name, addr);
    else
        mp_module_log(sc->mc, MP_MLOG_INFO, "%s at %s (timeout %u ms, %u connections)", name, addr,
                      cfg.io_ms, cfg.max_conns);
    return s;
}

/* ---- jobs ---- */
bool sec_result_bad(const struct sec_result *r)
{
    switch (r->kind) {
    case MP_SVC_INFECTED:
    case MP_SVC_SPAM:
    case MP_SVC_REJECT:
    case MP_SVC_DISCARD:
    case MP_SVC_QUARANTINE:
        return true;
    default:
        return false;
    }
}

static bool unscanned(enum mp_svc_kind k)
{
    return k == MP_SVC_UNAVAILABLE || k == MP_SVC_ERROR || k == MP_SVC_TOOBIG ||
           k == MP_SVC_TEMPFAIL;
}

/* Worst first: a bad verdict beats "could not scan", which beats clean. */
static int rank(enum mp_svc_kind k)
{
    if (k == MP_SVC_INFECTED || k == MP_SVC_QUARANTINE)
        return 6;
    if (k == MP_SVC_REJECT || k == MP_SVC_DISCARD)
        return 5;
    if (k == MP_SVC_SPAM)
        return 4;
    if (unscanned(k))
        return 3;
    if (k == MP_SVC_MODIFIED)
        return 2;
    return k == MP_SVC_CLEAN ? 1 : 0;
}

void sec_job_merge(struct sec_job *j, const struct mp_svc_verdict *v)
{
    if (v->has_score && (!j->r.has_score || v->score > j->r.score)) {
        j->r.score = v->score;
        j->r.required = v->required;
        j->r.has_score = true;
    }
    if (rank(v->kind) > rank(j->r.kind)) {
        j->r.kind = v->kind;
        snprintf(j->r.name, sizeof j->r.name, "%s", v->name);
    }
}

struct sec_job *sec_job_start(struct sec_ctx *sc, struct mp_message_event *ev,
                              void (*apply)(struct sec_job *, enum sec_action))
{
    enum mp_message_dir dir = mp_message_event_dir(ev);
    if (dir > MP_MESSAGE_DOWNLOAD || !sc->dir_on[dir] || mp_message_blocked(ev))
        return NULL;
    struct sec_job *j = calloc(1, sizeof *j);
    if (!j) {
        if (!sc->fail_open[dir])
            mp_message_block(ev, "scanner out of memory");
        return NULL;
    }
    j->sc = sc;
    j->ev = ev;
    j->dir = dir;
    j->apply = apply;
    j->force_action = -1;
    j->t0_us = sec_now_us();
    size_t cklen = 0;
    const uint8_t *ck = mp_message_event_change_key(ev, &cklen);
    if (cache_get(sc->cache, mp_message_event_message_id(ev), ck, cklen, &j->r)) {
        j->cached = true;
        snprintf(j->service, sizeof j->service, "cache");
        sec_job_finish(j);
        return NULL;
    }
    return j;
}

int sec_job_load_mime(struct sec_job *j)
{
    uint64_t size = 0;
    int fd = mp_message_event_mime_fd(j->ev, &size);
    if (fd < 0)
        return -1;
    if (size > j->sc->max_size)
        return 1;
    j->mime = malloc(size ? size : 1);
    if (!j->mime)
        return -1;
    size_t got = 0;
    while (got < size) {
        ssize_t n = pread(fd, j->mime + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    j->mime_len = got;
    return got == size ? 0 : -1;
}

typedef long (*sec_reader)(const struct mp_message *m, uint64_t key, uint64_t off, void *buf,
                           size_t n);
static long rd_prop(const struct mp_message *m, uint64_t key, uint64_t off, void *buf, size_t n)
{
    return mp_message_bytes_read(m, (uint32_t)key, off, buf, n);
}
static long rd_att(const struct mp_message *m, uint64_t key, uint64_t off, void *buf, size_t n)
{
    return mp_message_attachment_read(m, (size_t)key, off, buf, n);
}

static uint8_t *read_whole(const struct mp_message *m, uint64_t key, int64_t sz, sec_reader rd,
                           size_t max, size_t *len)
{
    if (!m || sz <= 0 || (uint64_t)sz > max)
        return NULL;
    uint8_t *b = malloc((size_t)sz + 1);
    if (!b)
        return NULL;
    size_t got = 0;
    while (got < (size_t)sz) {
        long r = rd(m, key, got, b + got, (size_t)sz - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got != (size_t)sz) {
        free(b);
        return NULL;
    }
    b[got] = 0;
    *len = got;
    return b;
}

uint8_t *sec_read_prop(const struct mp_message *m, uint32_t tag, size_t max, size_t *len)
{
    return read_whole(m, tag, m ? mp_message_bytes_size(m, tag) : -1, rd_prop, max, len);
}

uint8_t *sec_read_attachment(const struct mp_message *m, size_t i, size_t max, size_t *len)
{
    return read_whole(m, i, m ? mp_message_attachment_size(m, i) : -1, rd_att, max, len);
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Once per message (id + change key): a cached verdict, or a scan of the
 * same message that finished while this one ran (the cache has its entry
 * by now), names the quarantine that exists. */
static bool quarantined_before(struct sec_job *j)
{
    struct sec_result had;
    size_t cklen = 0;
    const uint8_t *ck = mp_message_event_change_key(j->ev, &cklen);
    if (!j->r.quarantine_id[0] &&
        cache_get(j->sc->cache, mp_message_event_message_id(j->ev), ck, cklen, &had))
        memcpy(j->r.quarantine_id, had.quarantine_id, sizeof had.quarantine_id);
    if (!j->r.quarantine_id[0])
        return false;
    memcpy(j->quarantine_id, j->r.quarantine_id, sizeof j->quarantine_id);
    return true;
}

static int quarantine(struct sec_job *j, const char *verdict_json)
{
    struct sec_ctx *sc = j->sc;
    if (quarantined_before(j))
        return 0;
    if (!j->mime && sec_job_load_mime(j) != 0)
        return -1;
    snprintf(j->quarantine_id, sizeof j->quarantine_id, "%s-%lld-%d-%lu", sc->mod,
             (long long)time(NULL), (int)getpid(), ++sc->seq);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.eml", sc->quarantine_dir, j->quarantine_id);
    /* synced before the verdict: for a blocked upload the quarantine holds
     * the only copy (rare enough that the loop may wait for the disk) */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write_all(fd, j->mime, j->mime_len) || fdatasync(fd)) {
        if (fd >= 0)
            close(fd);
        j->quarantine_id[0] = 0;
        return -1;
    }
    close(fd);
    snprintf(path, sizeof path, "%s/%s.json", sc->quarantine_dir, j->quarantine_id);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char rec[2048];
    int n = snprintf(rec, sizeof rec, "{\"id\":\"%s\",\"time\":%lld,%s,\"size\":%zu}\n",
                     j->quarantine_id, (long long)time(NULL), verdict_json, j->mime_len);
    int rc = write_all(fd, rec, n > 0 && (size_t)n < sizeof rec ? (size_t)n : strlen(rec));
    if (!rc && fdatasync(fd))
        rc = -1;
    close(fd);
    memcpy(j->r.quarantine_id, j->quarantine_id, sizeof j->quarantine_id); /* cached with it */
    return rc;
}

static const char *kind_word(const struct sec_result *r)
{
    return mp_svc_kind_name(r->kind);
}

/* 0, or -1 when the event cannot be blocked (a download already partly
 * at the client: a message spread over several GetBuffers) */
static int block_with(struct sec_job *j, const char *what)
{
    char reason[300];
    snprintf(reason, sizeof reason, "%s: %s%s%s", j->sc->mod, what, j->r.name[0] ? " " : "",
             j->r.name);
    return mp_message_block(j->ev, reason);
}

void sec_job_finish(struct sec_job *j)
{
    struct sec_ctx *sc = j->sc;
    struct mp_message_event *ev = j->ev;
    const char *taken = "allow";
    if (j->r.kind == MP_SVC_NONE)
        j->r.kind = MP_SVC_CLEAN;
    char user[256], name[400], vj[1400];
    sec_json_str(user, sizeof user, mp_message_event_user(ev));
    sec_json_str(name, sizeof name, j->r.name);
    const char *verdict = j->verdict && sec_result_bad(&j->r) ? j->verdict : kind_word(&j->r);
    char score[64] = "";
    if (j->r.has_score)
        snprintf(score, sizeof score, ",\"score\":%.2f,\"required\":%.2f", j->r.score,
                 j->r.required);
    snprintf(vj, sizeof vj,
             "\"module\":\"%s\",\"user\":%s%s%s,\"direction\":\"%s\",\"mode\":\"%s\","
             "\"message_id\":\"0x%016" PRIx64 "\",\"service\":\"%s\",\"verdict\":\"%s\","
             "\"name\":\"%s\"%s",
             sc->mod, mp_message_event_user(ev) ? "\"" : "",
             mp_message_event_user(ev) ? user : "null", mp_message_event_user(ev) ? "\"" : "",
             mp_message_dir_name(j->dir), mp_message_mode_name(mp_message_event_mode(ev)),
             mp_message_event_message_id(ev), j->service, verdict, name, score);

    if (unscanned(j->r.kind)) {
        if (sc->fail_open[j->dir]) {
            taken = "allow (fail open)";
        } else {
            char reason[200];
            snprintf(reason, sizeof reason, "%s: the scanner could not check this message",
                     sc->mod);
            taken = mp_message_block(ev, reason) ? "allow (cannot block)" : "block (fail closed)";
        }
    } else if (sec_result_bad(&j->r) && !mp_message_blocked(ev)) {
        enum sec_action a =
            j->force_action >= 0 ? (enum sec_action)j->force_action : sc->action[j->dir];
        bool can = mp_message_can_modify(ev);
        enum sec_action want = a;
        if (a == SEC_ACT_REPLACE && (!can || j->r.bad_body || !j->r.bad_attachments))
            a = SEC_ACT_BLOCK;
        if ((a == SEC_ACT_TAG || a == SEC_ACT_DEFANG) && !can)
            a = SEC_ACT_LOG;
        if (a != want && !can) {
            /* a FastTransfer stream (cached mode), a download or a partial
             * change: the notice (block) or the log line in place of the
             * edit, said in the log (doc/security-modules.md) */
            size_t dl = strlen(j->detail);
            snprintf(j->detail + dl, sizeof j->detail - dl,
                     ",\"configured\":\"%s\",\"fallback\":\"cannot modify\"",
                     sec_action_name(want));
        }
        taken = sec_action_name(a);
        switch (a) {
        case SEC_ACT_BLOCK:
            if (block_with(j, verdict))
                taken = "allow (cannot block)";
            break;
        case SEC_ACT_QUARANTINE:
            if (quarantine(j, vj))
                mp_module_log(sc->mc, MP_MLOG_ERROR, "quarantine in %s failed: %s",
                              sc->quarantine_dir, strerror(errno));
            if (block_with(j, "quarantined,"))
                taken = "quarantine (cannot block)";
            break;
        case SEC_ACT_REPLACE:
        case SEC_ACT_TAG:
        case SEC_ACT_DEFANG:
            if (j->apply)
                j->apply(j, a);
            break;
        case SEC_ACT_LOG:
            break;
        }
    } else if (j->apply && !mp_message_blocked(ev) && j->r.kind == MP_SVC_MODIFIED) {
        /* a milter's header edits on an accepted message */
        j->apply(j, SEC_ACT_TAG);
    }

    double ms = (double)(sec_now_us() - j->t0_us) / 1000.0;
    char line[3072];
    snprintf(line, sizeof line, "{%s,\"action\":\"%s\",\"cached\":%s%s%s%s%s,\"ms\":%.3f}", vj,
             taken, j->cached ? "true" : "false", j->quarantine_id[0] ? ",\"quarantine\":\"" : "",
             j->quarantine_id, j->quarantine_id[0] ? "\"" : "", j->detail, ms);
    mp_module_log(sc->mc, MP_MLOG_INFO, "%s", line);
    if (sc->verdict_log) {
        int fd = open(sc->verdict_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd >= 0) {
            size_t n = strlen(line);
            line[n] = '\n';
            (void)!write(fd, line, n + 1);
            close(fd);
        }
    }
    if (!j->cached && !unscanned(j->r.kind)) {
        size_t cklen = 0;
        const uint8_t *ck = mp_message_event_change_key(ev, &cklen);
        cache_put(sc->cache, mp_message_event_message_id(ev), ck, cklen, &j->r);
    }
    bool async = j->async;
    free(j->mime);
    free(j);
    if (async)
        mp_message_resume(ev);
}

enum mp_status sec_job_wait(struct sec_job *j)
{
    if (!j->pending) {
        sec_job_finish(j);
        return MP_CONTINUE;
    }
    j->async = true;
    return MP_PENDING;
}
