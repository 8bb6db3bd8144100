/* libFuzzer target: the rspamd answer parser (src/svc/rspamd.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    struct mp_svc_rspamd_req r = {.host = "h", .from = "a@b"};
    return mp_svc_rspamd_new(&r, msg, sizeof msg - 1);
}
