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
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "event/loop.h"
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
                "Signals: TERM, INT stop; HUP re-reads the configuration; USR1 reopens the\n"
                "log file; USR2 is ignored (doc/operations.md).\n");
}

struct daemon {
    struct mp_io io;
    struct mp_loop *loop;
    const char *path;      /* -c FILE, NULL for the embedded default */
    int level_override;    /* -d, or -1 */
    struct mp_config *cfg; /* the running configuration */
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

/* SIGHUP: re-read and validate the configuration.  Applied at once: the log
 * level.  Every other change is named in the log as needing a restart (the
 * listeners, modules and sessions keep the configuration they started with). */
static void reload(struct daemon *d)
{
    static struct mp_config next;
    struct mp_diag diag = {0};
    const char *name = cfg_name(d->path);
    int rc = load_checked(&next, d->path, &diag);
    for (size_t i = 0; i < diag.n; i++)
        mp_error("reload: %s", diag.msgs[i]);
    mp_diag_free(&diag);
    if (rc) {
        mp_error("reload: %s refused (the errors above); the running configuration stays", name);
        return;
    }
    for (size_t i = 0; i < next.warnings.n; i++)
        mp_warn("reload: %s", next.warnings.msgs[i]);
    bool level = false;
    if (d->level_override < 0 && next.log_level != mp_log_threshold) {
        mp_log_threshold = next.log_level;
        level = true;
    }
    char changed[1024];
    size_t n = mp_config_diff(d->cfg, &next, "mapiproxy:log level", changed, sizeof changed);
    if (level)
        mp_info("reload: %s: mapiproxy:log level is now %d", name, mp_log_threshold);
    if (n)
        mp_warn("reload: %s is valid, but these changes are not applied until a restart "
                "(live reload covers mapiproxy:log level only): %s",
                name, changed);
    else
        mp_info("reload: %s: no change that needs a restart", name);
    mp_config_free(&next);
}

static void on_signal(struct mp_io *io, uint32_t ev)
{
    struct daemon *d = io->data;
    struct signalfd_siginfo si;
    while (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGHUP:
            mp_info("signal HUP received: re-reading %s", cfg_name(d->path));
            reload(d);
            break;
        case SIGUSR1: {
            int r = mp_log_reopen();
            if (r == 0)
                mp_info("signal USR1 received: log file %s reopened", mp_log_path());
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
    if (mp_log_open(cfg.log_file)) {
        fprintf(stderr, "mapiproxy: cannot open log file %s: %s; fix mapiproxy:log file\n",
                cfg.log_file, strerror(errno));
        mp_config_free(&cfg);
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
    struct daemon sw = {.loop = loop, .path = path, .level_override = level, .cfg = &cfg};
    sw.io.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    sw.io.cb = on_signal;
    sw.io.data = &sw;
    mp_io_set(loop, &sw.io, MP_READ);
    struct mp_relay *relay = mp_relay_new(loop, &cfg);
    if (!relay) {
        mp_io_close(loop, &sw.io);
        mp_loop_free(loop);
        mp_config_free(&cfg);
        return 1;
    }
    struct mp_http *http = NULL;
    if (cfg.n_http_listen && !(http = mp_http_new(loop, &cfg))) {
        mp_relay_free(relay);
        mp_io_close(loop, &sw.io);
        mp_loop_free(loop);
        mp_config_free(&cfg);
        return 1;
    }
    if (http)
        mp_http_set_modules(http, mp_relay_modules(relay));
    struct mp_rpch_http *rpch = NULL;
    if (mp_rpch_http_setup(loop, &cfg, http, mp_relay_adopt, relay, &rpch)) {
        mp_http_free(http);
        mp_relay_free(relay);
        mp_io_close(loop, &sw.io);
        mp_loop_free(loop);
        mp_config_free(&cfg);
        return 1;
    }
    if (cfg.metrics.port && mp_stats_http_start(loop, cfg.metrics.host, cfg.metrics.port)) {
        mp_rpch_http_free(rpch);
        mp_http_free(http); /* doc/monitoring.md */
        mp_relay_free(relay);
        mp_io_close(loop, &sw.io);
        mp_loop_free(loop);
        mp_config_free(&cfg);
        return 1;
    }
    char up[300];
    if (cfg.binding.port)
        snprintf(up, sizeof(up), "%s port %u", cfg.binding.host, cfg.binding.port);
    else
        snprintf(up, sizeof(up), "%s (ports from its endpoint mapper on %u)", cfg.binding.host,
                 cfg.upstream_epm_port);
    mp_info("mapiproxy %s ready: epmapper port %u, rpc port %u, upstream %s, %zu interface(s)",
            MP_VERSION, mp_relay_epm_port(relay), mp_relay_rpc_port(relay), up, cfg.n_ifaces);
    rc = mp_loop_run(loop);
    mp_rpch_http_free(rpch);
    mp_http_free(http);
    mp_relay_free(relay);
    mp_io_close(loop, &sw.io);
    mp_loop_free(loop);
    mp_config_free(&cfg);
    mp_log_close();
    return rc ? 1 : 0;
}
