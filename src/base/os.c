/* os.c — the few questions kiln asks the operating system, in one place: the time, how many
 * cores, how much memory the process has used, where temporary files go. (Files and mappings
 * are fs.c's.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"

double kn_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int kn_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > 1 << 16 ? 1 << 16 : (int)n) : 1;
}

int kn_physical_cores(void) {
    /* Hyper-threads share the SIMD units the matmuls saturate; count cores, not siblings. */
    FILE *f = fopen("/proc/cpuinfo", "r");
    int cores = 0, siblings = 0, logical = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "processor", 9) == 0) logical++;
        else if (colon && strncmp(line, "cpu cores", 9) == 0 && !cores) cores = atoi(colon + 1);
        else if (colon && strncmp(line, "siblings", 8) == 0 && !siblings) siblings = atoi(colon + 1);
    }
    if (f) fclose(f);
    if (cores > 0 && siblings > 0 && logical > 0) return logical * cores / siblings;
    return kn_online_cpus();
}

double kn_peak_rss_mb(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0.0;
}

const char *kn_tmp_root(void) {
    const char *root = getenv("TMPDIR");
    return root && *root ? root : "/tmp";
}

char *kn_make_tmpdir(const char *prefix) {
    kn_buf b = {0};
    kn_buf_printf(&b, "%s/%s-XXXXXX", kn_tmp_root(), prefix);
    if (b.oom) {
        kn_buf_free(&b);
        return NULL;
    }
    if (!mkdtemp(b.data)) {
        kn_buf_free(&b);
        return NULL;
    }
    return b.data;
}
