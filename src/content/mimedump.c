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
 *   NAME:tmpdir = PATH              where spilled values go (default $TMPDIR, /tmp)
 * The last three are read by the proxy's one assembler per session (the
 * smallest of every message module's values; src/chain/msgevents.c); the
 * module gets each message from its `message` hook. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content/message.h"
#include "content/mime.h"
#include "content/summary.h"
#include "core/json.h"
#include "mapiproxy/module.h"

struct md_conf {
    struct mp_module_ctx *mc;
    bool eml;
    char *dir, *tmpdir;
    FILE *json; /* NULL: the log */
    struct mp_content_limits lim;
    unsigned long seq;
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

/* The .eml of one message; its path in path (empty on failure). */
static void md_write_eml(struct md_conf *c, struct mp_message_event *ev, uint32_t sid, char *path,
                         size_t n)
{
    snprintf(path, n, "%s/%lu-s%u-%s.eml", c->dir, ++c->seq, (unsigned)sid,
             mp_message_dir_name(mp_message_event_dir(ev)));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    const struct mp_message *m = mp_message_event_message(ev);
    if (fd < 0 || mp_mime_write(m, fd, (size_t)c->lim.max_message)) {
        mp_module_log(c->mc, MP_MLOG_WARN, "mime-dump: cannot write %s: %s", path,
                      fd < 0 ? strerror(errno) : "MIME conversion failed");
        if (fd >= 0)
            unlink(path);
        path[0] = 0;
    }
    if (fd >= 0)
        close(fd);
}

static enum mp_status md_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct md_conf *c = mp_module_private(mc);
    if (!c)
        return MP_CONTINUE;
    struct mp_session *ss = mp_message_event_session(ev);
    uint32_t sid = ss ? mp_session_id(ss) : 0;
    const char *user = mp_message_event_user(ev);
    const struct mp_message *m = mp_message_event_message(ev);
    char path[4200] = "";
    if (c->eml)
        md_write_eml(c, ev, sid, path, sizeof(path));
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
    mp_json_str(&j, user ? user : "");
    mp_json_key(&j, "session");
    mp_json_u64(&j, sid);
    mp_json_key(&j, "direction");
    mp_json_str(&j, mp_message_dir_name(mp_message_event_dir(ev)));
    mp_json_key(&j, "mode");
    mp_json_str(&j, mp_message_mode_name(mp_message_event_mode(ev)));
    mp_json_key(&j, "completed_by");
    mp_json_str(&j, mp_message_event_completed_by(ev));
    if (mp_message_event_partial(ev)) {
        mp_json_key(&j, "partial");
        mp_json_bool(&j, true);
    }
    snprintf(num, sizeof(num), "0x%016llx", (unsigned long long)mp_message_event_folder_id(ev));
    mp_json_key(&j, "folder");
    mp_json_str(&j, num);
    snprintf(num, sizeof(num), "0x%016llx", (unsigned long long)mp_message_event_message_id(ev));
    mp_json_key(&j, "message_id");
    mp_json_str(&j, num);
    if (mp_msg_summary(&j, m))
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
    return MP_CONTINUE;
}

const struct mp_module mp_builtin_mimedump = {
    MP_MODULE_HEADER,
    .name = "mime-dump",
    .description = "every message, each direction, as an .eml file and a JSON line",
    .init = md_dump_init,
    .fini = md_fini,
    .message = md_message,
    .flags = MP_MODULE_OBSERVES_ONLY, /* gives no verdicts: nothing is held for it */
};

const struct mp_module mp_builtin_messagelog = {
    MP_MODULE_HEADER,
    .name = "message-log",
    .description = "one JSON line per message, each direction",
    .init = md_log_init,
    .fini = md_fini,
    .message = md_message,
    .flags = MP_MODULE_OBSERVES_ONLY, /* gives no verdicts: nothing is held for it */
};
