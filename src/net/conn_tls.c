/* TLS under a connection (net/conn_tls.h). */
#include "net/conn_tls.h"

#include <errno.h>

/* What OpenSSL needs besides the caller's events: readability for a write
 * that must read first, writability for a read that must write first. */
static void note_wants(struct mp_conn *c, const struct mp_tls *t)
{
    c->layer_want = mp_tls_events(t, false, false);
}

static ssize_t tls_recv(struct mp_conn *c, void *p, size_t n)
{
    struct mp_tls *t = c->layer_data;
    ssize_t r = mp_tls_read(t, c->io.fd, p, n);
    note_wants(c, t);
    if (r > 0)
        return r;
    if (r == 0) {
        errno = EAGAIN;
        return -1;
    }
    return 0; /* end of stream or error: the connection is over either way */
}

static ssize_t tls_send(struct mp_conn *c, const void *p, size_t n)
{
    struct mp_tls *t = c->layer_data;
    ssize_t r = mp_tls_write(t, c->io.fd, p, n);
    note_wants(c, t);
    if (r > 0)
        return r;
    errno = r == 0 ? EAGAIN : EPIPE;
    return -1;
}

static void tls_close(struct mp_conn *c)
{
    /* the mp_tls is the caller's: nothing to free here */
}

static const struct mp_conn_layer tls_layer = {tls_recv, tls_send, tls_close};

void mp_conn_use_tls(struct mp_conn *c, struct mp_tls *t)
{
    c->layer = &tls_layer;
    c->layer_data = t;
    note_wants(c, t);
}

bool mp_conn_tls_pending(const struct mp_conn *c)
{
    return c->layer == &tls_layer && mp_tls_pending(c->layer_data);
}
