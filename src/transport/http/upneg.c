/* mapiproxy:http upstream auth = negotiate: the proxy's own Kerberos logon
 * (HTTP Negotiate, RFC 4559, one leg) on each upstream connection of the
 * HTTPS front when it terminates the clients' logons.  The token is made on
 * the front's KDC worker (a service ticket may need the KDC), then sent as
 * the handshake's GET (upauth.c), as NTLM's legs are. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/kdc_worker.h"
#include "auth/ntlm_crypto.h"
#include "core/log.h"
#include "transport/http/hconn.h"
#include "transport/http/hneg.h"

struct mp_hun {
    struct mp_gss_cred *cred; /* the proxy's Kerberos identity */
    char spn[300];            /* mapiproxy:http upstream spn, or HTTP@<upstream host> */
    struct mp_kdc_worker kdc;
};

static void hun_run(struct mp_kdc_job *j)
{
    struct mp_hun *n = j->arg;
    mp_hneg_job(j, n->cred, n->spn);
}

/* Loop thread: the token came; it goes as the handshake's GET. */
static void hun_done(void *arg, struct mp_kdc_job *j)
{
    (void)arg;
    struct hconn *s = j->owner;
    if (s) {
        s->ua.krb_job = NULL;
        const char *line = (const char *)j->tok.data;
        static const char pre[] = "Authorization: ";
        size_t n = j->rc ? 0 : strlen(line);
        if (!j->rc && n > sizeof pre + 2 && !strncmp(line, pre, sizeof pre - 1)) {
            struct mp_buf v = {.data = (uint8_t *)line + sizeof pre - 1,
                               .len = n - (sizeof pre - 1) - 2};
            if (mp_hu_send(s, &v))
                snprintf(j->why, sizeof j->why, "out of memory"), j->rc = -1;
        } else if (!j->rc) {
            snprintf(j->why, sizeof j->why, "no Negotiate token"), j->rc = -1;
        }
        if (j->rc) {
            char why[sizeof j->why + 40];
            snprintf(why, sizeof why, "the proxy's Kerberos logon: %s", j->why);
            s->u.eof = true; /* the pinned connection: never another */
            mp_hf_upstream_failed(s, 502, why);
        }
        if (!s->dead)
            mp_hf_pump(s);
    }
    if (j->tok.data)
        mp_ntlm_cleanse(j->tok.data, j->tok.cap);
    mp_kdc_job_free(j);
}

int mp_hun_init(struct mp_http *h)
{
    const struct mp_config *cfg = h->cfg;
    if (!h->auth.on || strcasecmp(cfg->http_upstream_auth, "negotiate"))
        return 0;
    struct mp_hun *n = calloc(1, sizeof *n);
    if (!n)
        return -1;
    if (cfg->http_upstream_spn[0])
        snprintf(n->spn, sizeof n->spn, "%s", cfg->http_upstream_spn);
    else
        snprintf(n->spn, sizeof n->spn, "HTTP@%s", cfg->http_upstream.host);
    n->cred = mp_hneg_up_cred(cfg, n, "mapiproxy:http upstream auth", n->spn);
    if (!n->cred || mp_kdc_start(&n->kdc, h->loop, NULL, hun_done, n)) {
        mp_gss_cred_free(n->cred);
        free(n);
        return -1;
    }
    h->hun = n;
    return 0;
}

/* After the connections are gone (their jobs lost their owner). */
void mp_hun_free(struct mp_http *h)
{
    struct mp_hun *n = h->hun;
    if (!n)
        return;
    mp_kdc_stop(&n->kdc);
    mp_gss_cred_free(n->cred);
    free(n);
    h->hun = NULL;
}

int mp_hun_begin(struct hconn *s)
{
    struct mp_kdc_job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->run = hun_run;
    j->arg = s->h->hun;
    j->owner = s;
    s->ua.krb_job = j;
    mp_kdc_enqueue(&s->h->hun->kdc, j);
    mp_debug("http #%" PRIu64 " %s: the proxy's Kerberos logon upstream (%s)", s->id, s->peer,
             s->h->hun->spn);
    return 0;
}
