/* Holding and re-chunking FastTransfer download streams, and messages
 * re-encoded with a verdict (fxhold.h; doc/internals/content.md). */
#include "content/fxhold.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/ntlm_crypto.h" /* mp_utf8_to_utf16le */
#include "core/buf.h"

/* ---- the queue ---- */

void mp_fxq_free(struct mp_fxq *q)
{
    mp_buf_free(&q->buf);
    memset(q, 0, sizeof *q);
}

int mp_fxq_append(struct mp_fxq *q, const uint8_t *p, size_t n)
{
    return mp_buf_append(&q->buf, p, n);
}

static bool index_of(const struct mp_fxq *q, uint64_t up, size_t *idx)
{
    int64_t pos = (int64_t)up + q->delta;
    if (pos < (int64_t)q->consumed || (uint64_t)pos - q->consumed > mp_fxq_len(q))
        return false;
    *idx = (size_t)((uint64_t)pos - q->consumed);
    return true;
}

size_t mp_fxq_releasable(const struct mp_fxq *q)
{
    size_t i;
    if (!q->open)
        return mp_fxq_len(q);
    return index_of(q, q->open_up, &i) ? i : 0;
}

size_t mp_fxq_held(const struct mp_fxq *q)
{
    return mp_fxq_len(q) - mp_fxq_releasable(q);
}

size_t mp_fxq_take(struct mp_fxq *q, size_t max, uint8_t *dst)
{
    size_t k = mp_fxq_releasable(q);
    if (k > max)
        k = max;
    if (!k)
        return 0;
    memcpy(dst, mp_buf_head(&q->buf), k);
    mp_buf_consume(&q->buf, k);
    q->consumed += k;
    return k;
}

const uint8_t *mp_fxq_region(const struct mp_fxq *q, uint64_t up_start, uint64_t up_end,
                             size_t *idx)
{
    size_t s, e;
    if (!q->buf.data || up_end < up_start || !index_of(q, up_start, &s) || !index_of(q, up_end, &e))
        return NULL;
    *idx = s;
    return mp_buf_head(&q->buf) + s;
}

int mp_fxq_replace(struct mp_fxq *q, uint64_t up_start, uint64_t up_end, const uint8_t *p, size_t n)
{
    size_t s;
    if (!mp_fxq_region(q, up_start, up_end, &s))
        return -1;
    size_t old = (size_t)(up_end - up_start), tail = mp_fxq_len(q) - s - old;
    if (n > old && mp_buf_reserve(&q->buf, n - old)) /* may move the bytes */
        return -1;
    uint8_t *h = mp_buf_head(&q->buf);
    if (tail)
        memmove(h + s + n, h + s + old, tail);
    if (n)
        memcpy(h + s, p, n);
    q->buf.len = q->buf.off + s + n + tail;
    q->delta += (int64_t)n - (int64_t)old;
    return 0;
}

uint16_t mp_fxq_status(const struct mp_fxq *q)
{
    return q->up_done && mp_fxq_len(q) == 0 ? 0x0003 : 0x0001;
}

/* ---- a message re-encoded with a verdict ---- */

static void resize(uint8_t *p, int w, int64_t delta);

enum {
    PROG_INFO_LEN = 32,    /* ProgressInformation version 0 (MS-OXCFXICS 2.2.2.7) */
    PROG_FAI_SIZE = 8,     /* FAIMessageTotalSize, 64 bits */
    PROG_NORMAL_SIZE = 24, /* NormalMessageTotalSize, 64 bits */
};

/* IncrSyncProgressPerMsg (marker 0x4075000B), its size (0x00000003) and
 * its FAI flag (0x0000000B, a 2-byte PtypBoolean): MS-OXCFXICS 2.2.4.3.18.
 * 1: FAI, 0: normal, -1: the bytes do not start with one. */
static int per_msg_fai(const uint8_t *in, size_t n)
{
    static const uint8_t head[] = {0x0B, 0x00, 0x75, 0x40, 0x03, 0x00, 0x00, 0x00};
    static const uint8_t flag[] = {0x0B, 0x00, 0x00, 0x00};
    if (n < 18 || memcmp(in, head, 8) || memcmp(in + 12, flag, 4))
        return -1;
    return in[16] || in[17];
}

enum { TAG_ASSOCIATED = 0x67AA000B }; /* PidTagAssociated, PtypBoolean */

/* A change's messageChangeHeader (MS-OXCFXICS 2.2.4.3.x: the properties
 * after IncrSyncChg or IncrSyncChgPartial, up to IncrSyncMessage or the
 * first MetaTagIncrementalSyncMessagePartial) read for PidTagAssociated. */
struct assoc {
    bool header, fai;
};

static int assoc_cb(void *ud, const struct mp_fx_event *ev)
{
    struct assoc *a = ud;
    if (ev->kind == MP_FX_EV_MARKER) {
        if (ev->elem == MP_FX_E_CHANGE || ev->elem == MP_FX_E_CHANGE_PARTIAL) {
            a->header = true;
            return 0;
        }
        return a->header; /* the header ended: no PidTagAssociated in it */
    }
    if (!a->header)
        return 0; /* IncrSyncProgressPerMsg's, groupInfo ... */
    if (ev->kind == MP_FX_EV_PROP && ev->tag == MP_FX_MetaTagIncrementalSyncMessagePartial)
        return 1;
    if (ev->kind == MP_FX_EV_VALUE_END && ev->tag == TAG_ASSOCIATED) {
        a->fai = ev->u != 0;
        return 1;
    }
    return 0;
}

/* Is the message (a change, as re-encoded) FAI?  Its IncrSyncProgressPerMsg
 * says when it has one; otherwise its header's PidTagAssociated (none, or
 * bytes that do not parse: normal). */
static bool message_fai(const uint8_t *in, size_t n)
{
    int f = per_msg_fai(in, n);
    if (f >= 0)
        return f;
    struct assoc a = {0};
    struct mp_fx_parser *p = mp_fx_parser_new(assoc_cb, &a);
    if (p)
        mp_fx_feed(p, in, n); /* stops at the header's end */
    mp_fx_parser_free(p);
    return a.fai;
}

bool mp_fxq_progress_resize(struct mp_fxq *q, const uint8_t *msg, size_t n, int64_t delta)
{
    if (!q->prog_seen || !delta || q->prog_at < q->consumed ||
        q->prog_at - q->consumed + PROG_INFO_LEN > mp_fxq_len(q))
        return false; /* none, the same length, or already given to the client */
    uint8_t *info = mp_buf_head(&q->buf) + (size_t)(q->prog_at - q->consumed);
    if (info[0] || info[1])
        return false; /* a version other than 0: not ours to read */
    resize(info + (message_fai(msg, n) ? PROG_FAI_SIZE : PROG_NORMAL_SIZE), 8, delta);
    return true;
}

int mp_fxq_replace_message(struct mp_fxq *q, uint64_t up_start, uint64_t up_end, const uint8_t *p,
                           size_t n)
{
    if (up_end < up_start || mp_fxq_replace(q, up_start, up_end, p, n))
        return -1;
    /* the progressTotal lies before every message: not moved; p starts with
     * the message's IncrSyncProgressPerMsg (FAI flag and all) when it had
     * one, else its header's PidTagAssociated says FAI or not */
    mp_fxq_progress_resize(q, p, n, (int64_t)n - (int64_t)(up_end - up_start));
    return 0;
}

enum {
    TAG_SUBJECT_ID = 0x0037,
    TAG_ATTACH_NUMBER = 0x0E210003,
    TAG_ATTACH_METHOD = 0x37050003,
    TAG_ATTACH_LONG_FILENAME = 0x3707001F,
    TAG_ATTACH_FILENAME = 0x3704001F,
    TAG_ATTACH_MIME_TAG = 0x370E001F,
    TAG_ATTACH_DATA = 0x37010102,
    TAG_PROGRESS_SIZE = 0x00000003,
    TAG_MESSAGE_SIZE = 0x0E080003,     /* PidTagMessageSize, PtypInteger32 unsigned */
    TAG_MESSAGE_SIZE_EXT = 0x0E080014, /* PidTagMessageSizeExtended, PtypInteger64 */
};

/* A little-endian size of w bytes (4: unsigned 32-bit, MS-OXCMSG
 * 2.2.1.7; 8: 64-bit) at p changed by delta, clamped to 0 .. the largest
 * value it holds (a size past what 32 bits say is not wrapped). */
static void resize(uint8_t *p, int w, int64_t delta)
{
    if (!delta)
        return; /* the same length: the server's bytes */
    uint64_t v = 0;
    for (int i = 0; i < w; i++)
        v |= (uint64_t)p[i] << (8 * i);
    uint64_t max = w == 4 ? UINT32_MAX : UINT64_MAX;
    if (delta < 0)
        v = v < (uint64_t)-delta ? 0 : v - (uint64_t)-delta;
    else
        v = v > max - (uint64_t)delta ? max : v + (uint64_t)delta;
    for (int i = 0; i < w; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

struct rw {
    const struct mp_fxrw *rw;
    struct mp_fx_enc *e;
    bool body;     /* in the message's content (past its change header) */
    bool skip_all; /* blocked: the content is the notice */
    int depth;     /* recipients, attachments, embedded messages open */
    int skip;      /* 1: the current propValue is left out */
    bool cap_subject, have_subject, sets_done;
    uint32_t cap_tag;
    struct mp_buf cap;
    uint32_t natt;
    /* a dropped or replaced top-level attachment */
    const struct mp_fxrw_att *ratt;
    uint32_t att_num;
    bool have_att_num;
    uint32_t cur_tag;   /* the attachment's own propValue being read */
    struct mp_buf name; /* its PidTagAttachLongFilename (else PidTagAttachFilename) */
    bool name_long;
    size_t msize_at;  /* the change header's PidTagMessageSize value, in out (0: none) */
    int msize_w;      /* its width: 4 or 8 */
    uint32_t cur_set; /* a partial change: the property a set replaces */
    int err;
};

static void put_utf16(struct mp_buf *b, const char *s)
{
    size_t cap = strlen(s) * 2 + 2, n = 0;
    uint8_t *t = malloc(cap);
    if (t && !mp_utf8_to_utf16le(s, t, cap, &n))
        mp_buf_append(b, t, n);
    free(t);
}

static void enc_str(struct mp_fx_enc *e, uint32_t tag, const char *s)
{
    struct mp_buf b = {0};
    put_utf16(&b, s);
    mp_buf_append(&b, "\0\0", 2);
    mp_fx_enc_var(e, tag, NULL, b.data ? b.data : (const uint8_t *)"\0\0", (uint32_t)b.len);
    mp_buf_free(&b);
}

static void flush_sets(struct rw *w)
{
    if (w->sets_done)
        return;
    w->sets_done = true;
    if (w->rw->kind == MP_FXRW_PARTIAL)
        return; /* a partial change's groups get nothing added */
    if (w->rw->prefix && !w->have_subject)
        enc_str(w->e, (uint32_t)TAG_SUBJECT_ID << 16 | 0x001F, w->rw->prefix);
    for (size_t i = 0; i < w->rw->nsets; i++) {
        const struct mp_fxrw_set *s = &w->rw->sets[i];
        mp_fx_enc_var(w->e, s->tag, s->np, s->v, s->n);
    }
}

static bool set_id(const struct rw *w, uint32_t tag)
{
    for (size_t i = 0; i < w->rw->nsets; i++)
        if (w->rw->sets[i].tag >> 16 == tag >> 16)
            return true;
    return false;
}

/* A partial change: the set value of tag's id where the old one was. */
static void set_in_place(struct rw *w, uint32_t tag)
{
    for (size_t i = 0; i < w->rw->nsets; i++) {
        const struct mp_fxrw_set *s = &w->rw->sets[i];
        if (s->tag >> 16 == tag >> 16) {
            mp_fx_enc_var(w->e, s->tag, s->np, s->v, s->n);
            return;
        }
    }
}

static void subject_out(struct rw *w)
{
    struct mp_buf b = {0};
    uint16_t type = (uint16_t)w->cap_tag;
    if (type == 0x001F) {
        put_utf16(&b, w->rw->prefix);
    } else { /* string8 or a code page: the prefix's ASCII */
        for (const char *p = w->rw->prefix; *p; p++) {
            char c = (unsigned char)*p < 0x80 ? *p : '?';
            mp_buf_append(&b, &c, 1);
        }
    }
    mp_buf_append(&b, w->cap.data ? w->cap.data : (const uint8_t *)"", w->cap.len);
    mp_fx_enc_var(w->e, w->cap_tag, NULL, b.data ? b.data : (const uint8_t *)"", (uint32_t)b.len);
    mp_buf_free(&b);
    w->cap.len = 0;
}

static void notice_attachment(struct rw *w)
{
    struct mp_fx_enc *e = w->e;
    if (w->have_att_num)
        mp_fx_enc_fixed(e, TAG_ATTACH_NUMBER, NULL, w->att_num);
    mp_fx_enc_fixed(e, TAG_ATTACH_METHOD, NULL, 1); /* afByValue */
    struct mp_buf n = {0};
    if (w->name.len >= 2)
        mp_buf_append(&n, w->name.data, w->name.len - 2); /* without its terminator */
    else
        put_utf16(&n, "attachment");
    put_utf16(&n, ".txt");
    mp_buf_append(&n, "\0\0", 2);
    if (n.data) {
        mp_fx_enc_var(e, TAG_ATTACH_LONG_FILENAME, NULL, n.data, (uint32_t)n.len);
        mp_fx_enc_var(e, TAG_ATTACH_FILENAME, NULL, n.data, (uint32_t)n.len);
    }
    mp_buf_free(&n);
    enc_str(e, TAG_ATTACH_MIME_TAG, "text/plain");
    mp_fx_enc_var(e, TAG_ATTACH_DATA, NULL, (const uint8_t *)w->ratt->notice,
                  (uint32_t)strlen(w->ratt->notice));
}

/* Inside a dropped or replaced attachment: nothing goes out until its
 * EndAttach, where the notice attachment's properties do. */
static void in_ratt(struct rw *w, const struct mp_fx_event *ev)
{
    switch (ev->kind) {
    case MP_FX_EV_MARKER:
        if (ev->begin &&
            (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH || ev->elem == MP_FX_E_EMBED))
            w->depth++;
        if (ev->end &&
            (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH || ev->elem == MP_FX_E_EMBED))
            w->depth--;
        if (w->depth == 0) { /* its EndAttach */
            if (w->ratt->notice) {
                notice_attachment(w);
                mp_fx_enc_marker(w->e, ev->tag);
            }
            w->ratt = NULL;
        }
        break;
    case MP_FX_EV_PROP:
        w->cur_tag = w->depth == 1 ? ev->tag : 0;
        if (w->cur_tag == TAG_ATTACH_LONG_FILENAME ||
            (w->cur_tag == TAG_ATTACH_FILENAME && !w->name_long)) {
            w->name.len = 0;
            w->name_long = w->cur_tag == TAG_ATTACH_LONG_FILENAME;
        }
        break;
    case MP_FX_EV_DATA:
        if ((w->cur_tag == TAG_ATTACH_LONG_FILENAME ||
             (w->cur_tag == TAG_ATTACH_FILENAME && !w->name_long)) &&
            w->name.len + ev->n <= 1024)
            mp_buf_append(&w->name, ev->p, ev->n);
        break;
    case MP_FX_EV_VALUE_END:
        if (w->cur_tag == TAG_ATTACH_NUMBER) {
            w->att_num = (uint32_t)ev->u;
            w->have_att_num = true;
        }
        break;
    default:
        break;
    }
}

static bool child_elem(enum mp_fx_elem el)
{
    return el == MP_FX_E_RECIP || el == MP_FX_E_ATTACH || el == MP_FX_E_EMBED;
}

static void on_marker(struct rw *w, const struct mp_fx_event *ev)
{
    const struct mp_fxrw *rw = w->rw;
    if (rw->kind == MP_FXRW_PARTIAL && ev->elem == MP_FX_E_CHANGE_PARTIAL && !w->body) {
        /* blocked: a full change in its place */
        mp_fx_enc_marker(w->e, rw->block ? (uint32_t)MP_FX_IncrSyncChg : ev->tag);
        return;
    }
    bool starts =
        (rw->kind == MP_FXRW_CHANGE && !w->body && ev->elem == MP_FX_E_CHANGE_BODY) ||
        (rw->kind == MP_FXRW_MESSAGE && !w->body && ev->elem == MP_FX_E_MESSAGE && ev->begin);
    if (w->skip_all) {
        if (rw->kind == MP_FXRW_MESSAGE && ev->elem == MP_FX_E_MESSAGE && ev->end && !w->depth)
            mp_fx_enc_marker(w->e, ev->tag);
        else if (child_elem(ev->elem))
            w->depth += ev->begin ? 1 : -1;
        return;
    }
    if (starts) {
        w->body = true;
        mp_fx_enc_marker(w->e, ev->tag);
        if (rw->block) {
            mp_fx_enc_raw(w->e, rw->block, rw->block_len); /* the notice's property list */
            w->skip_all = true;
        }
        return;
    }
    if (w->body && w->depth == 0) {
        bool top_end = ev->elem == MP_FX_E_MESSAGE && ev->end;
        if ((ev->begin && (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH)) || top_end)
            flush_sets(w);
        if (ev->begin && ev->elem == MP_FX_E_ATTACH) {
            uint32_t k = w->natt++;
            for (size_t i = 0; i < rw->natts; i++) {
                if (rw->atts[i].num != k)
                    continue;
                w->ratt = &rw->atts[i];
                w->depth = 1;
                w->have_att_num = false;
                w->name.len = 0;
                w->name_long = false;
                if (w->ratt->notice)
                    mp_fx_enc_marker(w->e, ev->tag);
                return;
            }
        }
    }
    if (child_elem(ev->elem))
        w->depth += ev->begin ? 1 : -1;
    mp_fx_enc_event(w->e, ev);
}

/* A partial change's header ends at its first property group
 * (MetaTagIncrementalSyncMessagePartial), MetaTagFXDelProp, its children or
 * its end: there a blocked one gets IncrSyncMessage and the notice. */
static void partial_body(struct rw *w)
{
    w->body = true;
    if (w->rw->block) {
        mp_fx_enc_marker(w->e, MP_FX_IncrSyncMessage);
        mp_fx_enc_raw(w->e, w->rw->block, w->rw->block_len);
        w->skip_all = true;
    }
}

static bool partial_header_ends(const struct rw *w, const struct mp_fx_event *ev)
{
    if (w->rw->kind != MP_FXRW_PARTIAL || w->body || w->depth)
        return false;
    if (ev->kind == MP_FX_EV_PROP)
        return ev->tag == MP_FX_MetaTagIncrementalSyncMessagePartial ||
               ev->tag == MP_FX_MetaTagFXDelProp;
    return ev->kind == MP_FX_EV_MARKER && ev->begin &&
           (ev->elem == MP_FX_E_RECIP || ev->elem == MP_FX_E_ATTACH);
}

static int rw_cb(void *ud, const struct mp_fx_event *ev)
{
    struct rw *w = ud;
    if (ev->kind == MP_FX_EV_CHANGE_END)
        return 0;
    if (partial_header_ends(w, ev))
        partial_body(w);
    if (w->ratt) {
        in_ratt(w, ev);
        return w->e->err;
    }
    if (ev->kind == MP_FX_EV_MARKER) {
        on_marker(w, ev);
        return w->e->err;
    }
    if (w->skip_all)
        return 0;
    if (ev->kind == MP_FX_EV_PROP) {
        w->skip = 0;
        w->cap_subject = false;
        if (w->body && w->depth == 0) {
            if (ev->tag == MP_FX_MetaTagFXDelProp)
                flush_sets(w);
            else if (w->rw->prefix && ev->tag >> 16 == TAG_SUBJECT_ID && !ev->mv) {
                w->skip = 1;
                w->cap_subject = true;
                w->have_subject = true;
                w->cap_tag = ev->tag;
                w->cap.len = 0;
            } else if (set_id(w, ev->tag) && (ev->tag >> 16) != 0) {
                w->skip = 1;
                w->cur_set = ev->tag;
            }
        }
    }
    if (!w->skip) {
        int rc = mp_fx_enc_event(w->e, ev);
        /* the change header's message size follows the change */
        if (!rc && ev->kind == MP_FX_EV_PROP && !w->body &&
            (w->rw->kind == MP_FXRW_CHANGE || w->rw->kind == MP_FXRW_PARTIAL) &&
            (ev->tag == TAG_MESSAGE_SIZE || ev->tag == TAG_MESSAGE_SIZE_EXT) && !w->msize_at) {
            w->msize_at = w->e->len;
            w->msize_w = ev->tag == TAG_MESSAGE_SIZE ? 4 : 8;
        }
        return rc;
    }
    if (ev->kind == MP_FX_EV_DATA && w->cap_subject && mp_buf_append(&w->cap, ev->p, ev->n))
        return -1;
    if (ev->kind == MP_FX_EV_PROP_END) {
        if (w->cap_subject)
            subject_out(w);
        else if (w->rw->kind == MP_FXRW_PARTIAL)
            set_in_place(w, w->cur_set);
        w->skip = 0;
        w->cap_subject = false;
    }
    return w->e->err;
}

int mp_fxrw_message(const uint8_t *in, size_t n, const struct mp_fxrw *rw, struct mp_fx_enc *out)
{
    struct rw w = {.rw = rw, .e = out, .body = rw->kind == MP_FXRW_BARE};
    mp_fx_enc_free(out);
    mp_fx_enc_init(out);
    if (rw->kind == MP_FXRW_BARE && rw->block) {
        w.skip_all = true;
        mp_fx_enc_raw(out, rw->block, rw->block_len);
    }
    struct mp_fx_parser *p = mp_fx_parser_new(rw_cb, &w);
    int rc = -1;
    bool ok = p && !mp_fx_feed(p, in, n) && !mp_fx_finish(p) && !w.ratt;
    if (ok && rw->kind == MP_FXRW_PARTIAL && !w.body)
        partial_body(&w); /* a header alone */
    if (ok && w.body) {
        if (!w.skip_all && rw->kind != MP_FXRW_MESSAGE)
            flush_sets(&w); /* a change or content without children */
        rc = out->err ? -1 : 0;
    }
    mp_fx_parser_free(p);
    mp_buf_free(&w.cap);
    mp_buf_free(&w.name);
    /* IncrSyncProgressPerMsg in front and the header's PidTagMessageSize:
     * the message size follows the change */
    int64_t delta = (int64_t)out->len - (int64_t)n;
    if (!rc && n >= 12 && out->len >= 12 && !memcmp(in, out->out, 8) && in[0] == 0x0B &&
        in[1] == 0x00 && in[2] == 0x75 && in[3] == 0x40 && in[4] == 0x03 && !in[5] && !in[6] &&
        !in[7])
        resize(out->out + 8, 4, delta);
    if (!rc && w.msize_at && w.msize_at + (size_t)w.msize_w <= out->len)
        resize(out->out + w.msize_at, w.msize_w, delta);
    return rc;
}
