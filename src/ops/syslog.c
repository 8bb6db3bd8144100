#include "ops/syslog.h"

#include "mapiproxy/module.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *name;
    int value;
} facilities[] = {
    {"daemon", LOG_DAEMON},     {"user", LOG_USER},     {"auth", LOG_AUTH},
    {"authpriv", LOG_AUTHPRIV}, {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1},
    {"local2", LOG_LOCAL2},     {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},
    {"local5", LOG_LOCAL5},     {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

int mp_syslog_facility(const char *name)
{
    for (size_t i = 0; i < sizeof facilities / sizeof facilities[0]; i++)
        if (!strcasecmp(name, facilities[i].name))
            return facilities[i].value;
    return -1;
}

static int connect_locked(struct mp_syslog *s)
{
    if (s->fd >= 0)
        return 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    s->fd = fd;
    return 0;
}

int mp_syslog_init(struct mp_syslog *s, const char *path, int facility, const char *ident)
{
    if (!path || !*path)
        path = MP_SYSLOG_DEFAULT_SOCKET;
    if (strlen(path) >= sizeof s->path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    s->fd = -1;
    s->facility = facility;
    s->dropped = 0;
    strcpy(s->path, path);
    snprintf(s->ident, sizeof s->ident, "%s", ident && *ident ? ident : "mapiproxy");
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_lock(&s->mu);
    connect_locked(s);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int mp_syslog_send(struct mp_syslog *s, int severity, const char *msg, size_t len)
{
    /* RFC 3164: <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG, in local time as glibc's
     * syslog(3) writes it (journald and rsyslog read this form on /dev/log). */
    static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[2300];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    int n = snprintf(
        buf, sizeof buf, "<%d>%s %2d %02d:%02d:%02d %s[%d]: ", s->facility | (severity & 7),
        mon[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, s->ident, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof buf)
        return -1;
    if (len > sizeof buf - (size_t)n)
        len = sizeof buf - (size_t)n;
    memcpy(buf + n, msg, len);
    size_t total = (size_t)n + len;
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    for (int attempt = 0; attempt < 2 && rc < 0; attempt++) {
        if (connect_locked(s))
            break;
        if (send(s->fd, buf, total, MSG_NOSIGNAL) == (ssize_t)total) {
            rc = 0;
            break;
        }
        /* The receiver restarted (ECONNREFUSED, ENOTCONN): connect again
         * once.  A full queue (EAGAIN) drops the message, never blocks. */
        if (errno == EAGAIN)
            break;
        close(s->fd);
        s->fd = -1;
    }
    if (rc)
        s->dropped++;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void mp_syslog_reconnect(struct mp_syslog *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    connect_locked(s);
    pthread_mutex_unlock(&s->mu);
}

void mp_syslog_close(struct mp_syslog *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    pthread_mutex_destroy(&s->mu);
}

/* The module API's face of it (include/mapiproxy/module.h). */
struct mp_module_syslog {
    struct mp_syslog s;
};

struct mp_module_syslog *mp_module_syslog_open(const char *facility, const char *socket,
                                               const char *ident)
{
    int f = mp_syslog_facility(facility ? facility : "daemon");
    struct mp_module_syslog *m = f < 0 ? NULL : calloc(1, sizeof *m);
    if (m && mp_syslog_init(&m->s, socket, f, ident)) {
        free(m);
        m = NULL;
    }
    return m;
}

int mp_module_syslog_send(struct mp_module_syslog *m, int severity, const char *msg, size_t len)
{
    return mp_syslog_send(&m->s, severity, msg, len);
}

void mp_module_syslog_close(struct mp_module_syslog *m)
{
    if (!m)
        return;
    mp_syslog_close(&m->s);
    free(m);
}
