/* Minimal unit-test support: CHECK() counts, main() ends with the plain
 * "N passed, N failed" line that CI reads. */
#ifndef MP_TESTLIB_H
#define MP_TESTLIB_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_pass, t_fail;
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            t_pass++;                                                                              \
        } else {                                                                                   \
            t_fail++;                                                                              \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)
#define CHECK_EQ(a, b) CHECK((a) == (b))
/* External test vectors (tests/data, see its README.md); unit tests run with
 * tests/unit as the working directory. */
#define TESTDATA "../data"
/* Hex text to bytes (at most cap; 0 when it does not fit): test vectors. */
static inline size_t t_unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h) / 2;
    if (n > cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}
#define TEST_DONE()                                                                                \
    do {                                                                                           \
        printf("%d passed, %d failed\n", t_pass, t_fail);                                          \
        return t_fail ? 1 : 0;                                                                     \
    } while (0)
#endif
