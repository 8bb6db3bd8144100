/* mapiproxy-decode: print a DCE/RPC stub (or whole request/response PDUs)
 * of an EMSMDB, AsyncEMSMDB, NSPI or RFR call as JSON.
 *
 *   mapiproxy-decode --interface nspi|emsmdb|asyncemsmdb|rfr|UUID --opnum N --in|--out FILE
 *   mapiproxy-decode --interface I [--opnum N] --pdu FILE
 *   mapiproxy-decode --mapihttp REQUESTTYPE --request|--response FILE [--stream]
 *
 * EcDoRpc and EcDoRpcExt2 also get "rops": their ROP buffers (RPC_HEADER_EXT
 * undone, LZ77 and XOR undone) decoded ROP by ROP.  A response is decoded
 * best with its request: --request FILE (a stub, or PDUs with --pdu) gives
 * the request ROPs as context (property tags, table columns) and lets the
 * tool name the server objects the response created ("objects").
 *
 * --pdu takes the bytes of one call's request or response fragments,
 * concatenated; they are reassembled (the opnum of a request comes from its
 * header).  FILE "-" reads stdin.  Property tags print as hex ("0x0037001F").
 * Exit status (also in --help): 0 JSON on stdout, everything decoded; 1 the
 * input cannot be read or its NDR (or MAPI/HTTP body) does not decode, a
 * message on stderr; 2 usage errors; 3 the NDR decoded (JSON on stdout)
 * but an EcDoRpc/EcDoRpcExt2 ROP buffer or its RPC_HEADER_EXT chain did
 * not ("undecodable" in the JSON, a message on stderr). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/json.h"
#include "codec/gen/emsmdb.h"
#include "dcerpc/pdu.h"
#include "transport/mapihttp/body.h"
#include "rop/objects.h"
#include "rop/rop.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"
#include "transport/mapihttp/stream.h"

static void help(FILE *f)
{
    fprintf(f, "usage: mapiproxy-decode --interface nspi|emsmdb|asyncemsmdb|rfr|UUID --opnum N "
               "--in|--out FILE\n"
               "       mapiproxy-decode --interface I [--opnum N] --pdu FILE\n"
               "       (EcDoRpc/EcDoRpcExt2 responses: --request FILE for the request's ROPs)\n"
               "       mapiproxy-decode --mapihttp REQUESTTYPE --request|--response FILE "
               "[--stream]\n"
               "JSON on stdout; property tags as hex (\"0x0037001F\").  Exit status:\n"
               "  0  everything decoded\n"
               "  1  the file cannot be read, or its NDR stub / MAPI/HTTP body does not decode\n"
               "  2  usage error\n"
               "  3  the NDR decoded (JSON printed) but a ROP buffer or RPC_HEADER_EXT chain of\n"
               "     EcDoRpc/EcDoRpcExt2 did not (\"undecodable\" in the JSON)\n");
}

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
    help(stderr);
    exit(2);
}

static int read_file(const char *path, struct mp_buf *b)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return -1;
    uint8_t tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (mp_buf_append(b, tmp, n)) {
            n = 0;
            break;
        }
    int bad = ferror(f);
    if (f != stdin)
        fclose(f);
    return bad ? -1 : 0;
}

/* Reassembles the stub of one call from concatenated fragments.  Returns
 * NULL on success or a message; *ptype and *opnum are set from the first
 * fragment. */
static const char *reassemble(const uint8_t *p, size_t len, struct mp_buf *stub, int *ptype,
                              int *opnum)
{
    size_t off = 0;
    int first = 1;
    while (off < len) {
        struct mp_pdu_hdr h;
        if (len - off < MP_HDR_LEN)
            return "truncated PDU header";
        const char *why = mp_pdu_hdr_check(p + off, len - off, &h);
        if (why)
            return why;
        if (h.frag_len > len - off)
            return "truncated fragment";
        const uint8_t *f = p + off;
        size_t hdr;
        if (h.ptype == MP_PT_REQUEST) {
            hdr = MP_REQ_HDR_LEN + ((h.flags & MP_PFC_OBJECT_UUID) ? 16 : 0);
            if (first)
                *opnum = mp_get16(f + 22);
        } else if (h.ptype == MP_PT_RESPONSE) {
            hdr = MP_RESP_HDR_LEN;
        } else if (h.ptype == MP_PT_FAULT) {
            static char msg[64];
            snprintf(msg, sizeof msg, "fault PDU, status 0x%08x",
                     h.frag_len >= 28 ? mp_get32(f + 24) : 0);
            return msg;
        } else {
            return "not a request or response PDU";
        }
        if (first)
            *ptype = h.ptype;
        else if (h.ptype != *ptype)
            return "fragments of different PDU types";
        if ((first != 0) != ((h.flags & MP_PFC_FIRST) != 0))
            return "PFC_FIRST flag out of place";
        size_t end = h.frag_len;
        if (h.auth_len) {
            struct mp_auth a;
            if (mp_pdu_auth(f, &h, &a))
                return "bad auth verifier";
            if (a.level >= 6)
                return "stub is sealed (auth level privacy)";
            end = h.frag_len - h.auth_len - MP_SEC_TRAILER_LEN;
            if (a.pad_len > end)
                return "bad auth padding";
            end -= a.pad_len;
        }
        if (end < hdr)
            return "fragment shorter than its header";
        if (mp_buf_append(stub, f + hdr, end - hdr))
            return "out of memory";
        off += h.frag_len;
        first = 0;
        if (h.flags & MP_PFC_LAST) {
            if (off != len)
                return "bytes after the last fragment";
            return NULL;
        }
    }
    return "no fragment with PFC_LAST";
}

/* The ROP buffers of an EcDoRpc (2) / EcDoRpcExt2 (11) stub: the un-XORed,
 * decompressed payload contents.  0, or -1 with *why. */
static int rop_payloads(int opnum, bool out, const void *v, struct mp_rpcext *x, uint8_t **flat,
                        size_t *flat_len, const char **why)
{
    const uint8_t *rgb = NULL;
    size_t len = 0;
    if (opnum == 11) {
        const struct emsmdb_EcDoRpcExt2_in *in = v;
        const struct emsmdb_EcDoRpcExt2_out *o = v;
        rgb = out ? o->rgbOut : in->rgbIn;
        len = out ? o->pcbOut : in->cbIn;
        int st = rgb ? mp_rpcext_parse(x, rgb, len) : MP_RPCEXT_ETRUNC;
        *why = st ? mp_rpcext_strerror(st) : NULL;
        return st ? -1 : 0;
    }
    const struct emsmdb_EcDoRpc_in *in = v;
    const struct emsmdb_EcDoRpc_out *o = v;
    rgb = out ? o->rgb : in->rgb;
    len = out ? o->pcb : in->pcb;
    *flat = rgb ? malloc(len ? len : 1) : NULL;
    if (!*flat) {
        *why = "no buffer";
        return -1;
    }
    memcpy(*flat, rgb, len);
    mp_emsmdb_xor(*flat, len);
    *flat_len = len;
    return 0;
}

struct ropset {
    struct mp_rpcext x;
    uint8_t *flat;
    size_t flat_len, n;
    struct mp_rop_buf bufs[64];
    bool ok[64];
};

static void ropset_decode(struct ropset *rs, bool response, const struct ropset *reqs,
                          struct mp_arena *a)
{
    rs->n = rs->flat ? 1 : rs->x.n < 64 ? rs->x.n : 64;
    for (size_t i = 0; i < rs->n; i++) {
        size_t n = rs->flat_len;
        const uint8_t *p = rs->flat ? rs->flat : mp_rpcext_content(&rs->x, i, &n);
        struct mp_rop_ctx ctx = {0};
        if (reqs && i < reqs->n && reqs->ok[i])
            ctx.requests = &reqs->bufs[i];
        rs->ok[i] = mp_rop_decode(&rs->bufs[i], p, n, response, reqs ? &ctx : NULL, a) == MP_ROP_OK;
    }
}

static void ropset_print(struct mp_json *j, const struct ropset *rs, const struct ropset *reqs)
{
    mp_json_key(j, "rops");
    mp_json_arr_begin(j);
    for (size_t i = 0; i < rs->n; i++) {
        if (!rs->ok[i]) {
            mp_json_obj_begin(j);
            mp_json_key(j, "undecodable");
            mp_json_str(j, rs->bufs[i].why ? rs->bufs[i].why : "error");
            mp_json_key(j, "offset");
            mp_json_u64(j, rs->bufs[i].bad_off);
            mp_json_obj_end(j);
        } else {
            mp_rop_print(j, &rs->bufs[i]);
        }
    }
    mp_json_arr_end(j);
    if (!reqs)
        return;
    /* the server objects this response created */
    mp_json_key(j, "objects");
    mp_json_arr_begin(j);
    for (size_t i = 0; i < rs->n && i < reqs->n; i++) {
        const struct mp_rop_buf *b = &rs->bufs[i], *q = &reqs->bufs[i];
        if (!rs->ok[i] || !reqs->ok[i])
            continue;
        for (size_t k = 0; k < b->n; k++) {
            const struct mp_rop *r = &b->rops[k];
            if (r->opaque || !r->v || r->req_index < 0)
                continue;
            const struct mp_rop *rq = &q->rops[r->req_index];
            int oh = mp_rop_out_slot(rq);
            if (oh < 0 || (size_t)oh >= b->nhandles || mp_rop_return_value(r))
                continue;
            mp_json_obj_begin(j);
            mp_json_key(j, "handle");
            mp_rj_hex(j, b->handles[oh], 8);
            mp_json_key(j, "type");
            mp_json_str(j, mp_object_type_name(mp_object_type_for_rop(rq->rop_id)));
            mp_json_key(j, "created_by");
            mp_json_str(j, rq->desc->name);
            mp_json_key(j, "handle_index");
            mp_json_u64(j, oh);
            mp_json_obj_end(j);
        }
    }
    mp_json_arr_end(j);
}

static void ropset_free(struct ropset *rs)
{
    mp_rpcext_free(&rs->x);
    free(rs->flat);
}

/* Decodes the stub of a request given with --request. */
static void *load_request(const char *file, bool pdu, const struct mp_call_codec *cc,
                          struct mp_arena *a)
{
    struct mp_buf in = {0}, stub = {0};
    void *v = NULL;
    if (read_file(file, &in))
        goto out;
    const uint8_t *sp = in.data;
    size_t slen = in.len;
    if (pdu) {
        int ptype = -1, op = -1;
        if (reassemble(in.data, in.len, &stub, &ptype, &op) || ptype != MP_PT_REQUEST)
            goto out;
        sp = stub.data;
        slen = stub.len;
    }
    v = mp_arena_alloc(a, cc->in_size);
    static const uint8_t empty[1];
    if (v && cc->pull_in(sp ? sp : empty, slen, v, a))
        v = NULL;
out:
    mp_buf_free(&in);
    mp_buf_free(&stub);
    return v;
}

/* Writes the finished JSON object and a newline to stdout; the exit code. */
static int emit(const struct mp_json *j, const struct mp_buf *out)
{
    if (j->err) {
        fprintf(stderr, "mapiproxy-decode: JSON output failed\n");
        return 1;
    }
    fwrite(out->data, 1, out->len, stdout);
    putchar('\n');
    return fflush(stdout) ? 1 : 0;
}

/* --mapihttp: a MAPI over HTTP body (src/mapihttp/body.h); with --stream the
 * file is a whole response entity (PROCESSING/PENDING/DONE, headers, body). */
static int mapihttp_main(int argc, char **argv)
{
    const char *type = NULL, *file = NULL;
    int dir = -1, stream = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mapihttp") && i + 1 < argc)
            type = argv[++i];
        else if ((!strcmp(argv[i], "--request") || !strcmp(argv[i], "--response")) &&
                 i + 1 < argc && !file) {
            dir = !strcmp(argv[i], "--response");
            file = argv[++i];
        } else if (!strcmp(argv[i], "--stream"))
            stream = 1;
        else
            usage();
    }
    if (!type || !file || (stream && dir != 1))
        usage();
    int k = mp_mh_kind_lookup(type);
    if (k < 0) {
        fprintf(stderr, "mapiproxy-decode: unknown X-RequestType '%s'\n", type);
        return 2;
    }
    struct mp_buf in = {0}, out = {0};
    struct mp_arena a;
    mp_arena_init(&a);
    struct mp_mh_stream st;
    mp_mh_stream_init(&st);
    int rc = 1;
    if (read_file(file, &in)) {
        fprintf(stderr, "mapiproxy-decode: %s: %s\n", file, strerror(errno));
        goto done;
    }
    const uint8_t *bp = in.data;
    size_t blen = in.len;
    if (stream) {
        if (mp_mh_stream_feed(&st, in.data, in.len) || st.state != MP_MHS_BODY) {
            fprintf(stderr, "mapiproxy-decode: %s: bad response stream: %s\n", file,
                    st.error ? st.error : "ends before the body");
            goto done;
        }
        bp = st.body.data;
        blen = st.body.len;
    }
    static const uint8_t empty[1];
    struct mp_mh_body body;
    int drc = mp_mh_decode(k, dir, bp ? bp : empty, blen, &body, &a);
    if (drc != MP_MH_OK) {
        uint32_t xrc = dir ? MP_MH_RC_INVALID_RESPONSE : mp_mh_request_error_code(drc);
        fprintf(stderr,
                "mapiproxy-decode: cannot decode %s %s (%zu bytes): %s (X-ResponseCode %u)\n",
                mp_mh_kind_info(k)->name, dir ? "response" : "request", blen,
                drc == MP_MH_EUNSUPPORTED ? "not representable in the RPC structures"
                                          : "malformed or truncated",
                xrc);
        goto done;
    }
    struct mp_json j;
    mp_json_init(&j, &out);
    mp_json_obj_begin(&j);
    if (stream) {
        mp_json_key(&j, "stream");
        mp_json_obj_begin(&j);
        mp_json_key(&j, "processing");
        mp_json_u64(&j, st.n_processing);
        mp_json_key(&j, "pending");
        mp_json_u64(&j, st.n_pending);
        mp_json_key(&j, "X-ResponseCode");
        if (st.have_response_code)
            mp_json_u64(&j, st.response_code);
        else
            mp_json_null(&j);
        mp_json_key(&j, "X-ElapsedTime");
        if (st.have_elapsed_time)
            mp_json_u64(&j, st.elapsed_time);
        else
            mp_json_null(&j);
        mp_json_key(&j, "X-StartTime");
        mp_json_str(&j, st.start_time);
        mp_json_obj_end(&j);
    }
    mp_json_key(&j, "body_len");
    mp_json_u64(&j, blen);
    mp_json_key(&j, "exact");
    mp_json_bool(&j, body.exact);
    mp_json_key(&j, "value");
    mp_mh_print(&j, &body);
    mp_json_obj_end(&j);
    rc = emit(&j, &out);
done:
    mp_mh_stream_free(&st);
    mp_arena_free(&a);
    mp_buf_free(&in);
    mp_buf_free(&out);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            help(stdout);
            return 0;
        }
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--mapihttp"))
            return mapihttp_main(argc, argv);
    const char *iface_name = NULL, *file = NULL, *reqfile = NULL;
    int opnum = -1, dir = -1, pdu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--interface") && i + 1 < argc) {
            iface_name = argv[++i];
        } else if (!strcmp(argv[i], "--opnum") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 0);
            if (*end || v < 0 || v > 65535)
                usage();
            opnum = (int)v;
        } else if (!strcmp(argv[i], "--request") && i + 1 < argc) {
            reqfile = argv[++i];
        } else if ((!strcmp(argv[i], "--in") || !strcmp(argv[i], "--out") ||
                    !strcmp(argv[i], "--pdu")) &&
                   i + 1 < argc) {
            if (file)
                usage();
            dir = !strcmp(argv[i], "--in") ? 0 : !strcmp(argv[i], "--out") ? 1 : -1;
            pdu = !strcmp(argv[i], "--pdu");
            file = argv[++i];
        } else {
            usage();
        }
    }
    if (!iface_name || !file || (!pdu && opnum < 0))
        usage();
    const struct mp_codec_iface *ifc = mp_codec_iface_lookup(iface_name);
    if (!ifc) {
        fprintf(stderr, "mapiproxy-decode: unknown interface '%s'\n", iface_name);
        return 2;
    }
    struct mp_buf in = {0}, stub = {0}, out = {0};
    struct mp_arena a;
    mp_arena_init(&a);
    void *v = NULL;
    int rc = 1;
    if (read_file(file, &in)) {
        fprintf(stderr, "mapiproxy-decode: %s: %s\n", file, strerror(errno));
        goto done;
    }
    const uint8_t *sp = in.data;
    size_t slen = in.len;
    if (pdu) {
        int ptype = -1, hop = -1;
        const char *why = reassemble(in.data, in.len, &stub, &ptype, &hop);
        if (why) {
            fprintf(stderr, "mapiproxy-decode: %s: %s\n", file, why);
            goto done;
        }
        dir = ptype == MP_PT_REQUEST ? 0 : 1;
        if (opnum < 0)
            opnum = hop;
        if (opnum < 0) {
            fprintf(stderr, "mapiproxy-decode: a response PDU needs --opnum\n");
            rc = 2;
            goto done;
        }
        sp = stub.data;
        slen = stub.len;
    }
    const struct mp_call_codec *cc = mp_codec_iface_call(ifc, (uint16_t)opnum);
    if (!cc) {
        fprintf(stderr, "mapiproxy-decode: %s has no operation %d with a codec\n", ifc->name,
                opnum);
        goto done;
    }
    v = calloc(1, dir ? cc->out_size : cc->in_size);
    static const uint8_t empty[1];
    if (!v || (dir ? cc->pull_out : cc->pull_in)(sp ? sp : empty, slen, v, &a)) {
        fprintf(stderr,
                "mapiproxy-decode: cannot decode %s %s (%zu bytes): malformed or "
                "truncated NDR\n",
                cc->name, dir ? "response" : "request", slen);
        goto done;
    }
    struct mp_json j;
    mp_json_init(&j, &out);
    mp_json_obj_begin(&j);
    mp_json_key(&j, "interface");
    mp_json_str(&j, ifc->name);
    mp_json_key(&j, "opnum");
    mp_json_u64(&j, (uint64_t)opnum);
    mp_json_key(&j, "operation");
    mp_json_str(&j, cc->name);
    mp_json_key(&j, "direction");
    mp_json_str(&j, dir ? "out" : "in");
    mp_json_key(&j, "stub_len");
    mp_json_u64(&j, slen);
    mp_json_key(&j, "value");
    (dir ? cc->print_out : cc->print_in)(&j, v);
    bool rops_bad = false;
    if (!strcmp(ifc->name, "exchange_emsmdb") && (opnum == 2 || opnum == 11)) {
        struct ropset *rs = calloc(1, sizeof(*rs)), *rq = NULL;
        const char *why = NULL;
        if (rs && rop_payloads(opnum, dir == 1, v, &rs->x, &rs->flat, &rs->flat_len, &why) == 0) {
            void *reqv = dir == 1 && reqfile ? load_request(reqfile, pdu, cc, &a) : NULL;
            if (dir == 1 && reqfile && !reqv)
                fprintf(stderr,
                        "mapiproxy-decode: %s: not a decodable %s request; response "
                        "ROPs decoded without it\n",
                        reqfile, cc->name);
            if (reqv && (rq = calloc(1, sizeof(*rq))) &&
                rop_payloads(opnum, false, reqv, &rq->x, &rq->flat, &rq->flat_len, &why) == 0)
                ropset_decode(rq, false, NULL, &a);
            else if (rq) {
                ropset_free(rq);
                free(rq);
                rq = NULL;
            }
            ropset_decode(rs, dir == 1, rq, &a);
            ropset_print(&j, rs, rq);
            for (size_t i = 0; i < rs->n; i++)
                if (!rs->ok[i]) {
                    fprintf(stderr,
                            "mapiproxy-decode: ROP buffer %zu does not decode: %s at offset %zu\n",
                            i, rs->bufs[i].why ? rs->bufs[i].why : "error", rs->bufs[i].bad_off);
                    rops_bad = true;
                }
        } else if (rs) {
            mp_json_key(&j, "rops");
            mp_json_str(&j, why ? why : "undecodable");
            fprintf(stderr, "mapiproxy-decode: the ROP payloads do not decode: %s\n",
                    why ? why : "undecodable");
            rops_bad = true;
        }
        if (rq)
            ropset_free(rq);
        free(rq);
        if (rs)
            ropset_free(rs);
        free(rs);
    }
    mp_json_obj_end(&j);
    rc = emit(&j, &out);
    if (rc == 0 && rops_bad)
        rc = 3;
done:
    free(v);
    mp_arena_free(&a);
    mp_buf_free(&in);
    mp_buf_free(&stub);
    mp_buf_free(&out);
    return rc;
}
