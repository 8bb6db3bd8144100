/* Verdicts inside FastTransfer streams (doc/internals/content.md, "Verdicts
 * in cached mode").  Held streams (mapiproxy:fx hold limit, fxhold.h): a
 * message's bytes wait in the context's queue until its verdict, then are
 * re-encoded with it (mp_msgfx_apply_held) and the stream re-chunked to
 * the client's buffers (mp_asm_emit).  Without holding: a blocked ICS
 * download message is replaced, in the
 * RopFastTransferSourceGetBuffer response that carries it whole, by a
 * notice message of exactly the same length: the same messageChangeHeader
 * bytes (PidTagSourceKey, PidTagChangeKey, PidTagMid ... so the client's ICS
 * state stays consistent), then IncrSyncMessage and a property list that
 * says why, padded (PidTagHtml) to the original's length.  Every other byte
 * and every buffer boundary stay as the server sent them, so TransferStatus,
 * InProgressCount, TotalStepCount and the client's BufferSize all still
 * hold, and the progress information (IncrSyncProgressPerMsg) still adds
 * up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/msgevents.h"
#include "auth/ntlm_crypto.h"
#include "content/assemble.h"
#include "content/fxhold.h"
#include "content/message.h"
#include "fx/fxstream.h"
#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

enum {
    TAG_MESSAGE_CLASS = 0x001A001F,
    TAG_SUBJECT = 0x0037001F,
    TAG_BODY = 0x1000001F,
    TAG_HTML = 0x10130102,
};

/* A UTF-16LE string value (ASCII in, with its terminator), into e. */
static void put_str(struct mp_fx_enc *e, uint32_t tag, const char *s)
{
    uint8_t b[1024];
    size_t n = 0;
    for (; *s && n + 4 <= sizeof b; s++) {
        b[n++] = (uint8_t)((unsigned char)*s < 0x80 ? *s : '?');
        b[n++] = 0;
    }
    b[n++] = 0;
    b[n++] = 0;
    mp_fx_enc_var(e, tag, NULL, b, (uint32_t)n);
}

/* The notice's property list (MessageClass, Subject, Body), shorter for a
 * higher level (0-3). */
static void notice_props(struct mp_fx_enc *e, const char *reason, int level)
{
    char subject[300], body[600];
    snprintf(subject, sizeof subject, "[Blocked] %s", reason);
    snprintf(body, sizeof body,
             "A message was removed from this folder by the mail proxy: %s.\r\n"
             "Ask your administrator if you need it.\r\n",
             reason);
    if (level < 3)
        put_str(e, TAG_MESSAGE_CLASS, "IPM.Note");
    put_str(e, TAG_SUBJECT, level < 2 ? subject : "[Blocked]");
    if (level < 1)
        put_str(e, TAG_BODY, body);
}

/* The notice's bytes after the change header, exactly n long; 0 or -1
 * (does not fit). */
int mp_msgfx_notice(struct mp_fx_enc *e, size_t n, const char *reason)
{
    for (int level = 0; level < 4; level++) {
        mp_fx_enc_free(e);
        mp_fx_enc_init(e);
        mp_fx_enc_marker(e, MP_FX_IncrSyncMessage);
        notice_props(e, reason, level);
        if (e->err || e->len + 8 > n)
            continue;
        /* PidTagHtml pads to the exact length (a binary takes any length;
         * at most a TransferBuffer, 64 KB) */
        static const char html[] = "<html><body><p>[Blocked]</p></body></html>";
        size_t pad = n - e->len - 8;
        uint8_t *v = malloc(pad ? pad : 1);
        if (!v)
            return -1;
        memset(v, ' ', pad);
        memcpy(v, html, pad < sizeof html - 1 ? pad : sizeof html - 1);
        mp_fx_enc_var(e, TAG_HTML, NULL, v, (uint32_t)pad);
        free(v);
        return e->err || e->len != n ? -1 : 0;
    }
    return -1;
}

int mp_msgfx_block_download(struct mp_call *call, int req_index, uint32_t off, uint32_t len,
                            uint32_t hdr_len, const char *reason)
{
    size_t nrs = mp_call_rop_count(call, true);
    for (size_t j = 0; j < nrs; j++) {
        if (mp_call_rop_request_index(call, j) != req_index ||
            mp_call_rop_id(call, true, j) != MP_ROP_FastTransferSourceGetBuffer)
            continue;
        struct mp_rop_rsp_FastTransferSourceGetBuffer *r = mp_call_rop(call, true, j);
        if (!r || r->ReturnValue || !r->TransferBuffer || hdr_len >= len ||
            (uint64_t)off + len > r->TransferBufferSize)
            return -1;
        struct mp_fx_enc e;
        mp_fx_enc_init(&e);
        int rc = mp_msgfx_notice(&e, len - hdr_len, reason);
        uint8_t *nb = rc ? NULL : mp_call_alloc(call, r->TransferBufferSize);
        if (nb) {
            memcpy(nb, r->TransferBuffer, r->TransferBufferSize);
            memcpy(nb + off + hdr_len, e.out, e.len);
            r->TransferBuffer = nb;
            mp_call_rop_changed(call, true, j);
        }
        mp_fx_enc_free(&e);
        return nb ? 0 : -1;
    }
    return -1;
}

static uint8_t *utf16z(const char *s, uint32_t *n)
{
    size_t cap = strlen(s) * 2 + 2, k = 0;
    uint8_t *b = malloc(cap);
    if (!b || mp_utf8_to_utf16le(s, b, cap, &k) || k + 2 > cap) {
        free(b);
        return NULL;
    }
    b[k] = b[k + 1] = 0;
    *n = (uint32_t)k + 2;
    return b;
}

int mp_msgfx_apply_held(struct mp_asm *a, const struct mp_fx_span *sp,
                        const struct mp_msgev_verdict *v)
{
    if (!v->blocked && !v->prefix && !v->nsets && !v->natts)
        return 0;
    size_t n;
    const uint8_t *in = mp_asm_held(a, sp, &n);
    if (!in)
        return -1;
    struct mp_fx_enc notice, out;
    mp_fx_enc_init(&notice);
    mp_fx_enc_init(&out);
    struct mp_fxrw rw = {.kind = (enum mp_fxrw_kind)sp->kind};
    struct mp_fxrw_set *sets = calloc(v->nsets + 1, sizeof(*sets));
    struct mp_fx_named *names = calloc(v->nsets + 1, sizeof(*names));
    struct mp_fxrw_att *atts = calloc(v->natts + 1, sizeof(*atts));
    int rc = -1;
    if (!sets || !names || !atts)
        goto out;
    if (v->blocked) {
        notice_props(&notice, v->reason, 0);
        if (notice.err)
            goto out;
        rw.block = notice.out;
        rw.block_len = notice.len;
    } else {
        rw.prefix = v->prefix;
        for (size_t i = 0; i < v->nsets; i++) {
            struct mp_fxrw_set *s = &sets[rw.nsets];
            if (!v->sets[i].id)
                continue;            /* a named property the session never mapped */
            if (v->sets[i].binary) { /* mp_message_set_binary: the bytes */
                uint8_t *b = malloc(v->sets[i].len ? v->sets[i].len : 1);
                if (!b || v->sets[i].len > UINT32_MAX) {
                    free(b);
                    goto out;
                }
                memcpy(b, v->sets[i].value, v->sets[i].len);
                s->tag = (uint32_t)v->sets[i].id << 16 | 0x0102;
                s->v = b;
                s->n = (uint32_t)v->sets[i].len;
                rw.nsets++;
                continue;
            }
            s->tag = (uint32_t)v->sets[i].id << 16 | 0x001F;
            s->v = utf16z(v->sets[i].value, &s->n);
            if (!s->v)
                goto out;
            if (v->sets[i].named) {
                struct mp_fx_named *np = &names[rw.nsets];
                memcpy(np->guid, v->sets[i].guid, 16);
                np->kind = 1;
                uint32_t ln = 0;
                np->name = utf16z(v->sets[i].name ? v->sets[i].name : "", &ln);
                if (!np->name)
                    goto out;
                np->name_len = ln - 2;
                s->np = np;
            }
            rw.nsets++;
        }
        rw.sets = sets;
        for (size_t i = 0; i < v->natts; i++)
            atts[i] = (struct mp_fxrw_att){v->atts[i].num, v->atts[i].notice};
        rw.atts = atts;
        rw.natts = v->natts;
    }
    if (!mp_fxrw_message(in, n, &rw, &out))
        rc = mp_asm_replace(a, sp, out.out, out.len);
out:
    for (size_t i = 0; sets && names && i < v->nsets; i++) {
        free((void *)sets[i].v);
        free((void *)names[i].name);
    }
    free(sets);
    free(names);
    free(atts);
    mp_fx_enc_free(&notice);
    mp_fx_enc_free(&out);
    return rc;
}

int mp_msgfx_free_named_id(const struct mp_message *msg, const struct mp_msgev_set *sets,
                           size_t nsets)
{
    /* one pass over the properties and the sets into a bitmap of the ids
     * 0x8000-0xFFFF, then the highest free one below 0xFFFF */
    uint64_t used[0x8000 / 64] = {0};
    for (size_t i = 0; msg && i < msg->props.n; i++) {
        uint32_t id = msg->props.v[i].tag >> 16;
        if (id >= 0x8000)
            used[(id - 0x8000) / 64] |= 1ull << (id % 64);
    }
    for (size_t i = 0; i < nsets; i++)
        if (sets[i].id >= 0x8000)
            used[(sets[i].id - 0x8000u) / 64] |= 1ull << (sets[i].id % 64);
    used[0x7FFF / 64] |= 1ull << 63; /* 0xFFFF is not an id */
    for (int w = 0x8000 / 64 - 1; w >= 0; w--)
        if (~used[w])
            return 0x8000 + w * 64 + (63 - __builtin_clzll(~used[w]));
    return -1;
}
