/* RPC over HTTP v2 virtual connection, proxy side: see vconn.h. */
#include "transport/rpch/vconn.h"

#include <string.h>

#include "dcerpc/pdu.h"

void mp_rpch_vc_init(struct mp_rpch_vc *vc, const struct mp_rpch_limits *lim)
{
    memset(vc, 0, sizeof(*vc));
    vc->lim = *lim;
    if (vc->lim.recv_window < MP_RTS_MIN_WINDOW || vc->lim.recv_window > MP_RTS_MAX_WINDOW)
        vc->lim.recv_window = MP_RTS_MAX_WINDOW;
    if (vc->lim.conn_timeout < MP_RTS_MIN_CONN_TIMEOUT ||
        vc->lim.conn_timeout > MP_RTS_MAX_CONN_TIMEOUT)
        vc->lim.conn_timeout = MP_RTS_MIN_CONN_TIMEOUT;
    if (!vc->lim.out_length)
        vc->lim.out_length = 1u << 30;
    vc->state = MP_RPCH_WAIT_CHANNELS;
    vc->in_limit = vc->lim.recv_window;
}

void mp_rpch_vc_free(struct mp_rpch_vc *vc)
{
    mp_buf_free(&vc->in_acc);
    mp_buf_free(&vc->out_q);
    mp_buf_free(&vc->held);
    mp_buf_free(&vc->up_q);
    mp_buf_free(&vc->in_next_acc);
    vc->state = MP_RPCH_CLOSED;
}

static const char *queue_rts(struct mp_rpch_vc *vc, const struct mp_rts_pdu *pdu)
{
    uint8_t b[128];
    size_t n = mp_rts_encode(pdu, b, sizeof(b));
    if (!n || mp_buf_append(&vc->out_q, b, n))
        return "out of memory";
    vc->out_chan_sent += n;
    return NULL;
}

/* Decodes p as the PDU kind wanted. */
static const char *decode_as(const uint8_t *p, size_t n, enum mp_rts_kind want,
                             struct mp_rts_pdu *pdu)
{
    struct mp_pdu_hdr h;
    const char *err = mp_pdu_hdr_check(p, n, &h);
    if (err)
        return err;
    if (h.frag_len != n)
        return "first PDU of the channel has the wrong length";
    if ((err = mp_rts_decode(p, n, pdu)))
        return err;
    if (mp_rts_identify(pdu) != want)
        return want == MP_RTS_CONN_A1 || want == MP_RTS_OUT_R1_A3
                   ? "OUT channel did not start with CONN/A1 or OUT_R1/A3"
                   : "IN channel did not start with CONN/B1 or IN_R1/A1";
    return NULL;
}

const char *mp_rpch_first_cookie(const uint8_t *p, size_t n, bool out_channel,
                                 struct mp_rts_cookie *vc_cookie, bool *recycle)
{
    struct mp_rts_pdu pdu;
    *recycle = false;
    const char *err = decode_as(p, n, out_channel ? MP_RTS_CONN_A1 : MP_RTS_CONN_B1, &pdu);
    if (err && !decode_as(p, n, out_channel ? MP_RTS_OUT_R1_A3 : MP_RTS_IN_R1_A1, &pdu)) {
        err = NULL;
        *recycle = true;
    }
    if (!err)
        *vc_cookie = pdu.cmd[1].v.cookie;
    return err;
}

static const char *maybe_open(struct mp_rpch_vc *vc)
{
    if (!vc->have_a1 || !vc->have_b1)
        return NULL;
    struct mp_rts_pdu c2;
    uint32_t version = vc->version < 1 ? vc->version : 1;
    mp_rts_conn_c2(&c2, version, vc->lim.recv_window, vc->lim.conn_timeout);
    vc->state = MP_RPCH_OPEN;
    return queue_rts(vc, &c2);
}

const char *mp_rpch_vc_conn_a1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n)
{
    struct mp_rts_pdu pdu;
    const char *err = decode_as(p, n, MP_RTS_CONN_A1, &pdu);
    if (err)
        return err;
    if (vc->have_a1)
        return "second CONN/A1 for the virtual connection";
    if (vc->have_b1 && memcmp(&vc->vc_cookie, &pdu.cmd[1].v.cookie, 16) != 0)
        return "CONN/A1 for another virtual connection";
    uint32_t window = pdu.cmd[3].v.u32;
    if (window < MP_RTS_MIN_WINDOW || window > MP_RTS_MAX_WINDOW)
        return "CONN/A1 ReceiveWindowSize out of range";
    vc->vc_cookie = pdu.cmd[1].v.cookie;
    vc->out_cookie = pdu.cmd[2].v.cookie;
    vc->out_window = window;
    vc->version = vc->have_b1 && vc->version < pdu.cmd[0].v.u32 ? vc->version : pdu.cmd[0].v.u32;
    vc->have_a1 = true;
    struct mp_rts_pdu a3;
    mp_rts_conn_a3(&a3, vc->lim.conn_timeout);
    if ((err = queue_rts(vc, &a3)))
        return err;
    return maybe_open(vc);
}

const char *mp_rpch_vc_conn_b1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n,
                               uint64_t in_length)
{
    struct mp_rts_pdu pdu;
    const char *err = decode_as(p, n, MP_RTS_CONN_B1, &pdu);
    if (err)
        return err;
    if (vc->have_b1)
        return "second CONN/B1 for the virtual connection";
    if (vc->have_a1 && memcmp(&vc->vc_cookie, &pdu.cmd[1].v.cookie, 16) != 0)
        return "CONN/B1 for another virtual connection";
    if (in_length < n)
        return "RPC_IN_DATA Content-Length shorter than CONN/B1";
    uint32_t ka = pdu.cmd[4].v.u32;
    if (ka && ka < MP_RTS_MIN_KEEPALIVE)
        return "CONN/B1 ClientKeepalive below 60 s";
    uint32_t life = pdu.cmd[3].v.u32;
    if (life < MP_RTS_MIN_LIFETIME || life > MP_RTS_MAX_LIFETIME)
        return "CONN/B1 ChannelLifetime out of range";
    vc->vc_cookie = pdu.cmd[1].v.cookie;
    vc->in_cookie = pdu.cmd[2].v.cookie;
    vc->lifetime = life;
    vc->keepalive = ka ? ka : MP_RTS_DEFAULT_KEEPALIVE;
    vc->assoc_group = pdu.cmd[5].v.cookie;
    vc->version = vc->have_a1 && vc->version < pdu.cmd[0].v.u32 ? vc->version : pdu.cmd[0].v.u32;
    vc->in_left = in_length - n;
    vc->have_b1 = true;
    return maybe_open(vc);
}

const char *mp_rpch_vc_in_r1_a1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n,
                                uint64_t in_length)
{
    struct mp_rts_pdu pdu;
    const char *err = decode_as(p, n, MP_RTS_IN_R1_A1, &pdu);
    if (err)
        return err;
    if (vc->state != MP_RPCH_OPEN)
        return "IN_R1/A1 before the virtual connection is open";
    if (vc->in_recycling)
        return "IN_R1/A1 while an IN channel is already being recycled";
    if (memcmp(&vc->vc_cookie, &pdu.cmd[1].v.cookie, 16) != 0)
        return "IN_R1/A1 for another virtual connection";
    if (memcmp(&vc->in_cookie, &pdu.cmd[2].v.cookie, 16) != 0)
        return "IN_R1/A1 names another predecessor IN channel";
    if (!memcmp(&vc->in_cookie, &pdu.cmd[3].v.cookie, 16))
        return "IN_R1/A1 successor cookie is the predecessor's";
    if (in_length < n)
        return "RPC_IN_DATA Content-Length shorter than IN_R1/A1";
    vc->in_recycling = true;
    vc->in_next_cookie = pdu.cmd[3].v.cookie;
    vc->in_next_left = in_length - n;
    uint32_t version = vc->version < pdu.cmd[0].v.u32 ? vc->version : pdu.cmd[0].v.u32;
    struct mp_rts_pdu a4;
    mp_rts_in_r1_a4(&a4, version, vc->lim.recv_window, vc->lim.conn_timeout);
    return queue_rts(vc, &a4);
}

const char *mp_rpch_vc_in_next_data(struct mp_rpch_vc *vc, const uint8_t *p, size_t n)
{
    if (!vc->in_recycling)
        return "successor IN channel data after the switch";
    if (n > vc->in_next_left)
        return "IN channel data beyond its Content-Length";
    if (mp_buf_avail(&vc->in_next_acc) + n > vc->lim.max_pending)
        return "successor IN channel sends too much before IN_R1/A5";
    vc->in_next_left -= n;
    if (mp_buf_append(&vc->in_next_acc, p, n))
        return "out of memory";
    return NULL;
}

/* IN_R1/A5 was the last PDU of the predecessor: the successor becomes the
 * IN channel.  Its flow control starts at 0 bytes with a whole window
 * (on top of what the association has not taken yet). */
static const char *in_switch(struct mp_rpch_vc *vc)
{
    if (mp_buf_avail(&vc->in_acc))
        return "data on the predecessor IN channel after IN_R1/A5";
    mp_buf_free(&vc->in_acc);
    vc->in_acc = vc->in_next_acc;
    memset(&vc->in_next_acc, 0, sizeof(vc->in_next_acc));
    vc->in_left = vc->in_next_left;
    vc->in_next_left = 0;
    vc->in_cookie = vc->in_next_cookie;
    vc->in_base = vc->in_received;
    if (vc->in_limit < vc->in_received + vc->lim.recv_window)
        vc->in_limit = vc->in_received + vc->lim.recv_window;
    vc->in_recycling = false;
    vc->in_switched = true;
    vc->in_recycles++;
    return NULL;
}

int mp_rpch_next_pdu(const struct mp_buf *b, struct mp_pdu_hdr *h, const char **err)
{
    if (mp_buf_avail(b) < MP_HDR_LEN)
        return 0;
    if ((*err = mp_pdu_hdr_check(mp_buf_head(b), mp_buf_avail(b), h)))
        return -1;
    return mp_buf_avail(b) >= h->frag_len;
}

const char *mp_rpch_release_held(struct mp_buf *held, struct mp_buf *dst, uint64_t *sent,
                                 uint64_t limit)
{
    while (mp_buf_avail(held) >= MP_HDR_LEN) {
        const uint8_t *p = mp_buf_head(held);
        size_t n = mp_get16(p + 8);
        if (*sent + n > limit)
            break;
        if (mp_buf_append(dst, p, n))
            return "out of memory";
        *sent += n;
        mp_buf_consume(held, n);
    }
    mp_buf_trim(held);
    return NULL;
}

/* Room kept in an OUT channel's Content-Length for RTS PDUs (A2, A6, A10,
 * Pings, FlowControlAcks) once RPC PDUs stop. */
#define OUT_RESERVE 1024u

/* Moves held server PDUs to out_q while the client's window and the OUT
 * channel's Content-Length have room; asks for recycling (OUT_R1/A2) when
 * the channel's length would run out. */
static const char *release_held(struct mp_rpch_vc *vc)
{
    if (vc->out_recycling)
        return NULL; /* plugged until the successor OUT channel */
    uint64_t room = vc->lim.out_length - OUT_RESERVE;
    room = vc->out_chan_sent < room ? room - vc->out_chan_sent : 0;
    uint64_t limit = vc->out_acked + vc->out_window;
    if (limit > vc->out_sent + room)
        limit = vc->out_sent + room;
    uint64_t before = vc->out_sent;
    const char *err = mp_rpch_release_held(&vc->held, &vc->out_q, &vc->out_sent, limit);
    vc->out_chan_sent += vc->out_sent - before;
    if (err || mp_buf_avail(&vc->held) < MP_HDR_LEN)
        return err;
    size_t next = mp_get16(mp_buf_head(&vc->held) + 8);
    if (next + OUT_RESERVE > vc->lim.out_length)
        return "server PDU larger than the OUT channel's Content-Length";
    if (vc->out_chan_sent + next + OUT_RESERVE <= vc->lim.out_length)
        return NULL; /* the client's window, not the channel */
    struct mp_rts_pdu a2;
    mp_rts_out_r1_a2(&a2);
    vc->out_recycling = true;
    return queue_rts(vc, &a2);
}

const char *mp_rpch_vc_out_recycle(struct mp_rpch_vc *vc)
{
    if (vc->state != MP_RPCH_OPEN)
        return "OUT channel recycling asked before the virtual connection is open";
    if (vc->out_recycling)
        return NULL;
    struct mp_rts_pdu a2;
    mp_rts_out_r1_a2(&a2);
    vc->out_recycling = true;
    return queue_rts(vc, &a2);
}

const char *mp_rpch_vc_out_r1_a3(struct mp_rpch_vc *vc, const uint8_t *p, size_t n)
{
    struct mp_rts_pdu pdu;
    const char *err = decode_as(p, n, MP_RTS_OUT_R1_A3, &pdu);
    if (err)
        return err;
    if (vc->state != MP_RPCH_OPEN || !vc->out_recycling)
        return "OUT_R1/A3 without OUT_R1/A2";
    if (vc->out_have_a3)
        return "second OUT_R1/A3 for the virtual connection";
    if (memcmp(&vc->vc_cookie, &pdu.cmd[1].v.cookie, 16) != 0)
        return "OUT_R1/A3 for another virtual connection";
    if (memcmp(&vc->out_cookie, &pdu.cmd[2].v.cookie, 16) != 0)
        return "OUT_R1/A3 names another predecessor OUT channel";
    uint32_t window = pdu.cmd[4].v.u32;
    if (window < MP_RTS_MIN_WINDOW || window > MP_RTS_MAX_WINDOW)
        return "OUT_R1/A3 ReceiveWindowSize out of range";
    vc->out_have_a3 = true;
    vc->out_next_cookie = pdu.cmd[3].v.cookie;
    vc->out_next_window = window;
    /* The outbound proxy finds the virtual connection (we are it, and the
     * server): OUT_R2 (MS-RPCH 3.2.4.5.6.1).  The server's OUT_R2/A5 and
     * the proxy's OUT_R2/A4 are internal; the client gets OUT_R2/A6. */
    struct mp_rts_pdu a6;
    mp_rts_out_r2_a6(&a6);
    return queue_rts(vc, &a6);
}

const char *mp_rpch_vc_out_switch(struct mp_rpch_vc *vc)
{
    vc->out_cookie = vc->out_next_cookie;
    vc->out_window = vc->out_next_window;
    vc->out_sent = vc->out_acked = vc->out_chan_sent = 0;
    vc->out_recycling = vc->out_have_a3 = vc->out_switch = false;
    vc->out_recycles++;
    return release_held(vc);
}

static const char *in_rts(struct mp_rpch_vc *vc, const uint8_t *p, size_t n)
{
    struct mp_rts_pdu pdu;
    const char *err = mp_rts_decode(p, n, &pdu);
    if (err)
        return err;
    const struct mp_rts_cmd *ack;
    switch (mp_rts_identify(&pdu)) {
    case MP_RTS_PING:
        vc->pings++;
        return NULL;
    case MP_RTS_KEEP_ALIVE: {
        uint32_t ka = pdu.cmd[0].v.u32;
        if (ka && ka < MP_RTS_MIN_KEEPALIVE)
            return "Keep-Alive interval below 60 s";
        vc->keepalive = ka ? ka : MP_RTS_DEFAULT_KEEPALIVE;
        vc->keepalives++;
        return NULL;
    }
    case MP_RTS_FLOW_CONTROL_ACK_DEST:
        if (pdu.cmd[0].v.u32 != MP_RTS_FD_OUT_PROXY)
            return "FlowControlAck for a destination other than the outbound proxy";
        ack = &pdu.cmd[1];
        if (memcmp(&ack->v.ack.channel, &vc->out_cookie, 16) != 0)
            return "FlowControlAck for another OUT channel";
        if (ack->v.ack.bytes_received > vc->out_sent ||
            ack->v.ack.bytes_received < (uint32_t)vc->out_acked)
            return "FlowControlAck BytesReceived out of range";
        if (ack->v.ack.available_window > MP_RTS_MAX_WINDOW)
            return "FlowControlAck AvailableWindow out of range";
        /* BytesReceived is a 32-bit counter of the channel's RPC bytes */
        vc->out_acked = (vc->out_acked & ~(uint64_t)0xffffffffu) | ack->v.ack.bytes_received;
        vc->out_window = ack->v.ack.available_window;
        vc->acks_received++;
        return release_held(vc);
    case MP_RTS_IN_R1_A5:
        if (!vc->in_recycling)
            return "IN_R1/A5 without a successor IN channel";
        if (memcmp(&pdu.cmd[0].v.cookie, &vc->in_next_cookie, 16) != 0)
            return "IN_R1/A5 names another successor IN channel";
        vc->in_a5 = true;
        return NULL;
    case MP_RTS_OUT_R1_A7: /* OUT_R2/A7: the same layout */
        if (!vc->out_have_a3)
            return "OUT_R2/A7 without a successor OUT channel";
        if (pdu.cmd[0].v.u32 != MP_RTS_FD_SERVER ||
            memcmp(&pdu.cmd[1].v.cookie, &vc->out_next_cookie, 16) != 0)
            return "OUT_R2/A7 names another successor OUT channel";
        /* OUT_R2/A8 and the server's OUT_R2/B1 are internal: OUT_R2/B3 is
         * the predecessor's last PDU (3.2.4.5.10) */
        vc->out_switch = true;
        struct mp_rts_pdu b3;
        mp_rts_out_r2_b3(&b3);
        return queue_rts(vc, &b3);
    case MP_RTS_IN_R1_A1:
        return "IN_R1/A1 on an open IN channel (recycling starts on a new RPC_IN_DATA)";
    case MP_RTS_OUT_R1_A3:
        return "OUT_R1/A3 on the IN channel";
    default:
        return "unexpected RTS PDU on the IN channel";
    }
}

const char *mp_rpch_vc_in_data(struct mp_rpch_vc *vc, const uint8_t *p, size_t n)
{
    if (vc->state != MP_RPCH_OPEN)
        return "IN channel data before the virtual connection is open";
    if (n > vc->in_left)
        return "IN channel data beyond its Content-Length";
    vc->in_left -= n;
    if (mp_buf_append(&vc->in_acc, p, n))
        return "out of memory";
    struct mp_pdu_hdr h;
    const char *err = NULL;
    int more;
    while ((more = mp_rpch_next_pdu(&vc->in_acc, &h, &err)) > 0) {
        const uint8_t *q = mp_buf_head(&vc->in_acc);
        if (h.ptype == MP_PT_RTS) {
            if ((err = in_rts(vc, q, h.frag_len)))
                return err;
            if (vc->out_switch) { /* the caller moves the OUT channel first */
                mp_buf_consume(&vc->in_acc, h.frag_len);
                return NULL;
            }
            if (vc->in_a5) {
                vc->in_a5 = false;
                mp_buf_consume(&vc->in_acc, h.frag_len);
                if ((err = in_switch(vc)))
                    return err;
                continue;
            }
        } else {
            /* 3.2.1.1.4: RPC PDUs only count against the window */
            vc->in_received += h.frag_len;
            if (vc->in_received > vc->in_limit)
                return "client overran the IN channel's receive window";
            if (mp_buf_append(&vc->up_q, q, h.frag_len))
                return "out of memory";
        }
        mp_buf_consume(&vc->in_acc, h.frag_len);
    }
    mp_buf_trim(&vc->in_acc);
    return more < 0 ? err : NULL;
}

const char *mp_rpch_vc_consumed(struct mp_rpch_vc *vc, size_t n)
{
    vc->in_consumed += n;
    if (vc->in_consumed - vc->in_acked < vc->lim.recv_window / 2)
        return NULL;
    /* BytesReceived, and the room left: what the client may still send is
     * in_consumed + window (2.2.3.4) */
    struct mp_rts_pdu ack;
    uint64_t unconsumed = vc->in_received - vc->in_consumed;
    uint32_t avail =
        unconsumed >= vc->lim.recv_window ? 0 : vc->lim.recv_window - (uint32_t)unconsumed;
    /* BytesReceived counts the current IN channel only */
    mp_rts_flow_ack(&ack, 0, 0, (uint32_t)(vc->in_received - vc->in_base), avail, &vc->in_cookie);
    vc->in_acked = vc->in_consumed;
    if (vc->in_limit < vc->in_consumed + vc->lim.recv_window) /* never lowered */
        vc->in_limit = vc->in_consumed + vc->lim.recv_window;
    vc->acks_sent++;
    return queue_rts(vc, &ack);
}

const char *mp_rpch_vc_from_server(struct mp_rpch_vc *vc, const uint8_t *pdu, size_t n)
{
    if (vc->state != MP_RPCH_OPEN)
        return "server PDU before the virtual connection is open";
    if (n < MP_HDR_LEN || mp_get16(pdu + 8) != n)
        return "server PDU with a wrong frag_length";
    if (mp_buf_avail(&vc->held) + n > vc->lim.max_pending)
        return "client does not acknowledge its OUT channel";
    if (mp_buf_append(&vc->held, pdu, n))
        return "out of memory";
    return release_held(vc);
}

void mp_rpch_vc_ping(struct mp_rpch_vc *vc)
{
    struct mp_rts_pdu ping;
    mp_rts_ping(&ping);
    (void)queue_rts(vc, &ping);
}
