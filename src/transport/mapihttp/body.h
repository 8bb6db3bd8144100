/* MAPI over HTTP (MS-OXCMAPIHTTP) request and response bodies: decode,
 * encode, JSON print.
 *
 * A body whose request type has an RPC twin is decoded into the generated
 * structure of that RPC call (src/codec/gen): Connect -> EcDoConnectEx,
 * Execute -> EcDoRpcExt2, Disconnect -> EcDoDisconnect, Bind -> NspiBind,
 * ResolveNames -> NspiResolveNamesW, ...  so that code reading those
 * structures works whatever the transport.  What the twin cannot carry
 * (StatusCode, the NSPI auxiliary buffers, code pages of NSPI responses,
 * fields that are optional on HTTP but flattened in the RPC structure) is
 * kept in struct mp_mh_side.  Request types with no twin (NotificationWait,
 * PING, GetMailboxUrl, GetAddressBookUrl) have their own structures below.
 * See doc/internals/mapihttp.md for every mapping. */
#ifndef MP_MAPIHTTP_BODY_H
#define MP_MAPIHTTP_BODY_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "core/buf.h"

struct mp_arena;
struct mp_json;

enum mp_mh_kind {
    /* /mapi/emsmdb */
    MP_MH_CONNECT,
    MP_MH_EXECUTE,
    MP_MH_DISCONNECT,
    MP_MH_NOTIFICATIONWAIT,
    MP_MH_PING, /* also on /mapi/nspi */
    /* /mapi/nspi */
    MP_MH_BIND,
    MP_MH_UNBIND,
    MP_MH_COMPAREMIDS,
    MP_MH_DNTOMID,
    MP_MH_GETMATCHES,
    MP_MH_GETPROPLIST,
    MP_MH_GETPROPS,
    MP_MH_GETSPECIALTABLE,
    MP_MH_GETTEMPLATEINFO,
    MP_MH_MODLINKATT,
    MP_MH_MODPROPS,
    MP_MH_QUERYCOLUMNS,
    MP_MH_QUERYROWS,
    MP_MH_RESOLVENAMES,
    MP_MH_RESORTRESTRICTION,
    MP_MH_SEEKENTRIES,
    MP_MH_UPDATESTAT,
    MP_MH_GETMAILBOXURL,
    MP_MH_GETADDRESSBOOKURL,
    MP_MH_N_KINDS
};

struct mp_mh_kind_info {
    const char *name;       /* the X-RequestType value: "Connect", "GetMatches", "PING" */
    const char *endpoint;   /* "emsmdb" or "nspi" (PING: "emsmdb" and "nspi") */
    const char *twin_iface; /* short interface name for mp_codec_iface_lookup, or NULL */
    int twin_opnum;         /* -1: no twin */
};
const struct mp_mh_kind_info *mp_mh_kind_info(enum mp_mh_kind k);
/* The X-RequestType value (case-insensitive) -> kind, or -1. */
int mp_mh_kind_lookup(const char *request_type);
/* The largest request body of this type the proxy holds (body.c says why
 * each; doc/internals/http.md). */
size_t mp_mh_max_request_body(enum mp_mh_kind k);
/* The codec of the RPC twin, or NULL. */
const struct mp_call_codec *mp_mh_twin(enum mp_mh_kind k);

/* Results of mp_mh_decode. */
#define MP_MH_OK 0
#define MP_MH_EMALFORMED (-1) /* truncated, trailing bytes, bad flag byte, limits */
#define MP_MH_EUNSUPPORTED                                                                         \
    (-2) /* well-formed but not representable in the RPC twin                                      \
          * (e.g. a PtypInteger64 property, a comment restriction);                                \
          * relay such bodies untouched */

/* X-ResponseCode values (MS-OXCMAPIHTTP 2.2.3.3.3). */
enum mp_mh_response_code {
    MP_MH_RC_SUCCESS = 0,
    MP_MH_RC_UNKNOWN_FAILURE = 1,
    MP_MH_RC_INVALID_VERB = 2,
    MP_MH_RC_INVALID_PATH = 3,
    MP_MH_RC_INVALID_HEADER = 4,
    MP_MH_RC_INVALID_REQUEST_TYPE = 5,
    MP_MH_RC_INVALID_CONTEXT_COOKIE = 6,
    MP_MH_RC_MISSING_HEADER = 7,
    MP_MH_RC_ANONYMOUS_NOT_ALLOWED = 8,
    MP_MH_RC_TOO_LARGE = 9,
    MP_MH_RC_CONTEXT_NOT_FOUND = 10,
    MP_MH_RC_NO_PRIVILEGE = 11,
    MP_MH_RC_INVALID_REQUEST_BODY = 12,
    MP_MH_RC_MISSING_COOKIE = 13,
    MP_MH_RC_RESERVED = 14,
    MP_MH_RC_INVALID_SEQUENCE = 15,
    MP_MH_RC_ENDPOINT_DISABLED = 16,
    MP_MH_RC_INVALID_RESPONSE = 17,
    MP_MH_RC_ENDPOINT_SHUTTING_DOWN = 18,
};
/* "Invalid Request Body", ... ; NULL for an unknown code. */
const char *mp_mh_response_code_name(uint32_t code);
/* The X-ResponseCode a proxy answers with when a request body fails to
 * decode with rc (MP_MH_EMALFORMED: Invalid Request Body; request bodies the
 * proxy cannot represent are relayed, so MP_MH_EUNSUPPORTED has none: 0). */
uint32_t mp_mh_request_error_code(int rc);

/* Optional fields absent on the wire whose twin member is not a pointer. */
#define MP_MH_ABSENT_STATE 0x01u    /* HasState = 0: pStat zero */
#define MP_MH_ABSENT_NAMES 0x02u    /* DNToMId/ResolveNames HasNames = 0 */
#define MP_MH_ABSENT_VERSION 0x04u  /* GetSpecialTable HasVersion = 0: lpVersion 0 */
#define MP_MH_ABSENT_ENTRYIDS 0x08u /* ModLinkAtt HasEntryIds = 0 */
#define MP_MH_ABSENT_VALUES 0x10u   /* ModProps HasPropertyValues = 0: pRow empty */
#define MP_MH_ABSENT_MIDS 0x20u     /* ResortRestriction request HasMinimalIds = 0 */
#define MP_MH_ABSENT_TARGET 0x40u   /* SeekEntries HasTarget = 0 */

/* Transport fields with no twin, and wire details for exact re-encoding. */
struct mp_mh_side {
    uint32_t status_code; /* responses: StatusCode; non-zero: a failure body (StatusCode and
                           * the auxiliary buffer only), the twin structure stays zeroed */
    uint32_t absent;      /* MP_MH_ABSENT_* */
    uint32_t codepage;    /* GetProps/GetSpecialTable/GetTemplateInfo/ResolveNames responses */
    uint8_t *aux;         /* the auxiliary buffer where the twin has none (NSPI calls, */
    uint32_t aux_len;     /* Disconnect, NotificationWait, failure bodies) */
    /* Connect response DisplayName as sent (UTF-16); the twin's szDisplayName
     * holds its UTF-8 form.  Used while szDisplayName still converts to it. */
    uint16_t *display_name_w;
    /* Columns of an AddressBookPropertyRow set (QueryRows, GetMatches,
     * ResolveNames, SeekEntries responses): the twin's rows carry tags per
     * value, but a set with no rows would lose them. */
    struct nspi_PropertyTagArray_r *columns;
    /* Recorded wire bytes, in wire order, reused by encode while they still
     * fit: boolean bytes (Has* fields, HasValue: 0x00 / any non-zero) and
     * row/value flag bytes (0x00, 0x01, 0x0A). */
    bool bare_values; /* restriction values without their HasValue byte (body.c) */
    uint8_t *bools, *flags;
    uint32_t n_bools, n_flags;
};

/* No-twin calls. */
struct mp_mh_notificationwait_in {
    uint32_t flags; /* Flags (reserved, 0) */
};
struct mp_mh_notificationwait_out {
    int32_t error_code;
    uint32_t event_pending; /* EventPending: 1 if an event is pending */
};
struct mp_mh_ping {
    uint8_t *data; /* PING bodies carry nothing the protocol defines; kept as bytes */
    uint32_t len;
};
struct mp_mh_url_in { /* GetMailboxUrl (ServerDn) and GetAddressBookUrl (UserDn) */
    uint32_t flags;
    uint16_t *dn; /* NUL-terminated UTF-16 */
};
struct mp_mh_url_out {
    int32_t error_code;
    uint16_t *url; /* ServerUrl, NUL-terminated UTF-16 */
};

struct mp_mh_body {
    enum mp_mh_kind kind;
    bool response;
    const struct mp_call_codec *twin; /* NULL for no-twin calls */
    void *call;                       /* twin's _in/_out structure, or one of the above */
    struct mp_mh_side side;
    const uint8_t *raw; /* the decoded bytes (arena copy) */
    size_t raw_len;
    bool exact; /* mp_mh_encode gives raw back; false only for encodings that
                 * the structures cannot tell apart (documented) */
};

/* Decodes a body into *out; everything lives in the arena.  MP_MH_OK,
 * MP_MH_EMALFORMED or MP_MH_EUNSUPPORTED (out->raw is set in every case). */
int mp_mh_decode(enum mp_mh_kind k, bool response, const uint8_t *p, size_t n,
                 struct mp_mh_body *out, struct mp_arena *a);
/* Appends the body built from out->call and out->side; 0 or -1 (b unchanged). */
int mp_mh_encode(struct mp_buf *b, const struct mp_mh_body *body);
/* What a proxy sends on: the original bytes when the body was not changed,
 * otherwise mp_mh_encode. */
int mp_mh_write(struct mp_buf *b, const struct mp_mh_body *body, bool changed);
/* A JSON object: request_type, direction, transport fields, and "call"
 * (the twin's generated printer or the own structure). */
void mp_mh_print(struct mp_json *j, const struct mp_mh_body *body);
/* Allocates a zeroed body of kind k with its call structure (for building). */
int mp_mh_body_new(struct mp_mh_body *out, enum mp_mh_kind k, bool response, struct mp_arena *a);

/* UTF-16 <-> UTF-8 used for Unicode fields whose twin holds 8-bit strings.
 * NULL on allocation failure; unpaired surrogates become U+FFFD. */
char *mp_mh_utf16_to_utf8(const uint16_t *s, struct mp_arena *a);
uint16_t *mp_mh_utf8_to_utf16(const char *s, struct mp_arena *a);
#endif
