/* Shared bits of the relay benchmark tools (bench/responder.c, bench/loadgen.c).
 * Header-only: both tools are single files linked against build/libmp.a. */
#ifndef MP_BENCH_COMMON_H
#define MP_BENCH_COMMON_H
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "dcerpc/pdu.h"
#include "xca/lz77.h"

/* EMSMDB a4f1db00-ca47-1067-b31f-00dd010662da v0.81 (wire form of the UUID). */
static const struct mp_syntax bench_emsmdb = {{0x00, 0xdb, 0xf1, 0xa4, 0x47, 0xca, 0x67, 0x10, 0xb3,
                                               0x1f, 0x00, 0xdd, 0x01, 0x06, 0x62, 0xda},
                                              0,
                                              81};

#define BENCH_OPNUM 11       /* EcDoRpcExt2 */
#define BENCH_MAX_FRAG 5840  /* what both tools offer */
#define BENCH_REQ_STUB 2048  /* request stub (rgbIn ~2 KB) */
#define BENCH_RESP_STUB 8192 /* response stub (rgbOut ~8 KB, "compressed") */

static inline uint64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit. */
static inline long bench_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        return (long)rl.rlim_cur;
    }
    return -1;
}

/* A deterministic pseudo-random byte pattern (xorshift), looks like
 * compressed data: nothing on the path may shortcut on zeros. */
static inline void bench_fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/* RPC_HEADER_EXT (MS-OXCRPC 2.2.2.1): Version 0, Flags, Size, SizeActual. */
static inline void bench_put_header_ext(uint8_t *p, uint16_t flags, uint16_t size,
                                        uint16_t size_actual)
{
    mp_put16(p, 0);
    mp_put16(p + 2, flags);
    mp_put16(p + 4, size);
    mp_put16(p + 6, size_actual);
}

#define BENCH_EXT_COMPRESSED 0x0001
#define BENCH_EXT_LAST 0x0004
#define BENCH_ROP_READ_STREAM 0x2C
#define BENCH_ROP_WRITE_STREAM 0x2D

/* Mail-like text that LZ77 compresses about 2:1: words drawn from a small
 * vocabulary with numbers, deterministic. */
static inline void bench_text(uint8_t *p, size_t n, uint32_t seed)
{
    static const char *const words[] = {
        "the",      "meeting",   "Exchange", "server",  "mailbox",  "please",   "review",
        "attached", "quarterly", "report",   "and",     "send",     "comments", "before",
        "Friday",   "regards",   "calendar", "folder",  "message",  "subject",  "thanks",
        "project",  "budget",    "team",     "update",  "schedule", "with",     "from",
        "about",    "customer",  "invoice",  "contract"};
    uint32_t x = seed ? seed : 1;
    size_t i = 0;
    while (i < n) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        char tok[24];
        int k = (x & 7) == 0 ? snprintf(tok, sizeof(tok), "%u ", (x >> 8) % 100000)
                             : snprintf(tok, sizeof(tok), "%s%c", words[(x >> 3) & 31],
                                        (x & 0x300) == 0 ? '\n' : ' ');
        for (int j = 0; j < k && i < n; j++)
            p[i++] = (uint8_t)tok[j];
    }
}

/* A ROP buffer (MS-OXCRPC 3.1.4.2.1.1): RopSize, one ROP carrying `data_len`
 * bytes of text, a one-entry server object handle table.  Response: a
 * RopReadStream response (RopId, InputHandleIndex, ReturnValue, DataSize,
 * Data); request: a RopWriteStream request (RopId, LogonId,
 * InputHandleIndex, DataSize, Data).  Returns the length written to p
 * (room: data_len + 16). */
static inline size_t bench_rop_buffer(uint8_t *p, size_t data_len, bool response, uint32_t seed)
{
    size_t rop = response ? 8 : 5, n = 0;
    mp_put16(p, (uint16_t)(2 + rop + data_len)), n += 2;
    if (response) {
        p[n++] = BENCH_ROP_READ_STREAM;
        p[n++] = 0;                 /* InputHandleIndex */
        mp_put32(p + n, 0), n += 4; /* ReturnValue: success */
    } else {
        p[n++] = BENCH_ROP_WRITE_STREAM;
        p[n++] = 0; /* LogonId */
        p[n++] = 0; /* InputHandleIndex */
    }
    mp_put16(p + n, (uint16_t)data_len), n += 2;
    bench_text(p + n, data_len, seed);
    n += data_len;
    mp_put32(p + n, 0x00000001), n += 4; /* server object handle table */
    return n;
}

/* The rgbIn/rgbOut content Outlook and Exchange exchange: an RPC_HEADER_EXT
 * (Compressed|Last) and an LZ77-compressed (MS-XCA Plain LZ77, the repo's
 * own encoder) ROP buffer, as large as fits in `target` bytes in all.  The
 * result decompresses to a valid ROP buffer, so a decoding relay does real
 * work on it.  Returns the length written to out (cap >= target), or 0. */
static inline size_t bench_rpc_ext(uint8_t *out, size_t target, bool response, uint32_t seed)
{
    size_t lo = 16, hi = 60000, best = 0, best_raw = 0;
    uint8_t *raw = malloc(hi + 32), *z = malloc(mp_lz77_compress_bound(hi + 32));
    if (!raw || !z || target < 64) {
        free(raw);
        free(z);
        return 0;
    }
    while (lo <= hi) { /* the largest payload whose compressed form fits */
        size_t mid = (lo + hi) / 2;
        size_t n = bench_rop_buffer(raw, mid, response, seed);
        ssize_t c = mp_lz77_compress(raw, n, z, mp_lz77_compress_bound(n));
        if (c > 0 && (size_t)c + 8 <= target) {
            best = mid;
            best_raw = n;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    size_t len = 0;
    if (best) {
        size_t n = bench_rop_buffer(raw, best, response, seed);
        ssize_t c = mp_lz77_compress(raw, n, z, mp_lz77_compress_bound(n));
        uint8_t *check = malloc(n);
        if (c > 0 && check && mp_lz77_decompress(z, (size_t)c, check, n) == (ssize_t)n &&
            !memcmp(check, raw, n) && best_raw <= 0xffff) {
            bench_put_header_ext(out, BENCH_EXT_COMPRESSED | BENCH_EXT_LAST, (uint16_t)c,
                                 (uint16_t)n);
            memcpy(out + 8, z, (size_t)c);
            len = 8 + (size_t)c;
        }
        free(check);
    }
    free(raw);
    free(z);
    return len;
}
/* ---- make bench-av: a message upload in two EcDoRpcExt2 calls, as
 * Outlook makes it (the message created in one ROP buffer, saved in a
 * later one, so the proxy's message event completes at the save's request
 * and a module can still stop it) ----
 * Part 0: RopCreateMessage (folder handle index 0 -> message at index 1),
 * RopSetProperties (0x0A: PidTagMessageClass, PidTagSubject, PidTagBody as
 * PtypString); handle table [folder, 0xFFFFFFFF].  Part 1:
 * RopSaveChangesMessage (0x0C), RopRelease (0x01); handle table [folder,
 * BENCH_UPLOAD_HANDLE], the handle `responder -u` gives every new message
 * (one message at a time per session).  Part 0's subject and body carry
 * BENCH_UPLOAD_DIGITS ASCII digits (UTF-16) at the offsets returned in
 * dig[0], dig[1] (relative to p), which the load generator rewrites per
 * message so that no two are alike (clamd caches clean results by
 * content).  Returns the length, or 0 (cap). */
#define BENCH_UPLOAD_DIGITS 8
#define BENCH_UPLOAD_HANDLE 0x00010001u
#define BENCH_ROP_CREATE_MESSAGE 0x06
#define BENCH_ROP_SET_PROPERTIES 0x0A
#define BENCH_ROP_SAVE_CHANGES_MESSAGE 0x0C
#define BENCH_ROP_RELEASE 0x01

static inline size_t bench_put_utf16(uint8_t *p, const char *s)
{
    size_t n = 0;
    for (; *s; s++, n += 2)
        p[n] = (uint8_t)*s, p[n + 1] = 0;
    p[n] = p[n + 1] = 0;
    return n + 2;
}

static inline size_t bench_upload_rops(uint8_t *p, size_t cap, int part, size_t body_len,
                                       size_t dig[2])
{
    if (cap < 2 * body_len + 400)
        return 0;
    size_t n = 2; /* RopSize, set at the end */
    if (part == 0) {
        p[n++] = BENCH_ROP_CREATE_MESSAGE;
        p[n++] = 0;                      /* LogonId */
        p[n++] = 0;                      /* InputHandleIndex: the folder */
        p[n++] = 1;                      /* OutputHandleIndex */
        mp_put16(p + n, 0x0FFF), n += 2; /* CodePageId */
        mp_put32(p + n, 0x00000001), mp_put32(p + n + 4, 0x05010000), n += 8; /* FolderId */
        p[n++] = 0;                                                           /* AssociatedFlag */
        p[n++] = BENCH_ROP_SET_PROPERTIES;
        p[n++] = 0; /* LogonId */
        p[n++] = 1; /* InputHandleIndex */
        size_t size_at = n;
        n += 2;
        mp_put16(p + n, 3), n += 2; /* PropertyValueCount */
        mp_put32(p + n, 0x001A001F), n += 4;
        n += bench_put_utf16(p + n, "IPM.Note");
        mp_put32(p + n, 0x0037001F), n += 4;
        dig[0] = n + 2 * 13;
        n += bench_put_utf16(p + n, "bench upload 00000000");
        mp_put32(p + n, 0x1000001F), n += 4;
        dig[1] = n;
        char *body = malloc(body_len + 1);
        if (!body)
            return 0;
        bench_text((uint8_t *)body, body_len, 77);
        memset(body, '0', BENCH_UPLOAD_DIGITS);
        body[BENCH_UPLOAD_DIGITS] = ' ';
        body[body_len] = 0;
        n += bench_put_utf16(p + n, body);
        free(body);
        mp_put16(p + size_at, (uint16_t)(n - size_at - 2)); /* PropertyValueSize */
    } else {
        p[n++] = BENCH_ROP_SAVE_CHANGES_MESSAGE;
        p[n++] = 0;    /* LogonId */
        p[n++] = 1;    /* ResponseHandleIndex */
        p[n++] = 1;    /* InputHandleIndex */
        p[n++] = 0x02; /* SaveFlags: KeepOpenReadWrite */
        p[n++] = BENCH_ROP_RELEASE;
        p[n++] = 0; /* LogonId */
        p[n++] = 1; /* InputHandleIndex */
    }
    mp_put16(p, (uint16_t)n);
    mp_put32(p + n, 0x00000100), n += 4; /* the folder's server handle */
    mp_put32(p + n, part == 0 ? 0xFFFFFFFFu : BENCH_UPLOAD_HANDLE), n += 4;
    return n;
}

/* Writes v as BENCH_UPLOAD_DIGITS decimal digits in UTF-16 at p. */
static inline void bench_put_digits(uint8_t *p, uint64_t v)
{
    for (int i = BENCH_UPLOAD_DIGITS - 1; i >= 0; i--, v /= 10)
        p[2 * i] = (uint8_t)('0' + v % 10);
}
#endif
