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
 * `return kn_fail(err, KILN_ERR_FORMAT, "%s: ...", path);`. */
kiln_status kn_fail(kiln_error *err, kiln_status code, const char *fmt, ...) KN_PRINTF(3, 4);

/* Prefixes an existing message (e.g. with a file name) keeping the code. */
kiln_status kn_fail_prefix(kiln_error *err, const char *fmt, ...) KN_PRINTF(2, 3);

void kn_error_clear(kiln_error *err);

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
void kn_buf_free(kn_buf *b);

double kn_now_seconds(void);

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
