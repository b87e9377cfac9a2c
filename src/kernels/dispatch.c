/* dispatch.c — chooses the kernel variant once from CPUID. The only global state of the
 * kernels: a pointer written once under pthread_once. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/kernels_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

/* CPUID, not __builtin_cpu_supports: clang 14 rejects "f16c" there, and the builtin does not
 * say whether the OS saves the wide registers, which XGETBV does. */
typedef struct cpu_feats {
    bool avx2, avxvnni, avx512;
} cpu_feats;

static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static cpu_feats cpu_feats_read(void) {
    cpu_feats f = {false, false, false};
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d)) return f;
    bool fma = c & (1u << 12), osxsave = c & (1u << 27), avx = c & (1u << 28),
         f16c = c & (1u << 29);
    if (!osxsave || !avx) return f;
    unsigned long long xcr0 = xgetbv0();
    bool os_ymm = (xcr0 & 0x6) == 0x6;           /* SSE and AVX state */
    bool os_zmm = (xcr0 & 0xE6) == 0xE6;         /* plus opmask and both halves of ZMM */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512dq = b & (1u << 17),
         avx512bw = b & (1u << 30), avx512vl = b & (1u << 31), vnni = c & (1u << 11);
    f.avx2 = os_ymm && avx2 && fma && f16c;
    f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl && vnni;
    /* AVX-VNNI (VEX): CPUID.(EAX=7,ECX=1):EAX bit 4 */
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) f.avxvnni = f.avx2 && (a & (1u << 4));
    return f;
}

static bool cpu_has_avx2(void) { return cpu_feats_read().avx2; }
static bool cpu_has_avxvnni(void) { return cpu_feats_read().avxvnni; }
static bool cpu_has_avx512(void) { return cpu_feats_read().avx512; }
#else
static bool cpu_has_avx2(void) { return false; }
static bool cpu_has_avxvnni(void) { return false; }
static bool cpu_has_avx512(void) { return false; }
#endif

const kn_kernels *kn_kernels_avx2(void) { return cpu_has_avx2() ? kn_kernels_avx2_table() : NULL; }

const kn_kernels *kn_kernels_avxvnni(void) {
    return cpu_has_avxvnni() ? kn_kernels_avxvnni_table() : NULL;
}

const kn_kernels *kn_kernels_avx512(void) {
    return cpu_has_avx512() ? kn_kernels_avx512_table() : NULL;
}

/* Reference first, best last: the order of kn_kernel_names and of kn_kernels_usable. */
static const kn_kernels *(*const k_getters[KN_KERNEL_TABLES])(void) = {
    kn_kernels_generic, kn_kernels_avx2, kn_kernels_avxvnni, kn_kernels_avx512};
const char *const kn_kernel_names[KN_KERNEL_TABLES] = {"generic", "avx2", "avxvnni",
                                                        "avx512vnni"};

const kn_kernels *kn_kernels_by_name(const char *name) {
    for (int i = 0; i < KN_KERNEL_TABLES; i++)
        if (name && strcmp(name, kn_kernel_names[i]) == 0) return k_getters[i]();
    return NULL;
}

int kn_kernels_usable(const kn_kernels *out[KN_KERNEL_TABLES]) {
    int n = 0;
    for (int i = 0; i < KN_KERNEL_TABLES; i++)
        if (k_getters[i]()) out[n++] = k_getters[i]();
    return n;
}

static const kn_kernels *g_chosen;   /* NULL when KILN_KERNELS names no usable table */
static const kn_kernels *g_best;
static char g_bad[256];              /* why KILN_KERNELS was refused */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void choose(void) {
    const kn_kernels *usable[KN_KERNEL_TABLES];
    int n = kn_kernels_usable(usable);
    g_best = usable[n - 1];
    g_chosen = g_best;
    const char *force = getenv("KILN_KERNELS");
    if (!force || !*force) return;
    g_chosen = kn_kernels_by_name(force);
    if (g_chosen) return;
    bool known = false;
    for (int i = 0; i < KN_KERNEL_TABLES; i++) known |= strcmp(force, kn_kernel_names[i]) == 0;
    char shown[33];               /* the user's text, printable ASCII only, kept short */
    size_t k = 0;
    for (; force[k] && k < sizeof shown - 1; k++)
        shown[k] = force[k] >= 0x20 && force[k] < 0x7f ? force[k] : '?';
    shown[k] = 0;
    char list[96] = "";
    for (int i = 0; i < n; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, usable[i]->name, sizeof list - strlen(list) - 1);
    }
    snprintf(g_bad, sizeof g_bad, "KILN_KERNELS=%s: %s (this CPU offers: %s)", shown,
             known ? "this CPU lacks the instructions of that kernel table"
                   : "no such kernel table",
             list);
}

kiln_status kn_kernels_choose(const kn_kernels **out, kiln_error *err) {
    pthread_once(&g_once, choose);
    *out = g_chosen;
    if (!g_chosen) return kn_fail(err, KILN_ERR_INVALID_ARG, "%s", g_bad);
    return KILN_OK;
}

const kn_kernels *kn_kernels_get(void) {
    pthread_once(&g_once, choose);
    return g_chosen ? g_chosen : g_best;
}
