/* The ROP stage: a stage provider (chain.h) that decodes EcDoRpcExt2's /
 * EcDoRpc's ROP buffers for the rop_request / rop_response hooks, applies
 * the modules' drops, answers and edits, re-encodes what goes upstream and
 * what the client gets, and keeps the session's server object tables.
 * builtins.c registers it; the runner reaches it only through the provider
 * table.  See doc/internals/rop.md ("ROPs in the module chain"). */
#ifndef MP_CHAIN_ROPSTAGE_H
#define MP_CHAIN_ROPSTAGE_H
#include "chain/chain.h"

extern const struct mp_stage_provider mp_rop_stage;
/* The object table of the session's MAPI context context_id (numbered
 * from 1 per session, mp_object.context_id), or NULL. */
struct mp_objtab *mp_ropsess_table(struct mp_session *ses, uint32_t context_id);
/* msgevents.c's slots: the call's and the session's message state
 * (freed with mp_msgev_call_free / mp_msgev_session_free); NULL when the
 * call has no ROP state. */
void **mp_ropstage_msgev_call(struct mp_call *m);
void **mp_ropstage_msgev_session(struct mp_session *ses);
/* In the request stage: a ROP of the proxy's own (decoded request v of
 * rop_id, in call memory) goes upstream just before the client's request
 * ROP `before`; its response is not passed to the client.  Buffer 0 of a
 * one-buffer call only.  0 or -1. */
int mp_ropstage_inject(struct mp_call *m, size_t before, uint8_t rop_id, void *v);
/* Request ROP i is not sent upstream: the client gets rsp (a decoded
 * response struct of the ROP's type, in call memory) as its answer.  As
 * mp_call_rop_answer (single ROP buffer calls); 0 or -1.  Used for
 * FastTransfer buffers the proxy already holds (content/fxasm.c). */
int mp_ropstage_answer(struct mp_call *m, size_t i, void *rsp);
/* A handle table slot of the proxy's own for the injected ROPs (added at
 * the table's end going upstream, cut from the response): its index, or
 * -1. */
int mp_ropstage_new_handle(struct mp_call *m);

/* ---- side requests (msgonline.c; doc/internals/module-api.md) ---- */
struct mp_rop_buf;
struct mp_rop_ctx;
/* msgonline.c's slots: the call's and the session's state. */
void **mp_ropstage_online_call(struct mp_call *m);
void **mp_ropstage_online_session(struct mp_session *ses);
/* fxside.c's slot: the call's side GetBuffers. */
void **mp_ropstage_fxside_call(struct mp_call *m);
/* msgnames.c's slot: the proxy's RopGetPropertyIdsFromNames of the call. */
void **mp_ropstage_names_call(struct mp_call *m);
/* In the response step, before anything else: the client's RopOpenMessage
 * that the upstream answered with success in this response (payload 0). */
struct mp_ropstage_open {
    uint8_t logon_id;
    uint64_t fid, mid;
    uint32_t in_handle; /* the server handle it was opened from */
    uint32_t handle;    /* the message's server handle */
    uint32_t context_id;
};
size_t mp_ropstage_opened(struct mp_call *m, struct mp_ropstage_open *out, size_t max);
/* In the response step: the server handle in slot idx of the response's
 * handle table (payload 0), 0xFFFFFFFF if none (msgnames.c). */
uint32_t mp_ropstage_rsp_handle(struct mp_call *m, uint8_t idx);
/* The proxy's own ROP buffer b becomes the call's request (EcDoRpcExt2 /
 * MAPI/HTTP Execute only), sent upstream after this response step; the
 * response goes to cb (chain.h side_cb).  0, or -1 (EcDoRpc, no memory). */
int mp_ropstage_side_request(struct mp_call *m, const struct mp_rop_buf *b,
                             void (*cb)(struct mp_call *m));
/* In cb: the response's payload 0, decoded with ctx (its requests: the
 * side buffer).  0 or -1 (does not decode: logged). */
int mp_ropstage_side_response(struct mp_call *m, const struct mp_rop_ctx *ctx,
                              struct mp_rop_buf *out);
/* fn(m, arg) while the call's ROPs (mp_call_rop*, for the assembler) are
 * req and rsp (the proxy's side buffers) instead of the client's. */
void mp_ropstage_side_view(struct mp_call *m, const struct mp_rop_buf *req,
                           const struct mp_rop_buf *rsp, void (*fn)(struct mp_call *m, void *arg),
                           void *arg);
#endif
