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
#define MP_MAX_WORKERS 64 /* mapiproxy:workers */
/* HTTP front paths relayed besides MAPI/HTTP, Autodiscover and RPC/HTTP:
 * what Outlook needs for free/busy, out-of-office (EWS) and the offline
 * address book (OAB). */
#define MP_HTTP_DEFAULT_RELAY_PATHS "/EWS/, /OAB/"
#define MP_HTTP_MAX_RELAY_PATHS 16

/* An interface to relay, by name or by UUID/version. */
struct mp_iface_spec {
    uint8_t uuid[16]; /* little-endian wire form (as in a DCE/RPC bind) */
    uint16_t vers_major;
    uint16_t vers_minor;
    char name[48];    /* "exchange_emsmdb", ... or the UUID text */
    bool any_version; /* "UUID" without "/MAJOR.MINOR": any version matches */
};

/* One address to listen on. */
struct mp_listen_addr {
    char host[64]; /* numeric IPv4/IPv6 address, or a host name */
};

/* An HTTP listener: address and port. */
struct mp_http_listen {
    char host[64];
    uint16_t port;
};

/* An http:// or https:// URL naming the HTTP upstream (no path). */
struct mp_http_url {
    bool tls;
    char host[256]; /* without brackets for IPv6 */
    uint16_t port;
};

/* Parses "https://HOST[:PORT]" (or http://); a trailing "/" is accepted,
 * any other path is not.  Returns 0, or -1 with err set. */
int mp_http_url_parse(const char *text, struct mp_http_url *u, char *err, size_t errlen);

enum mp_log_to { MP_LOG_TO_STDERR = 0, MP_LOG_TO_FILE, MP_LOG_TO_SYSLOG };

enum mp_transport { MP_TRANSPORT_NCACN_IP_TCP = 1 };

struct mp_binding {
    enum mp_transport transport;
    char host[256];
    uint16_t port;  /* 0: find through the upstream's endpoint mapper */
    uint32_t flags; /* MP_BINDING_F_*: Samba's [sign,seal,print...] (informational) */
};

/* Samba binding-string flags, accepted and recorded; the relay does not act on them. */
#define MP_BINDING_F_SIGN 0x0001u
#define MP_BINDING_F_SEAL 0x0002u
#define MP_BINDING_F_CONNECT 0x0004u
#define MP_BINDING_F_SPNEGO 0x0008u
#define MP_BINDING_F_NTLM 0x0010u
#define MP_BINDING_F_KRB5 0x0020u
#define MP_BINDING_F_SCHANNEL 0x0040u
#define MP_BINDING_F_VALIDATE 0x0080u
#define MP_BINDING_F_PRINT 0x0100u
#define MP_BINDING_F_PADCHECK 0x0200u
#define MP_BINDING_F_BIGENDIAN 0x0400u
#define MP_BINDING_F_SMB1 0x0800u
#define MP_BINDING_F_SMB2 0x1000u
#define MP_BINDING_F_NDR64 0x2000u
#define MP_BINDING_F_PACKET 0x4000u

/* Diagnostics: every problem found, as "FILE:LINE: what is wrong; what to do". */
struct mp_diag {
    char **msgs;
    size_t n;
};

struct mp_config {
    /* dcerpc_mapiproxy: (OpenChange's names) */
    struct mp_binding binding;                  /* dcerpc_mapiproxy:binding (required) */
    struct mp_iface_spec ifaces[MP_MAX_IFACES]; /* dcerpc_mapiproxy:interfaces */
    size_t n_ifaces;
    char username[256];               /* dcerpc_mapiproxy:username */
    char password[256];               /* dcerpc_mapiproxy:password (never logged) */
    char domain[256];                 /* dcerpc_mapiproxy:domain */
    char modules[MP_MAX_MODULES][64]; /* dcerpc_mapiproxy:modules, in order */
    size_t n_modules;
    bool delegated_auth; /* dcerpc_mapiproxy:delegated_auth */
    bool ndrdump;        /* dcerpc_mapiproxy:ndrdump */
    /* Samba globals */
    char netbios_name[64]; /* netbios name */
    char realm[256];       /* realm */
    /* mapiproxy: (ours) */
    struct mp_listen_addr listen[MP_MAX_LISTEN]; /* mapiproxy:listen, default 127.0.0.1 */
    size_t n_listen;
    uint16_t epm_port;                /* mapiproxy:epmapper port (135) */
    uint16_t rpc_port;                /* mapiproxy:rpc port (0 = any free port) */
    uint16_t upstream_epm_port;       /* mapiproxy:upstream epmapper port (135) */
    int log_level;                    /* mapiproxy:log level 0 error..4 trace (2 info) */
    char log_file[512];               /* mapiproxy:log file ("" = stderr) */
    char log_target[16];              /* mapiproxy:log target: file | syslog | stderr ("" = file
                                         when a log file is set, else stderr) */
    enum mp_log_to log_to;            /* ... parsed */
    char syslog_facility_name[16];    /* mapiproxy:syslog facility (daemon) */
    int syslog_facility;              /* ... as <syslog.h> LOG_DAEMON ... */
    char syslog_socket[108];          /* mapiproxy:syslog socket (/dev/log) */
    char run_user[64];                /* mapiproxy:user: drop to it after binding ("" = stay) */
    char run_group[64];               /* mapiproxy:group ("" = the user's primary group) */
    char packet_export_dir[512];      /* mapiproxy:packet export dir ("" = off) */
    char packet_export_clients[1024]; /* mapiproxy:packet export clients: addresses, or * */
    char packet_export_users[1024];   /* mapiproxy:packet export users: DCE/RPC logons */
    uint32_t max_call_size;           /* mapiproxy:max call size (bytes, 16 MiB) */
    uint32_t max_buffer;              /* mapiproxy:max buffer (per direction, 256 KiB) */
    uint32_t max_connections;         /* mapiproxy:max connections (9500) */
    uint32_t connect_timeout_ms;      /* mapiproxy:connect timeout (10000) */
    uint32_t idle_timeout_s;          /* mapiproxy:idle timeout (900; 0 = none) */
    uint32_t bind_timeout_s;          /* mapiproxy:bind timeout (30): bind (and log on) within */
    uint32_t workers;      /* mapiproxy:workers (the number of cores, at most MP_MAX_WORKERS) */
    uint32_t affinity_max; /* mapiproxy:affinity table size (65,536 entries; core/affinity.h) */
    uint32_t max_conn_per_addr; /* mapiproxy:max connections per address (512; 0 = none) */
    uint32_t send_timeout_s;    /* mapiproxy:send timeout (60): a peer not reading is closed */
    uint32_t max_fragments;     /* mapiproxy:max fragments (4096) per call */
    char credentials_file[512]; /* mapiproxy:credentials file: client users' NT hashes */
    char password_file[512];  /* mapiproxy:password file: dcerpc_mapiproxy:password, from a file */
    char allowed_users[1024]; /* mapiproxy:allowed users: empty = every user in the file */
    char upstream_auth_level[16];   /* mapiproxy:upstream auth level: connect|integrity|privacy */
    char min_client_auth_level[16]; /* mapiproxy:min client auth level (see mp_auth_level_parse) */
    /* Kerberos (doc/configuration.md, doc/internals/kerberos.md) */
    char keytab[512];            /* mapiproxy:keytab: the proxy's service keys (clients' tickets) */
    char service_principal[256]; /* mapiproxy:service principal (host/proxy.fqdn[@REALM]) */
    char upstream_keytab[512];   /* mapiproxy:upstream keytab: client keytab for the upstream leg */
    char upstream_ccache[512];   /* mapiproxy:upstream ccache */
    char upstream_principal[256]; /* mapiproxy:upstream principal (who the proxy is upstream) */
    char upstream_spn[256];       /* mapiproxy:upstream spn: Kerberos to the upstream when set */
    char delegation[16];          /* mapiproxy:delegation: none | s4u */
    char passthrough_ifaces[512]; /* mapiproxy:pass-through interfaces: relay clients' own auth */
    bool transparent;             /* mapiproxy:transparent (yes): no rewrite modules by default */
    char module_dir[512];         /* mapiproxy:module dir ("" = DIR-OF-EXECUTABLE/modules) */
    bool server;                  /* dcerpc_mapiproxy:server (accepted; true) */
    /* mapiproxy:http / mapiproxy:tls (the HTTPS front, src/transport/http/) */
    struct mp_http_listen http_listen[MP_MAX_LISTEN]; /* mapiproxy:http listen ADDR:PORT */
    size_t n_http_listen;
    char metrics_listen[100];         /* mapiproxy:metrics listen HOST:PORT ("" = off) */
    struct mp_http_listen metrics;    /* ... parsed (port 0 = off); doc/monitoring.md */
    bool http_plain;                  /* mapiproxy:http plain: listen without TLS (explicit) */
    char tls_certificate[512];        /* mapiproxy:tls certificate (PEM chain) */
    char tls_key[512];                /* mapiproxy:tls key (PEM) */
    char tls_ca_file[512];            /* mapiproxy:tls ca file ("" = the system bundle) */
    bool tls_verify;                  /* mapiproxy:tls verify (yes) */
    struct mp_http_url http_upstream; /* mapiproxy:http upstream */
    bool have_http_upstream;
    char http_upstream_names[1024];   /* mapiproxy:http upstream names: more names to rewrite */
    char http_public_name[320];       /* mapiproxy:http public name HOST[:PORT] */
    uint32_t http_header_timeout_s;   /* mapiproxy:http header timeout (30) */
    uint32_t http_idle_timeout_s;     /* mapiproxy:http idle timeout (300) */
    uint32_t http_upstream_timeout_s; /* mapiproxy:http upstream timeout (120) */
    uint32_t http_max_header;         /* mapiproxy:http max header size (32 KiB) */
    uint32_t http_max_body;           /* mapiproxy:http max body (request, 64 MiB) */
    uint32_t http_max_rewrite;        /* mapiproxy:http max rewrite body (1 MiB) */
    uint32_t http_held_budget;        /* mapiproxy:http held body budget (32 MiB) */
    uint32_t fx_hold_limit;           /* mapiproxy:fx hold limit (bytes, 16 MiB; 0 off) */
    bool http_relay_all;              /* mapiproxy:http relay all paths (no) */
    char http_relay_paths[512];       /* mapiproxy:http relay paths (MP_HTTP_DEFAULT_RELAY_PATHS) */
    char http_unrelayed_urls[16];     /* mapiproxy:http unrelayed urls: keep (default), drop */
    bool http_drop_unrelayed;         /* ... = drop */
    /* authentication termination on the HTTPS front (src/transport/http/hauth.c) */
    char http_auth[32];          /* mapiproxy:http auth: pass-through (default) | terminate */
    bool http_basic;             /* mapiproxy:http basic: clients may use Basic (no) */
    bool http_negotiate;         /* mapiproxy:http negotiate: clients may use Kerberos (no) */
    char http_realm[128];        /* mapiproxy:http realm: Basic realm (the public name) */
    char http_upstream_auth[32]; /* mapiproxy:http upstream auth: ntlm (default) | basic |
                                    negotiate */
    char http_upstream_spn[256]; /* mapiproxy:http upstream spn: Negotiate's target (HTTP@<host>) */
    /* RPC over HTTP v2 on the HTTPS front (src/transport/rpch/, doc/internals/rpch.md) */
    bool rpch;                    /* mapiproxy:rpc over http: terminate /rpc/rpcproxy.dll (no) */
    uint32_t rpch_window;         /* mapiproxy:rpc over http receive window (64 KiB) */
    uint32_t rpch_conn_timeout_s; /* mapiproxy:rpc over http connection timeout (120) */
    uint32_t rpch_pair_timeout_s; /* mapiproxy:rpc over http pairing timeout (30) */
    uint32_t rpch_out_length;     /* mapiproxy:rpc over http out channel length (1 GiB) */
    /* mapiproxy:rpc over http upstream: the relay's upstream is the server's
     * /rpc/rpcproxy.dll instead of ncacn_ip_tcp (transport/rpch/upclient.h) */
    struct mp_http_url rpch_upstream;
    bool have_rpch_upstream;
    char rpch_upstream_server[256]; /* ... server: the ?SERVER:port name (the binding's host) */
    uint32_t rpch_up_in_length;     /* ... upstream in channel length: RPC_IN_DATA's (1 GiB) */
    char rpch_upstream_auth[16];    /* ... upstream auth: basic (default) | ntlm | negotiate */
    char rpch_upstream_spn[256];    /* ... upstream spn: Negotiate's target (HTTP@<host>) */
    /* NTLM users from a domain, groups (doc/configuration.md, doc/internals/auth.md) */
    char ntlm_backend[16];        /* mapiproxy:ntlm backend: file (default) | winbind */
    char winbind_socket_dir[256]; /* mapiproxy:winbind socket dir ("" = libwbclient's default) */
    char groups_file[512];        /* mapiproxy:groups file: "group: user, user" lines */
    /* mailbox authorization under specified credentials (doc/security.md) */
    bool mailbox_auth; /* mapiproxy:mailbox authorization (yes) */
    /* online downloads read by the proxy at RopOpenMessage (msgonline.c) */
    bool online_prefetch;           /* mapiproxy:online prefetch (no) */
    uint32_t online_prefetch_max;   /* mapiproxy:online prefetch max size (16 MiB) */
    uint32_t online_prefetch_depth; /* mapiproxy:online prefetch depth (4) */
    bool mailbox_directory;         /* mapiproxy:mailbox directory (yes): DNs by NSPI lookup */
    char mailbox_map[512]; /* mapiproxy:mailbox map: "user: DN", "delegate user: mailbox" */
    /* Non-fatal remarks (ignored OpenChange-only options...), same format as
     * errors; freed by mp_config_free (and by a failed load). */
    struct mp_diag warnings;

    /* Every key = value read, for module options and lookups. */
    struct mp_config_entry *entries;
    size_t n_entries;
    char path[512];
};

struct mp_config_entry {
    char *section; /* lower-case */
    char *key;     /* normalized: lower-case, white space folded */
    char *value;   /* trimmed */
    char *file;    /* the file (or include) it was read from */
    int line;
};

/* Fills defaults, then reads FILE (or, when path is NULL, the text in
 * `text`, named `name` in messages).  Returns 0 when valid; otherwise -1
 * and every error is in diag (caller frees with mp_diag_free). */
int mp_config_load(struct mp_config *cfg, const char *path, struct mp_diag *diag);
int mp_config_load_text(struct mp_config *cfg, const char *name, const char *text,
                        struct mp_diag *diag);
/* Frees entries and warnings; safe to call twice, or after a failed load
 * (which already released them). */
void mp_config_free(struct mp_config *cfg);
/* An authentication level name (none, connect, call, packet, integrity,
 * privacy; case-insensitive) as its RPC_C_AUTHN_LEVEL value 1..6, or -1. */
int mp_auth_level_parse(const char *s);
void mp_diag_free(struct mp_diag *diag);

/* Raw lookup of any key (normalized as above), e.g. "mpm_dummy:test".
 * Searches [global] first, then any section.  NULL when absent. */
const char *mp_config_get(const struct mp_config *cfg, const char *key);
bool mp_config_get_bool(const struct mp_config *cfg, const char *key, bool dflt);
long mp_config_get_int(const struct mp_config *cfg, const char *key, long dflt);

/* Where key (normalized, e.g. "mapiproxy:credentials file") was last set:
 * returns the line and sets *file, or 0 with *file = cfg->path. */
int mp_config_where(const struct mp_config *cfg, const char *key, const char **file);

/* The closest of names[] to s (the did-you-mean of unknown options), or
 * NULL when none is close. */
const char *mp_config_closest(const char *s, const char *const *names, size_t n);

/* yes/true/1/on or no/false/0/off (any case) into *out; false if neither. */
bool mp_config_parse_bool(const char *v, bool *out);
/* A decimal or 0x number (what mp_config_get_int reads); false if not. */
bool mp_config_parse_int(const char *v, long *out);

/* A log level: 0-4 or error, warn(ing), info, debug, trace (any case); -1 if neither. */
int mp_log_level_parse(const char *v);

/* The keys (but `ignore`, a normalized key or NULL) whose values differ
 * between two loaded configurations, ", " separated in out (truncated to n);
 * returns how many. */
size_t mp_config_diff(const struct mp_config *a, const struct mp_config *b, const char *ignore,
                      char *out, size_t n);

/* The start-up checks the daemon would otherwise fail on, beyond the syntax:
 * files (credentials and password files present and not readable by others,
 * keytabs, TLS certificate and key), modules (known, loadable, right ABI),
 * ports used twice.  Each error "FILE:LINE: what; fix" into diag.  0 or -1. */
int mp_config_check_runtime(const struct mp_config *cfg, struct mp_diag *diag);

/* Well-known interfaces: fills spec from a name ("exchange_emsmdb",
 * "exchange_nsp", "exchange_ds_rfr", "exchange_async_emsmdb", "epmapper",
 * "lsarpc"...) or from "UUID" / "UUID/MAJOR.MINOR".  Returns 0 or -1. */
int mp_iface_parse(const char *text, struct mp_iface_spec *spec);

/* True when a bind for uuid (wire form) version major.minor is covered by
 * spec: any version when spec->any_version, else the same major and a minor
 * not above spec's (the DCE/RPC compatibility rule). */
bool mp_iface_match(const struct mp_iface_spec *spec, const uint8_t uuid[16], uint16_t vers_major,
                    uint16_t vers_minor);

/* UUID text "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (any case, optional {})
 * <-> 16 bytes in DCE/RPC wire form (first three fields little-endian).
 * mp_uuid_parse returns 0 or -1; mp_uuid_format writes lower case + NUL. */
int mp_uuid_parse(const char *s, uint8_t out[16]);
void mp_uuid_format(const uint8_t in[16], char out[37]);

/* Parses a Samba binding string ("ncacn_ip_tcp:HOST[PORT,options]").
 * Returns 0, or -1 with err set to "what is wrong; what to do" (meant to
 * follow the quoted binding text). */
int mp_binding_parse(const char *text, struct mp_binding *b, char *err, size_t errlen);

#define MP_CONFIG_MAX_INCLUDE_DEPTH 8
#define MP_CONFIG_MAX_FILE_SIZE (4u << 20)

/* The embedded default configuration used when no -c is given. */
extern const char mp_default_config[];

#endif
