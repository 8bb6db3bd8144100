/* mapiproxy module API: the value types inside decoded ROPs (MS-OXCDATA):
 * counted strings and blobs, property values, rows, notifications,
 * recipient rows.  Hand-written; included by the generated rops.h. */
#ifndef MAPIPROXY_ROPVALS_H
#define MAPIPROXY_ROPVALS_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mp_rop_Restriction;

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
#endif
