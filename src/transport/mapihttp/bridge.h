/* The MAPI/HTTP bridge: what the HTTPS front does with a MAPI/HTTP request
 * (POST /mapi/emsmdb or /mapi/nspi) beyond relaying it.
 *
 *  - A request type a module wants (mp_modules_want on its RPC twin) is
 *    collected, then handed to the module chain as a call (mhcall.h); the
 *    chain relays it, answers it or fails it.  The upstream's meta-tags
 *    (PROCESSING, PENDING) stream on to the client at once; its body is
 *    collected and given to the chain.
 *  - GetMailboxUrl / GetAddressBookUrl: the DN in the request is mapped
 *    back to the upstream's names (rewrite module) and the URL in the
 *    answer rewritten to the proxy.
 *  - The request's session cookie (cookies.h) picks its module session;
 *    a cookie of another identity is refused.
 *
 * The per-request state below lives in the front's connection; the state
 * across connections in struct mp_mh_cookies.  The functions take the
 * front's connection (transport/http/hconn.h): the bridge writes the
 * client's response and the upstream's request into its legs. */
#ifndef MP_MAPIHTTP_BRIDGE_H
#define MP_MAPIHTTP_BRIDGE_H
#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "transport/mapihttp/stream.h"

struct hconn;
struct mp_http;
struct mp_mh_call;
struct mp_session;

struct mp_mh_req {
    bool mod;                /* this request goes through the bridge */
    bool mod_resp;           /* its response is being collected */
    bool head;               /* the client's response head is out */
    bool url;                /* GetMailboxUrl/GetAddressBookUrl: its URL is rewritten */
    int kind;                /* enum mp_mh_kind */
    struct mp_mh_call *mc;   /* the chain's call, or NULL */
    struct mp_session *mses; /* the module session of this request */
    struct mp_http *gh;      /* whose sessions and modules: the front of the generation
                                the session began in (a reload), or NULL */
    struct mp_buf mreq;      /* the request body */
    size_t limit;            /* the most of it held for its request type */
    size_t held;             /* this connection's part of the front's held bytes */
    struct mp_mh_stream mst; /* the response entity */
    struct mp_buf mraw;      /* the response entity as received */
    unsigned proc, pend;     /* meta-tags passed on to the client */
    uint32_t http_rc;        /* X-ResponseCode of the head (gromox puts it only there) */
    bool side_http;          /* a side request's answer is an HTTP error (http_rc) */
    unsigned relays;         /* upstream requests for it (side requests: mhseq.h) */
    char client_seq[128];    /* the MapiSequence the client's head set ("" none) */
};

/* Does the bridge take this request (its head is complete)?  Sets kind. */
bool mp_mhb_wanted(struct hconn *s, const http_parser *p);
/* The head of a taken request: 0 to collect its body (limit set), or 413
 * when its Content-Length is over what is held for its type; 1 when the
 * request is relayed as it streams (only its answer is rewritten). */
int mp_mhb_request_head(struct hconn *s, const http_parser *p);
/* n more bytes of a body held: 0, 413 (over limit), 503 (over mapiproxy:http
 * held body budget, all connections together). */
int mp_mhb_hold(struct hconn *s, size_t have, size_t n, size_t limit);
/* The request body is complete: into the chain, or relayed as collected.
 * 0, or -1 (the upstream's head could not be built: 502). */
int mp_mhb_request_done(struct hconn *s);
/* The upstream's response head to a bridge request: 1 taken (collected),
 * 0 relayed as it is (the bridge let go), -1 failed. */
int mp_mhb_resp_head(struct hconn *s, http_parser *p);
int mp_mhb_resp_body(struct hconn *s, const char *at, size_t len);
void mp_mhb_resp_done(struct hconn *s);
/* Forgets the request's bridge state (the call is detached, no callback). */
void mp_mhb_end(struct hconn *s);
/* The identity check of the request's session cookies: 1 when the proxy
 * answers (X-ResponseCode 10), 0 to go on (the cookie may be dropped). */
int mp_mhb_cookie_check(struct hconn *s);
/* A 2xx answer on /mapi/: the cookie it sets belongs to the request's
 * identity; a Disconnect or Unbind the chain did not take ends its session. */
void mp_mhb_cookie_issued(struct hconn *s);
#endif
