/* Message assembly: whole messages out of a session's traffic, per
 * direction (doc/internals/content.md).
 *
 * Online mode: mp_asm_rops() takes each EMSMDB call in the rop_response
 * stage (both the request's and the response's ROPs are decoded then) and
 * follows message, attachment and stream objects by their server handles:
 *   upload   (client -> server): RopCreateMessage, RopSetProperties,
 *            RopOpenStream + RopWriteStream, RopModifyRecipients,
 *            RopCreateAttachment, RopOpenEmbeddedMessage, ...; complete at
 *            RopSaveChangesMessage of the top message (again at
 *            RopSubmitMessage only if it changed since);
 *   download (server -> client): RopOpenMessage, RopGetPropertiesSpecific /
 *            All, RopOpenStream + RopReadStream, RopReadRecipients,
 *            RopOpenAttachment, RopOpenEmbeddedMessage; complete when the
 *            top message object is released (RopRelease, or the session's
 *            end) after at least one property or stream was read from it or
 *            its attachments ("read").
 *
 * FastTransfer (cached mode) feeds the same model: mp_asm_begin() for a
 * message whose content starts, the mp_msg_* / mp_props_* setters of
 * message.h while its content streams, then mp_asm_end() when its last byte
 * has passed (partial = messageChangePartial).  Values counted with
 * mp_asm_count() obey the same size limits. */
#ifndef MP_CONTENT_ASSEMBLE_H
#define MP_CONTENT_ASSEMBLE_H
#include <stdbool.h>
#include <stdint.h>

#include "content/message.h"

struct mp_call;

enum mp_msg_dir { MP_MSG_UPLOAD, MP_MSG_DOWNLOAD };
enum mp_msg_mode { MP_MSG_ONLINE, MP_MSG_ICS_DOWNLOAD, MP_MSG_ICS_UPLOAD, MP_MSG_FX_COPY };
const char *mp_msg_dir_name(enum mp_msg_dir d);   /* "upload", "download" */
const char *mp_msg_mode_name(enum mp_msg_mode m); /* "online", "ics-download", ... */

/* Where an fx download message lies (mp_asm_end_fx). */
struct mp_fx_span {
    bool in_buffer;
    uint32_t off, len, hdr_len;
    /* held (fxhold.h): its bytes wait in the context's queue, upstream
     * stream offsets up_start .. up_end (an IncrSyncProgressPerMsg just
     * before a change included); kind: enum mp_fxrw_kind */
    bool held;
    uint8_t kind;
    uint32_t context_id, handle;
    uint64_t up_start, up_end;
};

struct mp_msg_event {
    enum mp_msg_dir dir;
    enum mp_msg_mode mode;
    uint64_t folder_id, message_id; /* 0 when unknown (an upload before its first save) */
    const char *completed_by;       /* "RopSaveChangesMessage", "RopRelease", ... */
    bool partial;                   /* messageChangePartial: a partial change only */
    struct mp_message *msg;         /* valid during the callback (mp_msg_hold to keep it) */
    /* Online mode: the request ROP (index in the call) that completed the
     * message, -1 when none (a release, the session's end, FastTransfer);
     * at_request: it completed in mp_asm_request, before that ROP went
     * upstream (an upload can still be stopped). */
    int rop_index;
    bool at_request;
    /* FastTransfer (cached mode): the message came in a stream; rop_index is
     * the GetBuffer / PutBuffer that carried its last byte, and an upload's
     * block answers that PutBuffer (its edits cannot be ROPs). */
    bool fx;
    /* fx downloads: the message's bytes lie whole in the buffer that
     * completed it (that ROP's TransferBuffer, from fx_off on, fx_len
     * bytes; its messageChangeHeader is the first fx_hdr_len of them). */
    bool fx_in_buffer;
    uint32_t fx_off, fx_len, fx_hdr_len;
    struct mp_fx_span fx_span; /* the whole span (held messages) */
};

struct mp_asm_ops {
    void (*done)(void *arg, const struct mp_msg_event *ev);
    /* warnings: a message passed max_message, a temporary file failed */
    void (*log)(void *arg, const char *msg);
    void *arg;
};

struct mp_asm;
struct mp_asm *mp_asm_new(const struct mp_content_limits *limits, const struct mp_asm_ops *ops);
/* Delivers downloads that were read and are still open, drops unsaved
 * uploads, frees everything. */
void mp_asm_free(struct mp_asm *a);
/* One EMSMDB call, in the rop_response hook. */
void mp_asm_rops(struct mp_asm *a, struct mp_call *call);
/* The same call's request, before it goes upstream (rop_request): the
 * upload content its ROPs carry for objects of earlier calls (properties,
 * stream bytes, recipients) and the uploads it completes
 * (RopSaveChangesMessage / RopSubmitMessage of a top message created in an
 * earlier call), so that their events come before the completing ROP is
 * relayed.  mp_asm_rops then skips what was applied here. */
void mp_asm_request(struct mp_asm *a, struct mp_call *call);

/* FastTransfer entry points (see above). */
struct mp_message *mp_asm_begin(struct mp_asm *a);
/* Counts n content bytes of m (embedded ones count for their top message);
 * false when the message passed the limit (it is then dropped at end). */
bool mp_asm_count(struct mp_asm *a, struct mp_message *m, uint64_t n);
void mp_asm_end(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir, enum mp_msg_mode mode,
                const char *completed_by, bool partial);
const struct mp_content_limits *mp_asm_limits(const struct mp_asm *a);
/* mp_asm_end for a message out of a FastTransfer stream: rop_index is the
 * ROP whose bytes completed it, at_request as in struct mp_msg_event. */
void mp_asm_end_fx(struct mp_asm *a, struct mp_message *m, enum mp_msg_dir dir,
                   enum mp_msg_mode mode, const char *completed_by, bool partial, int rop_index,
                   bool at_request, const struct mp_fx_span *span);
/* A warning through ops.log. */
void mp_asm_warn(struct mp_asm *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* FastTransfer contexts of a session (fxasm.c), driven by mp_asm_rops:
 * the ROPs that create a FastTransfer context (RopSynchronizationConfigure,
 * RopFastTransferSourceCopyTo / CopyMessages / CopyFolder / CopyProperties,
 * RopFastTransferDestinationConfigure, RopSynchronizationOpenCollector) get
 * a decoder; RopFastTransferSourceGetBuffer responses (mp_asm_rops) and
 * RopFastTransferDestinationPutBuffer(Extended) requests (mp_asm_request)
 * are fed to it, in order; messages go out through mp_asm_begin / mp_asm_end. */
struct mp_fxctx;
struct mp_object;
void mp_asm_fx_rop(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call, size_t i,
                   const void *req, const void *rsp);
void mp_asm_fx_request(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call, size_t ri);
void mp_asm_fx_release(struct mp_asm *a, struct mp_fxctx **list, const struct mp_object *o);
void mp_asm_fx_free(struct mp_asm *a, struct mp_fxctx **list);
/* Held download contexts (limits.fx_hold; fxhold.h): after the call's
 * verdicts, its GetBuffer responses get the released bytes in the
 * client's buffer sizes (mp_asm_emit); a held message's bytes
 * (mp_asm_held: NULL when gone) and their replacement. */
void mp_asm_fx_emit(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call);
const uint8_t *mp_asm_fx_held(struct mp_fxctx **list, const struct mp_fx_span *sp, size_t *len);
int mp_asm_fx_replace(struct mp_fxctx **list, const struct mp_fx_span *sp, const uint8_t *p,
                      size_t n);
void mp_asm_emit(struct mp_asm *a, struct mp_call *call);
/* For the proxy's side GetBuffers (src/chain/fxside.c): the held queue of
 * the download context of object o (-1: none, not held, or its stream
 * failed), and marking the client's GetBuffer response (call, request
 * index ri) as fed already, so that the response step that runs again
 * after the side requests does not feed it twice. */
struct mp_fx_qstate {
    size_t releasable, len;
    bool open, up_done;
};
int mp_asm_fx_queue_state(struct mp_fxctx **list, const struct mp_object *o,
                          struct mp_fx_qstate *st);
void mp_asm_fx_fed(struct mp_fxctx **list, const struct mp_object *o, const struct mp_call *call,
                   int ri);
int mp_asm_queue_state(struct mp_asm *a, const struct mp_object *o, struct mp_fx_qstate *st);
void mp_asm_fed(struct mp_asm *a, const struct mp_object *o, const struct mp_call *call, int ri);
const uint8_t *mp_asm_held(struct mp_asm *a, const struct mp_fx_span *sp, size_t *len);
int mp_asm_replace(struct mp_asm *a, const struct mp_fx_span *sp, const uint8_t *p, size_t n);
/* Held uploads (FastTransferDestinationConfigure contexts; "Holding
 * uploads" in doc/internals/content.md): the client's PutBuffer bytes wait
 * in the context's queue while a message is open; after the request's
 * verdicts each PutBuffer carries the released bytes upstream (at most
 * 0x7000 or the client's size), or is answered by the proxy when none are
 * released (mp_asm_up_emit).  A blocked held message is cut from the queue
 * (mp_asm_up_block; its PutBuffer is answered with the error).  The rest of
 * the released bytes go in side PutBuffers (src/chain/fxside.c:
 * mp_asm_up_pending, mp_asm_up_take, mp_asm_up_result); the client's
 * PutBuffer response gets its own BufferUsedSize and the first failure
 * (mp_asm_emit). */
void mp_asm_fx_up_emit(struct mp_asm *a, struct mp_fxctx **list, struct mp_call *call);
void mp_asm_fx_up_block(struct mp_fxctx **list, const struct mp_fx_span *sp, struct mp_call *call,
                        int ri);
size_t mp_asm_fx_up_pending(struct mp_fxctx **list, const struct mp_object *o);
size_t mp_asm_fx_up_take(struct mp_fxctx **list, const struct mp_object *o, uint8_t *dst,
                         size_t max);
void mp_asm_fx_up_result(struct mp_fxctx **list, const struct mp_object *o, uint32_t rv,
                         uint16_t status, uint16_t total);
void mp_asm_up_emit(struct mp_asm *a, struct mp_call *call);
void mp_asm_up_block(struct mp_asm *a, const struct mp_fx_span *sp, struct mp_call *call, int ri);
size_t mp_asm_up_pending(struct mp_asm *a, const struct mp_object *o);
size_t mp_asm_up_take(struct mp_asm *a, const struct mp_object *o, uint8_t *dst, size_t max);
void mp_asm_up_result(struct mp_asm *a, const struct mp_object *o, uint32_t rv, uint16_t status,
                      uint16_t total);

/* One FastTransfer stream into messages, usable alone (tests, bench):
 * dir/mode/folder as the context says; bare: the whole stream is one
 * messageContent (a CopyTo / CopyProperties of a message). */
struct mp_fxasm;
struct mp_fxasm *mp_fxasm_new(struct mp_asm *a, enum mp_msg_dir dir, enum mp_msg_mode mode,
                              uint64_t folder_id, uint64_t message_id, bool bare);
/* 0, or -1 once the stream is malformed (logged once; later feeds do nothing). */
int mp_fxasm_feed(struct mp_fxasm *f, const uint8_t *p, size_t n, const char *completed_by);
/* The stream ended (TransferStatus Done, or the context's release). */
int mp_fxasm_finish(struct mp_fxasm *f, const char *completed_by);
void mp_fxasm_free(struct mp_fxasm *f); /* an unfinished message is dropped */
/* Holding for a stream used alone (tests, fuzzing; the session's contexts
 * set their own): each message from its first byte waits in q, events carry
 * held spans (context_id, handle as given). */
struct mp_fxq;
void mp_fxasm_hold(struct mp_fxasm *f, struct mp_fxq *q, uint32_t context_id, uint32_t handle);

/* The id the session's RopGetPropertyIdsFromNames / GetNamesFromPropertyIds
 * gave the named property (guid, name), -1 when the session did not show it. */
int mp_asm_name_id(const struct mp_asm *a, const uint8_t guid[16], const char *name);

#endif
