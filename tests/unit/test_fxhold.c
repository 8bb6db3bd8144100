/* Holding and re-chunking FastTransfer downloads (src/content/fxhold.c):
 * the client-side queue (release up to the open message, take in the
 * client's buffer sizes, a held message replaced by bytes of another
 * length, upstream offsets mapped past earlier replacements, status) and
 * the message rewriter (a verdict applied to a message of the samples in
 * tests/unit/data/fx, written by the lab's Python writer): the result
 * decoded again by the assembler (src/content/fxasm.c) and checked;
 * nothing asked: the same bytes; malformed input refused. */
#include "chain/msgevents.h"
#include "content/message.h"
#include "content/assemble.h"
#include "content/fxhold.h"
#include "core/slurp.h"
#include "fx_samples.h"
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct mp_content_limits LIM = {1 << 20, 1 << 24, NULL, 0};

struct one {
    int n;
    char subject[160], body[160], att0_name[64];
    size_t natt;
    uint8_t att0[64];
    size_t att0_len;
    bool att1_embedded;
    uint64_t mid;
};

static void str_of(const struct mp_props *p, uint16_t id, char *out, size_t n)
{
    struct mp_buf b = {0};
    out[0] = 0;
    if (!mp_props_string(p, id, &b))
        snprintf(out, n, "%s", (const char *)b.data);
    mp_buf_free(&b);
}

static void on_done(void *arg, const struct mp_msg_event *ev)
{
    struct one *o = arg;
    const struct mp_message *m = ev->msg;
    o->n++;
    str_of(&m->props, 0x0037, o->subject, sizeof o->subject);
    str_of(&m->props, 0x1000, o->body, sizeof o->body);
    o->natt = m->natt;
    o->mid = ev->message_id;
    o->att0_len = 0;
    o->att0_name[0] = 0;
    if (m->natt) {
        const struct mp_prop *d = mp_props_find(&m->att[0].props, 0x37010102);
        if (d && d->v.len <= sizeof o->att0)
            o->att0_len = (size_t)mp_blob_read(&d->v, 0, o->att0, sizeof o->att0);
        str_of(&m->att[0].props, 0x3707, o->att0_name, sizeof o->att0_name);
    }
    o->att1_embedded = m->natt > 1 && m->att[1].embedded;
}

static void on_log(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int assemble(const uint8_t *b, size_t n, bool bare, struct one *o)
{
    memset(o, 0, sizeof *o);
    struct mp_asm_ops ops = {on_done, on_log, o};
    struct mp_asm *a = mp_asm_new(&LIM, &ops);
    struct mp_fxasm *f = mp_fxasm_new(a, MP_MSG_DOWNLOAD, MP_MSG_FX_COPY, 1, 2, bare);
    int rc = mp_fxasm_feed(f, b, n, "t") | mp_fxasm_finish(f, "t");
    mp_fxasm_free(f);
    mp_asm_free(a);
    return rc;
}

static void test_queue(void)
{
    struct mp_fxq q = {0};
    uint8_t in[100], out[100];
    for (int i = 0; i < 100; i++)
        in[i] = (uint8_t)i;
    CHECK_EQ(mp_fxq_append(&q, in, 40), 0);
    q.open = true;
    q.open_up = 30; /* a message starts at upstream offset 30: held from there */
    CHECK_EQ(mp_fxq_releasable(&q), 30);
    CHECK_EQ(mp_fxq_held(&q), 10);
    CHECK_EQ(mp_fxq_take(&q, 25, out), 25); /* the client asked for 25 */
    CHECK(!memcmp(out, in, 25));
    CHECK_EQ(mp_fxq_take(&q, 25, out), 5);
    CHECK_EQ(mp_fxq_take(&q, 25, out), 0); /* all else is held */
    CHECK_EQ(mp_fxq_append(&q, in + 40, 30), 0);
    /* the message ends at 60: replaced by 3 bytes (it shrinks by 27) */
    q.open = false;
    size_t idx;
    CHECK(mp_fxq_region(&q, 30, 60, &idx) != NULL && idx == 0);
    CHECK(mp_fxq_region(&q, 20, 60, &idx) == NULL); /* already given */
    CHECK_EQ(mp_fxq_replace(&q, 30, 60, (const uint8_t *)"abc", 3), 0);
    CHECK_EQ(q.delta, -27);
    CHECK_EQ(mp_fxq_len(&q), 13);
    /* the next message, upstream 62 .. 70, is at client position 35 */
    CHECK(mp_fxq_region(&q, 62, 70, &idx) != NULL && idx == 5);
    CHECK_EQ(mp_fxq_replace(&q, 62, 70, in, 50), 0); /* grows */
    CHECK_EQ(mp_fxq_len(&q), 55);
    CHECK_EQ(mp_fxq_status(&q), 1);
    CHECK_EQ(mp_fxq_take(&q, 10, out), 10);
    CHECK(!memcmp(out, "abc", 3) && out[3] == 60 && out[4] == 61 && out[5] == 0);
    q.up_done = true;
    CHECK_EQ(mp_fxq_take(&q, 100, out), 45);
    CHECK(out[44] == 49);
    CHECK_EQ(mp_fxq_status(&q), 3);
    CHECK_EQ(q.consumed, 70 - 27 + 42);
    mp_fxq_free(&q);
}

static int rewrite(const uint8_t *in, size_t n, const struct mp_fxrw *rw, struct mp_fx_enc *out)
{
    mp_fx_enc_init(out);
    return mp_fxrw_message(in, n, rw, out);
}

static void utf16(const char *s, uint8_t *b, uint32_t *n)
{
    uint32_t k = 0;
    for (; *s; s++) {
        b[k++] = (uint8_t)*s;
        b[k++] = 0;
    }
    b[k++] = 0;
    b[k++] = 0;
    *n = k;
}

/* A notice's property list: PidTagSubject only. */
static void notice_of(struct mp_fx_enc *notice, const char *subject)
{
    uint8_t sv[64];
    uint32_t sn;
    mp_fx_enc_init(notice);
    utf16(subject, sv, &sn);
    mp_fx_enc_var(notice, 0x0037001F, NULL, sv, sn);
}

static void test_bare(void)
{
    size_t n;
    uint8_t *b = sample("content.fxs", &n);
    if (!b)
        return;
    struct one o;
    struct mp_fx_enc e;
    /* nothing asked: the same bytes */
    struct mp_fxrw none = {.kind = MP_FXRW_BARE};
    CHECK_EQ(rewrite(b, n, &none, &e), 0);
    CHECK(e.len == n && !memcmp(e.out, b, n));
    mp_fx_enc_free(&e);
    /* prefix, PidTagBody set, attachment 0 replaced by a notice */
    uint8_t v[64];
    struct mp_fxrw_set set = {0x1000001F, NULL, v, 0};
    utf16("new body", v, &set.n);
    struct mp_fxrw_att att = {0, "gone"};
    struct mp_fxrw rw = {
        .kind = MP_FXRW_BARE, .prefix = "[P] ", .sets = &set, .nsets = 1, .atts = &att, .natts = 1};
    CHECK_EQ(rewrite(b, n, &rw, &e), 0);
    CHECK_EQ(assemble(e.out, e.len, true, &o), 0);
    CHECK_EQ(o.n, 1);
    CHECK(!strcmp(o.subject, "[P] Quarterly report \xc3\xa9\xe4\xb8\xad"));
    CHECK(!strcmp(o.body, "new body"));
    CHECK_EQ(o.natt, 2);
    CHECK(o.att0_len == 4 && !memcmp(o.att0, "gone", 4));
    CHECK(!strcmp(o.att0_name, "data.bin.txt"));
    CHECK(o.att1_embedded);
    CHECK(e.len < n); /* 10 KB attachment out */
    mp_fx_enc_free(&e);
    /* dropped */
    att.notice = NULL;
    struct mp_fxrw drop = {.kind = MP_FXRW_BARE, .atts = &att, .natts = 1};
    CHECK_EQ(rewrite(b, n, &drop, &e), 0);
    CHECK_EQ(assemble(e.out, e.len, true, &o), 0);
    CHECK_EQ(o.natt, 1);
    CHECK(o.att0_len == 0); /* the first left is the embedded message */
    mp_fx_enc_free(&e);
    /* blocked: the notice's property list alone */
    struct mp_fx_enc notice;
    notice_of(&notice, "[Blocked] x");
    struct mp_fxrw blk = {.kind = MP_FXRW_BARE, .block = notice.out, .block_len = notice.len};
    CHECK_EQ(rewrite(b, n, &blk, &e), 0);
    CHECK(e.len == notice.len && !memcmp(e.out, notice.out, e.len));
    mp_fx_enc_free(&e);
    /* malformed: refused */
    CHECK_EQ(rewrite(b, n - 3, &rw, &e), -1);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&notice);
    free(b);
}

static void test_message_list(void)
{
    size_t n;
    uint8_t *b = sample("message.fxs", &n);
    if (!b)
        return;
    struct one o;
    struct mp_fx_enc e, notice;
    notice_of(&notice, "[Blocked] y");
    struct mp_fxrw blk = {.kind = MP_FXRW_MESSAGE, .block = notice.out, .block_len = notice.len};
    CHECK_EQ(rewrite(b, n, &blk, &e), 0);
    CHECK_EQ(e.len, 4 + notice.len + 4); /* StartMessage, the notice, EndMessage */
    CHECK_EQ(assemble(e.out, e.len, false, &o), 0);
    CHECK(o.n == 1 && !strcmp(o.subject, "[Blocked] y") && o.natt == 0);
    mp_fx_enc_free(&e);
    struct mp_fxrw pre = {.kind = MP_FXRW_MESSAGE, .prefix = "[Q] "};
    CHECK_EQ(rewrite(b, n, &pre, &e), 0);
    CHECK_EQ(assemble(e.out, e.len, false, &o), 0);
    CHECK(o.n == 1 && !strncmp(o.subject, "[Q] Quarterly report", 20) && o.natt == 2);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&notice);
    free(b);
}

/* An ICS change with IncrSyncProgressPerMsg in front: the header bytes
 * stay, the progress size follows the new length. */
static void test_change(void)
{
    struct mp_fx_enc in, e;
    mp_fx_enc_init(&in);
    uint8_t sv[64], sk[22] = {1, 2, 3};
    uint32_t sn;
    mp_fx_enc_marker(&in, MP_FX_IncrSyncProgressPerMsg);
    mp_fx_enc_fixed(&in, 0x00000003, NULL, 1000);
    mp_fx_enc_fixed(&in, 0x0000000B, NULL, 0);
    mp_fx_enc_marker(&in, MP_FX_IncrSyncChg);
    mp_fx_enc_var(&in, 0x65E00102, NULL, sk, sizeof sk); /* PidTagSourceKey */
    mp_fx_enc_fixed(&in, 0x674A0014, NULL, 0x1234);      /* PidTagMid */
    size_t hdr_end = in.len;
    mp_fx_enc_marker(&in, MP_FX_IncrSyncMessage);
    utf16("hello", sv, &sn);
    mp_fx_enc_var(&in, 0x0037001F, NULL, sv, sn);
    mp_fx_enc_marker(&in, MP_FX_NewAttach);
    mp_fx_enc_fixed(&in, 0x0E210003, NULL, 7);
    mp_fx_enc_var(&in, 0x37010102, NULL, (const uint8_t *)"0123456789", 10);
    mp_fx_enc_marker(&in, MP_FX_EndAttach);
    CHECK(!in.err);
    uint8_t v[64];
    struct mp_fxrw_set set = {0x1000001F, NULL, v, 0};
    utf16("b", v, &set.n);
    struct mp_fxrw rw = {.kind = MP_FXRW_CHANGE, .prefix = "[S] ", .sets = &set, .nsets = 1};
    CHECK_EQ(rewrite(in.out, in.len, &rw, &e), 0);
    CHECK(e.len > in.len && !memcmp(e.out + 12, in.out + 12, hdr_end - 12));
    uint32_t size = (uint32_t)e.out[8] | (uint32_t)e.out[9] << 8 | (uint32_t)e.out[10] << 16;
    CHECK_EQ(size, 1000 + (e.len - in.len));
    struct one o;
    CHECK_EQ(assemble(e.out, e.len, false, &o), 0);
    CHECK(o.n == 1 && !strcmp(o.subject, "[S] hello") && !strcmp(o.body, "b"));
    CHECK(o.mid == 0x1234 && o.natt == 1 && o.att0_len == 10);
    mp_fx_enc_free(&e);
    /* the attachment replaced: its PidTagAttachNumber kept */
    struct mp_fxrw_att att = {0, "x"};
    struct mp_fxrw ra = {.kind = MP_FXRW_CHANGE, .atts = &att, .natts = 1};
    CHECK_EQ(rewrite(in.out, in.len, &ra, &e), 0);
    CHECK_EQ(assemble(e.out, e.len, false, &o), 0);
    CHECK(o.natt == 1 && o.att0_len == 1 && !strcmp(o.att0_name, "attachment.txt"));
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&in);
}

/* The change header's PidTagMessageSize (or PidTagMessageSizeExtended) and
 * the progress size follow the change's new length; a size that would pass
 * UINT32_MAX (or go below 0) is clamped, not wrapped. */
static void change_sized(struct mp_fx_enc *in, uint32_t ppm, uint32_t size_tag, uint64_t msize);

static void change_with_size(struct mp_fx_enc *in, uint32_t ppm, uint64_t msize)
{
    change_sized(in, ppm, 0x0E080003, msize);
}

static void change_sized(struct mp_fx_enc *in, uint32_t ppm, uint32_t size_tag, uint64_t msize)
{
    uint8_t sk[22] = {9};
    mp_fx_enc_init(in);
    mp_fx_enc_marker(in, MP_FX_IncrSyncProgressPerMsg);
    mp_fx_enc_fixed(in, 0x00000003, NULL, ppm);
    mp_fx_enc_fixed(in, 0x0000000B, NULL, 0);
    mp_fx_enc_marker(in, MP_FX_IncrSyncChg);
    mp_fx_enc_var(in, 0x65E00102, NULL, sk, sizeof sk);
    mp_fx_enc_fixed(in, size_tag, NULL, msize); /* PidTagMessageSize(Extended) */
    mp_fx_enc_fixed(in, 0x674A0014, NULL, 0x99);
    mp_fx_enc_marker(in, MP_FX_IncrSyncMessage);
    mp_fx_enc_var(in, 0x1000001F, NULL, (const uint8_t *)"a\0b\0\0\0", 6);
}

static uint32_t u32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_change_sizes(void)
{
    struct mp_fx_enc in, e;
    change_with_size(&in, 5000, 4000);
    CHECK(!in.err);
    /* PidTagMessageSize's value: the progress (marker, two values: 18
     * bytes), IncrSyncChg, PidTagSourceKey (4 + 4 + 22), its tag */
    size_t at = 18 + 4 + 4 + 4 + 22 + 4;
    CHECK_EQ(u32_at(in.out + at), 4000);
    struct mp_fxrw rw = {.kind = MP_FXRW_CHANGE, .prefix = "[LONGER PREFIX] "};
    CHECK_EQ(rewrite(in.out, in.len, &rw, &e), 0);
    int64_t d = (int64_t)e.len - (int64_t)in.len;
    CHECK(d > 0);
    CHECK_EQ(u32_at(e.out + 8), (uint32_t)(5000 + d));
    CHECK_EQ(u32_at(e.out + at), (uint32_t)(4000 + d));
    mp_fx_enc_free(&e);
    /* near the largest unsigned 32-bit value (MS-OXCMSG 2.2.1.7: PtypInteger32,
     * unsigned) both clamp */
    mp_fx_enc_free(&in);
    change_with_size(&in, 0xFFFFFFF0u, 0xFFFFFFFFu);
    CHECK_EQ(rewrite(in.out, in.len, &rw, &e), 0);
    CHECK_EQ(u32_at(e.out + 8), 0xFFFFFFFFu);
    CHECK_EQ(u32_at(e.out + at), 0xFFFFFFFFu);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&in);
    /* a body set shorter than before below a size of 1: 0, not wrapped */
    change_with_size(&in, 1, 1);
    uint8_t v[8];
    struct mp_fxrw_set set = {0x1000001F, NULL, v, 0};
    utf16("", v, &set.n);
    struct mp_fxrw rs = {.kind = MP_FXRW_CHANGE, .sets = &set, .nsets = 1};
    CHECK_EQ(rewrite(in.out, in.len, &rs, &e), 0);
    CHECK(e.len < in.len);
    CHECK_EQ(u32_at(e.out + 8), 0u);
    CHECK_EQ(u32_at(e.out + at), 0u);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&in);
    /* PidTagMessageSizeExtended: 64 bits, past 32 */
    change_sized(&in, 5000, 0x0E080014, 0xFFFFFFF0ull);
    CHECK_EQ(rewrite(in.out, in.len, &rw, &e), 0);
    d = (int64_t)e.len - (int64_t)in.len;
    uint64_t v64 = (uint64_t)u32_at(e.out + at) | (uint64_t)u32_at(e.out + at + 4) << 32;
    CHECK_EQ(v64, 0xFFFFFFF0ull + (uint64_t)d);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&in);
}

/* A messageChangePartial held in a download queue (fxasm with
 * mp_fxasm_hold): its span starts at IncrSyncChgPartial; blocked, it
 * becomes a messageChangeFull with the notice (same PidTagMid, no longer
 * partial, groupInfo and the state around it as they were); modified, its
 * subject (in a changed group) is prefixed in place, nothing is added and it
 * stays partial. */
struct spans {
    struct mp_fx_span sp[4];
    int n, partial;
    char subject[160];
    uint64_t mid;
};

static void span_done(void *arg, const struct mp_msg_event *ev)
{
    struct spans *s = arg;
    if (ev->fx_span.held && s->n < 4)
        s->sp[s->n++] = ev->fx_span;
    s->partial += ev->partial;
    str_of(&ev->msg->props, 0x0037, s->subject, sizeof s->subject);
    s->mid = ev->message_id;
}

/* An assembler with a hold queue, as a session's context runs them. */
struct held {
    struct spans s;
    struct mp_asm_ops ops;
    struct mp_asm *a;
    struct mp_fxasm *f;
    struct mp_fxq q;
};

static void held_init(struct held *h, enum mp_msg_dir dir, enum mp_msg_mode mode)
{
    memset(h, 0, sizeof *h);
    h->ops = (struct mp_asm_ops){span_done, on_log, &h->s};
    h->a = mp_asm_new(&LIM, &h->ops);
    h->f = mp_fxasm_new(h->a, dir, mode, 1, 0, false);
    mp_fxasm_hold(h->f, &h->q, 1, 2);
}

static void held_free(struct held *h)
{
    mp_fxq_free(&h->q);
    mp_fxasm_free(h->f);
    mp_asm_free(h->a);
}

/* The stream's messages read again (h->s). */
static int reread(struct held *h, const uint8_t *b, size_t n)
{
    held_init(h, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD);
    return mp_fxasm_feed(h->f, b, n, "t") | mp_fxasm_finish(h->f, "t");
}

/* The stream through a held download context (nspans held messages),
 * then rw applied to the first with mp_fxq_replace_message, as
 * mp_asm_replace does; given: bytes handed to the client before the
 * verdict.  The bytes the client would get in *out, the span in *first. */
static int held_apply(const uint8_t *b, size_t n, int nspans, const struct mp_fxrw *rw,
                      size_t given, struct mp_buf *out, struct mp_fx_span *first)
{
    struct held h;
    held_init(&h, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD);
    struct mp_fxq *q = &h.q;
    int rc = -1;
    uint8_t *t = malloc(n * 2 + 64);
    if (!t || mp_fxq_append(q, b, n) || mp_fxasm_feed(h.f, b, n, "t") ||
        mp_fxasm_finish(h.f, "t") || h.s.n != nspans)
        goto out;
    *first = h.s.sp[0];
    size_t k = given ? mp_fxq_take(q, given, t) : 0;
    size_t idx;
    const uint8_t *in = mp_fxq_region(q, first->up_start, first->up_end, &idx);
    struct mp_fx_enc e;
    mp_fx_enc_init(&e);
    if (in && !mp_fxrw_message(in, (size_t)(first->up_end - first->up_start), rw, &e) &&
        !mp_fxq_replace_message(q, first->up_start, first->up_end, e.out, e.len)) {
        size_t rest = mp_fxq_len(q);
        if (mp_fxq_take(q, rest, t + k) == rest && !mp_buf_append(out, t, k + rest))
            rc = 0;
    }
    mp_fx_enc_free(&e);
out:
    free(t);
    held_free(&h);
    return rc;
}

/* A messageChangePartial held in a download queue: its span starts at
 * IncrSyncChgPartial (no IncrSyncProgressPerMsg before its groupInfo). */
static int held_partial(const uint8_t *b, size_t n, const struct mp_fxrw *rw, struct mp_buf *out)
{
    struct mp_fx_span sp;
    int rc = held_apply(b, n, 1, rw, 0, out, &sp);
    CHECK(rc || (sp.kind == MP_FXRW_PARTIAL && sp.up_start + 4 <= n &&
                 !memcmp(b + sp.up_start, "\x03\x00\x7d\x40", 4))); /* IncrSyncChgPartial */
    return rc;
}

static void test_partial(void)
{
    size_t n;
    uint8_t *b = sample("partial.fxs", &n);
    if (!b)
        return;
    static const uint8_t notice[] = {0x1F, 0x00, 0x37, 0x00, 12,  0, 0, 0, '[', 0,
                                     'B',  0,    ']',  0,    'x', 0, 0, 0, 0,   0};
    struct mp_fxrw blk = {.kind = MP_FXRW_PARTIAL, .block = notice, .block_len = sizeof notice};
    struct mp_buf out = {0};
    CHECK_EQ(held_partial(b, n, &blk, &out), 0);
    /* read again: a full change now, the same message id */
    struct held h;
    CHECK_EQ(reread(&h, out.data, out.len), 0);
    CHECK_EQ(h.s.partial, 0);
    CHECK(!strcmp(h.s.subject, "[B]x"));
    CHECK_EQ(h.s.mid, 0x0001000000000003ull);
    held_free(&h);
    /* the groupInfo and group id in front, the state after: the sample's */
    CHECK(out.len > 40 && !memcmp(out.data, b, 40));
    CHECK(!memcmp(out.data + out.len - 8, b + n - 8, 8));
    out.len = 0;
    /* prefix + a set of a property the change does not carry: only the
     * subject changes, in place; still partial */
    uint8_t v[16];
    struct mp_fxrw_set set = {0x1000001F, NULL, v, 0};
    utf16("b", v, &set.n);
    struct mp_fxrw mod = {.kind = MP_FXRW_PARTIAL, .prefix = "[P] ", .sets = &set, .nsets = 1};
    CHECK_EQ(held_partial(b, n, &mod, &out), 0);
    CHECK_EQ(out.len, n + 8); /* "[P] " in UTF-16 */
    CHECK_EQ(reread(&h, out.data, out.len), 0);
    CHECK_EQ(h.s.partial, 1);
    CHECK(!strcmp(h.s.subject, "[P] changed subject"));
    held_free(&h);
    mp_buf_free(&out);
    free(b);
}

/* Buffers that end inside a tag (every split of folder.fxs in 5-byte
 * pieces, the released bytes taken after each as the relay does): each
 * held message is in the queue whole when it completes, its StartMessage
 * included (the tag's first bytes were held too). */
static void test_split_tags(void)
{
    size_t n;
    uint8_t *b = sample("folder.fxs", &n);
    if (!b)
        return;
    for (size_t piece = 1; piece <= 7; piece++) {
        struct held h;
        held_init(&h, MP_MSG_UPLOAD, MP_MSG_ICS_UPLOAD);
        struct spans *s = &h.s;
        struct mp_fxq *q = &h.q;
        uint8_t *t = malloc(n);
        size_t got = 0, found = 0;
        for (size_t off = 0; t && off < n; off += piece) {
            size_t k = n - off < piece ? n - off : piece;
            CHECK_EQ(mp_fxq_append(q, b + off, k), 0);
            s->n = 0;
            CHECK_EQ(mp_fxasm_feed(h.f, b + off, k, "t"), 0);
            for (int i = 0; i < s->n; i++) {
                size_t idx;
                const uint8_t *r = mp_fxq_region(q, s->sp[i].up_start, s->sp[i].up_end, &idx);
                found += r != NULL; /* its first marker in the queue too */
                if (r)              /* StartMessage or StartFAIMsg */
                    CHECK(!memcmp(r, "\x03\x00\x0c\x40", 4) || !memcmp(r, "\x03\x00\x10\x40", 4));
            }
            got += mp_fxq_take(q, mp_fxq_releasable(q), t + got);
        }
        CHECK_EQ(mp_fxasm_finish(h.f, "t"), 0);
        got += t ? mp_fxq_take(q, mp_fxq_releasable(q), t + got) : 0;
        CHECK(got == n && t && !memcmp(t, b, n));
        CHECK_EQ(found, 2u); /* the normal message and the FAI one */
        free(t);
        held_free(&h);
    }
    free(b);
}

/* The rewritten IncrSyncProgressPerMsg size is a 32-bit value: a change
 * that grows past 4 GiB - 1 is clamped there, never wrapped to a small
 * number. */
static void test_progress_clamp(void)
{
    struct mp_fx_enc in, e;
    mp_fx_enc_init(&in);
    uint8_t sv[64], sk[22] = {1};
    uint32_t sn;
    mp_fx_enc_marker(&in, MP_FX_IncrSyncProgressPerMsg);
    mp_fx_enc_fixed(&in, 0x00000003, NULL, 0xFFFFFFF8u);
    mp_fx_enc_fixed(&in, 0x0000000B, NULL, 0);
    mp_fx_enc_marker(&in, MP_FX_IncrSyncChg);
    mp_fx_enc_var(&in, 0x65E00102, NULL, sk, sizeof sk);
    mp_fx_enc_fixed(&in, 0x674A0014, NULL, 0x99);
    mp_fx_enc_marker(&in, MP_FX_IncrSyncMessage);
    utf16("hello", sv, &sn);
    mp_fx_enc_var(&in, 0x0037001F, NULL, sv, sn);
    CHECK(!in.err);
    struct mp_fxrw rw = {.kind = MP_FXRW_CHANGE, .prefix = "[a long prefix] "};
    CHECK_EQ(rewrite(in.out, in.len, &rw, &e), 0);
    CHECK(e.len > in.len + 8);
    uint32_t size = (uint32_t)e.out[8] | (uint32_t)e.out[9] << 8 | (uint32_t)e.out[10] << 16 |
                    (uint32_t)e.out[11] << 24;
    CHECK_EQ(size, 0xFFFFFFFFu);
    mp_fx_enc_free(&e);
    mp_fx_enc_free(&in);
}

/* The id a stream's own named property gets: the highest of 0x8000-0xFFFE
 * neither the message nor an earlier set uses. */
static void test_free_named_id(void)
{
    struct mp_message *m = mp_msg_new();
    CHECK(m != NULL);
    CHECK_EQ(mp_msgfx_free_named_id(m, NULL, 0), 0xFFFE);
    CHECK_EQ(mp_msgfx_free_named_id(NULL, NULL, 0), 0xFFFE);
    for (uint32_t id = 0x8000; id <= 0xFFFE; id++)
        if (id != 0x8123 && id != 0x8040)
            CHECK(!mp_props_set_u(&m->props, id << 16 | 0x0003, 1));
    struct mp_msgev_set set = {.id = 0x8123};
    CHECK_EQ(mp_msgfx_free_named_id(m, &set, 1), 0x8040);
    CHECK_EQ(mp_msgfx_free_named_id(m, NULL, 0), 0x8123);
    CHECK(!mp_props_set_u(&m->props, 0x8040u << 16 | 0x0003, 1));
    CHECK_EQ(mp_msgfx_free_named_id(m, &set, 1), -1);
    mp_msg_free(m);
}

/* progress_partial.fxs: the progressTotal (NormalMessageCount 2,
 * NormalMessageTotalSize 1300), IncrSyncProgressPerMsg 1000 + groupInfo +
 * MetaTagIncrSyncGroupId + a messageChangePartial, IncrSyncProgressPerMsg
 * 300 + a messageChangeFull, the state.  Offsets of the ProgressInformation
 * (MS-OXCFXICS 2.2.2.7) after the marker, tag and length: 12. */
enum { PI = 12, PI_FAI_SIZE = PI + 8, PI_NORMAL_SIZE = PI + 24 };

static uint64_t u64_at(const uint8_t *p)
{
    return (uint64_t)u32_at(p) | (uint64_t)u32_at(p + 4) << 32;
}

/* The per-message progress size of a messageChangePartial follows its
 * verdict (its IncrSyncProgressPerMsg comes before the groupInfo: held with
 * the change), and so does the progressTotal while the client has not been
 * given it; FAI changes go to FAIMessageTotalSize. */
static void test_progress_total(void)
{
    size_t n;
    uint8_t *b = sample("progress_partial.fxs", &n);
    if (!b)
        return;
    CHECK_EQ(u64_at(b + PI_NORMAL_SIZE), 1300);
    static const uint8_t notice[] = {0x1F, 0x00, 0x37, 0x00, 12,  0, 0, 0, '[', 0,
                                     'B',  0,    ']',  0,    'x', 0, 0, 0, 0,   0};
    struct mp_fxrw blk = {.kind = MP_FXRW_PARTIAL, .block = notice, .block_len = sizeof notice};
    struct mp_buf out = {0};
    struct mp_fx_span sp;
    CHECK_EQ(held_apply(b, n, 2, &blk, 0, &out, &sp), 0);
    /* the span starts at the IncrSyncProgressPerMsg, 44 bytes in */
    CHECK_EQ(sp.kind, MP_FXRW_PARTIAL);
    CHECK_EQ(sp.up_start, 44);
    CHECK(!memcmp(b + 44, "\x0b\x00\x75\x40\x03\x00\x00\x00", 8));
    int64_t d = (int64_t)out.len - (int64_t)n;
    CHECK(d < 0);
    CHECK_EQ(u32_at(out.data + 44 + 8), (uint32_t)(1000 + d)); /* per-message size */
    CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), (uint64_t)(1300 + d));
    CHECK_EQ(u64_at(out.data + PI_FAI_SIZE), 0);
    CHECK(!memcmp(out.data, b, PI_NORMAL_SIZE)); /* the rest of it the server's */
    /* the groupInfo and group id after the IncrSyncProgressPerMsg, the full
     * change and the state after it: the server's */
    CHECK(!memcmp(out.data + 44, b + 44, 8) && !memcmp(out.data + 56, b + 56, 6 + 4 + 4 + 20));
    CHECK(!memcmp(out.data + out.len - 300, b + n - 300, 300));
    struct held h;
    CHECK_EQ(reread(&h, out.data, out.len), 0); /* a full change now */
    CHECK_EQ(h.s.partial, 0);
    CHECK(!strcmp(h.s.subject, "Forwarded inside"));
    held_free(&h);
    /* the progressTotal given to the client before the verdict: as it was;
     * the per-message size still follows */
    out.len = 0;
    CHECK_EQ(held_apply(b, n, 2, &blk, 44, &out, &sp), 0);
    CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), 1300);
    CHECK_EQ(u32_at(out.data + 44 + 8), (uint32_t)(1000 + ((int64_t)out.len - (int64_t)n)));
    /* the bytes before the ProgressInformation given: it still follows;
     * its first byte given too: not any more */
    out.len = 0;
    CHECK_EQ(held_apply(b, n, 2, &blk, PI, &out, &sp), 0);
    CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), (uint64_t)(1300 + d));
    out.len = 0;
    CHECK_EQ(held_apply(b, n, 2, &blk, PI + 1, &out, &sp), 0);
    CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), 1300);
    /* an FAI message (its IncrSyncProgressPerMsg says so), prefixed: its
     * growth goes to FAIMessageTotalSize */
    uint8_t *f = malloc(n);
    if (f) {
        memcpy(f, b, n);
        CHECK_EQ(u32_at(f + 56), 0x0000000Bu); /* the FAI flag's tag */
        f[60] = 1;
        struct mp_fxrw pre = {.kind = MP_FXRW_PARTIAL, .prefix = "[P] "};
        out.len = 0;
        CHECK_EQ(held_apply(f, n, 2, &pre, 0, &out, &sp), 0);
        CHECK_EQ(out.len, n + 8);
        CHECK_EQ(u64_at(out.data + PI_FAI_SIZE), 8);
        CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), 1300);
        CHECK_EQ(u32_at(out.data + 44 + 8), 1008);
        free(f);
    }
    mp_buf_free(&out);
    free(b);
}

/* progress_fai.fxs: the progressTotal (1 FAI message of 400 bytes, 1
 * normal of 300), an FAI messageChangeFull and a normal one, neither with an
 * IncrSyncProgressPerMsg: the header's PidTagAssociated (0x67AA000B) says
 * which total a verdict's change of length goes to. */
static void test_progress_associated(void)
{
    size_t n;
    uint8_t *b = sample("progress_fai.fxs", &n);
    if (!b)
        return;
    CHECK_EQ(u64_at(b + PI_FAI_SIZE), 400);
    CHECK_EQ(u64_at(b + PI_NORMAL_SIZE), 300);
    CHECK(!memcmp(b + 44, "\x03\x00\x12\x40", 4)); /* IncrSyncChg, no per-message entry */
    struct mp_fxrw pre = {.kind = MP_FXRW_CHANGE, .prefix = "[P] "};
    struct mp_buf out = {0};
    struct mp_fx_span sp;
    /* the FAI change (PidTagAssociated true): FAIMessageTotalSize */
    CHECK_EQ(held_apply(b, n, 2, &pre, 0, &out, &sp), 0);
    CHECK_EQ(sp.up_start, 44);
    CHECK_EQ(out.len, n + 8);
    CHECK_EQ(u64_at(out.data + PI_FAI_SIZE), 408);
    CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), 300);
    /* the normal change alone after the progressTotal (PidTagAssociated
     * false): NormalMessageTotalSize */
    size_t second = 0;
    for (size_t i = 48; i + 4 <= n && !second; i++)
        if (!memcmp(b + i, "\x03\x00\x12\x40", 4))
            second = i;
    CHECK(second > 44);
    uint8_t *m = malloc(n);
    if (m && second) {
        memcpy(m, b, 44);
        memcpy(m + 44, b + second, n - second);
        size_t mn = 44 + n - second;
        out.len = 0;
        CHECK_EQ(held_apply(m, mn, 1, &pre, 0, &out, &sp), 0);
        CHECK_EQ(out.len, mn + 8);
        CHECK_EQ(u64_at(out.data + PI_FAI_SIZE), 400);
        CHECK_EQ(u64_at(out.data + PI_NORMAL_SIZE), 308);
    }
    free(m);
    mp_buf_free(&out);
    free(b);
}

int main(void)
{
    test_progress_clamp();
    test_free_named_id();
    test_queue();
    test_bare();
    test_message_list();
    test_change();
    test_change_sizes();
    test_partial();
    test_progress_total();
    test_progress_associated();
    test_split_tags();
    TEST_DONE();
}
