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

/* A client's "Negotiate <base64>" value (val, n bytes, scheme included):
 * one leg with a fresh acceptor over acc (the proxy's keytab).  0: logged
 * on as user (its principal), reply holds the base64 of the mutual token
 * for "WWW-Authenticate: Negotiate <reply>" (possibly empty).  -1: refused
 * (why in err; an NTLM token inside is "ntlm"). */
int mp_hneg_accept(struct mp_gss_cred *acc, const char *val, size_t n, char *user, size_t ul,
                   struct mp_buf *reply, char *err, size_t errlen);
#endif
