/* ROP buffers (MS-OXCROPS 2.2.1): RopSize (u16, counting itself and the ROP
 * list), the ROP requests or responses, then the server object handle table
 * (u32 each).  The codec of every ROP is generated from idl/rops/rops.idl by
 * tools/gen_rops.py (src/rop/gen/); see doc/internals/rop.md.
 *
 *   struct mp_arena a = {0};
 *   struct mp_rop_buf rq, rs;
 *   if (mp_rop_decode(&rq, in, in_len, false, NULL, &a) != MP_ROP_OK) relay as is;
 *   struct mp_rop_ctx ctx = { .requests = &rq };
 *   mp_rop_decode(&rs, out, out_len, true, &ctx, &a);
 *   ... mp_rop_encode(&buf, &rs) gives the bytes back (byte-exact if unchanged)
 *   mp_arena_free(&a);
 *
 * Decoded values point into the input buffer: keep it alive while the
 * decoded buffer is used. */
#ifndef MP_ROP_ROP_H
#define MP_ROP_ROP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "rop/gen/rop_gen.h"
#include "core/arena.h"
#include "rop/ropval.h"

enum mp_rop_status {
    MP_ROP_OK = 0,
    /* a ROP could not be decoded (unknown RopId, truncated, malformed):
     * b->bad_off says where; the caller relays the whole buffer untouched */
    MP_ROP_UNDECODABLE = -1,
    MP_ROP_ENOMEM = -2,
};

struct mp_rop {
    uint8_t rop_id;
    /* Not decoded because its layout depends on context the decoder lacks
     * (table columns, logon type, an unmodelled notification): raw/len then
     * cover the rest of the ROP list, and decoding stopped here.  Encoded
     * back byte for byte. */
    bool opaque;
    uint32_t off, len;  /* bytes of this ROP within the buffer */
    const uint8_t *raw; /* = buffer + off */
    const struct mp_rop_desc *desc;
    void *v;       /* struct mp_rop_req_NAME / mp_rop_rsp_NAME; NULL if opaque */
    int req_index; /* responses: matching request in ctx->requests, or -1 */
};

struct mp_rop_buf {
    bool response;
    uint16_t rop_size;
    struct mp_rop *rops;
    size_t n;
    uint32_t *handles;
    size_t nhandles;
    size_t bad_off;  /* MP_ROP_UNDECODABLE: offset of the failing ROP (or 0) */
    const char *why; /* MP_ROP_UNDECODABLE: short reason */
};

/* What a response decoder may need besides the bytes (all optional). */
struct mp_rop_ctx {
    /* the decoded request buffer of the same call: response i is matched to
     * the requests in order (RopRelease has no response; RopNotify,
     * RopPending, RopBackoff, RopBufferTooSmall are response-only) */
    const struct mp_rop_buf *requests;
    /* columns of the table behind a server object handle, as set by an
     * earlier RopSetColumns (a session-tracking layer keeps them): return 0
     * and set *tags (kept alive by the callee) and *n, or -1 if unknown */
    int (*table_columns)(void *opaque, uint32_t handle, const uint32_t **tags, size_t *n);
    /* 1 private mailbox logon, 0 public folders, -1 unknown */
    int (*logon_is_private)(void *opaque, uint8_t logon_id);
    void *opaque;
};

/* Decodes p[0..len).  All memory comes from arena a.  Returns MP_ROP_OK (the
 * list may end in one opaque ROP), MP_ROP_UNDECODABLE (b->bad_off, b->why)
 * or MP_ROP_ENOMEM. */
int mp_rop_decode(struct mp_rop_buf *b, const uint8_t *p, size_t len, bool response,
                  const struct mp_rop_ctx *ctx, struct mp_arena *a);

/* Appends the buffer: RopSize recomputed from the ROPs, then the handle
 * table.  0, or -1 (allocation failure, RopSize over 65535). */
int mp_rop_encode(struct mp_buf *out, const struct mp_rop_buf *b);
/* Whether mp_rop_encode would append exactly ref[0..ref_len), found
 * without writing anything (bytes the ROPs take from ref at their own
 * offset are not even compared). */
bool mp_rop_encodes_as(const struct mp_rop_buf *b, const uint8_t *ref, size_t ref_len);

/* {"RopSize":N,"Rops":[{"RopId":"0x02","Name":"RopOpenFolder",...}],
 *  "ServerObjectHandleTable":["0x00000101",...]} */
void mp_rop_print(struct mp_json *j, const struct mp_rop_buf *b);

/* One ROP as a JSON object ({"RopId":..,"Name":..,fields}); extra, if not
 * NULL, adds keys before the object closes. */
void mp_rop_print_one(struct mp_json *j, const struct mp_rop *r, bool response,
                      void (*extra)(struct mp_json *j, void *arg), void *arg);

/* Every ROP response struct starts with these (MS-OXCROPS 2.2.4.2). */
struct mp_rop_rsp_head {
    uint8_t RopId;
    uint8_t HandleIndex;
    uint32_t ReturnValue;
};

/* ReturnValue of a decoded, non-opaque response ROP. */
uint32_t mp_rop_return_value(const struct mp_rop *rsp);
/* The handle-table slot a decoded request ROP creates an object in (its
 * OutputHandleIndex), or -1 when it creates none or is opaque. */
int mp_rop_out_slot(const struct mp_rop *req);

/* "RopOpenFolder", or NULL for an unknown RopId. */
const char *mp_rop_name(uint8_t rop_id);
#endif
