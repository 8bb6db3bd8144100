/* Decrypted packet export (mapiproxy:packet export dir, doc/operations.md):
 * both legs of chosen client connections written as pcapng, the payload as
 * the proxy sees it after TLS or DCE/RPC sealing is removed, in
 * synthesised IPv4/IPv6 + TCP headers with consistent sequence numbers, so
 * that Wireshark and tshark dissect it as plain HTTP or DCE/RPC. */
#ifndef MP_PCAPNG_H
#define MP_PCAPNG_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mp_config;
struct mp_pcap; /* one file: one client connection, both legs */

/* The export settings, once at start (main.c): dir "" = off.  Logs the
 * warning that it is on. */
void mp_pcap_configure(const struct mp_config *cfg);
/* A capture for a connection from client_host (numeric) if the export is
 * on and the client is one of those chosen; NULL otherwise.  `what` names
 * the transport in the file name ("http", "rpc"). */
struct mp_pcap *mp_pcap_start(const char *client_host, uint16_t client_port, const char *what);
/* Tap: `len` bytes on a leg (client: the client's connection, else the
 * upstream's) that came in from the peer (in) or went out to it; fd is that
 * leg's socket (its addresses name the synthesised endpoints).  NULL cap: no-op. */
void mp_pcap_tap(struct mp_pcap *cap, int fd, bool client, bool in, const void *data, size_t len);
/* With mapiproxy:packet export users set, a capture from mp_pcap_start
 * is pending: kept in memory, no file, until the connection's user is
 * known.  user: who authenticated ("DOMAIN\\user", "user@REALM"; NULL:
 * nobody).  Returns cap, now writing to its file, when the user is chosen
 * (or cap was not pending); else frees cap and returns NULL. */
struct mp_pcap *mp_pcap_user(struct mp_pcap *cap, const char *user);
bool mp_pcap_users_chosen(void);
/* FINs on one leg (client: the client's, else the upstream's) if it had
 * started; the next tap on it starts it again, from that socket's
 * addresses: a new TCP stream in the file.  NULL: no-op. */
void mp_pcap_leg_end(struct mp_pcap *cap, bool client);
/* FINs on both legs, the file closed; NULL: no-op. */
void mp_pcap_end(struct mp_pcap *cap);
#endif
