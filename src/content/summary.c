/* JSON summary of a message.  See summary.h. */
#include "content/summary.h"

#include <openssl/evp.h>
#include <stdio.h>

#include "core/json.h"

static int sha256_hex(const struct mp_blob *b, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    uint8_t buf[65536];
    int rc = 0;
    for (uint64_t off = 0; off < b->len;) {
        long r = mp_blob_read(b, off, buf, sizeof(buf));
        if (r <= 0 || !EVP_DigestUpdate(ctx, buf, (size_t)r)) {
            rc = -1;
            break;
        }
        off += (uint64_t)r;
    }
    uint8_t md[32];
    unsigned mdlen = 0;
    if (!rc && !EVP_DigestFinal_ex(ctx, md, &mdlen))
        rc = -1;
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; !rc && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return rc;
}

static void str_member(struct mp_json *j, const char *key, const struct mp_props *p, uint16_t id)
{
    struct mp_buf b = {0};
    if (!mp_props_string(p, id, &b)) {
        mp_json_key(j, key);
        mp_json_strn(j, (const char *)b.data, b.len);
    }
    mp_buf_free(&b);
}

static uint64_t blob_len(const struct mp_props *p, uint32_t tag)
{
    const struct mp_prop *v = mp_props_find(p, tag);
    return v ? v->v.len : 0;
}

static int attachments(struct mp_json *j, const struct mp_message *m);

static int one(struct mp_json *j, const struct mp_message *m)
{
    int rc = 0;
    str_member(j, "subject", &m->props, 0x0037);
    mp_json_key(j, "size");
    mp_json_u64(j, m->content_bytes);
    mp_json_key(j, "sizes");
    mp_json_obj_begin(j);
    mp_json_key(j, "plain");
    mp_json_u64(j, blob_len(&m->props, MP_TAG_BODY));
    mp_json_key(j, "html");
    mp_json_u64(j, blob_len(&m->props, MP_TAG_HTML));
    mp_json_key(j, "rtf_compressed");
    mp_json_u64(j, blob_len(&m->props, MP_TAG_RTF_COMPRESSED));
    uint64_t att = 0;
    for (size_t i = 0; i < m->natt; i++)
        att += blob_len(&m->att[i].props, MP_TAG_ATTACH_DATA);
    mp_json_key(j, "attachments");
    mp_json_u64(j, att);
    mp_json_obj_end(j);
    mp_json_key(j, "recipients");
    mp_json_arr_begin(j);
    for (size_t i = 0; i < m->nrcpt; i++) {
        mp_json_obj_begin(j);
        mp_json_key(j, "type");
        mp_json_u64(j, m->rcpt[i].type);
        str_member(j, "name", &m->rcpt[i].props, 0x3001);
        str_member(j, "address", &m->rcpt[i].props, 0x39FE);
        if (!mp_props_find(&m->rcpt[i].props, MP_TAG_SMTP_ADDRESS))
            str_member(j, "address", &m->rcpt[i].props, 0x3003);
        mp_json_obj_end(j);
    }
    mp_json_arr_end(j);
    rc |= attachments(j, m);
    return rc;
}

static int attachments(struct mp_json *j, const struct mp_message *m)
{
    int rc = 0;
    mp_json_key(j, "attachments");
    mp_json_arr_begin(j);
    for (size_t i = 0; i < m->natt; i++) {
        const struct mp_attachment *a = &m->att[i];
        uint64_t method = MP_ATTACH_BY_VALUE;
        mp_props_u(&a->props, MP_TAG_ATTACH_METHOD, &method);
        mp_json_obj_begin(j);
        mp_json_key(j, "num");
        mp_json_u64(j, a->num);
        mp_json_key(j, "method");
        mp_json_u64(j, method);
        if (mp_props_find(&a->props, MP_TAG_ATTACH_LONG_FILENAME))
            str_member(j, "name", &a->props, 0x3707);
        else
            str_member(j, "name", &a->props, 0x3704);
        str_member(j, "content_type", &a->props, 0x370E);
        if (method == MP_ATTACH_BY_REFERENCE || method == 3 || method == 4) {
            str_member(j, "path", &a->props, 0x370D);
            if (!mp_props_find(&a->props, MP_TAG_ATTACH_LONG_PATHNAME))
                str_member(j, "path", &a->props, 0x3708);
        }
        const struct mp_prop *d = mp_props_find(&a->props, MP_TAG_ATTACH_DATA);
        if (d) {
            char hex[65];
            mp_json_key(j, "size");
            mp_json_u64(j, d->v.len);
            if (sha256_hex(&d->v, hex) == 0) {
                mp_json_key(j, "sha256");
                mp_json_str(j, hex);
            } else {
                rc = -1;
            }
        }
        if (a->embedded) {
            mp_json_key(j, "embedded");
            mp_json_obj_begin(j);
            rc |= one(j, a->embedded);
            mp_json_obj_end(j);
        }
        mp_json_obj_end(j);
    }
    mp_json_arr_end(j);
    return rc;
}

int mp_msg_summary(struct mp_json *j, const struct mp_message *m)
{
    return one(j, m);
}
