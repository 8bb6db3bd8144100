/* Online downloads read by the proxy (mapiproxy:online prefetch): when the
 * client opens a message (RopOpenMessage answered with success) and a
 * module has the message hook, the proxy holds that response, reads the
 * message itself with side requests (its own ROPs on the client's session,
 * mp_ropstage_side_request), feeds them to the session's assembler and
 * delivers the message event before the client sees its RopOpenMessage
 * response; a block or modify verdict then rewrites what the client reads
 * on that message handle.  doc/internals/module-api.md ("Online downloads:
 * read first, answer from the verdict"). */
#ifndef MP_CHAIN_MSGONLINE_H
#define MP_CHAIN_MSGONLINE_H
#include <stdbool.h>

struct mp_call;

/* The ROP stage's response step, right after decoding: 1 when a side
 * request was set (the client's response is held), else 0. */
int mp_msgonline_prefetch(struct mp_call *m);
/* The request step (after the message events): ROPs on a blocked or
 * modified message the proxy answers itself (OpenAttachment of a dropped
 * attachment, streams of a blocked message's other bodies ...). */
void mp_msgonline_request(struct mp_call *m);
/* The response step's end (after the verdicts): the client's reads on
 * those messages rewritten. */
void mp_msgonline_response_done(struct mp_call *m);
void mp_msgonline_call_free(void *state);
void mp_msgonline_session_free(void *state);
/* The worker's cache of decided messages freed (at the worker's exit, on
 * its thread). */
void mp_msgonline_worker_release(void);
#endif
