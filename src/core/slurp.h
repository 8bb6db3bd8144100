/* Whole-file reads for tools and tests (not for the proxy's hot paths). */
#ifndef MP_CORE_SLURP_H
#define MP_CORE_SLURP_H
#include <stddef.h>
#include <stdint.h>

/* The bytes of the file at path in a malloc'd buffer (one spare byte past
 * *len, for a terminator), or NULL. */
uint8_t *mp_slurp(const char *path, size_t *len);
#endif
