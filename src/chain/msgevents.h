/* The message events of the module API (include/mapiproxy/message.h):
 * when a loaded module has the `message` hook, the ROP stage keeps ONE
 * message assembler per session (content/assemble.h) and hands every
 * completed message to the modules with the hook as a struct
 * mp_message_event; their verdicts are applied to the call that completed
 * it.  See doc/internals/module-api.md ("Message events").
 *
 * The ROP stage calls mp_msgev_request / _request_done / _response /
 * _response_done around its module hooks and mp_msgev_call_free /
 * mp_msgev_session_free with its own state.  The FastTransfer code feeds
 * the same assembler (mp_msgev_asm) and reads the verdicts of its events
 * (mp_msgev_verdict, mp_msgev_on_decided). */
#ifndef MP_CHAIN_MSGEVENTS_H
#define MP_CHAIN_MSGEVENTS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain/chain.h"

struct mp_asm;
struct mp_call;
struct mp_modules;
struct mp_session;

/* Does any loaded module have the message hook? */
bool mp_msgev_wanted(const struct mp_modules *ms);
/* Some module with the hook may give verdicts (not MP_MODULE_OBSERVES_ONLY):
 * only then is anything held for them (fx hold, online prefetch). */
bool mp_msgev_verdicts_wanted(const struct mp_modules *ms);
/* The id the session's assembler knows for the named property (guid,
 * name), -1 if none (msgnames.c). */
int mp_msgev_name_id(struct mp_call *call, const uint8_t guid[16], const char *name);
/* The ROP stage's hook for module mod (rop_request / rop_response, with
 * the message events of that side for modules with the message hook);
 * NULL when it has neither. */
mp_hook_fn mp_msgev_rop_hook(const struct mp_module *mod, bool response);
/* Events of the call still to be seen on that side (added to the ROP
 * count, so that the chain runs the hooks). */
size_t mp_msgev_count(struct mp_call *call, bool response);

/* The ROP stage, per call: after decoding the request / the response
 * (feeds the session's assembler), after the hooks of each side (applies
 * the verdicts; 0, or -1 out of memory). */
void mp_msgev_request(struct mp_call *call);
int mp_msgev_request_done(struct mp_call *call);
void mp_msgev_response(struct mp_call *call);
int mp_msgev_response_done(struct mp_call *call);
/* The stage's slots for the call's and the session's message state. */
void mp_msgev_call_free(void *state);
void mp_msgev_session_free(void *state);

/* FastTransfer: the session's assembler for the call (created when a
 * module has the hook; NULL otherwise).  Messages ended with mp_asm_end
 * while `call` runs its ROP stage become events of that call (downloads
 * seen in the response hooks, uploads in the request hooks).  Call
 * mp_msgev_asm_end(call) when done feeding. */
struct mp_asm *mp_msgev_asm(struct mp_call *call, bool response);
void mp_msgev_asm_end(struct mp_call *call);

/* What the modules decided about an event. */
struct mp_msgev_set {
    uint16_t id;      /* tagged; named: the id the session mapped it to */
    bool named;       /* (guid, name) */
    uint8_t guid[16]; /* wire order */
    char *name;       /* UTF-8 */
    char *value;      /* UTF-8; binary: len bytes */
    bool binary;      /* PT_BINARY (mp_message_set_binary), tagged only */
    size_t len;
};
struct mp_msgev_verdict {
    bool blocked;
    char reason[256];
    char by[64];  /* the module that blocked */
    char *prefix; /* subject prefixes, in the order set; NULL none */
    struct mp_msgev_set *sets;
    size_t nsets;
    struct mp_msgev_att {
        size_t index; /* in mp_message_attachment order */
        uint32_t num; /* its PidTagAttachNumber */
        char *notice; /* NULL: removed */
    } * atts;
    size_t natts;
};
const struct mp_msgev_verdict *mp_msgev_verdict(const struct mp_message_event *ev);
/* The last event made while `call` ran (FastTransfer: right after
 * mp_asm_end), NULL if none. */
struct mp_message_event *mp_msgev_last(struct mp_call *call);
/* What verdicts this event can take (default: online uploads completed
 * before relay can be blocked and modified; others neither). */
void mp_msgev_set_caps(struct mp_message_event *ev, bool can_block, bool can_modify);
/* cb(ev, verdict, arg) once every module has seen ev (in the call's
 * request_done / response_done step), before the verdicts are applied. */
void mp_msgev_on_decided(struct mp_message_event *ev,
                         void (*cb)(struct mp_message_event *ev, const struct mp_msgev_verdict *v,
                                    void *arg),
                         void *arg);

/* msgonline.c: the proxy's own read of a message (side requests, while
 * mp_ropstage_side_view shows them as the call's ROPs) into the session's
 * assembler.  The message it completes is an event of the call (online,
 * download, completed by "RopOpenMessage", can block and modify; no
 * refusal of later opens); the client's own read of it later is none.
 * cut: the read stopped short (size limit, error): nothing delivered. */
void mp_msgev_prefetch_rops(struct mp_call *call, bool cut);

/* msginject.c: an online upload's modify verdicts as ROPs injected before
 * the completing ROP of the call's request; 0, or -1 (out of memory). */
struct mp_message;
int mp_msgev_apply_edits(struct mp_call *call, int rop_index, const struct mp_message *msg,
                         const struct mp_msgev_verdict *v);
bool mp_msgev_edits_supported(void);

/* msgfx.c: a blocked ICS download message, whole in the GetBuffer response
 * of request ROP req_index (TransferBuffer bytes off .. off+len, its change
 * header the first hdr_len), replaced there by a notice of the same
 * length.  0 or -1 (not found, or the notice does not fit). */
int mp_msgfx_block_download(struct mp_call *call, int req_index, uint32_t off, uint32_t len,
                            uint32_t hdr_len, const char *reason);
/* The notice's bytes after the change header (IncrSyncMessage and a
 * property list), exactly n long, into e (reset first); 0 or -1 when n is
 * too small for even "[Blocked]" (about 40 bytes). */
struct mp_fx_enc;
int mp_msgfx_notice(struct mp_fx_enc *e, size_t n, const char *reason);
/* msgfx.c: a held FastTransfer download message (span->held) re-encoded
 * in its context's queue with the verdict (block: a notice after its
 * change header; prefix, sets, attachments).  0 (also: nothing to do) or
 * -1 (the bytes are gone or do not decode: relayed unchanged). */
struct mp_fx_span;
/* A named property id (0x8000 and up) that neither msg's properties nor
 * the sets so far use: for names the session never mapped, set in a
 * stream whose namedPropInfo names them; -1 if none. */
int mp_msgfx_free_named_id(const struct mp_message *msg, const struct mp_msgev_set *sets,
                           size_t nsets);
int mp_msgfx_apply_held(struct mp_asm *a, const struct mp_fx_span *sp,
                        const struct mp_msgev_verdict *v);
#endif
