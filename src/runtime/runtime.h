/* runtime.h — what the files of the public runtime share (not API):
 *
 *   open.c      kiln_model: an offering or a source opened, its tokenizer, its contract, and the
 *               devices its sessions opened (each opened once, shared)
 *   session.c   kiln_session: a device backend + the static-graph driver + the sampler, and the
 *               record of the ids its cache holds
 *   generate.c  the generation loop: sampling, streaming text with stop-string hold-back,
 *               metrics; prefix reuse
 *   chat.c      kiln_chat: a conversation's messages above a session
 *   bench.c     what kiln bench --floor reads: weight bytes per token, read bandwidth
 */
#ifndef KN_RUNTIME_H
#define KN_RUNTIME_H

#include <pthread.h>

#include "backends/backend.h"
#include "backends/cpu/engine.h"
#include "backends/driver.h"
#include "base/base.h"
#include "model/contract.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

/* A device a model's sessions share: opened for the first session that asked for it. */
typedef struct kn_device_entry {
    char key[320];            /* what was asked: device, mode, threads, verify, ... */
    kn_device *device;
    char fallback[64];        /* what auto skipped on the way to it */
} kn_device_entry;

struct kiln_model {
    kn_model *m;              /* the native engine's weights (hparams, W, C, S) */
    kn_contract contract;     /* the static contract every device runs */
    char *dir;                /* the offering directory (IR, compiled-blob cache), or NULL */
    kn_tokenizer *tok;
    int max_token_bytes;      /* longest token text: sizes the text buffers */
    pthread_mutex_t mu;       /* guards devs */
    kn_device_entry **devs;   /* each entry allocated once: sessions keep its address */
    int n_devs, cap_devs;
};

struct kiln_session {
    kiln_model *model;
    kiln_session_params p;
    kn_device_entry *dev;     /* the model's (shared) */
    kn_backend *b;            /* this session's state on it */
    kn_driver drv;
    kn_sampler sampler;
    /* The ids the cache has seen, position by position (past the window too: after a slide
     * the ring holds the newest of them), so a later generation can keep a common prefix. */
    int32_t *hist;
    int n_hist;
    size_t hist_cap;
};

/* The shared device for p, opened on first use (thread-safe). */
kiln_status kn_model_device(kiln_model *km, const kiln_session_params *p, kn_device_entry **out,
                            kiln_error *err);

/* KILN_ERR_INVALID_ARG when text is longer than KILN_MAX_PROMPT_BYTES ("what is longer ..."). */
kiln_status kn_check_text_size(const char *what, const char *text, kiln_error *err);

/* Room for n history ids, grown before a generation's loop (never inside it). */
bool kn_session_hist_reserve(kiln_session *ks, size_t n);

#endif
