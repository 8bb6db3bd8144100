/* Shared body of the fuzz_svc_* targets: the input is a service's answer,
 * fed to a conversation in pieces (the first byte picks the piece size),
 * as the engine would; then EOF.  ASan/UBSan watch the parser. */
#include "svc/svc.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static struct mp_svc_conv *make_conv(void);

static const uint8_t msg[] = "Subject: t\r\nFrom: a@b\r\n\r\n.body\r\nline\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    size_t piece = (size_t)data[0] % 64 + 1;
    data++, size--;
    struct mp_svc_conv *c = make_conv();
    if (!c)
        return 0;
    int r = c->ops->begin(c, size && (data[0] & 1));
    struct mp_buf in = {0};
    for (size_t off = 0; r == MP_SVC_MORE && off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        if (mp_buf_append(&in, data + off, n))
            break;
        mp_buf_consume(&c->out, mp_buf_avail(&c->out)); /* "sent" */
        r = mp_svc_conv_feed(c, &in);
    }
    if (r == MP_SVC_MORE)
        r = c->ops->eof(c);
    if (r != MP_SVC_MORE && r != MP_SVC_DONE && r != MP_SVC_BAD)
        abort();
    if (c->v.name[sizeof c->v.name - 1])
        abort();
    mp_buf_free(&in);
    mp_svc_conv_free(c);
    return 0;
}
