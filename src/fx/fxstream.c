/* FastTransfer stream codec (MS-OXCFXICS 2.2.4); see fxstream.h and
 * doc/internals/fasttransfer.md. */
#include "fx/fxstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum st {
    ST_TAG,   /* 4 bytes: marker or property tag */
    ST_GUID,  /* named: property set GUID */
    ST_KIND,  /* named: 0x00 LID, 0x01 name */
    ST_LID,   /* named: u32 */
    ST_NAME,  /* named: UTF-16LE up to 00 00 */
    ST_COUNT, /* multi-valued: u32 count */
    ST_LEN,   /* variable size value: u32 length */
    ST_FIXED, /* fixed size value */
    ST_VAR,   /* variable size value bytes */
    ST_FAILED,
};

struct mp_fx_parser {
    mp_fx_cb cb;
    void *ud;
    enum st st;
    uint8_t scratch[16];
    uint32_t need, have;
    uint64_t off, atom_off;
    uint32_t coalesce;
    /* current property */
    struct mp_fx_event prop;
    struct mp_fx_named np;
    uint8_t name[MP_FX_NAME_MAX + 2];
    uint16_t base; /* type without the MV bit */
    int fixed;     /* size of base if fixed, else 0 */
    uint32_t left; /* bytes left of the current variable value */
    bool gather;   /* collect the current value in g */
    bool whole;    /* ... and deliver it as one DATA event */
    uint8_t *g;
    uint32_t glen, gcap;
    /* structure */
    uint8_t stack[MP_FX_MAX_DEPTH];
    int depth;
    bool in_change;
    int change_depth;
    char err[160];
};

static const struct {
    uint32_t tag;
    const char *name;
    enum mp_fx_elem elem;
    int dir; /* 1 begin, -1 end, 0 neither */
} markers[] = {
    {MP_FX_StartTopFld, "StartTopFld", MP_FX_E_FOLDER, 1},
    {MP_FX_StartSubFld, "StartSubFld", MP_FX_E_FOLDER, 1},
    {MP_FX_EndFolder, "EndFolder", MP_FX_E_FOLDER, -1},
    {MP_FX_StartMessage, "StartMessage", MP_FX_E_MESSAGE, 1},
    {MP_FX_StartFAIMsg, "StartFAIMsg", MP_FX_E_MESSAGE, 1},
    {MP_FX_EndMessage, "EndMessage", MP_FX_E_MESSAGE, -1},
    {MP_FX_StartRecip, "StartRecip", MP_FX_E_RECIP, 1},
    {MP_FX_EndToRecip, "EndToRecip", MP_FX_E_RECIP, -1},
    {MP_FX_NewAttach, "NewAttach", MP_FX_E_ATTACH, 1},
    {MP_FX_EndAttach, "EndAttach", MP_FX_E_ATTACH, -1},
    {MP_FX_StartEmbed, "StartEmbed", MP_FX_E_EMBED, 1},
    {MP_FX_EndEmbed, "EndEmbed", MP_FX_E_EMBED, -1},
    {MP_FX_IncrSyncStateBegin, "IncrSyncStateBegin", MP_FX_E_STATE, 1},
    {MP_FX_IncrSyncStateEnd, "IncrSyncStateEnd", MP_FX_E_STATE, -1},
    {MP_FX_IncrSyncChg, "IncrSyncChg", MP_FX_E_CHANGE, 0},
    {MP_FX_IncrSyncChgPartial, "IncrSyncChgPartial", MP_FX_E_CHANGE_PARTIAL, 0},
    {MP_FX_IncrSyncMessage, "IncrSyncMessage", MP_FX_E_CHANGE_BODY, 0},
    {MP_FX_IncrSyncDel, "IncrSyncDel", MP_FX_E_DELETIONS, 0},
    {MP_FX_IncrSyncRead, "IncrSyncRead", MP_FX_E_READ, 0},
    {MP_FX_IncrSyncProgressMode, "IncrSyncProgressMode", MP_FX_E_PROGRESS, 0},
    {MP_FX_IncrSyncProgressPerMsg, "IncrSyncProgressPerMsg", MP_FX_E_PROGRESS_MSG, 0},
    {MP_FX_IncrSyncGroupInfo, "IncrSyncGroupInfo", MP_FX_E_GROUP_INFO, 0},
    {MP_FX_IncrSyncEnd, "IncrSyncEnd", MP_FX_E_END, 0},
    {MP_FX_FXErrorInfo, "FXErrorInfo", MP_FX_E_ERROR_INFO, 0},
};
#define NMARKERS (sizeof markers / sizeof markers[0])

static int marker_index(uint32_t tag)
{
    for (size_t i = 0; i < NMARKERS; i++)
        if (markers[i].tag == tag)
            return (int)i;
    return -1;
}

bool mp_fx_is_marker(uint32_t tag)
{
    return marker_index(tag) >= 0;
}

const char *mp_fx_marker_name(uint32_t tag)
{
    int i = marker_index(tag);
    return i < 0 ? NULL : markers[i].name;
}

int mp_fx_type_size(uint16_t type)
{
    if (type & 0x8000)
        return 0; /* code page string */
    switch (type) {
    case 0x0002: /* Integer16 */
    case 0x000B: /* Boolean: two bytes in a FastTransfer stream */
        return 2;
    case 0x0003: /* Integer32 */
    case 0x0004: /* Floating32 */
    case 0x000A: /* ErrorCode */
        return 4;
    case 0x0005: /* Floating64 */
    case 0x0006: /* Currency */
    case 0x0007: /* FloatingTime */
    case 0x0014: /* Integer64 */
    case 0x0040: /* Time */
        return 8;
    case 0x0048: /* Guid */
        return 16;
    case 0x000D: /* Object */
    case 0x001E: /* String8 */
    case 0x001F: /* String */
    case 0x00FB: /* ServerId */
    case 0x0102: /* Binary */
        return 0;
    default:
        return -1;
    }
}

int mp_fx_idset_form(uint32_t tag)
{
    switch (tag) {
    case MP_FX_MetaTagIdsetGiven:
    case MP_FX_MetaTagCnsetSeen:
    case MP_FX_MetaTagCnsetSeenFAI:
    case MP_FX_MetaTagCnsetRead:
        return 1;
    case MP_FX_MetaTagIdsetDeleted:
    case MP_FX_MetaTagIdsetNoLongerInScope:
    case MP_FX_MetaTagIdsetExpired:
    case MP_FX_MetaTagIdsetRead:
    case MP_FX_MetaTagIdsetUnread:
        return 2;
    default:
        return 0;
    }
}

/* ---- IDSET ---- */

static uint64_t globcnt(const uint8_t b[6])
{
    uint64_t v = 0;
    for (int i = 0; i < 6; i++)
        v = v << 8 | b[i];
    return v;
}

/* One GLOBSET from p[*o]; 0 or -1. */
static int globset_decode(const uint8_t *p, size_t n, size_t *o, const uint8_t *repl,
                          size_t repl_len, mp_fx_idset_cb cb, void *ud)
{
    uint8_t stack[6];
    uint8_t pushed[6]; /* bytes each push added */
    int sp = 0, np = 0;
    while (*o < n) {
        uint8_t c = p[(*o)++];
        if (c == 0x00) /* End */
            return 0;
        if (c >= 0x01 && c <= 0x06) { /* Push */
            if (sp + c > 6 || n - *o < c)
                return -1;
            memcpy(stack + sp, p + *o, c);
            *o += c;
            sp += c;
            if (sp == 6) { /* a single GLOBCNT; popped at once */
                uint64_t v = globcnt(stack);
                if (cb && cb(ud, repl, repl_len, v, v))
                    return -1;
                sp -= c;
            } else {
                pushed[np++] = c;
            }
        } else if (c == 0x50) { /* Pop */
            if (np == 0)
                return -1;
            sp -= pushed[--np];
        } else if (c == 0x42) { /* Bitmask */
            if (sp != 5 || n - *o < 2)
                return -1;
            uint8_t b[6];
            memcpy(b, stack, 5);
            b[5] = p[*o];
            uint8_t mask = p[*o + 1];
            *o += 2;
            /* StartValue is in the set; bit i stands for StartValue + i + 1 */
            uint64_t base = globcnt(b);
            uint64_t rs = base;
            bool in = true;
            for (int i = 0; i <= 8; i++) {
                bool set = i < 8 && (mask & (1u << i));
                if (in && !set) {
                    if (cb && cb(ud, repl, repl_len, rs, base + (uint64_t)i))
                        return -1;
                    in = false;
                } else if (!in && set) {
                    rs = base + (uint64_t)i + 1;
                    in = true;
                }
            }
        } else if (c == 0x52) { /* Range */
            int k = 6 - sp;
            if (k < 1 || n - *o < (size_t)(2 * k))
                return -1;
            uint8_t lo[6], hi[6];
            memcpy(lo, stack, (size_t)sp);
            memcpy(hi, stack, (size_t)sp);
            memcpy(lo + sp, p + *o, (size_t)k);
            memcpy(hi + sp, p + *o + k, (size_t)k);
            *o += (size_t)(2 * k);
            uint64_t l = globcnt(lo), h = globcnt(hi);
            if (l > h)
                return -1;
            if (cb && cb(ud, repl, repl_len, l, h))
                return -1;
        } else {
            return -1;
        }
    }
    return -1; /* no End command */
}

int mp_fx_idset_decode(const uint8_t *p, size_t n, bool guid_form, mp_fx_idset_cb cb, void *ud)
{
    size_t o = 0, rl = guid_form ? 16 : 2;
    while (o < n) {
        if (n - o < rl + 1)
            return -1;
        const uint8_t *repl = p + o;
        o += rl;
        if (globset_decode(p, n, &o, repl, rl, cb, ud))
            return -1;
    }
    return 0;
}

/* ---- decoder ---- */

struct mp_fx_parser *mp_fx_parser_new(mp_fx_cb cb, void *ud)
{
    struct mp_fx_parser *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cb = cb;
    p->ud = ud;
    p->st = ST_TAG;
    p->need = 4;
    return p;
}

void mp_fx_parser_free(struct mp_fx_parser *p)
{
    if (!p)
        return;
    free(p->g);
    free(p);
}

void mp_fx_parser_set_coalesce(struct mp_fx_parser *p, uint32_t max)
{
    p->coalesce = max;
}

const char *mp_fx_error(const struct mp_fx_parser *p)
{
    return p->err[0] ? p->err : NULL;
}

uint64_t mp_fx_offset(const struct mp_fx_parser *p)
{
    return p->off;
}

size_t mp_fx_partial_tag(const struct mp_fx_parser *p)
{
    return p->st == ST_TAG ? p->have : 0;
}

static int fail(struct mp_fx_parser *p, const char *why)
{
    if (!p->err[0])
        snprintf(p->err, sizeof p->err, "FastTransfer stream at offset %llu (atom at %llu): %s",
                 (unsigned long long)p->off, (unsigned long long)p->atom_off, why);
    p->st = ST_FAILED;
    return MP_FX_ERR;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int emit(struct mp_fx_parser *p, struct mp_fx_event *ev)
{
    ev->depth = p->depth;
    int r = p->cb ? p->cb(p->ud, ev) : 0;
    if (r)
        p->st = ST_FAILED;
    return r;
}

static void expect(struct mp_fx_parser *p, enum st st, uint32_t need)
{
    p->st = st;
    p->need = need;
    p->have = 0;
}

static int change_end(struct mp_fx_parser *p)
{
    if (!p->in_change || p->depth != p->change_depth)
        return 0;
    p->in_change = false;
    struct mp_fx_event ev = {.kind = MP_FX_EV_CHANGE_END, .offset = p->atom_off};
    return emit(p, &ev);
}

static int on_marker(struct mp_fx_parser *p, int mi)
{
    int r;
    uint32_t tag = markers[mi].tag;
    switch (tag) {
    case MP_FX_IncrSyncChg:
    case MP_FX_IncrSyncChgPartial:
    case MP_FX_IncrSyncDel:
    case MP_FX_IncrSyncRead:
    case MP_FX_IncrSyncStateBegin:
    case MP_FX_IncrSyncEnd:
    case MP_FX_IncrSyncProgressPerMsg:
    case MP_FX_IncrSyncGroupInfo:
    case MP_FX_EndFolder:
    case MP_FX_EndMessage:
    case MP_FX_EndEmbed:
        if ((r = change_end(p)))
            return r;
        break;
    default:
        break;
    }
    struct mp_fx_event ev = {
        .kind = MP_FX_EV_MARKER, .tag = tag, .elem = markers[mi].elem, .offset = p->atom_off};
    if (markers[mi].dir > 0) {
        if (p->depth >= MP_FX_MAX_DEPTH)
            return fail(p, "elements nested too deep");
        p->stack[p->depth++] = (uint8_t)markers[mi].elem;
        ev.begin = true;
    } else if (markers[mi].dir < 0) {
        if (p->depth == 0 || p->stack[p->depth - 1] != markers[mi].elem)
            return fail(p, "end marker does not match the open element");
        if (p->in_change && p->depth <= p->change_depth)
            return fail(p, "end marker inside a message change");
        p->depth--;
        ev.end = true;
    }
    if (tag == MP_FX_IncrSyncChg || tag == MP_FX_IncrSyncChgPartial) {
        p->in_change = true;
        p->change_depth = p->depth;
    }
    return emit(p, &ev);
}

static int begin_value(struct mp_fx_parser *p)
{
    if (p->fixed > 0) {
        expect(p, ST_FIXED, (uint32_t)p->fixed);
        return 0;
    }
    expect(p, ST_LEN, 4);
    return 0;
}

static int value_end(struct mp_fx_parser *p, const uint8_t *all, size_t alln)
{
    struct mp_fx_event ev = p->prop;
    ev.kind = MP_FX_EV_VALUE_END;
    ev.p = all;
    ev.n = alln;
    int r;
    if (p->fixed > 0 && p->fixed <= 8) {
        uint64_t u = 0;
        for (int i = p->fixed - 1; i >= 0; i--)
            u = u << 8 | p->scratch[i];
        ev.u = u;
    }
    if ((r = emit(p, &ev)))
        return r;
    p->prop.index++;
    if (p->prop.mv && p->prop.index < p->prop.count)
        return begin_value(p);
    ev = p->prop;
    ev.kind = MP_FX_EV_PROP_END;
    if ((r = emit(p, &ev)))
        return r;
    expect(p, ST_TAG, 4);
    return 0;
}

static int value_start(struct mp_fx_parser *p, uint32_t len)
{
    p->prop.len = len;
    struct mp_fx_event ev = p->prop;
    ev.kind = MP_FX_EV_VALUE;
    return emit(p, &ev);
}

static int prop_header_done(struct mp_fx_parser *p)
{
    int r;
    struct mp_fx_event ev = p->prop;
    ev.kind = MP_FX_EV_PROP;
    if (!p->prop.mv && (r = emit(p, &ev)))
        return r;
    if (p->prop.mv) {
        expect(p, ST_COUNT, 4);
        return 0;
    }
    return begin_value(p);
}

static int on_tag(struct mp_fx_parser *p, uint32_t tag)
{
    int mi = marker_index(tag), r;
    if (mi >= 0) {
        if ((r = on_marker(p, mi)))
            return r;
        expect(p, ST_TAG, 4);
        return 0;
    }
    if (tag == MP_FX_MetaTagIncrSyncGroupId && (r = change_end(p)))
        return r;
    uint16_t type = (uint16_t)(tag & 0xFFFF);
    if (tag == MP_FX_MetaTagIdsetGiven)
        type = 0x0102; /* MS-OXCFXICS 3.2.5.2.1: serialized as binary */
    memset(&p->prop, 0, sizeof p->prop);
    p->prop.tag = tag;
    p->prop.type = type;
    p->prop.offset = p->atom_off;
    p->base = type;
    if (!(type & 0x8000) && (type & 0x1000)) {
        p->prop.mv = true;
        p->base = type & ~0x1000;
        switch (p->base) {
        case 0x0002:
        case 0x0003:
        case 0x0004:
        case 0x0005:
        case 0x0006:
        case 0x0007:
        case 0x0014:
        case 0x0040:
        case 0x0048:
        case 0x001E:
        case 0x001F:
        case 0x0102:
            break;
        default:
            return fail(p, "multi-valued property of a type FastTransfer does not carry");
        }
    }
    int sz = mp_fx_type_size(p->base);
    if (sz < 0)
        return fail(p, "property of an unknown type");
    p->fixed = sz;
    if ((tag >> 16) >= 0x8000) {
        p->prop.named = true;
        memset(&p->np, 0, sizeof p->np);
        p->prop.np = &p->np;
        expect(p, ST_GUID, 16);
        return 0;
    }
    return prop_header_done(p);
}

static void gather_reset(struct mp_fx_parser *p, uint32_t len)
{
    int form = mp_fx_idset_form(p->prop.tag);
    p->whole = len <= p->coalesce;
    p->gather = p->whole || (form && len <= MP_FX_IDSET_MAX);
    p->glen = 0;
}

static int gather_add(struct mp_fx_parser *p, const uint8_t *b, size_t n)
{
    if (p->glen + n > p->gcap) {
        size_t cap = p->gcap ? p->gcap : 256;
        while (cap < p->glen + n)
            cap *= 2;
        uint8_t *g = realloc(p->g, cap);
        if (!g) {
            p->st = ST_FAILED;
            return MP_FX_NOMEM;
        }
        p->g = g;
        p->gcap = (uint32_t)cap;
    }
    memcpy(p->g + p->glen, b, n);
    p->glen += (uint32_t)n;
    return 0;
}

static int var_done(struct mp_fx_parser *p)
{
    int r;
    const uint8_t *all = NULL;
    size_t alln = 0;
    if (p->gather) {
        all = p->g;
        alln = p->glen;
        if (p->whole && alln) {
            struct mp_fx_event ev = p->prop;
            ev.kind = MP_FX_EV_DATA;
            ev.p = all;
            ev.n = alln;
            if ((r = emit(p, &ev)))
                return r;
        }
        int form = mp_fx_idset_form(p->prop.tag);
        if (form && mp_fx_idset_decode(all, alln, form == 1, NULL, NULL))
            return fail(p, "malformed IDSET");
    }
    return value_end(p, all, alln);
}

/* Consume bytes of a fixed-width piece into scratch (or name). */
static int step(struct mp_fx_parser *p)
{
    int r;
    switch (p->st) {
    case ST_TAG:
        return on_tag(p, le32(p->scratch));
    case ST_GUID:
        memcpy(p->np.guid, p->scratch, 16);
        expect(p, ST_KIND, 1);
        return 0;
    case ST_KIND:
        p->np.kind = p->scratch[0];
        if (p->np.kind == 0) {
            expect(p, ST_LID, 4);
        } else if (p->np.kind == 1) {
            p->np.name = p->name;
            p->np.name_len = 0;
            expect(p, ST_NAME, 2);
        } else {
            return fail(p, "named property kind is neither 0 (LID) nor 1 (name)");
        }
        return 0;
    case ST_LID:
        p->np.lid = le32(p->scratch);
        return prop_header_done(p);
    case ST_NAME:
        if (p->scratch[0] == 0 && p->scratch[1] == 0)
            return prop_header_done(p);
        if (p->np.name_len + 2 > MP_FX_NAME_MAX)
            return fail(p, "property name too long");
        memcpy(p->name + p->np.name_len, p->scratch, 2);
        p->np.name_len += 2;
        expect(p, ST_NAME, 2);
        return 0;
    case ST_COUNT: {
        p->prop.count = le32(p->scratch);
        struct mp_fx_event ev = p->prop;
        ev.kind = MP_FX_EV_PROP;
        if ((r = emit(p, &ev)))
            return r;
        if (p->prop.count == 0) {
            ev.kind = MP_FX_EV_PROP_END;
            if ((r = emit(p, &ev)))
                return r;
            expect(p, ST_TAG, 4);
            return 0;
        }
        return begin_value(p);
    }
    case ST_LEN: {
        uint32_t len = le32(p->scratch);
        if ((r = value_start(p, len)))
            return r;
        gather_reset(p, len);
        p->left = len;
        if (len == 0)
            return var_done(p);
        p->st = ST_VAR;
        return 0;
    }
    case ST_FIXED: {
        if ((r = value_start(p, (uint32_t)p->fixed)))
            return r;
        struct mp_fx_event ev = p->prop;
        ev.kind = MP_FX_EV_DATA;
        ev.p = p->scratch;
        ev.n = (size_t)p->fixed;
        if ((r = emit(p, &ev)))
            return r;
        return value_end(p, p->scratch, (size_t)p->fixed);
    }
    default:
        return fail(p, "internal state");
    }
}

int mp_fx_feed(struct mp_fx_parser *p, const uint8_t *buf, size_t n)
{
    int r;
    if (p->st == ST_FAILED)
        return MP_FX_ERR;
    while (n) {
        if (p->st == ST_VAR) {
            size_t k = n < p->left ? n : p->left;
            if (p->gather && (r = gather_add(p, buf, k)))
                return r;
            if (!p->whole) {
                struct mp_fx_event ev = p->prop;
                ev.kind = MP_FX_EV_DATA;
                ev.p = buf;
                ev.n = k;
                if ((r = emit(p, &ev)))
                    return r;
            }
            p->left -= (uint32_t)k;
            p->off += k;
            buf += k;
            n -= k;
            if (p->left == 0 && (r = var_done(p)))
                return r;
            continue;
        }
        if (p->st == ST_TAG && p->have == 0)
            p->atom_off = p->off;
        size_t k = p->need - p->have;
        if (k > n)
            k = n;
        memcpy(p->scratch + p->have, buf, k);
        p->have += (uint32_t)k;
        p->off += k;
        buf += k;
        n -= k;
        if (p->have == p->need && (r = step(p)))
            return r;
    }
    return 0;
}

int mp_fx_finish(struct mp_fx_parser *p)
{
    if (p->st == ST_FAILED)
        return MP_FX_ERR;
    if (p->st != ST_TAG || p->have != 0)
        return fail(p, "stream ends inside an atom");
    int r = change_end(p);
    if (r)
        return r;
    if (p->depth)
        return fail(p, "stream ends with an element open");
    return 0;
}

/* ---- encoder ---- */

void mp_fx_enc_init(struct mp_fx_enc *e)
{
    memset(e, 0, sizeof *e);
}

void mp_fx_enc_free(struct mp_fx_enc *e)
{
    free(e->out);
    memset(e, 0, sizeof *e);
}

static void put(struct mp_fx_enc *e, const void *b, size_t n)
{
    if (e->err || n == 0)
        return;
    if (e->len + n > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap < e->len + n)
            cap *= 2;
        uint8_t *o = realloc(e->out, cap);
        if (!o) {
            e->err = MP_FX_NOMEM;
            return;
        }
        e->out = o;
        e->cap = cap;
    }
    memcpy(e->out + e->len, b, n);
    e->len += n;
}

static void put32(struct mp_fx_enc *e, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(e, b, 4);
}

static void put_named(struct mp_fx_enc *e, uint32_t tag, const struct mp_fx_named *np)
{
    if ((tag >> 16) < 0x8000)
        return;
    if (!np) {
        e->err = MP_FX_ERR;
        return;
    }
    put(e, np->guid, 16);
    put(e, &np->kind, 1);
    if (np->kind == 0) {
        put32(e, np->lid);
    } else {
        put(e, np->name, np->name_len);
        put(e, "\0\0", 2);
    }
}

int mp_fx_enc_event(struct mp_fx_enc *e, const struct mp_fx_event *ev)
{
    switch (ev->kind) {
    case MP_FX_EV_MARKER:
        put32(e, ev->tag);
        break;
    case MP_FX_EV_PROP:
        put32(e, ev->tag);
        put_named(e, ev->tag, ev->named ? ev->np : NULL);
        if (ev->mv)
            put32(e, ev->count);
        break;
    case MP_FX_EV_VALUE: {
        int sz = mp_fx_type_size(ev->mv ? (uint16_t)(ev->type & ~0x1000) : ev->type);
        if (sz == 0)
            put32(e, ev->len);
        e->left = ev->len;
        break;
    }
    case MP_FX_EV_DATA:
        if (ev->n > e->left) {
            e->err = MP_FX_ERR;
            break;
        }
        put(e, ev->p, ev->n);
        e->left -= (uint32_t)ev->n;
        break;
    case MP_FX_EV_VALUE_END:
        if (e->left)
            e->err = MP_FX_ERR;
        break;
    default:
        break;
    }
    return e->err;
}

int mp_fx_enc_raw(struct mp_fx_enc *e, const uint8_t *p, size_t n)
{
    put(e, p, n);
    return e->err;
}

int mp_fx_enc_marker(struct mp_fx_enc *e, uint32_t tag)
{
    put32(e, tag);
    return e->err;
}

int mp_fx_enc_fixed(struct mp_fx_enc *e, uint32_t tag, const struct mp_fx_named *np, uint64_t u)
{
    int sz = mp_fx_type_size((uint16_t)tag);
    if (sz <= 0 || sz > 8)
        return e->err = MP_FX_ERR;
    put32(e, tag);
    put_named(e, tag, np);
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(u >> (8 * i));
    put(e, b, (size_t)sz);
    return e->err;
}

int mp_fx_enc_var(struct mp_fx_enc *e, uint32_t tag, const struct mp_fx_named *np, const uint8_t *v,
                  uint32_t n)
{
    uint16_t type = tag == MP_FX_MetaTagIdsetGiven ? 0x0102 : (uint16_t)tag;
    if (mp_fx_type_size(type) != 0 || (!(type & 0x8000) && (type & 0x1000)))
        return e->err = MP_FX_ERR;
    put32(e, tag);
    put_named(e, tag, np);
    put32(e, n);
    put(e, v, n);
    return e->err;
}
