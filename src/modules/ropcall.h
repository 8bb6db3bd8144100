/* ROPs in the module chain: decoding EcDoRpcExt2's / EcDoRpc's ROP buffers
 * for the rop_request / rop_response hooks, the modules' drops, answers and
 * edits, re-encoding what goes upstream and what the client gets, and the
 * session's server object tables.  Called by runtime.c only.  See
 * doc/internals/rop.md ("ROPs in the module chain"). */
#ifndef MP_ROPCALL_H
#define MP_ROPCALL_H
#include <stdbool.h>
#include <stdint.h>

struct mp_call;
struct mp_ropsess;

/* Is this a call whose stub carries ROP buffers (EcDoRpc, EcDoRpcExt2)? */
bool mp_ropcall_applies(const struct mp_call *m);
/* Before the rop_request hooks: decode the request's ROPs (a call that does
 * not decode has none: relayed untouched). */
void mp_ropcall_request(struct mp_call *m);
/* After them: apply drops, answers and edits; release handles.  Returns 0
 * (relay), 1 (every ROP was answered by the proxy: m's decoded response is
 * filled and nothing goes upstream) or -1 (cannot encode: fault). */
int mp_ropcall_request_done(struct mp_call *m);
/* Before the rop_response hooks: decode the response's ROPs, put the
 * proxy's own answers in place, record the objects the ROPs created. */
void mp_ropcall_response(struct mp_call *m);
/* After them: re-encode the response if anything changed.  0 or -1. */
int mp_ropcall_response_done(struct mp_call *m);
/* The request goes upstream again (MP_RELAY_AGAIN): forget the response. */
void mp_ropcall_reset_response(struct mp_call *m);
/* EcDoDisconnect: forget that context's objects. */
void mp_ropcall_disconnect(struct mp_call *m);
void mp_ropcall_free(struct mp_call *m);
void mp_ropsess_free(struct mp_ropsess *s);
/* The object table of the session's MAPI context context_id, or NULL. */
struct mp_session;
struct mp_objtab *mp_ropsess_table(struct mp_session *ses, uint32_t context_id);
#endif
