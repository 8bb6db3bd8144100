/* Test driver for tests/integration/test_krb5_*.py: drives src/auth/gss.c
 * over stdin/stdout, one command per line, binary as hex, "-" for
 * nothing.  Credentials and contexts are numbered in creation order.
 *
 *   ACRED keytab principal             -> OK n          acceptor credential
 *   ICRED ccache client_keytab principal -> OK n        initiator credential
 *   SCRED keytab principal             -> OK n          service credential (S4U)
 *   IMPERSONATE scred user             -> OK n          S4U2Self
 *   FORCLIENT scred ctx                -> OK n deleg|s4u
 *   CREDNAME n                         -> OK name
 *   ACCEPTOR cred authtype [flags]     -> OK n
 *   INITIATOR cred target authtype flags -> OK n
 *   STEP ctx hex                       -> CONTINUE hex | DONE hex | FAIL hex text
 *   PEER ctx                           -> OK name flags(hex) delegated(0/1)
 *   SIGLEN ctx level bodylen           -> OK n
 *   PROTECT ctx hdrsign level req|resp ctxid authtype callid stubhex -> PDU hex
 *   UNPROTECT ctx hdrsign pduhex       -> STUB hex | ERR text
 *   FREECTX n | FREECRED n             -> OK
 *
 * Errors: ERR text.  Keys never leave the process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "dcerpc/pdu.h"

#define MAXN 32
static struct mp_gss_cred *g_cred[MAXN];
static struct mp_gss_ctx *g_ctx[MAXN];
static int n_cred, n_ctx;

static const char *opt(const char *s)
{
    return !s || strcmp(s, "-") == 0 ? NULL : s;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    if (!h || strcmp(h, "-") == 0)
        return 0;
    size_t n = strlen(h) / 2;
    if (n > cap)
        return (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1)
            return (size_t)-1;
        out[i] = (uint8_t)v;
    }
    return n;
}

static void puthex(const char *tag, const uint8_t *p, size_t n, const char *suffix)
{
    printf("%s ", tag);
    if (!n)
        printf("-");
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("%s%s\n", suffix ? " " : "", suffix ? suffix : "");
}

static int add_cred(struct mp_gss_cred *c, const char *err)
{
    if (!c || n_cred >= MAXN) {
        printf("ERR %s\n", c ? "too many" : err);
        mp_gss_cred_free(c);
        return -1;
    }
    g_cred[n_cred] = c;
    return n_cred++;
}

static struct mp_gss_cred *cred_at(const char *s)
{
    if (!opt(s))
        return NULL;
    int i = atoi(s);
    return i >= 0 && i < n_cred ? g_cred[i] : NULL;
}

static struct mp_gss_ctx *ctx_at(const char *s)
{
    int i = s ? atoi(s) : -1;
    return i >= 0 && i < n_ctx ? g_ctx[i] : NULL;
}

static uint8_t g_bin[1 << 17];

static char g_line[1 << 18];

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(g_line, sizeof g_line, stdin)) {
        char *a[12] = {0};
        int na = 0;
        for (char *tok = strtok(g_line, " \t\r\n"); tok && na < 12; tok = strtok(NULL, " \t\r\n"))
            a[na++] = tok;
        if (!na)
            continue;
        char err[MP_GSS_ERRLEN] = "";
        const char *cmd = a[0];
        if (!strcmp(cmd, "ACRED") && na == 3) {
            int n = add_cred(mp_gss_cred_acceptor(opt(a[1]), opt(a[2]), err, sizeof err), err);
            if (n >= 0)
                printf("OK %d\n", n);
        } else if (!strcmp(cmd, "ICRED") && na == 4) {
            int n = add_cred(
                mp_gss_cred_initiator(opt(a[1]), opt(a[2]), opt(a[3]), err, sizeof err), err);
            if (n >= 0)
                printf("OK %d\n", n);
        } else if (!strcmp(cmd, "SCRED") && na == 3) {
            int n = add_cred(mp_gss_cred_service(opt(a[1]), opt(a[2]), err, sizeof err), err);
            if (n >= 0)
                printf("OK %d\n", n);
        } else if (!strcmp(cmd, "IMPERSONATE") && na == 3) {
            int n = add_cred(mp_gss_cred_impersonate(cred_at(a[1]), a[2], err, sizeof err), err);
            if (n >= 0)
                printf("OK %d\n", n);
        } else if (!strcmp(cmd, "FORCLIENT") && na == 3) {
            bool deleg = false;
            int n = add_cred(
                mp_gss_cred_for_client(cred_at(a[1]), ctx_at(a[2]), &deleg, err, sizeof err), err);
            if (n >= 0)
                printf("OK %d %s\n", n, deleg ? "deleg" : "s4u");
        } else if (!strcmp(cmd, "CREDNAME") && na == 2) {
            char name[256];
            if (mp_gss_cred_name(cred_at(a[1]), name, sizeof name))
                printf("ERR no name\n");
            else
                printf("OK %s\n", name);
        } else if (!strcmp(cmd, "ACCEPTOR") && (na == 3 || na == 4)) {
            unsigned fl = na == 4 ? (unsigned)strtoul(a[3], NULL, 0) : 0;
            struct mp_gss_ctx *c =
                n_ctx < MAXN
                    ? mp_gss_acceptor_new(cred_at(a[1]), (uint8_t)atoi(a[2]), fl, err, sizeof err)
                    : NULL;
            if (!c)
                printf("ERR %s\n", err);
            else {
                g_ctx[n_ctx] = c;
                printf("OK %d\n", n_ctx++);
            }
        } else if (!strcmp(cmd, "INITIATOR") && na == 5) {
            struct mp_gss_ctx *c =
                n_ctx < MAXN
                    ? mp_gss_initiator_new(cred_at(a[1]), a[2], (uint8_t)atoi(a[3]),
                                           (unsigned)strtoul(a[4], NULL, 0), err, sizeof err)
                    : NULL;
            if (!c)
                printf("ERR %s\n", err);
            else {
                g_ctx[n_ctx] = c;
                printf("OK %d\n", n_ctx++);
            }
        } else if (!strcmp(cmd, "STEP") && na == 3) {
            struct mp_gss_ctx *c = ctx_at(a[1]);
            size_t n = unhex(a[2], g_bin, sizeof g_bin);
            if (!c || n == (size_t)-1) {
                printf("ERR bad arguments\n");
                continue;
            }
            struct mp_buf out = {0};
            int rc = mp_gss_step(c, n ? g_bin : NULL, n, &out);
            const uint8_t *o = out.data ? out.data + out.off : NULL;
            size_t ol = out.len - out.off;
            if (rc == MP_GSS_DONE)
                puthex("DONE", o, ol, NULL);
            else if (rc == MP_GSS_CONTINUE)
                puthex("CONTINUE", o, ol, NULL);
            else
                puthex("FAIL", o, ol, mp_gss_error(c));
            mp_buf_free(&out);
        } else if (!strcmp(cmd, "PEER") && na == 2) {
            struct mp_gss_ctx *c = ctx_at(a[1]);
            const char *p = mp_gss_peer_name(c);
            if (!p)
                printf("ERR no peer\n");
            else
                printf("OK %s %x %d\n", p, (unsigned)mp_gss_flags(c), mp_gss_has_delegated(c));
        } else if (!strcmp(cmd, "SIGLEN") && na == 4) {
            size_t n = mp_gss_sig_len(ctx_at(a[1]), (uint8_t)atoi(a[2]), (size_t)atoi(a[3]));
            if (!n)
                printf("ERR %s\n", mp_gss_error(ctx_at(a[1])));
            else
                printf("OK %zu\n", n);
        } else if (!strcmp(cmd, "PROTECT") && na == 9) {
            struct mp_gss_ctx *c = ctx_at(a[1]);
            bool hs = atoi(a[2]) != 0;
            uint8_t level = (uint8_t)atoi(a[3]);
            bool req = !strcmp(a[4], "req");
            uint32_t ctxid = (uint32_t)strtoul(a[5], NULL, 0);
            uint8_t at = (uint8_t)atoi(a[6]);
            uint32_t call_id = (uint32_t)strtoul(a[7], NULL, 0);
            size_t n = unhex(a[8], g_bin, sizeof g_bin);
            if (!c || n == (size_t)-1) {
                printf("ERR bad arguments\n");
                continue;
            }
            struct mp_buf b = {0};
            uint8_t flags = MP_PFC_FIRST | MP_PFC_LAST; /* header signing is negotiated at bind */
            int rc = req ? mp_build_request(&b, flags, call_id, 0, 1, NULL, g_bin, n, (uint32_t)n)
                         : mp_build_response(&b, flags, call_id, 0, g_bin, n, (uint32_t)n);
            if (rc || mp_gss_add_verifier(c, &b, 0, at, level, ctxid) ||
                mp_gss_protect(c, b.data, b.len, hs))
                printf("ERR %s\n", mp_gss_error(c));
            else
                puthex("PDU", b.data, b.len, NULL);
            mp_buf_free(&b);
        } else if (!strcmp(cmd, "UNPROTECT") && na == 4) {
            struct mp_gss_ctx *c = ctx_at(a[1]);
            size_t n = unhex(a[3], g_bin, sizeof g_bin), so = 0, sl = 0;
            if (!c || n == (size_t)-1) {
                printf("ERR bad arguments\n");
                continue;
            }
            if (mp_gss_unprotect(c, g_bin, n, atoi(a[2]) != 0, &so, &sl))
                printf("ERR %s\n", mp_gss_error(c));
            else
                puthex("STUB", g_bin + so, sl, NULL);
        } else if (!strcmp(cmd, "FREECTX") && na == 2) {
            int i = atoi(a[1]);
            if (i >= 0 && i < n_ctx) {
                mp_gss_ctx_free(g_ctx[i]);
                g_ctx[i] = NULL;
            }
            printf("OK\n");
        } else if (!strcmp(cmd, "FREECRED") && na == 2) {
            int i = atoi(a[1]);
            if (i >= 0 && i < n_cred) {
                mp_gss_cred_free(g_cred[i]);
                g_cred[i] = NULL;
            }
            printf("OK\n");
        } else {
            printf("ERR unknown command %s\n", cmd);
        }
    }
    for (int i = 0; i < n_ctx; i++)
        mp_gss_ctx_free(g_ctx[i]);
    for (int i = 0; i < n_cred; i++)
        mp_gss_cred_free(g_cred[i]);
    return 0;
}
