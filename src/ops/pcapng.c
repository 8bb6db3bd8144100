#include "ops/pcapng.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/log.h"

/* pcapng (draft-ietf-opsawg-pcapng): Section Header, Interface Description
 * (LINKTYPE_RAW 101: an IPv4 or IPv6 header first), Enhanced Packet Blocks
 * with microsecond timestamps. */
#define BT_SHB 0x0A0D0D0Au
#define BT_IDB 0x00000001u
#define BT_EPB 0x00000006u
#define LINKTYPE_RAW 101
#define SEG_MAX 16000 /* payload bytes per synthesised segment */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_PSH 0x08
#define TCP_ACK 0x10

#define PENDING_MAX (256u * 1024u) /* bytes kept while waiting for the user */

/* Written by a reload on worker 0 while every worker starts exports:
 * conf_mu around both. */
static pthread_mutex_t conf_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char dir[512];
    char clients[1024];
    char users[1024];
    unsigned long seq;
} conf;

struct leg {
    bool started, v6;
    uint8_t a[16], b[16]; /* a: the side that connected, b: the side that accepted */
    uint16_t pa, pb;
    uint32_t seq_a, seq_b; /* next sequence number each side sends */
};

struct mp_pcap {
    int fd; /* -1 while pending */
    bool failed, http;
    struct leg legs[2]; /* 0: client leg, 1: upstream leg */
    /* pending (mapiproxy:packet export users): the file is not created
     * before the user is known; what is written meanwhile waits here */
    uint8_t *pend;
    size_t npend;
    char what[16], host[64];
    uint16_t port;
};

/* word (n bytes) in a list separated by spaces, commas or tabs, ignoring
 * case; "*" in the list matches everything. */
static bool in_list(const char *list, const char *word, size_t n)
{
    for (const char *p = list; *p;) {
        p += strspn(p, " ,\t");
        size_t k = strcspn(p, " ,\t");
        if ((k == 1 && *p == '*') || (k == n && k && !strncasecmp(p, word, n)))
            return true;
        p += k;
    }
    return false;
}

/* With no address list (only users chosen), every address. */
static bool chosen(const char *host)
{
    return !conf.clients[0] || in_list(conf.clients, host, strlen(host));
}

void mp_pcap_configure(const struct mp_config *cfg)
{
    pthread_mutex_lock(&conf_mu);
    snprintf(conf.dir, sizeof conf.dir, "%s", cfg->packet_export_dir);
    snprintf(conf.clients, sizeof conf.clients, "%s", cfg->packet_export_clients);
    snprintf(conf.users, sizeof conf.users, "%s", cfg->packet_export_users);
    pthread_mutex_unlock(&conf_mu);
    if (conf.dir[0])
        mp_warn("PACKET EXPORT IS ON: the decrypted traffic (TLS and DCE/RPC sealing removed) "
                "of clients %s%s%s is written to %s as pcapng, mode 0600; it holds message "
                "contents and headers (Basic authentication: passwords); remove mapiproxy:packet "
                "export dir when done",
                conf.clients[0] ? conf.clients : "*", conf.users[0] ? ", users " : "", conf.users,
                conf.dir);
    if (conf.dir[0] && !cfg->username[0])
        mp_warn("packet export: the proxy does not terminate DCE/RPC authentication (no "
                "dcerpc_mapiproxy:username), so it has no keys: sealed DCE/RPC calls are "
                "exported still sealed%s",
                conf.users[0] ? ", and no DCE/RPC connection is chosen by user" : "");
}

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4); /* host order: the SHB's byte-order magic says which */
}

static void emit(struct mp_pcap *c, const uint8_t *b, size_t n)
{
    if (c->fd < 0 && !c->failed) { /* pending: kept in memory, up to a limit */
        uint8_t *q = c->npend + n <= PENDING_MAX ? realloc(c->pend, c->npend + n) : NULL;
        if (!q) {
            mp_debug("packet export: %s connection from %s port %u: over %u bytes before its "
                     "user was known; not exported",
                     c->what, c->host, c->port, PENDING_MAX);
            c->failed = true;
            return;
        }
        memcpy(q + c->npend, b, n);
        c->pend = q;
        c->npend += n;
        return;
    }
    while (n && !c->failed) {
        ssize_t w = write(c->fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            mp_error("packet export: write failed: %s; this connection's export stops",
                     w < 0 ? strerror(errno) : "short write");
            c->failed = true;
            return;
        }
        b += w;
        n -= (size_t)w;
    }
}

static uint16_t csum(uint32_t sum, const uint8_t *p, size_t n)
{
    for (; n > 1; p += 2, n -= 2)
        sum += (uint32_t)(p[0] << 8 | p[1]);
    if (n)
        sum += (uint32_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* One TCP segment from a (from_a) or b, as an EPB. */
static void segment(struct mp_pcap *c, struct leg *l, bool from_a, uint8_t flags,
                    const uint8_t *data, size_t len)
{
    uint8_t pkt[60 + SEG_MAX];
    size_t ih = l->v6 ? 40 : 20, total = ih + 20 + len;
    const uint8_t *src = from_a ? l->a : l->b, *dst = from_a ? l->b : l->a;
    memset(pkt, 0, ih + 20);
    uint32_t sum = 0; /* the TCP pseudo-header */
    if (l->v6) {
        pkt[0] = 0x60;
        pkt[4] = (uint8_t)((20 + len) >> 8);
        pkt[5] = (uint8_t)(20 + len);
        pkt[6] = IPPROTO_TCP;
        pkt[7] = 64;
        memcpy(pkt + 8, src, 16);
        memcpy(pkt + 24, dst, 16);
        for (int i = 8; i < 40; i += 2)
            sum += (uint32_t)(pkt[i] << 8 | pkt[i + 1]);
    } else {
        pkt[0] = 0x45;
        pkt[2] = (uint8_t)(total >> 8);
        pkt[3] = (uint8_t)total;
        pkt[6] = 0x40; /* DF */
        pkt[8] = 64;
        pkt[9] = IPPROTO_TCP;
        memcpy(pkt + 12, src, 4);
        memcpy(pkt + 16, dst, 4);
        uint16_t ic = csum(0, pkt, 20);
        pkt[10] = (uint8_t)(ic >> 8);
        pkt[11] = (uint8_t)ic;
        for (int i = 12; i < 20; i += 2)
            sum += (uint32_t)(pkt[i] << 8 | pkt[i + 1]);
    }
    sum += IPPROTO_TCP + (uint32_t)(20 + len);
    uint8_t *t = pkt + ih;
    uint16_t sp = from_a ? l->pa : l->pb, dp = from_a ? l->pb : l->pa;
    uint32_t seq = from_a ? l->seq_a : l->seq_b, ack = from_a ? l->seq_b : l->seq_a;
    t[0] = (uint8_t)(sp >> 8), t[1] = (uint8_t)sp, t[2] = (uint8_t)(dp >> 8), t[3] = (uint8_t)dp;
    uint32_t nseq = htonl(seq), nack = htonl(ack);
    memcpy(t + 4, &nseq, 4);
    memcpy(t + 8, &nack, 4);
    t[12] = 5 << 4;
    t[13] = flags;
    t[14] = 0xff, t[15] = 0xff; /* window */
    if (len)
        memcpy(t + 20, data, len);
    uint16_t tc = csum(sum, t, 20 + len);
    t[16] = (uint8_t)(tc >> 8);
    t[17] = (uint8_t)tc;
    uint32_t adv = (uint32_t)len + ((flags & (TCP_SYN | TCP_FIN)) ? 1 : 0);
    if (from_a)
        l->seq_a += adv;
    else
        l->seq_b += adv;
    /* EPB: type, length, interface 0, timestamp (us), captured, original, data, pad, length */
    size_t pad = (4 - total % 4) % 4, blen = 32 + total + pad;
    uint8_t h[28];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    put32(h, BT_EPB);
    put32(h + 4, (uint32_t)blen);
    put32(h + 8, 0);
    put32(h + 12, (uint32_t)(us >> 32));
    put32(h + 16, (uint32_t)us);
    put32(h + 20, (uint32_t)total);
    put32(h + 24, (uint32_t)total);
    uint8_t tail[8] = {0};
    put32(tail + pad, (uint32_t)blen);
    emit(c, h, sizeof h);
    emit(c, pkt, total);
    emit(c, tail, pad + 4);
}

/* The leg's endpoints from its socket: a = the connecting side.  The HTTP
 * legs' accepting port is written as 80, where Wireshark looks for HTTP
 * (the payload is plain HTTP now; doc/operations.md). */
static void leg_start(struct mp_pcap *c, struct leg *l, int fd, bool client, bool http)
{
    struct sockaddr_storage me, peer;
    socklen_t ml = sizeof me, pl = sizeof peer;
    memset(&me, 0, sizeof me);
    memset(&peer, 0, sizeof peer);
    getsockname(fd, (struct sockaddr *)&me, &ml);
    getpeername(fd, (struct sockaddr *)&peer, &pl);
    const struct sockaddr_storage *a = client ? &peer : &me, *b = client ? &me : &peer;
    l->v6 = a->ss_family == AF_INET6;
    if (l->v6) {
        memcpy(l->a, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
        memcpy(l->b, &((const struct sockaddr_in6 *)b)->sin6_addr, 16);
        l->pa = ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
        l->pb = ntohs(((const struct sockaddr_in6 *)b)->sin6_port);
    } else {
        memcpy(l->a, &((const struct sockaddr_in *)a)->sin_addr, 4);
        memcpy(l->b, &((const struct sockaddr_in *)b)->sin_addr, 4);
        l->pa = ntohs(((const struct sockaddr_in *)a)->sin_port);
        l->pb = ntohs(((const struct sockaddr_in *)b)->sin_port);
    }
    if (http)
        l->pb = 80;
    l->seq_a = 1000;
    l->seq_b = 5000;
    l->started = true;
    segment(c, l, true, TCP_SYN, NULL, 0);
    segment(c, l, false, TCP_SYN | TCP_ACK, NULL, 0);
    segment(c, l, true, TCP_ACK, NULL, 0);
}

/* The file, created now (mode 0600, never overwritten).  0 or -1. */
static int open_file(struct mp_pcap *c, const char *user)
{
    char path[700];
    pthread_mutex_lock(&conf_mu);
    snprintf(path, sizeof path, "%s/mapiproxy-%ld-%s-%s-%u-%lu.pcapng", conf.dir, (long)time(NULL),
             c->what, c->host, c->port, ++conf.seq);
    size_t dlen = strlen(conf.dir);
    pthread_mutex_unlock(&conf_mu);
    for (char *p = path + dlen + 1; *p; p++)
        if (*p == ':' || *p == '/')
            *p = '_'; /* IPv6 addresses in a file name */
    c->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (c->fd < 0) {
        mp_error("packet export: cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    mp_warn("packet export: %s connection from %s port %u%s%s decrypted into %s", c->what, c->host,
            c->port, user ? " of " : "", user ? user : "", path);
    return 0;
}

struct mp_pcap *mp_pcap_start(const char *client_host, uint16_t client_port, const char *what)
{
    pthread_mutex_lock(&conf_mu);
    if (!conf.dir[0] || !chosen(client_host)) {
        pthread_mutex_unlock(&conf_mu);
        return NULL;
    }
    bool wait_user = conf.users[0] != 0;
    pthread_mutex_unlock(&conf_mu);
    struct mp_pcap *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    snprintf(c->what, sizeof c->what, "%s", what);
    snprintf(c->host, sizeof c->host, "%s", client_host);
    c->port = client_port;
    c->http = !strcmp(what, "http");
    c->fd = -1; /* pending until mp_pcap_user() when users are chosen */
    if (!wait_user && open_file(c, NULL)) {
        free(c);
        return NULL;
    }
    uint8_t shb[28], idb[20];
    put32(shb, BT_SHB);
    put32(shb + 4, sizeof shb);
    put32(shb + 8, 0x1A2B3C4Du);
    const uint16_t version[2] = {1, 0}; /* host order, like the magic */
    memcpy(shb + 12, version, 4);
    memset(shb + 16, 0xff, 8); /* section length: unknown */
    put32(shb + 24, sizeof shb);
    put32(idb, BT_IDB);
    put32(idb + 4, sizeof idb);
    uint16_t lt = LINKTYPE_RAW, res = 0;
    memcpy(idb + 8, &lt, 2);
    memcpy(idb + 10, &res, 2);
    put32(idb + 12, 0); /* snaplen: none */
    put32(idb + 16, sizeof idb);
    emit(c, shb, sizeof shb);
    emit(c, idb, sizeof idb);
    return c;
}

void mp_pcap_tap(struct mp_pcap *c, int fd, bool client, bool in, const void *data, size_t len)
{
    if (!c || c->failed || !len)
        return;
    struct leg *l = &c->legs[client ? 0 : 1];
    if (!l->started)
        leg_start(c, l, fd, client, c->http);
    /* client leg: the client (a) sends what comes in; upstream leg: the
     * proxy (a) sends what goes out. */
    bool from_a = client ? in : !in;
    for (size_t off = 0; off < len; off += SEG_MAX) {
        size_t n = len - off < SEG_MAX ? len - off : SEG_MAX;
        segment(c, l, from_a, TCP_PSH | TCP_ACK, (const uint8_t *)data + off, n);
    }
}

bool mp_pcap_users_chosen(void)
{
    pthread_mutex_lock(&conf_mu);
    bool r = conf.users[0] != 0;
    pthread_mutex_unlock(&conf_mu);
    return r;
}

struct mp_pcap *mp_pcap_user(struct mp_pcap *c, const char *user)
{
    if (!c || c->fd >= 0)
        return c;
    /* "DOMAIN\user" and "user@REALM" match as written, or by the account */
    const char *bs = user ? strrchr(user, '\\') : NULL, *at = user ? strchr(user, '@') : NULL;
    const char *acct = bs ? bs + 1 : user;
    size_t an = at && !bs ? (size_t)(at - user) : acct ? strlen(acct) : 0;
    pthread_mutex_lock(&conf_mu);
    bool keep = user && !c->failed &&
                (in_list(conf.users, user, strlen(user)) || in_list(conf.users, acct, an));
    pthread_mutex_unlock(&conf_mu);
    if (keep && !open_file(c, user)) {
        uint8_t *p = c->pend;
        size_t n = c->npend;
        c->pend = NULL;
        c->npend = 0;
        emit(c, p, n);
        free(p);
        return c;
    }
    if (c->fd >= 0)
        close(c->fd);
    free(c->pend);
    free(c);
    return NULL;
}

void mp_pcap_leg_end(struct mp_pcap *c, bool client)
{
    struct leg *l = c ? &c->legs[client ? 0 : 1] : NULL;
    if (!l || !l->started)
        return;
    segment(c, l, true, TCP_FIN | TCP_ACK, NULL, 0);
    segment(c, l, false, TCP_FIN | TCP_ACK, NULL, 0);
    segment(c, l, true, TCP_ACK, NULL, 0);
    memset(l, 0, sizeof *l);
}

void mp_pcap_end(struct mp_pcap *c)
{
    if (!c)
        return;
    if (c->fd < 0) { /* its user never chosen */
        free(c->pend);
        free(c);
        return;
    }
    mp_pcap_leg_end(c, true);
    mp_pcap_leg_end(c, false);
    close(c->fd);
    free(c);
}
