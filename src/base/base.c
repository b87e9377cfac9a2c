/* base.c — status helpers, allocation hooks, files, buffers. */
#include "base/base.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
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
    char raw[sizeof err->message];
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof raw ? (size_t)n : sizeof raw - 1;
    kn_escape(err->message, sizeof err->message, raw, len);
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
    char esc[sizeof prefix];
    size_t np = kn_escape(esc, sizeof esc, prefix, strlen(prefix)),
           no = strnlen(old, sizeof old - 1);
    memcpy(prefix, esc, np + 1);
    if (np > sizeof err->message - 1) np = sizeof err->message - 1;
    if (no > sizeof err->message - 1 - np) no = sizeof err->message - 1 - np;
    memcpy(err->message, prefix, np);
    memcpy(err->message + np, old, no);
    err->message[np + no] = 0;
    return err->code;
}

void kn_log(kiln_log_fn fn, void *user, kiln_log_level level, const char *fmt, ...) {
    if (!fn) return;
    char raw[1024], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof raw ? (size_t)n : sizeof raw - 1;
    kn_escape(msg, sizeof msg, raw, len);
    fn(level, msg, user);
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
    case KILN_ERR_WRITE: return "cannot write the output";
    }
    return "unknown status";
}


/* ---- allocation ---- */

/* Atomic (relaxed) because sessions of one model allocate from several threads at once; the
 * fault injection itself is for single-threaded tests. */
static _Atomic uint64_t g_alloc_count;
static _Atomic uint64_t g_alloc_fail_at; /* 0: never */

static bool alloc_should_fail(void) {
    uint64_t n = atomic_fetch_add_explicit(&g_alloc_count, 1, memory_order_relaxed) + 1;
    uint64_t at = atomic_load_explicit(&g_alloc_fail_at, memory_order_relaxed);
    return at && n >= at;
}

uint64_t kn_alloc_count(void) { return atomic_load_explicit(&g_alloc_count, memory_order_relaxed); }

void kn_alloc_fail_after(uint64_t n) {
    atomic_store_explicit(&g_alloc_count, 0, memory_order_relaxed);
    atomic_store_explicit(&g_alloc_fail_at, n, memory_order_relaxed);
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
            /* C0, DEL and C1 (U+0080..U+009F as UTF-8) escaped: valid JSON either way, but
             * a terminal showing the JSON must not act on them */
            if (c < 0x20 || c == 0x7f) kn_buf_printf(b, "\\u%04x", c);
            else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
                     (unsigned char)s[i + 1] < 0xa0)
                kn_buf_printf(b, "\\u%04x", (unsigned char)s[++i]);
            else kn_buf_append(b, (const char *)&c, 1);
        }
    }
    kn_buf_append(b, "\"", 1);
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (overlongs, surrogates and values past
 * U+10FFFF are not), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!len || len > n) return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* One byte sequence of src as its escaped form in out (up to 7 bytes); returns the bytes of
 * src consumed. */
static size_t escape_one(const unsigned char *s, size_t n, char *out, size_t *olen) {
    static const char hex[] = "0123456789abcdef";
    unsigned c = s[0];
    size_t len = utf8_seq(s, n);
    if (len == 1 && c >= 0x20 && c != 0x7f) {
        out[0] = (char)c;
        *olen = 1;
        return 1;
    }
    if (len == 1) {
        const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
        if (e) {
            memcpy(out, e, 2);
            *olen = 2;
        } else {
            memcpy(out, "\\x", 2);
            out[2] = hex[c >> 4];
            out[3] = hex[c & 15];
            *olen = 4;
        }
        return 1;
    }
    if (len == 2 && c == 0xc2 && s[1] < 0xa0) { /* U+0080..U+009F: C1 controls (CSI ...) */
        memcpy(out, "\\u00", 4);
        out[4] = hex[s[1] >> 4];
        out[5] = hex[s[1] & 15];
        *olen = 6;
        return 2;
    }
    if (len) {
        memcpy(out, s, len);
        *olen = len;
        return len;
    }
    memcpy(out, "\\x", 2);
    out[2] = hex[c >> 4];
    out[3] = hex[c & 15];
    *olen = 4;
    return 1;
}

size_t kn_escape(char *dst, size_t cap, const char *src, size_t n) {
    if (!cap) return 0;
    const unsigned char *s = (const unsigned char *)src;
    size_t o = 0, i = 0;
    while (i < n) {
        char e[8];
        size_t el;
        size_t used = escape_one(s + i, n - i, e, &el);
        if (o + el >= cap) break;
        memcpy(dst + o, e, el);
        o += el;
        i += used;
    }
    dst[o] = 0;
    return o;
}

void kn_buf_escaped(kn_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        char e[8];
        size_t el;
        i += escape_one(u + i, n - i, e, &el);
        kn_buf_append(b, e, el);
    }
}

void kn_buf_free(kn_buf *b) {
    kn_free(b->data);
    memset(b, 0, sizeof *b);
}
