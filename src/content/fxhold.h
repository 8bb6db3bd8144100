/* Holding and re-chunking FastTransfer download streams (cached mode
 * verdicts; doc/internals/content.md, "Holding and re-chunking").
 *
 * mp_fxq: the bytes of one download context that the client has not been
 * given yet, in the client's order (verdicts already applied to the
 * messages before the open one).  Positions are "client positions": bytes
 * the client has been given (consumed) plus the index in the queue; an
 * upstream stream offset o of a byte not yet rewritten is at o + delta.
 *
 * mp_fxrw_message: one message of the stream (a messageChangeFull with its
 * IncrSyncProgressPerMsg, a StartMessage .. EndMessage, or a bare
 * messageContent) re-encoded with a verdict applied: a notice in place of
 * its content (the change header kept), a subject prefix, string
 * properties set, top-level attachments dropped or replaced by a text
 * notice.  Pure: decodes with src/fx and writes with its encoder. */
#ifndef MP_CONTENT_FXHOLD_H
#define MP_CONTENT_FXHOLD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "fx/fxstream.h"

struct mp_fxq {
    struct mp_buf buf; /* the bytes (mp_fxq_len of them at mp_buf_head) */
    uint64_t consumed; /* bytes given to the client */
    int64_t delta;     /* client position - upstream offset, for bytes after every rewrite */
    bool open;         /* a message is being assembled: held from open_up on */
    uint64_t open_up;  /* its upstream offset */
    bool up_done;      /* the upstream said Done */
    uint16_t in_progress, total_steps; /* the upstream's last progress counts */
    /* the stream's progressTotal (IncrSyncProgressMode): where its
     * ProgressInformation (MS-OXCFXICS 2.2.2.7, 32 bytes) starts; it comes
     * before every message, so its client position is its upstream offset */
    bool prog_seen;
    uint64_t prog_at;
};
void mp_fxq_free(struct mp_fxq *q);
static inline size_t mp_fxq_len(const struct mp_fxq *q)
{
    return mp_buf_avail(&q->buf);
}
int mp_fxq_append(struct mp_fxq *q, const uint8_t *p, size_t n);
/* Bytes that can go to the client now (before the open message). */
size_t mp_fxq_releasable(const struct mp_fxq *q);
/* Bytes held for the open message. */
size_t mp_fxq_held(const struct mp_fxq *q);
/* Takes up to max releasable bytes from the front into dst; their count. */
size_t mp_fxq_take(struct mp_fxq *q, size_t max, uint8_t *dst);
/* Upstream bytes [up_start, up_end) (not given to the client yet): where
 * they are in the queue; NULL if not (all) there. */
const uint8_t *mp_fxq_region(const struct mp_fxq *q, uint64_t up_start, uint64_t up_end,
                             size_t *idx);
/* Replaces them with n bytes; 0 or -1. */
int mp_fxq_replace(struct mp_fxq *q, uint64_t up_start, uint64_t up_end, const uint8_t *p,
                   size_t n);
/* A held message's length changed by delta (a verdict; msg, n: its bytes,
 * either version): the progressTotal's FAIMessageTotalSize or
 * NormalMessageTotalSize (FAI when the message's IncrSyncProgressPerMsg
 * says so) changes by as much, clamped, when the progressTotal is still in
 * the queue (not given to the client yet).  true when it changed. */
bool mp_fxq_progress_resize(struct mp_fxq *q, const uint8_t *msg, size_t n, int64_t delta);
/* A held download message [up_start, up_end) replaced by its rewrite p, n
 * (mp_fxq_replace), then the progressTotal follows (mp_fxq_progress_resize).
 * 0 or -1 (nothing changed). */
int mp_fxq_replace_message(struct mp_fxq *q, uint64_t up_start, uint64_t up_end, const uint8_t *p,
                           size_t n);
/* TransferStatus for a response that leaves the queue as it is now:
 * Done (3) when the upstream is done and nothing is left, else Partial (1). */
uint16_t mp_fxq_status(const struct mp_fxq *q);

/* PARTIAL: a messageChangePartial from its IncrSyncChgPartial on (the
 * groupInfo and MetaTagIncrSyncGroupId before it stay in the stream).  A
 * block writes a messageChangeFull in its place (IncrSyncChg, the same
 * header, IncrSyncMessage, the notice: MS-OXCFXICS 2.2.4.3.11 lets a server
 * send a full change for any change); a modify changes only what it
 * carries (a subject prefix when PidTagSubject is in a changed group,
 * string sets replace a property of the same id in place, attachments of
 * its messageChildren), adding nothing to its property groups. */
enum mp_fxrw_kind { MP_FXRW_CHANGE, MP_FXRW_MESSAGE, MP_FXRW_BARE, MP_FXRW_PARTIAL };
struct mp_fxrw_set {
    uint32_t tag;                 /* id << 16 | PT_UNICODE */
    const struct mp_fx_named *np; /* named (id >= 0x8000): its name */
    const uint8_t *v;             /* UTF-16LE with its terminator */
    uint32_t n;
};
struct mp_fxrw_att {
    uint32_t num;       /* the top-level attachment's place (0 = first) */
    const char *notice; /* NULL: dropped; else a text/plain attachment with it */
};
struct mp_fxrw {
    enum mp_fxrw_kind kind;
    const uint8_t *block; /* a notice's property list in place of the content (NULL: none) */
    size_t block_len;
    const char *prefix; /* subject prefix, UTF-8 (NULL: none) */
    const struct mp_fxrw_set *sets;
    size_t nsets;
    const struct mp_fxrw_att *atts;
    size_t natts;
};
/* 0, or -1 (malformed, out of memory) with out left unusable. */
int mp_fxrw_message(const uint8_t *in, size_t n, const struct mp_fxrw *rw, struct mp_fx_enc *out);
#endif
