/* rspamd's HTTP API: POST /checkv2 with the message as the body and its
 * envelope in headers (From, Rcpt, IP, Helo, User, Queue-Id, Password);
 * the answer is JSON: {"action": "...", "score": s, "required_score": r,
 * "symbols": {"NAME": {"score": ...}, ...}}.  HTTP/1.1 keep-alive. */
#include "svc/svc.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RS_HEAD, RS_LEN, RS_CHUNKED };

struct rspamd_conv {
    struct mp_svc_conv c;
    struct mp_svc_rspamd_req r;
    const uint8_t *msg;
    size_t len;
    int state;
    size_t body_len;
    bool close;
    struct mp_buf body;
    struct mp_svc_chunked ck;
};

static int rspamd_begin(struct mp_svc_conv *c, bool reused)
{
    struct rspamd_conv *k = (struct rspamd_conv *)c;
    const struct mp_svc_rspamd_req *r = &k->r;
    int rc = mp_svc_printf(&c->out,
                           "POST /checkv2 HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n"
                           "Content-Length: %zu\r\n",
                           r->host ? r->host : "localhost", k->len);
    const char *const names[] = {"From", "Rcpt", "IP", "Helo", "User", "Queue-Id", "Password"};
    const char *const vals[] = {r->from, r->rcpt,     r->ip,      r->helo,
                                r->user, r->queue_id, r->password};
    for (size_t i = 0; i < 7; i++)
        if (vals[i] && !strpbrk(vals[i], "\r\n"))
            rc |= mp_svc_printf(&c->out, "%s: %s\r\n", names[i], vals[i]);
    rc |= mp_buf_append(&c->out, "\r\n", 2) | mp_buf_append(&c->out, k->msg, k->len);
    k->state = RS_HEAD;
    k->close = false;
    k->body.off = k->body.len = 0;
    return rc ? MP_SVC_BAD : MP_SVC_MORE;
}

int mp_svc_rspamd_parse_json(struct mp_svc_verdict *v, const char *json, size_t len)
{
    if (len > MP_SVC_MAX_BODY || len > INT32_MAX)
        return -1;
    struct json_tokener *tok = json_tokener_new_ex(32);
    if (!tok)
        return -1;
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return -1;
    }
    json_object *a, *s, *rq, *syms;
    if (!json_object_object_get_ex(o, "action", &a) || !json_object_is_type(a, json_type_string)) {
        json_object_put(o);
        return -1;
    }
    const char *act = json_object_get_string(a);
    mp_svc_set_name(v, act, strlen(act));
    if (json_object_object_get_ex(o, "score", &s) &&
        (json_object_is_type(s, json_type_double) || json_object_is_type(s, json_type_int))) {
        v->score = json_object_get_double(s);
        v->has_score = true;
    }
    if (json_object_object_get_ex(o, "required_score", &rq) &&
        (json_object_is_type(rq, json_type_double) || json_object_is_type(rq, json_type_int)))
        v->required = json_object_get_double(rq);
    if (json_object_object_get_ex(o, "symbols", &syms) &&
        json_object_is_type(syms, json_type_object)) {
        json_object_object_foreach(syms, key, val)
        {
            json_object *sc;
            double d = 0;
            if (json_object_is_type(val, json_type_object) &&
                json_object_object_get_ex(val, "score", &sc))
                d = json_object_get_double(sc);
            if (v->detail.len < MP_SVC_MAX_BODY)
                mp_svc_printf(&v->detail, "%s(%.2f)\n", key, d);
        }
    }
    if (!strcmp(act, "no action") || !strcmp(act, "greylist"))
        v->kind = MP_SVC_CLEAN;
    else if (!strcmp(act, "reject"))
        v->kind = MP_SVC_REJECT;
    else if (!strcmp(act, "soft reject"))
        v->kind = MP_SVC_TEMPFAIL;
    else if (!strcmp(act, "add header") || !strcmp(act, "rewrite subject"))
        v->kind = MP_SVC_SPAM;
    else
        v->kind = MP_SVC_ERROR;
    json_object_put(o);
    return 0;
}

static int finish(struct rspamd_conv *k)
{
    struct mp_svc_conv *c = &k->c;
    c->reusable = !k->close;
    if (c->v.status != 200) {
        c->v.kind = MP_SVC_ERROR;
        snprintf(c->v.name, sizeof c->v.name, "rspamd HTTP %d", c->v.status);
        return MP_SVC_DONE;
    }
    if (mp_svc_rspamd_parse_json(&c->v, (const char *)k->body.data, k->body.len))
        return MP_SVC_BAD;
    return MP_SVC_DONE;
}

static int rspamd_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct rspamd_conv *k = (struct rspamd_conv *)c;
    size_t i = 0;
    *used = 0;
    if (k->state == RS_HEAD) {
        long hl = mp_svc_head_len(p, n, MP_SVC_MAX_HEAD);
        if (hl < 0)
            return MP_SVC_BAD;
        if (!hl)
            return MP_SVC_MORE;
        int code;
        if (hl < 13 || memcmp(p, "HTTP/1.", 7) || p[8] != ' ' ||
            sscanf((const char *)p + 9, "%3d", &code) != 1)
            return MP_SVC_BAD;
        c->v.status = code;
        const uint8_t *q = p, *end = p + hl;
        struct mp_svc_hdr h;
        bool have_len = false, chunked = false;
        k->close = p[7] == '0';
        while (mp_svc_hdr_next(&q, end, &h)) {
            if (mp_svc_hdr_is(&h, "Content-Length")) {
                if (!mp_svc_parse_size(h.value, h.vlen, &k->body_len) ||
                    k->body_len > MP_SVC_MAX_BODY)
                    return MP_SVC_BAD;
                have_len = true;
            } else if (mp_svc_hdr_is(&h, "Transfer-Encoding")) {
                chunked = h.vlen == 7 && !memcmp(h.value, "chunked", 7);
                if (!chunked)
                    return MP_SVC_BAD;
            } else if (mp_svc_hdr_is(&h, "Connection")) {
                k->close = h.vlen == 5 && !memcmp(h.value, "close", 5);
            }
        }
        if (!have_len && !chunked)
            return MP_SVC_BAD;
        k->state = chunked ? RS_CHUNKED : RS_LEN;
        k->ck = (struct mp_svc_chunked){.max = MP_SVC_MAX_BODY};
        i = (size_t)hl;
    }
    if (k->state == RS_LEN) {
        size_t want = k->body_len - k->body.len, t = n - i < want ? n - i : want;
        if (mp_buf_append(&k->body, p + i, t))
            return MP_SVC_BAD;
        *used = i + t;
        return k->body.len == k->body_len ? finish(k) : MP_SVC_MORE;
    }
    size_t u = 0;
    int r = mp_svc_chunked_feed(&k->ck, p + i, n - i, &u, &k->body);
    *used = i + u;
    if (r == MP_SVC_DONE && k->ck.total > MP_SVC_MAX_BODY)
        return MP_SVC_BAD;
    return r == MP_SVC_DONE ? finish(k) : r;
}

static int rspamd_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void rspamd_free(struct mp_svc_conv *c)
{
    struct rspamd_conv *k = (struct rspamd_conv *)c;
    mp_buf_free(&k->body);
    free(k);
}

static const struct mp_svc_ops rspamd_ops = {"rspamd",   rspamd_begin, rspamd_feed,
                                             rspamd_eof, rspamd_free,  true};

struct mp_svc_conv *mp_svc_rspamd_new(const struct mp_svc_rspamd_req *r, const uint8_t *msg,
                                      size_t len)
{
    struct rspamd_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &rspamd_ops;
    k->r = *r;
    k->msg = msg;
    k->len = len;
    return &k->c;
}
