/* Autodiscover rewriting: names of the upstream become the proxy's name. */
#ifndef MP_HTTP_NAMES_H
#define MP_HTTP_NAMES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_HTTP_MAX_NAMES 16

struct mp_http_names {
    char *names[MP_HTTP_MAX_NAMES]; /* upstream names, longest first */
    size_t len[MP_HTTP_MAX_NAMES];
    size_t n;
    char pub_host[256];      /* the proxy's public host name */
    char pub_authority[320]; /* host[:port] as clients are to write it in URLs */
    /* Does the proxy relay this path (no query)?  NULL: every path.  A URL
     * whose path it does not relay keeps naming the upstream, or with
     * drop_unrelayed its XML element is removed. */
    bool (*relayed)(const void *arg, const char *path, size_t len);
    const void *relayed_arg;
    bool drop_unrelayed;
};

/* upstream: the upstream's host; extra: "a, b c" more names; public_name:
 * "host[:port]".  Returns 0, or -1 when a name is empty or too long (or
 * memory runs out). */
int mp_http_names_init(struct mp_http_names *nm, const char *upstream, const char *extra,
                       const char *public_name);
void mp_http_names_free(struct mp_http_names *nm);

/* Appends `in` to out with every upstream name replaced: after "://" (or
 * JSON's ":\/\/") the name and an optional ":PORT" become pub_authority,
 * when the URL's path is one the proxy relays (nm->relayed);
 * elsewhere a name standing alone (not part of a longer host name, not after
 * '@' or '=') becomes pub_host.  Names match case-insensitively.  Returns the
 * number of replacements, or -1 when memory runs out. */
long mp_http_rewrite(const struct mp_http_names *nm, const uint8_t *in, size_t n,
                     struct mp_buf *out);
#endif
