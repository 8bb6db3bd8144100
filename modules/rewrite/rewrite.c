/* rewrite: keeps MAPI clients on the proxy.
 *
 * Outlook asks RFR where the address book is, reads binding strings and its
 * home MDB from NSPI, then connects straight to whatever names it got.  This
 * module replaces the upstream server's names with the proxy's:
 *   - RfrGetNewDSA and RfrGetFQDNFromServerDN answers name the proxy;
 *   - PR_EMS_AB_NETWORK_ADDRESS (ANSI and Unicode) carry the proxy's host;
 *   - PR_EMS_AB_HOME_MDB and every other string or binary value that names
 *     the upstream server, in every row of every NSPI answer with rows
 *     (GetProps, QueryRows, GetMatches, SeekEntries, ResolveNames(W),
 *     GetSpecialTable, GetTemplateInfo).
 *   - EcDoConnect(Ex)'s szDNPrefix (also the MAPI/HTTP Connect answer's
 *     DnPrefix, through its twin).
 * The names learned (from RFR answers, /cn=Servers/cn=NAME in DNs, the
 * hosts of binding strings, and the configured binding) are kept per
 * session and process-wide, and mapped back in every string the client
 * sends (DNToMId, ResolveNames(W), GetMatches restrictions, SeekEntries,
 * ModProps, GetTemplateInfo, RfrGetFQDNFromServerDN, RfrGetNewDSA,
 * EcDoConnect(Ex)'s szUserDN; the HTTP front maps GetMailboxUrl's ServerDn
 * and GetAddressBookUrl's UserDn back, and Autodiscover's server names to
 * the client, with mp_rewrite_text()).
 *
 * Two kinds of names (doc/internals/rewrite.md):
 *   - host names (binding strings, FQDN answers): every upstream host
 *     becomes the proxy's own host (`netbios name`, `netbios name`.`realm`
 *     lower case, or option rewrite:fqdn), since the client connects to it;
 *     mapped back, the most recently learned upstream host wins;
 *   - server names in DNs (".../cn=Servers/cn=NAME"): one-to-one.
 *     "LOCAL@DOMAIN" (Exchange 2013+, gromox: one name per mailbox) becomes
 *     "LOCAL@<proxy FQDN>"; the first other name the process learns becomes
 *     `netbios name`, any further one `netbios name`-XXXXXXXX (FNV-1a of the
 *     upstream name, hex).  Mapped back through the table. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"
#include "rewrite.h"

#define SESSION_NAMES 32
#define GLOBAL_NAMES 1024
#define NAME_LEN 256

struct name_pair {
    char up[NAME_LEN]; /* upstream name, as learned */
    char px[NAME_LEN]; /* what the client sees instead */
    bool cn;           /* a server name in DNs (one-to-one), not a host name */
};

struct names {
    struct name_pair *p;
    size_t n, cap;
};

struct rw_conf {
    char nb[64];            /* proxy NetBIOS name */
    char fqdn[NAME_LEN];    /* proxy FQDN */
    char primary[NAME_LEN]; /* the server name that became `nb` */
    struct names global;    /* learned by any session: a later session may need them first */
    struct name_pair g_pairs[GLOBAL_NAMES];
};

struct rw_call {
    struct mp_module_ctx *mc;
    struct mp_call *call; /* NULL: memory from malloc (mp_rewrite_text) */
    struct names *sess;
    bool to_client;    /* direction: upstream names -> proxy names */
    bool autodiscover; /* only server names, in DNs and <Server> */
    bool changed;
};

/* The loaded rewrite module, for mp_rewrite_text: the calling worker's
 * instance (each worker loads its own; init and fini run on its thread). */
static _Thread_local struct mp_module_ctx *g_mc;

/* ------------------------------------------------------------------ */
/* names                                                               */

static bool name_char(int c)
{
    return isalnum(c) || c == '-' || c == '_';
}

static void names_add(struct names *ns, const char *up, const char *px, bool cn)
{
    if (!*up || strlen(up) >= NAME_LEN || !strcasecmp(up, px))
        return;
    for (size_t i = 0; i < ns->n; i++)
        if (ns->p[i].cn == cn && !strcasecmp(ns->p[i].up, up)) {
            if (i != ns->n - 1) { /* most recent last: it wins when mapping back */
                struct name_pair t = ns->p[i];
                memmove(&ns->p[i], &ns->p[i + 1], (ns->n - i - 1) * sizeof(t));
                ns->p[ns->n - 1] = t;
            }
            return;
        }
    if (ns->n == ns->cap) {
        memmove(&ns->p[0], &ns->p[1], (ns->cap - 1) * sizeof(ns->p[0]));
        ns->n--;
    }
    snprintf(ns->p[ns->n].up, NAME_LEN, "%s", up);
    snprintf(ns->p[ns->n].px, NAME_LEN, "%s", px);
    ns->p[ns->n].cn = cn;
    ns->n++;
}

/* Learns an upstream host name: an FQDN maps to the proxy's FQDN and its
 * first label to the proxy's NetBIOS name; a short name to the NetBIOS name. */
static void learn_host(struct rw_call *rc, const char *host, size_t len)
{
    const struct rw_conf *c = mp_module_private(rc->mc);
    char h[NAME_LEN];
    if (!len || len >= sizeof(h))
        return;
    memcpy(h, host, len);
    h[len] = 0;
    bool ip = true;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)h[i]) && h[i] != '.' && h[i] != ':')
            ip = false;
    if (ip)
        return; /* addresses are not names; binding strings are rewritten whole */
    struct rw_conf *cm = mp_module_private(rc->mc);
    char *dot = strchr(h, '.');
    if (dot) {
        names_add(rc->sess, h, c->fqdn, false);
        names_add(&cm->global, h, c->fqdn, false);
        *dot = 0;
    }
    names_add(rc->sess, h, c->nb, false);
    names_add(&cm->global, h, c->nb, false);
}

/* FNV-1a over the lower-case name: a stable tag for a server name. */
static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (uint8_t)tolower((unsigned char)*s);
        h *= 16777619u;
    }
    return h;
}

/* Learns a server name from a DN (".../cn=Servers/cn=NAME"): one-to-one. */
static void learn_server(struct rw_call *rc, const char *name, size_t len)
{
    struct rw_conf *c = mp_module_private(rc->mc);
    char up[NAME_LEN], px[NAME_LEN];
    if (!len || len >= sizeof(up))
        return;
    memcpy(up, name, len);
    up[len] = 0;
    const char *at = strchr(up, '@');
    if (at) { /* per mailbox: LOCAL@DOMAIN -> LOCAL@<proxy FQDN> */
        if (snprintf(px, sizeof(px), "%.*s@%s", (int)(at - up), up, c->fqdn) >= (int)sizeof(px))
            return;
    } else {
        if (!c->primary[0])
            snprintf(c->primary, sizeof(c->primary), "%s", up);
        if (!strcasecmp(c->primary, up))
            snprintf(px, sizeof(px), "%s", c->nb);
        else
            snprintf(px, sizeof(px), "%.60s-%08X", c->nb, name_hash(up));
        learn_host(rc, up, len); /* "netbios:NAME" and the like name the host */
    }
    names_add(rc->sess, up, px, true);
    names_add(&c->global, up, px, true);
}

/* Learns from DNs (".../cn=Servers/cn=NAME/...") and binding strings
 * ("proto:HOST"). */
static void learn_from(struct rw_call *rc, const char *s, size_t len, bool binding)
{
    static const char key[] = "/cn=Servers/cn=";
    for (size_t i = 0; i + sizeof(key) - 1 <= len; i++)
        if (!strncasecmp(s + i, key, sizeof(key) - 1)) {
            size_t a = i + sizeof(key) - 1, b = a;
            while (b < len && s[b] != '/' && s[b] != '<' && s[b] != '"')
                b++;
            learn_server(rc, s + a, b - a);
        }
    if (binding) {
        const char *colon = memchr(s, ':', len);
        if (colon) {
            size_t a = (size_t)(colon - s) + 1, b = a;
            while (b < len && s[b] != '[' && s[b] != ',')
                b++;
            if (memchr(s + a, '@', b - a))
                learn_server(rc, s + a, b - a);
            else
                learn_host(rc, s + a, b - a);
        }
    }
}

/* Does units[0..i) end with the ASCII text t (any case)? */
static bool ends_with(const void *src, bool wide, size_t i, const char *t)
{
    size_t tl = strlen(t);
    if (i < tl)
        return false;
    for (size_t j = 0; j < tl; j++) {
        unsigned u =
            wide ? ((const uint16_t *)src)[i - tl + j] : ((const uint8_t *)src)[i - tl + j];
        if (u > 0x7f || tolower((int)u) != tolower((unsigned char)t[j]))
            return false;
    }
    return true;
}

/* Token-wise, case-insensitive replacement over 8-bit (wide = false) or
 * UTF-16 code units.  After "cn=" server names are preferred, elsewhere
 * host names (rc->autodiscover: only server names, after "cn=" or
 * "<Server>").  Returns a new buffer from the call's memory (malloc without
 * a call), or NULL when nothing matched. */
static void *replace_units(struct rw_call *rc, const void *src, size_t n, bool wide, size_t *out_n)
{
    const struct names *maps[2];
    const struct rw_conf *c = mp_module_private(rc->mc);
    maps[0] = rc->sess;
    maps[1] = &c->global;
#define UNIT(i) (wide ? ((const uint16_t *)src)[i] : ((const uint8_t *)src)[i])
    /* pass 1: find matches to size the result */
    size_t out_len = 0, matches = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint8_t *o8 = NULL;
        uint16_t *o16 = NULL;
        if (pass == 1) {
            if (!matches)
                return NULL;
            size_t sz = (out_len + 1) * (wide ? 2 : 1);
            void *buf = rc->call ? mp_call_alloc(rc->call, sz) : malloc(sz);
            if (!buf)
                return NULL;
            o8 = buf;
            o16 = buf;
        }
        size_t i = 0, k = 0;
        while (i < n) {
            const char *hit = NULL, *hit2 = NULL;
            size_t hit_len = 0, hit2_len = 0;
            int hit_map = -1, hit2_map = -1;
            bool boundary = i == 0 || UNIT(i - 1) > 0x7f || !name_char((int)UNIT(i - 1));
            bool dn = boundary && ends_with(src, wide, i, "cn=");
            if (rc->autodiscover && !dn)
                dn = boundary && ends_with(src, wide, i, "<Server>");
            if (rc->autodiscover && !dn)
                boundary = false;
            for (int mi = 0; boundary && mi < 2; mi++) {
                const struct names *ns = maps[mi];
                /* longest names first, so an FQDN wins over its first label;
                 * a name of the kind this place wants wins over the other;
                 * among equals the session's latest (mapping back a host) */
                for (size_t pi = 0; pi < ns->n; pi++) {
                    bool want = ns->p[pi].cn == dn;
                    if (rc->autodiscover && !ns->p[pi].cn)
                        continue;
                    size_t *best = want ? &hit_len : &hit2_len;
                    const char **bhit = want ? &hit : &hit2;
                    int *bmap = want ? &hit_map : &hit2_map;
                    const char *from = rc->to_client ? ns->p[pi].up : ns->p[pi].px;
                    size_t fl = strlen(from);
                    if (fl < *best || (fl == *best && *bmap != mi) || i + fl > n)
                        continue;
                    size_t j = 0;
                    while (j < fl && UNIT(i + j) <= 0x7f &&
                           tolower((int)UNIT(i + j)) == tolower((unsigned char)from[j]))
                        j++;
                    if (j != fl)
                        continue;
                    if (i + fl < n && UNIT(i + fl) <= 0x7f && name_char((int)UNIT(i + fl)))
                        continue;
                    *bhit = rc->to_client ? ns->p[pi].px : ns->p[pi].up;
                    *best = fl;
                    *bmap = mi;
                }
            }
            if (!hit) {
                hit = hit2;
                hit_len = hit2_len;
            }
            if (hit) {
                size_t hl = strlen(hit);
                if (pass == 0) {
                    matches++;
                    out_len += hl;
                } else {
                    for (size_t j = 0; j < hl; j++, k++)
                        wide ? (void)(o16[k] = (uint8_t)hit[j]) : (void)(o8[k] = (uint8_t)hit[j]);
                }
                i += hit_len;
            } else {
                if (pass == 0)
                    out_len++;
                else if (wide)
                    o16[k++] = (uint16_t)UNIT(i);
                else
                    o8[k++] = (uint8_t)UNIT(i);
                i++;
            }
        }
        if (pass == 1) {
            if (wide)
                o16[k] = 0;
            else
                o8[k] = 0;
            *out_n = k;
            return wide ? (void *)o16 : (void *)o8;
        }
    }
#undef UNIT
    return NULL;
}

static void rw_str(struct rw_call *rc, char **s)
{
    if (!*s)
        return;
    size_t n;
    char *r = replace_units(rc, *s, strlen(*s), false, &n);
    if (r) {
        *s = r;
        rc->changed = true;
    }
}

static size_t wlen(const uint16_t *w)
{
    size_t n = 0;
    while (w[n])
        n++;
    return n;
}

static void rw_wstr(struct rw_call *rc, uint16_t **s)
{
    if (!*s)
        return;
    size_t n;
    uint16_t *r = replace_units(rc, *s, wlen(*s), true, &n);
    if (r) {
        *s = r;
        rc->changed = true;
    }
}

static void rw_bin(struct rw_call *rc, struct nspi_Binary_r *b)
{
    if (!b->lpb || !b->cb)
        return;
    size_t n;
    uint8_t *r = replace_units(rc, b->lpb, b->cb, false, &n);
    if (r) {
        b->lpb = r;
        b->cb = (uint32_t)n;
        rc->changed = true;
    }
}

/* ------------------------------------------------------------------ */
/* NSPI structures                                                     */

#define PT_STRING8 0x001e
#define PT_UNICODE 0x001f
#define PT_BINARY 0x0102
#define PT_MV_STRING8 0x101e
#define PT_MV_UNICODE 0x101f
#define PT_MV_BINARY 0x1102
#define PROP_ID(tag) ((tag) >> 16)
#define PID_NETWORK_ADDRESS 0x8170

/* A wide string's ASCII form, for learning. */
static size_t narrow(const uint16_t *w, char *out, size_t cap)
{
    size_t n = 0;
    for (; w && w[n] && n + 1 < cap; n++)
        out[n] = w[n] < 0x80 ? (char)w[n] : '?';
    out[n] = 0;
    return n;
}

static void learn_value(struct rw_call *rc, const struct nspi_PropertyValue_r *v)
{
    bool binding = PROP_ID(v->ulPropTag) == PID_NETWORK_ADDRESS;
    char tmp[1024];
    switch (v->ulPropTag & 0xffff) {
    case PT_STRING8:
        if (v->Value.lpszA)
            learn_from(rc, v->Value.lpszA, strlen(v->Value.lpszA), binding);
        break;
    case PT_UNICODE:
        learn_from(rc, tmp, narrow(v->Value.lpszW, tmp, sizeof(tmp)), binding);
        break;
    case PT_MV_STRING8:
        for (uint32_t i = 0; i < v->Value.MVszA.cValues && v->Value.MVszA.lppszA; i++)
            if (v->Value.MVszA.lppszA[i])
                learn_from(rc, v->Value.MVszA.lppszA[i], strlen(v->Value.MVszA.lppszA[i]), binding);
        break;
    case PT_MV_UNICODE:
        for (uint32_t i = 0; i < v->Value.MVszW.cValues && v->Value.MVszW.lppszW; i++)
            learn_from(rc, tmp, narrow(v->Value.MVszW.lppszW[i], tmp, sizeof(tmp)), binding);
        break;
    default:
        break;
    }
}

static void rw_value(struct rw_call *rc, struct nspi_PropertyValue_r *v)
{
    switch (v->ulPropTag & 0xffff) {
    case PT_STRING8:
        rw_str(rc, &v->Value.lpszA);
        break;
    case PT_UNICODE:
        rw_wstr(rc, &v->Value.lpszW);
        break;
    case PT_BINARY:
        rw_bin(rc, &v->Value.bin);
        break;
    case PT_MV_STRING8:
        for (uint32_t i = 0; i < v->Value.MVszA.cValues && v->Value.MVszA.lppszA; i++)
            rw_str(rc, &v->Value.MVszA.lppszA[i]);
        break;
    case PT_MV_UNICODE:
        for (uint32_t i = 0; i < v->Value.MVszW.cValues && v->Value.MVszW.lppszW; i++)
            rw_wstr(rc, &v->Value.MVszW.lppszW[i]);
        break;
    case PT_MV_BINARY:
        for (uint32_t i = 0; i < v->Value.MVbin.cValues && v->Value.MVbin.lpbin; i++)
            rw_bin(rc, &v->Value.MVbin.lpbin[i]);
        break;
    default:
        break;
    }
}

static void rw_row(struct rw_call *rc, struct nspi_PropertyRow_r *row)
{
    if (!row || !row->lpProps)
        return;
    if (rc->to_client)
        for (uint32_t i = 0; i < row->cValues; i++)
            learn_value(rc, &row->lpProps[i]);
    for (uint32_t i = 0; i < row->cValues; i++)
        rw_value(rc, &row->lpProps[i]);
}

static void rw_rows(struct rw_call *rc, struct nspi_PropertyRowSet_r *rows)
{
    if (!rows || !rows->aRow)
        return;
    if (rc->to_client) /* learn from every row before rewriting any */
        for (uint32_t r = 0; r < rows->cRows; r++)
            for (uint32_t i = 0; rows->aRow[r].lpProps && i < rows->aRow[r].cValues; i++)
                learn_value(rc, &rows->aRow[r].lpProps[i]);
    for (uint32_t r = 0; r < rows->cRows; r++)
        rw_row(rc, &rows->aRow[r]);
}

static void rw_restriction(struct rw_call *rc, struct nspi_Restriction_r *r, int depth)
{
    if (!r || depth > 32)
        return;
    switch (r->rt) {
    case 0:
    case 1:
        for (uint32_t i = 0; i < r->res.resAnd.cRes && r->res.resAnd.lpRes; i++)
            rw_restriction(rc, &r->res.resAnd.lpRes[i], depth + 1);
        break;
    case 2:
        rw_restriction(rc, r->res.resNot.lpRes, depth + 1);
        break;
    case 3:
        if (r->res.resContent.lpProp)
            rw_value(rc, r->res.resContent.lpProp);
        break;
    case 4:
        if (r->res.resProperty.lpProp)
            rw_value(rc, r->res.resProperty.lpProp);
        break;
    case 9:
        rw_restriction(rc, r->res.resSubRestriction.lpRes, depth + 1);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* the module                                                          */

struct sess_names {
    struct names ns;
    struct name_pair pairs[SESSION_NAMES];
};

static void sess_free(void *p)
{
    free(p);
}

static struct names *session_names(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct mp_session *s = mp_call_session(call);
    struct sess_names *sn = mp_session_data(s, mc);
    if (!sn) {
        sn = calloc(1, sizeof(*sn));
        if (!sn)
            return NULL;
        sn->ns.p = sn->pairs;
        sn->ns.cap = SESSION_NAMES;
        mp_session_set_data(s, mc, sn, sess_free);
    }
    return &sn->ns;
}

static int rw_init(struct mp_module_ctx *mc)
{
    struct rw_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    const char *nb = mp_module_proxy_name(mc, MP_PROXY_NETBIOS_NAME);
    const char *realm = mp_module_proxy_name(mc, MP_PROXY_REALM);
    const char *up = mp_module_proxy_name(mc, MP_PROXY_UPSTREAM_HOST);
    snprintf(c->nb, sizeof(c->nb), "%s", nb && nb[0] ? nb : "MAPIPROXY");
    const char *fqdn = mp_module_option(mc, "fqdn");
    if (fqdn)
        snprintf(c->fqdn, sizeof(c->fqdn), "%s", fqdn);
    else if (realm && realm[0])
        snprintf(c->fqdn, sizeof(c->fqdn), "%.63s.%.180s", c->nb, realm);
    else
        snprintf(c->fqdn, sizeof(c->fqdn), "%s", c->nb);
    for (char *p = c->fqdn; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    c->global.p = c->g_pairs;
    c->global.cap = GLOBAL_NAMES;
    mp_module_set_private(mc, c);
    /* The configured upstream is a name to hide too. */
    struct name_pair dp[SESSION_NAMES];
    struct names dummy = {.p = dp, .cap = SESSION_NAMES};
    struct rw_call rc = {.mc = mc, .sess = &dummy, .to_client = true};
    if (up)
        learn_host(&rc, up, strlen(up));
    mp_module_log(mc, MP_MLOG_INFO, "clients see %s / %s instead of the upstream's names", c->nb,
                  c->fqdn);
    g_mc = mc;
    return 0;
}

static void rw_fini(struct mp_module_ctx *mc)
{
    if (g_mc == mc)
        g_mc = NULL;
    free(mp_module_private(mc));
}

bool mp_rewrite_active(void)
{
    return g_mc != NULL;
}

char *mp_rewrite_text(const char *s, size_t n, bool to_client, bool autodiscover, size_t *out_n)
{
    if (!g_mc || !s || !n)
        return NULL;
    struct name_pair dp[SESSION_NAMES];
    struct names none = {.p = dp, .cap = SESSION_NAMES};
    struct rw_call rc = {
        .mc = g_mc, .sess = &none, .to_client = to_client, .autodiscover = autodiscover};
    if (to_client)
        learn_from(&rc, s, n, false);
    return replace_units(&rc, s, n, false, out_n);
}

#define RFR_GETNEWDSA 0
#define RFR_GETFQDN 1

static bool is_rfr(struct mp_call *call)
{
    return !strcmp(mp_call_iface(call), "exchange_ds_rfr");
}

#define EMSMDB_CONNECT 0
#define EMSMDB_CONNECTEX 10

static bool is_emsmdb(struct mp_call *call)
{
    return !strcmp(mp_call_iface(call), "exchange_emsmdb");
}

/* Client -> server: proxy names back to the upstream's. */
static enum mp_status rw_pull(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct names *ns = session_names(mc, call);
    void *in = mp_call_request(call);
    if (!ns || !in)
        return MP_CONTINUE; /* undecodable: relayed as it is */
    struct rw_call rc = {.mc = mc, .call = call, .sess = ns, .to_client = false};
    uint16_t op = mp_call_opnum(call);
    if (is_rfr(call)) {
        if (op == RFR_GETNEWDSA) {
            rw_str(&rc, &((struct rfr_RfrGetNewDSA_in *)in)->pUserDN);
        } else if (op == RFR_GETFQDN) {
            struct rfr_RfrGetFQDNFromServerDN_in *r = in;
            rw_str(&rc, &r->szMailboxServerDN);
            if (rc.changed && r->szMailboxServerDN)
                r->cbMailboxServerDN = (uint32_t)strlen(r->szMailboxServerDN) + 1;
        }
    } else if (is_emsmdb(call)) {
        if (op == EMSMDB_CONNECT)
            rw_str(&rc, &((struct emsmdb_EcDoConnect_in *)in)->szUserDN);
        else if (op == EMSMDB_CONNECTEX)
            rw_str(&rc, &((struct emsmdb_EcDoConnectEx_in *)in)->szUserDN);
    } else {
        switch (op) {
        case 4:
            rw_value(&rc, &((struct nspi_NspiSeekEntries_in *)in)->pTarget);
            break;
        case 5:
            rw_restriction(&rc, ((struct nspi_NspiGetMatches_in *)in)->Filter, 0);
            break;
        case 7: {
            struct nspi_StringsArray_r *a = &((struct nspi_NspiDNToMId_in *)in)->pNames;
            for (uint32_t i = 0; i < a->Count && a->Strings; i++)
                rw_str(&rc, &a->Strings[i]);
            break;
        }
        case 11:
            rw_row(&rc, &((struct nspi_NspiModProps_in *)in)->pRow);
            break;
        case 13:
            rw_str(&rc, &((struct nspi_NspiGetTemplateInfo_in *)in)->pDN);
            break;
        case 19: {
            struct nspi_StringsArray_r *a = &((struct nspi_NspiResolveNames_in *)in)->paStr;
            for (uint32_t i = 0; i < a->Count && a->Strings; i++)
                rw_str(&rc, &a->Strings[i]);
            break;
        }
        case 20: {
            struct nspi_WStringsArray_r *a = &((struct nspi_NspiResolveNamesW_in *)in)->paWStr;
            for (uint32_t i = 0; i < a->Count && a->Strings; i++)
                rw_wstr(&rc, &a->Strings[i]);
            break;
        }
        default:
            break;
        }
    }
    if (rc.changed)
        mp_call_request_changed(call);
    return MP_CONTINUE;
}

/* Server -> client: the upstream's names become the proxy's. */
static enum mp_status rw_push(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct names *ns = session_names(mc, call);
    void *out = mp_call_response(call);
    if (!ns || !out) {
        size_t len;
        mp_call_response_stub(call, &len);
        mp_module_log(mc, MP_MLOG_WARN,
                      "%s %s answer (%zu bytes) does not decode; relayed "
                      "without rewriting",
                      mp_call_peer(call), mp_call_op_name(call) ? mp_call_op_name(call) : "?", len);
        return MP_CONTINUE;
    }
    struct rw_call rc = {.mc = mc, .call = call, .sess = ns, .to_client = true};
    uint16_t op = mp_call_opnum(call);
    if (is_rfr(call)) {
        char **name = NULL;
        if (op == RFR_GETNEWDSA)
            name = ((struct rfr_RfrGetNewDSA_out *)out)->ppszServer;
        else if (op == RFR_GETFQDN)
            name = &((struct rfr_RfrGetFQDNFromServerDN_out *)out)->ppszServerFQDN;
        if (name && *name) {
            learn_host(&rc, *name, strlen(*name));
            rw_str(&rc, name);
        }
    } else if (is_emsmdb(call)) {
        char **prefix = NULL;
        if (op == EMSMDB_CONNECT)
            prefix = &((struct emsmdb_EcDoConnect_out *)out)->szDNPrefix;
        else if (op == EMSMDB_CONNECTEX)
            prefix = &((struct emsmdb_EcDoConnectEx_out *)out)->szDNPrefix;
        if (prefix && *prefix) {
            learn_from(&rc, *prefix, strlen(*prefix), false);
            rw_str(&rc, prefix);
        }
    } else {
        switch (op) {
        case 3:
            rw_rows(&rc, ((struct nspi_NspiQueryRows_out *)out)->ppRows);
            break;
        case 4:
            rw_rows(&rc, ((struct nspi_NspiSeekEntries_out *)out)->ppRows);
            break;
        case 5:
            rw_rows(&rc, ((struct nspi_NspiGetMatches_out *)out)->ppRows);
            break;
        case 9:
            rw_row(&rc, ((struct nspi_NspiGetProps_out *)out)->ppRows);
            break;
        case 12:
            rw_rows(&rc, ((struct nspi_NspiGetSpecialTable_out *)out)->ppRows);
            break;
        case 13:
            rw_row(&rc, ((struct nspi_NspiGetTemplateInfo_out *)out)->ppData);
            break;
        case 19:
            rw_rows(&rc, ((struct nspi_NspiResolveNames_out *)out)->ppRows);
            break;
        case 20:
            rw_rows(&rc, ((struct nspi_NspiResolveNamesW_out *)out)->ppRows);
            break;
        default:
            break;
        }
    }
    if (rc.changed)
        mp_call_response_changed(call);
    return MP_CONTINUE;
}

static const struct mp_module_want rw_wants[] = {
    {"exchange_ds_rfr", MP_ALL_OPS},
    {"exchange_emsmdb", EMSMDB_CONNECT},
    {"exchange_emsmdb", EMSMDB_CONNECTEX},
    {"exchange_nsp", 3},
    {"exchange_nsp", 4},
    {"exchange_nsp", 5},
    {"exchange_nsp", 7},
    {"exchange_nsp", 9},
    {"exchange_nsp", 11},
    {"exchange_nsp", 12},
    {"exchange_nsp", 13},
    {"exchange_nsp", 19},
    {"exchange_nsp", 20},
    {NULL, 0},
};

const struct mp_module mp_builtin_rewrite = {
    MP_MODULE_HEADER,
    .name = "rewrite",
    .description = "RFR referrals, NSPI binding strings, home MDB, EMSMDB DN prefixes and server "
                   "names name the proxy",
    .wants = rw_wants,
    .init = rw_init,
    .fini = rw_fini,
    .pull = rw_pull,
    .push = rw_push,
};
