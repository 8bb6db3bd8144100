/* Inside the HTTPS front: one client connection (struct hconn) and what
 * the front's files share about it.  Not for other transports: they see
 * front.h (and, for a path handler, route.h).
 *
 * The state is split by concern:
 *   struct leg          one leg (client or upstream): its struct mp_conn
 *   struct hconn        the connection, its deadlines and the current
 *                       exchange (request head, response head, framing)
 *   struct hup          the proxy's logon: the client's (termination) and
 *                       the proxy's own NTLM handshake upstream (upauth.c)
 *   struct mp_mh_req    the MAPI/HTTP bridge's part of the current request
 *                       (src/transport/mapihttp/bridge.h)
 *   struct autod        an Autodiscover answer being collected (exchange.c)
 *
 * Files: front.c (listeners, connections, legs, pump, timers, upstream
 * connect, setup), exchange.c (parsers' callbacks, routing, the proxy's own
 * answers, the request log), upauth.c (logons), and the bridge. */
#ifndef MP_HTTP_HCONN_H
#define MP_HTTP_HCONN_H
#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/config.h"
#include "event/loop.h"
#include "net/conn.h"
#include "net/conn_tls.h"
#include "transport/http/front.h"
#include "transport/http/hauth.h"
#include "transport/http/msg.h"
#include "transport/http/names.h"
#include "transport/http/route.h"
#include "transport/mapihttp/bridge.h"
#include "transport/mapihttp/cookies.h"

#define READ_CHUNK 16384
#define MAX_PARKED (64u << 10) /* client bytes read ahead while a request waits */
/* A request body must average this many bytes a second, after a grace of
 * mapiproxy:http header timeout, or the request gets 408 (doc/internals/http.md). */
#define BODY_MIN_RATE 4096u

struct hconn;

/* One leg: the client's connection or the upstream's, on the connection
 * every transport uses (net/conn.h: socket, TLS, buffered I/O, taps). */
struct leg {
    struct hconn *s;
    struct mp_conn conn;
    bool client;
    bool eof;           /* the peer closed (or an error, or given up): never opened again */
    uint64_t out_since; /* last write progress while there was output to send */
};

struct listener {
    struct mp_io io;
    struct mp_http *h;
};

struct mp_http {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    SSL_CTX *server_ctx, *client_ctx;
    struct sockaddr_storage up_addr;
    socklen_t up_addr_len;
    char up_hostport[300]; /* Host header for the upstream */
    struct mp_http_names names;
    struct mp_http_routes routes; /* path prefixes and what serves them (route.h) */
    struct listener ls[MP_MAX_LISTEN];
    size_t n_ls;
    struct hconn *conns;
    size_t n_conn;
    uint64_t next_id;
    struct mp_modules *mods;      /* the module chain (the relay's), or NULL */
    struct mp_mh_cookies cookies; /* MAPI/HTTP session cookies (transport/mapihttp) */
    /* Reload: every front of this worker (the newest first), so a request on a
     * newer front whose cookie names a session of an older generation goes
     * to that generation's sessions and modules (mp_hf_session_front). */
    struct mp_http *gen_next, **gen_prevp;
    size_t lent;          /* requests of newer fronts now using this front's sessions */
    struct mp_hauth auth; /* mapiproxy:http auth = terminate (hauth.c) */
    struct mp_hun *hun;   /* ... with http upstream auth = negotiate (upneg.c), or NULL */
    uint64_t held;        /* body bytes held by the module path (http held body budget) */
    /* what a leg reads lands here (no copy, no buffer of the leg's own)
     * unless a partial message is kept (mp_conn_read) */
    bool scratch_busy;
    uint8_t scratch[READ_CHUNK];
};

/* Logons (upauth.c): the client's with termination, and the proxy's own
 * NTLM handshake on the upstream connection, whose requests go from out
 * while the leg's own out is held. */
struct hup {
    struct mp_hauth_conn ha;
    struct mp_buf www; /* the 401's WWW-Authenticate lines */
    int step;          /* 0 none yet, 1 NEGOTIATE sent, 2 AUTHENTICATE sent, 3 done */
    int status;        /* of the handshake answer being parsed */
    char why[200];     /* why the handshake failed, for the upstream parser */
    struct mp_hauth_up up;
    struct mp_buf out;
    char *url;                  /* the URL of the handshake's GETs (heap: only while it runs) */
    char conn_who[520];         /* pass-through: the NTLM identity of the connection */
    struct mp_kdc_job *krb_job; /* upstream auth = negotiate: the token being made (upneg.c) */
};

/* An Autodiscover answer collected to rewrite the names in it. */
struct autod {
    bool rewrite;
    struct mp_buf body;
};

struct mp_pcap;

struct hconn {
    struct mp_http *h;
    struct hconn *next, *prev;
    uint64_t id;
    char peer[64];
    struct mp_pcap *cap; /* decrypted export of this connection, or NULL */
    struct leg c, u;
    http_parser cp, up;
    struct mp_http_msg req, resp;
    struct mp_timer timer;
    bool dead, closing;
    bool pumping;   /* inside pump(): callbacks must not pump again */
    int err_status; /* set by a request callback that fails: 413, 431 */
    /* the current request */
    bool in_request;   /* between message begin and the end of its response */
    bool req_complete; /* its body is all read */
    bool forwarded;    /* its head went upstream */
    bool handover;     /* its route's handler takes the connection */
    unsigned move_to;  /* 1 + the worker the connection moves to (hmove.h), or 0 */
    bool adopted;      /* moved here for its current request (hmove.h) */
    int ext_method;    /* 1 + index in routes.ext: the method as sent; 0 none */
    int local_status;  /* answered by the proxy (body discarded), or 0 */
    uint32_t local_rc; /* with local_status 200: the X-ResponseCode of the proxy's answer */
    char who[520];     /* the identity of this request ("" when the proxy cannot tell) */
    bool req_chunked, head_req, keepalive, client_http10;
    const struct mp_http_route *route; /* what serves its path (route.h), NULL: 404 */
    char method[16], path[160], xtype[48], xid[96];
    uint64_t req_bytes, t_start_us;
    /* its response */
    bool resp_started; /* bytes of a final response went to the client */
    bool interim;      /* the upstream message being parsed is 1xx */
    bool chunk_out, close_after;
    int status;
    uint64_t resp_bytes;
    struct autod ad;
    struct mp_mh_req mh;
    /* deadlines (ms; 0 = none) */
    uint64_t header_dl, idle_dl, upstream_dl;
    uint64_t body_t0, body_dl; /* the request body's: body_t0 + grace + bytes / BODY_MIN_RATE */
    struct hup ua;
    /* a request refused before its end (400, 413, 431 ...): once the answer
     * is out, the client's leftover bytes are read and dropped (front.c) */
    bool linger;
    uint64_t linger_dl, linger_bytes; /* while lingering: its deadline, bytes dropped */
};

/* front.c */
void mp_hf_pump(struct hconn *s);
void mp_hf_close(struct hconn *s, const char *why);
void mp_hf_side_close(struct leg *x);
int mp_hf_upstream_start(struct hconn *s);
/* The upstream failed: the request gets st if nothing of its response was
 * sent yet; the connection ends either way. */
void mp_hf_upstream_failed(struct hconn *s, int st, const char *why);
/* The request head is complete on a HANDLER route: the client's connection
 * (descriptor, TLS, what was read after the head) goes to the route's
 * handler, and the front forgets it. */
void mp_hf_hand_over(struct hconn *s);
/* The upstream's answer is due in mapiproxy:http upstream timeout (when its
 * leg is up). */
void mp_hf_upstream_clock_start(struct hconn *s);
/* The front whose sessions and modules serve the request: the one holding
 * the module session its cookie names (an older generation's after a
 * reload), else s->h. */
struct mp_http *mp_hf_session_front(struct hconn *s);
bool mp_hf_upstream_clock(struct hconn *s);
/* This worker's newest front (NULL: none), and a connection moved to it
 * from another worker (hmove.c) with its packet export (cap, NULL: none;
 * taken, whatever happens): NULL when memory runs out (fd closed, tls and
 * cap freed). */
struct mp_http *mp_hf_newest(void);
/* The process's front connections when they are at mapiproxy:max
 * connections (h's configuration), else 0. */
size_t mp_hf_full(const struct mp_http *h);
struct hconn *mp_hf_adopt(struct mp_http *h, int fd, struct mp_tls *tls, const char *host,
                          uint16_t port, struct mp_pcap *cap);

/* exchange.c */
void mp_hx_init(void);
void mp_hx_send_local(struct hconn *s, int st, bool close);
void mp_hx_send_mh_error(struct hconn *s, uint32_t code);
void mp_hx_log_request(struct hconn *s);
void mp_hx_request_finished(struct hconn *s);
int mp_hx_resp_fail(struct hconn *s, const char *why);
void mp_hx_body_deadline(struct hconn *s);
bool mp_hx_parse_client(struct hconn *s);
bool mp_hx_parse_upstream(struct hconn *s, bool at_eof);
/* mapiproxy:http relay paths and the built-in routes: for Autodiscover's
 * URL rewriting (names.h relayed). */
bool mp_hx_url_path_relayed(const void *arg, const char *path, size_t len);

/* upauth.c */
int mp_hu_request(struct hconn *s);
void mp_hu_identity(struct hconn *s);
int mp_hu_begin(struct hconn *s, const char *url, size_t ul);
int mp_hu_step(struct hconn *s, http_parser *p);
bool mp_hu_busy(const struct hconn *s);
int mp_hu_answer_auth(struct hconn *s, int st);
/* The same for a head the proxy writes itself (its own MAPI/HTTP answers):
 * "WWW-Authenticate: <token>" and CRLF onto out when st is a success and
 * the request completed a Negotiate exchange.  0, or -1 (memory). */
int mp_hu_mutual_line(struct hconn *s, int st, struct mp_buf *out);
/* What is written to a leg: the upstream's held requests wait while the
 * proxy's handshake runs. */
struct mp_buf *mp_hu_wbuf(struct hconn *s, struct leg *x);
void mp_hu_free(struct hup *u);
/* One handshake GET of the client's first URL with "Authorization: <authval>". */
int mp_hu_send(struct hconn *s, const struct mp_buf *authval);

/* upneg.c: http upstream auth = negotiate */
int mp_hun_init(struct mp_http *h);
void mp_hun_free(struct mp_http *h);
int mp_hun_begin(struct hconn *s);
#endif
