/* Request-target normalisation (doc/internals/http.md, "Paths"). */
#include "transport/http/path.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Percent-decodes the unreserved characters of p[0 .. n) into dst and
 * merges runs of '/'.  Length, or -1 (refused). */
static long decode_path(const char *p, size_t n, char *dst)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '#')
            return -1;
        if (c == '%') {
            int hi = i + 2 < n ? hexval(p[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(p[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            int v = hi * 16 + lo;
            i += 2;
            if (v == '/' || v == '\\')
                return -1; /* an encoded separator: never a path character */
            if (unreserved(v)) {
                dst[k++] = (char)v;
            } else {
                dst[k++] = '%';
                dst[k++] = hex[v >> 4];
                dst[k++] = hex[v & 15];
            }
            continue;
        }
        if (c == '/' && k && dst[k - 1] == '/')
            continue;
        dst[k++] = (char)c;
    }
    return (long)k;
}

/* Drops the last segment of out[0 .. *k) and the '/' before it. */
static void pop_segment(const char *out, size_t *k)
{
    while (*k && out[*k - 1] != '/')
        (*k)--;
    if (*k)
        (*k)--;
}

/* RFC 3986 5.2.4 on in[0 .. n) (modified), into out.  Length. */
static size_t remove_dots(char *in, size_t n, char *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        size_t r = n - i;
        const char *s = in + i;
        if (r >= 3 && !memcmp(s, "../", 3)) {
            i += 3;
        } else if (r >= 2 && !memcmp(s, "./", 2)) {
            i += 2;
        } else if (r >= 3 && !memcmp(s, "/./", 3)) {
            i += 2;
        } else if (r == 2 && !memcmp(s, "/.", 2)) {
            i += 1;
            in[i] = '/';
        } else if (r >= 4 && !memcmp(s, "/../", 4)) {
            i += 3;
            pop_segment(out, &k);
        } else if (r == 3 && !memcmp(s, "/..", 3)) {
            i += 2;
            in[i] = '/';
            pop_segment(out, &k);
        } else if ((r == 1 && s[0] == '.') || (r == 2 && !memcmp(s, "..", 2))) {
            i = n;
        } else {
            out[k++] = in[i++];
            while (i < n && in[i] != '/')
                out[k++] = in[i++];
        }
    }
    return k;
}

long mp_http_path_normalise(const char *in, size_t len, char *out)
{
    size_t start = 0;
    if (len && in[0] == '/') {
        start = 0;
    } else if (len >= 7 && (!strncasecmp(in, "http://", 7) || !strncasecmp(in, "https://", 8))) {
        start = in[4] == ':' ? 7 : 8; /* the authority is dropped: Host is the proxy's */
        while (start < len && in[start] != '/' && in[start] != '?')
            start++;
    } else {
        return -1;
    }
    size_t q = start;
    while (q < len && in[q] != '?')
        q++;
    for (size_t i = q; i < len; i++) /* the query is kept as it is, but never a fragment */
        if ((unsigned char)in[i] <= 0x20 || (unsigned char)in[i] >= 0x7f || in[i] == '#')
            return -1;
    char *tmp = malloc(q - start + 2);
    if (!tmp)
        return -1;
    long d = decode_path(in + start, q - start, tmp);
    if (d < 0) {
        free(tmp);
        return -1;
    }
    size_t k = 0;
    if (d == 0 || tmp[0] != '/') /* absolute-form without a path, or "?q" */
        out[k++] = '/';
    k += remove_dots(tmp, (size_t)d, out + k);
    free(tmp);
    if (k == 0)
        out[k++] = '/';
    memcpy(out + k, in + q, len - q);
    k += len - q;
    out[k] = 0;
    return (long)k;
}
