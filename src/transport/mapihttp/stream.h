/* The MAPI over HTTP response stream (MS-OXCMAPIHTTP 2.2.7): meta-tag lines
 * PROCESSING, PENDING (repeated while the server works), DONE, then the
 * additional headers (X-ResponseCode, X-ElapsedTime, X-StartTime, ...), an
 * empty line, and the response body.  The parser is fed de-chunked entity
 * bytes in arbitrary pieces; the builder writes the same format. */
#ifndef MP_MAPIHTTP_STREAM_H
#define MP_MAPIHTTP_STREAM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define MP_MH_STREAM_LINE_MAX 256 /* longest meta-tag or header line, CRLF included */

enum mp_mh_stream_state {
    MP_MHS_META,    /* reading PROCESSING / PENDING / DONE */
    MP_MHS_HEADERS, /* after DONE, up to the empty line */
    MP_MHS_BODY,    /* every further byte is body */
    MP_MHS_ERROR,
};

struct mp_mh_stream {
    enum mp_mh_stream_state state;
    const char *error; /* why state is MP_MHS_ERROR */
    char line[MP_MH_STREAM_LINE_MAX];
    size_t line_len;
    unsigned n_processing, n_pending, n_other_headers;
    bool have_response_code, have_elapsed_time;
    uint32_t response_code;                 /* X-ResponseCode */
    uint64_t elapsed_time;                  /* X-ElapsedTime (milliseconds) */
    char start_time[MP_MH_STREAM_LINE_MAX]; /* X-StartTime, "" if absent */
    struct mp_buf body;                     /* the body bytes received so far */
};

void mp_mh_stream_init(struct mp_mh_stream *s);
void mp_mh_stream_free(struct mp_mh_stream *s);
/* 0, or -1 with s->state == MP_MHS_ERROR and s->error set (a line that is no
 * meta-tag, a header without a colon, a non-numeric X-ResponseCode or
 * X-ElapsedTime, a line longer than MP_MH_STREAM_LINE_MAX, out of memory). */
int mp_mh_stream_feed(struct mp_mh_stream *s, const uint8_t *p, size_t n);

/* Builder.  Each returns 0 or -1 (out of memory; b may hold a part). */
int mp_mh_stream_put_meta(struct mp_buf *b, const char *tag); /* "PROCESSING", "PENDING", "DONE" */
/* X-ResponseCode, X-ElapsedTime, X-StartTime (omitted when NULL), empty line. */
int mp_mh_stream_put_headers(struct mp_buf *b, uint32_t response_code, uint64_t elapsed_ms,
                             const char *start_time);
/* The headers after DONE in the form orig (the upstream's parsed stream)
 * had them: X-ResponseCode and X-ElapsedTime only if it sent them there
 * (gromox sends X-ResponseCode only in the HTTP head), X-StartTime if it
 * had one.  Without an upstream stream (orig not at its body), all of them. */
int mp_mh_stream_put_headers_like(struct mp_buf *b, const struct mp_mh_stream *orig,
                                  uint32_t response_code);
/* The whole stream: PROCESSING, n_pending x PENDING, DONE, headers, body. */
int mp_mh_stream_build(struct mp_buf *b, unsigned n_pending, uint32_t response_code,
                       uint64_t elapsed_ms, const char *start_time, const uint8_t *body,
                       size_t len);
#endif
