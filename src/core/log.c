#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <syslog.h>
#include <unistd.h>

#include "ops/syslog.h"

int mp_log_threshold = MP_LOG_INFO;
static FILE *log_fp;
static char log_path[512];
static struct mp_syslog log_syslog; /* mapiproxy:log target = syslog */
static bool log_to_syslog;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int mp_log_open(const char *path)
{
    if (!path || !*path) {
        log_fp = NULL;
        return 0;
    }
    if (strlen(path) >= sizeof log_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    FILE *fp = fopen(path, "ae");
    if (!fp)
        return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    if (log_fp)
        fclose(log_fp);
    log_fp = fp;
    strcpy(log_path, path);
    return 0;
}

/* The new file takes the old one's descriptor number (dup3), so a thread
 * writing a line at that moment writes it whole to one file or the other;
 * log_fp itself never changes. */
int mp_log_open_syslog(const char *socket_path, int facility)
{
    if (mp_syslog_init(&log_syslog, socket_path, facility, "mapiproxy"))
        return -1;
    log_to_syslog = true;
    return 0;
}

const char *mp_log_syslog_socket(void)
{
    return log_to_syslog ? log_syslog.path : NULL;
}

int mp_log_reopen(void)
{
    if (log_to_syslog) {
        mp_syslog_reconnect(&log_syslog);
        return 2;
    }
    if (!log_fp)
        return 1;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    fflush(log_fp);
    int r = dup3(fd, fileno(log_fp), O_CLOEXEC);
    int e = errno;
    close(fd);
    errno = e;
    return r < 0 ? -1 : 0;
}

const char *mp_log_path(void)
{
    return log_fp ? log_path : NULL;
}

void mp_log_close(void)
{
    if (log_to_syslog)
        mp_syslog_close(&log_syslog);
    log_to_syslog = false;
    if (log_fp)
        fclose(log_fp);
    log_fp = NULL;
}

void mp_log_at(int level, const char *fmt, ...)
{
    char line[2048];
    if (log_to_syslog) {
        va_list ap;
        va_start(ap, fmt);
        /* The receiver stamps the time; the priority carries the level. */
        static const int sev[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG};
        int m = vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        size_t len = m < 0 ? 0 : (size_t)m >= sizeof line ? sizeof line - 1 : (size_t)m;
        if (mp_syslog_send(&log_syslog, sev[level < 0 ? 0 : level > 4 ? 4 : level], line, len)) {
            fwrite(line, 1, len, stderr); /* receiver gone: the line is not lost */
            fputc('\n', stderr);
        }
        return;
    }
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000,
                     level_names[level < 0   ? 0
                                 : level > 4 ? 4
                                             : level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, log_fp ? log_fp : stderr);
    if (!log_fp)
        fflush(stderr);
}

void mp_log_safe(char *p)
{
    for (; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == ' ')
            *p = '?';
}

const char *mp_log_safe_copy(char *dst, size_t n, const char *src)
{
    if (!n)
        return dst;
    snprintf(dst, n, "%s", src);
    mp_log_safe(dst);
    return dst;
}
