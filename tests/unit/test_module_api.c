/* The module API's services without a socket to a proxy: client version
 * formatting, object table events, module option checks, descriptor
 * watches on a real loop (a socketpair). */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chain/services.h"
#include "core/config.h"
#include "event/loop.h"
#include "chain/chain.h"
#include "rop/objects.h"
#include "testlib.h"

static void test_versions(void)
{
    char v[32];
    const uint16_t old[3] = {0x000C, 0x183E, 0x03E8}; /* 12.0.6206.1000 */
    mp_ident_format_version(old, v, sizeof v);
    CHECK(!strcmp(v, "12.0.6206.1000"));
    const uint16_t nw[3] = {0x0F00, 0x8000 | 4569, 1506}; /* 15.0.4569.1506 */
    mp_ident_format_version(nw, v, sizeof v);
    CHECK(!strcmp(v, "15.0.4569.1506"));
    struct mp_session s;
    memset(&s, 0, sizeof s);
    mp_ident_client_application(&s, "Outlook/15.00.0847.4040\x01");
    CHECK(!strcmp(s.client_version, "15.0.847.4040"));
    CHECK(!strcmp(s.client_app, "Outlook/15.00.0847.4040?")); /* kept printable */
    memset(&s, 0, sizeof s);
    mp_ident_client_application(&s, "MapiHttpClient");
    CHECK(s.client_version[0] == 0);
}

static int n_ev[4];
static void obs(void *ctx, const struct mp_object *o, int ev, void **ext)
{
    (void)ctx;
    n_ev[ev]++;
    CHECK_EQ(o->context_id, 7u);
    if (ev == MP_OBJECT_CREATED)
        *ext = (void *)o; /* anything non-NULL */
    else {
        CHECK(*ext != NULL);
        *ext = NULL;
    }
}

static void test_objtab_events(void)
{
    struct mp_objtab *t = mp_objtab_new();
    mp_objtab_observe(t, 7, obs, NULL);
    struct mp_object o = {.type = MP_OBJ_FOLDER, .handle = 1, .parent = MP_OBJ_NONE};
    CHECK_EQ(mp_objtab_put(t, &o), 0);
    o.handle = 2;
    CHECK_EQ(mp_objtab_put(t, &o), 0);
    CHECK_EQ(mp_objtab_put(t, &o), 0); /* handle reused: released, then created */
    CHECK(mp_objtab_ext(t, 2) && *mp_objtab_ext(t, 2));
    CHECK_EQ(mp_objtab_get(t, 1)->context_id, 7u);
    mp_objtab_del(t, 1);
    CHECK(mp_objtab_ext(t, 1) == NULL);
    mp_objtab_ref(t);
    mp_objtab_unref(t); /* a call's reference: nothing yet */
    CHECK_EQ(n_ev[MP_OBJECT_CONTEXT_GONE], 0);
    mp_objtab_unref(t);
    CHECK_EQ(n_ev[MP_OBJECT_CREATED], 3);
    CHECK_EQ(n_ev[MP_OBJECT_RELEASED], 2);
    CHECK_EQ(n_ev[MP_OBJECT_CONTEXT_GONE], 1);
}

static char errs[2048];
static void rep(void *ctx, const char *file, int line, const char *msg)
{
    (*(int *)ctx)++;
    size_t k = strlen(errs);
    snprintf(errs + k, sizeof errs - k, "%s:%d: %s\n", file, line, msg);
}

static int check_val(const char *key, const char *value, char *why, size_t wl)
{
    if (!strcmp(key, "server") && !strchr(value, ':')) {
        snprintf(why, wl, "is not ADDRESS:PORT");
        return -1;
    }
    return 0;
}

static void test_options(void)
{
    static const char *const modes[] = {"scan", "log", NULL};
    static const struct mp_module_option_spec opts[] = {
        {"server", MP_OPT_STRING, 0, 0, NULL}, {"timeout ms", MP_OPT_INT, 1, 60000, NULL},
        {"verbose", MP_OPT_BOOL, 0, 0, NULL},  {"mode", MP_OPT_ENUM, 0, 0, modes},
        {NULL, MP_OPT_STRING, 0, 0, NULL},
    };
    struct mp_module m = {MP_MODULE_HEADER, .name = "mpm_av", .options = opts,
                          .check_option = check_val};
    struct mp_config cfg;
    struct mp_diag diag = {0};
    const char *text = "dcerpc_mapiproxy:binding = ncacn_ip_tcp:10.1.2.3\n"
                       "dcerpc_mapiproxy:modules = mpm_av\n"
                       "mpm_av:server = 10.0.0.1:3310\n"
                       "mpm_av:sever = x\n"
                       "mpm_av:timeout ms = 0\n"
                       "mpm_av:verbose = maybe\n"
                       "mpm_av:mode = scna\n"
                       "mpm_av:Timeout MS = 500\n"
                       "other:thing = 1\n";
    CHECK_EQ(mp_config_load_text(&cfg, "m.conf", text, &diag), 0);
    int n = 0;
    CHECK_EQ(mp_modopts_check(&cfg, "mpm_av", &m, rep, &n), 4);
    CHECK_EQ(n, 4);
    CHECK(
        strstr(errs, "m.conf:4: unknown option \"mpm_av:sever\"; did you mean \"mpm_av:server\"?"));
    CHECK(strstr(errs, "m.conf:5: mpm_av:timeout ms = \"0\" is out of range; give 1 to 60000"));
    CHECK(strstr(errs, "m.conf:6: mpm_av:verbose = \"maybe\" is not yes or no"));
    CHECK(strstr(errs, "m.conf:7: mpm_av:mode = \"scna\" is not one of scan, log; did you mean "
                       "scan?"));
    mp_config_free(&cfg);
    errs[0] = 0;
    text = "dcerpc_mapiproxy:binding = ncacn_ip_tcp:10.1.2.3\nmpm_av:server = nocolon\n";
    CHECK_EQ(mp_config_load_text(&cfg, "m.conf", text, &diag), 0);
    n = 0;
    CHECK_EQ(mp_modopts_check(&cfg, "mpm_av", &m, rep, &n), 1);
    CHECK(strstr(errs, "m.conf:2: mpm_av:server = \"nocolon\" is not ADDRESS:PORT"));
    m.options = NULL;
    m.check_option = NULL;
    CHECK_EQ(mp_modopts_check(&cfg, "mpm_av", &m, rep, &n), 0); /* no schema: not checked */
    mp_config_free(&cfg);
    mp_diag_free(&diag);
}

struct wctx {
    struct mp_loop *loop;
    int got, fired;
};

static void on_fd(struct mp_fdwatch *w, int fd, unsigned ev, void *arg)
{
    struct wctx *c = arg;
    c->fired++;
    if (ev & MP_FD_READ) {
        char b[8];
        c->got += (int)read(fd, b, sizeof b);
        mp_fdwatch_cancel(w); /* inside the callback */
        mp_fdwatch_cancel(w); /* twice: harmless */
        mp_loop_stop(c->loop);
    }
}

static void stop_cb(struct mp_timer *t)
{
    mp_loop_stop(t->data);
}

static void test_fdwatch(void)
{
    struct mp_loop *loop = mp_loop_new();
    struct mp_module_ctx mc;
    memset(&mc, 0, sizeof mc);
    snprintf(mc.name, sizeof mc.name, "mpm_t");
    mc.loop = loop;
    int sv[2];
    CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct wctx c = {.loop = loop};
    struct mp_fdwatch *w = mp_module_watch_fd(&mc, sv[0], MP_FD_READ, on_fd, &c);
    CHECK(w != NULL);
    CHECK(write(sv[1], "abc", 3) == 3);
    struct mp_timer t = {.cb = stop_cb, .data = loop};
    mp_timer_arm(loop, &t, 2000);
    mp_loop_run(loop);
    mp_timer_cancel(loop, &t);
    CHECK_EQ(c.got, 3);
    CHECK_EQ(c.fired, 1);
    /* one left behind: cancelled for the module at unload */
    CHECK(mp_module_watch_fd(&mc, sv[1], MP_FD_WRITE, on_fd, &c) != NULL);
    CHECK_EQ(mp_fdwatch_cancel_module(&mc), 1u);
    CHECK_EQ(mp_fdwatch_cancel_module(&mc), 0u);
    CHECK(mp_module_watch_fd(&mc, -1, MP_FD_READ, on_fd, &c) == NULL);
    mp_loop_free(loop); /* runs the deferred frees */
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    test_versions();
    test_objtab_events();
    test_options();
    test_fdwatch();
    TEST_DONE();
}
