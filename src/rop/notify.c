/* RopNotify NotificationData (MS-OXCROPS 2.2.14.2.1, MS-OXCNOTIF): which
 * fields are present depends on the notification type and the flag bits.
 * Types this decoder is not sure about leave the ROP opaque (need_ctx), which
 * keeps its bytes exact. */
#include <string.h>

#include "rop/ropjson.h"
#include "rop/ropval.h"

enum {
    NF_NEWMAIL = 0x0002,
    NF_CREATED = 0x0004,
    NF_DELETED = 0x0008,
    NF_MODIFIED = 0x0010,
    NF_MOVED = 0x0020,
    NF_COPIED = 0x0040,
    NF_SEARCHDONE = 0x0080,
    NF_TABLE = 0x0100,
    NF_T = 0x1000, /* TotalMessageCount present */
    NF_U = 0x2000, /* UnreadMessageCount present */
    NF_S = 0x4000, /* search folder */
    NF_M = 0x8000, /* message (not folder) */
};

static bool has_row(uint16_t tet)
{
    return tet == 0x03 || tet == 0x05; /* TABLE_ROW_ADDED, TABLE_ROW_MODIFIED */
}
static bool has_rowid(uint16_t tet)
{
    return tet == 0x03 || tet == 0x04 || tet == 0x05;
}

void mp_rop_notification_pull(struct mp_rcur *c, struct mp_rop_pctx *pc,
                              struct mp_rop_notification *n)
{
    uint16_t f = n->NotificationFlags = mp_rcur_u16(c);
    uint16_t type = f & 0x0FFF;
    bool m = f & NF_M;
    if (c->err)
        return;
    switch (type) {
    case NF_NEWMAIL:
    case NF_CREATED:
    case NF_DELETED:
    case NF_MODIFIED:
    case NF_MOVED:
    case NF_COPIED:
    case NF_SEARCHDONE:
    case NF_TABLE:
        break;
    default:
        mp_rop_need_ctx(c, pc); /* extended/ICS/status: layout not modelled */
        return;
    }
    if (type == NF_TABLE) {
        n->TableEventType = mp_rcur_u16(c);
        if (has_rowid(n->TableEventType)) {
            n->TableRowFolderID = mp_rcur_u64(c);
            if (m) {
                n->TableRowMessageID = mp_rcur_u64(c);
                n->TableRowInstance = mp_rcur_u32(c);
            }
        }
        if (has_row(n->TableEventType)) {
            n->InsertAfterTableRowFolderID = mp_rcur_u64(c);
            if (m) {
                n->InsertAfterTableRowID = mp_rcur_u64(c);
                n->InsertAfterTableRowInstance = mp_rcur_u32(c);
            }
            n->TableRowDataSize = mp_rcur_u16(c);
            n->TableRowData = mp_rcur_bytes(c, n->TableRowDataSize);
        }
        return;
    }
    n->FolderId = mp_rcur_u64(c);
    if (m)
        n->MessageId = mp_rcur_u64(c);
    bool cdmc = type == NF_CREATED || type == NF_DELETED || type == NF_MOVED || type == NF_COPIED;
    if (cdmc && (!m || (f & NF_S)))
        n->ParentFolderId = mp_rcur_u64(c);
    if (type == NF_MOVED || type == NF_COPIED) {
        n->OldFolderId = mp_rcur_u64(c);
        if (m)
            n->OldMessageId = mp_rcur_u64(c);
        else
            n->OldParentFolderId = mp_rcur_u64(c);
    }
    if (type == NF_CREATED || type == NF_MODIFIED) {
        n->TagCount = mp_rcur_u16(c);
        if (n->TagCount != 0xFFFF)
            n->Tags = mp_rcur_bytes(c, (size_t)n->TagCount * 4);
    }
    if (f & NF_T)
        n->TotalMessageCount = mp_rcur_u32(c);
    if (f & NF_U)
        n->UnreadMessageCount = mp_rcur_u32(c);
    if (type == NF_NEWMAIL) {
        n->MessageFlags = mp_rcur_u32(c);
        n->UnicodeFlag = mp_rcur_u8(c);
        mp_rop_pull_str(c, &n->MessageClass, n->UnicodeFlag != 0);
    }
}

void mp_rop_notification_push(struct mp_wcur *w, const struct mp_rop_notification *n)
{
    uint16_t f = n->NotificationFlags, type = f & 0x0FFF;
    bool m = f & NF_M;
    mp_wcur_u16(w, f);
    if (type == NF_TABLE) {
        mp_wcur_u16(w, n->TableEventType);
        if (has_rowid(n->TableEventType)) {
            mp_wcur_u64(w, n->TableRowFolderID);
            if (m) {
                mp_wcur_u64(w, n->TableRowMessageID);
                mp_wcur_u32(w, n->TableRowInstance);
            }
        }
        if (has_row(n->TableEventType)) {
            mp_wcur_u64(w, n->InsertAfterTableRowFolderID);
            if (m) {
                mp_wcur_u64(w, n->InsertAfterTableRowID);
                mp_wcur_u32(w, n->InsertAfterTableRowInstance);
            }
            mp_wcur_u16(w, n->TableRowDataSize);
            mp_wcur_bytes(w, n->TableRowData, n->TableRowDataSize);
        }
        return;
    }
    mp_wcur_u64(w, n->FolderId);
    if (m)
        mp_wcur_u64(w, n->MessageId);
    bool cdmc = type == NF_CREATED || type == NF_DELETED || type == NF_MOVED || type == NF_COPIED;
    if (cdmc && (!m || (f & NF_S)))
        mp_wcur_u64(w, n->ParentFolderId);
    if (type == NF_MOVED || type == NF_COPIED) {
        mp_wcur_u64(w, n->OldFolderId);
        mp_wcur_u64(w, m ? n->OldMessageId : n->OldParentFolderId);
    }
    if (type == NF_CREATED || type == NF_MODIFIED) {
        mp_wcur_u16(w, n->TagCount);
        if (n->TagCount != 0xFFFF)
            mp_wcur_bytes(w, n->Tags, (size_t)n->TagCount * 4);
    }
    if (f & NF_T)
        mp_wcur_u32(w, n->TotalMessageCount);
    if (f & NF_U)
        mp_wcur_u32(w, n->UnreadMessageCount);
    if (type == NF_NEWMAIL) {
        mp_wcur_u32(w, n->MessageFlags);
        mp_wcur_u8(w, n->UnicodeFlag);
        mp_rop_push_str(w, &n->MessageClass);
    }
}

static void kv(struct mp_json *j, const char *k, uint64_t v)
{
    mp_rj_key(j, k);
    mp_rj_u64(j, v);
}

void mp_rop_notification_print(struct mp_json *j, const struct mp_rop_notification *n)
{
    uint16_t f = n->NotificationFlags, type = f & 0x0FFF;
    bool m = f & NF_M;
    mp_rj_obj(j);
    mp_rj_key(j, "NotificationFlags");
    mp_rj_hex(j, f, 4);
    if (type == NF_TABLE) {
        kv(j, "TableEventType", n->TableEventType);
        if (has_rowid(n->TableEventType)) {
            kv(j, "TableRowFolderID", n->TableRowFolderID);
            if (m) {
                kv(j, "TableRowMessageID", n->TableRowMessageID);
                kv(j, "TableRowInstance", n->TableRowInstance);
            }
        }
        if (has_row(n->TableEventType)) {
            kv(j, "InsertAfterTableRowFolderID", n->InsertAfterTableRowFolderID);
            if (m) {
                kv(j, "InsertAfterTableRowID", n->InsertAfterTableRowID);
                kv(j, "InsertAfterTableRowInstance", n->InsertAfterTableRowInstance);
            }
            kv(j, "TableRowDataSize", n->TableRowDataSize);
            mp_rj_key(j, "TableRowData");
            mp_rj_bin(j, n->TableRowData, n->TableRowDataSize, MP_ROP_PRINT_MAXBIN);
        }
        mp_rj_obj_end(j);
        return;
    }
    kv(j, "FolderId", n->FolderId);
    if (m)
        kv(j, "MessageId", n->MessageId);
    bool cdmc = type == NF_CREATED || type == NF_DELETED || type == NF_MOVED || type == NF_COPIED;
    if (cdmc && (!m || (f & NF_S)))
        kv(j, "ParentFolderId", n->ParentFolderId);
    if (type == NF_MOVED || type == NF_COPIED) {
        kv(j, "OldFolderId", n->OldFolderId);
        if (m)
            kv(j, "OldMessageId", n->OldMessageId);
        else
            kv(j, "OldParentFolderId", n->OldParentFolderId);
    }
    if (type == NF_CREATED || type == NF_MODIFIED) {
        kv(j, "TagCount", n->TagCount);
        if (n->TagCount != 0xFFFF) {
            mp_rj_key(j, "Tags");
            mp_rj_arr(j);
            for (size_t i = 0; i < n->TagCount; i++) {
                const uint8_t *q = n->Tags + 4 * i;
                mp_rj_hex(j,
                          (uint32_t)q[0] | ((uint32_t)q[1] << 8) | ((uint32_t)q[2] << 16) |
                              ((uint32_t)q[3] << 24),
                          8);
            }
            mp_rj_arr_end(j);
        }
    }
    if (f & NF_T)
        kv(j, "TotalMessageCount", n->TotalMessageCount);
    if (f & NF_U)
        kv(j, "UnreadMessageCount", n->UnreadMessageCount);
    if (type == NF_NEWMAIL) {
        kv(j, "MessageFlags", n->MessageFlags);
        kv(j, "UnicodeFlag", n->UnicodeFlag);
        mp_rj_key(j, "MessageClass");
        mp_rop_print_str(j, &n->MessageClass);
    }
    mp_rj_obj_end(j);
}
