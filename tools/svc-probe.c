/* svc-probe: drives the outside-service engine (src/svc) on the proxy's
 * event loop, for tests/integration/test_svc.py.
 *   svc-probe PROTO ADDR [key=value ...]
 * PROTO: clamd icap spamd rspamd milter lmtp.  ADDR: unix:/path or host:port.
 * Keys: max= (concurrent), fail=open|closed, io_ms=, connect_ms=,
 * maxstream= (clamd), service= preview= reqmod=1 (icap), cmd=CHECK|SYMBOLS|
 * REPORT (spamd), from= rcpt=a,b (milter, lmtp, rspamd).
 * Reads commands on stdin, one a line, and answers each when done:
 *   scan FILE       one conversation; one JSON line
 *   par N FILE      N at once; N JSON lines, then a stats line
 *   stats           {"active":..,"idle":..,"connects":..,"reuses":..}
 */
#include "core/log.h"
#include "event/loop.h"
#include "svc/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *proto, *addr;
static size_t maxstream, preview = 1024;
static bool reqmod;
static const char *service = "avscan", *cmd = "CHECK", *from = "sender@example.org";
static const char *rcpts[16];
static char icap_host[256];
static struct mp_loop *loop;
static struct mp_svc *svc;
static int pending, seq;

static void jstr(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void done(struct mp_svc_conv *c, void *arg)
{
    const struct mp_svc_verdict *v = &c->v;
    printf("{\"n\":%d,\"proto\":\"%s\",\"verdict\":\"%s\",\"name\":", (int)(intptr_t)arg, proto,
           mp_svc_kind_name(v->kind));
    jstr(v->name, strlen(v->name));
    printf(",\"status\":%d", v->status);
    if (v->has_score)
        printf(",\"score\":%.2f,\"required\":%.2f", v->score, v->required);
    if (v->kind == MP_SVC_UNAVAILABLE)
        printf(",\"policy\":\"%s\"", v->fail_open ? "pass" : "block");
    printf(",\"took_ms\":%.1f,\"detail\":", (double)v->took_us / 1000.0);
    jstr((const char *)v->detail.data + v->detail.off, mp_buf_avail(&v->detail));
    printf("}\n");
    fflush(stdout);
    if (--pending == 0)
        mp_loop_stop(loop);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *p = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            uint8_t *q = realloc(p, cap);
            if (!q)
                break;
            p = q;
        }
        size_t r = fread(p + n, 1, cap - n, f);
        if (!r)
            break;
        n += r;
    }
    fclose(f);
    *len = n;
    return p;
}

static struct mp_svc_conv *make(const uint8_t *m, size_t n)
{
    if (!strcmp(proto, "clamd"))
        return mp_svc_clamd_new(m, n, maxstream);
    if (!strcmp(proto, "icap")) {
        struct mp_svc_icap_req r = {.reqmod = reqmod,
                                    .host = icap_host,
                                    .service = service,
                                    .http_url = "http://mapiproxy/message.eml",
                                    .content_type = "message/rfc822",
                                    .preview = preview};
        return mp_svc_icap_new(&r, m, n);
    }
    if (!strcmp(proto, "spamd"))
        return mp_svc_spamd_new(!strcmp(cmd, "SYMBOLS")  ? MP_SPAMD_SYMBOLS
                                : !strcmp(cmd, "REPORT") ? MP_SPAMD_REPORT
                                                         : MP_SPAMD_CHECK,
                                "mapiproxy", m, n);
    if (!strcmp(proto, "rspamd")) {
        struct mp_svc_rspamd_req r = {.host = icap_host,
                                      .from = from,
                                      .rcpt = rcpts[0],
                                      .ip = "127.0.0.1",
                                      .helo = "mapiproxy",
                                      .user = "probe",
                                      .queue_id = "probe1"};
        return mp_svc_rspamd_new(&r, m, n);
    }
    if (!strcmp(proto, "milter")) {
        struct mp_svc_milter_req r = {.client_host = "localhost",
                                      .client_addr = "127.0.0.1",
                                      .client_port = 25,
                                      .helo = "mapiproxy",
                                      .from = from,
                                      .rcpt = rcpts};
        return mp_svc_milter_new(&r, m, n);
    }
    if (!strcmp(proto, "lmtp")) {
        struct mp_svc_lmtp_req r = {.lhlo = "mapiproxy", .from = from, .rcpt = rcpts};
        return mp_svc_lmtp_new(&r, m, n);
    }
    return NULL;
}

static void stats(void)
{
    struct mp_svc_stats st;
    mp_svc_stats(svc, &st);
    printf("{\"stats\":1,\"active\":%u,\"queued\":%u,\"idle\":%u,\"peak_active\":%u,"
           "\"connects\":%lu,\"reuses\":%lu,\"failures\":%lu}\n",
           st.active, st.queued, st.idle, st.peak_active, st.connects, st.reuses, st.failures);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: svc-probe PROTO ADDR [key=value ...]\n");
        return 2;
    }
    proto = argv[1];
    addr = argv[2];
    struct mp_svc_config cfg = {.name = proto, .addr = addr};
    size_t nr = 0;
    char *rcpt_copy = NULL;
    for (int i = 3; i < argc; i++) {
        char *a = argv[i], *eq = strchr(a, '=');
        if (!eq)
            return 2;
        *eq++ = 0;
        if (!strcmp(a, "max"))
            cfg.max_conns = (unsigned)atoi(eq);
        else if (!strcmp(a, "fail"))
            cfg.fail_open = !strcmp(eq, "open");
        else if (!strcmp(a, "io_ms"))
            cfg.io_ms = (unsigned)atoi(eq);
        else if (!strcmp(a, "connect_ms"))
            cfg.connect_ms = (unsigned)atoi(eq);
        else if (!strcmp(a, "maxstream"))
            maxstream = (size_t)atol(eq);
        else if (!strcmp(a, "service"))
            service = eq;
        else if (!strcmp(a, "preview"))
            preview = (size_t)atol(eq);
        else if (!strcmp(a, "reqmod"))
            reqmod = atoi(eq);
        else if (!strcmp(a, "cmd"))
            cmd = eq;
        else if (!strcmp(a, "from"))
            from = eq;
        else if (!strcmp(a, "rcpt")) {
            rcpt_copy = eq;
            for (char *t = strtok(rcpt_copy, ","); t && nr < 15; t = strtok(NULL, ","))
                rcpts[nr++] = t;
        } else
            return 2;
    }
    if (!nr)
        rcpts[0] = "user@example.org";
    snprintf(icap_host, sizeof icap_host, "%s", strncmp(addr, "unix:", 5) ? addr : "localhost");
    loop = mp_loop_new();
    struct mp_svc_loopif lif;
    mp_svc_loopif_mp_loop(&lif, loop);
    svc = mp_svc_new(&lif, &cfg);
    if (!svc)
        return 1;
    char line[4096];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        int n = 1;
        char file[4000];
        if (!strcmp(line, "stats")) {
            stats();
            continue;
        }
        if (!strcmp(line, "quit"))
            break;
        if (sscanf(line, "par %d %3999s", &n, file) != 2 &&
            sscanf(line, "scan %3999s", file) != 1) {
            printf("{\"error\":\"bad command\"}\n");
            fflush(stdout);
            continue;
        }
        size_t len = 0;
        uint8_t *m = slurp(file, &len);
        if (!m) {
            printf("{\"error\":\"cannot read %s\"}\n", file);
            fflush(stdout);
            continue;
        }
        pending = n;
        for (int i = 0; i < n; i++) {
            struct mp_svc_conv *c = make(m, len);
            if (!c || mp_svc_submit(svc, c, done, (void *)(intptr_t)++seq))
                return 1;
        }
        mp_loop_run(loop);
        if (!strncmp(line, "par", 3))
            stats();
        free(m);
    }
    mp_svc_free(svc);
    mp_loop_free(loop);
    return 0;
}
