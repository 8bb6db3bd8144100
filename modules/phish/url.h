/* phish: URL extraction, normalisation, feeds and lookalike checks.
 * Plain C on byte buffers, no module API: unit-tested in
 * tests/unit/test_phish.c and fuzzed by tests/fuzz/fuzz_phish_url.c. */
#ifndef MP_PHISH_URL_H
#define MP_PHISH_URL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PHISH_URL_MAX 2048 /* longer candidates are cut there */
#define PHISH_HOST_MAX 256

enum phish_text { PHISH_TEXT = 0, PHISH_HTML = 1, PHISH_RTF = 2 };

/* One URL found in a text: [off, off+len) of the input (as written; in
 * HTML the attribute value before entity decoding). */
struct phish_span {
    size_t off, len;
};
/* Calls cb for each URL candidate (http://, https://, ftp://, hxxp:// is
 * not one, "www." without a scheme; in HTML also href/src attribute values
 * with a scheme).  Returns the number found.  cb returns false to stop. */
size_t phish_extract(const char *text, size_t n, enum phish_text kind,
                     bool (*cb)(void *arg, const char *url, size_t len, size_t off), void *arg);

/* A URL in its canonical form: scheme and host lower case, userinfo and
 * default port dropped, host percent-decoded, IDN as punycode (A-label),
 * trailing dot dropped, numeric IPv4 forms (decimal, hex, octal, fewer
 * parts) as a dotted quad; the path and query percent-decoded where that
 * gives a printable ASCII byte; "www." gets "http://".  HTML entities
 * (&amp; &#46; &#x2e;) are decoded first.  Known redirectors (Google's
 * /url?q=, Outlook safelinks ?url=, Facebook's l.php?u=, and any URL whose
 * query carries url=, u=, q=, target=, redirect= holding an http(s) URL on
 * a host listed with phish_redirector) are unwrapped, at most 4 deep.
 * 0, or -1 when there is no usable host. */
struct phish_url {
    char url[PHISH_URL_MAX];   /* normalised */
    char host[PHISH_HOST_MAX]; /* A-label, lower case */
    char uhost[PHISH_HOST_MAX]; /* the host in Unicode (U-label) when IDN, else = host */
    bool ip;                   /* the host is an IPv4 address */
    unsigned unwrapped;        /* redirectors removed */
};
int phish_normalise(const char *in, size_t n, struct phish_url *out);

/* ---- feeds: hosts and URLs ---- */
struct phish_feed;
struct phish_feed *phish_feed_new(void);
void phish_feed_free(struct phish_feed *f);
/* Adds the lines of a feed file's text: "host", "URL", "0.0.0.0 host
 * [host...]" (hosts file), URLhaus-style CSV ("id","date","URL",...),
 * comments after '#' (outside URLs) or ';'.  Returns the entries added. */
size_t phish_feed_add_text(struct phish_feed *f, const char *text, size_t n);
size_t phish_feed_count(const struct phish_feed *f);
/* The URL (normalised) is listed, or its host or any parent domain of it
 * (a listed evil.example matches www.evil.example).  why gets "host
 * NAME" or "url". */
bool phish_feed_match(const struct phish_feed *f, const struct phish_url *u, char *why,
                      size_t why_len);
/* A feed file, reloaded when its size, mtime or inode changes. */
struct phish_feed_file {
    char *path;
    struct phish_feed *feed;
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    bool loaded;
};
/* 1 reloaded, 0 unchanged, -1 cannot read (the old feed stays). */
int phish_feed_file_refresh(struct phish_feed_file *ff);

/* ---- lookalikes ---- */
/* The skeleton of a host for confusable comparison: Unicode homoglyphs
 * (Cyrillic/Greek letters that look Latin, fullwidth forms) and ASCII
 * tricks (0->o, 1/I->l, rn->m, vv->w) folded, lower case.  utf8 in. */
void phish_skeleton(const char *host, char *out, size_t cap);
/* Damerau-Levenshtein distance of two short strings (capped at 64 bytes
 * each; longer: a large number). */
unsigned phish_edit_distance(const char *a, const char *b);
/* u's host imitates protected domain p (not p itself nor a subdomain of
 * p): same skeleton, or edit distance 1..max_dist on the registered part
 * (the last two labels), or p appearing as labels inside the host
 * ("p.evil.example").  why gets the kind. */
bool phish_lookalike(const struct phish_url *u, const char *p, unsigned max_dist, char *why,
                     size_t why_len);

/* Rewrites text with every span defanged: "http" -> "hxxp", and each '.'
 * of the host part -> "[.]".  Spans sorted by offset, not overlapping.
 * malloc'd, NUL-terminated, *out_len its length; NULL when out of memory. */
char *phish_defang(const char *text, size_t n, const struct phish_span *spans, size_t nspans,
                   size_t *out_len);
#endif
