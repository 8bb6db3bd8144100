/* mapiproxy module API -- the one header a module includes.
 *
 * A module is a shared object exporting
 *
 *     const struct mp_module mp_module_descriptor = { MP_MODULE_HEADER, ... };
 *
 * or a built-in linked into the daemon.  `dcerpc_mapiproxy:modules` lists the
 * modules in order.  For each call on an interface/operation a module
 * declares in `wants`, hooks run in this order:
 *
 *   request:  ndr_pull (raw stub)  -> pull (decoded)  -> dispatch (before relay)
 *             modules 1, 2, ... n, each hook stage in list order
 *   relay to the upstream (skipped when a module returned MP_STOP)
 *   response: ndr_push (raw stub)  -> push (decoded)
 *             modules n, ..., 2, 1 (reverse order: the onion)
 *   unbind:   when a session ends, for every module that kept data in it
 *
 * Each hook returns an enum mp_status.  Calls no module wants are relayed
 * without being reassembled or decoded (the fast path).
 *
 * Rules: no mutable globals (state goes in the module's private pointer,
 * set by init, or in per-session data); never block (use MP_PENDING and
 * mp_call_resume); never log secrets.
 *
 * ABI: MP_MODULE_ABI_VERSION changes whenever this header changes
 * incompatibly, and whenever the generated call or ROP structures change
 * (a digest of them, from calls.h and rops.h, is folded into it); the
 * loader refuses a module built against another version, or whose
 * descriptor is smaller than the one it knows.  One exception: a module
 * built for ABI 4 with the same call and ROP structures loads into ABI 5
 * (ABI 5 only appended `flags` to the descriptor; such a module gets
 * flags 0, i.e. it may give verdicts).
 *
 * The API stands alone: this header, calls.h (calls/NAME.h, ndr_types.h),
 * rops.h (ropvals.h) are everything a module sees; build with
 * -I<mapiproxy>/include, or -I$(PREFIX)/include after make install.
 */
#ifndef MAPIPROXY_MODULE_H
#define MAPIPROXY_MODULE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "calls.h"
#include "message.h"
#include "rops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The hand-written part of the ABI (this header); the low 24 bits are the
 * digest of the generated structures. */
#define MP_MODULE_ABI_BASE 5u
#define MP_MODULE_ABI_VERSION                                                                      \
    ((MP_MODULE_ABI_BASE << 24) | ((MP_CALLS_DIGEST ^ MP_ROPS_DIGEST) & 0xffffffu))

enum mp_status {
    MP_CONTINUE = 0, /* go on with the next module / stage */
    MP_STOP = 1,     /* dispatch: the module answered; nothing is relayed (OpenChange's norelay) */
    MP_ERROR = 2,    /* a fault goes back to the client (status: mp_call_fault) */
    MP_PENDING = 3,  /* the module waits on something; it calls mp_call_resume() later */
    MP_RELAY_AGAIN = 4, /* push/ndr_push: send the (possibly changed) request upstream again */
};

enum mp_log_level_m { MP_MLOG_ERROR = 0, MP_MLOG_WARN, MP_MLOG_INFO, MP_MLOG_DEBUG };

struct mp_call;       /* one call: request, response, its session */
struct mp_session;    /* a client's association group: what Outlook sees as one session */
struct mp_module_ctx; /* a loaded module: options, private state */
struct mp_object;     /* a server object of an EMSMDB context (ROPs, below) */

/* Object lifetime events (the object_event hook). */
enum mp_object_event {
    MP_OBJECT_CREATED = 1,      /* a ROP created it and the server said yes */
    MP_OBJECT_RELEASED = 2,     /* RopRelease, or a new object took its handle */
    MP_OBJECT_CONTEXT_GONE = 3, /* its MAPI context ended (EcDoDisconnect, session end) */
};

/* Option schema (the descriptor's `options`): every NAME:key the module
 * reads.  With a schema, `mapiproxy --check` and the start refuse any other
 * NAME:key (with FILE:LINE and a did-you-mean) and values of the wrong
 * type.  The array ends with key == NULL. */
enum mp_option_type {
    MP_OPT_STRING = 0, /* any text */
    MP_OPT_BOOL,       /* yes/no, true/false, on/off, 1/0 */
    MP_OPT_INT,        /* a decimal or 0x number in [min, max] */
    MP_OPT_ENUM,       /* one of `choices` (NULL-terminated) */
};
struct mp_module_option_spec {
    const char *key; /* without the "NAME:" prefix, lower case */
    enum mp_option_type type;
    long min, max;              /* MP_OPT_INT (both 0: any) */
    const char *const *choices; /* MP_OPT_ENUM */
};

/* What a module wants to see.  iface: "exchange_emsmdb", "exchange_nsp",
 * "exchange_ds_rfr", "exchange_async_emsmdb", "epmapper", or a UUID text.
 * opnum: one operation, or MP_ALL_OPS.  The array ends with iface == NULL. */
#define MP_ALL_OPS 0xffffffffu
struct mp_module_want {
    const char *iface;
    uint32_t opnum;
};

struct mp_module {
    uint32_t abi_version; /* MP_MODULE_ABI_VERSION */
    uint32_t size;        /* sizeof(struct mp_module) */
    const char *name;
    const char *description;
    const struct mp_module_want *wants;

    /* Once at start-up: read options (mp_module_option), set private state
     * (mp_module_set_private).  Non-zero refuses to start the daemon. */
    int (*init)(struct mp_module_ctx *mc);
    void (*fini)(struct mp_module_ctx *mc);

    enum mp_status (*ndr_pull)(struct mp_module_ctx *mc, struct mp_call *call);
    enum mp_status (*pull)(struct mp_module_ctx *mc, struct mp_call *call);
    enum mp_status (*dispatch)(struct mp_module_ctx *mc, struct mp_call *call);
    enum mp_status (*ndr_push)(struct mp_module_ctx *mc, struct mp_call *call);
    enum mp_status (*push)(struct mp_module_ctx *mc, struct mp_call *call);
    /* The session ends; `data` is what the module set with
     * mp_session_set_data (its destructor runs right after). */
    void (*unbind)(struct mp_module_ctx *mc, struct mp_session *s, void *data);

    /* ROP hooks (ABI 2): the ROPs of EcDoRpcExt2 and EcDoRpc (and of MAPI
     * over HTTP's Execute), decoded.  rop_request runs after pull and before
     * dispatch (modules 1..n); rop_response after ndr_push and before push
     * (n..1).  A module with either hook sees every ROP call of every
     * session: no `wants` entry is needed.  See "ROPs" below. */
    enum mp_status (*rop_request)(struct mp_module_ctx *mc, struct mp_call *call);
    enum mp_status (*rop_response)(struct mp_module_ctx *mc, struct mp_call *call);

    /* ABI 3.  Server object lifetimes (see "Object events" below): called
     * when an object of session s is created, released, or its context
     * ends; `data` is what the module set with mp_object_set_data (NULL if
     * none; its destructor runs right after RELEASED and CONTEXT_GONE).  A
     * module with this hook makes the proxy track every ROP call. */
    void (*object_event)(struct mp_module_ctx *mc, struct mp_session *s, const struct mp_object *o,
                         enum mp_object_event ev, void *data);
    /* The options the module reads (NULL: not checked), and an optional
     * further check of one value, run by --check and at start before init:
     * 0 accepts; otherwise write why (one sentence, no secrets) to why. */
    const struct mp_module_option_spec *options;
    int (*check_option)(const char *key, const char *value, char *why, size_t why_len);

    /* ABI 4.  Whole messages (message.h): called once per message that
     * completes in a session, uploads in list order, downloads in reverse.
     * MP_CONTINUE, or MP_PENDING and mp_message_resume() later.  A module
     * with this hook makes the proxy assemble every message. */
    enum mp_status (*message)(struct mp_module_ctx *mc, struct mp_message_event *ev);

    /* ABI 5.  MP_MODULE_* flags below (0: none). */
    uint32_t flags;
};

/* The module's message hook only observes: it never gives a verdict (no
 * mp_message_block, _prefix_subject, _set_*, _replace_attachment).  When
 * every loaded module with a message hook says so, the proxy holds nothing
 * for verdicts: FastTransfer downloads are relayed as they come (no
 * mapiproxy:fx hold), and mapiproxy:online prefetch does not read messages
 * ahead.  A verdict such a module gives anyway is ignored (the verdict
 * function returns -1) and logged once.  mime-dump and message-log set it. */
#define MP_MODULE_OBSERVES_ONLY 0x1u

#define MP_MODULE_HEADER MP_MODULE_ABI_VERSION, (uint32_t)sizeof(struct mp_module)

/* ---- module context ---- */
/* From init: want (iface, opnum) in addition to the descriptor's `wants`,
 * for modules whose interest comes from their options.  0 or -1. */
int mp_module_want(struct mp_module_ctx *mc, const char *iface, uint32_t opnum);
const char *mp_module_name(const struct mp_module_ctx *mc);
/* From init (ABI 5): a named property (guid, name; kind MNID_STRING) the
 * module may set with mp_message_set_named_string.  The proxy maps it in
 * every session itself (a RopGetPropertyIdsFromNames of its own, with the
 * create flag, after the client's private-mailbox RopLogon), so the set
 * finds the session's id even when the client never mapped the name.  At
 * most 32 names for all modules, each under 64 bytes.  0 or -1. */
int mp_module_map_name(struct mp_module_ctx *mc, const uint8_t guid[16], const char *name);
/* "NAME:key" from the configuration, NULL when absent. */
const char *mp_module_option(const struct mp_module_ctx *mc, const char *key);
bool mp_module_option_bool(const struct mp_module_ctx *mc, const char *key, bool dflt);
long mp_module_option_int(const struct mp_module_ctx *mc, const char *key, long dflt);
void *mp_module_private(const struct mp_module_ctx *mc);
void mp_module_set_private(struct mp_module_ctx *mc, void *priv);
void mp_module_log(const struct mp_module_ctx *mc, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The proxy's own names, from its configuration (added within ABI 4, a
 * compatible change): what a module that hides the upstream server from
 * the client (the built-in rewrite) puts in its place.  "" when not set;
 * NULL for an unknown `which` or outside init and the hooks.  Only names:
 * no other part of the configuration is visible to modules. */
enum mp_proxy_name {
    MP_PROXY_NETBIOS_NAME = 0,  /* `netbios name` */
    MP_PROXY_REALM = 1,         /* `realm` */
    MP_PROXY_UPSTREAM_HOST = 2, /* the host of dcerpc_mapiproxy:binding */
};
const char *mp_module_proxy_name(const struct mp_module_ctx *mc, enum mp_proxy_name which);
/* The name of operation opnum of an interface the proxy knows
 * ("exchange_nsp", 3 -> "NspiGetProps"); NULL past its last operation or
 * for an interface it does not know (added within ABI 4).  Lets a module
 * turn operation names from its options into the opnums of its wants. */
const char *mp_iface_op(const char *iface, uint32_t opnum);

/* ---- calls ---- */
const char *mp_call_iface(const struct mp_call *call); /* "exchange_nsp", or the UUID text */
uint16_t mp_call_opnum(const struct mp_call *call);
const char *mp_call_op_name(const struct mp_call *call); /* "NspiGetProps", or NULL */
const char *mp_call_peer(const struct mp_call *call);    /* "ADDR:PORT" of the client */
/* The user the proxy authenticated on the connection that carried the call
 * ("DOMAIN\user", or "user@REALM" for Kerberos principals and NTLM users
 * who logged on with a UPN), when the proxy terminates authentication (the
 * DCE/RPC relay with specified credentials or S4U delegation, the HTTPS
 * front with `mapiproxy:http auth = terminate`); NULL when it does not
 * (transparent mode, pass-through interfaces).  The client's address is
 * mp_call_peer.  Added within ABI 2 (a compatible change, so the version
 * stayed); a module that calls it does not load into an older mapiproxy. */
const char *mp_call_user(const struct mp_call *call);
/* The client's version (ABI 3): "15.0.4569.1506" (major.minor.build.
 * revision), from the EcDoConnectEx of the call's session (rgwClientVersion,
 * MS-OXCRPC 3.1.4.1.3) or from MAPI/HTTP's X-ClientApplication header
 * ("Outlook/15.0.4569.1506"); NULL until the client said it. */
const char *mp_call_client_version(const struct mp_call *call);
/* MAPI/HTTP: the X-ClientApplication header as the client sent it (at most
 * 127 bytes), NULL on other transports or when absent. */
const char *mp_call_client_application(const struct mp_call *call);
/* How the call came (ABI 3): transport
 * "rpc" (DCE/RPC over TCP) or "mapi-http"; auth, how the client logged on:
 * "ntlm" or "kerberos" when the proxy checked it, "terminate" when the
 * HTTPS front did (mapiproxy:http auth = terminate), "pass-through" when the
 * client's logon went to the upstream untouched.  Never NULL. */
const char *mp_call_transport(const struct mp_call *call);
const char *mp_call_auth(const struct mp_call *call);
struct mp_session *mp_call_session(struct mp_call *call);
/* How many times the request went upstream already (MP_RELAY_AGAIN). */
unsigned mp_call_relay_count(const struct mp_call *call);

/* Raw NDR stubs.  The request stub is valid from ndr_pull on; the response
 * stub from ndr_push on (or after a module set one).  Setting a stub copies
 * it, and drops any decoded form. */
const uint8_t *mp_call_request_stub(const struct mp_call *call, size_t *len);
int mp_call_set_request_stub(struct mp_call *call, const uint8_t *stub, size_t len);
const uint8_t *mp_call_response_stub(const struct mp_call *call, size_t *len);
int mp_call_set_response_stub(struct mp_call *call, const uint8_t *stub, size_t len);

/* Decoded calls: the structures of calls.h (struct nspi_NspiGetProps_in,
 * emsmdb_EcDoRpcExt2_out, ...; generated from idl/), NULL when the call
 * has no codec or its stub does not decode.  A module that
 * changes a decoded structure calls mp_call_*_changed so the proxy
 * re-encodes it.  A dispatch hook that answers (MP_STOP) fills the
 * response, from mp_call_new_response() or with mp_call_set_response_stub. */
void *mp_call_request(struct mp_call *call);
void *mp_call_response(struct mp_call *call);
void *mp_call_new_response(struct mp_call *call); /* zeroed response struct */
void mp_call_request_changed(struct mp_call *call);
void mp_call_response_changed(struct mp_call *call);

/* Memory that lives as long as the call. */
void *mp_call_alloc(struct mp_call *call, size_t size);
char *mp_call_strdup(struct mp_call *call, const char *s);

/* With MP_ERROR: the fault status the client gets (default 0x000006be,
 * rpc_s_call_failed).  With MP_STOP and no response: the call is answered
 * with this fault on purpose (logged as an answer, not as a failure). */
void mp_call_fault(struct mp_call *call, uint32_t status);

/* The decoded request or response as one line of JSON (no newline), in
 * memory that lives as long as the call; NULL when there is no codec for
 * the call or it does not decode. */
const char *mp_call_json(struct mp_call *call, bool response);

/* A hook that returned MP_PENDING continues the chain with this status,
 * from any later event of the proxy's loop (e.g. a timer set with
 * mp_module_after).  Exactly once.  If the client went away meanwhile the
 * call is dropped quietly. */
void mp_call_resume(struct mp_call *call, enum mp_status status);

/* Runs cb(arg) once, ms milliseconds from now, on the proxy's loop.  Returns
 * 0, or -1 when out of memory.  Timers still pending when the module is
 * unloaded are cancelled (after fini). */
int mp_module_after(struct mp_module_ctx *mc, uint64_t ms, void (*cb)(void *arg), void *arg);

/* ---- watching a descriptor (ABI 3) ---- */
/* Calls cb on the proxy's loop whenever fd is readable (MP_FD_READ) and/or
 * writable (MP_FD_WRITE), as `events` asks: the way to talk to an outside
 * service (a scanner, a directory) without blocking the proxy.  cb gets
 * the events that are ready, MP_FD_ERROR on an error or hang-up.  The fd
 * stays the module's (set it non-blocking; close it after cancelling).
 * With MP_PENDING: hold the call, watch the service's socket, and call
 * mp_call_resume from cb.  NULL when out of memory or fd cannot be
 * watched. */
#define MP_FD_READ 0x1u
#define MP_FD_WRITE 0x4u
#define MP_FD_ERROR 0x8u
struct mp_fdwatch;
typedef void (*mp_fdwatch_cb)(struct mp_fdwatch *w, int fd, unsigned events, void *arg);
struct mp_fdwatch *mp_module_watch_fd(struct mp_module_ctx *mc, int fd, unsigned events,
                                      mp_fdwatch_cb cb, void *arg);
/* Changes what is watched (0: nothing, until set again).  0 or -1. */
int mp_fdwatch_set(struct mp_fdwatch *w, unsigned events);
/* Stops watching and frees w (not the fd); safe inside cb.  Watches left
 * at unload are cancelled by the proxy (after fini). */
void mp_fdwatch_cancel(struct mp_fdwatch *w);

/* ---- ROPs ---- */
/* In rop_request and rop_response hooks (and after them), the ROPs of the
 * call, in order: the request's as the client sent them; the response's as
 * the client will get them (answers of the upstream, and the proxy's own
 * answers to ROPs a module answered or dropped).  The decoded structs are
 * those of <mapiproxy/rops.h> (struct mp_rop_req_NAME / mp_rop_rsp_NAME),
 * NULL for an opaque ROP (bytes the decoder could not split without more
 * context: relayed as they are).  A call whose ROP buffer does not decode at
 * all has 0 ROPs here and is relayed untouched (the proxy logs it). */
size_t mp_call_rop_count(struct mp_call *call, bool response);
uint8_t mp_call_rop_id(struct mp_call *call, bool response, size_t i); /* 0 if out of range */
const char *mp_call_rop_name(struct mp_call *call, bool response, size_t i);
void *mp_call_rop(struct mp_call *call, bool response, size_t i);
/* Responses: the index of the request ROP this one answers, -1 for
 * response-only ROPs (RopNotify, RopPending, RopBackoff, RopBufferTooSmall). */
int mp_call_rop_request_index(struct mp_call *call, size_t i);
/* The ROP as one line of JSON, in call memory. */
const char *mp_call_rop_json(struct mp_call *call, bool response, size_t i);
/* EcDoRpcExt2 (NULL for any other call, or with no ROP buffer): each
 * RPC_HEADER_EXT payload of the buffer decoded on its own, as one JSON
 * value in call memory: an array with, per payload, its ROPs or
 * {"undecodable": WHY, "offset": N}; or the string "undecodable
 * RPC_HEADER_EXT chain".  For showing where a buffer that does not decode
 * (mp_call_rop_count 0) fails (added within ABI 4). */
const char *mp_call_rop_buffer_json(struct mp_call *call, bool response);
/* After changing a decoded ROP: the proxy re-encodes the buffer (and
 * re-compresses it if it was compressed).  Count fields are the module's to
 * keep right; byte sizes are recomputed. */
void mp_call_rop_changed(struct mp_call *call, bool response, size_t i);
/* rop_request only: ROP i is not sent upstream; the client gets the ROP's
 * failure response with ReturnValue = error (the proxy writes it, and marks
 * any handle the ROP would have created as invalid).  0 or -1. */
int mp_call_rop_answer(struct mp_call *call, size_t i, uint32_t error);
/* rop_request: ROP i is not sent upstream and gets no response (right for
 * RopRelease; a client waiting for the response of any other ROP would be
 * confused).  rop_response: the client does not get response i.  0 or -1. */
int mp_call_rop_drop(struct mp_call *call, bool response, size_t i);

/* Server objects (MS-OXCROPS 1.3.1): what each server object handle of an
 * EMSMDB session is, tracked by the proxy across calls from the ROPs that
 * create, change and release them. */
enum mp_object_type {
    MP_OBJ_UNKNOWN = 0, /* a handle the proxy did not see being created */
    MP_OBJ_LOGON,
    MP_OBJ_FOLDER,
    MP_OBJ_MESSAGE,
    MP_OBJ_ATTACHMENT,
    MP_OBJ_STREAM,
    MP_OBJ_TABLE,
    MP_OBJ_FASTTRANSFER, /* FastTransfer download or upload context */
    MP_OBJ_ICS_DOWNLOAD, /* RopSynchronizationConfigure */
    MP_OBJ_ICS_UPLOAD,   /* RopSynchronizationOpenCollector */
    MP_OBJ_NOTIFICATION, /* RopRegisterNotification */
    MP_OBJ_OTHER,
};
struct mp_object {
    enum mp_object_type type;
    uint32_t handle; /* 0xFFFFFFFF while not yet created (same buffer) */
    uint8_t logon_id;
    uint8_t created_by;      /* RopId that created it */
    int private_mailbox;     /* logon: 1 private, 0 public folders, -1 unknown */
    uint64_t folder_id;      /* folders, messages, tables of a folder; 0 unknown */
    uint64_t message_id;     /* messages (0 until saved), attachments, their streams */
    uint32_t attachment_id;  /* attachments and what was opened on them */
    uint32_t property_tag;   /* streams: the property; tables: 0 */
    uint32_t stream_size;    /* streams, as RopOpenStream answered */
    uint8_t table_rop;       /* tables: RopGetHierarchyTable (0x04), Contents (0x05), ... */
    const uint32_t *columns; /* tables: the last RopSetColumns that succeeded */
    size_t ncolumns;
    uint32_t parent; /* handle it was opened from, 0xFFFFFFFF if none */
    /* ABI 3: the MAPI context (one EcDoConnectEx / MAPI/HTTP Connect: its
     * context handle) the object lives in, numbered by the proxy from 1 in
     * each session; 0 unknown.  Handles are unique within a context only. */
    uint32_t context_id;
};
const char *mp_object_type_name(enum mp_object_type t); /* "folder", ... */
/* The object ROP i works on (the one its InputHandleIndex names), NULL if
 * the ROP has no input handle.  For a handle created earlier in the same
 * buffer, the object as that ROP's request describes it (handle
 * 0xFFFFFFFF).  The call's own copy, as the request found the object:
 * valid until the call ends, even when the ROPs release the object or the
 * session is disconnected meanwhile. */
const struct mp_object *mp_call_rop_object(struct mp_call *call, bool response, size_t i);
/* rop_response: the object ROP i created (OutputHandleIndex), NULL if none
 * or if the ROP failed.  The call's copy, valid until the call ends. */
const struct mp_object *mp_call_rop_new_object(struct mp_call *call, size_t i);

/* ---- syslog ---- */
/* A connection to a syslog socket (RFC 3164 datagrams, as the daemon's own
 * log with mapiproxy:log target = syslog): facility "daemon", "authpriv",
 * "local0" ...; socket NULL = /dev/log.  NULL when the facility is unknown
 * or out of memory.  Sending never blocks: 0 sent, -1 dropped. */
struct mp_module_syslog;
struct mp_module_syslog *mp_module_syslog_open(const char *facility, const char *socket,
                                               const char *ident);
int mp_module_syslog_send(struct mp_module_syslog *s, int severity, const char *msg, size_t len);
void mp_module_syslog_close(struct mp_module_syslog *s);

/* ---- sessions ---- */
/* Per-module private data, with a destructor run when the session ends
 * (after the unbind hook).  Setting replaces (and destroys) older data. */
void *mp_session_data(struct mp_session *s, const struct mp_module_ctx *mc);
int mp_session_set_data(struct mp_session *s, const struct mp_module_ctx *mc, void *data,
                        void (*destructor)(void *data));
/* Keep a session alive past its last connection (e.g. while waiting on an
 * outside service); every ref needs an unref. */
void mp_session_ref(struct mp_session *s);
void mp_session_unref(struct mp_session *s);
uint32_t mp_session_id(const struct mp_session *s);

/* ---- object events and per-object data (ABI 3) ---- */
/* Per-module data on a server object (o from mp_call_rop_object,
 * mp_call_rop_new_object or the object_event hook; found by its
 * context_id and handle), with a destructor that runs when the object is
 * released or its context ends (after the object_event hook), or when
 * the data is replaced.  -1 when the object is not (or no longer) tracked:
 * an object created in the same ROP buffer gets data from the rop_response
 * hook on, through mp_call_rop_new_object. */
void *mp_object_data(struct mp_session *s, const struct mp_module_ctx *mc,
                     const struct mp_object *o);
int mp_object_set_data(struct mp_session *s, const struct mp_module_ctx *mc,
                       const struct mp_object *o, void *data, void (*destructor)(void *data));

#ifdef __cplusplus
}
#endif
#endif
