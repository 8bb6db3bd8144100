/* MapiSequence across side requests; see mhseq.h. */
#include "transport/mapihttp/mhseq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/http/msg.h"
#include "transport/mapihttp/cookies.h"

#define SEQ_ENTRIES 256

struct mp_mh_seqmap {
    struct ent {
        char ctx[MP_MH_COOKIE_MAX];
        char client[MP_MH_SEQ_MAX], up[MP_MH_SEQ_MAX];
    } e[SEQ_ENTRIES];
    size_t n, next;
};

/* "name=value" within a cookie header value (pairs separated by ';' in a
 * request, the first pair of a Set-Cookie): the value's span. */
static const char *find_pair(const char *v, size_t len, const char *name, bool first_only,
                             size_t *vl)
{
    size_t nl = strlen(name), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ';'))
            i++;
        size_t start = i;
        while (i < len && v[i] != ';')
            i++;
        if (i - start > nl && !strncmp(v + start, name, nl) && v[start + nl] == '=') {
            *vl = i - start - nl - 1;
            return v + start + nl + 1;
        }
        if (first_only)
            break;
    }
    return NULL;
}

int mp_mh_seq_get(const struct mp_http_msg *m, bool response, char *out, size_t cap)
{
    const char *hn = response ? "set-cookie" : "cookie";
    size_t len;
    const char *v;
    for (size_t k = 0; (v = mp_http_msg_get_nth(m, hn, k, &len)); k++) {
        size_t vl;
        const char *p = find_pair(v, len, "MapiSequence", response, &vl);
        if (p && vl < cap) {
            memcpy(out, p, vl);
            out[vl] = 0;
            return 0;
        }
    }
    return -1;
}

int mp_mh_seq_set(struct mp_http_msg *req, const char *val)
{
    /* as long as the client's cookies need (Exchange's X-BackEndCookie
     * alone can pass 1 KiB): their bytes, a "; " each, the new value */
    size_t cap = strlen(val) + 32, n = 0, len;
    const char *v;
    for (size_t k = 0; (v = mp_http_msg_get_nth(req, "cookie", k, &len)); k++)
        cap += len + 2 * (len / 2 + 1);
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    bool done = false;
    int rc = -1;
    for (size_t k = 0; (v = mp_http_msg_get_nth(req, "cookie", k, &len)); k++) {
        size_t i = 0;
        while (i < len) {
            while (i < len && (v[i] == ' ' || v[i] == ';'))
                i++;
            size_t start = i;
            while (i < len && v[i] != ';')
                i++;
            if (i == start)
                continue;
            bool seq = i - start > 13 && !strncmp(v + start, "MapiSequence=", 13);
            int w = seq ? snprintf(buf + n, cap - n, "%sMapiSequence=%s", n ? "; " : "", val)
                        : snprintf(buf + n, cap - n, "%s%.*s", n ? "; " : "", (int)(i - start),
                                   v + start);
            if (w < 0 || (size_t)w >= cap - n)
                goto out;
            n += (size_t)w;
            done |= seq;
        }
    }
    if (done) {
        mp_http_msg_del(req, "cookie");
        rc = mp_http_msg_add(req, "Cookie", buf);
    }
out:
    free(buf);
    return rc;
}

static int context_of(const struct mp_http_msg *req, char *out)
{
    size_t l;
    const char *c = mp_mh_cookie_of(req, false, &l);
    if (!c || l >= MP_MH_COOKIE_MAX)
        return -1;
    memcpy(out, c, l);
    out[l] = 0;
    return 0;
}

void mp_mh_seq_remember(struct mp_mh_seqmap **t, const struct mp_http_msg *req, const char *client,
                        const char *up)
{
    char ctx[MP_MH_COOKIE_MAX];
    if (context_of(req, ctx) || strlen(client) >= MP_MH_SEQ_MAX || strlen(up) >= MP_MH_SEQ_MAX)
        return;
    if (!*t && !(*t = calloc(1, sizeof(**t))))
        return;
    struct mp_mh_seqmap *m = *t;
    struct ent *e = NULL;
    for (size_t i = 0; i < m->n && !e; i++)
        if (!strcmp(m->e[i].ctx, ctx))
            e = &m->e[i];
    if (!e) {
        if (m->n < SEQ_ENTRIES)
            e = &m->e[m->n++];
        else
            e = &m->e[m->next++ % SEQ_ENTRIES]; /* the oldest goes */
        snprintf(e->ctx, sizeof e->ctx, "%s", ctx);
    }
    snprintf(e->client, sizeof e->client, "%s", client);
    snprintf(e->up, sizeof e->up, "%s", up);
}

bool mp_mh_seq_fix(struct mp_mh_seqmap **t, struct mp_http_msg *req)
{
    struct mp_mh_seqmap *m = *t;
    char ctx[MP_MH_COOKIE_MAX], seq[MP_MH_SEQ_MAX];
    if (!m || !m->n || context_of(req, ctx) || mp_mh_seq_get(req, false, seq, sizeof seq))
        return false;
    for (size_t i = 0; i < m->n; i++) {
        struct ent *e = &m->e[i];
        if (strcmp(e->ctx, ctx))
            continue;
        /* kept while the client sends that sequence: a request the proxy
         * answers itself (a held FastTransfer buffer) gives the client no
         * new one, so its next request carries the same again */
        if (!strcmp(e->client, seq))
            return !mp_mh_seq_set(req, e->up);
        *e = m->e[--m->n]; /* stale: the client has a newer sequence */
        return false;
    }
    return false;
}

void mp_mh_seq_free(struct mp_mh_seqmap **t)
{
    free(*t);
    *t = NULL;
}
