/* Logons on the HTTPS front (hconn.h struct hup): the client's, when the
 * proxy terminates them (hauth.c), and the proxy's own NTLM handshake on
 * the upstream connection. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/kdc_worker.h"
#include "core/log.h"
#include "ops/metrics.h"
#include "transport/http/hconn.h"

/* The client's logon, before its request may reach the upstream: 0 to go
 * on (its Authorization replaced by the proxy's Basic one, or removed), 1
 * when the proxy answers 401 itself. */
int mp_hu_request(struct hconn *s)
{
    struct mp_http *h = s->h;
    size_t al = 0;
    const char *az = mp_http_msg_get(&s->req, "authorization", &al);
    char why[200];
    bool was = s->ua.ha.authed;
    mp_buf_free(&s->ua.www);
    enum mp_hauth_verdict v =
        mp_hauth_client(&h->auth, &s->ua.ha, az, al, &s->ua.www, why, sizeof why);
    char user[sizeof s->ua.ha.user]; /* the client's text: never raw in a log line */
    mp_log_safe_copy(user, sizeof user, s->ua.ha.user[0] ? s->ua.ha.user : "-");
    if (v == MP_HAUTH_DENY)
        mp_info("http #%" PRIu64 " %s: logon refused: user=%s: %s", s->id, s->peer, user, why);
    if (v == MP_HAUTH_DENY)
        mp_metrics_auth(az && al > 5 && !strncasecmp(az, "Basic", 5) ? "Basic"
                        : az && al > 9 && !strncasecmp(az, "Negotiate", 9) && h->auth.neg
                            ? "SPNEGO/Kerberos"
                            : "NTLM",
                        false);
    if (v != MP_HAUTH_PASS) {
        s->local_status = 401;
        return 1;
    }
    const char *scheme = s->ua.ha.krb ? "Negotiate" : "NTLM";
    if (s->ua.ha.authed && !was)
        mp_info("http #%" PRIu64 " %s: logged on as %s (%s, this connection)", s->id, s->peer, user,
                scheme);
    else if (!s->ua.ha.authed)
        mp_debug("http #%" PRIu64 " %s: Basic logon of %s", s->id, s->peer, user);
    if (!(s->ua.ha.authed && was))
        mp_metrics_auth(!s->ua.ha.authed ? "Basic"
                        : s->ua.ha.krb   ? "SPNEGO/Kerberos"
                                         : "NTLM",
                        true);
    mp_http_msg_del(&s->req, "authorization");
    if (h->auth.up_basic) {
        char val[1200];
        int bad = mp_hauth_up_basic(&h->auth, val, sizeof val) ||
                  mp_http_msg_add(&s->req, "Authorization", val);
        mp_ntlm_cleanse(val, sizeof val);
        if (bad) {
            s->local_status = 502;
            return 1;
        }
    }
    return 0;
}

/* One leg of the proxy's NTLM handshake on the upstream connection: a GET
 * of the client's first URL without a body, held requests wait in u.out. */
int mp_hu_send(struct hconn *s, const struct mp_buf *authval)
{
    char head[400];
    int n = snprintf(head, sizeof head, " HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n",
                     s->h->up_hostport);
    if (n < 0 || (size_t)n >= sizeof head || mp_buf_append(&s->ua.out, "GET ", 4) ||
        mp_buf_append(&s->ua.out, s->ua.url, strlen(s->ua.url)) ||
        mp_buf_append(&s->ua.out, head, (size_t)n) ||
        mp_buf_append(&s->ua.out, "Authorization: ", 15) ||
        mp_buf_append(&s->ua.out, mp_buf_head(authval), mp_buf_avail(authval)) ||
        mp_buf_append(&s->ua.out, "\r\n\r\n", 4))
        return -1;
    return 0;
}

/* Who sends this request: the logged-on user when the proxy terminates
 * logons; in pass-through what the client's NTLM AUTHENTICATE (for its
 * connection) or Basic header (for the request) names, which the upstream
 * verifies; "" when the proxy cannot tell (Kerberos, Bearer). */
void mp_hu_identity(struct hconn *s)
{
    if (s->h->auth.on) {
        snprintf(s->who, sizeof s->who, "%s", s->ua.ha.user);
        return;
    }
    size_t al = 0;
    const char *az = mp_http_msg_get(&s->req, "authorization", &al);
    char w[sizeof s->who];
    int k = az ? mp_hauth_peek_identity(az, al, w, sizeof w) : 0;
    if (k == 1)
        snprintf(s->ua.conn_who, sizeof s->ua.conn_who, "%s", w);
    snprintf(s->who, sizeof s->who, "%s", k == 2 ? w : s->ua.conn_who);
}

int mp_hu_begin(struct hconn *s, const char *url, size_t ul)
{
    free(s->ua.url);
    s->ua.url = strndup(url, ul); /* bounded by mapiproxy:http max header size */
    if (!s->ua.url)
        return -1;
    for (char *q = s->ua.url; *q; q++)
        if ((unsigned char)*q <= ' ' || *q == 0x7f)
            *q = '_';
    if (s->h->hun) { /* Kerberos: the GET goes when the token comes (upneg.c) */
        if (mp_hun_begin(s))
            return -1;
        s->ua.step = 1;
        return 0;
    }
    struct mp_buf v = {0};
    int rc = mp_hauth_up_negotiate(&s->h->auth, &s->ua.up, &v) || mp_hu_send(s, &v);
    mp_buf_free(&v);
    if (rc)
        return -1;
    s->ua.step = 1;
    return 0;
}

/* A response to a handshake leg is complete.  0, or -1 with ua_why set. */
int mp_hu_step(struct hconn *s, http_parser *p)
{
    const struct mp_config *cfg = s->h->cfg;
    if (s->ua.status < 200)
        return 0; /* interim */
    if (s->h->hun && s->ua.status == 401) {
        snprintf(s->ua.why, sizeof s->ua.why, "refused the proxy's Kerberos logon");
        return -1;
    }
    if (s->ua.step == 2 && s->ua.status == 401) {
        snprintf(s->ua.why, sizeof s->ua.why, "refused the proxy's logon as %.60s%s%.60s",
                 cfg->domain, cfg->domain[0] ? "\\" : "", cfg->username);
        return -1;
    }
    if (!http_should_keep_alive(p)) {
        snprintf(s->ua.why, sizeof s->ua.why,
                 "closes its connection in the proxy's NTLM handshake (status %d)", s->ua.status);
        return -1;
    }
    if (s->ua.step == 2 || s->ua.status != 401) {
        mp_debug("http #%" PRIu64 " %s: upstream logon done (status %d)", s->id, s->peer,
                 s->ua.status);
        s->ua.step = 3;
        mp_hauth_up_free(&s->ua.up);
        mp_buf_free(&s->ua.out);
        free(s->ua.url);
        s->ua.url = NULL;
        return 0;
    }
    size_t l = 0;
    const char *w = NULL;
    for (size_t i = 0; (w = mp_http_msg_get_nth(&s->resp, "www-authenticate", i, &l)); i++)
        if (l > 5 && !strncasecmp(w, "NTLM ", 5))
            break;
    struct mp_buf v = {0};
    char why[120];
    int rc = mp_hauth_up_authenticate(&s->ua.up, w, w ? l : 0, &v, why, sizeof why);
    if (rc)
        snprintf(s->ua.why, sizeof s->ua.why, "%s", why);
    else if (mp_hu_send(s, &v))
        snprintf(s->ua.why, sizeof s->ua.why, "out of memory"), rc = -1;
    mp_buf_free(&v);
    if (rc)
        return -1;
    s->ua.step = 2;
    return 0;
}

/* Termination: an upstream's WWW-Authenticate (its mutual token) is about
 * the proxy's logon, never relayed; a success answering a request whose
 * Negotiate token completed an exchange carries the proxy's acceptor token
 * for it instead (RFC 4559 5; every such request its own, also on a
 * kept-alive connection; mp_hx_request_finished drops one not sent).
 * 0, or -1 when the head cannot take it. */
int mp_hu_answer_auth(struct hconn *s, int st)
{
    mp_http_msg_del(&s->resp, "www-authenticate");
    if (!s->ua.ha.mutual[0] || st < 200 || st >= 300)
        return 0;
    int rc = mp_http_msg_add(&s->resp, "WWW-Authenticate", s->ua.ha.mutual);
    s->ua.ha.mutual[0] = 0;
    return rc;
}

int mp_hu_mutual_line(struct hconn *s, int st, struct mp_buf *out)
{
    if (!s->h->auth.on || !s->ua.ha.mutual[0] || st < 200 || st >= 300)
        return 0;
    size_t n = strlen(s->ua.ha.mutual);
    int rc = mp_buf_append(out, "WWW-Authenticate: ", 18) ||
             mp_buf_append(out, s->ua.ha.mutual, n) || mp_buf_append(out, "\r\n", 2);
    s->ua.ha.mutual[0] = 0;
    return rc ? -1 : 0;
}

bool mp_hu_busy(const struct hconn *s)
{
    return s->ua.step == 1 || s->ua.step == 2;
}

/* What is written to a leg: the upstream's held requests wait while the
 * proxy's handshake runs. */
struct mp_buf *mp_hu_wbuf(struct hconn *s, struct leg *x)
{
    return !x->client && mp_hu_busy(s) ? &s->ua.out : &x->conn.out;
}

/* ------------------------------------------------------------------ */
/* request parser callbacks (client -> upstream)                       */

void mp_hu_free(struct hup *u)
{
    if (u->krb_job) /* the token comes for nobody */
        u->krb_job->owner = NULL;
    u->krb_job = NULL;
    mp_hauth_conn_free(&u->ha);
    mp_hauth_up_free(&u->up);
    mp_buf_free(&u->www);
    mp_buf_free(&u->out);
    free(u->url);
    u->url = NULL;
}
