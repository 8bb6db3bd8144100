/* Modules linked into the daemon, found by name before the module dir. */
#include <stddef.h>

#include "mapiproxy/module.h"

extern const struct mp_module mp_builtin_downgrade;
extern const struct mp_module mp_builtin_trace;
extern const struct mp_module mp_builtin_rewrite;
extern const struct mp_module mp_builtin_mailboxauth;
extern const struct mp_module mp_builtin_mimedump;
extern const struct mp_module mp_builtin_messagelog;

const struct mp_module *const mp_builtin_modules[] = {
    &mp_builtin_downgrade,
    &mp_builtin_trace,
    &mp_builtin_rewrite,
    &mp_builtin_mailboxauth,
    &mp_builtin_mimedump,
    &mp_builtin_messagelog,
    NULL,
};
