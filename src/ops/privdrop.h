/* Dropping root after the listeners are bound (mapiproxy:user, mapiproxy:group;
 * doc/operations.md "Privileges"). */
#ifndef MP_PRIVDROP_H
#define MP_PRIVDROP_H
#include <stddef.h>
#include <sys/types.h>

struct mp_runas {
    uid_t uid;
    gid_t gid;
    char user[64];
    char group[64];
};

/* Looks user (a name or a number) and group (NULL or "" = the user's
 * primary group) up.  0, or -1 with why ("what; fix"). */
int mp_runas_resolve(const char *user, const char *group, struct mp_runas *r, char *why, size_t n);
/* setgroups (the user's supplementary groups, plus group), setgid, setuid;
 * then checks that root cannot be taken back.  When the process already runs
 * as r's uid and gid, nothing to do.  0, or -1 with why: the caller must not
 * go on. */
int mp_runas_drop(const struct mp_runas *r, char *why, size_t n);
#endif
