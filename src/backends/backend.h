/* backend.h — what the generation loop asks of a device: the contract's fixed-shape graphs.
 *
 * A backend is opened for one model and owns whatever a run writes (KV cache, device buffers,
 * compiled graphs). Every call has the contract's static shapes; a backend never sees a shape
 * change. The native CPU backend (cpu.c) is always there; the OpenVINO backend
 * (openvino/backend.c) drives the offering's static IR through OpenVINO's C API, loaded at run
 * time. The core has no #ifdef for either. */
#ifndef KN_BACKEND_H
#define KN_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "runtime/engine.h"

typedef struct kn_backend kn_backend;

typedef struct kn_backend_ops {
    /* n prompt tokens at positions pos0.. in ceil(n / C) prefill calls of [1,C] (the last
     * padded and masked); logits [V] of the last one. */
    kiln_status (*prefill)(kn_backend *b, const int32_t *ids, int n, int pos0,
                           const float **logits, kiln_error *err);
    /* one token [1,1] at `position` against the W-slot cache */
    kiln_status (*decode)(kn_backend *b, int32_t id, int32_t position, const float **logits,
                          kiln_error *err);
    /* the old scheme: one padded [1,W] window, no cache; KILN_ERR_UNSUPPORTED if the backend
     * has no stateless graph */
    kiln_status (*stateless)(kn_backend *b, const int32_t *ids, int n_valid,
                             const float **logits, kiln_error *err);
    void (*reset)(kn_backend *b);   /* empty the KV cache */
    void (*free)(kn_backend *b);
} kn_backend_ops;

struct kn_backend {
    const kn_backend_ops *ops;
    char device[64];                 /* "cpu", "openvino:CPU", "openvino:NPU" ... */
};

typedef struct kn_backend_params {
    int threads;
    bool kv_f32;                     /* cpu: an F32 KV cache instead of the default F16 */
    bool stateless;                  /* the stateless graph will be used */
    const char *offering_dir;        /* where the IR and the compiled-blob cache live */
    const char *ov_device;           /* OpenVINO device name: "CPU", "GPU", "NPU" */
    const char *ov_lib;              /* explicit libopenvino_c path, or NULL */
    kiln_log_fn log;
    void *log_user;
} kn_backend_params;

kiln_status kn_backend_cpu_new(const kn_model *m, const kn_backend_params *p, kn_backend **out,
                               kiln_error *err);

/* KILN_ERR_DEVICE when OpenVINO cannot be loaded, the device is not present (the message names
 * the devices OpenVINO sees) or the offering has no IR; other codes for real failures. */
kiln_status kn_backend_openvino_new(const kn_model *m, const kn_backend_params *p,
                                    kn_backend **out, kiln_error *err);

/* The OpenVINO devices available ("CPU GPU.0 NPU"), for messages; KILN_ERR_DEVICE if OpenVINO
 * cannot be loaded. *out: kn_free. */
kiln_status kn_openvino_devices(const char *ov_lib, char **out, kiln_error *err);

#endif
