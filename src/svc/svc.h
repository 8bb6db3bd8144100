/* Clients for outside services (clamd, ICAP, spamd, rspamd, milter, LMTP).
 *
 * Each protocol is a sans-I/O conversation (struct mp_svc_conv): begin()
 * puts the first request bytes in conv->out, feed() takes whatever bytes
 * arrived (any split), may queue more bytes to send (ICAP after 100
 * Continue, each milter or LMTP step) and says when the verdict is
 * complete.  Every parser is bounded (MP_SVC_MAX_*) and never trusts a
 * length it was sent.  engine.c runs conversations on sockets; the
 * conversations know nothing about sockets.  doc/internals/svc.md. */
#ifndef MP_SVC_H
#define MP_SVC_H
#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_SVC_MAX_LINE 8192       /* one status/header line, a clamd reply */
#define MP_SVC_MAX_HEAD 65536      /* an ICAP/HTTP/spamd header block */
#define MP_SVC_MAX_BODY (4u << 20) /* a response body kept (JSON, report) */
#define MP_SVC_MAX_PKT (1u << 20)  /* one milter packet */

enum mp_svc_kind {
    MP_SVC_NONE = 0,
    MP_SVC_CLEAN,       /* OK, 204, not spam, accept/continue, delivered */
    MP_SVC_INFECTED,    /* a virus found (name in verdict.name) */
    MP_SVC_SPAM,        /* spam: tag (spamd True, rspamd add header / rewrite subject) */
    MP_SVC_REJECT,      /* rspamd reject, milter reject/5xx, LMTP 5xx */
    MP_SVC_TEMPFAIL,    /* milter tempfail/4xx, LMTP 4xx, rspamd soft reject */
    MP_SVC_DISCARD,     /* milter discard */
    MP_SVC_QUARANTINE,  /* milter quarantine */
    MP_SVC_MODIFIED,    /* ICAP 200 without an infection header; milter edits */
    MP_SVC_TOOBIG,      /* over the configured StreamMaxLength: not sent */
    MP_SVC_ERROR,       /* the service answered an error */
    MP_SVC_UNAVAILABLE, /* no usable answer (down, timeout, garbage): fail policy */
};
const char *mp_svc_kind_name(enum mp_svc_kind k);

struct mp_svc_verdict {
    enum mp_svc_kind kind;
    int status;     /* ICAP/HTTP status, spamd code, reply code */
    char name[256]; /* virus name, rspamd action, reply text, error */
    double score, required;
    bool has_score;
    struct mp_buf detail; /* symbols, report, edits, per-recipient replies (text) */
    /* set by the engine */
    bool fail_open;    /* UNAVAILABLE only: the policy says pass */
    unsigned attempts; /* connections tried */
    uint64_t took_us;
};

enum { MP_SVC_MORE = 0, MP_SVC_DONE = 1, MP_SVC_BAD = -1 };

struct mp_svc_conv;
struct mp_svc_ops {
    const char *name;
    /* Start (again) on a fresh (reused=false) or pooled connection. */
    int (*begin)(struct mp_svc_conv *c, bool reused);
    /* used = bytes taken (the rest is kept by the caller for the next call). */
    int (*feed)(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used);
    /* The peer closed: DONE when that ends the answer (spamd), else BAD. */
    int (*eof)(struct mp_svc_conv *c);
    void (*free)(struct mp_svc_conv *c);
    bool poolable; /* the connection may carry another conversation */
};

struct mp_svc_conv {
    const struct mp_svc_ops *ops;
    struct mp_buf out; /* bytes to send now */
    struct mp_svc_verdict v;
    bool reusable; /* after DONE: the connection is clean for another */
    bool answered; /* some reply byte arrived (a reused connection that
                      dies before that is retried once on a fresh one) */
};
void mp_svc_conv_free(struct mp_svc_conv *c);
int mp_svc_conv_feed(struct mp_svc_conv *c, struct mp_buf *in); /* consumes from in */

/* ---- clamd: zINSTREAM ---- */
/* max_stream: clamd's StreamMaxLength (0: no limit here). */
struct mp_svc_conv *mp_svc_clamd_new(const uint8_t *data, size_t len, size_t max_stream);

/* ---- ICAP (RFC 3507) ---- */
struct mp_svc_icap_req {
    bool reqmod;          /* REQMOD (an upload), else RESPMOD (a download) */
    const char *host;     /* ICAP server's host[:port] for the URI and Host */
    const char *service;  /* e.g. "avscan" */
    const char *http_url; /* the encapsulated request's URL */
    const char *content_type;
    size_t preview;  /* Preview size (from OPTIONS); 0: no preview */
    bool no_preview; /* send no Preview header at all */
};
struct mp_svc_conv *mp_svc_icap_new(const struct mp_svc_icap_req *r, const uint8_t *body,
                                    size_t len);

/* ---- spamd: SPAMC/1.5 ---- */
enum mp_svc_spamd_cmd { MP_SPAMD_CHECK, MP_SPAMD_SYMBOLS, MP_SPAMD_REPORT };
struct mp_svc_conv *mp_svc_spamd_new(enum mp_svc_spamd_cmd cmd, const char *user,
                                     const uint8_t *msg, size_t len);

/* ---- rspamd: HTTP POST /checkv2 ---- */
struct mp_svc_rspamd_req {
    const char *host, *from, *rcpt, *ip, *helo, *user, *queue_id, *password;
};
struct mp_svc_conv *mp_svc_rspamd_new(const struct mp_svc_rspamd_req *r, const uint8_t *msg,
                                      size_t len);
/* The JSON answer (exposed for the fuzz target and tests). */
int mp_svc_rspamd_parse_json(struct mp_svc_verdict *v, const char *json, size_t len);

/* ---- milter, the MTA side (protocol version 6) ---- */
struct mp_svc_milter_req {
    const char *client_host, *client_addr, *helo, *from;
    const char *const *rcpt; /* NULL-terminated */
    uint16_t client_port;
};
struct mp_svc_conv *mp_svc_milter_new(const struct mp_svc_milter_req *r, const uint8_t *msg,
                                      size_t len);

/* ---- LMTP (RFC 2033) ---- */
struct mp_svc_lmtp_req {
    const char *lhlo, *from;
    const char *const *rcpt; /* NULL-terminated */
};
struct mp_svc_conv *mp_svc_lmtp_new(const struct mp_svc_lmtp_req *r, const uint8_t *msg,
                                    size_t len);

/* ---- helpers shared by the codecs (common.c) ---- */
/* Length of the header block ending in an empty line (CRLF CRLF or LF LF)
 * at the start of p, 0 if not complete yet, -1 if over max. */
long mp_svc_head_len(const uint8_t *p, size_t n, size_t max);
/* Walks the header lines of a block: returns false at its end.  name and
 * value are not NUL-terminated; value has no leading/trailing blanks. */
struct mp_svc_hdr {
    const char *name, *value;
    size_t nlen, vlen;
};
bool mp_svc_hdr_next(const uint8_t **p, const uint8_t *end, struct mp_svc_hdr *h);
bool mp_svc_hdr_is(const struct mp_svc_hdr *h, const char *name);
/* Parses a decimal size; false on junk or overflow. */
bool mp_svc_parse_size(const char *s, size_t n, size_t *out);
/* HTTP/ICAP chunked transfer coding, incremental. */
struct mp_svc_chunked {
    int state;
    size_t left;
    size_t total, max; /* body bytes seen; kept up to max in body */
    bool ieof;
};
/* Returns MP_SVC_DONE at the last chunk, MORE, or BAD. */
int mp_svc_chunked_feed(struct mp_svc_chunked *ck, const uint8_t *p, size_t n, size_t *used,
                        struct mp_buf *body);
int mp_svc_put_chunk(struct mp_buf *out, const uint8_t *p, size_t n);
int mp_svc_printf(struct mp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void mp_svc_set_name(struct mp_svc_verdict *v, const char *s, size_t n);
#endif
