/* RPC over HTTP v2 termination (MS-RPCH): the channels of the HTTPS front
 * on /rpc/rpcproxy.dll, paired into virtual connections by their cookie;
 * the inner DCE/RPC stream of each virtual connection is one association
 * of the DCE/RPC transport, opened through its carrier seam
 * (transport/dcerpc/carrier.h: no socket in between), so binds,
 * authentication, modules and calls are the ones of ncacn_ip_tcp.
 * doc/internals/rpch.md. */
#ifndef MP_TRANSPORT_RPCH_H
#define MP_TRANSPORT_RPCH_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event/loop.h"

struct mp_rpch;
struct mp_rpch_chan;

struct mp_rpch_opts {
    uint32_t recv_window;     /* bytes; our IN channel window (8 KiB to 256 KiB) */
    uint32_t conn_timeout_ms; /* CONN/A3, CONN/C2; Ping on the OUT channel at half of it */
    uint32_t pair_timeout_ms; /* a channel waits this long for its partner */
    uint64_t max_pending;     /* bytes queued toward the association or the client */
    uint32_t out_length;      /* the OUT channel answer's Content-Length; 0: 1 GiB */
    /* a virtual connection ended (its cookie: 16 bytes), or NULL */
    void (*vc_gone)(const void *cookie);
};

struct mp_dce_carrier_ops;
/* Where a virtual connection's inner DCE/RPC goes: carrier.h's functions.
 * mp_rpch_dce_sink is the relay's (data: the struct mp_relay); the unit
 * tests bring their own. */
struct mp_rpch_sink {
    /* mp_dce_assoc_open: peer for the log, host the client's address */
    void *(*open)(void *data, const struct mp_dce_carrier_ops *ops, void *carrier, const char *peer,
                  const char *host);
    int (*input)(void *assoc, const void *p, size_t n); /* mp_dce_assoc_input */
    void (*writable)(void *assoc);                      /* mp_dce_assoc_writable */
    void (*close)(void *assoc, const char *why);        /* mp_dce_assoc_close */
};
extern const struct mp_rpch_sink mp_rpch_dce_sink;

struct mp_rpch *mp_rpch_new(struct mp_loop *loop, const struct mp_rpch_opts *o,
                            const struct mp_rpch_sink *sink, void *sink_data);
void mp_rpch_free(struct mp_rpch *r);
size_t mp_rpch_count(const struct mp_rpch *r); /* virtual connections */
/* Is the virtual connection of this cookie (16 bytes) one of r's? */
bool mp_rpch_has_vc(struct mp_rpch *r, const void *cookie);

/* What a channel needs from the HTTP session that carries it. */
struct mp_rpch_chan_host {
    /* bytes for the client on this HTTP connection (the OUT channel's
     * response head and body) */
    void (*send)(void *owner, const uint8_t *p, size_t n);
    /* the virtual connection ended (why: for the log line); the session
     * closes its connection and calls mp_rpch_chan_free */
    void (*close)(void *owner, const char *why);
    /* close once what was sent has been written (a predecessor OUT channel
     * after OUT_R1/A10); the channel is detached already */
    void (*close_flushed)(void *owner, const char *why);
};

/* A channel's request head was accepted (method RPC_OUT_DATA when out,
 * RPC_IN_DATA otherwise; content_length its Content-Length). */
struct mp_rpch_chan *mp_rpch_chan_new(struct mp_rpch *r, bool out, const char *peer_host,
                                      uint16_t peer_port, uint64_t content_length,
                                      const struct mp_rpch_chan_host *host, void *owner);
/* Who logged on to the proxy for this channel (terminated logons; "" when
 * the proxy knows nobody): a virtual connection takes channels of its first
 * channel's identity only.  Before its first bytes. */
void mp_rpch_chan_user(struct mp_rpch_chan *c, const char *user);
/* A WWW-Authenticate value for the OUT channel's 200 (the front's Negotiate
 * acceptor token, RFC 4559 5); copied.  0 or -1. */
int mp_rpch_chan_www(struct mp_rpch_chan *c, const char *value);
/* Body bytes of the channel's request.  Returns NULL, or an error (logged
 * by the caller, who then closes). */
const char *mp_rpch_chan_data(struct mp_rpch_chan *c, const uint8_t *p, size_t n);
struct mp_rpch_pin;
/* Pass-through: the client's logon for this channel toward the RPC over
 * HTTP upstream (taken over; upclient.h). */
void mp_rpch_chan_pin(struct mp_rpch_chan *c, struct mp_rpch_pin *pin);
/* The upstream of the virtual connection whose association's carrier is
 * key asked to recycle its OUT channel, which only the client's own logon
 * can do (pass-through NTLM or Negotiate): the client is asked to recycle
 * its OUT channel now (OUT_R1/A2), again after each OUT switch until a
 * successor's logon was taken (mp_rpch_up_successor).  NULL, or why not
 * (no such virtual connection on this thread, an error). */
const char *mp_rpch_up_wants_out_recycling(const void *key);
/* The session is going away: closes the virtual connection's other
 * channel and its association. */
void mp_rpch_chan_free(struct mp_rpch_chan *c);

#endif
