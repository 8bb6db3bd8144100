/* --check's start-up checks beyond the syntax (core/config.h). */
#include "core/config.h"

int mp_config_check_runtime(const struct mp_config *cfg, struct mp_diag *diag)
{
    (void)cfg;
    (void)diag;
    return 0;
}
