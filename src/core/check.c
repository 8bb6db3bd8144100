/* --check's start-up checks beyond the syntax (core/config.h): what the
 * daemon would otherwise refuse only when it starts.  Each check calls the
 * code the daemon itself runs (the credentials loader, the module loader,
 * OpenSSL's certificate loading), so --check and the start agree. */
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

#include "auth/credstore.h"
#include "core/config.h"
#include "chain/chain.h"
#include "chain/services.h"
#include "ops/privdrop.h"

struct chk {
    const struct mp_config *cfg;
    struct mp_diag *diag;
    int n_err;
};

/* An error at FILE:LINE (FILE alone when line is 0) into the diagnostics. */
static void opt_err(void *ctx, const char *file, int line, const char *msg)
{
    struct chk *c = ctx;
    char *m = NULL;
    int r =
        line > 0 ? asprintf(&m, "%s:%d: %s", file, line, msg) : asprintf(&m, "%s: %s", file, msg);
    c->n_err++;
    if (r < 0)
        return;
    char **nm = realloc(c->diag->msgs, (c->diag->n + 1) * sizeof *nm);
    if (!nm) {
        free(m);
        return;
    }
    c->diag->msgs = nm;
    c->diag->msgs[c->diag->n++] = m;
}

/* An error about the option `key`, at the line that set it. */
__attribute__((format(printf, 3, 4))) static void cerr(struct chk *c, const char *key,
                                                       const char *fmt, ...)
{
    const char *file;
    int line = mp_config_where(c->cfg, key, &file);
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    opt_err(c, file, line, msg);
}

static void check_secrets(struct chk *c)
{
    const struct mp_config *cfg = c->cfg;
    char why[700];
    if (cfg->credentials_file[0]) {
        struct mp_credstore cs;
        if (mp_credstore_load(&cs, cfg->credentials_file, why, sizeof why))
            cerr(c, "mapiproxy:credentials file", "%s", why);
        else
            mp_credstore_free(&cs);
    }
    if (cfg->password_file[0]) {
        char pw[256];
        if (mp_read_secret_file(cfg->password_file, pw, sizeof pw, why, sizeof why))
            cerr(c, "mapiproxy:password file", "%s", why);
        memset(pw, 0, sizeof pw);
    }
}

/* The module chain mp_modules_load would build (doc/modules.md), and each
 * module's options against its schema. */
static void check_modules(struct chk *c)
{
    const struct mp_config *cfg = c->cfg;
    char why[4400];
    for (size_t i = 0; i < cfg->n_modules; i++) {
        void *dl = NULL;
        struct mp_module compat;
        const struct mp_module *m =
            mp_module_open(cfg, cfg->modules[i], &dl, &compat, why, sizeof why);
        if (!m)
            cerr(c, "dcerpc_mapiproxy:modules", "%s", why);
        else
            mp_modopts_check(cfg, cfg->modules[i], m, opt_err, c);
        if (dl)
            dlclose(dl);
    }
}

static void check_tls(struct chk *c)
{
    const struct mp_config *cfg = c->cfg;
    if (!cfg->n_http_listen || cfg->http_plain)
        return;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return;
    char buf[256];
    if (cfg->tls_certificate[0] &&
        SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_certificate) != 1) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        cerr(c, "mapiproxy:tls certificate",
             "mapiproxy:tls certificate %s cannot be loaded (%s); give a readable PEM "
             "certificate chain",
             cfg->tls_certificate, buf);
    } else if (cfg->tls_key[0] &&
               (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
                SSL_CTX_check_private_key(ctx) != 1)) {
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        cerr(c, "mapiproxy:tls key",
             "mapiproxy:tls key %s cannot be loaded or does not match the certificate (%s); "
             "give the certificate's PEM private key",
             cfg->tls_key, buf);
    }
    ERR_clear_error();
    SSL_CTX_free(ctx);
}

/* mapiproxy:user / mapiproxy:group name accounts that exist. */
static void check_runas(struct chk *c)
{
    const struct mp_config *cfg = c->cfg;
    struct mp_runas r;
    char why[400];
    if (cfg->run_user[0] && mp_runas_resolve(cfg->run_user, cfg->run_group, &r, why, sizeof why))
        cerr(c, strstr(why, "mapiproxy:group") == why ? "mapiproxy:group" : "mapiproxy:user", "%s",
             why);
    else if (!cfg->run_user[0] && cfg->run_group[0])
        cerr(c, "mapiproxy:group",
             "mapiproxy:group is set without mapiproxy:user; set mapiproxy:user too (the group "
             "alone is not changed)");
}

int mp_config_check_runtime(const struct mp_config *cfg, struct mp_diag *diag)
{
    struct chk c = {.cfg = cfg, .diag = diag};
    check_runas(&c);
    if (cfg->packet_export_dir[0] && access(cfg->packet_export_dir, W_OK | X_OK))
        cerr(&c, "mapiproxy:packet export dir",
             "mapiproxy:packet export dir %s: %s; give a directory the proxy can write to",
             cfg->packet_export_dir, strerror(errno));
    check_secrets(&c);
    check_modules(&c);
    check_tls(&c);
    return c.n_err ? -1 : 0;
}
