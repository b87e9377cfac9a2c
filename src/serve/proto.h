/* proto.h — the frames the supervisor and its worker exchange over a socketpair.
 *
 * A frame is a 16-byte header (payload length, type, request id) and the payload: JSON for
 * requests and results, raw UTF-8 for streamed text. Both ends are the same binary on the same
 * machine, so integers travel in host order. A frame longer than SV_FRAME_MAX is a protocol
 * error (the reader treats the peer as broken). */
#ifndef KILN_SERVE_PROTO_H
#define KILN_SERVE_PROTO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SV_FRAME_MAX (64u << 20)

typedef enum sv_frame_type {
    /* supervisor -> worker */
    SV_F_REQUEST = 1,   /* id, JSON: the checked request (request.c's sv_request_json) */
    SV_F_CANCEL = 2,    /* id: the client went away */
    SV_F_PING = 3,      /* id = sequence number */
    SV_F_SHUTDOWN = 4,  /* drained: free everything and exit 0 */
    /* worker -> supervisor */
    SV_F_READY = 16,    /* JSON: slots, device, kernels, fallback, window, chunk, mode */
    SV_F_PONG = 17,     /* id = the ping's; JSON: busy slots, KV tokens, capacity */
    SV_F_START = 18,    /* id: the request has a slot and its prompt fits */
    SV_F_TEXT = 19,     /* id, UTF-8 text (whole characters) */
    SV_F_DONE = 20,     /* id, JSON: finish_reason, usage, timings */
    SV_F_ERROR = 21     /* id, JSON: {"status": HTTP status, "message": "..."} */
} sv_frame_type;

typedef struct sv_frame {
    uint32_t type;
    uint64_t id;
    char *data;         /* NUL-terminated (the terminator is not counted); NULL if len == 0 */
    size_t len;
} sv_frame;

/* Writes one whole frame (retrying partial writes). Frames written from several threads to one
 * fd must hold the caller's lock. 0 ok, -1 when the peer is gone. */
int sv_frame_write(int fd, uint32_t type, uint64_t id, const void *data, size_t len);

/* Reads one frame; 0 ok, 1 at end of stream, -1 on an error or a malformed frame. f->data is
 * malloc'd (free it). */
int sv_frame_read(int fd, sv_frame *f);

#endif
