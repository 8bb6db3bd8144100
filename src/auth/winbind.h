/* NTLM pass-through to a Windows or Samba domain through winbindd
 * (libwbclient): the proxy sends its own CHALLENGE, the domain controller
 * checks the client's NTLMv2 response and returns the session base key and
 * the user's groups.
 *
 * mp_winbind_init runs once at start-up, before any thread.  Every other
 * call blocks on winbindd (and winbindd on the DC): call them on a worker
 * thread, one at a time (one wbcContext, owned by that thread).  Nothing
 * here logs; the responses and the key are wiped when freed. */
#ifndef MP_WINBIND_H
#define MP_WINBIND_H
#include <stddef.h>
#include <stdint.h>

/* socket_dir: winbindd's socket directory, or NULL/"" for libwbclient's
 * compiled default (/run/samba/winbindd on Debian).  0, or -1 with why. */
int mp_winbind_init(const char *socket_dir, char *why, size_t wl);
void mp_winbind_shutdown(void);
/* The socket directory in use (for messages). */
const char *mp_winbind_socket_dir(void);

enum { MP_WB_OK = 0, MP_WB_DENIED = -1, MP_WB_UNAVAILABLE = -2, MP_WB_INTERNAL = -3 };

/* One logon to check.  In: names as the client sent them (UTF-8), the
 * proxy's server challenge and copies of the responses.  Out: rc, the
 * session base key, the names the domain knows the user by, and the
 * user's groups as "DOMAIN\group" lines separated by '\n' (malloc'd). */
struct mp_wb_logon {
    char user[768], domain[768], workstation[768];
    uint8_t chal[8];
    uint8_t *nt, *lm;
    size_t nt_len, lm_len;
    int rc;
    uint8_t key[16];
    char account[256], account_domain[256];
    char *groups;
    size_t n_groups;
    char why[400]; /* winbind's error text, no secrets */
};

/* Fills the in-part from copies (nt/lm duplicated).  0 or -1. */
int mp_wb_logon_set(struct mp_wb_logon *l, const char *user, const char *domain,
                    const char *workstation, const uint8_t chal[8], const uint8_t *nt,
                    size_t nt_len, const uint8_t *lm, size_t lm_len);
/* Worker thread: asks winbindd.  Sets l->rc and the out-part. */
void mp_winbind_authenticate(struct mp_wb_logon *l);
void mp_wb_logon_free(struct mp_wb_logon *l);

#endif
