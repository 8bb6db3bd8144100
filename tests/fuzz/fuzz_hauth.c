/* libFuzzer target: the client side of HTTP authentication termination
 * (src/transport/http/hauth.c) and its base64.
 *
 *   make build/fuzz/fuzz_hauth && build/fuzz/fuzz_hauth tests/fuzz/corpus/hauth
 *
 * The input is split at newlines into Authorization header values handed to
 * mp_hauth_client() one after the other on one connection (so NEGOTIATE
 * then AUTHENTICATE sequences are reached), with NTLM, Basic and Negotiate
 * on (NTLM raw or inside SPNEGO under Negotiate; no keytab, so Kerberos
 * tokens are refused after parsing) and one account.  Each line also goes through mp_b64_decode();
 * what decodes must encode back to the same text, and through
 * mp_hauth_peek_identity() (pass-through's account of a channel).  Checks: no crash, no leak, the
 * verdicts are the three known ones, a PASS names a user. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/ntlm_crypto.h"
#include "transport/http/hauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mp_config cfg;
static struct mp_hauth ha;
static struct mp_cred cred = {.user = "alice", .domain = "LAB"};

static void setup(void)
{
    if (ha.cfg)
        return;
    if (mp_ntlm_crypto_init() || mp_ntlm_ntowfv1("Pw-alice", cred.nt_hash))
        abort();
    cfg.http_basic = true;
    ha.cfg = &cfg;
    ha.on = true;
    ha.neg = true;
    ha.creds.c = &cred;
    ha.creds.n = 1;
    ha.acc_cfg.nb_computer = "PROXY";
    ha.acc_cfg.nb_domain = "LAB";
    ha.acc_cfg.dns_computer = "proxy.lab.example";
    ha.acc_cfg.lookup = mp_credstore_lookup;
    ha.acc_cfg.lookup_arg = &ha.creds;
}

static void check_b64(const char *p, size_t n)
{
    static uint8_t out[70000];
    long k = mp_b64_decode(p, n, out, sizeof out);
    if (k < 0)
        return;
    struct mp_buf b = {0};
    if (mp_b64_encode(out, (size_t)k, &b) || b.len != n || (n && memcmp(b.data, p, n)))
        abort();
    mp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    struct mp_hauth_conn c;
    memset(&c, 0, sizeof c);
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        check_b64(p, n);
        /* pass-through's reading of the same header (NTLM raw or in SPNEGO,
         * Basic, Kerberos recognised without a name) */
        char who[520];
        int k = mp_hauth_peek_identity(n ? p : NULL, n, who, sizeof who);
        if (k < 0 || k > 3 || ((k == 1 || k == 2) && !who[0]) || (k != 1 && k != 2 && who[0]))
            abort();
        struct mp_buf hdrs = {0};
        char why[200];
        enum mp_hauth_verdict v = mp_hauth_client(&ha, &c, n ? p : NULL, n, &hdrs, why, sizeof why);
        if (v != MP_HAUTH_PASS && v != MP_HAUTH_CHALLENGE && v != MP_HAUTH_DENY)
            abort();
        if (v == MP_HAUTH_PASS && !c.user[0])
            abort();
        if (v != MP_HAUTH_PASS && !hdrs.len)
            abort(); /* a 401 always offers something */
        mp_buf_free(&hdrs);
        p += n + 1;
    }
    mp_hauth_conn_free(&c);
    return 0;
}
