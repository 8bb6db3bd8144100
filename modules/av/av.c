/* av: antivirus for whole messages, with clamd (zINSTREAM, unix or TCP)
 * and/or an ICAP server (RFC 3507: REQMOD for uploads, RESPMOD for
 * downloads; c-icap's virus_scan).  The message as MIME and each attachment
 * stored by value are scanned; actions per direction: block, replace the
 * infected attachment with a notice, quarantine, tag, log.  doc/av.md. */
#include "sec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct av {
    struct sec_ctx sc;
    struct mp_svc *clamd, *icap;
    size_t clamd_max_stream;
    char *icap_host, *icap_service;
    bool attachments;
};

struct av_part {
    struct sec_job *j;
    int att; /* -1: the whole message */
};

struct av_job {
    bool msg_bad;
    uint8_t *bufs[64]; /* attachments' bytes, borrowed by the conversations */
};

static void av_job_free(struct av_job *aj)
{
    for (size_t i = 0; i < 64; i++)
        free(aj->bufs[i]);
    free(aj);
}

static void part_done(struct mp_svc_conv *c, void *arg)
{
    struct av_part *p = arg;
    struct sec_job *j = p->j;
    struct av_job *aj = j->priv;
    const struct mp_svc_verdict *v = &c->v;
    if (v->kind == MP_SVC_INFECTED) {
        if (p->att < 0)
            aj->msg_bad = true;
        else if (p->att < 64)
            j->r.bad_attachments |= 1ull << p->att;
    }
    sec_job_merge(j, v);
    free(p);
    if (--j->pending == 0) {
        /* the whole-message scan also sees the attachments' viruses: the
         * body itself is bad only when no attachment explains the hit */
        j->r.bad_body = aj->msg_bad && !j->r.bad_attachments;
        av_job_free(aj);
        j->priv = NULL;
        sec_job_finish(j);
    }
}

/* The conversations borrow data until they are done. */
static void submit(struct av *av, struct sec_job *j, int att, const uint8_t *data, size_t len,
                   const char *ctype)
{
    if (av->clamd) {
        struct av_part *p = calloc(1, sizeof *p);
        struct mp_svc_conv *c = p ? mp_svc_clamd_new(data, len, av->clamd_max_stream) : NULL;
        if (c) {
            p->j = j;
            p->att = att;
            j->pending++;
            mp_svc_submit(av->clamd, c, part_done, p);
        } else {
            free(p);
            j->r.kind = MP_SVC_UNAVAILABLE;
        }
    }
    if (av->icap) {
        struct mp_svc_icap_req r = {
            .reqmod = j->dir == MP_MESSAGE_UPLOAD,
            .host = av->icap_host,
            .service = av->icap_service,
            .http_url = att < 0 ? "http://mapiproxy/message.eml" : "http://mapiproxy/attachment",
            .content_type = ctype,
            .no_preview = true,
        };
        struct av_part *p = calloc(1, sizeof *p);
        struct mp_svc_conv *c = p ? mp_svc_icap_new(&r, data, len) : NULL;
        if (c) {
            p->j = j;
            p->att = att;
            j->pending++;
            mp_svc_submit(av->icap, c, part_done, p);
        } else {
            free(p);
            j->r.kind = MP_SVC_UNAVAILABLE;
        }
    }
}

static void av_apply(struct sec_job *j, enum sec_action a)
{
    struct mp_message_event *ev = j->ev;
    const struct mp_message *m = mp_message_event_message(ev);
    if (a == SEC_ACT_REPLACE) {
        size_t n = mp_message_attachment_count(m);
        for (size_t i = 0; i < n && i < 64; i++) {
            if (!(j->r.bad_attachments & (1ull << i)))
                continue;
            const char *nm = mp_message_attachment_name(ev, m, i);
            char notice[600];
            snprintf(notice, sizeof notice,
                     "The attachment \"%s\" was removed by the mail proxy's virus scanner "
                     "(%s).\r\n",
                     nm ? nm : "(no name)", j->r.name[0] ? j->r.name : "a virus was found");
            mp_message_replace_attachment(ev, i, notice);
        }
        return;
    }
    if (a == SEC_ACT_TAG) {
        static const uint8_t ps[16] = MP_PS_INTERNET_HEADERS;
        mp_message_prefix_subject(ev, j->sc->tag_prefix ? j->sc->tag_prefix : "[VIRUS] ");
        char st[300];
        snprintf(st, sizeof st, "infected: %s", j->r.name);
        mp_message_set_named_string(ev, ps, "X-Virus-Status", st);
    }
}

static enum mp_status av_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct av *av = mp_module_private(mc);
    struct sec_job *j = sec_job_start(&av->sc, ev, av_apply);
    if (!j)
        return MP_CONTINUE;
    snprintf(j->service, sizeof j->service, "%s%s%s", av->clamd ? "clamd" : "",
             av->clamd && av->icap ? "+" : "", av->icap ? "icap" : "");
    int rc = sec_job_load_mime(j);
    if (rc) {
        j->r.kind = rc > 0 ? MP_SVC_TOOBIG : MP_SVC_UNAVAILABLE;
        snprintf(j->r.name, sizeof j->r.name, "%s", rc > 0 ? "over max_size" : "no MIME");
        return sec_job_wait(j);
    }
    struct av_job *aj = calloc(1, sizeof *aj);
    if (!aj) {
        j->r.kind = MP_SVC_UNAVAILABLE;
        return sec_job_wait(j);
    }
    j->priv = aj;
    submit(av, j, -1, j->mime, j->mime_len, "message/rfc822");
    const struct mp_message *m = mp_message_event_message(ev);
    size_t n = av->attachments && m ? mp_message_attachment_count(m) : 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        size_t got = 0;
        uint8_t *buf = sec_read_attachment(m, i, av->sc.max_size, &got);
        if (!buf)
            continue;
        aj->bufs[i] = buf;
        const char *ct = mp_message_attachment_mime_type(ev, m, i);
        submit(av, j, (int)i, buf, got, ct ? ct : "application/octet-stream");
    }
    if (!j->pending) {
        av_job_free(aj);
        j->priv = NULL;
    }
    return sec_job_wait(j);
}

static int av_init(struct mp_module_ctx *mc)
{
    struct av *av = calloc(1, sizeof *av);
    if (!av)
        return -1;
    mp_module_set_private(mc, av);
    if (sec_init(&av->sc, mc, "both", SEC_ACT_BLOCK, SEC_ACT_REPLACE))
        return -1;
    const char *clamd = mp_module_option(mc, "clamd");
    const char *icap = mp_module_option(mc, "icap");
    if (!clamd && !icap) {
        mp_module_log(mc, MP_MLOG_ERROR, "set av:clamd and/or av:icap");
        return -1;
    }
    av->clamd_max_stream = (size_t)mp_module_option_int(mc, "clamd_max_stream", 25L << 20);
    av->attachments = mp_module_option_bool(mc, "scan_attachments", true);
    if (clamd && !(av->clamd = sec_service(&av->sc, "clamd", clamd)))
        return -1;
    if (icap) {
        const char *h = strncmp(icap, "unix:", 5) && icap[0] != '/' ? icap : "localhost";
        av->icap_host = strdup(h);
        av->icap_service = strdup(
            mp_module_option(mc, "icap_service") ? mp_module_option(mc, "icap_service") : "avscan");
        if (!av->icap_host || !av->icap_service || !(av->icap = sec_service(&av->sc, "icap", icap)))
            return -1;
    }
    return 0;
}

static void av_fini(struct mp_module_ctx *mc)
{
    struct av *av = mp_module_private(mc);
    if (!av)
        return;
    mp_svc_free(av->clamd);
    mp_svc_free(av->icap);
    sec_fini(&av->sc);
    free(av->icap_host);
    free(av->icap_service);
    free(av);
}

static const struct mp_module_option_spec av_options[] = {
    SEC_COMMON_OPTIONS,
    {"clamd", MP_OPT_STRING, 0, 0, NULL},
    {"clamd_max_stream", MP_OPT_INT, 1, 1L << 30, NULL},
    {"icap", MP_OPT_STRING, 0, 0, NULL},
    {"icap_service", MP_OPT_STRING, 0, 0, NULL},
    {"scan_attachments", MP_OPT_BOOL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "av",
    .description = "antivirus: clamd and ICAP scans of every message",
    .init = av_init,
    .fini = av_fini,
    .options = av_options,
    .message = av_message,
};
