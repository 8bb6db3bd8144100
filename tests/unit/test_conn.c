/* src/net/conn: borrowed reads kept only as a partial frame, direct sends
 * and the queue behind them, the connector against a listening socket and a
 * closed port, a layer under the buffers, and the events asked of the loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "event/loop.h"
#include "net/accept.h"
#include "net/conn.h"
#include "net/conn_tls.h"
#include "testlib.h"

static int n_events;
static uint32_t last_ev;
static void on_event(struct mp_conn *c, uint32_t ev)
{
    n_events++;
    last_ev = ev;
}

/* A layer that flips every byte both ways (stands in for TLS). */
static int layer_closed;
static ssize_t flip_recv(struct mp_conn *c, void *p, size_t n)
{
    ssize_t r = recv(c->io.fd, p, n, 0);
    for (ssize_t i = 0; i < r; i++)
        ((uint8_t *)p)[i] ^= 0xff;
    return r;
}
static ssize_t flip_send(struct mp_conn *c, const void *p, size_t n)
{
    uint8_t tmp[256];
    if (n > sizeof(tmp))
        n = sizeof(tmp);
    for (size_t i = 0; i < n; i++)
        tmp[i] = ((const uint8_t *)p)[i] ^ 0xff;
    return send(c->io.fd, tmp, n, MSG_NOSIGNAL | MSG_DONTWAIT);
}
static void flip_close(struct mp_conn *c)
{
    layer_closed++;
}
/* The layer's own needs: writability whatever the caller asks (a TLS read
 * that must write first). */
static uint32_t flip_events(const struct mp_conn *c, bool want_read, bool want_write)
{
    return (want_read ? MP_READ : 0) | MP_WRITE;
}
static const struct mp_conn_layer flip = {flip_recv, flip_send, flip_close, flip_events};

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static size_t tapped[2]; /* [in]: bytes the tap saw */
static void count_tap(void *arg, const struct mp_conn *c, bool in, const void *p, size_t n)
{
    tapped[in] += n;
}

int main(void)
{
    struct mp_loop *loop = mp_loop_new();
    uint8_t scratch[64];
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    struct mp_conn c;
    mp_conn_init(&c, loop, on_event, &c);
    CHECK(!mp_conn_is_open(&c));
    mp_conn_attach(&c, sv[0]); /* TCP_NODELAY fails quietly on a UNIX socket */
    CHECK(mp_conn_is_open(&c));

    /* nothing to read yet */
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), -1);
    CHECK_EQ(errno, EAGAIN);
    /* a read lands in the scratch buffer, borrowed */
    CHECK_EQ(write(sv[1], "hello world", 11), 11);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 11);
    CHECK(c.in_borrowed && c.in.data == scratch);
    mp_buf_consume(&c.in, 6); /* "hello " parsed; "world" is a partial frame */
    CHECK_EQ(mp_conn_keep(&c), 0);
    CHECK(!c.in_borrowed && c.in.data != scratch);
    CHECK(mp_buf_avail(&c.in) == 5 && !memcmp(mp_buf_head(&c.in), "world", 5));
    /* with a partial frame kept, the next read appends to it */
    CHECK_EQ(write(sv[1], "!", 1), 1);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 1);
    CHECK(!c.in_borrowed && mp_buf_avail(&c.in) == 6 && !memcmp(mp_buf_head(&c.in), "world!", 6));
    mp_buf_consume(&c.in, 6);
    CHECK_EQ(mp_conn_keep(&c), 0);
    CHECK(c.in.data == NULL); /* all used: an idle connection holds no input buffer */
    /* a second read before mp_conn_keep lands after the first, still borrowed */
    CHECK_EQ(write(sv[1], "ab", 2), 2);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 2);
    CHECK_EQ(write(sv[1], "cd", 2), 2);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 2);
    CHECK(c.in_borrowed && mp_buf_avail(&c.in) == 4 && !memcmp(mp_buf_head(&c.in), "abcd", 4));
    mp_buf_consume(&c.in, 4);
    CHECK_EQ(mp_conn_keep(&c), 0);
    CHECK(!c.in_borrowed && c.in.data == NULL);

    /* a tap sees what is read and what is written */
    c.tap = count_tap;
    CHECK_EQ(write(sv[1], "xyz", 3), 3);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 3);
    mp_buf_consume(&c.in, 3);
    CHECK_EQ(mp_conn_keep(&c), 0);
    CHECK_EQ(mp_conn_send(&c, "12", 2, false), 0);
    char t2[8];
    CHECK_EQ(read(sv[1], t2, sizeof(t2)), 2);
    CHECK(tapped[1] == 3 && tapped[0] == 2);
    c.tap = NULL;
    /* nothing to wait for: registered for hang-ups, or not at all */
    mp_conn_want(&c, false);
    CHECK_EQ(c.io.want, MP_RDHUP);
    c.hup_unwatched = true;
    mp_conn_want(&c, false);
    CHECK(!c.io.registered);
    c.hup_unwatched = false;

    /* a direct send leaves nothing queued; "more" queues without writing */
    CHECK_EQ(mp_conn_send(&c, "abc", 3, false), 0);
    CHECK_EQ(mp_buf_avail(&c.out), 0);
    CHECK_EQ(mp_conn_send(&c, "def", 3, true), 0);
    CHECK_EQ(mp_buf_avail(&c.out), 3);
    mp_conn_want(&c, true);
    CHECK_EQ(c.io.want, MP_READ | MP_WRITE);
    CHECK_EQ(mp_conn_flush(&c), 0);
    CHECK_EQ(mp_buf_avail(&c.out), 0);
    mp_conn_want(&c, false);
    CHECK_EQ(c.io.want, MP_RDHUP); /* still registered, for hang-ups */
    char got[16] = "";
    CHECK_EQ(read(sv[1], got, sizeof(got)), 6);
    CHECK(!memcmp(got, "abcdef", 6));

    /* a peer that does not read: the rest is queued, in order */
    static uint8_t big[1 << 20];
    memset(big, 'x', sizeof(big));
    CHECK_EQ(mp_conn_send(&c, big, sizeof(big), false), 0);
    size_t queued = mp_buf_avail(&c.out);
    CHECK(queued > 0 && queued < sizeof(big));
    CHECK_EQ(mp_conn_send(&c, "y", 1, false), 0); /* behind the queue, not before it */
    CHECK_EQ(mp_buf_avail(&c.out), queued + 1);
    CHECK_EQ(mp_conn_flush(&c), 0); /* pushed back: not an error */
    CHECK(c.wblocked);              /* until the loop reports the descriptor again */

    /* the peer closes with our bytes unread: reads end, writes fail */
    close(sv[1]);
    mp_buf_free(&c.out);
    ssize_t n = mp_conn_read(&c, scratch, sizeof(scratch));
    CHECK(n == 0 || (n < 0 && errno == ECONNRESET));
    CHECK_EQ(mp_conn_send(&c, "z", 1, true), 0);
    CHECK_EQ(mp_conn_flush(&c), -1);
    CHECK(c.failed);
    mp_conn_close(&c);
    CHECK(!mp_conn_is_open(&c) && !mp_buf_avail(&c.out) && !mp_buf_avail(&c.in));
    mp_conn_close(&c); /* twice: harmless */

    /* a layer under the buffers */
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    mp_conn_attach(&c, sv[0]);
    c.layer = &flip;
    uint8_t fl[3] = {'a' ^ 0xff, 'b' ^ 0xff, 'c' ^ 0xff};
    CHECK_EQ(write(sv[1], fl, 3), 3);
    CHECK_EQ(mp_conn_read(&c, NULL, 0), 3); /* no scratch: into c.in */
    CHECK(!c.in_borrowed && !memcmp(mp_buf_head(&c.in), "abc", 3));
    CHECK_EQ(mp_conn_send(&c, "abc", 3, false), 0);
    CHECK_EQ(read(sv[1], got, sizeof(got)), 3);
    CHECK(!memcmp(got, fl, 3));
    mp_conn_want(&c, false);
    CHECK_EQ(c.io.want, MP_WRITE);
    mp_conn_close(&c);
    CHECK_EQ(layer_closed, 1);
    CHECK(c.layer == NULL);
    close(sv[1]);

    /* net/tls under the connection (plain mp_tls: the same calls as TLS) */
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    mp_conn_attach(&c, sv[0]);
    struct mp_tls plain = {0};
    mp_conn_use_tls(&c, &plain);
    CHECK(!mp_conn_tls_pending(&c));
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), -1);
    CHECK_EQ(errno, EAGAIN);
    CHECK_EQ(write(sv[1], "tls", 3), 3);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 3);
    CHECK(!memcmp(mp_buf_head(&c.in), "tls", 3));
    mp_buf_consume(&c.in, 3);
    CHECK_EQ(mp_conn_keep(&c), 0);
    CHECK_EQ(mp_conn_send(&c, "ok", 2, false), 0);
    CHECK_EQ(read(sv[1], got, sizeof(got)), 2);
    close(sv[1]);
    CHECK_EQ(mp_conn_read(&c, scratch, sizeof(scratch)), 0); /* end of stream */
    mp_conn_close(&c);

    /* a hand-over: the descriptor and the TLS state leave, not closed */
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    mp_conn_attach(&c, sv[0]);
    struct mp_tls plain2 = {0}, taken;
    mp_conn_use_tls(&c, &plain2);
    mp_conn_want(&c, true);
    mp_conn_tls_end(&c); /* TLS over, the connection goes on plain */
    CHECK(c.layer == NULL && mp_conn_is_open(&c));
    mp_conn_use_tls(&c, &plain2);
    mp_conn_tls_release(&c, &taken);
    CHECK_EQ(mp_conn_release(&c), sv[0]);
    CHECK(!mp_conn_is_open(&c) && c.layer == NULL);
    mp_conn_close(&c);
    CHECK_EQ(write(sv[0], "k", 1), 1); /* still open: the new owner's */
    close(sv[0]);
    close(sv[1]);

    /* the connector: a listening socket, then a closed port */
    int ls = mp_listen_tcp("127.0.0.1", 0, 4, "test");
    CHECK(ls >= 0);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(ls, (struct sockaddr *)&ss, &sl);
    uint16_t port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    struct sockaddr_storage addr;
    socklen_t alen;
    char err[128];
    CHECK_EQ(mp_conn_resolve("127.0.0.1", &addr, &alen, err, sizeof(err)), 0);
    CHECK_EQ(mp_conn_resolve("no-such-host.invalid", &addr, &alen, err, sizeof(err)), -1);
    CHECK(err[0] != 0);
    CHECK_EQ(mp_conn_resolve("127.0.0.1", &addr, &alen, err, sizeof(err)), 0);
    CHECK_EQ(mp_conn_connect(&c, &addr, alen, port), 0);
    CHECK(c.connecting && c.port == port);
    CHECK_EQ(mp_conn_send(&c, "q", 1, false), 0); /* queued while connecting */
    CHECK_EQ(mp_buf_avail(&c.out), 1);
    mp_conn_want(&c, true);
    CHECK_EQ(c.io.want, MP_WRITE);
    int rc = 1;
    for (int i = 0; i < 100 && rc == 1; i++) {
        usleep(1000);
        rc = mp_conn_connected(&c, MP_WRITE);
    }
    CHECK_EQ(rc, 0);
    CHECK(!c.connecting);
    CHECK_EQ(mp_conn_flush(&c), 0);
    CHECK_EQ(mp_buf_avail(&c.out), 0);
    mp_conn_close(&c);
    close(ls); /* now nothing listens on port */
    CHECK_EQ(mp_conn_connect(&c, &addr, alen, port), 0);
    rc = 1;
    for (int i = 0; i < 100 && rc == 1; i++) {
        usleep(1000);
        rc = mp_conn_connected(&c, MP_WRITE);
    }
    CHECK_EQ(rc, -1);
    CHECK_EQ(errno, ECONNREFUSED);
    mp_conn_close(&c);
    CHECK_EQ(n_events, 0); /* the loop never ran */
    mp_loop_free(loop);
    TEST_DONE();
}
