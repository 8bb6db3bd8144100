/* MAPI over HTTP bodies (MS-OXCMAPIHTTP 2.2.4, 2.2.5) <-> the generated RPC
 * call structures.  One walker per request type serves both directions: in
 * decode mode the field helpers read and fill the structures, in encode
 * mode they write what the structures hold.  See body.h and
 * doc/internals/mapihttp.md. */
#include "transport/mapihttp/body.h"

#include <string.h>
#include <strings.h>

#include "core/arena.h"
#include "core/json.h"

#define PT_UNSPECIFIED 0x0000u
#define PT_ERROR 0x000Au
#define PT_OBJECT 0x000Du
#define MAPI_E_NOT_FOUND 0x8004010Fu
#define MAX_DEPTH 32
#define MAX_ROW_VALUES 1000000u /* values in one row set */

static const struct mp_mh_kind_info kinds[MP_MH_N_KINDS] = {
    [MP_MH_CONNECT] = {"Connect", "emsmdb", "emsmdb", 10},
    [MP_MH_EXECUTE] = {"Execute", "emsmdb", "emsmdb", 11},
    [MP_MH_DISCONNECT] = {"Disconnect", "emsmdb", "emsmdb", 1},
    [MP_MH_NOTIFICATIONWAIT] = {"NotificationWait", "emsmdb", NULL, -1},
    [MP_MH_PING] = {"PING", "emsmdb", NULL, -1},
    [MP_MH_BIND] = {"Bind", "nspi", "nspi", 0},
    [MP_MH_UNBIND] = {"Unbind", "nspi", "nspi", 1},
    [MP_MH_COMPAREMIDS] = {"CompareMIds", "nspi", "nspi", 10},
    [MP_MH_DNTOMID] = {"DNToMId", "nspi", "nspi", 7},
    [MP_MH_GETMATCHES] = {"GetMatches", "nspi", "nspi", 5},
    [MP_MH_GETPROPLIST] = {"GetPropList", "nspi", "nspi", 8},
    [MP_MH_GETPROPS] = {"GetProps", "nspi", "nspi", 9},
    [MP_MH_GETSPECIALTABLE] = {"GetSpecialTable", "nspi", "nspi", 12},
    [MP_MH_GETTEMPLATEINFO] = {"GetTemplateInfo", "nspi", "nspi", 13},
    [MP_MH_MODLINKATT] = {"ModLinkAtt", "nspi", "nspi", 14},
    [MP_MH_MODPROPS] = {"ModProps", "nspi", "nspi", 11},
    [MP_MH_QUERYCOLUMNS] = {"QueryColumns", "nspi", "nspi", 16},
    [MP_MH_QUERYROWS] = {"QueryRows", "nspi", "nspi", 3},
    [MP_MH_RESOLVENAMES] = {"ResolveNames", "nspi", "nspi", 20},
    [MP_MH_RESORTRESTRICTION] = {"ResortRestriction", "nspi", "nspi", 6},
    [MP_MH_SEEKENTRIES] = {"SeekEntries", "nspi", "nspi", 4},
    [MP_MH_UPDATESTAT] = {"UpdateStat", "nspi", "nspi", 2},
    [MP_MH_GETMAILBOXURL] = {"GetMailboxUrl", "nspi", NULL, -1},
    [MP_MH_GETADDRESSBOOKURL] = {"GetAddressBookUrl", "nspi", NULL, -1},
};

const struct mp_mh_kind_info *mp_mh_kind_info(enum mp_mh_kind k)
{
    return (unsigned)k < MP_MH_N_KINDS ? &kinds[k] : NULL;
}

/* Request bodies hold little: DNs, a few counts, the auxiliary buffer
 * (at most 0x1008 bytes, MS-OXCRPC's SMALL_RANGE_ULONG).  Execute carries a
 * ROP buffer bounded like EcDoRpcExt2's (0x40000, BIG_RANGE_ULONG) plus the
 * auxiliary buffer; the NSPI calls with property values, restrictions or
 * name lists get 1 MiB, ModProps 4 MiB (a PtypBinary value may be up to
 * 2 MiB, nspi.idl). */
size_t mp_mh_max_request_body(enum mp_mh_kind k)
{
    switch (k) {
    case MP_MH_EXECUTE:
        return 0x40000 + (8u << 10);
    case MP_MH_DNTOMID:
    case MP_MH_GETMATCHES:
    case MP_MH_GETPROPS:
    case MP_MH_MODLINKATT:
    case MP_MH_QUERYROWS:
    case MP_MH_RESOLVENAMES:
    case MP_MH_RESORTRESTRICTION:
    case MP_MH_SEEKENTRIES:
        return 1u << 20;
    case MP_MH_MODPROPS:
        return 4u << 20;
    default:
        return 64u << 10;
    }
}

int mp_mh_kind_lookup(const char *name)
{
    for (int k = 0; k < MP_MH_N_KINDS; k++)
        if (name && !strcasecmp(kinds[k].name, name))
            return k;
    return -1;
}

const struct mp_call_codec *mp_mh_twin(enum mp_mh_kind k)
{
    const struct mp_mh_kind_info *ki = mp_mh_kind_info(k);
    if (!ki || !ki->twin_iface)
        return NULL;
    const struct mp_codec_iface *i = mp_codec_iface_lookup(ki->twin_iface);
    return i ? mp_codec_iface_call(i, (uint16_t)ki->twin_opnum) : NULL;
}

static const char *const rc_names[] = {
    "Success",
    "Unknown Failure",
    "Invalid Verb",
    "Invalid Path",
    "Invalid Header",
    "Invalid Request Type",
    "Invalid Context Cookie",
    "Missing Header",
    "Anonymous Not Allowed",
    "Too Large",
    "Context Not Found",
    "No Privilege",
    "Invalid Request Body",
    "Missing Cookie",
    "Reserved",
    "Invalid Sequence",
    "Endpoint Disabled",
    "Invalid Response",
    "Endpoint Shutting Down",
};

const char *mp_mh_response_code_name(uint32_t code)
{
    return code < sizeof rc_names / sizeof rc_names[0] ? rc_names[code] : NULL;
}

uint32_t mp_mh_request_error_code(int rc)
{
    return rc == MP_MH_EMALFORMED ? MP_MH_RC_INVALID_REQUEST_BODY : MP_MH_RC_SUCCESS;
}

/* ---- UTF-16 <-> UTF-8 ------------------------------------------------- */

char *mp_mh_utf16_to_utf8(const uint16_t *s, struct mp_arena *a)
{
    size_t n = 0;
    while (s[n])
        n++;
    char *o = mp_arena_alloc(a, n * 3 + 1), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = s[i];
        if (cp >= 0xD800 && cp < 0xDC00 && i + 1 < n && s[i + 1] >= 0xDC00 && s[i + 1] < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (s[i + 1] - 0xDC00u);
            i++;
        } else if (cp >= 0xD800 && cp < 0xE000) {
            cp = 0xFFFD;
        }
        if (cp < 0x80) {
            *q++ = (char)cp;
        } else if (cp < 0x800) {
            *q++ = (char)(0xC0 | cp >> 6);
            *q++ = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *q++ = (char)(0xE0 | cp >> 12);
            *q++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *q++ = (char)(0x80 | (cp & 0x3F));
        } else {
            *q++ = (char)(0xF0 | cp >> 18);
            *q++ = (char)(0x80 | ((cp >> 12) & 0x3F));
            *q++ = (char)(0x80 | ((cp >> 6) & 0x3F));
            *q++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    *q = 0;
    return o;
}

uint16_t *mp_mh_utf8_to_utf16(const char *s8, struct mp_arena *a)
{
    const uint8_t *s = (const uint8_t *)s8;
    size_t n = strlen(s8);
    uint16_t *o = mp_arena_calloc(a, n + 1, 2), *q = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0xFFFD, c = s[i];
        size_t k = 1;
        if (c < 0x80) {
            cp = c;
        } else if ((c & 0xE0) == 0xC0 && i + 1 < n && (s[i + 1] & 0xC0) == 0x80) {
            cp = (c & 0x1Fu) << 6 | (s[i + 1] & 0x3Fu);
            k = 2;
        } else if ((c & 0xF0) == 0xE0 && i + 2 < n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80) {
            cp = (c & 0x0Fu) << 12 | (s[i + 1] & 0x3Fu) << 6 | (s[i + 2] & 0x3Fu);
            k = 3;
        } else if ((c & 0xF8) == 0xF0 && i + 3 < n && (s[i + 1] & 0xC0) == 0x80 &&
                   (s[i + 2] & 0xC0) == 0x80 && (s[i + 3] & 0xC0) == 0x80) {
            cp = (c & 0x07u) << 18 | (s[i + 1] & 0x3Fu) << 12 | (s[i + 2] & 0x3Fu) << 6 |
                 (s[i + 3] & 0x3Fu);
            k = 4;
        }
        i += k;
        if (cp >= 0x10000 && cp < 0x110000) {
            cp -= 0x10000;
            *q++ = (uint16_t)(0xD800 + (cp >> 10));
            *q++ = (uint16_t)(0xDC00 + (cp & 0x3FF));
        } else {
            *q++ = (uint16_t)(cp < 0x110000 ? cp : 0xFFFD);
        }
    }
    *q = 0;
    return o;
}

/* ---- the two-way cursor ------------------------------------------------ */

struct cx {
    bool enc;
    int err; /* sticky: MP_MH_EMALFORMED / MP_MH_EUNSUPPORTED (decode), -1 (encode) */
    /* decode */
    const uint8_t *p;
    size_t n, off;
    struct mp_arena *a;
    /* encode */
    struct mp_buf *b;
    uint32_t kb, kf; /* next recorded bool / flag byte */
    struct mp_mh_side *s;
    unsigned depth;
};

static void fail(struct cx *c, int e)
{
    if (!c->err)
        c->err = e;
}

static bool need(struct cx *c, size_t k)
{
    if (c->err)
        return false;
    if (c->n - c->off < k) {
        fail(c, MP_MH_EMALFORMED);
        return false;
    }
    return true;
}

static void put(struct cx *c, const void *p, size_t k)
{
    if (!c->err && k && mp_buf_append(c->b, p, k))
        fail(c, -1);
}

static void *alloc(struct cx *c, size_t size)
{
    void *p = mp_arena_alloc(c->a, size);
    if (!p)
        fail(c, MP_MH_EMALFORMED);
    return p;
}

/* count elements of elsize bytes in memory and at least min_wire bytes each
 * on the wire; refused before allocating when the rest cannot hold them. */
static void *alloc_n(struct cx *c, uint32_t count, size_t elsize, size_t min_wire)
{
    if (c->err)
        return NULL;
    if (min_wire && count > (c->n - c->off) / min_wire) {
        fail(c, MP_MH_EMALFORMED);
        return NULL;
    }
    void *p = mp_arena_calloc(c->a, count ? count : 1, elsize);
    if (!p)
        fail(c, MP_MH_EMALFORMED);
    return p;
}

static void f_u8(struct cx *c, uint8_t *v)
{
    if (c->enc) {
        put(c, v, 1);
    } else if (need(c, 1)) {
        *v = c->p[c->off++];
    }
}

static void f_u16(struct cx *c, uint16_t *v)
{
    if (c->enc) {
        uint8_t t[2] = {(uint8_t)*v, (uint8_t)(*v >> 8)};
        put(c, t, 2);
    } else if (need(c, 2)) {
        *v = (uint16_t)(c->p[c->off] | c->p[c->off + 1] << 8);
        c->off += 2;
    }
}

static void f_u32(struct cx *c, uint32_t *v)
{
    if (c->enc) {
        uint8_t t[4] = {(uint8_t)*v, (uint8_t)(*v >> 8), (uint8_t)(*v >> 16), (uint8_t)(*v >> 24)};
        put(c, t, 4);
    } else if (need(c, 4)) {
        const uint8_t *q = c->p + c->off;
        *v = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        c->off += 4;
    }
}

static void f_i32(struct cx *c, int32_t *v)
{
    uint32_t u = (uint32_t)*v;
    f_u32(c, &u);
    *v = (int32_t)u;
}

static void f_i16(struct cx *c, int16_t *v)
{
    uint16_t u = (uint16_t)*v;
    f_u16(c, &u);
    *v = (int16_t)u;
}

/* A 32-bit field the twin holds in a narrower or wider member. */
static void f_u32_as8(struct cx *c, uint32_t *v)
{
    if (c->enc && *v > 0xFF)
        fail(c, -1);
    uint8_t b = (uint8_t)*v;
    f_u8(c, &b);
    *v = b;
}

static void f_fixed(struct cx *c, uint8_t *p, size_t k)
{
    if (c->enc) {
        put(c, p, k);
    } else if (need(c, k)) {
        memcpy(p, c->p + c->off, k);
        c->off += k;
    }
}

/* k bytes into a fresh arena copy (non-NULL even for k = 0). */
static void f_bytes(struct cx *c, uint8_t **p, uint32_t k)
{
    if (c->enc) {
        if (k && !*p)
            fail(c, -1);
        else
            put(c, *p, k);
    } else if (need(c, k)) {
        *p = alloc(c, k);
        if (*p)
            memcpy(*p, c->p + c->off, k);
        c->off += k;
    }
}

/* Size (4 bytes) then that many bytes. */
static void f_blob(struct cx *c, uint32_t *len, uint8_t **p)
{
    f_u32(c, len);
    f_bytes(c, p, *len);
    if (!c->enc && !*len && !c->err)
        *p = NULL;
}

static void f_astr(struct cx *c, char **s)
{
    if (c->enc) {
        if (!*s)
            fail(c, -1);
        else
            put(c, *s, strlen(*s) + 1);
        return;
    }
    if (c->err)
        return;
    const uint8_t *q = memchr(c->p + c->off, 0, c->n - c->off);
    if (!q) {
        fail(c, MP_MH_EMALFORMED);
        return;
    }
    size_t k = (size_t)(q - (c->p + c->off)) + 1;
    *s = alloc(c, k);
    if (*s)
        memcpy(*s, c->p + c->off, k);
    c->off += k;
}

static void f_wstr(struct cx *c, uint16_t **s)
{
    if (c->enc) {
        if (!*s) {
            fail(c, -1);
            return;
        }
        size_t k = 0;
        do {
            uint16_t u = (*s)[k];
            f_u16(c, &u);
        } while ((*s)[k++]);
        return;
    }
    if (c->err)
        return;
    size_t k = 0, avail = (c->n - c->off) / 2;
    const uint8_t *q = c->p + c->off;
    while (k < avail && (q[2 * k] | q[2 * k + 1]))
        k++;
    if (k == avail) {
        fail(c, MP_MH_EMALFORMED);
        return;
    }
    uint16_t *o = alloc_n(c, (uint32_t)(k + 1), 2, 0);
    if (!o)
        return;
    for (size_t i = 0; i < k; i++)
        o[i] = (uint16_t)(q[2 * i] | q[2 * i + 1] << 8);
    *s = o;
    c->off += 2 * (k + 1);
}

/* A boolean byte: recorded on decode, reused on encode when it still says
 * the same (0x00 false, anything else true). */
static bool f_has(struct cx *c, bool present)
{
    if (c->enc) {
        uint8_t v = present ? 0xFF : 0x00;
        if (c->kb < c->s->n_bools && (c->s->bools[c->kb] != 0) == present)
            v = c->s->bools[c->kb];
        c->kb++;
        put(c, &v, 1);
        return present;
    }
    uint8_t v = 0;
    f_u8(c, &v);
    if (c->err)
        return false;
    c->s->bools[c->s->n_bools++] = v;
    return v != 0;
}

/* The next recorded row/value flag byte on encode, -1 if none. */
static int next_flag(struct cx *c)
{
    return c->kf < c->s->n_flags ? c->s->flags[c->kf++] : -1;
}

static uint8_t rd_flag(struct cx *c)
{
    uint8_t v = 0;
    f_u8(c, &v);
    if (!c->err)
        c->s->flags[c->s->n_flags++] = v;
    return v;
}

static void wr_flag(struct cx *c, uint8_t v)
{
    put(c, &v, 1);
}

/* Optional flattened field: the Has byte, recorded in side->absent. */
static bool f_opt(struct cx *c, uint32_t bit)
{
    bool present = f_has(c, !(c->s->absent & bit));
    if (!c->enc && !present)
        c->s->absent |= bit;
    return present;
}

static void f_stat(struct cx *c, struct nspi_STAT *st)
{
    f_u32(c, &st->SortType);
    f_u32(c, &st->ContainerID);
    f_u32(c, &st->CurrentRec);
    f_i32(c, &st->Delta);
    f_u32(c, &st->NumPos);
    f_u32(c, &st->TotalRecs);
    f_u32(c, &st->CodePage);
    f_u32(c, &st->TemplateLocale);
    f_u32(c, &st->SortLocale);
}

static void f_opt_stat(struct cx *c, struct nspi_STAT *st)
{
    if (f_opt(c, MP_MH_ABSENT_STATE))
        f_stat(c, st);
}

static void f_side_aux(struct cx *c)
{
    f_blob(c, &c->s->aux_len, &c->s->aux);
}

/* LargePropertyTagArray: count, then 4-byte tags (or minimal ids). */
static void f_tags(struct cx *c, struct nspi_PropertyTagArray_r *t)
{
    f_u32(c, &t->cValues);
    if (!c->enc)
        t->aulPropTag = alloc_n(c, t->cValues, 4, 4);
    else if (t->cValues && !t->aulPropTag)
        fail(c, -1);
    for (uint32_t i = 0; i < t->cValues && !c->err; i++)
        f_u32(c, &t->aulPropTag[i]);
}

static void f_opt_tags(struct cx *c, struct nspi_PropertyTagArray_r **pp)
{
    if (!f_has(c, *pp != NULL))
        return;
    if (!c->enc)
        *pp = alloc(c, sizeof **pp);
    if (*pp)
        f_tags(c, *pp);
}

/* ---- property values (AddressBookPropertyValue) -------------------------
 * PtypString8, PtypString, PtypBinary and the multi-valued types start with
 * a HasValue byte; a value that is not there is a NULL pointer in the twin.
 * Counts and binary sizes are 4 bytes. */

/* Presence of a pointer-carrying value; a count without its array is an
 * encode error. */
static bool f_has_ptr(struct cx *c, const void *ptr)
{
    return f_has(c, ptr != NULL);
}

static void f_mv_count(struct cx *c, uint32_t *cnt, void **arr, size_t elsize, size_t min_wire)
{
    f_u32(c, cnt);
    if (!c->enc)
        *arr = alloc_n(c, *cnt, elsize, min_wire);
    else if (*cnt && !*arr)
        fail(c, -1);
}

static void f_pv(struct cx *c, uint32_t type, union nspi_PROP_VAL_UNION *u)
{
    switch (type) {
    case 0x0002:
        f_i16(c, &u->i);
        break;
    case 0x0003:
        f_i32(c, &u->l);
        break;
    case PT_ERROR:
        f_i32(c, &u->err);
        break;
    case 0x000B: {
        uint32_t v = u->b;
        f_u32_as8(c, &v);
        u->b = (uint16_t)v;
        break;
    }
    case 0x0040:
        f_u32(c, &u->ft.dwLowDateTime);
        f_u32(c, &u->ft.dwHighDateTime);
        break;
    case 0x0048:
        if (!c->enc)
            u->lpguid = alloc(c, sizeof *u->lpguid);
        else if (!u->lpguid)
            fail(c, -1);
        if (u->lpguid)
            f_fixed(c, u->lpguid->ab, 16);
        break;
    case 0x0001:    /* PtypNull */
    case PT_OBJECT: /* nothing on the wire; the twin's lReserved arm */
        break;
    case 0x001E:
        if (f_has_ptr(c, u->lpszA))
            f_astr(c, &u->lpszA);
        break;
    case 0x001F:
        if (f_has_ptr(c, u->lpszW))
            f_wstr(c, &u->lpszW);
        break;
    case 0x0102:
        if (f_has_ptr(c, u->bin.lpb)) {
            f_u32(c, &u->bin.cb);
            f_bytes(c, &u->bin.lpb, u->bin.cb);
        }
        break;
    case 0x1002:
        if (f_has_ptr(c, u->MVi.lpi)) {
            f_mv_count(c, &u->MVi.cValues, (void **)&u->MVi.lpi, 2, 2);
            for (uint32_t i = 0; i < u->MVi.cValues && !c->err; i++)
                f_i16(c, &u->MVi.lpi[i]);
        }
        break;
    case 0x1003:
        if (f_has_ptr(c, u->MVl.lpl)) {
            f_mv_count(c, &u->MVl.cValues, (void **)&u->MVl.lpl, 4, 4);
            for (uint32_t i = 0; i < u->MVl.cValues && !c->err; i++)
                f_i32(c, &u->MVl.lpl[i]);
        }
        break;
    case 0x101E:
        if (f_has_ptr(c, u->MVszA.lppszA)) {
            f_mv_count(c, &u->MVszA.cValues, (void **)&u->MVszA.lppszA, sizeof(char *), 1);
            for (uint32_t i = 0; i < u->MVszA.cValues && !c->err; i++)
                if (f_has_ptr(c, u->MVszA.lppszA[i]))
                    f_astr(c, &u->MVszA.lppszA[i]);
        }
        break;
    case 0x101F:
        if (f_has_ptr(c, u->MVszW.lppszW)) {
            f_mv_count(c, &u->MVszW.cValues, (void **)&u->MVszW.lppszW, sizeof(uint16_t *), 1);
            for (uint32_t i = 0; i < u->MVszW.cValues && !c->err; i++)
                if (f_has_ptr(c, u->MVszW.lppszW[i]))
                    f_wstr(c, &u->MVszW.lppszW[i]);
        }
        break;
    case 0x1102:
        if (f_has_ptr(c, u->MVbin.lpbin)) {
            f_mv_count(c, &u->MVbin.cValues, (void **)&u->MVbin.lpbin, sizeof(struct nspi_Binary_r),
                       1);
            for (uint32_t i = 0; i < u->MVbin.cValues && !c->err; i++) {
                struct nspi_Binary_r *bn = &u->MVbin.lpbin[i];
                if (f_has_ptr(c, bn->lpb)) {
                    f_u32(c, &bn->cb);
                    f_bytes(c, &bn->lpb, bn->cb);
                }
            }
        }
        break;
    case 0x1048:
        if (f_has_ptr(c, u->MVguid.lpguid)) {
            f_mv_count(c, &u->MVguid.cValues, (void **)&u->MVguid.lpguid,
                       sizeof(struct nspi_FlatUID_r *), 16);
            for (uint32_t i = 0; i < u->MVguid.cValues && !c->err; i++) {
                if (!c->enc)
                    u->MVguid.lpguid[i] = alloc(c, sizeof(struct nspi_FlatUID_r));
                else if (!u->MVguid.lpguid[i])
                    fail(c, -1);
                if (u->MVguid.lpguid[i])
                    f_fixed(c, u->MVguid.lpguid[i]->ab, 16);
            }
        }
        break;
    case 0x1040:
        if (f_has_ptr(c, u->MVft.lpft)) {
            f_mv_count(c, &u->MVft.cValues, (void **)&u->MVft.lpft, sizeof(struct nspi_FILETIME),
                       8);
            for (uint32_t i = 0; i < u->MVft.cValues && !c->err; i++) {
                f_u32(c, &u->MVft.lpft[i].dwLowDateTime);
                f_u32(c, &u->MVft.lpft[i].dwHighDateTime);
            }
        }
        break;
    default: /* no arm in PROP_VAL_UNION (PtypInteger64, PtypFloating64, PtypNull, ...) */
        fail(c, c->enc ? -1 : MP_MH_EUNSUPPORTED);
    }
}

/* AddressBookTaggedPropertyValue: tag, then the value of its type. */
static void f_tagged(struct cx *c, struct nspi_PropertyValue_r *v)
{
    f_u32(c, &v->ulPropTag);
    if (!c->err)
        f_pv(c, v->ulPropTag & 0xFFFF, &v->Value);
}

/* AddressBookPropertyValueList: count, tagged values. */
static void f_pvlist(struct cx *c, struct nspi_PropertyRow_r *row)
{
    f_u32(c, &row->cValues);
    if (!c->enc)
        row->lpProps = alloc_n(c, row->cValues, sizeof *row->lpProps, 4);
    else if (row->cValues && !row->lpProps)
        fail(c, -1);
    for (uint32_t i = 0; i < row->cValues && !c->err; i++)
        f_tagged(c, &row->lpProps[i]);
}

static void f_opt_pvlist(struct cx *c, struct nspi_PropertyRow_r **pp)
{
    if (!f_has(c, *pp != NULL))
        return;
    if (!c->enc)
        *pp = alloc(c, sizeof **pp);
    if (*pp)
        f_pvlist(c, *pp);
}

/* ---- AddressBookPropertyRow sets ---------------------------------------
 * Columns (LargePropertyTagArray), RowCount, then per row a Flags byte:
 * 0x0: one AddressBookPropertyValue per column (a PtypUnspecified column's
 * value is typed: 2-byte type first); 0x1: per column a flag byte (after the
 * type for a PtypUnspecified column): 0x0 value follows, 0x1 not available
 * (twin: PtypErrorCode NotFound), 0xA PtypErrorCode value follows. */

static bool value_fits_column(uint32_t col, uint32_t tag)
{
    uint32_t ct = col & 0xFFFF, vt = tag & 0xFFFF;
    return (col >> 16) == (tag >> 16) && (ct == vt || ct == PT_UNSPECIFIED || vt == PT_ERROR);
}

/* Encode: the columns to write for these rows. */
static struct nspi_PropertyTagArray_r *columns_for(struct cx *c,
                                                   const struct nspi_PropertyRowSet_r *rs)
{
    struct nspi_PropertyTagArray_r *cols = c->s->columns;
    if (cols) {
        bool ok = true;
        for (uint32_t r = 0; r < rs->cRows && ok; r++) {
            const struct nspi_PropertyRow_r *row = &rs->aRow[r];
            ok = row->cValues == cols->cValues;
            for (uint32_t i = 0; i < row->cValues && ok; i++)
                ok = value_fits_column(cols->aulPropTag[i], row->lpProps[i].ulPropTag);
        }
        if (ok)
            return cols;
    }
    /* derive from the rows: the first non-error type of each column */
    static struct nspi_PropertyTagArray_r empty;
    if (!rs->cRows)
        return &empty;
    uint32_t n = rs->aRow[0].cValues;
    cols = mp_arena_alloc(c->a, sizeof *cols);
    uint32_t *tags = mp_arena_calloc(c->a, n ? n : 1, 4);
    if (!cols || !tags) {
        fail(c, -1);
        return NULL;
    }
    cols->cValues = n;
    cols->aulPropTag = tags;
    for (uint32_t i = 0; i < n; i++) {
        tags[i] = rs->aRow[0].lpProps[i].ulPropTag;
        for (uint32_t r = 0; r < rs->cRows; r++) {
            if (rs->aRow[r].cValues != n) {
                fail(c, -1);
                return NULL;
            }
            uint32_t t = rs->aRow[r].lpProps[i].ulPropTag;
            if ((t & 0xFFFF) != PT_ERROR) {
                tags[i] = t;
                break;
            }
        }
    }
    return cols;
}

static void enc_row(struct cx *c, const struct nspi_PropertyTagArray_r *cols,
                    struct nspi_PropertyRow_r *row)
{
    bool need_flags = false;
    if (row->cValues != cols->cValues) { /* every row has one value per column */
        fail(c, -1);
        return;
    }
    for (uint32_t i = 0; i < cols->cValues; i++) {
        uint32_t col = cols->aulPropTag[i], tag = row->lpProps[i].ulPropTag;
        if (!value_fits_column(col, tag)) {
            fail(c, -1);
            return;
        }
        if ((tag & 0xFFFF) == PT_ERROR && (col & 0xFFFF) != PT_ERROR &&
            (col & 0xFFFF) != PT_UNSPECIFIED)
            need_flags = true;
    }
    int rec = next_flag(c);
    bool flagged = need_flags || rec == 1;
    wr_flag(c, flagged ? 1 : 0);
    for (uint32_t i = 0; i < cols->cValues && !c->err; i++) {
        struct nspi_PropertyValue_r *v = &row->lpProps[i];
        uint32_t ct = cols->aulPropTag[i] & 0xFFFF, vt = v->ulPropTag & 0xFFFF;
        if (!flagged) {
            if (ct == PT_UNSPECIFIED) {
                uint16_t t = (uint16_t)vt;
                f_u16(c, &t);
            }
            f_pv(c, vt, &v->Value);
            continue;
        }
        int vrec = next_flag(c);
        uint8_t fl = 0;
        if (vt == PT_ERROR && ct != PT_ERROR)
            fl = (vrec == 1 && (uint32_t)v->Value.err == MAPI_E_NOT_FOUND) ? 1 : 0x0A;
        if (ct == PT_UNSPECIFIED) {
            uint16_t t = fl == 1 ? 0 : (uint16_t)vt;
            f_u16(c, &t);
        }
        wr_flag(c, fl);
        if (fl == 0)
            f_pv(c, vt, &v->Value);
        else if (fl == 0x0A)
            f_i32(c, &v->Value.err);
    }
}

static void dec_row(struct cx *c, const struct nspi_PropertyTagArray_r *cols,
                    struct nspi_PropertyRow_r *row)
{
    uint8_t flag = rd_flag(c);
    if (c->err)
        return;
    if (flag > 1) {
        fail(c, MP_MH_EMALFORMED);
        return;
    }
    row->cValues = cols->cValues;
    row->lpProps = alloc_n(c, cols->cValues, sizeof *row->lpProps, 0);
    for (uint32_t i = 0; i < cols->cValues && !c->err; i++) {
        struct nspi_PropertyValue_r *v = &row->lpProps[i];
        uint32_t col = cols->aulPropTag[i], t = col & 0xFFFF;
        if (t == PT_UNSPECIFIED) {
            uint16_t t16 = 0;
            f_u16(c, &t16);
            t = t16;
        }
        uint8_t fl = 0;
        if (flag)
            fl = rd_flag(c);
        if (c->err)
            return;
        if (fl == 0) {
            v->ulPropTag = (col & 0xFFFF0000u) | t;
            f_pv(c, t, &v->Value);
        } else if (fl == 1) {
            v->ulPropTag = (col & 0xFFFF0000u) | PT_ERROR;
            v->Value.err = (int32_t)MAPI_E_NOT_FOUND;
        } else if (fl == 0x0A) {
            v->ulPropTag = (col & 0xFFFF0000u) | PT_ERROR;
            f_i32(c, &v->Value.err);
        } else {
            fail(c, MP_MH_EMALFORMED);
        }
    }
}

/* Columns, RowCount, rows -> the twin's row set (+ side->columns). */
static void f_colrows(struct cx *c, struct nspi_PropertyRowSet_r **pp)
{
    if (c->enc) {
        struct nspi_PropertyRowSet_r *rs = *pp;
        if (!rs || (rs->cRows && !rs->aRow)) {
            fail(c, -1);
            return;
        }
        for (uint32_t r = 0; r < rs->cRows; r++)
            if (rs->aRow[r].cValues && !rs->aRow[r].lpProps) {
                fail(c, -1);
                return;
            }
        struct nspi_PropertyTagArray_r *cols = columns_for(c, rs);
        if (!cols)
            return;
        f_tags(c, cols);
        f_u32(c, &rs->cRows);
        for (uint32_t r = 0; r < rs->cRows && !c->err; r++)
            enc_row(c, cols, &rs->aRow[r]);
        return;
    }
    struct nspi_PropertyTagArray_r *cols = alloc(c, sizeof *cols);
    struct nspi_PropertyRowSet_r *rs = alloc(c, sizeof *rs);
    if (!cols || !rs)
        return;
    f_tags(c, cols);
    f_u32(c, &rs->cRows);
    if (c->err)
        return;
    if (cols->cValues && rs->cRows > MAX_ROW_VALUES / cols->cValues) {
        fail(c, MP_MH_EMALFORMED);
        return;
    }
    rs->aRow = alloc_n(c, rs->cRows, sizeof *rs->aRow, 1);
    for (uint32_t r = 0; r < rs->cRows && !c->err; r++)
        dec_row(c, cols, &rs->aRow[r]);
    c->s->columns = cols;
    *pp = rs;
}

static void f_opt_colrows(struct cx *c, struct nspi_PropertyRowSet_r **pp)
{
    if (f_has(c, *pp != NULL))
        f_colrows(c, pp);
}

/* ---- restrictions (MS-OXCDATA 2.12, 4-byte counts, HasValue before the
 * tagged value of content and property restrictions) --------------------- */

/* The TaggedValue of a content or property restriction.  Two encodings are
 * in use: with a HasValue byte (0x00 / 0xFF) before it, as gromox reads
 * Outlook's requests, and without, as in MS-OXCDATA 2.12.  The byte after
 * the restriction's tag tells them apart (a tagged value starts with a
 * property type whose low byte is never 0x00 or 0xFF); side->bare_values
 * remembers the second form for re-encoding. */
static void f_res_value(struct cx *c, struct nspi_PropertyValue_r **pp)
{
    /* a value that is not there has only the HasValue form */
    bool bare = c->enc ? c->s->bare_values && *pp : false;
    if (!c->enc && need(c, 1)) {
        uint8_t b0 = c->p[c->off];
        bare = b0 != 0x00 && b0 != 0xFF;
        if (bare)
            c->s->bare_values = true;
    }
    if (!bare && !f_has(c, *pp != NULL))
        return;
    if (!c->enc)
        *pp = alloc(c, sizeof **pp);
    else if (!*pp)
        fail(c, -1);
    if (*pp)
        f_tagged(c, *pp);
}

static void f_restriction(struct cx *c, struct nspi_Restriction_r *r);

static void f_res_list(struct cx *c, uint32_t *cnt, struct nspi_Restriction_r **arr)
{
    f_u32(c, cnt);
    if (!c->enc)
        *arr = alloc_n(c, *cnt, sizeof **arr, 1);
    else if (*cnt && !*arr)
        fail(c, -1);
    for (uint32_t i = 0; i < *cnt && !c->err; i++)
        f_restriction(c, &(*arr)[i]);
}

static void f_res_ptr(struct cx *c, struct nspi_Restriction_r **pp)
{
    if (!c->enc)
        *pp = alloc(c, sizeof **pp);
    else if (!*pp)
        fail(c, -1);
    if (*pp)
        f_restriction(c, *pp);
}

static void f_restriction(struct cx *c, struct nspi_Restriction_r *r)
{
    if (c->err)
        return;
    if (++c->depth > MAX_DEPTH) {
        fail(c, c->enc ? -1 : MP_MH_EMALFORMED);
        return;
    }
    f_u32_as8(c, &r->rt);
    union nspi_RestrictionUnion_r *u = &r->res;
    if (c->err) {
        c->depth--;
        return;
    }
    switch (r->rt) {
    case 0:
        f_res_list(c, &u->resAnd.cRes, &u->resAnd.lpRes);
        break;
    case 1:
        f_res_list(c, &u->resOr.cRes, &u->resOr.lpRes);
        break;
    case 2:
        f_res_ptr(c, &u->resNot.lpRes);
        break;
    case 3:
        f_u32(c, &u->resContent.ulFuzzyLevel);
        f_u32(c, &u->resContent.ulPropTag);
        f_res_value(c, &u->resContent.lpProp);
        break;
    case 4:
        f_u32_as8(c, &u->resProperty.relop);
        f_u32(c, &u->resProperty.ulPropTag);
        f_res_value(c, &u->resProperty.lpProp);
        break;
    case 5:
        f_u32_as8(c, &u->resCompareProps.relop);
        f_u32(c, &u->resCompareProps.ulPropTag1);
        f_u32(c, &u->resCompareProps.ulPropTag2);
        break;
    case 6:
        f_u32_as8(c, &u->resBitMask.relBMR);
        f_u32(c, &u->resBitMask.ulPropTag);
        f_u32(c, &u->resBitMask.ulMask);
        break;
    case 7:
        f_u32_as8(c, &u->resSize.relop);
        f_u32(c, &u->resSize.ulPropTag);
        f_u32(c, &u->resSize.cb);
        break;
    case 8:
        f_u32(c, &u->resExist.ulPropTag);
        break;
    case 9:
        f_u32(c, &u->resSubRestriction.ulSubObject);
        f_res_ptr(c, &u->resSubRestriction.lpRes);
        break;
    default: /* comment (0x0A), count (0x0B): no twin */
        fail(c, c->enc ? -1 : MP_MH_EUNSUPPORTED);
    }
    c->depth--;
}

/* StringArray_r of DNToMId (8-bit) and WStringArray of ResolveNames. */
static void f_astrs(struct cx *c, struct nspi_StringsArray_r *sa)
{
    f_mv_count(c, &sa->Count, (void **)&sa->Strings, sizeof(char *), 1);
    for (uint32_t i = 0; i < sa->Count && !c->err; i++)
        f_astr(c, &sa->Strings[i]);
}

static void f_wstrs(struct cx *c, struct nspi_WStringsArray_r *sa)
{
    f_mv_count(c, &sa->Count, (void **)&sa->Strings, sizeof(uint16_t *), 2);
    for (uint32_t i = 0; i < sa->Count && !c->err; i++)
        f_wstr(c, &sa->Strings[i]);
}

/* ---- the request types ---------------------------------------------------- */

/* Responses: StatusCode; a failure body is StatusCode + auxiliary buffer. */
static bool f_status(struct cx *c)
{
    f_u32(c, &c->s->status_code);
    if (c->s->status_code) {
        f_side_aux(c);
        return false;
    }
    return !c->err;
}

static void walk_emsmdb(struct cx *c, enum mp_mh_kind k, bool resp, void *call)
{
    switch (k) {
    case MP_MH_CONNECT:
        if (!resp) {
            struct emsmdb_EcDoConnectEx_in *in = call;
            f_astr(c, &in->szUserDN);
            f_u32(c, &in->ulFlags);
            f_u32(c, &in->ulCpid);
            f_u32(c, &in->ulLcidSort);
            f_u32(c, &in->ulLcidString);
            f_blob(c, &in->cbAuxIn, &in->rgbAuxIn);
            if (!c->enc) { /* not on the HTTP wire: what an RPC client would send */
                in->ulIcxrLink = 0xFFFFFFFFu;
                in->pcbAuxOut = 0x1008;
            }
        } else {
            struct emsmdb_EcDoConnectEx_out *out = call;
            if (!f_status(c))
                return;
            f_i32(c, &out->result);
            f_u32(c, &out->pcmsPollsMax);
            f_u32(c, &out->pcRetry);
            f_u32(c, &out->pcmsRetryDelay);
            f_astr(c, &out->szDNPrefix);
            if (c->enc) {
                uint16_t *w = c->s->display_name_w;
                if (!out->szDisplayName) {
                    fail(c, -1);
                    return;
                }
                char *again = w ? mp_mh_utf16_to_utf8(w, c->a) : NULL;
                if (!again || strcmp(again, out->szDisplayName))
                    w = mp_mh_utf8_to_utf16(out->szDisplayName, c->a);
                if (!w)
                    fail(c, -1);
                f_wstr(c, &w);
            } else {
                f_wstr(c, &c->s->display_name_w);
                if (!c->err &&
                    !(out->szDisplayName = mp_mh_utf16_to_utf8(c->s->display_name_w, c->a)))
                    fail(c, MP_MH_EMALFORMED);
            }
            f_blob(c, &out->pcbAuxOut, &out->rgbAuxOut);
        }
        break;
    case MP_MH_EXECUTE:
        if (!resp) {
            struct emsmdb_EcDoRpcExt2_in *in = call;
            f_u32(c, &in->pulFlags);
            f_blob(c, &in->cbIn, &in->rgbIn);
            f_u32(c, &in->pcbOut);
            f_blob(c, &in->cbAuxIn, &in->rgbAuxIn);
            if (!c->enc)
                in->pcbAuxOut = 0x1008;
        } else {
            struct emsmdb_EcDoRpcExt2_out *out = call;
            if (!f_status(c))
                return;
            f_i32(c, &out->result);
            f_u32(c, &out->pulFlags);
            f_blob(c, &out->pcbOut, &out->rgbOut);
            f_blob(c, &out->pcbAuxOut, &out->rgbAuxOut);
        }
        break;
    case MP_MH_DISCONNECT:
        if (resp) {
            struct emsmdb_EcDoDisconnect_out *out = call;
            if (!f_status(c))
                return;
            f_i32(c, &out->result);
        }
        f_side_aux(c);
        break;
    case MP_MH_NOTIFICATIONWAIT:
        if (!resp) {
            struct mp_mh_notificationwait_in *in = call;
            f_u32(c, &in->flags);
        } else {
            struct mp_mh_notificationwait_out *out = call;
            if (!f_status(c))
                return;
            f_i32(c, &out->error_code);
            f_u32(c, &out->event_pending);
        }
        f_side_aux(c);
        break;
    case MP_MH_PING: {
        struct mp_mh_ping *pg = call;
        if (!c->enc)
            pg->len = (uint32_t)(c->n - c->off);
        f_bytes(c, &pg->data, pg->len);
        break;
    }
    default:
        fail(c, -1);
    }
}

static void walk_nspi_req(struct cx *c, enum mp_mh_kind k, void *call)
{
    switch (k) {
    case MP_MH_BIND: {
        struct nspi_NspiBind_in *in = call;
        f_u32(c, &in->dwFlags);
        f_opt_stat(c, &in->pStat);
        break;
    }
    case MP_MH_UNBIND: {
        struct nspi_NspiUnbind_in *in = call;
        f_u32(c, &in->Reserved);
        break;
    }
    case MP_MH_COMPAREMIDS: {
        struct nspi_NspiCompareMIds_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        f_u32(c, &in->MId1);
        f_u32(c, &in->MId2);
        break;
    }
    case MP_MH_DNTOMID: {
        struct nspi_NspiDNToMId_in *in = call;
        f_u32(c, &in->Reserved);
        if (f_opt(c, MP_MH_ABSENT_NAMES))
            f_astrs(c, &in->pNames);
        break;
    }
    case MP_MH_GETMATCHES: {
        struct nspi_NspiGetMatches_in *in = call;
        f_u32(c, &in->Reserved1);
        f_opt_stat(c, &in->pStat);
        f_opt_tags(c, &in->pReserved);
        f_u32(c, &in->Reserved2);
        if (f_has(c, in->Filter != NULL))
            f_res_ptr(c, &in->Filter);
        if (f_has(c, in->lpPropName != NULL)) {
            if (!c->enc) {
                in->lpPropName = alloc(c, sizeof *in->lpPropName);
                if (in->lpPropName)
                    in->lpPropName->lpguid = alloc(c, sizeof(struct nspi_FlatUID_r));
            } else if (!in->lpPropName->lpguid) {
                fail(c, -1);
            }
            if (!c->err) {
                f_fixed(c, in->lpPropName->lpguid->ab, 16);
                f_i32(c, &in->lpPropName->lID);
            }
        }
        f_u32(c, &in->ulRequested);
        f_opt_tags(c, &in->pPropTags);
        break;
    }
    case MP_MH_GETPROPLIST: {
        struct nspi_NspiGetPropList_in *in = call;
        f_u32(c, &in->dwFlags);
        f_u32(c, &in->dwMId);
        f_u32(c, &in->CodePage);
        break;
    }
    case MP_MH_GETPROPS: {
        struct nspi_NspiGetProps_in *in = call;
        f_u32(c, &in->dwFlags);
        f_opt_stat(c, &in->pStat);
        f_opt_tags(c, &in->pPropTags);
        break;
    }
    case MP_MH_GETSPECIALTABLE: {
        struct nspi_NspiGetSpecialTable_in *in = call;
        f_u32(c, &in->dwFlags);
        f_opt_stat(c, &in->pStat);
        if (f_opt(c, MP_MH_ABSENT_VERSION))
            f_u32(c, &in->lpVersion);
        break;
    }
    case MP_MH_GETTEMPLATEINFO: {
        struct nspi_NspiGetTemplateInfo_in *in = call;
        f_u32(c, &in->dwFlags);
        f_u32(c, &in->ulType);
        if (f_has(c, in->pDN != NULL))
            f_astr(c, &in->pDN);
        f_u32(c, &in->dwCodePage);
        f_u32(c, &in->dwLocaleID);
        break;
    }
    case MP_MH_MODLINKATT: {
        struct nspi_NspiModLinkAtt_in *in = call;
        f_u32(c, &in->dwFlags);
        f_u32(c, &in->ulPropTag);
        f_u32(c, &in->dwMId);
        if (f_opt(c, MP_MH_ABSENT_ENTRYIDS)) {
            struct nspi_BinaryArray_r *ba = &in->lpEntryIds;
            f_mv_count(c, &ba->cValues, (void **)&ba->lpbin, sizeof *ba->lpbin, 4);
            for (uint32_t i = 0; i < ba->cValues && !c->err; i++) {
                f_u32(c, &ba->lpbin[i].cb);
                f_bytes(c, &ba->lpbin[i].lpb, ba->lpbin[i].cb);
            }
        }
        break;
    }
    case MP_MH_MODPROPS: {
        struct nspi_NspiModProps_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        f_opt_tags(c, &in->pPropTags);
        if (f_opt(c, MP_MH_ABSENT_VALUES))
            f_pvlist(c, &in->pRow);
        break;
    }
    case MP_MH_QUERYCOLUMNS: {
        struct nspi_NspiQueryColumns_in *in = call;
        f_u32(c, &in->Reserved);
        f_u32(c, &in->dwFlags);
        break;
    }
    case MP_MH_QUERYROWS: {
        struct nspi_NspiQueryRows_in *in = call;
        f_u32(c, &in->dwFlags);
        f_opt_stat(c, &in->pStat);
        f_mv_count(c, &in->dwETableCount, (void **)&in->lpETable, 4, 4);
        for (uint32_t i = 0; i < in->dwETableCount && !c->err; i++)
            f_u32(c, &in->lpETable[i]);
        if (!c->enc && !in->dwETableCount)
            in->lpETable = NULL;
        f_u32(c, &in->Count);
        f_opt_tags(c, &in->pPropTags);
        break;
    }
    case MP_MH_RESOLVENAMES: {
        struct nspi_NspiResolveNamesW_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        f_opt_tags(c, &in->pPropTags);
        if (f_opt(c, MP_MH_ABSENT_NAMES))
            f_wstrs(c, &in->paWStr);
        break;
    }
    case MP_MH_RESORTRESTRICTION: {
        struct nspi_NspiResortRestriction_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        if (f_opt(c, MP_MH_ABSENT_MIDS))
            f_tags(c, &in->pInMIds);
        break;
    }
    case MP_MH_SEEKENTRIES: {
        struct nspi_NspiSeekEntries_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        if (f_opt(c, MP_MH_ABSENT_TARGET))
            f_tagged(c, &in->pTarget);
        f_opt_tags(c, &in->lpETable);
        f_opt_tags(c, &in->pPropTags);
        break;
    }
    case MP_MH_UPDATESTAT: {
        struct nspi_NspiUpdateStat_in *in = call;
        f_u32(c, &in->Reserved);
        f_opt_stat(c, &in->pStat);
        /* DeltaRequested: the twin's plDelta pointer is non-NULL */
        if (f_has(c, in->plDelta != NULL) && !c->enc)
            in->plDelta = alloc(c, sizeof *in->plDelta);
        break;
    }
    case MP_MH_GETMAILBOXURL:
    case MP_MH_GETADDRESSBOOKURL: {
        struct mp_mh_url_in *in = call;
        f_u32(c, &in->flags);
        f_wstr(c, &in->dn);
        break;
    }
    default:
        fail(c, -1);
    }
    f_side_aux(c);
}

static void walk_nspi_resp(struct cx *c, enum mp_mh_kind k, void *call)
{
    if (!f_status(c))
        return;
    switch (k) {
    case MP_MH_BIND: {
        struct nspi_NspiBind_out *out = call;
        f_i32(c, &out->result);
        if (!c->enc)
            out->pServerGuid = alloc(c, sizeof *out->pServerGuid);
        else if (!out->pServerGuid)
            fail(c, -1);
        if (!c->err)
            f_fixed(c, out->pServerGuid->ab, 16);
        break;
    }
    case MP_MH_UNBIND: {
        struct nspi_NspiUnbind_out *out = call;
        f_u32(c, &out->result);
        break;
    }
    case MP_MH_COMPAREMIDS: {
        struct nspi_NspiCompareMIds_out *out = call;
        f_i32(c, &out->result);
        f_i32(c, &out->plResult);
        break;
    }
    case MP_MH_DNTOMID: {
        struct nspi_NspiDNToMId_out *out = call;
        f_i32(c, &out->result);
        f_opt_tags(c, &out->ppOutMIds);
        break;
    }
    case MP_MH_GETMATCHES: {
        struct nspi_NspiGetMatches_out *out = call;
        f_i32(c, &out->result);
        f_opt_stat(c, &out->pStat);
        f_opt_tags(c, &out->ppOutMIds);
        f_opt_colrows(c, &out->ppRows);
        break;
    }
    case MP_MH_GETPROPLIST: {
        struct nspi_NspiGetPropList_out *out = call;
        f_i32(c, &out->result);
        f_opt_tags(c, &out->ppPropTags);
        break;
    }
    case MP_MH_GETPROPS: {
        struct nspi_NspiGetProps_out *out = call;
        f_i32(c, &out->result);
        f_u32(c, &c->s->codepage);
        f_opt_pvlist(c, &out->ppRows);
        break;
    }
    case MP_MH_GETSPECIALTABLE: {
        struct nspi_NspiGetSpecialTable_out *out = call;
        f_i32(c, &out->result);
        f_u32(c, &c->s->codepage);
        if (f_opt(c, MP_MH_ABSENT_VERSION))
            f_u32(c, &out->lpVersion);
        if (f_has(c, out->ppRows != NULL)) {
            if (!c->enc)
                out->ppRows = alloc(c, sizeof *out->ppRows);
            struct nspi_PropertyRowSet_r *rs = out->ppRows;
            if (!rs)
                break;
            f_mv_count(c, &rs->cRows, (void **)&rs->aRow, sizeof *rs->aRow, 4);
            for (uint32_t i = 0; i < rs->cRows && !c->err; i++)
                f_pvlist(c, &rs->aRow[i]);
        }
        break;
    }
    case MP_MH_GETTEMPLATEINFO: {
        struct nspi_NspiGetTemplateInfo_out *out = call;
        f_i32(c, &out->result);
        f_u32(c, &c->s->codepage);
        f_opt_pvlist(c, &out->ppData);
        break;
    }
    case MP_MH_MODLINKATT:
        f_i32(c, &((struct nspi_NspiModLinkAtt_out *)call)->result);
        break;
    case MP_MH_MODPROPS:
        f_i32(c, &((struct nspi_NspiModProps_out *)call)->result);
        break;
    case MP_MH_QUERYCOLUMNS: {
        struct nspi_NspiQueryColumns_out *out = call;
        f_i32(c, &out->result);
        f_opt_tags(c, &out->ppColumns);
        break;
    }
    case MP_MH_QUERYROWS: {
        struct nspi_NspiQueryRows_out *out = call;
        f_i32(c, &out->result);
        f_opt_stat(c, &out->pStat);
        f_opt_colrows(c, &out->ppRows);
        break;
    }
    case MP_MH_RESOLVENAMES: {
        struct nspi_NspiResolveNamesW_out *out = call;
        f_i32(c, &out->result);
        f_u32(c, &c->s->codepage);
        f_opt_tags(c, &out->ppMIds);
        f_opt_colrows(c, &out->ppRows);
        break;
    }
    case MP_MH_RESORTRESTRICTION: {
        struct nspi_NspiResortRestriction_out *out = call;
        f_i32(c, &out->result);
        f_opt_stat(c, &out->pStat);
        f_opt_tags(c, &out->ppOutMIds);
        break;
    }
    case MP_MH_SEEKENTRIES: {
        struct nspi_NspiSeekEntries_out *out = call;
        f_i32(c, &out->result);
        f_opt_stat(c, &out->pStat);
        f_opt_colrows(c, &out->ppRows);
        break;
    }
    case MP_MH_UPDATESTAT: {
        struct nspi_NspiUpdateStat_out *out = call;
        f_i32(c, &out->result);
        f_opt_stat(c, &out->pStat);
        if (f_has(c, out->plDelta != NULL)) {
            if (!c->enc)
                out->plDelta = alloc(c, sizeof *out->plDelta);
            if (out->plDelta)
                f_i32(c, out->plDelta);
        }
        break;
    }
    case MP_MH_GETMAILBOXURL:
    case MP_MH_GETADDRESSBOOKURL: {
        struct mp_mh_url_out *out = call;
        f_i32(c, &out->error_code);
        f_wstr(c, &out->url);
        break;
    }
    default:
        fail(c, -1);
    }
    f_side_aux(c);
}

static void walk(struct cx *c, enum mp_mh_kind k, bool resp, void *call)
{
    if (k <= MP_MH_PING)
        walk_emsmdb(c, k, resp, call);
    else if (resp)
        walk_nspi_resp(c, k, call);
    else
        walk_nspi_req(c, k, call);
}

static size_t own_size(enum mp_mh_kind k, bool resp)
{
    switch (k) {
    case MP_MH_NOTIFICATIONWAIT:
        return resp ? sizeof(struct mp_mh_notificationwait_out)
                    : sizeof(struct mp_mh_notificationwait_in);
    case MP_MH_PING:
        return sizeof(struct mp_mh_ping);
    case MP_MH_GETMAILBOXURL:
    case MP_MH_GETADDRESSBOOKURL:
        return resp ? sizeof(struct mp_mh_url_out) : sizeof(struct mp_mh_url_in);
    default:
        return 0;
    }
}

int mp_mh_body_new(struct mp_mh_body *out, enum mp_mh_kind k, bool response, struct mp_arena *a)
{
    memset(out, 0, sizeof *out);
    if ((unsigned)k >= MP_MH_N_KINDS)
        return -1;
    out->kind = k;
    out->response = response;
    out->twin = mp_mh_twin(k);
    size_t sz =
        out->twin ? (response ? out->twin->out_size : out->twin->in_size) : own_size(k, response);
    out->call = mp_arena_alloc(a, sz);
    out->exact = true;
    return out->call ? 0 : -1;
}

static int encode(struct mp_buf *b, const struct mp_mh_body *body, struct mp_arena *a)
{
    struct mp_mh_side side = body->side;
    struct cx c = {.enc = true, .b = b, .s = &side, .a = a};
    size_t keep = b->len - b->off;
    walk(&c, body->kind, body->response, body->call);
    if (c.err) {
        b->len = b->off + keep;
        return -1;
    }
    return 0;
}

int mp_mh_decode(enum mp_mh_kind k, bool response, const uint8_t *p, size_t n,
                 struct mp_mh_body *out, struct mp_arena *a)
{
    if (mp_mh_body_new(out, k, response, a))
        return MP_MH_EMALFORMED;
    uint8_t *copy = mp_arena_alloc(a, n);
    if (copy && n)
        memcpy(copy, p, n);
    out->raw = copy;
    out->raw_len = n;
    out->side.bools = mp_arena_alloc(a, n + 1);
    out->side.flags = mp_arena_alloc(a, n + 1);
    if (!out->raw || !out->side.bools || !out->side.flags)
        return MP_MH_EMALFORMED;
    struct cx c = {.enc = false, .p = out->raw, .n = n, .a = a, .s = &out->side};
    walk(&c, k, response, out->call);
    if (!c.err && c.off != n)
        c.err = MP_MH_EMALFORMED; /* trailing bytes */
    if (c.err)
        return c.err;
    /* Is the encoding the structures give the original one? */
    struct mp_buf b = {0};
    out->exact = encode(&b, out, a) == 0 && b.len == n && (!n || !memcmp(b.data, p, n));
    mp_buf_free(&b);
    return MP_MH_OK;
}

int mp_mh_encode(struct mp_buf *b, const struct mp_mh_body *body)
{
    struct mp_arena a;
    mp_arena_init(&a);
    int rc = encode(b, body, &a);
    mp_arena_free(&a);
    return rc;
}

int mp_mh_write(struct mp_buf *b, const struct mp_mh_body *body, bool changed)
{
    if (!changed && body->raw)
        return mp_buf_append(b, body->raw, body->raw_len) ? -1 : 0;
    return mp_mh_encode(b, body);
}

/* ---- JSON ---------------------------------------------------------------- */

static void print_own(struct mp_json *j, const struct mp_mh_body *body)
{
    mp_json_obj_begin(j);
    switch (body->kind) {
    case MP_MH_NOTIFICATIONWAIT:
        if (body->response) {
            const struct mp_mh_notificationwait_out *o = body->call;
            mp_json_key(j, "ErrorCode");
            mp_json_u64(j, (uint32_t)o->error_code);
            mp_json_key(j, "EventPending");
            mp_json_u64(j, o->event_pending);
        } else {
            mp_json_key(j, "Flags");
            mp_json_u64(j, ((const struct mp_mh_notificationwait_in *)body->call)->flags);
        }
        break;
    case MP_MH_PING: {
        const struct mp_mh_ping *pg = body->call;
        mp_json_key(j, "data");
        mp_json_hex(j, pg->data, pg->len);
        break;
    }
    default:
        if (body->response) {
            const struct mp_mh_url_out *o = body->call;
            mp_json_key(j, "ErrorCode");
            mp_json_u64(j, (uint32_t)o->error_code);
            mp_json_key(j, "ServerUrl");
            if (o->url)
                mp_json_wstr(j, o->url);
            else
                mp_json_null(j);
        } else {
            const struct mp_mh_url_in *i = body->call;
            mp_json_key(j, "Flags");
            mp_json_u64(j, i->flags);
            mp_json_key(j, body->kind == MP_MH_GETMAILBOXURL ? "ServerDn" : "UserDn");
            if (i->dn)
                mp_json_wstr(j, i->dn);
            else
                mp_json_null(j);
        }
    }
    mp_json_obj_end(j);
}

void mp_mh_print(struct mp_json *j, const struct mp_mh_body *body)
{
    const struct mp_mh_side *s = &body->side;
    mp_json_obj_begin(j);
    mp_json_key(j, "request_type");
    mp_json_str(j, kinds[body->kind].name);
    mp_json_key(j, "direction");
    mp_json_str(j, body->response ? "response" : "request");
    if (body->twin) {
        mp_json_key(j, "twin");
        mp_json_str(j, body->twin->name);
    }
    if (body->response) {
        mp_json_key(j, "StatusCode");
        mp_json_u64(j, s->status_code);
    }
    if (s->absent) {
        mp_json_key(j, "absent");
        mp_json_arr_begin(j);
        static const char *const names[] = {"State",          "Names",      "Version", "EntryIds",
                                            "PropertyValues", "MinimalIds", "Target"};
        for (unsigned i = 0; i < 7; i++)
            if (s->absent & (1u << i))
                mp_json_str(j, names[i]);
        mp_json_arr_end(j);
    }
    if (body->response &&
        (body->kind == MP_MH_GETPROPS || body->kind == MP_MH_GETSPECIALTABLE ||
         body->kind == MP_MH_GETTEMPLATEINFO || body->kind == MP_MH_RESOLVENAMES)) {
        mp_json_key(j, "CodePage");
        mp_json_u64(j, s->codepage);
    }
    if (s->aux || s->aux_len) {
        mp_json_key(j, "AuxiliaryBuffer");
        mp_json_hex(j, s->aux, s->aux_len);
    }
    if (s->status_code == 0 || !body->response) {
        mp_json_key(j, "call");
        if (body->twin)
            (body->response ? body->twin->print_out : body->twin->print_in)(j, body->call);
        else
            print_own(j, body);
    }
    mp_json_obj_end(j);
}
