#include "codec/codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/json.h"

const struct mp_codec_iface *const mp_codec_ifaces[] = {
    &mp_codec_iface_emsmdb, &mp_codec_iface_asyncemsmdb, &mp_codec_iface_nspi, &mp_codec_iface_rfr,
    NULL};

const struct mp_call_codec *mp_codec_iface_call(const struct mp_codec_iface *i, uint16_t opnum)
{
    if (!i || opnum >= i->n_calls || !i->calls[opnum].name)
        return NULL;
    return &i->calls[opnum];
}

const struct mp_call_codec *mp_codec_find(const uint8_t iface_uuid[16], uint16_t opnum)
{
    for (size_t k = 0; mp_codec_ifaces[k]; k++)
        if (!memcmp(mp_codec_ifaces[k]->uuid, iface_uuid, 16))
            return mp_codec_iface_call(mp_codec_ifaces[k], opnum);
    return NULL;
}

static int parse_uuid(const char *s, uint8_t out[16])
{
    unsigned a, b, c, d[8];
    if (strlen(s) != 36 || sscanf(s, "%8x-%4x-%4x-%2x%2x-%2x%2x%2x%2x%2x%2x", &a, &b, &c, &d[0],
                                  &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7]) != 11)
        return -1;
    out[0] = (uint8_t)a, out[1] = (uint8_t)(a >> 8), out[2] = (uint8_t)(a >> 16);
    out[3] = (uint8_t)(a >> 24), out[4] = (uint8_t)b, out[5] = (uint8_t)(b >> 8);
    out[6] = (uint8_t)c, out[7] = (uint8_t)(c >> 8);
    for (int i = 0; i < 8; i++)
        out[8 + i] = (uint8_t)d[i];
    return 0;
}

const struct mp_codec_iface *mp_codec_iface_lookup(const char *name)
{
    uint8_t u[16];
    bool is_uuid = parse_uuid(name, u) == 0;
    for (size_t k = 0; mp_codec_ifaces[k]; k++) {
        const struct mp_codec_iface *i = mp_codec_ifaces[k];
        if (!strcasecmp(i->short_name, name) || !strcasecmp(i->name, name) ||
            (is_uuid && !memcmp(i->uuid, u, 16)))
            return i;
    }
    return NULL;
}

void mp_emsmdb_xor(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= 0xA5;
}

void mp_codec_print_tag(struct mp_json *j, uint32_t tag)
{
    char t[16];
    snprintf(t, sizeof t, "\"0x%08" PRIX32 "\"", tag);
    mp_json_raw(j, t);
}

void mp_codec_print_ctxh(struct mp_json *j, const struct mp_ctxh *h)
{
    mp_json_obj_begin(j);
    mp_json_key(j, "attr");
    mp_json_u64(j, h->attr);
    mp_json_key(j, "uuid");
    mp_json_hex(j, h->uuid, 16);
    mp_json_obj_end(j);
}
