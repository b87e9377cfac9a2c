/* proto.c — frames over a stream socket (see proto.h). */
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct frame_header {
    uint32_t len;
    uint32_t type;
    uint64_t id;
} frame_header;

_Static_assert(sizeof(frame_header) == 16, "frame header is 16 bytes");

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* 0 ok, 1 end of stream before the first byte, -1 error or end in the middle */
static int read_all(int fd, void *p, size_t n) {
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return got ? -1 : 1;
        got += (size_t)r;
    }
    return 0;
}

int sv_frame_write(int fd, uint32_t type, uint64_t id, const void *data, size_t len) {
    if (len > SV_FRAME_MAX) return -1;
    frame_header h = {(uint32_t)len, type, id};
    /* one send for a small frame: the header and its payload arrive together */
    if (len <= 4096) {
        char buf[sizeof h + 4096];
        memcpy(buf, &h, sizeof h);
        if (len) memcpy(buf + sizeof h, data, len);
        return write_all(fd, buf, sizeof h + len);
    }
    if (write_all(fd, &h, sizeof h)) return -1;
    return write_all(fd, data, len);
}

int sv_frame_read(int fd, sv_frame *f) {
    memset(f, 0, sizeof *f);
    frame_header h;
    int r = read_all(fd, &h, sizeof h);
    if (r) return r > 0 ? 1 : -1;
    if (h.len > SV_FRAME_MAX) return -1;
    f->type = h.type;
    f->id = h.id;
    f->len = h.len;
    if (h.len) {
        f->data = malloc((size_t)h.len + 1);
        if (!f->data) return -1;
        if (read_all(fd, f->data, h.len)) {
            free(f->data);
            f->data = NULL;
            return -1;
        }
        f->data[h.len] = 0;
    }
    return 0;
}
