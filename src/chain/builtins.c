/* What is linked into the daemon: the built-in modules (modules/NAME/,
 * found by name before the module dir) and the stage providers
 * (chain.h). */
#include <stddef.h>

#include "chain/chain.h"
#include "mapiproxy/module.h"

extern const struct mp_module mp_builtin_downgrade;
extern const struct mp_module mp_builtin_trace;
extern const struct mp_module mp_builtin_rewrite;
extern const struct mp_module mp_builtin_mailboxauth;

const struct mp_module *const mp_builtin_modules[] = {
    &mp_builtin_downgrade, &mp_builtin_trace, &mp_builtin_rewrite, &mp_builtin_mailboxauth, NULL,
};

#include "chain/ropstage.h"

const struct mp_stage_provider *const mp_builtin_stages[] = {&mp_rop_stage, NULL};
