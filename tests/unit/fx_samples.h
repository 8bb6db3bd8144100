/* The FastTransfer stream samples of tests/unit/data/fx (the lab's Python
 * writer, tests/unit/data/fx/make_samples.py), for the unit tests that read
 * them (run with tests/unit as the working directory). */
#ifndef MP_TEST_FX_SAMPLES_H
#define MP_TEST_FX_SAMPLES_H
#include <stdio.h>

#include "core/slurp.h"
#include "testlib.h"

static inline uint8_t *sample(const char *name, size_t *n)
{
    char path[256];
    snprintf(path, sizeof path, "data/fx/%s", name);
    uint8_t *b = mp_slurp(path, n);
    CHECK(b != NULL);
    return b;
}
#endif
