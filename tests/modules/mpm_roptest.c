/* A test-only module for the ROP hooks, whose behaviour comes from options:
 *   mpm_roptest:touch = yes       mark every decoded ROP changed, both ways
 *                                 (everything is re-encoded from its fields)
 *   mpm_roptest:swap = yes        RopWriteStream data: UTF-16 'H' -> 'J';
 *                                 RopReadStream data back: 'J' -> 'H'
 *   mpm_roptest:answer = ID:CODE  answer every request ROP ID with CODE
 *   mpm_roptest:drop = ID         drop every request ROP ID (RopRelease)
 *   mpm_roptest:log = PATH        one line per ROP: dir name object-type
 *   mpm_roptest:hold request = MS   hold every ROP request (MP_PENDING) for MS
 *   mpm_roptest:hold response = MS  ms, resume from a timer; the log lines are
 *                                 written after the wait (the objects are
 *                                 read then) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapiproxy/module.h"
#include "mapiproxy/rops.h"

struct conf {
    int touch, swap, answer_id, drop_id;
    long hold_req, hold_rsp;
    uint32_t answer_code;
    FILE *log;
};

static int r_init(struct mp_module_ctx *mc)
{
    struct conf *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->touch = mp_module_option_bool(mc, "touch", false);
    c->swap = mp_module_option_bool(mc, "swap", false);
    c->answer_id = -1;
    c->drop_id = -1;
    c->hold_req = mp_module_option_int(mc, "hold request", 0);
    c->hold_rsp = mp_module_option_int(mc, "hold response", 0);
    const char *a = mp_module_option(mc, "answer");
    if (a) {
        char *end;
        c->answer_id = (int)strtol(a, &end, 0);
        c->answer_code = *end == ':' ? (uint32_t)strtoul(end + 1, NULL, 0) : 0x80004005u;
    }
    const char *d = mp_module_option(mc, "drop");
    if (d)
        c->drop_id = (int)strtol(d, NULL, 0);
    const char *l = mp_module_option(mc, "log");
    if (l && !(c->log = fopen(l, "a"))) {
        free(c);
        return -1;
    }
    if (c->log)
        setvbuf(c->log, NULL, _IOLBF, 0);
    mp_module_set_private(mc, c);
    return 0;
}

static void r_fini(struct mp_module_ctx *mc)
{
    struct conf *c = mp_module_private(mc);
    if (c && c->log)
        fclose(c->log);
    free(c);
}

/* Swaps UTF-16LE character a for b in a copy of the data (call memory). */
static const uint8_t *swapped(struct mp_call *call, const uint8_t *p, size_t n, uint8_t a,
                              uint8_t b)
{
    uint8_t *q = mp_call_alloc(call, n ? n : 1);
    if (!q)
        return p;
    memcpy(q, p, n);
    for (size_t i = 0; i + 1 < n; i += 2)
        if (q[i] == a && q[i + 1] == 0)
            q[i] = b;
    return q;
}

static void log_rops(const struct conf *c, struct mp_call *call, bool response)
{
    if (!c->log)
        return;
    for (size_t i = 0; i < mp_call_rop_count(call, response); i++) {
        const struct mp_object *o = mp_call_rop_object(call, response, i);
        fprintf(c->log, "%s %s %s\n", response ? "rsp" : "req",
                mp_call_rop_name(call, response, i) ? mp_call_rop_name(call, response, i) : "?",
                o ? mp_object_type_name(o->type) : "-");
    }
}

struct hold {
    const struct conf *c;
    struct mp_call *call;
    bool response;
};

static void hold_done(void *arg)
{
    struct hold *h = arg;
    log_rops(h->c, h->call, h->response); /* the objects, after the wait */
    mp_call_resume(h->call, MP_CONTINUE);
    free(h);
}

/* MP_PENDING for ms milliseconds (0: log now and go on). */
static enum mp_status hold(struct mp_module_ctx *mc, struct mp_call *call, long ms, bool response)
{
    const struct conf *c = mp_module_private(mc);
    struct hold *h = ms > 0 ? malloc(sizeof(*h)) : NULL;
    if (!h) {
        log_rops(c, call, response);
        return MP_CONTINUE;
    }
    *h = (struct hold){c, call, response};
    if (mp_module_after(mc, (uint64_t)ms, hold_done, h)) {
        free(h);
        return MP_ERROR;
    }
    return MP_PENDING;
}

static enum mp_status r_request(struct mp_module_ctx *mc, struct mp_call *call)
{
    const struct conf *c = mp_module_private(mc);
    for (size_t i = 0; i < mp_call_rop_count(call, false); i++) {
        uint8_t id = mp_call_rop_id(call, false, i);
        if (c->touch)
            mp_call_rop_changed(call, false, i);
        if ((int)id == c->answer_id && mp_call_rop_answer(call, i, c->answer_code))
            return MP_ERROR;
        if ((int)id == c->drop_id && mp_call_rop_drop(call, false, i))
            return MP_ERROR;
        struct mp_rop_req_WriteStream *w = mp_call_rop(call, false, i);
        if (c->swap && id == MP_ROP_WriteStream && w) {
            w->Data = swapped(call, w->Data, w->DataSize, 'H', 'J');
            mp_call_rop_changed(call, false, i);
        }
    }
    return hold(mc, call, c->hold_req, false);
}

static enum mp_status r_response(struct mp_module_ctx *mc, struct mp_call *call)
{
    const struct conf *c = mp_module_private(mc);
    for (size_t i = 0; i < mp_call_rop_count(call, true); i++) {
        if (c->touch)
            mp_call_rop_changed(call, true, i);
        struct mp_rop_rsp_ReadStream *r = mp_call_rop(call, true, i);
        if (c->swap && mp_call_rop_id(call, true, i) == MP_ROP_ReadStream && r &&
            r->ReturnValue == 0) {
            r->Data = swapped(call, r->Data, r->DataSize, 'J', 'H');
            mp_call_rop_changed(call, true, i);
        }
    }
    return hold(mc, call, c->hold_rsp, true);
}

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "mpm_roptest",
    .description = "test module for the ROP hooks",
    .init = r_init,
    .fini = r_fini,
    .rop_request = r_request,
    .rop_response = r_response,
};
