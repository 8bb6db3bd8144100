/* Test driver for tests/integration/test_ntlm_wire.py: drives mapiproxy's
 * NTLM acceptor/initiator and DCE/RPC sign/seal over stdin/stdout, one
 * command per line, binary as hex.  "-" stands for an empty string.
 *
 *   ACCEPT nb_computer nb_domain require_mic user password  -> READY
 *   NEG hex            -> CHAL hex                  (acceptor)
 *   AUTH hex           -> OK user domain ws flags mic | ERR text
 *   INIT user domain password -> NEG hex            (initiator)
 *   CHAL hex           -> AUTH hex flags
 *   PROTECT hdrsign level req|resp stubhex -> PDU hex
 *   UNPROTECT hdrsign pduhex -> STUB hex | ERR text
 *
 * Keys never leave the process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/dcerpc_sign.h"
#include "auth/ntlmssp.h"
#include "dcerpc/pdu.h"

static char g_user[256], g_pass[256];
static struct mp_ntlm_acceptor_cfg g_cfg;
static struct mp_ntlm_acceptor g_acc;
static struct mp_ntlm_initiator g_ini;
static struct mp_ntlm_session g_sess;
static char g_nbc[64], g_nbd[64];

static int lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    (void)arg;
    (void)domain;
    if (strcasecmp(user, g_user) != 0)
        return -1;
    return mp_ntlm_ntowfv1(g_pass, nt_hash);
}

static const char *dash(const char *s)
{
    return strcmp(s, "-") == 0 ? "" : s;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
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
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("%s\n", suffix ? suffix : "");
}

int main(void)
{
    static char line[1 << 18];
    static uint8_t bin[1 << 17];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (mp_ntlm_crypto_init()) {
        printf("ERR %s\n", mp_ntlm_crypto_error());
        return 1;
    }
    while (fgets(line, sizeof(line), stdin)) {
        char *save = NULL, *cmd = strtok_r(line, " \r\n", &save);
        char *a[6] = {0};
        for (int i = 0; i < 6; i++)
            a[i] = strtok_r(NULL, " \r\n", &save);
        if (!cmd)
            continue;
        struct mp_buf out = {0};
        if (!strcmp(cmd, "ACCEPT") && a[4]) {
            snprintf(g_nbc, sizeof(g_nbc), "%s", dash(a[0]));
            snprintf(g_nbd, sizeof(g_nbd), "%s", dash(a[1]));
            snprintf(g_user, sizeof(g_user), "%s", a[3]);
            snprintf(g_pass, sizeof(g_pass), "%s", a[4]);
            memset(&g_cfg, 0, sizeof(g_cfg));
            g_cfg.nb_computer = g_nbc;
            g_cfg.nb_domain = g_nbd;
            g_cfg.dns_computer = "server.example.com";
            g_cfg.dns_domain = "example.com";
            g_cfg.require_mic = atoi(a[2]) != 0;
            g_cfg.lookup = lookup;
            mp_ntlm_acceptor_free(&g_acc);
            mp_ntlm_acceptor_init(&g_acc, &g_cfg);
            printf("READY\n");
        } else if (!strcmp(cmd, "NEG") && a[0]) {
            size_t n = unhex(a[0], bin, sizeof(bin));
            int r = n == (size_t)-1 ? MP_NTLM_E_MALFORMED
                                    : mp_ntlm_acceptor_negotiate(&g_acc, bin, n, &out);
            if (r)
                printf("ERR %s\n", mp_ntlm_strerror(r));
            else
                puthex("CHAL", out.data, out.len, NULL);
        } else if (!strcmp(cmd, "AUTH") && a[0]) {
            struct mp_ntlm_result res;
            size_t n = unhex(a[0], bin, sizeof(bin));
            int r = n == (size_t)-1 ? MP_NTLM_E_MALFORMED
                                    : mp_ntlm_acceptor_authenticate(&g_acc, bin, n, &res);
            if (r) {
                printf("ERR %s\n", mp_ntlm_strerror(r));
            } else {
                mp_ntlm_session_free(&g_sess);
                if (mp_ntlm_session_init(&g_sess, res.flags, res.exported_key, false))
                    printf("ERR session\n");
                else
                    printf("OK %s %s %s %08x %d\n", res.user[0] ? res.user : "-",
                           res.domain[0] ? res.domain : "-",
                           res.workstation[0] ? res.workstation : "-", res.flags, res.mic_checked);
            }
            mp_ntlm_cleanse(&res, sizeof(res));
        } else if (!strcmp(cmd, "INIT") && a[2]) {
            mp_ntlm_initiator_free(&g_ini);
            if (mp_ntlm_initiator_init(&g_ini, a[0], dash(a[1]), dash(a[2]), NULL, "DRIVER",
                                       "host/server", 0) ||
                mp_ntlm_initiator_negotiate(&g_ini, &out))
                printf("ERR init\n");
            else
                puthex("NEG", out.data, out.len, NULL);
        } else if (!strcmp(cmd, "CHAL") && a[0]) {
            size_t n = unhex(a[0], bin, sizeof(bin));
            char sfx[16];
            if (n == (size_t)-1 || mp_ntlm_initiator_authenticate(&g_ini, bin, n, &out)) {
                printf("ERR challenge\n");
            } else {
                mp_ntlm_session_free(&g_sess);
                if (mp_ntlm_session_init(&g_sess, g_ini.flags, g_ini.exported_key, true)) {
                    printf("ERR session\n");
                } else {
                    snprintf(sfx, sizeof(sfx), " %08x", g_ini.flags);
                    puthex("AUTH", out.data, out.len, sfx);
                }
            }
        } else if (!strcmp(cmd, "PROTECT") && a[3]) {
            size_t n = unhex(a[3], bin, sizeof(bin));
            int hs = atoi(a[0]), level = atoi(a[1]), r = -1;
            if (n != (size_t)-1) {
                if (!strcmp(a[2], "req"))
                    r = mp_build_request(&out, MP_PFC_FIRST | MP_PFC_LAST, 1, 0, 0, NULL, bin, n,
                                         (uint32_t)n);
                else
                    r = mp_build_response(&out, MP_PFC_FIRST | MP_PFC_LAST, 1, 0, bin, n,
                                          (uint32_t)n);
            }
            if (!r)
                r = mp_dcerpc_add_verifier(&out, 0, MP_AUTHN_WINNT, (uint8_t)level, 79231);
            if (!r)
                r = mp_dcerpc_ntlm_protect(&g_sess.send, out.data, out.len, hs != 0);
            if (r)
                printf("ERR protect\n");
            else
                puthex("PDU", out.data, out.len, NULL);
        } else if (!strcmp(cmd, "UNPROTECT") && a[1]) {
            size_t n = unhex(a[1], bin, sizeof(bin)), so = 0, sl = 0;
            if (n == (size_t)-1 ||
                mp_dcerpc_ntlm_unprotect(&g_sess.recv, bin, n, atoi(a[0]) != 0, &so, &sl))
                printf("ERR unprotect\n");
            else
                puthex("STUB", bin + so, sl, NULL);
        } else {
            printf("ERR command\n");
        }
        mp_buf_free(&out);
    }
    mp_ntlm_acceptor_free(&g_acc);
    mp_ntlm_initiator_free(&g_ini);
    mp_ntlm_session_free(&g_sess);
    return 0;
}
