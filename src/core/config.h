/* mapiproxy configuration: smb.conf-syntax INI file.
 *
 * The file holds sections ([global], or any name) of `key = value` lines.
 * Keys are matched case-insensitively with runs of white space folded to one
 * space, as Samba does ("Epmapper  Port" == "epmapper port").  Module options
 * live under `modulename:key` in any section ([global] usually).
 */
#ifndef MP_CONFIG_H
#define MP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MP_MAX_LISTEN 8
#define MP_MAX_IFACES 32
#define MP_MAX_MODULES 32

/* An interface to relay, by name or by UUID/version. */
struct mp_iface_spec {
    uint8_t uuid[16];  /* little-endian wire form (as in a DCE/RPC bind) */
    uint16_t vers_major;
    uint16_t vers_minor;
    char name[48];     /* "exchange_emsmdb", ... or the UUID text */
};

/* One address to listen on. */
struct mp_listen_addr {
    char host[64];     /* numeric IPv4/IPv6 address, or a host name */
};

enum mp_transport { MP_TRANSPORT_NCACN_IP_TCP = 1 };

struct mp_binding {
    enum mp_transport transport;
    char host[256];
    uint16_t port;     /* 0: find through the upstream's endpoint mapper */
};

struct mp_config {
    /* dcerpc_mapiproxy: (OpenChange's names) */
    struct mp_binding binding;               /* dcerpc_mapiproxy:binding (required) */
    struct mp_iface_spec ifaces[MP_MAX_IFACES]; /* dcerpc_mapiproxy:interfaces */
    size_t n_ifaces;
    char username[256];                      /* dcerpc_mapiproxy:username */
    char password[256];                      /* dcerpc_mapiproxy:password (never logged) */
    char domain[256];                        /* dcerpc_mapiproxy:domain */
    char modules[MP_MAX_MODULES][64];        /* dcerpc_mapiproxy:modules, in order */
    size_t n_modules;
    bool delegated_auth;                     /* dcerpc_mapiproxy:delegated_auth */
    bool ndrdump;                            /* dcerpc_mapiproxy:ndrdump */
    /* Samba globals */
    char netbios_name[64];                   /* netbios name */
    char realm[256];                         /* realm */
    /* mapiproxy: (ours) */
    struct mp_listen_addr listen[MP_MAX_LISTEN]; /* mapiproxy:listen, default 127.0.0.1 */
    size_t n_listen;
    uint16_t epm_port;                       /* mapiproxy:epmapper port (135) */
    uint16_t rpc_port;                       /* mapiproxy:rpc port (0 = any free port) */
    uint16_t upstream_epm_port;              /* mapiproxy:upstream epmapper port (135) */
    int log_level;                           /* mapiproxy:log level 0 error..4 trace (2 info) */
    char log_file[512];                      /* mapiproxy:log file ("" = stderr) */
    uint32_t max_call_size;                  /* mapiproxy:max call size (bytes, 16 MiB) */
    uint32_t max_buffer;                     /* mapiproxy:max buffer (per direction, 256 KiB) */
    uint32_t max_connections;                /* mapiproxy:max connections (9500) */
    uint32_t connect_timeout_ms;             /* mapiproxy:connect timeout (10000) */
    uint32_t idle_timeout_s;                 /* mapiproxy:idle timeout (0 = none) */

    /* Every key = value read, for module options and lookups. */
    struct mp_config_entry *entries;
    size_t n_entries;
    char path[512];
};

struct mp_config_entry {
    char *section;  /* lower-case */
    char *key;      /* normalized: lower-case, white space folded */
    char *value;    /* trimmed */
    int line;
};

/* Diagnostics: every problem found, as "FILE:LINE: what is wrong; what to do". */
struct mp_diag {
    char **msgs;
    size_t n;
};

/* Fills defaults, then reads FILE (or, when path is NULL, the text in
 * `text`, named `name` in messages).  Returns 0 when valid; otherwise -1
 * and every error is in diag (caller frees with mp_diag_free). */
int mp_config_load(struct mp_config *cfg, const char *path, struct mp_diag *diag);
int mp_config_load_text(struct mp_config *cfg, const char *name, const char *text,
                        struct mp_diag *diag);
void mp_config_free(struct mp_config *cfg);
void mp_diag_free(struct mp_diag *diag);

/* Raw lookup of any key (normalized as above), e.g. "mpm_dummy:test".
 * Searches [global] first, then any section.  NULL when absent. */
const char *mp_config_get(const struct mp_config *cfg, const char *key);
bool mp_config_get_bool(const struct mp_config *cfg, const char *key, bool dflt);
long mp_config_get_int(const struct mp_config *cfg, const char *key, long dflt);

/* Well-known interfaces: fills spec from a name ("exchange_emsmdb",
 * "exchange_nsp", "exchange_ds_rfr", "exchange_async_emsmdb", "epmapper",
 * "lsarpc"...) or from "UUID" / "UUID/MAJOR.MINOR".  Returns 0 or -1. */
int mp_iface_parse(const char *text, struct mp_iface_spec *spec);

/* The embedded default configuration used when no -c is given. */
extern const char mp_default_config[];

#endif
