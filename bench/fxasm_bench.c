/* make bench-content: messages assembled from a FastTransfer stream and
 * converted to MIME, per second and MB/s of stream, on one core
 * (doc/internals/bench.md).  -O2, no sanitizers.
 *
 * Two ICS download streams, built with the src/fx encoder:
 *   typical  200 messages: subject, 2 KB plain body, 4 KB HTML body, two
 *            recipients, one 64 KB attachment (about 70 KB each);
 *   large    5 messages with a 10 MB attachment each (spilled to a private
 *            temporary file past the 1 MiB spill size, as mime-dump does).
 * Each is fed in 0x7F00-byte buffers (what Outlook asks for), assembled
 * (src/content/fxasm.c), and every message written as MIME to an unlinked file in /tmp, truncated
 * after each (src/content/mime.c, base64 of every part).  Figures: CPU time of this process
 * (CLOCK_PROCESS_CPUTIME_ID, one thread), the best of 3 runs; the last column is wall-clock (it
 * includes GMime's fsync of each file). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "content/assemble.h"
#include "content/mime.h"
#include "fx/fxstream.h"

struct ctx {
    int out; /* an unlinked file in /tmp: GMime's flush fsyncs, /dev/null refuses */
    bool mime;
    unsigned long msgs;
    int errors;
};

static void done(void *arg, const struct mp_msg_event *ev)
{
    struct ctx *c = arg;
    c->msgs++;
    if (c->mime && mp_mime_write(ev->msg, c->out, 1 << 24))
        c->errors++;
    if (c->mime && (ftruncate(c->out, 0) || lseek(c->out, 0, SEEK_SET)))
        c->errors++;
}

static void logline(void *arg, const char *msg)
{
    struct ctx *c = arg;
    c->errors++;
    fprintf(stderr, "fxasm_bench: %s\n", msg);
}

static void utf16(struct mp_fx_enc *e, uint32_t tag, const char *s, size_t repeat)
{
    size_t n = strlen(s);
    uint8_t *b = malloc((n * repeat + 1) * 2);
    size_t k = 0;
    for (size_t r = 0; r < repeat; r++)
        for (size_t i = 0; i < n; i++) {
            b[k++] = (uint8_t)s[i];
            b[k++] = 0;
        }
    b[k++] = 0;
    b[k++] = 0;
    mp_fx_enc_var(e, tag, NULL, b, (uint32_t)k);
    free(b);
}

static void message(struct mp_fx_enc *e, uint64_t mid, size_t att_size, const uint8_t *att)
{
    mp_fx_enc_marker(e, MP_FX_IncrSyncChg);
    uint8_t key[22] = {0};
    memcpy(key + 16, &mid, 6);
    mp_fx_enc_var(e, 0x65E00102, NULL, key, sizeof key); /* PidTagSourceKey */
    mp_fx_enc_fixed(e, 0x674A0014, NULL, mid);           /* PidTagMid */
    mp_fx_enc_marker(e, MP_FX_IncrSyncMessage);
    utf16(e, 0x001A001F, "IPM.Note", 1);
    utf16(e, 0x0037001F, "Quarterly report for the bench", 1);
    utf16(e, 0x0042001F, "Bob Sender", 1);
    utf16(e, 0x0065001F, "bob@bench.example", 1);
    mp_fx_enc_fixed(e, 0x00390040, NULL, 0x01D9000000000000ull);
    utf16(e, 0x1000001F, "The quarterly figures are attached. ", 28);
    static char html[4200];
    if (!html[0]) {
        strcpy(html, "<html><body>");
        while (strlen(html) < 4000)
            strcat(html, "<p>The <b>quarterly</b> figures.</p>");
        strcat(html, "</body></html>");
    }
    mp_fx_enc_var(e, 0x10130102, NULL, (const uint8_t *)html, (uint32_t)strlen(html));
    for (int r = 0; r < 2; r++) {
        mp_fx_enc_marker(e, MP_FX_StartRecip);
        mp_fx_enc_fixed(e, 0x0C150003, NULL, (uint64_t)r + 1);
        utf16(e, 0x3001001F, r ? "Carol Copy" : "Alice Lab", 1);
        utf16(e, 0x39FE001F, r ? "carol@bench.example" : "alice@bench.example", 1);
        mp_fx_enc_marker(e, MP_FX_EndToRecip);
    }
    mp_fx_enc_marker(e, MP_FX_NewAttach);
    mp_fx_enc_fixed(e, 0x37050003, NULL, 1);
    utf16(e, 0x3707001F, "figures.bin", 1);
    utf16(e, 0x370E001F, "application/octet-stream", 1);
    mp_fx_enc_var(e, 0x37010102, NULL, att, (uint32_t)att_size);
    mp_fx_enc_marker(e, MP_FX_EndAttach);
}

static uint8_t *stream(int nmsg, size_t att_size, size_t *len)
{
    uint8_t *att = malloc(att_size);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < att_size; i++) { /* xorshift: poorly compressible */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        att[i] = (uint8_t)x;
    }
    struct mp_fx_enc e;
    mp_fx_enc_init(&e);
    for (int i = 0; i < nmsg; i++)
        message(&e, 0x0001000000000001ull + (uint64_t)i, att_size, att);
    mp_fx_enc_marker(&e, MP_FX_IncrSyncEnd);
    free(att);
    if (e.err) {
        fprintf(stderr, "fxasm_bench: encoder failed\n");
        exit(1);
    }
    *len = e.len;
    return e.out;
}

static double clk(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double run(const uint8_t *s, size_t n, bool mime, struct ctx *c, double *wall)
{
    double w0 = clk(CLOCK_MONOTONIC);
    struct mp_content_limits lim = {1 << 20, 64ull << 20, NULL, 0};
    c->mime = mime;
    c->msgs = 0;
    struct mp_asm_ops ops = {done, logline, c};
    double t0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    struct mp_asm *a = mp_asm_new(&lim, &ops);
    struct mp_fxasm *f = mp_fxasm_new(a, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD, 1, 0, false);
    for (size_t o = 0; o < n; o += 0x7F00)
        mp_fxasm_feed(f, s + o, n - o < 0x7F00 ? n - o : 0x7F00, "bench");
    mp_fxasm_finish(f, "bench");
    mp_fxasm_free(f);
    mp_asm_free(a);
    *wall = clk(CLOCK_MONOTONIC) - w0;
    return clk(CLOCK_PROCESS_CPUTIME_ID) - t0;
}

int main(void)
{
    struct ctx c = {.out = open("/tmp", O_TMPFILE | O_RDWR, 0600)};
    if (c.out < 0) {
        perror("fxasm_bench: /tmp");
        return 1;
    }
    mp_mime_init();
    struct {
        const char *name;
        int nmsg;
        size_t att;
    } rows[] = {{"typical (~75 KB)", 200, 64 * 1024}, {"10 MB attachment", 5, 10u << 20}};
    printf("%-34s %10s %10s %10s %12s\n", "FastTransfer -> messages, 1 core", "msgs", "msgs/s",
           "MB/s", "wall msgs/s");
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        size_t n;
        uint8_t *s = stream(rows[r].nmsg, rows[r].att, &n);
        for (int mime = 0; mime < 2; mime++) {
            double best = 1e9, bwall = 1e9, w;
            for (int k = 0; k < 3; k++) {
                double t = run(s, n, mime, &c, &w);
                if (t < best)
                    best = t;
                if (w < bwall)
                    bwall = w;
            }
            if (c.msgs != (unsigned long)rows[r].nmsg)
                c.errors++;
            char label[64];
            snprintf(label, sizeof label, "%s%s", rows[r].name, mime ? " + MIME" : "");
            printf("%-34s %10lu %10.0f %10.1f %12.0f\n", label, c.msgs, (double)c.msgs / best,
                   (double)n / best / 1e6, (double)c.msgs / bwall);
        }
        free(s);
    }
    mp_mime_shutdown();
    close(c.out);
    if (c.errors)
        fprintf(stderr, "fxasm_bench: %d errors\n", c.errors);
    return c.errors ? 1 : 0;
}
