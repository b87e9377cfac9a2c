/* names.c — a sorted view of names for duplicate checks and lookups. Sorting (not hashing) keeps
 * the worst case O(n log n) whatever names a hostile file chooses; no hash to flood. */
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

static int cmp_bytes(const char *a, uint64_t na, const char *b, uint64_t nb) {
    uint64_t n = na < nb ? na : nb;
    int c = n ? memcmp(a, b, (size_t)n) : 0;
    if (c) return c;
    return na < nb ? -1 : na > nb;
}

static int cmp_ref(const void *pa, const void *pb) {
    const kn_name_ref *a = pa, *b = pb;
    int c = cmp_bytes(a->ptr, a->len, b->ptr, b->len);
    if (c) return c;
    return a->idx < b->idx ? -1 : a->idx > b->idx; /* stable: the first occurrence first */
}

void kn_names_sort(kn_name_ref *v, size_t n) {
    if (n > 1) qsort(v, n, sizeof *v, cmp_ref);
}

const kn_name_ref *kn_names_dup(const kn_name_ref *v, size_t n) {
    for (size_t i = 1; i < n; i++)
        if (v[i].len == v[i - 1].len && cmp_bytes(v[i].ptr, v[i].len, v[i - 1].ptr, v[i - 1].len) == 0)
            return &v[i - 1];
    return NULL;
}

const kn_name_ref *kn_names_find(const kn_name_ref *v, size_t n, const char *s, size_t len) {
    size_t lo = 0, hi = n;
    while (lo < hi) { /* the first entry >= s */
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_bytes(v[mid].ptr, v[mid].len, s, len) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < n && cmp_bytes(v[lo].ptr, v[lo].len, s, len) == 0) return &v[lo];
    return NULL;
}
