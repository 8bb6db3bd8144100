/* MAPI/HTTP session cookies (MapiContext; gromox calls it "sid"), the state
 * the bridge keeps across client connections:
 *
 *  - the module session each cookie names (a MAPI/HTTP session may move
 *    from one client connection to another; its module state follows the
 *    cookie), at most 4,096 per worker (a new one is not kept while that
 *    many are live, with a warning), idle ones dropped when the server's
 *    X-ExpirationInfo (and a minute) has passed, or two hours without it,
 *    Disconnect/Unbind ending one;
 *  - the identity each cookie was issued to (doc/security.md): only that
 *    identity may present it, at most 65,536 remembered.
 *
 * Nothing here knows about connections: the front passes the messages and
 * the identity of the request. */
#ifndef MP_MAPIHTTP_COOKIES_H
#define MP_MAPIHTTP_COOKIES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/affinity.h"

struct mp_http_msg;
struct mp_modules;
struct mp_session;

#define MP_MH_COOKIE_MAX 128 /* longest cookie value kept, NUL included */
#define MP_MH_WHO_MAX 520    /* longest identity, NUL included */
#define MP_MH_BUCKETS 1024u

/* Cookies and who they belong to (an affinity table's strings,
 * core/affinity.h): one table shared by the HTTPS fronts of every
 * configuration generation (a reload does not forget who a cookie was
 * issued to); the last front to go frees it. */
struct mp_mh_owners {
    unsigned refs;
    struct mp_aff t;
};

struct mp_mh_cookies {
    struct mp_mh_sess **mh; /* module sessions by cookie: MP_MH_BUCKETS, made on the first */
    struct mp_mh_sess *oldest, *newest; /* the same by last use */
    size_t n_mh;
    uint64_t full_logged_ms, full_unlogged; /* new sessions not kept (MAX_MH_SESSIONS live) */
    uint64_t next_id;                       /* ids of new module sessions */
    struct mp_mh_owners *own;               /* made on the first cookie issued, or shared */
    struct mp_mh_seqmap *seq;               /* MapiSequence after side requests (mhseq.h) */
    size_t aff_max;                         /* mapiproxy:affinity table size, for own */
};

void mp_mh_cookies_free(struct mp_mh_cookies *k);
/* to (a new generation's, with no owners yet) shares from's owner table,
 * at most to->aff_max entries from now on (a reload's table size). */
void mp_mh_cookies_share_owners(struct mp_mh_cookies *to, struct mp_mh_cookies *from);
/* Is there a module session for the request's cookie? */
bool mp_mh_has_session(struct mp_mh_cookies *k, const struct mp_http_msg *req);
/* Drops the module sessions idle for their lifetime; how many are left. */
size_t mp_mh_sessions_sweep(struct mp_mh_cookies *k);

/* MapiContext (or sid) from the request's Cookie headers (response false)
 * or the response's Set-Cookie headers; NULL when there is none that fits. */
const char *mp_mh_cookie_of(const struct mp_http_msg *m, bool response, size_t *len);
/* How long the session of resp lives unused: the server's X-ExpirationInfo
 * (milliseconds, MS-OXCMAPIHTTP) and a minute, or two hours when it has
 * none or one below a second or above a day. */
uint64_t mp_mh_session_life_ms(const struct mp_http_msg *resp);

/* The module session of a request: the one its cookie names (a new
 * reference), or a new session.  NULL when memory runs out. */
struct mp_session *mp_mh_session_for(struct mp_mh_cookies *k, struct mp_modules *mods,
                                     const struct mp_http_msg *req);
/* The upstream named the session ses in resp (Set-Cookie): remember it. */
void mp_mh_session_register(struct mp_mh_cookies *k, const struct mp_http_msg *resp,
                            struct mp_session *ses);
/* Disconnect / Unbind: the session the request's cookie names ends (its
 * owner entry is no longer pinned). */
void mp_mh_session_forget(struct mp_mh_cookies *k, const struct mp_http_msg *req);

/* The upstream set a session cookie in resp: it belongs to who ("" : to
 * nobody the proxy can name, not remembered), pinned until the session
 * ends (mp_mh_session_forget) or is unused for its lifetime
 * (mp_mh_session_life_ms). */
void mp_mh_cookie_issued(struct mp_mh_cookies *k, const struct mp_http_msg *resp, const char *who);
/* May the request of who use every MapiContext and sid cookie it carries?
 * A cookie of another identity is refused; with strict (the proxy
 * terminates logons) so is one the proxy never saw issued.  false with
 * owner set (the cookie's owner, "" if unknown) when one is refused. */
bool mp_mh_cookies_allowed(struct mp_mh_cookies *k, const struct mp_http_msg *req, const char *who,
                           bool strict, char *owner, size_t on);
#endif
