/* POISON/UNPOISON: under AddressSanitizer, mark memory that is kept for
 * reuse but not in use (an arena's free tail, a cached buffer block) as
 * unaddressable, so that a use of it is reported as one of freed memory
 * would be; without ASan, nothing. */
#ifndef MP_POISON_H
#define MP_POISON_H
#if defined(__SANITIZE_ADDRESS__)
#define MP_POISON_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MP_POISON_ASAN 1
#endif
#endif
#ifdef MP_POISON_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#endif
