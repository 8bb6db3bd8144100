/* The TLS wrapper every transport uses (OpenSSL), and plain reads and
 * writes behind the same calls.
 *
 * A struct mp_tls is one end of one connection: with ssl NULL, reads and
 * writes go straight to the descriptor.  OpenSSL may need the opposite
 * readiness of what was asked for (a read that must first write a
 * key update, a write that must first read): the flags say so, and
 * mp_tls_events() turns "I would like to read / I have bytes to write"
 * into the epoll events to wait for. */
#ifndef MP_NET_TLS_H
#define MP_NET_TLS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

struct mp_tls {
    SSL *ssl;            /* NULL: plain */
    bool handshaking;    /* the TLS handshake is not done */
    bool hs_want_write;  /* the handshake waits for writability */
    bool rd_wants_write; /* SSL_read asked to wait for writability */
    bool wr_wants_read;  /* SSL_write asked to wait for readability */
};

/* A server context: certificate chain and key (PEM), TLS 1.2 at least, no
 * renegotiation; idle connections give their buffers back.  NULL after an
 * error log line naming the file at fault. */
SSL_CTX *mp_tls_server_ctx(const char *cert_file, const char *key_file);
/* A client context; verify: the peer's certificate against ca_file ("" for
 * the system bundle); without it, a warning line.  NULL after an error line. */
SSL_CTX *mp_tls_client_ctx(bool verify, const char *ca_file);
void mp_tls_ctx_free(SSL_CTX *ctx);

/* Starts the server side of a handshake on fd.  0, or -1 (out of memory). */
int mp_tls_accept(struct mp_tls *t, SSL_CTX *ctx, int fd);
/* Starts the client side on fd: SNI for a host name, and with verify the
 * name (or IP literal) the certificate must carry.  0, or -1 with why. */
int mp_tls_connect(struct mp_tls *t, SSL_CTX *ctx, int fd, const char *host, bool verify,
                   const char **why);
/* Drives the handshake: 1 done, 0 wait (mp_tls_events says for what), -1
 * failed with why filled (the certificate's verify error for a client). */
int mp_tls_handshake(struct mp_tls *t, char *why, size_t wn);

/* > 0 bytes read; 0 would block; -1 end of stream or error. */
ssize_t mp_tls_read(struct mp_tls *t, int fd, void *buf, size_t n);
/* > 0 bytes written; 0 would block; -1 error (never SIGPIPE). */
ssize_t mp_tls_write(struct mp_tls *t, int fd, const void *buf, size_t n);
/* May more decrypted bytes be waiting inside the TLS layer (a record read
 * but not all handed out)?  Then the descriptor may stay quiet while
 * there is something to read. */
bool mp_tls_pending(const struct mp_tls *t);

/* The loop events (MP_READ / MP_WRITE of event/loop.h) to wait for, given
 * whether the caller wants to read and whether it has bytes to write. */
uint32_t mp_tls_events(const struct mp_tls *t, bool want_read, bool want_write);

/* Did the peer send any byte at all (a failed handshake of a port probe)? */
bool mp_tls_heard(const struct mp_tls *t);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" into dst. */
void mp_tls_describe(const struct mp_tls *t, char *dst, size_t n);
/* Frees the TLS state; with notify a best-effort close_notify first. */
void mp_tls_free(struct mp_tls *t, bool notify);
#endif
