#include "ops/privdrop.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_id(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || errno || v >= (unsigned long)(uid_t)-1)
        return -1;
    *out = v;
    return 0;
}

int mp_runas_resolve(const char *user, const char *group, struct mp_runas *r, char *why, size_t n)
{
    memset(r, 0, sizeof *r);
    char buf[4096];
    struct passwd pw, *pp = NULL;
    unsigned long id;
    int e = getpwnam_r(user, &pw, buf, sizeof buf, &pp);
    if (!pp && !parse_id(user, &id))
        e = getpwuid_r((uid_t)id, &pw, buf, sizeof buf, &pp);
    if (!pp) {
        snprintf(why, n,
                 "mapiproxy:user \"%s\": no such user (%s); create it (adduser --system "
                 "--group %s) or give an existing one",
                 user, e ? strerror(e) : "not in the passwd database", user);
        return -1;
    }
    r->uid = pw.pw_uid;
    r->gid = pw.pw_gid;
    snprintf(r->user, sizeof r->user, "%s", pw.pw_name);
    snprintf(r->group, sizeof r->group, "%u", (unsigned)r->gid);
    if (group && *group) {
        struct group gr, *gp = NULL;
        e = getgrnam_r(group, &gr, buf, sizeof buf, &gp);
        if (!gp && !parse_id(group, &id))
            e = getgrgid_r((gid_t)id, &gr, buf, sizeof buf, &gp);
        if (!gp) {
            snprintf(why, n, "mapiproxy:group \"%s\": no such group (%s); give an existing one",
                     group, e ? strerror(e) : "not in the group database");
            return -1;
        }
        r->gid = gr.gr_gid;
        snprintf(r->group, sizeof r->group, "%s", gr.gr_name);
    } else {
        struct group gr, *gp = NULL;
        if (!getgrgid_r(r->gid, &gr, buf, sizeof buf, &gp) && gp)
            snprintf(r->group, sizeof r->group, "%s", gr.gr_name);
    }
    if (r->uid == 0) {
        snprintf(why, n, "mapiproxy:user \"%s\" is root; give the unprivileged user to run as",
                 user);
        return -1;
    }
    return 0;
}

int mp_runas_drop(const struct mp_runas *r, char *why, size_t n)
{
    if (getuid() == r->uid && geteuid() == r->uid && getgid() == r->gid && getegid() == r->gid)
        return 0; /* started as that user already (systemd's User=) */
    if (geteuid() != 0) {
        snprintf(why, n,
                 "cannot change to user %s: running as uid %u, not root; start as root or "
                 "remove mapiproxy:user",
                 r->user, (unsigned)geteuid());
        return -1;
    }
    /* The user's supplementary groups (so group-readable keytabs and
     * winbind's socket stay reachable), with the chosen group. */
    gid_t groups[256];
    int ng = 256;
    if (getgrouplist(r->user, r->gid, groups, &ng) < 0)
        ng = 0, groups[ng++] = r->gid;
    if (setgroups((size_t)ng, groups) || setgid(r->gid) || setuid(r->uid)) {
        snprintf(why, n, "cannot change to user %s, group %s: %s", r->user, r->group,
                 strerror(errno));
        return -1;
    }
    /* Root must be gone for good: neither id nor a setuid(0) back. */
    if (getuid() != r->uid || geteuid() != r->uid || getgid() != r->gid || getegid() != r->gid ||
        setuid(0) == 0) {
        snprintf(why, n, "changing to user %s left root privileges in place", r->user);
        return -1;
    }
    return 0;
}
