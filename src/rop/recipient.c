/* RecipientRow (MS-OXCDATA 2.8.3.1): RecipientFlags, then fields chosen by
 * the Type bits and the flag bits, then RecipientColumnCount and a
 * PropertyRow over the first RecipientColumnCount recipient columns. */
#include "rop/ropjson.h"
#include "rop/ropval.h"

enum {
    RF_TYPE = 0x0007,
    RF_X500DN = 0x1,
    RF_DLIST1 = 0x6,
    RF_DLIST2 = 0x7,
    RF_EMAIL = 0x0008,    /* E */
    RF_DISPLAY = 0x0010,  /* D */
    RF_TRANSMIT = 0x0020, /* T */
    RF_SIMPLE = 0x0400,   /* I */
    RF_UNICODE = 0x0200,  /* U */
    RF_OUTOFSTD = 0x8000, /* O */
};

static void decode(struct mp_rcur *c, struct mp_rop_pctx *pc, struct mp_rop_recipient_row *r)
{
    uint16_t f = r->RecipientFlags = mp_rcur_u16(c);
    bool wide = f & RF_UNICODE;
    unsigned type = f & RF_TYPE;
    if (type == RF_X500DN) {
        r->AddressPrefixUsed = mp_rcur_u8(c);
        r->DisplayType = mp_rcur_u8(c);
        mp_rop_pull_str(c, &r->X500DN, false);
    }
    if (type == RF_DLIST1 || type == RF_DLIST2) {
        r->EntryIdSize = mp_rcur_u16(c);
        r->EntryId = mp_rcur_bytes(c, r->EntryIdSize);
        r->SearchKeySize = mp_rcur_u16(c);
        r->SearchKey = mp_rcur_bytes(c, r->SearchKeySize);
    }
    if (type == 0 && (f & RF_OUTOFSTD))
        mp_rop_pull_str(c, &r->AddressType, false);
    if (f & RF_EMAIL)
        mp_rop_pull_str(c, &r->EmailAddress, wide);
    if (f & RF_DISPLAY)
        mp_rop_pull_str(c, &r->DisplayName, wide);
    if (f & RF_SIMPLE)
        mp_rop_pull_str(c, &r->SimpleDisplayName, wide);
    if (f & RF_TRANSMIT)
        mp_rop_pull_str(c, &r->TransmittableDisplayName, wide);
    r->RecipientColumnCount = mp_rcur_u16(c);
    if (c->err)
        return;
    if (pc->recip_cols && r->RecipientColumnCount <= pc->recip_ncols) {
        mp_rop_pull_proprow(c, pc, &r->RecipientProperties, pc->recip_cols,
                            r->RecipientColumnCount);
        r->has_props = !c->err;
    }
}

void mp_rop_recipient_row_pull(struct mp_rcur *c, struct mp_rop_pctx *pc,
                               struct mp_rop_recipient_row *r)
{
    r->RecipientRowSize = mp_rcur_u16(c);
    r->raw = mp_rcur_bytes(c, r->RecipientRowSize);
    if (!r->raw)
        return;
    /* decode inside the counted bytes; failure only loses the view */
    struct mp_rcur sub;
    mp_rcur_init(&sub, r->raw, r->RecipientRowSize);
    bool need = pc->need_ctx;
    decode(&sub, pc, r);
    pc->need_ctx = need;
    if (pc->nomem) {
        c->err = true;
        return;
    }
    r->decoded = !sub.err && (!r->has_props || sub.off == sub.len);
    if (!r->decoded)
        r->has_props = false;
}

void mp_rop_recipient_row_push(struct mp_wcur *w, const struct mp_rop_recipient_row *r)
{
    mp_wcur_u16(w, r->RecipientRowSize);
    mp_wcur_bytes(w, r->raw, r->RecipientRowSize);
}

static void str_kv(struct mp_json *j, const char *k, const struct mp_rop_str *s)
{
    if (!s->p)
        return;
    mp_rj_key(j, k);
    mp_rop_print_str(j, s);
}

void mp_rop_recipient_row_print(struct mp_json *j, const struct mp_rop_recipient_row *r)
{
    mp_rj_obj(j);
    mp_rj_key(j, "RecipientRowSize");
    mp_rj_u64(j, r->RecipientRowSize);
    if (r->decoded) {
        mp_rj_key(j, "RecipientFlags");
        mp_rj_hex(j, r->RecipientFlags, 4);
        if ((r->RecipientFlags & RF_TYPE) == RF_X500DN) {
            mp_rj_key(j, "AddressPrefixUsed");
            mp_rj_u64(j, r->AddressPrefixUsed);
            mp_rj_key(j, "DisplayType");
            mp_rj_u64(j, r->DisplayType);
        }
        str_kv(j, "X500DN", &r->X500DN);
        if (r->EntryId) {
            mp_rj_key(j, "EntryId");
            mp_rj_bin(j, r->EntryId, r->EntryIdSize, 0);
            mp_rj_key(j, "SearchKey");
            mp_rj_bin(j, r->SearchKey, r->SearchKeySize, 0);
        }
        str_kv(j, "AddressType", &r->AddressType);
        str_kv(j, "EmailAddress", &r->EmailAddress);
        str_kv(j, "DisplayName", &r->DisplayName);
        str_kv(j, "SimpleDisplayName", &r->SimpleDisplayName);
        str_kv(j, "TransmittableDisplayName", &r->TransmittableDisplayName);
        mp_rj_key(j, "RecipientColumnCount");
        mp_rj_u64(j, r->RecipientColumnCount);
        if (r->has_props) {
            mp_rj_key(j, "RecipientProperties");
            mp_rop_print_proprow(j, &r->RecipientProperties);
        }
    }
    if (!r->decoded || !r->has_props) {
        mp_rj_key(j, "Raw");
        mp_rj_bin(j, r->raw, r->RecipientRowSize, MP_ROP_PRINT_MAXBIN);
    }
    mp_rj_obj_end(j);
}
