/* Autodiscover rewriting (doc/internals/http.md, "Autodiscover"). */
#include "transport/http/names.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* mp_buf_append, except that nothing is done for nothing (the buffer may
 * still be unallocated, and NULL + 0 is undefined). */
static int app(struct mp_buf *b, const void *p, size_t n)
{
    return n ? mp_buf_append(b, p, n) : 0;
}

static bool host_char(uint8_t c)
{
    return isalnum(c) || c == '-' || c == '_';
}

static int add_name(struct mp_http_names *nm, const char *p, size_t len)
{
    if (!len || len > 253 || nm->n == MP_HTTP_MAX_NAMES)
        return -1;
    for (size_t i = 0; i < nm->n; i++)
        if (nm->len[i] == len && !strncasecmp(nm->names[i], p, len))
            return 0;
    char *s = strndup(p, len);
    if (!s)
        return -1;
    /* keep longest first so "exch01.corp" wins over "exch01" */
    size_t at = nm->n;
    while (at > 0 && nm->len[at - 1] < len) {
        nm->names[at] = nm->names[at - 1];
        nm->len[at] = nm->len[at - 1];
        at--;
    }
    nm->names[at] = s;
    nm->len[at] = len;
    nm->n++;
    return 0;
}

int mp_http_names_init(struct mp_http_names *nm, const char *upstream, const char *extra,
                       const char *public_name)
{
    memset(nm, 0, sizeof *nm);
    if (add_name(nm, upstream, strlen(upstream)))
        goto fail;
    for (const char *s = extra ? extra : ""; *s;) {
        size_t skip = strspn(s, ", \t");
        s += skip;
        size_t l = strcspn(s, ", \t");
        if (l && add_name(nm, s, l))
            goto fail;
        s += l;
    }
    size_t pl = strlen(public_name);
    if (!pl || pl >= sizeof nm->pub_authority)
        goto fail;
    memcpy(nm->pub_authority, public_name, pl + 1);
    /* host part: "[v6]:port" keeps its brackets in URLs, not as a bare name */
    const char *colon = strrchr(public_name, ':');
    const char *rb = strrchr(public_name, ']');
    size_t hl = pl;
    if (public_name[0] == '[' && rb)
        hl = (size_t)(rb - public_name) + 1;
    else if (colon && strchr(public_name, ':') == colon)
        hl = (size_t)(colon - public_name);
    if (!hl || hl >= sizeof nm->pub_host)
        goto fail;
    memcpy(nm->pub_host, public_name, hl);
    nm->pub_host[hl] = 0;
    return 0;
fail:
    mp_http_names_free(nm);
    return -1;
}

void mp_http_names_free(struct mp_http_names *nm)
{
    for (size_t i = 0; i < nm->n; i++)
        free(nm->names[i]);
    nm->n = 0;
}

/* True when in[i..) begins a URL authority: "://" or ":\/\/" just before. */
static bool after_scheme(const uint8_t *in, size_t i)
{
    if (i >= 3 && !memcmp(in + i - 3, "://", 3))
        return true;
    if (i >= 5 && !memcmp(in + i - 5, ":\\/\\/", 5))
        return true;
    return false;
}

/* The longest name matching at in[i..) as a whole host name, or -1. */
static int match_at(const struct mp_http_names *nm, const uint8_t *in, size_t n, size_t i)
{
    if (i > 0) {
        uint8_t b = in[i - 1];
        /* '@': an e-mail address; '=': a legacy DN's "cn=NAME", which names a
         * directory object, not a host */
        if (host_char(b) || b == '.' || b == '@' || b == '=')
            return -1;
    }
    for (size_t k = 0; k < nm->n; k++) {
        size_t l = nm->len[k];
        if (l > n - i || strncasecmp((const char *)in + i, nm->names[k], l))
            continue;
        size_t e = i + l;
        /* "name.more" is another host; "name." at the end of a sentence is not */
        if (e < n && (host_char(in[e]) || (in[e] == '.' && e + 1 < n && host_char(in[e + 1]))))
            continue;
        return (int)k;
    }
    return -1;
}

/* The path of a URL whose authority ends at in[e]: up to '?', '#', a quote,
 * '<', '&' or white space; JSON's "\/" read as '/'.  "/" when empty. */
static size_t url_path(const uint8_t *in, size_t n, size_t e, char *path, size_t cap)
{
    size_t k = 0;
    for (size_t j = e; j < n && k + 1 < cap; j++) {
        uint8_t c = in[j];
        if (c == '\\' && j + 1 < n && in[j + 1] == '/') {
            path[k++] = '/';
            j++;
            continue;
        }
        if (c == '?' || c == '#' || c == '"' || c == '\'' || c == '<' || c == '&' || c == '\\' ||
            isspace(c))
            break;
        path[k++] = (char)c;
    }
    if (!k)
        path[k++] = '/';
    path[k] = 0;
    return k;
}

/* The XML element "<Tag ...>URL...</Tag>" whose content begins with the URL
 * whose host is at in[i]: [*a, *b), with its line's indentation and line
 * end.  False when the URL is not an element's content (an attribute, JSON,
 * a header) or the element began before in[from]. */
static bool element_around(const uint8_t *in, size_t n, size_t i, size_t from, size_t *a, size_t *b)
{
    if (i < 3 || memcmp(in + i - 3, "://", 3))
        return false;
    size_t ss = i - 3;
    while (ss > 0 &&
           (isalnum(in[ss - 1]) || in[ss - 1] == '+' || in[ss - 1] == '.' || in[ss - 1] == '-'))
        ss--;
    if (ss == 0 || in[ss - 1] != '>')
        return false;
    size_t t = ss - 1;
    while (t > from && in[t] != '<')
        t--;
    if (in[t] != '<' || t < from || t + 1 >= ss || in[t + 1] == '/')
        return false;
    size_t tl = 0;
    while (t + 1 + tl < ss - 1 && in[t + 1 + tl] != ' ' && in[t + 1 + tl] != '>')
        tl++;
    if (!tl || tl > 64)
        return false;
    char close[70];
    int cl = snprintf(close, sizeof close, "</%.*s>", (int)tl, (const char *)in + t + 1);
    const uint8_t *c = memmem(in + i, n - i, close, (size_t)cl);
    if (!c)
        return false;
    *a = t;
    *b = (size_t)(c - in) + (size_t)cl;
    size_t w = t;
    while (w > from && (in[w - 1] == ' ' || in[w - 1] == '\t'))
        w--;
    if (w == from || in[w - 1] == '\n') { /* alone on its line: the line goes */
        *a = w;
        if (*b < n && in[*b] == '\r')
            (*b)++;
        if (*b < n && in[*b] == '\n')
            (*b)++;
    }
    return true;
}

long mp_http_rewrite(const struct mp_http_names *nm, const uint8_t *in, size_t n,
                     struct mp_buf *out)
{
    long count = 0;
    if (!n)
        return 0;
    size_t copied = 0; /* in[copied .. i) is still to be appended */
    for (size_t i = 0; i < n; i++) {
        if (!host_char(in[i]))
            continue;
        int k = match_at(nm, in, n, i);
        if (k < 0)
            continue;
        size_t e = i + nm->len[k];
        const char *rep = nm->pub_host;
        if (after_scheme(in, i)) {
            rep = nm->pub_authority;
            if (e < n && in[e] == ':') { /* the upstream's port goes too */
                size_t d = e + 1;
                while (d < n && d - e <= 5 && isdigit(in[d]))
                    d++;
                if (d > e + 1 && (d == n || !isdigit(in[d])))
                    e = d;
            }
            char path[512];
            size_t pl = url_path(in, n, e, path, sizeof path);
            if (nm->relayed && !nm->relayed(nm->relayed_arg, path, pl)) {
                size_t a, b; /* a path the proxy refuses: not sent there */
                if (nm->drop_unrelayed && element_around(in, n, i, copied, &a, &b)) {
                    if (app(out, in + copied, a - copied))
                        return -1;
                    count++;
                    copied = b;
                    i = b - 1;
                } else {
                    i = e - 1;
                }
                continue;
            }
        }
        if (app(out, in + copied, i - copied) || app(out, rep, strlen(rep)))
            return -1;
        count++;
        copied = e;
        i = e - 1;
    }
    if (app(out, in + copied, n - copied))
        return -1;
    return count;
}
