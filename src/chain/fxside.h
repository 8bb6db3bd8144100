/* Side GetBuffers for held FastTransfer downloads (doc/internals/content.md,
 * "Holding and re-chunking"): when the client's RopFastTransferSourceGetBuffer
 * response would carry fewer bytes than its BufferSize because a message is
 * held until its verdict, the proxy holds that response and asks the
 * upstream for the next buffers itself (side requests on the client's
 * session, mp_ropstage_side_request), feeds them to the session's assembler
 * and its queue, and lets the response step run again: the verdicts, then
 * mp_asm_emit, give the client its buffer. */
#ifndef MP_CHAIN_FXSIDE_H
#define MP_CHAIN_FXSIDE_H

#include <stddef.h>

struct mp_call;
struct mp_rop_req_FastTransferSourceGetBuffer;

/* The ROP stage's response step, after the assembler: sets m->side_cb
 * (side requests) when the client's lone GetBuffer on a held context
 * cannot be filled from the queue and the upstream is not done. */
void mp_fxside_start(struct mp_call *m);
void mp_fxside_call_free(void *state);
/* How many FastTransfer bytes one GetBuffer response of this call may carry:
 * the client's pcbOut (EcDoRpcExt2; MAPI/HTTP Execute's MaxRopOut) less
 * room for the RPC_HEADER_EXT, the ROP's own fields and the handle table;
 * 0 when the call says nothing (the old EcDoRpc). */
size_t mp_fxside_room(struct mp_call *m);
/* The FastTransfer bytes the client's GetBuffer q asks for: its BufferSize,
 * or with the 0xBABE sentinel MaximumBufferSize capped at mp_fxside_room. */
size_t mp_fxside_want(struct mp_call *m, const struct mp_rop_req_FastTransferSourceGetBuffer *q);
#endif
