/* What serves a request path on the HTTPS front: a table of path prefixes,
 * looked up in order, first match wins.
 *
 *   /autodiscover/autodiscover.xml|.json   AUTOD    relayed, answer rewritten
 *   /mapi/emsmdb, /mapi/nspi               RELAY    relayed (the MAPI/HTTP
 *                                                   bridge may take a request)
 *   /autodiscover/..., /rpc/...            RELAY
 *   mapiproxy:http relay paths             RELAY
 *   anything (mapiproxy:http relay all)    RELAY
 *   otherwise                              404 from the proxy
 *
 * A transport that serves a path itself (RPC over HTTP: RPC_IN_DATA and
 * RPC_OUT_DATA on /rpc/rpcproxy.dll) adds a HANDLER route in front of
 * these with mp_http_route_add(): when a request head for it is complete,
 * the front hands the connection over (struct mp_http_handover) and forgets
 * it. */
#ifndef MP_HTTP_ROUTE_H
#define MP_HTTP_ROUTE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "net/tls.h"

struct mp_config;
struct mp_http_msg;

/* A connection handed over to a path handler.  The handler owns fd and tls
 * from the call on (also when it fails: it closes them).  req, method and
 * rest are valid during the call only: the request head as the front
 * parsed it (target normalised), the bytes the client sent after the head
 * (the first part of a body), which the handler must consume as if read. */
struct mp_http_handover {
    int fd; /* non-blocking, not registered with the loop */
    struct mp_tls tls;
    const char *peer;   /* "address:port" */
    uint64_t id;        /* the front's connection number, for log lines */
    const char *method; /* as the client sent it ("RPC_IN_DATA") */
    const char *user;   /* who logged on to the proxy (auth = terminate), else "" */
    const char *www;    /* a WWW-Authenticate value for the handler's answer (the Negotiate
                           acceptor's mutual token), else "" */
    const struct mp_http_msg *req;
    const uint8_t *rest;
    size_t rest_len;
    bool keepalive;
};
/* 0: taken.  -1: refused (fd and tls closed by the handler, nothing sent). */
typedef int (*mp_http_take_fn)(void *arg, struct mp_http_handover *ho);

enum mp_http_route_kind {
    MP_HTTP_ROUTE_RELAY,   /* relayed to the upstream */
    MP_HTTP_ROUTE_AUTOD,   /* relayed, the answer's upstream names rewritten */
    MP_HTTP_ROUTE_HANDLER, /* handed to take() */
};

struct mp_http_route {
    char *prefix;  /* "" with any_tail: every path */
    bool any_tail; /* a prefix ending in '/': any path under it; else the
                    * exact path, or one with '/' or '?' after it */
    enum mp_http_route_kind kind;
    mp_http_take_fn take;
    void *arg;
};

#define MP_HTTP_MAX_EXT_METHODS 4
#define MP_HTTP_EXT_METHOD_MAX 24

struct mp_http_routes {
    struct mp_http_route *r;
    size_t n, cap;
    size_t n_handlers; /* handler routes sit in front of the built-in ones */
    /* request methods http-parser does not know (RPC_IN_DATA, RPC_OUT_DATA):
     * the front parses such a head as a POST and hands it to a handler
     * route, or answers 501 on another path */
    char ext[MP_HTTP_MAX_EXT_METHODS][MP_HTTP_EXT_METHOD_MAX];
    size_t n_ext;
};

/* The built-in table and mapiproxy:http relay paths / relay all.  0 or -1. */
int mp_http_routes_init(struct mp_http_routes *t, const struct mp_config *cfg);
void mp_http_routes_free(struct mp_http_routes *t);
/* A handler route before every built-in one; ext_methods: the methods
 * http-parser does not know that it takes, space-separated (or NULL).  0, or
 * -1 (out of memory, too many methods, a method longer than 23 or shorter
 * than 4 characters). */
int mp_http_routes_add_handler(struct mp_http_routes *t, const char *prefix, bool any_tail,
                               const char *ext_methods, mp_http_take_fn take, void *arg);
/* The route of a normalised request-target (path and query), or NULL. */
const struct mp_http_route *mp_http_route_find(const struct mp_http_routes *t, const char *url,
                                               size_t len);
#endif
