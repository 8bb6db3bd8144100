/* MAPI over HTTP requests through the module chain.
 *
 * The HTTP front hands over a complete request body; the body is decoded into
 * its RPC twin (src/mapihttp/body.h) and becomes an ordinary struct mp_call
 * (interface exchange_emsmdb / exchange_nsp, the twin's opnum) whose stubs
 * are the NDR encoding of the twin, so every module hook — raw, decoded and
 * ROP — works as on the RPC transport.  At the edges the NDR stubs are turned
 * back into MAPI/HTTP bodies: the original bytes when no module changed the
 * stub, mp_mh_encode otherwise.
 *
 *   front: request body complete
 *     mp_mh_call_start() -> 0, *out NULL: no module wants it; relay raw
 *                        -> 0, *out: the chain runs; then exactly one of
 *        host->relay(owner, body)    send this request body upstream, then
 *                                    call mp_mh_call_response() with the
 *                                    response body (may repeat: relay again)
 *        host->answer(owner, body)   send the client this response body
 *        host->fail(owner, code)     answer the client with X-ResponseCode code
 *                        -> -1: malformed body; answer X-ResponseCode *rc
 *   front: connection gone -> mp_mh_call_detach() (no callback after it)
 *
 * Request types without a twin (NotificationWait, PING, GetMailboxUrl,
 * GetAddressBookUrl) and bodies the twin cannot represent are relayed raw. */
#ifndef MP_MAPIHTTP_MHCALL_H
#define MP_MAPIHTTP_MHCALL_H
#include <stddef.h>
#include <stdint.h>

#include "transport/mapihttp/body.h"

struct mp_modules;
struct mp_session;

struct mp_mh_call_host {
    void (*relay)(void *owner, const uint8_t *body, size_t len);
    void (*answer)(void *owner, const uint8_t *body, size_t len);
    void (*fail)(void *owner, uint32_t response_code);
};

struct mp_mh_call;

/* user: who logged on to the proxy for this request (the proxy then logs on
 * upstream as its own account), NULL when the client's own logon goes
 * upstream.  With a fail-closed chain (mailbox authorization) a request
 * that cannot be handed to the modules is refused (-1, *rc set), never
 * relayed raw. */
int mp_mh_call_start(struct mp_modules *ms, struct mp_session *s, const char *peer,
                     const char *user, enum mp_mh_kind k, const uint8_t *body, size_t len,
                     const struct mp_mh_call_host *host, void *owner, struct mp_mh_call **out,
                     uint32_t *rc);
/* The upstream's response body (X-ResponseCode 0) for the last relay. */
void mp_mh_call_response(struct mp_mh_call *c, const uint8_t *body, size_t len);
/* The upstream failed (connection lost, X-ResponseCode != 0 passed through
 * by the front itself): forget the call without any callback. */
void mp_mh_call_detach(struct mp_mh_call *c);
#endif
