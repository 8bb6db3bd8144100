/* MAPI over HTTP response stream parser and builder (see stream.h). */
#include "transport/mapihttp/stream.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

void mp_mh_stream_init(struct mp_mh_stream *s)
{
    memset(s, 0, sizeof *s);
}

void mp_mh_stream_free(struct mp_mh_stream *s)
{
    mp_buf_free(&s->body);
    memset(s, 0, sizeof *s);
}

static int bad(struct mp_mh_stream *s, const char *why)
{
    s->state = MP_MHS_ERROR;
    s->error = why;
    return -1;
}

/* Decimal digits only, no overflow. */
static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    uint64_t x = 0;
    if (!*v)
        return -1;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -1;
        unsigned d = (unsigned)(*v - '0');
        if (x > (max - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

/* One line without its line end. */
static int line(struct mp_mh_stream *s, char *l)
{
    if (s->state == MP_MHS_META) {
        if (!strcmp(l, "PROCESSING"))
            s->n_processing++;
        else if (!strcmp(l, "PENDING"))
            s->n_pending++;
        else if (!strcmp(l, "DONE"))
            s->state = MP_MHS_HEADERS;
        else
            return bad(s, "not a meta-tag (PROCESSING, PENDING, DONE)");
        return 0;
    }
    if (!*l) {
        s->state = MP_MHS_BODY;
        return 0;
    }
    char *colon = strchr(l, ':');
    if (!colon || colon == l)
        return bad(s, "header line without a name and colon");
    *colon = 0;
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t vl = strlen(v);
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        v[--vl] = 0;
    uint64_t x;
    if (!strcasecmp(l, "X-ResponseCode")) {
        if (parse_u64(v, UINT32_MAX, &x))
            return bad(s, "X-ResponseCode is not a number");
        s->response_code = (uint32_t)x;
        s->have_response_code = true;
    } else if (!strcasecmp(l, "X-ElapsedTime")) {
        if (parse_u64(v, UINT64_MAX, &x))
            return bad(s, "X-ElapsedTime is not a number");
        s->elapsed_time = x;
        s->have_elapsed_time = true;
    } else if (!strcasecmp(l, "X-StartTime")) {
        memcpy(s->start_time, v, vl + 1);
    } else {
        s->n_other_headers++;
    }
    return 0;
}

int mp_mh_stream_feed(struct mp_mh_stream *s, const uint8_t *p, size_t n)
{
    if (s->state == MP_MHS_ERROR)
        return -1;
    size_t i = 0;
    while (i < n && s->state != MP_MHS_BODY) {
        uint8_t c = p[i++];
        if (c == '\n') {
            size_t l = s->line_len;
            if (!l || s->line[l - 1] != '\r')
                return bad(s, "line not ended by CRLF");
            s->line[l - 1] = 0;
            s->line_len = 0;
            if (memchr(s->line, 0, l - 1))
                return bad(s, "NUL in a meta-tag or header line");
            if (line(s, s->line))
                return -1;
            continue;
        }
        if (s->line_len >= MP_MH_STREAM_LINE_MAX - 1)
            return bad(s, "meta-tag or header line too long");
        s->line[s->line_len++] = (char)c;
    }
    if (i < n && mp_buf_append(&s->body, p + i, n - i))
        return bad(s, "out of memory");
    return 0;
}

int mp_mh_stream_put_meta(struct mp_buf *b, const char *tag)
{
    return mp_buf_append(b, tag, strlen(tag)) || mp_buf_append(b, "\r\n", 2) ? -1 : 0;
}

static int put_headers(struct mp_buf *b, bool code, uint32_t response_code, bool elapsed,
                       uint64_t elapsed_ms, const char *start_time)
{
    char h[MP_MH_STREAM_LINE_MAX * 2];
    int k;
    if (code) {
        k = snprintf(h, sizeof h, "X-ResponseCode: %u\r\n", response_code);
        if (mp_buf_append(b, h, (size_t)k))
            return -1;
    }
    if (elapsed) {
        k = snprintf(h, sizeof h, "X-ElapsedTime: %llu\r\n", (unsigned long long)elapsed_ms);
        if (mp_buf_append(b, h, (size_t)k))
            return -1;
    }
    if (start_time) {
        if (strlen(start_time) > MP_MH_STREAM_LINE_MAX - 16 || strpbrk(start_time, "\r\n"))
            return -1;
        k = snprintf(h, sizeof h, "X-StartTime: %s\r\n", start_time);
        if (mp_buf_append(b, h, (size_t)k))
            return -1;
    }
    return mp_buf_append(b, "\r\n", 2);
}

int mp_mh_stream_put_headers(struct mp_buf *b, uint32_t response_code, uint64_t elapsed_ms,
                             const char *start_time)
{
    return put_headers(b, true, response_code, true, elapsed_ms, start_time);
}

int mp_mh_stream_put_headers_like(struct mp_buf *b, const struct mp_mh_stream *orig,
                                  uint32_t response_code)
{
    const char *st = orig->start_time[0] ? orig->start_time : NULL;
    if (orig->state != MP_MHS_BODY)
        return put_headers(b, true, response_code, true, orig->elapsed_time, st);
    return put_headers(b, orig->have_response_code, response_code, orig->have_elapsed_time,
                       orig->elapsed_time, st);
}

int mp_mh_stream_build(struct mp_buf *b, unsigned n_pending, uint32_t response_code,
                       uint64_t elapsed_ms, const char *start_time, const uint8_t *body, size_t len)
{
    if (mp_mh_stream_put_meta(b, "PROCESSING"))
        return -1;
    for (unsigned i = 0; i < n_pending; i++)
        if (mp_mh_stream_put_meta(b, "PENDING"))
            return -1;
    if (mp_mh_stream_put_meta(b, "DONE") ||
        mp_mh_stream_put_headers(b, response_code, elapsed_ms, start_time))
        return -1;
    return len && mp_buf_append(b, body, len) ? -1 : 0;
}
