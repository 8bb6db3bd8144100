/* extract: hands each message (its MIME, with metadata) to outside
 * services and maps their answers to actions:
 *   LMTP (RFC 2033) to any LMTP server: delivered -> allow, 5xx -> reject,
 *     4xx -> tempfail;
 *   a milter (the MTA side of protocol 6; clamav-milter, rspamd's milter
 *     mode): accept/continue -> allow, reject/discard -> reject,
 *     tempfail -> the fail policy, quarantine -> quarantine, header edits ->
 *     named properties (PS_INTERNET_HEADERS);
 *   a unix socket with the framing of doc/extract.md, for custom services.
 * A "reject" is acted on with action_upload / action_download.
 * doc/extract.md. */
#include "sec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct extract {
    struct sec_ctx sc;
    struct mp_svc *lmtp, *milter, *sock;
    char *from, *lhlo;
    char *rcpt[16];
    size_t nrcpt;
};

struct xjob {
    struct mp_buf edits; /* milter header edits, as milter.c notes them */
    char tag[64];        /* a socket service's TAG prefix */
    char *meta;          /* the socket frame's JSON */
    const char *rcpt[18];
};

static void xjob_free(struct xjob *x)
{
    if (!x)
        return;
    mp_buf_free(&x->edits);
    free(x->meta);
    free(x);
}

/* ---- the unix-socket framing (doc/extract.md) ----
 * request:  "MPX1", u32 BE length of the JSON metadata, the JSON,
 *           u64 BE length of the MIME, the MIME;
 * answer:   one line, at most 1024 bytes, ended by LF:
 *           ALLOW | BLOCK reason | QUARANTINE reason | TAG prefix |
 *           TEMPFAIL reason.  One message per connection. */
struct sock_conv {
    struct mp_svc_conv c;
    const char *meta;
    const uint8_t *mime;
    size_t len;
    struct mp_buf line;
};

static int sock_begin(struct mp_svc_conv *c, bool reused)
{
    struct sock_conv *k = (struct sock_conv *)c;
    size_t ml = strlen(k->meta);
    uint8_t h[8];
    int rc = mp_buf_append(&c->out, "MPX1", 4);
    for (int i = 0; i < 4; i++)
        h[i] = (uint8_t)(ml >> (24 - 8 * i));
    rc |= mp_buf_append(&c->out, h, 4) | mp_buf_append(&c->out, k->meta, ml);
    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t)((uint64_t)k->len >> (56 - 8 * i));
    rc |= mp_buf_append(&c->out, h, 8) | mp_buf_append(&c->out, k->mime, k->len);
    return rc ? MP_SVC_BAD : MP_SVC_MORE;
}

static bool word(const char *l, const char *w, const char **rest)
{
    size_t n = strlen(w);
    if (strncmp(l, w, n) || (l[n] && l[n] != ' '))
        return false;
    *rest = l[n] ? l + n + 1 : "";
    return true;
}

static int sock_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct sock_conv *k = (struct sock_conv *)c;
    const uint8_t *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) + 1 : n;
    *used = take;
    c->answered = true;
    if (k->line.len + take > 1025)
        return MP_SVC_BAD;
    if (mp_buf_append(&k->line, p, take))
        return MP_SVC_BAD;
    if (!nl)
        return MP_SVC_MORE;
    char l[1100];
    size_t ll = k->line.len - 1;
    memcpy(l, k->line.data, ll);
    if (ll && l[ll - 1] == '\r')
        ll--;
    l[ll] = 0;
    const char *rest;
    if (word(l, "ALLOW", &rest) || word(l, "OK", &rest))
        c->v.kind = MP_SVC_CLEAN;
    else if (word(l, "BLOCK", &rest))
        c->v.kind = MP_SVC_REJECT;
    else if (word(l, "QUARANTINE", &rest))
        c->v.kind = MP_SVC_QUARANTINE;
    else if (word(l, "TAG", &rest))
        c->v.kind = MP_SVC_MODIFIED;
    else if (word(l, "TEMPFAIL", &rest))
        c->v.kind = MP_SVC_TEMPFAIL;
    else
        return MP_SVC_BAD;
    mp_svc_set_name(&c->v, rest, strlen(rest));
    return MP_SVC_DONE;
}

static int sock_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void sock_free(struct mp_svc_conv *c)
{
    struct sock_conv *k = (struct sock_conv *)c;
    mp_buf_free(&k->line);
    free(k);
}

static const struct mp_svc_ops sock_ops = {"socket", sock_begin, sock_feed,
                                           sock_eof, sock_free,  false};

static struct mp_svc_conv *sock_new(const char *meta, const uint8_t *mime, size_t len)
{
    struct sock_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &sock_ops;
    k->meta = meta;
    k->mime = mime;
    k->len = len;
    return &k->c;
}

/* ---- actions ---- */
/* milter.c notes "add header: Name|value|" (NULs as '|'); change and
 * insert carry a 4-byte index first. */
static void apply_edits(struct sec_job *j, struct xjob *x)
{
    static const uint8_t ps[16] = MP_PS_INTERNET_HEADERS;
    const char *p = (const char *)x->edits.data, *end = p + x->edits.len;
    while (p && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char line[1200];
        if (ll < sizeof line) {
            memcpy(line, p, ll);
            line[ll] = 0;
            char *h = NULL;
            if (!strncmp(line, "add header: ", 12))
                h = line + 12;
            else if (!strncmp(line, "change header: ", 15) && ll >= 19)
                h = line + 19;
            else if (!strncmp(line, "insert header: ", 15) && ll >= 19)
                h = line + 19;
            char *bar = h ? strchr(h, '|') : NULL;
            if (bar && bar > h) {
                *bar = 0;
                char *v = bar + 1, *vb = strchr(v, '|');
                if (vb)
                    *vb = 0;
                while (*v == ' ')
                    v++;
                mp_message_set_named_string(j->ev, ps, h, v);
            }
        }
        p = nl ? nl + 1 : NULL;
    }
}

static void extract_apply(struct sec_job *j, enum sec_action a)
{
    struct xjob *x = j->priv;
    if (!x || a != SEC_ACT_TAG)
        return;
    if (x->edits.len)
        apply_edits(j, x);
    if (x->tag[0])
        mp_message_prefix_subject(j->ev, x->tag);
    else if (j->r.kind != MP_SVC_MODIFIED)
        mp_message_prefix_subject(j->ev, j->sc->tag_prefix ? j->sc->tag_prefix : "[REJECTED] ");
}

static void x_done(struct mp_svc_conv *c, void *arg)
{
    struct sec_job *j = arg;
    struct xjob *x = j->priv;
    if (c->ops->name && !strcmp(c->ops->name, "socket") && c->v.kind == MP_SVC_MODIFIED)
        snprintf(x->tag, sizeof x->tag, "%.60s ", c->v.name);
    else if (c->v.kind == MP_SVC_MODIFIED || c->v.kind == MP_SVC_QUARANTINE)
        mp_buf_append(&x->edits, c->v.detail.data + c->v.detail.off,
                      c->v.detail.len - c->v.detail.off);
    sec_job_merge(j, &c->v);
    if (--j->pending == 0) {
        if (j->r.kind == MP_SVC_QUARANTINE && j->sc->quarantine_dir)
            j->force_action = SEC_ACT_QUARANTINE;
        sec_job_finish(j);
        xjob_free(x);
    }
}

static void submit(struct sec_job *j, struct mp_svc *s, struct mp_svc_conv *c)
{
    if (!c) {
        j->r.kind = MP_SVC_UNAVAILABLE;
        return;
    }
    j->pending++;
    mp_svc_submit(s, c, x_done, j);
}

static char *metadata(struct mp_message_event *ev, size_t mime_len)
{
    char user[300], subj[600], peer[100], buf[1400];
    const struct mp_message *m = mp_message_event_message(ev);
    sec_json_str(user, sizeof user, mp_message_event_user(ev) ? mp_message_event_user(ev) : "");
    sec_json_str(subj, sizeof subj, m ? mp_message_string(ev, m, 0x0037) : "");
    sec_json_str(peer, sizeof peer, mp_message_event_peer(ev) ? mp_message_event_peer(ev) : "");
    snprintf(buf, sizeof buf,
             "{\"user\":\"%s\",\"peer\":\"%s\",\"transport\":\"%s\",\"direction\":\"%s\","
             "\"mode\":\"%s\",\"folder_id\":\"0x%016llx\",\"message_id\":\"0x%016llx\","
             "\"completed_by\":\"%s\",\"subject\":\"%s\",\"size\":%zu}",
             user, peer, mp_message_event_transport(ev) ? mp_message_event_transport(ev) : "",
             mp_message_dir_name(mp_message_event_dir(ev)),
             mp_message_mode_name(mp_message_event_mode(ev)),
             (unsigned long long)mp_message_event_folder_id(ev),
             (unsigned long long)mp_message_event_message_id(ev),
             mp_message_event_completed_by(ev) ? mp_message_event_completed_by(ev) : "", subj,
             mime_len);
    return strdup(buf);
}

static enum mp_status extract_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct extract *xt = mp_module_private(mc);
    struct sec_job *j = sec_job_start(&xt->sc, ev, extract_apply);
    if (!j)
        return MP_CONTINUE;
    snprintf(j->service, sizeof j->service, "%s%s%s%s%s", xt->lmtp ? "lmtp" : "",
             xt->lmtp && (xt->milter || xt->sock) ? "+" : "", xt->milter ? "milter" : "",
             xt->milter && xt->sock ? "+" : "", xt->sock ? "socket" : "");
    int rc = sec_job_load_mime(j);
    struct xjob *x = rc ? NULL : calloc(1, sizeof *x);
    if (!x) {
        j->r.kind = rc > 0 ? MP_SVC_TOOBIG : MP_SVC_UNAVAILABLE;
        return sec_job_wait(j);
    }
    j->priv = x;
    /* recipients: the configured ones, else the message's own */
    size_t nr = 0;
    for (size_t i = 0; i < xt->nrcpt; i++)
        x->rcpt[nr++] = xt->rcpt[i];
    const struct mp_message *m = mp_message_event_message(ev);
    for (size_t i = 0; !xt->nrcpt && m && i < mp_message_recipient_count(m) && nr < 16; i++) {
        const char *dn, *addr;
        if (!mp_message_recipient(ev, m, i, &dn, &addr) && addr && strchr(addr, '@'))
            x->rcpt[nr++] = addr;
    }
    if (!nr)
        x->rcpt[nr++] = "postmaster@localhost";
    x->rcpt[nr] = NULL;
    if (xt->lmtp) {
        struct mp_svc_lmtp_req r = {.lhlo = xt->lhlo, .from = xt->from, .rcpt = x->rcpt};
        submit(j, xt->lmtp, mp_svc_lmtp_new(&r, j->mime, j->mime_len));
    }
    if (xt->milter) {
        struct mp_svc_milter_req r = {.client_host = "localhost",
                                      .client_addr = "127.0.0.1",
                                      .helo = xt->lhlo,
                                      .from = xt->from,
                                      .rcpt = x->rcpt};
        submit(j, xt->milter, mp_svc_milter_new(&r, j->mime, j->mime_len));
    }
    if (xt->sock) {
        x->meta = metadata(ev, j->mime_len);
        submit(j, xt->sock, x->meta ? sock_new(x->meta, j->mime, j->mime_len) : NULL);
    }
    if (!j->pending) {
        j->priv = NULL;
        xjob_free(x);
    }
    return sec_job_wait(j);
}

static int extract_init(struct mp_module_ctx *mc)
{
    struct extract *xt = calloc(1, sizeof *xt);
    if (!xt)
        return -1;
    mp_module_set_private(mc, xt);
    if (sec_init(&xt->sc, mc, "both", SEC_ACT_BLOCK, SEC_ACT_BLOCK))
        return -1;
    sec_cache_disable(&xt->sc); /* a hand-off happens for every message */
    const char *lmtp = mp_module_option(mc, "lmtp"), *milter = mp_module_option(mc, "milter"),
               *sock = mp_module_option(mc, "socket");
    if (!lmtp && !milter && !sock) {
        mp_module_log(mc, MP_MLOG_ERROR, "set extract:lmtp, extract:milter and/or extract:socket");
        return -1;
    }
    const char *from = mp_module_option(mc, "from");
    xt->from = strdup(from ? from : "mapiproxy@localhost");
    const char *lhlo = mp_module_option(mc, "helo");
    xt->lhlo = strdup(lhlo ? lhlo : "mapiproxy");
    const char *rc = mp_module_option(mc, "rcpt");
    while (rc && *rc && xt->nrcpt < 16) {
        rc += strspn(rc, ", ");
        size_t l = strcspn(rc, ", ");
        if (!l)
            break;
        xt->rcpt[xt->nrcpt++] = strndup(rc, l);
        rc += l;
    }
    if (!xt->from || !xt->lhlo)
        return -1;
    if (lmtp && !(xt->lmtp = sec_service(&xt->sc, "lmtp", lmtp)))
        return -1;
    if (milter && !(xt->milter = sec_service(&xt->sc, "milter", milter)))
        return -1;
    if (sock && !(xt->sock = sec_service(&xt->sc, "socket", sock)))
        return -1;
    return 0;
}

static void extract_fini(struct mp_module_ctx *mc)
{
    struct extract *xt = mp_module_private(mc);
    if (!xt)
        return;
    mp_svc_free(xt->lmtp);
    mp_svc_free(xt->milter);
    mp_svc_free(xt->sock);
    sec_fini(&xt->sc);
    for (size_t i = 0; i < xt->nrcpt; i++)
        free(xt->rcpt[i]);
    free(xt->from);
    free(xt->lhlo);
    free(xt);
}

static const struct mp_module_option_spec extract_options[] = {
    SEC_COMMON_OPTIONS,
    {"lmtp", MP_OPT_STRING, 0, 0, NULL},
    {"milter", MP_OPT_STRING, 0, 0, NULL},
    {"socket", MP_OPT_STRING, 0, 0, NULL},
    {"from", MP_OPT_STRING, 0, 0, NULL},
    {"rcpt", MP_OPT_STRING, 0, 0, NULL},
    {"helo", MP_OPT_STRING, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "extract",
    .description = "hands every message's MIME to LMTP, a milter or a unix socket",
    .init = extract_init,
    .fini = extract_fini,
    .options = extract_options,
    .message = extract_message,
};
