/* Services of the module API beyond the call chain (include/mapiproxy/
 * module.h, "ABI 3"): descriptor watches, server object events with
 * per-object data, the client's identity, and module option checks.  Each
 * lives in its own file here; the runtime, the ROP stage and the config
 * check call the hooks below.  See doc/internals/module-api.md. */
#ifndef MP_CHAIN_SERVICES_H
#define MP_CHAIN_SERVICES_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapiproxy/module.h"

struct mp_call;
struct mp_config;
struct mp_objtab;
struct mp_session;

/* fdwatch.c: cancels the watches module mc left (at unload, after fini);
 * returns how many. */
size_t mp_fdwatch_cancel_module(const struct mp_module_ctx *mc);

/* objevents.c: a new object table of session s (context context_id)
 * reports to the modules' object_event hooks and keeps their per-object
 * data. */
void mp_objevents_attach(struct mp_objtab *t, struct mp_session *s, uint32_t context_id);
/* Does a loaded module want object events (the proxy then tracks objects)? */
bool mp_objevents_wanted(const struct mp_module *m);

/* ident.c: a call's request is complete: note the client's version and
 * user DN (EcDoConnectEx) in its session. */
void mp_ident_request(struct mp_call *m);
/* MAPI/HTTP: the X-ClientApplication header of a request of session s. */
void mp_ident_client_application(struct mp_session *s, const char *value);
/* The identity a pass-through HTTP logon of session s names (the upstream
 * verifies it): kept for mp_ident_user. */
void mp_ident_seen_user(struct mp_session *s, const char *who);
/* Who a call's client is, for logs and message events: the user the proxy
 * authenticated, else the pass-through logon's identity, else the user DN
 * its Connect named; NULL when none is known. */
const char *mp_ident_user(const struct mp_call *m);
/* EcDoConnectEx's rgwClientVersion as "major.minor.build.revision"
 * (MS-OXCRPC 3.1.4.1.3.1). */
void mp_ident_format_version(const uint16_t w[3], char *out, size_t cap);

/* modopts.c: checks the NAME:key options of the configuration against
 * module m's schema (and its check_option hook).  Each error goes to
 * report(ctx, file, line, message); returns the number of errors. */
typedef void (*mp_modopt_report)(void *ctx, const char *file, int line, const char *msg);
int mp_modopts_check(const struct mp_config *cfg, const char *name, const struct mp_module *m,
                     mp_modopt_report report, void *ctx);
#endif
