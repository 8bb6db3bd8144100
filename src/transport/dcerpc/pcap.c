/* Decrypted packet export of DCE/RPC associations (mapiproxy:packet export
 * dir, doc/operations.md; the writer is src/ops/pcapng.c).  Both legs, as
 * the proxy sees them:
 *   - requests and responses the proxy unseals or seals itself (it
 *     terminates authentication) are written in plaintext, without their
 *     auth trailer (auth_length 0): tapped in dce_unprotect after the
 *     verifier checked, and in dce_emit before protecting;
 *   - every other PDU is written as it is read or queued, with the auth
 *     trailer of binds, alter_contexts, their answers and AUTH3 removed
 *     when the proxy terminates authentication (its own tokens and the
 *     client's are not exported);
 *   - on a pass-through association (the client's logon goes to the
 *     upstream) the proxy has no keys: every PDU is written as it crossed
 *     the proxy, logon tokens included, as a capture on the wire would
 *     hold it (Wireshark can unseal it with the user's password), and the
 *     log says so once.
 * Output is tapped in order: c->tapped counts the bytes at the head of a
 * leg's output buffer already written to the capture. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "transport/dcerpc/internal.h"
#include "ops/pcapng.h"

static bool is_auth_pdu(uint8_t ptype)
{
    return ptype == MP_PT_BIND || ptype == MP_PT_BIND_ACK || ptype == MP_PT_ALTER ||
           ptype == MP_PT_ALTER_RESP || ptype == MP_PT_AUTH3 || ptype == MP_PT_BIND_NAK;
}

static void warn_sealed(struct assoc *a)
{
    if (a->cap_warned)
        return;
    a->cap_warned = true;
    mp_warn("packet export: conn %s: sealed PDUs of a pass-through association (the client "
            "authenticates to the upstream): the proxy has no keys, they are written still "
            "sealed",
            a->peer);
}

/* One PDU p[0..len) on leg c: a bind-type PDU's auth trailer removed. */
static void tap_pdu(struct assoc *a, struct conn *c, bool in, const uint8_t *p, size_t len)
{
    bool client = c == &a->c;
    int fd = dce_leg_carried(a, c) ? -1 : c->n.io.fd;
    uint16_t auth_len = len >= MP_HDR_LEN ? mp_get16(p + 10) : 0;
    if (!auth_len || len < (size_t)MP_HDR_LEN + MP_SEC_TRAILER_LEN + auth_len) {
        mp_pcap_tap(a->cap, fd, client, in, p, len);
        return;
    }
    if (!is_auth_pdu(p[2])) { /* a protected call the proxy did not unseal */
        warn_sealed(a);
        mp_pcap_tap(a->cap, fd, client, in, p, len);
        return;
    }
    if (!a->r->auth.terminate || a->passthrough) { /* the client's logon, untouched */
        mp_pcap_tap(a->cap, fd, client, in, p, len);
        return;
    }
    size_t tl = len - auth_len - MP_SEC_TRAILER_LEN, pad = p[tl + 2];
    size_t n = pad <= tl - MP_HDR_LEN ? tl - pad : tl;
    uint8_t *q = malloc(n);
    if (!q)
        return;
    memcpy(q, p, n);
    mp_put16(q + 8, (uint16_t)n);
    mp_put16(q + 10, 0);
    mp_pcap_tap(a->cap, fd, client, in, q, n);
    free(q);
}

void dce_tap_in(struct assoc *a, struct conn *c, const uint8_t *pdu, const struct mp_pdu_hdr *h)
{
    if (!a->cap)
        return;
    /* what the proxy unseals is written by dce_tap_clear, in plaintext */
    if ((c == &a->c && a->csec && h->ptype == MP_PT_REQUEST) ||
        (c == &a->u && a->usec && h->ptype == MP_PT_RESPONSE))
        return;
    tap_pdu(a, c, true, pdu, h->frag_len);
}

void dce_tap_clear(struct assoc *a, struct conn *c, bool in, const uint8_t *pdu, size_t hl,
                   const uint8_t *stub, size_t len)
{
    if (!a->cap || hl + len > 0xffff)
        return;
    uint8_t *q = malloc(hl + len);
    if (!q)
        return;
    memcpy(q, pdu, hl);
    memcpy(q + hl, stub, len);
    mp_put16(q + 8, (uint16_t)(hl + len));
    mp_put16(q + 10, 0);
    mp_pcap_tap(a->cap, dce_leg_carried(a, c) ? -1 : c->n.io.fd, c == &a->c, in, q, hl + len);
    free(q);
}

/* Whether c's output is tapped now: a leg of a captured association whose
 * socket is connected (bytes queued while connecting are tapped at the
 * flush after it, when the leg's addresses are known), or a carrier's leg
 * (no socket: the capture names no addresses for it). */
static bool tapping(struct assoc *a, struct conn *c)
{
    if (!a->cap || (c != &a->c && c != &a->u))
        return false;
    return dce_leg_carried(a, c) || (c->n.io.fd >= 0 && !c->n.connecting);
}

void dce_tap_out(struct assoc *a, struct conn *c)
{
    if (!tapping(a, c))
        return;
    const uint8_t *p = mp_buf_head(&c->n.out);
    size_t avail = mp_buf_avail(&c->n.out);
    while (c->tapped + MP_HDR_LEN <= avail) {
        size_t flen = mp_get16(p + c->tapped + 8);
        if (flen < MP_HDR_LEN || c->tapped + flen > avail)
            break; /* not a whole PDU: written as far as it goes */
        tap_pdu(a, c, false, p + c->tapped, flen);
        c->tapped += flen;
    }
    c->tapped = avail;
}

void dce_tap_synced(struct assoc *a, struct conn *c)
{
    if (tapping(a, c))
        c->tapped = mp_buf_avail(&c->n.out);
}

void dce_tap_send(struct assoc *a, struct conn *c, const uint8_t *p, size_t len)
{
    if (!tapping(a, c))
        return;
    dce_tap_out(a, c);
    for (size_t off = 0; off + MP_HDR_LEN <= len;) {
        size_t flen = mp_get16(p + off + 8);
        if (flen < MP_HDR_LEN || off + flen > len)
            break;
        tap_pdu(a, c, false, p + off, flen);
        off += flen;
    }
}

void dce_tap_user(struct assoc *a, const char *user)
{
    if (a->cap)
        a->cap = mp_pcap_user(a->cap, user);
}
