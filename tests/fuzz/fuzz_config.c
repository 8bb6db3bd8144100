/* libFuzzer target: the configuration parser on arbitrary text.
 *
 *   clang -std=c17 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *         tests/fuzz/fuzz_config.c src/core/config.c -o build/fuzz_config
 *   build/fuzz_config tests/fuzz/corpus/config
 *
 * Every input must load or fail cleanly, without crashes or leaks.  Loads that
 * succeed must satisfy the invariants checked below.  Includes are resolved
 * relative to the working directory (the name has no '/'), which the parser
 * bounds (regular files only, 4 MiB, depth 8). */
#include "core/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0; /* text stops at the first NUL, as a C string does */

    struct mp_config cfg;
    struct mp_diag diag = {0};
    int r = mp_config_load_text(&cfg, "fuzz.conf", text, &diag);
    if (r == 0) {
        if (diag.n != 0 || cfg.n_ifaces == 0 || cfg.n_ifaces > MP_MAX_IFACES || cfg.n_listen == 0 ||
            cfg.n_listen > MP_MAX_LISTEN || cfg.n_modules > MP_MAX_MODULES ||
            cfg.binding.host[0] == 0 || cfg.log_level < 0 || cfg.log_level > 4)
            abort();
        for (size_t i = 0; i < cfg.n_entries; i++)
            if (mp_config_get(&cfg, cfg.entries[i].key) == NULL)
                abort();
    } else if (diag.n == 0) {
        abort(); /* a failure always says why */
    }
    mp_diag_free(&diag);
    mp_config_free(&cfg);

    /* The smaller parsers on the same bytes. */
    struct mp_iface_spec sp;
    struct mp_binding b;
    char err[512];
    uint8_t u[16];
    char s[37];
    mp_iface_parse(text, &sp);
    mp_binding_parse(text, &b, err, sizeof err);
    if (mp_uuid_parse(text, u) == 0) {
        uint8_t u2[16];
        mp_uuid_format(u, s);
        if (mp_uuid_parse(s, u2) != 0 || memcmp(u, u2, 16) != 0)
            abort();
    }
    free(text);
    return 0;
}
