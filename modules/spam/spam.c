/* spam: anti-spam on downloaded mail (by default), with spamd (SPAMC/1.5
 * CHECK, SYMBOLS or REPORT) and/or rspamd (HTTP POST /checkv2).  A
 * message the service calls spam (or whose score reaches `threshold`) is
 * tagged (subject prefix, X-Spam-Flag / X-Spam-Status / X-Spam-Score as
 * PS_INTERNET_HEADERS named properties) or blocked; a score at or above
 * `block_threshold` is blocked whatever the action.  doc/spam.md. */
#include "sec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct spam {
    struct sec_ctx sc;
    struct mp_svc *spamd, *rspamd;
    enum mp_svc_spamd_cmd cmd;
    char *spamd_user, *rspamd_host, *rspamd_password;
    double threshold, block_threshold; /* < 0: unset */
};

static const char *const cmd_choices[] = {"check", "symbols", "report", NULL};

static void spam_apply(struct sec_job *j, enum sec_action a)
{
    static const uint8_t ps[16] = MP_PS_INTERNET_HEADERS;
    struct mp_message_event *ev = j->ev;
    if (a != SEC_ACT_TAG)
        return;
    mp_message_prefix_subject(ev, j->sc->tag_prefix ? j->sc->tag_prefix : "[SPAM] ");
    char st[200];
    mp_message_set_named_string(ev, ps, "X-Spam-Flag", "YES");
    if (j->r.has_score) {
        snprintf(st, sizeof st, "Yes, score=%.1f required=%.1f", j->r.score, j->r.required);
        mp_message_set_named_string(ev, ps, "X-Spam-Status", st);
        snprintf(st, sizeof st, "%.1f", j->r.score);
        mp_message_set_named_string(ev, ps, "X-Spam-Score", st);
    } else {
        mp_message_set_named_string(ev, ps, "X-Spam-Status", "Yes");
    }
}

static void spam_done(struct mp_svc_conv *c, void *arg)
{
    struct sec_job *j = arg;
    struct spam *sp = j->priv;
    struct mp_svc_verdict v = c->v; /* detail stays with c */
    /* thresholds of our own, over the service's decision */
    if (v.has_score && sp->threshold >= 0 &&
        (v.kind == MP_SVC_CLEAN || v.kind == MP_SVC_SPAM || v.kind == MP_SVC_REJECT))
        v.kind = v.score >= sp->threshold ? MP_SVC_SPAM : MP_SVC_CLEAN;
    if (v.kind == MP_SVC_REJECT) /* rspamd's reject is a spam verdict here */
        v.kind = MP_SVC_SPAM;
    if (v.kind == MP_SVC_SPAM && !v.name[0])
        snprintf(v.name, sizeof v.name, "spam");
    sec_job_merge(j, &v);
    if (c->v.detail.len && !strstr(j->detail, "symbols")) {
        char sym[300], esc[400];
        size_t n = c->v.detail.len - c->v.detail.off;
        if (n > sizeof sym - 1)
            n = sizeof sym - 1;
        memcpy(sym, c->v.detail.data + c->v.detail.off, n);
        sym[n] = 0;
        for (char *p = sym; *p; p++)
            if (*p == '\n' || *p == '\r')
                *p = ' ';
        sec_json_str(esc, sizeof esc, sym);
        snprintf(j->detail, sizeof j->detail, ",\"symbols\":\"%s\"", esc);
    }
    if (--j->pending == 0) {
        if (j->r.kind == MP_SVC_SPAM && j->r.has_score && sp->block_threshold >= 0 &&
            j->r.score >= sp->block_threshold && !mp_message_blocked(j->ev)) {
            char reason[200];
            snprintf(reason, sizeof reason, "spam: score %.1f over %.1f", j->r.score,
                     sp->block_threshold);
            mp_message_block(j->ev, reason);
            size_t l = strlen(j->detail);
            snprintf(j->detail + l, sizeof j->detail - l, ",\"over_block_threshold\":true");
        }
        sec_job_finish(j);
    }
}

static enum mp_status spam_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct spam *sp = mp_module_private(mc);
    struct sec_job *j = sec_job_start(&sp->sc, ev, spam_apply);
    if (!j)
        return MP_CONTINUE;
    j->priv = sp;
    snprintf(j->service, sizeof j->service, "%s%s%s", sp->spamd ? "spamd" : "",
             sp->spamd && sp->rspamd ? "+" : "", sp->rspamd ? "rspamd" : "");
    int rc = sec_job_load_mime(j);
    if (rc) {
        j->r.kind = rc > 0 ? MP_SVC_TOOBIG : MP_SVC_UNAVAILABLE;
        return sec_job_wait(j);
    }
    if (sp->spamd) {
        const char *u = sp->spamd_user ? sp->spamd_user : mp_message_event_user(ev);
        struct mp_svc_conv *c = mp_svc_spamd_new(sp->cmd, u, j->mime, j->mime_len);
        if (c) {
            j->pending++;
            mp_svc_submit(sp->spamd, c, spam_done, j);
        } else {
            j->r.kind = MP_SVC_UNAVAILABLE;
        }
    }
    if (sp->rspamd) {
        struct mp_svc_rspamd_req r = {
            .host = sp->rspamd_host,
            .user = mp_message_event_user(ev),
            .password = sp->rspamd_password,
            .ip = NULL,
        };
        struct mp_svc_conv *c = mp_svc_rspamd_new(&r, j->mime, j->mime_len);
        if (c) {
            j->pending++;
            mp_svc_submit(sp->rspamd, c, spam_done, j);
        } else {
            j->r.kind = MP_SVC_UNAVAILABLE;
        }
    }
    return sec_job_wait(j);
}

static double opt_double(struct mp_module_ctx *mc, const char *key)
{
    const char *v = mp_module_option(mc, key);
    return v ? strtod(v, NULL) : -1.0;
}

static int spam_check_option(const char *key, const char *value, char *why, size_t why_len)
{
    if (!strcmp(key, "threshold") || !strcmp(key, "block_threshold")) {
        char *end;
        double d = strtod(value, &end);
        if (end == value || *end || d < 0 || d > 100000) {
            snprintf(why, why_len, "%s wants a score such as 5 or 7.5", key);
            return -1;
        }
    }
    return 0;
}

static int spam_init(struct mp_module_ctx *mc)
{
    struct spam *sp = calloc(1, sizeof *sp);
    if (!sp)
        return -1;
    mp_module_set_private(mc, sp);
    if (sec_init(&sp->sc, mc, "download", SEC_ACT_TAG, SEC_ACT_TAG))
        return -1;
    static const char *const hdrs[] = {"X-Spam-Flag", "X-Spam-Status", "X-Spam-Score", NULL};
    sec_map_header_names(&sp->sc, hdrs);
    const char *spamd = mp_module_option(mc, "spamd");
    const char *rspamd = mp_module_option(mc, "rspamd");
    if (!spamd && !rspamd) {
        mp_module_log(mc, MP_MLOG_ERROR, "set spam:spamd and/or spam:rspamd");
        return -1;
    }
    const char *cmd = mp_module_option(mc, "spamd_command");
    sp->cmd = !cmd || !strcmp(cmd, "symbols") ? MP_SPAMD_SYMBOLS
              : !strcmp(cmd, "report")        ? MP_SPAMD_REPORT
                                              : MP_SPAMD_CHECK;
    if (mp_module_option(mc, "spamd_user"))
        sp->spamd_user = strdup(mp_module_option(mc, "spamd_user"));
    if (mp_module_option(mc, "rspamd_password"))
        sp->rspamd_password = strdup(mp_module_option(mc, "rspamd_password"));
    sp->threshold = opt_double(mc, "threshold");
    sp->block_threshold = opt_double(mc, "block_threshold");
    if (spamd && !(sp->spamd = sec_service(&sp->sc, "spamd", spamd)))
        return -1;
    if (rspamd) {
        sp->rspamd_host =
            strdup(strncmp(rspamd, "unix:", 5) && rspamd[0] != '/' ? rspamd : "localhost");
        if (!sp->rspamd_host || !(sp->rspamd = sec_service(&sp->sc, "rspamd", rspamd)))
            return -1;
    }
    return 0;
}

static void spam_fini(struct mp_module_ctx *mc)
{
    struct spam *sp = mp_module_private(mc);
    if (!sp)
        return;
    mp_svc_free(sp->spamd);
    mp_svc_free(sp->rspamd);
    sec_fini(&sp->sc);
    free(sp->spamd_user);
    free(sp->rspamd_host);
    free(sp->rspamd_password);
    free(sp);
}

static const struct mp_module_option_spec spam_options[] = {
    SEC_COMMON_OPTIONS,
    {"spamd", MP_OPT_STRING, 0, 0, NULL},
    {"spamd_command", MP_OPT_ENUM, 0, 0, cmd_choices},
    {"spamd_user", MP_OPT_STRING, 0, 0, NULL},
    {"rspamd", MP_OPT_STRING, 0, 0, NULL},
    {"rspamd_password", MP_OPT_STRING, 0, 0, NULL},
    {"threshold", MP_OPT_STRING, 0, 0, NULL},
    {"block_threshold", MP_OPT_STRING, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "spam",
    .description = "anti-spam: spamd and rspamd verdicts as tags or blocks",
    .init = spam_init,
    .fini = spam_fini,
    .options = spam_options,
    .check_option = spam_check_option,
    .message = spam_message,
};
