/* registry.h — which device runs a model: the names a user may give (--device) and the auto
 * policy, owned by the backends layer so that a new device is added in one place.
 *
 *   cpu              the native engine, always there
 *   npu, gpu         OpenVINO's NPU / GPU
 *   openvino:NAME    any OpenVINO device (CPU, GPU.1, AUTO, HETERO:...)
 *   auto             NPU, then GPU through OpenVINO when the offering carries its IR, then the
 *                    native CPU; each skipped device is logged and named in *fallback
 * A named device that is missing is KILN_ERR_DEVICE naming what OpenVINO sees, never a silent
 * fallback; --no-fallback makes auto as strict. With verify, an accelerator first runs a short
 * prompt next to the native CPU and is refused when its logits diverge (auto then falls back). */
#ifndef KN_REGISTRY_H
#define KN_REGISTRY_H

#include "backends/backend.h"

typedef struct kn_device_choice {
    const char *device;       /* NULL or "" = auto */
    bool no_fallback;
    bool verify;
    int32_t verify_bos;       /* the BOS id for --verify's prompt, or -1 */
} kn_device_choice;

/* Opens the device c asks for with p. *fallback ("" or e.g. "npu,gpu") says what auto skipped;
 * it holds at least 64 bytes. */
kiln_status kn_device_choose(const kn_device_params *p, const kn_device_choice *c,
                             kn_device **out, char *fallback, kiln_error *err);

#endif
