/* Hand-written parts of the ROP codec that the generated code (gen/rop_gen.c)
 * calls: strings, property values (MS-OXCDATA 2.11), property rows
 * (2.8: StandardPropertyRow / FlaggedPropertyRow with the columns from the
 * context), RopNotify's NotificationData, the pull context and the ROP
 * descriptor type.  Same pull/push/print shape as generated structs:
 *   void X_pull(struct mp_rcur *, struct mp_rop_pctx *, T *);  (sticky c->err)
 *   void X_push(struct mp_wcur *, const T *);                    (sticky w->err)
 *   void X_print(struct mp_json *, const T *); */
#ifndef MP_ROP_VAL_H
#define MP_ROP_VAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "mapiproxy/ropvals.h"
#include "rop/wire.h"

struct mp_json;
struct mp_rop_buf;
struct mp_rop_ctx;
struct mp_rop_Restriction;

#define MP_ROP_MAX_DEPTH 20       /* nesting of restrictions (fits the JSON depth limit) */
#define MP_ROP_PRINT_MAXBIN 65536 /* blobs longer than this print cut */

/* The value types of decoded ROPs (mp_rop_str, mp_rop_pval, mp_rop_proprow,
 * ...) are public: mapiproxy/ropvals.h. */

/* State of one decode, handed to every pull function. */
struct mp_rop_pctx {
    struct mp_arena *arena;
    const struct mp_rop_ctx *ctx;  /* may be NULL */
    const struct mp_rop_buf *reqs; /* requests of this call (responses only) */
    const struct mp_rop_buf *self; /* the buffer being decoded (ROPs so far) */
    size_t req_pos;                /* index in reqs of the matching request */
    int depth;
    const uint32_t *recip_cols; /* recipient columns of the ROP being decoded */
    size_t recip_ncols;
    bool need_ctx; /* the ROP cannot be parsed without more context */
    bool nomem;
};

/* Descriptor of one RopId (generated table mp_rop_descs[256]). */
enum { MP_ROPD_NORESPONSE = 1, MP_ROPD_RESPONSEONLY = 2 };
struct mp_rop_desc {
    uint8_t id;
    const char *name;
    unsigned flags;
    /* offsets in the request struct of InputHandleIndex, OutputHandleIndex,
     * and of the request field the response's handle index echoes; -1 if
     * the ROP has none */
    int16_t in_hidx, out_hidx, rsp_hidx;
    size_t req_size, rsp_size;
    void (*pull_req)(struct mp_rcur *c, struct mp_rop_pctx *pc, void *r, const void *req);
    void (*pull_rsp)(struct mp_rcur *c, struct mp_rop_pctx *pc, void *r, const void *req);
    void (*push_req)(struct mp_wcur *w, const void *r);
    void (*push_rsp)(struct mp_wcur *w, const void *r);
    void (*print_req)(struct mp_json *j, const void *r);
    void (*print_rsp)(struct mp_json *j, const void *r);
};
extern const struct mp_rop_desc *const mp_rop_descs[256];

/* ---- helpers called by generated code ---- */
void mp_rop_need_ctx(struct mp_rcur *c, struct mp_rop_pctx *pc);
void mp_rop_nomem(struct mp_rcur *c, struct mp_rop_pctx *pc);
/* true if LogonId is a private-mailbox logon; unknown: need_ctx + error. */
bool mp_rop_logon_private(struct mp_rcur *c, struct mp_rop_pctx *pc, uint8_t logon_id);
/* Columns of the table at handle index hidx; false (need_ctx) if unknown. */
/* A failed response whose IDL declares fields for failures too: true when
 * this one is the header alone (see ropval.c). */
bool mp_rop_header_only(const struct mp_rcur *c, const struct mp_rop_pctx *pc);
bool mp_rop_table_columns(struct mp_rcur *c, struct mp_rop_pctx *pc, uint8_t hidx,
                          const uint32_t **cols, size_t *ncols);

extern const uint32_t mp_rop_cols_receive_folder_table[3];
#define MP_ROP_NCOLS_RECEIVE_FOLDER_TABLE 3

void mp_rop_pull_str(struct mp_rcur *c, struct mp_rop_str *s, bool wide);
void mp_rop_push_str(struct mp_wcur *w, const struct mp_rop_str *s);
void mp_rop_print_str(struct mp_json *j, const struct mp_rop_str *s);
/* Counted text (Essdn, ServerName, PropertyName.Name): trailing NULs are not
 * printed. */
void mp_rop_print_text(struct mp_json *j, const uint8_t *p, size_t n, bool wide);

void mp_rop_pull_pval(struct mp_rcur *c, struct mp_rop_pctx *pc, uint16_t type,
                      struct mp_rop_pval *v);
void mp_rop_push_pval(struct mp_wcur *w, const struct mp_rop_pval *v);
void mp_rop_print_pval(struct mp_json *j, const struct mp_rop_pval *v);

void mp_rop_tpropval_pull(struct mp_rcur *c, struct mp_rop_pctx *pc, struct mp_rop_tpropval *t);
void mp_rop_tpropval_push(struct mp_wcur *w, const struct mp_rop_tpropval *t);
void mp_rop_tpropval_print(struct mp_json *j, const struct mp_rop_tpropval *t);

void mp_rop_pull_proprow(struct mp_rcur *c, struct mp_rop_pctx *pc, struct mp_rop_proprow *r,
                         const uint32_t *cols, size_t ncols);
void mp_rop_push_proprow(struct mp_wcur *w, const struct mp_rop_proprow *r);
void mp_rop_print_proprow(struct mp_json *j, const struct mp_rop_proprow *r);

void mp_rop_recipient_row_pull(struct mp_rcur *c, struct mp_rop_pctx *pc,
                               struct mp_rop_recipient_row *r);
void mp_rop_recipient_row_push(struct mp_wcur *w, const struct mp_rop_recipient_row *r);
void mp_rop_recipient_row_print(struct mp_json *j, const struct mp_rop_recipient_row *r);

void mp_rop_notification_pull(struct mp_rcur *c, struct mp_rop_pctx *pc,
                              struct mp_rop_notification *n);
void mp_rop_notification_push(struct mp_wcur *w, const struct mp_rop_notification *n);
void mp_rop_notification_print(struct mp_json *j, const struct mp_rop_notification *n);
#endif
