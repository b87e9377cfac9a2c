/* staging.c — writing an offering atomically: everything goes into a hidden directory beside
 * the target (so the final rename stays on one filesystem) and is renamed into place at the
 * end; a failure or a cancel removes the staging directory and leaves any old offering as it
 * was. Shared by the GGUF bake and --from-ir. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bake/bake.h"

kiln_status kn_stage_begin(kn_stage *st, const char *out_dir, kiln_error *err) {
    memset(st, 0, sizeof *st);
    st->out_dir = out_dir;
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    st->tmp = kn_malloc(n + 64);
    st->old = kn_malloc(n + 64);
    if (!st->tmp || !st->old) {
        kn_stage_end(st);
        return kn_fail(err, KILN_ERR_NOMEM, "bake: out of memory");
    }
    snprintf(st->tmp, n + 64, "%.*s.kiln-tmp-%ld", (int)n, out_dir, (long)getpid());
    snprintf(st->old, n + 64, "%.*s.kiln-old-%ld", (int)n, out_dir, (long)getpid());
    kn_rmtree(st->tmp);
    if (mkdir(st->tmp, 0755) != 0) {
        kiln_status s = kn_fail(err, KILN_ERR_IO, "%s: cannot create: %s", st->tmp,
                                strerror(errno));
        st->tmp[0] = 0;
        kn_stage_end(st);
        return s;
    }
    struct stat sb;
    st->exists = lstat(out_dir, &sb) == 0;
    return KILN_OK;
}

kiln_status kn_stage_commit(kn_stage *st, kiln_error *err) {
    if (st->exists && rename(st->out_dir, st->old) != 0)
        return kn_fail(err, KILN_ERR_IO, "%s: cannot replace: %s", st->out_dir, strerror(errno));
    if (rename(st->tmp, st->out_dir) != 0) {
        kiln_status s = kn_fail(err, KILN_ERR_IO, "%s: cannot rename into place: %s",
                                st->out_dir, strerror(errno));
        if (st->exists) rename(st->old, st->out_dir);
        return s;
    }
    st->tmp[0] = 0;
    if (st->exists) kn_rmtree(st->old);
    return KILN_OK;
}

void kn_stage_end(kn_stage *st) {
    if (st->tmp && st->tmp[0] && !getenv("KILN_DEBUG_KEEP_TMP")) kn_rmtree(st->tmp);
    kn_free(st->tmp);
    kn_free(st->old);
    st->tmp = st->old = NULL;
}

kiln_status kn_write_file(const char *path, const char *data, size_t n, kiln_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return kn_fail(err, KILN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, n, f) == n;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok; /* on disk before the rename makes it visible */
    ok = fclose(f) == 0 && ok;
    return ok ? KILN_OK : kn_fail(err, KILN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
}
