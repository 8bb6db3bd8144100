/* Logging: levels, one line per event, never secrets. */
#ifndef MP_LOG_H
#define MP_LOG_H
#include <stdarg.h>
#include <stddef.h>

enum mp_log_level { MP_LOG_ERROR = 0, MP_LOG_WARN, MP_LOG_INFO, MP_LOG_DEBUG, MP_LOG_TRACE };

extern int mp_log_threshold;

int mp_log_open(const char *path); /* NULL or "" = stderr; returns 0 or -1 */
void mp_log_close(void);
/* Logs to syslog instead (RFC 3164 datagrams on socket_path, NULL =
 * /dev/log, at facility, a <syslog.h> LOG_* value): 0 or -1. */
int mp_log_open_syslog(const char *socket_path, int facility);
const char *mp_log_syslog_socket(void); /* NULL unless logging to syslog */
/* Reopens the log file under its name (after a rotation moved it): 0 done,
 * 1 when logging to stderr (nothing to reopen), 2 when logging to syslog
 * (the socket was connected again), -1 with errno. */
int mp_log_reopen(void);
const char *mp_log_path(void); /* the log file's name, NULL for stderr */
/* Names that come from a client go into log lines through this: control
 * bytes (CR, LF, ESC ...), DEL and spaces become '?' in place, so that no
 * name can start a line of its own or pass for another field. */
void mp_log_safe(char *p);
/* The same into dst (n bytes, NUL-terminated, truncated): dst. */
const char *mp_log_safe_copy(char *dst, size_t n, const char *src);
void mp_log_at(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mp_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= mp_log_threshold)                                                           \
            mp_log_at((level), __VA_ARGS__);                                                       \
    } while (0)
#define mp_error(...) mp_log(MP_LOG_ERROR, __VA_ARGS__)
#define mp_warn(...) mp_log(MP_LOG_WARN, __VA_ARGS__)
#define mp_info(...) mp_log(MP_LOG_INFO, __VA_ARGS__)
#define mp_debug(...) mp_log(MP_LOG_DEBUG, __VA_ARGS__)
#define mp_trace(...) mp_log(MP_LOG_TRACE, __VA_ARGS__)
#endif
