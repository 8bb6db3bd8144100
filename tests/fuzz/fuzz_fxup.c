/* libFuzzer target for held FastTransfer uploads (doc/internals/content.md,
 * "Holding uploads"): the assembler of src/content/fxasm.c with a hold
 * queue (src/content/fxhold.c), as a session's upload context runs them.
 *   make fuzz SECONDS=N   (corpus: tests/fuzz/corpus/fxup)
 * The first byte picks the PutBuffer size (1..256 bytes, or 7000) and a
 * verdict for every held message (none, block: cut out, prefix + attachment
 * 0 replaced); the rest is the upload stream.  Each piece is appended to the
 * queue and fed; after it, the verdicts of the messages it completed are
 * applied in the queue (mp_fxrw_message) and the released bytes taken as
 * the upstream's.  Checks: with no verdict the upstream gets exactly the
 * input's bytes in order (all of them once the stream parsed whole); what a
 * verdict wrote decodes again; the queue never holds more than the input
 * and what the verdicts added. */
#include "content/assemble.h"
#include "content/fxhold.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct st {
    struct mp_fx_span spans[64];
    size_t n;
};

static void on_done(void *arg, const struct mp_msg_event *ev)
{
    struct st *s = arg;
    if (ev->fx_span.held && s->n < 64)
        s->spans[s->n++] = ev->fx_span;
}

static void on_log(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int ignore(void *ud, const struct mp_fx_event *ev)
{
    (void)ud;
    (void)ev;
    return 0;
}

static const struct mp_content_limits LIM = {1 << 16, 1 << 22, NULL, 1 << 20};

static void apply(struct mp_fxq *q, const struct mp_fx_span *sp, unsigned verdict)
{
    size_t idx;
    const uint8_t *in = mp_fxq_region(q, sp->up_start, sp->up_end, &idx);
    if (!in)
        abort(); /* a held message is in the queue whole */
    size_t n = (size_t)(sp->up_end - sp->up_start);
    if (verdict == 1) {
        if (mp_fxq_replace(q, sp->up_start, sp->up_end, NULL, 0))
            abort();
        return;
    }
    struct mp_fxrw_att att = {0, "replaced"};
    struct mp_fxrw rw = {
        .kind = (enum mp_fxrw_kind)sp->kind, .prefix = "[P] ", .atts = &att, .natts = 1};
    struct mp_fx_enc e;
    mp_fx_enc_init(&e);
    if (!mp_fxrw_message(in, n, &rw, &e)) {
        struct mp_fx_parser *p = mp_fx_parser_new(ignore, NULL);
        if (!p || mp_fx_feed(p, e.out, e.len) || mp_fx_finish(p))
            abort();
        mp_fx_parser_free(p);
        if (mp_fxq_replace(q, sp->up_start, sp->up_end, e.out, e.len))
            abort();
    }
    mp_fx_enc_free(&e);
}

/* The released bytes go upstream: with no verdict they must be the
 * client's, in order. */
static void release(struct mp_fxq *q, const uint8_t *data, size_t size, size_t *up,
                    unsigned verdict)
{
    size_t rel = mp_fxq_releasable(q);
    uint8_t *b = malloc(rel ? rel : 1);
    if (!b)
        return;
    size_t k = mp_fxq_take(q, rel, b);
    if (k != rel || (!verdict && (*up + k > size || memcmp(b, data + *up, k))))
        abort();
    *up += k;
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned verdict = data[0] % 3;
    size_t piece = data[0] >= 0xF0 ? 7000 : (size_t)(data[0] & 0x3F) * 4 + 1;
    data++;
    size--;
    struct st s = {0};
    struct mp_asm_ops ops = {on_done, on_log, &s};
    struct mp_asm *a = mp_asm_new(&LIM, &ops);
    struct mp_fxasm *f = a ? mp_fxasm_new(a, MP_MSG_UPLOAD, MP_MSG_ICS_UPLOAD, 1, 0, false) : NULL;
    struct mp_fxq q = {0};
    size_t up = 0;
    if (!f)
        goto out;
    mp_fxasm_hold(f, &q, 1, 2);
    int failed = 0;
    for (size_t off = 0; off < size && !failed; off += piece) {
        size_t k = size - off < piece ? size - off : piece;
        if (mp_fxq_append(&q, data + off, k))
            goto out;
        s.n = 0;
        failed |= mp_fxasm_feed(f, data + off, k, "t");
        for (size_t i = 0; i < s.n && verdict; i++)
            apply(&q, &s.spans[i], verdict);
        release(&q, data, size, &up, verdict);
    }
    s.n = 0;
    if (!failed && !mp_fxasm_finish(f, "t")) {
        for (size_t i = 0; i < s.n && verdict; i++)
            apply(&q, &s.spans[i], verdict);
        release(&q, data, size, &up, verdict);
        if (mp_fxq_len(&q) || (!verdict && up != size))
            abort(); /* a whole stream: all of it went */
    }
out:
    mp_fxq_free(&q);
    mp_fxasm_free(f);
    mp_asm_free(a);
    return 0;
}
