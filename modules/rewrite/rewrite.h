/* The rewrite module's name map, for the parts of the proxy outside the
 * module chain: the HTTP front's GetMailboxUrl / GetAddressBookUrl requests
 * and Autodiscover answers (doc/internals/rewrite.md). */
#ifndef MP_MODULES_REWRITE_H
#define MP_MODULES_REWRITE_H
#include <stdbool.h>
#include <stddef.h>

/* True while the rewrite module is loaded (mapiproxy:transparent = no). */
bool mp_rewrite_active(void);

/* s[0..n) with the names mapped: to_client, upstream names to the proxy's
 * (server names in DNs are learned first); else the proxy's back to the
 * upstream's.  autodiscover: only server names after "cn=" or "<Server>".
 * Returns a malloc'd, NUL-terminated copy (*out_n its length), or NULL when
 * nothing changed (or the module is not loaded, or memory ran out). */
char *mp_rewrite_text(const char *s, size_t n, bool to_client, bool autodiscover, size_t *out_n);
#endif
