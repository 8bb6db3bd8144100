/* The DCE/RPC transport (ncacn_ip_tcp), inside: the association, its
 * connections and calls, shared by the files of src/transport/dcerpc/.
 * Nothing outside this folder includes it (transport/dcerpc/dcerpc.h is the
 * face).  Vocabulary: doc/internals/architecture.md, "Transports: DCE/RPC".
 *
 *   assoc.c       association lifetime, its connections, I/O, timers, the
 *                 client PDU dispatcher
 *   bind.c        bind and alter_context: presentation contexts, merging the
 *                 upstream's answer into the client's
 *   call.c        calls: the request/response relay (fast path), the module
 *                 chain's host (slow path), the local endpoint mapper's calls
 *   epm_lookup.c  the upstream endpoint mapper lookup and its port cache
 *   group.c       association groups (the modules' session)
 *   terminate.c   the association's side of terminated authentication: the
 *                 PDUs that carry tokens; the security itself is src/auth/
 *                 dcerpc_auth.c, the KDC/winbind worker src/auth/kdc_worker.c
 *   transport.c   listeners, per-address counts, setup and teardown
 *
 * Each client connection is an association (struct assoc) that owns up to
 * three connections: the client's, the upstream's, and, while the upstream
 * port is being looked up, one to the upstream's endpoint mapper (another
 * carrier, carrier.h, replaces the client's; an upstream carrier, the RPC
 * over HTTP upstream client, replaces the upstream's).  All I/O is non-blocking on one
 * epoll loop.  Request and response fragments are streamed: a fragment is
 * forwarded as soon as it is complete, split when it exceeds what the other
 * leg negotiated, so no call is ever buffered whole.  Reading from a leg
 * stops while the other leg's output buffer is above `mapiproxy:max
 * buffer`, so a peer that does not read holds back only its own association.
 *
 * Associations whose client authenticates (an auth verifier in bind or
 * alter_context) are relayed byte for byte: call ids, context ids and
 * fragment sizes stay as the client sent them, because signatures and the
 * verification trailer cover them (transparent mode, MS-RPCE 2.2.2.13).
 *
 * Only the loop thread runs this code (the worker hands results back
 * through the loop).  struct mp_relay keeps its name (it is the DCE/RPC
 * transport) so that main.c and the HTTP front need not change. */
#ifndef MP_TRANSPORT_DCERPC_INTERNAL_H
#define MP_TRANSPORT_DCERPC_INTERNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/dcerpc_auth.h"
#include "auth/dcerpc_sign.h"
#include "auth/gss.h"
#include "auth/kdc_worker.h"
#include "core/buf.h"
#include "core/config.h"
#include "dcerpc/ifaces.h"
#include "dcerpc/pdu.h"
#include "epm/epm.h"
#include "event/loop.h"
#include "chain/chain.h"
#include "net/conn.h"
#include "transport/dcerpc/dcerpc.h"

#define MP_MIN_FRAG 1432     /* smallest allowed by C706 */
#define MAX_CTX 64           /* presentation contexts per association */
#define MAX_PENDING 128      /* calls in flight per association */
#define MAX_LOCAL_STUB 65536 /* reassembly limit for calls the proxy answers itself */
#define PORT_CACHE_TTL_MS 60000
#define READ_CHUNK 65536 /* the transport's scratch buffer for reads (rbuf) */
#define N_GROUP_BUCKETS 1024
#define MAX_CSEC 4 /* client security contexts per connection (terminated) */

enum role { ROLE_CLIENT, ROLE_UPSTREAM, ROLE_RESOLVER };
enum astate {
    A_WAIT_BIND,  /* client connected, no bind yet */
    A_RESOLVING,  /* asking the upstream's endpoint mapper for the port */
    A_CONNECTING, /* connecting to the upstream */
    A_WAIT_ACK,   /* upstream bind sent, waiting for bind_ack */
    A_OPEN,       /* relaying */
    A_LOCAL,      /* no context could be relayed: answering locally */
    A_AUTH,       /* proxy-terminated auth: bind answered, waiting for AUTH3 */
    A_DENIED,     /* the client failed authentication: its calls get access denied */
    A_KDC,        /* authenticated; the KDC worker prepares the upstream's Kerberos leg */
    A_WINBIND,    /* the worker asks winbindd to check the client's NTLM response */
};

/* One connection of an association: the socket and its buffers (n), and
 * which of the association's legs it is. */
struct conn {
    struct mp_conn n;
    struct assoc *a;
    uint8_t role;
    size_t tapped; /* packet export: bytes at the head of n.out already captured (pcap.c) */
};

/* One call: a request and its response, by the client's call id and the
 * upstream's. */
struct call {
    uint32_t c_id, u_id;
    uint16_t ctx_id, opnum;
    uint64_t t0;
    uint32_t in_bytes, out_bytes, frags;
    bool req_done;
    struct mp_dce_sec *sec; /* terminated: the client security context the call came on */
    struct mp_call *m;      /* set when modules want this call (slow path) */
};

/* A presentation context the association accepted. */
struct pctx_entry {
    uint16_t ctx_id;
    bool abstract_known;
    uint8_t uuid[16];
    const struct mp_iface_info *info;
    char name[48];
};

/* How the client's bind or alter_context contexts were split between local
 * answers and the upstream, so the upstream's answer can be merged back. */
struct merge {
    struct merge *next;
    uint8_t ptype;
    uint32_t c_call_id;
    uint8_t n;
    struct {
        bool fwd;
        uint16_t result, reason, ctx_id;
        struct mp_syntax abstract;
    } item[MAX_CTX];
};

struct port_cache {
    struct mp_syntax iface;
    uint16_t port;
    uint64_t expires;
};

/* Connections per client address (mapiproxy:max connections per address). */
#define N_ADDR_BUCKETS 4096
struct addr_count {
    struct addr_count *next;
    uint8_t ip[16]; /* IPv4 as ::ffff:a.b.c.d */
    uint32_t n;
};

struct listener {
    struct mp_io io;
    struct mp_relay *r;
    bool epm;
};

/* A DCE/RPC association: one client connection's binding (presentation
 * contexts, security contexts, calls in flight) and the upstream
 * association relayed for it. */
struct assoc {
    struct mp_relay *r;
    struct conn c, u, res; /* client, upstream, upstream endpoint mapper */
    enum astate state;
    bool local_epm;
    bool steered;    /* handed over by another worker: never handed on */
    unsigned load_w; /* 1 + the worker whose n_open_w counts it, or 0 */
    bool passthrough;
    bool dead;
    uint16_t c_xmit, c_recv; /* fragment limits on the client leg (we send / we accept) */
    uint16_t u_xmit, u_recv; /* and on the upstream leg */
    uint16_t bind_max_xmit, bind_max_recv;
    struct mp_session *group;
    uint32_t shown_group; /* the group id the client was told */
    uint32_t named_group; /* terminated: the group its bind named, joined once authenticated */
    struct pctx_entry *ctx;
    size_t n_ctx;
    struct call *calls;
    size_t n_calls, cap_calls;
    uint32_t next_u_call;
    struct merge *merges, **merges_tail;
    struct mp_buf pending_bind; /* the upstream bind, while resolving/connecting */
    struct mp_syntax target;
    struct mp_timer timer;   /* connect and bind timeout */
    struct mp_timer idle;    /* mapiproxy:idle timeout */
    struct mp_timer bindt;   /* mapiproxy:bind timeout */
    struct addr_count *addr; /* its client address's connection count */
    struct mp_timer stall;   /* mapiproxy:send timeout */
    struct mp_buf reasm;     /* local answers: the request being reassembled */
    uint32_t reasm_call;
    uint16_t reasm_ctx, reasm_op;
    bool reasm_active;
    uint32_t local_ip;                   /* the address the client reached, network order */
    struct mp_dce_sec *csec, *usec;      /* set when the proxy terminates authentication */
    struct mp_dce_sec *cx[MAX_CSEC - 1]; /* further client security contexts (alter_context) */
    size_t n_cx;
    struct mp_bind *up_fwd; /* terminated: the upstream bind's contexts, until sent */
    struct mp_kdc_job *job; /* queued for the KDC worker (A_KDC, A_WINBIND) */
    uint64_t n_done;
    uint64_t t_open;
    char peer[64];
    /* another carrier's association (carrier.h): the client leg is not a
     * socket; c.n keeps its buffers and times only */
    const struct mp_dce_carrier_ops *carrier;
    void *carrier_data;
    bool carrier_want; /* what want_input() said last */
    bool c_blocked;    /* its flush took less than offered: wait for mp_dce_assoc_writable */
    /* the upstream leg through a carrier (carrier.h, struct mp_dce_up_ops:
     * the RPC over HTTP upstream): u has no socket, u.n keeps its buffers,
     * port and times only; NULL once let go of */
    const struct mp_dce_up_ops *up_ops;
    void *up_data;
    bool up_want;    /* what up_ops->want_input() said last */
    bool up_blocked; /* its flush took less than offered: wait for mp_dce_up_writable */
    /* hands output queued where no flush followed to either leg's carrier
     * on the next loop turn (dce_update_interest: what MP_WRITE does for a
     * socket), and acts on up_why */
    struct mp_timer kick;
    char up_why[300];    /* the carrier failed (mp_dce_up_failed): why, until handled */
    struct mp_pcap *cap; /* decrypted packet export (pcap.c), or NULL */
    bool cap_warned;
    struct assoc *next, *prev;
};

/* The transport: listeners, associations, association groups, and the
 * authentication state when the proxy terminates it (auth). */
struct mp_relay {
    struct mp_loop *loop;
    const struct mp_config *cfg;
    struct listener ls[2 * MP_MAX_LISTEN];
    size_t n_ls;
    uint16_t rpc_port, epm_port;
    struct mp_epm_registry reg;
    struct sockaddr_storage up_addr;
    socklen_t up_addr_len;
    struct port_cache cache[MP_MAX_IFACES];
    size_t n_cache;
    struct mp_session *groups[N_GROUP_BUCKETS];
    struct mp_modules mods;
    bool prefetch_noted; /* online prefetch cannot see pass-through calls: said once */
    struct assoc *assocs;
    size_t n_assoc;
    uint8_t rbuf[READ_CHUNK]; /* reads land here; only partial PDUs are kept per conn */
    bool more_input;          /* more bytes follow the PDU being handled: batch the writes */
    /* terminated authentication (src/auth/dcerpc_auth.h): credentials,
     * Kerberos, winbind and the KDC worker */
    struct mp_dce_auth auth;
    struct mp_iface_spec pt_ifaces[MP_MAX_IFACES]; /* mapiproxy:pass-through interfaces */
    size_t n_pt;
    uint8_t min_level;          /* mapiproxy:min client auth level */
    bool min_level_set;         /* ... given explicitly: binds relayed as they are obey it too */
    struct mp_rpch_up *rpch_up; /* mapiproxy:rpc over http upstream, or NULL (ncacn_ip_tcp) */
};

/* Parsed one at a time on the loop thread (bind.c). */
extern _Thread_local struct mp_bind dce_scratch_bind;
extern _Thread_local struct mp_bind_ack dce_scratch_ack;

/* call.c: fragments out, each protected for the leg when sec signs or
 * seals (sec may be NULL). */
int dce_emit(struct conn *dst, struct mp_dce_sec *sec, bool req, uint8_t in_flags, uint32_t call_id,
             uint16_t ctx_id, uint16_t opnum, const uint8_t *object, const uint8_t *stub,
             size_t len, uint32_t hint, size_t max_frag);
int dce_send_response_stub(struct assoc *a, struct mp_dce_sec *sec, uint32_t call_id,
                           uint16_t ctx_id, const uint8_t *stub, size_t len);
/* terminate.c: the KDC/winbind worker's answer for an association */
void dce_kdc_done(void *arg, struct mp_kdc_job *j);

/* assoc.c */
void dce_conn_release(struct mp_relay *r, struct conn *c);
/* Whether leg c can carry bytes: its socket, or (upstream) its carrier. */
bool dce_leg_open(const struct assoc *a, const struct conn *c);
/* Leg c is a carrier's (carrier.h: the client's or the upstream's), not a socket. */
bool dce_leg_carried(const struct assoc *a, const struct conn *c);
void dce_assoc_close(struct assoc *a, const char *reason);
void dce_assoc_finish(struct assoc *a, const char *reason);
void dce_conn_flush(struct assoc *a, struct conn *c);
void dce_update_interest(struct assoc *a);
int dce_conn_send(struct conn *c, const uint8_t *p, size_t len);
void dce_client_protocol_error(struct assoc *a, uint32_t call_id, const char *what);
void dce_upstream_failed(struct assoc *a, const char *why);
void dce_start_upstream(struct assoc *a);
void dce_upstream_connect(struct assoc *a, uint16_t port);
void dce_client_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_client_input(struct assoc *a);
/* The PDU at the head of c's input: 1 when it is all there (*pp, *h set),
 * 0 when more bytes are needed (h->frag_len non-zero once the header is
 * there), -1 when its header is bad (*bad says why). */
int dce_pdu_head(struct conn *c, const uint8_t **pp, struct mp_pdu_hdr *h, const char **bad);
void dce_assoc_accept(void *data, int fd, const char *host, uint16_t port);
void dce_assoc_adopt_bytes(struct listener *l, int fd, const char *host, uint16_t port,
                           const void *bytes, size_t len, struct mp_pcap *cap);
/* A connection for another worker (transport.c): new copies the bytes read
 * (NULL: out of memory, fd and cap kept); post queues it for worker `to`,
 * which owns fd and cap (the packet export, or NULL) from then on (closed
 * if it cannot be queued). */
struct handover;
struct handover *dce_handover_new(int fd, const char *host, uint16_t port, const void *bytes,
                                  size_t len, struct mp_pcap *cap);
void dce_handover_post(unsigned to, struct handover *h);
/* Direct client connections counted on a worker (assoc.c): a connection
 * handed over counts on its new worker from the hand-over on. */
void dce_load_adjust(unsigned worker, int delta);

/* group.c */
void dce_group_unref(struct mp_relay *r, struct mp_session *g);
uint32_t dce_group_fresh_id(struct mp_relay *r);
int dce_join_group(struct assoc *a, uint32_t id, const char *ident, uint32_t new_id);
void dce_addr_ident(const struct assoc *a, char *out, size_t n);

/* bind.c */
struct merge *dce_merge_new(struct assoc *a, uint8_t ptype, uint32_t call_id, struct mp_bind **fwd);
int dce_split_contexts(struct assoc *a, const struct mp_bind *b, struct merge *m,
                       struct mp_bind *fwd);
void dce_answer_bind(struct assoc *a, const struct merge *m, const struct mp_bind_ack *up,
                     uint8_t flags, const struct mp_auth *auth);
uint16_t dce_clamp_frag(uint16_t v);
void dce_handle_bind(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_handle_alter(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_deny_bind(struct assoc *a, const struct mp_bind *b, uint32_t call_id);
void dce_upstream_bind_ack(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);

/* epm_lookup.c */
uint16_t dce_port_lookup(struct mp_relay *r, const struct mp_syntax *s);
void dce_port_forget(struct mp_relay *r, const struct mp_syntax *s);
void dce_resolver_start(struct assoc *a);
void dce_resolver_input(struct assoc *a);

/* call.c */
void dce_call_detach(struct call *c);
void dce_ctx_add(struct assoc *a, uint16_t id, const struct mp_syntax *abstract);
void dce_log_call(struct assoc *a, struct call *c, const char *status);
void dce_local_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_relay_request(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_relay_cancel(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_upstream_pdu(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);

/* terminate.c */
void dce_handle_bind_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                               const struct mp_bind *b);
void dce_handle_auth3_terminate(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_handle_alter_auth(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
struct mp_dce_sec *dce_client_sec_by_id(struct assoc *a, uint32_t id);
int dce_alter_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h,
                       struct mp_auth *reply, struct mp_buf *tok);
void dce_auth3_security(struct assoc *a, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_upstream_bind_ack_terminate(struct assoc *a, const uint8_t *pdu,
                                     const struct mp_pdu_hdr *h);
int dce_unprotect(struct assoc *a, struct mp_dce_sec *sec, uint8_t *pdu, const struct mp_pdu_hdr *h,
                  size_t hl, const uint8_t **stub, size_t *len, bool from_client);

/* transport.c */
struct addr_count *dce_addr_take(struct mp_relay *r, const uint8_t ip[16]);
void dce_addr_release(struct mp_relay *r, struct addr_count *e);
bool dce_iface_is_pt(const struct mp_relay *r, const struct mp_syntax *s);
int dce_bind_pt_kind(const struct mp_relay *r, const struct mp_bind *b);
bool dce_bind_is_passthrough(const struct mp_relay *r, const struct mp_bind *b);
/* pcap.c: decrypted packet export.  dce_tap_in: a PDU read on leg c;
 * dce_tap_clear: a PDU in plaintext (header hl bytes, then the stub) the
 * proxy unsealed or is about to seal; dce_tap_out: what is queued on c and
 * not captured yet; dce_tap_send before sending p directly, dce_tap_synced
 * after (all queued bytes captured); dce_tap_user: the client's user is
 * known (NULL: nobody). */
void dce_tap_in(struct assoc *a, struct conn *c, const uint8_t *pdu, const struct mp_pdu_hdr *h);
void dce_tap_clear(struct assoc *a, struct conn *c, bool in, const uint8_t *pdu, size_t hl,
                   const uint8_t *stub, size_t len);
void dce_tap_out(struct assoc *a, struct conn *c);
void dce_tap_send(struct assoc *a, struct conn *c, const uint8_t *p, size_t len);
void dce_tap_synced(struct assoc *a, struct conn *c);
void dce_tap_user(struct assoc *a, const char *user);
#endif
