#include "auth/winbind.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wbclient.h>

#include "auth/ntlm_crypto.h"

#define MAX_GROUPS 512

/* One context for the process, used by every worker's KDC thread in turn
 * (wb_mu), made by the first relay that wants winbind and freed by the
 * last (wb_users): doc/internals/workers.md. */
static pthread_mutex_t wb_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned wb_users;
static struct wbcContext *wb_ctx;
static bool socket_dir_set;
static char socket_dir[256];

/* libwbclient (wb_common.c) looks this symbol up with dlsym(RTLD_DEFAULT)
 * and, when it returns true, takes winbindd's socket directory from the
 * environment variable SELFTEST_WINBINDD_SOCKET_DIR instead of its compiled
 * default.  It is the only way the library offers to point it elsewhere;
 * the executable exports the symbol (-rdynamic).  True only when
 * mapiproxy:winbind socket dir is set. */
bool nss_wrapper_enabled(void);
bool nss_wrapper_enabled(void)
{
    return socket_dir_set;
}

static int winbind_init(const char *dir, char *why, size_t wl);

int mp_winbind_init(const char *dir, char *why, size_t wl)
{
    pthread_mutex_lock(&wb_mu);
    int rc = winbind_init(dir, why, wl);
    if (!rc)
        wb_users++;
    pthread_mutex_unlock(&wb_mu);
    return rc;
}

static int winbind_init(const char *dir, char *why, size_t wl)
{
    if (dir && dir[0]) {
        if (strlen(dir) >= sizeof(socket_dir) || dir[0] != '/') {
            snprintf(why, wl, "winbind socket dir \"%s\": give an absolute path", dir);
            return -1;
        }
        snprintf(socket_dir, sizeof(socket_dir), "%s", dir);
        if (setenv("SELFTEST_WINBINDD_SOCKET_DIR", socket_dir, 1)) {
            snprintf(why, wl, "cannot set the winbind socket directory");
            return -1;
        }
        socket_dir_set = true;
    } else {
        snprintf(socket_dir, sizeof(socket_dir), "libwbclient's default (/run/samba/winbindd)");
    }
    if (!wb_ctx)
        wb_ctx = wbcCtxCreate();
    if (!wb_ctx) {
        snprintf(why, wl, "libwbclient: cannot create a context");
        return -1;
    }
    return 0;
}

void mp_winbind_shutdown(void)
{
    pthread_mutex_lock(&wb_mu);
    if (wb_users && --wb_users) {
        pthread_mutex_unlock(&wb_mu);
        return;
    }
    if (wb_ctx)
        wbcCtxFree(wb_ctx);
    wb_ctx = NULL;
    pthread_mutex_unlock(&wb_mu);
}

const char *mp_winbind_socket_dir(void)
{
    return socket_dir;
}

int mp_wb_logon_set(struct mp_wb_logon *l, const char *user, const char *domain,
                    const char *workstation, const uint8_t chal[8], const uint8_t *nt,
                    size_t nt_len, const uint8_t *lm, size_t lm_len)
{
    memset(l, 0, sizeof(*l));
    if (strlen(user) >= sizeof(l->user) || strlen(domain) >= sizeof(l->domain) ||
        strlen(workstation) >= sizeof(l->workstation) || nt_len > 0xffff || lm_len > 0xffff)
        return -1;
    memcpy(l->user, user, strlen(user) + 1);
    memcpy(l->domain, domain, strlen(domain) + 1);
    memcpy(l->workstation, workstation, strlen(workstation) + 1);
    memcpy(l->chal, chal, 8);
    l->nt = malloc(nt_len ? nt_len : 1);
    l->lm = malloc(lm_len ? lm_len : 1);
    if (!l->nt || !l->lm) {
        mp_wb_logon_free(l);
        return -1;
    }
    if (nt_len)
        memcpy(l->nt, nt, nt_len);
    if (lm_len)
        memcpy(l->lm, lm, lm_len);
    l->nt_len = nt_len;
    l->lm_len = lm_len;
    return 0;
}

void mp_wb_logon_free(struct mp_wb_logon *l)
{
    if (!l)
        return;
    if (l->nt)
        mp_ntlm_cleanse(l->nt, l->nt_len);
    if (l->lm)
        mp_ntlm_cleanse(l->lm, l->lm_len);
    free(l->nt);
    free(l->lm);
    free(l->groups);
    mp_ntlm_cleanse(l->key, sizeof(l->key));
    l->nt = l->lm = NULL;
    l->groups = NULL;
}

/* Appends "DOMAIN\name\n" for each group SID of the logon (the user's own
 * SID, the first, is skipped).  Names that cannot be looked up are left
 * out. */
static void collect_groups(struct mp_wb_logon *l, const struct wbcAuthUserInfo *info)
{
    size_t cap = 0, len = 0;
    char *out = NULL;
    for (uint32_t i = 1; i < info->num_sids && l->n_groups < MAX_GROUPS; i++) {
        bool dup = false;
        for (uint32_t k = 1; k < i && !dup; k++)
            dup = !memcmp(&info->sids[k].sid, &info->sids[i].sid, sizeof(struct wbcDomainSid));
        if (dup)
            continue;
        char *dom = NULL, *name = NULL;
        enum wbcSidType type;
        if (!WBC_ERROR_IS_OK(wbcCtxLookupSid(wb_ctx, &info->sids[i].sid, &dom, &name, &type)))
            continue;
        if (type == WBC_SID_NAME_DOM_GRP || type == WBC_SID_NAME_ALIAS ||
            type == WBC_SID_NAME_WKN_GRP) {
            size_t need = strlen(dom ? dom : "") + strlen(name ? name : "") + 3;
            if (len + need + 1 > cap) {
                size_t ncap = (cap ? cap * 2 : 256) + need;
                char *n = realloc(out, ncap);
                if (n) {
                    out = n;
                    cap = ncap;
                }
            }
            if (len + need + 1 <= cap) {
                len += (size_t)snprintf(out + len, cap - len, "%s\\%s\n", dom ? dom : "",
                                        name ? name : "");
                l->n_groups++;
            }
        }
        wbcFreeMemory(dom);
        wbcFreeMemory(name);
    }
    l->groups = out;
}

static void winbind_authenticate(struct mp_wb_logon *l);

void mp_winbind_authenticate(struct mp_wb_logon *l)
{
    pthread_mutex_lock(&wb_mu);
    winbind_authenticate(l);
    pthread_mutex_unlock(&wb_mu);
}

static void winbind_authenticate(struct mp_wb_logon *l)
{
    struct wbcAuthUserParams p;
    struct wbcAuthUserInfo *info = NULL;
    struct wbcAuthErrorInfo *err = NULL;
    memset(&p, 0, sizeof(p));
    l->rc = MP_WB_INTERNAL;
    if (!wb_ctx) {
        snprintf(l->why, sizeof(l->why), "winbind is not initialised");
        return;
    }
    p.account_name = l->user;
    p.domain_name = l->domain;
    p.workstation_name = l->workstation;
    p.level = WBC_AUTH_USER_LEVEL_RESPONSE;
    memcpy(p.password.response.challenge, l->chal, 8);
    p.password.response.nt_length = (uint32_t)l->nt_len;
    p.password.response.nt_data = l->nt;
    p.password.response.lm_length = (uint32_t)l->lm_len;
    p.password.response.lm_data = l->lm;
    wbcErr e = wbcCtxAuthenticateUserEx(wb_ctx, &p, &info, &err);
    if (e == WBC_ERR_SUCCESS && info) {
        static const uint8_t zero[16];
        if (!memcmp(info->user_session_key, zero, 16)) {
            l->rc = MP_WB_INTERNAL;
            snprintf(l->why, sizeof(l->why),
                     "winbindd accepted the logon but returned no session key (is the proxy "
                     "allowed on winbindd's privileged pipe? it must run as root)");
        } else {
            memcpy(l->key, info->user_session_key, 16);
            snprintf(l->account, sizeof(l->account), "%.255s",
                     info->account_name ? info->account_name : l->user);
            snprintf(l->account_domain, sizeof(l->account_domain), "%.255s",
                     info->domain_name ? info->domain_name : l->domain);
            collect_groups(l, info);
            l->rc = MP_WB_OK;
        }
    } else if (e == WBC_ERR_AUTH_ERROR) {
        l->rc = MP_WB_DENIED;
        snprintf(l->why, sizeof(l->why), "%s (%s)",
                 err && err->nt_string ? err->nt_string : "NT_STATUS_LOGON_FAILURE",
                 err && err->display_string ? err->display_string : "logon failure");
    } else if (e == WBC_ERR_WINBIND_NOT_AVAILABLE) {
        l->rc = MP_WB_UNAVAILABLE;
        snprintf(l->why, sizeof(l->why), "winbindd is not reachable (socket dir %s): %s",
                 socket_dir, wbcErrorString(e));
    } else {
        l->rc = MP_WB_INTERNAL;
        snprintf(l->why, sizeof(l->why), "winbind: %s%s%s", wbcErrorString(e),
                 err && err->nt_string ? " " : "", err && err->nt_string ? err->nt_string : "");
    }
    if (info) {
        mp_ntlm_cleanse(info->user_session_key, sizeof(info->user_session_key));
        mp_ntlm_cleanse(info->lm_session_key, sizeof(info->lm_session_key));
    }
    wbcFreeMemory(info);
    wbcFreeMemory(err);
}
