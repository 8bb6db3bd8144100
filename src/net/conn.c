/* A connection with buffered, non-blocking I/O (net/conn.h). */
#include "net/conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

static void io_cb(struct mp_io *io, uint32_t ev)
{
    struct mp_conn *c = io->data;
    if (io->fd >= 0)
        c->cb(c, ev);
}

void mp_conn_init(struct mp_conn *c, struct mp_loop *loop, mp_conn_cb cb, void *data)
{
    memset(c, 0, sizeof(*c));
    c->io.fd = -1;
    c->io.cb = io_cb;
    c->io.data = c;
    c->loop = loop;
    c->cb = cb;
    c->data = data;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void mp_conn_attach(struct mp_conn *c, int fd)
{
    nodelay(fd);
    c->io.fd = fd;
    c->io.want = 0;
    c->io.registered = false;
    c->read_ms = c->write_ms = mp_now_ms();
}

int mp_conn_connect(struct mp_conn *c, const struct sockaddr_storage *addr, socklen_t len,
                    uint16_t port)
{
    struct sockaddr_storage ss = *addr;
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    nodelay(fd);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    c->port = port;
    c->io.fd = fd;
    c->io.want = 0;
    c->io.registered = false;
    c->connecting = true;
    c->read_ms = c->write_ms = mp_now_ms();
    return 0;
}

int mp_conn_connected(struct mp_conn *c, uint32_t events)
{
    int err = 0;
    socklen_t l = sizeof(err);
    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        err = errno;
    if (err) {
        errno = err;
        return -1;
    }
    if (!(events & MP_WRITE))
        return 1;
    c->connecting = false;
    return 0;
}

static ssize_t raw_recv(struct mp_conn *c, void *p, size_t n)
{
    if (c->layer)
        return c->layer->recv(c, p, n);
    ssize_t r;
    do
        r = recv(c->io.fd, p, n, 0);
    while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t raw_send(struct mp_conn *c, const void *p, size_t n)
{
    if (c->layer)
        return c->layer->send(c, p, n);
    ssize_t r;
    do
        r = send(c->io.fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r;
}

ssize_t mp_conn_read(struct mp_conn *c, uint8_t *scratch, size_t scratch_len)
{
    bool borrow = scratch && mp_buf_avail(&c->in) == 0;
    uint8_t *dst;
    size_t room;
    if (borrow) {
        mp_buf_free(&c->in);
        dst = scratch;
        room = scratch_len;
    } else {
        if (mp_buf_reserve(&c->in, MP_CONN_READ_CHUNK)) {
            errno = ENOMEM;
            return -1;
        }
        dst = c->in.data + c->in.len;
        room = MP_CONN_READ_CHUNK;
    }
    ssize_t n = raw_recv(c, dst, room);
    if (n <= 0)
        return n;
    if (borrow) {
        c->in = (struct mp_buf){.data = scratch, .off = 0, .len = (size_t)n, .cap = room};
        c->in_borrowed = true;
    } else {
        c->in.len += (size_t)n;
    }
    c->read_ms = mp_now_ms();
    return n;
}

int mp_conn_keep(struct mp_conn *c)
{
    if (!c->in_borrowed)
        return 0;
    struct mp_buf keep = {0};
    size_t left = mp_buf_avail(&c->in);
    c->in_borrowed = false;
    int rc = left ? mp_buf_append(&keep, mp_buf_head(&c->in), left) : 0;
    c->in = rc ? (struct mp_buf){0} : keep;
    return rc;
}

int mp_conn_send(struct mp_conn *c, const void *p, size_t len, bool more)
{
    if (!mp_buf_avail(&c->out) && !c->connecting && c->io.fd >= 0 && !more) {
        ssize_t n = raw_send(c, p, len);
        if (n > 0) {
            c->write_ms = mp_now_ms();
            p = (const uint8_t *)p + n;
            len -= (size_t)n;
        }
        /* errors other than EAGAIN show again at the next flush */
    }
    return len ? mp_buf_append(&c->out, p, len) : 0;
}

int mp_conn_flush(struct mp_conn *c)
{
    if (c->io.fd < 0 || c->connecting)
        return 0;
    while (mp_buf_avail(&c->out)) {
        ssize_t n = raw_send(c, mp_buf_head(&c->out), mp_buf_avail(&c->out));
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        if (n > 0) /* progress: the peer is reading */
            c->write_ms = mp_now_ms();
        mp_buf_consume(&c->out, (size_t)n);
    }
    mp_buf_trim(&c->out);
    return 0;
}

void mp_conn_want(struct mp_conn *c, bool may_read)
{
    if (c->io.fd < 0)
        return;
    uint32_t want;
    if (c->connecting)
        want = MP_WRITE;
    else
        want = (may_read ? MP_READ : 0) | (mp_buf_avail(&c->out) ? MP_WRITE : 0) | c->layer_want;
    if (!want)
        want = MP_RDHUP; /* keep the descriptor registered, learn of hang-ups */
    mp_io_set(c->loop, &c->io, want);
}

void mp_conn_close(struct mp_conn *c)
{
    if (c->layer && c->layer->close && c->io.fd >= 0)
        c->layer->close(c);
    c->layer = NULL;
    c->layer_data = NULL;
    c->layer_want = 0;
    mp_io_close(c->loop, &c->io);
    if (c->in_borrowed)
        c->in = (struct mp_buf){0};
    c->in_borrowed = false;
    mp_buf_free(&c->in);
    mp_buf_free(&c->out);
    c->connecting = c->closing = false;
}

int mp_conn_resolve(const char *host, struct sockaddr_storage *addr, socklen_t *len, char *err,
                    size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(host, NULL, &hints, &ai);
    if (rc) {
        snprintf(err, errlen, "%s", gai_strerror(rc));
        return -1;
    }
    memcpy(addr, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}
