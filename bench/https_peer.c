/* HTTPS bench peer for the front's rows (doc/internals/bench.md):
 *
 *   https_peer serve PORT CERT KEY RESP_BYTES
 *       a keep-alive HTTPS responder: every request (Content-Length body)
 *       gets 200 with RESP_BYTES of body, as an Exchange MAPI/HTTP answer
 *       would carry it; one thread, epoll.
 *   https_peer load PORT CLIENTS SECONDS REQ_BYTES
 *       CLIENTS keep-alive TLS connections, each sending POST /mapi/emsmdb
 *       (X-RequestType: Execute) with REQ_BYTES of body and waiting for the
 *       whole answer; prints "requests N rps R p50_us A p99_us B all M" (M:
 *       answers including the half-second warm-up).
 *   https_peer park PORT N
 *       N connections that each send a NotificationWait and keep it waiting
 *       (the responder answers it only when it closes); prints "parked N"
 *       and waits for stdin to close.
 *
 * Self-contained (OpenSSL only); not part of the proxy. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* ---- responder ---- */

struct sconn {
    int fd;
    SSL *ssl;
    bool hs;
    char in[65536];
    size_t inl;
    bool parked; /* a NotificationWait: never answered */
};

static char *resp;
static size_t resp_len;

/* One complete request at the head of c->in?  Its length, or 0. */
static size_t request_len(struct sconn *c, bool *notif)
{
    c->in[c->inl < sizeof c->in ? c->inl : sizeof c->in - 1] = 0;
    char *e = memmem(c->in, c->inl, "\r\n\r\n", 4);
    if (!e)
        return 0;
    size_t head = (size_t)(e - c->in) + 4, cl = 0;
    char *p = strcasestr(c->in, "\r\ncontent-length:");
    if (p && p < e)
        cl = strtoul(p + 17, NULL, 10);
    *notif = strcasestr(c->in, "X-RequestType: NotificationWait") != NULL;
    return c->inl >= head + cl ? head + cl : 0;
}

static int serve(int port, const char *cert, const char *key, size_t n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Type: application/mapi-http\r\n"
                      "X-ResponseCode: 0\r\nContent-Length: %zu\r\n\r\n",
                      n);
    resp_len = (size_t)hl + n;
    resp = malloc(resp_len);
    memcpy(resp, head, (size_t)hl);
    memset(resp + hl, 'x', n);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
        perror("bind");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    for (;;) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, -1);
        for (int i = 0; i < k; i++) {
            struct sconn *c = evs[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->ssl = SSL_new(ctx);
                    SSL_set_fd(c->ssl, fd);
                    SSL_set_accept_state(c->ssl);
                    struct epoll_event e2 = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e2);
                }
                continue;
            }
            for (;;) {
                int r = SSL_read(c->ssl, c->in + c->inl, (int)(sizeof c->in - 1 - c->inl));
                if (r <= 0) {
                    int e = SSL_get_error(c->ssl, r);
                    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                        break;
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    SSL_free(c->ssl);
                    close(c->fd);
                    free(c);
                    c = NULL;
                    break;
                }
                c->inl += (size_t)r;
                bool notif = false;
                size_t l;
                while ((l = request_len(c, &notif)) > 0) {
                    memmove(c->in, c->in + l, c->inl - l);
                    c->inl -= l;
                    if (notif)
                        continue; /* parked: never answered */
                    /* blocking-ish write: the bench's answers fit the socket buffer */
                    size_t off = 0;
                    while (off < resp_len) {
                        int w = SSL_write(c->ssl, resp + off, (int)(resp_len - off));
                        if (w > 0) {
                            off += (size_t)w;
                            continue;
                        }
                        struct pollfd pf = {.fd = c->fd, .events = POLLOUT | POLLIN};
                        poll(&pf, 1, 1000);
                    }
                }
                if (!SSL_has_pending(c->ssl))
                    break;
            }
        }
    }
}

/* ---- clients ---- */

struct cconn {
    int fd;
    SSL *ssl;
    char buf[65536];
    size_t got, need; /* bytes of the current answer, its total (0: head not complete) */
    uint64_t t0;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static SSL *tls_client(SSL_CTX *ctx, int fd)
{
    SSL *s = SSL_new(ctx);
    SSL_set_fd(s, fd);
    if (SSL_connect(s) != 1) {
        ERR_print_errors_fp(stderr);
        exit(1);
    }
    return s;
}

static void send_req(struct cconn *c, const char *req, size_t len)
{
    c->got = c->need = 0;
    c->t0 = now_us();
    if (SSL_write(c->ssl, req, (int)len) != (int)len) {
        fprintf(stderr, "write failed\n");
        exit(1);
    }
}

static int load(int port, int clients, int secs, size_t n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "POST /mapi/emsmdb/?MailboxId=bench@test.local HTTP/1.1\r\n"
                      "Host: localhost\r\nContent-Type: application/mapi-http\r\n"
                      "X-RequestType: Execute\r\nX-RequestId: {bench}:1\r\n"
                      "X-ClientInfo: {bench}\r\nContent-Length: %zu\r\n\r\n",
                      n);
    size_t rl = (size_t)hl + n;
    char *req = malloc(rl);
    memcpy(req, head, (size_t)hl);
    memset(req + hl, 'r', n);
    struct cconn *cs = calloc((size_t)clients, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < clients; i++) {
        cs[i].fd = tcp_connect(port);
        cs[i].ssl = tls_client(ctx, cs[i].fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    size_t cap = 1 << 20, nl = 0;
    uint64_t *lat = malloc(cap * sizeof *lat);
    /* warm-up: one request each, not counted */
    uint64_t start = now_us(), warm_end = start + 500000u,
             end = warm_end + (uint64_t)secs * 1000000u;
    for (int i = 0; i < clients; i++)
        send_req(&cs[i], req, rl);
    uint64_t counted = 0, all = 0;
    while (now_us() < end) {
        struct epoll_event evs[64];
        int k = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < k; i++) {
            struct cconn *c = evs[i].data.ptr;
            for (;;) {
                int r = SSL_read(c->ssl, c->buf + c->got, (int)(sizeof c->buf - c->got));
                if (r <= 0) {
                    int e = SSL_get_error(c->ssl, r);
                    if (e == SSL_ERROR_WANT_READ)
                        break;
                    fprintf(stderr, "connection lost (%d)\n", e);
                    return 1;
                }
                c->got += (size_t)r;
                if (!c->need) {
                    char *e = memmem(c->buf, c->got, "\r\n\r\n", 4);
                    if (e) {
                        size_t h = (size_t)(e - c->buf) + 4;
                        c->buf[h - 1] = 0;
                        char *p = strcasestr(c->buf, "\r\ncontent-length:");
                        if (!p || strncmp(c->buf, "HTTP/1.1 200", 12)) {
                            fprintf(stderr, "unexpected answer: %.60s\n", c->buf);
                            return 1;
                        }
                        c->need = h + strtoul(p + 17, NULL, 10);
                    }
                }
                if (c->need && c->got >= c->need) {
                    uint64_t t = now_us();
                    all++;
                    if (t >= warm_end && t < end) {
                        if (nl == cap)
                            lat = realloc(lat, (cap *= 2) * sizeof *lat);
                        lat[nl++] = t - c->t0;
                        counted++;
                    }
                    send_req(c, req, rl);
                    break;
                }
                if (c->got == sizeof c->buf)
                    c->got = c->need ? c->got : 0; /* the bench's answers fit */
            }
        }
    }
    qsort(lat, nl, sizeof *lat, cmp_u64);
    printf("requests %llu rps %.0f p50_us %llu p99_us %llu all %llu\n", (unsigned long long)counted,
           (double)counted / secs, nl ? (unsigned long long)lat[nl / 2] : 0ull,
           nl ? (unsigned long long)lat[nl * 99 / 100] : 0ull, (unsigned long long)all);
    return 0;
}

static int park(int port, int n)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    const char *req = "POST /mapi/emsmdb/?MailboxId=bench@test.local HTTP/1.1\r\n"
                      "Host: localhost\r\nContent-Type: application/mapi-http\r\n"
                      "X-RequestType: NotificationWait\r\nX-RequestId: {bench}:2\r\n"
                      "Content-Length: 8\r\n\r\n\0\0\0\0\0\0\0\0";
    size_t rl = strlen(req) + 8;
    SSL **keep = calloc((size_t)n, sizeof *keep);
    for (int i = 0; i < n; i++) {
        int fd = tcp_connect(port);
        keep[i] = tls_client(ctx, fd);
        if (SSL_write(keep[i], req, (int)rl) != (int)rl)
            return 1;
    }
    printf("parked %d\n", n);
    fflush(stdout);
    char b[16];
    while (read(0, b, sizeof b) > 0)
        ;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "serve"))
        return serve(atoi(argv[2]), argv[3], argv[4], strtoul(argv[5], NULL, 10));
    if (argc == 6 && !strcmp(argv[1], "load"))
        return load(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), strtoul(argv[5], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "park"))
        return park(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: https_peer serve PORT CERT KEY RESP_BYTES | load PORT CLIENTS "
                    "SECONDS REQ_BYTES | park PORT N\n");
    return 2;
}
