/* Who the client is, for modules: its version, from EcDoConnectEx's
 * rgwClientVersion (DCE/RPC; the runtime wants that call for itself, see
 * MP_IDENT_BIT) or MAPI/HTTP's X-ClientApplication header, kept in the
 * session.  The user the proxy authenticated and the address are the
 * transports' (mp_call_user, mp_call_peer); when the proxy authenticates
 * nobody (transparent mode), mp_ident_user names the client by what the
 * session saw: its pass-through HTTP logon, else its Connect's user DN. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "chain/services.h"
#include "core/log.h"
#include "chain/chain.h"

#define OP_CONNECTEX 10

/* MS-OXCRPC 3.1.4.1.3.1: with the high bit of the second WORD set the
 * WORDs are (major << 8 | minor, 0x8000 | build, revision); without it
 * (major, build, revision) with minor 0. */
void mp_ident_format_version(const uint16_t w[3], char *out, size_t cap)
{
    if (w[1] & 0x8000u)
        snprintf(out, cap, "%u.%u.%u.%u", (unsigned)(w[0] >> 8), (unsigned)(w[0] & 0xffu),
                 (unsigned)(w[1] & 0x7fffu), (unsigned)w[2]);
    else
        snprintf(out, cap, "%u.0.%u.%u", (unsigned)w[0], (unsigned)w[1], (unsigned)w[2]);
}

/* printable ASCII only: these get logged */
static void printable_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (const char *p = src; *p && o + 1 < cap; p++)
        dst[o++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    dst[o] = 0;
}

void mp_ident_request(struct mp_call *m)
{
    if (!m->session || m->opnum != OP_CONNECTEX || strcmp(m->iface, "exchange_emsmdb"))
        return;
    const struct emsmdb_EcDoConnectEx_in *in = mp_call_request(m);
    if (in && in->szUserDN && in->szUserDN[0])
        printable_copy(m->session->user_dn, sizeof m->session->user_dn, in->szUserDN);
    /* all zero: no version said (MAPI/HTTP's Connect, decoded into this
     * twin, has none; its X-ClientApplication header gave it already) */
    if (!in || !(in->rgwClientVersion[0] | in->rgwClientVersion[1] | in->rgwClientVersion[2]))
        return;
    mp_ident_format_version(in->rgwClientVersion, m->session->client_version,
                            sizeof m->session->client_version);
    mp_debug("call %s EcDoConnectEx: client version %s", m->peer, m->session->client_version);
}

/* "Outlook/15.00.0847.4040" -> "15.0.847.4040": the digits after the
 * slash, each part without leading zeros; "" when it is not that shape. */
static void version_of_app(const char *v, char *out, size_t cap)
{
    out[0] = 0;
    const char *p = strchr(v, '/');
    if (!p)
        return;
    p++;
    size_t o = 0;
    for (int part = 0; part < 4; part++) {
        if (!isdigit((unsigned char)*p))
            break;
        unsigned long n = 0;
        while (isdigit((unsigned char)*p) && n < 100000)
            n = n * 10 + (unsigned long)(*p++ - '0');
        int w = snprintf(out + o, cap - o, part ? ".%lu" : "%lu", n);
        if (w < 0 || (size_t)w >= cap - o) {
            out[0] = 0;
            return;
        }
        o += (size_t)w;
        if (*p != '.')
            break;
        p++;
    }
}

void mp_ident_client_application(struct mp_session *s, const char *value)
{
    printable_copy(s->client_app, sizeof s->client_app, value);
    char v[sizeof s->client_version];
    version_of_app(s->client_app, v, sizeof v);
    if (v[0])
        memcpy(s->client_version, v, sizeof v);
}

const char *mp_call_client_version(const struct mp_call *m)
{
    return m->session && m->session->client_version[0] ? m->session->client_version : NULL;
}

const char *mp_call_client_application(const struct mp_call *m)
{
    return m->session && m->session->client_app[0] ? m->session->client_app : NULL;
}

void mp_ident_seen_user(struct mp_session *s, const char *who)
{
    if (s && who && *who)
        printable_copy(s->seen_user, sizeof s->seen_user, who);
}

const char *mp_ident_user(const struct mp_call *m)
{
    if (m->user[0])
        return m->user;
    if (m->session && m->session->seen_user[0])
        return m->session->seen_user;
    return m->session && m->session->user_dn[0] ? m->session->user_dn : NULL;
}
