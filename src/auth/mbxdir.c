/* The directory lookup of mailbox authorization (mbxdir.h): a small
 * blocking DCE/RPC client of the upstream's NSPI interface, made of the
 * pieces the relay uses (PDU builders, the NTLM initiator, packet privacy,
 * the endpoint mapper's ept_map, the NSPI codec). */
#include "auth/mbxdir.h"

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "auth/credstore.h"
#include "auth/dcerpc_sign.h"
#include "auth/ntlm_crypto.h"
#include "auth/ntlmssp.h"
#include "codec/codec.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"
#include "dcerpc/pdu.h"
#include "epm/epm.h"

#define OP_NSPI_BIND 0
#define OP_NSPI_UNBIND 1
#define OP_NSPI_RESOLVE_NAMES_W 20
#define PR_EMAIL_ADDRESS_W 0x3003001Fu
#define PR_ACCOUNT_W 0x3A00001Fu
#define MAX_RESPONSE (1u << 20)
#define FRAG 5840 /* what the client offers for fragments */

struct mp_mbxdir {
    char host[256];
    uint16_t port, epm_port;
    char user[256], domain[256], ws[64];
    char password[256];
    unsigned timeout_ms;
};

struct mp_mbxdir *mp_mbxdir_new(const struct mp_config *cfg, char *why, size_t wl)
{
    if (!cfg->username[0] || cfg->upstream_spn[0]) {
        snprintf(why, wl, "the proxy logs on upstream with %s",
                 cfg->upstream_spn[0] ? "Kerberos (only NTLM is done here)"
                                      : "no dcerpc_mapiproxy:username");
        return NULL;
    }
    struct mp_mbxdir *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(why, wl, "out of memory");
        return NULL;
    }
    snprintf(d->host, sizeof(d->host), "%s", cfg->binding.host);
    d->port = cfg->binding.port;
    d->epm_port = cfg->upstream_epm_port;
    snprintf(d->user, sizeof(d->user), "%s", cfg->username);
    snprintf(d->domain, sizeof(d->domain), "%s", cfg->domain);
    snprintf(d->ws, sizeof(d->ws), "%s", cfg->netbios_name);
    d->timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 10000;
    if (cfg->password_file[0]) {
        if (mp_read_secret_file(cfg->password_file, d->password, sizeof(d->password), why, wl)) {
            mp_mbxdir_free(d);
            return NULL;
        }
    } else {
        snprintf(d->password, sizeof(d->password), "%s", cfg->password);
    }
    return d;
}

void mp_mbxdir_free(struct mp_mbxdir *d)
{
    if (!d)
        return;
    mp_ntlm_cleanse(d->password, sizeof(d->password));
    free(d);
}

/* ---- one connection ---- */

struct rpc {
    int fd;
    uint32_t call_id;
    bool sealed;
    struct mp_ntlm_initiator ini;
    bool ini_init;
    struct mp_ntlm_session sess;
    bool sess_init;
};

static int dial(const struct mp_mbxdir *d, uint16_t port, char *why, size_t wl)
{
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int rc = getaddrinfo(d->host, ps, &hints, &ai);
    if (rc) {
        snprintf(why, wl, "cannot resolve %s: %s", d->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, p->ai_protocol);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = d->timeout_ms / 1000,
                             .tv_usec = (d->timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        snprintf(why, wl, "cannot connect to %s port %u: %s", d->host, port, strerror(errno));
    return fd;
}

static int send_all(struct rpc *c, const struct mp_buf *b, char *why, size_t wl)
{
    for (size_t off = 0; off < b->len;) {
        ssize_t n = send(c->fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            snprintf(why, wl, "send: %s", n < 0 ? strerror(errno) : "closed");
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

static int recv_n(struct rpc *c, uint8_t *p, size_t n, char *why, size_t wl)
{
    for (size_t off = 0; off < n;) {
        ssize_t k = recv(c->fd, p + off, n - off, 0);
        if (k <= 0) {
            snprintf(why, wl, "receive: %s", k < 0 ? strerror(errno) : "closed by the upstream");
            return -1;
        }
        off += (size_t)k;
    }
    return 0;
}

/* One whole PDU into pdu (reset first); h filled. */
static int recv_pdu(struct rpc *c, struct mp_buf *pdu, struct mp_pdu_hdr *h, char *why, size_t wl)
{
    uint8_t hdr[MP_HDR_LEN];
    if (recv_n(c, hdr, sizeof(hdr), why, wl))
        return -1;
    const char *bad = mp_pdu_hdr_check(hdr, sizeof(hdr), h);
    if (bad) {
        snprintf(why, wl, "bad PDU header: %s", bad);
        return -1;
    }
    pdu->len = 0;
    if (mp_buf_append(pdu, hdr, sizeof(hdr)) || mp_buf_reserve(pdu, h->frag_len) ||
        recv_n(c, pdu->data + MP_HDR_LEN, h->frag_len - MP_HDR_LEN, why, wl)) {
        if (!why[0])
            snprintf(why, wl, "out of memory");
        return -1;
    }
    pdu->len = h->frag_len;
    return 0;
}

/* Bind the interface; with NTLM at privacy when auth. */
static int bind_iface(struct rpc *c, const struct mp_mbxdir *d, const struct mp_syntax *iface,
                      bool auth, char *why, size_t wl)
{
    struct mp_bind bb = {.max_xmit = FRAG, .max_recv = FRAG, .n_ctx = 1};
    bb.ctx[0].ctx_id = 0;
    bb.ctx[0].n_ts = 1;
    bb.ctx[0].abstract = *iface;
    bb.ctx[0].ts[0] = mp_ndr20_syntax;
    struct mp_buf tok = {0}, out = {0}, in = {0};
    int rc = -1;
    if (auth) {
        c->ini_init = mp_ntlm_initiator_init(&c->ini, d->user, d->domain, d->password, NULL, d->ws,
                                             NULL, 0) == 0;
        if (!c->ini_init || mp_ntlm_initiator_negotiate(&c->ini, &tok)) {
            snprintf(why, wl, "NTLM initiator failed");
            goto out;
        }
    }
    struct mp_auth a = {.type = MP_AUTHN_WINNT,
                        .level = MP_AUTHN_LEVEL_PKT_PRIVACY,
                        .context_id = 1,
                        .value = tok.data,
                        .value_len = (uint16_t)tok.len};
    if (mp_build_bind(&out, MP_PT_BIND, MP_PFC_FIRST | MP_PFC_LAST, ++c->call_id, &bb,
                      auth ? &a : NULL) ||
        send_all(c, &out, why, wl))
        goto out;
    struct mp_pdu_hdr h;
    if (recv_pdu(c, &in, &h, why, wl))
        goto out;
    struct mp_bind_ack ack;
    if (h.ptype != MP_PT_BIND_ACK || mp_bind_ack_parse(in.data, &h, &ack) || !ack.n_results ||
        ack.res[0].result != MP_CTX_ACCEPT) {
        snprintf(why, wl, "bind refused (%s)", mp_ptype_name(h.ptype));
        goto out;
    }
    if (auth) {
        struct mp_auth ch;
        tok.len = 0;
        if (mp_pdu_auth(in.data, &h, &ch) ||
            mp_ntlm_initiator_authenticate(&c->ini, ch.value, ch.value_len, &tok) ||
            mp_ntlm_session_init(&c->sess, c->ini.flags, c->ini.exported_key, true)) {
            snprintf(why, wl, "the upstream's NTLM CHALLENGE cannot be answered");
            goto out;
        }
        c->sess_init = true;
        out.len = 0;
        if (mp_build_auth3(&out, ++c->call_id, MP_AUTHN_WINNT, MP_AUTHN_LEVEL_PKT_PRIVACY, 1,
                           tok.data, tok.len) ||
            send_all(c, &out, why, wl))
            goto out;
        c->sealed = true;
    }
    rc = 0;
out:
    mp_buf_free(&tok);
    mp_buf_free(&out);
    mp_buf_free(&in);
    return rc;
}

/* One call: stub in, whole response stub into resp. */
static int call(struct rpc *c, uint16_t opnum, const struct mp_buf *stub, struct mp_buf *resp,
                char *why, size_t wl)
{
    struct mp_buf out = {0}, in = {0};
    int rc = -1;
    uint32_t id = ++c->call_id;
    if (stub->len > FRAG - 128 ||
        mp_build_request(&out, MP_PFC_FIRST | MP_PFC_LAST, id, 0, opnum, NULL, stub->data,
                         stub->len, (uint32_t)stub->len) ||
        (c->sealed &&
         (mp_dcerpc_add_verifier(&out, 0, MP_AUTHN_WINNT, MP_AUTHN_LEVEL_PKT_PRIVACY, 1) ||
          mp_dcerpc_ntlm_protect(&c->sess.send, out.data, out.len, false)))) {
        snprintf(why, wl, "cannot build the request");
        goto done;
    }
    if (send_all(c, &out, why, wl))
        goto done;
    resp->len = 0;
    for (;;) {
        struct mp_pdu_hdr h;
        if (recv_pdu(c, &in, &h, why, wl))
            goto done;
        if (h.call_id != id || (h.ptype != MP_PT_RESPONSE && h.ptype != MP_PT_FAULT)) {
            snprintf(why, wl, "unexpected %s", mp_ptype_name(h.ptype));
            goto done;
        }
        size_t off = MP_REQ_HDR_LEN, n = h.frag_len > off ? h.frag_len - off : 0;
        if (c->sealed &&
            mp_dcerpc_ntlm_unprotect(&c->sess.recv, in.data, in.len, false, &off, &n)) {
            snprintf(why, wl, "a response does not verify");
            goto done;
        }
        if (h.ptype == MP_PT_FAULT) {
            snprintf(why, wl, "fault 0x%08x", in.len >= 28 ? mp_get32(in.data + 24) : 0);
            goto done;
        }
        if (resp->len + n > MAX_RESPONSE || mp_buf_append(resp, in.data + off, n)) {
            snprintf(why, wl, "response too large");
            goto done;
        }
        if (h.flags & MP_PFC_LAST)
            break;
    }
    rc = 0;
done:
    mp_buf_free(&out);
    mp_buf_free(&in);
    return rc;
}

static void rpc_close(struct rpc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->ini_init)
        mp_ntlm_initiator_free(&c->ini);
    if (c->sess_init)
        mp_ntlm_session_free(&c->sess);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
}

/* The NSPI port: the binding's, or the upstream endpoint mapper's answer. */
static int nspi_port(const struct mp_mbxdir *d, const struct mp_syntax *nspi, char *why, size_t wl)
{
    if (d->port)
        return d->port;
    struct rpc c = {.fd = dial(d, d->epm_port, why, wl)};
    struct mp_buf stub = {0}, resp = {0};
    uint16_t port = 0;
    uint32_t st = 0;
    int rc = -1;
    if (c.fd >= 0 && !bind_iface(&c, d, &mp_epm_syntax, false, why, wl) &&
        !mp_epm_map_request(&stub, nspi) && !call(&c, 3, &stub, &resp, why, wl)) {
        if (mp_epm_map_response(resp.data, resp.len, &port, &st) || !port)
            snprintf(why, wl, "the upstream's endpoint mapper has no NSPI port (0x%08x)", st);
        else
            rc = port;
    }
    mp_buf_free(&stub);
    mp_buf_free(&resp);
    rpc_close(&c);
    return rc;
}

/* The value of tag in row as UTF-8 (Unicode string properties only). */
static bool row_str(const struct nspi_PropertyRow_r *row, uint32_t tag, char *out, size_t cap)
{
    for (uint32_t i = 0; i < row->cValues; i++) {
        const struct nspi_PropertyValue_r *v = &row->lpProps[i];
        if (v->ulPropTag != tag || !v->Value.lpszW)
            continue;
        size_t n = 0;
        while (v->Value.lpszW[n])
            n++;
        uint8_t *le = malloc(2 * n + 2);
        if (!le)
            return false;
        for (size_t k = 0; k < n; k++) {
            le[2 * k] = (uint8_t)v->Value.lpszW[k];
            le[2 * k + 1] = (uint8_t)(v->Value.lpszW[k] >> 8);
        }
        int rc = mp_utf16le_to_utf8(le, 2 * n, out, cap);
        free(le);
        return rc == 0;
    }
    return false;
}

int mp_mbxdir_lookup(const struct mp_mbxdir *d, const char *account, char *dn, size_t cap,
                     char *why, size_t wl)
{
    why[0] = 0;
    const struct mp_codec_iface *ifc = mp_codec_iface_lookup("nspi");
    const struct mp_call_codec *cb = ifc ? mp_codec_iface_call(ifc, OP_NSPI_BIND) : NULL;
    const struct mp_call_codec *cu = ifc ? mp_codec_iface_call(ifc, OP_NSPI_UNBIND) : NULL;
    const struct mp_call_codec *cr = ifc ? mp_codec_iface_call(ifc, OP_NSPI_RESOLVE_NAMES_W) : NULL;
    if (!cb || !cu || !cr) {
        snprintf(why, wl, "no NSPI codec");
        return -1;
    }
    struct mp_syntax nspi = {.major = ifc->major, .minor = ifc->minor};
    memcpy(nspi.uuid, ifc->uuid, 16);
    int port = nspi_port(d, &nspi, why, wl);
    if (port < 0)
        return -1;
    struct rpc c = {.fd = dial(d, (uint16_t)port, why, wl)};
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_buf stub = {0}, resp = {0};
    int rc = -1;
    if (c.fd < 0 || bind_iface(&c, d, &nspi, true, why, wl))
        goto out;
    struct nspi_FlatUID_r guid = {{0}};
    struct nspi_NspiBind_in bin = {.pServerGuid = &guid};
    bin.pStat.CodePage = 1252;
    bin.pStat.TemplateLocale = bin.pStat.SortLocale = 0x409;
    struct nspi_NspiBind_out bout;
    if (cb->push_in(&stub, &bin) || call(&c, OP_NSPI_BIND, &stub, &resp, why, wl))
        goto out;
    if (cb->pull_out(resp.data, resp.len, &bout, &a) || bout.result) {
        snprintf(why, wl, "NspiBind failed (0x%08x)", (unsigned)bout.result);
        goto out;
    }
    uint8_t name16[520];
    size_t n16;
    if (mp_utf8_to_utf16le(account, name16, sizeof(name16) - 2, &n16)) {
        snprintf(why, wl, "account name too long");
        goto unbind;
    }
    uint16_t w[260];
    for (size_t k = 0; k < n16 / 2; k++)
        w[k] = (uint16_t)(name16[2 * k] | (name16[2 * k + 1] << 8));
    w[n16 / 2] = 0;
    uint16_t *strs[1] = {w};
    uint32_t tags[2] = {PR_EMAIL_ADDRESS_W, PR_ACCOUNT_W};
    struct nspi_PropertyTagArray_r pt = {2, tags};
    struct nspi_NspiResolveNamesW_in rin = {.hRpc = bout.contextHandle, .pPropTags = &pt};
    rin.pStat = bin.pStat;
    rin.paWStr.Count = 1;
    rin.paWStr.Strings = strs;
    struct nspi_NspiResolveNamesW_out rout;
    stub.len = 0;
    if (cr->push_in(&stub, &rin) || call(&c, OP_NSPI_RESOLVE_NAMES_W, &stub, &resp, why, wl))
        goto unbind;
    if (cr->pull_out(resp.data, resp.len, &rout, &a) || rout.result) {
        snprintf(why, wl, "NspiResolveNamesW failed (0x%08x)", (unsigned)rout.result);
        goto unbind;
    }
    char acct[260];
    /* exactly one row, for this account (ANR matches prefixes and other
     * names: "carol" may resolve to "carolyn") */
    if (!rout.ppRows || rout.ppRows->cRows != 1 || !rout.ppMIds || rout.ppMIds->cValues != 1 ||
        rout.ppMIds->aulPropTag[0] <= 2 ||
        !row_str(&rout.ppRows->aRow[0], PR_ACCOUNT_W, acct, sizeof(acct)) ||
        strcasecmp(acct, account) || !row_str(&rout.ppRows->aRow[0], PR_EMAIL_ADDRESS_W, dn, cap) ||
        dn[0] != '/') {
        snprintf(why, wl, "the directory has no mailbox of account %s", account);
        goto unbind;
    }
    rc = 0;
unbind : {
    struct nspi_NspiUnbind_in uin = {.contextHandle = bout.contextHandle};
    char ignore[200];
    stub.len = 0;
    if (!cu->push_in(&stub, &uin))
        call(&c, OP_NSPI_UNBIND, &stub, &resp, ignore, sizeof(ignore));
}
out:
    mp_buf_free(&stub);
    mp_buf_free(&resp);
    mp_arena_free(&a);
    rpc_close(&c);
    return rc;
}
