/* The message model: properties, recipients, attachments, blobs that spill
 * to a private temporary file.  See message.h. */
#include "content/message.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- blobs ---- */
void mp_blob_init(struct mp_blob *b)
{
    memset(b, 0, sizeof(*b));
    b->fd = -1;
}

void mp_blob_free(struct mp_blob *b)
{
    mp_buf_free(&b->mem);
    if (b->fd >= 0)
        close(b->fd);
    mp_blob_init(b);
}

void mp_blob_move(struct mp_blob *dst, struct mp_blob *src)
{
    mp_blob_free(dst);
    *dst = *src;
    mp_blob_init(src);
}

/* A file nobody else can open: O_TMPFILE (never has a name), else mkstemp
 * and unlink at once; mode 0600 either way. */
int mp_private_tmpfile(const char *dir)
{
    if (!dir || !*dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    size_t n = strlen(dir);
    char *path = malloc(n + sizeof("/mapiproxy-msg-XXXXXX"));
    if (!path)
        return -1;
    memcpy(path, dir, n);
    memcpy(path + n, "/mapiproxy-msg-XXXXXX", sizeof("/mapiproxy-msg-XXXXXX"));
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0) {
        unlink(path);
        if (fchmod(fd, 0600)) {
            close(fd);
            fd = -1;
        }
    }
    free(path);
    return fd;
}

static int write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *q = p;
    while (n) {
        ssize_t w = pwrite(fd, q, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        q += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int mp_blob_append(struct mp_blob *b, const void *p, size_t n, const struct mp_content_limits *l)
{
    if (!n)
        return 0;
    if (b->fd < 0 && l && l->spill_at && b->len + n > l->spill_at) {
        int fd = mp_private_tmpfile(l->tmpdir);
        if (fd < 0)
            return -1;
        if (b->mem.len && write_all(fd, b->mem.data, b->mem.len, 0)) {
            close(fd);
            return -1;
        }
        mp_buf_free(&b->mem);
        b->fd = fd;
    }
    if (b->fd >= 0) {
        if (write_all(b->fd, p, n, b->len))
            return -1;
    } else if (mp_buf_append(&b->mem, p, n)) {
        return -1;
    }
    b->len += n;
    return 0;
}

long mp_blob_read(const struct mp_blob *b, uint64_t off, void *dst, size_t n)
{
    if (off >= b->len)
        return 0;
    if (n > b->len - off)
        n = (size_t)(b->len - off);
    if (b->fd < 0) {
        memcpy(dst, b->mem.data + off, n);
        return (long)n;
    }
    for (;;) {
        ssize_t r = pread(b->fd, dst, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        return (long)r;
    }
}

int mp_blob_copy(const struct mp_blob *b, struct mp_buf *out)
{
    if (mp_buf_reserve(out, (size_t)b->len + 2))
        return -1;
    uint64_t off = 0;
    while (off < b->len) {
        long r = mp_blob_read(b, off, out->data + out->len, (size_t)(b->len - off));
        if (r <= 0)
            return -1;
        out->len += (size_t)r;
        off += (uint64_t)r;
    }
    out->data[out->len] = 0;
    out->data[out->len + 1] = 0;
    return 0;
}

/* ---- properties ---- */
static bool same_prop(uint32_t a, uint32_t b)
{
    if (a == b)
        return true;
    /* string8 and Unicode of one id are one property */
    uint16_t ta = a & 0xFFFF, tb = b & 0xFFFF;
    return (a >> 16) == (b >> 16) && (ta == 0x1E || ta == 0x1F) && (tb == 0x1E || tb == 0x1F);
}

struct mp_prop *mp_props_find(const struct mp_props *p, uint32_t tag)
{
    for (size_t i = 0; i < p->n; i++)
        if (same_prop(p->v[i].tag, tag))
            return &p->v[i];
    return NULL;
}

static void prop_clear(struct mp_prop *v)
{
    mp_blob_free(&v->v);
    if (v->name)
        free(v->name->name);
    free(v->name);
    v->name = NULL;
    v->u = 0;
}

struct mp_prop *mp_props_slot(struct mp_props *p, uint32_t tag)
{
    struct mp_prop *v = mp_props_find(p, tag);
    if (v) {
        prop_clear(v);
        v->tag = tag;
        return v;
    }
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct mp_prop *nv = realloc(p->v, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        p->v = nv;
        p->cap = cap;
    }
    v = &p->v[p->n++];
    memset(v, 0, sizeof(*v));
    mp_blob_init(&v->v);
    v->tag = tag;
    return v;
}

int mp_props_set_u(struct mp_props *p, uint32_t tag, uint64_t u)
{
    struct mp_prop *v = mp_props_slot(p, tag);
    if (!v)
        return -1;
    v->u = u;
    return 0;
}

int mp_props_set_bytes(struct mp_props *p, uint32_t tag, const void *data, size_t n,
                       const struct mp_content_limits *l)
{
    struct mp_prop *v = mp_props_slot(p, tag);
    return v ? mp_blob_append(&v->v, data, n, l) : -1;
}

void mp_props_free(struct mp_props *p)
{
    for (size_t i = 0; i < p->n; i++)
        prop_clear(&p->v[i]);
    free(p->v);
    memset(p, 0, sizeof(*p));
}

bool mp_props_u(const struct mp_props *p, uint32_t tag, uint64_t *u)
{
    struct mp_prop *v = mp_props_find(p, tag);
    if (!v || v->tag != tag)
        return false;
    *u = v->u;
    return true;
}

char *mp_propname_ascii(const uint8_t *utf16, size_t n)
{
    char *s = malloc(n / 2 + 1);
    if (!s)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; utf16 && i + 1 < n; i += 2) {
        uint16_t c = (uint16_t)(utf16[i] | utf16[i + 1] << 8);
        if (!c)
            break;
        s[k++] = c < 0x80 ? (char)c : '?';
    }
    s[k] = 0;
    return s;
}

static int put_utf8(struct mp_buf *out, uint32_t c)
{
    uint8_t s[4];
    size_t n;
    if (c < 0x80) {
        s[0] = (uint8_t)c;
        n = 1;
    } else if (c < 0x800) {
        s[0] = (uint8_t)(0xC0 | c >> 6);
        s[1] = (uint8_t)(0x80 | (c & 0x3F));
        n = 2;
    } else if (c < 0x10000) {
        s[0] = (uint8_t)(0xE0 | c >> 12);
        s[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        s[2] = (uint8_t)(0x80 | (c & 0x3F));
        n = 3;
    } else {
        s[0] = (uint8_t)(0xF0 | c >> 18);
        s[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
        s[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        s[3] = (uint8_t)(0x80 | (c & 0x3F));
        n = 4;
    }
    return mp_buf_append(out, s, n);
}

int mp_props_string(const struct mp_props *p, uint16_t id, struct mp_buf *out)
{
    const struct mp_prop *v = mp_props_find(p, (uint32_t)id << 16 | 0x1F);
    if (!v)
        return -1;
    struct mp_buf raw = {0};
    if (mp_blob_copy(&v->v, &raw)) {
        mp_buf_free(&raw);
        return -1;
    }
    int rc = 0;
    if ((v->tag & 0xFFFF) == 0x1F) {
        for (size_t i = 0; i + 1 < raw.len && !rc; i += 2) {
            uint32_t c = raw.data[i] | (uint32_t)raw.data[i + 1] << 8;
            if (!c)
                break;
            if (c >= 0xD800 && c < 0xDC00 && i + 3 < raw.len) {
                uint32_t lo = raw.data[i + 2] | (uint32_t)raw.data[i + 3] << 8;
                if (lo >= 0xDC00 && lo < 0xE000) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                    i += 2;
                }
            }
            if (c >= 0xD800 && c < 0xE000)
                c = 0xFFFD;
            rc = put_utf8(out, c);
        }
    } else {
        for (size_t i = 0; i < raw.len && raw.data[i] && !rc; i++)
            rc = put_utf8(out, raw.data[i]); /* Latin-1 view of string8 */
    }
    mp_buf_free(&raw);
    if (!rc)
        rc = mp_buf_append(out, "", 1);
    if (!rc)
        out->len--; /* NUL kept past len */
    return rc;
}

/* ---- messages ---- */
struct mp_message *mp_msg_new(void)
{
    return calloc(1, sizeof(struct mp_message));
}

void mp_msg_hold(struct mp_message *m)
{
    m->holds++;
}

void mp_msg_free(struct mp_message *m)
{
    if (!m)
        return;
    if (m->holds) {
        m->holds--;
        return;
    }
    mp_props_free(&m->props);
    for (size_t i = 0; i < m->nrcpt; i++)
        mp_props_free(&m->rcpt[i].props);
    free(m->rcpt);
    for (size_t i = 0; i < m->natt; i++) {
        mp_props_free(&m->att[i].props);
        mp_msg_free(m->att[i].embedded);
    }
    free(m->att);
    free(m);
}

struct mp_attachment *mp_msg_attachment(struct mp_message *m, uint32_t num)
{
    for (size_t i = 0; i < m->natt; i++)
        if (m->att[i].num == num)
            return &m->att[i];
    struct mp_attachment *na = realloc(m->att, (m->natt + 1) * sizeof(*na));
    if (!na)
        return NULL;
    m->att = na;
    struct mp_attachment *a = &m->att[m->natt++];
    memset(a, 0, sizeof(*a));
    a->num = num;
    return a;
}

struct mp_recipient *mp_msg_recipient(struct mp_message *m, uint32_t row_id)
{
    for (size_t i = 0; i < m->nrcpt; i++)
        if (m->rcpt[i].row_id == row_id)
            return &m->rcpt[i];
    struct mp_recipient *nr = realloc(m->rcpt, (m->nrcpt + 1) * sizeof(*nr));
    if (!nr)
        return NULL;
    m->rcpt = nr;
    struct mp_recipient *r = &m->rcpt[m->nrcpt++];
    memset(r, 0, sizeof(*r));
    r->row_id = row_id;
    return r;
}

void mp_msg_remove_recipient(struct mp_message *m, uint32_t row_id)
{
    for (size_t i = 0; i < m->nrcpt; i++)
        if (m->rcpt[i].row_id == row_id) {
            mp_props_free(&m->rcpt[i].props);
            memmove(&m->rcpt[i], &m->rcpt[i + 1], (m->nrcpt - i - 1) * sizeof(m->rcpt[0]));
            m->nrcpt--;
            return;
        }
}

void mp_msg_clear_recipients(struct mp_message *m)
{
    for (size_t i = 0; i < m->nrcpt; i++)
        mp_props_free(&m->rcpt[i].props);
    free(m->rcpt);
    m->rcpt = NULL;
    m->nrcpt = 0;
}

struct mp_message *mp_msg_top(struct mp_message *m)
{
    while (m->parent)
        m = m->parent;
    return m;
}

bool mp_msg_count(struct mp_message *m, uint64_t n, const struct mp_content_limits *l)
{
    for (struct mp_message *x = m; x; x = x->parent)
        x->content_bytes += n;
    struct mp_message *top = mp_msg_top(m);
    if (l && l->max_message && top->content_bytes > l->max_message)
        top->over_limit = true;
    return top->over_limit;
}
