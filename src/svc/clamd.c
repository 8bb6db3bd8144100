/* clamd's zINSTREAM: "zINSTREAM\0", then chunks <4-byte big-endian length>
 * <bytes>, then a zero length; one NUL-terminated reply line:
 * "stream: OK", "stream: NAME FOUND", "... ERROR" (e.g. "INSTREAM size limit
 * exceeded. ERROR", sent as soon as clamd's StreamMaxLength is passed). */
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLAMD_CHUNK 65536

struct clamd_conv {
    struct mp_svc_conv c;
    const uint8_t *data;
    size_t len, max_stream;
};

static int put_be32(struct mp_buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return mp_buf_append(b, x, 4);
}

static int clamd_begin(struct mp_svc_conv *c, bool reused)
{
    struct clamd_conv *k = (struct clamd_conv *)c;
    if (k->max_stream && k->len > k->max_stream) {
        c->v.kind = MP_SVC_TOOBIG;
        snprintf(c->v.name, sizeof c->v.name, "stream of %zu bytes over StreamMaxLength %zu",
                 k->len, k->max_stream);
        return MP_SVC_DONE;
    }
    if (mp_buf_append(&c->out, "zINSTREAM", 10)) /* with its NUL */
        return MP_SVC_BAD;
    for (size_t off = 0; off < k->len; off += CLAMD_CHUNK) {
        size_t n = k->len - off < CLAMD_CHUNK ? k->len - off : CLAMD_CHUNK;
        if (put_be32(&c->out, (uint32_t)n) || mp_buf_append(&c->out, k->data + off, n))
            return MP_SVC_BAD;
    }
    return put_be32(&c->out, 0) ? MP_SVC_BAD : MP_SVC_MORE;
}

static bool ends_with(const char *s, size_t n, const char *suf, size_t *stem)
{
    size_t l = strlen(suf);
    if (n < l || memcmp(s + n - l, suf, l))
        return false;
    *stem = n - l;
    return true;
}

static int clamd_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    const uint8_t *z = memchr(p, 0, n);
    if (!z) {
        const uint8_t *nl = memchr(p, '\n', n); /* without the z prefix clamd ends in \n */
        z = nl;
    }
    if (!z) {
        *used = 0;
        return n > MP_SVC_MAX_LINE ? MP_SVC_BAD : MP_SVC_MORE;
    }
    *used = (size_t)(z - p) + 1;
    const char *line = (const char *)p;
    size_t ll = (size_t)(z - p), stem;
    if (ll > MP_SVC_MAX_LINE)
        return MP_SVC_BAD;
    const char *after = memchr(line, ':', ll); /* "stream: ..." */
    size_t off = after ? (size_t)(after - line) + 1 : 0;
    while (off < ll && line[off] == ' ')
        off++;
    c->v.status = 0;
    if (ll - off == 2 && !memcmp(line + off, "OK", 2)) {
        c->v.kind = MP_SVC_CLEAN;
    } else if (ends_with(line + off, ll - off, " FOUND", &stem)) {
        c->v.kind = MP_SVC_INFECTED;
        mp_svc_set_name(&c->v, line + off, stem);
    } else if (ends_with(line + off, ll - off, " ERROR", &stem)) {
        c->v.kind = MP_SVC_ERROR;
        mp_svc_set_name(&c->v, line + off, stem);
    } else {
        return MP_SVC_BAD;
    }
    return MP_SVC_DONE;
}

static int clamd_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void clamd_free(struct mp_svc_conv *c)
{
    free(c);
}

static const struct mp_svc_ops clamd_ops = {"clamd",   clamd_begin, clamd_feed,
                                            clamd_eof, clamd_free,  false};

struct mp_svc_conv *mp_svc_clamd_new(const uint8_t *data, size_t len, size_t max_stream)
{
    struct clamd_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &clamd_ops;
    k->data = data;
    k->len = len;
    k->max_stream = max_stream;
    return &k->c;
}
