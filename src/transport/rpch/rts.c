/* RTS PDU codec (MS-RPCH 2.2.3.5 commands, 2.2.3.6 header, 2.2.4 PDUs). */
#include "transport/rpch/rts.h"

#include <string.h>

#include "dcerpc/pdu.h"

/* Fixed body size of each command after its 4-byte type; -1: variable
 * (Padding, ClientAddress). */
static const int cmd_body[MP_RTS_CMD_TYPES] = {
    [MP_RTS_RECEIVE_WINDOW_SIZE] = 4,
    [MP_RTS_FLOW_CONTROL_ACK] = 24,
    [MP_RTS_CONNECTION_TIMEOUT] = 4,
    [MP_RTS_COOKIE] = 16,
    [MP_RTS_CHANNEL_LIFETIME] = 4,
    [MP_RTS_CLIENT_KEEPALIVE] = 4,
    [MP_RTS_VERSION] = 4,
    [MP_RTS_EMPTY] = 0,
    [MP_RTS_PADDING] = -1,
    [MP_RTS_NEGATIVE_ANCE] = 0,
    [MP_RTS_ANCE] = 0,
    [MP_RTS_CLIENT_ADDRESS] = -1,
    [MP_RTS_ASSOCIATION_GROUP_ID] = 16,
    [MP_RTS_DESTINATION] = 4,
    [MP_RTS_PING_TRAFFIC_SENT_NOTIFY] = 4,
};

static const char *const cmd_names[MP_RTS_CMD_TYPES] = {
    "ReceiveWindowSize",
    "FlowControlAck",
    "ConnectionTimeout",
    "Cookie",
    "ChannelLifetime",
    "ClientKeepalive",
    "Version",
    "Empty",
    "Padding",
    "NegativeANCE",
    "ANCE",
    "ClientAddress",
    "AssociationGroupId",
    "Destination",
    "PingTrafficSentNotify",
};

const char *mp_rts_cmd_name(uint32_t type)
{
    return type < MP_RTS_CMD_TYPES ? cmd_names[type] : "unknown";
}

/* Decodes the command at p (avail bytes); returns its size or 0. */
static size_t decode_cmd(const uint8_t *p, size_t avail, struct mp_rts_cmd *c, const char **err)
{
    if (avail < 4) {
        *err = "command truncated";
        return 0;
    }
    memset(c, 0, sizeof(*c));
    c->type = mp_get32(p);
    if (c->type >= MP_RTS_CMD_TYPES) {
        *err = "unknown RTS command";
        return 0;
    }
    p += 4;
    avail -= 4;
    size_t body;
    switch (c->type) {
    case MP_RTS_PADDING:
        if (avail < 4) {
            *err = "Padding command truncated";
            return 0;
        }
        c->v.padding.count = mp_get32(p);
        if (c->v.padding.count > MP_RTS_MAX_PADDING || c->v.padding.count > avail - 4) {
            *err = "Padding count beyond the PDU";
            return 0;
        }
        c->v.padding.bytes = p + 4;
        return 4 + 4 + c->v.padding.count;
    case MP_RTS_CLIENT_ADDRESS: {
        if (avail < 4) {
            *err = "ClientAddress command truncated";
            return 0;
        }
        c->v.client_address.type = mp_get32(p);
        size_t alen = c->v.client_address.type == 0 ? 4 : c->v.client_address.type == 1 ? 16 : 0;
        if (!alen) {
            *err = "ClientAddress of unknown type";
            return 0;
        }
        body = 4 + alen + 12; /* type, address, 12 bytes of padding (2.2.3.2) */
        if (avail < body) {
            *err = "ClientAddress command truncated";
            return 0;
        }
        memcpy(c->v.client_address.addr, p + 4, alen);
        return 4 + body;
    }
    default:
        break;
    }
    body = (size_t)cmd_body[c->type];
    if (avail < body) {
        *err = "command truncated";
        return 0;
    }
    switch (c->type) {
    case MP_RTS_FLOW_CONTROL_ACK:
        c->v.ack.bytes_received = mp_get32(p);
        c->v.ack.available_window = mp_get32(p + 4);
        memcpy(c->v.ack.channel.b, p + 8, 16);
        break;
    case MP_RTS_COOKIE:
    case MP_RTS_ASSOCIATION_GROUP_ID:
        memcpy(c->v.cookie.b, p, 16);
        break;
    default:
        if (body == 4)
            c->v.u32 = mp_get32(p);
        break;
    }
    return 4 + body;
}

const char *mp_rts_decode(const uint8_t *p, size_t len, struct mp_rts_pdu *out)
{
    struct mp_pdu_hdr h;
    const char *err = mp_pdu_hdr_check(p, len, &h);
    if (err)
        return err;
    if (h.ptype != MP_PT_RTS)
        return "not an RTS PDU";
    if (h.frag_len != len)
        return "frag_length does not match the PDU";
    if (len < MP_RTS_HDR_LEN)
        return "RTS PDU shorter than its header";
    /* 2.2.3.6.1: never fragmented, no auth, call_id 0 */
    if ((h.flags & (MP_PFC_FIRST | MP_PFC_LAST)) != (MP_PFC_FIRST | MP_PFC_LAST) ||
        (h.flags & ~(MP_PFC_FIRST | MP_PFC_LAST)))
        return "RTS PDU with PFC flags other than FIRST|LAST";
    if (h.auth_len)
        return "RTS PDU with auth_length";
    if (h.call_id)
        return "RTS PDU with a call_id";
    out->flags = mp_get16(p + 16);
    out->ncmds = mp_get16(p + 18);
    if (out->ncmds > MP_RTS_MAX_CMDS)
        return "too many RTS commands";
    size_t off = MP_RTS_HDR_LEN;
    for (unsigned i = 0; i < out->ncmds; i++) {
        size_t n = decode_cmd(p + off, len - off, &out->cmd[i], &err);
        if (!n)
            return err;
        off += n;
    }
    if (off != len)
        return "bytes after the last RTS command";
    return NULL;
}

static size_t cmd_len(const struct mp_rts_cmd *c)
{
    if (c->type >= MP_RTS_CMD_TYPES)
        return 0;
    if (c->type == MP_RTS_PADDING)
        return c->v.padding.count <= MP_RTS_MAX_PADDING ? 8 + (size_t)c->v.padding.count : 0;
    if (c->type == MP_RTS_CLIENT_ADDRESS)
        return c->v.client_address.type == 0   ? 4 + 4 + 4 + 12
               : c->v.client_address.type == 1 ? 4 + 4 + 16 + 12
                                               : 0;
    return 4 + (size_t)cmd_body[c->type];
}

size_t mp_rts_encoded_len(const struct mp_rts_pdu *pdu)
{
    if (pdu->ncmds > MP_RTS_MAX_CMDS)
        return 0;
    size_t n = MP_RTS_HDR_LEN;
    for (unsigned i = 0; i < pdu->ncmds; i++) {
        size_t c = cmd_len(&pdu->cmd[i]);
        if (!c)
            return 0;
        n += c;
    }
    return n <= 0xffff ? n : 0;
}

size_t mp_rts_encode(const struct mp_rts_pdu *pdu, uint8_t *out, size_t cap)
{
    size_t total = mp_rts_encoded_len(pdu);
    if (!total || total > cap)
        return 0;
    memset(out, 0, total);
    out[0] = 5;
    out[1] = 0;
    out[2] = MP_PT_RTS;
    out[3] = MP_PFC_FIRST | MP_PFC_LAST;
    out[4] = 0x10; /* little-endian, ASCII, IEEE */
    mp_put16(out + 8, (uint16_t)total);
    mp_put16(out + 16, pdu->flags);
    mp_put16(out + 18, pdu->ncmds);
    uint8_t *p = out + MP_RTS_HDR_LEN;
    for (unsigned i = 0; i < pdu->ncmds; i++) {
        const struct mp_rts_cmd *c = &pdu->cmd[i];
        mp_put32(p, c->type);
        uint8_t *b = p + 4;
        switch (c->type) {
        case MP_RTS_FLOW_CONTROL_ACK:
            mp_put32(b, c->v.ack.bytes_received);
            mp_put32(b + 4, c->v.ack.available_window);
            memcpy(b + 8, c->v.ack.channel.b, 16);
            break;
        case MP_RTS_COOKIE:
        case MP_RTS_ASSOCIATION_GROUP_ID:
            memcpy(b, c->v.cookie.b, 16);
            break;
        case MP_RTS_PADDING:
            mp_put32(b, c->v.padding.count);
            if (c->v.padding.bytes)
                memcpy(b + 4, c->v.padding.bytes, c->v.padding.count);
            break;
        case MP_RTS_CLIENT_ADDRESS:
            mp_put32(b, c->v.client_address.type);
            memcpy(b + 4, c->v.client_address.addr, c->v.client_address.type ? 16 : 4);
            break;
        default:
            if (cmd_body[c->type] == 4)
                mp_put32(b, c->v.u32);
            break;
        }
        p += cmd_len(c);
    }
    return total;
}

/* --- 2.2.4: the PDUs by flags and command sequence ---------------------- */

#define RW MP_RTS_RECEIVE_WINDOW_SIZE
#define FA MP_RTS_FLOW_CONTROL_ACK
#define CT MP_RTS_CONNECTION_TIMEOUT
#define CK MP_RTS_COOKIE
#define LT MP_RTS_CHANNEL_LIFETIME
#define KA MP_RTS_CLIENT_KEEPALIVE
#define VE MP_RTS_VERSION
#define EM MP_RTS_EMPTY
#define NA MP_RTS_NEGATIVE_ANCE
#define AN MP_RTS_ANCE
#define CA MP_RTS_CLIENT_ADDRESS
#define AG MP_RTS_ASSOCIATION_GROUP_ID
#define DE MP_RTS_DESTINATION
#define PT MP_RTS_PING_TRAFFIC_SENT_NOTIFY

struct shape {
    enum mp_rts_kind kind;
    const char *name;
    uint16_t flags;
    uint8_t n;
    uint8_t cmds[MP_RTS_MAX_CMDS];
};

static const struct shape shapes[] = {
    {MP_RTS_CONN_A1, "CONN/A1", MP_RTS_FLAG_NONE, 4, {VE, CK, CK, RW}},
    {MP_RTS_CONN_A2, "CONN/A2", MP_RTS_FLAG_OUT_CHANNEL, 5, {VE, CK, CK, LT, RW}},
    {MP_RTS_CONN_A3, "CONN/A3", MP_RTS_FLAG_NONE, 1, {CT}},
    {MP_RTS_CONN_B1, "CONN/B1", MP_RTS_FLAG_NONE, 6, {VE, CK, CK, LT, KA, AG}},
    {MP_RTS_CONN_B2, "CONN/B2", MP_RTS_FLAG_IN_CHANNEL, 7, {VE, CK, CK, RW, CT, AG, CA}},
    {MP_RTS_CONN_B3, "CONN/B3", MP_RTS_FLAG_NONE, 2, {RW, VE}},
    {MP_RTS_CONN_C1, "CONN/C1", MP_RTS_FLAG_NONE, 3, {VE, RW, CT}},
    {MP_RTS_IN_R1_A1, "IN_R1/A1", MP_RTS_FLAG_RECYCLE_CHANNEL, 4, {VE, CK, CK, CK}},
    {MP_RTS_IN_R1_A2,
     "IN_R1/A2",
     MP_RTS_FLAG_IN_CHANNEL | MP_RTS_FLAG_RECYCLE_CHANNEL,
     6,
     {VE, CK, CK, CK, RW, CT}},
    {MP_RTS_IN_R1_A3, "IN_R1/A3", MP_RTS_FLAG_NONE, 4, {DE, VE, RW, CT}},
    {MP_RTS_IN_R1_A5, "IN_R1/A5", MP_RTS_FLAG_NONE, 1, {CK}},
    {MP_RTS_IN_R2_A2,
     "IN_R2/A2",
     MP_RTS_FLAG_IN_CHANNEL | MP_RTS_FLAG_RECYCLE_CHANNEL,
     4,
     {VE, CK, CK, CK}},
    {MP_RTS_IN_R2_A3, "IN_R2/A3", MP_RTS_FLAG_NONE, 1, {DE}},
    {MP_RTS_OUT_R1_A1, "OUT_R1/A1", MP_RTS_FLAG_RECYCLE_CHANNEL, 1, {DE}},
    {MP_RTS_OUT_R1_A3, "OUT_R1/A3", MP_RTS_FLAG_RECYCLE_CHANNEL, 5, {VE, CK, CK, CK, RW}},
    {MP_RTS_OUT_R1_A4,
     "OUT_R1/A4",
     MP_RTS_FLAG_RECYCLE_CHANNEL | MP_RTS_FLAG_OUT_CHANNEL,
     7,
     {VE, CK, CK, CK, LT, RW, CT}},
    {MP_RTS_OUT_R1_A5, "OUT_R1/A5", MP_RTS_FLAG_OUT_CHANNEL, 3, {DE, VE, CT}},
    {MP_RTS_OUT_R1_A7, "OUT_R1/A7", MP_RTS_FLAG_OUT_CHANNEL, 3, {DE, CK, VE}},
    {MP_RTS_OUT_R1_A8, "OUT_R1/A8", MP_RTS_FLAG_OUT_CHANNEL, 2, {DE, CK}},
    {MP_RTS_OUT_R1_A9, "OUT_R1/A9", MP_RTS_FLAG_NONE, 1, {AN}},
    {MP_RTS_OUT_R2_A5, "OUT_R2/A5", MP_RTS_FLAG_NONE, 2, {DE, AN}},
    {MP_RTS_OUT_R2_B2, "OUT_R2/B2", MP_RTS_FLAG_NONE, 1, {NA}},
    {MP_RTS_OUT_R2_B3, "OUT_R2/B3", MP_RTS_FLAG_EOF, 1, {AN}},
    {MP_RTS_OUT_R2_C1, "OUT_R2/C1", MP_RTS_FLAG_PING, 1, {EM}},
    {MP_RTS_KEEP_ALIVE, "Keep-Alive", MP_RTS_FLAG_OTHER_CMD, 1, {KA}},
    {MP_RTS_PING_TRAFFIC_SENT, "PingTrafficSentNotify", MP_RTS_FLAG_OTHER_CMD, 1, {PT}},
    {MP_RTS_ECHO, "Echo", MP_RTS_FLAG_ECHO, 0, {0}},
    {MP_RTS_PING, "Ping", MP_RTS_FLAG_PING, 0, {0}},
    {MP_RTS_FLOW_CONTROL_ACK_PDU, "FlowControlAck", MP_RTS_FLAG_OTHER_CMD, 1, {FA}},
    {MP_RTS_FLOW_CONTROL_ACK_DEST,
     "FlowControlAckWithDestination",
     MP_RTS_FLAG_OTHER_CMD,
     2,
     {DE, FA}},
};

enum mp_rts_kind mp_rts_identify(const struct mp_rts_pdu *pdu)
{
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const struct shape *s = &shapes[i];
        if (s->flags != pdu->flags || s->n != pdu->ncmds)
            continue;
        unsigned j = 0;
        while (j < s->n && pdu->cmd[j].type == s->cmds[j])
            j++;
        if (j == s->n)
            return s->kind;
    }
    return MP_RTS_UNKNOWN;
}

const char *mp_rts_kind_name(enum mp_rts_kind k)
{
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
        if (shapes[i].kind == k)
            return shapes[i].name;
    return "unknown RTS PDU";
}

const struct mp_rts_cmd *mp_rts_find(const struct mp_rts_pdu *pdu, uint32_t type)
{
    for (unsigned i = 0; i < pdu->ncmds && i < MP_RTS_MAX_CMDS; i++)
        if (pdu->cmd[i].type == type)
            return &pdu->cmd[i];
    return NULL;
}

static void set_u32(struct mp_rts_cmd *c, uint32_t type, uint32_t v)
{
    memset(c, 0, sizeof(*c));
    c->type = type;
    c->v.u32 = v;
}

void mp_rts_conn_a3(struct mp_rts_pdu *pdu, uint32_t conn_timeout)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->ncmds = 1;
    set_u32(&pdu->cmd[0], MP_RTS_CONNECTION_TIMEOUT, conn_timeout);
}

void mp_rts_conn_c2(struct mp_rts_pdu *pdu, uint32_t version, uint32_t recv_window,
                    uint32_t conn_timeout)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->ncmds = 3;
    set_u32(&pdu->cmd[0], MP_RTS_VERSION, version);
    set_u32(&pdu->cmd[1], MP_RTS_RECEIVE_WINDOW_SIZE, recv_window);
    set_u32(&pdu->cmd[2], MP_RTS_CONNECTION_TIMEOUT, conn_timeout);
}

void mp_rts_in_r1_a4(struct mp_rts_pdu *pdu, uint32_t version, uint32_t recv_window,
                     uint32_t conn_timeout)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->ncmds = 4;
    set_u32(&pdu->cmd[0], MP_RTS_DESTINATION, MP_RTS_FD_CLIENT);
    set_u32(&pdu->cmd[1], MP_RTS_VERSION, version);
    set_u32(&pdu->cmd[2], MP_RTS_RECEIVE_WINDOW_SIZE, recv_window);
    set_u32(&pdu->cmd[3], MP_RTS_CONNECTION_TIMEOUT, conn_timeout);
}

void mp_rts_out_r1_a2(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_RECYCLE_CHANNEL;
    pdu->ncmds = 1;
    set_u32(&pdu->cmd[0], MP_RTS_DESTINATION, MP_RTS_FD_CLIENT);
}

void mp_rts_out_r1_a6(struct mp_rts_pdu *pdu, uint32_t version, uint32_t conn_timeout)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_OUT_CHANNEL;
    pdu->ncmds = 3;
    set_u32(&pdu->cmd[0], MP_RTS_DESTINATION, MP_RTS_FD_CLIENT);
    set_u32(&pdu->cmd[1], MP_RTS_VERSION, version);
    set_u32(&pdu->cmd[2], MP_RTS_CONNECTION_TIMEOUT, conn_timeout);
}

void mp_rts_out_r1_a10(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->ncmds = 1;
    pdu->cmd[0].type = MP_RTS_ANCE;
}

void mp_rts_out_r2_a6(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->ncmds = 2;
    pdu->cmd[0].type = MP_RTS_DESTINATION;
    pdu->cmd[0].v.u32 = MP_RTS_FD_CLIENT;
    pdu->cmd[1].type = MP_RTS_ANCE;
}

void mp_rts_out_r2_b3(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_EOF;
    pdu->ncmds = 1;
    pdu->cmd[0].type = MP_RTS_ANCE;
}

void mp_rts_out_r2_c1(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_PING;
    pdu->ncmds = 1;
    pdu->cmd[0].type = MP_RTS_EMPTY;
}

void mp_rts_ping(struct mp_rts_pdu *pdu)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_PING;
}

void mp_rts_flow_ack(struct mp_rts_pdu *pdu, int with_destination, uint32_t destination,
                     uint32_t bytes_received, uint32_t available_window,
                     const struct mp_rts_cookie *channel)
{
    memset(pdu, 0, sizeof(*pdu));
    pdu->flags = MP_RTS_FLAG_OTHER_CMD;
    unsigned i = 0;
    if (with_destination)
        set_u32(&pdu->cmd[i++], MP_RTS_DESTINATION, destination);
    struct mp_rts_cmd *c = &pdu->cmd[i++];
    c->type = MP_RTS_FLOW_CONTROL_ACK;
    c->v.ack.bytes_received = bytes_received;
    c->v.ack.available_window = available_window;
    c->v.ack.channel = *channel;
    pdu->ncmds = (uint16_t)i;
}
