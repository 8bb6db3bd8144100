/* A fast DCE/RPC upstream for the relay benchmark (make bench).
 *
 *   build/bench/responder [-u] [-l ADDR] [-p PORT] [-s RESP_STUB_BYTES]
 *
 * One thread, epoll, non-blocking sockets.  Speaks connection-oriented
 * DCE/RPC over TCP:
 *   - bind / alter_context -> bind_ack / alter_context_resp: every context
 *     whose transfer syntaxes include NDR 2.0 is accepted (bind-time feature
 *     negotiation gets negotiate_ack, anything else provider rejection);
 *     max_xmit = min(client's max_recv, 5840); association group: the
 *     client's, or a new one;
 *   - request (on its last fragment) -> a response whose stub is an
 *     EcDoRpcExt2 (EMSMDB opnum 11) answer as idl/emsmdb.idl lays it out:
 *     handle, pulFlags, rgbOut = RPC_HEADER_EXT (Compressed|Last) + an
 *     LZ77-compressed ROP buffer (a RopReadStream response carrying ~16 KB
 *     of mail-like text, compressed to ~8 KB by src/xca/lz77.c), pcbOut,
 *     empty rgbAuxOut, pcbAuxOut, pulTransTime, return code; about 8192
 *     bytes of stub by default, fragmented per the negotiated max_xmit.
 *   - an authenticated bind (auth verifier present) gets an NTLMSSP-shaped
 *     CHALLENGE verifier in its bind_ack; auth3 is accepted silently; no
 *     token is checked (loadgen -a, to drive mapiproxy's pass-through path).
 * The request's stub content is ignored, except with -u (make bench-av): an
 * EcDoRpcExt2 request in one fragment whose rgbIn is uncompressed gets the
 * answers of its ROPs instead: RopCreateMessage (the message handle
 * BENCH_UPLOAD_HANDLE, no message id), RopSetProperties (no problems), RopSaveChangesMessage (a new
 * message id), RopRelease (none), every ReturnValue success, the request's
 * server object handle table with the new handles; an unknown ROP ends the
 * buffer with ecNotSupported.  Nothing is logged per call.
 *
 * Prints "listening PORT" on stdout once ready.  Raises the soft
 * RLIMIT_NOFILE to the hard limit (it holds one socket per relayed
 * session). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"
#include "core/buf.h"

struct rconn {
    int fd;
    bool want_out; /* EPOLLOUT registered */
    uint16_t max_xmit;
    struct mp_buf in, out;
};

static int epfd;
static uint32_t next_group = 0x1000;
static char sec_addr[16];
static uint8_t *resp_stub;
static size_t resp_stub_len;
static struct mp_buf obuf;       /* output built for one connection, then sent */
static uint8_t rbuf[256 * 1024]; /* read scratch */
static struct mp_bind scratch_bind;
static struct mp_bind_ack scratch_ack;

static void build_resp_stub(size_t len)
{
    /* EcDoRpcExt2 out (idl/emsmdb.idl): pcxh(20) pulFlags(4)
     * rgbOut[max = offset 0 = actual = *pcbOut] + bytes, padded to 4
     * pcbOut(4) rgbAuxOut[0,0,0] pcbAuxOut(4) pulTransTime(4) return(4).
     * rgbOut: RPC_HEADER_EXT + LZ77-compressed RopReadStream response. */
    if (len < 256)
        len = 256;
    size_t target = len - 64;
    uint8_t *ext = malloc(target);
    size_t n_out = ext ? bench_rpc_ext(ext, target, true, 12345) : 0;
    if (!n_out) {
        fprintf(stderr, "responder: cannot build the rgbOut payload\n");
        exit(1);
    }
    resp_stub = calloc(1, len + 8);
    uint8_t *p = resp_stub;
    mp_put32(p, 0);
    bench_fill(p + 4, 16, 7); /* handle uuid */
    p += 20;
    mp_put32(p, 0), p += 4;               /* pulFlags */
    mp_put32(p, (uint32_t)n_out), p += 4; /* max_count */
    mp_put32(p, 0), p += 4;               /* offset */
    mp_put32(p, (uint32_t)n_out), p += 4; /* actual_count */
    memcpy(p, ext, n_out);
    p += (n_out + 3) & ~(size_t)3;
    free(ext);
    mp_put32(p, (uint32_t)n_out), p += 4; /* pcbOut */
    mp_put32(p, 0), p += 4;               /* rgbAuxOut: max, offset, actual */
    mp_put32(p, 0), p += 4;
    mp_put32(p, 0), p += 4;
    mp_put32(p, 0), p += 4; /* pcbAuxOut */
    mp_put32(p, 3), p += 4; /* pulTransTime */
    mp_put32(p, 0), p += 4; /* ecSuccess */
    resp_stub_len = (size_t)(p - resp_stub);
}

static void set_out(struct rconn *c, bool want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

static void rclose(struct rconn *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    mp_buf_free(&c->in);
    mp_buf_free(&c->out);
    free(c);
}

/* Sends p[0..n) after whatever is queued; queues the rest. -1: close. */
static int rsend(struct rconn *c, const uint8_t *p, size_t n)
{
    if (!mp_buf_avail(&c->out)) {
        while (n) {
            ssize_t k = send(c->fd, p, n, MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN)
                    break;
                return -1;
            }
            p += k;
            n -= (size_t)k;
        }
    }
    if (n) {
        if (mp_buf_append(&c->out, p, n))
            return -1;
        set_out(c, true);
    }
    return 0;
}

static int flush_out(struct rconn *c)
{
    while (mp_buf_avail(&c->out)) {
        ssize_t k = send(c->fd, mp_buf_head(&c->out), mp_buf_avail(&c->out), MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return -1;
        }
        mp_buf_consume(&c->out, (size_t)k);
    }
    mp_buf_trim(&c->out);
    set_out(c, false);
    return 0;
}

static uint16_t clamp(uint16_t v)
{
    return v > BENCH_MAX_FRAG ? BENCH_MAX_FRAG : v < 1432 ? 1432 : v;
}

static void on_bind(struct rconn *c, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    struct mp_bind *b = &scratch_bind;
    if (mp_bind_parse(pdu, h, b)) {
        mp_build_bind_nak(&obuf, h->call_id, 0);
        return;
    }
    struct mp_bind_ack *a = &scratch_ack;
    memset(a, 0, sizeof(*a) - sizeof(a->res));
    if (h->ptype == MP_PT_BIND) {
        c->max_xmit = clamp(b->max_recv);
        snprintf(a->sec_addr, sizeof(a->sec_addr), "%s", sec_addr);
    }
    a->max_xmit = c->max_xmit;
    a->max_recv = clamp(b->max_xmit);
    a->assoc_group = b->assoc_group ? b->assoc_group : next_group++;
    a->n_results = b->n_ctx;
    for (unsigned i = 0; i < b->n_ctx; i++) {
        struct mp_ctx_result *r = &a->res[i];
        memset(r, 0, sizeof(*r));
        r->result = MP_CTX_PROVIDER_REJECTION;
        r->reason = MP_CTX_REASON_TRANSFER_NOT_SUPPORTED;
        for (unsigned j = 0; j < b->ctx[i].n_ts; j++) {
            if (mp_syntax_eq(&b->ctx[i].ts[j], &mp_ndr20_syntax)) {
                r->result = MP_CTX_ACCEPT;
                r->reason = 0;
                r->ts = mp_ndr20_syntax;
                break;
            }
            if (mp_syntax_is_btfn(&b->ctx[i].ts[j])) {
                r->result = MP_CTX_NEGOTIATE_ACK;
                r->reason = 0;
                break;
            }
        }
    }
    /* An authenticated bind gets an NTLMSSP-shaped CHALLENGE verifier back
     * (not checked by anyone; see loadgen -a). */
    static uint8_t challenge[56] = "NTLMSSP";
    challenge[8] = 2;
    struct mp_auth in, out;
    bool auth = h->auth_len && mp_pdu_auth(pdu, h, &in) == 0;
    if (auth) {
        out = in;
        out.pad_len = 0;
        out.value = challenge;
        out.value_len = sizeof(challenge);
    }
    mp_build_bind_ack(&obuf, h->ptype == MP_PT_BIND ? MP_PT_BIND_ACK : MP_PT_ALTER_RESP,
                      MP_PFC_FIRST | MP_PFC_LAST, h->call_id, a, auth ? &out : NULL);
}

/* -u: the ROP answers of an upload (see the top).  Returns the response
 * stub's length in ustub, or 0 when the request is not one to answer so. */
static bool upload_mode;
static uint8_t ustub[8192];
static uint64_t next_mid = 0x100000001ull;

static size_t upload_answer(const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if ((h->flags & (MP_PFC_FIRST | MP_PFC_LAST)) != (MP_PFC_FIRST | MP_PFC_LAST) ||
        (h->flags & MP_PFC_OBJECT_UUID) || mp_get16(pdu + 22) != BENCH_OPNUM)
        return 0;
    const uint8_t *stub = pdu + MP_REQ_HDR_LEN;
    size_t sl = (size_t)h->frag_len - MP_REQ_HDR_LEN - (h->auth_len ? h->auth_len + 8u : 0);
    if (sl < 36)
        return 0;
    size_t in_len = mp_get32(stub + 24);
    const uint8_t *in = stub + 28;
    if (in_len < 10 || in_len > sl - 28 || (mp_get16(in + 2) & 0x0003)) /* compressed, XOR */
        return 0;
    size_t rl = mp_get16(in + 4);
    const uint8_t *r = in + 8;
    if (rl + 8 > in_len || rl < 2)
        return 0;
    size_t rop_size = mp_get16(r);
    if (rop_size < 2 || rop_size > rl || (rl - rop_size) % 4 || rl - rop_size > 256 * 4)
        return 0;
    uint32_t handles[256];
    size_t nh = (rl - rop_size) / 4;
    for (size_t i = 0; i < nh; i++)
        handles[i] = mp_get32(r + rop_size + 4 * i);
    uint8_t out[4096];
    size_t o = 2, i = 2;
    while (i < rop_size && o + 32 < sizeof out) {
        uint8_t id = r[i];
        if (id == BENCH_ROP_CREATE_MESSAGE && i + 15 <= rop_size) {
            uint8_t oi = r[i + 3];
            if (oi < nh)
                handles[oi] = BENCH_UPLOAD_HANDLE; /* one message at a time per session */
            out[o++] = id, out[o++] = oi;
            mp_put32(out + o, 0), o += 4;
            out[o++] = 0; /* HasMessageId */
            i += 15;
        } else if (id == BENCH_ROP_SET_PROPERTIES && i + 5 <= rop_size &&
                   i + 5 + mp_get16(r + i + 3) <= rop_size) {
            out[o++] = id, out[o++] = r[i + 2];
            mp_put32(out + o, 0), o += 4;
            mp_put16(out + o, 0), o += 2; /* PropertyProblemCount */
            i += 5 + mp_get16(r + i + 3);
        } else if (id == BENCH_ROP_SAVE_CHANGES_MESSAGE && i + 5 <= rop_size) {
            out[o++] = id, out[o++] = r[i + 2];
            mp_put32(out + o, 0), o += 4;
            out[o++] = r[i + 3];
            mp_put32(out + o, (uint32_t)next_mid),
                mp_put32(out + o + 4, (uint32_t)(next_mid >> 32));
            next_mid++, o += 8;
            i += 5;
        } else if (id == BENCH_ROP_RELEASE && i + 3 <= rop_size) {
            i += 3;
        } else {
            out[o++] = id, out[o++] = i + 2 < rop_size ? r[i + 2] : 0;
            mp_put32(out + o, 0x80040102), o += 4; /* ecNotSupported */
            break;
        }
    }
    mp_put16(out, (uint16_t)o);
    for (size_t k = 0; k < nh && o + 4 <= sizeof out; k++)
        mp_put32(out + o, handles[k]), o += 4;
    /* EcDoRpcExt2 out, as build_resp_stub; rgbOut uncompressed (Last) */
    uint8_t *p = ustub;
    memcpy(p, stub, 20), p += 20; /* the request's context handle */
    mp_put32(p, 0), p += 4;       /* pulFlags */
    size_t n_out = 8 + o;
    mp_put32(p, (uint32_t)n_out), p += 4; /* max_count, offset, actual_count */
    mp_put32(p, 0), p += 4;
    mp_put32(p, (uint32_t)n_out), p += 4;
    bench_put_header_ext(p, BENCH_EXT_LAST, (uint16_t)o, (uint16_t)o);
    memcpy(p + 8, out, o);
    memset(p + n_out, 0, 3);
    p += (n_out + 3) & ~(size_t)3;
    mp_put32(p, (uint32_t)n_out), p += 4; /* pcbOut */
    for (int k = 0; k < 3; k++)           /* rgbAuxOut: max, offset, actual */
        mp_put32(p, 0), p += 4;
    mp_put32(p, 0), p += 4; /* pcbAuxOut */
    mp_put32(p, 1), p += 4; /* pulTransTime */
    mp_put32(p, 0), p += 4; /* ecSuccess */
    return (size_t)(p - ustub);
}

static void on_request(struct rconn *c, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (!(h->flags & MP_PFC_LAST))
        return;
    uint16_t ctx_id = mp_get16(pdu + 20);
    size_t chunk = ((size_t)(c->max_xmit ? c->max_xmit : 5840) - MP_RESP_HDR_LEN) & ~(size_t)7;
    size_t off = 0, len = resp_stub_len;
    const uint8_t *resp = resp_stub;
    size_t ul = upload_mode ? upload_answer(pdu, h) : 0;
    if (ul)
        resp = ustub, len = ul;
    do {
        size_t k = len - off > chunk ? chunk : len - off;
        uint8_t fl = (off == 0 ? MP_PFC_FIRST : 0) | (off + k == len ? MP_PFC_LAST : 0);
        mp_build_response(&obuf, fl, h->call_id, ctx_id, resp + off, k, (uint32_t)(len - off));
        off += k;
    } while (off < len);
}

/* Processes whole PDUs in p[0..n); returns bytes consumed, or -1 to close. */
static long process(struct rconn *c, const uint8_t *p, size_t n)
{
    size_t used = 0;
    while (n - used >= MP_HDR_LEN) {
        struct mp_pdu_hdr h;
        if (mp_pdu_hdr_check(p + used, n - used, &h))
            return -1;
        if (n - used < h.frag_len)
            break;
        const uint8_t *pdu = p + used;
        switch (h.ptype) {
        case MP_PT_BIND:
        case MP_PT_ALTER:
            on_bind(c, pdu, &h);
            break;
        case MP_PT_REQUEST:
            if (h.frag_len < MP_REQ_HDR_LEN)
                return -1;
            on_request(c, pdu, &h);
            break;
        default: /* auth3, co_cancel, orphaned, ...: nothing to answer */
            break;
        }
        used += h.frag_len;
    }
    return (long)used;
}

static void on_readable(struct rconn *c)
{
    for (;;) {
        ssize_t k = recv(c->fd, rbuf, sizeof(rbuf), 0);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            rclose(c);
            return;
        }
        if (k == 0) {
            rclose(c);
            return;
        }
        const uint8_t *p = rbuf;
        size_t n = (size_t)k;
        if (mp_buf_avail(&c->in)) {
            mp_buf_append(&c->in, rbuf, n);
            p = mp_buf_head(&c->in);
            n = mp_buf_avail(&c->in);
        }
        obuf.off = obuf.len = 0;
        long used = process(c, p, n);
        if (used < 0) {
            rclose(c);
            return;
        }
        if (p == rbuf) {
            if ((size_t)used < n)
                mp_buf_append(&c->in, p + used, n - (size_t)used);
        } else {
            mp_buf_consume(&c->in, (size_t)used);
            mp_buf_trim(&c->in);
        }
        if (obuf.len && rsend(c, obuf.data, obuf.len) < 0) {
            rclose(c);
            return;
        }
        if ((size_t)k < sizeof(rbuf))
            break;
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    int port = 0, opt;
    size_t stub = BENCH_RESP_STUB;
    while ((opt = getopt(argc, argv, "ul:p:s:")) != -1) {
        switch (opt) {
        case 'u':
            upload_mode = true;
            break;
        case 'l':
            addr = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 's':
            stub = (size_t)atol(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-u] [-l ADDR] [-p PORT] [-s RESP_STUB_BYTES]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    bench_raise_nofile();
    build_resp_stub(stub);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
        perror("responder: bind/listen");
        return 1;
    }
    socklen_t sl = sizeof(sa);
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    snprintf(sec_addr, sizeof(sec_addr), "%u", ntohs(sa.sin_port));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening %u\n", ntohs(sa.sin_port));
    fflush(stdout);
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct rconn *c = evs[i].data.ptr;
            if (!c) {
                for (int k = 0; k < 256; k++) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    c = calloc(1, sizeof(*c));
                    c->fd = fd;
                    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
                }
                continue;
            }
            if (evs[i].events & EPOLLOUT) {
                if (flush_out(c) < 0) {
                    rclose(c);
                    continue;
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable(c);
        }
    }
}
