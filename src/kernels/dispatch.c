/* dispatch.c — chooses the kernel variant once from CPUID. The only global state of the
 * kernels: a pointer written once under pthread_once. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"

static bool cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#else
    return false;
#endif
}

static bool cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

const kn_kernels *kn_kernels_avx2(void) { return cpu_has_avx2() ? kn_kernels_avx2_table() : NULL; }

const kn_kernels *kn_kernels_avx512(void) {
    return cpu_has_avx512() ? kn_kernels_avx512_table() : NULL;
}

static const kn_kernels *g_chosen;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void choose(void) {
    const kn_kernels *best = kn_kernels_avx512();
    if (!best) best = kn_kernels_avx2();
    if (!best) best = kn_kernels_generic();
    const char *force = getenv("KILN_KERNELS");
    if (force && *force) {
        const kn_kernels *f = NULL;
        if (strcmp(force, "generic") == 0) f = kn_kernels_generic();
        else if (strcmp(force, "avx2") == 0) f = kn_kernels_avx2();
        else if (strcmp(force, "avx512vnni") == 0) f = kn_kernels_avx512();
        if (f) best = f;
    }
    g_chosen = best;
}

const kn_kernels *kn_kernels_get(void) {
    pthread_once(&g_once, choose);
    return g_chosen;
}
