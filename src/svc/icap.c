/* ICAP (RFC 3507) REQMOD/RESPMOD with Preview and Allow: 204.
 * The request: ICAP head, the encapsulated HTTP head(s), then the body in
 * the chunked coding.  With a preview, the first `preview` bytes go out
 * ending in "0\r\n\r\n" (or "0; ieof" when that was all of it); the server
 * answers 100 Continue (send the rest), 204 (unchanged) or a final answer.
 * A 200 answer carries X-Infection-Found / X-Virus-ID / X-Violations-Found
 * and the modified HTTP message, which is read to its end so the
 * connection can be reused (keep-alive unless "Connection: close"). */
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { IC_HEAD, IC_SKIP, IC_BODY };

struct icap_conv {
    struct mp_svc_conv c;
    struct mp_svc_icap_req r;
    const uint8_t *body;
    size_t len, sent;
    int state;
    size_t skip;
    bool close;
    struct mp_svc_chunked ck;
};

static int icap_begin(struct mp_svc_conv *c, bool reused)
{
    struct icap_conv *k = (struct icap_conv *)c;
    const struct mp_svc_icap_req *r = &k->r;
    struct mp_buf h1 = {0}, h2 = {0};
    int rc = 0;
    const char *ct = r->content_type ? r->content_type : "application/octet-stream";
    if (r->reqmod) {
        rc |= mp_svc_printf(&h1,
                            "POST %s HTTP/1.1\r\nHost: mapiproxy\r\nContent-Type: %s\r\n"
                            "Content-Length: %zu\r\n\r\n",
                            r->http_url, ct, k->len);
    } else {
        rc |= mp_svc_printf(&h1, "GET %s HTTP/1.1\r\nHost: mapiproxy\r\n\r\n", r->http_url);
        rc |= mp_svc_printf(
            &h2, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", ct, k->len);
    }
    size_t pv = r->no_preview ? k->len : (r->preview < k->len ? r->preview : k->len);
    rc |= mp_svc_printf(&c->out, "%s icap://%s/%s ICAP/1.0\r\nHost: %s\r\nAllow: 204\r\n",
                        r->reqmod ? "REQMOD" : "RESPMOD", r->host, r->service, r->host);
    if (!r->no_preview)
        rc |= mp_svc_printf(&c->out, "Preview: %zu\r\n", pv);
    if (r->reqmod)
        rc |= mp_svc_printf(&c->out, "Encapsulated: req-hdr=0, req-body=%zu\r\n\r\n", h1.len);
    else
        rc |= mp_svc_printf(&c->out, "Encapsulated: req-hdr=0, res-hdr=%zu, res-body=%zu\r\n\r\n",
                            h1.len, h1.len + h2.len);
    rc |= mp_buf_append(&c->out, h1.data, h1.len) | mp_buf_append(&c->out, h2.data, h2.len);
    rc |= mp_svc_put_chunk(&c->out, k->body, pv);
    if (pv == k->len && !r->no_preview)
        rc |= mp_buf_append(&c->out, "0; ieof\r\n\r\n", 11);
    else
        rc |= mp_buf_append(&c->out, "0\r\n\r\n", 5);
    k->sent = pv;
    mp_buf_free(&h1);
    mp_buf_free(&h2);
    k->state = IC_HEAD;
    return rc ? MP_SVC_BAD : MP_SVC_MORE;
}

/* "Type=0; Resolution=2; Threat=Eicar-Test-Signature;" -> the Threat. */
static void take_threat(struct mp_svc_verdict *v, const char *s, size_t n)
{
    for (size_t i = 0; i + 7 <= n; i++)
        if (!memcmp(s + i, "Threat=", 7)) {
            size_t b = i + 7, e = b;
            while (e < n && s[e] != ';')
                e++;
            mp_svc_set_name(v, s + b, e - b);
            return;
        }
    mp_svc_set_name(v, s, n);
}

/* Encapsulated: "res-hdr=0, res-body=123" -> offset of the body part, and
 * whether there is one (null-body has none). */
static bool parse_encap(const char *s, size_t n, size_t *off, bool *has_body)
{
    size_t i = 0;
    bool any = false;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == ','))
            i++;
        size_t ns = i;
        while (i < n && s[i] != '=')
            i++;
        if (i >= n)
            return false;
        size_t ne = i++, vs = i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        size_t v;
        if (!mp_svc_parse_size(s + vs, i - vs, &v) || v > MP_SVC_MAX_HEAD)
            return false;
        const char *name = s + ns;
        size_t nl = ne - ns;
        if (nl >= 5 && !memcmp(name + nl - 5, "-body", 5)) {
            *off = v;
            *has_body = !(nl == 9 && !memcmp(name, "null-body", 9));
            any = true;
        }
    }
    return any;
}

static int icap_head(struct icap_conv *k, const uint8_t *p, size_t hl)
{
    struct mp_svc_conv *c = &k->c;
    int code;
    if (hl < 12 || memcmp(p, "ICAP/1.", 7) || sscanf((const char *)p + 9, "%3d", &code) != 1 ||
        p[8] != ' ')
        return MP_SVC_BAD;
    c->v.status = code;
    const uint8_t *q = p, *end = p + hl;
    struct mp_svc_hdr h;
    size_t off = 0;
    bool has_body = false, encap = false;
    while (mp_svc_hdr_next(&q, end, &h)) {
        if (mp_svc_hdr_is(&h, "X-Infection-Found")) {
            c->v.kind = MP_SVC_INFECTED;
            take_threat(&c->v, h.value, h.vlen);
        } else if (mp_svc_hdr_is(&h, "X-Virus-ID")) {
            c->v.kind = MP_SVC_INFECTED;
            if (!c->v.name[0])
                mp_svc_set_name(&c->v, h.value, h.vlen);
        } else if (mp_svc_hdr_is(&h, "X-Violations-Found")) {
            c->v.kind = MP_SVC_INFECTED;
        } else if (mp_svc_hdr_is(&h, "Encapsulated")) {
            if (!parse_encap(h.value, h.vlen, &off, &has_body))
                return MP_SVC_BAD;
            encap = true;
        } else if (mp_svc_hdr_is(&h, "Connection") && h.vlen == 5 && !memcmp(h.value, "close", 5)) {
            k->close = true;
        }
        if (mp_svc_hdr_is(&h, "X-Infection-Found") || mp_svc_hdr_is(&h, "X-Virus-ID") ||
            mp_svc_hdr_is(&h, "X-Violations-Found")) {
            if (mp_buf_append(&c->v.detail, h.name, (size_t)(h.value + h.vlen - h.name)) ||
                mp_buf_append(&c->v.detail, "\n", 1))
                return MP_SVC_BAD;
        }
    }
    if (code == 100)
        return 100;
    if (code == 204) {
        c->v.kind = MP_SVC_CLEAN;
        return MP_SVC_DONE;
    }
    if (code != 200) {
        c->v.kind = MP_SVC_ERROR;
        snprintf(c->v.name, sizeof c->v.name, "ICAP status %d", code);
        k->close = true;
        if (!encap)
            return MP_SVC_DONE;
    } else if (c->v.kind != MP_SVC_INFECTED) {
        c->v.kind = MP_SVC_MODIFIED;
    }
    if (!encap)
        return MP_SVC_BAD;
    k->skip = off;
    k->state = IC_SKIP;
    k->ck = (struct mp_svc_chunked){.max = MP_SVC_MAX_BODY};
    if (!has_body) { /* only the headers follow */
        k->ck.state = -1;
    }
    return MP_SVC_MORE;
}

static int icap_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct icap_conv *k = (struct icap_conv *)c;
    size_t i = 0;
    *used = 0;
    while (i < n) {
        if (k->state == IC_HEAD) {
            long hl = mp_svc_head_len(p + i, n - i, MP_SVC_MAX_HEAD);
            if (hl < 0)
                return MP_SVC_BAD;
            if (!hl)
                break;
            int r = icap_head(k, p + i, (size_t)hl);
            i += (size_t)hl;
            if (r == 100) {
                if (k->sent >= k->len && !k->r.no_preview)
                    return MP_SVC_BAD; /* nothing more to send */
                if (mp_svc_put_chunk(&c->out, k->body + k->sent, k->len - k->sent) ||
                    mp_buf_append(&c->out, "0\r\n\r\n", 5))
                    return MP_SVC_BAD;
                k->sent = k->len;
                continue;
            }
            if (r != MP_SVC_MORE) {
                *used = i;
                c->reusable = r == MP_SVC_DONE && !k->close;
                return r;
            }
        } else if (k->state == IC_SKIP) {
            size_t t = n - i < k->skip ? n - i : k->skip;
            k->skip -= t;
            i += t;
            if (k->skip)
                break;
            if (k->ck.state == -1) {
                *used = i;
                c->reusable = !k->close;
                return MP_SVC_DONE;
            }
            k->state = IC_BODY;
        } else {
            size_t u = 0;
            int r = mp_svc_chunked_feed(&k->ck, p + i, n - i, &u, NULL);
            i += u;
            if (r != MP_SVC_MORE) {
                *used = i;
                c->reusable = r == MP_SVC_DONE && !k->close;
                return r;
            }
            break;
        }
    }
    *used = i;
    return MP_SVC_MORE;
}

static int icap_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void icap_free(struct mp_svc_conv *c)
{
    free(c);
}

static const struct mp_svc_ops icap_ops = {"icap",   icap_begin, icap_feed,
                                           icap_eof, icap_free,  true};

struct mp_svc_conv *mp_svc_icap_new(const struct mp_svc_icap_req *r, const uint8_t *body,
                                    size_t len)
{
    struct icap_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &icap_ops;
    k->r = *r;
    if (!k->r.http_url)
        k->r.http_url = "/message.eml";
    k->body = body;
    k->len = len;
    return &k->c;
}
