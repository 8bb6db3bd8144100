/* NTLMSSP message codec, acceptor and initiator (MS-NLMP 2.2, 3.1, 3.2). */
#include "auth/ntlmssp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint8_t ntlmssp_sig[8] = {'N', 'T', 'L', 'M', 'S', 'S', 'P', 0};

/* Version we announce: 10.0 build 20348, NTLMSSP_REVISION_W2K3 (15). */
static const uint8_t our_version[8] = {10, 0, 0x7c, 0x4f, 0, 0, 0, 15};

static uint16_t g16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static uint32_t g32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static void p16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static void p32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- parsing ---------------------------------------------------------------*/

int mp_ntlmssp_msg_type(const uint8_t *msg, size_t len)
{
    if (!msg || len < 12 || memcmp(msg, ntlmssp_sig, 8) != 0)
        return -1;
    uint32_t t = g32(msg + 8);
    return (t >= 1 && t <= 3) ? (int)t : -1;
}

/* A security buffer (len, maxlen, offset) at `at`: the payload must lie in
 * [hdr, len).  Tracks the lowest payload offset (where the header ends). */
static int field(const uint8_t *m, size_t mlen, size_t at, size_t hdr, struct mp_ntlm_field *f,
                 size_t *min_off)
{
    uint16_t l = g16(m + at);
    uint32_t off = g32(m + at + 4);
    f->p = NULL;
    f->len = 0;
    if (!l)
        return 0;
    if (off < hdr || off > mlen || l > mlen - off)
        return -1;
    f->p = m + off;
    f->len = l;
    if (off < *min_off)
        *min_off = off;
    return 0;
}

int mp_ntlmssp_parse_negotiate(const uint8_t *msg, size_t len, struct mp_ntlm_negotiate *out)
{
    memset(out, 0, sizeof(*out));
    if (mp_ntlmssp_msg_type(msg, len) != MP_NTLMSSP_NEGOTIATE_MSG || len < 16)
        return -1;
    out->flags = g32(msg + 12);
    if (len < 32) /* old clients: flags only */
        return 0;
    size_t min_off = len;
    if (field(msg, len, 16, 32, &out->domain, &min_off) ||
        field(msg, len, 24, 32, &out->workstation, &min_off))
        return -1;
    if ((out->flags & MP_NTLMSSP_NEGOTIATE_VERSION) && min_off >= 40 && len >= 40) {
        out->has_version = true;
        memcpy(out->version, msg + 32, 8);
    }
    return 0;
}

int mp_ntlmssp_parse_challenge(const uint8_t *msg, size_t len, struct mp_ntlm_challenge *out)
{
    memset(out, 0, sizeof(*out));
    if (mp_ntlmssp_msg_type(msg, len) != MP_NTLMSSP_CHALLENGE_MSG || len < 48)
        return -1;
    size_t min_off = len;
    out->flags = g32(msg + 20);
    memcpy(out->server_chal, msg + 24, 8);
    if (field(msg, len, 12, 48, &out->target_name, &min_off) ||
        field(msg, len, 40, 48, &out->target_info, &min_off))
        return -1;
    if ((out->flags & MP_NTLMSSP_NEGOTIATE_VERSION) && min_off >= 56 && len >= 56) {
        out->has_version = true;
        memcpy(out->version, msg + 48, 8);
    }
    return 0;
}

int mp_ntlmssp_parse_authenticate(const uint8_t *msg, size_t len, struct mp_ntlm_authenticate *out)
{
    memset(out, 0, sizeof(*out));
    if (mp_ntlmssp_msg_type(msg, len) != MP_NTLMSSP_AUTHENTICATE_MSG || len < MP_NTLM_AUTH_HDR_LEN)
        return -1;
    size_t min_off = len;
    const size_t h = MP_NTLM_AUTH_HDR_LEN;
    if (field(msg, len, 12, h, &out->lm, &min_off) || field(msg, len, 20, h, &out->nt, &min_off) ||
        field(msg, len, 28, h, &out->domain, &min_off) ||
        field(msg, len, 36, h, &out->user, &min_off) ||
        field(msg, len, 44, h, &out->workstation, &min_off) ||
        field(msg, len, 52, h, &out->enc_session_key, &min_off))
        return -1;
    out->flags = g32(msg + 60);
    if (min_off >= MP_NTLM_AUTH_MIC_OFF && len >= MP_NTLM_AUTH_MIC_OFF &&
        (out->flags & MP_NTLMSSP_NEGOTIATE_VERSION)) {
        out->has_version = true;
        memcpy(out->version, msg + MP_NTLM_AUTH_VERSION_OFF, 8);
    }
    if (min_off >= MP_NTLM_AUTH_PAYLOAD_WITH_MIC && len >= MP_NTLM_AUTH_PAYLOAD_WITH_MIC) {
        out->has_mic_field = true;
        memcpy(out->mic, msg + MP_NTLM_AUTH_MIC_OFF, 16);
    }
    return 0;
}

static int av_once(struct mp_ntlm_field *f, const uint8_t *v, uint16_t l)
{
    if (f->p)
        return -1; /* duplicate */
    f->p = v;
    f->len = l;
    return 0;
}

int mp_ntlm_av_parse(const uint8_t *ti, size_t len, struct mp_ntlm_av_info *out)
{
    memset(out, 0, sizeof(*out));
    size_t o = 0;
    if (!ti && len)
        return -1;
    for (;;) {
        if (len - o < 4)
            return -1; /* no MsvAvEOL */
        uint16_t id = g16(ti + o), l = g16(ti + o + 2);
        o += 4;
        if (l > len - o)
            return -1;
        const uint8_t *v = ti + o;
        o += l;
        int r = 0;
        switch (id) {
        case MP_MSV_AV_EOL:
            return l == 0 ? 0 : -1;
        case MP_MSV_AV_NB_COMPUTER:
            r = av_once(&out->nb_computer, v, l);
            break;
        case MP_MSV_AV_NB_DOMAIN:
            r = av_once(&out->nb_domain, v, l);
            break;
        case MP_MSV_AV_DNS_COMPUTER:
            r = av_once(&out->dns_computer, v, l);
            break;
        case MP_MSV_AV_DNS_DOMAIN:
            r = av_once(&out->dns_domain, v, l);
            break;
        case MP_MSV_AV_DNS_TREE:
            r = av_once(&out->dns_tree, v, l);
            break;
        case MP_MSV_AV_TARGET_NAME:
            r = av_once(&out->target_name, v, l);
            break;
        case MP_MSV_AV_SINGLE_HOST:
            r = av_once(&out->single_host, v, l);
            break;
        case MP_MSV_AV_CHANNEL_BINDINGS:
            r = l == 16 ? av_once(&out->channel_bindings, v, l) : -1;
            break;
        case MP_MSV_AV_FLAGS:
            if (l != 4 || out->has_flags)
                return -1;
            out->has_flags = true;
            out->flags = g32(v);
            break;
        case MP_MSV_AV_TIMESTAMP:
            if (l != 8 || out->has_timestamp)
                return -1;
            out->has_timestamp = true;
            out->timestamp = (uint64_t)g32(v) | ((uint64_t)g32(v + 4) << 32);
            break;
        default: /* unknown pairs are skipped */
            break;
        }
        if (r)
            return -1;
    }
}

int mp_ntlmv2_response_av(const uint8_t *nt, size_t nt_len, struct mp_ntlm_field *ti)
{
    const size_t start = 16 + MP_NTLMV2_BLOB_FIXED;
    ti->p = NULL;
    ti->len = 0;
    if (!nt || nt_len < start + 4 || nt_len - start > 0xffff)
        return -1;
    ti->p = nt + start;
    ti->len = (uint16_t)(nt_len - start);
    return 0;
}

/* ---- building --------------------------------------------------------------*/

int mp_ntlm_av_put(struct mp_buf *out, uint16_t id, const void *val, size_t len)
{
    uint8_t h[4];
    if (len > 0xffff)
        return -1;
    p16(h, id);
    p16(h + 2, (uint16_t)len);
    return (mp_buf_append(out, h, 4) || (len && mp_buf_append(out, val, len))) ? -1 : 0;
}

/* Lays out a message: fixed header of hdr bytes (already in m[0..hdr)),
 * then each payload at the next offset, its security buffer at sb[i]. */
struct payload {
    size_t sb; /* where the security buffer goes */
    const void *p;
    size_t len;
};

static int emit(struct mp_buf *out, uint8_t *hdr, size_t hdr_len, const struct payload *pl, int n)
{
    size_t total = hdr_len;
    for (int i = 0; i < n; i++) {
        if (pl[i].len > 0xffff || (pl[i].len && !pl[i].p))
            return -1;
        total += pl[i].len;
    }
    if (total > 0xffffffffu)
        return -1;
    size_t off = hdr_len;
    for (int i = 0; i < n; i++) {
        p16(hdr + pl[i].sb, (uint16_t)pl[i].len);
        p16(hdr + pl[i].sb + 2, (uint16_t)pl[i].len);
        p32(hdr + pl[i].sb + 4, (uint32_t)off);
        off += pl[i].len;
    }
    struct mp_buf b = {0};
    int r = mp_buf_append(&b, hdr, hdr_len);
    for (int i = 0; !r && i < n; i++)
        if (pl[i].len)
            r = mp_buf_append(&b, pl[i].p, pl[i].len);
    if (!r)
        r = mp_buf_append(out, b.data, b.len);
    mp_ntlm_cleanse(b.data, b.len);
    mp_buf_free(&b);
    return r ? -1 : 0;
}

static int ascii_only(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

int mp_ntlmssp_build_negotiate(struct mp_buf *out, uint32_t flags, const char *domain,
                               const char *workstation, const uint8_t *version)
{
    uint8_t h[40] = {0};
    size_t dl = domain ? strlen(domain) : 0, wl = workstation ? strlen(workstation) : 0;
    if (!ascii_only(domain) || !ascii_only(workstation))
        return -1;
    flags &= ~(MP_NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED |
               MP_NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED | MP_NTLMSSP_NEGOTIATE_VERSION);
    if (dl)
        flags |= MP_NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED;
    if (wl)
        flags |= MP_NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED;
    if (version) {
        flags |= MP_NTLMSSP_NEGOTIATE_VERSION;
        memcpy(h + 32, version, 8);
    }
    memcpy(h, ntlmssp_sig, 8);
    p32(h + 8, MP_NTLMSSP_NEGOTIATE_MSG);
    p32(h + 12, flags);
    struct payload pl[2] = {{16, domain, dl}, {24, workstation, wl}};
    return emit(out, h, version ? 40 : 32, pl, 2);
}

int mp_ntlmssp_build_challenge(struct mp_buf *out, uint32_t flags, const uint8_t *target_name16,
                               size_t tn_len, const uint8_t server_chal[8],
                               const uint8_t *target_info, size_t ti_len, const uint8_t *version)
{
    uint8_t h[56] = {0};
    flags &= ~MP_NTLMSSP_NEGOTIATE_VERSION;
    if (version) {
        flags |= MP_NTLMSSP_NEGOTIATE_VERSION;
        memcpy(h + 48, version, 8);
    }
    if (ti_len)
        flags |= MP_NTLMSSP_NEGOTIATE_TARGET_INFO;
    memcpy(h, ntlmssp_sig, 8);
    p32(h + 8, MP_NTLMSSP_CHALLENGE_MSG);
    p32(h + 20, flags);
    memcpy(h + 24, server_chal, 8);
    struct payload pl[2] = {{12, target_name16, tn_len}, {40, target_info, ti_len}};
    return emit(out, h, version ? 56 : 48, pl, 2);
}

int mp_ntlmssp_build_authenticate(struct mp_buf *out, uint32_t flags, const uint8_t *lm,
                                  size_t lm_len, const uint8_t *nt, size_t nt_len,
                                  const uint8_t *domain16, size_t dom_len, const uint8_t *user16,
                                  size_t user_len, const uint8_t *ws16, size_t ws_len,
                                  const uint8_t *enc_key, size_t enc_len, const uint8_t *version,
                                  bool with_mic)
{
    uint8_t h[MP_NTLM_AUTH_PAYLOAD_WITH_MIC] = {0};
    size_t hl = MP_NTLM_AUTH_HDR_LEN;
    if (version || with_mic) {
        memcpy(h + MP_NTLM_AUTH_VERSION_OFF, version ? version : our_version, 8);
        flags |= MP_NTLMSSP_NEGOTIATE_VERSION;
        hl = with_mic ? MP_NTLM_AUTH_PAYLOAD_WITH_MIC : MP_NTLM_AUTH_MIC_OFF;
    } else {
        flags &= ~MP_NTLMSSP_NEGOTIATE_VERSION;
    }
    memcpy(h, ntlmssp_sig, 8);
    p32(h + 8, MP_NTLMSSP_AUTHENTICATE_MSG);
    p32(h + 60, flags);
    /* payload order as Windows: domain, user, workstation, LM, NT, key */
    struct payload pl[6] = {{28, domain16, dom_len}, {36, user16, user_len},
                            {44, ws16, ws_len},      {12, lm, lm_len},
                            {20, nt, nt_len},        {52, enc_key, enc_len}};
    return emit(out, h, hl, pl, 6);
}

uint64_t mp_ntlm_filetime_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec + 11644473600ull) * 10000000ull + (uint64_t)ts.tv_nsec / 100;
}

/* ---- status ----------------------------------------------------------------*/

const char *mp_ntlm_strerror(int status)
{
    switch (status) {
    case MP_NTLM_OK:
        return "ok";
    case MP_NTLM_E_MALFORMED:
        return "malformed NTLMSSP message";
    case MP_NTLM_E_STATE:
        return "NTLMSSP message out of order";
    case MP_NTLM_E_UNSUPPORTED:
        return "unsupported NTLM variant (NTLMv1, LM or OEM)";
    case MP_NTLM_E_ANONYMOUS:
        return "anonymous logon refused";
    case MP_NTLM_E_LOGON:
        return "logon failure";
    case MP_NTLM_E_MIC:
        return "NTLM MIC missing or wrong";
    case MP_NTLM_E_BINDINGS:
        return "NTLM channel bindings do not match";
    case MP_NTLM_E_INTERNAL:
        return "NTLM internal error";
    default:
        return "unknown NTLM status";
    }
}

/* ---- acceptor --------------------------------------------------------------*/

void mp_ntlm_acceptor_init(struct mp_ntlm_acceptor *a, const struct mp_ntlm_acceptor_cfg *cfg)
{
    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
}

void mp_ntlm_acceptor_free(struct mp_ntlm_acceptor *a)
{
    if (!a)
        return;
    mp_buf_free(&a->neg);
    mp_buf_free(&a->chal);
    mp_ntlm_cleanse(a->server_chal, sizeof(a->server_chal));
    a->state = 3;
}

/* UTF-8 name -> one UTF-16LE AV pair (skipped when NULL/empty). */
static int av_name(struct mp_buf *b, uint16_t id, const char *name)
{
    uint8_t u[2 * 256];
    size_t n;
    if (!name || !*name)
        return 0;
    if (strlen(name) > 255 || mp_utf8_to_utf16le(name, u, sizeof(u), &n))
        return -1;
    return mp_ntlm_av_put(b, id, u, n);
}

int mp_ntlm_acceptor_negotiate(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                               struct mp_buf *out)
{
    struct mp_ntlm_negotiate n;
    if (a->state != 0) {
        a->state = 3;
        return MP_NTLM_E_STATE;
    }
    a->state = 3;
    if (mp_ntlmssp_parse_negotiate(msg, len, &n))
        return MP_NTLM_E_MALFORMED;
    if (!(n.flags & MP_NTLMSSP_NEGOTIATE_UNICODE) || !(n.flags & MP_NTLMSSP_NEGOTIATE_NTLM))
        return MP_NTLM_E_UNSUPPORTED;
    const struct mp_ntlm_acceptor_cfg *cfg = a->cfg;
    /* Echo what the client asked for among what we support; ESS wins over
     * LM_KEY (which we never grant). */
    uint32_t echo = MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL |
                    MP_NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
                    MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | MP_NTLMSSP_NEGOTIATE_128 |
                    MP_NTLMSSP_NEGOTIATE_56 | MP_NTLMSSP_NEGOTIATE_KEY_EXCH |
                    MP_NTLMSSP_REQUEST_TARGET | MP_NTLMSSP_NEGOTIATE_IDENTIFY;
    uint32_t f = (n.flags & echo) | MP_NTLMSSP_NEGOTIATE_UNICODE | MP_NTLMSSP_NEGOTIATE_NTLM |
                 MP_NTLMSSP_NEGOTIATE_TARGET_INFO;
    const char *tn = cfg->nb_domain && *cfg->nb_domain ? cfg->nb_domain : cfg->nb_computer;
    f |= (cfg->nb_domain && *cfg->nb_domain) ? MP_NTLMSSP_TARGET_TYPE_DOMAIN
                                             : MP_NTLMSSP_TARGET_TYPE_SERVER;

    struct mp_buf ti = {0}, ch = {0};
    uint8_t tn16[2 * 256], ts[8];
    size_t tn_len = 0;
    int r = MP_NTLM_E_INTERNAL;
    if ((f & MP_NTLMSSP_REQUEST_TARGET) && tn &&
        (strlen(tn) > 255 || mp_utf8_to_utf16le(tn, tn16, sizeof(tn16), &tn_len)))
        goto out;
    uint64_t now = mp_ntlm_filetime_now();
    for (int i = 0; i < 8; i++)
        ts[i] = (uint8_t)(now >> (8 * i));
    if (av_name(&ti, MP_MSV_AV_NB_DOMAIN, cfg->nb_domain) ||
        av_name(&ti, MP_MSV_AV_NB_COMPUTER, cfg->nb_computer) ||
        av_name(&ti, MP_MSV_AV_DNS_DOMAIN, cfg->dns_domain) ||
        av_name(&ti, MP_MSV_AV_DNS_COMPUTER, cfg->dns_computer) ||
        av_name(&ti, MP_MSV_AV_DNS_TREE, cfg->dns_tree) ||
        mp_ntlm_av_put(&ti, MP_MSV_AV_TIMESTAMP, ts, 8) ||
        mp_ntlm_av_put(&ti, MP_MSV_AV_EOL, NULL, 0))
        goto out;
    if (mp_ntlm_random(a->server_chal, 8))
        goto out;
    if (mp_ntlmssp_build_challenge(&ch, f, tn_len ? tn16 : NULL, tn_len, a->server_chal, ti.data,
                                   ti.len, our_version))
        goto out;
    mp_buf_free(&a->neg);
    mp_buf_free(&a->chal);
    if (mp_buf_append(&a->neg, msg, len) || mp_buf_append(&a->chal, ch.data, ch.len) ||
        mp_buf_append(out, ch.data, ch.len))
        goto out;
    a->chal_flags = f;
    a->state = 1;
    r = MP_NTLM_OK;
out:
    mp_buf_free(&ti);
    mp_buf_free(&ch);
    return r;
}

/* A name field (UTF-16LE or OEM) as UTF-8 into out (3*MAX+1 bytes). */
static int name_utf8(const struct mp_ntlm_field *f, bool unicode, char *out, size_t cap)
{
    if (!unicode) {
        if (f->len > MP_NTLM_NAME_MAX)
            return -1;
        uint8_t u[2 * MP_NTLM_NAME_MAX];
        for (size_t i = 0; i < f->len; i++) { /* OEM taken as Latin-1 */
            u[2 * i] = f->p[i];
            u[2 * i + 1] = 0;
        }
        return mp_utf16le_to_utf8(u, 2 * (size_t)f->len, out, cap);
    }
    if (f->len % 2 || f->len > 2 * MP_NTLM_NAME_MAX)
        return -1;
    return mp_utf16le_to_utf8(f->p, f->len, out, cap);
}

/* The name as UTF-16LE for NTOWFv2 (OEM widened as Latin-1). */
static const uint8_t *name_u16(const struct mp_ntlm_field *f, bool unicode, uint8_t *tmp,
                               size_t *len)
{
    if (unicode) {
        *len = f->len;
        return f->p;
    }
    for (size_t i = 0; i < f->len; i++) {
        tmp[2 * i] = f->p[i];
        tmp[2 * i + 1] = 0;
    }
    *len = 2 * (size_t)f->len;
    return tmp;
}

/* given_base: the session base key from a domain controller that checked
 * the NTLMv2 response itself (winbind); NULL: checked here with the NT hash
 * from cfg->lookup. */
static int verify(const struct mp_ntlm_acceptor_cfg *cfg, const uint8_t server_chal[8],
                  const uint8_t *neg, size_t neg_len, const uint8_t *chal, size_t chal_len,
                  const uint8_t *msg, size_t len, const uint8_t *given_base,
                  struct mp_ntlm_result *res)
{
    struct mp_ntlm_authenticate au;
    struct mp_ntlm_field ti;
    struct mp_ntlm_av_info av;
    uint8_t nt_hash[16], key[16], base[16], kx[16], mic[16];
    uint8_t ut[2 * MP_NTLM_NAME_MAX], dt[2 * MP_NTLM_NAME_MAX];
    int r;

    memset(res, 0, sizeof(*res));
    if (mp_ntlmssp_parse_authenticate(msg, len, &au))
        return MP_NTLM_E_MALFORMED;
    bool uni = (au.flags & MP_NTLMSSP_NEGOTIATE_UNICODE) != 0;
    if (au.nt.len == 0 && au.lm.len <= 1)
        return MP_NTLM_E_ANONYMOUS;
    if (au.nt.len <= 24) /* NTLMv1, NTLMv1-ESS or LM only */
        return MP_NTLM_E_UNSUPPORTED;
    if (mp_ntlmv2_response_av(au.nt.p, au.nt.len, &ti) || mp_ntlm_av_parse(ti.p, ti.len, &av))
        return MP_NTLM_E_MALFORMED;
    if (name_utf8(&au.user, uni, res->user, sizeof(res->user)) ||
        name_utf8(&au.domain, uni, res->domain, sizeof(res->domain)) ||
        name_utf8(&au.workstation, uni, res->workstation, sizeof(res->workstation)))
        return MP_NTLM_E_MALFORMED;
    if (!res->user[0])
        return MP_NTLM_E_ANONYMOUS;
    /* 3.2.5.1.2: key exchange when KEY_EXCH and (SIGN or SEAL) */
    bool kex = (au.flags & MP_NTLMSSP_NEGOTIATE_KEY_EXCH) &&
               (au.flags & (MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL));
    if (kex && au.enc_session_key.len != 16)
        return MP_NTLM_E_MALFORMED;

    memset(nt_hash, 0, sizeof(nt_hash));
    memset(key, 0, sizeof(key));
    r = MP_NTLM_E_INTERNAL;
    if (given_base) {
        memcpy(base, given_base, 16);
    } else {
        /* An unknown user goes through the same computation with a random
         * hash, so that timing does not tell unknown users from wrong
         * passwords. */
        bool known =
            cfg->lookup && cfg->lookup(cfg->lookup_arg, res->user, res->domain, nt_hash) == 0;
        if (!known && mp_ntlm_random(nt_hash, sizeof(nt_hash)))
            goto out;
        size_t ul, dl;
        const uint8_t *u16 = name_u16(&au.user, uni, ut, &ul),
                      *d16 = name_u16(&au.domain, uni, dt, &dl);
        if (mp_ntlm_ntowfv2_u16(nt_hash, u16, ul, d16, dl, key))
            goto out;
        if (mp_ntlmv2_verify(key, server_chal, au.nt.p, au.nt.len, base) || !known) {
            r = MP_NTLM_E_LOGON;
            goto out;
        }
    }
    if (mp_ntlm_kxkey(au.flags, true, base, server_chal, NULL, kx))
        goto out;
    if (kex) {
        if (mp_ntlm_key_exchange(kx, au.enc_session_key.p, res->exported_key))
            goto out;
    } else {
        memcpy(res->exported_key, kx, 16);
    }

    bool mic_claimed = av.has_flags && (av.flags & MP_MSV_AV_FLAG_MIC);
    if (mic_claimed || cfg->require_mic) {
        r = MP_NTLM_E_MIC;
        if (!mic_claimed || !au.has_mic_field || !neg || !chal)
            goto out;
        if (mp_ntlm_mic(res->exported_key, neg, neg_len, chal, chal_len, msg, len,
                        MP_NTLM_AUTH_MIC_OFF, mic)) {
            r = MP_NTLM_E_INTERNAL;
            goto out;
        }
        if (mp_ntlm_memcmp(mic, au.mic, 16))
            goto out;
        res->mic_checked = true;
    }
    if (cfg->channel_bindings) {
        r = MP_NTLM_E_BINDINGS;
        if (!av.channel_bindings.p ||
            mp_ntlm_memcmp(av.channel_bindings.p, cfg->channel_bindings, 16))
            goto out;
    }
    res->flags = au.flags;
    res->has_timestamp = av.has_timestamp;
    res->client_timestamp = av.timestamp;
    r = MP_NTLM_OK;
out:
    mp_ntlm_cleanse(nt_hash, sizeof(nt_hash));
    mp_ntlm_cleanse(key, sizeof(key));
    mp_ntlm_cleanse(base, sizeof(base));
    mp_ntlm_cleanse(kx, sizeof(kx));
    if (r != MP_NTLM_OK)
        mp_ntlm_cleanse(res->exported_key, sizeof(res->exported_key));
    return r;
}

int mp_ntlm_verify_authenticate(const struct mp_ntlm_acceptor_cfg *cfg,
                                const uint8_t server_chal[8], const uint8_t *neg, size_t neg_len,
                                const uint8_t *chal, size_t chal_len, const uint8_t *msg,
                                size_t len, struct mp_ntlm_result *res)
{
    return verify(cfg, server_chal, neg, neg_len, chal, chal_len, msg, len, NULL, res);
}

int mp_ntlm_acceptor_peek(const struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                          struct mp_ntlm_logon *out)
{
    struct mp_ntlm_authenticate au;
    struct mp_ntlm_field ti;
    struct mp_ntlm_av_info av;
    memset(out, 0, sizeof(*out));
    if (a->state != 1)
        return MP_NTLM_E_STATE;
    if (mp_ntlmssp_parse_authenticate(msg, len, &au))
        return MP_NTLM_E_MALFORMED;
    bool uni = (au.flags & MP_NTLMSSP_NEGOTIATE_UNICODE) != 0;
    if (au.nt.len == 0 && au.lm.len <= 1)
        return MP_NTLM_E_ANONYMOUS;
    if (au.nt.len <= 24)
        return MP_NTLM_E_UNSUPPORTED;
    if (mp_ntlmv2_response_av(au.nt.p, au.nt.len, &ti) || mp_ntlm_av_parse(ti.p, ti.len, &av))
        return MP_NTLM_E_MALFORMED;
    if (name_utf8(&au.user, uni, out->user, sizeof(out->user)) ||
        name_utf8(&au.domain, uni, out->domain, sizeof(out->domain)) ||
        name_utf8(&au.workstation, uni, out->workstation, sizeof(out->workstation)))
        return MP_NTLM_E_MALFORMED;
    if (!out->user[0])
        return MP_NTLM_E_ANONYMOUS;
    memcpy(out->server_chal, a->server_chal, 8);
    out->nt = au.nt;
    out->lm = au.lm;
    return MP_NTLM_OK;
}

static int acceptor_finish(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                           const uint8_t *given_base, struct mp_ntlm_result *res)
{
    if (a->state != 1) {
        memset(res, 0, sizeof(*res));
        a->state = 3;
        return MP_NTLM_E_STATE;
    }
    int r = verify(a->cfg, a->server_chal, a->neg.data, a->neg.len, a->chal.data, a->chal.len, msg,
                   len, given_base, res);
    if (r == MP_NTLM_OK) {
        /* The client may only drop flags the challenge offered, not add. */
        uint32_t extra =
            res->flags & ~a->chal_flags &
            (MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL | MP_NTLMSSP_NEGOTIATE_KEY_EXCH |
             MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | MP_NTLMSSP_NEGOTIATE_128 |
             MP_NTLMSSP_NEGOTIATE_56);
        if (extra) {
            mp_ntlm_cleanse(res->exported_key, sizeof(res->exported_key));
            r = MP_NTLM_E_MALFORMED;
        }
    }
    a->state = r == MP_NTLM_OK ? 2 : 3;
    mp_buf_free(&a->neg);
    mp_buf_free(&a->chal);
    mp_ntlm_cleanse(a->server_chal, sizeof(a->server_chal));
    return r;
}

int mp_ntlm_acceptor_authenticate(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                                  struct mp_ntlm_result *res)
{
    return acceptor_finish(a, msg, len, NULL, res);
}

int mp_ntlm_acceptor_authenticate_key(struct mp_ntlm_acceptor *a, const uint8_t *msg, size_t len,
                                      const uint8_t session_base_key[16],
                                      struct mp_ntlm_result *res)
{
    return acceptor_finish(a, msg, len, session_base_key, res);
}

/* ---- initiator -------------------------------------------------------------*/

static uint8_t *dup_u16(const char *s, size_t *len)
{
    size_t cap = 2 * strlen(s) + 2;
    uint8_t *p = malloc(cap);
    if (p && mp_utf8_to_utf16le(s, p, cap, len)) {
        free(p);
        p = NULL;
    }
    return p;
}

void mp_ntlm_initiator_free(struct mp_ntlm_initiator *c)
{
    if (!c)
        return;
    free(c->user16);
    free(c->domain16);
    free(c->ws16);
    free(c->spn);
    mp_buf_free(&c->neg);
    mp_ntlm_cleanse(c, sizeof(*c));
}

int mp_ntlm_initiator_init(struct mp_ntlm_initiator *c, const char *user, const char *domain,
                           const char *password, const uint8_t *nt_hash, const char *workstation,
                           const char *spn, uint32_t flags)
{
    memset(c, 0, sizeof(*c));
    if (!user || !*user || (!password && !nt_hash) || mp_ntlm_crypto_init())
        return -1;
    c->flags = flags ? flags : MP_NTLM_INITIATOR_FLAGS;
    c->flags |= MP_NTLMSSP_NEGOTIATE_UNICODE | MP_NTLMSSP_NEGOTIATE_NTLM;
    c->user16 = dup_u16(user, &c->user_len);
    c->domain16 = dup_u16(domain ? domain : "", &c->domain_len);
    c->ws16 = dup_u16(workstation ? workstation : "", &c->ws_len);
    if (spn)
        c->spn = strdup(spn);
    if (!c->user16 || !c->domain16 || !c->ws16 || (spn && !c->spn) ||
        c->user_len > 2 * MP_NTLM_NAME_MAX || c->domain_len > 2 * MP_NTLM_NAME_MAX ||
        c->ws_len > 2 * MP_NTLM_NAME_MAX)
        goto fail;
    if (nt_hash)
        memcpy(c->nt_hash, nt_hash, 16);
    else if (mp_ntlm_ntowfv1(password, c->nt_hash))
        goto fail;
    return 0;
fail:
    mp_ntlm_initiator_free(c);
    return -1;
}

int mp_ntlm_initiator_negotiate(struct mp_ntlm_initiator *c, struct mp_buf *out)
{
    if (c->state != 0)
        return -1;
    mp_buf_free(&c->neg);
    if (mp_ntlmssp_build_negotiate(&c->neg, c->flags, NULL, NULL,
                                   (c->flags & MP_NTLMSSP_NEGOTIATE_VERSION) ? our_version
                                                                             : NULL) ||
        mp_buf_append(out, c->neg.data, c->neg.len))
        return -1;
    c->state = 1;
    return 0;
}

/* The client's target info: the server's pairs in order, MsvAvFlags with
 * the MIC bit, MsvAvTargetName, unbound channel bindings, then EOL. */
static int client_target_info(const struct mp_ntlm_initiator *c, const uint8_t *ti, size_t len,
                              struct mp_buf *out)
{
    size_t o = 0;
    uint8_t fl[4] = {0};
    static const uint8_t zero16[16];
    uint32_t avf = 0;
    while (ti && len - o >= 4) {
        uint16_t id = g16(ti + o), l = g16(ti + o + 2);
        if (l > len - o - 4)
            return -1;
        if (id == MP_MSV_AV_EOL)
            break;
        if (id == MP_MSV_AV_FLAGS && l == 4)
            avf = g32(ti + o + 4);
        else if (id != MP_MSV_AV_TARGET_NAME && id != MP_MSV_AV_CHANNEL_BINDINGS &&
                 mp_buf_append(out, ti + o, 4 + (size_t)l))
            return -1;
        o += 4 + (size_t)l;
    }
    p32(fl, avf | MP_MSV_AV_FLAG_MIC);
    if (mp_ntlm_av_put(out, MP_MSV_AV_FLAGS, fl, 4) ||
        mp_ntlm_av_put(out, MP_MSV_AV_CHANNEL_BINDINGS, zero16, 16))
        return -1;
    if (c->spn) {
        uint8_t spn16[2 * 512];
        size_t n;
        if (strlen(c->spn) > 511 || mp_utf8_to_utf16le(c->spn, spn16, sizeof(spn16), &n) ||
            mp_ntlm_av_put(out, MP_MSV_AV_TARGET_NAME, spn16, n))
            return -1;
    }
    return mp_ntlm_av_put(out, MP_MSV_AV_EOL, NULL, 0);
}

int mp_ntlm_initiator_authenticate(struct mp_ntlm_initiator *c, const uint8_t *msg, size_t len,
                                   struct mp_buf *out)
{
    struct mp_ntlm_challenge ch;
    struct mp_ntlm_av_info av;
    struct mp_buf ti = {0}, am = {0};
    uint8_t key[16], cc[8], base[16], enc[16], lm[24], mic[16], *nt = NULL;
    size_t nt_len = 0;
    int r = -1;
    if (c->state != 1 || mp_ntlmssp_parse_challenge(msg, len, &ch))
        goto out;
    if (!(ch.flags & MP_NTLMSSP_NEGOTIATE_UNICODE))
        goto out; /* OEM only: not supported */
    if (ch.target_info.len && mp_ntlm_av_parse(ch.target_info.p, ch.target_info.len, &av))
        goto out;
    if (!ch.target_info.len)
        memset(&av, 0, sizeof(av));
    /* Negotiated: what we asked for and the server granted. */
    uint32_t negotiable = MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL |
                          MP_NTLMSSP_NEGOTIATE_ALWAYS_SIGN |
                          MP_NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | MP_NTLMSSP_NEGOTIATE_128 |
                          MP_NTLMSSP_NEGOTIATE_56 | MP_NTLMSSP_NEGOTIATE_KEY_EXCH |
                          MP_NTLMSSP_NEGOTIATE_IDENTIFY | MP_NTLMSSP_NEGOTIATE_TARGET_INFO;
    uint32_t f = (c->flags & ~negotiable) | (c->flags & ch.flags & negotiable);
    f &=
        ~(MP_NTLMSSP_NEGOTIATE_OEM | MP_NTLMSSP_NEGOTIATE_LM_KEY |
          MP_NTLMSSP_NEGOTIATE_OEM_DOMAIN_SUPPLIED | MP_NTLMSSP_NEGOTIATE_OEM_WORKSTATION_SUPPLIED);
    f |= MP_NTLMSSP_NEGOTIATE_UNICODE | MP_NTLMSSP_NEGOTIATE_VERSION;

    uint64_t ts = av.has_timestamp ? av.timestamp : mp_ntlm_filetime_now();
    if (client_target_info(c, ch.target_info.p, ch.target_info.len, &ti))
        goto out;
    nt_len = 16 + MP_NTLMV2_BLOB_FIXED + ti.len + 4;
    nt = malloc(nt_len);
    if (!nt || mp_ntlm_random(cc, 8))
        goto out;
    if (mp_ntlm_ntowfv2_u16(c->nt_hash, c->user16, c->user_len, c->domain16, c->domain_len, key) ||
        mp_ntlmv2_response(key, ch.server_chal, cc, ts, ti.data, ti.len, nt, nt_len, &nt_len, lm,
                           base))
        goto out;
    if (av.has_timestamp) /* 3.1.5.1.2: with MsvAvTimestamp the LM response is Z(24) */
        memset(lm, 0, sizeof(lm));
    /* KXKEY = base for NTLMv2; with key exchange a fresh exported key */
    bool kex = (f & MP_NTLMSSP_NEGOTIATE_KEY_EXCH) &&
               (f & (MP_NTLMSSP_NEGOTIATE_SIGN | MP_NTLMSSP_NEGOTIATE_SEAL));
    if (kex) {
        if (mp_ntlm_random(c->exported_key, 16) || mp_ntlm_key_exchange(base, c->exported_key, enc))
            goto out;
    } else {
        memcpy(c->exported_key, base, 16);
    }
    if (mp_ntlmssp_build_authenticate(&am, f, lm, 24, nt, nt_len, c->domain16, c->domain_len,
                                      c->user16, c->user_len, c->ws16, c->ws_len, kex ? enc : NULL,
                                      kex ? 16 : 0, our_version, true))
        goto out;
    if (mp_ntlm_mic(c->exported_key, c->neg.data, c->neg.len, msg, len, am.data, am.len,
                    MP_NTLM_AUTH_MIC_OFF, mic))
        goto out;
    memcpy(am.data + MP_NTLM_AUTH_MIC_OFF, mic, 16);
    if (mp_buf_append(out, am.data, am.len))
        goto out;
    c->flags = f;
    c->state = 2;
    r = 0;
out:
    if (r)
        mp_ntlm_cleanse(c->exported_key, 16);
    mp_ntlm_cleanse(key, sizeof(key));
    mp_ntlm_cleanse(base, sizeof(base));
    mp_ntlm_cleanse(enc, sizeof(enc));
    free(nt);
    mp_buf_free(&ti);
    mp_buf_free(&am);
    return r;
}
