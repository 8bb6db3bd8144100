/* The HTTPS front's route table (route.h). */
#include "transport/http/route.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"

static bool path_is(const char *path, size_t len, const char *prefix, bool any_tail)
{
    size_t pl = strlen(prefix);
    if (len < pl || strncasecmp(path, prefix, pl))
        return false;
    if (any_tail || len == pl)
        return true;
    return path[pl] == '/' || path[pl] == '?';
}

static int insert(struct mp_http_routes *t, size_t at, const char *prefix, size_t pl, bool any_tail,
                  enum mp_http_route_kind kind)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct mp_http_route *r = realloc(t->r, cap * sizeof *r);
        if (!r)
            return -1;
        t->r = r;
        t->cap = cap;
    }
    char *p = strndup(prefix, pl);
    if (!p)
        return -1;
    memmove(&t->r[at + 1], &t->r[at], (t->n - at) * sizeof *t->r);
    t->r[at] = (struct mp_http_route){.prefix = p, .any_tail = any_tail, .kind = kind};
    t->n++;
    return 0;
}

int mp_http_routes_init(struct mp_http_routes *t, const struct mp_config *cfg)
{
    static const struct {
        const char *prefix;
        bool any_tail;
        enum mp_http_route_kind kind;
    } builtin[] = {
        {"/autodiscover/autodiscover.xml", false, MP_HTTP_ROUTE_AUTOD},
        {"/autodiscover/autodiscover.json", false, MP_HTTP_ROUTE_AUTOD},
        {"/mapi/emsmdb", false, MP_HTTP_ROUTE_RELAY},
        {"/mapi/nspi", false, MP_HTTP_ROUTE_RELAY},
        {"/autodiscover/", true, MP_HTTP_ROUTE_RELAY},
        {"/rpc/", true, MP_HTTP_ROUTE_RELAY},
    };
    *t = (struct mp_http_routes){0};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
        if (insert(t, t->n, builtin[i].prefix, strlen(builtin[i].prefix), builtin[i].any_tail,
                   builtin[i].kind))
            return -1;
    /* mapiproxy:http relay paths: a prefix ending in '/' takes any tail */
    for (const char *s = cfg->http_relay_paths; *s;) {
        s += strspn(s, ", \t");
        size_t l = strcspn(s, ", \t");
        if (l && l < 256 && insert(t, t->n, s, l, s[l - 1] == '/', MP_HTTP_ROUTE_RELAY))
            return -1;
        s += l;
    }
    if (cfg->http_relay_all && insert(t, t->n, "", 0, true, MP_HTTP_ROUTE_RELAY))
        return -1;
    return 0;
}

void mp_http_routes_free(struct mp_http_routes *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->r[i].prefix);
    free(t->r);
    *t = (struct mp_http_routes){0};
}

int mp_http_routes_add_handler(struct mp_http_routes *t, const char *prefix, bool any_tail,
                               const char *ext_methods, mp_http_take_fn take, void *arg)
{
    for (const char *m = ext_methods ? ext_methods : ""; *m;) {
        m += strspn(m, " ");
        size_t l = strcspn(m, " ");
        if (!l)
            break;
        if (t->n_ext == MP_HTTP_MAX_EXT_METHODS || l < 4 || l >= MP_HTTP_EXT_METHOD_MAX)
            return -1;
        memcpy(t->ext[t->n_ext], m, l);
        t->ext[t->n_ext++][l] = 0;
        m += l;
    }
    if (insert(t, t->n_handlers, prefix, strlen(prefix), any_tail, MP_HTTP_ROUTE_HANDLER))
        return -1;
    t->r[t->n_handlers].take = take;
    t->r[t->n_handlers].arg = arg;
    t->n_handlers++;
    return 0;
}

const struct mp_http_route *mp_http_route_find(const struct mp_http_routes *t, const char *url,
                                               size_t len)
{
    size_t pl = 0;
    while (pl < len && url[pl] != '?' && url[pl] != '#')
        pl++;
    for (size_t i = 0; i < t->n; i++)
        if (path_is(url, pl, t->r[i].prefix, t->r[i].any_tail))
            return &t->r[i];
    return NULL;
}
