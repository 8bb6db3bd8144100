/* MAPI/HTTP session cookies (cookies.h). */
#include "transport/mapihttp/cookies.h"
#include "transport/mapihttp/mhseq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "core/workers.h"
#include "event/loop.h"
#include "chain/chain.h"
#include "ops/metrics.h"
#include "transport/http/msg.h"

#define MAX_MH_SESSIONS 4096u
#define MH_SESSION_IDLE_MS (2u * 3600u * 1000u) /* without the server's X-ExpirationInfo */
#define MH_EXPIRY_MIN_MS 1000u                  /* X-ExpirationInfo below or above: ignored */
#define MH_EXPIRY_MAX_MS (24u * 3600u * 1000u)
#define MH_EXPIRY_MARGIN_MS 60000u /* beyond the server's: clocks, a request in flight */
#define MH_PLACE_STEP 8            /* sessions one is moved past to keep the list by deadline */

/* A MAPI/HTTP session for the module chain: the upstream's cookie names
 * it, whatever client connection a request comes on.  In a hash by cookie
 * and on a list by deadline (last use plus its lifetime, soonest first):
 * idle ones go from the list's head, a few at a time, and nothing walks
 * every session. */
struct mp_mh_sess {
    struct mp_mh_sess *next;          /* in its bucket */
    struct mp_mh_sess *older, *newer; /* by last use */
    uint32_t hash;
    char cookie[MP_MH_COOKIE_MAX];
    size_t len;
    struct mp_session *ses;
    uint64_t last_ms;
    uint64_t life_ms; /* unused this long it goes (mp_mh_session_life_ms) */
};

static uint32_t mh_hash(const char *c, size_t n)
{
    uint32_t x = 2166136261u; /* FNV-1a: the upstream chooses the cookies */
    for (size_t i = 0; i < n; i++)
        x = (x ^ (uint8_t)c[i]) * 16777619u;
    return x;
}

/* The value of cookie `name` in a Cookie header ("a=b; MapiContext=v"). */
static const char *cookie_in(const char *v, size_t vl, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < vl;) {
        while (i < vl && (v[i] == ' ' || v[i] == ';'))
            i++;
        size_t j = i;
        while (j < vl && v[j] != ';')
            j++;
        if (j - i > nl && !strncmp(v + i, name, nl) && v[i + nl] == '=') {
            *len = j - i - nl - 1;
            return v + i + nl + 1;
        }
        i = j;
    }
    return NULL;
}

const char *mp_mh_cookie_of(const struct mp_http_msg *m, bool response, size_t *len)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *hd = &m->h[i];
        const char *nm = (const char *)m->raw.data + hd->name_off;
        const char *want = response ? "set-cookie" : "cookie";
        if (hd->name_len != strlen(want) || strncasecmp(nm, want, hd->name_len))
            continue;
        const char *v = (const char *)m->raw.data + hd->val_off;
        size_t vl = hd->val_len;
        if (response) { /* "MapiContext=v; Path=..." */
            size_t k = 0;
            while (k < vl && v[k] != ';')
                k++;
            vl = k;
        }
        /* Exchange's MapiContext; grommunio's gromox calls it "sid" */
        const char *c = cookie_in(v, vl, "MapiContext", len);
        if (!c)
            c = cookie_in(v, vl, "sid", len);
        if (c && *len && *len < MP_MH_COOKIE_MAX)
            return c;
    }
    return NULL;
}

/* ---- module sessions by cookie ---- */

static void mh_drop(struct mp_mh_cookies *k, struct mp_mh_sess *m);

static bool mh_expired(const struct mp_mh_sess *m, uint64_t now)
{
    return now - m->last_ms > m->life_ms;
}

/* The cookie's session; NULL when absent (an idle one found is dropped:
 * the server forgot it, whether or not mh_expire reached it yet). */
static struct mp_mh_sess *mh_find(struct mp_mh_cookies *k, const char *c, size_t n)
{
    if (!k->mh)
        return NULL;
    uint32_t h = mh_hash(c, n);
    for (struct mp_mh_sess *m = k->mh[h % MP_MH_BUCKETS]; m; m = m->next)
        if (m->hash == h && m->len == n && !memcmp(m->cookie, c, n)) {
            if (!mh_expired(m, mp_now_ms()))
                return m;
            mh_drop(k, m);
            return NULL;
        }
    return NULL;
}

static void mh_unlink(struct mp_mh_cookies *k, struct mp_mh_sess *m)
{
    if (m->older)
        m->older->newer = m->newer;
    else
        k->oldest = m->newer;
    if (m->newer)
        m->newer->older = m->older;
    else
        k->newest = m->older;
    m->older = m->newer = NULL;
}

/* m at the list's tail, or before the last few sessions whose deadline
 * is later (each has its own lifetime): by deadline, soonest first.  At
 * most MH_PLACE_STEP are passed: a session may go late, never early. */
static void mh_link(struct mp_mh_cookies *k, struct mp_mh_sess *m)
{
    struct mp_mh_sess *after = k->newest;
    for (int i = 0;
         i < MH_PLACE_STEP && after && after->last_ms + after->life_ms > m->last_ms + m->life_ms;
         i++)
        after = after->older;
    m->older = after;
    m->newer = after ? after->newer : k->oldest;
    if (m->newer)
        m->newer->older = m;
    else
        k->newest = m;
    if (after)
        after->newer = m;
    else
        k->oldest = m;
}

static void mh_drop(struct mp_mh_cookies *k, struct mp_mh_sess *m)
{
    struct mp_mh_sess **pp = &k->mh[m->hash % MP_MH_BUCKETS];
    while (*pp != m)
        pp = &(*pp)->next;
    *pp = m->next;
    mh_unlink(k, m);
    mp_session_unref(m->ses);
    free(m);
    k->n_mh--;
}

/* Sessions idle for their lifetime go, the soonest first; at most max of
 * them (SIZE_MAX: all there are). */
static void mh_expire(struct mp_mh_cookies *k, size_t max)
{
    uint64_t now = mp_now_ms();
    for (size_t i = 0; i < max && k->oldest && mh_expired(k->oldest, now); i++)
        mh_drop(k, k->oldest);
}

uint64_t mp_mh_session_life_ms(const struct mp_http_msg *resp)
{
    size_t n;
    const char *v = resp ? mp_http_msg_get(resp, "X-ExpirationInfo", &n) : NULL;
    uint64_t ms = 0;
    size_t i = 0;
    while (v && i < n && v[i] == ' ')
        i++;
    size_t d = i;
    for (; v && i < n && v[i] >= '0' && v[i] <= '9' && ms <= MH_EXPIRY_MAX_MS; i++)
        ms = ms * 10 + (uint64_t)(v[i] - '0');
    while (v && i < n && v[i] == ' ')
        i++;
    if (!v || i == d || i != n || ms < MH_EXPIRY_MIN_MS || ms > MH_EXPIRY_MAX_MS)
        return MH_SESSION_IDLE_MS; /* none, not a number, or absurd */
    return ms + MH_EXPIRY_MARGIN_MS;
}

size_t mp_mh_sessions_sweep(struct mp_mh_cookies *k)
{
    mh_expire(k, SIZE_MAX); /* only the idle ones are visited */
    return k->n_mh;
}

bool mp_mh_has_session(struct mp_mh_cookies *k, const struct mp_http_msg *req)
{
    size_t n;
    const char *c = k->n_mh ? mp_mh_cookie_of(req, false, &n) : NULL;
    return c && mh_find(k, c, n);
}

struct mp_session *mp_mh_session_for(struct mp_mh_cookies *k, struct mp_modules *mods,
                                     const struct mp_http_msg *req)
{
    size_t n;
    const char *c = mp_mh_cookie_of(req, false, &n);
    struct mp_mh_sess *m = c ? mh_find(k, c, n) : NULL;
    if (m) {
        m->last_ms = mp_now_ms();
        mh_unlink(k, m);
        mh_link(k, m);
        mp_session_ref(m->ses);
        return m->ses;
    }
    struct mp_session *ses = mp_session_new(mods);
    /* 0x40000000 and up: apart from the RPC transport's association ids;
     * each worker its own (below 0x40000000: the worker modulo their count) */
    unsigned nw = mp_workers_count();
    if (ses)
        ses->id = (uint32_t)(0x40000000u | ((++k->next_id * nw + mp_worker_self()) & 0x3fffffffu));
    return ses;
}

void mp_mh_session_register(struct mp_mh_cookies *k, const struct mp_http_msg *resp,
                            struct mp_session *ses)
{
    size_t n;
    const char *c = mp_mh_cookie_of(resp, true, &n);
    if (!c || !ses || mh_find(k, c, n))
        return;
    mh_expire(k, 8);
    if (k->n_mh >= MAX_MH_SESSIONS) {
        /* every one is a live session's: the new one is not kept (its
         * requests get a module session each), no live one is dropped */
        uint64_t now = mp_now_ms();
        k->full_unlogged++;
        mp_metrics_affinity("mapihttp-modules", true);
        if (!k->full_logged_ms || now - k->full_logged_ms >= 10000) {
            mp_warn("MAPI/HTTP module sessions: %zu live on this worker (at most %u): %llu new "
                    "session%s not kept since the last warning (each of its requests gets a new "
                    "module session)",
                    k->n_mh, MAX_MH_SESSIONS, (unsigned long long)k->full_unlogged,
                    k->full_unlogged == 1 ? "" : "s");
            k->full_logged_ms = now;
            k->full_unlogged = 0;
        }
        return;
    }
    if (!k->mh && !(k->mh = calloc(MP_MH_BUCKETS, sizeof *k->mh)))
        return;
    struct mp_mh_sess *m = calloc(1, sizeof(*m));
    if (!m)
        return;
    memcpy(m->cookie, c, n);
    m->len = n;
    m->hash = mh_hash(c, n);
    m->ses = ses;
    mp_session_ref(m->ses);
    m->last_ms = mp_now_ms();
    m->life_ms = mp_mh_session_life_ms(resp);
    m->next = k->mh[m->hash % MP_MH_BUCKETS];
    k->mh[m->hash % MP_MH_BUCKETS] = m;
    mh_link(k, m);
    k->n_mh++;
}

void mp_mh_session_forget(struct mp_mh_cookies *k, const struct mp_http_msg *req)
{
    size_t n;
    const char *c = mp_mh_cookie_of(req, false, &n);
    struct mp_mh_sess *m = c ? mh_find(k, c, n) : NULL;
    if (m)
        mh_drop(k, m);
    if (c && k->own)
        mp_aff_unpin(&k->own->t, c, n);
}

/* ---- session cookies bound to identities (doc/security.md) ---- */

/* Cookies unused for two hours go; a live session's (issued, not yet
 * Disconnect or Unbind) is pinned (for the server's X-ExpirationInfo and a
 * margin, or two hours: mp_mh_session_life_ms): beyond mapiproxy:affinity table size
 * only ended sessions' go, the least recently used first, and when every
 * entry is a live session's a new cookie is not remembered (strict: its
 * requests are answered as unknown) with a warning (core/affinity.c). */
static struct mp_mh_owners *owners(struct mp_mh_cookies *k)
{
    if (!k->own && (k->own = calloc(1, sizeof *k->own))) { /* no temporary: the buckets are big */
        k->own->refs = 1;
        pthread_mutex_init(&k->own->t.mu, NULL);
        k->own->t.name = "mapihttp-owners";
        k->own->t.idle_ms = k->own->t.pin_idle_ms = MH_SESSION_IDLE_MS;
        mp_aff_use(&k->own->t, 1);
        if (k->aff_max)
            mp_aff_set_max(&k->own->t, k->aff_max);
    }
    return k->own;
}

void mp_mh_cookies_share_owners(struct mp_mh_cookies *to, struct mp_mh_cookies *from)
{
    if (to->own || !owners(from))
        return;
    to->own = from->own;
    to->own->refs++;
    if (to->aff_max) /* a reload's mapiproxy:affinity table size */
        mp_aff_set_max(&to->own->t, to->aff_max);
}

void mp_mh_cookie_issued(struct mp_mh_cookies *kk, const struct mp_http_msg *resp, const char *who)
{
    size_t n;
    const char *c = mp_mh_cookie_of(resp, true, &n);
    struct mp_mh_owners *k = c && who[0] ? owners(kk) : NULL;
    if (k && !mp_aff_set_str(&k->t, c, n, who))
        mp_aff_pin_for(&k->t, c, n, 0, mp_mh_session_life_ms(resp));
}

/* May this session cookie be used by who?  Not when it belongs to another
 * identity, nor, with strict, when the proxy never saw it issued. */
static bool cookie_ok(struct mp_mh_owners *k, const char *c, size_t n, const char *who, bool strict,
                      char *owner, size_t on)
{
    char o[MP_MH_WHO_MAX];
    if (!k || n >= MP_MH_COOKIE_MAX || !mp_aff_get_str(&k->t, c, n, o, sizeof o)) {
        owner[0] = 0;
        return !strict;
    }
    if (!strcasecmp(o, who))
        return true;
    snprintf(owner, on, "%s", o);
    return false;
}

bool mp_mh_cookies_allowed(struct mp_mh_cookies *k, const struct mp_http_msg *m, const char *who,
                           bool strict, char *owner, size_t on)
{
    if (!strict && !who[0])
        return true; /* pass-through, nobody the proxy can name: the upstream decides */
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *hd = &m->h[i];
        if (hd->name_len != 6 || strncasecmp((const char *)m->raw.data + hd->name_off, "cookie", 6))
            continue;
        const char *v = (const char *)m->raw.data + hd->val_off;
        size_t vl = hd->val_len;
        for (size_t p = 0; p < vl;) {
            while (p < vl && (v[p] == ' ' || v[p] == ';'))
                p++;
            size_t e = p;
            while (e < vl && v[e] != ';')
                e++;
            const char *eq = memchr(v + p, '=', e - p);
            if (eq) {
                size_t nl = (size_t)(eq - (v + p));
                while (nl && v[p + nl - 1] == ' ')
                    nl--;
                bool ours = (nl == 11 && !strncasecmp(v + p, "MapiContext", 11)) ||
                            (nl == 3 && !strncasecmp(v + p, "sid", 3));
                const char *val = eq + 1;
                size_t len = (size_t)(v + e - val);
                while (len && *val == ' ')
                    val++, len--;
                while (len && val[len - 1] == ' ')
                    len--;
                if (ours && len && !cookie_ok(k->own, val, len, who, strict, owner, on))
                    return false;
            }
            p = e;
        }
    }
    return true;
}

void mp_mh_cookies_free(struct mp_mh_cookies *k)
{
    mp_mh_seq_free(&k->seq);
    while (k->oldest)
        mh_drop(k, k->oldest);
    free(k->mh);
    k->mh = NULL;
    struct mp_mh_owners *w = k->own;
    k->own = NULL;
    if (!w || --w->refs)
        return;
    mp_aff_use(&w->t, -1); /* emptied */
    pthread_mutex_destroy(&w->t.mu);
    free(w);
}
