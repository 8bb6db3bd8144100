/* Message assembly from FastTransfer streams (src/content/fxasm.c) over the
 * samples of tests/unit/data/fx (written by the lab's Python writer from
 * MS-OXCFXICS, independently of src/fx): each fed whole, at every split
 * point in two, and byte by byte; the messages that come out, their
 * recipients, attachments (bytes), embedded messages, named properties and
 * change-header ids; partial changes; malformed streams; the size limit and
 * spilling. */
#include "chain/msgevents.h"
#include "content/assemble.h"
#include "fx/fxstream.h"
#include "content/mime.h"
#include "core/slurp.h"
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct got {
    int n, partial, warnings;
    char subject[4][128];
    uint64_t mid[4];
    enum mp_msg_mode mode[4];
    size_t nrcpt[4], natt[4];
    uint8_t rtype[4][4];
    int att0_ok[4]; /* attachment 0 = bytes(range(256)) * 40 */
    int att0_spilled[4];
    int embedded_ok[4]; /* attachment 1's embedded message: subject + 1 recipient */
    int named_lid[4], named_name[4];
    int mime_ok[4];
};

static void utf8_subject(const struct mp_message *m, char *out, size_t n)
{
    struct mp_buf b = {0};
    out[0] = 0;
    if (!mp_props_string(&m->props, 0x0037, &b))
        snprintf(out, n, "%s", (const char *)b.data);
    mp_buf_free(&b);
}

static void on_done(void *arg, const struct mp_msg_event *ev)
{
    struct got *g = arg;
    if (g->n >= 4) {
        g->n++;
        return;
    }
    int i = g->n++;
    const struct mp_message *m = ev->msg;
    utf8_subject(m, g->subject[i], sizeof g->subject[i]);
    g->partial += ev->partial;
    g->mid[i] = ev->message_id;
    g->mode[i] = ev->mode;
    g->nrcpt[i] = m->nrcpt;
    g->natt[i] = m->natt;
    for (size_t k = 0; k < m->nrcpt && k < 4; k++)
        g->rtype[i][k] = m->rcpt[k].type;
    if (m->natt >= 1) {
        const struct mp_prop *d = mp_props_find(&m->att[0].props, MP_TAG_ATTACH_DATA);
        if (d && d->v.len == 10240) {
            uint8_t buf[10240];
            g->att0_ok[i] = mp_blob_read(&d->v, 0, buf, sizeof buf) == 10240;
            for (size_t k = 0; k < sizeof buf && g->att0_ok[i]; k++)
                g->att0_ok[i] = buf[k] == (uint8_t)k;
            g->att0_spilled[i] = mp_blob_fd(&d->v) >= 0;
        }
    }
    if (m->natt >= 2 && m->att[1].embedded) {
        char s[128];
        utf8_subject(m->att[1].embedded, s, sizeof s);
        g->embedded_ok[i] = !strcmp(s, "Forwarded inside") && m->att[1].embedded->nrcpt == 1 &&
                            m->att[1].embedded->parent == m;
    }
    for (size_t k = 0; k < m->props.n; k++) {
        const struct mp_propname *pn = m->props.v[k].name;
        if (pn && !pn->is_name && pn->lid == 0x8501 && m->props.v[k].u == 15)
            g->named_lid[i]++;
        if (pn && pn->is_name && pn->name && !strcmp(pn->name, "x-custom"))
            g->named_name[i]++;
    }
    char path[] = "/tmp/test_fxasm_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        unlink(path);
        g->mime_ok[i] = !mp_mime_write(m, fd, 1 << 24) && lseek(fd, 0, SEEK_END) > 100;
        close(fd);
    }
}

static void on_log(void *arg, const char *msg)
{
    struct got *g = arg;
    g->warnings++;
    (void)msg;
}

/* Feeds b[0..n) in pieces of `step` (0: whole; SIZE_MAX-1: split at `at`). */
static void run(const uint8_t *b, size_t n, size_t step, size_t at, bool bare,
                const struct mp_content_limits *lim, struct got *g, int *feed_rc)
{
    memset(g, 0, sizeof *g);
    struct mp_asm_ops ops = {on_done, on_log, g};
    struct mp_asm *a = mp_asm_new(lim, &ops);
    struct mp_fxasm *f = mp_fxasm_new(a, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD, 0x42, 0x77, bare);
    int rc = 0;
    if (step == 0) {
        rc |= mp_fxasm_feed(f, b, at, "t");
        rc |= mp_fxasm_feed(f, b + at, n - at, "t");
    } else {
        for (size_t o = 0; o < n; o += step)
            rc |= mp_fxasm_feed(f, b + o, n - o < step ? n - o : step, "t");
    }
    rc |= mp_fxasm_finish(f, "t");
    *feed_rc = rc;
    mp_fxasm_free(f);
    mp_asm_free(a);
}

static const struct mp_content_limits LIM = {1 << 20, 1 << 24, NULL};

static void check_message(const struct got *g, int i, const char *what)
{
    (void)what;
    CHECK(!strcmp(g->subject[i], "Quarterly report \xc3\xa9\xe4\xb8\xad"));
    CHECK_EQ(g->nrcpt[i], 2);
    CHECK(g->rtype[i][0] == 1 && g->rtype[i][1] == 2);
    CHECK_EQ(g->natt[i], 2);
    CHECK(g->att0_ok[i]);
    CHECK(g->embedded_ok[i]);
    CHECK_EQ(g->named_lid[i], 1);
    CHECK_EQ(g->named_name[i], 1);
    CHECK(g->mime_ok[i]);
}

static uint8_t *sample(const char *name, size_t *n)
{
    char path[256];
    snprintf(path, sizeof path, "data/fx/%s", name);
    uint8_t *b = mp_slurp(path, n);
    CHECK(b != NULL);
    return b;
}

/* Every split: whole, in two at each offset, byte by byte, 7 bytes. */
static void all_splits(const char *name, bool bare, void (*check)(const struct got *))
{
    size_t n;
    uint8_t *b = sample(name, &n);
    if (!b)
        return;
    struct got g;
    int rc, bad = 0;
    for (size_t at = 0; at <= n; at += (n > 4000 ? 97 : 1)) {
        run(b, n, 0, at, bare, &LIM, &g, &rc);
        if (rc)
            bad++;
        if (at == 0)
            check(&g);
    }
    CHECK_EQ(bad, 0);
    run(b, n, 1, 0, bare, &LIM, &g, &rc);
    CHECK_EQ(rc, 0);
    check(&g);
    run(b, n, 7, 0, bare, &LIM, &g, &rc);
    CHECK_EQ(rc, 0);
    check(&g);
    free(b);
}

static void ck_message(const struct got *g)
{
    CHECK_EQ(g->n, 1);
    CHECK_EQ(g->partial, 0);
    CHECK_EQ(g->warnings, 0);
    check_message(g, 0, "message");
}

static void ck_content(const struct got *g)
{
    ck_message(g);
    CHECK_EQ(g->mid[0], 0x77); /* bare: the context's message */
}

static void ck_ics(const struct got *g)
{
    CHECK_EQ(g->n, 2);
    CHECK_EQ(g->partial, 0);
    check_message(g, 0, "ics");
    CHECK_EQ(g->mid[0], 0x0001000000000001ull); /* PidTagMid of the change header */
    CHECK_EQ(g->mid[1], 0x0001000000000002ull);
    CHECK(!strcmp(g->subject[1], "Forwarded inside"));
    CHECK_EQ(g->nrcpt[1], 1);
    CHECK_EQ(g->mode[1], MP_MSG_ICS_DOWNLOAD);
}

static void ck_partial(const struct got *g)
{
    CHECK_EQ(g->n, 1);
    CHECK_EQ(g->partial, 1);
    CHECK(!strcmp(g->subject[0], "changed subject"));
    CHECK_EQ(g->mid[0], 0x0001000000000003ull);
    CHECK_EQ(g->nrcpt[0], 1);
}

static void ck_folder(const struct got *g)
{
    CHECK_EQ(g->n, 2); /* a normal and an FAI message; not the folder's props */
    check_message(g, 0, "folder");
    CHECK_EQ(g->subject[1][0], 0);
}

static void ck_none(const struct got *g)
{
    CHECK_EQ(g->n, 0);
}

static void test_limits(void)
{
    size_t n;
    uint8_t *b = sample("message.fxs", &n);
    if (!b)
        return;
    struct got g;
    int rc;
    /* spilled: the attachment's 10240 bytes in a private file */
    struct mp_content_limits spill = {1000, 1 << 24, NULL};
    run(b, n, 333, 0, false, &spill, &g, &rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(g.n, 1);
    CHECK(g.att0_ok[0] && g.att0_spilled[0]);
    /* over the maximum: not delivered, one warning */
    struct mp_content_limits small = {1 << 20, 5000, NULL};
    run(b, n, 333, 0, false, &small, &g, &rc);
    CHECK_EQ(rc, 0);
    CHECK_EQ(g.n, 0);
    CHECK_EQ(g.warnings, 1);
    /* truncated: an error at finish, nothing delivered, one warning */
    run(b, n - 5, 1, 0, false, &LIM, &g, &rc);
    CHECK(rc != 0);
    CHECK_EQ(g.n, 0);
    CHECK_EQ(g.warnings, 1);
    /* garbage after a good message: the good one is out, then one warning */
    uint8_t *bad = malloc(n + 8);
    memcpy(bad, b, n);
    memcpy(bad + n, "\x03\x00\x0d\x40\xff\xff\xff\xff", 8); /* EndMessage with nothing open */
    run(bad, n + 8, 64, 0, false, &LIM, &g, &rc);
    CHECK(rc != 0);
    CHECK_EQ(g.n, 1);
    CHECK_EQ(g.warnings, 1);
    free(bad);
    free(b);
}

/* The download-block notice (src/chain/msgfx.c): exactly n bytes for every
 * n from the smallest that fits up, decodable as IncrSyncMessage + props,
 * and assembled as a message whose subject says it was blocked. */
static int count_ev(void *ud, const struct mp_fx_event *ev)
{
    (*(int *)ud) += ev->kind == MP_FX_EV_PROP_END;
    return 0;
}

static void test_notice(void)
{
    int fits = 0, bad = 0;
    size_t smallest = 0;
    for (size_t n = 0; n < 70000; n += n < 2000 ? 1 : 997) {
        struct mp_fx_enc e;
        mp_fx_enc_init(&e);
        int rc = mp_msgfx_notice(&e, n, "a test reason");
        if (!rc) {
            fits++;
            if (!smallest)
                smallest = n;
            int props = 0;
            struct mp_fx_parser *p = mp_fx_parser_new(count_ev, &props);
            if (e.len != n || mp_fx_feed(p, e.out, e.len) || mp_fx_finish(p) || props < 2)
                bad++;
            mp_fx_parser_free(p);
        } else if (smallest) {
            bad++; /* every n past the smallest must fit */
        }
        mp_fx_enc_free(&e);
    }
    CHECK(fits > 100);
    CHECK(smallest > 0 && smallest < 64);
    CHECK_EQ(bad, 0);
    /* as a change: header + notice, assembled */
    struct mp_fx_enc h, nt;
    mp_fx_enc_init(&h);
    mp_fx_enc_init(&nt);
    mp_fx_enc_marker(&h, MP_FX_IncrSyncChg);
    mp_fx_enc_fixed(&h, 0x674A0014, NULL, 0x77);
    CHECK_EQ(mp_msgfx_notice(&nt, 500, "bad attachment"), 0);
    struct got g;
    memset(&g, 0, sizeof g);
    struct mp_asm_ops ops = {on_done, on_log, &g};
    struct mp_asm *a = mp_asm_new(&LIM, &ops);
    struct mp_fxasm *f = mp_fxasm_new(a, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD, 1, 0, false);
    CHECK_EQ(mp_fxasm_feed(f, h.out, h.len, "t"), 0);
    CHECK_EQ(mp_fxasm_feed(f, nt.out, nt.len, "t"), 0);
    CHECK_EQ(mp_fxasm_finish(f, "t"), 0);
    CHECK_EQ(g.n, 1);
    CHECK(!strcmp(g.subject[0], "[Blocked] bad attachment"));
    CHECK_EQ(g.mid[0], 0x77);
    mp_fxasm_free(f);
    mp_asm_free(a);
    mp_fx_enc_free(&h);
    mp_fx_enc_free(&nt);
}

int main(void)
{
    mp_mime_init();
    test_notice();
    all_splits("message.fxs", false, ck_message);
    all_splits("content.fxs", true, ck_content);
    all_splits("ics.fxs", false, ck_ics);
    all_splits("partial.fxs", false, ck_partial);
    all_splits("folder.fxs", false, ck_folder);
    all_splits("errinfo.fxs", false, ck_none);
    /* Exchange-made hierarchy sync (test_fx.c): folder changes are no messages */
    all_splits("exchange-hierarchy.fxs", false, ck_none);
    all_splits("types.fxs", false, ck_none); /* bare content, but not said so */
    test_limits();
    mp_mime_shutdown();
    TEST_DONE();
}
