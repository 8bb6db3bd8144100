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

/* EMSMDB a4f1db00-ca47-1067-b31f-00dd010662da v0.81 (wire form of the UUID). */
static const struct mp_syntax bench_emsmdb = {
    {0x00, 0xdb, 0xf1, 0xa4, 0x47, 0xca, 0x67, 0x10, 0xb3, 0x1f, 0x00, 0xdd, 0x01, 0x06, 0x62,
     0xda},
    0,
    81};

#define BENCH_OPNUM 11         /* EcDoRpcExt2 */
#define BENCH_MAX_FRAG 5840    /* what both tools offer */
#define BENCH_REQ_STUB 2048    /* request stub (rgbIn ~2 KB) */
#define BENCH_RESP_STUB 8192   /* response stub (rgbOut ~8 KB, "compressed") */

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
#endif
