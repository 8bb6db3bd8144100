/* mapiproxy configuration parser: Samba smb.conf syntax.
 *
 * One pass over the text: every `key = value` is recorded in cfg->entries and,
 * when it is one of ours, checked and applied at once (the last assignment
 * wins, as in Samba).  Problems are collected in the caller's mp_diag as
 * "FILE:LINE: what is wrong; what to do"; parsing never stops at the first.
 * The password value is never copied into any message.
 */
#include "core/config.h"
#include "core/affinity.h"
#include "ops/syslog.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIAG 200 /* messages kept per load; then one "too many" line */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static void diag_vadd(struct mp_diag *d, const char *fmt, va_list ap)
{
    if (!d)
        return;
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0)
        return;
    char **nm = realloc(d->msgs, (d->n + 1) * sizeof *nm);
    if (!nm) {
        free(m);
        return;
    }
    d->msgs = nm;
    d->msgs[d->n++] = m;
}

__attribute__((format(printf, 2, 3))) static void diag_add(struct mp_diag *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(d, fmt, ap);
    va_end(ap);
}

void mp_diag_free(struct mp_diag *diag)
{
    if (!diag)
        return;
    for (size_t i = 0; i < diag->n; i++)
        free(diag->msgs[i]);
    free(diag->msgs);
    diag->msgs = NULL;
    diag->n = 0;
}

/* Bounded copy, always NUL-terminated (callers check lengths first). */
static void scopy(char *dst, size_t n, const char *src)
{
    size_t l = strlen(src);
    if (l >= n)
        l = n - 1;
    memcpy(dst, src, l);
    dst[l] = 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f' || c == '\n';
}

/* Copies s (len n) into a fresh string, trimmed. */
static char *dup_trim(const char *s, size_t n)
{
    while (n && is_space(*s))
        s++, n--;
    while (n && is_space(s[n - 1]))
        n--;
    char *r = malloc(n + 1);
    if (!r)
        return NULL;
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

/* Key normalization: trim, lower-case, fold white space runs to one space,
 * and drop white space around the first ':' ("mapiproxy : Log  Level" ->
 * "mapiproxy:log level").  Returns a fresh string. */
static char *normalize_key(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (!r)
        return NULL;
    size_t o = 0;
    bool pend_space = false, seen_colon = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (is_space(c)) {
            pend_space = o > 0;
            continue;
        }
        if (c == ':' && !seen_colon) {
            seen_colon = true;
            pend_space = false;
            r[o++] = ':';
            /* skip spaces after the colon */
            while (i + 1 < n && is_space(s[i + 1]))
                i++;
            continue;
        }
        if (pend_space)
            r[o++] = ' ';
        pend_space = false;
        r[o++] = (char)tolower((unsigned char)c);
    }
    r[o] = 0;
    return r;
}

/* Quotes a value for a message: at most 80 bytes, control bytes as '?'. */
/* A URL to show: "user:password@" of its authority becomes "***@" (a
 * password must never reach the terminal or a log). */
static const char *without_userinfo(const char *url, char *buf, size_t n)
{
    const char *a = strstr(url, "://");
    a = a ? a + 3 : url;
    size_t alen = strcspn(a, "/?#");
    const char *at = NULL;
    for (const char *x = a; x < a + alen; x++)
        if (*x == '@')
            at = x;
    if (!at) {
        snprintf(buf, n, "%s", url);
        return buf;
    }
    snprintf(buf, n, "%.*s***%s", (int)(a - url), url, at);
    return buf;
}

static const char *qv(const char *s, char *buf, size_t n)
{
    size_t o = 0, i = 0;
    for (; s[i] && o + 4 < n && i < 80; i++)
        buf[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i] && o + 4 <= n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = 0;
    return buf;
}

static size_t lev(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cur = row[j];
            size_t sub =
                prev + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t v = sub;
            if (row[j] + 1 < v)
                v = row[j] + 1;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            row[j] = v;
            prev = cur;
        }
    }
    return row[lb];
}

/* Closest of names[] to s, or NULL when none is close. */
static const char *closest(const char *s, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bd = 99;
    size_t ls = strlen(s);
    for (size_t i = 0; i < n; i++) {
        size_t d = lev(s, names[i]);
        size_t ln = strlen(names[i]);
        size_t lim = (ls > ln ? ls : ln) / 3;
        if (lim < 2)
            lim = 2;
        if (d <= lim && d < bd) {
            bd = d;
            best = names[i];
        }
    }
    return best;
}

const char *mp_config_closest(const char *s, const char *const *names, size_t n)
{
    return closest(s, names, n);
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const t[] = {"yes", "true", "1", "on"};
    static const char *const f[] = {"no", "false", "0", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, t[i])) {
            *out = true;
            return true;
        }
        if (!strcasecmp(v, f[i])) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Decimal digits only, no sign; saturates at ULLONG_MAX/2 to flag overflow. */
static bool parse_u64(const char *v, const char **end, unsigned long long *out)
{
    const char *p = v;
    unsigned long long x = 0;
    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        if (x > (1ull << 60))
            x = 1ull << 61; /* keep "too large" */
        else
            x = x * 10 + (unsigned)(*p - '0');
    }
    *end = p;
    *out = x;
    return true;
}

static bool parse_plain_uint(const char *v, unsigned long long *out)
{
    const char *end;
    return parse_u64(v, &end, out) && *end == 0;
}

/* "16M", "256K", "1048576", "64 KiB" -> bytes. */
static bool parse_size(const char *v, unsigned long long *out)
{
    const char *end;
    unsigned long long x;
    if (!parse_u64(v, &end, &x))
        return false;
    while (is_space(*end))
        end++;
    unsigned long long mul = 1;
    if (*end) {
        char c = (char)tolower((unsigned char)*end);
        if (c == 'k')
            mul = 1024;
        else if (c == 'm')
            mul = 1024 * 1024;
        else if (c == 'g')
            mul = 1024ull * 1024 * 1024;
        else if (c != 'b')
            return false;
        if (c != 'b') {
            end++;
            if (!strcasecmp(end, "ib") || !strcasecmp(end, "b"))
                end += strlen(end);
        } else {
            end++;
        }
        if (*end)
            return false;
    }
    if (x > (1ull << 40))
        x = 1ull << 40;
    *out = x * mul;
    return true;
}

/* ------------------------------------------------------------------------ */
/* UUIDs and interfaces                                                      */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

int mp_uuid_parse(const char *s, uint8_t out[16])
{
    if (!s)
        return -1;
    size_t n = strlen(s);
    if (n == 38 && s[0] == '{' && s[37] == '}') {
        s++;
        n = 36;
    }
    if (n != 36)
        return -1;
    uint8_t b[16];
    size_t o = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        int h = hexval(s[i]), l = hexval(s[i + 1]);
        if (h < 0 || l < 0)
            return -1;
        b[o++] = (uint8_t)(h << 4 | l);
        i += 2;
    }
    /* text order is big-endian; wire form swaps the first three fields */
    out[0] = b[3], out[1] = b[2], out[2] = b[1], out[3] = b[0];
    out[4] = b[5], out[5] = b[4];
    out[6] = b[7], out[7] = b[6];
    memcpy(out + 8, b + 8, 8);
    return 0;
}

void mp_uuid_format(const uint8_t in[16], char out[37])
{
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", in[3],
             in[2], in[1], in[0], in[5], in[4], in[7], in[6], in[8], in[9], in[10], in[11], in[12],
             in[13], in[14], in[15]);
}

static const struct known_iface {
    const char *name;
    const char *uuid;
    uint16_t major, minor;
} known_ifaces[] = {
    {"exchange_emsmdb", "a4f1db00-ca47-1067-b31f-00dd010662da", 0, 81},
    {"exchange_async_emsmdb", "5261574a-4572-206e-b268-6b199213b4e4", 0, 1},
    {"exchange_nsp", "f5cc5a18-4264-101a-8c59-08002b2f8426", 56, 0},
    {"exchange_ds_rfr", "1544f5e0-613c-11d1-93df-00c04fd7bd09", 1, 0},
    {"epmapper", "e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0},
    {"lsarpc", "12345778-1234-abcd-ef00-0123456789ab", 0, 0},
    {"samr", "12345778-1234-abcd-ef00-0123456789ac", 1, 0},
    {"netlogon", "12345678-1234-abcd-ef00-01234567cffb", 1, 0},
};
#define N_KNOWN_IFACES (sizeof known_ifaces / sizeof known_ifaces[0])

static const char *const default_ifaces[] = {"exchange_emsmdb", "exchange_async_emsmdb",
                                             "exchange_nsp", "exchange_ds_rfr"};

/* Parses "MAJOR.MINOR", "MAJOR" or Samba's "0xVVVVVVVV" (minor << 16 | major). */
static bool parse_version(const char *v, uint16_t *maj, uint16_t *min)
{
    unsigned long long a, b = 0;
    const char *end;
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
        if (!v[2] || strlen(v + 2) > 8)
            return false;
        unsigned long x = 0;
        for (const char *p = v + 2; *p; p++) {
            int h = hexval(*p);
            if (h < 0)
                return false;
            x = x << 4 | (unsigned)h;
        }
        *maj = (uint16_t)(x & 0xffff);
        *min = (uint16_t)(x >> 16);
        return true;
    }
    if (!parse_u64(v, &end, &a) || a > 65535)
        return false;
    if (*end == '.') {
        if (!parse_u64(end + 1, &end, &b) || b > 65535)
            return false;
    }
    if (*end)
        return false;
    *maj = (uint16_t)a;
    *min = (uint16_t)b;
    return true;
}

/* Like mp_iface_parse, with a reason ("what is wrong; what to do") on failure. */
static int iface_parse(const char *text, struct mp_iface_spec *spec, char *err, size_t errlen)
{
    memset(spec, 0, sizeof *spec);
    for (size_t i = 0; i < N_KNOWN_IFACES; i++) {
        if (!strcasecmp(text, known_ifaces[i].name)) {
            mp_uuid_parse(known_ifaces[i].uuid, spec->uuid);
            spec->vers_major = known_ifaces[i].major;
            spec->vers_minor = known_ifaces[i].minor;
            snprintf(spec->name, sizeof spec->name, "%s", known_ifaces[i].name);
            return 0;
        }
    }
    const char *slash = strchr(text, '/');
    size_t ulen = slash ? (size_t)(slash - text) : strlen(text);
    bool looks_uuid = ulen >= 30 || strchr(text, '-') || slash;
    if (!looks_uuid) {
        const char *names[N_KNOWN_IFACES];
        for (size_t i = 0; i < N_KNOWN_IFACES; i++)
            names[i] = known_ifaces[i].name;
        const char *s = closest(text, names, N_KNOWN_IFACES);
        if (s)
            snprintf(err, errlen, "is not a known interface; did you mean %s?", s);
        else
            snprintf(err, errlen,
                     "is not a known interface; use one of exchange_emsmdb, "
                     "exchange_async_emsmdb, exchange_nsp, exchange_ds_rfr, epmapper, lsarpc, "
                     "samr, netlogon, or UUID/MAJOR.MINOR");
        return -1;
    }
    char ubuf[40];
    if (ulen >= sizeof ubuf || (memcpy(ubuf, text, ulen), ubuf[ulen] = 0, 0) ||
        mp_uuid_parse(ubuf, spec->uuid) < 0) {
        snprintf(err, errlen,
                 "is not a valid interface UUID; write it as "
                 "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (32 hex digits) optionally followed "
                 "by /MAJOR.MINOR");
        return -1;
    }
    if (slash) {
        if (!parse_version(slash + 1, &spec->vers_major, &spec->vers_minor)) {
            snprintf(err, errlen,
                     "has a bad version; write it as UUID/MAJOR.MINOR with numbers 0-65535, "
                     "e.g. a4f1db00-ca47-1067-b31f-00dd010662da/0.81");
            return -1;
        }
    } else {
        spec->any_version = true;
    }
    /* A UUID naming a well-known interface takes its name. */
    for (size_t i = 0; i < N_KNOWN_IFACES; i++) {
        uint8_t u[16];
        mp_uuid_parse(known_ifaces[i].uuid, u);
        if (!memcmp(u, spec->uuid, 16) &&
            (spec->any_version || (spec->vers_major == known_ifaces[i].major &&
                                   spec->vers_minor == known_ifaces[i].minor))) {
            snprintf(spec->name, sizeof spec->name, "%s", known_ifaces[i].name);
            return 0;
        }
    }
    mp_uuid_format(spec->uuid, spec->name);
    return 0;
}

int mp_iface_parse(const char *text, struct mp_iface_spec *spec)
{
    char err[256];
    if (!text || !spec)
        return -1;
    return iface_parse(text, spec, err, sizeof err);
}

bool mp_iface_match(const struct mp_iface_spec *spec, const uint8_t uuid[16], uint16_t vers_major,
                    uint16_t vers_minor)
{
    if (memcmp(spec->uuid, uuid, 16) != 0)
        return false;
    /* DCE/RPC rule: same major version, and a minor version the server has */
    return spec->any_version || (spec->vers_major == vers_major && vers_minor <= spec->vers_minor);
}

/* ------------------------------------------------------------------------ */
/* Hosts and bindings                                                        */

/* A numeric IPv4/IPv6 address or a DNS/NetBIOS host name. */
static bool host_valid(const char *h, const char **why)
{
    size_t n = strlen(h);
    unsigned char buf[16];
    if (n == 0) {
        *why = "is empty";
        return false;
    }
    if (n > 253) {
        *why = "is longer than 253 characters";
        return false;
    }
    if (strchr(h, ':')) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, "%s", h);
        char *pct = strchr(tmp, '%'); /* zone index: fe80::1%eth0 */
        if (pct) {
            if (!pct[1]) {
                *why = "has an empty IPv6 zone after '%'";
                return false;
            }
            *pct = 0;
        }
        if (inet_pton(AF_INET6, tmp, buf) != 1) {
            *why = "is not a valid IPv6 address";
            return false;
        }
        return true;
    }
    bool numeric = true;
    for (const char *p = h; *p; p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            numeric = false;
    if (numeric) {
        if (inet_pton(AF_INET, h, buf) != 1) {
            *why = "is not a valid IPv4 address";
            return false;
        }
        return true;
    }
    size_t label = 0;
    for (const char *p = h; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0) {
                *why = "has an empty name part (\"..\" or a leading dot)";
                return false;
            }
            label = 0;
            continue;
        }
        if (!isalnum(c) && c != '-' && c != '_') {
            *why = "contains a character not allowed in a host name";
            return false;
        }
        if (++label > 63) {
            *why = "has a name part longer than 63 characters";
            return false;
        }
    }
    return true;
}

static const struct {
    const char *name;
    uint32_t flag;
} binding_flags[] = {
    {"sign", MP_BINDING_F_SIGN},           {"seal", MP_BINDING_F_SEAL},
    {"connect", MP_BINDING_F_CONNECT},     {"spnego", MP_BINDING_F_SPNEGO},
    {"ntlm", MP_BINDING_F_NTLM},           {"krb5", MP_BINDING_F_KRB5},
    {"schannel", MP_BINDING_F_SCHANNEL},   {"validate", MP_BINDING_F_VALIDATE},
    {"print", MP_BINDING_F_PRINT},         {"padcheck", MP_BINDING_F_PADCHECK},
    {"bigendian", MP_BINDING_F_BIGENDIAN}, {"smb1", MP_BINDING_F_SMB1},
    {"smb2", MP_BINDING_F_SMB2},           {"ndr64", MP_BINDING_F_NDR64},
    {"packet", MP_BINDING_F_PACKET},
};

/* Samba's key=value binding options; accepted (endpoint= sets the port). */
static const char *const binding_kv[] = {
    "endpoint",       "target_hostname", "target_principal", "localaddress",
    "assoc_group_id", "auth_type",       "auth_level",       "host"};

static const char *const other_transports[] = {
    "ncacn_np",         "ncalrpc",       "ncacn_http",     "ncadg_ip_udp",  "ncacn_unix_stream",
    "ncadg_unix_dgram", "ncadg_ipx",     "ncacn_spx",      "ncacn_vns_spp", "ncacn_at_dsp",
    "ncadg_at_ddp",     "ncacn_nb_tcp",  "ncacn_nb_ipx",   "ncacn_nb_nb",   "ncacn_dnet_nsp",
    "ncacn_ip_udp",     "ncacn_osi_dna", "ncadg_dnet_nsp",
};

#define BIND_HINT "write it as ncacn_ip_tcp:HOST or ncacn_ip_tcp:HOST[PORT]"

static bool parse_port_text(const char *v, uint16_t *port)
{
    unsigned long long x;
    if (!parse_plain_uint(v, &x) || x < 1 || x > 65535)
        return false;
    *port = (uint16_t)x;
    return true;
}

int mp_binding_parse(const char *text, struct mp_binding *b, char *err, size_t errlen)
{
    char tmp[1024];
    memset(b, 0, sizeof *b);
    if (!text || !*text) {
        snprintf(err, errlen, "is empty; " BIND_HINT);
        return -1;
    }
    if (strlen(text) >= sizeof tmp) {
        snprintf(err, errlen, "is too long; " BIND_HINT);
        return -1;
    }
    for (const char *p = text; *p; p++) {
        if (is_space(*p)) {
            snprintf(err, errlen, "contains white space; remove it (" BIND_HINT ")");
            return -1;
        }
    }
    snprintf(tmp, sizeof tmp, "%s", text);
    char *s = tmp;

    /* Optional object UUID prefix, as Samba allows: UUID@transport:... */
    char *at = strchr(s, '@');
    if (at) {
        uint8_t obj[16];
        *at = 0;
        if (at - s != 36 || mp_uuid_parse(s, obj) < 0) {
            snprintf(err, errlen,
                     "has an '@' not preceded by an object UUID; remove the part up to '@' "
                     "(" BIND_HINT ")");
            return -1;
        }
        s = at + 1;
    }

    char *colon = strchr(s, ':');
    char *bracket = strchr(s, '[');
    if (!colon || (bracket && bracket < colon)) {
        snprintf(err, errlen, "has no transport; " BIND_HINT);
        return -1;
    }
    *colon = 0;
    const char *tr = s;
    char *rest = colon + 1;
    if (strcasecmp(tr, "ncacn_ip_tcp") != 0) {
        for (size_t i = 0; i < sizeof other_transports / sizeof other_transports[0]; i++) {
            if (!strcasecmp(tr, other_transports[i])) {
                snprintf(err, errlen,
                         "uses transport %s, but only ncacn_ip_tcp is supported in this "
                         "version; " BIND_HINT,
                         other_transports[i]);
                return -1;
            }
        }
        unsigned long long dummy;
        if (parse_plain_uint(rest, &dummy)) {
            char q[100];
            snprintf(err, errlen, "looks like HOST:PORT; write it as ncacn_ip_tcp:%s[%s]",
                     qv(tr, q, sizeof q), rest);
            return -1;
        }
        static const char *const tcp[] = {"ncacn_ip_tcp"};
        if (closest(tr, tcp, 1))
            snprintf(err, errlen,
                     "has an unknown transport; did you mean ncacn_ip_tcp? " BIND_HINT);
        else
            snprintf(err, errlen, "has an unknown transport; " BIND_HINT);
        return -1;
    }
    b->transport = MP_TRANSPORT_NCACN_IP_TCP;

    char *host = rest, *opts = NULL, *ob = NULL; /* ob: just after '[' */
    if (rest[0] == '[') {
        /* Extension: ncacn_ip_tcp:[IPv6] or ncacn_ip_tcp:[IPv6][options] */
        char *close = strchr(rest, ']');
        unsigned char a6[16];
        bool v6 = false;
        if (close) {
            *close = 0;
            char *pct = strchr(rest + 1, '%');
            if (pct)
                *pct = 0;
            v6 = inet_pton(AF_INET6, rest + 1, a6) == 1;
            if (pct)
                *pct = '%';
        }
        if (!v6) {
            snprintf(err, errlen, "has no host; " BIND_HINT);
            return -1;
        }
        host = rest + 1;
        if (close[1] == '[')
            ob = close + 2;
        else if (close[1]) {
            snprintf(err, errlen, "has text after the IPv6 address; " BIND_HINT);
            return -1;
        }
    } else {
        char *br = strchr(rest, '[');
        if (br) {
            *br = 0;
            ob = br + 1;
        }
    }
    if (ob) {
        size_t ol = strlen(ob);
        if (ol == 0 || ob[ol - 1] != ']') {
            snprintf(err, errlen,
                     "has an unclosed '['; close the option list with ']' (" BIND_HINT ")");
            return -1;
        }
        ob[ol - 1] = 0;
        opts = ob;
    }
    if (!*host) {
        snprintf(err, errlen, "has no host; " BIND_HINT);
        return -1;
    }
    const char *why;
    if (strlen(host) >= sizeof b->host || !host_valid(host, &why)) {
        if (strlen(host) >= sizeof b->host)
            why = "is too long";
        char q[100];
        snprintf(err, errlen, "has host \"%s\" which %s; " BIND_HINT, qv(host, q, sizeof q), why);
        return -1;
    }
    scopy(b->host, sizeof b->host, host);
    if (!opts)
        return 0;
    if (strchr(opts, '[') || strchr(opts, ']')) {
        snprintf(err, errlen,
                 "has more than one [...] group; put the port and options in one, e.g. "
                 "ncacn_ip_tcp:HOST[135,sign]");
        return -1;
    }
    bool have_ep = false;
    for (char *save = NULL, *tok = strtok_r(opts, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        bool done = false;
        for (size_t i = 0; i < sizeof binding_flags / sizeof binding_flags[0]; i++) {
            if (!strcasecmp(tok, binding_flags[i].name)) {
                b->flags |= binding_flags[i].flag;
                done = true;
                break;
            }
        }
        if (done)
            continue;
        char q[100];
        char *eq = strchr(tok, '=');
        if (eq) {
            *eq = 0;
            bool known = false;
            for (size_t i = 0; i < sizeof binding_kv / sizeof binding_kv[0]; i++)
                if (!strcasecmp(tok, binding_kv[i]))
                    known = true;
            if (!known) {
                snprintf(err, errlen,
                         "has unknown option \"%s=\"; remove it (known: endpoint=, "
                         "target_hostname=, target_principal=, localaddress=, assoc_group_id=)",
                         qv(tok, q, sizeof q));
                return -1;
            }
            if (!strcasecmp(tok, "endpoint")) {
                if (have_ep || !parse_port_text(eq + 1, &b->port)) {
                    snprintf(err, errlen,
                             "has a bad endpoint; give one TCP port 1-65535, e.g. "
                             "ncacn_ip_tcp:HOST[135]");
                    return -1;
                }
                have_ep = true;
            }
            continue;
        }
        if (!have_ep) {
            if (!parse_port_text(tok, &b->port)) {
                unsigned long long x;
                if (parse_plain_uint(tok, &x))
                    snprintf(err, errlen,
                             "has port %s out of range; give a TCP port 1-65535, e.g. "
                             "ncacn_ip_tcp:HOST[135]",
                             qv(tok, q, sizeof q));
                else
                    snprintf(err, errlen,
                             "has unknown option \"%s\"; the first bracketed item must be a "
                             "TCP port 1-65535 or a flag (sign, seal, print, connect, ...)",
                             qv(tok, q, sizeof q));
                return -1;
            }
            have_ep = true;
            continue;
        }
        snprintf(err, errlen,
                 "has unknown option \"%s\"; known flags are sign, seal, connect, spnego, ntlm, "
                 "krb5, schannel, validate, print, padcheck, bigendian, smb1, smb2, ndr64, packet",
                 qv(tok, q, sizeof q));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

enum opt_kind {
    K_BINDING,
    K_IFACES,
    K_STR,
    K_SECRET,
    K_BOOL,
    K_MODULES,
    K_LISTEN,
    K_PORT,
    K_LOGLEVEL,
    K_SIZE,
    K_UINT,
    K_COMPAT, /* OpenChange-only option: accepted, recorded, warned about */
    K_HTTP_LISTEN,
    K_HTTP_URL,
};

struct opt {
    const char *key;
    enum opt_kind kind;
    size_t off, size; /* field in struct mp_config */
    unsigned long long min, max;
    const char *unit; /* for messages */
};

#define F(field) offsetof(struct mp_config, field), sizeof(((struct mp_config *)0)->field)
#define NOF 0, 0

static const struct opt options[] = {
    {"dcerpc_mapiproxy:binding", K_BINDING, F(binding), 0, 0, NULL},
    {"dcerpc_mapiproxy:interfaces", K_IFACES, F(ifaces), 0, 0, NULL},
    {"dcerpc_mapiproxy:username", K_STR, F(username), 0, 0, NULL},
    {"dcerpc_mapiproxy:password", K_SECRET, F(password), 0, 0, NULL},
    {"dcerpc_mapiproxy:domain", K_STR, F(domain), 0, 0, NULL},
    {"dcerpc_mapiproxy:modules", K_MODULES, F(modules), 0, 0, NULL},
    {"dcerpc_mapiproxy:delegated_auth", K_BOOL, F(delegated_auth), 0, 0, NULL},
    {"dcerpc_mapiproxy:ndrdump", K_BOOL, F(ndrdump), 0, 0, NULL},
    {"dcerpc_mapiproxy:server", K_BOOL, F(server), 0, 0, NULL},
    {"dcerpc_mapiproxy:use_machine_account", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:nsp_binding", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:oa_mode", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:samdb_url", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:nspi_server", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:emsmdb_server", K_COMPAT, NOF, 0, 0, NULL},
    {"dcerpc_mapiproxy:rfr_server", K_COMPAT, NOF, 0, 0, NULL},
    {"mapiproxy:openchangedb", K_COMPAT, NOF, 0, 0, NULL},
    {"mapiproxy:openchangedb_logger", K_COMPAT, NOF, 0, 0, NULL},
    {"mapiproxy:openchangedb_logger_prefix", K_COMPAT, NOF, 0, 0, NULL},
    {"mapiproxy:listen", K_LISTEN, F(listen), 0, 0, NULL},
    {"mapiproxy:epmapper port", K_PORT, F(epm_port), 0, 65535, NULL},
    {"mapiproxy:rpc port", K_PORT, F(rpc_port), 0, 65535, NULL},
    {"mapiproxy:upstream epmapper port", K_PORT, F(upstream_epm_port), 1, 65535, NULL},
    {"mapiproxy:log level", K_LOGLEVEL, F(log_level), 0, 4, NULL},
    {"mapiproxy:log file", K_STR, F(log_file), 0, 0, NULL},
    {"mapiproxy:log target", K_STR, F(log_target), 0, 0, NULL},
    {"mapiproxy:syslog facility", K_STR, F(syslog_facility_name), 0, 0, NULL},
    {"mapiproxy:syslog socket", K_STR, F(syslog_socket), 0, 0, NULL},
    {"mapiproxy:user", K_STR, F(run_user), 0, 0, NULL},
    {"mapiproxy:group", K_STR, F(run_group), 0, 0, NULL},
    {"mapiproxy:packet export dir", K_STR, F(packet_export_dir), 0, 0, NULL},
    {"mapiproxy:packet export clients", K_STR, F(packet_export_clients), 0, 0, NULL},
    {"mapiproxy:packet export users", K_STR, F(packet_export_users), 0, 0, NULL},
    {"mapiproxy:max call size", K_SIZE, F(max_call_size), 4096, 1ull << 30, "bytes"},
    {"mapiproxy:max buffer", K_SIZE, F(max_buffer), 4096, 1ull << 30, "bytes"},
    {"mapiproxy:max connections", K_UINT, F(max_connections), 1, 1000000, "connections"},
    {"mapiproxy:connect timeout", K_UINT, F(connect_timeout_ms), 1, 3600000, "milliseconds"},
    {"mapiproxy:idle timeout", K_UINT, F(idle_timeout_s), 0, 604800, "seconds"},
    {"mapiproxy:bind timeout", K_UINT, F(bind_timeout_s), 0, 3600, "seconds"},
    {"mapiproxy:workers", K_UINT, F(workers), 1, MP_MAX_WORKERS, "workers"},
    {"mapiproxy:affinity table size", K_UINT, F(affinity_max), 16, 1u << 20, "entries"},
    {"mapiproxy:max connections per address", K_UINT, F(max_conn_per_addr), 0, 1000000,
     "connections"},
    {"mapiproxy:module dir", K_STR, F(module_dir), 0, 0, NULL},
    {"mapiproxy:transparent", K_BOOL, F(transparent), 0, 0, NULL},
    {"mapiproxy:credentials file", K_STR, F(credentials_file), 0, 0, NULL},
    {"mapiproxy:password file", K_STR, F(password_file), 0, 0, NULL},
    {"mapiproxy:allowed users", K_STR, F(allowed_users), 0, 0, NULL},
    {"mapiproxy:upstream auth level", K_STR, F(upstream_auth_level), 0, 0, NULL},
    {"mapiproxy:min client auth level", K_STR, F(min_client_auth_level), 0, 0, NULL},
    {"mapiproxy:keytab", K_STR, F(keytab), 0, 0, NULL},
    {"mapiproxy:service principal", K_STR, F(service_principal), 0, 0, NULL},
    {"mapiproxy:upstream keytab", K_STR, F(upstream_keytab), 0, 0, NULL},
    {"mapiproxy:upstream ccache", K_STR, F(upstream_ccache), 0, 0, NULL},
    {"mapiproxy:upstream principal", K_STR, F(upstream_principal), 0, 0, NULL},
    {"mapiproxy:upstream spn", K_STR, F(upstream_spn), 0, 0, NULL},
    {"mapiproxy:delegation", K_STR, F(delegation), 0, 0, NULL},
    {"mapiproxy:pass-through interfaces", K_STR, F(passthrough_ifaces), 0, 0, NULL},
    {"mapiproxy:send timeout", K_UINT, F(send_timeout_s), 1, 86400, "seconds"},
    {"mapiproxy:max fragments", K_UINT, F(max_fragments), 16, 1000000, "fragments"},
    {"netbios name", K_STR, F(netbios_name), 0, 0, NULL},
    {"realm", K_STR, F(realm), 0, 0, NULL},
    {"mapiproxy:http listen", K_HTTP_LISTEN, F(http_listen), 0, 0, NULL},
    {"mapiproxy:metrics listen", K_STR, F(metrics_listen), 0, 0, NULL},
    {"mapiproxy:http plain", K_BOOL, F(http_plain), 0, 0, NULL},
    {"mapiproxy:tls certificate", K_STR, F(tls_certificate), 0, 0, NULL},
    {"mapiproxy:tls key", K_STR, F(tls_key), 0, 0, NULL},
    {"mapiproxy:tls ca file", K_STR, F(tls_ca_file), 0, 0, NULL},
    {"mapiproxy:tls verify", K_BOOL, F(tls_verify), 0, 0, NULL},
    {"mapiproxy:http upstream", K_HTTP_URL, F(http_upstream), 0, 0, NULL},
    {"mapiproxy:http upstream names", K_STR, F(http_upstream_names), 0, 0, NULL},
    {"mapiproxy:http public name", K_STR, F(http_public_name), 0, 0, NULL},
    {"mapiproxy:http header timeout", K_UINT, F(http_header_timeout_s), 1, 3600, "seconds"},
    {"mapiproxy:http idle timeout", K_UINT, F(http_idle_timeout_s), 1, 604800, "seconds"},
    {"mapiproxy:http upstream timeout", K_UINT, F(http_upstream_timeout_s), 1, 86400, "seconds"},
    {"mapiproxy:http max header size", K_SIZE, F(http_max_header), 1024, 1u << 20, "bytes"},
    {"mapiproxy:http max body", K_SIZE, F(http_max_body), 4096, 1ull << 30, "bytes"},
    {"mapiproxy:http max rewrite body", K_SIZE, F(http_max_rewrite), 4096, 64u << 20, "bytes"},
    {"mapiproxy:fx hold limit", K_SIZE, F(fx_hold_limit), 0, 1ull << 30, "bytes"},
    {"mapiproxy:http held body budget", K_SIZE, F(http_held_budget), 64u << 10, 1ull << 30,
     "bytes"},
    {"mapiproxy:http relay all paths", K_BOOL, F(http_relay_all), 0, 0, NULL},
    {"mapiproxy:http relay paths", K_STR, F(http_relay_paths), 0, 0, NULL},
    {"mapiproxy:http unrelayed urls", K_STR, F(http_unrelayed_urls), 0, 0, NULL},
    {"mapiproxy:http auth", K_STR, F(http_auth), 0, 0, NULL},
    {"mapiproxy:http basic", K_BOOL, F(http_basic), 0, 0, NULL},
    {"mapiproxy:http negotiate", K_BOOL, F(http_negotiate), 0, 0, NULL},
    {"mapiproxy:http realm", K_STR, F(http_realm), 0, 0, NULL},
    {"mapiproxy:http upstream auth", K_STR, F(http_upstream_auth), 0, 0, NULL},
    {"mapiproxy:http upstream spn", K_STR, F(http_upstream_spn), 0, 0, NULL},
    {"mapiproxy:rpc over http", K_BOOL, F(rpch), 0, 0, NULL},
    {"mapiproxy:rpc over http receive window", K_SIZE, F(rpch_window), 8u << 10, 256u << 10,
     "bytes"},
    {"mapiproxy:rpc over http connection timeout", K_UINT, F(rpch_conn_timeout_s), 120, 14400,
     "seconds"},
    {"mapiproxy:rpc over http pairing timeout", K_UINT, F(rpch_pair_timeout_s), 1, 3600, "seconds"},
    {"mapiproxy:rpc over http out channel length", K_SIZE, F(rpch_out_length), 4u << 10, 1u << 30,
     "bytes"},
    {"mapiproxy:rpc over http upstream", K_HTTP_URL, F(rpch_upstream), 0, 0, NULL},
    {"mapiproxy:rpc over http upstream server", K_STR, F(rpch_upstream_server), 0, 0, NULL},
    {"mapiproxy:rpc over http upstream auth", K_STR, F(rpch_upstream_auth), 0, 0, NULL},
    {"mapiproxy:rpc over http upstream spn", K_STR, F(rpch_upstream_spn), 0, 0, NULL},
    {"mapiproxy:rpc over http upstream in channel length", K_SIZE, F(rpch_up_in_length), 4u << 10,
     1u << 30, "bytes"},
    {"mapiproxy:ntlm backend", K_STR, F(ntlm_backend), 0, 0, NULL},
    {"mapiproxy:winbind socket dir", K_STR, F(winbind_socket_dir), 0, 0, NULL},
    {"mapiproxy:groups file", K_STR, F(groups_file), 0, 0, NULL},
    {"mapiproxy:mailbox authorization", K_BOOL, F(mailbox_auth), 0, 0, NULL},
    {"mapiproxy:online prefetch", K_BOOL, F(online_prefetch), 0, 0, NULL},
    {"mapiproxy:online prefetch depth", K_UINT, F(online_prefetch_depth), 1, 8, "levels"},
    {"mapiproxy:online prefetch max size", K_SIZE, F(online_prefetch_max), 1024, 1ull << 30,
     "bytes"},
    {"mapiproxy:mailbox map", K_STR, F(mailbox_map), 0, 0, NULL},
    {"mapiproxy:mailbox directory", K_BOOL, F(mailbox_directory), 0, 0, NULL},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

int mp_log_level_parse(const char *v)
{
    static const char *const names[] = {"error", "warning", "info", "debug", "trace"};
    unsigned long long x;
    if (parse_plain_uint(v, &x))
        return x <= 4 ? (int)x : -1;
    for (int i = 0; i < 5; i++)
        if (!strcasecmp(v, names[i]))
            return i;
    return strcasecmp(v, "warn") ? -1 : 1;
}

static const struct opt *find_option(const char *key)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (!strcmp(options[i].key, key))
            return &options[i];
    return NULL;
}

struct pctx {
    struct mp_config *cfg;
    struct mp_diag *diag;
    size_t n_err;
    char *section; /* lower-case; "global" before any header */
    size_t cap_entries;
    bool have_binding, binding_seen, have_ifaces;
};

int mp_config_where(const struct mp_config *c, const char *key, const char **file)
{
    *file = c->path;
    for (size_t i = c->n_entries; i-- > 0;)
        if (!strcmp(c->entries[i].key, key)) {
            if (c->entries[i].file)
                *file = c->entries[i].file;
            return c->entries[i].line;
        }
    return 0;
}

/* The file and line where key (normalized) was last set, or name and 0. */
static int where(const struct pctx *p, const char *key, const char *name, const char **file)
{
    int line = mp_config_where(p->cfg, key, file);
    if (!line)
        *file = name;
    return line;
}

/* An error or a warning at FILE:LINE (FILE alone when line is 0). */
static void vreport(struct pctx *p, bool err, const char *file, int line, const char *fmt,
                    va_list ap)
{
    struct mp_diag *d = err ? p->diag : &p->cfg->warnings;
    if (err && ++p->n_err > MAX_DIAG) {
        if (p->n_err == MAX_DIAG + 1)
            diag_add(d, "%s:%d: too many errors; fix the ones above first", file, line);
        return;
    }
    if (!err && p->cfg->warnings.n >= MAX_DIAG)
        return;
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0)
        return;
    if (line > 0)
        diag_add(d, "%s:%d: %s", file, line, m);
    else
        diag_add(d, "%s: %s", file, m);
    free(m);
}

__attribute__((format(printf, 5, 6))) static void report(struct pctx *p, bool err, const char *file,
                                                         int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(p, err, file, line, fmt, ap);
    va_end(ap);
}

/* An error (or warning) about an option checked after the whole file was
 * read: reported at the line that set it. */
__attribute__((format(printf, 5, 6))) static void
report_opt(struct pctx *p, bool err, const char *name, const char *key, const char *fmt, ...)
{
    const char *file;
    int line = where(p, key, name, &file);
    va_list ap;
    va_start(ap, fmt);
    vreport(p, err, file, line, fmt, ap);
    va_end(ap);
}

#define perr(p, file, line, ...) report(p, true, file, line, __VA_ARGS__)
#define pwarn(p, file, line, ...) report(p, false, file, line, __VA_ARGS__)
#define perr_opt(p, name, key, ...) report_opt(p, true, name, key, __VA_ARGS__)
#define pwarn_opt(p, name, key, ...) report_opt(p, false, name, key, __VA_ARGS__)

static bool is_list_sep(char c)
{
    return is_space(c) || c == ',' || c == ';';
}

/* Next token of a list (separated by white space, ',' or ';'); copies it into
 * buf.  Returns false at the end; *toolong when it did not fit. */
static bool next_item(const char **pp, char *buf, size_t n, bool *toolong)
{
    const char *p = *pp;
    while (*p && is_list_sep(*p))
        p++;
    if (!*p)
        return false;
    const char *s = p;
    while (*p && !is_list_sep(*p))
        p++;
    size_t l = (size_t)(p - s);
    *toolong = l >= n;
    if (l >= n)
        l = n - 1;
    memcpy(buf, s, l);
    buf[l] = 0;
    *pp = p;
    return true;
}

static void apply_ifaces(struct pctx *p, const char *file, int line, const char *key, const char *v)
{
    struct mp_config *c = p->cfg;
    struct mp_iface_spec tmp[MP_MAX_IFACES];
    size_t n = 0;
    char item[128], q[100], err[300];
    bool toolong, bad = false;
    const char *s = v;
    while (next_item(&s, item, sizeof item, &toolong)) {
        struct mp_iface_spec sp;
        if (toolong || iface_parse(item, &sp, err, sizeof err) < 0) {
            if (toolong)
                snprintf(err, sizeof err, "is too long; give a name or UUID/MAJOR.MINOR");
            perr(p, file, line, "%s: \"%s\" %s", key, qv(item, q, sizeof q), err);
            bad = true;
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            if (!memcmp(tmp[i].uuid, sp.uuid, 16) && tmp[i].vers_major == sp.vers_major &&
                tmp[i].vers_minor == sp.vers_minor && tmp[i].any_version == sp.any_version)
                dup = true;
        if (dup) {
            perr(p, file, line, "%s lists %s twice; remove one", key, sp.name);
            bad = true;
            continue;
        }
        if (n == MP_MAX_IFACES) {
            perr(p, file, line, "%s lists more than %d interfaces; remove some", key,
                 MP_MAX_IFACES);
            bad = true;
            break;
        }
        tmp[n++] = sp;
    }
    if (n == 0 && !bad) {
        perr(p, file, line,
             "%s is empty; list interfaces, e.g. exchange_emsmdb exchange_nsp exchange_ds_rfr, "
             "or remove the line for the default",
             key);
        return;
    }
    memcpy(c->ifaces, tmp, n * sizeof tmp[0]);
    c->n_ifaces = n;
    p->have_ifaces = true;
}

static void apply_modules(struct pctx *p, const char *file, int line, const char *key,
                          const char *v)
{
    struct mp_config *c = p->cfg;
    char tmp[MP_MAX_MODULES][64];
    size_t n = 0;
    char item[128], q[100];
    bool toolong;
    const char *s = v;
    while (next_item(&s, item, sizeof item, &toolong)) {
        bool ok = !toolong && strlen(item) < sizeof tmp[0];
        for (const char *x = item; ok && *x; x++)
            if (!isalnum((unsigned char)*x) && *x != '_' && *x != '-' && *x != '.')
                ok = false;
        if (!ok) {
            perr(p, file, line,
                 "%s: \"%s\" is not a valid module name; use letters, digits, '_', '-' "
                 "(at most 63 characters)",
                 key, qv(item, q, sizeof q));
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(tmp[i], item))
                dup = true;
        if (dup) {
            perr(p, file, line, "%s lists module %s twice; remove one", key, item);
            continue;
        }
        if (n == MP_MAX_MODULES) {
            perr(p, file, line, "%s lists more than %d modules; remove some", key, MP_MAX_MODULES);
            break;
        }
        scopy(tmp[n++], sizeof tmp[0], item);
    }
    memcpy(c->modules, tmp, sizeof tmp[0] * n);
    c->n_modules = n;
}

static void apply_listen(struct pctx *p, const char *file, int line, const char *key, const char *v)
{
    struct mp_config *c = p->cfg;
    struct mp_listen_addr tmp[MP_MAX_LISTEN];
    size_t n = 0;
    char item[300], q[100];
    bool toolong, bad = false;
    const char *s = v;
    while (next_item(&s, item, sizeof item, &toolong)) {
        char *h = item;
        size_t l = strlen(h);
        if (l >= 2 && h[0] == '[' && h[l - 1] == ']') {
            h[l - 1] = 0;
            h++;
        }
        const char *why = NULL;
        bool ok;
        if (toolong || strlen(h) >= sizeof tmp[0].host) {
            why = "is longer than 63 characters";
            ok = false;
        } else {
            ok = host_valid(h, &why);
        }
        if (!ok) {
            perr(p, file, line,
                 "%s: \"%s\" %s; give numeric IPv4/IPv6 addresses or host names, e.g. "
                 "127.0.0.1 ::1",
                 key, qv(h, q, sizeof q), why);
            bad = true;
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < n; i++)
            if (!strcasecmp(tmp[i].host, h))
                dup = true;
        if (dup) {
            perr(p, file, line, "%s lists %s twice; remove one", key, qv(h, q, sizeof q));
            bad = true;
            continue;
        }
        if (n == MP_MAX_LISTEN) {
            perr(p, file, line, "%s lists more than %d addresses; remove some", key, MP_MAX_LISTEN);
            bad = true;
            break;
        }
        scopy(tmp[n++].host, sizeof tmp[0].host, h);
    }
    if (n == 0) {
        if (!bad)
            perr(p, file, line,
                 "%s is empty; give at least one address, e.g. 127.0.0.1, or remove the line "
                 "for the default",
                 key);
        return;
    }
    memcpy(c->listen, tmp, n * sizeof tmp[0]);
    c->n_listen = n;
}

/* "HOST:PORT" or "[V6]:PORT" -> host, port.  Returns false with why set. */
static bool split_host_port(const char *item, char *host, size_t hn, uint16_t *port, bool need_port,
                            const char **why)
{
    const char *colon;
    const char *h = item;
    size_t hl;
    if (*item == '[') {
        const char *rb = strchr(item, ']');
        if (!rb) {
            *why = "has no closing ]";
            return false;
        }
        h = item + 1;
        hl = (size_t)(rb - h);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] && !colon) {
            *why = "has text after ]";
            return false;
        }
    } else {
        colon = strrchr(item, ':');
        if (colon && strchr(item, ':') != colon) {
            *why = "is an IPv6 address without [brackets]";
            return false;
        }
        hl = colon ? (size_t)(colon - item) : strlen(item);
    }
    if (hl == 0 || hl >= hn) {
        *why = hl ? "has a host name that is too long" : "has no host";
        return false;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    if (!host_valid(host, why))
        return false;
    if (!colon) {
        if (need_port) {
            *why = "has no :PORT";
            return false;
        }
        *port = 0;
        return true;
    }
    unsigned long long x;
    if (!parse_plain_uint(colon + 1, &x) || x < 1 || x > 65535) {
        *why = "has a port that is not a number from 1 to 65535";
        return false;
    }
    *port = (uint16_t)x;
    return true;
}

int mp_http_url_parse(const char *text, struct mp_http_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    const char *rest;
    if (!strncasecmp(text, "https://", 8)) {
        u->tls = true;
        rest = text + 8;
    } else if (!strncasecmp(text, "http://", 7)) {
        rest = text + 7;
    } else {
        snprintf(err, errlen,
                 "is not an https:// (or http://) URL; write e.g. https://exch.example.com");
        return -1;
    }
    char hp[300];
    size_t n = strcspn(rest, "/");
    if (memchr(rest, '@', n)) {
        snprintf(err, errlen,
                 "has user information (user:password@); the proxy's account goes in "
                 "dcerpc_mapiproxy:username and mapiproxy:password file");
        return -1;
    }
    if (rest[n] && strcmp(rest + n, "/")) {
        snprintf(err, errlen, "has a path; give only the scheme, host and port");
        return -1;
    }
    if (n >= sizeof hp) {
        snprintf(err, errlen, "has a host name that is too long");
        return -1;
    }
    memcpy(hp, rest, n);
    hp[n] = 0;
    const char *why = NULL;
    if (!split_host_port(hp, u->host, sizeof u->host, &u->port, false, &why)) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    if (!u->port)
        u->port = u->tls ? 443 : 80;
    return 0;
}

static void apply_http_listen(struct pctx *p, const char *file, int line, const char *key,
                              const char *v)
{
    struct mp_config *c = p->cfg;
    struct mp_http_listen tmp[MP_MAX_LISTEN];
    size_t n = 0;
    char item[300], q[100];
    bool toolong, bad = false;
    const char *s = v;
    while (next_item(&s, item, sizeof item, &toolong)) {
        const char *why = "is too long";
        if (toolong || n == MP_MAX_LISTEN ||
            !split_host_port(item, tmp[n].host, sizeof tmp[n].host, &tmp[n].port, true, &why)) {
            if (n == MP_MAX_LISTEN)
                why = "is one address too many (at most 8)";
            perr(p, file, line,
                 "%s: \"%s\" %s; give ADDRESS:PORT, e.g. 127.0.0.1:8443 or [::1]:8443", key,
                 qv(item, q, sizeof q), why);
            bad = true;
            continue;
        }
        n++;
    }
    if (n == 0) {
        if (!bad)
            perr(p, file, line, "%s is empty; give ADDRESS:PORT, or remove the line", key);
        return;
    }
    memcpy(c->http_listen, tmp, n * sizeof tmp[0]);
    c->n_http_listen = n;
}

/* mapiproxy:http auth and its companions. */
static void check_http_auth(struct pctx *p, const char *name)
{
    struct mp_config *c = p->cfg;
    const char *a = c->http_auth[0] ? c->http_auth : "pass-through";
    const char *u = c->http_upstream_auth[0] ? c->http_upstream_auth : "ntlm";
    if (strcasecmp(a, "pass-through") && strcasecmp(a, "terminate")) {
        perr_opt(p, name, "mapiproxy:http auth",
                 "mapiproxy:http auth = \"%s\": use pass-through or terminate", a);
        return;
    }
    bool neg = !strcasecmp(u, "negotiate");
    if (strcasecmp(u, "ntlm") && strcasecmp(u, "basic") && !neg)
        perr_opt(p, name, "mapiproxy:http upstream auth",
                 "mapiproxy:http upstream auth = \"%s\": use ntlm, basic or negotiate (Kerberos)",
                 u);
    if (c->http_upstream_spn[0] && !(neg && !strcasecmp(a, "terminate")))
        pwarn_opt(p, name, "mapiproxy:http upstream spn",
                  "mapiproxy:http upstream spn is used with mapiproxy:http auth = terminate and "
                  "mapiproxy:http upstream auth = negotiate only");
    if (strcasecmp(a, "terminate"))
        return;
    if (neg && !c->upstream_keytab[0] && !c->upstream_ccache[0])
        perr_opt(p, name, "mapiproxy:http upstream auth",
                 "mapiproxy:http upstream auth = negotiate: give the proxy's Kerberos identity "
                 "with mapiproxy:upstream keytab (and mapiproxy:upstream principal) and/or "
                 "mapiproxy:upstream ccache");
    if (!c->credentials_file[0])
        perr_opt(p, name, "mapiproxy:http auth",
                 "mapiproxy:http auth = terminate: clients log on to the proxy, so set "
                 "mapiproxy:credentials file (user:domain:NTHASH lines; the HTTPS front does not "
                 "use mapiproxy:ntlm backend = winbind yet)");
    if (!c->username[0] && !neg)
        perr_opt(p, name, "mapiproxy:http auth",
                 "mapiproxy:http auth = terminate: the proxy logs on to the upstream with "
                 "dcerpc_mapiproxy:username (and domain, and mapiproxy:password file or "
                 "dcerpc_mapiproxy:password); set them");
    else if (!c->password[0] && !c->password_file[0] && !neg)
        perr_opt(p, name, "dcerpc_mapiproxy:username",
                 "mapiproxy:http auth = terminate: dcerpc_mapiproxy:username is set without a "
                 "password: set mapiproxy:password file (or dcerpc_mapiproxy:password)");
    if (c->have_http_upstream && !c->http_upstream.tls && !strcasecmp(u, "basic"))
        pwarn_opt(p, name, "mapiproxy:http upstream auth",
                  "mapiproxy:http upstream auth = basic over plain http://: the proxy's password "
                  "goes to the upstream in clear");
    if (c->http_basic && c->http_plain)
        pwarn_opt(p, name, "mapiproxy:http basic",
                  "mapiproxy:http basic = yes with mapiproxy:http plain = yes: clients' passwords "
                  "arrive in clear");
}

/* mapiproxy:http relay paths and mapiproxy:http unrelayed urls. */
static void check_http_paths(struct pctx *p, const char *name)
{
    struct mp_config *c = p->cfg;
    size_t n = 0;
    for (const char *s = c->http_relay_paths; *s;) {
        s += strspn(s, ", \t");
        size_t l = strcspn(s, ", \t");
        if (!l)
            break;
        if (s[0] != '/' || memchr(s, '?', l) || memchr(s, '#', l) || memchr(s, '%', l) || l > 128)
            perr(p, name, 0,
                 "mapiproxy:http relay paths: \"%.*s\" is no path prefix; write paths such as "
                 "/EWS/, /OAB/, /Microsoft-Server-ActiveSync (each begins with '/', no query)",
                 (int)(l > 128 ? 128 : l), s);
        if (++n == MP_HTTP_MAX_RELAY_PATHS + 1)
            perr(p, name, 0, "mapiproxy:http relay paths: more than %d paths",
                 MP_HTTP_MAX_RELAY_PATHS);
        s += l;
    }
    const char *u = c->http_unrelayed_urls;
    c->http_drop_unrelayed = !strcasecmp(u, "drop");
    if (u[0] && !c->http_drop_unrelayed && strcasecmp(u, "keep"))
        perr(p, name, 0,
             "mapiproxy:http unrelayed urls \"%s\": use keep (Autodiscover URLs of paths the "
             "proxy does not relay keep naming the server) or drop (their elements are removed)",
             u);
}

/* The HTTP front's options that depend on one another. */
static void check_http(struct pctx *p, const char *name)
{
    struct mp_config *c = p->cfg;
    check_http_paths(p, name);
    bool up_neg = !strcasecmp(c->rpch_upstream_auth, "negotiate");
    if (c->http_negotiate && (!c->keytab[0] || strcasecmp(c->http_auth, "terminate")))
        perr_opt(p, name, "mapiproxy:http negotiate",
                 "mapiproxy:http negotiate = yes: the proxy checks Kerberos tickets itself, so "
                 "set mapiproxy:http auth = terminate and mapiproxy:keytab (with the key of "
                 "HTTP/<the name clients use>)");
    if (c->rpch_upstream_auth[0] && strcasecmp(c->rpch_upstream_auth, "basic") &&
        strcasecmp(c->rpch_upstream_auth, "ntlm") && !up_neg)
        perr_opt(p, name, "mapiproxy:rpc over http upstream auth",
                 "mapiproxy:rpc over http upstream auth = \"%s\": use basic or ntlm, or "
                 "negotiate (Kerberos)",
                 c->rpch_upstream_auth);
    if (up_neg && !c->upstream_keytab[0] && !c->upstream_ccache[0])
        perr_opt(p, name, "mapiproxy:rpc over http upstream auth",
                 "mapiproxy:rpc over http upstream auth = negotiate: give the proxy's Kerberos "
                 "identity with mapiproxy:upstream keytab (and mapiproxy:upstream principal) "
                 "and/or mapiproxy:upstream ccache");
    if (c->rpch_upstream_spn[0] && !up_neg)
        pwarn_opt(p, name, "mapiproxy:rpc over http upstream spn",
                  "mapiproxy:rpc over http upstream spn is used with mapiproxy:rpc over http "
                  "upstream auth = negotiate only");
    if (c->have_rpch_upstream && !c->rpch_upstream.tls && c->username[0] && !up_neg &&
        strcasecmp(c->rpch_upstream_auth, "ntlm"))
        pwarn_opt(p, name, "mapiproxy:rpc over http upstream",
                  "mapiproxy:rpc over http upstream is plain http://: the proxy's HTTP Basic "
                  "logon (dcerpc_mapiproxy:username and its password) goes in clear");
    if (c->rpch && !c->n_http_listen)
        perr_opt(p, name, "mapiproxy:rpc over http",
                 "mapiproxy:rpc over http = yes needs the HTTPS front: set mapiproxy:http listen");
    if (!c->n_http_listen)
        return;
    if (c->rpch && (!c->http_auth[0] || strcasecmp(c->http_auth, "terminate")) &&
        !c->have_rpch_upstream)
        perr_opt(p, name, "mapiproxy:rpc over http",
                 "mapiproxy:rpc over http = yes: the proxy checks the clients' HTTP logons "
                 "itself (its DCE/RPC upstream has no HTTP), so set mapiproxy:http auth = "
                 "terminate (or pass the logons through to an RPC over HTTP upstream: set "
                 "mapiproxy:rpc over http upstream)");
    if (!c->have_http_upstream)
        perr_opt(p, name, "mapiproxy:http listen",
                 "mapiproxy:http listen is set but mapiproxy:http upstream is not; add "
                 "\"mapiproxy:http upstream = https://EXCHANGE-HOST\"");
    if (!c->http_plain && (!c->tls_certificate[0] || !c->tls_key[0]))
        perr_opt(p, name, "mapiproxy:http listen",
                 "mapiproxy:http listen needs mapiproxy:tls certificate and mapiproxy:tls key (PEM "
                 "files), or an explicit \"mapiproxy:http plain = yes\" to serve plain HTTP");
    if (c->have_http_upstream && !c->http_upstream.tls)
        pwarn_opt(p, name, "mapiproxy:http upstream",
                  "mapiproxy:http upstream is plain http://: requests and credentials to the "
                  "upstream are not encrypted");
    if (!c->tls_verify)
        pwarn_opt(
            p, name, "mapiproxy:tls verify",
            "mapiproxy:tls verify = no: the upstream's certificate is not checked (labs only)");
    check_http_auth(p, name);
}

static void apply_option(struct pctx *p, const struct opt *o, const char *file, int line,
                         const char *v)
{
    struct mp_config *c = p->cfg;
    char *field = (char *)c + o->off;
    char q[100], err[400];
    unsigned long long x;
    switch (o->kind) {
    case K_BINDING: {
        struct mp_binding b;
        p->binding_seen = true;
        if (mp_binding_parse(v, &b, err, sizeof err) < 0) {
            perr(p, file, line, "%s \"%s\" %s", o->key, qv(v, q, sizeof q), err);
            return;
        }
        c->binding = b;
        p->have_binding = true;
        return;
    }
    case K_IFACES:
        apply_ifaces(p, file, line, o->key, v);
        return;
    case K_MODULES:
        apply_modules(p, file, line, o->key, v);
        return;
    case K_LISTEN:
        apply_listen(p, file, line, o->key, v);
        return;
    case K_STR:
    case K_SECRET:
        if (strlen(v) >= o->size) {
            perr(p, file, line, "%s is longer than %zu bytes; shorten it", o->key, o->size - 1);
            return;
        }
        if (o->kind == K_SECRET && !*v)
            pwarn(p, file, line, "%s is empty", o->key);
        if (!strcmp(o->key, "netbios name")) {
            if (strlen(v) > 15 || !*v) {
                perr(p, file, line, "netbios name \"%s\" must be 1 to 15 characters; shorten it",
                     qv(v, q, sizeof q));
                return;
            }
            for (size_t i = 0; v[i]; i++)
                field[i] = (char)toupper((unsigned char)v[i]);
            field[strlen(v)] = 0;
            return;
        }
        if (!strcmp(o->key, "realm")) {
            for (size_t i = 0; v[i]; i++)
                field[i] = (char)toupper((unsigned char)v[i]);
            field[strlen(v)] = 0;
            return;
        }
        memcpy(field, v, strlen(v) + 1);
        return;
    case K_BOOL: {
        bool bv;
        if (!parse_bool(v, &bv)) {
            perr(p, file, line,
                 "%s \"%s\" is not a boolean; write yes or no (also true/false, on/off, 1/0)",
                 o->key, qv(v, q, sizeof q));
            return;
        }
        *(bool *)field = bv;
        return;
    }
    case K_PORT:
        if (!parse_plain_uint(v, &x) || x < o->min || x > o->max) {
            perr(p, file, line, "%s \"%s\" is not a valid port; write a number from %llu to %llu",
                 o->key, qv(v, q, sizeof q), o->min, o->max);
            return;
        }
        *(uint16_t *)field = (uint16_t)x;
        return;
    case K_LOGLEVEL: {
        int lvl = mp_log_level_parse(v);
        if (lvl < 0) {
            perr(p, file, line,
                 "%s \"%s\" is not a log level; write 0-4 or error, warning, info, debug, trace",
                 o->key, qv(v, q, sizeof q));
            return;
        }
        *(int *)field = lvl;
        return;
    }
    case K_SIZE:
        if (!parse_size(v, &x)) {
            perr(p, file, line,
                 "%s \"%s\" is not a size; write a number of bytes with an optional K or M "
                 "suffix, e.g. 16M",
                 o->key, qv(v, q, sizeof q));
            return;
        }
        if (x < o->min || x > o->max) {
            perr(p, file, line, "%s \"%s\" is out of range; give %lluK to %lluM", o->key,
                 qv(v, q, sizeof q), o->min / 1024, o->max >> 20);
            return;
        }
        *(uint32_t *)field = (uint32_t)x;
        return;
    case K_UINT:
        if (!parse_plain_uint(v, &x)) {
            perr(p, file, line, "%s \"%s\" is not a number; write %s as a whole number", o->key,
                 qv(v, q, sizeof q), o->unit);
            return;
        }
        if (x < o->min || x > o->max) {
            perr(p, file, line, "%s %s is out of range; give %llu to %llu %s", o->key,
                 qv(v, q, sizeof q), o->min, o->max, o->unit);
            return;
        }
        *(uint32_t *)field = (uint32_t)x;
        return;
    case K_COMPAT:
        pwarn(p, file, line, "%s is an OpenChange option this proxy does not use; it is ignored",
              o->key);
        return;
    case K_HTTP_LISTEN:
        apply_http_listen(p, file, line, o->key, v);
        return;
    case K_HTTP_URL: {
        bool rpch = !strcmp(o->key, "mapiproxy:rpc over http upstream");
        if (rpch && !*v) { /* empty: ncacn_ip_tcp */
            c->have_rpch_upstream = false;
            return;
        }
        if (mp_http_url_parse(v, rpch ? &c->rpch_upstream : &c->http_upstream, err, sizeof err) <
            0) {
            char shown[sizeof q];
            perr(p, file, line, "%s \"%s\" %s", o->key,
                 qv(without_userinfo(v, shown, sizeof shown), q, sizeof q), err);
            return;
        }
        if (rpch)
            c->have_rpch_upstream = true;
        else
            c->have_http_upstream = true;
        return;
    }
    }
}

static void unknown_option(struct pctx *p, const char *file, int line, const char *key)
{
    const char *names[N_OPTIONS];
    size_t n = 0;
    const char *colon = strchr(key, ':');
    size_t plen = (size_t)(colon - key) + 1;
    const char *suf = colon + 1;
    const char *s = NULL;
    /* 1. the same option under the other prefix ("mapiproxy:binding") */
    for (size_t i = 0; i < N_OPTIONS && !s; i++)
        if (strchr(options[i].key, ':') && options[i].kind != K_COMPAT &&
            !strcmp(strchr(options[i].key, ':') + 1, suf))
            s = options[i].key;
    /* 2. a close name under the same prefix */
    const char *full[N_OPTIONS];
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (options[i].kind != K_COMPAT && !strncmp(options[i].key, key, plen)) {
            full[n] = options[i].key;
            names[n++] = options[i].key + plen;
        }
    if (!s) {
        const char *c = closest(suf, names, n);
        for (size_t i = 0; c && i < n; i++)
            if (names[i] == c)
                s = full[i];
    }
    /* 3. a close name under the other prefix */
    for (size_t i = 0; i < N_OPTIONS && !s; i++)
        if (strchr(options[i].key, ':') && options[i].kind != K_COMPAT &&
            lev(suf, strchr(options[i].key, ':') + 1) <= 1)
            s = options[i].key;
    char q[100];
    if (s)
        perr(p, file, line, "unknown option \"%s\"; did you mean \"%s\"?", qv(key, q, sizeof q), s);
    else
        perr(p, file, line,
             "unknown option \"%s\"; see doc/configuration.md for the dcerpc_mapiproxy: and "
             "mapiproxy: options (module options use the module's own prefix, e.g. mpm_dummy:)",
             qv(key, q, sizeof q));
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *r = malloc(n);
    if (r)
        memcpy(r, s, n);
    return r;
}

static void add_entry(struct pctx *p, const char *file, const char *key, const char *value,
                      int line)
{
    struct mp_config *c = p->cfg;
    if (c->n_entries == p->cap_entries) {
        size_t nc = p->cap_entries ? p->cap_entries * 2 : 32;
        struct mp_config_entry *ne = realloc(c->entries, nc * sizeof *ne);
        if (!ne)
            return;
        c->entries = ne;
        p->cap_entries = nc;
    }
    struct mp_config_entry *e = &c->entries[c->n_entries];
    e->section = xstrdup(p->section);
    e->key = xstrdup(key);
    e->value = xstrdup(value);
    e->file = xstrdup(file);
    e->line = line;
    if (!e->section || !e->key || !e->value || !e->file) {
        free(e->section);
        free(e->key);
        free(e->value);
        free(e->file);
        return;
    }
    c->n_entries++;
}

static bool section_is_global(const char *s)
{
    return !strcmp(s, "global") || !strcmp(s, "globals");
}

static void parse_buffer(struct pctx *p, const char *file, const char *text, size_t len, int depth);

static void do_include(struct pctx *p, const char *file, int line, const char *v, int depth)
{
    char q[100];
    if (!*v) {
        perr(p, file, line, "include has no file name; write include = FILE");
        return;
    }
    if (depth >= MP_CONFIG_MAX_INCLUDE_DEPTH) {
        perr(p, file, line,
             "include \"%s\" nests deeper than %d files (an include loop?); flatten the includes",
             qv(v, q, sizeof q), MP_CONFIG_MAX_INCLUDE_DEPTH);
        return;
    }
    char *path;
    const char *slash = strrchr(file, '/');
    int r;
    if (v[0] == '/' || !slash)
        r = asprintf(&path, "%s", v);
    else
        r = asprintf(&path, "%.*s/%s", (int)(slash - file), file, v);
    if (r < 0)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    const char *why = NULL;
    char *buf = NULL;
    size_t got = 0;
    if (fd < 0)
        why = strerror(errno);
    else if (fstat(fd, &st) < 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((unsigned long long)st.st_size > MP_CONFIG_MAX_FILE_SIZE)
        why = "larger than 4 MiB";
    if (!why) {
        buf = malloc(MP_CONFIG_MAX_FILE_SIZE + 1);
        if (!buf)
            why = "out of memory";
        while (buf) {
            ssize_t k = read(fd, buf + got, MP_CONFIG_MAX_FILE_SIZE + 1 - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                why = strerror(errno);
                break;
            }
            if (k == 0)
                break;
            got += (size_t)k;
            if (got > MP_CONFIG_MAX_FILE_SIZE) {
                why = "larger than 4 MiB";
                break;
            }
        }
    }
    if (fd >= 0)
        close(fd);
    if (why) {
        perr(p, file, line,
             "cannot read include file \"%s\": %s; check the path (relative paths are relative "
             "to the including file)",
             qv(path, q, sizeof q), why);
    } else {
        parse_buffer(p, path, buf, got, depth + 1);
    }
    free(buf);
    free(path);
}

/* One logical line (continuations joined). */
static void parse_line(struct pctx *p, const char *file, int line, char *s, int depth)
{
    char q[100];
    while (is_space(*s))
        s++;
    size_t n = strlen(s);
    while (n && is_space(s[n - 1]))
        s[--n] = 0;
    if (!n)
        return;
    if (s[0] == '[') {
        char *close = strchr(s, ']');
        if (!close) {
            perr(p, file, line, "section header has no closing ']'; write it as [NAME]");
            return;
        }
        char *after = close + 1;
        while (is_space(*after))
            after++;
        if (*after && *after != '#' && *after != ';') {
            perr(p, file, line,
                 "text after the section header's ']'; put the header alone on its line");
            return;
        }
        char *name = normalize_key(s + 1, (size_t)(close - s - 1));
        if (!name)
            return;
        if (!*name) {
            perr(p, file, line, "section header has no name; write it as [global] or [NAME]");
            free(name);
            return;
        }
        free(p->section);
        p->section = section_is_global(name) ? (free(name), xstrdup("global")) : name;
        return;
    }
    char *eq = strchr(s, '=');
    if (!eq) {
        /* never quote the line: it might hold a password */
        perr(p, file, line,
             "line has no '='; write options as KEY = VALUE (or start comments "
             "with # or ;)");
        return;
    }
    char *key = normalize_key(s, (size_t)(eq - s));
    char *val = dup_trim(eq + 1, strlen(eq + 1));
    if (!key || !val)
        goto out;
    if (!*key) {
        perr(p, file, line, "line has no option name before '='; write options as KEY = VALUE");
        goto out;
    }
    if (!p->section)
        goto out;
    add_entry(p, file, key, val, line);
    bool global = !strcmp(p->section, "global");
    if (!strcmp(key, "include")) {
        do_include(p, file, line, val, depth);
        goto out;
    }
    char *colon = strchr(key, ':');
    const struct opt *o = find_option(key);
    bool ours = colon &&
                ((size_t)(colon - key) == strlen("mapiproxy") ||
                 (size_t)(colon - key) == strlen("dcerpc_mapiproxy")) &&
                (!strncmp(key, "mapiproxy:", 10) || !strncmp(key, "dcerpc_mapiproxy:", 17));
    if (ours && !o) {
        unknown_option(p, file, line, key);
        goto out;
    }
    if (!o)
        goto out; /* module option or a Samba global we do not use */
    if (!global) {
        if (ours)
            perr(p, file, line, "%s is in section [%s]; move it to [global]", key,
                 qv(p->section, q, sizeof q));
        else
            pwarn(p, file, line, "%s in section [%s] is ignored; move it to [global]", key,
                  qv(p->section, q, sizeof q));
        goto out;
    }
    apply_option(p, o, file, line, val);
out:
    free(key);
    free(val);
}

static void parse_buffer(struct pctx *p, const char *file, const char *text, size_t len, int depth)
{
    const char *nul = memchr(text, 0, len);
    if (nul) {
        int ln = 1;
        for (const char *x = text; x < nul; x++)
            ln += *x == '\n';
        perr(p, file, ln, "contains a NUL byte; configuration files must be plain text");
        return;
    }
    /* skip a UTF-8 byte order mark */
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))
        text += 3, len -= 3;

    char *logical = NULL;
    size_t llen = 0, lcap = 0;
    int first_line = 0, line = 0;
    size_t i = 0;
    while (i < len) {
        const char *ls = text + i;
        const char *nl = memchr(ls, '\n', len - i);
        size_t n = nl ? (size_t)(nl - ls) : len - i;
        i += n + (nl ? 1 : 0);
        line++;
        if (llen == 0 && first_line == 0) {
            /* whole-line comments only at the start of a logical line */
            size_t k = 0;
            while (k < n && is_space(ls[k]))
                k++;
            if (k == n || ls[k] == '#' || ls[k] == ';')
                continue;
            first_line = line;
        }
        /* trailing backslash (white space after it allowed) continues the line */
        size_t e = n;
        while (e && is_space(ls[e - 1]))
            e--;
        bool cont = e && ls[e - 1] == '\\';
        size_t take = cont ? e - 1 : n;
        if (llen + take + 1 > lcap) {
            size_t nc = (llen + take + 1) * 2;
            char *nb = realloc(logical, nc);
            if (!nb)
                break;
            logical = nb;
            lcap = nc;
        }
        memcpy(logical + llen, ls, take);
        llen += take;
        logical[llen] = 0;
        if (cont && i < len)
            continue;
        parse_line(p, file, first_line, logical, depth);
        llen = 0;
        first_line = 0;
        if (logical)
            logical[0] = 0;
    }
    if (first_line && logical) /* unreachable in practice: last line flushes above */
        parse_line(p, file, first_line, logical, depth);
    free(logical);
}

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */

static void set_defaults(struct mp_config *c)
{
    memset(c, 0, sizeof *c);
    c->binding.transport = MP_TRANSPORT_NCACN_IP_TCP;
    for (size_t i = 0; i < sizeof default_ifaces / sizeof default_ifaces[0]; i++)
        mp_iface_parse(default_ifaces[i], &c->ifaces[c->n_ifaces++]);
    c->delegated_auth = false;
    c->ndrdump = false;
    c->server = true;
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) < 0 || !host[0])
        snprintf(host, sizeof host, "MAPIPROXY");
    host[sizeof host - 1] = 0;
    char *dot = strchr(host, '.');
    if (dot)
        *dot = 0;
    host[15] = 0;
    for (size_t i = 0; host[i]; i++)
        c->netbios_name[i] = (char)toupper((unsigned char)host[i]);
    snprintf(c->listen[0].host, sizeof c->listen[0].host, "127.0.0.1");
    c->n_listen = 1;
    c->epm_port = 135;
    c->rpc_port = 0;
    c->upstream_epm_port = 135;
    c->log_level = 2;
    snprintf(c->syslog_facility_name, sizeof c->syslog_facility_name, "daemon");
    snprintf(c->syslog_socket, sizeof c->syslog_socket, "%s", MP_SYSLOG_DEFAULT_SOCKET);
    c->max_call_size = 16u << 20;
    c->max_buffer = 256u << 10;
    c->max_connections = 9500;
    c->connect_timeout_ms = 10000;
    c->idle_timeout_s = 900;
    c->bind_timeout_s = 30;
    c->max_conn_per_addr = 512;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = ncpu < 1 ? 1 : ncpu > MP_MAX_WORKERS ? MP_MAX_WORKERS : (uint32_t)ncpu;
    c->send_timeout_s = 60;
    c->transparent = true;
    c->max_fragments = 4096;
    c->tls_verify = true;
    c->mailbox_auth = true;
    c->online_prefetch_max = 16u << 20;
    c->online_prefetch_depth = 4;
    c->mailbox_directory = true;
    c->http_header_timeout_s = 30;
    c->http_idle_timeout_s = 300;
    c->http_upstream_timeout_s = 120;
    c->http_max_header = 32u << 10;
    c->http_max_body = 64u << 20;
    c->http_max_rewrite = 1u << 20;
    c->http_held_budget = 32u << 20;
    c->fx_hold_limit = 16u << 20;
    c->rpch_window = 64u << 10;
    c->rpch_conn_timeout_s = 120;
    c->rpch_pair_timeout_s = 30;
    c->affinity_max = MP_AFF_MAX;
    c->rpch_out_length = 1u << 30;
    c->rpch_up_in_length = 1u << 30;
    snprintf(c->http_relay_paths, sizeof c->http_relay_paths, "%s", MP_HTTP_DEFAULT_RELAY_PATHS);
}

static void free_entries(struct mp_config *c)
{
    for (size_t i = 0; i < c->n_entries; i++) {
        free(c->entries[i].section);
        free(c->entries[i].key);
        free(c->entries[i].value);
        free(c->entries[i].file);
    }
    free(c->entries);
    c->entries = NULL;
    c->n_entries = 0;
}

void mp_config_free(struct mp_config *cfg)
{
    if (!cfg)
        return;
    free_entries(cfg);
    mp_diag_free(&cfg->warnings);
    memset(cfg->password, 0, sizeof cfg->password);
}

int mp_auth_level_parse(const char *s)
{
    static const char *const names[] = {"none",   "connect",   "call",
                                        "packet", "integrity", "privacy"};
    for (int i = 0; i < 6; i++)
        if (!strcasecmp(s, names[i]))
            return i + 1; /* RPC_C_AUTHN_LEVEL_NONE (1) .. PKT_PRIVACY (6) */
    return -1;
}

/* Checks across options that --check can make without contacting a KDC. */
static void check_auth_options(struct pctx *p, const char *name)
{
    const struct mp_config *c = p->cfg;
    if (c->upstream_auth_level[0] && strcasecmp(c->upstream_auth_level, "privacy") &&
        strcasecmp(c->upstream_auth_level, "integrity") &&
        strcasecmp(c->upstream_auth_level, "connect"))
        perr_opt(p, name, "mapiproxy:upstream auth level",
                 "mapiproxy:upstream auth level \"%s\": use privacy, integrity or connect",
                 c->upstream_auth_level);
    if (c->min_client_auth_level[0] && mp_auth_level_parse(c->min_client_auth_level) < 0)
        perr_opt(p, name, "mapiproxy:min client auth level",
                 "mapiproxy:min client auth level \"%s\": use none, connect, call, packet, "
                 "integrity or privacy",
                 c->min_client_auth_level);
    bool s4u = !strcasecmp(c->delegation, "s4u");
    if (c->delegation[0] && !s4u && strcasecmp(c->delegation, "none"))
        perr_opt(p, name, "mapiproxy:delegation", "mapiproxy:delegation \"%s\": use none or s4u",
                 c->delegation);
    if (s4u && (!c->keytab[0] || !c->service_principal[0] || !c->upstream_spn[0]))
        perr_opt(p, name, "mapiproxy:delegation",
                 "mapiproxy:delegation = s4u needs mapiproxy:keytab, mapiproxy:service principal "
                 "(the proxy's account, allowed to delegate) and mapiproxy:upstream spn");
    if (s4u && !c->realm[0] && c->credentials_file[0])
        perr_opt(p, name, "mapiproxy:delegation",
                 "mapiproxy:delegation = s4u with NTLM clients (mapiproxy:credentials file) needs "
                 "realm (NTLM users are impersonated as user@REALM)");
    bool winbind = !strcasecmp(c->ntlm_backend, "winbind");
    if (c->ntlm_backend[0] && !winbind && strcasecmp(c->ntlm_backend, "file"))
        perr_opt(p, name, "mapiproxy:ntlm backend",
                 "mapiproxy:ntlm backend \"%s\": use file or winbind", c->ntlm_backend);
    if (winbind && c->credentials_file[0])
        perr_opt(p, name, "mapiproxy:ntlm backend",
                 "mapiproxy:ntlm backend = winbind checks NTLM users with the domain: remove "
                 "mapiproxy:credentials file (or set mapiproxy:ntlm backend = file)");
    if (c->winbind_socket_dir[0] && !winbind)
        perr_opt(p, name, "mapiproxy:winbind socket dir",
                 "mapiproxy:winbind socket dir is set but mapiproxy:ntlm backend is not "
                 "winbind");
    if (c->winbind_socket_dir[0] && c->winbind_socket_dir[0] != '/')
        perr_opt(p, name, "mapiproxy:winbind socket dir",
                 "mapiproxy:winbind socket dir \"%s\": give an absolute path",
                 c->winbind_socket_dir);
    if (c->groups_file[0] && access(c->groups_file, R_OK))
        perr_opt(p, name, "mapiproxy:groups file",
                 "mapiproxy:groups file %s: %s; give a readable file", c->groups_file,
                 strerror(errno));
    if (c->mailbox_map[0] && access(c->mailbox_map, R_OK))
        perr_opt(p, name, "mapiproxy:mailbox map",
                 "mapiproxy:mailbox map %s: %s; give a readable file", c->mailbox_map,
                 strerror(errno));
    if (s4u && !c->realm[0] && winbind)
        perr_opt(p, name, "mapiproxy:delegation",
                 "mapiproxy:delegation = s4u with NTLM clients (mapiproxy:ntlm backend = winbind) "
                 "needs realm (NTLM users are impersonated as user@REALM)");
    const char *files[][2] = {{"mapiproxy:keytab", c->keytab},
                              {"mapiproxy:upstream keytab", c->upstream_keytab}};
    for (size_t i = 0; i < 2; i++) {
        const char *f = files[i][1];
        if (!strncmp(f, "FILE:", 5))
            f += 5;
        if (f[0] && access(f, R_OK))
            perr_opt(p, name, files[i][0], "%s %s: %s; give a keytab the proxy can read",
                     files[i][0], f, strerror(errno));
    }
    if (c->upstream_spn[0] && !s4u && !c->upstream_keytab[0] && !c->upstream_ccache[0])
        perr_opt(p, name, "mapiproxy:upstream spn",
                 "mapiproxy:upstream spn is set: give the proxy's upstream identity with "
                 "mapiproxy:upstream keytab and/or mapiproxy:upstream ccache, or set "
                 "mapiproxy:delegation = s4u");
    char list[sizeof c->passthrough_ifaces];
    scopy(list, sizeof list, c->passthrough_ifaces);
    for (char *save = NULL, *t = strtok_r(list, " ,\t", &save); t;
         t = strtok_r(NULL, " ,\t", &save)) {
        struct mp_iface_spec spec;
        if (mp_iface_parse(t, &spec))
            perr_opt(p, name, "mapiproxy:pass-through interfaces",
                     "mapiproxy:pass-through interfaces: unknown interface \"%s\"", t);
    }
}

static bool wildcard_host(const char *h)
{
    return !h[0] || !strcmp(h, "0.0.0.0") || !strcmp(h, "::") || !strcmp(h, "*");
}

/* Two listeners on one port: the daemon would fail to bind the second. */
static void check_ports(struct pctx *p, const char *name)
{
    const struct mp_config *c = p->cfg;
    if (c->epm_port && c->epm_port == c->rpc_port)
        perr_opt(p, name, "mapiproxy:rpc port",
                 "mapiproxy:rpc port %u is also mapiproxy:epmapper port; give them different "
                 "ports",
                 c->rpc_port);
    for (size_t i = 0; i < c->n_http_listen; i++) {
        const struct mp_http_listen *h = &c->http_listen[i];
        bool overlap = false;
        for (size_t j = 0; j < c->n_listen && !overlap; j++)
            overlap = wildcard_host(h->host) || wildcard_host(c->listen[j].host) ||
                      !strcasecmp(h->host, c->listen[j].host);
        if (overlap && (h->port == c->epm_port || h->port == c->rpc_port))
            perr_opt(p, name, "mapiproxy:http listen",
                     "mapiproxy:http listen %s:%u uses the port of mapiproxy:%s on the same "
                     "address; give it another port",
                     h->host, h->port, h->port == c->epm_port ? "epmapper port" : "rpc port");
        for (size_t k = 0; k < i; k++)
            if (c->http_listen[k].port == h->port &&
                (wildcard_host(h->host) || wildcard_host(c->http_listen[k].host) ||
                 !strcasecmp(h->host, c->http_listen[k].host)))
                perr_opt(p, name, "mapiproxy:http listen",
                         "mapiproxy:http listen names port %u twice on the same address; "
                         "remove one",
                         h->port);
    }
}

/* mapiproxy:metrics listen: ADDRESS:PORT, on a port no other listener uses. */
static void check_metrics(struct pctx *p, const char *name)
{
    struct mp_config *c = p->cfg;
    const char *why = "", *k = "mapiproxy:metrics listen";
    char q[100];
    memset(&c->metrics, 0, sizeof c->metrics);
    if (!c->metrics_listen[0])
        return;
    if (!split_host_port(c->metrics_listen, c->metrics.host, sizeof c->metrics.host,
                         &c->metrics.port, true, &why) ||
        !c->metrics.port) {
        perr_opt(p, name, k, "%s \"%s\" %s; give ADDRESS:PORT, e.g. 127.0.0.1:9464", k,
                 qv(c->metrics_listen, q, sizeof q), c->metrics.port ? why : "needs a port");
        c->metrics.port = 0;
        return;
    }
    const struct mp_http_listen *m = &c->metrics;
    bool same = c->n_listen == 0;
    for (size_t j = 0; j < c->n_listen && !same; j++)
        same = wildcard_host(m->host) || wildcard_host(c->listen[j].host) ||
               !strcasecmp(m->host, c->listen[j].host);
    bool clash = same && (m->port == c->epm_port || m->port == c->rpc_port);
    for (size_t i = 0; i < c->n_http_listen; i++)
        clash |= c->http_listen[i].port == m->port &&
                 (wildcard_host(m->host) || wildcard_host(c->http_listen[i].host) ||
                  !strcasecmp(m->host, c->http_listen[i].host));
    if (clash)
        perr_opt(p, name, k,
                 "%s port %u is used by another listener on the same address; give "
                 "it another port",
                 k, m->port);
}

/* mapiproxy:log target and the syslog options (doc/operations.md). */
static void check_log(struct pctx *p, const char *name)
{
    struct mp_config *c = p->cfg;
    const char *t = c->log_target;
    if (!t[0])
        c->log_to = c->log_file[0] ? MP_LOG_TO_FILE : MP_LOG_TO_STDERR;
    else if (!strcasecmp(t, "file"))
        c->log_to = MP_LOG_TO_FILE;
    else if (!strcasecmp(t, "syslog"))
        c->log_to = MP_LOG_TO_SYSLOG;
    else if (!strcasecmp(t, "stderr"))
        c->log_to = MP_LOG_TO_STDERR;
    else
        perr_opt(p, name, "mapiproxy:log target",
                 "mapiproxy:log target = \"%s\": use file, syslog or stderr", t);
    if (c->log_to == MP_LOG_TO_FILE && !c->log_file[0])
        perr_opt(p, name, "mapiproxy:log target",
                 "mapiproxy:log target = file needs mapiproxy:log file = PATH");
    if (c->log_to != MP_LOG_TO_FILE && c->log_file[0] && t[0])
        pwarn_opt(p, name, "mapiproxy:log file",
                  "mapiproxy:log file is not used: mapiproxy:log target is %s", t);
    c->syslog_facility = mp_syslog_facility(c->syslog_facility_name);
    if (c->syslog_facility < 0)
        perr_opt(p, name, "mapiproxy:syslog facility",
                 "mapiproxy:syslog facility = \"%s\": use daemon, user, auth, authpriv or "
                 "local0 ... local7",
                 c->syslog_facility_name);
}

static int finish(struct pctx *p, const char *name)
{
    check_log(p, name);
    if (p->cfg->packet_export_dir[0] && !p->cfg->packet_export_clients[0] &&
        !p->cfg->packet_export_users[0])
        perr_opt(p, name, "mapiproxy:packet export dir",
                 "mapiproxy:packet export dir is set but mapiproxy:packet export clients is not; "
                 "name the client addresses whose traffic is exported (or * for every client), "
                 "or the users (mapiproxy:packet export users)");
    check_auth_options(p, name);
    check_ports(p, name);
    check_metrics(p, name);
    /* An invalid binding line was reported already; only a missing one here. */
    if (!p->have_binding && !p->binding_seen)
        perr(p, name, 0,
             "dcerpc_mapiproxy:binding is not set; add \"dcerpc_mapiproxy:binding = "
             "ncacn_ip_tcp:HOST\" (the Exchange server) to [global]");
    check_http(p, name);
    free(p->section);
    p->section = NULL;
    if (p->n_err) {
        free_entries(p->cfg);
        mp_diag_free(&p->cfg->warnings);
        return -1;
    }
    return 0;
}

int mp_config_load_text(struct mp_config *cfg, const char *name, const char *text,
                        struct mp_diag *diag)
{
    if (!cfg)
        return -1;
    if (!name)
        name = "<text>";
    if (!text)
        text = "";
    set_defaults(cfg);
    scopy(cfg->path, sizeof cfg->path, name);
    struct pctx p = {.cfg = cfg, .diag = diag, .section = xstrdup("global")};
    parse_buffer(&p, name, text, strlen(text), 0);
    return finish(&p, name);
}

int mp_config_load(struct mp_config *cfg, const char *path, struct mp_diag *diag)
{
    if (!cfg)
        return -1;
    if (!path)
        return mp_config_load_text(cfg, "(built-in default configuration)", mp_default_config,
                                   diag);
    set_defaults(cfg);
    scopy(cfg->path, sizeof cfg->path, path);
    struct pctx p = {.cfg = cfg, .diag = diag, .section = xstrdup("global")};
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    const char *why = NULL;
    if (fd < 0 || fstat(fd, &st) < 0)
        why = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        why = "not a regular file";
    else if ((unsigned long long)st.st_size > MP_CONFIG_MAX_FILE_SIZE)
        why = "larger than 4 MiB";
    char *buf = NULL;
    size_t got = 0;
    if (!why) {
        size_t cap = (size_t)st.st_size + 1;
        buf = malloc(cap);
        if (!buf)
            why = "out of memory";
        while (buf) {
            if (got == cap) {
                if (cap > MP_CONFIG_MAX_FILE_SIZE) {
                    why = "larger than 4 MiB";
                    break;
                }
                char *nb = realloc(buf, cap * 2);
                if (!nb) {
                    why = "out of memory";
                    break;
                }
                buf = nb;
                cap *= 2;
            }
            ssize_t k = read(fd, buf + got, cap - got);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                why = strerror(errno);
                break;
            }
            if (k == 0)
                break;
            got += (size_t)k;
        }
    }
    if (fd >= 0)
        close(fd);
    if (why)
        perr(&p, path, 0,
             "cannot read the configuration file: %s; check the path and its "
             "permissions",
             why);
    else
        parse_buffer(&p, path, buf, got, 0);
    free(buf);
    if (why) {
        free(p.section);
        free_entries(cfg);
        mp_diag_free(&cfg->warnings);
        return -1;
    }
    return finish(&p, path);
}

/* ------------------------------------------------------------------------ */
/* Lookups                                                                   */

const char *mp_config_get(const struct mp_config *cfg, const char *key)
{
    if (!cfg || !key)
        return NULL;
    char *k = normalize_key(key, strlen(key));
    if (!k)
        return NULL;
    const char *found = NULL;
    for (size_t i = 0; i < cfg->n_entries; i++) /* last in [global] wins */
        if (!strcmp(cfg->entries[i].section, "global") && !strcmp(cfg->entries[i].key, k))
            found = cfg->entries[i].value;
    for (size_t i = 0; !found && i < cfg->n_entries; i++)
        if (!strcmp(cfg->entries[i].key, k))
            found = cfg->entries[i].value;
    free(k);
    return found;
}

bool mp_config_parse_bool(const char *v, bool *out)
{
    return parse_bool(v, out);
}

bool mp_config_get_bool(const struct mp_config *cfg, const char *key, bool dflt)
{
    const char *v = mp_config_get(cfg, key);
    bool b;
    if (!v || !parse_bool(v, &b))
        return dflt;
    return b;
}

bool mp_config_parse_int(const char *v, long *out)
{
    if (!v || !*v)
        return false;
    char *end;
    errno = 0;
    long x;
    if (v[0] == '0' && (v[1] == 'x' || v[1] == 'X'))
        x = strtol(v + 2, &end, 16);
    else
        x = strtol(v, &end, 10);
    if (errno || *end || end == v)
        return false;
    *out = x;
    return true;
}

long mp_config_get_int(const struct mp_config *cfg, const char *key, long dflt)
{
    long x;
    return mp_config_parse_int(mp_config_get(cfg, key), &x) ? x : dflt;
}

/* ------------------------------------------------------------------------ */

const char mp_default_config[] =
    "# mapiproxy built-in configuration (used when no -c FILE is given).\n"
    "# Syntax is Samba's smb.conf; see doc/configuration.md for every option.\n"
    "[global]\n"
    "    # The Exchange server to relay to (Samba binding string).  With no\n"
    "    # [PORT] the port is found through the server's endpoint mapper.\n"
    "    dcerpc_mapiproxy:binding = ncacn_ip_tcp:127.0.0.1\n"
    "\n"
    "    # Interfaces relayed: the four Exchange RPC interfaces Outlook binds to\n"
    "    # (EMSMDB, AsyncEMSMDB, NSPI address book, DS referral).  Others can be\n"
    "    # added by name or as UUID/MAJOR.MINOR.\n"
    "    dcerpc_mapiproxy:interfaces = exchange_emsmdb, exchange_async_emsmdb, \\\n"
    "                                  exchange_nsp, exchange_ds_rfr\n"
    "\n"
    "    # Where Outlook connects: the address(es), the endpoint mapper port\n"
    "    # Outlook asks first, and the port the RPC interfaces are served on.\n"
    "    mapiproxy:listen = 127.0.0.1\n"
    "    mapiproxy:epmapper port = 135\n"
    "    mapiproxy:rpc port = 6100\n"
    "\n"
    "    # The upstream server's endpoint mapper (Exchange and Windows: 135).\n"
    "    mapiproxy:upstream epmapper port = 135\n"
    "\n"
    "    # 0 error, 1 warning, 2 info, 3 debug, 4 trace\n"
    "    mapiproxy:log level = info\n";

/* Keys whose value differs between a and b (set in one only counts), as a
 * ", "-separated list in out, each once; values are compared, never copied.
 * Returns the number of keys. */
size_t mp_config_diff(const struct mp_config *a, const struct mp_config *b, const char *ignore,
                      char *out, size_t n)
{
    size_t count = 0, o = 0;
    if (n)
        out[0] = 0;
    const struct mp_config *sides[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        const struct mp_config *x = sides[s], *y = sides[!s];
        for (size_t i = 0; i < x->n_entries; i++) {
            const char *k = x->entries[i].key;
            bool listed = false; /* an earlier entry of x with this key, or of a when s==1 */
            for (size_t j = 0; j < i && !listed; j++)
                listed = !strcmp(x->entries[j].key, k);
            for (size_t j = 0; s == 1 && j < y->n_entries && !listed; j++)
                listed = !strcmp(y->entries[j].key, k);
            if (listed || (ignore && !strcmp(k, ignore)))
                continue;
            const char *vx = mp_config_get(x, k), *vy = mp_config_get(y, k);
            if (vx && vy && !strcmp(vx, vy))
                continue;
            count++;
            int w = snprintf(out + o, n > o ? n - o : 0, "%s%s", o ? ", " : "", k);
            if (w > 0 && o + (size_t)w < n)
                o += (size_t)w;
        }
    }
    return count;
}
