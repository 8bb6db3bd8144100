/* HTTP Negotiate (RFC 4559) with Kerberos, over gss.c: the initiator's
 * Authorization line toward an upstream, and the acceptor of a client's
 * one-leg Kerberos logon at the front.  See doc/internals/http.md. */
#ifndef MP_HTTP_HNEG_H
#define MP_HTTP_HNEG_H
#include <stddef.h>

#include "auth/gss.h"
#include "core/buf.h"

/* "Authorization: Negotiate <SPNEGO NegTokenInit with an AP-REQ for spn>\r\n"
 * into line (never logged; the caller wipes it).  A fresh context each
 * call: every HTTP connection gets its own authenticator.  May wait for
 * the KDC when the ticket is not in the credential's cache yet.  0, or -1
 * with why in err. */
int mp_hneg_authz(struct mp_gss_cred *cred, const char *spn, char *line, size_t len, char *err,
                  size_t errlen);

struct mp_kdc_job;
struct mp_config;

/* The proxy's own Kerberos identity for an upstream Negotiate logon
 * (mapiproxy:upstream ccache, keytab, principal; tickets from a keytab go
 * to a MEMORY: cache named after tag), with a first service ticket for spn
 * fetched now (a warning when the KDC has none yet) so that connections do
 * not wait for the KDC.  NULL after an error log line naming option (the
 * option that asked for it). */
struct mp_gss_cred *mp_hneg_up_cred(const struct mp_config *cfg, const void *tag,
                                    const char *option, const char *spn);

/* On the KDC worker thread: mp_hneg_authz(cred, spn) into j->tok (the
 * NUL-terminated line) with j->rc 0, or j->rc -1 and j->why. */
void mp_hneg_job(struct mp_kdc_job *j, struct mp_gss_cred *cred, const char *spn);

/* A client's "Negotiate <base64>" value (val, n bytes, scheme included):
 * one leg with a fresh acceptor over acc (the proxy's keytab).  0: logged
 * on as user (its principal), reply holds the base64 of the mutual token
 * for "WWW-Authenticate: Negotiate <reply>" (possibly empty).  -1: refused
 * (why in err; an NTLM token inside is "ntlm"). */
int mp_hneg_accept(struct mp_gss_cred *acc, const char *val, size_t n, char *user, size_t ul,
                   struct mp_buf *reply, char *err, size_t errlen);
#endif
