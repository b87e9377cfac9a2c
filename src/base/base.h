/* base.h — status helpers, checked allocation, mapped files and small utilities shared by every
 * module. Internal: nothing here is API. */
#ifndef KN_BASE_H
#define KN_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#if defined(__GNUC__)
#define KN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define KN_PRINTF(a, b)
#endif

/* Records a failure in err (which may be NULL) and returns code, so callers can write
 * `return kn_fail(err, KILN_ERR_FORMAT, "%s: ...", path);`. The message is stored escaped
 * (kn_escape): names and keys read from files may hold newlines or terminal escape sequences,
 * and an error is always one printable line. */
kiln_status kn_fail(kiln_error *err, kiln_status code, const char *fmt, ...) KN_PRINTF(3, 4);

/* Prefixes an existing message (e.g. with a file name) keeping the code. */
kiln_status kn_fail_prefix(kiln_error *err, const char *fmt, ...) KN_PRINTF(2, 3);

void kn_error_clear(kiln_error *err);

/* Formats a message, escapes it (kn_escape) and hands it to a log callback (if any): what the
 * library tells the host is one printable line, whatever file names or keys it quotes. */
void kn_log(kiln_log_fn fn, void *user, kiln_log_level level, const char *fmt, ...)
    KN_PRINTF(4, 5);

/* Allocation goes through these so tests can count calls and inject failures. */
void *kn_malloc(size_t n);
void *kn_calloc(size_t count, size_t size);
void *kn_realloc(void *p, size_t n);
void kn_free(void *p);
char *kn_strdup(const char *s);
char *kn_strndup(const char *s, size_t n);

/* Test hooks: count allocations since the last reset; make the Nth allocation from now fail
 * (0 disables). Not thread-safe by design: only tests touch them. */
uint64_t kn_alloc_count(void);
void kn_alloc_fail_after(uint64_t n);

/* Overflow-checked arithmetic for sizes read from untrusted files. */
static inline bool kn_mul_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool kn_add_ok(uint64_t a, uint64_t b, uint64_t *out) {
    if (b > UINT64_MAX - a) return false;
    *out = a + b;
    return true;
}

/* Whole-number conversions of doubles read from files (JSON numbers, GGUF floats): false unless
 * d is finite, integral and in [lo, hi], so no cast is ever out of range (undefined behaviour). */
static inline bool kn_f64_to_i64(double d, int64_t lo, int64_t hi, int64_t *out) {
    /* the range test first: it is false for NaN and keeps the cast defined */
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;
    int64_t v = (int64_t)d;
    if ((double)v != d || v < lo || v > hi) return false;
    *out = v;
    return true;
}
/* A finite double that fits a float (rounded to nearest); false for NaN, Inf or out of range. */
static inline bool kn_f64_to_f32(double d, float *out) {
    if (!(d >= -3.4028234663852886e38 && d <= 3.4028234663852886e38)) return false;
    *out = (float)d;
    return true;
}

/* Escapes n bytes of untrusted text for a terminal or a one-line message: control characters
 * (C0, DEL, and C1 written as UTF-8) become \n, \t, \r or \xNN / \u00NN, and bytes that are
 * not UTF-8 become \xNN; everything else is copied. Writes at most cap - 1 bytes plus a NUL
 * (never splitting an escape) and returns the length written. */
size_t kn_escape(char *dst, size_t cap, const char *src, size_t n);

/* A sorted view of names (tensor names, metadata keys) for duplicate checks and lookups in
 * O(log n), whatever a hostile file puts in it: fill ptr/len/idx, kn_names_sort, then query. */
typedef struct kn_name_ref {
    const char *ptr;
    uint64_t len;
    uint64_t idx;    /* the caller's index of the item */
} kn_name_ref;
void kn_names_sort(kn_name_ref *v, size_t n);
/* The first of two equal names, or NULL. */
const kn_name_ref *kn_names_dup(const kn_name_ref *v, size_t n);
const kn_name_ref *kn_names_find(const kn_name_ref *v, size_t n, const char *s, size_t len);

/* ---- file-system calls the bake's atomic writes need (fs.c) ---- */
/* Swaps two paths atomically (renameat2 RENAME_EXCHANGE); -1 with errno (EINVAL/ENOSYS where
 * the file system or kernel cannot). */
int kn_rename_exchange(const char *a, const char *b);
/* rename() that fails with EEXIST instead of replacing an existing to (RENAME_NOREPLACE); falls
 * back to a plain rename where the flag is not supported. */
int kn_rename_noreplace(const char *from, const char *to);
/* Opens path (a file or a directory) and takes an exclusive flock on it, waiting for it when
 * wait is set: the fd, or -1 with errno (EWOULDBLOCK: another process holds it). The lock goes
 * with the process however it ends, which is what tells a live bake's staging directory from
 * a killed one's. */
int kn_lock_path(const char *path, bool wait);
void kn_unlock(int fd);

/* A read-only view of a whole file (mmap where possible). */
typedef struct kn_map {
    const uint8_t *data;
    size_t size;
    int mapped;      /* 1: munmap on close; 0: heap copy or borrowed */
    int owned;       /* 0 for a borrowed buffer (kn_map_borrow) */
} kn_map;

kiln_status kn_map_file(const char *path, kn_map *map, kiln_error *err);
void kn_map_borrow(const void *data, size_t size, kn_map *map);
void kn_map_close(kn_map *map);
/* Tells the OS that [p, p + n) of a mapping will not be read again soon: its pages leave the
 * resident set (a later read faults them back in from the file). The whole pages inside the
 * range only; a no-op for a map that is not mapped. */
void kn_map_release(const kn_map *map, const void *p, size_t n);
/* Maps [p, p + n) of a mapping in one go (faster than a page fault at a time), for a range
 * about to be read whole; a no-op where the OS cannot (Linux < 5.14) or the map is not mapped. */
void kn_map_populate(const kn_map *map, const void *p, size_t n);

/* Whole-file read into a NUL-terminated heap buffer (for JSON and other small text files). */
kiln_status kn_read_text(const char *path, size_t max_size, char **out, size_t *len,
                         kiln_error *err);

bool kn_is_dir(const char *path);
bool kn_is_file(const char *path);
char *kn_path_join(const char *a, const char *b);
/* Removes a directory tree (used only on kiln's own temporary bake directories). */
int kn_rmtree(const char *path);

/* A growable byte buffer for building text and JSON. */
typedef struct kn_buf {
    char *data;
    size_t len, cap;
    bool oom;
} kn_buf;

void kn_buf_printf(kn_buf *b, const char *fmt, ...) KN_PRINTF(2, 3);
void kn_buf_append(kn_buf *b, const char *s, size_t n);
void kn_buf_json_str(kn_buf *b, const char *s, size_t n); /* quoted, escaped JSON string */
void kn_buf_escaped(kn_buf *b, const char *s, size_t n);  /* kn_escape'd text */
void kn_buf_free(kn_buf *b);

/* ---- the operating system (os.c) ---- */
/* Seconds on the monotonic clock (differences only). */
double kn_now_seconds(void);
/* Physical cores (hyper-thread siblings counted once); at least 1. */
int kn_physical_cores(void);
/* Logical CPUs online (hyper-threads included); at least 1. */
int kn_online_cpus(void);
/* The process's peak resident set so far, in MiB (0 when the system will not say). */
double kn_peak_rss_mb(void);
/* Where temporary files go: $TMPDIR, or /tmp without it. */
const char *kn_tmp_root(void);
/* A new private directory kn_tmp_root()/PREFIX-XXXXXX, or NULL; kn_free it. */
char *kn_make_tmpdir(const char *prefix);

/* Lowercase hex SHA-256 of a byte range (provenance hashes). out must hold 65 chars. */
void kn_sha256_hex(const void *data, size_t n, char out[65]);

typedef struct kn_sha256 {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} kn_sha256;
void kn_sha256_init(kn_sha256 *s);
void kn_sha256_update(kn_sha256 *s, const void *data, size_t n);
void kn_sha256_final(kn_sha256 *s, char out[65]);

#endif
