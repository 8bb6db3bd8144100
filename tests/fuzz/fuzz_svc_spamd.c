/* libFuzzer target: the spamd answer parser (src/svc/spamd.c); see svc_fuzz.h. */
#include "svc_fuzz.h"

static struct mp_svc_conv *make_conv(void)
{
    return mp_svc_spamd_new(MP_SPAMD_SYMBOLS, "u", msg, sizeof msg - 1);
}
