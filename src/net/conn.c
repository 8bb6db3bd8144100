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
    if (io->fd < 0)
        return;
    c->wblocked = false; /* the loop reported the descriptor: writing may go on */
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
    c->wblocked = c->failed = false;
    c->read_ms = c->write_ms = mp_now_ms();
}

int mp_tcp_connect_start(const struct sockaddr_storage *addr, socklen_t len, uint16_t port)
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
    return fd;
}

int mp_conn_connect(struct mp_conn *c, const struct sockaddr_storage *addr, socklen_t len,
                    uint16_t port)
{
    int fd = mp_tcp_connect_start(addr, len, port);
    if (fd < 0)
        return -1;
    c->port = port;
    c->io.fd = fd;
    c->io.want = 0;
    c->io.registered = false;
    c->wblocked = c->failed = false;
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
    ssize_t r;
    if (c->layer)
        r = c->layer->recv(c, p, n);
    else
        do
            r = recv(c->io.fd, p, n, 0);
        while (r < 0 && errno == EINTR);
    if (r > 0 && c->tap)
        c->tap(c->tap_arg, c, true, p, (size_t)r);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        c->failed = true;
    return r;
}

static ssize_t raw_send(struct mp_conn *c, const void *p, size_t n)
{
    ssize_t r;
    if (c->layer)
        r = c->layer->send(c, p, n);
    else
        do
            r = send(c->io.fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (r < 0 && errno == EINTR);
    if (r > 0) {
        c->write_ms = mp_now_ms();
        if (c->tap)
            c->tap(c->tap_arg, c, false, p, (size_t)r);
    } else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        c->failed = true;
    }
    return r;
}

ssize_t mp_conn_read(struct mp_conn *c, uint8_t *scratch, size_t scratch_len)
{
    bool borrow = false;
    uint8_t *dst;
    size_t room;
    if (c->in_borrowed && mp_buf_avail(&c->in) && c->in.data == scratch && c->in.len < c->in.cap) {
        /* a further read before mp_conn_keep(): after the bytes in scratch */
        dst = scratch + c->in.len;
        room = c->in.cap - c->in.len;
    } else {
        if (c->in_borrowed && mp_conn_keep(c)) {
            errno = ENOMEM;
            return -1;
        }
        borrow = scratch && mp_buf_avail(&c->in) == 0;
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
    if (!c->in_borrowed) {
        mp_buf_trim(&c->in);
        return 0;
    }
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
            p = (const uint8_t *)p + n;
            len -= (size_t)n;
        }
        /* errors other than EAGAIN show again at the next flush */
    }
    return len ? mp_buf_append(&c->out, p, len) : 0;
}

ssize_t mp_conn_write_buf(struct mp_conn *c, struct mp_buf *b)
{
    ssize_t done = 0;
    if (c->io.fd < 0 || c->connecting)
        return 0;
    while (mp_buf_avail(b)) {
        size_t want = mp_buf_avail(b);
        ssize_t n = raw_send(c, mp_buf_head(b), want);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (n <= 0) {
            c->wblocked = true;
            break;
        }
        mp_buf_consume(b, (size_t)n);
        done += n;
        if (!c->layer && (size_t)n < want) { /* the kernel took part: it is full */
            c->wblocked = true;
            break;
        }
    }
    mp_buf_trim(b);
    return done;
}

int mp_conn_flush(struct mp_conn *c)
{
    return mp_conn_write_buf(c, &c->out) < 0 ? -1 : 0;
}

void mp_conn_want_rw(struct mp_conn *c, bool may_read, bool may_write)
{
    if (c->io.fd < 0)
        return;
    uint32_t want;
    if (c->connecting)
        want = MP_WRITE;
    else if (c->layer && c->layer->events)
        want = c->layer->events(c, may_read, may_write);
    else
        want = (may_read ? MP_READ : 0) | (may_write ? MP_WRITE : 0);
    if (!want && !c->hup_unwatched)
        want = MP_RDHUP; /* keep the descriptor registered, learn of hang-ups */
    mp_io_set(c->loop, &c->io, want);
}

void mp_conn_want(struct mp_conn *c, bool may_read)
{
    mp_conn_want_rw(c, may_read, mp_buf_avail(&c->out) > 0);
}

static void drop_buffers(struct mp_conn *c)
{
    if (c->in_borrowed)
        c->in = (struct mp_buf){0};
    c->in_borrowed = false;
    mp_buf_free(&c->in);
    mp_buf_free(&c->out);
}

void mp_conn_close(struct mp_conn *c)
{
    if (c->layer && c->layer->close && c->io.fd >= 0)
        c->layer->close(c);
    c->layer = NULL;
    c->layer_data = NULL;
    mp_io_close(c->loop, &c->io);
    drop_buffers(c);
    c->connecting = c->closing = c->wblocked = false;
}

int mp_conn_release(struct mp_conn *c)
{
    int fd = c->io.fd;
    if (fd >= 0)
        mp_io_set(c->loop, &c->io, 0);
    c->io.fd = -1;
    c->io.registered = false;
    c->layer = NULL;
    c->layer_data = NULL;
    c->connecting = c->wblocked = false;
    return fd;
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
