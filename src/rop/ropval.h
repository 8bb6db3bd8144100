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
#include "rop/wire.h"

struct mp_json;
struct mp_rop_buf;
struct mp_rop_ctx;
struct mp_rop_Restriction;

#define MP_ROP_MAX_DEPTH 20       /* nesting of restrictions (fits the JSON depth limit) */
#define MP_ROP_PRINT_MAXBIN 65536 /* blobs longer than this print cut */

/* A counted string view into the decoded buffer (n bytes, terminator not
 * included; wide = UTF-16LE). */
struct mp_rop_str {
    const uint8_t *p;
    uint32_t n;
    bool wide;
};
struct mp_rop_bin {
    const uint8_t *p;
    uint32_t n;
};

/* Property types (MS-OXCDATA 2.11.1) */
enum {
    MP_PT_UNSPECIFIED = 0x0000,
    MP_PT_NULL = 0x0001,
    MP_PT_I2 = 0x0002,
    MP_PT_LONG = 0x0003,
    MP_PT_R4 = 0x0004,
    MP_PT_DOUBLE = 0x0005,
    MP_PT_CURRENCY = 0x0006,
    MP_PT_APPTIME = 0x0007,
    MP_PT_ERROR = 0x000A,
    MP_PT_BOOLEAN = 0x000B,
    MP_PT_OBJECT = 0x000D,
    MP_PT_I8 = 0x0014,
    MP_PT_STRING8 = 0x001E,
    MP_PT_UNICODE = 0x001F,
    MP_PT_SYSTIME = 0x0040,
    MP_PT_CLSID = 0x0048,
    MP_PT_SVREID = 0x00FB,
    MP_PT_SRESTRICT = 0x00FD,
    MP_PT_ACTIONS = 0x00FE,
    MP_PT_BINARY = 0x0102,
    MP_PT_MV = 0x1000,
    MP_PT_MVI = 0x2000,
};

/* One property value of type `type`.  Fixed-size scalars live in u (raw
 * little-endian bits: doubles are their bit pattern), strings/binary/GUID/
 * rule actions point at their wire bytes (p, n: without the terminator),
 * restrictions at a decoded Restriction, multi-values at count elements. */
struct mp_rop_pval {
    uint16_t type;
    uint64_t u;
    const uint8_t *p;
    uint32_t n;
    uint32_t count;
    struct mp_rop_pval *mv;
    struct mp_rop_Restriction *res;
};

/* TaggedPropertyValue: PropertyTag u32 + value of the tag's type. */
struct mp_rop_tpropval {
    uint32_t tag;
    struct mp_rop_pval v;
};

/* A value in a property row.  For a PT_UNSPECIFIED column the wire carries
 * the type (TypedPropertyValue / FlaggedPropertyValueWithType): wire_type.
 * flag (flagged rows only): 0x00 value, 0x01 not available, 0x0A error (the
 * ErrorCode in v.u). */
struct mp_rop_rowval {
    uint16_t wire_type;
    uint8_t flag;
    struct mp_rop_pval v;
};

/* PropertyRow: Flag 0x00 standard, 0x01 flagged; ncols values for cols. */
struct mp_rop_proprow {
    uint8_t flag;
    uint32_t ncols;
    const uint32_t *cols;
    struct mp_rop_rowval *vals;
};

/* RopNotify NotificationData (MS-OXCROPS 2.2.14.2.1 / MS-OXCNOTIF). */
struct mp_rop_notification {
    uint16_t NotificationFlags;
    uint16_t TableEventType;
    uint64_t TableRowFolderID, TableRowMessageID;
    uint32_t TableRowInstance;
    uint64_t InsertAfterTableRowFolderID, InsertAfterTableRowID;
    uint32_t InsertAfterTableRowInstance;
    uint16_t TableRowDataSize;
    const uint8_t *TableRowData;
    uint64_t FolderId, MessageId, ParentFolderId;
    uint64_t OldFolderId, OldMessageId, OldParentFolderId;
    uint16_t TagCount;
    const uint8_t *Tags; /* TagCount * 4 bytes */
    uint32_t TotalMessageCount, UnreadMessageCount;
    uint32_t MessageFlags;
    uint8_t UnicodeFlag;
    struct mp_rop_str MessageClass;
};

/* RecipientRow (MS-OXCDATA 2.8.3.1) with its u16 size in front, as in
 * OpenRecipientRow / ReadRecipientRow / ModifyRecipientRow.  The bytes are
 * kept and written back as they are (push ignores the decoded fields); the
 * decoded view is for reading and printing.  decoded = false when the row
 * does not parse; has_props = false when the recipient columns are unknown
 * (RopReadRecipients: they come from an earlier RopOpenMessage). */
struct mp_rop_recipient_row {
    uint16_t RecipientRowSize;
    const uint8_t *raw;
    bool decoded, has_props;
    uint16_t RecipientFlags;
    uint8_t AddressPrefixUsed, DisplayType;
    struct mp_rop_str X500DN, AddressType, EmailAddress, DisplayName, SimpleDisplayName,
        TransmittableDisplayName;
    uint16_t EntryIdSize, SearchKeySize;
    const uint8_t *EntryId, *SearchKey;
    uint16_t RecipientColumnCount;
    struct mp_rop_proprow RecipientProperties;
};

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
