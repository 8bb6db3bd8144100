/* libFuzzer target: the lmtp answer parser (src/svc/lmtp.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    static const char *const rcpt[] = {"x@y", "z@y", NULL};
    struct mp_svc_lmtp_req r = {.from = "a@b", .rcpt = rcpt};
    return mp_svc_lmtp_new(&r, msg, sizeof msg - 1);
}
