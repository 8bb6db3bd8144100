/* TLS under a connection (net/conn_tls.h). */
#include "net/conn_tls.h"

#include <errno.h>

static ssize_t tls_recv(struct mp_conn *c, void *p, size_t n)
{
    ssize_t r = mp_tls_read(&c->tls, c->io.fd, p, n);
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
    ssize_t r = mp_tls_write(&c->tls, c->io.fd, p, n);
    if (r > 0)
        return r;
    errno = r == 0 ? EAGAIN : EPIPE;
    return -1;
}

static void tls_close(struct mp_conn *c)
{
    mp_tls_free(&c->tls, !c->connecting && !c->failed);
}

static uint32_t tls_events(const struct mp_conn *c, bool want_read, bool want_write)
{
    return mp_tls_events(&c->tls, want_read, want_write);
}

static const struct mp_conn_layer tls_layer = {tls_recv, tls_send, tls_close, tls_events};

static void use(struct mp_conn *c)
{
    c->layer = &tls_layer;
    c->layer_data = &c->tls;
}

int mp_conn_tls_accept(struct mp_conn *c, SSL_CTX *ctx)
{
    use(c);
    return mp_tls_accept(&c->tls, ctx, c->io.fd);
}

int mp_conn_tls_connect(struct mp_conn *c, SSL_CTX *ctx, const char *host, bool verify,
                        const char **why)
{
    use(c);
    return mp_tls_connect(&c->tls, ctx, c->io.fd, host, verify, why);
}

int mp_conn_tls_handshake(struct mp_conn *c, char *why, size_t wn)
{
    int r = mp_tls_handshake(&c->tls, why, wn);
    if (r < 0)
        c->failed = true;
    return r;
}

void mp_conn_use_tls(struct mp_conn *c, struct mp_tls *t)
{
    c->tls = *t;
    *t = (struct mp_tls){0};
    use(c);
}

bool mp_conn_tls_pending(const struct mp_conn *c)
{
    return c->layer == &tls_layer && mp_tls_pending(&c->tls);
}

void mp_conn_tls_end(struct mp_conn *c)
{
    if (c->layer != &tls_layer)
        return;
    mp_tls_free(&c->tls, !c->tls.handshaking && !c->failed);
    c->layer = NULL;
    c->layer_data = NULL;
}

void mp_conn_tls_release(struct mp_conn *c, struct mp_tls *t)
{
    *t = c->tls;
    c->tls = (struct mp_tls){0};
    c->layer = NULL;
    c->layer_data = NULL;
}
