/* MAPI over HTTP bodies and response stream (src/transport/mapihttp):
 *  - a request and a success response body of every request type, built
 *    here from the layouts of MS-OXCMAPIHTTP 2.2.4/2.2.5, decode, map into
 *    the RPC twin's structure as expected, re-encode byte for byte, print
 *    JSON, and every truncation fails cleanly;
 *  - the twin structures are valid RPC calls: they go through the NDR
 *    codec (push, pull) and come back to the same HTTP body;
 *  - failure bodies, HasValue/flagged rows, changed structures, malformed
 *    and unsupported bodies;
 *  - the response stream parser fed in every split, and its errors.
 * `test_mapihttp --dump DIR` writes the vectors as fuzz seeds
 * (byte 0 = kind << 1 | response, then the body). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "core/arena.h"
#include "core/json.h"
#include "transport/mapihttp/body.h"
#include "transport/mapihttp/stream.h"
#include "testlib.h"

/* ---- vector builder ---- */
struct vb {
    uint8_t d[4096];
    size_t n;
};
static void u8(struct vb *v, uint8_t x)
{
    v->d[v->n++] = x;
}
static void u16(struct vb *v, uint16_t x)
{
    u8(v, (uint8_t)x);
    u8(v, (uint8_t)(x >> 8));
}
static void u32(struct vb *v, uint32_t x)
{
    u16(v, (uint16_t)x);
    u16(v, (uint16_t)(x >> 16));
}
static void raw(struct vb *v, const void *p, size_t k)
{
    memcpy(v->d + v->n, p, k);
    v->n += k;
}
static void astr(struct vb *v, const char *s)
{
    raw(v, s, strlen(s) + 1);
}
static void wstr(struct vb *v, const char *s) /* ASCII -> UTF-16LE with NUL */
{
    do
        u16(v, (uint8_t)*s);
    while (*s++);
}
static void stat(struct vb *v, uint32_t seed)
{
    for (uint32_t i = 0; i < 9; i++)
        u32(v, seed + i);
}
static void aux(struct vb *v, size_t k)
{
    u32(v, (uint32_t)k);
    for (size_t i = 0; i < k; i++)
        u8(v, (uint8_t)(0xA0 + i));
}
static void tags(struct vb *v, uint32_t n, const uint32_t *t)
{
    u32(v, n);
    for (uint32_t i = 0; i < n; i++)
        u32(v, t[i]);
}

#define PR_DISPLAY_NAME_W 0x3001001Fu
#define PR_DISPLAY_TYPE 0x39000003u
#define PR_ENTRYID 0x0FFF0102u
#define PR_PROXY_ADDRESSES 0x800F101Fu
#define PR_UNSPEC 0x3A000000u
#define PR_EMAIL_A 0x3003001Eu
#define PR_SEND_RICH 0x3A40000Bu
#define PR_GUID 0x8C6D0048u
static const uint32_t cols5[] = {PR_DISPLAY_NAME_W, PR_DISPLAY_TYPE, PR_ENTRYID, PR_PROXY_ADDRESSES,
                                 PR_UNSPEC};

/* Columns + 2 rows: one plain, one flagged (every flag kind). */
static void colrows(struct vb *v)
{
    tags(v, 5, cols5);
    u32(v, 2);
    u8(v, 0x00); /* row 1: no flags */
    u8(v, 0xFF);
    wstr(v, "Alice");
    u32(v, 0);
    u8(v, 0xFF);
    u32(v, 4);
    u32(v, 0x11223344);
    u8(v, 0xFF);
    u32(v, 2);
    u8(v, 0xFF);
    wstr(v, "SMTP:a@x");
    u8(v, 0x00); /* second proxy address absent */
    u16(v, 0x0003);
    u32(v, 7);   /* typed value of the PtypUnspecified column */
    u8(v, 0x01); /* row 2: flagged */
    u8(v, 0x00);
    u8(v, 0xFF);
    wstr(v, "Bob");
    u8(v, 0x01); /* not available */
    u8(v, 0x0A);
    u32(v, 0x80040102); /* error */
    u8(v, 0x00);
    u8(v, 0x00); /* MV value with HasValue 0 */
    u16(v, 0x001E);
    u8(v, 0x00);
    u8(v, 0xFF);
    astr(v, "x");
}

/* AddressBookPropertyValueList with every single-valued arm. */
static void pvlist(struct vb *v)
{
    u32(v, 6);
    u32(v, PR_DISPLAY_NAME_W);
    u8(v, 0xFF);
    wstr(v, "Carol");
    u32(v, PR_EMAIL_A);
    u8(v, 0xFF);
    astr(v, "/o=x/cn=carol");
    u32(v, PR_SEND_RICH);
    u8(v, 1);
    u32(v, 0x30070040); /* PtypTime */
    u32(v, 0x01020304);
    u32(v, 0x05060708);
    u32(v, PR_GUID);
    for (int i = 0; i < 16; i++)
        u8(v, (uint8_t)i);
    u32(v, 0x39050002); /* PtypInteger16 */
    u16(v, 0xFFFE);
}

/* A restriction tree: And(Or(Property(=, DisplayName, "a"), Exist), Not(Content),
 * BitMask, Size, CompareProps, Sub(Exist)). */
static void restriction(struct vb *v)
{
    u8(v, 0x00);
    u32(v, 6);
    u8(v, 0x01);
    u32(v, 2);
    u8(v, 0x04);
    u8(v, 0x04); /* relop EQ */
    u32(v, PR_DISPLAY_NAME_W);
    u8(v, 0xFF); /* value present */
    u32(v, PR_DISPLAY_NAME_W);
    u8(v, 0xFF);
    wstr(v, "a");
    u8(v, 0x08);
    u32(v, PR_EMAIL_A);
    u8(v, 0x02);
    u8(v, 0x03);
    u32(v, 0x00010002); /* FuzzyLevel */
    u32(v, PR_EMAIL_A);
    u8(v, 0xFF);
    u32(v, PR_EMAIL_A);
    u8(v, 0xFF);
    astr(v, "SMTP");
    u8(v, 0x06);
    u8(v, 0x01);
    u32(v, PR_DISPLAY_TYPE);
    u32(v, 0x00000004);
    u8(v, 0x07);
    u8(v, 0x02);
    u32(v, PR_ENTRYID);
    u32(v, 64);
    u8(v, 0x05);
    u8(v, 0x00);
    u32(v, PR_DISPLAY_NAME_W);
    u32(v, PR_EMAIL_A);
    u8(v, 0x09);
    u32(v, 0x0E12000D);
    u8(v, 0x08);
    u32(v, PR_DISPLAY_NAME_W);
}

static const uint32_t mids3[] = {0x10, 0x20, 0x30};

/* Request (resp = 0) and success response (resp = 1) of each kind. */
static void build(enum mp_mh_kind k, int resp, struct vb *v)
{
    v->n = 0;
    if (resp && k != MP_MH_PING) {
        u32(v, 0);                         /* StatusCode */
        u32(v, k == MP_MH_UNBIND ? 1 : 0); /* ErrorCode (Unbind: UnbindSuccess) */
    }
    switch (k) {
    case MP_MH_CONNECT:
        if (!resp) {
            astr(v, "/o=First Organization/ou=Exchange/cn=Recipients/cn=alice");
            u32(v, 0);
            u32(v, 1252);
            u32(v, 0x409);
            u32(v, 0x407);
        } else {
            u32(v, 60000);
            u32(v, 6);
            u32(v, 10000);
            astr(v, "/o=First Organization/ou=Exchange");
            wstr(v, "Alice Example");
        }
        aux(v, 5);
        break;
    case MP_MH_EXECUTE:
        if (!resp) {
            u32(v, 0x3);
            aux(v, 9); /* RopBufferSize + RopBuffer */
            u32(v, 0x40000);
        } else {
            u32(v, 0x0);
            aux(v, 12);
        }
        aux(v, 3);
        break;
    case MP_MH_DISCONNECT:
        aux(v, 0);
        break;
    case MP_MH_NOTIFICATIONWAIT:
        u32(v, resp ? 1 : 0);
        aux(v, 2);
        break;
    case MP_MH_PING:
        break;
    case MP_MH_BIND:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 100);
        } else {
            for (int i = 0; i < 16; i++)
                u8(v, (uint8_t)(0xC0 + i));
        }
        aux(v, 4);
        break;
    case MP_MH_UNBIND:
        if (!resp)
            u32(v, 0);
        aux(v, 0);
        break;
    case MP_MH_COMPAREMIDS:
        if (!resp) {
            u32(v, 0);
            u8(v, 0x01); /* a non-0xFF true byte, reproduced */
            stat(v, 7);
            u32(v, 0x11);
            u32(v, 0x12);
        } else {
            u32(v, 0xFFFFFFFF); /* Result -1 */
        }
        aux(v, 0);
        break;
    case MP_MH_DNTOMID:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            u32(v, 2);
            astr(v, "/o=x/cn=a");
            astr(v, "/o=x/cn=b");
        } else {
            u8(v, 0xFF);
            tags(v, 3, mids3);
        }
        aux(v, 0);
        break;
    case MP_MH_GETMATCHES:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 1);
            u8(v, 0x00); /* no MinimalIds */
            u32(v, 0);   /* InterfaceOptionFlags */
            u8(v, 0xFF);
            restriction(v);
            u8(v, 0xFF);
            for (int i = 0; i < 16; i++)
                u8(v, (uint8_t)i);
            u32(v, 0x8001);
            u32(v, 50);
            u8(v, 0xFF);
            tags(v, 5, cols5);
        } else {
            u8(v, 0xFF);
            stat(v, 2);
            u8(v, 0xFF);
            tags(v, 2, mids3);
            u8(v, 0xFF);
            colrows(v);
        }
        aux(v, 0);
        break;
    case MP_MH_GETPROPLIST:
        if (!resp) {
            u32(v, 0);
            u32(v, 0x10);
            u32(v, 1252);
        } else {
            u8(v, 0xFF);
            tags(v, 5, cols5);
        }
        aux(v, 0);
        break;
    case MP_MH_GETPROPS:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 3);
            u8(v, 0xFF);
            tags(v, 3, cols5);
        } else {
            u32(v, 1252); /* CodePage */
            u8(v, 0xFF);
            pvlist(v);
        }
        aux(v, 0);
        break;
    case MP_MH_GETSPECIALTABLE:
        if (!resp) {
            u32(v, 0x4);
            u8(v, 0xFF);
            stat(v, 4);
            u8(v, 0xFF);
            u32(v, 77);
        } else {
            u32(v, 1252);
            u8(v, 0xFF);
            u32(v, 78);
            u8(v, 0xFF);
            u32(v, 2);
            pvlist(v);
            u32(v, 1);
            u32(v, PR_ENTRYID);
            u8(v, 0xFF);
            u32(v, 0); /* empty binary */
        }
        aux(v, 0);
        break;
    case MP_MH_GETTEMPLATEINFO:
        if (!resp) {
            u32(v, 0x1);
            u32(v, 0x6);
            u8(v, 0xFF);
            astr(v, "/o=x/cn=template");
            u32(v, 1252);
            u32(v, 0x409);
        } else {
            u32(v, 1252);
            u8(v, 0xFF);
            pvlist(v);
        }
        aux(v, 0);
        break;
    case MP_MH_MODLINKATT:
        if (!resp) {
            u32(v, 0);
            u32(v, 0x8009101E);
            u32(v, 0x40);
            u8(v, 0xFF);
            u32(v, 2);
            aux(v, 3);
            aux(v, 0);
        }
        aux(v, 0);
        break;
    case MP_MH_MODPROPS:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 5);
            u8(v, 0x00); /* no tags to remove */
            u8(v, 0xFF);
            pvlist(v);
        }
        aux(v, 0);
        break;
    case MP_MH_QUERYCOLUMNS:
        if (!resp) {
            u32(v, 0);
            u32(v, 0x1);
        } else {
            u8(v, 0xFF);
            tags(v, 5, cols5);
        }
        aux(v, 0);
        break;
    case MP_MH_QUERYROWS:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 6);
            tags(v, 3, mids3); /* ExplicitTable */
            u32(v, 10);
            u8(v, 0xFF);
            tags(v, 5, cols5);
        } else {
            u8(v, 0xFF);
            stat(v, 7);
            u8(v, 0xFF);
            colrows(v);
        }
        aux(v, 0);
        break;
    case MP_MH_RESOLVENAMES:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 8);
            u8(v, 0xFF);
            tags(v, 4, cols5);
            u8(v, 0xFF);
            u32(v, 2);
            wstr(v, "alice");
            wstr(v, "bob");
        } else {
            u32(v, 1252);
            u8(v, 0xFF);
            tags(v, 2, mids3);
            u8(v, 0xFF);
            colrows(v);
        }
        aux(v, 0);
        break;
    case MP_MH_RESORTRESTRICTION:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 9);
            u8(v, 0xFF);
            tags(v, 3, mids3);
        } else {
            u8(v, 0xFF);
            stat(v, 10);
            u8(v, 0xFF);
            tags(v, 3, mids3);
        }
        aux(v, 0);
        break;
    case MP_MH_SEEKENTRIES:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 11);
            u8(v, 0xFF);
            u32(v, PR_DISPLAY_NAME_W);
            u8(v, 0xFF);
            wstr(v, "M");
            u8(v, 0x00); /* no explicit table */
            u8(v, 0xFF);
            tags(v, 5, cols5);
        } else {
            u8(v, 0xFF);
            stat(v, 12);
            u8(v, 0xFF);
            colrows(v);
        }
        aux(v, 0);
        break;
    case MP_MH_UPDATESTAT:
        if (!resp) {
            u32(v, 0);
            u8(v, 0xFF);
            stat(v, 13);
            u8(v, 0xFF); /* DeltaRequested */
        } else {
            u8(v, 0xFF);
            stat(v, 14);
            u8(v, 0xFF);
            u32(v, 0xFFFFFFFD);
        }
        aux(v, 0);
        break;
    case MP_MH_GETMAILBOXURL:
    case MP_MH_GETADDRESSBOOKURL:
        if (!resp) {
            u32(v, 0);
            wstr(v, "/o=First Organization/ou=Exchange/cn=Configuration/cn=Servers/cn=mbx");
        } else {
            wstr(v, "https://mail.example.test/mapi/emsmdb/?MailboxId=x@example.test");
        }
        aux(v, 0);
        break;
    default:
        break;
    }
}

static struct mp_arena A;

/* decode + exact + encode + JSON + truncations; returns the body. */
static int roundtrip(enum mp_mh_kind k, int resp, const struct vb *v, struct mp_mh_body *body)
{
    int rc = mp_mh_decode(k, resp, v->d, v->n, body, &A);
    if (rc != MP_MH_OK) {
        fprintf(stderr, "%s %s: decode rc %d\n", mp_mh_kind_info(k)->name,
                resp ? "response" : "request", rc);
        return -1;
    }
    int bad = 0;
    if (!body->exact) {
        fprintf(stderr, "%s %s: not exact\n", mp_mh_kind_info(k)->name, resp ? "resp" : "req");
        bad = 1;
    }
    struct mp_buf b = {0};
    if (mp_mh_encode(&b, body) || b.len != v->n || (v->n && memcmp(b.data, v->d, v->n))) {
        fprintf(stderr, "%s %s: re-encoding differs (%zu vs %zu bytes)\n", mp_mh_kind_info(k)->name,
                resp ? "resp" : "req", b.len, v->n);
        bad = 1;
    }
    mp_buf_free(&b);
    struct mp_buf jb = {0};
    struct mp_json j;
    mp_json_init(&j, &jb);
    mp_mh_print(&j, body);
    if (j.err || jb.len < 10 || jb.data[0] != '{' || jb.data[jb.len - 1] != '}')
        bad = 1;
    mp_buf_free(&jb);
    if (k != MP_MH_PING) {
        for (size_t cut = 0; cut < v->n; cut++) {
            struct mp_mh_body t;
            if (mp_mh_decode(k, resp, v->d, cut, &t, &A) != MP_MH_EMALFORMED) {
                fprintf(stderr, "%s %s: truncation at %zu accepted\n", mp_mh_kind_info(k)->name,
                        resp ? "resp" : "req", cut);
                bad = 1;
                break;
            }
        }
    }
    return bad ? -1 : 0;
}

/* The twin structure is a valid RPC call: NDR push, pull, then the HTTP
 * body from the pulled structure is the original. */
static int through_ndr(const struct mp_mh_body *body, const struct vb *v)
{
    const struct mp_call_codec *cc = body->twin;
    if (!cc)
        return 0;
    struct mp_buf stub = {0}, again = {0};
    int rc = -1;
    if ((body->response ? cc->push_out : cc->push_in)(&stub, body->call))
        goto out;
    void *st = mp_arena_alloc(&A, body->response ? cc->out_size : cc->in_size);
    if ((body->response ? cc->pull_out : cc->pull_in)(stub.data, stub.len, st, &A))
        goto out;
    struct mp_mh_body b2 = *body;
    b2.call = st;
    if (mp_mh_encode(&again, &b2) || again.len != v->n || (v->n && memcmp(again.data, v->d, v->n)))
        goto out;
    rc = 0;
out:
    if (rc)
        fprintf(stderr, "%s %s: NDR twin round trip failed\n", mp_mh_kind_info(body->kind)->name,
                body->response ? "resp" : "req");
    mp_buf_free(&stub);
    mp_buf_free(&again);
    return rc;
}

static int dump(const char *dir)
{
    for (int k = 0; k < MP_MH_N_KINDS; k++)
        for (int r = 0; r < 2; r++) {
            struct vb v;
            build(k, r, &v);
            char path[512];
            snprintf(path, sizeof path, "%s/%s-%s", dir, mp_mh_kind_info(k)->name,
                     r ? "response" : "request");
            FILE *f = fopen(path, "wb");
            if (!f)
                return 1;
            uint8_t b0 = (uint8_t)(k << 1 | r);
            fwrite(&b0, 1, 1, f);
            fwrite(v.d, 1, v.n, f);
            fclose(f);
        }
    return 0;
}

static void test_all_kinds(void)
{
    for (int k = 0; k < MP_MH_N_KINDS; k++)
        for (int r = 0; r < 2; r++) {
            struct vb v;
            struct mp_mh_body body;
            build(k, r, &v);
            CHECK(roundtrip(k, r, &v, &body) == 0);
            CHECK(through_ndr(&body, &v) == 0);
            mp_arena_reset(&A);
        }
}

static void test_mappings(void)
{
    struct vb v;
    struct mp_mh_body b;

    build(MP_MH_CONNECT, 0, &v);
    CHECK(mp_mh_decode(MP_MH_CONNECT, 0, v.d, v.n, &b, &A) == 0);
    const struct emsmdb_EcDoConnectEx_in *ci = b.call;
    CHECK(!strcmp(b.twin->name, "EcDoConnectEx"));
    CHECK(!strcmp(ci->szUserDN, "/o=First Organization/ou=Exchange/cn=Recipients/cn=alice"));
    CHECK(ci->ulCpid == 1252 && ci->ulLcidSort == 0x409 && ci->ulLcidString == 0x407);
    CHECK(ci->cbAuxIn == 5 && ci->rgbAuxIn[0] == 0xA0);

    build(MP_MH_CONNECT, 1, &v);
    CHECK(mp_mh_decode(MP_MH_CONNECT, 1, v.d, v.n, &b, &A) == 0);
    const struct emsmdb_EcDoConnectEx_out *co = b.call;
    CHECK(co->pcmsPollsMax == 60000 && co->pcRetry == 6 && co->pcmsRetryDelay == 10000);
    CHECK(!strcmp(co->szDisplayName, "Alice Example"));
    CHECK(co->pcbAuxOut == 5);

    build(MP_MH_EXECUTE, 0, &v);
    CHECK(mp_mh_decode(MP_MH_EXECUTE, 0, v.d, v.n, &b, &A) == 0);
    const struct emsmdb_EcDoRpcExt2_in *ei = b.call;
    CHECK(!strcmp(b.twin->name, "EcDoRpcExt2"));
    CHECK(ei->pulFlags == 3 && ei->cbIn == 9 && ei->rgbIn[8] == 0xA8 && ei->pcbOut == 0x40000);
    CHECK(ei->cbAuxIn == 3);

    build(MP_MH_QUERYROWS, 1, &v);
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, v.d, v.n, &b, &A) == 0);
    const struct nspi_NspiQueryRows_out *qo = b.call;
    CHECK(qo->pStat.SortType == 7 && qo->pStat.SortLocale == 15);
    CHECK(qo->ppRows && qo->ppRows->cRows == 2);
    if (qo->ppRows && qo->ppRows->cRows == 2) {
        const struct nspi_PropertyRow_r *r0 = &qo->ppRows->aRow[0], *r1 = &qo->ppRows->aRow[1];
        CHECK(r0->cValues == 5 && r0->lpProps[0].ulPropTag == PR_DISPLAY_NAME_W);
        CHECK(r0->lpProps[0].Value.lpszW[0] == 'A' && r0->lpProps[0].Value.lpszW[5] == 0);
        CHECK(r0->lpProps[2].Value.bin.cb == 4);
        CHECK(r0->lpProps[3].Value.MVszW.cValues == 2 &&
              r0->lpProps[3].Value.MVszW.lppszW[1] == NULL);
        CHECK(r0->lpProps[4].ulPropTag == 0x3A000003 && r0->lpProps[4].Value.l == 7);
        CHECK(r1->lpProps[1].ulPropTag == 0x3900000A &&
              (uint32_t)r1->lpProps[1].Value.err == 0x8004010F);
        CHECK(r1->lpProps[2].ulPropTag == 0x0FFF000A &&
              (uint32_t)r1->lpProps[2].Value.err == 0x80040102);
        CHECK(r1->lpProps[3].ulPropTag == PR_PROXY_ADDRESSES &&
              r1->lpProps[3].Value.MVszW.lppszW == NULL);
        CHECK(r1->lpProps[4].ulPropTag == 0x3A00001E && !strcmp(r1->lpProps[4].Value.lpszA, "x"));
    }

    build(MP_MH_GETMATCHES, 0, &v);
    CHECK(mp_mh_decode(MP_MH_GETMATCHES, 0, v.d, v.n, &b, &A) == 0);
    const struct nspi_NspiGetMatches_in *gi = b.call;
    CHECK(gi->pReserved == NULL && gi->Filter && gi->Filter->rt == 0 &&
          gi->Filter->res.resAnd.cRes == 6);
    CHECK(gi->lpPropName && gi->lpPropName->lID == 0x8001 && gi->ulRequested == 50);
    CHECK(gi->pPropTags && gi->pPropTags->cValues == 5);

    build(MP_MH_RESOLVENAMES, 0, &v);
    CHECK(mp_mh_decode(MP_MH_RESOLVENAMES, 0, v.d, v.n, &b, &A) == 0);
    const struct nspi_NspiResolveNamesW_in *ri = b.call;
    CHECK(!strcmp(b.twin->name, "NspiResolveNamesW") && ri->paWStr.Count == 2 &&
          ri->paWStr.Strings[1][0] == 'b');

    build(MP_MH_UPDATESTAT, 0, &v);
    CHECK(mp_mh_decode(MP_MH_UPDATESTAT, 0, v.d, v.n, &b, &A) == 0);
    CHECK(((struct nspi_NspiUpdateStat_in *)b.call)->plDelta != NULL);

    build(MP_MH_GETPROPS, 1, &v);
    CHECK(mp_mh_decode(MP_MH_GETPROPS, 1, v.d, v.n, &b, &A) == 0);
    const struct nspi_NspiGetProps_out *po = b.call;
    CHECK(b.side.codepage == 1252 && po->ppRows && po->ppRows->cValues == 6);
    CHECK(po->ppRows && po->ppRows->lpProps[5].Value.i == -2 &&
          po->ppRows->lpProps[2].Value.b == 1);

    build(MP_MH_COMPAREMIDS, 1, &v);
    CHECK(mp_mh_decode(MP_MH_COMPAREMIDS, 1, v.d, v.n, &b, &A) == 0);
    CHECK(((struct nspi_NspiCompareMIds_out *)b.call)->plResult == -1);
    mp_arena_reset(&A);
}

static void test_absent_and_failure(void)
{
    struct vb v;
    struct mp_mh_body b;
    /* HasState 0: flattened pStat stays zero, side remembers */
    v.n = 0;
    u32(&v, 0);
    u8(&v, 0);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_BIND, 0, v.d, v.n, &b, &A) == 0);
    CHECK(b.side.absent == MP_MH_ABSENT_STATE && b.exact);
    /* a module adds a state: it appears on the wire */
    ((struct nspi_NspiBind_in *)b.call)->pStat.CodePage = 1252;
    b.side.absent = 0;
    struct mp_buf o = {0};
    CHECK(mp_mh_write(&o, &b, true) == 0 && o.len == v.n + 36);
    struct mp_mh_body b2;
    CHECK(mp_mh_decode(MP_MH_BIND, 0, o.data, o.len, &b2, &A) == 0 &&
          ((struct nspi_NspiBind_in *)b2.call)->pStat.CodePage == 1252);
    mp_buf_free(&o);

    /* failure response: StatusCode, aux only */
    v.n = 0;
    u32(&v, 0x80070057);
    aux(&v, 2);
    for (int k = 0; k < MP_MH_N_KINDS; k++) {
        if (k == MP_MH_PING)
            continue;
        CHECK(mp_mh_decode(k, 1, v.d, v.n, &b, &A) == 0 && b.side.status_code == 0x80070057 &&
              b.side.aux_len == 2 && b.exact);
    }
    /* GetProps with HasPropertyValues 0 after an error */
    v.n = 0;
    u32(&v, 0);
    u32(&v, 0x8004010F);
    u32(&v, 1252);
    u8(&v, 0);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_GETPROPS, 1, v.d, v.n, &b, &A) == 0 &&
          ((struct nspi_NspiGetProps_out *)b.call)->ppRows == NULL);
    mp_arena_reset(&A);
}

static void test_changed(void)
{
    struct vb v;
    struct mp_mh_body b, b2;
    build(MP_MH_QUERYROWS, 1, &v);
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, v.d, v.n, &b, &A) == 0);
    struct nspi_NspiQueryRows_out *qo = b.call;
    /* rewrite a display name, make row 1's not-available value an error */
    static uint16_t zed[] = {'Z', 'e', 'd', 0};
    qo->ppRows->aRow[0].lpProps[0].Value.lpszW = zed;
    qo->ppRows->aRow[1].lpProps[1].Value.err = (int32_t)0x80040111;
    struct mp_buf o = {0};
    CHECK(mp_mh_write(&o, &b, true) == 0);
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, o.data, o.len, &b2, &A) == 0);
    const struct nspi_NspiQueryRows_out *q2 = b2.call;
    CHECK(q2->ppRows->aRow[0].lpProps[0].Value.lpszW[0] == 'Z');
    CHECK((uint32_t)q2->ppRows->aRow[1].lpProps[1].Value.err == 0x80040111);
    mp_buf_free(&o);
    /* unchanged write is the original */
    CHECK(mp_mh_write(&o, &b, false) == 0 && o.len == v.n && !memcmp(o.data, v.d, v.n));
    mp_buf_free(&o);

    /* rows that do not fit one column set do not encode */
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, v.d, v.n, &b, &A) == 0);
    qo = b.call;
    qo->ppRows->aRow[1].cValues = 4;
    CHECK(mp_mh_encode(&o, &b) == -1 && o.len == 0);
    qo->ppRows->aRow[1].cValues = 5;
    qo->ppRows->aRow[1].lpProps = NULL;
    CHECK(mp_mh_encode(&o, &b) == -1 && o.len == 0);
    /* a row set with no rows keeps its columns */
    v.n = 0;
    u32(&v, 0);
    u32(&v, 0);
    u8(&v, 0xFF);
    stat(&v, 1);
    u8(&v, 0xFF);
    tags(&v, 5, cols5);
    u32(&v, 0);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, v.d, v.n, &b, &A) == 0 && b.exact);
    /* built from scratch (no side): the canonical encoding */
    CHECK(mp_mh_body_new(&b, MP_MH_EXECUTE, 0, &A) == 0);
    struct emsmdb_EcDoRpcExt2_in *ei = b.call;
    uint8_t rops[3] = {1, 2, 3};
    ei->rgbIn = rops;
    ei->cbIn = 3;
    ei->pcbOut = 0x8000;
    CHECK(mp_mh_encode(&o, &b) == 0 && o.len == 4 + 4 + 3 + 4 + 4);
    mp_buf_free(&o);
    mp_arena_reset(&A);
}

static void test_malformed(void)
{
    struct vb v, w;
    struct mp_mh_body b;
    /* trailing byte */
    build(MP_MH_UNBIND, 0, &v);
    v.d[v.n++] = 0;
    CHECK(mp_mh_decode(MP_MH_UNBIND, 0, v.d, v.n, &b, &A) == MP_MH_EMALFORMED);
    CHECK(mp_mh_request_error_code(MP_MH_EMALFORMED) == 12);
    CHECK(!strcmp(mp_mh_response_code_name(12), "Invalid Request Body"));
    /* a row flag of 2 */
    build(MP_MH_QUERYROWS, 1, &v);
    size_t rowflag = 4 + 4 + 1 + 36 + 1 + 4 + 20 + 4;
    CHECK(v.d[rowflag] == 0);
    w = v;
    w.d[rowflag] = 2;
    CHECK(mp_mh_decode(MP_MH_QUERYROWS, 1, w.d, w.n, &b, &A) == MP_MH_EMALFORMED);
    /* an aux size beyond the body */
    build(MP_MH_DISCONNECT, 0, &v);
    v.d[0] = 0xFF;
    CHECK(mp_mh_decode(MP_MH_DISCONNECT, 0, v.d, v.n, &b, &A) == MP_MH_EMALFORMED);
    /* a huge count */
    v.n = 0;
    u32(&v, 0);
    u32(&v, 0);
    u8(&v, 0xFF);
    u32(&v, 0x7FFFFFFF);
    CHECK(mp_mh_decode(MP_MH_DNTOMID, 1, v.d, v.n, &b, &A) == MP_MH_EMALFORMED);
    /* a restriction nested 40 deep */
    v.n = 0;
    u32(&v, 0);
    u8(&v, 0);
    u8(&v, 0);
    u32(&v, 0);
    u8(&v, 0xFF);
    for (int i = 0; i < 40; i++)
        u8(&v, 0x02);
    u8(&v, 0x08);
    u32(&v, 1);
    u8(&v, 0);
    u32(&v, 0);
    u8(&v, 0);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_GETMATCHES, 0, v.d, v.n, &b, &A) == MP_MH_EMALFORMED);
    /* unsupported: a PtypInteger64 value, a comment restriction */
    v.n = 0;
    u32(&v, 0);
    u32(&v, 0);
    u32(&v, 1252);
    u8(&v, 0xFF);
    u32(&v, 1);
    u32(&v, 0x66440014);
    u32(&v, 1);
    u32(&v, 2);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_GETPROPS, 1, v.d, v.n, &b, &A) == MP_MH_EUNSUPPORTED);
    CHECK(mp_mh_request_error_code(MP_MH_EUNSUPPORTED) == 0);
    /* a string without its NUL, an odd-length UTF-16 string */
    v.n = 0;
    u32(&v, 0);
    raw(&v, "abc", 3);
    CHECK(mp_mh_decode(MP_MH_GETMAILBOXURL, 0, v.d, v.n, &b, &A) == MP_MH_EMALFORMED);
    CHECK(mp_mh_kind_lookup("getmatches") == MP_MH_GETMATCHES && mp_mh_kind_lookup("Nope") == -1);
    CHECK(mp_mh_twin(MP_MH_PING) == NULL && mp_mh_twin(MP_MH_BIND) != NULL);
    mp_arena_reset(&A);
}

/* Restriction values as MS-OXCDATA writes them (no HasValue byte before the
 * TaggedValue); PtypNull and PtypObject values (no bytes). */
static void test_value_forms(void)
{
    struct vb v;
    struct mp_mh_body b;
    v.n = 0;
    u32(&v, 0);
    u8(&v, 0);
    u8(&v, 0);
    u32(&v, 0);
    u8(&v, 0xFF);
    u8(&v, 0x04); /* property restriction, bare tagged value */
    u8(&v, 0x04);
    u32(&v, PR_DISPLAY_NAME_W);
    u32(&v, PR_DISPLAY_NAME_W);
    u8(&v, 0xFF);
    wstr(&v, "bo");
    u8(&v, 0);
    u32(&v, 10);
    u8(&v, 0);
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_GETMATCHES, 0, v.d, v.n, &b, &A) == 0 && b.exact &&
          b.side.bare_values);
    const struct nspi_NspiGetMatches_in *gi = b.call;
    CHECK(gi->Filter && gi->Filter->rt == 4 && gi->Filter->res.resProperty.lpProp &&
          gi->Filter->res.resProperty.lpProp->Value.lpszW[1] == 'o');
    struct mp_buf o = {0};
    CHECK(mp_mh_encode(&o, &b) == 0 && o.len == v.n && !memcmp(o.data, v.d, v.n));
    mp_buf_free(&o);
    /* built from code: the HasValue form */
    b.side.bare_values = false;
    CHECK(mp_mh_encode(&o, &b) == 0 && o.len == v.n + 1);
    mp_buf_free(&o);

    v.n = 0;
    u32(&v, 0);
    u32(&v, 0);
    u32(&v, 1252);
    u8(&v, 0xFF);
    u32(&v, 2);
    u32(&v, 0x66000001); /* PtypNull */
    u32(&v, 0x3602000D); /* PtypObject */
    aux(&v, 0);
    CHECK(mp_mh_decode(MP_MH_GETPROPS, 1, v.d, v.n, &b, &A) == 0 && b.exact);
    mp_arena_reset(&A);
}

static void test_stream(void)
{
    static const uint8_t body[] = {0, 0, 0, 0, 1, 2, 3, '\r', '\n', 0xFF};
    struct mp_buf s = {0};
    CHECK(mp_mh_stream_build(&s, 2, 0, 15, "Sat, 28 Nov 2026 21:00:00 GMT", body, sizeof body) ==
          0);
    const char *head = "PROCESSING\r\nPENDING\r\nPENDING\r\nDONE\r\nX-ResponseCode: 0\r\n"
                       "X-ElapsedTime: 15\r\nX-StartTime: Sat, 28 Nov 2026 21:00:00 GMT\r\n\r\n";
    CHECK(s.len == strlen(head) + sizeof body && !memcmp(s.data, head, strlen(head)));
    /* every split into two pieces, and byte by byte */
    int ok = 1;
    for (size_t cut = 0; cut <= s.len; cut++) {
        struct mp_mh_stream st;
        mp_mh_stream_init(&st);
        if (mp_mh_stream_feed(&st, s.data, cut) ||
            mp_mh_stream_feed(&st, s.data + cut, s.len - cut))
            ok = 0;
        if (st.state != MP_MHS_BODY || st.n_processing != 1 || st.n_pending != 2 ||
            !st.have_response_code || st.response_code != 0 || st.elapsed_time != 15 ||
            strcmp(st.start_time, "Sat, 28 Nov 2026 21:00:00 GMT") || st.body.len != sizeof body ||
            memcmp(st.body.data, body, sizeof body))
            ok = 0;
        mp_mh_stream_free(&st);
    }
    CHECK(ok);
    struct mp_mh_stream st;
    mp_mh_stream_init(&st);
    for (size_t i = 0; i < s.len; i++)
        CHECK(mp_mh_stream_feed(&st, s.data + i, 1) == 0);
    CHECK(st.state == MP_MHS_BODY && st.body.len == sizeof body);
    mp_mh_stream_free(&st);
    mp_buf_free(&s);

    static const char *const bad[] = {
        "PROCESSING\r\nHELLO\r\n",        "PROCESSING\nDONE\r\n",
        "DONE\r\nX-ResponseCode: 1x\r\n", "DONE\r\nX-ElapsedTime: 99999999999999999999999\r\n",
        "DONE\r\nno colon here\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp_mh_stream_init(&st);
        CHECK(mp_mh_stream_feed(&st, (const uint8_t *)bad[i], strlen(bad[i])) == -1 &&
              st.state == MP_MHS_ERROR && st.error);
        CHECK(mp_mh_stream_feed(&st, (const uint8_t *)"x", 1) == -1);
        mp_mh_stream_free(&st);
    }
    /* a line longer than the limit */
    mp_mh_stream_init(&st);
    char longl[400];
    memset(longl, 'P', sizeof longl);
    CHECK(mp_mh_stream_feed(&st, (const uint8_t *)longl, sizeof longl) == -1);
    mp_mh_stream_free(&st);
    /* a failure: X-ResponseCode 12 with a diagnostic text body */
    mp_buf_free(&s);
    CHECK(mp_mh_stream_build(&s, 0, 12, 0, NULL, (const uint8_t *)"bad", 3) == 0);
    mp_mh_stream_init(&st);
    CHECK(mp_mh_stream_feed(&st, s.data, s.len) == 0 && st.response_code == 12 &&
          st.start_time[0] == 0 && st.body.len == 3);
    mp_mh_stream_free(&st);
    mp_buf_free(&s);

    /* A rebuilt answer keeps the upstream's headers after DONE: gromox sends
     * X-ResponseCode only in the HTTP head (and X-ElapsedTime, X-StartTime
     * after DONE), Exchange and the lab send it in both places. */
    static const char gx[] = "PROCESSING\r\nDONE\r\nX-ElapsedTime: 7\r\n"
                             "X-StartTime: Fri, 04 Dec 2026 18:00:00 GMT\r\n\r\nBODY";
    mp_mh_stream_init(&st);
    CHECK(mp_mh_stream_feed(&st, (const uint8_t *)gx, strlen(gx)) == 0 && !st.have_response_code);
    CHECK(mp_mh_stream_put_headers_like(&s, &st, 0) == 0);
    const char *want = "X-ElapsedTime: 7\r\nX-StartTime: Fri, 04 Dec 2026 18:00:00 GMT\r\n\r\n";
    CHECK(s.len == strlen(want) && !memcmp(s.data, want, s.len));
    mp_mh_stream_free(&st);
    mp_buf_free(&s);
    static const char ex[] = "PROCESSING\r\nDONE\r\nX-ResponseCode: 0\r\n\r\nBODY";
    mp_mh_stream_init(&st);
    CHECK(mp_mh_stream_feed(&st, (const uint8_t *)ex, strlen(ex)) == 0);
    CHECK(mp_mh_stream_put_headers_like(&s, &st, 0) == 0);
    CHECK(s.len == strlen("X-ResponseCode: 0\r\n\r\n") &&
          !memcmp(s.data, "X-ResponseCode: 0\r\n\r\n", s.len));
    mp_mh_stream_free(&st);
    mp_buf_free(&s);
    /* no upstream stream (the proxy answered everything): the full form */
    mp_mh_stream_init(&st);
    CHECK(mp_mh_stream_put_headers_like(&s, &st, 0) == 0);
    CHECK(s.len == strlen("X-ResponseCode: 0\r\nX-ElapsedTime: 0\r\n\r\n"));
    mp_mh_stream_free(&st);
    mp_buf_free(&s);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--dump"))
        return dump(argv[2]);
    mp_arena_init(&A);
    test_all_kinds();
    test_mappings();
    test_absent_and_failure();
    test_changed();
    test_malformed();
    test_value_forms();
    test_stream();
    mp_arena_free(&A);
    TEST_DONE();
}
