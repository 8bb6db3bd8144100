/* libFuzzer target: NTLMSSP (src/auth).  Every input goes through every
 * parser (NEGOTIATE, CHALLENGE, AUTHENTICATE, AV pairs), through the
 * acceptor as an AUTHENTICATE -- against the fixed MS-NLMP 4.2.4 challenge
 * with a known user, so inputs that verify reach key exchange, the MIC and
 * the session keys -- and through the state machine as a NEGOTIATE, through
 * the initiator as a CHALLENGE, and through DCE/RPC unprotect/protect as a
 * PDU.  Seeds in tests/fuzz/corpus/ntlmssp come from Impacket, the spec and
 * our initiator. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dcerpc_sign.h"
#include "auth/ntlmssp.h"
#include "core/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* MS-NLMP 4.2.4.3 CHALLENGE: server challenge 0123456789abcdef. */
static const uint8_t chal424[0x68] = {
    0x4e, 0x54, 0x4c, 0x4d, 0x53, 0x53, 0x50, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0c,
    0x00, 0x38, 0x00, 0x00, 0x00, 0x33, 0x82, 0x8a, 0xe2, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
    0xcd, 0xef, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x24, 0x00, 0x44,
    0x00, 0x00, 0x00, 0x06, 0x00, 0x70, 0x17, 0x00, 0x00, 0x00, 0x0f, 0x53, 0x00, 0x65, 0x00,
    0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x02, 0x00, 0x0c, 0x00, 0x44, 0x00, 0x6f,
    0x00, 0x6d, 0x00, 0x61, 0x00, 0x69, 0x00, 0x6e, 0x00, 0x01, 0x00, 0x0c, 0x00, 0x53, 0x00,
    0x65, 0x00, 0x72, 0x00, 0x76, 0x00, 0x65, 0x00, 0x72, 0x00, 0x00, 0x00, 0x00, 0x00};

static int lookup(void *arg, const char *user, const char *domain, uint8_t nt_hash[16])
{
    (void)arg;
    (void)domain;
    if (strcmp(user, "User") != 0)
        return -1;
    return mp_ntlm_ntowfv1("Password", nt_hash);
}

static const struct mp_ntlm_acceptor_cfg cfg = {
    .nb_computer = "SERVER", .nb_domain = "DOMAIN", .dns_domain = "example.com", .lookup = lookup};

static void exercise_session(uint32_t flags, const uint8_t key[16], const uint8_t *data,
                             size_t size)
{
    struct mp_ntlm_session s;
    if (mp_ntlm_session_init(&s, flags, key, false))
        return;
    uint8_t *copy = malloc(size ? size : 1);
    if (copy) {
        memcpy(copy, data, size);
        (void)mp_dcerpc_ntlm_unprotect(&s.recv, copy, size, true, NULL, NULL);
        memcpy(copy, data, size);
        (void)mp_dcerpc_ntlm_unprotect(&s.recv, copy, size, false, NULL, NULL);
        memcpy(copy, data, size);
        (void)mp_dcerpc_ntlm_protect(&s.send, copy, size, false);
        free(copy);
    }
    mp_ntlm_session_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mp_buf neg;
    static int ready;
    if (!ready) { /* our initiator's NEGOTIATE is deterministic: the MIC seeds use it */
        struct mp_ntlm_initiator c;
        if (mp_ntlm_initiator_init(&c, "User", "Domain", "Password", NULL, NULL, NULL, 0) ||
            mp_ntlm_initiator_negotiate(&c, &neg))
            abort();
        mp_ntlm_initiator_free(&c);
        ready = 1;
    }

    struct mp_ntlm_negotiate n;
    struct mp_ntlm_challenge ch;
    struct mp_ntlm_authenticate au;
    struct mp_ntlm_av_info av;
    struct mp_ntlm_field ti;
    (void)mp_ntlmssp_msg_type(data, size);
    (void)mp_ntlmssp_parse_negotiate(data, size, &n);
    if (mp_ntlmssp_parse_challenge(data, size, &ch) == 0)
        (void)mp_ntlm_av_parse(ch.target_info.p, ch.target_info.len, &av);
    if (mp_ntlmssp_parse_authenticate(data, size, &au) == 0 &&
        mp_ntlmv2_response_av(au.nt.p, au.nt.len, &ti) == 0)
        (void)mp_ntlm_av_parse(ti.p, ti.len, &av);
    (void)mp_ntlm_av_parse(data, size, &av);

    /* acceptor: fixed challenge, with and without the MIC required */
    struct mp_ntlm_result res;
    if (mp_ntlm_verify_authenticate(&cfg, chal424 + 24, neg.data, neg.len, chal424, sizeof(chal424),
                                    data, size, &res) == MP_NTLM_OK)
        exercise_session(res.flags, res.exported_key, data, size);
    struct mp_ntlm_acceptor_cfg strict = cfg;
    strict.require_mic = true;
    (void)mp_ntlm_verify_authenticate(&strict, chal424 + 24, neg.data, neg.len, chal424,
                                      sizeof(chal424), data, size, &res);

    /* acceptor state machine: input as NEGOTIATE, then as AUTHENTICATE */
    struct mp_ntlm_acceptor a;
    struct mp_buf out = {0};
    mp_ntlm_acceptor_init(&a, &cfg);
    if (mp_ntlm_acceptor_negotiate(&a, data, size, &out) == MP_NTLM_OK)
        (void)mp_ntlm_acceptor_authenticate(&a, data, size, &res);
    mp_ntlm_acceptor_free(&a);
    mp_buf_free(&out);

    /* initiator: input as CHALLENGE */
    struct mp_ntlm_initiator c;
    if (mp_ntlm_initiator_init(&c, "User", "Domain", "Password", NULL, "WS", "host/x", 0) == 0) {
        if (mp_ntlm_initiator_negotiate(&c, &out) == 0 &&
            mp_ntlm_initiator_authenticate(&c, data, size, &out) == 0)
            exercise_session(c.flags, c.exported_key, data, size);
        mp_ntlm_initiator_free(&c);
    }
    mp_buf_free(&out);

    /* DCE/RPC: input as a PDU under fixed keys, ESS and not */
    static const uint8_t key[16] = {0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55,
                                    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55};
    exercise_session(0xe28a8233u, key, data, size);
    exercise_session(MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL, key, data, size);
    struct mp_dcerpc_auth_region r;
    (void)mp_dcerpc_auth_locate(data, size, &r);
    return 0;
}
