/* mapiproxy: the daemon's entry point. */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"
#include "event/loop.h"
#include "http/front.h"
#include "relay/relay.h"

#define MP_VERSION "0.1.0"

static void usage(FILE *fp)
{
    fprintf(fp, "usage: mapiproxy [-c FILE] [--check] [--log-level N] [--version]\n"
                "  -c, --config FILE   smb.conf-syntax configuration (default: the embedded one)\n"
                "      --check         validate the configuration, report every error, exit\n"
                "      --print-default print the embedded default configuration\n"
                "  -d, --log-level N   0 error .. 4 trace (overrides mapiproxy:log level)\n");
}

struct sig_watch {
    struct mp_io io;
    struct mp_loop *loop;
};

static void on_signal(struct mp_io *io, uint32_t ev)
{
    struct sig_watch *w = io->data;
    struct signalfd_siginfo si;
    if (read(io->fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        mp_info("signal %u received: shutting down", si.ssi_signo);
        mp_loop_stop(w->loop);
    }
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
            level = atoi(optarg);
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
    static struct mp_config cfg;
    struct mp_diag diag = {0};
    int rc = path ? mp_config_load(&cfg, path, &diag)
                  : mp_config_load_text(&cfg, "(embedded default)", mp_default_config, &diag);
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "%s\n", diag.msgs[i]);
    mp_diag_free(&diag);
    for (size_t i = 0; i < cfg.warnings.n; i++)
        fprintf(stderr, "%s\n", cfg.warnings.msgs[i]);
    if (rc) {
        fprintf(stderr, "mapiproxy: configuration %s is not valid; fix the lines above\n",
                path ? path : "(embedded default)");
        mp_config_free(&cfg);
        return 1;
    }
    if (check) {
        printf("%s: configuration OK\n", path ? path : "(embedded default)");
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
    sigprocmask(SIG_BLOCK, &set, NULL);
    struct mp_loop *loop = mp_loop_new();
    if (!loop) {
        mp_error("cannot create the event loop: %s", strerror(errno));
        return 1;
    }
    struct sig_watch sw = {.loop = loop};
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
    char up[300];
    if (cfg.binding.port)
        snprintf(up, sizeof(up), "%s port %u", cfg.binding.host, cfg.binding.port);
    else
        snprintf(up, sizeof(up), "%s (ports from its endpoint mapper on %u)", cfg.binding.host,
                 cfg.upstream_epm_port);
    mp_info("mapiproxy %s ready: epmapper port %u, rpc port %u, upstream %s, %zu interface(s)",
            MP_VERSION, mp_relay_epm_port(relay), mp_relay_rpc_port(relay), up, cfg.n_ifaces);
    rc = mp_loop_run(loop);
    mp_http_free(http);
    mp_relay_free(relay);
    mp_io_close(loop, &sw.io);
    mp_loop_free(loop);
    mp_config_free(&cfg);
    mp_log_close();
    return rc ? 1 : 0;
}
