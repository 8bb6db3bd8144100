/* HTTP message heads as the front keeps them: the pieces http-parser hands
 * to its callbacks are collected here (bounded), and heads for the other leg
 * are rebuilt from them with the hop-by-hop headers dropped. */
#ifndef MP_HTTP_MSG_H
#define MP_HTTP_MSG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct mp_http_names;

/* Most header fields in one head: a request with more gets 431, a response
 * with more is unusable (502).  Outlook sends about 20. */
#define MP_HTTP_MAX_HEADERS 256

struct mp_http_hdr {
    size_t name_off, name_len, val_off, val_len;
};

struct mp_http_msg {
    struct mp_buf raw; /* the URL (or reason phrase), then names and values */
    struct mp_http_hdr *h;
    size_t n, cap;
    size_t url_len; /* the URL / reason is raw.data[0 .. url_len) */
    size_t max;     /* limit on raw bytes (mapiproxy:http max header size) */
    int last;       /* 0 start/URL, 1 in a name, 2 in a value */
};

void mp_http_msg_init(struct mp_http_msg *m, size_t max);
void mp_http_msg_reset(struct mp_http_msg *m);
void mp_http_msg_free(struct mp_http_msg *m);
/* Append a piece of the URL (or reason phrase), a header name or value.
 * Return 0, or -1 when the head grows over m->max, has more than
 * MP_HTTP_MAX_HEADERS fields, or memory runs out. */
int mp_http_msg_url(struct mp_http_msg *m, const char *at, size_t len);
int mp_http_msg_field(struct mp_http_msg *m, const char *at, size_t len);
int mp_http_msg_value(struct mp_http_msg *m, const char *at, size_t len);

/* Every field name is a token (RFC 9110 5.6.2): no space before the colon
 * (RFC 9112 5.1 says to reject such a request with 400), no empty name. */
bool mp_http_msg_names_ok(const struct mp_http_msg *m);
/* The value of the first header named `name` (case-insensitive), or NULL;
 * *len gets its length (values are not NUL-terminated). */
const char *mp_http_msg_get(const struct mp_http_msg *m, const char *name, size_t *len);
/* The same for the nth (0-based) header of that name (WWW-Authenticate
 * may come several times). */
const char *mp_http_msg_get_nth(const struct mp_http_msg *m, const char *name, size_t nth,
                                size_t *len);
/* Removes every header named `name` (the bytes stay in raw, unreferenced). */
void mp_http_msg_del(struct mp_http_msg *m, const char *name);
/* Appends a header to a complete head (NUL-terminated name and value).
 * 0, or -1 over m->max or out of memory. */
int mp_http_msg_add(struct mp_http_msg *m, const char *name, const char *value);
/* Replaces the URL of a complete head by one no longer than it (the
 * normalised request-target).  0, or -1 when len is over the URL's. */
int mp_http_msg_set_url(struct mp_http_msg *m, const char *url, size_t len);
static inline const char *mp_http_msg_url_ptr(const struct mp_http_msg *m)
{
    return (const char *)m->raw.data;
}

enum mp_http_framing {
    MP_HTTP_NO_BODY = 0, /* nothing is added */
    MP_HTTP_LENGTH,      /* Content-Length: len */
    MP_HTTP_CHUNKED,     /* Transfer-Encoding: chunked */
    MP_HTTP_KEEP_LENGTH, /* the message's own Content-Length header is kept (HEAD, 304) */
};

struct mp_http_head_opts {
    enum mp_http_framing framing;
    uint64_t length;  /* for MP_HTTP_LENGTH */
    const char *host; /* request: the Host header to send (replaces the client's) */
    bool strip_accept_encoding;
    bool close;                                   /* add "Connection: close" */
    const struct mp_http_names *rewrite_location; /* response: rewrite Location with these */
};

/* "METHOD URL HTTP/1.1" and the headers of m, without the hop-by-hop ones
 * (Connection and the names it lists, Keep-Alive, Proxy-*, TE, Trailer,
 * Transfer-Encoding, Upgrade) and without Host and Content-Length, which
 * come from opts.  Returns 0 or -1 (memory). */
int mp_http_request_head(const struct mp_http_msg *m, const char *method,
                         const struct mp_http_head_opts *o, struct mp_buf *out);
/* "HTTP/1.1 STATUS REASON" and m's end-to-end headers (as above). */
int mp_http_response_head(const struct mp_http_msg *m, int status,
                          const struct mp_http_head_opts *o, struct mp_buf *out);

/* Copies at most n-1 bytes of [p, p+len) to dst for a log line: bytes
 * outside printable ASCII become '?'. */
void mp_http_log_text(char *dst, size_t n, const char *p, size_t len);
#endif
