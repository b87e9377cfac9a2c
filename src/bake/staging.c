/* staging.c — writing an offering atomically, shared by the GGUF bake and --from-ir.
 *
 * Everything goes into a staging directory OUT.kiln-tmp-PID beside the target (so the final
 * step stays on one file system), locked with flock for as long as the bake runs. The commit
 * swaps it with an existing OUT in one renameat2(RENAME_EXCHANGE), so a reader of OUT sees the
 * old offering or the new one and never a gap, then removes the old one; a new OUT is renamed
 * into place with RENAME_NOREPLACE. On file systems without RENAME_EXCHANGE the swap is two
 * renames through OUT.kiln-old-PID, and the next bake puts back an old offering an interrupted
 * swap left there.
 *
 * The parent directory's flock, held only while staging directories are created, scanned or
 * swapped, orders concurrent bakes: a bake that finds another's staging directory still
 * locked is refused (one wins cleanly), and one whose lock is free belonged to a killed bake
 * and is removed. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bake/bake.h"

/* "dir/base" -> parent "dir" (or "."), base "base"; trailing slashes dropped. */
static bool split_path(const char *out_dir, char **parent, char **base) {
    size_t n = strlen(out_dir);
    while (n > 1 && out_dir[n - 1] == '/') n--;
    const char *slash = NULL;
    for (size_t i = 0; i < n; i++)
        if (out_dir[i] == '/') slash = out_dir + i;
    if (!slash) {
        *parent = kn_strdup(".");
        *base = kn_strndup(out_dir, n);
    } else {
        *parent = slash == out_dir ? kn_strdup("/") : kn_strndup(out_dir, (size_t)(slash - out_dir));
        *base = kn_strndup(slash + 1, n - (size_t)(slash + 1 - out_dir));
    }
    return *parent && *base;
}

/* Under the parent lock: removes the staging of killed bakes, puts back an offering an
 * interrupted two-rename swap left aside, and refuses when another bake is at work. */
static kiln_status sweep(kn_stage *st, kiln_error *err) {
    DIR *d = opendir(st->parent);
    if (!d) return KILN_OK; /* nothing to sweep that we could see */
    size_t nb = strlen(st->base);
    kiln_status s = KILN_OK;
    struct dirent *e;
    while (!s && (e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        bool tmp = strncmp(nm, st->base, nb) == 0 && strncmp(nm + nb, ".kiln-tmp-", 10) == 0;
        bool old = strncmp(nm, st->base, nb) == 0 && strncmp(nm + nb, ".kiln-old-", 10) == 0;
        if (!tmp && !old) continue;
        char *p = kn_path_join(st->parent, nm);
        if (!p) {
            s = kn_fail(err, KILN_ERR_NOMEM, "bake: out of memory");
            break;
        }
        int fd = kn_lock_path(p, false);
        if (fd < 0 && errno == EWOULDBLOCK) {
            s = kn_fail(err, KILN_ERR_WRITE, "%s: another kiln bake is writing this offering "
                        "(%s is in use); try again when it is done", st->out_dir, p);
        } else if (old && !kn_is_dir(st->out_dir) && rename(p, st->out_dir) == 0) {
            /* an interrupted swap: the previous offering goes back into place */
        } else {
            kn_rmtree(p);
        }
        kn_unlock(fd);
        kn_free(p);
    }
    closedir(d);
    return s;
}

kiln_status kn_stage_begin(kn_stage *st, const char *out_dir, kiln_error *err) {
    memset(st, 0, sizeof *st);
    st->out_dir = out_dir;
    size_t n = strlen(out_dir);
    st->tmp = kn_malloc(n + 64);
    st->old = kn_malloc(n + 64);
    if (!st->tmp || !st->old || !split_path(out_dir, &st->parent, &st->base)) {
        kn_stage_end(st);
        return kn_fail(err, KILN_ERR_NOMEM, "bake: out of memory");
    }
    while (n > 1 && out_dir[n - 1] == '/') n--;
    snprintf(st->tmp, n + 64, "%.*s.kiln-tmp-%ld", (int)n, out_dir, (long)getpid());
    snprintf(st->old, n + 64, "%.*s.kiln-old-%ld", (int)n, out_dir, (long)getpid());
    int plock = kn_lock_path(st->parent, true);
    if (plock < 0) {
        kiln_status s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot open the directory it goes in "
                                "(%s): %s", out_dir, st->parent, strerror(errno));
        st->tmp[0] = 0;
        kn_stage_end(st);
        return s;
    }
    kiln_status s = sweep(st, err);
    if (!s && mkdir(st->tmp, 0755) != 0)
        s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot create: %s", st->tmp, strerror(errno));
    if (!s && (st->lock_fd = kn_lock_path(st->tmp, false)) < 0) {
        s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot lock: %s", st->tmp, strerror(errno));
        rmdir(st->tmp);
    }
    st->locked = !s;
    kn_unlock(plock);
    if (s) {
        st->tmp[0] = 0;
        kn_stage_end(st);
        return s;
    }
    struct stat sb;
    st->exists = lstat(out_dir, &sb) == 0;
    return KILN_OK;
}

kiln_status kn_stage_commit(kn_stage *st, kiln_error *err) {
    int plock = kn_lock_path(st->parent, true);
    if (plock < 0)
        return kn_fail(err, KILN_ERR_WRITE, "%s: cannot lock %s: %s", st->out_dir, st->parent,
                       strerror(errno));
    kiln_status s = KILN_OK;
    struct stat sb;
    if (lstat(st->out_dir, &sb) != 0) {
        if (kn_rename_noreplace(st->tmp, st->out_dir) != 0)
            s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot rename into place: %s", st->out_dir,
                        strerror(errno));
        else st->tmp[0] = 0;
    } else if (kn_rename_exchange(st->tmp, st->out_dir) == 0) {
        /* one step: OUT is the new offering, the staging path holds the old one */
        kn_rmtree(st->tmp);
        st->tmp[0] = 0;
    } else if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
        /* no atomic exchange here: two renames; the next bake repairs an interruption */
        if (rename(st->out_dir, st->old) != 0) {
            s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot replace: %s", st->out_dir,
                        strerror(errno));
        } else if (rename(st->tmp, st->out_dir) != 0) {
            s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot rename into place: %s", st->out_dir,
                        strerror(errno));
            rename(st->old, st->out_dir);
        } else {
            st->tmp[0] = 0;
            kn_rmtree(st->old);
        }
    } else {
        s = kn_fail(err, KILN_ERR_WRITE, "%s: cannot replace: %s", st->out_dir, strerror(errno));
    }
    kn_unlock(plock);
    return s;
}

void kn_stage_end(kn_stage *st) {
    if (st->tmp && st->tmp[0] && !getenv("KILN_DEBUG_KEEP_TMP")) kn_rmtree(st->tmp);
    if (st->locked) kn_unlock(st->lock_fd); /* after the removal: no sweeper sees it unlocked */
    st->locked = false;
    kn_free(st->tmp);
    kn_free(st->old);
    kn_free(st->parent);
    kn_free(st->base);
    st->tmp = st->old = st->parent = st->base = NULL;
}

kiln_status kn_write_file(const char *path, const char *data, size_t n, kiln_error *err) {
    FILE *f = fopen(path, "wb");
    if (!f) return kn_fail(err, KILN_ERR_WRITE, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, n, f) == n;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok; /* on disk before the rename makes it visible */
    int e = errno;
    ok = fclose(f) == 0 && ok;
    return ok ? KILN_OK : kn_fail(err, KILN_ERR_WRITE, "%s: write failed: %s", path, strerror(e));
}
