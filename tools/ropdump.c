/* ropdump: decode ROP buffers (or RPC_HEADER_EXT chains holding them), encode
 * them again, compare, and print JSON.  A test driver and a debugging aid.
 *
 *   ropdump [--rpcext] REQUEST [RESPONSE]
 *
 * REQUEST/RESPONSE are files with a ROP request/response buffer, or with
 * --rpcext the rgbIn/rgbOut bytes (RPC_HEADER_EXT chains; each payload of the
 * response is one ROP response buffer).  The response is decoded with the
 * request as context.  Prints one JSON object:
 *   {"request":{"status":"ok","exact":true,"buffer":{...}},"response":{...}}
 * with "rpcext":[headers] and "chain_exact" in --rpcext mode.  Exit status 0
 * when everything decoded and re-encoded byte-exact, 1 when a buffer was
 * undecodable, 2 on a re-encoding mismatch or bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rop/rop.h"
#include "rop/ropjson.h"
#include "rop/rpcext.h"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int rc = 0;

/* Decodes one ROP buffer, prints {"status":..,"exact":..,"buffer":..}. */
static void one(struct mp_json *j, const uint8_t *p, size_t n, bool response,
                const struct mp_rop_ctx *ctx, struct mp_arena *a, struct mp_rop_buf *b)
{
    int st = mp_rop_decode(b, p, n, response, ctx, a);
    mp_rj_obj(j);
    mp_rj_key(j, "status");
    if (st == MP_ROP_OK) {
        mp_rj_cstr(j, "ok");
        struct mp_buf o = {0};
        bool exact = mp_rop_encode(&o, b) == 0 && o.len == n && memcmp(o.data, p, n) == 0;
        mp_buf_free(&o);
        if (!exact)
            rc = 2;
        mp_rj_key(j, "exact");
        mp_rj_bool(j, exact);
        mp_rj_key(j, "buffer");
        mp_rop_print(j, b);
    } else {
        mp_rj_cstr(j, st == MP_ROP_UNDECODABLE ? "undecodable" : "nomem");
        mp_rj_key(j, "offset");
        mp_rj_u64(j, b->bad_off);
        mp_rj_key(j, "why");
        mp_rj_cstr(j, b->why ? b->why : "");
        if (rc == 0)
            rc = 1;
    }
    mp_rj_obj_end(j);
}

static void side(struct mp_json *j, const char *key, const uint8_t *p, size_t n, bool response,
                 bool rpcext, const struct mp_rop_buf *reqs, struct mp_arena *a,
                 struct mp_rop_buf *out, struct mp_rpcext *keep)
{
    struct mp_rop_ctx ctx = {.requests = reqs};
    mp_rj_key(j, key);
    if (!rpcext) {
        one(j, p, n, response, &ctx, a, out);
        return;
    }
    struct mp_rpcext x;
    int st = mp_rpcext_parse(&x, p, n);
    *keep = x; /* decoded ROPs point into x.data: freed by the caller */
    mp_rj_obj(j);
    if (st) {
        mp_rj_key(j, "status");
        mp_rj_cstr(j, mp_rpcext_strerror(st));
        mp_rj_obj_end(j);
        rc = 2;
        return;
    }
    mp_rj_key(j, "rpcext");
    mp_rpcext_print(j, &x);
    struct mp_buf o = {0};
    bool exact = mp_rpcext_reencode_same(&o, &x) == 0 && o.len == x.consumed &&
                 memcmp(o.data, p, o.len) == 0;
    mp_buf_free(&o);
    if (!exact)
        rc = 2;
    mp_rj_key(j, "chain_exact");
    mp_rj_bool(j, exact);
    mp_rj_key(j, "payloads");
    mp_rj_arr(j);
    for (size_t i = 0; i < x.n; i++) {
        size_t cl;
        const uint8_t *c = mp_rpcext_content(&x, i, &cl);
        one(j, c, cl, response, &ctx, a, out);
    }
    mp_rj_arr_end(j);
    mp_rj_obj_end(j);
}

int main(int argc, char **argv)
{
    bool rpcext = false;
    int i = 1;
    if (i < argc && strcmp(argv[i], "--rpcext") == 0) {
        rpcext = true;
        i++;
    }
    if (argc - i < 1 || argc - i > 2) {
        fprintf(stderr, "usage: ropdump [--rpcext] REQUEST [RESPONSE]\n");
        return 2;
    }
    size_t nq = 0, ns = 0;
    uint8_t *q = slurp(argv[i], &nq), *s = NULL;
    if (!q) {
        perror(argv[i]);
        return 2;
    }
    if (argc - i == 2 && !(s = slurp(argv[i + 1], &ns))) {
        perror(argv[i + 1]);
        return 2;
    }
    struct mp_arena a = {0};
    struct mp_rop_buf rq, rs;
    memset(&rq, 0, sizeof rq);
    struct mp_buf out = {0};
    struct mp_json j;
    mp_rj_init(&j, &out);
    mp_rj_obj(&j);
    struct mp_rpcext kq = {0}, ks = {0};
    side(&j, "request", q, nq, false, rpcext, NULL, &a, &rq, &kq);
    if (s)
        side(&j, "response", s, ns, true, rpcext, rq.rops ? &rq : NULL, &a, &rs, &ks);
    mp_rj_obj_end(&j);
    fwrite(out.data, 1, out.len, stdout);
    fputc('\n', stdout);
    mp_buf_free(&out);
    mp_arena_free(&a);
    mp_rpcext_free(&kq);
    mp_rpcext_free(&ks);
    free(q);
    free(s);
    return rc;
}
