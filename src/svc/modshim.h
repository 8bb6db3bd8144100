/* For engine.c compiled into a module's shared object (MP_SVC_NO_LOOP,
 * modules/sec): no src/core/log.c and no src/event/loop.c there, so its log
 * lines go through mp_svc_log_fn, which the module points at
 * mp_module_log once in init (NULL: not logged), and its clock is
 * CLOCK_MONOTONIC read here. */
#ifndef MP_SVC_MODSHIM_H
#define MP_SVC_MODSHIM_H
#include <stdint.h>
#include <time.h>

extern void (*mp_svc_log_fn)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define MP_SVC_LOG_(lvl, ...) (mp_svc_log_fn ? mp_svc_log_fn(lvl, __VA_ARGS__) : (void)0)
#define mp_error(...) MP_SVC_LOG_(0, __VA_ARGS__)
#define mp_warn(...) MP_SVC_LOG_(1, __VA_ARGS__)
#define mp_info(...) MP_SVC_LOG_(2, __VA_ARGS__)
#define mp_debug(...) MP_SVC_LOG_(3, __VA_ARGS__)
static inline uint64_t mp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
#endif
