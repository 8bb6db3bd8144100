/* Unit tests for the FastTransfer stream codec (src/fx/fxstream.c).
 * Samples: tests/unit/data/fx (written by the lab's independent Python writer,
 * see make_samples.py there), and exchange-hierarchy.fxs: a hierarchy
 * synchronization stream an Exchange server sent in June 2015, as printed in
 * the header of OpenChange's script/fxdump.py together with OpenChange's own
 * decoding of it (see exchange_hierarchy below).  Every sample is decoded whole, at every split
 * point in two pieces, byte by byte, and with coalescing, and re-encoded
 * byte for byte. */
#include "core/slurp.h"
#include "fx/fxstream.h"
#include "testlib.h"

#include <stdint.h>

struct tally {
    struct mp_fx_enc enc;
    int markers, props, values, change_end, begins, ends, named;
    uint32_t last_tag;
    int maxdepth;
    char subject[64];
    size_t subject_len;
    uint32_t lid;
    size_t biggest_data; /* largest single DATA event */
};

static int on_ev(void *ud, const struct mp_fx_event *ev)
{
    struct tally *t = ud;
    mp_fx_enc_event(&t->enc, ev);
    switch (ev->kind) {
    case MP_FX_EV_MARKER:
        t->markers++;
        t->begins += ev->begin;
        t->ends += ev->end;
        break;
    case MP_FX_EV_PROP:
        t->props++;
        t->last_tag = ev->tag;
        if (ev->named) {
            t->named++;
            if (ev->np->kind == 0)
                t->lid = ev->np->lid;
        }
        break;
    case MP_FX_EV_VALUE:
        t->values++;
        break;
    case MP_FX_EV_DATA:
        if (ev->n > t->biggest_data)
            t->biggest_data = ev->n;
        if (ev->tag == 0x0037001F && t->subject_len + ev->n <= sizeof t->subject) {
            memcpy(t->subject + t->subject_len, ev->p, ev->n);
            t->subject_len += ev->n;
        }
        break;
    case MP_FX_EV_CHANGE_END:
        t->change_end++;
        break;
    default:
        break;
    }
    if (ev->depth > t->maxdepth)
        t->maxdepth = ev->depth;
    return 0;
}

/* Decode b in pieces cut at `cuts` (ascending, ncuts of them); 0 when all is
 * well and the re-encoding equals b. */
static int run(const uint8_t *b, size_t n, const size_t *cuts, int ncuts, uint32_t coalesce,
               struct tally *t)
{
    memset(t, 0, sizeof *t);
    mp_fx_enc_init(&t->enc);
    struct mp_fx_parser *p = mp_fx_parser_new(on_ev, t);
    mp_fx_parser_set_coalesce(p, coalesce);
    size_t at = 0;
    int r = 0;
    for (int i = 0; i <= ncuts && !r; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        r = mp_fx_feed(p, b + at, end - at);
        at = end;
    }
    if (!r)
        r = mp_fx_finish(p);
    if (r)
        fprintf(stderr, "decode: %s\n", mp_fx_error(p) ? mp_fx_error(p) : "?");
    mp_fx_parser_free(p);
    if (!r && (t->enc.err || t->enc.len != n || memcmp(t->enc.out, b, n)))
        r = 99;
    mp_fx_enc_free(&t->enc);
    return r;
}

static void sample(const char *name, int want_begins, int want_change_end)
{
    char path[256];
    snprintf(path, sizeof path, "data/fx/%s", name);
    size_t n;
    uint8_t *b = mp_slurp(path, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    struct tally t, t2;
    CHECK_EQ(run(b, n, NULL, 0, 0, &t), 0);
    CHECK_EQ(t.begins, want_begins);
    CHECK_EQ(t.ends, want_begins);
    CHECK_EQ(t.change_end, want_change_end);
    int bad = 0;
    for (size_t i = 1; i < n; i++) { /* every split point */
        size_t cut = i;
        if (run(b, n, &cut, 1, 0, &t2) || t2.props != t.props || t2.values != t.values ||
            t2.markers != t.markers)
            bad++;
    }
    CHECK_EQ(bad, 0);
    /* byte by byte */
    size_t *cuts = malloc(n * sizeof *cuts);
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    CHECK_EQ(run(b, n, cuts, (int)n - 1, 0, &t2), 0);
    CHECK_EQ(t2.props, t.props);
    CHECK(t2.biggest_data <= 16); /* nothing gathered: memory stays bounded */
    /* byte by byte, values up to 64 KiB whole */
    CHECK_EQ(run(b, n, cuts, (int)n - 1, 65536, &t2), 0);
    CHECK_EQ(t2.values, t.values);
    free(cuts);
    free(b);
}

static int feed_all(const uint8_t *b, size_t n, struct tally *t)
{
    return run(b, n, NULL, 0, 0, t);
}

static int ranges_seen;
static uint64_t rlo[16], rhi[16];
static int on_range(void *ud, const uint8_t *repl, size_t rl, uint64_t lo, uint64_t hi)
{
    if (ranges_seen < 16) {
        rlo[ranges_seen] = lo;
        rhi[ranges_seen] = hi;
    }
    ranges_seen++;
    return 0;
}

static void idsets(void)
{
    /* REPLID 1; push 5 common bytes; bitmask start 0x10 mask 0b10110001:
     * 0x10, 0x11 (bit0), 0x15-0x16 (bits 4,5), 0x18 (bit 7); pop; range
     * 0x100-0x1ff after push of 4; pop; a singleton by a 6-byte push; end. */
    static const uint8_t s[] = {0x01, 0x00, 0x05, 0, 0, 0, 0,    0,    0x42, 0x10, 0xB1,
                                0x50, 0x04, 0,    0, 0, 0, 0x52, 0x01, 0x00, 0x01, 0xFF,
                                0x50, 0x06, 0,    0, 0, 0, 0,    0x30, 0x00};
    ranges_seen = 0;
    CHECK_EQ(mp_fx_idset_decode(s, sizeof s, false, on_range, NULL), 0);
    CHECK_EQ(ranges_seen, 5);
    CHECK(rlo[0] == 0x10 && rhi[0] == 0x11);
    CHECK(rlo[1] == 0x15 && rhi[1] == 0x16);
    CHECK(rlo[2] == 0x18 && rhi[2] == 0x18);
    CHECK(rlo[3] == 0x100 && rhi[3] == 0x1ff);
    CHECK(rlo[4] == 0x30 && rhi[4] == 0x30);
    /* truncated, missing End, bad command, range low > high, push overflow,
     * bitmask with 4 bytes on the stack, pop of an empty stack */
    CHECK_EQ(mp_fx_idset_decode(s, sizeof s - 1, false, NULL, NULL), -1);
    static const uint8_t bad1[] = {0x01, 0x00, 0x77, 0x00};
    static const uint8_t bad2[] = {0x01, 0x00, 0x52, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0};
    static const uint8_t bad3[] = {0x01, 0x00, 0x05, 0, 0, 0, 0, 0, 0x02, 1, 1, 0};
    static const uint8_t bad4[] = {0x01, 0x00, 0x04, 0, 0, 0, 0, 0x42, 1, 1, 0};
    static const uint8_t bad5[] = {0x01, 0x00, 0x50, 0};
    CHECK_EQ(mp_fx_idset_decode(bad1, sizeof bad1, false, NULL, NULL), -1);
    CHECK_EQ(mp_fx_idset_decode(bad2, sizeof bad2, false, NULL, NULL), -1);
    CHECK_EQ(mp_fx_idset_decode(bad3, sizeof bad3, false, NULL, NULL), -1);
    CHECK_EQ(mp_fx_idset_decode(bad4, sizeof bad4, false, NULL, NULL), -1);
    CHECK_EQ(mp_fx_idset_decode(bad5, sizeof bad5, false, NULL, NULL), -1);
    CHECK_EQ(mp_fx_idset_decode(NULL, 0, true, NULL, NULL), 0);
}

static void malformed(void)
{
    struct tally t;
    /* unknown type 0x0099 */
    static const uint8_t a[] = {0x99, 0x00, 0x01, 0x66, 0, 0, 0, 0};
    CHECK_EQ(feed_all(a, sizeof a, &t), MP_FX_ERR);
    /* EndMessage with nothing open */
    static const uint8_t b[] = {0x03, 0x00, 0x0D, 0x40};
    CHECK_EQ(feed_all(b, sizeof b, &t), MP_FX_ERR);
    /* StartMessage then EndAttach */
    static const uint8_t c[] = {0x03, 0x00, 0x0C, 0x40, 0x03, 0x00, 0x0E, 0x40};
    CHECK_EQ(feed_all(c, sizeof c, &t), MP_FX_ERR);
    /* StartMessage left open */
    CHECK_EQ(feed_all(c, 4, &t), MP_FX_ERR);
    /* truncated value: binary of 10 bytes, 3 given */
    static const uint8_t d[] = {0x02, 0x01, 0xF9, 0x0F, 10, 0, 0, 0, 1, 2, 3};
    CHECK_EQ(feed_all(d, sizeof d, &t), MP_FX_ERR);
    /* named property with kind 2 */
    uint8_t e[4 + 16 + 1 + 4] = {0x03, 0x00, 0x00, 0x80};
    e[20] = 2;
    CHECK_EQ(feed_all(e, sizeof e, &t), MP_FX_ERR);
    /* named property, LID: fine */
    e[20] = 0;
    e[21] = 0x01;
    e[22] = 0x85;
    uint8_t e2[sizeof e + 4] = {0};
    memcpy(e2, e, sizeof e);
    e2[sizeof e] = 7;
    CHECK_EQ(feed_all(e2, sizeof e2, &t), 0);
    CHECK_EQ(t.lid, 0x8501u);
    CHECK_EQ(t.named, 1);
    /* malformed IDSET in MetaTagCnsetSeen */
    static const uint8_t f[] = {0x02, 0x01, 0x96, 0x67, 3, 0, 0, 0, 0x01, 0x00, 0x77};
    CHECK_EQ(feed_all(f, sizeof f, &t), MP_FX_ERR);
    /* multi-valued Boolean: not a FastTransfer type */
    static const uint8_t g[] = {0x0B, 0x10, 0x01, 0x66, 0, 0, 0, 0};
    CHECK_EQ(feed_all(g, sizeof g, &t), MP_FX_ERR);
    /* nesting deeper than MP_FX_MAX_DEPTH */
    uint8_t deep[4 * (MP_FX_MAX_DEPTH + 1)];
    for (int i = 0; i <= MP_FX_MAX_DEPTH; i++)
        memcpy(deep + 4 * i, "\x03\x00\x01\x40", 4);
    CHECK_EQ(feed_all(deep, sizeof deep, &t), MP_FX_ERR);
    /* name without terminator running past MP_FX_NAME_MAX */
    size_t hn = 4 + 16 + 1 + MP_FX_NAME_MAX + 8;
    uint8_t *h = calloc(1, hn);
    memcpy(h, "\x1f\x00\x00\x80", 4);
    h[20] = 1;
    memset(h + 21, 'A', hn - 21);
    CHECK_EQ(feed_all(h, hn, &t), MP_FX_ERR);
    free(h);
}

static void content_checks(void)
{
    size_t n;
    uint8_t *b = mp_slurp("data/fx/message.fxs", &n);
    struct tally t;
    CHECK_EQ(feed_all(b, n, &t), 0);
    /* "Quarterly report" in UTF-16LE, then e-acute and a CJK character, then 00 00 */
    CHECK(t.subject_len == 2 * 19 + 2 && t.subject[0] == 'Q' && t.subject[1] == 0);
    CHECK_EQ(t.maxdepth, 4); /* message > attachment > embedded message > recipient */
    CHECK_EQ(t.named, 3);
    free(b);
    /* the encoder's builders agree with the Python writer on a small stream */
    struct mp_fx_enc e;
    mp_fx_enc_init(&e);
    mp_fx_enc_marker(&e, MP_FX_StartMessage);
    mp_fx_enc_fixed(&e, 0x0E070003, NULL, 0x11);
    mp_fx_enc_fixed(&e, 0x0E1B000B, NULL, 1);
    struct mp_fx_named np = {.kind = 1, .name = (const uint8_t *)"x\0", .name_len = 2};
    mp_fx_enc_var(&e, 0x8000001F, &np, (const uint8_t *)"a\0\0\0", 4);
    mp_fx_enc_marker(&e, MP_FX_EndMessage);
    static const uint8_t want[] = {
        0x03, 0x00, 0x0C, 0x40, 0x03, 0x00, 0x07, 0x0E, 0x11, 0,    0,    0,    0x0B, 0x00,
        0x1B, 0x0E, 0x01, 0x00, 0x1F, 0x00, 0x00, 0x80, 0,    0,    0,    0,    0,    0,
        0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x01, 'x',  0,    0,
        0,    4,    0,    0,    0,    'a',  0,    0,    0,    0x03, 0x00, 0x0D, 0x40};
    CHECK_EQ(e.err, 0);
    CHECK_EQ(e.len, sizeof want);
    CHECK(e.len == sizeof want && !memcmp(e.out, want, sizeof want));
    mp_fx_enc_free(&e);
    CHECK(mp_fx_enc_var(&e, 0x00030003, NULL, NULL, 0) != 0); /* not a variable type */
    mp_fx_enc_free(&e);
    CHECK(mp_fx_is_marker(MP_FX_IncrSyncGroupInfo));
    CHECK(!mp_fx_is_marker(MP_FX_MetaTagIdsetGiven));
    CHECK(strcmp(mp_fx_marker_name(MP_FX_IncrSyncChg), "IncrSyncChg") == 0);
}

/* exchange-hierarchy.fxs: what OpenChange's fxparser printed for it (the
 * comment in openchange script/fxdump.py): two IncrSyncChg folder changes,
 * "Outbox" and "Sent" (source keys ending in GLOBCNT 0x3F6 and 0x3F7), then
 * the state: MetaTagCnsetSeen (28 bytes) and MetaTagIdsetGiven with four
 * GLOBCNT ranges, which OpenChange prints byte-reversed as
 * [0xf50300000000:0xff0300000000] [0x010400000000:0x120400000000]
 * [0x220400000000:0x930400000000] [0x020401000000:0x050401000000], that is
 * 0x3F5-0x3FF, 0x401-0x412, 0x422-0x493 and 0x10402-0x10405. */
struct exch {
    int chg, state_begin, state_end, end;
    char names[2][16];
    int nnames;
    uint8_t idset[128], cnset[64];
    size_t idset_len, cnset_len;
    uint16_t idset_type;
};

static int on_exch(void *ud, const struct mp_fx_event *ev)
{
    struct exch *x = ud;
    if (ev->kind == MP_FX_EV_MARKER) {
        x->chg += ev->tag == MP_FX_IncrSyncChg;
        x->state_begin += ev->tag == 0x403A0003;
        x->state_end += ev->tag == 0x403B0003;
        x->end += ev->tag == MP_FX_IncrSyncEnd;
    } else if (ev->kind == MP_FX_EV_PROP && ev->tag == MP_FX_MetaTagIdsetGiven) {
        x->idset_type = ev->type;
    } else if (ev->kind == MP_FX_EV_DATA && ev->tag == 0x3001001F && x->nnames < 2) {
        /* PidTagDisplayName, UTF-16LE: keep the ASCII */
        char *o = x->names[x->nnames];
        size_t k = strlen(o);
        for (size_t i = 0; i + 1 < ev->n && k + 1 < sizeof x->names[0]; i += 2)
            if (ev->p[i])
                o[k++] = (char)ev->p[i];
        o[k] = 0;
    } else if (ev->kind == MP_FX_EV_PROP_END && ev->tag == 0x3001001F) {
        x->nnames++;
    } else if (ev->kind == MP_FX_EV_DATA && ev->tag == MP_FX_MetaTagIdsetGiven &&
               x->idset_len + ev->n <= sizeof x->idset) {
        memcpy(x->idset + x->idset_len, ev->p, ev->n);
        x->idset_len += ev->n;
    } else if (ev->kind == MP_FX_EV_DATA && ev->tag == 0x67960102 &&
               x->cnset_len + ev->n <= sizeof x->cnset) {
        memcpy(x->cnset + x->cnset_len, ev->p, ev->n);
        x->cnset_len += ev->n;
    }
    return 0;
}

static void exchange_hierarchy(void)
{
    /* every split, byte-exact re-encoding; the decoder reports the end of
     * each IncrSyncChg (it cannot tell a folderChange from a message change:
     * the assembler does, src/content/fxasm.c) */
    sample("exchange-hierarchy.fxs", 1, 2);
    size_t n;
    uint8_t *b = mp_slurp("data/fx/exchange-hierarchy.fxs", &n);
    CHECK(b != NULL && n == 0x269);
    if (!b)
        return;
    struct exch x = {0};
    struct mp_fx_parser *p = mp_fx_parser_new(on_exch, &x);
    CHECK_EQ(mp_fx_feed(p, b, n), 0);
    CHECK_EQ(mp_fx_finish(p), 0);
    mp_fx_parser_free(p);
    CHECK_EQ(x.chg, 2);
    CHECK_EQ(x.state_begin, 1);
    CHECK_EQ(x.state_end, 1);
    CHECK_EQ(x.end, 1);
    CHECK_EQ(x.nnames, 2);
    CHECK(!strcmp(x.names[0], "Outbox") && !strcmp(x.names[1], "Sent"));
    /* Exchange writes MetaTagIdsetGiven as 0x40170003 (PtypInteger32) with a
     * length, as a binary (MS-OXCFXICS 2.2.1.1.1) */
    CHECK_EQ(x.idset_len, 0x39u);
    CHECK_EQ(x.cnset_len, 28u);
    ranges_seen = 0;
    CHECK_EQ(mp_fx_idset_decode(x.idset, x.idset_len, true, on_range, NULL), 0);
    CHECK_EQ(ranges_seen, 4);
    static const uint64_t lo[4] = {0x3F5, 0x401, 0x422, 0x10402};
    static const uint64_t hi[4] = {0x3FF, 0x412, 0x493, 0x10405};
    for (int i = 0; i < 4 && i < ranges_seen; i++)
        CHECK(rlo[i] == lo[i] && rhi[i] == hi[i]);
    /* the two folders' GLOBCNTs (their source keys' last 6 bytes) are given */
    CHECK(rlo[0] <= 0x3F6 && 0x3F7 <= rhi[0]);
    ranges_seen = 0;
    CHECK_EQ(mp_fx_idset_decode(x.cnset, x.cnset_len, true, on_range, NULL), 0);
    CHECK_EQ(ranges_seen, 1);
    CHECK(rlo[0] == 0x24 && rhi[0] == 0x131);
    free(b);
}

int main(void)
{
    sample("message.fxs", 7,
           0); /* message, 2 recipients, 2 attachments, embedded + its recipient */
    sample("content.fxs", 6, 0);
    sample("types.fxs", 0, 0);
    sample("ics.fxs", 8, 2);
    sample("partial.fxs", 2, 1);
    sample("folder.fxs", 10, 0);
    sample("errinfo.fxs", 0, 0);
    idsets();
    malformed();
    content_checks();
    exchange_hierarchy();
    TEST_DONE();
}
