/* MapiSequence across side requests (MS-OXCMAPIHTTP 2.2.3.1.2: each
 * response sets the sequence cookie the next request must carry).  When
 * the proxy sends its own Execute requests on a client's session (online
 * prefetch, src/chain/msgonline.c), each of them carries the sequence of
 * the upstream's last answer, and the client, who saw only the first
 * answer's Set-Cookie, has its next request's MapiSequence replaced by the
 * upstream's current one.  doc/internals/mapihttp.md. */
#ifndef MP_MAPIHTTP_MHSEQ_H
#define MP_MAPIHTTP_MHSEQ_H
#include <stdbool.h>
#include <stddef.h>

struct mp_http_msg;
struct mp_mh_seqmap;

#define MP_MH_SEQ_MAX 128

/* The MapiSequence value of a request's Cookie headers (response false)
 * or a response's Set-Cookie headers, NUL-terminated into out; 0 or -1. */
int mp_mh_seq_get(const struct mp_http_msg *m, bool response, char *out, size_t cap);
/* The request's MapiSequence cookie set to val (its other cookies kept);
 * 0 or -1. */
int mp_mh_seq_set(struct mp_http_msg *req, const char *val);
/* The client of session (its MapiContext in req) was given `client`, the
 * upstream expects `up`: remembered until the client sends another
 * sequence (or a new pair replaces it). */
void mp_mh_seq_remember(struct mp_mh_seqmap **t, const struct mp_http_msg *req, const char *client,
                        const char *up);
/* A request carrying a sequence remembered for its session gets the
 * upstream's (the entry kept: a request the proxy answers itself sets no
 * new cookie); another sequence drops the entry.  true when replaced. */
bool mp_mh_seq_fix(struct mp_mh_seqmap **t, struct mp_http_msg *req);
void mp_mh_seq_free(struct mp_mh_seqmap **t);
#endif
