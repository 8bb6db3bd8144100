/* Modules linked into the daemon, found by name before the module dir. */
#include <stddef.h>

#include "mapiproxy/module.h"

const struct mp_module *const mp_builtin_modules[] = {
    NULL,
};
