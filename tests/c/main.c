/* main.c — runner for kiln_tests. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base.h"
#include "kt.h"

#define KT_MAX 1024

static struct {
    const char *name;
    kt_fn fn;
} g_tests[KT_MAX];
static int g_n;
static bool g_failed;
static char g_tmp[256];

void kt_register(const char *name, kt_fn fn) {
    if (g_n < KT_MAX) {
        g_tests[g_n].name = name;
        g_tests[g_n].fn = fn;
        g_n++;
    }
}

void kt_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    g_failed = true;
}

bool kt_failed(void) { return g_failed; }

const char *kt_shared(const char *rel) {
    static char bufs[8][1024];
    static int slot;
    const char *root = getenv("KILN_SHARED");
    char *b = bufs[slot++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", root && *root ? root : "../shared", rel);
    return b;
}

const char *kt_tmpdir(void) {
    if (g_tmp[0]) kn_rmtree(g_tmp);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kiln_tests_%ld_XXXXXX", (long)getpid());
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        exit(1);
    }
    return g_tmp;
}

static int cmp_tests(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return strcmp(x, y);
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0;
    qsort(g_tests, (size_t)g_n, sizeof g_tests[0], cmp_tests);
    for (int i = 0; i < g_n; i++) {
        if (filter && !strstr(g_tests[i].name, filter)) continue;
        g_failed = false;
        double t0 = kn_now_seconds();
        g_tests[i].fn();
        if (g_tmp[0]) {
            kn_rmtree(g_tmp);
            g_tmp[0] = 0;
        }
        printf("%s %s (%.1f s)\n", g_failed ? "FAIL" : "ok  ", g_tests[i].name,
               kn_now_seconds() - t0);
        fflush(stdout);
        if (g_failed) failed++;
        else passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
