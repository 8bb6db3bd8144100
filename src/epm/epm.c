#include "epm/epm.h"

#include <string.h>

#include "ndr/ndr.h"

/* e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0 */
const struct mp_syntax mp_epm_syntax = {{0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11, 0x91, 0xa4,
                                         0x08, 0x00, 0x2b, 0x14, 0xa0, 0xfa},
                                        3,
                                        0};

#define FLOOR_UUID 0x0d
#define FLOOR_NCACN 0x0b
#define FLOOR_TCP 0x07
#define FLOOR_IP 0x09

size_t mp_tower_build(uint8_t *out, size_t cap, const struct mp_syntax *iface, uint16_t port,
                      uint32_t ipv4)
{
    /* 2 + floor1 (2+19+2+2) + floor2 (25) + floor3 (2+1+2+2) + floor4 (2+1+2+2) + floor5 (2+1+2+4)
     */
    const size_t len = 2 + 25 + 25 + 7 + 7 + 9;
    if (cap < len)
        return 0;
    uint8_t *p = out;
    mp_put16(p, 5);
    p += 2;
    const struct mp_syntax *syn[2] = {iface, &mp_ndr20_syntax};
    for (int i = 0; i < 2; i++) {
        mp_put16(p, 19);
        p[2] = FLOOR_UUID;
        memcpy(p + 3, syn[i]->uuid, 16);
        mp_put16(p + 19, syn[i]->major);
        mp_put16(p + 21, 2);
        mp_put16(p + 23, syn[i]->minor);
        p += 25;
    }
    mp_put16(p, 1);
    p[2] = FLOOR_NCACN;
    mp_put16(p + 3, 2);
    mp_put16(p + 5, 0);
    p += 7;
    mp_put16(p, 1);
    p[2] = FLOOR_TCP;
    mp_put16(p + 3, 2);
    p[5] = (uint8_t)(port >> 8); /* big-endian, as on the network */
    p[6] = (uint8_t)port;
    p += 7;
    mp_put16(p, 1);
    p[2] = FLOOR_IP;
    mp_put16(p + 3, 4);
    memcpy(p + 5, &ipv4, 4);
    p += 9;
    return (size_t)(p - out);
}

int mp_tower_parse(const uint8_t *t, size_t len, struct mp_tower *tw)
{
    memset(tw, 0, sizeof(*tw));
    if (len < 2)
        return -1;
    unsigned n = mp_get16(t);
    size_t o = 2;
    for (unsigned f = 0; f < n; f++) {
        if (len - o < 2)
            return -1;
        uint16_t ll = mp_get16(t + o);
        o += 2;
        if (len - o < (size_t)ll + 2 || ll == 0)
            return -1;
        const uint8_t *lhs = t + o;
        o += ll;
        uint16_t rl = mp_get16(t + o);
        o += 2;
        if (len - o < rl)
            return -1;
        const uint8_t *rhs = t + o;
        o += rl;
        if (lhs[0] == FLOOR_UUID && ll == 19 && rl >= 2) {
            struct mp_syntax *s = f == 0 ? &tw->iface : &tw->transfer;
            memcpy(s->uuid, lhs + 1, 16);
            s->major = mp_get16(lhs + 17);
            s->minor = mp_get16(rhs);
        } else if (lhs[0] == FLOOR_NCACN) {
            tw->proto = FLOOR_NCACN;
        } else if (lhs[0] == FLOOR_TCP && rl == 2) {
            tw->port = (uint16_t)(rhs[0] << 8 | rhs[1]);
        } else if (lhs[0] == FLOOR_IP && rl == 4) {
            memcpy(&tw->ipv4, rhs, 4);
        }
    }
    tw->floors = (int)n;
    return 0;
}

/* Reads a unique pointer to a twr_t: NULL pointer gives len 0. */
static const uint8_t *pull_tower_ptr(struct mp_ndr_pull *n, uint32_t *tlen)
{
    *tlen = 0;
    if (!mp_ndr_u32(n))
        return NULL;
    uint32_t max = mp_ndr_u32(n);
    uint32_t l = mp_ndr_u32(n);
    if (l > max || l > 4096) {
        n->err = true;
        return NULL;
    }
    const uint8_t *t = mp_ndr_bytes(n, l);
    mp_ndr_align(n, 4);
    *tlen = l;
    return t;
}

static int push_tower(struct mp_buf *b, size_t base, const uint8_t *t, size_t len)
{
    return mp_ndr_push_u32(b, base, (uint32_t)len) || mp_ndr_push_u32(b, base, (uint32_t)len) ||
           mp_ndr_push_bytes(b, t, len) || mp_ndr_push_align(b, base, 4);
}

static const uint8_t zero_handle[20];

static uint32_t serve_map(const struct mp_epm_registry *reg, uint32_t ip, struct mp_ndr_pull *n,
                          struct mp_buf *out)
{
    if (mp_ndr_u32(n))
        mp_ndr_bytes(n, 16); /* object: not used for matching */
    uint32_t tlen;
    const uint8_t *t = pull_tower_ptr(n, &tlen);
    const uint8_t *handle = mp_ndr_bytes(n, 20);
    uint32_t max_towers = mp_ndr_u32(n);
    if (n->err || !handle)
        return MP_NCA_S_FAULT_NDR;
    struct mp_tower want;
    const struct mp_epm_entry *hit = NULL;
    if (t && mp_tower_parse(t, tlen, &want) == 0) {
        for (size_t i = 0; i < reg->n; i++)
            if (!memcmp(reg->e[i].iface.uuid, want.iface.uuid, 16) &&
                reg->e[i].iface.major == want.iface.major) {
                hit = &reg->e[i];
                break;
            }
    }
    size_t base = out->len;
    uint32_t num = hit && max_towers ? 1 : 0;
    mp_ndr_push_bytes(out, zero_handle, 20);
    mp_ndr_push_u32(out, base, num);
    mp_ndr_push_u32(out, base, max_towers); /* conformant varying array of twr_p_t */
    mp_ndr_push_u32(out, base, 0);
    mp_ndr_push_u32(out, base, num);
    if (num) {
        uint8_t tw[128];
        size_t l = mp_tower_build(tw, sizeof(tw), &hit->iface, hit->port, ip);
        mp_ndr_push_u32(out, base, 0x00020000); /* referent id */
        push_tower(out, base, tw, l);
    }
    mp_ndr_push_u32(out, base, num ? 0 : MP_EPT_S_NOT_REGISTERED);
    return 0;
}

static bool lookup_match(const struct mp_epm_entry *e, uint32_t inquiry, const uint8_t *if_uuid,
                         uint16_t vmaj, uint16_t vmin, uint32_t vers_option)
{
    if (inquiry != 1 && inquiry != 3)
        return true; /* all elements, or by object: we register no objects */
    if (!if_uuid || memcmp(e->iface.uuid, if_uuid, 16))
        return false;
    switch (vers_option) {
    case 2: /* compatible */
        return e->iface.major == vmaj && e->iface.minor >= vmin;
    case 3: /* exact */
        return e->iface.major == vmaj && e->iface.minor == vmin;
    case 4: /* major only */
        return e->iface.major == vmaj;
    case 5: /* up to */
        return e->iface.major < vmaj || (e->iface.major == vmaj && e->iface.minor <= vmin);
    default: /* all */
        return true;
    }
}

static uint32_t serve_lookup(const struct mp_epm_registry *reg, uint32_t ip, struct mp_ndr_pull *n,
                             struct mp_buf *out)
{
    uint32_t inquiry = mp_ndr_u32(n);
    if (mp_ndr_u32(n))
        mp_ndr_bytes(n, 16);
    const uint8_t *if_uuid = NULL;
    uint16_t vmaj = 0, vmin = 0;
    if (mp_ndr_u32(n)) {
        if_uuid = mp_ndr_bytes(n, 16);
        vmaj = mp_ndr_u16(n);
        vmin = mp_ndr_u16(n);
    }
    uint32_t vers_option = mp_ndr_u32(n);
    const uint8_t *handle = mp_ndr_bytes(n, 20);
    uint32_t max_ents = mp_ndr_u32(n);
    if (n->err || !handle)
        return MP_NCA_S_FAULT_NDR;
    /* The handle carries the index to resume at (0 = start). */
    uint32_t start = mp_get32(handle + 4);
    if (start > reg->n)
        start = (uint32_t)reg->n;
    const struct mp_epm_entry *hits[MP_EPM_MAX_ENTRIES];
    uint32_t nh = 0, i = start;
    for (; i < reg->n && nh < max_ents; i++)
        if (lookup_match(&reg->e[i], inquiry, if_uuid, vmaj, vmin, vers_option))
            hits[nh++] = &reg->e[i];
    bool more = false;
    for (uint32_t j = i; j < reg->n; j++)
        if (lookup_match(&reg->e[j], inquiry, if_uuid, vmaj, vmin, vers_option))
            more = true;
    size_t base = out->len;
    uint8_t h[20] = {0};
    if (more) {
        h[0] = 1;
        mp_put32(h + 4, i);
    }
    mp_ndr_push_bytes(out, h, 20);
    mp_ndr_push_u32(out, base, nh);
    mp_ndr_push_u32(out, base, max_ents);
    mp_ndr_push_u32(out, base, 0);
    mp_ndr_push_u32(out, base, nh);
    for (uint32_t k = 0; k < nh; k++) {
        static const uint8_t nil_uuid[16];
        size_t alen = strlen(hits[k]->annotation) + 1;
        mp_ndr_push_bytes(out, nil_uuid, 16);
        mp_ndr_push_u32(out, base, 0x00020000 + 4 * k);
        mp_ndr_push_u32(out, base, 0);
        mp_ndr_push_u32(out, base, (uint32_t)alen);
        mp_ndr_push_bytes(out, hits[k]->annotation, alen);
        mp_ndr_push_align(out, base, 4);
    }
    for (uint32_t k = 0; k < nh; k++) {
        uint8_t tw[128];
        size_t l = mp_tower_build(tw, sizeof(tw), &hits[k]->iface, hits[k]->port, ip);
        push_tower(out, base, tw, l);
    }
    mp_ndr_push_u32(out, base, nh ? 0 : MP_EPT_S_NOT_REGISTERED);
    return 0;
}

uint32_t mp_epm_serve(const struct mp_epm_registry *reg, uint32_t ip, uint16_t opnum,
                      const uint8_t *stub, size_t len, struct mp_buf *out)
{
    struct mp_ndr_pull n;
    mp_ndr_pull_init(&n, stub, len);
    switch (opnum) {
    case MP_EPM_OP_MAP:
        return serve_map(reg, ip, &n, out);
    case MP_EPM_OP_LOOKUP:
        return serve_lookup(reg, ip, &n, out);
    case MP_EPM_OP_LOOKUP_HANDLE_FREE: {
        const uint8_t *h = mp_ndr_bytes(&n, 20);
        if (!h)
            return MP_NCA_S_FAULT_NDR;
        mp_ndr_push_bytes(out, zero_handle, 20);
        mp_ndr_push_u32(out, out->len - 20, 0);
        return 0;
    }
    default:
        return MP_NCA_OP_RNG_ERROR;
    }
}

int mp_epm_map_request(struct mp_buf *out, const struct mp_syntax *iface)
{
    uint8_t tw[128];
    size_t l = mp_tower_build(tw, sizeof(tw), iface, 0, 0);
    size_t base = out->len;
    static const uint8_t nil_uuid[16];
    return mp_ndr_push_u32(out, base, 1) || mp_ndr_push_bytes(out, nil_uuid, 16) ||
           mp_ndr_push_u32(out, base, 2) || push_tower(out, base, tw, l) ||
           mp_ndr_push_bytes(out, zero_handle, 20) || mp_ndr_push_u32(out, base, 4);
}

int mp_epm_map_response(const uint8_t *stub, size_t len, uint16_t *port, uint32_t *status)
{
    struct mp_ndr_pull n;
    mp_ndr_pull_init(&n, stub, len);
    *port = 0;
    mp_ndr_bytes(&n, 20);
    uint32_t num = mp_ndr_u32(&n);
    uint32_t max = mp_ndr_u32(&n);
    mp_ndr_u32(&n); /* offset */
    uint32_t actual = mp_ndr_u32(&n);
    if (n.err || actual > max || actual != num || actual > 64)
        return -1;
    uint32_t refs[64];
    for (uint32_t i = 0; i < actual; i++)
        refs[i] = mp_ndr_u32(&n);
    for (uint32_t i = 0; i < actual && !n.err; i++) {
        if (!refs[i])
            continue;
        uint32_t max_c = mp_ndr_u32(&n), l = mp_ndr_u32(&n);
        if (l > max_c || l > 4096)
            return -1;
        const uint8_t *t = mp_ndr_bytes(&n, l);
        mp_ndr_align(&n, 4);
        struct mp_tower tw;
        if (t && !*port && mp_tower_parse(t, l, &tw) == 0 && tw.port)
            *port = tw.port;
    }
    *status = mp_ndr_u32(&n);
    return n.err ? -1 : 0;
}
