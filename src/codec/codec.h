/* Codecs of the EMSMDB, AsyncEMSMDB, NSPI and RFR calls: NDR 2.0 pull into
 * an arena, push, JSON print, found by interface UUID and opnum.
 * The request/response structures (struct nspi_NspiGetProps_in, ...) are
 * generated from the idl/ files by tools/gen_codec.py into src/codec/gen/.
 * See doc/internals/codec.md. */
#ifndef MP_CODEC_H
#define MP_CODEC_H
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct mp_arena;    /* src/core/arena.h: mp_arena_init/alloc/strdup/reset/free */
struct mp_json;     /* src/core/json.h */
struct mp_ndr_wire; /* src/codec/ndr_rt.h */

struct mp_call_codec {
    const char *iface; /* "exchange_nsp" ... */
    uint16_t opnum;
    const char *name;         /* "NspiGetProps"; NULL for an opnum not used on the wire */
    size_t in_size, out_size; /* sizeof the request / response struct */
    /* 0 or -1.  The whole stub must be consumed (up to 7 zero bytes of
     * trailing alignment padding allowed); everything points into the arena;
     * on -1 the structure's content is undefined. */
    int (*pull_in)(const uint8_t *stub, size_t len, void *in, struct mp_arena *a);
    int (*pull_out)(const uint8_t *stub, size_t len, void *out, struct mp_arena *a);
    /* Append the stub to b; 0 or -1 (b is left as it was on -1). */
    int (*push_in)(struct mp_buf *b, const void *in);
    int (*push_out)(struct mp_buf *b, const void *out);
    void (*print_in)(struct mp_json *j, const void *in);
    void (*print_out)(struct mp_json *j, const void *out);
    /* The same with the wire details kept apart from the (public)
     * structures: pull records into *w (zeroed first; its arrays live in the
     * arena; NULL: not kept), push reproduces them (NULL: the canonical
     * encoding).  Byte-exact re-encoding needs the wire of the pull. */
    int (*pull_in_w)(const uint8_t *stub, size_t len, void *in, struct mp_arena *a,
                     struct mp_ndr_wire *w);
    int (*pull_out_w)(const uint8_t *stub, size_t len, void *out, struct mp_arena *a,
                      struct mp_ndr_wire *w);
    int (*push_in_w)(struct mp_buf *b, const void *in, const struct mp_ndr_wire *w);
    int (*push_out_w)(struct mp_buf *b, const void *out, const struct mp_ndr_wire *w);
};

/* NULL if the interface or the opnum is unknown (such calls are relayed
 * untouched). */
const struct mp_call_codec *mp_codec_find(const uint8_t iface_uuid[16], uint16_t opnum);

/* One interface's table (generated). */
struct mp_codec_iface {
    const char *name;       /* IDL interface name: "exchange_nsp" */
    const char *short_name; /* "nspi", "emsmdb", "asyncemsmdb", "rfr" */
    uint8_t uuid[16];       /* wire order */
    uint16_t major, minor;
    const struct mp_call_codec *calls; /* indexed by opnum */
    uint16_t n_calls;
};
/* NULL-terminated list of every interface with codecs. */
extern const struct mp_codec_iface *const mp_codec_ifaces[];
/* By short name, IDL name, or UUID text (8-4-4-4-12); NULL if unknown. */
const struct mp_codec_iface *mp_codec_iface_lookup(const char *name);
const struct mp_call_codec *mp_codec_iface_call(const struct mp_codec_iface *i, uint16_t opnum);

/* EcDoRpc's rgb (and RPC_HEADER_EXT payloads flagged XorMagic) are
 * obfuscated by XOR-ing every byte with 0xA5; applying it twice restores. */
void mp_emsmdb_xor(uint8_t *p, size_t n);

struct mp_ctxh;
void mp_codec_print_ctxh(struct mp_json *j, const struct mp_ctxh *h);
/* A property tag as MAPI tools show it: "0x0037001F". */
void mp_codec_print_tag(struct mp_json *j, uint32_t tag);

#include "codec/gen/asyncemsmdb.h"
#include "codec/gen/emsmdb.h"
#include "codec/gen/nspi.h"
#include "codec/gen/rfr.h"
#endif
