/* phish: URL extraction, normalisation, feeds, lookalikes.  See url.h. */
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- extraction ---- */
static bool url_byte(unsigned char c, enum phish_text kind)
{
    if (c <= 0x20 || c == 0x7f)
        return false;
    if (strchr("<>\"'`{}|^", c))
        return false;
    if (c == '\\')
        return false; /* RTF control words; browsers turn it into '/', we end there */
    return true;
}

static bool ci_prefix(const char *p, size_t n, const char *pre)
{
    size_t k = strlen(pre);
    return n >= k && !strncasecmp(p, pre, k);
}

static bool host_start(unsigned char c)
{
    return isalnum(c) || c >= 0x80 || c == '[' || c == '%' || c == '&';
}

size_t phish_extract(const char *text, size_t n, enum phish_text kind,
                     bool (*cb)(void *arg, const char *url, size_t len, size_t off), void *arg)
{
    static const char *const schemes[] = {"http://", "https://", "ftp://", "www."};
    size_t found = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)text[i];
        if (c != 'h' && c != 'H' && c != 'f' && c != 'F' && c != 'w' && c != 'W') {
            i++;
            continue;
        }
        size_t k = 0;
        bool hit = false;
        for (size_t s = 0; s < 4 && !hit; s++) {
            if (!ci_prefix(text + i, n - i, schemes[s]))
                continue;
            if (s == 3 && i > 0) { /* "www." only at a word start */
                unsigned char b = (unsigned char)text[i - 1];
                if (isalnum(b) || b == '.' || b == '-' || b == '/' || b == '@' || b >= 0x80)
                    continue;
            }
            if (s < 3 && i > 0 && isalpha((unsigned char)text[i - 1]))
                continue; /* "xhttp://" is not a scheme start */
            k = strlen(schemes[s]);
            hit = i + k < n && host_start((unsigned char)text[i + k]);
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t end = i + k;
        while (end < n && end - i < PHISH_URL_MAX - 1 && url_byte((unsigned char)text[end], kind))
            end++;
        if (kind == PHISH_HTML) /* a URL running into an entity-encoded '<', '"', ... */
            for (size_t q = i + k; q < end; q++)
                if (text[q] == '&' &&
                    (ci_prefix(text + q, end - q, "&lt;") || ci_prefix(text + q, end - q, "&gt;") ||
                     ci_prefix(text + q, end - q, "&quot;") ||
                     ci_prefix(text + q, end - q, "&#39;") ||
                     ci_prefix(text + q, end - q, "&nbsp;"))) {
                    end = q;
                    break;
                }
        /* trailing punctuation is the sentence's, not the URL's */
        while (end > i + k && strchr(".,;:!?)]*", text[end - 1]))
            end--;
        if (end > i + k) {
            found++;
            if (!cb(arg, text + i, end - i, i))
                return found;
        }
        i = end > i ? end : i + 1;
    }
    return found;
}

/* ---- normalisation ---- */
static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* HTML character references, the few a URL carries.  out has room for n+1. */
static size_t entity_decode(const char *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (in[i] == '&') {
            static const struct {
                const char *name;
                char c;
            } named[] = {{"&amp;", '&'},   {"&lt;", '<'},  {"&gt;", '>'},    {"&quot;", '"'},
                         {"&apos;", '\''}, {"&sol;", '/'}, {"&colon;", ':'}, {"&period;", '.'}};
            bool done = false;
            for (size_t k = 0; k < sizeof named / sizeof named[0] && !done; k++) {
                size_t l = strlen(named[k].name);
                if (n - i >= l && !strncasecmp(in + i, named[k].name, l)) {
                    out[o++] = named[k].c;
                    i += l;
                    done = true;
                }
            }
            if (done)
                continue;
            if (i + 2 < n && in[i + 1] == '#') {
                size_t j = i + 2;
                unsigned long v = 0;
                bool hex = j < n && (in[j] == 'x' || in[j] == 'X');
                if (hex)
                    j++;
                size_t digits = 0;
                while (j < n && digits < 8 &&
                       (hex ? hexval((unsigned char)in[j]) >= 0 : isdigit((unsigned char)in[j]))) {
                    v = v * (hex ? 16 : 10) +
                        (unsigned long)(hex ? hexval((unsigned char)in[j]) : in[j] - '0');
                    j++;
                    digits++;
                }
                if (digits && v > 0x20 && v < 0x7f) {
                    if (j < n && in[j] == ';')
                        j++;
                    out[o++] = (char)v;
                    i = j;
                    continue;
                }
            }
        }
        out[o++] = in[i++];
    }
    out[o] = 0;
    return o;
}

static bool parse_ipv4(const char *h, uint8_t ip[4])
{
    unsigned long parts[4];
    int np = 0;
    const char *p = h;
    if (!*p)
        return false;
    while (*p) {
        if (np == 4 || !isdigit((unsigned char)*p))
            return false;
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 0); /* 0x.. hex, 0.. octal, as inet_aton */
        if (end == p || errno)
            return false;
        parts[np++] = v;
        p = end;
        if (*p == '.') {
            p++;
            if (!*p) /* "1.2.3.4." */
                break;
        } else if (*p) {
            return false;
        }
    }
    unsigned long v = 0;
    for (int i = 0; i < np - 1; i++) {
        if (parts[i] > 255)
            return false;
        v = v << 8 | parts[i];
    }
    int rest = 4 - (np - 1);
    if (rest < 4 && parts[np - 1] >> (8 * rest))
        return false;
    if (rest == 4 && parts[np - 1] > 0xffffffffUL)
        return false;
    v = v << (8 * rest) | parts[np - 1];
    for (int i = 0; i < 4; i++)
        ip[i] = (uint8_t)(v >> (24 - 8 * i));
    return true;
}

/* host (any case, percent-decoded, maybe UTF-8) -> u->host and u->uhost */
static int set_host(char *host, struct phish_url *u)
{
    size_t hl = strlen(host);
    while (hl && host[hl - 1] == '.')
        host[--hl] = 0;
    if (!hl)
        return -1;
    bool ascii = true;
    for (size_t i = 0; i < hl; i++) {
        if ((unsigned char)host[i] >= 0x80)
            ascii = false;
        else
            host[i] = (char)tolower((unsigned char)host[i]);
    }
    uint8_t ip[4];
    if (ascii && strspn(host, "0123456789.") == hl && !parse_ipv4(host, ip))
        return -1; /* looks like an IPv4 address but is none */
    if (ascii && parse_ipv4(host, ip)) {
        snprintf(u->host, sizeof u->host, "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        snprintf(u->uhost, sizeof u->uhost, "%s", u->host);
        u->ip = true;
        return 0;
    }
    if (!ascii) {
        char *a = NULL;
        if (idn2_to_ascii_8z(host, &a, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL) != IDN2_OK ||
            strlen(a) >= sizeof u->host) {
            /* not a valid IDN: the lax transitional form, else refuse */
            idn2_free(a);
            a = NULL;
            if (idn2_to_ascii_8z(host, &a, IDN2_TRANSITIONAL) != IDN2_OK ||
                strlen(a) >= sizeof u->host) {
                idn2_free(a);
                return -1;
            }
        }
        snprintf(u->host, sizeof u->host, "%s", a);
        idn2_free(a);
        snprintf(u->uhost, sizeof u->uhost, "%s", host);
    } else {
        if (hl >= sizeof u->host)
            return -1;
        memcpy(u->host, host, hl + 1);
        snprintf(u->uhost, sizeof u->uhost, "%s", host);
        if (strstr(host, "xn--")) {
            char *uni = NULL;
            if (idn2_to_unicode_8z8z(host, &uni, 0) == IDN2_OK && strlen(uni) < sizeof u->uhost)
                snprintf(u->uhost, sizeof u->uhost, "%s", uni);
            idn2_free(uni);
        }
    }
    for (const char *p = u->host; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
            return -1;
    return 0;
}

/* ---- redirectors ---- */
struct redirector {
    const char *host; /* exact, or ".suffix" */
    const char *path; /* path prefix, NULL any */
};
static const struct redirector redirectors[] = {
    {"google.com", "/url"},
    {"www.google.com", "/url"},
    {".safelinks.protection.outlook.com", NULL},
    {"l.facebook.com", "/l.php"},
    {"lm.facebook.com", "/l.php"},
    {"l.instagram.com", NULL},
    {"www.youtube.com", "/redirect"},
    {"slack-redir.net", "/link"},
    {"out.reddit.com", NULL},
    {"away.vk.com", "/away.php"},
    {"t.umblr.com", "/redirect"},
    {"www.bing.com", "/ck/a"},
};
static const char *const redirect_params[] = {"url",  "q",           "u",    "target", "redirect",
                                              "dest", "destination", "link", "to",     NULL};

static bool is_redirector(const char *host, const char *path)
{
    for (size_t i = 0; i < sizeof redirectors / sizeof redirectors[0]; i++) {
        const struct redirector *r = &redirectors[i];
        bool hm;
        if (r->host[0] == '.') {
            size_t hl = strlen(host), sl = strlen(r->host);
            hm = hl > sl && !strcmp(host + hl - sl, r->host);
        } else {
            hm = !strcmp(host, r->host);
        }
        if (hm && (!r->path || !strncmp(path, r->path, strlen(r->path))))
            return true;
    }
    return false;
}

/* Full percent-decoding of a query value (and '+' as space). */
static size_t pct_decode_all(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        if (in[i] == '%' && i + 2 < n && hexval((unsigned char)in[i + 1]) >= 0 &&
            hexval((unsigned char)in[i + 2]) >= 0) {
            out[o++] =
                (char)(hexval((unsigned char)in[i + 1]) * 16 + hexval((unsigned char)in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i] == '+' ? ' ' : in[i];
        }
    }
    out[o] = 0;
    return o;
}

static int normalise_depth(const char *in, size_t n, struct phish_url *u, unsigned depth);

static bool unwrap(const char *query, size_t qlen, struct phish_url *u, unsigned depth)
{
    size_t i = 0;
    while (i < qlen) {
        size_t e = i;
        while (e < qlen && query[e] != '&' && query[e] != ';')
            e++;
        const char *eq = memchr(query + i, '=', e - i);
        if (eq) {
            size_t kl = (size_t)(eq - (query + i));
            for (size_t p = 0; redirect_params[p]; p++) {
                if (strlen(redirect_params[p]) != kl ||
                    strncasecmp(query + i, redirect_params[p], kl))
                    continue;
                char val[PHISH_URL_MAX];
                size_t vl = pct_decode_all(eq + 1, (size_t)(query + e - (eq + 1)), val, sizeof val);
                if (ci_prefix(val, vl, "http://") || ci_prefix(val, vl, "https://")) {
                    struct phish_url inner;
                    if (normalise_depth(val, vl, &inner, depth + 1) == 0) {
                        inner.unwrapped++;
                        *u = inner;
                        return true;
                    }
                }
            }
        }
        i = e + 1;
    }
    return false;
}

static int normalise_depth(const char *in, size_t n, struct phish_url *u, unsigned depth)
{
    memset(u, 0, sizeof *u);
    if (n >= PHISH_URL_MAX)
        n = PHISH_URL_MAX - 1;
    char buf[PHISH_URL_MAX];
    size_t bl = entity_decode(in, n, buf);
    /* browsers drop tabs and newlines anywhere, and surrounding blanks */
    size_t o = 0;
    for (size_t i = 0; i < bl; i++)
        if (buf[i] != '\t' && buf[i] != '\n' && buf[i] != '\r')
            buf[o++] = buf[i];
    buf[o] = 0;
    char *s = buf;
    while (*s == ' ')
        s++;
    size_t sl = strlen(s);
    while (sl && s[sl - 1] == ' ')
        s[--sl] = 0;

    char scheme[16];
    const char *rest;
    if (ci_prefix(s, sl, "www.")) {
        strcpy(scheme, "http");
        rest = s;
    } else {
        const char *sep = strstr(s, "://");
        if (!sep || sep == s || (size_t)(sep - s) >= sizeof scheme)
            return -1;
        for (const char *p = s; p < sep; p++)
            if (!isalpha((unsigned char)*p))
                return -1;
        size_t k = (size_t)(sep - s);
        for (size_t i = 0; i < k; i++)
            scheme[i] = (char)tolower((unsigned char)s[i]);
        scheme[k] = 0;
        rest = sep + 3;
    }
    /* authority: up to / ? # (a backslash counts as / for browsers) */
    size_t al = strcspn(rest, "/?#\\");
    char auth[PHISH_URL_MAX];
    memcpy(auth, rest, al);
    auth[al] = 0;
    const char *tail = rest + al;
    char *hostp = strrchr(auth, '@');
    hostp = hostp ? hostp + 1 : auth;
    char *port = NULL;
    if (hostp[0] != '[') {
        port = strrchr(hostp, ':');
        if (port)
            *port++ = 0;
    }
    if (port) {
        for (const char *p = port; *p; p++)
            if (!isdigit((unsigned char)*p))
                return -1;
        if (!*port || (!strcmp(scheme, "http") && !strcmp(port, "80")) ||
            (!strcmp(scheme, "https") && !strcmp(port, "443")) ||
            (!strcmp(scheme, "ftp") && !strcmp(port, "21")))
            port = NULL;
    }
    if (hostp[0] == '[')
        return -1; /* IPv6 literals: not matched (no feed lists them by host) */
    char host[PHISH_URL_MAX];
    pct_decode_all(hostp, strlen(hostp), host, sizeof host);
    if (set_host(host, u))
        return -1;

    /* path, query: decode the printable bytes that are not delimiters */
    char path[PHISH_URL_MAX];
    size_t pl = 0;
    const char *query = NULL;
    size_t qlen = 0;
    for (size_t i = 0; tail[i] && tail[i] != '#' && pl + 1 < sizeof path; i++) {
        char c = tail[i] == '\\' && !query ? '/' : tail[i];
        if (c == '?' && !query) {
            query = tail + i + 1;
            qlen = strcspn(query, "#");
        }
        if (c == '%' && hexval((unsigned char)tail[i + 1]) >= 0 &&
            hexval((unsigned char)tail[i + 2]) >= 0) {
            int v = hexval((unsigned char)tail[i + 1]) * 16 + hexval((unsigned char)tail[i + 2]);
            if (v > 0x20 && v < 0x7f && !strchr("%/?#&=+;", v)) {
                path[pl++] = (char)v;
                i += 2;
                continue;
            }
            path[pl++] = '%';
            if (pl + 2 < sizeof path) {
                path[pl++] = (char)toupper((unsigned char)tail[i + 1]);
                path[pl++] = (char)toupper((unsigned char)tail[i + 2]);
            }
            i += 2;
            continue;
        }
        path[pl++] = c;
    }
    path[pl] = 0;
    int w = snprintf(u->url, sizeof u->url, "%s://%s%s%s%s", scheme, u->host, port ? ":" : "",
                     port ? port : "", path[0] == '/' ? path : "/");
    if (w > 0 && path[0] && path[0] != '/' && (size_t)w < sizeof u->url) { /* "host?q" */
        size_t room = sizeof u->url - (size_t)w - 1, k = strlen(path);
        memcpy(u->url + w, path, k < room ? k : room);
        u->url[(size_t)w + (k < room ? k : room)] = 0;
    }
    if (depth < 4 && query && is_redirector(u->host, path[0] == '/' ? path : "/"))
        unwrap(query, qlen, u, depth);
    return 0;
}

int phish_normalise(const char *in, size_t n, struct phish_url *out)
{
    return normalise_depth(in, n, out, 0);
}

/* ---- feeds ---- */
struct strset {
    char **v;
    size_t n, cap;
    bool sorted;
};
struct phish_feed {
    struct strset hosts, urls;
};

static int strset_add(struct strset *s, const char *x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv)
            return -1;
        s->v = nv;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(x)))
        return -1;
    s->n++;
    s->sorted = false;
    return 0;
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strset_sort(struct strset *s)
{
    if (s->sorted || !s->n)
        return;
    qsort(s->v, s->n, sizeof *s->v, cmpstr);
    size_t o = 0; /* drop duplicates */
    for (size_t i = 0; i < s->n; i++) {
        if (o && !strcmp(s->v[o - 1], s->v[i]))
            free(s->v[i]);
        else
            s->v[o++] = s->v[i];
    }
    s->n = o;
    s->sorted = true;
}

static bool strset_has(const struct strset *s, const char *x)
{
    return s->n && bsearch(&x, s->v, s->n, sizeof *s->v, cmpstr) != NULL;
}

static void strset_free(struct strset *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

struct phish_feed *phish_feed_new(void)
{
    return calloc(1, sizeof(struct phish_feed));
}

void phish_feed_free(struct phish_feed *f)
{
    if (!f)
        return;
    strset_free(&f->hosts);
    strset_free(&f->urls);
    free(f);
}

size_t phish_feed_count(const struct phish_feed *f)
{
    return f ? f->hosts.n + f->urls.n : 0;
}

static bool add_url(struct phish_feed *f, const char *s, size_t n)
{
    struct phish_url u;
    if (phish_normalise(s, n, &u))
        return false;
    /* a bare "http://host/" lists the whole host */
    size_t hl = strlen(u.host);
    const char *after = strstr(u.url, "://");
    if (after && !strncmp(after + 3, u.host, hl) && !strcmp(after + 3 + hl, "/"))
        return strset_add(&f->hosts, u.host) == 0;
    return strset_add(&f->urls, u.url) == 0;
}

static bool add_host(struct phish_feed *f, const char *s, size_t n)
{
    char tmp[PHISH_URL_MAX];
    if (!n || n >= sizeof tmp - 8)
        return false;
    if (memchr(s, '/', n)) { /* "host/path": a URL without its scheme */
        memcpy(tmp, "http://", 7);
        memcpy(tmp + 7, s, n);
        return add_url(f, tmp, n + 7);
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    static const char *const skip[] = {
        "localhost",     "localhost.localdomain", "broadcasthost", "local",
        "ip6-localhost", "ip6-loopback",          "0.0.0.0",       NULL};
    for (size_t i = 0; skip[i]; i++)
        if (!strcasecmp(tmp, skip[i]))
            return false;
    struct phish_url u;
    if (set_host(tmp, &u))
        return false;
    return strset_add(&f->hosts, u.host) == 0;
}

static bool is_ip_token(const char *s, size_t n)
{
    if (!n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) && s[i] != '.' && s[i] != ':')
            return false;
    return memchr(s, '.', n) || memchr(s, ':', n);
}

static size_t add_line(struct phish_feed *f, const char *l, size_t n)
{
    while (n && isspace((unsigned char)*l))
        l++, n--;
    while (n && isspace((unsigned char)l[n - 1]))
        n--;
    if (!n || *l == '#' || *l == ';' || *l == '!')
        return 0;
    if (memchr(l, '"', n)) { /* CSV: the first quoted field holding a URL */
        const char *p = l, *end = l + n;
        while (p < end) {
            const char *q1 = memchr(p, '"', (size_t)(end - p));
            if (!q1)
                break;
            const char *q2 = memchr(q1 + 1, '"', (size_t)(end - q1 - 1));
            if (!q2)
                break;
            size_t fl = (size_t)(q2 - q1 - 1);
            if (fl > 7 && memmem(q1 + 1, fl, "://", 3))
                return add_url(f, q1 + 1, fl);
            p = q2 + 1;
        }
        return 0;
    }
    size_t t1 = 0;
    while (t1 < n && !isspace((unsigned char)l[t1]))
        t1++;
    if (t1 < n && is_ip_token(l, t1)) { /* hosts file: IP host [host ...] # comment */
        size_t added = 0, i = t1;
        while (i < n) {
            while (i < n && isspace((unsigned char)l[i]))
                i++;
            if (i < n && l[i] == '#')
                break;
            size_t s = i;
            while (i < n && !isspace((unsigned char)l[i]))
                i++;
            if (i > s && add_host(f, l + s, i - s))
                added++;
        }
        return added;
    }
    if (memmem(l, t1, "://", 3))
        return add_url(f, l, t1);
    return add_host(f, l, t1);
}

size_t phish_feed_add_text(struct phish_feed *f, const char *text, size_t n)
{
    size_t added = 0, i = 0;
    while (i < n) {
        const char *nl = memchr(text + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - text) : n;
        if (e - i < PHISH_URL_MAX)
            added += add_line(f, text + i, e - i);
        i = e + 1;
    }
    strset_sort(&f->hosts);
    strset_sort(&f->urls);
    return added;
}

bool phish_feed_match(const struct phish_feed *f, const struct phish_url *u, char *why,
                      size_t why_len)
{
    if (!f)
        return false;
    if (strset_has(&f->urls, u->url)) {
        snprintf(why, why_len, "url");
        return true;
    }
    for (const char *h = u->host; h && *h;) {
        if (strset_has(&f->hosts, h)) {
            snprintf(why, why_len, "host %s", h);
            return true;
        }
        if (u->ip)
            break;
        h = strchr(h, '.');
        if (h)
            h++;
    }
    return false;
}

int phish_feed_file_refresh(struct phish_feed_file *ff)
{
    struct stat st;
    if (stat(ff->path, &st))
        return -1;
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (ff->loaded && st.st_dev == ff->dev && st.st_ino == ff->ino && st.st_size == ff->size &&
        mt == ff->mtime_ns)
        return 0;
    int fd = open(ff->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = (size_t)st.st_size + 1, len = 0;
    if (cap > (256u << 20)) {
        close(fd);
        return -1;
    }
    char *text = malloc(cap);
    if (!text) {
        close(fd);
        return -1;
    }
    for (;;) {
        ssize_t r = read(fd, text + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap) { /* grew while we read */
            char *nt = realloc(text, cap * 2);
            if (!nt)
                break;
            text = nt;
            cap *= 2;
        }
    }
    close(fd);
    struct phish_feed *nf = phish_feed_new();
    if (!nf) {
        free(text);
        return -1;
    }
    phish_feed_add_text(nf, text, len);
    free(text);
    phish_feed_free(ff->feed);
    ff->feed = nf;
    ff->dev = st.st_dev;
    ff->ino = st.st_ino;
    ff->size = st.st_size;
    ff->mtime_ns = mt;
    ff->loaded = true;
    return 1;
}

/* ---- lookalikes ---- */
static uint32_t utf8_next(const char **pp)
{
    const unsigned char *p = (const unsigned char *)*pp;
    uint32_t c = p[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (n > 1) {
        c &= 0x3fu >> (n - 1);
        for (int i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80) {
                *pp += i;
                return 0xfffd;
            }
            c = c << 6 | (p[i] & 0x3fu);
        }
    }
    *pp += n;
    return c;
}

static char fold(uint32_t c)
{
    static const struct {
        uint32_t cp;
        char a;
    } map[] = {
        /* Cyrillic */
        {0x0430, 'a'},
        {0x0435, 'e'},
        {0x043e, 'o'},
        {0x0440, 'p'},
        {0x0441, 'c'},
        {0x0443, 'y'},
        {0x0445, 'x'},
        {0x0455, 's'},
        {0x0456, 'l'},
        {0x0458, 'j'},
        {0x0501, 'd'},
        {0x04bb, 'h'},
        {0x04cf, 'l'},
        {0x0432, 'b'},
        {0x043a, 'k'},
        {0x043c, 'm'},
        {0x043d, 'h'},
        {0x0442, 't'},
        {0x044c, 'b'},
        {0x0461, 'w'},
        {0x051b, 'q'},
        {0x051d, 'w'},
        /* Greek */
        {0x03b1, 'a'},
        {0x03bf, 'o'},
        {0x03c1, 'p'},
        {0x03bd, 'v'},
        {0x03b9, 'l'},
        {0x03ba, 'k'},
        {0x03c4, 't'},
        {0x03c5, 'u'},
        {0x03b5, 'e'},
        {0x03c7, 'x'},
        {0x03b7, 'n'},
        /* Latin look-alikes */
        {0x0131, 'l'},
        {0x0142, 'l'},
        {0x0261, 'g'},
        {0x0251, 'a'},
        {0x1d0f, 'o'},
        {0x00df, 'b'},
        {0x0111, 'd'},
        {0x0127, 'h'},
    };
    if (c < 0x80)
        return (char)tolower((int)c);
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (map[i].cp == c)
            return map[i].a;
    if (c >= 0xff41 && c <= 0xff5a) /* fullwidth a-z */
        return (char)('a' + (c - 0xff41));
    if (c >= 0xff21 && c <= 0xff3a)
        return (char)('a' + (c - 0xff21));
    if (c >= 0xff10 && c <= 0xff19)
        return (char)('0' + (c - 0xff10));
    if (c == 0xff0e || c == 0x3002 || c == 0xff61)
        return '.';
    if (c >= 0xc0 && c <= 0x17f) { /* accented Latin: the base letter */
        static const char lat1[] = "aaaaaaaceeeeiiiidnooooo*ouuuuyty"; /* 0xe0..0xff */
        if (c >= 0xe0 && c <= 0xff)
            return lat1[c - 0xe0];
        if (c >= 0xc0 && c <= 0xdf)
            return lat1[c - 0xc0];
        static const char ext[] =
            "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiiiiijjkkklllllllllln"
            "nnnnnnnnoooooooorrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";
        size_t k = c - 0x100;
        return k < sizeof ext - 1 ? ext[k] : '?';
    }
    return '?';
}

void phish_skeleton(const char *host, char *out, size_t cap)
{
    char tmp[PHISH_HOST_MAX * 2];
    size_t t = 0;
    const char *p = host;
    while (*p && t + 1 < sizeof tmp) {
        char c = fold(utf8_next(&p));
        if (c == '0')
            c = 'o';
        else if (c == '1' || c == 'i')
            c = 'l';
        tmp[t++] = c;
    }
    tmp[t] = 0;
    size_t o = 0;
    for (size_t i = 0; i < t && o + 1 < cap; i++) {
        if (tmp[i] == 'r' && tmp[i + 1] == 'n') {
            out[o++] = 'm';
            i++;
        } else if (tmp[i] == 'v' && tmp[i + 1] == 'v') {
            out[o++] = 'w';
            i++;
        } else if (tmp[i] == 'c' && tmp[i + 1] == 'l') {
            out[o++] = 'd';
            i++;
        } else {
            out[o++] = tmp[i];
        }
    }
    if (cap)
        out[o < cap ? o : cap - 1] = 0;
}

unsigned phish_edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64)
        return 1000;
    unsigned d[65][65];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = (unsigned)i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = (unsigned)j;
    for (size_t i = 1; i <= n; i++)
        for (size_t j = 1; j <= m; j++) {
            unsigned cost = a[i - 1] != b[j - 1];
            unsigned v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v)
                v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[n][m];
}

/* The registered part: the last two labels, three under a two-letter
 * country code with a generic second level (example.co.uk).  No public
 * suffix list: a heuristic, documented. */
static const char *registered(const char *h)
{
    const char *dots[3] = {NULL, NULL, NULL};
    int nd = 0;
    for (const char *p = h + strlen(h); p > h; p--)
        if (p[-1] == '.' && nd < 3)
            dots[nd++] = p - 1;
    if (nd < 1)
        return h;
    const char *tld = dots[0] + 1;
    if (nd >= 2 && strlen(tld) == 2) {
        size_t sl = (size_t)(dots[0] - dots[1] - 1);
        static const char *const sld[] = {"co",  "com", "org", "net", "ac",
                                          "gov", "edu", "ne",  "or",  NULL};
        for (size_t i = 0; sld[i]; i++)
            if (strlen(sld[i]) == sl && !strncmp(dots[1] + 1, sld[i], sl))
                return nd >= 3 ? dots[2] + 1 : h;
    }
    return nd >= 2 ? dots[1] + 1 : h;
}

static bool is_or_under(const char *h, const char *p)
{
    size_t hl = strlen(h), pl = strlen(p);
    return !strcmp(h, p) || (hl > pl && h[hl - pl - 1] == '.' && !strcmp(h + hl - pl, p));
}

bool phish_lookalike(const struct phish_url *u, const char *p, unsigned max_dist, char *why,
                     size_t why_len)
{
    if (u->ip || !*p || is_or_under(u->host, p) || is_or_under(u->uhost, p))
        return false;
    const char *reg = registered(u->uhost);
    char s1[PHISH_HOST_MAX * 2], s2[PHISH_HOST_MAX * 2];
    phish_skeleton(reg, s1, sizeof s1);
    phish_skeleton(p, s2, sizeof s2);
    if (!strcmp(s1, s2)) {
        snprintf(why, why_len, "homoglyph of %s", p);
        return true;
    }
    if (strcspn(p, ".") >= 4) { /* short names are one edit from too many */
        const char *areg = registered(u->host);
        unsigned d = phish_edit_distance(areg, p);
        if (d >= 1 && d <= max_dist) {
            snprintf(why, why_len, "%u edit%s from %s", d, d == 1 ? "" : "s", p);
            return true;
        }
    }
    /* "p.evil.example" or "login-p.evil.example": p as labels inside */
    size_t pl = strlen(p);
    for (const char *h = u->host; (h = strstr(h, p)) != NULL; h++) {
        bool left = h == u->host || h[-1] == '.' || h[-1] == '-';
        bool right = h[pl] == '.' || h[pl] == '-';
        if (left && right) {
            snprintf(why, why_len, "%s inside the host", p);
            return true;
        }
    }
    return false;
}

char *phish_defang(const char *text, size_t n, const struct phish_span *spans, size_t nspans,
                   size_t *out_len)
{
    size_t cap = n + 1;
    for (size_t i = 0; i < nspans; i++)
        cap += spans[i].len * 2 + 2; /* every '.' may grow by 2, "http" stays 4 */
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0, pos = 0;
    for (size_t s = 0; s < nspans; s++) {
        size_t off = spans[s].off, len = spans[s].len;
        if (off < pos || off > n || len > n - off)
            continue;
        memcpy(out + o, text + pos, off - pos);
        o += off - pos;
        const char *u = text + off;
        size_t i = 0;
        if (ci_prefix(u, len, "http")) {
            out[o++] = u[0];
            out[o++] = u[1] == 'T' ? 'X' : 'x';
            out[o++] = u[2] == 'T' ? 'X' : 'x';
            i = 3;
        }
        const char *sep = memmem(u, len, "://", 3);
        size_t hs = sep ? (size_t)(sep - u) + 3 : 0;
        size_t he = hs;
        while (he < len && !strchr("/?#\\", u[he]))
            he++;
        for (; i < len; i++) {
            if (u[i] == '.' && i >= hs && i < he) {
                memcpy(out + o, "[.]", 3);
                o += 3;
            } else {
                out[o++] = u[i];
            }
        }
        pos = off + len;
    }
    memcpy(out + o, text + pos, n - pos);
    o += n - pos;
    out[o] = 0;
    *out_len = o;
    return out;
}
