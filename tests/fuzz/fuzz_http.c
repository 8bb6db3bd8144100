/* libFuzzer target: what the HTTP front writes around http-parser.
 *
 *   make build/fuzz/fuzz_http && build/fuzz/fuzz_http tests/fuzz/corpus/http
 *
 * The input is parsed by http-parser as a stream of requests whose heads are
 * collected by mp_http_msg (bounded at 4 KiB, as mapiproxy:http max header
 * size would) and rebuilt as the upstream request head and as a response
 * head (Location rewritten); every body piece and the whole input go
 * through the Autodiscover rewriter; the URL through the request-target
 * normaliser.  Checks: rebuilt heads end with an empty line and hold no bare
 * CR or LF inside a line; the rewriter gives the input back unchanged when
 * it reports no replacement; a normalised target is no longer than the
 * input, begins with '/', its path holds no dot-segment, no "//", no
 * backslash and no encoded separator, and normalising it again changes
 * nothing. */
#include <http_parser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "transport/http/msg.h"
#include "transport/http/path.h"
#include "transport/http/names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mp_http_names names;
static struct mp_http_msg msg;

static void check_head(const struct mp_buf *b)
{
    if (b->len < 4 || memcmp(b->data + b->len - 4, "\r\n\r\n", 4))
        abort();
    for (size_t i = 0; i + 4 < b->len; i++) {
        if (b->data[i] == '\r' && b->data[i + 1] != '\n')
            abort();
        if (b->data[i] == '\n' && (i == 0 || b->data[i - 1] != '\r'))
            abort();
        if (b->data[i] == '\n' && b->data[i + 1] == '\r' && i + 4 < b->len)
            abort(); /* an empty line before the end would end the head early */
    }
}

/* A front relaying /mapi/... only (Autodiscover URLs of other paths are
 * kept, or dropped every other input). */
static bool relays(const void *arg, const char *path, size_t len)
{
    (void)arg;
    return len >= 6 && !strncasecmp(path, "/mapi/", 6);
}

static void check_rewrite(const uint8_t *p, size_t n)
{
    for (int pass = 0; pass < 2; pass++) {
        names.relayed = pass ? relays : NULL;
        names.drop_unrelayed = pass && n % 2;
        struct mp_buf out = {0};
        long k = mp_http_rewrite(&names, p, n, &out);
        if (k < 0 || (k == 0 && (out.len != n || (n && memcmp(out.data, p, n)))))
            abort();
        mp_buf_free(&out);
    }
}

static void check_target(const char *u, size_t n)
{
    char *a = malloc(n + 1), *b = malloc(n + 1);
    if (!a || !b)
        abort();
    long k = mp_http_path_normalise(u, n, a);
    if (k >= 0) {
        if ((size_t)k > n || a[0] != '/' || a[k] != 0)
            abort();
        size_t pl = strcspn(a, "?");
        for (size_t i = 0; i < pl; i++) {
            if (a[i] == '\\' || (a[i] == '/' && a[i + 1] == '/'))
                abort();
            if (a[i] == '%' && i + 2 < pl &&
                ((a[i + 1] == '2' && (a[i + 2] == 'F' || a[i + 2] == 'f')) ||
                 (a[i + 1] == '5' && (a[i + 2] == 'C' || a[i + 2] == 'c'))))
                abort();
            if (a[i] == '/') { /* no "." or ".." segment */
                size_t e = i + 1;
                while (e < pl && a[e] != '/')
                    e++;
                if ((e - i == 2 && a[i + 1] == '.') ||
                    (e - i == 3 && a[i + 1] == '.' && a[i + 2] == '.'))
                    abort();
            }
        }
        long k2 = mp_http_path_normalise(a, (size_t)k, b);
        if (k2 != k || memcmp(a, b, (size_t)k))
            abort();
    }
    free(a);
    free(b);
}

static int on_begin(http_parser *p)
{
    mp_http_msg_reset(&msg);
    return 0;
}
static int on_url(http_parser *p, const char *at, size_t len)
{
    return mp_http_msg_url(&msg, at, len);
}
static int on_field(http_parser *p, const char *at, size_t len)
{
    return mp_http_msg_field(&msg, at, len);
}
static int on_value(http_parser *p, const char *at, size_t len)
{
    return mp_http_msg_value(&msg, at, len);
}
static int on_headers(http_parser *p)
{
    check_target(mp_http_msg_url_ptr(&msg), msg.url_len);
    struct mp_buf out = {0};
    struct mp_http_head_opts o = {.framing = (enum mp_http_framing)(p->method % 4),
                                  .length = p->content_length,
                                  .host = "exch01.test.local:444",
                                  .strip_accept_encoding = p->method & 1,
                                  .close = p->flags & 1};
    if (mp_http_request_head(&msg, http_method_str((enum http_method)p->method), &o, &out))
        abort();
    check_head(&out);
    out.len = 0;
    o.rewrite_location = &names;
    if (mp_http_response_head(&msg, 200 + (int)p->method, &o, &out))
        abort();
    check_head(&out);
    mp_buf_free(&out);
    size_t l;
    mp_http_msg_get(&msg, "location", &l);
    return 0;
}
static int on_body(http_parser *p, const char *at, size_t len)
{
    check_rewrite((const uint8_t *)at, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static http_parser_settings st = {.on_message_begin = on_begin,
                                      .on_url = on_url,
                                      .on_header_field = on_field,
                                      .on_header_value = on_value,
                                      .on_headers_complete = on_headers,
                                      .on_body = on_body};
    if (!names.n &&
        mp_http_names_init(&names, "localhost", "exch01.test.local, EXCH01", "proxy.test:8443"))
        abort();
    mp_http_msg_init(&msg, 4096);
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    http_parser_execute(&p, &st, (const char *)data, size);
    mp_http_msg_free(&msg);
    check_rewrite(data, size);
    return 0;
}
