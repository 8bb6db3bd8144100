/* The MTA side of the milter protocol, version 6 (Sendmail's libmilter
 * wire format): packets <4-byte big-endian length><command><data>.  We send
 * OPTNEG, CONNECT, HELO, MAIL, RCPT..., HEADER..., EOH, BODY chunks, EOB,
 * QUIT, skipping the steps the milter asked not to get (SMFIP_NO*) and not
 * waiting for replies it said it will not send (SMFIP_NR_*).  Replies:
 * accept, continue, discard, reject, tempfail, replycode, progress, skip,
 * and at end of body the edits (add/change/insert header, quarantine,
 * replace body, recipients, sender).  One connection per message. */
#include "svc/svc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMFI_VERSION 6
#define MILTER_CHUNK 65535
/* protocol flags (SMFIP_*) */
#define P_NOCONNECT 0x1u
#define P_NOHELO 0x2u
#define P_NOMAIL 0x4u
#define P_NORCPT 0x8u
#define P_NOBODY 0x10u
#define P_NOHDRS 0x20u
#define P_NOEOH 0x40u
#define P_NR_HDR 0x80u
#define P_SKIP 0x400u
#define P_NR_CONN 0x1000u
#define P_NR_HELO 0x2000u
#define P_NR_MAIL 0x4000u
#define P_NR_RCPT 0x8000u
#define P_NR_EOH 0x40000u
#define P_NR_BODY 0x80000u
/* what we offer: every NO and NR flag, SKIP; not RCPT_REJ, not HDR_LEADSPC */
#define P_OFFER 0x000FF7FFu
#define A_OFFER 0x000001FFu /* every action */

enum { ST_OPTNEG, ST_CONNECT, ST_HELO, ST_MAIL, ST_RCPT, ST_HDR, ST_EOH, ST_BODY, ST_EOB, ST_END };

struct milter_conv {
    struct mp_svc_conv c;
    struct mp_svc_milter_req r;
    const uint8_t *msg, *body;
    size_t len, hlen, blen;
    int step;
    size_t idx; /* recipient, header offset or body offset in the step */
    bool waiting;
    uint32_t proto;
    unsigned edits;
    bool quarantine;
};

static int pkt(struct mp_buf *b, char cmd, const void *d1, size_t n1, const void *d2, size_t n2)
{
    uint32_t l = (uint32_t)(1 + n1 + n2);
    uint8_t h[5] = {(uint8_t)(l >> 24), (uint8_t)(l >> 16), (uint8_t)(l >> 8), (uint8_t)l,
                    (uint8_t)cmd};
    return mp_buf_append(b, h, 5) || mp_buf_append(b, d1, n1) || mp_buf_append(b, d2, n2);
}

static int pkt_str(struct mp_buf *b, char cmd, const char *s)
{
    s = s ? s : "";
    return pkt(b, cmd, s, strlen(s) + 1, NULL, 0);
}

/* "<addr>" NUL, the argument of MAIL and RCPT */
static int pkt_angle(struct mp_buf *b, char cmd, const char *addr)
{
    struct mp_buf d = {0};
    int e = mp_svc_printf(&d, "<%s>", addr ? addr : "") || mp_buf_append(&d, "", 1) ||
            pkt(b, cmd, d.data, d.len, NULL, 0);
    mp_buf_free(&d);
    return e;
}

/* Next header of the message's header block from *off: name, value
 * (folded lines kept with their CRLF), false at the block's end. */
static bool next_header(struct milter_conv *k, size_t *off, struct mp_buf *name, struct mp_buf *val)
{
    const uint8_t *m = k->msg;
    size_t i = *off, end = k->hlen;
    while (i < end) {
        size_t e = i;
        while (e < end && m[e] != '\n')
            e++;
        size_t le = e > i && m[e - 1] == '\r' ? e - 1 : e;
        if (le == i) /* the empty line */
            return false;
        const uint8_t *colon = memchr(m + i, ':', le - i);
        size_t j = e + 1;
        while (j < end && (m[j] == ' ' || m[j] == '\t')) { /* continuation lines */
            while (j < end && m[j] != '\n')
                j++;
            j++;
        }
        *off = j;
        if (!colon)
            continue;
        size_t vs = (size_t)(colon - m) + 1;
        if (vs < le && m[vs] == ' ')
            vs++;
        size_t ve = j > end ? end : j;
        while (ve > vs && (m[ve - 1] == '\n' || m[ve - 1] == '\r'))
            ve--;
        name->len = val->len = 0;
        return !(mp_buf_append(name, m + i, (size_t)(colon - (m + i))) ||
                 mp_buf_append(name, "", 1) || mp_buf_append(val, m + vs, ve - vs) ||
                 mp_buf_append(val, "", 1));
    }
    return false;
}

/* Queue the packets from the current step on, up to the first that needs a
 * reply.  Returns MP_SVC_MORE, or MP_SVC_DONE after QUIT. */
static int advance(struct milter_conv *k)
{
    struct mp_buf *o = &k->c.out;
    for (;;) {
        int need = 0; /* 1: wait for a reply after this packet */
        switch (k->step) {
        case ST_CONNECT:
            if (!(k->proto & P_NOCONNECT)) {
                const char *host = k->r.client_host ? k->r.client_host : "localhost";
                const char *addr = k->r.client_addr ? k->r.client_addr : "127.0.0.1";
                uint8_t fam[3] = {strchr(addr, ':') ? '6' : '4', (uint8_t)(k->r.client_port >> 8),
                                  (uint8_t)k->r.client_port};
                struct mp_buf d = {0};
                int e = mp_buf_append(&d, host, strlen(host) + 1) || mp_buf_append(&d, fam, 3) ||
                        mp_buf_append(&d, addr, strlen(addr) + 1) ||
                        pkt(o, 'C', d.data, d.len, NULL, 0);
                mp_buf_free(&d);
                if (e)
                    return MP_SVC_BAD;
                need = !(k->proto & P_NR_CONN);
            }
            k->step++;
            break;
        case ST_HELO:
            if (!(k->proto & P_NOHELO)) {
                if (pkt_str(o, 'H', k->r.helo ? k->r.helo : "mapiproxy"))
                    return MP_SVC_BAD;
                need = !(k->proto & P_NR_HELO);
            }
            k->step++;
            break;
        case ST_MAIL:
            if (!(k->proto & P_NOMAIL)) {
                if (pkt_angle(o, 'M', k->r.from))
                    return MP_SVC_BAD;
                need = !(k->proto & P_NR_MAIL);
            }
            k->step++;
            k->idx = 0;
            break;
        case ST_RCPT:
            if ((k->proto & P_NORCPT) || !k->r.rcpt || !k->r.rcpt[k->idx]) {
                k->step++;
                k->idx = 0;
                break;
            } else {
                if (pkt_angle(o, 'R', k->r.rcpt[k->idx++]))
                    return MP_SVC_BAD;
                need = !(k->proto & P_NR_RCPT);
            }
            break;
        case ST_HDR: {
            struct mp_buf n = {0}, v = {0};
            bool more = !(k->proto & P_NOHDRS) && next_header(k, &k->idx, &n, &v);
            int e = more && pkt(o, 'L', n.data, n.len, v.data, v.len);
            mp_buf_free(&n);
            mp_buf_free(&v);
            if (e)
                return MP_SVC_BAD;
            if (!more) {
                k->step++;
                k->idx = 0;
                break;
            }
            need = !(k->proto & P_NR_HDR);
            break;
        }
        case ST_EOH:
            if (!(k->proto & P_NOEOH)) {
                if (pkt(o, 'N', NULL, 0, NULL, 0))
                    return MP_SVC_BAD;
                need = !(k->proto & P_NR_EOH);
            }
            k->step++;
            k->idx = 0;
            break;
        case ST_BODY:
            if ((k->proto & P_NOBODY) || k->idx >= k->blen) {
                k->step++;
                break;
            } else {
                size_t n = k->blen - k->idx < MILTER_CHUNK ? k->blen - k->idx : MILTER_CHUNK;
                if (pkt(o, 'B', k->body + k->idx, n, NULL, 0))
                    return MP_SVC_BAD;
                k->idx += n;
                need = !(k->proto & P_NR_BODY);
            }
            break;
        case ST_EOB:
            if (pkt(o, 'E', NULL, 0, NULL, 0))
                return MP_SVC_BAD;
            k->step++;
            need = 1;
            break;
        default:
            return MP_SVC_BAD;
        }
        if (need) {
            k->waiting = true;
            return MP_SVC_MORE;
        }
    }
}

static int milter_begin(struct mp_svc_conv *c, bool reused)
{
    struct milter_conv *k = (struct milter_conv *)c;
    uint8_t d[12] = {0, 0, 0, SMFI_VERSION};
    uint32_t a = A_OFFER, p = P_OFFER;
    for (int i = 0; i < 4; i++) {
        d[4 + i] = (uint8_t)(a >> (24 - 8 * i));
        d[8 + i] = (uint8_t)(p >> (24 - 8 * i));
    }
    k->step = ST_OPTNEG;
    k->waiting = true;
    return pkt(&c->out, 'O', d, 12, NULL, 0) ? MP_SVC_BAD : MP_SVC_MORE;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int final(struct milter_conv *k, enum mp_svc_kind kind, const char *why)
{
    struct mp_svc_conv *c = &k->c;
    c->v.kind = kind;
    if (why && !c->v.name[0])
        snprintf(c->v.name, sizeof c->v.name, "%s", why);
    c->reusable = false;
    k->step = ST_END;
    return pkt(&c->out, 'Q', NULL, 0, NULL, 0) ? MP_SVC_BAD : MP_SVC_DONE;
}

static void note_edit(struct milter_conv *k, const char *what, const uint8_t *d, size_t n)
{
    struct mp_buf *b = &k->c.v.detail;
    if (b->len > MP_SVC_MAX_BODY)
        return;
    mp_svc_printf(b, "%s", what);
    for (size_t i = 0; i < n && i < 1024; i++)
        mp_svc_printf(b, "%c", d[i] == 0 ? '|' : (d[i] >= 0x20 && d[i] < 0x7f) ? d[i] : '?');
    mp_svc_printf(b, "\n");
}

static int on_packet(struct milter_conv *k, uint8_t cmd, const uint8_t *d, size_t n)
{
    struct mp_svc_conv *c = &k->c;
    if (!k->waiting)
        return MP_SVC_BAD;
    if (k->step == ST_OPTNEG) {
        if (cmd != 'O' || n < 12)
            return MP_SVC_BAD;
        uint32_t ver = be32(d), pr = be32(d + 8);
        if (ver < 2 || (pr & ~P_OFFER))
            return MP_SVC_BAD;
        k->proto = pr;
        k->waiting = false;
        k->step = ST_CONNECT;
        return advance(k);
    }
    bool eob = k->step == ST_END; /* EOB sent */
    switch (cmd) {
    case 'p': /* progress */
        return MP_SVC_MORE;
    case 'c':
        if (eob)
            return final(k,
                         k->quarantine ? MP_SVC_QUARANTINE
                         : k->edits    ? MP_SVC_MODIFIED
                                       : MP_SVC_CLEAN,
                         NULL);
        k->waiting = false;
        return advance(k);
    case 'a':
        return final(k,
                     k->quarantine ? MP_SVC_QUARANTINE
                     : k->edits    ? MP_SVC_MODIFIED
                                   : MP_SVC_CLEAN,
                     "accept");
    case 'r':
        return final(k, MP_SVC_REJECT, "reject");
    case 't':
        return final(k, MP_SVC_TEMPFAIL, "tempfail");
    case 'd':
        return final(k, MP_SVC_DISCARD, "discard");
    case 'y': {
        if (n < 3 || d[0] < '2' || d[0] > '5')
            return MP_SVC_BAD;
        const uint8_t *z = memchr(d, 0, n);
        mp_svc_set_name(&c->v, (const char *)d, z ? (size_t)(z - d) : n);
        c->v.status = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
        return final(k,
                     d[0] == '5'   ? MP_SVC_REJECT
                     : d[0] == '4' ? MP_SVC_TEMPFAIL
                                   : MP_SVC_CLEAN,
                     NULL);
    }
    case 's': /* skip the rest of the body */
        if (k->step != ST_BODY)
            return MP_SVC_BAD;
        k->step = ST_EOB;
        k->waiting = false;
        return advance(k);
    case 'q':
        if (!eob)
            return MP_SVC_BAD;
        k->quarantine = true;
        note_edit(k, "quarantine: ", d, n);
        {
            const uint8_t *z = memchr(d, 0, n);
            mp_svc_set_name(&c->v, (const char *)d, z ? (size_t)(z - d) : n);
        }
        return MP_SVC_MORE;
    case 'h':
    case 'm':
    case 'i':
    case 'b':
    case '+':
    case '-':
    case '2':
    case 'e': {
        if (!eob)
            return MP_SVC_BAD;
        static const char *const names[] = {
            "h", "add header: ",   "m", "change header: ", "i", "insert header: ",
            "b", "replace body: ", "+", "add rcpt: ",      "-", "delete rcpt: ",
            "2", "add rcpt: ",     "e", "change from: "};
        for (size_t i = 0; i < 16; i += 2)
            if (names[i][0] == (char)cmd)
                note_edit(k, names[i + 1], d, cmd == 'b' && n > 64 ? 64 : n);
        k->edits++;
        return MP_SVC_MORE;
    }
    default:
        return MP_SVC_BAD;
    }
}

static int milter_feed(struct mp_svc_conv *c, const uint8_t *p, size_t n, size_t *used)
{
    struct milter_conv *k = (struct milter_conv *)c;
    size_t i = 0;
    *used = 0;
    while (n - i >= 5) {
        uint32_t l = be32(p + i);
        if (l < 1 || l > MP_SVC_MAX_PKT)
            return MP_SVC_BAD;
        if (n - i - 4 < l)
            break;
        int r = on_packet(k, p[i + 4], p + i + 5, l - 1);
        i += 4 + l;
        *used = i;
        if (r != MP_SVC_MORE)
            return r;
    }
    return MP_SVC_MORE;
}

static int milter_eof(struct mp_svc_conv *c)
{
    return MP_SVC_BAD;
}

static void milter_free(struct mp_svc_conv *c)
{
    free(c);
}

static const struct mp_svc_ops milter_ops = {"milter",   milter_begin, milter_feed,
                                             milter_eof, milter_free,  false};

struct mp_svc_conv *mp_svc_milter_new(const struct mp_svc_milter_req *r, const uint8_t *msg,
                                      size_t len)
{
    struct milter_conv *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->c.ops = &milter_ops;
    k->r = *r;
    k->msg = msg;
    k->len = len;
    long hl = mp_svc_head_len(msg, len, len + 1);
    k->hlen = hl > 0 ? (size_t)hl : len;
    k->body = msg + k->hlen;
    k->blen = len - k->hlen;
    return &k->c;
}
