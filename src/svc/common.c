/* Pieces the service codecs share: header blocks, chunked coding, verdicts. */
#include "svc/svc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *mp_svc_kind_name(enum mp_svc_kind k)
{
    static const char *const names[] = {"none",     "clean",    "infected", "spam",
                                        "reject",   "tempfail", "discard",  "quarantine",
                                        "modified", "toobig",   "error",    "unavailable"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

void mp_svc_conv_free(struct mp_svc_conv *c)
{
    if (!c)
        return;
    mp_buf_free(&c->out);
    mp_buf_free(&c->v.detail);
    c->ops->free(c);
}

int mp_svc_conv_feed(struct mp_svc_conv *c, struct mp_buf *in)
{
    size_t used = 0;
    if (mp_buf_avail(in))
        c->answered = true;
    int r = c->ops->feed(c, mp_buf_head(in), mp_buf_avail(in), &used);
    if (used > mp_buf_avail(in))
        return MP_SVC_BAD;
    mp_buf_consume(in, used);
    return r;
}

long mp_svc_head_len(const uint8_t *p, size_t n, size_t max)
{
    size_t lim = n < max ? n : max;
    for (size_t i = 0; i < lim; i++) {
        if (p[i] != '\n')
            continue;
        if (i + 1 < n && p[i + 1] == '\n')
            return (long)(i + 2);
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
            return (long)(i + 3);
    }
    return n >= max ? -1 : 0;
}

static bool blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool mp_svc_hdr_next(const uint8_t **pp, const uint8_t *end, struct mp_svc_hdr *h)
{
    const uint8_t *p = *pp;
    while (p < end) {
        const uint8_t *eol = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *le = eol ? eol : end;
        *pp = eol ? eol + 1 : end;
        const uint8_t *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon) { /* the status line, the empty line, or junk */
            p = *pp;
            continue;
        }
        const uint8_t *v = colon + 1, *ve = le;
        while (v < ve && blank(*v))
            v++;
        while (ve > v && blank(ve[-1]))
            ve--;
        h->name = (const char *)p;
        h->nlen = (size_t)(colon - p);
        h->value = (const char *)v;
        h->vlen = (size_t)(ve - v);
        return true;
    }
    return false;
}

bool mp_svc_hdr_is(const struct mp_svc_hdr *h, const char *name)
{
    return strlen(name) == h->nlen && !strncasecmp(h->name, name, h->nlen);
}

bool mp_svc_parse_size(const char *s, size_t n, size_t *out)
{
    size_t v = 0;
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]) || v > (SIZE_MAX - 9) / 10)
            return false;
        v = v * 10 + (size_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* States: 0 size line, 1 data, 2 CRLF after data, 3 trailer lines after 0. */
int mp_svc_chunked_feed(struct mp_svc_chunked *ck, const uint8_t *p, size_t n, size_t *used,
                        struct mp_buf *body)
{
    size_t i = 0;
    while (i < n) {
        if (ck->state == 1) {
            size_t k = n - i < ck->left ? n - i : ck->left;
            if (body && ck->total < ck->max) {
                size_t keep = ck->max - ck->total < k ? ck->max - ck->total : k;
                if (mp_buf_append(body, p + i, keep))
                    return MP_SVC_BAD;
            }
            ck->total += k;
            ck->left -= k;
            i += k;
            if (!ck->left)
                ck->state = 2;
            continue;
        }
        const uint8_t *eol = memchr(p + i, '\n', n - i);
        if (!eol) {
            if (n - i > MP_SVC_MAX_LINE)
                return MP_SVC_BAD;
            break; /* wait for the whole line */
        }
        size_t ll = (size_t)(eol - (p + i));
        const char *line = (const char *)p + i;
        size_t next = i + ll + 1;
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ck->state == 2) {
            if (ll)
                return MP_SVC_BAD;
            ck->state = 0;
        } else if (ck->state == 0) {
            size_t v = 0, d = 0;
            for (; d < ll && isxdigit((unsigned char)line[d]); d++) {
                if (v > (SIZE_MAX >> 4))
                    return MP_SVC_BAD;
                v = v * 16 + (size_t)(isdigit((unsigned char)line[d]) ? line[d] - '0'
                                                                      : (line[d] | 32) - 'a' + 10);
            }
            if (!d)
                return MP_SVC_BAD;
            for (size_t e = d; e + 4 <= ll; e++)
                if (!strncasecmp(line + e, "ieof", 4))
                    ck->ieof = true;
            if (v) {
                ck->left = v;
                ck->state = 1;
            } else {
                ck->state = 3;
            }
        } else { /* trailers end at an empty line */
            if (!ll) {
                *used = next;
                ck->state = 0;
                return MP_SVC_DONE;
            }
        }
        i = next;
    }
    *used = i;
    return MP_SVC_MORE;
}

int mp_svc_put_chunk(struct mp_buf *out, const uint8_t *p, size_t n)
{
    if (!n)
        return 0;
    return mp_svc_printf(out, "%zx\r\n", n) || mp_buf_append(out, p, n) ||
           mp_buf_append(out, "\r\n", 2);
}

int mp_svc_printf(struct mp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || mp_buf_reserve(b, (size_t)n + 1))
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void mp_svc_set_name(struct mp_svc_verdict *v, const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < sizeof v->name; i++)
        v->name[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    v->name[k] = 0;
}
