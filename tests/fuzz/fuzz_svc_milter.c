/* libFuzzer target: the milter answer parser (src/svc/milter.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    static const char *const rcpt[] = {"x@y", "z@y", NULL};
    struct mp_svc_milter_req r = {.from = "a@b", .rcpt = rcpt};
    return mp_svc_milter_new(&r, msg, sizeof msg - 1);
}
