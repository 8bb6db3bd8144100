/* RPC over HTTP v2 RTS PDUs (MS-RPCH 2.2.3, 2.2.4): the commands of
 * 2.2.3.5, a bounds-checked decoder, an encoder, and the naming of a
 * decoded PDU after the sequences of 2.2.4. */
#ifndef MP_RPCH_RTS_H
#define MP_RPCH_RTS_H
#include <stddef.h>
#include <stdint.h>

#define MP_RTS_HDR_LEN 20 /* the CO common header + Flags + NumberOfCommands */

/* 2.2.3.6.1 RTS header flags */
#define MP_RTS_FLAG_NONE 0x0000
#define MP_RTS_FLAG_PING 0x0001
#define MP_RTS_FLAG_OTHER_CMD 0x0002
#define MP_RTS_FLAG_RECYCLE_CHANNEL 0x0004
#define MP_RTS_FLAG_IN_CHANNEL 0x0008
#define MP_RTS_FLAG_OUT_CHANNEL 0x0010
#define MP_RTS_FLAG_EOF 0x0020
#define MP_RTS_FLAG_ECHO 0x0040

/* 2.2.3.3 forward destinations */
#define MP_RTS_FD_CLIENT 0
#define MP_RTS_FD_IN_PROXY 1
#define MP_RTS_FD_SERVER 2
#define MP_RTS_FD_OUT_PROXY 3

/* 2.2.3.5 command types */
enum mp_rts_cmd_type {
    MP_RTS_RECEIVE_WINDOW_SIZE = 0,
    MP_RTS_FLOW_CONTROL_ACK = 1,
    MP_RTS_CONNECTION_TIMEOUT = 2,
    MP_RTS_COOKIE = 3,
    MP_RTS_CHANNEL_LIFETIME = 4,
    MP_RTS_CLIENT_KEEPALIVE = 5,
    MP_RTS_VERSION = 6,
    MP_RTS_EMPTY = 7,
    MP_RTS_PADDING = 8,
    MP_RTS_NEGATIVE_ANCE = 9,
    MP_RTS_ANCE = 10,
    MP_RTS_CLIENT_ADDRESS = 11,
    MP_RTS_ASSOCIATION_GROUP_ID = 12,
    MP_RTS_DESTINATION = 13,
    MP_RTS_PING_TRAFFIC_SENT_NOTIFY = 14,
    MP_RTS_CMD_TYPES
};

/* 2.2.3.5.2: ReceiveWindowSize between 8 KiB and 256 KiB */
#define MP_RTS_MIN_WINDOW 0x2000u
#define MP_RTS_MAX_WINDOW 0x40000u
/* 2.2.3.5.3: ConnectionTimeout 120,000 through 14,400,000 ms */
#define MP_RTS_MIN_CONN_TIMEOUT 120000u
#define MP_RTS_MAX_CONN_TIMEOUT 14400000u
/* 2.2.3.5.5: ChannelLifetime 128 KiB through 2 GiB */
#define MP_RTS_MIN_LIFETIME 0x20000u
#define MP_RTS_MAX_LIFETIME 0x80000000u
/* 2.2.3.5.6: ClientKeepalive 0 (= 300,000) or at least 60,000 ms */
#define MP_RTS_MIN_KEEPALIVE 60000u
#define MP_RTS_DEFAULT_KEEPALIVE 300000u
/* 2.2.3.5.9: at most this many padding bytes are accepted */
#define MP_RTS_MAX_PADDING 0xffffu

struct mp_rts_cookie {
    uint8_t b[16];
};

struct mp_rts_cmd {
    uint32_t type; /* enum mp_rts_cmd_type */
    union {
        /* ReceiveWindowSize, ConnectionTimeout, ChannelLifetime,
         * ClientKeepalive, Version, Destination, PingTrafficSentNotify */
        uint32_t u32;
        struct mp_rts_cookie cookie; /* Cookie, AssociationGroupId */
        struct {
            uint32_t bytes_received, available_window;
            struct mp_rts_cookie channel;
        } ack; /* FlowControlAck (2.2.3.4) */
        struct {
            uint32_t count;
            const uint8_t *bytes; /* decode: points into the input; encode: NULL = zeros */
        } padding;
        struct {
            uint32_t type; /* 0 IPv4 (4 bytes), 1 IPv6 (16 bytes) */
            uint8_t addr[16];
        } client_address; /* 2.2.3.2 */
    } v;
};

#define MP_RTS_MAX_CMDS 8 /* the longest PDU of 2.2.4 has 7 commands */

struct mp_rts_pdu {
    uint16_t flags;
    uint16_t ncmds;
    struct mp_rts_cmd cmd[MP_RTS_MAX_CMDS];
};

/* Decodes one whole RTS PDU (p[0..len), len = frag_length): common header
 * checks of 2.2.3.6.1, then every command with its size checked against
 * frag_length.  Returns NULL or why the PDU is refused. */
const char *mp_rts_decode(const uint8_t *p, size_t len, struct mp_rts_pdu *out);

/* Encoded size of pdu, 0 when it cannot be encoded (unknown command). */
size_t mp_rts_encoded_len(const struct mp_rts_pdu *pdu);
/* Writes pdu into out (cap bytes); returns its length, 0 if it does not fit. */
size_t mp_rts_encode(const struct mp_rts_pdu *pdu, uint8_t *out, size_t cap);

/* The PDUs of 2.2.4, named by flags and command sequence.  Several share a
 * layout (IN_R1/A1 and IN_R2/A1, OUT_R1/A2 and OUT_R2/A2, ...): the
 * identification gives the first; who may send which is the state
 * machine's business. */
enum mp_rts_kind {
    MP_RTS_UNKNOWN = 0,
    MP_RTS_CONN_A1,
    MP_RTS_CONN_A2,
    MP_RTS_CONN_A3,
    MP_RTS_CONN_B1,
    MP_RTS_CONN_B2,
    MP_RTS_CONN_B3,
    MP_RTS_CONN_C1,  /* also CONN/C2: same layout */
    MP_RTS_IN_R1_A1, /* also IN_R2/A1 */
    MP_RTS_IN_R1_A2,
    MP_RTS_IN_R1_A3, /* also IN_R1/A4 */
    MP_RTS_IN_R1_A5, /* also IN_R1/A6, IN_R2/A5, OUT_R2/A4: one Cookie */
    MP_RTS_IN_R2_A2,
    MP_RTS_IN_R2_A3,  /* also IN_R2/A4: Destination only */
    MP_RTS_OUT_R1_A1, /* also OUT_R1/A2, OUT_R2/A1, OUT_R2/A2 */
    MP_RTS_OUT_R1_A3, /* also OUT_R2/A3 */
    MP_RTS_OUT_R1_A4,
    MP_RTS_OUT_R1_A5, /* also OUT_R1/A6 */
    MP_RTS_OUT_R1_A7, /* also OUT_R2/A7 */
    MP_RTS_OUT_R1_A8, /* also OUT_R2/A8 */
    MP_RTS_OUT_R1_A9, /* also A10, A11, OUT_R2/B1: ANCE */
    MP_RTS_OUT_R2_A5, /* also OUT_R2/A6: Destination + ANCE */
    MP_RTS_OUT_R2_B2, /* NegativeANCE */
    MP_RTS_OUT_R2_B3, /* EOF flag, ANCE */
    MP_RTS_OUT_R2_C1, /* PING flag, Empty */
    MP_RTS_KEEP_ALIVE,
    MP_RTS_PING_TRAFFIC_SENT,
    MP_RTS_ECHO,
    MP_RTS_PING,
    MP_RTS_FLOW_CONTROL_ACK_PDU,
    MP_RTS_FLOW_CONTROL_ACK_DEST,
    MP_RTS_KINDS
};

enum mp_rts_kind mp_rts_identify(const struct mp_rts_pdu *pdu);
const char *mp_rts_kind_name(enum mp_rts_kind k);
const char *mp_rts_cmd_name(uint32_t type);

/* Builders for what the proxy sends (they fill pdu; encode it after). */
void mp_rts_conn_a3(struct mp_rts_pdu *pdu, uint32_t conn_timeout);
void mp_rts_conn_c2(struct mp_rts_pdu *pdu, uint32_t version, uint32_t recv_window,
                    uint32_t conn_timeout);
void mp_rts_ping(struct mp_rts_pdu *pdu);
/* OUT_R1/A2 (2.2.4.24): RECYCLE_CHANNEL, Destination FDClient. */
void mp_rts_out_r1_a2(struct mp_rts_pdu *pdu);
/* OUT_R1/A6 (2.2.4.28, the layout of OUT_R1/A5): OUT_CHANNEL, Destination
 * FDClient, Version, ConnectionTimeout. */
void mp_rts_out_r1_a6(struct mp_rts_pdu *pdu, uint32_t version, uint32_t conn_timeout);
/* OUT_R1/A10 (2.2.4.32): ANCE. */
void mp_rts_out_r1_a10(struct mp_rts_pdu *pdu);
/* OUT_R2/A6 (2.2.4.39): Destination FDClient, ANCE. */
void mp_rts_out_r2_a6(struct mp_rts_pdu *pdu);
/* OUT_R2/B3 (2.2.4.44): EOF, ANCE: the predecessor OUT channel's last PDU. */
void mp_rts_out_r2_b3(struct mp_rts_pdu *pdu);
/* OUT_R2/C1 (2.2.4.45): PING, Empty: the client's last PDU on the
 * successor OUT channel in OUT_R2, the size of OUT_R1/A11 (24 bytes). */
void mp_rts_out_r2_c1(struct mp_rts_pdu *pdu);
/* IN_R1/A4 (2.2.4.13, the layout of IN_R1/A3): Destination FDClient,
 * Version, the inbound proxy's ReceiveWindowSize and ConnectionTimeout. */
void mp_rts_in_r1_a4(struct mp_rts_pdu *pdu, uint32_t version, uint32_t recv_window,
                     uint32_t conn_timeout);
void mp_rts_flow_ack(struct mp_rts_pdu *pdu, int with_destination, uint32_t destination,
                     uint32_t bytes_received, uint32_t available_window,
                     const struct mp_rts_cookie *channel);
/* Finds the first command of that type; NULL if none. */
const struct mp_rts_cmd *mp_rts_find(const struct mp_rts_pdu *pdu, uint32_t type);

#endif
