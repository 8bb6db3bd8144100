/* The directory as a source of mailbox DNs for mailbox authorization: the
 * proxy's own NSPI session with the upstream (NTLM at privacy, as
 * dcerpc_mapiproxy:username), NspiBind + NspiResolveNamesW on a user's
 * account name, PidTagEmailAddress of the one row whose PidTagAccount is that
 * name.  Blocking (sockets with timeouts): call it from a worker thread. */
#ifndef MP_MBXDIR_H
#define MP_MBXDIR_H
#include <stddef.h>

struct mp_config;
struct mp_mbxdir;

/* NULL with why when the directory cannot be used (no NTLM account for the
 * upstream: Kerberos or no dcerpc_mapiproxy:username; password unreadable). */
struct mp_mbxdir *mp_mbxdir_new(const struct mp_config *cfg, char *why, size_t wl);
void mp_mbxdir_free(struct mp_mbxdir *d);
/* account: the bare account name ("alice").  0 with dn (the legacyExchangeDN
 * of its mailbox), or -1 with why.  Thread-safe (d is only read). */
int mp_mbxdir_lookup(const struct mp_mbxdir *d, const char *account, char *dn, size_t cap,
                     char *why, size_t wl);
#endif
