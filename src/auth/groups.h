/* mapiproxy:groups file: local groups for users the domain does not
 * describe (credentials-file NTLM users, Kerberos principals).
 *
 *   # group: member, member, ...
 *   mapi-users: alice, LAB\bob, carol@LAB.EXAMPLE
 *
 * A member is written as in mapiproxy:allowed users (user, DOMAIN\user or
 * user@REALM) and matched the same way, case-insensitively.  A group may
 * have several lines.  The file must not be readable by group or others,
 * like the credentials file. */
#ifndef MP_GROUPS_H
#define MP_GROUPS_H
#include <stdbool.h>
#include <stddef.h>

struct mp_group_line {
    char *group;   /* the name before ':' */
    char *members; /* the rest: names separated by ',' or blanks */
};

struct mp_groups {
    struct mp_group_line *l;
    size_t n;
};

/* 0, or -1 with why (naming the file, the line and the fix). */
int mp_groups_load(struct mp_groups *g, const char *path, char *why, size_t why_len);
void mp_groups_free(struct mp_groups *g);
/* Whether group lists one of names[0..n-1] (case-insensitive). */
bool mp_groups_has(const struct mp_groups *g, const char *group, const char *const *names,
                   size_t n);
/* Whether the blank- or comma-separated list holds word (case-insensitive). */
bool mp_list_has(const char *list, const char *word);
/* s without leading and trailing white space (trailing cut in place). */
char *mp_trim(char *s);
#endif
