/* audit: an audit trail of who did what in which mailbox, one JSON line per
 * event (doc/audit.md has the schema): logon and logoff of each EMSMDB
 * session, and the mailbox operations of interest (folder and message
 * opened, message saved, submitted, deleted, moved or copied, attachment
 * opened), with folder and message ids and the subject where the proxy saw
 * it.  Both transports (DCE/RPC and MAPI over HTTP).
 *
 * Options:
 *   audit:file = PATH                the lines are appended there (mode 0600)
 *   audit:syslog = yes               ... or sent to syslog instead
 *   audit:syslog facility = authpriv (daemon, auth, local0 ... local7)
 *   audit:syslog socket = /dev/log
 *
 * Built with the public headers only (-Iinclude), like any outside module;
 * reads the decoded structures of calls.h and rops.h directly. 8-bit
 * strings (ESSDN, String8 subjects) are taken as Latin-1 and UTF-16 ones
 * converted, both written as UTF-8.
 * Never a password, hash, key or message body: ids, names and subjects. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mapiproxy/module.h"

#define LOG_INFO_SEV 6
#define SUBJECTS 64 /* per session: message id -> subject, last opened */

struct audit_conf {
    int fd;         /* audit:file, or -1 */
    char *path;     /* for reopening after a rotation */
    ino_t ino;      /* of the open file */
    time_t checked; /* last time the path was looked at */
    struct mp_module_syslog *sl;
};

struct subj {
    uint64_t mid;
    char text[160];
};

struct audit_session {
    bool logged_on, logged_off;
    struct timespec t0;
    char user[300], peer[64], user_dn[300];
    const char *transport, *auth;
    unsigned long ops;
    uint32_t saved_handle; /* the last message saved: its handle and id, for a */
    uint64_t saved_mid;    /* submit of the same object (its copy has no id yet) */
    struct subj subjects[SUBJECTS];
    unsigned next_subject;
};

/* ---- a JSON line ---- */

struct line {
    char b[8192];
    size_t n;
    bool full;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (l->full || l->n + n + 2 > sizeof l->b) {
        l->full = true;
        return;
    }
    memcpy(l->b + l->n, s, n);
    l->n += n;
}

__attribute__((format(printf, 2, 3))) static void putf(struct line *l, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(l, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string (RFC 8259 escapes; bytes >= 0x80 pass as they are, the
 * proxy's strings being UTF-8), or null. */
static void put_str(struct line *l, const char *s)
{
    if (!s) {
        put(l, "null", 4);
        return;
    }
    put(l, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(l, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            putf(l, "\\u%04x", c);
        } else {
            put(l, s, 1);
        }
    }
    put(l, "\"", 1);
}

static void put_key(struct line *l, const char *k)
{
    putf(l, ",\"%s\":", k);
}

static void put_id(struct line *l, const char *k, uint64_t id)
{
    put_key(l, k);
    if (id)
        putf(l, "\"0x%016llx\"", (unsigned long long)id);
    else
        put(l, "null", 4);
}

/* ---- text of the decoded structures, as UTF-8 ---- */

/* Code point cp appended to out (room n, *o used); false when it does not fit. */
static bool put_cp(char *out, size_t n, size_t *o, uint32_t cp)
{
    size_t k = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (*o + k >= n)
        return false;
    char *d = out + *o;
    if (k == 1) {
        d[0] = (char)cp;
    } else if (k == 2) {
        d[0] = (char)(0xc0 | (cp >> 6));
        d[1] = (char)(0x80 | (cp & 0x3f));
    } else if (k == 3) {
        d[0] = (char)(0xe0 | (cp >> 12));
        d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[2] = (char)(0x80 | (cp & 0x3f));
    } else {
        d[0] = (char)(0xf0 | (cp >> 18));
        d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        d[3] = (char)(0x80 | (cp & 0x3f));
    }
    *o += k;
    out[*o] = 0;
    return true;
}

/* len bytes of 8-bit text (Latin-1, as the proxy's JSON reads it; trailing
 * NULs dropped), or of UTF-16LE (a lone surrogate becomes U+FFFD), into
 * out as UTF-8, cut to fit. */
static const char *text(const uint8_t *p, size_t len, bool wide, char *out, size_t n)
{
    size_t o = 0;
    out[0] = 0;
    if (!p)
        return out;
    if (!wide) {
        while (len && !p[len - 1])
            len--;
        for (size_t i = 0; i < len && put_cp(out, n, &o, p[i]); i++)
            ;
        return out;
    }
    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t cp = (uint32_t)(p[i] | p[i + 1] << 8);
        if (cp >= 0xd800 && cp <= 0xdbff && i + 3 < len) {
            uint32_t lo = (uint32_t)(p[i + 2] | p[i + 3] << 8);
            if (lo >= 0xdc00 && lo <= 0xdfff) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 2;
            }
        }
        if (cp >= 0xd800 && cp <= 0xdfff)
            cp = 0xfffd;
        if (!put_cp(out, n, &o, cp))
            break;
    }
    return out;
}

/* A TypedString (MS-OXCROPS 2.2.6.6.2): "" when of type 0 (no string). */
static const char *typed(const struct mp_rop_TypedString *t, char *out, size_t n)
{
    const struct mp_rop_str *s = t->StringType == 0x04                            ? &t->String
                                 : t->StringType == 0x02 || t->StringType == 0x03 ? &t->String8
                                                                                  : NULL;
    out[0] = 0;
    return s ? text(s->p, s->n, s->wide, out, n) : out;
}

/* The ReturnValue of a response of the ROPs of interest (0 when opaque). */
static uint32_t return_value(uint8_t id, const void *rsp)
{
#define RV(NAME) ((const struct mp_rop_rsp_##NAME *)rsp)->ReturnValue
    if (!rsp)
        return 0;
    switch (id) {
    case MP_ROP_Logon:
        return RV(Logon);
    case MP_ROP_OpenFolder:
        return RV(OpenFolder);
    case MP_ROP_OpenMessage:
        return RV(OpenMessage);
    case MP_ROP_SaveChangesMessage:
        return RV(SaveChangesMessage);
    case MP_ROP_SubmitMessage:
        return RV(SubmitMessage);
    case MP_ROP_TransportSend:
        return RV(TransportSend);
    case MP_ROP_DeleteMessages:
        return RV(DeleteMessages);
    case MP_ROP_HardDeleteMessages:
        return RV(HardDeleteMessages);
    case MP_ROP_MoveCopyMessages:
        return RV(MoveCopyMessages);
    case MP_ROP_DeleteFolder:
        return RV(DeleteFolder);
    case MP_ROP_MoveFolder:
        return RV(MoveFolder);
    case MP_ROP_OpenAttachment:
        return RV(OpenAttachment);
    }
    return 0;
#undef RV
}

/* ---- output ---- */

static void reopen_if_rotated(struct audit_conf *c)
{
    time_t now = time(NULL);
    if (now == c->checked)
        return;
    c->checked = now;
    struct stat st;
    if (!stat(c->path, &st) && st.st_ino == c->ino)
        return;
    int fd = open(c->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return; /* keep writing to the old one */
    if (!fstat(fd, &st))
        c->ino = st.st_ino;
    close(c->fd);
    c->fd = fd;
}

static void emit(struct mp_module_ctx *mc, struct line *l)
{
    struct audit_conf *c = mp_module_private(mc);
    put(l, "}", 1);
    if (l->full) {
        mp_module_log(mc, MP_MLOG_WARN, "an audit line longer than %zu bytes was cut", sizeof l->b);
        return;
    }
    if (c->sl) {
        if (mp_module_syslog_send(c->sl, LOG_INFO_SEV, l->b, l->n))
            mp_module_log(mc, MP_MLOG_WARN, "audit line not sent to syslog");
        return;
    }
    reopen_if_rotated(c);
    l->b[l->n++] = '\n';
    if (write(c->fd, l->b, l->n) != (ssize_t)l->n)
        mp_module_log(mc, MP_MLOG_ERROR, "cannot write the audit file %s: %s", c->path,
                      strerror(errno));
}

/* {"ts":..,"event":..,"session":..,"user":..,"client":..,"transport":.. */
static void head(struct line *l, const char *event, uint32_t session, const char *user,
                 const char *client, const char *transport)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    l->n = 0;
    l->full = false;
    putf(l, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"event\":\"%s\"", tm.tm_year + 1900,
         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, event);
    put_key(l, "session");
    putf(l, "%u", (unsigned)session);
    put_key(l, "user");
    put_str(l, user);
    put_key(l, "client");
    put_str(l, client && *client ? client : NULL);
    put_key(l, "transport");
    put_str(l, transport);
}

static void begin(struct line *l, const char *event, struct mp_call *call, const char *user)
{
    head(l, event, mp_session_id(mp_call_session(call)), user, mp_call_peer(call),
         mp_call_transport(call));
}

/* ---- sessions ---- */

static void session_free(void *p)
{
    free(p);
}

static struct audit_session *session_of(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct mp_session *s = mp_call_session(call);
    if (!s)
        return NULL;
    struct audit_session *as = mp_session_data(s, mc);
    if (as)
        return as;
    as = calloc(1, sizeof *as);
    if (!as || mp_session_set_data(s, mc, as, session_free)) {
        free(as);
        return NULL;
    }
    return as;
}

static void remember_subject(struct audit_session *as, uint64_t mid, const char *subject)
{
    if (!as || !mid)
        return;
    struct subj *x = NULL;
    for (size_t i = 0; i < SUBJECTS && !x; i++)
        if (as->subjects[i].mid == mid)
            x = &as->subjects[i];
    if (!x)
        x = &as->subjects[as->next_subject++ % SUBJECTS];
    x->mid = mid;
    snprintf(x->text, sizeof x->text, "%.159s", subject);
}

static const char *subject_of(const struct audit_session *as, uint64_t mid)
{
    for (size_t i = 0; as && mid && i < SUBJECTS; i++)
        if (as->subjects[i].mid == mid)
            return as->subjects[i].text;
    return NULL;
}

/* "15.0.4569.1506" from rgwClientVersion (MS-OXCRPC 3.1.4.1.3: with the
 * high bit of the second word set, major.minor in the first word, the
 * build's two parts in the others; else three plain numbers). */
static void client_version(const struct emsmdb_EcDoConnectEx_in *in, char *out, size_t n)
{
    out[0] = 0;
    if (!in)
        return;
    const uint16_t *w = in->rgwClientVersion;
    if (!(w[0] | w[1] | w[2]))
        return; /* MAPI/HTTP's Connect has none (its X-ClientApplication header does) */
    if (w[1] & 0x8000)
        snprintf(out, n, "%u.%u.%u.%u", (unsigned)(w[0] >> 8), (unsigned)(w[0] & 0xff),
                 (unsigned)(w[1] & 0x7fff), (unsigned)w[2]);
    else
        snprintf(out, n, "%u.%u.%u", (unsigned)w[0], (unsigned)w[1], (unsigned)w[2]);
}

static void logoff_line(struct mp_module_ctx *mc, struct audit_session *as, uint32_t session,
                        const char *reason)
{
    if (!as || !as->logged_on || as->logged_off)
        return;
    as->logged_off = true;
    struct line l;
    head(&l, "logoff", session, as->user, as->peer, as->transport);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    put_key(&l, "reason");
    put_str(&l, reason);
    put_key(&l, "duration_s");
    putf(&l, "%.3f", (double)(now.tv_sec - as->t0.tv_sec) + (now.tv_nsec - as->t0.tv_nsec) / 1e9);
    put_key(&l, "operations");
    putf(&l, "%lu", as->ops);
    emit(mc, &l);
}

/* EcDoConnectEx (MAPI/HTTP's Connect) answered: the logon; EcDoDisconnect
 * (Disconnect): the logoff. */
static enum mp_status audit_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    uint16_t op = mp_call_opnum(call);
    if (op != 10 && op != 1)
        return MP_CONTINUE;
    struct audit_session *as = session_of(mc, call);
    if (op == 1) {
        logoff_line(mc, as, mp_session_id(mp_call_session(call)), "disconnect");
        return MP_CONTINUE;
    }
    const struct emsmdb_EcDoConnectEx_in *req = mp_call_request(call);
    const struct emsmdb_EcDoConnectEx_out *rsp = mp_call_response(call);
    char ver[48], dn[300], name[300];
    client_version(req, ver, sizeof ver);
    snprintf(dn, sizeof dn, "%s", req && req->szUserDN ? req->szUserDN : "");
    snprintf(name, sizeof name, "%s", rsp && rsp->szDisplayName ? rsp->szDisplayName : "");
    unsigned long long rc = rsp ? (uint32_t)rsp->result : 0;
    struct line l;
    /* Who: the user the proxy checked, else the mailbox DN the client gave. */
    begin(&l, "logon", call, mp_call_user(call) ? mp_call_user(call) : dn[0] ? dn : NULL);

    put_key(&l, "auth");
    put_str(&l, mp_call_auth(call));
    put_key(&l, "user_dn");
    put_str(&l, dn[0] ? dn : NULL);
    put_key(&l, "display_name");
    put_str(&l, name[0] ? name : NULL);
    /* MAPI/HTTP: X-ClientApplication and the version in it; RPC: no
     * application name on the wire, the version from rgwClientVersion */
    put_key(&l, "client_application");
    put_str(&l, mp_call_client_application(call));
    put_key(&l, "client_version");
    put_str(&l, ver[0] ? ver : mp_call_client_version(call));
    put_key(&l, "result");
    putf(&l, "\"0x%08llx\"", rc);
    emit(mc, &l);
    if (as && !rc && !as->logged_on) {
        as->logged_on = true;
        clock_gettime(CLOCK_MONOTONIC, &as->t0);
        snprintf(as->user, sizeof as->user, "%s", mp_call_user(call) ? mp_call_user(call) : dn);
        snprintf(as->user_dn, sizeof as->user_dn, "%s", dn);
    }
    return MP_CONTINUE;
}

/* The ROPs of interest: event name by RopId. */
static const char *rop_event(uint8_t id)
{
    switch (id) {
    case 0xFE:
        return "mailbox_opened"; /* RopLogon */
    case 0x02:
        return "folder_opened";
    case 0x03:
        return "message_opened";
    case 0x0C:
        return "message_saved";
    case 0x32:
        return "message_submitted";
    case 0x4A:
        return "message_sent"; /* RopTransportSend */
    case 0x1E:
    case 0x91:
        return "messages_deleted";
    case 0x33:
        return "messages_moved"; /* or _copied, by WantCopy */
    case 0x1D:
        return "folder_deleted";
    case 0x35:
        return "folder_moved";
    case 0x22:
        return "attachment_opened";
    default:
        return NULL;
    }
}

/* The MessageIds of a DeleteMessages, HardDeleteMessages or
 * MoveCopyMessages request, at most max. */
static size_t message_ids(uint8_t id, const void *req, uint64_t *ids, size_t max)
{
    const uint64_t *v = NULL;
    size_t n = 0;
    if (!req)
        return 0;
    if (id == MP_ROP_DeleteMessages) {
        const struct mp_rop_req_DeleteMessages *r = req;
        v = r->MessageIds, n = r->MessageIdCount;
    } else if (id == MP_ROP_HardDeleteMessages) {
        const struct mp_rop_req_HardDeleteMessages *r = req;
        v = r->MessageIds, n = r->MessageIdCount;
    } else if (id == MP_ROP_MoveCopyMessages) {
        const struct mp_rop_req_MoveCopyMessages *r = req;
        v = r->MessageIds, n = r->MessageIdCount;
    }
    if (!v)
        return 0;
    n = n < max ? n : max;
    memcpy(ids, v, n * sizeof *ids);
    return n;
}

static enum mp_status audit_rop_response(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct audit_session *as = NULL;
    size_t n = mp_call_rop_count(call, true);
    for (size_t i = 0; i < n; i++) {
        uint8_t id = mp_call_rop_id(call, true, i);
        const char *ev = rop_event(id);
        int ri = mp_call_rop_request_index(call, i);
        if (!ev || ri < 0)
            continue;
        if (!as)
            as = session_of(mc, call);
        const void *rsp = mp_call_rop(call, true, i);
        const void *req = mp_call_rop(call, false, (size_t)ri);
        const struct mp_object *obj = mp_call_rop_object(call, true, i);
        const struct mp_object *made = mp_call_rop_new_object(call, i);
        unsigned long long rv = return_value(id, rsp);
        uint64_t fid = obj ? obj->folder_id : 0, mid = obj ? obj->message_id : 0;
        if (!mid && obj && as && obj->type == MP_OBJ_MESSAGE && obj->handle == as->saved_handle)
            mid = as->saved_mid;
        uint64_t ids[256];
        size_t nids = 0;
        char subject[160] = "", prefix[40] = "", mailbox[300] = "";
        const struct mp_rop_req_MoveCopyMessages *mcm = id == 0x33 ? req : NULL;
        if (mcm && mcm->WantCopy)
            ev = "messages_copied";
        struct line l;
        begin(&l, ev, call, as && as->user[0] ? as->user : mp_call_user(call));
        switch (id) {
        case 0xFE:
            if (req) {
                const struct mp_rop_req_Logon *lg = req;
                text(lg->Essdn, lg->EssdnSize, false, mailbox, sizeof mailbox);
            }
            put_key(&l, "mailbox");
            put_str(&l, mailbox[0] ? mailbox : NULL);
            break;
        case 0x02:
            fid = made  ? made->folder_id
                  : req ? ((const struct mp_rop_req_OpenFolder *)req)->FolderId
                        : 0;
            put_id(&l, "folder_id", fid);
            break;
        case 0x03: {
            const struct mp_rop_req_OpenMessage *om = req;
            const struct mp_rop_rsp_OpenMessage *omr = rsp;
            fid = made ? made->folder_id : om ? om->FolderId : 0;
            mid = made ? made->message_id : om ? om->MessageId : 0;
            if (omr) {
                typed(&omr->Message.NormalizedSubject, subject, sizeof subject);
                typed(&omr->Message.SubjectPrefix, prefix, sizeof prefix);
            }
            if (!rv && subject[0]) {
                char full[200];
                snprintf(full, sizeof full, "%s%s", prefix, subject);
                remember_subject(as, mid, full);
            }
            put_id(&l, "folder_id", fid);
            put_id(&l, "message_id", mid);
            break;
        }
        case 0x0C:
            if (!rv && rsp)
                mid = ((const struct mp_rop_rsp_SaveChangesMessage *)rsp)->MessageId;
            if (as && obj && mid) {
                as->saved_handle = obj->handle;
                as->saved_mid = mid;
            }
            /* fall through */
        case 0x32:
        case 0x4A:
            put_id(&l, "folder_id", fid);
            put_id(&l, "message_id", mid);
            break;
        case 0x1E:
        case 0x91:
        case 0x33:
            nids = message_ids(id, req, ids, sizeof ids / sizeof ids[0]);
            put_id(&l, "folder_id", fid);
            put_key(&l, "message_ids");
            put(&l, "[", 1);
            for (size_t k = 0; k < nids; k++)
                putf(&l, "%s\"0x%016llx\"", k ? "," : "", (unsigned long long)ids[k]);
            put(&l, "]", 1);
            if (id == 0x91)
                put(&l, ",\"hard\":true", 12);
            break;
        case 0x1D:
            put_id(&l, "folder_id",
                   req ? ((const struct mp_rop_req_DeleteFolder *)req)->FolderId : 0);
            put_id(&l, "parent_folder_id", fid);
            break;
        case 0x35:
            put_id(&l, "folder_id",
                   req ? ((const struct mp_rop_req_MoveFolder *)req)->FolderId : 0);
            put_id(&l, "source_folder_id", fid);
            break;
        case 0x22:
            put_id(&l, "folder_id", fid);
            put_id(&l, "message_id", mid);
            put_key(&l, "attachment_id");
            putf(&l, "%lu",
                 req ? (unsigned long)((const struct mp_rop_req_OpenAttachment *)req)->AttachmentID
                     : 0ul);
            break;
        }
        if (id != 0xFE && id != 0x02 && id != 0x1D && id != 0x35 && nids == 0) {
            const char *sj = id == 0x03 && subject[0] ? NULL : subject_of(as, mid);
            char full[200];
            if (id == 0x03 && subject[0])
                snprintf(full, sizeof full, "%s%s", prefix, subject), sj = full;
            put_key(&l, "subject");
            put_str(&l, sj);
        }
        put_key(&l, "result");
        putf(&l, "\"0x%08llx\"", rv);
        emit(mc, &l);
        if (as)
            as->ops++;
    }
    return MP_CONTINUE;
}

/* The session ends without an EcDoDisconnect (the client went away). */
static void audit_unbind(struct mp_module_ctx *mc, struct mp_session *s, void *data)
{
    logoff_line(mc, data, mp_session_id(s), "session_end");
}

static enum mp_status audit_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    /* Remember where the session comes from, for a logoff without a call. */
    struct audit_session *as = session_of(mc, call);
    if (as && !as->peer[0]) {
        snprintf(as->peer, sizeof as->peer, "%s", mp_call_peer(call));
        as->transport = mp_call_transport(call);
        as->auth = mp_call_auth(call);
    }
    return MP_CONTINUE;
}

static int audit_init(struct mp_module_ctx *mc)
{
    struct audit_conf *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    c->fd = -1;
    const char *file = mp_module_option(mc, "file");
    if (mp_module_option_bool(mc, "syslog", false)) {
        const char *fac = mp_module_option(mc, "syslog facility");
        c->sl = mp_module_syslog_open(fac ? fac : "authpriv", mp_module_option(mc, "syslog socket"),
                                      "mapiproxy-audit");
        if (!c->sl) {
            mp_module_log(mc, MP_MLOG_ERROR,
                          "audit:syslog facility \"%s\" is not a facility; use authpriv, auth, "
                          "daemon or local0 ... local7",
                          fac ? fac : "authpriv");
            free(c);
            return -1;
        }
    } else if (file && *file) {
        c->fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        struct stat st;
        if (c->fd < 0 || fstat(c->fd, &st) || !(c->path = strdup(file))) {
            mp_module_log(mc, MP_MLOG_ERROR, "cannot open audit:file %s: %s", file,
                          strerror(errno));
            if (c->fd >= 0)
                close(c->fd);
            free(c);
            return -1;
        }
        c->ino = st.st_ino;
        c->checked = time(NULL);
    } else {
        mp_module_log(mc, MP_MLOG_ERROR,
                      "set audit:file = PATH or audit:syslog = yes (where the audit trail goes)");
        free(c);
        return -1;
    }
    mp_module_set_private(mc, c);
    mp_module_log(mc, MP_MLOG_INFO, "audit trail to %s", c->sl ? "syslog" : file);
    return 0;
}

static void audit_fini(struct mp_module_ctx *mc)
{
    struct audit_conf *c = mp_module_private(mc);
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    mp_module_syslog_close(c->sl);
    free(c->path);
    free(c);
}

static const struct mp_module_want audit_wants[] = {
    {"exchange_emsmdb", 10}, /* EcDoConnectEx, MAPI/HTTP Connect */
    {"exchange_emsmdb", 1},  /* EcDoDisconnect, MAPI/HTTP Disconnect */
    {"exchange_emsmdb", 11}, /* EcDoRpcExt2, MAPI/HTTP Execute: where the session comes from */
    {NULL, 0},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "audit",
    .description = "audit trail: logons, mailbox operations, logoffs as JSON lines",
    .wants = audit_wants,
    .init = audit_init,
    .fini = audit_fini,
    .pull = audit_pull,
    .push = audit_push,
    .unbind = audit_unbind,
    .rop_response = audit_rop_response,
};
