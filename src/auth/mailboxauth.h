/* mailboxauth: mailbox authorization under specified credentials (built-in
 * module, src/modules/mailboxauth.c; doc/security.md "Mailbox
 * authorization").  When the upstream sees the proxy's own account, the
 * proxy is the only one that can keep each user to their own mailbox: it
 * refuses EcDoConnect(Ex), MAPI/HTTP Connect and private RopLogon for any
 * mailbox but the user's own (mapiproxy:mailbox map) or one a delegate rule
 * of the map grants. */
#ifndef MP_MAILBOXAUTH_H
#define MP_MAILBOXAUTH_H
#include <stdbool.h>

struct mp_config;

/* Whether the chain gets the module: `mapiproxy:mailbox authorization` is
 * on (the default) and some front logs on upstream as the proxy's own
 * account (dcerpc_mapiproxy:username or mapiproxy:upstream spn without S4U
 * delegation and without delegated_auth, or mapiproxy:http auth =
 * terminate). */
bool mp_mailbox_auth_applies(const struct mp_config *cfg);
#endif
