#include "core/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int mp_log_threshold = MP_LOG_INFO;
static FILE *log_fp;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int mp_log_open(const char *path)
{
    if (!path || !*path) {
        log_fp = NULL;
        return 0;
    }
    FILE *fp = fopen(path, "a");
    if (!fp)
        return -1;
    setvbuf(fp, NULL, _IOLBF, 0);
    log_fp = fp;
    return 0;
}

void mp_log_close(void)
{
    if (log_fp)
        fclose(log_fp);
    log_fp = NULL;
}

void mp_log_at(int level, const char *fmt, ...)
{
    char line[2048];
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
