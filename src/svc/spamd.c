/* spamd, SPAMC/1.5: "CHECK SPAMC/1.5", Content-length, User, an empty line,
 * the message.  Reply: "SPAMD/1.1 0 EX_OK", headers ("Spam: True ; 1000.0 /
 * 5.0", Content-length), an empty line, a body for SYMBOLS (comma list) and
 * REPORT (text).  spamd closes the connection after each answer. */
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spamd_conv {
    struct mp_svc_conv c;
    enum mp_svc_spamd_cmd cmd;
    const char *user;
    const uint8_t *msg;
    size_t len;
    bool head_done, have_len;
    size_t body_len;
};

static const char *const spamd_cmds[] = {"CHECK", "SYMBOLS", "REPORT"};

static int spamd_begin(struct mp_svc_conv *c, bool reused)
{
    struct spamd_conv *s = (struct spamd_conv *)c;
    if (mp_svc_printf(&c->out, "%s SPAMC/1.5\r\nContent-length: %zu\r\n", spamd_cmds[s->cmd],
                      s->len) ||
        (s->user && mp_svc_printf(&c->out, "User: %s\r\n", s->user)) ||
        mp_buf_append(&c->out, "\r\n", 2) || mp_buf_append(&c->out, s->msg, s->len))
        return MP_SVC_BAD;
    return MP_SVC_MORE;
}

/* "True ; 1000.0 / 5.0" */
static bool parse_spam(struct mp_svc_verdict *v, const char *s, size_t n)
{
    char tmp[128];
    if (n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char word[8];
    double sc, req;
    if (sscanf(tmp, "%7s ; %lf / %lf", word, &sc, &req) != 3)
        return false;
    v->kind = !strcmp(word, "True") || !strcmp(word, "Yes") ? MP_SVC_SPAM : MP_SVC_CLEAN;
    v->score = sc;
    v->required = req;
    v->has_score = true;
    return true;
}

static int spamd_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct spamd_conv *s = (struct spamd_conv *)c;
    *used = 0;
    if (!s->head_done) {
        long hl = mp_svc_head_len(p, n, MP_SVC_MAX_HEAD);
        if (hl < 0)
            return MP_SVC_BAD;
        if (!hl)
            return MP_SVC_MORE;
        int code = -1;
        char msg[64] = "";
        if (n < 10 || memcmp(p, "SPAMD/1.", 8))
            return MP_SVC_BAD;
        const uint8_t *sp = memchr(p, ' ', (size_t)hl);
        if (!sp)
            return MP_SVC_BAD;
        char line[96];
        size_t ll = (size_t)hl - (size_t)(sp - p) < sizeof line - 1 ? (size_t)hl - (size_t)(sp - p)
                                                                    : sizeof line - 1;
        memcpy(line, sp, ll);
        line[ll] = 0;
        if (sscanf(line, " %d %63s", &code, msg) < 1)
            return MP_SVC_BAD;
        c->v.status = code;
        const uint8_t *q = p, *end = p + hl;
        struct mp_svc_hdr h;
        bool spam_seen = false;
        while (mp_svc_hdr_next(&q, end, &h)) {
            if (mp_svc_hdr_is(&h, "Content-length")) {
                if (!mp_svc_parse_size(h.value, h.vlen, &s->body_len) ||
                    s->body_len > MP_SVC_MAX_BODY)
                    return MP_SVC_BAD;
                s->have_len = true;
            } else if (mp_svc_hdr_is(&h, "Spam")) {
                if (!parse_spam(&c->v, h.value, h.vlen))
                    return MP_SVC_BAD;
                spam_seen = true;
            }
        }
        if (code != 0) {
            c->v.kind = MP_SVC_ERROR;
            snprintf(c->v.name, sizeof c->v.name, "spamd %d %s", code, msg);
        } else if (!spam_seen) {
            return MP_SVC_BAD;
        }
        s->head_done = true;
        *used = (size_t)hl;
        p += hl;
        n -= (size_t)hl;
        if (s->cmd == MP_SPAMD_CHECK && !s->have_len)
            return MP_SVC_DONE;
    }
    size_t want = s->have_len ? s->body_len - c->v.detail.len : n;
    size_t k = n < want ? n : want;
    if (!s->have_len && c->v.detail.len + k > MP_SVC_MAX_BODY)
        return MP_SVC_BAD;
    if (mp_buf_append(&c->v.detail, p, k))
        return MP_SVC_BAD;
    *used += k;
    return s->have_len && c->v.detail.len == s->body_len ? MP_SVC_DONE : MP_SVC_MORE;
}

static int spamd_eof(struct mp_svc_conv *c)
{
    struct spamd_conv *s = (struct spamd_conv *)c;
    return s->head_done && !s->have_len ? MP_SVC_DONE : MP_SVC_BAD;
}

static void spamd_free(struct mp_svc_conv *c)
{
    free(c);
}

static const struct mp_svc_ops spamd_ops = {"spamd",   spamd_begin, spamd_feed,
                                            spamd_eof, spamd_free,  false};

struct mp_svc_conv *mp_svc_spamd_new(enum mp_svc_spamd_cmd cmd, const char *user,
                                     const uint8_t *msg, size_t len)
{
    struct spamd_conv *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->c.ops = &spamd_ops;
    s->cmd = cmd;
    s->user = user;
    s->msg = msg;
    s->len = len;
    return &s->c;
}
