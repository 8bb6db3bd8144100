/* Modify verdicts of online uploads: ROPs of the proxy's own, put into the
 * request just before the completing RopSaveChangesMessage /
 * RopSubmitMessage, on the same message handle (MS-OXCROPS 2.2.8.6
 * RopSetProperties: RopId 0x0A, LogonId, InputHandleIndex,
 * PropertyValueSize, PropertyValueCount, TaggedPropertyValues; 2.2.6.11
 * RopDeleteAttachment: RopId 0x24, LogonId, InputHandleIndex, AttachmentID).
 * Their responses are kept from the client (ropstage.c).
 * doc/internals/module-api.md, "Message events". */
#include <stdlib.h>
#include <string.h>

#include "auth/ntlm_crypto.h"
#include "chain/msgevents.h"
#include "chain/ropstage.h"
#include "content/message.h"
#include "core/arena.h"
#include "mapiproxy/rops.h"

bool mp_msgev_edits_supported(void)
{
    return true;
}

/* utf8 as a PT_UNICODE value (UTF-16LE; the codec writes the terminating
 * NUL), in call memory; -1 on bad UTF-8 or no memory. */
static int unicode(struct mp_arena *a, const char *utf8, struct mp_rop_pval *v)
{
    size_t cap = strlen(utf8) * 2 + 2, n = 0;
    uint8_t *p = mp_arena_alloc(a, cap ? cap : 2);
    if (!p || mp_utf8_to_utf16le(utf8, p, cap, &n) || n + 2 > cap)
        return -1;
    v->type = MP_PT_UNICODE;
    v->p = p;
    v->n = (uint32_t)n;
    return 0;
}

static int handle_of(struct mp_call *call, int rop_index, uint8_t *logon, uint8_t *hidx)
{
    const void *q = mp_call_rop(call, false, (size_t)rop_index);
    if (!q)
        return -1;
    switch (mp_call_rop_id(call, false, (size_t)rop_index)) {
    case MP_ROP_SaveChangesMessage: {
        const struct mp_rop_req_SaveChangesMessage *s = q;
        *logon = s->LogonId;
        *hidx = s->InputHandleIndex;
        return 0;
    }
    case MP_ROP_SubmitMessage: {
        const struct mp_rop_req_SubmitMessage *s = q;
        *logon = s->LogonId;
        *hidx = s->InputHandleIndex;
        return 0;
    }
    default:
        return -1;
    }
}

int mp_msgev_apply_edits(struct mp_call *call, int rop_index, const struct mp_message *msg,
                         const struct mp_msgev_verdict *v)
{
    if (!v->prefix && !v->nsets && !v->natts)
        return 0;
    struct mp_arena *a = mp_call_arena(call);
    uint8_t logon, hidx;
    if (!a || rop_index < 0 || handle_of(call, rop_index, &logon, &hidx))
        return -1;
    size_t n = 0;
    struct mp_rop_tpropval *vals = mp_arena_calloc(a, v->nsets + 1, sizeof(*vals));
    if (!vals)
        return -1;
    if (v->prefix) {
        struct mp_buf subj = {0};
        const char *old = mp_props_string(&msg->props, MP_TAG_SUBJECT >> 16, &subj)
                              ? ""
                              : (const char *)subj.data;
        size_t lp = strlen(v->prefix), lo = strlen(old);
        char *s = mp_arena_alloc(a, lp + lo + 1);
        int rc = -1;
        if (s) {
            memcpy(s, v->prefix, lp);
            memcpy(s + lp, old, lo + 1);
            vals[n].tag = MP_TAG_SUBJECT;
            rc = unicode(a, s, &vals[n].v);
        }
        mp_buf_free(&subj);
        if (rc)
            return -1;
        n++;
    }
    for (size_t i = 0; i < v->nsets; i++) {
        uint16_t id = v->sets[i].id;
        if (!id)
            continue; /* a named property whose id the session never showed */
        vals[n].tag = (uint32_t)id << 16 | MP_PT_UNICODE;
        if (unicode(a, v->sets[i].value, &vals[n].v))
            return -1;
        n++;
    }
    if (n) {
        struct mp_rop_req_SetProperties *sp = mp_arena_calloc(a, 1, sizeof(*sp));
        if (!sp)
            return -1;
        sp->RopId = MP_ROP_SetProperties;
        sp->LogonId = logon;
        sp->InputHandleIndex = hidx;
        sp->PropertyValueCount = (uint16_t)n;
        sp->PropertyValues = vals;
        if (mp_ropstage_inject(call, (size_t)rop_index, MP_ROP_SetProperties, sp))
            return -1;
    }
    for (size_t i = 0; i < v->natts; i++) {
        struct mp_rop_req_DeleteAttachment *da = mp_arena_calloc(a, 1, sizeof(*da));
        if (!da)
            return -1;
        da->RopId = MP_ROP_DeleteAttachment;
        da->LogonId = logon;
        da->InputHandleIndex = hidx;
        da->AttachmentID = v->atts[i].num;
        if (mp_ropstage_inject(call, (size_t)rop_index, MP_ROP_DeleteAttachment, da))
            return -1;
    }
    return 0;
}
