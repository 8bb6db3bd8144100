/* phish: links in messages checked against local feeds and for lookalikes
 * of protected domains.  URLs come from the plain body (PidTagBody), the
 * HTML body (PidTagHtml / PidTagBodyHtml), the RTF body (PidTagRtfCompressed,
 * decompressed with src/content/rtf.c compiled into this module) and
 * text/plain or text/html attachments; url.c does the rest.  Actions:
 * defang the links in the plain and HTML bodies, tag, block, log.
 * doc/phish.md. */
#include "content/rtf.h"
#include "sec.h"
#include "url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PR_BODY 0x1000u
#define PR_HTML_BIN 0x10130102u
#define PR_HTML_ID 0x1013u
#define PR_RTF 0x10090102u
#define MAX_TEXT (4u << 20)
#define MAX_FEEDS 16
#define MAX_PROTECTED 64

struct phish {
    struct sec_ctx sc;
    struct phish_feed_file feeds[MAX_FEEDS];
    size_t nfeeds;
    char *protected_[MAX_PROTECTED];
    size_t nprotected;
    unsigned max_dist;
    bool attachments;
    uint64_t last_refresh_us;
};

/* one text being checked */
struct scan {
    struct phish *ph;
    struct sec_job *j;
    struct phish_span spans[256];
    size_t nspans;
    unsigned hits;
    char list[400]; /* JSON array members */
};

static bool on_url(void *arg, const char *url, size_t len, size_t off)
{
    struct scan *s = arg;
    struct phish *ph = s->ph;
    struct phish_url u;
    if (phish_normalise(url, len, &u))
        return true;
    char why[200] = "";
    const char *kind = NULL;
    for (size_t i = 0; i < ph->nfeeds && !kind; i++)
        if (phish_feed_match(ph->feeds[i].feed, &u, why, sizeof why))
            kind = "feed";
    for (size_t i = 0; i < ph->nprotected && !kind; i++)
        if (phish_lookalike(&u, ph->protected_[i], ph->max_dist, why, sizeof why))
            kind = "lookalike";
    if (!kind)
        return true;
    s->hits++;
    if (s->nspans < sizeof s->spans / sizeof s->spans[0])
        s->spans[s->nspans++] = (struct phish_span){off, len};
    struct sec_job *j = s->j;
    if (!j->r.name[0]) {
        snprintf(j->r.name, sizeof j->r.name, "%.120s (%s: %.100s)", u.url, kind, why);
        j->verdict = strcmp(kind, "feed") ? "lookalike" : "phish";
    }
    j->r.kind = MP_SVC_INFECTED;
    char esc[300];
    sec_json_str(esc, sizeof esc, u.url);
    size_t l = strlen(s->list);
    if (l + strlen(esc) + 4 < sizeof s->list)
        snprintf(s->list + l, sizeof s->list - l, "%s\"%s\"", l ? "," : "", esc);
    return true;
}

static void scan_text(struct scan *s, const char *t, size_t n, enum phish_text kind)
{
    s->nspans = 0;
    phish_extract(t, n, kind, on_url, s);
}

static char *prop_text(const struct mp_message *m, uint32_t tag, size_t *len)
{
    return (char *)sec_read_prop(m, tag, MAX_TEXT, len);
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* The RTF body (PidTagRtfCompressed): decompressed, its links defanged
 * where they stand in the RTF text (HYPERLINK field instructions, the
 * \\htmltag groups of HTML encapsulated with \\fromhtml, the text shown),
 * and written back in the uncompressed form of MS-OXRTFCP (COMPTYPE MELA,
 * which every reader must accept).  "[" and "]" need no escaping in RTF. */
static void defang_rtf(struct mp_module_ctx *mc, struct mp_message_event *ev,
                       const struct mp_message *m, struct scan *s)
{
    size_t n = 0;
    uint8_t *rtfc = (uint8_t *)prop_text(m, PR_RTF, &n);
    if (!rtfc)
        return;
    struct mp_buf raw = {0}, st = {0};
    if (mp_rtf_decompress(rtfc, n, &raw, MAX_TEXT) == MP_RTF_OK) {
        const char *t = (const char *)raw.data + raw.off;
        size_t tl = raw.len - raw.off, dl = 0;
        scan_text(s, t, tl, PHISH_RTF);
        char *d = s->nspans ? phish_defang(t, tl, s->spans, s->nspans, &dl) : NULL;
        if (d && !mp_rtf_store((const uint8_t *)d, dl, &st) &&
            mp_message_set_binary(ev, PR_RTF >> 16, st.data + st.off, st.len - st.off))
            mp_module_log(mc, MP_MLOG_WARN,
                          "cannot write the defanged RTF body back (this kind of event keeps "
                          "its RTF: doc/phish.md)");
        free(d);
    }
    mp_buf_free(&raw);
    mp_buf_free(&st);
    free(rtfc);
}

/* Defangs the plain, HTML and RTF bodies (the scan is cheap: done again
 * here, so a verdict needs no saved state). */
static void phish_apply(struct sec_job *j, enum sec_action a)
{
    struct phish *ph = j->priv;
    struct mp_message_event *ev = j->ev;
    const struct mp_message *m = mp_message_event_message(ev);
    if (a == SEC_ACT_TAG) {
        static const uint8_t ps[16] = MP_PS_INTERNET_HEADERS;
        mp_message_prefix_subject(ev, j->sc->tag_prefix ? j->sc->tag_prefix : "[PHISH] ");
        mp_message_set_named_string(ev, ps, "X-Phish", j->r.name);
        return;
    }
    if (a != SEC_ACT_DEFANG || !ph || !m)
        return;
    struct sec_job scratch = {.sc = j->sc, .ev = ev};
    struct scan s = {.ph = ph, .j = &scratch};
    const char *body = mp_message_string(ev, m, PR_BODY);
    if (body) {
        scan_text(&s, body, strlen(body), PHISH_TEXT);
        size_t n;
        char *d = s.nspans ? phish_defang(body, strlen(body), s.spans, s.nspans, &n) : NULL;
        if (d)
            mp_message_set_string(ev, PR_BODY, d);
        free(d);
    }
    size_t hl = 0;
    char *html = prop_text(m, PR_HTML_BIN, &hl);
    if (!html) {
        const char *hs = mp_message_string(ev, m, PR_HTML_ID);
        html = hs ? strdup(hs) : NULL;
        hl = html ? strlen(html) : 0;
    }
    if (html) {
        scan_text(&s, html, hl, PHISH_HTML);
        size_t n;
        char *d = s.nspans ? phish_defang(html, hl, s.spans, s.nspans, &n) : NULL;
        if (d)
            mp_message_set_string(ev, PR_HTML_ID, d);
        free(d);
        free(html);
    }
    defang_rtf(j->sc->mc, ev, m, &s);
}

static void refresh(struct phish *ph)
{
    uint64_t now = sec_now_us();
    if (ph->last_refresh_us && now - ph->last_refresh_us < 1000000)
        return;
    ph->last_refresh_us = now;
    for (size_t i = 0; i < ph->nfeeds; i++) {
        int rc = phish_feed_file_refresh(&ph->feeds[i]);
        if (rc > 0)
            mp_module_log(ph->sc.mc, MP_MLOG_INFO, "feed %s: %zu entries", ph->feeds[i].path,
                          phish_feed_count(ph->feeds[i].feed));
        else if (rc < 0 && !ph->feeds[i].loaded)
            mp_module_log(ph->sc.mc, MP_MLOG_WARN, "feed %s: cannot read it", ph->feeds[i].path);
    }
}

static enum mp_status phish_message(struct mp_module_ctx *mc, struct mp_message_event *ev)
{
    struct phish *ph = mp_module_private(mc);
    struct sec_job *j = sec_job_start(&ph->sc, ev, phish_apply);
    if (!j)
        return MP_CONTINUE;
    j->priv = ph;
    snprintf(j->service, sizeof j->service, "feeds+lookalike");
    refresh(ph);
    const struct mp_message *m = mp_message_event_message(ev);
    struct scan s = {.ph = ph, .j = j};
    if (m) {
        const char *body = mp_message_string(ev, m, PR_BODY);
        if (body)
            scan_text(&s, body, strlen(body), PHISH_TEXT);
        size_t n = 0;
        char *html = prop_text(m, PR_HTML_BIN, &n);
        if (html) {
            scan_text(&s, html, n, PHISH_HTML);
            free(html);
        } else if ((body = mp_message_string(ev, m, PR_HTML_ID)) != NULL) {
            scan_text(&s, body, strlen(body), PHISH_HTML);
        }
        uint8_t *rtfc = (uint8_t *)prop_text(m, PR_RTF, &n);
        if (rtfc) {
            struct mp_buf out = {0};
            if (mp_rtf_decompress(rtfc, n, &out, MAX_TEXT) == MP_RTF_OK)
                scan_text(&s, (const char *)out.data + out.off, out.len - out.off, PHISH_RTF);
            mp_buf_free(&out);
            free(rtfc);
        }
        size_t na = ph->attachments ? mp_message_attachment_count(m) : 0;
        for (size_t i = 0; i < na; i++) {
            const char *mt = mp_message_attachment_mime_type(ev, m, i);
            const char *nm = mp_message_attachment_name(ev, m, i);
            bool is_html = (mt && !strncasecmp(mt, "text/html", 9)) ||
                           (nm && (ends_with(nm, ".html") || ends_with(nm, ".htm")));
            bool is_text =
                (mt && !strncasecmp(mt, "text/plain", 10)) || (nm && ends_with(nm, ".txt"));
            if (!is_html && !is_text)
                continue;
            char *t = (char *)sec_read_attachment(m, i, MAX_TEXT, &n);
            if (t) {
                scan_text(&s, t, n, is_html ? PHISH_HTML : PHISH_TEXT);
                free(t);
            }
        }
    }
    if (s.hits) {
        size_t l = strlen(j->detail);
        snprintf(j->detail + l, sizeof j->detail - l, ",\"hits\":%u,\"urls\":[%s]", s.hits, s.list);
    }
    if (j->r.kind == MP_SVC_NONE)
        j->r.kind = MP_SVC_CLEAN;
    return sec_job_wait(j);
}

/* "a, b c" -> each item */
static size_t split(const char *v, char **out, size_t max)
{
    size_t n = 0;
    while (v && *v && n < max) {
        v += strspn(v, ", \t");
        size_t l = strcspn(v, ", \t");
        if (!l)
            break;
        out[n] = strndup(v, l);
        if (!out[n])
            break;
        n++;
        v += l;
    }
    return n;
}

static int phish_init(struct mp_module_ctx *mc)
{
    struct phish *ph = calloc(1, sizeof *ph);
    if (!ph)
        return -1;
    mp_module_set_private(mc, ph);
    if (sec_init(&ph->sc, mc, "both", SEC_ACT_DEFANG, SEC_ACT_DEFANG))
        return -1;
    sec_cache_disable(&ph->sc); /* feeds change: the verdict of a message does too */
    static const char *const hdrs[] = {"X-Phish", NULL};
    sec_map_header_names(&ph->sc, hdrs);
    char *paths[MAX_FEEDS];
    size_t np = split(mp_module_option(mc, "feeds"), paths, MAX_FEEDS);
    for (size_t i = 0; i < np; i++)
        ph->feeds[ph->nfeeds++].path = paths[i];
    for (size_t i = 0; i < ph->nfeeds; i++) {
        phish_feed_file_refresh(&ph->feeds[i]);
        mp_module_log(mc, ph->feeds[i].loaded ? MP_MLOG_INFO : MP_MLOG_WARN,
                      "feed %s: %zu entries%s", ph->feeds[i].path,
                      phish_feed_count(ph->feeds[i].feed),
                      ph->feeds[i].loaded ? "" : " (cannot read it yet)");
    }
    ph->nprotected = split(mp_module_option(mc, "protected"), ph->protected_, MAX_PROTECTED);
    for (size_t i = 0; i < ph->nprotected; i++)
        for (char *p = ph->protected_[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    ph->max_dist = (unsigned)mp_module_option_int(mc, "max_distance", 1);
    ph->attachments = mp_module_option_bool(mc, "scan_attachments", true);
    if (!ph->nfeeds && !ph->nprotected) {
        mp_module_log(mc, MP_MLOG_ERROR, "set phish:feeds and/or phish:protected");
        return -1;
    }
    mp_module_log(mc, MP_MLOG_INFO, "%zu feed(s), %zu protected domain(s), max distance %u",
                  ph->nfeeds, ph->nprotected, ph->max_dist);
    return 0;
}

static void phish_fini(struct mp_module_ctx *mc)
{
    struct phish *ph = mp_module_private(mc);
    if (!ph)
        return;
    for (size_t i = 0; i < ph->nfeeds; i++) {
        free(ph->feeds[i].path);
        phish_feed_free(ph->feeds[i].feed);
    }
    for (size_t i = 0; i < ph->nprotected; i++)
        free(ph->protected_[i]);
    sec_fini(&ph->sc);
    free(ph);
}

static const struct mp_module_option_spec phish_options[] = {
    SEC_COMMON_OPTIONS,
    {"feeds", MP_OPT_STRING, 0, 0, NULL},
    {"protected", MP_OPT_STRING, 0, 0, NULL},
    {"max_distance", MP_OPT_INT, 0, 3, NULL},
    {"scan_attachments", MP_OPT_BOOL, 0, 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

const struct mp_module mp_module_descriptor = {
    MP_MODULE_HEADER,
    .name = "phish",
    .description = "anti-phishing: links against feeds and lookalikes of protected domains",
    .init = phish_init,
    .fini = phish_fini,
    .options = phish_options,
    .message = phish_message,
};
