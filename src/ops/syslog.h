/* A syslog client: RFC 3164 datagrams on a local socket (/dev/log, which
 * journald also serves under systemd).  Used by the log (mapiproxy:log
 * target = syslog) and by the audit trail; doc/operations.md. */
#ifndef MP_SYSLOG_H
#define MP_SYSLOG_H
#include <pthread.h>
#include <stddef.h>

#define MP_SYSLOG_DEFAULT_SOCKET "/dev/log"

struct mp_syslog {
    int fd;       /* -1 until connected */
    int facility; /* LOG_DAEMON ... (already shifted, as in <syslog.h>) */
    char path[108];
    char ident[32];
    pthread_mutex_t mu;
    unsigned long dropped; /* messages that could not be sent */
};

/* A facility name (daemon, user, auth, authpriv, local0..local7; any case)
 * as its <syslog.h> value, or -1. */
int mp_syslog_facility(const char *name);
/* Sets up s (path NULL or "" = /dev/log) and tries to connect; a socket
 * that is not there yet is retried on each message.  0, or -1 when the path
 * is too long. */
int mp_syslog_init(struct mp_syslog *s, const char *path, int facility, const char *ident);
/* Sends one message (no newline needed) at severity (LOG_ERR ... LOG_DEBUG);
 * reconnects once when the receiver went away.  0 sent, -1 not. */
int mp_syslog_send(struct mp_syslog *s, int severity, const char *msg, size_t len);
/* Drops the connection; the next message connects again (SIGUSR1). */
void mp_syslog_reconnect(struct mp_syslog *s);
void mp_syslog_close(struct mp_syslog *s);
#endif
