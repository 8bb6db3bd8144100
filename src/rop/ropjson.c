#include "rop/ropjson.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void mp_rj_str8(struct mp_json *j, const uint8_t *s, size_t n)
{
    mp_json_latin1(j, s, n);
}

void mp_rj_str16(struct mp_json *j, const uint8_t *s, size_t n)
{
    mp_json_utf16le(j, s, n);
}

void mp_rj_dbl(struct mp_json *j, double v)
{
    char t[40];
    if (v != v || v - v != 0) /* NaN or infinity: not JSON */
        snprintf(t, sizeof t, "null");
    else
        snprintf(t, sizeof t, "%.17g", v);
    mp_json_raw(j, t);
}

void mp_rj_hex(struct mp_json *j, uint64_t v, int digits)
{
    char t[40];
    snprintf(t, sizeof t, "\"0x%0*" PRIx64 "\"", digits, v);
    mp_json_raw(j, t);
}

void mp_rj_bin(struct mp_json *j, const uint8_t *p, size_t n, size_t max)
{
    mp_json_hexn(j, p, n, max);
}

void mp_rj_guid(struct mp_json *j, const uint8_t *p)
{
    char t[48];
    if (!p) {
        mp_json_null(j);
        return;
    }
    snprintf(t, sizeof t,
             "\"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\"", p[3], p[2],
             p[1], p[0], p[5], p[4], p[7], p[6], p[8], p[9], p[10], p[11], p[12], p[13], p[14],
             p[15]);
    mp_json_raw(j, t);
}
