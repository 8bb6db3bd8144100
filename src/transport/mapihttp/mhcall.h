/* MAPI over HTTP requests through the module chain.
 *
 * The HTTP front hands over a complete request body; the body is decoded
 * once, into its RPC twin's structure (src/mapihttp/body.h), which becomes
 * the decoded form of an ordinary struct mp_call (interface exchange_emsmdb /
 * exchange_nsp, the twin's opnum), so every module hook -- raw, decoded and
 * ROP -- works as on the RPC transport.  The NDR stub (the raw form) is made
 * from it only when a raw hook asks for it.  At the edges the body goes out
 * as it came when no module changed it, else it is written (mp_mh_encode)
 * from the call's decoded form -- decoded from the stub if a module set one.
 * See doc/internals/architecture.md, "Call and chain".
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
 * GetAddressBookUrl) and bodies that do not decode are relayed raw. */
#ifndef MP_MAPIHTTP_MHCALL_H
#define MP_MAPIHTTP_MHCALL_H
#include <stdbool.h>
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
/* A side request of the chain (chain.h side_cb) is upstream. */
bool mp_mh_call_side_pending(const struct mp_mh_call *c);
/* The upstream failed a side request (HTTP status, X-ResponseCode, a body
 * that does not decode): logged, the chain's stage gets no response and
 * goes on (stops reading ahead); false when no side request is pending. */
bool mp_mh_call_side_failed(struct mp_mh_call *c, const char *why, uint32_t code);
/* The upstream failed (connection lost, X-ResponseCode != 0 passed through
 * by the front itself): forget the call without any callback. */
void mp_mh_call_detach(struct mp_mh_call *c);
#endif
