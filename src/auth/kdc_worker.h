/* The KDC/winbind worker: one thread that makes the calls that can wait on
 * a KDC or a domain controller (S4U2Self, S4U2Proxy, service tickets,
 * winbind's NTLM check), so the loop never waits.  Jobs go in with
 * mp_kdc_enqueue() and come back, on the loop thread, to the done function
 * given at start: the worker knows nothing of whoever queued them.
 *
 * Ownership: the worker owns a job while it is queued or running; then the
 * done function owns it (and frees it with mp_kdc_job_free). */
#ifndef MP_AUTH_KDC_WORKER_H
#define MP_AUTH_KDC_WORKER_H
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "event/loop.h"

struct mp_dce_auth;
struct mp_gss_ctx;
struct mp_gss_cred;
struct mp_wb_logon;

struct mp_kdc_job {
    struct mp_kdc_job *next;
    void *owner;            /* the queuer's; NULL once it is gone (result dropped) */
    struct mp_wb_logon *wb; /* set: a winbind logon check, not Kerberos */
    struct mp_buf pdu;      /* the queuer's: e.g. the PDU to handle again after */
    char user[420];         /* S4U: whom to impersonate */
    /* results (Kerberos): the credential and context of the upstream leg and
     * its first token; rc 0 or -1 with why */
    struct mp_gss_cred *cred;
    struct mp_gss_ctx *ctx;
    struct mp_buf tok;
    char why[600];
    char note[400]; /* for the log, written by the loop thread */
    int rc;
    /* a job of the queuer's own: run(j) on the worker thread instead of the
     * Kerberos/winbind step (then the worker's au may be NULL) */
    void (*run)(struct mp_kdc_job *j);
    void *arg;
};

typedef void (*mp_kdc_done_fn)(void *arg, struct mp_kdc_job *j);

struct mp_kdc_worker {
    struct mp_loop *loop;
    struct mp_dce_auth *au; /* credentials and configuration the jobs use */
    mp_kdc_done_fn done;
    void *arg;
    pthread_t thread;
    bool started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mp_kdc_job *q, **q_tail, *finished, **finished_tail;
    struct mp_io io; /* eventfd: jobs done */
};

/* Starts the thread.  0, or -1 after an error log line. */
int mp_kdc_start(struct mp_kdc_worker *w, struct mp_loop *loop, struct mp_dce_auth *au,
                 mp_kdc_done_fn done, void *arg);
/* Waits for a job in progress, frees the queued ones (no done calls). */
void mp_kdc_stop(struct mp_kdc_worker *w);
void mp_kdc_enqueue(struct mp_kdc_worker *w, struct mp_kdc_job *j);
void mp_kdc_job_free(struct mp_kdc_job *j);
#endif
