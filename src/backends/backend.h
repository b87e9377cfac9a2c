/* backend.h — what a device must do to run an offering: the contract's fixed-shape graphs.
 *
 * Two objects per device, split the way a server needs them:
 *   kn_device   a model opened on one device, shared by every session of that model and
 *               device: the CPU weights' views and thread pool, or OpenVINO's compiled graphs
 *               (one compile or blob import per model and device). Read-only once open, except
 *               for what its own mutex guards.
 *   kn_backend  one session's state on that device: its KV cache, scratch and, for OpenVINO,
 *               infer requests. Used by one thread at a time.
 *
 * A backend implements one thing: run one graph of the contract with these static inputs
 * (kn_graph_call). Everything the graphs share — cutting a prompt into [1,C] chunks, the KV
 * slot table and the mask it implies, checking ids and positions, the overflow policy, the
 * stateless window — is the static-graph driver's (driver.h), written once for every device.
 *
 * The native CPU device (cpu/cpu.c) is always there; the OpenVINO device (openvino/backend.c)
 * drives the offering's static IR through OpenVINO's C API, loaded at run time. The core has no
 * #ifdef for either. Choosing a device (auto: NPU, then GPU, then CPU) is registry.c's. */
#ifndef KN_BACKEND_H
#define KN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "base/base.h"
#include "model/contract.h"
#include "model/hparams.h"

typedef enum kn_graph_kind {
    KN_GRAPH_PREFILL = 0,     /* [1,C] new tokens against the W-slot cache */
    KN_GRAPH_DECODE = 1,      /* [1,1] */
    KN_GRAPH_STATELESS = 2    /* [1,W] window, no cache */
} kn_graph_kind;

/* One call of a static graph. The arrays have the graph's fixed length T (C, 1 or W); rows
 * n..T-1 are padding (id 0, the last real position). The driver has checked every id and
 * position, and has already entered this call's rows in slot_pos. */
typedef struct kn_graph_call {
    kn_graph_kind graph;
    int n;                    /* real rows, 1..T */
    const int32_t *ids;       /* [T] */
    const int32_t *pos;       /* [T]; stateless: 0..n-1 */
    const int32_t *slot;      /* [T] the KV slot each real row writes (not stateless); two rows
                                 of one call may share a ring slot: the later one wins */
    const int32_t *slot_pos;  /* [W] the position each slot holds after this call, -1 = empty:
                                 a query at position p sees slot s when 0 <= slot_pos[s] <= p
                                 (and p - slot_pos[s] < the sliding window, if any) */
    int n_slots;              /* slots >= n_slots are empty */
} kn_graph_call;

typedef struct kn_backend kn_backend;
typedef struct kn_device kn_device;

/* What a session wants of its device. */
typedef struct kn_session_cfg {
    bool stateless;           /* the stateless graph will be used (else prefill + decode) */
    kiln_kv_type kv;          /* cpu: the KV cache's element type (default F16) */
} kn_session_cfg;

typedef struct kn_backend_ops {
    /* Runs one graph; *logits [V] (of row n-1) stays valid until the next call. */
    kiln_status (*run)(kn_backend *b, const kn_graph_call *call, const float **logits,
                       kiln_error *err);
    void (*reset)(kn_backend *b);   /* empty the KV cache (slot_pos is the driver's) */
    void (*free)(kn_backend *b);
    /* Optional (NULL: nothing to do): the session's generation ended, it will not run again
     * before its next prompt (the CPU device stops waiting for its steps). */
    void (*idle)(kn_backend *b);
} kn_backend_ops;

struct kn_backend {
    const kn_backend_ops *ops;
    kn_device *device;
};

typedef struct kn_device_ops {
    /* A new session's state on the device. Thread-safe: sessions of one device may be opened
     * from several threads. */
    kiln_status (*open)(kn_device *d, const kn_session_cfg *cfg, kn_backend **out,
                        kiln_error *err);
    void (*free)(kn_device *d);     /* after every backend opened on it is freed */
} kn_device_ops;

struct kn_device {
    const kn_device_ops *ops;
    char name[64];            /* "cpu", "openvino:CPU", "openvino:NPU" ... */
    char kernels[16];         /* the CPU kernel table ("avx2" ...); "" on other devices */
    int n_compiles;           /* graphs compiled or imported from the blob cache (OpenVINO) */
    long n_batched;           /* decode steps that ran in one pass with another session's (the
                                 CPU's batched decode); atomic */
};

/* How to open a device for a model. */
typedef struct kn_device_params {
    const kn_hparams *hp;
    const kn_contract *contract;
    const struct kn_model *cpu_model;  /* the native engine's weights (cpu device, --verify) */
    int threads;              /* >= 1 */
    const struct kn_kernels *kernels; /* cpu: the kernel table, NULL = kn_kernels_choose */
    bool stateless;           /* compile the stateless graph instead of prefill + decode */
    const char *offering_dir; /* where the IR and the compiled-blob cache live, or NULL */
    const char *ov_device;    /* OpenVINO device name: "CPU", "GPU", "NPU" */
    const char *ov_lib;       /* explicit libopenvino_c path, or NULL */
    kiln_log_fn log;
    void *log_user;
} kn_device_params;

kiln_status kn_device_cpu_open(const kn_device_params *p, kn_device **out, kiln_error *err);

/* KILN_ERR_DEVICE when OpenVINO cannot be loaded, the device is not present (the message names
 * the devices OpenVINO sees) or the offering has no IR; other codes for real failures. */
kiln_status kn_device_openvino_open(const kn_device_params *p, kn_device **out,
                                    kiln_error *err);

/* The OpenVINO devices available ("CPU GPU.0 NPU"), for messages; KILN_ERR_DEVICE if OpenVINO
 * cannot be loaded. *out: kn_free. */
kiln_status kn_openvino_devices(const char *ov_lib, char **out, kiln_error *err);

#endif
