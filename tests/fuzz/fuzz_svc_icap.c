/* libFuzzer target: the icap answer parser (src/svc/icap.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    struct mp_svc_icap_req r = {.host = "h", .service = "avscan", .preview = 8};
    return mp_svc_icap_new(&r, msg, sizeof msg - 1);
}
