/* Load generator for the relay benchmark (make bench).
 *
 *   build/bench/loadgen -p PORT [-h ADDR] [-c CLIENTS] [-w WARMUP_S] [-d DURATION_S]
 *                       [-P PID[,PID...]] [-s REQ_STUB_BYTES]
 *   build/bench/loadgen -p PORT [-h ADDR] -i SESSIONS [-c MAX_PENDING]
 *   -u (throughput mode): message uploads instead (make bench-av), each in
 *      two EcDoRpcExt2 calls as Outlook makes them (bench_upload_rops,
 *      uncompressed): RopCreateMessage + RopSetProperties (class, subject, a
 *      ~600-character body), then RopSaveChangesMessage + RopRelease.  The
 *      subject and body carry a counter that changes with every message, so
 *      no two are alike.  One "call" in the result line is then one message:
 *      its latency from the first request sent to the second response.
 *      Needs `responder -u` (or any server that answers those ROPs).
 *   -a (either mode): bind with an NTLMSSP-shaped auth verifier (type 10,
 *      level connect) and send an auth3 after the bind_ack, so a relay treats
 *      the association as authenticated (mapiproxy: byte-for-byte
 *      pass-through).  The tokens are not real NTLM; the responder does not
 *      check them.
 *
 * Throughput mode: CLIENTS concurrent DCE/RPC clients on one epoll thread.
 * Each connects, binds EMSMDB (a4f1db00-...-00dd010662da v0.81, NDR 2.0,
 * 5840-byte fragments), then loops: one EcDoRpcExt2 request (opnum 11,
 * ~2 KB stub: handle, flags, rgbIn = RPC_HEADER_EXT + an LZ77-compressed
 * RopWriteStream request, cbIn, pcbOut, empty rgbAuxIn, ...) and waits for
 * the whole response (every fragment up to PFC_LAST).  Calls completing in
 * the WARMUP_S seconds are not counted; the next DURATION_S seconds are.
 * At the start and end of the measured window it reads utime+stime of each
 * -P PID from /proc/PID/stat, so the CPU figures cover exactly the measured
 * calls.  Prints one line:
 *   result clients=N calls=C secs=S cps=X p50_us=A p99_us=B p999_us=D max_us=M
 *          errors=E cpu_us=PID:U[,PID:U...] self_cpu_us=U sys_busy_us=B sys_idle_us=I
 * (sys_*: the whole machine, from /proc/stat, over the same window: what
 * other processes took is sys_busy - relay - responder - self).
 *
 * Idle mode (-i): opens SESSIONS connections, at most MAX_PENDING (default
 * 256) connecting or binding at a time; each completes a bind.  Then prints
 *   ready sessions=N errors=E secs=S
 * and holds them until stdin reaches EOF or SIGTERM/SIGINT arrives; it then
 * prints "alive=N" (sessions still open: the peer did not close them) and
 * exits.  Raises the soft RLIMIT_NOFILE to the hard limit. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench_common.h"
#include "core/buf.h"

#define HIST_MAX 2000000u /* 1 us buckets up to 2 s; above: the last bucket */

enum cstate { C_CONNECTING, C_BINDING, C_CALLING, C_IDLE, C_DEAD };

struct client {
    int fd;
    enum cstate st;
    uint32_t call_id;
    uint64_t t0;
    size_t want_out; /* bytes of the current request still to send */
    size_t out_off;
    uint8_t *in; /* read buffer */
    size_t in_len, in_cap;
    const uint8_t *cur; /* the request being sent (its template) */
    bool saving;        /* -u: the upload's second call is out */
};

static int epfd;
static struct sockaddr_in target;
static uint8_t bind_pdu[512];
static size_t bind_len;
static uint8_t auth3_pdu[512];
static size_t auth3_len;
static bool use_auth;     /* -a: bind with an auth verifier, then auth3 */
static bool upload;       /* -u: message uploads */
static size_t dig_at[2];  /* -u: the counter's digits in req_pdu */
static uint8_t *save_pdu; /* -u: the second call (save, release) */
static size_t save_len;
static uint64_t n_sent; /* -u: the counter */
static uint8_t *req_pdu;
static size_t req_len;
static uint32_t *hist;
static uint64_t n_calls, n_errors, lat_max;
static bool measuring;
static long n_settled; /* idle mode: sessions bound or failed */
static volatile sig_atomic_t got_signal;

#define IN_CAP 32768     /* throughput mode: a whole 8 KB response fits */
#define IN_CAP_IDLE 1024 /* idle mode: a bind_ack */

static void on_sig(int s)
{
    got_signal = s;
}

/* The EcDoRpcExt2 request stub around an rgbIn of n_in bytes already at
 * s + 28: the context handle, pulFlags, the conformant array's max_count,
 * then cbIn, pcbOut (what Outlook offers), an empty rgbAuxIn and
 * pcbAuxOut.  Returns the end of the stub. */
static uint8_t *ext2_stub(uint8_t *s, size_t n_in)
{
    uint8_t *p = s;
    bench_fill(p + 4, 16, 7);
    p += 20;
    mp_put32(p, 0), p += 4;              /* pulFlags */
    mp_put32(p, (uint32_t)n_in), p += 4; /* max_count; the bytes are in place */
    p += (n_in + 3) & ~(size_t)3;
    mp_put32(p, (uint32_t)n_in), p += 4; /* cbIn */
    mp_put32(p, 0x8007), p += 4;         /* pcbOut: what Outlook offers */
    mp_put32(p, 0), p += 4;              /* rgbAuxIn: max_count 0 */
    mp_put32(p, 0), p += 4;              /* cbAuxIn */
    mp_put32(p, 0x1008), p += 4;         /* pcbAuxOut */
    return p;
}

/* -u: the EcDoRpcExt2 request of an upload's second call (its own
 * template: the save and the release). */
static void build_upload_save(void)
{
    uint8_t s[512], *p;
    size_t dig[2];
    memset(s, 0, sizeof s);
    size_t r = bench_upload_rops(s + 36, 2000, 1, 0, dig); /* cap: enough (no body) */
    bench_put_header_ext(s + 28, BENCH_EXT_LAST, (uint16_t)r, (uint16_t)r);
    size_t n_in = 8 + r;
    p = ext2_stub(s, n_in);
    struct mp_buf b = {0};
    mp_build_request(&b, MP_PFC_FIRST | MP_PFC_LAST, 0, 0, BENCH_OPNUM, NULL, s, (size_t)(p - s),
                     (uint32_t)(p - s));
    save_len = mp_buf_avail(&b);
    save_pdu = malloc(save_len);
    memcpy(save_pdu, mp_buf_head(&b), save_len);
    mp_buf_free(&b);
}

static void build_pdus(size_t req_stub)
{
    struct mp_buf b = {0};
    static struct mp_bind bind;
    bind.max_xmit = bind.max_recv = BENCH_MAX_FRAG;
    bind.assoc_group = 0;
    bind.n_ctx = 1;
    bind.ctx[0].ctx_id = 0;
    bind.ctx[0].n_ts = 1;
    bind.ctx[0].abstract = bench_emsmdb;
    bind.ctx[0].ts[0] = mp_ndr20_syntax;
    /* -a: NTLMSSP-shaped tokens (type 10, level connect).  Nobody checks
     * them: the point is that the relay sees an authenticated association
     * and relays it byte for byte (pass-through). */
    static uint8_t negotiate[40] = "NTLMSSP", authenticate[120] = "NTLMSSP";
    negotiate[8] = 1;
    authenticate[8] = 3;
    struct mp_auth auth = {.type = 10, .level = 2, .context_id = 0};
    auth.value = negotiate;
    auth.value_len = sizeof(negotiate);
    mp_build_bind(&b, MP_PT_BIND, MP_PFC_FIRST | MP_PFC_LAST, 1, &bind, use_auth ? &auth : NULL);
    bind_len = mp_buf_avail(&b);
    memcpy(bind_pdu, mp_buf_head(&b), bind_len);
    mp_buf_free(&b);
    /* auth3: header, 4 bytes of padding, sec_trailer, AUTHENTICATE token */
    uint8_t *q = auth3_pdu;
    auth3_len = MP_HDR_LEN + 4 + MP_SEC_TRAILER_LEN + sizeof(authenticate);
    q[0] = 5, q[1] = 0, q[2] = MP_PT_AUTH3, q[3] = MP_PFC_FIRST | MP_PFC_LAST;
    q[4] = 0x10, q[5] = q[6] = q[7] = 0;
    mp_put16(q + 8, (uint16_t)auth3_len);
    mp_put16(q + 10, sizeof(authenticate));
    mp_put32(q + 12, 1);
    memset(q + 16, 0, 4);
    q[20] = 10, q[21] = 2, q[22] = 0, q[23] = 0;
    mp_put32(q + 24, 0);
    memcpy(q + 28, authenticate, sizeof(authenticate));

    /* EcDoRpcExt2 in (idl/emsmdb.idl): pcxh(20) pulFlags(4)
     * rgbIn[max_count + bytes, padded to 4] cbIn(4) pcbOut(4)
     * rgbAuxIn[max_count 0] cbAuxIn(4) pcbAuxOut(4).  rgbIn: RPC_HEADER_EXT +
     * LZ77-compressed RopWriteStream request. */
    if (req_stub < 256)
        req_stub = 256;
    size_t dig[2] = {0, 0};
    if (upload) {
        req_stub = 4096;
        build_upload_save();
    }
    uint8_t *s = calloc(1, req_stub + 8), *p;
    size_t n_in = 0;
    if (upload) {
        size_t r = bench_upload_rops(s + 36, req_stub - 96, 0, 600, dig);
        bench_put_header_ext(s + 28, BENCH_EXT_LAST, (uint16_t)r, (uint16_t)r);
        n_in = r ? 8 + r : 0;
    } else {
        n_in = bench_rpc_ext(s + 28, req_stub - 48, false, 4242);
    }
    if (!n_in) {
        fprintf(stderr, "loadgen: cannot build the rgbIn payload\n");
        exit(1);
    }
    p = ext2_stub(s, n_in);
    req_stub = (size_t)(p - s);
    mp_build_request(&b, MP_PFC_FIRST | MP_PFC_LAST, 0, 0, BENCH_OPNUM, NULL, s, req_stub,
                     (uint32_t)req_stub);
    req_len = mp_buf_avail(&b);
    for (int i = 0; i < 2; i++) /* stub offset 36: pcxh, pulFlags, max_count, RPC_HEADER_EXT */
        dig_at[i] = MP_REQ_HDR_LEN + 36 + dig[i];
    req_pdu = malloc(req_len);
    memcpy(req_pdu, mp_buf_head(&b), req_len);
    mp_buf_free(&b);
    free(s);
}

static int start_client(struct client *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&target, sizeof(target)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->st = C_CONNECTING;
    c->in_len = 0;
    c->call_id = 1;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void fail(struct client *c)
{
    if (c->st == C_DEAD)
        return;
    if (c->st == C_CONNECTING || c->st == C_BINDING)
        n_settled++;
    n_errors++;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->st = C_DEAD;
}

static void want(struct client *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* Sends the rest of the current request; registers EPOLLOUT if it blocks. */
static int push(struct client *c, const uint8_t *pdu)
{
    while (c->out_off < c->want_out) {
        ssize_t k = send(c->fd, pdu + c->out_off, c->want_out - c->out_off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                want(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)k;
    }
    return 1;
}

static bool fresh_call; /* on_input just sent a new request */

static int send_request(struct client *c)
{
    fresh_call = true;
    c->call_id++;
    uint8_t *pdu = c->saving ? save_pdu : req_pdu;
    mp_put32(pdu + 12, c->call_id);
    if (upload && !c->saving) { /* a new message (a partial send's rest may carry
                                   the next one's digits: still well-formed) */
        n_sent++;
        bench_put_digits(req_pdu + dig_at[0], n_sent);
        bench_put_digits(req_pdu + dig_at[1], n_sent);
    }
    c->want_out = c->saving ? save_len : req_len;
    c->out_off = 0;
    c->st = C_CALLING;
    if (!c->saving)
        c->t0 = bench_now_us();
    c->cur = pdu;
    int rc = push(c, pdu);
    /* The template is shared: a partially sent request keeps its own copy
     * of the call id only in the kernel; later bytes are identical for every
     * client except the id, which sits in the first 16 bytes (always sent
     * in the first send() on a fresh, drained socket). */
    return rc;
}

static void record(uint64_t us)
{
    if (!measuring)
        return;
    n_calls++;
    hist[us < HIST_MAX ? us : HIST_MAX - 1]++;
    if (us > lat_max)
        lat_max = us;
}

/* Whole fragments in c->in; returns -1 on a protocol error. */
static int on_input(struct client *c, bool idle_mode)
{
    size_t used = 0;
    while (c->in_len - used >= MP_HDR_LEN) {
        struct mp_pdu_hdr h;
        if (mp_pdu_hdr_check(c->in + used, c->in_len - used, &h))
            return -1;
        if (c->in_len - used < h.frag_len) {
            if (h.frag_len > c->in_cap)
                return -1;
            break;
        }
        const uint8_t *p = c->in + used;
        used += h.frag_len;
        if (c->st == C_BINDING) {
            if (h.ptype != MP_PT_BIND_ACK)
                return -1;
            static struct mp_bind_ack ack;
            if (mp_bind_ack_parse(p, &h, &ack) || ack.n_results < 1 ||
                ack.res[0].result != MP_CTX_ACCEPT)
                return -1;
            if (idle_mode) {
                if (use_auth &&
                    send(c->fd, auth3_pdu, auth3_len, MSG_NOSIGNAL) != (ssize_t)auth3_len)
                    return -1;
                c->st = C_IDLE;
                n_settled++;
                want(c, EPOLLIN | EPOLLRDHUP);
                continue;
            }
            if (use_auth && send(c->fd, auth3_pdu, auth3_len, MSG_NOSIGNAL) != (ssize_t)auth3_len)
                return -1; /* fresh socket, empty send queue: never partial */
            if (send_request(c) < 0)
                return -1;
            continue;
        }
        if (c->st != C_CALLING || h.call_id != c->call_id)
            return -1;
        if (h.ptype == MP_PT_FAULT)
            return -1;
        if (h.ptype != MP_PT_RESPONSE)
            return -1;
        if (h.flags & MP_PFC_LAST) {
            if (upload && !c->saving) { /* created: now the save */
                c->saving = true;
            } else {
                record(bench_now_us() - c->t0);
                c->saving = false;
            }
            if (send_request(c) < 0)
                return -1;
        }
    }
    if (used) {
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
    return 0;
}

static void on_event(struct client *c, uint32_t ev, bool idle_mode)
{
    if (c->st == C_DEAD)
        return;
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || !(ev & EPOLLOUT)) {
            if (err || (ev & (EPOLLERR | EPOLLHUP)))
                fail(c);
            return;
        }
        c->st = C_BINDING;
        c->want_out = bind_len;
        c->out_off = 0;
        want(c, EPOLLIN);
        if (push(c, bind_pdu) < 0) {
            fail(c);
            return;
        }
        return;
    }
    if (ev & EPOLLOUT) {
        int rc = push(c, c->st == C_BINDING ? bind_pdu : c->cur ? c->cur : req_pdu);
        if (rc < 0) {
            fail(c);
            return;
        }
        if (rc == 1)
            want(c, EPOLLIN);
    }
    if (c->st == C_IDLE) {
        if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
            fail(c); /* the relay closed (or sent something) on an idle session */
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        for (;;) {
            ssize_t k = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    break;
                fail(c);
                return;
            }
            if (k == 0) {
                fail(c);
                return;
            }
            c->in_len += (size_t)k;
            fresh_call = false;
            if (on_input(c, idle_mode) < 0) {
                fail(c);
                return;
            }
            if (c->in_len == c->in_cap) {
                fail(c);
                return;
            }
            if (c->st == C_IDLE)
                return;
            /* Response complete and the next request sent: nothing more can
             * arrive before the relay sees it; skip the recv() -> EAGAIN. */
            if (c->in_len == 0 && c->st == C_CALLING && c->out_off == c->want_out &&
                c->out_off != 0 && fresh_call)
                break;
        }
    }
}

/* utime+stime of a process, in clock ticks; -1 if unreadable. */
static long long proc_ticks(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    fclose(fp);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* comm may hold spaces */
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14)
     * stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* Busy and idle ticks of the whole machine (/proc/stat "cpu" line). */
static void sys_ticks(long long *busy, long long *idle)
{
    unsigned long long v[8] = {0};
    *busy = *idle = -1;
    FILE *fp = fopen("/proc/stat", "r");
    if (!fp)
        return;
    if (fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        *busy = (long long)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
        *idle = (long long)(v[3] + v[4]);
    }
    fclose(fp);
}

static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static uint64_t percentile(double q)
{
    uint64_t want_n = (uint64_t)(q * (double)n_calls + 0.999999), seen = 0;
    if (!want_n)
        want_n = 1;
    for (uint32_t i = 0; i < HIST_MAX; i++) {
        seen += hist[i];
        if (seen >= want_n)
            return i;
    }
    return HIST_MAX;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, opt;
    long clients = 1, idle = 0;
    double warm = 1, dur = 5;
    size_t req_stub = BENCH_REQ_STUB;
    int pids[8], n_pids = 0;
    while ((opt = getopt(argc, argv, "auh:p:c:w:d:P:s:i:")) != -1) {
        switch (opt) {
        case 'a':
            use_auth = true;
            break;
        case 'u':
            upload = true;
            break;
        case 'h':
            host = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 'c':
            clients = atol(optarg);
            break;
        case 'w':
            warm = atof(optarg);
            break;
        case 'd':
            dur = atof(optarg);
            break;
        case 's':
            req_stub = (size_t)atol(optarg);
            break;
        case 'i':
            idle = atol(optarg);
            break;
        case 'P':
            for (char *t = strtok(optarg, ","); t && n_pids < 8; t = strtok(NULL, ","))
                pids[n_pids++] = atoi(t);
            break;
        default:
            fprintf(stderr, "usage: see the comment at the top of bench/loadgen.c\n");
            return 2;
        }
    }
    if (!port || clients < 1) {
        fprintf(stderr, "loadgen: -p PORT is required\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    long lim = bench_raise_nofile();
    long total = idle ? idle : clients;
    if (lim > 0 && total + 16 > lim) {
        fprintf(stderr, "loadgen: %ld sessions need more than the open-file limit %ld\n", total,
                lim);
        return 1;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &target.sin_addr) != 1) {
        fprintf(stderr, "loadgen: %s is not an IPv4 address\n", host);
        return 2;
    }
    build_pdus(req_stub);
    hist = calloc(HIST_MAX, sizeof(*hist));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct client *cs = calloc((size_t)total, sizeof(*cs));
    for (long i = 0; i < total; i++) {
        cs[i].fd = -1;
        cs[i].st = C_DEAD;
    }
    struct epoll_event evs[512];

    if (idle) {
        struct sigaction sa = {.sa_handler = on_sig};
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        long max_pending = clients > 1 ? clients : 256, started = 0, pending = 0;
        uint64_t t0 = bench_now_us();
        for (;;) {
            pending = started - n_settled;
            long done = n_settled;
            while (started < total && pending < max_pending) {
                struct client *c = &cs[started++];
                c->in = malloc(IN_CAP_IDLE);
                c->in_cap = IN_CAP_IDLE;
                if (start_client(c) < 0) {
                    n_errors++;
                    n_settled++;
                    c->st = C_DEAD;
                    continue;
                }
                pending++;
            }
            if (done == total)
                break;
            if (bench_now_us() - t0 > 120u * 1000000u) {
                fprintf(stderr, "loadgen: idle sessions not all bound after 120 s\n");
                break;
            }
            int n = epoll_wait(epfd, evs, 512, 100);
            for (int i = 0; i < n; i++)
                on_event(evs[i].data.ptr, evs[i].events, true);
        }
        for (long i = 0; i < total; i++) { /* give the read buffers back */
            free(cs[i].in);
            cs[i].in = NULL;
        }
        long ok = 0;
        for (long i = 0; i < total; i++)
            ok += cs[i].st == C_IDLE;
        printf("ready sessions=%ld errors=%llu secs=%.2f\n", ok, (unsigned long long)n_errors,
               (double)(bench_now_us() - t0) / 1e6);
        fflush(stdout);
        /* Hold until stdin EOF or a signal; watch the sessions meanwhile. */
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &e);
        bool stop = false;
        while (!stop && !got_signal) {
            int n = epoll_wait(epfd, evs, 512, 500);
            for (int i = 0; i < n; i++) {
                if (!evs[i].data.ptr) {
                    char tmp[256];
                    if (read(0, tmp, sizeof(tmp)) <= 0)
                        stop = true;
                    continue;
                }
                on_event(evs[i].data.ptr, evs[i].events, true);
            }
        }
        long alive = 0;
        for (long i = 0; i < total; i++)
            alive += cs[i].st == C_IDLE;
        printf("alive=%ld\n", alive);
        fflush(stdout);
        return 0;
    }

    for (long i = 0; i < total; i++) {
        cs[i].in = malloc(IN_CAP);
        cs[i].in_cap = IN_CAP;
        if (start_client(&cs[i]) < 0)
            n_errors++, cs[i].st = C_DEAD;
    }
    uint64_t t_start = bench_now_us() + (uint64_t)(warm * 1e6);
    uint64_t t_end = t_start + (uint64_t)(dur * 1e6);
    long long ticks0[8] = {0}, ticks1[8] = {0};
    uint64_t self0 = 0, self1 = 0, m0 = 0, m1 = 0;
    long long busy0 = 0, busy1 = 0, idle0 = 0, idle1 = 0;
    for (;;) {
        uint64_t now = bench_now_us();
        if (!measuring && now >= t_start) {
            for (int i = 0; i < n_pids; i++)
                ticks0[i] = proc_ticks(pids[i]);
            self0 = self_cpu_us();
            sys_ticks(&busy0, &idle0);
            m0 = bench_now_us();
            measuring = true;
            n_errors = 0; /* count only errors in the window */
        }
        if (measuring && now >= t_end) {
            for (int i = 0; i < n_pids; i++)
                ticks1[i] = proc_ticks(pids[i]);
            self1 = self_cpu_us();
            sys_ticks(&busy1, &idle1);
            m1 = bench_now_us();
            break;
        }
        int n = epoll_wait(epfd, evs, 512, 5);
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, false);
    }
    double secs = (double)(m1 - m0) / 1e6;
    long hz = sysconf(_SC_CLK_TCK);
    printf("result clients=%ld calls=%llu secs=%.3f cps=%.1f p50_us=%llu p99_us=%llu "
           "p999_us=%llu max_us=%llu errors=%llu cpu_us=",
           clients, (unsigned long long)n_calls, secs, (double)n_calls / secs,
           (unsigned long long)(n_calls ? percentile(0.50) : 0),
           (unsigned long long)(n_calls ? percentile(0.99) : 0),
           (unsigned long long)(n_calls ? percentile(0.999) : 0), (unsigned long long)lat_max,
           (unsigned long long)n_errors);
    for (int i = 0; i < n_pids; i++) {
        long long d = ticks0[i] < 0 || ticks1[i] < 0 ? -1 : (ticks1[i] - ticks0[i]);
        printf("%s%d:%lld", i ? "," : "", pids[i], d < 0 ? -1 : d * 1000000LL / hz);
    }
    printf(" self_cpu_us=%llu sys_busy_us=%lld sys_idle_us=%lld\n",
           (unsigned long long)(self1 - self0), (busy1 - busy0) * 1000000LL / hz,
           (idle1 - idle0) * 1000000LL / hz);
    fflush(stdout);
    return 0;
}
