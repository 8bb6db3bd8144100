/* Modify verdicts of online uploads: ROPs of the proxy's own, put into the
 * request just before the completing RopSaveChangesMessage /
 * RopSubmitMessage, on the same message handle (MS-OXCROPS 2.2.8.6
 * RopSetProperties: RopId 0x0A, LogonId, InputHandleIndex,
 * PropertyValueSize, PropertyValueCount, TaggedPropertyValues; 2.2.6.11
 * RopDeleteAttachment: RopId 0x24, LogonId, InputHandleIndex, AttachmentID;
 * a notice attachment: 2.2.6.13 RopCreateAttachment, 2.2.6.15
 * RopSaveChangesAttachment, 2.2.15.3 RopRelease).
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

/* A text/plain attachment "<name>.txt" holding the notice, in place of
 * the one deleted: RopCreateAttachment into a handle slot of the proxy's
 * own, RopSetProperties, RopSaveChangesAttachment, RopRelease
 * (MS-OXCROPS 2.2.6.13, 2.2.8.6, 2.2.6.15, 2.2.15.3). */
static int notice_attachment(struct mp_call *call, struct mp_arena *a, int rop_index, uint8_t logon,
                             uint8_t hidx, const struct mp_message *msg,
                             const struct mp_msgev_att *at)
{
    int slot = mp_ropstage_new_handle(call);
    if (slot < 0)
        return -1;
    uint8_t k = (uint8_t)slot;
    size_t before = (size_t)rop_index;
    struct mp_rop_req_CreateAttachment *ca = mp_arena_calloc(a, 1, sizeof(*ca));
    struct mp_rop_req_SetProperties *sp = mp_arena_calloc(a, 1, sizeof(*sp));
    struct mp_rop_req_SaveChangesAttachment *sa = mp_arena_calloc(a, 1, sizeof(*sa));
    struct mp_rop_req_Release *rl = mp_arena_calloc(a, 1, sizeof(*rl));
    struct mp_rop_tpropval *vals = mp_arena_calloc(a, 5, sizeof(*vals));
    if (!ca || !sp || !sa || !rl || !vals)
        return -1;
    /* the old attachment's name */
    struct mp_buf nb = {0};
    const char *name = "attachment";
    for (size_t i = 0; i < msg->natt; i++)
        if (msg->att[i].num == at->num &&
            (!mp_props_string(&msg->att[i].props, MP_TAG_ATTACH_LONG_FILENAME >> 16, &nb) ||
             !mp_props_string(&msg->att[i].props, MP_TAG_ATTACH_FILENAME >> 16, &nb)))
            name = (const char *)nb.data;
    size_t ln = strlen(name);
    char *fname = mp_arena_alloc(a, ln + 5);
    if (fname) {
        memcpy(fname, name, ln);
        memcpy(fname + ln, ".txt", 5);
    }
    mp_buf_free(&nb);
    if (!fname)
        return -1;
    vals[0].tag = MP_TAG_ATTACH_METHOD;
    vals[0].v.type = MP_PT_LONG;
    vals[0].v.u = MP_ATTACH_BY_VALUE;
    vals[1].tag = MP_TAG_ATTACH_LONG_FILENAME;
    vals[2].tag = MP_TAG_ATTACH_FILENAME;
    vals[3].tag = MP_TAG_ATTACH_MIME_TAG;
    if (unicode(a, fname, &vals[1].v) || unicode(a, fname, &vals[2].v) ||
        unicode(a, "text/plain", &vals[3].v))
        return -1;
    vals[4].tag = MP_TAG_ATTACH_DATA;
    vals[4].v.type = MP_PT_BINARY;
    vals[4].v.p = (const uint8_t *)at->notice;
    vals[4].v.n = (uint32_t)strlen(at->notice);
    *ca = (struct mp_rop_req_CreateAttachment){MP_ROP_CreateAttachment, logon, hidx, k};
    sp->RopId = MP_ROP_SetProperties;
    sp->LogonId = logon;
    sp->InputHandleIndex = k;
    sp->PropertyValueCount = 5;
    sp->PropertyValues = vals;
    /* ResponseHandleIndex: the containing message, InputHandleIndex: the
     * attachment (MS-OXCMSG 2.2.3.15); SaveFlags 0x02 KeepOpenReadWrite
     * (2.2.3.3.1), released right after */
    *sa = (struct mp_rop_req_SaveChangesAttachment){MP_ROP_SaveChangesAttachment, logon, hidx, k,
                                                    0x02};
    *rl = (struct mp_rop_req_Release){MP_ROP_Release, logon, k};
    if (mp_ropstage_inject(call, before, MP_ROP_CreateAttachment, ca) ||
        mp_ropstage_inject(call, before, MP_ROP_SetProperties, sp) ||
        mp_ropstage_inject(call, before, MP_ROP_SaveChangesAttachment, sa) ||
        mp_ropstage_inject(call, before, MP_ROP_Release, rl))
        return -1;
    return 0;
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
            continue;            /* a named property whose id the session never showed */
        if (v->sets[i].binary) { /* mp_message_set_binary: the bytes as they are */
            vals[n].tag = (uint32_t)id << 16 | 0x0102;
            vals[n].v = (struct mp_rop_pval){.type = 0x0102,
                                             .p = (const uint8_t *)v->sets[i].value,
                                             .n = (uint32_t)v->sets[i].len};
            n++;
            continue;
        }
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
        if (v->atts[i].notice &&
            notice_attachment(call, a, rop_index, logon, hidx, msg, &v->atts[i]))
            return -1;
    }
    return 0;
}
