/* A test-only module for the descriptor-watch service: on the calls it
 * wants (mpm_fdwatch:opnum of exchange_ds_rfr, default 1:
 * RfrGetFQDNFromServerDN) its dispatch hook holds the call PENDING, asks an
 * outside service over TCP (mpm_fdwatch:server = 127.0.0.1:PORT) with one
 * line, and resumes the call when the service's one-line reply arrives.
 * Non-blocking connect, write and read, all through mp_module_watch_fd.
 * Options have a schema (and a check hook for `server`), for --check. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mapiproxy/module.h"

struct op;
struct conf {
    struct sockaddr_in addr;
    long opnum;
    struct op *ops; /* in flight: fini frees them (a stop while one waits) */
};

struct op {
    struct op *next;
    struct mp_module_ctx *mc;
    struct mp_call *call;
    struct mp_fdwatch *w;
    int fd;
    char out[160];
    size_t out_len, out_off;
    char in[160];
    size_t in_len;
};

static int parse_server(const char *v, struct sockaddr_in *a)
{
    char host[64];
    unsigned port;
    if (!v || sscanf(v, "%63[0-9.]:%u", host, &port) != 2 || !port || port > 65535)
        return -1;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static int fw_check(const char *key, const char *value, char *why, size_t wl)
{
    struct sockaddr_in a;
    if (!strcmp(key, "server") && parse_server(value, &a)) {
        snprintf(why, wl, "is not ADDRESS:PORT (e.g. 127.0.0.1:7000)");
        return -1;
    }
    return 0;
}

static int fw_init(struct mp_module_ctx *mc)
{
    struct conf *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    if (parse_server(mp_module_option(mc, "server"), &c->addr)) {
        mp_module_log(mc, MP_MLOG_ERROR, "mpm_fdwatch:server must be ADDRESS:PORT");
        free(c);
        return -1;
    }
    c->opnum = mp_module_option_int(mc, "opnum", 1);
    mp_module_set_private(mc, c);
    return mp_module_want(mc, "exchange_ds_rfr", (uint32_t)c->opnum);
}

static void op_free(struct op *o)
{
    struct conf *c = mp_module_private(o->mc);
    for (struct op **pp = &c->ops; *pp; pp = &(*pp)->next)
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    mp_fdwatch_cancel(o->w);
    close(o->fd);
    free(o);
}

static void fw_fini(struct mp_module_ctx *mc)
{
    struct conf *c = mp_module_private(mc);
    while (c->ops)
        op_free(c->ops);
    free(c);
}

static void op_end(struct op *o, enum mp_status st)
{
    struct mp_call *call = o->call;
    op_free(o);
    mp_call_resume(call, st);
}

static void on_io(struct mp_fdwatch *w, int fd, unsigned ev, void *arg)
{
    struct op *o = arg;
    if (ev & MP_FD_WRITE) {
        if (!o->out_off) { /* the connect finished: did it work? */
            int err = 0;
            socklen_t l = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) || err) {
                mp_module_log(o->mc, MP_MLOG_WARN, "service unreachable: %s", strerror(err));
                op_end(o, MP_CONTINUE);
                return;
            }
        }
        ssize_t n = send(fd, o->out + o->out_off, o->out_len - o->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            op_end(o, MP_CONTINUE);
            return;
        }
        if (n > 0)
            o->out_off += (size_t)n;
        if (o->out_off == o->out_len) {
            mp_module_log(o->mc, MP_MLOG_INFO, "fdwatch asked the service; waiting");
            mp_fdwatch_set(w, MP_FD_READ);
        }
        return;
    }
    if (ev & (MP_FD_READ | MP_FD_ERROR)) {
        ssize_t n = recv(fd, o->in + o->in_len, sizeof o->in - 1 - o->in_len, 0);
        if (n < 0 && errno == EAGAIN)
            return;
        if (n > 0)
            o->in_len += (size_t)n;
        o->in[o->in_len] = 0;
        if (n > 0 && !strchr(o->in, '\n') && o->in_len < sizeof o->in - 1)
            return;
        char *nl = strchr(o->in, '\n');
        if (nl)
            *nl = 0;
        mp_module_log(o->mc, MP_MLOG_INFO, "fdwatch reply=%s; resuming", o->in);
        op_end(o, MP_CONTINUE);
    }
}

static enum mp_status fw_dispatch(struct mp_module_ctx *mc, struct mp_call *call)
{
    struct conf *c = mp_module_private(mc);
    struct op *o = calloc(1, sizeof *o);
    if (!o)
        return MP_CONTINUE;
    o->mc = mc;
    o->call = call;
    o->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (o->fd < 0) {
        free(o);
        return MP_CONTINUE;
    }
    o->out_len = (size_t)snprintf(o->out, sizeof o->out, "CALL %s %s\n", mp_call_peer(call),
                                  mp_call_op_name(call) ? mp_call_op_name(call) : "?");
    if (connect(o->fd, (const struct sockaddr *)&c->addr, sizeof c->addr) && errno != EINPROGRESS) {
        close(o->fd);
        free(o);
        return MP_CONTINUE;
    }
    o->w = mp_module_watch_fd(mc, o->fd, MP_FD_WRITE, on_io, o);
    if (!o->w) {
        close(o->fd);
        free(o);
        return MP_CONTINUE;
    }
    o->next = c->ops;
    c->ops = o;
    mp_module_log(mc, MP_MLOG_INFO, "fdwatch holding %s", mp_call_op_name(call));
    return MP_PENDING;
}

static const struct mp_module_option_spec fw_options[] = {
    {"server", MP_OPT_STRING, 0, 0, NULL},
    {"opnum", MP_OPT_INT, 0, 1, NULL},
    {NULL, 0, 0, 0, NULL},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "mpm_fdwatch",
    .description = "holds a call while it asks an outside service (test)",
    .init = fw_init,
    .fini = fw_fini,
    .dispatch = fw_dispatch,
    .options = fw_options,
    .check_option = fw_check,
};
