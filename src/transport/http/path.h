/* Request-target normalisation for the HTTPS front (doc/internals/http.md,
 * "Paths"): what the allowlist decides on and what is forwarded. */
#ifndef MP_HTTP_PATH_H
#define MP_HTTP_PATH_H
#include <stddef.h>

/* Normalises the request-target in[0 .. len) into out (at least len + 1
 * bytes; the result is never longer than the input) and NUL-terminates it:
 *  - absolute-form (http://host/p?q) becomes origin-form (/p?q);
 *  - in the path, %XX of an unreserved character (RFC 3986 2.3) is decoded,
 *    other %XX are kept with upper-case hex digits;
 *  - runs of '/' become one '/' (IIS merges them too);
 *  - dot-segments are removed (RFC 3986 5.2.4);
 *  - the query (from the first '?') is copied unchanged.
 * Returns the length written, or -1 when the target is refused: not
 * origin- or absolute-form, a backslash or an encoded '/' or '\' (%2F,
 * %5C) in the path, a '%' not followed by two hex digits, a fragment, or a
 * byte outside printable ASCII. */
long mp_http_path_normalise(const char *in, size_t len, char *out);
#endif
