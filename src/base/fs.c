/* fs.c — the file-system calls behind atomic offering writes: an atomic directory swap and
 * advisory locks. Linux calls through syscall() so the core keeps its C11 + POSIX flags. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/base.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static int renameat2_flags(const char *a, const char *b, unsigned flags) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, flags);
#else
    (void)a;
    (void)b;
    (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

int kn_rename_exchange(const char *a, const char *b) {
    return renameat2_flags(a, b, RENAME_EXCHANGE);
}

int kn_rename_noreplace(const char *from, const char *to) {
    int rc = renameat2_flags(from, to, RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
        if (access(to, F_OK) == 0) {
            errno = EEXIST;
            return -1;
        }
        rc = rename(from, to);
    }
    return rc;
}

int kn_lock_path(const char *path, bool wait) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc;
    while ((rc = flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB))) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void kn_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing the last descriptor releases the flock */
}
