/* Unit tests for the configuration parser (src/core/config.c).
 * Run with tests/unit as the working directory (data/config/...). */
#include "auth/groups.h"
#include "core/config.h"
#include "auth/mailboxauth.h"
#include "testlib.h"

#include <syslog.h>

#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static struct mp_config cfg;
static struct mp_diag diag;

/* Loads text; returns the result and leaves messages in diag. */
static int load(const char *text)
{
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    return mp_config_load_text(&cfg, "mapiproxy.conf", text, &diag);
}

/* Loads "binding line + text". */
static int loadb(const char *text)
{
    char *t = NULL;
    if (asprintf(&t, "dcerpc_mapiproxy:binding = ncacn_ip_tcp:10.1.2.3\n%s", text) < 0)
        return -2;
    int r = load(t);
    free(t);
    return r;
}

/* True when some message contains every given fragment. */
static bool has_msg(const struct mp_diag *d, const char *a, const char *b)
{
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->msgs[i], a) && (!b || strstr(d->msgs[i], b)))
            return true;
    return false;
}

static void dump(void)
{
    for (size_t i = 0; i < diag.n; i++)
        fprintf(stderr, "  diag: %s\n", diag.msgs[i]);
}

static const uint8_t emsmdb_wire[16] = {0x00, 0xdb, 0xf1, 0xa4, 0x47, 0xca, 0x67, 0x10,
                                        0xb3, 0x1f, 0x00, 0xdd, 0x01, 0x06, 0x62, 0xda};

static void test_uuid(void)
{
    uint8_t u[16];
    char s[37];
    CHECK_EQ(mp_uuid_parse("a4f1db00-ca47-1067-b31f-00dd010662da", u), 0);
    CHECK(!memcmp(u, emsmdb_wire, 16));
    mp_uuid_format(u, s);
    CHECK(!strcmp(s, "a4f1db00-ca47-1067-b31f-00dd010662da"));
    CHECK_EQ(mp_uuid_parse("A4F1DB00-CA47-1067-B31F-00DD010662DA", u), 0);
    CHECK(!memcmp(u, emsmdb_wire, 16));
    CHECK_EQ(mp_uuid_parse("{a4f1db00-ca47-1067-b31f-00dd010662da}", u), 0);
    CHECK(!memcmp(u, emsmdb_wire, 16));
    /* bad forms */
    CHECK_EQ(mp_uuid_parse("", u), -1);
    CHECK_EQ(mp_uuid_parse(NULL, u), -1);
    CHECK_EQ(mp_uuid_parse("a4f1db00-ca47-1067-b31f-00dd010662d", u), -1);   /* short */
    CHECK_EQ(mp_uuid_parse("a4f1db00-ca47-1067-b31f-00dd010662daa", u), -1); /* long */
    CHECK_EQ(mp_uuid_parse("a4f1db00-ca47-1067-b31f-00dd010662dg", u), -1);  /* not hex */
    CHECK_EQ(mp_uuid_parse("a4f1db00ca47-1067-b31f-00dd010662da0", u), -1);  /* dash moved */
    CHECK_EQ(mp_uuid_parse("a4f1db00-ca47-1067-b31f_00dd010662da", u), -1);
    CHECK_EQ(mp_uuid_parse("{a4f1db00-ca47-1067-b31f-00dd010662da", u), -1);
    CHECK_EQ(mp_uuid_parse("a4f1db00a-ca47-1067-b31f-00dd010662d", u), -1);
    /* round trip of the others */
    const char *all[] = {"5261574a-4572-206e-b268-6b199213b4e4",
                         "f5cc5a18-4264-101a-8c59-08002b2f8426",
                         "12345678-1234-abcd-ef00-01234567cffb"};
    for (size_t i = 0; i < 3; i++) {
        CHECK_EQ(mp_uuid_parse(all[i], u), 0);
        mp_uuid_format(u, s);
        CHECK(!strcmp(s, all[i]));
    }
}

static void test_iface_parse(void)
{
    struct mp_iface_spec sp;
    struct {
        const char *name, *uuid;
        uint16_t maj, min;
    } known[] = {
        {"exchange_emsmdb", "a4f1db00-ca47-1067-b31f-00dd010662da", 0, 81},
        {"exchange_async_emsmdb", "5261574a-4572-206e-b268-6b199213b4e4", 0, 1},
        {"exchange_nsp", "f5cc5a18-4264-101a-8c59-08002b2f8426", 56, 0},
        {"exchange_ds_rfr", "1544f5e0-613c-11d1-93df-00c04fd7bd09", 1, 0},
        {"epmapper", "e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0},
        {"lsarpc", "12345778-1234-abcd-ef00-0123456789ab", 0, 0},
        {"samr", "12345778-1234-abcd-ef00-0123456789ac", 1, 0},
        {"netlogon", "12345678-1234-abcd-ef00-01234567cffb", 1, 0},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        uint8_t u[16];
        char s[37];
        CHECK_EQ(mp_iface_parse(known[i].name, &sp), 0);
        CHECK(!strcmp(sp.name, known[i].name));
        CHECK_EQ(sp.vers_major, known[i].maj);
        CHECK_EQ(sp.vers_minor, known[i].min);
        CHECK(!sp.any_version);
        mp_uuid_format(sp.uuid, s);
        CHECK(!strcmp(s, known[i].uuid));
        mp_uuid_parse(known[i].uuid, u);
        CHECK(mp_iface_match(&sp, u, known[i].maj, known[i].min));
        CHECK(!mp_iface_match(&sp, u, (uint16_t)(known[i].maj + 1), known[i].min));
        CHECK(!mp_iface_match(&sp, u, known[i].maj, (uint16_t)(known[i].min + 1)));
        if (known[i].min)
            CHECK(mp_iface_match(&sp, u, known[i].maj, (uint16_t)(known[i].min - 1)));
        u[15] ^= 1;
        CHECK(!mp_iface_match(&sp, u, known[i].maj, known[i].min));
    }
    /* names are case-insensitive */
    CHECK_EQ(mp_iface_parse("Exchange_EMSMDB", &sp), 0);
    CHECK(!strcmp(sp.name, "exchange_emsmdb"));
    CHECK(!memcmp(sp.uuid, emsmdb_wire, 16));

    /* by UUID: without version, any version matches */
    CHECK_EQ(mp_iface_parse("12345678-1234-abcd-ef00-0123456789ff", &sp), 0);
    CHECK(sp.any_version);
    CHECK(!strcmp(sp.name, "12345678-1234-abcd-ef00-0123456789ff"));
    CHECK(mp_iface_match(&sp, sp.uuid, 7, 9));
    /* by UUID/MAJOR.MINOR */
    CHECK_EQ(mp_iface_parse("12345678-1234-ABCD-ef00-0123456789ff/2.3", &sp), 0);
    CHECK(!sp.any_version);
    CHECK_EQ(sp.vers_major, 2);
    CHECK_EQ(sp.vers_minor, 3);
    CHECK(!strcmp(sp.name, "12345678-1234-abcd-ef00-0123456789ff"));
    CHECK(mp_iface_match(&sp, sp.uuid, 2, 3));
    CHECK(mp_iface_match(&sp, sp.uuid, 2, 0));
    CHECK(!mp_iface_match(&sp, sp.uuid, 2, 4));
    CHECK(!mp_iface_match(&sp, sp.uuid, 3, 0));
    /* UUID/MAJOR means MAJOR.0 */
    CHECK_EQ(mp_iface_parse("12345678-1234-abcd-ef00-0123456789ff/5", &sp), 0);
    CHECK_EQ(sp.vers_major, 5);
    CHECK_EQ(sp.vers_minor, 0);
    /* Samba's 0xVVVVVVVV form: minor in the high half */
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/0x00510000", &sp), 0);
    CHECK_EQ(sp.vers_major, 0);
    CHECK_EQ(sp.vers_minor, 81);
    CHECK(!strcmp(sp.name, "exchange_emsmdb")); /* a known UUID+version takes its name */
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da", &sp), 0);
    CHECK(!strcmp(sp.name, "exchange_emsmdb"));
    CHECK(sp.any_version);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/0.50", &sp), 0);
    CHECK(!strcmp(sp.name, "a4f1db00-ca47-1067-b31f-00dd010662da"));

    /* bad */
    CHECK_EQ(mp_iface_parse("exchange_emsmbd", &sp), -1);
    CHECK_EQ(mp_iface_parse("", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662d", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/1.", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/65536.0", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/1.2.3", &sp), -1);
    CHECK_EQ(mp_iface_parse("a4f1db00-ca47-1067-b31f-00dd010662da/x", &sp), -1);
    CHECK_EQ(mp_iface_parse("zzf1db00-ca47-1067-b31f-00dd010662da/1.0", &sp), -1);
    CHECK_EQ(mp_iface_parse(NULL, &sp), -1);
}

static void test_binding(void)
{
    struct mp_binding b;
    char err[400];
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:192.168.1.1", &b, err, sizeof err), 0);
    CHECK_EQ(b.transport, MP_TRANSPORT_NCACN_IP_TCP);
    CHECK(!strcmp(b.host, "192.168.1.1"));
    CHECK_EQ(b.port, 0);
    CHECK_EQ(b.flags, 0);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:exchange.example.com[6001]", &b, err, sizeof err), 0);
    CHECK(!strcmp(b.host, "exchange.example.com"));
    CHECK_EQ(b.port, 6001);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:ex01[135,sign,seal]", &b, err, sizeof err), 0);
    CHECK_EQ(b.port, 135);
    CHECK_EQ(b.flags, MP_BINDING_F_SIGN | MP_BINDING_F_SEAL);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:192.168.1.1[print]", &b, err, sizeof err), 0);
    CHECK_EQ(b.port, 0);
    CHECK_EQ(b.flags, MP_BINDING_F_PRINT);
    CHECK_EQ(mp_binding_parse("NCACN_IP_TCP:host[Seal,6001]", &b, err, sizeof err), 0);
    CHECK_EQ(b.port, 6001);
    CHECK_EQ(b.flags, MP_BINDING_F_SEAL);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[endpoint=6002,print]", &b, err, sizeof err), 0);
    CHECK_EQ(b.port, 6002);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[]", &b, err, sizeof err), 0);
    CHECK_EQ(
        mp_binding_parse("ncacn_ip_tcp:host[target_hostname=ex.example.com]", &b, err, sizeof err),
        0);
    /* IPv6: Samba writes the address bare; [::1] is accepted too */
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:::1[135]", &b, err, sizeof err), 0);
    CHECK(!strcmp(b.host, "::1"));
    CHECK_EQ(b.port, 135);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:fe80::1%eth0", &b, err, sizeof err), 0);
    CHECK(!strcmp(b.host, "fe80::1%eth0"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:[2001:db8::5][6001,sign]", &b, err, sizeof err), 0);
    CHECK(!strcmp(b.host, "2001:db8::5"));
    CHECK_EQ(b.port, 6001);
    CHECK_EQ(b.flags, MP_BINDING_F_SIGN);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:[::1]", &b, err, sizeof err), 0);
    CHECK(!strcmp(b.host, "::1"));
    /* object UUID prefix, as Samba allows */
    CHECK_EQ(mp_binding_parse("a4f1db00-ca47-1067-b31f-00dd010662da@ncacn_ip_tcp:h1[6001]", &b, err,
                              sizeof err),
             0);
    CHECK(!strcmp(b.host, "h1"));

    /* errors */
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:", &b, err, sizeof err), -1);
    CHECK(strstr(err, "has no host; write it as ncacn_ip_tcp:HOST or ncacn_ip_tcp:HOST[PORT]"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:[135]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "no host"));
    CHECK_EQ(mp_binding_parse("ncalrpc:EXCHANGE", &b, err, sizeof err), -1);
    CHECK(strstr(err, "only ncacn_ip_tcp is supported in this version"));
    CHECK_EQ(mp_binding_parse("ncacn_np:host[\\pipe\\lsarpc]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "only ncacn_ip_tcp is supported"));
    CHECK_EQ(mp_binding_parse("ncacn_http:host[6001]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "only ncacn_ip_tcp is supported"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tpc:host", &b, err, sizeof err), -1);
    CHECK(strstr(err, "did you mean ncacn_ip_tcp"));
    CHECK_EQ(mp_binding_parse("192.168.1.1", &b, err, sizeof err), -1);
    CHECK(strstr(err, "no transport"));
    CHECK_EQ(mp_binding_parse("192.168.1.1[135]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "no transport"));
    CHECK_EQ(mp_binding_parse("exchange.example.com:135", &b, err, sizeof err), -1);
    CHECK(strstr(err, "ncacn_ip_tcp:exchange.example.com[135]"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[0]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "1-65535"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[65536]", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[135,bogus]", &b, err, sizeof err), -1);
    CHECK(strstr(err, "bogus"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[bogus]", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[135", &b, err, sizeof err), -1);
    CHECK(strstr(err, "unclosed"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[135][sign]", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[135,136]", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:host[foo=1]", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:999.1.1.1", &b, err, sizeof err), -1);
    CHECK(strstr(err, "IPv4"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:ho st", &b, err, sizeof err), -1);
    CHECK(strstr(err, "white space"));
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:h/st", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:a..b", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("ncacn_ip_tcp:1:2:3", &b, err, sizeof err), -1);
    CHECK(strstr(err, "IPv6"));
    CHECK_EQ(mp_binding_parse("", &b, err, sizeof err), -1);
    CHECK_EQ(mp_binding_parse("bad@ncacn_ip_tcp:h", &b, err, sizeof err), -1);

    /* in a file: the example message from the documentation */
    CHECK_EQ(load("\n\n[global]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:\n"), -1);
    CHECK(has_msg(&diag,
                  "mapiproxy.conf:4: dcerpc_mapiproxy:binding \"ncacn_ip_tcp:\" has no host; "
                  "write it as ncacn_ip_tcp:HOST or ncacn_ip_tcp:HOST[PORT]",
                  NULL));
    CHECK_EQ(diag.n, 1); /* no extra "binding is not set" */
    CHECK_EQ(load("dcerpc_mapiproxy:binding = ncacn_ip_tcp:ex1[6001,seal]\n"), 0);
    CHECK(!strcmp(cfg.binding.host, "ex1"));
    CHECK_EQ(cfg.binding.port, 6001);
    CHECK_EQ(cfg.binding.flags, MP_BINDING_F_SEAL);
}

static void test_defaults(void)
{
    CHECK_EQ(load("dcerpc_mapiproxy:binding = ncacn_ip_tcp:10.1.2.3\n"), 0);
    dump();
    CHECK_EQ(diag.n, 0);
    CHECK_EQ(cfg.binding.transport, MP_TRANSPORT_NCACN_IP_TCP);
    CHECK(!strcmp(cfg.binding.host, "10.1.2.3"));
    CHECK_EQ(cfg.binding.port, 0);
    CHECK_EQ(cfg.n_ifaces, 4);
    CHECK(!strcmp(cfg.ifaces[0].name, "exchange_emsmdb"));
    CHECK(!strcmp(cfg.ifaces[1].name, "exchange_async_emsmdb"));
    CHECK(!strcmp(cfg.ifaces[2].name, "exchange_nsp"));
    CHECK(!strcmp(cfg.ifaces[3].name, "exchange_ds_rfr"));
    CHECK(!memcmp(cfg.ifaces[0].uuid, emsmdb_wire, 16));
    CHECK(!strcmp(cfg.username, ""));
    CHECK(!strcmp(cfg.password, ""));
    CHECK(!strcmp(cfg.domain, ""));
    CHECK_EQ(cfg.n_modules, 0);
    CHECK_EQ(cfg.delegated_auth, false);
    CHECK_EQ(cfg.ndrdump, false);
    CHECK_EQ(cfg.server, true);
    /* netbios name: host name, upper case, at most 15 */
    CHECK(strlen(cfg.netbios_name) >= 1 && strlen(cfg.netbios_name) <= 15);
    for (const char *p = cfg.netbios_name; *p; p++)
        CHECK(!(*p >= 'a' && *p <= 'z') && *p != '.');
    CHECK(!strcmp(cfg.realm, ""));
    CHECK_EQ(cfg.n_listen, 1);
    CHECK(!strcmp(cfg.listen[0].host, "127.0.0.1"));
    CHECK_EQ(cfg.epm_port, 135);
    CHECK_EQ(cfg.rpc_port, 0);
    CHECK_EQ(cfg.upstream_epm_port, 135);
    CHECK_EQ(cfg.log_level, 2);
    CHECK(!strcmp(cfg.log_file, ""));
    CHECK_EQ(cfg.max_call_size, 16u * 1024 * 1024);
    CHECK_EQ(cfg.max_buffer, 256u * 1024);
    CHECK_EQ(cfg.max_connections, 9500);
    CHECK_EQ(cfg.connect_timeout_ms, 10000);
    CHECK_EQ(cfg.idle_timeout_s, 900); /* issue 11: on by default */
    CHECK_EQ(cfg.bind_timeout_s, 30);
    CHECK_EQ(cfg.max_conn_per_addr, 512);
    CHECK(!strcmp(cfg.min_client_auth_level, ""));
    CHECK(!strcmp(cfg.path, "mapiproxy.conf"));
    CHECK_EQ(cfg.n_entries, 1);
    CHECK(!strcmp(cfg.entries[0].section, "global"));
    CHECK(!strcmp(cfg.entries[0].key, "dcerpc_mapiproxy:binding"));
    CHECK(!strcmp(cfg.entries[0].value, "ncacn_ip_tcp:10.1.2.3"));
    CHECK_EQ(cfg.entries[0].line, 1);

    /* binding is required */
    CHECK_EQ(load("[global]\nmapiproxy:listen = 127.0.0.1\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf: dcerpc_mapiproxy:binding is not set", "add"));
    CHECK_EQ(load(""), -1);
    CHECK_EQ(diag.n, 1);
    CHECK(cfg.entries == NULL); /* a failed load releases what it held */
}

static void test_builtin_default(void)
{
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, NULL, &diag), 0);
    dump();
    CHECK(!strcmp(cfg.binding.host, "127.0.0.1"));
    CHECK_EQ(cfg.binding.port, 0);
    CHECK_EQ(cfg.n_listen, 1);
    CHECK(!strcmp(cfg.listen[0].host, "127.0.0.1"));
    CHECK_EQ(cfg.epm_port, 135);
    CHECK_EQ(cfg.rpc_port, 6100);
    CHECK_EQ(cfg.upstream_epm_port, 135);
    CHECK_EQ(cfg.n_ifaces, 4);
    CHECK(!strcmp(cfg.ifaces[1].name, "exchange_async_emsmdb"));
    CHECK_EQ(cfg.log_level, 2);
    CHECK(strstr(mp_default_config, "#") != NULL);
    /* the same text through load_text */
    CHECK_EQ(load(mp_default_config), 0);
    CHECK_EQ(cfg.rpc_port, 6100);
}

static void test_every_option(void)
{
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/full.conf", &diag), 0);
    dump();
    CHECK(!strcmp(cfg.path, "data/config/full.conf"));
    CHECK(!strcmp(cfg.binding.host, "192.0.2.10"));
    CHECK_EQ(cfg.binding.port, 6004);
    CHECK_EQ(cfg.binding.flags, MP_BINDING_F_SIGN | MP_BINDING_F_SEAL);
    CHECK_EQ(cfg.n_ifaces, 9);
    const char *names[] = {
        "exchange_emsmdb", "exchange_nsp", "exchange_ds_rfr", "epmapper",
        "lsarpc",          "samr",         "netlogon",        "exchange_async_emsmdb"};
    for (size_t i = 0; i < 8 && i < cfg.n_ifaces; i++)
        CHECK(!strcmp(cfg.ifaces[i].name, names[i]));
    CHECK(!strcmp(cfg.ifaces[8].name, "12345678-1234-abcd-ef00-0123456789ff"));
    CHECK_EQ(cfg.ifaces[8].vers_major, 2);
    CHECK_EQ(cfg.ifaces[8].vers_minor, 3);
    CHECK(!strcmp(cfg.username, "proxyuser"));
    CHECK(!strcmp(cfg.password, "pa55 w0rd = x")); /* first '=' splits */
    CHECK(!strcmp(cfg.domain, "EXAMPLE"));
    CHECK_EQ(cfg.n_modules, 3);
    CHECK(!strcmp(cfg.modules[0], "cache"));
    CHECK(!strcmp(cfg.modules[1], "downgrade"));
    CHECK(!strcmp(cfg.modules[2], "dummy"));
    CHECK_EQ(cfg.delegated_auth, true);
    CHECK_EQ(cfg.ndrdump, true);
    CHECK_EQ(cfg.server, false);
    CHECK(!strcmp(cfg.netbios_name, "PROXY1"));
    CHECK(!strcmp(cfg.realm, "EXAMPLE.COM"));
    CHECK_EQ(cfg.n_listen, 3);
    CHECK(!strcmp(cfg.listen[0].host, "127.0.0.1"));
    CHECK(!strcmp(cfg.listen[1].host, "::1"));
    CHECK(!strcmp(cfg.listen[2].host, "fe80::1"));
    CHECK_EQ(cfg.epm_port, 1135);
    CHECK_EQ(cfg.rpc_port, 6100);
    CHECK_EQ(cfg.upstream_epm_port, 1350);
    CHECK_EQ(cfg.log_level, 4);
    CHECK(!strcmp(cfg.log_file, "/var/log/mapiproxy.log"));
    CHECK_EQ(cfg.max_call_size, 8u << 20);
    CHECK_EQ(cfg.max_buffer, 64u << 10);
    CHECK_EQ(cfg.max_connections, 100);
    CHECK_EQ(cfg.connect_timeout_ms, 2500);
    CHECK_EQ(cfg.idle_timeout_s, 600);
    CHECK(!strcmp(mp_config_get(&cfg, "mpm_cache:path"), "/var/cache/mapiproxy"));
    CHECK(mp_config_get_bool(&cfg, "mpm_dummy:test", false));
    CHECK_EQ(cfg.warnings.n, 0);
}

static void test_values(void)
{
    /* booleans */
    const char *t[] = {"yes", "true", "1", "on", "YES", "True", "On"};
    const char *f[] = {"no", "false", "0", "off", "NO", "False", "OFF"};
    for (size_t i = 0; i < 7; i++) {
        char b[128];
        snprintf(b, sizeof b, "dcerpc_mapiproxy:ndrdump = %s\n", t[i]);
        CHECK_EQ(loadb(b), 0);
        CHECK_EQ(cfg.ndrdump, true);
        snprintf(b, sizeof b, "dcerpc_mapiproxy:ndrdump = %s\n", f[i]);
        CHECK_EQ(loadb(b), 0);
        CHECK_EQ(cfg.ndrdump, false);
    }
    CHECK_EQ(loadb("dcerpc_mapiproxy:delegated_auth = maybe\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: dcerpc_mapiproxy:delegated_auth \"maybe\"",
                  "write yes or no"));

    /* log level names */
    const char *lv[] = {"error", "warning", "info", "debug", "trace"};
    for (int i = 0; i < 5; i++) {
        char b[128];
        snprintf(b, sizeof b, "mapiproxy:log level = %s\n", lv[i]);
        CHECK_EQ(loadb(b), 0);
        CHECK_EQ(cfg.log_level, i);
        snprintf(b, sizeof b, "mapiproxy:log level = %d\n", i);
        CHECK_EQ(loadb(b), 0);
        CHECK_EQ(cfg.log_level, i);
    }
    CHECK_EQ(loadb("mapiproxy:log level = 5\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2:", "log level"));
    CHECK_EQ(loadb("mapiproxy:log level = verbose\n"), -1);

    /* sizes */
    CHECK_EQ(loadb("mapiproxy:max call size = 1048576\nmapiproxy:max buffer = 512k\n"), 0);
    CHECK_EQ(cfg.max_call_size, 1048576u);
    CHECK_EQ(cfg.max_buffer, 512u * 1024);
    CHECK_EQ(loadb("mapiproxy:max call size = 32 MiB\nmapiproxy:max buffer = 1MB\n"), 0);
    CHECK_EQ(cfg.max_call_size, 32u << 20);
    CHECK_EQ(cfg.max_buffer, 1u << 20);
    CHECK_EQ(loadb("mapiproxy:max call size = 1G\n"), 0);
    CHECK_EQ(cfg.max_call_size, 1u << 30);
    CHECK_EQ(loadb("mapiproxy:max call size = 2G\n"), -1);
    CHECK(has_msg(&diag, "max call size", "out of range"));
    CHECK_EQ(loadb("mapiproxy:max call size = 100\n"), -1);
    CHECK_EQ(loadb("mapiproxy:max buffer = 99999999999999999999999K\n"), -1);
    CHECK_EQ(loadb("mapiproxy:max buffer = -1\n"), -1);
    CHECK_EQ(loadb("mapiproxy:max buffer = 16X\n"), -1);
    CHECK_EQ(loadb("mapiproxy:max buffer = \n"), -1);

    /* ports */
    CHECK_EQ(loadb("mapiproxy:epmapper port = 65535\nmapiproxy:rpc port = 0\n"), 0);
    CHECK_EQ(cfg.epm_port, 65535);
    CHECK_EQ(cfg.rpc_port, 0);
    CHECK_EQ(loadb("mapiproxy:epmapper port = 0\n"), 0); /* 0: no endpoint mapper */
    CHECK_EQ(cfg.epm_port, 0);
    CHECK_EQ(loadb("mapiproxy:epmapper port = 65536\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:epmapper port \"65536\" is not a valid port", "0 to 65535"));
    CHECK_EQ(loadb("mapiproxy:upstream epmapper port = 0\n"), -1);
    CHECK(has_msg(&diag, "upstream epmapper port", "1 to 65535"));
    CHECK_EQ(loadb("mapiproxy:rpc port = 65536\n"), -1);
    CHECK(has_msg(&diag, "rpc port", "0 to 65535"));
    CHECK_EQ(loadb("mapiproxy:rpc port = 80a\n"), -1);
    CHECK_EQ(loadb("mapiproxy:rpc port = +80\n"), -1);

    /* numbers */
    CHECK_EQ(loadb("mapiproxy:max connections = 0\n"), -1);
    CHECK(has_msg(&diag, "max connections", "out of range"));
    CHECK_EQ(loadb("mapiproxy:max connections = many\n"), -1);
    CHECK(has_msg(&diag, "max connections", "not a number"));
    CHECK_EQ(loadb("mapiproxy:connect timeout = 0\n"), -1);
    CHECK_EQ(loadb("mapiproxy:connect timeout = 3600001\n"), -1);
    CHECK_EQ(loadb("mapiproxy:connect timeout = 3600000\n"), 0);
    CHECK_EQ(loadb("mapiproxy:idle timeout = 0\n"), 0);
    CHECK_EQ(loadb("mapiproxy:idle timeout = 99999999999\n"), -1);

    /* strings */
    char big[600];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    char *b = NULL;
    CHECK(asprintf(&b, "dcerpc_mapiproxy:username = %s\nmapiproxy:log file = %s\n", big, big) > 0);
    CHECK_EQ(loadb(b), -1);
    CHECK(has_msg(&diag, "username is longer than 255 bytes", NULL));
    CHECK(has_msg(&diag, "log file is longer than 511 bytes", NULL));
    free(b);
    CHECK_EQ(loadb("netbios name = abcdefghijklmnop\n"), -1);
    CHECK(has_msg(&diag, "netbios name", "15"));
    CHECK_EQ(loadb("netbios name = abcdefghijklmno\nrealm = Corp.Example\n"), 0);
    CHECK(!strcmp(cfg.netbios_name, "ABCDEFGHIJKLMNO"));
    CHECK(!strcmp(cfg.realm, "CORP.EXAMPLE"));

    /* listen */
    CHECK_EQ(loadb("mapiproxy:listen = 0.0.0.0 ::\n"), 0);
    CHECK_EQ(cfg.n_listen, 2);
    CHECK_EQ(loadb("mapiproxy:listen = localhost\n"), 0);
    CHECK(!strcmp(cfg.listen[0].host, "localhost"));
    CHECK_EQ(loadb("mapiproxy:listen = 127.0.0.1 127.0.0.1\n"), -1);
    CHECK(has_msg(&diag, "twice", NULL));
    CHECK_EQ(loadb("mapiproxy:listen = 127.0.0.300\n"), -1);
    CHECK_EQ(loadb("mapiproxy:listen =\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:listen is empty", NULL));
    CHECK_EQ(loadb("mapiproxy:listen = 1.1.1.1 1.1.1.2 1.1.1.3 1.1.1.4 1.1.1.5 1.1.1.6 1.1.1.7 "
                   "1.1.1.8 1.1.1.9\n"),
             -1);
    CHECK(has_msg(&diag, "more than 8", NULL));

    /* modules: order kept, duplicates are errors */
    CHECK_EQ(loadb("dcerpc_mapiproxy:modules = downgrade,cache;dummy\n"), 0);
    CHECK_EQ(cfg.n_modules, 3);
    CHECK(!strcmp(cfg.modules[2], "dummy"));
    CHECK_EQ(loadb("dcerpc_mapiproxy:modules = downgrade cache downgrade\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: dcerpc_mapiproxy:modules lists module downgrade twice",
                  "remove one"));
    CHECK_EQ(loadb("dcerpc_mapiproxy:modules = a/b\n"), -1);
    CHECK_EQ(loadb("dcerpc_mapiproxy:modules =\n"), 0);
    CHECK_EQ(cfg.n_modules, 0);

    /* interfaces */
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = exchange_nsp\n"), 0);
    CHECK_EQ(cfg.n_ifaces, 1);
    CHECK(!strcmp(cfg.ifaces[0].name, "exchange_nsp"));
    CHECK_EQ(cfg.ifaces[0].vers_major, 56);
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = exchange_emsmbd, exchange_nsp\n"), -1);
    CHECK(has_msg(&diag, "\"exchange_emsmbd\"", "did you mean exchange_emsmdb"));
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = a4f1db00-ca47-1067-b31f-00dd010662\n"), -1);
    CHECK(has_msg(&diag, "not a valid interface UUID", "32 hex digits"));
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = a4f1db00-ca47-1067-b31f-00dd010662da/zero\n"),
             -1);
    CHECK(has_msg(&diag, "bad version", NULL));
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = exchange_nsp f5cc5a18-4264-101a-8c59-"
                   "08002b2f8426/56.0\n"),
             -1);
    CHECK(has_msg(&diag, "lists exchange_nsp twice", NULL));
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = , \n"), -1);
    CHECK(has_msg(&diag, "interfaces is empty", NULL));
}

static void test_errors_collected(void)
{
    const char *text = "# a broken file\n"                                  /* 1 */
                       "[global]\n"                                         /* 2 */
                       "dcerpc_mapiproxy:binding = ncalrpc:EXCHANGE\n"      /* 3 */
                       "mapiproxy:lisen = 127.0.0.1\n"                      /* 4 */
                       "mapiproxy:epmapper port = 99999\n"                  /* 5 */
                       "this line is wrong\n"                               /* 6 */
                       "dcerpc_mapiproxy:ndrdump = perhaps\n"               /* 7 */
                       "[broken\n"                                          /* 8 */
                       "dcerpc_mapiproxy:frobnicate = 1\n"                  /* 9 */
                       "mapiproxy:binding = ncacn_ip_tcp:x\n"               /* 10 */
                       "= value\n"                                          /* 11 */
                       "dcerpc_mapiproxy:interfaces = exchange_nsp, nope\n" /* 12 */
                       "mapiproxy:max call size = \\\n"                     /* 13 */
                       "   lots\n";                                         /* 14 */
    CHECK_EQ(load(text), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:3: dcerpc_mapiproxy:binding \"ncalrpc:EXCHANGE\"",
                  "only ncacn_ip_tcp is supported in this version"));
    CHECK(has_msg(&diag, "mapiproxy.conf:4: unknown option \"mapiproxy:lisen\"",
                  "did you mean \"mapiproxy:listen\""));
    CHECK(has_msg(&diag, "mapiproxy.conf:5: mapiproxy:epmapper port \"99999\"", NULL));
    CHECK(has_msg(&diag, "mapiproxy.conf:6: line has no '='", "KEY = VALUE"));
    CHECK(has_msg(&diag, "mapiproxy.conf:7: dcerpc_mapiproxy:ndrdump", NULL));
    CHECK(has_msg(&diag, "mapiproxy.conf:8: section header has no closing ']'", NULL));
    CHECK(has_msg(&diag, "mapiproxy.conf:9: unknown option \"dcerpc_mapiproxy:frobnicate\"",
                  "doc/configuration.md"));
    CHECK(has_msg(&diag, "mapiproxy.conf:10: unknown option \"mapiproxy:binding\"",
                  "did you mean \"dcerpc_mapiproxy:binding\""));
    CHECK(has_msg(&diag, "mapiproxy.conf:11:", "no option name"));
    CHECK(has_msg(&diag, "mapiproxy.conf:12:", "\"nope\""));
    CHECK(has_msg(&diag, "mapiproxy.conf:13: mapiproxy:max call size \"lots\"", NULL));
    CHECK_EQ(diag.n, 11); /* nothing about the missing binding: its line was reported */
    /* every message is "FILE:LINE: what; what to do" */
    for (size_t i = 0; i < diag.n; i++)
        CHECK(!strncmp(diag.msgs[i], "mapiproxy.conf:", 15) && strchr(diag.msgs[i], ';'));

    /* suggestions across spelling */
    CHECK_EQ(loadb("mapiproxy:log_level = 3\n"), -1);
    CHECK(has_msg(&diag, "did you mean \"mapiproxy:log level\"", NULL));
    CHECK_EQ(loadb("dcerpc_mapiproxy:epmapper port = 3\n"), -1);
    CHECK(has_msg(&diag, "did you mean \"mapiproxy:epmapper port\"", NULL));
    CHECK_EQ(loadb("dcerpc_mapiproxy:delegated-auth = yes\n"), -1);
    CHECK(has_msg(&diag, "did you mean \"dcerpc_mapiproxy:delegated_auth\"", NULL));

    /* our keys belong in [global] */
    CHECK_EQ(loadb("[share]\nmapiproxy:rpc port = 1\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:3: mapiproxy:rpc port is in section [share]",
                  "move it to [global]"));
    CHECK_EQ(loadb("[]\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: section header has no name", NULL));
    CHECK_EQ(loadb("[global] trailing\n"), -1);
    CHECK_EQ(loadb("[global] # comment ok\n"), 0);
}

static void test_password_never_printed(void)
{
    const char *pw = "Sup3rS3cretPW";
    char *t = NULL;
    CHECK(asprintf(&t,
                   "dcerpc_mapiproxy:password %s\n"                   /* no '=' */
                   "dcerpc_mapiproxy:pasword = %s\n"                  /* misspelt key */
                   "dcerpc_mapiproxy:password = %s\n"                 /* fine */
                   "[other]\ndcerpc_mapiproxy:password = %s\n"        /* wrong section */
                   "[global]\ndcerpc_mapiproxy:password = %s%0300d\n" /* too long */
                   "dcerpc_mapiproxy:password: %s\n",                 /* ':' for '=' */
                   pw, pw, pw, pw, pw, 0, pw) > 0);
    CHECK_EQ(load(t), -1);
    free(t);
    CHECK(diag.n >= 5);
    for (size_t i = 0; i < diag.n; i++)
        CHECK(strstr(diag.msgs[i], pw) == NULL);
    CHECK(has_msg(&diag, "did you mean \"dcerpc_mapiproxy:password\"", NULL));
}

static void test_syntax(void)
{
    /* comments, blank lines, CRLF, BOM, values containing '#' and ';' */
    CHECK_EQ(load("\xef\xbb\xbf# comment\r\n"
                  "; another comment\r\n"
                  "   # indented comment\r\n"
                  "\r\n"
                  "[Global]\r\n"
                  "dcerpc_mapiproxy:binding = ncacn_ip_tcp:10.0.0.9\r\n"
                  "dcerpc_mapiproxy:password = a#b;c\r\n"
                  "mapiproxy:log file = /tmp/x # not a comment\r\n"),
             0);
    dump();
    CHECK(!strcmp(cfg.password, "a#b;c"));
    CHECK(!strcmp(cfg.log_file, "/tmp/x # not a comment"));
    CHECK(!strcmp(cfg.binding.host, "10.0.0.9"));

    /* case and white-space folding of keys; values trimmed */
    CHECK_EQ(load("DCERPC_MAPIPROXY:Binding=ncacn_ip_tcp:h\n"
                  "  MapiProxy:Epmapper \t  Port   =   2135   \n"
                  "mapiproxy : upstream   epmapper port = 1350\n"
                  "MPM_Dummy:Test  Key = Value With  Spaces  \n"),
             0);
    dump();
    CHECK_EQ(cfg.epm_port, 2135);
    CHECK_EQ(cfg.upstream_epm_port, 1350);
    CHECK(!strcmp(mp_config_get(&cfg, "mpm_dummy:test key"), "Value With  Spaces"));
    CHECK(!strcmp(mp_config_get(&cfg, "  MPM_DUMMY:Test   Key "), "Value With  Spaces"));
    CHECK(!strcmp(cfg.entries[1].key, "mapiproxy:epmapper port"));
    CHECK(!strcmp(cfg.entries[1].value, "2135"));

    /* continuation lines: joined; messages carry the first line */
    CHECK_EQ(load("dcerpc_mapiproxy:binding = \\\n"
                  "    ncacn_ip_tcp:10.0.0.7\n"
                  "dcerpc_mapiproxy:interfaces = exchange_emsmdb, \\\n"
                  "    exchange_nsp, \\   \n"
                  "    exchange_ds_rfr\n"
                  "mapiproxy:rpc\\\n"
                  " port = 7000\n"
                  "mpm_dummy:list = a \\\n"
                  "# not a comment here\n"),
             0);
    dump();
    CHECK(!strcmp(cfg.binding.host, "10.0.0.7"));
    CHECK_EQ(cfg.n_ifaces, 3);
    CHECK(!strcmp(cfg.ifaces[2].name, "exchange_ds_rfr"));
    CHECK_EQ(cfg.rpc_port, 7000);
    CHECK(!strcmp(mp_config_get(&cfg, "mpm_dummy:list"), "a # not a comment here"));
    CHECK_EQ(load("dcerpc_mapiproxy:binding = ncacn_ip_tcp:h\n"
                  "mapiproxy:idle timeout = \\\n"
                  "  \\\n"
                  "  soon\n"
                  "mapiproxy:rpc port = x\n"),
             -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: mapiproxy:idle timeout", NULL));
    CHECK(has_msg(&diag, "mapiproxy.conf:5: mapiproxy:rpc port", NULL));
    /* a trailing backslash on the last line */
    CHECK_EQ(load("dcerpc_mapiproxy:binding = ncacn_ip_tcp:h\\"), 0);
    CHECK(!strcmp(cfg.binding.host, "h"));

    /* last assignment wins */
    CHECK_EQ(loadb("mapiproxy:rpc port = 1\nmapiproxy:rpc port = 2\n"), 0);
    CHECK_EQ(cfg.rpc_port, 2);
    CHECK_EQ(loadb("dcerpc_mapiproxy:interfaces = samr\ndcerpc_mapiproxy:interfaces = lsarpc\n"),
             0);
    CHECK_EQ(cfg.n_ifaces, 1);
    CHECK(!strcmp(cfg.ifaces[0].name, "lsarpc"));

    /* [globals] is [global]; keys before any header are global */
    CHECK_EQ(load("[globals]\ndcerpc_mapiproxy:binding = ncacn_ip_tcp:h\n"), 0);
    CHECK(!strcmp(cfg.entries[0].section, "global"));
}

static void test_samba_globals_and_modules(void)
{
    CHECK_EQ(loadb("server role = domain controller\n"
                   "workgroup = OPENCHANGE\n"
                   "log level = 10\n"
                   "dcerpc endpoint servers = epmapper, mapiproxy\n"
                   "dcesrv:assoc group checking = false\n"
                   "mpm_dummy:test = yes\n"
                   "mpm_dummy:count = 42\n"
                   "mpm_dummy:hex = 0x10\n"
                   "mpm_dummy:bad = 12abc\n"
                   "[share]\n"
                   "path = /srv\n"
                   "mpm_cache:path = /in/share\n"
                   "mpm_dummy:test = no\n"),
             0);
    dump();
    CHECK_EQ(diag.n, 0);
    CHECK(!strcmp(mp_config_get(&cfg, "workgroup"), "OPENCHANGE"));
    CHECK(!strcmp(mp_config_get(&cfg, "server role"), "domain controller"));
    CHECK(!strcmp(mp_config_get(&cfg, "dcesrv:assoc group checking"), "false"));
    CHECK(mp_config_get_bool(&cfg, "mpm_dummy:test", false));           /* [global] first */
    CHECK(!strcmp(mp_config_get(&cfg, "mpm_cache:path"), "/in/share")); /* then any */
    CHECK(!strcmp(mp_config_get(&cfg, "path"), "/srv"));
    CHECK(mp_config_get(&cfg, "mpm_dummy:absent") == NULL);
    CHECK(mp_config_get_bool(&cfg, "mpm_dummy:absent", true));
    CHECK(!mp_config_get_bool(&cfg, "mpm_dummy:absent", false));
    CHECK(mp_config_get_bool(&cfg, "mpm_dummy:count", true)); /* not a bool: default */
    CHECK_EQ(mp_config_get_int(&cfg, "mpm_dummy:count", 0), 42);
    CHECK_EQ(mp_config_get_int(&cfg, "MPM_DUMMY:Count", 0), 42);
    CHECK_EQ(mp_config_get_int(&cfg, "mpm_dummy:hex", 0), 16);
    CHECK_EQ(mp_config_get_int(&cfg, "mpm_dummy:bad", -7), -7);
    CHECK_EQ(mp_config_get_int(&cfg, "mpm_dummy:absent", 5), 5);
    CHECK(mp_config_get(NULL, "x") == NULL);
    /* the section of module options is recorded */
    bool seen = false;
    for (size_t i = 0; i < cfg.n_entries; i++)
        if (!strcmp(cfg.entries[i].key, "mpm_cache:path"))
            seen = !strcmp(cfg.entries[i].section, "share") && cfg.entries[i].line == 13;
    CHECK(seen);
}

static void test_openchange_file(void)
{
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/openchange-smb.conf", &diag), 0);
    dump();
    CHECK(!strcmp(cfg.binding.host, "192.168.1.1"));
    CHECK_EQ(cfg.binding.flags, MP_BINDING_F_PRINT);
    CHECK(!strcmp(cfg.username, "testuser"));
    CHECK(!strcmp(cfg.password, "openchange"));
    CHECK(!strcmp(cfg.domain, "EXCHANGE"));
    CHECK_EQ(cfg.n_ifaces, 3);
    CHECK_EQ(cfg.n_modules, 2);
    CHECK_EQ(cfg.server, false);
    CHECK_EQ(cfg.ndrdump, true);
    CHECK(!strcmp(cfg.netbios_name, "MAPIPROXY"));
    CHECK(!strcmp(cfg.realm, "OPENCHANGE.LOCAL"));
    CHECK_EQ(cfg.log_level, 2); /* Samba's "log level" is not ours */
    /* OpenChange-only options are accepted with a warning */
    CHECK(has_msg(&cfg.warnings, "openchange-smb.conf:19: dcerpc_mapiproxy:use_machine_account",
                  "ignored"));
    CHECK(has_msg(&cfg.warnings, "mapiproxy:openchangedb", NULL));
}

static void test_includes(void)
{
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/main.conf", &diag), 0);
    dump();
    CHECK(!strcmp(cfg.binding.host, "exchange.example.com"));
    CHECK_EQ(cfg.binding.port, 6001);
    CHECK_EQ(cfg.rpc_port, 6200);
    CHECK_EQ(cfg.idle_timeout_s, 30);
    CHECK_EQ(cfg.log_level, 3);
    CHECK(!strcmp(mp_config_get(&cfg, "mpm_dummy:test"), "from include"));

    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/bad-include.conf", &diag), -1);
    CHECK(has_msg(&diag, "data/config/sub/bad.conf:2: mapiproxy:epmapper port \"70000\"", NULL));

    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/missing-include.conf", &diag), -1);
    CHECK(has_msg(&diag, "data/config/missing-include.conf:2: cannot read include file",
                  "does-not-exist.conf"));

    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/loop.conf", &diag), -1);
    CHECK_EQ(diag.n, 1);
    CHECK(has_msg(&diag, "loop.conf:2: include", "include loop"));

    /* text loads resolve includes relative to the name given */
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load_text(&cfg, "data/config/virtual.conf",
                                 "include = sub/deeper.conf\n"
                                 "dcerpc_mapiproxy:binding = ncacn_ip_tcp:h\n",
                                 &diag),
             0);
    CHECK_EQ(cfg.idle_timeout_s, 30);
    CHECK_EQ(loadb("include =\n"), -1);
    CHECK(has_msg(&diag, "include has no file name", NULL));
    CHECK_EQ(loadb("include = /\n"), -1); /* a directory */
    CHECK(has_msg(&diag, "not a regular file", NULL));

    /* the main file itself */
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    CHECK_EQ(mp_config_load(&cfg, "data/config/nonexistent.conf", &diag), -1);
    CHECK(has_msg(&diag, "data/config/nonexistent.conf: cannot read the configuration file",
                  "No such file"));
    CHECK(cfg.entries == NULL);
}

static void test_free_twice(void)
{
    struct mp_config c;
    struct mp_diag d = {0};
    CHECK_EQ(mp_config_load_text(&c, NULL,
                                 "dcerpc_mapiproxy:binding = ncacn_ip_tcp:h\n"
                                 "dcerpc_mapiproxy:oa_mode = yes\n",
                                 &d),
             0);
    CHECK(!strcmp(c.path, "<text>"));
    CHECK_EQ(c.warnings.n, 1);
    mp_config_free(&c);
    mp_config_free(&c);
    mp_diag_free(&d);
    mp_diag_free(&d);
    CHECK_EQ(mp_config_load_text(&c, "x", NULL, NULL), -1); /* NULL diag is allowed */
    mp_config_free(&c);
}

/* Kerberos and termination options: stored, and what --check can say
 * without a KDC. */
static void test_kerberos_options(void)
{
    CHECK_EQ(loadb("mapiproxy:keytab = /dev/null\n"
                   "mapiproxy:service principal = host/proxy.example.com\n"
                   "mapiproxy:upstream spn = exchangeMDB/ex1.example.com\n"
                   "mapiproxy:delegation = s4u\n"
                   "mapiproxy:pass-through interfaces = exchange_nsp, exchange_ds_rfr\n"),
             0);
    dump();
    CHECK(!strcmp(cfg.keytab, "/dev/null"));
    CHECK(!strcmp(cfg.service_principal, "host/proxy.example.com"));
    CHECK(!strcmp(cfg.upstream_spn, "exchangeMDB/ex1.example.com"));
    CHECK(!strcmp(cfg.delegation, "s4u"));
    CHECK(!strcmp(cfg.passthrough_ifaces, "exchange_nsp, exchange_ds_rfr"));
    CHECK_EQ(loadb("mapiproxy:upstream spn = exchangeMDB/ex1\n"
                   "mapiproxy:upstream keytab = FILE:/dev/null\n"
                   "mapiproxy:upstream ccache = MEMORY:x\n"
                   "mapiproxy:upstream principal = host/proxy\n"),
             0);
    CHECK(!strcmp(cfg.upstream_ccache, "MEMORY:x"));
    CHECK(!strcmp(cfg.upstream_principal, "host/proxy"));
    /* errors */
    CHECK_EQ(loadb("mapiproxy:delegation = kcd\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:delegation \"kcd\"", "none or s4u"));
    CHECK_EQ(loadb("mapiproxy:delegation = s4u\n"), -1);
    CHECK(has_msg(&diag, "needs mapiproxy:keytab", NULL));
    CHECK_EQ(loadb("mapiproxy:keytab = /nonexistent/proxy.keytab\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:keytab /nonexistent/proxy.keytab", "No such file"));
    CHECK_EQ(loadb("mapiproxy:upstream spn = exchangeMDB/ex1\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:upstream keytab", "upstream ccache"));
    CHECK_EQ(loadb("mapiproxy:pass-through interfaces = exchange_nsp nosuch\n"), -1);
    CHECK(has_msg(&diag, "unknown interface \"nosuch\"", NULL));
    CHECK_EQ(loadb("mapiproxy:upstream auth level = high\n"), -1);
    CHECK(has_msg(&diag, "upstream auth level \"high\"", NULL));
    CHECK_EQ(loadb("mapiproxy:min client auth level = signed\n"), -1);
    CHECK(has_msg(&diag, "min client auth level \"signed\"", "none, connect, call, packet"));
    CHECK_EQ(mp_auth_level_parse("none"), 1);
    CHECK_EQ(mp_auth_level_parse("Packet"), 4);
    CHECK_EQ(mp_auth_level_parse("PRIVACY"), 6);
    CHECK_EQ(mp_auth_level_parse("integrity "), -1);
    CHECK_EQ(loadb("mapiproxy:keytab = /dev/null\nmapiproxy:service principal = host/p\n"
                   "mapiproxy:upstream spn = x/y\nmapiproxy:delegation = s4u\n"
                   "mapiproxy:credentials file = /dev/null\n"),
             -1);
    CHECK(has_msg(&diag, "needs realm", NULL));
}

static void test_winbind_options(void)
{
    CHECK_EQ(loadb("mapiproxy:ntlm backend = winbind\n"
                   "mapiproxy:winbind socket dir = /run/samba/winbindd\n"
                   "mapiproxy:groups file = /dev/null\n"
                   "mapiproxy:allowed users = @mapi-users, LAB\\bob\n"),
             0);
    const char *got_want[][2] = {{cfg.ntlm_backend, "winbind"},
                                 {cfg.winbind_socket_dir, "/run/samba/winbindd"},
                                 {cfg.groups_file, "/dev/null"},
                                 {cfg.allowed_users, "@mapi-users, LAB\\bob"}};
    for (size_t i = 0; i < sizeof(got_want) / sizeof(got_want[0]); i++)
        CHECK(!strcmp(got_want[i][0], got_want[i][1]));
    CHECK_EQ(loadb("mapiproxy:ntlm backend = file\nmapiproxy:credentials file = /dev/null\n"), 0);
    CHECK_EQ(loadb(""), 0);
    CHECK(!cfg.ntlm_backend[0]); /* default: file */
    /* errors */
    CHECK_EQ(loadb("mapiproxy:ntlm backend = ldap\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:ntlm backend \"ldap\"", "file or winbind"));
    CHECK_EQ(loadb("mapiproxy:ntlm backend = winbind\nmapiproxy:credentials file = /dev/null\n"),
             -1);
    CHECK(has_msg(&diag, "remove mapiproxy:credentials file", NULL));
    CHECK_EQ(loadb("mapiproxy:winbind socket dir = /tmp\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:ntlm backend is not winbind", NULL));
    CHECK_EQ(loadb("mapiproxy:ntlm backend = winbind\nmapiproxy:winbind socket dir = run/wb\n"),
             -1);
    CHECK(has_msg(&diag, "give an absolute path", NULL));
    CHECK_EQ(loadb("mapiproxy:groups file = /nonexistent/groups\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy:groups file /nonexistent/groups", "No such file"));
    CHECK_EQ(loadb("mapiproxy:keytab = /dev/null\nmapiproxy:service principal = host/p\n"
                   "mapiproxy:upstream spn = x/y\nmapiproxy:delegation = s4u\n"
                   "mapiproxy:ntlm backend = winbind\n"),
             -1);
    CHECK(has_msg(&diag, "needs realm", NULL));
}

static int write_groups(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    fclose(f);
    return chmod(path, mode);
}

/* mapiproxy:groups file (src/auth/groups.c) */
static void test_groups_file(void)
{
    char path[] = "/tmp/mapiproxy-test-groups-XXXXXX", why[600];
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    struct mp_groups g;
    CHECK_EQ(write_groups(path,
                          "# group: members\n"
                          "mapi-users: alice, LAB\\bob\n"
                          "  mapi-users :carol@LAB.EXAMPLE\n"
                          "empty:\n\n",
                          0600),
             0);
    CHECK_EQ(mp_groups_load(&g, path, why, sizeof(why)), 0);
    CHECK_EQ(g.n, 3);
    const char *alice[] = {"ALICE", "LAB\\alice"}, *bob[] = {"bob", "LAB\\Bob"},
               *bob_other[] = {"bobby", "OTHER\\bob"}, *carol[] = {"carol", "carol@lab.example"};
    CHECK(mp_groups_has(&g, "Mapi-Users", alice, 2));
    CHECK(mp_groups_has(&g, "mapi-users", bob, 2));
    CHECK(!mp_groups_has(&g, "mapi-users", bob_other, 2));
    CHECK(mp_groups_has(&g, "mapi-users", carol, 2)); /* second line of the group */
    CHECK(!mp_groups_has(&g, "empty", alice, 2));
    CHECK(!mp_groups_has(&g, "nosuch", alice, 2));
    mp_groups_free(&g);
    CHECK(mp_list_has("a, b c,d", "C") && !mp_list_has("a, b", "") && !mp_list_has("ab", "a"));
    /* errors: permissions, no colon, a blank in the name */
    CHECK_EQ(write_groups(path, "g: a\n", 0644), 0);
    CHECK_EQ(mp_groups_load(&g, path, why, sizeof(why)), -1);
    CHECK(strstr(why, "readable by group or others") != NULL);
    CHECK_EQ(write_groups(path, "g: a\njust names\n", 0600), 0);
    CHECK_EQ(mp_groups_load(&g, path, why, sizeof(why)), -1);
    CHECK(strstr(why, ":2: not \"group: member") != NULL);
    CHECK_EQ(write_groups(path, "my group: a\n", 0600), 0);
    CHECK_EQ(mp_groups_load(&g, path, why, sizeof(why)), -1);
    CHECK_EQ(g.n, 0);
    unlink(path);
    CHECK_EQ(mp_groups_load(&g, path, why, sizeof(why)), -1);
    CHECK(strstr(why, "cannot open groups file") != NULL);
}

/* mapiproxy:mailbox authorization / mailbox map, and when the module applies */
static void test_mailbox_options(void)
{
    CHECK_EQ(loadb(""), 0);
    CHECK(cfg.mailbox_auth && cfg.mailbox_directory && !cfg.mailbox_map[0]);
    CHECK(!mp_mailbox_auth_applies(&cfg)); /* transparent: the server checks */
    CHECK_EQ(loadb("dcerpc_mapiproxy:username = svc\nmapiproxy:mailbox map = /dev/null\n"), 0);
    CHECK(!strcmp(cfg.mailbox_map, "/dev/null"));
    CHECK(mp_mailbox_auth_applies(&cfg)); /* specified credentials */
    cfg.delegated_auth = true;            /* clients' own logons relayed */
    CHECK(!mp_mailbox_auth_applies(&cfg));
    cfg.delegated_auth = false;
    snprintf(cfg.delegation, sizeof(cfg.delegation), "s4u"); /* the server sees each client */
    CHECK(!mp_mailbox_auth_applies(&cfg));
    CHECK_EQ(loadb("dcerpc_mapiproxy:username = svc\nmapiproxy:mailbox authorization = no\n"), 0);
    CHECK(!cfg.mailbox_auth && !mp_mailbox_auth_applies(&cfg));
    CHECK_EQ(loadb("mapiproxy:http listen = 127.0.0.1:8443\nmapiproxy:http plain = yes\n"
                   "mapiproxy:http upstream = https://ex1\nmapiproxy:http auth = terminate\n"
                   "mapiproxy:credentials file = /dev/null\n"
                   "dcerpc_mapiproxy:username = svc\ndcerpc_mapiproxy:domain = LAB\n"
                   "dcerpc_mapiproxy:password = x\ndcerpc_mapiproxy:delegated_auth = yes\n"),
             0);
    dump();
    CHECK(mp_mailbox_auth_applies(&cfg)); /* the HTTPS front logs on as the proxy */
    CHECK_EQ(loadb("mapiproxy:mailbox map = /nonexistent/map\n"
                   "mapiproxy:mailbox authorization = maybe\n"),
             -1);
    CHECK(has_msg(&diag, "mapiproxy:mailbox map /nonexistent/map", "No such file"));
    CHECK(has_msg(&diag, "mapiproxy:mailbox authorization", "maybe"));
}

static void test_ops_options(void)
{
    CHECK_EQ(loadb(""), 0);
    CHECK(cfg.log_to == MP_LOG_TO_STDERR && cfg.syslog_facility == LOG_DAEMON);
    CHECK(!strcmp(cfg.syslog_socket, "/dev/log"));
    CHECK_EQ(loadb("mapiproxy:log file = /tmp/x.log\n"), 0);
    CHECK(cfg.log_to == MP_LOG_TO_FILE);
    CHECK_EQ(loadb("mapiproxy:log target = SysLog\nmapiproxy:syslog facility = local5\n"
                   "mapiproxy:syslog socket = /run/s\n"),
             0);
    CHECK(cfg.log_to == MP_LOG_TO_SYSLOG && cfg.syslog_facility == LOG_LOCAL5);
    CHECK_EQ(loadb("mapiproxy:log file = /tmp/x.log\nmapiproxy:log target = stderr\n"), 0);
    CHECK(cfg.log_to == MP_LOG_TO_STDERR && has_msg(&cfg.warnings, "is not used", NULL));
    CHECK_EQ(loadb("mapiproxy:log target = journal\nmapiproxy:syslog facility = kern\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: ", "use file, syslog or stderr"));
    CHECK(has_msg(&diag, "mapiproxy.conf:3: ", "use daemon, user"));
    CHECK_EQ(loadb("mapiproxy:log target = file\n"), -1);
    CHECK(has_msg(&diag, "needs mapiproxy:log file", NULL));
    CHECK_EQ(loadb("mapiproxy:packet export dir = /tmp\n"), -1);
    CHECK(has_msg(&diag, "mapiproxy.conf:2: ", "packet export clients is not"));
    CHECK_EQ(loadb("mapiproxy:packet export dir = /tmp\nmapiproxy:packet export clients = *\n"
                   "mapiproxy:user = nobody\nmapiproxy:group = nogroup\n"),
             0);
    CHECK(!strcmp(cfg.run_user, "nobody") && !strcmp(cfg.run_group, "nogroup"));
    /* users alone choose too (DCE/RPC, by the user who logged on) */
    CHECK_EQ(loadb("mapiproxy:packet export dir = /tmp\n"
                   "mapiproxy:packet export users = LAB\\alice, bob\n"),
             0);
    CHECK(!strcmp(cfg.packet_export_users, "LAB\\alice, bob"));
}

int main(void)
{
    test_uuid();
    test_iface_parse();
    test_binding();
    test_defaults();
    test_builtin_default();
    test_every_option();
    test_values();
    test_errors_collected();
    test_password_never_printed();
    test_syntax();
    test_samba_globals_and_modules();
    test_openchange_file();
    test_includes();
    test_free_twice();
    test_kerberos_options();
    test_winbind_options();
    test_groups_file();
    test_mailbox_options();
    test_ops_options();
    mp_config_free(&cfg);
    mp_diag_free(&diag);
    TEST_DONE();
}
