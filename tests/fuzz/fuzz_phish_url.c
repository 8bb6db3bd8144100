/* libFuzzer target for the phish module's URL code (modules/phish/url.c):
 * the input is extracted as text, HTML and RTF; every candidate is
 * normalised, matched against a small feed and a protected domain, and
 * the input is defanged at every candidate.  Nothing may crash, read out
 * of bounds, leak, or write a normalised URL or host without its NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phish/url.c"

struct fz {
    struct phish_feed *feed;
    struct phish_span spans[64];
    size_t n;
};

static bool each(void *arg, const char *u, size_t len, size_t off)
{
    struct fz *z = arg;
    struct phish_url pu;
    char why[128];
    if (phish_normalise(u, len, &pu) == 0) {
        if (strlen(pu.url) >= sizeof pu.url || strlen(pu.host) >= sizeof pu.host)
            abort();
        phish_feed_match(z->feed, &pu, why, sizeof why);
        phish_lookalike(&pu, "paypal.com", 2, why, sizeof why);
    }
    if (z->n < 64)
        z->spans[z->n++] = (struct phish_span){off, len};
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz z = {.feed = phish_feed_new()};
    if (!z.feed)
        return 0;
    /* the input is also a feed file */
    phish_feed_add_text(z.feed, (const char *)data, size);
    static const char base[] = "evil.example\n0.0.0.0 ads.example\nhttp://x.example/p\n";
    phish_feed_add_text(z.feed, base, sizeof base - 1);
    for (int k = 0; k < 3; k++) {
        z.n = 0;
        phish_extract((const char *)data, size, (enum phish_text)k, each, &z);
        size_t out_len;
        char *d = phish_defang((const char *)data, size, z.spans, z.n, &out_len);
        if (d && out_len < size)
            abort();
        free(d);
    }
    char sk[64];
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
        phish_skeleton(s, sk, sizeof sk);
        free(s);
    }
    phish_feed_free(z.feed);
    return 0;
}
