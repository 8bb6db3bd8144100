/* A test-only module for the message API (mapiproxy/message.h), built
 * with -Iinclude only.  For every message event it appends one line to
 * mpm_msgtest:log (tab-separated: direction, mode, completed_by, user,
 * folder, message id, subject, recipients "name <addr>" joined by ';',
 * attachments "name/type/size" joined by ';', MIME size, can_modify,
 * blocked-before) and, when the subject contains mpm_msgtest:match (default:
 * every message), applies mpm_msgtest:action (several, comma-separated):
 *   none | block | prefix (subject "[TEST] ") | set (PidTagBody's id 0x1000:
 *   "replaced body") | named (PS_INTERNET_HEADERS "X-Msgtest": "yes") |
 *   drop (attachment 0) | replace (attachment 0 with a notice)
 * mpm_msgtest:block match = TEXT blocks the messages whose subject has TEXT
 * (besides the actions).  With mpm_msgtest:hold = MS the hook returns MP_PENDING and resumes MS
 * milliseconds later (the verdict is set at resume).  With mpm_msgtest:rop log
 * = FILE its rop_request hook lists each call's request ROPs there. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"

struct conf {
    FILE *log, *roplog;
    const char *action, *match, *block_match;
    long hold;
};

static const struct mp_module_option_spec opts[] = {
    {"log", MP_OPT_STRING, 0, 0, NULL},
    {"action", MP_OPT_STRING, 0, 0, NULL},
    {"match", MP_OPT_STRING, 0, 0, NULL},
    {"hold", MP_OPT_INT, 0, 60000, NULL},
    {"rop log", MP_OPT_STRING, 0, 0, NULL},
    {"block match", MP_OPT_STRING, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static int mt_init(struct mp_module_ctx *mc)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    const char *log = mp_module_option(mc, "log");
    if (log && !(c->log = fopen(log, "a"))) {
        free(c);
        return -1;
    }
    if (c->log)
        setvbuf(c->log, NULL, _IOLBF, 0);
    const char *rl = mp_module_option(mc, "rop log");
    if (rl && (c->roplog = fopen(rl, "a")))
        setvbuf(c->roplog, NULL, _IOLBF, 0);
    c->action = mp_module_option(mc, "action");
    c->match = mp_module_option(mc, "match");
    c->block_match = mp_module_option(mc, "block match");
    c->hold = mp_module_option_int(mc, "hold", 0);
    mp_module_set_private(mc, c);
    return 0;
}

static void mt_fini(struct mp_module_ctx *mc)
{
    struct conf *c = mp_module_private(mc);
    if (c && c->log)
        fclose(c->log);
    if (c && c->roplog)
        fclose(c->roplog);
    free(c);
}

static int apply_one(const char *a, size_t n, struct mp_message_event *ev)
{
    static const uint8_t ps_internet_headers[16] = MP_PS_INTERNET_HEADERS;
#define IS(w) (n == sizeof(w) - 1 && !strncmp(a, w, n))
    if (IS("block"))
        return mp_message_block(ev, "mpm_msgtest blocked it");
    if (IS("prefix"))
        return mp_message_prefix_subject(ev, "[TEST] ");
    if (IS("set"))
        return mp_message_set_string(ev, 0x1000, "replaced body");
    if (IS("named"))
        return mp_message_set_named_string(ev, ps_internet_headers, "X-Msgtest", "yes");
    if (IS("drop"))
        return mp_message_replace_attachment(ev, 0, NULL);
    if (IS("replace"))
        return mp_message_replace_attachment(ev, 0, "the attachment was removed by mpm_msgtest");
#undef IS
    return 0;
}

/* action: verdicts separated by commas; the first failure's -1 */
static int apply(struct conf *c, struct mp_message_event *ev)
{
    const char *a = c->action ? c->action : "none";
    int rc = 0;
    const char *subj = mp_message_string(ev, mp_message_event_message(ev), 0x0037);
    if (c->block_match && subj && strstr(subj, c->block_match))
        rc = mp_message_block(ev, "mpm_msgtest blocked it");
    while (*a) {
        size_t n = strcspn(a, ",");
        if (apply_one(a, n, ev) && !rc)
            rc = -1;
        a += n + (a[n] == ',');
    }
    return rc;
}

static void log_event(struct conf *c, struct mp_message_event *ev, int verdict_rc)
{
    if (!c->log)
        return;
    const struct mp_message *m = mp_message_event_message(ev);
    const char *subj = mp_message_string(ev, m, 0x0037);
    const char *user = mp_message_event_user(ev);
    uint64_t msize = 0;
    int fd = mp_message_event_mime_fd(ev, &msize);
    fprintf(c->log, "%s\t%s\t%s\t%s\t0x%016llx\t0x%016llx\t%s\t",
            mp_message_dir_name(mp_message_event_dir(ev)),
            mp_message_mode_name(mp_message_event_mode(ev)), mp_message_event_completed_by(ev),
            user ? user : "", (unsigned long long)mp_message_event_folder_id(ev),
            (unsigned long long)mp_message_event_message_id(ev), subj ? subj : "");
    for (size_t i = 0; i < mp_message_recipient_count(m); i++) {
        const char *n = NULL, *addr = NULL;
        int t = mp_message_recipient(ev, m, i, &n, &addr);
        fprintf(c->log, "%s%d:%s <%s>", i ? ";" : "", t, n ? n : "", addr ? addr : "");
    }
    fputc('\t', c->log);
    for (size_t i = 0; i < mp_message_attachment_count(m); i++) {
        const char *n = mp_message_attachment_name(ev, m, i);
        const char *t = mp_message_attachment_mime_type(ev, m, i);
        fprintf(c->log, "%s%s/%s/%lld/%u", i ? ";" : "", n ? n : "", t ? t : "",
                (long long)mp_message_attachment_size(m, i), mp_message_attachment_method(m, i));
    }
    fprintf(c->log, "\t%lld\t%d\t%d\t%d\n", fd >= 0 ? (long long)msize : -1LL,
            mp_message_can_modify(ev), mp_message_blocked(ev), verdict_rc);
}

static int wanted(struct conf *c, struct mp_message_event *ev)
{
    if (!c->match)
        return 1;
    const char *subj = mp_message_string(ev, mp_message_event_message(ev), 0x0037);
    return subj && strstr(subj, c->match);
}

struct held {
    struct conf *c;
    struct mp_message_event *ev;
};

static void resume_later(void *arg)
{
    struct held *h = arg;
    int rc = wanted(h->c, h->ev) ? apply(h->c, h->ev) : 0;
    log_event(h->c, h->ev, rc);
    mp_message_resume(h->ev);
    free(h);
}

static enum mp_status mt_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct conf *c = mp_module_private(mc);
    if (c->hold > 0) {
        struct held *h = malloc(sizeof(*h));
        if (h) {
            h->c = c;
            h->ev = ev;
            if (!mp_module_after(mc, (uint64_t)c->hold, resume_later, h))
                return MP_PENDING;
            free(h);
        }
    }
    int rc = wanted(c, ev) ? apply(c, ev) : 0;
    log_event(c, ev, rc);
    return MP_CONTINUE;
}

/* With mpm_msgtest:rop log: the request ROPs' names, one line per call
 * (after this module's message events of the call: a held save is listed
 * once the hold ends). */
static enum mp_status mt_rop_request(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct conf *c = mp_module_private(mc);
    if (!c->roplog)
        return MP_CONTINUE;
    for (size_t i = 0; i < mp_call_rop_count(call, false); i++)
        fprintf(c->roplog, "%s%s", i ? " " : "", mp_call_rop_name(call, false, i));
    fputc('\n', c->roplog);
    return MP_CONTINUE;
}

/* Built three ways (Makefile): mpm_msgtest; mpm_msgobs (-DOBSERVES_ONLY:
 * the same hook under MP_MODULE_OBSERVES_ONLY, so its verdicts are
 * ignored and nothing is held for it); mpm_msgabi4 (-DABI4: a descriptor
 * as a module built for ABI 4 has it, without `flags`). */
#if defined(OBSERVES_ONLY)
#define MT_NAME "mpm_msgobs"
#elif defined(ABI4)
#define MT_NAME "mpm_msgabi4"
#else
#define MT_NAME "mpm_msgtest"
#endif
const struct mp_module mp_module_descriptor = {
#ifdef ABI4
    (4u << 24) | (MP_MODULE_ABI_VERSION & 0xffffffu),
    (uint32_t)offsetof(struct mp_module, flags),
#else
    MP_MODULE_HEADER,
#endif
    .name = MT_NAME,
    .description = "test: message events and verdicts",
    .init = mt_init,
    .fini = mt_fini,
    .options = opts,
    .message = mt_message,
    .rop_request = mt_rop_request,
#ifdef OBSERVES_ONLY
    .flags = MP_MODULE_OBSERVES_ONLY,
#endif
};
