/* HTTP message heads: collection and rebuilding (doc/internals/http.md). */
#include "transport/http/msg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "transport/http/names.h"

/* mp_buf_append, except that nothing is done for nothing (the buffer may
 * still be unallocated, and NULL + 0 is undefined). */
static int app(struct mp_buf *b, const void *p, size_t n)
{
    return n ? mp_buf_append(b, p, n) : 0;
}

void mp_http_msg_init(struct mp_http_msg *m, size_t max)
{
    memset(m, 0, sizeof *m);
    m->max = max;
}

void mp_http_msg_reset(struct mp_http_msg *m)
{
    m->raw.off = m->raw.len = 0;
    m->n = 0;
    m->url_len = 0;
    m->last = 0;
}

void mp_http_msg_free(struct mp_http_msg *m)
{
    mp_buf_free(&m->raw);
    free(m->h);
    m->h = NULL;
    m->n = m->cap = 0;
}

static int grow(struct mp_http_msg *m, const char *at, size_t len)
{
    if (len > m->max || m->raw.len + len > m->max)
        return -1;
    return app(&m->raw, at, len);
}

int mp_http_msg_url(struct mp_http_msg *m, const char *at, size_t len)
{
    if (m->last != 0 || grow(m, at, len))
        return -1;
    m->url_len += len;
    return 0;
}

int mp_http_msg_field(struct mp_http_msg *m, const char *at, size_t len)
{
    if (m->last != 1) { /* a new header */
        if (m->n >= MP_HTTP_MAX_HEADERS)
            return -1;
        if (m->n == m->cap) {
            size_t nc = m->cap ? m->cap * 2 : 16;
            struct mp_http_hdr *nh = realloc(m->h, nc * sizeof *nh);
            if (!nh)
                return -1;
            m->h = nh;
            m->cap = nc;
        }
        m->h[m->n++] = (struct mp_http_hdr){.name_off = m->raw.len};
        m->last = 1;
    }
    if (grow(m, at, len))
        return -1;
    m->h[m->n - 1].name_len += len;
    return 0;
}

int mp_http_msg_value(struct mp_http_msg *m, const char *at, size_t len)
{
    if (m->n == 0)
        return -1;
    struct mp_http_hdr *h = &m->h[m->n - 1];
    if (m->last != 2) {
        h->val_off = m->raw.len;
        m->last = 2;
    }
    if (grow(m, at, len))
        return -1;
    h->val_len += len;
    return 0;
}

static bool name_is(const struct mp_http_msg *m, const struct mp_http_hdr *h, const char *name)
{
    return h->name_len == strlen(name) &&
           !strncasecmp((const char *)m->raw.data + h->name_off, name, h->name_len);
}

const char *mp_http_msg_get(const struct mp_http_msg *m, const char *name, size_t *len)
{
    for (size_t i = 0; i < m->n; i++)
        if (name_is(m, &m->h[i], name)) {
            *len = m->h[i].val_len;
            return (const char *)m->raw.data + m->h[i].val_off;
        }
    return NULL;
}

const char *mp_http_msg_get_nth(const struct mp_http_msg *m, const char *name, size_t nth,
                                size_t *len)
{
    for (size_t i = 0; i < m->n; i++)
        if (name_is(m, &m->h[i], name) && nth-- == 0) {
            *len = m->h[i].val_len;
            return (const char *)m->raw.data + m->h[i].val_off;
        }
    return NULL;
}

void mp_http_msg_del(struct mp_http_msg *m, const char *name)
{
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++)
        if (!name_is(m, &m->h[i], name))
            m->h[k++] = m->h[i];
    m->n = k;
}

int mp_http_msg_add(struct mp_http_msg *m, const char *name, const char *value)
{
    m->last = 0; /* a new header, whatever came before */
    if (mp_http_msg_field(m, name, strlen(name)))
        return -1;
    size_t vl = strlen(value);
    struct mp_http_hdr *h = &m->h[m->n - 1];
    h->val_off = m->raw.len;
    m->last = 2;
    if (grow(m, value, vl))
        return -1;
    h->val_len = vl;
    return 0;
}

int mp_http_msg_set_url(struct mp_http_msg *m, const char *url, size_t len)
{
    if (len > m->url_len)
        return -1;
    if (len)
        memmove(m->raw.data, url, len);
    m->url_len = len; /* the bytes after it up to the first name stay unreferenced */
    return 0;
}

static uint32_t name_hash(const char *p, size_t n)
{
    uint32_t x = 2166136261u; /* FNV-1a over the lower-case name */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        x = (x ^ (uint32_t)(c >= 'A' && c <= 'Z' ? c + 32 : c)) * 16777619u;
    }
    return x;
}

/* drop[i] = true for every header that the Connection headers name (they
 * are hop-by-hop too).  Linear in headers plus tokens: the names go into a
 * hash table, each token is looked up once.  0, or -1 (memory). */
static int connection_listed(const struct mp_http_msg *m, bool *drop)
{
    size_t cap = 16;
    while (cap < 2 * m->n)
        cap *= 2;
    size_t *tab = NULL; /* header index + 1; 0 = empty */
    for (size_t i = 0; i < m->n; i++) {
        if (!name_is(m, &m->h[i], "connection"))
            continue;
        if (!tab) {
            if (!(tab = calloc(cap, sizeof *tab)))
                return -1;
            for (size_t k = 0; k < m->n; k++) {
                size_t j =
                    name_hash((const char *)m->raw.data + m->h[k].name_off, m->h[k].name_len) &
                    (cap - 1);
                while (tab[j])
                    j = (j + 1) & (cap - 1);
                tab[j] = k + 1;
            }
        }
        const char *v = (const char *)m->raw.data + m->h[i].val_off;
        size_t vl = m->h[i].val_len, p = 0;
        while (p < vl) {
            while (p < vl && (v[p] == ',' || v[p] == ' ' || v[p] == '\t'))
                p++;
            size_t st = p;
            while (p < vl && v[p] != ',' && v[p] != ' ' && v[p] != '\t')
                p++;
            if (p == st)
                continue;
            for (size_t j = name_hash(v + st, p - st) & (cap - 1); tab[j];
                 j = (j + 1) & (cap - 1)) {
                const struct mp_http_hdr *h = &m->h[tab[j] - 1];
                if (h->name_len == p - st &&
                    !strncasecmp(v + st, (const char *)m->raw.data + h->name_off, p - st))
                    drop[tab[j] - 1] = true;
            }
        }
    }
    free(tab);
    return 0;
}

static bool hop_by_hop(const struct mp_http_msg *m, const struct mp_http_hdr *h)
{
    static const char *const names[] = {"connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "proxy-authenticate",
                                        "proxy-authorization",
                                        "te",
                                        "trailer",
                                        "transfer-encoding",
                                        "upgrade"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name_is(m, h, names[i]))
            return true;
    return false;
}

/* RFC 9110 5.6.2: a field name is a token; nothing else (no space before
 * the colon, RFC 9112 5.1) is accepted. */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

bool mp_http_msg_names_ok(const struct mp_http_msg *m)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *h = &m->h[i];
        if (!h->name_len)
            return false;
        for (size_t k = 0; k < h->name_len; k++)
            if (!is_tchar(m->raw.data[h->name_off + k]))
                return false;
    }
    return true;
}

/* Appends "Name: value\r\n"; CR and LF inside a value (obsolete line
 * folding) become spaces, so no header can be smuggled in. */
static int put_header(struct mp_buf *out, const char *name, size_t nl, const char *val, size_t vl)
{
    if (mp_buf_reserve(out, nl + vl + 4))
        return -1;
    memcpy(out->data + out->len, name, nl);
    out->len += nl;
    out->data[out->len++] = ':';
    out->data[out->len++] = ' ';
    for (size_t i = 0; i < vl; i++) {
        char c = val[i];
        out->data[out->len++] = (uint8_t)(c == '\r' || c == '\n' ? ' ' : c);
    }
    out->data[out->len++] = '\r';
    out->data[out->len++] = '\n';
    return 0;
}

static int put_str(struct mp_buf *out, const char *s)
{
    return app(out, s, strlen(s));
}

static int put_kept(const struct mp_http_msg *m, const struct mp_http_head_opts *o, bool request,
                    const bool *drop, struct mp_buf *out);

static int put_headers(const struct mp_http_msg *m, const struct mp_http_head_opts *o, bool request,
                       struct mp_buf *out)
{
    bool *drop = calloc(m->n ? m->n : 1, sizeof *drop);
    if (!drop || connection_listed(m, drop)) {
        free(drop);
        return -1;
    }
    int rc = put_kept(m, o, request, drop, out);
    free(drop);
    return rc;
}

static int put_kept(const struct mp_http_msg *m, const struct mp_http_head_opts *o, bool request,
                    const bool *drop, struct mp_buf *out)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct mp_http_hdr *h = &m->h[i];
        if (drop[i] || hop_by_hop(m, h))
            continue;
        if (name_is(m, h, "content-length") && o->framing != MP_HTTP_KEEP_LENGTH)
            continue;
        if (request && o->host && name_is(m, h, "host"))
            continue;
        if (request && o->strip_accept_encoding && name_is(m, h, "accept-encoding"))
            continue;
        const char *name = (const char *)m->raw.data + h->name_off;
        const char *val = (const char *)m->raw.data + h->val_off;
        if (!request && o->rewrite_location && name_is(m, h, "location")) {
            struct mp_buf tmp = {0};
            int rc =
                mp_http_rewrite(o->rewrite_location, (const uint8_t *)val, h->val_len, &tmp) < 0 ||
                put_header(out, name, h->name_len, (const char *)tmp.data, tmp.len);
            mp_buf_free(&tmp);
            if (rc)
                return -1;
            continue;
        }
        if (put_header(out, name, h->name_len, val, h->val_len))
            return -1;
    }
    if (request && o->host && put_header(out, "Host", 4, o->host, strlen(o->host)))
        return -1;
    char line[64];
    if (o->framing == MP_HTTP_LENGTH) {
        snprintf(line, sizeof line, "Content-Length: %" PRIu64 "\r\n", o->length);
        if (put_str(out, line))
            return -1;
    } else if (o->framing == MP_HTTP_CHUNKED && put_str(out, "Transfer-Encoding: chunked\r\n")) {
        return -1;
    }
    if (o->close && put_str(out, "Connection: close\r\n"))
        return -1;
    return put_str(out, "\r\n");
}

int mp_http_request_head(const struct mp_http_msg *m, const char *method,
                         const struct mp_http_head_opts *o, struct mp_buf *out)
{
    if (put_str(out, method) || put_str(out, " ") || app(out, m->raw.data, m->url_len) ||
        put_str(out, " HTTP/1.1\r\n"))
        return -1;
    return put_headers(m, o, true, out);
}

int mp_http_response_head(const struct mp_http_msg *m, int status,
                          const struct mp_http_head_opts *o, struct mp_buf *out)
{
    char line[32];
    snprintf(line, sizeof line, "HTTP/1.1 %03d ", status % 1000);
    if (put_str(out, line))
        return -1;
    for (size_t i = 0; i < m->url_len; i++) { /* reason phrase, one line */
        uint8_t c = m->raw.data[i];
        if (app(out, c == '\r' || c == '\n' ? (const uint8_t *)" " : &c, 1))
            return -1;
    }
    if (put_str(out, "\r\n"))
        return -1;
    return put_headers(m, o, false, out);
}

void mp_http_log_text(char *dst, size_t n, const char *p, size_t len)
{
    if (!n)
        return;
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < n; i++) {
        unsigned char c = (unsigned char)p[i];
        dst[k++] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
    }
    dst[k] = 0;
}
