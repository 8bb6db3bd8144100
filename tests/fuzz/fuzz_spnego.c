/* libFuzzer target: SPNEGO (src/auth/spnego.c) and the DCE/RPC auth
 * trailer locator of src/auth/gss.c.  Every input is parsed as a
 * NegTokenInit and as a NegTokenResp; what parses is rebuilt from its parts
 * and must parse back to the same parts.  The input is also located as a
 * DCE/RPC PDU with a Kerberos auth value of any length.  Seeds in
 * tests/fuzz/corpus/spnego: Impacket's SPNEGO tokens (NTLM and Kerberos
 * NegTokenInit, NegTokenResp), and the tokens of a real DCE-style Kerberos
 * exchange through our SPNEGO layer against MIT's KDC. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "auth/spnego.h"
#include "core/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_init(const uint8_t *data, size_t size)
{
    struct mp_spnego_init a, b;
    if (mp_spnego_parse_init(data, size, &a))
        return;
    if (a.n_mechs == 0 || a.n_mechs > MP_SPNEGO_MAX_MECHS)
        abort();
    for (size_t i = 0; i < a.n_mechs; i++)
        if (a.mechs[i].p < data || a.mechs[i].p + a.mechs[i].len > data + size)
            abort();
    if (a.mech_token && (a.mech_token < data || a.mech_token + a.mech_token_len > data + size))
        abort();
    (void)mp_spnego_mech_kind(a.mechs[0].p, a.mechs[0].len);
    struct mp_buf out = {0};
    if (mp_spnego_build_init(&out, a.mechs, a.n_mechs, a.mech_token, a.mech_token_len) == 0) {
        if (mp_spnego_parse_init(out.data, out.len, &b))
            abort();
        if (b.n_mechs != a.n_mechs || b.mech_token_len != a.mech_token_len ||
            (a.mech_token && memcmp(a.mech_token, b.mech_token, a.mech_token_len)))
            abort();
        for (size_t i = 0; i < a.n_mechs; i++)
            if (a.mechs[i].len != b.mechs[i].len ||
                memcmp(a.mechs[i].p, b.mechs[i].p, a.mechs[i].len))
                abort();
    }
    mp_buf_free(&out);
}

static void check_resp(const uint8_t *data, size_t size)
{
    struct mp_spnego_resp a, b;
    if (mp_spnego_parse_resp(data, size, &a))
        return;
    if (a.neg_state < -1 || a.neg_state > 3)
        abort();
    struct mp_buf out = {0};
    if (mp_spnego_build_resp(&out, a.neg_state, a.mech, a.mech_len, a.token, a.token_len, a.mic,
                             a.mic_len) == 0) {
        if (mp_spnego_parse_resp(out.data, out.len, &b))
            abort();
        if (b.neg_state != a.neg_state || b.token_len != a.token_len || b.mic_len != a.mic_len ||
            b.mech_len != a.mech_len || (!a.token) != (!b.token) || (!a.mech) != (!b.mech) ||
            (a.token && memcmp(a.token, b.token, a.token_len)) ||
            (a.mech && memcmp(a.mech, b.mech, a.mech_len)))
            abort();
    }
    mp_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)mp_spnego_token_kind(data, size);
    check_init(data, size);
    check_resp(data, size);
    /* The same bytes as a PDU (the locator is pure arithmetic on them). */
    struct mp_dcerpc_auth_region r;
    if (mp_gss_auth_locate(data, size, &r) == 0) {
        if (r.verifier_off > size || r.trailer_off + 8 != r.verifier_off ||
            r.body_off + r.body_len != r.trailer_off || r.stub_len > r.body_len)
            abort();
    }
    return 0;
}
