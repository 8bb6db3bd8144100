/* RPC over HTTP v2 as the relay's upstream (mapiproxy:rpc over http upstream):
 * the proxy is the RPC over HTTP client of the server's /rpc/rpcproxy.dll
 * (MS-RPCH 3.2.2: CONN/A1 on RPC_OUT_DATA, CONN/B1 on RPC_IN_DATA, CONN/A3
 * and CONN/C2 awaited, flow control both ways, Ping on an idle IN channel).
 *
 * Each association's upstream connection is one virtual connection, the
 * association's upstream carrier (transport/dcerpc/carrier.h): the inner
 * DCE/RPC PDUs are handed over in-process both ways, with no socket in
 * between.  doc/internals/rpch.md. */
#ifndef MP_TRANSPORT_RPCH_UPCLIENT_H
#define MP_TRANSPORT_RPCH_UPCLIENT_H
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "event/loop.h"
#include "net/tls.h"

struct mp_rpch_up;

/* NULL when the option is off (*failed false) or after a logged error
 * (*failed true: address, TLS context, password file). */
struct mp_rpch_up *mp_rpch_up_new(struct mp_loop *loop, const struct mp_config *cfg, bool *failed);
/* Closes every virtual connection. */
void mp_rpch_up_free(struct mp_rpch_up *u);
/* A virtual connection to ?SERVER:port as association a's upstream carrier
 * (transport/dcerpc/carrier.h: *ops set; peer names the association in
 * log lines): the carrier, or NULL after a logged error.  key: the
 * association's client carrier (an RPC over HTTP client's virtual
 * connection) or NULL; with pins for that key (HTTP logon pass-through) the
 * channels use the client's logon. */
struct assoc;
struct mp_dce_up_ops;
void *mp_rpch_up_open(struct mp_rpch_up *u, struct assoc *a, const void *key, const char *peer,
                      uint16_t port, const struct mp_dce_up_ops **ops);

/* HTTP logon pass-through (mapiproxy:http auth = pass-through): a client
 * channel's logon toward the upstream's RPC proxy.  fd >= 0: the upstream
 * connection the client's NTLM handshake ran on (connected, TLS done when
 * tls_on), to carry the channel; -1: a new connection.  authz: the client's
 * "Authorization: ...\r\n" line of its channel request (NTLM AUTHENTICATE
 * or Basic), or "". */
struct mp_rpch_pin {
    int fd;
    struct mp_tls tls;
    bool tls_on;
    char authz[12288];
    bool head_sent;  /* the channel's request head went already (hpass.c checked the logon) */
    uint64_t length; /* ... with this Content-Length */
    /* whom the upstream took the logon of (hpass.c, from the client's
     * Authorization: DOMAIN\user of NTLM or Basic), "" when the proxy cannot
     * read it; krb: a Kerberos ticket (the name is encrypted for the server) */
    char user[520];
    bool krb;
};
/* The Content-Length of the upstream client's channel requests: the OUT
 * channel's fixed one, or mapiproxy:rpc over http upstream in channel length. */
uint64_t mp_rpch_up_length(const struct mp_config *cfg, bool out);
/* The same for a client's channel request whose head goes upstream as the
 * client's (hpass.c): an RPC_OUT_DATA of the successor's length (OUT_R1/A3
 * and A11, 120 bytes) is a successor and keeps it. */
uint64_t mp_rpch_up_chan_length(const struct mp_config *cfg, bool out, uint64_t client_length);
/* Pass-through with a connection-based logon (NTLM, Negotiate): the client
 * recycled a channel of key's virtual connection on a new connection it
 * logged on freshly (pin, head_sent: the upstream took the logon).  IN:
 * the upstream IN channel is recycled on it (IN_R1/A1 now, or once a
 * recycling under way ended); OUT: when the upstream asked (OUT_R1/A2),
 * the upstream's successor OUT channel is it.  true: taken over; false:
 * not wanted, the caller frees it. */
bool mp_rpch_up_successor(const void *key, bool out, struct mp_rpch_pin *pin);
/* Keeps a pin for key's OUT or IN channel (taken over: fd, tls) until
 * mp_rpch_up_open(key) uses it or mp_rpch_up_unpin(key) drops it. */
void mp_rpch_up_pin(const void *key, bool out, struct mp_rpch_pin *pin);
void mp_rpch_up_unpin(const void *key);
/* The upstream's address, TLS client context (NULL for http://) and
 * ?SERVER name from the options; 0, or -1 after a logged error. */
int mp_rpch_up_target(const struct mp_config *cfg, struct sockaddr_storage *addr, socklen_t *len,
                      SSL_CTX **tls_ctx, char *server, size_t sl);
/* A header's value in an HTTP head h[0..n) (the first whose value starts
 * with prefix, case-insensitive, when prefix is not NULL); NULL when none. */
const char *mp_rpch_head_value(const char *h, size_t n, const char *name, const char *prefix,
                               size_t *len);
/* Frees one pin that was never handed to mp_rpch_up_pin. */
void mp_rpch_pin_free(struct mp_rpch_pin *pin);
#endif
