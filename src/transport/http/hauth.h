/* Authentication termination on the HTTPS front (mapiproxy:http auth =
 * terminate; doc/internals/http.md).
 *
 * Client side: the proxy answers 401 itself, runs the NTLM acceptor of
 * src/auth/ntlmssp.c over HTTP's connection-bound handshake (NEGOTIATE ->
 * 401 CHALLENGE -> AUTHENTICATE) against mapiproxy:credentials file, and
 * checks Basic passwords against the same NT hashes, and with
 * mapiproxy:http negotiate Kerberos tickets (Negotiate, one leg) against
 * mapiproxy:keytab (hneg.c).  Upstream side: the
 * proxy's own logon (dcerpc_mapiproxy:username/domain and password), NTLM
 * on its pinned connection or Basic on every request.  Nothing here logs a
 * secret; passwords and keys are wiped after use. */
#ifndef MP_HTTP_HAUTH_H
#define MP_HTTP_HAUTH_H
#include <stdbool.h>
#include <stddef.h>

#include "auth/credstore.h"
#include "auth/gss.h"
#include "auth/groups.h"
#include "auth/ntlmssp.h"
#include "core/buf.h"
#include "core/config.h"

/* Process-wide state of termination. */
struct mp_hauth {
    const struct mp_config *cfg;
    bool on;       /* mapiproxy:http auth = terminate */
    bool up_basic; /* mapiproxy:http upstream auth = basic */
    struct mp_credstore creds;
    struct mp_groups groups; /* mapiproxy:groups file, for "@group" in allowed users */
    struct mp_ntlm_acceptor_cfg acc_cfg;
    bool neg;                /* mapiproxy:http negotiate: Negotiate offered and taken */
    struct mp_gss_cred *krb; /* ... the Kerberos acceptor's keytab (NULL: NTLM inside only) */
    char fqdn[320];
    char realm[128];
    char up_password[256];
};

/* Reads the options, the credentials file and the upstream password.
 * 0 (also when termination is off), or -1 after logging why. */
int mp_hauth_init(struct mp_hauth *a, const struct mp_config *cfg);
void mp_hauth_free(struct mp_hauth *a);

/* One client connection's logon. */
struct mp_hauth_conn {
    struct mp_ntlm_acceptor acc;
    bool acc_on;        /* a NEGOTIATE was answered; AUTHENTICATE awaited */
    bool authed;        /* NTLM or Negotiate finished: the connection is authenticated */
    bool krb;           /* ... by Negotiate (Kerberos): user is the client's principal */
    char mutual[1024];  /* Negotiate: "Negotiate <base64 of the acceptor's token>", or "" */
    bool spnego;        /* the NTLM handshake runs inside SPNEGO (scheme Negotiate) */
    uint8_t *mech_list; /* ... the client's MechTypeList, for the mechListMIC */
    size_t mech_list_len;
    char user[520]; /* DOMAIN\user of the connection (NTLM) or request (Basic) */
};

enum mp_hauth_verdict {
    MP_HAUTH_PASS = 0,      /* authenticated: the request goes on */
    MP_HAUTH_CHALLENGE = 1, /* answer 401 with the headers (a handshake step or no credentials) */
    MP_HAUTH_DENY = 2,      /* a logon failed: 401 with the headers; why says what, user who */
};

/* The client's Authorization header (authz, len; NULL when absent) on a
 * request.  WWW-Authenticate header lines ("WWW-Authenticate: ...\r\n") for a
 * 401 are appended to hdrs. */
enum mp_hauth_verdict mp_hauth_client(struct mp_hauth *a, struct mp_hauth_conn *c,
                                      const char *authz, size_t len, struct mp_buf *hdrs, char *why,
                                      size_t wl);
void mp_hauth_conn_free(struct mp_hauth_conn *c);

/* Pass-through: the identity a client's Authorization header names, as
 * "DOMAIN\user" (or "user"), into who.  Not verified here: the upstream
 * verifies it.  Returns 1 for an NTLM AUTHENTICATE (raw, under "NTLM" or
 * "Negotiate": the connection's identity from now on), 2 for Basic (this
 * request's), 3 for a Negotiate token that is not NTLM (a Kerberos AP-REQ,
 * raw or in SPNEGO: the client's name is encrypted for the server; who is
 * ""), 0 when the header names nobody (Bearer, an NTLM handshake's first
 * leg, none).  NTLM inside SPNEGO (NegTokenResp or NegTokenInit) is read
 * as NTLM. */
int mp_hauth_peek_identity(const char *authz, size_t len, char *who, size_t n);

/* The proxy's logon on one upstream connection. */
struct mp_hauth_up {
    struct mp_ntlm_initiator ini;
    bool ini_on;
};

/* The value of the proxy's Basic Authorization header ("Basic ..."), NUL
 * terminated, into out (wiped by the caller).  0 or -1. */
int mp_hauth_up_basic(const struct mp_hauth *a, char *out, size_t cap);
/* "NTLM <NEGOTIATE>" into out.  0 or -1. */
int mp_hauth_up_negotiate(struct mp_hauth *a, struct mp_hauth_up *u, struct mp_buf *out);
/* From the upstream's WWW-Authenticate value "NTLM <CHALLENGE>":
 * "NTLM <AUTHENTICATE>" into out.  0, or -1 (why set). */
int mp_hauth_up_authenticate(struct mp_hauth_up *u, const char *www, size_t len, struct mp_buf *out,
                             char *why, size_t wl);
void mp_hauth_up_free(struct mp_hauth_up *u);

/* Base64 (RFC 4648, with padding, no line breaks).  dec: strict (length a
 * multiple of 4, only the alphabet, padding at the end); -1 when invalid,
 * else the decoded length (at most cap). */
int mp_b64_encode(const uint8_t *p, size_t n, struct mp_buf *out);
long mp_b64_decode(const char *s, size_t n, uint8_t *out, size_t cap);
#endif
