/* fxdump: decode a FastTransfer stream (MS-OXCFXICS 2.2.4) with src/fx,
 * re-encode it from the events, compare, and print JSON.  A test driver
 * for tests/integration/test_fx_sync.py and a debugging aid.
 *
 *   fxdump FILE...
 *
 * The files are the stream's buffers in order (e.g. each TransferBuffer of
 * RopFastTransferSourceGetBuffer), fed to the decoder one by one, so the
 * decoder sees the same splits as on the wire.  Prints one JSON object:
 *   {"status":"ok","exact":true,"bytes":N,"buffers":K,"atoms":[...],
 *    "changes":C,"subjects":[...],"max_depth":D}
 * atoms: {"marker":"StartMessage"} or {"tag":"0x0037001f","len":L}
 * (len summed over the values; "count" for multi-valued, "named" for named
 * properties).  Exit status 0 when the stream decoded and re-encoded byte
 * for byte, 1 when it did not decode, 2 on a mismatch or bad input. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/slurp.h"
#include "fx/fxstream.h"

struct st {
    struct mp_fx_enc enc;
    struct mp_json *atoms, *subjects;
    uint64_t len;
    int changes, max_depth;
    uint16_t subj[2048];
    size_t subj_n;
};

static int on_ev(void *ud, const struct mp_fx_event *ev)
{
    struct st *s = ud;
    mp_fx_enc_event(&s->enc, ev);
    if (ev->depth > s->max_depth)
        s->max_depth = ev->depth;
    char tag[16];
    switch (ev->kind) {
    case MP_FX_EV_MARKER:
        mp_json_obj_begin(s->atoms);
        mp_json_key(s->atoms, "marker");
        mp_json_str(s->atoms, mp_fx_marker_name(ev->tag));
        mp_json_obj_end(s->atoms);
        break;
    case MP_FX_EV_PROP:
        s->len = 0;
        s->subj_n = 0;
        break;
    case MP_FX_EV_DATA:
        if (mp_fx_type_size(ev->type) == 0 || ev->mv)
            s->len += ev->n;
        if (ev->tag == 0x0037001F)
            for (size_t i = 0; i + 1 < ev->n && s->subj_n + 1 < 2048; i += 2)
                s->subj[s->subj_n++] = (uint16_t)(ev->p[i] | ev->p[i + 1] << 8);
        break;
    case MP_FX_EV_PROP_END:
        snprintf(tag, sizeof tag, "0x%08x", ev->tag);
        mp_json_obj_begin(s->atoms);
        mp_json_key(s->atoms, "tag");
        mp_json_str(s->atoms, tag);
        mp_json_key(s->atoms, "len");
        mp_json_u64(s->atoms, s->len);
        if (ev->mv) {
            mp_json_key(s->atoms, "count");
            mp_json_u64(s->atoms, ev->count);
        }
        if (ev->named) {
            mp_json_key(s->atoms, "named");
            mp_json_bool(s->atoms, true);
        }
        mp_json_obj_end(s->atoms);
        if (ev->tag == 0x0037001F) {
            s->subj[s->subj_n] = 0;
            while (s->subj_n && s->subj[s->subj_n - 1] == 0)
                s->subj[--s->subj_n] = 0;
            mp_json_wstr(s->subjects, s->subj);
        }
        break;
    case MP_FX_EV_CHANGE_END:
        s->changes++;
        break;
    default:
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fxdump FILE...\n");
        return 2;
    }
    struct mp_buf ab = {0}, sb = {0};
    struct mp_json aj, sj;
    mp_json_init(&aj, &ab);
    mp_json_init(&sj, &sb);
    mp_json_arr_begin(&aj);
    mp_json_arr_begin(&sj);
    struct st s = {.atoms = &aj, .subjects = &sj};
    mp_fx_enc_init(&s.enc);
    struct mp_fx_parser *p = mp_fx_parser_new(on_ev, &s);
    uint8_t *all = NULL;
    size_t total = 0;
    int r = 0;
    bool unreadable = false;
    for (int i = 1; i < argc && !r; i++) {
        size_t n;
        uint8_t *b = mp_slurp(argv[i], &n);
        if (!b) {
            fprintf(stderr, "fxdump: cannot read %s\n", argv[i]);
            unreadable = true;
            break;
        }
        uint8_t *grown = realloc(all, total + n + 1);
        if (!grown) {
            fprintf(stderr, "fxdump: out of memory\n");
            free(b);
            unreadable = true;
            break;
        }
        all = grown;
        memcpy(all + total, b, n);
        total += n;
        r = mp_fx_feed(p, b, n);
        free(b);
    }
    if (unreadable) {
        mp_fx_parser_free(p);
        mp_fx_enc_free(&s.enc);
        mp_buf_free(&ab);
        mp_buf_free(&sb);
        free(all);
        return 2;
    }
    if (!r)
        r = mp_fx_finish(p);
    mp_json_arr_end(&aj);
    mp_json_arr_end(&sj);
    bool exact = !r && !s.enc.err && s.enc.len == total && !memcmp(s.enc.out, all, total);
    printf("{\"status\":\"%s\",\"exact\":%s,\"bytes\":%zu,\"buffers\":%d,", r ? "error" : "ok",
           exact ? "true" : "false", total, argc - 1);
    if (r) {
        printf("\"error\":");
        struct mp_buf eb = {0};
        struct mp_json ej;
        mp_json_init(&ej, &eb);
        mp_json_str(&ej, mp_fx_error(p) ? mp_fx_error(p) : "callback");
        fwrite(eb.data + eb.off, 1, eb.len - eb.off, stdout);
        mp_buf_free(&eb);
        printf(",");
    }
    printf("\"changes\":%d,\"max_depth\":%d,\"subjects\":", s.changes, s.max_depth);
    fwrite(sb.data + sb.off, 1, sb.len - sb.off, stdout);
    printf(",\"atoms\":");
    fwrite(ab.data + ab.off, 1, ab.len - ab.off, stdout);
    printf("}\n");
    mp_fx_parser_free(p);
    mp_fx_enc_free(&s.enc);
    mp_buf_free(&ab);
    mp_buf_free(&sb);
    free(all);
    return r ? 1 : exact ? 0 : 2;
}
