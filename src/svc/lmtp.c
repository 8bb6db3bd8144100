/* LMTP (RFC 2033): greeting, LHLO, MAIL FROM, RCPT TO per recipient, DATA
 * with the message dot-stuffed (bare LF sent as CRLF), then one reply per
 * accepted recipient.  A pooled connection starts again with RSET. */
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LM_GREET, LM_LHLO, LM_RSET, LM_MAIL, LM_RCPT, LM_DATA, LM_BODY };

struct lmtp_conv {
    struct mp_svc_conv c;
    struct mp_svc_lmtp_req r;
    const uint8_t *msg;
    size_t len;
    int state;
    size_t nrcpt, rcpt_i, accepted, replies, ok, perm, temp;
    uint8_t *acc; /* which recipients were accepted */
};

static int put_data(struct mp_buf *out, const uint8_t *m, size_t n)
{
    size_t i = 0;
    bool bol = true;
    while (i < n) {
        if (bol && m[i] == '.' && mp_buf_append(out, ".", 1))
            return -1;
        const uint8_t *nl = memchr(m + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - m) : n; /* line is [i, e) */
        size_t le = e > i && m[e - 1] == '\r' ? e - 1 : e;
        if (mp_buf_append(out, m + i, le - i) || mp_buf_append(out, "\r\n", 2))
            return -1;
        i = nl ? e + 1 : n;
        bol = true;
    }
    return mp_buf_append(out, ".\r\n", 3);
}

static int lmtp_begin(struct mp_svc_conv *c, bool reused)
{
    struct lmtp_conv *k = (struct lmtp_conv *)c;
    k->rcpt_i = k->accepted = k->replies = k->ok = k->perm = k->temp = 0;
    if (!k->nrcpt)
        return MP_SVC_BAD;
    if (reused) {
        k->state = LM_RSET;
        return mp_buf_append(&c->out, "RSET\r\n", 6) ? MP_SVC_BAD : MP_SVC_MORE;
    }
    k->state = LM_GREET;
    return MP_SVC_MORE;
}

static int send_mail(struct lmtp_conv *k)
{
    k->state = LM_MAIL;
    return mp_svc_printf(&k->c.out, "MAIL FROM:<%s>\r\n", k->r.from ? k->r.from : "");
}

static int note(struct lmtp_conv *k, int code, const char *line, size_t n, const char *what)
{
    if (k->c.v.detail.len < MP_SVC_MAX_BODY)
        mp_svc_printf(&k->c.v.detail, "%s %.*s\n", what, (int)(n > 512 ? 512 : n), line);
    if (code >= 500)
        k->perm++;
    else if (code >= 400)
        k->temp++;
    return 0;
}

static int finish(struct lmtp_conv *k, const char *line, size_t n)
{
    struct mp_svc_conv *c = &k->c;
    c->v.kind = k->perm ? MP_SVC_REJECT : k->temp ? MP_SVC_TEMPFAIL : MP_SVC_CLEAN;
    snprintf(c->v.name, sizeof c->v.name, "%zu of %zu recipients delivered", k->ok, k->nrcpt);
    c->reusable = true;
    return MP_SVC_DONE;
}

/* One complete reply (the last line of a multi-line one decides). */
static int on_reply(struct lmtp_conv *k, int code, const char *line, size_t n)
{
    struct mp_svc_conv *c = &k->c;
    c->v.status = code;
    switch (k->state) {
    case LM_GREET:
        if (code != 220)
            goto fail;
        k->state = LM_LHLO;
        return mp_svc_printf(&c->out, "LHLO %s\r\n", k->r.lhlo ? k->r.lhlo : "mapiproxy")
                   ? MP_SVC_BAD
                   : MP_SVC_MORE;
    case LM_LHLO:
    case LM_RSET:
        if (code != 250)
            goto fail;
        return send_mail(k) ? MP_SVC_BAD : MP_SVC_MORE;
    case LM_MAIL:
        if (code != 250)
            goto fail;
        k->state = LM_RCPT;
        return mp_svc_printf(&c->out, "RCPT TO:<%s>\r\n", k->r.rcpt[0]) ? MP_SVC_BAD : MP_SVC_MORE;
    case LM_RCPT:
        k->acc[k->rcpt_i] = code >= 200 && code < 300;
        if (k->acc[k->rcpt_i])
            k->accepted++;
        else
            note(k, code, line, n, k->r.rcpt[k->rcpt_i]);
        if (++k->rcpt_i < k->nrcpt)
            return mp_svc_printf(&c->out, "RCPT TO:<%s>\r\n", k->r.rcpt[k->rcpt_i]) ? MP_SVC_BAD
                                                                                    : MP_SVC_MORE;
        if (!k->accepted)
            return finish(k, line, n);
        k->state = LM_DATA;
        return mp_buf_append(&c->out, "DATA\r\n", 6) ? MP_SVC_BAD : MP_SVC_MORE;
    case LM_DATA:
        if (code != 354)
            goto fail;
        k->state = LM_BODY;
        k->rcpt_i = 0;
        return put_data(&c->out, k->msg, k->len) ? MP_SVC_BAD : MP_SVC_MORE;
    case LM_BODY:
        while (k->rcpt_i < k->nrcpt && !k->acc[k->rcpt_i])
            k->rcpt_i++;
        if (k->rcpt_i >= k->nrcpt)
            return MP_SVC_BAD;
        if (code >= 200 && code < 300)
            k->ok++;
        note(k, code, line, n, k->r.rcpt[k->rcpt_i]);
        k->rcpt_i++;
        return ++k->replies == k->accepted ? finish(k, line, n) : MP_SVC_MORE;
    }
fail:
    c->v.kind = code >= 500 ? MP_SVC_REJECT : code >= 400 ? MP_SVC_TEMPFAIL : MP_SVC_ERROR;
    mp_svc_set_name(&c->v, line, n);
    c->reusable = false;
    return MP_SVC_DONE;
}

static int lmtp_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct lmtp_conv *k = (struct lmtp_conv *)c;
    size_t i = 0;
    *used = 0;
    while (i < n) {
        const uint8_t *nl = memchr(p + i, '\n', n - i);
        if (!nl)
            return n - i > MP_SVC_MAX_LINE ? MP_SVC_BAD : MP_SVC_MORE;
        size_t ll = (size_t)(nl - (p + i));
        const char *line = (const char *)p + i;
        i += ll + 1;
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll > MP_SVC_MAX_LINE || ll < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
            line[1] > '9' || line[2] < '0' || line[2] > '9' ||
            (ll > 3 && line[3] != ' ' && line[3] != '-'))
            return MP_SVC_BAD;
        *used = i;
        if (ll > 3 && line[3] == '-')
            continue;
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        int r = on_reply(k, code, line, ll);
        if (r != MP_SVC_MORE)
            return r;
        /* replies come one by one: anything more is pipelined junk */
    }
    return MP_SVC_MORE;
}

static int lmtp_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void lmtp_free(struct mp_svc_conv *c)
{
    struct lmtp_conv *k = (struct lmtp_conv *)c;
    free(k->acc);
    free(k);
}

static const struct mp_svc_ops lmtp_ops = {"lmtp",   lmtp_begin, lmtp_feed,
                                           lmtp_eof, lmtp_free,  true};

struct mp_svc_conv *mp_svc_lmtp_new(const struct mp_svc_lmtp_req *r, const uint8_t *msg, size_t len)
{
    struct lmtp_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &lmtp_ops;
    k->r = *r;
    while (r->rcpt && r->rcpt[k->nrcpt])
        k->nrcpt++;
    k->acc = calloc(k->nrcpt + 1, 1);
    if (!k->acc) {
        free(k);
        return NULL;
    }
    k->msg = msg;
    k->len = len;
    return &k->c;
}
