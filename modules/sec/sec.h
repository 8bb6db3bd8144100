/* Shared code of the security modules (av, spam, phish, extract):
 * the service engine on the module API's loop, per-direction policy and
 * actions, the verdict cache, the JSON verdict log, the quarantine.
 * doc/internals/security-modules.md. */
#ifndef MP_SEC_H
#define MP_SEC_H
#include "mapiproxy/module.h"
#include "svc/engine.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sec_action {
    SEC_ACT_BLOCK = 0,
    SEC_ACT_REPLACE,    /* replace the bad attachment(s) with a notice; else block */
    SEC_ACT_QUARANTINE, /* write .eml + .json to the quarantine dir, then block */
    SEC_ACT_TAG,        /* subject prefix + X- header; module-specific */
    SEC_ACT_DEFANG,     /* phish: rewrite the links in the body */
    SEC_ACT_LOG,        /* only the log line */
};
const char *sec_action_name(enum sec_action a);

/* Option schema entries every security module takes (a macro so each
 * module's own array can list them with its own). */
extern const char *const sec_dir_choices[];
extern const char *const sec_fail_choices[];
extern const char *const sec_action_choices[];
#define SEC_COMMON_OPTIONS                                                                         \
    {"directions", MP_OPT_ENUM, 0, 0, sec_dir_choices},                                            \
        {"fail_upload", MP_OPT_ENUM, 0, 0, sec_fail_choices},                                      \
        {"fail_download", MP_OPT_ENUM, 0, 0, sec_fail_choices},                                    \
        {"action_upload", MP_OPT_ENUM, 0, 0, sec_action_choices},                                  \
        {"action_download", MP_OPT_ENUM, 0, 0, sec_action_choices},                                \
        {"quarantine_dir", MP_OPT_STRING, 0, 0, NULL},                                             \
        {"cache_size", MP_OPT_INT, 0, 1000000, NULL}, {"cache_ttl", MP_OPT_INT, 0, 604800, NULL},  \
        {"max_size", MP_OPT_INT, 1024, 1L << 30, NULL},                                            \
        {"timeout", MP_OPT_INT, 100, 600000, NULL},                                                \
        {"connect_timeout", MP_OPT_INT, 100, 60000, NULL},                                         \
        {"max_conns", MP_OPT_INT, 1, 1024, NULL}, {"max_queue", MP_OPT_INT, 1, 100000, NULL},      \
        {"verdict_log", MP_OPT_STRING, 0, 0, NULL}, {"tag_prefix", MP_OPT_STRING, 0, 0, NULL }

struct sec_cache;
struct sec_timer;

/* What a finished scan says, as the cache keeps it. */
struct sec_result {
    enum mp_svc_kind kind; /* CLEAN, INFECTED, SPAM, REJECT, ... UNAVAILABLE */
    char name[256];        /* virus name, rspamd action, URL, reply text */
    double score, required;
    bool has_score;
    uint64_t bad_attachments; /* bit i: attachment i is the bad part (av) */
    bool bad_body;            /* the message itself (not only attachments) */
    char quarantine_id[64];   /* the message's quarantine (once per id + change key) */
};

struct sec_ctx {
    struct mp_module_ctx *mc;
    const char *mod; /* module name */
    struct mp_svc_loopif lif;
    struct sec_timer *timers;
    bool dir_on[2];
    bool fail_open[2];
    enum sec_action action[2];
    char *quarantine_dir;
    char *verdict_log;
    char *tag_prefix;
    size_t max_size;
    struct mp_svc_config svc_defaults;
    struct sec_cache *cache;
    unsigned long seq; /* quarantine ids */
};

/* Reads the common options; dflt_dirs: "both", "upload" or "download";
 * dflt_action: per direction.  Logs the policy.  0 or -1. */
int sec_init(struct sec_ctx *sc, struct mp_module_ctx *mc, const char *dflt_dirs,
             enum sec_action dflt_up, enum sec_action dflt_down);
void sec_fini(struct sec_ctx *sc);
/* With `tag` in a direction: the proxy maps these PS_INTERNET_HEADERS
 * names in every session (mp_module_map_name), so the X- headers of a tag
 * are set even when the client never mapped them.  NULL-terminated. */
void sec_map_header_names(struct sec_ctx *sc, const char *const *names);
/* No verdict cache (modules whose verdict depends on files that change). */
void sec_cache_disable(struct sec_ctx *sc);
/* A service client of this module on the proxy's loop. */
struct mp_svc *sec_service(struct sec_ctx *sc, const char *name, const char *addr);

/* One message being scanned. */
struct sec_job {
    struct sec_ctx *sc;
    struct mp_message_event *ev;
    enum mp_message_dir dir;
    uint64_t t0_us;
    unsigned pending;  /* conversations not answered yet */
    bool async;        /* the hook returned MP_PENDING */
    uint8_t *mime;     /* the message as MIME (malloc) */
    size_t mime_len;
    char service[64];  /* for the log: "clamd", "icap", "spamd+rspamd" ... */
    int force_action;    /* an enum sec_action that overrides the configured one, or -1 */
    const char *verdict; /* the log's verdict word when bad (default: the kind's name) */
    struct sec_result r;
    bool cached;
    char quarantine_id[64];
    char detail[512]; /* extra JSON members for the log (",\"k\":v"...), may be empty */
    /* module callbacks */
    void (*apply)(struct sec_job *j, enum sec_action a); /* tag / defang / replace */
    void *priv;
};

/* Starts a job for ev: NULL when the direction is off for this module or
 * when the cache answered (the verdict was applied and logged already). */
struct sec_job *sec_job_start(struct sec_ctx *sc, struct mp_message_event *ev,
                              void (*apply)(struct sec_job *, enum sec_action));
/* Loads the MIME into j->mime (bounded by max_size): 0, 1 too big, -1 error. */
int sec_job_load_mime(struct sec_job *j);
/* Folds one service verdict into the job (worst wins). */
void sec_job_merge(struct sec_job *j, const struct mp_svc_verdict *v);
/* Every answer is in: applies the action, logs, caches, resumes when async,
 * frees j. */
void sec_job_finish(struct sec_job *j);
/* The hook's return after submitting: MP_PENDING (or finishes now when
 * nothing is pending). */
enum mp_status sec_job_wait(struct sec_job *j);
bool sec_result_bad(const struct sec_result *r);

/* A property's bytes (tag) or attachment i's PidTagAttachDataBinary, whole,
 * in malloc'd memory with a NUL after them; NULL when absent, empty, over
 * max or unreadable. */
uint8_t *sec_read_prop(const struct mp_message *m, uint32_t tag, size_t max, size_t *len);
uint8_t *sec_read_attachment(const struct mp_message *m, size_t i, size_t max, size_t *len);

/* JSON string escaping into out (always NUL-terminated). */
void sec_json_str(char *out, size_t cap, const char *s);
uint64_t sec_now_us(void);
#endif
