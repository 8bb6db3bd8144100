/* mapiproxy message API (ABI 4; additions of ABI 5 marked so): whole
 * messages for content modules.
 *
 * Included by module.h; a module that wants whole messages sets the
 * descriptor's `message` hook.  The proxy then rebuilds every message that
 * crosses a session, both ways, in online mode (message, attachment and
 * stream ROPs) and in cached mode (FastTransfer streams of ICS downloads,
 * ICS uploads and FastTransfer copies), and calls the hook once per
 * completed message:
 *
 *   upload   (client -> server): when the ROP that would store it arrives
 *            (RopSaveChangesMessage / RopSubmitMessage of the top message,
 *            RopFastTransferDestinationPutBuffer carrying its last byte,
 *            RopSynchronizationImportMessageChange's SaveChangesMessage),
 *            before that ROP goes upstream;
 *   download (server -> client): when its last byte came from the upstream,
 *            before the client gets the response that carries it.
 *
 * A module whose hook never gives a verdict (it logs, archives, counts)
 * sets MP_MODULE_OBSERVES_ONLY in the descriptor's flags (module.h, ABI 5):
 * with only such modules loaded nothing is held for verdicts.
 *
 * Modules with the hook run in list order for uploads (1..n) and in
 * reverse for downloads (n..1), as the call hooks do.  Each sees the
 * verdicts of the modules before it (mp_message_blocked).
 *
 * A hook returns MP_CONTINUE (done; any verdict it set holds) or
 * MP_PENDING: the proxy holds the completing call (and the session's later
 * traffic that depends on it) until the module calls mp_message_resume(ev)
 * exactly once, from any later event of the loop (an fd watch on the
 * scanner's socket, a timer).  The event, its message and the session stay
 * valid until then; if the client goes away meanwhile, resume still must be
 * called (it then only frees).
 *
 * Verdicts (no call: allow):
 *   block    upload: the completing ROP is answered with an error Outlook
 *            shows (ecAccessDenied) and is never sent upstream, so the server
 *            never stores the message;
 *            download: the client gets a notice message in place of the
 *            message (its subject and body say why), in online mode and
 *            inside FastTransfer streams;
 *   modify   drop an attachment or replace it with a text notice, prefix the
 *            subject, set a string property (tagged or named): for uploads
 *            the server stores the changed message, for downloads the client
 *            gets it.
 * mp_message_can_modify says whether this event can still be changed (a
 * download whose first bytes already reached the client can only be
 * blocked or allowed; a FastTransfer message, a messageChangePartial
 * included, can be changed while the proxy holds it: mapiproxy:fx hold
 * limit).
 *
 * Messages arrive complete but may be large: string and binary values can
 * live in private temporary files; read them with the *_read functions.
 */
#ifndef MAPIPROXY_MESSAGE_H
#define MAPIPROXY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mp_session;
struct mp_message;       /* one message: properties, recipients, attachments */
struct mp_message_event; /* a completed message as the message hook sees it */

enum mp_message_dir {
    MP_MESSAGE_UPLOAD = 0,   /* client -> server */
    MP_MESSAGE_DOWNLOAD = 1, /* server -> client */
};
enum mp_message_mode {
    MP_MESSAGE_ONLINE = 0,       /* message/attachment/stream ROPs */
    MP_MESSAGE_ICS_DOWNLOAD = 1, /* RopSynchronizationConfigure + FastTransferSourceGetBuffer */
    MP_MESSAGE_ICS_UPLOAD = 2, /* RopSynchronizationImportMessageChange, FastTransferDestination */
    MP_MESSAGE_FX_COPY = 3,    /* RopFastTransferSourceCopyTo / CopyMessages / CopyProperties */
};
const char *mp_message_dir_name(enum mp_message_dir d); /* "upload", "download" */
const char *mp_message_mode_name(
    enum mp_message_mode m); /* "online", "ics-download", "ics-upload", "fx-copy" */

/* ---- the event ---- */
enum mp_message_dir mp_message_event_dir(const struct mp_message_event *ev);
enum mp_message_mode mp_message_event_mode(const struct mp_message_event *ev);
struct mp_session *mp_message_event_session(struct mp_message_event *ev);
/* As mp_call_peer / mp_call_transport of the completing call.  The user:
 * mp_call_user's when the proxy authenticated the client; in transparent
 * mode what the session saw instead: the identity its pass-through HTTP
 * logon names (MAPI/HTTP: "DOMAIN\user"), else the user DN of its
 * EcDoConnectEx / Connect.  NULL when none is known. */
const char *mp_message_event_user(const struct mp_message_event *ev);
const char *mp_message_event_peer(const struct mp_message_event *ev);
const char *mp_message_event_transport(const struct mp_message_event *ev);
/* Folder and message ids (MS-OXCDATA 2.2.1.2), 0 when unknown (an upload
 * before its first save). */
uint64_t mp_message_event_folder_id(const struct mp_message_event *ev);
uint64_t mp_message_event_message_id(const struct mp_message_event *ev);
/* PidTagChangeKey (or, in a FastTransfer stream, the change key of its
 * messageChangeHeader) when the message carried one: with the message id,
 * what a verdict cache keys on.  NULL when absent. */
const uint8_t *mp_message_event_change_key(const struct mp_message_event *ev, size_t *len);
/* "RopSaveChangesMessage", "RopRelease", "RopFastTransferSourceGetBuffer", ... */
const char *mp_message_event_completed_by(const struct mp_message_event *ev);
/* A messageChangePartial: only the properties that changed, never a whole
 * message (MS-OXCFXICS 2.2.4.3.21). */
bool mp_message_event_partial(const struct mp_message_event *ev);
const struct mp_message *mp_message_event_message(const struct mp_message_event *ev);

/* The message as RFC 5322 / MIME (multipart/alternative bodies,
 * attachments with their names and types, embedded messages as
 * message/rfc822; headers from PidTagTransportMessageHeaders when
 * present), built on first use and kept for the event: a descriptor of a
 * private read-only file positioned at 0 (do not close it; use pread or
 * dup), -1 on failure.  *size gets its length. */
int mp_message_event_mime_fd(struct mp_message_event *ev, uint64_t *size);

/* Memory that lives as long as the event. */
void *mp_message_event_alloc(struct mp_message_event *ev, size_t size);

/* ---- reading a message (the event's, or an embedded one) ---- */
/* A string property (PT_UNICODE or PT_STRING8 of property id `id`) as
 * UTF-8, in event memory; NULL when absent. */
const char *mp_message_string(struct mp_message_event *ev, const struct mp_message *m, uint16_t id);
/* A fixed-size property (PT_LONG, PT_BOOLEAN, PT_SYSTIME, PT_I8, ...): its
 * little-endian bits in *v.  false when absent. */
bool mp_message_number(const struct mp_message *m, uint32_t tag, uint64_t *v);
/* Any property's bytes (PT_BINARY, strings as stored: UTF-16LE for
 * PT_UNICODE): its length or -1 when absent; read returns the count read at
 * off (0 at the end), -1 on error. */
int64_t mp_message_bytes_size(const struct mp_message *m, uint32_t tag);
long mp_message_bytes_read(const struct mp_message *m, uint32_t tag, uint64_t off, void *buf,
                           size_t n);
/* The tags present, i < count. */
size_t mp_message_prop_count(const struct mp_message *m);
uint32_t mp_message_prop_tag(const struct mp_message *m, size_t i);

/* Recipients: type 1 To, 2 Cc, 3 Bcc; display name and address (SMTP when
 * known) in event memory, NULL when absent. */
size_t mp_message_recipient_count(const struct mp_message *m);
int mp_message_recipient(struct mp_message_event *ev, const struct mp_message *m, size_t i,
                         const char **display_name, const char **address);

/* Attachments, i < count, in their PidTagAttachNumber order. */
size_t mp_message_attachment_count(const struct mp_message *m);
/* PidTagAttachLongFilename (else PidTagAttachFilename), NULL when none. */
const char *mp_message_attachment_name(struct mp_message_event *ev, const struct mp_message *m,
                                       size_t i);
/* PidTagAttachMimeTag, NULL when none. */
const char *mp_message_attachment_mime_type(struct mp_message_event *ev, const struct mp_message *m,
                                            size_t i);
/* PidTagAttachMethod: 1 by value, 2..4 by reference, 5 embedded message. */
uint32_t mp_message_attachment_method(const struct mp_message *m, size_t i);
/* PidTagAttachDataBinary: its size (-1 when none) and its bytes. */
int64_t mp_message_attachment_size(const struct mp_message *m, size_t i);
long mp_message_attachment_read(const struct mp_message *m, size_t i, uint64_t off, void *buf,
                                size_t n);
/* The embedded message of attachment i (method 5), NULL otherwise. */
const struct mp_message *mp_message_attachment_embedded(const struct mp_message *m, size_t i);

/* ---- verdicts ---- */
/* Blocks the message (see above).  reason: one line, shown to the user in
 * a download's notice and logged; no secrets.  0 or -1. */
int mp_message_block(struct mp_message_event *ev, const char *reason);
/* True when a module before this one blocked it. */
bool mp_message_blocked(const struct mp_message_event *ev);
/* False for events that can only be allowed or blocked. */
bool mp_message_can_modify(const struct mp_message_event *ev);
/* Attachment i of the top message: removed (notice NULL), or replaced by a
 * text/plain attachment named "<name>.txt" holding `notice`.  0, or -1
 * (out of range, or !mp_message_can_modify). */
int mp_message_replace_attachment(struct mp_message_event *ev, size_t i, const char *notice);
/* Puts prefix (e.g. "[SPAM] ") before the subject.  0 or -1. */
int mp_message_prefix_subject(struct mp_message_event *ev, const char *prefix);
/* Sets a PT_UNICODE property, tagged (id < 0x8000) or named by
 * (guid, name) (e.g. PS_INTERNET_HEADERS, "X-Spam-Status" as Exchange keeps
 * X- headers).  0 or -1. */
int mp_message_set_string(struct mp_message_event *ev, uint16_t id, const char *utf8);
int mp_message_set_named_string(struct mp_message_event *ev, const uint8_t guid[16],
                                const char *name, const char *utf8);
/* ABI 5: sets a tagged PT_BINARY property (id 0x0001-0x7FFF) to
 * data[0..n), e.g. PidTagRtfCompressed (0x1009) with a body rewritten in
 * the uncompressed form of MS-OXRTFCP.  Uploads (online), cached-mode
 * downloads and online downloads read ahead (mapiproxy:online prefetch:
 * the client's property lists carry the bytes up to 4 KB, longer ones are
 * answered ecNotEnoughMemory and its streams carry them); -1 as for the
 * other verdicts. */
int mp_message_set_binary(struct mp_message_event *ev, uint16_t id, const void *data, size_t n);
/* PS_INTERNET_HEADERS {00020386-0000-0000-C000-000000000046}, wire order. */
#define MP_PS_INTERNET_HEADERS                                                                     \
    {                                                                                              \
        0x86, 0x03, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  \
            0x46                                                                                   \
    }

/* After the hook returned MP_PENDING: the verdicts set meanwhile take
 * effect and the held call goes on.  Exactly once. */
void mp_message_resume(struct mp_message_event *ev);

#ifdef __cplusplus
}
#endif
#endif
