/* The KDC/winbind worker thread (auth/kdc_worker.h). */
#include "auth/kdc_worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "auth/dcerpc_auth.h"
#include "auth/gss.h"
#include "auth/winbind.h"
#include "core/log.h"

#define SVC_CRED_MAX_AGE_MS (4ull * 3600 * 1000) /* well inside a 10 h TGT */

/* Worker thread: the service credential's TGT must stay forwardable for
 * S4U2Proxy, and MIT renews it without that flag; so it is replaced
 * before it expires.  The old one is kept until exit (credentials made
 * from it may still be in use). */
static void svc_refresh(struct mp_dce_auth *au, struct mp_kdc_job *j)
{
    if (mp_now_ms() - au->svc_born_ms < SVC_CRED_MAX_AGE_MS)
        return;
    char err[MP_GSS_ERRLEN];
    struct mp_gss_cred *n =
        mp_gss_cred_service(au->cfg->keytab, au->cfg->service_principal, err, sizeof(err));
    if (!n) {
        snprintf(j->note, sizeof(j->note), "service credential not renewed: %.300s", err);
        return;
    }
    if (au->n_retired == sizeof(au->retired) / sizeof(au->retired[0])) {
        mp_gss_cred_free(au->retired[0]);
        memmove(au->retired, au->retired + 1, sizeof(au->retired) - sizeof(au->retired[0]));
        au->n_retired--;
    }
    au->retired[au->n_retired++] = au->svc_cred;
    au->svc_cred = n;
    au->svc_born_ms = mp_now_ms();
    snprintf(j->note, sizeof(j->note), "service credential renewed (forwardable TGT)");
}

/* Worker thread: the credential and first leg towards the upstream.  These
 * are the calls that can wait for the KDC. */
static void kdc_run(struct mp_dce_auth *au, struct mp_kdc_job *j)
{
    if (j->run) {
        j->run(j);
        return;
    }
    if (j->wb) {
        mp_winbind_authenticate(j->wb);
        return;
    }
    char err[MP_GSS_ERRLEN] = "";
    const char *spn = au->cfg->upstream_spn;
    struct mp_gss_cred *cred = au->up_cred;
    j->rc = -1;
    if (au->up_mode == MP_UP_S4U) {
        svc_refresh(au, j);
        j->cred = mp_gss_cred_impersonate(au->svc_cred, j->user, err, sizeof(err));
        if (!j->cred) {
            snprintf(j->why, sizeof(j->why), "S4U2Self for %.200s: %.300s", j->user, err);
            return;
        }
        cred = j->cred;
    }
    j->ctx = mp_gss_initiator_new(cred, spn, MP_AUTHN_GSS_KERBEROS, 0, err, sizeof(err));
    if (!j->ctx) {
        snprintf(j->why, sizeof(j->why), "Kerberos initiator for %.200s: %.300s", spn, err);
        return;
    }
    if (mp_gss_step(j->ctx, NULL, 0, &j->tok) != MP_GSS_CONTINUE) {
        snprintf(j->why, sizeof(j->why), "Kerberos towards %.200s%s: %.300s", spn,
                 au->up_mode == MP_UP_S4U ? " (S4U2Proxy)" : "", mp_gss_error(j->ctx));
        return;
    }
    j->rc = 0;
}

static void *kdc_main(void *arg)
{
    struct mp_kdc_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->q && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        struct mp_kdc_job *j = w->q;
        w->q = j->next;
        if (!w->q)
            w->q_tail = &w->q;
        pthread_mutex_unlock(&w->mu);
        kdc_run(w->au, j);
        pthread_mutex_lock(&w->mu);
        j->next = NULL;
        *w->finished_tail = j;
        w->finished_tail = &j->next;
        uint64_t one = 1;
        if (write(w->io.fd, &one, sizeof(one)) < 0) {
            /* the counter is only full after 2^64 - 1 jobs */
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void mp_kdc_job_free(struct mp_kdc_job *j)
{
    if (j->wb) {
        mp_wb_logon_free(j->wb);
        free(j->wb);
    }
    mp_buf_free(&j->pdu);
    mp_gss_ctx_free(j->ctx);
    mp_gss_cred_free(j->cred);
    mp_buf_free(&j->tok);
    free(j);
}

/* Loop thread: jobs come back; each goes to the done function. */
static void kdc_io_cb(struct mp_io *io, uint32_t ev)
{
    struct mp_kdc_worker *w = io->data;
    uint64_t n;
    if (read(io->fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: nothing new */
    }
    pthread_mutex_lock(&w->mu);
    struct mp_kdc_job *j = w->finished;
    w->finished = NULL;
    w->finished_tail = &w->finished;
    pthread_mutex_unlock(&w->mu);
    while (j) {
        struct mp_kdc_job *next = j->next;
        if (j->note[0])
            mp_info("kerberos: %s", j->note);
        w->done(w->arg, j);
        j = next;
    }
}

int mp_kdc_start(struct mp_kdc_worker *w, struct mp_loop *loop, struct mp_dce_auth *au,
                 mp_kdc_done_fn done, void *arg)
{
    w->loop = loop;
    w->au = au;
    w->done = done;
    w->arg = arg;
    w->q_tail = &w->q;
    w->finished_tail = &w->finished;
    w->io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->io.fd < 0) {
        mp_error("eventfd: %s", strerror(errno));
        return -1;
    }
    w->io.cb = kdc_io_cb;
    w->io.data = w;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    int rc = pthread_create(&w->thread, NULL, kdc_main, w);
    if (rc) {
        mp_error("cannot start the KDC worker thread: %s", strerror(rc));
        close(w->io.fd);
        w->io.fd = -1;
        return -1;
    }
    w->started = true;
    mp_io_set(loop, &w->io, MP_READ);
    return 0;
}

void mp_kdc_stop(struct mp_kdc_worker *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL); /* waits for a KDC call in progress */
    w->started = false;
    for (struct mp_kdc_job *lists[2] = {w->q, w->finished}, **l = lists; l < lists + 2; l++)
        while (*l) {
            struct mp_kdc_job *n = (*l)->next;
            mp_kdc_job_free(*l);
            *l = n;
        }
    w->q = w->finished = NULL;
    mp_io_close(w->loop, &w->io);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void mp_kdc_enqueue(struct mp_kdc_worker *w, struct mp_kdc_job *j)
{
    pthread_mutex_lock(&w->mu);
    *w->q_tail = j;
    w->q_tail = &j->next;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}
