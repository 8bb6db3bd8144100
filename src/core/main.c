/* mapiproxy: the daemon's entry point. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "chain/chain.h"
#include "chain/msgonline.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/workers.h"
#include "event/loop.h"
#include "net/accept.h"
#include "ops/pcapng.h"
#include "ops/privdrop.h"
#include "transport/http/front.h"
#include "ops/stats_http.h"
#include "transport/dcerpc/dcerpc.h"
#include "transport/rpch/hchan.h"

#define MP_VERSION "0.1.0"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: mapiproxy [-c FILE] [-d LEVEL]\n"
                "       mapiproxy --check [-c FILE]\n"
                "       mapiproxy --print-default | --version | --help\n"
                "  -c, --config FILE   smb.conf-syntax configuration (default: the embedded one)\n"
                "      --check         validate the configuration as the daemon would at start\n"
                "                      (files, modules, ports), report every error, exit 0 or 1\n"
                "      --print-default print the embedded default configuration\n"
                "  -d, --log-level L   0-4 or error, warn, info, debug, trace\n"
                "                      (overrides mapiproxy:log level)\n"
                "  -V, --version       print the version\n"
                "  -h, --help          this text\n"
                "Signals: TERM, INT stop; HUP reloads the configuration for new sessions; USR1 "
                "reopens the\n"
                "log file; USR2 is ignored (doc/operations.md).\n");
}

/* One configuration at work: its listeners, module chain and sessions.  A
 * reload starts a new one for new sessions; the previous one stops
 * accepting and is freed when its last session has ended. */
struct gen {
    struct mp_config cfg;
    struct mp_relay *relay;
    struct mp_http *http;
    struct mp_rpch_http *rpch; /* RPC over HTTP on http's front, or NULL */
    struct gen *next;          /* on the draining list */
    unsigned no;               /* 1 at start, +1 per reload */
};

/* What one worker runs (core/workers.h): worker 0 is the main thread. */
struct wstate {
    unsigned idx;
    struct mp_loop *loop;
    struct gen *cur;      /* the running configuration: new sessions */
    struct gen *pending;  /* built by a reload, not yet switched to */
    struct gen *draining; /* earlier ones whose sessions go on */
    struct mp_timer drain;
    const char *path; /* for a worker's build job */
    int rc;           /* its result */
    unsigned no;
};
static struct wstate wst[MP_MAX_WORKERS];

struct daemon {
    struct mp_io io;
    struct mp_loop *loop;
    const char *path;   /* -c FILE, NULL for the embedded default */
    int level_override; /* -d, or -1 */
    struct wstate *w;   /* worker 0's: cur, draining */
    char status[400];   /* systemd STATUS= while running */
};

static const char *cfg_name(const char *path)
{
    return path ? path : "(embedded default)";
}

/* Loads the configuration and runs the start-up checks; every problem goes to
 * diag.  Returns 0 when the daemon would start with it. */
static int load_checked(struct mp_config *cfg, const char *path, struct mp_diag *diag)
{
    int rc = path ? mp_config_load(cfg, path, diag)
                  : mp_config_load_text(cfg, cfg_name(NULL), mp_default_config, diag);
    if (rc)
        return rc;
    if (mp_config_check_runtime(cfg, diag)) {
        mp_config_free(cfg);
        return -1;
    }
    return 0;
}

static void gen_free(struct gen *g)
{
    mp_rpch_http_free(g->rpch); /* it hands associations to the relay */
    mp_http_free(g->http);      /* then: it uses the relay's module chain */
    mp_relay_free(g->relay);
    mp_config_free(&g->cfg);
    free(g);
}

/* Binds g's listeners (taking over the sockets of the running configuration
 * that the new one names too: net/accept.h) and loads its modules, on the
 * calling worker's loop.  Every worker runs an HTTPS front and RPC over
 * HTTP (doc/internals/workers.md).  0, or -1 with everything it made
 * undone. */
static int gen_build(struct wstate *w, struct gen *g)
{
    g->relay = mp_relay_new(w->loop, &g->cfg);
    if (g->relay && g->cfg.n_http_listen)
        g->http = mp_http_new(w->loop, &g->cfg);
    if (!g->relay || (g->cfg.n_http_listen && !g->http)) {
        mp_http_free(g->http);
        mp_relay_free(g->relay);
        g->http = NULL;
        g->relay = NULL;
        return -1;
    }
    if (g->http)
        mp_http_set_modules(g->http, mp_relay_modules(g->relay));
    if (g->http && w->cur) /* who each MAPI/HTTP cookie was issued to outlives a reload */
        mp_http_share_owners(g->http, w->cur->http);
    if (mp_rpch_http_setup(w->loop, &g->cfg, g->http, g->relay, &g->rpch)) {
        mp_http_free(g->http);
        mp_relay_free(g->relay);
        g->http = NULL;
        g->relay = NULL;
        return -1;
    }
    return 0;
}

/* A worker's part of a start or reload (runs on its thread): its own copy
 * of the configuration, already checked by worker 0, and its generation. */
static void build_job(void *arg)
{
    struct wstate *w = arg;
    struct gen *g = calloc(1, sizeof *g);
    struct mp_diag diag = {0};
    w->rc = -1;
    if (!g)
        return;
    int rc = w->path ? mp_config_load(&g->cfg, w->path, &diag)
                     : mp_config_load_text(&g->cfg, cfg_name(NULL), mp_default_config, &diag);
    mp_diag_free(&diag);
    if (rc) {
        mp_error("worker %u: the configuration changed while it was read; not started", w->idx);
        free(g);
        return;
    }
    g->no = w->no;
    if (gen_build(w, g)) {
        mp_config_free(&g->cfg);
        free(g);
        return;
    }
    w->pending = g;
    w->rc = 0;
}

static void abort_job(void *arg)
{
    struct wstate *w = arg;
    if (w->pending)
        gen_free(w->pending);
    w->pending = NULL;
}

static void drain_check(struct mp_timer *t);

/* Switches a worker to the generation its build job made. */
static void commit_job(void *arg)
{
    struct wstate *w = arg;
    struct gen *old = w->cur;
    w->cur = w->pending;
    w->pending = NULL;
    mp_worker_set_data(w->cur->relay);
    if (old) {
        mp_http_stop_listening(old->http);
        mp_relay_stop_listening(old->relay);
        old->next = w->draining;
        w->draining = old;
        drain_check(&w->drain);
    }
}

/* At exit, on the worker's thread: every generation it has. */
static void exit_job(unsigned idx)
{
    struct wstate *w = &wst[idx];
    mp_timer_cancel(w->loop, &w->drain);
    abort_job(w);
    /* newest first: a newer front's requests may use an older one's
     * MAPI/HTTP sessions (they end as its connections close) */
    if (w->cur)
        gen_free(w->cur);
    w->cur = NULL;
    while (w->draining) {
        struct gen *x = w->draining;
        w->draining = x->next;
        gen_free(x);
    }
    mp_worker_set_data(NULL);
    mp_call_cache_release();
    mp_msgonline_worker_release();
    mp_buf_cache_release();
}

/* Worker 0 built g (checked configuration, no); the other workers build
 * theirs from the same file, all between mp_listen_begin and commit so they
 * share the listening sockets.  0: every worker has a pending generation;
 * -1: none has, every listener made for them is closed again. */
static int gen_start(struct daemon *d, struct gen *g)
{
    mp_listen_begin();
    unsigned n = mp_workers_count(), k = 1;
    int rc = gen_build(d->w, g);
    for (; !rc && k < n; k++) {
        wst[k].path = d->path;
        wst[k].no = g->no;
        mp_worker_call(k, build_job, &wst[k]);
        rc = wst[k].rc;
    }
    if (rc) {
        for (unsigned i = 1; i < k; i++)
            mp_worker_call(i, abort_job, &wst[i]);
        mp_listen_abort();
        return -1;
    }
    mp_listen_commit();
    return 0;
}

/* After gen_start: the other workers switch to what they built. */
static void gen_commit_others(void)
{
    for (unsigned i = 1; i < mp_workers_count(); i++)
        mp_worker_call(i, commit_job, &wst[i]);
}

static const char *upstream_text(const struct mp_config *c, char *up, size_t n)
{
    if (c->have_rpch_upstream)
        snprintf(up, n, "RPC over HTTP %s://%.100s:%u/rpc/rpcproxy.dll?%.60s:<port>",
                 c->rpch_upstream.tls ? "https" : "http", c->rpch_upstream.host,
                 c->rpch_upstream.port,
                 c->rpch_upstream_server[0] ? c->rpch_upstream_server : c->binding.host);
    else if (c->binding.port)
        snprintf(up, n, "%s port %u", c->binding.host, c->binding.port);
    else
        snprintf(up, n, "%s (ports from its endpoint mapper on %u)", c->binding.host,
                 c->upstream_epm_port);
    return up;
}

static void set_status(struct daemon *d)
{
    char up[300];
    upstream_text(&d->w->cur->cfg, up, sizeof up);
    snprintf(d->status, sizeof d->status,
             "relaying: epmapper port %u, rpc port %u, upstream %s (configuration %u)",
             mp_relay_epm_port(d->w->cur->relay), mp_relay_rpc_port(d->w->cur->relay), up,
             d->w->cur->no);
}

/* Frees the earlier configurations whose last session has ended. */
static void drain_check(struct mp_timer *t)
{
    struct wstate *d = t->data;
    for (struct gen **pp = &d->draining; *pp;) {
        struct gen *g = *pp;
        if (mp_relay_live(g->relay) || mp_http_live(g->http) || mp_http_sessions(g->http) ||
            mp_rpch_http_live(g->rpch)) {
            pp = &g->next;
            continue;
        }
        *pp = g->next;
        if (d->idx == 0)
            mp_info("reload: configuration %u retired: its last session has ended", g->no);
        else
            mp_info("reload: worker %u: configuration %u retired: its last session has ended",
                    d->idx, g->no);
        gen_free(g);
    }
    if (d->draining)
        mp_timer_arm(d->loop, &d->drain, 1000);
}

/* Options a reload cannot change in a running process. */
static const char *const restart_only[] = {
    "mapiproxy:log file",       "mapiproxy:log target", "mapiproxy:syslog facility",
    "mapiproxy:syslog socket",  "mapiproxy:user",       "mapiproxy:group",
    "mapiproxy:metrics listen", "mapiproxy:workers",
};

/* SIGHUP (doc/operations.md): re-read and check the configuration as
 * --check does; start its listeners and modules; new sessions use it, and
 * the sessions in progress go on with the configuration they started with.
 * A configuration that fails the checks or does not start is refused and
 * the running one stays. */
static void reload(struct daemon *d)
{
    const char *name = cfg_name(d->path);
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        mp_error("reload: %s refused: out of memory; the running configuration stays", name);
        return;
    }
    struct mp_diag diag = {0};
    int rc = load_checked(&g->cfg, d->path, &diag);
    for (size_t i = 0; i < diag.n; i++)
        mp_error("reload: %s", diag.msgs[i]);
    mp_diag_free(&diag);
    if (rc) {
        mp_error("reload: %s refused (the errors above); the running configuration stays", name);
        free(g);
        return;
    }
    for (size_t i = 0; i < g->cfg.warnings.n; i++)
        mp_warn("reload: %s", g->cfg.warnings.msgs[i]);
    g->no = d->w->cur->no + 1;
    if (gen_start(d, g)) {
        mp_error("reload: %s refused: its listeners or modules did not start (the errors "
                 "above); the running configuration stays",
                 name);
        mp_config_free(&g->cfg);
        free(g);
        return;
    }
    gen_commit_others();
    struct wstate *w = d->w;
    struct gen *old = w->cur;
    mp_http_stop_listening(old->http);
    mp_relay_stop_listening(old->relay);
    old->next = w->draining;
    w->draining = old;
    w->cur = g;
    mp_worker_set_data(g->relay);
    char changed[1024], restart[400] = "";
    size_t n = mp_config_diff(&old->cfg, &g->cfg, NULL, changed, sizeof changed);
    for (size_t i = 0, o = 0; i < sizeof restart_only / sizeof restart_only[0]; i++) {
        const char *a = mp_config_get(&old->cfg, restart_only[i]);
        const char *b = mp_config_get(&g->cfg, restart_only[i]);
        if ((a || b) && (!a || !b || strcmp(a, b)))
            o += (size_t)snprintf(restart + o, o < sizeof restart ? sizeof restart - o : 0, "%s%s",
                                  o ? ", " : "", restart_only[i]);
    }
    mp_info("reload: %s applied as configuration %u for new sessions (%s%s); configuration %u "
            "stops accepting, its %zu association(s), %zu HTTP connection(s) and %zu MAPI/HTTP "
            "session(s) go on",
            name, g->no, n ? "changed: " : "no option changed", n ? changed : "", old->no,
            mp_relay_live(old->relay), mp_http_live(old->http), mp_http_sessions(old->http));
    if (restart[0])
        mp_warn("reload: %s: these changes need a restart and are not applied: %s", name, restart);
    mp_pcap_configure(&g->cfg); /* the packet export's choice, for new connections */
    /* After the lines above, which are written at the level they were
     * signalled under. */
    if (d->level_override < 0)
        mp_log_threshold = g->cfg.log_level;
    set_status(d);
    drain_check(&w->drain);
}

static void on_signal(struct mp_io *io, uint32_t ev)
{
    struct daemon *d = io->data;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            mp_info("signal HUP received: re-reading %s", cfg_name(d->path));
            /* systemd: reloading until READY=1 again (sd_notify(3)). */
            sd_notify(0, "RELOADING=1\nSTATUS=reloading the configuration");
            reload(d);
            sd_notifyf(0, "READY=1\nSTATUS=%s", d->status);
            break;
        case SIGUSR1: {
            int r = mp_log_reopen();
            if (r == 0)
                mp_info("signal USR1 received: log file %s reopened", mp_log_path());
            else if (r == 2)
                mp_info("signal USR1 received: syslog socket %s connected again",
                        mp_log_syslog_socket());
            else if (r > 0)
                mp_info("signal USR1 received: logging to stderr, nothing to reopen");
            else
                mp_error("signal USR1 received: cannot reopen log file %s: %s; still writing "
                         "to the old file",
                         mp_log_path(), strerror(errno));
            break;
        }
        case SIGUSR2:
            mp_info("signal USR2 received: ignored (it has no meaning for mapiproxy)");
            break;
        default:
            mp_info("signal %s received: shutting down", si.ssi_signo == SIGINT ? "INT" : "TERM");
            sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
            mp_loop_stop(d->loop);
        }
    }
}

/* Two descriptors per relayed connection (client and upstream) and a few for
 * listeners, the event loop, the log and the KDC worker. */
static void check_nofile(const struct mp_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    rlim_t need = 2 * (rlim_t)cfg->max_connections + 64;
    if (rl.rlim_cur >= need)
        return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (rl.rlim_cur > was && !setrlimit(RLIMIT_NOFILE, &rl))
        mp_info("open files limit raised from %llu to %llu (mapiproxy:max connections %u needs "
                "%llu)",
                (unsigned long long)was, (unsigned long long)rl.rlim_cur, cfg->max_connections,
                (unsigned long long)need);
    else
        rl.rlim_cur = was;
    if (rl.rlim_cur < need)
        mp_warn("open files limit %llu (hard %llu) is below the %llu that mapiproxy:max "
                "connections = %u needs: about %llu connections fit; raise the limit (ulimit "
                "-n, systemd LimitNOFILE=) or lower mapiproxy:max connections",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                (unsigned long long)need, cfg->max_connections,
                rl.rlim_cur > 16 ? (unsigned long long)(rl.rlim_cur - 16) / 2 : 0ULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check", no_argument, NULL, 'k'},
                                         {"print-default", no_argument, NULL, 'p'},
                                         {"log-level", required_argument, NULL, 'd'},
                                         {"version", no_argument, NULL, 'V'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    bool check = false;
    int level = -1, ch;
    while ((ch = getopt_long(argc, argv, "c:d:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'p':
            fputs(mp_default_config, stdout);
            return 0;
        case 'd':
            level = mp_log_level_parse(optarg);
            if (level < 0) {
                fprintf(stderr,
                        "mapiproxy: -d \"%s\" is not a log level; give 0-4 or error, warn, "
                        "info, debug, trace\n",
                        optarg);
                return 2;
            }
            break;
        case 'V':
            printf("mapiproxy %s\n", MP_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "mapiproxy: unexpected argument \"%s\"; the configuration file is given "
                "with -c FILE (see --help)\n",
                argv[optind]);
        return 2;
    }
    static struct mp_config cfg;
    struct mp_diag diag = {0};
    int rc = check  ? load_checked(&cfg, path, &diag)
             : path ? mp_config_load(&cfg, path, &diag)
                    : mp_config_load_text(&cfg, cfg_name(NULL), mp_default_config, &diag);
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.msgs[i]);
    mp_diag_free(&diag);
    for (size_t i = 0; !rc && i < cfg.warnings.n; i++)
        fprintf(stderr, "%s\n", cfg.warnings.msgs[i]);
    if (rc) {
        fprintf(stderr, "mapiproxy: configuration %s is not valid; fix the lines above\n",
                cfg_name(path));
        mp_config_free(&cfg);
        return 1;
    }
    if (check) {
        printf("%s: configuration OK\n", cfg_name(path));
        mp_config_free(&cfg);
        return 0;
    }
    mp_log_threshold = level >= 0 ? level : cfg.log_level;
    /* Order (doc/operations.md "Privileges"): the log, the listeners and
     * every file read at start are opened as the starting user (root);
     * only then is root dropped. */
    if (cfg.log_to == MP_LOG_TO_FILE && mp_log_open(cfg.log_file)) {
        fprintf(stderr, "mapiproxy: cannot open log file %s: %s; fix mapiproxy:log file\n",
                cfg.log_file, strerror(errno));
        mp_config_free(&cfg);
        return 1;
    }
    if (cfg.log_to == MP_LOG_TO_SYSLOG &&
        mp_log_open_syslog(cfg.syslog_socket, cfg.syslog_facility)) {
        fprintf(stderr, "mapiproxy: cannot log to syslog socket %s: %s\n", cfg.syslog_socket,
                strerror(errno));
        mp_config_free(&cfg);
        return 1;
    }
    struct mp_runas runas;
    char why[400];
    if (cfg.run_user[0] && mp_runas_resolve(cfg.run_user, cfg.run_group, &runas, why, sizeof why)) {
        mp_error("%s", why);
        mp_config_free(&cfg);
        mp_log_close();
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Decoding a call allocates and frees buffers of a few hundred KiB
     * (decompressed EMSMDB payloads, JSON); above glibc's default 128 KiB
     * each would be an mmap/munmap pair with page faults every call. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct mp_loop *loop = mp_loop_new();
    if (!loop) {
        mp_error("cannot create the event loop: %s", strerror(errno));
        return 1;
    }
    check_nofile(&cfg);
    mp_pcap_configure(&cfg);
    struct daemon sw = {.loop = loop, .path = path, .level_override = level, .w = &wst[0]};
    sw.io.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    sw.io.cb = on_signal;
    sw.io.data = &sw;
    mp_io_set(loop, &sw.io, MP_READ);
    /* Every exit after this point goes through `out`: what was made is freed. */
    rc = 1;
    bool workers = false;
    if (mp_workers_start(cfg.workers, loop)) {
        mp_config_free(&cfg);
        goto out;
    }
    workers = true;
    for (unsigned i = 0; i < mp_workers_count(); i++) {
        wst[i].idx = i;
        wst[i].loop = mp_worker_loop(i);
        wst[i].drain.cb = drain_check;
        wst[i].drain.data = &wst[i];
    }
    struct gen *g = calloc(1, sizeof *g);
    if (!g) {
        mp_config_free(&cfg);
        goto out;
    }
    g->cfg = cfg; /* the generation owns it from now on */
    g->no = 1;
    if (gen_start(&sw, g)) {
        gen_free(g);
        goto out;
    }
    gen_commit_others();
    sw.w->cur = g;
    mp_worker_set_data(g->relay);
    /* The metrics endpoint is the process's, across reloads (doc/monitoring.md). */
    if (g->cfg.metrics.port && mp_stats_http_start(loop, g->cfg.metrics.host, g->cfg.metrics.port))
        goto out;
    if (g->cfg.run_user[0]) {
        if (mp_runas_drop(&runas, why, sizeof why)) {
            mp_error("%s; refusing to go on as uid %u (mapiproxy:user = %s)", why,
                     (unsigned)geteuid(), g->cfg.run_user);
            goto out;
        }
        mp_info("running as user %s (uid %u), group %s (gid %u) from now on", runas.user,
                (unsigned)runas.uid, runas.group, (unsigned)runas.gid);
    }
    set_status(&sw);
    char up[300];
    mp_info("mapiproxy %s ready: epmapper port %u, rpc port %u, upstream %s, %zu interface(s)",
            MP_VERSION, mp_relay_epm_port(g->relay), mp_relay_rpc_port(g->relay),
            upstream_text(&g->cfg, up, sizeof up), g->cfg.n_ifaces);
    if (mp_workers_count() > 1)
        mp_info("%u workers (mapiproxy:workers)", mp_workers_count());
    /* systemd Type=notify: the listeners are bound and root is gone. */
    sd_notifyf(0, "READY=1\nSTATUS=%s\nMAINPID=%lu", sw.status, (unsigned long)getpid());
    mp_buf_cache_enable(); /* worker 0's; emptied by exit_job(0) */
    rc = mp_loop_run(loop) ? 1 : 0;
out:
    if (workers) {
        mp_workers_stop(exit_job); /* the others free their generations */
        exit_job(0);
    }
    mp_listen_release();
    mp_io_close(loop, &sw.io);
    mp_loop_free(loop);
    mp_log_close();
    return rc;
}
