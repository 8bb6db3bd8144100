/* RPC over HTTP v2 virtual connection, proxy side (MS-RPCH 3.2.3 inbound
 * proxy + 3.2.4 outbound proxy, terminated: the proxy is the client's RPC
 * over HTTP peer and the inner DCE/RPC PDUs go to an association).
 *
 * No I/O here: the HTTP front hands over the bodies of the RPC_IN_DATA and
 * RPC_OUT_DATA requests as they arrive; the virtual connection answers with
 * bytes for the OUT channel (out_q) and inner PDUs for the association
 * (up_q), and takes the association's PDUs for the client
 * (mp_rpch_vc_from_server).  Every error is a string for the log line; the
 * caller then closes both channels. */
#ifndef MP_RPCH_VCONN_H
#define MP_RPCH_VCONN_H
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "transport/rpch/rts.h"

enum mp_rpch_state {
    MP_RPCH_WAIT_CHANNELS, /* one of CONN/A1, CONN/B1 seen */
    MP_RPCH_OPEN,          /* CONN/C2 sent: PDUs flow */
    MP_RPCH_CLOSED,
};

struct mp_rpch_limits {
    uint32_t recv_window;  /* ours, for the IN channel (CONN/C2) */
    uint32_t conn_timeout; /* ms, CONN/A3 and CONN/C2 */
    uint64_t max_pending;  /* bytes held for the client beyond its window */
    uint64_t out_length;   /* the OUT channel answer's Content-Length (0: 1 GiB) */
};

struct mp_rpch_vc {
    enum mp_rpch_state state;
    struct mp_rpch_limits lim;
    bool have_a1, have_b1;
    struct mp_rts_cookie vc_cookie, in_cookie, out_cookie, assoc_group;
    uint32_t version, keepalive, lifetime;
    /* OUT channel, toward the client: its window (CONN/A1, FlowControlAck) */
    uint64_t out_sent, out_acked;
    uint32_t out_window;
    /* IN channel, from the client */
    uint64_t in_received, in_consumed, in_acked;
    uint64_t in_limit;    /* the most in_received may reach: in_consumed at our last ack + window */
    uint64_t in_left;     /* Content-Length of RPC_IN_DATA not yet consumed */
    struct mp_buf in_acc; /* partial PDU of the IN channel */
    struct mp_buf out_q;  /* bytes to write on the OUT channel */
    struct mp_buf held;   /* server PDUs waiting for the client's window */
    struct mp_buf up_q;   /* inner PDUs for the association, whole PDUs */
    /* IN channel recycling (3.2.3.5.x, IN_R1): the successor channel named
     * by IN_R1/A1 waits, its bytes held in in_next_acc, until IN_R1/A5 on
     * the predecessor; then it is the IN channel. */
    bool in_recycling;
    bool in_switched; /* set on the switch; the caller clears it */
    bool in_a5;       /* IN_R1/A5 just decoded */
    struct mp_rts_cookie in_next_cookie;
    uint64_t in_next_left;     /* the successor's Content-Length not yet consumed */
    struct mp_buf in_next_acc; /* the successor's bytes before the switch */
    uint64_t in_base;          /* in_received when the current IN channel began */
    unsigned in_recycles;
    /* OUT channel recycling (OUT_R2, as the outbound proxy that finds the
     * virtual connection, MS-RPCH 3.2.4.5.6.1): out_chan_sent counts what the
     * current OUT channel carried; before an RPC PDU would leave too little
     * of its Content-Length, OUT_R2/A2 goes out and RPC PDUs wait
     * (out_recycling) until OUT_R2/A7 on the IN channel: OUT_R2/B3 is the
     * old channel's last PDU (out_switch: the caller writes out_q to the old
     * channel, then calls mp_rpch_vc_out_switch). */
    uint64_t out_chan_sent;
    bool out_recycling, out_have_a3, out_switch;
    struct mp_rts_cookie out_next_cookie;
    uint32_t out_next_window;
    unsigned out_recycles;
    unsigned pings, keepalives, acks_sent, acks_received;
};

void mp_rpch_vc_init(struct mp_rpch_vc *vc, const struct mp_rpch_limits *lim);
void mp_rpch_vc_free(struct mp_rpch_vc *vc);

/* The first PDU of a channel's body: CONN/A1 or OUT_R1/A3 (*recycle set)
 * on RPC_OUT_DATA, CONN/B1 or IN_R1/A1 (*recycle set) on RPC_IN_DATA.  Reads the cookie without
 * changing anything, for pairing the two channels in a registry. */
const char *mp_rpch_first_cookie(const uint8_t *p, size_t n, bool out_channel,
                                 struct mp_rts_cookie *vc_cookie, bool *recycle);

/* CONN/A1 arrived on the OUT channel: CONN/A3 is queued on out_q. */
const char *mp_rpch_vc_conn_a1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n);
/* CONN/B1 arrived on the IN channel (body length: the request's
 * Content-Length). Once both are in, CONN/C2 is queued: state OPEN. */
const char *mp_rpch_vc_conn_b1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n,
                               uint64_t in_length);
/* IN_R1/A1 arrived on a new RPC_IN_DATA (body length in_length): it names
 * this virtual connection and its IN channel as predecessor.  IN_R1/A4 is
 * queued on out_q (we are the inbound proxy, the server and the outbound
 * proxy at once). */
const char *mp_rpch_vc_in_r1_a1(struct mp_rpch_vc *vc, const uint8_t *p, size_t n,
                                uint64_t in_length);
/* OUT_R1/A2 now (the upstream asked for recycling), unless OUT channel
 * recycling is under way already; RPC PDUs wait for the successor. */
const char *mp_rpch_vc_out_recycle(struct mp_rpch_vc *vc);
/* OUT_R2/A3 (OUT_R1/A3's layout) arrived on a new RPC_OUT_DATA after our
 * OUT_R2/A2: OUT_R2/A6 is queued on out_q (for the predecessor OUT
 * channel). */
const char *mp_rpch_vc_out_r1_a3(struct mp_rpch_vc *vc, const uint8_t *p, size_t n);
/* out_q went to the predecessor OUT channel (OUT_R2/B3 last): the
 * successor is the OUT channel, with its own window; held PDUs move. */
const char *mp_rpch_vc_out_switch(struct mp_rpch_vc *vc);
/* Bytes of the successor IN channel's body before the switch: held. */
const char *mp_rpch_vc_in_next_data(struct mp_rpch_vc *vc, const uint8_t *p, size_t n);
/* More bytes of the IN channel's body (after CONN/B1).  RTS PDUs are
 * handled (FlowControlAck, Ping, Keep-Alive), RPC PDUs go to up_q under
 * our receive window (a client beyond it is refused). */
const char *mp_rpch_vc_in_data(struct mp_rpch_vc *vc, const uint8_t *p, size_t n);
/* n bytes of up_q reached the association: our receive window moves, and
 * after half of it a FlowControlAck is queued on out_q. */
const char *mp_rpch_vc_consumed(struct mp_rpch_vc *vc, size_t n);
/* A whole PDU from the association for the client: to out_q while the
 * client's window allows, otherwise held until its FlowControlAck. */
const char *mp_rpch_vc_from_server(struct mp_rpch_vc *vc, const uint8_t *pdu, size_t n);
struct mp_pdu_hdr;
/* Is a whole PDU at the head of b?  1 (h filled), 0 (not yet), -1 (*err:
 * its header is refused). */
int mp_rpch_next_pdu(const struct mp_buf *b, struct mp_pdu_hdr *h, const char **err);
/* Moves whole PDUs from held to dst while *sent plus their length stays
 * within limit (a flow-control window); *sent grows by what moved.  NULL or
 * "out of memory".  Also the upstream client's (upclient.c). */
const char *mp_rpch_release_held(struct mp_buf *held, struct mp_buf *dst, uint64_t *sent,
                                 uint64_t limit);
/* Queues a Ping on the OUT channel (the keep-alive timer's business). */
void mp_rpch_vc_ping(struct mp_rpch_vc *vc);

#endif
