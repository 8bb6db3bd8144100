/* sec-host: loads one security module (build/modules/av.so ...) the way the
 * proxy does (dlopen, ABI check, option schema) and gives it message events
 * made from files, on a small poll loop of its own, so the modules run
 * against the real services without a proxy, a lab or a client.  It
 * implements the part of the module API (include/mapiproxy/module.h,
 * message.h) the security modules use; the proxy implements the rest.
 *
 *   sec-host MODULE.so [key=value ...]      then commands on stdin:
 *   set FIELD VALUE   dir upload|download, mime FILE, body FILE, html FILE,
 *                     rtf FILE, subject TEXT, mid N, ck HEX, user NAME,
 *                     att FILE[:TYPE] (adds an attachment), noatt,
 *                     modify yes|no
 *   scan              runs the message hook; prints one JSON line with the
 *                     verdicts once the module resumed (or returned)
 *   quit
 * Used by tests/integration/test_sec_modules.py. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mapiproxy/module.h"

/* ---- the module context ---- */
struct opt {
    char *key, *val;
};
struct mp_module_ctx {
    const struct mp_module *m;
    struct opt opts[64];
    size_t nopts;
    void *priv;
};

const char *mp_module_name(const struct mp_module_ctx *mc)
{
    return mc->m->name;
}
const char *mp_module_option(const struct mp_module_ctx *mc, const char *key)
{
    for (size_t i = 0; i < mc->nopts; i++)
        if (!strcmp(mc->opts[i].key, key))
            return mc->opts[i].val;
    return NULL;
}
bool mp_module_option_bool(const struct mp_module_ctx *mc, const char *key, bool dflt)
{
    const char *v = mp_module_option(mc, key);
    if (!v)
        return dflt;
    return !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1");
}
long mp_module_option_int(const struct mp_module_ctx *mc, const char *key, long dflt)
{
    const char *v = mp_module_option(mc, key);
    return v ? strtol(v, NULL, 0) : dflt;
}
void *mp_module_private(const struct mp_module_ctx *mc)
{
    return mc->priv;
}
int mp_module_map_name(struct mp_module_ctx *mc, const uint8_t guid[16], const char *name)
{
    (void)mc, (void)guid, (void)name;
    return 0; /* no sessions here: nothing to map */
}
void mp_module_set_private(struct mp_module_ctx *mc, void *priv)
{
    mc->priv = priv;
}
void mp_module_log(const struct mp_module_ctx *mc, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "module %s: ", mc->m->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- the loop: fd watches and timers ---- */
struct mp_fdwatch {
    int fd;
    unsigned events;
    mp_fdwatch_cb cb;
    void *arg;
    bool dead;
};
static struct mp_fdwatch *watches[256];
static size_t nwatches;

struct tmr {
    uint64_t at;
    void (*cb)(void *);
    void *arg;
};
static struct tmr timers[4096];
static size_t ntimers;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int mp_module_after(struct mp_module_ctx *mc, uint64_t ms, void (*cb)(void *), void *arg)
{
    if (ntimers == sizeof timers / sizeof timers[0])
        return -1;
    timers[ntimers++] = (struct tmr){now_ms() + ms, cb, arg};
    return 0;
}

struct mp_fdwatch *mp_module_watch_fd(struct mp_module_ctx *mc, int fd, unsigned events,
                                      mp_fdwatch_cb cb, void *arg)
{
    if (nwatches == sizeof watches / sizeof watches[0])
        return NULL;
    struct mp_fdwatch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    *w = (struct mp_fdwatch){fd, events, cb, arg, false};
    watches[nwatches++] = w;
    return w;
}
int mp_fdwatch_set(struct mp_fdwatch *w, unsigned events)
{
    w->events = events;
    return 0;
}
void mp_fdwatch_cancel(struct mp_fdwatch *w)
{
    w->dead = true; /* freed by the loop, after the batch */
}

/* ---- the message event ---- */
struct att {
    char *name, *type;
    uint8_t *data;
    size_t len;
};
struct mp_message {
    int unused;
};
struct mp_message_event {
    enum mp_message_dir dir;
    struct mp_message msg;
    bool can_modify, blocked, pending, resumed;
    int mime_fd;
    char reason[512];
    char out[16384]; /* verdicts as JSON members */
    size_t outlen;
    void *mem[256];
    size_t nmem;
};
static struct {
    enum mp_message_dir dir;
    char *mime_path, *body, *html, *subject, *user;
    uint8_t *rtf;
    size_t rtf_len, html_len;
    uint64_t mid;
    uint8_t ck[64];
    size_t cklen;
    struct att atts[16];
    size_t natts;
    bool modify;
} msg = {.modify = true};
static struct mp_message_event *cur;

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap + 1);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, cap * 2 + 1);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[n] = 0;
    if (len)
        *len = n;
    return b;
}

static void json_add(struct mp_message_event *ev, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(ev->out + ev->outlen, sizeof ev->out - ev->outlen, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof ev->out - ev->outlen)
        ev->outlen += (size_t)n;
}

static void esc(char *o, size_t cap, const char *s)
{
    size_t k = 0;
    for (; s && *s && k + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            k += (size_t)snprintf(o + k, cap - k, "\\%c", c);
        else if (c < 0x20)
            k += (size_t)snprintf(o + k, cap - k, "\\u%04x", c);
        else
            o[k++] = (char)c;
    }
    o[k] = 0;
}

const char *mp_message_dir_name(enum mp_message_dir d)
{
    return d == MP_MESSAGE_UPLOAD ? "upload" : "download";
}
const char *mp_message_mode_name(enum mp_message_mode m)
{
    return "online";
}
enum mp_message_dir mp_message_event_dir(const struct mp_message_event *ev)
{
    return ev->dir;
}
enum mp_message_mode mp_message_event_mode(const struct mp_message_event *ev)
{
    return MP_MESSAGE_ONLINE;
}
struct mp_session *mp_message_event_session(struct mp_message_event *ev)
{
    return NULL;
}
const char *mp_message_event_user(const struct mp_message_event *ev)
{
    return msg.user;
}
const char *mp_message_event_peer(const struct mp_message_event *ev)
{
    return "127.0.0.1:1";
}
const char *mp_message_event_transport(const struct mp_message_event *ev)
{
    return "sec-host";
}
uint64_t mp_message_event_folder_id(const struct mp_message_event *ev)
{
    return 1;
}
uint64_t mp_message_event_message_id(const struct mp_message_event *ev)
{
    return msg.mid;
}
const uint8_t *mp_message_event_change_key(const struct mp_message_event *ev, size_t *len)
{
    *len = msg.cklen;
    return msg.cklen ? msg.ck : NULL;
}
const char *mp_message_event_completed_by(const struct mp_message_event *ev)
{
    return "RopSaveChangesMessage";
}
bool mp_message_event_partial(const struct mp_message_event *ev)
{
    return false;
}
const struct mp_message *mp_message_event_message(const struct mp_message_event *ev)
{
    return &ev->msg;
}
int mp_message_event_mime_fd(struct mp_message_event *ev, uint64_t *size)
{
    if (ev->mime_fd < 0 && msg.mime_path)
        ev->mime_fd = open(msg.mime_path, O_RDONLY | O_CLOEXEC);
    if (ev->mime_fd < 0)
        return -1;
    off_t end = lseek(ev->mime_fd, 0, SEEK_END);
    lseek(ev->mime_fd, 0, SEEK_SET);
    *size = (uint64_t)end;
    return ev->mime_fd; /* "do not close it": the event keeps it */
}
void *mp_message_event_alloc(struct mp_message_event *ev, size_t size)
{
    if (ev->nmem == 256)
        return NULL;
    void *p = calloc(1, size ? size : 1);
    if (p)
        ev->mem[ev->nmem++] = p;
    return p;
}
const char *mp_message_string(struct mp_message_event *ev, const struct mp_message *m, uint16_t id)
{
    return id == 0x1000 ? msg.body : id == 0x0037 ? msg.subject : NULL;
}
bool mp_message_number(const struct mp_message *m, uint32_t tag, uint64_t *v)
{
    return false;
}
int64_t mp_message_bytes_size(const struct mp_message *m, uint32_t tag)
{
    if (tag == 0x10130102 && msg.html)
        return (int64_t)msg.html_len;
    if (tag == 0x10090102 && msg.rtf)
        return (int64_t)msg.rtf_len;
    return -1;
}
long mp_message_bytes_read(const struct mp_message *m, uint32_t tag, uint64_t off, void *buf,
                           size_t n)
{
    const uint8_t *p = tag == 0x10130102   ? (const uint8_t *)msg.html
                       : tag == 0x10090102 ? msg.rtf
                                           : NULL;
    size_t len = tag == 0x10130102 ? msg.html_len : msg.rtf_len;
    if (!p)
        return -1;
    if (off >= len)
        return 0;
    size_t k = len - off < n ? len - off : n;
    memcpy(buf, p + off, k);
    return (long)k;
}
size_t mp_message_prop_count(const struct mp_message *m)
{
    return 0;
}
uint32_t mp_message_prop_tag(const struct mp_message *m, size_t i)
{
    return 0;
}
size_t mp_message_recipient_count(const struct mp_message *m)
{
    return 1;
}
int mp_message_recipient(struct mp_message_event *ev, const struct mp_message *m, size_t i,
                         const char **display_name, const char **address)
{
    *display_name = "Bob";
    *address = "bob@example.org";
    return 0;
}
size_t mp_message_attachment_count(const struct mp_message *m)
{
    return msg.natts;
}
const char *mp_message_attachment_name(struct mp_message_event *ev, const struct mp_message *m,
                                       size_t i)
{
    return i < msg.natts ? msg.atts[i].name : NULL;
}
const char *mp_message_attachment_mime_type(struct mp_message_event *ev, const struct mp_message *m,
                                            size_t i)
{
    return i < msg.natts ? msg.atts[i].type : NULL;
}
uint32_t mp_message_attachment_method(const struct mp_message *m, size_t i)
{
    return 1;
}
int64_t mp_message_attachment_size(const struct mp_message *m, size_t i)
{
    return i < msg.natts ? (int64_t)msg.atts[i].len : -1;
}
long mp_message_attachment_read(const struct mp_message *m, size_t i, uint64_t off, void *buf,
                                size_t n)
{
    if (i >= msg.natts)
        return -1;
    if (off >= msg.atts[i].len)
        return 0;
    size_t k = msg.atts[i].len - off < n ? msg.atts[i].len - off : n;
    memcpy(buf, msg.atts[i].data + off, k);
    return (long)k;
}
const struct mp_message *mp_message_attachment_embedded(const struct mp_message *m, size_t i)
{
    return NULL;
}
int mp_message_block(struct mp_message_event *ev, const char *reason)
{
    if (ev->blocked)
        return 0;
    ev->blocked = true;
    snprintf(ev->reason, sizeof ev->reason, "%s", reason ? reason : "");
    return 0;
}
bool mp_message_blocked(const struct mp_message_event *ev)
{
    return ev->blocked;
}
bool mp_message_can_modify(const struct mp_message_event *ev)
{
    return ev->can_modify;
}
int mp_message_replace_attachment(struct mp_message_event *ev, size_t i, const char *notice)
{
    if (i >= msg.natts || !ev->can_modify)
        return -1;
    char e[1024];
    esc(e, sizeof e, notice ? notice : "");
    json_add(ev, ",\"replaced_%zu\":\"%s\"", i, e);
    return 0;
}
int mp_message_prefix_subject(struct mp_message_event *ev, const char *prefix)
{
    char e[512];
    esc(e, sizeof e, prefix);
    json_add(ev, ",\"subject_prefix\":\"%s\"", e);
    return 0;
}
int mp_message_set_string(struct mp_message_event *ev, uint16_t id, const char *utf8)
{
    static char e[65536];
    esc(e, sizeof e, utf8);
    json_add(ev, ",\"prop_%04x\":\"%s\"", id, e);
    return 0;
}
int mp_message_set_binary(struct mp_message_event *ev, uint16_t id, const void *data, size_t n)
{
    (void)data;
    json_add(ev, ",\"binary_%04x\":%zu", id, n);
    return 0;
}
int mp_message_set_named_string(struct mp_message_event *ev, const uint8_t guid[16],
                                const char *name, const char *utf8)
{
    char n[256], e[2048];
    esc(n, sizeof n, name);
    esc(e, sizeof e, utf8);
    json_add(ev, ",\"named_%s\":\"%s\"", n, e);
    return 0;
}

static void finish_event(struct mp_message_event *ev)
{
    char r[1100];
    esc(r, sizeof r, ev->reason);
    printf("{\"blocked\":%s,\"reason\":\"%s\",\"pending\":%s%.*s}\n",
           ev->blocked ? "true" : "false", r, ev->pending ? "true" : "false", (int)ev->outlen,
           ev->out);
    fflush(stdout);
    for (size_t i = 0; i < ev->nmem; i++)
        free(ev->mem[i]);
    if (ev->mime_fd >= 0)
        close(ev->mime_fd);
    free(ev);
    cur = NULL;
}

void mp_message_resume(struct mp_message_event *ev)
{
    if (ev->resumed) {
        fprintf(stderr, "sec-host: resume called twice\n");
        abort();
    }
    ev->resumed = true;
}

/* ---- commands ---- */
static const struct mp_module *mod;
static struct mp_module_ctx ctx;

static void cmd_set(char *field, char *val)
{
    if (!strcmp(field, "dir")) {
        msg.dir = strcmp(val, "upload") ? MP_MESSAGE_DOWNLOAD : MP_MESSAGE_UPLOAD;
    } else if (!strcmp(field, "mime")) {
        free(msg.mime_path);
        msg.mime_path = strdup(val);
    } else if (!strcmp(field, "body")) {
        free(msg.body);
        msg.body = slurp(val, NULL);
    } else if (!strcmp(field, "html")) {
        free(msg.html);
        msg.html = slurp(val, &msg.html_len);
    } else if (!strcmp(field, "rtf")) {
        free(msg.rtf);
        msg.rtf = (uint8_t *)slurp(val, &msg.rtf_len);
    } else if (!strcmp(field, "subject")) {
        free(msg.subject);
        msg.subject = strdup(val);
    } else if (!strcmp(field, "user")) {
        free(msg.user);
        msg.user = strdup(val);
    } else if (!strcmp(field, "mid")) {
        msg.mid = strtoull(val, NULL, 0);
    } else if (!strcmp(field, "ck")) {
        msg.cklen = 0;
        for (size_t i = 0; val[2 * i] && val[2 * i + 1] && i < sizeof msg.ck; i++) {
            unsigned v;
            sscanf(val + 2 * i, "%2x", &v);
            msg.ck[msg.cklen++] = (uint8_t)v;
        }
    } else if (!strcmp(field, "modify")) {
        msg.modify = !strcmp(val, "yes");
    } else if (!strcmp(field, "noatt")) {
        for (size_t i = 0; i < msg.natts; i++) {
            free(msg.atts[i].name);
            free(msg.atts[i].type);
            free(msg.atts[i].data);
        }
        msg.natts = 0;
    } else if (!strcmp(field, "att") && msg.natts < 16) {
        char *colon = strchr(val, ':');
        if (colon)
            *colon = 0;
        struct att *a = &msg.atts[msg.natts];
        a->data = (uint8_t *)slurp(val, &a->len);
        if (!a->data)
            return;
        const char *slash = strrchr(val, '/');
        a->name = strdup(slash ? slash + 1 : val);
        a->type = strdup(colon ? colon + 1 : "application/octet-stream");
        msg.natts++;
    }
}

static void cmd_scan(void)
{
    if (cur) {
        printf("{\"error\":\"busy\"}\n");
        fflush(stdout);
        return;
    }
    cur = calloc(1, sizeof *cur);
    cur->dir = msg.dir;
    cur->can_modify = msg.modify;
    cur->mime_fd = -1;
    enum mp_status st = mod->message(&ctx, cur);
    if (st == MP_PENDING)
        cur->pending = true;
    else
        cur->resumed = true;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sec-host MODULE.so [key=value ...]\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "sec-host: %s\n", dlerror());
        return 2;
    }
    mod = dlsym(h, "mp_module_descriptor");
    if (!mod || mod->abi_version != MP_MODULE_ABI_VERSION || mod->size < sizeof *mod ||
        !mod->message) {
        fprintf(stderr, "sec-host: not a message module of this ABI\n");
        return 2;
    }
    ctx.m = mod;
    for (int i = 2; i < argc && ctx.nopts < 64; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            continue;
        *eq = 0;
        const struct mp_module_option_spec *o = mod->options;
        while (o && o->key && strcmp(o->key, argv[i]))
            o++;
        if (mod->options && (!o || !o->key)) {
            fprintf(stderr, "sec-host: %s:%s is not an option of the module\n", mod->name, argv[i]);
            return 2;
        }
        ctx.opts[ctx.nopts++] = (struct opt){argv[i], eq + 1};
    }
    if (mod->init(&ctx)) {
        fprintf(stderr, "sec-host: init failed\n");
        if (mod->fini)
            mod->fini(&ctx);
        return 3;
    }
    printf("{\"ready\":true}\n");
    fflush(stdout);
    char line[8192];
    size_t ll = 0;
    bool quit = false;
    while (!quit) {
        struct pollfd pf[257];
        struct mp_fdwatch *pw[257];
        size_t np = 0;
        pf[np] = (struct pollfd){0, POLLIN, 0};
        pw[np++] = NULL;
        for (size_t i = 0; i < nwatches; i++) {
            if (watches[i]->dead || !watches[i]->events)
                continue;
            short ev = (short)((watches[i]->events & MP_FD_READ ? POLLIN : 0) |
                               (watches[i]->events & MP_FD_WRITE ? POLLOUT : 0));
            pf[np] = (struct pollfd){watches[i]->fd, ev, 0};
            pw[np++] = watches[i];
        }
        int timeout = -1;
        uint64_t t = now_ms();
        for (size_t i = 0; i < ntimers; i++) {
            int d = timers[i].at > t ? (int)(timers[i].at - t) : 0;
            if (timeout < 0 || d < timeout)
                timeout = d;
        }
        int n = poll(pf, np, timeout);
        if (n < 0 && errno != EINTR)
            break;
        for (size_t i = 1; i < np && n > 0; i++) {
            if (!pf[i].revents || pw[i]->dead)
                continue;
            unsigned ev = (pf[i].revents & POLLIN ? MP_FD_READ : 0) |
                          (pf[i].revents & POLLOUT ? MP_FD_WRITE : 0) |
                          (pf[i].revents & (POLLERR | POLLHUP | POLLNVAL) ? MP_FD_ERROR : 0);
            pw[i]->cb(pw[i], pw[i]->fd, ev, pw[i]->arg);
        }
        t = now_ms();
        for (size_t i = 0; i < ntimers;) {
            if (timers[i].at <= t) {
                struct tmr x = timers[i];
                timers[i] = timers[--ntimers];
                x.cb(x.arg);
            } else {
                i++;
            }
        }
        size_t o = 0;
        for (size_t i = 0; i < nwatches; i++) {
            if (watches[i]->dead)
                free(watches[i]);
            else
                watches[o++] = watches[i];
        }
        nwatches = o;
        if (cur && cur->resumed)
            finish_event(cur);
        if (pf[0].revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(0, line + ll, sizeof line - 1 - ll);
            if (r <= 0) {
                quit = true;
                continue;
            }
            ll += (size_t)r;
            char *nl;
            while ((nl = memchr(line, '\n', ll)) != NULL) {
                *nl = 0;
                char *f = strtok(line, " "), *a = strtok(NULL, " "), *b = strtok(NULL, "");
                if (f && !strcmp(f, "quit"))
                    quit = true;
                else if (f && !strcmp(f, "scan"))
                    cmd_scan();
                else if (f && !strcmp(f, "set") && a)
                    cmd_set(a, b ? b : "");
                if (cur && cur->resumed)
                    finish_event(cur);
                size_t used = (size_t)(nl - line) + 1;
                memmove(line, nl + 1, ll - used);
                ll -= used;
            }
            if (cur && cur->resumed)
                finish_event(cur);
        }
    }
    if (mod->fini)
        mod->fini(&ctx);
    if (cur && cur->resumed)
        finish_event(cur);
    return 0;
}
