/* The TLS wrapper (net/tls.h). */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "event/loop.h"

static void log_ssl_errors(const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "unknown error");
    mp_error("%s: %s", what, buf);
    ERR_clear_error();
}

/* Partial writes, a write buffer that may move between retries, and
 * buffers given back while a connection is idle (parked NotificationWaits). */
#define CTX_MODES                                                                                  \
    (SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS)

SSL_CTX *mp_tls_server_ctx(const char *cert_file, const char *key_file)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (!c || !SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION)) {
        log_ssl_errors("TLS server context");
        SSL_CTX_free(c);
        return NULL;
    }
    char what[700];
    if (SSL_CTX_use_certificate_chain_file(c, cert_file) != 1) {
        snprintf(what, sizeof what, "mapiproxy:tls certificate %s cannot be used", cert_file);
        log_ssl_errors(what);
        SSL_CTX_free(c);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(c, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1) {
        snprintf(what, sizeof what,
                 "mapiproxy:tls key %s cannot be used (or does not match the certificate)",
                 key_file);
        log_ssl_errors(what);
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_mode(c, CTX_MODES);
    SSL_CTX_set_read_ahead(c, 1); /* one read() for a record's header and body */
    SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
    return c;
}

SSL_CTX *mp_tls_client_ctx(bool verify, const char *ca_file)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c || !SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION)) {
        log_ssl_errors("TLS client context");
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_mode(c, CTX_MODES);
    SSL_CTX_set_read_ahead(c, 1);
    if (!verify) {
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
        mp_warn("mapiproxy:tls verify = no: the upstream's certificate is NOT verified; use this "
                "in labs only");
        return c;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    int ok = ca_file[0] ? SSL_CTX_load_verify_locations(c, ca_file, NULL)
                        : SSL_CTX_set_default_verify_paths(c);
    if (ok != 1) {
        char what[700];
        snprintf(what, sizeof what, "mapiproxy:tls ca file %s cannot be loaded",
                 ca_file[0] ? ca_file : "(system bundle)");
        log_ssl_errors(what);
        SSL_CTX_free(c);
        return NULL;
    }
    return c;
}

void mp_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int mp_tls_accept(struct mp_tls *t, SSL_CTX *ctx, int fd)
{
    *t = (struct mp_tls){0};
    if (!(t->ssl = SSL_new(ctx)))
        return -1;
    SSL_set_fd(t->ssl, fd);
    SSL_set_accept_state(t->ssl);
    t->handshaking = true;
    return 0;
}

int mp_tls_connect(struct mp_tls *t, SSL_CTX *ctx, int fd, const char *host, bool verify,
                   const char **why)
{
    *t = (struct mp_tls){0};
    if (!(t->ssl = SSL_new(ctx))) {
        *why = "out of memory for TLS";
        return -1;
    }
    unsigned char tmp[16];
    bool literal = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
    if (!literal)
        SSL_set_tlsext_host_name(t->ssl, host);
    if (verify) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
        int ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
                         : X509_VERIFY_PARAM_set1_host(vp, host, 0);
        if (!ok) {
            *why = "cannot set the name to verify";
            return -1; /* t->ssl is freed by mp_tls_free */
        }
    }
    SSL_set_fd(t->ssl, fd);
    SSL_set_connect_state(t->ssl);
    t->handshaking = true;
    return 0;
}

static void ssl_reason(char *dst, size_t n)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, dst, n);
    else
        snprintf(dst, n, "connection closed during the handshake");
}

int mp_tls_handshake(struct mp_tls *t, char *why, size_t wn)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        t->handshaking = false;
        SSL_free_buffers(t->ssl); /* unless bytes that followed the handshake are in them */
        return 1;
    }
    int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        t->hs_want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    long vr = SSL_get_verify_result(t->ssl);
    if (!SSL_is_server(t->ssl) && vr != X509_V_OK)
        snprintf(why, wn, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
    else
        ssl_reason(why, wn);
    return -1;
}

ssize_t mp_tls_read(struct mp_tls *t, int fd, void *buf, size_t n)
{
    if (!t->ssl) {
        ssize_t r = read(fd, buf, n);
        if (r > 0)
            return r;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return -1;
    }
    ERR_clear_error();
    int r = SSL_read(t->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) {
        t->rd_wants_write = false;
        return r;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        t->rd_wants_write = false;
        /* OpenSSL set up its read buffer before the read found nothing, and
         * SSL_MODE_RELEASE_BUFFERS gives it back only after a record: an
         * idle connection (a parked request, after the upstream's session
         * tickets) would keep ~17 KiB.  Not freed while a record is partial. */
        SSL_free_buffers(t->ssl);
        return 0;
    case SSL_ERROR_WANT_WRITE:
        t->rd_wants_write = true;
        return 0;
    default:
        return -1;
    }
}

ssize_t mp_tls_write(struct mp_tls *t, int fd, const void *buf, size_t n)
{
    if (!t->ssl) {
        ssize_t r = send(fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        return -1;
    }
    ERR_clear_error();
    int r = SSL_write(t->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (r > 0) {
        t->wr_wants_read = false;
        return r;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        t->wr_wants_read = true;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        t->wr_wants_read = false;
        return 0;
    default:
        return -1;
    }
}

bool mp_tls_pending(const struct mp_tls *t)
{
    return t->ssl && SSL_has_pending(t->ssl);
}

uint32_t mp_tls_events(const struct mp_tls *t, bool want_read, bool want_write)
{
    if (t->handshaking)
        return t->hs_want_write ? MP_WRITE : MP_READ;
    uint32_t w = 0;
    if ((want_read && !t->rd_wants_write) || t->wr_wants_read)
        w |= MP_READ;
    if ((want_write && !t->wr_wants_read) || t->rd_wants_write)
        w |= MP_WRITE;
    return w;
}

bool mp_tls_heard(const struct mp_tls *t)
{
    return t->ssl && BIO_number_read(SSL_get_rbio(t->ssl)) != 0;
}

void mp_tls_describe(const struct mp_tls *t, char *dst, size_t n)
{
    if (!t->ssl)
        snprintf(dst, n, "plain");
    else
        snprintf(dst, n, "%s %s", SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl));
}

void mp_tls_free(struct mp_tls *t, bool notify)
{
    if (t->ssl) {
        if (notify && !t->handshaking)
            SSL_shutdown(t->ssl); /* best effort close_notify, never waited for */
        SSL_free(t->ssl);
    }
    *t = (struct mp_tls){0};
}
