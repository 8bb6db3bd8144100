/* libFuzzer target for message assembly from FastTransfer streams
 * (src/content/fxasm.c) and the MIME conversion of what it assembles.
 *   make fuzz SECONDS=N   (corpus: tests/fuzz/corpus/fxasm, the samples of
 *                          tests/unit/data/fx)
 * The input is fed as a stream of messageChanges / top-level messages and as
 * one bare messageContent, whole and split at a point the input picks; both
 * splits must deliver the same number of messages with the same outcome.
 * Small spill and size limits so that the temporary-file and over-limit
 * paths run too.  Every delivered message is converted to MIME. */
#include "content/assemble.h"
#include "content/mime.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int out_fd = -1;

static void done(void *arg, const struct mp_msg_event *ev)
{
    (*(int *)arg)++;
    if (out_fd >= 0 && !mp_mime_write(ev->msg, out_fd, 1 << 16))
        (void)!ftruncate(out_fd, 0);
}

static void logline(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static int run(const uint8_t *d, size_t n, size_t cut, bool bare, int *rc)
{
    int delivered = 0;
    struct mp_content_limits lim = {512, 1 << 16, NULL, 0};
    struct mp_asm_ops ops = {done, logline, &delivered};
    struct mp_asm *a = mp_asm_new(&lim, &ops);
    struct mp_fxasm *f = mp_fxasm_new(a, MP_MSG_DOWNLOAD, MP_MSG_ICS_DOWNLOAD, 1, 2, bare);
    if (!a || !f)
        abort();
    int r = mp_fxasm_feed(f, d, cut, "fuzz");
    r |= mp_fxasm_feed(f, d + cut, n - cut, "fuzz");
    r |= mp_fxasm_finish(f, "fuzz");
    mp_fxasm_free(f);
    mp_asm_free(a);
    *rc = r;
    return delivered;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (out_fd < 0) {
        mp_mime_init();
        out_fd = open("/tmp", O_TMPFILE | O_RDWR, 0600);
    }
    size_t cut = size ? (size_t)data[0] * 131 % (size + 1) : 0;
    for (int bare = 0; bare < 2; bare++) {
        int r1, r2;
        int n1 = run(data, size, size, bare, &r1);
        int n2 = run(data, size, cut, bare, &r2);
        if (n1 != n2 || r1 != r2)
            abort();
    }
    return 0;
}
