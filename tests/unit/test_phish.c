/* The phish module's URL code (modules/phish/url.c): extraction from
 * text, HTML and RTF, normalisation (IDN, percent and entity decoding,
 * userinfo, ports, numeric hosts, redirectors), feeds in their formats,
 * lookalikes, defanging.  IDN expectations are from RFC 3492's algorithm
 * as libidn2 implements it (checked against Python's "idna" codec). */
#include "phish/url.c"
#include "testlib.h"

struct got {
    char urls[16][PHISH_URL_MAX];
    size_t off[16];
    size_t n;
};

static bool collect(void *arg, const char *u, size_t len, size_t off)
{
    struct got *g = arg;
    if (g->n < 16) {
        snprintf(g->urls[g->n], PHISH_URL_MAX, "%.*s", (int)len, u);
        g->off[g->n] = off;
        g->n++;
    }
    return true;
}

static struct got ex(const char *t, enum phish_text k)
{
    struct got g;
    memset(&g, 0, sizeof g);
    phish_extract(t, strlen(t), k, collect, &g);
    return g;
}

static const char *norm(const char *in)
{
    static struct phish_url u;
    if (phish_normalise(in, strlen(in), &u))
        return "(bad)";
    return u.url;
}

static const char *host_of(const char *in)
{
    static struct phish_url u;
    if (phish_normalise(in, strlen(in), &u))
        return "(bad)";
    return u.host;
}

static void test_extract(void)
{
    struct got g = ex("see http://evil.example/login. And www.foo.example, ok", PHISH_TEXT);
    CHECK_EQ(g.n, 2u);
    CHECK(!strcmp(g.urls[0], "http://evil.example/login"));
    CHECK_EQ(g.off[0], 4u);
    CHECK(!strcmp(g.urls[1], "www.foo.example"));
    g = ex("(https://a.example/x?y=1&z=2) HTTPS://B.EXAMPLE", PHISH_TEXT);
    CHECK_EQ(g.n, 2u);
    CHECK(!strcmp(g.urls[0], "https://a.example/x?y=1&z=2"));
    CHECK(!strcmp(g.urls[1], "HTTPS://B.EXAMPLE"));
    g = ex("<a href=\"http://x.example/a?b=1&amp;c=2\">http://shown.example</a>", PHISH_HTML);
    CHECK_EQ(g.n, 2u);
    CHECK(!strcmp(g.urls[0], "http://x.example/a?b=1&amp;c=2"));
    CHECK(!strcmp(g.urls[1], "http://shown.example"));
    g = ex("<p>http://e.example/&lt;b&gt;</p>", PHISH_HTML);
    CHECK_EQ(g.n, 1u);
    CHECK(!strcmp(g.urls[0], "http://e.example/"));
    g = ex("{\\field{\\*\\fldinst{HYPERLINK \"http://rtf.example/p\"}}{\\fldrslt "
           "http://rtf.example/p\\par}}",
           PHISH_RTF);
    CHECK_EQ(g.n, 2u);
    CHECK(!strcmp(g.urls[0], "http://rtf.example/p"));
    CHECK(!strcmp(g.urls[1], "http://rtf.example/p"));
    /* not URLs */
    CHECK_EQ(ex("xhttp://no.example http:// www. wwwx.example a.www.b", PHISH_TEXT).n, 0u);
    CHECK_EQ(ex("", PHISH_TEXT).n, 0u);
    CHECK_EQ(ex("http", PHISH_TEXT).n, 0u);
    g = ex("ftp://files.example/x", PHISH_TEXT);
    CHECK_EQ(g.n, 1u);
    /* UTF-8 hosts stay in the candidate */
    g = ex("go to http://p\xd0\xb0ypal.com/x now", PHISH_TEXT);
    CHECK_EQ(g.n, 1u);
    CHECK(!strcmp(g.urls[0], "http://p\xd0\xb0ypal.com/x"));
    /* a very long URL is cut, never overrun */
    static char big[5000];
    memcpy(big, "http://", 7);
    memset(big + 7, 'a', sizeof big - 8);
    g = ex(big, PHISH_TEXT);
    CHECK(g.n >= 1);
    CHECK(strlen(g.urls[0]) < PHISH_URL_MAX);
}

static void test_normalise(void)
{
    CHECK(!strcmp(norm("HTTP://Evil.EXAMPLE"), "http://evil.example/"));
    CHECK(!strcmp(norm("http://evil.example:80/a"), "http://evil.example/a"));
    CHECK(!strcmp(norm("https://evil.example:443/a"), "https://evil.example/a"));
    CHECK(!strcmp(norm("http://evil.example:8080/a"), "http://evil.example:8080/a"));
    CHECK(!strcmp(norm("http://user:pw@evil.example/"), "http://evil.example/"));
    CHECK(!strcmp(norm("http://paypal.com@evil.example/"), "http://evil.example/"));
    CHECK(!strcmp(norm("http://evil.example./"), "http://evil.example/"));
    CHECK(!strcmp(norm("www.evil.example/x"), "http://www.evil.example/x"));
    CHECK(!strcmp(norm("http://%65vil.example/%6C%6Fgin"), "http://evil.example/login"));
    CHECK(!strcmp(norm("http://evil.example/a%2Fb%20c"), "http://evil.example/a%2Fb%20c"));
    CHECK(!strcmp(norm("http://evil.example/a%2fb"), "http://evil.example/a%2Fb"));
    CHECK(!strcmp(norm("http://evil.example/a#frag"), "http://evil.example/a"));
    CHECK(!strcmp(norm("http://evil.example\\path"), "http://evil.example/path"));
    CHECK(!strcmp(norm("http://x.example/a?b=1&amp;c=2"), "http://x.example/a?b=1&c=2"));
    CHECK(!strcmp(norm("http&#58;//x.example/"), "http://x.example/"));
    CHECK(!strcmp(norm("http://x.ex\tample/"), "http://x.example/"));
    CHECK(!strcmp(norm(" http://x.example/ "), "http://x.example/"));
    /* numeric hosts */
    CHECK(!strcmp(norm("http://3232235777/"), "http://192.168.1.1/"));
    CHECK(!strcmp(norm("http://0xC0A80101/"), "http://192.168.1.1/"));
    CHECK(!strcmp(norm("http://0300.0250.1.1/"), "http://192.168.1.1/"));
    CHECK(!strcmp(norm("http://192.168.257/"), "http://192.168.1.1/"));
    CHECK(!strcmp(norm("http://1.2.3.4/"), "http://1.2.3.4/"));
    CHECK(!strcmp(norm("http://999.2.3.4/"), "(bad)"));
    /* IDN */
    CHECK(!strcmp(host_of("http://b\xc3\xbc\x63her.example/"), "xn--bcher-kva.example"));
    CHECK(!strcmp(host_of("http://B\xc3\x9c\x43HER.example/"), "xn--bcher-kva.example"));
    CHECK(!strcmp(host_of("http://p\xd0\xb0ypal.com/"), "xn--pypal-4ve.com"));
    {
        struct phish_url u;
        CHECK_EQ(phish_normalise("http://xn--pypal-4ve.com/", 26, &u), 0);
        CHECK(!strcmp(u.uhost, "p\xd0\xb0ypal.com"));
    }
    /* refused */
    CHECK(!strcmp(norm("mailto:a@b"), "(bad)"));
    CHECK(!strcmp(norm("http:///x"), "(bad)"));
    CHECK(!strcmp(norm("http://[::1]/"), "(bad)"));
    CHECK(!strcmp(norm("http://a b.example/"), "(bad)"));
    CHECK(!strcmp(norm("http://x.example:80a/"), "(bad)"));
    CHECK(!strcmp(norm("1http://x/"), "(bad)"));
    /* redirectors */
    CHECK(!strcmp(norm("https://www.google.com/url?sa=t&url=http%3A%2F%2Fevil.example%2Fa"),
                  "http://evil.example/a"));
    CHECK(!strcmp(norm("https://eur01.safelinks.protection.outlook.com/?url=https%3A%2F%2F"
                       "evil.example%2Fx&data=1"),
                  "https://evil.example/x"));
    CHECK(!strcmp(norm("https://l.facebook.com/l.php?u=http%3A%2F%2Fevil.example%2F&h=x"),
                  "http://evil.example/"));
    /* nested */
    CHECK(!strcmp(norm("https://www.google.com/url?q=https%3A%2F%2Fl.facebook.com%2Fl.php%3Fu%3D"
                       "http%253A%252F%252Fdeep.example%252F"),
                  "http://deep.example/"));
    {
        struct phish_url u;
        const char *s = "https://www.google.com/url?q=http%3A%2F%2Fa.example%2F";
        CHECK_EQ(phish_normalise(s, strlen(s), &u), 0);
        CHECK_EQ(u.unwrapped, 1u);
    }
    /* not a redirector: the query stays */
    CHECK(!strcmp(norm("https://shop.example/url?q=http%3A%2F%2Fevil.example%2F"),
                  "https://shop.example/url?q=http:%2F%2Fevil.example%2F"));
    /* a redirector whose parameter is no URL */
    CHECK(
        !strcmp(norm("https://www.google.com/url?q=hello"), "https://www.google.com/url?q=hello"));
}

static void test_feed(void)
{
    struct phish_feed *f = phish_feed_new();
    const char *text = "# a host list\n"
                       "evil.example\n"
                       "Bad.Example.\n"
                       "0.0.0.0 ads.example tracker.example # hosts file\n"
                       "127.0.0.1 localhost\n"
                       "http://phish.example/login.php\n"
                       "https://whole.example/\n"
                       "\"1\",\"2026-12-01\",\"http://csv.example/mal.exe\",\"online\"\n"
                       "b\xc3\xbc\x63her.example\n"
                       "   \n;comment\n"
                       "short.example/p/q\n";
    size_t added = phish_feed_add_text(f, text, strlen(text));
    CHECK_EQ(added, 9u); /* localhost is not listed */
    CHECK_EQ(phish_feed_count(f), 9u);
    struct phish_url u;
    char why[128];
#define M(s) (phish_normalise(s, strlen(s), &u) == 0 && phish_feed_match(f, &u, why, sizeof why))
    CHECK(M("http://evil.example/anything"));
    CHECK(!strcmp(why, "host evil.example"));
    CHECK(M("https://www.login.evil.example/"));
    CHECK(M("http://bad.example/"));
    CHECK(M("http://ads.example/"));
    CHECK(M("http://tracker.example/"));
    CHECK(!M("http://localhost/"));
    CHECK(M("http://PHISH.example:80/login.php"));
    CHECK(!strcmp(why, "url"));
    CHECK(!M("http://phish.example/other"));
    CHECK(M("https://whole.example/x"));
    CHECK(M("http://csv.example/mal.exe"));
    CHECK(M("http://xn--bcher-kva.example/"));
    CHECK(M("http://short.example/p/q"));
    CHECK(!M("http://notevil.example/"));
    CHECK(!M("http://example/"));
    CHECK(M("https://www.google.com/url?q=http%3A%2F%2Fevil.example%2F"));
#undef M
    phish_feed_free(f);
    phish_feed_free(NULL);
}

static void test_feed_file(void)
{
    char path[] = "/tmp/phish-feed-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "one.example\n", 12) == 12);
    close(fd);
    struct phish_feed_file ff = {.path = path};
    CHECK_EQ(phish_feed_file_refresh(&ff), 1);
    CHECK_EQ(phish_feed_count(ff.feed), 1u);
    CHECK_EQ(phish_feed_file_refresh(&ff), 0);
    fd = open(path, O_WRONLY | O_APPEND);
    CHECK(write(fd, "two.example\n", 12) == 12);
    close(fd);
    CHECK_EQ(phish_feed_file_refresh(&ff), 1);
    CHECK_EQ(phish_feed_count(ff.feed), 2u);
    unlink(path);
    CHECK_EQ(phish_feed_file_refresh(&ff), -1);
    CHECK_EQ(phish_feed_count(ff.feed), 2u); /* the old one stays */
    phish_feed_free(ff.feed);
}

static void test_lookalike(void)
{
    struct phish_url u;
    char why[128];
#define L(s, p)                                                                                    \
    (phish_normalise(s, strlen(s), &u) == 0 && phish_lookalike(&u, p, 1, why, sizeof why))
    CHECK(L("http://p\xd0\xb0ypal.com/", "paypal.com")); /* Cyrillic a */
    CHECK(!strncmp(why, "homoglyph", 9));
    CHECK(L("http://xn--pypal-4ve.com/", "paypal.com"));
    CHECK(L("http://paypa1.com/", "paypal.com"));
    CHECK(L("http://rnicrosoft.com/", "microsoft.com"));
    CHECK(L("http://www.paypall.com/", "paypal.com"));
    CHECK(!strncmp(why, "1 edit", 6));
    CHECK(L("http://paypla.com/", "paypal.com")); /* transposition */
    CHECK(L("http://paypal.com.evil.example/", "paypal.com"));
    CHECK(L("http://login-paypal.com-secure.example/", "paypal.com"));
    CHECK(L("http://examp1e.co.uk/", "example.co.uk"));
    CHECK(!L("http://paypal.com/", "paypal.com"));
    CHECK(!L("http://www.paypal.com/x", "paypal.com"));
    CHECK(!L("http://paypal.de/", "paypal.com"));
    CHECK(!L("http://google.com/", "paypal.com"));
    CHECK(!L("http://1.2.3.4/", "paypal.com"));
    CHECK(!L("http://ab.com/", "ac.com")); /* too short for edit distance */
#undef L
    CHECK_EQ(phish_edit_distance("kitten", "sitting"), 3u);
    CHECK_EQ(phish_edit_distance("", "abc"), 3u);
    CHECK_EQ(phish_edit_distance("ab", "ba"), 1u);
    char sk[64];
    phish_skeleton("\xef\xbd\x90\xef\xbd\x81ypal.com", sk, sizeof sk); /* fullwidth pa */
    CHECK(!strcmp(sk, "paypal.com"));
    phish_skeleton("g\xce\xbf\xce\xbfgle", sk, sizeof sk); /* Greek omicrons */
    CHECK(!strcmp(sk, "google"));
    phish_skeleton("\xff\xfe\xc3", sk, sizeof sk); /* bad UTF-8: no overrun */
    CHECK(strlen(sk) <= 3);
}

static void test_defang(void)
{
    const char *t = "a http://evil.example/x.y b www.bad.example c";
    struct phish_span sp[2] = {{2, 23}, {28, 15}};
    size_t n;
    char *d = phish_defang(t, strlen(t), sp, 2, &n);
    CHECK(d && !strcmp(d, "a hxxp://evil[.]example/x.y b www[.]bad[.]example c"));
    CHECK_EQ(n, strlen(d));
    free(d);
    struct phish_span bad[1] = {{40, 100}};
    d = phish_defang(t, strlen(t), bad, 1, &n);
    CHECK(d && !strcmp(d, t));
    free(d);
    d = phish_defang("HTTPS://A.B", 11, (struct phish_span[]){{0, 11}}, 1, &n);
    CHECK(d && !strcmp(d, "HXXPS://A[.]B"));
    free(d);
}

int main(void)
{
    test_extract();
    test_normalise();
    test_feed();
    test_feed_file();
    test_lookalike();
    test_defang();
    TEST_DONE();
}
