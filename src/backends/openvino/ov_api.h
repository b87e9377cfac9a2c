/* ov_api.h — the slice of OpenVINO's C API (openvino/c/openvino.h) that kiln uses, loaded at run
 * time with dlopen so that kiln builds and runs without OpenVINO.
 *
 * The declarations follow the public C API reference; OpenVINO's headers are never included.
 * Handles are opaque. Element types are not declared as numbers: the ov_element_type_e
 * enumeration was renumbered between releases (2025 dropped UNDEFINED), so the backend reads
 * the codes of f32 and i32 from the compiled model's own ports instead.
 *
 * Library search (kn_ov_load): an explicit path (--openvino-lib), else $KILN_OPENVINO_LIB, else
 * the `openvino` Python wheel's libs/ folder (asked of python3, if present), else the system's
 * libopenvino_c.so. An explicit path or the variable is final: when it fails nothing else is
 * tried, so a user who names a library never runs another one by surprise.
 */
#ifndef KN_OV_API_H
#define KN_OV_API_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"

typedef int ov_status;                  /* ov_status_e: 0 = OK, negative = error */
typedef int ov_etype;                   /* ov_element_type_e, read from ports (see above) */
typedef struct ov_core ov_core;
typedef struct ov_compiled_model ov_compiled_model;
typedef struct ov_infer_request ov_infer_request;
typedef struct ov_tensor ov_tensor;
typedef struct ov_output_const_port ov_port;

typedef struct ov_shape {               /* ov_shape_t */
    int64_t rank;
    int64_t *dims;
} ov_shape;

typedef struct ov_devices {             /* ov_available_devices_t */
    char **devices;
    size_t size;
} ov_devices;

typedef struct ov_version {             /* ov_version_t */
    const char *build_number;
    const char *description;
} ov_version;

typedef struct kn_ov_api {
    void *lib;                          /* dlopen handle (never closed: see ov_api.c) */
    char path[512];                     /* the file that was loaded */

    ov_status (*core_create)(ov_core **core);
    void (*core_free)(ov_core *core);
    ov_status (*core_get_available_devices)(const ov_core *core, ov_devices *devices);
    void (*available_devices_free)(ov_devices *devices);
    /* property_args_size counts keys and values: 2 per property; then the compiled model,
     * then the (const char *key, const char *value) pairs */
    ov_status (*core_compile_model_from_file)(const ov_core *core, const char *model_path,
                                              const char *device, size_t property_args_size,
                                              ov_compiled_model **out, ...);
    void (*compiled_model_free)(ov_compiled_model *cm);
    ov_status (*compiled_model_input_by_name)(const ov_compiled_model *cm, const char *name,
                                              ov_port **port);
    ov_status (*compiled_model_output_by_name)(const ov_compiled_model *cm, const char *name,
                                               ov_port **port);
    ov_status (*compiled_model_create_infer_request)(const ov_compiled_model *cm,
                                                     ov_infer_request **req);
    ov_status (*const_port_get_shape)(const ov_port *port, ov_shape *shape);
    ov_status (*port_get_element_type)(const ov_port *port, ov_etype *type);
    void (*output_const_port_free)(ov_port *port);
    ov_status (*infer_request_set_tensor)(ov_infer_request *req, const char *name,
                                          const ov_tensor *t);
    ov_status (*infer_request_infer)(ov_infer_request *req);
    void (*infer_request_free)(ov_infer_request *req);
    ov_status (*tensor_create_from_host_ptr)(ov_etype type, ov_shape shape, void *host,
                                             ov_tensor **t);
    void (*tensor_free)(ov_tensor *t);
    ov_status (*shape_free)(ov_shape *shape);
    const char *(*get_error_info)(ov_status status);
    /* optional (2023.3+): the last exception's text, allocated; release with free_str */
    const char *(*get_last_err_msg)(void);
    void (*free_str)(const char *s);
    ov_status (*get_openvino_version)(ov_version *v);   /* optional */
    void (*version_free)(ov_version *v);                /* optional */
} kn_ov_api;

/* Loads libopenvino_c (search order above) and resolves every symbol. KILN_ERR_DEVICE with a
 * message saying what was tried when nothing loads. */
kiln_status kn_ov_load(const char *explicit_path, kn_ov_api *api, kiln_error *err);

/* OpenVINO's words for a failed call: the last error message where the library has one, else
 * the status name. Writes at most n bytes (NUL included) to buf; returns buf. */
const char *kn_ov_error(const kn_ov_api *api, ov_status st, char *buf, size_t n);

/* The devices the core sees, space separated ("CPU GPU.0 NPU"), into buf. */
kiln_status kn_ov_devices_str(const kn_ov_api *api, const ov_core *core, char *buf, size_t n,
                              kiln_error *err);

#endif
