/* mime-dump and message-log: every message that crosses the proxy, each
 * direction, as an .eml file plus a JSON line (mime-dump) or as the JSON
 * line only (message-log).  The module glue only: assembly, model, MIME and
 * summary live in src/content (doc/internals/content.md).
 *
 * Options (NAME is mime-dump or message-log):
 *   mime-dump:dir = PATH            .eml files go there (required)
 *   mime-dump:json = PATH           JSON lines (default DIR/messages.jsonl)
 *   message-log:file = PATH         JSON lines (default: the log, at info)
 *   NAME:spill size = BYTES         a value past this goes to a private
 *                                   temporary file (default 1048576)
 *   NAME:max message size = BYTES   larger messages are not assembled, with
 *                                   a warning (default 67108864)
 *   NAME:tmpdir = PATH              where spilled values go (default $TMPDIR, /tmp) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content/assemble.h"
#include "content/mime.h"
#include "content/summary.h"
#include "core/json.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

struct md_conf {
    struct mp_module_ctx *mc;
    bool eml;
    char *dir, *tmpdir;
    FILE *json; /* NULL: the log */
    struct mp_content_limits lim;
    unsigned long seq;
};

struct md_sess {
    struct md_conf *c;
    struct mp_asm *a;
    uint32_t id;
    char user[256];
};

static void md_free_conf(struct md_conf *c)
{
    if (!c)
        return;
    if (c->json)
        fclose(c->json);
    free(c->dir);
    free(c->tmpdir);
    free(c);
}

static int md_init_common(struct mp_module_ctx *mc, bool eml)
{
    struct md_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->mc = mc;
    c->eml = eml;
    long spill = mp_module_option_int(mc, "spill size", 1L << 20);
    long max = mp_module_option_int(mc, "max message size", 64L << 20);
    if (spill < 0 || max <= 0) {
        mp_module_log(mc, MP_MLOG_ERROR, "%s: spill size and max message size are byte counts",
                      mp_module_name(mc));
        goto fail;
    }
    c->lim.spill_at = (size_t)spill;
    c->lim.max_message = (uint64_t)max;
    const char *t = mp_module_option(mc, "tmpdir");
    if (t && !(c->tmpdir = strdup(t)))
        goto fail;
    c->lim.tmpdir = c->tmpdir;
    const char *json = mp_module_option(mc, eml ? "json" : "file");
    if (eml) {
        const char *dir = mp_module_option(mc, "dir");
        if (!dir) {
            mp_module_log(mc, MP_MLOG_ERROR, "mime-dump needs mime-dump:dir (where .eml files go)");
            goto fail;
        }
        if (!(c->dir = strdup(dir)))
            goto fail;
    }
    char path[4096];
    if (!json && eml) {
        snprintf(path, sizeof(path), "%s/messages.jsonl", c->dir);
        json = path;
    }
    if (json) {
        int fd = open(json, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        c->json = fd >= 0 ? fdopen(fd, "a") : NULL;
        if (!c->json) {
            mp_module_log(mc, MP_MLOG_ERROR, "%s: cannot open %s: %s", mp_module_name(mc), json,
                          strerror(errno));
            if (fd >= 0)
                close(fd);
            goto fail;
        }
        setvbuf(c->json, NULL, _IOLBF, 0);
    }
    if (eml)
        mp_mime_init();
    mp_module_set_private(mc, c);
    return 0;
fail:
    md_free_conf(c);
    return -1;
}

static int md_dump_init(struct mp_module_ctx *mc)
{
    return md_init_common(mc, true);
}

static int md_log_init(struct mp_module_ctx *mc)
{
    return md_init_common(mc, false);
}

static void md_fini(struct mp_module_ctx *mc)
{
    struct md_conf *c = mp_module_private(mc);
    if (c && c->eml)
        mp_mime_shutdown();
    md_free_conf(c);
}

static void md_log(void *arg, const char *msg)
{
    struct md_sess *s = arg;
    mp_module_log(s->c->mc, MP_MLOG_WARN, "session %u: %s", (unsigned)s->id, msg);
}

/* The .eml of one message; its path in path (empty on failure). */
static void md_write_eml(struct md_sess *s, const struct mp_msg_event *ev, char *path, size_t n)
{
    struct md_conf *c = s->c;
    snprintf(path, n, "%s/%lu-s%u-%s.eml", c->dir, ++c->seq, (unsigned)s->id,
             mp_msg_dir_name(ev->dir));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || mp_mime_write(ev->msg, fd, (size_t)c->lim.max_message)) {
        mp_module_log(c->mc, MP_MLOG_WARN, "mime-dump: cannot write %s: %s", path,
                      fd < 0 ? strerror(errno) : "MIME conversion failed");
        if (fd >= 0)
            unlink(path);
        path[0] = 0;
    }
    if (fd >= 0)
        close(fd);
}

static void md_done(void *arg, const struct mp_msg_event *ev)
{
    struct md_sess *s = arg;
    struct md_conf *c = s->c;
    char path[4200] = "";
    if (c->eml)
        md_write_eml(s, ev, path, sizeof(path));
    struct mp_buf b = {0};
    struct mp_json j;
    mp_json_init(&j, &b);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char num[40];
    mp_json_obj_begin(&j);
    snprintf(num, sizeof(num), "%lld.%06ld", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    mp_json_key(&j, "ts");
    mp_json_raw(&j, num);
    mp_json_key(&j, "user");
    mp_json_str(&j, s->user);
    mp_json_key(&j, "session");
    mp_json_u64(&j, s->id);
    mp_json_key(&j, "direction");
    mp_json_str(&j, mp_msg_dir_name(ev->dir));
    mp_json_key(&j, "mode");
    mp_json_str(&j, mp_msg_mode_name(ev->mode));
    mp_json_key(&j, "completed_by");
    mp_json_str(&j, ev->completed_by);
    if (ev->partial) {
        mp_json_key(&j, "partial");
        mp_json_bool(&j, true);
    }
    snprintf(num, sizeof(num), "0x%016llx", (unsigned long long)ev->folder_id);
    mp_json_key(&j, "folder");
    mp_json_str(&j, num);
    snprintf(num, sizeof(num), "0x%016llx", (unsigned long long)ev->message_id);
    mp_json_key(&j, "message_id");
    mp_json_str(&j, num);
    if (mp_msg_summary(&j, ev->msg))
        mp_module_log(c->mc, MP_MLOG_WARN, "%s: a value could not be read back",
                      mp_module_name(c->mc));
    if (c->eml) {
        mp_json_key(&j, "eml");
        if (path[0])
            mp_json_str(&j, path);
        else
            mp_json_null(&j);
    }
    mp_json_obj_end(&j);
    if (j.err) {
        mp_module_log(c->mc, MP_MLOG_WARN, "%s: message too deeply nested for its JSON line",
                      mp_module_name(c->mc));
    } else if (c->json) {
        fwrite(b.data, 1, b.len, c->json);
        fputc('\n', c->json);
    } else if (!mp_buf_append(&b, "", 1)) {
        mp_module_log(c->mc, MP_MLOG_INFO, "%s", (const char *)b.data);
    }
    mp_buf_free(&b);
}

static void md_sess_free(void *data)
{
    struct md_sess *s = data;
    mp_asm_free(s->a); /* delivers downloads still open */
    free(s);
}

/* The assembly runs once per call, when both the request's and the
 * response's ROPs are decoded (rop_response) -- except for a buffer of
 * RopRelease only: it gets no response ROPs, and the chain runs no
 * rop_response hook for it, so it runs at rop_request. */
static bool releases_only(struct mp_call *call)
{
    size_t n = mp_call_rop_count(call, false);
    for (size_t i = 0; i < n; i++)
        if (mp_call_rop_id(call, false, i) != MP_ROP_Release)
            return false;
    return n > 0;
}

static struct md_sess *md_sess_of(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct md_conf *c = mp_module_private(mc);
    struct mp_session *ss = mp_call_session(call);
    if (!c || !ss)
        return NULL;
    struct md_sess *s = mp_session_data(ss, mc);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        s->c = c;
        s->id = mp_session_id(ss);
        struct mp_asm_ops ops = {md_done, md_log, s};
        s->a = mp_asm_new(&c->lim, &ops);
        if (!s->a || mp_session_set_data(ss, mc, s, md_sess_free)) {
            mp_asm_free(s->a);
            free(s);
            return NULL;
        }
    }
    const char *user = mp_call_user(call);
    if (user && *user)
        snprintf(s->user, sizeof(s->user), "%s", user);
    return s;
}

static enum mp_status md_assemble(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct md_sess *s = md_sess_of(mc, call);
    if (s)
        mp_asm_rops(s->a, call);
    return MP_CONTINUE;
}

/* FastTransfer upload bytes are assembled before they go upstream. */
static enum mp_status md_rop_request(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct md_sess *s = md_sess_of(mc, call);
    if (s)
        mp_asm_rops_request(s->a, call);
    return releases_only(call) ? md_assemble(mc, call) : MP_CONTINUE;
}

static enum mp_status md_rop_response(struct mp_module_ctx *mc, struct mp_call *call)
{
    return md_assemble(mc, call);
}

const struct mp_module mp_builtin_mimedump = {
    MP_MODULE_HEADER,
    .name = "mime-dump",
    .description = "every message, each direction, as an .eml file and a JSON line",
    .init = md_dump_init,
    .fini = md_fini,
    .rop_request = md_rop_request,
    .rop_response = md_rop_response,
};

const struct mp_module mp_builtin_messagelog = {
    MP_MODULE_HEADER,
    .name = "message-log",
    .description = "one JSON line per message, each direction",
    .init = md_log_init,
    .fini = md_fini,
    .rop_request = md_rop_request,
    .rop_response = md_rop_response,
};
