/* base.c — status helpers, allocation hooks, files, buffers. */
#include "base/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void vfail(kiln_error *err, kiln_status code, const char *fmt, va_list ap) {
    if (!err) return;
    err->code = code;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

kiln_status kn_fail(kiln_error *err, kiln_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail(err, code, fmt, ap);
    va_end(ap);
    return code;
}

kiln_status kn_fail_prefix(kiln_error *err, const char *fmt, ...) {
    if (!err) return KILN_ERR_INTERNAL;
    char prefix[256], old[sizeof err->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    size_t np = strlen(prefix), no = strnlen(old, sizeof old - 1);
    if (np > sizeof err->message - 1) np = sizeof err->message - 1;
    if (no > sizeof err->message - 1 - np) no = sizeof err->message - 1 - np;
    memcpy(err->message, prefix, np);
    memcpy(err->message + np, old, no);
    err->message[np + no] = 0;
    return err->code;
}

void kn_error_clear(kiln_error *err) {
    if (!err) return;
    err->code = KILN_OK;
    err->message[0] = 0;
}

const char *kiln_status_str(kiln_status s) {
    switch (s) {
    case KILN_OK: return "ok";
    case KILN_ERR_INVALID_ARG: return "invalid argument";
    case KILN_ERR_IO: return "i/o error";
    case KILN_ERR_FORMAT: return "malformed input";
    case KILN_ERR_UNSUPPORTED: return "unsupported";
    case KILN_ERR_NOMEM: return "out of memory";
    case KILN_ERR_DEVICE: return "device unavailable";
    case KILN_ERR_INTERNAL: return "internal error";
    case KILN_ERR_CANCELLED: return "cancelled";
    }
    return "unknown status";
}

int kiln_exit_code(kiln_status s) {
    switch (s) {
    case KILN_OK: return 0;
    case KILN_ERR_INVALID_ARG:
    case KILN_ERR_IO:
    case KILN_ERR_FORMAT:
    case KILN_ERR_UNSUPPORTED: return 2;
    case KILN_ERR_DEVICE: return 3;
    case KILN_ERR_CANCELLED: return 130;
    default: return 1;
    }
}

/* ---- allocation ---- */

static uint64_t g_alloc_count;
static uint64_t g_alloc_fail_at; /* 0: never */

static bool alloc_should_fail(void) {
    g_alloc_count++;
    if (g_alloc_fail_at && g_alloc_count >= g_alloc_fail_at) return true;
    return false;
}

uint64_t kn_alloc_count(void) { return g_alloc_count; }

void kn_alloc_fail_after(uint64_t n) {
    g_alloc_count = 0;
    g_alloc_fail_at = n;
}

void *kn_malloc(size_t n) {
    if (alloc_should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *kn_calloc(size_t count, size_t size) {
    if (alloc_should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *kn_realloc(void *p, size_t n) {
    if (alloc_should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

void kn_free(void *p) { free(p); }
void kiln_free(void *p) { free(p); }

char *kn_strndup(const char *s, size_t n) {
    char *d = kn_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *kn_strdup(const char *s) { return kn_strndup(s, strlen(s)); }

/* ---- files ---- */

kiln_status kn_map_file(const char *path, kn_map *map, kiln_error *err) {
    memset(map, 0, sizeof *map);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kn_fail(err, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kn_fail(err, KILN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return kn_fail(err, KILN_ERR_IO, "%s: is a directory, expected a file", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kn_fail(err, KILN_ERR_IO, "%s: not a regular file", path);
    }
    map->size = (size_t)st.st_size;
    map->owned = 1;
    if (map->size == 0) {
        close(fd);
        map->data = (const uint8_t *)"";
        map->mapped = 0;
        map->owned = 0;
        return KILN_OK;
    }
    void *p = mmap(NULL, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return kn_fail(err, KILN_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    map->data = p;
    map->mapped = 1;
    return KILN_OK;
}

void kn_map_borrow(const void *data, size_t size, kn_map *map) {
    map->data = data;
    map->size = size;
    map->mapped = 0;
    map->owned = 0;
}

void kn_map_release(const kn_map *map, const void *p, size_t n) {
    if (!map->mapped || !p || !n) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + page - 1) / page * page, e = ((uintptr_t)p + n) / page * page;
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

void kn_map_populate(const kn_map *map, const void *p, size_t n) {
#ifdef MADV_POPULATE_READ
    if (!map->mapped || !p || !n) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p / page * page;
    (void)madvise((void *)a, (uintptr_t)p + n - a, MADV_POPULATE_READ);
#else
    (void)map;
    (void)p;
    (void)n;
#endif
}

void kn_map_close(kn_map *map) {
    if (map->mapped && map->data) munmap((void *)map->data, map->size);
    memset(map, 0, sizeof *map);
}

kiln_status kn_read_text(const char *path, size_t max_size, char **out, size_t *len,
                         kiln_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return kn_fail(err, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return kn_fail(err, KILN_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_size) {
        fclose(f);
        return kn_fail(err, KILN_ERR_FORMAT, "%s: too large (%lld bytes, limit %zu)", path,
                       (long long)st.st_size, max_size);
    }
    size_t n = (size_t)st.st_size;
    char *buf = kn_malloc(n + 1);
    if (!buf) {
        fclose(f);
        return kn_fail(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        kn_free(buf);
        return kn_fail(err, KILN_ERR_IO, "%s: read error", path);
    }
    fclose(f);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return KILN_OK;
}

bool kn_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool kn_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *kn_path_join(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    bool slash = na > 0 && a[na - 1] != '/';
    char *p = kn_malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    if (slash) p[na++] = '/';
    memcpy(p + na, b, nb + 1);
    return p;
}

int kn_rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char *child = kn_path_join(path, e->d_name);
        if (!child || kn_rmtree(child) != 0) rc = -1;
        kn_free(child);
    }
    closedir(d);
    if (rmdir(path) != 0) rc = -1;
    return rc;
}

/* ---- buffers ---- */

static bool buf_reserve(kn_buf *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *d = kn_realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void kn_buf_append(kn_buf *b, const char *s, size_t n) {
    if (!buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

void kn_buf_printf(kn_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void kn_buf_json_str(kn_buf *b, const char *s, size_t n) {
    kn_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': kn_buf_append(b, "\\\"", 2); break;
        case '\\': kn_buf_append(b, "\\\\", 2); break;
        case '\n': kn_buf_append(b, "\\n", 2); break;
        case '\r': kn_buf_append(b, "\\r", 2); break;
        case '\t': kn_buf_append(b, "\\t", 2); break;
        default:
            if (c < 0x20) kn_buf_printf(b, "\\u%04x", c);
            else kn_buf_append(b, (const char *)&c, 1);
        }
    }
    kn_buf_append(b, "\"", 1);
}

void kn_buf_free(kn_buf *b) {
    kn_free(b->data);
    memset(b, 0, sizeof *b);
}

double kn_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
