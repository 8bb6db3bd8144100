/* libFuzzer target: the clamd answer parser (src/svc/clamd.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    return mp_svc_clamd_new(msg, sizeof msg - 1, 0);
}
