/* The security leg of a DCE/RPC association when the proxy terminates
 * authentication (doc/internals/auth.md, kerberos.md).
 *
 * Two pieces of state:
 *  - struct mp_dce_auth, the process's: credentials file, winbind, groups
 *    file, Kerberos credentials, the upstream identity and the KDC/winbind
 *    worker.  Set up once from the configuration (mp_dce_auth_setup).
 *  - struct mp_dce_sec, one security context (MS-RPCE auth_context_id) on one
 *    leg: the acceptor on the client leg, the initiator on the upstream leg.
 *    Either NTLM (auth type 10, or 9 with NTLM inside SPNEGO) or Kerberos
 *    through gss.c (auth type 16, or 9 with Kerberos first).
 *
 * The interface takes tokens (auth_value of a sec_trailer) and PDUs, and
 * returns tokens, PDU offsets and verdicts.  It never calls back into the
 * association or builds PDUs: the transport (src/transport/dcerpc/
 * terminate.c) decides what to answer and how to log a refusal, so another
 * carrier of DCE/RPC PDUs (RPC over HTTP) can use the same code. */
#ifndef MP_AUTH_DCERPC_AUTH_H
#define MP_AUTH_DCERPC_AUTH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/credstore.h"
#include "auth/groups.h"
#include "auth/kdc_worker.h"
#include "auth/ntlmssp.h"
#include "core/buf.h"
#include "core/config.h"
#include "dcerpc/pdu.h"
#include "event/loop.h"

struct mp_gss_ctx;
struct mp_gss_cred;
struct mp_wb_logon;

/* mp_dce_sec_accept_next: the NTLM response must go to winbind first
 * (sec->wb_pending holds the logon to queue on the worker). */
#define MP_DCE_SEC_PENDING 2

enum mp_dce_up_mode { MP_UP_NTLM, MP_UP_KRB, MP_UP_S4U };

/* One security context on one leg. */
struct mp_dce_sec {
    uint8_t type, level;
    uint32_t ctx_id;
    bool header_sign;
    bool acc_init, ini_init, sess_init;
    bool done;          /* client leg: established and its identity checked */
    bool spnego_ntlm;   /* auth type 9 carrying NTLM: tokens in NegTokenResp */
    bool ntlm_switched; /* SPNEGO: Kerberos was first, the proxy asked for NTLM */
    uint8_t *mech_list; /* SPNEGO/NTLM: the client's MechTypeList, for mechListMIC */
    size_t mech_list_len;
    struct mp_ntlm_acceptor acc;
    struct mp_ntlm_initiator ini;
    struct mp_ntlm_session sess;
    struct mp_gss_ctx *gss;   /* Kerberos context, when the leg uses Kerberos */
    struct mp_gss_cred *cred; /* owned: the credential gss initiates with (S4U) */
    size_t vlen;              /* verifier length for a full fragment (room in emit) */
    char user[160];           /* DOMAIN\user or user@REALM, for logs and policy */
    char who[160];            /* what the logs say */
    /* mapiproxy:ntlm backend = winbind: the domain's answer, once back */
    bool wb_done;
    int wb_rc;
    uint8_t wb_key[16]; /* NTLMv2 session base key from the DC */
    char *wb_groups;    /* "DOMAIN\group\n" lines */
    char wb_why[400];
    char wb_account[256], wb_domain[256];
    struct mp_wb_logon *wb_pending; /* prepared by accept_next, queued by its caller */
};

/* The process's authentication state (terminated mode). */
struct mp_dce_auth {
    const struct mp_config *cfg;
    bool terminate; /* set up: clients authenticate to the proxy */
    struct mp_credstore creds;
    struct mp_ntlm_acceptor_cfg acc_cfg;
    char up_password[256];
    uint8_t up_level;
    char fqdn[256];
    /* Kerberos: the proxy's acceptor (or service credential, for S4U) and,
     * for specified credentials over Kerberos, its initiator credential */
    struct mp_gss_cred *acc_cred, *up_cred;
    /* S4U: the worker's own service credential and the ones it replaced
     * (freed at exit); the worker's once it runs */
    struct mp_gss_cred *svc_cred;
    uint64_t svc_born_ms;
    struct mp_gss_cred *retired[8];
    size_t n_retired;
    struct mp_kdc_worker kdc;
    enum mp_dce_up_mode up_mode;
    char realm_uc[256];       /* NTLM users are impersonated as user@REALM_UC */
    bool ntlm_on;             /* NTLM clients: a credentials file or winbind */
    bool winbind;             /* mapiproxy:ntlm backend = winbind */
    struct mp_groups ugroups; /* mapiproxy:groups file */
};

/* Sets up terminated authentication from cfg; the worker's answers go to
 * done(arg, job) on the loop thread.  0, or -1 after an error log line (then
 * call mp_dce_auth_free). */
int mp_dce_auth_setup(struct mp_dce_auth *au, const struct mp_config *cfg, struct mp_loop *loop,
                      mp_kdc_done_fn done, void *arg);
/* Stops the worker and frees everything (safe on a zeroed struct). */
void mp_dce_auth_free(struct mp_dce_auth *au);

/* The client's first token (bind): NTLM NEGOTIATE, SPNEGO NegTokenInit
 * (Kerberos or NTLM first) or a Kerberos AP-REQ; sec has type, level and
 * ctx_id set.  The reply token is appended to out.  MP_GSS_CONTINUE,
 * MP_GSS_DONE, or MP_GSS_FAILED with why set. */
int mp_dce_sec_accept_first(const struct mp_dce_auth *au, struct mp_dce_sec *sec,
                            const struct mp_auth *auth, struct mp_buf *out, char *why, size_t wl);
/* The client's next token (AUTH3 or alter_context; for a one-leg Kerberos
 * context, an empty one): on MP_GSS_DONE the client's name is in sec->user
 * and sec->who and mapiproxy:allowed users was checked.  can_reply: the
 * answer can carry a token (alter_context_resp, not AUTH3).
 * MP_DCE_SEC_PENDING: winbind must check the response first; queue
 * sec->wb_pending on the worker and call again with the same token once
 * mp_dce_sec_winbind_result() has run. */
int mp_dce_sec_accept_next(const struct mp_dce_auth *au, struct mp_dce_sec *sec,
                           const struct mp_auth *auth, bool can_reply, struct mp_buf *out,
                           char *why, size_t wl);
/* Keeps winbind's answer l (its groups are taken over) for the next
 * mp_dce_sec_accept_next(). */
void mp_dce_sec_winbind_result(struct mp_dce_sec *sec, struct mp_wb_logon *l);

/* The upstream leg over NTLM: sec->ini set up for the configured account
 * and its NEGOTIATE in tok.  0, or -1 with why. */
int mp_dce_sec_initiate_ntlm(const struct mp_dce_auth *au, struct mp_dce_sec *sec,
                             struct mp_buf *tok, char *why, size_t wl);
/* The upstream's bind_ack token (NTLM CHALLENGE or Kerberos AP-REP) in,
 * the AUTH3's token out.  0, or -1 with why. */
int mp_dce_sec_initiate_answer(struct mp_dce_sec *sec, const struct mp_auth *auth,
                               struct mp_buf *out, char *why, size_t wl);
/* The whom the worker impersonates for the upstream leg (S4U). */
void mp_dce_sec_s4u_user(const struct mp_dce_auth *au, const struct mp_dce_sec *client, char *out,
                         size_t n);

/* Verifier length of a full fragment on this leg. */
size_t mp_dce_sec_vlen(const struct mp_dce_sec *sec);
/* Pads, appends the sec_trailer and verifier to the fragment at out[start..]
 * and signs or seals it.  0 or -1. */
int mp_dce_sec_protect(struct mp_dce_sec *sec, struct mp_buf *out, size_t start);
/* Verifies or unseals a request/response fragment whose header is hl bytes;
 * *stub, *len: the plaintext stub.  0, or -1 (does not verify: the caller
 * ends the association). */
int mp_dce_sec_unprotect(struct mp_dce_sec *sec, uint8_t *pdu, const struct mp_pdu_hdr *h,
                         size_t hl, const uint8_t **stub, size_t *len);

/* "NTLM", "SPNEGO/NTLM", "Kerberos", "SPNEGO/Kerberos". */
const char *mp_dce_sec_mech(const struct mp_dce_sec *sec);
/* "none", "connect", ... "privacy" for an authentication level. */
const char *mp_dce_level_name(unsigned level);
void mp_dce_sec_free(struct mp_dce_sec *sec);
#endif
