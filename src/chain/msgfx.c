/* Verdicts inside FastTransfer streams (doc/internals/content.md, "Verdicts
 * in cached mode"): a blocked ICS download message is replaced, in the
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

/* The notice's bytes after the change header, exactly n long; 0 or -1
 * (does not fit). */
int mp_msgfx_notice(struct mp_fx_enc *e, size_t n, const char *reason)
{
    char subject[300], body[600];
    snprintf(subject, sizeof subject, "[Blocked] %s", reason);
    snprintf(body, sizeof body,
             "A message was removed from this folder by the mail proxy: %s.\r\n"
             "Ask your administrator if you need it.\r\n",
             reason);
    for (int level = 0; level < 4; level++) {
        mp_fx_enc_free(e);
        mp_fx_enc_init(e);
        mp_fx_enc_marker(e, MP_FX_IncrSyncMessage);
        if (level < 3)
            put_str(e, TAG_MESSAGE_CLASS, "IPM.Note");
        put_str(e, TAG_SUBJECT, level < 2 ? subject : "[Blocked]");
        if (level < 1)
            put_str(e, TAG_BODY, body);
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
